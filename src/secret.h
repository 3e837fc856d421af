/* secret.h: the one notion of "secret" in netdiskfs. Every string that
 * leaves the process (log lines, errors, --print-config, the status file,
 * /proc/PID/cmdline) goes through nd_redact or nd_scrub, which find the
 * same secrets: URL userinfo passwords in any syntax (scheme://u:PW@,
 * iSCSI's u%PW@, a malformed scheme:/u:PW@), the value of every
 * secret-named key in key=value lists and URL queries (generic names:
 * password, secret, key, ...; and each protocol's declared ones: cookie,
 * token, sig, tls-psk, ...), in json: ("password":
 * "PW") and in HTTP header lines (Authorization:, Cookie:). */
#ifndef ND_SECRET_H
#define ND_SECRET_H

#include <stdbool.h>

/* Is KEY (an option, a dotted key, a json key or a query parameter) one
 * whose value is a secret? Its last dotted part is looked at: password,
 * key-secret, target-password, cookie, tls-psk, access_token, sig,
 * X-Amz-Signature are; password-file, host-key-check, user are not. */
bool nd_secret_key(const char *key);

/* Add NAMES (NULL-terminated, static) to the secret keys: a protocol's
 * declared list (struct nd_proto's secrets). NULL is ignored. */
void nd_secret_declare(const char *const *names);

/* A malloc'd copy of S with every secret replaced by "***" (NULL only
 * when out of memory). S may be a URL, a json: text, a key list or a
 * whole message. */
char *nd_redact(const char *s);

/* Overwrite every secret in S with '*' in place, keeping its length
 * (our own argv, so /proc/PID/cmdline shows none). */
void nd_scrub(char *s);

/* Does S hold a secret (would nd_redact change it)? */
bool nd_has_secret(const char *s);

#endif
