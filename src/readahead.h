/* readahead.h: the sequential-stream detector and the background workers
 * that fetch ahead. Generic: it knows offsets, never a backend. */
#ifndef ND_READAHEAD_H
#define ND_READAHEAD_H

#include <stdbool.h>
#include <stdint.h>

#define ND_RA_STREAMS 4

/* One sequential reader. */
struct nd_ra_stream {
	uint64_t start;	   /* where it began */
	uint64_t next;	   /* where it reads next */
	uint64_t window;   /* bytes to keep fetched ahead; 0 = off */
	uint64_t frontier; /* end of what was already scheduled */
	unsigned seq;	   /* consecutive sequential reads */
	uint64_t used;	   /* tick of the last read, for replacement */
};

/* Several readers of one disk (two dd's, fio jobs) each keep their own
 * stream, so they do not look random to each other. */
struct nd_ra {
	struct nd_ra_stream s[ND_RA_STREAMS];
	uint64_t init; /* first window (readahead=) */
	uint64_t max;  /* cap */
	uint64_t tick;
	unsigned cur; /* the stream the last update was about */
};

void nd_ra_init(struct nd_ra *ra, uint64_t init, uint64_t max);
/* Account a read of [off, off+len) on a disk of SIZE bytes. Grows its
 * stream's window while access stays sequential, drops it when it turns
 * random. Returns true with [*start, *end) when that range should be
 * fetched; the caller reports how far it got with nd_ra_scheduled. */
bool nd_ra_update(struct nd_ra *ra, uint64_t off, uint64_t len,
		  uint64_t size, uint64_t *start, uint64_t *end);
/* The caller fetched (or queued) everything below END. */
void nd_ra_scheduled(struct nd_ra *ra, uint64_t end);
/* Forget the streams (after a write, or at reset). */
void nd_ra_reset(struct nd_ra *ra);
/* Did the last update look like random access (its stream has no window)? */
bool nd_ra_random(const struct nd_ra *ra);
/* The largest window now (for the status file). */
uint64_t nd_ra_window(const struct nd_ra *ra);

#endif
