/* file.c: a local file or block device (file:///PATH or /PATH): the base
 * for unit tests and the demo. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"

struct file_conn {
	int fd;
	bool is_blk;
};

static int file_open(const struct nd_opts *opts, const struct nd_settings *s,
		     void **conn, struct nd_info *info)
{
	const char *path = nd_opt_get(opts, "filename");
	struct file_conn *h;
	struct stat st;
	bool ro = s->read_only;

	int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd == -1 && !ro && (errno == EACCES || errno == EROFS)) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		ro = true;
	}
	if (fd == -1) {
		nd_error("entry '%s': %s: %m", opts->name, path);
		return -errno;
	}
	if (fstat(fd, &st) == -1) {
		nd_error("entry '%s': %s: %m", opts->name, path);
		goto fail;
	}
	info->size = st.st_size;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &info->size) == -1) {
			nd_error("entry '%s': %s: BLKGETSIZE64: %m",
				 opts->name, path);
			goto fail;
		}
	} else if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		nd_error("entry '%s': %s is not a regular file or block device",
			 opts->name, path);
		goto fail;
	}
	h = malloc(sizeof *h);
	if (!h)
		goto fail;
	h->fd = fd;
	h->is_blk = S_ISBLK(st.st_mode);
	info->block_size = 1;
	info->read_only = ro;
	info->can_flush = info->can_zero = true;
	info->can_grow = !ro && !h->is_blk;
	info->can_multi_conn = true;
	info->thread_safe = true;
	info->max_connections = 1;
	*conn = h;
	return 0;
fail:;
	int e = errno;
	close(fd);
	return -e;
}

static void file_close(void *conn)
{
	struct file_conn *h = conn;
	close(h->fd);
	free(h);
}

static int file_pread(void *conn, void *buf, size_t len, uint64_t off)
{
	struct file_conn *h = conn;
	while (len > 0) {
		ssize_t n = pread(h->fd, buf, len, off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			nd_error("pread: %m");
			return -errno;
		}
		if (n == 0) {
			nd_error("pread: unexpected end of file");
			return -EIO;
		}
		buf = (char *)buf + n;
		len -= n;
		off += n;
	}
	return 0;
}

static int file_pwrite(void *conn, const void *buf, size_t len, uint64_t off)
{
	struct file_conn *h = conn;
	while (len > 0) {
		ssize_t n = pwrite(h->fd, buf, len, off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			nd_error("pwrite: %m");
			return -errno;
		}
		buf = (const char *)buf + n;
		len -= n;
		off += n;
	}
	return 0;
}

static int file_flush(void *conn)
{
	struct file_conn *h = conn;
	if (fdatasync(h->fd) == -1) {
		nd_error("fdatasync: %m");
		return -errno;
	}
	return 0;
}

static int file_zero(void *conn, uint64_t len, uint64_t off, unsigned flags)
{
	struct file_conn *h = conn;
	int mode = (flags & ND_MAY_TRIM) && !h->is_blk
			   ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
			   : FALLOC_FL_ZERO_RANGE;
	if (h->is_blk) {
		uint64_t range[2] = { off, len };
		if (ioctl(h->fd, BLKZEROOUT, range) == 0)
			return 0;
	} else if (fallocate(h->fd, mode, off, len) == 0)
		return 0;
	nd_error("zero: %m");
	return errno == EOPNOTSUPP || errno == ENOTTY ? -EOPNOTSUPP : -errno;
}

static const char *const file_drivers[] = { "file", "host_device", NULL };
static const char *const file_schemes[] = { "file", "/PATH", NULL };
static const struct nd_optdesc file_options[] = {
    {"filename", ND_OPT_FILE, NULL, false,
     "path of the local file or block device"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};

static const struct nd_backend file_backend = {
    .name = "file",
    .drivers = file_drivers,
    .schemes = file_schemes,
    .description = "a local file or block device",
    .options = file_options,
    .open = file_open,
    .close = file_close,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .flush = file_flush,
    .zero = file_zero,
};
ND_BACKEND_REGISTER(file_backend)
