/* test_echoload.c - echoload end to end: the real binary against a real server over loopback.
 *
 * helper_faultyecho damages echoes in each way echoload claims to detect (a byte dropped,
 * duplicated, bit-flipped, two bytes swapped, a message repeated, the connection closed); each
 * run must fail with the matching counter in its JSON, and a faultless run must pass with
 * every counter at zero.
 *
 * What does not come back: an echo lost for good, half of every message echoed, a server that
 * goes silent near the end of an open loop (every connection stalled): each fails the run with
 * one FAILED line that says what was missing, and the open loop's percentiles show the stall.
 * A stall that ends in the drain passes, with its latency in the percentiles, the sends it held
 * back in the send lag, and the result marked valid=0 for the rate it did not keep. --cpu-stat's
 * columns, and the server's CPU in nanoseconds (a short, light run that ticks would read as 0).
 *
 * Also: partial sends and reads, pipelining over two threads, the open loop's rate, CSV, the
 * server CPU figure and backend, the progress line (on a terminal only), usage errors, an
 * unreachable port, the io_uring engine where it runs and its refusal where it cannot
 * (io_uring_setup blocked by seccomp), and the histogram's accuracy (tools/hist.c is compiled
 * in).
 *
 * --server-metrics: the URL forms, the HTTP framing and the exposition parser on literal text
 * and on thousands of mutations of it (tools/echoload_scrape.c is compiled in; under ASan an
 * overrun fails), the fetch's bounds against a server in a thread here that answers slowly, too
 * much or wrongly, echoload's figures from that server's known counters, a scrape that fails
 * (a warning, null fields, the run still passes), and the real echod's /metrics per backend.
 *
 * --reconnect: connection churn against the real echod, on each engine: connections opened,
 * closed cleanly and reopened, conns/s, no error, and echod's own count of the connections it
 * accepted agreeing with echoload's; and its refusals (0, --udp, --rate).
 *
 * --udp: helper_badudp mistreats datagrams in each way echoload --udp tells apart: a datagram
 * never answered (loss: a rate, the run passes), answered late (counted, passes), answered
 * with a flipped bit (corrupted), twice (duplicated), or to another socket (misdelivered), each
 * of the last three failing the run with its counter; then the real echod's UDP listener.
 *
 * Binaries are found next to this one: <dir>/../echoload, <dir>/../echod,
 * <dir>/helper_faultyecho and <dir>/helper_badudp. Every wait is bounded and children are
 * killed by pid; alarm() is the backstop if a test hangs anyway. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../tools/echoload_scrape.c"
#include "../tools/hist.c"
#include "lib_proc.h"

#define RUN_TIMEOUT_MS 15000
#define TEST_ALARM_S 40

extern char **environ;

static char echoload_bin[PATH_MAX + 16], helper_bin[PATH_MAX + 32], badudp_bin[PATH_MAX + 32];
static pid_t helper_pid; /* the running helper, killed by teardown if a test fails early */
static int helper_port;

struct output {
	int status;          /* exit status, 128+signal, or -1 if it had to be killed */
	char out[16384];
	char err[8192];
};

static uint64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits up to timeout_ms for pid; kills it (SIGKILL, by pid) if it does not exit in time. */
static int wait_bounded(pid_t pid, int timeout_ms)
{
	uint64_t end = ms_now() + (uint64_t)timeout_ms;
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0 && errno != EINTR)
			return -1;
		if (ms_now() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		struct timespec ts = { .tv_nsec = 5 * 1000000L };
		nanosleep(&ts, NULL);
	}
}

static pid_t spawn(const char *const argv[], int out_fd, int err_fd)
{
	posix_spawn_file_actions_t fa;
	pid_t pid = -1;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return -1;
	if (posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO) == 0 &&
	    posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO) == 0 &&
	    posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ) != 0)
		pid = -1;
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

static void slurp(int fd, char *buf, size_t len)
{
	size_t n = 0;
	ssize_t r = 0;
	if (lseek(fd, 0, SEEK_SET) == 0)
		while (n + 1 < len && (r = read(fd, buf + n, len - 1 - n)) > 0)
			n += (size_t)r;
	buf[n] = '\0';
	close(fd);
}

static int temp_file(void)
{
	char path[] = "/tmp/test_echoload.XXXXXX";
	int fd = mkstemp(path);
	if (fd >= 0)
		unlink(path);
	return fd;
}

/* Runs argv (NULL-terminated) to completion, capturing stdout and stderr. */
static void run_program(const char *const *argv, struct output *o)
{
	int out = temp_file(), err = temp_file();
	assert_true(out >= 0 && err >= 0);
	pid_t pid = spawn(argv, out, err);
	assert_true(pid > 0);
	o->status = wait_bounded(pid, RUN_TIMEOUT_MS);
	slurp(out, o->out, sizeof(o->out));
	slurp(err, o->err, sizeof(o->err));
}

/* Runs echoload with args (NULL-terminated) to completion, capturing stdout and stderr. */
static void run_echoload(const char *const *args, struct output *o)
{
	const char *argv[40];
	int n = 0;
	argv[n++] = echoload_bin;
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	run_program(argv, o);
}

/* Starts a helper (argv) and reads the port it prints (within 5 s). */
static void helper_spawn(const char *const *argv)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	helper_pid = spawn(argv, p[1], STDERR_FILENO);
	close(p[1]);
	assert_true(helper_pid > 0);
	char buf[64] = "";
	size_t n = 0;
	struct pollfd pfd = { .fd = p[0], .events = POLLIN };
	while (!strchr(buf, '\n') && n + 1 < sizeof(buf) && poll(&pfd, 1, 5000) == 1) {
		ssize_t r = read(p[0], buf + n, sizeof(buf) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = '\0';
	}
	close(p[0]);
	assert_int_equal(sscanf(buf, "port=%d", &helper_port), 1);
}

static void helper_start(const char *mode, const char *every, const char *split)
{
	const char *argv[] = { helper_bin, "--port", "0", "--mode", mode, "--every", every,
			       "--split", split, NULL };
	helper_spawn(argv);
}

static void badudp_start(const char *mode, const char *every, const char *delay_ms)
{
	const char *argv[] = { badudp_bin, "--port", "0", "--mode", mode, "--every", every,
			       "--delay", delay_ms, NULL };
	helper_spawn(argv);
}

static void helper_stop(void)
{
	if (helper_pid <= 0)
		return;
	kill(helper_pid, SIGTERM);
	if (wait_bounded(helper_pid, 2000) != 0)
		fprintf(stderr, "a helper did not exit cleanly\n");
	helper_pid = 0;
}

static size_t count_char(const char *s, char ch, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len && s[i]; i++)
		n += s[i] == ch;
	return n;
}

/* A number field of echoload's flat JSON object; NAN if absent or null. */
static double json_num(const char *json, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	if (!p || strncmp(p + strlen(pat), "null", 4) == 0)
		return NAN;
	return strtod(p + strlen(pat), NULL);
}

static const char *const error_keys[] = { "errors", "lost_bytes", "lost_msgs", "dup_bytes",
					   "dup_msgs", "corrupt_bytes", "reordered",
					   "conn_errors" };

static void assert_no_errors(const struct output *o)
{
	for (size_t i = 0; i < sizeof(error_keys) / sizeof(*error_keys); i++) {
		double v = json_num(o->out, error_keys[i]);
		if (v != 0)
			fail_msg("%s = %g in %s\nstderr: %s", error_keys[i], v, o->out, o->err);
	}
}

/* echoload against the helper for half a second, JSON on stdout: thousands of chunks, so a
 * fault every 25th is met a hundred times over. */
static void load(struct output *o, const char *engine, const char *depth, const char *threads,
		 const char *size)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[] = { "--port", port, "--engine", engine, "--depth", depth, "--threads",
			       threads, "--size", size, "--connections", "20", "--duration", "0.4",
			       "--warmup", "0.1", "--json", NULL };
	run_echoload(args, o);
}

static void expect_clean(const char *engine, const char *depth, const char *threads,
			 const char *size, const char *split)
{
	struct output o;
	helper_start("none", "1", split);
	load(&o, engine, depth, threads, size);
	helper_stop();
	if (o.status != 0)
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	assert_no_errors(&o);
	assert_true(json_num(o.out, "msgs") > 0);
	assert_true(json_num(o.out, "lat_p99_us") > 0);
}

static void expect_fault(const char *engine, const char *mode, const char *counter)
{
	struct output o;
	helper_start(mode, "25", "1000000");
	load(&o, engine, "1", "1", "128");
	helper_stop();
	if (o.status != 1 || !(json_num(o.out, counter) > 0) || !(json_num(o.out, "errors") > 0))
		fail_msg("mode %s: exit %d, %s = %g\nstdout: %s\nstderr: %s", mode, o.status,
			 counter, json_num(o.out, counter), o.out, o.err);
}

/* --- the faultless server ------------------------------------------------------------------ */

static void test_none_passes(void **state)
{
	(void)state;
	expect_clean("epoll", "1", "1", "128", "1000000");
}

/* Echoes sent 7 bytes per send(): reads come in pieces that cut headers and payloads. */
static void test_partial_reads_pass(void **state)
{
	(void)state;
	expect_clean("epoll", "3", "1", "1000", "7");
}

static void test_pipelined_threads_pass(void **state)
{
	(void)state;
	expect_clean("epoll", "16", "2", "64", "1000000");
}

/* --- each kind of damage is caught and named ----------------------------------------------- */

static void test_drop_is_lost(void **state)
{
	(void)state;
	expect_fault("epoll", "drop", "lost_bytes");
}

static void test_dup_is_duplicated(void **state)
{
	(void)state;
	expect_fault("epoll", "dup", "dup_bytes");
}

static void test_flip_is_corrupted(void **state)
{
	(void)state;
	expect_fault("epoll", "flip", "corrupt_bytes");
}

static void test_reorder_is_reordered(void **state)
{
	(void)state;
	expect_fault("epoll", "reorder", "reordered");
}

static void test_close_is_connection_error(void **state)
{
	(void)state;
	expect_fault("epoll", "close", "conn_errors");
}

/* A whole chunk echoed twice: at depth 1 that is a whole message, found by its header. */
static void test_repeat_is_duplicated_message(void **state)
{
	(void)state;
	expect_fault("epoll", "repeat", "dup_msgs");
}

/* --- what does not come back -------------------------------------------------------------- */

/* helper_faultyecho in a time mode (silent, pause), or with its own --every and --split. */
static void helper_start_timed(const char *mode, const char *every, const char *after_ms,
			       const char *for_ms)
{
	const char *argv[] = { helper_bin, "--port", "0", "--mode", mode, "--every", every,
			       "--after", after_ms, "--for", for_ms, NULL };
	helper_spawn(argv);
}

/* echoload against the helper, short; extra args (NULL-terminated) before --json. */
static void load_short(struct output *o, const char *const *extra)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[40] = { "--port", port, "--connections", "4" };
	int n = 4;
	for (int i = 0; extra[i] && n < 37; i++)
		args[n++] = extra[i];
	args[n++] = "--json";
	args[n] = NULL;
	run_echoload(args, o);
}

/* A run that failed for echoes that never came: exit 1, the bytes counted (and no verification
 * errors: what came was right), all of it said in one FAILED line with `words` in it. */
static void expect_unanswered(const struct output *o, const char *words)
{
	if (o->status != 1 || !(json_num(o->out, "unanswered_bytes") > 0) ||
	    !(json_num(o->out, "stalled_conns") > 0) ||
	    !(json_num(o->out, "in_flight_at_stop") > 0) || json_num(o->out, "valid") != 0 ||
	    json_num(o->out, "errors") != 0 || !strstr(o->err, "echoload: FAILED: ") ||
	    !strstr(o->err, words) || !strstr(o->err, " bytes never answered"))
		fail_msg("want exit 1 and '%s'; exit %d\nstderr: %s\nstdout: %s", words, o->status,
			 o->err, o->out);
	const char *line = strstr(o->err, "echoload: FAILED: ");
	assert_null(strstr(line + 1, "echoload: FAILED: ")); /* one line says it all */
}

/* One chunk in 300 never echoed: at depth 1 its connection waits for it to the end. A lost
 * echo, not a slow one: the drain gives up on it and the run fails, saying so. */
static void test_lost_echo_fails(void **state)
{
	(void)state;
	struct output o;
	helper_start("lose", "300", "1000000");
	const char *extra[] = { "--duration", "0.2", "--warmup", "0", NULL };
	load_short(&o, extra);
	helper_stop();
	expect_unanswered(&o, " never echoed");
	assert_true(json_num(o.out, "msgs") > 0);
}

/* Half of every message echoed: every byte that came is right, and each connection waits for
 * the rest. The FAILED line must say that, not just that no message was echoed. */
static void test_half_echo_fails(void **state)
{
	(void)state;
	struct output o;
	helper_start("half", "1", "1000000");
	const char *extra[] = { "--duration", "0.1", "--warmup", "0", NULL };
	load_short(&o, extra);
	helper_stop();
	expect_unanswered(&o, "4 messages came back partly echoed: 256 bytes never answered");
	assert_true(json_num(o.out, "unanswered_bytes") == 4 * 64);
	assert_true(json_num(o.out, "stalled_conns") == 4);
}

/* The open loop's end falls in a silence that never ends: the echoes due, the sends the depth
 * cap held back, every connection stalled. The percentiles show the silence (those messages
 * at their lateness when the drain gave up), and the run fails. */
static void test_open_loop_silence_at_end_fails(void **state)
{
	(void)state;
	struct output o;
	helper_start_timed("silent", "1", "400", "0");
	const char *extra[] = { "--rate", "2000", "--depth", "2", "--duration", "0.4",
				"--warmup", "0.1", NULL };
	load_short(&o, extra);
	helper_stop();
	expect_unanswered(&o, " never echoed");
	double p99 = json_num(o.out, "lat_p99_us");
	if (json_num(o.out, "stalled_conns") != 4 || !(json_num(o.out, "never_sent") > 0) ||
	    !(p99 >= 100000) || !(json_num(o.out, "rate_achieved_pct") < 99))
		fail_msg("p99 %g\nstderr: %s\nstdout: %s", p99, o.err, o.out);
	print_message("  silent from 0.4 s: p99 %.0f µs, %.0f never sent, %.0f B unanswered\n", p99,
		      json_num(o.out, "never_sent"), json_num(o.out, "unanswered_bytes"));
}

/* The server stops for 0.3 s across the end of the open loop, then goes on. Everything comes
 * back, in the drain: the messages are those due in the interval, so the stall is in the
 * percentiles (by completion time it would have fallen after the stop, and the sends held back
 * never gone out), the held sends are in the send lag, and the rate not kept marks the result
 * valid=0 with a warning; what came was verified, so the exit is 0. */
static void test_open_loop_stall_at_end_shows(void **state)
{
	(void)state;
	struct output o;
	helper_start_timed("pause", "1", "350", "300");
	const char *extra[] = { "--rate", "2000", "--depth", "2", "--duration", "0.4",
				"--warmup", "0.1", NULL };
	load_short(&o, extra);
	helper_stop();
	double p99 = json_num(o.out, "lat_p99_us"), lag = json_num(o.out, "send_lag_p99_us");
	if (o.status != 0 || json_num(o.out, "unanswered_bytes") != 0 ||
	    json_num(o.out, "never_sent") != 0 || json_num(o.out, "stalled_conns") != 0 ||
	    !(p99 >= 100000) || !(lag >= 50000) || !(json_num(o.out, "rate_achieved_pct") < 99) ||
	    json_num(o.out, "valid") != 0 || !strstr(o.err, "echoload: warning: the open loop"))
		fail_msg("exit %d, p99 %g µs, send lag p99 %g µs\nstderr: %s\nstdout: %s", o.status,
			 p99, lag, o.err, o.out);
	assert_no_errors(&o);
	/* every message due was echoed: the interval's slots, give or take one at its edges */
	assert_true(fabs(json_num(o.out, "msgs") - 2000 * 0.4) <= 1);
	print_message("  0.3 s pause across the stop: p99 %.0f µs, send lag p99 %.0f µs, %.1f%% "
		      "of the rate sent within the interval\n", p99, lag,
		      json_num(o.out, "rate_achieved_pct"));
}

static void csv_field(const char *csv, const char *name, char *out, size_t len);

/* Up to two CPUs this test may run on, as a --cpu-stat list; false if none is known. */
static bool cpu_list(char *buf, size_t len)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return false;
	size_t n = 0;
	int found = 0;
	buf[0] = '\0';
	for (int i = 0; i < CPU_SETSIZE && found < 2; i++)
		if (CPU_ISSET(i, &set))
			n += (size_t)snprintf(buf + n, len - n, "%s%d", found++ ? "," : "", i);
	return found > 0;
}

/* --cpu-stat: six columns per CPU at the end of the CSV, percentages within 0..100 and adding
 * up to no more (but for rounding), busy time per message where the load ran; and the new
 * columns before them. */
static void test_cpu_stat_columns(void **state)
{
	(void)state;
	char cpus[64];
	assert_true(cpu_list(cpus, sizeof(cpus)));
	struct output o;
	helper_start("none", "1", "1000000");
	char port[16], pid[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	snprintf(pid, sizeof(pid), "%d", (int)helper_pid);
	const char *args[] = { "--port", port, "--connections", "4", "--duration", "0.3",
			       "--warmup", "0", "--server-pid", pid, "--cpu-stat", cpus, "--csv",
			       NULL };
	run_echoload(args, &o);
	helper_stop();
	if (o.status != 0 || !strstr(o.out, ",unanswered_bytes,never_sent,send_lag_p99_us,"
					    "rate_achieved_pct,valid,cpu"))
		fail_msg("exit %d\nstderr: %s\nstdout: %s", o.status, o.err, o.out);
	char v[32];
	csv_field(o.out, "valid", v, sizeof(v));
	assert_string_equal(v, "1");
	csv_field(o.out, "unanswered_bytes", v, sizeof(v));
	assert_string_equal(v, "0");
	csv_field(o.out, "rate_achieved_pct", v, sizeof(v)); /* closed loop: none */
	assert_string_equal(v, "");
	static const char *const pct[] = { "user_pct", "system_pct", "irq_pct", "softirq_pct",
					   "steal_pct" };
	double busiest = 0;
	for (const char *p = cpus; *p;) {
		int cpu = atoi(p);
		double sum = 0;
		char name[64];
		for (size_t k = 0; k < sizeof(pct) / sizeof(*pct); k++) {
			snprintf(name, sizeof(name), "cpu%d_%s", cpu, pct[k]);
			csv_field(o.out, name, v, sizeof(v));
			double x = strtod(v, NULL);
			if (!*v || x < 0 || x > 100)
				fail_msg("%s = '%s'\n%s", name, v, o.out);
			sum += x;
		}
		snprintf(name, sizeof(name), "cpu%d_busy_us_per_msg", cpu);
		csv_field(o.out, name, v, sizeof(v));
		double busy = strtod(v, NULL);
		if (!*v || busy < 0 || sum > 102.5) /* five values, each rounded to its digits */
			fail_msg("cpu%d: busy %s µs/msg, %g%% in all\n%s", cpu, v, sum, o.out);
		busiest = busy > busiest ? busy : busiest;
		p += strcspn(p, ",");
		p += *p == ',';
	}
	if (!(busiest > 0))
		fail_msg("no busy time on CPUs %s under load:\n%s", cpus, o.out);
}

/* 20 messages at 100/s: the helper runs well under a 10 ms tick in all, which /proc/PID/stat
 * would report as no CPU at all; the scheduler's nanoseconds do not. */
static void test_server_cpu_in_ns(void **state)
{
	(void)state;
	struct output o;
	helper_start("none", "1", "1000000");
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)helper_pid);
	const char *extra[] = { "--connections", "1", "--rate", "100", "--duration", "0.2",
				"--warmup", "0", "--server-pid", pid, NULL };
	load_short(&o, extra);
	helper_stop();
	double us = json_num(o.out, "server_cpu_us_per_msg");
	if (o.status != 0 || !(us > 0) || !(json_num(o.out, "client_cpu_us_per_msg") > 0))
		fail_msg("exit %d, server_cpu_us_per_msg %g\nstderr: %s\nstdout: %s", o.status, us,
			 o.err, o.out);
	print_message("  server %.3f µs per message over %.0f messages\n", us,
		      json_num(o.out, "msgs"));
}

/* --- io_uring ------------------------------------------------------------------------------ */

static void test_uring(void **state)
{
	(void)state;
	struct output o;
	const char *args[] = { "--engine", "uring", "--port", "1", NULL };
	run_echoload(args, &o);
	if (o.status == 69) {
		print_message("io_uring unavailable here: %s", o.err);
		skip();
	}
	expect_clean("uring", "1", "1", "128", "1000000");
	expect_clean("uring", "4", "2", "3000", "5");
	expect_fault("uring", "dup", "dup_bytes");
}

/* In the child: io_uring_setup fails with ENOSYS, as under a container's seccomp profile. */
static int block_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(*f), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static void test_uring_unavailable_exits_69(void **state)
{
	(void)state;
	int err = temp_file();
	assert_true(err >= 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (dup2(err, STDERR_FILENO) < 0)
			_exit(126);
		if (block_io_uring() < 0)
			_exit(125); /* seccomp not permitted here */
		execl(echoload_bin, echoload_bin, "--engine", "uring", "--duration", "1",
		      (char *)NULL);
		_exit(127);
	}
	int status = wait_bounded(pid, RUN_TIMEOUT_MS);
	char msg[1024];
	slurp(err, msg, sizeof(msg));
	if (status == 125)
		skip();
	assert_int_equal(status, 69);
	assert_int_equal(count_char(msg, '\n', sizeof(msg)), 1);
	if (!strstr(msg, "io_uring is not available here"))
		fail_msg("stderr: %s", msg);
}

/* --- other outputs and modes --------------------------------------------------------------- */

/* 2,000 msgs/s for 1 s: the open loop sends on schedule, not as fast as it can. */
static void test_open_loop_rate(void **state)
{
	(void)state;
	struct output o;
	helper_start("none", "1", "1000000");
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[] = { "--port", port, "--rate", "2000", "--connections", "10",
			       "--duration", "1", "--warmup", "0.2", "--json", NULL };
	run_echoload(args, &o);
	helper_stop();
	assert_int_equal(o.status, 0);
	assert_no_errors(&o);
	double msgs = json_num(o.out, "msgs");
	if (msgs < 1800 || msgs > 2200)
		fail_msg("%g msgs at 2000/s over 1 s: %s", msgs, o.out);
}

/* Field `col` (from 0) of a CSV line, quotes removed; "" past the end. */
static void csv_nth(const char *line, int col, char *out, size_t len)
{
	size_t o = 0;
	bool quoted = false;
	for (const char *p = line; *p && *p != '\n' && (*p != ',' || quoted || col > 0); p++) {
		if (*p == '"')
			quoted = !quoted; /* a doubled quote inside a field: none in these tests */
		else if (*p == ',' && !quoted)
			col--;
		else if (col == 0 && o + 1 < len)
			out[o++] = *p;
	}
	out[o] = '\0';
}

/* A field of echoload's CSV (header line, then one row) by column name. */
static void csv_field(const char *csv, const char *name, char *out, size_t len)
{
	const char *row = strchr(csv, '\n');
	assert_non_null(row);
	char h[64];
	for (int col = 0; col < 512; col++) {
		csv_nth(csv, col, h, sizeof(h));
		if (strcmp(h, name) == 0) {
			csv_nth(row + 1, col, out, len);
			return;
		}
	}
	fail_msg("no column %s in %s", name, csv);
}

/* CSV: a header and one row with as many columns; the label is quoted; server CPU is there. */
static void test_csv_and_server_cpu(void **state)
{
	(void)state;
	struct output o;
	helper_start("none", "1", "1000000");
	char port[16], pid[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	snprintf(pid, sizeof(pid), "%d", (int)helper_pid);
	const char *args[] = { "--port", port, "--duration", "0.5", "--warmup", "0.1", "--csv",
			       "--label", "plain,with comma", "--server-pid", pid, NULL };
	run_echoload(args, &o);
	helper_stop();
	assert_int_equal(o.status, 0);
	char *nl = strchr(o.out, '\n');
	assert_non_null(nl);
	size_t header_len = (size_t)(nl - o.out);
	assert_int_equal(count_char(o.out, '\n', sizeof(o.out)), 2);
	assert_int_equal(count_char(o.out, ',', header_len),
			 count_char(nl + 1, ',', strlen(nl + 1)) - 1); /* one comma is quoted */
	assert_non_null(strstr(o.out, ",\"plain,with comma\","));
	char v[32];
	csv_field(o.out, "label", v, sizeof(v));
	assert_string_equal(v, "plain,with comma");
	csv_field(o.out, "server_cpu_us_per_msg", v, sizeof(v));
	assert_true(strtod(v, NULL) > 0);
}

/* --server-pid of a process whose command line names a backend: the JSON says which. The
 * "server" here is a shell that only sleeps, started with the forms echod accepts. */
static void expect_backend_learned(const char *flag, const char *value, const char *want)
{
	pid_t sh = fork();
	assert_true(sh >= 0);
	if (sh == 0) {
		if (value)
			execl("/bin/sh", "sh", "-c", "sleep 5", "echod", flag, value, (char *)NULL);
		else
			execl("/bin/sh", "sh", "-c", "sleep 5", "echod", flag, (char *)NULL);
		_exit(127);
	}
	/* Wait until exec has replaced the forked image's command line. */
	char path[64], cmd[16] = "";
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)sh);
	for (int i = 0; i < 400 && strcmp(cmd, "sh") != 0; i++) {
		usleep(5000);
		FILE *f = fopen(path, "r");
		if (f) {
			size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
			cmd[n] = '\0';
			fclose(f);
		}
	}
	assert_string_equal(cmd, "sh");
	struct output o;
	helper_start("none", "1", "1000000");
	char port[16], pid[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	snprintf(pid, sizeof(pid), "%d", (int)sh);
	const char *args[] = { "--port", port, "--duration", "0.2", "--warmup", "0", "--json",
			       "--server-pid", pid, NULL };
	run_echoload(args, &o);
	helper_stop();
	kill(sh, SIGKILL);
	waitpid(sh, NULL, 0);
	assert_int_equal(o.status, 0);
	if (!strstr(o.out, want))
		fail_msg("want %s in: %s", want, o.out);
}

static void test_server_backend_from_cmdline(void **state)
{
	(void)state;
	expect_backend_learned("--backend", "poll", "\"backend\":\"poll\"");
	expect_backend_learned("--backend=uring-poll", NULL, "\"backend\":\"uring-poll\"");
	expect_backend_learned("-b", "select", "\"backend\":\"select\"");
	expect_backend_learned("--threads", "2", "\"backend\":null");
}

/* A progress line per second on a terminal (a pseudo-terminal here), none when stderr is a
 * file: scripts get clean output without passing --quiet. */
static void test_progress_only_on_a_terminal(void **state)
{
	(void)state;
	helper_start("none", "1", "1000000");
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0) {
		helper_stop();
		skip(); /* no pseudo-terminals here */
	}
	assert_int_equal(grantpt(master), 0);
	assert_int_equal(unlockpt(master), 0);
	int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(slave >= 0);
	int out = temp_file();
	assert_true(out >= 0);
	/* Lines at 1 s and 2 s: 0.4 s to spare. */
	const char *argv[] = { echoload_bin, "--port", port, "--connections", "4", "--duration",
			       "2.4", "--warmup", "0", "--json", NULL };
	pid_t pid = spawn(argv, out, slave);
	assert_true(pid > 0);
	close(slave);
	/* Read the terminal while it runs, so nothing waits on a full pty buffer. */
	char tty[4096] = "";
	size_t n = 0;
	int status = -1;
	uint64_t end = ms_now() + RUN_TIMEOUT_MS;
	while (ms_now() < end) {
		struct pollfd pfd = { .fd = master, .events = POLLIN };
		if (poll(&pfd, 1, 50) == 1 && n + 1 < sizeof(tty)) {
			ssize_t r = read(master, tty + n, sizeof(tty) - 1 - n);
			if (r > 0)
				tty[n += (size_t)r] = '\0';
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			break;
		}
	}
	close(master);
	char json[4096];
	slurp(out, json, sizeof(json));
	assert_int_equal(status, 0);
	size_t lines = 0;
	for (const char *p = tty; (p = strstr(p, "msgs/s")) != NULL; p++)
		lines++;
	print_message("  %zu progress lines on the terminal\n", lines);
	assert_true(lines >= 2);
	assert_non_null(strstr(tty, "echoload: "));
	assert_null(strstr(json, "msgs/s  ")); /* stdout keeps only the JSON */

	/* The same run with stderr to a file: silent. */
	struct output o;
	const char *args[] = { "--port", port, "--connections", "4", "--duration", "1.3",
			       "--warmup", "0", "--json", NULL };
	run_echoload(args, &o);
	assert_int_equal(o.status, 0);
	if (strstr(o.err, "msgs/s"))
		fail_msg("progress on a non-terminal stderr: %s", o.err);

	/* ... unless asked for (--progress, what a soak test samples): with the totals. */
	const char *forced[] = { "--port", port, "--connections", "4", "--duration", "1.3",
				 "--warmup", "0", "--json", "--progress", NULL };
	run_echoload(forced, &o);
	helper_stop();
	assert_int_equal(o.status, 0);
	const char *line = strstr(o.err, "msgs/s");
	assert_non_null(line);
	assert_non_null(strstr(line, "errors 0  msgs "));
}

/* --- refusals ------------------------------------------------------------------------------ */

static void test_bad_usage_exits_64(void **state)
{
	(void)state;
	static const char *const bad[][4] = { /* each NULL-terminated */
		{ "--bogus", NULL, NULL }, { "--size", "3", NULL }, { "--depth", "x", NULL },
		{ "--engine", "kqueue", NULL }, { "--json", "--csv", NULL },
		{ "--duration", "-1", NULL }, { "--server-metrics", "127.0.0.1:9100", NULL },
		{ "--server-metrics", "https://127.0.0.1:9100/metrics", NULL },
		{ "--server-metrics", "http://[::1]/metrics", NULL },
		{ "--udp", "--size", "8" }, { "--udp", "--size", "65508" },
		{ "--udp", "--depth", "1025" }, { "--udp", "--engine", "uring" },
		{ "--udp-timeout", "0", NULL }, { "--udp-timeout", "200us", NULL },
		{ "--cpu-stat", "0,0", NULL }, { "--cpu-stat", "1-0", NULL },
		{ "--cpu-stat", "4095", NULL }, { "--cpu-stat", "0,", NULL },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct output o;
		run_echoload(bad[i], &o);
		assert_int_equal(o.status, 64);
		assert_int_equal(count_char(o.err, '\n', sizeof(o.err)), 1);
		assert_non_null(strstr(o.err, "echoload: "));
	}
}

static void test_unreachable_exits_1(void **state)
{
	(void)state;
	/* a port that was free a moment ago: bound, never listened on, closed */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	char port[16], want[96];
	snprintf(port, sizeof(port), "%d", ntohs(sa.sin_port));
	snprintf(want, sizeof(want), "cannot connect to 127.0.0.1:%s: Connection refused", port);
	struct output o;
	const char *args[] = { "--port", port, "--duration", "1", NULL };
	run_echoload(args, &o);
	assert_int_equal(o.status, 1);
	if (!strstr(o.err, want))
		fail_msg("stderr: %s", o.err);
}

/* --- --server-metrics: the parts, on literal text ------------------------------------------ */

/* scrape_parse on an exact-size copy, so that ASan catches a read past the end. */
static void parse_exact(const char *text, struct scrape *s)
{
	size_t n = strlen(text);
	char *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	memcpy(copy, text, n);
	scrape_parse(copy, n, s);
	free(copy);
}

static void test_scrape_parse_exposition(void **state)
{
	(void)state;
	static const char text[] =
		"# HELP echod_syscalls_total System calls, by call.\n"
		"# TYPE echod_syscalls_total counter\n"
		"echod_syscalls_total{worker=\"0\",call=\"recv\"} 100\n"
		"echod_syscalls_total{worker=\"0\",call=\"send\"} 1.5e+06\n"
		"echod_syscalls_total{worker=\"1\",call=\"epoll_wait\"} 7 1700000000000\n"
		"echod_syscalls_total{worker=\"1\",call=\"we\\\"ird} 9, \\\\ \\n\"} 3\n"
		"  echod_syscalls_total { worker = \"2\" , call=\"poll\", }\t2\r\n"
		"echod_syscalls_total_created{worker=\"0\"} 99999\n"
		"xechod_syscalls_total 5\n"
		"#echod_syscalls_total 5\n"
		"echod_loop_wakeups_total{worker=\"0\"} 40\n"
		"echod_loop_wakeups_total{worker=\"1\"}60\n"
		"garbage without a value\n"
		"{\"json\": 1}\n"
		"\n"
		"echod_bytes_received_total{worker=\"0\"} 18446744073709551615\n"
		"echod_loop_wakeups_total 0"; /* no newline at the end */
	struct scrape s;
	parse_exact(text, &s);
	assert_true(s.found[SF_SYSCALLS]);
	assert_true(s.sum[SF_SYSCALLS] == 100 + 1.5e6 + 7 + 3 + 2);
	assert_true(s.found[SF_WAKEUPS]);
	assert_true(s.sum[SF_WAKEUPS] == 100);
	assert_false(s.found[SF_COMPLETIONS]); /* absent */

	/* huge but finite values still add up; past double's range the family is unusable */
	parse_exact("echod_completions_total{worker=\"0\"} 18446744073709551615\n"
		    "echod_completions_total{worker=\"1\"} 1e300\n"
		    "echod_loop_wakeups_total 1e308\necho_loop_wakeups_total 1\n"
		    "echod_loop_wakeups_total 1e308\n", &s);
	assert_true(s.found[SF_COMPLETIONS]);
	assert_true(s.sum[SF_COMPLETIONS] == 18446744073709551615.0 + 1e300);
	assert_false(s.found[SF_WAKEUPS]); /* the sum overflows */

	parse_exact("", &s);
	for (int f = 0; f < SF_COUNT; f++)
		assert_false(s.found[f]);
	parse_exact("echod_syscalls_total{call=\"unterminated \\\"}", &s); /* ends inside */
	assert_false(s.found[SF_SYSCALLS]);
}

/* One malformed sample makes its family unusable (its sum would be wrong); the others stay. */
static void test_scrape_parse_malformed_samples(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"echod_loop_wakeups_total{worker=\"0\"} abc",
		"echod_loop_wakeups_total{worker=\"0} 5",
		"echod_loop_wakeups_total{worker=\"0\" 5",
		"echod_loop_wakeups_total{worker=0} 5",
		"echod_loop_wakeups_total{=\"0\"} 5",
		"echod_loop_wakeups_total{,} 5",
		"echod_loop_wakeups_total{worker=\"0\"}",
		"echod_loop_wakeups_total",
		"echod_loop_wakeups_total+5",
		"echod_loop_wakeups_total 5 6 7",
		"echod_loop_wakeups_total 5 1.5",
		"echod_loop_wakeups_total -5",
		"echod_loop_wakeups_total NaN",
		"echod_loop_wakeups_total +Inf",
		"echod_loop_wakeups_total 1e999",
		"echod_loop_wakeups_total 5x",
		"echod_loop_wakeups_total 0x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		char text[256];
		snprintf(text, sizeof(text),
			 "echod_loop_wakeups_total{worker=\"1\"} 1\n%s\n"
			 "echod_syscalls_total{worker=\"0\",call=\"recv\"} 9\n", bad[i]);
		struct scrape s;
		parse_exact(text, &s);
		if (s.found[SF_WAKEUPS])
			fail_msg("accepted: %s", bad[i]);
		assert_true(s.found[SF_SYSCALLS] && s.sum[SF_SYSCALLS] == 9);
	}
}

static void test_scrape_url_forms(void **state)
{
	(void)state;
	static const struct {
		const char *url, *host, *port, *authority;
	} good[] = {
		{ "http://127.0.0.1:9100/metrics", "127.0.0.1", "9100", "127.0.0.1:9100" },
		{ "http://127.0.0.1:9100", "127.0.0.1", "9100", "127.0.0.1:9100" },
		{ "HTTP://localhost:1", "localhost", "1", "localhost:1" },
		{ "http://[::1]:65535/metrics", "::1", "65535", "[::1]:65535" },
		{ "http://[fe80::1:2]:80", "fe80::1:2", "80", "[fe80::1:2]:80" },
		{ "http://metrics-1.example_x.org:8080/metrics", "metrics-1.example_x.org", "8080",
		  "metrics-1.example_x.org:8080" },
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
		struct scrape_url u;
		char why[512] = "";
		if (scrape_url_parse(good[i].url, &u, why, sizeof(why)) != 0)
			fail_msg("%s: %s", good[i].url, why);
		assert_string_equal(u.host, good[i].host);
		assert_string_equal(u.port, good[i].port);
		assert_string_equal(u.authority, good[i].authority);
	}
	static const char *const bad[] = {
		"", "http://", "https://127.0.0.1:9100/metrics", "127.0.0.1:9100",
		"http://127.0.0.1", "http://127.0.0.1:", "http://127.0.0.1:0",
		"http://127.0.0.1:65536", "http://127.0.0.1:123456", "http://127.0.0.1:-1",
		"http://127.0.0.1:9100/", "http://127.0.0.1:9100/metricsx",
		"http://127.0.0.1:9100/metrics?x=1", "http://127.0.0.1:9100/healthz",
		"http://127.0.0.1:9100#x", "http://[::1/metrics", "http://[]:80",
		"http://[127.0.0.1]:80", "http://user@host:80", "http://::1:80", "http://host :80",
		"http://ho%73t:80",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct scrape_url u;
		char why[512] = "";
		if (scrape_url_parse(bad[i], &u, why, sizeof(why)) != -1)
			fail_msg("accepted: '%s'", bad[i]);
		assert_null(strchr(why, '\n'));
		assert_non_null(strstr(why, bad[i]));
	}
}

/* scrape_http_feed on a copy of resp (it decodes in place): the state, and the body in out. */
static int feed(const char *resp, size_t len, bool eof, char *out, size_t cap, char *why)
{
	char *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, resp, len);
	struct http_response r;
	scrape_http_init(&r);
	size_t body = 0;
	int st = scrape_http_feed(&r, copy, len, eof, &body);
	out[0] = '\0';
	if (st == HTTP_DONE) {
		assert_true(r.head_len + body <= len);
		snprintf(out, cap, "%.*s", (int)body, copy + r.head_len);
	}
	snprintf(why, 96, "%s", r.why);
	free(copy);
	return st;
}

static void expect_body(const char *resp, bool eof, const char *want)
{
	char body[256], why[96];
	int st = feed(resp, strlen(resp), eof, body, sizeof(body), why);
	if (st != HTTP_DONE || strcmp(body, want) != 0)
		fail_msg("state %d (%s), body '%s', want '%s' from:\n%s", st, why, body, want,
			 resp);
}

static void expect_state(const char *resp, bool eof, int want, const char *why_part)
{
	char body[256], why[96];
	int st = feed(resp, strlen(resp), eof, body, sizeof(body), why);
	if (st != want || (why_part && !strstr(why, why_part)))
		fail_msg("state %d (%s), want %d (%s) from:\n%s", st, why, want,
			 why_part ? why_part : "", resp);
}

static void test_scrape_http_framing(void **state)
{
	(void)state;
	static const char chunked[] =
		"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\nContent-Length: 3\r\n\r\n"
		"5;name=value\r\nhello\r\nA\r\n, world!!!\r\n1 \n\n\r\n0\r\nX-Trailer: y\r\n\r\n";
	expect_body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, "hello");
	expect_body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, more", false, "hello");
	expect_body("HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\n", false, "");
	expect_body(chunked, false, "hello, world!!!\n");
	expect_body("HTTP/1.0 200\n\nno framing: all until the close", true,
		    "no framing: all until the close");
	expect_state("HTTP/1.0 200\n\nno framing", false, HTTP_MORE, NULL);
	expect_state("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false, HTTP_MORE, NULL);
	expect_state("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true, HTTP_BAD,
		     "Content-Length");
	expect_state("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", false, HTTP_MORE, NULL);
	expect_state("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", true, HTTP_BAD, "headers");
	expect_state("", true, HTTP_BAD, "empty");
	expect_state("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, HTTP_BAD,
		     "HTTP status 404");
	expect_state("SSH-2.0-OpenSSH_9.2\r\n", false, HTTP_BAD, "not an HTTP");
	expect_state("HTTP/2 200\r\n\r\n", false, HTTP_BAD, "not an HTTP");
	expect_state("HTTP/1.1 200 OK\r\nno colon\r\n\r\n", false, HTTP_BAD, "colon");
	expect_state("HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", false, HTTP_BAD,
		     "Content-Length");
	expect_state("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", false, HTTP_BAD,
		     "4 MiB");
	expect_state("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false,
		     HTTP_BAD, "chunk size");
	expect_state("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n",
		     false, HTTP_BAD, "longer than its size");
	expect_state("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n",
		     false, HTTP_BAD, "4 MiB");
	expect_state("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", true,
		     HTTP_BAD, "chunked body");
	expect_state("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", false,
		     HTTP_MORE, NULL); /* the empty line after the trailers is still to come */

	/* headers that never end are refused at 64 KiB, not read up to the response limit */
	size_t n = 70000;
	char *big = malloc(n + 1);
	assert_non_null(big);
	memcpy(big, "HTTP/1.1 200 OK\r\n", 17);
	for (size_t i = 17; i < n; i++)
		big[i] = (i % 80 == 79) ? '\n' : 'x';
	big[n] = '\0';
	for (size_t i = 17; i < n; i += 80)
		big[i + 1] = ':';
	expect_state(big, false, HTTP_BAD, "64 KiB");
	free(big);

	/* The same chunked response arriving a byte at a time: more, more, ..., then the body. */
	size_t len = strlen(chunked);
	char *buf = malloc(len);
	assert_non_null(buf);
	memcpy(buf, chunked, len);
	struct http_response r;
	scrape_http_init(&r);
	size_t body = 0;
	for (size_t i = 1; i < len; i++)
		assert_int_equal(scrape_http_feed(&r, buf, i, false, &body), HTTP_MORE);
	assert_int_equal(scrape_http_feed(&r, buf, len, false, &body), HTTP_DONE);
	assert_int_equal(body, 16);
	assert_memory_equal(buf + r.head_len, "hello, world!!!\n", 16);
	free(buf);
}

/* --- --server-metrics: a metrics server in a thread ---------------------------------------- */

/* Answers each GET with echod-like counters that grow by known amounts per scrape, or the
 * way a broken server would. */
enum fake_mode {
	FAKE_COUNTERS,      /* scrape k: known sums; Content-Length, then chunked, alternately */
	FAKE_NO_COMPLETIONS, /* the same without echod_completions_total */
	FAKE_404,
	FAKE_HUGE,          /* 5 MiB of comments, no framing */
};

#define FAKE_SYSCALLS_STEP 10000000.0    /* per scrape, over two workers */
#define FAKE_WAKEUPS_STEP 5000000.0
#define FAKE_COMPLETIONS_STEP 20000000.0 /* 4 completions per wake-up */

static struct fake_server {
	int fd, port;
	enum fake_mode mode;
	pthread_t thread;
	bool running;
	atomic_bool stop;
	atomic_int scrapes;
	char request[1024];  /* the last one, as received */
} fake = { .fd = -1 };

static void fake_write(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send_retry(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return; /* the client gave up (too large): fine */
		p += w;
		n -= (size_t)w;
	}
}

static char *fake_exposition(int k, enum fake_mode mode)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	fprintf(f, "# HELP echod_syscalls_total System calls.\n"
		"# TYPE echod_syscalls_total counter\n"
		"echod_syscalls_total{worker=\"0\",call=\"recv\"} %.0f\n"
		"echod_syscalls_total{worker=\"1\",call=\"send\"} %.6e\n",
		1000 + 0.7 * FAKE_SYSCALLS_STEP * k, 2000 + 0.3 * FAKE_SYSCALLS_STEP * k);
	fprintf(f, "echod_syscalls_total{worker=\"1\",call=\"we\\\"ird}\"} 0 1700000000000\n");
	fprintf(f, "# TYPE echod_loop_wakeups_total counter\n"
		"echod_loop_wakeups_total{worker=\"0\"} %.0f\n"
		"echod_loop_wakeups_total{worker=\"1\"} %.0f\n",
		10 + 0.5 * FAKE_WAKEUPS_STEP * k, 20 + 0.5 * FAKE_WAKEUPS_STEP * k);
	if (mode != FAKE_NO_COMPLETIONS)
		fprintf(f, "echod_completions_total{worker=\"0\"} %.0f\n"
			"echod_completions_total{worker=\"1\"} 0\n",
			5 + FAKE_COMPLETIONS_STEP * k);
	fclose(f);
	return text;
}

/* A 200 response carrying body: with Content-Length, or chunked in pieces of `piece` bytes
 * (edges that cut lines and numbers), the first with a chunk extension. malloc'd. */
static char *http_200(const char *body, bool chunked, size_t piece)
{
	char *resp = NULL;
	size_t len = 0, n = strlen(body);
	FILE *f = open_memstream(&resp, &len);
	assert_non_null(f);
	if (!chunked) {
		fprintf(f, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
			"Content-Length: %zu\r\n\r\n%s", n, body);
	} else {
		fprintf(f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
		for (size_t off = 0; off < n; off += piece) {
			size_t c = n - off < piece ? n - off : piece;
			fprintf(f, "%zx%s\r\n%.*s\r\n", c, off ? "" : ";ext=1", (int)c, body + off);
		}
		fprintf(f, "0\r\n\r\n");
	}
	fclose(f);
	return resp;
}

static void fake_answer(int fd, int k)
{
	if (fake.mode == FAKE_404) {
		static const char resp[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
		fake_write(fd, resp, sizeof(resp) - 1);
		return;
	}
	if (fake.mode == FAKE_HUGE) {
		static char line[1024];
		memset(line, '#', sizeof(line) - 1);
		line[sizeof(line) - 1] = '\n';
		fake_write(fd, "HTTP/1.0 200 OK\r\n\r\n", 19);
		for (int i = 0; i < 5 * 1024; i++)
			fake_write(fd, line, sizeof(line));
		return;
	}
	char *body = fake_exposition(k, fake.mode);
	char *resp = http_200(body, k % 2, 7); /* Content-Length, then chunked, alternately */
	fake_write(fd, resp, strlen(resp));
	free(resp);
	free(body);
}

/* Reads one request (up to its empty line, at most 1 s) and answers it. */
static void fake_serve(int fd)
{
	struct timeval tv = { .tv_sec = 1 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char req[sizeof(fake.request)];
	size_t n = 0;
	while (n + 1 < sizeof(req)) {
		ssize_t r = recv_retry(fd, req + n, sizeof(req) - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		req[n] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	req[n] = '\0';
	memcpy(fake.request, req, n + 1);
	fake_answer(fd, atomic_fetch_add(&fake.scrapes, 1));
}

static void *fake_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&fake.stop)) {
		struct pollfd pfd = { .fd = fake.fd, .events = POLLIN };
		if (poll(&pfd, 1, 50) != 1)
			continue;
		int c = accept4(fake.fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		fake_serve(c);
		close(c);
	}
	return NULL;
}

/* A listening socket on loopback (family AF_INET or AF_INET6), port 0; -1 if unsupported. */
static int listen_loopback(int family, int *port)
{
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr_in a4 = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr *sa = family == AF_INET6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4;
	socklen_t sl = family == AF_INET6 ? sizeof(a6) : sizeof(a4);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, sa, sl) < 0 || listen(fd, 16) < 0 || getsockname(fd, sa, &sl) < 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(family == AF_INET6 ? a6.sin6_port : a4.sin_port);
	return fd;
}

static bool fake_start(enum fake_mode mode, int family)
{
	fake.fd = listen_loopback(family, &fake.port);
	if (fake.fd < 0)
		return false;
	fake.mode = mode;
	fake.request[0] = '\0';
	atomic_store(&fake.stop, false);
	atomic_store(&fake.scrapes, 0);
	assert_int_equal(pthread_create(&fake.thread, NULL, fake_main, NULL), 0);
	fake.running = true;
	return true;
}

static void fake_stop(void)
{
	if (fake.running) {
		atomic_store(&fake.stop, true);
		pthread_join(fake.thread, NULL);
		fake.running = false;
	}
	if (fake.fd >= 0)
		close(fake.fd);
	fake.fd = -1;
}

static void fake_url(char *buf, size_t len, const char *host)
{
	snprintf(buf, len, "http://%s:%d/metrics", host, fake.port);
}

/* scrape_fetch in this process against the fake; returns its result, why in why. */
static int fetch_fake(struct scrape *s, char *why, size_t len)
{
	char url[64];
	struct scrape_url u;
	fake_url(url, sizeof(url), "127.0.0.1");
	assert_int_equal(scrape_url_parse(url, &u, why, len), 0);
	return scrape_fetch(&u, s, why, len);
}

static void test_scrape_fetch(void **state)
{
	(void)state;
	struct scrape s;
	char why[256];
	assert_true(fake_start(FAKE_COUNTERS, AF_INET));
	for (int k = 0; k < 2; k++) { /* Content-Length, then chunked */
		if (fetch_fake(&s, why, sizeof(why)) != 0)
			fail_msg("scrape %d: %s", k, why);
		assert_true(s.found[SF_SYSCALLS] && s.found[SF_WAKEUPS] && s.found[SF_COMPLETIONS]);
		assert_true(s.sum[SF_COMPLETIONS] == 5 + FAKE_COMPLETIONS_STEP * k);
		assert_true(s.sum[SF_WAKEUPS] == 30 + FAKE_WAKEUPS_STEP * k);
	}
	char want_host[64];
	snprintf(want_host, sizeof(want_host), "\r\nHost: 127.0.0.1:%d\r\n", fake.port);
	fake_stop(); /* joined: its last request can be read */
	if (strncmp(fake.request, "GET /metrics HTTP/1.1\r\n", 23) != 0 ||
	    !strstr(fake.request, want_host) || !strstr(fake.request, "\r\nConnection: close\r\n"))
		fail_msg("request: %s", fake.request);

	assert_true(fake_start(FAKE_404, AF_INET));
	assert_int_equal(fetch_fake(&s, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "HTTP status 404"));
	fake_stop();

	assert_true(fake_start(FAKE_HUGE, AF_INET));
	assert_int_equal(fetch_fake(&s, why, sizeof(why)), -1);
	if (!strstr(why, "larger than 4 MiB"))
		fail_msg("why: %s", why);
	fake_stop();

	/* A server that accepts (the kernel's backlog does) and never answers: given up on at
	 * SCRAPE_TIMEOUT_MS, not waited for. */
	fake.fd = listen_loopback(AF_INET, &fake.port);
	assert_true(fake.fd >= 0);
	uint64_t t0 = ms_now();
	assert_int_equal(fetch_fake(&s, why, sizeof(why)), -1);
	uint64_t took = ms_now() - t0;
	fake_stop();
	if (!strstr(why, "timed out") || took < SCRAPE_TIMEOUT_MS - 100 ||
	    took > SCRAPE_TIMEOUT_MS + 1000)
		fail_msg("after %llu ms: %s", (unsigned long long)took, why);
}

/* Thousands of damaged copies of a response and its exposition (bytes changed, cut short):
 * whatever the verdict, nothing is read or written outside the buffer (ASan build) and a
 * body lies inside it. Deterministic: a fixed seed. */
static void test_scrape_mutations_stay_in_bounds(void **state)
{
	(void)state;
	static const char specials[] = "\r\n\"\\{},= ;:0aF#\t\377";
	char *body = fake_exposition(1, FAKE_COUNTERS);
	char *seeds[2] = { http_200(body, false, 0), http_200(body, true, 7) };
	free(body);
	for (int i = 0; i < 2; i++) { /* undamaged, each parses whole: the damage lands on it */
		char out[2048], why[96];
		struct scrape s;
		assert_int_equal(feed(seeds[i], strlen(seeds[i]), true, out, sizeof(out), why),
				 HTTP_DONE);
		parse_exact(out, &s);
		assert_true(s.found[SF_SYSCALLS] && s.found[SF_WAKEUPS] && s.found[SF_COMPLETIONS]);
	}
	uint32_t rnd = 12345;
	for (int iter = 0; iter < 20000; iter++) {
		const char *seed = seeds[iter % 2];
		size_t len = strlen(seed);
		rnd = rnd * 1103515245u + 12345u;
		size_t n = len - (iter % 7 == 0 ? (rnd >> 8) % len : 0);
		char *buf = malloc(n ? n : 1);
		assert_non_null(buf);
		memcpy(buf, seed, n);
		for (int k = 0; k < 1 + iter % 4; k++) {
			rnd = rnd * 1103515245u + 12345u;
			if (n)
				buf[(rnd >> 8) % n] =
					specials[(rnd >> 24) % (sizeof(specials) - 1)];
		}
		struct scrape s;
		scrape_parse(buf, n, &s);
		struct http_response r;
		scrape_http_init(&r);
		size_t got = 0;
		if (scrape_http_feed(&r, buf, n, iter % 3 == 0, &got) == HTTP_DONE) {
			assert_true(r.head_len + got <= n);
			/* the body alone, in a buffer of its size: a parse past it shows */
			char *b = malloc(got ? got : 1);
			assert_non_null(b);
			memcpy(b, buf + r.head_len, got);
			scrape_parse(b, got, &s);
			free(b);
		}
		free(buf);
	}
	free(seeds[0]);
	free(seeds[1]);
}

/* echoload against helper_faultyecho, --server-metrics URL, one more output flag. */
static void load_with_metrics(struct output *o, const char *url, const char *format)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[] = { "--port", port, "--connections", "10", "--duration", "0.4",
			       "--warmup", "0.1", "--server-metrics", url, format, NULL };
	run_echoload(args, o);
}

/* The fake's counters grow by known amounts between echoload's two scrapes: the figures must
 * be exactly those over the messages echoed, in JSON, CSV and the summary; over IPv6 too. */
static void test_server_metrics_figures(void **state)
{
	(void)state;
	struct output o;
	char url[64];
	helper_start("none", "1", "1000000");
	assert_true(fake_start(FAKE_COUNTERS, AF_INET));
	fake_url(url, sizeof(url), "127.0.0.1");
	load_with_metrics(&o, url, "--json");
	fake_stop();
	if (o.status != 0 || o.err[0])
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	double msgs = json_num(o.out, "msgs");
	double sys = json_num(o.out, "server_syscalls_per_msg");
	double wake = json_num(o.out, "server_wakeups_per_msg");
	if (fabs(sys * msgs / FAKE_SYSCALLS_STEP - 1) > 1e-3 ||
	    fabs(wake * msgs / FAKE_WAKEUPS_STEP - 1) > 1e-3 ||
	    json_num(o.out, "server_completions_per_wakeup") != 4)
		fail_msg("%s", o.out);

	if (fake_start(FAKE_COUNTERS, AF_INET6)) {
		fake_url(url, sizeof(url), "[::1]");
		load_with_metrics(&o, url, "--csv");
		fake_stop();
		char v[32];
		csv_field(o.out, "server_completions_per_wakeup", v, sizeof(v));
		if (o.status != 0 || strcmp(v, "4") != 0)
			fail_msg("exit %d, '%s'\nstdout: %s\nstderr: %s", o.status, v, o.out,
				 o.err);
	} else {
		print_message("  no IPv6 loopback here: the [::1] case is left out\n");
	}

	assert_true(fake_start(FAKE_COUNTERS, AF_INET));
	fake_url(url, sizeof(url), "127.0.0.1");
	const char *args[] = { "--port", NULL, "--connections", "10", "--duration", "0.4",
			       "--warmup", "0.1", "--server-metrics", url, NULL };
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	args[1] = port;
	run_echoload(args, &o);
	fake_stop();
	helper_stop();
	assert_int_equal(o.status, 0);
	if (!strstr(o.out, "\n  server work  ") || !strstr(o.out, " 4.00 completions per wake-up"))
		fail_msg("%s", o.out);
}

/* A scrape that fails, or a family missing: one warning line, unknown figures, a passing run. */
static void test_server_metrics_unavailable(void **state)
{
	(void)state;
	struct output o;
	char url[64];
	helper_start("none", "1", "1000000");
	/* nothing listening there: a port that was free a moment ago */
	int port, fd = listen_loopback(AF_INET, &port);
	assert_true(fd >= 0);
	close(fd);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	load_with_metrics(&o, url, "--json");
	if (o.status != 0 || count_char(o.err, '\n', sizeof(o.err)) != 1 ||
	    !strstr(o.err, "echoload: warning: --server-metrics") ||
	    !strstr(o.err, "Connection refused") ||
	    !strstr(o.out, "\"server_syscalls_per_msg\":null,\"server_wakeups_per_msg\":null,"
			   "\"server_completions_per_wakeup\":null,"))
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	assert_no_errors(&o);

	load_with_metrics(&o, url, "--csv");
	char v[32] = "x";
	assert_int_equal(o.status, 0);
	csv_field(o.out, "server_wakeups_per_msg", v, sizeof(v));
	assert_string_equal(v, "");
	assert_non_null(strstr(o.out, ",server_syscalls_per_msg,server_wakeups_per_msg,"
				      "server_completions_per_wakeup,")); /* more columns follow */
	csv_field(o.out, "server_syscalls_per_msg", v, sizeof(v));
	assert_string_equal(v, "");
	csv_field(o.out, "server_completions_per_wakeup", v, sizeof(v));
	assert_string_equal(v, "");

	assert_true(fake_start(FAKE_NO_COMPLETIONS, AF_INET));
	fake_url(url, sizeof(url), "127.0.0.1");
	load_with_metrics(&o, url, "--json");
	fake_stop();
	helper_stop();
	if (o.status != 0 || count_char(o.err, '\n', sizeof(o.err)) != 1 ||
	    !strstr(o.err, "no usable echod_completions_total (") ||
	    !(json_num(o.out, "server_syscalls_per_msg") > 0) ||
	    !strstr(o.out, "\"server_completions_per_wakeup\":null"))
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
}

/* --- --server-metrics: the real echod ------------------------------------------------------ */

/* The backends echod can run here, from `echod --list-backends`. */
static int runnable_backends(char names[][32], int max)
{
	struct output o;
	const char *argv[] = { proc_bin("echod"), "--list-backends", NULL };
	run_program(argv, &o);
	assert_int_equal(o.status, 0);
	int n = 0;
	for (const char *line = strchr(o.out, '\n'); line && n < max; line = strchr(line, '\n')) {
		char name[32], runs[8];
		line++;
		if (sscanf(line, "%31s %*d %7s", name, runs) == 2 && strcmp(runs, "yes") == 0)
			snprintf(names[n++], sizeof(names[0]), "%s", name);
	}
	return n;
}

/* echod's metrics port, from its `event=metrics addr=HOST:PORT` line; 0 if none. */
static int metrics_port(const struct child *c)
{
	char *log = proc_log(c);
	const char *p = strstr(log, "event=metrics addr=");
	const char *colon = p ? strchr(p, ' ') : NULL; /* the space after addr=... */
	int port = 0;
	if (p)
		for (const char *q = p + 19; *q && q != colon && *q != '\n'; q++)
			if (*q == ':')
				port = atoi(q + 1);
	free(log);
	return port;
}

/* Starts echod --metrics on backend; skips the test (one line) if echod cannot serve it. */
static void start_echod_with_metrics(struct child *d, const char *backend)
{
	const char *args[] = { "--backend", backend, "--listen", "127.0.0.1:0", "--metrics",
			       "127.0.0.1:0", NULL };
	int status = -1;
	if (echod_start(d, 0, &status, args) == 0)
		return;
	char *log = proc_log(d);
	bool refused = (status == 64 || status == 69) && strstr(log, "--metrics");
	if (refused) {
		log[strcspn(log, "\n")] = '\0';
		print_message("  skipped: echod cannot serve --metrics here: %s\n", log);
	}
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", log);
	free(log);
	proc_cleanup(d);
	if (refused)
		skip();
	fail_msg("echod --backend %s did not start (exit %d): %s", backend, status, msg);
}

/* Each backend under echoload, scraped before and after: figures present and plausible. */
static void test_server_metrics_from_echod(void **state)
{
	(void)state;
	char names[8][32];
	int n = runnable_backends(names, 8);
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		struct child d;
		start_echod_with_metrics(&d, names[i]);
		char port[16], url[64];
		snprintf(port, sizeof(port), "%d", d.port);
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", metrics_port(&d));
		struct output o;
		const char *args[] = { "--port", port, "--connections", "20", "--duration", "0.3",
				       "--warmup", "0.1", "--server-metrics", url, "--json", NULL };
		run_echoload(args, &o);
		proc_stop(&d, SIGTERM, 5000);
		proc_cleanup(&d);
		double sys = json_num(o.out, "server_syscalls_per_msg");
		double wake = json_num(o.out, "server_wakeups_per_msg");
		double per_wake = json_num(o.out, "server_completions_per_wakeup");
		if (o.status != 0 || o.err[0] || !(sys > 0 && sys < 50) || !(wake > 0) ||
		    !(per_wake >= 1))
			fail_msg("%s: exit %d\nstdout: %s\nstderr: %s", names[i], o.status, o.out,
				 o.err);
		assert_no_errors(&o);
		print_message("  %-10s %6.2f syscalls, %.4f wake-ups per message, %.2f completions "
			      "per wake-up\n", names[i], sys, wake, per_wake);
	}
}

/* --- UDP ---------------------------------------------------------------------------------- */

/* echoload --udp against the helper (helper_port) for about half a second, JSON on stdout. The
 * short timeout keeps the drop and late cases quick: each dropped datagram holds its window slot
 * for that long. */
static void udp_load(struct output *o, const char *depth, const char *threads, const char *timeout)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[] = { "--udp", "--port", port, "--connections", "8", "--depth", depth,
			       "--threads", threads, "--duration", "0.3", "--warmup", "0.1",
			       "--udp-timeout", timeout, "--json", NULL };
	run_echoload(args, o);
}

/* sent = received + lost when nothing was left in flight: every datagram accounted for once. */
static void assert_datagrams_add_up(const struct output *o)
{
	double sent = json_num(o->out, "datagrams_sent"), got = json_num(o->out, "datagrams_received");
	double lost = json_num(o->out, "datagrams_lost"), rate = json_num(o->out, "loss_rate");
	if (!(sent > 0) || json_num(o->out, "in_flight_at_stop") != 0 || sent != got + lost ||
	    fabs(rate - lost / sent) > 1e-5)
		fail_msg("datagrams do not add up: %s\nstderr: %s", o->out, o->err);
}

static void expect_udp_clean(const char *depth, const char *threads)
{
	struct output o;
	badudp_start("none", "1", "0");
	udp_load(&o, depth, threads, "200ms");
	helper_stop();
	if (o.status != 0 || strstr(o.out, "\"proto\":\"udp\"") == NULL)
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	assert_no_errors(&o);
	assert_true(json_num(o.out, "misdelivered") == 0);
	assert_true(json_num(o.out, "msgs") > 0);
	assert_true(json_num(o.out, "lat_p99_us") > 0);
	assert_datagrams_add_up(&o);
	/* nothing is dropped on purpose; a stall of 200 ms on a busy machine may still lose one */
	assert_true(json_num(o.out, "loss_rate") < 0.01);
}

static void test_udp_clean_passes(void **state)
{
	(void)state;
	expect_udp_clean("1", "1");
	expect_udp_clean("8", "2"); /* windows of 8, sendmmsg/recvmmsg batches, two workers */
}

/* Every 10th datagram unanswered: lost, counted as a rate of about 10%, not an error. */
static void test_udp_loss_is_a_rate(void **state)
{
	(void)state;
	struct output o;
	badudp_start("drop", "10", "0");
	udp_load(&o, "2", "1", "20ms");
	helper_stop();
	if (o.status != 0)
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	assert_no_errors(&o);
	assert_datagrams_add_up(&o);
	double rate = json_num(o.out, "loss_rate");
	if (!(rate >= 0.07 && rate <= 0.3)) /* 0.1, and timeouts of a descheduled helper */
		fail_msg("loss_rate %g\n%s", rate, o.out);
}

/* Every 10th answered after 100 ms, long after the 20 ms timeout: lost, then late; no error. */
static void test_udp_late_is_not_an_error(void **state)
{
	(void)state;
	struct output o;
	badudp_start("late", "10", "100");
	udp_load(&o, "2", "1", "20ms");
	helper_stop();
	if (o.status != 0 || !(json_num(o.out, "datagrams_late") > 0) ||
	    !(json_num(o.out, "datagrams_lost") > 0))
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	assert_no_errors(&o);
}

static void expect_udp_fault(const char *mode, const char *counter, const char *words)
{
	struct output o;
	badudp_start(mode, "10", "100");
	udp_load(&o, "2", "1", "50ms");
	helper_stop();
	if (o.status != 1 || !(json_num(o.out, counter) > 0) || !(json_num(o.out, "errors") > 0) ||
	    !strstr(o.err, words) || !strstr(o.err, "echoload: FAILED: "))
		fail_msg("mode %s: exit %d, %s = %g\nstdout: %s\nstderr: %s", mode, o.status,
			 counter, json_num(o.out, counter), o.out, o.err);
}

static void test_udp_flip_is_corrupted(void **state)
{
	(void)state;
	expect_udp_fault("flip", "corrupt_bytes", "(corrupted)");
}

static void test_udp_dup_is_duplicated(void **state)
{
	(void)state;
	expect_udp_fault("dup", "dup_msgs", "(duplicated)");
}

/* Replies exchanged between two sockets: each carries the other's id. */
static void test_udp_swap_is_misdelivered(void **state)
{
	(void)state;
	expect_udp_fault("swap", "misdelivered", "(misdelivered)");
}

/* A port nothing listens on: ICMP port unreachable makes the sockets fail, exit 1. --size below
 * the header is refused with a line that says why. */
static void test_udp_refused_and_too_small(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	char port[16];
	snprintf(port, sizeof(port), "%d", ntohs(sa.sin_port));
	struct output o;
	const char *args[] = { "--udp", "--port", port, "--connections", "2", "--duration", "0.2",
			       "--warmup", "0", NULL };
	run_echoload(args, &o);
	if (o.status != 1 || !strstr(o.err, "Connection refused"))
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);

	const char *small[] = { "--udp", "--size", "0", NULL };
	run_echoload(small, &o);
	assert_int_equal(o.status, 64);
	assert_int_equal(count_char(o.err, '\n', sizeof(o.err)), 1);
	if (!strstr(o.err, "16-byte header"))
		fail_msg("stderr: %s", o.err);
}

/* --server-metrics works the same over UDP: the figures are per datagram answered. */
static void test_udp_server_metrics_figures(void **state)
{
	(void)state;
	struct output o;
	char url[64], port[16];
	badudp_start("none", "1", "0");
	assert_true(fake_start(FAKE_COUNTERS, AF_INET));
	fake_url(url, sizeof(url), "127.0.0.1");
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[] = { "--udp", "--port", port, "--connections", "10", "--duration", "0.4",
			       "--warmup", "0.1", "--server-metrics", url, "--json", NULL };
	run_echoload(args, &o);
	fake_stop();
	helper_stop();
	double msgs = json_num(o.out, "msgs");
	double sys = json_num(o.out, "server_syscalls_per_msg");
	if (o.status != 0 || o.err[0] || fabs(sys * msgs / FAKE_SYSCALLS_STEP - 1) > 1e-3)
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
}

/* The real echod's UDP listener, scraped when it serves --metrics: every reply verified, and
 * the server's syscalls per datagram known. Skipped, with one line, while echod does not
 * accept `--listen udp:HOST:PORT` yet. */
static void test_udp_echod(void **state)
{
	(void)state;
	struct child d;
	/* --udp-rate 0: echod caps replies per source address, and every socket here is one
	 * source, 127.0.0.1; its drops would be (correctly) counted as loss */
	const char *args[] = { "--listen", "udp:127.0.0.1:0", "--udp-rate", "0", "--metrics",
			       "127.0.0.1:0", NULL };
	const char *plain[] = { "--listen", "udp:127.0.0.1:0", "--udp-rate", "0", NULL };
	int status = -1;
	bool metrics = true;
	if (echod_start(&d, 0, &status, args) != 0) {
		char *log = proc_log(&d);
		bool no_mhd = (status == 64 || status == 69) && strstr(log, "--metrics");
		free(log);
		proc_cleanup(&d);
		metrics = false;
		if (!no_mhd || echod_start(&d, 0, &status, plain) != 0) {
			log = proc_log(&d);
			log[strcspn(log, "\n")] = '\0';
			bool no_udp = status == 64 && strstr(log, "--listen");
			char msg[512];
			snprintf(msg, sizeof(msg), "%s", log);
			free(log);
			proc_cleanup(&d);
			if (no_udp) {
				print_message("  skipped: echod has no UDP listener yet: %s\n", msg);
				skip();
			}
			fail_msg("echod --listen udp:127.0.0.1:0 did not start (exit %d): %s",
				 status, msg);
		}
	}
	char port[16], pid[16], url[64];
	snprintf(port, sizeof(port), "%d", d.port);
	snprintf(pid, sizeof(pid), "%d", (int)d.pid);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", metrics ? metrics_port(&d) : 0);
	const char *load_args[] = { "--udp", "--port", port, "--connections", "20", "--depth", "4",
				    "--duration", "0.4", "--warmup", "0.1", "--server-pid", pid,
				    "--json", metrics ? "--server-metrics" : NULL, url, NULL };
	struct output o;
	run_echoload(load_args, &o);
	proc_stop(&d, SIGTERM, 5000);
	proc_cleanup(&d);
	if (o.status != 0 || o.err[0])
		fail_msg("exit %d\nstdout: %s\nstderr: %s", o.status, o.out, o.err);
	assert_no_errors(&o);
	assert_true(json_num(o.out, "misdelivered") == 0);
	assert_datagrams_add_up(&o);
	assert_true(json_num(o.out, "loss_rate") < 0.01);
	double sys = json_num(o.out, "server_syscalls_per_msg");
	if (metrics && !(sys > 0 && sys < 50))
		fail_msg("server_syscalls_per_msg %g: %s", sys, o.out);
	print_message("  echod UDP: %.0f datagrams/s, loss %.4f%%, %.2f server µs and %.2f "
		      "syscalls per datagram\n", json_num(o.out, "msgs_per_s"),
		      100 * json_num(o.out, "loss_rate"),
		      json_num(o.out, "server_cpu_us_per_msg"), sys);
}

/* --- --reconnect: connection churn --------------------------------------------------------- */

/* A count on echod's `event=stopped` line (key like "accepted="); -1 if there is none. */
static double stopped_count(const struct child *d, const char *key)
{
	char *log = proc_log(d);
	const char *line = strstr(log, "event=stopped");
	const char *p = line ? strstr(line, key) : NULL;
	double v = p ? strtod(p + strlen(key), NULL) : -1;
	free(log);
	return v;
}

/* echoload --reconnect 5 on engine against a fresh echod for 0.3 s after 0.1 s of warm-up:
 * many connections opened and closed cleanly, every echo verified, and echod's own count of
 * accepted connections within the run's in-flight slack of echoload's: a connect under way
 * when echoload ended may have been accepted without echoload seeing it complete (at most one
 * per slot), and one completed last may not have been accepted yet when echod stopped. */
static void expect_churn(const char *engine)
{
	static const char *const listen[] = { "--listen", "127.0.0.1:0", NULL };
	struct child d;
	int status = -1;
	if (echod_start(&d, 0, &status, listen) != 0)
		fail_msg("echod did not start (exit %d)", status);
	char port[16];
	snprintf(port, sizeof(port), "%d", d.port);
	const char *args[] = { "--port", port, "--engine", engine, "--reconnect", "5",
			       "--connections", "10", "--depth", "2", "--duration", "0.3",
			       "--warmup", "0.1", "--json", NULL };
	struct output o;
	run_echoload(args, &o);
	int stop = proc_stop(&d, SIGTERM, 5000);
	double accepted = stopped_count(&d, "accepted=");
	proc_cleanup(&d);
	if (o.status != 0 || stop != 0)
		fail_msg("%s: echoload exit %d, echod exit %d\nstdout: %s\nstderr: %s", engine,
			 o.status, stop, o.out, o.err);
	assert_no_errors(&o);
	double opened = json_num(o.out, "conns_opened"), closed = json_num(o.out, "conns_closed");
	double per_s = json_num(o.out, "conns_per_s");
	if (!(opened > 10 && closed > 1 && per_s > 0) || json_num(o.out, "connect_errors") != 0 ||
	    json_num(o.out, "reconnect") != 5 || json_num(o.out, "valid") != 1 ||
	    !(json_num(o.out, "connect_p99_us") > 0))
		fail_msg("%s: %s", engine, o.out);
	/* each connection closed in the interval echoed its 5 messages, most of them in it */
	double done = per_s * json_num(o.out, "duration_s");
	if (!(json_num(o.out, "msgs") >= 4 * done))
		fail_msg("%s: %g connections closed in the interval, %g messages: %s", engine, done,
			 json_num(o.out, "msgs"), o.out);
	if (!(accepted >= opened - 10 && accepted <= opened + 10))
		fail_msg("%s: echod accepted %g connections, echoload opened %g\n%s", engine,
			 accepted, opened, o.out);
	print_message("  %-5s %.0f conns/s, %.0f opened, echod accepted %.0f; connect p50 %g "
		      "p99 %g µs\n", engine, per_s, opened, accepted,
		      json_num(o.out, "connect_p50_us"), json_num(o.out, "connect_p99_us"));
}

static void test_reconnect_churns_echod(void **state)
{
	(void)state;
	expect_churn("epoll");
	struct output o;
	const char *probe[] = { "--engine", "uring", "--port", "1", NULL };
	run_echoload(probe, &o);
	if (o.status == 69) { /* no io_uring here (test_uring says why): epoll was the test */
		print_message("  uring: not available here, not run\n");
		return;
	}
	expect_churn("uring");
}

/* --reconnect N is refused, with a line that says why, when N is not 1 or more and beside
 * --udp (no connections to churn) or --rate (a closed loop only). */
static void test_reconnect_usage_errors(void **state)
{
	(void)state;
	static const struct {
		const char *args[5];
		const char *why;
	} bad[] = {
		{ { "--reconnect", "0", NULL }, "--reconnect: '0' is not a whole number from 1" },
		{ { "--reconnect", "x", NULL }, "--reconnect: 'x' is not a whole number" },
		{ { "--udp", "--reconnect", "5", NULL }, "--udp" },
		{ { "--reconnect", "5", "--rate", "1000", NULL }, "--rate" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct output o;
		run_echoload(bad[i].args, &o);
		if (o.status != 64 || count_char(o.err, '\n', sizeof(o.err)) != 1 ||
		    !strstr(o.err, bad[i].why) || !strstr(o.err, "--reconnect"))
			fail_msg("%s %s: exit %d, stderr: %s", bad[i].args[0], bad[i].args[1],
				 o.status, o.err);
	}
}

/* --- the histogram ------------------------------------------------------------------------- */

static void test_hist_accuracy_and_merge(void **state)
{
	(void)state;
	struct hist a, b, all;
	assert_int_equal(hist_init(&a, 60000000000ull, 7), 0);
	assert_int_equal(hist_init(&b, 60000000000ull, 7), 0);
	assert_int_equal(hist_init(&all, 60000000000ull, 7), 0);
	assert_int_equal(hist_percentile(&a, 50), 0);
	for (uint64_t v = 1000; v <= 10000000; v += 7) { /* 1 µs .. 10 ms in ns */
		hist_record(v % 2 ? &a : &b, v);
		hist_record(&all, v);
	}
	assert_int_equal(hist_merge(&a, &b), 0);
	assert_int_equal(a.count, all.count);
	static const double ps[] = { 1, 50, 90, 99, 99.9 };
	for (size_t i = 0; i < sizeof(ps) / sizeof(*ps); i++) {
		double want = 1000 + (10000000 - 1000) * ps[i] / 100;
		double got = (double)hist_percentile(&a, ps[i]);
		if (fabs(got - want) / want > 0.01)
			fail_msg("p%g: %g, want %g", ps[i], got, want);
		assert_int_equal(hist_percentile(&a, ps[i]), hist_percentile(&all, ps[i]));
	}
	assert_int_equal(hist_percentile(&a, 0), 1000);
	assert_int_equal(hist_percentile(&a, 100), a.max);
	hist_record(&a, 120000000000ull); /* beyond the range: counted, max stays exact */
	assert_int_equal(hist_percentile(&a, 100), 120000000000ull);
	hist_free(&a);
	hist_free(&b);
	hist_free(&all);
}

static int setup(void **state)
{
	(void)state;
	alarm(TEST_ALARM_S);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	helper_stop();
	fake_stop();
	proc_kill_strays();
	alarm(0);
	return 0;
}

static void find_binaries(const char *argv0)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", argv0);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	snprintf(echoload_bin, sizeof(echoload_bin), "%s/../echoload", dir);
	snprintf(helper_bin, sizeof(helper_bin), "%s/helper_faultyecho", dir);
	snprintf(badudp_bin, sizeof(badudp_bin), "%s/helper_badudp", dir);
}

int main(int argc, char **argv)
{
	(void)argc;
	find_binaries(argv[0]);
	proc_init(argv[0]);
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hist_accuracy_and_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_usage_exits_64, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable_exits_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_none_passes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_reads_pass, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_threads_pass, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_is_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dup_is_duplicated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flip_is_corrupted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reorder_is_reordered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_is_connection_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repeat_is_duplicated_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_echo_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_echo_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_loop_silence_at_end_fails, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_open_loop_stall_at_end_shows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_stat_columns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_cpu_in_ns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_loop_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_csv_and_server_cpu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uring_unavailable_exits_69, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_backend_from_cmdline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_progress_only_on_a_terminal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scrape_parse_exposition, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scrape_parse_malformed_samples, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_scrape_url_forms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scrape_http_framing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scrape_mutations_stay_in_bounds, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_scrape_fetch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_metrics_figures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_metrics_unavailable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_metrics_from_echod, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_clean_passes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_loss_is_a_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_late_is_not_an_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_flip_is_corrupted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_dup_is_duplicated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_swap_is_misdelivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_refused_and_too_small, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_server_metrics_figures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_echod, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_usage_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_churns_echod, setup, teardown),
	};
	/* A glob over test names, for a build that runs only part of the suite (make test's
	 * build without liburing runs the io_uring engine's cases: its refusal there). */
	const char *filter = getenv("ECHOD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
