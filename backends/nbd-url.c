/* nbd-url.c: NBD's URL grammar, library-free (see struct nd_proto):
 * nbd[s][+tcp|+unix]://[user@]host[:port]/export[?socket=PATH&k=v],
 * QEMU's legacy nbd:HOST:PORT[:exportname=X] and nbd:unix:PATH, and the
 * server.* keys of json: and dotted forms. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

/* nbd:host:port[:exportname=x], nbd:[v6]:port, nbd:unix:path[:...]. */
static int nbd_parse_legacy(const char *s, struct nd_opts *o,
			    const char *origin)
{
	CLEANUP_FREE char *copy = strdup(s + 4);
	char *exp, *host, *port;

	if (!copy)
		return -1;
	exp = strstr(copy, ":exportname=");
	if (exp) {
		*exp = 0;
		exp += strlen(":exportname=");
	}
	if (nd_opt_add(o, "driver", "nbd", origin) == -1 ||
	    (exp && *exp && nd_opt_add(o, "export", exp, origin) == -1))
		return -1;
	if (strncmp(copy, "unix:", 5) == 0) {
		if (!copy[5])
			return nd_url_error("%s: no socket path after nbd:unix:",
					    s);
		return nd_opt_add(o, "server.type", "unix", origin) ||
		       nd_opt_add(o, "server.path", copy + 5, origin);
	}
	host = copy;
	if (*host == '[') {
		char *end = strchr(host, ']');
		if (!end || end[1] != ':')
			return nd_url_error("%s: bad IPv6 address (use "
					    "nbd:[ADDR]:PORT)",
					    s);
		*end = 0;
		host++;
		port = end + 2;
	} else {
		port = strrchr(host, ':');
		if (!port)
			return nd_url_error("%s: expected nbd:HOST:PORT or "
					    "nbd:unix:PATH",
					    s);
		*port++ = 0;
	}
	if (!*host || !*port || strspn(port, "0123456789") != strlen(port))
		return nd_url_error("%s: expected nbd:HOST:PORT with a numeric "
				    "port",
				    s);
	return nd_opt_add(o, "server.type", "inet", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       nd_opt_add(o, "server.port", port, origin);
}

static int nbd_parse_split(const char *url, const struct nd_url *p,
			   struct nd_opts *o, const char *origin)
{
	const char *s = p->scheme;
	static const char *const qmap[] = { "socket", "server.path", NULL };
	bool tls = strncmp(s, "nbds", 4) == 0;

	if (nd_opt_add(o, "driver", "nbd", origin) == -1)
		return -1;
	if (p->path && p->path[0] == '/' && p->path[1]) {
		CLEANUP_FREE char *exp =
			nd_url_decode(p->path + 1, strlen(p->path + 1), "export");
		if (!exp || nd_opt_add(o, "export", exp, origin) == -1)
			return -1;
	}
	if (tls && nd_opt_add(o, "tls", "require", origin) == -1)
		return -1;
	if (p->user && nd_opt_add(o, "tls-username", p->user, origin) == -1)
		return -1;
	if (p->password)
		return nd_url_error("%s: NBD URLs take no password (use "
				    "tls-psk-file=)",
				    s);
	if (nd_url_add_query(p->query, o, origin, qmap) == -1)
		return -1;
	if (strstr(s, "+unix")) {
		if (p->host)
			return nd_url_error("%s: a Unix socket URL has no host "
					    "(nbd+unix:///EXPORT?socket=PATH)",
					    s);
		if (!nd_opt_get(o, "server.path"))
			return nd_url_error("%s: missing ?socket=PATH", s);
		return nd_opt_add(o, "server.type", "unix", origin);
	}
	if (!p->host)
		return nd_url_error("%s: missing host", s);
	CLEANUP_FREE char *host = nd_url_host(p->host);
	return nd_opt_add(o, "server.type", "inet", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.port", p->port, origin));
}

/* The legacy forms (no "://"). */
static int nbd_parse(const char *scheme, const char *url, struct nd_opts *o,
		     const char *origin)
{
	return nbd_parse_legacy(url, o, origin);
}

static int nbd_normalize(struct nd_opts *o)
{
	if (nd_opts_rename(o, "host", "server.host") ||
	    nd_opts_rename(o, "port", "server.port") ||
	    nd_opts_rename(o, "path", "server.path") ||
	    nd_opts_rename(o, "exportname", "export"))
		return -1;
	if (nd_opts_default(o, "server.type",
			    nd_opt_get(o, "server.path") ? "unix" : "inet"))
		return -1;
	const char *t = nd_opt_get(o, "server.type");
	if (strcmp(t, "inet") == 0) {
		if (!nd_opt_get(o, "server.host"))
			return nd_url_error("nbd: %s", "missing server.host");
		return nd_opts_default(o, "server.port", "10809");
	}
	if (strcmp(t, "unix") == 0) {
		if (!nd_opt_get(o, "server.path"))
			return nd_url_error("nbd: %s",
					    "missing server.path (the socket)");
		return 0;
	}
	return nd_url_error("nbd: server.type=%s (inet or unix)", t);
}

/* nbd:HOST:PORT:exportname=NAME is shown as NAME, else as "disk". */
static char *nbd_basename(const char *url)
{
	const char *e = strstr(url, ":exportname=");
	if (!e || !e[12] || strchr(e + 12, '/') || !strcmp(e + 12, ".") ||
	    !strcmp(e + 12, ".."))
		return strdup("disk");
	return strdup(e + 12);
}

static const char *const nbd_drivers[] = { "nbd", NULL };
static const char *const nbd_schemes[] = { "nbd",  "nbd+tcp",  "nbd+unix",
					   "nbds", "nbds+tcp", "nbds+unix",
					   NULL };

/* A backing file NAME is another export of the same server. */
static int nbd_relative(struct nd_opts *o, const char *name)
{
	const char *org = nd_opt_find(o, "driver")->origin;
	return nd_opt_set(o, "export", name + strspn(name, "/"), org);
}

/* libnbd takes the TLS pre-shared key only from a file; a tls-psk= given
 * by mistake is hidden all the same. */
static const char *const nbd_secrets[] = { "tls-psk", NULL };

const struct nd_proto nbd_proto = {
	.secrets = nbd_secrets,
	.name = "nbd",
	.drivers = nbd_drivers,
	.schemes = nbd_schemes,
	.legacy = "nbd:",
	.parse = nbd_parse,
	.parse_split = nbd_parse_split,
	.normalize = nbd_normalize,
	.relative = nbd_relative,
	.basename = nbd_basename,
};
ND_PROTO_REGISTER(nbd_proto)
