/* cache-dir.c: what ties an entry to its cache directory beyond the
 * blocks: the facts a mount records of the backend (size, limits,
 * validator) so a later mount can serve the entry from the directory
 * while the server cannot be reached, and that mount's opening of the
 * disk without a connection. The key of the directory is the entry's
 * canonical options without secrets (nd_stack_identity_opts), known
 * before the server answers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "layers/stack.h"
#include "log.h"
#include "tier.h"

char *nd_cache_dir_info_text(const struct nd_info *i)
{
	char *s;
	if (asprintf(&s,
		     "%" PRIu64 ",%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",%" PRIu32
		     ",%d%d%d%d%d,%u",
		     i->size, i->block_size, i->max_request, i->max_trim,
		     i->opt_request, i->read_only, i->can_flush, i->can_zero,
		     i->can_multi_conn, i->thread_safe, i->max_connections) < 0)
		return NULL;
	return s;
}

static int info_parse(const char *text, const char *validator,
		      struct nd_info *i)
{
	char flags[8] = "";
	memset(i, 0, sizeof *i);
	if (sscanf(text,
		   "%" SCNu64 ",%" SCNu32 ",%" SCNu32 ",%" SCNu32 ",%" SCNu32
		   ",%5[01],%u",
		   &i->size, &i->block_size, &i->max_request, &i->max_trim,
		   &i->opt_request, flags, &i->max_connections) != 7 ||
	    strlen(flags) != 5)
		return -1;
	i->read_only = flags[0] == '1';
	i->can_flush = flags[1] == '1';
	i->can_zero = flags[2] == '1';
	i->can_multi_conn = flags[3] == '1';
	i->thread_safe = flags[4] == '1';
	snprintf(i->validator, sizeof i->validator, "%s", validator);
	return 0;
}

/* cache-dir= of O, when its tier is in use (cache-dir-mode not off). */
const char *nd_cache_dir_of(const struct nd_opts *o)
{
	const char *dir = nd_opt_get(o, "cache-dir");
	const char *mode = nd_opt_get(o, "cache-dir-mode");
	const char *cache = nd_opt_get(o, "cache");
	if (!dir || (mode && strcmp(mode, "off") == 0) ||
	    (cache && strcmp(cache, "none") == 0))
		return NULL;
	return dir;
}

int nd_cache_dir_open_offline(const struct nd_opts *o, int err,
			      struct nd_disk **out)
{
	const char *dir = nd_cache_dir_of(o);
	char *id, *validator = NULL, *info = NULL, *why = NULL;
	struct nd_info i;
	int r = err;

	*out = NULL;
	if (!dir || !nd_disk_err_is_outage(err) ||
	    !(id = nd_stack_identity_opts(o)))
		return err;
	if (nd_tier_peek(dir, id, &validator, &info) == 0 &&
	    info_parse(info, validator, &i) == 0 &&
	    asprintf(&why, "mounted from the cache directory: %s",
		     nd_get_error()) >= 0) {
		char *first = strdup(nd_get_error());
		r = nd_disk_open_offline(o, &i, why, out);
		if (r == 0)
			nd_warn("entry '%s': the server cannot be reached (%s); "
				"mounted from the cache directory (%" PRIu64
				" bytes, validator %s); reconnecting in the "
				"background",
				o->name, first ? first : "", i.size,
				validator[0] ? validator : "none");
		else
			r = err;
		free(first);
	}
	free(why);
	free(validator);
	free(info);
	free(id);
	return r;
}
