/* disk.h: one opened entry: its backend, a pool of connections, limits,
 * emulation of what the backend lacks, and reconnection. */
#ifndef ND_DISK_H
#define ND_DISK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

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

/* An opened entry; its fields are disk.c's own (src/disk-priv.h). */
struct nd_disk;

uint64_t nd_disk_size(const struct nd_disk *d); /* what the file shows */
bool nd_disk_read_only(const struct nd_disk *d); /* ro= or the backend's */
const char *nd_disk_name(const struct nd_disk *d);
const char *nd_disk_backend_name(const struct nd_disk *d);
const struct nd_opts *nd_disk_opts(const struct nd_disk *d);
const struct nd_disk_cfg *nd_disk_cfg(const struct nd_disk *d);
/* The backend's preferred request size (struct nd_info's opt_request). */
uint32_t nd_disk_opt_request(const struct nd_disk *d);
/* What the backend said at open (size, limits, validator). */
const struct nd_info *nd_disk_info(const struct nd_disk *d);

/* One consistent picture of the disk for the status file, taken under the
 * disk's lock (which no other file takes). */
struct nd_disk_status {
	enum nd_conn_state state;
	time_t state_since; /* wall clock */
	char last_error[512];
	unsigned connections, max_connections;
	uint64_t bytes_read, bytes_written, reads, writes, flushes, errors,
	    reconnects;
	bool changed; /* see nd_disk_changed */
	bool offline; /* opened from recorded facts, no connection yet */
};
void nd_disk_status(struct nd_disk *d, struct nd_disk_status *s);

/* Drop from O the default keys (origin starting "-o" or containing
 * "defaults") that its driver does not take but another driver does; fail
 * on any other key neither the core nor the driver accepts, on an unknown
 * driver, and on bad core values (parsed here so they are reported at
 * load). */
int nd_disk_prune_opts(struct nd_opts *o);
int nd_disk_parse_cfg(const struct nd_opts *o, struct nd_disk_cfg *cfg);

/* Open the first connection (retrying for open-timeout). */
int nd_disk_open(const struct nd_opts *opts, struct nd_disk **out);
/* Does the error of a failed open mean the server could not be reached
 * (rather than refused the object: no such file, no access)? */
bool nd_disk_err_is_outage(int err);
/* A disk whose server cannot be reached now, from what an earlier mount
 * recorded of it (INFO: size, limits, validator): no connection; requests
 * wait for the reconnect thread until reconnect-delay like after a lost
 * connection. The first connection must show the same size and
 * validator, or the disk is marked changed. */
int nd_disk_open_offline(const struct nd_opts *opts,
			 const struct nd_info *info, const char *why,
			 struct nd_disk **out);
/* See nd_disk.changed. */
bool nd_disk_changed(struct nd_disk *d);
/* Called (from any thread, no lock held) when a disk is first marked
 * changed, so that its entry is opened afresh even if nobody reads it;
 * it must not block. NULL: nobody is told. */
extern void (*nd_disk_on_change)(void);
void nd_disk_close(struct nd_disk *d);

/* All I/O: bounded in time, 0 or -errno; offsets are within the file.
 * pwrite's flags: none are defined, pass 0; zero's: ND_MAY_TRIM. */
int nd_disk_pread(struct nd_disk *d, void *buf, size_t len, uint64_t off);
/* Start a read that ends with DONE(ARG, 0 or -errno), in the backend's
 * thread on success, in a thread of its own after a failure (retried on
 * a new connection as nd_disk_pread would, within the same bounds).
 * 0 when started; -EAGAIN when this read cannot go this way (the backend
 * has no pread_async, the read needs alignment or splitting, no
 * connection is free now): use nd_disk_pread. */
int nd_disk_pread_async(struct nd_disk *d, void *buf, size_t len,
			uint64_t off, nd_done_fn done, void *arg);
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
