/* cache.h: the per-entry block cache: fixed-size blocks in an LRU under a
 * byte budget, adjacent misses coalesced, readahead, write-through or
 * writeback. Readers get pinned blocks to reply from without a copy. */
#ifndef ND_CACHE_H
#define ND_CACHE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "disk.h"
#include "tier.h"

struct nd_cache;
struct nd_block;

/* What a read returns: iov[0..n) point into pinned cache blocks. */
struct nd_cache_ref {
	size_t n;
	struct nd_block **blk;
	struct iovec *iov;
	size_t len; /* total bytes (clipped at the end of the disk) */
};

struct nd_cache_stats {
	uint64_t hits, misses, evictions, used, budget, window, dirty;
	struct nd_tier_stats tier; /* all 0 without cache-dir */
};

struct nd_cache *nd_cache_new(struct nd_disk *d, uint64_t budget);
/* Waits for readahead in flight; dirty blocks must be flushed before. */
void nd_cache_free(struct nd_cache *c);

int nd_cache_read(struct nd_cache *c, uint64_t off, size_t len,
		  struct nd_cache_ref *ref);
void nd_cache_release(struct nd_cache *c, struct nd_cache_ref *ref);
/* Convenience: copy into BUF (unit tests, small reads). */
int nd_cache_pread(struct nd_cache *c, void *buf, size_t len, uint64_t off,
		   size_t *got);

int nd_cache_write(struct nd_cache *c, const void *buf, size_t len,
		   uint64_t off);
int nd_cache_zero(struct nd_cache *c, uint64_t len, uint64_t off,
		  unsigned flags);
/* Grow the disk to SIZE (nd_disk_grow); the cache covers the new bytes.
 * One caller at a time, with no write to the cache running. */
int nd_cache_grow(struct nd_cache *c, uint64_t size);
/* Write every dirty block back (writeback), then the backend's flush. */
int nd_cache_flush(struct nd_cache *c);
void nd_cache_get_stats(struct nd_cache *c, struct nd_cache_stats *s);
/* Append every dirty block to F as a record (offset: 8 bytes, length: 4
 * bytes, little-endian; then the bytes). *BYTES: the data saved. */
int nd_cache_save_dirty(struct nd_cache *c, FILE *f, uint64_t *bytes);

#endif
