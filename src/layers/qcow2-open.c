/* qcow2-open.c: reading and checking a qcow2 image's header, its
 * extensions, L1 table and snapshot table, and opening its backing file. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2-int.h"

/* What the header says, checked. */
/* What the header says, checked. */
struct header {
	uint32_t version, cluster_bits, l1_size, nb_snapshots, hdr_len;
	uint64_t backing_off, size, l1_off, snapshots_off, incompat;
	uint64_t compat, autoclear, rt_off;
	uint32_t backing_len, rt_clusters, refcount_order;
	int compression;
};

/* A valid image using what this layer does not read. */
#define refuse(fmt, v)                                                        \
	({                                                                    \
		errno = ENOTSUP;                                              \
		nd_error(fmt, (unsigned long long)(v));                       \
		-ENOTSUP;                                                     \
	})

static int check_features(const struct header *h)
{
	uint64_t unknown = h->incompat & ~INCOMPAT_KNOWN;
	if (unknown)
		return refuse("qcow2: unknown incompatible features 0x%llx", unknown);
	if (h->incompat & INCOMPAT_DATA_FILE)
		return refuse("qcow2: images with an external data file are not "
			      "supported (feature bit %llu)", 2);
	if (h->incompat & INCOMPAT_CORRUPT)
		nd_warn("qcow2: the image is marked corrupt; it is shown read-only");
	return 0;
}

static int parse_header(const uint8_t *b, size_t n, uint64_t file_size,
			struct header *h)
{
	memset(h, 0, sizeof *h);
	if (n < 72 || be32(b) != QCOW2_MAGIC)
		return qcow2_corrupt("not a qcow2 image (no QFI magic), size", n);
	h->version = be32(b + 4);
	h->backing_off = be64(b + 8);
	h->backing_len = be32(b + 16);
	h->cluster_bits = be32(b + 20);
	h->size = be64(b + 24);
	h->l1_size = be32(b + 36);
	h->l1_off = be64(b + 40);
	h->nb_snapshots = be32(b + 60);
	h->snapshots_off = be64(b + 64);
	h->rt_off = be64(b + 48);
	h->rt_clusters = be32(b + 56);
	h->refcount_order = 4;
	h->hdr_len = 72;
	if (h->version != 2 && h->version != 3)
		return refuse("qcow2: version %llu (2 and 3 are supported)",
			      h->version);
	if (be32(b + 32))
		return refuse("qcow2: encrypted images (method %llu) are not "
			      "supported", be32(b + 32));
	if (h->cluster_bits < 9 || h->cluster_bits > 21)
		return qcow2_corrupt("cluster_bits out of 9..21", h->cluster_bits);
	if (h->version == 3) {
		if (n < 104)
			return qcow2_corrupt("header shorter than 104 bytes", n);
		h->incompat = be64(b + 72);
		h->compat = be64(b + 80);
		h->autoclear = be64(b + 88);
		h->refcount_order = be32(b + 96);
		h->hdr_len = be32(b + 100);
		if (h->refcount_order > 6)
			return qcow2_corrupt("refcount_order over 6",
					     h->refcount_order);
		if (h->hdr_len < 104 || h->hdr_len % 8 ||
		    h->hdr_len > (1u << h->cluster_bits) || h->hdr_len > n)
			return qcow2_corrupt("header_length", h->hdr_len);
		if (h->incompat & INCOMPAT_COMPRESSION)
			h->compression = h->hdr_len > 104 ? b[104] : 0;
		if (h->compression > 1)
			return refuse("qcow2: compression type %llu (deflate "
				      "and zstd are supported)", h->compression);
		if ((h->incompat & INCOMPAT_EXTL2) && h->cluster_bits < 14)
			return qcow2_corrupt("extended L2 entries with clusters under "
				       "16 KiB, cluster_bits", h->cluster_bits);
	}
	if (h->backing_off && (h->backing_len == 0 || h->backing_len > 1023 ||
			       h->backing_off > file_size ||
			       h->backing_len > file_size - h->backing_off))
		return qcow2_corrupt("backing file name offset", h->backing_off);
	return check_features(h);
}

/* The backing format extension, if any, as a string (malloc'd). */
static int header_extensions(const uint8_t *b, size_t n,
			     const struct header *h, char **fmt)
{
	size_t p = h->hdr_len;
	*fmt = NULL;
	if (n > (size_t)1 << h->cluster_bits)
		n = (size_t)1 << h->cluster_bits; /* they end with the cluster */
	while (p + 8 <= n) {
		uint32_t type = be32(b + p), len = be32(b + p + 4);
		if (type == 0)
			break;
		if (len > n - p - 8)
			return qcow2_corrupt("header extension length", len);
		if (type == EXT_BACKING_FORMAT && !*fmt &&
		    !(*fmt = strndup((const char *)b + p + 8, len)))
			return -ENOMEM;
		p += 8 + (((size_t)len + 7) & ~(size_t)7);
	}
	return 0;
}

static int load_l1(struct qcow2 *q, uint64_t off, uint32_t size, uint64_t vsize)
{
	uint64_t per_l1 = q->cluster_size << q->l2_bits;
	if (size > MAX_L1_ENTRIES)
		return qcow2_corrupt("L1 table larger than 32 MiB, entries", size);
	if ((vsize + per_l1 - 1) / per_l1 > size)
		return qcow2_corrupt("L1 table too small for the virtual size", size);
	if (off & (q->cluster_size - 1))
		return qcow2_corrupt("unaligned L1 table offset", off);
	q->l1_size = size;
	q->l1_off = off;
	if (!size)
		return 0;
	if (!(q->l1 = malloc((size_t)size * 8)))
		return -ENOMEM;
	int r = qcow2_file_read(q, q->l1, (size_t)size * 8, off, "L1 table offset");
	for (uint32_t i = 0; r == 0 && i < size; i++)
		q->l1[i] = be64((const uint8_t *)&q->l1[i]);
	return r;
}

/* One entry of the snapshot table, read at *P (which moves past it). */
struct snapshot {
	uint64_t l1_off, vsize;
	uint32_t l1_size;
	char *id, *name; /* malloc'd */
};

static void snapshot_free(struct snapshot *sn)
{
	free(sn->id);
	free(sn->name);
	memset(sn, 0, sizeof *sn);
}

static int read_snapshot(struct qcow2 *q, const struct header *h, uint64_t *p,
			 struct snapshot *sn)
{
	uint8_t e[40], ex[16] = { 0 };
	int r;

	memset(sn, 0, sizeof *sn);
	if ((r = qcow2_file_read(q, e, sizeof e, *p, "snapshot table offset")))
		return r;
	uint32_t idlen = e[12] << 8 | e[13], nlen = e[14] << 8 | e[15];
	uint32_t extra = be32(e + 36);
	if (extra > 65536)
		return qcow2_corrupt("snapshot extra data size", extra);
	if (!(sn->id = calloc(1, idlen + 1)) || !(sn->name = calloc(1, nlen + 1))) {
		snapshot_free(sn);
		return -ENOMEM;
	}
	if ((extra >= 16 &&
	     (r = qcow2_file_read(q, ex, 16, *p + 40, "snapshot extra data"))) ||
	    (r = qcow2_file_read(q, sn->id, idlen, *p + 40 + extra,
				 "snapshot ID")) ||
	    (r = qcow2_file_read(q, sn->name, nlen, *p + 40 + extra + idlen,
				 "snapshot name"))) {
		snapshot_free(sn);
		return r;
	}
	sn->l1_off = be64(e);
	sn->l1_size = be32(e + 8);
	sn->vsize = extra >= 16 ? be64(ex + 8) : h->size;
	*p += (40 + extra + idlen + nlen + 7) & ~7ull;
	return 0;
}

/* Find snapshot NAME (its ID or name) in the snapshot table. */
static int find_snapshot(struct qcow2 *q, const struct header *h,
			 const char *name, uint64_t *l1_off, uint32_t *l1_size,
			 uint64_t *vsize)
{
	uint64_t p = h->snapshots_off;
	struct snapshot sn;

	for (uint32_t i = 0; i < h->nb_snapshots; i++) {
		int r = read_snapshot(q, h, &p, &sn);
		if (r)
			return r;
		bool match = !strcmp(sn.id, name) || !strcmp(sn.name, name);
		*l1_off = sn.l1_off;
		*l1_size = sn.l1_size;
		*vsize = sn.vsize;
		snapshot_free(&sn);
		if (match)
			return 0;
	}
	errno = ENOENT;
	nd_error("qcow2: no snapshot '%s' (ID or name) in the image", name);
	return -ENOENT;
}

static int open_backing(struct qcow2 *q, const struct header *h,
			const char *fmt, const struct nd_qcow2_opts *o)
{
	char name[1024];
	int r;

	if (!h->backing_off || o->no_backing)
		return 0;
	if ((r = qcow2_file_read(q, name, h->backing_len, h->backing_off,
			   "backing file name offset")))
		return r;
	name[h->backing_len] = 0;
	if (!o->open_backing) {
		errno = ENOTSUP;
		nd_error("qcow2: the image has a backing file '%s' that cannot "
			 "be opened here (backing=off shows the top image alone)",
			 name);
		return -ENOTSUP;
	}
	if (o->depth + 1 >= ND_QCOW2_MAX_DEPTH) {
		errno = ELOOP;
		nd_error("qcow2: backing chain deeper than %d at '%s' (a loop?)",
			 ND_QCOW2_MAX_DEPTH, name);
		return -ELOOP;
	}
	return o->open_backing(name, fmt, o->depth + 1, o->arg, &q->backing);
}

static int setup(struct qcow2 *q, const struct header *h,
		 const struct nd_qcow2_opts *o)
{
	uint64_t l1_off = h->l1_off, vsize = h->size;
	uint32_t l1_size = h->l1_size;
	int r;

	q->cluster_bits = h->cluster_bits;
	q->cluster_size = 1ull << h->cluster_bits;
	q->extl2 = h->incompat & INCOMPAT_EXTL2;
	q->l2_bits = h->cluster_bits - 3 - q->extl2;
	q->sc_bits = h->cluster_bits - 5;
	q->zero_flag = h->version == 3 && !q->extl2;
	q->compression = h->compression;
	if (o->snapshot &&
	    (r = find_snapshot(q, h, o->snapshot, &l1_off, &l1_size, &vsize)))
		return r;
	if (vsize > (1ull << 61))
		return qcow2_corrupt("virtual size over 2 EiB", vsize);
	q->l.size = vsize;
	if ((r = load_l1(q, l1_off, l1_size, vsize)))
		return r;
	size_t nslots = (o->l2_cache_bytes ? o->l2_cache_bytes : 32u << 20) >>
			h->cluster_bits;
	if (!(q->cbuf = malloc(q->cluster_size)))
		return -ENOMEM;
	return qcow2_l2_cache_init(q, nslots < 4 ? 4 : nslots);
}

static const struct nd_layer_ops qcow2_ro_ops = {
	.name = "qcow2",
	.pread = qcow2_pread,
	.read_ref = qcow2_read_ref,
	.map = qcow2_map_range,
	.close = qcow2_close,
};

static const struct nd_layer_ops qcow2_rw_ops = {
	.name = "qcow2",
	.pread = qcow2_pread,
	.read_ref = qcow2_read_ref,
	.map = qcow2_map_range,
	.pwrite = qcow2_pwrite,
	.zero = qcow2_zero,
	.flush = qcow2_flush,
	.close = qcow2_close,
};

/* Why this image cannot be written here, or NULL. */
static const char *no_write(const struct qcow2 *q, const struct header *h,
			    const struct nd_qcow2_opts *o)
{
	if (q->file->ro)
		return "the container is read-only";
	if (o->snapshot)
		return "a snapshot is shown read-only";
	if (h->incompat & INCOMPAT_CORRUPT)
		return "the image is marked corrupt";
	if (h->incompat & INCOMPAT_DIRTY)
		return "its dirty bit is set (lazy refcounts): repair it with "
		       "'qemu-img check -r all' first";
	if (h->compat & 1)
		return "it uses lazy refcounts (qemu-img amend -o "
		       "lazy_refcounts=off)";
	return NULL;
}

static int open_rw(struct qcow2 *q, const struct header *h,
		   const struct nd_qcow2_opts *o)
{
	const char *why;
	if (!o->writable)
		return 0;
	if ((why = no_write(q, h, o))) {
		errno = EROFS;
		nd_error("qcow2: cannot write this image: %s", why);
		return -EROFS;
	}
	int r = qcow2_write_init(q, h->rt_off, h->rt_clusters,
				 h->refcount_order, h->autoclear);
	if (r == 0) {
		q->l.ops = &qcow2_rw_ops;
		q->l.ro = false;
	}
	return r;
}

int nd_qcow2_open(struct nd_layer *file, const struct nd_qcow2_opts *o,
		  struct nd_layer **out)
{
	struct qcow2 *q = calloc(1, sizeof *q);
	uint8_t *b = NULL;
	char *fmt = NULL;
	struct header h;
	size_t n = file->size < 4096 ? (size_t)file->size : 4096;
	int r = -ENOMEM;

	if (!q) {
		nd_layer_close(file);
		return r;
	}
	q->l.ops = &qcow2_ro_ops;
	q->l.ro = true;
	q->file = file;
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->meta_lock, NULL);
	pthread_rwlock_init(&q->reading, NULL);
	pthread_mutex_init(&q->map_mu, NULL);
	pthread_cond_init(&q->map_cv, NULL);
	pthread_cond_init(&q->loaded, NULL);
	if (!(b = malloc(4096)) ||
	    (r = qcow2_file_read(q, b, n, 0, "header")) ||
	    (r = parse_header(b, n, file->size, &h)) ||
	    (r = header_extensions(b, n, &h, &fmt)) || (r = setup(q, &h, o)) ||
	    (r = open_backing(q, &h, fmt, o)) || (r = open_rw(q, &h, o)))
		goto fail;
	free(b);
	free(fmt);
	*out = &q->l;
	return 0;
fail:
	if (r == -ENOMEM)
		nd_error("qcow2: out of memory");
	free(b);
	free(fmt);
	qcow2_close(&q->l);
	return r;
}

/* --- netdiskfs qcow2 info ------------------------------------------------- */

static void describe_snapshots(struct qcow2 *q, const struct header *h,
			       FILE *out)
{
	uint64_t p = h->snapshots_off;
	struct snapshot sn;
	for (uint32_t i = 0; i < h->nb_snapshots; i++) {
		if (read_snapshot(q, h, &p, &sn))
			return;
		fprintf(out, "snapshot: id=%s name=%s virtual-size=%llu\n", sn.id,
			sn.name, (unsigned long long)sn.vsize);
		snapshot_free(&sn);
	}
}

int nd_qcow2_describe(struct nd_layer *file, FILE *out)
{
	struct qcow2 q = { .file = file };
	uint8_t b[4096];
	size_t n = file->size < sizeof b ? (size_t)file->size : sizeof b;
	struct header h;
	char *fmt = NULL, name[1024] = "";
	int r;

	if ((r = qcow2_file_read(&q, b, n, 0, "header")) ||
	    (r = parse_header(b, n, file->size, &h)) ||
	    (r = header_extensions(b, n, &h, &fmt)))
		return r;
	if (h.backing_off &&
	    qcow2_file_read(&q, name, h.backing_len, h.backing_off, "backing") == 0)
		name[h.backing_len] = 0;
	fprintf(out, "format: qcow2 version %u\nvirtual-size: %llu\n"
		"cluster-size: %u\ncompression: %s\nextended-l2: %s\n"
		"dirty: %s\ncorrupt: %s\nlazy-refcounts: %s\n",
		h.version, (unsigned long long)h.size, 1u << h.cluster_bits,
		h.compression ? "zstd" : "deflate",
		h.incompat & INCOMPAT_EXTL2 ? "yes" : "no",
		h.incompat & INCOMPAT_DIRTY ? "yes" : "no",
		h.incompat & INCOMPAT_CORRUPT ? "yes" : "no",
		h.compat & 1 ? "yes" : "no");
	if (*name)
		fprintf(out, "backing-file: %s\nbacking-format: %s\n", name,
			fmt ? fmt : "(not given)");
	q.cluster_bits = h.cluster_bits;
	describe_snapshots(&q, &h, out);
	free(fmt);
	return 0;
}
