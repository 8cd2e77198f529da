/* uring_poll.c - readiness backend on io_uring: IORING_OP_POLL_ADD says when an fd is ready,
 * and the syscalls are readiness.c's, exactly as epoll performs them. It exists to split the
 * comparison: epoll vs uring-poll measures io_uring's batching (one enter per iteration that
 * also carries every poll change), uring-poll vs uring measures completion against readiness.
 * Ring set-up is shared with uring.c (uring_common.h).
 *
 * One poll request per side while that side is armed: a multishot POLLIN poll for the read
 * side, added when the op is submitted and removed when it is final; a one-shot POLLOUT poll
 * for a send that met EAGAIN. A steady echo costs one recv and one send per message and no
 * poll SQE at all: the multishot poll stays armed.
 *
 * user_data of a poll = generation << 32 | fd << 2 | side. A slot remembers the user_data of
 * the poll it has armed on each side (k_rd, k_wr), and a CQE that does not match exactly is
 * stale (a poll already removed, or one from the previous user of a reused fd number:
 * generations only ever grow, also across forget_fd). Removals carry UD_IGNORE.
 *
 * Traps of this interface, handled here:
 *  - A multishot poll is edge-triggered: it posts when the socket is woken, not while it stays
 *    readable, and IORING_POLL_ADD_LEVEL is refused for multishot (EINVAL). readiness.c runs
 *    in edge mode (a retry list), a new poll is checked against the fd's state when armed, and
 *    the poll asks for POLLRDHUP so a FIN behind the bytes is read out.
 *  - A multishot poll can end (no F_MORE) while wanted, e.g. on CQ overflow: re-armed at once.
 *  - A poll holds a reference to the file: close() alone would neither end it nor free the
 *    socket. Polls are removed when their side goes final, and forget_fd removes any left.
 *  - A POLL_REMOVE that meets the multishot poll while its wake-up is being completed fails
 *    with -EALREADY and the poll goes on: its removal is issued again until it lands. Missed,
 *    it kept closed sockets alive for good (seen once echod stopped sending a shutdown before
 *    each close: the peer then never saw the FIN).
 *  - Multishot poll needs 5.13: init probes it and refuses (-EOPNOTSUPP) on an older kernel.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "readiness.h"
#include "uring_common.h"

#define SIDE_RD 1u
#define SIDE_WR 2u
#define UD_IGNORE 3u
#define UD_REMOVAL (1ull << 63) /* a POLL_REMOVE's own user_data: the poll's, this bit set */

struct up_state {
	struct readiness r; /* first: rd_of(loop) */
	struct uc uc;
};

static int arm_poll(struct up_state *st, int fd, unsigned side)
{
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe)
		return -EBUSY;
	struct rd_slot *s = &st->r.slots[fd];
	uint64_t ud = (uint64_t)(++s->k_gen & 0x7fffffffu) << 32 | (uint64_t)fd << 2 | side;
	if (side == SIDE_RD) {
		io_uring_prep_poll_multishot(sqe, fd, POLLIN | POLLRDHUP);
		s->k_rd = ud;
		s->hup = false;
	} else {
		io_uring_prep_poll_add(sqe, fd, POLLOUT);
		s->k_wr = ud;
	}
	sqe->user_data = ud;
	return 0;
}

/* Remove poll `ud`. Success posts nothing; a failure posts a CQE with UD_REMOVAL, and one
 * that says the poll was busy completing (-EALREADY) is tried again (on_cqe). */
static void remove_poll(struct up_state *st, uint64_t ud)
{
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (sqe) {
		io_uring_prep_poll_remove(sqe, ud);
		sqe->user_data = ud | UD_REMOVAL;
		sqe->flags |= (uint8_t)st->uc.sqe_flags_ignored;
	}
}

static void disarm_poll(struct up_state *st, uint64_t *ud)
{
	remove_poll(st, *ud);
	*ud = 0; /* from now on its CQEs are stale */
}

/* A poll per armed side, none for an idle one. */
static int up_sync(struct readiness *r, int fd)
{
	struct up_state *st = (struct up_state *)r;
	struct rd_slot *s = &r->slots[fd];
	int rc = 0;
	if (s->rd && !s->k_rd)
		rc = arm_poll(st, fd, SIDE_RD);
	else if (!s->rd && s->k_rd)
		disarm_poll(st, &s->k_rd);
	if (rc == 0 && s->wr && !s->k_wr)
		rc = arm_poll(st, fd, SIDE_WR);
	else if (!s->wr && s->k_wr)
		disarm_poll(st, &s->k_wr);
	return rc;
}

static void prep_probe_poll(struct io_uring_sqe *sqe, int fd, uint32_t events)
{
	io_uring_prep_poll_multishot(sqe, fd, events);
}

static void up_fini(struct loop *loop)
{
	struct up_state *st = loop->be_state;
	if (!st)
		return;
	uc_fini(&st->uc); /* first: no poll may outlive the slots it names */
	rd_fini(&st->r);
	free(st);
	loop->be_state = NULL;
}

static int up_init(struct loop *loop, const struct loop_config *cfg)
{
	struct up_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	loop->be_state = st;
	int rc = rd_init(&st->r, loop, up_sync, 0, true);
	if (rc == 0)
		rc = uc_init(&st->uc, cfg->queue_depth);
	st->uc.enters = &loop->tally.syscalls[SC_IO_URING_ENTER];
	if (rc == 0)
		rc = uc_probe(&st->uc, prep_probe_poll, POLLIN);
	if (rc < 0)
		up_fini(loop); /* uc_fini and rd_fini take what was set up, and nothing else */
	else
		loop->cq_entries = st->uc.cq_entries;
	return rc;
}

static void on_cqe(void *ctx, uint64_t ud, int res, unsigned flags)
{
	struct up_state *st = ctx;
	struct readiness *r = &st->r;
	if (ud & UD_REMOVAL) {
		/* The poll was being completed when the removal came: as a multishot poll it
		 * would go on, holding its file (a closed socket never freed, its peer never told).
		 * Remove it again; -ENOENT means it is gone. */
		if (res == -EALREADY)
			remove_poll(st, ud & ~UD_REMOVAL);
		return;
	}
	unsigned side = ud & 3u;
	int fd = (int)((ud >> 2) & 0x3fffffffu);
	if (side == UD_IGNORE || side == 0 || fd >= r->nslots)
		return;
	struct rd_slot *s = &r->slots[fd];
	if (side == SIDE_WR) {
		if (ud != s->k_wr)
			return;
		s->k_wr = 0; /* one-shot: sync arms another if the send meets EAGAIN again */
		if (res < 0)
			rd_finish_write(r, fd, res);
		else if (s->wr)
			rd_ready(r, fd, false, true);
		return;
	}
	if (ud != s->k_rd)
		return;
	if (!(flags & IORING_CQE_F_MORE))
		s->k_rd = 0; /* the poll ended */
	if (!s->rd)
		return;
	if (res < 0) {
		rd_finish_read(r, fd, res);
		return;
	}
	if (res & (POLLRDHUP | POLLHUP | POLLERR))
		s->hup = true;
	rd_ready(r, fd, true, false);
	if (r->slots[fd].rd && !r->slots[fd].k_rd && up_sync(r, fd) < 0)
		rd_finish_read(r, fd, -EBUSY);
}

static int up_wait(struct loop *loop, int timeout_ms)
{
	struct up_state *st = loop->be_state;
	int nrun = rd_retries_take(&st->r);
	timeout_ms = rd_sends_flush(&st->r, nrun ? 0 : timeout_ms);
	int rc = uc_wait(&st->uc, loop, timeout_ms, on_cqe, st);
	loop->cq_overflows = st->uc.overflows;
	if (rc < 0 && rc != -EINTR)
		return rc;
	rd_retries_run(&st->r, nrun);
	(void)rd_sends_flush(&st->r, 0);
	return rc;
}

struct uc *uring_poll_ring_of(const struct loop *loop)
{
	return &((struct up_state *)loop->be_state)->uc;
}

const struct backend backend_uring_poll = {
	.name = "uring-poll",
	.summary = "readiness through io_uring (multishot POLL_ADD), syscalls like epoll, "
		   "one enter per wake-up",
	.caps = 0,
	.init = up_init,
	.fini = up_fini,
	.submit = rd_submit,
	.cancel = rd_cancel,
	.wait = up_wait,
	.buf_release = rd_buf_release,
	.forget_fd = rd_forget_fd,
	.describe = uc_describe,
};
