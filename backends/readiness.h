/* readiness.h - what the readiness backends (select, poll, epoll, uring-poll) share: the
 * completion emulation. A readiness backend keeps only its kernel interface: make the kernel
 * watch what an fd's slot wants (sync), wait, and report each ready fd through rd_ready().
 * Everything else lives once in readiness.c: the fd slot table, submit/cancel/forget, and the
 * syscall done when an fd is ready (an accept batch, a recv into a pool buffer, an optimistic
 * send, a read).
 *
 * Each fd has at most one read-side op (accept, recv or read) and one write-side op (send);
 * the kernel's interest follows from which are armed, and sync() is called whenever that may
 * have changed. Sends are optimistic: submit() sends at once and arms the write side only on
 * EAGAIN, so a steady echo costs one recv and one send per message and no interest change.
 * A gathered send (op->nsegs > 1) is one sendmsg() over an iovec built afresh at each try. A
 * recv that filled its buffer marks the fd hungry: the next reads up to RECV_MAX_BUFS buffers
 * with one recvmsg() and delivers them as a batch (OPF_BATCH), which the core answers with one
 * gathered send, so a pipelining peer costs a pair of syscalls per several buffers.
 *
 * Datagrams: OP_RECVMSG is a read-side op like recv (one recvmmsg() batch into datagram pool
 * buffers per wake-up). OP_SENDMSG never touches the kernel's interest: any number may be
 * armed per fd, queued in submission order on the slot, and every backend's wait calls
 * rd_sends_flush() before it may block and after it dispatched, which sends each fd's queue
 * with sendmmsg() and defers the completions. A full socket buffer fails the rest of that
 * fd's queue with -EAGAIN (UDP drops the reply): no write interest is ever registered for it.
 *
 * Kernels that report edges, not levels (io_uring's multishot poll), set `edge`: a read that
 * filled its buffer, an accept batch that did not reach EAGAIN, or a FIN seen behind bytes
 * puts the fd on a retry list, because no new wake-up will come for what is already there.
 *
 * Private to backends/; nothing outside it includes this.
 */
#ifndef ECHOD_READINESS_H
#define ECHOD_READINESS_H

#include <stdbool.h>
#include <stdint.h>

#include "reactor.h"

struct rd_slot {
	struct op *rd;       /* accept, recv, recvmsg or read */
	struct op *wr;       /* send */
	struct op *sq_head, *sq_tail; /* queued sendmsg ops, linked through op->backend_data */
	bool sq_listed;      /* fd is on readiness.sendq_fds */
	uint64_t k_rd, k_wr; /* the kernel interface's record of what it watches, per side */
	uint32_t k_gen;      /* the kernel interface's generation count: survives forget */
	bool retry;          /* on the retry list (edge) */
	bool hup;            /* edge: the peer's FIN or an error waits behind the bytes */
	bool hungry;         /* the last recv filled all it was given: take more buffers next */
};

struct readiness;
/* Make the kernel watch what r->slots[fd] wants. 0 or -errno; called again after a failure. */
typedef int (*rd_sync_fn)(struct readiness *r, int fd);

struct readiness {
	struct loop *loop;
	struct rd_slot *slots; /* grown on demand, indexed by fd */
	int nslots;
	int max_fd;            /* fds at or above it cannot be watched */
	bool edge;
	int *retry, *running;  /* edge: fds whose read side is tried again; nslots each */
	int nretry;
	int *sendq_fds;        /* fds that may have queued sendmsg ops (sq_listed) */
	int nsendq, sendq_cap;
	rd_sync_fn sync;
};

/* Each readiness backend's state starts with its struct readiness (loop->be_state). */
static inline struct readiness *rd_of(struct loop *loop)
{
	return loop->be_state;
}

/* max_fd: the first fd that cannot be watched, 0 for none. */
int rd_init(struct readiness *r, struct loop *loop, rd_sync_fn sync, int max_fd, bool edge);
void rd_fini(struct readiness *r);

int rd_submit(struct loop *loop, struct op *op);
int rd_cancel(struct loop *loop, struct op *op);
void rd_forget_fd(struct loop *loop, int fd);
void rd_buf_release(struct loop *loop, uint32_t bid);

void rd_read_ready(struct readiness *r, int fd, struct op *op);
void rd_write_ready(struct readiness *r, int fd, struct op *op);

/* The kernel says fd is readable and/or writable (errors and hang-ups count as both): do the
 * syscalls of its armed ops. A side with no op left is handed back to sync() so that a stale
 * registration is repaired instead of waking the loop forever. Inline: it runs once per event
 * inside each backend's dispatch loop. */
static inline void rd_ready(struct readiness *r, int fd, bool readable, bool writable)
{
	if ((unsigned)fd >= (unsigned)r->nslots)
		return;
	bool idle_side = false;
	if (readable) {
		struct op *op = r->slots[fd].rd;
		if (op)
			rd_read_ready(r, fd, op);
		else
			idle_side = true;
	}
	if (writable) {
		struct op *op = r->slots[fd].wr; /* afresh: the read side's callback ran */
		if (op)
			rd_write_ready(r, fd, op);
		else
			idle_side = true;
	}
	if (idle_side)
		(void)r->sync(r, fd);
}
/* Finish fd's read side, or write side, or both, with res (a kernel error, a closed fd). */
void rd_finish_read(struct readiness *r, int fd, int res);
void rd_finish_write(struct readiness *r, int fd, int res);
/* fd was closed behind the loop's back (EBADF/POLLNVAL): unless the number was reused in the
 * meantime, finish both its ops with -EBADF. */
void rd_fd_closed(struct readiness *r, int fd);

/* Send every queued OP_SENDMSG (sendmmsg per fd, completions deferred). Each backend's wait
 * calls it before waiting, with its timeout, and waits for what it returns: 0 when it queued
 * completions, which must run before the loop may sleep; and again after dispatching, so
 * replies submitted by this wake-up's callbacks leave in it. Inline: the common case (no
 * datagram queued) is one test. */
int rd_sends_flush_slow(struct readiness *r, int timeout_ms);
static inline int rd_sends_flush(struct readiness *r, int timeout_ms)
{
	return r->nsendq ? rd_sends_flush_slow(r, timeout_ms) : timeout_ms;
}

/* Edge: take the retry list (the wait then must not block), and run it after the wait. */
int rd_retries_take(struct readiness *r);
void rd_retries_run(struct readiness *r, int n);

#endif
