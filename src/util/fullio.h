/* fullio.h: pread/pwrite of a whole range, through short transfers and
 * EINTR. 0, or -1 with errno. */
#ifndef ND_FULLIO_H
#define ND_FULLIO_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* At the file's end: zeroes when EOF_ZERO (a sparse file's tail), else
 * -1 with EIO. */
static inline int nd_full_pread(int fd, void *buf, size_t len, uint64_t off,
				bool eof_zero)
{
	while (len) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			if (!eof_zero) {
				errno = EIO;
				return -1;
			}
			memset(buf, 0, len);
			return 0;
		}
		buf = (char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static inline int nd_full_pwrite(int fd, const void *buf, size_t len,
				 uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ENOSPC;
			return -1;
		}
		buf = (const char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

#endif
