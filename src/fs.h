/* fs.h: the mounted file system: the set of entries the FUSE side serves.
 * Entries are added, changed and removed while mounted (SIGHUP reload);
 * a changed entry keeps its name and open files; a removed entry with
 * open files stays until the last one is closed. */
#ifndef ND_FS_H
#define ND_FS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cache.h"
#include "disk.h"
#include "layers/layer.h"

/* Inode numbers: the root, .netdiskfs and its status file are fixed;
 * entries are numbered from FIRST_INO up. */
#define INO_ROOT 1
#define INO_META 2   /* .netdiskfs */
#define INO_STATUS 3 /* .netdiskfs/status */
#define FIRST_INO 16

/* One name of the mount. A reload swaps its definition (url_redacted,
 * key, disk, cache) in place, so the name and inode number stay and its
 * open files go on with the new definition. Read those four holding io
 * (read: every request on an open file does, for its duration) or the
 * registry's lock; a swap holds both (write). Lock order: io, then the
 * registry's lock. */
struct nd_fs_entry {
	uint64_t ino;
	char *name;
	char *url_redacted;
	char *key; /* the definition, to tell a changed table line */
	struct nd_disk *disk;
	struct nd_cache *cache; /* NULL with cache=none */
	struct nd_layer *top;	/* overlay/format layers; NULL: none */
	pthread_rwlock_t io;
	unsigned opens;
	bool removed;
	struct nd_fs_entry *next;
};

/* An entry of the table that could not be opened (shown in the status). */
struct nd_fs_failed {
	char *name, *url_redacted, *driver, *error;
	time_t since;
	struct nd_fs_failed *next;
};

struct nd_fs {
	pthread_rwlock_t lock;
	struct nd_fs_entry *entries;
	struct nd_fs_failed *failed;
	uint64_t next_ino;
	time_t mount_time;
	uid_t uid;
	gid_t gid;
	pthread_mutex_t se_lock; /* se, for notifications from the reload */
	struct fuse_session *se;
	char *mountpoint;
	uint64_t kernel_readahead; /* bytes, for the bdi; 0 = leave */
	/* Set by nd_fuse_main from the mount options: other users may come
	 * in (allow_other, allow_root), and whether the kernel checks modes
	 * (default_permissions, on unless -o no_default_permissions). */
	bool allow_other;
	bool kernel_perms;
	bool kernel_writeback; /* -o kernel-cache=writeback */
};

struct nd_fs *nd_fs_new(void);
/* Serve DISK (defined by KEY) as NAME: a new entry, or swapped in as the
 * definition of NAME's entry (also one removed but still open) once that
 * entry's requests in flight are done and its dirty blocks written back;
 * the kernel's name and pages are invalidated. Takes ownership of DISK on
 * success. BUDGET: cache bytes. Called from one thread (the reload). */
int nd_fs_set(struct nd_fs *fs, const char *name, const char *url,
	      const char *key, struct nd_disk *disk, uint64_t budget);
/* E's object changed on the server (its disk SEEN said -ESTALE): open it
 * afresh and swap the new definition in (empty caches, the cache
 * directory dropped by its validator), unless E serves another disk by
 * now. Called by a request that left E (nd_fs_leave); the caller retries
 * and, once it replied, calls nd_fs_invalidate: the kernel's pages of E
 * must go, but not while this request holds some of them. 0 or -errno. */
int nd_fs_refresh(struct nd_fs *fs, struct nd_fs_entry *e,
		  const struct nd_disk *seen);
/* Refresh every entry whose disk is marked changed, then invalidate it.
 * Called by the thread that adds and removes entries (the reload). */
void nd_fs_refresh_changed(struct nd_fs *fs);
/* The kernel forgets E's pages, attributes and name. */
void nd_fs_invalidate(struct nd_fs *fs, struct nd_fs_entry *e);
/* The definition NAME is served with (malloc'd), NULL if not served. */
char *nd_fs_key(struct nd_fs *fs, const char *name);
/* The served names (malloc'd, NULL-terminated). */
char **nd_fs_names(struct nd_fs *fs);
/* Record that NAME could not be opened (replacing an older record). */
void nd_fs_add_failed(struct nd_fs *fs, const char *name, const char *url,
		      const char *driver, const char *error);
/* Mark NAME removed; written back and freed now if nothing has it open. */
void nd_fs_remove(struct nd_fs *fs, const char *name);
/* Lock held (read or write). */
struct nd_fs_entry *nd_fs_find(struct nd_fs *fs, const char *name);
struct nd_fs_entry *nd_fs_find_ino(struct nd_fs *fs, uint64_t ino);
/* A request on an open file of E begins / ends: a reload swaps E's
 * definition only between requests. Never nested in one thread. */
void nd_fs_enter(struct nd_fs_entry *e);
void nd_fs_leave(struct nd_fs_entry *e);
/* One open file of E closed; frees E if it was removed and this was the
 * last. */
void nd_fs_close(struct nd_fs *fs, struct nd_fs_entry *e);
/* Flush every writeback cache; returns the first error. */
int nd_fs_flush_all(struct nd_fs *fs);
void nd_fs_free(struct nd_fs *fs);
/* Seconds the final write-back of every entry may take at most. */
double nd_fs_stop_bound(struct nd_fs *fs);
/* Tell the kernel the root directory's listing changed. */
void nd_fs_changed(struct nd_fs *fs);
/* The session notifications go to; NULL once the loop has ended. */
void nd_fs_set_session(struct nd_fs *fs, struct fuse_session *se);

/* FUSE: mount, serve until unmounted or signalled, unmount. ARGV holds
 * the libfuse options (-o allow_other, ...). ON_READY runs once the mount
 * is live (pidfile, telling the parent). */
int nd_fuse_main(struct nd_fs *fs, const char *mountpoint, int argc,
		 char **argv, void (*on_ready)(void *), void *arg);
/* Ask the loop to end (signal handlers). */
void nd_fuse_exit(struct nd_fs *fs);

/* The status file's JSON text (malloc'd). */
char *nd_status_json(struct nd_fs *fs);
/* `netdiskfs status MOUNTPOINT`: the status file as a table. */
int nd_status_print(const char *mountpoint);

#endif
