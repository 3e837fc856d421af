/* The unit tests' one way to open a disk: entry NAME of DRIVER, with
 * filename=FILENAME when given and EXTRA's key=value,... options (NULL:
 * none); a disk that does not open ends the test. */
#ifndef ND_TEST_DISK_OPEN_H
#define ND_TEST_DISK_OPEN_H

#include <stdio.h>
#include <stdlib.h>

#include "disk.h"
#include "log.h"
#include "opts.h"

static inline struct nd_disk *test_disk_open(const char *name,
					     const char *driver,
					     const char *filename,
					     const char *extra)
{
	struct nd_opts o;
	struct nd_disk *d = NULL;
	nd_opts_init(&o, name);
	nd_opt_set(&o, "driver", driver, "test");
	if (filename)
		nd_opt_set(&o, "filename", filename, "test");
	if (extra)
		nd_opts_parse_list(&o, extra, "test");
	if (nd_disk_open(&o, &d) < 0) {
		printf("open: %s\n", nd_get_error());
		exit(1);
	}
	nd_opts_free(&o);
	return d;
}

#endif
