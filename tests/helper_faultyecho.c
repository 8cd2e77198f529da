/* helper_faultyecho - a TCP echo server on 127.0.0.1 that damages its echoes on purpose, to
 * prove that echoload notices.
 *
 *   helper_faultyecho [--port P] [--mode MODE] [--every N] [--split B] [--seed S]
 *                     [--after MS] [--for MS]
 *
 * Prints `port=N` on stdout once listening (--port 0, the default, picks a free port), then
 * echoes each chunk it reads (one recv) unchanged, except every Nth chunk counted over all
 * connections, by MODE:
 *   none     no change                  drop     one byte left out
 *   dup      one byte sent twice        flip     one bit inverted
 *   reorder  two adjacent, different bytes swapped
 *   close    the connection closed instead of echoing
 *   lose     the whole chunk left out   repeat   the whole chunk sent twice
 *   swap     the chunk held back and sent after the connection's next one
 *   half     only the first half of the chunk echoed (every N: use --every 1 for all)
 * and, by time rather than by chunk, counted from the first connection accepted:
 *   silent   echoes until --after MS, then reads and discards everything (a server that
 *            stops answering and never resumes)
 *   pause    echoes, but at --after MS the whole server stops for --for MS, as if sent
 *            SIGSTOP, then goes on where it was (a stall that ends)
 * Byte changes land in the middle of the chunk, or with --seed S at pseudo-random places.
 * --split B sends echoes at most B bytes per send(), so the client sees partial reads.
 * Single-threaded epoll; exits 0 on SIGTERM/SIGINT. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64u << 10)
#define OUT_HIGH (4u << 20) /* stop reading a client that does not read its echoes */

enum mode { M_NONE, M_DROP, M_DUP, M_FLIP, M_REORDER, M_HALF, M_CLOSE, M_LOSE, M_REPEAT,
	    M_SWAP, M_SILENT, M_PAUSE };
static const char *const mode_names[] = { "none", "drop", "dup", "flip", "reorder", "half",
					  "close", "lose", "repeat", "swap", "silent", "pause" };

struct client {
	int fd;
	uint8_t *out;    /* echo bytes not yet sent */
	size_t len, cap;
	uint8_t *held;   /* swap: a chunk waiting for the next one */
	size_t held_len;
	bool reading;    /* wants EPOLLIN */
	uint32_t events; /* registered with epoll */
};

struct server {
	int ep, lfd, sfd;
	enum mode mode;
	unsigned long every, chunks;
	bool fault_due;  /* the Nth chunk could not take the change (reorder): do it on the next */
	size_t split;
	uint64_t seed;   /* 0: changes in the middle of the chunk */
	long after_ms, for_ms; /* silent, pause: when (from the first accept), and how long */
	int64_t t0;      /* ms of the first accept; -1 before it */
	bool paused;     /* pause: done with it */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* silent, pause: whether their time has come */
static bool time_is_up(const struct server *s)
{
	return s->t0 >= 0 && mono_ms() >= s->t0 + s->after_ms;
}

static void die(const char *what)
{
	fprintf(stderr, "helper_faultyecho: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int usage(const char *msg)
{
	fprintf(stderr, "helper_faultyecho: %s\nusage: helper_faultyecho [--port P] "
		"[--mode MODE] [--every N] [--split B] [--seed S] [--after MS] [--for MS]\n", msg);
	return 64;
}

static void client_close(struct client *c)
{
	close(c->fd); /* also leaves the epoll set */
	free(c->out);
	free(c->held);
	free(c);
}

/* Registers interest only when it changes: no syscall per echo in the usual case. */
static void watch(struct server *s, struct client *c)
{
	uint32_t ev = (c->reading ? EPOLLIN : 0) | (c->len ? EPOLLOUT : 0);
	if (ev == c->events)
		return;
	struct epoll_event e = { .events = ev, .data.ptr = c };
	if (epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e) < 0)
		die("epoll_ctl");
	c->events = ev;
}

/* Appends n bytes to the client's echo queue. */
static void queue(struct client *c, const uint8_t *p, size_t n)
{
	if (c->len + n > c->cap) {
		size_t cap = c->cap ? c->cap : CHUNK;
		while (cap < c->len + n)
			cap *= 2;
		uint8_t *out = realloc(c->out, cap);
		if (!out)
			die("realloc");
		c->out = out;
		c->cap = cap;
	}
	memcpy(c->out + c->len, p, n);
	c->len += n;
}

/* Where in a chunk of n bytes the change goes. */
static size_t where(struct server *s, size_t n)
{
	if (!s->seed)
		return n / 2;
	s->seed ^= s->seed << 13; /* xorshift64 */
	s->seed ^= s->seed >> 7;
	s->seed ^= s->seed << 17;
	return (size_t)(s->seed % n);
}

/* Damages buf[0..*n) in place (it has room for one more byte). false if it could not. */
static bool damage(struct server *s, uint8_t *buf, size_t *n)
{
	enum mode mode = s->mode;
	size_t mid = where(s, *n);
	unsigned long count = s->chunks;
	switch (mode) {
	case M_DROP:
		memmove(buf + mid, buf + mid + 1, *n - mid - 1);
		(*n)--;
		return true;
	case M_DUP:
		memmove(buf + mid + 1, buf + mid, *n - mid);
		(*n)++;
		return true;
	case M_FLIP:
		buf[mid] ^= (uint8_t)(1u << (count % 8));
		return true;
	case M_HALF:
		*n /= 2;
		return true;
	case M_REORDER:
		for (size_t i = mid ? mid - 1 : 0; i + 1 < *n; i++)
			if (buf[i] != buf[i + 1]) { /* swapping equal bytes would change nothing */
				uint8_t t = buf[i];
				buf[i] = buf[i + 1];
				buf[i + 1] = t;
				return true;
			}
		return false;
	default:
		return true;
	}
}

/* Sends what is queued, at most split bytes per send(). false if the client is gone. */
static bool flush(struct server *s, struct client *c)
{
	size_t done = 0;
	while (done < c->len) {
		size_t n = c->len - done < s->split ? c->len - done : s->split;
		ssize_t r = send(c->fd, c->out + done, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			break;
		if (r < 0)
			return false;
		done += (size_t)r;
	}
	memmove(c->out, c->out + done, c->len - done);
	c->len -= done;
	c->reading = c->len < OUT_HIGH;
	watch(s, c);
	return true;
}

/* Whole-chunk faults: false if the chunk was dealt with (left out, repeated, held). */
static bool chunk_fault(struct server *s, struct client *c, const uint8_t *buf, size_t len)
{
	switch (s->mode) {
	case M_LOSE:
		return false;
	case M_REPEAT:
		queue(c, buf, len);
		queue(c, buf, len);
		return false;
	case M_SWAP:
		if (c->held)
			return true; /* one at a time */
		c->held = malloc(len);
		if (!c->held)
			die("malloc");
		memcpy(c->held, buf, len);
		c->held_len = len;
		return false;
	default:
		return true;
	}
}

/* One recv, echoed (or damaged, or the connection closed). false if the client is gone. */
static bool on_readable(struct server *s, struct client *c)
{
	static uint8_t buf[CHUNK + 1];
	ssize_t n = recv(c->fd, buf, CHUNK, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	if (n <= 0)
		return false;
	size_t len = (size_t)n;
	if (s->mode == M_SILENT && time_is_up(s))
		return true; /* read, never answered */
	bool fault = s->mode != M_NONE && s->mode < M_SILENT && ++s->chunks % s->every == 0;
	if (fault && s->mode == M_CLOSE)
		return false;
	if (fault && s->mode >= M_LOSE) {
		if (!chunk_fault(s, c, buf, len))
			return flush(s, c);
	} else if (fault || s->fault_due) {
		s->fault_due = !damage(s, buf, &len);
	}
	queue(c, buf, len);
	if (c->held) { /* swap: the held chunk goes after this one */
		queue(c, c->held, c->held_len);
		free(c->held);
		c->held = NULL;
	}
	return flush(s, c);
}

static void on_accept(struct server *s)
{
	int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			perror("helper_faultyecho: accept4");
		return;
	}
	int one = 1;
	struct client *c = calloc(1, sizeof(*c));
	if (!c || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		perror("helper_faultyecho: new client");
		free(c);
		close(fd);
		return;
	}
	if (s->t0 < 0)
		s->t0 = mono_ms();
	c->fd = fd;
	c->reading = true;
	c->events = EPOLLIN;
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
	if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e) < 0)
		die("epoll_ctl");
}

static int listen_on(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt");
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		die("listen");
	printf("port=%d\n", ntohs(sa.sin_port));
	if (fflush(stdout) != 0)
		die("stdout");
	return fd;
}

/* SIGTERM and SIGINT arrive as readable data on a signalfd, in the same loop. */
static int signals_fd(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		die("sigprocmask");
	int fd = signalfd(-1, &set, SFD_CLOEXEC);
	if (fd < 0)
		die("signalfd");
	return fd;
}

static int parse(int argc, char **argv, struct server *s, int *port)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "mode", required_argument, NULL, 'm' },
		{ "every", required_argument, NULL, 'e' },
		{ "split", required_argument, NULL, 's' },
		{ "seed", required_argument, NULL, 'r' },
		{ "after", required_argument, NULL, 'a' },
		{ "for", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	char *end;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long v = 0;
		if (o != 'm' && o != '?') {
			v = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || v < 0 || v > 1 << 30)
				return usage("bad number");
		}
		switch (o) {
		case 'p': *port = (int)v; break;
		case 'e': s->every = (unsigned long)v; break;
		case 's': s->split = (size_t)v; break;
		case 'r': s->seed = (uint64_t)v; break;
		case 'a': s->after_ms = v; break;
		case 'f': s->for_ms = v; break;
		case 'm':
			s->mode = (enum mode)-1;
			for (size_t i = 0; i < sizeof(mode_names) / sizeof(*mode_names); i++)
				if (strcmp(optarg, mode_names[i]) == 0)
					s->mode = (enum mode)i;
			if ((int)s->mode < 0)
				return usage("unknown mode");
			break;
		default: return usage("unknown option");
		}
	}
	if (optind < argc || *port > 65535 || s->every < 1 || s->split < 1)
		return usage("bad arguments");
	return 0;
}

int main(int argc, char **argv)
{
	struct server s = { .mode = M_NONE, .every = 100, .split = CHUNK * 2, .t0 = -1 };
	int port = 0;
	if (parse(argc, argv, &s, &port))
		return 64;
	s.sfd = signals_fd();
	s.lfd = listen_on(port);
	s.ep = epoll_create1(EPOLL_CLOEXEC);
	if (s.ep < 0)
		die("epoll_create1");
	struct epoll_event le = { .events = EPOLLIN, .data.ptr = &s.lfd };
	struct epoll_event se = { .events = EPOLLIN, .data.ptr = &s.sfd };
	if (epoll_ctl(s.ep, EPOLL_CTL_ADD, s.lfd, &le) < 0 ||
	    epoll_ctl(s.ep, EPOLL_CTL_ADD, s.sfd, &se) < 0)
		die("epoll_ctl");
	for (;;) {
		struct epoll_event ev[64];
		int timeout = -1;
		if (s.mode == M_PAUSE && !s.paused && s.t0 >= 0) {
			int64_t left = s.t0 + s.after_ms - mono_ms();
			if (left <= 0) {
				struct timespec ts = { .tv_sec = s.for_ms / 1000,
						       .tv_nsec = s.for_ms % 1000 * 1000000L };
				while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
					;
				s.paused = true;
				continue;
			}
			timeout = (int)left;
		}
		int n = epoll_wait(s.ep, ev, 64, timeout);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			if (ev[i].data.ptr == &s.sfd)
				return 0; /* the clients' sockets close with the process */
			if (ev[i].data.ptr == &s.lfd) {
				on_accept(&s);
				continue;
			}
			struct client *c = ev[i].data.ptr;
			bool alive = true;
			if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				alive = on_readable(&s, c);
			if (alive && (ev[i].events & EPOLLOUT))
				alive = flush(&s, c);
			if (!alive)
				client_close(c);
		}
	}
}
