/* loop.h: the FUSE request loop. */
#ifndef ND_LOOP_H
#define ND_LOOP_H

#include "fuse_ver.h"

#define ND_LOOP_MAX_THREADS 64

/* Serve SE until it ends (unmount or fuse_session_exit) with at most
 * MAX_THREADS threads; requests being answered are finished first. 0, or
 * -1 after an error reading /dev/fuse. */
int nd_loop_run(struct fuse_session *se, unsigned max_threads);
/* The request being processed by this thread will be answered by another
 * (a backend's completion): its answer is near, so the thread watches for
 * the reader's next request as after a quick answer. */
void nd_loop_answer_later(void);

#endif
