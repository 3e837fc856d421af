/* pkg-config: libnfs */
/* nfs.c: a file on an NFS server through libnfs (NFSv3 read/write, NFSv4
 * read-only: libnfs 4.0 cannot encode NFSv4 writes).
 *
 * A libnfs context is not thread-safe, and libnfs 4.0 has no service
 * thread of its own. So each connection has one: it alone calls libnfs
 * after open(). Callers (FUSE workers, readahead workers) put a request on
 * a queue, poke the thread through an eventfd and sleep; the thread issues
 * nfs_pread_async/nfs_pwrite_async/nfs_fsync_async (fsync is NFSv3's
 * COMMIT), polls the socket, and wakes each caller from libnfs's callback.
 * Many requests are in flight on one TCP connection (thread_safe).
 *
 * Deadlines: libnfs reconnects by itself (autoreconnect) and resends what
 * was pending, which rides out a short server restart. When the oldest
 * request has waited `timeout`, the thread gives the context up: it
 * fails every request with -ENOTCONN (the core opens a new connection
 * until reconnect-delay runs out) and never runs libnfs on it again. A
 * request reaches libnfs through a ticket that outlives it, so a callback
 * that fires late (at nfs_destroy_context) finds the ticket empty. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "backend.h"
#include "util/clock.h"
#include "../src/util/cleanup.h"

/* nfs_service() also runs libnfs's own timers: call it this often (ms). */
#define NFS_TICK_MS 100
#define NFS_MAX_REQUEST (1u << 20)

enum ndnfs_op { NFS_OP_READ, NFS_OP_WRITE, NFS_OP_FSYNC };

struct ndnfs_req;

/* What libnfs's callback gets: the request, or NULL once given up. */
struct ndnfs_ticket {
	struct ndnfs_conn *c;
	struct ndnfs_req *r;
};

/* One request; lives on the caller's stack until done. */
struct ndnfs_req {
	struct ndnfs_req *next; /* c->queue, then c->inflight */
	enum ndnfs_op op;
	void *buf;
	uint64_t len, off;
	double deadline;
	struct ndnfs_ticket *t;
	pthread_cond_t cond;
	bool done;
	int ret; /* bytes, or -errno */
};

struct ndnfs_conn {
	struct nfs_context *nfs;
	struct nfsfh *fh;
	char *name; /* entry name, for messages */
	double timeout;
	int wake; /* eventfd: new requests and close */
	pthread_t thread;
	bool started;

	pthread_mutex_t mu; /* protects everything below */
	struct ndnfs_req *queue;	  /* submitted, not yet given to libnfs */
	struct ndnfs_req *inflight; /* given to libnfs, oldest first */
	bool stop;
	bool dead; /* libnfs is not run on this context any more */
};

/* The one wrapper for libnfs's error text: an nd_error, and -errno. */
static int ndnfs_fail(struct ndnfs_conn *c, const char *what, int err)
{
	const char *msg = c->nfs ? nfs_get_error(c->nfs) : NULL;

	if (err >= 0)
		err = -EIO;
	errno = -err;
	if (msg && *msg)
		nd_error("%s: nfs: %s: %s", c->name, what, msg);
	else
		nd_error("%s: nfs: %s: %m", c->name, what);
	return err;
}

/* A request's failure, from a caller's thread: libnfs's error text
 * belongs to the service thread (it went to nd_debug there). */
static int ndnfs_req_fail(struct ndnfs_conn *c, const char *what, int err)
{
	if (err == -ENOTCONN) {
		nd_error("%s: nfs: %s: connection to the server lost", c->name, what);
		return err;
	}
	if (err >= 0)
		err = -EIO;
	errno = -err;
	nd_error("%s: nfs: %s: %m", c->name, what);
	return err;
}

/* Called with c->mu held. */
static void ndnfs_finish(struct ndnfs_req *r, int ret)
{
	if (r->t)
		r->t->r = NULL;
	r->t = NULL;
	r->ret = ret;
	r->done = true;
	pthread_cond_signal(&r->cond);
}

static void ndnfs_unlink(struct ndnfs_req **list, struct ndnfs_req *r)
{
	for (; *list; list = &(*list)->next)
		if (*list == r) {
			*list = r->next;
			return;
		}
}

/* What a request's failure means, as a -errno the core and the
 * application can read. libnfs passes negative codes that are not all
 * errnos of their usual meaning: -EFAULT for a failed RPC and for a
 * server's refusal of a write split in several RPCs (its text then names
 * the NFS status), -ERANGE for a status it does not know, -EINTR for an
 * RPC cancelled with the socket. A refusal the server explained (no
 * permission, no space, a read-only export) keeps its errno; a lost
 * connection becomes -ENOTCONN (the core reconnects); anything else is
 * -EIO. */
static int ndnfs_errno(int err, const char *msg)
{
	static const struct {
		const char *status;
		int err;
	} refusals[] = {
		{ "NFS3ERR_PERM", EPERM },   { "NFS3ERR_ACCES", EACCES },
		{ "NFS3ERR_ROFS", EROFS },   { "NFS3ERR_NOSPC", ENOSPC },
		{ "NFS3ERR_DQUOT", EDQUOT }, { "NFS3ERR_FBIG", EFBIG },
	};

	if (err == -EINTR || err == -ETIMEDOUT || err == -ECONNRESET ||
	    err == -EPIPE || err == -ENOTCONN)
		return -ENOTCONN;
	for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
		size_t n = strlen(refusals[i].status);
		const char *at = msg ? strstr(msg, refusals[i].status) : NULL;
		/* "NFS3ERR_PERM(" and not the start of a longer name */
		if (err == -refusals[i].err ||
		    (at && (at[n] == '(' || at[n] == ' ' || at[n] == '\0')))
			return -refusals[i].err;
	}
	return -EIO;
}

/* libnfs's completion, in the service thread (or at destroy). */
static void ndnfs_done_cb(int err, struct nfs_context *nfs, void *data,
			void *private_data)
{
	struct ndnfs_ticket *t = private_data;
	struct ndnfs_conn *c = t->c;

	pthread_mutex_lock(&c->mu);
	struct ndnfs_req *r = t->r;
	if (r) {
		ndnfs_unlink(&c->inflight, r);
		if (err > 0 && r->op == NFS_OP_READ)
			memcpy(r->buf, data, (uint64_t)err > r->len ? r->len
								    : (size_t)err);
		if (err < 0)
			nd_debug("%s: nfs: %s (%d)", c->name,
				 data ? (const char *)data : "error", err);
		ndnfs_finish(r, err < 0 ? ndnfs_errno(err, data) : err);
	}
	pthread_mutex_unlock(&c->mu);
	free(t);
}

/* Hand one queued request to libnfs (service thread, c->mu not held). */
static void ndnfs_issue(struct ndnfs_conn *c, struct ndnfs_req *r)
{
	struct ndnfs_ticket *t = malloc(sizeof *t);
	int rc = -ENOMEM;

	if (t) {
		t->c = c;
		t->r = r;
		pthread_mutex_lock(&c->mu);
		r->t = t;
		r->next = NULL;
		struct ndnfs_req **tail = &c->inflight;
		while (*tail)
			tail = &(*tail)->next;
		*tail = r;
		pthread_mutex_unlock(&c->mu);
		if (r->op == NFS_OP_READ)
			rc = nfs_pread_async(c->nfs, c->fh, r->off, r->len,
					     ndnfs_done_cb, t);
		else if (r->op == NFS_OP_WRITE)
			rc = nfs_pwrite_async(c->nfs, c->fh, r->off, r->len,
					      r->buf, ndnfs_done_cb, t);
		else
			rc = nfs_fsync_async(c->nfs, c->fh, ndnfs_done_cb, t);
		if (rc == 0)
			return;
		nd_debug("%s: nfs: cannot queue: %s", c->name,
			 nfs_get_error(c->nfs));
		free(t);
	}
	pthread_mutex_lock(&c->mu);
	ndnfs_unlink(&c->inflight, r);
	ndnfs_finish(r, -ENOTCONN);
	pthread_mutex_unlock(&c->mu);
}

/* Give the context up: every request fails with -ENOTCONN. Called with
 * c->mu held. */
static void ndnfs_give_up(struct ndnfs_conn *c)
{
	c->dead = true;
	while (c->inflight) {
		struct ndnfs_req *r = c->inflight;
		c->inflight = r->next;
		ndnfs_finish(r, -ENOTCONN);
	}
	while (c->queue) {
		struct ndnfs_req *r = c->queue;
		c->queue = r->next;
		ndnfs_finish(r, -ENOTCONN);
	}
}

/* Take the queue and check the oldest deadline; false once stopping. */
static bool ndnfs_take(struct ndnfs_conn *c, struct ndnfs_req **batch)
{
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		return false;
	}
	*batch = c->queue;
	c->queue = NULL;
	if (c->inflight && c->inflight->deadline < nd_mono_s() && !c->dead) {
		nd_warn("%s: nfs: no reply from the server in %g s, dropping the connection",
			c->name, c->timeout);
		ndnfs_give_up(c);
	}
	if (c->dead && *batch) {
		c->queue = *batch;
		*batch = NULL;
		ndnfs_give_up(c);
	}
	pthread_mutex_unlock(&c->mu);
	return true;
}

static void *ndnfs_service_thread(void *arg)
{
	struct ndnfs_conn *c = arg;
	struct ndnfs_req *batch;

	while (ndnfs_take(c, &batch)) {
		while (batch) {
			struct ndnfs_req *r = batch;
			batch = r->next;
			ndnfs_issue(c, r);
		}
		pthread_mutex_lock(&c->mu);
		bool dead = c->dead;
		pthread_mutex_unlock(&c->mu);
		struct pollfd pfd[2] = {
			{ .fd = c->wake, .events = POLLIN },
			{ .fd = dead ? -1 : nfs_get_fd(c->nfs),
			  .events = dead ? 0 : nfs_which_events(c->nfs) },
		};
		int n = poll(pfd, 2, NFS_TICK_MS);
		if (n < 0 && errno != EINTR)
			usleep(10000);
		if (pfd[0].revents & POLLIN) {
			uint64_t v;
			if (read(c->wake, &v, sizeof v) < 0 && errno != EAGAIN)
				nd_debug("%s: nfs: eventfd: %m", c->name);
		}
		if (!dead && nfs_service(c->nfs, n > 0 ? pfd[1].revents : 0) < 0) {
			nd_warn("%s: nfs: connection failed: %s", c->name,
				nfs_get_error(c->nfs));
			pthread_mutex_lock(&c->mu);
			ndnfs_give_up(c);
			pthread_mutex_unlock(&c->mu);
		}
	}
	return NULL;
}

static void ndnfs_poke(struct ndnfs_conn *c)
{
	uint64_t one = 1;

	if (write(c->wake, &one, sizeof one) < 0 && errno != EAGAIN)
		nd_debug("%s: nfs: eventfd: %m", c->name);
}

/* One request through the service thread; the bytes done or -errno. */
static int ndnfs_submit(struct ndnfs_conn *c, enum ndnfs_op op, void *buf,
		      uint64_t len, uint64_t off)
{
	struct ndnfs_req r = { .op = op, .buf = buf, .len = len, .off = off };

	pthread_cond_init(&r.cond, NULL);
	pthread_mutex_lock(&c->mu);
	if (c->dead) {
		pthread_mutex_unlock(&c->mu);
		pthread_cond_destroy(&r.cond);
		return -ENOTCONN;
	}
	r.deadline = nd_mono_s() + c->timeout;
	struct ndnfs_req **tail = &c->queue;
	while (*tail)
		tail = &(*tail)->next;
	*tail = &r;
	pthread_mutex_unlock(&c->mu);
	ndnfs_poke(c);
	pthread_mutex_lock(&c->mu);
	while (!r.done)
		pthread_cond_wait(&r.cond, &c->mu);
	pthread_mutex_unlock(&c->mu);
	pthread_cond_destroy(&r.cond);
	return r.ret;
}

static const char *const ndnfs_op_names[] = { "read", "write", "fsync" };

/* A read or write, continued where the server returned less (a read
 * that ends at the end of the file is padded with zeroes). */
static int ndnfs_rw(struct ndnfs_conn *c, enum ndnfs_op op, char *buf, size_t len,
		  uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		int n = ndnfs_submit(c, op, buf + done, len - done, off + done);
		if (n < 0 || (n == 0 && op == NFS_OP_WRITE)) {
			char what[96];
			snprintf(what, sizeof what,
				 "%s of %zu bytes at %" PRIu64, ndnfs_op_names[op],
				 len, off);
			return ndnfs_req_fail(c, what, n);
		}
		if (n == 0) {
			memset(buf + done, 0, len - done);
			break;
		}
		done += (size_t)n;
	}
	return 0;
}

static int ndnfs_pread_cb(void *conn, void *buf, size_t len, uint64_t off)
{
	return ndnfs_rw(conn, NFS_OP_READ, buf, len, off);
}

static int ndnfs_pwrite_cb(void *conn, const void *buf, size_t len,
			   uint64_t off)
{
	return ndnfs_rw(conn, NFS_OP_WRITE, (char *)buf, len, off);
}

static int ndnfs_flush_cb(void *conn)
{
	struct ndnfs_conn *c = conn;
	int r = ndnfs_submit(c, NFS_OP_FSYNC, NULL, 0, 0);

	return r < 0 ? ndnfs_req_fail(c, "fsync (COMMIT)", r) : 0;
}

/* ---- open / close ---------------------------------------------------- */

static void ndnfs_closed(int status, struct nfs_context *nfs, void *data,
			 void *arg)
{
	(void)status, (void)nfs, (void)data, (void)arg;
}

static void ndnfs_conn_free(struct ndnfs_conn *c)
{
	if (c->started) {
		pthread_mutex_lock(&c->mu);
		c->stop = true;
		pthread_mutex_unlock(&c->mu);
		ndnfs_poke(c);
		pthread_join(c->thread, NULL);
	}
	if (c->nfs) {
		pthread_mutex_lock(&c->mu);
		bool dead = c->dead;
		pthread_mutex_unlock(&c->mu);
		/* A close waits for the server: not on a dead one, whose
		 * handle is closed without waiting (NFSv3 frees it at once;
		 * the context's end cancels what was queued). */
		if (c->fh && !dead)
			nfs_close(c->nfs, c->fh);
		else if (c->fh)
			nfs_close_async(c->nfs, c->fh, ndnfs_closed, NULL);
		nfs_destroy_context(c->nfs);
	}
	if (c->wake >= 0)
		close(c->wake);
	pthread_mutex_destroy(&c->mu);
	free(c->name);
	free(c);
}

static void ndnfs_close_cb(void *conn)
{
	ndnfs_conn_free(conn);
}

/* The options libnfs only takes in a URL (nfsport, mountport, version):
 * one built from the canonical keys sets them and splits export/file.
 * libnfs 4.0 takes no port after the host: server.port is the nfsport. */
static struct nfs_url *ndnfs_url_of(struct ndnfs_conn *c, const struct nd_opts *o)
{
	static const char *const q[] = { "version", "nfsport", "mountport", NULL };
	const char *port = nd_opt_get(o, "server.port");
	CLEANUP_FREE char *url = NULL;
	char query[160] = "";
	size_t n = 0;

	for (size_t i = 0; q[i]; i++)
		if (nd_opt_get(o, q[i]))
			n += snprintf(query + n, n < sizeof query ? sizeof query - n : 0,
				      "%s%s=%s", n ? "&" : "?", q[i], nd_opt_get(o, q[i]));
	if (port && !nd_opt_get(o, "nfsport"))
		n += snprintf(query + n, n < sizeof query ? sizeof query - n : 0,
			      "%snfsport=%s", n ? "&" : "?", port);
	if (asprintf(&url, "nfs://%s%s%s", nd_opt_get(o, "server.host"),
		     nd_opt_get(o, "path"), query) < 0)
		return NULL;
	struct nfs_url *u = nfs_parse_url_full(c->nfs, url);
	if (!u)
		ndnfs_fail(c, "URL", -EINVAL);
	return u;
}

/* uid, gid and the tuning keys (QEMU's names), each with its setter. */
static int ndnfs_tune(struct ndnfs_conn *c, const struct nd_opts *o)
{
	uint64_t v;

	if (nd_opt_get(o, "user")) {
		if (nd_opt_uint(o, "user", 0, 0, INT32_MAX, &v) < 0)
			return -EINVAL;
		nfs_set_uid(c->nfs, (int)v);
	}
	if (nd_opt_get(o, "group")) {
		if (nd_opt_uint(o, "group", 0, 0, INT32_MAX, &v) < 0)
			return -EINVAL;
		nfs_set_gid(c->nfs, (int)v);
	}
	if (nd_opt_uint(o, "tcp-syn-count", 0, 0, 255, &v) < 0)
		return -EINVAL;
	if (v)
		nfs_set_tcp_syncnt(c->nfs, (int)v);
	if (nd_opt_uint(o, "readahead-size", 0, 0, 1u << 20, &v) < 0)
		return -EINVAL;
	if (v)
		nfs_set_readahead(c->nfs, (uint32_t)v);
	if (nd_opt_uint(o, "page-cache-size", 0, 0, 1u << 20, &v) < 0)
		return -EINVAL;
	if (v)
		nfs_set_pagecache(c->nfs, (uint32_t)v);
	if (nd_opt_uint(o, "debug", 0, 0, 10, &v) < 0)
		return -EINVAL;
	if (v)
		nfs_set_debug(c->nfs, (int)v);
	nfs_set_autoreconnect(c->nfs, -1);
	nfs_set_timeout(c->nfs, (int)(c->timeout * 1000));
	return 0;
}

/* Mount the export and open the file (sync API: the service thread is
 * not running yet). Mount failures are worth retrying; a missing file or
 * a refusal is not. */
static int ndnfs_mount_open(struct ndnfs_conn *c, struct nfs_url *u, bool ro,
			  struct nd_info *info)
{
	struct nfs_stat_64 st;
	int r = nfs_mount(c->nfs, u->server, u->path);

	if (r < 0) {
		ndnfs_fail(c, "mount", r);
		return r == -EACCES || r == -EPERM || r == -ENOENT ? r : -ECONNREFUSED;
	}
	r = nfs_open(c->nfs, u->file, ro ? O_RDONLY : O_RDWR, &c->fh);
	if (r < 0)
		return ndnfs_fail(c, u->file, r);
	r = nfs_fstat64(c->nfs, c->fh, &st);
	if (r < 0)
		return ndnfs_fail(c, "stat", r);
	memset(info, 0, sizeof *info);
	info->size = st.nfs_size;
	uint64_t rmax = nfs_get_readmax(c->nfs), wmax = nfs_get_writemax(c->nfs);
	uint64_t max = rmax < wmax || ro ? rmax : wmax;
	info->max_request = max && max < NFS_MAX_REQUEST ? (uint32_t)max : NFS_MAX_REQUEST;
	info->opt_request = info->max_request;
	info->read_only = ro;
	info->can_flush = !ro;
	info->thread_safe = true;
	info->max_connections = 1;
	return 0;
}

static int ndnfs_start(struct ndnfs_conn *c, const struct nd_opts *o, bool ro,
		     struct nd_info *info)
{
	struct nfs_url *u;
	int r;

	c->nfs = nfs_init_context();
	if (!c->nfs)
		return ndnfs_fail(c, "cannot create a context", -ENOMEM);
	if ((r = ndnfs_tune(c, o)) < 0)
		return r;
	if (!(u = ndnfs_url_of(c, o)))
		return -EINVAL;
	r = ndnfs_mount_open(c, u, ro, info);
	nfs_destroy_url(u);
	if (r < 0)
		return r;
	c->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->wake < 0)
		return ndnfs_fail(c, "eventfd", -errno);
	r = pthread_create(&c->thread, NULL, ndnfs_service_thread, c);
	if (r != 0)
		return ndnfs_fail(c, "service thread", -r);
	c->started = true;
	return 0;
}

static int ndnfs_open_cb(const struct nd_opts *o, const struct nd_settings *s,
			 void **conn, struct nd_info *info)
{
	struct ndnfs_conn *c = calloc(1, sizeof *c);
	bool ro = s->read_only;
	int r;

	if (!c || !(c->name = strdup(o->name ? o->name : "nfs"))) {
		free(c);
		nd_error("nfs: out of memory");
		return -ENOMEM;
	}
	c->wake = -1;
	pthread_mutex_init(&c->mu, NULL);
	c->timeout = s->timeout;
	const char *ver = nd_opt_get(o, "version");
	if (!ro && ver && strcmp(ver, "4") == 0) {
		nd_error("%s: nfs: version=4 is read-only here (libnfs 4.0 cannot write over NFSv4): add ro, or use version=3",
			 c->name);
		r = -EINVAL;
		goto fail;
	}
	if ((r = ndnfs_start(c, o, ro, info)) < 0)
		goto fail;
	nd_debug("%s: nfs: opened %s:%s (NFSv%s, %" PRIu64 " bytes, max request %" PRIu32 "%s)",
		 c->name, nd_opt_get(o, "server.host"), nd_opt_get(o, "path"),
		 ver ? ver : "3", info->size, info->max_request,
		 ro ? ", read-only" : "");
	*conn = c;
	return 0;
fail:
	ndnfs_conn_free(c);
	return r < 0 ? r : -EIO;
}

static const char *const ndnfs_drivers[] = { "nfs", NULL };
static const char *const ndnfs_schemes[] = { "nfs", NULL };
static const struct nd_optdesc ndnfs_options[] = {
	{ "server.type", ND_OPT_STRING, "inet", false, "inet (the only one)" },
	{ "server.host", ND_OPT_STRING, NULL, false,
	  "NFS server host name or address" },
	{ "server.port", ND_OPT_UINT, NULL, false, "NFS port (same as nfsport)" },
	{ "path", ND_OPT_STRING, NULL, false,
	  "/EXPORT/FILE: the export is its directory part" },
	{ "user", ND_OPT_UINT, NULL, false, "uid sent to the server (AUTH_SYS)" },
	{ "group", ND_OPT_UINT, NULL, false, "gid sent to the server (AUTH_SYS)" },
	{ "tcp-syn-count", ND_OPT_UINT, NULL, false,
	  "TCP SYN retries when connecting" },
	{ "readahead-size", ND_OPT_SIZE, "0", false,
	  "libnfs readahead in bytes (0 = off)" },
	{ "page-cache-size", ND_OPT_UINT, "0", false,
	  "libnfs page cache in pages (0 = off)" },
	{ "version", ND_OPT_UINT, "3", false, "3 (read/write) or 4 (read-only)" },
	{ "nfsport", ND_OPT_UINT, NULL, false, "NFS port: no portmapper query" },
	{ "mountport", ND_OPT_UINT, NULL, false,
	  "MOUNT port: no portmapper query" },
	{ NULL, ND_OPT_STRING, NULL, false, NULL },
};

static const struct nd_backend ndnfs_backend = {
	.name = "nfs",
	.drivers = ndnfs_drivers,
	.schemes = ndnfs_schemes,
	.description = "a file on an NFS server (libnfs): NFSv3, NFSv4 read-only",
	.options = ndnfs_options,
	.open = ndnfs_open_cb,
	.close = ndnfs_close_cb,
	.pread = ndnfs_pread_cb,
	.pwrite = ndnfs_pwrite_cb,
	.flush = ndnfs_flush_cb,
};
ND_BACKEND_REGISTER(ndnfs_backend);
