/* echoload_epoll.c - the epoll engine. Nonblocking sockets, level-triggered EPOLLIN, and
 * EPOLLOUT only while a send was cut short. One loop iteration: timers (worker_step), one send
 * per connection carrying everything it has queued (with --depth > 1 the pipelined messages go
 * out in one call), epoll_pwait2 with a nanosecond timeout (open-loop pacing needs better than
 * epoll_wait's milliseconds), then recv into one large buffer per readable connection. */
#include "echoload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define IO_BUF (256u << 10)

struct epoll_engine {
	int ep;
	uint8_t *rxbuf, *txbuf;
	bool no_pwait2; /* kernel without epoll_pwait2 (< 5.11): fall back to epoll_wait */
};

static void drop(struct worker *w, struct conn *c, int err)
{
	conn_failed(w, c, err);
	if (c->fd >= 0 && close(c->fd) < 0 && errno != EINTR)
		worker_fail(w, 1, "close: %s", strerror(errno));
	c->fd = -1; /* closing removed it from the epoll set */
}

static void want_out(struct worker *w, struct epoll_engine *e, struct conn *c, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u32 = c->index };
	if (epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		worker_fail(w, 1, "epoll_ctl: %s", strerror(errno));
	c->out_armed = on;
}

/* Sends everything queued; a short send means the socket is full: wait for EPOLLOUT. */
static void flush(struct worker *w, struct epoll_engine *e, struct conn *c)
{
	while (!c->dead && c->sent < c->queued) {
		size_t len = conn_fill(c, e->txbuf, IO_BUF);
		ssize_t n = send(c->fd, e->txbuf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN) {
			drop(w, c, errno);
			return;
		}
		if (n > 0)
			conn_sent(w, c, (size_t)n);
		if (n < 0 || (size_t)n < len) {
			if (!c->out_armed)
				want_out(w, e, c, true);
			return;
		}
	}
	if (c->out_armed && !c->dead)
		want_out(w, e, c, false);
}

static void flush_marked(struct worker *w, void *e, struct conn *c)
{
	flush(w, e, c);
}

/* Level-triggered: one recv is enough unless it filled the buffer. */
static void readable(struct worker *w, struct epoll_engine *e, struct conn *c)
{
	while (!c->dead) {
		ssize_t n = recv(c->fd, e->rxbuf, IO_BUF, MSG_DONTWAIT);
		if (n > 0) {
			conn_received(w, c, e->rxbuf, (size_t)n);
			if ((size_t)n < IO_BUF)
				return;
		} else if (n == 0) {
			drop(w, c, 0);
		} else if (errno == EAGAIN) {
			return;
		} else if (errno != EINTR) {
			drop(w, c, errno);
		}
	}
}

int epoll_wait_ns(int ep, struct epoll_event *ev, int max, int64_t wait_ns, bool *no_pwait2)
{
	if (!*no_pwait2) {
		struct timespec ts = { .tv_sec = (time_t)(wait_ns / (int64_t)NS_PER_S),
				       .tv_nsec = (long)(wait_ns % (int64_t)NS_PER_S) };
		int n = epoll_pwait2(ep, ev, max, &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		*no_pwait2 = true;
	}
	return epoll_wait(ep, ev, max, (int)((wait_ns + 999999) / 1000000));
}

static int engine_init(struct worker *w, struct epoll_engine *e)
{
	e->ep = epoll_create1(EPOLL_CLOEXEC);
	if (e->ep < 0) {
		worker_fail(w, 1, "epoll_create1: %s", strerror(errno));
		return -1;
	}
	e->rxbuf = malloc(IO_BUF);
	e->txbuf = malloc(IO_BUF);
	if (!e->rxbuf || !e->txbuf) {
		worker_fail(w, 1, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < w->nconns; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
		if (epoll_ctl(e->ep, EPOLL_CTL_ADD, w->conns[i].fd, &ev) < 0) {
			worker_fail(w, 1, "epoll_ctl: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}

static void engine_fini(struct epoll_engine *e)
{
	if (e->ep >= 0)
		close(e->ep);
	free(e->rxbuf);
	free(e->txbuf);
}

int epoll_run(struct worker *w)
{
	struct epoll_engine e = { .ep = -1 };
	struct epoll_event ev[MAX_EVENTS];
	if (engine_init(w, &e) == 0) {
		worker_wait_start(w);
		for (;;) {
			worker_clock(w);
			int64_t wait = worker_step(w);
			if (wait < 0)
				break;
			worker_flush_dirty(w, flush_marked, &e);
			int n = epoll_wait_ns(e.ep, ev, MAX_EVENTS, wait, &e.no_pwait2);
			if (n < 0 && errno != EINTR) {
				worker_fail(w, 1, "epoll_wait: %s", strerror(errno));
				break;
			}
			worker_clock(w);
			for (int i = 0; i < n; i++) {
				struct conn *c = &w->conns[ev[i].data.u32];
				if (!c->dead && (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
					readable(w, &e, c);
				if (!c->dead && (ev[i].events & EPOLLOUT))
					conn_want_send(w, c);
			}
		}
	}
	engine_fini(&e);
	return w->status;
}
