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
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Newer than liburing 2.3's headers; the values are the kernel's include/uapi/linux/io_uring.h.
 * Guarded so that newer headers' own definitions win. */
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14) /* 6.10 */
#endif
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15) /* 6.12 */
#endif
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4) /* 6.10: sqe->ioprio of a buffer-select recv */
#endif
/* IOU_PBUF_RING_INC (6.12) is an enum constant in newer headers, which #ifndef cannot see:
 * its value under a name of our own. */
#define UC_PBUF_RING_INC 2u

/* The kernel's struct io_uring_buf_reg and struct io_uring_getevents_arg as of 6.12: liburing
 * 2.3 calls `flags` and `min_wait_usec` "pad", newer liburing by their names. Our own layout
 * compiles against either, and the asserts hold it to theirs. */
struct uc_buf_reg {
	uint64_t ring_addr;
	uint32_t ring_entries;
	uint16_t bgid;
	uint16_t flags; /* UC_PBUF_RING_INC */
	uint64_t resv[3];
};
_Static_assert(sizeof(struct uc_buf_reg) == sizeof(struct io_uring_buf_reg), "buf_reg layout");
struct uc_getevents_arg {
	uint64_t sigmask;
	uint32_t sigmask_sz;
	uint32_t min_wait_usec; /* 6.12 (IORING_FEAT_MIN_TIMEOUT); must be 0 before */
	uint64_t ts;
};
_Static_assert(sizeof(struct uc_getevents_arg) == sizeof(struct io_uring_getevents_arg),
	       "getevents_arg layout");

/* How long a wait with a min-wait and no timeout of the loop's may last: the kernel ends a
 * min-wait that has no general timeout when the min-wait expires, empty-handed, so an idle
 * loop would wake every USEC. With one, it goes on sleeping until the first completion. */
#define UC_IDLE_WAIT_S 3600

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

static void wait_config(struct uc *uc);

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
	/* Only informational so far: a probe that could not run (out of fds) leaves its features
	 * false and says why in the describe line, and the ring serves as it would have. */
	rc = uc_probe_features(uc, true, &uc->has);
	uc->probe_error = rc < 0 ? -rc : 0;
	if (uc->has.ring_fd)
		uc->uses |= UC_USE_RING_FD;
	if (uc->has.nodrop)
		uc->uses |= UC_USE_NODROP;
	wait_config(uc);
	return 0;
}

int uc_bufring_init(struct uc *uc, unsigned bgid, struct bufpool *pool, uint32_t offset,
		    bool fill)
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
	b->first = pool->mem + offset;
	b->entry_len = pool->bufsize - offset;
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
	for (uint32_t bid = 0; fill && bid < pool->nbufs; bid++)
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

/* The min-wait a wait for wait_nr completions bounded by timeout_ms passes to the kernel: none
 * for a single completion (nothing to batch), on a kernel without the feature (the field must
 * be 0 there), or when the loop's timeout comes first (the kernel would let the min-wait run
 * past it: its timer is armed first and the general one only after). */
static inline unsigned min_wait_for(const struct uc *uc, unsigned wait_nr, int timeout_ms)
{
	if (wait_nr < 2 || !uc->min_wait_usec || !uc->has.min_wait)
		return 0;
	if (timeout_ms >= 0 && (uint64_t)uc->min_wait_usec >= (uint64_t)timeout_ms * 1000)
		return 0;
	return uc->min_wait_usec;
}

static int enter(struct uc *uc, unsigned submit, unsigned wait_nr, unsigned flags, int timeout_ms)
{
	struct __kernel_timespec ts;
	struct uc_getevents_arg arg;
	void *argp = NULL;
	size_t argsz = _NSIG / 8;
	flags |= uc->enter_flags;
	unsigned min_wait = wait_nr ? min_wait_for(uc, wait_nr, timeout_ms) : 0;
	if (wait_nr && (timeout_ms > 0 || min_wait)) {
		if (timeout_ms > 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		} else {
			ts.tv_sec = UC_IDLE_WAIT_S; /* see UC_IDLE_WAIT_S */
			ts.tv_nsec = 0;
		}
		memset(&arg, 0, sizeof(arg));
		arg.ts = (uint64_t)(uintptr_t)&ts;
		arg.min_wait_usec = min_wait;
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

/* uc_wait's enter (see uring_common.h): publish, submit, wait; count an overflow. */
int uc_wait_enter(struct uc *uc, int timeout_ms)
{
	buf_flush(uc);
	unsigned submit = sq_flush(uc);
	/* GETEVENTS even when not waiting: under DEFER_TASKRUN completions exist only after it.
	 * A wait asks for wait_nr completions (1 unless ECHOD_URING_WAIT says more). */
	unsigned wait_nr = timeout_ms != 0 && io_uring_cq_ready(&uc->ring) == 0 ? uc->wait_nr : 0;
	int rc = enter(uc, submit, wait_nr, IORING_ENTER_GETEVENTS, timeout_ms);
	if (rc == -EBUSY || io_uring_cq_has_overflow(&uc->ring))
		uc->overflows++;
	return rc;
}

/* The CQ was full (overflow waiting) or the kernel lacked memory: now that the CQ has been
 * emptied, submit again without blocking. A second failure waits for the next iteration (the
 * SQEs stay queued), so it is not an error. */
int uc_wait_resubmit(struct uc *uc)
{
	buf_flush(uc);
	int rc = enter(uc, sq_flush(uc), 0, IORING_ENTER_GETEVENTS, 0);
	return rc == -EBUSY || rc == -EAGAIN ? 0 : rc;
}

#define PROBE_UD 0x7u        /* low two bits set: ignored by uring.c and uring_poll.c */
#define PROBE_CANCEL_UD 0xbu

/* uc_probe on a given fd: prep's request on it, then a cancel, and the request's CQE read. */
static int probe_on_fd(struct uc *uc, int fd, uc_probe_prep_fn prep, uint32_t arg)
{
	struct io_uring_sqe *sqe = uc_sqe(uc);
	if (!sqe)
		return -EBUSY;
	prep(sqe, fd, arg);
	sqe->user_data = PROBE_UD;
	sqe = uc_sqe(uc);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, PROBE_UD, 0);
	sqe->user_data = PROBE_CANCEL_UD;
	int rc = uc_submit(uc);
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
	return rc;
}

int uc_probe(struct uc *uc, uc_probe_prep_fn prep, uint32_t arg)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	int rc = probe_on_fd(uc, sv[0], prep, arg);
	close(sv[0]);
	close(sv[1]);
	return rc;
}

/* --- feature probes (uring_common.h) -------------------------------------------------------- */

/* A multishot accept into a direct descriptor the kernel picks (5.19). No SOCK_CLOEXEC: the
 * kernel refuses it for a direct descriptor, which has no fd to close on exec. */
static void prep_probe_accept_direct(struct io_uring_sqe *sqe, int fd, uint32_t arg)
{
	(void)arg;
	io_uring_prep_multishot_accept_direct(sqe, fd, NULL, NULL, 0);
}

/* A one-shot recv of a bundle from the probe's buffer group (6.10). */
static void prep_probe_bundle(struct io_uring_sqe *sqe, int fd, uint32_t arg)
{
	(void)arg;
	io_uring_prep_recv(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UC_BG_PROBE;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
}

/* A listening socket nobody connects to: AF_UNIX with an autobound abstract name (bind with
 * just the family), so no port or path is taken. */
static int probe_listener(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa_family_t)) < 0 || listen(fd, 1) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

/* Direct accept: a one-slot sparse file table (5.19), the accept on an idle listener, the
 * table unregistered again. 1 available, 0 not, or -errno when the probe could not run. */
static int probe_direct_accept(struct uc *uc)
{
	if (io_uring_register_files_sparse(&uc->ring, 1) < 0)
		return 0; /* EINVAL: no sparse tables (before 5.19), so no ALLOC either */
	int rc = probe_listener();
	if (rc >= 0) {
		int fd = rc;
		rc = probe_on_fd(uc, fd, prep_probe_accept_direct, 0);
		rc = rc == 0 ? 1 : rc == -EOPNOTSUPP ? 0 : rc;
		close(fd);
	}
	(void)io_uring_unregister_files(&uc->ring); /* fails only if nothing is registered */
	return rc;
}

/* A one-entry buffer ring in group UC_BG_PROBE, registered with `flags`, and a buffer in it
 * (the rest of the page). Returns the mapping, or NULL with *err: -EINVAL when the kernel
 * refuses the flags or buffer rings (before 5.19), another -errno when it could not try. */
static void *probe_bufring_up(struct uc *uc, uint16_t flags, int *err)
{
	long page = sysconf(_SC_PAGESIZE);
	if (page < 256)
		page = 4096;
	void *mem = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	if (mem == MAP_FAILED) {
		*err = -errno;
		return NULL;
	}
	struct io_uring_buf_ring *br = mem;
	io_uring_buf_ring_init(br);
	io_uring_buf_ring_add(br, (char *)mem + 128, 128, 0, 0, 0);
	io_uring_buf_ring_advance(br, 1);
	struct uc_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)mem;
	reg.ring_entries = 1;
	reg.bgid = UC_BG_PROBE;
	reg.flags = flags;
	int rc = io_uring_register(uc->ring.ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1);
	if (rc < 0) {
		munmap(mem, (size_t)page);
		*err = rc;
		return NULL;
	}
	return mem;
}

static void probe_bufring_down(struct uc *uc, void *mem)
{
	long page = sysconf(_SC_PAGESIZE);
	/* The ring's memory is the kernel's to read until it is unregistered. */
	(void)io_uring_unregister_buf_ring(&uc->ring, UC_BG_PROBE);
	munmap(mem, (size_t)(page < 256 ? 4096 : page));
}

/* 1 available, 0 not, or -errno when the probe could not run. */
static int probe_pbuf_inc(struct uc *uc)
{
	int err = 0;
	void *mem = probe_bufring_up(uc, UC_PBUF_RING_INC, &err);
	if (!mem)
		return err == -EINVAL ? 0 : err;
	probe_bufring_down(uc, mem);
	return 1;
}

static int probe_recv_bundle(struct uc *uc)
{
	int err = 0;
	void *mem = probe_bufring_up(uc, 0, &err);
	if (!mem)
		return err == -EINVAL ? 0 : err; /* no buffer rings at all: no bundles */
	int rc = uc_probe(uc, prep_probe_bundle, 0);
	probe_bufring_down(uc, mem);
	return rc == 0 ? 1 : rc == -EOPNOTSUPP ? 0 : rc;
}

int uc_probe_features(struct uc *uc, bool trust_feature_bits, struct uc_features *out)
{
	memset(out, 0, sizeof(*out));
	out->ring_fd = uc->enter_flags & IORING_ENTER_REGISTERED_RING;
	out->min_wait = uc->features & IORING_FEAT_MIN_TIMEOUT;
	out->nodrop = uc->features & IORING_FEAT_NODROP;
	out->submit_stable = uc->features & IORING_FEAT_SUBMIT_STABLE;
	int first_err = 0;
	int rc = probe_direct_accept(uc);
	out->direct_accept = rc > 0;
	if (rc < 0 && !first_err)
		first_err = rc;
	rc = probe_pbuf_inc(uc);
	out->pbuf_inc = rc > 0;
	if (rc < 0 && !first_err)
		first_err = rc;
	if (trust_feature_bits && (uc->features & IORING_FEAT_RECVSEND_BUNDLE)) {
		out->recv_bundle = true;
	} else {
		rc = probe_recv_bundle(uc);
		out->recv_bundle = rc > 0;
		if (rc < 0 && !first_err)
			first_err = rc;
	}
	return first_err;
}

/* --- loop -> ring ------------------------------------------------------------------------- */

extern const struct backend backend_uring, backend_uring_poll;

struct uc *uc_of_loop(const struct loop *loop)
{
	if (!loop->be_state)
		return NULL;
	if (loop->be == &backend_uring)
		return uring_ring_of(loop);
	if (loop->be == &backend_uring_poll)
		return uring_poll_ring_of(loop);
	return NULL;
}

/* --- ECHOD_URING_WAIT ----------------------------------------------------------------------- */

/* Decimal digits only (no sign, space or base prefix), at most max. */
static int parse_uint(const char *s, size_t len, unsigned max, unsigned *out)
{
	if (len == 0 || len > 10)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int uc_wait_parse(const char *s, unsigned *nr, unsigned *usec)
{
	const char *colon = strchr(s, ':');
	size_t nlen = colon ? (size_t)(colon - s) : strlen(s);
	unsigned n = 0, u = 0;
	if (parse_uint(s, nlen, UC_WAIT_NR_MAX, &n) < 0 || n == 0)
		return -EINVAL;
	if (colon && parse_uint(colon + 1, strlen(colon + 1), UC_MIN_WAIT_MAX_USEC, &u) < 0)
		return -EINVAL;
	*nr = n;
	*usec = u;
	return 0;
}

static atomic_flag wait_warned = ATOMIC_FLAG_INIT;

/* The batching policy from the environment, at every ring's set-up (uring_common.h). */
static void wait_config(struct uc *uc)
{
	uc->wait_nr = 1;
	uc->min_wait_usec = 0;
	const char *env = getenv("ECHOD_URING_WAIT");
	if (!env || !env[0])
		return;
	unsigned nr, usec;
	if (uc_wait_parse(env, &nr, &usec) < 0) {
		if (!atomic_flag_test_and_set(&wait_warned)) {
			/* The value as far as it is safe to print in a logfmt string. */
			char shown[40];
			size_t i = 0;
			for (; env[i] && i < sizeof(shown) - 1; i++)
				shown[i] = env[i] >= 0x20 && env[i] < 0x7f && env[i] != '"' &&
						   env[i] != '\\'
						   ? env[i]
						   : '?';
			shown[i] = '\0';
			log_msg(LOG_WARN, "uring_wait_ignored",
				"value=\"%s%s\" msg=\"ECHOD_URING_WAIT is NR[:USEC], NR 1 to %u, USEC 0 "
				"to %u; waiting for one completion at a time\"",
				shown, env[i] ? "..." : "", UC_WAIT_NR_MAX, UC_MIN_WAIT_MAX_USEC);
		}
		return;
	}
	/* More than the CQ holds could never be met: a tiny test ring takes what it holds. */
	uc->wait_nr = nr < uc->cq_entries || !uc->cq_entries ? nr : uc->cq_entries;
	uc->min_wait_usec = usec;
	if (uc->wait_nr > 1 && usec && uc->has.min_wait)
		uc->uses |= UC_USE_MIN_WAIT;
}

/* --- the describe line ------------------------------------------------------------------- */

void uc_describe(struct loop *loop, char *buf, size_t len)
{
	const struct uc *uc = uc_of_loop(loop);
	if (uc)
		uc_describe_uc(uc, buf, len);
	else
		snprintf(buf, len, "io_uring: (no ring)");
}

/* snprintf appended at *used, never past len. */
static void put(char *buf, size_t len, size_t *used, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
	if (*used >= len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *used, len - *used, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used = *used + (size_t)n < len ? *used + (size_t)n : len;
}

void uc_describe_uc(const struct uc *uc, char *buf, size_t len)
{
	static const struct {
		const char *name;
		size_t has; /* offsetof a bool in struct uc_features */
		unsigned use;
	} items[] = {
		{ "registered ring fd", offsetof(struct uc_features, ring_fd), UC_USE_RING_FD },
		{ "direct accept", offsetof(struct uc_features, direct_accept), UC_USE_DIRECT_ACCEPT },
		{ "recv bundles", offsetof(struct uc_features, recv_bundle), UC_USE_RECV_BUNDLE },
		{ "incremental buffers", offsetof(struct uc_features, pbuf_inc), UC_USE_PBUF_INC },
		{ "min-wait", offsetof(struct uc_features, min_wait), UC_USE_MIN_WAIT },
		{ "nodrop", offsetof(struct uc_features, nodrop), UC_USE_NODROP },
		{ "submit-stable", offsetof(struct uc_features, submit_stable),
		  UC_USE_SUBMIT_STABLE },
	};
	size_t used = 0;
	if (len)
		buf[0] = '\0';
	put(buf, len, &used, "io_uring:");
	for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
		bool has = *((const bool *)((const char *)&uc->has + items[i].has));
		put(buf, len, &used, "%s %s %s", i ? ";" : "", items[i].name,
		    !has ? "not in this kernel" : uc->uses & items[i].use ? "on" : "available, off");
		if (items[i].use == UC_USE_MIN_WAIT && !has && uc->wait_nr > 1 && uc->min_wait_usec)
			put(buf, len, &used, " (ECHOD_URING_WAIT's %u us ignored)", uc->min_wait_usec);
	}
	if (uc->wait_nr <= 1)
		put(buf, len, &used, "; batched wait off");
	else if (uc->uses & UC_USE_MIN_WAIT)
		put(buf, len, &used, "; batched wait %u completions, min-wait %u us (ECHOD_URING_WAIT)",
		    uc->wait_nr, uc->min_wait_usec);
	else
		put(buf, len, &used, "; batched wait %u completions, no min-wait: a lone completion "
		    "waits for the loop's timeout (ECHOD_URING_WAIT)", uc->wait_nr);
	unsigned f = uc->setup_flags;
	put(buf, len, &used, "; set-up %s%s",
	    (f & IORING_SETUP_DEFER_TASKRUN) ? "single-issuer+defer-taskrun"
	    : (f & IORING_SETUP_COOP_TASKRUN) ? "coop-taskrun"
					      : "plain",
	    (f & IORING_SETUP_SUBMIT_ALL) ? "+submit-all" : "");
	if (uc->probe_error)
		put(buf, len, &used, "; some probes could not run (%s)", strerror(uc->probe_error));
}
