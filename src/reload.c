/* reload.c: the policy that turns a mount table into served entries. At
 * mount and on each SIGHUP the entries whose definition (URL and options)
 * differs from what is served are opened in parallel (each may wait on a
 * network), then set one by one: a new name is added, a changed one is
 * swapped in under its name (see nd_fs_set), so a reload never makes a
 * name vanish. A definition that cannot be opened leaves the running one
 * serving. The reload thread is stopped and joined before unmount frees
 * what it uses. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "disk.h"
#include "log.h"
#include "reload.h"
#include "util/cleanup.h"

#define DEFAULT_CACHE (256ull << 20)
#define MIN_SHARE (8ull << 20)

struct opener {
	const struct nd_entry *e;
	char *key; /* the definition in T */
	char *cur; /* the definition served now, NULL if none */
	bool run;  /* opened by this pass */
	struct nd_disk *disk;
	int err;
	char msg[1024];
	pthread_t thr;
};

static struct {
	struct nd_fs *fs;
	const char *source;
	const struct nd_opts *defaults;
	int pipe[2];
	pthread_t thr;
	bool started;
	atomic_bool stopping;
} rl = { .pipe = { -1, -1 } };

static char *entry_key(const struct nd_entry *e)
{
	char *opts = nd_opts_format(&e->opts, ","), *k = NULL;
	if (opts && asprintf(&k, "%s\n%s", e->url, opts) < 0)
		k = NULL;
	free(opts);
	return k;
}

static void *open_one(void *arg)
{
	struct opener *o = arg;
	o->err = nd_disk_open(&o->e->opts, &o->disk);
	/* The server away: an entry its cache directory knows mounts from
	 * there and reconnects in the background. */
	if (o->err < 0)
		o->err = nd_cache_dir_open_offline(&o->e->opts, o->err,
						   &o->disk);
	if (o->err < 0) {
		CLEANUP_FREE char *r = nd_redact(nd_get_error());
		snprintf(o->msg, sizeof o->msg, "%s", r ? r : "error");
	}
	return NULL;
}

/* The global cache budget: cache-size as a default (-o or [global]). */
static uint64_t global_budget(const struct nd_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct nd_opt *p = nd_opt_find(&t->e[i].opts, "cache-size");
		uint64_t v;
		if (p && nd_opt_is_default(p) && nd_parse_size(p->val, &v) == 0)
			return v;
	}
	return DEFAULT_CACHE;
}

/* Open, in parallel, the entries of T whose definition is not served. */
static void open_changed(struct nd_fs *fs, const struct nd_table *t,
			 struct opener *op)
{
	for (size_t i = 0; i < t->n; i++) {
		struct opener *o = &op[i];
		o->e = &t->e[i];
		o->key = entry_key(o->e);
		o->cur = nd_fs_key(fs, o->e->name);
		o->run = !o->key || !o->cur || strcmp(o->key, o->cur) != 0;
		if (o->run && pthread_create(&o->thr, NULL, open_one, o) != 0)
			open_one(o), o->thr = 0;
	}
	for (size_t i = 0; i < t->n; i++)
		if (op[i].run && op[i].thr)
			pthread_join(op[i].thr, NULL);
}

/* Serve what O opened; 1 if the entry is not served as T defines it. */
static int set_one(struct nd_fs *fs, struct opener *o, uint64_t share)
{
	const struct nd_entry *e = o->e;
	const struct nd_opt *cs = nd_opt_find(&e->opts, "cache-size");

	if (o->err < 0) {
		nd_log(LOG_ERR, "%s: entry '%s': %s%s", e->where, e->name,
		       o->msg, o->cur ? "; its running definition stays" : "");
		if (!o->cur)
			nd_fs_add_failed(fs, e->name, e->url,
					 nd_opt_get(&e->opts, "driver"), o->msg);
		return 1;
	}
	if (atomic_load(&rl.stopping)) {
		nd_disk_close(o->disk);
		return 1;
	}
	int r = nd_fs_set(fs, e->name, e->url, o->key, o->disk,
			  cs && !nd_opt_is_default(cs) ? nd_disk_cfg(o->disk)->cache_size
						       : share);
	if (r < 0) {
		nd_log(LOG_ERR, "%s: entry '%s': %s%s", e->where, e->name,
		       strerror(-r),
		       o->cur ? " writing back the running definition; it stays"
			      : "");
		nd_disk_close(o->disk);
		return 1;
	}
	nd_info("entry '%s': %s, %llu bytes%s%s", e->name,
		nd_disk_backend_name(o->disk),
		(unsigned long long)nd_disk_size(o->disk),
		nd_disk_read_only(o->disk) ? ", read-only" : "",
		o->cur ? " (changed: swapped in)" : "");
	return 0;
}

int nd_reload_apply(struct nd_fs *fs, const struct nd_table *t)
{
	struct opener *op = calloc(t->n ? t->n : 1, sizeof *op);
	uint64_t share = global_budget(t) / (t->n ? t->n : 1);
	int failed = 0;

	if (!op)
		return (int)t->n;
	if (share < MIN_SHARE)
		share = MIN_SHARE;
	open_changed(fs, t, op);
	for (size_t i = 0; i < t->n; i++) {
		if (op[i].run)
			failed += set_one(fs, &op[i], share);
		free(op[i].key);
		free(op[i].cur);
	}
	free(op);
	return failed;
}

/* Remove the served names that T no longer lists. */
static void remove_gone(struct nd_fs *fs, const struct nd_table *t)
{
	char **names = nd_fs_names(fs);
	for (size_t i = 0; names && names[i]; i++) {
		bool listed = false;
		for (size_t j = 0; j < t->n && !listed; j++)
			listed = strcmp(t->e[j].name, names[i]) == 0;
		if (!listed && !atomic_load(&rl.stopping)) {
			nd_info("reload: entry '%s' removed", names[i]);
			nd_fs_remove(fs, names[i]);
		}
		free(names[i]);
	}
	free(names);
}

static void reload(void)
{
	struct nd_table t;
	char *buf = NULL;
	size_t len = 0;
	FILE *errs;
	int nerr;

	if (!rl.source) {
		nd_info("SIGHUP: nothing to reload (no table file)");
		return;
	}
	errs = open_memstream(&buf, &len);
	if (!errs)
		return;
	nerr = nd_table_load(rl.source, rl.defaults, nd_disk_prune_opts, &t,
			     errs);
	fclose(errs);
	if (nerr)
		nd_log(LOG_ERR, "reload: %s has errors; keeping the running "
				"entries:\n%s",
		       rl.source, buf);
	free(buf);
	if (!nerr) {
		nd_reload_apply(rl.fs, &t);
		remove_gone(rl.fs, &t);
		nd_fs_changed(rl.fs);
		nd_info("reload: %zu entries", t.n);
	}
	nd_table_free(&t);
}

/* An entry's object changed on the server (nd_disk_on_change): the
 * reload thread opens it afresh, as a reload would swap a changed line,
 * so the kernel's pages of it go even when nobody reads it. */
static void changed_poke(void)
{
	if (rl.pipe[1] >= 0 && write(rl.pipe[1], "c", 1) < 0) {
		/* full: a pass is pending already */
	}
}

static void *reload_thread(void *arg)
{
	char c;
	(void)arg;
	while (!atomic_load(&rl.stopping) && read(rl.pipe[0], &c, 1) == 1) {
		if (c == 'q' || atomic_load(&rl.stopping))
			break;
		if (c == 'c')
			nd_fs_refresh_changed(rl.fs);
		else
			reload();
	}
	return NULL;
}

int nd_reload_start(struct nd_fs *fs, const char *source,
		    const struct nd_opts *defaults)
{
	rl.fs = fs;
	rl.source = source;
	rl.defaults = defaults;
	atomic_store(&rl.stopping, false);
	if (pipe2(rl.pipe, O_CLOEXEC) == -1)
		return -errno;
	/* The signal handler must never block on a full pipe: a reload
	 * already pending covers later SIGHUPs. */
	fcntl(rl.pipe[1], F_SETFL, O_NONBLOCK);
	int r = pthread_create(&rl.thr, NULL, reload_thread, NULL);
	if (r != 0) {
		close(rl.pipe[0]);
		close(rl.pipe[1]);
		rl.pipe[0] = rl.pipe[1] = -1;
		return -r;
	}
	rl.started = true;
	nd_disk_on_change = changed_poke;
	return 0;
}

void nd_reload_signal(int sig)
{
	int saved = errno;
	(void)sig;
	if (rl.pipe[1] >= 0 && write(rl.pipe[1], "h", 1) < 0) {
		/* full: a reload is pending already */
	}
	errno = saved;
}

void nd_reload_stop(void)
{
	if (!rl.started)
		return;
	atomic_store(&rl.stopping, true);
	nd_disk_on_change = NULL;
	if (write(rl.pipe[1], "q", 1) < 0) {
		/* full: the thread sees the flag after its next read */
	}
	pthread_join(rl.thr, NULL);
	rl.started = false;
	close(rl.pipe[0]);
	close(rl.pipe[1]);
	rl.pipe[0] = rl.pipe[1] = -1;
}
