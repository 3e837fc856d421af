/* nfs-url.c: NFS's URL grammar, library-free (see struct nd_proto):
 * nfs://server[:port]/export/path/file[?uid=&gid=&tcp-syn-count=&
 * readahead-size=&page-cache-size=&debug=&version=&nfsport=&mountport=]
 * and QEMU's json:/dotted keys (server.host, path, user, group, ...).
 * The export is the directory part of path, the file its last component,
 * as QEMU splits them. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

static int nfs_parse_split(const struct nd_url *p, struct nd_opts *o,
			   const char *origin)
{
	static const char *const qmap[] = { "uid", "user", "gid", "group", NULL };
	const char *path = p->path ? p->path : "";

	if (!p->host)
		return nd_url_error("%s", "nfs: missing server (nfs://SERVER/EXPORT/FILE)");
	if (p->user || p->password)
		return nd_url_error("nfs://%s: NFS URLs take no user name or "
				    "password (use ?uid=&gid=)",
				    p->host);
	CLEANUP_FREE char *file = nd_url_decode(path, strlen(path), "path");
	CLEANUP_FREE char *host = nd_url_host(p->host);
	if (!file || !host)
		return -1;
	return nd_opt_add(o, "driver", "nfs", origin) ||
	       nd_opt_add(o, "server.type", "inet", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.port", p->port, origin)) ||
	       (*file && nd_opt_add(o, "path", file, origin)) ||
	       nd_url_add_query(p->query, o, origin, qmap);
}

static int nfs_parse(const char *scheme, const char *url, struct nd_opts *o,
		     const char *origin)
{
	struct nd_url p;
	int r;

	if (nd_url_split(url, &p) == -1)
		return -1;
	r = nfs_parse_split(&p, o, origin);
	nd_url_free(&p);
	return r;
}

/* Numeric keys: digits only (libnfs reads them with atoi). */
static int nfs_check_numbers(struct nd_opts *o)
{
	static const char *const keys[] = {
		"user", "group", "tcp-syn-count", "readahead-size",
		"page-cache-size", "debug", "nfsport", "mountport",
		"server.port", NULL
	};
	for (size_t i = 0; keys[i]; i++) {
		const char *v = nd_opt_get(o, keys[i]);
		if (v && (!*v || strspn(v, "0123456789") != strlen(v)))
			return nd_url_error("nfs: %s=%s: not a number", keys[i], v);
	}
	return 0;
}

static int nfs_normalize(struct nd_opts *o)
{
	const char *v;

	if (nd_opts_rename(o, "host", "server.host") ||
	    nd_opts_rename(o, "port", "server.port") ||
	    nd_opts_rename(o, "uid", "user") || nd_opts_rename(o, "gid", "group") ||
	    nd_opts_rename(o, "filename", "path") ||
	    nd_opts_default(o, "server.type", "inet") ||
	    nd_opts_default(o, "version", "3") || nfs_check_numbers(o))
		return -1;
	if (strcmp(nd_opt_get(o, "server.type"), "inet") != 0)
		return nd_url_error("nfs: server.type=%s (only inet)",
				    nd_opt_get(o, "server.type"));
	if (!nd_opt_get(o, "server.host"))
		return nd_url_error("nfs: %s", "missing server.host");
	v = nd_opt_get(o, "path");
	if (v && v[0] != '/') {
		CLEANUP_FREE char *abs = NULL;
		CLEANUP_FREE char *org = strdup(nd_opt_find(o, "path")->origin);
		if (!org || asprintf(&abs, "/%s", v) < 0 ||
		    nd_opt_set(o, "path", abs, org) == -1)
			return -1;
		v = nd_opt_get(o, "path");
	}
	if (!v || !strrchr(v, '/')[1])
		return nd_url_error("nfs: path=%s: expected /EXPORT/FILE",
				    v ? v : "(none)");
	v = nd_opt_get(o, "version");
	if (strcmp(v, "3") != 0 && strcmp(v, "4") != 0)
		return nd_url_error("nfs: version=%s (3 or 4)", v);
	return 0;
}

static const char *const nfs_names[] = { "nfs", NULL };

const struct nd_proto nfs_proto = {
	.name = "nfs",
	.drivers = nfs_names,
	.schemes = nfs_names,
	.parse = nfs_parse,
	.normalize = nfs_normalize,
};
ND_PROTO_REGISTER(nfs_proto)
