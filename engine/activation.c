/* activation.c - sockets passed by a service manager instead of bound by echod (socket
 * activation: systemd's LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; sd_listen_fds(3)).
 *
 * The passed fds start at 3. They are only ours if LISTEN_PID is our pid (a variable left in
 * the environment by a parent is not an invitation). Each must be a socket echod can serve:
 * a listening stream socket (TCP or Unix: Accept=no in the .socket unit; with Accept=yes the
 * manager would pass one connected socket per process, which is not a server's job here) or a
 * UDP socket. Anything else is refused by fd and name, so a wrong unit is one clear line, not
 * a silent half-served port. The variables are unset so a child never takes them for its own.
 */
#include "listeners.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define SD_LISTEN_FDS_START 3

static int sockopt_int(int fd, int opt, int *v)
{
	socklen_t len = sizeof(*v);
	return getsockopt(fd, SOL_SOCKET, opt, v, &len) < 0 ? -errno : 0;
}

static const char *family_name(int family)
{
	return family == AF_INET ? "IPv4" : family == AF_INET6 ? "IPv6" : family == AF_UNIX ? "Unix"
										       : "other";
}

/* Which kind of listener fd is, or -1 with why in err. */
static int classify(int fd, const char *name, char *err, size_t len)
{
	/* "passed fd 3" or "passed fd 3 (echo)": how every line below names it. */
	char what[96];
	snprintf(what, sizeof(what), "passed fd %d%s%s%s", fd, *name ? " (" : "", name,
		 *name ? ")" : "");
	int type, domain, listening;
	int rc = sockopt_int(fd, SO_TYPE, &type);
	if (rc == -ENOTSOCK || rc == -EBADF) {
		snprintf(err, len, "%s is not a socket; a .socket unit for echod lists ListenStream= "
			 "or ListenDatagram= addresses", what);
		return -1;
	}
	if (rc < 0 || (rc = sockopt_int(fd, SO_DOMAIN, &domain)) < 0 ||
	    (rc = sockopt_int(fd, SO_ACCEPTCONN, &listening)) < 0) {
		snprintf(err, len, "%s: cannot tell what it is: %s", what, strerror(-rc));
		return -1;
	}
	bool inet = domain == AF_INET || domain == AF_INET6;
	if (type == SOCK_STREAM && (inet || domain == AF_UNIX)) {
		if (listening)
			return inet ? LISTEN_TCP : LISTEN_UNIX;
		snprintf(err, len, "%s is a connected %s stream, not a listener: echod wants "
			 "Accept=no in its .socket unit", what, family_name(domain));
		return -1;
	}
	if (type == SOCK_DGRAM && inet)
		return LISTEN_UDP;
	snprintf(err, len, "%s is a %s %s socket; echod serves TCP and Unix stream listeners and "
		 "UDP sockets", what, family_name(domain),
		 type == SOCK_DGRAM ? "datagram" : type == SOCK_SEQPACKET ? "seqpacket" : "stream");
	return -1;
}

/* The i-th name of LISTEN_FDNAMES ("a:b:c"), or "". */
static void fd_name(const char *names, int i, char *out, size_t len)
{
	out[0] = '\0';
	for (const char *p = names; p; i--) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (i == 0) {
			/* Logged in quotes: keep it printable. */
			size_t k = 0;
			for (size_t j = 0; j < n && k + 1 < len; j++)
				out[k++] = p[j] > 0x20 && p[j] < 0x7f && p[j] != '"' ? p[j] : '_';
			out[k] = '\0';
			return;
		}
		p = end ? end + 1 : NULL;
	}
}

int listeners_inherited(struct inherited_listener *out, int max, char *err, size_t errlen)
{
	const char *spid = getenv("LISTEN_PID"), *sfds = getenv("LISTEN_FDS");
	char names[1024] = "";
	if (getenv("LISTEN_FDNAMES"))
		snprintf(names, sizeof(names), "%s", getenv("LISTEN_FDNAMES"));
	char *end;
	long pid = spid ? strtol(spid, &end, 10) : 0;
	bool ours = spid && *end == '\0' && pid == (long)getpid();
	long n = ours && sfds ? strtol(sfds, &end, 10) : 0;
	if (ours && sfds && (*end != '\0' || n < 0))
		n = -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (n < 0 || n > max) {
		snprintf(err, errlen, "LISTEN_FDS=%s: %s (at most %d sockets)", sfds,
			 n < 0 ? "not a count" : "too many", max);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		struct inherited_listener *l = &out[i];
		l->fd = SD_LISTEN_FDS_START + i;
		fd_name(names, i, l->name, sizeof(l->name));
		int kind = classify(l->fd, l->name, err, errlen);
		if (kind < 0)
			return -1;
		l->kind = (enum listen_kind)kind;
		/* The reactor wants non-blocking fds; the manager passes them blocking. */
		int fl = fcntl(l->fd, F_GETFL);
		if (fl < 0 || fcntl(l->fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
		    fcntl(l->fd, F_SETFD, FD_CLOEXEC) < 0) {
			snprintf(err, errlen, "passed fd %d: fcntl: %s", l->fd, strerror(errno));
			return -1;
		}
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char addr[CONFIG_ADDR_LEN];
		if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0)
			snprintf(addr, sizeof(addr), "fd:%d", l->fd);
		else
			log_format_addr((struct sockaddr *)&ss, len, addr, sizeof(addr));
		snprintf(l->where, sizeof(l->where), "%s%s", l->kind == LISTEN_UDP ? "udp:" : "",
			 addr);
	}
	return (int)n;
}
