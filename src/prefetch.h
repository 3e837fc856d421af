/* prefetch.h: filling an entry's cache directory in the background
 * (prefetch=all|idle), one request at a time, giving way to readers. */
#ifndef ND_PREFETCH_H
#define ND_PREFETCH_H

#include <stdatomic.h>
#include <stdint.h>

#include "disk.h"
#include "tier.h"

enum nd_prefetch_mode { ND_PREFETCH_OFF, ND_PREFETCH_IDLE, ND_PREFETCH_ALL };

/* What the cache tells the prefetch of its readers. */
struct nd_reader_activity {
	atomic_uint waiting;		 /* readers waiting for the server now */
	atomic_uint_fast64_t last_wait_ms; /* monotonic ms of the last one */
};

struct nd_prefetch_cfg {
	enum nd_prefetch_mode mode;
	struct nd_disk *disk;
	struct nd_tier *tier;
	uint32_t block_size;
	uint64_t size;
	uint32_t chunk; /* bytes per request */
	struct nd_reader_activity *readers;
};

struct nd_prefetch_stats {
	const char *mode; /* "off", "idle", "all" */
	char state[96];
	uint64_t done, total;
};

struct nd_prefetch;

/* prefetch= of O: 0, or -1 with an nd_error for a bad value. */
int nd_prefetch_mode_of(const struct nd_opts *o, enum nd_prefetch_mode *m);
/* Start the background fill (NULL for mode off or on failure). */
struct nd_prefetch *nd_prefetch_start(const struct nd_prefetch_cfg *cfg);
/* Stop it and wait for its request in flight (bounded by the disk's
 * deadlines). NULL is fine. */
void nd_prefetch_stop(struct nd_prefetch *p);
void nd_prefetch_get_stats(struct nd_prefetch *p, struct nd_prefetch_stats *s);

#endif
