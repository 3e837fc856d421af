/* opts.c: the option set and its typed readers. Every size, bool, number
 * and secret in netdiskfs is read here, so each error names the key. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "opts.h"

void nd_opts_init(struct nd_opts *o, const char *name)
{
	memset(o, 0, sizeof *o);
	o->name = strdup(name ? name : "");
}

void nd_opts_free(struct nd_opts *o)
{
	for (size_t i = 0; i < o->n; i++) {
		if (nd_opt_is_secret(o->v[i].key))
			explicit_bzero(o->v[i].val, strlen(o->v[i].val));
		free(o->v[i].key);
		free(o->v[i].val);
		free(o->v[i].origin);
	}
	free(o->v);
	free(o->name);
	memset(o, 0, sizeof *o);
}

int nd_opts_copy(struct nd_opts *dst, const struct nd_opts *src)
{
	nd_opts_init(dst, src->name);
	for (size_t i = 0; i < src->n; i++)
		if (nd_opt_set(dst, src->v[i].key, src->v[i].val,
			       src->v[i].origin) == -1)
			return -1;
	return 0;
}

/* Binary search; returns the index where KEY is or would be. */
static size_t opt_index(const struct nd_opts *o, const char *key, bool *found)
{
	size_t lo = 0, hi = o->n;
	*found = false;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(o->v[mid].key, key);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const struct nd_opt *nd_opt_find(const struct nd_opts *o, const char *key)
{
	bool found;
	size_t i = opt_index(o, key, &found);
	return found ? &o->v[i] : NULL;
}

const char *nd_opt_get(const struct nd_opts *o, const char *key)
{
	const struct nd_opt *p = nd_opt_find(o, key);
	return p ? p->val : NULL;
}

const char *nd_opt_getf(const struct nd_opts *o, const char *fmt, ...)
{
	char key[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(key, sizeof key, fmt, ap);
	va_end(ap);
	return nd_opt_get(o, key);
}

int nd_opt_set(struct nd_opts *o, const char *key, const char *val,
	       const char *origin)
{
	bool found;
	size_t i = opt_index(o, key, &found);
	char *v = strdup(val), *org = strdup(origin ? origin : "");

	if (!v || !org)
		goto nomem;
	if (found) {
		free(o->v[i].val);
		free(o->v[i].origin);
		o->v[i].val = v;
		o->v[i].origin = org;
		return 0;
	}
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 16;
		struct nd_opt *nv = realloc(o->v, cap * sizeof *nv);
		if (!nv)
			goto nomem;
		o->v = nv;
		o->cap = cap;
	}
	char *k = strdup(key);
	if (!k)
		goto nomem;
	memmove(&o->v[i + 1], &o->v[i], (o->n - i) * sizeof *o->v);
	o->v[i] = (struct nd_opt){ k, v, org };
	o->n++;
	return 0;
nomem:
	free(v);
	free(org);
	errno = ENOMEM;
	nd_error("out of memory");
	return -1;
}

int nd_opt_add(struct nd_opts *o, const char *key, const char *val,
	       const char *origin)
{
	const struct nd_opt *p = nd_opt_find(o, key);
	if (p && strcmp(p->val, val) != 0) {
		errno = EINVAL;
		nd_error("key '%s' is given twice with different values (%s "
			 "and %s)",
			 key, p->origin, origin);
		return -1;
	}
	return p ? 0 : nd_opt_set(o, key, val, origin);
}

void nd_opt_del(struct nd_opts *o, const char *key)
{
	bool found;
	size_t i = opt_index(o, key, &found);
	if (!found)
		return;
	free(o->v[i].key);
	free(o->v[i].val);
	free(o->v[i].origin);
	memmove(&o->v[i], &o->v[i + 1], (o->n - i - 1) * sizeof *o->v);
	o->n--;
}

static int opt_bad(const struct nd_opts *o, const char *key, const char *val,
		   const char *why)
{
	errno = EINVAL;
	nd_error("%s=%s: %s", key, val, why);
	return -1;
}

int nd_parse_size(const char *s, uint64_t *out)
{
	char *end;
	uint64_t mult = 1;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (*end) {
	case 0: case 'b': case 'B': break;
	case 'k': case 'K': mult = 1ull << 10; break;
	case 'm': case 'M': mult = 1ull << 20; break;
	case 'g': case 'G': mult = 1ull << 30; break;
	case 't': case 'T': mult = 1ull << 40; break;
	default: return -1;
	}
	if (*end && end[1] && !((end[1] == 'i' || end[1] == 'B') && !end[2]) &&
	    strcmp(end + 1, "iB") != 0)
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

int nd_opt_size(const struct nd_opts *o, const char *key, uint64_t def,
		uint64_t *out)
{
	const char *s = nd_opt_get(o, key);
	*out = def;
	if (!s)
		return 0;
	if (nd_parse_size(s, out) == -1)
		return opt_bad(o, key, s,
			       "not a size (a number with an optional "
			       "suffix T, G, M, K, k or b)");
	return 0;
}

int nd_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "on", "yes", "true", "1", "y" };
	static const char *const no[] = { "off", "no", "false", "0", "n" };
	for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

int nd_opt_bool(const struct nd_opts *o, const char *key, bool def,
		bool *out)
{
	const char *s = nd_opt_get(o, key);
	*out = def;
	if (s && nd_parse_bool(s, out) == -1)
		return opt_bad(o, key, s, "not a boolean (on or off)");
	return 0;
}

int nd_opt_uint(const struct nd_opts *o, const char *key, uint64_t def,
		uint64_t min, uint64_t max, uint64_t *out)
{
	const char *s = nd_opt_get(o, key);
	char *end;
	*out = def;
	if (!s)
		return 0;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!isdigit((unsigned char)*s) || *end || errno)
		return opt_bad(o, key, s, "not a whole number");
	if (v < min || v > max) {
		char why[96];
		snprintf(why, sizeof why, "out of range (%" PRIu64 " to %" PRIu64 ")",
			 min, max);
		return opt_bad(o, key, s, why);
	}
	*out = v;
	return 0;
}

int nd_opt_seconds(const struct nd_opts *o, const char *key, double def,
		   double *out)
{
	const char *s = nd_opt_get(o, key);
	char *end;
	*out = def;
	if (!s)
		return 0;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !isfinite(v) || v < 0 || v > 86400 * 365 ||
	    (*end && strcmp(end, "s") != 0))
		return opt_bad(o, key, s, "not a duration in seconds");
	*out = v;
	return 0;
}

bool nd_opt_is_default(const struct nd_opt *p)
{
	return strncmp(p->origin, "-o", 2) == 0 || strstr(p->origin, "defaults");
}

bool nd_opt_is_secret(const char *key)
{
	return nd_secret_key(key);
}

char *nd_opt_shown(const struct nd_opt *p)
{
	return nd_opt_is_secret(p->key) ? strdup("***") : nd_redact(p->val);
}

bool nd_opts_hold_secret(const struct nd_opts *o, const char *source,
			 const char **key)
{
	size_t n = strlen(source);
	for (size_t i = 0; i < o->n; i++)
		if (strncmp(o->v[i].origin, source, n) == 0 &&
		    (nd_opt_is_secret(o->v[i].key) ||
		     nd_has_secret(o->v[i].val))) {
			*key = o->v[i].key;
			return true;
		}
	return false;
}

/* "password-file" -> is "password" a secret key? */
static bool is_secret_file_key(const char *key)
{
	size_t n = strlen(key);
	char stem[128];
	if (n <= 5 || n - 5 >= sizeof stem || strcmp(key + n - 5, "-file"))
		return false;
	memcpy(stem, key, n - 5);
	stem[n - 5] = 0;
	return nd_opt_is_secret(stem);
}

static int secret_file_bad(const char *key, const char *path, mode_t mode)
{
	errno = EACCES;
	nd_error("%s=%s is readable by others (mode %04o); chmod o-r %s", key,
		 path, (unsigned)(mode & 07777), path);
	return -1;
}

int nd_opts_check_secret_files(const struct nd_opts *o)
{
	for (size_t i = 0; i < o->n; i++) {
		const char *path = o->v[i].val;
		struct stat st;
		if (!is_secret_file_key(o->v[i].key) || strcmp(path, "-") == 0)
			continue;
		if (path[0] == '+')
			path++;
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
		    (st.st_mode & S_IROTH))
			return secret_file_bad(o->v[i].key, o->v[i].val,
					       st.st_mode);
	}
	return 0;
}

const char *nd_secret_env(const char *name)
{
	static struct {
		char *name, *val;
	} kept[8];
	static size_t nkept;
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	const char *r = NULL;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nkept && !r; i++)
		if (strcmp(kept[i].name, name) == 0)
			r = kept[i].val;
	char *v = r ? NULL : getenv(name);
	if (v && nkept < sizeof kept / sizeof *kept) {
		/* v points into "NAME=VALUE": wipe it all once it is out of
		 * the environment array. */
		char *entry = v - strlen(name) - 1;
		size_t len = strlen(entry);
		kept[nkept].name = strdup(name);
		kept[nkept].val = strdup(v);
		if (kept[nkept].name && kept[nkept].val) {
			r = kept[nkept++].val;
			unsetenv(name);
			explicit_bzero(entry, len);
		}
	}
	pthread_mutex_unlock(&lock);
	return r;
}

static int perm_num(const struct nd_opts *o, const char *key, int base,
		    unsigned long max, unsigned long *out)
{
	const char *s = nd_opt_get(o, key);
	char *end;
	if (!s)
		return 0;
	errno = 0;
	*out = strtoul(s, &end, base);
	if (!isdigit((unsigned char)*s) || *end || errno || *out > max)
		return opt_bad(o, key, s,
			       base == 8 ? "not an octal mode (0 to 0777)"
					 : "not a numeric id");
	return 1;
}

int nd_opt_perm(const struct nd_opts *o, uid_t uid, gid_t gid, bool ro,
		struct nd_perm *out)
{
	unsigned long u = uid, g = gid, mode = 0644, umask = 0;
	int has_mode, has_umask;

	if (perm_num(o, "uid", 10, (uid_t)-2, &u) < 0 ||
	    perm_num(o, "gid", 10, (gid_t)-2, &g) < 0 ||
	    (has_mode = perm_num(o, "mode", 8, 0777, &mode)) < 0 ||
	    (has_umask = perm_num(o, "umask", 8, 0777, &umask)) < 0)
		return -1;
	/* umask=: what a new file would get, as on other FUSE file
	 * systems; an explicit mode= wins (an entry's mode= over a umask=
	 * default). */
	if (has_umask && !has_mode)
		mode = 0666 & ~umask;
	if (ro)
		mode &= ~0222ul;
	*out = (struct nd_perm){ u, g, mode };
	return 0;
}

void nd_secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* The first line of F, trailing newline dropped; "" at end of file. */
static char *read_first_line(FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);

	if (n < 0) {
		free(line);
		return strdup("");
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	return line;
}

/* password-file=-: standard input is read once, while the table is
 * loaded (before netdiskfs turns into a daemon and stdin becomes
 * /dev/null), and the line kept in memory for every later connection and
 * reconnect. */
static pthread_mutex_t stdin_lock = PTHREAD_MUTEX_INITIALIZER;
static char *stdin_secret;

static char *stdin_line(void)
{
	pthread_mutex_lock(&stdin_lock);
	if (!stdin_secret)
		stdin_secret = read_first_line(stdin);
	char *r = stdin_secret ? strdup(stdin_secret) : NULL;
	pthread_mutex_unlock(&stdin_lock);
	return r;
}

/* NULL with an nd_error naming FKEY and PATH on failure. */
static char *read_secret_file(const char *fkey, const char *path)
{
	const char *given = path;
	struct stat st;
	FILE *f;
	char *line;

	if (path[0] == '+')
		path++;
	if (strcmp(path, "-") == 0)
		return stdin_line();
	f = fopen(path, "re");
	if (!f) {
		nd_error("%s=%s: %m", fkey, given);
		return NULL;
	}
	/* Checked on the open file too: it may have changed since the
	 * table was read. */
	if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) &&
	    (st.st_mode & S_IROTH)) {
		fclose(f);
		secret_file_bad(fkey, given, st.st_mode);
		return NULL;
	}
	line = read_first_line(f);
	fclose(f);
	return line;
}

int nd_opt_secret_preload(const struct nd_opts *o)
{
	for (size_t i = 0; i < o->n; i++) {
		const char *k = o->v[i].key, *v = o->v[i].val;
		size_t n = strlen(k);
		if (n <= 5 || strcmp(k + n - 5, "-file") != 0 ||
		    (strcmp(v, "-") != 0 && strcmp(v, "+-") != 0))
			continue;
		char *s = stdin_line();
		if (!s) {
			nd_error("%s=%s: %m", k, v);
			return -1;
		}
		nd_secret_free(s);
	}
	return 0;
}

int nd_opt_secret(const struct nd_opts *o, const char *key, char **out)
{
	char fkey[128];
	const char *v = nd_opt_get(o, key), *path;

	*out = NULL;
	if (v) {
		*out = strdup(v);
		return *out ? 0 : -1;
	}
	snprintf(fkey, sizeof fkey, "%s-file", key);
	path = nd_opt_get(o, fkey);
	if (!path)
		return 0;
	*out = read_secret_file(fkey, path);
	return *out ? 0 : -1;
}

int nd_opts_parse_list(struct nd_opts *o, const char *list,
		       const char *origin)
{
	size_t len = strlen(list);
	char *buf = malloc(len + 1);
	const char *p = list;
	int ret = 0;

	if (!buf)
		return -1;
	while (*p) {
		/* One item up to a single comma; ",," is a literal comma. */
		size_t n = 0;
		for (; *p; p++) {
			if (*p == ',') {
				if (p[1] == ',') {
					buf[n++] = ',';
					p++;
					continue;
				}
				p++;
				break;
			}
			buf[n++] = *p;
		}
		buf[n] = 0;
		if (n == 0)
			continue;
		char *eq = strchr(buf, '=');
		const char *val = "on";
		if (eq) {
			*eq = 0;
			val = eq + 1;
		}
		if (buf[0] == 0) {
			errno = EINVAL;
			nd_error("empty option name in '%s'", list);
			ret = -1;
			break;
		}
		for (char *k = buf; *k; k++)
			if (!isalnum((unsigned char)*k) && !strchr("._-", *k)) {
				errno = EINVAL;
				nd_error("'%s' is not a valid option name", buf);
				ret = -1;
				goto out;
			}
		if (nd_opt_add(o, buf, val, origin) == -1) {
			ret = -1;
			break;
		}
	}
out:
	free(buf);
	return ret;
}

char *nd_opts_format(const struct nd_opts *o, const char *sep)
{
	char *out = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&out, &size);

	if (!f)
		return NULL;
	for (size_t i = 0; i < o->n; i++) {
		if (i)
			fputs(sep, f);
		char *r = nd_opt_shown(&o->v[i]);
		fprintf(f, "%s=%s", o->v[i].key, r ? r : "***");
		free(r);
	}
	fclose(f);
	return out;
}
