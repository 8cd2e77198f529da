/* bm_wakeup - the cost of one wake-up of each backend against the number of idle connections.
 *
 * Set-up (not timed): one loop on the backend, N idle AF_UNIX socketpairs each with an armed
 * multishot OP_RECV on one end (nothing is ever sent on them), and one active socketpair with
 * an armed OP_RECV. Timed: write 1 byte on the active peer, run the loop until the active
 * recv completed, release its buffer. So one iteration is one wake-up with N + 1 fds watched:
 * select and poll pay O(watched) per wake-up, epoll and io_uring O(ready).
 *
 * Arguments the process cannot hold are not registered: 2N + a few fds must fit under
 * RLIMIT_NOFILE (the soft limit is raised to the hard one first), and for a backend with
 * BACKEND_CAP_FD_LIMIT every fd must stay below backend->max_fd.
 */
#include "gbench.h"
#include "reactor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define WK_NBUFS   64
#define WK_BUFSIZE 4096
#define WK_SLACK   32   /* fds beyond the pairs: stdio, the backend's own, gbench's */
#define WK_WAIT_MS 1000 /* one loop_run_once never blocks longer than this */
#define WK_STALLS  5    /* loop_run_once calls in a row without the completion: an error */

static const int64_t wk_args[] = {1, 16, 256, 1024, 4096, 16384};

struct wk_bench {
	struct loop loop;
	struct op *ops;   /* ops[0]: the active recv; ops[1..n]: the idle ones */
	int (*fds)[2];    /* fds[i][0] is watched by ops[i]; fds[i][1] is its peer */
	size_t n;         /* idle pairs */
	size_t npairs;    /* pairs opened so far (n + 1 when set-up is complete) */
	bool loop_up;
	unsigned long fired;      /* active completions with data */
	unsigned long idle_fired; /* completions on idle ops: must stay 0 */
	int error;                /* first unexpected result (negative errno), or 0 */
};

static void wk_fail(struct gbench_state *st, const char *what, int err)
{
	char msg[160];
	snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
	gbench_skip_with_error(st, msg);
}

static void wk_done(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	struct wk_bench *b = op->owner;
	if (cflags & OPF_BUFFER)
		loop_buf_release(loop, op->buf.bid);
	if (op != &b->ops[0]) {
		if (res != -ECANCELED)
			b->idle_fired++;
		return;
	}
	if (res > 0)
		b->fired++;
	else if (res == 0 && b->error == 0)
		b->error = -EPIPE;
	else if (res != -ECANCELED && res != -ENOBUFS && b->error == 0)
		b->error = res;
	/* -ENOBUFS and a backend that cannot stay armed: the timed loop re-arms */
}

/* The soft RLIMIT_NOFILE after raising it to the hard limit. */
static rlim_t wk_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)1 << 24)
		return (rlim_t)1 << 24;
	return rl.rlim_cur;
}

/* The lowest free fd now: the fds already taken before a benchmark opens its own. */
static int wk_fd_base(void)
{
	int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return 16;
	close(fd);
	return fd;
}

static void wk_teardown(struct gbench_state *st, struct wk_bench *b)
{
	bool all_final = true;
	if (b->loop_up) {
		for (size_t i = 0; i < b->npairs; i++)
			if (b->ops[i].armed)
				loop_cancel(&b->loop, &b->ops[i]);
		/* Cancels may be final in batches (io_uring: a few dozen per wait), so keep
		 * going while they progress; give up after a run of rounds without any. */
		size_t last = (size_t)-1;
		for (int still = 0; still < 20;) {
			size_t armed = 0;
			for (size_t i = 0; i < b->npairs; i++)
				armed += b->ops[i].armed;
			all_final = armed == 0;
			if (all_final)
				break;
			still = armed < last ? 0 : still + 1;
			last = armed;
			loop_run_once(&b->loop, still == 0 ? 0 : 10);
		}
		if (!all_final)
			gbench_skip_with_error(st, "teardown: ops still armed after cancel");
	}
	for (size_t i = 0; i < b->npairs; i++) {
		if (b->loop_up)
			loop_close_fd(&b->loop, b->fds[i][0]);
		else
			close(b->fds[i][0]);
		close(b->fds[i][1]);
	}
	if (!all_final)
		return; /* the backend may still touch the ops: leak them and the loop */
	if (b->loop_up)
		loop_fini(&b->loop);
	free(b->ops);
	free(b->fds);
}

/* Opens pair i and arms its recv. Returns 0, or -1 after reporting the error. */
static int wk_arm_pair(struct gbench_state *st, struct wk_bench *b, size_t i)
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b->fds[i]) != 0) {
		wk_fail(st, "socketpair", errno);
		return -1;
	}
	b->npairs = i + 1;
	const struct backend *be = b->loop.be;
	if ((be->caps & BACKEND_CAP_FD_LIMIT) && (b->fds[i][0] >= be->max_fd ||
						  b->fds[i][1] >= be->max_fd)) {
		gbench_skip_with_error(st, "fd reached the backend's max_fd");
		return -1;
	}
	struct op *op = &b->ops[i];
	memset(op, 0, sizeof(*op));
	op->code = OP_RECV;
	op->fd = b->fds[i][0];
	op->done = wk_done;
	op->owner = b;
	int rc = loop_submit(&b->loop, op);
	if (rc < 0) {
		wk_fail(st, "submit recv", -rc);
		return -1;
	}
	return 0;
}

/* One wake-up: a byte on the active pair, the loop run until its recv completed. */
static int wk_wake(struct gbench_state *st, struct wk_bench *b)
{
	static const char byte = 'x';
	unsigned long before = b->fired;
	if (!b->ops[0].armed) {
		int rc = loop_submit(&b->loop, &b->ops[0]);
		if (rc < 0) {
			wk_fail(st, "re-arm recv", -rc);
			return -1;
		}
	}
	if (write(b->fds[0][1], &byte, 1) != 1) {
		wk_fail(st, "write", errno);
		return -1;
	}
	int stalls = 0;
	while (b->fired == before) {
		int rc = loop_run_once(&b->loop, WK_WAIT_MS);
		if (rc < 0) {
			wk_fail(st, "loop_run_once", -rc);
			return -1;
		}
		if (b->error != 0) {
			wk_fail(st, "active recv", -b->error);
			return -1;
		}
		if (b->fired == before && !b->ops[0].armed) {
			rc = loop_submit(&b->loop, &b->ops[0]); /* -ENOBUFS or single-shot */
			if (rc < 0) {
				wk_fail(st, "re-arm recv", -rc);
				return -1;
			}
		}
		if (b->fired == before && ++stalls > WK_STALLS) {
			gbench_skip_with_error(st, "the active recv never completed");
			return -1;
		}
	}
	return 0;
}

static void bm_wakeup(struct gbench_state *st, void *arg)
{
	const struct backend *be = backend_table[(uintptr_t)arg];
	int64_t n = gbench_range(st, 0);
	struct wk_bench *b = calloc(1, sizeof(*b));
	if (b == NULL) {
		wk_fail(st, "calloc", ENOMEM);
		return;
	}
	b->n = (size_t)n;
	b->ops = calloc(b->n + 1, sizeof(*b->ops));
	b->fds = calloc(b->n + 1, sizeof(*b->fds));
	if (b->ops == NULL || b->fds == NULL) {
		wk_fail(st, "calloc", ENOMEM);
		goto out;
	}
	struct loop_config cfg = {
		.nbufs = WK_NBUFS,
		.bufsize = WK_BUFSIZE,
		.max_fds = (uint32_t)wk_fd_limit(),
	};
	int rc = loop_init(&b->loop, be, &cfg);
	if (rc < 0) {
		char what[96];
		snprintf(what, sizeof what, "loop_init(%s)", be->name);
		wk_fail(st, what, -rc);
		goto out;
	}
	b->loop_up = true;

	for (size_t i = 0; i <= b->n; i++)
		if (wk_arm_pair(st, b, i) < 0)
			goto out;
	/* Let deferred work and the first waits settle, then one checked wake-up untimed. */
	loop_run_once(&b->loop, 0);
	if (wk_wake(st, b) < 0)
		goto out;

	while (gbench_keep_running(st))
		if (wk_wake(st, b) < 0)
			break;
	if (b->idle_fired != 0)
		gbench_skip_with_error(st, "an idle recv completed");
	gbench_set_items_processed(st, gbench_iterations(st));
	gbench_counter(st, "idle", (double)n, GBENCH_COUNTER_PLAIN);
out:
	wk_teardown(st, b);
	free(b);
}

void bm_wakeup_register(void)
{
	rlim_t limit = wk_fd_limit();
	int base = wk_fd_base();
	for (size_t i = 0; i < backend_count; i++) {
		const struct backend *be = backend_table[i];
		char name[96];
		snprintf(name, sizeof name, "wakeup/%s", be->name);
		struct gbench_def *d = gbench_register(name, bm_wakeup, (void *)(uintptr_t)i);
		gbench_use_real_time(d);
		for (size_t a = 0; a < sizeof(wk_args) / sizeof(wk_args[0]); a++) {
			/* highest fd the run would open, give or take the backend's own */
			int64_t top = (int64_t)base + 2 * (wk_args[a] + 1) + WK_SLACK;
			if (top > (int64_t)limit)
				continue;
			if ((be->caps & BACKEND_CAP_FD_LIMIT) && top > (int64_t)be->max_fd)
				continue;
			gbench_arg(d, wk_args[a]);
		}
	}
}
