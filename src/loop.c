/* loop.c: the FUSE request loop.
 *
 * Like libfuse's multithreaded loop, threads read /dev/fuse and a new one
 * starts when none is left to read (up to a maximum). Two differences.
 * One thread at a time reads (the reader; the others wait for the role):
 * the kernel wakes a thread blocked on /dev/fuse for every request, even
 * when another would have taken it at once, and each such wake-up of a
 * sleeping thread costs a switch, on a small virtual machine an exit to the
 * host. The reader keeps the role while it answers a read that does not
 * wait (from the cache, or left to a backend that answers it from its own
 * thread); before anything that may wait (util/blocking.h), and for every
 * other request, it hands the role to a waiting thread first. And a reader
 * that has just answered a request watches /dev/fuse for a short while
 * (poll with a zero timeout, yielding the CPU in between) before it
 * blocks: a program reading with O_DIRECT, 4 KiB at a time, sends its next
 * request a few microseconds after each answer, and a thread already
 * running picks it up at once. Only a quick answer is followed by
 * watching, and never for long, so an idle daemon sleeps and a busy one
 * does not spend CPU on it. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuse_ver.h"
#include "loop.h"
#include "util/blocking.h"
#include "util/clock.h"

#define SPIN_NS 100000ull /* watch this long after answering a request */
#define QUICK_NS 20000ull /* ... answered this fast (not a long copy or a
			     wait on the network: nothing to gain there) */
#define CHECK_MS 250	  /* how often the main thread checks for exit */
#define FUSE_OP_READ 15	  /* the kernel's FUSE_READ opcode (stable ABI) */

struct loop {
	struct fuse_session *se;
	int fd;
	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t cond; /* signalled when the loop should end */
	pthread_cond_t turn; /* the reader's role is free, or the end */
	pthread_t tid[ND_LOOP_MAX_THREADS];
	unsigned threads, max;
	unsigned idle; /* threads waiting for the reader's role */
	bool reading;  /* a thread holds the reader's role */
	bool stop;
	int err;
};

/* Watch for a request for up to SPIN_NS. */
static void watch(struct loop *l)
{
	struct pollfd p = {.fd = l->fd, .events = POLLIN};
	uint64_t from = nd_mono_ns();
	while (poll(&p, 1, 0) == 0 && nd_mono_ns() - from < SPIN_NS)
		sched_yield();
}

static void *worker(void *arg);
static void start_thread(struct loop *l);

/* This thread's loop, and whether it holds the reader's role. */
static __thread struct loop *my_loop;
static __thread bool my_reader;

/* Give the reader's role up: a waiting thread takes it, else a new one.
 * Lock held. */
static void give_up_reader(struct loop *l)
{
	my_reader = false;
	l->reading = false;
	if (l->idle)
		pthread_cond_signal(&l->turn);
	else
		start_thread(l);
}

/* The block hook of the loop's threads: the reader is about to wait. */
static void reader_may_block(void)
{
	struct loop *l = my_loop;
	if (!my_reader)
		return;
	pthread_mutex_lock(&l->lock);
	give_up_reader(l);
	pthread_mutex_unlock(&l->lock);
}

/* May the reader keep its role while answering the request in BUF? Only
 * a read: the other requests may wait anywhere. */
static bool keeps_reader(const struct fuse_buf *buf)
{
	uint32_t opcode;
	if ((buf->flags & FUSE_BUF_IS_FD) || buf->size < 8)
		return false;
	memcpy(&opcode, (const char *)buf->mem + 4, sizeof opcode);
	return opcode == FUSE_OP_READ;
}

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

	pthread_setname_np(pthread_self(), "nd-fuse");
	my_loop = l;
	nd_set_block_hook(reader_may_block);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_push(free_buf, &buf);
	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		if (!my_reader) {
			if (l->reading) {
				l->idle++;
				pthread_cond_wait(&l->turn, &l->lock);
				l->idle--;
				continue;
			}
			l->reading = my_reader = true;
		}
		pthread_mutex_unlock(&l->lock);
		if (answered)
			watch(l);
		/* The end of the loop cancels threads waiting here. */
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		int r = fuse_session_receive_buf(l->se, &buf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&l->lock);
		if (r > 0 && !fuse_session_exited(l->se)) {
			if (!keeps_reader(&buf))
				give_up_reader(l);
			pthread_mutex_unlock(&l->lock);
			uint64_t t0 = nd_mono_ns();
			answer_later = false;
			fuse_session_process_buf(l->se, &buf);
			answered = answer_later ||
				   nd_mono_ns() - t0 < QUICK_NS;
			pthread_mutex_lock(&l->lock);
			continue;
		}
		if (r == -EINTR && !fuse_session_exited(l->se))
			continue; /* an interrupted request */
		if (r < 0 && r != -EINTR && !l->err)
			l->err = r;
		l->stop = true;
		pthread_cond_broadcast(&l->cond);
		pthread_cond_broadcast(&l->turn);
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
	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.cond, NULL);
	pthread_cond_init(&l.turn, NULL);
	pthread_mutex_lock(&l.lock);
	start_thread(&l);
	/* A signal handler can only mark the session exited: look. */
	while (!l.stop && l.threads && !fuse_session_exited(se)) {
		struct timespec ts = nd_wall_after(CHECK_MS / 1e3);
		pthread_cond_timedwait(&l.cond, &l.lock, &ts);
	}
	l.stop = true;
	pthread_cond_broadcast(&l.turn); /* those waiting for the role go */
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
	pthread_cond_destroy(&l.turn);
	fuse_session_reset(se);
	return l.err && l.err != -ENODEV ? -1 : 0;
}
