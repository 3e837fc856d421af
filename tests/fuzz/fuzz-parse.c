/* fuzz-parse: libFuzzer target for the mount-table and URL parsers. The
 * input is parsed as a whole table and, NUL-terminated, as one URL field
 * with the same option list; neither may crash, leak or hang.
 *
 * It also checks the secret property (abort otherwise): a secret never
 * survives redaction.
 *  (a) Each byte 0x01 of the input becomes a distinct marker; whatever
 *      marker the parser puts into a secret (a secret key's value, the
 *      password or a secret query parameter of a URL-valued option) must
 *      be absent from nd_redact(input), nd_scrub(input), the canonical
 *      options (nd_opts_format) and the parse error.
 *  (b) The input fills the blanks of a template that holds a marker in a
 *      secret position (URL userinfo with quotes or blanks, iSCSI's u%PW@,
 *      ?token=, json "password", dotted password=, proxy userinfo, a
 *      malformed ssh:/u:PW@, escaped json); the same outputs must not
 *      hold it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log.h"
#include "opts.h"
#include "secret.h"
#include "table.h"
#include "url.h"

#define MARK "zQ9vK"
#define MAX_MARKS 64

static void leak(const char *what, const char *marker, const char *input,
		 const char *out)
{
	fprintf(stderr, "secret %s leaked into %s\ninput: %s\noutput: %s\n",
		marker, what, input, out);
	abort();
}

/* Every output a secret may reach: none may hold MARKER. */
static void check_outputs(const char *s, const struct nd_opts *o,
			  const char *err, const char *marker)
{
	char *r = nd_redact(s), *sc = strdup(s), *f = nd_opts_format(o, ",");
	if (r && strstr(r, marker))
		leak("nd_redact", marker, s, r);
	if (sc) {
		nd_scrub(sc);
		if (strstr(sc, marker))
			leak("nd_scrub", marker, s, sc);
	}
	if (f && strstr(f, marker))
		leak("nd_opts_format", marker, s, f);
	if (err && strstr(err, marker))
		leak("the parse error", marker, s, err);
	free(r);
	free(sc);
	free(f);
}

/* Parse S as one URL field; *ERR gets the error text (or NULL). */
static void parse(const char *s, struct nd_opts *o, char **err)
{
	nd_opts_init(o, "fuzz");
	nd_clear_error();
	*err = NULL;
	if (nd_url_parse(s, o, "fuzz") == -1 || nd_opts_normalize(o) == -1)
		*err = strdup(nd_get_error());
}

/* --- (a) markers the parser calls secret ------------------------------ */

static bool has_marker(const char *v, int i)
{
	char m[16];
	snprintf(m, sizeof m, MARK "%02d", i);
	return strstr(v, m) != NULL;
}

/* Mark in SECRET[] every marker in the password or a secret query
 * parameter of the URL V. */
static void url_secrets(const char *v, int n, bool *secret)
{
	CURLU *h = curl_url();
	char *pw = NULL, *q = NULL;
	if (h && curl_url_set(h, CURLUPART_URL, v,
			      CURLU_NON_SUPPORT_SCHEME | CURLU_PATH_AS_IS) ==
			 CURLUE_OK) {
		curl_url_get(h, CURLUPART_PASSWORD, &pw, 0);
		curl_url_get(h, CURLUPART_QUERY, &q, 0);
	}
	for (int i = 0; i < n; i++)
		secret[i] |= pw && has_marker(pw, i);
	for (char *p = q; p && *p;) {
		size_t len = strcspn(p, "&;");
		char *eq = memchr(p, '=', len);
		if (eq) {
			char *k = curl_easy_unescape(NULL, p, (int)(eq - p), NULL);
			char *val = strndup(eq + 1, len - (eq + 1 - p));
			for (int i = 0; i < n && k && val; i++)
				secret[i] |= nd_secret_key(k) && has_marker(val, i);
			curl_free(k);
			free(val);
		}
		p += len + (p[len] != 0);
	}
	curl_free(pw);
	curl_free(q);
	curl_url_cleanup(h);
}

static void property_a(const uint8_t *data, size_t size)
{
	char *s = malloc(size * 8 + 1), *o = s;
	int n = 0;
	bool secret[MAX_MARKS] = { false };

	if (!s)
		return;
	for (size_t i = 0; i < size; i++) {
		if (data[i] == 1 && n < MAX_MARKS)
			o += sprintf(o, MARK "%02d", n++);
		else
			*o++ = data[i] == 1 ? 'x' : (char)data[i];
	}
	*o = 0;
	/* Decoding (%XX, \uXXXX) could build a marker the input does not
	 * hold literally: such inputs prove nothing here. */
	bool escapes = strstr(s, "\\u") || strchr(s, '%');
	/* The input may spell a marker itself, or hold a NUL. */
	bool once = strlen(s) == size + (size_t)n * 6;
	for (int i = 0; i < n && once; i++) {
		char m[16];
		snprintf(m, sizeof m, MARK "%02d", i);
		once = !strstr(strstr(s, m) + 1, m);
	}
	if (n == 0 || escapes || !once) {
		free(s);
		return;
	}
	struct nd_opts opts;
	char *err;
	parse(s, &opts, &err);
	for (size_t k = 0; k < opts.n; k++) {
		const struct nd_opt *p = &opts.v[k];
		for (int i = 0; i < n; i++)
			secret[i] |= nd_secret_key(p->key) && has_marker(p->val, i);
		if (strstr(p->val, "://"))
			url_secrets(p->val, n, secret);
	}
	for (int i = 0; i < n; i++) {
		char m[16];
		snprintf(m, sizeof m, MARK "%02d", i);
		if (secret[i])
			check_outputs(s, &opts, err, m);
	}
	nd_opts_free(&opts);
	free(err);
	free(s);
}

/* --- (b) templates with the marker in a secret position ---------------- */

/* Up to N bytes of *D as a filler without the bytes in DROP; json-escaped
 * when JSON. Malloc'd. */
static char *filler(const uint8_t **d, size_t *left, size_t n,
		    const char *drop, bool json)
{
	char *out = malloc(n * 6 + 1), *o = out;
	size_t take = *d && *left ? (**d % (n + 1)) : 0;
	if (*left)
		(*d)++, (*left)--;
	if (take > *left)
		take = *left;
	for (size_t i = 0; out && i < take; i++) {
		unsigned char c = (*d)[i];
		if (!c || c == 1 || strchr(drop, c))
			continue;
		if (json && (c == '"' || c == '\\' || c < 0x20))
			o += sprintf(o, "\\u%04x", c);
		else
			*o++ = c;
	}
	*d += take;
	*left -= take;
	if (out)
		*o = 0;
	return out;
}

static void property_b(const uint8_t *data, size_t size)
{
	static const char *const tmpl[] = {
		"http://%s:%s@%s/x.img",
		"iscsi://%s%%%s@%s/iqn.2026-01.x:t/1",
		"https://%s/x.img?a=1&%s=%s",
		"json:{\"driver\":\"http\",\"url\":\"http://%s/x\",\"%s\":\"%s\"}",
		"driver=http,url=http://%s/x,%s=%s",
		"iscsi://%s/iqn.2026-01.x:t/1?%s=%s",
		"driver=http,url=http://h/x,proxy=http://%s:%s@%s:3128",
		"json:{\"file.driver\":\"ftp\",\"file.url\":\"ftp://%s:%s@%s/x\"}",
		"ssh:/%s:%s@%s/x.img",
		"json:{\"file\":{\"driver\":\"http\",\"url\":\"http:\\/\\/%s:%s@%s\\/x\"}}",
	};
	static const char *const keys[] = { "password", "token", "secret",
					    "key", "sig", "signature",
					    "cookie", "key-secret", "tls-psk",
					    "X-Amz-Signature", "access_token" };
	/* Bytes that would move the marker out of its place, per template. */
	static const char *const drop[] = { "/?#@", "/?#@", "&;# \t\r\n",
					    "", "", "&;# \t\r\n", "/?#@",
					    "/?#@", "/@ \t\r\n", "/?#@\\" };
	static const bool json[] = { 0, 0, 0, 1, 0, 0, 0, 1, 0, 1 };
	const size_t nt = sizeof tmpl / sizeof *tmpl;
	size_t left = size;
	const uint8_t *d = data;

	if (size < 2)
		return;
	size_t t = data[0] % nt;
	const char *key = keys[data[1] % (sizeof keys / sizeof *keys)];
	d += 2, left -= 2;
	char *a = filler(&d, &left, 24, drop[t], json[t]);
	char *b = filler(&d, &left, 24, drop[t], json[t]);
	char *host = filler(&d, &left, 16, "/?#@:%[] \t\r\n\"\\{},&;", false);
	char *s = NULL, *pw = NULL;
	if (!a || !b || !host || asprintf(&pw, "%s" MARK "%s", a, b) < 0)
		goto out;
	/* ",," is how a key list writes a comma. */
	if (t == 4 || t == 6) {
		char *w = malloc(strlen(pw) * 2 + 1), *o = w;
		for (const char *c = pw; w && *c; c++)
			o = *c == ',' ? stpcpy(o, ",,") : (*o = *c, o + 1);
		if (!w)
			goto out;
		*o = 0;
		free(pw);
		pw = w;
	}
	const char *h = *host ? host : "h";
	int r = t == 2 || t == 3 || t == 4 || t == 5
			? asprintf(&s, tmpl[t], h, key, pw)
			: asprintf(&s, tmpl[t], "u", pw, h);
	if (r < 0) {
		s = NULL;
		goto out;
	}
	/* The fillers may spell the marker too: then it is not only secret. */
	if (strstr(strstr(s, MARK) + 1, MARK))
		goto out;
	struct nd_opts o;
	char *err;
	parse(s, &o, &err);
	check_outputs(s, &o, err, MARK);
	nd_opts_free(&o);
	free(err);
out:
	free(s);
	free(pw);
	free(a);
	free(b);
	free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nd_table t;
	FILE *errs = fopen("/dev/null", "w");
	char *s;

	nd_table_parse((const char *)data, size, "fuzz.tab", false, NULL, NULL,
		       &t, errs);
	for (size_t i = 0; i < t.n; i++) {
		char *f = nd_opts_format(&t.e[i].opts, ",");
		free(f);
	}
	nd_table_free(&t);
	fclose(errs);

	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	struct nd_opts o;
	nd_opts_init(&o, "fuzz");
	if (nd_url_parse(s, &o, "fuzz") == 0) {
		nd_opts_normalize(&o);
		char *r = nd_redact(s);
		free(r);
	}
	nd_opts_free(&o);
	char *b = nd_url_basename(s);
	free(b);
	free(s);

	property_a(data, size);
	property_b(data, size);
	return 0;
}
