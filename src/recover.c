/* recover.c: the recovery file. A text header
 *   netdiskfs-recovery 1
 *   entry=NAME
 *   identity=CANONICAL OPTIONS WITHOUT SECRETS,size=N
 *   (an empty line)
 * then records of dirty data: offset (8 bytes), length (4 bytes), both
 * little-endian, then the bytes. Made 0600 under a 0700 directory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layers/stack.h"
#include "log.h"
#include "recover.h"

#define MAGIC "netdiskfs-recovery 1\n"

static FILE *create_file(const char *dir, const char *name, char **path)
{
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int fd;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
	mkdir(dir, 0700);
	if (asprintf(path, "%s/%s-%s-%d.ndrec", dir, name, stamp,
		     (int)getpid()) < 0) {
		*path = NULL;
		return NULL;
	}
	fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	return fd < 0 ? NULL : fdopen(fd, "w");
}

int nd_recover_save(const char *name, struct nd_disk *d, struct nd_cache *c)
{
	const char *dir = nd_opt_get(nd_disk_opts(d), "recovery-dir");
	struct nd_cache_stats st;
	nd_cache_get_stats(c, &st);
	if (st.dirty == 0)
		return 0; /* the failure was the server's flush alone */
	char *path = NULL, *id = nd_stack_identity(nd_disk_opts(d), nd_disk_size(d));
	uint64_t bytes = 0;
	FILE *f = id ? create_file(dir ? dir : ND_RECOVERY_DIR, name, &path)
		     : NULL;
	int r = -EIO;

	if (f && fprintf(f, MAGIC "entry=%s\nidentity=%s\n\n", name, id) > 0 &&
	    nd_cache_save_dirty(c, f, &bytes) == 0 && fflush(f) == 0 &&
	    fsync(fileno(f)) == 0)
		r = 0;
	if (f && fclose(f) != 0)
		r = -EIO;
	if (r == 0)
		nd_log(LOG_ERR, "entry '%s': %llu bytes could not be written to "
				"the server; saved to %s ('netdiskfs recover %s "
				"SOURCE' writes them back)",
		       name, (unsigned long long)bytes, path, path);
	else
		nd_log(LOG_ERR, "entry '%s': the data that could not be written "
				"could not be saved either (%s): it is lost",
		       name, path ? path : "no recovery file");
	free(path);
	free(id);
	return r;
}

/* Open PATH and read its header: the identity (malloc'd). */
static FILE *open_file(const char *path, char **identity)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	bool magic = false;

	*identity = NULL;
	if (!f) {
		nd_error("%s: %m", path);
		return NULL;
	}
	while (getline(&line, &cap, f) > 0 && strcmp(line, "\n") != 0) {
		line[strcspn(line, "\n")] = 0;
		if (strcmp(line, "netdiskfs-recovery 1") == 0)
			magic = true;
		else if (strncmp(line, "identity=", 9) == 0 && !*identity)
			*identity = strdup(line + 9);
	}
	free(line);
	if (!magic || !*identity) {
		errno = EINVAL;
		nd_error("%s: not a netdiskfs recovery file", path);
		free(*identity);
		*identity = NULL;
		fclose(f);
		return NULL;
	}
	return f;
}

char *nd_recover_identity(const char *path)
{
	char *id;
	FILE *f = open_file(path, &id);
	if (f)
		fclose(f);
	return id;
}

/* Write one record's LEN bytes at OFF into D and check they read back. */
static int apply_record(FILE *f, struct nd_disk *d, uint64_t off, uint32_t len)
{
	char *a = malloc(len ? len : 1), *b = malloc(len ? len : 1);
	int r = -1;
	if (a && b && fread(a, 1, len, f) == len &&
	    nd_disk_pwrite(d, a, len, off, 0) == 0 && nd_disk_flush(d) == 0 &&
	    nd_disk_pread(d, b, len, off) == 0) {
		r = memcmp(a, b, len) == 0 ? 0 : -1;
		if (r)
			nd_error("the disk does not read back what was written "
				 "at %llu", (unsigned long long)off);
	}
	free(a);
	free(b);
	return r;
}

int nd_recover_apply(const char *path, struct nd_disk *d, uint64_t *bytes)
{
	char *id;
	FILE *f = open_file(path, &id);
	uint8_t rec[12];
	int r = 0;

	*bytes = 0;
	if (!f)
		return -1;
	free(id);
	while (r == 0 && fread(rec, 1, sizeof rec, f) == sizeof rec) {
		uint64_t off = 0;
		uint32_t len = 0;
		for (int k = 7; k >= 0; k--)
			off = off << 8 | rec[k];
		for (int k = 3; k >= 0; k--)
			len = len << 8 | rec[8 + k];
		if (off > nd_disk_size(d) || len > nd_disk_size(d) - off) {
			errno = EINVAL;
			nd_error("%s: a record at %llu lies past the disk's end",
				 path, (unsigned long long)off);
			r = -1;
			break;
		}
		if ((r = apply_record(f, d, off, len)) == 0)
			*bytes += len;
	}
	fclose(f);
	return r;
}
