/* uring_common.c - ring set-up, the enter/wait step and the provided-buffer ring shared by
 * backends/uring.c and backends/uring_poll.c (see uring_common.h for what each flag buys).
 *
 * The SQ tail is published here rather than through io_uring_submit*(): liburing 2.3's
 * submit-and-wait variants may enter twice or return early when CQEs are already there, and
 * the loop wants exactly one io_uring_enter per iteration that both submits and waits.
 * liburing maps SQ slots to SQEs one to one at set-up, so publishing is a tail store.
 */
#include "uring_common.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* liburing maps and unmaps its rings with raw syscalls that ThreadSanitizer does not see, so
 * memory one worker's ring used can come back as another worker's ring with the old accesses
 * still in TSan's books, reported as races. Every ring's tear-down releases, and every ring's
 * set-up acquires, one sync object: a ring set up after another went away is ordered after it,
 * which is what the kernel's unmap and map guarantee. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char tsan_ring_handoff;
#define TSAN_RING_UP() __tsan_acquire(&tsan_ring_handoff)
#define TSAN_RING_DOWN() __tsan_release(&tsan_ring_handoff)
#else
#define TSAN_RING_UP() ((void)0)
#define TSAN_RING_DOWN() ((void)0)
#endif

int uc_init(struct uc *uc, uint32_t sq_entries)
{
	static const unsigned modes[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
		IORING_SETUP_SUBMIT_ALL,
		0,
	};
	/* Smaller rings only if the big ones hit a memory limit (RLIMIT_MEMLOCK before 5.12). */
	unsigned first = sq_entries ? sq_entries : UC_SQ_ENTRIES;
	const unsigned sizes[] = { first, first < 256 ? first : 256 };
	memset(uc, 0, sizeof(*uc));
	int rc = -EINVAL;
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
			struct io_uring_params p;
			memset(&p, 0, sizeof(p));
			p.flags = modes[m] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
			p.cq_entries = 4 * sizes[z];
			rc = io_uring_queue_init_params(sizes[z], &uc->ring, &p);
			if (rc == 0) {
				uc->setup_flags = p.flags;
				uc->features = p.features;
				uc->cq_entries = p.cq_entries;
				goto up;
			}
			if (rc != -EINVAL)
				break; /* ENOSYS, EPERM (io_uring_disabled, seccomp), ENOMEM, EMFILE */
		}
		if (rc != -ENOMEM)
			return rc;
	}
	return rc;
up:
	TSAN_RING_UP();
	uc->ring_up = true;
	if (!(uc->features & IORING_FEAT_EXT_ARG)) {
		uc_fini(uc);
		return -EOPNOTSUPP;
	}
	if (io_uring_register_ring_fd(&uc->ring) == 1) {
		uc->enter_fd = (unsigned)uc->ring.enter_ring_fd;
		uc->enter_flags = IORING_ENTER_REGISTERED_RING;
	} else {
		uc->enter_fd = (unsigned)uc->ring.ring_fd;
	}
	if (uc->features & IORING_FEAT_CQE_SKIP)
		uc->sqe_flags_ignored = IOSQE_CQE_SKIP_SUCCESS;
	return 0;
}

int uc_bufring_init(struct uc *uc, unsigned bgid, struct bufpool *pool, uint32_t offset)
{
	/* Buffer ids are 16 bits and a ring holds at most 32768 entries. */
	if (bgid >= UC_BGROUPS || pool->nbufs == 0 || pool->nbufs > 32768 ||
	    offset >= pool->bufsize)
		return -EINVAL;
	struct uc_bufring *b = &uc->br[bgid];
	unsigned entries = 1;
	while (entries < pool->nbufs)
		entries <<= 1;
	long page = sysconf(_SC_PAGESIZE);
	size_t bytes = entries * sizeof(struct io_uring_buf);
	bytes = (bytes + (size_t)page - 1) & ~((size_t)page - 1);
	void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	b->br = mem;
	b->bytes = bytes;
	b->mask = entries - 1;
	b->unflushed = 0;
	b->base = pool->mem;
	b->bufsize = pool->bufsize;
	b->offset = offset;
	io_uring_buf_ring_init(b->br);
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)mem;
	reg.ring_entries = entries;
	reg.bgid = (uint16_t)bgid;
	int rc = io_uring_register_buf_ring(&uc->ring, &reg, 0);
	if (rc < 0) {
		munmap(mem, bytes);
		b->br = NULL;
		return rc == -EINVAL ? -EOPNOTSUPP : rc;
	}
	for (uint32_t bid = 0; bid < pool->nbufs; bid++)
		uc_buf_put(uc, bgid, bid);
	return 0;
}

static int enter(struct uc *uc, unsigned submit, unsigned wait_nr, unsigned flags,
		 int timeout_ms);

void uc_fini(struct uc *uc)
{
	/* Exiting the ring cancels whatever is still in flight, but in a kernel worker, after
	 * this returns (even after the process has exited): until then every request keeps its
	 * file open, so a closed listener would still complete handshakes. So: submit what is
	 * queued (poll removals, cancels), cancel the rest synchronously (6.0+; older kernels
	 * fall back to the worker), run the deferred task work that lets go of the files, and
	 * only then exit, which also drops the buffer ring's registration before its memory. */
	if (uc->ring_up) {
		(void)uc_submit(uc);
		struct io_uring_sync_cancel_reg reg;
		memset(&reg, 0, sizeof(reg));
		reg.fd = -1;
		reg.flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
		reg.timeout.tv_sec = 1;
		(void)io_uring_register_sync_cancel(&uc->ring, &reg);
		(void)enter(uc, 0, 0, IORING_ENTER_GETEVENTS, 0);
		TSAN_RING_DOWN(); /* before the unmap: the next ring may be mapped here at once */
		io_uring_queue_exit(&uc->ring);
	}
	uc->ring_up = false;
	for (unsigned g = 0; g < UC_BGROUPS; g++) {
		if (uc->br[g].br)
			munmap(uc->br[g].br, uc->br[g].bytes);
		uc->br[g].br = NULL;
	}
}

static inline void buf_flush(struct uc *uc)
{
	for (unsigned g = 0; g < UC_BGROUPS; g++) {
		struct uc_bufring *b = &uc->br[g];
		if (b->unflushed) {
			io_uring_buf_ring_advance(b->br, (int)b->unflushed);
			b->unflushed = 0;
		}
	}
}

/* Publish queued SQEs; returns how many the kernel has not consumed yet. */
static inline unsigned sq_flush(struct uc *uc)
{
	struct io_uring_sq *sq = &uc->ring.sq;
	unsigned tail = sq->sqe_tail;
	if (sq->sqe_head != tail) {
		sq->sqe_head = tail;
		io_uring_smp_store_release(sq->ktail, tail);
	}
	return tail - *sq->khead;
}

static int enter(struct uc *uc, unsigned submit, unsigned wait_nr, unsigned flags, int timeout_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_getevents_arg arg;
	void *argp = NULL;
	size_t argsz = _NSIG / 8;
	flags |= uc->enter_flags;
	if (wait_nr && timeout_ms > 0) {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		memset(&arg, 0, sizeof(arg));
		arg.ts = (uint64_t)(uintptr_t)&ts;
		argp = &arg;
		argsz = sizeof(arg);
		flags |= IORING_ENTER_EXT_ARG;
	}
	if (uc->enters)
		(*uc->enters)++;
	return io_uring_enter2(uc->enter_fd, submit, wait_nr, flags, argp, argsz);
}

int uc_submit(struct uc *uc)
{
	buf_flush(uc);
	unsigned n = sq_flush(uc);
	return n ? enter(uc, n, 0, 0, 0) : 0;
}

struct io_uring_sqe *uc_sqe_slow(struct uc *uc)
{
	if (uc_submit(uc) < 0)
		return NULL;
	return io_uring_get_sqe(&uc->ring);
}

int uc_wait(struct uc *uc, int timeout_ms, uc_cqe_fn fn, void *ctx)
{
	buf_flush(uc);
	unsigned submit = sq_flush(uc);
	/* GETEVENTS even when not waiting: under DEFER_TASKRUN completions exist only after it. */
	unsigned wait_nr = timeout_ms != 0 && io_uring_cq_ready(&uc->ring) == 0;
	int rc = enter(uc, submit, wait_nr, IORING_ENTER_GETEVENTS, timeout_ms);
	if (rc == -EBUSY || io_uring_cq_has_overflow(&uc->ring))
		uc->overflows++;
	unsigned n = uc_reap(uc, uc->cq_entries, fn, ctx);
	if (rc == -EBUSY || rc == -EAGAIN) {
		/* The CQ was full (overflow waiting) or the kernel lacked memory: now that the CQ
		 * is empty, submit again without blocking. A second failure waits for the next
		 * iteration; the SQEs stay queued. */
		buf_flush(uc);
		rc = enter(uc, sq_flush(uc), 0, IORING_ENTER_GETEVENTS, 0);
		n += uc_reap(uc, uc->cq_entries, fn, ctx);
		if (rc == -EBUSY || rc == -EAGAIN)
			rc = 0;
	}
	if (rc == -ETIME || (rc == -EINTR && n > 0))
		rc = 0;
	return rc < 0 ? rc : (int)n;
}

#define PROBE_UD 0x7u        /* low two bits set: ignored by uring.c and uring_poll.c */
#define PROBE_CANCEL_UD 0xbu

int uc_probe(struct uc *uc, uc_probe_prep_fn prep, uint32_t arg)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	struct io_uring_sqe *sqe = uc_sqe(uc);
	int rc = -EBUSY;
	if (!sqe)
		goto out;
	prep(sqe, sv[0], arg);
	sqe->user_data = PROBE_UD;
	sqe = uc_sqe(uc);
	if (!sqe)
		goto out;
	io_uring_prep_cancel64(sqe, PROBE_UD, 0);
	sqe->user_data = PROBE_CANCEL_UD;
	rc = uc_submit(uc);
	int res = 1;
	for (int i = 0; rc >= 0 && res == 1 && i < 4; i++) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = { .tv_sec = 1 };
		rc = io_uring_wait_cqe_timeout(&uc->ring, &cqe, &ts);
		if (rc < 0)
			break;
		if (cqe->user_data == PROBE_UD)
			res = cqe->res;
		io_uring_cqe_seen(&uc->ring, cqe);
	}
	/* Whatever else is in the CQ (the cancel's own CQE) goes too. */
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&uc->ring, &cqe) == 0)
		io_uring_cqe_seen(&uc->ring, cqe);
	if (rc >= 0)
		rc = res == -ECANCELED ? 0 : res == -EINVAL || res >= 0 ? -EOPNOTSUPP : res;
	else if (rc == -ETIME)
		rc = -EOPNOTSUPP;
out:
	close(sv[0]);
	close(sv[1]);
	return rc;
}
