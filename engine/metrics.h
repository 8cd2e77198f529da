/* metrics.h - the metrics port's content: the Prometheus exposition, /healthz and /readyz
 * (engine-internal, for server.c; tests call the parts directly). */
#ifndef ECHOD_METRICS_H
#define ECHOD_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics_http.h"
#include "worker.h"

/* What the metrics thread looks at: the workers, through workers_collect, and the shared
 * flags. Lives as long as the metrics port. */
struct metrics_view {
	struct worker *ws;
	unsigned n;
	struct shared *sh;
	const char *backend;
	double start_time; /* the process's, in seconds since the epoch */
};

/* The exposition (text format 0.0.4), malloc'd; NULL when out of memory. */
char *metrics_render(const struct metrics_view *v, size_t *len);
bool metrics_healthy(const struct metrics_view *v, char *msg, size_t len);
bool metrics_ready(const struct metrics_view *v, char *msg, size_t len);
/* Serve v on the bound, listening sockets fds[0..n) (metrics_http_start's contract). */
int metrics_start(struct metrics_http **out, struct metrics_view *v, const int *fds, int n);

#endif
