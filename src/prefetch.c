/* prefetch.c: prefetch=all fills the whole image into the cache
 * directory in the background; prefetch=idle does the same only while no
 * reader has waited for the server for IDLE_MS. One thread per entry, one
 * request at a time (a readahead-sized run of blocks the tier lacks), at a
 * lower CPU priority; before each request it gives way to any reader
 * waiting for the server, so it never stands in a reader's queue for a
 * connection. It stops at the tier's limit (it never evicts to make room:
 * what readers brought stays), when the tier turns off, or when the
 * object changed. A fetch error (the server away) is retried after a
 * pause; it never touches what the tier holds. Only read-only entries are
 * prefetched: a write racing a prefetch could leave older bytes behind. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "prefetch.h"
#include "util/clock.h"

#define IDLE_MS 2000   /* prefetch=idle: no reader waited this long */
#define RETRY_MS 1000  /* after a failed fetch */
#define YIELD_MS 20    /* a reader waits: look again after this */

struct nd_prefetch {
	struct nd_prefetch_cfg cfg;
	pthread_t thr;
	pthread_mutex_t lock; /* protects stop and state */
	pthread_cond_t cond;
	bool stop;
	char state[96];
};

int nd_prefetch_mode_of(const struct nd_opts *o, enum nd_prefetch_mode *m)
{
	const char *v = nd_opt_get(o, "prefetch");
	*m = ND_PREFETCH_OFF;
	if (!v || strcmp(v, "off") == 0)
		return 0;
	if (strcmp(v, "all") == 0)
		*m = ND_PREFETCH_ALL;
	else if (strcmp(v, "idle") == 0)
		*m = ND_PREFETCH_IDLE;
	else {
		errno = EINVAL;
		nd_error("prefetch=%s: expected off, idle or all", v);
		return -1;
	}
	return 0;
}

static void set_state(struct nd_prefetch *p, const char *s)
{
	pthread_mutex_lock(&p->lock);
	snprintf(p->state, sizeof p->state, "%s", s);
	pthread_mutex_unlock(&p->lock);
}

/* Sleep MS unless stopped; false when stopped. */
static bool pause_ms(struct nd_prefetch *p, unsigned ms)
{
	struct timespec until = nd_timespec(nd_mono_s() + ms / 1000.0);
	bool go;
	pthread_mutex_lock(&p->lock);
	if (!p->stop)
		pthread_cond_timedwait(&p->cond, &p->lock, &until);
	go = !p->stop;
	pthread_mutex_unlock(&p->lock);
	return go;
}

/* Wait until a request may go: no reader waiting (all), or none for
 * IDLE_MS (idle). False when stopped. */
static bool give_way(struct nd_prefetch *p)
{
	struct nd_reader_activity *r = p->cfg.readers;
	for (;;) {
		uint64_t since = nd_mono_ms() - atomic_load(&r->last_wait_ms);
		bool busy = atomic_load(&r->waiting) > 0;
		if (p->cfg.mode == ND_PREFETCH_IDLE)
			busy = busy || since < IDLE_MS;
		if (!busy)
			return pause_ms(p, 0);
		if (p->cfg.mode == ND_PREFETCH_IDLE)
			set_state(p, "waiting for readers to pause");
		if (!pause_ms(p, p->cfg.mode == ND_PREFETCH_IDLE ? 100 : YIELD_MS))
			return false;
	}
}

/* The run of absent blocks from *IDX (skipping present ones): its length
 * in blocks, 0 at the end. */
static uint64_t next_run(struct nd_prefetch *p, uint64_t *idx)
{
	uint64_t n = nd_tier_nblocks(p->cfg.tier);
	uint64_t per = p->cfg.chunk / p->cfg.block_size, run = 0;
	while (*idx < n && nd_tier_has(p->cfg.tier, *idx))
		(*idx)++;
	while (*idx + run < n && run < (per ? per : 1) &&
	       !nd_tier_has(p->cfg.tier, *idx + run))
		run++;
	return run;
}

/* Why the fill cannot go on, or NULL. */
static const char *why_stop(struct nd_prefetch *p)
{
	if (!nd_tier_is_on(p->cfg.tier))
		return "stopped: the disk tier is off";
	if (nd_disk_changed(p->cfg.disk))
		return "stopped: the object changed";
	return NULL;
}

/* Fetch RUN blocks from IDX into BUF and keep them. 0 or -errno. The
 * puts are synchronous, not through the tier's queue: this thread is in
 * the background already, so waiting for the disk paces it to the
 * disk's speed instead of filling the queue (whose room stays for the
 * blocks readers fetch) and dropping what it fetched. */
static int fill_run(struct nd_prefetch *p, char *buf, uint64_t idx,
		    uint64_t run)
{
	uint64_t bs = p->cfg.block_size, off = idx * bs;
	size_t len = off + run * bs <= p->cfg.size ? run * bs
						     : p->cfg.size - off;
	int r = nd_disk_pread(p->cfg.disk, buf, len, off);
	for (uint64_t k = 0; r == 0 && k < run && !nd_tier_full(p->cfg.tier);
	     k++) {
		size_t blen = len - k * bs < bs ? len - k * bs : bs;
		nd_tier_put(p->cfg.tier, idx + k, buf + k * bs, blen);
	}
	return r;
}

static void *prefetch_thread(void *arg)
{
	struct nd_prefetch *p = arg;
	char *buf = malloc(p->cfg.chunk);
	uint64_t idx = 0, run;
	const char *stop = buf ? NULL : "stopped: out of memory";

	/* Below the readers' threads for the CPU too (Linux: per thread). */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	while (!stop) {
		if ((stop = why_stop(p)))
			break;
		if (!(run = next_run(p, &idx))) {
			stop = "done";
			break;
		}
		if (nd_tier_full(p->cfg.tier)) {
			stop = "limit reached";
			break;
		}
		if (!give_way(p))
			break;
		set_state(p, "running");
		int r = fill_run(p, buf, idx, run);
		if (r == -ESTALE)
			continue; /* why_stop says so */
		if (r < 0) {
			set_state(p, "waiting for the server");
			nd_debug("prefetch: %s; again in %u ms", nd_get_error(),
				 RETRY_MS);
			if (!pause_ms(p, RETRY_MS))
				break;
			continue;
		}
		idx += run;
	}
	if (stop) {
		set_state(p, stop);
		nd_info("prefetch of %s: %s", nd_disk_name(p->cfg.disk), stop);
	}
	free(buf);
	return NULL;
}

struct nd_prefetch *nd_prefetch_start(const struct nd_prefetch_cfg *cfg)
{
	struct nd_prefetch *p;
	if (cfg->mode == ND_PREFETCH_OFF || !cfg->tier)
		return NULL;
	if (!(p = calloc(1, sizeof *p)))
		return NULL;
	p->cfg = *cfg;
	if (p->cfg.chunk < p->cfg.block_size)
		p->cfg.chunk = p->cfg.block_size;
	pthread_mutex_init(&p->lock, NULL);
	nd_cond_init_mono(&p->cond);
	snprintf(p->state, sizeof p->state, "starting");
	if (pthread_create(&p->thr, NULL, prefetch_thread, p) != 0) {
		nd_warn("entry '%s': prefetch: cannot start a thread",
			nd_disk_name(cfg->disk));
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->cond);
		free(p);
		return NULL;
	}
	return p;
}

void nd_prefetch_stop(struct nd_prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thr, NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}

void nd_prefetch_get_stats(struct nd_prefetch *p, struct nd_prefetch_stats *s)
{
	struct nd_tier_stats ts;
	static const char *const names[] = { "off", "idle", "all" };
	s->mode = names[p->cfg.mode];
	s->total = p->cfg.size;
	nd_tier_get_stats(p->cfg.tier, &ts);
	s->done = ts.present < p->cfg.size ? ts.present : p->cfg.size;
	pthread_mutex_lock(&p->lock);
	snprintf(s->state, sizeof s->state, "%s", p->state);
	pthread_mutex_unlock(&p->lock);
}
