/* opts.h: one option set per entry (sorted key=value strings) and the
 * typed readers every part of netdiskfs uses to look at it. */
#ifndef ND_OPTS_H
#define ND_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct nd_opt {
	char *key;
	char *val;
	char *origin; /* "FILE:LINE URL", "FILE:LINE options", "-o", ... */
};

struct nd_opts {
	char *name; /* entry name, for messages */
	size_t n, cap;
	struct nd_opt *v; /* kept sorted by key */
};

void nd_opts_init(struct nd_opts *o, const char *name);
void nd_opts_free(struct nd_opts *o);
int nd_opts_copy(struct nd_opts *dst, const struct nd_opts *src);

/* Value of KEY or NULL. */
const char *nd_opt_get(const struct nd_opts *o, const char *key);
const struct nd_opt *nd_opt_find(const struct nd_opts *o, const char *key);
/* printf-formatted key: nd_opt_getf(o, "server.%d.host", i). */
const char *nd_opt_getf(const struct nd_opts *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Set KEY=VAL, replacing any previous value. 0 or -1 (ENOMEM). */
int nd_opt_set(struct nd_opts *o, const char *key, const char *val,
	       const char *origin);
/* Set KEY=VAL unless KEY already has a different value: then -1 and an
 * nd_error naming both places. Same value twice is fine. */
int nd_opt_add(struct nd_opts *o, const char *key, const char *val,
	       const char *origin);
void nd_opt_del(struct nd_opts *o, const char *key);

/* Typed readers. Each returns 0 (and *out = def when KEY is absent) or -1
 * with an nd_error that names the entry and the key. */
/* Size with QEMU's suffixes T G M K k b (b = bytes; k = K = 1024). */
int nd_parse_size(const char *s, uint64_t *out);
int nd_opt_size(const struct nd_opts *o, const char *key, uint64_t def,
		uint64_t *out);
/* on/off yes/no true/false 1/0. */
int nd_parse_bool(const char *s, bool *out);
int nd_opt_bool(const struct nd_opts *o, const char *key, bool def,
		bool *out);
int nd_opt_uint(const struct nd_opts *o, const char *key, uint64_t def,
		uint64_t min, uint64_t max, uint64_t *out);
/* Seconds, fractional allowed ("2.5"). */
int nd_opt_seconds(const struct nd_opts *o, const char *key, double def,
		   double *out);

/* A secret: the value of KEY itself, or the contents of KEY-file
 * ("password-file=PATH", first line, trailing newline dropped; PATH "-"
 * reads standard input once; "+PATH" is the same as PATH). *out is a
 * malloc'd string (free it with nd_secret_free) or NULL when neither key
 * is given. -1 with an nd_error on a read failure. */
int nd_opt_secret(const struct nd_opts *o, const char *key, char **out);
void nd_secret_free(char *s);
/* Read now what a KEY-file=- of O will need from standard input (it is
 * read once and kept), so that it happens before daemonizing. */
int nd_opt_secret_preload(const struct nd_opts *o);

/* Did P come from the defaults (a "*" line of the table, or -o) rather
 * than the entry itself? */
bool nd_opt_is_default(const struct nd_opt *p);

/* True for keys whose values never appear in output: password, cookie...
 * (nd_secret_key, the one definition). */
bool nd_opt_is_secret(const char *key);

/* How P's value may be shown: "***" for a secret key, else the value with
 * any secret inside it (a proxy URL's password, a URL's ?token=) masked.
 * Malloc'd. */
char *nd_opt_shown(const struct nd_opt *p);

/* Does O hold a secret that came from SOURCE (an origin prefix, e.g. a
 * table's file name)? Sets *KEY to the first such key. */
bool nd_opts_hold_secret(const struct nd_opts *o, const char *source,
			 const char **key);

/* Every KEY-file of a secret key (password-file=, cookie-file=,
 * tls-psk-file=...) that exists must not be readable by others: -1 with an
 * nd_error naming the key and the file. */
int nd_opts_check_secret_files(const struct nd_opts *o);

/* A secret from the environment (LIBISCSI_CHAP_PASSWORD): read once, then
 * removed from the environment and wiped from the memory
 * /proc/PID/environ shows; later calls return the kept copy. NULL when
 * unset. Call it for every such name before threads start. */
const char *nd_secret_env(const char *name);

/* An entry's file attributes: uid= and gid= (numbers; default the
 * mounting user), mode= (octal, default 0644) or umask= (0666 & ~umask);
 * read-only entries lose the write bits. -1 with an nd_error. */
struct nd_perm {
	uid_t uid;
	gid_t gid;
	mode_t mode;
};
int nd_opt_perm(const struct nd_opts *o, uid_t uid, gid_t gid, bool ro,
		struct nd_perm *out);

/* Split "k=v,k2=v2,flag" (QEMU's ",," = a literal comma; a value may hold
 * '='; a bare key means key=on) and nd_opt_add each. -1 with nd_error. */
int nd_opts_parse_list(struct nd_opts *o, const char *list,
		       const char *origin);

/* Canonical "key=value" lines, sorted, secrets as ***, URLs redacted. */
char *nd_opts_format(const struct nd_opts *o, const char *sep);

#endif
