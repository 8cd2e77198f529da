/* sdnotify.c - the sd_notify protocol spoken directly (see sdnotify.h).
 *
 * Why not libsystemd's sd_notify(): the protocol is one datagram of text to a Unix socket whose
 * path is in the environment, documented as stable by systemd (sd_notify(3), "The notification
 * protocol"), and these thirty lines keep echod free of a library that would have to be present
 * wherever echod runs, also where systemd is not. Abstract socket names ('@' first) are
 * supported as systemd and the protocol allow.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

void sdnotify_open(struct sdnotify *n)
{
	memset(n, 0, sizeof(*n));
	n->fd = -1;
	const char *path = getenv("NOTIFY_SOCKET");
	const char *usec = getenv("WATCHDOG_USEC");
	const char *wpid = getenv("WATCHDOG_PID");
	/* WATCHDOG_PID, when set, names the process the watchdog is for. */
	if (usec && (!wpid || strtol(wpid, NULL, 10) == (long)getpid())) {
		unsigned long long us = strtoull(usec, NULL, 10);
		n->watchdog_ms = us / 1000;
	}
	size_t len = path ? strlen(path) : 0;
	if (len > 0 && len < sizeof(n->addr.sun_path) && (path[0] == '/' || path[0] == '@')) {
		n->addr.sun_family = AF_UNIX;
		memcpy(n->addr.sun_path, path, len);
		if (path[0] == '@')
			n->addr.sun_path[0] = '\0';
		n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
		n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (n->fd < 0)
			log_msg(LOG_WARN, "notify_failed", "error=\"%s\" msg=\"cannot tell the service "
				"manager anything\"", strerror(errno));
	} else if (path) {
		log_msg(LOG_WARN, "notify_failed", "msg=\"NOTIFY_SOCKET is not an absolute path or "
			"@name; ignored\"");
	}
	if (n->fd < 0)
		n->watchdog_ms = 0;
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

void sdnotify_close(struct sdnotify *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

int sdnotify_send(struct sdnotify *n, const char *fmt, ...)
{
	if (n->fd < 0)
		return 0;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= sizeof(msg))
		return -EMSGSIZE;
	if (sendto(n->fd, msg, (size_t)len, MSG_NOSIGNAL, (struct sockaddr *)&n->addr,
		   n->addr_len) == len)
		return 0;
	int err = errno;
	if (!n->failed_logged) {
		n->failed_logged = true;
		log_msg(LOG_WARN, "notify_failed", "error=\"%s\" msg=\"the service manager did not "
			"take a notification; later failures are not logged\"", strerror(err));
	}
	return -err;
}
