/* helper_churn - the short-lived and badly behaved clients of a soak test, against
 * 127.0.0.1:PORT for SECONDS:
 *
 *   helper_churn PORT SECONDS [EXCHANGES_PER_SECOND]
 *
 * Every 50 ms tick it runs its share of EXCHANGES_PER_SECOND (default 200) exchanges, each on
 * a new connection, in turn: a half-close exchange (1 B to 64 KiB, shutdown(SHUT_WR), every
 * byte back, then EOF), and a reset (bytes sent, some read, then closed with SO_LINGER 0). It
 * also keeps 16 slow readers: each sends 256 KiB at once and reads at most 4 KiB a tick, so
 * echod's backpressure holds them; one that has all its bytes back is closed and replaced.
 * Every byte read is checked against what was sent. Once a second it prints
 * `churn t=S exchanges=N resets=N slow_done=N bad=N` on stderr; at the end the same line on
 * stdout. Exit 1 if any byte was wrong, a connection failed where it should not, or an
 * exchange stalled (5 s). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 50
#define SLOW 16
#define SLOW_BYTES (256u << 10)
#define SLOW_READ_PER_TICK 4096
#define EXCHANGE_MAX (64u << 10)
#define STALL_MS 5000

static struct sockaddr_in server;
static unsigned long long exchanges, resets, slow_done, bad;

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The byte at stream offset i of a connection seeded `seed`: cheap, and a byte out of place
 * or from another connection is caught. */
static uint8_t byte_at(uint32_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
	return (uint8_t)(x >> 29);
}

static int dial(bool nonblock)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = STALL_MS / 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* EINTR (a stop-and-continue, with SO_SNDTIMEO) leaves the connect going on, like
	 * EINPROGRESS; a blocking send then waits for it. */
	if (connect(fd, (struct sockaddr *)&server, sizeof(server)) < 0 && errno != EINPROGRESS &&
	    errno != EINTR) {
		close(fd);
		return -1;
	}
	return fd;
}

static void fill(uint8_t *buf, uint32_t seed, uint64_t from, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = byte_at(seed, from + i);
}

/* Send and read at once (a blocking send of more than the buffers hold would deadlock), then
 * EOF after the last byte. */
static bool exchange(uint32_t seed, size_t len)
{
	int fd = dial(true);
	if (fd < 0)
		return false;
	static uint8_t out[EXCHANGE_MAX], in[EXCHANGE_MAX];
	fill(out, seed, 0, len);
	size_t sent = 0, got = 0;
	bool shut = false, eof = false, ok = true;
	uint64_t deadline = mono_ms() + STALL_MS;
	while (!eof && ok && mono_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
		if (poll(&p, 1, 100) < 0 && errno != EINTR)
			break;
		if ((p.revents & POLLOUT) && sent < len) {
			ssize_t n = send(fd, out + sent, len - sent, MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				ok = false;
		}
		if (sent == len && !shut) {
			shutdown(fd, SHUT_WR);
			shut = true;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);
			if (n == 0)
				eof = true;
			else if (n > 0)
				got += (size_t)n;
			else if (errno != EAGAIN && errno != EINTR)
				ok = false;
		}
	}
	close(fd);
	return ok && eof && got == len && memcmp(in, out, len) == 0;
}

/* Bytes out, a few back, then a reset: echod must take it as the client's reset. */
static bool reset_midway(uint32_t seed)
{
	int fd = dial(false);
	if (fd < 0)
		return false;
	uint8_t out[4096], in[512];
	fill(out, seed, 0, sizeof(out));
	/* Blocking, with SO_RCVTIMEO/SO_SNDTIMEO: a stop-and-continue ends a call with EINTR. */
	ssize_t n;
	while ((n = send(fd, out, sizeof(out), MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	bool ok = n == (ssize_t)sizeof(out);
	while (ok && (n = recv(fd, in, sizeof(in), 0)) < 0 && errno == EINTR)
		;
	ok = n > 0 && memcmp(in, out, (size_t)n) == 0;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	return ok;
}

struct slow {
	int fd;
	uint32_t seed;
	uint64_t sent, got, last_progress;
};

static void slow_open(struct slow *s, uint32_t seed)
{
	s->fd = dial(true);
	s->seed = seed;
	s->sent = s->got = 0;
	s->last_progress = mono_ms();
}

/* One tick of a slow reader: push what the kernel takes, read at most a little. */
static void slow_tick(struct slow *s, uint32_t *next_seed)
{
	if (s->fd < 0) {
		bad++;
		slow_open(s, (*next_seed)++);
		return;
	}
	static uint8_t buf[SLOW_BYTES];
	if (s->sent < SLOW_BYTES) {
		size_t want = SLOW_BYTES - s->sent;
		fill(buf, s->seed, s->sent, want);
		ssize_t n = send(s->fd, buf, want, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			s->sent += (uint64_t)n;
			s->last_progress = mono_ms();
		}
	}
	uint8_t in[SLOW_READ_PER_TICK];
	ssize_t n = recv(s->fd, in, sizeof(in), MSG_DONTWAIT);
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++)
			if (in[i] != byte_at(s->seed, s->got + (uint64_t)i)) {
				bad++;
				break;
			}
		s->got += (uint64_t)n;
		s->last_progress = mono_ms();
	} else if (n == 0 || (n < 0 && errno != EAGAIN)) {
		bad++; /* closed or failed under a reader that is merely slow */
		close(s->fd);
		slow_open(s, (*next_seed)++);
		return;
	}
	if (s->got == SLOW_BYTES) {
		slow_done++;
		close(s->fd);
		slow_open(s, (*next_seed)++);
	} else if (mono_ms() - s->last_progress > STALL_MS) {
		bad++;
		close(s->fd);
		slow_open(s, (*next_seed)++);
	}
}

static void report(FILE *to, uint64_t t0)
{
	fprintf(to, "churn t=%llu exchanges=%llu resets=%llu slow_done=%llu bad=%llu\n",
		(unsigned long long)((mono_ms() - t0) / 1000), exchanges, resets, slow_done, bad);
	fflush(to);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: helper_churn PORT SECONDS [EXCHANGES_PER_SECOND]\n");
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	server = (struct sockaddr_in){ .sin_family = AF_INET,
				       .sin_port = htons((uint16_t)atoi(argv[1])),
				       .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	uint64_t seconds = strtoull(argv[2], NULL, 10);
	unsigned rate = argc > 3 ? (unsigned)atoi(argv[3]) : 200;
	unsigned per_tick = rate * TICK_MS / 1000 ? rate * TICK_MS / 1000 : 1;
	uint32_t seed = (uint32_t)getpid() << 16;
	struct slow slow[SLOW];
	for (int i = 0; i < SLOW; i++)
		slow_open(&slow[i], seed++);
	uint64_t t0 = mono_ms(), next_report = t0 + 1000;
	for (uint64_t tick = 0; mono_ms() - t0 < seconds * 1000; tick++) {
		uint64_t tick_at = t0 + tick * TICK_MS;
		for (unsigned k = 0; k < per_tick; k++) {
			if ((tick + k) % 4 == 3) {
				resets++;
				bad += !reset_midway(seed++);
			} else {
				exchanges++;
				size_t len = 1 + (size_t)(byte_at(seed, 7) | byte_at(seed, 9) << 8) %
						     EXCHANGE_MAX;
				bad += !exchange(seed++, len);
			}
		}
		for (int i = 0; i < SLOW; i++)
			slow_tick(&slow[i], &seed);
		if (mono_ms() >= next_report) {
			report(stderr, t0);
			next_report += 1000;
		}
		uint64_t now = mono_ms();
		if (tick_at + TICK_MS > now)
			usleep((useconds_t)(tick_at + TICK_MS - now) * 1000);
	}
	for (int i = 0; i < SLOW; i++)
		if (slow[i].fd >= 0)
			close(slow[i].fd);
	report(stdout, t0);
	return bad ? 1 : 0;
}
