/* uring_poll.c - readiness backend on io_uring: IORING_OP_POLL_ADD says when an fd is ready,
 * and accept/recv/send/read are plain syscalls, exactly as backends/epoll.c performs them
 * (optimistic send, one pool buffer per recv, -ENOBUFS final when the pool is dry, EOF final).
 * It exists to split the comparison: epoll vs uring-poll measures io_uring's batching (one
 * enter per iteration that also carries every poll change), uring-poll vs uring measures
 * completion against readiness. Ring set-up is shared with uring.c (uring_common.h).
 *
 * Each fd has at most one read-side op (accept, recv, read) and one write-side op (send), and
 * one poll request per side while that side is armed: a multishot POLLIN poll for the read
 * side, added when the op is submitted and removed when it is final; a one-shot POLLOUT poll
 * for a send that met EAGAIN. A steady echo costs one recv and one send per message and no
 * poll SQE at all: the multishot poll stays armed.
 *
 * user_data of a poll = generation << 32 | fd << 2 | side. A slot remembers the user_data of
 * the poll it has armed on each side, and a CQE that does not match it exactly is stale (a poll
 * already removed, or one from the previous user of a reused fd number: generations only ever
 * grow, also across forget_fd). Removals carry UD_IGNORE.
 *
 * Traps of this interface, handled here:
 *  - A multishot poll is edge-triggered: it posts when the socket is woken (data arrived), not
 *    while it stays readable, and IORING_POLL_ADD_LEVEL is refused for multishot (EINVAL).
 *    Level-ish behaviour is rebuilt on top: a new poll is checked against the fd's current
 *    state when it is armed, and after a recv that filled its buffer (or an accept batch that
 *    did not reach EAGAIN) the fd goes on a retry list served in the next iteration, whose wait
 *    then does not block. An fd that was drained needs nothing: new bytes wake the poll again.
 *    But a short read does not prove the end: the peer's FIN may sit behind the bytes with no
 *    wake-up of its own to come. The poll asks for POLLRDHUP, and once it has been reported the
 *    fd keeps being retried until the recv returns EOF or an error.
 *  - A multishot poll can end (no F_MORE) while wanted, e.g. on CQ overflow: re-armed at once.
 *  - A poll request holds a reference to the file: close() alone would not end it nor free the
 *    socket. Polls are removed when their side goes final, and forget_fd removes any left.
 *  - Nothing watches an fd with no armed op: a hung-up peer of a paused connection cannot spin
 *    the loop, and a dry pool ends the recv (-ENOBUFS) and its poll.
 *  - A stale readiness (fd closed and reused within one batch) costs one EAGAIN, never a byte:
 *    every operation tolerates EAGAIN, and the generation check drops most of them anyway.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor.h"
#include "uring_common.h"

#define ACCEPT_BATCH 64
#define SIDE_RD 1u
#define SIDE_WR 2u
#define UD_IGNORE 3u

struct up_slot {
	struct op *rd;     /* accept, recv or read */
	struct op *wr;     /* send */
	uint64_t rd_ud;    /* user_data of the armed POLLIN poll, 0: none */
	uint64_t wr_ud;    /* user_data of the armed POLLOUT poll, 0: none */
	uint32_t gen;      /* never reset */
	bool retry;        /* on the retry list */
	bool hup;          /* the peer's FIN (or an error) is waiting behind the bytes */
};

struct up_state {
	struct uc uc;
	struct loop *loop;
	struct up_slot *slots;
	int nslots;
	int *retry, *running; /* fds whose read side must be tried again; each holds nslots */
	int nretry;
};

static struct up_slot *slot_of(struct up_state *st, int fd)
{
	if (fd < 0 || fd >= (1 << 30))
		return NULL;
	if (fd >= st->nslots) {
		int n = st->nslots ? st->nslots : 1024;
		while (n <= fd)
			n *= 2;
		struct up_slot *s = realloc(st->slots, sizeof(*s) * (size_t)n);
		if (!s)
			return NULL;
		st->slots = s;
		int *r = realloc(st->retry, sizeof(int) * (size_t)n);
		if (!r)
			return NULL;
		st->retry = r;
		r = realloc(st->running, sizeof(int) * (size_t)n);
		if (!r)
			return NULL;
		st->running = r;
		memset(s + st->nslots, 0, sizeof(*s) * (size_t)(n - st->nslots));
		st->nslots = n;
	}
	return &st->slots[fd];
}

static int arm_poll(struct up_state *st, int fd, unsigned side)
{
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe)
		return -EBUSY;
	struct up_slot *s = &st->slots[fd];
	uint64_t ud = (uint64_t)++s->gen << 32 | (uint64_t)fd << 2 | side;
	if (side == SIDE_RD) {
		io_uring_prep_poll_multishot(sqe, fd, POLLIN | POLLRDHUP);
		s->rd_ud = ud;
		s->hup = false;
	} else {
		io_uring_prep_poll_add(sqe, fd, POLLOUT);
		s->wr_ud = ud;
	}
	sqe->user_data = ud;
	return 0;
}

static void disarm_poll(struct up_state *st, uint64_t *ud)
{
	if (!*ud)
		return;
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (sqe) {
		io_uring_prep_poll_remove(sqe, *ud);
		sqe->user_data = UD_IGNORE;
		sqe->flags |= (uint8_t)st->uc.sqe_flags_ignored;
	}
	*ud = 0; /* from now on its CQEs are stale */
}

static void want_retry(struct up_state *st, int fd)
{
	struct up_slot *s = &st->slots[fd];
	if (s->rd && !s->retry) {
		s->retry = true;
		st->retry[st->nretry++] = fd;
	}
}

static void up_fini(struct loop *loop)
{
	struct up_state *st = loop->be_state;
	if (!st)
		return;
	uc_fini(&st->uc);
	free(st->slots);
	free(st->retry);
	free(st->running);
	free(st);
	loop->be_state = NULL;
}

static int up_init(struct loop *loop, const struct loop_config *cfg)
{
	struct up_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	int rc = uc_init(&st->uc, cfg->queue_depth);
	if (rc < 0) {
		free(st);
		return rc;
	}
	st->loop = loop;
	loop->be_state = st;
	if (!slot_of(st, 1023)) {
		up_fini(loop);
		return -ENOMEM;
	}
	return 0;
}

/* Returns bytes sent, -errno, or -EAGAIN when the socket is full (EINTR folds into that). */
static int send_now(struct op *op)
{
	ssize_t n = send(op->fd, op->buf.base, op->buf.len, MSG_NOSIGNAL);
	if (n >= 0)
		return (int)n;
	return errno == EINTR ? -EAGAIN : -errno;
}

static int up_submit(struct loop *loop, struct op *op)
{
	struct up_state *st = loop->be_state;
	struct up_slot *s = slot_of(st, op->fd);
	if (!s)
		return op->fd < 0 ? -EBADF : -ENOMEM;
	if (op->code == OP_SEND) {
		if (s->wr)
			return -EBUSY; /* one send in flight per fd (reactor.h) */
		/* Optimistic: most sends complete at once and never touch the ring. */
		int res = send_now(op);
		if (res != -EAGAIN) {
			loop_defer(loop, op, res, 0);
			return 0;
		}
		int rc = arm_poll(st, op->fd, SIDE_WR);
		if (rc < 0)
			return rc;
		st->slots[op->fd].wr = op;
		return 0;
	}
	if (s->rd)
		return -EBUSY;
	/* The new poll looks at the fd's state when armed: bytes already waiting are seen. */
	int rc = arm_poll(st, op->fd, SIDE_RD);
	if (rc < 0)
		return rc;
	st->slots[op->fd].rd = op;
	return 0;
}

static int up_cancel(struct loop *loop, struct op *op)
{
	struct up_state *st = loop->be_state;
	if (op->fd < 0 || op->fd >= st->nslots)
		return 0;
	struct up_slot *s = &st->slots[op->fd];
	if (s->rd == op) {
		s->rd = NULL;
		disarm_poll(st, &s->rd_ud);
	} else if (s->wr == op) {
		s->wr = NULL;
		disarm_poll(st, &s->wr_ud);
	} else {
		return 0; /* its final completion is already queued */
	}
	loop_defer(loop, op, -ECANCELED, 0);
	return 0;
}

/* The read side finished for good: drop its poll before the callback, which may re-arm. */
static void finish_read(struct up_state *st, int fd, int res)
{
	struct up_slot *s = &st->slots[fd];
	struct op *op = s->rd;
	s->rd = NULL;
	disarm_poll(st, &s->rd_ud);
	loop_complete(st->loop, op, res, 0);
}

/* Slots are looked up again after every callback: one may accept an fd that grows the table,
 * cancel this op, or close the fd and submit on a new one with the same number. */
static void do_accept(struct up_state *st, int fd, struct op *op)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		if (st->slots[fd].rd != op)
			return;
		int nfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (nfd >= 0) {
			loop_complete(st->loop, op, nfd, OPF_MORE);
			continue;
		}
		if (errno == EAGAIN)
			return;
		if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
			continue;
		finish_read(st, fd, -errno);
		return;
	}
	want_retry(st, fd); /* the batch ended before EAGAIN: no new wake-up will say so */
}

static void do_recv(struct up_state *st, int fd, struct op *op)
{
	struct bufpool *pool = &st->loop->pool;
	int64_t bid = bufpool_get(pool);
	if (bid < 0) {
		finish_read(st, fd, -ENOBUFS);
		return;
	}
	char *base = bufpool_addr(pool, (uint32_t)bid);
	uint32_t len = op_recv_len(op, pool->bufsize);
	ssize_t n = recv(fd, base, len, 0);
	if (n > 0) {
		op->buf = (struct buf){ .base = base, .len = (uint32_t)n, .bid = (uint32_t)bid };
		loop_complete(st->loop, op, (int)n, OPF_MORE | OPF_BUFFER);
		/* A full buffer: more may be waiting. A FIN behind the bytes: it has no edge of
		 * its own left, so read on until it comes out. */
		if ((uint32_t)n == len || st->slots[fd].hup)
			want_retry(st, fd);
		return;
	}
	bufpool_put(pool, (uint32_t)bid);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n < 0 && errno == EINTR) {
		want_retry(st, fd);
		return;
	}
	finish_read(st, fd, n == 0 ? 0 : -errno);
}

static void do_read(struct up_state *st, int fd, struct op *op)
{
	ssize_t n = read(fd, op->buf.base, op->buf.len);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n < 0 && errno == EINTR) {
		want_retry(st, fd);
		return;
	}
	finish_read(st, fd, n >= 0 ? (int)n : -errno);
}

static void read_ready(struct up_state *st, int fd)
{
	struct op *op = st->slots[fd].rd;
	if (!op)
		return;
	if (op->code == OP_ACCEPT)
		do_accept(st, fd, op);
	else if (op->code == OP_RECV)
		do_recv(st, fd, op);
	else
		do_read(st, fd, op);
}

static void do_send(struct up_state *st, int fd)
{
	struct up_slot *s = &st->slots[fd];
	struct op *op = s->wr;
	int res = send_now(op);
	if (res == -EAGAIN) {
		res = arm_poll(st, fd, SIDE_WR);
		if (res == 0)
			return;
	}
	s->wr = NULL;
	loop_complete(st->loop, op, res, 0);
}

static void on_cqe(void *ctx, uint64_t ud, int res, unsigned flags)
{
	struct up_state *st = ctx;
	unsigned side = ud & 3u;
	int fd = (int)((ud >> 2) & 0x3fffffffu);
	if (side == UD_IGNORE || side == 0 || fd >= st->nslots)
		return;
	struct up_slot *s = &st->slots[fd];
	if (side == SIDE_WR) {
		if (ud != s->wr_ud)
			return;
		s->wr_ud = 0; /* one-shot */
		if (!s->wr)
			return;
		if (res < 0) {
			struct op *op = s->wr;
			s->wr = NULL;
			loop_complete(st->loop, op, res, 0);
			return;
		}
		do_send(st, fd);
		return;
	}
	if (ud != s->rd_ud)
		return;
	if (!(flags & IORING_CQE_F_MORE))
		s->rd_ud = 0; /* the poll ended */
	if (!s->rd)
		return;
	if (res < 0) {
		finish_read(st, fd, res);
		return;
	}
	if (res & (POLLRDHUP | POLLHUP | POLLERR))
		s->hup = true;
	read_ready(st, fd);
	s = &st->slots[fd];
	if (s->rd && !s->rd_ud && arm_poll(st, fd, SIDE_RD) < 0)
		finish_read(st, fd, -EBUSY);
}

static int up_wait(struct loop *loop, int timeout_ms)
{
	struct up_state *st = loop->be_state;
	int nrun = st->nretry;
	if (nrun) {
		/* Swap lists: fds that want yet another try go to the next iteration. */
		int *run = st->retry;
		st->retry = st->running;
		st->running = run;
		st->nretry = 0;
		timeout_ms = 0;
	}
	int rc = uc_wait(&st->uc, timeout_ms, on_cqe, st);
	if (rc < 0 && rc != -EINTR)
		return rc;
	for (int i = 0; i < nrun; i++) {
		int fd = st->running[i];
		st->slots[fd].retry = false;
		read_ready(st, fd);
	}
	return rc;
}

static void up_buf_release(struct loop *loop, uint32_t bid)
{
	bufpool_put(&loop->pool, bid);
}

static void up_forget_fd(struct loop *loop, int fd)
{
	struct up_state *st = loop->be_state;
	if (fd < 0 || fd >= st->nslots)
		return;
	struct up_slot *s = &st->slots[fd];
	disarm_poll(st, &s->rd_ud);
	disarm_poll(st, &s->wr_ud);
	s->rd = s->wr = NULL; /* gen and the retry mark stay: stale CQEs and list entries */
	s->hup = false;
}

const struct backend backend_uring_poll = {
	.name = "uring-poll",
	.summary = "readiness through io_uring (multishot POLL_ADD), syscalls like epoll, "
		   "one enter per wake-up",
	.caps = 0,
	.pref = 70,
	.init = up_init,
	.fini = up_fini,
	.submit = up_submit,
	.cancel = up_cancel,
	.wait = up_wait,
	.buf_release = up_buf_release,
	.forget_fd = up_forget_fd,
};
