/* log.c: one place for messages: stderr in the foreground, syslog when
 * daemonised; the thread-local error slot. Both pass every message through
 * nd_redact (secret.c), so no caller can leak a secret by forgetting to. */
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
	/* Whatever a caller passed, no secret reaches a log. */
	char *clean = nd_redact(msg);
	const char *out = clean ? clean : "(message withheld: out of memory)";
	if (log_foreground) {
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "%s: %s%s\n", log_prog, prio_name(priority),
			out);
		pthread_mutex_unlock(&log_lock);
	} else {
		syslog(priority, "%s", out);
	}
	free(clean);
	explicit_bzero(msg, sizeof msg);
	errno = saved;
}

void nd_error(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	char msg[sizeof err_buf];
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* Redacted once here: the slot is copied into last_error, the
	 * status file and log lines. */
	char *clean = nd_redact(msg);
	snprintf(err_buf, sizeof err_buf, "%s",
		 clean ? clean : "(error withheld: out of memory)");
	free(clean);
	explicit_bzero(msg, sizeof msg);
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
