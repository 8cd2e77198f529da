/* select.c - readiness backend on select(2): the portable baseline. The completion emulation
 * is backends/readiness.c; this file keeps two master fd_sets in step with the slots, copies
 * them for each call (select overwrites its arguments), selects on 0..maxfd and reports every
 * ready fd before returning.
 *
 * Traps of this interface, handled here:
 *  - FD_SETSIZE (1024 on glibc). FD_SET/FD_ISSET on an fd >= FD_SETSIZE writes or reads past
 *    the set: undefined behaviour, and glibc's _FORTIFY_SOURCE aborts. The slot table refuses
 *    such an fd (max_fd) before any set is touched, and the backend advertises
 *    BACKEND_CAP_FD_LIMIT so the core refuses those connections before it ever submits.
 *  - Cost is O(maxfd), not O(ready): the kernel copies and scans (maxfd+1) bits of each set in
 *    and out on every call. maxfd is an upper bound on the fds with interest, raised in O(1)
 *    by sync; when the top fd leaves, it is lowered lazily (once, scanning down, at the next
 *    wait), so removals stay O(1). The masters are copied whole: cheaper than being clever.
 *  - select() modifies its sets and, on Linux, its timeout: both are rebuilt on every call,
 *    and after an error nothing is read from them (their content is unspecified then).
 *  - EBADF: one closed fd left in a set fails the whole call, every call. forget_fd (called by
 *    loop_close_fd) clears it first; an fd closed behind the loop's back anyway is found with
 *    fcntl(F_GETFD) and its ops finished with -EBADF, rather than the loop dying or spinning.
 *  - No exceptfds: errors and hang-ups show as readable/writable and the syscall that follows
 *    reports them (echod does not use out-of-band data, the one "exceptional" case).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/select.h>

#include "readiness.h"

struct select_state {
	struct readiness r;          /* first: rd_of(loop) */
	fd_set rd_master, wr_master; /* interest: the fds with an armed op on that side */
	fd_set rd_ready, wr_ready;   /* select's copies, overwritten by every call */
	int maxfd;                   /* >= every fd with interest; -1 when none */
};

static bool has_interest(const struct readiness *r, int fd)
{
	return fd < r->nslots && (r->slots[fd].rd || r->slots[fd].wr);
}

/* Make the masters say what fd's slot wants (fd < FD_SETSIZE: the slot table's max_fd). */
static int select_sync(struct readiness *r, int fd)
{
	struct select_state *st = (struct select_state *)r;
	const struct rd_slot *s = &r->slots[fd];
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
	return 0;
}

static void select_fini(struct loop *loop)
{
	struct select_state *st = loop->be_state;
	if (!st)
		return;
	rd_fini(&st->r);
	free(st);
	loop->be_state = NULL;
}

static int select_init(struct loop *loop, const struct loop_config *cfg)
{
	(void)cfg; /* past FD_SETSIZE nothing can be watched; the core warns about the limit */
	struct select_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	loop->be_state = st;
	FD_ZERO(&st->rd_master);
	FD_ZERO(&st->wr_master);
	st->maxfd = -1;
	if (rd_init(&st->r, loop, select_sync, FD_SETSIZE, false) < 0) {
		select_fini(loop);
		return -ENOMEM;
	}
	return 0;
}

static int select_wait_once(struct loop *loop, int timeout_ms)
{
	struct select_state *st = loop->be_state;
	timeout_ms = rd_sends_flush(&st->r, timeout_ms);
	while (st->maxfd >= 0 && !has_interest(&st->r, st->maxfd))
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
	loop_count(loop, SC_SELECT);
	int n = select(top + 1, &st->rd_ready, &st->wr_ready, NULL, tvp);
	if (n < 0 && errno == EBADF) {
		for (int fd = 0; fd <= top; fd++)
			if (has_interest(&st->r, fd))
				rd_fd_closed(&st->r, fd);
		(void)rd_sends_flush(&st->r, 0);
		return 0;
	}
	if (n < 0)
		return -errno;
	/* n counts ready bits over both sets: stop scanning once all are seen. Callbacks may add
	 * fds above top (not in this batch) or drop any fd (its slot is empty: skipped). */
	int ready = n;
	for (int fd = 0; fd <= top && n > 0; fd++) {
		bool r = FD_ISSET(fd, &st->rd_ready), w = FD_ISSET(fd, &st->wr_ready);
		if (r || w) {
			n -= (int)r + (int)w;
			rd_ready(&st->r, fd, r, w);
		}
	}
	(void)rd_sends_flush(&st->r, 0);
	return ready;
}

const struct backend backend_select = {
	.name = "select",
	.summary = "readiness, O(maxfd) per wake-up, optimistic send",
	.caps = BACKEND_CAP_FD_LIMIT,
	.max_fd = FD_SETSIZE,
	.init = select_init,
	.fini = select_fini,
	.submit = rd_submit,
	.cancel = rd_cancel,
	.wait = select_wait_once,
	.buf_release = rd_buf_release,
	.forget_fd = rd_forget_fd,
};
