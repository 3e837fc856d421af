/* loop.c: the FUSE request loop.
 *
 * Like libfuse's multithreaded loop: threads block reading /dev/fuse, the
 * kernel wakes one per request, and a new thread starts when none is left
 * waiting (up to a maximum). One difference: a thread that has just
 * answered a request first watches /dev/fuse for a short while (poll with
 * a zero timeout, yielding the CPU in between) before it blocks. A program
 * reading with O_DIRECT, 4 KiB at a time, sends its next request a few
 * microseconds after each answer; a thread already running picks it up at
 * once, where a sleeping one has to be woken on another CPU first (on a
 * small virtual machine that wake-up was half of the round trip). Only a
 * request answered quickly from the cache is followed by watching: after
 * one left to a backend (a small random read that missed) the program's
 * next request waits for the server's reply, and watching for it only
 * took CPU from the server and the program (4 jobs x QD16 cold random
 * reads: 1.13x without it). One thread watches at a time, never for long,
 * so an idle daemon sleeps and a busy one does not spend CPU on it.
 *
 * Another: at most READERS threads block reading /dev/fuse; the others
 * wait on a condition variable until a reader takes a request and leaves
 * none reading. Only a thread whose last request was answered at once
 * (from the cache, or left to a backend's completion) waits there: with
 * every thread reading, each of those requests woke a different sleeping
 * thread, where two readers take them all. Threads back from a request
 * that kept them waiting (a sequential read waiting for its fetch) read
 * again at once, as before: there the next request is often waiting. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "fuse_ver.h"
#include "loop.h"
#include "util/clock.h"

#define SPIN_NS 100000ull /* watch this long after answering a request */
#define QUICK_NS 20000ull /* ... answered this fast (not a long copy or a
			     wait on the network: nothing to gain there) */
#define CHECK_MS 250	  /* how often the main thread checks for exit */
#define READERS 2	  /* threads reading /dev/fuse at once, at most */

struct loop {
	struct fuse_session *se;
	int fd;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when the loop should end */
	pthread_cond_t park; /* threads not reading wait here */
	pthread_t tid[ND_LOOP_MAX_THREADS];
	unsigned threads, avail, max; /* avail: threads reading */
	unsigned parked;
	atomic_bool watching; /* a thread is watching /dev/fuse */
	bool stop;
	int err;
};

/* Watch for a request for up to SPIN_NS, unless another thread does. */
static void watch(struct loop *l)
{
	if (atomic_exchange(&l->watching, true))
		return;
	struct pollfd p = {.fd = l->fd, .events = POLLIN};
	uint64_t from = nd_mono_ns();
	while (poll(&p, 1, 0) == 0 && nd_mono_ns() - from < SPIN_NS)
		sched_yield();
	atomic_store(&l->watching, false);
}

static void *worker(void *arg);

/* This thread's request is answered by a backend's completion. */
static __thread bool answer_later;

void nd_loop_answer_later(void)
{
	answer_later = true;
}

/* Lock held. */
static void start_thread(struct loop *l)
{
	if (!l->stop && l->threads < l->max &&
	    pthread_create(&l->tid[l->threads], NULL, worker, l) == 0)
		l->threads++;
}

static void free_buf(void *arg)
{
	free(((struct fuse_buf *)arg)->mem);
}

static void *worker(void *arg)
{
	struct loop *l = arg;
	struct fuse_buf buf = {.mem = NULL};
	/* Answered a request quickly: watch for the next one. */
	volatile bool answered = false;
	volatile bool spin = false;

	pthread_setname_np(pthread_self(), "nd-fuse");
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_push(free_buf, &buf);
	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		if (answered && l->avail >= READERS) {
			l->parked++;
			pthread_cond_wait(&l->park, &l->lock);
			l->parked--;
			continue;
		}
		l->avail++;
		pthread_mutex_unlock(&l->lock);
		if (spin)
			watch(l);
		/* The end of the loop cancels threads waiting here. */
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		int r = fuse_session_receive_buf(l->se, &buf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&l->lock);
		l->avail--;
		if (r > 0 && !fuse_session_exited(l->se)) {
			if (l->avail == 0 && l->parked)
				pthread_cond_signal(&l->park);
			else if (l->avail == 0)
				start_thread(l);
			pthread_mutex_unlock(&l->lock);
			uint64_t t0 = nd_mono_ns();
			answer_later = false;
			fuse_session_process_buf(l->se, &buf);
			bool quick = nd_mono_ns() - t0 < QUICK_NS;
			answered = answer_later || quick;
			spin = !answer_later && quick;
			pthread_mutex_lock(&l->lock);
			continue;
		}
		if (r == -EINTR && !fuse_session_exited(l->se))
			continue; /* an interrupted request */
		if (r < 0 && r != -EINTR && !l->err)
			l->err = r;
		l->stop = true;
		pthread_cond_broadcast(&l->cond);
		pthread_cond_broadcast(&l->park);
	}
	pthread_mutex_unlock(&l->lock);
	pthread_cleanup_pop(1);
	return NULL;
}

int nd_loop_run(struct fuse_session *se, unsigned max_threads)
{
	struct loop l = {.se = se, .fd = fuse_session_fd(se)};

	l.max = max_threads < ND_LOOP_MAX_THREADS ? max_threads
						  : ND_LOOP_MAX_THREADS;
	atomic_init(&l.watching, false);
	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.cond, NULL);
	pthread_cond_init(&l.park, NULL);
	pthread_mutex_lock(&l.lock);
	start_thread(&l);
	/* A signal handler can only mark the session exited: look. */
	while (!l.stop && l.threads && !fuse_session_exited(se)) {
		struct timespec ts = nd_wall_after(CHECK_MS / 1e3);
		pthread_cond_timedwait(&l.cond, &l.lock, &ts);
	}
	l.stop = true;
	pthread_cond_broadcast(&l.park);
	unsigned n = l.threads;
	pthread_mutex_unlock(&l.lock);
	/* Threads waiting for a request go now; those answering one finish
	 * it first (cancellation is off while they do). */
	for (unsigned i = 0; i < n; i++)
		pthread_cancel(l.tid[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(l.tid[i], NULL);
	pthread_mutex_destroy(&l.lock);
	pthread_cond_destroy(&l.cond);
	pthread_cond_destroy(&l.park);
	fuse_session_reset(se);
	return l.err && l.err != -ENODEV ? -1 : 0;
}
