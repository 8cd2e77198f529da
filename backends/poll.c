/* poll.c - readiness backend on poll(2), emulating completion.
 *
 * Same shape as epoll.c: each fd has at most one "read side" op (accept, recv or read) and one
 * "write side" op (send); interest is derived from which are armed. The kernel gets a compact
 * array of struct pollfd holding exactly the fds with an armed op, so a wake-up costs
 * O(watched), not O(highest fd). An fd-indexed side table remembers each fd's ops and its
 * position in the array, so adding, changing and removing an entry are all O(1): removal moves
 * the last entry into the hole. Sends are optimistic: submit() calls send() at once and asks for
 * POLLOUT only on EAGAIN.
 *
 * Iterating while callbacks change the array: they do, all the time (a completion re-arms,
 * cancels, closes, accepts), and swap-removal moves entries around, so walking the live array
 * while running callbacks would skip or repeat entries. Instead, after poll() returns, the
 * ready entries are first copied out as (fd, revents) pairs, and only then dispatched; each
 * dispatch looks the fd's ops up afresh in the side table. The array can then change freely.
 * Readiness is level-triggered, so a pair is only a hint: an fd whose op was cancelled is
 * skipped, a stale one (fd closed and its number reused in the same batch) costs one EAGAIN.
 *
 * Traps of this interface, handled here:
 *  - POLLHUP, POLLERR and POLLNVAL are reported whatever `events` says, even 0: an fd with no
 *    armed op is removed from the array, never left in it with events = 0, or a hung-up peer
 *    of a paused connection would make every poll() return at once.
 *  - POLLNVAL: the fd was closed without forget_fd. Its ops are finished with -EBADF (after
 *    checking with fcntl that the number was not reused by a callback in the same batch).
 *  - POLLHUP/POLLERR wake both sides: the recv or send that follows reports EOF or the error.
 *  - poll() fails with EINVAL if nfds exceeds RLIMIT_NOFILE: the array holds distinct open fds
 *    only, so it cannot. EINTR: returned as -EINTR, an empty wake-up for the loop.
 *  - A callback may grow the side table or the array (realloc): nothing holds a pointer into
 *    either across a callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor.h"

#define ACCEPT_BATCH 64
#define PFD_INITIAL 64

struct poll_slot {
	struct op *rd; /* accept, recv or read */
	struct op *wr; /* send */
	uint32_t pos;  /* index in pfds + 1; 0 = not in the array */
};

struct ready_fd {
	int fd;
	short revents;
};

struct poll_state {
	struct pollfd *pfds;    /* exactly the fds with an armed op, in no order */
	struct ready_fd *ready; /* this wait's ready entries, dispatched after the scan */
	uint32_t npfds, cap;    /* pfds and ready both have cap entries */
	struct poll_slot *slots;
	int nslots;
};

static struct poll_slot *slot_of(struct poll_state *st, int fd)
{
	if (fd >= st->nslots) {
		int n = st->nslots ? st->nslots : 1024;
		while (n <= fd)
			n *= 2;
		struct poll_slot *s = realloc(st->slots, sizeof(*s) * (size_t)n);
		if (!s)
			return NULL;
		memset(s + st->nslots, 0, sizeof(*s) * (size_t)(n - st->nslots));
		st->slots = s;
		st->nslots = n;
	}
	return &st->slots[fd];
}

static int grow_arrays(struct poll_state *st)
{
	uint32_t cap = st->cap ? st->cap * 2 : PFD_INITIAL;
	struct pollfd *p = realloc(st->pfds, sizeof(*p) * cap);
	if (!p)
		return -ENOMEM;
	st->pfds = p;
	struct ready_fd *r = realloc(st->ready, sizeof(*r) * cap);
	if (!r)
		return -ENOMEM; /* pfds is bigger than needed: harmless, cap stays */
	st->ready = r;
	st->cap = cap;
	return 0;
}

static void array_remove(struct poll_state *st, uint32_t i)
{
	uint32_t last = --st->npfds;
	if (i != last) {
		st->pfds[i] = st->pfds[last];
		st->slots[st->pfds[i].fd].pos = i + 1;
	}
}

/* Make the array say what slot fd holds: add, update or remove its entry. */
static int sync_interest(struct poll_state *st, int fd)
{
	struct poll_slot *s = &st->slots[fd];
	short want = (short)((s->rd ? POLLIN : 0) | (s->wr ? POLLOUT : 0));
	if (want == 0) {
		if (s->pos) {
			array_remove(st, s->pos - 1);
			s->pos = 0;
		}
		return 0;
	}
	if (s->pos) {
		st->pfds[s->pos - 1].events = want;
		return 0;
	}
	if (st->npfds == st->cap) {
		int rc = grow_arrays(st);
		if (rc < 0)
			return rc;
	}
	st->pfds[st->npfds] = (struct pollfd){ .fd = fd, .events = want, .revents = 0 };
	s->pos = ++st->npfds;
	return 0;
}

static void poll_fini(struct loop *loop)
{
	struct poll_state *st = loop->be_state;
	if (!st)
		return;
	free(st->pfds);
	free(st->ready);
	free(st->slots);
	free(st);
	loop->be_state = NULL;
}

static int poll_init(struct loop *loop, const struct loop_config *cfg)
{
	struct poll_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	loop->be_state = st;
	if (!slot_of(st, cfg->max_fds > 0 ? (int)cfg->max_fds - 1 : 1023) || grow_arrays(st) < 0) {
		poll_fini(loop);
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

static int poll_submit(struct loop *loop, struct op *op)
{
	struct poll_state *st = loop->be_state;
	if (op->fd < 0)
		return -EBADF;
	struct poll_slot *s = slot_of(st, op->fd);
	if (!s)
		return -ENOMEM;
	if (op->code == OP_SEND) {
		/* Optimistic: most sends complete at once and never touch the array. */
		int res = send_now(op);
		if (res != -EAGAIN) {
			loop_defer(loop, op, res, 0);
			return 0;
		}
		s->wr = op;
	} else {
		s->rd = op;
	}
	int rc = sync_interest(st, op->fd);
	if (rc < 0) {
		if (op->code == OP_SEND)
			s->wr = NULL;
		else
			s->rd = NULL;
	}
	return rc;
}

static int poll_cancel(struct loop *loop, struct op *op)
{
	struct poll_state *st = loop->be_state;
	if (op->fd < 0 || op->fd >= st->nslots)
		return 0;
	struct poll_slot *s = &st->slots[op->fd];
	if (s->rd == op)
		s->rd = NULL;
	else if (s->wr == op)
		s->wr = NULL;
	else
		return 0; /* its final completion is already queued */
	sync_interest(st, op->fd); /* shrinking or removing never allocates */
	loop_defer(loop, op, -ECANCELED, 0);
	return 0;
}

/* The read side finished for good: drop interest before the callback, which may re-arm. */
static void finish_read(struct loop *loop, struct op *op, int res, unsigned fl)
{
	struct poll_state *st = loop->be_state;
	st->slots[op->fd].rd = NULL;
	sync_interest(st, op->fd);
	loop_complete(loop, op, res, fl);
}

static void do_send(struct loop *loop, struct op *op)
{
	int res = send_now(op);
	if (res == -EAGAIN)
		return;
	struct poll_state *st = loop->be_state;
	st->slots[op->fd].wr = NULL;
	sync_interest(st, op->fd);
	loop_complete(loop, op, res, 0);
}

static void do_accept(struct loop *loop, struct op *op)
{
	struct poll_state *st = loop->be_state;
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

/* POLLNVAL: fd was closed without forget_fd. Unless a callback in this batch already reused
 * the number (then the entry is the new fd's and merely stale), finish its ops with -EBADF. */
static void do_invalid(struct loop *loop, int fd)
{
	if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
		return;
	struct poll_state *st = loop->be_state;
	struct op *rd = st->slots[fd].rd, *wr = st->slots[fd].wr;
	st->slots[fd].rd = st->slots[fd].wr = NULL;
	sync_interest(st, fd);
	if (rd)
		loop_complete(loop, rd, -EBADF, 0);
	if (wr)
		loop_complete(loop, wr, -EBADF, 0);
}

static void dispatch(struct loop *loop, int fd, short revents)
{
	struct poll_state *st = loop->be_state;
	if (revents & POLLNVAL) {
		do_invalid(loop, fd);
		return;
	}
	struct op *rd = st->slots[fd].rd;
	if ((revents & (POLLIN | POLLHUP | POLLERR)) && rd) {
		if (rd->code == OP_ACCEPT)
			do_accept(loop, rd);
		else if (rd->code == OP_RECV)
			do_recv(loop, rd);
		else
			do_read(loop, rd);
	}
	struct op *wr = st->slots[fd].wr; /* afresh: the callback may have grown the table */
	if ((revents & (POLLOUT | POLLHUP | POLLERR)) && wr)
		do_send(loop, wr);
}

static int poll_wait_once(struct loop *loop, int timeout_ms)
{
	struct poll_state *st = loop->be_state;
	int n = poll(st->pfds, st->npfds, timeout_ms);
	if (n < 0)
		return -errno;
	/* Snapshot first (see the top comment): no callback runs while the array is walked. */
	int k = 0;
	for (uint32_t i = 0; i < st->npfds && k < n; i++)
		if (st->pfds[i].revents)
			st->ready[k++] = (struct ready_fd){ st->pfds[i].fd, st->pfds[i].revents };
	/* st->ready is re-read on every step: a callback that grows the arrays reallocs it,
	 * which keeps the entries not yet dispatched. */
	for (int j = 0; j < k; j++)
		dispatch(loop, st->ready[j].fd, st->ready[j].revents);
	return k;
}

static void poll_buf_release(struct loop *loop, uint32_t bid)
{
	bufpool_put(&loop->pool, bid);
}

static void poll_forget_fd(struct loop *loop, int fd)
{
	struct poll_state *st = loop->be_state;
	if (fd < 0 || fd >= st->nslots)
		return;
	st->slots[fd].rd = st->slots[fd].wr = NULL;
	sync_interest(st, fd); /* a closed fd left in the array would report POLLNVAL forever */
}

const struct backend backend_poll = {
	.name = "poll",
	.summary = "readiness, O(watched) per wake-up, compact pollfd array, optimistic send",
	.caps = 0,
	.pref = 20,
	.init = poll_init,
	.fini = poll_fini,
	.submit = poll_submit,
	.cancel = poll_cancel,
	.wait = poll_wait_once,
	.buf_release = poll_buf_release,
	.forget_fd = poll_forget_fd,
};
