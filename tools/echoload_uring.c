/* echoload_uring.c - the io_uring engine. Per connection one multishot recv that the kernel
 * fills from a ring of provided buffers (mmap'd and registered with the raw structures, as
 * liburing 2.3 has no io_uring_setup_buf_ring), and at most one send in flight (two sends on
 * one socket may complete out of order) carrying everything the connection has queued. One
 * io_uring_submit_and_wait_timeout per loop iteration submits all and waits. Features are
 * probed before connecting (uring_probe), not guessed from the kernel version.
 * --reconnect: once a connection's echoes are all in and its last send has completed, it is
 * half-closed; at the server's EOF (which ends its multishot recv, so no operation refers to
 * the socket any more) the socket is closed, and an IORING_OP_CONNECT on a new one starts the
 * next connection on the slot. Every operation's user_data carries its slot's generation, so
 * a completion that belongs to an earlier connection on the slot can never be taken for the
 * current one's (echoload_reconnect.c). */
#include "echoload.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define BGID 1
#define RX_BUF (16u << 10)     /* bytes per provided buffer */
#define TX_MAX (256u << 10)    /* largest single send */

enum { OP_RECV = 1, OP_SEND = 2, OP_CONNECT = 3 };
#define TAG_GEN_SHIFT 48   /* user_data: generation (16 bits), slot index (40), op (8) */
#define TAG_INDEX_MASK ((1ull << 40) - 1)

struct uring_engine {
	struct io_uring ring;
	bool ring_ok;
	struct io_uring_buf_ring *br;
	size_t br_len;
	uint8_t *rxbufs;
	unsigned nbufs;
	size_t txcap;
	bool recv_worked;  /* a multishot recv delivered data: -EINVAL later is not "unsupported" */
};

static uint64_t tag(const struct conn *c, int op)
{
	return (uint64_t)(c->gen & 0xffff) << TAG_GEN_SHIFT | (uint64_t)c->index << 8 |
	       (uint64_t)op;
}

/* Is this completion for the connection now on its slot (not an earlier one's)? */
static bool tag_current(const struct conn *c, uint64_t user_data)
{
	return (user_data >> TAG_GEN_SHIFT) == (c->gen & 0xffff);
}

/* Flags from the fastest set the kernel accepts: single issuer with task work deferred to our
 * wait (6.1), cooperative task work (5.19), none. */
static int ring_init(struct io_uring *ring, unsigned entries)
{
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int ret = -EINVAL;
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]) && ret == -EINVAL; i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = tries[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 4; /* multishot recv posts many completions per SQE */
		ret = io_uring_queue_init_params(entries, ring, &p);
	}
	return ret;
}

/* Maps and registers a ring of nbufs provided-buffer slots as group BGID. 0 or -errno. */
static int bufring_register(struct uring_engine *u, unsigned nbufs)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t len = nbufs * sizeof(struct io_uring_buf);
	u->br_len = (len + (size_t)page - 1) / (size_t)page * (size_t)page;
	void *mem = mmap(NULL, u->br_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	u->br = mem;
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)mem;
	reg.ring_entries = nbufs;
	reg.bgid = BGID;
	int ret = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (ret < 0)
		return ret;
	u->nbufs = nbufs;
	io_uring_buf_ring_init(u->br);
	return 0;
}

/* Gives the kernel all nbufs buffers of RX_BUF bytes. */
static int bufring_fill(struct uring_engine *u)
{
	u->rxbufs = malloc((size_t)u->nbufs * RX_BUF);
	if (!u->rxbufs)
		return -ENOMEM;
	int mask = io_uring_buf_ring_mask(u->nbufs);
	for (unsigned i = 0; i < u->nbufs; i++)
		io_uring_buf_ring_add(u->br, u->rxbufs + (size_t)i * RX_BUF, RX_BUF,
				      (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(u->br, (int)u->nbufs);
	return 0;
}

static void recycle(struct uring_engine *u, unsigned bid)
{
	io_uring_buf_ring_add(u->br, u->rxbufs + (size_t)bid * RX_BUF, RX_BUF,
			      (unsigned short)bid, io_uring_buf_ring_mask(u->nbufs), 0);
	io_uring_buf_ring_advance(u->br, 1);
}

/* An SQE, submitting what is queued if the SQ ring is full. */
static struct io_uring_sqe *get_sqe(struct worker *w, struct uring_engine *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe) {
		int ret = io_uring_submit(&u->ring);
		if (ret < 0)
			worker_fail(w, 1, "io_uring_submit: %s", strerror(-ret));
		sqe = io_uring_get_sqe(&u->ring);
	}
	if (!sqe)
		worker_fail(w, 1, "io_uring: submission queue full");
	return sqe;
}

static void arm_recv(struct worker *w, struct uring_engine *u, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(w, u);
	if (!sqe)
		return;
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
}

/* shutdown() ends the pending multishot recv; its last completions are ignored as dead. The
 * socket is closed by main after the ring is gone, when no operation can still refer to it. */
static void drop(struct worker *w, struct conn *c, int err)
{
	conn_failed(w, c, err);
	if (shutdown(c->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
		worker_fail(w, 1, "shutdown: %s", strerror(errno));
}

/* --reconnect: our FIN, after the connection's last echo and its last send's completion. */
static void half_close(struct worker *w, struct conn *c)
{
	if (shutdown(c->fd, SHUT_WR) < 0)
		drop(w, c, errno);
	else
		conn_closing(c);
}

/* Starts a send if none is in flight: first the rest of a short one, else all that is queued;
 * or, with --reconnect, half-closes a connection that is done. */
static void start_send(struct worker *w, struct uring_engine *u, struct conn *c)
{
	if (conn_close_due(w, c)) {
		half_close(w, c);
		return;
	}
	if (c->dead || c->send_busy || c->phase != CONN_OPEN)
		return;
	if (c->txoff == c->txlen) {
		if (c->sent >= c->queued)
			return;
		c->txlen = (uint32_t)conn_fill(c, c->txbuf, u->txcap);
		c->txoff = 0;
		conn_sent(w, c, c->txlen); /* handed to the kernel: echoes of it may come */
	}
	struct io_uring_sqe *sqe = get_sqe(w, u);
	if (!sqe)
		return;
	io_uring_prep_send(sqe, c->fd, c->txbuf + c->txoff, c->txlen - c->txoff, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
	c->send_busy = true;
}

static void on_send(struct worker *w, struct conn *c, int res)
{
	c->send_busy = false;
	if (c->dead)
		return;
	if (res < 0) {
		drop(w, c, -res);
		return;
	}
	c->txoff += (uint32_t)res;
	if (c->txoff < c->txlen || c->sent < c->queued || conn_close_due(w, c))
		conn_want_send(w, c);
}

/* --reconnect: a new connection on c's slot, its connect submitted. The socket is a blocking
 * one: io_uring polls it for the connect either way, and on a kernel that hands a connect to a
 * worker thread instead, a blocking connect there still reports how it ended. */
static void reopen(struct worker *w, struct uring_engine *u, struct conn *c)
{
	int err;
	int fd = reconnect_socket(w, 0, &err);
	if (fd < 0) {
		conn_connect_failed(w, c, err);
		return;
	}
	conn_connecting(w, c, fd);
	struct io_uring_sqe *sqe = get_sqe(w, u);
	if (!sqe)
		return; /* the run is failing; main closes the socket */
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&w->peer, w->peer_len);
	io_uring_sqe_set_data64(sqe, tag(c, OP_CONNECT));
}

static void on_connect(struct worker *w, struct uring_engine *u, struct conn *c, int res)
{
	if (res < 0) {
		close(c->fd); /* no other operation was started on it */
		conn_connect_failed(w, c, -res);
		return;
	}
	conn_established(w, c);
	arm_recv(w, u, c);
}

/* The server's EOF: after our FIN, the clean end of a --reconnect connection (the EOF ended its
 * recv, and no send is in flight: the socket can go) and then the next; else the server
 * closed on its own, a failed connection. */
static void end_of_stream(struct worker *w, struct uring_engine *u, struct conn *c)
{
	if (!conn_eof(w, c)) {
		drop(w, c, 0);
		return;
	}
	if (conn_cycle_done(w, c))
		reopen(w, u, c);
}

static void on_recv(struct worker *w, struct uring_engine *u, struct conn *c,
		    const struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (res > 0 && !c->dead) {
			u->recv_worked = true;
			conn_received(w, c, u->rxbufs + (size_t)bid * RX_BUF, (size_t)res);
		}
		recycle(u, bid);
	}
	if (c->dead)
		return;
	if (res > 0 || res == -ENOBUFS) { /* ENOBUFS: all buffers were busy; they are back now */
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_recv(w, u, c);
	} else if (res == 0) {
		end_of_stream(w, u, c);
	} else if (res == -EINVAL && !u->recv_worked) {
		worker_fail(w, EXIT_UNAVAILABLE,
			    "io_uring multishot recv is not supported here (needs Linux 6.0)");
	} else {
		drop(w, c, -res);
	}
}

static void send_marked(struct worker *w, void *u, struct conn *c)
{
	start_send(w, u, c);
}

static void reap(struct worker *w, struct uring_engine *u)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;
	io_uring_for_each_cqe(&u->ring, head, cqe) {
		struct conn *c = &w->conns[(cqe->user_data >> 8) & TAG_INDEX_MASK];
		int op = (int)(cqe->user_data & 0xff);
		seen++;
		if (!tag_current(c, cqe->user_data)) { /* an earlier connection's: its buffer back */
			if (cqe->flags & IORING_CQE_F_BUFFER)
				recycle(u, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
			continue;
		}
		if (op == OP_RECV)
			on_recv(w, u, c, cqe);
		else if (op == OP_SEND)
			on_send(w, c, cqe->res);
		else
			on_connect(w, u, c, cqe->res);
	}
	io_uring_cq_advance(&u->ring, seen);
}

static unsigned pow2_at_least(unsigned n)
{
	unsigned p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

static int engine_init(struct worker *w, struct uring_engine *u)
{
	unsigned entries = pow2_at_least(2 * w->nconns + 16);
	if (entries > 4096)
		entries = 4096;
	int ret = ring_init(&u->ring, entries);
	if (ret < 0) {
		worker_fail(w, EXIT_UNAVAILABLE, "io_uring is not available here: %s",
			    strerror(-ret));
		return -1;
	}
	u->ring_ok = true;
	unsigned nbufs = pow2_at_least(2 * w->nconns);
	nbufs = nbufs < 256 ? 256 : nbufs > 2048 ? 2048 : nbufs;
	ret = bufring_register(u, nbufs);
	if (ret == 0)
		ret = bufring_fill(u);
	if (ret < 0) {
		worker_fail(w, ret == -ENOMEM ? 1 : EXIT_UNAVAILABLE,
			    "io_uring provided buffer ring: %s", strerror(-ret));
		return -1;
	}
	uint64_t want = (uint64_t)w->opt->size * w->opt->depth;
	u->txcap = want < TX_MAX ? (size_t)want : TX_MAX;
	for (uint32_t i = 0; i < w->nconns; i++) {
		w->conns[i].txbuf = malloc(u->txcap);
		if (!w->conns[i].txbuf) {
			worker_fail(w, 1, "out of memory");
			return -1;
		}
		arm_recv(w, u, &w->conns[i]);
	}
	return w->status ? -1 : 0;
}

static void engine_fini(struct worker *w, struct uring_engine *u)
{
	if (u->ring_ok)
		io_uring_queue_exit(&u->ring); /* cancels what is in flight */
	if (u->br)
		munmap(u->br, u->br_len);
	free(u->rxbufs);
	for (uint32_t i = 0; i < w->nconns; i++) {
		free(w->conns[i].txbuf);
		w->conns[i].txbuf = NULL;
	}
}

int uring_run(struct worker *w)
{
	struct uring_engine u;
	memset(&u, 0, sizeof(u));
	if (engine_init(w, &u) == 0) {
		worker_wait_start(w);
		for (;;) {
			worker_clock(w);
			int64_t wait = worker_step(w);
			if (wait < 0)
				break;
			worker_flush_dirty(w, send_marked, &u);
			struct __kernel_timespec ts = { .tv_sec = wait / (int64_t)NS_PER_S,
							.tv_nsec = wait % (int64_t)NS_PER_S };
			struct io_uring_cqe *cqe;
			int ret = io_uring_submit_and_wait_timeout(&u.ring, &cqe, 1, &ts, NULL);
			if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY) {
				worker_fail(w, 1, "io_uring_submit_and_wait: %s", strerror(-ret));
				break;
			}
			worker_clock(w);
			reap(w, &u);
		}
	}
	engine_fini(w, &u);
	return w->status;
}

/* --- the probe, before connecting ---------------------------------------------------------- */

/* A multishot recv on a socket pair must deliver a byte into a provided buffer and stay armed. */
static int probe_multishot(struct uring_engine *u, char *why, size_t len)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(why, len, "socketpair: %s", strerror(errno));
		return -1;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe) {
		snprintf(why, len, "io_uring: no submission queue entry");
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	int rc = -1;
	struct io_uring_cqe *cqe = NULL;
	struct __kernel_timespec ts = { .tv_sec = 1 };
	if (write(sv[1], "x", 1) != 1) {
		snprintf(why, len, "write: %s", strerror(errno));
	} else if (io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL) < 0 || !cqe) {
		snprintf(why, len, "io_uring multishot recv did not complete");
	} else if (cqe->res != 1 || !(cqe->flags & IORING_CQE_F_MORE)) {
		snprintf(why, len,
			 "io_uring multishot recv is not supported here (needs Linux 6.0)%s%s",
			 cqe->res < 0 ? ": " : "", cqe->res < 0 ? strerror(-cqe->res) : "");
	} else {
		rc = 0;
	}
	close(sv[0]);
	close(sv[1]);
	return rc;
}

int uring_probe(char *why, size_t len)
{
	struct uring_engine u;
	memset(&u, 0, sizeof(u));
	int ret = io_uring_queue_init(8, &u.ring, 0);
	if (ret < 0) {
		snprintf(why, len, "io_uring is not available here: %s", strerror(-ret));
		return -1;
	}
	int rc = -1;
	struct io_uring_probe *p = io_uring_get_probe_ring(&u.ring);
	if (!p || !io_uring_opcode_supported(p, IORING_OP_SEND) ||
	    !io_uring_opcode_supported(p, IORING_OP_RECV)) {
		snprintf(why, len, "io_uring here cannot send and recv (needs Linux 5.6)");
	} else if ((ret = bufring_register(&u, 1)) < 0) {
		snprintf(why, len, "io_uring provided buffer rings are not supported here "
			 "(needs Linux 5.19): %s", strerror(-ret));
	} else {
		static uint8_t one[64];
		io_uring_buf_ring_add(u.br, one, sizeof(one), 0, io_uring_buf_ring_mask(1), 0);
		io_uring_buf_ring_advance(u.br, 1);
		rc = probe_multishot(&u, why, len);
	}
	if (p)
		io_uring_free_probe(p);
	io_uring_queue_exit(&u.ring);
	if (u.br)
		munmap(u.br, u.br_len);
	return rc;
}
