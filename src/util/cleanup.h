/* cleanup.h: scope-bound release of heap memory. */
#ifndef ND_CLEANUP_H
#define ND_CLEANUP_H

#include <stdlib.h>

static inline void nd_cleanup_free(void *p)
{
	free(*(void **)p);
}
#define CLEANUP_FREE __attribute__((cleanup(nd_cleanup_free)))

#endif
