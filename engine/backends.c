/* backends.c - the backend table, best first: "auto" takes the first whose init works.
 * Adding a backend is one line here and one file in backends/; the tests iterate this table. */
#include "reactor.h"

extern const struct backend backend_uring, backend_uring_poll, backend_epoll, backend_poll,
	backend_select;

const struct backend *const backend_table[] = {
#ifdef ECHOD_HAVE_URING
	&backend_uring,
#endif
	&backend_epoll,
#ifdef ECHOD_HAVE_URING
	&backend_uring_poll,
#endif
	&backend_poll,
	&backend_select,
};

const size_t backend_count = sizeof(backend_table) / sizeof(backend_table[0]);
