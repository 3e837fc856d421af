/* overlay.c: a persistent copy-on-write overlay over any layer.
 *
 * One local file holds everything: a 4 KiB header (magic, the disk's size,
 * the base's identity), a map of two bits per 4 KiB block (base / data /
 * zero), and a data area where block N lives at data_off + N * 4 KiB, so
 * the file stays sparse and needs no allocation table.
 *
 * Crash safety without an fsync per write: a write goes to the data area
 * first and marks its blocks in the in-memory map; a flush takes a copy of
 * the changed map pages, makes the data durable, then writes that copy and
 * makes it durable. A map bit on disk therefore never names data that was
 * not on disk before it, and after a crash every block reads either as it
 * was at the last completed flush or as a later whole write.
 *
 * Sequential writers: each write only fills the page cache, so without
 * help the disk would start on the data at the fsync and the writer would
 * wait for all of it there. A helper thread asks the kernel to start
 * writing each range a write leaves behind (sync_file_range, which can
 * block while the disk's queue is full: hence not on the writer's
 * thread), so the disk works while the writes stream in and the fsync
 * waits only for the tail. It changes no ordering: durability still comes
 * from the flush's fdatasync.
 *
 * Locks: map_lock protects the map, its dirty pages and the count of
 * blocks in each state (never held across
 * I/O); stripe locks serialise writers of the same blocks, so a partial
 * block's read-modify-write cannot undo a concurrent write of its other
 * bytes; flush_lock serialises flushes. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "overlay.h"
#include "util/fullio.h"

#define MAGIC "NDOVERL1"
#define HDR_SIZE 4096u
#define ID_MAX (HDR_SIZE - 64)
#define BLK ND_OVERLAY_BLOCK
#define NSTRIPES 64
#define KICK_MIN (8u << 20) /* start writeback of at least this much */

enum { ST_BASE = 0, ST_DATA = 1, ST_ZERO = 2 };

/* The file's layout, from the disk's size. */
struct layout {
	uint64_t size, nblocks, map_off, map_len, data_off;
};

struct ovl {
	struct nd_layer l;
	struct nd_layer *base;
	int fd;
	char *path;
	struct layout lay;

	pthread_mutex_t map_lock;
	uint8_t *map;	/* lay.map_len bytes, 4 blocks a byte */
	uint8_t *dirty; /* one flag per 4 KiB map page */
	uint64_t count[4]; /* blocks in each state (3: a corrupt map) */
	atomic_uint_fast64_t writes, base_errors; /* for the status file */
	pthread_mutex_t stripes[NSTRIPES];
	pthread_mutex_t flush_lock;

	/* The writeback starter: [kick_lo, kick_hi) written, not started. */
	pthread_mutex_t kick_lock;
	pthread_cond_t kick_cond;
	pthread_t kick_tid;
	bool kick_run, kick_stop;
	uint64_t kick_lo, kick_hi;
};

static void layout_of(uint64_t size, struct layout *lay)
{
	lay->size = size;
	lay->nblocks = (size + BLK - 1) / BLK;
	lay->map_off = HDR_SIZE;
	lay->map_len = ((lay->nblocks + 3) / 4 + BLK - 1) / BLK * BLK;
	lay->data_off = (lay->map_off + lay->map_len + (1 << 20) - 1) >>
			20 << 20;
}

static int fail_io(const char *path, const char *what)
{
	int e = errno ? errno : EIO;
	nd_error("overlay %s: %s: %m", path, what);
	return -e;
}

/* --- the map ------------------------------------------------------------- */

static unsigned get_state(const uint8_t *map, uint64_t b)
{
	return map[b / 4] >> (b % 4 * 2) & 3;
}

/* Called with map_lock held. */
static void set_state(struct ovl *v, uint64_t b, unsigned st)
{
	uint8_t *p = &v->map[b / 4];
	uint8_t n = (uint8_t)((*p & ~(3u << (b % 4 * 2))) | st << (b % 4 * 2));
	if (n != *p) {
		v->count[get_state(v->map, b)]--;
		v->count[st]++;
		*p = n;
		v->dirty[b / 4 / BLK] = 1;
	}
}

static void set_states(struct ovl *v, uint64_t first, uint64_t n, unsigned st)
{
	pthread_mutex_lock(&v->map_lock);
	for (uint64_t b = first; b < first + n; b++)
		set_state(v, b, st);
	pthread_mutex_unlock(&v->map_lock);
}

/* How many blocks from B on share B's state (at most MAX). */
static uint64_t run_of(struct ovl *v, uint64_t b, uint64_t max, unsigned *st)
{
	uint64_t n = 1;
	pthread_mutex_lock(&v->map_lock);
	*st = get_state(v->map, b);
	while (n < max && get_state(v->map, b + n) == *st)
		n++;
	pthread_mutex_unlock(&v->map_lock);
	return n;
}

/* --- reading and writing --------------------------------------------------- */

static int read_run(struct ovl *v, unsigned st, char *buf, size_t len,
		    uint64_t off)
{
	if (st == ST_ZERO) {
		memset(buf, 0, len);
		return 0;
	}
	if (st == ST_BASE) {
		int r = nd_layer_pread(v->base, buf, len, off);
		if (r)
			atomic_fetch_add(&v->base_errors, 1);
		return r;
	}
	if (nd_full_pread(v->fd, buf, len, v->lay.data_off + off, true) == 0)
		return 0;
	return fail_io(v->path, "read");
}

static int ovl_pread(struct nd_layer *l, void *vbuf, size_t len, uint64_t off)
{
	struct ovl *v = (struct ovl *)l;
	char *buf = vbuf;
	while (len) {
		uint64_t b = off / BLK, last = (off + len - 1) / BLK;
		unsigned st;
		uint64_t n = run_of(v, b, last - b + 1, &st);
		uint64_t end = (b + n) * BLK;
		size_t chunk = end - off < len ? (size_t)(end - off) : len;
		int r = read_run(v, st, buf, chunk, off);
		if (r)
			return r;
		buf += chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

/* Lock the stripes of blocks [first, last], in order (no deadlock). */
static uint64_t stripes_mask(uint64_t first, uint64_t last)
{
	uint64_t mask = 0;
	for (uint64_t b = first; b <= last && mask != ~0ull; b++)
		mask |= 1ull << (b % NSTRIPES);
	return mask;
}

static void stripes_lock(struct ovl *v, uint64_t mask, bool lock)
{
	for (unsigned i = 0; i < NSTRIPES; i++)
		if (mask >> i & 1)
			(lock ? pthread_mutex_lock
			      : pthread_mutex_unlock)(&v->stripes[i]);
}

/* --- starting writeback ------------------------------------------------------ */

static void *kick_main(void *arg)
{
	struct ovl *v = arg;
	pthread_mutex_lock(&v->kick_lock);
	for (;;) {
		while (!v->kick_stop && v->kick_hi - v->kick_lo < KICK_MIN)
			pthread_cond_wait(&v->kick_cond, &v->kick_lock);
		if (v->kick_stop)
			break;
		uint64_t lo = v->kick_lo, hi = v->kick_hi;
		v->kick_lo = v->kick_hi = 0;
		pthread_mutex_unlock(&v->kick_lock);
		sync_file_range(v->fd, (off_t)lo, (off_t)(hi - lo),
				SYNC_FILE_RANGE_WRITE);
		pthread_mutex_lock(&v->kick_lock);
	}
	pthread_mutex_unlock(&v->kick_lock);
	return NULL;
}

/* The file range [LO, HI) was written: have the helper start it once a
 * contiguous run reaches KICK_MIN. A write not following the pending run
 * replaces it (random writers: the kernel's own writeback and the flush's
 * fdatasync take care of those). */
static void kick(struct ovl *v, uint64_t lo, uint64_t hi)
{
	if (!v->kick_run)
		return;
	pthread_mutex_lock(&v->kick_lock);
	if (lo != v->kick_hi || v->kick_hi == v->kick_lo)
		v->kick_lo = lo;
	v->kick_hi = hi;
	if (v->kick_hi - v->kick_lo >= KICK_MIN)
		pthread_cond_signal(&v->kick_cond);
	pthread_mutex_unlock(&v->kick_lock);
}

static void kick_start(struct ovl *v)
{
	v->kick_run = pthread_create(&v->kick_tid, NULL, kick_main, v) == 0;
}

static void kick_end(struct ovl *v)
{
	if (!v->kick_run)
		return;
	pthread_mutex_lock(&v->kick_lock);
	v->kick_stop = true;
	pthread_cond_signal(&v->kick_cond);
	pthread_mutex_unlock(&v->kick_lock);
	pthread_join(v->kick_tid, NULL);
	v->kick_run = false;
}

/* Write BUF to the data area, a partial first or last block completed
 * with what it reads as now (called with the blocks' stripes locked). */
static int write_blocks(struct ovl *v, const char *buf, size_t len,
			uint64_t off)
{
	uint64_t first = off / BLK, last = (off + len - 1) / BLK;
	uint64_t start = first * BLK;
	uint64_t end = (last + 1) * BLK < v->lay.size ? (last + 1) * BLK
						      : v->lay.size;
	char *tmp = NULL;
	int r = 0;

	if (start != off || end != off + len) {
		if (!(tmp = malloc(end - start)))
			return -ENOMEM;
		if (start != off)
			r = ovl_pread(&v->l, tmp, end - start < BLK ? end - start
								  : BLK,
				      start);
		if (!r && end != off + len)
			r = ovl_pread(&v->l, tmp + (last * BLK - start),
				      end - last * BLK, last * BLK);
		memcpy(tmp + (off - start), buf, len);
		buf = tmp;
		len = end - start;
		off = start;
	}
	if (!r && nd_full_pwrite(v->fd, buf, len, v->lay.data_off + off) == -1)
		r = fail_io(v->path, "write");
	if (!r) {
		set_states(v, first, last - first + 1, ST_DATA);
		kick(v, v->lay.data_off + off, v->lay.data_off + off + len);
	}
	free(tmp);
	return r;
}

static int ovl_pwrite(struct nd_layer *l, const void *buf, size_t len,
		      uint64_t off)
{
	struct ovl *v = (struct ovl *)l;
	uint64_t mask = stripes_mask(off / BLK, (off + len - 1) / BLK);
	int r;

	atomic_fetch_add(&v->writes, 1);
	stripes_lock(v, mask, true);
	r = write_blocks(v, buf, len, off);
	stripes_lock(v, mask, false);
	return r;
}

/* Zeroes written as data: the parts of blocks a zero range covers. */
static int write_zeroes(struct nd_layer *l, uint64_t len, uint64_t off)
{
	char *z = calloc(1, len ? (size_t)len : 1);
	int r = z ? ovl_pwrite(l, z, (size_t)len, off) : -ENOMEM;
	free(z);
	return r;
}

static int ovl_zero(struct nd_layer *l, uint64_t len, uint64_t off)
{
	struct ovl *v = (struct ovl *)l;
	uint64_t first = (off + BLK - 1) / BLK, end = (off + len) / BLK;
	int r = 0;

	atomic_fetch_add(&v->writes, 1);
	if ((off + len) == v->lay.size)
		end = v->lay.nblocks; /* the last, short block is whole */
	if (first >= end) /* no whole block */
		return write_zeroes(l, len, off);
	if (off < first * BLK)
		r = write_zeroes(l, first * BLK - off, off);
	if (!r && end * BLK < off + len)
		r = write_zeroes(l, off + len - end * BLK, end * BLK);
	if (r)
		return r;
	uint64_t mask = stripes_mask(first, end - 1);
	stripes_lock(v, mask, true);
	set_states(v, first, end - first, ST_ZERO);
	/* The data there is dead: give the space back. */
	fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		  (off_t)(v->lay.data_off + first * BLK),
		  (off_t)((end - first) * BLK));
	stripes_lock(v, mask, false);
	return 0;
}

/* --- durability ---------------------------------------------------------- */

/* Copy the dirty map pages (clearing their flags) into a list to write. */
static uint8_t *take_dirty(struct ovl *v, uint64_t **pages, size_t *n)
{
	size_t np = v->lay.map_len / BLK, k = 0;
	uint8_t *copy;
	pthread_mutex_lock(&v->map_lock);
	for (size_t i = 0; i < np; i++)
		k += v->dirty[i];
	copy = malloc(k * BLK + 1);
	*pages = malloc((k + 1) * sizeof **pages);
	*n = 0;
	for (size_t i = 0; copy && *pages && i < np; i++)
		if (v->dirty[i]) {
			memcpy(copy + *n * BLK, v->map + i * BLK, BLK);
			(*pages)[(*n)++] = i;
			v->dirty[i] = 0;
		}
	pthread_mutex_unlock(&v->map_lock);
	return copy;
}

static int write_map(struct ovl *v)
{
	uint64_t *pages = NULL;
	size_t n = 0;
	uint8_t *copy = take_dirty(v, &pages, &n);
	int r = 0;

	if (!copy || !pages) {
		free(copy);
		free(pages);
		return -ENOMEM;
	}
	/* The data first: a map bit on disk never names data that is not. */
	if (fdatasync(v->fd) == -1)
		r = fail_io(v->path, "fdatasync");
	for (size_t i = 0; !r && i < n; i++)
		if (nd_full_pwrite(v->fd, copy + i * BLK, BLK,
				v->lay.map_off + pages[i] * BLK) == -1)
			r = fail_io(v->path, "write of the map");
	if (!r && n && fdatasync(v->fd) == -1)
		r = fail_io(v->path, "fdatasync");
	if (r) { /* write the pages again next time */
		pthread_mutex_lock(&v->map_lock);
		for (size_t i = 0; i < n; i++)
			v->dirty[pages[i]] = 1;
		pthread_mutex_unlock(&v->map_lock);
	}
	free(copy);
	free(pages);
	return r;
}

static int ovl_flush(struct nd_layer *l)
{
	struct ovl *v = (struct ovl *)l;
	int r;
	pthread_mutex_lock(&v->flush_lock);
	r = write_map(v);
	pthread_mutex_unlock(&v->flush_lock);
	return r;
}

static void ovl_free(struct ovl *v)
{
	kick_end(v);
	if (v->fd >= 0)
		close(v->fd);
	nd_layer_close(v->base);
	free(v->map);
	free(v->dirty);
	free(v->path);
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_destroy(&v->stripes[i]);
	pthread_mutex_destroy(&v->map_lock);
	pthread_mutex_destroy(&v->flush_lock);
	pthread_mutex_destroy(&v->kick_lock);
	pthread_cond_destroy(&v->kick_cond);
	free(v);
}

static void ovl_close(struct nd_layer *l)
{
	struct ovl *v = (struct ovl *)l;
	if (ovl_flush(l))
		nd_warn("%s", nd_get_error());
	ovl_free(v);
}

static const struct nd_layer_ops ovl_ops = {
	.name = "overlay",
	.pread = ovl_pread,
	.pwrite = ovl_pwrite,
	.zero = ovl_zero,
	.flush = ovl_flush,
	.close = ovl_close,
};

/* --- the file: header, create, load ---------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int create_file(const char *path, uint64_t size, const char *identity)
{
	uint8_t h[HDR_SIZE] = { 0 };
	struct layout lay;
	size_t idlen = strlen(identity);
	int fd, r = 0;

	if (idlen > ID_MAX) {
		errno = ENAMETOOLONG;
		nd_error("overlay %s: the base's identity is too long", path);
		return -ENAMETOOLONG;
	}
	layout_of(size, &lay);
	memcpy(h, MAGIC, 8);
	put_le(h + 8, 1, 4);
	put_le(h + 12, BLK, 4);
	put_le(h + 16, size, 8);
	put_le(h + 24, idlen, 4);
	memcpy(h + 64, identity, idlen);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail_io(path, "create");
	/* The header last: a file without it is not an overlay yet. */
	if (ftruncate(fd, (off_t)(lay.data_off + size)) == -1 ||
	    fdatasync(fd) == -1 || nd_full_pwrite(fd, h, sizeof h, 0) == -1 ||
	    fsync(fd) == -1)
		r = fail_io(path, "create");
	close(fd);
	if (r)
		unlink(path);
	return r;
}

static int bad_file(const char *path, const char *why)
{
	errno = EINVAL;
	nd_error("overlay %s: %s", path, why);
	return -EINVAL;
}

static struct ovl *ovl_new(void)
{
	struct ovl *v = calloc(1, sizeof *v);
	if (!v)
		return NULL;
	v->fd = -1;
	pthread_mutex_init(&v->map_lock, NULL);
	pthread_mutex_init(&v->flush_lock, NULL);
	pthread_mutex_init(&v->kick_lock, NULL);
	pthread_cond_init(&v->kick_cond, NULL);
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_init(&v->stripes[i], NULL);
	return v;
}

/* Open PATH and read its header and map; *IDENTITY is malloc'd. */
static int ovl_load(const char *path, bool rw, struct ovl *v, char **identity)
{
	uint8_t h[HDR_SIZE];
	struct stat st;

	if (!(v->path = strdup(path)))
		return -ENOMEM;
	v->fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (v->fd < 0 || fstat(v->fd, &st) == -1)
		return fail_io(path, "open");
	if (st.st_size < HDR_SIZE || nd_full_pread(v->fd, h, sizeof h, 0, true) == -1)
		return bad_file(path, "too short for an overlay");
	if (memcmp(h, MAGIC, 8) != 0)
		return bad_file(path, "not a netdiskfs overlay (no magic)");
	if (get_le(h + 8, 4) != 1 || get_le(h + 12, 4) != BLK)
		return bad_file(path, "unknown version or block size");
	uint64_t size = get_le(h + 16, 8), idlen = get_le(h + 24, 4);
	if (idlen > ID_MAX || size > (1ull << 56))
		return bad_file(path, "corrupt header");
	layout_of(size, &v->lay);
	if (!(*identity = strndup((const char *)h + 64, idlen)) ||
	    !(v->map = malloc(v->lay.map_len)) ||
	    !(v->dirty = calloc(v->lay.map_len / BLK, 1)))
		return -ENOMEM;
	if (nd_full_pread(v->fd, v->map, v->lay.map_len, v->lay.map_off, true) == -1)
		return fail_io(path, "read of the map");
	for (uint64_t b = 0; b < v->lay.nblocks; b++)
		v->count[get_state(v->map, b)]++;
	v->l.size = size;
	return 0;
}

static int check_base(const char *path, const char *have, const char *want,
		      uint64_t size, uint64_t base_size)
{
	if (size != base_size) {
		errno = EINVAL;
		nd_error("overlay %s was made over a disk of %llu bytes; this "
			 "base has %llu (base: %s)", path,
			 (unsigned long long)size, (unsigned long long)base_size,
			 want);
		return -EINVAL;
	}
	if (strcmp(have, want) != 0) {
		errno = EINVAL;
		nd_error("overlay %s was made over '%s', not '%s' "
			 "(overlay-force=on to use it anyway)", path, have, want);
		return -EINVAL;
	}
	return 0;
}

int nd_overlay_open(const char *path, struct nd_layer *base,
		    const char *identity, const struct nd_overlay_opts *o,
		    struct nd_layer **out)
{
	struct ovl *v = ovl_new();
	char *have = NULL;
	int r = -ENOMEM;

	if (!v) {
		nd_layer_close(base);
		return r;
	}
	v->base = base;
	if (access(path, F_OK) == -1 && errno == ENOENT) {
		if (!o->create) {
			r = -ENOENT;
			nd_error("overlay %s does not exist (overlay-create=off)",
				 path);
			goto fail;
		}
		if ((r = create_file(path, base->size, identity)))
			goto fail;
	}
	if ((r = ovl_load(path, true, v, &have)))
		goto fail;
	if (!o->force &&
	    (r = check_base(path, have, identity, v->l.size, base->size)))
		goto fail;
	if (o->force && v->l.size != base->size &&
	    (r = check_base(path, have, identity, v->l.size, base->size)))
		goto fail;
	free(have);
	kick_start(v);
	v->l.ops = &ovl_ops;
	*out = &v->l;
	return 0;
fail:
	free(have);
	ovl_free(v);
	return r;
}

bool nd_overlay_stats(struct nd_layer *l, struct nd_overlay_stats *st)
{
	struct ovl *v = (struct ovl *)l;
	if (!l || l->ops != &ovl_ops)
		return false;
	st->path = v->path;
	pthread_mutex_lock(&v->map_lock);
	st->data_bytes = v->count[ST_DATA] * BLK;
	st->zero_bytes = v->count[ST_ZERO] * BLK;
	pthread_mutex_unlock(&v->map_lock);
	st->writes = atomic_load(&v->writes);
	st->base_errors = atomic_load(&v->base_errors);
	return true;
}

/* --- the tools (netdiskfs overlay ...) -------------------------------------- */

int nd_overlay_info(const char *path, struct nd_overlay_info *info)
{
	struct ovl *v = ovl_new();
	unsigned prev = ST_BASE;
	int r;

	memset(info, 0, sizeof *info);
	if (!v)
		return -ENOMEM;
	if ((r = ovl_load(path, false, v, &info->identity)) == 0) {
		info->size = v->lay.size;
		for (uint64_t b = 0; b < v->lay.nblocks; b++) {
			unsigned st = get_state(v->map, b);
			info->data_blocks += st == ST_DATA;
			info->zero_blocks += st == ST_ZERO;
			info->extents += st != ST_BASE && st != prev;
			prev = st;
		}
	}
	ovl_free(v);
	return r;
}

int nd_overlay_each(const char *path, nd_overlay_fn fn, void *arg)
{
	struct ovl *v = ovl_new();
	char *id = NULL;
	int r;

	if (!v)
		return -ENOMEM;
	r = ovl_load(path, false, v, &id);
	for (uint64_t b = 0; r == 0 && b < v->lay.nblocks;) {
		unsigned st;
		uint64_t n = run_of(v, b, v->lay.nblocks - b, &st);
		uint64_t end = (b + n) * BLK < v->lay.size ? (b + n) * BLK
							   : v->lay.size;
		if (st != ST_BASE)
			r = fn(b * BLK, end - b * BLK, st == ST_ZERO, arg);
		b += n;
	}
	free(id);
	ovl_free(v);
	return r;
}

int nd_overlay_read_data(const char *path, void *buf, size_t len,
			 uint64_t off)
{
	struct ovl *v = ovl_new();
	char *id = NULL;
	int r;

	if (!v)
		return -ENOMEM;
	if ((r = ovl_load(path, false, v, &id)) == 0) {
		if (off > v->lay.size || len > v->lay.size - off)
			r = bad_file(path, "read past the end of the disk");
		else if (nd_full_pread(v->fd, buf, len, v->lay.data_off + off, true))
			r = fail_io(path, "read");
	}
	free(id);
	ovl_free(v);
	return r;
}

int nd_overlay_forget(const char *path, uint64_t off, uint64_t len)
{
	struct ovl *v = ovl_new();
	char *id = NULL;
	int r;

	if (!v)
		return -ENOMEM;
	if ((r = ovl_load(path, true, v, &id)) == 0) {
		uint64_t first = off / BLK;
		uint64_t end = (off + len + BLK - 1) / BLK;
		if (end > v->lay.nblocks)
			end = v->lay.nblocks;
		if (first < end) {
			set_states(v, first, end - first, ST_BASE);
			r = write_map(v);
			fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  (off_t)(v->lay.data_off + first * BLK),
				  (off_t)((end - first) * BLK));
		}
	}
	free(id);
	ovl_free(v);
	return r;
}
