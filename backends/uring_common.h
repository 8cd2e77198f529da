/* uring_common.h - what the two io_uring backends share: ring set-up with run-time fallbacks,
 * one io_uring_enter per loop iteration, SQE allocation that survives a full SQ, CQE reaping,
 * and (for backends/uring.c only) provided-buffer rings over the loop's pools.
 *
 * Private to backends/uring.c and backends/uring_poll.c; nothing outside backends/ includes it.
 *
 * Set-up, best first, each step taken only when the kernel refuses the previous one (EINVAL):
 *   SINGLE_ISSUER | DEFER_TASKRUN   completions are produced only when this thread enters the
 *                                   kernel with GETEVENTS (6.1+): no task-work interrupts, and
 *                                   the thread that created the ring must be the one that uses
 *                                   and reaps it (the server creates each loop in its worker);
 *   COOP_TASKRUN                    task work runs at the next kernel entry, not via an IPI (5.19);
 *   nothing                         task work by IPI, the oldest kernels.
 * Each with SUBMIT_ALL (one bad SQE does not hold back the rest, 5.18; dropped on a last try)
 * and CQSIZE = 4 x SQ with CLAMP; SQ 4096, or 256 if the big ring hits a memory limit. The
 * ring fd is registered (5.18) so each enter skips the fd-table lookup. FEAT_EXT_ARG (5.11: the wait's timeout passed to enter, no timeout SQE) is
 * required: every kernel with multishot recv has it. Anything else refuses (ENOSYS, EPERM from
 * kernel.io_uring_disabled or seccomp) and init returns that errno unchanged.
 *
 * Tear-down: a ring's exit cancels what is in flight only later, in a kernel worker, and until
 * then each request keeps its file open (a listener would still complete handshakes after the
 * process is gone). uc_fini submits what is queued, cancels everything synchronously and runs
 * the deferred task work before exiting the ring.
 */
#ifndef ECHOD_URING_COMMON_H
#define ECHOD_URING_COMMON_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "reactor.h"

#define UC_SQ_ENTRIES 4096u
#define UC_CQ_ENTRIES (4u * UC_SQ_ENTRIES)

#define UC_BG_STREAM 0u /* OP_RECV's buffer group: the loop's pool */
#define UC_BG_DGRAM 1u  /* OP_RECVMSG's: the loop's datagram pool */
#define UC_BGROUPS 2u

/* One provided-buffer ring (buffer group = its index in struct uc). Each entry hands the
 * kernel a pool buffer from `offset` to its end, so a backend can keep the front of every
 * buffer for itself (the datagram ring places the payload at LOOP_DGRAM_HEADROOM). */
struct uc_bufring {
	struct io_uring_buf_ring *br; /* NULL: not registered */
	size_t bytes;
	unsigned mask;
	unsigned unflushed; /* buffers added since the tail was last published */
	char *base;
	uint32_t bufsize;
	uint32_t offset;
};

struct uc {
	struct io_uring ring;
	bool ring_up;
	unsigned enter_fd;     /* the registered index, or the ring fd */
	unsigned enter_flags;  /* IORING_ENTER_REGISTERED_RING when registered */
	unsigned setup_flags;  /* what the kernel accepted */
	unsigned features;
	unsigned cq_entries;
	unsigned sqe_flags_ignored; /* IOSQE_CQE_SKIP_SUCCESS when supported, for fire-and-forget */
	/* Provided-buffer rings, only for the completion backend: group UC_BG_STREAM over the
	 * loop's pool, group UC_BG_DGRAM over its datagram pool (when it has one). */
	struct uc_bufring br[UC_BGROUPS];
	/* Waits that found the CQ overflowed (CQEs held in the kernel). Each io_uring backend's
	 * state starts with its struct uc, so tests read this through loop->be_state. */
	uint64_t overflows;
	/* Counted at every io_uring_enter (the loop's tally; set by the backend after uc_init). */
	uint64_t *enters;
};

/* Create the ring (see above for the fallbacks). Returns 0 or -errno. */
int uc_init(struct uc *uc, uint32_t sq_entries);
/* Register provided-buffer ring `bgid` (< UC_BGROUPS) over `pool`: every buffer starts in the
 * ring with bid = pool index, the kernel's part of it from `offset` on. Returns 0, or
 * -EOPNOTSUPP when the kernel lacks buffer rings. */
int uc_bufring_init(struct uc *uc, unsigned bgid, struct bufpool *pool, uint32_t offset);
void uc_fini(struct uc *uc);

/* Give buffer `bid` of group `bgid` back to the kernel. It becomes visible at the next enter
 * (batched). */
static inline void uc_buf_put(struct uc *uc, unsigned bgid, uint32_t bid)
{
	struct uc_bufring *b = &uc->br[bgid];
	io_uring_buf_ring_add(b->br, b->base + (size_t)bid * b->bufsize + b->offset,
			      b->bufsize - b->offset, (unsigned short)bid, (int)b->mask,
			      (int)b->unflushed);
	b->unflushed++;
}

/* An SQE, submitting what is queued first if the SQ is full. NULL only if that failed. */
struct io_uring_sqe *uc_sqe_slow(struct uc *uc);
static inline struct io_uring_sqe *uc_sqe(struct uc *uc)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&uc->ring);
	return sqe ? sqe : uc_sqe_slow(uc);
}

/* Reap at most `max` CQEs, calling fn for each after it has left the CQ (so a callback that
 * makes the kernel post more, by submitting on a full SQ, cannot overrun it). Reads the ring
 * directly: liburing's peek falls back to a syscall when the ring has flags set, and this loop
 * must never enter the kernel. Returns how many were reaped. */
typedef void (*uc_cqe_fn)(void *ctx, uint64_t user_data, int res, unsigned flags);
static inline unsigned uc_reap(struct uc *uc, unsigned max, uc_cqe_fn fn, void *ctx)
{
	struct io_uring_cq *cq = &uc->ring.cq;
	unsigned n = 0;
	while (n < max) {
		unsigned head = *cq->khead;
		if (head == io_uring_smp_load_acquire(cq->ktail))
			break;
		const struct io_uring_cqe *cqe = &cq->cqes[head & cq->ring_mask];
		uint64_t ud = cqe->user_data;
		int res = cqe->res;
		unsigned flags = cqe->flags;
		io_uring_smp_store_release(cq->khead, head + 1);
		n++;
		fn(ctx, ud, res, flags);
	}
	return n;
}

/* Does the kernel know a request? prep() fills an SQE for it on one end of an idle
 * socketpair; the probe cancels it and reads its CQE: -ECANCELED means known (0), -EINVAL
 * means too old (-EOPNOTSUPP). Both requests carry user_data with the two low bits set, which
 * both backends ignore, so a straggling CQE is never taken for one of theirs. */
typedef void (*uc_probe_prep_fn)(struct io_uring_sqe *sqe, int fd, uint32_t arg);
int uc_probe(struct uc *uc, uc_probe_prep_fn prep, uint32_t arg);

/* Publish returned buffers and queued SQEs, without waiting. Returns >= 0 or -errno. */
int uc_submit(struct uc *uc);

/* One wait of the loop: one io_uring_enter that publishes returned buffers and queued SQEs and
 * waits up to timeout_ms (-1: no limit, 0: do not block) for a completion unless one is
 * already there; then reap what is there through fn (uc_reap). Returns CQEs reaped, -EINTR
 * (benign: the reactor goes round again), or a hard error (-EBADR: the kernel dropped CQEs,
 * so some op would never see its final completion). EBUSY (CQ overflow not flushable) and
 * EAGAIN (no memory) reap first and submit again once, without blocking. */
int uc_wait(struct uc *uc, int timeout_ms, uc_cqe_fn fn, void *ctx);

#endif
