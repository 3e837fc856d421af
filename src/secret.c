/* secret.c: which bytes of a string are secret. One scanner marks them;
 * nd_redact, nd_scrub and nd_has_secret only differ in what they do with
 * the marks, so the log, the status file and /proc/PID/cmdline can never
 * disagree. Each rule is a superset of what a parser would read as a
 * secret (url.c, opts.c's key lists, jansson, libcurl's URL API): masking
 * a little too much of a message is harmless, missing a byte is not. The
 * fuzzer (tests/fuzz/fuzz-parse.c) checks that property. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "secret.h"

#define KEY_TAIL 128 /* a key's secrecy is decided by its tail */

static bool ends_with(const char *w, size_t n, const char *suf)
{
	size_t k = strlen(suf);
	return n >= k && strncasecmp(w + n - k, suf, k) == 0;
}

/* The words of secret keys in any syntax; each protocol declares its own
 * (struct nd_proto's secrets, registered by src/url.c). */
static const char *const generic_words[] = {
    "password",	     "passwd",	    "passphrase",  "pwd",
    "secret",	     "key",	    "auth",	   "authorization",
    "credential",    "credentials", NULL};

#define MAX_DECLARED 32
static const char *const *declared[MAX_DECLARED + 1] = { generic_words };
static size_t ndeclared = 1;

void nd_secret_declare(const char *const *names)
{
	if (names && ndeclared < MAX_DECLARED + 1)
		declared[ndeclared++] = names;
}

/* The last word of NAME ("target-password" -> "password"). */
static const char *last_word(const char *name)
{
	const char *w = name + strlen(name);
	while (w > name && w[-1] != '-' && w[-1] != '_')
		w--;
	return w;
}

bool nd_secret_key(const char *key)
{
	const char *last = strrchr(key, '.');
	const char *end, *w;

	last = last ? last + 1 : key;
	end = last + strlen(last);
	/* The last word of the last dotted part: "key-secret" -> "secret",
	 * "password-file" -> "file" (a path, not a secret). */
	for (w = end; w > last && w[-1] != '-' && w[-1] != '_'; w--)
		;
	if (end - w == 4 && strncasecmp(w, "pass", 4) == 0)
		return true;
	for (size_t l = 0; l < ndeclared; l++)
		for (size_t i = 0; declared[l][i]; i++)
			if (ends_with(w, end - w, last_word(declared[l][i])))
				return true;
	return false;
}

struct scan {
	const char *s;
	size_t n;
	unsigned char *m; /* 1 = secret byte */
};

static void mark(struct scan *sc, const char *from, const char *to)
{
	if (to > from)
		memset(sc->m + (from - sc->s), 1, to - from);
}

static int hexval(int c)
{
	return isdigit(c)    ? c - '0'
	       : isxdigit(c) ? (tolower(c) - 'a' + 10)
			     : -1;
}

/* Decode the last KEY_TAIL bytes of a key as its parser would (%XX of a
 * URL query, \uXXXX and \c of json, at any depth of escaping) and ask
 * nd_secret_key. */
static bool tail_is_secret(const char *k, size_t n)
{
	char buf[KEY_TAIL + 1];
	size_t o = 0;

	if (n > KEY_TAIL) {
		k += n - KEY_TAIL;
		n = KEY_TAIL;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = k[i];
		if (c == '%' && i + 2 < n && hexval(k[i + 1]) >= 0 &&
		    hexval(k[i + 2]) >= 0) {
			c = hexval(k[i + 1]) * 16 + hexval(k[i + 2]);
			i += 2;
		} else if (c == '\\') {
			while (i + 1 < n && k[i + 1] == '\\')
				i++;
			if (i + 5 < n && k[i + 1] == 'u' &&
			    strspn(k + i + 2, "0123456789abcdefABCDEF") >= 4) {
				c = hexval(k[i + 4]) * 16 + hexval(k[i + 5]);
				if (hexval(k[i + 2]) || hexval(k[i + 3]))
					c = '?';
				i += 5;
			} else
				continue;
		}
		buf[o++] = c ? c : '?';
	}
	buf[o] = 0;
	return nd_secret_key(buf);
}

/* scheme://user:PW@host and iscsi://user%PW@host: the authority runs to
 * the first '/', '?' or '#' (as for libcurl and the iSCSI parser, whatever
 * quotes or blanks the password holds); the password from the first ':'
 * or '%' to the last '@'. */
static void url_authority(struct scan *sc, const char *auth)
{
	const char *end = auth + strcspn(auth, "/?#"), *at = NULL, *sep;
	for (const char *q = auth; q < end; q++)
		if (*q == '@')
			at = q;
	if (at && (sep = auth + strcspn(auth, ":%")) < at)
		mark(sc, sep + 1, at);
}

/* Also json's escaped form, "http:\/\/user:PW@host". */
static void rule_url(struct scan *sc)
{
	for (const char *p = strstr(sc->s, "://"); p; p = strstr(p + 1, "://"))
		url_authority(sc, p + 3);
	for (const char *p = strstr(sc->s, ":\\/\\/"); p;
	     p = strstr(p + 1, ":\\/\\/"))
		url_authority(sc, p + 5);
}

/* "user:PW@" anywhere else: a malformed ssh:/user:PW@host, json's
 * "http:\/\/user:PW@host". The segment before '@' starts after the last
 * '/' or blank. */
static void rule_at(struct scan *sc)
{
	const char *seg_sep = NULL;
	for (const char *p = sc->s; *p; p++) {
		if (strchr("/ \t\r\n", *p))
			seg_sep = NULL;
		else if ((*p == ':' || *p == '%') && !seg_sep)
			seg_sep = p;
		else if (*p == '@' && seg_sep)
			mark(sc, seg_sep + 1, p);
	}
}

static bool is_keych(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' ||
	       c == '%';
}

/* End of a key-list value (opts.c): a single ',' (",," is a comma). */
static const char *list_end(const char *v)
{
	while (*v && !(v[0] == ',' && v[1] != ',')) {
		if (v[0] == ',')
			v++;
		v++;
	}
	return v;
}

/* Is K inside a URL query: a '?' before it, with no blank between? A
 * query key may hold any byte but '&', ';' and blanks. */
static bool in_query(const char *s, const char *k)
{
	while (k > s && !strchr(" \t\r\n", k[-1]))
		if (*--k == '?')
			return true;
	return false;
}

/* KEY=VALUE with a secret KEY: in a key list (a=b,password=x) the value
 * ends at a single ','; in a URL query (KEY right after '?', '&' or ';')
 * at '&', ';', '#' or a blank (libcurl refuses blanks in a URL). A KEY
 * after a '?' but not right after a separator may be either (a query key
 * may hold any byte, a key list may hold a URL): there the value ends at
 * whichever comes last. */
static void rule_keyval(struct scan *sc)
{
	for (const char *eq = strchr(sc->s, '='); eq;
	     eq = strchr(eq + 1, '=')) {
		const char *k = eq, *end;
		while (k > sc->s && is_keych(k[-1]))
			k--;
		if (k == eq || !tail_is_secret(k, eq - k))
			continue;
		const char *qend = eq + 1 + strcspn(eq + 1, "&;# \t\r\n");
		end = list_end(eq + 1);
		if (k > sc->s && strchr("?&;", k[-1]))
			end = qend; /* no key list item starts there */
		else if (in_query(sc->s, k) && qend > end)
			end = qend;
		mark(sc, eq + 1, end);
	}
}

/* The quote closing a json string opened by a quote with C0 backslashes
 * before it (0 in plain json, more in json escaped inside a json string):
 * in plain json one with an even number of backslashes before it, else
 * one with no more than C0. NULL when unterminated. */
static const char *json_close(const char *p, size_t c0)
{
	const char *start = p;
	for (; *p; p++) {
		size_t c = 0;
		if (*p != '"')
			continue;
		while (p - c > start && p[-1 - (long)c] == '\\')
			c++;
		if (c0 == 0 ? c % 2 == 0 : c <= c0)
			return p;
	}
	return NULL;
}

static const char *skip_ws(const char *p)
{
	return p + strspn(p, " \t\r\n");
}

/* One json member "KEY": VALUE whose opening quote is at Q (after C0
 * backslashes): mask VALUE when KEY is secret. */
static void json_member(struct scan *sc, const char *q, size_t c0)
{
	const char *kend = json_close(q + 1, c0), *v;
	size_t b;

	if (!kend || !tail_is_secret(q + 1, kend - (q + 1)))
		return;
	v = skip_ws(kend + 1);
	if (*v != ':')
		return;
	v = skip_ws(v + 1);
	b = strspn(v, "\\");
	if (v[b] == '"') {
		const char *vend = json_close(v + b + 1, b);
		mark(sc, v + b + 1, vend ? vend : sc->s + sc->n);
	} else {
		mark(sc, v, v + strcspn(v, ",}] \t\r\n"));
	}
}

/* json: members, also escaped inside another json string: a key is a
 * quote (after any backslashes) that follows '{' or ','. */
static void rule_json(struct scan *sc)
{
	for (const char *q = strchr(sc->s, '"'); q; q = strchr(q + 1, '"')) {
		const char *b = q;
		while (b > sc->s && b[-1] == '\\')
			b--;
		size_t c0 = q - b;
		while (b > sc->s && strchr(" \t\r\n", b[-1]))
			b--;
		if (b > sc->s && (b[-1] == '{' || b[-1] == ','))
			json_member(sc, q, c0);
	}
}

/* HTTP header lines as libcurl's debug log shows them. */
static void rule_header(struct scan *sc)
{
	static const char *const names[] = {"authorization:", "cookie:", NULL};
	for (const char *p = sc->s; *p; p++)
		for (size_t i = 0; names[i]; i++) {
			size_t k = strlen(names[i]);
			if (strncasecmp(p, names[i], k) == 0 &&
			    (p == sc->s || !isalnum((unsigned char)p[-1]))) {
				const char *v = p + k + strspn(p + k, " \t");
				mark(sc, v, v + strcspn(v, "\r\n"));
			}
		}
}

/* Marks of S (calloc'd, strlen(S) bytes + 1); NULL when out of memory. */
static unsigned char *scan(const char *s)
{
	struct scan sc = {s, strlen(s), NULL};
	sc.m = calloc(sc.n + 1, 1);
	if (!sc.m)
		return NULL;
	rule_url(&sc);
	rule_at(&sc);
	rule_keyval(&sc);
	rule_json(&sc);
	rule_header(&sc);
	return sc.m;
}

char *nd_redact(const char *s)
{
	size_t n = strlen(s);
	unsigned char *m = scan(s);
	char *out = m ? malloc(n * 2 + 4) : NULL, *o = out;

	if (!out) {
		free(m);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!m[i]) {
			*o++ = s[i];
			continue;
		}
		memcpy(o, "***", 3);
		o += 3;
		while (i + 1 < n && m[i + 1])
			i++;
	}
	*o = 0;
	free(m);
	return out;
}

void nd_scrub(char *s)
{
	size_t n = strlen(s);
	unsigned char *m = scan(s);

	for (size_t i = 0; m && i < n; i++)
		if (m[i])
			s[i] = '*';
	if (!m) /* cannot tell what is secret: hide it all */
		memset(s, '*', n);
	free(m);
}

bool nd_has_secret(const char *s)
{
	size_t n = strlen(s);
	unsigned char *m = scan(s);
	bool r = !m;

	for (size_t i = 0; m && i < n && !r; i++)
		r = m[i];
	free(m);
	return r;
}
