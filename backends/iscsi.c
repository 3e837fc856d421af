/* pkg-config: libiscsi */
/* iscsi.c: iSCSI LUNs (disks and cdroms) through libiscsi.
 *
 * One connection = one iscsi_context = one logged-in session to one LUN.
 * The core pools connections (thread_safe is false), so requests overlap
 * across sessions; within a session a read or write goes out as up to
 * ISCSI_PIPE commands in flight at once. Every command runs on the async
 * API under our own poll
 * loop with a deadline (the entry's timeout=, or ND_DEFAULT_TIMEOUT when it is 0),
 * so nothing waits forever on a dead or stopped target. libiscsi's own
 * reconnect logic is switched off (it sleeps and retries forever): when a
 * session is lost or a command stalls we return -ENOTCONN and the core opens
 * a fresh session and retries. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "backend.h"
#include "util/clock.h"

#define ISCSI_DEFAULT_IQN "iqn.2008-11.org.linux-kvm"
/* Seconds a logout at close may take before we just drop the socket. */
#define ISCSI_LOGOUT_BOUND 2.0
#define ISCSI_DEFAULT_MAX_REQUEST (1u << 20)
#define ISCSI_MAX_REQUEST_CAP (8u << 20)
/* Largest single UNMAP / WRITE SAME when the LUN reports no limit. */
#define ISCSI_DEFAULT_MAX_TRIM (64u << 20)
/* A read or write is cut into at most ISCSI_PIPE commands of at least
 * ISCSI_PIECE bytes, all in flight at once on the session. */
#define ISCSI_PIPE 8
#define ISCSI_PIECE (128u << 10)

/* Pseudo statuses for iscsi_fail, beside libiscsi's SCSI_STATUS_*. */
#define ISCSI_ST_STALLED 0x0f100000 /* our own deadline passed */
#define ISCSI_ST_LOST 0x0f100001    /* iscsi_service failed: socket gone */
#define ISCSI_ST_LIBRARY 0x0f100002 /* libiscsi refused: iscsi_get_error */
#define ISCSI_ST_CONNECT 0x0f100003 /* TCP connect failed */

struct iscsi_wait {
	bool done;
	int status;
	char err[256];	  /* libiscsi's error when it completed, before any
			     later step of the same iscsi_service overwrites it */
	char before[256]; /* libiscsi's error when it was queued: the library
			     never clears it, so an unchanged one is stale */
};

struct iscsi_conn {
	struct iscsi_context *ctx;
	char *name; /* entry name, for messages */
	int lun;
	double bound; /* seconds each command may take */
	uint32_t block_size;
	uint64_t blocks;
	bool cdrom, read_only, use16;
	bool lbpu, lbpws;
	uint32_t max_xfer;  /* blocks per READ/WRITE; 0 = no limit given */
	uint32_t max_unmap; /* blocks per UNMAP; 0 = no limit given */
	uint64_t max_ws;    /* blocks per WRITE SAME; 0 = no limit given */
	bool dead;	    /* session lost: every call returns -ENOTCONN */
	char *secret[2];    /* during open only: scrubbed from messages */
	/* Completion slots live here, not on the stack: a stalled command is
	 * abandoned and its callback may still fire when the context dies. */
	struct iscsi_wait connect_wait, wait, io[ISCSI_PIPE];
	struct iscsi_wait *last; /* the slot of the step that ran last */
	/* Stalled tasks, freed after the context (the connection is dead
	 * once one is parked, so no more than one batch ever is). */
	struct scsi_task *orphans[ISCSI_PIPE];
	unsigned char *zeroes; /* one block of zeroes for WRITE SAME */
};

static const char *const iscsi_drivers[] = {"iscsi", NULL};
static const char *const iscsi_schemes[] = {"iscsi", NULL};

static void iscsi_log(int level, const char *message)
{
	nd_debug("libiscsi[%d]: %s", level, message);
}

static void iscsi_task_freep(struct scsi_task **t)
{
	if (*t)
		scsi_free_scsi_task(*t);
}
#define CLEANUP_TASK __attribute__((cleanup(iscsi_task_freep)))

/* Overwrite every occurrence of the secret in MSG (libiscsi never puts the
 * CHAP password in an error today; this keeps it that way). */
static void iscsi_scrub(const struct iscsi_conn *c, char *msg)
{
	size_t i, n;
	char *p;

	for (i = 0; i < 2; i++) {
		n = c->secret[i] ? strlen(c->secret[i]) : 0;
		if (n == 0)
			continue;
		while ((p = strstr(msg, c->secret[i])) != NULL)
			memset(p, '*', n);
	}
}

/* iSCSI login status class/detail (RFC 7143 11.13.5) from libiscsi's
 * "Failed to log in to target. Status: Authentication failure(513)". */
static int iscsi_login_status(const char *msg)
{
	const char *p;

	if (strncmp(msg, "Failed to log in to target. Status:", 35) != 0)
		return -1;
	p = strrchr(msg, '(');
	return p && isdigit((unsigned char)p[1]) ? atoi(p + 1) : -1;
}

static int iscsi_errno_login(const char *msg)
{
	int st = iscsi_login_status(msg);

	if (st < 0) /* CHAP_R missing or wrong: authentication again */
		return strncmp(msg, "Failed to log in", 16) == 0 ||
			       strncmp(msg, "Authentication", 14) == 0
			   ? EACCES
			   : EIO;
	switch (st) {
	case 0x0201: /* authentication failure */
	case 0x0202: /* authorization failure */ return EACCES;
	case 0x0203: /* target not found */
	case 0x0204: /* target removed */ return ENOENT;
	default: /* 0x03xx: target error, out of resources: try again */
		return (st >> 8) == 3 ? EAGAIN : EACCES;
	}
}

/* Sense data -> errno, for a command that ended in CHECK CONDITION. */
static int iscsi_errno_sense(const struct scsi_sense *s)
{
	switch (s->key) {
	case SCSI_SENSE_NOT_READY:
		if ((s->ascq >> 8) == 0x3a) /* medium not present */
			return ENOMEDIUM;
		return EAGAIN;
	case SCSI_SENSE_UNIT_ATTENTION:
	case SCSI_SENSE_COMMAND_ABORTED: return EAGAIN;
	case SCSI_SENSE_DATA_PROTECTION:
		if (s->ascq == 0x2707) /* space allocation failed */
			return ENOSPC;
		return EROFS;
	case SCSI_SENSE_ILLEGAL_REQUEST:
		if (s->ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE)
			return ENOTSUP;
		if (s->ascq == SCSI_SENSE_ASCQ_LOGICAL_UNIT_NOT_SUPPORTED)
			return ENXIO;
		return EINVAL;
	case SCSI_SENSE_MISCOMPARE: return EILSEQ;
	default: return EIO;
	}
}

/* The one place that turns a failed step into one nd_error and a -errno.
 * STATUS is a libiscsi SCSI_STATUS_* or an ISCSI_ST_* pseudo status; TASK
 * (may be NULL) holds the sense data. Connection-level failures mark the
 * connection dead and return -ENOTCONN so the core logs in again. */
static int iscsi_fail(struct iscsi_conn *c, int status,
		      const struct scsi_task *task, const char *fmt, ...)
{
	char what[256], detail[512];
	const char *lib = c->ctx ? iscsi_get_error(c->ctx) : "";
	va_list ap;
	int err;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (c->last && c->last->err[0])
		lib = c->last->err;
	else if (c->last && strcmp(lib, c->last->before) == 0)
		lib = "";

	switch (status) {
	case SCSI_STATUS_CHECK_CONDITION:
		if (task) {
			snprintf(detail, sizeof detail, "%s (%s)",
				 scsi_sense_key_str(task->sense.key),
				 scsi_sense_ascq_str(task->sense.ascq));
			err = iscsi_errno_sense(&task->sense);
		} else {
			snprintf(detail, sizeof detail, "check condition");
			err = EIO;
		}
		break;
	case SCSI_STATUS_BUSY:
	case SCSI_STATUS_TASK_SET_FULL:
	case SCSI_STATUS_TASK_ABORTED:
		snprintf(detail, sizeof detail, "target busy (status 0x%x)",
			 (unsigned)status);
		err = EAGAIN;
		break;
	case SCSI_STATUS_RESERVATION_CONFLICT:
		snprintf(detail, sizeof detail, "reservation conflict");
		err = EBADE;
		break;
	case ISCSI_ST_STALLED:
		snprintf(detail, sizeof detail,
			 "no answer within %g s; dropping the session",
			 c->bound);
		err = ENOTCONN;
		break;
	case SCSI_STATUS_TIMEOUT:
		snprintf(detail, sizeof detail,
			 "timed out (timeout=%g); dropping the session",
			 c->bound);
		err = ENOTCONN;
		break;
	case ISCSI_ST_CONNECT:
		snprintf(detail, sizeof detail, "%s",
			 lib[0] ? lib : "cannot connect");
		err = ENOTCONN;
		break;
	case SCSI_STATUS_CANCELLED:
	case ISCSI_ST_LOST:
		snprintf(detail, sizeof detail, "connection lost: %s",
			 lib[0] ? lib : "the session was dropped");
		err = ENOTCONN;
		break;
	case SCSI_STATUS_ERROR:
	case ISCSI_ST_LIBRARY:
		snprintf(detail, sizeof detail, "%s",
			 lib[0] ? lib : "libiscsi error");
		err = c->ctx && iscsi_is_logged_in(c->ctx)
			  ? ENOTCONN
			  : iscsi_errno_login(detail);
		break;
	default:
		snprintf(detail, sizeof detail, "SCSI status 0x%x",
			 (unsigned)status);
		err = EIO;
		break;
	}
	iscsi_scrub(c, detail);
	if (err == ENOTCONN)
		c->dead = true;
	errno = err;
	nd_error("iSCSI %s: %s", what, detail);
	return -err;
}

static void iscsi_done_cb(struct iscsi_context *ctx, int status,
			  void *command_data, void *private_data)
{
	struct iscsi_wait *w = private_data;

	(void)command_data;
	w->status = status;
	w->done = true;
	if (status != SCSI_STATUS_GOOD &&
	    strcmp(iscsi_get_error(ctx), w->before) != 0)
		snprintf(w->err, sizeof w->err, "%s", iscsi_get_error(ctx));
}

static bool iscsi_all_done(const struct iscsi_wait *w, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (!w[i].done)
			return false;
	return true;
}

/* Drive the context until the N slots at W complete or DEADLINE passes.
 * 0 when they are done (look at each status), else ISCSI_ST_STALLED or
 * ISCSI_ST_LOST. */
static int iscsi_pump(struct iscsi_conn *c, struct iscsi_wait *w, int n,
		      double deadline)
{
	while (!iscsi_all_done(w, n)) {
		double left = deadline - nd_mono_s();
		struct pollfd pfd;
		int ms, k, revents = 0;

		if (left <= 0)
			return ISCSI_ST_STALLED;
		ms = left >= 1.0 ? 1000 : (int)(left * 1000) + 1;
		pfd.fd = iscsi_get_fd(c->ctx);
		pfd.events = (short)iscsi_which_events(c->ctx);
		pfd.revents = 0;
		if (pfd.fd < 0)
			return ISCSI_ST_LOST;
		if (pfd.events == 0) {
			/* libiscsi asks for a pause (see iscsi_which_events) */
			poll(NULL, 0, ms < 100 ? ms : 100);
		} else {
			k = poll(&pfd, 1, ms);
			if (k < 0 && errno != EINTR)
				return ISCSI_ST_LOST;
			if (k > 0)
				revents = pfd.revents;
		}
		/* revents 0 still runs libiscsi's timeout scan */
		if (iscsi_service(c->ctx, revents) < 0 && !iscsi_all_done(w, n))
			return ISCSI_ST_LOST;
	}
	return 0;
}

/* A command that never completed (W not done) is still referenced by
 * libiscsi: park it until the context is destroyed; *TP becomes NULL. */
static void iscsi_orphan(struct iscsi_conn *c, struct scsi_task **tp,
			 const struct iscsi_wait *w)
{
	int i;

	if (*tp == NULL || w->done)
		return;
	for (i = 0; i < ISCSI_PIPE; i++) {
		if (c->orphans[i] == NULL) {
			c->orphans[i] = *tp;
			break;
		}
	}
	/* no room (cannot happen): leaking beats a use after free */
	*tp = NULL;
}

/* Run *TP, already queued with iscsi_done_cb and &c->wait, to completion
 * within the command bound. 0, or -errno via iscsi_fail; an unfinished task
 * is parked (see iscsi_orphan) and *TP becomes NULL. */
static int iscsi_exec(struct iscsi_conn *c, struct scsi_task **tp,
		      const char *what)
{
	int r;

	if (*tp == NULL)
		return iscsi_fail(c, ISCSI_ST_LIBRARY, NULL, "%s", what);
	r = iscsi_pump(c, &c->wait, 1, nd_mono_s() + c->bound);
	if (r != 0) {
		iscsi_orphan(c, tp, &c->wait);
		return iscsi_fail(c, r, *tp, "%s", what);
	}
	if (c->wait.status != SCSI_STATUS_GOOD)
		return iscsi_fail(c, c->wait.status, *tp, "%s", what);
	return 0;
}

/* Reset the completion slot before queueing a command. */
static struct iscsi_wait *iscsi_arm_slot(struct iscsi_conn *c,
					 struct iscsi_wait *w)
{
	w->done = false;
	w->status = 0;
	w->err[0] = '\0';
	snprintf(w->before, sizeof w->before, "%s", iscsi_get_error(c->ctx));
	c->last = w;
	return w;
}

static struct iscsi_wait *iscsi_arm(struct iscsi_conn *c)
{
	return iscsi_arm_slot(c, &c->wait);
}

static int iscsi_check_alive(struct iscsi_conn *c, const char *what)
{
	if (!c->dead)
		return 0;
	errno = ENOTCONN;
	nd_error("iSCSI %s: session already lost", what);
	return -ENOTCONN;
}

/* ---- open ---------------------------------------------------------- */

static int iscsi_parse_digest(const char *s, enum iscsi_header_digest *out)
{
	static const struct {
		const char *name;
		enum iscsi_header_digest d;
	} map[] = {
	    {"crc32c", ISCSI_HEADER_DIGEST_CRC32C},
	    {"none", ISCSI_HEADER_DIGEST_NONE},
	    {"crc32c-none", ISCSI_HEADER_DIGEST_CRC32C_NONE},
	    {"none-crc32c", ISCSI_HEADER_DIGEST_NONE_CRC32C},
	};
	size_t i;

	for (i = 0; i < sizeof map / sizeof map[0]; i++) {
		if (strcasecmp(s, map[i].name) == 0) {
			*out = map[i].d;
			return 0;
		}
	}
	return -1;
}

/* CHAP: user= + password/password-file from the entry, else the
 * LIBISCSI_CHAP_USERNAME/LIBISCSI_CHAP_PASSWORD environment (as QEMU);
 * mutual CHAP from target-user= + target-password(-file), else
 * LIBISCSI_CHAP_TARGET_USERNAME/_PASSWORD (as libiscsi's own URLs). */
static int iscsi_setup_chap(struct iscsi_conn *c, const struct nd_opts *o)
{
	const char *user = nd_opt_get(o, "user");
	const char *tuser = nd_opt_get(o, "target-user");
	char *pw = NULL, *tpw = NULL;
	int r = -1;

	if (nd_opt_secret(o, "password", &pw) < 0)
		return -1;
	if (nd_opt_secret(o, "target-password", &tpw) < 0)
		goto out;
	if (user == NULL && pw == NULL) {
		const char *eu = getenv("LIBISCSI_CHAP_USERNAME");
		const char *ep = nd_secret_env("LIBISCSI_CHAP_PASSWORD");

		if (eu && eu[0]) {
			user = eu;
			if (ep) {
				pw = strdup(ep);
				if (pw == NULL) {
					nd_error("out of memory");
					goto out;
				}
			}
		}
	}
	if (tuser == NULL && tpw == NULL) {
		const char *eu = getenv("LIBISCSI_CHAP_TARGET_USERNAME");
		const char *ep = nd_secret_env("LIBISCSI_CHAP_TARGET_PASSWORD");

		if (eu && eu[0] && ep) {
			tuser = eu;
			tpw = strdup(ep);
			if (tpw == NULL) {
				nd_error("out of memory");
				goto out;
			}
		}
	}
	if (user && pw == NULL) {
		errno = EINVAL;
		nd_error(
		    "iSCSI CHAP user '%s' given without a password (password-file= or LIBISCSI_CHAP_PASSWORD)",
		    user);
		goto out;
	}
	if (pw && user == NULL) {
		errno = EINVAL;
		nd_error("iSCSI CHAP password given without user=");
		goto out;
	}
	if ((tuser == NULL) != (tpw == NULL)) {
		errno = EINVAL;
		nd_error(
		    "iSCSI mutual CHAP needs both target-user= and target-password-file=");
		goto out;
	}
	if (tuser && user == NULL) {
		errno = EINVAL;
		nd_error(
		    "iSCSI mutual CHAP (target-user=) needs CHAP credentials for the initiator too (user=)");
		goto out;
	}
	if (user && iscsi_set_initiator_username_pwd(c->ctx, user, pw) != 0) {
		iscsi_fail(c, ISCSI_ST_LIBRARY, NULL, "CHAP setup");
		goto out;
	}
	if (tuser && iscsi_set_target_username_pwd(c->ctx, tuser, tpw) != 0) {
		iscsi_fail(c, ISCSI_ST_LIBRARY, NULL, "mutual CHAP setup");
		goto out;
	}
	r = 0;
out:
	/* kept until the login is over, to scrub them from its messages */
	c->secret[0] = pw;
	c->secret[1] = tpw;
	return r;
}

static void iscsi_forget_secrets(struct iscsi_conn *c)
{
	nd_secret_free(c->secret[0]);
	nd_secret_free(c->secret[1]);
	c->secret[0] = c->secret[1] = NULL;
}

/* TCP connect, login (following one redirect), TEST UNIT READY until the
 * unit attentions of a fresh session are consumed. Bounded by DEADLINE. */
static int iscsi_login(struct iscsi_conn *c, const char *portal,
		       const char *target, double deadline)
{
	const char *addr = portal;
	int r, i;

	for (i = 0;; i++) {
		if (iscsi_connect_async(c->ctx, addr, iscsi_done_cb,
					iscsi_arm_slot(c, &c->connect_wait)) !=
		    0)
			return iscsi_fail(c, ISCSI_ST_CONNECT, NULL,
					  "connect to %s", addr);
		r = iscsi_pump(c, &c->connect_wait, 1, deadline);
		if (r == 0 && c->connect_wait.status != SCSI_STATUS_GOOD)
			r = ISCSI_ST_CONNECT;
		if (r != 0)
			return iscsi_fail(c, r, NULL, "connect to %s", addr);

		if (iscsi_login_async(c->ctx, iscsi_done_cb, iscsi_arm(c)) != 0)
			return iscsi_fail(c, ISCSI_ST_LIBRARY, NULL,
					  "login to %s on %s", target, addr);
		r = iscsi_pump(c, &c->wait, 1, deadline);
		if (r != 0)
			return iscsi_fail(c, r, NULL, "login to %s on %s",
					  target, addr);
		if (c->wait.status == SCSI_STATUS_GOOD)
			break;
		if (c->wait.status == SCSI_STATUS_REDIRECT && i == 0 &&
		    iscsi_get_target_address(c->ctx)[0]) {
			addr = iscsi_get_target_address(c->ctx);
			nd_debug("%s: iSCSI login redirected to %s", c->name,
				 addr);
			iscsi_disconnect(c->ctx);
			continue;
		}
		return iscsi_fail(c, ISCSI_ST_LIBRARY, NULL,
				  "login to %s on %s", target, addr);
	}

	for (i = 0; i < 8; i++) {
		CLEANUP_TASK struct scsi_task *t = iscsi_testunitready_task(
		    c->ctx, c->lun, iscsi_done_cb, iscsi_arm(c));
		if (t == NULL)
			return iscsi_fail(c, ISCSI_ST_LIBRARY, NULL,
					  "TEST UNIT READY");
		r = iscsi_pump(c, &c->wait, 1, deadline);
		if (r != 0) {
			iscsi_orphan(c, &t, &c->wait);
			return iscsi_fail(c, r, t, "TEST UNIT READY");
		}
		if (c->wait.status == SCSI_STATUS_GOOD)
			return 0;
		if (c->wait.status == SCSI_STATUS_CHECK_CONDITION &&
		    t->sense.key == SCSI_SENSE_UNIT_ATTENTION)
			continue;
		/* an empty tray is fine here; READ CAPACITY will say so */
		if (c->wait.status == SCSI_STATUS_CHECK_CONDITION &&
		    t->sense.key == SCSI_SENSE_NOT_READY)
			return 0;
		return iscsi_fail(c, c->wait.status, t, "LUN %d", c->lun);
	}
	return 0;
}

/* Run a data-in command built by the caller and unmarshall its answer
 * into *OUT (owned by the task). 0 or -errno after one nd_error. */
static int iscsi_query(struct iscsi_conn *c, struct scsi_task **tp,
		       const char *what, void **out)
{
	int r = iscsi_exec(c, tp, what);

	if (r < 0)
		return r;
	*out = scsi_datain_unmarshall(*tp);
	if (*out == NULL) {
		errno = EIO;
		nd_error("iSCSI %s: the target's answer could not be parsed",
			 what);
		return -EIO;
	}
	return 0;
}

static bool iscsi_illegal(const struct iscsi_conn *c, const struct scsi_task *t)
{
	return t && c->wait.status == SCSI_STATUS_CHECK_CONDITION &&
	       t->sense.key == SCSI_SENSE_ILLEGAL_REQUEST;
}

static int iscsi_capacity(struct iscsi_conn *c)
{
	int r;

	if (!c->cdrom) {
		CLEANUP_TASK struct scsi_task *t = iscsi_readcapacity16_task(
		    c->ctx, c->lun, iscsi_done_cb, iscsi_arm(c));
		struct scsi_readcapacity16 *rc16;

		r = iscsi_query(c, &t, "READ CAPACITY(16)", (void **)&rc16);
		if (r == 0) {
			c->blocks = rc16->returned_lba + 1;
			c->block_size = rc16->block_length;
			c->use16 = true;
			return 0;
		}
		/* an old target without the 16-byte commands: use (10) */
		if (!iscsi_illegal(c, t))
			return r;
		nd_debug("%s: READ CAPACITY(16) refused, using (10) commands",
			 c->name);
	}
	CLEANUP_TASK struct scsi_task *t = iscsi_readcapacity10_task(
	    c->ctx, c->lun, 0, 0, iscsi_done_cb, iscsi_arm(c));
	struct scsi_readcapacity10 *rc10;

	r = iscsi_query(c, &t, "READ CAPACITY(10)", (void **)&rc10);
	if (r < 0)
		return r;
	if (rc10->lba == 0xffffffff) {
		errno = EOVERFLOW;
		nd_error(
		    "iSCSI LUN %d is too big for READ CAPACITY(10) and refuses (16)",
		    c->lun);
		return -EOVERFLOW;
	}
	c->blocks = (uint64_t)rc10->lba + 1;
	c->block_size = rc10->block_size;
	c->use16 = false;
	return 0;
}

/* VPD pages: block limits (transfer, unmap and write-same sizes) and
 * logical block provisioning (UNMAP, WRITE SAME with unmap). Optional: a
 * target without them just gets the defaults. */
static void iscsi_vpd(struct iscsi_conn *c)
{
	bool has_b0 = false, has_b2 = false;
	int i;

	{
		CLEANUP_TASK struct scsi_task *t = iscsi_inquiry_task(
		    c->ctx, c->lun, 1,
		    SCSI_INQUIRY_PAGECODE_SUPPORTED_VPD_PAGES, 255,
		    iscsi_done_cb, iscsi_arm(c));
		struct scsi_inquiry_supported_pages *sp;

		if (iscsi_query(c, &t, "INQUIRY (VPD pages)", (void **)&sp) < 0)
			return;
		for (i = 0; i < sp->num_pages; i++) {
			if (sp->pages[i] == SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS)
				has_b0 = true;
			if (sp->pages[i] ==
			    SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING)
				has_b2 = true;
		}
	}
	if (has_b2 && !c->dead) {
		CLEANUP_TASK struct scsi_task *t = iscsi_inquiry_task(
		    c->ctx, c->lun, 1,
		    SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING, 255,
		    iscsi_done_cb, iscsi_arm(c));
		struct scsi_inquiry_logical_block_provisioning *lbp;

		if (iscsi_query(c, &t, "INQUIRY (provisioning)",
				(void **)&lbp) == 0) {
			c->lbpu = lbp->lbpu;
			c->lbpws = lbp->lbpws;
		}
	}
	if (has_b0 && !c->dead) {
		CLEANUP_TASK struct scsi_task *t = iscsi_inquiry_task(
		    c->ctx, c->lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 255,
		    iscsi_done_cb, iscsi_arm(c));
		struct scsi_inquiry_block_limits *bl;

		if (iscsi_query(c, &t, "INQUIRY (block limits)",
				(void **)&bl) == 0) {
			c->max_xfer = bl->max_xfer_len;
			c->max_unmap =
			    bl->max_unmap == 0xffffffff ? 0 : bl->max_unmap;
			c->max_ws = bl->max_ws_len;
		}
	}
}

/* MODE SENSE(6) header: write protect (WP). */
static void iscsi_mode_sense(struct iscsi_conn *c)
{
	CLEANUP_TASK struct scsi_task *t =
	    iscsi_modesense6_task(c->ctx, c->lun, 1, SCSI_MODESENSE_PC_CURRENT,
				  SCSI_MODEPAGE_RETURN_ALL_PAGES, 0, 255,
				  iscsi_done_cb, iscsi_arm(c));

	if (iscsi_exec(c, &t, "MODE SENSE(6)") < 0 || t->datain.size < 4)
		return;
	if (t->datain.data[2] & 0x80) {
		nd_debug("%s: iSCSI LUN %d is write-protected", c->name,
			 c->lun);
		c->read_only = true;
	}
}

/* What the LUN is: INQUIRY, capacity, limits, write protection. */
static int iscsi_probe(struct iscsi_conn *c)
{
	CLEANUP_TASK struct scsi_task *t = iscsi_inquiry_task(
	    c->ctx, c->lun, 0, 0, 96, iscsi_done_cb, iscsi_arm(c));
	struct scsi_inquiry_standard *inq;
	int r;

	r = iscsi_query(c, &t, "INQUIRY", (void **)&inq);
	if (r < 0)
		return r;
	if (inq->qualifier != SCSI_INQUIRY_PERIPHERAL_QUALIFIER_CONNECTED) {
		errno = ENXIO;
		nd_error(
		    "iSCSI LUN %d is not connected (peripheral qualifier %d)",
		    c->lun, (int)inq->qualifier);
		return -ENXIO;
	}
	switch (inq->device_type) {
	case SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS:
	case SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_OPTICAL_MEMORY:
	case SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_SIMPLIFIED_DIRECT_ACCESS:
		break;
	case SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_MMC:
		c->cdrom = true;
		c->read_only = true;
		break;
	default:
		errno = ENODEV;
		nd_error(
		    "iSCSI LUN %d is neither a disk nor a cdrom (peripheral device type 0x%x)",
		    c->lun, (unsigned)inq->device_type);
		return -ENODEV;
	}
	r = iscsi_capacity(c);
	if (r < 0)
		return r;
	if (c->block_size == 0 || (c->block_size & (c->block_size - 1)) ||
	    c->block_size > (1u << 20)) {
		errno = EPROTO;
		nd_error("iSCSI LUN %d reports a block size of %" PRIu32
			 " bytes",
			 c->lun, c->block_size);
		return -EPROTO;
	}
	if (!c->cdrom) {
		iscsi_vpd(c);
		if (!c->dead)
			iscsi_mode_sense(c);
	}
	if (c->dead) /* the session died under the optional queries */
		return -ENOTCONN;
	nd_debug("%s: iSCSI LUN %d: %s, %" PRIu64 " blocks of %" PRIu32
		 " bytes, %s commands%s%s%s",
		 c->name, c->lun, c->cdrom ? "cdrom" : "disk", c->blocks,
		 c->block_size, c->use16 ? "16-byte" : "10-byte",
		 c->read_only ? ", read-only" : "", c->lbpu ? ", unmap" : "",
		 c->lbpws ? ", write-same-unmap" : "");
	return 0;
}

static uint32_t iscsi_max_request(const struct iscsi_conn *c)
{
	uint64_t bs = c->block_size, lim = ISCSI_DEFAULT_MAX_REQUEST;

	if (c->max_xfer)
		lim = (uint64_t)c->max_xfer * bs;
	if (!c->use16 && lim > 0xffff * bs) /* 16-bit transfer length */
		lim = 0xffff * bs;
	if (lim > ISCSI_MAX_REQUEST_CAP)
		lim = ISCSI_MAX_REQUEST_CAP;
	lim -= lim % bs;
	return lim < bs ? (uint32_t)bs : (uint32_t)lim;
}

static uint32_t iscsi_max_trim(const struct iscsi_conn *c)
{
	uint64_t bs = c->block_size, lim = ISCSI_DEFAULT_MAX_TRIM;

	if (c->lbpu && c->max_unmap && c->max_unmap * bs < lim)
		lim = c->max_unmap * bs;
	if (c->lbpws && c->max_ws && c->max_ws * bs < lim)
		lim = c->max_ws * bs;
	lim -= lim % bs;
	return lim < bs ? (uint32_t)bs : (uint32_t)lim;
}

static void iscsi_close(void *conn);

static int iscsi_open(const struct nd_opts *o, const struct nd_settings *s,
		      void **connp, struct nd_info *info)
{
	/* iscsi-url.c's normalize made transport tcp and gave portal (with
	 * its port), target and lun. */
	const char *portal = nd_opt_get(o, "portal");
	const char *target = nd_opt_get(o, "target");
	const char *digest = nd_opt_get(o, "header-digest");
	const char *iname = nd_opt_get(o, "initiator-name");
	enum iscsi_header_digest hd = ISCSI_HEADER_DIGEST_NONE_CRC32C;
	char defname[256];
	struct iscsi_conn *c;
	uint64_t lun;
	int r = -EINVAL, level;

	*connp = NULL;
	if (digest && iscsi_parse_digest(digest, &hd) < 0) {
		errno = EINVAL;
		nd_error(
		    "invalid header-digest '%s' (crc32c, none, crc32c-none or none-crc32c)",
		    digest);
		return -EINVAL;
	}
	if (nd_opt_uint(o, "lun", 0, 0, 16383, &lun) < 0)
		return -EINVAL;
	if (iname == NULL || iname[0] == '\0') {
		if (o->name && o->name[0])
			snprintf(defname, sizeof defname, "%s:%s",
				 ISCSI_DEFAULT_IQN, o->name);
		else
			snprintf(defname, sizeof defname, "%s",
				 ISCSI_DEFAULT_IQN);
		iname = defname;
	}

	c = calloc(1, sizeof *c);
	if (c == NULL || (c->name = strdup(o->name ? o->name : "")) == NULL) {
		free(c);
		nd_error("out of memory");
		return -ENOMEM;
	}
	c->lun = (int)lun;
	c->read_only = s->read_only;
	c->bound = s->timeout;
	c->ctx = iscsi_create_context(iname);
	if (c->ctx == NULL) {
		errno = ENOMEM;
		nd_error("cannot create an iSCSI context for initiator '%s'",
			 iname);
		r = -ENOMEM;
		goto fail;
	}
	level = getenv("LIBISCSI_DEBUG") ? atoi(getenv("LIBISCSI_DEBUG")) : 2;
	iscsi_set_log_fn(c->ctx, iscsi_log);
	iscsi_set_log_level(c->ctx, nd_debug_enabled ? level : 0);
	/* the core re-establishes sessions; libiscsi's own reconnect would
	 * sleep and retry forever inside iscsi_service */
	iscsi_set_noautoreconnect(c->ctx, 1);
	iscsi_set_reconnect_max_retries(c->ctx, 0);
	iscsi_set_timeout(c->ctx, (int)ceil(c->bound));
	if (iscsi_set_targetname(c->ctx, target) != 0 ||
	    iscsi_set_session_type(c->ctx, ISCSI_SESSION_NORMAL) != 0 ||
	    iscsi_set_header_digest(c->ctx, hd) != 0) {
		r = iscsi_fail(c, ISCSI_ST_LIBRARY, NULL, "setup");
		goto fail;
	}
	if (iscsi_setup_chap(c, o) < 0) {
		r = -errno;
		goto fail;
	}
	/* one attempt, bounded like a command; the core retries opens */
	r = iscsi_login(c, portal, target, nd_mono_s() + c->bound);
	iscsi_forget_secrets(c);
	if (r < 0)
		goto fail;
	nd_debug("%s: iSCSI logged in to %s on %s as %s", c->name, target,
		 portal, iname);
	r = iscsi_probe(c);
	if (r < 0)
		goto fail;
	if (!c->read_only && c->lbpws && c->use16) {
		c->zeroes = calloc(1, c->block_size);
		if (c->zeroes == NULL) {
			errno = ENOMEM;
			nd_error("out of memory");
			r = -ENOMEM;
			goto fail;
		}
	}

	memset(info, 0, sizeof *info);
	info->size = c->blocks * c->block_size;
	info->block_size = c->block_size;
	info->max_request = iscsi_max_request(c);
	/* Readahead of 2 MiB goes out as 8 commands of 256 KiB in flight on
	 * one session: about 10 % faster than 256 KiB (2 x 128 KiB). */
	info->opt_request = 2u << 20;
	info->read_only = c->read_only;
	info->can_flush = !c->read_only;
	info->can_zero = c->zeroes != NULL;
	info->max_trim = info->can_zero ? iscsi_max_trim(c) : 0;
	/* SCSI caches belong to the LU, not to the session */
	info->can_multi_conn = true;
	info->thread_safe = false;
	info->max_connections = 0;
	*connp = c;
	return 0;

fail:
	iscsi_forget_secrets(c);
	iscsi_close(c);
	errno = -r;
	return r;
}

static void iscsi_close(void *conn)
{
	struct iscsi_conn *c = conn;
	int i;

	if (c == NULL)
		return;
	if (c->ctx) {
		if (!c->dead && iscsi_is_logged_in(c->ctx) &&
		    iscsi_logout_async(c->ctx, iscsi_done_cb, iscsi_arm(c)) ==
			0)
			iscsi_pump(c, &c->wait, 1,
				   nd_mono_s() + ISCSI_LOGOUT_BOUND);
		iscsi_destroy_context(c->ctx);
	}
	for (i = 0; i < ISCSI_PIPE; i++)
		if (c->orphans[i])
			scsi_free_scsi_task(c->orphans[i]);
	free(c->zeroes);
	free(c->name);
	free(c);
}

/* ---- I/O ------------------------------------------------------------ */

/* libiscsi sends write data with writev(), which raises SIGPIPE when the
 * target has closed the connection: while we write, SIGPIPE stays pending
 * on this thread and is then dropped, whatever the process does with it. */
static void iscsi_sigpipe_hold(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, old);
}

static void iscsi_sigpipe_release(const sigset_t *old)
{
	const struct timespec zero = {0, 0};
	sigset_t set;

	if (sigismember(old, SIGPIPE))
		return;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	while (sigtimedwait(&set, NULL, &zero) > 0)
		;
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

static int iscsi_check_range(struct iscsi_conn *c, const char *what,
			     uint64_t len, uint64_t off)
{
	if (off % c->block_size == 0 && len % c->block_size == 0)
		return 0;
	errno = EINVAL;
	nd_error("iSCSI %s of %" PRIu64 " bytes at %" PRIu64
		 " is not aligned to the %" PRIu32 "-byte blocks",
		 what, len, off, c->block_size);
	return -EINVAL;
}

/* Queue one READ or WRITE of LEN bytes at OFF with BUF, completing in W. */
static struct scsi_task *iscsi_rw_task(struct iscsi_conn *c, bool write,
				       unsigned char *buf, uint32_t len,
				       uint64_t off, struct iscsi_wait *w)
{
	uint64_t lba = off / c->block_size;
	int bs = (int)c->block_size;
	struct scsi_task *t;

	if (write)
		return c->use16
			   ? iscsi_write16_task(c->ctx, c->lun, lba, buf, len,
						bs, 0, 0, 0, 0, 0,
						iscsi_done_cb, w)
			   : iscsi_write10_task(c->ctx, c->lun, (uint32_t)lba,
						buf, len, bs, 0, 0, 0, 0, 0,
						iscsi_done_cb, w);
	t = c->use16 ? iscsi_read16_task(c->ctx, c->lun, lba, len, bs, 0, 0, 0,
					 0, 0, iscsi_done_cb, w)
		     : iscsi_read10_task(c->ctx, c->lun, (uint32_t)lba, len, bs,
					 0, 0, 0, 0, 0, iscsi_done_cb, w);
	/* straight into the caller's buffer: no copy */
	if (t && scsi_task_add_data_in_buffer(t, (int)len, buf) != 0) {
		iscsi_scsi_cancel_task(c->ctx, t);
		scsi_free_scsi_task(t);
		return NULL;
	}
	return t;
}

/* A read or write as up to ISCSI_PIPE commands in flight at once on this
 * session (the target works on them in parallel), under one deadline. */
static int iscsi_rw(struct iscsi_conn *c, bool write, unsigned char *buf,
		    size_t len, uint64_t off)
{
	struct scsi_task *t[ISCSI_PIPE] = {NULL};
	const char *what = write ? (c->use16 ? "WRITE(16)" : "WRITE(10)")
				 : (c->use16 ? "READ(16)" : "READ(10)");
	size_t bs = c->block_size, piece, done = 0;
	int n = 0, i, r = 0, pr;

	piece = len / ISCSI_PIPE > ISCSI_PIECE ? len / ISCSI_PIPE : ISCSI_PIECE;
	piece = (piece + bs - 1) / bs * bs;
	while (done < len && n < ISCSI_PIPE) {
		size_t l = len - done < piece || n == ISCSI_PIPE - 1
			       ? len - done
			       : piece;

		t[n] = iscsi_rw_task(c, write, buf + done, (uint32_t)l,
				     off + done, iscsi_arm_slot(c, &c->io[n]));
		if (t[n] == NULL) {
			r = iscsi_fail(c, ISCSI_ST_LIBRARY, NULL,
				       "%s of %zu bytes at %" PRIu64, what, l,
				       off + done);
			break;
		}
		done += l;
		n++;
	}
	/* whatever was queued runs to its end, even after a failure */
	pr = iscsi_pump(c, c->io, n, nd_mono_s() + c->bound);
	for (i = 0; i < n; i++) {
		if (pr != 0) {
			iscsi_orphan(c, &t[i], &c->io[i]);
		} else if (r == 0 && c->io[i].status != SCSI_STATUS_GOOD) {
			c->last = &c->io[i];
			r = iscsi_fail(c, c->io[i].status, t[i], "%s", what);
		} else if (r == 0 && !write &&
			   t[i]->residual_status == SCSI_RESIDUAL_UNDERFLOW &&
			   t[i]->residual) {
			errno = EIO;
			nd_error("iSCSI %s at %" PRIu64
				 " came back %zu bytes short",
				 what, off, t[i]->residual);
			r = -EIO;
		}
	}
	if (pr != 0)
		r = iscsi_fail(c, pr, NULL, "%s of %zu bytes at %" PRIu64, what,
			       len, off);
	for (i = 0; i < n; i++)
		if (t[i])
			scsi_free_scsi_task(t[i]);
	return r;
}

static int iscsi_pread(void *conn, void *buf, size_t len, uint64_t off)
{
	struct iscsi_conn *c = conn;
	int r;

	if ((r = iscsi_check_alive(c, "read")) < 0 ||
	    (r = iscsi_check_range(c, "read", len, off)) < 0)
		return r;
	return iscsi_rw(c, false, buf, len, off);
}

static int iscsi_read_only_error(const char *what)
{
	errno = EROFS;
	nd_error("iSCSI %s: the LUN is read-only", what);
	return -EROFS;
}

static int iscsi_flush(void *conn)
{
	struct iscsi_conn *c = conn;
	CLEANUP_TASK struct scsi_task *t = NULL;
	int r;

	if ((r = iscsi_check_alive(c, "flush")) < 0)
		return r;
	if (c->read_only)
		return 0;
	t = iscsi_synchronizecache10_task(c->ctx, c->lun, 0, 0, 0, 0,
					  iscsi_done_cb, iscsi_arm(c));
	return iscsi_exec(c, &t, "SYNCHRONIZE CACHE(10)");
}

static int iscsi_pwrite(void *conn, const void *buf, size_t len, uint64_t off)
{
	struct iscsi_conn *c = conn;
	sigset_t old;
	int r;

	if ((r = iscsi_check_alive(c, "write")) < 0)
		return r;
	if (c->read_only)
		return iscsi_read_only_error("write");
	if ((r = iscsi_check_range(c, "write", len, off)) < 0)
		return r;
	/* libiscsi only reads the data out of BUF */
	iscsi_sigpipe_hold(&old);
	r = iscsi_rw(c, true, (unsigned char *)(uintptr_t)buf, len, off);
	iscsi_sigpipe_release(&old);
	return r;
}

/* WRITE SAME(16) of a zero block, with the UNMAP bit when the caller
 * allows deallocation. The core sends whole blocks only. */
static int iscsi_zero(void *conn, uint64_t len, uint64_t off, unsigned flags)
{
	struct iscsi_conn *c = conn;
	uint64_t bs = c->block_size, end = off + len, lba, last;
	uint64_t chunk = c->max_ws ? c->max_ws : ISCSI_DEFAULT_MAX_TRIM / bs;
	int r, unmap = (flags & ND_MAY_TRIM) ? 1 : 0;
	sigset_t old;

	if ((r = iscsi_check_alive(c, "zero")) < 0)
		return r;
	if (c->read_only)
		return iscsi_read_only_error("zero");
	if (c->zeroes == NULL) {
		errno = ENOTSUP;
		nd_error("iSCSI LUN %d does not support WRITE SAME(16)",
			 c->lun);
		return -ENOTSUP;
	}
	if (chunk > 0xffffffffu)
		chunk = 0xffffffffu;
	r = 0;
	iscsi_sigpipe_hold(&old);
	for (lba = off / bs, last = end / bs; lba < last && r == 0;) {
		uint32_t n =
		    (uint32_t)(last - lba < chunk ? last - lba : chunk);
		CLEANUP_TASK struct scsi_task *t = iscsi_writesame16_task(
		    c->ctx, c->lun, lba, c->zeroes, (uint32_t)bs, n, 0, unmap,
		    0, 0, iscsi_done_cb, iscsi_arm(c));

		r = iscsi_exec(c, &t, "WRITE SAME(16)");
		lba += n;
	}
	iscsi_sigpipe_release(&old);
	return r;
}

static const struct nd_optdesc iscsi_options[] = {
    {"transport", ND_OPT_STRING, "tcp", false, "the only transport"},
    {"portal", ND_OPT_STRING, NULL, false,
     "HOST[:PORT] of the target, IPv6 as [ADDR]:PORT (3260)"},
    {"target", ND_OPT_STRING, NULL, false, "target IQN"},
    {"lun", ND_OPT_UINT, "0", false, "logical unit number"},
    {"user", ND_OPT_STRING, NULL, false, "CHAP user name"},
    {"password", ND_OPT_STRING, NULL, true,
     "CHAP password (prefer password-file)"},
    {"password-file", ND_OPT_FILE, NULL, false,
     "file holding the CHAP password"},
    {"initiator-name", ND_OPT_STRING, NULL, false,
     "initiator IQN (iqn.2008-11.org.linux-kvm:NAME)"},
    {"header-digest", ND_OPT_STRING, NULL, false,
     "crc32c, none, crc32c-none, none-crc32c"},
    {"target-user", ND_OPT_STRING, NULL, false,
     "mutual CHAP: user name the target answers with"},
    {"target-password", ND_OPT_STRING, NULL, true,
     "mutual CHAP: the target's password"},
    {"target-password-file", ND_OPT_FILE, NULL, false,
     "mutual CHAP: file holding it"},
    {NULL, ND_OPT_STRING, NULL, false, NULL},
};

static const struct nd_backend iscsi_backend = {
    .name = "iscsi",
    .drivers = iscsi_drivers,
    .schemes = iscsi_schemes,
    .description = "iSCSI LUNs (disks, cdroms) through libiscsi",
    .options = iscsi_options,
    .open = iscsi_open,
    .close = iscsi_close,
    .pread = iscsi_pread,
    .pwrite = iscsi_pwrite,
    .flush = iscsi_flush,
    .zero = iscsi_zero,
};

ND_BACKEND_REGISTER(iscsi_backend)
