/* curl-url.c: the URL grammar of the curl backend, library-free (see
 * struct nd_proto): http, https, ftp and ftps URLs, and the url= key of
 * json: and dotted forms. URL syntax is checked with libcurl's URL API,
 * which the core links anyway; no transfer code is linked here. */
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

/* http(s)/ftp(s): the credentials leave the URL for username/password so
 * they never travel with it into logs; the query stays in the URL. */
static int curl_parse_split(const char *url, const struct nd_url *p,
			    struct nd_opts *o, const char *origin)
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
		nd_url_error("%s: not a valid URL", p->scheme);
		goto out;
	}
	if (!p->host) {
		nd_url_error("%s URL without a host", p->scheme);
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

static int curl_normalize(struct nd_opts *o)
{
	const char *drv = nd_opt_get(o, "driver");
	CLEANUP_FREE char *driver = strdup(drv);
	const struct nd_opt *u = nd_opt_find(o, "url");
	if (!u)
		return nd_url_error("%s: the url= option is required", driver);
	/* An explicit url= may carry credentials too: reparse it. */
	{
		CLEANUP_FREE char *url = strdup(u->val);
		CLEANUP_FREE char *org = strdup(u->origin);
		struct nd_url p;
		int r;
		if (!url || !org)
			return -1;
		if (strncasecmp(url, driver, strlen(driver)) != 0 ||
		    strncmp(url + strlen(driver), "://", 3) != 0)
			return nd_url_error("url= does not match driver=%s", driver);
		if (nd_url_split(url, &p) == -1)
			return -1;
		nd_opt_del(o, "url");
		nd_opt_del(o, "driver");
		r = curl_parse_split(url, &p, o, org);
		nd_url_free(&p);
		if (r == -1)
			return -1;
	}
	return 0;
}

static const char *const curl_names[] = { "http", "https", "ftp", "ftps",
					  NULL };

/* A backing file NAME resolved against the image's URL (RFC 3986). */
static int curl_relative(struct nd_opts *o, const char *name)
{
	const struct nd_opt *u = nd_opt_find(o, "url");
	CURLU *h = curl_url();
	char *url = NULL;
	CLEANUP_FREE char *org = u ? strdup(u->origin) : NULL;
	int r = -1;

	if (!u || !h)
		goto out;
	if (curl_url_set(h, CURLUPART_URL, u->val, 0) != CURLUE_OK ||
	    curl_url_set(h, CURLUPART_URL, name, 0) != CURLUE_OK ||
	    curl_url_get(h, CURLUPART_URL, &url, 0) != CURLUE_OK) {
		nd_url_error("backing file '%s': not a URL relative to the image",
			     name);
		goto out;
	}
	r = org ? nd_opt_set(o, "url", url, org) : -1;
out:
	curl_free(url);
	curl_url_cleanup(h);
	return r;
}

/* Credentials, cookies, and the tokens and signatures of pre-signed
 * URLs (token=, sig=, X-Amz-Signature=). */
static const char *const curl_secrets[] = { "password", "cookie", "cookies",
					    "token", "sig", "signature",
					    NULL };

const struct nd_proto curl_proto = {
	.secrets = curl_secrets,
	.drivers = curl_names,
	.schemes = curl_names,
	.parse_split = curl_parse_split,
	.normalize = curl_normalize,
	.relative = curl_relative,
};
ND_PROTO_REGISTER(curl_proto)
