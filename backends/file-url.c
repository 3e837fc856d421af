/* file-url.c: the file backend's URL grammar, library-free (see struct
 * nd_proto): file:///PATH, a bare absolute path, and filename=. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

static int file_parse_split(const char *url, const struct nd_url *p,
			    struct nd_opts *o, const char *origin)
{
	const char *raw = p->path ? p->path : "";
	CLEANUP_FREE char *path = nd_url_decode(raw, strlen(raw), "path");

	if (p->host && strcmp(p->host, "localhost") != 0)
		return nd_url_error("file://%s: only local files "
				    "(file:///PATH)",
				    p->host);
	if (!path)
		return -1;
	if (!*path)
		return nd_url_error("%s", "file: URL without a path");
	return nd_opt_add(o, "driver", "file", origin) ||
	       nd_opt_add(o, "filename", path, origin);
}

/* A bare absolute path. */
static int file_parse(const char *scheme, const char *url, struct nd_opts *o,
		      const char *origin)
{
	return nd_opt_add(o, "driver", "file", origin) ||
	       nd_opt_add(o, "filename", url, origin);
}

static int file_normalize(struct nd_opts *o)
{
	if (!nd_opt_get(o, "filename"))
		return nd_url_error("file: %s", "filename= is required");
	return 0;
}

static const char *const file_drivers[] = { "file", "host_device", NULL };
static const char *const file_schemes[] = { "file", NULL };

/* A backing file NAME next to the image (or NAME itself when absolute). */
static int file_relative(struct nd_opts *o, const char *name)
{
	return nd_opts_relative_path(o, "filename", name, true);
}

const struct nd_proto file_proto = {
	.name = "file",
	.drivers = file_drivers,
	.schemes = file_schemes,
	.legacy = "/",
	.parse = file_parse,
	.parse_split = file_parse_split,
	.normalize = file_normalize,
	.relative = file_relative,
};
ND_PROTO_REGISTER(file_proto)
