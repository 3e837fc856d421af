/* qcow2-write.c: writing a qcow2 image: copy-on-write of partial
 * clusters (from the backing file, a compressed or shared cluster, or
 * zeroes), new L2 tables and copies of those a snapshot shares, L1 and L2
 * updates, zero clusters; with extended L2 entries, subclusters: a write
 * allocates only the subclusters it touches (the others of the cluster
 * keep reading the backing file), and zeroes become subcluster zero bits.
 * The refcounts are in qcow2-refcount.c.
 *
 * Crash consistency as QEMU keeps it, by write order alone: the refcounts
 * of newly allocated clusters are made durable before any L1 or L2 entry
 * points at them, and a new L2 table is durable before the L1 entry that
 * names it. A crash at any moment can leak clusters (refcount 1, no
 * reference: `qemu-img check` lists leaks, which are harmless) but never
 * leave a reference to a cluster whose refcount is 0. A data cluster of
 * the image's own that is zeroed stays allocated (a preallocated zero
 * cluster, or subclusters with their zero bits) and the next write reuses
 * it; one that was replaced because a snapshot shares it or it is
 * compressed loses its reference only after the next flush made the new
 * entry durable (a crash before: a leak, never a corruption); an L2
 * table a snapshot shares is copied and its refcount dropped once L1 no
 * longer names it. Data written is durable after
 * flush (the container's flush), like a disk's write cache.
 *
 * Every write holds meta_lock for its whole duration (allocation, data
 * and metadata), so writers never race on an allocation; readers do not
 * take it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "qcow2-int.h"

/* --- writing clusters ---------------------------------------------------- */

#define SC_ALL 0xffffffffull /* the 32 subclusters of a cluster */

/* What to do with one guest cluster of a write. */
struct step {
	uint64_t c;	    /* guest cluster */
	uint64_t in, n;	    /* bytes of it written */
	uint64_t e, bitmap; /* its L2 entry as it was (bitmap: extended L2) */
	bool inplace;	    /* an allocated cluster of its own: overwrite */
	bool fresh;	    /* a cluster allocated for it (the old one, if
			     * any, loses a reference) */
	uint64_t host;	    /* where its data goes: a new cluster, its own,
			     * or a preallocated zero cluster's */
};

/* L1 entry L1I names an L2 table a snapshot shares (no COPIED bit): the
 * active image gets a copy of its own, durable before L1 names it; the
 * old table loses its reference at the next flush. */
static int cow_l2(struct qcow2 *q, uint64_t l1i)
{
	uint64_t old = q->l1[l1i] & L1E_OFFSET_MASK, t;
	uint8_t *tbl = malloc(q->cluster_size), be[8];
	int r;

	if (!tbl)
		return -ENOMEM;
	if ((r = qcow2_file_read(q, tbl, q->cluster_size, old,
				 "L2 table offset")) ||
	    (r = qcow2_alloc_cluster(q, &t)) ||
	    (r = qcow2_write_at(q, tbl, q->cluster_size, t)) ||
	    (r = nd_layer_flush(q->file)))
		goto out;
	qcow2_l2_forget(q, t);
	put_be64(be, t | L1E_COPIED);
	if ((r = qcow2_write_at(q, be, 8, q->l1_off + l1i * 8)) ||
	    (r = nd_layer_flush(q->file)))
		goto out;
	q->l1[l1i] = t | L1E_COPIED;
	q->meta_stale = true;
	r = qcow2_unref_later(q, old);
out:
	free(tbl);
	return r;
}

/* Cluster C's L2 table, one of the active image's own (copied when a
 * snapshot shares it), and its entry (all 0 when there is no table). */
static int lookup(struct qcow2 *q, uint64_t c, uint64_t *l2off, uint64_t *e,
		  uint64_t *bitmap)
{
	uint64_t l1i = c >> q->l2_bits;
	int r;
	*e = *bitmap = 0;
	if (l1i >= q->l1_size)
		return qcow2_corrupt("write past the L1 table, cluster", c);
	*l2off = q->l1[l1i] & L1E_OFFSET_MASK;
	if (!*l2off)
		return 0;
	if (!(q->l1[l1i] & L1E_COPIED) && (r = cow_l2(q, l1i)))
		return r;
	*l2off = q->l1[l1i] & L1E_OFFSET_MASK;
	return qcow2_l2_entry(q, *l2off, c & ((1ull << q->l2_bits) - 1), e,
			      bitmap);
}

static bool own_cluster(const struct qcow2 *q, uint64_t e)
{
	return (e & L2E_COPIED) && !(e & L2E_COMPRESSED) &&
	       (e & L2E_OFFSET_MASK) && (q->extl2 || !(e & L2E_ZERO));
}

/* A zero cluster that keeps a host cluster of its own (v3): a write
 * fills it whole and clears the flag. */
static bool prealloc_zero(const struct qcow2 *q, uint64_t e)
{
	return q->zero_flag && (e & L2E_ZERO) && (e & L2E_COPIED) &&
	       !(e & L2E_COMPRESSED) && (e & L2E_OFFSET_MASK);
}

/* --- subclusters (extended L2 entries) ----------------------------------- */

/* Subclusters [lo, hi) as bits. */
static uint64_t sc_bits(unsigned lo, unsigned hi)
{
	return hi > lo ? ((1ull << hi) - 1) & ~((1ull << lo) - 1) : 0;
}

/* The subclusters that bytes [IN, IN+N) of a cluster touch. */
static uint64_t sc_touched(const struct qcow2 *q, uint64_t in, uint64_t n)
{
	return sc_bits((unsigned)(in >> q->sc_bits),
		       (unsigned)((in + n - 1) >> q->sc_bits) + 1);
}

/* ... and those they cover whole. */
static uint64_t sc_whole(const struct qcow2 *q, uint64_t in, uint64_t n)
{
	uint64_t m = (1ull << q->sc_bits) - 1;
	return sc_bits((unsigned)((in + m) >> q->sc_bits),
		       (unsigned)((in + n) >> q->sc_bits));
}

/* The subclusters holding data in entry E (a compressed cluster: all). */
static uint64_t sc_alloc(uint64_t e, uint64_t bitmap)
{
	return e & L2E_COMPRESSED ? SC_ALL : bitmap & SC_ALL;
}

/* Read into OUT the subclusters of NEED of step S as they read now (runs
 * of them at once; past the disk's end: zeroes). */
static int sc_read(struct qcow2 *q, uint8_t *out, uint64_t need,
		   const struct step *s)
{
	uint64_t start = s->c << q->cluster_bits;
	for (unsigned i = 0, j; i < 32; i = j) {
		for (j = i; j < 32 && (need >> j & 1) == (need >> i & 1); j++)
			;
		if (!(need >> i & 1))
			continue;
		uint64_t off = start + ((uint64_t)i << q->sc_bits);
		uint64_t len = (uint64_t)(j - i) << q->sc_bits;
		uint64_t have = off >= q->l.size	? 0
				: q->l.size - off < len ? q->l.size - off
							: len;
		memset(out + (off - start) + have, 0, len - have);
		int r = have
			    ? qcow2_pread(&q->l, out + (off - start), have, off)
			    : 0;
		if (r)
			return r;
	}
	return 0;
}

/* Write step S of an image with subclusters: the subclusters it touches
 * and, into a new cluster, those of the old one that hold data (moved
 * with it). What it does not write of them is read as it reads now. */
static int sc_write(struct qcow2 *q, const uint8_t *buf, const struct step *s,
		    uint8_t *tmp)
{
	uint64_t w = sc_touched(q, s->in, s->n);
	uint64_t all = w | (s->inplace ? 0 : sc_alloc(s->e, s->bitmap));
	uint64_t need = all & ~sc_whole(q, s->in, s->n);
	unsigned lo = (unsigned)__builtin_ctzll(all);
	unsigned hi = 64 - (unsigned)__builtin_clzll(all);
	uint64_t from = (uint64_t)lo << q->sc_bits,
		 to = (uint64_t)hi << q->sc_bits;
	int r;

	if (!need && all == w) /* whole subclusters, nothing around them */
		return qcow2_write_at(q, buf, s->n, s->host + s->in);
	memset(tmp, 0, q->cluster_size); /* the gaps: never marked allocated */
	if ((r = sc_read(q, tmp, need, s)))
		return r;
	memcpy(tmp + s->in, buf, s->n);
	return qcow2_write_at(q, tmp + from, to - from, s->host + from);
}

/* The bitmap of step S's entry once its data is written. */
static uint64_t sc_bitmap_after(const struct qcow2 *q, const struct step *s)
{
	uint64_t w = sc_touched(q, s->in, s->n);
	uint64_t zero = s->e & L2E_COMPRESSED ? 0 : s->bitmap >> 32;
	return (sc_alloc(s->e, s->bitmap) | w) | (zero & ~w) << 32;
}

/* --- data and entries ---------------------------------------------------- */

/* The bytes of guest cluster C as they read now, with BUF's N bytes at
 * IN laid over them (a whole cluster; past the disk's end: zeroes). */
static int cow_fill(struct qcow2 *q, uint8_t *out, const uint8_t *buf,
		    const struct step *s)
{
	uint64_t start = s->c << q->cluster_bits;
	uint64_t have = q->l.size - start < q->cluster_size ? q->l.size - start
							    : q->cluster_size;
	memset(out, 0, q->cluster_size);
	int r = qcow2_pread(&q->l, out, have, start);
	if (r == 0)
		memcpy(out + s->in, buf, s->n);
	return r;
}

/* Step S's bytes go to the container as they are (no copy-on-write). */
static bool direct(const struct qcow2 *q, const struct step *s)
{
	return !q->extl2 && (s->inplace || s->n == q->cluster_size);
}

/* Write the data of every step: whole clusters for new ones, or with
 * subclusters what sc_write says. */
static int write_data(struct qcow2 *q, const uint8_t *buf,
		      const struct step *st, size_t n)
{
	uint8_t *tmp = NULL;
	int r = 0;
	for (size_t i = 0; i < n && r == 0; buf += st[i].n, i++) {
		const struct step *s = &st[i];
		if (direct(q, s)) {
			/* Steps contiguous in the container: one write. */
			uint64_t at = s->host + s->in * !!s->inplace;
			size_t len = s->n;
			while (i + 1 < n && direct(q, &st[i + 1]) &&
			       st[i + 1].host + st[i + 1].in * !!st[i + 1].inplace ==
				       at + len) {
				len += st[i + 1].n;
				i++;
			}
			r = qcow2_write_at(q, buf, len, at);
			buf += len - st[i].n;
			continue;
		}
		if (!tmp && !(tmp = malloc(q->cluster_size)))
			return -ENOMEM;
		if (q->extl2)
			r = sc_write(q, buf, s, tmp);
		else if ((r = cow_fill(q, tmp, buf, s)) == 0)
			r = qcow2_write_at(q, tmp, q->cluster_size, s->host);
	}
	free(tmp);
	return r;
}

/* A new L2 table holding only entry IDX (E, BITMAP), durable, then named
 * in L1 entry L1I. */
static int new_l2(struct qcow2 *q, uint64_t l1i, uint64_t idx,
		  const uint8_t *ent, size_t esz)
{
	uint8_t *tbl = calloc(1, q->cluster_size), be[8];
	uint64_t t;
	int r;
	if (!tbl)
		return -ENOMEM;
	memcpy(tbl + idx * esz, ent, esz);
	if ((r = qcow2_alloc_cluster(q, &t)) || (r = nd_layer_flush(q->file)) ||
	    (r = qcow2_write_at(q, tbl, q->cluster_size, t)) ||
	    (r = nd_layer_flush(q->file)))
		goto out;
	put_be64(be, t | L1E_COPIED);
	qcow2_l2_forget(q, t);
	if ((r = qcow2_write_at(q, be, 8, q->l1_off + l1i * 8)) == 0) {
		q->l1[l1i] = t | L1E_COPIED;
		q->meta_stale = true;
	}
out:
	free(tbl);
	return r;
}

/* Point cluster C's entry at E (and with subclusters, BITMAP): a new L2
 * table when it has none, else the entry in the table. */
static int set_entry(struct qcow2 *q, uint64_t c, uint64_t e, uint64_t bitmap)
{
	uint64_t l1i = c >> q->l2_bits, idx = c & ((1ull << q->l2_bits) - 1);
	uint64_t l2off = q->l1[l1i] & L1E_OFFSET_MASK;
	size_t esz = q->extl2 ? 16 : 8;
	uint8_t be[16];
	int r;

	put_be64(be, e);
	put_be64(be + 8, bitmap);
	if (!l2off)
		return new_l2(q, l1i, idx, be, esz);
	if ((r = qcow2_write_at(q, be, esz, l2off + idx * esz)) == 0)
		qcow2_l2_update(q, l2off, idx, e, bitmap);
	return r;
}

/* Plan the clusters of [off, off+len): which are overwritten in place and
 * which get a new cluster (allocated here; their refcounts are durable
 * when this returns). */
static int plan(struct qcow2 *q, size_t len, uint64_t off, struct step *st,
		size_t *n)
{
	bool allocated = false;
	int r;
	for (*n = 0; len; (*n)++) {
		struct step *s = &st[*n];
		uint64_t l2off;
		s->c = off >> q->cluster_bits;
		s->in = off & (q->cluster_size - 1);
		s->n = q->cluster_size - s->in < len ? q->cluster_size - s->in
						     : len;
		if ((r = lookup(q, s->c, &l2off, &s->e, &s->bitmap)))
			return r;
		if (q->extl2 && !(s->e & (L2E_OFFSET_MASK | L2E_COMPRESSED)) &&
		    (s->bitmap & SC_ALL))
			return qcow2_corrupt("allocated subclusters without a "
					     "cluster, guest cluster",
					     s->c);
		s->inplace = own_cluster(q, s->e);
		bool reuse = s->inplace || prealloc_zero(q, s->e);
		if (reuse) {
			s->host = s->e & L2E_OFFSET_MASK;
			/* A data cluster that is metadata too, or that another
			 * cluster of this write uses as well: corrupt. */
			if (qcow2_is_metadata(q, s->host))
				return qcow2_corrupt("a data cluster overlaps "
						     "metadata, offset",
						     s->host);
			for (size_t k = 0; k < *n; k++)
				if (st[k].host == s->host)
					return qcow2_corrupt(
					    "two clusters share "
					    "the data cluster",
					    s->host);
		} else if ((r = qcow2_alloc_cluster(q, &s->host))) {
			return r;
		}
		s->fresh = !reuse;
		allocated |= !reuse;
		off += s->n;
		len -= s->n;
	}
	return allocated ? nd_layer_flush(q->file) : 0;
}

/* After the data: the entries of new clusters, and with subclusters the
 * bitmaps that changed. */
static int set_entries(struct qcow2 *q, const struct step *st, size_t n)
{
	int r = 0;
	for (size_t i = 0; r == 0 && i < n; i++) {
		uint64_t bm = q->extl2 ? sc_bitmap_after(q, &st[i]) : 0;
		if (!st[i].inplace || bm != st[i].bitmap)
			r = set_entry(q, st[i].c, st[i].host | L2E_COPIED, bm);
		if (r == 0 && st[i].fresh)
			r = qcow2_unref_later(q, st[i].e);
	}
	return r;
}

int qcow2_pwrite(struct nd_layer *l, const void *buf, size_t len, uint64_t off)
{
	struct qcow2 *q = (struct qcow2 *)l;
	size_t max = len / q->cluster_size + 2, n = 0;
	struct step *st = malloc(max * sizeof *st);
	int r;

	if (!st)
		return -ENOMEM;
	pthread_mutex_lock(&q->meta_lock);
	r = plan(q, len, off, st, &n);
	if (r == 0)
		r = write_data(q, buf, st, n);
	if (r == 0)
		r = set_entries(q, st, n);
	pthread_mutex_unlock(&q->meta_lock);
	free(st);
	return r;
}

/* --- zeroes -------------------------------------------------------------- */

/* Zero bytes [IN, IN+N) of cluster C with subcluster zero bits where they
 * cover whole subclusters (the disk's short last one counts whole); the
 * bytes left for writing are *HEAD at IN and *TAIL at the end. Called
 * with meta_lock held. */
static int sc_zero(struct qcow2 *q, uint64_t c, uint64_t in, uint64_t n,
		   uint64_t *head, uint64_t *tail)
{
	uint64_t start = c << q->cluster_bits, l2off, e, bm;
	uint64_t sc = 1ull << q->sc_bits;
	uint64_t end = start + in + n == q->l.size
			   ? (in + n + sc - 1) & ~(sc - 1)
			   : in + n;
	uint64_t z = sc_whole(q, in, end - in);
	int r;

	if ((r = lookup(q, c, &l2off, &e, &bm)))
		return r;
	*head = *tail = 0;
	if (!l2off && !q->backing)
		return 0; /* reads as zeroes already */
	*head = n;
	if (!z)
		return 0;
	unsigned lo = (unsigned)__builtin_ctzll(z);
	unsigned hi = 64 - (unsigned)__builtin_clzll(z);
	*head = ((uint64_t)lo << q->sc_bits) - in;
	*tail = in + n > ((uint64_t)hi << q->sc_bits)
		    ? in + n - ((uint64_t)hi << q->sc_bits)
		    : 0;
	if (own_cluster(q, e) || !(e & (L2E_OFFSET_MASK | L2E_COMPRESSED)))
		return set_entry(q, c, e,
				 (bm & SC_ALL & ~z) | ((bm >> 32) | z) << 32);
	if (z == SC_ALL) { /* shared or compressed: let go of it */
		if ((r = set_entry(q, c, 0, SC_ALL << 32)) == 0)
			r = qcow2_unref_later(q, e);
		return r;
	}
	*head = n; /* part of a shared cluster: written, so copied */
	*tail = 0;
	return 0;
}

/* Zero [IN, IN+N) of cluster C without writing data where the metadata
 * can say it; the bytes that still need writing are *HEAD at IN and *TAIL
 * at the end (without subclusters: all or nothing). Called with meta_lock
 * held. */
static int zero_meta(struct qcow2 *q, uint64_t c, uint64_t in, uint64_t n,
		     uint64_t *head, uint64_t *tail)
{
	uint64_t l2off, e, bm;
	/* The whole cluster, or all of the disk's short last one. */
	bool whole = in == 0 && (n == q->cluster_size ||
				 (c << q->cluster_bits) + n == q->l.size);
	int r;

	if (q->extl2)
		return sc_zero(q, c, in, n, head, tail);
	*head = n;
	*tail = 0;
	if (!whole)
		return 0;
	if ((r = lookup(q, c, &l2off, &e, &bm)))
		return r;
	if ((!q->backing && !l2off) ||
	    (l2off && !q->zero_flag && !e && !q->backing) ||
	    (q->zero_flag && (e & L2E_ZERO) && !(e & L2E_COMPRESSED))) {
		*head = 0; /* reads as zeroes already */
		return 0;
	}
	if (!q->zero_flag)
		return 0;
	/* A cluster of its own stays allocated, as preallocated zeroes: the
	 * next write reuses it instead of leaking it. */
	uint64_t keep =
	    own_cluster(q, e) ? e & (L2E_OFFSET_MASK | L2E_COPIED) : 0;
	if ((r = set_entry(q, c, keep | L2E_ZERO, 0)) == 0) {
		*head = 0;
		if (!keep)
			r = qcow2_unref_later(q, e);
	}
	return r;
}

/* Whole clusters of a v3 image become zero clusters, whole subclusters
 * get their zero bits (no data written); the rest is written as zeroes. */
int qcow2_zero(struct nd_layer *l, uint64_t len, uint64_t off)
{
	struct qcow2 *q = (struct qcow2 *)l;
	uint8_t *z = calloc(1, q->cluster_size);
	int r = z ? 0 : -ENOMEM;

	while (r == 0 && len) {
		uint64_t in = off & (q->cluster_size - 1),
			 c = off >> q->cluster_bits;
		uint64_t n =
		    q->cluster_size - in < len ? q->cluster_size - in : len;
		uint64_t head, tail;
		pthread_mutex_lock(&q->meta_lock);
		r = zero_meta(q, c, in, n, &head, &tail);
		pthread_mutex_unlock(&q->meta_lock);
		if (r == 0 && head)
			r = qcow2_pwrite(l, z, (size_t)head, off);
		if (r == 0 && tail)
			r = qcow2_pwrite(l, z, (size_t)tail, off + n - tail);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

int qcow2_flush(struct nd_layer *l)
{
	struct qcow2 *q = (struct qcow2 *)l;
	int r;
	pthread_mutex_lock(&q->meta_lock);
	r = q->nunref ? qcow2_unref_flush(q) : 1;
	pthread_mutex_unlock(&q->meta_lock);
	return r == 1 ? nd_layer_flush(q->file) : r;
}
