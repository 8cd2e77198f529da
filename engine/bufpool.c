/* bufpool.c - allocation of a loop's buffer pool (see bufpool.h). */
#include "bufpool.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

int bufpool_init(struct bufpool *p, uint32_t nbufs, uint32_t bufsize)
{
	if (nbufs == 0 || bufsize == 0)
		return -EINVAL;
	size_t bytes = (size_t)nbufs * bufsize;
	/* mmap, not malloc: page-aligned for io_uring, and untouched pages cost no RSS. */
	void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	uint32_t *stack = malloc(sizeof(*stack) * nbufs);
	if (!stack) {
		munmap(mem, bytes);
		return -ENOMEM;
	}
	/* Lowest ids on top, so a lightly loaded server reuses a few warm buffers. */
	for (uint32_t i = 0; i < nbufs; i++)
		stack[i] = nbufs - 1 - i;
	p->mem = mem;
	p->nbufs = nbufs;
	p->bufsize = bufsize;
	p->nfree = nbufs;
	p->free_stack = stack;
	return 0;
}

void bufpool_fini(struct bufpool *p)
{
	if (p->mem)
		munmap(p->mem, (size_t)p->nbufs * p->bufsize);
	free(p->free_stack);
	p->mem = NULL;
	p->free_stack = NULL;
	p->nbufs = p->nfree = 0;
}
