/* bm_selftest - benchmarks that need no engine, and the benchmark binary's smoke test (make
 * test runs `echod-bench --benchmark_filter=selftest --benchmark_min_time=0.01`).
 *
 * selftest/socketpair_roundtrip: an echo of N bytes over an AF_UNIX socketpair, done by hand
 * (write on one end, read on the other, write back, read back). It proves gbench's timed loop,
 * arguments, byte and item rates and counters end to end, and gives a floor for the cost of
 * one kernel round trip that the echod benchmarks can be read against.
 *
 * The others each prove one wrapper feature, by a check that fails the run when it is broken:
 *   keep_running_batch/N  the iterations counted are exactly N per pass of the loop; with an
 *                         empty body its time is the framework's own cost per iteration
 *   manual_time           the reported time is exactly what gbench_set_iteration_time was given
 *   process_cpu_time      the CPU column includes a helper thread's CPU (the main thread only
 *                         waits for it)
 *   do_not_optimize       a result only passed to gbench_do_not_optimize is still computed
 * Each check is a bound that noise cannot break: noise only makes things slower, so timing
 * checks are lower bounds, and the others are exact.
 */
#include "gbench.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One thread drives both ends with blocking I/O, so each leg must fit in the socket buffer or
 * the write would wait for a read that never comes. 64 KiB fits the default AF_UNIX buffer
 * (~208 KiB); larger payloads go in several legs. */
#define LEG_MAX (64 * 1024)

struct pair {
	int a, b;
	long syscalls; /* write/read calls made, to show short transfers as a counter */
};

/* Moves exactly n bytes from fd `from` into fd `to` and reads them into dst. Returns 0, or an
 * errno value (EPIPE if the peer closed). */
static int leg(struct pair *p, int from, int to, const char *src, char *dst, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t w = write(from, src + done, n - done);
		p->syscalls++;
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? errno : EPIPE;
		done += (size_t)w;
	}
	for (size_t done = 0; done < n;) {
		ssize_t r = read(to, dst + done, n - done);
		p->syscalls++;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EPIPE;
		done += (size_t)r;
	}
	return 0;
}

/* n bytes from `out` go a -> b and come back b -> a into `back`. Returns 0 or an errno value. */
static int round_trip(struct pair *p, const char *out, char *mid, char *back, size_t n)
{
	for (size_t off = 0; off < n; off += LEG_MAX) {
		size_t len = n - off < LEG_MAX ? n - off : LEG_MAX;
		int err = leg(p, p->a, p->b, out + off, mid + off, len);
		if (err == 0)
			err = leg(p, p->b, p->a, mid + off, back + off, len);
		if (err != 0)
			return err;
	}
	return 0;
}

static void fail(struct gbench_state *st, const char *what, int err)
{
	char msg[128];
	snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
	gbench_skip_with_error(st, msg);
}

/* One checked round trip before timing, so a broken transfer is an error, not a fast result;
 * checking inside the loop would add a memcmp to what is measured. */
static int check_round_trip(struct gbench_state *st, struct pair *p, char *bufs, size_t n)
{
	char *out = bufs, *mid = bufs + n, *back = bufs + 2 * n;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(i * 31 + 7);
	int err = round_trip(p, out, mid, back, n);
	if (err != 0) {
		fail(st, "round trip", err);
		return -1;
	}
	if (memcmp(out, back, n) != 0) {
		gbench_skip_with_error(st, "round trip: bytes came back changed");
		return -1;
	}
	return 0;
}

static void timed_round_trips(struct gbench_state *st, struct pair *p, char *bufs, size_t n)
{
	p->syscalls = 0;
	while (gbench_keep_running(st)) {
		int err = round_trip(p, bufs, bufs + n, bufs + 2 * n, n);
		if (err != 0) {
			fail(st, "round trip", err);
			break;
		}
	}
	int64_t iters = gbench_iterations(st);
	gbench_set_bytes_processed(st, iters * (int64_t)n); /* payload bytes echoed */
	gbench_set_items_processed(st, iters);              /* round trips */
	gbench_counter(st, "syscalls", (double)p->syscalls, GBENCH_COUNTER_PER_ITERATION);
}

static void bm_socketpair_roundtrip(struct gbench_state *st, void *arg)
{
	(void)arg;
	int64_t arg0 = gbench_range(st, 0);
	if (arg0 <= 0) {
		gbench_skip_with_error(st, "payload size must be positive");
		return;
	}
	size_t n = (size_t)arg0;

	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
		fail(st, "socketpair", errno);
		return;
	}
	struct pair p = {.a = fds[0], .b = fds[1]};

	char *bufs = malloc(3 * n); /* out, mid (b's copy), back */
	if (bufs == NULL)
		fail(st, "malloc", ENOMEM);
	else if (check_round_trip(st, &p, bufs, n) == 0)
		timed_round_trips(st, &p, bufs, n);

	free(bufs);
	close(p.a);
	close(p.b);
}

/* ---- keep_running_batch ---------------------------------------------------------------- */

static void bm_batch(struct gbench_state *st, void *arg)
{
	(void)arg;
	int64_t n = gbench_range(st, 0);
	int64_t passes = 0;
	while (gbench_keep_running_batch(st, n)) {
		passes++;
		gbench_do_not_optimize(&passes); /* an empty body that still runs once per pass */
	}
	int64_t iters = gbench_iterations(st);
	if (iters != passes * n) {
		char msg[128];
		snprintf(msg, sizeof msg, "%lld iterations counted for %lld passes of %lld",
			 (long long)iters, (long long)passes, (long long)n);
		gbench_skip_with_error(st, msg);
	}
}

/* ---- manual_time ------------------------------------------------------------------------- */

/* An odd value, so that a unit slip or a clock read mixed in cannot land on it by chance. */
#define MANUAL_NS 2345.0

static void bm_manual_time(struct gbench_state *st, void *arg)
{
	(void)arg;
	while (gbench_keep_running(st))
		gbench_set_iteration_time(st, MANUAL_NS * 1e-9);
}

static bool check_manual_time(const struct gbench_result *r, void *arg, char *why, size_t len)
{
	(void)arg;
	/* Sums and means of one value: exact but for rounding. */
	if (r->real_ns > MANUAL_NS * (1 - 1e-9) && r->real_ns < MANUAL_NS * (1 + 1e-9))
		return true;
	snprintf(why, len, "reported %.3f ns per iteration, set %.3f", r->real_ns, MANUAL_NS);
	return false;
}

/* ---- process_cpu_time -------------------------------------------------------------------- */

/* CPU the helper thread burns per iteration while the benchmark thread sleeps in read(). */
#define HELPER_CPU_NS 50000

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Per byte on fd[0]: spin until this thread has used HELPER_CPU_NS more CPU, answer on fd[1].
 * 'q' or EOF ends it. */
static void *cpu_helper(void *arg)
{
	const int *fd = arg;
	char c;
	while (read(fd[0], &c, 1) == 1 && c != 'q') {
		int64_t until = thread_cpu_ns() + HELPER_CPU_NS;
		while (thread_cpu_ns() < until)
			;
		if (write(fd[1], &c, 1) != 1)
			break;
	}
	return NULL;
}

static void bm_process_cpu_time(struct gbench_state *st, void *arg)
{
	(void)arg;
	int to_helper[2], from_helper[2];
	if (pipe(to_helper) != 0) {
		fail(st, "pipe", errno);
		return;
	}
	if (pipe(from_helper) != 0) {
		fail(st, "pipe", errno);
		close(to_helper[0]);
		close(to_helper[1]);
		return;
	}
	int helper_fd[2] = {to_helper[0], from_helper[1]};
	pthread_t helper;
	int err = pthread_create(&helper, NULL, cpu_helper, helper_fd);
	if (err != 0) {
		fail(st, "pthread_create", err);
	} else {
		char c = 'x';
		while (gbench_keep_running(st)) {
			if (write(to_helper[1], &c, 1) != 1 || read(from_helper[0], &c, 1) != 1) {
				fail(st, "helper pipe", errno ? errno : EPIPE);
				break;
			}
		}
		c = 'q';
		if (write(to_helper[1], &c, 1) != 1)
			close(to_helper[1]); /* EOF ends the helper just as well */
		pthread_join(helper, NULL);
	}
	close(to_helper[0]);
	close(to_helper[1]);
	close(from_helper[0]);
	close(from_helper[1]);
}

/* The helper's thread-CPU spin guarantees HELPER_CPU_NS per iteration to a process CPU clock,
 * whatever the noise. The benchmark thread's own CPU (a write and a blocking read) is several
 * times less, so a CPU column counting only that thread falls short and fails. */
static bool check_process_cpu(const struct gbench_result *r, void *arg, char *why, size_t len)
{
	(void)arg;
	if (r->cpu_ns >= HELPER_CPU_NS)
		return true;
	snprintf(why, len, "CPU %.0f ns per iteration, below the helper thread's %d alone",
		 r->cpu_ns, HELPER_CPU_NS);
	return false;
}

/* ---- do_not_optimize --------------------------------------------------------------------- */

#define LCG_STEPS 1000

static void bm_do_not_optimize(struct gbench_state *st, void *arg)
{
	(void)arg;
	uint64_t seed = 0;
	while (gbench_keep_running(st)) {
		/* A chain of dependent multiply-adds from a seed the compiler cannot know: it can
		 * neither fold it nor shorten it, only delete it if the result is unused. */
		uint64_t x = seed++;
		for (int i = 0; i < LCG_STEPS; i++)
			x = x * 6364136223846793005u + 1442695040888963407u;
		gbench_do_not_optimize(&x);
	}
}

/* Each step waits for the previous multiply, at least 3 cycles on any x86-64 of the last two
 * decades: LCG_STEPS steps cannot take under 3000 cycles, 500 ns even at 6 GHz. Deleted, the
 * loop would take a few ns. Half the bound leaves room for any CPU. */
static bool check_kept(const struct gbench_result *r, void *arg, char *why, size_t len)
{
	(void)arg;
	if (r->cpu_ns >= 250)
		return true;
	snprintf(why, len, "%.1f ns for %d dependent multiply-adds: the computation was removed",
		 r->cpu_ns, LCG_STEPS);
	return false;
}

void bm_selftest_register(void)
{
	struct gbench_def *d =
		gbench_register("selftest/socketpair_roundtrip", bm_socketpair_roundtrip, NULL);
	gbench_arg(d, 64);
	gbench_arg(d, 4096);
	gbench_arg(d, 65536);

	d = gbench_register("selftest/keep_running_batch", bm_batch, NULL);
	gbench_arg(d, 1);
	gbench_arg(d, 7);  /* odd: the library's iteration targets are never its multiples */
	gbench_arg(d, 64);

	d = gbench_register("selftest/manual_time", bm_manual_time, NULL);
	gbench_use_manual_time(d);
	gbench_check(d, check_manual_time, NULL);

	d = gbench_register("selftest/process_cpu_time", bm_process_cpu_time, NULL);
	gbench_measure_process_cpu_time(d);
	gbench_check(d, check_process_cpu, NULL);

	d = gbench_register("selftest/do_not_optimize", bm_do_not_optimize, NULL);
	gbench_check(d, check_kept, NULL);
}
