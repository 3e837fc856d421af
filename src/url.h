/* url.h: every device URL form -> one canonical option set. The core owns
 * json:, dotted keys and the dispatch; each backend owns its schemes and
 * keys through a struct nd_proto (backends/backend.h) in a library-free
 * file of its own, and uses the helpers below. */
#ifndef ND_URL_H
#define ND_URL_H

#include <errno.h>
#include <stdbool.h>

#include "log.h"

#include "opts.h"

/* Parse one URL field (scheme URL, a backend's legacy form such as nbd:,
 * json:{...}, dotted key list "driver=ssh,host=h", file: or an absolute
 * path) and nd_opt_add its keys to O, tagged ORIGIN. -1 with an nd_error
 * naming the problem. */
int nd_url_parse(const char *url, struct nd_opts *o, const char *origin);

/* Does S name a device by itself (a scheme URL, json:, a key list, a
 * legacy form such as nbd:H:P) rather than a file (a mount table)? */
bool nd_url_is_device(const char *s);

/* After the URL keys and the entry's own options are merged: unwrap format
 * drivers (raw/qcow2 with a file child), strip "file." prefixes, map
 * aliases (readonly -> ro, ...), expand an explicit url=/filename= key,
 * then the backend's own normalisation (its aliases, defaults such as
 * ports, the structure it needs). -1 with an nd_error. */
int nd_opts_normalize(struct nd_opts *o);

/* Prefix every default key the entry lacks. */
int nd_opts_merge_defaults(struct nd_opts *o, const struct nd_opts *defaults);

/* Name of the file an URL would be shown as: its last path component
 * (without a query), or "disk". Malloc'd. */
char *nd_url_basename(const char *url);

/* --- helpers for the backends' URL files ------------------------------ */

/* An RFC 3986 URL split by libcurl's URL API. user and password are
 * percent-decoded (%00 refused); host keeps IPv6 brackets; path and query are raw. */
struct nd_url {
	char *scheme, *user, *password, *host, *port, *path, *query;
};
/* 0, or -1 with an nd_error showing the URL redacted. A "scheme:///path"
 * URL has host NULL. */
int nd_url_split(const char *url, struct nd_url *p);
void nd_url_free(struct nd_url *p);
/* Percent-decode LEN bytes of S (malloc'd); NULL for no memory, or with
 * an nd_error naming KEY for a %00 (a NUL would cut the string short). */
char *nd_url_decode(const char *s, size_t len, const char *key);
/* "[::1]" -> "::1"; other hosts as they are (malloc'd). */
char *nd_url_host(const char *h);
/* Each "k=v" of a query string, percent-decoded, nd_opt_add'ed. MAP holds
 * pairs "from", "to" of keys to rename, NULL-terminated (or NULL). */
int nd_url_add_query(const char *query, struct nd_opts *o, const char *origin,
		     const char *const *map);
/* nd_error(FMT, ...) with errno = EINVAL; the value is -1. */
#define nd_url_error(...) ({ errno = EINVAL; nd_error(__VA_ARGS__); -1; })

/* Rename key OLD to NEW, keeping its origin (an error if both are given
 * with different values). */
int nd_opts_rename(struct nd_opts *o, const char *old, const char *new);
/* Replace the path-like KEY of O by NAME seen from its directory: NAME
 * itself when absolute (leading slashes kept only when ABS_SLASH), else
 * dirname(value)/NAME. For the backends' relative hooks. */
int nd_opts_relative_path(struct nd_opts *o, const char *key, const char *name,
			  bool abs_slash);
/* Is KEY one of the core's own options (not a protocol's), allowed at
 * any level of a wrapper? */
bool nd_opt_is_core(const char *key);
/* Is KEY one of the core's options of a parsed entry (the above but the
 * aliases the parser renames, plus driver, offset and size)? */
bool nd_opt_is_entry_core(const char *key);

/* Set KEY=VAL with origin "default" unless KEY is given. */
int nd_opts_default(struct nd_opts *o, const char *key, const char *val);

#endif
