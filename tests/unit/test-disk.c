/* test-disk: the pool and reconnect of disk.c, driven by a scripted fake
 * backend (no server, no mount). The script is a few globals: the server
 * is up, refusing (connect fails at once, requests on old connections get
 * -ENOTCONN) or frozen (everything waits for the entry's timeout, as a
 * real backend does, then -ETIMEDOUT). Asserted: the first request after
 * the server dies fails within reconnect-delay + timeout; once
 * reconnect-delay has run out the entry is failed and later requests fail
 * at once; the first reconnect makes it serve again; waiting for a busy
 * pool slot is bounded; close does not wait on a dead server. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "disk-priv.h"
#include "util/clock.h"

#define DISK (1u << 20)

enum fake_mode { UP, REFUSE, FROZEN };
static atomic_int mode = UP;
static atomic_int hold_ms; /* an UP pread takes this long (slow, legit) */
static atomic_uint opens, open_conns;
static unsigned char mem[DISK];

/* A frozen server costs a real backend its whole timeout. */
static int frozen(const struct nd_settings *s)
{
	double t = s->timeout;
	usleep((useconds_t)(t * 1e6));
	nd_error("fake: no answer for %g s", t);
	return -ETIMEDOUT;
}

static struct nd_settings last_settings; /* what the last open() got */

struct fake_conn {
	const struct nd_settings *s;
	int gen; /* connections from before an outage stay broken */
};
static atomic_int generation;

static int fake_open(const struct nd_opts *o, const struct nd_settings *s,
		     void **h, struct nd_info *i)
{
	opens++;
	last_settings = *s;
	if (mode == REFUSE) {
		nd_error("fake: connection refused");
		return -ECONNREFUSED;
	}
	if (mode == FROZEN)
		return frozen(s);
	(void)o;
	struct fake_conn *c = malloc(sizeof *c);
	c->s = s;
	c->gen = generation;
	*h = c;
	memset(i, 0, sizeof *i);
	i->size = DISK;
	i->can_flush = true;
	open_conns++;
	return 0;
}

static void fake_close(void *h)
{
	open_conns--;
	free(h);
}

static int fake_pread(void *h, void *buf, size_t len, uint64_t off)
{
	struct fake_conn *c = h;
	if (mode == FROZEN)
		return frozen(c->s);
	if (mode == REFUSE || c->gen != generation) {
		nd_error("fake: connection reset");
		return -ENOTCONN;
	}
	if (hold_ms)
		usleep(hold_ms * 1000);
	memcpy(buf, mem + off, len);
	return 0;
}

static const char *const drivers[] = {"fake", NULL};
static const struct nd_optdesc fake_options[] = {
    {"server.N.password", ND_OPT_STRING, NULL, true, "a secret"},
    {"user", ND_OPT_STRING, NULL, false, "not one"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};
static const struct nd_backend fake_backend = {
    .name = "fake",
    .drivers = drivers,
    .options = fake_options,
    .open = fake_open,
    .close = fake_close,
    .pread = fake_pread,
};
ND_BACKEND_REGISTER(fake_backend)

#include "check.h"
#include "disk-open.h"

static struct nd_disk *disk_with(const char *extra)
{
	return test_disk_open("t", "fake", NULL, extra);
}

/* One 4 KiB read; returns its result, *secs how long it took. */
static int timed_read(struct nd_disk *d, double *secs)
{
	static __thread unsigned char buf[4096];
	double t0 = nd_mono_s();
	int r = nd_disk_pread(d, buf, sizeof buf, 8192);
	*secs = nd_mono_s() - t0;
	if (r == 0 && memcmp(buf, mem + 8192, sizeof buf))
		r = -EBADMSG;
	return r;
}

static enum nd_conn_state state(struct nd_disk *d)
{
	pthread_mutex_lock(&d->lock);
	enum nd_conn_state s = d->state;
	pthread_mutex_unlock(&d->lock);
	return s;
}

/* The server dies (MODE); reconnect-delay 1 s, timeout 0.5 s. */
static void outage(enum fake_mode m, const char *what)
{
	struct nd_disk *d = disk_with("reconnect-delay=1,timeout=0.5");
	double t;
	int r;

	CHECK(timed_read(d, &t) == 0, "%s: healthy read", what);
	mode = m;
	generation++;
	r = timed_read(d, &t);
	printf("%s: first read after the server died: %d after %.2f s\n", what,
	       r, t);
	CHECK(r == -EIO && t < 1 + 0.5 + 0.7,
	      "%s: first read: r=%d after %.2f s (bound 1.5 s + slack)", what,
	      r, t);
	/* reconnect-delay counts from when the connection was lost: at once
	 * when refused, one timeout into the request when frozen. */
	usleep(m == FROZEN ? 800 * 1000 : 300 * 1000);
	CHECK(state(d) == ND_FAILED, "%s: state %d, not failed", what,
	      state(d));
	for (int i = 0; i < 3; i++) {
		r = timed_read(d, &t);
		printf("%s: read %d while failed: %d after %.3f s\n", what,
		       i + 2, r, t);
		CHECK(
		    r == -EIO && t < 0.1,
		    "%s: read while failed: r=%d after %.3f s (must fail at once)",
		    what, r, t);
	}
	/* Reconnecting goes on in the background. */
	unsigned o0 = opens;
	usleep(m == FROZEN ? 2500 * 1000 : 1500 * 1000);
	CHECK(opens > o0, "%s: no reconnect attempt while failed", what);

	mode = UP;
	double t0 = nd_mono_s();
	r = -1;
	while (r != 0 && nd_mono_s() - t0 < 6) {
		r = timed_read(d, &t);
		if (r)
			usleep(50 * 1000);
	}
	printf("%s: serving again %.2f s after the server came back\n", what,
	       nd_mono_s() - t0);
	CHECK(r == 0, "%s: no recovery within 6 s of the server's return",
	      what);
	CHECK(state(d) == ND_CONNECTED, "%s: state %d after recovery", what,
	      state(d));

	/* Close while the server is dead again: bounded by one timeout. */
	mode = m;
	generation++;
	timed_read(d, &t);
	t0 = nd_mono_s();
	nd_disk_close(d);
	t = nd_mono_s() - t0;
	CHECK(t < 0.5 + 0.7, "%s: close took %.2f s", what, t);
	mode = UP;
	CHECK(open_conns == 0, "%s: %u connections left open", what,
	      (unsigned)open_conns);
}

static void *come_back(void *arg)
{
	usleep(*(int *)arg * 1000);
	mode = UP;
	return NULL;
}

/* The server is back 0.8 s into a request, within reconnect-delay (3 s):
 * the request waits for the reconnect and succeeds. */
static void short_outage(void)
{
	struct nd_disk *d = disk_with("reconnect-delay=3,timeout=0.5");
	int ms = 800;
	pthread_t thr;
	double t;

	mode = REFUSE;
	generation++;
	pthread_create(&thr, NULL, come_back, &ms);
	int r = timed_read(d, &t);
	pthread_join(thr, NULL);
	printf("short outage: read %d after %.2f s\n", r, t);
	CHECK(r == 0 && t < 3, "short outage: r=%d after %.2f s", r, t);
	nd_disk_close(d);
}

struct holder {
	struct nd_disk *d;
	int r;
	double t;
};

static void *hold_slot(void *arg)
{
	struct holder *h = arg;
	h->r = timed_read(h->d, &h->t);
	return NULL;
}

/* connections=1, the one connection busy for 3 s with a slow (but
 * successful) request: a second request waits for a slot at most its
 * reconnect-delay. */
static void slot_wait(void)
{
	struct nd_disk *d =
	    disk_with("connections=1,reconnect-delay=1,timeout=5");
	struct holder h = {d, 0, 0};
	pthread_t thr;
	double t;

	hold_ms = 3000;
	pthread_create(&thr, NULL, hold_slot, &h);
	usleep(200 * 1000);
	hold_ms = 0;
	int r = timed_read(d, &t);
	printf("slot wait: second request %d after %.2f s\n", r, t);
	CHECK(r == -EIO && t < 1 + 0.7,
	      "slot wait: r=%d after %.2f s (bound 1 s + slack)", r, t);
	pthread_join(thr, NULL);
	CHECK(h.r == 0, "slot wait: the slow request failed (%d)", h.r);
	nd_disk_close(d);
}

/* offset + size wraps around 2^64 to a small number: still refused. */
static void slice_overflow(void)
{
	struct nd_opts o;
	struct nd_disk *d = NULL;
	nd_opts_init(&o, "t");
	nd_opt_set(&o, "driver", "fake", "test");
	nd_opts_parse_list(&o, "offset=4096b,size=18446744073709547520b",
			   "test");
	int r = nd_disk_open(&o, &d);
	CHECK(r < 0 && strstr(nd_get_error(), "past the end"),
	      "offset=4K,size=2^64-4K opened (r=%d, %s)", r, nd_get_error());
	if (r == 0)
		nd_disk_close(d);
	nd_opts_free(&o);
}

/* open() gets the core's parsed settings, the default timeout when the
 * entry gives none; the backend-declared secret keys are known. */
static void settings_and_secrets(void)
{
	struct nd_opts o;
	struct nd_disk *d = NULL;
	nd_opts_init(&o, "t");
	nd_opt_set(&o, "driver", "fake", "test");
	nd_opts_parse_list(&o, "ro=on,connections=2,reconnect-delay=3", "test");
	mode = UP;
	int r = nd_disk_open(&o, &d);
	CHECK(r == 0, "open: %d", r);
	CHECK(last_settings.read_only && last_settings.connections == 2 &&
		  last_settings.reconnect_delay == 3 &&
		  last_settings.timeout == ND_DEFAULT_TIMEOUT &&
		  last_settings.open_timeout == 0 &&
		  last_settings.debug == -1,
	      "settings: ro %d conns %u rd %g timeout %g ot %g debug %d",
	      last_settings.read_only, last_settings.connections,
	      last_settings.reconnect_delay, last_settings.timeout,
	      last_settings.open_timeout, last_settings.debug);
	CHECK(!nd_opt_get(&d->opts, "timeout"),
	      "the core wrote timeout= into the entry's options");
	nd_disk_close(d);
	nd_opts_free(&o);
	/* debug= reaches open() parsed: a level (clamped), on or off. */
	static const struct {
		const char *v;
		int level;
	} dbg[] = { { "3", 3 }, { "12", ND_DEBUG_MAX }, { "on", ND_DEBUG_MAX },
		    { "off", 0 }, { "x", -2 } };
	for (size_t i = 0; i < sizeof dbg / sizeof *dbg; i++) {
		nd_opts_init(&o, "t");
		nd_opt_set(&o, "driver", "fake", "test");
		nd_opt_set(&o, "debug", dbg[i].v, "test");
		d = NULL;
		r = nd_disk_open(&o, &d);
		CHECK(dbg[i].level == -2 ? r < 0
					 : r == 0 && last_settings.debug ==
							  dbg[i].level,
		      "debug=%s: r=%d level %d", dbg[i].v, r,
		      last_settings.debug);
		if (r == 0)
			nd_disk_close(d);
		nd_opts_free(&o);
	}
	/* Every key a backend calls secret is one the redactor hides. */
	for (const struct nd_backend *const *b = nd_backend_list(); *b; b++)
		for (const struct nd_optdesc *k = (*b)->options; k && k->key;
		     k++)
			CHECK(!k->secret || nd_secret_key(k->key),
			      "%s: %s is secret but not redacted", (*b)->name,
			      k->key);
}

int main(void)
{
	for (size_t i = 0; i < sizeof mem; i++)
		mem[i] = (unsigned char)(i * 7 + i / 4096);
	slice_overflow();
	settings_and_secrets();
	outage(REFUSE, "refused");
	outage(FROZEN, "frozen");
	slot_wait();
	short_outage();
	if (failures) {
		printf("%d failures\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
