/* uring.c - completion backend on io_uring: multishot accept, multishot recv into a provided
 * buffer ring over the loop's pool, one-shot send and read; for UDP, multishot recvmsg into a
 * second buffer ring over the loop's datagram pool and one-shot sendmsg. One ring per loop,
 * created by init in the thread that runs the loop (see uring_common.h for the set-up and its
 * fallbacks).
 *
 * Steady state per echoed message: one SEND SQE (a SENDMSG when the core gathers several
 * runs: see prep_send), no syscall of its own. The recv stays armed
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
 *  - A send that meets a full socket is parked on a poll and retried; one that still finds it
 *    full (a Unix stream's writability is reported at half its buffer, a gathered send wants
 *    more) may be handed to an io-wq worker, where SENDMSG (not SEND) honours the socket's
 *    O_NONBLOCK and completes -EAGAIN having sent nothing. That CQE is not an error: the send
 *    is issued again with IORING_RECVSEND_POLL_FIRST, so it waits for room (send_rearm).
 *  - A SENDMSG's msghdr and iovec must stay put until the kernel has read them. With
 *    IORING_FEAT_SUBMIT_STABLE (5.5) that is once the SQE has been consumed, so they live in a
 *    per-loop arena that is reused as soon as the SQ has been drained, not per connection.
 *  - Consecutive CQEs of one multishot recv carry OPF_BATCH (all but the last), so the core
 *    answers a burst with one gathered send instead of a send per buffer.
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
 *  - The kernel takes buffers in ring order, so a ring holding the whole pool would touch
 *    every buffer's pages in turn, however few are in use at once (1,191 bytes of RSS per
 *    idle connection at 10,000 in bench/RESULTS.md, most of it the 16 MiB pool): the ring is
 *    kept stocked with a few, warmest first from the pool's free stack, and grows when a recv
 *    finds it empty while the stack is not (stock_ring).
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
 *    and waits for finals before closing, so forget_fd has nothing to do. The close itself
 *    goes on the ring (uring_close_fd), so a connection's whole life, accept to close, makes
 *    no syscall of its own; the number stays taken until the next enter runs it.
 *  - Multishot recv and accept need kernel 6.0 and 5.19; buffer rings 5.19. init probes them
 *    on a socketpair and answers -EOPNOTSUPP on an older kernel; a refused io_uring_setup
 *    (ENOSYS, EPERM from kernel.io_uring_disabled or seccomp) is returned as is.
 *  - Multishot recvmsg lays each datagram out inside the selected buffer: a struct
 *    io_uring_recvmsg_out, then msg_namelen bytes for the source (reserved whatever the
 *    source's size), then msg_controllen, then the payload. So the template's namelen fixes
 *    where the payload starts and how much fits. The kernel reads one template, per loop and
 *    never written (dgram_tmpl: namelen = a struct sockaddr_storage, no control), not the
 *    caller's msghdr, and the datagram ring's entries start DGRAM_RING_OFFSET into each
 *    buffer: the payload then starts at LOOP_DGRAM_HEADROOM and holds dgram_bufsize -
 *    LOOP_DGRAM_HEADROOM bytes, as on the readiness backends, whatever the caller's capacity.
 *    The source is copied from the buffer into op->msg (at most its capacity).
 *  - A recvmsg's MSG_TRUNC is in io_uring_recvmsg_out.flags, not in the CQE, and the CQE's
 *    res counts the header and the name: the payload's length is what follows them. Pool
 *    buffers are dgram_bufsize apart, any size, so the header may be misaligned: it is read
 *    with memcpy, not through liburing's struct-pointer helpers (undefined behaviour there).
 *  - The datagram ring runs dry like the stream ring (a burst takes every buffer in one
 *    kernel pass): the same quiet re-arm while the core holds fewer than all (`dgram_avail`).
 *  - Multishot recvmsg is 6.0, like multishot recv, so every kernel this backend runs on has
 *    it; init probes it anyway (seccomp filters, backports) and falls back to one-shot
 *    recvmsg with buffer selection on the caller's msghdr (the kernel then writes the source
 *    there itself, and the payload starts at the ring entry, so those entries start at
 *    LOOP_DGRAM_HEADROOM): each datagram is then a final completion and the core re-arms.
 *  - A sendmsg that meets a full socket buffer is, by default, parked on a poll and retried
 *    when the socket drains, and sendmsgs then leave in no defined order. With MSG_DONTWAIT
 *    the kernel marks the request NOWAIT and completes it with -EAGAIN instead (what the
 *    contract wants: UDP drops the reply), so every sendmsg completes or fails at its inline
 *    issue, in SQ order, and sendmsgs on one fd leave in submission order with no links.
 *    -ENOBUFS (a full device queue, a corked socket past its limit) is reported as -EAGAIN,
 *    like the readiness backends do.
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
#define RING_STOCK_DIV 64    /* the stream ring starts with pool/64 buffers (stock_ring) ... */
#define RING_STOCK_MIN 32    /* ... or this many, if more */

/* The multishot recvmsg template (see the traps above). The kernel copies namelen and
 * controllen at prep and never writes to it; nobody else does either, so every loop's ring may
 * read this one. */
static struct msghdr dgram_tmpl = { .msg_namelen = sizeof(struct sockaddr_storage) };
#define DGRAM_HDR (sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_storage))
#define DGRAM_RING_OFFSET ((uint32_t)(LOOP_DGRAM_HEADROOM - DGRAM_HDR))
_Static_assert(LOOP_DGRAM_HEADROOM >= DGRAM_HDR, "recvmsg header does not fit the headroom");

/* A gathered send's msghdr and iovec (see prep_send). */
struct sendv {
	struct msghdr msg;
	struct iovec iov[LOOP_SEND_MAX_SEGS];
};
#define SENDV_ARENA 256 /* gathered sends queued between two drains of the SQ */

struct uring_state {
	struct uc uc;
	struct loop *loop;
	struct sendv *sendv; /* the arena; NULL without FEAT_SUBMIT_STABLE: one run per send */
	uint32_t nsendv;     /* entries in use by SQEs the kernel may not have consumed yet */
	uint32_t avail;      /* pool buffers not held by the core (in the ring or about to be) */
	uint32_t in_ring;    /* pool buffers put in the stream ring and not yet seen in a CQE */
	uint32_t stock;      /* how many the stream ring is kept stocked with (see stock_ring) */
	uint32_t dgram_avail; /* the same for the datagram pool */
	bool recvmsg_oneshot; /* the kernel lacks multishot recvmsg */
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
	case OP_SEND: /* prep_send() */
		break;
	case OP_READ:
		io_uring_prep_read(sqe, op->fd, op->buf.base, op->buf.len, (uint64_t)-1);
		break;
	case OP_RECVMSG:
		if (st->recvmsg_oneshot)
			io_uring_prep_recvmsg(sqe, op->fd, op->msg, 0);
		else
			io_uring_prep_recvmsg_multishot(sqe, op->fd, &dgram_tmpl, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = UC_BG_DGRAM;
		break;
	case OP_SENDMSG:
		/* MSG_DONTWAIT: -EAGAIN on a full socket buffer, never a poll (traps above). */
		io_uring_prep_sendmsg(sqe, op->fd, op->msg, MSG_NOSIGNAL | MSG_DONTWAIT);
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

/* Multishot recvmsg from a buffer ring (6.0). The stream group serves: the probe's request is
 * cancelled before any byte could arrive on the idle socketpair. */
static void prep_probe_recvmsg(struct io_uring_sqe *sqe, int fd, uint32_t arg)
{
	(void)arg;
	io_uring_prep_recvmsg_multishot(sqe, fd, &dgram_tmpl, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UC_BG_STREAM;
}

/* The datagram pool's ring, when the loop has that pool: multishot if the kernel has it. */
static int dgram_init(struct uring_state *st, struct loop *loop)
{
	if (loop->dgram_pool.nbufs == 0)
		return 0;
	int rc = uc_probe(&st->uc, prep_probe_recvmsg, 0);
	if (rc == -EOPNOTSUPP)
		st->recvmsg_oneshot = true;
	else if (rc < 0)
		return rc;
	rc = uc_bufring_init(&st->uc, UC_BG_DGRAM, &loop->dgram_pool,
			     st->recvmsg_oneshot ? LOOP_DGRAM_HEADROOM : DGRAM_RING_OFFSET, true);
	if (rc == 0)
		st->dgram_avail = loop->dgram_pool.nbufs;
	return rc;
}

/* The stream ring holds `stock` buffers, not the whole pool: the rest wait on the pool's free
 * stack, warmest on top, and go in as the kernel takes buffers out. A ring holding the whole
 * pool hands buffers out in ring order, so a server that has echoed one message on each of
 * N connections has touched min(N, pool) buffers' pages however few were ever in use at once
 * (16 MiB by default, held for good); this way, the pages of at most twice `stock`. A recv
 * that finds the ring empty while the stack is not doubles `stock` (enobufs_rearm), so a
 * busy loop's ring grows to what it uses. Run before every wait (the enter publishes it). */
static void stock_ring(struct uring_state *st)
{
	/* Released buffers go straight back while the ring holds under twice the stock, so a
	 * steady echo costs one ring entry per message and this loop runs only after a burst. */
	struct bufpool *p = &st->loop->pool;
	while (st->in_ring < st->stock && p->nfree) {
		uc_buf_put(&st->uc, UC_BG_STREAM, (uint32_t)bufpool_get(p));
		st->in_ring++;
	}
}

static void uring_fini(struct loop *loop)
{
	struct uring_state *st = loop->be_state;
	if (!st)
		return;
	uc_fini(&st->uc);
	free(st->sendv);
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
	rc = uc_bufring_init(&st->uc, UC_BG_STREAM, &loop->pool, 0, false);
	if (rc == 0) {
		/* Stocked before the probes: a recv finding the ring empty fails at once. */
		st->stock = loop->pool.nbufs / RING_STOCK_DIV;
		if (st->stock < RING_STOCK_MIN)
			st->stock = loop->pool.nbufs < RING_STOCK_MIN ? loop->pool.nbufs
								      : RING_STOCK_MIN;
		stock_ring(st);
		/* One recv's burst: a sixteenth of the pool, at least one buffer. */
		uint32_t nb = loop->pool.nbufs / RECV_LIMIT_DIV ? loop->pool.nbufs / RECV_LIMIT_DIV : 1;
		uint64_t limit = (uint64_t)nb * loop->pool.bufsize;
		st->recv_limit = limit > INT32_MAX ? INT32_MAX : (uint32_t)limit;
		if (cfg->no_recv_limit || uc_probe(&st->uc, prep_probe_recv, st->recv_limit) < 0) {
			st->recv_limit = 0;
			rc = uc_probe(&st->uc, prep_probe_recv, 0);
		}
	}
	if (rc == 0)
		rc = dgram_init(st, loop);
	if (rc < 0) {
		uring_fini(loop);
		return rc;
	}
	if (st->uc.features & IORING_FEAT_SUBMIT_STABLE) {
		/* Not zeroed: untouched pages cost nothing until gathered sends use them. */
		st->sendv = malloc(SENDV_ARENA * sizeof(*st->sendv));
		if (!st->sendv) {
			uring_fini(loop);
			return -ENOMEM;
		}
		st->uc.uses |= UC_USE_SUBMIT_STABLE;
	}
	st->avail = loop->pool.nbufs;
	loop->cq_entries = st->uc.cq_entries;
	st->oneshot_accept = cfg->shared_listeners;
	return 0;
}

/* IORING_OP_SEND, every other field zero: one 64-byte clear and five stores, where liburing's
 * prep writes each field in turn (this runs once per echoed message). */
static inline void prep_send_one(struct io_uring_sqe *sqe, int fd, const void *base,
				 uint32_t len)
{
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_SEND;
	sqe->fd = fd;
	sqe->addr = (uint64_t)(uintptr_t)base;
	sqe->len = len;
	sqe->msg_flags = MSG_NOSIGNAL;
}

/* A send of op's runs. Several go out as one SENDMSG whose msghdr and iovec live in the arena:
 * with FEAT_SUBMIT_STABLE the kernel has copied them once it has consumed the SQE, so an entry
 * is free again as soon as every SQE handed out before this one has been consumed (the SQ's
 * head has reached this SQE; after a submit forced by a full SQ it has). A full arena sends
 * the first run alone: the core takes a short send in its stride. */
static void prep_send(struct uring_state *st, struct io_uring_sqe *sqe, struct op *op)
{
	const struct io_uring_sq *sq = &st->uc.ring.sq;
	bool gather = op->nsegs > 1 && st->sendv;
	bool arena_free = gather && sq->sqe_tail - 1 == *sq->khead;
	if (!gather || (!arena_free && st->nsendv == SENDV_ARENA)) {
		struct buf b = op_send_head(op);
		prep_send_one(sqe, op->fd, b.base, b.len);
		return;
	}
	if (arena_free)
		st->nsendv = 0;
	struct sendv *v = &st->sendv[st->nsendv++];
	v->msg = (struct msghdr){ .msg_iov = v->iov, .msg_iovlen = op_send_iovec(op, v->iov) };
	io_uring_prep_sendmsg(sqe, op->fd, &v->msg, MSG_NOSIGNAL);
}

/* Queue op's send: its SQE, or NULL when the SQ cannot take one. */
static struct io_uring_sqe *queue_send(struct uring_state *st, struct op *op)
{
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (sqe) {
		prep_send(st, sqe, op);
		io_uring_sqe_set_data(sqe, op);
	}
	return sqe;
}

static int uring_submit(struct loop *loop, struct op *op)
{
	struct uring_state *st = loop->be_state;
	op->backend_data = 0;
	if (op->code == OP_SEND) /* once per echoed message: first */
		return queue_send(st, op) ? 0 : -EBUSY;
	if (op->code >= OP_RECVMSG &&
	    ((op->code == OP_RECVMSG && (!op->msg || !loop->dgram_pool.nbufs)) ||
	     (op->code == OP_SENDMSG && !op->msg)))
		return -EINVAL; /* reactor.h: RECVMSG needs a datagram pool, both a msghdr */
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe)
		return -EBUSY;
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

/* A receive (stream or datagram) ended -ENOBUFS without OPF_MORE: its ring ran dry inside one
 * kernel pass. If `avail` buffers have come back since, re-arm at once (the ring's tail is
 * published before this SQE is submitted) and return true; a cancelled op's -ENOBUFS becomes
 * its -ECANCELED. */
static bool enobufs_rearm(struct uring_state *st, struct op *op, uint32_t avail, int *res)
{
	if (op->cancelling) {
		*res = -ECANCELED;
		return false;
	}
	if (avail == 0 || op->backend_data >= ENOBUFS_REARMS_MAX)
		return false;
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe)
		return false;
	prep_op(st, sqe, op);
	op->backend_data++;
	return true;
}

/* A send that ended -EAGAIN sent nothing: sent again, polling first (5.19), unseen by the
 * core. See the trap above: a SENDMSG that io_uring hands to a worker thread honours the
 * socket's O_NONBLOCK. A cancelled one ends. */
static bool send_rearm(struct uring_state *st, struct op *op)
{
	if (op->cancelling)
		return false;
	struct io_uring_sqe *sqe = queue_send(st, op);
	if (sqe)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	return sqe != NULL;
}

/* A datagram's CQE: find the payload and the source in the buffer (traps above). */
static void on_recvmsg_cqe(struct uring_state *st, struct op *op, int res, unsigned flags)
{
	unsigned cf = (flags & IORING_CQE_F_MORE) ? OPF_MORE : 0;
	if (!(flags & IORING_CQE_F_BUFFER)) {
		if (res == -ENOBUFS && !(cf & OPF_MORE) && enobufs_rearm(st, op, st->dgram_avail, &res))
			return;
		loop_complete(st->loop, op, res, cf);
		return;
	}
	uint32_t bid = flags >> IORING_CQE_BUFFER_SHIFT;
	char *buf = bufpool_addr(&st->loop->dgram_pool, bid);
	op->backend_data = 0;
	char *payload;
	uint32_t len;
	bool trunc;
	socklen_t cap = op->msg->msg_namelen; /* the capacity: restored after every datagram */
	if (st->recvmsg_oneshot) {
		/* The kernel wrote the source and msg_flags into op->msg itself. */
		payload = buf + LOOP_DGRAM_HEADROOM;
		len = res > 0 ? (uint32_t)res : 0;
		trunc = op->msg->msg_flags & MSG_TRUNC;
	} else {
		/* The layout io_uring_recvmsg_validate/_name/_payload describe, read with memcpy:
		 * pool buffers are dgram_bufsize apart, so the header may be misaligned. */
		const char *h = buf + DGRAM_RING_OFFSET;
		struct io_uring_recvmsg_out o;
		if (res < (int)DGRAM_HDR) {
			/* Shorter than its own header: nothing to deliver. The buffer goes back. */
			uc_buf_put(&st->uc, UC_BG_DGRAM, bid);
			if (!(cf & OPF_MORE))
				loop_complete(st->loop, op, res < 0 ? res : -EPROTO, 0);
			return;
		}
		memcpy(&o, h, sizeof(o));
		socklen_t n = o.namelen < cap ? o.namelen : cap;
		if (n > sizeof(struct sockaddr_storage))
			n = sizeof(struct sockaddr_storage);
		memcpy(op->msg->msg_name, h + sizeof(o), n);
		op->msg->msg_namelen = o.namelen;
		payload = buf + LOOP_DGRAM_HEADROOM; /* h + DGRAM_HDR: no control data asked */
		len = (uint32_t)res - (uint32_t)DGRAM_HDR;
		trunc = o.flags & MSG_TRUNC;
	}
	st->dgram_avail--;
	op->buf = (struct buf){ .base = payload, .len = len, .bid = bid | LOOP_DGRAM_BID };
	cf |= OPF_BUFFER | (trunc ? OPF_TRUNC : 0);
	if (!(cf & OPF_MORE) && !op->cancelling && !st->recvmsg_oneshot) {
		/* A multishot that ended with data (CQ overflow): renew it unseen, as OP_RECV. */
		struct io_uring_sqe *sqe = uc_sqe(&st->uc);
		if (sqe) {
			prep_op(st, sqe, op);
			cf |= OPF_MORE;
		}
	}
	loop_complete(st->loop, op, (int)len, cf);
	if (cf & OPF_MORE)
		op->msg->msg_namelen = cap; /* still armed: op and msg are the backend's */
}

/* Is the CQE after the one being handled (uc_reap has moved the head past it) more data for
 * the same op? Then this completion carries OPF_BATCH. Only a CQE with a buffer counts: it is
 * always delivered, where an -ENOBUFS may be re-armed unseen (enobufs_rearm) and would leave
 * the core holding its send. One that arrives after this reap ends is missed: the core then
 * sends one iteration later, which costs a syscall, never a byte. */
static inline bool next_cqe_is(const struct uc *uc, uint64_t ud)
{
	const struct io_uring_cq *cq = &uc->ring.cq;
	unsigned head = *cq->khead;
	if (head == io_uring_smp_load_acquire(cq->ktail))
		return false;
	const struct io_uring_cqe *next = &cq->cqes[head & cq->ring_mask];
	return next->user_data == ud && (next->flags & IORING_CQE_F_BUFFER);
}

/* Runs twice per echoed message: uring_wait is flattened, so it is inlined into the reap. */
static inline void on_cqe(void *ctx, uint64_t ud, int res, unsigned flags)
{
	struct uring_state *st = ctx;
	if (ud & UD_IGNORE)
		return;
	struct op *op = (struct op *)(uintptr_t)ud;
	if (op->code == OP_SEND) { /* half of all CQEs: straight through */
		if (__builtin_expect(res == -EAGAIN, 0) && send_rearm(st, op))
			return;
		loop_complete(st->loop, op, res, 0);
		return;
	}
	if (op->code == OP_RECVMSG) {
		on_recvmsg_cqe(st, op, res, flags);
		return;
	}
	if (op->code == OP_SENDMSG) {
		/* A full socket buffer or device queue: the caller drops the datagram. */
		loop_complete(st->loop, op, res == -ENOBUFS || res == -EINTR ? -EAGAIN : res, 0);
		return;
	}
	unsigned cf = (flags & IORING_CQE_F_MORE) ? OPF_MORE : 0;
	if (flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = flags >> IORING_CQE_BUFFER_SHIFT;
		op->buf = (struct buf){ .base = bufpool_addr(&st->loop->pool, bid),
					.len = res > 0 ? (uint32_t)res : 0,
					.bid = bid };
		st->avail--;
		st->in_ring--;
		cf |= OPF_BUFFER;
		if ((cf & OPF_MORE) && next_cqe_is(&st->uc, ud))
			cf |= OPF_BATCH;
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
		/* The ring ran dry with buffers on the stack: stock more from now on. */
		if (st->loop->pool.nfree && st->stock < st->loop->pool.nbufs)
			st->stock = st->stock * 2 < st->loop->pool.nbufs ? st->stock * 2
									  : st->loop->pool.nbufs;
		if (enobufs_rearm(st, op, st->avail, &res))
			return;
	}
	loop_complete(st->loop, op, res, cf);
}

/* flatten: the reap and its CQE handler inlined here, where the compiler sees the handler (a
 * best effort: an unoptimised build keeps the calls). */
static __attribute__((flatten)) int uring_wait(struct loop *loop, int timeout_ms)
{
	struct uring_state *st = loop->be_state;
	stock_ring(st);
	int rc = uc_wait(&st->uc, loop, timeout_ms, on_cqe, st);
	loop->cq_overflows = st->uc.overflows;
	return rc;
}

static void uring_buf_release(struct loop *loop, uint32_t bid)
{
	struct uring_state *st = loop->be_state;
	if (bid & LOOP_DGRAM_BID) {
		st->dgram_avail++;
		uc_buf_put(&st->uc, UC_BG_DGRAM, bid & ~LOOP_DGRAM_BID);
		return;
	}
	st->avail++;
	if (st->in_ring < 2 * st->stock) { /* warmest: straight back (stock_ring's hysteresis) */
		uc_buf_put(&st->uc, UC_BG_STREAM, bid);
		st->in_ring++;
	} else {
		bufpool_put(&loop->pool, bid);
	}
}

/* A close queued on the ring (IORING_OP_CLOSE, 5.6; no CQE on success): done at the next
 * enter, in order with what was queued before it. A socket's close never blocks (no
 * ->flush), so it runs inline there, not on a worker. No SQE: close(2) now. */
static int uring_close_fd(struct loop *loop, int fd)
{
	struct uring_state *st = loop->be_state;
	struct io_uring_sqe *sqe = uc_sqe(&st->uc);
	if (!sqe) {
		loop_count(loop, SC_CLOSE);
		return close(fd) < 0 ? -errno : 0;
	}
	io_uring_prep_close(sqe, fd);
	sqe->user_data = UD_IGNORE;
	sqe->flags |= (uint8_t)st->uc.sqe_flags_ignored;
	return 0;
}

struct uc *uring_ring_of(const struct loop *loop)
{
	return &((struct uring_state *)loop->be_state)->uc;
}

const struct backend backend_uring = {
	.name = "uring",
	.summary = "completion (io_uring), multishot accept+recv+recvmsg, kernel-selected "
		   "buffers, one enter per wake-up",
	.caps = 0,
	.init = uring_init,
	.fini = uring_fini,
	.submit = uring_submit,
	.cancel = uring_cancel,
	.wait = uring_wait,
	.buf_release = uring_buf_release,
	.forget_fd = NULL,
	.close_fd = uring_close_fd,
	.describe = uc_describe,
};
