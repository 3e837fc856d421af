/* log.c: one place for messages: stderr in the foreground, syslog when
 * daemonised; the thread-local error slot; redaction of credentials. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

bool nd_debug_enabled;
bool nd_verbose;
static bool log_foreground = true;
static const char *log_prog = "netdiskfs";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread char err_buf[1024];

void nd_log_init(const char *progname, bool foreground)
{
	log_prog = progname;
	log_foreground = foreground;
	if (!foreground)
		openlog(progname, LOG_PID, LOG_DAEMON);
}

static const char *prio_name(int p)
{
	switch (p) {
	case LOG_ERR: return "error: ";
	case LOG_WARNING: return "warning: ";
	case LOG_DEBUG: return "debug: ";
	default: return "";
	}
}

void nd_log(int priority, const char *fmt, ...)
{
	int saved = errno;
	char msg[2048];
	va_list ap;

	if (priority == LOG_INFO && !nd_verbose && !nd_debug_enabled)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* Whatever a caller passed, no URL password reaches a log. */
	char *clean = strstr(msg, "://") ? nd_redact(msg) : NULL;
	const char *out = clean ? clean : msg;
	if (log_foreground) {
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "%s: %s%s\n", log_prog, prio_name(priority),
			out);
		pthread_mutex_unlock(&log_lock);
	} else {
		syslog(priority, "%s", out);
	}
	free(clean);
	errno = saved;
}

void nd_error(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err_buf, sizeof err_buf, fmt, ap);
	va_end(ap);
	if (nd_debug_enabled)
		nd_log(LOG_DEBUG, "%s", err_buf);
	errno = saved;
}

const char *nd_get_error(void)
{
	return err_buf[0] ? err_buf : "unknown error";
}

void nd_clear_error(void)
{
	err_buf[0] = 0;
}

/* Replace the password in every "scheme://user:pass@" and iSCSI's
 * "user%pass@" with ***. The string may be a whole URL or a message. */
char *nd_redact(const char *s)
{
	size_t len = strlen(s);
	char *out = malloc(len * 2 + 8), *o = out;
	const char *p = s;

	if (!out)
		return NULL;
	while (*p) {
		const char *sep = strstr(p, "://");
		if (!sep) {
			strcpy(o, p);
			return out;
		}
		sep += 3;
		memcpy(o, p, sep - p);
		o += sep - p;
		p = sep;
		/* userinfo ends at the last '@' before the next '/', space
		 * or end of the authority. */
		const char *end = p + strcspn(p, "/ \t\"'?#");
		const char *at = NULL;
		for (const char *q = p; q < end; q++)
			if (*q == '@')
				at = q;
		if (at) {
			const char *colon = memchr(p, ':', at - p);
			const char *pct = memchr(p, '%', at - p);
			const char *cut = colon ? colon : NULL;
			/* iscsi://user%pass@ (QEMU's syntax). */
			if (!cut && pct && strncmp(s, "iscsi", 5) == 0)
				cut = pct;
			if (!cut && pct && o - out >= 8 &&
			    strncmp(o - 8, "iscsi://", 8) == 0)
				cut = pct;
			if (cut) {
				memcpy(o, p, cut + 1 - p);
				o += cut + 1 - p;
				strcpy(o, "***");
				o += 3;
				p = at;
			}
		}
	}
	*o = 0;
	return out;
}
