/* test-grow: a disk grows through the block cache (nd_cache_grow) over the
 * file backend, whose writes past the end extend the file: the block that
 * held the old, unaligned end was cached short and now reads its old bytes
 * then zeroes, the new range is readable and writable at once (write-
 * through and writeback), the file has the new size; a slice (size=) and
 * a read-only entry cannot grow (ENOSPC, EROFS). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "disk.h"
#include "workers.h"

#define OLD 100000u /* not a multiple of the 64 KiB cache block */
#define NEW 300000u

static char path[] = "/tmp/netdiskfs-grow.XXXXXX";
static unsigned char want[NEW];

#include "check.h"
#include "disk-open.h"

static struct nd_disk *open_disk(const char *extra)
{
	return test_disk_open("g", "file", path, extra);
}

static void fresh_file(void)
{
	FILE *f = fopen(path, "wb");
	memset(want, 0, sizeof want);
	for (unsigned i = 0; i < OLD; i++)
		want[i] = (unsigned char)(i * 2654435761u >> 13);
	if (!f || fwrite(want, 1, OLD, f) != OLD || fclose(f)) {
		perror(path);
		exit(1);
	}
}

static void read_check(struct nd_cache *c, uint64_t off, size_t len)
{
	static unsigned char buf[NEW];
	size_t got = 0;
	int r = nd_cache_pread(c, buf, len, off, &got);
	CHECK(r == 0 && got == len && memcmp(buf, want + off, len) == 0,
	      "read %zu at %llu: r=%d got=%zu", len, (unsigned long long)off, r,
	      got);
}

static void grow_with(const char *mode)
{
	fresh_file();
	struct nd_disk *d = open_disk(mode);
	struct nd_cache *c = nd_cache_new(d, 4u << 20);
	unsigned char piece[5000];

	read_check(c, 0, OLD); /* the short last block cached whole */
	CHECK(nd_cache_write(c, piece, 10, OLD) == -ENOSPC,
	      "%s: a write past "
	      "the end before growing",
	      mode);
	CHECK(nd_cache_grow(c, NEW) == 0, "%s: grow: %s", mode, nd_get_error());
	/* A write into that block, then a read of it: old bytes, the write,
	 * zeroes. */
	memset(piece, 0x5c, sizeof piece);
	CHECK(nd_cache_write(c, piece, sizeof piece, OLD - 1000) == 0,
	      "%s: write across the old end", mode);
	memcpy(want + OLD - 1000, piece, sizeof piece);
	read_check(c, OLD - 3000, 60000);
	CHECK(nd_cache_write(c, piece, sizeof piece, NEW - sizeof piece) == 0,
	      "%s: write at the new end", mode);
	memcpy(want + NEW - sizeof piece, piece, sizeof piece);
	read_check(c, 0, NEW);
	CHECK(nd_cache_flush(c) == 0, "%s: flush", mode);
	nd_cache_free(c);
	nd_disk_close(d);

	struct stat st;
	unsigned char *got = malloc(NEW);
	FILE *f = fopen(path, "rb");
	CHECK(stat(path, &st) == 0 && st.st_size == NEW, "%s: file size %lld",
	      mode, (long long)st.st_size);
	CHECK(f && got && fread(got, 1, NEW, f) == NEW &&
		  memcmp(got, want, NEW) == 0,
	      "%s: the file holds other bytes", mode);
	if (f)
		fclose(f);
	free(got);
}

int main(void)
{
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		return 1;
	}
	close(fd);
	nd_workers_start(2);
	grow_with("cache=writethrough");
	grow_with("cache=writeback");

	/* A slice and a read-only entry do not grow. */
	fresh_file();
	struct nd_disk *d = open_disk("size=50000");
	CHECK(nd_disk_grow(d, 60000) == -ENOSPC, "a slice grew");
	nd_disk_close(d);
	d = open_disk("ro=on");
	CHECK(nd_disk_grow(d, NEW) == -EROFS, "a read-only entry grew");
	nd_disk_close(d);

	unlink(path);
	printf("test-grow: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
