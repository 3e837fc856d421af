/* pkg-config: libcurl */
/* curl.c: read-only http, https, ftp and ftps disks through libcurl.
 *
 * HTTP(S): one easy handle per connection, kept alive between requests.
 * Each pread is one ranged GET whose body libcurl hands straight to the
 * caller's buffer. The core pools `connections` of these and fetches
 * readahead windows on them in parallel.
 *
 * FTP(S): a ranged RETR makes libcurl drop the control connection, so one
 * request per read would cost a login each time. Instead one thread-safe
 * connection object holds up to `connections` streams, each an open RETR
 * from some offset driven through its own multi handle. Reads join the
 * stream heading their way (readahead windows arrive in parallel and out
 * of order: a stream serves its queue lowest offset first), small gaps
 * are read over, and only a real seek starts a new RETR (REST + RETR).
 * The core shares that one object between its threads.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "backend.h"
#include "util/clock.h"
#include "util/cleanup.h"

#define CURL_BUFFER_SIZE (512 * 1024)
/* A forward gap this small is read and dropped rather than reopened. It
 * must exceed the span of readahead the core keeps in flight at once
 * (several workers, each a run of blocks), or a sequential reader's
 * parallel windows start RETRs of their own; reading 8 MiB over is still
 * cheaper than a new FTP login (~30 ms, ~300 ms for FTPS). */
#define CURL_SKIP_MAX (8 * 1024 * 1024)
/* The most of an error page (or unwanted body) we read before hanging up. */
#define CURL_JUNK_MAX (64 * 1024)
#define CURL_PROTOCOLS "http,https,ftp,ftps"

enum curl_kind { CURL_KIND_HTTP, CURL_KIND_FTP };

struct curl_conn;

/* One HTTP transfer: where its body goes and what its headers said. */
struct curl_xfer {
	CURL *easy;
	char *dst;
	size_t want, got;
	size_t junk;	     /* bytes of an unwanted body dropped */
	bool allow_200;	     /* a 200 (whole file) is the right answer */
	bool overflow;	     /* the server sent more than asked */
	bool ranges;	     /* Accept-Ranges: bytes */
	int64_t range_total; /* from Content-Range: bytes a-b/TOTAL, or -1 */
	char reason[64];     /* the status line's reason phrase */
	char etag[128], last_modified[128]; /* the response's validators */
};

/* A read waiting for its turn on an FTP stream. */
struct curl_waiter {
	struct curl_waiter *next;
	uint64_t off, end;
};

/* One FTP RETR kept open from some offset. */
struct curl_stream {
	struct curl_conn *c;
	CURL *easy;
	CURLM *multi;
	bool running; /* the transfer is in the multi handle */
	bool paused;  /* libcurl holds a chunk for us */
	CURLcode result;
	uint64_t net_pos; /* file offset of the next byte off the network */
	char *left;	  /* bytes received past the last read, ending at */
	size_t left_start, left_len, left_cap; /* ... net_pos */
	/* the read being served */
	char *dst;
	size_t want, got;
	uint64_t discard; /* bytes to drop before dst */
	/* under c->lock: the reads on this stream, lowest offset first */
	bool busy;		     /* a read owns the stream */
	struct curl_waiter *owner;   /* that read */
	struct curl_waiter *waiters; /* the reads after it, by offset */
	uint64_t end;	  /* end of the read served now, or where it stands */
	uint64_t max_end; /* the furthest end of all its reads */
	uint64_t last_use;
	char errbuf[CURL_ERROR_SIZE];
};

struct curl_conn {
	enum curl_kind kind;
	char *label; /* the URL, any password redacted, for messages */
	double timeout;
	uint64_t size;
	/* What this connection read is a version of (nd_info.validator);
	 * HTTP: which header it is, and If-Range carrying it. */
	char validator[128];
	bool validator_is_etag;
	struct curl_slist *if_range;
	CURL *easy; /* HTTP: the handle; FTP: the template streams copy */
	char errbuf[CURL_ERROR_SIZE];
	struct curl_xfer x;
	/* FTP */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_mutex_t dup_lock; /* the template is copied by one at a time */
	bool locks_ready;
	struct curl_stream *streams;
	unsigned nstreams, max_streams;
	uint64_t clock;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static bool curl_inited;

static void curl_global(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	curl_inited = curl_init_rc == CURLE_OK;
}

/* The one place libcurl's error text becomes an nd_error. */
static int curl_fail(const struct curl_conn *c, const char *errbuf, CURLcode rc,
		     int err)
{
	const char *why = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(rc);
	char hint[96] = "";

	if (rc == CURLE_PEER_FAILED_VERIFICATION)
		snprintf(hint, sizeof hint,
			 " (give the CA with cainfo=, or sslverify=off)");
	else if (rc == CURLE_LOGIN_DENIED)
		snprintf(hint, sizeof hint, " (wrong username or password?)");
	else if (rc == CURLE_OPERATION_TIMEDOUT)
		snprintf(hint, sizeof hint, " (no answer within timeout=%g s)",
			 c->timeout);
	nd_error("%s: %s%s", c->label, why, hint);
	return -err;
}

/* Failures worth a new connection and another try. */
static bool curl_transient(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_FTP_ACCEPT_TIMEOUT:
	case CURLE_FTP_CANT_GET_HOST:
	case CURLE_FTP_WEIRD_PASV_REPLY:
	case CURLE_FTP_WEIRD_227_FORMAT:
	case CURLE_WEIRD_SERVER_REPLY: return true;
	default: return false;
	}
}

static const char *curl_reason(long code)
{
	switch (code) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 410: return "Gone";
	case 416: return "Range Not Satisfiable";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "";
	}
}

/* An HTTP status that is not the answer we wanted. */
static int curl_status_fail(const struct curl_conn *c, long code, int err)
{
	const char *reason = c->x.reason[0] ? c->x.reason : curl_reason(code);

	nd_error("%s: HTTP %ld%s%s%s", c->label, code, reason[0] ? " " : "",
		 reason,
		 code == 401 ? " (wrong or missing username/password)" : "");
	return -err;
}

/* libcurl's own log, minus credentials, line by line into nd_debug.
 * Authorization and Cookie values can show up in any kind of line (the
 * HTTP/2 code logs its headers as text: "h2h3 [authorization: ...]"), and
 * the FTP password in "PASS ...". Return how much of LINE may be shown
 * before "***", or the whole length when nothing is secret. */
static size_t curl_secret_cut(const char *line, size_t n)
{
	static const char *const marks[] = {"authorization:", "cookie:", NULL};
	size_t cut = n;

	if (n >= 5 && strncasecmp(line, "PASS ", 5) == 0)
		return 5;
	for (int i = 0; marks[i]; i++) {
		const char *m = strcasestr(line, marks[i]);
		if (m && (size_t)(m - line) + strlen(marks[i]) < cut)
			cut = (m - line) + strlen(marks[i]);
	}
	return cut;
}

static int curl_debug_cb(CURL *h, curl_infotype type, char *data, size_t size,
			 void *ud)
{
	const char *dir, *p = data, *end = data + size;

	(void)h;
	(void)ud;
	switch (type) {
	case CURLINFO_TEXT: dir = "*"; break;
	case CURLINFO_HEADER_IN: dir = "<"; break;
	case CURLINFO_HEADER_OUT: dir = ">"; break;
	default: return 0;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', end - p);
		size_t n = (nl ? nl : end) - p, step = n + (nl ? 1 : 0), cut;
		char line[1024];

		if (n && p[n - 1] == '\r')
			n--;
		if (n >= sizeof line)
			n = sizeof line - 1;
		memcpy(line, p, n);
		line[n] = '\0';
		cut = curl_secret_cut(line, n);
		if (cut < n)
			nd_debug("curl %s %.*s ***", dir, (int)cut, line);
		else if (n)
			nd_debug("curl %s %s", dir, line);
		p += step;
	}
	return 0;
}

/* ---- HTTP ---------------------------------------------------------- */

static size_t curl_header_cb(char *p, size_t sz, size_t n, void *ud)
{
	struct curl_xfer *x = ud;
	size_t len = sz * n;
	char line[256];
	size_t k = len < sizeof line - 1 ? len : sizeof line - 1;

	memcpy(line, p, k);
	line[k] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	if (strncasecmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a redirect or 100): start over. */
		const char *r = strchr(line, ' ');
		x->ranges = false;
		x->range_total = -1;
		x->reason[0] = '\0';
		x->etag[0] = x->last_modified[0] = '\0';
		if (r && (r = strchr(r + 1, ' ')))
			snprintf(x->reason, sizeof x->reason, "%s", r + 1);
	} else if (strncasecmp(line, "etag:", 5) == 0) {
		snprintf(x->etag, sizeof x->etag, "%s", line + 5 + strspn(line + 5, " \t"));
	} else if (strncasecmp(line, "last-modified:", 14) == 0) {
		snprintf(x->last_modified, sizeof x->last_modified, "%s",
			 line + 14 + strspn(line + 14, " \t"));
	} else if (strncasecmp(line, "accept-ranges:", 14) == 0) {
		x->ranges = strcasestr(line + 14, "bytes") != NULL;
	} else if (strncasecmp(line, "content-range:", 14) == 0) {
		const char *slash = strchr(line, '/');
		char *e;
		unsigned long long t;
		if (slash && slash[1] != '*') {
			errno = 0;
			t = strtoull(slash + 1, &e, 10);
			if (errno == 0 && e != slash + 1)
				x->range_total = (int64_t)t;
		}
	}
	return len;
}

static size_t curl_http_write(char *p, size_t sz, size_t n, void *ud)
{
	struct curl_xfer *x = ud;
	size_t len = sz * n;
	long code = 0;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code == 206 || (code == 200 && x->allow_200)) {
		if (len > x->want - x->got) {
			x->overflow = true;
			return 0;
		}
		memcpy(x->dst + x->got, p, len);
		x->got += len;
		return len;
	}
	/* An error page, or a whole file where we wanted a slice. */
	x->junk += len;
	return x->junk > CURL_JUNK_MAX ? 0 : len;
}

/* One request on the HTTP handle; the status is left in *code. */
static CURLcode curl_http_perform(struct curl_conn *c, const char *range,
				  void *buf, size_t len, bool allow_200,
				  long *code)
{
	struct curl_xfer *x = &c->x;
	CURLcode rc;

	x->dst = buf;
	x->want = len;
	x->got = 0;
	x->junk = 0;
	x->allow_200 = allow_200;
	x->overflow = false;
	x->ranges = false;
	x->range_total = -1;
	x->reason[0] = '\0';
	x->etag[0] = x->last_modified[0] = '\0';
	c->errbuf[0] = '\0';
	curl_easy_setopt(c->easy, CURLOPT_RANGE, range);
	rc = curl_easy_perform(c->easy);
	*code = 0;
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, code);
	return rc;
}

/* Size from HEAD; without Accept-Ranges, a one-byte ranged GET must come
 * back 206 (its Content-Range also gives the size). */
static int curl_http_size(struct curl_conn *c)
{
	curl_off_t len = -1;
	long code;
	char byte;
	CURLcode rc;

	curl_easy_setopt(c->easy, CURLOPT_NOBODY, 1L);
	rc = curl_http_perform(c, NULL, NULL, 0, false, &code);
	curl_easy_setopt(c->easy, CURLOPT_HTTPGET, 1L);
	if (rc != CURLE_OK)
		return curl_fail(c, c->errbuf, rc,
				 curl_transient(rc) ? ENOTCONN : EIO);
	if (code >= 200 && code < 300) {
		curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
				  &len);
		if (len >= 0 && c->x.ranges) {
			c->size = len;
			return 0;
		}
	} else if (code != 403 && code != 405 && code != 501) {
		/* 403/405/501: some servers (signed URLs) refuse HEAD only. */
		return curl_status_fail(c, code,
					code == 404 || code == 410   ? ENOENT
					: code == 401 || code == 403 ? EACCES
					: code >= 500 || code == 429 ? ENOTCONN
								     : EIO);
	}

	rc = curl_http_perform(c, "0-0", &byte, 1, false, &code);
	if (rc != CURLE_OK && rc != CURLE_WRITE_ERROR)
		return curl_fail(c, c->errbuf, rc,
				 curl_transient(rc) ? ENOTCONN : EIO);
	if (code == 206 && c->x.range_total >= 0) {
		c->size = c->x.range_total;
		return 0;
	}
	if (code == 206) {
		nd_error(
		    "%s: the server answered a byte range without the file's size (Content-Range: bytes 0-0/*)",
		    c->label);
		return -EIO;
	}
	if (code == 200) {
		nd_error(
		    "%s: the server does not support byte ranges (it answered a Range request with the whole file); netdiskfs needs them",
		    c->label);
		return -EOPNOTSUPP;
	}
	if (code == 416 && len == 0) {
		c->size = 0;
		return 0;
	}
	return curl_status_fail(c, code,
				code == 404 || code == 410   ? ENOENT
				: code == 401 || code == 403 ? EACCES
				: code >= 500 || code == 429 ? ENOTCONN
							     : EIO);
}

/* The object's validator from the size probe's response: a strong ETag,
 * else Last-Modified (a weak ETag may not go into If-Range). Ranged GETs
 * then carry If-Range, so a changed object answers 200, never a 206 of
 * its new bytes mixed with our old ones. */
static int curl_http_validator(struct curl_conn *c)
{
	const struct curl_xfer *x = &c->x;
	char *h = NULL;
	c->validator_is_etag = x->etag[0] && strncmp(x->etag, "W/", 2) != 0;
	snprintf(c->validator, sizeof c->validator, "%s",
		 c->validator_is_etag ? x->etag : x->last_modified);
	if (!c->validator[0])
		return 0;
	if (asprintf(&h, "If-Range: %s", c->validator) < 0 ||
	    !(c->if_range = curl_slist_append(NULL, h))) {
		free(h);
		return -ENOMEM;
	}
	free(h);
	curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->if_range);
	return 0;
}

/* Did the last response come from another version of the object? A 200
 * to a ranged GET with If-Range says so; so does a validator that
 * differs (a server that ignores If-Range). */
static bool curl_http_changed(const struct curl_conn *c, long code, bool whole)
{
	const char *now = c->validator_is_etag ? c->x.etag : c->x.last_modified;
	if (!c->validator[0] || code < 200 || code >= 300)
		return false;
	if (code == 200 && !whole)
		return true;
	return now[0] && strcmp(now, c->validator) != 0;
}

static int curl_http_pread(struct curl_conn *c, void *buf, size_t len,
			   uint64_t off)
{
	char range[48];
	long code;
	bool whole = off == 0 && len == c->size;
	CURLcode rc;

	snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, off,
		 off + len - 1);
	rc = curl_http_perform(c, range, buf, len, whole, &code);
	if (curl_http_changed(c, code, whole)) {
		nd_error("%s: the object changed on the server (validator %s, "
			 "was %s)",
			 c->label,
			 (c->validator_is_etag ? c->x.etag : c->x.last_modified)[0]
			     ? (c->validator_is_etag ? c->x.etag
						     : c->x.last_modified)
			     : "-",
			 c->validator);
		return -ESTALE;
	}
	if (c->x.overflow) {
		nd_error(
		    "%s: the server sent more than the %zu bytes asked for at offset %" PRIu64,
		    c->label, len, off);
		return -EIO;
	}
	if (rc != CURLE_OK && rc != CURLE_WRITE_ERROR)
		return curl_fail(c, c->errbuf, rc,
				 curl_transient(rc) ? ENOTCONN : EIO);
	if (code == 206 || (code == 200 && whole)) {
		if (rc == CURLE_OK && c->x.got == len)
			return 0;
		nd_error(
		    "%s: the server sent %zu of the %zu bytes asked for at offset %" PRIu64
		    " (did the file change?)",
		    c->label, c->x.got, len, off);
		return -EIO;
	}
	if (code == 429) {
		curl_off_t after = 0;
		curl_easy_getinfo(c->easy, CURLINFO_RETRY_AFTER, &after);
		if (after > 0)
			nd_sleep_s(after < c->timeout ? (double)after
						      : c->timeout);
		return curl_status_fail(c, code, EAGAIN);
	}
	if (code >= 500)
		return curl_status_fail(c, code, EAGAIN);
	if (code == 200) {
		nd_error(
		    "%s: the server ignored the byte range at offset %" PRIu64
		    " and sent the whole file",
		    c->label, off);
		return -EIO;
	}
	return curl_status_fail(c, code, EIO);
}

/* ---- FTP streams --------------------------------------------------- */

static size_t curl_stream_write(char *p, size_t sz, size_t n, void *ud)
{
	struct curl_stream *s = ud;
	size_t len = sz * n, used, k;

	if (!s->dst || (s->discard == 0 && s->got == s->want)) {
		/* Nobody asked for it yet: libcurl keeps it and stops. */
		s->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	used = s->discard < len ? (size_t)s->discard : len;
	s->discard -= used;
	k = len - used < s->want - s->got ? len - used : s->want - s->got;
	memcpy(s->dst + s->got, p + used, k);
	s->got += k;
	used += k;
	if (used < len) {
		/* The read is complete: keep the rest of this chunk. */
		size_t rest = len - used;
		if (rest > s->left_cap) {
			char *nb = realloc(s->left, rest);
			if (!nb)
				return 0;
			s->left = nb;
			s->left_cap = rest;
		}
		memcpy(s->left, p + used, rest);
		s->left_start = 0;
		s->left_len = rest;
	}
	s->net_pos += len;
	return len;
}

static int curl_stream_handle(struct curl_stream *s)
{
	struct curl_conn *c = s->c;

	pthread_mutex_lock(&c->dup_lock);
	s->easy = curl_easy_duphandle(c->easy);
	pthread_mutex_unlock(&c->dup_lock);
	if (!s->easy) {
		nd_error("%s: cannot copy a curl handle", c->label);
		return -ENOMEM;
	}
	curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, curl_stream_write);
	curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
	/* Stalls are timed by curl_stream_pump: a stream sits idle between
	 * reads, which libcurl's speed check would take for a stall. */
	curl_easy_setopt(s->easy, CURLOPT_LOW_SPEED_TIME, 0L);
	return 0;
}

/* Abandon the current transfer (libcurl drops the FTP connection). */
static void curl_stream_stop(struct curl_stream *s)
{
	if (s->running) {
		curl_multi_remove_handle(s->multi, s->easy);
		s->running = false;
	}
	if (s->paused) {
		/* A fresh handle: nothing of the old transfer lingers. */
		curl_easy_cleanup(s->easy);
		s->paused = false;
		if (curl_stream_handle(s) < 0)
			s->easy = NULL;
	}
	s->left_len = 0;
	s->left_start = 0;
}

static int curl_stream_new(struct curl_conn *c, struct curl_stream **out)
{
	struct curl_stream *s = &c->streams[c->nstreams];

	memset(s, 0, sizeof *s);
	s->c = c;
	s->multi = curl_multi_init();
	if (!s->multi) {
		nd_error("%s: cannot create a curl multi handle", c->label);
		return -ENOMEM;
	}
	if (curl_stream_handle(s) < 0) {
		curl_multi_cleanup(s->multi);
		return -ENOMEM;
	}
	c->nstreams++;
	*out = s;
	return 0;
}

static void curl_stream_free(struct curl_stream *s)
{
	curl_stream_stop(s);
	if (s->easy)
		curl_easy_cleanup(s->easy);
	curl_multi_cleanup(s->multi);
	free(s->left);
}

static int curl_stream_start(struct curl_stream *s, uint64_t at)
{
	CURLMcode mc;

	curl_stream_stop(s);
	if (!s->easy && curl_stream_handle(s) < 0)
		return -ENOMEM;
	s->net_pos = at;
	s->result = CURLE_OK;
	s->errbuf[0] = '\0';
	curl_easy_setopt(s->easy, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)at);
	mc = curl_multi_add_handle(s->multi, s->easy);
	if (mc != CURLM_OK) {
		nd_error("%s: %s", s->c->label, curl_multi_strerror(mc));
		return -EIO;
	}
	s->running = true;
	return 0;
}

static void curl_stream_reap(struct curl_stream *s)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(s->multi, &left)))
		if (m->msg == CURLMSG_DONE && m->easy_handle == s->easy) {
			s->result = m->data.result;
			curl_multi_remove_handle(s->multi, s->easy);
			s->running = false;
		}
}

/* Drive the transfer until the read is served (or, with whole, until it
 * ends). 0, or -1 with the reason in s->result (CURLE_OK: it ended). Gives
 * up after `limit` seconds without a byte. */
static int curl_stream_pump(struct curl_stream *s, bool whole, double limit)
{
	double last = nd_mono_s();
	uint64_t seen = s->net_pos;

	for (;;) {
		int n;
		CURLMcode mc = curl_multi_perform(s->multi, &n);

		if (mc != CURLM_OK) {
			snprintf(s->errbuf, sizeof s->errbuf, "%s",
				 curl_multi_strerror(mc));
			s->result = CURLE_RECV_ERROR;
			curl_stream_stop(s);
			return -1;
		}
		curl_stream_reap(s);
		if (whole ? !s->running : s->got == s->want)
			return whole && s->result != CURLE_OK ? -1 : 0;
		if (!s->running)
			return -1;
		if (s->net_pos != seen) {
			seen = s->net_pos;
			last = nd_mono_s();
		} else if (nd_mono_s() - last > limit) {
			snprintf(s->errbuf, sizeof s->errbuf,
				 "no answer from the server for %.1f s", limit);
			s->result = CURLE_OPERATION_TIMEDOUT;
			curl_stream_stop(s);
			return -1;
		}
		curl_multi_poll(s->multi, NULL, 0, 200, NULL);
	}
}

/* How far ahead of a stream a read of LEN bytes is still read over rather
 * than started afresh. */
static uint64_t curl_slack(size_t len)
{
	return 4 * (uint64_t)len > CURL_SKIP_MAX ? 4 * (uint64_t)len
						 : CURL_SKIP_MAX;
}

/* Serve one read from stream S, which this thread owns for now. */
static int curl_stream_read(struct curl_conn *c, struct curl_stream *s,
			    char *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	int tries = 0;

	if (s->left_len) {
		uint64_t lpos = s->net_pos - s->left_len;
		if (off >= lpos && off < s->net_pos) {
			size_t skip = off - lpos;
			size_t k =
			    s->left_len - skip < len ? s->left_len - skip : len;
			memcpy(buf, s->left + s->left_start + skip, k);
			s->left_start += skip + k;
			s->left_len -= skip + k;
			got = k;
		} else {
			s->left_len = 0;
		}
		if (!s->left_len)
			s->left_start = 0;
	}
	while (got < len) {
		uint64_t at = off + got;
		bool fresh = false;
		CURLcode rc;

		if (!s->running || at < s->net_pos ||
		    at - s->net_pos > curl_slack(len)) {
			int r = curl_stream_start(s, at);
			if (r < 0)
				return r;
			fresh = true;
		}
		s->dst = buf;
		s->want = len;
		s->got = got;
		s->discard = at - s->net_pos;
		if (s->paused) {
			s->paused = false;
			curl_easy_pause(s->easy, CURLPAUSE_CONT);
		}
		if (curl_stream_pump(s, false, c->timeout) == 0) {
			s->dst = NULL;
			return 0;
		}
		s->dst = NULL;
		rc = s->result;
		if (rc == CURLE_OK) {
			nd_error("%s: the file ended at offset %" PRIu64
				 ", before the %zu bytes asked for at %" PRIu64
				 " (did it change?)",
				 c->label, s->net_pos, len, off);
			return -EIO;
		}
		/* A stream left idle may have been closed by the server:
		 * one more try on a fresh RETR before reporting. */
		if (!fresh && curl_transient(rc) && tries++ == 0) {
			got = s->got;
			curl_stream_stop(s);
			continue;
		}
		curl_stream_stop(s);
		return curl_fail(c, s->errbuf, rc,
				 curl_transient(rc) ? EAGAIN : EIO);
	}
	return 0;
}

/* Under c->lock: the stream a read of LEN bytes at OFF should use, or NULL
 * to wait. Readahead sends a sequential reader's windows in parallel and
 * not always in order; a stream takes every read at or after the one it
 * serves now and not far past the last one queued, and serves them lowest
 * offset first, so they all come out of one RETR. */
static int curl_stream_pick(struct curl_conn *c, uint64_t off, size_t len,
			    struct curl_stream **out)
{
	uint64_t slack = curl_slack(len), best_gap = UINT64_MAX;
	struct curl_stream *best = NULL;
	unsigned i;

	*out = NULL;
	for (i = 0; i < c->nstreams; i++) {
		struct curl_stream *s = &c->streams[i];
		bool open = s->busy || s->running || s->left_len;
		uint64_t gap = off > s->max_end ? off - s->max_end : 0;
		if (off < s->end || gap > slack || (!open && off != s->end))
			continue;
		if (gap < best_gap) {
			best = s;
			best_gap = gap;
		}
	}
	if (best) {
		*out = best;
		return 0;
	}
	if (c->nstreams < c->max_streams)
		return curl_stream_new(c, out);
	for (i = 0; i < c->nstreams; i++) {
		struct curl_stream *s = &c->streams[i];
		if (!s->busy && (!best || s->last_use < best->last_use))
			best = s;
	}
	*out = best;
	return 0;
}

static int curl_ftp_pread(struct curl_conn *c, void *buf, size_t len,
			  uint64_t off)
{
	struct curl_waiter me = {NULL, off, off + len};
	struct curl_stream *s;
	int r;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		r = curl_stream_pick(c, off, len, &s);
		if (r < 0 || s)
			break;
		pthread_cond_wait(&c->cond, &c->lock);
	}
	if (r < 0) {
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	if (!s->busy) {
		s->busy = true;
		s->owner = &me;
		s->end = me.end;
		s->max_end = me.end;
	} else {
		struct curl_waiter **w = &s->waiters;
		while (*w && (*w)->off <= off)
			w = &(*w)->next;
		me.next = *w;
		*w = &me;
		if (me.end > s->max_end)
			s->max_end = me.end;
	}
	while (s->owner != &me)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);

	r = curl_stream_read(c, s, buf, len, off);

	pthread_mutex_lock(&c->lock);
	s->last_use = ++c->clock;
	if (s->waiters) {
		s->owner = s->waiters;
		s->waiters = s->owner->next;
		s->end = s->owner->end;
	} else {
		s->busy = false;
		s->owner = NULL;
		s->max_end = s->end;
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* SIZE through the first stream, so its first RETR reuses the login. */
static int curl_ftp_size(struct curl_conn *c)
{
	struct curl_stream *s;
	curl_off_t len = -1;
	long ms = (long)(c->timeout * 2000);
	int r;

	r = curl_stream_new(c, &s);
	if (r < 0)
		return r;
	curl_easy_setopt(s->easy, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(s->easy, CURLOPT_FILETIME, 1L);
	curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, ms);
	if (curl_multi_add_handle(s->multi, s->easy) != CURLM_OK) {
		nd_error("%s: cannot start a curl transfer", c->label);
		return -EIO;
	}
	s->running = true;
	r = curl_stream_pump(s, true, c->timeout * 2);
	curl_easy_setopt(s->easy, CURLOPT_NOBODY, 0L);
	curl_easy_setopt(s->easy, CURLOPT_FILETIME, 0L);
	curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, 0L);
	if (r < 0)
		return curl_fail(c, s->errbuf, s->result,
				 s->result == CURLE_REMOTE_FILE_NOT_FOUND
				     ? ENOENT
				 : s->result == CURLE_LOGIN_DENIED ? EACCES
				 : curl_transient(s->result)	   ? ENOTCONN
								   : EIO);
	curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
	if (len < 0) {
		nd_error("%s: the server did not tell the file's size (SIZE)",
			 c->label);
		return -EIO;
	}
	c->size = len;
	/* FTP has no ETag: the size and the MDTM time stand for the version. */
	curl_off_t mdtm = -1;
	curl_easy_getinfo(s->easy, CURLINFO_FILETIME_T, &mdtm);
	snprintf(c->validator, sizeof c->validator, "size=%" PRIu64 ",mdtm=%lld",
		 c->size, (long long)mdtm);
	s->end = s->max_end = 0;
	s->net_pos = 0;
	return 0;
}

/* ---- open / close -------------------------------------------------- */

static void curl_close(void *conn)
{
	struct curl_conn *c = conn;

	if (!c)
		return;
	for (unsigned i = 0; i < c->nstreams; i++)
		curl_stream_free(&c->streams[i]);
	free(c->streams);
	if (c->easy)
		curl_easy_cleanup(c->easy);
	curl_slist_free_all(c->if_range);
	if (c->locks_ready) {
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->dup_lock);
		pthread_cond_destroy(&c->cond);
	}
	free(c->label);
	free(c);
}

/* The URL libcurl should fetch (its scheme is the driver: curl-url.c
 * checked url= against driver=), for explicit FTPS turned into ftp://
 * with AUTH TLS required (*explicit_tls). */
static int curl_url_for(const struct nd_opts *o, const char *url,
			char **out, bool *explicit_tls)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *port = NULL;
	const char *mode = nd_opt_get(o, "ftps-mode");
	int r = -EINVAL;

	*out = NULL;
	*explicit_tls = false;
	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) !=
		CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
		nd_error("url: not a valid URL");
		goto out;
	}
	if (mode && strcmp(mode, "auto") && strcmp(mode, "implicit") &&
	    strcmp(mode, "explicit")) {
		nd_error(
		    "ftps-mode: expected auto, implicit or explicit, not '%s'",
		    mode);
		goto out;
	}
	if (strcasecmp(scheme, "ftps") == 0) {
		/* auto: implicit TLS on port 990 (the ftps:// default, as
		 * QEMU does), explicit AUTH TLS on any other port. Without a
		 * port, explicit TLS goes to ftp's port 21. */
		bool has_port =
		    curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK;
		if (mode && strcmp(mode, "auto"))
			*explicit_tls = strcmp(mode, "explicit") == 0;
		else
			*explicit_tls = has_port && strcmp(port, "990") != 0;
	}
	if (*explicit_tls) {
		char *rewritten = NULL;
		curl_url_set(u, CURLUPART_SCHEME, "ftp", 0);
		if (curl_url_get(u, CURLUPART_URL, &rewritten, 0) !=
		    CURLUE_OK) {
			nd_error("url: cannot rewrite it for explicit TLS");
			goto out;
		}
		*out = strdup(rewritten);
		curl_free(rewritten);
		if (!*out) {
			r = -ENOMEM;
			goto out;
		}
	} else {
		*out = strdup(url);
		if (!*out) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = 0;
out:
	curl_free(scheme);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

#define CURL_SET(opt, val)                                                     \
	do {                                                                   \
		CURLcode rc_ = curl_easy_setopt(c->easy, opt, val);            \
		if (rc_ != CURLE_OK) {                                         \
			r = curl_fail(c, NULL, rc_, EINVAL);                   \
			goto out;                                              \
		}                                                              \
	} while (0)

/* Every option of the handle, from the entry's set. */
static int curl_configure(struct curl_conn *c, const struct nd_opts *o,
			  const char *url, bool explicit_tls)
{
	char *user_pw = NULL, *cookie = NULL;
	const char *user = nd_opt_get(o, "username");
	const char *v;
	bool verify;
	long secs = (long)ceil(c->timeout);
	int r = 0;

	if (nd_opt_bool(o, "sslverify", true, &verify) < 0)
		return -EINVAL;
	if (nd_opt_secret(o, "password", &user_pw) < 0 ||
	    nd_opt_secret(o, "cookie", &cookie) < 0) {
		r = -EINVAL;
		goto out;
	}
	CURL_SET(CURLOPT_ERRORBUFFER, c->errbuf);
	CURL_SET(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
	CURL_SET(CURLOPT_PROTOCOLS_STR, CURL_PROTOCOLS);
	CURL_SET(CURLOPT_REDIR_PROTOCOLS_STR, CURL_PROTOCOLS);
#else
	CURL_SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS |
					   CURLPROTO_FTP | CURLPROTO_FTPS));
	CURL_SET(CURLOPT_REDIR_PROTOCOLS,
		 (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS | CURLPROTO_FTP |
			CURLPROTO_FTPS));
#endif
	CURL_SET(CURLOPT_FOLLOWLOCATION, 1L);
	CURL_SET(CURLOPT_MAXREDIRS, 10L);
	CURL_SET(CURLOPT_NOSIGNAL, 1L);
	CURL_SET(CURLOPT_USERAGENT, "netdiskfs libcurl/" LIBCURL_VERSION);
	CURL_SET(CURLOPT_BUFFERSIZE, (long)CURL_BUFFER_SIZE);
	CURL_SET(CURLOPT_TCP_KEEPALIVE, 1L);
#if defined(__x86_64__) && defined(CURLOPT_TLS13_CIPHERS)
	/* With AES instructions AES-128-GCM costs both ends about a third
	 * less than OpenSSL's first choice AES-256-GCM; same suites, new
	 * order. Only a preference: a TLS library without it ignores it. */
	__builtin_cpu_init();
	if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul"))
		(void)curl_easy_setopt(c->easy, CURLOPT_TLS13_CIPHERS,
				       "TLS_AES_128_GCM_SHA256:"
				       "TLS_AES_256_GCM_SHA384:"
				       "TLS_CHACHA20_POLY1305_SHA256");
#endif
	/* timeout bounds the connect and every wait for the server's next
	 * byte, never a whole (large) transfer. */
	CURL_SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(c->timeout * 1000));
	CURL_SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	CURL_SET(CURLOPT_LOW_SPEED_TIME, secs);
	CURL_SET(CURLOPT_SERVER_RESPONSE_TIMEOUT, secs);
	if (user)
		CURL_SET(CURLOPT_USERNAME, user);
	if (user_pw) {
		if (!user)
			CURL_SET(CURLOPT_USERNAME, "");
		CURL_SET(CURLOPT_PASSWORD, user_pw);
	}
	if (c->kind == CURL_KIND_HTTP) {
		CURL_SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		CURL_SET(CURLOPT_HEADERFUNCTION, curl_header_cb);
		CURL_SET(CURLOPT_HEADERDATA, &c->x);
		CURL_SET(CURLOPT_WRITEFUNCTION, curl_http_write);
		CURL_SET(CURLOPT_WRITEDATA, &c->x);
		if (cookie)
			CURL_SET(CURLOPT_COOKIE, cookie);
	} else if (cookie) {
		nd_debug("%s: cookie ignored: FTP has no cookies", c->label);
	}
	if (!verify) {
		CURL_SET(CURLOPT_SSL_VERIFYPEER, 0L);
		CURL_SET(CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if ((v = nd_opt_get(o, "cainfo")))
		CURL_SET(CURLOPT_CAINFO, v);
	if ((v = nd_opt_get(o, "capath")))
		CURL_SET(CURLOPT_CAPATH, v);
	if ((v = nd_opt_get(o, "proxy")))
		CURL_SET(CURLOPT_PROXY, v);
	if (explicit_tls)
		CURL_SET(CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
	if (c->kind == CURL_KIND_FTP &&
	    (explicit_tls || strncasecmp(url, "ftps:", 5) == 0)) {
		/* libcurl 7.88 does not resume the TLS session on the data
		 * connection of a second transfer over a kept FTPS control
		 * connection, and servers that require that (vsftpd) then
		 * close the data connection: log in afresh each RETR.
		 * (FORBID_REUSE would do too, but leaks in libcurl.) */
		CURL_SET(CURLOPT_FRESH_CONNECT, 1L);
	}
	if (nd_debug_enabled) {
		CURL_SET(CURLOPT_DEBUGFUNCTION, curl_debug_cb);
		CURL_SET(CURLOPT_VERBOSE, 1L);
	}
out:
	nd_secret_free(user_pw);
	nd_secret_free(cookie);
	return r;
}

static int curl_open(const struct nd_opts *o, const struct nd_settings *s,
		     void **conn, struct nd_info *info)
{
	const char *url = nd_opt_get(o, "url");
	char *fetch = NULL;
	bool explicit_tls;
	struct curl_conn *c;
	int r;

	*conn = NULL;
	pthread_once(&curl_once, curl_global);
	if (curl_init_rc != CURLE_OK) {
		nd_error("libcurl: %s", curl_easy_strerror(curl_init_rc));
		return -EIO;
	}
	if (!url) {
		nd_error("the curl driver needs url=");
		return -EINVAL;
	}
	c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	/* curl-url.c made the URL's scheme the driver: ftp(s) or http(s). */
	c->kind =
	    strncasecmp(url, "ftp", 3) == 0 ? CURL_KIND_FTP : CURL_KIND_HTTP;
	/* The core names the entry in front of every message. */
	c->label = nd_redact(url);
	if (!c->label) {
		r = -ENOMEM;
		goto fail;
	}
	c->timeout = s->timeout;
	if (c->timeout > 86400) {
		nd_error(
		    "timeout: must be more than 0 and at most 86400 seconds");
		r = -EINVAL;
		goto fail;
	}
	r = curl_url_for(o, url, &fetch, &explicit_tls);
	if (r < 0)
		goto fail;
	c->easy = curl_easy_init();
	if (!c->easy) {
		nd_error("cannot create a curl handle");
		r = -ENOMEM;
		goto fail;
	}
	c->x.easy = c->easy;
	r = curl_configure(c, o, fetch, explicit_tls);
	if (r < 0)
		goto fail;

	if (c->kind == CURL_KIND_HTTP) {
		r = curl_http_size(c);
		if (r == 0)
			r = curl_http_validator(c);
	} else {
		c->max_streams = s->connections;
		c->streams = calloc(c->max_streams, sizeof *c->streams);
		if (!c->streams) {
			r = -ENOMEM;
			goto fail;
		}
		pthread_mutex_init(&c->lock, NULL);
		pthread_mutex_init(&c->dup_lock, NULL);
		pthread_cond_init(&c->cond, NULL);
		c->locks_ready = true;
		r = curl_ftp_size(c);
	}
	if (r < 0)
		goto fail;

	memset(info, 0, sizeof *info);
	info->size = c->size;
	info->read_only = true;
	info->can_multi_conn = true;
	/* FTP: one shared object owns the streams and locks them itself. */
	/* Each request costs a GET or a trip through a stream's queue: 2 MiB
	 * readahead requests read about twice as fast as 256 KiB ones. */
	info->opt_request = 2u << 20;
	info->thread_safe = c->kind == CURL_KIND_FTP;
	info->max_connections = c->kind == CURL_KIND_FTP ? 1 : 0;
	snprintf(info->validator, sizeof info->validator, "%s", c->validator);
	nd_debug("%s: size %" PRIu64 ", validator %s%s", c->label, c->size,
		 c->validator[0] ? c->validator : "none",
		 explicit_tls ? ", explicit TLS (AUTH TLS)" : "");
	free(fetch);
	*conn = c;
	return 0;
fail:
	free(fetch);
	curl_close(c);
	return r;
}

static int curl_pread(void *conn, void *buf, size_t len, uint64_t off)
{
	struct curl_conn *c = conn;

	if (len == 0)
		return 0;
	if (c->kind == CURL_KIND_HTTP)
		return curl_http_pread(c, buf, len, off);
	return curl_ftp_pread(c, buf, len, off);
}

static int curl_pwrite(void *conn, const void *buf, size_t len, uint64_t off)
{
	struct curl_conn *c = conn;

	(void)buf;
	(void)len;
	(void)off;
	nd_error("%s: http(s) and ftp(s) disks are read-only", c->label);
	return -EROFS;
}

static void curl_shutdown(void)
{
	if (curl_inited) {
		curl_global_cleanup();
		curl_inited = false;
	}
}

static const char *const curl_drivers[] = {"http", "https", "ftp", "ftps",
					   NULL};

static const struct nd_optdesc curl_options[] = {
    {"url", ND_OPT_STRING, NULL, false,
     "the file's URL (http, https, ftp, ftps)"},
    {"username", ND_OPT_STRING, NULL, false, "user name for the server"},
    {"password", ND_OPT_STRING, NULL, true, "password (better: password-file)"},
    {"password-file", ND_OPT_FILE, NULL, false,
     "file whose first line is the password"},
    {"sslverify", ND_OPT_BOOL, "on", false,
     "verify the server's TLS certificate"},
    {"cookie", ND_OPT_STRING, NULL, true,
     "cookie(s) sent with HTTP(S) requests, ';'-separated"},
    {"cookie-file", ND_OPT_FILE, NULL, false,
     "file whose first line is the cookie"},
    {"cainfo", ND_OPT_FILE, NULL, false,
     "CA certificate bundle to verify the server with"},
    {"capath", ND_OPT_FILE, NULL, false, "directory of CA certificates"},
    {"proxy", ND_OPT_STRING, NULL, false,
     "proxy URL (default: the *_proxy environment)"},
    {"ftps-mode", ND_OPT_STRING, "auto", false,
     "ftps: auto (implicit on port 990), implicit, explicit"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};

static const struct nd_backend curl_backend = {
    .name = "curl",
    .drivers = curl_drivers,
    .schemes = curl_drivers,
    .description = "read-only files over HTTP, HTTPS, FTP and FTPS (libcurl)",
    .options = curl_options,
    .open = curl_open,
    .close = curl_close,
    .pread = curl_pread,
    .pwrite = curl_pwrite,
    .shutdown = curl_shutdown,
};

ND_BACKEND_REGISTER(curl_backend);
