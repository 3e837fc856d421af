/* test-qcow2: the qcow2 layer decodes images made by qemu-img and qemu-io
 * in every variant (v2, v3, cluster sizes 512 B to 2 MiB, zero clusters,
 * deflate and zstd compression, extended L2 entries, a backing chain with
 * relative names, an internal snapshot) to exactly the bytes of
 * `qemu-img convert -O raw`; hostile images give errors, never a crash.
 * Writes (random pieces and zeroes, subclusters, snapshots shared, the
 * refcount table grown, kill -9 between flushes) are judged by qemu-img
 * check, compare and map. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "layers/layer.h"
#include "layers/qcow2.h"
#include "log.h"

static int failures;
static char dir[] = "/tmp/netdiskfs-qcow2.XXXXXX";

static void fail(const char *what, const char *why)
{
	printf("FAIL: %s: %s\n", what, why);
	failures++;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	char full[4200];
	snprintf(full, sizeof full, "cd %s && (%s) >/dev/null 2>qemu.err", dir,
		 cmd);
	if (system(full) != 0) {
		printf("command failed: %s\n", cmd);
		(void)system("cat /tmp/netdiskfs-qcow2.*/qemu.err");
		exit(1);
	}
	return 0;
}

/* Backing files: relative names resolve in the image's directory; a
 * qcow2 (probed by its magic, or named by the format) is decoded too. */
static int open_any(const char *path, unsigned depth, struct nd_layer **out);

static int open_backing(const char *name, const char *format, unsigned depth,
			void *arg, struct nd_layer **out)
{
	char path[2048];
	snprintf(path, sizeof path, "%s/%s", (const char *)arg, name);
	return open_any(name[0] == '/' ? name : path, depth, out);
}

static int open_any(const char *path, unsigned depth, struct nd_layer **out)
{
	struct nd_layer *f;
	char magic[4] = { 0 };
	struct nd_qcow2_opts o = { .open_backing = open_backing,
				   .arg = dir,
				   .depth = depth };
	int r = nd_layer_file_open(path, true, &f);
	if (r)
		return r;
	if (f->size >= 4 && nd_layer_pread(f, magic, 4, 0) == 0 &&
	    nd_qcow2_probe(magic))
		return nd_qcow2_open(f, &o, out);
	*out = f;
	return 0;
}

/* Decode IMG in odd-sized chunks and compare with qemu-img's raw. */
/* A read by reference (the pieces gathered into BUF in order), through
 * SCRATCH as the FUSE read uses it. */
static int ref_read(struct nd_layer *q, char *buf, char *scratch, size_t len,
		    uint64_t off)
{
	struct nd_layer_ref ref;
	size_t pos = 0;
	nd_layer_ref_init(&ref);
	int r = nd_layer_read_ref(q, len, off, scratch, &ref);
	for (size_t i = 0; r == 0 && i < ref.n; i++) {
		if (pos + ref.iov[i].iov_len > len) {
			r = -EIO;
			break;
		}
		memcpy(buf + pos, ref.iov[i].iov_base, ref.iov[i].iov_len);
		pos += ref.iov[i].iov_len;
	}
	nd_layer_ref_release(&ref);
	if (r == 0 && pos != len)
		nd_error("read by reference: %zu of %zu bytes", pos, len);
	return r ? r : pos == len ? 0 : -EIO;
}

/* A container that says every range lies in a cache as it is (the cache
 * layer's map), so the qcow2 layer's map can be checked against the
 * bytes at the offset it gives. */
struct map_layer {
	struct nd_layer l;
	struct nd_layer *f;
};

static int ml_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	return nd_layer_pread(((struct map_layer *)l)->f, buf, len, off);
}

static int ml_map(struct nd_layer *l, size_t len, uint64_t off,
		  struct nd_cache **cache, uint64_t *coff,
		  struct nd_layer_pin *pin)
{
	(void)len;
	(void)pin;
	*cache = (struct nd_cache *)l;
	*coff = off;
	return 1;
}

static int ml_pwrite(struct nd_layer *l, const void *buf, size_t len,
		     uint64_t off)
{
	return nd_layer_pwrite(((struct map_layer *)l)->f, buf, len, off);
}

static int ml_flush(struct nd_layer *l)
{
	return nd_layer_flush(((struct map_layer *)l)->f);
}

static int ml_grow(struct nd_layer *l, uint64_t size)
{
	int r = nd_layer_grow(((struct map_layer *)l)->f, size);
	if (r == 0)
		l->size = size;
	return r;
}

static void ml_close(struct nd_layer *l)
{
	nd_layer_close(((struct map_layer *)l)->f);
	free(l);
}

static const struct nd_layer_ops ml_ops = {
	.name = "map", .pread = ml_pread, .pwrite = ml_pwrite,
	.flush = ml_flush, .grow = ml_grow, .map = ml_map, .close = ml_close
};

static struct nd_layer *map_wrap(struct nd_layer *f)
{
	struct map_layer *m = calloc(1, sizeof *m);
	if (!m)
		abort();
	m->l = (struct nd_layer){ &ml_ops, f->size, f->ro };
	m->f = f;
	return &m->l;
}

static unsigned long mapped_reads;

/* The LEN bytes at OFF read where the qcow2 layer Q maps them (when it
 * does) into BUF: 1 when mapped, 0 when not, -errno. */
static int map_read(struct nd_layer *q, struct nd_layer *m, char *buf,
		    size_t len, uint64_t off)
{
	struct nd_cache *c;
	struct nd_layer_pin pin;
	uint64_t coff;
	if (nd_layer_map(q, len, off, &c, &coff, &pin) != 1)
		return 0;
	int r = c == (struct nd_cache *)m ? nd_layer_pread(m, buf, len, coff)
					 : -EINVAL;
	nd_layer_unpin(&pin);
	mapped_reads++;
	return r ? r : 1;
}

static void compare(const char *what, const char *img, const char *snapshot)
{
	char path[2048], raw[2048], err[512] = "";
	struct nd_layer *f, *q;
	struct nd_qcow2_opts o = { .open_backing = open_backing, .arg = dir,
				   .snapshot = snapshot, .l2_cache_bytes = 1 };
	snprintf(path, sizeof path, "%s/%s", dir, img);
	snprintf(raw, sizeof raw, "%s/%s.raw", dir, img);
	if (snapshot)
		sh("qemu-img convert -l snapshot.name=%s -O raw %s %s.raw",
		   snapshot, img, img);
	else
		sh("qemu-img convert -O raw %s %s.raw", img, img);
	FILE *want = fopen(raw, "rb");
	struct nd_layer *m = NULL;
	if (nd_layer_file_open(path, true, &f) ||
	    nd_qcow2_open(m = map_wrap(f), &o, &q)) {
		fail(what, nd_get_error());
		if (want)
			fclose(want);
		return;
	}
	size_t chunk = 65536 * 3 + 4096 + 512 + 7;
	char *a = malloc(chunk), *b = malloc(chunk), *sc = malloc(chunk);
	uint64_t off = 0;
	for (unsigned k = 0; off < q->size; k++) {
		size_t n = q->size - off < chunk ? (size_t)(q->size - off) : chunk;
		/* Every third chunk where it is mapped (whole, or its first
		 * 4 KiB from 512 bytes in), else by reference or a copy. */
		size_t mn = k % 6 == 5 && n > 4608 ? 4096 : n;
		uint64_t mo = mn == n ? off : off + 512;
		int r = k % 3 == 2 ? map_read(q, m, a + (mo - off), mn, mo) : 0;
		if (r == 1 && mn != n)
			r = nd_layer_pread(q, a, 512, off) ||
			    nd_layer_pread(q, a + 4608, n - 4608, off + 4608);
		else if (r == 1)
			r = 0;
		else if (r == 0)
			r = k & 1 ? ref_read(q, a, sc, n, off)
				  : nd_layer_pread(q, a, n, off);
		if (r != 0) {
			snprintf(err, sizeof err, "read at %llu: %s",
				 (unsigned long long)off, nd_get_error());
			break;
		}
		if (fread(b, 1, n, want) != n || memcmp(a, b, n) != 0) {
			snprintf(err, sizeof err, "bytes differ in [%llu, +%zu)",
				 (unsigned long long)off, n);
			break;
		}
		off += n;
	}
	if (!*err && fgetc(want) != EOF)
		snprintf(err, sizeof err, "size %llu is short of qemu-img's",
			 (unsigned long long)q->size);
	if (*err)
		fail(what, err);
	free(a);
	free(b);
	free(sc);
	fclose(want);
	nd_layer_close(q);
}

/* Opening IMG or reading it fails cleanly (with ERRNO, 0 = any). */
static void expect_bad(const char *what, const char *img, int want_errno)
{
	char path[2048];
	struct nd_layer *f, *q;
	struct nd_qcow2_opts o = { .open_backing = open_backing, .arg = dir };
	char buf[65536];
	int r;

	snprintf(path, sizeof path, "%s/%s", dir, img);
	if (nd_layer_file_open(path, true, &f)) {
		fail(what, "cannot open the file");
		return;
	}
	r = nd_qcow2_open(f, &o, &q);
	if (r == 0) {
		for (uint64_t off = 0; r == 0 && off < q->size; off += sizeof buf)
			r = nd_layer_pread(q, buf,
					   q->size - off < sizeof buf
						   ? (size_t)(q->size - off)
						   : sizeof buf,
					   off);
		nd_layer_close(q);
	}
	if (r == 0 || (want_errno && r != -want_errno))
		fail(what, r ? nd_get_error() : "accepted");
}

static void variants(void)
{
	const char *w = "-c 'write -P 0x11 0 64k' -c 'write -P 0x22 1000k 300k' "
			"-c 'write -P 0x33 7M 1M' -c 'write -P 0x44 3M 512'";
	sh("qemu-img create -f qcow2 -o compat=0.10 v2.qcow2 8M && "
	   "qemu-io -f qcow2 %s v2.qcow2", w);
	compare("v2", "v2.qcow2", NULL);
	sh("qemu-img create -f qcow2 v3.qcow2 8M && qemu-io -f qcow2 %s "
	   "-c 'write -z 1M 64k' -c 'write -z -u 7M 128k' v3.qcow2", w);
	compare("v3 with zero clusters", "v3.qcow2", NULL);
	sh("qemu-img create -f qcow2 -o cluster_size=512 c512.qcow2 8M && "
	   "qemu-io -f qcow2 %s c512.qcow2", w);
	compare("512-byte clusters", "c512.qcow2", NULL);
	sh("qemu-img create -f qcow2 -o cluster_size=2M c2m.qcow2 8M && "
	   "qemu-io -f qcow2 %s c2m.qcow2", w);
	compare("2 MiB clusters", "c2m.qcow2", NULL);
	sh("(seq 1 400000; head -c 1M /dev/urandom; seq 5 300000) | "
	   "head -c 6M > text.raw && truncate -s 8M text.raw && "
	   "qemu-img convert -c -O qcow2 -f raw text.raw deflate.qcow2 && "
	   "qemu-img convert -c -O qcow2 -o compression_type=zstd -f raw "
	   "text.raw zstd.qcow2");
	compare("deflate compressed", "deflate.qcow2", NULL);
	compare("zstd compressed", "zstd.qcow2", NULL);
	unsigned long mapped = mapped_reads;
	sh("qemu-img convert -O qcow2 -f raw text.raw full.qcow2");
	compare("every cluster allocated", "full.qcow2", NULL);
	if (mapped_reads == mapped)
		fail("every cluster allocated", "no read was mapped");
	sh("qemu-img create -f qcow2 -o extended_l2=on,cluster_size=64k "
	   "-b text.raw -F raw ext.qcow2 && qemu-io -f qcow2 "
	   "-c 'write -P 0x55 4k 2k' -c 'write -P 0x66 70k 6k' "
	   "-c 'write -z 200k 8k' -c 'write -P 0x77 1M 64k' ext.qcow2");
	compare("extended L2 entries over a backing file", "ext.qcow2", NULL);
}

static void chain_and_snapshot(void)
{
	sh("head -c 4M /dev/urandom > base.raw && "
	   "qemu-img create -f qcow2 -b base.raw -F raw mid.qcow2 && "
	   "qemu-io -f qcow2 -c 'write -P 0x21 1M 100k' mid.qcow2 && "
	   "qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 6M && "
	   "qemu-io -f qcow2 -c 'write -P 0x31 1050k 10k' "
	   "-c 'write -P 0x32 5M 4k' top.qcow2");
	compare("3-deep backing chain, relative names", "top.qcow2", NULL);
	sh("qemu-img create -f qcow2 snap.qcow2 4M && "
	   "qemu-io -f qcow2 -c 'write -P 0x41 0 1M' snap.qcow2 && "
	   "qemu-img snapshot -c s1 snap.qcow2 && "
	   "qemu-io -f qcow2 -c 'write -P 0x42 512k 1M' snap.qcow2");
	compare("snapshot s1", "snap.qcow2", "s1");
	compare("active layer after a snapshot", "snap.qcow2", NULL);
}

static void hostile(void)
{
	sh("cp v3.qcow2 trunc.qcow2 && truncate -s 1000 trunc.qcow2");
	expect_bad("truncated image", "trunc.qcow2", EIO);
	/* L1[0] -> an L2 table far past the end of the file. */
	sh("cp v3.qcow2 l2far.qcow2 && "
	   "off=$(od -An -tx1 -j40 -N8 v3.qcow2 | tr -d ' ') && "
	   "printf '\\x80\\x00\\x00\\x7f\\x00\\x00\\x00\\x00' | dd of=l2far.qcow2 "
	   "bs=1 seek=$((0x$off)) conv=notrunc status=none");
	expect_bad("L2 table past the end", "l2far.qcow2", EIO);
	sh("qemu-img create -f qcow2 -u -b loop2.qcow2 -F qcow2 loop1.qcow2 1M && "
	   "qemu-img create -f qcow2 -u -b loop1.qcow2 -F qcow2 loop2.qcow2 1M");
	expect_bad("a loop of backing files", "loop1.qcow2", ELOOP);
	/* A virtual size of 2^62 with a one-entry L1 table. */
	sh("cp v3.qcow2 huge.qcow2 && printf '\\x40\\0\\0\\0\\0\\0\\0\\0' | "
	   "dd of=huge.qcow2 bs=1 seek=24 conv=notrunc status=none");
	expect_bad("a huge virtual size", "huge.qcow2", EIO);
	sh("qemu-img create -f qcow2 -o encrypt.format=luks,"
	   "encrypt.key-secret=s0 --object secret,id=s0,data=x enc.qcow2 1M");
	expect_bad("an encrypted image", "enc.qcow2", ENOTSUP);
	sh("head -c 65536 /dev/zero > notq.img");
	expect_bad("not a qcow2 image", "notq.img", EIO);
}

/* --- writes ---------------------------------------------------------------- */

static struct nd_layer *open_rw(const char *img)
{
	char path[2048];
	struct nd_layer *f, *q = NULL;
	struct nd_qcow2_opts o = { .open_backing = open_backing, .arg = dir,
				   .writable = true, .l2_cache_bytes = 1 };
	snprintf(path, sizeof path, "%s/%s", dir, img);
	if (nd_layer_file_open(path, false, &f) || nd_qcow2_open(f, &o, &q))
		fail(img, nd_get_error());
	return q;
}

struct drain_arg {
	struct nd_layer *q;
	int r;
	bool done;
	pthread_mutex_t mu;
	char err[256];
};

static void *drain_write(void *p)
{
	struct drain_arg *a = p;
	char buf[4096];
	memset(buf, 0x6b, sizeof buf);
	int r = nd_layer_pwrite(a->q, buf, sizeof buf, 0);
	if (r == 0)
		r = nd_layer_flush(a->q);
	pthread_mutex_lock(&a->mu);
	a->r = r;
	a->done = true;
	if (r)
		snprintf(a->err, sizeof a->err, "%s", nd_get_error());
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static bool drain_done(struct drain_arg *a)
{
	pthread_mutex_lock(&a->mu);
	bool d = a->done;
	pthread_mutex_unlock(&a->mu);
	return d;
}

/* A read mapped onto the cache holds no lock: the flush that drops the
 * references of replaced clusters (a cluster a snapshot shares, copied
 * on write) waits until it has ended, so a freed cluster is never reused
 * under it. */
static void mapped_drain(void)
{
	const char *what = "a mapped read in flight during a flush";
	char path[2048];
	struct nd_layer *f, *q = NULL;
	struct nd_qcow2_opts o = { .open_backing = open_backing, .arg = dir,
				   .writable = true };
	struct nd_cache *c;
	struct nd_layer_pin pin;
	uint64_t coff;
	pthread_t t;

	sh("qemu-img create -q -f qcow2 d.qcow2 1M && qemu-io -f qcow2 "
	   "-c 'write -P 0x5a 0 1M' d.qcow2 >/dev/null && "
	   "qemu-img snapshot -c s1 d.qcow2");
	snprintf(path, sizeof path, "%s/d.qcow2", dir);
	if (nd_layer_file_open(path, false, &f) ||
	    nd_qcow2_open(map_wrap(f), &o, &q)) {
		fail(what, nd_get_error());
		return;
	}
	struct drain_arg a = { .q = q };
	pthread_mutex_init(&a.mu, NULL);
	if (nd_layer_map(q, 4096, 0, &c, &coff, &pin) != 1) {
		fail(what, "the read was not mapped");
	} else if (pthread_create(&t, NULL, drain_write, &a) == 0) {
		usleep(300000);
		if (drain_done(&a))
			fail(what, "the flush did not wait for the read");
		nd_layer_unpin(&pin);
		pthread_join(t, NULL);
		if (!drain_done(&a) || a.r)
			fail(what, a.r ? a.err : "the flush never ended");
	}
	nd_layer_close(q);
	pthread_mutex_destroy(&a.mu);
	if (sh("qemu-img check -q d.qcow2") != 0)
		fail(what, "qemu-img check reports errors");
}

/* Random writes and zeroes through the layer and into a raw model; the
 * image must then pass qemu-img check (no corruption and, after the
 * flush, no leaked cluster either) and equal the model for qemu-img
 * compare. */
static void write_variant(const char *what, const char *create)
{
	char model[2048];
	unsigned char buf[200000];
	sh("rm -f w.qcow2 && %s && qemu-img convert -O raw w.qcow2 model.raw",
	   create);
	snprintf(model, sizeof model, "%s/model.raw", dir);
	struct nd_layer *q = open_rw("w.qcow2");
	FILE *m = fopen(model, "r+b");
	if (!q || !m)
		goto out;
	for (int i = 0; i < 300; i++) {
		uint64_t off = (uint64_t)rand() % q->size;
		size_t max = rand() % 4 ? 5000 : sizeof buf;
		size_t len = 1 + (size_t)rand() % max;
		if (len > q->size - off)
			len = (size_t)(q->size - off);
		/* Some ranges end at the end of the disk, inside a cluster. */
		if (i % 50 == 7) {
			len = 1 + (size_t)rand() % 70000;
			off = q->size - len;
		}
		int zero = rand() % 6 == 0 || i % 100 == 7;
		for (size_t k = 0; k < len; k++)
			buf[k] = zero ? 0 : (unsigned char)rand();
		int r = zero ? nd_layer_zero(q, len, off)
			     : nd_layer_pwrite(q, buf, len, off);
		if (r) {
			fail(what, nd_get_error());
			break;
		}
		if (fseek(m, (long)off, SEEK_SET) || fwrite(buf, 1, len, m) != len)
			break;
	}
	if (nd_layer_flush(q))
		fail(what, nd_get_error());
out:
	if (m)
		fclose(m);
	nd_layer_close(q);
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cd %s && qemu-img check w.qcow2 >check.out "
		 "2>&1 || { cat check.out; exit 1; } && qemu-img compare -q -f "
		 "qcow2 -F raw w.qcow2 model.raw", dir);
	int rc = system(cmd);
	if (rc != 0) {
		printf("rc=%d cmd=%s\n", rc, cmd);
		fail(what, "qemu-img check or compare failed");
	}
}

static void writes(void)
{
	write_variant("write v3", "qemu-img create -q -f qcow2 w.qcow2 8M");
	write_variant("write v2", "qemu-img create -q -f qcow2 -o compat=0.10 "
				  "w.qcow2 8M");
	write_variant("write 4k clusters, 1-bit refcounts",
		      "qemu-img create -q -f qcow2 -o cluster_size=4k,"
		      "refcount_bits=1 w.qcow2 8M");
	write_variant("write 2M clusters, 64-bit refcounts",
		      "qemu-img create -q -f qcow2 -o cluster_size=2M,"
		      "refcount_bits=64 w.qcow2 8M");
	write_variant("write over a backing file",
		      "qemu-img create -q -f qcow2 -b text.raw -F raw w.qcow2");
	write_variant("write over compressed clusters",
		      "cp deflate.qcow2 w.qcow2");
	write_variant("write an image with a snapshot",
		      "cp snap.qcow2 w.qcow2");
	/* The snapshot's bytes did not change. */
	sh("qemu-img convert -l snapshot.name=s1 -O raw w.qcow2 a.raw && "
	   "qemu-img convert -l snapshot.name=s1 -O raw snap.qcow2 b.raw && "
	   "cmp a.raw b.raw");
	/* A snapshot taken with nothing written since: every L2 table is
	 * shared with it (refcount 2), and must be copied before a write. */
	sh("qemu-img create -q -f qcow2 sl2.qcow2 8M && qemu-io -f qcow2 -c "
	   "'write -P 0x5a 0 8M' sl2.qcow2 && qemu-img snapshot -c s1 sl2.qcow2");
	write_variant("write an image whose L2 tables a snapshot shares",
		      "cp sl2.qcow2 w.qcow2");
	sh("qemu-img convert -l snapshot.name=s1 -O raw w.qcow2 a.raw && "
	   "qemu-img convert -l snapshot.name=s1 -O raw sl2.qcow2 b.raw && "
	   "cmp a.raw b.raw");
	write_variant("write extended L2 over a backing file",
		      "qemu-img create -q -f qcow2 -o extended_l2=on,"
		      "cluster_size=64k -b text.raw -F raw w.qcow2");
	write_variant("write extended L2, 16k clusters (512-byte subclusters)",
		      "qemu-img create -q -f qcow2 -o extended_l2=on,"
		      "cluster_size=16k w.qcow2 8M");
	write_variant("write extended L2 with qemu-io's subclusters and zeroes",
		      "cp ext.qcow2 w.qcow2");
	write_variant("write extended L2 over compressed clusters",
		      "qemu-img convert -c -O qcow2 -o extended_l2=on -f raw "
		      "text.raw w.qcow2");
	sh("qemu-img create -q -f qcow2 -o extended_l2=on -b text.raw -F raw "
	   "esn.qcow2 && qemu-io -f qcow2 -c 'write -P 0x61 4k 6k' "
	   "-c 'write -z 100k 4k' -c 'write -P 0x62 1M 64k' esn.qcow2 && "
	   "qemu-img snapshot -c s1 esn.qcow2");
	write_variant("write extended L2 shared with a snapshot",
		      "cp esn.qcow2 w.qcow2");
	sh("qemu-img convert -l snapshot.name=s1 -O raw w.qcow2 a.raw && "
	   "qemu-img convert -l snapshot.name=s1 -O raw esn.qcow2 b.raw && "
	   "cmp a.raw b.raw");
	sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 1M");
	struct nd_layer *f, *q;
	struct nd_qcow2_opts o = { .writable = true };
	char path[2048];
	snprintf(path, sizeof path, "%s/lazy.qcow2", dir);
	if (nd_layer_file_open(path, false, &f) == 0 &&
	    nd_qcow2_open(f, &o, &q) != -EROFS)
		fail("lazy refcounts", "a writable open must be refused");
}

static uint32_t be32_at(const char *img, long off)
{
	char path[2048];
	unsigned char b[4] = { 0 };
	snprintf(path, sizeof path, "%s/%s", dir, img);
	FILE *f = fopen(path, "rb");
	if (f && (fseek(f, off, SEEK_SET) || fread(b, 1, 4, f) != 4))
		b[0] = b[1] = b[2] = b[3] = 0;
	if (f)
		fclose(f);
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | b[2] << 8 | b[3];
}

/* 512-byte clusters written until the refcount table (one cluster at
 * first) must grow several times, as QEMU grows it; qemu-img check and
 * compare judge the image. */
static void rtable_growth(const char *what, const char *opts, size_t mib)
{
	sh("rm -f g.qcow2 && qemu-img create -q -f qcow2 -o cluster_size=512,%s "
	   "g.qcow2 64M && qemu-img convert -O raw g.qcow2 g.raw", opts);
	uint32_t before = be32_at("g.qcow2", 56);
	struct nd_layer *q = open_rw("g.qcow2");
	char model[2048];
	snprintf(model, sizeof model, "%s/g.raw", dir);
	FILE *m = fopen(model, "r+b");
	static unsigned char buf[1 << 20];
	for (size_t i = 0; q && m && i < mib * 2; i++) {
		/* Half a MiB at a time, every other MiB, then the gaps. */
		uint64_t off = (uint64_t)(i < mib ? 2 * i : 2 * (i - mib) + 1) << 19;
		for (size_t k = 0; k < sizeof buf / 2; k++)
			buf[k] = (unsigned char)rand();
		if (nd_layer_pwrite(q, buf, sizeof buf / 2, off)) {
			fail(what, nd_get_error());
			break;
		}
		if (fseek(m, (long)off, SEEK_SET) ||
		    fwrite(buf, 1, sizeof buf / 2, m) != sizeof buf / 2)
			break;
	}
	if (q && nd_layer_flush(q))
		fail(what, nd_get_error());
	if (m)
		fclose(m);
	nd_layer_close(q);
	uint32_t after = be32_at("g.qcow2", 56);
	if (after < 3 * before) {
		char why[128];
		snprintf(why, sizeof why, "the refcount table has %u clusters "
			 "(%u before): it did not grow", after, before);
		fail(what, why);
	}
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cd %s && qemu-img check g.qcow2 >check.out "
		 "2>&1; rc=$?; [ $rc = 0 ] || { cat check.out; exit 1; } && "
		 "qemu-img compare -q -f qcow2 -F raw g.qcow2 g.raw", dir);
	if (system(cmd) != 0)
		fail(what, "qemu-img check (not clean) or compare failed");
}

/* Zeroing whole clusters of a v3 image and writing them again, over and
 * over, leaks nothing (the zeroed cluster keeps its host cluster, as a
 * preallocated zero cluster, and the next write reuses it): qemu-img
 * check finds no leak and the container stops growing. Over a backing
 * file, zeroes of clusters without an L2 table write no data. */
static void zero_cycles(const char *what, const char *create, int backing)
{
	static unsigned char b[1 << 20];
	sh("rm -f z.qcow2 && %s", create);
	struct nd_layer *q = open_rw("z.qcow2");
	char path[2048];
	struct stat st;
	off_t size[4] = { 0 };
	snprintf(path, sizeof path, "%s/z.qcow2", dir);
	for (int round = 0; q && round < 4; round++) {
		memset(b, 0x30 + round, sizeof b);
		if (nd_layer_pwrite(q, b, sizeof b, 1 << 20) ||
		    nd_layer_zero(q, sizeof b, 1 << 20) ||
		    nd_layer_pwrite(q, b, 65536, 1 << 20) ||
		    (backing && nd_layer_zero(q, 4 << 20, 4 << 20)) ||
		    nd_layer_flush(q)) {
			fail(what, nd_get_error());
			break;
		}
		size[round] = stat(path, &st) == 0 ? st.st_size : 0;
	}
	nd_layer_close(q);
	if (size[3] != size[1])
		fail(what, "the container keeps growing");
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cd %s && qemu-img check z.qcow2 >check.out "
		 "2>&1 || { cat check.out; exit 1; }", dir);
	if (system(cmd) != 0)
		fail(what, "qemu-img check: not clean (leaked clusters?)");
}

/* An L2 table whose L1 entry lacks the COPIED bit but whose refcount is
 * 1 is copied on the first write and freed at the flush; when its
 * cluster becomes another L2 table, the copy cached from before must not
 * be served for it. */
static void freed_l2_reused(void)
{
	sh("rm -f fl.qcow2 && head -c 4M /dev/urandom > fl.raw && qemu-img "
	   "create -q -f qcow2 -b fl.raw -F raw fl.qcow2 2G && qemu-io -f qcow2 "
	   "-c 'write -P 1 0 64k' fl.qcow2 && off=$(od -An -tu8 -j40 -N8 "
	   "--endian=big fl.qcow2) && head -c 1 /dev/zero | dd of=fl.qcow2 bs=1 "
	   "seek=$((off)) conv=notrunc status=none");
	struct nd_layer *q = open_rw("fl.qcow2");
	unsigned char b[65536], z[65536] = { 0 };
	if (!q)
		return;
	if (nd_layer_pread(q, b, 4096, 0) ||
	    nd_layer_pwrite(q, memset(b, 2, 4096), 4096, 0) ||
	    nd_layer_flush(q) || nd_layer_zero(q, 65536, 3ull << 29) ||
	    nd_layer_pread(q, b, sizeof b, 3ull << 29) || nd_layer_flush(q))
		fail("a freed L2 table reused", nd_get_error());
	else if (memcmp(b, z, sizeof b))
		fail("a freed L2 table reused", "the zeroed cluster reads "
		     "other bytes (a stale cached L2 table)");
	nd_layer_close(q);
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cd %s && qemu-img check fl.qcow2 >check.out "
		 "2>&1 || { cat check.out; exit 1; }", dir);
	if (system(cmd) != 0)
		fail("a freed L2 table reused", "qemu-img check: not clean");
}

/* Extended L2 entries: a write into part of a cluster allocates only the
 * subclusters it touches (the others keep reading the backing file), a
 * zero of whole subclusters sets their zero bits: `qemu-img map` of the
 * image equals that of the same writes made by qemu-io (host offsets
 * aside), and the images compare equal. */
static void subcluster_map(void)
{
	sh("rm -f m.qcow2 mq.qcow2 && qemu-img create -q -f qcow2 -o "
	   "extended_l2=on,cluster_size=64k -b text.raw -F raw m.qcow2 && "
	   "cp m.qcow2 mq.qcow2 && qemu-io -f qcow2 -c 'write -P 0xab 67684 "
	   "3000' -c 'write -z 204800 8192' -c 'write -P 0xcd 262144 2048' "
	   "-c 'write -z 264192 2048' mq.qcow2");
	struct nd_layer *q = open_rw("m.qcow2");
	unsigned char b[3000];
	memset(b, 0xab, sizeof b);
	if (!q || nd_layer_pwrite(q, b, sizeof b, 67684) ||
	    nd_layer_zero(q, 8192, 204800) ||
	    nd_layer_pwrite(q, memset(b, 0xcd, 2048), 2048, 262144) ||
	    nd_layer_zero(q, 2048, 264192) || nd_layer_flush(q))
		fail("subclusters", q ? nd_get_error() : "open");
	nd_layer_close(q);
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cd %s && qemu-img check -q m.qcow2 && "
		 "for i in m mq; do qemu-img map --output=json $i.qcow2 | "
		 "sed 's/, \"offset\": [0-9]*//' > $i.map; done && "
		 "diff mq.map m.map && qemu-img compare -q m.qcow2 mq.qcow2", dir);
	if (system(cmd) != 0)
		fail("subclusters", "qemu-img check, map or compare differs from "
		     "the same writes by qemu-io");
}

/* kill -9 during flushed writes: qemu-img check finds no corruption and
 * every flushed write reads back. */
static void write_crash(const char *what, const char *opts, bool shared)
{
	for (int round = 0; round < 3; round++) {
		int fds[2];
		sh("rm -f c.qcow2 && qemu-img create -q -f qcow2 %s c.qcow2 16M%s",
		   opts, shared ? " && qemu-io -f qcow2 -c 'write -P 7 0 16M' "
				  "c.qcow2 && qemu-img snapshot -c s1 c.qcow2"
				: "");
		if (pipe(fds))
			exit(1);
		pid_t pid = fork();
		if (pid == 0) {
			struct nd_layer *q = open_rw("c.qcow2");
			unsigned char b[65536];
			for (unsigned e = 1; q; e++) {
				memset(b, (int)(e & 0xff), sizeof b);
				uint64_t off = (uint64_t)(e * 7919 % 250) * 65536 +
					       (e % 3) * 4096;
				if (nd_layer_pwrite(q, b, sizeof b - 8192, off) ||
				    nd_layer_flush(q) ||
				    write(fds[1], &e, sizeof e) != sizeof e)
					_exit(1);
			}
			_exit(1);
		}
		close(fds[1]);
		usleep(50000 + (unsigned)rand() % 300000);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		unsigned e, last = 0;
		while (read(fds[0], &e, sizeof e) == sizeof e)
			last = e;
		close(fds[0]);
		char cmd[4096];
		snprintf(cmd, sizeof cmd, "cd %s && qemu-img check -q c.qcow2 "
			 ">check.out 2>&1; rc=$?; [ $rc = 0 ] || [ $rc = 3 ] || "
			 "{ cat check.out; exit 1; }", dir);
		if (last == 0 || system(cmd) != 0)
			fail(what, "corrupt, or nothing written");
		if (shared) /* the snapshot kept its bytes */
			sh("qemu-img convert -l snapshot.name=s1 -O raw c.qcow2 "
			   "s1.raw && head -c 16M /dev/zero | tr '\\0' '\\7' | "
			   "cmp - s1.raw");
		/* The last flushed write reads back. */
		struct nd_layer *q = open_rw("c.qcow2");
		unsigned char got[65536 - 8192];
		uint64_t off = (uint64_t)(last * 7919 % 250) * 65536 +
			       (last % 3) * 4096;
		if (q && (nd_layer_pread(q, got, sizeof got, off) ||
			  got[0] != (last & 0xff) ||
			  got[sizeof got - 1] != (last & 0xff)))
			fail(what, "the last flushed write is lost");
		nd_layer_close(q);
	}
}

int main(void)
{
	if (system("command -v qemu-img >/dev/null && command -v qemu-io "
		   ">/dev/null") != 0) {
		printf("SKIP: qemu-img or qemu-io not installed\n");
		return 77;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	variants();
	chain_and_snapshot();
	hostile();
	writes();
	zero_cycles("zero and rewrite, v3", "qemu-img create -q -f qcow2 "
		    "z.qcow2 16M", 0);
	zero_cycles("zero and rewrite, v3 over a backing file",
		    "qemu-img create -q -f qcow2 -b text.raw -F raw z.qcow2", 1);
	zero_cycles("zero and rewrite, extended L2 over a backing file",
		    "qemu-img create -q -f qcow2 -o extended_l2=on -b text.raw "
		    "-F raw z.qcow2", 1);
	subcluster_map();
	mapped_drain();
	freed_l2_reused();
	rtable_growth("refcount table growth, 16-bit refcounts",
		      "refcount_bits=16", 16);
	rtable_growth("refcount table growth, 64-bit refcounts",
		      "refcount_bits=64", 8);
	write_crash("kill -9 during writes", "", false);
	/* Every cluster shared with a snapshot: each write copies it and its
	 * L2 table, and drops their references after the flush. */
	write_crash("kill -9 during writes over a snapshot", "", true);
	/* 512-byte clusters, 64-bit refcounts: the refcount table (2 MiB of
	 * container at first) grows during the load. */
	write_crash("kill -9 during writes that grow the refcount table",
		    "-o cluster_size=512,refcount_bits=64", false);
	write_crash("kill -9 during writes with subclusters",
		    "-o extended_l2=on,cluster_size=16k", false);
	if (failures)
		printf("images kept in %s\n", dir);
	else
		sh("rm -rf %s", dir);
	printf("test-qcow2: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
