/* readahead.c: a stream detector (grow the window while sequential, drop it
 * on a random read). The threads that fetch ahead are in workers.c. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "readahead.h"

void nd_ra_init(struct nd_ra *ra, uint64_t init, uint64_t max)
{
	ra->init = init;
	ra->max = max < init ? init : max;
	nd_ra_reset(ra);
}

void nd_ra_scheduled(struct nd_ra *ra, uint64_t end)
{
	struct nd_ra_stream *s = &ra->s[ra->cur];
	if (end > s->frontier)
		s->frontier = end;
}

void nd_ra_reset(struct nd_ra *ra)
{
	memset(ra->s, 0, sizeof ra->s);
	ra->tick = 0;
	ra->cur = 0;
}

bool nd_ra_random(const struct nd_ra *ra)
{
	return ra->init && ra->s[ra->cur].window == 0;
}

uint64_t nd_ra_window(const struct nd_ra *ra)
{
	uint64_t w = 0;
	for (unsigned i = 0; i < ND_RA_STREAMS; i++)
		if (ra->s[i].window > w)
			w = ra->s[i].window;
	return w;
}

/* Is a read of [off, off+len) the continuation of stream S? The kernel
 * sends several reads of one stream at once, so they arrive a little out
 * of order: within a few request sizes of the expected offset counts.
 * (Not within the window: random reads near a big stream would then keep
 * its readahead running and evict what they are reading.) */
static bool continues(const struct nd_ra_stream *s, uint64_t off,
		      uint64_t len)
{
	uint64_t tol = len * 4 > (64u << 10) ? len * 4 : (64u << 10);
	if (s->seq == 0)
		return false;
	return off + len + tol > s->next && off < s->next + tol;
}

/* What a stream fetches ahead is lost when it ends: the window doubles
 * per read but stays within an eighth of what the stream has read, or
 * RA_REQS of its requests (at least readahead=). A file system's small
 * reads (a guest booting, find | xargs cat) end streams often and waste
 * at most an eighth; a copy in big requests (dd, qemu-img) gets its
 * large window at once, to hide the server's latency. */
#define RA_SHARE 8
#define RA_REQS 16

static uint64_t grown(const struct nd_ra *ra, const struct nd_ra_stream *s,
		      uint64_t len)
{
	uint64_t w = s->window ? s->window * 2 : ra->init;
	uint64_t share = (s->next - s->start) / RA_SHARE;
	if (share < len * RA_REQS)
		share = len * RA_REQS;
	if (w > share)
		w = share > ra->init ? share : ra->init;
	return w > ra->max ? ra->max : w;
}

bool nd_ra_update(struct nd_ra *ra, uint64_t off, uint64_t len,
		  uint64_t size, uint64_t *start, uint64_t *end)
{
	struct nd_ra_stream *s = NULL;
	unsigned i, oldest = 0;

	if (ra->init == 0)
		return false;
	ra->tick++;
	for (i = 0; i < ND_RA_STREAMS; i++) {
		if (continues(&ra->s[i], off, len)) {
			s = &ra->s[i];
			break;
		}
		if (ra->s[i].used < ra->s[oldest].used)
			oldest = i;
	}
	if (s) {
		s->seq++;
		if (off + len > s->next)
			s->next = off + len;
		/* Two continuations in a row: random reads land near a
		 * stream's end now and then, rarely twice running. */
		if (s->seq >= 3)
			s->window = grown(ra, s, len);
	} else {
		/* A new stream, or a random read: it replaces the stream
		 * read least recently. */
		i = oldest;
		s = &ra->s[i];
		s->seq = 1;
		s->window = 0;
		s->frontier = 0;
		s->start = off;
		s->next = off + len;
	}
	s->used = ra->tick;
	ra->cur = i;
	if (!s->window)
		return false;
	uint64_t want = s->next + s->window;
	uint64_t from = s->frontier > s->next ? s->frontier : s->next;
	if (want > size)
		want = size;
	/* Fetch in batches of at least a quarter window. */
	if (want <= from || (want - from < s->window / 4 && want < size))
		return false;
	*start = from;
	*end = want;
	return true;
}
