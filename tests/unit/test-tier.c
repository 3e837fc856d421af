/* test-tier: the persistent cache tier keeps blocks across a reopen and
 * serves only blocks whose checksum matches: a corrupted block, a
 * truncated map, kill -9 in the middle of puts, a changed validator and a
 * writer that did not close cleanly never make a wrong byte readable; the
 * limit holds; a second user of the directory is refused; a full file
 * system turns the tier off without an error; the tools see it all. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "tier.h"

#define BS 65536u
#define NB 64u
#define SIZE ((uint64_t)NB * BS + 1000) /* a short last block */

static char dir[] = "/tmp/netdiskfs-tier.XXXXXX";
static char cdir[200];

#include "check.h"

static size_t blen(uint64_t i)
{
	return i == NB ? 1000 : BS;
}

static void content(unsigned char *p, uint64_t i, unsigned gen)
{
	for (size_t k = 0; k < BS; k++)
		p[k] = (unsigned char)(i * 31 + k * 7 + gen);
}

/* QUEUE: the writer's queue in bytes (0: the default). */
static struct nd_tier *topen_q(const char *validator, uint64_t limit,
			       bool writable, uint64_t queue)
{
	struct nd_tier_cfg c = { .dir = cdir, .limit = limit, .block_size = BS,
				 .size = SIZE, .identity = "driver=nbd,export=x",
				 .validator = validator, .writable = writable,
				 .queue = queue };
	struct nd_tier *t = NULL;
	if (nd_tier_open(&c, &t) != 0)
		printf("open: %s\n", nd_get_error());
	return t;
}

static struct nd_tier *topen(const char *validator, uint64_t limit,
			     bool writable)
{
	return topen_q(validator, limit, writable, 0);
}

/* How many blocks read back; each one read must be right (GEN). */
static unsigned count_good(struct nd_tier *t, unsigned gen)
{
	static unsigned char got[BS], want[BS];
	unsigned n = 0;
	for (uint64_t i = 0; i <= NB; i++) {
		if (!nd_tier_get(t, i, got, blen(i)))
			continue;
		content(want, i, gen);
		CHECK(memcmp(got, want, blen(i)) == 0, "block %llu is wrong",
		      (unsigned long long)i);
		n++;
	}
	return n;
}

static void put_all(struct nd_tier *t, unsigned gen)
{
	static unsigned char p[BS];
	for (uint64_t i = 0; i <= NB; i++) {
		content(p, i, gen);
		nd_tier_put(t, i, p, blen(i));
	}
}

static void sh(const char *cmd)
{
	char full[1024];
	snprintf(full, sizeof full, "cd %s && %s", cdir, cmd);
	if (system(full) != 0)
		printf("command failed: %s\n", cmd);
}

static void basics(void)
{
	struct nd_tier *t = topen("etag-1", 0, false), *t2;
	CHECK(t, "open");
	put_all(t, 1);
	CHECK(count_good(t, 1) == NB + 1, "all blocks back");
	t2 = topen("etag-1", 0, false);
	CHECK(t2 == NULL, "a second mount of the same entry must be refused");
	nd_tier_close(t);
	t = topen("etag-1", 0, false);
	CHECK(t && count_good(t, 1) == NB + 1, "all blocks after a reopen");
	nd_tier_close(t);
	/* A corrupted block and a truncated map: never a wrong byte. */
	sh("for d in */; do printf XXXX | dd of=$d/data bs=1 seek=70000 "
	   "conv=notrunc status=none; truncate -s 256 $d/map; done");
	t = topen("etag-1", 0, false);
	CHECK(t && count_good(t, 1) == 31, "31 blocks survive (got %u)",
	      t ? count_good(t, 1) : 0);
	nd_tier_close(t);
	t = topen("etag-2", 0, false);
	CHECK(t && count_good(t, 1) == 0, "a new validator drops the blocks");
	put_all(t, 2);
	nd_tier_close(t);
	t = topen("etag-2", 10 * BS, false);
	CHECK(t && count_good(t, 2) <= 10, "the limit holds on reopen");
	put_all(t, 2);
	CHECK(count_good(t, 2) <= 10, "the limit holds");
	nd_tier_close(t);
}

static void writer(void)
{
	struct nd_tier *t = topen("", 0, true);
	put_all(t, 3);
	nd_tier_invalidate(t, 5);
	CHECK(count_good(t, 3) == NB, "an invalidated block is gone");
	nd_tier_close(t);
	t = topen("", 0, true);
	CHECK(t && count_good(t, 3) == NB, "a clean close keeps the rest");
	pid_t pid = fork();
	if (pid == 0) {
		nd_tier_invalidate(t, 6); /* then die without a clean close */
		_exit(0);
	}
	waitpid(pid, NULL, 0);
	nd_tier_close(t);
	sh("ls */writer >/dev/null");
	/* The parent's close removed the mark here; a crash would not: */
	sh("for d in */; do touch $d/writer; done");
	t = topen("", 0, true);
	CHECK(t && count_good(t, 3) == 0,
	      "after a writer's crash every block is dropped");
	nd_tier_close(t);
}

static void crash_child(void)
{
	struct nd_tier *t = topen("", 0, false);
	for (unsigned gen = 0;; gen = (gen + 1) % 2) {
		(void)gen;
		put_all(t, 4);
	}
}

static void crashes(void)
{
	for (int round = 0; round < 5; round++) {
		sh("rm -rf ./*");
		pid_t pid = fork();
		if (pid == 0)
			crash_child();
		usleep(10000 + (unsigned)rand() % 100000);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		struct nd_tier *t = topen("", 0, false);
		CHECK(t, "reopen after kill -9");
		if (t)
			count_good(t, 4); /* every block it serves is right */
		nd_tier_close(t);
	}
}

/* Blocks IDX..IDX+N-1 of generation GEN[i] each through the queue (the
 * bytes freed when the writer is done with them). True when queued. */
static bool queue_gens(struct nd_tier *t, uint64_t idx, size_t n,
		       const unsigned *gen)
{
	unsigned char *run = malloc(n * BS);
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		content(run + i * BS, idx + i, gen[idx + i]);
		len += blen(idx + i);
	}
	if (nd_tier_queue_run(t, idx, n, run, len, free, run))
		return true;
	free(run);
	return false;
}

/* Wait (5 s at most) until the writer thread emptied the queue. */
static void drain_wait(struct nd_tier *t)
{
	struct nd_tier_stats s;
	for (int i = 0; i < 500; i++) {
		nd_tier_get_stats(t, &s);
		if (!s.queued)
			return;
		usleep(10000);
	}
	CHECK(0, "the queue did not drain in 5 s (%llu bytes)",
	      (unsigned long long)s.queued);
}

/* Each block read back is of generation GEN[i]. How many were. */
static unsigned count_gens(struct nd_tier *t, const unsigned *gen)
{
	static unsigned char got[BS], want[BS];
	unsigned n = 0;
	for (uint64_t i = 0; i <= NB; i++) {
		if (!nd_tier_get(t, i, got, blen(i)))
			continue;
		content(want, i, gen[i]);
		CHECK(memcmp(got, want, blen(i)) == 0,
		      "block %llu is not of generation %u",
		      (unsigned long long)i, gen[i]);
		n++;
	}
	return n;
}

/* The writer thread's queue: a close writes what is queued; a run that
 * does not fit is left out and counted; a copy queued before an
 * invalidation of its block never lands after it (the write's bytes, or
 * nothing, is what the block holds); the writer turns the tier off on a
 * full file system. */
static void queued(void)
{
	unsigned gen[NB + 1];
	struct nd_tier_stats st;
	struct nd_tier *t;

	sh("rm -rf ./*");
	for (uint64_t i = 0; i <= NB; i++)
		gen[i] = 7;
	t = topen("", 0, false);
	for (uint64_t i = 0; i <= NB; i += 8)
		queue_gens(t, i, i + 8 <= NB + 1 ? 8 : NB + 1 - i, gen);
	nd_tier_close(t); /* at once: the close writes the queue */
	t = topen("", 0, false);
	CHECK(t && count_gens(t, gen) == NB + 1, "the close wrote the queue");
	nd_tier_close(t);

	sh("rm -rf ./*");
	t = topen_q("", 0, false, 2 * BS);
	CHECK(!queue_gens(t, 8, 4, gen), "4 blocks in a queue of 2: left out");
	drain_wait(t);
	nd_tier_get_stats(t, &st);
	CHECK(st.queue_dropped_blocks == 4 && st.queue_dropped_bytes == 4 * BS &&
		  st.queue_limit == 2 * BS,
	      "dropped: %llu blocks, %llu bytes",
	      (unsigned long long)st.queue_dropped_blocks,
	      (unsigned long long)st.queue_dropped_bytes);
	CHECK(!nd_tier_has(t, 8) && count_gens(t, gen) == 0,
	      "what did not fit is not there");
	nd_tier_close(t);

	/* A read fetched blocks (queued), then this mount wrote one of them
	 * (invalidated, a new generation), then maybe read it again. */
	sh("rm -rf ./*");
	srand((unsigned)time(NULL));
	t = topen("", 0, true);
	for (int r = 0; r < 300; r++) {
		uint64_t k = (uint64_t)rand() % (NB - 4);
		uint64_t j = k + (uint64_t)rand() % 4;
		queue_gens(t, k, 4, gen);
		nd_tier_invalidate(t, j);
		gen[j]++;
		if (r % 3 == 1)
			queue_gens(t, j, 1, gen);
		if (r % 3 == 2) {
			static unsigned char p[BS];
			content(p, j, gen[j]);
			nd_tier_put(t, j, p, BS);
		}
	}
	drain_wait(t);
	count_gens(t, gen);
	nd_tier_close(t);
	t = topen("", 0, true);
	CHECK(t, "reopen after the invalidations");
	count_gens(t, gen);
	nd_tier_close(t);
}

static void full_fs(void)
{
	char tiny[100], cmd[300];
	snprintf(tiny, sizeof tiny, "%s/tiny", dir);
	snprintf(cmd, sizeof cmd, "mkdir -p %s && mount -t tmpfs -o size=512k "
		 "tmpfs %s", tiny, tiny);
	CHECK(system(cmd) == 0, "mount a tiny tmpfs");
	snprintf(cdir, sizeof cdir, "%s", tiny);
	struct nd_tier *t = topen("", 100 * BS, false);
	CHECK(t, "open on a tiny file system");
	put_all(t, 5); /* fills it: the tier turns itself off */
	struct nd_tier_stats s;
	nd_tier_get_stats(t, &s);
	CHECK(!s.on && strstr(s.state, "off"), "the tier is off (state %s)",
	      s.state);
	count_good(t, 5);
	nd_tier_close(t);
	/* The same through the queue: its writer thread turns it off. */
	sh("rm -rf ./*");
	t = topen("", 100 * BS, false);
	unsigned gen[NB + 1];
	for (uint64_t i = 0; i <= NB; i++)
		gen[i] = 5;
	for (uint64_t i = 0; i < NB; i += 4)
		queue_gens(t, i, 4, gen);
	drain_wait(t);
	nd_tier_get_stats(t, &s);
	CHECK(!s.on && strstr(s.state, "off"),
	      "the writer turned the tier off (state %s)", s.state);
	count_gens(t, gen);
	nd_tier_close(t);
	umount(tiny);
}

static void tools(void)
{
	FILE *out = fopen("/dev/null", "w");
	struct nd_tier *t = topen("", 0, false);
	put_all(t, 6);
	nd_tier_close(t);
	CHECK(nd_tier_ls(cdir, NULL, out) == 0, "cache ls");
	CHECK(nd_tier_verify(cdir, "export=x", out) == 0, "verify: clean");
	sh("for d in */; do printf XXXX | dd of=$d/data bs=1 seek=10 "
	   "conv=notrunc status=none; done");
	CHECK(nd_tier_verify(cdir, NULL, out) == 1, "verify: one bad block");
	CHECK(nd_tier_verify(cdir, NULL, out) == 0, "verify forgot it");
	CHECK(nd_tier_verify(cdir, "nothing-like-this", out) == -1,
	      "verify: no such entry");
	CHECK(nd_tier_drop(cdir, NULL, out) == 0, "drop");
	t = topen("", 0, false);
	CHECK(t && count_good(t, 6) == 0, "nothing after drop");
	nd_tier_close(t);
	fclose(out);
}

static struct nd_tier *topen_info(const char *validator, const char *info,
				  uint64_t limit)
{
	struct nd_tier_cfg c = { .dir = cdir, .limit = limit, .block_size = BS,
				 .size = SIZE, .identity = "driver=http,url=y",
				 .validator = validator, .info = info };
	struct nd_tier *t = NULL;
	if (nd_tier_open(&c, &t) != 0)
		printf("open: %s\n", nd_get_error());
	return t;
}

/* What a mount records for the next one to mount with the server down:
 * nd_tier_peek gives it back; the backend's facts changing alone keep
 * the blocks; a new validator drops them and the stats say why. */
static void recorded(void)
{
	struct nd_tier_stats st;
	char *v = NULL, *info = NULL;
	struct nd_tier *t;

	CHECK(nd_tier_peek(cdir, "driver=http,url=y", &v, &info) == -1,
	      "peek of an entry never mounted");
	t = topen_info("\"e1\"", "facts-1", 0);
	put_all(t, 5);
	CHECK(nd_tier_full(t), "all blocks in: full at the image's size");
	nd_tier_close(t);
	CHECK(nd_tier_peek(cdir, "driver=http,url=y", &v, &info) == 0 && v &&
		  strcmp(v, "\"e1\"") == 0 && info && strcmp(info, "facts-1") == 0,
	      "peek: validator %s, info %s", v ? v : "-", info ? info : "-");
	free(v);
	free(info);
	t = topen_info("\"e1\"", "facts-2", 0);
	CHECK(t && count_good(t, 5) == NB + 1, "new facts, same object: kept");
	nd_tier_get_stats(t, &st);
	CHECK(st.dropped[0] == 0, "nothing dropped: %s", st.dropped);
	nd_tier_close(t);
	CHECK(nd_tier_peek(cdir, "driver=http,url=y", &v, &info) == 0 && info &&
		  strcmp(info, "facts-2") == 0,
	      "the new facts are recorded");
	free(v);
	free(info);
	t = topen_info("\"e2\"", "facts-2", 0);
	CHECK(t && count_good(t, 5) == 0, "a new validator drops the blocks");
	nd_tier_get_stats(t, &st);
	CHECK(strstr(st.dropped, "validator") && strstr(st.dropped, "e1"),
	      "stats say why: '%s'", st.dropped);
	CHECK(!nd_tier_full(t), "empty: not full");
	nd_tier_close(t);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	snprintf(cdir, sizeof cdir, "%s/cache", dir);
	basics();
	recorded();
	writer();
	queued();
	crashes();
	tools();
	full_fs();
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	(void)!system(cmd);
	printf("test-tier: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
