/* cache.h: the per-entry block cache: fixed-size blocks in an LRU under a
 * byte budget, adjacent misses coalesced, readahead, write-through or
 * writeback. Readers get pinned blocks to reply from without a copy. */
#ifndef ND_CACHE_H
#define ND_CACHE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "disk.h"
#include "prefetch.h"
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

/* Read amplification, in bytes: what readers asked the cache for, what
 * the cache fetched from the server for them (demand misses, readahead,
 * the pages a partly written block lacked), and of the readahead's
 * fetches how much a reader read before the block was evicted (used)
 * and how much was evicted unread (wasted); the rest is still cached. */
struct nd_cache_amp {
	uint64_t asked, fetched;
	uint64_t ra_fetched, ra_used, ra_wasted;
};

struct nd_cache_stats {
	uint64_t hits, misses, evictions, used, budget, window, dirty;
	uint64_t remote_blocks; /* blocks fetched from the server */
	struct nd_cache_amp amp;
	struct nd_tier_stats tier; /* all 0 without cache-dir */
	struct nd_prefetch_stats prefetch;
};

struct nd_cache *nd_cache_new(struct nd_disk *d, uint64_t budget);
/* Waits for readahead in flight; dirty blocks must be flushed before. */
void nd_cache_free(struct nd_cache *c);

int nd_cache_read(struct nd_cache *c, uint64_t off, size_t len,
		  struct nd_cache_ref *ref);
void nd_cache_release(struct nd_cache *c, struct nd_cache_ref *ref);
/* The end of a read that nd_cache_read_async left pending: ERR 0 and REF
 * its blocks (valid during the call only, released after it), or -errno
 * and REF NULL. */
typedef void (*nd_cache_done_fn)(void *arg, int err, struct nd_cache_ref *ref);
/* nd_cache_read; but a read that misses one block the disk can fetch
 * without a thread waiting for it (nd_disk_pread_async) returns 1 at once
 * and DONE runs when the block is there, in the backend's thread (or, after
 * a failure, in one of its own). 0 with REF filled, or -errno, otherwise. */
int nd_cache_read_async(struct nd_cache *c, uint64_t off, size_t len,
			struct nd_cache_ref *ref, nd_cache_done_fn done,
			void *arg);
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

/* --- the cache directory of an entry (cache-dir.c) --- */
/* cache-dir= of O when its disk tier is in use, else NULL. */
const char *nd_cache_dir_of(const struct nd_opts *o);
/* The backend's facts as the cache directory records them (malloc'd). */
char *nd_cache_dir_info_text(const struct nd_info *i);
/* ERR: why nd_disk_open of O failed. When that is an outage and O's
 * cache directory holds what an earlier mount recorded, open the disk
 * from that (no connection yet, reconnecting) and return 0; else ERR. */
int nd_cache_dir_open_offline(const struct nd_opts *o, int err,
			      struct nd_disk **out);
/* Close the tier (and its prefetch) of C: a new definition of the entry
 * is about to open the same directory. Called with no read in flight. */
void nd_cache_drop_tier(struct nd_cache *c);

#endif
