/* clock.h: the one place that reads the clocks. Durations and deadlines
 * use the monotonic clock (a wall-clock step must not fire or stretch a
 * timeout); the wall clock only serves absolute waits on conditions that
 * use the default clock. */
#ifndef ND_CLOCK_H
#define ND_CLOCK_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Monotonic time in nanoseconds. */
static inline uint64_t nd_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Monotonic time in milliseconds. */
static inline uint64_t nd_mono_ms(void)
{
	return nd_mono_ns() / 1000000;
}

/* Monotonic time in seconds. */
static inline double nd_mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* T seconds (T >= 0) as a timespec: an absolute time on the clock T was
 * read from, or a duration. */
static inline struct timespec nd_timespec(double t)
{
	struct timespec ts;

	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	return ts;
}

/* The wall-clock time S seconds from now, for pthread_cond_timedwait on
 * a condition with the default clock. */
static inline struct timespec nd_wall_after(double s)
{
	struct timespec ts;
	struct timespec d = nd_timespec(s);

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += d.tv_sec;
	ts.tv_nsec += d.tv_nsec;
	if (ts.tv_nsec >= 1000000000l) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000l;
	}
	return ts;
}

/* Sleep S seconds (nothing if S <= 0), the whole time despite signals. */
static inline void nd_sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = nd_timespec(s);

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* A condition whose timed waits take monotonic deadlines (nd_mono_s). */
static inline void nd_cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

#endif
