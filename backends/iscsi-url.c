/* iscsi-url.c: iSCSI's URL grammar, library-free (see struct nd_proto):
 * iscsi://[user[%password]@]host[:port]/target-iqn/lun[?k=v] and the
 * portal/target/lun keys of json: and dotted forms. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "../src/url.h"
#include "../src/util/cleanup.h"

/* iscsi://[user[%password]@]host[:port]/target-iqn/lun: the userinfo is
 * split by hand because QEMU's '%' separator is not percent-encoding. */
static int iscsi_parse(const char *scheme, const char *url,
		       struct nd_opts *o, const char *origin)
{
	const char *auth = url + strlen(scheme) + 3;
	const char *slash = auth + strcspn(auth, "/?#");
	const char *at = NULL;
	CLEANUP_FREE char *rebuilt = NULL;
	CLEANUP_FREE char *target = NULL;
	CLEANUP_FREE char *portal = NULL;
	struct nd_url p;
	int ret = -1;

	for (const char *q = auth; q < slash; q++)
		if (*q == '@')
			at = q;
	if (at) {
		const char *pct = memchr(auth, '%', at - auth);
		const char *uend = pct ? pct : at;
		CLEANUP_FREE char *user = strndup(auth, uend - auth);
		if (!user || nd_opt_add(o, "user", user, origin) == -1)
			return -1;
		if (pct) {
			char *pw = strndup(pct + 1, at - pct - 1);
			int r = pw ? nd_opt_add(o, "password", pw, origin) : -1;
			nd_secret_free(pw);
			if (r == -1)
				return -1;
		}
		if (asprintf(&rebuilt, "iscsi://%s", at + 1) < 0)
			return -1;
		url = rebuilt;
	}
	if (nd_url_split(url, &p) == -1)
		return -1;
	if (!p.host) {
		nd_url_error("%s: missing target address", "iscsi://");
		goto out;
	}
	const char *path = p.path ? p.path : "";
	while (*path == '/')
		path++;
	const char *lun = strrchr(path, '/');
	if (!lun || lun == path || !lun[1] ||
	    strspn(lun + 1, "0123456789") != strlen(lun + 1)) {
		nd_url_error("iscsi://%s: expected iscsi://HOST[:PORT]/TARGET-IQN/LUN",
		    p.host);
		goto out;
	}
	target = strndup(path, lun - path);
	if (!target || asprintf(&portal, "%s:%s", p.host, p.port ? p.port : "3260") < 0)
		goto out;
	if (nd_opt_add(o, "driver", "iscsi", origin) == -1 ||
	    nd_opt_add(o, "transport", "tcp", origin) == -1 ||
	    nd_opt_add(o, "portal", portal, origin) == -1 ||
	    nd_opt_add(o, "target", target, origin) == -1 ||
	    nd_opt_add(o, "lun", lun + 1, origin) == -1)
		goto out;
	ret = nd_url_add_query(p.query, o, origin, NULL);
out:
	nd_url_free(&p);
	return ret;
}

static int iscsi_normalize(struct nd_opts *o)
{
	if (!nd_opt_get(o, "portal") || !nd_opt_get(o, "target") ||
	    !nd_opt_get(o, "lun"))
		return nd_url_error("iscsi: %s", "portal=, target= and lun= are required");
	nd_opts_default(o, "transport", "tcp");
	if (strcmp(nd_opt_get(o, "transport"), "tcp") != 0)
		return nd_url_error("iscsi: transport=%s (only tcp)",
			   nd_opt_get(o, "transport"));
	const struct nd_opt *p = nd_opt_find(o, "portal");
	const char *close = strrchr(p->val, ']');
	const char *colon = strrchr(p->val, ':');
	bool has_port = colon && (!close || colon > close) &&
			(p->val[0] == '[' || strchr(p->val, ':') == colon);
	if (!has_port) {
		CLEANUP_FREE char *v = NULL;
		CLEANUP_FREE char *org = strdup(p->origin);
		bool v6 = strchr(p->val, ':') && p->val[0] != '[';
		if (asprintf(&v, v6 ? "[%s]:3260" : "%s:3260", p->val) < 0 ||
		    !org || nd_opt_set(o, "portal", v, org) == -1)
			return -1;
	}
	return 0;
}

static const char *const iscsi_names[] = { "iscsi", NULL };

static const char *const iscsi_secrets[] = { "password", "target-password",
					     NULL };

const struct nd_proto iscsi_proto = {
	.secrets = iscsi_secrets,
	.name = "iscsi",
	.drivers = iscsi_names,
	.schemes = iscsi_names,
	.parse = iscsi_parse,
	.normalize = iscsi_normalize,
};
ND_PROTO_REGISTER(iscsi_proto)
