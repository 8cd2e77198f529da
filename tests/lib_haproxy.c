/* lib_haproxy.c - see lib_haproxy.h. */
#include "lib_haproxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib_proc.h"

const char *haproxy_path(void)
{
	static const char *const where[] = { "/usr/sbin/haproxy", "/usr/bin/haproxy",
					     "/usr/local/sbin/haproxy" };
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++)
		if (access(where[i], X_OK) == 0)
			return where[i];
	return NULL;
}

int haproxy_server(const char *sock, const char *backend, const char *server, char *status,
		   size_t len)
{
	status[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect_retry(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || send_all(fd, "show stat\n", 10)) {
		close(fd);
		return -1;
	}
	size_t cap = 1 << 16;
	char *csv = malloc(cap);
	size_t n = recv_to_eof(fd, csv, cap - 1);
	close(fd);
	csv[n] = '\0';
	/* pxname,svname,qcur,qmax,scur,...: scur is the 5th field, status the 18th */
	char want[96];
	snprintf(want, sizeof(want), "\n%s,%s,", backend, server);
	const char *f = strstr(csv, want);
	int scur = -1;
	for (int field = 1; f && field <= 17; field++) {
		f = strchr(f + 1, ',');
		if (f && field == 4)
			scur = atoi(f + 1);
	}
	if (f)
		snprintf(status, len, "%.*s", (int)strcspn(f + 1, ",\n"), f + 1);
	else
		scur = -1;
	free(csv);
	return scur;
}
