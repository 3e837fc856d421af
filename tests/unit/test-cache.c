/* test-cache: drive the block cache with an in-process counting backend:
 * a hit costs no backend call, sequential reads trigger readahead, random
 * reads do not and fetch only the 4K pages they touch, eviction keeps to
 * the budget, adjacent misses coalesce,
 * concurrent readers fetch a block once, writes are visible to the next
 * read, writeback holds writes until flush; whole-page writes fetch
 * nothing and a late fill never overwrites the pages written meanwhile. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cache.h"
#include "disk.h"
#include "readahead.h"
#include "workers.h"

#define DISK (16u << 20)
#define BS (64u << 10)

static unsigned char *mem;
static atomic_uint preads, pwrites;
static atomic_ulong bytes_read;
static atomic_uint delay_us;

static int count_open(const struct nd_opts *o, const struct nd_settings *s,
		      void **h, struct nd_info *i)
{
	*h = mem;
	i->size = DISK;
	i->block_size = 1;
	i->can_flush = true;
	i->thread_safe = true;
	return 0;
}
static void count_close(void *h) {}
static int count_pread(void *h, void *buf, size_t len, uint64_t off)
{
	if (delay_us)
		usleep(delay_us);
	preads++;
	bytes_read += len;
	memcpy(buf, mem + off, len);
	return 0;
}
static atomic_uint slow_next_write; /* microseconds the next write takes */
static int count_pwrite(void *h, const void *buf, size_t len, uint64_t off)
{
	/* Like a network: the bytes are taken when the request is sent,
	 * they land when it completes. */
	unsigned slow = atomic_exchange(&slow_next_write, 0);
	void *copy = malloc(len);
	memcpy(copy, buf, len);
	if (slow)
		usleep(slow);
	pwrites++;
	memcpy(mem + off, copy, len);
	free(copy);
	return 0;
}
static int count_flush(void *h) { return 0; }

static const char *const drivers[] = { "count", NULL };
static const struct nd_backend count_backend = {
	.name = "count",
	.drivers = drivers,
	.open = count_open,
	.close = count_close,
	.pread = count_pread,
	.pwrite = count_pwrite,
	.flush = count_flush,
};
ND_BACKEND_REGISTER(count_backend)

/* The same backend with pread_async: each read ends in a thread of its
 * own after async_us, or fails with -EIO while async_fail is set. */
static atomic_uint async_us, async_fail, async_started;
struct async_rd {
	void *buf;
	size_t len;
	uint64_t off;
	nd_done_fn done;
	void *arg;
};
static void *async_thread(void *arg)
{
	struct async_rd *a = arg;
	int r = 0;
	usleep(async_us);
	if (async_fail) {
		nd_error("async read failed on purpose");
		r = -EIO;
	} else {
		r = count_pread(NULL, a->buf, a->len, a->off);
	}
	a->done(a->arg, r);
	free(a);
	return NULL;
}
static int async_pread(void *h, void *buf, size_t len, uint64_t off,
		       nd_done_fn done, void *arg)
{
	struct async_rd *a = malloc(sizeof *a);
	pthread_t t;
	*a = (struct async_rd){ buf, len, off, done, arg };
	async_started++;
	pthread_create(&t, NULL, async_thread, a);
	pthread_detach(t);
	return 0;
}
static const char *const adrivers[] = { "acount", NULL };
static const struct nd_backend acount_backend = {
	.name = "acount",
	.drivers = adrivers,
	.open = count_open,
	.close = count_close,
	.pread = count_pread,
	.pread_async = async_pread,
	.pwrite = count_pwrite,
	.flush = count_flush,
};
ND_BACKEND_REGISTER(acount_backend)

#include "check.h"
#include "disk-open.h"

static struct nd_disk *disk_with(const char *extra)
{
	return test_disk_open("t", "count", NULL, extra);
}

/* Wait (bounded) until the readahead workers are idle. */
static void settle(void)
{
	unsigned last = ~0u;
	for (int i = 0; i < 200 && preads != last; i++) {
		last = preads;
		usleep(20000);
	}
}

static void reset(void)
{
	settle();
	preads = pwrites = 0;
	bytes_read = 0;
}

static void read_check(struct nd_cache *c, uint64_t off, size_t len)
{
	static __thread unsigned char buf[4u << 20];
	size_t got;
	int r = nd_cache_pread(c, buf, len, off, &got);
	CHECK(r == 0 && got == len && memcmp(buf, mem + off, len) == 0,
	      "read %zu at %llu: r=%d got=%zu", len, (unsigned long long)off, r, got);
}

struct reader {
	struct nd_cache *c;
	uint64_t off;
};
static void *reader(void *arg)
{
	struct reader *r = arg;
	read_check(r->c, r->off, 4096);
	return NULL;
}

static void *flusher(void *arg)
{
	CHECK(nd_cache_flush(arg) == 0, "slow flush");
	return NULL;
}

/* Two writebacks of one block (release vs fsync): the older copy, sent
 * first but slow, must not land after the newer one while the block is
 * marked clean. */
static void test_wb_order(void)
{
	static unsigned char a[BS], b[BS], back[BS];
	struct nd_disk *d = disk_with("cache=writeback");
	struct nd_cache *c = nd_cache_new(d, 4u << 20);
	pthread_t t;
	memset(a, 'A', sizeof a);
	memset(b, 'B', sizeof b);
	CHECK(nd_cache_write(c, a, BS, 5 * BS) == 0, "write A");
	slow_next_write = 300000;
	pthread_create(&t, NULL, flusher, c);
	usleep(100000); /* A is on its way */
	CHECK(nd_cache_write(c, b, BS, 5 * BS) == 0, "write B");
	CHECK(nd_cache_flush(c) == 0, "flush B");
	pthread_join(t, NULL);
	CHECK(nd_cache_flush(c) == 0, "flush again");
	CHECK(memcmp(mem + 5 * BS, b, BS) == 0,
	      "the server holds the older write (%c) after both flushes",
	      mem[5 * BS]);
	size_t got;
	nd_cache_pread(c, back, BS, 5 * BS, &got);
	CHECK(memcmp(back, b, BS) == 0, "cache reads other bytes");
	nd_cache_free(c);
	nd_disk_close(d);
}

struct slow_read {
	struct nd_cache *c;
	unsigned char *buf;
	int r;
};
static void *slow_reader(void *arg)
{
	struct slow_read *s = arg;
	size_t got;
	s->r = nd_cache_pread(s->c, s->buf, BS, 7 * BS, &got);
	return NULL;
}

/* cache=writeback: a page written into a block not cached fetches
 * nothing; a read of that block fills the other pages, and a page written
 * while that fill is on its way is not overwritten by it; the write-back
 * sends the written pages only. */
static void test_wb_pages(void)
{
	static unsigned char p[4096], q[4096], back[BS], want[BS];
	struct nd_disk *d = disk_with("cache=writeback");
	struct nd_cache *c = nd_cache_new(d, 4u << 20);
	struct slow_read sr = { c, back, -1 };
	pthread_t t;
	memset(p, 'P', sizeof p);
	memset(q, 'Q', sizeof q);
	reset();
	CHECK(nd_cache_write(c, p, 4096, 7 * BS + 3 * 4096) == 0, "write P");
	CHECK(preads == 0, "a whole-page write fetched: %u reads",
	      (unsigned)preads);
	delay_us = 300000;
	pthread_create(&t, NULL, slow_reader, &sr);
	usleep(100000); /* the fill is on its way */
	CHECK(nd_cache_write(c, q, 4096, 7 * BS + 5 * 4096) == 0, "write Q");
	pthread_join(t, NULL);
	delay_us = 0;
	memcpy(want, mem + 7 * BS, BS);
	memcpy(want + 3 * 4096, p, 4096);
	CHECK(sr.r == 0 && memcmp(back, want, 3 * 4096 + 4096) == 0,
	      "the filled read lost page 3 or the old bytes");
	size_t got;
	memcpy(want + 5 * 4096, q, 4096);
	nd_cache_pread(c, back, BS, 7 * BS, &got);
	CHECK(memcmp(back, want, BS) == 0,
	      "the late fill overwrote the page written meanwhile");
	reset();
	CHECK(nd_cache_flush(c) == 0, "flush");
	CHECK(pwrites == 2, "write-back of 2 pages: %u writes", (unsigned)pwrites);
	CHECK(memcmp(mem + 7 * BS, want, BS) == 0, "the server's block differs");
	nd_cache_free(c);
	nd_disk_close(d);
}

/* A read answered later: where DONE put its result. */
struct later {
	atomic_int state; /* 0 pending, 1 done */
	int err;
	unsigned char buf[8192];
	size_t len;
};
static void later_done(void *arg, int err, struct nd_cache_ref *ref)
{
	struct later *l = arg;
	l->err = err;
	l->len = 0;
	for (size_t i = 0; err == 0 && i < ref->n; i++) {
		memcpy(l->buf + l->len, ref->iov[i].iov_base, ref->iov[i].iov_len);
		l->len += ref->iov[i].iov_len;
	}
	atomic_store(&l->state, 1);
}
static void later_wait(struct later *l)
{
	for (int i = 0; i < 400 && !atomic_load(&l->state); i++)
		usleep(5000);
	CHECK(atomic_load(&l->state), "a read answered later never ended");
}

/* A miss of one block is fetched with no thread waiting (the backend's
 * completion answers it); a hit, or a reader of the same block, is
 * answered at once; a failure reaches DONE; freeing the cache waits for
 * such reads in flight. */
static void test_async(void)
{
	struct nd_disk *d = test_disk_open("a", "acount", NULL, "readahead=0");
	struct nd_cache *c = nd_cache_new(d, 4u << 20);
	struct nd_cache_ref ref;
	static struct later l;

	reset();
	async_us = 30000;
	int r = nd_cache_read_async(c, 3 * BS + 4096, 4096, &ref, later_done, &l);
	CHECK(r == 1, "a miss was not left to the backend: %d", r);
	/* Meanwhile a reader of the same block waits for that fetch. */
	read_check(c, 3 * BS + 4096, 4096);
	later_wait(&l);
	CHECK(l.err == 0 && l.len == 4096 &&
	      memcmp(l.buf, mem + 3 * BS + 4096, 4096) == 0,
	      "read answered later: err %d, %zu bytes", l.err, l.len);
	CHECK(preads == 1 && async_started == 1, "one block: %u fetches",
	      (unsigned)preads);
	r = nd_cache_read_async(c, 3 * BS + 4096, 4096, &ref, later_done, &l);
	CHECK(r == 0 && ref.n == 1, "a hit was not answered at once: %d", r);
	nd_cache_release(c, &ref);

	async_fail = 1;
	memset(&l, 0, sizeof l);
	r = nd_cache_read_async(c, 9 * BS, 4096, &ref, later_done, &l);
	CHECK(r == 1, "second miss: %d", r);
	later_wait(&l);
	CHECK(l.err == -EIO, "a failed read ended with %d", l.err);
	async_fail = 0;
	read_check(c, 9 * BS, 4096); /* fetched again, right */

	memset(&l, 0, sizeof l);
	async_us = 100000;
	r = nd_cache_read_async(c, 11 * BS, 4096, &ref, later_done, &l);
	CHECK(r == 1, "third miss: %d", r);
	nd_cache_free(c); /* waits for it */
	CHECK(atomic_load(&l.state) && l.err == 0, "cache freed before the read in flight ended");
	async_us = 0;
	nd_disk_close(d);
}

int main(void)
{
	mem = malloc(DISK);
	for (size_t i = 0; i < DISK; i++)
		mem[i] = (unsigned char)(i * 2654435761u >> 13);
	nd_workers_start(4);
	test_async();

	struct nd_disk *d = disk_with("readahead=0");
	struct nd_cache *c = nd_cache_new(d, 4u << 20);

	/* A hit costs no backend call. */
	reset();
	read_check(c, 100, 1000);
	CHECK(preads == 1, "first read: %u backend reads", (unsigned)preads);
	read_check(c, 2000, 3000);
	CHECK(preads == 1, "hit: %u backend reads", (unsigned)preads);

	/* Adjacent misses coalesce into one request. */
	reset();
	read_check(c, 8 * BS, 4 * BS);
	CHECK(preads == 1, "4 missing blocks: %u backend reads",
	      (unsigned)preads);

	/* Concurrent readers of one block fetch it once. */
	reset();
	delay_us = 50000;
	pthread_t t[8];
	struct reader rd[8];
	for (int i = 0; i < 8; i++) {
		rd[i] = (struct reader){ c, 5 * BS + i * 4096 };
		pthread_create(&t[i], NULL, reader, &rd[i]);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	delay_us = 0;
	CHECK(preads == 1, "8 readers of one block: %u fetches",
	      (unsigned)preads);

	/* A write is visible to the next read, and reached the backend. */
	unsigned char pat[10000];
	for (size_t i = 0; i < sizeof pat; i++)
		pat[i] = (unsigned char)(i ^ 0x5a);
	read_check(c, 5 * BS - 100, 20000); /* cache the blocks first */
	reset();
	CHECK(nd_cache_write(c, pat, sizeof pat, 5 * BS - 3000) == 0, "write");
	CHECK(pwrites == 1, "write-through: %u backend writes",
	      (unsigned)pwrites);
	CHECK(memcmp(mem + 5 * BS - 3000, pat, sizeof pat) == 0,
	      "backend lacks the write");
	unsigned char back[10000];
	size_t got;
	nd_cache_pread(c, back, sizeof back, 5 * BS - 3000, &got);
	CHECK(memcmp(back, pat, sizeof pat) == 0, "cached copy is stale");
	CHECK(preads == 0, "read after write: %u fetches", (unsigned)preads);
	nd_cache_free(c);
	nd_disk_close(d);

	/* Random reads fetch only what they touch (readahead on). */
	d = disk_with("readahead=256K");
	c = nd_cache_new(d, 4u << 20);
	reset();
	uint64_t offs[] = { 13, 3, 200, 77, 150, 9, 240, 31 };
	for (size_t i = 0; i < 8; i++)
		read_check(c, offs[i] * BS + 17, 4096);
	settle();
	/* Each 4096-byte read at +17 touches two 4K pages: only those. */
	CHECK(bytes_read == 8 * 8192, "random: %lu bytes fetched for 8 reads",
	      (unsigned long)bytes_read);
	/* A later read needing more of such a block fetches it whole. */
	reset();
	read_check(c, offs[2] * BS, BS);
	CHECK(bytes_read == BS, "upgrade of a partial block: %lu bytes",
	      (unsigned long)bytes_read);
	struct nd_cache_stats st;
	nd_cache_get_stats(c, &st);
	uint64_t misses = st.misses;
	read_check(c, offs[2] * BS + 30000, 4096);
	nd_cache_get_stats(c, &st);
	CHECK(st.misses == misses, "read inside an upgraded block missed");

	/* Sequential reads trigger readahead: later reads are hits. */
	nd_cache_free(c);
	c = nd_cache_new(d, 4u << 20);
	reset();
	for (uint64_t off = 0; off < 2 * BS; off += 4096)
		read_check(c, off, 4096);
	settle();
	CHECK(bytes_read > 4 * BS, "sequential: only %lu bytes fetched",
	      (unsigned long)bytes_read);
	unsigned before = preads;
	nd_cache_get_stats(c, &st);
	misses = st.misses;
	for (uint64_t off = 2 * BS; off < 4 * BS; off += 4096)
		read_check(c, off, 4096);
	nd_cache_get_stats(c, &st);
	CHECK(st.misses == misses, "sequential: %llu misses after readahead",
	      (unsigned long long)(st.misses - misses));
	CHECK(st.window > 0, "readahead window is 0");
	(void)before;

	/* Two interleaved sequential readers each keep their readahead. */
	nd_cache_free(c);
	c = nd_cache_new(d, 8u << 20);
	reset();
	for (uint64_t off = 0; off < 4 * BS; off += 16384) {
		read_check(c, off, 16384);
		read_check(c, (8u << 20) + off, 16384);
	}
	settle();
	nd_cache_get_stats(c, &st);
	misses = st.misses;
	for (uint64_t off = 4 * BS; off < 8 * BS; off += 16384) {
		read_check(c, off, 16384);
		read_check(c, (8u << 20) + off, 16384);
	}
	nd_cache_get_stats(c, &st);
	CHECK(st.misses == misses, "two streams: %llu misses after readahead",
	      (unsigned long long)(st.misses - misses));

	/* Eviction keeps to the budget. */
	for (uint64_t off = 0; off < DISK; off += BS)
		read_check(c, (off * 7919) % DISK / BS * BS, BS);
	settle();
	nd_cache_get_stats(c, &st);
	CHECK(st.used <= st.budget + 2 * BS, "used %llu > budget %llu",
	      (unsigned long long)st.used, (unsigned long long)st.budget);
	CHECK(st.evictions > 0, "no evictions");

	nd_cache_free(c);
	nd_disk_close(d);

	/* Writeback holds the write until flush. */
	d = disk_with("cache=writeback");
	c = nd_cache_new(d, 4u << 20);
	reset();
	for (size_t i = 0; i < sizeof pat; i++)
		pat[i] = (unsigned char)(i ^ 0xa5);
	CHECK(nd_cache_write(c, pat, sizeof pat, 100) == 0, "wb write");
	CHECK(pwrites == 0, "writeback wrote %u times before flush",
	      (unsigned)pwrites);
	nd_cache_pread(c, back, sizeof back, 100, &got);
	CHECK(memcmp(back, pat, sizeof pat) == 0, "writeback read-back");
	CHECK(nd_cache_flush(c) == 0, "flush");
	CHECK(pwrites > 0 && memcmp(mem + 100, pat, sizeof pat) == 0,
	      "flush did not write back");
	nd_cache_free(c);
	nd_disk_close(d);

	test_wb_order();
	test_wb_pages();
	nd_workers_stop();
	free(mem);
	printf("%s\n", failures ? "test-cache: FAILED" : "test-cache: ok");
	return failures != 0;
}
