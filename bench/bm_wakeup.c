/* bm_wakeup - what one event costs each backend against the number of idle fds, two ways.
 *
 * Common set-up (not timed): one loop on the backend, N idle AF_UNIX socketpairs each with an
 * armed multishot OP_RECV on one end (nothing is ever sent on them), and one active socketpair
 * with an armed OP_RECV. One iteration writes 1 byte on the active peer and ends when the active
 * recv's callback has run. select and poll pay O(watched) per pass, epoll and io_uring O(ready).
 *
 * dispatch/BACKEND/idle:N (real time): the benchmark thread writes, then runs the loop itself,
 *   so the byte is already there when the backend looks and no thread ever sleeps. This is the
 *   cost of one loop pass that finds and dispatches one ready fd among N + 1 (with the write and
 *   the recv): the dispatch cost per idle fd. It is not a wake-up.
 *
 * wakeup/BACKEND/idle:N (manual time): the loop runs in a thread of its own. Before each write
 *   the benchmark thread waits until that thread has said it is about to wait and
 *   /proc/self/task/TID/stat shows it sleeping ('S'), so every iteration really wakes a sleeping
 *   thread. The time is from just before the write to the active recv's callback in the woken
 *   thread (CLOCK_MONOTONIC in both): the kernel waking the thread, the backend's return from
 *   its wait and the dispatch. CPU per wake-up is reported per thread, exactly: loop_cpu_ns is
 *   the loop thread's whole cycle (wake, dispatch, the hand-back, back into the wait: for poll
 *   and select that re-entry is where the other O(watched) half is paid), and the CPU column is
 *   the writer's write and wait, its sleep check paused out. (The process's CPU clock would mix
 *   the two with that check, which overlaps the loop thread's re-entry.) When two CPUs are
 *   allowed the loop thread is pinned to the first and the writer to the second, as bench/compare
 *   pins echod and echoload, so the wake-up always crosses CPUs (the label says which).
 *
 * Arguments the process cannot hold are not registered: 2N + a few fds must fit under
 * RLIMIT_NOFILE (the soft limit is raised to the hard one first), and for a backend with
 * BACKEND_CAP_FD_LIMIT every fd must stay below backend->max_fd.
 */
#include "gbench.h"
#include "reactor.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WK_NBUFS   64
#define WK_BUFSIZE 4096
#define WK_SLACK   32   /* fds beyond the pairs: stdio, the backend's own, gbench's, pipes */
#define WK_WAIT_MS 1000 /* one loop_run_once never blocks longer than this */
#define WK_STALLS  5    /* loop_run_once calls in a row without the completion: an error */

static const int64_t wk_dispatch_args[] = {1, 16, 256, 1024, 4096, 16384};
/* Fewer points: each wake-up iteration also waits for the loop thread to fall asleep. */
static const int64_t wk_wakeup_args[] = {1, 256, 1024, 4096};

struct wk_sleeper;

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
	struct wk_sleeper *sl;    /* wakeup/: told of each active completion; dispatch/: NULL */
	/* First failure, for the benchmark thread to report: in wakeup/ the loop thread fails,
	 * and only the benchmark thread may touch the gbench state. */
	char why[160];
};

/* wakeup/: what the loop thread and the benchmark thread share. The loop itself (b) belongs to
 * the loop thread, which sets it up and tears it down: io_uring rings are SINGLE_ISSUER. */
struct wk_sleeper {
	struct wk_bench b;
	const struct backend *be;
	pthread_t thread;
	int cpu;              /* the loop thread's CPU, or -1: not pinned */
	/* The active pair, made by the benchmark thread: the loop thread watches active[0], the
	 * benchmark thread writes on active[1] and closes it only after the join, so a byte it
	 * sends can never reach an fd the loop thread has closed (or a new fd with its number). */
	int active[2];
	int done[2];          /* loop thread -> benchmark thread: 'R' ready, 'w' woke, 'E' failed */
	atomic_int tid;
	atomic_bool exited;   /* the loop thread has left its loop (stop or failure) */
	atomic_bool stop;
	atomic_bool pending;  /* a byte was written and its completion not seen yet */
	atomic_ulong waits;   /* waits the loop thread has begun */
	atomic_ulong woke_from; /* `waits` when the active recv last completed */
	atomic_llong woke_ns; /* CLOCK_MONOTONIC at that completion */
	/* The benchmark thread's own failure: b.why is the loop thread's to write. */
	char why[160];
};

static void wk_driver_fail(struct wk_sleeper *s, const char *what, int err)
{
	char buf[64];
	if (s->why[0] == '\0')
		snprintf(s->why, sizeof s->why, "%s: %s", what, strerror_r(err, buf, sizeof buf));
}

static int64_t wk_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void wk_failmsg(struct wk_bench *b, const char *msg)
{
	if (b->why[0] == '\0')
		snprintf(b->why, sizeof b->why, "%s", msg);
}

static void wk_fail(struct wk_bench *b, const char *what, int err)
{
	char buf[64];
	char msg[160];
	/* GNU strerror_r: strerror's buffer is not safe with two threads failing at once. */
	snprintf(msg, sizeof msg, "%s: %s", what, strerror_r(err, buf, sizeof buf));
	wk_failmsg(b, msg);
}

/* wakeup/: the active recv completed in the loop thread; hand the time to the writer. */
static void wk_woke(struct wk_bench *b)
{
	struct wk_sleeper *s = b->sl;
	atomic_store(&s->woke_ns, wk_now_ns());
	atomic_store(&s->woke_from, atomic_load(&s->waits));
	atomic_store(&s->pending, false);
	char c = 'w';
	if (write(s->done[1], &c, 1) != 1 && b->error == 0)
		b->error = -errno;
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
	if (res > 0) {
		b->fired++;
		if (b->sl != NULL)
			wk_woke(b);
	} else if (res == 0 && b->error == 0) {
		b->error = -EPIPE;
	} else if (res != -ECANCELED && res != -ENOBUFS && b->error == 0) {
		b->error = res;
	}
	/* -ENOBUFS and a backend that cannot stay armed: the caller re-arms */
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

/* Opens pair i and arms its recv. Returns 0, or -1 with b->why set. */
static int wk_arm_pair(struct wk_bench *b, size_t i)
{
	if (i == 0 && b->sl != NULL) {
		b->fds[0][0] = b->sl->active[0];
		b->fds[0][1] = b->sl->active[1];
	} else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
			      b->fds[i]) != 0) {
		wk_fail(b, "socketpair", errno);
		return -1;
	}
	b->npairs = i + 1;
	const struct backend *be = b->loop.be;
	if ((be->caps & BACKEND_CAP_FD_LIMIT) && (b->fds[i][0] >= be->max_fd ||
						  b->fds[i][1] >= be->max_fd)) {
		wk_failmsg(b, "fd reached the backend's max_fd");
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
		wk_fail(b, "submit recv", -rc);
		return -1;
	}
	return 0;
}

/* The loop on `be` with n idle pairs and the active one, all armed, in the calling thread.
 * Returns 0, or -1 with b->why set (wk_teardown still owes its clean-up). */
static int wk_setup(struct wk_bench *b, const struct backend *be, size_t n)
{
	b->n = n;
	b->ops = calloc(n + 1, sizeof(*b->ops));
	b->fds = calloc(n + 1, sizeof(*b->fds));
	if (b->ops == NULL || b->fds == NULL) {
		wk_fail(b, "calloc", ENOMEM);
		return -1;
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
		wk_fail(b, what, -rc);
		return -1;
	}
	b->loop_up = true;
	for (size_t i = 0; i <= n; i++)
		if (wk_arm_pair(b, i) < 0)
			return -1;
	/* Let deferred work and the first waits settle. */
	loop_run_once(&b->loop, 0);
	return 0;
}

/* In the thread that ran wk_setup. */
static void wk_teardown(struct wk_bench *b)
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
			wk_failmsg(b, "teardown: ops still armed after cancel");
	}
	for (size_t i = 0; i < b->npairs; i++) {
		if (b->loop_up)
			loop_close_fd(&b->loop, b->fds[i][0]);
		else
			close(b->fds[i][0]);
		if (i != 0 || b->sl == NULL) /* wakeup/: the writer's end stays the writer's */
			close(b->fds[i][1]);
	}
	if (!all_final)
		return; /* the backend may still touch the ops: leak them and the loop */
	if (b->loop_up)
		loop_fini(&b->loop);
	free(b->ops);
	free(b->fds);
}

/* The active recv, armed again if a completion ended it. Returns 0 or -1 with b->why set. */
static int wk_rearm(struct wk_bench *b)
{
	if (b->ops[0].armed)
		return 0;
	int rc = loop_submit(&b->loop, &b->ops[0]); /* -ENOBUFS or single-shot */
	if (rc < 0) {
		wk_fail(b, "re-arm recv", -rc);
		return -1;
	}
	return 0;
}

/* Whether the loop pass just run went wrong; `stalls` counts passes in a row without the
 * completion that was waited for. Returns 0 or -1 with b->why set. */
static int wk_after_pass(struct wk_bench *b, int rc, bool progress, int *stalls)
{
	if (rc < 0) {
		wk_fail(b, "loop_run_once", -rc);
		return -1;
	}
	if (b->error != 0) {
		wk_fail(b, "active recv", -b->error);
		return -1;
	}
	if (b->idle_fired != 0) {
		wk_failmsg(b, "an idle recv completed");
		return -1;
	}
	*stalls = progress ? 0 : *stalls + 1;
	if (*stalls > WK_STALLS) {
		wk_failmsg(b, "the active recv never completed");
		return -1;
	}
	return 0;
}

/* ---- dispatch/: write, then run the loop in the same thread ---------------------------- */

static int wk_dispatch_one(struct wk_bench *b)
{
	static const char byte = 'x';
	unsigned long before = b->fired;
	if (wk_rearm(b) < 0)
		return -1;
	if (write(b->fds[0][1], &byte, 1) != 1) {
		wk_fail(b, "write", errno);
		return -1;
	}
	int stalls = 0;
	while (b->fired == before) {
		int rc = loop_run_once(&b->loop, WK_WAIT_MS);
		if (wk_after_pass(b, rc, b->fired != before, &stalls) < 0)
			return -1;
		if (b->fired == before && wk_rearm(b) < 0)
			return -1;
	}
	return 0;
}

static void bm_dispatch(struct gbench_state *st, void *arg)
{
	const struct backend *be = backend_table[(uintptr_t)arg];
	int64_t n = gbench_range(st, 0);
	struct wk_bench *b = calloc(1, sizeof(*b));
	if (b == NULL) {
		gbench_skip_with_error(st, "calloc: out of memory");
		return;
	}
	/* One checked round untimed, so a broken backend is an error, not a fast result. */
	if (wk_setup(b, be, (size_t)n) == 0 && wk_dispatch_one(b) == 0) {
		while (gbench_keep_running(st))
			if (wk_dispatch_one(b) < 0)
				break;
		gbench_set_items_processed(st, gbench_iterations(st));
		gbench_counter(st, "idle", (double)n, GBENCH_COUNTER_PLAIN);
	}
	wk_teardown(b);
	if (b->why[0] != '\0')
		gbench_skip_with_error(st, b->why);
	free(b);
}

/* ---- wakeup/: a loop thread asleep in its wait, woken by a write from this one --------- */

static void wk_signal(struct wk_sleeper *s, char c)
{
	if (write(s->done[1], &c, 1) != 1)
		wk_fail(&s->b, "signal pipe", errno);
}

/* The loop thread's passes until told to stop or something fails. */
static void wk_serve(struct wk_sleeper *s)
{
	struct wk_bench *b = &s->b;
	int stalls = 0;
	while (!atomic_load(&s->stop)) {
		if (wk_rearm(b) < 0)
			return;
		unsigned long before = b->fired;
		/* Counted before the wait so the writer knows this wait began after the last
		 * wake-up; it then checks the thread is really asleep in it. */
		atomic_fetch_add(&s->waits, 1);
		int rc = loop_run_once(&b->loop, WK_WAIT_MS);
		/* A pass with nothing to do is progress unless a byte is waiting to be seen. */
		bool progress = b->fired != before || !atomic_load(&s->pending);
		if (wk_after_pass(b, rc, progress, &stalls) < 0)
			return;
	}
}

static void wk_pin_self(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof set, &set); /* best effort: unpinned still measures */
}

static void *wk_loop_thread(void *arg)
{
	struct wk_sleeper *s = arg;
	atomic_store(&s->tid, (int)gettid());
	wk_pin_self(s->cpu);
	if (wk_setup(&s->b, s->be, s->b.n) == 0) {
		wk_signal(s, 'R');
		wk_serve(s);
	}
	atomic_store(&s->exited, true);
	wk_teardown(&s->b);
	/* Wakes a writer blocked on 'w'; after a clean stop nobody reads it. */
	if (s->b.why[0] != '\0')
		wk_signal(s, 'E');
	return NULL;
}

/* The loop thread's scheduler state from /proc ('S': asleep in a wait), or -1. */
static int wk_thread_state(int stat_fd)
{
	char buf[512];
	ssize_t len = pread(stat_fd, buf, sizeof buf - 1, 0);
	if (len <= 0)
		return -1;
	buf[len] = '\0';
	const char *p = strrchr(buf, ')'); /* the command name may hold spaces and ')' */
	return p != NULL && p[1] == ' ' && p[2] != '\0' ? p[2] : -1;
}

/* One wake-up; when timed, its time goes to gbench_set_iteration_time (and the sleep check is
 * paused out of the CPU column; pausing before the timed loop has begun is not allowed). *gen
 * is the wait the last wake-up ended. Returns 0, or -1 with s->b.why set (or to be set by the
 * loop thread). */
static int wk_wake_one(struct gbench_state *st, struct wk_sleeper *s, int stat_fd,
		       unsigned long *gen, bool timed)
{
	static const char byte = 'x';
	if (timed)
		gbench_pause_timing(st);
	/* A wait begun after the last wake-up, and the thread asleep in it. Yield, not
	 * sleep: the loop thread gets there in microseconds, and it may share this CPU. */
	while (atomic_load(&s->waits) <= *gen || wk_thread_state(stat_fd) != 'S') {
		if (atomic_load(&s->exited))
			return -1;
		sched_yield();
	}
	if (timed)
		gbench_resume_timing(st);
	atomic_store(&s->pending, true);
	int64_t t0 = wk_now_ns();
	/* MSG_NOSIGNAL: if the loop thread failed and closed its end, EPIPE, not SIGPIPE. */
	if (send(s->active[1], &byte, 1, MSG_NOSIGNAL) != 1) {
		wk_driver_fail(s, "write", errno);
		return -1;
	}
	char c;
	if (read(s->done[0], &c, 1) != 1 || c != 'w')
		return -1; /* 'E': the loop thread failed and says why */
	int64_t t1 = atomic_load(&s->woke_ns);
	*gen = atomic_load(&s->woke_from);
	if (timed)
		gbench_set_iteration_time(st, (double)(t1 - t0) * 1e-9);
	return 0;
}

static int64_t wk_thread_cpu_ns(pthread_t t)
{
	clockid_t cid;
	struct timespec ts;
	if (pthread_getcpuclockid(t, &cid) != 0 || clock_gettime(cid, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The first two CPUs this thread may run on; -1 where there are fewer. */
static void wk_two_cpus(const cpu_set_t *allowed, int cpu[2])
{
	cpu[0] = cpu[1] = -1;
	for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; c++)
		if (CPU_ISSET(c, allowed))
			cpu[k++] = c;
	if (cpu[1] < 0)
		cpu[0] = -1; /* one CPU: nothing to choose */
}

/* The timed part, once the loop thread is ready. Returns 0 or -1 (a reason is set). */
static int wk_wakeups(struct gbench_state *st, struct wk_sleeper *s)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", atomic_load(&s->tid));
	int stat_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (stat_fd < 0) {
		wk_driver_fail(s, path, errno);
		return -1;
	}
	unsigned long gen = 0;
	int rc = wk_wake_one(st, s, stat_fd, &gen, false); /* untimed: the loop works */
	int64_t cpu0 = wk_thread_cpu_ns(s->thread);
	if (rc == 0) {
		while (gbench_keep_running(st))
			if ((rc = wk_wake_one(st, s, stat_fd, &gen, true)) < 0)
				break;
	}
	int64_t cpu1 = wk_thread_cpu_ns(s->thread);
	close(stat_fd);
	if (rc == 0) {
		gbench_set_items_processed(st, gbench_iterations(st));
		gbench_counter(st, "loop_cpu_ns", (double)(cpu1 - cpu0),
			       GBENCH_COUNTER_PER_ITERATION);
	}
	return rc;
}

static void bm_wakeup(struct gbench_state *st, void *arg)
{
	struct wk_sleeper *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		gbench_skip_with_error(st, "calloc: out of memory");
		return;
	}
	s->be = backend_table[(uintptr_t)arg];
	s->b.n = (size_t)gbench_range(st, 0);
	s->b.sl = s;
	if (pipe2(s->done, O_CLOEXEC) != 0) {
		free(s);
		gbench_skip_with_error(st, "pipe2 failed");
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->active) != 0) {
		close(s->done[0]);
		close(s->done[1]);
		free(s);
		gbench_skip_with_error(st, "socketpair failed");
		return;
	}

	/* Writer on the second allowed CPU, loop on the first; this thread's mask restored. */
	cpu_set_t saved;
	int cpu[2] = {-1, -1};
	bool pinned = sched_getaffinity(0, sizeof saved, &saved) == 0;
	if (pinned)
		wk_two_cpus(&saved, cpu);
	s->cpu = cpu[0];
	wk_pin_self(cpu[1]);

	int err = pthread_create(&s->thread, NULL, wk_loop_thread, s);
	if (err != 0) {
		wk_driver_fail(s, "pthread_create", err);
	} else {
		char c;
		if (read(s->done[0], &c, 1) == 1 && c == 'R' && wk_wakeups(st, s) == 0) {
			char label[64];
			if (cpu[0] >= 0)
				snprintf(label, sizeof label, "loop on CPU %d, writer on CPU %d",
					 cpu[0], cpu[1]);
			else
				snprintf(label, sizeof label, "one CPU: loop and writer share it");
			gbench_set_label(st, label);
		}
		/* Stop: the flag, then a byte so the thread need not wait out WK_WAIT_MS. If the
		 * send fails the thread still stops, at its next timeout. */
		atomic_store(&s->stop, true);
		static const char byte = 'x';
		(void)!send(s->active[1], &byte, 1, MSG_NOSIGNAL);
		pthread_join(s->thread, NULL);
	}
	if (pinned)
		sched_setaffinity(0, sizeof saved, &saved);
	/* After the join, so the loop thread's reason is safe to read; it is the cause when
	 * both failed (the writer's failure then follows from it). */
	if (s->b.why[0] != '\0')
		gbench_skip_with_error(st, s->b.why);
	else if (s->why[0] != '\0')
		gbench_skip_with_error(st, s->why);
	else if (err == 0 && s->b.fired == 0)
		gbench_skip_with_error(st, "the loop thread stopped before the first wake-up");
	if (s->b.npairs == 0) /* the loop thread never took the watched end */
		close(s->active[0]);
	close(s->active[1]);
	close(s->done[0]);
	close(s->done[1]);
	free(s);
}

/* ---- registration ---------------------------------------------------------------------- */

static void wk_register(const char *kind, gbench_fn *fn, const int64_t *args, size_t nargs,
			bool sleeper)
{
	rlim_t limit = wk_fd_limit();
	int base = wk_fd_base();
	static const char *const arg_names[] = {"idle"};
	for (size_t i = 0; i < backend_count; i++) {
		const struct backend *be = backend_table[i];
		char name[96];
		snprintf(name, sizeof name, "%s/%s", kind, be->name);
		struct gbench_def *d = gbench_register(name, fn, (void *)(uintptr_t)i);
		gbench_arg_names(d, arg_names, 1);
		if (sleeper) {
			gbench_use_manual_time(d);
		} else {
			gbench_use_real_time(d);
		}
		for (size_t a = 0; a < nargs; a++) {
			/* highest fd the run would open, give or take the backend's own */
			int64_t top = (int64_t)base + 2 * (args[a] + 1) + WK_SLACK;
			if (top > (int64_t)limit)
				continue;
			if ((be->caps & BACKEND_CAP_FD_LIMIT) && top > (int64_t)be->max_fd)
				continue;
			gbench_arg(d, args[a]);
		}
	}
}

void bm_wakeup_register(void)
{
	wk_register("dispatch", bm_dispatch, wk_dispatch_args,
		    sizeof(wk_dispatch_args) / sizeof(wk_dispatch_args[0]), false);
	wk_register("wakeup", bm_wakeup, wk_wakeup_args,
		    sizeof(wk_wakeup_args) / sizeof(wk_wakeup_args[0]), true);
}
