/* echoload_reconnect.c - --reconnect N: connection churn. Each connection echoes N messages
 * (verified like any others), then closes cleanly and its slot opens a new connection, so the
 * run measures connection set-up and teardown as well as echoing: conns/s and connect latency.
 *
 * The clean close. After the N-th echo is verified, with nothing held back or in flight, the
 * engine half-closes (shutdown SHUT_WR: our FIN) and keeps reading until the server's EOF. An
 * RFC 862 server echoes what it still has, then half-closes in turn, so the server's own
 * half-close path is exercised and no RST can race an echo; any byte that comes after our
 * FIN was never sent and is an error like any other extra byte. Only then is the socket
 * closed and a new one connected. An EOF before our FIN is the server closing on its own: a
 * failed connection, as without --reconnect.
 *
 * TIME_WAIT. The side that sends the first FIN closes actively and holds the connection's
 * address pair in TIME_WAIT for 60 s after the exchange: here that is echoload (the server
 * closes passively: CLOSE_WAIT, LAST_ACK, gone). The client's kernel moves the connection to
 * TIME_WAIT as the server's FIN arrives, before echoload even reads the EOF, so an SO_LINGER
 * 0 close cannot take it back (it resets only a connection that still has a state to reset).
 * Each TIME_WAIT entry holds one local port of one source address toward the server's
 * address and port: 28,232 of them with Linux's default ephemeral range (32768-60999), which
 * 20,000 conns/s would use up in under two seconds; connect() then fails with EADDRNOTAVAIL.
 * On loopback Linux reuses a TIME_WAIT port for a new outgoing connection once it is a second
 * old (net.ipv4.tcp_tw_reuse = 2, the default, with TCP timestamps on), which holds up to
 * about 28,000 conns/s, but then every connect() searches a port range crowded with TIME_WAIT
 * entries (here 46,000 connections in 3.5 s from one address did not fail, at 10,400 conns/s
 * against 13,200 with the rotation below: one pair of runs on a shared machine), and a host
 * may have reuse off. So when the server is on 127.0.0.0/8, where every address is this
 * host's, each new connection is bound to the next of RECONNECT_SOURCES source addresses
 * (127.0.0.1, .2, ...): 64 times the pairs, 1.8 million, a minute and a half at 20,000/s even
 * without reuse. IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), which picks one free
 * for the whole 4-tuple, rather than to bind(), which would need one free toward every
 * destination. A server elsewhere (or on ::1, a single address) gets plain connects; a
 * connect that fails for want of a port says so and fails the run. */
#include "echoload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define RECONNECT_SOURCES 64u /* 127.0.0.1 .. 127.0.0.64 */

void reconnect_setup(struct worker *w)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&w->peer;
	w->vary_src = w->peer.ss_family == AF_INET && (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	/* workers start at different addresses, so their first connects do not contend */
	w->next_src = w->index * 7u;
}

bool conn_close_due(const struct worker *w, const struct conn *c)
{
	uint64_t end = (uint64_t)w->opt->reconnect * w->opt->size;
	return w->opt->reconnect && c->phase == CONN_OPEN && !c->dead && !c->send_busy &&
	       c->rx >= end && c->sent == c->queued && !verify_pending(c);
}

void conn_closing(struct conn *c)
{
	c->phase = CONN_CLOSING;
}

bool conn_eof(struct worker *w, struct conn *c)
{
	if (c->phase != CONN_CLOSING)
		return false;
	/* bytes held as unexplained (they came after our FIN): decided now, counted as errors */
	verify_settle(w, c);
	return true;
}

static bool in_interval(const struct worker *w, uint64_t t)
{
	return t >= w->t_meas && t < w->stop;
}

bool conn_cycle_done(struct worker *w, struct conn *c)
{
	if (close(c->fd) < 0 && errno != EINTR)
		worker_fail(w, 1, "close: %s", strerror(errno));
	worker_clock(w);
	w->cnt.conns_closed++;
	if (in_interval(w, w->now))
		w->cnt.conns_done++;
	verify_free(c); /* settled by conn_eof: not among the worker's pending ones */
	c->fd = -1;
	c->queued = c->sent = c->rx = 0;
	c->bad_until = 0;
	c->skip_lo = c->skip_hi = 0;
	c->skip_whole = false;
	c->txlen = c->txoff = 0;
	c->out_armed = false;
	/* a new id: the new connection's bytes differ from every earlier one's on this slot */
	c->id += w->opt->conns;
	c->gen++;
	if (w->stop_seen || w->now >= w->stop) { /* closed loop: nothing new after the stop */
		c->phase = CONN_DONE;
		c->dead = true;
		return false;
	}
	return true;
}

/* Binds fd to the next loopback source address, its port left to connect(). */
static int bind_source(struct worker *w, int fd)
{
	int one = 1;
	struct sockaddr_in src = { .sin_family = AF_INET };
	src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + w->next_src++ % RECONNECT_SOURCES);
	if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
		return -1;
	return bind(fd, (const struct sockaddr *)&src, sizeof(src));
}

int reconnect_socket(struct worker *w, int flags, int *err)
{
	int fd = socket(w->peer.ss_family, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	/* echo traffic is request/response: Nagle would hold pipelined messages back */
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    (w->vary_src && bind_source(w, fd) < 0)) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

void conn_connecting(struct worker *w, struct conn *c, int fd)
{
	worker_clock(w);
	c->fd = fd;
	c->phase = CONN_CONNECTING;
	c->connect_at = w->now;
}

void conn_established(struct worker *w, struct conn *c)
{
	worker_clock(w);
	w->cnt.conns_opened++;
	if (in_interval(w, c->connect_at))
		hist_record(&w->conn_lat, w->now - c->connect_at);
	c->phase = CONN_OPEN;
	c->last_rx = w->now;
	conn_refill(w, c); /* nothing after the stop: it then stays open and idle to the end */
}

void conn_connect_failed(struct worker *w, struct conn *c, int err)
{
	w->cnt.connect_errors++;
	if (!w->connect_err)
		w->connect_err = err;
	c->fd = -1;
	c->dead = true;
	c->phase = CONN_DONE;
	conn_error(w, c, 0, "connect failed: %s%s", strerror(err),
		   err == EADDRNOTAVAIL ? " (no local port left: TIME_WAIT, see echoload(1))" : "");
}
