/* bufpool.h - a loop's fixed-size buffers: one mapping of nbufs x bufsize bytes.
 *
 * Memory is bounded by the product and pages are touched only as buffers are used. Readiness
 * backends take and give buffers through the free stack; the io_uring backend hands the same
 * memory to the kernel as a provided-buffer ring and keeps its own free accounting, so the
 * stack is unused there. Buffer id (bid) = index.
 */
#ifndef ECHOD_BUFPOOL_H
#define ECHOD_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	char *base;
	uint32_t len;
	uint32_t bid; /* pool index, meaningful with OPF_BUFFER */
};

struct bufpool {
	char *mem;
	uint32_t nbufs, bufsize;
	uint32_t nfree;
	uint32_t *free_stack;
};

int bufpool_init(struct bufpool *p, uint32_t nbufs, uint32_t bufsize);
void bufpool_fini(struct bufpool *p);

static inline char *bufpool_addr(const struct bufpool *p, uint32_t bid)
{
	return p->mem + (size_t)bid * p->bufsize;
}

/* Returns a buffer id, or -1 when the pool is dry. */
static inline int64_t bufpool_get(struct bufpool *p)
{
	if (p->nfree == 0)
		return -1;
	return p->free_stack[--p->nfree];
}

static inline void bufpool_put(struct bufpool *p, uint32_t bid)
{
	p->free_stack[p->nfree++] = bid;
}

#endif
