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

#endif
