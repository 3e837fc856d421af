/* layer.h: the one interface of an entry's optional layers (overlay,
 * format, slice). A layer sees only the layer under it through these five
 * calls, in its own offsets; nothing below knows it is there. Every call
 * returns 0 or -errno after an nd_error() that explains it. */
#ifndef ND_LAYER_H
#define ND_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct nd_layer;
struct nd_cache;

/* What keeps a mapped range where nd_layer_map said it lies (a cluster
 * not freed under it), let go of once its read ended, from any thread.
 * RELEASE NULL: nothing to let go of. */
struct nd_layer_pin {
	void (*release)(struct nd_layer_pin *p);
	void *owner;
};

/* What holds the memory a read's pieces point into (pinned cache blocks,
 * a lock), let go of by RELEASE once the reply is sent. */
struct nd_layer_hold {
	void (*release)(struct nd_layer_hold *h);
	void *owner, *p;
	size_t n;
};

/* A read's bytes without copying them: IOV[0..N) in order. A piece is
 * copied only where it must be (decompressed, a backing file, zeroes),
 * into the caller's SCRATCH at its own offset in the read. Start with
 * nd_layer_ref_init, end with nd_layer_ref_release. */
#define ND_REF_INLINE 32
struct nd_layer_ref {
	struct iovec *iov;
	size_t n, iov_cap;
	struct nd_layer_hold *hold;
	size_t nhold, hold_cap;
	struct iovec iov_in[ND_REF_INLINE];
	struct nd_layer_hold hold_in[ND_REF_INLINE / 4];
};

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
	/* Optional: LEN bytes at OFF as pieces appended to REF, SCRATCH (LEN
	 * bytes) for those that must be copied. Without it: pread into
	 * SCRATCH. */
	int (*read_ref)(struct nd_layer *l, size_t len, uint64_t off,
			void *scratch, struct nd_layer_ref *ref);
	/* Optional: where LEN bytes at OFF lie as they are, in one piece,
	 * in the block cache at the bottom of the stack: 1 with *CACHE,
	 * *COFF and PIN set; 0 when they do not (decompressed, zeroes, a
	 * backing file, split: read them with read_ref). */
	int (*map)(struct nd_layer *l, size_t len, uint64_t off,
		   struct nd_cache **cache, uint64_t *coff,
		   struct nd_layer_pin *pin);
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
/* Read by reference (read_ref above), the range checked. On an error REF
 * may hold pieces already: release it all the same. */
int nd_layer_read_ref(struct nd_layer *l, size_t len, uint64_t off,
		      void *scratch, struct nd_layer_ref *ref);
void nd_layer_ref_init(struct nd_layer_ref *ref);
/* The map call above, the range checked; 0 for a layer without it. On 1
 * the caller reads the cache itself (asynchronously, say), then lets go
 * of PIN with nd_layer_unpin. */
int nd_layer_map(struct nd_layer *l, size_t len, uint64_t off,
		 struct nd_cache **cache, uint64_t *coff,
		 struct nd_layer_pin *pin);
void nd_layer_unpin(struct nd_layer_pin *pin);
/* Append a piece (merged with the last one when they touch), a hold. */
int nd_layer_ref_add(struct nd_layer_ref *ref, void *base, size_t len);
int nd_layer_ref_hold(struct nd_layer_ref *ref,
		      const struct nd_layer_hold *h);
/* Let go of every hold (in reverse order) and the arrays. */
void nd_layer_ref_release(struct nd_layer_ref *ref);
/* -ENOSPC when the layer cannot grow. */
int nd_layer_grow(struct nd_layer *l, uint64_t size);

/* A local file or block device as a layer (tests, local backing files).
 * RO opens it read-only. */
int nd_layer_file_open(const char *path, bool ro, struct nd_layer **out);

#endif
