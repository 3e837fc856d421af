/* stack.h: the optional layers of one entry, built from its options:
 *   [overlay=PATH] -> [format=qcow2] -> its block cache (or its disk)
 * Each layer sees only the one under it (layer.h). */
#ifndef ND_STACK_H
#define ND_STACK_H

#include "cache.h"
#include "disk.h"
#include "layer.h"

/* The layers entry D asks for, over C (NULL with cache=none): *TOP is
 * NULL when it asks for none (the file shows the cache's bytes as they
 * are). 0 or -errno with an nd_error naming the entry. */
int nd_stack_open(struct nd_disk *d, struct nd_cache *c,
		  struct nd_layer **top);

/* The identity of the image D names: its canonical options without
 * secrets and without the core's own keys, then its size (malloc'd). */
char *nd_stack_identity(const struct nd_opts *o, uint64_t size);
/* The same without the size: the cache directory's key, known before the
 * server is reached (the size is recorded beside it). */
char *nd_stack_identity_opts(const struct nd_opts *o);

/* The bottom of a stack: a layer over a cache (or over the disk alone
 * when C is NULL); OWN: closing it closes the disk too. */
int nd_layer_cache_open(struct nd_disk *d, struct nd_cache *c, bool own,
			struct nd_layer **out);

#endif
