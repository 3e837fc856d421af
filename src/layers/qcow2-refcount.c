/* qcow2-refcount.c: the refcounts of a qcow2 image being written: taking
 * a free cluster, refcount blocks made on demand (each describing itself),
 * and a refcount table that grows as QEMU grows it, and the container
 * growing under all of it.
 *
 * Crash consistency by write order alone: a cluster's refcount is durable
 * before anything points at it; a new refcount block is durable before the
 * table names it; a new table (with the blocks that describe it) is durable
 * before the header names it, and the old one is freed only after that;
 * a cluster whose L2 entry was replaced loses its reference only after a
 * flush made the replacement durable (qcow2_unref_flush). A crash leaves
 * at worst leaked clusters (refcount 1, no reference).
 * Called with meta_lock held. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2-int.h"

#define GROW_STEP (1u << 20)	/* the container grows by at least this */
#define MAX_RT_BYTES (8u << 20) /* QEMU's limit on a refcount table */

static uint64_t per_block(const struct qcow2 *q)
{
	return (q->cluster_size * 8) >> q->refcount_order;
}

static uint64_t rc_get(const struct qcow2 *q, const uint8_t *b, uint64_t i)
{
	unsigned bits = 1u << q->refcount_order;
	if (bits < 8)
		return b[i * bits / 8] >> (i * bits % 8) & ((1u << bits) - 1);
	uint64_t v = 0;
	for (unsigned k = 0; k < bits / 8; k++)
		v = v << 8 | b[i * (bits / 8) + k];
	return v;
}

static void rc_set(const struct qcow2 *q, uint8_t *b, uint64_t i, uint64_t v)
{
	unsigned bits = 1u << q->refcount_order;
	if (bits < 8) {
		uint8_t *p = &b[i * bits / 8];
		unsigned sh = i * bits % 8, mask = ((1u << bits) - 1) << sh;
		*p = (uint8_t)((*p & ~mask) | (v << sh & mask));
		return;
	}
	for (unsigned k = bits / 8; k-- > 0; v >>= 8)
		b[i * (bits / 8) + k] = (uint8_t)v;
}

int qcow2_write_at(struct qcow2 *q, const void *buf, size_t len, uint64_t off)
{
	if (off + len > q->file->size) {
		uint64_t want = off + len > q->file->size + GROW_STEP
				    ? off + len
				    : q->file->size + GROW_STEP;
		int r = nd_layer_grow(q->file, want);
		if (r)
			return r;
	}
	return nd_layer_pwrite(q->file, buf, len, off);
}

static int rb_load(struct qcow2 *q, uint64_t off)
{
	if (q->rb_off == off)
		return 0;
	q->rb_off = 0;
	int r = qcow2_file_read(q, q->rbuf, q->cluster_size, off,
				"refcount block offset");
	if (r == 0)
		q->rb_off = off;
	return r;
}

/* Set cluster K's refcount to V in its (loaded) block, on disk too. */
static int rc_store(struct qcow2 *q, uint64_t k, uint64_t v)
{
	uint64_t i = k % per_block(q);
	size_t byte = (size_t)((i << q->refcount_order) / 8) & ~(size_t)511;
	rc_set(q, q->rbuf, i, v);
	return qcow2_write_at(
	    q, q->rbuf + byte,
	    q->cluster_size < 512 + byte ? q->cluster_size - byte : 512,
	    q->rb_off + byte);
}

/* A refcount block for table entry RT at cluster K, which it describes
 * itself (refcount 1); durable before the table names it. */
static int new_refblock(struct qcow2 *q, uint64_t rt, uint64_t k)
{
	uint8_t e[8];
	int r;
	memset(q->rbuf, 0, q->cluster_size);
	rc_set(q, q->rbuf, k % per_block(q), 1);
	q->rb_off = 0;
	if ((r = qcow2_write_at(q, q->rbuf, q->cluster_size,
				k << q->cluster_bits)) ||
	    (r = nd_layer_flush(q->file)))
		return r;
	q->rb_off = k << q->cluster_bits;
	q->rtable[rt] = q->rb_off;
	q->meta_stale = true;
	put_be64(e, q->rb_off);
	if ((r = qcow2_write_at(q, e, 8, q->rt_off + rt * 8)))
		return r;
	return nd_layer_flush(q->file);
}

static bool in_range(uint64_t off, uint64_t start, uint64_t len)
{
	return off >= start && off - start < len;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sort the refcount blocks and L2 tables into q->meta (false: no memory,
 * the caller scans instead). */
static bool meta_rebuild(struct qcow2 *q)
{
	size_t n = 0;
	uint64_t *m = realloc(q->meta, (q->rt_entries + q->l1_size + 1) * 8);
	if (!m)
		return false;
	for (uint64_t i = 0; i < q->rt_entries; i++)
		if (q->rtable[i])
			m[n++] = q->rtable[i];
	for (uint32_t i = 0; i < q->l1_size; i++)
		if (q->l1[i] & L1E_OFFSET_MASK)
			m[n++] = q->l1[i] & L1E_OFFSET_MASK;
	qsort(m, n, sizeof *m, cmp_u64);
	q->meta = m;
	q->nmeta = n;
	q->meta_stale = false;
	return true;
}

static bool scan_metadata(const struct qcow2 *q, uint64_t off)
{
	for (uint64_t i = 0; i < q->rt_entries; i++)
		if (q->rtable[i] == off)
			return true;
	for (uint32_t i = 0; i < q->l1_size; i++)
		if ((q->l1[i] & L1E_OFFSET_MASK) == off)
			return true;
	return false;
}

/* Is the cluster at OFF one of the image's own metadata clusters? A free
 * one (refcount 0) that is means the refcounts are wrong: writing it
 * would destroy the metadata, as QEMU's overlap checks say. Every data
 * cluster written in place is checked: a binary search, not a scan of
 * the refcount table and L1 per cluster. */
bool qcow2_is_metadata(struct qcow2 *q, uint64_t off)
{
	if (off < q->cluster_size ||
	    in_range(off, q->l1_off, q->l1_size * 8ull) ||
	    in_range(off, q->rt_off, q->rt_entries * 8))
		return true;
	if (q->meta_stale && !meta_rebuild(q))
		return scan_metadata(q, off);
	return bsearch(&off, q->meta, q->nmeta, sizeof off, cmp_u64) != NULL;
}

/* Refcount blocks for the clusters [A, END) of a new area (they are all
 * in it, at A onwards): NB blocks, for table entries A/pb onwards. */
static void area_blocks(struct qcow2 *q, uint8_t *blk, uint64_t nb, uint64_t a,
			uint64_t end)
{
	uint64_t pb = per_block(q);
	memset(blk, 0, nb * q->cluster_size);
	for (uint64_t k = a; k < end; k++)
		rc_set(q, blk + (k / pb - a / pb) * q->cluster_size, k % pb, 1);
}

/* The size of a new table placed at cluster A: NB refcount blocks, then
 * TC table clusters, with room to grow half as much again. */
static int area_size(struct qcow2 *q, uint64_t a, uint64_t *nb, uint64_t *tc)
{
	uint64_t pb = per_block(q), per_tc = q->cluster_size / 8;
	uint64_t pnb, ptc;
	*nb = *tc = 1;
	do { /* both only grow with the area: a fixed point soon */
		uint64_t end = a + *nb + *tc, need = (end + pb - 1) / pb;
		uint64_t entries = q->rt_entries + q->rt_entries / 2;
		if (entries < need)
			entries = need;
		pnb = *nb;
		ptc = *tc;
		*tc = (entries + per_tc - 1) / per_tc;
		*nb = need - a / pb;
	} while (*nb != pnb || *tc != ptc);
	if (*tc * q->cluster_size > MAX_RT_BYTES) {
		errno = ENOSPC;
		nd_error("qcow2: the refcount table would pass %u MiB (QEMU's "
			 "limit): the image cannot grow",
			 MAX_RT_BYTES >> 20);
		return -ENOSPC;
	}
	return 0;
}

/* The header's refcount_table_offset and _clusters (bytes 48 to 59),
 * written at once. */
static const uint8_t *hdr_of(uint8_t *hdr, uint64_t at, uint64_t tc)
{
	put_be64(hdr, at);
	hdr[8] = (uint8_t)(tc >> 24), hdr[9] = (uint8_t)(tc >> 16);
	hdr[10] = (uint8_t)(tc >> 8), hdr[11] = (uint8_t)tc;
	return hdr;
}

/* Write the new table (entries TBL, which this takes, TC clusters at AT), name
 * it in the header, then free the old one. */
static int switch_table(struct qcow2 *q, uint64_t *tbl, uint64_t tc,
			uint64_t at)
{
	uint64_t n = tc * q->cluster_size / 8, old = q->rt_off;
	uint64_t old_n =
	    (q->rt_entries * 8 + q->cluster_size - 1) >> q->cluster_bits;
	uint8_t *be = malloc(tc * q->cluster_size), hdr[12];
	int r;

	if (!be)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		put_be64(be + i * 8, tbl[i]);
	r = qcow2_write_at(q, be, tc * q->cluster_size, at);
	free(be);
	if (r == 0 && (r = nd_layer_flush(q->file)) == 0)
		r = qcow2_write_at(q, hdr_of(hdr, at, tc), sizeof hdr, 48);
	if (r || (r = nd_layer_flush(q->file))) {
		free(tbl);
		return r;
	}
	free(q->rtable);
	q->rtable = tbl;
	q->rt_off = at;
	q->rt_entries = n;
	q->meta_stale = true;
	/* Only now is the old table free (a crash before: a leak). */
	for (uint64_t k = old >> q->cluster_bits; r == 0 && old_n--; k++) {
		uint64_t rb = q->rtable[k / per_block(q)];
		if (rb && (r = rb_load(q, rb)) == 0 &&
		    (r = rc_store(q, k, 0)) == 0 && k < q->free_hint)
			q->free_hint = k;
	}
	return r;
}

/* The refcount table has no entry for cluster K, nor for any after it,
 * which are therefore all free: a larger table goes there, after the
 * refcount blocks that describe it and themselves (as QEMU lays it out),
 * and replaces the old one. */
static int grow_table(struct qcow2 *q, uint64_t k)
{
	uint64_t nb, tc, pb = per_block(q);
	uint8_t *blk = NULL;
	uint64_t *tbl = NULL;
	int r;

	if ((r = area_size(q, k, &nb, &tc)))
		return r;
	if (!(tbl = calloc(tc * q->cluster_size / 8, 8)) ||
	    !(blk = malloc(nb * q->cluster_size))) {
		free(tbl);
		return -ENOMEM;
	}
	memcpy(tbl, q->rtable, q->rt_entries * 8);
	for (uint64_t i = 0; i < nb; i++)
		tbl[k / pb + i] = (k + i) << q->cluster_bits;
	area_blocks(q, blk, nb, k, k + nb + tc);
	r = qcow2_write_at(q, blk, nb * q->cluster_size, k << q->cluster_bits);
	free(blk);
	if (r) {
		free(tbl);
		return r;
	}
	if ((r = switch_table(q, tbl, tc, (k + nb) << q->cluster_bits)))
		return r;
	nd_debug("qcow2: refcount table grown to %llu clusters at cluster %llu",
		 (unsigned long long)tc, (unsigned long long)(k + nb));
	return r;
}

/* One reference fewer to the cluster at OFF. */
static int rc_dec(struct qcow2 *q, uint64_t off)
{
	uint64_t k = off >> q->cluster_bits, rt = k / per_block(q), v;
	int r;
	if (rt >= q->rt_entries || !q->rtable[rt])
		return qcow2_corrupt("a cluster in use has no refcount, offset",
				     off);
	if ((r = rb_load(q, q->rtable[rt])))
		return r;
	if (!(v = rc_get(q, q->rbuf, k % per_block(q))))
		return qcow2_corrupt("a cluster in use has refcount 0, offset",
				     off);
	if (v == 1 && k < q->free_hint)
		q->free_hint = k;
	return rc_store(q, k, v - 1);
}

static int unref_push(struct qcow2 *q, uint64_t off)
{
	if (q->nunref == q->unref_cap) {
		size_t cap = q->unref_cap ? q->unref_cap * 2 : 64;
		uint64_t *p = realloc(q->unref, cap * sizeof *p);
		if (!p)
			return -ENOMEM;
		q->unref = p;
		q->unref_cap = cap;
	}
	q->unref[q->nunref++] = off;
	return 0;
}

int qcow2_unref_later(struct qcow2 *q, uint64_t e)
{
	uint64_t first, last;
	if (e & L2E_COMPRESSED) { /* every host cluster its sectors touch */
		unsigned x = 62 - (q->cluster_bits - 8);
		uint64_t coff = e & ((1ull << x) - 1) & ~511ull;
		uint64_t nsec = (e & ~(3ull << 62)) >> x;
		first = coff >> q->cluster_bits;
		last = (coff + (nsec + 1) * 512 - 1) >> q->cluster_bits;
	} else if (e & L2E_OFFSET_MASK) {
		first = last = (e & L2E_OFFSET_MASK) >> q->cluster_bits;
	} else {
		return 0;
	}
	for (uint64_t k = first; k <= last; k++) {
		int r = unref_push(q, k << q->cluster_bits);
		if (r)
			return r;
	}
	return 0;
}

int qcow2_unref_flush(struct qcow2 *q)
{
	int r = nd_layer_flush(q->file);
	if (r)
		return r; /* kept for the next flush */
	pthread_rwlock_wrlock(&q->reading); /* reads in flight finish */
	qcow2_mapped_drain(q);
	for (size_t i = 0; r == 0 && i < q->nunref; i++)
		r = rc_dec(q, q->unref[i]);
	pthread_rwlock_unlock(&q->reading);
	q->nunref = 0; /* dropped, or leaked after an error */
	return r;
}

/* Take a free cluster (refcount 0) for a new use: *OFF is its offset. */
int qcow2_alloc_cluster(struct qcow2 *q, uint64_t *off)
{
	for (uint64_t k = q->free_hint;; k++) {
		uint64_t rt = k / per_block(q);
		int r;
		if (rt >= q->rt_entries) {
			if ((r = grow_table(q, k)))
				return r;
			continue; /* K holds the first new refcount block */
		}
		if (!q->rtable[rt]) {
			if ((r = new_refblock(q, rt, k)))
				return r;
			continue; /* K holds the new block now */
		}
		if ((r = rb_load(q, q->rtable[rt])))
			return r;
		if (rc_get(q, q->rbuf, k % per_block(q)) == 0) {
			if (qcow2_is_metadata(q, k << q->cluster_bits))
				return qcow2_corrupt("a metadata cluster has "
						     "refcount 0, cluster",
						     k);
			if ((r = rc_store(q, k, 1)))
				return r;
			q->free_hint = k + 1;
			*off = k << q->cluster_bits;
			return 0;
		}
	}
}

int qcow2_write_init(struct qcow2 *q, uint64_t rt_off, uint32_t rt_clusters,
		     unsigned refcount_order, uint64_t autoclear)
{
	uint64_t len = (uint64_t)rt_clusters << q->cluster_bits;
	int r;

	if (rt_off & (q->cluster_size - 1) || !rt_clusters || len > (64u << 20))
		return qcow2_corrupt("refcount table offset or size", rt_off);
	q->refcount_order = refcount_order;
	q->rt_off = rt_off;
	q->rt_entries = len / 8;
	q->meta_stale = true;
	if (!(q->rtable = malloc(len)) || !(q->rbuf = malloc(q->cluster_size)))
		return -ENOMEM;
	if ((r = qcow2_file_read(q, q->rtable, len, rt_off,
				 "refcount table offset")))
		return r;
	for (uint64_t i = 0; i < q->rt_entries; i++) {
		q->rtable[i] =
		    be64((const uint8_t *)&q->rtable[i]) & L1E_OFFSET_MASK;
		if (q->rtable[i] & (q->cluster_size - 1))
			return qcow2_corrupt("unaligned refcount block", i);
	}
	if (autoclear) { /* the bits this writer does not keep */
		uint8_t zero[8] = {0};
		if ((r = qcow2_write_at(q, zero, 8, 88)) ||
		    (r = nd_layer_flush(q->file)))
			return r;
	}
	return 0;
}
