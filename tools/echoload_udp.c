/* echoload_udp.c - --udp: verifying load over UDP sockets, and their epoll engine.
 *
 * The wire: datagram seq of socket id is exactly message seq of the TCP stream format
 * (echoload_verify.c), whole, one per datagram, --size bytes:
 *   [0,4) id LE   [4,12) seq LE   [12,16) check = 32 bits of a hash of (id, seq)
 *   [16,size) payload derived from (id, seq)
 * so every reply says which socket and which datagram it answers, and can be checked byte for
 * byte against what that datagram was.
 *
 * Each socket is connect()ed, so the kernel drops datagrams from any other address, and keeps a
 * window of at most --depth datagrams awaiting a reply. A datagram leaves the window when its
 * reply comes, or when --udp-timeout passes without one: then it is given up as lost (counted,
 * a rate, not an error; UDP may lose) and the next is sent. A reply is judged as a whole:
 *   header check fails, or wrong length     corrupt (error: corrupt_bytes)
 *   valid header, another socket's id       misdelivered (error)
 *   a sequence this socket never sent       misdelivered (error)
 *   a datagram already answered             duplicated (error: dup_msgs)
 *   a datagram already given up             late (counted, not an error; it stays lost)
 *   awaited, but other bytes than sent      corrupt (error)
 *   awaited and byte-exact                  intact: latency and throughput
 * The verdicts need the state of recent sequences: each socket keeps a ring of HIST states
 * (HIST a power of two >= 4 x depth) and never has more than HIST sequences between its oldest
 * unresolved datagram and its newest, so a slot is never reused while it is in the window. A
 * reply older than the ring (HIST sequences behind) can no longer be told apart: it is counted
 * late. Replies may come in any order (UDP does not keep it); that is not an error.
 *
 * Timeouts: every send appends (socket, seq, deadline) to one queue per worker. The timeout is
 * the same for all and sends happen in time order, so the queue is sorted by deadline: expiry
 * pops from the front, and answered entries are dropped there when their deadline comes. */
#include "echoload.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64          /* datagrams per sendmmsg/recvmmsg */
#define HIST_MIN 16u      /* ring slots per socket at the least */
#define MAX_EVENTS 512
#define RCVBUF_MAX (4u << 20)

enum { ST_FREE, ST_OUT, ST_DONE, ST_LOST, ST_MASK = 0x7f, ST_MEAS = 0x80 };

struct udp_sock {
	uint64_t created;      /* sequences [0, created) exist */
	uint64_t sent;         /* ... and [0, sent) were handed to the kernel */
	uint64_t base;         /* the oldest sequence neither answered nor given up */
	uint32_t outstanding;  /* created, neither answered nor given up */
	uint8_t *st;           /* at seq & mask: ST_* | ST_MEAS (sent inside the interval) */
	uint64_t *stamp;       /* at seq & mask: latency origin (open loop: intended time) */
};

struct timeout {
	uint32_t conn;
	uint64_t seq, deadline;
};

struct udp_worker {
	struct udp_sock *socks;
	uint8_t *st;
	uint64_t *stamp;
	uint64_t hist, mask;
	struct timeout *q;     /* a ring: qlen entries from qhead, sorted by deadline */
	size_t qcap, qhead, qlen;
	uint8_t *rx, *tx, *want; /* BATCH receive and send slots; one expected datagram */
	size_t rx_slot;        /* size + 1: a longer reply shows as longer */
	struct mmsghdr rmsg[BATCH], tmsg[BATCH];
	struct iovec riov[BATCH], tiov[BATCH];
	int ep;
	bool no_pwait2;
};

/* --- sockets ------------------------------------------------------------------------------- */

int udp_socket(const struct addrinfo *ai, uint32_t size, uint32_t depth, int *err)
{
	int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	/* A window's replies can arrive at once; the default buffer (about 200 KiB) would drop
	 * big ones on our side and the loss be charged to the server. The kernel caps this at
	 * net.core.rmem_max, silently. */
	uint64_t want = 2 * (uint64_t)depth * (size + 256);
	int cur = 0;
	socklen_t sl = sizeof(cur);
	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cur, &sl) < 0)
		goto fail;
	if (want > (uint64_t)cur) {
		int v = want > RCVBUF_MAX ? (int)RCVBUF_MAX : (int)want;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) < 0)
			goto fail;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		goto fail;
	return fd;
fail:
	*err = errno;
	close(fd);
	return -1;
}

/* --- the window ---------------------------------------------------------------------------- */

int udp_setup(struct worker *w)
{
	const struct options *o = w->opt;
	struct udp_worker *u = calloc(1, sizeof(*u));
	if (!u)
		goto oom;
	w->udp = u;
	u->ep = -1;
	u->hist = HIST_MIN;
	while (u->hist < 4 * (uint64_t)o->depth)
		u->hist *= 2;
	u->mask = u->hist - 1;
	size_t n = w->nconns ? w->nconns : 1;
	u->socks = calloc(n, sizeof(*u->socks));
	u->st = calloc(n * u->hist, 1);
	u->stamp = calloc(n * u->hist, sizeof(uint64_t));
	/* a window's worth per socket to start with; push_timeout doubles it when needed */
	u->qcap = n * o->depth < (1u << 16) ? n * o->depth : (1u << 16);
	u->q = malloc(u->qcap * sizeof(*u->q));
	u->rx_slot = (size_t)o->size + 1;
	u->rx = malloc(BATCH * u->rx_slot);
	u->tx = malloc(BATCH * (size_t)o->size);
	u->want = malloc(o->size);
	if (!u->socks || !u->st || !u->stamp || !u->q || !u->rx || !u->tx || !u->want)
		goto oom;
	for (uint32_t i = 0; i < w->nconns; i++) {
		struct udp_sock *s = &u->socks[i];
		s->st = u->st + (size_t)i * u->hist;
		s->stamp = u->stamp + (size_t)i * u->hist;
		w->conns[i].udp = s;
	}
	for (int i = 0; i < BATCH; i++) {
		u->riov[i] = (struct iovec){ u->rx + (size_t)i * u->rx_slot, u->rx_slot };
		u->rmsg[i].msg_hdr = (struct msghdr){ .msg_iov = &u->riov[i], .msg_iovlen = 1 };
		u->tiov[i] = (struct iovec){ u->tx + (size_t)i * o->size, o->size };
		u->tmsg[i].msg_hdr = (struct msghdr){ .msg_iov = &u->tiov[i], .msg_iovlen = 1 };
	}
	return 0;
oom:
	snprintf(w->why, sizeof(w->why), "out of memory");
	return -1;
}

void udp_teardown(struct worker *w)
{
	struct udp_worker *u = w->udp;
	if (!u)
		return;
	if (u->ep >= 0)
		close(u->ep);
	free(u->socks);
	free(u->st);
	free(u->stamp);
	free(u->q);
	free(u->rx);
	free(u->tx);
	free(u->want);
	free(u);
	w->udp = NULL;
}

bool udp_may_create(const struct worker *w, const struct conn *c)
{
	const struct udp_sock *s = c->udp;
	return !c->dead && s->outstanding < w->opt->depth && s->created - s->base < w->udp->hist;
}

void udp_create(struct worker *w, struct conn *c, uint64_t stamp)
{
	struct udp_sock *s = c->udp;
	uint64_t slot = s->created++ & w->udp->mask;
	s->st[slot] = ST_OUT;
	s->stamp[slot] = stamp;
	s->outstanding++;
}

bool udp_unsent(const struct conn *c)
{
	return c->udp->sent < c->udp->created;
}

uint64_t udp_outstanding(const struct conn *c)
{
	return c->udp->outstanding;
}

/* seq left the window (answered or given up) with state st: the oldest unresolved moves on. */
static void resolve(struct worker *w, struct conn *c, uint64_t seq, uint8_t st)
{
	struct udp_sock *s = c->udp;
	uint64_t mask = w->udp->mask;
	s->st[seq & mask] = st | (s->st[seq & mask] & ST_MEAS);
	s->outstanding--;
	while (s->base < s->created && (s->st[s->base & mask] & ST_MASK) != ST_OUT)
		s->base++;
}

/* Appends a timeout, doubling the ring when full (its entries stay in deadline order). */
static int push_timeout(struct worker *w, uint32_t conn, uint64_t seq)
{
	struct udp_worker *u = w->udp;
	if (u->qlen == u->qcap) {
		size_t cap = u->qcap * 2;
		struct timeout *q = malloc(cap * sizeof(*q));
		if (!q) {
			worker_fail(w, 1, "out of memory");
			return -1;
		}
		for (size_t i = 0; i < u->qlen; i++)
			q[i] = u->q[(u->qhead + i) % u->qcap];
		free(u->q);
		u->q = q;
		u->qcap = cap;
		u->qhead = 0;
	}
	u->q[(u->qhead + u->qlen++) % u->qcap] =
		(struct timeout){ conn, seq, w->now + w->opt->udp_timeout_ns };
	return 0;
}

uint64_t udp_expire(struct worker *w)
{
	struct udp_worker *u = w->udp;
	while (u->qlen) {
		struct timeout t = u->q[u->qhead];
		if (t.deadline > w->now)
			return t.deadline;
		u->qhead = (u->qhead + 1) % u->qcap;
		u->qlen--;
		struct conn *c = &w->conns[t.conn];
		struct udp_sock *s = c->udp;
		/* answered already, the socket failed, or the slot now holds a newer sequence */
		if (c->dead || s->created - t.seq > u->hist ||
		    (s->st[t.seq & u->mask] & ST_MASK) != ST_OUT)
			continue;
		if (s->st[t.seq & u->mask] & ST_MEAS)
			w->cnt.dg_lost++;
		resolve(w, c, t.seq, ST_LOST);
		conn_refill(w, c);
	}
	return UINT64_MAX;
}

/* --- replies ------------------------------------------------------------------------------- */

/* Differing bytes between a reply and what was sent, a length difference counting each byte
 * missing or extra; *first: the offset of the first difference. */
static size_t differences(const uint8_t *p, size_t len, const uint8_t *want, size_t size,
			  size_t *first)
{
	size_t n = len < size ? len : size, diff = len > size ? len - size : size - len;
	*first = n;
	for (size_t i = 0; i < n; i++)
		if (p[i] != want[i]) {
			if (*first == n)
				*first = i;
			diff++;
		}
	return diff;
}

static void on_reply(struct worker *w, struct conn *c, const uint8_t *p, size_t len)
{
	struct udp_worker *u = w->udp;
	struct udp_sock *s = c->udp;
	uint32_t size = w->opt->size, id;
	uint64_t seq;
	w->last_rx = c->last_rx = w->now;
	w->cnt.rx_bytes += len;
	if (len < MSG_HDR || !msg_header_parse(p, &id, &seq)) {
		w->cnt.corrupt_bytes += len ? len : 1;
		conn_error(w, c, s->base * size, "a reply of %zu bytes without a valid header "
			   "(corrupted, or not echoload's)", len);
		return;
	}
	if (id != c->id) {
		w->cnt.misdelivered++;
		conn_error(w, c, seq * size, "a reply carrying conn %u's datagram (misdelivered)",
			   id);
		return;
	}
	if (seq >= s->sent) {
		w->cnt.misdelivered++;
		conn_error(w, c, seq * size, "a reply to a datagram this socket never sent (it sent "
			   "%llu) (misdelivered)", (unsigned long long)s->sent);
		return;
	}
	if (s->created - seq > u->hist) { /* older than the ring: its fate is forgotten */
		w->cnt.dg_late++;
		return;
	}
	uint8_t st = s->st[seq & u->mask];
	msg_stream(c->id, seq * size, u->want, size);
	size_t first, diff = differences(p, len, u->want, size, &first);
	if (diff) {
		w->cnt.corrupt_bytes += diff;
		conn_error(w, c, seq * size + first, "a reply of %zu bytes (%zu sent) with %zu bytes "
			   "changed or missing (corrupted)", len, (size_t)size, diff);
	}
	switch (st & ST_MASK) {
	case ST_OUT:
		if (!diff) {
			worker_completed(w, s->stamp[seq & u->mask]);
			if (st & ST_MEAS)
				w->cnt.dg_received++;
		}
		resolve(w, c, seq, ST_DONE);
		conn_refill(w, c);
		break;
	case ST_DONE:
		w->cnt.dup_msgs++;
		w->cnt.dup_bytes += len;
		conn_error(w, c, seq * size, "a second reply to one datagram (duplicated)");
		break;
	default: /* ST_LOST: given up before this came */
		w->cnt.dg_late++;
		break;
	}
}

/* --- the epoll engine ---------------------------------------------------------------------- */

static void want_out(struct worker *w, struct conn *c, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u32 = c->index };
	if (epoll_ctl(w->udp->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		worker_fail(w, 1, "epoll_ctl: %s", strerror(errno));
	c->out_armed = on;
}

/* The socket failed (on loopback usually ECONNREFUSED: an ICMP port unreachable, nothing
 * listens on the port): an error; what it had out is abandoned with it. */
static void sock_failed(struct worker *w, struct conn *c, int err)
{
	struct udp_sock *s = c->udp;
	if (c->dead)
		return;
	c->dead = true;
	w->cnt.conn_errors++;
	conn_error(w, c, s->base * w->opt->size, "socket failed: %s%s (%u datagrams unanswered)",
		   strerror(err), err == ECONNREFUSED ? ", is a UDP echo server on that port?" : "",
		   s->outstanding);
	s->outstanding = 0;
	s->created = s->sent;
	if (close(c->fd) < 0 && errno != EINTR)
		worker_fail(w, 1, "close: %s", strerror(errno));
	c->fd = -1; /* closing removed it from the epoll set */
}

/* Sends every created datagram, BATCH per sendmmsg; a full socket waits for EPOLLOUT. */
static void flush(struct worker *w, void *engine, struct conn *c)
{
	struct udp_worker *u = engine;
	struct udp_sock *s = c->udp;
	uint32_t size = w->opt->size;
	bool meas = w->now >= w->t_meas && w->now < w->stop;
	while (!c->dead && s->sent < s->created) {
		uint64_t left = s->created - s->sent;
		unsigned n = left < BATCH ? (unsigned)left : BATCH;
		for (unsigned i = 0; i < n; i++)
			msg_stream(c->id, (s->sent + i) * size, u->tx + (size_t)i * size, size);
		int r = sendmmsg(c->fd, u->tmsg, n, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EAGAIN && errno != ENOBUFS) {
			sock_failed(w, c, errno);
			return;
		}
		if (r > 0 && w->opt->rate > 0)
			worker_clock(w); /* send lag: the loop's time is from before this batch */
		for (int i = 0; i < r; i++) {
			uint64_t seq = s->sent++;
			worker_sent(w, s->stamp[seq & u->mask]);
			if (meas) {
				s->st[seq & u->mask] |= ST_MEAS;
				w->cnt.dg_sent++;
			}
			if (push_timeout(w, c->index, seq) < 0)
				return;
		}
		if (r < 0 || (unsigned)r < n) {
			if (!c->out_armed)
				want_out(w, c, true);
			return;
		}
	}
	if (c->out_armed && !c->dead)
		want_out(w, c, false);
}

/* Level-triggered: one recvmmsg is enough unless it filled the batch. */
static void readable(struct worker *w, struct udp_worker *u, struct conn *c)
{
	while (!c->dead) {
		int r = recvmmsg(c->fd, u->rmsg, BATCH, MSG_DONTWAIT, NULL);
		if (r < 0) {
			if (errno == EAGAIN)
				return;
			if (errno != EINTR)
				sock_failed(w, c, errno);
			continue;
		}
		worker_clock(w); /* latency ends when the replies are in hand */
		for (int i = 0; i < r && !c->dead; i++)
			on_reply(w, c, u->rx + (size_t)i * u->rx_slot, u->rmsg[i].msg_len);
		if (r < BATCH)
			return;
	}
}

static int engine_init(struct worker *w, struct udp_worker *u)
{
	u->ep = epoll_create1(EPOLL_CLOEXEC);
	if (u->ep < 0) {
		worker_fail(w, 1, "epoll_create1: %s", strerror(errno));
		return -1;
	}
	for (uint32_t i = 0; i < w->nconns; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
		if (epoll_ctl(u->ep, EPOLL_CTL_ADD, w->conns[i].fd, &ev) < 0) {
			worker_fail(w, 1, "epoll_ctl: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}

int udp_run(struct worker *w)
{
	struct udp_worker *u = w->udp;
	struct epoll_event ev[MAX_EVENTS];
	if (engine_init(w, u) < 0)
		return w->status;
	worker_wait_start(w);
	for (;;) {
		worker_clock(w);
		int64_t wait = worker_step(w);
		if (wait < 0)
			break;
		worker_flush_dirty(w, flush, u);
		int n = epoll_wait_ns(u->ep, ev, MAX_EVENTS, wait, &u->no_pwait2);
		if (n < 0 && errno != EINTR) {
			worker_fail(w, 1, "epoll_wait: %s", strerror(errno));
			break;
		}
		worker_clock(w);
		for (int i = 0; i < n; i++) {
			struct conn *c = &w->conns[ev[i].data.u32];
			if (!c->dead && (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				readable(w, u, c);
			if (!c->dead && (ev[i].events & EPOLLOUT))
				conn_want_send(w, c);
		}
	}
	return w->status;
}
