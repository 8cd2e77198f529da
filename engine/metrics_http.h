/* metrics_http.h - the metrics port: a small HTTP/1.1 server off the echo data path.
 *
 * GET /metrics (Prometheus text format 0.0.4), /healthz, /readyz; 404 for other paths, 405 for
 * other methods, a 4xx (400, 413, 414 or 431; see metrics_http.c) and close for a malformed or
 * oversized request. It runs in its own threads (libmicrohttpd's), bounded in connections,
 * request size and time, so no scraper can reach the echo workers. Built only with
 * libmicrohttpd; without it, metrics_http_available() is false and echod refuses --metrics
 * (exit 69).
 */
#ifndef ECHOD_METRICS_HTTP_H
#define ECHOD_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define METRICS_HTTP_MAX_CONNS 16     /* concurrent scrape connections, per metrics port */
#define METRICS_HTTP_MAX_REQUEST 8192 /* request line and headers */
#define METRICS_HTTP_TIMEOUT_S 5      /* a request not complete by then is dropped */

/* What the HTTP threads ask the rest of echod. With several addresses each has its own thread,
 * so these may run at once: a scrape that waits on a busy worker holds up no other port. */
struct metrics_handler {
	/* The exposition, into a malloc'd buffer the caller frees; its length in *len. NULL:
	 * out of memory (answered 500). */
	char *(*render)(void *arg, size_t *len);
	/* true: 200 and `msg`; false: 503 and `msg` (one line saying why, newline-terminated). */
	bool (*healthy)(void *arg, char *msg, size_t len);
	bool (*ready)(void *arg, char *msg, size_t len);
	void *arg;
};

struct metrics_http;

bool metrics_http_available(void);
/* Serve on the bound, listening sockets fds[0..n) (the server owns them from now on; closed by
 * metrics_http_stop). Returns 0, or -errno with the fds closed. */
int metrics_http_start(struct metrics_http **out, const int *fds, int n,
		       const struct metrics_handler *h);
/* Stop serving and close the sockets; returns when the HTTP thread is gone. NULL is a no-op. */
void metrics_http_stop(struct metrics_http *m);

#endif
