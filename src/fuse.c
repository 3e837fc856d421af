/* fuse.c: the FUSE low-level operations. The root holds one regular file
 * per entry and a hidden .netdiskfs/status. Reads reply straight from the
 * pinned cache blocks (fuse_reply_iov: no bounce buffer). */
#include "fuse_ver.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "util/cleanup.h"
#include "util/detach.h"

#define META_NAME ".netdiskfs"
#define MAX_IO (1u << 20)

/* Per open file. Requests hold a reference: the kernel may send RELEASE
 * while a READ of the same file is still being answered (its reader
 * exited), so the last holder frees it. */
struct handle {
	atomic_uint refs;
	struct nd_fs *fs;
	struct nd_fs_entry *e;
	bool wrote;
	char *text; /* status snapshot */
	size_t text_len;
};

/* --- attributes ------------------------------------------------------- */

/* What the file shows: the top layer's size and read-only-ness when the
 * entry has layers (a decoded qcow2, an overlay), else the disk's. */
static uint64_t entry_size(const struct nd_fs_entry *e)
{
	return e->top ? e->top->size : nd_disk_size(e->disk);
}

static bool entry_ro(const struct nd_fs_entry *e)
{
	return e->top ? e->top->ro : nd_disk_read_only(e->disk);
}

static void fill_attr(struct nd_fs *fs, fuse_ino_t ino, struct stat *st,
		      struct nd_fs_entry *e)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_atime = st->st_mtime = st->st_ctime = fs->mount_time;
	st->st_blksize = 4096;
	if (ino == INO_ROOT || ino == INO_META) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = ino == INO_ROOT ? 3 : 2;
	} else if (ino == INO_STATUS) {
		/* Nothing secret is in it, and still: under allow_other only
		 * the mount's owner (and root) reads it. */
		st->st_mode = S_IFREG | (fs->allow_other ? 0600 : 0444);
		st->st_nlink = 1;
		st->st_size = 0; /* generated at open; read with direct_io */
	} else {
		struct nd_perm p = { fs->uid, fs->gid, 0 };
		/* Checked when the table was read: cannot fail here. */
		nd_opt_perm(nd_disk_opts(e->disk), fs->uid, fs->gid,
			    entry_ro(e), &p);
		st->st_mode = S_IFREG | p.mode;
		st->st_uid = p.uid;
		st->st_gid = p.gid;
		st->st_nlink = 1;
		st->st_size = entry_size(e);
		st->st_blocks = (entry_size(e) + 511) / 512;
		if (e->cache)
			st->st_blksize = nd_disk_cfg(e->disk)->block_size;
	}
}

static struct nd_fs *FS(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct nd_fs *fs = userdata;
	conn->max_write = MAX_IO;
	conn->max_readahead = MAX_IO;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	/* Requests go to the disk; no write cache in the kernel, unless
	 * -o kernel-cache=writeback: buffered writes then end in the page
	 * cache and reach us in the background, before fsync and close
	 * return. */
	if (fs->kernel_writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct nd_fs *fs = FS(req);
	struct fuse_entry_param ep;
	struct nd_fs_entry *e = NULL;

	memset(&ep, 0, sizeof ep);
	if (parent == INO_ROOT && strcmp(name, META_NAME) == 0) {
		ep.ino = INO_META;
	} else if (parent == INO_META && strcmp(name, "status") == 0) {
		ep.ino = INO_STATUS;
	} else if (parent == INO_ROOT) {
		pthread_rwlock_rdlock(&fs->lock);
		e = nd_fs_find(fs, name);
		if (e) {
			ep.ino = e->ino;
			fill_attr(fs, ep.ino, &ep.attr, e);
		}
		pthread_rwlock_unlock(&fs->lock);
	}
	if (!ep.ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!e)
		fill_attr(fs, ep.ino, &ep.attr, NULL);
	ep.attr_timeout = 1;
	ep.entry_timeout = 1;
	fuse_reply_entry(req, &ep);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct nd_fs *fs = FS(req);
	struct stat st;

	if (ino == INO_ROOT || ino == INO_META || ino == INO_STATUS) {
		fill_attr(fs, ino, &st, NULL);
	} else {
		pthread_rwlock_rdlock(&fs->lock);
		struct nd_fs_entry *e = nd_fs_find_ino(fs, ino);
		if (e)
			fill_attr(fs, ino, &st, e);
		pthread_rwlock_unlock(&fs->lock);
		if (!e) {
			fuse_reply_err(req, ENOENT);
			return;
		}
	}
	fuse_reply_attr(req, &st, 1);
}

/* Sizes cannot change: a truncate to the current size or below is
 * accepted and ignored (so `cp img MNT/disk` overwrites in place), growth
 * is refused; times are accepted; owner and mode are fixed. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct nd_fs *fs = FS(req);
	struct stat st;

	pthread_rwlock_rdlock(&fs->lock);
	struct nd_fs_entry *e = nd_fs_find_ino(fs, ino);
	int err = 0;
	if (!e)
		err = ino < FIRST_INO ? EPERM : ENOENT;
	else if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
			   FUSE_SET_ATTR_GID))
		err = EPERM;
	else if ((to_set & FUSE_SET_ATTR_SIZE) && entry_ro(e))
		err = EROFS;
	else if ((to_set & FUSE_SET_ATTR_SIZE) &&
		 (uint64_t)attr->st_size > entry_size(e))
		err = ENOSPC;
	if (!err)
		fill_attr(fs, ino, &st, e);
	pthread_rwlock_unlock(&fs->lock);
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_attr(req, &st, 1);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct nd_fs *fs = FS(req);
	char *buf;
	size_t pos = 0;
	off_t i = 0;
	struct stat st;

	if (ino != INO_ROOT && ino != INO_META) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memset(&st, 0, sizeof st);
#define ADD(name_, ino_, mode_)                                               \
	do {                                                                  \
		if (i++ >= off) {                                             \
			st.st_ino = (ino_);                                   \
			st.st_mode = (mode_);                                 \
			size_t n = fuse_add_direntry(req, buf + pos, size - pos, \
						     (name_), &st, i);        \
			if (n > size - pos)                                   \
				goto full;                                    \
			pos += n;                                             \
		}                                                             \
	} while (0)
	ADD(".", ino, S_IFDIR);
	ADD("..", INO_ROOT, S_IFDIR);
	if (ino == INO_META) {
		ADD("status", INO_STATUS, S_IFREG);
	} else {
		ADD(META_NAME, INO_META, S_IFDIR);
		pthread_rwlock_rdlock(&fs->lock);
		for (struct nd_fs_entry *e = fs->entries; e; e = e->next) {
			if (e->removed)
				continue;
			if (i++ >= off) {
				st.st_ino = e->ino;
				st.st_mode = S_IFREG;
				size_t n = fuse_add_direntry(req, buf + pos,
							     size - pos, e->name,
							     &st, i);
				if (n > size - pos)
					break;
				pos += n;
			}
		}
		pthread_rwlock_unlock(&fs->lock);
	}
#undef ADD
full:
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

/* A request on an open file holds its entry (nd_fs_enter) for its
 * duration: a reload swaps the entry's definition only between requests.
 * Taken once per request, never nested. */
static struct handle *handle_get(struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	atomic_fetch_add(&h->refs, 1);
	if (h->e)
		nd_fs_enter(h->e);
	return h;
}

/* The last reference closes the entry's share (freeing an entry that was
 * removed by a reload and is now unused) and the handle. */
static void handle_unref(struct handle *h)
{
	if (atomic_fetch_sub(&h->refs, 1) != 1)
		return;
	if (h->e)
		nd_fs_close(h->fs, h->e);
	free(h->text);
	free(h);
}

/* The end of a request begun with handle_get. */
static void handle_put(struct handle *h)
{
	if (h->e)
		nd_fs_leave(h->e);
	handle_unref(h);
}

/* Is the caller in group GID (its primary or a supplementary group)? */
static bool in_group(fuse_req_t req, const struct fuse_ctx *c, gid_t gid)
{
	gid_t groups[64];
	int n = fuse_req_getgroups(req, 64, groups);

	if (c->gid == gid)
		return true;
	for (int i = 0; i < n && i < 64; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* The kernel checks modes (default_permissions) unless the mount said
 * no_default_permissions; then, with other users admitted, we do it at
 * open: root passes, else the owner, group or other bits must allow the
 * access mode. 0 or EACCES. */
static int open_access(fuse_req_t req, struct nd_fs *fs, fuse_ino_t ino,
		       struct nd_fs_entry *e, int flags)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	unsigned want = 0, bits;
	struct stat st;

	if (fs->kernel_perms || !fs->allow_other || c->uid == 0)
		return 0;
	fill_attr(fs, ino, &st, e);
	if ((flags & O_ACCMODE) != O_WRONLY)
		want |= 4;
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		want |= 2;
	if (c->uid == st.st_uid)
		bits = st.st_mode >> 6;
	else if (in_group(req, c, st.st_gid))
		bits = st.st_mode >> 3;
	else
		bits = st.st_mode;
	return (bits & want) == want ? 0 : EACCES;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct nd_fs *fs = FS(req);
	struct handle *h = calloc(1, sizeof *h);
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;
	int err = 0;

	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	atomic_init(&h->refs, 1);
	h->fs = fs;
	if (ino == INO_STATUS) {
		if (wr)
			err = EACCES;
		else if ((err = open_access(req, fs, ino, NULL, fi->flags)))
			;
		else {
			h->text = nd_status_json(fs);
			h->text_len = h->text ? strlen(h->text) : 0;
			fi->direct_io = 1;
		}
	} else if (ino < FIRST_INO) {
		err = EISDIR;
	} else {
		pthread_rwlock_wrlock(&fs->lock);
		struct nd_fs_entry *e = nd_fs_find_ino(fs, ino);
		if (!e || e->removed)
			err = ENOENT;
		else if (wr && entry_ro(e))
			err = EROFS;
		else if ((err = open_access(req, fs, ino, e, fi->flags)))
			;
		else {
			e->opens++;
			h->e = e;
			/* The kernel's write-back may write this handle's pages
			 * through another one: its close flushes anyway. */
			h->wrote = wr && fs->kernel_writeback;
			if (e->cache || e->top)
				fi->keep_cache = 1;
			else
				fi->direct_io = 1;
		}
		pthread_rwlock_unlock(&fs->lock);
	}
	if (err) {
		free(h);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uintptr_t)h;
	fuse_reply_open(req, fi);
}

/* The calling thread's buffer for a read through the layers, kept between
 * requests: a fresh malloc of a large read is a new mmap whose every page
 * faults in and is cleared, which cost more than the copy itself. */
struct read_buf {
	size_t cap;
	char data[];
};
static pthread_key_t read_buf_key;
static pthread_once_t read_buf_once = PTHREAD_ONCE_INIT;

/* FUSE's idle worker threads exit: their buffers go with them. */
static void read_buf_key_init(void)
{
	pthread_key_create(&read_buf_key, free);
}

static char *read_buf(size_t size)
{
	struct read_buf *b;
	pthread_once(&read_buf_once, read_buf_key_init);
	b = pthread_getspecific(read_buf_key);
	if (!b || size > b->cap) {
		size_t cap = size < MAX_IO ? MAX_IO : size;
		free(b);
		b = malloc(sizeof *b + cap);
		if (b)
			b->cap = cap;
		pthread_setspecific(read_buf_key, b);
	}
	return b ? b->data : NULL;
}

/* Reads left to a backend's completion (and the threads that finish
 * them): the session must outlive them all. */
static atomic_uint later_reads;

/* A read answered when its block comes, from the backend's thread. */
struct later_read {
	fuse_req_t req;
	struct handle *h;
	size_t size;
	off_t off;
	struct nd_layer_pin pin; /* a read the layers mapped onto the cache */
};

static void reply_read_err(fuse_req_t req, int r)
{
	fuse_reply_err(req, r == -ENOTSUP  ? EOPNOTSUPP
			    : r == -ESTALE ? EIO
					   : -r);
}

static void log_read_err(struct nd_fs_entry *e, size_t size, off_t off)
{
	nd_log(LOG_ERR, "entry '%s': read of %zu bytes at %lld: %s", e->name,
	       size, (long long)off, nd_get_error());
}

static void later_done(void *arg, int r, struct nd_cache_ref *ref);

/* A later_read ended (answered, or not needed): no longer counted. */
static void later_free(struct later_read *a)
{
	free(a);
	atomic_fetch_sub(&later_reads, 1);
}

/* A read of the cache's blocks C at COFF: replied and 0, 1 when LATER
 * will answer it, or -errno (not replied). */
static int read_cache(fuse_req_t req, struct nd_cache *c, size_t size,
		      uint64_t coff, struct later_read *later)
{
	struct nd_cache_ref ref;
	int r = later ? nd_cache_read_async(c, coff, size, &ref, later_done,
					    later)
		      : nd_cache_read(c, coff, size, &ref);
	if (r == 0) {
		fuse_reply_iov(req, ref.iov, ref.n);
		nd_cache_release(c, &ref);
	}
	return r;
}

/* A read of E's layers: replied and 0, 1 when LATER will answer it, or
 * -errno (not replied). One that lies as it is in the cache under them
 * (a qcow2 data cluster) is read like a read without layers, so a miss
 * waits for no thread. */
static int read_layers(fuse_req_t req, struct nd_fs_entry *e, size_t size,
		       off_t off, struct later_read *later)
{
	struct nd_cache *c;
	uint64_t coff;
	int r;
	if (later &&
	    nd_layer_map(e->top, size, off, &c, &coff, &later->pin) == 1) {
		if ((r = read_cache(req, c, size, coff, later)) != 1)
			nd_layer_unpin(&later->pin);
		return r;
	}
	/* The layers reply from the cache's blocks where they can; the
	 * buffer takes only what they must copy. */
	char *buf = read_buf(size);
	struct nd_layer_ref ref;
	nd_layer_ref_init(&ref);
	r = buf ? nd_layer_read_ref(e->top, size, off, buf, &ref) : -ENOMEM;
	if (r == 0)
		fuse_reply_iov(req, ref.iov, (int)ref.n);
	nd_layer_ref_release(&ref);
	return r;
}

/* One read of entry E: replied and 0, 1 when LATER will answer it, or
 * -errno (not replied). */
static int read_entry(fuse_req_t req, struct nd_fs_entry *e, size_t size,
		      off_t off, struct later_read *later)
{
	int r;
	if ((uint64_t)off >= entry_size(e)) {
		fuse_reply_buf(req, NULL, 0);
		return 0;
	}
	if (size > entry_size(e) - off)
		size = entry_size(e) - off;
	if (e->top) {
		r = read_layers(req, e, size, off, later);
	} else if (!e->cache) {
		char *buf = read_buf(size);
		r = buf ? nd_disk_pread(e->disk, buf, size, off) : -ENOMEM;
		if (r == 0)
			fuse_reply_buf(req, buf, size);
	} else {
		r = read_cache(req, e->cache, size, (uint64_t)off, later);
	}
	/* A changed object was said once by the disk; the read is done
	 * again on the entry opened afresh. */
	if (r < 0 && r != -ESTALE)
		log_read_err(e, size, off);
	return r;
}

/* A read (H entered); true when LATER will answer it. *REFRESHED: the
 * entry was opened afresh on the way (its object changed on the server:
 * the kernel's pages of it must go, once this request is replied). */
static bool do_read(fuse_req_t req, struct handle *h, size_t size, off_t off,
		    struct later_read *later, bool *refreshed)
{
	struct nd_fs_entry *e = h->e;
	int r;

	*refreshed = false;
	if (!e) { /* status */
		size_t n = (size_t)off >= h->text_len ? 0 : h->text_len - off;
		fuse_reply_buf(req, n ? h->text + off : NULL,
			       n < size ? n : size);
		return false;
	}
	/* A changed object: the entry is opened afresh and the read done
	 * again there, so it returns the new bytes, never a mix. */
	while ((r = read_entry(req, e, size, off, later)) == -ESTALE &&
	       !*refreshed) {
		struct nd_disk *seen = e->disk;
		nd_fs_leave(e);
		r = nd_fs_refresh(h->fs, e, seen);
		nd_fs_enter(e);
		*refreshed = true;
		later = NULL;
		if (r < 0)
			break;
	}
	if (r == 1)
		return true;
	if (r < 0)
		reply_read_err(req, r);
	return false;
}

static void *unref_thread(void *arg)
{
	handle_unref(arg);
	atomic_fetch_sub(&later_reads, 1);
	return NULL;
}

/* Drop a reference to H from a backend's thread: the last one closes the
 * entry, and with it maybe that backend's connection, which waits for the
 * very thread it would run in; so that one goes to a thread of its own. */
static void handle_unref_later(struct handle *h)
{
	unsigned v = atomic_load(&h->refs);
	while (v > 1)
		if (atomic_compare_exchange_weak(&h->refs, &v, v - 1))
			return;
	atomic_fetch_add(&later_reads, 1);
	if (!nd_detached(unref_thread, h))
		unref_thread(h);
}

/* A read whose object changed while its block was fetched: done again
 * the ordinary way (which opens the entry afresh), in a thread of its
 * own since that waits on the backend's threads. */
static void *read_again(void *arg)
{
	struct later_read *a = arg;
	struct handle *h = a->h;
	bool refreshed;

	nd_fs_enter(h->e);
	do_read(a->req, h, a->size, a->off, NULL, &refreshed);
	nd_fs_leave(h->e);
	if (refreshed)
		nd_fs_invalidate(h->fs, h->e);
	handle_unref(h);
	later_free(a);
	return NULL;
}

/* The end of a read left to the backend: its answer, straight from the
 * backend's thread (no FUSE thread waits for it). */
static void later_done(void *arg, int r, struct nd_cache_ref *ref)
{
	struct later_read *a = arg;

	if (r == -ESTALE) {
		nd_layer_unpin(&a->pin);
		if (nd_detached(read_again, a))
			return;
	}
	if (r == 0) {
		fuse_reply_iov(a->req, ref->iov, ref->n);
	} else {
		log_read_err(a->h->e, a->size, a->off);
		reply_read_err(a->req, r);
	}
	nd_layer_unpin(&a->pin);
	handle_unref_later(a->h);
	later_free(a);
}

/* A later_read for a read of H, counted; NULL when the read cannot be
 * answered later (no cache, layers, the status file, no memory). */
static struct later_read *later_new(fuse_req_t req, struct handle *h,
				    size_t size, off_t off)
{
	struct later_read *a;
	if (!h->e || !h->e->cache || (h->e->top && !h->e->top->ops->map) ||
	    !(a = malloc(sizeof *a)))
		return NULL;
	*a = (struct later_read){ req, h, size, off, { 0 } };
	atomic_fetch_add(&later_reads, 1);
	return a;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);
	/* h->e stays for the invalidation, or for the read answered later */
	atomic_fetch_add(&h->refs, 1);
	struct later_read *later = later_new(req, h, size, off);
	bool refreshed;

	(void)ino;
	if (do_read(req, h, size, off, later, &refreshed)) {
		handle_put(h); /* the second reference is the later read's */
		nd_loop_answer_later();
		return;
	}
	if (later)
		later_free(later);
	handle_put(h);
	if (refreshed)
		nd_fs_invalidate(h->fs, h->e);
	handle_unref(h);
}

/* The entry behind H if it may be written; else NULL, the error replied. */
static struct nd_fs_entry *writable(fuse_req_t req, struct handle *h)
{
	if (!h->e)
		fuse_reply_err(req, EBADF);
	else if (entry_ro(h->e))
		fuse_reply_err(req, EROFS);
	else
		return h->e;
	return NULL;
}

static void do_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct nd_fs_entry *e = writable(req, h);
	int r;

	if (!e)
		return;
	/* The disk never grows: a write at the end is ENOSPC, one that
	 * crosses it is short. */
	if ((uint64_t)off >= entry_size(e)) {
		fuse_reply_err(req, size ? ENOSPC : 0);
		return;
	}
	if (size > entry_size(e) - off)
		size = entry_size(e) - off;
	h->wrote = true;
	r = e->top     ? nd_layer_pwrite(e->top, buf, size, off)
	    : e->cache ? nd_cache_write(e->cache, buf, size, off)
		       : nd_disk_pwrite(e->disk, buf, size, off, 0);
	if (r < 0) {
		nd_log(LOG_ERR, "entry '%s': write of %zu bytes at %lld: %s",
		       e->name, size, (long long)off, nd_get_error());
		fuse_reply_err(req, r == -ENOTSUP ? EOPNOTSUPP : -r);
		return;
	}
	fuse_reply_write(req, size);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);
	do_write(req, ino, buf, size, off, fi);
	handle_put(h);
}

static int entry_sync(struct nd_fs_entry *e)
{
	if (e->top)
		return nd_layer_flush(e->top);
	return e->cache ? nd_cache_flush(e->cache) : nd_disk_flush(e->disk);
}

static void do_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int r = h->e && !entry_ro(h->e) ? entry_sync(h->e) : 0;
	if (r < 0)
		nd_log(LOG_ERR, "entry '%s': fsync: %s", h->e->name,
		       nd_get_error());
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);
	do_fsync(req, ino, datasync, fi);
	handle_put(h);
}

/* close(2): what this handle wrote reaches the server's flush. With
 * cache=writeback dirty blocks stay until fsync or the last close
 * (release), since every close of a dup'ed descriptor lands here. */
static void do_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int r = 0;
	if (h->e && h->wrote &&
	    nd_disk_cfg(h->e->disk)->cache != ND_CACHE_WRITEBACK) {
		r = entry_sync(h->e);
		if (r < 0)
			nd_log(LOG_ERR, "entry '%s': flush at close: %s",
			       h->e->name, nd_get_error());
		else
			h->wrote = false;
	}
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);
	do_flush(req, ino, fi);
	handle_put(h);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);

	/* close(2) has no error to give here (release comes after it); a
	 * failure is logged, dirty data stays cached for the next flush and
	 * for the recovery file at unmount. */
	if (h->e && h->wrote && entry_sync(h->e) < 0)
		nd_log(LOG_ERR, "entry '%s': flush at the last close failed: %s",
		       h->e->name, nd_get_error());
	fuse_reply_err(req, 0);
	handle_put(h);
	handle_unref(h); /* the open's own reference */
}

static void do_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			 off_t len, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct nd_fs_entry *e = writable(req, h);
	uint64_t size;
	int r;

	if (!e)
		return;
	size = entry_size(e);
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE) {
		/* Everything is allocated already; growth is impossible. */
		fuse_reply_err(req, (uint64_t)off + len > size && !mode ? ENOSPC
									: 0);
		return;
	}
	if ((uint64_t)off >= size) {
		fuse_reply_err(req, 0);
		return;
	}
	if ((uint64_t)len > size - off)
		len = size - off;
	if (e->top && (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) ||
		       (mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE))
		r = nd_layer_zero(e->top, len, off);
	else if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		r = e->cache ? nd_cache_zero(e->cache, len, off, ND_MAY_TRIM)
			     : nd_disk_zero(e->disk, len, off, ND_MAY_TRIM);
	else if ((mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE)
		r = e->cache ? nd_cache_zero(e->cache, len, off, 0)
			     : nd_disk_zero(e->disk, len, off, 0);
	else
		r = -EOPNOTSUPP;
	if (r == 0)
		h->wrote = true;
	fuse_reply_err(req, r < 0 ? (r == -ENOTSUP ? EOPNOTSUPP : -r) : 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			 off_t len, struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);
	do_fallocate(req, ino, mode, off, len, fi);
	handle_put(h);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct nd_fs *fs = FS(req);
	struct statvfs sv;
	uint64_t total = 0, n = 0;

	pthread_rwlock_rdlock(&fs->lock);
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next, n++)
		total += entry_size(e);
	pthread_rwlock_unlock(&fs->lock);
	memset(&sv, 0, sizeof sv);
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = (total + 4095) / 4096;
	sv.f_files = n + 3;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops nd_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readdir = op_readdir,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.statfs = op_statfs,
};

/* The kernel's readahead for this mount is set through its bdi; done from
 * a thread because stat() of the mount point needs the loop running. */
static void *tune_bdi(void *arg)
{
	struct nd_fs *fs = arg;
	struct stat st;
	char path[128];
	if (stat(fs->mountpoint, &st) == 0) {
		snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb",
			 major(st.st_dev), minor(st.st_dev));
		FILE *f = fopen(path, "we");
		if (f) {
			fprintf(f, "%llu\n",
				(unsigned long long)fs->kernel_readahead / 1024);
			fclose(f);
		}
	}
	return NULL;
}

/* -o kernel-cache=writeback|writethrough: may the kernel keep written
 * pages (FUSE's writeback cache) for the writable entries. */
static int kernel_cache_opt(struct nd_fs *fs, const char *v)
{
	if (strcmp(v, "writeback") == 0)
		fs->kernel_writeback = true;
	else if (strcmp(v, "writethrough") == 0)
		fs->kernel_writeback = false;
	else {
		fprintf(stderr, "netdiskfs: -o kernel-cache=%s: must be "
			"writeback or writethrough\n", v);
		return -1;
	}
	return 0;
}

/* ARGV's mount options for libfuse, with default_permissions added
 * unless -o no_default_permissions (which libfuse does not know) asked
 * otherwise: with allow_other the kernel then enforces the modes the
 * files show. Notes allow_other and the choice in FS. */
static int mount_args(struct nd_fs *fs, int argc, char **argv,
		      struct fuse_args *args)
{
	bool no_dp = false;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (i > 0 && strcmp(argv[i - 1], "-o") == 0) {
			fs->allow_other |= strcmp(a, "allow_other") == 0 ||
					   strcmp(a, "allow_root") == 0;
			if (strncmp(a, "kernel-cache=", 13) == 0) {
				if (kernel_cache_opt(fs, a + 13) < 0)
					return -1;
				continue;
			}
			if (strcmp(a, "no_default_permissions") == 0) {
				no_dp = true;
				continue;
			}
		}
		if (strcmp(a, "-o") == 0 && i + 1 < argc &&
		    (strcmp(argv[i + 1], "no_default_permissions") == 0 ||
		     strncmp(argv[i + 1], "kernel-cache=", 13) == 0))
			continue;
		if (fuse_opt_add_arg(args, a) != 0)
			return -1;
	}
	fs->kernel_perms = !no_dp;
	if (no_dp)
		return 0;
	return fuse_opt_add_arg(args, "-o") ||
	       fuse_opt_add_arg(args, "default_permissions");
}

int nd_fuse_main(struct nd_fs *fs, const char *mountpoint, int argc,
		 char **argv, void (*on_ready)(void *), void *arg)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	int ret = 1;

	if (mount_args(fs, argc, argv, &args) != 0)
		goto out;
	fs->mountpoint = strdup(mountpoint);
	se = fuse_session_new(&args, &nd_ops, sizeof nd_ops, fs);
	if (!se)
		goto out;
	/* A daemon started in the background of a shell inherits SIGINT
	 * ignored, and libfuse only replaces default handlers. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	/* SIGHUP is ours (reload), not libfuse's "exit". */
	signal(SIGHUP, SIG_IGN);
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	nd_fs_set_session(fs, se);
	if (fs->kernel_readahead) {
		pthread_t t;
		if (pthread_create(&t, NULL, tune_bdi, fs) == 0)
			pthread_detach(t);
	}
	if (on_ready)
		on_ready(arg);
	ret = nd_loop_run(se, 16) != 0;
	/* Reads still answered by backends' threads (each bounded by its
	 * entry's deadlines) reply through the session. */
	while (atomic_load(&later_reads))
		usleep(1000);
	/* Waits for a reload's notification in progress. */
	nd_fs_set_session(fs, NULL);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out:
	fuse_opt_free_args(&args);
	return ret;
}

void nd_fuse_exit(struct nd_fs *fs)
{
	if (fs->se)
		fuse_session_exit(fs->se);
}
