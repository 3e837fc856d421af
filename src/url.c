/* url.c: turn every device URL form QEMU documents into one canonical
 * option set, so nbd://h:1/x, nbd:h:1:exportname=x and
 * json:{"driver":"nbd",...} end up identical. RFC 3986 splitting and
 * percent-decoding go through libcurl's URL API, json: through jansson;
 * only QEMU's legacy nbd: forms and the dotted-key flattening are ours. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "log.h"
#include "url.h"
#include "util/cleanup.h"

static int bad(const char *fmt, const char *a)
{
	errno = EINVAL;
	nd_error(fmt, a);
	return -1;
}

static char *pct_decode(const char *s, size_t len)
{
	int outlen;
	char *t = curl_easy_unescape(NULL, s, (int)len, &outlen);
	char *r;
	if (!t)
		return NULL;
	r = strdup(t);
	curl_free(t);
	return r;
}

/* --- json: ---------------------------------------------------------- */

static int json_flatten(json_t *v, const char *prefix, struct nd_opts *o,
			const char *origin)
{
	char buf[64];
	const char *s;

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *k;
		json_t *child;
		json_object_foreach(v, k, child) {
			CLEANUP_FREE char *key = NULL;
			if (asprintf(&key, "%s%s%s", prefix, *prefix ? "." : "",
				     k) < 0)
				return -1;
			if (json_flatten(child, key, o, origin) == -1)
				return -1;
		}
		return 0;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *child;
		json_array_foreach(v, i, child) {
			CLEANUP_FREE char *key = NULL;
			if (asprintf(&key, "%s.%zu", prefix, i) < 0)
				return -1;
			if (json_flatten(child, key, o, origin) == -1)
				return -1;
		}
		return 0;
	}
	case JSON_STRING: s = json_string_value(v); break;
	case JSON_INTEGER:
		snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
			 json_integer_value(v));
		s = buf;
		break;
	case JSON_REAL:
		snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
		s = buf;
		break;
	case JSON_TRUE: s = "on"; break;
	case JSON_FALSE: s = "off"; break;
	default: return bad("json: key '%s' is null", prefix);
	}
	if (!*prefix)
		return bad("json: %s", "the value must be an object");
	return nd_opt_add(o, prefix, s, origin);
}

static int parse_json(const char *text, struct nd_opts *o, const char *origin)
{
	json_error_t err;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &err);
	int r;

	/* Pasted from a QEMU command line, where ",," escapes a comma. */
	if (!root && strstr(text, ",,")) {
		CLEANUP_FREE char *t = strdup(text);
		char *w = t;
		for (const char *p = text; t && *p; p++) {
			*w++ = *p;
			if (p[0] == ',' && p[1] == ',')
				p++;
		}
		if (t) {
			*w = 0;
			root = json_loads(t, JSON_REJECT_DUPLICATES, &err);
		}
	}

	if (!root) {
		/* jansson quotes the text "near" the error, which may be
		 * part of a password: the position says enough. */
		char *near = strstr(err.text, " near '");
		if (near)
			*near = 0;
		errno = EINVAL;
		nd_error("json: %s (at character %d)", err.text, err.position);
		return -1;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return bad("json: %s", "the value must be an object");
	}
	r = json_flatten(root, "", o, origin);
	json_decref(root);
	return r;
}

/* --- legacy nbd:host:port[:exportname=x] and nbd:unix:path[:...] ------ */

static int parse_nbd_legacy(const char *s, struct nd_opts *o,
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
			return bad("%s: no socket path after nbd:unix:", s);
		return nd_opt_add(o, "server.type", "unix", origin) ||
		       nd_opt_add(o, "server.path", copy + 5, origin);
	}
	host = copy;
	if (*host == '[') {
		char *end = strchr(host, ']');
		if (!end || end[1] != ':')
			return bad("%s: bad IPv6 address (use nbd:[ADDR]:PORT)",
				   s);
		*end = 0;
		host++;
		port = end + 2;
	} else {
		port = strrchr(host, ':');
		if (!port)
			return bad("%s: expected nbd:HOST:PORT or "
				   "nbd:unix:PATH",
				   s);
		*port++ = 0;
	}
	if (!*host || !*port || strspn(port, "0123456789") != strlen(port))
		return bad("%s: expected nbd:HOST:PORT with a numeric port", s);
	return nd_opt_add(o, "server.type", "inet", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       nd_opt_add(o, "server.port", port, origin);
}

/* --- scheme://... through curl_url ------------------------------------ */

struct parsed {
	char *scheme, *user, *password, *host, *port, *path, *query;
};

static void parsed_free(struct parsed *p)
{
	free(p->scheme);
	free(p->user);
	nd_secret_free(p->password);
	free(p->host);
	free(p->port);
	free(p->path);
	free(p->query);
}

static char *url_part(CURLU *h, CURLUPart what, unsigned flags)
{
	char *v = NULL, *r;
	if (curl_url_get(h, what, &v, flags) != CURLUE_OK || !v)
		return NULL;
	r = strdup(v);
	curl_free(v);
	return r;
}

/* Unbracketed host: "[::1]" -> "::1". */
static char *host_plain(const char *h)
{
	size_t n = strlen(h);
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
		return strndup(h + 1, n - 2);
	return strdup(h);
}

static int split_url(const char *url, struct parsed *p)
{
	CURLU *h = curl_url();
	CURLUcode rc;
	int ret = -1;

	memset(p, 0, sizeof *p);
	if (!h)
		return -1;
	/* "scheme:///path" has an empty authority; libcurl would take the
	 * first path segment as the host, so parse it with a stand-in host
	 * and drop that afterwards. */
	const char *sep = strstr(url, "://");
	bool no_host = sep && sep[3] == '/' && strncasecmp(url, "file:", 5) != 0;
	CLEANUP_FREE char *with_host = NULL;
	if (no_host) {
		if (asprintf(&with_host, "%.*s://_%s", (int)(sep - url), url,
			     sep + 3) < 0) {
			curl_url_cleanup(h);
			return -1;
		}
		url = with_host;
	}
	rc = curl_url_set(h, CURLUPART_URL, url,
			  CURLU_NON_SUPPORT_SCHEME | CURLU_NO_AUTHORITY |
				  CURLU_PATH_AS_IS);
	if (rc != CURLUE_OK) {
		CLEANUP_FREE char *r = nd_redact(url);
		errno = EINVAL;
		nd_error("%s: %s", r ? r : "URL", curl_url_strerror(rc));
		goto out;
	}
	p->scheme = url_part(h, CURLUPART_SCHEME, 0);
	p->user = url_part(h, CURLUPART_USER, CURLU_URLDECODE);
	p->password = url_part(h, CURLUPART_PASSWORD, CURLU_URLDECODE);
	p->host = url_part(h, CURLUPART_HOST, 0);
	p->port = url_part(h, CURLUPART_PORT, 0);
	p->path = url_part(h, CURLUPART_PATH, 0);
	p->query = url_part(h, CURLUPART_QUERY, 0);
	if (p->host && (!*p->host || no_host)) {
		free(p->host);
		p->host = NULL;
	}
	ret = 0;
out:
	curl_url_cleanup(h);
	return ret;
}

/* Each "k=v" of a query string, percent-decoded, as option KEY. Keys in
 * MAP ("from", "to", ...) are renamed; others keep their name. */
static int add_query(const char *query, struct nd_opts *o, const char *origin,
		     const char *const *map)
{
	const char *p = query;
	while (p && *p) {
		size_t n = strcspn(p, "&;");
		const char *eq = memchr(p, '=', n);
		if (n) {
			CLEANUP_FREE char *k =
				pct_decode(p, eq ? (size_t)(eq - p) : n);
			CLEANUP_FREE char *v =
				eq ? pct_decode(eq + 1, n - (eq + 1 - p))
				   : strdup("on");
			const char *key = k;
			if (!k || !v)
				return -1;
			for (size_t i = 0; map && map[i]; i += 2)
				if (strcmp(k, map[i]) == 0)
					key = map[i + 1];
			if (nd_opt_add(o, key, v, origin) == -1)
				return -1;
		}
		p += n;
		if (*p)
			p++;
	}
	return 0;
}

static int parse_nbd_url(struct parsed *p, struct nd_opts *o,
			 const char *origin)
{
	static const char *const qmap[] = { "socket", "server.path", NULL };
	const char *s = p->scheme;
	bool tls = strncmp(s, "nbds", 4) == 0;
	bool unix_sock = strstr(s, "+unix") != NULL;
	const char *rest = s + (tls ? 4 : 3);

	if (*rest && strcmp(rest, "+tcp") != 0 && strcmp(rest, "+unix") != 0)
		return bad("unknown NBD transport in scheme '%s'", s);
	if (nd_opt_add(o, "driver", "nbd", origin) == -1)
		return -1;
	if (p->path && p->path[0] == '/' && p->path[1]) {
		CLEANUP_FREE char *exp = pct_decode(p->path + 1,
						    strlen(p->path + 1));
		if (!exp || nd_opt_add(o, "export", exp, origin) == -1)
			return -1;
	}
	if (tls && nd_opt_add(o, "tls", "require", origin) == -1)
		return -1;
	if (p->user && nd_opt_add(o, "tls-username", p->user, origin) == -1)
		return -1;
	if (p->password)
		return bad("%s: NBD URLs take no password (use tls-psk-file=)",
			   s);
	if (add_query(p->query, o, origin, qmap) == -1)
		return -1;
	if (unix_sock) {
		if (p->host)
			return bad("%s: a Unix socket URL has no host "
				   "(nbd+unix:///EXPORT?socket=PATH)",
				   s);
		if (!nd_opt_get(o, "server.path"))
			return bad("%s: missing ?socket=PATH", s);
		return nd_opt_add(o, "server.type", "unix", origin);
	}
	if (!p->host)
		return bad("%s: missing host", s);
	CLEANUP_FREE char *host = host_plain(p->host);
	return nd_opt_add(o, "server.type", "inet", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.port", p->port, origin));
}

/* iscsi://[user[%password]@]host[:port]/target-iqn/lun: the userinfo is
 * split by hand because QEMU's '%' separator is not percent-encoding. */
static int parse_iscsi(const char *url, struct nd_opts *o, const char *origin)
{
	const char *auth = url + strlen("iscsi://");
	const char *slash = auth + strcspn(auth, "/?#");
	const char *at = NULL;
	CLEANUP_FREE char *rebuilt = NULL;
	CLEANUP_FREE char *target = NULL;
	CLEANUP_FREE char *portal = NULL;
	struct parsed p;
	int ret = -1;

	for (const char *q = auth; q < slash; q++)
		if (*q == '@')
			at = q;
	if (at) {
		const char *pct = memchr(auth, '%', at - auth);
		const char *uend = pct ? pct : at;
		CLEANUP_FREE char *user = strndup(auth, uend - auth);
		if (!user || nd_opt_add(o, "user", user, origin) == -1)
			return -1;
		if (pct) {
			char *pw = strndup(pct + 1, at - pct - 1);
			int r = pw ? nd_opt_add(o, "password", pw, origin) : -1;
			nd_secret_free(pw);
			if (r == -1)
				return -1;
		}
		if (asprintf(&rebuilt, "iscsi://%s", at + 1) < 0)
			return -1;
		url = rebuilt;
	}
	if (split_url(url, &p) == -1)
		return -1;
	if (!p.host) {
		bad("%s: missing target address", "iscsi://");
		goto out;
	}
	const char *path = p.path ? p.path : "";
	while (*path == '/')
		path++;
	const char *lun = strrchr(path, '/');
	if (!lun || lun == path || !lun[1] ||
	    strspn(lun + 1, "0123456789") != strlen(lun + 1)) {
		bad("iscsi://%s: expected iscsi://HOST[:PORT]/TARGET-IQN/LUN",
		    p.host);
		goto out;
	}
	target = strndup(path, lun - path);
	if (!target || asprintf(&portal, "%s:%s", p.host, p.port ? p.port : "3260") < 0)
		goto out;
	if (nd_opt_add(o, "driver", "iscsi", origin) == -1 ||
	    nd_opt_add(o, "transport", "tcp", origin) == -1 ||
	    nd_opt_add(o, "portal", portal, origin) == -1 ||
	    nd_opt_add(o, "target", target, origin) == -1 ||
	    nd_opt_add(o, "lun", lun + 1, origin) == -1)
		goto out;
	ret = add_query(p.query, o, origin, NULL);
out:
	parsed_free(&p);
	return ret;
}

static int parse_ssh(struct parsed *p, struct nd_opts *o, const char *origin)
{
	static const char *const qmap[] = { "host_key_check", "host-key-check",
					    NULL };
	if (!p->host)
		return bad("%s: missing host", "ssh://");
	if (p->password)
		return bad("ssh://%s: a password in the URL is refused; use "
			   "ssh-agent, identity= or password-file=",
			   p->host);
	CLEANUP_FREE char *host = host_plain(p->host);
	CLEANUP_FREE char *path = pct_decode(p->path ? p->path : "/",
					     strlen(p->path ? p->path : "/"));
	if (!path || strlen(path) < 2)
		return bad("ssh://%s: missing the path of the remote file",
			   p->host);
	return nd_opt_add(o, "driver", "ssh", origin) ||
	       nd_opt_add(o, "server.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.port", p->port, origin)) ||
	       (p->user && nd_opt_add(o, "user", p->user, origin)) ||
	       nd_opt_add(o, "path", path, origin) ||
	       add_query(p->query, o, origin, qmap);
}

static int parse_gluster(struct parsed *p, struct nd_opts *o,
			 const char *origin)
{
	static const char *const qmap[] = { "socket", "server.0.socket", NULL };
	const char *type = strchr(p->scheme, '+');
	type = type ? type + 1 : "tcp";
	if (strcmp(type, "tcp") && strcmp(type, "unix") && strcmp(type, "rdma"))
		return bad("unknown gluster transport '%s' (tcp, unix or rdma)",
			   type);
	CLEANUP_FREE char *path = pct_decode(p->path ? p->path : "",
					     strlen(p->path ? p->path : ""));
	if (!path)
		return -1;
	char *vol = path + strspn(path, "/");
	char *img = vol + strcspn(vol, "/");
	if (*img)
		*img++ = 0;
	img += strspn(img, "/");
	if (!*vol || !*img)
		return bad("gluster URL '%s': expected "
			   "gluster[+TYPE]://[HOST[:PORT]]/VOLUME/PATH",
			   p->path ? p->path : "");
	if (nd_opt_add(o, "driver", "gluster", origin) == -1 ||
	    nd_opt_add(o, "volume", vol, origin) == -1 ||
	    nd_opt_add(o, "path", img, origin) == -1 ||
	    nd_opt_add(o, "server.0.type", type, origin) == -1 ||
	    add_query(p->query, o, origin, qmap) == -1)
		return -1;
	if (strcmp(type, "unix") == 0) {
		if (p->host)
			return bad("gluster+unix://%s: a Unix socket URL has "
				   "no host",
				   p->host);
		if (!nd_opt_get(o, "server.0.socket"))
			return bad("%s: missing ?socket=PATH", "gluster+unix");
		return 0;
	}
	CLEANUP_FREE char *host = host_plain(p->host ? p->host : "localhost");
	return nd_opt_add(o, "server.0.host", host, origin) ||
	       (p->port && nd_opt_add(o, "server.0.port", p->port, origin));
}

/* http(s)/ftp(s): the credentials leave the URL for username/password so
 * they never travel with it into logs; the query stays in the URL. */
static int parse_curl(const char *url, struct parsed *p, struct nd_opts *o,
		      const char *origin)
{
	CURLU *h = curl_url();
	char *clean = NULL;
	int ret = -1;

	if (!h)
		return -1;
	if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_set(h, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
	    curl_url_set(h, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
	    curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
	    curl_url_get(h, CURLUPART_URL, &clean, 0) != CURLUE_OK) {
		bad("%s: not a valid URL", p->scheme);
		goto out;
	}
	if (!p->host) {
		bad("%s URL without a host", p->scheme);
		goto out;
	}
	if (nd_opt_add(o, "driver", p->scheme, origin) == -1 ||
	    nd_opt_add(o, "url", clean, origin) == -1 ||
	    (p->user && *p->user &&
	     nd_opt_add(o, "username", p->user, origin) == -1) ||
	    (p->password && nd_opt_add(o, "password", p->password, origin) ==
				    -1))
		goto out;
	ret = 0;
out:
	curl_free(clean);
	curl_url_cleanup(h);
	return ret;
}

static bool is_curl_scheme(const char *s)
{
	return !strcmp(s, "http") || !strcmp(s, "https") || !strcmp(s, "ftp") ||
	       !strcmp(s, "ftps");
}

static int parse_scheme_url(const char *url, struct nd_opts *o,
			    const char *origin)
{
	struct parsed p;
	int ret = -1;
	size_t slen = strcspn(url, ":");
	CLEANUP_FREE char *scheme = strndup(url, slen);

	if (!scheme)
		return -1;
	for (char *c = scheme; *c; c++)
		*c = tolower((unsigned char)*c);
	if (strcmp(scheme, "iscsi") == 0)
		return parse_iscsi(url, o, origin);
	if (split_url(url, &p) == -1)
		return -1;
	if (strncmp(scheme, "nbd", 3) == 0)
		ret = parse_nbd_url(&p, o, origin);
	else if (strcmp(scheme, "ssh") == 0)
		ret = parse_ssh(&p, o, origin);
	else if (strncmp(scheme, "gluster", 7) == 0 &&
		 (!scheme[7] || scheme[7] == '+'))
		ret = parse_gluster(&p, o, origin);
	else if (is_curl_scheme(scheme))
		ret = parse_curl(url, &p, o, origin);
	else if (strcmp(scheme, "file") == 0) {
		CLEANUP_FREE char *path =
			pct_decode(p.path ? p.path : "", strlen(p.path ? p.path : ""));
		if (p.host && strcmp(p.host, "localhost") != 0)
			ret = bad("file://%s: only local files "
				  "(file:///PATH)",
				  p.host);
		else if (!path || !*path)
			ret = bad("%s", "file: URL without a path");
		else
			ret = nd_opt_add(o, "driver", "file", origin) ||
			      nd_opt_add(o, "filename", path, origin);
	} else
		ret = bad("unknown URL scheme '%s' (known: iscsi, nbd, "
			  "nbd+tcp, nbd+unix, nbds, nbds+unix, ssh, gluster, "
			  "gluster+tcp, gluster+unix, gluster+rdma, http, "
			  "https, ftp, ftps, file)",
			  scheme);
	parsed_free(&p);
	return ret;
}

/* "driver=ssh,host=h" / "file.driver=http,file.url=...": a key list. */
static bool is_key_list(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz"
			     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
	return n > 0 && s[n] == '=';
}

int nd_url_parse(const char *url, struct nd_opts *o, const char *origin)
{
	if (strncmp(url, "json:", 5) == 0)
		return parse_json(url + 5, o, origin);
	if (url[0] == '/')
		return nd_opt_add(o, "driver", "file", origin) ||
		       nd_opt_add(o, "filename", url, origin);
	if (strncmp(url, "nbd:", 4) == 0 && strncmp(url, "nbd://", 6) != 0)
		return parse_nbd_legacy(url, o, origin);
	if (strstr(url, "://") &&
	    strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			"0123456789+.-") == (size_t)(strstr(url, "://") - url))
		return parse_scheme_url(url, o, origin);
	if (is_key_list(url))
		return nd_opts_parse_list(o, url, origin);
	return bad("'%s' is not a device URL (expected SCHEME://..., "
		   "nbd:HOST:PORT, json:{...}, driver=... or an absolute path)",
		   url);
}

/* --- normalisation ---------------------------------------------------- */

/* Keys the core itself reads: allowed at any level of a wrapper. */
static bool is_core_key(const char *k)
{
	static const char *const keys[] = {
		"ro", "readonly", "read-only", "readahead", "block-size",
		"cache-size", "cache", "connections", "timeout",
		"reconnect-delay", "open-timeout", "debug", "media", "uid", "gid",
		"mode", "umask", NULL
	};
	for (size_t i = 0; keys[i]; i++)
		if (strcmp(k, keys[i]) == 0)
			return true;
	return false;
}

static bool is_format(const char *d)
{
	static const char *const fmts[] = { "raw", "qcow2", "qcow", "vmdk",
					    "vdi", "vhdx", "vpc", "qed", "luks",
					    "dmg", "parallels", "bochs",
					    "cloop", NULL };
	for (size_t i = 0; fmts[i]; i++)
		if (strcmp(d, fmts[i]) == 0)
			return true;
	return false;
}

/* Remove KEY from O and hand its value and origin to the caller; 0 with
 * *v NULL when KEY is absent. */
static int take_key(struct nd_opts *o, const char *key, char **v, char **org)
{
	const struct nd_opt *p = nd_opt_find(o, key);
	*v = *org = NULL;
	if (!p)
		return 0;
	*v = strdup(p->val);
	*org = strdup(p->origin);
	if (!*v || !*org)
		return -1;
	nd_opt_del(o, key);
	return 0;
}

/* Rename OLD to NEW (an error if both are given differently). */
static int rename_key(struct nd_opts *o, const char *old, const char *new)
{
	CLEANUP_FREE char *v = NULL;
	CLEANUP_FREE char *org = NULL;
	if (take_key(o, old, &v, &org) == -1)
		return -1;
	return v ? nd_opt_add(o, new, v, org) : 0;
}

/* Move every "PREFIX.x" key to "x". */
static int strip_prefix(struct nd_opts *o, const char *prefix)
{
	size_t n = strlen(prefix);
	for (size_t i = 0; i < o->n;) {
		if (strncmp(o->v[i].key, prefix, n) == 0 && o->v[i].key[n] == '.') {
			CLEANUP_FREE char *k = strdup(o->v[i].key + n + 1);
			if (!k || rename_key(o, o->v[i].key, k) == -1)
				return -1;
			i = 0; /* the array was reordered */
			continue;
		}
		i++;
	}
	return 0;
}

static int set_default(struct nd_opts *o, const char *key, const char *val)
{
	return nd_opt_get(o, key) ? 0 : nd_opt_set(o, key, val, "default");
}

/* A key whose value is itself a device URL (QEMU's file=URL, filename=,
 * or an http driver's url=): parse it into O. */
static int expand_url_key(struct nd_opts *o, const char *key)
{
	CLEANUP_FREE char *v = NULL;
	CLEANUP_FREE char *org = NULL;
	if (take_key(o, key, &v, &org) == -1)
		return -1;
	return v ? nd_url_parse(v, o, org) : 0;
}

static int normalize_nbd(struct nd_opts *o)
{
	if (rename_key(o, "host", "server.host") ||
	    rename_key(o, "port", "server.port") ||
	    rename_key(o, "path", "server.path") ||
	    rename_key(o, "exportname", "export"))
		return -1;
	if (!nd_opt_get(o, "server.type"))
		if (nd_opt_set(o, "server.type",
			       nd_opt_get(o, "server.path") ? "unix" : "inet",
			       "default") == -1)
			return -1;
	const char *t = nd_opt_get(o, "server.type");
	if (strcmp(t, "inet") == 0) {
		if (!nd_opt_get(o, "server.host"))
			return bad("nbd: %s", "missing server.host");
		return set_default(o, "server.port", "10809");
	}
	if (strcmp(t, "unix") == 0) {
		if (!nd_opt_get(o, "server.path"))
			return bad("nbd: %s", "missing server.path (the socket)");
		return 0;
	}
	return bad("nbd: server.type=%s (inet or unix)", t);
}

static int normalize_gluster(struct nd_opts *o)
{
	int i;
	if (rename_key(o, "filename", "path") == -1)
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
				return bad("gluster: server.%s.socket is missing",
					   key + 7);
		} else if (strcmp(t, "tcp") == 0 || strcmp(t, "rdma") == 0) {
			if (!h)
				return bad("gluster: %s needs a host", key);
			snprintf(key, sizeof key, "server.%d.port", i);
			if (set_default(o, key, "24007") == -1)
				return -1;
		} else
			return bad("gluster: server type '%s' (tcp or unix)", t);
	}
	if (i == 0)
		return bad("gluster: %s", "no server given (server.0.host=...)");
	if (!nd_opt_get(o, "volume") || !nd_opt_get(o, "path"))
		return bad("gluster: %s", "volume= and path= are required");
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

static int normalize_curl(struct nd_opts *o)
{
	const char *drv = nd_opt_get(o, "driver");
	CLEANUP_FREE char *driver = strdup(drv);
	const struct nd_opt *u = nd_opt_find(o, "url");
	if (!u)
		return bad("%s: the url= option is required", driver);
	/* An explicit url= may carry credentials too: reparse it. */
	{
		CLEANUP_FREE char *url = strdup(u->val);
		CLEANUP_FREE char *org = strdup(u->origin);
		struct parsed p;
		int r;
		if (!url || !org)
			return -1;
		if (strncasecmp(url, driver, strlen(driver)) != 0 ||
		    strncmp(url + strlen(driver), "://", 3) != 0)
			return bad("url= does not match driver=%s", driver);
		if (split_url(url, &p) == -1)
			return -1;
		nd_opt_del(o, "url");
		nd_opt_del(o, "driver");
		r = parse_curl(url, &p, o, org);
		parsed_free(&p);
		if (r == -1)
			return -1;
	}
	return 0;
}

static int normalize_iscsi(struct nd_opts *o)
{
	if (!nd_opt_get(o, "portal") || !nd_opt_get(o, "target") ||
	    !nd_opt_get(o, "lun"))
		return bad("iscsi: %s", "portal=, target= and lun= are required");
	set_default(o, "transport", "tcp");
	if (strcmp(nd_opt_get(o, "transport"), "tcp") != 0)
		return bad("iscsi: transport=%s (only tcp)",
			   nd_opt_get(o, "transport"));
	const struct nd_opt *p = nd_opt_find(o, "portal");
	const char *close = strrchr(p->val, ']');
	const char *colon = strrchr(p->val, ':');
	bool has_port = colon && (!close || colon > close) &&
			(p->val[0] == '[' || strchr(p->val, ':') == colon);
	if (!has_port) {
		CLEANUP_FREE char *v = NULL;
		CLEANUP_FREE char *org = strdup(p->origin);
		bool v6 = strchr(p->val, ':') && p->val[0] != '[';
		if (asprintf(&v, v6 ? "[%s]:3260" : "%s:3260", p->val) < 0 ||
		    !org || nd_opt_set(o, "portal", v, org) == -1)
			return -1;
	}
	return 0;
}

int nd_opts_normalize(struct nd_opts *o)
{
	const char *d;

	/* QEMU's -drive file=URL (and filename=URL) carry a whole URL. */
	if (expand_url_key(o, "file") == -1)
		return -1;
	d = nd_opt_get(o, "driver");
	if (d && is_format(d)) {
		if (strcmp(d, "raw") != 0 && strcmp(d, "qcow2") != 0)
			return bad("driver=%s: netdiskfs exposes raw bytes; use "
				   "the protocol driver under it (file.driver=)",
				   d);
		/* Only raw's offset/size slice survives the unwrapping. */
		for (size_t i = 0; i < o->n; i++) {
			const char *k = o->v[i].key;
			if (strncmp(k, "file.", 5) == 0 || !strcmp(k, "file") ||
			    !strcmp(k, "driver") || is_core_key(k))
				continue;
			if (strcmp(d, "raw") == 0 &&
			    (!strcmp(k, "offset") || !strcmp(k, "size")))
				continue;
			errno = EINVAL;
			nd_error("driver=%s: format option '%s' is not supported "
				 "(netdiskfs exposes raw bytes)",
				 d, k);
			return -1;
		}
		if (nd_opt_find(o, "file") == NULL &&
		    !nd_opt_get(o, "file.driver") && !nd_opt_get(o, "file.filename"))
			return bad("driver=%s without a protocol child "
				   "(file.driver=...)",
				   d);
		nd_opt_del(o, "driver");
	}
	if (strip_prefix(o, "file") == -1 || expand_url_key(o, "file") == -1)
		return -1;
	d = nd_opt_get(o, "driver");
	if (!d && nd_opt_get(o, "filename"))
		if (expand_url_key(o, "filename") == -1)
			return -1;
	d = nd_opt_get(o, "driver");
	if (!d)
		return bad("%s", "no driver: give a URL or driver=");
	if (is_format(d))
		return bad("driver=%s: nested format drivers are not supported",
			   d);
	/* Aliases every driver shares. */
	if (rename_key(o, "readonly", "ro") || rename_key(o, "read-only", "ro"))
		return -1;
	const struct nd_opt *media = nd_opt_find(o, "media");
	if (media) {
		if (strcmp(media->val, "cdrom") == 0 &&
		    nd_opt_add(o, "ro", "on", media->origin) == -1)
			return -1;
		nd_opt_del(o, "media");
	}
	const struct nd_opt *ro = nd_opt_find(o, "ro");
	if (ro) {
		bool b;
		if (nd_parse_bool(ro->val, &b) == -1)
			return bad("ro=%s: not a boolean (on or off)", ro->val);
		if (nd_opt_set(o, "ro", b ? "on" : "off", ro->origin) == -1)
			return -1;
	}

	CLEANUP_FREE char *drv = strdup(d);
	if (!drv)
		return -1;
	if (strncmp(drv, "nbd", 3) == 0) {
		nd_opt_set(o, "driver", "nbd", nd_opt_find(o, "driver")->origin);
		return normalize_nbd(o);
	}
	if (strcmp(drv, "ssh") == 0) {
		if (rename_key(o, "host", "server.host") ||
		    rename_key(o, "port", "server.port") ||
		    rename_key(o, "host_key_check", "host-key-check"))
			return -1;
		if (!nd_opt_get(o, "server.host") || !nd_opt_get(o, "path"))
			return bad("ssh: %s", "host= and path= are required");
		return set_default(o, "server.port", "22");
	}
	if (strncmp(drv, "gluster", 7) == 0) {
		nd_opt_set(o, "driver", "gluster", nd_opt_find(o, "driver")->origin);
		return normalize_gluster(o);
	}
	if (is_curl_scheme(drv))
		return normalize_curl(o);
	if (strcmp(drv, "iscsi") == 0)
		return normalize_iscsi(o);
	if (strcmp(drv, "file") == 0 || strcmp(drv, "host_device") == 0) {
		nd_opt_set(o, "driver", "file", nd_opt_find(o, "driver")->origin);
		if (!nd_opt_get(o, "filename"))
			return bad("file: %s", "filename= is required");
		return 0;
	}
	return 0; /* unknown drivers are reported by the disk layer */
}

int nd_opts_merge_defaults(struct nd_opts *o, const struct nd_opts *defaults)
{
	for (size_t i = 0; i < defaults->n; i++) {
		const char *k = defaults->v[i].key;
		if (strncmp(k, "file.", 5) == 0)
			k += 5;
		if (!nd_opt_get(o, k) &&
		    nd_opt_set(o, k, defaults->v[i].val,
			       defaults->v[i].origin) == -1)
			return -1;
	}
	return 0;
}

char *nd_url_basename(const char *url)
{
	const char *end, *start;
	if (strncmp(url, "json:", 5) == 0 || is_key_list(url))
		return strdup("disk");
	if (strncmp(url, "nbd:", 4) == 0 && strncmp(url, "nbd://", 6) != 0) {
		const char *e = strstr(url, ":exportname=");
		if (!e || !e[12] || strchr(e + 12, '/') ||
		    !strcmp(e + 12, ".") || !strcmp(e + 12, ".."))
			return strdup("disk");
		return strdup(e + 12);
	}
	end = url + strcspn(url, "?#");
	while (end > url && end[-1] == '/')
		end--;
	start = end;
	while (start > url && start[-1] != '/' && start[-1] != ':')
		start--;
	if (strstr(url, "://") && start <= strstr(url, "://") + 3)
		return strdup("disk");
	if (end == start || (end - start == 1 && *start == '.') ||
	    (end - start == 2 && strncmp(start, "..", 2) == 0))
		return strdup("disk");
	char *name = pct_decode(start, end - start);
	if (!name || strchr(name, '/') || !*name) {
		free(name);
		return strdup("disk");
	}
	return name;
}
