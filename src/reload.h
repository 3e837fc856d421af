/* reload.h: serving a mount table: its entries opened in parallel and set
 * in the registry, at mount and again on each SIGHUP, from a thread of
 * its own that unmount stops and joins. */
#ifndef ND_RELOAD_H
#define ND_RELOAD_H

#include "fs.h"
#include "table.h"

/* Serve the entries of T in FS: a new name is added, a changed one swapped
 * in (the running definition stays if the new one cannot be opened or the
 * old one cannot be written back), an unchanged one left alone. Returns
 * how many entries could not be opened. */
int nd_reload_apply(struct nd_fs *fs, const struct nd_table *t);

/* Start the reload thread for FS: each SIGHUP (nd_reload_signal) re-reads
 * SOURCE, a table file, with DEFAULTS (both must outlive the thread);
 * SOURCE NULL: there is nothing to reload. */
int nd_reload_start(struct nd_fs *fs, const char *source,
		    const struct nd_opts *defaults);
/* The SIGHUP handler: asks for a reload (async-signal-safe). */
void nd_reload_signal(int sig);
/* Stop and join the thread. A reload in progress finishes the entry it is
 * at (the write-back of one it swaps or removes included) and leaves the
 * rest. */
void nd_reload_stop(void);

#endif
