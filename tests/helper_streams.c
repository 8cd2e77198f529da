/* helper_streams - N connections to 127.0.0.1:PORT that stream and verify until the server
 * ends them: the client side of the drain test.
 *
 *   helper_streams PORT N TIMEOUT_S
 *
 * Every connection sends its own deterministic byte stream as fast as the server takes it and
 * checks every echoed byte against what it sent, in order. When the server half-closes (EOF)
 * the connection stops sending, closes, and is done. After all are done (or TIMEOUT_S), prints
 *   streams N sent S received R eof E reset X mismatched M unfinished U
 * so a test can hold the server's counters against the bytes its clients really got back.
 * Prints `ready` once every connection is up (the test signals the server after that). */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct stream {
	int fd;
	uint64_t sent, received;
	bool done, eof_seen;
};

static uint8_t stream_byte(uint32_t id, uint64_t pos)
{
	uint64_t x = (pos + 1) * 0x9E3779B97F4A7C15ull + id * 0xBF58476D1CE4E5B9ull;
	return (uint8_t)(x >> 56);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: helper_streams PORT N TIMEOUT_S\n");
		return 64;
	}
	int port = atoi(argv[1]), n = atoi(argv[2]), timeout_s = atoi(argv[3]);
	if (port <= 0 || n <= 0 || timeout_s <= 0)
		return 64;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct stream *ss = calloc((size_t)n, sizeof(*ss));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (!ss || ep < 0) {
		perror("helper_streams");
		return 1;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (int i = 0; i < n; i++) {
		ss[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (ss[i].fd < 0 || connect(ss[i].fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			fprintf(stderr, "helper_streams: connection %d: %s\n", i, strerror(errno));
			return 1;
		}
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, ss[i].fd, &ev) < 0) {
			perror("helper_streams: epoll_ctl");
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	uint64_t deadline = mono_ms() + (uint64_t)timeout_s * 1000u;
	int left = n, eofs = 0, resets = 0;
	uint64_t mismatched = 0, sent = 0, received = 0;
	static uint8_t buf[16384];
	struct epoll_event evs[256];
	while (left > 0 && mono_ms() < deadline) {
		int k = epoll_wait(ep, evs, 256, 100);
		if (k < 0 && errno != EINTR) {
			perror("helper_streams: epoll_wait");
			return 1;
		}
		for (int e = 0; e < k; e++) {
			struct stream *s = &ss[evs[e].data.u32];
			if (s->done)
				continue;
			uint32_t id = evs[e].data.u32;
			if ((evs[e].events & EPOLLOUT) && !s->eof_seen) {
				/* Stay at most 256 KiB ahead of the echoes: a stream, not a flood. */
				size_t len = sizeof(buf);
				if (s->sent - s->received < (256u << 10)) {
					for (size_t j = 0; j < len; j++)
						buf[j] = stream_byte(id, s->sent + j);
					ssize_t w = send(s->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
					if (w > 0) {
						s->sent += (uint64_t)w;
						sent += (uint64_t)w;
					}
				}
			}
			ssize_t r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r > 0) {
				for (ssize_t j = 0; j < r; j++)
					mismatched += buf[j] != stream_byte(id, s->received + (uint64_t)j);
				s->received += (uint64_t)r;
				received += (uint64_t)r;
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				if (r == 0)
					eofs++;
				else
					resets++;
				s->done = true;
				left--;
				close(s->fd);
			}
		}
	}
	printf("streams %d sent %llu received %llu eof %d reset %d mismatched %llu unfinished %d\n", n,
	       (unsigned long long)sent, (unsigned long long)received, eofs, resets,
	       (unsigned long long)mismatched, left);
	for (int i = 0; i < n; i++)
		if (!ss[i].done)
			close(ss[i].fd);
	close(ep);
	free(ss);
	return 0;
}
