/* once.c: the warn-once registry (once.h). Keys are few (one per entry and
 * kind of warning), so a list searched linearly is enough. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/once.h"

static pthread_mutex_t once_lock = PTHREAD_MUTEX_INITIALIZER;
static char **once_keys;
static size_t once_n;

bool nd_first_time(const char *fmt, ...)
{
	char *key = NULL;
	bool first = true;
	va_list ap;

	va_start(ap, fmt);
	int r = vasprintf(&key, fmt, ap);
	va_end(ap);
	if (r < 0)
		return true;
	pthread_mutex_lock(&once_lock);
	for (size_t i = 0; i < once_n && first; i++)
		first = strcmp(once_keys[i], key) != 0;
	if (first) {
		char **v = realloc(once_keys, (once_n + 1) * sizeof(*v));
		if (v) {
			once_keys = v;
			once_keys[once_n++] = key;
			key = NULL;
		}
	}
	pthread_mutex_unlock(&once_lock);
	free(key);
	return first;
}
