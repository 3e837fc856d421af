/* fuzz-parse: libFuzzer target for the mount-table and URL parsers. The
 * input is parsed as a whole table and, NUL-terminated, as one URL field
 * with the same option list; neither may crash, leak or hang. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "opts.h"
#include "table.h"
#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nd_table t;
	FILE *errs = fopen("/dev/null", "w");
	char *s;

	nd_table_parse((const char *)data, size, "fuzz.tab", false, NULL, NULL,
		       &t, errs);
	for (size_t i = 0; i < t.n; i++) {
		char *f = nd_opts_format(&t.e[i].opts, ",");
		free(f);
	}
	nd_table_free(&t);
	fclose(errs);

	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	struct nd_opts o;
	nd_opts_init(&o, "fuzz");
	if (nd_url_parse(s, &o, "fuzz") == 0) {
		nd_opts_normalize(&o);
		char *r = nd_redact(s);
		free(r);
	}
	nd_opts_free(&o);
	char *b = nd_url_basename(s);
	free(b);
	free(s);
	return 0;
}
