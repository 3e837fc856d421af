/* tools.c: the subcommands that work on netdiskfs's local files without a
 * mount: `netdiskfs overlay info|discard|diff PATH`, `netdiskfs cache
 * ls|verify|drop CACHE-DIR [NAME]` and `netdiskfs qcow2 info FILE`. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk.h"
#include "layers/layer.h"
#include "layers/overlay.h"
#include "layers/qcow2.h"
#include "layers/stack.h"
#include "log.h"
#include "recover.h"
#include "table.h"
#include "tier.h"
#include "tools.h"

static int usage(const char *line)
{
	fprintf(stderr, "Usage: netdiskfs %s\n", line);
	return 2;
}

static int failed(const char *what)
{
	fprintf(stderr, "netdiskfs %s: %s\n", what, nd_get_error());
	return 1;
}

/* --- overlay --------------------------------------------------------------- */

static int overlay_info(const char *path)
{
	struct nd_overlay_info i;
	if (nd_overlay_info(path, &i))
		return failed("overlay info");
	printf("overlay: %s\nbase: %s\nsize: %" PRIu64 "\n"
	       "written: %" PRIu64 " bytes\nzeroed: %" PRIu64 " bytes\n"
	       "extents: %" PRIu64 "\n",
	       path, i.identity, i.size, i.data_blocks * ND_OVERLAY_BLOCK,
	       i.zero_blocks * ND_OVERLAY_BLOCK, i.extents);
	free(i.identity);
	return 0;
}

/* The diff format: a line "netdiskfs-overlay-diff 1 SIZE", then for each
 * changed range a line "D OFFSET LENGTH" followed by LENGTH bytes, or a
 * line "Z OFFSET LENGTH" for a range that reads as zeroes. */
struct diff_out {
	FILE *f;
	const char *path;
	char *buf;
};

static int diff_run(uint64_t off, uint64_t len, bool zero, void *arg)
{
	struct diff_out *d = arg;
	fprintf(d->f, "%c %" PRIu64 " %" PRIu64 "\n", zero ? 'Z' : 'D', off,
		len);
	while (!zero && len) {
		size_t n = len < (1u << 20) ? (size_t)len : 1u << 20;
		if (nd_overlay_read_data(d->path, d->buf, n, off) ||
		    fwrite(d->buf, 1, n, d->f) != n)
			return -1;
		off += n;
		len -= n;
	}
	return ferror(d->f) ? -1 : 0;
}

static int overlay_diff(const char *path, const char *outp)
{
	struct nd_overlay_info i;
	struct diff_out d = { .path = path, .buf = malloc(1u << 20) };
	int r = -1;

	if (!d.buf || nd_overlay_info(path, &i))
		return failed("overlay diff");
	free(i.identity);
	if (!(d.f = fopen(outp, "wbx"))) {
		fprintf(stderr, "netdiskfs overlay diff: %s: %s\n", outp,
			strerror(errno));
		free(d.buf);
		return 1;
	}
	fprintf(d.f, "netdiskfs-overlay-diff 1 %" PRIu64 "\n", i.size);
	r = nd_overlay_each(path, diff_run, &d);
	if (fclose(d.f) != 0)
		r = -1;
	free(d.buf);
	return r ? failed("overlay diff") : 0;
}

/* The disk SOURCE (a device URL) names, with the -o OPTS after it,
 * refused unless its identity is WANT (what the file at PATH recorded). */
static int open_source(const char *path, const char *want, const char *source,
		       char **opts, int nopts, bool rw, struct nd_disk **d)
{
	struct nd_opts defaults;
	struct nd_table t = { 0 };
	char *id = NULL;
	int r = -1;

	nd_opts_init(&defaults, "-o");
	for (int i = 0; i + 1 < nopts; i += 2)
		if (strcmp(opts[i], "-o") != 0 ||
		    nd_opts_parse_list(&defaults, opts[i + 1], "-o") == -1)
			goto out;
	if (!rw && nd_opt_set(&defaults, "ro", "on", "-o") == -1)
		goto out;
	if (nd_table_from_url(source, &defaults, nd_disk_prune_opts, &t,
			      stderr) != 0 ||
	    t.n != 1 || nd_disk_open(&t.e[0].opts, d) != 0)
		goto out;
	id = nd_stack_identity(nd_disk_opts(*d), nd_disk_size(*d));
	if (id && strcmp(id, want) == 0) {
		r = 0;
	} else {
		nd_error("%s was made for '%s', not '%s'", path, want,
			 id ? id : "?");
		nd_disk_close(*d);
	}
out:
	free(id);
	nd_table_free(&t);
	nd_opts_free(&defaults);
	return r;
}

/* The base an overlay was made over. */
static int open_base(const char *path, const char *source, char **opts,
		     int nopts, bool rw, struct nd_disk **d)
{
	struct nd_overlay_info info = { 0 };
	int r = nd_overlay_info(path, &info) ? -1
		: open_source(path, info.identity, source, opts, nopts, rw, d);
	free(info.identity);
	return r;
}

/* The changed runs, collected before any is forgotten. */
struct runs {
	size_t n, cap;
	struct run { uint64_t off, len; bool zero; } *v;
};

static int add_run(uint64_t off, uint64_t len, bool zero, void *arg)
{
	struct runs *rs = arg;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 64;
		struct run *v = realloc(rs->v, cap * sizeof *v);
		if (!v)
			return -1;
		rs->v = v;
		rs->cap = cap;
	}
	rs->v[rs->n++] = (struct run){ off, len, zero };
	return 0;
}

/* Write run R into D, read it back and compare: 0 when D holds it. */
static int commit_run(const char *path, struct nd_disk *d, const struct run *r,
		      char *a, char *b)
{
	for (uint64_t done = 0; done < r->len;) {
		size_t n = r->len - done < (1u << 20) ? (size_t)(r->len - done)
						      : 1u << 20;
		uint64_t off = r->off + done;
		if (r->zero)
			memset(a, 0, n);
		if ((!r->zero && nd_overlay_read_data(path, a, n, off)) ||
		    (r->zero ? nd_disk_zero(d, n, off, 0)
			     : nd_disk_pwrite(d, a, n, off, 0)) ||
		    nd_disk_flush(d) || nd_disk_pread(d, b, n, off))
			return -1;
		if (memcmp(a, b, n) != 0) {
			nd_error("the base does not read back what was written "
				 "at %llu", (unsigned long long)off);
			return -1;
		}
		done += n;
	}
	return 0;
}

/* netdiskfs overlay commit PATH SOURCE [-o OPTS]: each changed run is
 * written into the base, flushed, verified, then forgotten; an
 * interrupted commit goes on where it stopped when run again. */
static int overlay_commit(const char *path, const char *source, char **opts,
			  int nopts)
{
	struct nd_disk *d;
	struct runs rs = { 0 };
	char *a = malloc(1u << 20), *b = malloc(1u << 20);
	uint64_t bytes = 0;
	int r = -1;

	if (!a || !b || open_base(path, source, opts, nopts, true, &d) != 0)
		goto out;
	if (nd_overlay_each(path, add_run, &rs) == 0) {
		r = 0;
		for (size_t i = 0; r == 0 && i < rs.n; i++) {
			r = commit_run(path, d, &rs.v[i], a, b);
			if (r == 0)
				r = nd_overlay_forget(path, rs.v[i].off, rs.v[i].len);
			bytes += rs.v[i].len;
		}
	}
	nd_disk_close(d);
	if (r == 0)
		printf("committed %zu ranges, %llu bytes\n", rs.n,
		       (unsigned long long)bytes);
out:
	free(rs.v);
	free(a);
	free(b);
	return r ? failed("overlay commit") : 0;
}

/* netdiskfs overlay export PATH SOURCE OUT [-o OPTS]: the whole disk as
 * the mount shows it (base + overlay), a sparse raw file. */
static int overlay_export(const char *path, const char *source,
			  const char *outp, char **opts, int nopts)
{
	struct nd_disk *d;
	struct nd_layer *base, *l;
	struct nd_overlay_opts o = { .create = false };
	char *buf = malloc(1u << 20), *zero = calloc(1, 1u << 20);
	FILE *out = NULL;
	int r = -1;

	if (!buf || !zero || open_base(path, source, opts, nopts, false, &d))
		goto done;
	char *id = nd_stack_identity(nd_disk_opts(d), nd_disk_size(d));
	if (!id || nd_layer_cache_open(d, NULL, true, &base) ||
	    nd_overlay_open(path, base, id, &o, &l)) {
		free(id);
		goto done;
	}
	free(id);
	if ((out = fopen(outp, "wbx")) && ftruncate(fileno(out), (off_t)l->size) == 0) {
		r = 0;
		for (uint64_t off = 0; r == 0 && off < l->size; off += 1u << 20) {
			size_t n = l->size - off < (1u << 20) ? (size_t)(l->size - off)
							      : 1u << 20;
			r = nd_layer_pread(l, buf, n, off);
			if (r == 0 && memcmp(buf, zero, n) != 0 &&
			    (fseeko(out, (off_t)off, SEEK_SET) ||
			     fwrite(buf, 1, n, out) != n))
				r = -1;
		}
	} else {
		nd_error("%s: %m", outp);
	}
	if (out && fclose(out) != 0)
		r = -1;
	nd_layer_close(l);
done:
	free(buf);
	free(zero);
	return r ? failed("overlay export") : 0;
}

static int overlay_main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[2], "commit") == 0)
		return overlay_commit(argv[3], argv[4], argv + 5, argc - 5);
	if (argc >= 6 && strcmp(argv[2], "export") == 0)
		return overlay_export(argv[3], argv[4], argv[5], argv + 6,
				      argc - 6);
	if (argc == 4 && strcmp(argv[2], "info") == 0)
		return overlay_info(argv[3]);
	if (argc == 4 && strcmp(argv[2], "discard") == 0) {
		struct nd_overlay_info i;
		if (nd_overlay_info(argv[3], &i) ||
		    (free(i.identity), nd_overlay_forget(argv[3], 0, i.size)))
			return failed("overlay discard");
		return 0;
	}
	if (argc == 5 && strcmp(argv[2], "diff") == 0)
		return overlay_diff(argv[3], argv[4]);
	return usage("overlay info|discard PATH | overlay diff PATH OUT | "
		     "overlay commit PATH SOURCE [-o OPTS] | overlay export PATH "
		     "SOURCE OUT [-o OPTS]");
}

/* --- cache and qcow2 ------------------------------------------------------- */

static int cache_main(int argc, char **argv)
{
	const char *name = argc == 5 ? argv[4] : NULL;
	int r;
	if (argc < 4 || argc > 5)
		return usage("cache ls|verify|drop CACHE-DIR [NAME]");
	if (strcmp(argv[2], "ls") == 0)
		r = nd_tier_ls(argv[3], name, stdout);
	else if (strcmp(argv[2], "verify") == 0)
		r = nd_tier_verify(argv[3], name, stdout);
	else if (strcmp(argv[2], "drop") == 0)
		r = nd_tier_drop(argv[3], name, stdout);
	else
		return usage("cache ls|verify|drop CACHE-DIR [NAME]");
	return r < 0 ? failed("cache") : r;
}

static int qcow2_main(int argc, char **argv)
{
	struct nd_layer *f;
	int r;
	if (argc != 4 || strcmp(argv[2], "info") != 0)
		return usage("qcow2 info FILE");
	if (nd_layer_file_open(argv[3], true, &f))
		return failed("qcow2 info");
	r = nd_qcow2_describe(f, stdout);
	nd_layer_close(f);
	return r ? failed("qcow2 info") : 0;
}

/* netdiskfs recover FILE SOURCE [-o OPTS]: what could not be written at
 * unmount goes to the disk it was meant for; the file is removed after. */
static int recover_main(int argc, char **argv)
{
	struct nd_disk *d;
	uint64_t bytes;
	char *want;
	int r;

	if (argc < 4)
		return usage("recover FILE SOURCE [-o OPTS]");
	if (!(want = nd_recover_identity(argv[2])))
		return failed("recover");
	r = open_source(argv[2], want, argv[3], argv + 4, argc - 4, true, &d);
	free(want);
	if (r)
		return failed("recover");
	r = nd_recover_apply(argv[2], d, &bytes);
	nd_disk_close(d);
	if (r)
		return failed("recover");
	printf("recovered %llu bytes from %s\n", (unsigned long long)bytes,
	       argv[2]);
	if (unlink(argv[2]) != 0)
		fprintf(stderr, "netdiskfs recover: %s: %s\n", argv[2],
			strerror(errno));
	return 0;
}

int nd_tool_main(int argc, char **argv)
{
	if (argc < 2)
		return ND_NOT_A_TOOL;
	if (strcmp(argv[1], "overlay") == 0)
		return overlay_main(argc, argv);
	if (strcmp(argv[1], "cache") == 0)
		return cache_main(argc, argv);
	if (strcmp(argv[1], "qcow2") == 0)
		return qcow2_main(argc, argv);
	if (strcmp(argv[1], "recover") == 0)
		return recover_main(argc, argv);
	return ND_NOT_A_TOOL;
}
