/* tier.c: the persistent cache tier (cache-dir=).
 *
 * Under CACHE-DIR, each entry has a directory named by a hash of its
 * identity (canonical options without secrets, never the table name):
 *   meta    identity, disk size, block size, the server's validator,
 *           and what the backend said at open (to mount with the server
 *           down: size, limits, validator)
 *   data    block N at N * block size (sparse)
 *   map     block N's checksum at N * 8 (0: absent), mapped in memory
 *   lock    held (flock) by the one mount using the directory
 *   writer  exists while a mount that writes the disk has it open
 *
 * A block is served only if XXH3 of its bytes, seeded with its number,
 * equals its map record. Data and record are written without an fsync:
 * after a crash or a power loss a record either matches its data, or it
 * does not and the block is fetched again. What checksums cannot catch is
 * a block this mount wrote to the server whose old copy survives a crash:
 * so a writing mount marks the directory (writer) before its first write
 * and clears the mark only at a clean close; a marked directory found at
 * mount is dropped whole.
 *
 * The caller never puts bytes that a write may have made stale (the
 * memory cache knows: a block written while it was being fetched).
 *
 * Readers do not write the disk themselves: nd_tier_queue_run puts the
 * blocks (the memory cache's own, kept for it) in a queue bounded in
 * bytes, and one writer thread per tier, at idle CPU priority, does the
 * checksum and write of nd_tier_put_run for each, in order. A block is
 * not present until that thread wrote it. When the queue is full the
 * blocks are not kept (counted: the tier is a cache), so a local disk or
 * a CPU slower than the server never slows the read that fetched them.
 * nd_tier_invalidate cancels the queued puts of a block (each carries
 * the invalidation count at queueing; a block invalidated since is
 * skipped), so older bytes never overtake this mount's write. A clean
 * close writes what is queued (bounded in time); a crash loses it, as
 * the map records only blocks whose data was written. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <xxhash.h>

#include "log.h"
#include "tier.h"
#include "util/clock.h"

/* A run of blocks waiting for the writer thread: the caller's bytes,
 * kept as they are until DONE(ARG). */
struct q_item {
	struct q_item *next;
	uint64_t idx, epoch; /* epoch: inv_seq when it was queued */
	size_t n, len;
	const char *buf;
	void (*done)(void *arg);
	void *arg;
};

struct tier_queue {
	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t cond;  /* an item queued, one done, or stop */
	pthread_t thr;
	bool started, stop, abandon;
	size_t cap, live; /* bytes: the bound, and queued now */
	struct q_item *head, *tail;
	uint64_t dropped_bytes, dropped_blocks;
};

struct nd_tier {
	char *path; /* CACHE-DIR/KEY */
	int lock_fd, data_fd, map_fd;
	int direct_fd; /* data with O_DIRECT, or -1: runs bypass the page cache */
	uint32_t bs;
	uint64_t size, nblocks, max_blocks;
	bool writable, writer_marked;
	char validator[128];

	pthread_mutex_t lock; /* protects everything below and map stores */
	uint64_t *map;	      /* mmap'ed records */
	uint8_t *flags;	      /* per block: PRESENT, REF */
	uint64_t used, hand, hits, misses;
	bool on;
	char state[160];
	char dropped[200]; /* why the blocks found at open were dropped */
	/* Invalidations: a count, and per block the count at its last one
	 * (inv_at: writable tiers; else inv_floor for every block). */
	uint64_t inv_seq, inv_floor, *inv_at;

	struct tier_queue q;
};

#define PRESENT 1u
#define REF 2u

/* O_DIRECT wants the buffer, length and offset aligned to this. */
#define DIRECT_ALIGN 4096u

static uint64_t block_sum(const void *buf, size_t len, uint64_t idx)
{
	uint64_t s = XXH3_64bits_withSeed(buf, len, idx);
	return s ? s : 1; /* 0 means absent */
}

static char *path_of(const struct nd_tier *t, const char *file)
{
	char *p;
	return asprintf(&p, "%s/%s", t->path, file) < 0 ? NULL : p;
}

/* Turn the tier off for this mount: one log line, reads go to the server. */
static void tier_off(struct nd_tier *t, const char *what, int err)
{
	pthread_mutex_lock(&t->lock);
	if (t->on) {
		t->on = false;
		snprintf(t->state, sizeof t->state, "off: %s: %s", what,
			 strerror(err));
		nd_warn("cache-dir %s: disk tier off (%s: %s); reads go to "
			"the server",
			t->path, what, strerror(err));
	}
	pthread_mutex_unlock(&t->lock);
}

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = fd < 0 ? -1 : fsync(fd);
	if (fd >= 0)
		close(fd);
	return r;
}

/* --- meta ----------------------------------------------------------------- */

static char *meta_text(const struct nd_tier_cfg *c)
{
	char *s;
	if (asprintf(&s,
		     "netdiskfs-cache 1\nsize=%" PRIu64 "\nblock-size=%" PRIu32
		     "\nvalidator=%s\ninfo=%s\nidentity=%s\n",
		     c->size, c->block_size, c->validator ? c->validator : "",
		     c->info ? c->info : "", c->identity) < 0)
		return NULL;
	return s;
}

static char *read_small(const char *path)
{
	char *buf = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size < 65536 &&
	    (buf = calloc(1, (size_t)st.st_size + 1)) &&
	    read(fd, buf, (size_t)st.st_size) != st.st_size) {
		free(buf);
		buf = NULL;
	}
	if (fd >= 0)
		close(fd);
	return buf;
}

static int write_meta(struct nd_tier *t, const char *text)
{
	char *tmp = path_of(t, "meta.tmp"), *dst = path_of(t, "meta");
	int fd = tmp ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
		     : -1;
	int r = -1;
	if (fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) &&
	    fsync(fd) == 0 && rename(tmp, dst) == 0 && fsync_dir(t->path) == 0)
		r = 0;
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(dst);
	return r;
}

/* --- open ------------------------------------------------------------------ */

/* The value of line KEY ("\nname=") of a meta text, *LEN bytes long. */
static const char *meta_field(const char *meta, const char *key, int *len)
{
	const char *p = strstr(meta, key);
	p = p ? p + strlen(key) : "";
	*len = (int)strcspn(p, "\n");
	return p;
}

/* Does line KEY= of meta texts A and B have the same value? */
static bool same_field(const char *a, const char *b, const char *key)
{
	int nx, ny;
	const char *x = meta_field(a, key, &nx), *y = meta_field(b, key, &ny);
	return nx == ny && memcmp(x, y, (size_t)nx) == 0;
}

/* Why the data there cannot be used, or NULL; *REWRITE: the meta text
 * differs only in what does not make the blocks stale (the backend's
 * limits). */
static const char *stale_reason(struct nd_tier *t, const char *want,
				bool *rewrite)
{
	char *have_path = path_of(t, "meta"), *w = path_of(t, "writer");
	char *have = have_path ? read_small(have_path) : NULL;
	const char *why = NULL;
	*rewrite = false;
	if (!have || strncmp(have, "netdiskfs-cache 1\n", 18) != 0)
		why = "new";
	else if (w && access(w, F_OK) == 0)
		why = "a mount that wrote the disk did not close it cleanly";
	else if (!same_field(have, want, "\nvalidator="))
		why = "the server's validator changed";
	else if (!same_field(have, want, "\nsize=") ||
		 !same_field(have, want, "\nblock-size=") ||
		 !same_field(have, want, "\nidentity="))
		why = "the disk's size or block size changed";
	else
		*rewrite = strcmp(have, want) != 0;
	if (why && strcmp(why, "the server's validator changed") == 0) {
		int hl, wl;
		const char *hv = meta_field(have, "\nvalidator=", &hl);
		const char *wv = meta_field(want, "\nvalidator=", &wl);
		snprintf(t->dropped, sizeof t->dropped,
			 "the server's validator changed (%.*s, was %.*s)",
			 wl ? wl : 4, wl ? wv : "none", hl ? hl : 4,
			 hl ? hv : "none");
	} else if (why && strcmp(why, "new") != 0) {
		snprintf(t->dropped, sizeof t->dropped, "%s", why);
	}
	free(have);
	free(have_path);
	free(w);
	return why;
}

static int open_file(struct nd_tier *t, const char *name, bool reset)
{
	char *p = path_of(t, name);
	int fd = p ? open(p, O_RDWR | O_CREAT | O_CLOEXEC | (reset ? O_TRUNC : 0),
			  0600)
		   : -1;
	free(p);
	return fd;
}

/* The data file again with O_DIRECT (-1 where the file system has no
 * O_DIRECT): a warm run goes from the disk straight into the cache's
 * memory, without a copy through the page cache. */
static int open_direct(struct nd_tier *t)
{
	char *p = path_of(t, "data");
	int fd = p ? open(p, O_RDONLY | O_DIRECT | O_CLOEXEC) : -1;
	free(p);
	return fd;
}

static int map_setup(struct nd_tier *t)
{
	size_t len = t->nblocks * 8;
	if (ftruncate(t->map_fd, (off_t)len) == -1 ||
	    (errno = posix_fallocate(t->map_fd, 0, (off_t)len)) != 0)
		return -1;
	t->map = mmap(NULL, len ? len : 8, PROT_READ | PROT_WRITE, MAP_SHARED,
		      t->map_fd, 0);
	if (t->map == MAP_FAILED) {
		t->map = NULL;
		return -1;
	}
	for (uint64_t i = 0; i < t->nblocks; i++)
		if (t->map[i]) {
			t->flags[i] = PRESENT;
			t->used++;
		}
	return 0;
}

static uint64_t default_limit(const struct nd_tier_cfg *c)
{
	struct statvfs vfs;
	uint64_t lim = c->limit;
	if (!lim && statvfs(c->dir, &vfs) == 0)
		lim = (uint64_t)vfs.f_bavail * vfs.f_frsize / 10;
	return lim < c->size ? lim : c->size;
}

static int tier_setup(struct nd_tier *t, const struct nd_tier_cfg *c)
{
	char *want = meta_text(c);
	bool rewrite = false;
	const char *why = want ? stale_reason(t, want, &rewrite)
			       : "out of memory";
	bool reset = why != NULL;
	int r = -1;

	if (reset && strcmp(why, "new") != 0)
		nd_warn("cache-dir %s: cached blocks dropped: %s", t->path,
			t->dropped[0] ? t->dropped : why);
	t->data_fd = open_file(t, "data", reset);
	t->map_fd = open_file(t, "map", reset);
	if (t->data_fd < 0 || t->map_fd < 0 || !want)
		goto out;
	if (reset) {
		char *w = path_of(t, "writer");
		if (w)
			unlink(w);
		free(w);
	}
	if ((reset || rewrite) && write_meta(t, want) == -1)
		goto out;
	t->direct_fd = open_direct(t);
	r = map_setup(t);
out:
	free(want);
	return r;
}

static void tier_free(struct nd_tier *t)
{
	if (t->map)
		munmap(t->map, t->nblocks ? t->nblocks * 8 : 8);
	for (int *fd = &t->lock_fd; fd <= &t->direct_fd; fd++)
		if (*fd >= 0)
			close(*fd);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->q.lock);
	pthread_cond_destroy(&t->q.cond);
	free(t->inv_at);
	free(t->flags);
	free(t->path);
	free(t);
}

static struct nd_tier *tier_new(const struct nd_tier_cfg *c)
{
	struct nd_tier *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->lock_fd = t->data_fd = t->map_fd = t->direct_fd = -1;
	t->bs = c->block_size;
	t->size = c->size;
	t->nblocks = (c->size + c->block_size - 1) / c->block_size;
	uint64_t lim = default_limit(c);
	t->max_blocks = lim >= c->size ? t->nblocks : lim / c->block_size;
	t->writable = c->writable;
	snprintf(t->validator, sizeof t->validator, "%s",
		 c->validator ? c->validator : "");
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->q.lock, NULL);
	nd_cond_init_mono(&t->q.cond);
	t->q.cap = c->queue ? c->queue : ND_TIER_QUEUE;
	if (c->writable) /* else (or without memory) inv_floor for all */
		t->inv_at = calloc(t->nblocks ? t->nblocks : 1,
				   sizeof *t->inv_at);
	if (asprintf(&t->path, "%s/%016llx", c->dir,
		     (unsigned long long)XXH3_64bits(c->identity,
						     strlen(c->identity))) < 0)
		t->path = NULL;
	if (!t->path || !(t->flags = calloc(t->nblocks ? t->nblocks : 1, 1))) {
		tier_free(t);
		return NULL;
	}
	return t;
}

static void evict_to(struct nd_tier *t, uint64_t max);
static void q_start(struct nd_tier *t);
static void q_stop(struct nd_tier *t);

int nd_tier_open(const struct nd_tier_cfg *c, struct nd_tier **out)
{
	struct nd_tier *t;
	char *lock;

	*out = NULL;
	if (!c->block_size || !c->identity) {
		errno = EINVAL;
		nd_error("cache-dir: no block size or identity");
		return -1;
	}
	mkdir(c->dir, 0700);
	if (!(t = tier_new(c)))
		return -1;
	mkdir(t->path, 0700);
	lock = path_of(t, "lock");
	t->lock_fd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
	free(lock);
	if (t->lock_fd < 0 || flock(t->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		nd_warn("cache-dir %s: %s; this mount works without the disk "
			"tier",
			t->path,
			errno == EWOULDBLOCK ? "in use by another mount"
					     : strerror(errno));
		tier_free(t);
		return 0;
	}
	if (tier_setup(t, c) == -1) {
		nd_warn("cache-dir %s: %s; this mount works without the disk "
			"tier",
			t->path, strerror(errno));
		tier_free(t);
		return 0;
	}
	t->on = true;
	snprintf(t->state, sizeof t->state, "on");
	q_start(t);
	pthread_mutex_lock(&t->lock);
	evict_to(t, t->max_blocks); /* a smaller limit than last time */
	pthread_mutex_unlock(&t->lock);
	*out = t;
	return 0;
}

void nd_tier_close(struct nd_tier *t)
{
	if (!t)
		return;
	q_stop(t); /* what readers queued is written first */
	/* Data and map durable first; only then the writer mark goes. */
	if (t->on && msync(t->map, t->nblocks * 8, MS_SYNC) == 0 &&
	    fdatasync(t->data_fd) == 0 && t->writer_marked) {
		char *w = path_of(t, "writer");
		if (w && unlink(w) == 0)
			fsync_dir(t->path);
		free(w);
	}
	tier_free(t);
}

/* --- blocks ---------------------------------------------------------------- */

/* Forget block I (called with the lock held). */
static void forget(struct nd_tier *t, uint64_t i)
{
	if (t->flags[i] & PRESENT)
		t->used--;
	t->flags[i] = 0;
	t->map[i] = 0;
}

/* Clock: evict unreferenced blocks until at most MAX are present. */
static void evict_to(struct nd_tier *t, uint64_t max)
{
	for (uint64_t steps = 0; t->used > max && steps < 3 * t->nblocks;
	     steps++) {
		uint64_t i = t->hand;
		t->hand = (t->hand + 1) % t->nblocks;
		if (!(t->flags[i] & PRESENT))
			continue;
		if (t->flags[i] & REF) {
			t->flags[i] &= (uint8_t)~REF;
			continue;
		}
		forget(t, i);
		fallocate(t->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			  (off_t)(i * t->bs), t->bs);
	}
}

/* The records of blocks IDX..IDX+N-1 into SUMS: true when all are
 * present (a miss is counted otherwise). */
static bool run_sums(struct nd_tier *t, uint64_t idx, size_t n, uint64_t *sums)
{
	bool all = true;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < n && all; i++) {
		sums[i] = t->on && (t->flags[idx + i] & PRESENT) ? t->map[idx + i]
								 : 0;
		all = sums[i] != 0;
	}
	if (!all)
		t->misses++;
	pthread_mutex_unlock(&t->lock);
	return all;
}

/* Check each block of a run read into BUF against SUMS; a bad one is
 * forgotten (fetched again). True when all matched. */
static bool run_check(struct nd_tier *t, uint64_t idx, size_t n,
		      const char *buf, size_t len, const uint64_t *sums,
		      bool read_ok)
{
	bool ok_all = read_ok;
	for (size_t i = 0; i < n && read_ok; i++) {
		size_t bl = i + 1 < n ? t->bs : len - i * (size_t)t->bs;
		if (block_sum(buf + i * (size_t)t->bs, bl, idx + i) != sums[i]) {
			ok_all = false;
			pthread_mutex_lock(&t->lock);
			if (t->on && t->map[idx + i] == sums[i])
				forget(t, idx + i); /* bad on disk */
			pthread_mutex_unlock(&t->lock);
		}
	}
	pthread_mutex_lock(&t->lock);
	if (ok_all) {
		for (size_t i = 0; i < n; i++)
			t->flags[idx + i] |= REF;
		t->hits += n;
	} else {
		t->misses++;
	}
	pthread_mutex_unlock(&t->lock);
	return ok_all;
}

/* LEN bytes at OFF into BUF: with O_DIRECT when all are aligned. */
static ssize_t run_read(struct nd_tier *t, void *buf, size_t len, uint64_t off)
{
	if (t->direct_fd >= 0 &&
	    ((uintptr_t)buf | len | off) % DIRECT_ALIGN == 0) {
		ssize_t got = pread(t->direct_fd, buf, len, (off_t)off);
		if (got == (ssize_t)len)
			return got;
	}
	return pread(t->data_fd, buf, len, (off_t)off);
}

/* The sums of a run live on the stack up to this many blocks. */
#define RUN_MAX 64

/* Is [IDX, IDX+N) a run of blocks LEN bytes long (only its last block
 * short), of at most RUN_MAX blocks? */
static bool run_ok(const struct nd_tier *t, uint64_t idx, size_t n, size_t len)
{
	return t && n > 0 && idx + n <= t->nblocks && n <= RUN_MAX &&
	       len <= n * (size_t)t->bs && len > (n - 1) * (size_t)t->bs;
}

bool nd_tier_get_run(struct nd_tier *t, uint64_t idx, size_t n, void *buf,
		     size_t len)
{
	uint64_t sums[RUN_MAX];
	ssize_t got;

	if (!run_ok(t, idx, n, len) || !run_sums(t, idx, n, sums))
		return false;
	/* One read for the whole run: the disk sees one large request. */
	got = run_read(t, buf, len, idx * t->bs);
	if (got < 0)
		tier_off(t, "read", errno);
	return run_check(t, idx, n, buf, len, sums, got == (ssize_t)len);
}

bool nd_tier_get(struct nd_tier *t, uint64_t idx, void *buf, size_t len)
{
	return nd_tier_get_run(t, idx, 1, buf, len);
}

void nd_tier_advise(struct nd_tier *t, uint64_t off, uint64_t len)
{
	if (t && t->on && t->direct_fd < 0)
		posix_fadvise(t->data_fd, (off_t)off, (off_t)len,
			      POSIX_FADV_WILLNEED);
}

/* Was block K invalidated since a copy of it was queued at EPOCH? Lock
 * held. */
static bool cancelled(const struct nd_tier *t, uint64_t k, uint64_t epoch)
{
	return t->inv_floor > epoch || (t->inv_at && t->inv_at[k] > epoch);
}

/* Claim blocks IDX..IDX+N-1 for new data (SUMS): their records are
 * cleared first, so a crash before the data is there never validates
 * old bytes. False when none needs writing, or (*GONE) when one was
 * invalidated since EPOCH: then none is claimed. */
static bool put_claim(struct nd_tier *t, uint64_t idx, size_t n,
		      const uint64_t *sums, uint64_t epoch, bool *gone)
{
	bool go = false;
	*gone = false;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; t->on && i < n; i++) {
		go |= t->map[idx + i] != sums[i];
		*gone |= cancelled(t, idx + i, epoch);
	}
	go &= !*gone;
	for (size_t i = 0; go && t->on && i < n; i++) {
		uint64_t k = idx + i;
		if (!(t->flags[k] & PRESENT))
			evict_to(t, t->max_blocks - 1);
		if (!(t->flags[k] & PRESENT))
			t->used++;
		t->flags[k] = PRESENT | REF;
		t->map[k] = 0; /* not valid until the data is there */
	}
	pthread_mutex_unlock(&t->lock);
	return go;
}

/* The put of a run (see nd_tier_put_run) of bytes fetched before
 * invalidation EPOCH: false when a block of it was invalidated since
 * (nothing written). */
static bool put_run_at(struct nd_tier *t, uint64_t idx, size_t n,
		       const void *buf, size_t len, uint64_t epoch)
{
	uint64_t sums[RUN_MAX];
	const char *p = buf;
	bool gone;

	if (!run_ok(t, idx, n, len) || t->max_blocks < n)
		return true;
	for (size_t i = 0; i < n; i++)
		sums[i] = block_sum(p + i * (size_t)t->bs,
				    i + 1 < n ? t->bs : len - i * (size_t)t->bs,
				    idx + i);
	if (!put_claim(t, idx, n, sums, epoch, &gone))
		return !gone;
	/* Through the page cache: the writer thread copies at idle CPU
	 * priority, the disk writes later; were it O_DIRECT, the virtual
	 * disk's work would compete with the readers now. */
	if (pwrite(t->data_fd, buf, len, (off_t)(idx * t->bs)) != (ssize_t)len) {
		tier_off(t, "write", errno ? errno : ENOSPC);
		return true;
	}
	/* An invalidation meanwhile cleared the flags: the record stays 0. */
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; t->on && i < n; i++)
		if ((t->flags[idx + i] & PRESENT) && t->map[idx + i] == 0)
			t->map[idx + i] = sums[i];
	pthread_mutex_unlock(&t->lock);
	return true;
}

void nd_tier_put_run(struct nd_tier *t, uint64_t idx, size_t n,
		     const void *buf, size_t len)
{
	put_run_at(t, idx, n, buf, len, UINT64_MAX);
}

void nd_tier_put(struct nd_tier *t, uint64_t idx, const void *buf, size_t len)
{
	nd_tier_put_run(t, idx, 1, buf, len);
}

/* --- the queue and its writer thread ------------------------------------- */

/* Write item IT as nd_tier_put_run would have; when a block of it was
 * invalidated since it was queued, the others one by one. */
static void q_write(struct nd_tier *t, const struct q_item *it)
{
	const char *p = it->buf;
	if (put_run_at(t, it->idx, it->n, p, it->len, it->epoch) || it->n == 1)
		return;
	for (size_t i = 0; i < it->n; i++)
		put_run_at(t, it->idx + i, 1, p + i * (size_t)t->bs,
			   i + 1 < it->n ? t->bs : it->len - i * (size_t)t->bs,
			   it->epoch);
}

/* The writer thread: the oldest item, until the queue is empty and the
 * tier closes. It runs only on a CPU nothing else wants (SCHED_IDLE): a
 * read that keeps the CPUs busy is not slowed by it; the queue then
 * fills and what does not fit is left out. */
static void *q_main(void *arg)
{
	struct nd_tier *t = arg;
	struct tier_queue *q = &t->q;
	struct sched_param idle = { 0 };

	pthread_setname_np(pthread_self(), "nd-tier");
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->head && !q->stop)
			pthread_cond_wait(&q->cond, &q->lock);
		struct q_item *it = q->head;
		if (!it)
			break;
		bool skip = q->abandon;
		/* No lock held across the write. */
		pthread_mutex_unlock(&q->lock);
		if (!skip)
			q_write(t, it);
		it->done(it->arg);
		pthread_mutex_lock(&q->lock);
		q->head = it->next;
		if (!q->head)
			q->tail = NULL;
		q->live -= it->len;
		free(it);
		pthread_cond_broadcast(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void q_start(struct nd_tier *t)
{
	t->q.started = pthread_create(&t->q.thr, NULL, q_main, t) == 0;
	if (!t->q.started)
		nd_warn("cache-dir %s: no writer thread; readers write the "
			"blocks themselves",
			t->path);
}

/* Write what is queued (at most TIER_DRAIN_S seconds: then the rest is
 * left out, fetched again when read), and end the writer thread. */
#define TIER_DRAIN_S 10

static void q_stop(struct nd_tier *t)
{
	struct tier_queue *q = &t->q;
	struct timespec until = nd_timespec(nd_mono_s() + TIER_DRAIN_S);
	struct sched_param normal = { 0 };

	if (!q->started)
		return;
	/* No reader is left to give way to: the drain at full priority. */
	pthread_setschedparam(q->thr, SCHED_OTHER, &normal);
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	while (q->head && !q->abandon)
		if (pthread_cond_timedwait(&q->cond, &q->lock, &until) ==
		    ETIMEDOUT) {
			q->abandon = true;
			nd_warn("cache-dir %s: %zu queued bytes not written "
				"within %d s of the close; left out",
				t->path, q->live, TIER_DRAIN_S);
		}
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thr, NULL);
	q->started = false;
}

/* How long a reader waits for room in a full queue (s). */
#define QUEUE_WAIT_S 0.05

bool nd_tier_queue_run(struct nd_tier *t, uint64_t idx, size_t n,
		       const void *buf, size_t len, void (*done)(void *arg),
		       void *arg)
{
	struct tier_queue *q = t ? &t->q : NULL;
	struct q_item *it;
	bool on, fits;

	if (!run_ok(t, idx, n, len) || t->max_blocks < n)
		return false;
	if (!q->started) {
		nd_tier_put_run(t, idx, n, buf, len);
		return false;
	}
	pthread_mutex_lock(&t->lock);
	on = t->on;
	uint64_t epoch = t->inv_seq; /* the bytes are no newer than this */
	pthread_mutex_unlock(&t->lock);
	if (!on || !(it = malloc(sizeof *it)))
		return false;
	*it = (struct q_item){ .idx = idx, .epoch = epoch, .n = n, .len = len,
			       .buf = buf, .done = done, .arg = arg };
	pthread_mutex_lock(&q->lock);
	/* A full queue: wait a moment for room before leaving the run out.
	 * The writer runs at idle priority, so a reader keeping the CPUs
	 * busy starves it; this wait gives it the CPU, and the run is left
	 * out only when the disk itself does not keep up. */
	struct timespec until = nd_timespec(nd_mono_s() + QUEUE_WAIT_S);
	while (len > q->cap - q->live && len <= q->cap && !q->stop &&
	       pthread_cond_timedwait(&q->cond, &q->lock, &until) != ETIMEDOUT)
		;
	fits = len <= q->cap - q->live;
	if (fits) {
		*(q->tail ? &q->tail->next : &q->head) = it;
		q->tail = it;
		q->live += len;
		pthread_cond_broadcast(&q->cond);
	} else {
		q->dropped_bytes += len;
		q->dropped_blocks += n;
	}
	pthread_mutex_unlock(&q->lock);
	if (!fits)
		free(it);
	return fits;
}

static void mark_writer(struct nd_tier *t)
{
	char *w = path_of(t, "writer");
	int fd = w ? open(w, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) : -1;
	if (fd < 0 || fsync(fd) == -1 || fsync_dir(t->path) == -1)
		tier_off(t, "marking the writer", errno);
	if (fd >= 0)
		close(fd);
	free(w);
}

void nd_tier_invalidate(struct nd_tier *t, uint64_t idx)
{
	bool mark;
	if (!t || idx >= t->nblocks)
		return;
	pthread_mutex_lock(&t->lock);
	mark = t->on && !t->writer_marked;
	t->writer_marked = true;
	pthread_mutex_unlock(&t->lock);
	if (mark)
		mark_writer(t);
	pthread_mutex_lock(&t->lock);
	/* Queued copies of the block are older than this: cancelled. */
	t->inv_seq++;
	if (t->inv_at)
		t->inv_at[idx] = t->inv_seq;
	else
		t->inv_floor = t->inv_seq;
	if (t->on)
		forget(t, idx);
	pthread_mutex_unlock(&t->lock);
}

bool nd_tier_has(struct nd_tier *t, uint64_t idx)
{
	bool r;
	if (!t || idx >= t->nblocks)
		return false;
	pthread_mutex_lock(&t->lock);
	r = t->on && (t->flags[idx] & PRESENT) && t->map[idx];
	pthread_mutex_unlock(&t->lock);
	return r;
}

void nd_tier_get_stats(struct nd_tier *t, struct nd_tier_stats *s)
{
	memset(s, 0, sizeof *s);
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	s->present = t->used * t->bs;
	s->limit = t->max_blocks * t->bs;
	s->hits = t->hits;
	s->misses = t->misses;
	s->on = t->on;
	snprintf(s->state, sizeof s->state, "%s", t->state);
	snprintf(s->validator, sizeof s->validator, "%s", t->validator);
	snprintf(s->dropped, sizeof s->dropped, "%s", t->dropped);
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_lock(&t->q.lock);
	s->queued = t->q.live;
	s->queue_limit = t->q.cap;
	s->queue_dropped_bytes = t->q.dropped_bytes;
	s->queue_dropped_blocks = t->q.dropped_blocks;
	pthread_mutex_unlock(&t->q.lock);
}

bool nd_tier_full(struct nd_tier *t)
{
	bool r;
	pthread_mutex_lock(&t->lock);
	r = !t->on || t->used >= t->max_blocks;
	pthread_mutex_unlock(&t->lock);
	return r;
}

bool nd_tier_is_on(struct nd_tier *t)
{
	bool r;
	pthread_mutex_lock(&t->lock);
	r = t->on;
	pthread_mutex_unlock(&t->lock);
	return r;
}

uint64_t nd_tier_nblocks(struct nd_tier *t)
{
	return t->nblocks;
}

static char *dup_field(const char *meta, const char *key)
{
	int len;
	const char *v = meta_field(meta, key, &len);
	return strndup(v, (size_t)len);
}

int nd_tier_peek(const char *dir, const char *identity, char **validator,
		 char **info)
{
	char *p = NULL, *meta = NULL;
	int r = -1;

	*validator = *info = NULL;
	if (asprintf(&p, "%s/%016llx/meta", dir,
		     (unsigned long long)XXH3_64bits(identity,
						     strlen(identity))) < 0)
		return -1;
	meta = read_small(p);
	if (meta && strncmp(meta, "netdiskfs-cache 1\n", 18) == 0 &&
	    strstr(meta, "\ninfo=") &&
	    (*validator = dup_field(meta, "\nvalidator=")) &&
	    (*info = dup_field(meta, "\ninfo=")) && **info)
		r = 0;
	if (r < 0) {
		free(*validator);
		free(*info);
		*validator = *info = NULL;
	}
	free(meta);
	free(p);
	return r;
}

/* --- netdiskfs cache ls|verify|drop ---------------------------------------- */

/* Call FN for every entry directory of DIR whose key or identity holds
 * NAME (all when NAME is NULL). */
static int each_entry(const char *dir, const char *name, FILE *out,
		      int (*fn)(const char *path, const char *meta, FILE *out))
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int r = 0, n = 0;

	if (!d) {
		nd_error("cache-dir %s: %m", dir);
		return -1;
	}
	while ((e = readdir(d)) && r >= 0) {
		char *path = NULL, *mp = NULL, *meta = NULL;
		if (e->d_name[0] == '.' ||
		    asprintf(&path, "%s/%s", dir, e->d_name) < 0)
			continue;
		if (asprintf(&mp, "%s/meta", path) >= 0 && (meta = read_small(mp)) &&
		    strncmp(meta, "netdiskfs-cache 1\n", 18) == 0 &&
		    (!name || strstr(e->d_name, name) || strstr(meta, name))) {
			int x = fn(path, meta, out);
			r = x < 0 ? x : r > x ? r : x;
			n++;
		}
		free(meta);
		free(mp);
		free(path);
	}
	closedir(d);
	if (name && n == 0 && r == 0) {
		nd_error("cache-dir %s: no entry matches '%s'", dir, name);
		return -1;
	}
	return r;
}

#define field meta_field

/* The entry at PATH locked for a tool, its records mapped: 0, or 1 when
 * a mount holds it. */
struct tool_view {
	int lock_fd, data_fd;
	uint64_t *map;
	uint64_t nblocks, bs, size;
};

static int view_open(const char *path, const char *meta, struct tool_view *v)
{
	char *lp = NULL, *dp = NULL, *mp = NULL;
	int len, map_fd = -1, r = -1;
	struct stat st;

	memset(v, 0, sizeof *v);
	v->lock_fd = v->data_fd = -1;
	v->size = strtoull(field(meta, "\nsize=", &len), NULL, 10);
	v->bs = strtoull(field(meta, "\nblock-size=", &len), NULL, 10);
	if (asprintf(&lp, "%s/lock", path) < 0 || asprintf(&dp, "%s/data", path) < 0 ||
	    asprintf(&mp, "%s/map", path) < 0 || !v->bs)
		goto out;
	v->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (v->lock_fd < 0 || flock(v->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		r = errno == EWOULDBLOCK ? 1 : -1;
		goto out;
	}
	v->data_fd = open(dp, O_RDWR | O_CLOEXEC);
	map_fd = open(mp, O_RDWR | O_CLOEXEC);
	if (v->data_fd < 0 || map_fd < 0 || fstat(map_fd, &st) == -1)
		goto out;
	v->nblocks = (uint64_t)st.st_size / 8;
	if (v->nblocks) {
		v->map = mmap(NULL, v->nblocks * 8, PROT_READ | PROT_WRITE,
			      MAP_SHARED, map_fd, 0);
		if (v->map == MAP_FAILED)
			v->map = NULL;
	}
	r = v->nblocks && !v->map ? -1 : 0;
out:
	if (map_fd >= 0)
		close(map_fd);
	free(lp);
	free(dp);
	free(mp);
	return r;
}

static void view_close(struct tool_view *v)
{
	if (v->map)
		munmap(v->map, v->nblocks * 8);
	if (v->data_fd >= 0)
		close(v->data_fd);
	if (v->lock_fd >= 0)
		close(v->lock_fd);
}

static int ls_one(const char *path, const char *meta, FILE *out)
{
	struct tool_view v;
	uint64_t n = 0;
	int il, vl, r = view_open(path, meta, &v);
	const char *id = field(meta, "\nidentity=", &il);
	const char *val = field(meta, "\nvalidator=", &vl);

	for (uint64_t i = 0; r == 0 && i < v.nblocks; i++)
		n += v.map[i] != 0;
	fprintf(out, "%s  %s  size=%" PRIu64 " cached=%" PRIu64 " validator=%.*s  %.*s\n",
		strrchr(path, '/') + 1, r == 1 ? "in-use" : "idle", v.size,
		n * v.bs, vl, val, il, id);
	view_close(&v);
	return r < 0 ? r : 0;
}

static int verify_one(const char *path, const char *meta, FILE *out)
{
	struct tool_view v;
	uint64_t good = 0, bad = 0;
	int r = view_open(path, meta, &v);
	char *buf = r == 0 ? malloc(v.bs) : NULL;

	if (r == 1)
		fprintf(out, "%s: in use by a mount, not checked\n", path);
	for (uint64_t i = 0; buf && i < v.nblocks; i++) {
		if (!v.map[i])
			continue;
		size_t len = (i + 1) * v.bs <= v.size ? v.bs : v.size - i * v.bs;
		if (pread(v.data_fd, buf, len, (off_t)(i * v.bs)) == (ssize_t)len &&
		    block_sum(buf, len, i) == v.map[i]) {
			good++;
		} else {
			v.map[i] = 0; /* fetched again when read */
			bad++;
		}
	}
	if (buf)
		fprintf(out, "%s: %" PRIu64 " blocks good, %" PRIu64 " bad (forgotten)\n",
			strrchr(path, '/') + 1, good, bad);
	free(buf);
	view_close(&v);
	return r < 0 ? r : bad ? 1 : 0;
}

static int drop_one(const char *path, const char *meta, FILE *out)
{
	struct tool_view v;
	static const char *const files[] = { "data", "map", "meta", "writer",
					     "lock", NULL };
	int r = view_open(path, meta, &v);
	if (r == 1) {
		nd_error("%s: in use by a mount", path);
		r = -1;
	}
	for (int i = 0; r == 0 && files[i]; i++) {
		char *p;
		if (asprintf(&p, "%s/%s", path, files[i]) >= 0) {
			unlink(p);
			free(p);
		}
	}
	if (r == 0 && rmdir(path) == 0)
		fprintf(out, "dropped %s\n", strrchr(path, '/') + 1);
	view_close(&v);
	return r;
}

int nd_tier_ls(const char *dir, const char *name, FILE *out)
{
	return each_entry(dir, name, out, ls_one);
}

int nd_tier_verify(const char *dir, const char *name, FILE *out)
{
	return each_entry(dir, name, out, verify_one);
}

int nd_tier_drop(const char *dir, const char *name, FILE *out)
{
	return each_entry(dir, name, out, drop_one);
}
