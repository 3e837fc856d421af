/* tier.h: the persistent second tier of an entry's block cache: whole
 * cache blocks copied into a directory that survives unmount, crash and
 * reboot, each served only while its checksum matches. */
#ifndef ND_TIER_H
#define ND_TIER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct nd_tier;

struct nd_tier_cfg {
	const char *dir;       /* cache-dir= */
	uint64_t limit;	       /* cache-dir-size=; 0: 10% of the free space */
	uint32_t block_size;   /* the memory cache's block */
	uint64_t size;	       /* of the disk */
	const char *identity;  /* canonical options without secrets */
	const char *validator; /* what the server says of the object, or "" */
	const char *info;      /* the backend's facts, kept for nd_tier_peek */
	bool writable;	       /* this mount writes the disk */
	uint64_t queue;	       /* the writer's queue in bytes; 0: ND_TIER_QUEUE */
};

/* The bound of the queue of blocks waiting for a tier's writer thread
 * (nd_tier_queue_run), in bytes: beyond it, blocks are not kept. */
#define ND_TIER_QUEUE (32u << 20)

/* Open or create the entry's data under DIR. 0 with *out NULL when the
 * tier cannot be used (another mount holds it, the directory fails): the
 * reason is logged once and the entry works without it. -1 with an
 * nd_error only for a configuration that can never work. */
int nd_tier_open(const struct nd_tier_cfg *cfg, struct nd_tier **out);
/* A clean close: what is there stays valid for the next mount. */
void nd_tier_close(struct nd_tier *t);

/* Block IDX (LEN bytes: the block size, or less for the last block) into
 * BUF: true when it was there and its checksum matched. */
bool nd_tier_get(struct nd_tier *t, uint64_t idx, void *buf, size_t len);
/* The N blocks from IDX into BUF (contiguous, LEN bytes: only the last
 * block may be short) with one read: true when all were there and every
 * checksum matched (a bad one is forgotten). At most 64 blocks. */
bool nd_tier_get_run(struct nd_tier *t, uint64_t idx, size_t n, void *buf,
		     size_t len);
/* Readahead: the bytes [OFF, OFF+LEN) of the tier will be read soon. */
void nd_tier_advise(struct nd_tier *t, uint64_t off, uint64_t len);
/* Keep a copy of the N blocks from IDX in BUF (as for nd_tier_get_run)
 * with one write, now (the caller waits for the checksum and write). */
void nd_tier_put_run(struct nd_tier *t, uint64_t idx, size_t n,
		     const void *buf, size_t len);
/* Keep a copy of block IDX, evicting older blocks past the limit. */
void nd_tier_put(struct nd_tier *t, uint64_t idx, const void *buf,
		 size_t len);
/* nd_tier_put_run in the background, without a copy: true when the run
 * was queued, then the tier's writer thread writes BUF and calls
 * DONE(ARG) once it no longer needs BUF (written or not). False when it
 * was not queued (the queue full: counted in the stats; the tier off):
 * DONE is never called. Until written the blocks are not present. BUF
 * may change meanwhile only through a write of this mount, which calls
 * nd_tier_invalidate first. */
bool nd_tier_queue_run(struct nd_tier *t, uint64_t idx, size_t n,
		       const void *buf, size_t len, void (*done)(void *arg),
		       void *arg);
/* This mount is about to write block IDX: forget it (the new bytes are
 * put again once written), and cancel the copies of it queued until now.
 * The first call of a mount marks the tier "in use by a writer", so a
 * crash before the clean close drops it. */
void nd_tier_invalidate(struct nd_tier *t, uint64_t idx);
/* Is block IDX present (not checked)? */
bool nd_tier_has(struct nd_tier *t, uint64_t idx);

struct nd_tier_stats {
	uint64_t present, limit, hits, misses;
	bool on;
	char state[160]; /* "on", or "off: why" */
	char validator[128];
	char dropped[200]; /* why the blocks found at open were dropped, or "" */
	/* The writer's queue: bytes in it now, its bound, and what did not
	 * fit (not kept). */
	uint64_t queued, queue_limit, queue_dropped_bytes, queue_dropped_blocks;
};
void nd_tier_get_stats(struct nd_tier *t, struct nd_tier_stats *s);

/* Has the tier reached its limit (or is it off)? */
bool nd_tier_full(struct nd_tier *t);
bool nd_tier_is_on(struct nd_tier *t);
uint64_t nd_tier_nblocks(struct nd_tier *t);
/* What the last mount recorded for IDENTITY under DIR (no lock taken,
 * nothing changed): its validator and the backend's facts (malloc'd).
 * 0, or -1 when there is no such entry. */
int nd_tier_peek(const char *dir, const char *identity, char **validator,
		 char **info);

/* netdiskfs cache ls|verify|drop CACHE-DIR [NAME]: NAME matches an
 * entry's key or a part of its identity. 0, or 1 when verify found bad
 * blocks (it forgets them), -1 on an error. */
int nd_tier_ls(const char *dir, const char *name, FILE *out);
int nd_tier_verify(const char *dir, const char *name, FILE *out);
int nd_tier_drop(const char *dir, const char *name, FILE *out);

#endif
