/* main.c: the command line. netdiskfs SOURCE MOUNTPOINT [-o OPTS] [-f] [-d]
 * [-v] [--pidfile F]; --print-config SOURCE; --help; status MOUNTPOINT. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "disk.h"
#include "fs.h"
#include "log.h"
#include "readahead.h"
#include "workers.h"
#include "reload.h"
#include "table.h"
#include "tools.h"
#include "url.h"
#include "util/cleanup.h"

#define VERSION "0.1"
#define WORKERS 8

struct cli {
	const char *source, *mountpoint, *pidfile;
	bool foreground, strict, print_config;
	struct nd_opts defaults; /* -o keys meant for the entries */
	char **fuse_argv;	 /* -o keys meant for libfuse */
	int fuse_argc;
	int ready_fd; /* tells the waiting parent the mount is live */
};

static struct cli cli;
static struct nd_fs *the_fs;

/* Options for libfuse, and mount(8) options that mean nothing here. */
static const char *const fuse_keys[] = { "allow_other", "allow_root",
					 "default_permissions",
					 "no_default_permissions", "auto_unmount",
					 "fsname", "subtype", "max_read",
					 "kernel-cache", NULL };
static const char *const ignored_keys[] = {
	"rw", "defaults", "_netdev", "nofail", "noauto", "auto", "user",
	"nouser", "users", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
	"atime", "noatime", "relatime", "strictatime", "nodiratime", "async",
	"sync", "comment", "loop", NULL
};

static bool in_list(const char *const *list, const char *key)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(list[i], key) == 0)
			return true;
	return false;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: netdiskfs [OPTIONS] SOURCE MOUNTPOINT\n"
		"       netdiskfs --print-config [-o OPTS] SOURCE\n"
		"       netdiskfs status MOUNTPOINT\n"
		"SOURCE is a mount table file (see netdisk.tab(5)) or one "
		"device URL.\n"
		"  -o OPTS            comma list: defaults for every entry, "
		"libfuse options\n"
		"                     (allow_other, default_permissions, ...), "
		"ro, debug\n"
		"  -f, --foreground   stay in the foreground, log to stderr\n"
		"  -d, --debug        debug log, including the libraries' own\n"
		"  -v, --verbose      informational messages\n"
		"  --pidfile FILE     write the PID once the mount is live\n"
		"  --strict           any entry that cannot be opened is fatal\n"
		"  --iscsi KEY=VALUE  QEMU's spelling of -o KEY=VALUE for "
		"iSCSI (initiator-name=...)\n"
		"  --print-config     parse SOURCE, print each entry's options, "
		"exit\n"
		"  -h, --help         this text, with the backends compiled in\n"
		"  -V, --version\n");
}

static void help(void)
{
	usage(stdout);
	printf("\nCommon options (any entry): ro, readahead=SIZE (256K), "
	       "block-size=SIZE (64K),\n  cache-size=SIZE, "
	       "cache=writethrough|writeback|none, connections=N (4),\n"
	       "  timeout=SECONDS, reconnect-delay=SECONDS (10), "
	       "open-timeout=SECONDS (0),\n  offset=SIZE, size=SIZE, debug, "
	       "uid=N, gid=N, mode=OCTAL (0644), umask=OCTAL\n"
	       "  cache-dir=PATH, cache-dir-size=SIZE (10%% of the free "
	       "space), cache-dir-mode=read|off,\n"
	       "  prefetch=off|idle|all (off)\n");
	printf("\nBackends compiled in:\n");
	for (const struct nd_backend *const *b = nd_backend_list(); *b; b++) {
		printf("\n  %s: %s\n    schemes:", (*b)->name,
		       (*b)->description);
		for (const char *const *s = (*b)->schemes; s && *s; s++)
			printf(" %s", *s);
		printf("\n");
		nd_backend_print_options(stdout, *b);
	}
}

/* Overwrite every secret in our own argv (the values were copied
 * already), so /proc/PID/cmdline shows none: URL passwords, json: and
 * key-list values, --iscsi password=, -o cookie=... */
static void scrub_argv(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		nd_scrub(argv[i]);
}

/* Secrets QEMU takes from the environment: kept in our memory, gone from
 * the environment (and /proc/PID/environ) before any thread starts. */
static void take_secret_env(void)
{
	nd_secret_env("LIBISCSI_CHAP_PASSWORD");
	nd_secret_env("LIBISCSI_CHAP_TARGET_PASSWORD");
}

static int add_o(const char *list)
{
	struct nd_opts tmp;
	int ret = 0;

	nd_opts_init(&tmp, "-o");
	if (nd_opts_parse_list(&tmp, list, "-o") == -1) {
		fprintf(stderr, "netdiskfs: -o %s\n", nd_get_error());
		nd_opts_free(&tmp);
		return -1;
	}
	for (size_t i = 0; i < tmp.n; i++) {
		const char *k = tmp.v[i].key, *v = tmp.v[i].val;
		if (in_list(ignored_keys, k) || strncmp(k, "x-", 2) == 0)
			continue;
		if (strcmp(k, "debug") == 0) {
			bool b = true;
			nd_parse_bool(v, &b);
			nd_debug_enabled = b;
			continue;
		}
		if (in_list(fuse_keys, k)) {
			char *arg;
			if (strcmp(v, "on") == 0 && !strchr(list, '='))
				arg = strdup(k);
			else if (strcmp(k, "fsname") && strcmp(k, "subtype") &&
				 strcmp(k, "max_read") && strcmp(k, "kernel-cache"))
				arg = strdup(k);
			else if (asprintf(&arg, "%s=%s", k, v) < 0)
				arg = NULL;
			/* fsname= shows in /proc/mounts, readable by all. */
			if (arg && strcmp(k, "fsname") == 0) {
				char *r = nd_redact(arg);
				free(arg);
				arg = r;
			}
			cli.fuse_argv = realloc(cli.fuse_argv,
						(cli.fuse_argc + 3) * sizeof(char *));
			cli.fuse_argv[cli.fuse_argc++] = strdup("-o");
			cli.fuse_argv[cli.fuse_argc++] = arg;
			continue;
		}
		if (nd_opt_set(&cli.defaults, k, v, "-o") == -1)
			ret = -1;
	}
	nd_opts_free(&tmp);
	return ret;
}

/* Load SOURCE: errors go to stderr as FILE:LINE: message. */
static int load(struct nd_table *t)
{
	if (nd_url_is_device(cli.source))
		return nd_table_from_url(cli.source, &cli.defaults,
					 nd_disk_prune_opts, t, stderr);
	return nd_table_load(cli.source, &cli.defaults, nd_disk_prune_opts, t,
			     stderr);
}

static int print_config(void)
{
	struct nd_table t;
	int nerr = load(&t);
	for (size_t i = 0; i < t.n; i++) {
		const struct nd_entry *e = &t.e[i];
		CLEANUP_FREE char *opts = nd_opts_format(&e->opts, "\n");
		const struct nd_backend *b =
			nd_backend_find(nd_opt_get(&e->opts, "driver"));
		printf("[%s]\nbackend=%s\n%s\n\n", e->name, b ? b->name : "?",
		       opts ? opts : "");
	}
	nd_table_free(&t);
	return nerr ? 1 : 0;
}

/* --- readiness ---------------------------------------------------------- */

/* Tell systemd MSG ("READY=1", ...) when it started us with Type=notify. */
static void notify_systemd(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof sa.sun_path)
		return;
	strcpy(sa.sun_path, path);
	if (path[0] == '@')
		sa.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
		   offsetof(struct sockaddr_un, sun_path) + strlen(path)) < 0)
		nd_debug("sd_notify: %m");
	close(fd);
}

static void on_ready(void *arg)
{
	(void)arg;
	/* Only now: nd_fuse_main sets SIGHUP to SIG_IGN after installing
	 * libfuse's handlers, which would undo an earlier on_hup. */
	signal(SIGHUP, nd_reload_signal);
	if (cli.pidfile) {
		CLEANUP_FREE char *tmp = NULL;
		if (asprintf(&tmp, "%s.tmp", cli.pidfile) > 0) {
			FILE *f = fopen(tmp, "we");
			if (f) {
				fprintf(f, "%d\n", (int)getpid());
				fclose(f);
				if (rename(tmp, cli.pidfile) == -1)
					nd_log(LOG_ERR, "pidfile %s: %m",
					       cli.pidfile);
			} else
				nd_log(LOG_ERR, "pidfile %s: %m", cli.pidfile);
		}
	}
	notify_systemd("READY=1");
	nd_info("mounted on %s", cli.mountpoint);
	if (cli.ready_fd >= 0) {
		char c = 0;
		if (write(cli.ready_fd, &c, 1) < 0)
			nd_debug("parent gone");
		close(cli.ready_fd);
		cli.ready_fd = -1;
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			close(null);
		}
		nd_log_init("netdiskfs", false);
	}
}

/* Fork; the parent exits 0 once the child says the mount is live, 1 if the
 * child dies first. */
static void daemonize(void)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) == -1) {
		perror("netdiskfs: pipe");
		exit(1);
	}
	pid = fork();
	if (pid == -1) {
		perror("netdiskfs: fork");
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		_exit(read(p[0], &c, 1) == 1 ? 0 : 1);
	}
	close(p[0]);
	cli.ready_fd = p[1];
	setsid();
	if (chdir("/") == -1)
		nd_debug("chdir /: %m");
}

static int mount_main(void)
{
	struct nd_table t;
	int nerr, failed, ret;
	char *mnt;

	nerr = load(&t);
	if (nerr) {
		nd_table_free(&t);
		return 1;
	}
	if (t.n == 0) {
		fprintf(stderr, "netdiskfs: %s: no entries\n", cli.source);
		nd_table_free(&t);
		return 1;
	}
	mnt = realpath(cli.mountpoint, NULL);
	if (!mnt) {
		fprintf(stderr, "netdiskfs: mount point %s: %s\n",
			cli.mountpoint, strerror(errno));
		nd_table_free(&t);
		return 1;
	}
	free((char *)cli.mountpoint);
	cli.mountpoint = mnt;
	/* SIGHUP re-reads the table after daemonize() did chdir("/"). */
	if (!nd_url_is_device(cli.source)) {
		char *abs = realpath(cli.source, NULL);
		if (abs) {
			free((char *)cli.source); /* strdup'd by main() */
			cli.source = abs;
		}
	}
	if (!cli.foreground)
		daemonize();
	nd_workers_start(WORKERS);
	the_fs = nd_fs_new();
	the_fs->kernel_readahead = 1u << 20;
	failed = nd_reload_apply(the_fs, &t);
	if (failed && (cli.strict || (size_t)failed == t.n)) {
		nd_log(LOG_ERR, "%s", cli.strict ? "--strict: not mounting"
						 : "no entry could be opened");
		nd_fs_free(the_fs);
		nd_table_free(&t);
		nd_workers_stop();
		nd_backends_shutdown();
		return 1;
	}
	nd_table_free(&t);
	if (nd_reload_start(the_fs, nd_url_is_device(cli.source) ? NULL : cli.source,
			    &cli.defaults) < 0)
		nd_log(LOG_ERR, "no reload thread: SIGHUP will do nothing");
	ret = nd_fuse_main(the_fs, cli.mountpoint, cli.fuse_argc,
			   cli.fuse_argv, on_ready, NULL);
	/* Requests in flight are done; write back what is dirty. libfuse
	 * gave SIGTERM/SIGINT back to their default: a second stop (systemd
	 * sends SIGTERM right after ExecStop's umount) must not kill us
	 * mid-flush. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	/* The final write-back is bounded by each entry's reconnect-delay
	 * and timeout: systemd's stop timeout grows to fit it, so it never
	 * kills us in the middle of saving dirty data. */
	char stop[96];
	snprintf(stop, sizeof stop, "STOPPING=1\nEXTEND_TIMEOUT_USEC=%llu",
		 (unsigned long long)(nd_fs_stop_bound(the_fs) * 1e6));
	notify_systemd(stop);
	/* A reload in progress finishes its entry, write-back included,
	 * before the entries it uses are flushed and freed. */
	nd_reload_stop();
	if (nd_fs_flush_all(the_fs) < 0)
		ret = 1;
	nd_fs_free(the_fs);
	nd_workers_stop();
	nd_backends_shutdown();
	if (cli.pidfile)
		unlink(cli.pidfile);
	nd_info("unmounted %s", cli.mountpoint);
	return ret;
}

static void cli_free(void)
{
	for (int i = 0; i < cli.fuse_argc; i++)
		free(cli.fuse_argv[i]);
	free(cli.fuse_argv);
	nd_opts_free(&cli.defaults);
	free((char *)cli.source);
	free((char *)cli.mountpoint);
	free((char *)cli.pidfile);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "strict", no_argument, NULL, 's' },
		{ "print-config", no_argument, NULL, 'P' },
		{ "iscsi", required_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	cli.ready_fd = -1;
	/* The memory bound is the cache budget: cache slabs are mmap'ed and
	 * go back to the system when evicted; few arenas keep the rest of
	 * the heap from growing one arena per thread. */
	mallopt(M_ARENA_MAX, 2);
	/* A peer that closed its socket is an error return, never a death,
	 * including during the final writeback after unmount. */
	signal(SIGPIPE, SIG_IGN);
	nd_opts_init(&cli.defaults, "*");
	atexit(cli_free);
	cli.fuse_argv = calloc(2, sizeof(char *));
	cli.fuse_argv[cli.fuse_argc++] = strdup("netdiskfs");
	int tool = nd_tool_main(argc, argv);
	if (tool != ND_NOT_A_TOOL)
		return tool;
	if (argc >= 2 && strcmp(argv[1], "status") == 0) {
		if (argc != 3) {
			fprintf(stderr, "Usage: netdiskfs status MOUNTPOINT\n");
			return 2;
		}
		return nd_status_print(argv[2]);
	}
	while ((c = getopt_long(argc, argv, "o:fdvhVs", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (add_o(optarg) == -1)
				return 1;
			break;
		case 'f': cli.foreground = true; break;
		case 'd': nd_debug_enabled = true; cli.foreground = true; break;
		case 'v': nd_verbose = true; break;
		case 'h': help(); return 0;
		case 'V': printf("netdiskfs %s\n", VERSION); return 0;
		case 'p':
			free((char *)cli.pidfile);
			cli.pidfile = strdup(optarg);
			break;
		case 's': cli.strict = true; break;
		case 'P': cli.print_config = true; break;
		case 'i':
			if (add_o(optarg) == -1)
				return 1;
			break;
		default: usage(stderr); return 2;
		}
	}
	take_secret_env();
	nd_log_init("netdiskfs", true);
	if (argc - optind != (cli.print_config ? 1 : 2)) {
		usage(stderr);
		return 2;
	}
	cli.source = strdup(argv[optind]);
	if (!cli.print_config)
		cli.mountpoint = strdup(argv[optind + 1]);
	scrub_argv(argc, argv);
	if (cli.print_config)
		return print_config();
	if (cli.pidfile) {
		char *abs = realpath(".", NULL), *p = NULL;
		if (cli.pidfile[0] != '/' && abs &&
		    asprintf(&p, "%s/%s", abs, cli.pidfile) > 0) {
			free((char *)cli.pidfile);
			cli.pidfile = p;
		}
		free(abs);
	}
	return mount_main();
}
