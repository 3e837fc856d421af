/* test-secret: nd_redact masks every form of secret the parsers read
 * (URL userinfo in any syntax and quoting, secret-named keys in key lists,
 * URL queries and json:, header lines) and leaves the rest of a message
 * as it was; nd_scrub keeps the length; nd_secret_key's names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "secret.h"

static int failures;

static void expect(const char *in, const char *want)
{
	char *got = nd_redact(in);
	if (!got || strcmp(got, want) != 0) {
		printf("FAIL: %s\n  want: %s\n  got:  %s\n", in, want,
		       got ? got : "(null)");
		failures++;
	}
	free(got);
}

static void expect_key(const char *key, bool secret)
{
	if (nd_secret_key(key) != secret) {
		printf("FAIL: nd_secret_key(%s) is not %d\n", key, secret);
		failures++;
	}
}

int main(void)
{
	/* URL userinfo, any syntax and quoting. */
	expect("http://u:pw@h/x", "http://u:***@h/x");
	expect("iscsi://user%pa'ss @h/iqn.x:t/1",
	       "iscsi://user%***@h/iqn.x:t/1");
	expect("'ssh:/user:pw@host/x' is not a device URL",
	       "'ssh:/user:***@host/x' is not a device URL");
	expect("json:{\"url\":\"http:\\/\\/u:pw@h\\/x\"}",
	       "json:{\"url\":\"http:\\/\\/u:***@h\\/x\"}");
	expect("proxy=http://pu:pw@127.0.0.1:3128",
	       "proxy=http://pu:***@127.0.0.1:3128");
	/* Queries, key lists, json. */
	expect("http://h/x?a=1&token=T&sig=S;b=2#f",
	       "http://h/x?a=1&token=***&sig=***;b=2#f");
	expect("iscsi://h/iqn.x:t/1?user=u&password=P",
	       "iscsi://h/iqn.x:t/1?user=u&password=***");
	expect("?pass%77ord=X", "?pass%77ord=***");
	expect("driver=http,password=a,,b,ro=on",
	       "driver=http,password=***,ro=on");
	expect("key-secret=K,tls-psk=P,host-key-check=sha256:ab",
	       "key-secret=***,tls-psk=***,host-key-check=sha256:ab");
	expect(
	    "json:{\"file\":{\"password\": \"a\\\"b\",\"cookie\":\"c=1;d=2\",\"n\":1}}",
	    "json:{\"file\":{\"password\": \"***\",\"cookie\":\"***\",\"n\":1}}");
	expect("json:{\"pass\\u0077ord\":12345}",
	       "json:{\"pass\\u0077ord\":***}");
	expect("curl > Authorization: Basic YWxpY2U6cA==",
	       "curl > Authorization: ***");
	/* Left alone. */
	expect("nbds://alice@h/e", "nbds://alice@h/e");
	expect("t.tab:3: entry 'e': ssh alice@host: access denied",
	       "t.tab:3: entry 'e': ssh alice@host: access denied");
	expect("password-file=/etc/pw,cookie-file=/c",
	       "password-file=/etc/pw,cookie-file=/c");
	expect("nbd+unix:///?socket=/run/nbd.sock",
	       "nbd+unix:///?socket=/run/nbd.sock");

	char argv1[] = "json:{\"password\":\"abc\"}";
	nd_scrub(argv1);
	if (strcmp(argv1, "json:{\"password\":\"***\"}") != 0) {
		printf("FAIL: nd_scrub gave %s\n", argv1);
		failures++;
	}
	expect_key("password", true);
	expect_key("file.target-password", true);
	expect_key("X-Amz-Signature", true);
	expect_key("access_token", true);
	expect_key("pass", true);
	expect_key("password-file", false);
	expect_key("host-key-check", false);
	expect_key("user", false);
	expect_key("tls-psk-file", false);
	printf("%s\n", failures ? "test-secret: FAILED" : "test-secret: ok");
	return failures != 0;
}
