/* The unit tests' one check: a failed condition is printed with its line
 * and counted in failures; main returns failures != 0. */
#ifndef ND_TEST_CHECK_H
#define ND_TEST_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			printf("FAIL line %d: %s: ", __LINE__, #cond);         \
			printf(__VA_ARGS__);                                   \
			printf("\n");                                          \
			failures++;                                            \
		}                                                              \
	} while (0)

#endif
