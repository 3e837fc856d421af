/* tools.c: the subcommands that work on netdiskfs's local files without a
 * mount: `netdiskfs overlay info|discard|diff PATH`, `netdiskfs cache
 * ls|verify|drop CACHE-DIR [NAME]` and `netdiskfs qcow2 info FILE`. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layer.h"
#include "layers/overlay.h"
#include "layers/qcow2.h"
#include "log.h"
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

static int overlay_main(int argc, char **argv)
{
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
	return usage("overlay info|discard PATH | overlay diff PATH OUT");
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
	return ND_NOT_A_TOOL;
}
