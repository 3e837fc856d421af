/* cache.c: blocks of block-size bytes in a hash and an LRU list, under one
 * mutex that is never held across a backend call. A missing block is
 * created in the LOADING state by whoever needs it first; everyone else
 * waits for it, so concurrent readers fetch a block once. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cache.h"
#include "log.h"
#include "layers/stack.h"
#include "prefetch.h"
#include "readahead.h"
#include "tier.h"
#include "workers.h"
#include "util/clock.h"

enum { B_LOADING, B_VALID, B_FAILED };

/* Block memory comes in slabs: one block for a demand miss, a whole run
 * for readahead, so one backend request fills the run in place. The
 * budget counts slabs, freed with their last block. */
struct nd_slab {
	unsigned refs;
	size_t size;
	uint64_t first; /* index of its first block */
	struct nd_slab *next; /* in the free pool */
	char *mem;	      /* mmap'ed: back to the system when freed */
};

static struct nd_slab *slab_alloc(size_t size)
{
	struct nd_slab *sl = malloc(sizeof *sl);
	if (!sl)
		return NULL;
	sl->mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sl->mem == MAP_FAILED) {
		free(sl);
		return NULL;
	}
#ifdef MADV_HUGEPAGE
	/* Whole huge pages: one page fault per 2 MiB instead of 512, and
	 * fewer TLB misses in the copies. Only a hint. */
	if (size % (2u << 20) == 0)
		madvise(sl->mem, size, MADV_HUGEPAGE);
#endif
	sl->refs = 0;
	sl->size = size;
	return sl;
}

static void slab_free(struct nd_slab *sl)
{
	munmap(sl->mem, sl->size);
	free(sl);
}

struct nd_block {
	uint64_t idx;
	char *data;
	struct nd_slab *slab;
	uint32_t len; /* bytes of the disk in this block (short at the end) */
	/* The bytes [vs, ve) hold data: all of it, or for a block fetched by
	 * a random read only the 4K-aligned part that read touched. */
	uint32_t vs, ve;
	uint8_t state;
	bool dirty, hashed;
	const void *wb_owner; /* the write-back writing it now, or NULL */
	/* cache=writeback, in pages of 1 << pshift bytes: a sparse block was
	 * written in whole pages before it was fetched, and only its pvalid
	 * pages hold data; pdirty: pages written since the last write-back;
	 * wb_mask: the pdirty a write-back took; wb_redirty: pages written
	 * again while it wrote them (they stay dirty). */
	bool sparse;
	uint8_t pshift;
	uint64_t pvalid, pdirty, wb_mask, wb_redirty;
	/* Pages the readahead fetched from the server that no reader has
	 * read yet: what is left at eviction was fetched for nothing. */
	uint64_t ra_unread;
	int pins;
	int err;
	struct nd_block *hnext, *prev, *next;
};

struct nd_cache {
	struct nd_disk *disk;
	uint64_t size, budget, used;
	uint64_t dirty_bytes;  /* in whole pages of the dirty blocks */
	uint64_t dirty_blocks; /* blocks with a dirty page */
	uint32_t bs, shift;
	uint32_t pshift; /* pages inside a block: at most 64 of them */
	bool writeback;
	bool throttling; /* a worker writes a too dirty cache back */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct nd_block **hash;
	size_t nbuckets;
	struct nd_block *lru_head, *lru_tail; /* head = most recent */
	struct nd_ra ra;
	/* Freed slabs kept for reuse (already faulted in); their bytes count
	 * in `used`, so the budget bounds them too. */
	struct nd_slab *pool[2]; /* one block; one readahead run */
	uint64_t pooled;
	unsigned jobs; /* readahead jobs and reads answered later in flight */
	uint64_t hits, misses, evictions;
	uint32_t ra_chunk; /* bytes per readahead request */
	double wait_max;   /* longest wait for a block another thread loads */
	struct nd_tier *tier; /* cache-dir: the persistent second tier */
	struct nd_prefetch *prefetch; /* prefetch=: fills the tier */
	enum nd_prefetch_mode prefetch_mode;
	char prefetch_off[96]; /* why prefetch= was not started */
	struct nd_reader_activity readers; /* for the prefetch */
	uint64_t remote_blocks; /* fetched from the server (lock held) */
	struct nd_cache_amp amp; /* read amplification (lock held) */
};

#define MAX_RETRIES 8

/* --- hash and LRU (lock held) ----------------------------------------- */

static size_t bucket(const struct nd_cache *c, uint64_t idx)
{
	return (idx * 0x9E3779B97F4A7C15ull >> 20) % c->nbuckets;
}

static struct nd_block *lookup(struct nd_cache *c, uint64_t idx)
{
	for (struct nd_block *b = c->hash[bucket(c, idx)]; b; b = b->hnext)
		if (b->idx == idx)
			return b;
	return NULL;
}

static void lru_unlink(struct nd_cache *c, struct nd_block *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		c->lru_head = b->next;
	if (b->next)
		b->next->prev = b->prev;
	else
		c->lru_tail = b->prev;
	b->prev = b->next = NULL;
}

static void lru_push(struct nd_cache *c, struct nd_block *b)
{
	b->prev = NULL;
	b->next = c->lru_head;
	if (c->lru_head)
		c->lru_head->prev = b;
	c->lru_head = b;
	if (!c->lru_tail)
		c->lru_tail = b;
}

static void touch(struct nd_cache *c, struct nd_block *b)
{
	if (c->lru_head != b) {
		lru_unlink(c, b);
		lru_push(c, b);
	}
}

/* The pool list for slabs of SIZE, or NULL for odd sizes. */
static struct nd_slab **pool_for(struct nd_cache *c, size_t size)
{
	if (size == c->bs)
		return &c->pool[0];
	if (size == c->ra_chunk)
		return &c->pool[1];
	return NULL;
}

static void slab_release(struct nd_cache *c, struct nd_slab *sl)
{
	struct nd_slab **pool = pool_for(c, sl->size);
	if (pool && c->pooled + sl->size <= c->budget / 4) {
		sl->next = *pool;
		*pool = sl;
		c->pooled += sl->size;
		return;
	}
	c->used -= sl->size;
	slab_free(sl);
}

/* Give pooled slabs back to the system until NEED bytes fit LIMIT. */
static void pool_trim(struct nd_cache *c, uint64_t need, uint64_t limit)
{
	for (int i = 0; i < 2; i++)
		while (c->pool[i] && c->used + need > limit) {
			struct nd_slab *sl = c->pool[i];
			c->pool[i] = sl->next;
			c->pooled -= sl->size;
			c->used -= sl->size;
			slab_free(sl);
		}
}

static void block_free(struct nd_cache *c, struct nd_block *b)
{
	if (--b->slab->refs == 0)
		slab_release(c, b->slab);
	free(b);
}

/* The bytes of B in the pages of M (the last page may be short). */
static uint64_t mask_bytes(const struct nd_block *b, uint64_t m)
{
	uint64_t ps = 1ull << b->pshift, last = (b->len - 1) >> b->pshift;
	uint64_t n = (uint64_t)__builtin_popcountll(m) << b->pshift;
	if (last < 64 && (m >> last & 1) && b->len % ps)
		n -= ps - b->len % ps;
	return n;
}

/* Take B out of the hash and the LRU; freed now or by its last unpin. */
static void unhash(struct nd_cache *c, struct nd_block *b)
{
	struct nd_block **pp = &c->hash[bucket(c, b->idx)];
	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
	b->hashed = false;
	lru_unlink(c, b);
	if (b->ra_unread) {
		c->amp.ra_wasted += mask_bytes(b, b->ra_unread);
		b->ra_unread = 0;
	}
	if (b->pins == 0)
		block_free(c, b);
}

static void unpin(struct nd_cache *c, struct nd_block *b)
{
	if (--b->pins == 0 && !b->hashed)
		block_free(c, b);
}

/* A readahead run cut short by a block already cached: give the unused
 * tail of its slab back at once. */
static void slab_shrink(struct nd_cache *c, struct nd_slab *sl,
			unsigned nblocks)
{
	size_t size = (size_t)nblocks << c->shift;
	if (size >= sl->size)
		return;
	munmap(sl->mem + size, sl->size - size);
	c->used -= sl->size - size;
	sl->size = size;
}

static bool evictable(const struct nd_block *b)
{
	return b->pins == 0 && b->state == B_VALID && !b->dirty;
}

/* Evict B and the other blocks of its slab (fetched together, they age
 * together; evicting one alone would free no memory). Returns the LRU
 * block before B that is still cached, to go on from. */
static struct nd_block *evict_slab(struct nd_cache *c, struct nd_block *b)
{
	struct nd_slab *sl = b->slab;
	uint64_t n = sl->size >> c->shift;
	struct nd_block *prev = b->prev;
	for (uint64_t k = 0; k < n; k++) {
		struct nd_block *x = lookup(c, sl->first + k);
		if (!x || x->slab != sl || !evictable(x))
			continue;
		while (prev && prev->slab == sl)
			prev = prev->prev; /* about to go too */
		unhash(c, x);
		c->evictions++;
	}
	return prev;
}

/* Memory for NBLOCKS blocks within LIMIT bytes of cache: a pooled slab
 * of that size (no new memory, no page faults), else a new one once the
 * pool of the other size and then the least recently used clean, unpinned
 * blocks have made room. When nothing more can go: NULL, or with MUST a
 * brief overshoot of the budget. */
static struct nd_slab *new_slab(struct nd_cache *c, unsigned nblocks,
				uint64_t limit, bool must)
{
	size_t size = (size_t)nblocks << c->shift;
	struct nd_slab **pool = pool_for(c, size), *sl;
	struct nd_block *b = c->lru_tail;

	for (;;) {
		if (pool && *pool) {
			sl = *pool;
			*pool = sl->next;
			c->pooled -= size;
			sl->refs = 0;
			return sl; /* already counted in used */
		}
		if (c->used + size <= limit)
			break;
		if (c->pooled) {
			pool_trim(c, size, limit);
			continue;
		}
		while (b && !evictable(b))
			b = b->prev;
		if (!b) {
			if (must)
				break;
			return NULL;
		}
		b = evict_slab(c, b);
	}
	sl = slab_alloc(size);
	if (!sl)
		return NULL;
	c->used += size;
	return sl;
}

/* Bytes of the disk in block IDX (short at the end). */
static uint32_t block_len(const struct nd_cache *c, uint64_t idx)
{
	uint64_t start = idx << c->shift;
	return c->size - start < c->bs ? c->size - start : c->bs;
}

/* The part of block IDX that [off, off+len) covers, as [*s, *e) relative
 * to the block's start. */
static void block_span(const struct nd_cache *c, uint64_t idx, uint64_t off,
		       uint64_t len, uint64_t *s, uint64_t *e)
{
	uint64_t start = idx << c->shift, blen = block_len(c, idx);
	*s = off > start ? off - start : 0;
	*e = off + len - start < blen ? off + len - start : blen;
}

/* A LOADING block for IDX using block K of slab SL (NULL: a new slab). */
static struct nd_block *new_block(struct nd_cache *c, uint64_t idx,
				  struct nd_slab *sl, unsigned k)
{
	struct nd_block *b = calloc(1, sizeof *b);
	if (!b)
		return NULL;
	if (!sl && !(sl = new_slab(c, 1, c->budget, true))) {
		free(b);
		return NULL;
	}
	if (k == 0)
		sl->first = idx;
	sl->refs++;
	b->slab = sl;
	b->data = sl->mem + ((size_t)k << c->shift);
	b->idx = idx;
	b->state = B_LOADING;
	b->len = block_len(c, idx);
	b->vs = 0;
	b->ve = b->len;
	b->pshift = (uint8_t)c->pshift;
	size_t h = bucket(c, idx);
	b->hnext = c->hash[h];
	c->hash[h] = b;
	b->hashed = true;
	lru_push(c, b);
	return b;
}

/* --- pages inside a block (cache=writeback) ------------------------- */

/* The pages that the block-relative bytes [s, e) touch. */
static uint64_t page_mask(unsigned pshift, uint64_t s, uint64_t e)
{
	uint64_t a = s >> pshift, z = (e + (1ull << pshift) - 1) >> pshift;
	if (z <= a)
		return 0;
	return (z - a >= 64 ? ~0ull : (1ull << (z - a)) - 1) << a;
}

static uint64_t pages_all(const struct nd_block *b)
{
	return page_mask(b->pshift, 0, b->len);
}

static bool pages_valid(const struct nd_block *b, uint64_t s, uint64_t e)
{
	return (page_mask(b->pshift, s, e) & ~b->pvalid) == 0;
}

/* A reader got [s, e) of B: the readahead's pages there were of use.
 * Lock held. */
static void amp_read(struct nd_cache *c, struct nd_block *b, uint64_t s,
		     uint64_t e)
{
	uint64_t m = b->ra_unread & page_mask(b->pshift, s, e);
	if (m) {
		c->amp.ra_used += mask_bytes(b, m);
		b->ra_unread &= ~m;
	}
}

/* Count what block B just loaded brought from the server (REMOTE); a
 * readahead block from the tier, or failed, fetched nothing from it.
 * Lock held. */
static void amp_fetched(struct nd_cache *c, struct nd_block *b, bool remote)
{
	if (!remote) {
		b->ra_unread = 0;
		return;
	}
	c->amp.fetched += b->ve - b->vs;
	c->amp.ra_fetched += mask_bytes(b, b->ra_unread);
}

/* Does [s, e) of a block of BLEN bytes cover whole pages only (the short
 * last page of the disk counts as whole)? */
static bool whole_pages(const struct nd_cache *c, uint32_t blen, uint64_t s,
			uint64_t e)
{
	uint64_t pmask = (1ull << c->pshift) - 1;
	return (s & pmask) == 0 && ((e & pmask) == 0 || e == blen);
}

/* Lay the server's bytes TMP (the block's first LEN) under the pages of
 * sparse block B that hold no data: the written ones stay as they are,
 * even when written while TMP was being fetched. Lock held. */
static void merge_pages(struct nd_block *b, const char *tmp, uint32_t len)
{
	uint64_t ps = 1ull << b->pshift;
	for (unsigned k = 0; b->sparse && (uint64_t)k * ps < len; k++) {
		uint64_t start = (uint64_t)k * ps;
		if (b->pvalid & (1ull << k))
			continue;
		memcpy(b->data + start, tmp + start,
		       start + ps <= len ? ps : len - start);
		b->pvalid |= 1ull << k;
	}
	if ((b->pvalid & pages_all(b)) == pages_all(b))
		b->sparse = false;
}

/* Fetch sparse block B (pinned) whole and merge it. Lock held, dropped
 * during the fetch. 0 or -errno. */
static int fill_pages(struct nd_cache *c, struct nd_block *b)
{
	uint32_t len = b->len;
	char *tmp = malloc(len);
	int r;
	if (!tmp)
		return -ENOMEM;
	pthread_mutex_unlock(&c->lock);
	r = nd_disk_pread(c->disk, tmp, len, b->idx << c->shift);
	pthread_mutex_lock(&c->lock);
	if (r == 0) {
		c->remote_blocks++;
		c->amp.fetched += len;
		merge_pages(b, tmp, len < b->len ? len : b->len);
	}
	free(tmp);
	return r;
}

/* A reader wants [s, e) of block B: a sparse block gets the pages it
 * lacks first. Lock held. 0 or -errno. */
static int fill_for_read(struct nd_cache *c, struct nd_block *b, uint64_t s,
			 uint64_t e)
{
	int r = 0;
	if (!b->sparse || b->state != B_VALID || pages_valid(b, s, e))
		return 0;
	b->pins++;
	r = fill_pages(c, b);
	unpin(c, b);
	return r;
}

/* A new block for a write of whole pages: nothing fetched; its pages
 * become valid as they are written. */
static void make_sparse(struct nd_cache *c, struct nd_block *b)
{
	b->state = B_VALID;
	b->sparse = true;
	b->pvalid = 0;
}

/* Before a write of [s, e) into B (pinned, VALID, whole or sparse): the
 * pages it covers only in part must hold data. Lock held. */
static int wb_edges(struct nd_cache *c, struct nd_block *b, uint64_t s,
		    uint64_t e)
{
	uint64_t ps = 1ull << c->pshift;
	uint64_t edge = 0;
	if (!b->sparse)
		return 0;
	if (s & (ps - 1))
		edge |= page_mask(c->pshift, s, s + 1);
	if ((e & (ps - 1)) && e != b->len)
		edge |= page_mask(c->pshift, e - 1, e);
	return (edge & ~b->pvalid) ? fill_pages(c, b) : 0;
}

/* After the bytes [s, e) of B were written: dirty, those pages too. */
static void wb_mark(struct nd_cache *c, struct nd_block *b, uint64_t s,
		    uint64_t e)
{
	uint64_t m = page_mask(c->pshift, s, e);
	if (b->sparse) {
		b->pvalid |= m;
		if ((b->pvalid & pages_all(b)) == pages_all(b))
			b->sparse = false;
	}
	c->dirty_bytes += (uint64_t)__builtin_popcountll(m & ~b->pdirty)
			  << c->pshift;
	b->pdirty |= m;
	if (!b->dirty)
		c->dirty_blocks++;
	b->dirty = true;
	if (b->wb_owner)
		b->wb_redirty |= m;
}

/* The next run of pages set in M from page *K on, as the block-relative
 * bytes [*s, *e) of B (clipped at its end); false when none is left. */
static bool next_run(const struct nd_block *b, uint64_t m, unsigned *k,
		     uint64_t *s, uint64_t *e)
{
	uint64_t ps = 1ull << b->pshift;
	unsigned j;
	while (*k < 64 && !(m & (1ull << *k)))
		(*k)++;
	if (*k >= 64 || *k * ps >= b->len)
		return false;
	for (j = *k; j < 64 && (m & (1ull << j)); j++)
		;
	*s = *k * ps;
	*e = j * ps < b->len ? j * ps : b->len;
	*k = j;
	return true;
}

/* Does B hold the block-relative bytes [s, e)? */
static bool covers(const struct nd_block *b, uint64_t s, uint64_t e)
{
	if (b->sparse)
		return b->state == B_VALID && pages_valid(b, s, e);
	return b->state == B_VALID && s >= b->vs && e <= b->ve;
}

/* --- waiting ---------------------------------------------------------- */

/* Wait (lock held) until B is no longer LOADING, at most wait_max: the
 * load itself is bounded by the disk's deadlines, this bounds the waiter
 * even if it were not. 0, or -EIO past the bound. */
static int wait_loaded(struct nd_cache *c, struct nd_block *b)
{
	struct timespec until = nd_wall_after(c->wait_max);
	while (b->state == B_LOADING)
		if (pthread_cond_timedwait(&c->cond, &c->lock, &until) ==
		    ETIMEDOUT) {
			errno = EIO;
			nd_error("waited %.0f s for a block being fetched",
				 c->wait_max);
			return -EIO;
		}
	return 0;
}

/* --- loading ---------------------------------------------------------- */

/* --- the persistent tier (cache-dir) --------------------------------- */

/* Are the N blocks one piece of memory (a readahead slab)? */
static bool one_piece(const struct nd_cache *c, struct nd_block **blk,
		      size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (blk[i]->data != blk[0]->data + ((size_t)i << c->shift))
			return false;
	return true;
}

/* The bytes of N adjacent blocks (only the last may be short). */
static size_t run_len(const struct nd_cache *c, struct nd_block **blk,
		      size_t n)
{
	return ((n - 1) << c->shift) + blk[n - 1]->len;
}

/* All N blocks from the tier: true when every one was there and right
 * (a block with only part of it wanted is read whole from the tier).
 * A run in one piece of memory is one read. */
static bool tier_fill(struct nd_cache *c, struct nd_block **blk, size_t n)
{
	if (!c->tier)
		return false;
	if (one_piece(c, blk, n)) {
		if (!nd_tier_get_run(c->tier, blk[0]->idx, n, blk[0]->data,
				     run_len(c, blk, n)))
			return false;
	} else {
		for (size_t i = 0; i < n; i++)
			if (!nd_tier_get(c->tier, blk[i]->idx, blk[i]->data,
					 blk[i]->len))
				return false;
	}
	for (size_t i = 0; i < n; i++) {
		blk[i]->vs = 0;
		blk[i]->ve = blk[i]->len;
	}
	return true;
}

/* One block from the tier, whole (lock held: a local read). */
static bool tier_one(struct nd_cache *c, struct nd_block *b)
{
	if (!c->tier || !nd_tier_get(c->tier, b->idx, b->data, b->len))
		return false;
	b->vs = 0;
	b->ve = b->len;
	return true;
}

/* Blocks queued for the tier: pinned (never evicted, their memory
 * stays) until its writer thread is done with them. */
struct tier_ref {
	struct nd_cache *c;
	size_t n;
	struct nd_block *blk[];
};

static void tier_unpin(void *arg)
{
	struct tier_ref *k = arg;
	pthread_mutex_lock(&k->c->lock);
	for (size_t i = 0; i < k->n; i++)
		unpin(k->c, k->blk[i]);
	pthread_mutex_unlock(&k->c->lock);
	free(k);
}

/* Queue the N blocks (one piece of memory) for the tier, without a copy. */
static void tier_queue(struct nd_cache *c, struct nd_block **blk, size_t n)
{
	struct tier_ref *k = malloc(sizeof *k + n * sizeof *blk);
	if (!k)
		return;
	k->c = c;
	k->n = n;
	memcpy(k->blk, blk, n * sizeof *blk);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < n; i++)
		blk[i]->pins++;
	pthread_mutex_unlock(&c->lock);
	if (!nd_tier_queue_run(c->tier, blk[0]->idx, n, blk[0]->data,
			       run_len(c, blk, n), tier_unpin, k))
		tier_unpin(k);
}

/* Keep the whole blocks just fetched from the server: queued for the
 * tier's writer thread (a run in one piece of memory as one item), or
 * left out when its queue is full. */
static void tier_keep(struct nd_cache *c, struct nd_block **blk, size_t n)
{
	bool whole = true;
	for (size_t i = 0; i < n; i++)
		whole &= blk[i]->vs == 0 && blk[i]->ve == blk[i]->len;
	if (c->tier && whole && one_piece(c, blk, n)) {
		tier_queue(c, blk, n);
		return;
	}
	for (size_t i = 0; c->tier && i < n; i++)
		if (blk[i]->vs == 0 && blk[i]->ve == blk[i]->len)
			tier_queue(c, &blk[i], 1);
}

/* This mount writes [off, off+len): the tier forgets those blocks; a
 * later read fetches them again. */
static void tier_forget(struct nd_cache *c, uint64_t off, uint64_t len)
{
	if (!c->tier || !len)
		return;
	for (uint64_t i = off >> c->shift; i <= (off + len - 1) >> c->shift; i++)
		nd_tier_invalidate(c->tier, i);
}

/* Fetch N adjacent LOADING blocks with one backend request (straight
 * into the block when N is 1), then publish them. Called unlocked. */
/* One backend request for the N blocks (straight into the block when N
 * is 1 or the slab is contiguous). 0 or -errno. */
static int read_run(struct nd_cache *c, struct nd_block **blk, size_t n)
{
	uint64_t off = blk[0]->idx << c->shift;
	size_t total = run_len(c, blk, n);
	bool contiguous = one_piece(c, blk, n);
	int r;

	if (n == 1 && (blk[0]->vs || blk[0]->ve < blk[0]->len))
		return nd_disk_pread(c->disk, blk[0]->data + blk[0]->vs,
				     blk[0]->ve - blk[0]->vs, off + blk[0]->vs);
	if (contiguous)
		return nd_disk_pread(c->disk, blk[0]->data, total, off);
	char *tmp = malloc(total);
	r = tmp ? nd_disk_pread(c->disk, tmp, total, off) : -ENOMEM;
	if (r == 0)
		for (size_t i = 0, pos = 0; i < n; pos += blk[i]->len, i++)
			memcpy(blk[i]->data, tmp + pos, blk[i]->len);
	free(tmp);
	return r;
}

/* The N blocks fetched with result R (FROM_TIER: from the tier) become
 * VALID, or FAILED for their readers; their waiters wake. Lock held. */
static void publish(struct nd_cache *c, struct nd_block **blk, size_t n,
		    int r, bool from_tier)
{
	if (r == 0 && !from_tier)
		c->remote_blocks += n;
	for (size_t i = 0; i < n; i++) {
		struct nd_block *b = blk[i];
		amp_fetched(c, b, r == 0 && !from_tier);
		/* A changed object (-ESTALE) is never served from the tier:
		 * its blocks are of the old one. */
		if (r < 0 && (r == -ESTALE || !tier_one(c, b))) {
			/* A failure is reported to its readers. */
			b->state = B_FAILED;
			b->err = r;
			if (b->hashed)
				unhash(c, b);
		} else {
			b->state = B_VALID;
		}
	}
	pthread_cond_broadcast(&c->cond);
}

/* Fetch N adjacent LOADING blocks with one backend request, then
 * publish them. With cache-dir, blocks come from the tier when all of
 * them are there; when the server fails, each block the tier holds is
 * still served (an outage). Called unlocked. */
static void fetch_run(struct nd_cache *c, struct nd_block **blk, size_t n)
{
	bool from_tier = tier_fill(c, blk, n);
	int r = from_tier ? 0 : read_run(c, blk, n);
	/* On a read-only disk nothing changes a valid block's bytes, so
	 * its readers need not wait for the tier's queue: the blocks are
	 * published first (they stay pinned by the caller until this
	 * returns). A writable disk's blocks are queued before anyone can
	 * write them (the write's invalidation then cancels the put). */
	bool keep = r == 0 && !from_tier && c->tier;
	bool late = keep && nd_disk_read_only(c->disk);

	if (keep && !late)
		tier_keep(c, blk, n);
	pthread_mutex_lock(&c->lock);
	publish(c, blk, n, r, from_tier);
	pthread_mutex_unlock(&c->lock);
	if (late)
		tier_keep(c, blk, n);
}

/* Load the blocks in BLK that are marked MINE, coalescing adjacent ones
 * up to the disk's largest sensible request. */
static void load_runs(struct nd_cache *c, struct nd_block **blk, bool *mine,
		      size_t n, uint32_t max_run)
{
	size_t i = 0;
	while (i < n) {
		if (!mine[i]) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && mine[j] && blk[j]->idx == blk[j - 1]->idx + 1 &&
		       j - i < max_run)
			j++;
		fetch_run(c, blk + i, j - i);
		i = j;
	}
}

struct ra_job {
	struct nd_cache *c;
	size_t n;
	struct nd_block *blk[];
};

static void ra_work(void *arg)
{
	struct ra_job *j = arg;
	struct nd_cache *c = j->c;

	fetch_run(c, j->blk, j->n);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < j->n; i++)
		unpin(c, j->blk[i]);
	c->jobs--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	free(j);
}

/* Create LOADING blocks for the absent ones in [start, end) and hand
 * them to the workers in runs of ra_chunk bytes. Lock held; the jobs are
 * queued into *jobs and submitted by the caller after unlocking. */
static size_t ra_schedule(struct nd_cache *c, uint64_t start, uint64_t end,
			  struct ra_job **jobs, size_t maxjobs)
{
	uint64_t first = start >> c->shift;
	uint64_t last = (end - 1) >> c->shift;
	size_t per = c->ra_chunk >> c->shift, njobs = 0;
	struct ra_job *j = NULL;

	if (per < 1)
		per = 1;
	uint64_t idx;
	struct nd_slab *sl = NULL;
	/* Readahead keeps an eighth of the budget for what readers ask. */
	uint64_t limit = c->budget - c->budget / 8;
	for (idx = first; idx <= last && njobs < maxjobs; idx++) {
		struct nd_block *b = lookup(c, idx);
		if (b) {
			if (j) {
				slab_shrink(c, sl, j->n);
				jobs[njobs++] = j;
				j = NULL;
			}
			continue;
		}
		if (!j) {
			size_t n = per;
			if (n > last - idx + 1)
				n = last - idx + 1;
			j = malloc(sizeof *j + per * sizeof(struct nd_block *));
			sl = j ? new_slab(c, n, limit, false) : NULL;
			if (!sl) {
				free(j);
				j = NULL;
				break;
			}
			j->c = c;
			j->n = 0;
		}
		b = new_block(c, idx, sl, j->n);
		if (!b)
			break;
		b->pins = 1;
		b->ra_unread = pages_all(b);
		j->blk[j->n++] = b;
		if (j->n << c->shift == sl->size) {
			jobs[njobs++] = j;
			j = NULL;
		}
	}
	if (j) {
		if (j->n && njobs < maxjobs) {
			slab_shrink(c, sl, j->n);
			jobs[njobs++] = j;
		}
		else {
			/* Empty (a block allocation failed): its slab too. */
			if (sl && sl->refs == 0) {
				c->used -= sl->size;
				slab_free(sl);
			}
			free(j);
		}
	}
	c->jobs += njobs;
	nd_ra_scheduled(&c->ra, idx << c->shift);
	return njobs;
}

#define MAX_RA_JOBS 64

/* --- public ----------------------------------------------------------- */

/* Bytes per readahead request: the backend's preference, a whole number
 * of blocks, at least 256 KiB and at most a sixteenth of the budget. */
static uint32_t ra_chunk_for(const struct nd_cache *c, uint32_t want)
{
	uint64_t n = want ? want : 256u << 10;
	if (n < (256u << 10))
		n = 256u << 10;
	if (n > c->budget / 16)
		n = c->budget / 16;
	n &= ~((uint64_t)c->bs - 1);
	return n > c->bs ? (uint32_t)n : c->bs;
}

/* prefetch=idle|all: a background fill of the tier, on read-only
 * entries (see prefetch.c). */
static void prefetch_open(struct nd_cache *c, struct nd_disk *d)
{
	struct nd_prefetch_cfg cfg = { .disk = d, .tier = c->tier,
				       .block_size = c->bs, .size = c->size,
				       .chunk = c->ra_chunk,
				       .readers = &c->readers };
	if (nd_prefetch_mode_of(nd_disk_opts(d), &cfg.mode) == -1) {
		nd_warn("entry '%s': %s", nd_disk_name(d), nd_get_error());
		return;
	}
	c->prefetch_mode = cfg.mode;
	if (cfg.mode == ND_PREFETCH_OFF)
		snprintf(c->prefetch_off, sizeof c->prefetch_off, "off");
	else if (!c->tier)
		snprintf(c->prefetch_off, sizeof c->prefetch_off,
			 "off: no disk tier");
	else if (!nd_disk_read_only(d))
		snprintf(c->prefetch_off, sizeof c->prefetch_off,
			 "off: the entry is writable");
	else
		c->prefetch = nd_prefetch_start(&cfg);
	if (cfg.mode != ND_PREFETCH_OFF && !c->prefetch)
		nd_warn("entry '%s': prefetch=%s: %s", nd_disk_name(d),
			nd_opt_get(nd_disk_opts(d), "prefetch"), c->prefetch_off);
}

/* cache-dir=PATH (cache-dir-size=, cache-dir-mode=read|off): the second
 * tier. Its trouble never fails the entry: it works without it. */
static void tier_open(struct nd_cache *c, struct nd_disk *d)
{
	const char *dir = nd_cache_dir_of(nd_disk_opts(d));
	/* Queued blocks stay in memory: a quarter of the budget at most. */
	struct nd_tier_cfg cfg = { .dir = dir, .block_size = c->bs,
				   .size = c->size,
				   .queue = c->budget / 4 < ND_TIER_QUEUE
						    ? c->budget / 4
						    : ND_TIER_QUEUE,
				   .validator = nd_disk_info(d)->validator,
				   .writable = !nd_disk_read_only(d) };
	if (!dir ||
	    nd_opt_size(nd_disk_opts(d), "cache-dir-size", 0, &cfg.limit) == -1) {
		prefetch_open(c, d); /* says why it cannot run */
		return;
	}
	char *id = nd_stack_identity_opts(nd_disk_opts(d));
	char *info = nd_cache_dir_info_text(nd_disk_info(d));
	cfg.identity = id;
	cfg.info = info;
	if (id && info && nd_tier_open(&cfg, &c->tier) == -1)
		nd_warn("entry '%s': %s", nd_disk_name(d), nd_get_error());
	free(id);
	free(info);
	prefetch_open(c, d);
}

struct nd_cache *nd_cache_new(struct nd_disk *d, uint64_t budget)
{
	struct nd_cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->disk = d;
	c->size = nd_disk_size(d);
	c->bs = nd_disk_cfg(d)->block_size;
	while ((1u << c->shift) < c->bs)
		c->shift++;
	c->pshift = c->shift > 18 ? c->shift - 6 : 12;
	if (budget < 8ull * c->bs)
		budget = 8ull * c->bs;
	c->budget = budget;
	c->writeback = nd_disk_cfg(d)->cache == ND_CACHE_WRITEBACK &&
		       !nd_disk_read_only(d);
	c->nbuckets = budget / c->bs * 2 + 1;
	c->hash = calloc(c->nbuckets, sizeof *c->hash);
	if (!c->hash) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	/* The window may grow to a quarter of the budget, 64 MiB at most. */
	uint64_t max = budget / 4;
	if (max > (64u << 20))
		max = 64u << 20;
	nd_ra_init(&c->ra, nd_disk_cfg(d)->readahead, max);
	c->ra_chunk = ra_chunk_for(c, nd_disk_opt_request(d));
	/* A load is one request: at most reconnect-delay + timeout. */
	c->wait_max =
	    nd_disk_cfg(d)->reconnect_delay + nd_disk_cfg(d)->timeout + 5;
	tier_open(c, d);
	return c;
}

void nd_cache_free(struct nd_cache *c)
{
	if (!c)
		return;
	nd_prefetch_stop(c->prefetch);
	pthread_mutex_lock(&c->lock);
	while (c->jobs)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	nd_tier_close(c->tier); /* writes its queue: the blocks it pins */
	pthread_mutex_lock(&c->lock);
	while (c->lru_head)
		unhash(c, c->lru_head);
	pool_trim(c, 0, 0);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->hash);
	free(c);
}

void nd_cache_drop_tier(struct nd_cache *c)
{
	struct nd_tier *t;
	if (!c)
		return;
	nd_prefetch_stop(c->prefetch);
	c->prefetch = NULL;
	pthread_mutex_lock(&c->lock);
	while (c->jobs) /* readahead uses the tier too */
		pthread_cond_wait(&c->cond, &c->lock);
	t = c->tier;
	c->tier = NULL;
	pthread_mutex_unlock(&c->lock);
	nd_tier_close(t);
}

void nd_cache_release(struct nd_cache *c, struct nd_cache_ref *ref)
{
	if (ref->n) {
		pthread_mutex_lock(&c->lock);
		for (size_t i = 0; i < ref->n; i++)
			unpin(c, ref->blk[i]);
		pthread_mutex_unlock(&c->lock);
	}
	free(ref->blk);
	free(ref->iov);
	memset(ref, 0, sizeof *ref);
}

/* A reader starts (ON) or stops waiting for the server: the prefetch
 * gives way meanwhile. */
static void reader_waits(struct nd_cache *c, bool on)
{
	if (on)
		atomic_fetch_add(&c->readers.waiting, 1);
	else
		atomic_fetch_sub(&c->readers.waiting, 1);
	atomic_store(&c->readers.last_wait_ms, nd_mono_ms());
}

static void submit_jobs(struct ra_job **jobs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		nd_workers_submit(jobs[i]->c, ra_work, jobs[i]);
}

/* Wait for REF's blocks (FIRST.. of the read OFF+LEN) to load: 0, or the
 * first error; *RETRY when one must be fetched again (-EAGAIN, or another
 * reader's partial block). */
static int check_loaded(struct nd_cache *c, struct nd_cache_ref *ref,
			uint64_t first, uint64_t off, size_t len, bool *retry)
{
	int err = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < ref->n; i++) {
		struct nd_block *b = ref->blk[i];
		uint64_t s, e;
		block_span(c, first + i, off, len, &s, &e);
		if (b->state == B_LOADING && wait_loaded(c, b) < 0) {
			if (!err)
				err = -EIO;
			continue;
		}
		if (b->state == B_FAILED) {
			if (b->err == -EAGAIN)
				*retry = true;
			else if (!err)
				err = b->err;
		} else if (!covers(b, s, e)) {
			*retry = true; /* another reader's partial block */
		} else {
			amp_read(c, b, s, e);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return err;
}

static void unpin_all(struct nd_cache *c, struct nd_cache_ref *ref)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < ref->n; i++)
		unpin(c, ref->blk[i]);
	ref->n = 0;
	pthread_mutex_unlock(&c->lock);
}

/* --- a miss answered from the backend's completion --------------------- */

/* One pending read of one block (counted in c->jobs, so the cache stays
 * until it ends). */
struct amiss {
	struct nd_cache *c;
	struct nd_cache_ref ref;
	uint64_t off;
	size_t len;
	nd_cache_done_fn done;
	void *arg;
};

/* The block came (or failed): publish it, hand it to the reader, unpin. */
static void amiss_end(void *arg, int r)
{
	struct amiss *m = arg;
	struct nd_cache *c = m->c;
	struct nd_block *b = m->ref.blk[0];
	uint64_t s, e;

	block_span(c, b->idx, m->off, m->len, &s, &e);
	pthread_mutex_lock(&c->lock);
	publish(c, &b, 1, r, false);
	if (r == 0 && !covers(b, s, e))
		r = -EIO; /* cannot be: the block was fetched for this read */
	pthread_mutex_unlock(&c->lock);
	reader_waits(c, false);
	m->ref.iov[0].iov_base = b->data + s;
	m->ref.iov[0].iov_len = e - s;
	m->ref.len = m->len;
	m->done(m->arg, r, r == 0 ? &m->ref : NULL);
	pthread_mutex_lock(&c->lock);
	unpin(c, b);
	c->jobs--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	free(m->ref.blk);
	free(m->ref.iov);
	free(m);
}

/* Start the fetch of REF's one block (LOADING, ours, counted in jobs)
 * with no thread waiting for it: true when started (REF then belongs to
 * it and is emptied). False: the caller fetches it itself. */
static bool miss_async(struct nd_cache *c, struct nd_cache_ref *ref,
		       uint64_t off, size_t len, nd_cache_done_fn done,
		       void *arg)
{
	struct nd_block *b = ref->blk[0];
	struct amiss *m = malloc(sizeof *m);

	if (m) {
		*m = (struct amiss){ c, *ref, off, len, done, arg };
		reader_waits(c, true);
		if (nd_disk_pread_async(c->disk, b->data + b->vs, b->ve - b->vs,
					(b->idx << c->shift) + b->vs, amiss_end,
					m) == 0) {
			memset(ref, 0, sizeof *ref);
			return true;
		}
		reader_waits(c, false);
		free(m);
	}
	pthread_mutex_lock(&c->lock);
	c->jobs--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return false;
}

/* Pin the blocks of [off, off+len) (N of them from FIRST) into REF, new
 * ones (MINE) to be loaded by the caller, whole or (PARTIAL) only the
 * 4K-aligned part the read touches. Lock held. */
static int pin_blocks(struct nd_cache *c, struct nd_cache_ref *ref,
		      uint64_t first, size_t n, uint64_t off, size_t len,
		      bool partial, bool *mine, bool *missed)
{
	for (size_t i = 0; i < n; i++) {
		struct nd_block *b = lookup(c, first + i);
		uint64_t s, e;
		block_span(c, first + i, off, len, &s, &e);
		mine[i] = false;
		int r = b ? fill_for_read(c, b, s, e) : 0;
		if (r < 0)
			return r;
		if (b && b->state == B_VALID && !covers(b, s, e)) {
			unhash(c, b); /* a partial block: refetch */
			b = NULL;
		}
		if (!b) {
			b = new_block(c, first + i, NULL, 0);
			if (!b)
				return -ENOMEM;
			if (partial) {
				b->vs = s & ~4095ull;
				b->ve = (e + 4095) & ~4095ull;
				if (b->ve > b->len)
					b->ve = b->len;
			}
			mine[i] = true;
			*missed = true;
		} else {
			touch(c, b);
		}
		b->pins++;
		ref->blk[ref->n++] = b;
	}
	return 0;
}

int nd_cache_read(struct nd_cache *c, uint64_t off, size_t len,
		  struct nd_cache_ref *ref)
{
	return nd_cache_read_async(c, off, len, ref, NULL, NULL);
}

int nd_cache_read_async(struct nd_cache *c, uint64_t off, size_t len,
			struct nd_cache_ref *ref, nd_cache_done_fn done,
			void *arg)
{
	uint64_t first, last, ra_start, ra_end;
	size_t n;
	bool *mine = NULL;
	struct ra_job *jobs[MAX_RA_JOBS];
	size_t njobs = 0;
	int err = 0;

	memset(ref, 0, sizeof *ref);
	if (nd_disk_changed(c->disk)) {
		/* Not one more byte of the old object, cached or not. */
		nd_error("entry '%s': the object on the server changed",
			 nd_disk_name(c->disk));
		return -ESTALE;
	}
	if (off >= c->size || len == 0)
		return 0;
	if (len > c->size - off)
		len = c->size - off;
	first = off >> c->shift;
	last = (off + len - 1) >> c->shift;
	n = last - first + 1;
	ref->blk = calloc(n, sizeof *ref->blk);
	ref->iov = calloc(n, sizeof *ref->iov);
	mine = calloc(n, sizeof *mine);
	if (!ref->blk || !ref->iov || !mine) {
		free(mine);
		nd_cache_release(c, ref);
		return -ENOMEM;
	}

	/* A small read that looks random fetches only the 4K-aligned part it
	 * touches: a whole block would move 16 times the data. */
	bool partial = false, do_ra = false;
	for (int attempt = 0;; attempt++) {
		bool missed = false, later = false;
		pthread_mutex_lock(&c->lock);
		if (attempt == 0) {
			do_ra = nd_ra_update(&c->ra, off, len, c->size,
					     &ra_start, &ra_end);
			partial = n == 1 && len <= c->bs / 4 &&
				  nd_ra_random(&c->ra);
		}
		if (attempt >= MAX_RETRIES / 2)
			partial = false; /* make progress with whole blocks */
		err = pin_blocks(c, ref, first, n, off, len, partial, mine,
				 &missed);
		if (attempt == 0) {
			c->amp.asked += len;
			if (missed) {
				c->misses++;
				nd_debug("cache miss at %llu+%zu (readahead "
					 "window %llu)",
					 (unsigned long long)off, len,
					 (unsigned long long)nd_ra_window(&c->ra));
			} else {
				c->hits++;
			}
			if (do_ra)
				njobs = ra_schedule(c, ra_start, ra_end, jobs,
						    MAX_RA_JOBS);
			/* One block to fetch, no tier to look in first: no
			 * thread need wait for it. */
			later = done && !err && n == 1 && mine[0] && !c->tier;
			c->jobs += later;
		}
		pthread_mutex_unlock(&c->lock);
		if (njobs)
			/* The tier's disk starts on the whole window now. */
			nd_tier_advise(c->tier, ra_start, ra_end - ra_start);
		submit_jobs(jobs, njobs);
		njobs = 0;
		if (err)
			break;
		if (later && miss_async(c, ref, off, len, done, arg)) {
			free(mine);
			return 1;
		}

		if (missed)
			reader_waits(c, true);
		load_runs(c, ref->blk, mine, n,
			  (c->ra_chunk >> c->shift) ? c->ra_chunk >> c->shift : 1);

		bool retry = false;
		err = check_loaded(c, ref, first, off, len, &retry);
		if (missed)
			reader_waits(c, false);
		if (!err && retry && attempt >= MAX_RETRIES)
			err = -EIO;
		if (err || !retry)
			break;
		/* Raced with a write or a partial block: read again. */
		unpin_all(c, ref);
	}
	free(mine);
	if (err) {
		nd_cache_release(c, ref);
		return err;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t s, e;
		block_span(c, first + i, off, len, &s, &e);
		ref->iov[i].iov_base = ref->blk[i]->data + s;
		ref->iov[i].iov_len = e - s;
	}
	ref->len = len;
	return 0;
}

int nd_cache_pread(struct nd_cache *c, void *buf, size_t len, uint64_t off,
		   size_t *got)
{
	struct nd_cache_ref ref;
	int r = nd_cache_read(c, off, len, &ref);
	size_t pos = 0;
	if (r < 0)
		return r;
	for (size_t i = 0; i < ref.n; i++) {
		memcpy((char *)buf + pos, ref.iov[i].iov_base,
		       ref.iov[i].iov_len);
		pos += ref.iov[i].iov_len;
	}
	*got = pos;
	nd_cache_release(c, &ref);
	return 0;
}

/* After the backend acknowledged [off, off+len) (DATA NULL = zeroes):
 * update the cached copies. A block still loading may bring older bytes
 * of this range: wait for its load (bounded by the disk's deadlines) and
 * lay the written bytes over it, so its readers, who may want another
 * part of it, never have to fetch it again. */
static void update_cached(struct nd_cache *c, const void *data, size_t len,
			  uint64_t off)
{
	uint64_t first = off >> c->shift, last = (off + len - 1) >> c->shift;
	pthread_mutex_lock(&c->lock);
	for (uint64_t idx = first; idx <= last; idx++) {
		struct nd_block *b = lookup(c, idx);
		if (b && b->state == B_LOADING) {
			b->pins++;
			int late = wait_loaded(c, b);
			unpin(c, b);
			if (late && (b = lookup(c, idx)) && b->hashed &&
			    b->state == B_LOADING) {
				/* Its bytes may be older than this write's: the
				 * block must not become valid. */
				unhash(c, b);
				continue;
			}
			b = lookup(c, idx); /* a failed load went away */
		}
		if (!b || b->state != B_VALID)
			continue;
		uint64_t bstart = idx << c->shift, s, e;
		block_span(c, idx, off, len, &s, &e);
		if (data)
			memcpy(b->data + s, (const char *)data + (bstart + s - off),
			       e - s);
		else
			memset(b->data + s, 0, e - s);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Writeback: the block IDX, pinned and VALID, for a write of [s, e) of
 * it; loaded first when the write covers part of a page it lacks. Lock
 * held on entry and exit. */
static int wb_get(struct nd_cache *c, uint64_t idx, uint64_t s, uint64_t e,
		  struct nd_block **out)
{
	uint32_t blen = block_len(c, idx);
	bool whole = s == 0 && e == blen;
	for (int attempt = 0; attempt < MAX_RETRIES; attempt++) {
		struct nd_block *b = lookup(c, idx);
		if (!b) {
			b = new_block(c, idx, NULL, 0);
			if (!b)
				return -ENOMEM;
			b->pins++;
			if (whole || whole_pages(c, blen, s, e)) {
				b->state = B_VALID;
				if (!whole)
					make_sparse(c, b);
				*out = b;
				return 0;
			}
			pthread_mutex_unlock(&c->lock);
			fetch_run(c, &b, 1);
			pthread_mutex_lock(&c->lock);
		} else {
			b->pins++;
		}
		if (b->state == B_LOADING && wait_loaded(c, b) < 0) {
			unpin(c, b);
			return -EIO;
		}
		if (b->state == B_VALID && b->vs == 0 && b->ve == b->len) {
			int r = wb_edges(c, b, s, e);
			if (r < 0) {
				unpin(c, b);
				return r;
			}
			touch(c, b);
			*out = b;
			return 0;
		}
		int err = b->state == B_VALID ? -EAGAIN : b->err;
		if (b->state == B_VALID && b->hashed)
			unhash(c, b); /* partial: fetch it whole */
		unpin(c, b);
		if (err != -EAGAIN)
			return err;
	}
	return -EIO;
}

/* --- write-back --------------------------------------------------------- */

/* A write-back: the dirty blocks taken (pinned, wb_owner set, their
 * dirty pages in wb_mask), sorted by index, written in runs of adjacent
 * blocks by up to WB_THREADS threads at once, all under the disk's one
 * deadline. */
#define WB_THREADS 4
#define WB_RUN_MAX (4u << 20)

struct wb {
	struct nd_cache *c;
	struct nd_block **blk;
	size_t n;
	size_t next; /* the next block to write (under c->lock) */
	int err;
};

static int by_idx(const void *a, const void *b)
{
	const struct nd_block *x = *(struct nd_block *const *)a;
	const struct nd_block *y = *(struct nd_block *const *)b;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Wait, owning no block, until no dirty block is being written back by
 * another flush (its write may be of older data). Two flushes that each
 * held blocks while waiting for the other's would wait forever. Lock
 * held. */
static void wb_wait_others(struct nd_cache *c)
{
	for (struct nd_block *b = c->lru_head; b;) {
		if (!b->dirty || !b->wb_owner) {
			b = b->next;
			continue;
		}
		b->pins++;
		while (b->wb_owner)
			pthread_cond_wait(&c->cond, &c->lock);
		unpin(c, b);
		b = c->lru_head; /* the list may have changed */
	}
}

/* Take every dirty block, once no other flush is writing one back (the
 * lock is then kept until all are taken). Lock held. */
static int wb_collect(struct nd_cache *c, struct wb *w)
{
	size_t cap = 0;
	wb_wait_others(c);
	for (struct nd_block *b = c->lru_head; b; b = b->next) {
		if (!b->dirty)
			continue;
		if (w->n == cap) {
			cap = cap ? cap * 2 : 64;
			struct nd_block **nb = realloc(w->blk, cap * sizeof *nb);
			if (!nb)
				return -ENOMEM;
			w->blk = nb;
		}
		b->pins++;
		b->wb_owner = w;
		b->wb_mask = b->pdirty;
		b->wb_redirty = 0;
		w->blk[w->n++] = b;
	}
	return 0;
}

/* The run of adjacent blocks starting at w->next, claimed. Lock held. */
static size_t wb_claim(struct wb *w, size_t *first)
{
	size_t i = w->next, n = 1;
	if (i >= w->n)
		return 0;
	while (i + n < w->n && w->blk[i + n]->idx == w->blk[i]->idx + n &&
	       (n + 1) * w->c->bs <= WB_RUN_MAX)
		n++;
	w->next = i + n;
	*first = i;
	return n;
}

/* The dirty pages of a run of blocks go out as few requests as they
 * can: pages adjacent on the disk make one request (up to WB_RUN_MAX),
 * from the block itself when they are adjacent in memory too, else
 * gathered into a buffer. */
struct wb_ext {
	struct nd_cache *c;
	uint64_t off;	   /* on the disk */
	size_t len;
	const char *first; /* the memory of its first piece */
	char *buf;	   /* its pieces gathered, once they are two */
};

static int ext_flush(struct wb_ext *x)
{
	int r = 0;
	if (x->len)
		r = nd_disk_pwrite(x->c->disk, x->buf ? x->buf : x->first,
				   x->len, x->off, 0);
	free(x->buf);
	x->buf = NULL;
	x->len = 0;
	return r;
}

static int ext_add(struct wb_ext *x, const char *p, uint64_t off, size_t len)
{
	bool joins = x->len && off == x->off + x->len &&
		     x->len + len <= WB_RUN_MAX;
	if (joins && !x->buf && p == x->first + x->len) {
		x->len += len;
		return 0;
	}
	if (joins) {
		if (!x->buf) {
			if (!(x->buf = malloc(WB_RUN_MAX)))
				return -ENOMEM;
			memcpy(x->buf, x->first, x->len);
		}
		memcpy(x->buf + x->len, p, len);
		x->len += len;
		return 0;
	}
	int r = ext_flush(x);
	x->off = off;
	x->len = len;
	x->first = p;
	return r;
}

static int wb_write_run(struct nd_cache *c, struct nd_block **blk, size_t n)
{
	struct wb_ext x = { .c = c };
	uint64_t s, e;
	int r = 0;
	for (size_t k = 0; k < n && r == 0; k++)
		for (unsigned i = 0;
		     r == 0 && next_run(blk[k], blk[k]->wb_mask, &i, &s, &e);)
			r = ext_add(&x, blk[k]->data + s,
				    (blk[k]->idx << c->shift) + s, e - s);
	int f = ext_flush(&x);
	return r ? r : f;
}

/* B's wb_mask reached the server: those pages are clean unless written
 * again meanwhile. Lock held. */
static void wb_written(struct nd_cache *c, struct nd_block *b)
{
	uint64_t clean = b->wb_mask & ~b->wb_redirty & b->pdirty;
	c->dirty_bytes -= (uint64_t)__builtin_popcountll(clean) << c->pshift;
	b->pdirty &= ~clean;
	if (b->dirty && !b->pdirty)
		c->dirty_blocks--;
	b->dirty = b->pdirty != 0;
}

static void *wb_thread(void *arg)
{
	struct wb *w = arg;
	struct nd_cache *c = w->c;
	size_t first, n;

	pthread_mutex_lock(&c->lock);
	while ((n = wb_claim(w, &first)) > 0) {
		/* The blocks are ours: their bytes change only by a new
		 * write, which marks its pages in wb_redirty. */
		pthread_mutex_unlock(&c->lock);
		int r = wb_write_run(c, w->blk + first, n);
		pthread_mutex_lock(&c->lock);
		for (size_t k = first; k < first + n; k++) {
			struct nd_block *b = w->blk[k];
			if (r == 0)
				wb_written(c, b);
			b->wb_owner = NULL;
			b->wb_redirty = 0;
			unpin(c, b);
		}
		if (r < 0 && !w->err)
			w->err = r;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Write every dirty block back; blocks written again meanwhile stay
 * dirty, and so do blocks whose write failed. */
static int writeback_dirty(struct nd_cache *c)
{
	struct wb w = { .c = c };
	pthread_t thr[WB_THREADS];
	unsigned nthr = 0;

	pthread_mutex_lock(&c->lock);
	int err = wb_collect(c, &w);
	pthread_mutex_unlock(&c->lock);
	if (w.n > 1)
		qsort(w.blk, w.n, sizeof *w.blk, by_idx);
	unsigned want = nd_disk_cfg(c->disk)->connections < WB_THREADS
				? nd_disk_cfg(c->disk)->connections
				: WB_THREADS;
	for (; nthr + 1 < want && nthr + 1 < w.n; nthr++)
		if (pthread_create(&thr[nthr], NULL, wb_thread, &w) != 0)
			break;
	wb_thread(&w); /* this thread writes too */
	for (unsigned k = 0; k < nthr; k++)
		pthread_join(thr[k], NULL);
	free(w.blk);
	return err ? err : w.err;
}

/* A too dirty cache is written back by a worker while writers go on;
 * they wait for it only once the dirty bytes pass three quarters of the
 * budget. The data is kept (dirty) whatever this write-back says: a
 * failure is reported by the next fsync, not by a write. */
static void wb_background(void *arg)
{
	struct nd_cache *c = arg;
	if (writeback_dirty(c) < 0)
		nd_debug("write-back of a too dirty cache: %s", nd_get_error());
	pthread_mutex_lock(&c->lock);
	c->throttling = false;
	c->jobs--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* Is the cache dirtier than Q quarters of its budget? Dirty pages count,
 * and so does the memory of the blocks holding them, with more slack: a
 * block written in one page keeps only that page in memory. Lock held. */
static bool over_dirty(const struct nd_cache *c, unsigned q)
{
	return c->dirty_bytes > c->budget / 4 * q ||
	       (c->dirty_blocks << c->shift) > c->budget / 4 * (q + 2);
}

static void wb_throttle(struct nd_cache *c)
{
	pthread_mutex_lock(&c->lock);
	if (!c->throttling) {
		c->throttling = true;
		c->jobs++; /* nd_cache_free waits for it */
		pthread_mutex_unlock(&c->lock);
		nd_workers_submit(c, wb_background, c);
		return;
	}
	while (c->throttling && over_dirty(c, 3))
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

static int wb_write(struct nd_cache *c, const void *buf, size_t len,
		    uint64_t off)
{
	uint64_t first = off >> c->shift, last = (off + len - 1) >> c->shift;
	bool too_dirty;
	int r = 0;

	pthread_mutex_lock(&c->lock);
	for (uint64_t idx = first; idx <= last && r == 0; idx++) {
		uint64_t bstart = idx << c->shift, s, e;
		struct nd_block *b = NULL;
		block_span(c, idx, off, len, &s, &e);
		r = wb_get(c, idx, s, e, &b);
		if (r < 0)
			break;
		memcpy(b->data + s, (const char *)buf + (bstart + s - off), e - s);
		wb_mark(c, b, s, e);
		unpin(c, b);
	}
	too_dirty = over_dirty(c, 2);
	pthread_mutex_unlock(&c->lock);
	if (r == 0 && too_dirty)
		wb_throttle(c);
	return r;
}

int nd_cache_write(struct nd_cache *c, const void *buf, size_t len,
		   uint64_t off)
{
	int r;
	if (nd_disk_read_only(c->disk))
		return -EROFS;
	if (off > c->size || len > c->size - off)
		return -ENOSPC;
	if (len == 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	nd_ra_reset(&c->ra);
	pthread_mutex_unlock(&c->lock);
	/* The tier forgets these blocks before and after: a fetch that raced
	 * with this write may have kept their older bytes meanwhile. */
	tier_forget(c, off, len);
	if (c->writeback) {
		r = wb_write(c, buf, len, off);
	} else {
		r = nd_disk_pwrite(c->disk, buf, len, off, 0);
		if (r == 0)
			update_cached(c, buf, len, off);
	}
	tier_forget(c, off, len);
	return r;
}

int nd_cache_zero(struct nd_cache *c, uint64_t len, uint64_t off,
		  unsigned flags)
{
	int r;
	if (len == 0)
		return 0;
	if (c->writeback && (r = writeback_dirty(c)) < 0)
		return r;
	tier_forget(c, off, len);
	r = nd_disk_zero(c->disk, len, off, flags);
	if (r == 0)
		update_cached(c, NULL, len, off);
	tier_forget(c, off, len);
	return r;
}

/* The block that held the old end was short: it now reaches to the new
 * end (or the whole block), the bytes it gains reading as zeroes, as the
 * grown disk's do. Lock held. */
static void extend_last_block(struct nd_cache *c, uint64_t old)
{
	struct nd_block *b = lookup(c, old >> c->shift);
	if (b && b->state == B_LOADING) {
		b->pins++;
		int late = wait_loaded(c, b);
		unpin(c, b);
		b = lookup(c, old >> c->shift);
		if (late && b && b->state == B_LOADING) {
			unhash(c, b); /* never to become valid with its length */
			return;
		}
	}
	if (!b || b->state != B_VALID)
		return;
	uint32_t len = block_len(c, b->idx);
	memset(b->data + b->len, 0, len - b->len);
	if (b->ve == b->len)
		b->ve = len;
	if (b->sparse) /* the pages past the old end read as zeroes */
		b->pvalid |= page_mask(b->pshift, b->len, len) &
			     ~page_mask(b->pshift, 0, b->len);
	b->len = len;
}

int nd_cache_grow(struct nd_cache *c, uint64_t size)
{
	uint64_t old = c->size;
	int r;
	if (size <= old)
		return 0;
	if ((r = nd_disk_grow(c->disk, size)) < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	c->size = size;
	if (old & (c->bs - 1))
		extend_last_block(c, old);
	pthread_mutex_unlock(&c->lock);
	/* The tier kept that block short; it forgets it. */
	if (old)
		tier_forget(c, old - 1, 1);
	return 0;
}

int nd_cache_flush(struct nd_cache *c)
{
	int r = c->writeback ? writeback_dirty(c) : 0;
	if (r < 0)
		return r;
	return nd_disk_flush(c->disk);
}

/* One record per run of B's dirty pages. Lock held. */
static int save_dirty_pages(struct nd_cache *c, struct nd_block *b, FILE *f,
			    uint64_t *bytes)
{
	uint64_t s, e;
	for (unsigned k = 0; next_run(b, b->pdirty, &k, &s, &e);) {
		uint64_t off = (b->idx << c->shift) + s;
		uint32_t len = (uint32_t)(e - s);
		uint8_t rec[12];
		for (int i = 0; i < 8; i++)
			rec[i] = (uint8_t)(off >> (8 * i));
		for (int i = 0; i < 4; i++)
			rec[8 + i] = (uint8_t)(len >> (8 * i));
		if (fwrite(rec, 1, sizeof rec, f) != sizeof rec ||
		    fwrite(b->data + s, 1, len, f) != len)
			return -EIO;
		*bytes += len;
	}
	return 0;
}

int nd_cache_save_dirty(struct nd_cache *c, FILE *f, uint64_t *bytes)
{
	int r = 0;
	*bytes = 0;
	pthread_mutex_lock(&c->lock);
	for (struct nd_block *b = c->lru_head; b && r == 0; b = b->next)
		if (b->dirty)
			r = save_dirty_pages(c, b, f, bytes);
	pthread_mutex_unlock(&c->lock);
	return r;
}

void nd_cache_get_stats(struct nd_cache *c, struct nd_cache_stats *s)
{
	pthread_mutex_lock(&c->lock);
	s->hits = c->hits;
	s->misses = c->misses;
	s->evictions = c->evictions;
	s->used = c->used;
	s->budget = c->budget;
	s->window = nd_ra_window(&c->ra);
	s->dirty = c->dirty_bytes;
	s->remote_blocks = c->remote_blocks;
	s->amp = c->amp;
	pthread_mutex_unlock(&c->lock);
	nd_tier_get_stats(c->tier, &s->tier);
	memset(&s->prefetch, 0, sizeof s->prefetch);
	if (c->prefetch) {
		nd_prefetch_get_stats(c->prefetch, &s->prefetch);
	} else {
		static const char *const names[] = { "off", "idle", "all" };
		s->prefetch.mode = names[c->prefetch_mode];
		snprintf(s->prefetch.state, sizeof s->prefetch.state, "%s",
			 c->prefetch_off[0] ? c->prefetch_off : "off");
		s->prefetch.total = c->size;
	}
}
