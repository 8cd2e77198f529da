/* helper_holdconns - open N idle connections to 127.0.0.1:PORT and hold them until SIGTERM.
 *
 *   helper_holdconns PORT N     prints `held K` (K <= N: connections the server kept open)
 *
 * Used by bench/compare to measure a server's memory per idle connection, and by tests. A
 * connection counts as held if a 1-byte echo comes back on it, so a server that accepted and
 * closed it (a refusal) is not counted. */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: helper_holdconns PORT N\n");
		return 64;
	}
	int port = atoi(argv[1]), n = atoi(argv[2]);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 2 };
	int held = 0;
	for (int i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0) {
			fprintf(stderr, "helper_holdconns: socket: %s\n", strerror(errno));
			break;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		char b = 0;
		ssize_t got = -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		    send(fd, "h", 1, MSG_NOSIGNAL) == 1)
			/* SO_RCVTIMEO makes a stop-and-continue end the recv with EINTR */
			while ((got = recv(fd, &b, 1, 0)) < 0 && errno == EINTR)
				;
		if (got == 1 && b == 'h')
			held++;
		else
			close(fd);
	}
	printf("held %d\n", held);
	fflush(stdout);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sig;
	sigwait(&set, &sig);
	return 0;
}
