/* cleanup.h: scope-bound release of heap memory and locks. */
#ifndef ND_CLEANUP_H
#define ND_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>

static inline void nd_cleanup_free(void *p)
{
	free(*(void **)p);
}
#define CLEANUP_FREE __attribute__((cleanup(nd_cleanup_free)))

static inline void nd_cleanup_unlock(pthread_mutex_t **m)
{
	if (*m)
		pthread_mutex_unlock(*m);
}
#define ND_CONCAT_(a, b) a##b
#define ND_CONCAT(a, b) ND_CONCAT_(a, b)
/* Lock M until the end of the enclosing scope. */
#define ND_SCOPED_LOCK(m)                                                     \
	__attribute__((cleanup(nd_cleanup_unlock))) pthread_mutex_t *ND_CONCAT( \
		nd_lock_, __LINE__) = (pthread_mutex_lock(m), (m))

#endif
