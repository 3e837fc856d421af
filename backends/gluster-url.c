/* gluster-url.c: GlusterFS's URL grammar, library-free (see struct
 * nd_proto): gluster[+tcp|+unix|+rdma]://[host[:port]]/volume/path[?socket=]
 * and the volume/path/server.N.* keys of json: and dotted forms. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

static int gluster_parse_split(const char *url, const struct nd_url *p,
			       struct nd_opts *o, const char *origin)
{
	static const char *const qmap[] = { "socket", "server.0.socket", NULL };
	const char *type = strchr(p->scheme, '+');
	type = type ? type + 1 : "tcp";
	CLEANUP_FREE char *path = nd_url_decode(p->path ? p->path : "",
					     strlen(p->path ? p->path : ""), "path");
	if (!path)
		return -1;
	char *vol = path + strspn(path, "/");
	char *img = vol + strcspn(vol, "/");
	if (*img)
		*img++ = 0;
	img += strspn(img, "/");
	if (!*vol || !*img)
		return nd_url_error("gluster URL '%s': expected "
			   "gluster[+TYPE]://[HOST[:PORT]]/VOLUME/PATH",
			   p->path ? p->path : "");
	if (nd_opt_add(o, "driver", "gluster", origin) == -1 ||
	    nd_opt_add(o, "volume", vol, origin) == -1 ||
	    nd_opt_add(o, "path", img, origin) == -1 ||
	    nd_opt_add(o, "server.0.type", type, origin) == -1 ||
	    nd_url_add_query(p->query, o, origin, qmap) == -1)
		return -1;
	if (strcmp(type, "unix") == 0) {
		if (p->host)
			return nd_url_error("gluster+unix://%s: a Unix socket URL has "
				   "no host",
				   p->host);
		if (!nd_opt_get(o, "server.0.socket"))
			return nd_url_error("%s: missing ?socket=PATH", "gluster+unix");
		return 0;
	}
	CLEANUP_FREE char *host = nd_url_host(p->host ? p->host : "localhost");
	return nd_opt_add(o, "server.0.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.0.port", p->port, origin));
}

static int gluster_normalize(struct nd_opts *o)
{
	int i;
	if (nd_opts_rename(o, "filename", "path") == -1)
		return -1;
	for (i = 0; i < 64; i++) {
		const char *t = nd_opt_getf(o, "server.%d.type", i);
		const char *h = nd_opt_getf(o, "server.%d.host", i);
		const char *s = nd_opt_getf(o, "server.%d.socket", i);
		char key[64];
		if (!t && !h && !s)
			break;
		snprintf(key, sizeof key, "server.%d.type", i);
		if (!t && nd_opt_set(o, key, s ? "unix" : "tcp", "default"))
			return -1;
		t = nd_opt_get(o, key);
		if (strcmp(t, "inet") == 0 &&
		    nd_opt_set(o, key, "tcp", nd_opt_find(o, key)->origin))
			return -1;
		t = nd_opt_get(o, key);
		if (strcmp(t, "unix") == 0) {
			if (!s)
				return nd_url_error("gluster: server.%s.socket is missing",
					   key + 7);
		} else if (strcmp(t, "tcp") == 0 || strcmp(t, "rdma") == 0) {
			if (!h)
				return nd_url_error("gluster: %s needs a host", key);
			snprintf(key, sizeof key, "server.%d.port", i);
			if (nd_opts_default(o, key, "24007") == -1)
				return -1;
		} else
			return nd_url_error("gluster: server type '%s' (tcp or unix)", t);
	}
	if (i == 0)
		return nd_url_error("gluster: %s", "no server given (server.0.host=...)");
	if (!nd_opt_get(o, "volume") || !nd_opt_get(o, "path"))
		return nd_url_error("gluster: %s", "volume= and path= are required");
	/* QEMU accepts both "a.img" and "/a.img": one spelling. */
	const struct nd_opt *p = nd_opt_find(o, "path");
	if (p->val[0] == '/') {
		CLEANUP_FREE char *v = strdup(p->val + strspn(p->val, "/"));
		CLEANUP_FREE char *org = strdup(p->origin);
		if (!v || !org || nd_opt_set(o, "path", v, org) == -1)
			return -1;
	}
	return 0;
}

static const char *const gluster_drivers[] = { "gluster", NULL };
static const char *const gluster_schemes[] = { "gluster", "gluster+tcp",
					       "gluster+unix", "gluster+rdma",
					       NULL };

/* A backing file NAME in the same volume, next to the image (the path
 * has no leading slash). */
static int gluster_relative(struct nd_opts *o, const char *name)
{
	return nd_opts_relative_path(o, "path", name, false);
}

const struct nd_proto gluster_proto = {
	.name = "gluster",
	.drivers = gluster_drivers,
	.schemes = gluster_schemes,
	.parse_split = gluster_parse_split,
	.normalize = gluster_normalize,
	.relative = gluster_relative,
};
ND_PROTO_REGISTER(gluster_proto)
