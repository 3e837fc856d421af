/* qcow2.c: the guest's disk inside a qcow2 image, decoded from the
 * container bytes of the layer under it, written from the format's
 * specification (QEMU's docs/interop/qcow2.txt): versions 2 and 3, every
 * cluster size from 512 B to 2 MiB, L1/L2 lookup through an L2-table cache
 * of its own, unallocated, zero and compressed (deflate or zstd) clusters,
 * extended L2 entries (subclusters), and reads of a backing file. The
 * header is read in qcow2-open.c, writes are in qcow2-write.c.
 *
 * Every offset read from the image is checked against the container's size
 * before it is used: a hostile image gives EIO or a clear error at open,
 * never a read outside the image. No lock is held across I/O: an L2 table
 * being loaded is marked so, and other readers of it wait for it. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "log.h"
#include "qcow2-int.h"

int qcow2_corrupt(const char *what, uint64_t v)
{
	errno = EIO;
	nd_error("qcow2: %s (%llu): the image is corrupt", what,
		 (unsigned long long)v);
	return -EIO;
}

bool nd_qcow2_probe(const void *buf)
{
	return be32(buf) == QCOW2_MAGIC;
}

/* Read LEN container bytes at OFF, refusing anything past its end. */
int qcow2_file_read(struct qcow2 *q, void *buf, size_t len, uint64_t off,
		     const char *what)
{
	if (off > q->file->size || len > q->file->size - off)
		return qcow2_corrupt(what, off);
	return nd_layer_pread(q->file, buf, len, off);
}

/* --- the L2-table cache ------------------------------------------------- */

/* The lists are of slot indices, SLOT_NIL ending them. */
static void lru_unlink(struct qcow2 *q, struct l2_slot *s)
{
	if (s->prev != SLOT_NIL)
		q->slots[s->prev].next = s->next;
	else
		q->lru = s->next;
	if (s->next != SLOT_NIL)
		q->slots[s->next].prev = s->prev;
	else
		q->mru = s->prev;
}

static void lru_push(struct qcow2 *q, struct l2_slot *s)
{
	size_t i = (size_t)(s - q->slots);
	s->prev = q->mru;
	s->next = SLOT_NIL;
	if (q->mru != SLOT_NIL)
		q->slots[q->mru].next = i;
	else
		q->lru = i;
	q->mru = i;
}

static size_t *chain(struct qcow2 *q, uint64_t off)
{
	uint64_t h = (off >> q->cluster_bits) * 0x9e3779b97f4a7c15ull;
	return &q->hash[(h >> 32) & q->hmask];
}

int qcow2_l2_cache_init(struct qcow2 *q, size_t nslots)
{
	size_t nb = 1;
	while (nb < nslots)
		nb <<= 1;
	q->nslots = nslots;
	q->hmask = nb - 1;
	if (!(q->slots = calloc(nslots, sizeof *q->slots)) ||
	    !(q->hash = malloc(nb * sizeof *q->hash)))
		return -ENOMEM;
	for (size_t i = 0; i < nb; i++)
		q->hash[i] = SLOT_NIL;
	q->lru = q->mru = SLOT_NIL;
	for (size_t i = 0; i < nslots; i++) {
		q->slots[i].next = i + 1 < nslots ? i + 1 : SLOT_NIL;
		if (!(q->slots[i].tbl = malloc(q->cluster_size)))
			return -ENOMEM;
	}
	q->free = 0;
	return 0;
}

static struct l2_slot *slot_find(struct qcow2 *q, uint64_t off)
{
	for (size_t i = *chain(q, off); i != SLOT_NIL; i = q->slots[i].hnext)
		if (q->slots[i].off == off)
			return &q->slots[i];
	return NULL;
}

/* Slot S leaves its hash chain and the LRU list for the free list. */
static void slot_drop(struct qcow2 *q, struct l2_slot *s)
{
	size_t i = (size_t)(s - q->slots), *p = chain(q, s->off);
	while (*p != i)
		p = &q->slots[*p].hnext;
	*p = s->hnext;
	if (s->state == SLOT_READY)
		lru_unlink(q, s);
	s->state = SLOT_EMPTY;
	s->next = q->free;
	q->free = i;
}

/* An empty slot, else the least recently used ready one emptied; NULL
 * if all are loading. */
static struct l2_slot *slot_victim(struct qcow2 *q)
{
	if (q->free == SLOT_NIL && q->lru != SLOT_NIL)
		slot_drop(q, &q->slots[q->lru]);
	if (q->free == SLOT_NIL)
		return NULL;
	struct l2_slot *s = &q->slots[q->free];
	q->free = s->next;
	return s;
}

/* Load the table at OFF into S (taken by slot_victim), the lock dropped
 * meanwhile; other readers of it wait for it. */
static int slot_load(struct qcow2 *q, struct l2_slot *s, uint64_t off)
{
	size_t n = q->cluster_size / 8, *head = chain(q, off);
	int r;

	s->state = SLOT_LOADING;
	s->off = off;
	s->hnext = *head;
	*head = (size_t)(s - q->slots);
	pthread_mutex_unlock(&q->lock);
	r = qcow2_file_read(q, s->tbl, q->cluster_size, off, "L2 table offset");
	for (size_t i = 0; r == 0 && i < n; i++)
		s->tbl[i] = be64((const uint8_t *)&s->tbl[i]);
	pthread_mutex_lock(&q->lock);
	if (r) {
		slot_drop(q, s);
	} else {
		s->state = SLOT_READY;
		lru_push(q, s);
	}
	pthread_cond_broadcast(&q->loaded);
	return r;
}

/* Entry IDX (and its subcluster bitmap) of the L2 table at OFF. */
int qcow2_l2_entry(struct qcow2 *q, uint64_t off, size_t idx, uint64_t *e,
		    uint64_t *bitmap)
{
	struct l2_slot *s;
	int r = 0;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		s = slot_find(q, off);
		if (s && s->state == SLOT_READY)
			break;
		if (!s && (s = slot_victim(q))) {
			if ((r = slot_load(q, s, off)))
				break;
			continue;
		}
		pthread_cond_wait(&q->loaded, &q->lock);
	}
	if (r == 0) {
		if (q->mru != (size_t)(s - q->slots)) {
			lru_unlink(q, s);
			lru_push(q, s);
		}
		*e = s->tbl[idx << q->extl2];
		*bitmap = q->extl2 ? s->tbl[(idx << 1) + 1] : 0;
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

void qcow2_l2_update(struct qcow2 *q, uint64_t off, size_t idx, uint64_t e,
		     uint64_t bitmap)
{
	struct l2_slot *s;
	pthread_mutex_lock(&q->lock);
	/* A copy being loaded may hold the old entry: wait, then fix it. */
	while ((s = slot_find(q, off)) && s->state == SLOT_LOADING)
		pthread_cond_wait(&q->loaded, &q->lock);
	if (s && s->state == SLOT_READY) {
		s->tbl[idx << q->extl2] = e;
		if (q->extl2)
			s->tbl[(idx << 1) + 1] = bitmap;
	}
	pthread_mutex_unlock(&q->lock);
}

void qcow2_l2_forget(struct qcow2 *q, uint64_t off)
{
	struct l2_slot *s;
	pthread_mutex_lock(&q->lock);
	while ((s = slot_find(q, off)) && s->state == SLOT_LOADING)
		pthread_cond_wait(&q->loaded, &q->lock);
	if (s)
		slot_drop(q, s);
	pthread_mutex_unlock(&q->lock);
}

/* --- mapping a guest offset -------------------------------------------- */

static void subclusters(struct qcow2 *q, uint64_t e, uint64_t bitmap,
			uint64_t in, struct extent *x)
{
	unsigned sc = (unsigned)(in >> q->sc_bits), end = sc;
	unsigned state = (bitmap >> sc & 1) | (bitmap >> (32 + sc) & 1) << 1;

	while (end < 32 &&
	       ((bitmap >> end & 1) | (bitmap >> (32 + end) & 1) << 1) == state)
		end++;
	x->len = ((uint64_t)end << q->sc_bits) - in;
	x->type = state & 1 ? EXT_DATA : state ? EXT_ZERO : EXT_UNALLOC;
	x->host = (e & L2E_OFFSET_MASK) + in;
}

int qcow2_map(struct qcow2 *q, uint64_t off, struct extent *x)
{
	uint64_t cl = off >> q->cluster_bits, in = off & (q->cluster_size - 1);
	uint64_t l1i = cl >> q->l2_bits, e, bitmap, l2off;
	int r;

	x->len = q->cluster_size - in;
	x->type = EXT_UNALLOC;
	if (l1i >= q->l1_size || !(l2off = q->l1[l1i] & L1E_OFFSET_MASK))
		return 0;
	if (l2off & (q->cluster_size - 1))
		return qcow2_corrupt("unaligned L2 table offset", l2off);
	r = qcow2_l2_entry(q, l2off, cl & ((1ull << q->l2_bits) - 1), &e, &bitmap);
	if (r)
		return r;
	if (e & L2E_COMPRESSED) {
		x->type = EXT_COMPRESSED;
		x->host = e & ~(3ull << 62);
		return 0;
	}
	if (q->extl2) {
		subclusters(q, e, bitmap, in, x);
	} else if (q->zero_flag && (e & L2E_ZERO)) {
		x->type = EXT_ZERO;
	} else if (e & L2E_OFFSET_MASK) {
		x->type = EXT_DATA;
		x->host = (e & L2E_OFFSET_MASK) + in;
	}
	if (x->type == EXT_DATA &&
	    ((x->host - in) & (q->cluster_size - 1) || !(e & L2E_OFFSET_MASK)))
		return qcow2_corrupt("unaligned data cluster offset", x->host - in);
	return 0;
}

/* --- reading ------------------------------------------------------------- */

static int inflate_deflate(const uint8_t *in, size_t inlen, uint8_t *out,
			   size_t outlen)
{
	z_stream z = { 0 };
	int r;

	if (inflateInit2(&z, -12) != Z_OK)
		return -1;
	z.next_in = (uint8_t *)in;
	z.avail_in = (uInt)inlen;
	z.next_out = out;
	z.avail_out = (uInt)outlen;
	r = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	return (r == Z_STREAM_END || r == Z_BUF_ERROR) && z.avail_out == 0 ? 0
									   : -1;
}

static int inflate_zstd(const uint8_t *in, size_t inlen, uint8_t *out,
			size_t outlen)
{
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	ZSTD_inBuffer ib = { in, inlen, 0 };
	ZSTD_outBuffer ob = { out, outlen, 0 };
	int r = -1;

	if (!dc)
		return -1;
	while (ob.pos < ob.size) {
		size_t z = ZSTD_decompressStream(dc, &ob, &ib);
		if (ZSTD_isError(z) || (z && ib.pos == ib.size && ob.pos < ob.size))
			goto out;
		if (z == 0)
			break;
	}
	r = ob.pos == ob.size ? 0 : -1;
out:
	ZSTD_freeDCtx(dc);
	return r;
}

/* Decompress the cluster DESC into q->cbuf (called with q->lock held:
 * compressed clusters are rare enough to be read one at a time). */
static int load_compressed(struct qcow2 *q, uint64_t desc)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t coff = desc & ((1ull << x) - 1);
	uint64_t nsec = desc >> x & ((1ull << (q->cluster_bits - 8)) - 1);
	uint64_t clen = (nsec + 1) * 512 - (coff & 511);
	uint8_t *in;
	int r;

	if (q->cdesc == desc)
		return 0;
	if (coff >= q->file->size)
		return qcow2_corrupt("compressed cluster offset", coff);
	if (clen > q->file->size - coff)
		clen = q->file->size - coff;
	if (!(in = malloc(clen)))
		return -ENOMEM;
	q->cdesc = 0;
	r = qcow2_file_read(q, in, clen, coff, "compressed cluster offset");
	if (r == 0 &&
	    (q->compression ? inflate_zstd : inflate_deflate)(
		    in, clen, q->cbuf, q->cluster_size) == -1)
		r = qcow2_corrupt("compressed cluster does not decompress", coff);
	free(in);
	if (r == 0)
		q->cdesc = desc;
	return r;
}

static int read_compressed(struct qcow2 *q, uint8_t *buf, size_t len,
			   uint64_t off, uint64_t desc)
{
	int r;
	pthread_mutex_lock(&q->lock);
	r = load_compressed(q, desc);
	if (r == 0)
		memcpy(buf, q->cbuf + (off & (q->cluster_size - 1)), len);
	pthread_mutex_unlock(&q->lock);
	return r;
}

static int read_unallocated(struct qcow2 *q, uint8_t *buf, size_t len,
			    uint64_t off)
{
	size_t n = 0;
	if (q->backing && off < q->backing->size) {
		n = q->backing->size - off < len ? (size_t)(q->backing->size - off)
						 : len;
		int r = nd_layer_pread(q->backing, buf, n, off);
		if (r)
			return r;
	}
	memset(buf + n, 0, len - n);
	return 0;
}

static int read_extent(struct qcow2 *q, uint8_t *buf, size_t len,
		       uint64_t off, const struct extent *x)
{
	switch (x->type) {
	case EXT_ZERO: memset(buf, 0, len); return 0;
	case EXT_UNALLOC: return read_unallocated(q, buf, len, off);
	case EXT_COMPRESSED: return read_compressed(q, buf, len, off, x->host);
	case EXT_DATA: break;
	}
	return qcow2_file_read(q, buf, len, x->host, "data cluster offset");
}

/* One run of like extents: read into BUF, or (REF set) appended to it by
 * reference, BUF then being its scratch. */
static int run_extent(struct qcow2 *q, struct nd_layer_ref *ref, uint8_t *buf,
		      size_t len, uint64_t off, const struct extent *x)
{
	if (!ref)
		return read_extent(q, buf, len, off, x);
	if (x->type == EXT_DATA) {
		if (x->host > q->file->size || len > q->file->size - x->host)
			return qcow2_corrupt("data cluster offset", x->host);
		return nd_layer_read_ref(q->file, len, x->host, buf, ref);
	}
	int r = read_extent(q, buf, len, off, x);
	return r ? r : nd_layer_ref_add(ref, buf, len);
}

/* Map [off, off+len) and read it run by run: extents contiguous in the
 * container (or all zeroes, or all unallocated) go as one. */
static int walk_extents(struct qcow2 *q, struct nd_layer_ref *ref,
			uint8_t *buf, size_t len, uint64_t off)
{
	struct extent run = { 0 }; /* extents merged into one read */
	uint64_t run_off = 0;
	int r;

	while (len || run.len) {
		struct extent x = { 0 };
		if (len && (r = qcow2_map(q, off, &x)))
			return r;
		if (x.len > len)
			x.len = len;
		/* Contiguous data in the container: one read for all of it. */
		if (len && run.len && x.type == run.type &&
		    ((x.type == EXT_DATA && x.host == run.host + run.len) ||
		     x.type == EXT_ZERO || x.type == EXT_UNALLOC)) {
			run.len += x.len;
		} else {
			if (run.len &&
			    (r = run_extent(q, ref, buf - run.len, run.len,
					    run_off, &run)))
				return r;
			run = x;
			run_off = off;
		}
		buf += x.len;
		off += x.len;
		len -= x.len;
	}
	return 0;
}

int qcow2_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	struct qcow2 *q = (struct qcow2 *)l;
	/* Shared: a cluster this read was mapped to is not reused under it. */
	pthread_rwlock_rdlock(&q->reading);
	int r = walk_extents(q, NULL, buf, len, off);
	pthread_rwlock_unlock(&q->reading);
	return r;
}

static void unlock_reading(struct nd_layer_hold *h)
{
	pthread_rwlock_unlock(h->owner);
}

/* The data clusters' bytes as the cache holds them, no copy. The clusters
 * stay unfreed (the lock shared) until the reply is sent: a cluster freed
 * and reused meanwhile would show another guest offset's bytes. */
int qcow2_read_ref(struct nd_layer *l, size_t len, uint64_t off,
		   void *scratch, struct nd_layer_ref *ref)
{
	struct qcow2 *q = (struct qcow2 *)l;
	struct nd_layer_hold h = { .release = unlock_reading,
				   .owner = &q->reading };
	pthread_rwlock_rdlock(&q->reading);
	int r = nd_layer_ref_hold(ref, &h);
	if (r) {
		pthread_rwlock_unlock(&q->reading);
		return r;
	}
	return walk_extents(q, ref, scratch, len, off);
}

static void unpin_mapped(struct nd_layer_pin *p)
{
	struct qcow2 *q = p->owner;
	pthread_mutex_lock(&q->map_mu);
	if (--q->mapped == 0)
		pthread_cond_broadcast(&q->map_cv);
	pthread_mutex_unlock(&q->map_mu);
}

void qcow2_mapped_drain(struct qcow2 *q)
{
	pthread_mutex_lock(&q->map_mu);
	while (q->mapped)
		pthread_cond_wait(&q->map_cv, &q->map_mu);
	pthread_mutex_unlock(&q->map_mu);
}

/* [off, off+len) as one run of data clusters contiguous in the container,
 * which holds them in the cache under it: the caller reads the cache
 * itself (a miss then waits for no thread), the clusters counted as
 * mapped until it lets go of PIN. */
int qcow2_map_range(struct nd_layer *l, size_t len, uint64_t off,
		    struct nd_cache **cache, uint64_t *coff,
		    struct nd_layer_pin *pin)
{
	struct qcow2 *q = (struct qcow2 *)l;
	struct nd_layer_pin below;
	struct extent x;
	uint64_t got = 0, host = 0;
	int r = 0;

	pthread_rwlock_rdlock(&q->reading);
	while (got < len && (r = qcow2_map(q, off + got, &x)) == 0 &&
	       x.type == EXT_DATA) {
		if (got == 0)
			host = x.host;
		else if (x.host != host + got)
			break;
		got += x.len;
	}
	if (r == 0 && got >= len && host <= q->file->size &&
	    len <= q->file->size - host &&
	    (r = nd_layer_map(q->file, len, host, cache, coff, &below)) == 1 &&
	    below.release) { /* only the cache's own bytes, unpinned */
		nd_layer_unpin(&below);
		r = 0;
	}
	if (r == 1) {
		pthread_mutex_lock(&q->map_mu);
		q->mapped++;
		pthread_mutex_unlock(&q->map_mu);
		*pin = (struct nd_layer_pin){ unpin_mapped, q };
	}
	pthread_rwlock_unlock(&q->reading);
	return r < 0 ? 0 : r; /* an error is said again by read_ref */
}

void qcow2_close(struct nd_layer *l)
{
	struct qcow2 *q = (struct qcow2 *)l;
	/* An entry opened afresh closes its old stack while reads mapped
	 * through it may still be in flight: they let go of it first. */
	qcow2_mapped_drain(q);
	for (size_t i = 0; q->slots && i < q->nslots; i++)
		free(q->slots[i].tbl);
	free(q->slots);
	free(q->hash);
	free(q->l1);
	free(q->cbuf);
	free(q->rtable);
	free(q->rbuf);
	free(q->unref);
	free(q->meta);
	nd_layer_close(q->backing);
	nd_layer_close(q->file);
	pthread_mutex_destroy(&q->lock);
	pthread_mutex_destroy(&q->meta_lock);
	pthread_rwlock_destroy(&q->reading);
	pthread_mutex_destroy(&q->map_mu);
	pthread_cond_destroy(&q->map_cv);
	pthread_cond_destroy(&q->loaded);
	free(q);
}


