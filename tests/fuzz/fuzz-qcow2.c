/* fuzz-qcow2: libFuzzer target for the qcow2 layer. The input is the
 * container; its backing file, if it names one, is the same bytes again
 * (so the chain limit is reached too). Opening and reading spots spread
 * over the virtual disk must never crash, leak, hang or read outside the
 * input. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layer.h"
#include "layers/qcow2.h"
#include "log.h"

struct mem {
	struct nd_layer l;
	const uint8_t *data;
	uint8_t *copy; /* writable: the container, up to MAX_GROW */
};

#define MAX_GROW (8u << 20)

static int mem_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	struct mem *m = (struct mem *)l;
	memcpy(buf, (m->copy ? m->copy : m->data) + off, len);
	return 0;
}

static int mem_pwrite(struct nd_layer *l, const void *buf, size_t len,
		      uint64_t off)
{
	memcpy(((struct mem *)l)->copy + off, buf, len);
	return 0;
}

static int mem_grow(struct nd_layer *l, uint64_t size)
{
	if (size > MAX_GROW)
		return -ENOSPC;
	l->size = size;
	return 0;
}

static void mem_rw_close(struct nd_layer *l)
{
	free(((struct mem *)l)->copy);
	free(l);
}

static const struct nd_layer_ops mem_rw_ops = {
	.name = "mem",
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.close = mem_rw_close,
	.grow = mem_grow,
};

static void mem_close(struct nd_layer *l)
{
	free(l);
}

static const struct nd_layer_ops mem_ops = {
	.name = "mem", .pread = mem_pread, .close = mem_close
};

static const uint8_t *input;
static size_t input_len;

static struct nd_layer *mem_open(void)
{
	struct mem *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->l.ops = &mem_ops;
	m->l.size = input_len;
	m->l.ro = true;
	m->data = input;
	return &m->l;
}

static int open_backing(const char *name, const char *format, unsigned depth,
			void *arg, struct nd_layer **out)
{
	struct nd_layer *f = mem_open();
	struct nd_qcow2_opts o = { .open_backing = open_backing,
				   .depth = depth,
				   .l2_cache_bytes = 1 };
	return f ? nd_qcow2_open(f, &o, out) : -ENOMEM;
}

/* The same image opened for writing: a few writes and zeroes must stay
 * inside the container (which may grow to MAX_GROW) and read back. */
static void fuzz_writes(void)
{
	struct mem *m = calloc(1, sizeof *m);
	struct nd_qcow2_opts o = { .writable = true, .no_backing = true,
				   .l2_cache_bytes = 1 };
	struct nd_layer *q;
	static uint8_t w[70000], r[70000];

	if (!m || input_len > MAX_GROW || !(m->copy = calloc(1, MAX_GROW))) {
		if (m)
			free(m->copy);
		free(m);
		return;
	}
	memcpy(m->copy, input, input_len);
	m->l.ops = &mem_rw_ops;
	m->l.size = input_len;
	if (nd_qcow2_open(&m->l, &o, &q) != 0)
		return;
	for (uint64_t i = 0; i < 4 && q->size; i++) {
		uint64_t off = q->size / 5 * i + i * 4095;
		size_t n = q->size - off < sizeof w ? (size_t)(q->size - off)
						    : sizeof w;
		if (off >= q->size)
			break;
		memset(w, (int)i + 1, n);
		if (i == 2 ? nd_layer_zero(q, n, off) == 0
			   : nd_layer_pwrite(q, w, n, off) == 0) {
			if (i == 2)
				memset(w, 0, n);
			if (nd_layer_pread(q, r, n, off) == 0 && memcmp(r, w, n))
				abort(); /* a write that succeeded reads back */
		}
	}
	nd_layer_flush(q); /* drops the references of replaced clusters */
	nd_layer_close(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nd_qcow2_opts o = { .open_backing = open_backing,
				   .l2_cache_bytes = 1 };
	struct nd_layer *f, *q;
	static uint8_t buf[1 << 17];

	input = data;
	input_len = size;
	fuzz_writes();
	if (!(f = mem_open()) || nd_qcow2_open(f, &o, &q) != 0)
		return 0;
	for (uint64_t i = 0; i < 32; i++) {
		uint64_t off = q->size / 32 * i;
		size_t n = q->size - off < sizeof buf ? (size_t)(q->size - off)
						      : sizeof buf;
		if (i & 1) {
			nd_layer_pread(q, buf, n, off);
			continue;
		}
		/* By reference: every piece inside the scratch buffer (the
		 * container here has no cache to point into). */
		struct nd_layer_ref ref;
		nd_layer_ref_init(&ref);
		if (nd_layer_read_ref(q, n, off, buf, &ref) == 0)
			for (size_t k = 0; k < ref.n; k++)
				if ((uint8_t *)ref.iov[k].iov_base < buf ||
				    (uint8_t *)ref.iov[k].iov_base +
					    ref.iov[k].iov_len > buf + n)
					abort();
		nd_layer_ref_release(&ref);
	}
	nd_layer_close(q);
	return 0;
}
