/* pkg-config: libnbd */
/* nbd.c: the NBD backend (libnbd).
 *
 * One libnbd handle per connection, driven through libnbd's asynchronous
 * API so that one connection carries many requests at once: the calling
 * threads (FUSE workers, readahead workers) submit a command and sleep on
 * their own condition variable; one dispatcher thread per connection polls
 * the socket, runs nbd_aio_notify_read/write and wakes each caller from
 * the command's completion callback. The synchronous nbd_pread() would
 * hold the handle lock until its reply arrived and serialize everyone.
 *
 * The dispatcher also enforces the per-request deadline (`timeout`): when
 * the oldest request has waited too long it shuts the socket down, libnbd
 * moves the handle to its dead state and fails every command in flight, and
 * the callers return -ENOTCONN so the core reconnects. The socket is
 * shut down through a dup() of libnbd's descriptor, which libnbd may close
 * at any time from another thread: the dup keeps the number ours. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "backend.h"
#include "util/clock.h"
#include "util/detach.h"
#include "util/once.h"

#define NBD_DEFAULT_PORT "10809"
/* Largest read/write when the server gives no limit: the NBD protocol
 * document says every server must take 32 MiB (libnbd's own cap is 64). */
#define NBD_DEFAULT_MAX_REQUEST (32u << 20)
/* Largest trim/zero: the wire field is 32 bits; stay a power of two so it
 * stays aligned to any minimum block size. */
#define NBD_MAX_TRIM (1u << 30)
/* The dispatcher looks at the deadlines at least this often (ms). */
#define NBD_TICK_MS 1000

enum nbd_op { NBD_OP_READ, NBD_OP_WRITE, NBD_OP_FLUSH, NBD_OP_ZERO };

/* One submitted command: on the caller's stack until done (a waiting
 * caller), or allocated and freed at its end (pread_async). */
struct nbd_req {
	struct nbd_req *prev, *next; /* conn->pending, oldest first */
	double deadline;	     /* CLOCK_MONOTONIC seconds */
	pthread_cond_t cond;
	bool done;
	int err; /* errno from the completion callback */
	struct nbd_conn *c;
	/* pread_async: called at the end instead of waking a waiter */
	nd_done_fn done_fn;
	void *done_arg;
	uint64_t len, off; /* for messages */
	void *buf;		/* pread_async: where the data goes */
	struct nbd_req *qnext;	/* conn->queued */
};

struct nbd_conn {
	struct nbd_handle *h;
	char *name; /* entry name, for messages */
	double timeout;
	bool read_only; /* export or entry is read-only */
	bool can_flush;
	bool can_zero;
	bool psk; /* TLS with a pre-shared key */
	int sock; /* dup of libnbd's socket, ours until close */
	int wake; /* eventfd: submissions and close poke the dispatcher */
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t mu; /* protects everything below */
	struct nbd_req *head, *tail;
	/* pread_async requests the dispatcher submits (oldest first): a
	 * thread submitting itself would wait for libnbd's handle lock
	 * while the dispatcher reads replies under it */
	struct nbd_req *queued, *queued_tail;
	bool polling;	/* the dispatcher sleeps (or is about to) in poll */
	bool stop;	/* close() asked the dispatcher to end */
	bool dead;	/* the handle is dead or we killed it */
	bool timed_out; /* ... because a request ran out of time */
};

/* The one wrapper for libnbd's error text: record it with nd_error and
 * return -errno (EIO when libnbd names none). */
static int nbd_fail(const char *name, const char *what)
{
	const char *msg = nbd_get_error();
	int err = nbd_get_errno();

	if (err <= 0)
		err = EIO;
	nd_error("%s: nbd: %s: %s", name, what, msg ? msg : strerror(err));
	errno = err;
	return -err;
}

static int nbd_debug_cb(void *user_data, const char *context, const char *msg)
{
	nd_debug("%s: libnbd: %s: %s", (const char *)user_data, context, msg);
	return 0;
}

/* ---- dispatcher ------------------------------------------------------ */

static bool nbd_handle_gone(struct nbd_conn *c)
{
	return nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h);
}

static void nbd_poke(struct nbd_conn *c)
{
	uint64_t one = 1;

	if (write(c->wake, &one, sizeof one) < 0 && errno != EAGAIN)
		nd_debug("%s: nbd: eventfd write: %m", c->name);
}

static void nbd_unlink(struct nbd_conn *c, struct nbd_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else if (c->head == r)
		c->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else if (c->tail == r)
		c->tail = r->prev;
	r->prev = r->next = NULL;
}

static int nbd_result(struct nbd_conn *c, enum nbd_op op, int err,
		      uint64_t len, uint64_t off);

/* Add R to the requests in flight; its deadline starts now (c->mu held). */
static void nbd_link(struct nbd_conn *c, struct nbd_req *r)
{
	r->deadline = nd_mono_s() + c->timeout;
	r->prev = c->tail;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
}

/* A failed pread_async: its result (which asks libnbd about the handle)
 * and its end, away from the thread running libnbd's callback. */
static void *nbd_async_fail(void *arg)
{
	struct nbd_req *r = arg;
	int rc = nbd_result(r->c, NBD_OP_READ, r->err, r->len, r->off);

	r->done_fn(r->done_arg, rc);
	free(r);
	return NULL;
}

/* The end of a pread_async request: a success ends it here, in the thread
 * that read the reply, with no other thread woken. */
static void nbd_async_end(struct nbd_req *r)
{
	if (r->err == 0) {
		r->done_fn(r->done_arg, 0);
		free(r);
	} else if (!nd_detached(nbd_async_fail, r)) {
		/* no thread: say EIO without asking the handle */
		r->done_fn(r->done_arg, -EIO);
		free(r);
	}
}

/* While the dispatcher drives libnbd, the pread_async requests that
 * ended well wait here and end after libnbd returns: the callback runs
 * under libnbd's handle lock, and ending one answers FUSE (a writev),
 * which would keep every thread submitting on this connection waiting. */
static __thread struct nbd_req *nbd_ended, **nbd_ended_tail; /* dispatcher's */
static __thread bool nbd_in_dispatch;

/* Completion callback: runs in whichever thread drove libnbd's state
 * machine (the dispatcher, a submitter, or close), never with c->mu held
 * by that thread. */
static int nbd_complete_cb(void *user_data, int *error)
{
	struct nbd_req *r = user_data;
	struct nbd_conn *c = r->c;
	/* A waiter's R is gone once it is woken: read this first. */
	bool async = r->done_fn != NULL;

	pthread_mutex_lock(&c->mu);
	r->err = *error;
	r->done = true;
	nbd_unlink(c, r);
	if (!async)
		pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&c->mu);
	if (async && r->err == 0 && nbd_in_dispatch) {
		r->next = NULL;
		*nbd_ended_tail = r;
		nbd_ended_tail = &r->next;
	} else if (async) {
		nbd_async_end(r);
	}
	return 1; /* retire the command: nobody calls command_completed */
}

/* End the requests the last notify_read/write completed, oldest first. */
static void nbd_end_ended(void)
{
	struct nbd_req *r = nbd_ended;

	nbd_ended = NULL;
	nbd_ended_tail = &nbd_ended;
	while (r) {
		struct nbd_req *next = r->next;
		r->next = NULL;
		nbd_async_end(r);
		r = next;
	}
}

/* Drive libnbd until the handle is dead after the socket was shut down
 * under it (bounded: each round either reads EOF or fails a send). */
static void nbd_kill_handle(struct nbd_conn *c)
{
	shutdown(c->sock, SHUT_RDWR);
	for (int i = 0; i < 100; i++) {
		if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h))
			return;
		unsigned dir = nbd_aio_get_direction(c->h);
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			nbd_aio_notify_read(c->h);
		else if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			nbd_aio_notify_write(c->h);
		else
			return;
	}
}

/* End a queued request that never reached libnbd with ERR. */
static void nbd_queued_fail(struct nbd_conn *c, struct nbd_req *r, int err)
{
	pthread_mutex_lock(&c->mu);
	nbd_unlink(c, r);
	r->done = true;
	pthread_mutex_unlock(&c->mu);
	r->err = err;
	nbd_async_end(r);
}

/* Hand the queued reads Q to libnbd, from the thread that reads its
 * replies (so nobody waits for the handle lock). */
static void nbd_submit_queued(struct nbd_conn *c, struct nbd_req *q)
{
	while (q) {
		struct nbd_req *r = q;
		q = r->qnext;
		r->qnext = NULL;
		nbd_completion_callback cb = {.callback = nbd_complete_cb,
					      .user_data = r};
		if (nbd_aio_pread(c->h, r->buf, r->len, r->off, cb, 0) == -1) {
			int err = nbd_get_errno();
			nbd_queued_fail(c, r, err > 0 ? err : EIO);
		}
	}
}

static void *nbd_dispatch(void *arg)
{
	struct nbd_conn *c = arg;

	pthread_setname_np(pthread_self(), "nd-nbd");
	nbd_in_dispatch = true;
	nbd_ended_tail = &nbd_ended;
	for (;;) {
		int ms = NBD_TICK_MS;
		bool expired = false;

		pthread_mutex_lock(&c->mu);
		c->polling = false;
		if (c->stop) {
			struct nbd_req *q = c->queued;
			c->queued = c->queued_tail = NULL;
			pthread_mutex_unlock(&c->mu);
			while (q) {
				struct nbd_req *r = q;
				q = r->qnext;
				nbd_queued_fail(c, r, ENOTCONN);
			}
			break;
		}
		if (c->head && !c->dead) {
			double left = c->head->deadline - nd_mono_s();
			if (left <= 0)
				expired = true;
			else if (left * 1000 < ms)
				ms = (int)ceil(left * 1000);
		}
		if (expired) {
			c->dead = c->timed_out = true;
			pthread_mutex_unlock(&c->mu);
			nd_warn(
			    "%s: nbd: no reply from the server in %g s, dropping the connection",
			    c->name, c->timeout);
			nbd_kill_handle(c);
			nbd_end_ended();
			continue;
		}
		struct nbd_req *q = c->queued;
		c->queued = c->queued_tail = NULL;
		pthread_mutex_unlock(&c->mu);
		if (q) {
			nbd_submit_queued(c, q);
			continue; /* more may have come meanwhile */
		}

		/* Once ready, the direction is 0 only when the handle is dead
		 * or closed: then nothing is left but waiting for close. */
		unsigned dir = nbd_aio_get_direction(c->h);
		struct pollfd pfd[2] = {
		    {.fd = c->wake, .events = POLLIN},
		    {.fd = -1},
		};
		if (dir) {
			pfd[1].fd = c->sock;
			if (dir & LIBNBD_AIO_DIRECTION_READ)
				pfd[1].events |= POLLIN;
			if (dir & LIBNBD_AIO_DIRECTION_WRITE)
				pfd[1].events |= POLLOUT;
		} else if (nbd_handle_gone(c)) {
			pthread_mutex_lock(&c->mu);
			c->dead = true;
			pthread_mutex_unlock(&c->mu);
			ms = -1;
		}
		pthread_mutex_lock(&c->mu);
		bool sleep = c->polling = !c->queued;
		pthread_mutex_unlock(&c->mu);
		int n = sleep ? poll(pfd, 2, ms) : 0;
		if (n == 0)
			continue;
		if (n < 0 && errno != EINTR) {
			nd_warn("%s: nbd: poll: %m", c->name);
			usleep(10000);
			continue;
		}
		if (pfd[0].revents & POLLIN) {
			uint64_t v;
			if (read(c->wake, &v, sizeof v) < 0 && errno != EAGAIN)
				nd_debug("%s: nbd: eventfd read: %m", c->name);
		}
		/* A reply may change what libnbd wants next: read first,
		 * then write only if it still wants to (libnbd's advice). */
		short re = pfd[1].revents;
		bool hup = re & (POLLHUP | POLLERR);
		bool did_read = false;
		if ((re & POLLIN) ||
		    (hup && (dir & LIBNBD_AIO_DIRECTION_READ))) {
			nbd_aio_notify_read(c->h);
			did_read = true;
		}
		if ((re & POLLOUT) || (hup && !did_read)) {
			if (!did_read || (nbd_aio_get_direction(c->h) &
					  LIBNBD_AIO_DIRECTION_WRITE))
				nbd_aio_notify_write(c->h);
		}
		nbd_end_ended();
	}
	return NULL;
}

/* ---- requests -------------------------------------------------------- */

static int nbd_lost(struct nbd_conn *c, const char *what)
{
	bool timed_out;

	pthread_mutex_lock(&c->mu);
	c->dead = true;
	timed_out = c->timed_out;
	pthread_mutex_unlock(&c->mu);
	if (timed_out)
		nd_error("%s: nbd: %s: no reply from the server in %g s",
			 c->name, what, c->timeout);
	else
		nd_error("%s: nbd: %s: connection to the server lost", c->name,
			 what);
	errno = ENOTCONN;
	return -ENOTCONN;
}

static const char *nbd_op_name(enum nbd_op op)
{
	switch (op) {
	case NBD_OP_READ: return "read";
	case NBD_OP_WRITE: return "write";
	case NBD_OP_FLUSH: return "flush";
	case NBD_OP_ZERO: return "write zeroes";
	}
	return "?";
}

/* Describe a request for a message (only on the error paths). */
static const char *nbd_what(char *buf, size_t n, enum nbd_op op, uint64_t len,
			    uint64_t off)
{
	snprintf(buf, n, "%s of %" PRIu64 " bytes at %" PRIu64, nbd_op_name(op),
		 len, off);
	return buf;
}

static int nbd_send(struct nbd_conn *c, struct nbd_req *r, enum nbd_op op,
		    void *buf, uint64_t len, uint64_t off, uint32_t flags);

/* Queue R (its deadline starts now) and submit its command: 0, or
 * -errno when it was not queued (its callback will never run). */
static int nbd_start(struct nbd_conn *c, struct nbd_req *r, enum nbd_op op,
		     void *buf, uint64_t len, uint64_t off, uint32_t flags)
{
	char what[96];

	r->c = c;
	pthread_mutex_lock(&c->mu);
	if (c->dead) {
		pthread_mutex_unlock(&c->mu);
		return nbd_lost(c, nbd_what(what, sizeof what, op, len, off));
	}
	nbd_link(c, r);
	pthread_mutex_unlock(&c->mu);
	return nbd_send(c, r, op, buf, len, off, flags);
}

/* Hand R (linked) to libnbd: 0, or -errno when it was not sent (then
 * unlinked; its callback will never run). */
static int nbd_send(struct nbd_conn *c, struct nbd_req *r, enum nbd_op op,
		    void *buf, uint64_t len, uint64_t off, uint32_t flags)
{
	nbd_completion_callback cb = {.callback = nbd_complete_cb,
				      .user_data = r};
	int64_t cookie = -1;
	char what[96];

	switch (op) {
	case NBD_OP_READ:
		cookie = nbd_aio_pread(c->h, buf, len, off, cb, 0);
		break;
	case NBD_OP_WRITE:
		cookie = nbd_aio_pwrite(c->h, buf, len, off, cb, flags);
		break;
	case NBD_OP_FLUSH: cookie = nbd_aio_flush(c->h, cb, 0); break;
	case NBD_OP_ZERO:
		cookie = nbd_aio_zero(c->h, len, off, cb, flags);
		break;
	}
	if (cookie == -1) {
		pthread_mutex_lock(&c->mu);
		nbd_unlink(c, r);
		pthread_mutex_unlock(&c->mu);
		if (nbd_handle_gone(c))
			return nbd_lost(
			    c, nbd_what(what, sizeof what, op, len, off));
		return nbd_fail(c->name,
				nbd_what(what, sizeof what, op, len, off));
	}
	/* A send that could not finish at once needs the dispatcher to wait
	 * for POLLOUT; it may be sleeping on POLLIN only. */
	if (nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE)
		nbd_poke(c);
	return 0;
}

/* What a command that ended with errno ERR returns. */
static int nbd_result(struct nbd_conn *c, enum nbd_op op, int err,
		      uint64_t len, uint64_t off)
{
	char what[96];

	if (err == 0)
		return 0;
	pthread_mutex_lock(&c->mu);
	bool killed = c->timed_out;
	pthread_mutex_unlock(&c->mu);
	/* ENOTCONN never comes from the server (it is not an NBD error):
	 * libnbd failed the command because the connection died, maybe a
	 * moment before the handle reports itself dead. */
	if (killed || err == ENOTCONN || nbd_handle_gone(c))
		return nbd_lost(c, nbd_what(what, sizeof what, op, len, off));
	if (err == ESHUTDOWN) {
		/* The server is going away (nbdkit answers this way while it
		 * drains on SIGTERM): drop the connection so the core opens a
		 * new one, as the NBD protocol asks of clients. */
		shutdown(c->sock, SHUT_RDWR);
		nbd_poke(c);
		nbd_lost(c, nbd_what(what, sizeof what, op, len, off));
		nd_error("%s: nbd: %s: the server is shutting down", c->name,
			 what);
		errno = ENOTCONN;
		return -ENOTCONN;
	}
	nbd_what(what, sizeof what, op, len, off);
	errno = err;
	nd_error("%s: nbd: %s: server replied: %m", c->name, what);
	return -err;
}

/* Submit one command and wait for its completion (or the deadline). */
static int nbd_run(struct nbd_conn *c, enum nbd_op op, void *buf, uint64_t len,
		   uint64_t off, uint32_t flags)
{
	struct nbd_req r = {.c = c};
	int rc;

	pthread_cond_init(&r.cond, NULL);
	rc = nbd_start(c, &r, op, buf, len, off, flags);
	if (rc == 0) {
		pthread_mutex_lock(&c->mu);
		while (!r.done)
			pthread_cond_wait(&r.cond, &c->mu);
		pthread_mutex_unlock(&c->mu);
		rc = nbd_result(c, op, r.err, len, off);
	}
	pthread_cond_destroy(&r.cond);
	return rc;
}

static int nbd_pread_cb(void *conn, void *buf, size_t len, uint64_t off)
{
	return nbd_run(conn, NBD_OP_READ, buf, len, off, 0);
}

/* Submit R: from this thread while the dispatcher sleeps in poll (it
 * holds no lock then, and wakes for the reply), else through the queue
 * the dispatcher empties before it sleeps again. 0, or -errno when the
 * connection is gone (R was not queued). */
static int nbd_queue(struct nbd_conn *c, struct nbd_req *r)
{
	char what[96];
	bool direct;

	r->c = c;
	pthread_mutex_lock(&c->mu);
	if (c->dead || c->stop) {
		pthread_mutex_unlock(&c->mu);
		return nbd_lost(c, nbd_what(what, sizeof what, NBD_OP_READ,
					    r->len, r->off));
	}
	nbd_link(c, r);
	direct = c->polling && !c->queued;
	if (!direct) {
		if (c->queued_tail)
			c->queued_tail->qnext = r;
		else
			c->queued = r;
		c->queued_tail = r;
	}
	pthread_mutex_unlock(&c->mu);
	if (direct)
		return nbd_send(c, r, NBD_OP_READ, r->buf, r->len, r->off, 0);
	return 0;
}

/* A read answered from the completion callback: the caller does not
 * wait, so no thread is woken to learn that it ended. */
static int nbd_pread_async_cb(void *conn, void *buf, size_t len, uint64_t off,
			      nd_done_fn done, void *arg)
{
	struct nbd_req *r = calloc(1, sizeof *r);
	int rc;

	if (!r) {
		nd_error("nbd: out of memory");
		return -ENOMEM;
	}
	r->done_fn = done;
	r->done_arg = arg;
	r->len = len;
	r->off = off;
	r->buf = buf;
	rc = nbd_queue(conn, r);
	if (rc < 0)
		free(r);
	return rc;
}

static int nbd_pwrite_cb(void *conn, const void *buf, size_t len, uint64_t off)
{
	struct nbd_conn *c = conn;

	if (c->read_only) {
		nd_error("%s: nbd: write: the export is read-only", c->name);
		errno = EROFS;
		return -EROFS;
	}
	return nbd_run(c, NBD_OP_WRITE, (void *)buf, len, off, 0);
}

static int nbd_flush_cb(void *conn)
{
	struct nbd_conn *c = conn;

	if (!c->can_flush)
		return 0; /* the server writes through: nothing to flush */
	return nbd_run(c, NBD_OP_FLUSH, NULL, 0, 0, 0);
}

static int nbd_zero_cb(void *conn, uint64_t len, uint64_t off, unsigned flags)
{
	struct nbd_conn *c = conn;
	uint32_t f = 0;

	if (c->read_only) {
		nd_error("%s: nbd: write zeroes: the export is read-only",
			 c->name);
		errno = EROFS;
		return -EROFS;
	}
	if (!c->can_zero) {
		nd_error(
		    "%s: nbd: write zeroes: the server does not support it",
		    c->name);
		errno = EOPNOTSUPP;
		return -EOPNOTSUPP;
	}
	if (!(flags & ND_MAY_TRIM))
		f |= LIBNBD_CMD_FLAG_NO_HOLE;
	return nbd_run(c, NBD_OP_ZERO, NULL, len, off, f);
}

/* ---- open / close ---------------------------------------------------- */

static void nbd_conn_free(struct nbd_conn *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->mu);
		c->stop = true;
		pthread_mutex_unlock(&c->mu);
		nbd_poke(c);
		pthread_join(c->thread, NULL);
	}
	if (c->h) {
		/* Say goodbye when nothing is outstanding; never wait for it.
		 */
		if (nbd_aio_is_ready(c->h) && nbd_aio_in_flight(c->h) == 0)
			nbd_aio_disconnect(c->h, 0);
		nbd_close(c->h);
	}
	if (c->sock >= 0)
		close(c->sock);
	if (c->wake >= 0)
		close(c->wake);
	pthread_mutex_destroy(&c->mu);
	free(c->name);
	free(c);
}

static void nbd_close_cb(void *conn)
{
	nbd_conn_free(conn);
}

/* Explain the failures people hit most, after libnbd's own words, and
 * sort them: transport failures (refused, reset, socket missing, server
 * gone during the handshake) come back as -ECONNREFUSED so the core
 * retries them; refusals by the server (TLS, unknown export) are final. */
static int nbd_connect_fail(struct nbd_conn *c, const char *where, int tls)
{
	const char *msg = nbd_get_error();
	int err = nbd_get_errno();
	const char *hint = "";

	if (!msg)
		msg = strerror(err > 0 ? err : ECONNREFUSED);
	/* connect(2) itself failed (socket missing, refused, no route) or
	 * the name did not resolve: the server is not there (yet). */
	bool transport =
	    strstr(msg, ": connect: ") || strstr(msg, "getaddrinfo");
	if (tls == LIBNBD_TLS_DISABLE && strstr(msg, "TLS")) {
		hint =
		    " (the server requires TLS: use nbds:// or tls=require with tls-psk-file= or tls-certificates=)";
		err = EOPNOTSUPP;
	} else if (tls != LIBNBD_TLS_DISABLE &&
		   (strstr(msg, "gnutls") || strstr(msg, "TLS"))) {
		if (strstr(msg, "certificate"))
			hint =
			    " (TLS handshake failed: the server's certificate is not signed by ca-cert.pem in tls-certificates= or does not name this host)";
		else if (c->psk)
			hint =
			    " (TLS handshake failed: the key in tls-psk-file= is not the server's key for tls-username=)";
		else
			hint = " (TLS handshake failed)";
		err = EACCES;
	} else if (transport || err <= 0 || err == ECONNREFUSED ||
		   err == ECONNRESET || err == EPIPE || err == ENOTCONN ||
		   err == ETIMEDOUT || err == EHOSTUNREACH ||
		   err == ENETUNREACH || err == EADDRNOTAVAIL) {
		err = ECONNREFUSED;
	}
	nd_error("%s: nbd: cannot connect to %s: %s%s", c->name, where, msg,
		 hint);
	errno = err;
	return -err;
}

/* Run libnbd's connect and handshake until ready, dead or the deadline. */
static int nbd_wait_ready(struct nbd_conn *c, const char *where, int tls,
			  double limit)
{
	double deadline = nd_mono_s() + limit;

	for (;;) {
		if (nbd_aio_is_ready(c->h))
			return 0;
		if (nbd_handle_gone(c))
			return nbd_connect_fail(c, where, tls);
		double left = deadline - nd_mono_s();
		if (left <= 0) {
			nd_error(
			    "%s: nbd: cannot connect to %s: no answer in %g s",
			    c->name, where, limit);
			errno = ETIMEDOUT;
			return -ETIMEDOUT;
		}
		int fd = nbd_aio_get_fd(c->h);
		unsigned dir = nbd_aio_get_direction(c->h);
		if (fd < 0)
			return nbd_connect_fail(c, where, tls);
		struct pollfd pfd = {.fd = fd};
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			pfd.events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			pfd.events |= POLLOUT;
		int ms = (int)ceil(left * 1000);
		int n = poll(&pfd, 1, ms > NBD_TICK_MS ? NBD_TICK_MS : ms);
		if (n < 0 && errno != EINTR) {
			nd_error("%s: nbd: poll: %m", c->name);
			return -errno;
		}
		if (n <= 0)
			continue;
		int rc = 0;
		if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) &&
		    (dir & LIBNBD_AIO_DIRECTION_READ))
			rc = nbd_aio_notify_read(c->h);
		else if (pfd.revents & (POLLOUT | POLLHUP | POLLERR))
			rc = nbd_aio_notify_write(c->h);
		if (rc == -1 && !nbd_handle_gone(c))
			return nbd_connect_fail(c, where, tls);
	}
}

static int nbd_tls_mode(const struct nd_opts *o, int *tls)
{
	const char *v = nd_opt_get(o, "tls");

	if (!v) {
		/* Credentials without tls= mean the user wants TLS. */
		*tls = nd_opt_get(o, "tls-psk-file") ||
			       nd_opt_get(o, "tls-certificates")
			   ? LIBNBD_TLS_REQUIRE
			   : LIBNBD_TLS_DISABLE;
		return 0;
	}
	if (!strcmp(v, "require")) {
		*tls = LIBNBD_TLS_REQUIRE;
		return 0;
	}
	if (!strcmp(v, "allow")) {
		*tls = LIBNBD_TLS_ALLOW;
		return 0;
	}
	bool b;
	if (nd_parse_bool(v, &b) < 0) {
		nd_error("%s: tls=%s: expected off, on or require", o->name, v);
		errno = EINVAL;
		return -1;
	}
	*tls = b ? LIBNBD_TLS_ALLOW : LIBNBD_TLS_DISABLE;
	return 0;
}

static int nbd_setup_tls(struct nbd_conn *c, const struct nd_opts *o, int tls)
{
	const char *v;
	bool verify;

	if (tls == LIBNBD_TLS_DISABLE)
		return 0;
	if (!nbd_supports_tls(c->h)) {
		nd_error("%s: nbd: this libnbd was built without TLS support",
			 c->name);
		errno = ENOTSUP;
		return -ENOTSUP;
	}
	if (nbd_set_tls(c->h, tls) == -1)
		return nbd_fail(c->name, "tls");
	if ((v = nd_opt_get(o, "tls-certificates")) &&
	    nbd_set_tls_certificates(c->h, v) == -1)
		return nbd_fail(c->name, "tls-certificates");
	if ((v = nd_opt_get(o, "tls-psk-file"))) {
		if (access(v, R_OK) < 0) {
			nd_error("%s: nbd: tls-psk-file=%s: %m", c->name, v);
			return -errno;
		}
		if (nbd_set_tls_psk_file(c->h, v) == -1)
			return nbd_fail(c->name, "tls-psk-file");
		c->psk = true;
	}
	if (!c->psk && !nd_opt_get(o, "tls-certificates") &&
	    access("/etc/pki/libnbd/ca-cert.pem", R_OK) < 0 &&
	    nd_first_time("nbd/tls-unverified")) /* once per process */
		nd_warn(
		    "%s: nbd: TLS without tls-certificates=: libnbd will not verify the server's certificate",
		    c->name);
	if ((v = nd_opt_get(o, "tls-username")) &&
	    nbd_set_tls_username(c->h, v) == -1)
		return nbd_fail(c->name, "tls-username");
	if (nd_opt_bool(o, "tls-verify-peer", true, &verify) < 0) {
		errno = EINVAL;
		return -EINVAL;
	}
	if (nbd_set_tls_verify_peer(c->h, verify) == -1)
		return nbd_fail(c->name, "tls-verify-peer");
	return 0;
}

/* Start the connect; *where describes the server for messages. */
static int nbd_start_connect(struct nbd_conn *c, const struct nd_opts *o,
			     int tls, char *where, size_t wlen)
{
	/* nbd-url.c's normalize made server.type inet (with server.host
	 * and server.port) or unix (with server.path). */
	const char *path = nd_opt_get(o, "server.path");
	const char *host = nd_opt_get(o, "server.host");
	uint64_t port;
	char portstr[16];

	if (!strcmp(nd_opt_get(o, "server.type"), "unix")) {
		snprintf(where, wlen, "unix:%s", path);
		if (nbd_aio_connect_unix(c->h, path) == -1)
			return nbd_connect_fail(c, where, tls);
		return 0;
	}
	/* A dotted server.port= reaches here as written: parse it. */
	if (nd_opt_uint(o, "server.port", 0, 1, 65535, &port) < 0) {
		errno = EINVAL;
		return -EINVAL;
	}
	snprintf(portstr, sizeof portstr, "%" PRIu64, port);
	snprintf(where, wlen, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
		 portstr);
	if (nbd_aio_connect_tcp(c->h, host, portstr) == -1)
		return nbd_connect_fail(c, where, tls);
	return 0;
}

static void nbd_fill_info(struct nbd_conn *c, int64_t size, bool ro_entry,
			  struct nd_info *info)
{
	int64_t min = nbd_get_block_size(c->h, LIBNBD_SIZE_MINIMUM);
	int64_t max = nbd_get_block_size(c->h, LIBNBD_SIZE_MAXIMUM);

	memset(info, 0, sizeof *info);
	info->size = (uint64_t)size;
	info->block_size = min > 1 ? (uint32_t)min : 0;
	info->max_request = max > 0 && max < NBD_DEFAULT_MAX_REQUEST
				? (uint32_t)max
				: NBD_DEFAULT_MAX_REQUEST;
	info->max_trim = NBD_MAX_TRIM;
	info->read_only = ro_entry || nbd_is_read_only(c->h) == 1;
	info->can_flush = nbd_can_flush(c->h) == 1;
	info->can_zero = !info->read_only && nbd_can_zero(c->h) == 1;
	info->can_multi_conn = nbd_can_multi_conn(c->h) == 1;
	info->thread_safe = true;
	/* Without multi-conn, writes on one connection need not be visible
	 * to reads on another: stay on one, pipelined. */
	info->max_connections = info->can_multi_conn ? 0 : 1;
}

static int nbd_open_cb(const struct nd_opts *o, const struct nd_settings *s,
		       void **conn, struct nd_info *info)
{
	struct nbd_conn *c;
	char where[PATH_MAX + 32] = "the server";
	const char *exp = nd_opt_get(o, "export");
	bool ro_entry = s->read_only;
	double connect_limit = s->reconnect_delay;
	int tls, rc;

	c = calloc(1, sizeof *c);
	if (!c) {
		nd_error("%s: nbd: out of memory", o->name);
		return -ENOMEM;
	}
	c->sock = c->wake = -1;
	pthread_mutex_init(&c->mu, NULL);
	c->name = strdup(o->name ? o->name : "nbd");
	if (!c->name) {
		rc = -ENOMEM;
		nd_error("nbd: out of memory");
		goto fail;
	}
	c->timeout = s->timeout;
	if (nbd_tls_mode(o, &tls) < 0) {
		rc = -EINVAL;
		goto fail;
	}
	/* A connect that outlives reconnect-delay is useless to the core's
	 * retry loop: give up by then (but allow a slow TLS handshake 1 s). */
	if (connect_limit < 1)
		connect_limit = 1;
	if (connect_limit > c->timeout)
		connect_limit = c->timeout;

	c->h = nbd_create();
	if (!c->h) {
		rc = nbd_fail(c->name, "create handle");
		goto fail;
	}
	nbd_set_handle_name(c->h, c->name);
	if (nd_debug_enabled) {
		nbd_set_debug_callback(
		    c->h, (nbd_debug_callback){.callback = nbd_debug_cb,
					       .user_data = c->name});
		nbd_set_debug(c->h, true);
	}
	/* Reads land straight in the core's cache block; libnbd need not
	 * clear it first. */
	nbd_set_pread_initialize(c->h, false);
	/* Simple replies: a read's reply is one header and the data (two
	 * reads of the socket); a structured one adds a chunk header (three).
	 * Nothing here asks for block status, the one thing that needs them. */
	nbd_set_request_structured_replies(c->h, false);
	if (nbd_set_export_name(c->h, exp ? exp : "") == -1) {
		rc = nbd_fail(c->name, "export");
		goto fail;
	}
	if ((rc = nbd_setup_tls(c, o, tls)) < 0)
		goto fail;
	if ((rc = nbd_start_connect(c, o, tls, where, sizeof where)) < 0)
		goto fail;
	if ((rc = nbd_wait_ready(c, where, tls, connect_limit)) < 0)
		goto fail;

	int64_t size = nbd_get_size(c->h);
	if (size < 0) {
		rc = nbd_fail(c->name, "size");
		goto fail;
	}
	nbd_fill_info(c, size, ro_entry, info);
	c->read_only = info->read_only;
	c->can_flush = info->can_flush;
	c->can_zero = info->can_zero;

	c->sock = dup(nbd_aio_get_fd(c->h));
	c->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->sock < 0 || c->wake < 0) {
		nd_error("%s: nbd: %m", c->name);
		rc = -errno;
		goto fail;
	}
	rc = pthread_create(&c->thread, NULL, nbd_dispatch, c);
	if (rc != 0) {
		errno = rc;
		nd_error("%s: nbd: cannot start the dispatcher thread: %m",
			 c->name);
		rc = -rc;
		goto fail;
	}
	c->thread_started = true;
	nd_debug("%s: nbd: connected to %s export \"%s\" (%s%s, %" PRIi64
		 " bytes, min block %" PRIu32 ", max request %" PRIu32
		 "%s%s%s%s%s%s)",
		 c->name, where, exp ? exp : "", nbd_get_protocol(c->h),
		 nbd_get_tls_negotiated(c->h) == 1 ? ", TLS" : "", size,
		 info->block_size, info->max_request,
		 info->read_only ? ", read-only" : "",
		 info->can_flush ? ", flush" : "",
		 !info->read_only && nbd_can_fua(c->h) == 1 ? ", fua" : "",
		 !info->read_only && nbd_can_trim(c->h) == 1 ? ", trim" : "",
		 info->can_zero ? ", zero" : "",
		 info->can_multi_conn ? ", multi-conn" : "");
	*conn = c;
	return 0;

fail:
	nbd_conn_free(c);
	return rc < 0 ? rc : -EIO;
}

static const char *const nbd_drivers[] = {"nbd", NULL};
static const char *const nbd_schemes[] = {
    "nbd", "nbd+tcp", "nbd+unix", "nbds", "nbds+tcp", "nbds+unix", NULL};
static const struct nd_optdesc nbd_options[] = {
    {"server.type", ND_OPT_STRING, "inet", false, "inet (TCP) or unix"},
    {"server.host", ND_OPT_STRING, NULL, false,
     "server host name or address (inet)"},
    {"server.port", ND_OPT_UINT, "10809", false, "server TCP port"},
    {"server.path", ND_OPT_FILE, NULL, false, "server Unix socket path (unix)"},
    {"export", ND_OPT_STRING, "\"\"", false, "export name"},
    {"tls", ND_OPT_STRING, NULL, false,
     "off, on (use TLS when offered) or require"},
    {"tls-psk-file", ND_OPT_FILE, NULL, false,
     "PSK key file (psktool format); implies tls=require"},
    {"tls-certificates", ND_OPT_FILE, NULL, false,
     "directory of X.509 certificates; implies tls=require"},
    {"tls-username", ND_OPT_STRING, NULL, false,
     "TLS PSK user name (default: the login name)"},
    {"tls-verify-peer", ND_OPT_BOOL, "on", false,
     "verify the server certificate"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};

static const struct nd_backend nbd_backend = {
    .name = "nbd",
    .drivers = nbd_drivers,
    .schemes = nbd_schemes,
    .description = "Network Block Device (libnbd): TCP, Unix sockets, TLS",
    .options = nbd_options,
    .open = nbd_open_cb,
    .close = nbd_close_cb,
    .pread = nbd_pread_cb,
    .pread_async = nbd_pread_async_cb,
    .pwrite = nbd_pwrite_cb,
    .flush = nbd_flush_cb,
    .zero = nbd_zero_cb,
};

ND_BACKEND_REGISTER(nbd_backend);
