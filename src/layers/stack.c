/* stack.c: building an entry's optional layers from its options, the
 * layer over its block cache, and the opening of a qcow2 image's backing
 * files as QEMU resolves them: a name with a scheme (or json:) is a device
 * URL of its own, an absolute path a local file; a relative name is
 * resolved by the image's protocol from the image's own location (its
 * backend's relative hook), on the same server, with the same options,
 * secrets included; a backing file is opened read-only
 * through the same backend machinery, and is decoded too when it is a
 * qcow2 image (its format named in the header, or its magic). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "layers/overlay.h"
#include "layers/qcow2.h"
#include "layers/stack.h"
#include "log.h"
#include "secret.h"
#include "url.h"

/* --- the layer over the cache -------------------------------------------- */

struct cache_layer {
	struct nd_layer l;
	struct nd_disk *d;
	struct nd_cache *c;
	bool own;
};

/* 0, or -EIO (said) when the cache gave GOT of the LEN bytes at OFF. */
static int short_read(size_t got, size_t len, uint64_t off)
{
	if (got == len)
		return 0;
	errno = EIO;
	nd_error("short read at %llu", (unsigned long long)off);
	return -EIO;
}

static int cl_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	struct cache_layer *x = (struct cache_layer *)l;
	size_t got = 0;
	int r;
	if (!x->c)
		return nd_disk_pread(x->d, buf, len, off);
	r = nd_cache_pread(x->c, buf, len, off, &got);
	return r ? r : short_read(got, len, off);
}

static void cl_unpin(struct nd_layer_hold *h)
{
	struct nd_cache_ref r = { .n = h->n, .blk = h->p };
	nd_cache_release(h->owner, &r);
}

/* The cache's pinned blocks themselves, no copy: the pins are let go of
 * when the reply is sent. */
static int cl_read_ref(struct nd_layer *l, size_t len, uint64_t off,
		       void *scratch, struct nd_layer_ref *ref)
{
	struct cache_layer *x = (struct cache_layer *)l;
	struct nd_cache_ref cr;
	int r;
	if (!x->c) {
		if ((r = nd_disk_pread(x->d, scratch, len, off)))
			return r;
		return nd_layer_ref_add(ref, scratch, len);
	}
	if ((r = nd_cache_read(x->c, off, len, &cr)))
		return r;
	struct nd_layer_hold h = { cl_unpin, x->c, cr.blk, cr.n };
	r = short_read(cr.len, len, off);
	for (size_t i = 0; r == 0 && i < cr.n; i++)
		r = nd_layer_ref_add(ref, cr.iov[i].iov_base, cr.iov[i].iov_len);
	free(cr.iov);
	cr.iov = NULL;
	if (r || (r = nd_layer_ref_hold(ref, &h)))
		nd_cache_release(x->c, &cr);
	return r;
}

/* The cache's own bytes: the range is where it is. */
static int cl_map(struct nd_layer *l, size_t len, uint64_t off,
		  struct nd_cache **cache, uint64_t *coff,
		  struct nd_layer_pin *pin)
{
	struct cache_layer *x = (struct cache_layer *)l;
	(void)len;
	(void)pin;
	*cache = x->c;
	*coff = off;
	return x->c != NULL;
}

static int cl_pwrite(struct nd_layer *l, const void *buf, size_t len,
		     uint64_t off)
{
	struct cache_layer *x = (struct cache_layer *)l;
	return x->c ? nd_cache_write(x->c, buf, len, off)
		    : nd_disk_pwrite(x->d, buf, len, off, 0);
}

static int cl_zero(struct nd_layer *l, uint64_t len, uint64_t off)
{
	struct cache_layer *x = (struct cache_layer *)l;
	return x->c ? nd_cache_zero(x->c, len, off, 0)
		    : nd_disk_zero(x->d, len, off, 0);
}

static int cl_flush(struct nd_layer *l)
{
	struct cache_layer *x = (struct cache_layer *)l;
	return x->c ? nd_cache_flush(x->c) : nd_disk_flush(x->d);
}

static int cl_grow(struct nd_layer *l, uint64_t size)
{
	struct cache_layer *x = (struct cache_layer *)l;
	int r = x->c ? nd_cache_grow(x->c, size) : nd_disk_grow(x->d, size);
	if (r == 0)
		l->size = size;
	return r;
}

static void cl_close(struct nd_layer *l)
{
	struct cache_layer *x = (struct cache_layer *)l;
	if (x->own)
		nd_disk_close(x->d);
	free(x);
}

static const struct nd_layer_ops cache_layer_ops = {
	.name = "cache",
	.pread = cl_pread,
	.pwrite = cl_pwrite,
	.zero = cl_zero,
	.flush = cl_flush,
	.close = cl_close,
	.grow = cl_grow,
	.read_ref = cl_read_ref,
	.map = cl_map,
};

int nd_layer_cache_open(struct nd_disk *d, struct nd_cache *c, bool own,
			struct nd_layer **out)
{
	struct cache_layer *x = calloc(1, sizeof *x);
	if (!x) {
		if (own)
			nd_disk_close(d);
		return -ENOMEM;
	}
	x->l.ops = &cache_layer_ops;
	x->l.size = nd_disk_size(d);
	x->l.ro = nd_disk_read_only(d);
	x->d = d;
	x->c = c;
	x->own = own;
	*out = &x->l;
	return 0;
}

/* --- identity -------------------------------------------------------------- */

/* The canonical options without secrets and without the core's keys. */
char *nd_stack_identity_opts(const struct nd_opts *o)
{
	struct nd_opts id;
	char *r = NULL;
	nd_opts_init(&id, o->name);
	for (size_t i = 0; i < o->n; i++) {
		if (nd_opt_is_secret(o->v[i].key) || nd_opt_is_core(o->v[i].key))
			continue;
		/* A URL's own credentials or tokens stay out too. */
		char *v = nd_redact(o->v[i].val);
		int set = v ? nd_opt_set(&id, o->v[i].key, v, "") : -1;
		free(v);
		if (set == -1)
			goto out;
	}
	r = nd_opts_format(&id, ",");
out:
	nd_opts_free(&id);
	return r;
}

char *nd_stack_identity(const struct nd_opts *o, uint64_t size)
{
	char *list = nd_stack_identity_opts(o), *r = NULL;
	if (list &&
	    asprintf(&r, "%s,size=%llu", list, (unsigned long long)size) < 0)
		r = NULL;
	free(list);
	return r;
}

/* --- backing files ----------------------------------------------------------- */

struct chain {
	const struct nd_opts *image; /* the image whose backing is opened */
};

/* The options naming backing file NAME of IMAGE (read-only). */
static int backing_opts(const struct nd_opts *image, const char *name,
			struct nd_opts *o)
{
	nd_opts_init(o, image->name);
	/* As QEMU does: a URL, json: or an absolute path (a local file) is
	 * used as it is; only a relative name depends on the image. */
	if (nd_url_is_device(name) || strstr(name, "://") || name[0] == '/') {
		if (nd_url_parse(name, o, "backing file") == -1)
			return -1;
	} else {
		const struct nd_proto *p =
			nd_proto_by_driver(nd_opt_get(image, "driver"));
		if (!p || !p->relative) {
			errno = EINVAL;
			nd_error("backing file '%s': a name relative to a %s "
				 "image cannot be resolved; give a URL",
				 name, nd_opt_get(image, "driver"));
			return -1;
		}
		for (size_t i = 0; i < image->n; i++)
			if (!nd_opt_is_core(image->v[i].key) &&
			    nd_opt_set(o, image->v[i].key, image->v[i].val,
				       image->v[i].origin) == -1)
				return -1;
		if (p->relative(o, name) == -1)
			return -1;
	}
	return nd_opt_set(o, "ro", "on", "backing file") ||
	       nd_opts_normalize(o);
}

static int open_backing(const char *name, const char *format, unsigned depth,
			void *arg, struct nd_layer **out);

/* Decode L as qcow2 when FORMAT says so (or, with no format, its magic). */
static int decode(struct nd_layer *l, const char *format, unsigned depth,
		  struct chain *next, struct nd_layer **out)
{
	char magic[4] = { 0 };
	if (!format && l->size >= 4 && nd_layer_pread(l, magic, 4, 0) == 0 &&
	    nd_qcow2_probe(magic))
		format = "qcow2";
	if (!format || strcmp(format, "raw") == 0) {
		*out = l;
		return 0;
	}
	if (strcmp(format, "qcow2") != 0) {
		nd_layer_close(l);
		errno = ENOTSUP;
		nd_error("backing format '%s' is not supported (raw, qcow2)",
			 format);
		return -ENOTSUP;
	}
	struct nd_qcow2_opts q = { .open_backing = open_backing,
				   .arg = next,
				   .depth = depth };
	return nd_qcow2_open(l, &q, out);
}

static int open_backing(const char *name, const char *format, unsigned depth,
			void *arg, struct nd_layer **out)
{
	struct chain *c = arg;
	struct nd_opts o;
	struct nd_disk *d = NULL;
	struct nd_layer *l;
	int r;

	if ((r = backing_opts(c->image, name, &o)) == -1 ||
	    (r = nd_disk_open(&o, &d)) != 0) {
		r = r < 0 ? r : -r;
		nd_opts_free(&o);
		return r ? r : -EIO;
	}
	nd_opts_free(&o);
	if ((r = nd_layer_cache_open(d, NULL, true, &l)))
		return r;
	/* Its own backing names resolve from its own location. */
	struct chain *next = malloc(sizeof *next);
	if (!next) {
		nd_layer_close(l);
		return -ENOMEM;
	}
	next->image = nd_disk_opts(d);
	r = decode(l, format, depth, next, out);
	/* next must live as long as the chain: the qcow2 layer only reads it
	 * while opening, so it can go now. */
	free(next);
	return r;
}

/* --- the stack ---------------------------------------------------------------- */

static int open_qcow2(struct nd_disk *d, struct nd_layer **l)
{
	const struct nd_opts *o = nd_disk_opts(d);
	struct chain top = { .image = o };
	struct nd_qcow2_opts q = { .open_backing = open_backing,
				   .arg = &top,
				   .snapshot = nd_opt_get(o, "snapshot"),
				   .writable = !nd_disk_read_only(d) && !nd_opt_get(o, "snapshot") };
	bool b = true;
	if (nd_opt_bool(o, "backing", true, &b) == -1 ||
	    nd_opt_size(o, "l2-cache-size", 0, &q.l2_cache_bytes) == -1)
		return -EINVAL;
	q.no_backing = !b;
	return nd_qcow2_open(*l, &q, l);
}

static int open_overlay(struct nd_disk *d, const char *path,
			struct nd_layer **l)
{
	const struct nd_opts *o = nd_disk_opts(d);
	struct nd_overlay_opts ov = { .create = true };
	char *id;
	int r;
	if (nd_opt_bool(o, "overlay-create", true, &ov.create) == -1 ||
	    nd_opt_bool(o, "overlay-force", false, &ov.force) == -1)
		return -EINVAL;
	if (!(id = nd_stack_identity(o, (*l)->size)))
		return -ENOMEM;
	r = nd_overlay_open(path, *l, id, &ov, l);
	free(id);
	return r;
}

int nd_stack_open(struct nd_disk *d, struct nd_cache *c, struct nd_layer **top)
{
	const char *fmt = nd_opt_get(nd_disk_opts(d), "format");
	const char *ovl = nd_opt_get(nd_disk_opts(d), "overlay");
	struct nd_layer *l;
	int r;

	*top = NULL;
	if (!fmt && !ovl)
		return 0;
	if ((r = nd_layer_cache_open(d, c, false, &l)))
		return r;
	if (fmt && (r = open_qcow2(d, &l)))
		return r; /* the qcow2 layer closed what was under it */
	if (ovl && (r = open_overlay(d, ovl, &l)))
		return r;
	*top = l;
	return 0;
}
