/* disk-priv.h: struct nd_disk's fields, for src/disk.c and its unit test
 * only; everything else goes through disk.h's accessors. */
#ifndef ND_DISK_PRIV_H
#define ND_DISK_PRIV_H

#include <pthread.h>
#include <stdatomic.h>

#include "disk.h"

struct nd_disk_stats {
	atomic_uint_fast64_t bytes_read, bytes_written, reads, writes,
		flushes, errors, reconnects;
};

struct nd_slot;

struct nd_disk {
	char *name;
	struct nd_opts opts;
	const struct nd_backend *be;
	struct nd_info info;
	struct nd_disk_cfg cfg;
	struct nd_settings settings; /* what open() gets, from cfg */
	/* The size the file shows is a slice of info.size (cfg.offset and
	 * cfg.size); read-only is cfg.ro or info.read_only: no copies. */

	/* lock protects the pool, the state and the reconnect thread's
	 * flags below; it is never held across a backend call. */
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* a slot freed, a connection came, state */
	pthread_cond_t rc_cond; /* wakes the reconnect thread */
	struct nd_slot *slots;
	unsigned nslots, maxslots; /* nslots: live connections */
	double no_grow_until; /* a failed pool growth pauses growing */
	bool grow_wanted;     /* all busy: the reconnect thread opens one */
	bool closing;	      /* nd_disk_close: the reconnect thread ends */
	pthread_t rc_thread;  /* opens every connection after the first */
	/* Held exclusively by a read-modify-write of partial blocks, shared
	 * by aligned writes: neither can undo the other. */
	pthread_rwlock_t rmw_lock;

	enum nd_conn_state state;
	time_t state_since;  /* wall clock, for status */
	double down_since;   /* monotonic: the last connection was lost */
	char last_error[512];
	struct nd_disk_stats st;
	/* The object on the server is not the one this disk was opened on
	 * (a reconnect found another size or validator, or a read said
	 * -ESTALE): every request fails with -ESTALE, and the entry is
	 * opened afresh (registry: nd_fs_refresh). */
	atomic_bool changed;
	bool offline; /* opened from recorded facts, no connection yet */
};

#endif
