/* poll.c - readiness backend on poll(2). The completion emulation is backends/readiness.c;
 * this file keeps the kernel's array in step with the slots, waits, and reports.
 *
 * The kernel gets a compact array of struct pollfd holding exactly the fds with an armed op,
 * so a wake-up costs O(watched), not O(highest fd). Each fd's slot remembers its position in
 * the array (k_rd = index + 1), so adding, changing and removing an entry are all O(1):
 * removal moves the last entry into the hole.
 *
 * Iterating while callbacks change the array: they do, all the time (a completion re-arms,
 * cancels, closes, accepts), and swap-removal moves entries around, so walking the live array
 * while running callbacks would skip or repeat entries. Instead, after poll() returns, the
 * ready entries are first copied out as (fd, revents) pairs, and only then dispatched.
 *
 * Traps of this interface, handled here:
 *  - POLLHUP, POLLERR and POLLNVAL are reported whatever `events` says, even 0: an fd with no
 *    armed op is removed from the array, never left in it with events = 0, or a hung-up peer
 *    of a paused connection would make every poll() return at once.
 *  - POLLNVAL: the fd was closed without forget_fd: its ops end with -EBADF (rd_fd_closed).
 *  - poll() fails with EINVAL if nfds exceeds RLIMIT_NOFILE: the array holds distinct open fds
 *    only, so it cannot. A callback may grow the array (realloc): no pointer into it is kept.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "readiness.h"

#define PFD_INITIAL 64

struct ready_fd {
	int fd;
	short revents;
};

struct poll_state {
	struct readiness r;     /* first: rd_of(loop) */
	struct pollfd *pfds;    /* exactly the fds with an armed op, in no order */
	struct ready_fd *ready; /* this wait's ready entries, dispatched after the scan */
	uint32_t npfds, cap;    /* pfds and ready both have cap entries */
};

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

/* Make the array say what fd's slot wants: add, update or remove its entry. */
static int poll_sync(struct readiness *r, int fd)
{
	struct poll_state *st = (struct poll_state *)r;
	struct rd_slot *s = &r->slots[fd];
	short want = (short)((s->rd ? POLLIN : 0) | (s->wr ? POLLOUT : 0));
	if (want == 0) {
		if (s->k_rd) {
			uint32_t i = (uint32_t)s->k_rd - 1, last = --st->npfds;
			if (i != last) {
				st->pfds[i] = st->pfds[last];
				r->slots[st->pfds[i].fd].k_rd = i + 1;
			}
			s->k_rd = 0;
		}
		return 0;
	}
	if (s->k_rd) {
		st->pfds[s->k_rd - 1].events = want;
		return 0;
	}
	if (st->npfds == st->cap) {
		int rc = grow_arrays(st);
		if (rc < 0)
			return rc;
	}
	st->pfds[st->npfds] = (struct pollfd){ .fd = fd, .events = want, .revents = 0 };
	s->k_rd = ++st->npfds;
	return 0;
}

static void poll_fini(struct loop *loop)
{
	struct poll_state *st = loop->be_state;
	if (!st)
		return;
	free(st->pfds);
	free(st->ready);
	rd_fini(&st->r);
	free(st);
	loop->be_state = NULL;
}

static int poll_init(struct loop *loop, const struct loop_config *cfg)
{
	(void)cfg;
	struct poll_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	loop->be_state = st;
	if (rd_init(&st->r, loop, poll_sync, 0, false) < 0 || grow_arrays(st) < 0) {
		poll_fini(loop);
		return -ENOMEM;
	}
	return 0;
}

static int poll_wait_once(struct loop *loop, int timeout_ms)
{
	struct poll_state *st = loop->be_state;
	timeout_ms = rd_sends_flush(&st->r, timeout_ms);
	loop_count(loop, SC_POLL);
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
	for (int j = 0; j < k; j++) {
		int fd = st->ready[j].fd;
		short ev = st->ready[j].revents;
		if (ev & POLLNVAL)
			rd_fd_closed(&st->r, fd);
		else
			rd_ready(&st->r, fd, ev & (POLLIN | POLLHUP | POLLERR),
				 ev & (POLLOUT | POLLHUP | POLLERR));
	}
	(void)rd_sends_flush(&st->r, 0);
	return k;
}

const struct backend backend_poll = {
	.name = "poll",
	.summary = "readiness, O(watched) per wake-up, compact pollfd array, optimistic send",
	.caps = 0,
	.init = poll_init,
	.fini = poll_fini,
	.submit = rd_submit,
	.cancel = rd_cancel,
	.wait = poll_wait_once,
	.buf_release = rd_buf_release,
	.forget_fd = rd_forget_fd,
};
