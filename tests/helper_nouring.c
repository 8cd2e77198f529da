/* helper_nouring - run a program with io_uring refused, as a host with
 * kernel.io_uring_disabled=2 or a container's seccomp profile refuses it: io_uring_setup fails
 * with EPERM; every other syscall is untouched.
 *
 *   helper_nouring PROGRAM [ARG]...
 *
 * Exits 125 if the filter cannot be installed here (the caller skips), 127 if PROGRAM cannot
 * be run; otherwise PROGRAM's own status. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: helper_nouring PROGRAM [ARG]...\n");
		return 64;
	}
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		fprintf(stderr, "helper_nouring: cannot install a seccomp filter: %s\n", strerror(errno));
		return 125;
	}
	execv(argv[1], argv + 1);
	fprintf(stderr, "helper_nouring: %s: %s\n", argv[1], strerror(errno));
	return 127;
}
