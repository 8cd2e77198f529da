/* privileges.h - --user: become another user after binding (engine-internal, for server.c). */
#ifndef ECHOD_PRIVILEGES_H
#define ECHOD_PRIVILEGES_H

#include <stddef.h>

#define EXIT_USAGE_PRIV 64 /* no such user, or not root: a usage error */
#define EXIT_FAIL_PRIV 1   /* the switch itself failed */

/* Become `user` (its groups, its gid, its uid; verified), first giving it the socket files
 * in paths[0..n) so that it can remove them at exit. 0, or an exit status with one line in
 * err. Run as that user already: nothing to do. */
int privileges_drop(const char *user, const char *const *paths, int n, char *err, size_t len);

#endif
