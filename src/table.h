/* table.h: the mount table: one entry per line, NAME URL [OPTIONS]. */
#ifndef ND_TABLE_H
#define ND_TABLE_H

#include <stdio.h>

#include "opts.h"

struct nd_entry {
	char *name;
	char *url;   /* as written (may hold a password: never print it) */
	char *where; /* "FILE:LINE" */
	struct nd_opts opts; /* canonical, defaults merged */
};

struct nd_table {
	size_t n;
	struct nd_entry *e;
};

/* Per-entry check supplied by the caller (the disk layer's key check):
 * 0 or -1 with an nd_error. */
typedef int (*nd_entry_check_fn)(struct nd_opts *opts);

/* Load a table file. CMDLINE holds the -o defaults (may be NULL). Every bad
 * line is reported on ERRS as "FILE:LINE: message"; the return value is the
 * number of errors (0 = T is complete). With errors T still holds the good
 * entries. */
int nd_table_load(const char *path, const struct nd_opts *cmdline,
		  nd_entry_check_fn check, struct nd_table *t, FILE *errs);
/* The same for a text held in memory (FNAME is used in messages). SHARED:
 * the text is readable by others than its owner, so an entry holding a
 * secret (nd_opts_hold_secret) is refused. */
int nd_table_parse(const char *text, size_t len, const char *fname,
		   bool shared, const struct nd_opts *cmdline,
		   nd_entry_check_fn check, struct nd_table *t, FILE *errs);
/* A single URL given instead of a table: one entry named after it. */
int nd_table_from_url(const char *url, const struct nd_opts *cmdline,
		      nd_entry_check_fn check, struct nd_table *t, FILE *errs);
void nd_table_free(struct nd_table *t);

#endif
