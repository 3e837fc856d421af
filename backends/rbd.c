/* libs: -lrbd -lrados */
/* rbd.c: Ceph RBD images through librbd and librados.
 *
 * One connection is one rados client (rados_t), an I/O context on the pool
 * (and namespace) and one open image. librbd is thread-safe and
 * asynchronous: each request is an rbd_aio_* call whose completion wakes
 * the calling thread, so one connection carries every request the core
 * has in flight (thread_safe, max_connections 1: two handles of one
 * client would pass the image's exclusive lock back and forth).
 *
 * librados waits forever for a dead OSD or monitor unless told otherwise:
 * rados_osd_op_timeout, rados_mon_op_timeout and client_mount_timeout are
 * set from the entry's timeout, so a request to a dead OSD fails with
 * -ETIMEDOUT. librbd itself may wait longer (a write queued for the
 * exclusive lock that a lost client still holds): each request also has
 * a deadline of its own, after which it is abandoned to its completion.
 * Either is returned as -ENOTCONN: the core drops this client
 * and opens a new one (which fails until the OSD is back) until
 * reconnect-delay runs out. The old client is closed in a thread of its
 * own, since rbd_close flushes and releases the exclusive lock, which
 * waits for the same dead OSD. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "backend.h"
#include "rbd-url.h"
#include "../src/util/cleanup.h"
#include "util/clock.h"
#include "util/detach.h"

/* Largest read/write handed to librbd at once. */
#define RBD_MAX_REQUEST (32u << 20)
/* Largest readahead request. A read's bytes are held three times while
 * in flight (librados's receive buffer, the bounce buffer, the cache
 * block), and the core keeps several readahead requests in flight: with
 * whole 4 MiB objects a sequential read took the daemon's peak RSS about
 * 150 MiB past cache-size (2 MiB: 55-75 MiB past it), and 1 MiB requests
 * read as fast on a one-OSD cluster. */
#define RBD_OPT_MAX (1u << 20)
#define RBD_MAX_TRIM (1u << 30)
#define RBD_MAX_SERVERS 16

struct rbd_conn {
	char *name; /* entry name, for messages */
	rados_t cluster;
	rados_ioctx_t io;
	rbd_image_t img;
	bool read_only;
	bool lost; /* a request timed out: close in the background */
	double timeout; /* the entry's timeout=: a request's deadline */
};

/* One request in flight, on the heap: a request whose deadline passed is
 * abandoned by its caller, and the completion, which librbd may still
 * deliver much later, frees it. Reads land in bounce (librbd writes into
 * it until it completes, long after the caller's buffer is gone); writes
 * are copied by librbd at submission (rbd_disable_zero_copy_writes). */
struct rbd_req {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	rbd_completion_t comp;
	bool done;
	bool abandoned; /* the caller gave up: the completion frees all */
	ssize_t ret;
	void *bounce;
	size_t bounce_cap;
};

enum rbd_op { RBD_READ, RBD_WRITE, RBD_FLUSH, RBD_TRIM, RBD_ZERO };

static const char *const rbd_op_names[] = { "read", "write", "flush",
					    "discard", "write zeroes" };

/* Errors that mean "this client lost the cluster": the core reconnects. */
static bool rbd_is_lost(int r)
{
	return r == -ETIMEDOUT || r == -ENOTCONN || r == -ESHUTDOWN ||
	       r == -ECONNREFUSED || r == -ECONNRESET || r == -EPIPE;
}

/* The one translator of librados/librbd results: an nd_error naming the
 * entry and what failed, and the -errno the core should see. */
static int rbd_fail(const char *name, const char *what, int r)
{
	errno = -r;
	nd_error("%s: rbd: %s: %m", name, what);
	if (r == -ETIMEDOUT)
		nd_error("%s: rbd: %s: no answer from the cluster within timeout",
			 name, what);
	return rbd_is_lost(r) ? -ENOTCONN : r;
}

/* ---- bounce buffers -------------------------------------------------- */

/* A fresh bounce buffer per read (a readahead request's size) is fresh
 * memory the kernel faults in and zeroes on every request (with 4 MiB
 * requests, up to half of the daemon's CPU on a sequential read), and
 * malloc kept freed ones scattered over its arenas. Buffers are reused, up
 * to RBD_POOL_BYTES kept (process-wide: a request abandoned at its
 * deadline gives its buffer back whenever librbd completes it). */
#define RBD_POOL_N 16
#define RBD_POOL_BYTES (16u << 20)
static pthread_mutex_t rbd_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	void *p;
	size_t cap;
} rbd_pool[RBD_POOL_N];
static size_t rbd_pool_bytes;

/* A buffer of at least LEN bytes (*CAP gets its size), or NULL. */
static void *rbd_buf_get(size_t len, size_t *cap)
{
	size_t want = 64u << 10;
	int best = -1;

	while (want < len)
		want <<= 1;
	pthread_mutex_lock(&rbd_pool_mu);
	for (int i = 0; i < RBD_POOL_N; i++)
		if (rbd_pool[i].p && rbd_pool[i].cap >= len &&
		    (best < 0 || rbd_pool[i].cap < rbd_pool[best].cap))
			best = i;
	void *p = best >= 0 ? rbd_pool[best].p : NULL;
	if (p) {
		*cap = rbd_pool[best].cap;
		rbd_pool[best].p = NULL;
		rbd_pool_bytes -= *cap;
	}
	pthread_mutex_unlock(&rbd_pool_mu);
	if (!p && (p = malloc(want)))
		*cap = want;
	return p;
}

static void rbd_buf_put(void *p, size_t cap)
{
	int slot = -1;

	if (!p)
		return;
	pthread_mutex_lock(&rbd_pool_mu);
	for (int i = 0; i < RBD_POOL_N && slot < 0; i++)
		if (!rbd_pool[i].p)
			slot = i;
	if (slot >= 0 && rbd_pool_bytes + cap <= RBD_POOL_BYTES) {
		rbd_pool[slot].p = p;
		rbd_pool[slot].cap = cap;
		rbd_pool_bytes += cap;
		p = NULL;
	}
	pthread_mutex_unlock(&rbd_pool_mu);
	free(p);
}

/* At unmount: the pool's buffers go back. */
static void rbd_shutdown_cb(void)
{
	pthread_mutex_lock(&rbd_pool_mu);
	for (int i = 0; i < RBD_POOL_N; i++) {
		free(rbd_pool[i].p);
		rbd_pool[i].p = NULL;
	}
	rbd_pool_bytes = 0;
	pthread_mutex_unlock(&rbd_pool_mu);
}

static void rbd_req_free(struct rbd_req *q)
{
	rbd_aio_release(q->comp);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->mu);
	rbd_buf_put(q->bounce, q->bounce_cap);
	free(q);
}

static void rbd_done_cb(rbd_completion_t comp, void *arg)
{
	struct rbd_req *q = arg;

	pthread_mutex_lock(&q->mu);
	q->ret = rbd_aio_get_return_value(comp);
	q->done = true;
	bool abandoned = q->abandoned;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mu);
	if (abandoned)
		rbd_req_free(q);
}

/* ---- the exclusive lock of lost clients ---------------------------- */

/* A client dropped while the OSD was away may keep the image's exclusive
 * lock: its release and its unwatch timed out too, so the OSD still sees
 * its watch, and librbd on the next client waits for that watch to
 * expire (30 s) before it breaks the lock. The nonces of the clients
 * this process dropped are kept here, so the next client breaks such a
 * lock at once (which also blocklists the old client: a write it still
 * holds can no longer land). Another program's lock is never broken. */
#define RBD_LOST_MAX 32
static pthread_mutex_t rbd_lost_mu = PTHREAD_MUTEX_INITIALIZER;
static char rbd_lost[RBD_LOST_MAX][24];
static unsigned rbd_lost_next;

/* The nonce of a client address ("127.0.0.1:0/3405", "[v2:...:0/3405]"). */
static bool rbd_nonce(const char *addr, char out[24])
{
	const char *slash = addr ? strrchr(addr, '/') : NULL;
	size_t n = slash ? strspn(slash + 1, "0123456789") : 0;

	if (n == 0 || n >= 24)
		return false;
	memcpy(out, slash + 1, n);
	out[n] = '\0';
	return true;
}

static void rbd_remember_lost(struct rbd_conn *c)
{
	char *addrs = NULL;
	char nonce[24];

	if (rados_getaddrs(c->cluster, &addrs) < 0)
		return;
	if (rbd_nonce(addrs, nonce)) {
		pthread_mutex_lock(&rbd_lost_mu);
		memcpy(rbd_lost[rbd_lost_next++ % RBD_LOST_MAX], nonce, 24);
		pthread_mutex_unlock(&rbd_lost_mu);
	}
	free(addrs);
}

static bool rbd_was_lost(const char *owner)
{
	char nonce[24];
	bool found = false;

	if (!rbd_nonce(owner, nonce))
		return false;
	pthread_mutex_lock(&rbd_lost_mu);
	for (unsigned i = 0; i < RBD_LOST_MAX && !found; i++)
		found = strcmp(rbd_lost[i], nonce) == 0;
	pthread_mutex_unlock(&rbd_lost_mu);
	return found;
}

/* Break the image's exclusive lock if a client of ours that was dropped
 * holds it. Best effort: on any error librbd's own wait remains. */
static void rbd_break_lost_lock(struct rbd_conn *c)
{
	char *owners[4];
	size_t n = 4;
	rbd_lock_mode_t mode;

	if (rbd_lock_get_owners(c->img, &mode, owners, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!rbd_was_lost(owners[i]))
			continue;
		int r = rbd_lock_break(c->img, mode, owners[i]);
		if (r < 0) {
			errno = -r;
			nd_warn("%s: rbd: breaking the lock of a dropped client: %m",
				c->name);
		} else
			nd_info("%s: rbd: broke the exclusive lock of a dropped client",
				c->name);
	}
	rbd_lock_get_owners_cleanup(owners, n);
}

static int rbd_submit(struct rbd_conn *c, enum rbd_op op, void *buf,
		      uint64_t len, uint64_t off, rbd_completion_t comp)
{
	switch (op) {
	case RBD_READ: return rbd_aio_read(c->img, off, len, buf, comp);
	case RBD_WRITE: return rbd_aio_write(c->img, off, len, buf, comp);
	case RBD_FLUSH: return rbd_aio_flush(c->img, comp);
	case RBD_TRIM: return rbd_aio_discard(c->img, off, len, comp);
	case RBD_ZERO: return rbd_aio_write_zeroes(c->img, off, len, comp, 0, 0);
	}
	return -EINVAL;
}

/* A new request for LEN bytes of OP (a read gets its bounce buffer). */
static struct rbd_req *rbd_req_new(enum rbd_op op, uint64_t len)
{
	struct rbd_req *q = calloc(1, sizeof *q);

	if (!q || (op == RBD_READ &&
		   !(q->bounce = rbd_buf_get(len, &q->bounce_cap)))) {
		free(q);
		return NULL;
	}
	if (rbd_aio_create_completion(q, rbd_done_cb, &q->comp) < 0) {
		rbd_buf_put(q->bounce, q->bounce_cap);
		free(q);
		return NULL;
	}
	pthread_mutex_init(&q->mu, NULL);
	nd_cond_init_mono(&q->cond);
	return q;
}

/* Wait for Q's completion until the entry's timeout has run out: librados's
 * op timeout does not bound everything librbd may wait for (a write
 * queued behind the image's exclusive lock, held by a lost client, waits
 * for that client's watch to expire). Returns librbd's result, or
 * -ETIMEDOUT and false after handing Q over to its completion (Q is then
 * no longer the caller's to touch). */
static bool rbd_wait(struct rbd_conn *c, struct rbd_req *q, ssize_t *ret)
{
	/* Half a second past librados's own timeout, so that one reports
	 * first when it fires. */
	struct timespec end = nd_timespec(nd_mono_s() + c->timeout + 0.5);
	bool done;

	pthread_mutex_lock(&q->mu);
	while (!q->done &&
	       pthread_cond_timedwait(&q->cond, &q->mu, &end) != ETIMEDOUT)
		;
	done = q->done;
	*ret = done ? q->ret : -ETIMEDOUT;
	q->abandoned = !done;
	pthread_mutex_unlock(&q->mu);
	return done;
}

/* Submit one request and sleep until librbd completes it or the entry's
 * timeout runs out. */
static int rbd_run(struct rbd_conn *c, enum rbd_op op, void *buf, uint64_t len,
		   uint64_t off)
{
	bool ro = c->read_only && op != RBD_READ && op != RBD_FLUSH;
	struct rbd_req *q = NULL;
	char what[96];
	ssize_t ret;

	if (ro)
		ret = -EROFS;
	else if (!(q = rbd_req_new(op, len)))
		ret = -ENOMEM;
	else if ((ret = rbd_submit(c, op, op == RBD_READ ? q->bounce : buf,
				   len, off, q->comp)) >= 0 &&
		 !rbd_wait(c, q, &ret))
		q = NULL; /* abandoned: its completion frees it */
	if (q && op == RBD_READ && ret >= 0) {
		size_t got = (uint64_t)ret < len ? (size_t)ret : len;
		memcpy(buf, q->bounce, got);
		memset((char *)buf + got, 0, len - got);
	}
	if (q)
		rbd_req_free(q);
	if (ret >= 0)
		return 0;
	/* Formatted only on failure: a 4 KiB read is cheap enough for
	 * snprintf to show in its profile. */
	snprintf(what, sizeof what, "%s of %" PRIu64 " bytes at %" PRIu64,
		 rbd_op_names[op], len, off);
	if (ro) {
		nd_error("%s: rbd: %s: the image or snapshot is read-only",
			 c->name, what);
		return -EROFS;
	}
	int r = rbd_fail(c->name, what, (int)ret);
	if (r == -ENOTCONN && !c->lost) {
		c->lost = true;
		rbd_remember_lost(c);
	}
	return r;
}

static int rbd_pread_cb(void *conn, void *buf, size_t len, uint64_t off)
{
	return rbd_run(conn, RBD_READ, buf, len, off);
}

/* ---- reads answered from the completion ------------------------------ */

/* A read started with pread_async. librbd writes straight into the
 * caller's buffer: the core keeps that buffer (a cache block being
 * loaded) until DONE runs, and DONE runs only once librbd completed the
 * read, so no bounce buffer and no deadline of our own are needed. What
 * bounds it is librados's rados_osd_op_timeout (reads never wait for the
 * exclusive lock, the one wait librbd adds). No thread sleeps on it
 * either: a FUSE thread goes back to the next request at once, and the
 * answer leaves from librbd's completion thread; with the synchronous
 * read, 4 KiB random reads had only as many requests in flight as the
 * FUSE loop has threads, and two wake-ups more per read. */
struct rbd_aread {
	struct rbd_conn *c;
	nd_done_fn done;
	void *arg;
	void *buf;
	uint64_t len, off;
	ssize_t ret;
};

/* A failed read: its message and the lost-client bookkeeping away from
 * librbd's completion thread (rados_getaddrs asks the client). */
static void *rbd_aread_fail(void *arg)
{
	struct rbd_aread *a = arg;
	char what[96];

	snprintf(what, sizeof what, "read of %" PRIu64 " bytes at %" PRIu64,
		 a->len, a->off);
	int r = rbd_fail(a->c->name, what, (int)a->ret);
	if (r == -ENOTCONN && !a->c->lost) {
		a->c->lost = true;
		rbd_remember_lost(a->c);
	}
	a->done(a->arg, r);
	free(a);
	return NULL;
}

static void rbd_aread_cb(rbd_completion_t comp, void *arg)
{
	struct rbd_aread *a = arg;

	a->ret = rbd_aio_get_return_value(comp);
	rbd_aio_release(comp);
	if (a->ret >= 0) {
		if ((uint64_t)a->ret < a->len) /* past the end: zeroes */
			memset((char *)a->buf + a->ret, 0, a->len - a->ret);
		a->done(a->arg, 0);
		free(a);
	} else if (!nd_detached(rbd_aread_fail, a)) {
		a->done(a->arg, rbd_is_lost((int)a->ret) ? -ENOTCONN : -EIO);
		free(a);
	}
}

static int rbd_pread_async_cb(void *conn, void *buf, size_t len, uint64_t off,
			      nd_done_fn done, void *arg)
{
	struct rbd_conn *c = conn;
	struct rbd_aread *a = malloc(sizeof *a);
	rbd_completion_t comp;
	int r;

	if (!a)
		return -ENOMEM;
	*a = (struct rbd_aread){ c, done, arg, buf, len, off, 0 };
	if ((r = rbd_aio_create_completion(a, rbd_aread_cb, &comp)) < 0) {
		free(a);
		return r;
	}
	if ((r = rbd_aio_read(c->img, off, len, buf, comp)) < 0) {
		/* not started: the core reads it the synchronous way */
		rbd_aio_release(comp);
		free(a);
		return r;
	}
	return 0;
}

static int rbd_pwrite_cb(void *conn, const void *buf, size_t len,
			 uint64_t off)
{
	return rbd_run(conn, RBD_WRITE, (void *)buf, len, off);
}

static int rbd_flush_cb(void *conn)
{
	return rbd_run(conn, RBD_FLUSH, NULL, 0, 0);
}

/* A discarded range of an image reads as zeroes: with ND_MAY_TRIM the
 * space is given back (rbd_aio_discard), else written as zeroes. */
static int rbd_zero_cb(void *conn, uint64_t len, uint64_t off, unsigned flags)
{
	return rbd_run(conn, flags & ND_MAY_TRIM ? RBD_TRIM : RBD_ZERO, NULL,
		       len, off);
}

/* ---- open / close ---------------------------------------------------- */

static void rbd_conn_free(struct rbd_conn *c)
{
	if (c->img)
		rbd_close(c->img);
	if (c->io)
		rados_ioctx_destroy(c->io);
	if (c->cluster)
		rados_shutdown(c->cluster);
	free(c->name);
	free(c);
}

static void *rbd_close_thread(void *arg)
{
	rbd_conn_free(arg);
	return NULL;
}

static void rbd_close_cb(void *conn)
{
	struct rbd_conn *c = conn;
	pthread_t t;

	/* rbd_close waits for the dead OSD: do not hold up the core. */
	if (c->lost && pthread_create(&t, NULL, rbd_close_thread, c) == 0) {
		pthread_detach(t);
		return;
	}
	rbd_conn_free(c);
}

static int rbd_set(struct rbd_conn *c, const char *key, const char *val)
{
	int r = rados_conf_set(c->cluster, key, val);

	if (r < 0) {
		errno = -r;
		nd_error("%s: rbd: Ceph option %s=%s: %m", c->name, key,
			 strcmp(key, "key") ? val : "***");
		return -EINVAL;
	}
	return 0;
}

/* server.N.host/port -> mon_host "h1:p1,[v6]:p2". */
static int rbd_set_mons(struct rbd_conn *c, const struct nd_opts *o)
{
	char list[1024] = "";
	size_t n = 0;

	for (int i = 0; i < RBD_MAX_SERVERS; i++) {
		const char *h = nd_opt_getf(o, "server.%d.host", i);
		const char *p = nd_opt_getf(o, "server.%d.port", i);
		if (!h)
			break;
		bool v6 = strchr(h, ':') != NULL;
		n += snprintf(list + n, n < sizeof list ? sizeof list - n : 0,
			      "%s%s%s%s%s%s", n ? "," : "", v6 ? "[" : "", h,
			      v6 ? "]" : "", p ? ":" : "", p ? p : "");
	}
	if (n >= sizeof list) {
		nd_error("%s: rbd: server list too long", c->name);
		return -EINVAL;
	}
	return n ? rbd_set(c, "mon_host", list) : 0;
}

/* keyvalue-pairs: Ceph options in the rbd: syntax, k=v:k=v. */
static int rbd_set_pairs(struct rbd_conn *c, const char *pairs)
{
	CLEANUP_FREE char *copy = pairs ? strdup(pairs) : NULL;
	char *p = copy;

	while (p && *p) {
		char *val = NULL;
		char *key = rbd_next_tok(rbd_next_tok(p, ':', &p), '=', &val);
		if (!val) {
			nd_error("%s: rbd: keyvalue-pairs: '%s' has no value",
				 c->name, key);
			return -EINVAL;
		}
		rbd_unescape(key);
		rbd_unescape(val);
		if (rbd_set(c, key, val) < 0)
			return -EINVAL;
	}
	return 0;
}

/* The client's settings: conf file, monitors, auth, key, pass-through
 * options, and timeouts so that nothing waits forever. */
static int rbd_configure(struct rbd_conn *c, const struct nd_opts *o,
			 double timeout)
{
	const char *conf = nd_opt_get(o, "conf");
	const char *v;
	char *key = NULL;
	char secs[32];
	int r;

	/* librbd's own cache is off unless the conf file or the entry's
	 * Ceph options turn it on (set first, so that they win), as QEMU's
	 * cache=none does: netdiskfs caches the blocks itself, and librbd's
	 * cache only added a copy and a lock to every read (sequential
	 * reads ran at about half the speed) while it holds writes in
	 * writethrough mode anyway until the first flush. */
	if (rbd_set(c, "rbd_cache", "false") < 0)
		return -EINVAL;
	/* Without conf=, the usual search (CEPH_CONF, /etc/ceph/ceph.conf),
	 * where a missing file is no error: QEMU does the same. */
	r = rados_conf_read_file(c->cluster, conf);
	if (r < 0 && conf) {
		errno = -r;
		nd_error("%s: rbd: conf=%s: %m", c->name, conf);
		return -EINVAL;
	}
	if (rbd_set_mons(c, o) < 0 ||
	    ((v = nd_opt_get(o, "auth-client-required")) &&
	     rbd_set(c, "auth_client_required", v) < 0) ||
	    ((v = nd_opt_get(o, "keyring")) && rbd_set(c, "keyring", v) < 0) ||
	    rbd_set_pairs(c, nd_opt_get(o, "keyvalue-pairs")) < 0)
		return -EINVAL;
	if (nd_opt_secret(o, "key-secret", &key) < 0)
		return -EINVAL;
	r = key ? rbd_set(c, "key", key) : 0;
	nd_secret_free(key);
	if (r < 0)
		return r;
	snprintf(secs, sizeof secs, "%d", timeout < 1 ? 1 : (int)(timeout + 0.5));
	/* librbd copies what is written when it is submitted, so a write
	 * abandoned at its deadline never reads the caller's buffer later. */
	if (rbd_set(c, "rbd_disable_zero_copy_writes", "true") < 0 ||
	    rbd_set(c, "rados_osd_op_timeout", secs) < 0 ||
	    rbd_set(c, "rados_mon_op_timeout", secs) < 0 ||
	    rbd_set(c, "client_mount_timeout", secs) < 0)
		return -EINVAL;
	return 0;
}

/* Connect the client and open the image (or snapshot). */
static int rbd_connect(struct rbd_conn *c, const struct nd_opts *o, bool ro)
{
	const char *pool = nd_opt_get(o, "pool");
	const char *ns = nd_opt_get(o, "namespace");
	const char *image = nd_opt_get(o, "image");
	const char *snap = nd_opt_get(o, "snapshot");
	char what[512];
	int r;

	r = rados_connect(c->cluster);
	if (r < 0) {
		/* Monitors not there (yet) is worth retrying; a refused
		 * key or a bad setting is not. */
		rbd_fail(c->name, "cannot connect to the cluster", r);
		return r == -EACCES || r == -EPERM || r == -EINVAL ? r
								     : -ECONNREFUSED;
	}
	r = rados_ioctx_create(c->cluster, pool, &c->io);
	if (r < 0) {
		snprintf(what, sizeof what, "pool %s", pool);
		return rbd_fail(c->name, what, r);
	}
	if (ns)
		rados_ioctx_set_namespace(c->io, ns);
	r = ro ? rbd_open_read_only(c->io, image, &c->img, snap)
	       : rbd_open(c->io, image, &c->img, snap);
	if (r < 0) {
		c->img = NULL;
		snprintf(what, sizeof what, "image %s/%s%s%s%s%s", pool,
			 ns ? ns : "", ns ? "/" : "", image, snap ? "@" : "",
			 snap ? snap : "");
		return rbd_fail(c->name, what, r);
	}
	return 0;
}

static int rbd_fill_info(struct rbd_conn *c, struct nd_info *info)
{
	rbd_image_info_t st;
	int r = rbd_stat(c->img, &st, sizeof st);

	if (r < 0)
		return rbd_fail(c->name, "stat", r);
	memset(info, 0, sizeof *info);
	info->size = st.size;
	info->max_request = RBD_MAX_REQUEST;
	info->max_trim = RBD_MAX_TRIM;
	/* Readahead requests inside one object each (each touches one OSD,
	 * in parallel), at most RBD_OPT_MAX. */
	info->opt_request = st.obj_size > 0 && st.obj_size <= RBD_MAX_REQUEST
				    ? (uint32_t)st.obj_size
				    : 0;
	if (info->opt_request > RBD_OPT_MAX)
		info->opt_request = RBD_OPT_MAX;
	info->read_only = c->read_only;
	info->can_flush = true;
	info->can_zero = !c->read_only;
	info->thread_safe = true;
	info->max_connections = 1;
	return 0;
}

static int rbd_open_cb(const struct nd_opts *o, const struct nd_settings *s,
		       void **conn, struct nd_info *info)
{
	struct rbd_conn *c = calloc(1, sizeof *c);
	int r;

	if (!c || !(c->name = strdup(o->name ? o->name : "rbd"))) {
		free(c);
		nd_error("rbd: out of memory");
		return -ENOMEM;
	}
	c->read_only = s->read_only || nd_opt_get(o, "snapshot");
	c->timeout = s->timeout;
	r = rados_create(&c->cluster, nd_opt_get(o, "user"));
	if (r < 0) {
		c->cluster = NULL;
		r = rbd_fail(c->name, "rados_create", r);
		goto fail;
	}
	if ((r = rbd_configure(c, o, s->timeout)) < 0 ||
	    (r = rbd_connect(c, o, c->read_only)) < 0 ||
	    (r = rbd_fill_info(c, info)) < 0)
		goto fail;
	if (!c->read_only)
		rbd_break_lost_lock(c);
	nd_debug("%s: rbd: opened %s/%s (%" PRIu64 " bytes, object size %" PRIu32
		 "%s)",
		 c->name, nd_opt_get(o, "pool"), nd_opt_get(o, "image"),
		 info->size, info->opt_request,
		 c->read_only ? ", read-only" : "");
	*conn = c;
	return 0;
fail:
	c->lost = true;
	rbd_close_cb(c);
	return r < 0 ? r : -EIO;
}

static const char *const rbd_drivers[] = { "rbd", NULL };
static const char *const rbd_schemes[] = { "rbd:", NULL };
static const struct nd_optdesc rbd_options[] = {
	{ "pool", ND_OPT_STRING, NULL, false, "pool name" },
	{ "namespace", ND_OPT_STRING, NULL, false,
	  "pool namespace (default none)" },
	{ "image", ND_OPT_STRING, NULL, false, "image name" },
	{ "snapshot", ND_OPT_STRING, NULL, false, "snapshot name (read-only)" },
	{ "conf", ND_OPT_FILE, NULL, false,
	  "ceph.conf path (default: Ceph's search path)" },
	{ "user", ND_OPT_STRING, "admin", false, "Ceph client id" },
	{ "keyring", ND_OPT_FILE, NULL, false, "keyring file path" },
	{ "key-secret-file", ND_OPT_FILE, NULL, false,
	  "file holding the client's base64 key" },
	{ "server.N.host", ND_OPT_STRING, NULL, false, "monitor host (mon_host)" },
	{ "server.N.port", ND_OPT_UINT, NULL, false,
	  "monitor port (default 3300/6789)" },
	{ "auth-client-required", ND_OPT_STRING, NULL, false,
	  "cephx, none, or cephx;none" },
	{ "keyvalue-pairs", ND_OPT_STRING, NULL, false,
	  "other Ceph options, KEY=VALUE:KEY=VALUE" },
	{ NULL, ND_OPT_STRING, NULL, false, NULL },
};

static const struct nd_backend rbd_backend = {
	.name = "rbd",
	.drivers = rbd_drivers,
	.schemes = rbd_schemes,
	.description = "Ceph RBD images (librbd): rbd:pool/image[@snap][:k=v...]",
	.options = rbd_options,
	.open = rbd_open_cb,
	.close = rbd_close_cb,
	.pread = rbd_pread_cb,
	.pread_async = rbd_pread_async_cb,
	.pwrite = rbd_pwrite_cb,
	.flush = rbd_flush_cb,
	.zero = rbd_zero_cb,
	.shutdown = rbd_shutdown_cb,
};
ND_BACKEND_REGISTER(rbd_backend);
