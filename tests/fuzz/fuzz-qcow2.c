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
};

static int mem_pread(struct nd_layer *l, void *buf, size_t len, uint64_t off)
{
	memcpy(buf, ((struct mem *)l)->data + off, len);
	return 0;
}

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nd_qcow2_opts o = { .open_backing = open_backing,
				   .l2_cache_bytes = 1 };
	struct nd_layer *f, *q;
	static uint8_t buf[1 << 17];

	input = data;
	input_len = size;
	if (!(f = mem_open()) || nd_qcow2_open(f, &o, &q) != 0)
		return 0;
	for (uint64_t i = 0; i < 32; i++) {
		uint64_t off = q->size / 32 * i;
		size_t n = q->size - off < sizeof buf ? (size_t)(q->size - off)
						      : sizeof buf;
		nd_layer_pread(q, buf, n, off);
	}
	nd_layer_close(q);
	return 0;
}
