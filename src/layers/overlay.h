/* overlay.h: a persistent copy-on-write overlay: the layer under it is
 * never written; every write, zero and discard lands in one local file
 * that survives unmount, crash and reboot. */
#ifndef ND_OVERLAY_H
#define ND_OVERLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "layer.h"

/* Overlay blocks: 4 KiB, the page size. A write of whole pages (what the
 * kernel's page cache and almost every O_DIRECT writer sends) never reads
 * the base; only a write of part of a page copies the rest of that page
 * from below first. 64 KiB clusters would cut the map 16-fold but make
 * every 4 KiB write fetch 60 KiB from a remote base, and fail while the
 * base is unreachable. */
#define ND_OVERLAY_BLOCK 4096u

struct nd_overlay_opts {
	bool create; /* create PATH if it does not exist (overlay-create=on) */
	bool force;  /* accept another base identity (overlay-force=on) */
};

/* Open (or create) the overlay PATH over BASE, which the new layer owns
 * from then on (also on failure). IDENTITY names the base (its canonical
 * options without secrets, its size, its validator): an overlay made over
 * another base is refused with an error naming both, unless force. */
int nd_overlay_open(const char *path, struct nd_layer *base,
		    const char *identity, const struct nd_overlay_opts *o,
		    struct nd_layer **out);

/* What a mounted overlay did (the status file). */
struct nd_overlay_stats {
	const char *path; /* the overlay's, valid while the layer is */
	uint64_t data_bytes; /* held in the overlay's data area */
	uint64_t zero_bytes; /* recorded as zeroes, nothing stored */
	uint64_t writes;     /* write and zero requests since the mount */
	uint64_t base_errors; /* reads of the base that failed */
};
/* L's figures; false when L is not an overlay. */
bool nd_overlay_stats(struct nd_layer *l, struct nd_overlay_stats *st);

/* What an overlay file holds, without its base (netdiskfs overlay info). */
struct nd_overlay_info {
	char *identity; /* malloc'd */
	uint64_t size;	/* of the disk */
	uint64_t data_blocks, zero_blocks;
	uint64_t extents; /* runs of changed blocks */
};
int nd_overlay_info(const char *path, struct nd_overlay_info *info);

/* Call FN for each run of changed blocks of the overlay at PATH, in order:
 * ZERO true for a run that reads as zeroes. Stops at FN's non-zero. */
typedef int (*nd_overlay_fn)(uint64_t off, uint64_t len, bool zero,
			     void *arg);
int nd_overlay_each(const char *path, nd_overlay_fn fn, void *arg);

/* Read LEN changed bytes at OFF from the overlay file PATH's data. */
int nd_overlay_read_data(const char *path, void *buf, size_t len,
			 uint64_t off);

/* Forget the changes in [off, off+len) (blocks) and make that durable:
 * commit does it after the base holds them; discard for everything. */
int nd_overlay_forget(const char *path, uint64_t off, uint64_t len);

#endif
