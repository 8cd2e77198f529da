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
 *
 * Newer features, probed once by uc_init on the kernel actually running (never from version
 * numbers: distributions backport, seccomp filters refuse), into uc->has; `echod
 * --list-backends` shows each as available here or not, and used by the backend or not
 * (uc->uses, UC_USE_*: uc_init sets what it does itself, a backend ORs in what it adopts):
 *   registered ring fd   io_uring_register_ring_fd (5.18): what uc_init got; used when got.
 *   direct accept        multishot accept into a direct descriptor (IORING_FILE_INDEX_ALLOC
 *                        over a sparse file table, 5.19): a cancelled accept on a listener.
 *   recv bundles         IORING_RECVSEND_BUNDLE (6.10): IORING_FEAT_RECVSEND_BUNDLE, which
 *                        came with it; without the bit, a cancelled bundle recv.
 *   incremental buffers  IOU_PBUF_RING_INC (6.12): a one-entry buffer ring registered with the
 *                        flag and unregistered (older kernels refuse the flag: EINVAL).
 *   min-wait             IORING_FEAT_MIN_TIMEOUT (6.12), the bit alone: an enter carrying a
 *                        min_wait_usec would prove nothing on kernels before 5.18, which
 *                        ignored that field (it was "pad", then refused unless zero).
 *   nodrop               IORING_FEAT_NODROP (5.5): overflowed CQEs are kept, which uc_wait's
 *                        EBUSY handling relies on (used).
 *   submit-stable        IORING_FEAT_SUBMIT_STABLE (5.5): what an SQE points to may change once
 *                        the SQE is consumed.
 * The probes use a spare buffer group (UC_BG_PROBE) and user_data the backends ignore, and
 * leave nothing registered behind.
 *
 * Waiting in batches (uc_wait), a measurement aid, off by default: ECHOD_URING_WAIT="NR[:USEC]"
 * in the environment, read by every uc_init (so once per loop), makes a wait that blocks ask
 * the kernel for NR completions (wait_nr, 1 to UC_WAIT_NR_MAX; 1 = the default, return at the
 * first) and, on a kernel with min-wait, for USEC microseconds at most (min_wait_usec, 0 to
 * UC_MIN_WAIT_MAX_USEC): once USEC have passed the wait ends with what has arrived, or, when
 * nothing has, at the first completion after that. So a busy loop returns with a batch and an
 * idle one still wakes for a lone completion, at most USEC late. The loop's own timeout (its
 * next timer) still bounds every wait. Without min-wait (USEC 0 or absent, or a kernel without
 * the feature, where USEC is ignored and the describe line says so), NR > 1 holds a lone
 * completion until NR have arrived or the loop's timeout expires, forever with no timer
 * running: for measuring pure batching, never for serving. A value that does not parse is
 * ignored (NR 1) with one warning line per process.
 */
#ifndef ECHOD_URING_COMMON_H
#define ECHOD_URING_COMMON_H

#include <errno.h>
#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reactor.h"

#define UC_SQ_ENTRIES 4096u
#define UC_CQ_ENTRIES (4u * UC_SQ_ENTRIES)

#define UC_BG_STREAM 0u /* OP_RECV's buffer group: the loop's pool */
#define UC_BG_DGRAM 1u  /* OP_RECVMSG's: the loop's datagram pool */
#define UC_BGROUPS 2u
#define UC_BG_PROBE 0xfffeu /* the feature probes' buffer group, registered only during one */

#define UC_WAIT_NR_MAX 1024u          /* ECHOD_URING_WAIT's NR */
#define UC_MIN_WAIT_MAX_USEC 1000000u /* and its USEC: a second */

/* What the running kernel offers, probed by uc_init (see above). */
struct uc_features {
	bool ring_fd;       /* the ring fd is registered (5.18) */
	bool direct_accept; /* multishot accept straight into the file table (5.19) */
	bool recv_bundle;   /* IORING_RECVSEND_BUNDLE (6.10) */
	bool pbuf_inc;      /* IOU_PBUF_RING_INC (6.12) */
	bool min_wait;      /* IORING_FEAT_MIN_TIMEOUT (6.12) */
	bool nodrop;        /* IORING_FEAT_NODROP (5.5) */
	bool submit_stable; /* IORING_FEAT_SUBMIT_STABLE (5.5) */
};

/* uc->uses: which of them the backend relies on. */
#define UC_USE_RING_FD       (1u << 0)
#define UC_USE_DIRECT_ACCEPT (1u << 1)
#define UC_USE_RECV_BUNDLE   (1u << 2)
#define UC_USE_PBUF_INC      (1u << 3)
#define UC_USE_MIN_WAIT      (1u << 4)
#define UC_USE_NODROP        (1u << 5)
#define UC_USE_SUBMIT_STABLE (1u << 6)

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
	char *first;        /* base + offset: buffer bid's entry starts bid * bufsize past it */
	uint32_t entry_len; /* bufsize - offset */
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
	/* Waits that found the CQ overflowed (CQEs held in the kernel); the backends copy it to
	 * loop->cq_overflows. */
	uint64_t overflows;
	/* Counted at every io_uring_enter (the loop's tally; set by the backend after uc_init). */
	uint64_t *enters;
	struct uc_features has; /* probed by uc_init */
	unsigned uses;          /* UC_USE_*: uc_init's own, then the backend's (after uc_init) */
	/* Batched waits (ECHOD_URING_WAIT, above): completions a blocking wait asks for (1: the
	 * first), and the min-wait asked for in microseconds (0: none), passed to the kernel
	 * only with has.min_wait and wait_nr > 1. */
	unsigned wait_nr;
	unsigned min_wait_usec;
	int probe_error; /* errno of a probe that could not run (uc_init goes on without it) */
};

/* Create the ring (see above for the fallbacks), probe the features into uc->has and read
 * ECHOD_URING_WAIT. Returns 0 or -errno. */
int uc_init(struct uc *uc, uint32_t sq_entries);
/* The probes uc_init runs, for a ring that is up. With trust_feature_bits false, every
 * feature that has an SQE or register probe is probed that way even when the kernel's
 * feature bits already answer (tests compare the two). Returns 0 or -errno (a probe that
 * could not run at all: no socket, no memory); a feature the kernel refuses is just false. */
int uc_probe_features(struct uc *uc, bool trust_feature_bits, struct uc_features *out);
/* ECHOD_URING_WAIT's syntax: "NR" or "NR:USEC", decimal digits only, NR 1 to UC_WAIT_NR_MAX,
 * USEC 0 to UC_MIN_WAIT_MAX_USEC. Returns 0 and fills both, or -EINVAL and leaves them. */
int uc_wait_parse(const char *s, unsigned *nr, unsigned *usec);
/* The ring of a loop that runs on an io_uring backend, or NULL (another backend, or none
 * set up). Each backend says where its state keeps the ring: uring.c's state starts with it,
 * uring_poll.c's with its struct readiness. */
struct uc *uc_of_loop(const struct loop *loop);
struct uc *uring_ring_of(const struct loop *loop);
struct uc *uring_poll_ring_of(const struct loop *loop);
/* struct backend's describe hook: one line, each feature "on" (available and used),
 * "available, off" or "not in this kernel", then the batched-wait setting and the set-up
 * flags the kernel took. */
void uc_describe(struct loop *loop, char *buf, size_t len);
void uc_describe_uc(const struct uc *uc, char *buf, size_t len);
/* Register provided-buffer ring `bgid` (< UC_BGROUPS) over `pool`, the kernel's part of each
 * buffer from `offset` on, bid = pool index. With `fill` every buffer starts in the ring;
 * without, it starts empty and the backend stocks it (uc_buf_put). Returns 0, or -EOPNOTSUPP
 * when the kernel lacks buffer rings. */
int uc_bufring_init(struct uc *uc, unsigned bgid, struct bufpool *pool, uint32_t offset,
		    bool fill);
void uc_fini(struct uc *uc);

/* Give buffer `bid` of group `bgid` back to the kernel. It becomes visible at the next enter
 * (batched). */
static inline void uc_buf_put(struct uc *uc, unsigned bgid, uint32_t bid)
{
	struct uc_bufring *b = &uc->br[bgid];
	io_uring_buf_ring_add(b->br, b->first + (size_t)bid * b->bufsize, b->entry_len,
			      (unsigned short)bid, (int)b->mask, (int)b->unflushed);
	b->unflushed++;
}

/* An SQE, submitting what is queued first if the SQ is full. NULL only if that failed. */
struct io_uring_sqe *uc_sqe_slow(struct uc *uc);
static inline struct io_uring_sqe *uc_sqe(struct uc *uc)
{
	/* liburing's io_uring_get_sqe, less its tests for SQE128 and SQPOLL, which these rings
	 * never set up: without SQPOLL the head moves only inside our own io_uring_enter. */
	struct io_uring_sq *sq = &uc->ring.sq;
	unsigned tail = sq->sqe_tail;
	if (__builtin_expect(tail - *sq->khead >= sq->ring_entries, 0))
		return uc_sqe_slow(uc);
	sq->sqe_tail = tail + 1;
	return &sq->sqes[tail & sq->ring_mask];
}

/* Reap what the CQ holds, calling fn for each CQE after it has left the CQ (so a callback that
 * makes the kernel post more, by submitting on a full SQ, cannot overrun it). Two passes at
 * most: what was there, then what the callbacks made the kernel post meanwhile; anything later
 * waits for the next wait, so a reap always ends. Reads the ring directly: liburing's peek
 * falls back to a syscall when the ring has flags set, and this loop must never enter the
 * kernel. Returns how many were reaped. */
typedef void (*uc_cqe_fn)(void *ctx, uint64_t user_data, int res, unsigned flags);
static inline unsigned uc_reap(struct uc *uc, uc_cqe_fn fn, void *ctx)
{
	struct io_uring_cq *cq = &uc->ring.cq;
	/* Only this thread moves the head: it stays in a register, not re-read after each
	 * callback. (The ring's other fields in locals too cost more: they spill.) */
	unsigned head = *cq->khead, first = head;
	for (int pass = 0; pass < 2; pass++) {
		unsigned tail = io_uring_smp_load_acquire(cq->ktail);
		if (head == tail)
			break;
		do {
			const struct io_uring_cqe *cqe = &cq->cqes[head & cq->ring_mask];
			uint64_t ud = cqe->user_data;
			int res = cqe->res;
			unsigned flags = cqe->flags;
			io_uring_smp_store_release(cq->khead, ++head);
			fn(ctx, ud, res, flags);
		} while (head != tail);
	}
	return head - first;
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
 * already there; then read the loop's clock (once for the whole batch: loop_clock_refresh)
 * and reap what is there through fn (uc_reap). Returns CQEs reaped, -EINTR
 * (benign: the reactor goes round again), or a hard error (-EBADR: the kernel dropped CQEs,
 * so some op would never see its final completion). EBUSY (CQ overflow not flushable) and
 * EAGAIN (no memory) reap first and submit again once, without blocking. */
int uc_wait_enter(struct uc *uc, int timeout_ms);
int uc_wait_resubmit(struct uc *uc);
/* Inline, so each backend's reap calls its own CQE handler directly (and may inline it): an
 * indirect call per CQE, with the handler's prologue, was a tenth of uring's instructions per
 * message. */
static inline int uc_wait(struct uc *uc, struct loop *loop, int timeout_ms, uc_cqe_fn fn,
			  void *ctx)
{
	int rc = uc_wait_enter(uc, timeout_ms);
	loop_clock_refresh(loop);
	unsigned n = uc_reap(uc, fn, ctx);
	if (__builtin_expect(rc == -EBUSY || rc == -EAGAIN, 0)) {
		rc = uc_wait_resubmit(uc);
		n += uc_reap(uc, fn, ctx);
	}
	if (rc == -ETIME || (rc == -EINTR && n > 0))
		rc = 0;
	return rc < 0 ? rc : (int)n;
}

#endif
