/* status.c: the live status file, .netdiskfs/status, as JSON. What it
 * shows of an entry's configuration is its canonical option set with
 * every secret masked (nd_opt_shown) and its URL redacted; every text
 * that may quote a URL (last_error) goes through nd_redact once more, so
 * it holds nothing a local user should not read. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "layers/overlay.h"
#include "log.h"

/* A redacted copy of S as a JSON string (null for NULL or ""). */
static json_t *redacted(const char *s)
{
	char *r;
	json_t *j;

	if (!s || !*s)
		return json_null();
	r = nd_redact(s);
	j = json_string(r ? r : "***");
	free(r);
	return j;
}

/* The canonical options, secrets masked. */
static json_t *options_json(const struct nd_opts *o)
{
	json_t *j = json_object();
	for (size_t i = 0; i < o->n; i++) {
		char *v = nd_opt_shown(&o->v[i]);
		json_object_set_new(j, o->v[i].key, json_string(v ? v : "***"));
		free(v);
	}
	return j;
}

static const char *state_name(enum nd_conn_state s)
{
	switch (s) {
	case ND_CONNECTED: return "connected";
	case ND_RECONNECTING: return "reconnecting";
	case ND_FAILED: return "failed";
	}
	return "unknown";
}

/* The cache directory's part of an entry: its state (on, or off and
 * why), use against the limit, hits, the validator it holds data of, why
 * it dropped what it found, its writer's queue (and what did not fit)
 * and the prefetch's progress. */
static json_t *cache_dir_json(const struct nd_cache_stats *cs)
{
	const struct nd_tier_stats *t = &cs->tier;
	const struct nd_prefetch_stats *p = &cs->prefetch;
	json_t *j = json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:s, s:s?, s:{s:s, s:s, s:I, s:I}}",
		"state", t->state, "bytes", (json_int_t)t->present, "limit",
		(json_int_t)t->limit, "hits", (json_int_t)t->hits, "misses",
		(json_int_t)t->misses, "validator", t->validator, "dropped",
		t->dropped[0] ? t->dropped : NULL, "prefetch", "mode",
		p->mode ? p->mode : "off", "state", p->state, "done",
		(json_int_t)p->done, "total", (json_int_t)p->total);
	json_object_set_new(
		j, "queue",
		json_pack("{s:I, s:I, s:I, s:I}", "bytes", (json_int_t)t->queued,
			  "limit", (json_int_t)t->queue_limit, "dropped_bytes",
			  (json_int_t)t->queue_dropped_bytes, "dropped_blocks",
			  (json_int_t)t->queue_dropped_blocks));
	return j;
}

/* The overlay of E, or NULL. The base counts as reachable while the
 * entry's connection is up (the disk's state, which its reconnect thread
 * keeps current even when no request goes to the base). */
static json_t *overlay_json(struct nd_fs_entry *e, bool connected)
{
	struct nd_overlay_stats st;
	if (!nd_overlay_stats(e->top, &st))
		return NULL;
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:b}", "path", st.path,
			 "bytes", (json_int_t)st.data_bytes, "zero_bytes",
			 (json_int_t)st.zero_bytes, "writes",
			 (json_int_t)st.writes, "base_errors",
			 (json_int_t)st.base_errors, "base_reachable",
			 connected);
}

static double round_to(double v, double unit)
{
	return (double)(long long)(v * unit + 0.5) / unit;
}

/* Read amplification: what readers asked the cache for against what it
 * fetched from the server, and the readahead's part of it. */
static void amp_json(json_t *j, const struct nd_cache_amp *a)
{
	json_object_set_new(j, "bytes_asked", json_integer(a->asked));
	json_object_set_new(j, "bytes_fetched", json_integer(a->fetched));
	json_object_set_new(j, "read_amplification",
			    a->asked ? json_real(round_to(
					       (double)a->fetched / a->asked, 1000))
				     : json_null());
	json_object_set_new(
		j, "readahead",
		json_pack("{s:I, s:I, s:I}", "fetched",
			  (json_int_t)a->ra_fetched, "used",
			  (json_int_t)a->ra_used, "wasted",
			  (json_int_t)a->ra_wasted));
}

static json_t *entry_json(struct nd_fs_entry *e)
{
	struct nd_disk *d = e->disk;
	struct nd_disk_status ds;
	json_t *j = json_object();
	char since[32];
	struct tm tm;

	nd_disk_status(d, &ds);
	gmtime_r(&ds.state_since, &tm);
	strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_set_new(j, "state", json_string(state_name(ds.state)));
	json_object_set_new(j, "state_since", json_string(since));
	json_object_set_new(j, "state_text",
			    ds.state == ND_CONNECTED
				? json_string("connected")
				: json_sprintf("%s since %s, reconnecting",
					       state_name(ds.state), since));
	json_object_set_new(j, "last_error", redacted(ds.last_error));
	json_object_set_new(j, "connections", json_integer(ds.connections));
	json_t *ovl = overlay_json(e, ds.state == ND_CONNECTED);
	if (ovl)
		json_object_set_new(j, "overlay", ovl);
	json_object_set_new(j, "name", json_string(e->name));
	json_object_set_new(j, "backend",
			    json_string(nd_disk_backend_name(d)));
	json_object_set_new(j, "url", redacted(e->url_redacted));
	json_object_set_new(j, "options", options_json(nd_disk_opts(d)));
	/* What the file shows (a qcow2's virtual disk, an overlay's
	 * writable file); the disk under the layers has its own. */
	json_object_set_new(j, "size",
			    json_integer(e->top ? e->top->size
						: nd_disk_size(d)));
	json_object_set_new(j, "read_only",
			    json_boolean(e->top ? e->top->ro
						: nd_disk_read_only(d)));
	if (e->top) {
		json_object_set_new(j, "disk_size",
				    json_integer(nd_disk_size(d)));
		json_object_set_new(j, "disk_read_only",
				    json_boolean(nd_disk_read_only(d)));
	}
	json_object_set_new(j, "mounted_from_cache_dir",
			    json_boolean(ds.offline));
	json_object_set_new(j, "removed", json_boolean(e->removed));
	json_object_set_new(j, "open_files", json_integer(e->opens));
	json_object_set_new(j, "max_connections",
			    json_integer(ds.max_connections));
	json_object_set_new(j, "bytes_read", json_integer(ds.bytes_read));
	json_object_set_new(j, "bytes_written", json_integer(ds.bytes_written));
	json_object_set_new(j, "requests_read", json_integer(ds.reads));
	json_object_set_new(j, "requests_written", json_integer(ds.writes));
	json_object_set_new(j, "flushes", json_integer(ds.flushes));
	json_object_set_new(j, "errors", json_integer(ds.errors));
	json_object_set_new(j, "reconnects", json_integer(ds.reconnects));
	if (e->cache) {
		struct nd_cache_stats cs;
		nd_cache_get_stats(e->cache, &cs);
		json_object_set_new(j, "cache_hits", json_integer(cs.hits));
		json_object_set_new(j, "cache_misses", json_integer(cs.misses));
		json_object_set_new(j, "cache_evictions",
				    json_integer(cs.evictions));
		json_object_set_new(j, "cache_bytes", json_integer(cs.used));
		json_object_set_new(j, "cache_budget", json_integer(cs.budget));
		json_object_set_new(j, "dirty_bytes", json_integer(cs.dirty));
		json_object_set_new(j, "readahead_window",
				    json_integer(cs.window));
		json_object_set_new(
			j, "hits_by_tier",
			json_pack("{s:I, s:I, s:I}", "memory",
				  (json_int_t)cs.hits, "disk",
				  (json_int_t)cs.tier.hits, "remote",
				  (json_int_t)cs.remote_blocks));
		amp_json(j, &cs.amp);
		if (cs.tier.state[0])
			json_object_set_new(j, "cache_dir", cache_dir_json(&cs));
	}
	return j;
}

char *nd_status_json(struct nd_fs *fs)
{
	json_t *root = json_object(), *arr = json_array();
	char *text;

	pthread_rwlock_rdlock(&fs->lock);
	for (struct nd_fs_entry *e = fs->entries; e; e = e->next)
		json_array_append_new(arr, entry_json(e));
	for (struct nd_fs_failed *f = fs->failed; f; f = f->next) {
		json_t *j = json_object();
		char since[32];
		struct tm tm;
		gmtime_r(&f->since, &tm);
		strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_object_set_new(j, "name", json_string(f->name));
		json_object_set_new(j, "backend", json_string(f->driver));
		json_object_set_new(j, "url", redacted(f->url_redacted));
		json_object_set_new(j, "state", json_string("failed"));
		json_object_set_new(j, "state_since", json_string(since));
		json_object_set_new(j, "last_error", redacted(f->error));
		json_object_set_new(j, "size", json_integer(0));
		json_object_set_new(j, "connections", json_integer(0));
		json_object_set_new(j, "open", json_false());
		json_array_append_new(arr, j);
	}
	pthread_rwlock_unlock(&fs->lock);
	json_object_set_new(root, "pid", json_integer(getpid()));
	json_object_set_new(root, "mounted_at", json_integer(fs->mount_time));
	json_object_set_new(root, "entries", arr);
	text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	if (text) {
		/* jansson's allocator is malloc; add the final newline. */
		size_t n = strlen(text);
		char *t = realloc(text, n + 2);
		if (t) {
			t[n] = '\n';
			t[n + 1] = 0;
			text = t;
		}
	}
	return text;
}

static void human(char *buf, size_t n, json_int_t v)
{
	const char *u = "BKMGT";
	double d = v;
	while (d >= 1024 && u[1]) {
		d /= 1024;
		u++;
	}
	snprintf(buf, n, *u == 'B' ? "%.0f%c" : "%.1f%c", d, *u);
}

int nd_status_print(const char *mountpoint)
{
	char path[4096];
	json_error_t err;
	json_t *root, *entries, *e;
	size_t i;

	snprintf(path, sizeof path, "%s/.netdiskfs/status", mountpoint);
	root = json_load_file(path, 0, &err);
	if (!root) {
		fprintf(stderr, "netdiskfs: %s: %s\n", path, err.text);
		return 1;
	}
	entries = json_object_get(root, "entries");
	printf("%-16s %-8s %-13s %8s %-3s %5s %8s %8s %7s %7s %5s %8s %s\n",
	       "NAME", "BACKEND", "STATE", "SIZE", "RO", "CONNS", "READ",
	       "WRITTEN", "HITS", "MISSES", "AMP", "WINDOW", "LAST ERROR");
	json_array_foreach(entries, i, e) {
		char size[16], rd[16], wr[16], win[16], amp[16] = "-";
		json_t *ampj = json_object_get(e, "read_amplification");
		const char *le0 = json_string_value(json_object_get(e, "last_error"));
		char *le = le0 ? nd_redact(le0) : NULL;
		human(size, sizeof size, json_integer_value(json_object_get(e, "size")));
		human(rd, sizeof rd, json_integer_value(json_object_get(e, "bytes_read")));
		human(wr, sizeof wr, json_integer_value(json_object_get(e, "bytes_written")));
		human(win, sizeof win,
		      json_integer_value(json_object_get(e, "readahead_window")));
		if (json_is_number(ampj))
			snprintf(amp, sizeof amp, "%.2f", json_number_value(ampj));
		printf("%-16s %-8s %-13s %8s %-3s %5lld %8s %8s %7lld %7lld %5s %8s %s%s\n",
		       json_string_value(json_object_get(e, "name")),
		       json_string_value(json_object_get(e, "backend")),
		       json_string_value(json_object_get(e, json_object_get(e, "state_text")
								? "state_text" : "state")),
		       size,
		       json_is_true(json_object_get(e, "read_only")) ? "yes" : "no",
		       (long long)json_integer_value(json_object_get(e, "connections")),
		       rd, wr,
		       (long long)json_integer_value(json_object_get(e, "cache_hits")),
		       (long long)json_integer_value(json_object_get(e, "cache_misses")),
		       amp, win, le ? le : "-",
		       json_is_true(json_object_get(e, "removed")) ? " (removed)" : "");
		free(le);
	}
	json_decref(root);
	return 0;
}
