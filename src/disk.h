/* disk.h: one opened entry: its backend, a pool of connections, limits,
 * emulation of what the backend lacks, and reconnection. */
#ifndef ND_DISK_H
#define ND_DISK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "opts.h"

enum nd_cache_mode { ND_CACHE_WRITETHROUGH, ND_CACHE_WRITEBACK, ND_CACHE_NONE };

/* The core's own options, parsed and checked once. */
struct nd_disk_cfg {
	bool ro;
	uint64_t readahead;  /* initial window in bytes */
	uint64_t block_size; /* cache block */
	uint64_t cache_size; /* 0 = share of the global budget */
	enum nd_cache_mode cache;
	unsigned connections;
	double timeout;		/* each backend request's deadline */
	double reconnect_delay; /* how long the entry waits for a reconnect */
	double open_timeout;	/* how long the first open retries */
	uint64_t offset, size;	/* slice; size 0 = to the end */
	int debug;		/* see struct nd_settings */
};

/* CONNECTED: at least one live connection. RECONNECTING: none, for less
 * than reconnect-delay; requests wait for the reconnect. FAILED: none for
 * reconnect-delay; requests fail at once with EIO while the reconnect
 * thread keeps trying. */
enum nd_conn_state { ND_CONNECTED, ND_RECONNECTING, ND_FAILED };

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
	uint64_t size; /* what the file shows */
	bool ro;

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
};

/* Drop from O the default keys (origin starting "-o" or containing
 * "defaults") that its driver does not take but another driver does; fail
 * on any other key neither the core nor the driver accepts, on an unknown
 * driver, and on bad core values (parsed here so they are reported at
 * load). */
int nd_disk_prune_opts(struct nd_opts *o);
int nd_disk_parse_cfg(const struct nd_opts *o, struct nd_disk_cfg *cfg);

/* Open the first connection (retrying for open-timeout). */
int nd_disk_open(const struct nd_opts *opts, struct nd_disk **out);
void nd_disk_close(struct nd_disk *d);

/* All I/O: bounded in time, 0 or -errno; offsets are within the file.
 * pwrite's flags: none are defined, pass 0; zero's: ND_MAY_TRIM. */
int nd_disk_pread(struct nd_disk *d, void *buf, size_t len, uint64_t off);
int nd_disk_pwrite(struct nd_disk *d, const void *buf, size_t len,
		   uint64_t off, unsigned flags);
int nd_disk_flush(struct nd_disk *d);
/* Make the disk SIZE bytes long (more than now), the new bytes reading as
 * zeroes: on a backend that can_grow, by a write ending at SIZE. -ENOSPC
 * with an nd_error when it cannot grow (a fixed-size disk, a slice). One
 * caller at a time (the format layer's allocation lock). */
int nd_disk_grow(struct nd_disk *d, uint64_t size);
int nd_disk_zero(struct nd_disk *d, uint64_t len, uint64_t off, unsigned flags);

/* Call every registered backend's shutdown once. */
void nd_backends_shutdown(void);

#endif
