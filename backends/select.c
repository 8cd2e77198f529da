/* select.c - readiness backend on select(2), emulating completion: the portable baseline.
 *
 * Same shape as epoll.c. Each fd has at most one "read side" op (accept, recv or read) and one
 * "write side" op (send); interest is derived from which are armed and kept in two master
 * fd_sets. Every wait copies the masters (select overwrites its arguments), selects on
 * 0..maxfd, then walks the ready bits and handles every ready fd before returning. Sends are
 * optimistic: submit() calls send() at once and sets write interest only on EAGAIN.
 *
 * Traps of this interface, handled here:
 *  - FD_SETSIZE (1024 on glibc). FD_SET/FD_ISSET on an fd >= FD_SETSIZE writes or reads past
 *    the set: undefined behaviour, and glibc's _FORTIFY_SOURCE aborts. submit() refuses such
 *    an fd with -EMFILE before touching any set, cancel/forget_fd ignore it, and the backend
 *    advertises BACKEND_CAP_FD_LIMIT with max_fd = FD_SETSIZE so the core refuses those
 *    connections before it ever submits. accept() may still return such an fd: it is handed
 *    to the core like any other, never put in a set.
 *  - Cost is O(maxfd), not O(ready): the kernel copies and scans (maxfd+1) bits of each set in
 *    and out on every call, and we scan them back. maxfd is an upper bound on the fds with
 *    interest, raised in O(1) on submit; when the top fd leaves, it is lowered lazily (once,
 *    scanning down, at the next wait), so removals stay O(1) and no call scans a dead tail.
 *    The masters themselves are copied whole (2 x 128 bytes): cheaper than being clever.
 *  - select() modifies its sets and, on Linux, its timeout: both are rebuilt on every call,
 *    and after an error nothing is read from them (their content is unspecified then).
 *  - EINTR: returned as -EINTR, which the loop treats as an empty wake-up.
 *  - EBADF: one closed fd left in a set fails the whole call, for every fd, on every call.
 *    loop_close_fd() calls forget_fd first, so it cannot happen through the API; if an fd is
 *    closed behind the loop's back anyway, the dead fds are found with fcntl(F_GETFD) and their
 *    ops finished with -EBADF, rather than the loop dying or spinning.
 *  - No exceptfds: socket errors and hang-ups show as readable/writable and the syscall that
 *    follows reports them (echod does not use out-of-band data, the one "exceptional" case).
 *  - A ready bit may be stale (a callback earlier in the same batch closed the fd and its
 *    number was reused): every operation tolerates EAGAIN, so that costs one syscall, never
 *    a byte. Ops are always looked up afresh in the slot table, never cached across callbacks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor.h"

#define ACCEPT_BATCH 64

struct sel_slot {
	struct op *rd; /* accept, recv or read */
	struct op *wr; /* send */
};

struct select_state {
	fd_set rd_master, wr_master; /* interest: the fds with an armed op on that side */
	fd_set rd_ready, wr_ready;   /* select's copies, overwritten by every call */
	int maxfd;                   /* >= every fd with interest; -1 when none */
	struct sel_slot slots[FD_SETSIZE];
};

static bool has_interest(const struct select_state *st, int fd)
{
	return st->slots[fd].rd || st->slots[fd].wr;
}

/* Make the masters say what slot fd holds. Callers have checked 0 <= fd < FD_SETSIZE. */
static void sync_interest(struct select_state *st, int fd)
{
	const struct sel_slot *s = &st->slots[fd];
	if (s->rd)
		FD_SET(fd, &st->rd_master);
	else
		FD_CLR(fd, &st->rd_master);
	if (s->wr)
		FD_SET(fd, &st->wr_master);
	else
		FD_CLR(fd, &st->wr_master);
	if ((s->rd || s->wr) && fd > st->maxfd)
		st->maxfd = fd;
	/* The top fd leaving is handled lazily by select_wait_once. */
}

static bool watchable(int fd)
{
	return fd >= 0 && fd < FD_SETSIZE;
}

static int select_init(struct loop *loop, const struct loop_config *cfg)
{
	(void)cfg; /* past FD_SETSIZE nothing can be watched; the core warns about the limit */
	struct select_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	FD_ZERO(&st->rd_master);
	FD_ZERO(&st->wr_master);
	st->maxfd = -1;
	loop->be_state = st;
	return 0;
}

static void select_fini(struct loop *loop)
{
	free(loop->be_state);
	loop->be_state = NULL;
}

/* Returns bytes sent, -errno, or -EAGAIN when the socket is full (EINTR folds into that). */
static int send_now(struct op *op)
{
	ssize_t n = send(op->fd, op->buf.base, op->buf.len, MSG_NOSIGNAL);
	if (n >= 0)
		return (int)n;
	return errno == EINTR ? -EAGAIN : -errno;
}

static int select_submit(struct loop *loop, struct op *op)
{
	struct select_state *st = loop->be_state;
	if (op->fd < 0)
		return -EBADF;
	if (op->fd >= FD_SETSIZE)
		return -EMFILE; /* never FD_SET it; the core should have refused the fd already */
	struct sel_slot *s = &st->slots[op->fd];
	if (op->code == OP_SEND) {
		/* Optimistic: most sends complete at once and never touch the sets. */
		int res = send_now(op);
		if (res != -EAGAIN) {
			loop_defer(loop, op, res, 0);
			return 0;
		}
		s->wr = op;
	} else {
		s->rd = op;
	}
	sync_interest(st, op->fd);
	return 0;
}

static int select_cancel(struct loop *loop, struct op *op)
{
	struct select_state *st = loop->be_state;
	if (!watchable(op->fd))
		return 0; /* submit refused it: never armed here */
	struct sel_slot *s = &st->slots[op->fd];
	if (s->rd == op)
		s->rd = NULL;
	else if (s->wr == op)
		s->wr = NULL;
	else
		return 0; /* its final completion is already queued */
	sync_interest(st, op->fd);
	loop_defer(loop, op, -ECANCELED, 0);
	return 0;
}

/* The read side finished for good: drop interest before the callback, which may re-arm. */
static void finish_read(struct loop *loop, struct op *op, int res, unsigned fl)
{
	struct select_state *st = loop->be_state;
	st->slots[op->fd].rd = NULL;
	sync_interest(st, op->fd);
	loop_complete(loop, op, res, fl);
}

static void do_send(struct loop *loop, struct op *op)
{
	int res = send_now(op);
	if (res == -EAGAIN)
		return;
	struct select_state *st = loop->be_state;
	st->slots[op->fd].wr = NULL;
	sync_interest(st, op->fd);
	loop_complete(loop, op, res, 0);
}

static void do_accept(struct loop *loop, struct op *op)
{
	struct select_state *st = loop->be_state;
	for (int i = 0; i < ACCEPT_BATCH && st->slots[op->fd].rd == op && !op->cancelling; i++) {
		int fd = accept4(op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			loop_complete(loop, op, fd, OPF_MORE);
			continue;
		}
		if (errno == EAGAIN)
			return;
		if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
			continue;
		finish_read(loop, op, -errno, 0);
		return;
	}
}

static void do_recv(struct loop *loop, struct op *op)
{
	int64_t bid = bufpool_get(&loop->pool);
	if (bid < 0) {
		finish_read(loop, op, -ENOBUFS, 0); /* the core re-arms when buffers return */
		return;
	}
	char *base = bufpool_addr(&loop->pool, (uint32_t)bid);
	ssize_t n = recv(op->fd, base, op_recv_len(op, loop->pool.bufsize), 0);
	if (n > 0) {
		op->buf = (struct buf){ .base = base, .len = (uint32_t)n, .bid = (uint32_t)bid };
		loop_complete(loop, op, (int)n, OPF_MORE | OPF_BUFFER);
		return;
	}
	bufpool_put(&loop->pool, (uint32_t)bid);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	finish_read(loop, op, n == 0 ? 0 : -errno, 0);
}

static void do_read(struct loop *loop, struct op *op)
{
	ssize_t n = read(op->fd, op->buf.base, op->buf.len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	finish_read(loop, op, n >= 0 ? (int)n : -errno, 0);
}

static void do_read_side(struct loop *loop, struct op *op)
{
	if (op->code == OP_ACCEPT)
		do_accept(loop, op);
	else if (op->code == OP_RECV)
		do_recv(loop, op);
	else
		do_read(loop, op);
}

/* select() said EBADF: some fd in the sets was closed without forget_fd. Finish its ops. */
static void reap_closed_fds(struct loop *loop)
{
	struct select_state *st = loop->be_state;
	for (int fd = 0; fd <= st->maxfd; fd++) {
		if (!has_interest(st, fd) || fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		struct op *rd = st->slots[fd].rd, *wr = st->slots[fd].wr;
		st->slots[fd] = (struct sel_slot){ 0 };
		sync_interest(st, fd);
		if (rd)
			loop_complete(loop, rd, -EBADF, 0);
		if (wr)
			loop_complete(loop, wr, -EBADF, 0);
	}
}

static int select_wait_once(struct loop *loop, int timeout_ms)
{
	struct select_state *st = loop->be_state;
	while (st->maxfd >= 0 && !has_interest(st, st->maxfd))
		st->maxfd--;
	int top = st->maxfd;
	st->rd_ready = st->rd_master;
	st->wr_ready = st->wr_master;
	struct timeval tv, *tvp = NULL;
	if (timeout_ms >= 0) {
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
		tvp = &tv;
	}
	int n = select(top + 1, &st->rd_ready, &st->wr_ready, NULL, tvp);
	if (n < 0) {
		int err = errno;
		if (err != EBADF)
			return -err;
		reap_closed_fds(loop);
		return 0;
	}
	/* n counts ready bits over both sets: stop scanning once all are seen. Callbacks may add
	 * fds above top (not in this batch) or drop any fd (its slot is empty: skipped). */
	int ready = n;
	for (int fd = 0; fd <= top && n > 0; fd++) {
		bool r = FD_ISSET(fd, &st->rd_ready), w = FD_ISSET(fd, &st->wr_ready);
		if (!r && !w)
			continue;
		n -= (int)r + (int)w;
		struct op *rd = st->slots[fd].rd;
		if (r && rd)
			do_read_side(loop, rd);
		struct op *wr = st->slots[fd].wr; /* after the read side: a callback may change it */
		if (w && wr)
			do_send(loop, wr);
	}
	return ready;
}

static void select_buf_release(struct loop *loop, uint32_t bid)
{
	bufpool_put(&loop->pool, bid);
}

static void select_forget_fd(struct loop *loop, int fd)
{
	struct select_state *st = loop->be_state;
	if (!watchable(fd))
		return;
	st->slots[fd] = (struct sel_slot){ 0 };
	sync_interest(st, fd); /* a closed fd left in a set would fail every select: EBADF */
}

const struct backend backend_select = {
	.name = "select",
	.summary = "readiness, O(maxfd) per wake-up, optimistic send",
	.caps = BACKEND_CAP_FD_LIMIT,
	.pref = 10,
	.max_fd = FD_SETSIZE,
	.init = select_init,
	.fini = select_fini,
	.submit = select_submit,
	.cancel = select_cancel,
	.wait = select_wait_once,
	.buf_release = select_buf_release,
	.forget_fd = select_forget_fd,
};
