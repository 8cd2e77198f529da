/* helper_badudp - a UDP echo peer on 127.0.0.1 that mistreats its replies on purpose, to prove
 * that echoload --udp tells loss from damage and misdelivery.
 *
 *   helper_badudp [--port P] [--mode MODE] [--every N] [--delay MS]
 *
 * Prints `port=N` on stdout once bound (--port 0, the default, picks a free port), then sends
 * each datagram back to its source unchanged, except every Nth datagram counted over all
 * sources, by MODE:
 *   none   no change
 *   drop   not answered (loss: echoload counts it, and passes)
 *   flip   one bit of the middle byte inverted (corruption)
 *   dup    answered twice (a duplicate)
 *   swap   held until a datagram from another source comes, then each source gets the other's
 *          datagram (misdelivery); released to its own source after --delay if none comes
 *   late   answered after --delay milliseconds [100] (a late reply once echoload gave up)
 * Single-threaded poll(); exits 0 on SIGTERM/SIGINT. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DGRAM_MAX 65536
#define HELD_MAX 4096 /* late mode: datagrams waiting; beyond it they are answered at once */

enum mode { M_NONE, M_DROP, M_FLIP, M_DUP, M_SWAP, M_LATE };
static const char *const mode_names[] = { "none", "drop", "flip", "dup", "swap", "late" };

struct held {
	uint8_t *data;
	size_t len;
	struct sockaddr_in from;
	uint64_t due; /* ms, CLOCK_MONOTONIC */
};

/* A ring: entries are appended with the same delay, so they come due in order. */
static struct held held[HELD_MAX];
static size_t held_head, held_len;

static void die(const char *what)
{
	fprintf(stderr, "helper_badudp: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int usage(const char *msg)
{
	fprintf(stderr, "helper_badudp: %s\nusage: helper_badudp [--port P] [--mode MODE] "
		"[--every N] [--delay MS]\n", msg);
	return 64;
}

/* A full socket buffer drops the reply: that is loss, which echoload must count anyway. */
static void reply(int fd, const uint8_t *p, size_t len, const struct sockaddr_in *to)
{
	if (sendto(fd, p, len, 0, (const struct sockaddr *)to, sizeof(*to)) < 0 &&
	    errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED)
		die("sendto");
}

static bool hold(const uint8_t *p, size_t len, const struct sockaddr_in *from, uint64_t due)
{
	if (held_len == HELD_MAX)
		return false;
	struct held *h = &held[(held_head + held_len) % HELD_MAX];
	h->data = malloc(len ? len : 1);
	if (!h->data)
		die("malloc");
	memcpy(h->data, p, len);
	h->len = len;
	h->from = *from;
	h->due = due;
	held_len++;
	return true;
}

static void release_first(void)
{
	free(held[held_head].data);
	held_head = (held_head + 1) % HELD_MAX;
	held_len--;
}

/* Held datagrams whose time has come go back to their own source. */
static void release_due(int fd)
{
	uint64_t now = now_ms();
	while (held_len && held[held_head].due <= now) {
		struct held *h = &held[held_head];
		reply(fd, h->data, h->len, &h->from);
		release_first();
	}
}

static bool same_source(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
	return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
}

static void on_datagram(int fd, enum mode mode, uint8_t *p, size_t len,
			const struct sockaddr_in *from, bool fault, unsigned delay_ms)
{
	/* swap: a held datagram and this one from another source trade places */
	if (mode == M_SWAP && held_len && !same_source(&held[held_head].from, from)) {
		struct held *h = &held[held_head];
		reply(fd, h->data, h->len, from);
		reply(fd, p, len, &h->from);
		release_first();
		return;
	}
	if (!fault) {
		reply(fd, p, len, from);
		return;
	}
	switch (mode) {
	case M_DROP:
		return;
	case M_FLIP:
		if (len)
			p[len / 2] ^= 0x10;
		reply(fd, p, len, from);
		return;
	case M_DUP:
		reply(fd, p, len, from);
		reply(fd, p, len, from);
		return;
	case M_SWAP:
	case M_LATE:
		if (!hold(p, len, from, now_ms() + delay_ms))
			reply(fd, p, len, from);
		return;
	case M_NONE:
		break;
	}
	reply(fd, p, len, from);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' }, { "mode", required_argument, NULL, 'm' },
		{ "every", required_argument, NULL, 'n' }, { "delay", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	int port = 0, opt;
	enum mode mode = M_NONE;
	unsigned long every = 1;
	unsigned delay_ms = 100;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'n': every = strtoul(optarg, NULL, 10); break;
		case 'd': delay_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'm': {
			size_t i = 0;
			while (i < sizeof(mode_names) / sizeof(*mode_names) &&
			       strcmp(optarg, mode_names[i]) != 0)
				i++;
			if (i == sizeof(mode_names) / sizeof(*mode_names))
				return usage("unknown mode");
			mode = (enum mode)i;
			break;
		}
		default: return usage("bad option");
		}
	}
	if (every == 0)
		return usage("--every must be 1 or more");

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0)
		die("sigprocmask");
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");

	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	/* room for a burst of windows from many sockets: what overflows is loss in any mode */
	int rcv = 4 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)) < 0)
		die("setsockopt(SO_RCVBUF)");
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind");
	if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		die("getsockname");
	printf("port=%d\n", ntohs(sa.sin_port));
	fflush(stdout);

	static uint8_t buf[DGRAM_MAX];
	unsigned long count = 0;
	for (;;) {
		struct pollfd pfd[2] = { { .fd = fd, .events = POLLIN },
					 { .fd = sfd, .events = POLLIN } };
		int timeout = -1;
		if (held_len) {
			uint64_t now = now_ms(), due = held[held_head].due;
			timeout = due > now ? (int)(due - now) : 0;
		}
		int n = poll(pfd, 2, timeout);
		if (n < 0 && errno != EINTR)
			die("poll");
		if (n > 0 && pfd[1].revents)
			break;
		release_due(fd);
		if (n <= 0 || !(pfd[0].revents & POLLIN))
			continue;
		/* a batch, then back to poll: held datagrams and signals are not starved */
		for (int i = 0; i < 64; i++) {
			struct sockaddr_in from;
			socklen_t fl = sizeof(from);
			ssize_t r = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT,
					     (struct sockaddr *)&from, &fl);
			if (r < 0 && (errno == EAGAIN || errno == ECONNREFUSED))
				break;
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				die("recvfrom");
			count++;
			on_datagram(fd, mode, buf, (size_t)r, &from, count % every == 0, delay_ms);
		}
	}
	while (held_len)
		release_first();
	close(fd);
	close(sfd);
	return 0;
}
