/* test_echoload.c - echoload end to end: the real binary against a real server over loopback.
 *
 * helper_faultyecho damages echoes in each way echoload claims to detect (a byte dropped,
 * duplicated, bit-flipped, two bytes swapped, a message repeated, the connection closed); each
 * run must fail with the matching counter in its JSON, and a faultless run must pass with
 * every counter at zero. An echo that never comes must not count as an error, only a stall.
 * Also: partial sends and reads, pipelining over two threads, the open loop's rate, CSV, the
 * server CPU figure and backend, the progress line (on a terminal only), usage errors, an
 * unreachable port, the io_uring engine where it runs and its refusal where it cannot
 * (io_uring_setup blocked by seccomp), and the histogram's accuracy (tools/hist.c is compiled
 * in). Binaries are found next to this one:
 * <dir>/../echoload and <dir>/helper_faultyecho. Every wait is bounded and children are killed
 * by pid; alarm() is the backstop if a test hangs anyway. */
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
#include <signal.h>
#include <spawn.h>
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

#include "../tools/hist.c"

#define RUN_TIMEOUT_MS 15000
#define TEST_ALARM_S 40

extern char **environ;

static char echoload_bin[PATH_MAX + 16], helper_bin[PATH_MAX + 32];
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

/* Runs echoload with args (NULL-terminated) to completion, capturing stdout and stderr. */
static void run_echoload(const char *const *args, struct output *o)
{
	const char *argv[40];
	int n = 0;
	argv[n++] = echoload_bin;
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	int out = temp_file(), err = temp_file();
	assert_true(out >= 0 && err >= 0);
	pid_t pid = spawn(argv, out, err);
	assert_true(pid > 0);
	o->status = wait_bounded(pid, RUN_TIMEOUT_MS);
	slurp(out, o->out, sizeof(o->out));
	slurp(err, o->err, sizeof(o->err));
}

/* Starts helper_faultyecho and reads the port it prints (within 5 s). */
static void helper_start(const char *mode, const char *every, const char *split)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	const char *argv[] = { helper_bin, "--port", "0", "--mode", mode, "--every", every,
			       "--split", split, NULL };
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

static void helper_stop(void)
{
	if (helper_pid <= 0)
		return;
	kill(helper_pid, SIGTERM);
	if (wait_bounded(helper_pid, 2000) != 0)
		fprintf(stderr, "helper_faultyecho did not exit cleanly\n");
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

/* echoload against the helper for about a second, JSON on stdout. */
static void load(struct output *o, const char *engine, const char *depth, const char *threads,
		 const char *size)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", helper_port);
	const char *args[] = { "--port", port, "--engine", engine, "--depth", depth, "--threads",
			       threads, "--size", size, "--connections", "20", "--duration", "0.8",
			       "--warmup", "0.2", "--json", NULL };
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

/* A whole chunk never echoed: at depth 1 nothing more comes on that connection, which cannot
 * be told from a slow server. Not an error, but the stall is reported. */
static void test_lost_chunk_is_a_stall(void **state)
{
	(void)state;
	struct output o;
	helper_start("lose", "2000", "1000000");
	load(&o, "epoll", "1", "1", "128");
	helper_stop();
	assert_true(o.status == 0 || o.status == 1); /* 1 if every connection stalled early */
	assert_true(json_num(o.out, "errors") == 0);
	assert_true(json_num(o.out, "stalled_conns") > 0);
	assert_true(json_num(o.out, "in_flight_at_stop") > 0);
	if (!strstr(o.err, "stalled"))
		fail_msg("stderr: %s", o.err);
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
	assert_non_null(strstr(o.out, "server_cpu_us_per_msg"));
	/* the last three columns: server_pid, server_cpu_pct, server_cpu_us_per_msg */
	const char *last = strrchr(nl + 1, ',');
	assert_true(strtod(last + 1, NULL) > 0);
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
	const char *argv[] = { echoload_bin, "--port", port, "--connections", "4", "--duration",
			       "3.4", "--warmup", "0", "--json", NULL };
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
	helper_stop();
	assert_int_equal(o.status, 0);
	if (strstr(o.err, "msgs/s"))
		fail_msg("progress on a non-terminal stderr: %s", o.err);
}

/* --- refusals ------------------------------------------------------------------------------ */

static void test_bad_usage_exits_64(void **state)
{
	(void)state;
	static const char *const bad[][3] = {
		{ "--bogus", NULL, NULL }, { "--size", "3", NULL }, { "--depth", "x", NULL },
		{ "--engine", "kqueue", NULL }, { "--json", "--csv", NULL },
		{ "--duration", "-1", NULL },
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
}

int main(int argc, char **argv)
{
	(void)argc;
	find_binaries(argv[0]);
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
		cmocka_unit_test_setup_teardown(test_lost_chunk_is_a_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_loop_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_csv_and_server_cpu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uring_unavailable_exits_69, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_backend_from_cmdline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_progress_only_on_a_terminal, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
