/* qcow2.h: the qcow2 format layer: the guest's disk decoded from the
 * container bytes of the layer under it (docs/interop/qcow2.txt). */
#ifndef ND_QCOW2_H
#define ND_QCOW2_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "layer.h"

struct nd_qcow2_opts {
	uint64_t l2_cache_bytes; /* 0: 32 MiB (256 GiB at 64 KiB clusters) */
	const char *snapshot;	 /* ID or name, shown read-only; NULL: active */
	bool no_backing;	 /* backing=off: unallocated reads as zeroes */
	bool writable;		 /* open for writing (else read-only) */
	/* Open the backing file NAME (as written in the header; FORMAT is
	 * the backing format extension or NULL) as a layer of its own,
	 * already decoded. NULL: an image with a backing file is refused
	 * unless no_backing. DEPTH counts the images above it. */
	int (*open_backing)(const char *name, const char *format,
			    unsigned depth, void *arg, struct nd_layer **out);
	void *arg;
	unsigned depth; /* of this image in its chain (0 = the top) */
};

/* Decode the image in FILE, which the new layer owns from then on (also
 * on failure), read-only unless O->writable. 0 or -errno with an
 * nd_error naming what is wrong with the image. */
int nd_qcow2_open(struct nd_layer *file, const struct nd_qcow2_opts *o,
		  struct nd_layer **out);

/* Print what the header of the image in FILE says (version, sizes,
 * features, backing file, snapshots) as "key: value" lines. */
int nd_qcow2_describe(struct nd_layer *file, FILE *out);

/* Is BUF (at least 4 bytes) the start of a qcow2 image? */
bool nd_qcow2_probe(const void *buf);

/* Deepest backing chain opened through open_backing before it is an
 * error (a loop in backing names ends here too). */
#define ND_QCOW2_MAX_DEPTH 16

#endif
