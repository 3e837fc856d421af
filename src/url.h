/* url.h: every device URL form -> one canonical option set. */
#ifndef ND_URL_H
#define ND_URL_H

#include "opts.h"

/* Parse one URL field (scheme URL, legacy nbd:, json:{...}, dotted key list
 * "driver=ssh,host=h", file: or an absolute path) and nd_opt_add its keys
 * to O, tagged ORIGIN. -1 with an nd_error naming the problem. */
int nd_url_parse(const char *url, struct nd_opts *o, const char *origin);

/* After the URL keys and the entry's own options are merged: unwrap format
 * drivers (raw/qcow2 with a file child), strip "file." prefixes, map
 * aliases (host -> server.host, readonly -> ro, ...), expand an explicit
 * url=/filename= key, fill protocol defaults (ports, server.type), and
 * check the structure each driver needs. -1 with an nd_error. */
int nd_opts_normalize(struct nd_opts *o);

/* Prefix every default key the entry lacks. */
int nd_opts_merge_defaults(struct nd_opts *o, const struct nd_opts *defaults);

/* Name of the file an URL would be shown as: its last path component
 * (without a query), or "disk". Malloc'd. */
char *nd_url_basename(const char *url);

#endif
