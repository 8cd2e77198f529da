/* worker.h - a worker thread and what it shares with the main thread (engine-internal: for
 * server.c, which starts the workers, and supervisor.c, which talks to them). */
#ifndef ECHOD_WORKER_H
#define ECHOD_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "echo.h"
#include "reactor.h"

/* Listeners per worker: every --listen, and as many sockets again from a service manager. */
#define WORKER_MAX_LISTEN (2 * CONFIG_MAX_LISTEN)

/* What the main thread asks of a worker (bits of worker.requests). */
#define REQ_STOP  0x1u /* drain: echo_server_stop() */
#define REQ_CUT   0x2u /* stop now: echo_server_cut() */
#define REQ_STATS 0x4u /* publish the counters */

/* The signal a worker sends the main thread when it has exited or published its counters:
 * blocked everywhere like the operator's signals, so the main thread's one wait
 * (sigtimedwait) hears both. */
#define WORKER_NOTIFY_SIG (SIGRTMIN + 1)

/* What a worker publishes: its echo server's and its loop's counters, copied in its own
 * thread (they are plain integers there: one add each on the data path, no atomics). */
struct worker_counters {
	struct echo_stats echo;
	struct udp_stats udp;
	struct loop_tally loop;
	uint32_t buffers;      /* its pool's size */
	uint32_t buffers_held; /* pool buffers in connection queues, when the copy was made */
};

/* Every worker's counters, as one collection found them. */
struct workers_snapshot {
	struct worker_counters *c; /* c[i]: what worker i last published */
	bool *answered;            /* it published since the collection began, or its loop is over */
	unsigned n, replied;       /* workers, and how many answered */
};

/* What the main thread, the metrics thread and every worker share. */
struct shared {
	_Atomic uint32_t conns_total; /* the process's connections, against --max-conns */
	pthread_mutex_t lock;         /* guards every worker's snap and snap_gen */
	pthread_cond_t answered;      /* broadcast under lock when a worker publishes */
	pthread_t main_thread;        /* told with WORKER_NOTIFY_SIG: a worker exited */
	atomic_bool draining;         /* from the first TERM/INT on: /readyz says 503 */
	atomic_uint listening;        /* workers that have started accepting */
};

struct worker {
	pthread_t thread;
	int index;
	const struct echod_config *cfg;
	const struct backend *be;
	struct shared *sh;
	struct loop_config lcfg;
	/* This worker's own listener fds (-1 once handed on): --listen's, then the service
	 * manager's. */
	int fds[WORKER_MAX_LISTEN];
	enum listen_kind kinds[WORKER_MAX_LISTEN];
	int nfds;
	int wake_fd;
	uint64_t wake_val;
	struct op wake_op;
	struct loop_timer wake_retry; /* re-arms wake_op when arming it failed */
	unsigned wake_retry_ms;       /* its current backoff; 0 while wake_op arms fine */
	_Atomic unsigned requests; /* REQ_* bits, set by the main thread before it writes wake_fd */
	/* Under sh->lock: the counters as the worker last published them, and how many times it
	 * has (an answer to REQ_STATS, and the final counters at exit). */
	struct worker_counters snap;
	uint64_t snap_gen;
	/* Written by the worker before it sets `exited`, read by the main thread after. */
	uint32_t cut_conns;  /* connections it still had when it was told to cut */
	int status;          /* 0 ok, else -errno from set-up or the loop */
	/* Its loop has returned (it is closing what is left, or has exited): it answers no more
	 * requests, and what it last published stands until its final counters. */
	atomic_bool loop_over;
	atomic_bool exited;
};

/* The thread's body: its loop, its echo server, until the stop (arg: its struct worker). */
void *worker_main(void *arg);
/* Read by the main thread: the worker's thread has finished (its counters are final). */
bool worker_exited(struct worker *w);
/* Any thread: the worker's loop has returned (it may still be closing connections). */
bool worker_loop_over(struct worker *w);
/* Set req's bits in a running worker's requests and wake its loop (any thread). */
void worker_ask(struct worker *w, unsigned req);
/* Ask every worker for its counters and wait up to wait_ms for them all (any thread, several
 * at once), into *out (free it with workers_snapshot_free). A worker whose loop is over answers
 * with what it published last (its final counters once it has exited); one that cannot answer
 * within wait_ms is stuck, which is what /healthz reports. 0, or -ENOMEM. */
int workers_collect(struct worker *ws, unsigned n, unsigned wait_ms,
		    struct workers_snapshot *out);
void workers_snapshot_free(struct workers_snapshot *s);
/* Add s to t (t->conns_peak: the larger of the two, see worker.c). */
void worker_stats_sum(struct echo_stats *t, const struct echo_stats *s);
void worker_udp_sum(struct udp_stats *t, const struct udp_stats *s);
/* The UDP counters of the same lines: udp_received=... udp_dropped_rate=... */
void worker_udp_format(char *out, size_t len, const struct udp_stats *s);
/* The counters of the stop line and the USR1 line, in the same order. */
void worker_stats_format(char *out, size_t len, const struct echo_stats *s);

#endif
