/* workers.c: the background threads, with one queue per owner served
 * round-robin, and a cap on how many threads one owner's jobs hold at
 * once: all but two, so a healthy entry always finds a thread while
 * another's jobs wait on a stalled server, and a lone sequential reader
 * still has most of the pool for its readahead. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "workers.h"

struct job {
	nd_work_fn fn;
	void *arg;
	struct job *next;
};

struct queue {
	const void *owner;
	struct job *head, *tail;
	unsigned running;
	struct queue *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct queue *queues; /* a ring would do; a list walked from rr */
static struct queue *rr;     /* where the next search starts */
static pthread_t *threads;
static unsigned nthreads, cap;
static bool stopping;

/* The next queue, from RR on, with a job and room under the cap; NULL
 * when none. Lock held. */
static struct queue *pick(void)
{
	struct queue *q = rr ? rr : queues;
	for (struct queue *start = q; q;) {
		if (q->head && q->running < cap) {
			rr = q->next;
			return q;
		}
		q = q->next ? q->next : queues;
		if (q == start)
			break;
	}
	return NULL;
}

/* Drop Q when it is empty and idle. Lock held. */
static void drop_if_idle(struct queue *q)
{
	if (q->head || q->running)
		return;
	for (struct queue **pp = &queues; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	if (rr == q)
		rr = q->next;
	free(q);
}

static bool any_job(void)
{
	for (struct queue *q = queues; q; q = q->next)
		if (q->head)
			return true;
	return false;
}

static void *worker(void *unused)
{
	(void)unused;
	pthread_setname_np(pthread_self(), "nd-work");
	pthread_mutex_lock(&lock);
	for (;;) {
		struct queue *q = pick();
		if (!q) {
			if (stopping && !any_job())
				break;
			pthread_cond_wait(&cond, &lock);
			continue;
		}
		struct job *j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		q->running++;
		pthread_mutex_unlock(&lock);
		j->fn(j->arg);
		free(j);
		pthread_mutex_lock(&lock);
		q->running--;
		drop_if_idle(q);
		pthread_cond_broadcast(&cond); /* room under the cap again */
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int nd_workers_start(unsigned n)
{
	threads = calloc(n, sizeof *threads);
	if (!threads)
		return -1;
	stopping = false;
	cap = n > 2 ? n - 2 : 1;
	for (nthreads = 0; nthreads < n; nthreads++)
		if (pthread_create(&threads[nthreads], NULL, worker, NULL))
			break;
	return nthreads ? 0 : -1;
}

static struct queue *queue_of(const void *owner)
{
	struct queue *q;
	for (q = queues; q; q = q->next)
		if (q->owner == owner)
			return q;
	q = calloc(1, sizeof *q);
	if (q) {
		q->owner = owner;
		q->next = queues;
		queues = q;
	}
	return q;
}

void nd_workers_submit(const void *owner, nd_work_fn fn, void *arg)
{
	struct job *j = malloc(sizeof *j);
	struct queue *q = NULL;

	if (j && nthreads) {
		pthread_mutex_lock(&lock);
		if ((q = queue_of(owner))) {
			j->fn = fn;
			j->arg = arg;
			j->next = NULL;
			if (q->tail)
				q->tail->next = j;
			else
				q->head = j;
			q->tail = j;
			pthread_cond_signal(&cond);
		}
		pthread_mutex_unlock(&lock);
	}
	if (!q) {
		free(j);
		fn(arg);
	}
}

void nd_workers_stop(void)
{
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	threads = NULL;
	nthreads = 0;
}
