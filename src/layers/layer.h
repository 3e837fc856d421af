/* layer.h: the one interface of an entry's optional layers (overlay,
 * format, slice). A layer sees only the layer under it through these five
 * calls, in its own offsets; nothing below knows it is there. Every call
 * returns 0 or -errno after an nd_error() that explains it. */
#ifndef ND_LAYER_H
#define ND_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nd_layer;

struct nd_layer_ops {
	const char *name;
	int (*pread)(struct nd_layer *l, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct nd_layer *l, const void *buf, size_t len,
		      uint64_t off);
	/* Make [off, off+len) read as zeroes. */
	int (*zero)(struct nd_layer *l, uint64_t len, uint64_t off);
	int (*flush)(struct nd_layer *l);
	void (*close)(struct nd_layer *l);
	/* Optional: make the layer SIZE bytes long (SIZE > its size). A
	 * format that allocates at the end of its container needs it. */
	int (*grow)(struct nd_layer *l, uint64_t size);
};

/* Embedded first in every layer's own struct. */
struct nd_layer {
	const struct nd_layer_ops *ops;
	uint64_t size; /* bytes the layer above sees */
	bool ro;
};

/* The calls, with the range checked against the layer's size (a request
 * past the end is -EIO, never passed down). */
int nd_layer_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off);
int nd_layer_pwrite(struct nd_layer *l, const void *buf, size_t len,
		    uint64_t off);
int nd_layer_zero(struct nd_layer *l, uint64_t len, uint64_t off);
int nd_layer_flush(struct nd_layer *l);
void nd_layer_close(struct nd_layer *l);
/* -ENOSPC when the layer cannot grow. */
int nd_layer_grow(struct nd_layer *l, uint64_t size);

/* A local file or block device as a layer (tests, local backing files).
 * RO opens it read-only. */
int nd_layer_file_open(const char *path, bool ro, struct nd_layer **out);

#endif
