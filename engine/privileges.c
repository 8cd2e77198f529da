/* privileges.c - --user: giving up root once the privileged part (binding) is done.
 *
 * The order is the one that works: supplementary groups first (setgroups needs root), then
 * the group (setgid needs root too), then the user; each checked, and then a setuid(0) that
 * must fail proves root cannot come back. glibc applies set*id to every thread of the process;
 * this runs before any worker starts anyway.
 */
#include "privileges.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int privileges_drop(const char *user, const char *const *paths, int n, char *err, size_t len)
{
	struct passwd pw, *found = NULL;
	char buf[4096];
	int rc = getpwnam_r(user, &pw, buf, sizeof(buf), &found);
	if (!found) {
		snprintf(err, len, "--user: no user '%s' here%s%s", user, rc ? ": " : "",
			 rc ? strerror(rc) : "");
		return EXIT_USAGE_PRIV;
	}
	if (geteuid() != 0) {
		if (pw.pw_uid == geteuid())
			return 0; /* already that user: nothing to give up */
		snprintf(err, len, "--user %s: only root can become another user (echod runs as "
			 "uid %u); start it as root, or without --user", user, (unsigned)geteuid());
		return EXIT_USAGE_PRIV;
	}
	for (int i = 0; i < n; i++) {
		if (lchown(paths[i], pw.pw_uid, pw.pw_gid) < 0) {
			snprintf(err, len, "--user %s: cannot give it %s: %s", user, paths[i],
				 strerror(errno));
			return EXIT_FAIL_PRIV;
		}
	}
	if (initgroups(user, pw.pw_gid) < 0 || setgid(pw.pw_gid) < 0 || setuid(pw.pw_uid) < 0) {
		snprintf(err, len, "--user %s: cannot switch to it: %s", user, strerror(errno));
		return EXIT_FAIL_PRIV;
	}
	if (getuid() != pw.pw_uid || geteuid() != pw.pw_uid || getgid() != pw.pw_gid ||
	    getegid() != pw.pw_gid || setuid(0) == 0) {
		snprintf(err, len, "--user %s: the switch did not hold (root could be regained)",
			 user);
		return EXIT_FAIL_PRIV;
	}
	log_msg(LOG_INFO, "user", "name=%s uid=%u gid=%u", user, (unsigned)pw.pw_uid,
		(unsigned)pw.pw_gid);
	return 0;
}
