/* ssh-url.c: SSH/SFTP's URL grammar, library-free (see struct nd_proto):
 * ssh://[user@]host[:port]/path[?host_key_check=...] and the host/port/path
 * keys of json: and dotted forms. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

static int ssh_parse_split(const char *url, const struct nd_url *p,
			   struct nd_opts *o, const char *origin)
{
	static const char *const qmap[] = { "host_key_check", "host-key-check",
					    NULL };
	if (!p->host)
		return nd_url_error("%s: missing host", "ssh://");
	if (p->password)
		return nd_url_error("ssh://%s: a password in the URL is refused; use "
			   "ssh-agent, identity= or password-file=",
			   p->host);
	CLEANUP_FREE char *host = nd_url_host(p->host);
	CLEANUP_FREE char *path = nd_url_decode(p->path ? p->path : "/",
					     strlen(p->path ? p->path : "/"), "path");
	if (!path)
		return -1;
	if (strlen(path) < 2)
		return nd_url_error("ssh://%s: missing the path of the remote file",
			   p->host);
	return nd_opt_add(o, "driver", "ssh", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.port", p->port, origin)) ||
	       (p->user && nd_opt_add(o, "user", p->user, origin)) ||
	       nd_opt_add(o, "path", path, origin) ||
	       nd_url_add_query(p->query, o, origin, qmap);
}

static int ssh_normalize(struct nd_opts *o)
{
	if (nd_opts_rename(o, "host", "server.host") ||
	    nd_opts_rename(o, "port", "server.port") ||
	    nd_opts_rename(o, "host_key_check", "host-key-check"))
		return -1;
	if (!nd_opt_get(o, "server.host") || !nd_opt_get(o, "path"))
		return nd_url_error("ssh: %s", "host= and path= are required");
	return nd_opts_default(o, "server.port", "22");
}

static const char *const ssh_names[] = { "ssh", NULL };

/* A backing file NAME on the same server, next to the image. */
static int ssh_relative(struct nd_opts *o, const char *name)
{
	return nd_opts_relative_path(o, "path", name, true);
}

static const char *const ssh_secrets[] = { "password", NULL };

const struct nd_proto ssh_proto = {
	.secrets = ssh_secrets,
	.name = "ssh",
	.drivers = ssh_names,
	.schemes = ssh_names,
	.parse_split = ssh_parse_split,
	.normalize = ssh_normalize,
	.relative = ssh_relative,
};
ND_PROTO_REGISTER(ssh_proto)
