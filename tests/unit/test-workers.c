/* test-workers: an owner whose jobs stall (each takes a second) cannot
 * delay another owner's job: it starts at once on the threads left; the
 * jobs of one owner never hold more than all threads but two; every job
 * runs before stop returns. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "workers.h"
#include "util/clock.h"

static atomic_int running_a, max_a, done;
static double b_started;

static void slow_job(void *arg)
{
	int r = atomic_fetch_add(&running_a, 1) + 1;
	int m = atomic_load(&max_a);
	while (r > m && !atomic_compare_exchange_weak(&max_a, &m, r))
		;
	usleep(1000000);
	atomic_fetch_sub(&running_a, 1);
	atomic_fetch_add(&done, 1);
}

static void fast_job(void *arg)
{
	b_started = nd_mono_s();
	atomic_fetch_add(&done, 1);
}

int main(void)
{
	int a, b, failures = 0;
	if (nd_workers_start(8) != 0)
		return 1;
	double t0 = nd_mono_s();
	for (int i = 0; i < 16; i++)
		nd_workers_submit(&a, slow_job, NULL);
	usleep(100000);
	nd_workers_submit(&b, fast_job, NULL);
	usleep(200000);
	if (b_started == 0 || b_started - t0 > 0.3) {
		printf("FAIL: the other owner's job waited %.2f s behind a "
		       "stalled owner\n", b_started ? b_started - t0 : -1);
		failures++;
	}
	nd_workers_stop();
	if (atomic_load(&done) != 17) {
		printf("FAIL: %d of 17 jobs ran before stop returned\n",
		       atomic_load(&done));
		failures++;
	}
	if (atomic_load(&max_a) > 6) {
		printf("FAIL: one owner held %d of 8 threads\n",
		       atomic_load(&max_a));
		failures++;
	}
	printf("test-workers: %s\n", failures ? "FAILED" : "ok");
	return failures != 0;
}
