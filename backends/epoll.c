/* epoll.c - readiness backend on epoll(7). The completion emulation (slots, syscalls, submit,
 * cancel) is backends/readiness.c; this file is the kernel interface: keep each fd's epoll
 * registration equal to what its slot wants (epoll_ctl only when that set changes, so a steady
 * echo costs epoll_wait + recv + send and no epoll_ctl), wait, report.
 *
 * Level-triggered, by measurement (bench/RESULTS.md, "epoll: level-triggered"): a steady echo
 * already costs one recv and one send per message and no epoll_ctl, the floor for a readiness
 * model, so edge-triggered has nothing to save. What it would add: a recv that returns EAGAIN
 * to prove a socket drained whenever a read fills the buffer, and a paused connection would
 * have to remember "readable, not drained" and retry by hand on resume, since no new edge
 * comes. Level-triggered pauses by dropping EPOLLIN.
 *
 * Traps of this interface, handled here:
 *  - EPOLLHUP/EPOLLERR are reported even with an empty mask, so an fd with no armed op is
 *    removed (EPOLL_CTL_DEL), never left registered with mask 0, or a hung-up peer would spin.
 *  - close() removes an fd from the set only when no duplicate of it is open (a listener
 *    shared by several workers is one socket with a dup per worker): forget_fd deletes the
 *    registration before the close, never relying on it.
 *  - A registration that could not be dropped (epoll_ctl failed) would wake the loop on
 *    every call, level-triggered: readiness.c syncs such an fd again on its next wake-up.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "readiness.h"

#define EPOLL_BATCH 1024

struct epoll_state {
	struct readiness r; /* first: rd_of(loop) */
	int epfd;
	struct epoll_event events[EPOLL_BATCH];
};

/* slot->k_rd holds the events registered (0: not registered; never registered with none). */
static int epoll_sync(struct readiness *r, int fd)
{
	struct epoll_state *st = (struct epoll_state *)r;
	struct rd_slot *s = &r->slots[fd];
	uint32_t want = (s->rd ? EPOLLIN : 0) | (s->wr ? EPOLLOUT : 0);
	if (want == s->k_rd)
		return 0;
	struct epoll_event ev = { .events = want, .data.fd = fd };
	int rc;
	loop_count(r->loop, SC_EPOLL_CTL);
	if (want == 0) {
		rc = epoll_ctl(st->epfd, EPOLL_CTL_DEL, fd, NULL);
		if (rc < 0 && (errno == EBADF || errno == ENOENT))
			rc = 0; /* closed behind our back: the kernel already dropped it */
	} else {
		rc = epoll_ctl(st->epfd, s->k_rd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
	}
	if (rc < 0)
		return -errno;
	s->k_rd = want;
	return 0;
}

static void epoll_fini(struct loop *loop)
{
	struct epoll_state *st = loop->be_state;
	if (!st)
		return;
	close(st->epfd);
	rd_fini(&st->r);
	free(st);
	loop->be_state = NULL;
}

static int epoll_init(struct loop *loop, const struct loop_config *cfg)
{
	(void)cfg;
	struct epoll_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	int rc = rd_init(&st->r, loop, epoll_sync, 0, false);
	st->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (st->epfd < 0 && rc == 0)
		rc = -errno;
	loop->be_state = st;
	if (rc < 0) {
		if (st->epfd >= 0)
			close(st->epfd);
		rd_fini(&st->r);
		free(st);
		loop->be_state = NULL;
	}
	return rc;
}

static int epoll_wait_once(struct loop *loop, int timeout_ms)
{
	struct epoll_state *st = loop->be_state;
	timeout_ms = rd_sends_flush(&st->r, timeout_ms);
	loop_count(loop, SC_EPOLL_WAIT);
	int n = epoll_wait(st->epfd, st->events, EPOLL_BATCH, timeout_ms);
	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++) {
		uint32_t ev = st->events[i].events;
		rd_ready(&st->r, st->events[i].data.fd, ev & (EPOLLIN | EPOLLERR | EPOLLHUP),
			 ev & (EPOLLOUT | EPOLLERR | EPOLLHUP));
	}
	(void)rd_sends_flush(&st->r, 0);
	return n;
}

const struct backend backend_epoll = {
	.name = "epoll",
	.summary = "readiness, O(ready) per wake-up, level-triggered, optimistic send",
	.caps = 0,
	.init = epoll_init,
	.fini = epoll_fini,
	.submit = rd_submit,
	.cancel = rd_cancel,
	.wait = epoll_wait_once,
	.buf_release = rd_buf_release,
	.forget_fd = rd_forget_fd,
};
