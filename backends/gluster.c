/* pkg-config: glusterfs-api */
/* gluster.c: GlusterFS volumes through libgfapi.
 *
 * A glfs_t is costly: glfs_init fetches the volume file from glusterd and
 * connects to every brick, and glfs_fini takes about 10 s (an upstream wait
 * on the brick transports, "wontfix"). libgfapi is thread-safe, so one
 * glfs_t serves every entry whose volume, server list, debug and logfile
 * agree. It lives in a small registry from the first open() until unmount;
 * each open() only adds a glfs_fd_t on it.
 *
 * glfs_init runs in a thread of its own so that open() can give up after
 * open-timeout while a hung server keeps glfs_init busy; if it succeeds
 * later the next open() finds it ready. At unmount (shutdown) the glfs_fini
 * calls run in parallel threads, joined with a bound, so N volumes cost
 * ~10 s rather than N x 10 s.
 *
 * Every server of the list goes to glfs_set_volfile_server: libgfapi tries
 * the next one when one is unreachable (about 3 s per dead server), but
 * it changes only the host, not the transport (a dead TCP server followed
 * by glusterd's Unix socket fails). So the servers that answer a connect
 * go first, and if glfs_init still fails each server is put first in turn.
 * libgfapi reconnects to bricks by itself and reopens its fds, so ENOTCONN
 * from an operation returns -EAGAIN and the core retries on the same fd
 * until its deadline; a bad or stale fd returns -ENOTCONN so the core opens
 * the file again. The client translators' ping-timeout and frame-timeout
 * are set from the entry's timeout so that no operation waits longer on a
 * stopped brick. open-behind is put in pass-through: its deferred OPEN, if
 * it fails, leaves the fd failed for good.
 *
 * Writes: the file is opened O_DSYNC, so write-behind passes each write
 * through and a write returns only once the brick has it (the core
 * acknowledges a write only after the server did; a brick killed while
 * write-behind held acknowledged writes lost them). The guard below for a
 * failed sync (resync-failed-syncs-after-fsync, a file that refuses writes
 * after a failed fsync) stays for the rest of write-behind's buffering. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <glusterfs/api/glfs.h>

#include "backend.h"
#include "util/clock.h"
#include "util/once.h"

#define GLUSTER_DEFAULT_DEBUG 4
/* Seconds open() waits for glfs_init (about 3 s per dead server). */
#define GLUSTER_DEFAULT_OPEN_TIMEOUT 30.0
#define GLUSTER_MAX_SERVERS 64
/* Largest read/write handed to libgfapi in one call. */
#define GLUSTER_MAX_REQUEST (4u << 20)
/* Largest discard/zerofill in one call. */
#define GLUSTER_MAX_TRIM (1u << 30)
/* How long shutdown waits for the parallel glfs_fini calls (each ~10 s). */
#define GLUSTER_FINI_BOUND 30.0

struct gluster_server {
	const char *transport; /* "tcp" or "unix" (static strings) */
	char *host;	       /* host name, or the socket path for unix */
	int port;	       /* 0 for unix */
};

enum gluster_state { GLUSTER_STARTING, GLUSTER_READY, GLUSTER_FAILED };

/* One glfs_t and what identifies it. Protected by gluster_lock except
 * fs, which is set once before state becomes READY. */
struct gluster_vol {
	struct gluster_vol *next; /* in gluster_vols while linked */
	char *key;		  /* volume, servers, debug, logfile */
	char *volume;
	struct gluster_server *servers;
	size_t nservers;
	int debug;
	char *logfile; /* NULL: the daemon's own log (nd_debug) */
	int ping_timeout;
	glfs_t *fs;
	enum gluster_state state;
	bool linked;
	unsigned refs; /* waiting openers, the init thread, connections */
	int err;       /* errno of a failed glfs_init */
	char msg[768]; /* why it failed */
	/* libgfapi's log, when it goes to nd_debug: a pipe and its reader. */
	int log_rd, log_wr;
	pthread_t log_thread;
	bool log_started;
	atomic_bool log_stop;
	/* Paths whose fsync failed: writes refused. */
	char **bad;
	size_t nbad;
};

struct gluster_conn {
	struct gluster_vol *vol;
	glfs_fd_t *fd;
	char *name; /* entry name, for messages */
	char *path;
	atomic_bool bad; /* an fsync on this file failed */
	/* Changes made through this fd, and how many of them the last good
	 * fsync covered: a close that fails with changes unsynced may have
	 * lost acknowledged data. */
	atomic_uint_fast64_t changes, synced;
};

static pthread_mutex_t gluster_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gluster_cond; /* state changes; CLOCK_MONOTONIC */
static pthread_once_t gluster_once = PTHREAD_ONCE_INIT;
static struct gluster_vol *gluster_vols;
static bool gluster_closing;	 /* shutdown ran: late inits clean up alone */
static atomic_uint gluster_nbad; /* any file refusing writes at all? */

static void gluster_init_cond(void)
{
	nd_cond_init_mono(&gluster_cond);
}

/* The one wrapper of libgfapi's errors (it reports through errno only):
 * record "ENTRY: gluster: WHAT: strerror" and return -errno. ENOTCONN
 * becomes -EAGAIN: libgfapi reconnects by itself and reopens its fds, so
 * the core retries on the same fd (whose write-behind cache must survive).
 * A bad or stale fd (its reopen failed) becomes -ENOTCONN: the core then
 * closes this connection and opens the file again. */
static int gluster_fail(const char *name, int err, const char *fmt, ...)
    ND_PRINTF(3, 4);
static int gluster_fail(const char *name, int err, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	if (err <= 0)
		err = EIO;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	nd_error("%s: gluster: %s: %s", name, what, strerror(err));
	errno = err;
	if (err == ENOTCONN)
		return -EAGAIN;
	if (err == EBADFD || err == EBADF || err == ESTALE)
		return -ENOTCONN;
	return -err;
}

/* ---- options --------------------------------------------------------- */

struct gluster_cfg {
	const char *name;
	const char *volume;
	const char *path;
	struct gluster_server *servers; /* host strings borrowed from opts */
	size_t nservers;
	int debug;
	const char *logfile;
	double timeout, open_timeout;
	bool ro;
};

/* Highest N of any server.N.* key, or -1. */
static int gluster_max_server(const struct nd_opts *o)
{
	int max = -1;

	for (size_t i = 0; i < o->n; i++) {
		const char *k = o->v[i].key;
		char *end;

		if (strncmp(k, "server.", 7) != 0 || k[7] < '0' || k[7] > '9')
			continue;
		long n = strtol(k + 7, &end, 10);
		if (*end == '.' && n > max && n < INT_MAX)
			max = (int)n;
	}
	return max;
}

static int gluster_parse_server(const struct nd_opts *o, int i,
				struct gluster_server *s)
{
	/* gluster-url.c's normalize made server.N.type tcp (with a host and
	 * a port), unix (with a socket) or rdma, which is mapped here. */
	const char *type = nd_opt_getf(o, "server.%d.type", i);
	const char *host = nd_opt_getf(o, "server.%d.host", i);
	const char *sock = nd_opt_getf(o, "server.%d.socket", i);
	char key[48];
	uint64_t port;

	if (strcmp(type, "rdma") == 0) {
		if (nd_first_time("gluster/rdma/%s/%d", o->name, i))
			nd_warn(
			    "%s: gluster: server.%d: the rdma transport is gone from GlusterFS, using tcp",
			    o->name, i);
		type = "tcp";
	}
	if (strcmp(type, "unix") == 0) {
		s->transport = "unix";
		s->host = (char *)sock;
		s->port = 0;
		return 0;
	}
	snprintf(key, sizeof key, "server.%d.port", i);
	if (nd_opt_uint(o, key, 0, 1, 65535, &port) < 0)
		return -1;
	s->transport = "tcp";
	s->host = (char *)(*host ? host : "localhost");
	s->port = (int)port;
	return 0;
}

static int gluster_parse(const struct nd_opts *o, const struct nd_settings *s,
			 struct gluster_cfg *c)
{
	int max;

	memset(c, 0, sizeof *c);
	c->name = o->name;
	c->volume = nd_opt_get(o, "volume");
	c->path = nd_opt_get(o, "path");
	c->logfile = nd_opt_get(o, "logfile");
	if (!c->volume || !*c->volume) {
		nd_error("%s: gluster: no volume given", o->name);
		return -1;
	}
	if (!c->path || !*c->path) {
		nd_error("%s: gluster: no image path given (volume %s)",
			 o->name, c->volume);
		return -1;
	}
	if (c->logfile && !*c->logfile)
		c->logfile = NULL;
	/* A silent brick is given `timeout` seconds (ping-timeout and
	 * frame-timeout of the client translators). */
	c->debug = s->debug < 0 ? GLUSTER_DEFAULT_DEBUG : s->debug;
	c->ro = s->read_only;
	c->timeout = s->timeout < 1 ? ND_DEFAULT_TIMEOUT : s->timeout;
	c->open_timeout = s->open_timeout > 0 ? s->open_timeout
					      : GLUSTER_DEFAULT_OPEN_TIMEOUT;

	max = gluster_max_server(o);
	if (max >= GLUSTER_MAX_SERVERS) {
		nd_error("%s: gluster: server.%d: at most %d servers", o->name,
			 max, GLUSTER_MAX_SERVERS);
		return -1;
	}
	/* gluster-url.c's normalize refuses an entry without a server. */
	c->nservers = (size_t)max + 1;
	c->servers = calloc(c->nservers, sizeof *c->servers);
	if (!c->servers) {
		nd_error("%s: gluster: %m", o->name);
		return -1;
	}
	for (int i = 0; i <= max; i++) {
		if (!nd_opt_getf(o, "server.%d.type", i) &&
		    !nd_opt_getf(o, "server.%d.host", i) &&
		    !nd_opt_getf(o, "server.%d.port", i) &&
		    !nd_opt_getf(o, "server.%d.socket", i)) {
			nd_error(
			    "%s: gluster: server.%d is missing from the server list",
			    o->name, i);
			goto err;
		}
		if (gluster_parse_server(o, i, &c->servers[i]) < 0)
			goto err;
	}
	return 0;
err:
	free(c->servers);
	c->servers = NULL;
	return -1;
}

/* "volume|tcp:host:port|unix:/sock:0|debug|logfile": entries with the same
 * key share one glfs_t. */
static char *gluster_key(const struct gluster_cfg *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fprintf(f, "%s", c->volume);
	for (size_t i = 0; i < c->nservers; i++)
		fprintf(f, "|%s:%s:%d", c->servers[i].transport,
			c->servers[i].host, c->servers[i].port);
	fprintf(f, "|%d|%s", c->debug, c->logfile ? c->logfile : "");
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- the registry of glfs_t ------------------------------------------ */

static void gluster_vol_free(struct gluster_vol *v)
{
	for (size_t i = 0; i < v->nservers; i++)
		free(v->servers[i].host);
	for (size_t i = 0; i < v->nbad; i++)
		free(v->bad[i]);
	free(v->bad);
	free(v->servers);
	free(v->key);
	free(v->volume);
	free(v->logfile);
	free(v);
}

static struct gluster_vol *gluster_vol_new(const struct gluster_cfg *c,
					   char *key)
{
	struct gluster_vol *v = calloc(1, sizeof *v);

	if (!v)
		return NULL;
	v->key = key;
	v->log_rd = v->log_wr = -1;
	v->debug = c->debug;
	v->ping_timeout = (int)ceil(c->timeout);
	if (v->ping_timeout > 1013) /* the client translator's maximum */
		v->ping_timeout = 1013;
	v->volume = strdup(c->volume);
	v->logfile = c->logfile ? strdup(c->logfile) : NULL;
	v->servers = calloc(c->nservers, sizeof *v->servers);
	if (!v->volume || (c->logfile && !v->logfile) || !v->servers)
		goto err;
	v->nservers = c->nservers;
	for (size_t i = 0; i < c->nservers; i++) {
		v->servers[i] = c->servers[i];
		v->servers[i].host = strdup(c->servers[i].host);
		if (!v->servers[i].host)
			goto err;
	}
	return v;
err:
	v->key = NULL; /* the caller still owns it */
	gluster_vol_free(v);
	return NULL;
}

static void gluster_unlink(struct gluster_vol *v)
{
	for (struct gluster_vol **p = &gluster_vols; *p; p = &(*p)->next) {
		if (*p == v) {
			*p = v->next;
			break;
		}
	}
	v->next = NULL;
	v->linked = false;
}

/* Drop one reference (gluster_lock held). A volume that never came up is
 * freed with its last reference; a ready one stays until shutdown. */
static void gluster_put_locked(struct gluster_vol *v)
{
	if (--v->refs == 0 && v->state == GLUSTER_FAILED && !v->linked)
		gluster_vol_free(v);
}

/* libgfapi's log lines, when they go to the daemon's own log. */
static void *gluster_log_reader(void *arg)
{
	struct gluster_vol *v = arg;
	char buf[4096];
	size_t have = 0;

	for (;;) {
		struct pollfd p = {.fd = v->log_rd, .events = POLLIN};
		int r = poll(&p, 1, 200);

		if (r == 0) {
			if (atomic_load(&v->log_stop))
				break;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		ssize_t n =
		    r < 0 ? -1
			  : read(v->log_rd, buf + have, sizeof buf - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = '\0';
			/* Drop gluster's "[date time] ": ours has one. */
			const char *msg = line;
			if (*msg == '[' && (msg = strstr(line, "] ")))
				msg += 2;
			else
				msg = line;
			if (*msg)
				nd_debug("gluster %s: %s", v->volume, msg);
			line = nl + 1;
		}
		have = (size_t)(buf + have - line);
		if (have == sizeof buf - 1) { /* a huge line: cut it */
			nd_debug("gluster %s: %s", v->volume, buf);
			have = 0;
		} else {
			memmove(buf, line, have);
		}
	}
	return NULL;
}

/* Where libgfapi writes its log: PATH, /dev/null, or a pipe to nd_debug
 * (only when debug messages are on: otherwise they would be dropped). */
static int gluster_setup_log(struct gluster_vol *v, char *path, size_t size)
{
	int fds[2];

	if (v->logfile) {
		snprintf(path, size, "%s", v->logfile);
		return 0;
	}
	if (!nd_debug_enabled || pipe2(fds, O_CLOEXEC) < 0) {
		snprintf(path, size, "/dev/null");
		return 0;
	}
	v->log_rd = fds[0];
	v->log_wr = fds[1];
	if (pthread_create(&v->log_thread, NULL, gluster_log_reader, v) != 0) {
		close(fds[0]);
		close(fds[1]);
		v->log_rd = v->log_wr = -1;
		snprintf(path, size, "/dev/null");
		return 0;
	}
	v->log_started = true;
	snprintf(path, size, "/proc/self/fd/%d", v->log_wr);
	return 0;
}

static void gluster_stop_log(struct gluster_vol *v)
{
	if (v->log_wr >= 0)
		close(v->log_wr); /* glfs_fini closed its own copy: EOF */
	if (v->log_started) {
		atomic_store(&v->log_stop, true);
		pthread_join(v->log_thread, NULL);
	}
	if (v->log_rd >= 0)
		close(v->log_rd);
	v->log_rd = v->log_wr = -1;
	v->log_started = false;
}

/* Does FD connect within MS milliseconds? (FD is non-blocking.) */
static bool gluster_connects(int fd, const struct sockaddr *sa, socklen_t len,
			     int ms)
{
	struct pollfd p = {fd, POLLOUT, 0};
	int err = 0;
	socklen_t elen = sizeof err;

	if (connect(fd, sa, len) == 0)
		return true;
	if (errno != EINPROGRESS || poll(&p, 1, ms) != 1)
		return false;
	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 &&
	       err == 0;
}

/* Does server S accept a connection (within MS for each address)? */
static bool gluster_server_answers(const struct gluster_server *s, int ms)
{
	bool ok = false;

	if (!s->port) {
		struct sockaddr_un un = {.sun_family = AF_UNIX};
		if (strlen(s->host) >= sizeof un.sun_path)
			return false;
		strcpy(un.sun_path, s->host);
		int fd = socket(AF_UNIX,
				SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		ok = fd >= 0 && gluster_connects(fd, (struct sockaddr *)&un,
						 sizeof un, ms);
		if (fd >= 0)
			close(fd);
		return ok;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *a;
	char port[16];
	snprintf(port, sizeof port, "%d", s->port);
	if (getaddrinfo(s->host, port, &hints, &res) != 0)
		return false;
	for (a = res; a && !ok; a = a->ai_next) {
		int fd = socket(a->ai_family,
				a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				a->ai_protocol);
		if (fd < 0)
			continue;
		ok = gluster_connects(fd, a->ai_addr, a->ai_addrlen, ms);
		close(fd);
	}
	freeaddrinfo(res);
	return ok;
}

/* The order to hand the servers to libgfapi in: those that answer a
 * connect first, each group in the list's order. */
static void gluster_server_order(const struct gluster_vol *v, size_t *order)
{
	size_t n = 0;
	bool *up = calloc(v->nservers, sizeof *up);

	for (size_t i = 0; i < v->nservers; i++)
		if (up && (up[i] = gluster_server_answers(
			       &v->servers[i], v->ping_timeout * 1000)))
			order[n++] = i;
	for (size_t i = 0; i < v->nservers; i++)
		if (!up || !up[i])
			order[n++] = i;
	free(up);
}

/* Make the glfs_t with the servers in ORDER, from ORDER[FIRST] on (and
 * round), and initialise it. On failure *fsp may still hold a glfs_t for
 * the caller to glfs_fini, and *where names the failed step. */
static int gluster_connect(struct gluster_vol *v, const size_t *order,
			   size_t first, glfs_t **fsp, const char **where)
{
	char path[PATH_MAX + 32], num[16];
	glfs_t *fs = glfs_new(v->volume);

	*fsp = fs;
	*where = "glfs_new";
	if (!fs)
		return -1;
	for (size_t k = 0; k < v->nservers; k++) {
		const struct gluster_server *sv =
		    &v->servers[order[(first + k) % v->nservers]];
		*where = "glfs_set_volfile_server";
		if (glfs_set_volfile_server(fs, sv->transport, sv->host,
					    sv->port) < 0)
			return -1;
	}
	/* Keep writes that failed to sync cached so the next fsync retries
	 * them (see the top of this file). */
	*where = "glfs_set_xlator_option";
	if (glfs_set_xlator_option(fs, "*-write-behind",
				   "resync-failed-syncs-after-fsync", "on") < 0)
		return -1;
	/* open-behind would answer glfs_open at once and send the real OPEN
	 * with the first read; if that OPEN fails (brick unreachable at that
	 * moment) the fd stays failed for good, even after the brick is
	 * back. Open for real, so errors show up in open() and libgfapi's
	 * fd reopen on reconnection covers the rest. */
	if (glfs_set_xlator_option(fs, "*-open-behind", "pass-through", "on") <
	    0)
		return -1;
	snprintf(num, sizeof num, "%d", v->ping_timeout);
	if (glfs_set_xlator_option(fs, "*-client-*", "ping-timeout", num) < 0 ||
	    glfs_set_xlator_option(fs, "*-client-*", "frame-timeout", num) < 0)
		return -1;
	gluster_setup_log(v, path, sizeof path);
	*where = v->logfile ? "cannot open the logfile" : "glfs_set_logging";
	if (glfs_set_logging(fs, path, v->debug) < 0)
		return -1;
	*where = "glfs_init";
	return glfs_init(fs);
}

static void gluster_describe_servers(const struct gluster_vol *v, char *buf,
				     size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < v->nservers && off < size; i++) {
		const struct gluster_server *s = &v->servers[i];
		int n = s->port ? snprintf(buf + off, size - off, "%s%s:%d",
					   i ? ", " : "", s->host, s->port)
				: snprintf(buf + off, size - off, "%sunix:%s",
					   i ? ", " : "", s->host);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

/* glfs_init with the answering servers first; when it fails, with each
 * server first in turn (libgfapi's own failover keeps the first server's
 * transport), until one works or unmount starts. */
static int gluster_connect_any(struct gluster_vol *v, glfs_t **fsp,
			       const char **where)
{
	size_t *order = calloc(v->nservers ? v->nservers : 1, sizeof *order);
	int r = -1, e = 0;

	*fsp = NULL;
	*where = "out of memory";
	if (!order) {
		errno = ENOMEM;
		return -1;
	}
	gluster_server_order(v, order);
	for (size_t first = 0; first < v->nservers; first++) {
		if (*fsp) {
			glfs_fini(*fsp);
			*fsp = NULL;
		}
		r = gluster_connect(v, order, first, fsp, where);
		e = errno;
		pthread_mutex_lock(&gluster_lock);
		bool closing = gluster_closing;
		pthread_mutex_unlock(&gluster_lock);
		if (r == 0 || strcmp(*where, "glfs_init") != 0 || closing)
			break;
		nd_debug(
		    "gluster: volume %s: glfs_init with server %zu first failed (%s); trying the next one first",
		    v->volume, order[first], strerror(e));
	}
	free(order);
	errno = e;
	return r;
}

/* The init thread: glfs_init may take long (one reconnect period per dead
 * server, or forever on a server that accepts and never answers), so it
 * runs detached and reports through v->state. */
static void *gluster_init_thread(void *arg)
{
	struct gluster_vol *v = arg;
	const char *where;
	glfs_t *fs;
	int r = gluster_connect_any(v, &fs, &where);
	int e = errno;
	bool fini_now = false;

	pthread_mutex_lock(&gluster_lock);
	if (r < 0) {
		char servers[512];
		gluster_describe_servers(v, servers, sizeof servers);
		v->err = e ? e : EIO;
		snprintf(v->msg, sizeof v->msg, "volume %s on %s: %s",
			 v->volume, servers, where);
		v->state = GLUSTER_FAILED;
		if (v->linked)
			gluster_unlink(v); /* the next open() tries afresh */
		fini_now = true;
	} else {
		v->fs = fs;
		v->state = GLUSTER_READY;
		/* Unmount came first: nobody will use it. */
		if (gluster_closing) {
			if (v->linked)
				gluster_unlink(v);
			fini_now = true;
		}
	}
	pthread_cond_broadcast(&gluster_cond);
	if (!fini_now)
		v->refs--;
	pthread_mutex_unlock(&gluster_lock);
	if (!fini_now)
		return NULL;
	/* Waiting openers were told already; tear down behind their back. */
	if (fs)
		glfs_fini(fs);
	gluster_stop_log(v);
	pthread_mutex_lock(&gluster_lock);
	if (v->state == GLUSTER_READY) /* the gluster_closing case */
		v->state = GLUSTER_FAILED;
	gluster_put_locked(v);
	pthread_mutex_unlock(&gluster_lock);
	return NULL;
}

/* Find or start the glfs_t for this configuration and wait (bounded) until
 * it is ready. Returns it with a reference held, or NULL after nd_error. */
static struct gluster_vol *gluster_vol_get(const struct gluster_cfg *c,
					   int *errp)
{
	struct gluster_vol *v;
	double deadline = nd_mono_s() + c->open_timeout;
	char *key = gluster_key(c);
	pthread_attr_t attr;
	pthread_t th;

	if (!key) {
		*errp = -ENOMEM;
		nd_error("%s: gluster: out of memory", c->name);
		return NULL;
	}
	pthread_once(&gluster_once, gluster_init_cond);
	pthread_mutex_lock(&gluster_lock);
	for (v = gluster_vols; v; v = v->next)
		if (strcmp(v->key, key) == 0)
			break;
	if (v) {
		free(key);
		v->refs++;
	} else {
		v = gluster_vol_new(c, key);
		if (!v) {
			pthread_mutex_unlock(&gluster_lock);
			free(key);
			*errp = -ENOMEM;
			nd_error("%s: gluster: out of memory", c->name);
			return NULL;
		}
		v->state = GLUSTER_STARTING;
		v->refs = 2; /* this opener and the init thread */
		v->next = gluster_vols;
		v->linked = true;
		gluster_vols = v;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int r = pthread_create(&th, &attr, gluster_init_thread, v);
		pthread_attr_destroy(&attr);
		if (r != 0) {
			gluster_unlink(v);
			pthread_mutex_unlock(&gluster_lock);
			gluster_vol_free(v);
			errno = r;
			*errp = -r;
			nd_error("%s: gluster: cannot start a thread: %m",
				 c->name);
			return NULL;
		}
	}
	while (v->state == GLUSTER_STARTING) {
		struct timespec ts = nd_timespec(deadline);
		if (pthread_cond_timedwait(&gluster_cond, &gluster_lock, &ts) ==
		    ETIMEDOUT)
			break;
	}
	if (v->state == GLUSTER_READY) {
		pthread_mutex_unlock(&gluster_lock);
		return v;
	}
	if (v->state == GLUSTER_STARTING) {
		char servers[512];
		gluster_describe_servers(v, servers, sizeof servers);
		gluster_put_locked(v);
		pthread_mutex_unlock(&gluster_lock);
		*errp = -ETIMEDOUT;
		nd_error(
		    "%s: gluster: volume %s on %s: no answer within %g s (open-timeout)",
		    c->name, c->volume, servers, c->open_timeout);
		return NULL;
	}
	char msg[sizeof v->msg];
	int err = v->err;
	memcpy(msg, v->msg, sizeof msg);
	gluster_put_locked(v);
	pthread_mutex_unlock(&gluster_lock);
	/* glfs_init says ENOTCONN for every unreachable server: the core
	 * retries that; anything else (no such volume...) is final. */
	*errp = gluster_fail(c->name, err, "%s", msg);
	if (*errp == -EAGAIN)
		*errp = -ENOTCONN;
	return NULL;
}

static bool gluster_is_bad(struct gluster_conn *c)
{
	bool bad = false;

	if (atomic_load(&c->bad))
		return true;
	if (atomic_load(&gluster_nbad) == 0)
		return false;
	pthread_mutex_lock(&gluster_lock);
	for (size_t i = 0; i < c->vol->nbad && !bad; i++)
		bad = strcmp(c->vol->bad[i], c->path) == 0;
	pthread_mutex_unlock(&gluster_lock);
	if (bad)
		atomic_store(&c->bad, true);
	return bad;
}

/* An fsync failed: refuse writes to this file on this volume from now on,
 * on every connection, including ones opened later. */
static void gluster_mark_bad(struct gluster_conn *c)
{
	char *p = strdup(c->path);
	char **nb;

	atomic_store(&c->bad, true);
	pthread_mutex_lock(&gluster_lock);
	nb = p ? realloc(c->vol->bad, (c->vol->nbad + 1) * sizeof *nb) : NULL;
	if (nb) {
		c->vol->bad = nb;
		c->vol->bad[c->vol->nbad++] = p;
		p = NULL;
		atomic_fetch_add(&gluster_nbad, 1);
	}
	pthread_mutex_unlock(&gluster_lock);
	free(p);
}

static int gluster_refuse(struct gluster_conn *c)
{
	errno = EIO;
	nd_error(
	    "%s: gluster: %s: an earlier fsync failed, so written data may be lost; writes are refused until the next mount",
	    c->name, c->path);
	return -EIO;
}

/* ---- the backend ----------------------------------------------------- */

static void gluster_close(void *handle)
{
	struct gluster_conn *c = handle;

	if (!c)
		return;
	if (c->fd && glfs_close(c->fd) < 0) {
		int e = errno;
		if (atomic_load(&c->changes) != atomic_load(&c->synced)) {
			gluster_mark_bad(c);
			nd_warn(
			    "%s: gluster: closing %s failed (%s) with unsynced writes: they may be lost, writes are refused until the next mount",
			    c->name, c->path, strerror(e));
		} else {
			nd_warn("%s: gluster: closing %s: %s", c->name, c->path,
				strerror(e));
		}
	}
	pthread_mutex_lock(&gluster_lock);
	gluster_put_locked(c->vol);
	pthread_mutex_unlock(&gluster_lock);
	free(c->name);
	free(c->path);
	free(c);
}

static int gluster_open(const struct nd_opts *o, const struct nd_settings *s,
			void **handle, struct nd_info *info)
{
	struct gluster_cfg cfg;
	struct gluster_conn *c = NULL;
	struct gluster_vol *v;
	struct stat st;
	int r;

	if (gluster_parse(o, s, &cfg) < 0)
		return -EINVAL;
	v = gluster_vol_get(&cfg, &r);
	free(cfg.servers);
	if (!v)
		return r;

	c = calloc(1, sizeof *c);
	if (!c || !(c->name = strdup(o->name)) ||
	    !(c->path = strdup(cfg.path))) {
		r = -ENOMEM;
		nd_error("%s: gluster: out of memory", o->name);
		goto err;
	}
	c->vol = v;
	/* O_DSYNC: write-behind must not acknowledge a write the brick does
	 * not have (the core acknowledges a write only once the server did;
	 * a brick killed before its write-behind flushed lost such writes). */
	c->fd = glfs_open(v->fs, cfg.path, cfg.ro ? O_RDONLY : O_RDWR | O_DSYNC);
	if (!c->fd && !cfg.ro && (errno == EROFS || errno == EACCES)) {
		nd_info(
		    "%s: gluster: %s/%s is not writable (%m), serving it read-only",
		    o->name, cfg.volume, cfg.path);
		cfg.ro = true;
		c->fd = glfs_open(v->fs, cfg.path, O_RDONLY);
	}
	if (!c->fd) {
		r = gluster_fail(o->name, errno, "open %s in volume %s",
				 cfg.path, cfg.volume);
		goto err;
	}
	if (glfs_fstat(c->fd, &st) < 0) {
		r = gluster_fail(o->name, errno, "stat %s", cfg.path);
		goto err;
	}
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		r = -EINVAL;
		nd_error("%s: gluster: %s in volume %s is not a regular file",
			 o->name, cfg.path, cfg.volume);
		goto err;
	}
	memset(info, 0, sizeof *info);
	info->size = (uint64_t)st.st_size;
	info->block_size = 1;
	info->max_request = GLUSTER_MAX_REQUEST;
	/* Each glfs_pread is a round of RPCs through the client stack: 2 MiB
	 * readahead requests read about 40 % faster than 256 KiB ones. */
	info->opt_request = 2u << 20;
	info->max_trim = GLUSTER_MAX_TRIM;
	info->read_only = cfg.ro;
	info->can_flush = !cfg.ro;
	info->can_zero = !cfg.ro;
	info->can_grow = !cfg.ro; /* glfs_pwrite past the end extends */
	info->can_multi_conn = true; /* every fd shares the glfs_t's caches */
	info->thread_safe = true;
	*handle = c;
	return 0;
err:
	if (c && c->fd) {
		glfs_close(c->fd);
		c->fd = NULL;
	}
	if (c) {
		c->vol = v;
		gluster_close(c);
	} else {
		pthread_mutex_lock(&gluster_lock);
		gluster_put_locked(v);
		pthread_mutex_unlock(&gluster_lock);
	}
	return r;
}

static int gluster_pread(void *handle, void *buf, size_t len, uint64_t off)
{
	struct gluster_conn *c = handle;
	char *p = buf;

	while (len > 0) {
		ssize_t n = glfs_pread(c->fd, p, len, (off_t)off, 0, NULL);
		if (n < 0)
			return gluster_fail(c->name, errno,
					    "read of %zu bytes at %" PRIu64,
					    len, off);
		if (n == 0) {
			errno = EIO;
			nd_error("%s: gluster: read at %" PRIu64
				 ": %s ends there (truncated on the server?)",
				 c->name, off, c->path);
			return -EIO;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int gluster_flush(void *handle)
{
	struct gluster_conn *c = handle;

	if (gluster_is_bad(c))
		return gluster_refuse(c);
	uint_fast64_t seen = atomic_load(&c->changes);
	if (glfs_fsync(c->fd, NULL, NULL) == 0) {
		uint_fast64_t old = atomic_load(&c->synced);
		while (old < seen &&
		       !atomic_compare_exchange_weak(&c->synced, &old, seen))
			;
		return 0;
	}
	int e = errno;
	if (e != ENOTCONN) /* a retry could report success falsely */
		gluster_mark_bad(c);
	return gluster_fail(c->name, e, "fsync of %s", c->path);
}

static int gluster_pwrite(void *handle, const void *buf, size_t len,
			  uint64_t off)
{
	struct gluster_conn *c = handle;
	const char *p = buf;

	if (gluster_is_bad(c))
		return gluster_refuse(c);
	atomic_fetch_add(&c->changes, 1);
	while (len > 0) {
		ssize_t n =
		    glfs_pwrite(c->fd, p, len, (off_t)off, 0, NULL, NULL);
		if (n < 0)
			return gluster_fail(c->name, errno,
					    "write of %zu bytes at %" PRIu64,
					    len, off);
		if (n == 0) {
			errno = EIO;
			nd_error("%s: gluster: write at %" PRIu64
				 " made no progress",
				 c->name, off);
			return -EIO;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int gluster_zero(void *handle, uint64_t len, uint64_t off,
			unsigned flags)
{
	struct gluster_conn *c = handle;

	(void)flags; /* zerofill never deallocates */
	if (gluster_is_bad(c))
		return gluster_refuse(c);
	atomic_fetch_add(&c->changes, 1);
	if (glfs_zerofill(c->fd, (off_t)off, (off_t)len) < 0)
		return gluster_fail(c->name, errno,
				    "zerofill of %" PRIu64 " bytes at %" PRIu64,
				    len, off);
	return 0;
}

/* ---- shutdown: glfs_fini in parallel --------------------------------- */

static unsigned gluster_finis_left;

static void *gluster_fini_thread(void *arg)
{
	struct gluster_vol *v = arg;

	glfs_fini(v->fs);
	gluster_stop_log(v);
	gluster_vol_free(v);
	pthread_mutex_lock(&gluster_lock);
	gluster_finis_left--;
	pthread_cond_broadcast(&gluster_cond);
	pthread_mutex_unlock(&gluster_lock);
	return NULL;
}

static void gluster_shutdown(void)
{
	struct gluster_vol *ready = NULL, *next;
	double t0 = nd_mono_s();
	unsigned n = 0;

	pthread_once(&gluster_once, gluster_init_cond);
	pthread_mutex_lock(&gluster_lock);
	gluster_closing = true;
	/* Take every ready glfs_t out of the registry; one still starting
	 * finishes (and cleans up) in its init thread. */
	for (struct gluster_vol **p = &gluster_vols; *p;) {
		struct gluster_vol *v = *p;
		if (v->state == GLUSTER_READY) {
			*p = v->next;
			v->linked = false;
			if (v->refs)
				nd_warn(
				    "gluster: volume %s still has %u open connections at shutdown",
				    v->volume, v->refs);
			v->next = ready;
			ready = v;
		} else {
			p = &v->next;
		}
	}
	for (struct gluster_vol *v = ready; v; v = next) {
		pthread_attr_t attr;
		pthread_t th;

		next = v->next;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		gluster_finis_left++;
		if (pthread_create(&th, &attr, gluster_fini_thread, v) != 0) {
			gluster_finis_left--;
			nd_warn(
			    "gluster: volume %s: no thread for glfs_fini; leaving it to exit",
			    v->volume);
		} else {
			n++;
		}
		pthread_attr_destroy(&attr);
	}
	struct timespec ts = nd_timespec(t0 + GLUSTER_FINI_BOUND);
	while (gluster_finis_left > 0)
		if (pthread_cond_timedwait(&gluster_cond, &gluster_lock, &ts) ==
		    ETIMEDOUT)
			break;
	unsigned left = gluster_finis_left;
	pthread_mutex_unlock(&gluster_lock);
	if (left)
		nd_warn(
		    "gluster: %u of %u glfs_fini calls still running after %g s; exiting without them",
		    left, n, GLUSTER_FINI_BOUND);
	else if (n)
		nd_debug("gluster: %u glfs_fini calls done in %.1f s", n,
			 nd_mono_s() - t0);
}

static const char *const gluster_drivers[] = {"gluster", NULL};
static const char *const gluster_schemes[] = {
    "gluster", "gluster+tcp", "gluster+unix", "gluster+rdma", NULL};
static const struct nd_optdesc gluster_options[] = {
    {"volume", ND_OPT_STRING, NULL, false, "GlusterFS volume name"},
    {"path", ND_OPT_STRING, NULL, false, "image file inside the volume"},
    {"server.N.type", ND_OPT_STRING, "tcp", false,
     "tcp or unix; rdma is served over tcp"},
    {"server.N.host", ND_OPT_STRING, NULL, false,
     "volfile server host name or address"},
    {"server.N.port", ND_OPT_UINT, "24007", false, "volfile server port"},
    {"server.N.socket", ND_OPT_FILE, NULL, false,
     "glusterd Unix socket, with type=unix"},
    {"debug", ND_OPT_UINT, "4", false, "libgfapi log level 0-9"},
    {"logfile", ND_OPT_FILE, NULL, false,
     "libgfapi log file (default: the netdiskfs log, with -d)"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};

static const struct nd_backend gluster_backend = {
    .name = "gluster",
    .drivers = gluster_drivers,
    .schemes = gluster_schemes,
    .description = "GlusterFS volumes (libgfapi)",
    .options = gluster_options,
    .open = gluster_open,
    .close = gluster_close,
    .pread = gluster_pread,
    .pwrite = gluster_pwrite,
    .flush = gluster_flush,
    .zero = gluster_zero,
    .shutdown = gluster_shutdown,
};

ND_BACKEND_REGISTER(gluster_backend);
