/* sdnotify.h - telling a service manager (systemd) how echod is doing: READY=1, STATUS=...,
 * STOPPING=1, WATCHDOG=1 over $NOTIFY_SOCKET (sd_notify(3)). Main thread only. */
#ifndef ECHOD_SDNOTIFY_H
#define ECHOD_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct sdnotify {
	int fd;                  /* -1: nobody to tell */
	struct sockaddr_un addr;
	socklen_t addr_len;
	uint64_t watchdog_ms;    /* WATCHDOG_USEC for this process, in ms; 0: none */
	bool failed_logged;
};

/* Read NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID, then unset them (a child must never
 * answer for echod). Never fails: without a usable socket, sends are no-ops (logged once). */
void sdnotify_open(struct sdnotify *n);
void sdnotify_close(struct sdnotify *n);
static inline bool sdnotify_enabled(const struct sdnotify *n)
{
	return n->fd >= 0;
}
/* One datagram of "KEY=value\n..." lines. 0 or -errno. */
int sdnotify_send(struct sdnotify *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
