/* readiness.c - completion emulated on readiness, once for select, poll, epoll and uring-poll
 * (see readiness.h). The traps every readiness backend shares, handled here:
 *  - Callbacks run inside these functions and may do anything: re-arm, cancel, close the fd
 *    and reuse its number, accept an fd that grows the slot table. So nothing holds a slot
 *    pointer across a callback, and an op is looked up afresh after each one.
 *  - A readiness report may be stale (its fd closed and the number reused within one batch):
 *    every syscall here tolerates EAGAIN, so that costs one syscall, never a byte.
 *  - A side whose op went away while the kernel still watches it (a sync that failed) would
 *    wake the loop for nothing, forever, on a level-triggered kernel: the next such wake-up
 *    syncs the fd again.
 *  - Accept errors follow loop_accept_error_transient(): a connection that died in the queue
 *    or was refused by policy is skipped and accepting goes on; anything else (out of fds or
 *    memory) ends the accept and the core backs off.
 *  - recvmmsg() takes a whole batch out of the socket before the first callback runs. A
 *    callback that cancels the recvmsg (or closes the fd) mid-batch leaves datagrams already
 *    read: they are dropped, as a full socket buffer would have, and their buffers go back.
 *  - sendmmsg() that sends k < n returns k and loses the error of message k + 1: the next call
 *    starts at that message and reports it. EINTR sends the same batch again, a few times (a
 *    send that may not block has nowhere to be interrupted: rare, and not worth a datagram).
 *    A full buffer (EAGAIN, ENOBUFS) fails the rest of the fd's queue at once, with -EAGAIN:
 *    waiting would need write interest, and UDP replies are droppable. Any other error
 *    (ECONNREFUSED from an ICMP on a connected socket, EPERM from a firewall, EINVAL,
 *    EMSGSIZE) is that datagram's alone: the next one is tried.
 */
#include "readiness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
#define RD_INITIAL_SLOTS 256
#define RECV_MAX_BUFS 4   /* pool buffers one recvmsg() may fill (see do_recv) */
/* Datagrams per recvmmsg() (if the pool has that many free) and per sendmmsg(). Overridable
 * at build time (-DRECVMMSG_BATCH=N) to measure them: bench/RESULTS.md, UDP batch sizes. */
#ifndef RECVMMSG_BATCH
#define RECVMMSG_BATCH 32
#endif
#define SENDMMSG_EINTR_TRIES 4
#ifndef SENDMMSG_BATCH
#define SENDMMSG_BATCH 32
#endif

static __attribute__((noinline)) struct rd_slot *slot_grow(struct readiness *r, int fd)
{
	if (fd >= (1 << 30))
		return NULL;
	int n = r->nslots ? r->nslots : RD_INITIAL_SLOTS;
	while (n <= fd)
		n *= 2;
	struct rd_slot *s = realloc(r->slots, sizeof(*s) * (size_t)n);
	if (!s)
		return NULL;
	memset(s + r->nslots, 0, sizeof(*s) * (size_t)(n - r->nslots));
	r->slots = s;
	if (r->edge) {
		int *a = realloc(r->retry, sizeof(int) * (size_t)n);
		if (!a)
			return NULL; /* slots grew, nslots did not: harmless, tried again next time */
		r->retry = a;
		a = realloc(r->running, sizeof(int) * (size_t)n);
		if (!a)
			return NULL;
		r->running = a;
	}
	r->nslots = n;
	return &r->slots[fd];
}

static inline struct rd_slot *slot_of(struct readiness *r, int fd)
{
	return fd < r->nslots ? &r->slots[fd] : slot_grow(r, fd);
}

int rd_init(struct readiness *r, struct loop *loop, rd_sync_fn sync, int max_fd, bool edge)
{
	memset(r, 0, sizeof(*r));
	r->loop = loop;
	r->sync = sync;
	r->max_fd = max_fd ? max_fd : INT_MAX;
	r->edge = edge;
	return slot_of(r, RD_INITIAL_SLOTS - 1) ? 0 : -ENOMEM;
}

void rd_fini(struct readiness *r)
{
	free(r->slots);
	free(r->retry);
	free(r->running);
	free(r->sendq_fds);
	memset(r, 0, sizeof(*r));
}

static void want_retry(struct readiness *r, int fd)
{
	struct rd_slot *s = &r->slots[fd];
	if (s->rd && !s->retry) {
		s->retry = true;
		r->retry[r->nretry++] = fd;
	}
}

/* A gathered send: one sendmsg over an iovec built afresh at each try (the runs are the
 * caller's, reactor.h). Kept out of line: most sends have one run. */
static __attribute__((noinline)) ssize_t send_runs(struct loop *loop, const struct op *op)
{
	struct iovec iov[LOOP_SEND_MAX_SEGS];
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = op_send_iovec(op, iov) };
	loop_count(loop, SC_SENDMSG);
	return sendmsg(op->fd, &m, MSG_NOSIGNAL);
}

/* Returns bytes sent, -errno, or -EAGAIN when the socket is full (EINTR folds into that). */
static inline int send_now(struct loop *loop, const struct op *op)
{
	ssize_t n;
	if (op->nsegs > 1) {
		n = send_runs(loop, op);
	} else {
		struct buf b = op_send_head(op);
		loop_count(loop, SC_SEND);
		n = send(op->fd, b.base, b.len, MSG_NOSIGNAL);
	}
	if (n >= 0)
		return (int)n;
	return errno == EINTR ? -EAGAIN : -errno;
}

/* --- the sendmsg queue (see readiness.h) ---------------------------------------------------- */

static inline struct op *sq_next(const struct op *op)
{
	return (struct op *)(uintptr_t)op->backend_data;
}

static int sq_push(struct readiness *r, int fd, struct op *op)
{
	struct rd_slot *s = &r->slots[fd];
	if (!s->sq_listed) {
		if (r->nsendq == r->sendq_cap) {
			int cap = r->sendq_cap ? r->sendq_cap * 2 : 64;
			int *a = realloc(r->sendq_fds, sizeof(int) * (size_t)cap);
			if (!a)
				return -ENOMEM;
			r->sendq_fds = a;
			r->sendq_cap = cap;
		}
		r->sendq_fds[r->nsendq++] = fd;
		s->sq_listed = true;
	}
	op->backend_data = 0;
	if (s->sq_tail)
		s->sq_tail->backend_data = (uint64_t)(uintptr_t)op;
	else
		s->sq_head = op;
	s->sq_tail = op;
	return 0;
}

/* Finish every op of a detached queue with res. Returns how many. */
static int sq_fail(struct loop *loop, struct op *op, int res)
{
	int n = 0;
	while (op) {
		struct op *next = sq_next(op);
		loop_defer(loop, op, res, 0);
		op = next;
		n++;
	}
	return n;
}

/* Send fd's whole queue, in order, with sendmmsg(); every completion deferred (no callback
 * runs here, so nothing changes the queue or the slots under us). Returns completions. */
static int sq_send(struct readiness *r, int fd)
{
	struct loop *loop = r->loop;
	struct rd_slot *s = &r->slots[fd];
	struct op *rest = s->sq_head;
	s->sq_head = s->sq_tail = NULL;
	struct mmsghdr v[SENDMMSG_BATCH];
	struct op *ops[SENDMMSG_BATCH];
	int n = 0, done = 0, eintr = 0;
	while (rest || n) {
		while (rest && n < SENDMMSG_BATCH) {
			ops[n] = rest;
			v[n].msg_hdr = *rest->msg;
			v[n].msg_len = 0;
			rest = sq_next(rest);
			n++;
		}
		loop_count(loop, SC_SENDMMSG);
		/* MSG_DONTWAIT: never block, whatever the fd's flags (reactor.h: never waits). */
		int k = sendmmsg(fd, v, (unsigned)n, MSG_NOSIGNAL | MSG_DONTWAIT);
		int err = k < 0 ? errno : EAGAIN; /* 0 is not expected with n > 0: never loop on it */
		if (err == EINTR && k < 0 && ++eintr < SENDMMSG_EINTR_TRIES)
			continue;
		if (k > 0) {
			for (int i = 0; i < k; i++)
				loop_defer(loop, ops[i], (int)v[i].msg_len, 0);
			done += k;
			n -= k;
			memmove(ops, ops + k, sizeof(ops[0]) * (size_t)n);
			memmove(v, v + k, sizeof(v[0]) * (size_t)n);
			continue;
		}
		/* Message ops[0] failed. A full buffer drops the rest of this fd's queue now
		 * rather than wait; a closed fd fails them all; any other error is that
		 * datagram's own, and the next one is tried. Completions stay in queue order. */
		bool whole = true;
		if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR)
			err = EAGAIN;
		else if (err != EBADF && err != ENOTSOCK)
			whole = false;
		int fail = whole ? n : 1;
		for (int i = 0; i < fail; i++)
			loop_defer(loop, ops[i], -err, 0);
		done += fail;
		n -= fail;
		memmove(ops, ops + fail, sizeof(ops[0]) * (size_t)n);
		memmove(v, v + fail, sizeof(v[0]) * (size_t)n);
		if (whole) {
			done += sq_fail(loop, rest, -err);
			rest = NULL;
		}
	}
	return done;
}

int rd_sends_flush_slow(struct readiness *r, int timeout_ms)
{
	int done = 0;
	for (int i = 0; i < r->nsendq; i++) {
		int fd = r->sendq_fds[i];
		r->slots[fd].sq_listed = false;
		if (r->slots[fd].sq_head)
			done += sq_send(r, fd);
	}
	r->nsendq = 0;
	return done ? 0 : timeout_ms; /* the completions run before the loop may sleep */
}

int rd_submit(struct loop *loop, struct op *op)
{
	struct readiness *r = rd_of(loop);
	if ((unsigned)op->fd >= (unsigned)r->max_fd)
		/* the core refuses such fds first (BACKEND_CAP_FD_LIMIT) */
		return op->fd < 0 ? -EBADF : -EMFILE;
	struct rd_slot *s = slot_of(r, op->fd);
	if (!s)
		return -ENOMEM;
	if (op->code == OP_SENDMSG)
		return op->msg ? sq_push(r, op->fd, op) : -EINVAL; /* leaves at the next flush */
	if (op->code == OP_RECVMSG && (!op->msg || !loop->dgram_pool.nbufs))
		return -EINVAL; /* reactor.h: needs a msghdr and a datagram pool */
	struct op **side = op->code == OP_SEND ? &s->wr : &s->rd;
	if (*side)
		return -EBUSY; /* one op per side (reactor.h: one send in flight per fd) */
	if (op->code == OP_SEND) {
		/* Optimistic: most sends complete at once and never touch the kernel's interest. */
		int res = send_now(loop, op);
		if (res != -EAGAIN) {
			loop_defer(loop, op, res, 0);
			return 0;
		}
	}
	*side = op;
	int rc = r->sync(r, op->fd);
	if (rc < 0)
		*side = NULL;
	return rc;
}

int rd_cancel(struct loop *loop, struct op *op)
{
	struct readiness *r = rd_of(loop);
	if (op->fd < 0 || op->fd >= r->nslots)
		return 0; /* never armed here */
	struct rd_slot *s = &r->slots[op->fd];
	if (op->code == OP_SENDMSG) {
		/* Still queued (not yet flushed): take it out; else its completion is deferred. */
		struct op *prev = NULL;
		for (struct op *q = s->sq_head; q; prev = q, q = sq_next(q)) {
			if (q != op)
				continue;
			if (prev)
				prev->backend_data = op->backend_data;
			else
				s->sq_head = sq_next(op);
			if (s->sq_tail == op)
				s->sq_tail = prev;
			loop_defer(loop, op, -ECANCELED, 0);
			break;
		}
		return 0;
	}
	if (s->rd == op)
		s->rd = NULL;
	else if (s->wr == op)
		s->wr = NULL;
	else
		return 0; /* its final completion is already queued */
	(void)r->sync(r, op->fd); /* a failure is repaired by the next wake-up (top of file) */
	loop_defer(loop, op, -ECANCELED, 0);
	return 0;
}

void rd_forget_fd(struct loop *loop, int fd)
{
	struct readiness *r = rd_of(loop);
	if (fd < 0 || fd >= r->nslots)
		return;
	struct rd_slot *s = &r->slots[fd];
	if (s->sq_head)
		(void)sq_send(r, fd); /* still open: queued datagrams leave, as io_uring's would */
	s->rd = s->wr = NULL;
	s->hup = s->hungry = false; /* k_gen and the retry mark stay: stale reports and list entries */
	(void)r->sync(r, fd); /* before the close: a closed fd cannot be unwatched any more */
}

void rd_buf_release(struct loop *loop, uint32_t bid)
{
	if (bid & LOOP_DGRAM_BID)
		bufpool_put(&loop->dgram_pool, bid & ~LOOP_DGRAM_BID);
	else
		bufpool_put(&loop->pool, bid);
}

/* A side finished for good: drop its interest before the callback, which may re-arm. */
void rd_finish_read(struct readiness *r, int fd, int res)
{
	struct op *op = r->slots[fd].rd;
	if (!op)
		return;
	r->slots[fd].rd = NULL;
	(void)r->sync(r, fd);
	loop_complete(r->loop, op, res, 0);
}

void rd_finish_write(struct readiness *r, int fd, int res)
{
	struct op *op = r->slots[fd].wr;
	if (!op)
		return;
	r->slots[fd].wr = NULL;
	(void)r->sync(r, fd);
	loop_complete(r->loop, op, res, 0);
}

void rd_fd_closed(struct readiness *r, int fd)
{
	if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
		return; /* reused by a callback in this batch: the report was the old fd's */
	rd_finish_read(r, fd, -EBADF);
	rd_finish_write(r, fd, -EBADF);
	struct rd_slot *s = &r->slots[fd]; /* afresh: the callbacks ran */
	struct op *q = s->sq_head;
	s->sq_head = s->sq_tail = NULL;
	(void)sq_fail(r->loop, q, -EBADF);
}

static void do_accept(struct readiness *r, int fd, struct op *op)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		if (r->slots[fd].rd != op)
			return; /* cancelled by a callback */
		loop_count(r->loop, SC_ACCEPT);
		int nfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (nfd >= 0) {
			loop_complete(r->loop, op, nfd, OPF_MORE);
			continue;
		}
		int err = errno;
		if (err == EAGAIN)
			return;
		if (loop_accept_error_transient(err))
			continue;
		rd_finish_read(r, fd, -err);
		return;
	}
	if (r->edge)
		want_retry(r, fd); /* the batch ended before EAGAIN: no new wake-up will say so */
}

/* Give back bids[from..to), top of the pool's stack last, so the warmest stay on top. Leaves
 * errno alone. */
static void bufs_put_back(struct bufpool *pool, const uint32_t *bids, int from, int to)
{
	for (int i = to - 1; i >= from; i--)
		bufpool_put(pool, bids[i]);
}

/* A recv that fails or finds nothing: the buffers go back; EOF and errors end the read side. */
static void recv_none(struct readiness *r, int fd, ssize_t n, int err)
{
	r->slots[fd].hungry = false;
	if (n < 0 && (err == EAGAIN || err == EINTR)) {
		if (err == EINTR && r->edge)
			want_retry(r, fd);
		return;
	}
	rd_finish_read(r, fd, n == 0 ? 0 : -err);
}

/* Edge: a full read may leave more behind, and a FIN behind the bytes has no wake-up of its
 * own left: read on until it comes out. */
static inline void recv_edge(struct readiness *r, int fd, bool full)
{
	if (r->edge && (full || r->slots[fd].hup))
		want_retry(r, fd); /* (only if a read-side op is armed there, whichever) */
}

/* The fd's last recv filled all it was given (a stream with more waiting: pipelining, a bulk
 * sender): one recvmsg into up to RECV_MAX_BUFS pool buffers, each a completion of its own,
 * all but the last with OPF_BATCH, so the core answers the lot with one send. Within the
 * caller's budget, as every recv. */
static __attribute__((noinline)) void do_recv_many(struct readiness *r, int fd, struct op *op)
{
	struct loop *loop = r->loop;
	struct bufpool *pool = &loop->pool;
	uint32_t bids[RECV_MAX_BUFS];
	struct iovec iov[RECV_MAX_BUFS];
	int k = 0;
	uint32_t budget = op->max_bytes ? op->max_bytes : UINT32_MAX, want = 0;
	while (k < RECV_MAX_BUFS && want < budget) {
		int64_t bid = bufpool_get(pool);
		if (bid < 0)
			break;
		uint32_t len = budget - want < pool->bufsize ? budget - want : pool->bufsize;
		bids[k] = (uint32_t)bid;
		iov[k++] = (struct iovec){ bufpool_addr(pool, (uint32_t)bid), len };
		want += len;
	}
	if (k == 0) {
		rd_finish_read(r, fd, -ENOBUFS); /* the core re-arms when buffers return */
		return;
	}
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)k };
	loop_count(loop, SC_RECVMSG);
	ssize_t n = recvmsg(fd, &m, 0);
	if (n <= 0) {
		int err = errno; /* bufs_put_back() leaves it alone */
		bufs_put_back(pool, bids, 0, k);
		recv_none(r, fd, n, err);
		return;
	}
	bool full = (uint32_t)n == want;
	r->slots[fd].hungry = full;
	uint32_t left = (uint32_t)n;
	int i = 0;
	for (; left && r->slots[fd].rd == op; i++) {
		uint32_t len = left < iov[i].iov_len ? left : (uint32_t)iov[i].iov_len;
		left -= len;
		op->buf = (struct buf){ .base = iov[i].iov_base, .len = len, .bid = bids[i] };
		loop_complete(loop, op, (int)len, OPF_MORE | OPF_BUFFER | (left ? OPF_BATCH : 0));
	}
	bufs_put_back(pool, bids, i, k); /* unfilled, or dropped after an abort's cancel */
	recv_edge(r, fd, full);
}

/* One recv into one pool buffer: the common case. A recv that fills it marks the fd hungry,
 * and the next one takes several (do_recv_many). */
static void do_recv(struct readiness *r, int fd, struct op *op)
{
	if (r->slots[fd].hungry) {
		do_recv_many(r, fd, op);
		return;
	}
	struct bufpool *pool = &r->loop->pool;
	int64_t bid = bufpool_get(pool);
	if (bid < 0) {
		rd_finish_read(r, fd, -ENOBUFS); /* the core re-arms when buffers return */
		return;
	}
	char *base = bufpool_addr(pool, (uint32_t)bid);
	uint32_t len = op_recv_len(op, pool->bufsize);
	loop_count(r->loop, SC_RECV);
	ssize_t n = recv(fd, base, len, 0);
	if (n > 0) {
		bool full = (uint32_t)n == len;
		r->slots[fd].hungry = full;
		op->buf = (struct buf){ .base = base, .len = (uint32_t)n, .bid = (uint32_t)bid };
		loop_complete(r->loop, op, (int)n, OPF_MORE | OPF_BUFFER);
		recv_edge(r, fd, full);
		return;
	}
	int err = errno; /* bufpool_put() leaves it alone */
	bufpool_put(pool, (uint32_t)bid);
	recv_none(r, fd, n, err);
}

/* One recvmmsg() batch, one completion per datagram (see the traps at the top). */
static void do_recvmsg(struct readiness *r, int fd, struct op *op)
{
	struct loop *loop = r->loop;
	struct bufpool *pool = &loop->dgram_pool;
	int n = pool->nfree < RECVMMSG_BATCH ? (int)pool->nfree : RECVMMSG_BATCH;
	if (n == 0) {
		rd_finish_read(r, fd, -ENOBUFS); /* the core re-arms when buffers return */
		return;
	}
	uint32_t bids[RECVMMSG_BATCH];
	struct mmsghdr v[RECVMMSG_BATCH];
	struct iovec iov[RECVMMSG_BATCH];
	struct sockaddr_storage names[RECVMMSG_BATCH];
	for (int i = 0; i < n; i++) {
		bids[i] = (uint32_t)bufpool_get(pool);
		iov[i] = (struct iovec){ bufpool_addr(pool, bids[i]) + LOOP_DGRAM_HEADROOM,
					 pool->bufsize - LOOP_DGRAM_HEADROOM };
		v[i].msg_hdr = (struct msghdr){ .msg_name = &names[i],
						.msg_namelen = sizeof(names[i]),
						.msg_iov = &iov[i],
						.msg_iovlen = 1 };
		v[i].msg_len = 0;
	}
	loop_count(loop, SC_RECVMMSG);
	int got = recvmmsg(fd, v, (unsigned)n, MSG_DONTWAIT, NULL);
	if (got <= 0) {
		int err = got < 0 ? errno : EAGAIN; /* bufs_put_back() leaves errno alone */
		bufs_put_back(pool, bids, 0, n);
		if (err == EAGAIN || err == EINTR) {
			if (err == EINTR && r->edge)
				want_retry(r, fd);
			return;
		}
		rd_finish_read(r, fd, -err);
		return;
	}
	int i = 0;
	for (; i < got && r->slots[fd].rd == op; i++) {
		struct msghdr *m = op->msg;
		socklen_t cap = m->msg_namelen, len = v[i].msg_hdr.msg_namelen;
		memcpy(m->msg_name, &names[i], len < cap ? len : cap);
		m->msg_namelen = len;
		op->buf = (struct buf){ .base = iov[i].iov_base,
					.len = v[i].msg_len,
					.bid = bids[i] | LOOP_DGRAM_BID };
		unsigned fl = OPF_MORE | OPF_BUFFER |
			      (v[i].msg_hdr.msg_flags & MSG_TRUNC ? OPF_TRUNC : 0);
		loop_complete(loop, op, (int)v[i].msg_len, fl);
		m->msg_namelen = cap; /* OPF_MORE: op and msg are still the backend's */
	}
	bufs_put_back(pool, bids, i, n); /* unfilled, or dropped after a cancel */
	/* Edge: a full batch may have left more behind, and no new wake-up will say so. */
	if (r->edge && got == n && i == got)
		want_retry(r, fd);
}

static void do_read(struct readiness *r, int fd, struct op *op)
{
	loop_count(r->loop, SC_READ);
	ssize_t n = read(fd, op->buf.base, op->buf.len);
	int err = errno;
	if (n < 0 && (err == EAGAIN || err == EINTR)) {
		if (err == EINTR && r->edge)
			want_retry(r, fd);
		return;
	}
	rd_finish_read(r, fd, n >= 0 ? (int)n : -err);
}

static void do_send(struct readiness *r, int fd, struct op *op)
{
	int res = send_now(r->loop, op);
	if (res == -EAGAIN) {
		/* Still full: keep waiting (a one-shot write watch is armed again by sync). */
		res = r->sync(r, fd);
		if (res == 0)
			return;
	}
	rd_finish_write(r, fd, res);
}

void rd_read_ready(struct readiness *r, int fd, struct op *op)
{
	if (op->code == OP_RECV)
		do_recv(r, fd, op);
	else if (op->code == OP_RECVMSG)
		do_recvmsg(r, fd, op);
	else if (op->code == OP_ACCEPT)
		do_accept(r, fd, op);
	else
		do_read(r, fd, op);
}

void rd_write_ready(struct readiness *r, int fd, struct op *op)
{
	do_send(r, fd, op);
}

int rd_retries_take(struct readiness *r)
{
	int n = r->nretry;
	if (n) {
		/* Swap lists: fds that want yet another try go to the next iteration. */
		int *run = r->retry;
		r->retry = r->running;
		r->running = run;
		r->nretry = 0;
	}
	return n;
}

void rd_retries_run(struct readiness *r, int n)
{
	for (int i = 0; i < n; i++) {
		int fd = r->running[i]; /* re-read: a callback may have grown (moved) the list */
		r->slots[fd].retry = false;
		if (r->slots[fd].rd)
			rd_ready(r, fd, true, false);
	}
}
