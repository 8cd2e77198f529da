/* echoload_epoll.c - the epoll engine. Nonblocking sockets, level-triggered EPOLLIN, and
 * EPOLLOUT only while a send was cut short. One loop iteration: timers (worker_step), one send
 * per connection carrying everything it has queued (with --depth > 1 the pipelined messages go
 * out in one call), epoll_pwait2 with a nanosecond timeout (open-loop pacing needs better than
 * epoll_wait's milliseconds), then recv into one large buffer per readable connection.
 * --reconnect: a connection whose echoes are all in is half-closed by the flush that finds it
 * so; at the server's EOF its socket is closed and a nonblocking connect() starts the next,
 * registered for EPOLLOUT alone until it is established (echoload_reconnect.c). */
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

/* --reconnect: our FIN, after the connection's last echo. */
static void half_close(struct worker *w, struct conn *c)
{
	if (shutdown(c->fd, SHUT_WR) < 0)
		drop(w, c, errno);
	else
		conn_closing(c);
}

/* Sends everything queued; a short send means the socket is full: wait for EPOLLOUT. */
static void flush(struct worker *w, struct epoll_engine *e, struct conn *c)
{
	if (c->phase != CONN_OPEN) /* a stale mark from before a reconnect */
		return;
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
	if (conn_close_due(w, c))
		half_close(w, c);
}

static void flush_marked(struct worker *w, void *e, struct conn *c)
{
	flush(w, e, c);
}

/* --reconnect: a new connection on c's slot, connect() under way or done. */
static void reopen(struct worker *w, struct epoll_engine *e, struct conn *c)
{
	int err;
	int fd = reconnect_socket(w, SOCK_NONBLOCK, &err);
	if (fd < 0) {
		conn_connect_failed(w, c, err);
		return;
	}
	conn_connecting(w, c, fd);
	int rc = connect(fd, (const struct sockaddr *)&w->peer, w->peer_len);
	/* EINTR: the connect goes on in the background, as with EINPROGRESS (connect(2)) */
	if (rc < 0 && errno != EINPROGRESS && errno != EINTR) {
		err = errno;
		close(fd);
		conn_connect_failed(w, c, err);
		return;
	}
	struct epoll_event ev = { .events = rc == 0 ? EPOLLIN : EPOLLOUT, .data.u32 = c->index };
	if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		worker_fail(w, 1, "epoll_ctl: %s", strerror(errno));
		return;
	}
	if (rc == 0)
		conn_established(w, c);
}

/* --reconnect: the connect of a CONNECTING connection finished, one way or the other. */
static void connected(struct worker *w, struct epoll_engine *e, struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		close(c->fd); /* also leaves the epoll set */
		conn_connect_failed(w, c, err);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = c->index };
	if (epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
		worker_fail(w, 1, "epoll_ctl: %s", strerror(errno));
		return;
	}
	conn_established(w, c);
}

/* The server's EOF: after our FIN, the clean end of a --reconnect connection, then the next
 * one; else the server closed on its own, a failed connection. */
static void end_of_stream(struct worker *w, struct epoll_engine *e, struct conn *c)
{
	if (!conn_eof(w, c)) {
		drop(w, c, 0);
		return;
	}
	if (conn_cycle_done(w, c))
		reopen(w, e, c);
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
			end_of_stream(w, e, c);
			return; /* c may be a new connection now, with nothing to read yet */
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

static void on_event(struct worker *w, struct epoll_engine *e, struct conn *c, uint32_t events)
{
	if (c->dead)
		return;
	if (c->phase == CONN_CONNECTING) {
		connected(w, e, c);
		return;
	}
	uint32_t gen = c->gen;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		readable(w, e, c);
	/* the EPOLLOUT was the old socket's if readable() closed it and opened another */
	if (!c->dead && c->gen == gen && (events & EPOLLOUT))
		conn_want_send(w, c);
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
			for (int i = 0; i < n; i++)
				on_event(w, &e, &w->conns[ev[i].data.u32], ev[i].events);
		}
	}
	engine_fini(&e);
	return w->status;
}
