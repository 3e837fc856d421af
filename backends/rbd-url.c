/* rbd-url.c: Ceph RBD's grammar, library-free (see struct nd_proto):
 * QEMU's rbd:pool[/namespace]/image[@snapshot][:key=value[:key=value...]]
 * with backslash escapes, and the pool/namespace/image/snapshot/conf/user/
 * server.N.host/port and auth-client-required keys of json: and dotted forms.
 *
 * Every form ends in the same option set: id= becomes user=, mon_host=
 * becomes server.N.host/port (when it is a plain host list), auth_supported=
 * becomes auth-client-required=; any other key of the rbd: form is a Ceph
 * option handed to rados_conf_set and is kept, in the rbd: syntax, in
 * keyvalue-pairs= (QEMU's name for the same thing): the core only knows
 * the keys a backend declares. The key itself is a secret: it comes only
 * from key-secret-file=. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "rbd-url.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

#define RBD_MAX_SERVERS 16

char *rbd_next_tok(char *s, char delim, char **rest)
{
	char *p;

	for (p = s; *p; p++) {
		if (*p == '\\' && p[1]) {
			p++;
			continue;
		}
		if (*p == delim) {
			*p = 0;
			*rest = p + 1;
			return s;
		}
	}
	*rest = NULL;
	return s;
}

void rbd_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (*s == '\\' && s[1])
			s++;
		*w++ = *s;
	}
	*w = 0;
}

/* Append "key=value" (escaped) to keyvalue-pairs. */
static int rbd_add_pair(struct nd_opts *o, const char *k, const char *v,
			const char *origin)
{
	const char *old = nd_opt_get(o, "keyvalue-pairs");
	size_t n = (old ? strlen(old) + 1 : 0) + 2 * (strlen(k) + strlen(v)) + 2;
	CLEANUP_FREE char *buf = malloc(n);
	char *w = buf;

	if (!buf)
		return -1;
	if (old)
		w += sprintf(w, "%s:", old);
	for (const char *s = k; *s; s++) {
		if (*s == ':' || *s == '\\' || *s == '=')
			*w++ = '\\';
		*w++ = *s;
	}
	*w++ = '=';
	for (const char *s = v; *s; s++) {
		if (*s == ':' || *s == '\\')
			*w++ = '\\';
		*w++ = *s;
	}
	*w = 0;
	return nd_opt_set(o, "keyvalue-pairs", buf, origin);
}

/* One mon_host item: "host", "host:port", "[v6]" or "[v6]:port". */
static int rbd_add_server(struct nd_opts *o, int i, char *item,
			  const char *origin)
{
	char key[40], *host = item, *port = NULL;

	if (*item == '[') {
		char *end = strchr(item, ']');
		if (!end || (end[1] && end[1] != ':'))
			return 1;
		*end = 0;
		host = item + 1;
		port = end[1] ? end + 2 : NULL;
	} else if (strchr(item, ':') == strrchr(item, ':') && strchr(item, ':')) {
		port = strchr(item, ':');
		*port++ = 0;
	}
	if (!*host || (port && (!*port || strspn(port, "0123456789") !=
						  strlen(port))))
		return 1;
	snprintf(key, sizeof key, "server.%d.host", i);
	if (nd_opt_add(o, key, host, origin) == -1)
		return -1;
	snprintf(key, sizeof key, "server.%d.port", i);
	return port ? nd_opt_add(o, key, port, origin) : 0;
}

/* mon_host=a;b:6789 -> server.N.*; Ceph's address vectors ([v2:...]) and
 * anything else unusual stay a pass-through option. */
static int rbd_mon_host(struct nd_opts *o, const char *val, const char *origin)
{
	CLEANUP_FREE char *copy = strdup(val);
	char *save = NULL, *item;
	int i = 0;

	if (!copy)
		return -1;
	if (strstr(val, "v1:") || strstr(val, "v2:") || nd_opt_get(o, "server.0.host"))
		return rbd_add_pair(o, "mon_host", val, origin);
	for (item = strtok_r(copy, ";, ", &save); item;
	     item = strtok_r(NULL, ";, ", &save)) {
		CLEANUP_FREE char *one = strdup(item);
		int r = one && i < RBD_MAX_SERVERS ? rbd_add_server(o, i, one, origin) : 1;
		if (r == -1)
			return -1;
		if (r == 1)
			return nd_url_error("rbd: mon_host=%s: expected HOST[:PORT] items separated by \\;",
					    val);
		i++;
	}
	if (i == 0)
		return nd_url_error("rbd: %s", "mon_host= is empty");
	return 0;
}

/* One key=value of the rbd: form, both already unescaped. */
static int rbd_add_key(struct nd_opts *o, const char *k, const char *v,
		       const char *origin)
{
	if (strcmp(k, "id") == 0)
		return nd_opt_add(o, "user", v, origin);
	if (strcmp(k, "conf") == 0 || strcmp(k, "keyring") == 0 ||
	    strcmp(k, "key-secret-file") == 0)
		return nd_opt_add(o, k, v, origin);
	if (strcmp(k, "mon_host") == 0 || strcmp(k, "mon-host") == 0)
		return rbd_mon_host(o, v, origin);
	if (strcmp(k, "auth_supported") == 0 ||
	    strcmp(k, "auth_client_required") == 0)
		return nd_opt_add(o, "auth-client-required", v, origin);
	if (strcmp(k, "key") == 0)
		return nd_url_error("rbd: key=: the key would sit in the table; "
				    "put it in a file and give key-secret-file=PATH%s",
				    "");
	return rbd_add_pair(o, k, v, origin);
}

static int rbd_parse_keys(char *p, struct nd_opts *o, const char *origin)
{
	while (p && *p) {
		char *pair = rbd_next_tok(p, ':', &p);
		char *val = NULL;
		char *key = rbd_next_tok(pair, '=', &val);
		if (!val)
			return nd_url_error("rbd: '%s': expected key=value", key);
		rbd_unescape(key);
		rbd_unescape(val);
		if (rbd_add_key(o, key, val, origin) == -1)
			return -1;
	}
	return 0;
}

/* rbd:pool[/namespace]/image[@snapshot][:key=value...] as QEMU splits it. */
static int rbd_parse(const char *scheme, const char *url, struct nd_opts *o,
		     const char *origin)
{
	CLEANUP_FREE char *copy = strdup(url + 4);
	char *p, *pool, *image, *snap = NULL, *ns = NULL;

	if (!copy)
		return -1;
	pool = rbd_next_tok(copy, '/', &p);
	if (!p || !*pool)
		return nd_url_error("rbd: '%s': expected rbd:POOL/IMAGE[@SNAPSHOT][:KEY=VALUE...]",
				    url);
	/* IMAGE[@SNAPSHOT] up to the first unescaped ':', then the '@'
	 * (an escaped one, or none, leaves no snapshot). */
	image = rbd_next_tok(p, ':', &p);
	image = rbd_next_tok(image, '@', &snap);
	char *rest;
	ns = rbd_next_tok(image, '/', &rest); /* NAMESPACE/IMAGE */
	if (rest)
		image = rest;
	else
		ns = NULL; /* no unescaped '/' */
	if (!*image || (snap && !*snap))
		return nd_url_error("rbd: '%s': empty image or snapshot name", url);
	rbd_unescape(pool);
	rbd_unescape(image);
	if (ns)
		rbd_unescape(ns);
	if (snap)
		rbd_unescape(snap);
	if (nd_opt_add(o, "driver", "rbd", origin) == -1 ||
	    nd_opt_add(o, "pool", pool, origin) == -1 ||
	    nd_opt_add(o, "image", image, origin) == -1 ||
	    (ns && *ns && nd_opt_add(o, "namespace", ns, origin) == -1) ||
	    (snap && nd_opt_add(o, "snapshot", snap, origin) == -1))
		return -1;
	return rbd_parse_keys(p, o, origin);
}

/* json's "auth-client-required": ["cephx", "none"] arrives flattened as
 * auth-client-required.0, .1: one "cephx;none" value, as Ceph spells it. */
static int rbd_fold_auth(struct nd_opts *o)
{
	char joined[128] = "", key[48];
	const char *origin = NULL;
	size_t n = 0;

	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof key, "auth-client-required.%d", i);
		const struct nd_opt *p = nd_opt_find(o, key);
		if (!p)
			break;
		origin = p->origin;
		n += snprintf(joined + n, n < sizeof joined ? sizeof joined - n : 0,
			      "%s%s", n ? ";" : "", p->val);
	}
	if (!origin)
		return 0;
	CLEANUP_FREE char *org = strdup(origin);
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof key, "auth-client-required.%d", i);
		nd_opt_del(o, key);
	}
	if (!org || n >= sizeof joined)
		return nd_url_error("rbd: %s", "auth-client-required: too long");
	return nd_opt_add(o, "auth-client-required", joined, org);
}

static int rbd_check_auth(const char *v)
{
	CLEANUP_FREE char *copy = strdup(v);
	char *save = NULL;

	if (!copy)
		return -1;
	for (char *m = strtok_r(copy, ";, ", &save); m;
	     m = strtok_r(NULL, ";, ", &save))
		if (strcmp(m, "cephx") != 0 && strcmp(m, "none") != 0)
			return nd_url_error("rbd: auth-client-required=%s: "
					    "expected cephx, none or both",
					    v);
	return 0;
}

static int rbd_normalize(struct nd_opts *o)
{
	const char *v;

	if (nd_opts_rename(o, "id", "user") ||
	    nd_opts_rename(o, "auth_supported", "auth-client-required") ||
	    nd_opts_rename(o, "server.host", "server.0.host") ||
	    nd_opts_rename(o, "server.port", "server.0.port") ||
	    rbd_fold_auth(o))
		return -1;
	if (nd_opt_get(o, "key-secret") || nd_opt_get(o, "key"))
		return nd_url_error("rbd: %s", "the Ceph key (key-secret) is "
				    "refused in the table: put it in a file and "
				    "give key-secret-file=PATH");
	if (!nd_opt_get(o, "pool") || !nd_opt_get(o, "image"))
		return nd_url_error("rbd: %s", "pool= and image= are required");
	if ((v = nd_opt_get(o, "auth-client-required")) && rbd_check_auth(v))
		return -1;
	for (int i = 0; i < RBD_MAX_SERVERS; i++) {
		const char *h = nd_opt_getf(o, "server.%d.host", i);
		const char *port = nd_opt_getf(o, "server.%d.port", i);
		if (!h && port)
			return nd_url_error("rbd: server.%d.port without server.%d.host",
					    i, i);
		if (port && strspn(port, "0123456789") != strlen(port))
			return nd_url_error("rbd: server.%d.port=%s: not a number", i,
					    port);
	}
	/* QEMU's snapshots are read-only; say so in the option set too. */
	if (nd_opt_get(o, "snapshot") && !nd_opt_get(o, "ro"))
		return nd_opts_default(o, "ro", "on");
	return 0;
}

/* rbd:pool/image@snap:... is shown as "image" or "image@snap". */
static char *rbd_basename(const char *url)
{
	struct nd_opts o;
	char *name = NULL;

	nd_opts_init(&o, "rbd");
	if (rbd_parse(NULL, url, &o, "name") == 0) {
		const char *img = nd_opt_get(&o, "image");
		const char *snap = nd_opt_get(&o, "snapshot");
		if (!strchr(img, '/') && strcmp(img, ".") && strcmp(img, "..") &&
		    asprintf(&name, snap ? "%s@%s" : "%s", img, snap) < 0)
			name = NULL;
	}
	nd_opts_free(&o);
	return name ? name : strdup("disk");
}

static const char *const rbd_drivers[] = { "rbd", NULL };
static const char *const rbd_schemes[] = { NULL };

/* Refused inline (key-secret-file= only), hidden all the same. */
static const char *const rbd_secrets[] = { "key-secret", "key", NULL };

const struct nd_proto rbd_proto = {
	.secrets = rbd_secrets,
	.name = "rbd",
	.drivers = rbd_drivers,
	.schemes = rbd_schemes,
	.legacy = "rbd:",
	.parse = rbd_parse,
	.normalize = rbd_normalize,
	.basename = rbd_basename,
};
ND_PROTO_REGISTER(rbd_proto)
