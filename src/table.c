/* table.c: the mount table. A line is NAME URL [OPTIONS]; fields are split
 * on blanks, may be double-quoted (backslash escapes), and a json:{...} URL
 * may run unquoted to its balanced closing brace. "* OPTIONS" sets
 * defaults for every entry. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "table.h"
#include "url.h"
#include "util/cleanup.h"

#define MAX_FIELDS 8

/* Next field of LINE at *P into a malloc'd string; NULL at end of line or
 * on error (then *err is set). */
static char *next_field(const char **pp, const char **err)
{
	const char *p = *pp;
	char *out, *o;

	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p || *p == '#' || *p == '\n' || *p == '\r') {
		*pp = p;
		return NULL;
	}
	out = o = malloc(strlen(p) + 1);
	if (!out) {
		*err = "out of memory";
		return NULL;
	}
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++) {
			if (*p == '\\' && p[1])
				p++;
			*o++ = *p;
		}
		if (*p != '"') {
			*err = "unterminated double quote";
			free(out);
			return NULL;
		}
		p++;
		if (*p && !isspace((unsigned char)*p)) {
			*err = "text right after a closing quote";
			free(out);
			return NULL;
		}
	} else if (strncmp(p, "json:{", 6) == 0) {
		/* Unquoted JSON: to the balanced closing brace, skipping
		 * braces inside JSON strings. */
		int depth = 0;
		bool in_str = false;
		for (; *p; p++) {
			*o++ = *p;
			if (in_str) {
				if (*p == '\\' && p[1])
					*o++ = *++p;
				else if (*p == '"')
					in_str = false;
			} else if (*p == '"')
				in_str = true;
			else if (*p == '{')
				depth++;
			else if (*p == '}' && --depth == 0) {
				p++;
				break;
			}
		}
		if (depth != 0) {
			*err = "json: URL without its closing brace";
			free(out);
			return NULL;
		}
		if (*p && !isspace((unsigned char)*p) && *p != ',') {
			*err = "text right after the json: closing brace";
			free(out);
			return NULL;
		}
	} else {
		while (*p && !isspace((unsigned char)*p))
			*o++ = *p++;
	}
	*o = 0;
	*pp = p;
	return out;
}

static bool valid_name(const char *n)
{
	return *n && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..") &&
	       strcmp(n, ".netdiskfs") && strlen(n) < 256;
}

static int add_entry(struct nd_table *t, const char *name, const char *url,
		     const char *where, struct nd_opts *opts)
{
	struct nd_entry *ne = realloc(t->e, (t->n + 1) * sizeof *ne);
	if (!ne)
		return -1;
	t->e = ne;
	ne = &t->e[t->n++];
	ne->name = strdup(name);
	ne->url = strdup(url);
	ne->where = strdup(where);
	ne->opts = *opts;
	return 0;
}

/* Build one entry's option set: URL keys + its own options (a key given
 * by both with different values is an error), normalised, then the
 * defaults under it, then the caller's check. */
static int build_entry(const char *name, const char *url, char **optf,
		       size_t nopt, const char *where,
		       const struct nd_opts *defaults,
		       const struct nd_opts *cmdline, nd_entry_check_fn check,
		       struct nd_opts *o)
{
	CLEANUP_FREE char *org_url = NULL;
	CLEANUP_FREE char *org_opt = NULL;

	nd_opts_init(o, name);
	if (asprintf(&org_url, "%s URL", where) < 0 ||
	    asprintf(&org_opt, "%s options", where) < 0)
		return -1;
	if (nd_url_parse(url, o, org_url) == -1)
		return -1;
	for (size_t i = 0; i < nopt; i++)
		if (nd_opts_parse_list(o, optf[i], org_opt) == -1)
			return -1;
	if (nd_opts_normalize(o) == -1)
		return -1;
	/* A read-only mount (-o ro) makes every entry read-only. */
	const char *cro = cmdline ? nd_opt_get(cmdline, "ro") : NULL;
	bool force_ro = false;
	if (cro && nd_parse_bool(cro, &force_ro) == 0 && force_ro &&
	    nd_opt_set(o, "ro", "on", "-o") == -1)
		return -1;
	if (nd_opts_merge_defaults(o, defaults) == -1 ||
	    (cmdline && nd_opts_merge_defaults(o, cmdline) == -1))
		return -1;
	struct nd_perm perm;
	if ((check && check(o) == -1) ||
	    nd_opt_perm(o, getuid(), getgid(), false, &perm) == -1)
		return -1;
	return nd_opts_check_secret_files(o);
}

/* Every message about the table is redacted as a whole: a line may hold
 * a URL with its password where a name was expected. */
static void errf(FILE *errs, const char *fmt, ...) ND_PRINTF(2, 3);
static void errf(FILE *errs, const char *fmt, ...)
{
	char *msg = NULL, *clean;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	clean = msg ? nd_redact(msg) : NULL;
	fputs(clean ? clean : "error (message withheld: out of memory)\n",
	      errs);
	free(clean);
	free(msg);
}

static void report(FILE *errs, const char *where, const char *name)
{
	if (name)
		errf(errs, "%s: entry '%s': %s\n", where, name,
		     nd_get_error());
	else
		errf(errs, "%s: %s\n", where, nd_get_error());
}

int nd_table_parse(const char *text, size_t len, const char *fname,
		   bool shared, const struct nd_opts *cmdline,
		   nd_entry_check_fn check, struct nd_table *t, FILE *errs)
{
	struct nd_opts defaults;
	int nerr = 0, lineno = 0;
	const char *p = text, *end = text + len;

	memset(t, 0, sizeof *t);
	nd_opts_init(&defaults, "*");
	/* "* OPTIONS" lines apply to every entry, wherever they stand, so
	 * they are read in a first pass. */
	for (int pass = 0; pass < 2; pass++, p = text, lineno = 0)
	while (p < end) {
		const char *nl = memchr(p, '\n', end - p);
		size_t llen = nl ? (size_t)(nl - p) : (size_t)(end - p);
		CLEANUP_FREE char *line = strndup(p, llen);
		char *f[MAX_FIELDS];
		size_t nf = 0;
		const char *lp = line, *err = NULL;
		char where[300];

		p += llen + (nl ? 1 : 0);
		lineno++;
		snprintf(where, sizeof where, "%s:%d", fname, lineno);
		if (!line) {
			nerr += pass;
			continue;
		}
		if (memchr(line, 0, llen) || strlen(line) != llen) {
			if (pass == 1) {
				errf(errs, "%s: NUL byte in line (a disk "
					   "image? write it as file:///PATH)\n",
				     where);
				nerr++;
			}
			continue;
		}
		for (char *fld; (fld = next_field(&lp, &err));) {
			if (nf == MAX_FIELDS) {
				free(fld);
				err = "too many fields (NAME URL [OPTIONS])";
				break;
			}
			f[nf++] = fld;
		}
		if (err) {
			if (pass == 1) {
				errf(errs, "%s: %s\n", where, err);
				nerr++;
			}
			goto next;
		}
		/* Pass 0 reads the "*" lines, pass 1 the entries. */
		if (nf == 0 || (pass == 0) != (strcmp(f[0], "*") == 0))
			goto next;
		if (strcmp(f[0], "*") == 0) {
			char org[320];
			snprintf(org, sizeof org, "%s defaults", where);
			for (size_t i = 1; i < nf; i++)
				if (nd_opts_parse_list(&defaults, f[i], org) ==
				    -1) {
					report(errs, where, NULL);
					nerr++;
				}
			goto next;
		}
		if (nf < 2) {
			errf(errs, "%s: entry '%s' has no URL (expected NAME "
				   "URL [OPTIONS])\n",
			     where, f[0]);
			nerr++;
			goto next;
		}
		if (!valid_name(f[0])) {
			errf(errs, "%s: '%s' is not a valid entry name (a "
				   "file name: no '/', not '.', '..' or "
				   "'.netdiskfs')\n",
			     where, f[0]);
			nerr++;
			goto next;
		}
		for (size_t i = 0; i < t->n; i++)
			if (strcmp(t->e[i].name, f[0]) == 0) {
				errf(errs, "%s: entry '%s' is already "
					   "defined at %s\n",
				     where, f[0], t->e[i].where);
				nerr++;
				goto next;
			}
		struct nd_opts o;
		if (build_entry(f[0], f[1], f + 2, nf - 2, where, &defaults,
				cmdline, check, &o) == -1) {
			report(errs, where, f[0]);
			nd_opts_free(&o);
			nerr++;
			goto next;
		}
		const char *sk;
		if (shared && nd_opts_hold_secret(&o, fname, &sk)) {
			errf(errs, "%s: entry '%s' holds a password or "
				   "other credential (%s) but %s is readable "
				   "by its group or others (chmod go-r it, or "
				   "use password-file=)\n",
			     where, f[0], sk, fname);
			nd_opts_free(&o);
			nerr++;
			goto next;
		}
		if (add_entry(t, f[0], f[1], where, &o) == -1) {
			nd_opts_free(&o);
			nerr++;
		}
	next:
		for (size_t i = 0; i < nf; i++)
			free(f[i]);
	}
	nd_opts_free(&defaults);
	return nerr;
}

int nd_table_load(const char *path, const struct nd_opts *cmdline,
		  nd_entry_check_fn check, struct nd_table *t, FILE *errs)
{
	FILE *f = fopen(path, "re");
	struct stat st;
	CLEANUP_FREE char *buf = NULL;
	size_t size = 0, cap = 0, n;

	memset(t, 0, sizeof *t);
	if (!f) {
		errf(errs, "%s: %m\n", path);
		return 1;
	}
	if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode)) {
		errf(errs, "%s: not a regular file\n", path);
		fclose(f);
		return 1;
	}
	do {
		if (size + 4096 > cap) {
			char *nb = realloc(buf, cap = cap * 2 + 8192);
			if (!nb) {
				fclose(f);
				errf(errs, "%s: out of memory\n", path);
				return 1;
			}
			buf = nb;
		}
		n = fread(buf + size, 1, cap - size, f);
		size += n;
	} while (n > 0 && size < (64u << 20));
	fclose(f);
	if (buf && memchr(buf, 0, size)) {
		errf(errs, "%s: binary data: this looks like a disk image, "
			   "not a mount table (give it as file://%s)\n",
		     path, path);
		return 1;
	}
	return nd_table_parse(buf ? buf : "", size, path,
			      (st.st_mode & (S_IRGRP | S_IROTH)) != 0, cmdline,
			      check, t,
			      errs);
}

int nd_table_from_url(const char *url, const struct nd_opts *cmdline,
		      nd_entry_check_fn check, struct nd_table *t, FILE *errs)
{
	CLEANUP_FREE char *name = nd_url_basename(url);
	struct nd_opts defaults, o;

	memset(t, 0, sizeof *t);
	nd_opts_init(&defaults, "*");
	if (!name || build_entry(name, url, NULL, 0, "command line", &defaults,
				 cmdline, check, &o) == -1) {
		report(errs, "command line", name ? name : "disk");
		nd_opts_free(&defaults);
		if (name)
			nd_opts_free(&o);
		return 1;
	}
	nd_opts_free(&defaults);
	return add_entry(t, name, url, "command line", &o) == -1;
}

void nd_table_free(struct nd_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->e[i].name);
		free(t->e[i].url);
		free(t->e[i].where);
		nd_opts_free(&t->e[i].opts);
	}
	free(t->e);
	memset(t, 0, sizeof *t);
}
