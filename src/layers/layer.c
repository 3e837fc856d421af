/* layer.c: the layer calls with their range checks, and the local-file
 * layer (a file or block device read with pread/pwrite: local backing
 * files of a format, and the base of the layers' unit tests). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layer.h"
#include "log.h"
#include "util/fullio.h"

static int out_of_range(struct nd_layer *l, uint64_t len, uint64_t off)
{
	if (off > l->size || len > l->size - off) {
		errno = EIO;
		nd_error("%s: request at %llu (+%llu) past the end (%llu)",
			 l->ops->name, (unsigned long long)off,
			 (unsigned long long)len, (unsigned long long)l->size);
		return -EIO;
	}
	return 0;
}

int nd_layer_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	int r = out_of_range(l, len, off);
	return r ? r : len ? l->ops->pread(l, buf, len, off) : 0;
}

int nd_layer_read_ref(struct nd_layer *l, size_t len, uint64_t off,
		      void *scratch, struct nd_layer_ref *ref)
{
	int r = out_of_range(l, len, off);
	if (r || !len)
		return r;
	if (l->ops->read_ref)
		return l->ops->read_ref(l, len, off, scratch, ref);
	if ((r = l->ops->pread(l, scratch, len, off)))
		return r;
	return nd_layer_ref_add(ref, scratch, len);
}

int nd_layer_map(struct nd_layer *l, size_t len, uint64_t off,
		 struct nd_cache **cache, uint64_t *coff,
		 struct nd_layer_pin *pin)
{
	*pin = (struct nd_layer_pin){ 0 };
	if (!l->ops->map || !len || off > l->size || len > l->size - off)
		return 0;
	return l->ops->map(l, len, off, cache, coff, pin);
}

void nd_layer_unpin(struct nd_layer_pin *pin)
{
	if (pin->release)
		pin->release(pin);
	pin->release = NULL;
}

void nd_layer_ref_init(struct nd_layer_ref *ref)
{
	ref->iov = ref->iov_in;
	ref->iov_cap = ND_REF_INLINE;
	ref->hold = ref->hold_in;
	ref->hold_cap = ND_REF_INLINE / 4;
	ref->n = ref->nhold = 0;
}

/* Make room for one more element of *ARR (N used, *CAP, INLINE_ARR its
 * first storage, inside the ref): doubled on the heap. */
static int grow_arr(void **arr, size_t n, size_t *cap, void *inline_arr,
		    size_t size)
{
	if (n < *cap)
		return 0;
	void *a = malloc(*cap * 2 * size);
	if (!a)
		return -ENOMEM;
	memcpy(a, *arr, n * size);
	if (*arr != inline_arr)
		free(*arr);
	*arr = a;
	*cap *= 2;
	return 0;
}

int nd_layer_ref_add(struct nd_layer_ref *ref, void *base, size_t len)
{
	struct iovec *last = ref->n ? &ref->iov[ref->n - 1] : NULL;
	if (last && (char *)last->iov_base + last->iov_len == base) {
		last->iov_len += len;
		return 0;
	}
	if (grow_arr((void **)&ref->iov, ref->n, &ref->iov_cap, ref->iov_in,
		     sizeof *ref->iov))
		return -ENOMEM;
	ref->iov[ref->n++] = (struct iovec){ base, len };
	return 0;
}

int nd_layer_ref_hold(struct nd_layer_ref *ref, const struct nd_layer_hold *h)
{
	if (grow_arr((void **)&ref->hold, ref->nhold, &ref->hold_cap,
		     ref->hold_in, sizeof *ref->hold))
		return -ENOMEM;
	ref->hold[ref->nhold++] = *h;
	return 0;
}

void nd_layer_ref_release(struct nd_layer_ref *ref)
{
	while (ref->nhold) {
		struct nd_layer_hold *h = &ref->hold[--ref->nhold];
		h->release(h);
	}
	if (ref->iov != ref->iov_in)
		free(ref->iov);
	if (ref->hold != ref->hold_in)
		free(ref->hold);
	nd_layer_ref_init(ref);
}

static int read_only(struct nd_layer *l)
{
	errno = EROFS;
	nd_error("%s: read-only", l->ops->name);
	return -EROFS;
}

int nd_layer_pwrite(struct nd_layer *l, const void *buf, size_t len,
		    uint64_t off)
{
	int r = out_of_range(l, len, off);
	if (r)
		return r;
	if (l->ro || !l->ops->pwrite)
		return read_only(l);
	return len ? l->ops->pwrite(l, buf, len, off) : 0;
}

int nd_layer_zero(struct nd_layer *l, uint64_t len, uint64_t off)
{
	int r = out_of_range(l, len, off);
	if (r)
		return r;
	if (l->ro || !l->ops->zero)
		return read_only(l);
	return len ? l->ops->zero(l, len, off) : 0;
}

int nd_layer_flush(struct nd_layer *l)
{
	return l->ops->flush && !l->ro ? l->ops->flush(l) : 0;
}

int nd_layer_grow(struct nd_layer *l, uint64_t size)
{
	if (size <= l->size)
		return 0;
	if (l->ro || !l->ops->grow) {
		errno = ENOSPC;
		nd_error("%s: cannot grow to %llu bytes", l->ops->name,
			 (unsigned long long)size);
		return -ENOSPC;
	}
	return l->ops->grow(l, size);
}

void nd_layer_close(struct nd_layer *l)
{
	if (l)
		l->ops->close(l);
}

/* --- the local-file layer ---------------------------------------------- */

struct file_layer {
	struct nd_layer l;
	int fd;
	char *path;
};

static int file_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	struct file_layer *f = (struct file_layer *)l;
	if (nd_full_pread(f->fd, buf, len, off, false) == 0)
		return 0;
	nd_error("%s: read at %llu: %m", f->path, (unsigned long long)off);
	return -errno;
}

static int file_pwrite(struct nd_layer *l, const void *buf, size_t len,
		       uint64_t off)
{
	struct file_layer *f = (struct file_layer *)l;
	if (nd_full_pwrite(f->fd, buf, len, off) == 0)
		return 0;
	nd_error("%s: write at %llu: %m", f->path, (unsigned long long)off);
	return -errno;
}

static int file_zero(struct nd_layer *l, uint64_t len, uint64_t off)
{
	struct file_layer *f = (struct file_layer *)l;
	static const char zeroes[65536];
	if (fallocate(f->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	while (len) {
		size_t n = len < sizeof zeroes ? (size_t)len : sizeof zeroes;
		int r = file_pwrite(l, zeroes, n, off);
		if (r)
			return r;
		len -= n;
		off += n;
	}
	return 0;
}

static int file_flush(struct nd_layer *l)
{
	struct file_layer *f = (struct file_layer *)l;
	if (fdatasync(f->fd) == 0)
		return 0;
	nd_error("%s: fdatasync: %m", f->path);
	return -errno;
}

static int file_grow(struct nd_layer *l, uint64_t size)
{
	struct file_layer *f = (struct file_layer *)l;
	if (ftruncate(f->fd, (off_t)size) == -1) {
		nd_error("%s: grow to %llu: %m", f->path,
			 (unsigned long long)size);
		return -errno;
	}
	l->size = size;
	return 0;
}

static void file_close(struct nd_layer *l)
{
	struct file_layer *f = (struct file_layer *)l;
	close(f->fd);
	free(f->path);
	free(f);
}

static const struct nd_layer_ops file_ops = {
	.name = "file",
	.pread = file_pread,
	.pwrite = file_pwrite,
	.zero = file_zero,
	.flush = file_flush,
	.close = file_close,
	.grow = file_grow,
};

int nd_layer_file_open(const char *path, bool ro, struct nd_layer **out)
{
	struct file_layer *f = calloc(1, sizeof *f);
	struct stat st;
	off_t end;

	if (!f || !(f->path = strdup(path))) {
		free(f);
		return -ENOMEM;
	}
	f->fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &st) < 0 ||
	    (end = lseek(f->fd, 0, SEEK_END)) < 0) {
		int e = errno;
		nd_error("%s: %m", path);
		if (f->fd >= 0)
			close(f->fd);
		free(f->path);
		free(f);
		return -e;
	}
	f->l.ops = &file_ops;
	f->l.size = (uint64_t)end;
	f->l.ro = ro;
	*out = &f->l;
	return 0;
}
