/* blocking.h: a thread about to wait (on a server, on a block another
 * thread fetches) says so. The FUSE loop lets the one thread that reads
 * /dev/fuse keep that role while it answers reads that do not wait, so
 * requests find a running thread instead of waking one; a thread that is
 * going to wait hands the role on first. */
#ifndef ND_BLOCKING_H
#define ND_BLOCKING_H

/* This thread may wait now: runs its hook, if it has one. */
void nd_may_block(void);
/* The hook of the calling thread (NULL: none). */
void nd_set_block_hook(void (*hook)(void));

#endif
