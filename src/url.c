/* url.c: turn every device URL form QEMU documents into one canonical
 * option set, so nbd://h:1/x, nbd:h:1:exportname=x and
 * json:{"driver":"nbd",...} end up identical. The core owns json: (through
 * jansson), dotted keys, RFC 3986 splitting (libcurl's URL API) and the
 * dispatch; each protocol's schemes, legacy forms and keys belong to its
 * backend's URL file (struct nd_proto). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "backend.h"
#include "log.h"
#include "url.h"
#include "util/cleanup.h"

char *nd_url_decode(const char *s, size_t len, const char *key)
{
	int outlen;
	char *t = curl_easy_unescape(NULL, s, (int)len, &outlen);
	char *r = NULL;
	if (!t)
		return NULL;
	/* A NUL would silently cut a path or a name short. */
	if (memchr(t, 0, (size_t)outlen))
		nd_url_error("%s: %%00 (a NUL byte) is not allowed in a URL",
			     key);
	else
		r = strdup(t);
	curl_free(t);
	return r;
}

/* Replace *V (if any) by its decoded form; false on %00. */
static bool decode_in_place(char **v, const char *key)
{
	if (!*v)
		return true;
	char *d = nd_url_decode(*v, strlen(*v), key);
	nd_secret_free(*v); /* it may be a password */
	*v = d;
	return d != NULL;
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
	default:
		/* QEMU's "backing": null: show the image alone. */
		if (strcmp(prefix, "backing") == 0 ||
		    (strlen(prefix) > 8 &&
		     strcmp(prefix + strlen(prefix) - 8, ".backing") == 0)) {
			s = "off";
			break;
		}
		return nd_url_error("json: key '%s' is null", prefix);
	}
	if (!*prefix)
		return nd_url_error("json: %s", "the value must be an object");
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
		return nd_url_error("json: %s", "the value must be an object");
	}
	r = json_flatten(root, "", o, origin);
	json_decref(root);
	return r;
}

/* --- scheme://... through curl_url ------------------------------------ */

void nd_url_free(struct nd_url *p)
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
char *nd_url_host(const char *h)
{
	size_t n = strlen(h);
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
		return strndup(h + 1, n - 2);
	return strdup(h);
}

int nd_url_split(const char *url, struct nd_url *p)
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
	p->user = url_part(h, CURLUPART_USER, 0);
	p->password = url_part(h, CURLUPART_PASSWORD, 0);
	if (!decode_in_place(&p->user, "user") ||
	    !decode_in_place(&p->password, "password")) {
		nd_url_free(p);
		memset(p, 0, sizeof *p);
		goto out;
	}
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
int nd_url_add_query(const char *query, struct nd_opts *o, const char *origin,
		     const char *const *map)
{
	const char *p = query;
	while (p && *p) {
		size_t n = strcspn(p, "&;");
		const char *eq = memchr(p, '=', n);
		if (n) {
			CLEANUP_FREE char *k = nd_url_decode(
				p, eq ? (size_t)(eq - p) : n, "URL query key");
			CLEANUP_FREE char *v =
				!k ? NULL
				: eq ? nd_url_decode(eq + 1, n - (eq + 1 - p), k)
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

/* --- the protocols' registry and dispatch ---------------------------- */

#define MAX_PROTOS 32
static const struct nd_proto *protos[MAX_PROTOS];
static size_t nprotos;

void nd_proto_register(const struct nd_proto *p)
{
	if (nprotos < MAX_PROTOS)
		protos[nprotos++] = p;
	nd_secret_declare(p->secrets);
}

static bool in_list(const char *const *list, const char *s)
{
	for (size_t i = 0; list && list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

const struct nd_proto *nd_proto_by_scheme(const char *scheme)
{
	for (size_t i = 0; i < nprotos; i++)
		if (in_list(protos[i]->schemes, scheme))
			return protos[i];
	return NULL;
}

const struct nd_proto *nd_proto_by_driver(const char *driver)
{
	for (size_t i = 0; i < nprotos; i++)
		if (in_list(protos[i]->drivers, driver))
			return protos[i];
	return NULL;
}

const struct nd_proto *nd_proto_by_legacy(const char *url)
{
	for (size_t i = 0; i < nprotos; i++) {
		const char *l = protos[i]->legacy;
		if (l && strncmp(url, l, strlen(l)) == 0)
			return protos[i];
	}
	return NULL;
}

static int unknown_scheme(const char *scheme)
{
	char known[1024] = "";
	size_t n = 0;
	for (size_t i = 0; i < nprotos; i++)
		for (const char *const *s = protos[i]->schemes; s && *s; s++)
			n += snprintf(known + n, n < sizeof known ? sizeof known - n : 0,
				      "%s%s", n ? ", " : "", *s);
	errno = EINVAL;
	nd_error("unknown URL scheme '%s' (known: %s)", scheme, known);
	return -1;
}

static int parse_scheme_url(const char *url, struct nd_opts *o,
			    const char *origin)
{
	CLEANUP_FREE char *scheme = strndup(url, strcspn(url, ":"));
	const struct nd_proto *p;

	if (!scheme)
		return -1;
	for (char *c = scheme; *c; c++)
		*c = tolower((unsigned char)*c);
	p = nd_proto_by_scheme(scheme);
	if (!p)
		return unknown_scheme(scheme);
	if (!p->parse_split)
		return p->parse(scheme, url, o, origin);
	struct nd_url parts;
	if (nd_url_split(url, &parts) == -1)
		return -1;
	int r = p->parse_split(url, &parts, o, origin);
	nd_url_free(&parts);
	return r;
}

/* "driver=ssh,host=h" / "file.driver=http,file.url=...": a key list. */
static bool is_key_list(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz"
			     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
	return n > 0 && s[n] == '=';
}

static bool is_scheme_url(const char *url)
{
	const char *sep = strstr(url, "://");
	return sep && strspn(url, "abcdefghijklmnopqrstuvwxyz"
				  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-") ==
			      (size_t)(sep - url);
}

bool nd_url_is_device(const char *s)
{
	return strncmp(s, "json:", 5) == 0 || is_scheme_url(s) ||
	       is_key_list(s) || (s[0] != '/' && nd_proto_by_legacy(s));
}

int nd_url_parse(const char *url, struct nd_opts *o, const char *origin)
{
	const struct nd_proto *p;

	if (strncmp(url, "json:", 5) == 0)
		return parse_json(url + 5, o, origin);
	if (is_scheme_url(url))
		return parse_scheme_url(url, o, origin);
	if ((p = nd_proto_by_legacy(url)))
		return p->parse(NULL, url, o, origin);
	if (is_key_list(url))
		return nd_opts_parse_list(o, url, origin);
	return nd_url_error("'%s' is not a device URL (expected SCHEME://..., "
			    "a protocol's legacy form, json:{...}, "
			    "driver=... or an absolute path)",
			    url);
}

/* --- normalisation ---------------------------------------------------- */

/* The one table of the core's own keys. ANY: read by the core, allowed
 * at any level of a wrapper. ALIAS: renamed by the parser (readonly ->
 * ro, media=cdrom -> ro), so never seen past it. ENTRY: placed at the
 * entry's top by the parser itself (driver, the raw format's window). */
enum { CORE_ANY = 1, CORE_ALIAS = 2, CORE_ENTRY = 4 };
static const struct {
	const char *key;
	unsigned char where;
} core_keys[] = {
	{ "ro", CORE_ANY },	       { "readahead", CORE_ANY },
	{ "block-size", CORE_ANY },    { "cache-size", CORE_ANY },
	{ "cache", CORE_ANY },	       { "connections", CORE_ANY },
	{ "timeout", CORE_ANY },       { "reconnect-delay", CORE_ANY },
	{ "open-timeout", CORE_ANY },  { "debug", CORE_ANY },
	{ "uid", CORE_ANY },	       { "gid", CORE_ANY },
	{ "mode", CORE_ANY },	       { "umask", CORE_ANY },
	{ "format", CORE_ANY },	       { "overlay", CORE_ANY },
	{ "overlay-create", CORE_ANY }, { "overlay-force", CORE_ANY },
	{ "cache-dir", CORE_ANY },     { "cache-dir-size", CORE_ANY },
	{ "cache-dir-mode", CORE_ANY }, { "prefetch", CORE_ANY },
	{ "backing", CORE_ANY },
	{ "l2-cache-size", CORE_ANY }, { "snapshot", CORE_ANY },
	{ "recovery-dir", CORE_ANY },  { "readonly", CORE_ALIAS },
	{ "read-only", CORE_ALIAS },   { "media", CORE_ALIAS },
	{ "driver", CORE_ENTRY },      { "offset", CORE_ENTRY },
	{ "size", CORE_ENTRY },
};

static bool core_key_in(const char *k, unsigned where)
{
	for (size_t i = 0; i < sizeof core_keys / sizeof *core_keys; i++)
		if (strcmp(k, core_keys[i].key) == 0)
			return (core_keys[i].where & where) != 0;
	return false;
}

bool nd_opt_is_core(const char *k)
{
	return core_key_in(k, CORE_ANY | CORE_ALIAS);
}

bool nd_opt_is_entry_core(const char *k)
{
	return core_key_in(k, CORE_ANY | CORE_ENTRY);
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

/* A format driver's own options (besides the core's). */
static bool is_format_key(const char *fmt, const char *k)
{
	if (strcmp(fmt, "raw") == 0)
		return !strcmp(k, "offset") || !strcmp(k, "size");
	return !strcmp(k, "backing") || !strcmp(k, "l2-cache-size") ||
	       !strcmp(k, "snapshot");
}

/* driver=raw|qcow2 with a protocol child (file.*): the child becomes the
 * entry and format=qcow2 says what the file shows; raw keeps its slice. */
static int unwrap_format(struct nd_opts *o, const char *d)
{
	CLEANUP_FREE char *fmt = strdup(d);
	CLEANUP_FREE char *org = strdup(nd_opt_find(o, "driver")->origin);
	if (!fmt || !org)
		return -1;
	if (strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0)
		return nd_url_error("driver=%s: format not supported (raw and "
				    "qcow2 are; or use the protocol driver "
				    "under it, file.driver=)",
				    fmt);
	for (size_t i = 0; i < o->n; i++) {
		const char *k = o->v[i].key;
		if (strncmp(k, "file.", 5) == 0 || !strcmp(k, "file") ||
		    !strcmp(k, "driver") || nd_opt_is_core(k) ||
		    is_format_key(fmt, k))
			continue;
		errno = EINVAL;
		nd_error("driver=%s: format option '%s' is not supported", fmt,
			 k);
		return -1;
	}
	if (nd_opt_find(o, "file") == NULL && !nd_opt_get(o, "file.driver") &&
	    !nd_opt_get(o, "file.filename"))
		return nd_url_error("driver=%s without a protocol child "
				    "(file.driver=...)",
				    fmt);
	nd_opt_del(o, "driver");
	return strcmp(fmt, "qcow2") == 0 ? nd_opt_add(o, "format", fmt, org) : 0;
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

int nd_opts_rename(struct nd_opts *o, const char *old, const char *new)
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
			if (!k || nd_opts_rename(o, o->v[i].key, k) == -1)
				return -1;
			i = 0; /* the array was reordered */
			continue;
		}
		i++;
	}
	return 0;
}

int nd_opts_relative_path(struct nd_opts *o, const char *key, const char *name,
			  bool abs_slash)
{
	const struct nd_opt *p = nd_opt_find(o, key);
	CLEANUP_FREE char *v = NULL;
	CLEANUP_FREE char *org = NULL;
	if (!p)
		return nd_url_error("no %s= to resolve a relative name against",
				    key);
	if (!(org = strdup(p->origin)))
		return -1;
	if (name[0] == '/')
		v = strdup(abs_slash ? name : name + strspn(name, "/"));
	else {
		const char *slash = strrchr(p->val, '/');
		int dir = slash ? (int)(slash - p->val + 1) : 0;
		if (asprintf(&v, "%.*s%s", dir, p->val, name) < 0)
			v = NULL;
	}
	return v ? nd_opt_set(o, key, v, org) : -1;
}

int nd_opts_default(struct nd_opts *o, const char *key, const char *val)
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

int nd_opts_normalize(struct nd_opts *o)
{
	const char *d;

	/* QEMU's -drive file=URL (and filename=URL) carry a whole URL. */
	if (expand_url_key(o, "file") == -1)
		return -1;
	d = nd_opt_get(o, "driver");
	if (d && is_format(d) && unwrap_format(o, d) == -1)
		return -1;
	if (strip_prefix(o, "file") == -1 || expand_url_key(o, "file") == -1)
		return -1;
	const struct nd_opt *f = nd_opt_find(o, "format");
	if (f && strcmp(f->val, "qcow2") != 0) {
		if (strcmp(f->val, "raw") != 0)
			return nd_url_error("format=%s: not supported (raw and "
					    "qcow2 are)",
					    f->val);
		nd_opt_del(o, "format");
	}
	d = nd_opt_get(o, "driver");
	if (!d && nd_opt_get(o, "filename"))
		if (expand_url_key(o, "filename") == -1)
			return -1;
	d = nd_opt_get(o, "driver");
	if (!d)
		return nd_url_error("%s", "no driver: give a URL or driver=");
	if (is_format(d))
		return nd_url_error("driver=%s: nested format drivers are not supported",
			   d);
	/* Aliases every driver shares. */
	if (nd_opts_rename(o, "readonly", "ro") || nd_opts_rename(o, "read-only", "ro"))
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
			return nd_url_error("ro=%s: not a boolean (on or off)", ro->val);
		if (nd_opt_set(o, "ro", b ? "on" : "off", ro->origin) == -1)
			return -1;
	}

	const struct nd_proto *p = nd_proto_by_driver(d);
	if (!p)
		return 0; /* unknown drivers are reported by the disk layer */
	if (p->name && strcmp(d, p->name) != 0 &&
	    nd_opt_set(o, "driver", p->name, nd_opt_find(o, "driver")->origin))
		return -1;
	return p->normalize ? p->normalize(o) : 0;
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
	if (!is_scheme_url(url)) {
		const struct nd_proto *p = nd_proto_by_legacy(url);
		if (p && p->basename)
			return p->basename(url);
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
	char *name = nd_url_decode(start, end - start, "name");
	if (!name || strchr(name, '/') || !*name) {
		free(name);
		return strdup("disk");
	}
	return name;
}
