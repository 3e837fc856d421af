/* registry.c: the set of entries a mount serves, by name and by inode
 * number, and the entries of the table that could not be opened. A reload
 * adds and removes entries while FUSE requests look them up; an entry with
 * open files outlives its removal until the last one is closed. */
#include "fuse_ver.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "layers/stack.h"
#include "log.h"
#include "recover.h"

struct nd_fs *nd_fs_new(void)
{
	struct nd_fs *fs = calloc(1, sizeof *fs);
	if (!fs)
		return NULL;
	pthread_rwlock_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->se_lock, NULL);
	fs->next_ino = FIRST_INO;
	fs->mount_time = time(NULL);
	fs->uid = getuid();
	fs->gid = getgid();
	return fs;
}

/* Lock held (write). */
static void drop_failed(struct nd_fs *fs, const char *name)
{
	for (struct nd_fs_failed **pp = &fs->failed; *pp; pp = &(*pp)->next) {
		struct nd_fs_failed *f = *pp;
		if (strcmp(f->name, name) == 0) {
			*pp = f->next;
			free(f->name);
			free(f->url_redacted);
			free(f->driver);
			free(f->error);
			free(f);
			return;
		}
	}
}

void nd_fs_add_failed(struct nd_fs *fs, const char *name, const char *url,
		      const char *driver, const char *error)
{
	struct nd_fs_failed *f = calloc(1, sizeof *f);
	if (!f)
		return;
	f->name = strdup(name);
	f->url_redacted = nd_redact(url);
	f->driver = strdup(driver ? driver : "");
	f->error = strdup(error);
	f->since = time(NULL);
	pthread_rwlock_wrlock(&fs->lock);
	drop_failed(fs, name);
	f->next = fs->failed;
	fs->failed = f;
	pthread_rwlock_unlock(&fs->lock);
}

/* An entry's definition: what a reload swaps under its name. */
struct backing {
	char *url_redacted, *key;
	struct nd_disk *disk;
	struct nd_cache *cache;
	struct nd_layer *top; /* the optional layers over the cache */
};

static int backing_new(struct backing *b, const char *url, const char *key,
		       struct nd_disk *disk, uint64_t budget)
{
	memset(b, 0, sizeof *b);
	b->disk = disk;
	b->url_redacted = nd_redact(url);
	b->key = strdup(key ? key : "");
	if (nd_disk_cfg(disk)->cache != ND_CACHE_NONE)
		b->cache = nd_cache_new(disk, budget);
	int r = -ENOMEM;
	if (b->url_redacted && b->key &&
	    (nd_disk_cfg(disk)->cache == ND_CACHE_NONE || b->cache) &&
	    (r = nd_stack_open(disk, b->cache, &b->top)) == 0)
		return 0;
	if (r != -ENOMEM)
		nd_log(LOG_ERR, "entry '%s': %s", nd_disk_name(disk), nd_get_error());
	nd_cache_free(b->cache);
	free(b->url_redacted);
	free(b->key);
	return r;
}

/* Frees what B holds; its dirty blocks must have been written back. */
static void backing_free(struct backing *b)
{
	nd_layer_close(b->top); /* its files closed, what is under it kept */
	nd_cache_free(b->cache);
	if (b->disk)
		nd_disk_close(b->disk);
	free(b->url_redacted);
	free(b->key);
}

/* Exchange E's definition with B's. Called with E->io and fs->lock held
 * (write). */
static void backing_swap(struct nd_fs_entry *e, struct backing *b)
{
	struct backing old = { e->url_redacted, e->key, e->disk, e->cache,
			       e->top };
	e->url_redacted = b->url_redacted;
	e->key = b->key;
	e->disk = b->disk;
	e->cache = b->cache;
	e->top = b->top;
	*b = old;
}

static struct nd_fs_entry *entry_new(const char *name, struct backing *b)
{
	struct nd_fs_entry *e = calloc(1, sizeof *e);
	pthread_rwlockattr_t a;
	if (!e || !(e->name = strdup(name))) {
		free(e);
		return NULL;
	}
	/* Writers first: a swap waits only for the requests in flight, not
	 * for a stream of new ones. */
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(&a,
				      PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&e->io, &a);
	pthread_rwlockattr_destroy(&a);
	backing_swap(e, b);
	return e;
}

/* Write back what E holds dirty and flush the server, so that what E's
 * writers were acknowledged is on the server. Only a failed write-back
 * fails: without one every acknowledged write is on the server already,
 * and a failed flush must not pin a definition whose server is gone
 * (the table may just have moved the entry to another one). E->io held
 * (write), or E unreachable. */
static int entry_settle(struct nd_fs_entry *e)
{
	int r;
	/* The layers first (an overlay's map, a format's metadata), down
	 * through the cache to the server. */
	if (e->top)
		return e->top->ro ? 0 : nd_layer_flush(e->top);
	if (nd_disk_read_only(e->disk))
		return 0;
	if (e->cache && nd_disk_cfg(e->disk)->cache == ND_CACHE_WRITEBACK)
		return nd_cache_flush(e->cache);
	r = e->cache ? nd_cache_flush(e->cache) : nd_disk_flush(e->disk);
	if (r < 0)
		nd_warn("entry '%s': flush: %s", e->name, strerror(-r));
	return 0;
}

static void entry_free(struct nd_fs_entry *e)
{
	struct backing b = { 0 };
	int r = entry_settle(e);
	if (r < 0) {
		nd_log(LOG_ERR, "entry '%s': final flush failed: %s", e->name,
		       strerror(-r));
		/* What the server did not take is kept, not dropped. */
		if (e->cache)
			nd_recover_save(e->name, e->disk, e->cache);
	}
	backing_swap(e, &b);
	backing_free(&b);
	pthread_rwlock_destroy(&e->io);
	free(e->name);
	free(e);
}

/* The kernel forgets what it knows of E's name and pages: both may
 * belong to the definition a reload just replaced. Never called with a
 * lock a FUSE request may wait on: the kernel may wait for a request in
 * flight on these pages. */
static void invalidate(struct nd_fs *fs, struct nd_fs_entry *e)
{
	pthread_mutex_lock(&fs->se_lock);
	if (fs->se) {
		fuse_lowlevel_notify_inval_inode(fs->se, e->ino, 0, 0);
		fuse_lowlevel_notify_inval_entry(fs->se, INO_ROOT, e->name,
						 strlen(e->name));
	}
	pthread_mutex_unlock(&fs->se_lock);
}

/* Lock held (write). Unlinks E (the caller frees it). */
static void entry_unlink(struct nd_fs *fs, struct nd_fs_entry *e)
{
	struct nd_fs_entry **pp = &fs->entries;
	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
}

struct nd_fs_entry *nd_fs_find(struct nd_fs *fs, const char *name)
{
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next)
		if (!e->removed && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* Lock held. NAME's entry, also one removed but still open. */
static struct nd_fs_entry *find_any(struct nd_fs *fs, const char *name)
{
	struct nd_fs_entry *e = nd_fs_find(fs, name);
	for (struct nd_fs_entry *r = fs->entries; r && !e; r = r->next)
		if (strcmp(r->name, name) == 0)
			e = r;
	return e;
}

struct nd_fs_entry *nd_fs_find_ino(struct nd_fs *fs, uint64_t ino)
{
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next)
		if (e->ino == ino)
			return e;
	return NULL;
}

char *nd_fs_key(struct nd_fs *fs, const char *name)
{
	pthread_rwlock_rdlock(&fs->lock);
	struct nd_fs_entry *e = nd_fs_find(fs, name);
	char *k = e ? strdup(e->key) : NULL;
	pthread_rwlock_unlock(&fs->lock);
	return k;
}

char **nd_fs_names(struct nd_fs *fs)
{
	size_t n = 0, i = 0;
	pthread_rwlock_rdlock(&fs->lock);
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next)
		n++;
	char **v = calloc(n + 1, sizeof *v);
	for (struct nd_fs_entry *e = fs->entries; v && e; e = e->next)
		if (!e->removed)
			v[i++] = strdup(e->name);
	pthread_rwlock_unlock(&fs->lock);
	return v;
}

/* Swap B in as E's definition: requests on E pause while those in flight
 * finish and E's dirty blocks reach the server, so the new definition
 * starts from what the server holds and E's open files go on with it (one
 * cache). If that write-back fails, E keeps its definition. */
static int entry_replace(struct nd_fs *fs, struct nd_fs_entry *e,
			 struct backing *b)
{
	pthread_rwlock_wrlock(&e->io);
	int r = entry_settle(e);
	if (r == 0) {
		pthread_rwlock_wrlock(&fs->lock);
		backing_swap(e, b);
		e->removed = false;
		drop_failed(fs, e->name);
		pthread_rwlock_unlock(&fs->lock);
	}
	pthread_rwlock_unlock(&e->io);
	if (r < 0)
		return r;
	backing_free(b);
	invalidate(fs, e);
	return 0;
}

void nd_fs_invalidate(struct nd_fs *fs, struct nd_fs_entry *e)
{
	invalidate(fs, e);
}

/* E's facts for a new definition of it, if it still serves SEEN. Lock
 * held (read). */
static bool refresh_facts(struct nd_fs_entry *e, const struct nd_disk *seen,
			  struct nd_opts *o, char **url, char **key,
			  uint64_t *budget)
{
	struct nd_cache_stats cs = { 0 };
	if (e->disk != seen)
		return false;
	nd_opts_copy(o, nd_disk_opts(e->disk));
	*url = strdup(e->url_redacted);
	*key = strdup(e->key);
	if (e->cache)
		nd_cache_get_stats(e->cache, &cs);
	*budget = cs.budget;
	return true;
}

/* Swap a definition over the new disk D in as E's, if E still serves
 * SEEN: E's caches go with the old one; the old tier closes first so the
 * new one can take the directory (where it finds the old validator and
 * drops the blocks). Requests on E wait meanwhile. */
static int refresh_swap(struct nd_fs *fs, struct nd_fs_entry *e,
			const struct nd_disk *seen, struct nd_disk *d,
			const char *url, const char *key, uint64_t budget)
{
	struct backing b;
	int r = 0;
	pthread_rwlock_wrlock(&e->io);
	if (e->disk == seen) {
		/* Dirty blocks of a writeback cache cannot go to a changed
		 * object: they are saved for netdiskfs recover instead. */
		if (entry_settle(e) < 0 && e->cache)
			nd_recover_save(e->name, e->disk, e->cache);
		nd_cache_drop_tier(e->cache);
		r = backing_new(&b, url, key, d, budget);
		if (r == 0) {
			pthread_rwlock_wrlock(&fs->lock);
			backing_swap(e, &b);
			pthread_rwlock_unlock(&fs->lock);
		}
	} else {
		r = 1; /* swapped by someone else meanwhile */
	}
	pthread_rwlock_unlock(&e->io);
	if (r == 0)
		backing_free(&b);
	else
		nd_disk_close(d);
	return r < 0 ? r : 0;
}

int nd_fs_refresh(struct nd_fs *fs, struct nd_fs_entry *e,
		  const struct nd_disk *seen)
{
	static pthread_mutex_t one = PTHREAD_MUTEX_INITIALIZER;
	struct nd_opts o;
	struct nd_disk *d = NULL;
	char *url = NULL, *key = NULL;
	uint64_t budget = 0;
	int r = 0;

	pthread_mutex_lock(&one);
	pthread_rwlock_rdlock(&fs->lock);
	bool same = refresh_facts(e, seen, &o, &url, &key, &budget);
	pthread_rwlock_unlock(&fs->lock);
	if (same) {
		r = url && key ? nd_disk_open(&o, &d) : -ENOMEM;
		if (r == 0)
			r = refresh_swap(fs, e, seen, d, url, key, budget);
		if (r == 0)
			nd_info("entry '%s': opened afresh after the object "
				"changed (%llu bytes, validator %s)",
				e->name, (unsigned long long)nd_disk_size(d),
				nd_disk_info(d)->validator[0]
					? nd_disk_info(d)->validator
					: "none");
		else
			nd_log(LOG_ERR, "entry '%s': opening it afresh after "
					"the object changed: %s",
			       e->name, nd_get_error());
		nd_opts_free(&o);
	}
	free(url);
	free(key);
	pthread_mutex_unlock(&one);
	return r;
}

void nd_fs_refresh_changed(struct nd_fs *fs)
{
	char **names = nd_fs_names(fs);
	for (size_t i = 0; names && names[i]; i++) {
		pthread_rwlock_rdlock(&fs->lock);
		struct nd_fs_entry *e = nd_fs_find(fs, names[i]);
		struct nd_disk *seen = e && nd_disk_changed(e->disk) ? e->disk
								     : NULL;
		pthread_rwlock_unlock(&fs->lock);
		/* Only this thread removes entries: E stays. */
		if (seen && nd_fs_refresh(fs, e, seen) == 0)
			invalidate(fs, e);
		free(names[i]);
	}
	free(names);
}

int nd_fs_set(struct nd_fs *fs, const char *name, const char *url,
	      const char *key, struct nd_disk *disk, uint64_t budget)
{
	struct backing b;
	int r = backing_new(&b, url, key, disk, budget);
	if (r < 0)
		return r;
	/* Only the reload thread adds and removes entries, so E stays. */
	pthread_rwlock_rdlock(&fs->lock);
	struct nd_fs_entry *e = find_any(fs, name);
	pthread_rwlock_unlock(&fs->lock);
	if (e) {
		r = entry_replace(fs, e, &b);
		if (r < 0) {
			b.disk = NULL; /* the caller's on failure */
			backing_free(&b);
		}
		return r;
	}
	e = entry_new(name, &b);
	if (!e) {
		b.disk = NULL;
		backing_free(&b);
		return -ENOMEM;
	}
	pthread_rwlock_wrlock(&fs->lock);
	drop_failed(fs, name);
	e->ino = fs->next_ino++;
	struct nd_fs_entry **pp = &fs->entries;
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	pthread_rwlock_unlock(&fs->lock);
	invalidate(fs, e); /* a negative dentry of NAME */
	return 0;
}

/* A removed entry nothing has open is written back first and freed only
 * if that worked; otherwise it stays (hidden, marked removed) for the
 * write-back at unmount, so no acknowledged write is dropped here. */
void nd_fs_remove(struct nd_fs *fs, const char *name)
{
	struct nd_fs_entry *victim = NULL;
	pthread_rwlock_wrlock(&fs->lock);
	drop_failed(fs, name);
	struct nd_fs_entry *e = nd_fs_find(fs, name);
	if (e) {
		e->removed = true;
		if (e->opens == 0)
			victim = e;
	}
	pthread_rwlock_unlock(&fs->lock);
	if (e)
		invalidate(fs, e);
	if (!victim)
		return;
	pthread_rwlock_wrlock(&victim->io);
	int r = entry_settle(victim);
	pthread_rwlock_unlock(&victim->io);
	if (r < 0) {
		nd_log(LOG_ERR, "entry '%s': removed, but its write-back failed "
				"(%s); kept for the write-back at unmount",
		       name, strerror(-r));
		return;
	}
	pthread_rwlock_wrlock(&fs->lock);
	if (victim->opens == 0 && victim->removed)
		entry_unlink(fs, victim);
	else
		victim = NULL; /* reopened meanwhile by nd_fs_set */
	pthread_rwlock_unlock(&fs->lock);
	if (victim)
		entry_free(victim);
}

void nd_fs_enter(struct nd_fs_entry *e)
{
	pthread_rwlock_rdlock(&e->io);
}

void nd_fs_leave(struct nd_fs_entry *e)
{
	pthread_rwlock_unlock(&e->io);
}

void nd_fs_close(struct nd_fs *fs, struct nd_fs_entry *e)
{
	struct nd_fs_entry *victim = NULL;
	pthread_rwlock_wrlock(&fs->lock);
	if (--e->opens == 0 && e->removed) {
		entry_unlink(fs, e);
		victim = e;
	}
	pthread_rwlock_unlock(&fs->lock);
	if (victim)
		entry_free(victim);
}

int nd_fs_flush_all(struct nd_fs *fs)
{
	int ret = 0;
	pthread_rwlock_rdlock(&fs->lock);
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next) {
		int r = e->top && !e->top->ro ? nd_layer_flush(e->top)
			: e->cache		? nd_cache_flush(e->cache)
						: 0;
		if (r < 0 && !ret)
			ret = r;
	}
	pthread_rwlock_unlock(&fs->lock);
	return ret;
}

void nd_fs_changed(struct nd_fs *fs)
{
	pthread_mutex_lock(&fs->se_lock);
	if (fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, INO_ROOT, 0, 0);
	pthread_mutex_unlock(&fs->se_lock);
}

void nd_fs_set_session(struct nd_fs *fs, struct fuse_session *se)
{
	pthread_mutex_lock(&fs->se_lock);
	fs->se = se;
	pthread_mutex_unlock(&fs->se_lock);
}

double nd_fs_stop_bound(struct nd_fs *fs)
{
	double t = 10;
	pthread_rwlock_rdlock(&fs->lock);
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next) {
		const struct nd_disk_cfg *c = nd_disk_cfg(e->disk);
		if (!nd_disk_read_only(e->disk)) /* two bounded flushes */
			t += 2 * (c->reconnect_delay + c->timeout);
	}
	pthread_rwlock_unlock(&fs->lock);
	return t;
}

void nd_fs_free(struct nd_fs *fs)
{
	while (fs->entries) {
		struct nd_fs_entry *e = fs->entries;
		fs->entries = e->next;
		entry_free(e);
	}
	while (fs->failed)
		drop_failed(fs, fs->failed->name);
	pthread_rwlock_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->se_lock);
	free(fs->mountpoint);
	free(fs);
}
