/* helper_stuckclients - open N connections to 127.0.0.1:PORT that send and never read, and
 * hold them until SIGTERM: the client a server must survive without starving the others.
 *
 *   helper_stuckclients PORT N [MAX_BYTES]
 *
 * Each connection has a small receive buffer (so the server's echoes back up at once) and
 * pushes bytes without blocking until the kernel takes no more, at most MAX_BYTES each
 * (default 1 MiB). Passes over all connections repeat until a whole pass moves nothing for
 * 300 ms or 10 s have gone by; then it prints `stuck N BYTES` (connections, bytes sent in all)
 * and waits. A connection the server refused or closed is counted out and reported as
 * `closed K` on stderr. */
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SETTLE_MS 300
#define GIVE_UP_MS 10000

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: helper_stuckclients PORT N [MAX_BYTES]\n");
		return 64;
	}
	int port = atoi(argv[1]), n = atoi(argv[2]);
	long long max_bytes = argc == 4 ? atoll(argv[3]) : 1 << 20;
	if (port <= 0 || n <= 0 || max_bytes <= 0) {
		fprintf(stderr, "helper_stuckclients: bad arguments\n");
		return 64;
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	int *fds = calloc((size_t)n, sizeof(*fds));
	long long *sent = calloc((size_t)n, sizeof(*sent));
	if (!fds || !sent) {
		fprintf(stderr, "helper_stuckclients: out of memory\n");
		return 1;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (int i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		int small = 4096;
		if (fds[i] < 0 ||
		    setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) < 0 ||
		    connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			fprintf(stderr, "helper_stuckclients: connection %d: %s\n", i, strerror(errno));
			return 1;
		}
	}
	static char chunk[65536];
	memset(chunk, 's', sizeof(chunk));
	uint64_t start = mono_ms(), quiet_since = start;
	long long total = 0;
	int closed = 0;
	while (mono_ms() - quiet_since < SETTLE_MS && mono_ms() - start < GIVE_UP_MS) {
		bool moved = false;
		for (int i = 0; i < n; i++) {
			if (fds[i] < 0 || sent[i] >= max_bytes)
				continue;
			long long want = max_bytes - sent[i];
			ssize_t k = send(fds[i], chunk, want < (long long)sizeof(chunk) ? (size_t)want
										 : sizeof(chunk),
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (k > 0) {
				sent[i] += k;
				total += k;
				moved = true;
			} else if (k < 0 && errno != EAGAIN && errno != EINTR) {
				close(fds[i]);
				fds[i] = -1;
				closed++;
			}
		}
		if (moved)
			quiet_since = mono_ms();
		else
			usleep(10000);
	}
	if (closed)
		fprintf(stderr, "closed %d\n", closed);
	printf("stuck %d %lld\n", n - closed, total);
	fflush(stdout);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sig;
	sigwait(&set, &sig);
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	free(sent);
	return 0;
}
