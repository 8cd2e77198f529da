/* test_signals.c - what each signal does to a running echod, and the checks made before start.
 *
 * Per backend (the group runs once for each backend in the engine's table that runs here):
 * HUP, USR1, USR2, ALRM and PROF sent mid-load leave echod serving, each with its log line, and
 * so do thirty SIGSTOP/SIGCONT pairs; a second SIGTERM during a drain that would take 30 s
 * stops echod at once. Once: the watchdog ends a process whose worker is stuck (a worker thread
 * stopped from outside with ptrace), and the start-up refusals of select's fd limit and of a
 * buffer pool that cannot be mapped. Every wait is bounded; only children started here are
 * signalled.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"
#include "reactor.h"

static void dump_log(const struct child *c)
{
	char *log = proc_log(c);
	print_error("echod's log:\n%s\n", log);
	free(log);
}

/* Wait up to ms for echod's log to hold needle. */
static bool log_within(const struct child *c, const char *needle, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;
	for (;;) {
		if (proc_log_has(c, needle))
			return true;
		if (now_ms() >= end)
			return false;
		usleep(10 * 1000);
	}
}

/* The log line holding needle (a copy, without its newline), or NULL. */
static char *log_line(const struct child *c, const char *needle)
{
	char *log = proc_log(c);
	char *p = strstr(log, needle), *line = NULL;
	if (p) {
		while (p > log && p[-1] != '\n')
			p--;
		size_t len = strcspn(p, "\n");
		line = strndup(p, len);
	}
	free(log);
	return line;
}

static void assert_log(const struct child *c, const char *needle, int ms)
{
	if (!log_within(c, needle, ms)) {
		print_error("[%s] no '%s' in echod's log\n", test_backend_name(), needle);
		dump_log(c);
		fail();
	}
}

/* --- echo traffic while a signal arrives ------------------------------------------------- */

#define PATTERN (256u << 10)
#define CHUNK (16u << 10)
#define INFLIGHT (128u << 10) /* under --conn-buffer's 256K: the server never pauses a pumper */

static uint8_t pattern[PATTERN + CHUNK];

struct pumper {
	int fd;
	uint32_t seed;     /* where in the pattern this connection's stream starts */
	uint64_t sent, got;
};

/* Stream on every connection for `ms`, checking every echoed byte, and send `sig` to echod
 * half-way. Then stop sending and read what is still due. Returns the bytes echoed after the
 * signal, or -1 on a mismatch, an error or EOF (printed). */
static long pump(struct pumper *p, int n, int ms, pid_t pid, int sig)
{
	uint64_t t0 = now_ms(), end = t0 + (uint64_t)ms, at = t0 + (uint64_t)ms / 2;
	uint64_t drain_end = 0;
	bool signalled = false;
	long after = 0;
	uint8_t buf[CHUNK];
	for (;;) {
		uint64_t now = now_ms();
		if (!signalled && now >= at) {
			kill(pid, sig);
			signalled = true;
		}
		bool sending = now < end;
		if (!sending && !drain_end)
			drain_end = now + 3000;
		bool due = false;
		struct pollfd pf[8];
		for (int i = 0; i < n; i++) {
			pf[i] = (struct pollfd){ .fd = p[i].fd, .events = POLLIN };
			if (sending && p[i].sent - p[i].got < INFLIGHT)
				pf[i].events |= POLLOUT;
			due |= p[i].got < p[i].sent;
		}
		if (!sending && !due)
			return after;
		if (drain_end && now >= drain_end) {
			print_error("[%s] echoes still missing 3 s after the last send\n", test_backend_name());
			return -1;
		}
		if (poll(pf, (nfds_t)n, 50) < 0 && errno != EINTR)
			return -1;
		for (int i = 0; i < n; i++) {
			struct pumper *q = &p[i];
			if (pf[i].revents & POLLOUT) {
				size_t off = (size_t)((q->sent + q->seed) % PATTERN);
				ssize_t k = send_retry(q->fd, pattern + off, CHUNK, MSG_NOSIGNAL | MSG_DONTWAIT);
				if (k < 0 && errno != EAGAIN) {
					print_error("[%s] connection %d: send: %s\n", test_backend_name(), i,
						    strerror(errno));
					return -1;
				}
				if (k > 0)
					q->sent += (uint64_t)k;
			}
			if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t k = recv_retry(q->fd, buf, sizeof(buf), MSG_DONTWAIT);
				if (k < 0 && errno == EAGAIN)
					continue;
				if (k <= 0) {
					print_error("[%s] connection %d: %s after %llu of %llu bytes echoed "
						    "(signal %s)\n", test_backend_name(), i,
						    k == 0 ? "EOF" : strerror(errno),
						    (unsigned long long)q->got, (unsigned long long)q->sent,
						    signalled ? "sent" : "not yet sent");
					return -1;
				}
				for (ssize_t j = 0; j < k; j++) {
					uint8_t want = pattern[(q->got + (uint64_t)j + q->seed) % PATTERN];
					if (buf[j] != want) {
						print_error("[%s] connection %d: byte %llu differs\n", test_backend_name(),
							    i, (unsigned long long)(q->got + (uint64_t)j));
						return -1;
					}
				}
				q->got += (uint64_t)k;
				if (signalled)
					after += k;
			}
		}
	}
}

/* echod with two workers, and four connections to pump through it (their patterns differ). */
static void start_pumping(struct child *c, struct pumper p[4])
{
	const char *extra[] = { "--threads", "2", NULL };
	test_start_echod(c, extra);
	for (int i = 0; i < 4; i++) {
		p[i] = (struct pumper){ .fd = tcp_connect(c->port), .seed = (uint32_t)i * 7919u };
		assert_true(p[i].fd >= 0);
	}
}

static const struct {
	int sig;
	const char *name;
	const char *line; /* what echod's log must say */
} survivable[] = {
	{ SIGHUP, "HUP", "event=signal signal=HUP sender_pid=" },
	{ SIGUSR1, "USR1", "event=stats signal=USR1 conns=4 workers=2 workers_replied=2 " },
	{ SIGUSR2, "USR2", "event=signal signal=USR2 sender_pid=" },
	{ SIGALRM, "ALRM", "event=signal signal=ALRM sender_pid=" },
	{ SIGPROF, "PROF", "event=signal signal=PROF sender_pid=" },
};

/* No signal but TERM and INT stops echod, and none of these may cost a connection a byte. Two
 * workers, so USR1's line has to add up both workers' counters (4 connections between them). */
static void test_signals_leave_echod_serving(void **state)
{
	(void)state;
	struct child c;
	struct pumper p[4];
	start_pumping(&c, p);
	for (size_t s = 0; s < sizeof(survivable) / sizeof(survivable[0]); s++) {
		long after = pump(p, 4, 200, c.pid, survivable[s].sig);
		if (after <= 0) {
			print_error("[%s] after SIG%s: %s\n", test_backend_name(), survivable[s].name,
				    after < 0 ? "the echo broke" : "nothing echoed");
			dump_log(&c);
			fail();
		}
		assert_log(&c, survivable[s].line, 2000);
	}
	char *line = log_line(&c, "event=signal signal=HUP ");
	assert_non_null(line);
	assert_non_null(strstr(line, "action=ignored msg=\"no configuration to reload\""));
	free(line);
	line = log_line(&c, "event=stats signal=USR1 ");
	assert_non_null(line);
	assert_non_null(strstr(line, " bytes_in="));
	assert_null(strstr(line, " bytes_in=0 ")); /* the counters are the live ones */
	/* The loops' own counts, as /metrics has them: live too. */
	assert_non_null(strstr(line, " wakeups="));
	assert_null(strstr(line, " wakeups=0 "));
	assert_null(strstr(line, " completions=0 "));
	assert_non_null(strstr(line, " syscalls="));
	assert_null(strstr(line, " syscalls=0"));
	free(line);
	for (int i = 0; i < 4; i++)
		close(p[i].fd);
	assert_true(hello_echoed(c.port));
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	assert_true(proc_log_has(&c, "event=stopped accepted=5 "));
	assert_false(proc_log_has(&c, "event=watchdog"));
	proc_cleanup(&c);
}

/* --- stopped and continued ----------------------------------------------------------------- */

struct freezer {
	pid_t pid;
	atomic_bool done;
	int rounds;
};

static void *freeze_loop(void *arg)
{
	struct freezer *f = arg;
	while (!atomic_load(&f->done)) {
		usleep(15000);
		kill(f->pid, SIGSTOP);
		usleep(5000);
		kill(f->pid, SIGCONT);
		f->rounds++;
	}
	return NULL;
}

/* A process stopped and continued (a frozen cgroup, docker pause, a debugger) sees its waits
 * end with EINTR whatever its handlers (signal(7)): epoll_wait, io_uring_enter, sigtimedwait.
 * echod must take that as a wake-up with nothing to do: thirty stops in 0.6 s of load cost
 * no byte and no connection, and a TERM sent while it is stopped ends it once continued. */
static void test_stop_and_continue_leave_echod_serving(void **state)
{
	(void)state;
	struct child c;
	struct pumper p[4];
	start_pumping(&c, p);
	struct freezer f = { .pid = c.pid };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, freeze_loop, &f), 0);
	long after = pump(p, 4, 600, c.pid, 0); /* signal 0: no signal, only the freezes */
	atomic_store(&f.done, true);
	pthread_join(t, NULL);
	print_message("  [%s] %d stops; %ld bytes echoed in the second half\n", test_backend_name(),
		      f.rounds, after);
	if (after <= 0) {
		dump_log(&c);
		fail();
	}
	assert_true(f.rounds >= 15);
	for (int i = 0; i < 4; i++)
		close(p[i].fd);
	assert_true(hello_echoed(c.port));
	assert_int_equal(kill(c.pid, SIGSTOP), 0);
	usleep(20000);
	assert_int_equal(kill(c.pid, SIGTERM), 0);
	usleep(20000);
	assert_int_equal(kill(c.pid, SIGCONT), 0);
	assert_int_equal(proc_wait(&c, 10000), 0);
	assert_true(proc_log_has(&c, "event=stopped accepted=5 "));
	assert_false(proc_log_has(&c, "event=watchdog"));
	proc_cleanup(&c);
}

/* --- the second signal -------------------------------------------------------------------- */

/* A client that reads nothing, with a small receive buffer, sends until the server stops
 * reading (a few MB: its queue, the kernel's buffers): echoes stay queued, so a drain has to
 * wait for --drain-timeout. */
static int stalled_client(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int small = 4096;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) < 0 ||
	    connect_retry(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	set_nonblock(fd);
	size_t sent = 0;
	uint64_t end = now_ms() + 1500;
	while (sent < (16u << 20) && now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		if (poll(&p, 1, 150) == 0)
			break; /* 150 ms without room: the server stopped reading */
		ssize_t n = send_retry(fd, pattern, sizeof(pattern), MSG_NOSIGNAL);
		if (n > 0)
			sent += (size_t)n;
		else if (n < 0 && errno != EAGAIN)
			break;
	}
	print_message("  [%s] stalled client: %zu bytes sent, none read\n", test_backend_name(), sent);
	if (sent < (1u << 20)) {
		close(fd);
		return -1;
	}
	return fd;
}

static void second_signal_cuts(int first, int second, const char *line)
{
	struct child c;
	const char *extra[] = { "--drain-timeout", "30", NULL };
	test_start_echod(&c, extra);
	int fd = stalled_client(c.port);
	assert_true(fd >= 0);
	assert_true(hello_echoed(c.port));
	kill(c.pid, first);
	assert_log(&c, "event=stopping", 2000);
	/* Draining: the stalled client's echoes cannot go out, so it would wait 30 s. */
	if (proc_wait(&c, 500) != -2) {
		print_error("[%s] echod exited within 0.5 s of the first signal\n", test_backend_name());
		dump_log(&c);
		fail();
	}
	uint64_t t0 = now_ms();
	kill(c.pid, second);
	int st = proc_wait(&c, 2000);
	uint64_t took = now_ms() - t0;
	if (st != 0 || !proc_log_has(&c, line) || !proc_log_has(&c, " aborted=1 ") ||
	    proc_log_has(&c, "event=watchdog")) {
		print_error("[%s] second signal: status %d after %llu ms\n", test_backend_name(), st,
			    (unsigned long long)took);
		dump_log(&c);
		fail();
	}
	print_message("  [%s] exited %llu ms after the second signal\n", test_backend_name(),
		      (unsigned long long)took);
	close(fd);
	proc_cleanup(&c);
}

static void test_second_sigterm_cuts(void **state)
{
	(void)state;
	second_signal_cuts(SIGTERM, SIGTERM, "event=cut signal=TERM conns=1 ");
}

/* Ctrl-C twice, or a TERM from the service manager and an impatient Ctrl-C. */
static void test_sigint_after_sigterm_cuts(void **state)
{
	(void)state;
	second_signal_cuts(SIGTERM, SIGINT, "event=cut signal=INT conns=1 ");
}

/* --- once, whatever the backend ----------------------------------------------------------- */

/* The thread of `pid` named `comm` (echod names its workers echod-w0, echod-w1, ...); with
 * comm NULL, any thread but the main one and io_uring's own (an echod that names none). */
static pid_t find_thread(pid_t pid, const char *comm, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;
	do {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/task", pid);
		DIR *d = opendir(path);
		if (!d)
			return -1;
		struct dirent *e;
		pid_t found = -1;
		while (found < 0 && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char cpath[384], name[32] = "";
			snprintf(cpath, sizeof(cpath), "%s/%s/comm", path, e->d_name);
			FILE *f = fopen(cpath, "r");
			if (!f)
				continue;
			if (fgets(name, sizeof(name), f))
				name[strcspn(name, "\n")] = '\0';
			fclose(f);
			if (comm ? strcmp(name, comm) == 0
				 : atoi(e->d_name) != pid && strncmp(name, "iou-", 4) != 0)
				found = atoi(e->d_name);
		}
		closedir(d);
		if (found > 0)
			return found;
		usleep(10 * 1000);
	} while (now_ms() < end);
	return -1;
}

/* Reap the traced thread once the process is gone (a traced thread's exit is reported to its
 * tracer, and its process is not reaped before it). */
static void reap_thread(pid_t tid, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;
	while (now_ms() < end) {
		int st;
		pid_t r = waitpid(tid, &st, __WALL | WNOHANG);
		if (r < 0 || (r == tid && (WIFEXITED(st) || WIFSIGNALED(st))))
			return;
		usleep(5 * 1000);
	}
}

/* A worker that never finishes its stop must not keep echod alive: the watchdog logs it and
 * ends the process --drain-timeout + 2 s after the signal. Nothing inside echod can be made to
 * hang from outside, so the test stops the worker's thread itself: ptrace stops one thread,
 * not the process (SIGSTOP would stop the main thread too). */
static void test_watchdog_ends_stuck_worker(void **state)
{
	(void)state;
	struct child c;
	const char *extra[] = { "--drain-timeout", "0.2", "--threads", "2", NULL };
	test_start_echod(&c, extra);
	assert_true(hello_echoed(c.port));
	pid_t tid = find_thread(c.pid, "echod-w1", 2000);
	if (tid < 0)
		tid = find_thread(c.pid, NULL, 0);
	assert_true(tid > 0);
	if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) < 0) {
		print_message("  ptrace is not permitted here (%s): the watchdog is not tested\n",
			      strerror(errno));
		proc_stop(&c, SIGTERM, 10000);
		proc_cleanup(&c);
		skip();
	}
	bool stopped = false;
	if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) == 0) {
		uint64_t end = now_ms() + 2000;
		while (!stopped && now_ms() < end) {
			int st;
			pid_t r = waitpid(tid, &st, __WALL | WNOHANG);
			stopped = r == tid && WIFSTOPPED(st);
			if (!stopped)
				usleep(5 * 1000);
		}
	}
	uint64_t t0 = now_ms();
	kill(c.pid, SIGTERM);
	int st = -2;
	uint64_t end = now_ms() + 6000;
	while (stopped && st == -2 && now_ms() < end) {
		reap_thread(tid, 50);
		st = proc_wait(&c, 0);
	}
	uint64_t took = now_ms() - t0;
	if (st == -2)
		kill(c.pid, SIGKILL);
	reap_thread(tid, 2000);
	if (c.pid > 0)
		proc_wait(&c, 2000);
	assert_true(stopped);
	char *line = log_line(&c, "event=watchdog");
	print_message("  exit %d %llu ms after SIGTERM with worker 1 stopped: %s\n", st,
		      (unsigned long long)took, line ? line : "(no watchdog line)");
	if (st != 1 || !line || !strstr(line, "stuck_workers=1 stuck=1 workers=2 ") ||
	    took < 2000 || took > 5500) {
		dump_log(&c);
		free(line);
		fail();
	}
	free(line);
	proc_cleanup(&c);
}

/* The same stop with nothing stuck, and a drain that takes its whole timeout: no watchdog. */
static void test_watchdog_quiet_on_slow_drain(void **state)
{
	(void)state;
	struct child c;
	const char *extra[] = { "--drain-timeout", "0.5", NULL };
	test_start_echod(&c, extra);
	int fd = stalled_client(c.port);
	assert_true(fd >= 0);
	uint64_t t0 = now_ms();
	assert_int_equal(proc_stop(&c, SIGTERM, 5000), 0);
	uint64_t took = now_ms() - t0;
	assert_true(took >= 400 && took < 2000);
	assert_true(proc_log_has(&c, "event=drain_timeout"));
	assert_false(proc_log_has(&c, "event=watchdog"));
	close(fd);
	proc_cleanup(&c);
}

static int count_lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* select cannot watch fd 1024 and above; 256 workers x 5 fds of their own are past it before
 * any client comes. Refused before start, in one line, instead of 256 worker_failed lines. */
static void test_select_fd_room_refused_before_start(void **state)
{
	(void)state;
	const char *argv[] = { proc_bin("echod"), "--backend", "select", "--threads", "256",
			       "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
			       "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", NULL };
	struct child c;
	int st = proc_run(argv, 10000, &c);
	char *log = proc_log(&c);
	if (st != 64 || count_lines(log) != 1 || strstr(log, "event=start") ||
	    !strstr(log, "--backend epoll")) {
		print_error("status %d, stderr (%d lines):\n%.2000s\n", st, count_lines(log), log);
		free(log);
		fail();
	}
	print_message("  %s", log);
	free(log);
	proc_cleanup(&c);
}

/* 32768 x 1 MiB = 32 GiB of pool: the pool is what cannot be had, whatever the backend. */
static void test_pool_too_big_said_so(void **state)
{
	(void)state;
	void *m = mmap(NULL, 32ull << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);
	if (m != MAP_FAILED) {
		munmap(m, 32ull << 30);
		print_message("  this machine maps 32 GiB: no pool too big to test with\n");
		skip();
	}
	const char *backends[] = { "auto", "epoll" };
	for (int b = 0; b < 2; b++) {
		const char *argv[] = { proc_bin("echod"), "--listen", "127.0.0.1:0", "--backend",
				       backends[b], "--buffers", "32768", "--buffer-size", "1M",
				       "--conn-buffer", "1M", NULL };
		struct child c;
		int st = proc_run(argv, 10000, &c);
		char *log = proc_log(&c);
		if (st != 1 || count_lines(log) != 1 || strstr(log, "event=start") ||
		    !strstr(log, "buffer pool (--buffers 32768 x --buffer-size 1 MiB = 32 GiB)") ||
		    !strstr(log, "lower --buffers or --buffer-size")) {
			print_error("--backend %s: status %d, stderr:\n%.2000s\n", backends[b], st, log);
			free(log);
			fail();
		}
		if (b == 0)
			print_message("  %s", log);
		free(log);
		proc_cleanup(&c);
	}
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	pattern_fill(pattern, PATTERN, 42);
	memcpy(pattern + PATTERN, pattern, CHUNK); /* a send may run past the end: it wraps */
	const struct CMUnitTest per_backend[] = {
		cmocka_unit_test_teardown(test_signals_leave_echod_serving, test_kill_strays),
		cmocka_unit_test_teardown(test_stop_and_continue_leave_echod_serving,
					  test_kill_strays),
		cmocka_unit_test_teardown(test_second_sigterm_cuts, test_kill_strays),
		cmocka_unit_test_teardown(test_sigint_after_sigterm_cuts, test_kill_strays),
	};
	const struct CMUnitTest once[] = {
		cmocka_unit_test_teardown(test_watchdog_ends_stuck_worker, test_kill_strays),
		cmocka_unit_test_teardown(test_watchdog_quiet_on_slow_drain, test_kill_strays),
		cmocka_unit_test_teardown(test_select_fd_room_refused_before_start, test_kill_strays),
		cmocka_unit_test_teardown(test_pool_too_big_said_so, test_kill_strays),
	};
	int failed = test_run_per_backend("signals", per_backend,
					  sizeof(per_backend) / sizeof(per_backend[0]));
	failed += _cmocka_run_group_tests("signals/any backend", once, sizeof(once) / sizeof(once[0]),
					  NULL, NULL);
	return failed ? 1 : 0;
}
