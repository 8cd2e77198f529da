/* reactor.h - the completion-style reactor API every backend implements.
 *
 * The core speaks in operations (accept, recv, send, read), the io_uring way. Readiness backends
 * (select, poll, epoll) emulate completion by performing the syscall when the fd is ready; the
 * io_uring backend does real asynchronous I/O with kernel-selected buffers. The core never learns
 * which backend runs: it sees completions, `res` = bytes or -errno, and capability bits.
 *
 * Contract (every backend keeps all of it; tests/test_reactor.c holds each backend to it, and
 * tests/test_integration.c runs the whole server on each):
 *  - Every fd handed to the loop is O_NONBLOCK (a stale readiness event must not block the
 *    loop); OP_ACCEPT delivers SOCK_NONBLOCK | SOCK_CLOEXEC fds.
 *  - An op is caller-owned memory. From loop_submit() until its final completion (one delivered
 *    without OPF_MORE) the backend may touch it; the caller must not free or reuse it before then.
 *  - Every submitted op gets exactly one final completion, also after loop_cancel() (then with
 *    -ECANCELED, or with data that raced the cancel). No completion ever follows the final one.
 *  - Completions are never delivered from inside loop_submit()/loop_cancel(): a backend that
 *    finishes an op synchronously queues it with loop_defer(); the loop runs it next iteration.
 *  - OP_ACCEPT and OP_RECV are multishot: they stay armed, completing with OPF_MORE, until an
 *    error, EOF (recv res 0) or a cancel. A backend that cannot stay armed simply completes
 *    without OPF_MORE and the core submits again.
 *  - OP_RECV never takes a caller buffer: the backend picks one from the loop's pool and
 *    completes with OPF_BUFFER, op->buf describing it. The core owns that buffer until it calls
 *    loop_buf_release(). No buffer free: -ENOBUFS, final; the core re-arms when buffers return.
 *  - OP_RECV honours op->max_bytes (0: no bound), the most bytes the caller will take from now
 *    on; the caller keeps it current between completions. No completion carries more, and a
 *    backend that reads ahead (a multishot recv running in the kernel) bounds the whole run by
 *    it as it stood when the run started, so a caller that pauses at its budget never holds
 *    more than the budget, whatever the backend.
 *  - OP_SEND sends op->buf.base[0..len) with MSG_NOSIGNAL or, with op->nsegs > 0, the first
 *    op->nsegs runs (at most LOOP_SEND_MAX_SEGS) of the list op->segs, in order, as one send
 *    (sendmsg with an iovec on readiness backends, one SENDMSG on io_uring). res counts bytes
 *    from the front of the first run and may be short, also in the middle of a run. While the
 *    send is armed the caller leaves those runs as they are, except that the last may grow at
 *    its end (a backend that retries reads the runs again and may send the growth too). The
 *    core keeps at most one send in flight per fd, so the kernel never has to order two.
 *  - OPF_BATCH on a completion with OPF_MORE: another completion of the same op follows at
 *    once, before anything else runs (a readiness recv that filled several pool buffers, or
 *    consecutive CQEs of one multishot recv), so the caller may hold work that would rather
 *    see them all (a send) until the completion without it. If the caller cancels the op in
 *    between (it aborts the connection), what the backend had read for the rest is dropped.
 *  - OP_READ is a one-shot read(2) into op->buf (caller memory), for eventfds and signalfds.
 *  - OP_RECVMSG receives datagrams (UDP), multishot like OP_RECV. Each completion is one
 *    datagram in a buffer of the loop's datagram pool (OPF_BUFFER; op->buf.base points at the
 *    payload, which may sit anywhere inside the buffer; release it with loop_buf_release(),
 *    its bid carries LOOP_DGRAM_BID). Its source is written to op->msg->msg_name (capacity:
 *    msg_namelen as the caller set it before loop_submit(), a struct sockaddr_storage; the
 *    msghdr's other fields 0) and op->msg->msg_namelen; the backend restores the capacity
 *    after each completion with OPF_MORE (a final one that carries a datagram leaves the
 *    source's length there: set the capacity again before submitting). A datagram larger than
 *    the buffer completes with OPF_TRUNC and whatever fit: the caller drops it. No datagram
 *    buffer free: -ENOBUFS, final; the core re-arms when buffers return. Requires a loop made
 *    with loop_config.dgram_nbufs > 0.
 *  - OP_SENDMSG sends one datagram: op->msg (caller memory: destination in msg_name, bytes in
 *    msg_iov) with MSG_NOSIGNAL; one-shot. It never waits for writability: a full socket
 *    buffer completes with -EAGAIN (UDP promises nothing, so the caller drops the reply).
 *    Readiness backends may hold SENDMSG ops until the end of the current wake-up and send
 *    them together with sendmmsg(); their completions are then deferred. Any number may be
 *    armed on one fd at once; they leave in submission order.
 *  - Readiness backends send optimistically: try at once, wait for writability only on EAGAIN.
 *  - A backend delivers every completion through loop_complete(), which refreshes now_ms on
 *    the first completion after a wait, so timers started in callbacks count from the wake-up
 *    (a backend that wakes with a batch may refresh it once before, loop_clock_refresh()).
 *  - A loop belongs to the thread that created it: only that thread submits, cancels, releases
 *    buffers and runs it (the io_uring backends create their ring with SINGLE_ISSUER).
 */
#ifndef ECHOD_REACTOR_H
#define ECHOD_REACTOR_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "bufpool.h"

struct loop;
struct op;

enum op_code { OP_ACCEPT, OP_RECV, OP_SEND, OP_READ, OP_RECVMSG, OP_SENDMSG };

/* Completion flags. */
#define OPF_MORE   0x1u /* the op is still armed: more completions follow */
#define OPF_BUFFER 0x2u /* op->buf holds a pool buffer the core must release */
#define OPF_TRUNC  0x4u /* RECVMSG: the datagram did not fit its buffer and was cut */
#define OPF_BATCH  0x8u /* RECV: another completion of this op follows at once (see above) */

/* Datagram pool buffers' ids carry this bit, so loop_buf_release() knows the pool. */
#define LOOP_DGRAM_BID 0x80000000u
/* Bytes at the front of each datagram buffer a backend may use for its own headers (io_uring
 * writes a struct io_uring_recvmsg_out and the source address there); the payload capacity
 * is dgram_bufsize - LOOP_DGRAM_HEADROOM on every backend. */
#define LOOP_DGRAM_HEADROOM 256u

struct msghdr;

/* A run of queued bytes, base[off .. off + len), and the next: how the core queues what it
 * echoes, and what a gathered OP_SEND takes. `bid` is the caller's own (the core's: the pool
 * buffer holding the bytes, or -1 for a private one). */
struct seg {
	struct seg *next;
	char *base;
	uint32_t off, len;
	int32_t bid;
};
/* Runs one gathered send may take: enough for a full --conn-buffer of default buffers to
 * leave in two sends, few enough for an iovec on the stack. */
#define LOOP_SEND_MAX_SEGS 16u

typedef void (*op_done_fn)(struct loop *loop, struct op *op, int res, unsigned cflags);

struct op {
	enum op_code code;
	int fd;
	struct buf buf;    /* SEND/READ: the caller's bytes; RECV: set by the backend */
	uint32_t max_bytes; /* RECV: bytes the caller takes from now on (0: no bound) */
	uint32_t nsegs;     /* SEND: runs of `segs` to send (0: send buf) */
	union {
		struct msghdr *msg; /* RECVMSG: where the source goes; SENDMSG: what, to whom */
		struct seg *segs;   /* SEND with nsegs > 0: the first run */
	};
	op_done_fn done;
	void *owner;       /* the caller's object (a connection, a listener) */
	/* Reactor-private bookkeeping; zero-initialised by the caller. */
	bool armed;        /* submitted and its final completion not yet run */
	bool cancelling;
	bool cancel_queued; /* on loop->cancels_pending */
	int res;           /* deferred completion result */
	unsigned cflags;
	struct op *next_deferred;
	struct op *next_cancel; /* on loop->cancels_pending */
	uint64_t backend_data; /* free for the backend (e.g. an index or generation) */
};

/* Capability bits: the core branches on these, never on a backend's name. */
#define BACKEND_CAP_FD_LIMIT       0x2u /* fds at or above backend->max_fd cannot be watched */

struct loop_config {
	uint32_t nbufs;    /* buffers in the loop's pool */
	uint32_t bufsize;  /* bytes per buffer */
	uint32_t max_fds;  /* fds the loop may watch, for sizing tables */
	uint32_t queue_depth; /* io_uring: SQ entries, CQ 4x (0: 4096); tests shrink it to overflow */
	bool no_recv_limit;   /* io_uring: act as if the kernel had no multishot byte limit (tests) */
	bool shared_listeners; /* other loops accept on the same sockets: take turns (io_uring) */
	uint32_t dgram_nbufs;   /* datagram pool (OP_RECVMSG): buffers, 0 for none */
	uint32_t dgram_bufsize; /* bytes per datagram buffer, LOOP_DGRAM_HEADROOM included */
};

struct backend {
	const char *name;
	const char *summary;  /* one line: the model and its cost per wake-up */
	unsigned caps;
	int max_fd;           /* with BACKEND_CAP_FD_LIMIT: first fd that cannot be watched */
	/* Returns 0 or -errno; on failure the loop is left as it was. */
	int (*init)(struct loop *loop, const struct loop_config *cfg);
	void (*fini)(struct loop *loop);
	int (*submit)(struct loop *loop, struct op *op);
	int (*cancel)(struct loop *loop, struct op *op);
	/* Wait up to timeout_ms (-1: forever, 0: poll), then run the completions it found. */
	int (*wait)(struct loop *loop, int timeout_ms);
	/* Give a buffer from an OPF_BUFFER completion back to the backend's pool. */
	void (*buf_release)(struct loop *loop, uint32_t bid);
	/* The fd is about to be closed: drop any registration (ops on it are already final). */
	void (*forget_fd)(struct loop *loop, int fd);
	/* Optional (NULL: close(2)): close fd, perhaps later; returns 0 or -errno. io_uring
	 * queues the close with the next submit, so a connection's end costs no syscall. */
	int (*close_fd)(struct loop *loop, int fd);
	/* Optional (NULL: nothing to add): one line on what this loop found in the kernel and
	 * uses, for --list-backends (io_uring: its newer features, available and used). */
	void (*describe)(struct loop *loop, char *buf, size_t len);
};

struct loop_timer;
typedef void (*timer_fn)(struct loop *loop, struct loop_timer *t);
struct loop_timer {
	uint64_t deadline_ms; /* 0 = not running */
	timer_fn fire;
	void *owner;
	int slot;
};

#define LOOP_MAX_TIMERS 16

/* The system calls a loop makes, counted where they are issued (the backend's own and the
 * core's: accepting, reading, sending, closing). Per-message costs are what a benchmark wants
 * to see, and these counts do not swing with the machine's load the way rates do. */
enum loop_syscall {
	SC_ACCEPT, SC_RECV, SC_SEND, SC_READ, SC_CLOSE, SC_SHUTDOWN, SC_IOCTL, SC_SETSOCKOPT,
	SC_RECVMMSG, SC_SENDMMSG, SC_RECVMSG, SC_SENDMSG, SC_SELECT, SC_POLL, SC_EPOLL_WAIT, SC_EPOLL_CTL,
	SC_IO_URING_ENTER, SC_COUNT
};
extern const char *const loop_syscall_names[SC_COUNT]; /* "accept", ..., as the kernel names */

/* A loop's work, counted by the loop's own thread in plain integers (one add each on the data
 * path); another thread reads them only through a copy the loop's thread makes (worker.c). */
struct loop_tally {
	uint64_t wakeups;     /* returns from the backend's wait */
	uint64_t completions; /* loop_complete() calls */
	uint64_t syscalls[SC_COUNT];
};

struct loop {
	const struct backend *be;
	void *be_state;
	struct bufpool pool;
	struct bufpool dgram_pool; /* empty unless loop_config.dgram_nbufs */
	struct op *deferred_head, *deferred_tail;
	struct op *cancels_pending; /* cancels the backend could not issue yet */
	struct loop_timer *timers[LOOP_MAX_TIMERS];
	int ntimers;
	uint64_t now_ms;   /* monotonic, read once per wake-up, before its first completion */
	bool clock_stale;  /* the loop may have slept since now_ms was read */
	bool stop;
	void *user;        /* the echo core's per-loop state */
	/* io_uring: the completion queue's size and the waits that found it overflowed (the
	 * kernel kept the CQEs: no loss, a slower wait); zero elsewhere. */
	uint32_t cq_entries;
	uint64_t cq_overflows;
	struct loop_tally tally;
};

static inline void loop_count(struct loop *loop, enum loop_syscall call)
{
	loop->tally.syscalls[call]++;
}

/* The backend table, in preference order for "auto" (see engine/backends.c). */
extern const struct backend *const backend_table[];
extern const size_t backend_count;
const struct backend *backend_find(const char *name);

int loop_init(struct loop *loop, const struct backend *be, const struct loop_config *cfg);
/* Try backends best first; returns 0 and fills *why_skipped with a short note per failure. */
int loop_init_auto(struct loop *loop, const struct loop_config *cfg, char *why_skipped, size_t len);
void loop_fini(struct loop *loop);

static inline int loop_submit(struct loop *loop, struct op *op)
{
	op->armed = true;
	op->cancelling = false;
	int rc = loop->be->submit(loop, op);
	if (rc < 0)
		op->armed = false;
	return rc;
}
/* Ask for op's final completion soon. Never fails: a cancel the backend cannot issue now is
 * retried every iteration. Returns 0. */
int loop_cancel(struct loop *loop, struct op *op);
/* Submitted and its final completion not yet delivered. */
static inline bool loop_op_armed(const struct op *op)
{
	return op->armed;
}
/* The loop is going away and op's final completion will not be waited for any longer. */
static inline void loop_op_abandon(struct op *op)
{
	op->armed = false;
}
static inline bool loop_stopped(const struct loop *loop)
{
	return loop->stop;
}
/* loop_run() returns after the current iteration (true), or goes on (false). */
static inline void loop_set_stop(struct loop *loop, bool stop)
{
	loop->stop = stop;
}
static inline void loop_buf_release(struct loop *loop, uint32_t bid)
{
	loop->be->buf_release(loop, bid);
}
/* Close an fd whose ops are all final (or about to be cancelled by the caller). The backend
 * may close it only at its next submit (io_uring): the number stays taken until then, so
 * nothing reuses it early, but the caller must not touch the fd after this call. */
int loop_close_fd(struct loop *loop, int fd);

/* For backends: finish an op now (from wait) or later (from submit/cancel). Inline, twice per
 * echoed message: the common case is a count, two tests and the callback; the first completion
 * after a wait and a final one with a cancel still queued go the long way. */
void loop_complete_slow(struct loop *loop, struct op *op, int res, unsigned cflags);
/* For backends that wake with a batch of completions (io_uring): read the clock now, once,
 * before delivering them, so that none of them takes loop_complete's long way for it. */
void loop_clock_refresh(struct loop *loop);
static inline void loop_complete(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	loop->tally.completions++;
	if (__builtin_expect(loop->clock_stale || (!(cflags & OPF_MORE) && op->cancel_queued), 0)) {
		loop_complete_slow(loop, op, res, cflags);
		return;
	}
	if (!(cflags & OPF_MORE))
		op->armed = false;
	op->done(loop, op, res, cflags);
}

/* The accept-error policy of every backend: an error that concerns one connection (it died in
 * the queue, or a firewall or security hook refused it) is skipped and accepting goes on; any
 * other (out of fds or memory, a broken listener) ends the accept and the core backs off. */
static inline bool loop_accept_error_transient(int err)
{
	return err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM;
}

/* OP_SEND's first run: op->buf, or the head of op->segs. */
static inline struct buf op_send_head(const struct op *op)
{
	if (!op->nsegs)
		return op->buf;
	return (struct buf){ .base = op->segs->base + op->segs->off, .len = op->segs->len };
}

/* OP_SEND's runs as an iovec (at most LOOP_SEND_MAX_SEGS entries); returns how many. */
static inline size_t op_send_iovec(const struct op *op, struct iovec *iov)
{
	size_t k = 0;
	for (const struct seg *s = op->segs; s && k < op->nsegs && k < LOOP_SEND_MAX_SEGS;
	     s = s->next)
		iov[k++] = (struct iovec){ s->base + s->off, s->len };
	return k;
}

/* For readiness backends: how many bytes one recv may read into a pool buffer of `bufsize`. */
static inline uint32_t op_recv_len(const struct op *op, uint32_t bufsize)
{
	return op->max_bytes && op->max_bytes < bufsize ? op->max_bytes : bufsize;
}
void loop_defer(struct loop *loop, struct op *op, int res, unsigned cflags);

/* One iteration: run deferred completions, wait for events (bounded by timers), fire timers. */
int loop_run_once(struct loop *loop, int max_wait_ms);
int loop_run(struct loop *loop);

void loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t after_ms);
void loop_timer_stop(struct loop *loop, struct loop_timer *t);
uint64_t loop_clock_ms(void);

#endif
