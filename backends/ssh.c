/* pkg-config: libssh */
/* ssh.c: disks reached over SFTP (libssh).
 *
 * One connection = one SSH session + one SFTP channel + one open handle on
 * the remote file. libssh sessions are not thread-safe, so thread_safe is
 * false and the core's pool (connections=N) gives each request its own
 * session. Reads are pipelined: a request is cut into chunks and several
 * SFTP READs are in flight on the session at once (libssh 0.10 has no
 * pread, but sftp_seek64 only moves a local offset, so seek + async read
 * begin is one request on the wire). Writes are synchronous SFTP WRITEs,
 * chunked below the server's packet limit. fsync goes to the server through
 * fsync@openssh.com when it is offered.
 *
 * Every wait on the server is bounded by the entry's timeout= (default
 * 10 s): ssh_connect by libssh's own timeout, everything after it by a
 * watchdog thread that shuts the socket down when an operation makes no
 * progress for that long (libssh 0.10's SFTP calls wait forever). A
 * connection that failed at the transport level, timed out, or lost its
 * SFTP channel is marked broken and every call on it returns -ENOTCONN:
 * the core then closes it and opens a new one (same host-key check, same
 * path). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libssh/libssh.h>
#include <libssh/callbacks.h>
#include <libssh/sftp.h>

#include "backend.h"
#include "util/clock.h"
#include "util/once.h"

#define SSH_DEFAULT_PORT 22
#define SSH_CLOSE_TIMEOUT 1.0	 /* seconds for a polite close */
#define SSH_READ_CHUNK_OPENSSH (128 * 1024) /* bytes per SFTP READ */
#define SSH_READ_CHUNK_OTHER (64 * 1024)
#define SSH_READ_CHUNK_MIN 4096
#define SSH_READ_INFLIGHT 16		     /* READs in flight per session */
#define SSH_WRITE_CHUNK_OPENSSH (255 * 1024) /* OpenSSH: 256 KiB messages */
#define SSH_WRITE_CHUNK_OTHER (32 * 1024)    /* what every server must take */

struct ssh_conn {
	ssh_session session;
	sftp_session sftp;
	sftp_file file;
	size_t read_chunk; /* shrinks if the server answers less */
	size_t write_chunk;
	bool broken; /* transport or SFTP channel gone: only -ENOTCONN now */
	char *where; /* "user@host:port/path" for messages */
	double timeout;

	/* Watchdog (under ssh_wd_lock): libssh 0.10 waits for SFTP replies
	 * without any timeout, so a stopped server would hang a request
	 * forever. While an operation runs, deadline is set; past it the
	 * watchdog shuts the socket down (through our own dup of it, so the
	 * number can never be reused under us) and libssh fails at once. */
	int wd_fd;
	int64_t deadline; /* CLOCK_MONOTONIC ns, 0 = idle */
	bool wd_fired;
	bool wd_linked;
	struct ssh_conn *wd_prev, *wd_next;
};

/* ---- messages ---------------------------------------------------------- */

/* The one place libssh's error text becomes our error: formats the
 * caller's message, appends libssh's (and the SFTP status when there is
 * one) and returns -err. */
static int ssh_fail(ssh_session session, sftp_session sftp, int err,
		    const char *fmt, ...) ND_PRINTF(4, 5);
static int ssh_fail(ssh_session session, sftp_session sftp, int err,
		    const char *fmt, ...)
{
	char msg[512];
	const char *lib = session ? ssh_get_error(session) : NULL;
	int fx = sftp ? sftp_get_error(sftp) : 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (fx > 0 && lib && *lib)
		nd_error("%s: %s (SFTP status %d)", msg, lib, fx);
	else if (lib && *lib)
		nd_error("%s: %s", msg, lib);
	else
		nd_error("%s", msg);
	errno = err;
	return -err;
}

static void ssh_log_cb(int priority, const char *function, const char *text,
		       void *userdata)
{
	nd_debug("libssh: %s", text);
}

/* libssh keeps its log level and callback per thread: set them on every
 * thread that enters this backend, before any libssh call. */
static void ssh_thread_setup(void)
{
	static __thread bool done;

	if (done)
		return;
	done = true;
	if (nd_debug_enabled) {
		ssh_set_log_callback(ssh_log_cb);
		ssh_set_log_level(SSH_LOG_PROTOCOL);
	} else {
		ssh_set_log_level(SSH_LOG_NOLOG);
	}
}

/* ---- watchdog ---------------------------------------------------------- */

#define SSH_WD_TICK_MS 100

static pthread_mutex_t ssh_wd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ssh_wd_cond = PTHREAD_COND_INITIALIZER;
static struct ssh_conn *ssh_wd_list;
static pthread_t ssh_wd_thread;
static bool ssh_wd_running, ssh_wd_stop;

static void *ssh_wd_main(void *arg)
{
	pthread_mutex_lock(&ssh_wd_lock);
	while (!ssh_wd_stop) {
		int64_t now = (int64_t)nd_mono_ns();

		for (struct ssh_conn *c = ssh_wd_list; c; c = c->wd_next) {
			if (c->deadline && now >= c->deadline && !c->wd_fired) {
				c->wd_fired = true;
				shutdown(c->wd_fd, SHUT_RDWR);
			}
		}
		struct timespec ts = nd_wall_after(SSH_WD_TICK_MS / 1e3);

		pthread_cond_timedwait(&ssh_wd_cond, &ssh_wd_lock, &ts);
	}
	pthread_mutex_unlock(&ssh_wd_lock);
	return NULL;
}

/* Watch C's session from now on (after ssh_connect made its socket). */
static int ssh_wd_add(struct ssh_conn *c, const char *entry)
{
	sigset_t all, old;
	int r = 0;

	c->wd_fd = fcntl(ssh_get_fd(c->session), F_DUPFD_CLOEXEC, 0);
	if (c->wd_fd < 0) {
		nd_error("ssh: dup of the SSH socket: %m");
		return -errno;
	}
	pthread_mutex_lock(&ssh_wd_lock);
	if (!ssh_wd_running) {
		/* The watchdog takes no signals: they belong to the core. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		ssh_wd_stop = false;
		r = pthread_create(&ssh_wd_thread, NULL, ssh_wd_main, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r == 0)
			ssh_wd_running = true;
	}
	if (r == 0) {
		c->wd_next = ssh_wd_list;
		if (ssh_wd_list)
			ssh_wd_list->wd_prev = c;
		ssh_wd_list = c;
		c->wd_linked = true;
	}
	pthread_mutex_unlock(&ssh_wd_lock);
	if (r != 0) {
		errno = r;
		nd_error("ssh: cannot start the SSH watchdog thread: %m");
		return -r;
	}
	return 0;
}

static void ssh_wd_del(struct ssh_conn *c)
{
	pthread_mutex_lock(&ssh_wd_lock);
	if (c->wd_linked) {
		if (c->wd_prev)
			c->wd_prev->wd_next = c->wd_next;
		else
			ssh_wd_list = c->wd_next;
		if (c->wd_next)
			c->wd_next->wd_prev = c->wd_prev;
		c->wd_linked = false;
	}
	pthread_mutex_unlock(&ssh_wd_lock);
	if (c->wd_fd >= 0)
		close(c->wd_fd);
	c->wd_fd = -1;
}

/* Start (or, on progress, extend) the deadline of the current operation. */
static void ssh_arm(struct ssh_conn *c)
{
	int64_t d = (int64_t)nd_mono_ns() + (int64_t)(c->timeout * 1e9);

	pthread_mutex_lock(&ssh_wd_lock);
	c->deadline = d;
	pthread_mutex_unlock(&ssh_wd_lock);
}

/* End the deadline; true when the watchdog cut the connection. */
static bool ssh_disarm(struct ssh_conn *c)
{
	bool fired;

	pthread_mutex_lock(&ssh_wd_lock);
	c->deadline = 0;
	fired = c->wd_fired;
	pthread_mutex_unlock(&ssh_wd_lock);
	if (fired)
		c->broken = true;
	return fired;
}

static bool ssh_timed_out(struct ssh_conn *c)
{
	bool fired;

	pthread_mutex_lock(&ssh_wd_lock);
	fired = c->wd_fired;
	pthread_mutex_unlock(&ssh_wd_lock);
	return fired;
}

static void ssh_wd_shutdown(void)
{
	pthread_mutex_lock(&ssh_wd_lock);
	if (!ssh_wd_running) {
		pthread_mutex_unlock(&ssh_wd_lock);
		return;
	}
	ssh_wd_stop = true;
	pthread_cond_signal(&ssh_wd_cond);
	pthread_mutex_unlock(&ssh_wd_lock);
	pthread_join(ssh_wd_thread, NULL);
	ssh_wd_running = false;
}

/* ---- options ----------------------------------------------------------- */

enum ssh_hkc { SSH_HKC_KNOWN_HOSTS, SSH_HKC_NONE, SSH_HKC_HASH };

struct ssh_params {
	const char *host;
	char host_buf[256];
	unsigned port;
	const char *user; /* NULL: libssh's default (the local user) */
	const char *path;
	enum ssh_hkc hkc;
	enum ssh_publickey_hash_type hash_type;
	const char *hash_name; /* "sha256" */
	unsigned char hash[64];
	size_t hash_len;
	const char *known_hosts; /* NULL: ~/.ssh/known_hosts */
	const char *identity;
	double timeout;
	bool ro;
};

static int ssh_hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* "ab:cd:..." or "abcd..." (any case) into bytes; -1 if not hex. */
static int ssh_parse_hex(const char *s, unsigned char *out, size_t max,
			 size_t *len)
{
	size_t n = 0;

	while (*s) {
		int hi, lo;

		if (*s == ':') {
			s++;
			continue;
		}
		hi = ssh_hexval((unsigned char)s[0]);
		lo = hi < 0 ? -1 : ssh_hexval((unsigned char)s[1]);
		if (hi < 0 || lo < 0 || n == max)
			return -1;
		out[n++] = (unsigned char)(hi * 16 + lo);
		s += 2;
	}
	*len = n;
	return 0;
}

/* OpenSSH's "SHA256:<base64 without padding>" form, as ssh-keygen -l
 * prints it. */
static int ssh_parse_b64(const char *s, unsigned char *out, size_t max,
			 size_t *len)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned acc = 0, bits = 0;
	size_t n = 0;

	for (; *s && *s != '='; s++) {
		const char *p = strchr(abc, *s);

		if (!p || !*s)
			return -1;
		acc = (acc << 6) | (unsigned)(p - abc);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == max)
				return -1;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*len = n;
	return 0;
}

static int ssh_parse_hkc(const struct nd_opts *o, struct ssh_params *p)
{
	static const struct {
		const char *name;
		enum ssh_publickey_hash_type type;
		size_t len;
	} hashes[] = {
	    {"sha256", SSH_PUBLICKEY_HASH_SHA256, 32},
	    {"sha1", SSH_PUBLICKEY_HASH_SHA1, 20},
	    {"md5", SSH_PUBLICKEY_HASH_MD5, 16},
	};
	const char *v = nd_opt_get(o, "host-key-check");

	p->hkc = SSH_HKC_KNOWN_HOSTS;
	if (!v || !strcmp(v, "known_hosts") || !strcmp(v, "known-hosts") ||
	    !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "true"))
		return 0;
	if (!strcmp(v, "none") || !strcmp(v, "no") || !strcmp(v, "off") ||
	    !strcmp(v, "false")) {
		p->hkc = SSH_HKC_NONE;
		return 0;
	}
	for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
		size_t nl = strlen(hashes[i].name);

		if (strncasecmp(v, hashes[i].name, nl) != 0 || v[nl] != ':')
			continue;
		p->hkc = SSH_HKC_HASH;
		p->hash_type = hashes[i].type;
		p->hash_name = hashes[i].name;
		if ((ssh_parse_hex(v + nl + 1, p->hash, sizeof(p->hash),
				   &p->hash_len) == 0 &&
		     p->hash_len == hashes[i].len) ||
		    (hashes[i].type != SSH_PUBLICKEY_HASH_MD5 &&
		     ssh_parse_b64(v + nl + 1, p->hash, sizeof(p->hash),
				   &p->hash_len) == 0 &&
		     p->hash_len == hashes[i].len))
			return 0;
		nd_error(
		    "ssh: host-key-check=%s: expected %zu bytes of hex (or OpenSSH's base64) after '%s:'",
		    v, hashes[i].len, hashes[i].name);
		return -EINVAL;
	}
	nd_error(
	    "ssh: host-key-check=%s: expected known_hosts, none, sha256:HEX, sha1:HEX or md5:HEX",
	    v);
	return -EINVAL;
}

static int ssh_parse(const struct nd_opts *o, const struct nd_settings *s,
		     struct ssh_params *p)
{
	uint64_t port;
	const char *h;
	size_t hl;
	int r;

	memset(p, 0, sizeof(*p));
	h = nd_opt_get(o, "server.host");
	if (!h || !*h) {
		nd_error("ssh: no host (server.host) given");
		return -EINVAL;
	}
	/* "[::1]" from a hand-written option: libssh wants the bare address. */
	hl = strlen(h);
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']' &&
	    hl - 2 < sizeof(p->host_buf)) {
		memcpy(p->host_buf, h + 1, hl - 2);
		p->host_buf[hl - 2] = '\0';
		h = p->host_buf;
	}
	p->host = h;
	if (nd_opt_uint(o, "server.port", SSH_DEFAULT_PORT, 1, 65535, &port) <
	    0)
		return -EINVAL;
	p->port = (unsigned)port;
	p->user = nd_opt_get(o, "user");
	if (p->user && !*p->user)
		p->user = NULL;
	p->path = nd_opt_get(o, "path");
	if (!p->path || !*p->path) {
		nd_error("ssh: no remote file (path) given");
		return -EINVAL;
	}
	r = ssh_parse_hkc(o, p);
	if (r < 0)
		return r;
	p->known_hosts = nd_opt_get(o, "known-hosts");
	p->identity = nd_opt_get(o, "identity");
	p->timeout = s->timeout;
	p->ro = s->read_only;
	return 0;
}

/* ---- connect, host key, authentication --------------------------------- */

/* The user when the entry names none: ~/.ssh/config's User, else the
 * local user. */
static int ssh_default_user(ssh_session s, const char *entry)
{
	struct passwd pw, *res = NULL;
	char buf[1024], *user = NULL;

	if (ssh_options_get(s, SSH_OPTIONS_USER, &user) == SSH_OK && user) {
		ssh_string_free_char(user);
		return 0;
	}
	if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res) != 0 || !res) {
		nd_error("ssh: no user given and no name for uid %u",
			 (unsigned)geteuid());
		return -EINVAL;
	}
	if (ssh_options_set(s, SSH_OPTIONS_USER, res->pw_name) < 0)
		return ssh_fail(s, NULL, EINVAL, "ssh: user %s", res->pw_name);
	return 0;
}

/* With AES instructions, AES-GCM runs about twice as fast as libssh's
 * first choice chacha20-poly1305 on both ends: put it first. Set before
 * ~/.ssh/config is read, so a Ciphers line there still wins. */
static void ssh_prefer_ciphers(ssh_session s)
{
#if defined(__x86_64__) || defined(__i386__)
	static const char ciphers[] =
	    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
	    "chacha20-poly1305@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr";

	__builtin_cpu_init();
	if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul"))
		return;
	if (ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S, ciphers) < 0 ||
	    ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C, ciphers) < 0)
		nd_debug("cipher preference not set: %s", ssh_get_error(s));
#else
	(void)s;
#endif
}

static int ssh_set_options(ssh_session s, const struct ssh_params *p,
			   const char *entry)
{
	long secs = (long)p->timeout;
	long usecs = (long)((p->timeout - (double)secs) * 1e6);
	int verbosity = nd_debug_enabled ? SSH_LOG_PROTOCOL : SSH_LOG_NOLOG;
	int nodelay = 1;

	if (ssh_options_set(s, SSH_OPTIONS_HOST, p->host) < 0)
		return ssh_fail(s, NULL, EINVAL, "ssh: host %s", p->host);
	ssh_prefer_ciphers(s);
	/* Like QEMU and ssh(1): ~/.ssh/config and /etc/ssh/ssh_config apply
	 * (Hostname, ProxyCommand, ...), but what the entry says wins. */
	if (ssh_options_parse_config(s, NULL) < 0)
		nd_debug("entry '%s': ssh: ssh config not applied: %s", entry,
			 ssh_get_error(s));
	if (ssh_options_set(s, SSH_OPTIONS_PORT, &p->port) < 0 ||
	    (p->user && ssh_options_set(s, SSH_OPTIONS_USER, p->user) < 0) ||
	    ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &secs) < 0 ||
	    ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &usecs) < 0 ||
	    ssh_options_set(s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity) < 0 ||
	    ssh_options_set(s, SSH_OPTIONS_NODELAY, &nodelay) < 0)
		return ssh_fail(s, NULL, EINVAL, "ssh: ssh options");
	if (p->known_hosts &&
	    (ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, p->known_hosts) < 0 ||
	     ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, p->known_hosts) <
		 0))
		return ssh_fail(s, NULL, EINVAL, "ssh: known-hosts=%s",
				p->known_hosts);
	return p->user ? 0 : ssh_default_user(s, entry);
}

/* SHA256:base64 fingerprint of KEY, as ssh-keygen -l prints it. */
static char *ssh_fingerprint(ssh_key key, enum ssh_publickey_hash_type type)
{
	unsigned char *hash = NULL;
	size_t len = 0;
	char *fp;

	if (ssh_get_publickey_hash(key, type, &hash, &len) < 0)
		return NULL;
	fp = type == SSH_PUBLICKEY_HASH_MD5
		 ? ssh_get_hexa(hash, len)
		 : ssh_get_fingerprint_hash(type, hash, len);
	ssh_clean_pubkey_hash(&hash);
	return fp;
}

/* The known_hosts file checked, for messages: libssh's default is in the
 * home directory of the passwd entry, not $HOME. */
static void ssh_known_hosts_name(const struct ssh_params *p, char *buf,
				 size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[1024];
	const char *home = NULL;

	if (p->known_hosts) {
		snprintf(buf, len, "%s", p->known_hosts);
		return;
	}
	if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res)
		home = res->pw_dir;
	else
		home = getenv("HOME");
	snprintf(buf, len, "%s/.ssh/known_hosts", home ? home : "~");
}

static int ssh_check_host_key(ssh_session s, const struct ssh_params *p,
			      const char *entry, const char *where)
{
	ssh_key key = NULL;
	char *fp = NULL, *got = NULL;
	char kh[512];
	const char *type;
	unsigned char *hash = NULL;
	size_t hash_len = 0;
	int r = 0;

	if (ssh_get_server_publickey(s, &key) < 0)
		return ssh_fail(s, NULL, ENOTCONN, "ssh: no host key from %s",
				where);
	type = ssh_key_type_to_char(ssh_key_type(key));
	fp = ssh_fingerprint(key, SSH_PUBLICKEY_HASH_SHA256);
	switch (p->hkc) {
	case SSH_HKC_NONE:
		if (nd_first_time("ssh/hostkey-none/%s", entry ? entry : ""))
			nd_warn(
			    "entry '%s': ssh: host-key-check=none: NOT verifying the host key of %s (%s %s)",
			    entry, where, type, fp ? fp : "?");
		break;
	case SSH_HKC_HASH:
		if (ssh_get_publickey_hash(key, p->hash_type, &hash,
					   &hash_len) < 0) {
			r = ssh_fail(s, NULL, EIO,
				     "ssh: cannot hash the host key");
			break;
		}
		if (hash_len != p->hash_len ||
		    memcmp(hash, p->hash, hash_len) != 0) {
			got = ssh_get_hexa(hash, hash_len);
			nd_error(
			    "ssh: host key of %s does not match host-key-check=%s:... (server offers %s key %s, %s:%s): refusing to connect",
			    where, p->hash_name, type, fp ? fp : "?",
			    p->hash_name, got ? got : "?");
			r = -EACCES;
		}
		ssh_clean_pubkey_hash(&hash);
		break;
	case SSH_HKC_KNOWN_HOSTS:
		ssh_known_hosts_name(p, kh, sizeof(kh));
		switch (ssh_session_is_known_server(s)) {
		case SSH_KNOWN_HOSTS_OK: break;
		case SSH_KNOWN_HOSTS_CHANGED:
			nd_error(
			    "ssh: HOST KEY OF %s HAS CHANGED: server offers %s key %s, which does not match %s (someone may be intercepting the connection); refusing to connect",
			    where, type, fp ? fp : "?", kh);
			r = -EACCES;
			break;
		case SSH_KNOWN_HOSTS_OTHER:
			nd_error(
			    "ssh: host key of %s is a %s key %s, but %s holds a key of another type for this host; refusing to connect",
			    where, type, fp ? fp : "?", kh);
			r = -EACCES;
			break;
		case SSH_KNOWN_HOSTS_UNKNOWN:
		case SSH_KNOWN_HOSTS_NOT_FOUND:
			nd_error(
			    "ssh: host key of %s is unknown (%s key %s, not in %s); refusing to connect: add it to known_hosts or pin it with host-key-check=sha256:HEX",
			    where, type, fp ? fp : "?", kh);
			r = -EACCES;
			break;
		case SSH_KNOWN_HOSTS_ERROR:
		default:
			r = ssh_fail(
			    s, NULL, EACCES,
			    "ssh: cannot check the host key of %s against %s",
			    where, kh);
			break;
		}
		break;
	}
	ssh_string_free_char(got);
	ssh_string_free_char(fp);
	ssh_key_free(key);
	return r;
}

/* keyboard-interactive with the password answering every hidden prompt. */
static int ssh_auth_kbdint(ssh_session s, const char *password)
{
	int rc, rounds = 0;

	while ((rc = ssh_userauth_kbdint(s, NULL, NULL)) == SSH_AUTH_INFO) {
		int n = ssh_userauth_kbdint_getnprompts(s);

		if (++rounds > 4)
			return SSH_AUTH_DENIED;
		for (int i = 0; i < n; i++) {
			char echo = 0;

			ssh_userauth_kbdint_getprompt(s, (unsigned)i, &echo);
			if (ssh_userauth_kbdint_setanswer(
				s, (unsigned)i, echo ? "" : password) < 0)
				return SSH_AUTH_ERROR;
		}
	}
	return rc;
}

/* ssh-agent, then the identity file (or, without an agent, the default
 * ~/.ssh/id_* keys), then the password. */
static int ssh_auth(ssh_session s, const struct nd_opts *o,
		    const struct ssh_params *p, const char *where)
{
	const char *agent = getenv("SSH_AUTH_SOCK");
	bool have_agent = agent && *agent;
	char *password = NULL;
	char tried[256] = "";
	int methods, rc, r = 0;
	ssh_key key = NULL;

	if (nd_opt_secret(o, "password", &password) < 0)
		return -EINVAL;
	rc = ssh_userauth_none(s, NULL);
	if (rc == SSH_AUTH_SUCCESS)
		goto out;
	if (rc == SSH_AUTH_ERROR) {
		r = ssh_fail(s, NULL, ENOTCONN, "ssh: authentication with %s",
			     where);
		goto out;
	}
	methods = ssh_userauth_list(s, NULL);
	if (methods & SSH_AUTH_METHOD_PUBLICKEY) {
		if (have_agent) {
			strcat(tried, " ssh-agent");
			rc = ssh_userauth_agent(s, NULL);
			if (rc == SSH_AUTH_SUCCESS)
				goto out;
		}
		if (p->identity) {
			strcat(tried, " identity");
			if (access(p->identity, R_OK) < 0) {
				nd_error("ssh: identity=%s: %m", p->identity);
				r = -errno;
				goto out;
			}
			if (ssh_pki_import_privkey_file(p->identity, NULL, NULL,
							NULL, &key) != SSH_OK) {
				nd_error(
				    "ssh: cannot load identity=%s (a passphrase-protected key must be loaded into ssh-agent)",
				    p->identity);
				r = -EINVAL;
				goto out;
			}
			rc = ssh_userauth_publickey(s, NULL, key);
			if (rc == SSH_AUTH_SUCCESS)
				goto out;
		} else if (!have_agent) {
			strcat(tried, " ~/.ssh/id_*");
			rc = ssh_userauth_publickey_auto(s, NULL, NULL);
			if (rc == SSH_AUTH_SUCCESS)
				goto out;
		}
	}
	if (password && (methods & SSH_AUTH_METHOD_PASSWORD)) {
		strcat(tried, " password");
		rc = ssh_userauth_password(s, NULL, password);
		if (rc == SSH_AUTH_SUCCESS)
			goto out;
	} else if (password && (methods & SSH_AUTH_METHOD_INTERACTIVE)) {
		strcat(tried, " keyboard-interactive");
		rc = ssh_auth_kbdint(s, password);
		if (rc == SSH_AUTH_SUCCESS)
			goto out;
	}
	if (!ssh_is_connected(s)) {
		r = ssh_fail(
		    s, NULL, ENOTCONN,
		    "ssh: connection lost while authenticating with %s", where);
		goto out;
	}
	nd_error(
	    "ssh: authentication with %s failed (server offers:%s%s%s; tried:%s)%s",
	    where, methods & SSH_AUTH_METHOD_PUBLICKEY ? " publickey" : "",
	    methods & SSH_AUTH_METHOD_PASSWORD ? " password" : "",
	    methods & SSH_AUTH_METHOD_INTERACTIVE ? " keyboard-interactive"
						  : "",
	    *tried ? tried : " nothing",
	    have_agent ? "" : "; SSH_AUTH_SOCK is not set");
	r = -EACCES;
out:
	ssh_key_free(key);
	nd_secret_free(password);
	return r;
}

/* ---- connection -------------------------------------------------------- */

static int ssh_timeout_error(struct ssh_conn *c, const char *what)
{
	c->broken = true;
	nd_error(
	    "ssh: %s: no answer from %s for %g s (timeout=): connection dropped",
	    what, c->where, c->timeout);
	errno = ENOTCONN;
	return -ENOTCONN;
}

static void ssh_close(void *vc)
{
	struct ssh_conn *c = vc;

	if (!c)
		return;
	ssh_thread_setup();
	/* Closing waits for at most SSH_CLOSE_TIMEOUT: the session is thrown
	 * away anyway, and unmount must not wait on a stopped server. */
	if (c->wd_linked) {
		if (c->timeout > SSH_CLOSE_TIMEOUT)
			c->timeout = SSH_CLOSE_TIMEOUT;
		ssh_arm(c);
	}
	/* A broken session must not wait for anything: the server may be
	 * gone or stopped, and unmount must not wait for it. With its socket
	 * shut down, the CLOSE of the handle and the disconnect fail at once
	 * and only free memory. */
	if (c->broken && c->wd_fd >= 0)
		shutdown(c->wd_fd, SHUT_RDWR);
	if (c->file)
		sftp_close(c->file);
	if (c->sftp)
		sftp_free(c->sftp);
	if (c->session) {
		if (!c->broken)
			ssh_disconnect(c->session);
		ssh_free(c->session);
	}
	ssh_wd_del(c);
	free(c->where);
	free(c);
}

/* Open the remote file, read-write unless ro=on or the server refuses. */
static int ssh_open_file(struct ssh_conn *c, const struct nd_opts *o,
			 const struct ssh_params *p, struct nd_info *info)
{
	int fx;

	if (!p->ro) {
		c->file = sftp_open(c->sftp, p->path, O_RDWR, 0);
		if (c->file)
			return 0;
		fx = sftp_get_error(c->sftp);
		if (fx != SSH_FX_PERMISSION_DENIED &&
		    fx != SSH_FX_WRITE_PROTECT)
			goto fail;
		if (nd_first_time("ssh/readonly/%s", o->name))
			nd_info(
			    "entry '%s': ssh: %s is not writable: read-only",
			    o->name, c->where);
	}
	info->read_only = true;
	c->file = sftp_open(c->sftp, p->path, O_RDONLY, 0);
	if (c->file)
		return 0;
	fx = sftp_get_error(c->sftp);
fail:
	if (ssh_timed_out(c))
		return ssh_timeout_error(c, "open");
	if (fx == SSH_FX_NO_SUCH_FILE || fx == SSH_FX_NO_SUCH_PATH)
		return ssh_fail(c->session, c->sftp, ENOENT,
				"ssh: cannot open %s", c->where);
	if (fx == SSH_FX_PERMISSION_DENIED)
		return ssh_fail(c->session, c->sftp, EACCES,
				"ssh: cannot open %s", c->where);
	if (fx == SSH_FX_FAILURE) {
		/* OpenSSH says only "Failure" for a directory. */
		sftp_attributes a = sftp_stat(c->sftp, p->path);
		bool dir = a && a->type == SSH_FILEXFER_TYPE_DIRECTORY;

		sftp_attributes_free(a);
		if (dir) {
			nd_error("ssh: %s is a directory", c->where);
			return -EISDIR;
		}
	}
	return ssh_fail(c->session, c->sftp, fx > 0 ? EIO : ENOTCONN,
			"ssh: cannot open %s", c->where);
}

static int ssh_stat_file(struct ssh_conn *c, const struct nd_opts *o,
			 struct nd_info *info)
{
	sftp_attributes a = sftp_fstat(c->file);
	int r = 0;

	if (!a) {
		if (ssh_timed_out(c))
			return ssh_timeout_error(c, "stat");
		return ssh_fail(c->session, c->sftp,
				sftp_get_error(c->sftp) > 0 ? EIO : ENOTCONN,
				"ssh: cannot stat %s", c->where);
	}
	if (a->type == SSH_FILEXFER_TYPE_DIRECTORY) {
		nd_error("ssh: %s is a directory", c->where);
		r = -EISDIR;
	} else if (!(a->flags & SSH_FILEXFER_ATTR_SIZE)) {
		nd_error("ssh: the server gives no size for %s", c->where);
		r = -EIO;
	} else {
		info->size = a->size;
	}
	sftp_attributes_free(a);
	return r;
}

/* "user@host:port/path" (IPv6 in brackets) for messages. */
static int ssh_where(struct ssh_conn *c, const struct ssh_params *p)
{
	char *user = NULL;
	int r;

	if (ssh_options_get(c->session, SSH_OPTIONS_USER, &user) < 0)
		user = NULL;
	r = asprintf(&c->where,
		     strchr(p->host, ':') ? "%s@[%s]:%u%s%s" : "%s@%s:%u%s%s",
		     user ? user : "?", p->host, p->port,
		     p->path[0] == '/' ? "" : "/", p->path);
	ssh_string_free_char(user);
	if (r < 0)
		c->where = NULL;
	return r < 0 ? -ENOMEM : 0;
}

/* Host key, authentication, SFTP channel, the file: everything after the
 * TCP connection and key exchange, under the watchdog. */
static int ssh_setup(struct ssh_conn *c, const struct nd_opts *o,
		     const struct ssh_params *p, struct nd_info *info)
{
	int r;

	r = ssh_check_host_key(c->session, p, o->name, c->where);
	if (r < 0)
		return r;
	ssh_arm(c);
	r = ssh_auth(c->session, o, p, c->where);
	if (r < 0)
		return ssh_timed_out(c) ? ssh_timeout_error(c, "authentication")
					: r;
	ssh_arm(c);
	c->sftp = sftp_new(c->session);
	if (!c->sftp) {
		if (ssh_timed_out(c))
			return ssh_timeout_error(c, "SFTP channel");
		return ssh_fail(c->session, NULL, ENOTCONN,
				"ssh: cannot start SFTP on %s", c->where);
	}
	ssh_arm(c);
	if (sftp_init(c->sftp) < 0) {
		if (ssh_timed_out(c))
			return ssh_timeout_error(c, "SFTP handshake");
		return ssh_fail(c->session, c->sftp, ENOTCONN,
				"ssh: SFTP handshake with %s", c->where);
	}
	ssh_arm(c);
	r = ssh_open_file(c, o, p, info);
	if (r < 0)
		return r;
	ssh_arm(c);
	return ssh_stat_file(c, o, info);
}

static int ssh_open(const struct nd_opts *o, const struct nd_settings *s,
		    void **conn, struct nd_info *info)
{
	struct ssh_params p;
	struct ssh_conn *c;
	int r;

	ssh_thread_setup();
	*conn = NULL;
	r = ssh_parse(o, s, &p);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c) {
		nd_error("ssh: out of memory");
		return -ENOMEM;
	}
	c->wd_fd = -1;
	c->timeout = p.timeout;
	c->session = ssh_new();
	if (!c->session) {
		free(c);
		nd_error("ssh: cannot create an SSH session");
		return -ENOMEM;
	}
	r = ssh_set_options(c->session, &p, o->name);
	if (r < 0)
		goto fail;
	if (ssh_where(c, &p) < 0) {
		nd_error("ssh: out of memory");
		r = -ENOMEM;
		goto fail;
	}
	/* ssh_connect is bounded by the session timeout (TCP connect,
	 * banner, key exchange); after it the watchdog takes over. */
	if (ssh_connect(c->session) != SSH_OK) {
		c->broken = true;
		r = ssh_fail(c->session, NULL, ENOTCONN,
			     "ssh: cannot connect to %s", c->where);
		goto fail;
	}
	r = ssh_wd_add(c, o->name);
	if (r < 0)
		goto fail;
	memset(info, 0, sizeof(*info));
	r = ssh_setup(c, o, &p, info);
	ssh_disarm(c);
	if (r < 0)
		goto fail;
	if (ssh_get_openssh_version(c->session)) {
		c->read_chunk = SSH_READ_CHUNK_OPENSSH;
		c->write_chunk = SSH_WRITE_CHUNK_OPENSSH;
	} else {
		c->read_chunk = SSH_READ_CHUNK_OTHER;
		c->write_chunk = SSH_WRITE_CHUNK_OTHER;
	}
	info->read_only = info->read_only || p.ro;
	/* An SFTP WRITE past the end extends the file. */
	info->can_grow = !info->read_only;
	info->can_flush =
	    sftp_extension_supported(c->sftp, "fsync@openssh.com", "1") == 1;
	if (!info->can_flush && !info->read_only &&
	    nd_first_time("ssh/nofsync/%s", o->name))
		nd_warn(
		    "entry '%s': ssh: the SFTP server of %s does not offer fsync@openssh.com: fsync cannot reach its disk",
		    o->name, c->where);
	/* Each session writes straight into the server's file: what one
	 * connection wrote is what another reads, and fsync on any handle
	 * flushes the file. */
	info->can_multi_conn = true;
	info->thread_safe = false;
	*conn = c;
	nd_debug("entry '%s': ssh: connected to %s (cipher %s, size %llu%s%s)",
		 o->name, c->where,
		 ssh_get_cipher_in(c->session) ? ssh_get_cipher_in(c->session)
					       : "?",
		 (unsigned long long)info->size,
		 info->read_only ? ", read-only" : "",
		 info->can_flush ? ", fsync" : "");
	return 0;
fail:
	if (r == -ENOTCONN)
		c->broken = true;
	ssh_close(c);
	return r;
}

/* ---- I/O --------------------------------------------------------------- */

/* After a failed operation: an SFTP status from a live session is an I/O
 * error on this request; anything else (transport error, timeout, channel
 * closed, garbage) leaves the session unusable: -ENOTCONN. */
static int ssh_io_fail(struct ssh_conn *c, const char *what, size_t len,
		       uint64_t off)
{
	int fx = sftp_get_error(c->sftp);
	int err;

	if (ssh_timed_out(c))
		return ssh_timeout_error(c, what);
	if (!c->broken && (!ssh_is_connected(c->session) ||
			   ssh_channel_is_closed(c->sftp->channel) ||
			   ssh_channel_is_eof(c->sftp->channel)))
		c->broken = true;
	switch (c->broken ? 0 : fx) {
	case SSH_FX_PERMISSION_DENIED: err = EACCES; break;
	case SSH_FX_WRITE_PROTECT: err = EROFS; break;
	case SSH_FX_OP_UNSUPPORTED: err = EOPNOTSUPP; break;
	case SSH_FX_FAILURE:
	case SSH_FX_EOF:
	case SSH_FX_NO_SUCH_FILE:
	case SSH_FX_NO_MEDIA: err = EIO; break;
	default: /* no status (transport error), lost, bad message */
		c->broken = true;
		err = ENOTCONN;
		break;
	}
	return ssh_fail(c->session, c->broken ? NULL : c->sftp, err,
			"ssh: %s of %zu bytes at %llu on %s", what, len,
			(unsigned long long)off, c->where);
}

static int ssh_check_usable(struct ssh_conn *c)
{
	if (!c->broken)
		return 0;
	nd_error("ssh: the connection to %s is broken", c->where);
	errno = ENOTCONN;
	return -ENOTCONN;
}

/* Synchronous read of exactly len bytes (fills a short chunk). */
static int ssh_read_sync(struct ssh_conn *c, char *buf, size_t len,
			 uint64_t off)
{
	while (len > 0) {
		ssize_t n;

		c->sftp->errnum = SSH_FX_OK;
		if (sftp_seek64(c->file, off) < 0)
			return ssh_io_fail(c, "seek", len, off);
		n = sftp_read(c->file, buf,
			      len < c->read_chunk ? len : c->read_chunk);
		if (n < 0)
			return ssh_io_fail(c, "read", len, off);
		if (n == 0) {
			/* The file shrank under us: the size the core holds
			 * is stale. Drop the session (and queued replies). */
			c->broken = true;
			nd_error(
			    "ssh: read at %llu on %s: end of file (the remote file shrank?)",
			    (unsigned long long)off, c->where);
			errno = EIO;
			return -EIO;
		}
		ssh_arm(c);
		buf += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

struct ssh_slot {
	uint32_t id;
	uint32_t len;
	size_t pos; /* offset in the caller's buffer */
};

/* Up to SSH_READ_INFLIGHT READs of read_chunk bytes in flight; replies are
 * collected oldest first straight into the caller's buffer. */
static int ssh_read_pipelined(struct ssh_conn *c, char *buf, size_t len,
			      uint64_t off)
{
	struct ssh_slot q[SSH_READ_INFLIGHT];
	size_t issued = 0, head = 0, n_in = 0;
	int r = 0;

	while (issued < len || n_in > 0) {
		while (r == 0 && issued < len && n_in < SSH_READ_INFLIGHT) {
			struct ssh_slot *s =
			    &q[(head + n_in) % SSH_READ_INFLIGHT];
			size_t n = len - issued;
			int id;

			if (n > c->read_chunk)
				n = c->read_chunk;
			c->sftp->errnum = SSH_FX_OK;
			/* sftp_seek64 only sets libssh's offset for the
			 * next request: no round trip. */
			if (sftp_seek64(c->file, off + issued) < 0 ||
			    (id = sftp_async_read_begin(c->file, (uint32_t)n)) <
				0) {
				r = ssh_io_fail(c, "read request", n,
						off + issued);
				break;
			}
			s->id = (uint32_t)id;
			s->len = (uint32_t)n;
			s->pos = issued;
			issued += n;
			n_in++;
		}
		if (n_in == 0)
			break;
		struct ssh_slot *s = &q[head];
		int got;

		head = (head + 1) % SSH_READ_INFLIGHT;
		n_in--;
		if (c->broken)
			continue; /* replies in flight die with the session */
		/* After an error, keep collecting: a reply left unread
		 * would stay queued in libssh. */
		c->sftp->errnum = SSH_FX_OK;
		got = sftp_async_read(c->file, buf + s->pos, s->len, s->id);
		if (got < 0) {
			if (r == 0)
				r = ssh_io_fail(c, "read", s->len,
						off + s->pos);
			else if (ssh_timed_out(c))
				c->broken = true;
			continue;
		}
		ssh_arm(c); /* progress: the deadline is per reply */
		if (r == 0 && (uint32_t)got < s->len) {
			/* Servers may cap a READ below what we ask: ask for
			 * what it gave from now on, and fill the hole. */
			if (got >= SSH_READ_CHUNK_MIN)
				c->read_chunk =
				    (size_t)got &
				    ~(size_t)(SSH_READ_CHUNK_MIN - 1);
			r = ssh_read_sync(c, buf + s->pos + got,
					  s->len - (uint32_t)got,
					  off + s->pos + (uint64_t)got);
		}
	}
	return r;
}

static int ssh_pread(void *vc, void *buf, size_t len, uint64_t off)
{
	struct ssh_conn *c = vc;
	int r;

	ssh_thread_setup();
	if ((r = ssh_check_usable(c)) < 0)
		return r;
	ssh_arm(c);
	r = ssh_read_pipelined(c, buf, len, off);
	if (ssh_disarm(c) && r == 0)
		r = ssh_timeout_error(c, "read");
	return r;
}

static int ssh_write_all(struct ssh_conn *c, const char *buf, size_t len,
			 uint64_t off)
{
	while (len > 0) {
		size_t n = len < c->write_chunk ? len : c->write_chunk;
		ssize_t w;

		c->sftp->errnum = SSH_FX_OK;
		if (sftp_seek64(c->file, off) < 0)
			return ssh_io_fail(c, "seek", n, off);
		w = sftp_write(c->file, buf, n);
		if (w < 0)
			return ssh_io_fail(c, "write", n, off);
		if ((size_t)w != n) {
			/* An SFTP WRITE is all or nothing; anything else
			 * means the session is confused. */
			c->broken = true;
			nd_error(
			    "ssh: write of %zu bytes at %llu on %s: server wrote %zd",
			    n, (unsigned long long)off, c->where, w);
			errno = ENOTCONN;
			return -ENOTCONN;
		}
		ssh_arm(c);
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int ssh_pwrite(void *vc, const void *buf, size_t len, uint64_t off)
{
	struct ssh_conn *c = vc;
	int r;

	ssh_thread_setup();
	if ((r = ssh_check_usable(c)) < 0)
		return r;
	ssh_arm(c);
	r = ssh_write_all(c, buf, len, off);
	if (ssh_disarm(c) && r == 0)
		r = ssh_timeout_error(c, "write");
	return r;
}

static int ssh_flush(void *vc)
{
	struct ssh_conn *c = vc;
	int r = 0;

	ssh_thread_setup();
	if ((r = ssh_check_usable(c)) < 0)
		return r;
	ssh_arm(c);
	c->sftp->errnum = SSH_FX_OK;
	if (sftp_fsync(c->file) < 0)
		r = ssh_io_fail(c, "fsync", 0, 0);
	if (ssh_disarm(c) && r == 0)
		r = ssh_timeout_error(c, "fsync");
	return r;
}

static void ssh_shutdown(void)
{
	ssh_wd_shutdown();
}

static const char *const ssh_drivers[] = {"ssh", NULL};
static const char *const ssh_schemes[] = {"ssh", NULL};
static const struct nd_optdesc ssh_options[] = {
    {"server.host", ND_OPT_STRING, NULL, false,
     "SSH server host name or address"},
    {"server.port", ND_OPT_UINT, "22", false, "SSH server port"},
    {"user", ND_OPT_STRING, NULL, false, "remote user name (the local user)"},
    {"path", ND_OPT_STRING, NULL, false,
     "path of the disk image on the server"},
    {"host-key-check", ND_OPT_STRING, "known_hosts", false,
     "known_hosts, none, sha256:HEX, sha1:HEX or md5:HEX"},
    {"known-hosts", ND_OPT_FILE, NULL, false,
     "known_hosts file (~/.ssh/known_hosts)"},
    {"identity", ND_OPT_FILE, NULL, false,
     "private key file, tried after ssh-agent"},
    {"password-file", ND_OPT_FILE, NULL, false,
     "file holding the password, tried last"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};

static const struct nd_backend ssh_backend = {
    .name = "ssh",
    .drivers = ssh_drivers,
    .schemes = ssh_schemes,
    .description = "SFTP over SSH (libssh): ssh-agent, key or password "
		   "authentication, host-key checking, pipelined reads",
    .options = ssh_options,
    .open = ssh_open,
    .close = ssh_close,
    .pread = ssh_pread,
    .pwrite = ssh_pwrite,
    .flush = ssh_flush,
    .shutdown = ssh_shutdown,
};

ND_BACKEND_REGISTER(ssh_backend)
