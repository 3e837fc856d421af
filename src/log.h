/* log.h: messages and the thread-local error slot. Both redact secrets
 * (secret.h) on their way in. */
#ifndef ND_LOG_H
#define ND_LOG_H

#include <stdbool.h>
#include <syslog.h>

#include "secret.h"

#define ND_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Set by -d / -o debug; backends check it before expensive debug work. */
extern bool nd_debug_enabled;
/* -v: informational messages too. */
extern bool nd_verbose;

void nd_log_init(const char *progname, bool foreground);
void nd_log(int priority, const char *fmt, ...) ND_PRINTF(2, 3);
#define nd_warn(...) nd_log(LOG_WARNING, __VA_ARGS__)
#define nd_info(...) nd_log(LOG_INFO, __VA_ARGS__)
#define nd_debug(...)                                                         \
	do {                                                                  \
		if (nd_debug_enabled)                                         \
			nd_log(LOG_DEBUG, __VA_ARGS__);                       \
	} while (0)

/* Record why the current operation failed (printf-like, %m aware). errno is
 * preserved, so `nd_error(...); return -errno;` works. The message lives in
 * a thread-local buffer until the next nd_error on the same thread. */
void nd_error(const char *fmt, ...) ND_PRINTF(1, 2);
const char *nd_get_error(void);
void nd_clear_error(void);

#endif
