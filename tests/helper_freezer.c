/* helper_freezer.c - run a program, stopping and continuing it (and every process it starts in
 * its process group) every few milliseconds: `make test-freeze` runs the suite under it.
 *
 *   helper_freezer PERIOD_US PROGRAM [ARG]...
 *
 * A stopped and continued process sees some of its waits end in EINTR whatever its handlers
 * (signal(7): a recv or send on a socket with a timeout, connect, epoll_wait, io_uring_enter,
 * sigtimedwait), as under a frozen cgroup, `docker pause` or a debugger, and as CI hosts do now
 * and then. Every PERIOD_US on average (uniformly from half to one and a half of it) the group
 * gets SIGSTOP, then SIGCONT 300 us later, until PROGRAM exits; its exit status is this one's
 * (128 + N for signal N), after one line on stderr saying how many freezes it took.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	long period = argc > 2 ? strtol(argv[1], NULL, 10) : 0;
	if (period < 1000) {
		fprintf(stderr, "usage: helper_freezer PERIOD_US PROGRAM [ARG]... (PERIOD_US >= 1000)\n");
		return 2;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("helper_freezer: fork");
		return 1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		execvp(argv[2], argv + 2);
		fprintf(stderr, "helper_freezer: %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid); /* both sides: whichever runs first, the group exists before a kill */
	srand((unsigned)pid);
	long freezes = 0;
	int st = 0;
	for (;;) {
		nap_us(period / 2 + rand() % period);
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR))
			break;
		if (kill(-pid, SIGSTOP) < 0)
			continue;
		nap_us(300);
		kill(-pid, SIGCONT);
		freezes++;
	}
	int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	fprintf(stderr, "helper_freezer: %ld freezes; %s exited %d\n", freezes, argv[2], rc);
	return rc;
}
