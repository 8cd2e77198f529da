/* metrics_http_none.c - the build without libmicrohttpd: no metrics port. echod refuses
 * --metrics (exit 69) when metrics_http_available() is false. */
#include "metrics_http.h"

#include <errno.h>
#include <unistd.h>

bool metrics_http_available(void)
{
	return false;
}

int metrics_http_start(struct metrics_http **out, const int *fds, int n,
		       const struct metrics_handler *h)
{
	(void)h;
	*out = NULL;
	for (int i = 0; i < n; i++) /* ours from the call on, as with libmicrohttpd */
		close(fds[i]);
	return -ENOTSUP;
}

void metrics_http_stop(struct metrics_http *m)
{
	(void)m;
}
