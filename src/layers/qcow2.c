/* qcow2.c: the guest's disk inside a qcow2 image, decoded from the
 * container bytes of the layer under it, written from the format's
 * specification (QEMU's docs/interop/qcow2.txt): versions 2 and 3, every
 * cluster size from 512 B to 2 MiB, L1/L2 lookup through an L2-table cache
 * of its own, unallocated, zero and compressed (deflate or zstd) clusters,
 * extended L2 entries (subclusters), internal snapshots shown read-only,
 * and a backing file opened by the caller's hook.
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
#define EXT_BACKING_FORMAT 0xe2792acau
#define MAX_L1_ENTRIES (32u << 20) / 8 /* QEMU's limit: a 32 MiB L1 */

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

struct l2_slot {
	uint64_t off; /* of the table in the container */
	uint64_t *tbl;
	uint64_t tick;
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

	pthread_mutex_t lock; /* protects the slots, tick and ccache */
	pthread_cond_t loaded;
	struct l2_slot *slots;
	size_t nslots;
	uint64_t tick;
	uint64_t cdesc; /* the compressed cluster in cbuf; 0 = none */
	uint8_t *cbuf;
};

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static int corrupt(const char *what, uint64_t v)
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
static int file_read(struct qcow2 *q, void *buf, size_t len, uint64_t off,
		     const char *what)
{
	if (off > q->file->size || len > q->file->size - off)
		return corrupt(what, off);
	return nd_layer_pread(q->file, buf, len, off);
}

/* --- the L2-table cache ------------------------------------------------- */

static struct l2_slot *slot_find(struct qcow2 *q, uint64_t off)
{
	for (size_t i = 0; i < q->nslots; i++)
		if (q->slots[i].state != SLOT_EMPTY && q->slots[i].off == off)
			return &q->slots[i];
	return NULL;
}

/* The least recently used slot that is not loading; NULL if all are. */
static struct l2_slot *slot_victim(struct qcow2 *q)
{
	struct l2_slot *v = NULL;
	for (size_t i = 0; i < q->nslots; i++) {
		struct l2_slot *s = &q->slots[i];
		if (s->state == SLOT_EMPTY)
			return s;
		if (s->state == SLOT_READY && (!v || s->tick < v->tick))
			v = s;
	}
	return v;
}

static int slot_load(struct qcow2 *q, struct l2_slot *s, uint64_t off)
{
	size_t n = q->cluster_size / 8;
	int r;

	s->state = SLOT_LOADING;
	s->off = off;
	pthread_mutex_unlock(&q->lock);
	r = file_read(q, s->tbl, q->cluster_size, off, "L2 table offset");
	for (size_t i = 0; r == 0 && i < n; i++)
		s->tbl[i] = be64((const uint8_t *)&s->tbl[i]);
	pthread_mutex_lock(&q->lock);
	s->state = r ? SLOT_EMPTY : SLOT_READY;
	pthread_cond_broadcast(&q->loaded);
	return r;
}

/* Entry IDX (and its subcluster bitmap) of the L2 table at OFF. */
static int l2_entry(struct qcow2 *q, uint64_t off, size_t idx, uint64_t *e,
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
		s->tick = ++q->tick;
		*e = s->tbl[idx << q->extl2];
		*bitmap = q->extl2 ? s->tbl[(idx << 1) + 1] : 0;
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* --- mapping a guest offset -------------------------------------------- */

enum ext_type { EXT_UNALLOC, EXT_ZERO, EXT_DATA, EXT_COMPRESSED };

/* What the guest range starting at OFF is, and for how many bytes (at
 * most to the end of its cluster, or of its run of like subclusters). */
struct extent {
	enum ext_type type;
	uint64_t host; /* EXT_DATA: container offset of OFF; else the desc */
	uint64_t len;
};

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

static int map(struct qcow2 *q, uint64_t off, struct extent *x)
{
	uint64_t cl = off >> q->cluster_bits, in = off & (q->cluster_size - 1);
	uint64_t l1i = cl >> q->l2_bits, e, bitmap, l2off;
	int r;

	x->len = q->cluster_size - in;
	x->type = EXT_UNALLOC;
	if (l1i >= q->l1_size || !(l2off = q->l1[l1i] & L1E_OFFSET_MASK))
		return 0;
	if (l2off & (q->cluster_size - 1))
		return corrupt("unaligned L2 table offset", l2off);
	r = l2_entry(q, l2off, cl & ((1ull << q->l2_bits) - 1), &e, &bitmap);
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
		return corrupt("unaligned data cluster offset", x->host - in);
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
		return corrupt("compressed cluster offset", coff);
	if (clen > q->file->size - coff)
		clen = q->file->size - coff;
	if (!(in = malloc(clen)))
		return -ENOMEM;
	q->cdesc = 0;
	r = file_read(q, in, clen, coff, "compressed cluster offset");
	if (r == 0 &&
	    (q->compression ? inflate_zstd : inflate_deflate)(
		    in, clen, q->cbuf, q->cluster_size) == -1)
		r = corrupt("compressed cluster does not decompress", coff);
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
	return file_read(q, buf, len, x->host, "data cluster offset");
}

static int qcow2_pread(struct nd_layer *l, void *vbuf, size_t len,
		       uint64_t off)
{
	struct qcow2 *q = (struct qcow2 *)l;
	uint8_t *buf = vbuf;
	struct extent run = { 0 }; /* extents merged into one read */
	uint64_t run_off = 0;
	int r;

	while (len || run.len) {
		struct extent x = { 0 };
		if (len && (r = map(q, off, &x)))
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
			    (r = read_extent(q, buf - run.len, run.len, run_off,
					     &run)))
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

static void qcow2_close(struct nd_layer *l)
{
	struct qcow2 *q = (struct qcow2 *)l;
	for (size_t i = 0; q->slots && i < q->nslots; i++)
		free(q->slots[i].tbl);
	free(q->slots);
	free(q->l1);
	free(q->cbuf);
	nd_layer_close(q->backing);
	nd_layer_close(q->file);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->loaded);
	free(q);
}

static const struct nd_layer_ops qcow2_ops = {
	.name = "qcow2",
	.pread = qcow2_pread,
	.close = qcow2_close,
};

/* --- opening ------------------------------------------------------------ */

/* What the header says, checked. */
struct header {
	uint32_t version, cluster_bits, l1_size, nb_snapshots, hdr_len;
	uint64_t backing_off, size, l1_off, snapshots_off, incompat;
	uint32_t backing_len;
	int compression;
};

/* A valid image using what this layer does not read. */
#define refuse(fmt, v)                                                        \
	({                                                                    \
		errno = ENOTSUP;                                              \
		nd_error(fmt, (unsigned long long)(v));                       \
		-ENOTSUP;                                                     \
	})

static int check_features(const struct header *h)
{
	uint64_t unknown = h->incompat & ~INCOMPAT_KNOWN;
	if (unknown)
		return refuse("qcow2: unknown incompatible features 0x%llx", unknown);
	if (h->incompat & INCOMPAT_DATA_FILE)
		return refuse("qcow2: images with an external data file are not "
			      "supported (feature bit %llu)", 2);
	if (h->incompat & INCOMPAT_CORRUPT)
		nd_warn("qcow2: the image is marked corrupt; it is shown read-only");
	return 0;
}

static int parse_header(const uint8_t *b, size_t n, uint64_t file_size,
			struct header *h)
{
	memset(h, 0, sizeof *h);
	if (n < 72 || be32(b) != QCOW2_MAGIC)
		return corrupt("not a qcow2 image (no QFI magic), size", n);
	h->version = be32(b + 4);
	h->backing_off = be64(b + 8);
	h->backing_len = be32(b + 16);
	h->cluster_bits = be32(b + 20);
	h->size = be64(b + 24);
	h->l1_size = be32(b + 36);
	h->l1_off = be64(b + 40);
	h->nb_snapshots = be32(b + 60);
	h->snapshots_off = be64(b + 64);
	h->hdr_len = 72;
	if (h->version != 2 && h->version != 3)
		return refuse("qcow2: version %llu (2 and 3 are supported)",
			      h->version);
	if (be32(b + 32))
		return refuse("qcow2: encrypted images (method %llu) are not "
			      "supported", be32(b + 32));
	if (h->cluster_bits < 9 || h->cluster_bits > 21)
		return corrupt("cluster_bits out of 9..21", h->cluster_bits);
	if (h->version == 3) {
		if (n < 104)
			return corrupt("header shorter than 104 bytes", n);
		h->incompat = be64(b + 72);
		h->hdr_len = be32(b + 100);
		if (be32(b + 96) > 6)
			return corrupt("refcount_order over 6", be32(b + 96));
		if (h->hdr_len < 104 || h->hdr_len % 8 ||
		    h->hdr_len > (1u << h->cluster_bits) || h->hdr_len > n)
			return corrupt("header_length", h->hdr_len);
		if (h->incompat & INCOMPAT_COMPRESSION)
			h->compression = h->hdr_len > 104 ? b[104] : 0;
		if (h->compression > 1)
			return refuse("qcow2: compression type %llu (deflate "
				      "and zstd are supported)", h->compression);
		if ((h->incompat & INCOMPAT_EXTL2) && h->cluster_bits < 14)
			return corrupt("extended L2 entries with clusters under "
				       "16 KiB, cluster_bits", h->cluster_bits);
	}
	if (h->backing_off && (h->backing_len == 0 || h->backing_len > 1023 ||
			       h->backing_off > file_size ||
			       h->backing_len > file_size - h->backing_off))
		return corrupt("backing file name offset", h->backing_off);
	return check_features(h);
}

/* The backing format extension, if any, as a string (malloc'd). */
static int header_extensions(const uint8_t *b, size_t n,
			     const struct header *h, char **fmt)
{
	size_t p = h->hdr_len;
	*fmt = NULL;
	if (n > (size_t)1 << h->cluster_bits)
		n = (size_t)1 << h->cluster_bits; /* they end with the cluster */
	while (p + 8 <= n) {
		uint32_t type = be32(b + p), len = be32(b + p + 4);
		if (type == 0)
			break;
		if (len > n - p - 8)
			return corrupt("header extension length", len);
		if (type == EXT_BACKING_FORMAT && !*fmt &&
		    !(*fmt = strndup((const char *)b + p + 8, len)))
			return -ENOMEM;
		p += 8 + (((size_t)len + 7) & ~(size_t)7);
	}
	return 0;
}

static int load_l1(struct qcow2 *q, uint64_t off, uint32_t size, uint64_t vsize)
{
	uint64_t per_l1 = q->cluster_size << q->l2_bits;
	if (size > MAX_L1_ENTRIES)
		return corrupt("L1 table larger than 32 MiB, entries", size);
	if ((vsize + per_l1 - 1) / per_l1 > size)
		return corrupt("L1 table too small for the virtual size", size);
	if (off & (q->cluster_size - 1))
		return corrupt("unaligned L1 table offset", off);
	q->l1_size = size;
	if (!size)
		return 0;
	if (!(q->l1 = malloc((size_t)size * 8)))
		return -ENOMEM;
	int r = file_read(q, q->l1, (size_t)size * 8, off, "L1 table offset");
	for (uint32_t i = 0; r == 0 && i < size; i++)
		q->l1[i] = be64((const uint8_t *)&q->l1[i]);
	return r;
}

/* Does the snapshot table entry at P (ID and name after EXTRA bytes) have
 * NAME as its ID or name? */
static int snapshot_is(struct qcow2 *q, uint64_t p, uint32_t extra,
		       uint32_t idlen, uint32_t nlen, const char *name)
{
	size_t want = strlen(name);
	char *s;
	int r = 0;

	for (int i = 0; i < 2 && r == 0; i++) {
		uint32_t len = i ? nlen : idlen;
		uint64_t at = p + 40 + extra + (i ? idlen : 0);
		if (len != want)
			continue;
		if (!(s = malloc(len + 1)))
			return -ENOMEM;
		r = file_read(q, s, len, at, "snapshot name");
		if (r == 0 && memcmp(s, name, len) == 0)
			r = 1;
		free(s);
	}
	return r;
}

/* Find snapshot NAME (its ID or name) in the snapshot table. */
static int find_snapshot(struct qcow2 *q, const struct header *h,
			 const char *name, uint64_t *l1_off, uint32_t *l1_size,
			 uint64_t *vsize)
{
	uint64_t p = h->snapshots_off;
	uint8_t e[40], ex[16];

	for (uint32_t i = 0; i < h->nb_snapshots; i++) {
		int r = file_read(q, e, sizeof e, p, "snapshot table offset");
		if (r)
			return r;
		uint32_t idlen = e[12] << 8 | e[13], nlen = e[14] << 8 | e[15];
		uint32_t extra = be32(e + 36);
		if (extra > 65536)
			return corrupt("snapshot extra data size", extra);
		if ((r = snapshot_is(q, p, extra, idlen, nlen, name)) < 0)
			return r;
		if (r) {
			memset(ex, 0, sizeof ex);
			if (extra >= 16 && (r = file_read(q, ex, 16, p + 40,
							  "snapshot extra data")))
				return r;
			*l1_off = be64(e);
			*l1_size = be32(e + 8);
			*vsize = extra >= 16 ? be64(ex + 8) : h->size;
			return 0;
		}
		p += (40 + extra + idlen + nlen + 7) & ~7ull;
	}
	errno = ENOENT;
	nd_error("qcow2: no snapshot '%s' (ID or name) in the image", name);
	return -ENOENT;
}

static int open_backing(struct qcow2 *q, const struct header *h,
			const char *fmt, const struct nd_qcow2_opts *o)
{
	char name[1024];
	int r;

	if (!h->backing_off || o->no_backing)
		return 0;
	if ((r = file_read(q, name, h->backing_len, h->backing_off,
			   "backing file name offset")))
		return r;
	name[h->backing_len] = 0;
	if (!o->open_backing) {
		errno = ENOTSUP;
		nd_error("qcow2: the image has a backing file '%s' that cannot "
			 "be opened here (backing=off shows the top image alone)",
			 name);
		return -ENOTSUP;
	}
	if (o->depth + 1 >= ND_QCOW2_MAX_DEPTH) {
		errno = ELOOP;
		nd_error("qcow2: backing chain deeper than %d at '%s' (a loop?)",
			 ND_QCOW2_MAX_DEPTH, name);
		return -ELOOP;
	}
	return o->open_backing(name, fmt, o->depth + 1, o->arg, &q->backing);
}

static int setup(struct qcow2 *q, const struct header *h,
		 const struct nd_qcow2_opts *o)
{
	uint64_t l1_off = h->l1_off, vsize = h->size;
	uint32_t l1_size = h->l1_size;
	int r;

	q->cluster_bits = h->cluster_bits;
	q->cluster_size = 1ull << h->cluster_bits;
	q->extl2 = h->incompat & INCOMPAT_EXTL2;
	q->l2_bits = h->cluster_bits - 3 - q->extl2;
	q->sc_bits = h->cluster_bits - 5;
	q->zero_flag = h->version == 3 && !q->extl2;
	q->compression = h->compression;
	if (o->snapshot &&
	    (r = find_snapshot(q, h, o->snapshot, &l1_off, &l1_size, &vsize)))
		return r;
	if (vsize > (1ull << 61))
		return corrupt("virtual size over 2 EiB", vsize);
	q->l.size = vsize;
	if ((r = load_l1(q, l1_off, l1_size, vsize)))
		return r;
	q->nslots = (o->l2_cache_bytes ? o->l2_cache_bytes : 32u << 20) >>
		    h->cluster_bits;
	if (q->nslots < 4)
		q->nslots = 4;
	if (!(q->slots = calloc(q->nslots, sizeof *q->slots)) ||
	    !(q->cbuf = malloc(q->cluster_size)))
		return -ENOMEM;
	for (size_t i = 0; i < q->nslots; i++)
		if (!(q->slots[i].tbl = malloc(q->cluster_size)))
			return -ENOMEM;
	return 0;
}

int nd_qcow2_open(struct nd_layer *file, const struct nd_qcow2_opts *o,
		  struct nd_layer **out)
{
	struct qcow2 *q = calloc(1, sizeof *q);
	uint8_t *b = NULL;
	char *fmt = NULL;
	struct header h;
	size_t n = file->size < 4096 ? (size_t)file->size : 4096;
	int r = -ENOMEM;

	if (!q) {
		nd_layer_close(file);
		return r;
	}
	q->l.ops = &qcow2_ops;
	q->l.ro = true;
	q->file = file;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->loaded, NULL);
	if (!(b = malloc(4096)) ||
	    (r = file_read(q, b, n, 0, "header")) ||
	    (r = parse_header(b, n, file->size, &h)) ||
	    (r = header_extensions(b, n, &h, &fmt)) || (r = setup(q, &h, o)) ||
	    (r = open_backing(q, &h, fmt, o)))
		goto fail;
	free(b);
	free(fmt);
	*out = &q->l;
	return 0;
fail:
	if (r == -ENOMEM)
		nd_error("qcow2: out of memory");
	free(b);
	free(fmt);
	qcow2_close(&q->l);
	return r;
}
