/* uring.c - completion backend on io_uring: multishot accept, multishot recv into a provided
 * buffer ring over the loop's pool, one-shot send and read. One ring per loop, created by
 * init in the thread that runs the loop (see uring_common.h for the set-up and its fallbacks).
 *
 * Steady state per echoed message: one SEND SQE, no syscall of its own. The recv stays armed
 * (multishot) and picks its buffer from the ring; the buffer goes back to the ring as a plain
 * memory write when the core releases it; the loop makes one io_uring_enter per iteration,
 * which publishes the returned buffers, submits every queued SQE and waits.
 *
 * user_data is the `struct op *` itself. That is safe because of the reactor's contract: the
 * core never frees or reuses an op before its final completion (the CQE without F_MORE), and
 * the kernel never posts a CQE for a request after that one. A connection whose fd number is
 * reused cannot receive the old connection's completions: the old ops' memory stays alive,
 * with their own pointers, until their finals arrive. Requests that are not ops (cancels) carry
 * UD_IGNORE, an odd value no op pointer can take, and their CQEs are dropped (and not even
 * posted on success, with IOSQE_CQE_SKIP_SUCCESS where the kernel has it). An op reused after
 * its final while a cancel aimed at its previous life is still queued is safe too: SQEs are
 * issued in SQ order, so that cancel runs before the op's new SQE exists in the kernel.
 *
 * Traps of this interface, handled here:
 *  - No ordering between independent SQEs on one socket: two sends in flight could go out in
 *    either order. The core keeps at most one send per fd (reactor.h), so no links are needed.
 *  - Buffer ring exhaustion: a multishot recv that finds the ring empty ends with -ENOBUFS.
 *    Inside one kernel pass a streaming socket can take every buffer before the loop returns
 *    the first, although the core holds none of them. So -ENOBUFS reaches the core only when
 *    the pool is really dry (every buffer given to the core and not yet released, counted in
 *    `avail`); otherwise the recv is quietly re-armed after the ring is refilled. Never a spin:
 *    the core re-arms when buffers come back.
 *  - One stream can empty the ring: a multishot recv keeps receiving as long as its socket has
 *    bytes, so a client pushing megabytes takes every free buffer in one kernel pass, before
 *    the core sees the first completion and pauses it; a client that never reads then sits on
 *    the whole pool and starves everybody else; and a connection would hold far more than its
 *    --conn-buffer before the pause's cancel lands. Each recv therefore carries a total byte
 *    limit, the smaller of a sixteenth of the pool and the caller's budget (op->max_bytes),
 *    after which the kernel ends it. The kernel checks the limit after each recv, and the
 *    recv that crosses it may fill a whole buffer, so the limit is set one buffer short of the
 *    budget, and the last buffer of a budget is a one-shot recv of exactly what is left
 *    (recv_run_limit). On a run's final completion the backend renews it while the budget is
 *    not used up and the core is not cancelling it, reporting the data with OPF_MORE so the
 *    core never notices; a recv that used up the budget ends, and the core re-arms it when it
 *    has room. Cost: one SQE per min(pool/16, budget) bytes received. The limit (the SQE's
 *    optlen field) is recent: init probes it, and on a kernel without it every recv is a
 *    one-shot of at most one buffer and the budget, renewed the same way (one SQE per buffer:
 *    slower, still bounded).
 *  - Returned buffers are invisible to the kernel until the ring tail moves: the tail is
 *    published once per iteration, before anything is submitted (also before a submit forced
 *    by a full SQ), so a re-armed recv never looks at a stale ring.
 *  - A CQE carrying a buffer (F_BUFFER) is always delivered with OPF_BUFFER, also after a
 *    cancel, or the buffer would leak from the pool.
 *  - CQ overflow: the CQ is four times the SQ and is emptied every iteration; the kernel keeps
 *    overflowed CQEs (FEAT_NODROP) and enter reports EBUSY, handled by reaping then submitting
 *    again. A full SQ inside a callback submits what is queued and takes the SQE after.
 *  - Cancel races: ASYNC_CANCEL targets the op's user_data; the op's own final CQE
 *    (-ECANCELED, or data/EOF/error that won the race) is what the core gets, exactly once.
 *    A recv's -ENOBUFS after a cancel is reported as -ECANCELED.
 *  - DEFER_TASKRUN: completions exist only once the creating thread enters with GETEVENTS, so
 *    wait() always does, even with a zero timeout, and never peeks without entering.
 *  - A listener shared by several loops (one socket, --threads): the socket wakes one waiting
 *    accept per connection, the first in its queue, and a multishot accept never leaves that
 *    place, so one loop would take nearly every connection. With shared listeners each accept
 *    is one-shot: re-armed, it queues behind the other loops' and they take turns (one SQE per
 *    connection, which costs nothing next to the handshake).
 *  - Closing an fd does not end io_uring requests on it (they hold the file): the core cancels
 *    and waits for finals before closing, so forget_fd has nothing to do.
 *  - Multishot recv and accept need kernel 6.0 and 5.19; buffer rings 5.19. init probes them
 *    on a socketpair and answers -EOPNOTSUPP on an older kernel; a refused io_uring_setup
 *    (ENOSYS, EPERM from kernel.io_uring_disabled or seccomp) is returned as is.
 *
 * Not used, by choice, and not benchmarked here: fixed files (the core needs real fds for
 * shutdown/close, a registered-file table costs an update per connection, and the fd lookup it
 * saves is a small part of the server CPU per message in bench/RESULTS.md), recv
 * bundles (one buffer per completion is the reactor's contract; a bundle would only pay off
 * for streams larger than the pool's buffers), SQPOLL (a spinning kernel
 * thread per loop on a shared machine), zero-copy send (its notification CQE costs more than a
 * copy at echo's message sizes).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor.h"
#include "uring_common.h"

#define UD_IGNORE 1u
#define ENOBUFS_REARMS_MAX 8 /* quiet re-arms of one recv in a row before -ENOBUFS goes out */
#define RECV_LIMIT_DIV 16    /* one multishot recv takes at most pool/16 before it is renewed */

struct uring_state {
	struct uc uc;
	struct loop *loop;
	uint32_t avail;      /* pool buffers not held by the core (in the ring or about to be) */
	uint32_t recv_limit; /* bytes one multishot recv may take before it ends (0: no limit) */
	bool oneshot_accept; /* listeners shared with other loops */
};

/* The kernel ends a multishot recv once its run has taken `limit` bytes or more, and the recv
 * that crosses the limit may fill a whole buffer: a run takes at most limit - 1 + bufsize. So
 * a budget larger than one buffer runs multishot up to budget - bufsize + 1, and a budget of at
 * most one buffer is one one-shot recv of exactly that much. Returns 0 for the one-shot. */
static uint32_t recv_run_limit(const struct uring_state *st, uint32_t budget)
{
	uint32_t bufsize = st->loop->pool.bufsize;
	if (!st->recv_limit || (budget && budget <= bufsize))
		return 0;
	if (budget && budget - bufsize + 1 < st->recv_limit)
		return budget - bufsize + 1;
	return st->recv_limit;
}

/* A recv from the buffer ring taking at most `budget` bytes in all (0: no bound). */
static void prep_recv(const struct uring_state *st, struct io_uring_sqe *sqe, struct op *op,
		      uint32_t budget)
{
	uint32_t limit = recv_run_limit(st, budget);
	if (limit) {
		io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
		sqe->file_index = limit; /* alias of "optlen": the run's total */
	} else {
		/* One buffer and the budget at most; renewed on completion. */
		uint32_t bufsize = st->loop->pool.bufsize;
		io_uring_prep_recv(sqe, op->fd, NULL, budget && budget < bufsize ? budget : bufsize,
				   0);
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data(sqe, op);
}

static void prep_op(const struct uring_state *st, struct io_uring_sqe *sqe, struct op *op)
{
	switch (op->code) {
	case OP_ACCEPT:
		if (st->oneshot_accept)
			io_uring_prep_accept(sqe, op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		else
			io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL,
						       SOCK_NONBLOCK | SOCK_CLOEXEC);
		break;
	case OP_RECV:
		prep_recv(st, sqe, op, op->max_bytes);
		break;
	case OP_SEND:
		io_uring_prep_send(sqe, op->fd, op->buf.base, op->buf.len, MSG_NOSIGNAL);
		break;
	case OP_READ:
		io_uring_prep_read(sqe, op->fd, op->buf.base, op->buf.len, (uint64_t)-1);
		break;
	}
	io_uring_sqe_set_data(sqe, op);
}

/* Multishot recv from the buffer ring (6.0; multishot accept, 5.19, is older), with a total
 * byte limit when arg != 0 (recent): a kernel without either rejects it with -EINVAL. */
static void prep_probe_recv(struct io_uring_sqe *sqe, int fd, uint32_t limit)
{
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	sqe->file_index = limit;
}

static void uring_fini(struct loop *loop)
{
	struct uring_state *st = loop->be_state;
	if (!st)
		return;
	uc_fini(&st->uc);
	free(st);
	loop->be_state = NULL;
}

static int uring_init(struct loop *loop, const struct loop_config *cfg)
{
	struct uring_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	int rc = uc_init(&st->uc, cfg->queue_depth);
	if (rc < 0) {
		free(st);
		return rc;
	}
	st->loop = loop;
	st->uc.enters = &loop->tally.syscalls[SC_IO_URING_ENTER];
	loop->be_state = st;
	rc = uc_bufring_init(&st->uc, &loop->pool);
	if (rc == 0) {
		/* One recv's burst: a sixteenth of the pool, at least one buffer. */
		uint32_t nb = loop->pool.nbufs / RECV_LIMIT_DIV ? loop->pool.nbufs / RECV_LIMIT_DIV : 1;
		uint64_t limit = (uint64_t)nb * loop->pool.bufsize;
		st->recv_limit = limit > INT32_MAX ? INT32_MAX : (uint32_t)limit;
		if (cfg->no_recv_limit || uc_probe(&st->uc, prep_probe_recv, st->recv_limit) < 0) {
			st->recv_limit = 0;
			rc = uc_probe(&st->uc, prep_probe_recv, 0);
		}
	}
	if (rc < 0) {
		uring_fini(loop);
		return rc;
	}
	st->avail = loop->pool.nbufs;
	loop->cq_entries = st->uc.cq_entries;
	st->oneshot_accept = cfg->shared_listeners;
	return 0;
}

static int uring_submit(struct loop *loop, struct op *op)
{
	struct uring_state *st = loop->be_state;
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe)
		return -EBUSY;
	op->backend_data = 0;
	prep_op(st, sqe, op);
	return 0;
}

static int uring_cancel(struct loop *loop, struct op *op)
{
	struct uring_state *st = loop->be_state;
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	sqe->user_data = UD_IGNORE;
	sqe->flags |= (uint8_t)st->uc.sqe_flags_ignored;
	return 0;
}

static void on_cqe(void *ctx, uint64_t ud, int res, unsigned flags)
{
	struct uring_state *st = ctx;
	if (ud & UD_IGNORE)
		return;
	struct op *op = (struct op *)(uintptr_t)ud;
	unsigned cf = (flags & IORING_CQE_F_MORE) ? OPF_MORE : 0;
	if (flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = flags >> IORING_CQE_BUFFER_SHIFT;
		op->buf = (struct buf){ .base = bufpool_addr(&st->loop->pool, bid),
					.len = res > 0 ? (uint32_t)res : 0,
					.bid = bid };
		st->avail--;
		cf |= OPF_BUFFER;
		op->backend_data = 0;
		if (!(cf & OPF_MORE) && res > 0 && !op->cancelling &&
		    (!op->max_bytes || op->max_bytes > (uint32_t)res)) {
			/* The recv reached the pool's share (or the CQ overflowed) with the caller's
			 * budget not used up: renew it before the core sees the data, so to the
			 * core it never stopped. The budget counted here is what is left after this
			 * CQE's bytes, which the core has not yet taken. A recv that used up the
			 * budget ends: the core re-arms it once it has room again. */
			struct io_uring_sqe *sqe = uc_sqe(&st->uc);
			if (sqe) {
				prep_recv(st, sqe, op,
					  op->max_bytes ? op->max_bytes - (uint32_t)res : 0);
				cf |= OPF_MORE;
			}
		}
	} else if (res < 0 && op->code == OP_ACCEPT && !op->cancelling &&
		   loop_accept_error_transient(-res)) {
		/* One connection lost in the queue (reactor.h's policy): accepting goes on. A
		 * multishot accept that ended on it is armed again, unseen by the core. */
		if (!(cf & OPF_MORE)) {
			struct io_uring_sqe *sqe = uc_sqe(&st->uc);
			if (sqe) {
				prep_op(st, sqe, op);
				return;
			}
		} else {
			return;
		}
	} else if (res == -ENOBUFS && op->code == OP_RECV && !(cf & OPF_MORE)) {
		if (op->cancelling) {
			res = -ECANCELED;
		} else if (st->avail > 0 && op->backend_data < ENOBUFS_REARMS_MAX) {
			/* The ring ran dry inside one kernel pass, but buffers have come back
			 * since: re-arm; the tail is published before this SQE is submitted. */
			struct io_uring_sqe *sqe = uc_sqe(&st->uc);
			if (sqe) {
				prep_op(st, sqe, op);
				op->backend_data++;
				return;
			}
		}
	}
	loop_complete(st->loop, op, res, cf);
}

static int uring_wait(struct loop *loop, int timeout_ms)
{
	struct uring_state *st = loop->be_state;
	int rc = uc_wait(&st->uc, timeout_ms, on_cqe, st);
	loop->cq_overflows = st->uc.overflows;
	return rc;
}

static void uring_buf_release(struct loop *loop, uint32_t bid)
{
	struct uring_state *st = loop->be_state;
	st->avail++;
	uc_buf_put(&st->uc, bid);
}

const struct backend backend_uring = {
	.name = "uring",
	.summary = "completion (io_uring), multishot accept+recv, kernel-selected buffers, "
		   "one enter per wake-up",
	.caps = 0,
	.init = uring_init,
	.fini = uring_fini,
	.submit = uring_submit,
	.cancel = uring_cancel,
	.wait = uring_wait,
	.buf_release = uring_buf_release,
	.forget_fd = NULL,
};
