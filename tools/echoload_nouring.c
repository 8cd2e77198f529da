/* echoload_nouring.c - the io_uring engine's place in a build without liburing: the engine is
 * refused before any connection is made, with the same exit status as a kernel that refuses
 * io_uring, so scripts and tests treat both alike. */
#include "echoload.h"

#include <stdio.h>

int uring_probe(char *why, size_t len)
{
	snprintf(why, len, "io_uring is not available here: echoload was built without liburing "
		 "(install liburing-dev and rebuild, or use --engine epoll)");
	return -1;
}

int uring_run(struct worker *w)
{
	/* Unreachable: preflight refuses the engine first. */
	worker_fail(w, EXIT_UNAVAILABLE, "io_uring engine not built");
	return -1;
}
