/* blocking.c: see blocking.h. */
#include <stddef.h>

#include "util/blocking.h"

static __thread void (*block_hook)(void);

void nd_may_block(void)
{
	if (block_hook)
		block_hook();
}

void nd_set_block_hook(void (*hook)(void))
{
	block_hook = hook;
}
