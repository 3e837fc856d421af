/* test-overlay: the copy-on-write overlay against a model: random writes
 * (partial blocks included), zeroes and a short last block read back
 * exactly, also after a reopen; the base file is never written; another
 * base is refused; kill -9 in the middle of writes loses nothing that a
 * flush acknowledged and leaves every block whole; the tools' view (info,
 * each, forget) matches, and so do the status figures of an open overlay. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "layers/layer.h"
#include "layers/overlay.h"
#include "log.h"

#define SIZE (8u * 1048576 + 1000) /* not a whole number of blocks */
#define BLK ND_OVERLAY_BLOCK

static char dir[] = "/tmp/netdiskfs-overlay.XXXXXX";
static char base_path[256], ovl_path[256];
static unsigned char *model;

#include "check.h"

static struct nd_layer *open_overlay(const char *identity, bool force,
				     int *err)
{
	struct nd_layer *base, *ovl = NULL;
	struct nd_overlay_opts o = { .create = true, .force = force };
	*err = nd_layer_file_open(base_path, true, &base);
	if (*err == 0)
		*err = nd_overlay_open(ovl_path, base, identity, &o, &ovl);
	return ovl;
}

static void compare_all(struct nd_layer *l, const char *when)
{
	unsigned char *buf = malloc(SIZE);
	int r = nd_layer_pread(l, buf, SIZE, 0);
	CHECK(r == 0 && memcmp(buf, model, SIZE) == 0, "%s: bytes differ", when);
	free(buf);
}

static void random_ops(struct nd_layer *l, unsigned n)
{
	unsigned char buf[3 * BLK + 100];
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = (uint64_t)rand() % SIZE;
		size_t len = 1 + (size_t)rand() % sizeof buf;
		if (len > SIZE - off)
			len = SIZE - off;
		if (rand() % 5 == 0) {
			CHECK(nd_layer_zero(l, len, off) == 0, "zero %zu at %llu",
			      len, (unsigned long long)off);
			memset(model + off, 0, len);
			continue;
		}
		for (size_t k = 0; k < len; k++)
			buf[k] = (unsigned char)rand();
		CHECK(nd_layer_pwrite(l, buf, len, off) == 0, "write");
		memcpy(model + off, buf, len);
	}
}

static void model_from_base(void)
{
	FILE *f = fopen(base_path, "rb");
	if (!f || fread(model, 1, SIZE, f) != SIZE)
		exit(1);
	fclose(f);
}

static void roundtrip(void)
{
	int err;
	struct nd_layer *l = open_overlay("nbd:base", false, &err);
	CHECK(l, "create the overlay");
	if (!l)
		return;
	compare_all(l, "fresh overlay");
	random_ops(l, 400);
	/* A big zero of whole blocks, and the short last block. */
	CHECK(nd_layer_zero(l, 1048576 + 5, 2 * 1048576 - 3) == 0, "big zero");
	memset(model + 2 * 1048576 - 3, 0, 1048576 + 5);
	CHECK(nd_layer_pwrite(l, "tail", 4, SIZE - 4) == 0, "tail write");
	memcpy(model + SIZE - 4, "tail", 4);
	compare_all(l, "after writes");
	CHECK(nd_layer_flush(l) == 0, "flush");
	nd_layer_close(l);
	l = open_overlay("nbd:base", false, &err);
	CHECK(l, "reopen");
	if (l) {
		compare_all(l, "after a reopen");
		nd_layer_close(l);
	}
	unsigned char *b = malloc(SIZE);
	memcpy(b, model, SIZE);
	model_from_base();
	CHECK(memcmp(b, model, SIZE) != 0, "the overlay changed nothing?");
	memcpy(model, b, SIZE);
	free(b);
}

static void refusal(void)
{
	int err;
	struct nd_layer *l = open_overlay("nbd:other", false, &err);
	CHECK(!l && strstr(nd_get_error(), "nbd:base") &&
		      strstr(nd_get_error(), "nbd:other"),
	      "another base must be refused naming both");
	l = open_overlay("nbd:other", true, &err);
	CHECK(l, "overlay-force=on takes another base");
	nd_layer_close(l);
}

static int count_run(uint64_t off, uint64_t len, bool zero, void *arg)
{
	uint64_t *n = arg;
	n[zero] += len;
	return 0;
}

/* The status figures of a mounted overlay agree with the file (INFO),
 * and follow a write and a zero; another layer has none. */
static void stats(const struct nd_overlay_info *info)
{
	struct nd_overlay_stats st;
	int err;
	struct nd_layer *l = open_overlay("nbd:base", false, &err), *f = NULL;
	if (!l)
		return;
	CHECK(nd_overlay_stats(l, &st) && strcmp(st.path, ovl_path) == 0 &&
		      st.data_bytes == info->data_blocks * BLK &&
		      st.zero_bytes == info->zero_blocks * BLK &&
		      st.writes == 0 && st.base_errors == 0,
	      "stats after a reopen");
	/* Two blocks of zeroes at the start, then one written over. */
	CHECK(nd_layer_zero(l, 2 * BLK, 0) == 0 &&
		      nd_layer_pwrite(l, "x", 1, BLK + 7) == 0,
	      "zero and write");
	memset(model, 0, 2 * BLK);
	model[BLK + 7] = 'x';
	struct nd_overlay_info now;
	CHECK(nd_layer_flush(l) == 0 && nd_overlay_info(ovl_path, &now) == 0,
	      "flush and info");
	CHECK(nd_overlay_stats(l, &st) && st.writes == 2 &&
		      st.data_bytes == now.data_blocks * BLK &&
		      st.zero_bytes == now.zero_blocks * BLK &&
		      st.zero_bytes >= BLK && st.data_bytes >= BLK,
	      "stats after a zero and a write (data %llu, zero %llu)",
	      (unsigned long long)st.data_bytes,
	      (unsigned long long)st.zero_bytes);
	free(now.identity);
	CHECK(nd_layer_file_open(base_path, true, &f) == 0 &&
		      !nd_overlay_stats(f, &st),
	      "a file layer is no overlay");
	nd_layer_close(f);
	nd_layer_close(l);
}

static void tools(void)
{
	struct nd_overlay_info info;
	uint64_t bytes[2] = { 0, 0 };
	CHECK(nd_overlay_info(ovl_path, &info) == 0 && info.size == SIZE &&
		      info.data_blocks > 0 && info.zero_blocks >= 256 &&
		      strcmp(info.identity, "nbd:base") == 0,
	      "overlay info");
	CHECK(nd_overlay_each(ovl_path, count_run, bytes) == 0 &&
		      bytes[0] + bytes[1] > 0,
	      "overlay each");
	stats(&info);
	free(info.identity);
	CHECK(nd_overlay_forget(ovl_path, 0, SIZE) == 0, "forget all");
	CHECK(nd_overlay_info(ovl_path, &info) == 0 && info.data_blocks == 0 &&
		      info.zero_blocks == 0,
	      "nothing left after forget");
	free(info.identity);
	int err;
	struct nd_layer *l = open_overlay("nbd:base", false, &err);
	model_from_base();
	if (l) {
		compare_all(l, "after forget: the base again");
		nd_layer_close(l);
	}
}

/* Block B's content as written in epoch E (1-based). */
static void pattern(unsigned char *p, unsigned e, uint64_t b)
{
	for (unsigned k = 0; k < BLK; k++)
		p[k] = (unsigned char)(e * 131 + b * 7 + k / 512);
}

static uint64_t epoch_block(unsigned e, unsigned i)
{
	return ((uint64_t)e * 2654435761u + i * 40503u) % (SIZE / BLK);
}

static void crash_child(int fd)
{
	int err;
	unsigned char p[BLK];
	struct nd_layer *l = open_overlay("nbd:base", false, &err);
	if (!l)
		_exit(2);
	for (unsigned e = 1;; e++) {
		for (unsigned i = 0; i < 16; i++) {
			uint64_t b = epoch_block(e, i);
			pattern(p, e, b);
			if (nd_layer_pwrite(l, p, BLK, b * BLK))
				_exit(3);
		}
		if (nd_layer_flush(l) || write(fd, &e, sizeof e) != sizeof e)
			_exit(4);
	}
}

/* Kill -9 a writer at a random moment after its first flush (at most
 * 10 s away, however busy the machine); what it flushed must be there. */
static void crash(unsigned round)
{
	int fds[2], st;
	unsigned e, last = 0;
	unlink(ovl_path);
	model_from_base();
	if (pipe(fds))
		exit(1);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		crash_child(fds[1]);
	}
	close(fds[1]);
	struct pollfd pf = {.fd = fds[0], .events = POLLIN};
	if (poll(&pf, 1, 10000) == 1 && read(fds[0], &e, sizeof e) == sizeof e)
		last = e;
	usleep(20000 + (unsigned)rand() % 200000);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	while (read(fds[0], &e, sizeof e) == sizeof e)
		last = e;
	close(fds[0]);
	int err;
	struct nd_layer *l = open_overlay("nbd:base", false, &err);
	CHECK(l && last > 0, "round %u: reopen after kill -9 (epoch %u)", round,
	      last);
	if (!l)
		return;
	unsigned char got[BLK], want[BLK], next[BLK];
	for (uint64_t b = 0; b < SIZE / BLK; b++) {
		memcpy(want, model + b * BLK, BLK);
		int newer = 0;
		for (unsigned x = 1; x <= last + 1; x++)
			for (unsigned i = 0; i < 16; i++)
				if (epoch_block(x, i) == b)
					pattern(x <= last ? want : next, x, b),
						newer = x > last;
		nd_layer_pread(l, got, BLK, b * BLK);
		CHECK(memcmp(got, want, BLK) == 0 ||
			      (newer && memcmp(got, next, BLK) == 0),
		      "round %u: block %llu lost a flushed write (epoch %u)",
		      round, (unsigned long long)b, last);
	}
	nd_layer_close(l);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	snprintf(base_path, sizeof base_path, "%s/base.img", dir);
	snprintf(ovl_path, sizeof ovl_path, "%s/disk.ovl", dir);
	model = malloc(SIZE);
	srand(7);
	for (size_t i = 0; i < SIZE; i++)
		model[i] = (unsigned char)rand();
	FILE *f = fopen(base_path, "wb");
	if (!f || fwrite(model, 1, SIZE, f) != SIZE || fclose(f))
		return 1;
	roundtrip();
	refusal();
	tools();
	for (unsigned i = 0; i < 5; i++)
		crash(i);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	(void)!system(cmd);
	printf("test-overlay: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
