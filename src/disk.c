/* disk.c: one opened entry. Requests borrow a connection from the pool
 * for their duration (or share it when the backend is thread-safe); a
 * connection-level failure closes that connection and the request is
 * retried on a new one with backoff until reconnect-delay, then EIO.
 * What the backend lacks is emulated here (and only here): zeroing,
 * alignment, request splitting. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "disk-priv.h"
#include "log.h"
#include "url.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/detach.h"

#define MAX_BACKENDS 16
#define ZERO_CHUNK (1u << 20)

static const struct nd_backend *backends[MAX_BACKENDS + 1];
static size_t nbackends;

void nd_backend_register(const struct nd_backend *b)
{
	if (nbackends < MAX_BACKENDS)
		backends[nbackends++] = b;
}

const struct nd_backend *const *nd_backend_list(void)
{
	return backends;
}

const struct nd_backend *nd_backend_find(const char *driver)
{
	for (size_t i = 0; i < nbackends; i++)
		for (const char *const *d = backends[i]->drivers; *d; d++)
			if (strcmp(*d, driver) == 0)
				return backends[i];
	return NULL;
}

void nd_backends_shutdown(void)
{
	for (size_t i = 0; i < nbackends; i++)
		if (backends[i]->shutdown)
			backends[i]->shutdown();
}

/* --- options ---------------------------------------------------------- */

/* "server.N.host" matches "server.12.host". */
static bool key_matches(const char *pat, const char *key)
{
	const char *p0 = pat;
	while (*pat && *key) {
		if (*pat == 'N' && (pat == p0 || pat[-1] == '.') &&
		    (pat[1] == '.' || !pat[1]) && *key >= '0' && *key <= '9') {
			while (*key >= '0' && *key <= '9')
				key++;
			pat++;
			continue;
		}
		if (*pat != *key)
			return false;
		pat++, key++;
	}
	return !*pat && !*key;
}

static bool backend_takes(const struct nd_backend *b, const char *key)
{
	if (nd_opt_is_entry_core(key))
		return true;
	for (const struct nd_optdesc *d = b->options; d && d->key; d++)
		if (key_matches(d->key, key))
			return true;
	return false;
}

void nd_backend_print_options(FILE *f, const struct nd_backend *b)
{
	static const char *const shown[] = {
	    [ND_OPT_STRING] = "STRING",	  [ND_OPT_BOOL] = "on|off",
	    [ND_OPT_UINT] = "N",	  [ND_OPT_SIZE] = "SIZE",
	    [ND_OPT_SECONDS] = "SECONDS", [ND_OPT_FILE] = "PATH",
	};
	for (const struct nd_optdesc *d = b->options; d && d->key; d++) {
		char kv[64];
		snprintf(kv, sizeof kv, "%s=%s", d->key, shown[d->type]);
		fprintf(f, "    %-28s %s%s%s%s%s\n", kv, d->help,
			d->def ? " (" : "", d->def ? d->def : "",
			d->def ? ")" : "", d->secret ? ", secret" : "");
	}
}

/* A default meant for other drivers (initiator-name for the iSCSI
 * entries of a mixed table) is dropped quietly; one no driver knows is a
 * typo and an error. */
static bool any_backend_takes(const char *key)
{
	for (size_t i = 0; i < nbackends; i++)
		if (backend_takes(backends[i], key))
			return true;
	return false;
}


/* KEY of O, when given, must be one of the '|'-separated CHOICES. */
static int check_choice(const struct nd_opts *o, const char *key,
			const char *choices)
{
	const char *v = nd_opt_get(o, key);
	size_t n = v ? strlen(v) : 0;
	for (const char *p = choices; v && n; p = strchr(p, '|') + 1) {
		if (strncmp(p, v, n) == 0 && (p[n] == '|' || !p[n]))
			return 0;
		if (!strchr(p, '|'))
			break;
	}
	if (!v)
		return 0;
	errno = EINVAL;
	nd_error("%s=%s: expected %s", key, v, choices);
	return -1;
}

/* debug=: on/off, or a level (struct nd_settings). */
static int parse_debug(const struct nd_opts *o, int *level)
{
	const char *v = nd_opt_get(o, "debug");
	char *end;
	bool b;

	*level = -1;
	if (!v)
		return 0;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (*v >= '0' && *v <= '9' && !*end && !errno) {
		*level = n > ND_DEBUG_MAX ? ND_DEBUG_MAX : (int)n;
		return 0;
	}
	if (nd_parse_bool(v, &b) == 0) {
		*level = b ? ND_DEBUG_MAX : 0;
		return 0;
	}
	errno = EINVAL;
	nd_error("debug=%s: expected on, off or a level from 0 to %d", v,
		 ND_DEBUG_MAX);
	return -1;
}

int nd_disk_parse_cfg(const struct nd_opts *o, struct nd_disk_cfg *c)
{
	uint64_t u;
	const char *cache = nd_opt_get(o, "cache");

	memset(c, 0, sizeof *c);
	if (nd_opt_bool(o, "ro", false, &c->ro) == -1 ||
	    nd_opt_size(o, "readahead", 256 * 1024, &c->readahead) == -1 ||
	    nd_opt_size(o, "block-size", 64 * 1024, &c->block_size) == -1 ||
	    nd_opt_size(o, "cache-size", 0, &c->cache_size) == -1 ||
	    nd_opt_uint(o, "connections", 4, 1, 64, &u) == -1 ||
	    nd_opt_seconds(o, "timeout", ND_DEFAULT_TIMEOUT, &c->timeout) ==
		    -1 ||
	    nd_opt_seconds(o, "reconnect-delay", 10, &c->reconnect_delay) ==
		    -1 ||
	    nd_opt_seconds(o, "open-timeout", 0, &c->open_timeout) == -1 ||
	    nd_opt_size(o, "offset", 0, &c->offset) == -1 ||
	    nd_opt_size(o, "size", 0, &c->size) == -1 ||
	    check_choice(o, "cache-dir-mode", "read|off") == -1 ||
	    check_choice(o, "prefetch", "off|idle|all") == -1 ||

parse_debug(o, &c->debug) == -1)
		return -1;
	c->connections = u;
	if (!(c->timeout > 0)) /* 0: the default; never wait forever */
		c->timeout = ND_DEFAULT_TIMEOUT;
	if (c->readahead % 512) {
		errno = EINVAL;
		nd_error("readahead=%s: must be a multiple of 512",
			 nd_opt_get(o, "readahead"));
		return -1;
	}
	if (c->block_size < 4096 || c->block_size > (16u << 20) ||
	    (c->block_size & (c->block_size - 1))) {
		errno = EINVAL;
		nd_error("block-size=%s: must be a power of two from 4K to 16M",
			 nd_opt_get(o, "block-size"));
		return -1;
	}
	if (!cache || strcmp(cache, "writethrough") == 0)
		c->cache = ND_CACHE_WRITETHROUGH;
	else if (strcmp(cache, "writeback") == 0)
		c->cache = ND_CACHE_WRITEBACK;
	else if (strcmp(cache, "none") == 0)
		c->cache = ND_CACHE_NONE;
	else {
		errno = EINVAL;
		nd_error("cache=%s: expected writethrough, writeback or none",
			 cache);
		return -1;
	}
	return 0;
}

int nd_disk_prune_opts(struct nd_opts *o)
{
	const char *driver = nd_opt_get(o, "driver");
	const struct nd_backend *b = driver ? nd_backend_find(driver) : NULL;
	struct nd_disk_cfg cfg;

	if (!b) {
		errno = EINVAL;
		nd_error("driver '%s' is not compiled into this netdiskfs",
			 driver ? driver : "(none)");
		return -1;
	}
	for (size_t i = 0; i < o->n;) {
		if (backend_takes(b, o->v[i].key)) {
			i++;
			continue;
		}
		if (nd_opt_is_default(&o->v[i]) &&
		    any_backend_takes(o->v[i].key)) {
			nd_opt_del(o, o->v[i].key);
			continue;
		}
		errno = EINVAL;
		nd_error("unknown option '%s' for driver %s (%s)", o->v[i].key,
			 driver, o->v[i].origin);
		return -1;
	}
	if (nd_opt_secret_preload(o) == -1)
		return -1;
	return nd_disk_parse_cfg(o, &cfg);
}

/* --- the pool --------------------------------------------------------- */

/* Backoff between reconnect attempts: doubling, bounded, so a server that
 * comes back is found within BACKOFF_MAX (plus one connect). */
#define BACKOFF_MIN 0.05
#define BACKOFF_MAX 2.0

struct nd_slot {
	void *h;
	unsigned users;
	bool dead; /* failed: close once the last user is gone */
};

/* pthread_cond_timedwait until the monotonic time UNTIL (the conds use
 * CLOCK_MONOTONIC, see nd_cond_init_mono). */
static void wait_until(pthread_cond_t *c, pthread_mutex_t *m, double until)
{
	struct timespec ts = nd_timespec(until);
	pthread_cond_timedwait(c, m, &ts);
}

/* Called with d->lock held. */
static void set_state(struct nd_disk *d, enum nd_conn_state s, int err)
{
	if (d->state != s) {
		d->state = s;
		d->state_since = time(NULL);
	}
	if (err) {
		CLEANUP_FREE char *r = nd_redact(nd_get_error());
		snprintf(d->last_error, sizeof d->last_error, "%s",
			 r && *r ? r : strerror(-err));
	}
}

/* The last connection is gone: the reconnect-delay clock starts and the
 * reconnect thread takes over. Called with d->lock held. */
static void conn_lost(struct nd_disk *d, int err)
{
	if (d->state == ND_CONNECTED) {
		d->down_since = nd_mono_s();
		set_state(d, ND_RECONNECTING, err);
	}
	pthread_cond_signal(&d->rc_cond);
}

/* No connection for reconnect-delay: the entry is failed, and every
 * request fails at once until the reconnect thread succeeds. Called with
 * d->lock held; true when failed. */
static bool check_failed(struct nd_disk *d)
{
	if (d->state == ND_RECONNECTING &&
	    nd_mono_s() >= d->down_since + d->cfg.reconnect_delay) {
		set_state(d, ND_FAILED, 0);
		nd_warn(
		    "entry '%s': failed: no connection for %g s (reconnect-delay); requests fail at once while reconnecting goes on (%s)",
		    d->name, d->cfg.reconnect_delay, d->last_error);
		pthread_cond_broadcast(&d->cond);
	}
	return d->state == ND_FAILED;
}

/* The settings open() gets, from the parsed core options. */
static void settings_of(const struct nd_disk_cfg *c, struct nd_settings *s)
{
	s->read_only = c->ro;
	s->timeout = c->timeout;
	s->open_timeout = c->open_timeout;
	s->reconnect_delay = c->reconnect_delay;
	s->connections = c->connections;
	s->debug = c->debug;
}

/* The object changed: say so once; every request fails with -ESTALE
 * from now on (the entry is opened afresh by whoever sees it). */
void (*nd_disk_on_change)(void);

static void mark_changed(struct nd_disk *d)
{
	if (atomic_exchange(&d->changed, true))
		return;
	nd_warn("entry '%s': %s; its caches are dropped and it is opened "
		"afresh",
		d->name, nd_get_error());
	if (nd_disk_on_change)
		nd_disk_on_change();
}

bool nd_disk_changed(struct nd_disk *d)
{
	return atomic_load(&d->changed);
}

/* Open a backend connection; checks it is the same disk as before. */
static int open_conn(struct nd_disk *d, void **h)
{
	struct nd_info info;
	int r;

	memset(&info, 0, sizeof info);
	nd_clear_error();
	r = d->be->open(&d->opts, &d->settings, h, &info);
	if (r < 0) {
		*h = NULL;
		return r;
	}
	/* A container this entry grew (nd_disk_grow) may be found longer:
	 * the size the entry shows is what it wrote. */
	pthread_mutex_lock(&d->lock);
	uint64_t known = d->info.size;
	pthread_mutex_unlock(&d->lock);
	if ((info.size != known && !(d->info.can_grow && info.size > known)) ||
	    strcmp(info.validator, d->info.validator) != 0) {
		d->be->close(*h);
		*h = NULL;
		nd_error("the object on the server changed (size %llu, was "
			 "%llu; validator %s, was %s)",
			 (unsigned long long)info.size,
			 (unsigned long long)known,
			 info.validator[0] ? info.validator : "-",
			 d->info.validator[0] ? d->info.validator : "-");
		mark_changed(d);
		return -ESTALE;
	}
	return 0;
}

/* Put a new connection H into a free slot. Called with d->lock held;
 * false when no slot is free (H is then the caller's to close). */
static bool install(struct nd_disk *d, void *h)
{
	for (unsigned i = 0; i < d->maxslots; i++) {
		struct nd_slot *s = &d->slots[i];
		if (s->h)
			continue;
		s->h = h;
		s->users = 0;
		d->nslots++;
		if (d->state != ND_CONNECTED)
			nd_info("entry '%s': connected again after %.1f s",
				d->name, nd_mono_s() - d->down_since);
		set_state(d, ND_CONNECTED, 0);
		pthread_cond_broadcast(&d->cond);
		return true;
	}
	return false;
}

/* One attempt of the reconnect thread to open a connection (to replace
 * the lost ones, or to grow the pool). Called with d->lock held; true
 * when it should back off before the next. */
static bool reconnect_once(struct nd_disk *d)
{
	bool reconnect = d->nslots == 0;
	void *h;

	d->grow_wanted = false;
	pthread_mutex_unlock(&d->lock);
	int r = open_conn(d, &h);
	pthread_mutex_lock(&d->lock);
	if (r == 0) {
		if (!install(d, h)) {
			pthread_mutex_unlock(&d->lock);
			d->be->close(h);
			pthread_mutex_lock(&d->lock);
		}
		return false;
	}
	if (!reconnect || d->nslots) {
		/* Growing failed while others live: use those a while. */
		d->no_grow_until = nd_mono_s() + 5;
		return false;
	}
	set_state(d, d->state, r);
	nd_debug("entry '%s': reconnect failed (%s)", d->name, d->last_error);
	check_failed(d);
	return true;
}

/* The reconnect thread of an entry: every connection after the first is
 * opened here, so no request ever waits on a connect, and an entry whose
 * server is gone keeps trying with bounded backoff until close. */
static void *reconnect_thread(void *arg)
{
	struct nd_disk *d = arg;
	double backoff = BACKOFF_MIN;

	pthread_mutex_lock(&d->lock);
	while (!d->closing) {
		if (d->nslots > 0 && !d->grow_wanted) {
			backoff = BACKOFF_MIN;
			pthread_cond_wait(&d->rc_cond, &d->lock);
			continue;
		}
		if (!reconnect_once(d) || d->closing)
			continue;
		/* Wake when it is time to fail the entry, if that is
		 * sooner than the next attempt. */
		double until = nd_mono_s() + backoff;
		double fail_at = d->down_since + d->cfg.reconnect_delay;
		if (d->state == ND_RECONNECTING && fail_at < until)
			until = fail_at;
		wait_until(&d->rc_cond, &d->lock, until);
		check_failed(d);
		backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2;
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* A live connection to use: a free one, else (thread-safe backends) the
 * least used. Asks the reconnect thread for one more when all are busy
 * and the pool may grow. Called with d->lock held. */
static struct nd_slot *pick_slot(struct nd_disk *d)
{
	struct nd_slot *best = NULL;
	bool room = false;

	for (unsigned i = 0; i < d->maxslots; i++) {
		struct nd_slot *s = &d->slots[i];
		if (!s->h) {
			room = true;
			continue;
		}
		if (s->dead)
			continue;
		if (s->users == 0)
			return s;
		if (d->info.thread_safe && (!best || s->users < best->users))
			best = s;
	}
	if (room && d->nslots > 0 && nd_mono_s() >= d->no_grow_until &&
	    !d->grow_wanted) {
		d->grow_wanted = true;
		pthread_cond_signal(&d->rc_cond);
	}
	return best;
}

/* Borrow a connection, waiting at most until UNTIL (monotonic) and, while
 * there is no connection at all, at most until reconnect-delay after it
 * was lost. A failed entry fails at once. */
static int borrow(struct nd_disk *d, double until, struct nd_slot **out)
{
	pthread_mutex_lock(&d->lock);
	for (;;) {
		double end = until;
		if (d->nslots == 0) {
			if (check_failed(d))
				break;
			double fail_at = d->down_since + d->cfg.reconnect_delay;
			end = fail_at < end ? fail_at : end;
		}
		struct nd_slot *s = d->nslots ? pick_slot(d) : NULL;
		if (s) {
			s->users++;
			pthread_mutex_unlock(&d->lock);
			*out = s;
			return 0;
		}
		if (nd_mono_s() >= end)
			break;
		wait_until(&d->cond, &d->lock, end);
	}
	if (d->state == ND_FAILED) {
		char since[32];
		struct tm tm;
		gmtime_r(&d->state_since, &tm);
		strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
		nd_error("entry '%s': failed since %s, reconnecting (%s)",
			 d->name, since, d->last_error);
	} else if (d->nslots == 0)
		nd_error("entry '%s': no connection within reconnect-delay (%s)",
			 d->name, d->last_error);
	else
		nd_error("entry '%s': no free connection within reconnect-delay",
			 d->name);
	pthread_mutex_unlock(&d->lock);
	return -EIO;
}

static bool is_conn_error(int r)
{
	static const int conn_errnos[] = {ND_CONN_ERRNOS};
	for (size_t i = 0; i < sizeof conn_errnos / sizeof *conn_errnos; i++)
		if (r == -conn_errnos[i])
			return true;
	return false;
}

/* Take the handles of dead connections nobody uses (at most 64) into
 * CLOSE_H, freeing their slots; the caller closes them unlocked. Called
 * with d->lock held. */
static unsigned take_dead(struct nd_disk *d, void **close_h)
{
	unsigned n = 0;
	for (unsigned i = 0; i < d->maxslots && n < 64; i++) {
		struct nd_slot *t = &d->slots[i];
		if (t->h && t->dead && t->users == 0) {
			close_h[n++] = t->h;
			t->h = NULL;
			t->dead = false;
		}
	}
	return n;
}

/* Return S after a request that ended with R. A connection-level failure
 * retires every connection of the entry, not just S: they lead to the
 * same server, and trying each in turn would cost one timeout apiece. */
static void give_back(struct nd_disk *d, struct nd_slot *s, int r)
{
	void *close_h[64];
	unsigned n = 0;

	pthread_mutex_lock(&d->lock);
	if (r < 0)
		set_state(d, d->state, r);
	if (is_conn_error(r)) {
		for (unsigned i = 0; i < d->maxslots; i++) {
			if (d->slots[i].h && !d->slots[i].dead) {
				d->slots[i].dead = true;
				d->nslots--;
			}
		}
		atomic_fetch_add(&d->st.reconnects, 1);
		conn_lost(d, r);
	}
	s->users--;
	n = take_dead(d, close_h);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n; i++)
		d->be->close(close_h[i]);
}

enum op_kind { OP_READ, OP_WRITE, OP_FLUSH, OP_ZERO };

struct op {
	enum op_kind kind;
	void *buf;
	size_t len;
	uint64_t off;
	unsigned flags;
};

static int call_backend(struct nd_disk *d, void *h, const struct op *op)
{
	switch (op->kind) {
	case OP_READ: return d->be->pread(h, op->buf, op->len, op->off);
	case OP_WRITE: return d->be->pwrite(h, op->buf, op->len, op->off);
	case OP_FLUSH: return d->be->flush(h);
	case OP_ZERO: return d->be->zero(h, op->len, op->off, op->flags);
	}
	return -EINVAL;
}

/* A request that met only transient errors (-EAGAIN: a server that
 * refuses or answers 5xx each time) since STARTED until reconnect-delay ran
 * out: the entry is down as if its connection were lost then, so the
 * next requests fail at once while the reconnect thread probes. */
static void transient_down(struct nd_disk *d, double started)
{
	void *close_h[64];
	unsigned n;

	pthread_mutex_lock(&d->lock);
	if (d->state == ND_CONNECTED) {
		for (unsigned i = 0; i < d->maxslots; i++)
			if (d->slots[i].h && !d->slots[i].dead) {
				d->slots[i].dead = true;
				d->nslots--;
			}
		conn_lost(d, -EIO);
		d->down_since = started;
	}
	check_failed(d);
	n = take_dead(d, close_h);
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n; i++)
		d->be->close(close_h[i]);
}

/* One backend request, retried on a new connection after a lost one.
 * Waits and new attempts end reconnect-delay after the request came in
 * (STARTED), and each attempt is bounded by the backend's timeout, so no
 * request takes longer than reconnect-delay + timeout. */
static int run_op_since(struct nd_disk *d, const struct op *op,
			double started)
{
	double until = started + d->cfg.reconnect_delay;
	double backoff = BACKOFF_MIN;
	int r;

	for (;;) {
		struct nd_slot *s;
		if (atomic_load(&d->changed)) {
			nd_error("entry '%s': the object on the server changed",
				 d->name);
			return -ESTALE;
		}
		r = borrow(d, until, &s);
		if (r < 0)
			break;
		r = call_backend(d, s->h, op);
		give_back(d, s, r);
		if (r == -ESTALE)
			mark_changed(d);
		if (is_conn_error(r))
			nd_warn("entry '%s': connection lost (%s), retrying",
				d->name, nd_get_error());
		else if (r != -EAGAIN)
			break;
		if (r == -EAGAIN && nd_mono_s() + backoff < until) {
			nd_sleep_s(backoff);
			backoff = backoff * 2 > 1 ? 1 : backoff * 2;
		} else if (nd_mono_s() >= until || r == -EAGAIN) {
			if (r == -EAGAIN)
				transient_down(d, started);
			r = -EIO;
			break;
		}
	}
	if (r < 0) {
		atomic_fetch_add(&d->st.errors, 1);
		if (is_conn_error(r) || r == -EAGAIN)
			r = -EIO;
	}
	return r;
}

static int run_op(struct nd_disk *d, const struct op *op)
{
	return run_op_since(d, op, nd_mono_s());
}

/* --- reads answered from the backend's completion --------------------- */

static uint32_t max_req(const struct nd_disk *d);

struct aread {
	struct nd_disk *d;
	struct nd_slot *s;
	struct op op;
	double started;
	nd_done_fn done;
	void *arg;
	int r;
	char *msg; /* the failure's nd_error, carried to aread_slow's thread */
};

/* Give S back after a successful read, unless a connection of the entry
 * is dead and unused (closing it is for give_back, in another thread):
 * then false, S still borrowed. */
static bool give_back_ok(struct nd_disk *d, struct nd_slot *s)
{
	pthread_mutex_lock(&d->lock);
	bool ok = !s->dead;
	for (unsigned i = 0; ok && i < d->maxslots; i++)
		ok = !(d->slots[i].h && d->slots[i].dead &&
		       d->slots[i].users == (&d->slots[i] == s));
	if (ok) {
		s->users--;
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	return ok;
}

static void aread_read(struct nd_disk *d, size_t len)
{
	atomic_fetch_add(&d->st.reads, 1);
	atomic_fetch_add(&d->st.bytes_read, len);
}

/* After a failure (or with a dead connection to close): the slot back as
 * run_op gives it, the read again as run_op would go on with it, then
 * its end. A thread of its own: this may close connections and wait. */
static void *aread_slow(void *arg)
{
	struct aread *a = arg;
	struct nd_disk *d = a->d;
	int r = a->r;

	if (a->msg)
		nd_error("%s", a->msg);
	free(a->msg);
	give_back(d, a->s, r);
	if (r == -ESTALE)
		mark_changed(d);
	if (is_conn_error(r) || r == -EAGAIN) {
		if (is_conn_error(r))
			nd_warn("entry '%s': connection lost (%s), retrying",
				d->name, nd_get_error());
		r = run_op_since(d, &a->op, a->started);
	} else if (r < 0) {
		atomic_fetch_add(&d->st.errors, 1);
	}
	if (r == 0)
		aread_read(d, a->op.len);
	a->done(a->arg, r);
	free(a);
	return NULL;
}

static void aread_end(void *arg, int r)
{
	struct aread *a = arg;

	if (r == 0 && give_back_ok(a->d, a->s)) {
		aread_read(a->d, a->op.len);
		a->done(a->arg, 0);
		free(a);
		return;
	}
	a->r = r;
	a->msg = r ? strdup(nd_get_error()) : NULL;
	if (!nd_detached(aread_slow, a))
		aread_slow(a); /* no thread to be had: here, then */
}

/* A free connection now, or none (no waiting here). */
static struct nd_slot *borrow_now(struct nd_disk *d)
{
	struct nd_slot *s = NULL;
	pthread_mutex_lock(&d->lock);
	if (d->nslots && d->state == ND_CONNECTED && (s = pick_slot(d)))
		s->users++;
	pthread_mutex_unlock(&d->lock);
	return s;
}

int nd_disk_pread_async(struct nd_disk *d, void *buf, size_t len,
			uint64_t off, nd_done_fn done, void *arg)
{
	uint32_t bs = d->info.block_size;
	struct aread *a;
	struct nd_slot *s;
	int r;

	if (!d->be->pread_async || len > max_req(d) ||
	    off > nd_disk_size(d) || len > nd_disk_size(d) - off)
		return -EAGAIN;
	off += d->cfg.offset;
	if ((bs > 1 && (off % bs || len % bs)) || atomic_load(&d->changed))
		return -EAGAIN;
	if (!(a = malloc(sizeof *a)))
		return -EAGAIN;
	if (!(s = borrow_now(d))) {
		free(a);
		return -EAGAIN;
	}
	*a = (struct aread){ .d = d, .s = s, .op = { OP_READ, buf, len, off, 0 },
			     .started = nd_mono_s(), .done = done, .arg = arg };
	r = d->be->pread_async(s->h, buf, len, off, aread_end, a);
	if (r < 0) { /* not started: the slot back, the caller reads */
		give_back(d, s, r);
		free(a);
		return -EAGAIN;
	}
	return 0;
}

/* --- open / close ----------------------------------------------------- */

static void disk_free(struct nd_disk *d);

/* A disk for OPTS with its settings parsed, not yet connected. */
static int disk_new(const struct nd_opts *opts, struct nd_disk **out)
{
	struct nd_disk *d = calloc(1, sizeof *d);
	const char *driver = nd_opt_get(opts, "driver");
	int r;

	*out = NULL;
	if (!d)
		return -ENOMEM;
	d->name = strdup(opts->name);
	nd_opts_copy(&d->opts, opts);
	pthread_mutex_init(&d->lock, NULL);
	pthread_rwlock_init(&d->rmw_lock, NULL);
	nd_cond_init_mono(&d->cond);
	nd_cond_init_mono(&d->rc_cond);
	d->be = driver ? nd_backend_find(driver) : NULL;
	if (!d->be) {
		nd_error("driver '%s' is not compiled in",
			 driver ? driver : "(none)");
		r = -ENOTSUP;
		goto fail;
	}
	if (nd_disk_parse_cfg(opts, &d->cfg) == -1) {
		r = -EINVAL;
		goto fail;
	}
	settings_of(&d->cfg, &d->settings);
	*out = d;
	return 0;
fail:
	disk_free(d);
	return r;
}

/* From d->info: the file's size, the pool, the reconnect thread; H, the
 * first connection, or NULL (offline). H is closed on failure. */
static int disk_start(struct nd_disk *d, void *h)
{
	int r;
	if (d->info.block_size < 1)
		d->info.block_size = 1;
	if (d->cfg.offset > d->info.size ||
	    d->cfg.size > d->info.size - d->cfg.offset) {
		nd_error("offset/size reach past the end of the disk (%llu "
			 "bytes)",
			 (unsigned long long)d->info.size);
		r = -EINVAL;
		goto fail;
	}
	d->maxslots = d->cfg.connections;
	if (d->info.max_connections && d->maxslots > d->info.max_connections)
		d->maxslots = d->info.max_connections;
	if (d->maxslots < 1)
		d->maxslots = 1;
	d->slots = calloc(d->maxslots, sizeof *d->slots);
	if (!d->slots) {
		r = -ENOMEM;
		goto fail;
	}
	d->slots[0].h = h;
	d->nslots = h ? 1 : 0;
	d->state = h ? ND_CONNECTED : ND_RECONNECTING;
	d->state_since = time(NULL);
	d->down_since = nd_mono_s();
	r = -pthread_create(&d->rc_thread, NULL, reconnect_thread, d);
	if (r == 0)
		return 0;
	free(d->slots);
	d->slots = NULL;
fail:
	if (h)
		d->be->close(h);
	return r;
}

int nd_disk_open(const struct nd_opts *opts, struct nd_disk **out)
{
	struct nd_disk *d;
	void *h = NULL;
	int r = disk_new(opts, &d);

	if (r < 0)
		return r;
	double deadline = nd_mono_s() + d->cfg.open_timeout;
	double backoff = 0.1;
	for (;;) {
		nd_clear_error();
		r = d->be->open(&d->opts, &d->settings, &h, &d->info);
		if (r == 0 || !(is_conn_error(r) || r == -EAGAIN) ||
		    nd_mono_s() + backoff > deadline)
			break;
		nd_debug("entry '%s': open failed (%s), retrying", d->name,
			 nd_get_error());
		nd_sleep_s(backoff);
		backoff = backoff * 2 > 2 ? 2 : backoff * 2;
	}
	if (r == 0)
		r = disk_start(d, h);
	if (r < 0) {
		disk_free(d);
		return r;
	}
	*out = d;
	return 0;
}

bool nd_disk_err_is_outage(int err)
{
	return is_conn_error(err) || err == -EAGAIN;
}

int nd_disk_open_offline(const struct nd_opts *opts,
			 const struct nd_info *info, const char *why,
			 struct nd_disk **out)
{
	struct nd_disk *d;
	int r = disk_new(opts, &d);

	if (r < 0)
		return r;
	d->info = *info;
	d->offline = true;
	snprintf(d->last_error, sizeof d->last_error, "%s", why);
	if ((r = disk_start(d, NULL)) < 0) {
		disk_free(d);
		return r;
	}
	*out = d;
	return 0;
}

/* What disk_new made. */
static void disk_free(struct nd_disk *d)
{
	nd_opts_free(&d->opts);
	pthread_mutex_destroy(&d->lock);
	pthread_rwlock_destroy(&d->rmw_lock);
	pthread_cond_destroy(&d->cond);
	pthread_cond_destroy(&d->rc_cond);
	free(d->name);
	free(d);
}

void nd_disk_close(struct nd_disk *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->closing = true;
	pthread_cond_signal(&d->rc_cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->rc_thread, NULL);
	for (unsigned i = 0; i < d->maxslots; i++)
		if (d->slots[i].h)
			d->be->close(d->slots[i].h);
	free(d->slots);
	disk_free(d);
}

/* --- I/O with limits and emulation ------------------------------------ */

static uint32_t max_req(const struct nd_disk *d)
{
	uint32_t m = d->info.max_request ? d->info.max_request : 32u << 20;
	uint32_t bs = d->info.block_size;
	if (bs > 1 && m >= bs)
		m -= m % bs;
	return m;
}

/* Aligned, split reads and writes straight to the backend. */
static int io_aligned(struct nd_disk *d, enum op_kind kind, void *buf,
		      size_t len, uint64_t off, unsigned flags)
{
	uint32_t m = max_req(d);
	while (len > 0) {
		size_t n = len > m ? m : len;
		struct op op = { kind, buf, n, off, flags };
		int r = run_op(d, &op);
		if (r < 0)
			return r;
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
	return 0;
}

/* The BS-aligned range [*start, *end) covering [off, off+len), and a
 * buffer for it. */
static char *aligned_span(uint64_t off, size_t len, uint32_t bs,
			  uint64_t *start, uint64_t *end)
{
	*start = off - off % bs;
	*end = (off + len + bs - 1) / bs * bs;
	return malloc(*end - *start);
}

int nd_disk_pread(struct nd_disk *d, void *buf, size_t len, uint64_t off)
{
	uint32_t bs = d->info.block_size;
	int r;

	if (off > nd_disk_size(d) || len > nd_disk_size(d) - off)
		return -EINVAL;
	off += d->cfg.offset;
	if (bs <= 1 || (off % bs == 0 && len % bs == 0)) {
		r = io_aligned(d, OP_READ, buf, len, off, 0);
	} else {
		/* Read the covering aligned range, copy out the middle. */
		uint64_t start, end;
		char *tmp = aligned_span(off, len, bs, &start, &end);
		if (!tmp)
			return -ENOMEM;
		r = io_aligned(d, OP_READ, tmp, end - start, start, 0);
		if (r == 0)
			memcpy(buf, tmp + (off - start), len);
		free(tmp);
	}
	if (r == 0) {
		atomic_fetch_add(&d->st.reads, 1);
		atomic_fetch_add(&d->st.bytes_read, len);
	}
	return r;
}

int nd_disk_pwrite(struct nd_disk *d, const void *buf, size_t len,
		   uint64_t off, unsigned flags)
{
	uint32_t bs = d->info.block_size;
	int r;

	if (nd_disk_read_only(d))
		return -EROFS;
	if (off > nd_disk_size(d) || len > nd_disk_size(d) - off)
		return -ENOSPC;
	off += d->cfg.offset;
	if (bs <= 1) {
		r = io_aligned(d, OP_WRITE, (void *)buf, len, off, 0);
	} else if (off % bs == 0 && len % bs == 0) {
		/* Aligned writes run together, but never beside a
		 * read-modify-write, which could write back older bytes of
		 * the blocks they cover. */
		pthread_rwlock_rdlock(&d->rmw_lock);
		r = io_aligned(d, OP_WRITE, (void *)buf, len, off, 0);
		pthread_rwlock_unlock(&d->rmw_lock);
	} else {
		/* Read-modify-write of the partial blocks at either end; alone,
		 * so no other write can be undone by it. */
		uint64_t start, end;
		char *tmp = aligned_span(off, len, bs, &start, &end);
		if (!tmp)
			return -ENOMEM;
		pthread_rwlock_wrlock(&d->rmw_lock);
		r = io_aligned(d, OP_READ, tmp, bs, start, 0);
		if (r == 0 && end - bs > start)
			r = io_aligned(d, OP_READ, tmp + (end - bs - start), bs,
				       end - bs, 0);
		if (r == 0) {
			memcpy(tmp + (off - start), buf, len);
			r = io_aligned(d, OP_WRITE, tmp, end - start, start, 0);
		}
		pthread_rwlock_unlock(&d->rmw_lock);
		free(tmp);
	}
	if (r == 0) {
		atomic_fetch_add(&d->st.writes, 1);
		atomic_fetch_add(&d->st.bytes_written, len);
	}
	return r;
}

int nd_disk_grow(struct nd_disk *d, uint64_t size)
{
	static const char zeroes[512];
	uint64_t old = nd_disk_size(d);
	bool ro = nd_disk_read_only(d);
	int r;

	if (size <= old)
		return 0;
	if (ro || !d->info.can_grow || d->cfg.size || d->info.block_size > 1) {
		errno = ro ? EROFS : ENOSPC;
		nd_error("the container cannot grow past %llu bytes (%s%s)",
			 (unsigned long long)old,
			 ro	       ? "read-only"
			 : d->cfg.size ? "size= is set"
				       : "a fixed size over ",
			 ro || d->cfg.size ? "" : d->be->name);
		return -errno;
	}
	/* Zeroes up to the new end: the file is that long before anything
	 * (a reader, a readahead) may look there. */
	uint64_t n = size - old < sizeof zeroes ? size - old : sizeof zeroes;
	r = io_aligned(d, OP_WRITE, (void *)zeroes, n,
		       d->cfg.offset + size - n, 0);
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->lock);
	d->info.size = d->cfg.offset + size;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int nd_disk_flush(struct nd_disk *d)
{
	struct op op = { OP_FLUSH, NULL, 0, 0, 0 };
	if (!d->info.can_flush || !d->be->flush)
		return 0;
	atomic_fetch_add(&d->st.flushes, 1);
	return run_op(d, &op);
}

static int zero_by_writing(struct nd_disk *d, uint64_t len, uint64_t off)
{
	size_t chunk = len < ZERO_CHUNK ? len : ZERO_CHUNK;
	char *z = calloc(1, chunk ? chunk : 1);
	int r = 0;
	if (!z)
		return -ENOMEM;
	while (len > 0 && r == 0) {
		size_t n = len < chunk ? len : chunk;
		r = nd_disk_pwrite(d, z, n, off, 0);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

int nd_disk_zero(struct nd_disk *d, uint64_t len, uint64_t off,
		 unsigned flags)
{
	uint32_t bs = d->info.block_size;
	uint32_t m = d->info.max_trim ? d->info.max_trim : max_req(d);

	if (nd_disk_read_only(d))
		return -EROFS;
	if (off > nd_disk_size(d) || len > nd_disk_size(d) - off)
		return -ENOSPC;
	if (!d->info.can_zero || !d->be->zero)
		return zero_by_writing(d, len, off);
	/* Unaligned head and tail are written; the aligned middle zeroed. */
	if (bs > 1) {
		uint64_t head = (bs - (off + d->cfg.offset) % bs) % bs;
		if (head > len)
			head = len;
		if (head) {
			int r = zero_by_writing(d, head, off);
			if (r < 0)
				return r;
			off += head;
			len -= head;
		}
		uint64_t tail = len % bs;
		if (tail) {
			int r = zero_by_writing(d, tail, off + len - tail);
			if (r < 0)
				return r;
			len -= tail;
		}
	}
	while (len > 0) {
		uint64_t n = len > m ? m : len;
		struct op op = {OP_ZERO, NULL, n, off + d->cfg.offset,
				flags & ND_MAY_TRIM};
		if (bs > 1) /* an aligned write too (see nd_disk_pwrite) */
			pthread_rwlock_rdlock(&d->rmw_lock);
		int r = run_op(d, &op);
		if (bs > 1)
			pthread_rwlock_unlock(&d->rmw_lock);
		if (r == -ENOTSUP || r == -EOPNOTSUPP)
			r = zero_by_writing(d, n, off);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

/* --- accessors -------------------------------------------------------- */

uint64_t nd_disk_size(const struct nd_disk *d)
{
	return d->cfg.size ? d->cfg.size : d->info.size - d->cfg.offset;
}

bool nd_disk_read_only(const struct nd_disk *d)
{
	return d->cfg.ro || d->info.read_only;
}

const char *nd_disk_name(const struct nd_disk *d)
{
	return d->name;
}

const char *nd_disk_backend_name(const struct nd_disk *d)
{
	return d->be->name;
}

const struct nd_opts *nd_disk_opts(const struct nd_disk *d)
{
	return &d->opts;
}

const struct nd_disk_cfg *nd_disk_cfg(const struct nd_disk *d)
{
	return &d->cfg;
}

uint32_t nd_disk_opt_request(const struct nd_disk *d)
{
	return d->info.opt_request;
}

const struct nd_info *nd_disk_info(const struct nd_disk *d)
{
	return &d->info;
}

void nd_disk_status(struct nd_disk *d, struct nd_disk_status *s)
{
	pthread_mutex_lock(&d->lock);
	s->state = d->state;
	s->state_since = d->state_since;
	snprintf(s->last_error, sizeof s->last_error, "%s", d->last_error);
	s->connections = d->nslots;
	s->offline = d->offline;
	pthread_mutex_unlock(&d->lock);
	s->changed = atomic_load(&d->changed);
	s->max_connections = d->maxslots;
	s->bytes_read = d->st.bytes_read;
	s->bytes_written = d->st.bytes_written;
	s->reads = d->st.reads;
	s->writes = d->st.writes;
	s->flushes = d->st.flushes;
	s->errors = d->st.errors;
	s->reconnects = d->st.reconnects;
}
