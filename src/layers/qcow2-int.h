/* qcow2-int.h: what qcow2.c (reading), qcow2-open.c (the header) and
 * qcow2-write.c (allocation and metadata updates) share. Private to the
 * qcow2 layer. */
#ifndef ND_QCOW2_INT_H
#define ND_QCOW2_INT_H

#include <pthread.h>
#include <stdint.h>

#include "qcow2.h"

#define QCOW2_MAGIC 0x514649fbu
#define INCOMPAT_DIRTY (1ull << 0)
#define INCOMPAT_CORRUPT (1ull << 1)
#define INCOMPAT_DATA_FILE (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2 (1ull << 4)
#define INCOMPAT_KNOWN 0x1full
#define L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_COMPRESSED (1ull << 62)
#define L2E_ZERO 1ull
#define L2E_COPIED (1ull << 63) /* refcount exactly one: write in place */
#define L1E_COPIED (1ull << 63)
#define EXT_BACKING_FORMAT 0xe2792acau
#define MAX_L1_ENTRIES (32u << 20) / 8 /* QEMU's limit: a 32 MiB L1 */

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

#define SLOT_NIL SIZE_MAX

/* A cached L2 table: found by a hash of its offset (chain HNEXT), and
 * while ready on the LRU list (PREV, NEXT; the free list when empty). */
struct l2_slot {
	uint64_t off; /* of the table in the container */
	uint64_t *tbl;
	size_t hnext, prev, next;
	enum slot_state state;
};

struct qcow2 {
	struct nd_layer l;
	struct nd_layer *file;	  /* the container */
	struct nd_layer *backing; /* NULL: unallocated reads as zeroes */
	unsigned cluster_bits;
	uint64_t cluster_size;
	unsigned l2_bits;	/* entries per L2 table, log2 */
	bool extl2;		/* 128-bit L2 entries with subclusters */
	unsigned sc_bits;	/* subcluster size, log2 */
	bool zero_flag;		/* v3 without extl2: bit 0 means zeroes */
	int compression;	/* 0 deflate, 1 zstd */
	uint64_t *l1;
	uint32_t l1_size;
	uint64_t l1_off;

	pthread_mutex_t lock; /* protects the slots, lists and ccache */
	pthread_cond_t loaded;
	struct l2_slot *slots;
	size_t nslots;
	size_t *hash, hmask; /* first slot of each chain */
	size_t lru, mru;     /* the ready slots, least recent first */
	size_t free;	     /* the empty slots */
	uint64_t cdesc; /* the compressed cluster in cbuf; 0 = none */
	uint8_t *cbuf;

	/* Writing (qcow2-write.c); meta_lock serialises every write, held
	 * across the container I/O of an allocation and its metadata. */
	pthread_mutex_t meta_lock;
	unsigned refcount_order;
	uint64_t rt_off;     /* refcount table */
	uint64_t rt_entries;
	uint64_t *rtable;    /* host order */
	uint64_t free_hint;  /* no free cluster below it */
	uint64_t rb_off;     /* the refcount block in rbuf; 0 = none */
	uint8_t *rbuf;
	/* Held shared by every read; exclusively while clusters are freed,
	 * so a read mapped to a cluster never finds it reused by another. */
	pthread_rwlock_t reading;
	/* Reads mapped onto the cache (qcow2_map_range) and not yet ended:
	 * they hold no lock, so freeing clusters waits for them to be 0. */
	pthread_mutex_t map_mu;
	pthread_cond_t map_cv;
	unsigned long mapped;
	/* Host clusters that lost a reference (an entry replaced): their
	 * refcounts drop after the next flush made the replacement durable. */
	uint64_t *unref;
	size_t nunref, unref_cap;
	/* The clusters qcow2_is_metadata looks for (refcount blocks, L2
	 * tables of L1), sorted; rebuilt when STALE (L1 or the refcount
	 * table changed). */
	uint64_t *meta;
	size_t nmeta;
	bool meta_stale;
};

enum ext_type { EXT_UNALLOC, EXT_ZERO, EXT_DATA, EXT_COMPRESSED };

/* What the guest range starting at OFF is, and for how many bytes (at
 * most to the end of its cluster, or of its run of like subclusters). */
struct extent {
	enum ext_type type;
	uint64_t host; /* EXT_DATA: container offset of OFF; else the desc */
	uint64_t len;
};

static inline uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* -EIO with "qcow2: WHAT (V): the image is corrupt". */
int qcow2_corrupt(const char *what, uint64_t v);
/* LEN container bytes at OFF; past the container's end is corrupt. */
int qcow2_file_read(struct qcow2 *q, void *buf, size_t len, uint64_t off,
		    const char *what);
/* Entry IDX (and its subcluster bitmap) of the L2 table at OFF. */
int qcow2_l2_entry(struct qcow2 *q, uint64_t off, size_t idx, uint64_t *e,
		   uint64_t *bitmap);
/* Make a cached copy of the L2 table at OFF show entry IDX as E (and its
 * subcluster bitmap as BITMAP). */
void qcow2_l2_update(struct qcow2 *q, uint64_t off, size_t idx, uint64_t e,
		     uint64_t bitmap);
/* The cluster at OFF becomes a new L2 table: a copy cached from when it
 * was one before (since freed) must not be served for it. */
void qcow2_l2_forget(struct qcow2 *q, uint64_t off);
/* Set up the L2-table cache of NSLOTS tables (0 or -ENOMEM). */
int qcow2_l2_cache_init(struct qcow2 *q, size_t nslots);
int qcow2_map(struct qcow2 *q, uint64_t off, struct extent *x);
int qcow2_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off);
int qcow2_map_range(struct nd_layer *l, size_t len, uint64_t off,
		    struct nd_cache **cache, uint64_t *coff,
		    struct nd_layer_pin *pin);
/* Wait until no read mapped onto the cache is in flight (with reading
 * held exclusively, so none starts). */
void qcow2_mapped_drain(struct qcow2 *q);
int qcow2_read_ref(struct nd_layer *l, size_t len, uint64_t off,
		   void *scratch, struct nd_layer_ref *ref);
void qcow2_close(struct nd_layer *l);

/* Refcounts (qcow2-refcount.c, meta_lock held). LEN bytes at OFF of the
 * container, grown first when they reach past its end. */
int qcow2_write_at(struct qcow2 *q, const void *buf, size_t len, uint64_t off);
/* Take a free cluster (refcount 0 -> 1, durable after the next flush). */
int qcow2_alloc_cluster(struct qcow2 *q, uint64_t *off);
/* The L2 entry E (a data or compressed cluster, or nothing) was replaced:
 * its host clusters lose a reference at the next qcow2_unref_flush. */
int qcow2_unref_later(struct qcow2 *q, uint64_t e);
/* Flush the container, then drop the references qcow2_unref_later kept
 * (a crash before: leaked clusters, never a reference to a free one). */
int qcow2_unref_flush(struct qcow2 *q);
/* Is the cluster at OFF one of the image's own metadata clusters? */
bool qcow2_is_metadata(struct qcow2 *q, uint64_t off);

/* Writing: set up at open for a writable image (0 or -errno). */
int qcow2_write_init(struct qcow2 *q, uint64_t rt_off, uint32_t rt_clusters,
		     unsigned refcount_order, uint64_t autoclear);
int qcow2_pwrite(struct nd_layer *l, const void *buf, size_t len,
		 uint64_t off);
int qcow2_zero(struct nd_layer *l, uint64_t len, uint64_t off);
int qcow2_flush(struct nd_layer *l);

#endif
