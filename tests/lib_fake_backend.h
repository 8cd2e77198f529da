/* lib_fake_backend.h - an in-memory backend for testing and benchmarking the echo core with
 * no syscalls: it records what the core submits and cancels, and the test decides every
 * completion (how many bytes a recv delivers, how much of a send "went out"). The one
 * exception is OP_READ (a worker's wake-up eventfd): a wait reads it for real, so a worker
 * thread can run on this backend and hear its requests. */
#ifndef ECHOD_TEST_FAKE_BACKEND_H
#define ECHOD_TEST_FAKE_BACKEND_H

#include "reactor.h"

#define FAKE_MAX_FDS 256

struct fake_state {
	struct op *rd[FAKE_MAX_FDS];   /* armed accept/recv/read per fd */
	struct op *wr[FAKE_MAX_FDS];   /* armed send per fd */
	int submits[FAKE_MAX_FDS], cancels[FAKE_MAX_FDS];
	int forgotten[FAKE_MAX_FDS];
	int releases;
	int cancel_res[FAKE_MAX_FDS];  /* nonzero: a cancel's final carries this instead of
					* -ECANCELED (the op's own error won the race) */
	int cancel_busy[FAKE_MAX_FDS]; /* cancels on fd refused with -EBUSY before one is taken */
	/* After submit_ok[fd] more submits on fd are taken, the next submit_fail[fd] are refused
	 * with -ENOMEM (epoll_ctl or an io_uring submit out of memory, say). */
	int submit_ok[FAKE_MAX_FDS], submit_fail[FAKE_MAX_FDS];
	bool reads; /* an OP_READ was ever submitted: only then does a wait look for them */
};

extern const struct backend fake_backend;
/* Called with each new loop's state, in the thread that creates the loop: a test sets up
 * submit failures for a loop it cannot reach (a worker thread's). NULL: nothing. */
extern void (*fake_on_init)(struct fake_state *st);

struct fake_state *fake_of(struct loop *loop);
/* Deliver `len` bytes to fd's armed recv (from a pool buffer); returns the bid or -1 when the
 * pool is dry (then the recv completes with -ENOBUFS). more=false makes it final. */
int fake_recv(struct loop *loop, int fd, const void *data, uint32_t len, bool more);
/* The same with the completion's flags given (OPF_MORE, OPF_BATCH; OPF_BUFFER is added). */
int fake_recv_flags(struct loop *loop, int fd, const void *data, uint32_t len, unsigned flags);
/* Complete fd's armed recv with a result (0 = EOF, -errno) and no buffer. */
void fake_recv_result(struct loop *loop, int fd, int res);
/* The bytes an armed send covers (its buf, or its runs). */
uint32_t fake_send_len(const struct op *op);
/* Complete fd's armed send, saying `n` bytes went out; copies them to out (if non-NULL). */
void fake_send(struct loop *loop, int fd, uint32_t n, void *out);
/* Complete fd's armed send with an error (-errno): nothing went out. */
void fake_send_result(struct loop *loop, int fd, int res);
void fake_accept(struct loop *loop, int lfd, int newfd);
/* Run what the core deferred (its cancels) without waiting. */
void fake_run(struct loop *loop);

#endif
