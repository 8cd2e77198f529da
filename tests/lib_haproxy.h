/* lib_haproxy.h - what the suites that run the real HAProxy share: finding it, and reading a
 * server's state from its stats socket (the runtime API's `show stat`). */
#ifndef ECHOD_TEST_LIB_HAPROXY_H
#define ECHOD_TEST_LIB_HAPROXY_H

#include <stddef.h>

/* Debian's haproxy, or NULL when it is not installed. */
const char *haproxy_path(void);
/* Server `server` of backend `backend`, from the stats socket at `sock`: its status ("UP",
 * "DOWN", "UP 1/2" (UP, one check failed), ...) into status, and its open sessions (scur) as
 * the result; -1 (status "") when the socket does not answer or has no such server. */
int haproxy_server(const char *sock, const char *backend, const char *server, char *status,
		   size_t len);

#endif
