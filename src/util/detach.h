/* detach.h: run a function in a detached thread. The threads that answer
 * reads from a backend's completion hand their rare slow work (a retry,
 * a reconnect, closing an entry) to such a thread: done where they are, it
 * could wait for themselves. */
#ifndef ND_DETACH_H
#define ND_DETACH_H

#include <pthread.h>
#include <stdbool.h>

/* FN(ARG) in a new detached thread; false when none could start. */
static inline bool nd_detached(void *(*fn)(void *), void *arg)
{
	pthread_attr_t a;
	pthread_t t;
	int r;

	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &a, fn, arg);
	pthread_attr_destroy(&a);
	return r == 0;
}

#endif
