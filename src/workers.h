/* workers.h: a small pool of background threads (readahead fetches).
 * Jobs are queued per owner (an entry's cache) and the owners are served
 * in turn, each with all threads but two at most: an entry whose server
 * stalls cannot take the share of the others. */
#ifndef ND_WORKERS_H
#define ND_WORKERS_H

typedef void (*nd_work_fn)(void *arg);

int nd_workers_start(unsigned n);
/* Run FN(ARG) on a worker, in OWNER's queue. Without workers (unit tests,
 * a failed start) it runs at once in the caller. */
void nd_workers_submit(const void *owner, nd_work_fn fn, void *arg);
/* Finish every queued job, then stop the threads. */
void nd_workers_stop(void);

#endif
