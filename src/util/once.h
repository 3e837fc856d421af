/* once.h: the one warn-once registry. open() runs again for every
 * connection and reconnection; a warning about the entry should appear
 * once, not at each. */
#ifndef ND_ONCE_H
#define ND_ONCE_H

#include <stdbool.h>

#include "log.h"

/* True the first time the key (printf-formatted: conventionally
 * "backend/kind/entry") is seen in this process, false after. True also
 * when memory runs out: a repeated warning beats a lost one. */
bool nd_first_time(const char *fmt, ...) ND_PRINTF(1, 2);

#endif
