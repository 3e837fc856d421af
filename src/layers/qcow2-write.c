/* qcow2-write.c: writing a qcow2 image: cluster allocation with refcount
 * updates, copy-on-write of partial clusters (from the backing file, a
 * compressed or shared cluster, or zeroes), new L2 tables, L1 and L2
 * updates, and zero clusters.
 *
 * Crash consistency as QEMU keeps it, by write order alone: the refcounts
 * of newly allocated clusters are made durable before any L1 or L2 entry
 * points at them, and a new L2 table is durable before the L1 entry that
 * names it. A crash at any moment can leak clusters (refcount 1, no
 * reference: `qemu-img check` lists leaks, which are harmless) but never
 * leave a reference to a cluster whose refcount is 0. A cluster that was
 * replaced (shared with a snapshot, compressed, or zeroed) keeps its old
 * refcount: a leak, never a corruption. Data written is durable after
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

/* What to do with one guest cluster of a write. */
struct step {
	uint64_t c;	    /* guest cluster */
	uint64_t in, n;	    /* bytes of it written */
	uint64_t l2off;	    /* its L2 table (0: a new one, see l2new) */
	bool inplace;	    /* an allocated cluster of its own: overwrite */
	uint64_t host;	    /* where its data goes */
};

/* Cluster C's L2 table and entry (0, 0 when there is no table). */
static int lookup(struct qcow2 *q, uint64_t c, uint64_t *l2off, uint64_t *e)
{
	uint64_t l1i = c >> q->l2_bits, bitmap;
	*e = 0;
	*l2off = l1i < q->l1_size ? q->l1[l1i] & L1E_OFFSET_MASK : 0;
	if (l1i >= q->l1_size)
		return qcow2_corrupt("write past the L1 table, cluster", c);
	if (!*l2off)
		return 0;
	return qcow2_l2_entry(q, *l2off, c & ((1ull << q->l2_bits) - 1), e,
			      &bitmap);
}

static bool own_cluster(uint64_t e)
{
	return (e & L2E_COPIED) && !(e & L2E_COMPRESSED) &&
	       (e & L2E_OFFSET_MASK) && !(e & L2E_ZERO);
}

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

/* Write the data of every step, whole clusters for new ones. */
static int write_data(struct qcow2 *q, const uint8_t *buf,
		      const struct step *st, size_t n)
{
	uint8_t *tmp = NULL;
	int r = 0;
	for (size_t i = 0; i < n && r == 0; buf += st[i].n, i++) {
		if (st[i].inplace || st[i].n == q->cluster_size) {
			r = qcow2_write_at(q, buf, st[i].n, st[i].host + st[i].in *
							       !!st[i].inplace);
			continue;
		}
		if (!tmp && !(tmp = malloc(q->cluster_size)))
			return -ENOMEM;
		if ((r = cow_fill(q, tmp, buf, &st[i])) == 0)
			r = qcow2_write_at(q, tmp, q->cluster_size, st[i].host);
	}
	free(tmp);
	return r;
}

/* Point cluster C's entry at E: a new L2 table when it has none (made
 * durable, then named in L1), else the 8 bytes in the table. */
static int set_entry(struct qcow2 *q, uint64_t c, uint64_t e)
{
	uint64_t l1i = c >> q->l2_bits, idx = c & ((1ull << q->l2_bits) - 1);
	uint64_t l2off = q->l1[l1i] & L1E_OFFSET_MASK, t;
	uint8_t be[8];
	int r;

	put_be64(be, e);
	if (l2off) {
		if ((r = qcow2_write_at(q, be, 8, l2off + idx * 8)) == 0)
			qcow2_l2_update(q, l2off, idx, e);
		return r;
	}
	uint8_t *tbl = calloc(1, q->cluster_size);
	if (!tbl)
		return -ENOMEM;
	memcpy(tbl + idx * 8, be, 8);
	if ((r = qcow2_alloc_cluster(q, &t)) || (r = nd_layer_flush(q->file)) ||
	    (r = qcow2_write_at(q, tbl, q->cluster_size, t)) ||
	    (r = nd_layer_flush(q->file)))
		goto out;
	put_be64(be, t | L1E_COPIED);
	if ((r = qcow2_write_at(q, be, 8, q->l1_off + l1i * 8)) == 0)
		q->l1[l1i] = t | L1E_COPIED;
out:
	free(tbl);
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
		uint64_t e;
		s->c = off >> q->cluster_bits;
		s->in = off & (q->cluster_size - 1);
		s->n = q->cluster_size - s->in < len ? q->cluster_size - s->in
						     : len;
		if ((r = lookup(q, s->c, &s->l2off, &e)))
			return r;
		s->inplace = own_cluster(e);
		if (s->inplace) {
			s->host = e & L2E_OFFSET_MASK;
			/* A data cluster that is metadata too, or that another
			 * cluster of this write uses as well: corrupt. */
			if (qcow2_is_metadata(q, s->host))
				return qcow2_corrupt("a data cluster overlaps "
						     "metadata, offset",
						     s->host);
			for (size_t k = 0; k < *n; k++)
				if (st[k].host == s->host)
					return qcow2_corrupt("two clusters share "
							     "the data cluster",
							     s->host);
		} else if ((r = qcow2_alloc_cluster(q, &s->host))) {
			return r;
		}
		allocated |= !s->inplace;
		off += s->n;
		len -= s->n;
	}
	return allocated ? nd_layer_flush(q->file) : 0;
}

int qcow2_pwrite(struct nd_layer *l, const void *buf, size_t len,
		 uint64_t off)
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
	for (size_t i = 0; r == 0 && i < n; i++)
		if (!st[i].inplace)
			r = set_entry(q, st[i].c, st[i].host | L2E_COPIED);
	pthread_mutex_unlock(&q->meta_lock);
	free(st);
	return r;
}

/* Whole clusters of a v3 image become zero clusters (no data written);
 * the rest is written as zeroes. */
int qcow2_zero(struct nd_layer *l, uint64_t len, uint64_t off)
{
	struct qcow2 *q = (struct qcow2 *)l;
	uint8_t *z = calloc(1, q->cluster_size);
	int r = z ? 0 : -ENOMEM;

	while (r == 0 && len) {
		uint64_t in = off & (q->cluster_size - 1), c = off >> q->cluster_bits;
		uint64_t n = q->cluster_size - in < len ? q->cluster_size - in : len;
		uint64_t l2off, e;
		/* The whole cluster, or all of the disk's short last one. */
		bool whole = in == 0 && (n == q->cluster_size || off + n == q->l.size);
		pthread_mutex_lock(&q->meta_lock);
		r = lookup(q, c, &l2off, &e);
		bool done = r || (whole && !q->backing && !l2off) ||
			    (whole && l2off && !q->zero_flag && !e && !q->backing);
		if (!done && whole && q->zero_flag && l2off) {
			r = set_entry(q, c, L2E_ZERO);
			done = true;
		}
		pthread_mutex_unlock(&q->meta_lock);
		if (!done)
			r = qcow2_pwrite(l, z, (size_t)n, off);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

int qcow2_flush(struct nd_layer *l)
{
	struct qcow2 *q = (struct qcow2 *)l;
	return nd_layer_flush(q->file);
}
