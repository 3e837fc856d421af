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
#include "log.h"

struct nd_fs *nd_fs_new(void)
{
	struct nd_fs *fs = calloc(1, sizeof *fs);
	if (!fs)
		return NULL;
	pthread_rwlock_init(&fs->lock, NULL);
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

int nd_fs_add(struct nd_fs *fs, const char *name, const char *url,
	      struct nd_disk *disk, uint64_t budget)
{
	struct nd_fs_entry *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->name = strdup(name);
	e->url_redacted = nd_redact(url);
	e->disk = disk;
	if (disk->cfg.cache != ND_CACHE_NONE) {
		e->cache = nd_cache_new(disk, budget);
		if (!e->cache) {
			free(e->name);
			free(e->url_redacted);
			free(e);
			return -ENOMEM;
		}
	}
	pthread_rwlock_wrlock(&fs->lock);
	drop_failed(fs, name);
	e->ino = fs->next_ino++;
	struct nd_fs_entry **pp = &fs->entries;
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	pthread_rwlock_unlock(&fs->lock);
	return 0;
}

static void entry_free(struct nd_fs_entry *e)
{
	if (e->cache) {
		int r = nd_cache_flush(e->cache);
		if (r < 0)
			nd_log(LOG_ERR, "entry '%s': final flush failed: %s",
			       e->name, strerror(-r));
		nd_cache_free(e->cache);
	}
	nd_disk_close(e->disk);
	free(e->name);
	free(e->url_redacted);
	free(e);
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

struct nd_fs_entry *nd_fs_find_ino(struct nd_fs *fs, fuse_ino_t ino)
{
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next)
		if (e->ino == ino)
			return e;
	return NULL;
}

void nd_fs_remove(struct nd_fs *fs, const char *name)
{
	struct nd_fs_entry *victim = NULL;
	pthread_rwlock_wrlock(&fs->lock);
	drop_failed(fs, name);
	struct nd_fs_entry *e = nd_fs_find(fs, name);
	if (e) {
		e->removed = true;
		if (e->opens == 0) {
			entry_unlink(fs, e);
			victim = e;
		}
	}
	pthread_rwlock_unlock(&fs->lock);
	if (victim) {
		if (fs->se)
			fuse_lowlevel_notify_inval_entry(fs->se, INO_ROOT,
							 victim->name,
							 strlen(victim->name));
		entry_free(victim);
	}
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
		int r = e->cache ? nd_cache_flush(e->cache) : 0;
		if (r < 0 && !ret)
			ret = r;
	}
	pthread_rwlock_unlock(&fs->lock);
	return ret;
}

void nd_fs_changed(struct nd_fs *fs)
{
	if (fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, INO_ROOT, 0, 0);
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
	free(fs->mountpoint);
	free(fs);
}
