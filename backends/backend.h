/* backend.h: the one interface every protocol implements.
 *
 * One static struct nd_backend per protocol, registered with
 * ND_BACKEND_REGISTER. The core owns the option strings; a backend never
 * copies them beyond open(). Every callback returns 0 or -errno after one
 * nd_error() call that explains it. Connection-level failures return
 * -ENOTCONN (the core also takes the errnos of ND_CONN_ERRNOS below as
 * connection-level: it closes the entry's connections, opens a new one
 * with backoff and retries the request until reconnect-delay runs out);
 * -EAGAIN means "transient, retry the same request after a backoff".
 * -ESTALE means "the object changed under this connection" (its
 * validator differs): no byte of it may be mixed with what was read.
 * Anything else is final for that request. A callback that is NULL or a
 * capability that is false is emulated by the core (src/disk.c only):
 * zero by writing zeroes, alignment by read-modify-write, requests split at
 * max_request. */
#ifndef ND_BACKEND_H
#define ND_BACKEND_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../src/log.h"
#include "../src/opts.h"

/* Default timeout= in seconds, the one every backend bounds a request (a
 * connect, a login, a read) by. Below the default reconnect-delay (10 s),
 * so no request of an entry left at its defaults waits more than 15 s.
 * The core hands open() the entry's value (this one when none is given);
 * a backend uses this name only as its fallback. */
#define ND_DEFAULT_TIMEOUT 5.0

/* The errnos (negated by callbacks) the core treats as a lost connection. */
#define ND_CONN_ERRNOS                                                         \
	ENOTCONN, ECONNRESET, EPIPE, ECONNREFUSED, ECONNABORTED, ESHUTDOWN,    \
	    ETIMEDOUT, EHOSTUNREACH, ENETUNREACH

#define ND_MAY_TRIM 2u	/* zero: the backend may deallocate instead */

/* The core's parsed settings of the entry, handed to every open(). A
 * backend reads these, never the core's keys from the option strings. */
struct nd_settings {
	bool read_only;		/* ro= */
	double timeout;		/* timeout=, > 0: ND_DEFAULT_TIMEOUT if unset */
	double open_timeout;	/* open-timeout=: 0 = not given */
	double reconnect_delay; /* reconnect-delay= (10 s) */
	unsigned connections;	/* connections= (1..64, 4) */
	/* debug=: -1 not given, else a level 0..ND_DEBUG_MAX for a
	 * library's own log (on = ND_DEBUG_MAX, off = 0, like QEMU's
	 * gluster debug=N; larger levels are clamped). */
	int debug;
};
#define ND_DEBUG_MAX 9

struct nd_info {
	uint64_t size;
	uint32_t block_size;  /* requests must be aligned to it; 0/1 = any */
	uint32_t max_request; /* largest single request in bytes; 0 = none */
	uint32_t max_trim;    /* largest zero in bytes; 0 = max_request */
	/* Bytes per readahead request this protocol is fastest with (each
	 * request has a fixed cost: an HTTP GET, an RPC); 0 = the core's
	 * default (256 KiB). */
	uint32_t opt_request;
	bool read_only;
	bool can_flush;
	bool can_zero;
	bool can_multi_conn; /* several connections see each other's writes */
	/* A write past the end extends the file (the gap reads as zeroes):
	 * a format layer may grow its container (a qcow2 allocating). */
	bool can_grow;
	bool thread_safe;    /* one connection may serve several threads */
	unsigned max_connections; /* 0 = as many as connections= asks */
	/* What identifies this version of the object, when the protocol has
	 * it (HTTP: a strong ETag, else Last-Modified; FTP: size and MDTM),
	 * else "". A reconnect that finds another validator, or a read that
	 * finds the object changed (-ESTALE), makes the core drop the
	 * entry's caches and open it afresh. */
	char validator[128];
};

/* The type of an option's value, as --help shows it. */
enum nd_opttype {
	ND_OPT_STRING,	/* STRING */
	ND_OPT_BOOL,	/* on|off */
	ND_OPT_UINT,	/* N */
	ND_OPT_SIZE,	/* SIZE (K, M, G suffixes) */
	ND_OPT_SECONDS, /* SECONDS */
	ND_OPT_FILE,	/* PATH of a local file or socket */
};

/* One key a backend accepts ("server.N.host": N stands for 0, 1, ...). */
struct nd_optdesc {
	const char *key;
	enum nd_opttype type;
	const char *def; /* the default, as shown; NULL: none */
	bool secret;	 /* a password or cookie: redacted wherever shown */
	const char *help;
};

/* The end of a request started with pread_async: 0 or -errno. */
typedef void (*nd_done_fn)(void *arg, int err);

struct nd_backend {
	const char *name;		  /* "nbd" */
	const char *const *drivers;	  /* option driver= values served */
	const char *const *schemes;	  /* URL schemes, for --help */
	const char *description;
	const struct nd_optdesc *options; /* keys accepted, {NULL} ends */

	/* Open ONE connection. Called once at mount, again for each pooled or
	 * re-established connection. info is filled every time (the core
	 * keeps the first and checks the size did not change). */
	int (*open)(const struct nd_opts *opts, const struct nd_settings *s,
		    void **conn, struct nd_info *info);
	void (*close)(void *conn);
	int (*pread)(void *conn, void *buf, size_t len, uint64_t off);
	/* Optional: start a read and return at once. DONE(ARG, r) runs
	 * once, in the backend's own thread, when it ends (with the
	 * errnos pread would return and its nd_error() in that thread);
	 * it must not block on this connection. 0 when started; -errno
	 * when not (DONE then never runs). */
	int (*pread_async)(void *conn, void *buf, size_t len, uint64_t off,
			   nd_done_fn done, void *arg);
	int (*pwrite)(void *conn, const void *buf, size_t len, uint64_t off);
	int (*flush)(void *conn);
	/* flags: ND_MAY_TRIM, the range may be deallocated (it must still
	 * read back as zeroes). */
	int (*zero)(void *conn, uint64_t len, uint64_t off, unsigned flags);
	/* Optional: close and free everything shared between connections,
	 * once, at unmount, after every connection is closed. */
	void (*shutdown)(void);
};

/* A protocol's URL grammar: its schemes and legacy forms turned into the
 * canonical option set, and its keys normalised (aliases, defaults such as
 * ports, the structure it needs). It lives in a library-free file of the
 * backend (backends/NAME-url.c), so the parser, its fuzzer and
 * --print-config link no protocol library. Helpers: src/url.h. */
struct nd_url;

struct nd_proto {
	const char *name;	    /* driver= it sets; NULL: the one given */
	const char *const *drivers; /* driver= values it normalises */
	const char *const *schemes; /* URL schemes it parses, lower case */
	const char *legacy;	    /* prefix of a form without "://" */
	/* URL (its scheme lower-cased in SCHEME, NULL for a legacy form) ->
	 * keys nd_opt_add'ed to O with ORIGIN. 0 or -1 with an nd_error. */
	int (*parse)(const char *scheme, const char *url, struct nd_opts *o,
		     const char *origin);
	/* Instead of parse for SCHEME://... URLs: the core splits the URL
	 * (RFC 3986, src/url.h) and hands the parts over. */
	int (*parse_split)(const char *url, const struct nd_url *p,
			   struct nd_opts *o, const char *origin);
	/* After the entry's options are merged in. 0 or -1 with an nd_error. */
	int (*normalize)(struct nd_opts *o);
	/* Optional: the file name a legacy form is shown as (malloc'd);
	 * without it, the last path component. */
	char *(*basename)(const char *url);
	/* Optional: O names an image (canonical keys); rewrite it to name
	 * NAME as seen from that image's location (a qcow2 backing file:
	 * relative to its directory; absolute on the same server). NULL:
	 * such names cannot be resolved over this protocol. */
	int (*relative)(struct nd_opts *o, const char *name);
	/* Optional, NULL-terminated: the names of this protocol's keys (and
	 * its URLs' query parameters) whose values are secret. The redactor
	 * (src/secret.c) hides the value of any key whose last word ends
	 * with one of their last words, wherever it is shown. */
	const char *const *secrets;
};

void nd_proto_register(const struct nd_proto *p);
const struct nd_proto *nd_proto_by_scheme(const char *scheme);
const struct nd_proto *nd_proto_by_driver(const char *driver);
/* For a legacy form: the protocol whose prefix URL starts with. */
const struct nd_proto *nd_proto_by_legacy(const char *url);

#define ND_PROTO_REGISTER(p)                                                  \
	static void __attribute__((constructor)) nd_register_##p(void)       \
	{                                                                     \
		nd_proto_register(&(p));                                      \
	}

void nd_backend_register(const struct nd_backend *b);
const struct nd_backend *nd_backend_find(const char *driver);
/* B's options, one line each, as --help shows them. */
void nd_backend_print_options(FILE *f, const struct nd_backend *b);
/* NULL-terminated list, in registration order. */
const struct nd_backend *const *nd_backend_list(void);

#define ND_BACKEND_REGISTER(b)                                                \
	static void __attribute__((constructor)) nd_register_##b(void)        \
	{                                                                     \
		nd_backend_register(&(b));                                    \
	}

#endif
