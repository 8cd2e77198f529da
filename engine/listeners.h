/* listeners.h - binding --listen addresses (TCP, UDP, Unix) for the workers (engine-internal:
 * server.c). */
#ifndef ECHOD_LISTENERS_H
#define ECHOD_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"

/* A Unix socket file we created: removed at exit if it is still that file. */
struct listener_file {
	char path[CONFIG_UNIX_PATH_MAX + 1];
	dev_t dev;
	ino_t ino;
	bool set;
};

/* Bind `l` and give each of the n workers its fd in fds[0..n). `where` gets the bound address
 * as logged ("127.0.0.1:7", "udp:[::1]:7", "unix:/run/echod.sock"), port 0 resolved; on
 * failure the address as configured. 0 or -errno: -EADDRINUSE busy (a Unix socket with a live
 * server behind it too), -EEXIST a Unix path that is not a socket. */
int listener_open(const struct config_listener *l, int unix_mode, unsigned n, int *fds,
		  char *where, size_t wlen, struct listener_file *file);
void listener_file_remove(struct listener_file *file);
/* A stream listener for n workers: fds[0] = fd, the others dups of it (one accept queue).
 * 0, or -errno with fd and the dups closed. */
int listener_share(int fd, unsigned n, int *fds);

/* A socket passed by a service manager (systemd's LISTEN_FDS, sd_listen_fds(3)). */
struct inherited_listener {
	int fd;
	enum listen_kind kind;
	char where[CONFIG_ADDR_LEN + 16]; /* its address, as --listen would log it */
	char name[64];                    /* from LISTEN_FDNAMES, or "" */
};
/* The sockets passed to this process, checked (a listening TCP or Unix stream socket, or a
 * bound UDP socket) and made non-blocking and close-on-exec; the variables are unset after
 * reading, whatever they said. Returns how many (0: none were passed), or -1 with one line in
 * err naming the fd that echod cannot serve and why. */
int listeners_inherited(struct inherited_listener *out, int max, char *err, size_t errlen);

#endif
