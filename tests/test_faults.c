/* test_faults.c - echod under tests/fault_shim.so (LD_PRELOAD, see its top comment), once per
 * backend: short reads and writes, EINTR, spurious EAGAIN, accept failures in bursts, failed
 * allocations. Every case demands byte-exact echoes (echoload and the tutorial's exchanges, of
 * several sizes, with and without a half-close), no spinning, exit 0 on SIGTERM, and the shim's
 * exit summary showing every configured fault really injected.
 *
 * Which faults reach which backend (x), and why:
 *
 *   fault                                 uring  epoll  uring-poll  poll  select
 *   short_read (recv)                       -      x        -        x      x
 *   eagain on recv, accept                  -      x        -        x      x
 *   short_write, eagain on send             -      x        x        x      x
 *   eintr (recv, send, accept)              -      x        x        x      x
 *   accept_abort, accept_emfile/enfile      -      x        x        x      x
 *   UDP: short batches from recvmmsg        -      x        -        x      x
 *   UDP: short batches from sendmmsg        -      x        x        x      x
 *   UDP: eintr, eagain on recvmmsg          -      x     eintr       x      x
 *   malloc (echod's own allocations)        x      x        x        x      x
 *
 *  - uring receives, sends and accepts inside the kernel (io_uring requests), and liburing
 *    sets the ring up with raw system calls: no recv, send or accept4 passes through libc for
 *    a preloaded library to see (test_io_faults proves it: the shim counts none). What is left
 *    is the heap.
 *  - epoll (level-triggered: backends/epoll.c), poll and select report a socket for as long as
 *    it holds bytes or a queued connection, so a short read or a spurious EAGAIN costs one more
 *    wake-up, never a byte.
 *  - uring-poll is edge-style (a multishot poll posts when the socket is woken, not while it
 *    stays readable): backends/readiness.c reads again only when a recv filled its buffer (or
 *    after EINTR), and an accept batch ends at EAGAIN, so it rightly takes a shorter read or an
 *    EAGAIN as "drained", as nginx does under EPOLLET. An artificial one leaves bytes or a
 *    connection that no wake-up will announce, and the echo stalls until the peer sends more:
 *    the shim lying as no kernel does, not a bug, so those faults are not injected there. A
 *    spurious EAGAIN on send is fine: it arms a one-shot POLLOUT poll, which the kernel checks
 *    against the socket's state when armed. EINTR on recv puts the fd on the retry list, and on
 *    accept it is skipped like ECONNABORTED.
 *  - Datagrams (test_udp_faults) are read by recvmmsg() and sent by sendmmsg() on every
 *    readiness backend. A short batch is to a datagram socket what a short read is to a stream:
 *    the same rule applies. Spurious EAGAIN on sendmmsg is left out everywhere: it drops the
 *    rest of the queue on purpose (UDP replies are droppable, backends/readiness.c), so no
 *    test could then ask for every reply.
 *
 * Allocations (echod's own only): test_alloc_faults arms them with a file once echoload's
 * connections are in, so that only new connections meet them; test_alloc_faults_table_growth
 * fails every realloc from the first accept on, so that a readiness backend cannot grow its fd
 * tables (readiness.c's slots past fd 256, poll.c's pollfd array past 64; uring has none).
 * Either way each failed allocation must cost exactly one connection, reset or closed and
 * counted as out of memory (refused_nomem, closed_nomem), no event may be logged more than once
 * a second, and everyone else keeps being served.
 *
 * Under AddressSanitizer the shim comes first in the library list (it must wrap malloc, and
 * ASan's malloc is then the next one), so echod gets verify_asan_link_order=0.
 * ECHOD_FAULT_SEED in the test's environment replays another seed.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"

#define DEFAULT_SEED "14"
#define IDLE_WINDOW_MS 100
#define IDLE_CPU_MS 50        /* of IDLE_WINDOW_MS: a loop that spins takes all of it */
#define CPU_US_PER_MSG 2000.0 /* plain echod: ~10-25 us under these faults; ASan, a busy host */

enum model { LEVEL, EDGE, COMPLETION };

/* By name: no capability bit says how a backend reports readiness. A backend not named here
 * gets every fault, so adding one makes this suite say where it belongs. */
static enum model model_of(const char *backend)
{
	if (strcmp(backend, "uring") == 0)
		return COMPLETION;
	if (strcmp(backend, "uring-poll") == 0)
		return EDGE;
	return LEVEL;
}

/* The table at the top, as ECHOD_FAULTS. On uring the I/O faults are configured too, to show
 * that none of them lands. */
static const char *io_faults(enum model m)
{
	return m == EDGE ? "short_write=0.3,eintr=0.05,eagain_write=0.05"
			 : "short_read=0.3,short_write=0.3,eintr=0.05,eagain=0.05";
}

static const char *udp_faults(enum model m)
{
	return m == EDGE ? "short_write=0.3,eintr=0.05"
			 : "short_read=0.3,short_write=0.3,eintr=0.05,eagain_read=0.05";
}

/* EMFILE/ENFILE bursts of 2: echod backs off 50 then 100 ms, so each costs 150 ms. */
static const char *accept_faults(enum model m)
{
	return m == EDGE ? "accept_abort=0.05,accept_emfile=0.03,accept_enfile=0.03,eintr=0.05,"
			   "burst=2,pause=8"
			 : "accept_abort=0.05,accept_emfile=0.03,accept_enfile=0.03,eintr=0.05,"
			   "eagain_accept=0.1,burst=2,pause=8";
}

/* --- echod under the shim ------------------------------------------------------------------ */

static char env_preload[PATH_MAX + 16], env_faults[512], env_seed[64], env_arm[PATH_MAX + 32];
#ifdef __SANITIZE_ADDRESS__
static char env_asan[1024];
#endif
static const char *env[8];

static const char *seed(void)
{
	const char *s = getenv("ECHOD_FAULT_SEED");
	return s && *s ? s : DEFAULT_SEED;
}

/* echod on the current backend with the shim preloaded and `faults` configured; arm_file: no
 * fault until that file exists. */
static void start_under(struct child *c, const char *faults, const char *arm_file,
			const char *const *extra)
{
	char shim[PATH_MAX];
	if (!realpath(proc_bin("tests/fault_shim.so"), shim)) {
		print_error("%s: %s (make builds it with the tests)\n", proc_bin("tests/fault_shim.so"),
			    strerror(errno));
		fail();
	}
	int n = 0;
	snprintf(env_preload, sizeof(env_preload), "LD_PRELOAD=%s", shim);
	env[n++] = env_preload;
	snprintf(env_faults, sizeof(env_faults), "ECHOD_FAULTS=%s", faults);
	env[n++] = env_faults;
	snprintf(env_seed, sizeof(env_seed), "ECHOD_FAULT_SEED=%s", seed());
	env[n++] = env_seed;
	if (arm_file) {
		snprintf(env_arm, sizeof(env_arm), "ECHOD_FAULT_ARM_FILE=%s", arm_file);
		env[n++] = env_arm;
	}
#ifdef __SANITIZE_ADDRESS__
	const char *asan = getenv("ASAN_OPTIONS");
	snprintf(env_asan, sizeof(env_asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
		 asan ? asan : "", asan && *asan ? ":" : "");
	env[n++] = env_asan;
#endif
	env[n] = NULL;
	proc_echod_env = env;
	test_start_echod(c, extra);
	proc_echod_env = NULL;
}

static int teardown(void **state)
{
	proc_echod_env = NULL;
	return test_kill_strays(state);
}

/* The head of echod's log, printed, then the test fails. */
static void fail_with_log(const struct child *c, const char *why)
{
	char *log = proc_log(c);
	char *cut = log;
	int lines = 0;
	while (*cut && lines < 6)
		lines += *cut++ == '\n';
	int more = 0;
	for (const char *p = cut; *p; p++)
		more += *p == '\n';
	*cut = '\0';
	print_error("[%s] %s; echod's log:\n%s%s%d more lines\n", test_backend_name(), why, log,
		    more ? "... " : "", more);
	free(log);
	fail();
}

/* SIGTERM, exit 0; then the shim's summary line (static: a failing assertion leaks nothing). */
static const char *stop_and_summary(struct child *c)
{
	static char summary[1024];
	int rc = proc_stop(c, SIGTERM, 10000);
	if (rc != 0) {
		char why[64];
		snprintf(why, sizeof(why), "exit status %d after SIGTERM", rc);
		fail_with_log(c, why);
	}
	char *log = proc_log(c);
	char *line = strstr(log, "fault_shim: summary");
	if (line) {
		line[strcspn(line, "\n")] = '\0';
		snprintf(summary, sizeof(summary), "%s", line);
	}
	free(log);
	if (!line)
		fail_with_log(c, "no summary line from the fault shim");
	print_message("  [%s] %s\n", test_backend_name(), summary);
	return summary;
}

static double shim_count(const char *summary, const char *name)
{
	char key[64];
	snprintf(key, sizeof(key), " %s=", name);
	return test_field(summary, key);
}

/* Every fault of `faults` with a probability above 0 was injected at least once. */
static void assert_injected(const char *summary, const char *faults)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", faults);
	char *save = NULL;
	for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		assert_non_null(eq);
		*eq = '\0';
		if (strcmp(item, "burst") == 0 || strcmp(item, "pause") == 0 || atof(eq + 1) == 0)
			continue;
		const char *name = strncmp(item, "eagain", 6) == 0 ? "eagain"
				   : strcmp(item, "realloc") == 0   ? "malloc"
								    : item;
		if (!(shim_count(summary, name) > 0)) {
			print_error("[%s] %s configured but never injected: %s\n", test_backend_name(),
				    item, summary);
			fail();
		}
	}
}

/* Nothing to do, so nearly no CPU: a loop spinning on a fault it mishandled takes it all. */
static void assert_idle(const struct child *c)
{
	long t0 = proc_cpu_ms(c->pid);
	usleep(IDLE_WINDOW_MS * 1000);
	long used = proc_cpu_ms(c->pid) - t0;
	if (used > IDLE_CPU_MS) {
		char why[96];
		snprintf(why, sizeof(why), "%ld ms of CPU in %d ms with nothing to do", used,
			 IDLE_WINDOW_MS);
		fail_with_log(c, why);
	}
}

static int count_lines(const struct child *c, const char *needle)
{
	char *log = proc_log(c);
	int n = 0;
	for (const char *p = log; (p = strstr(p, needle)); p++)
		n++;
	free(log);
	return n;
}

/* --- clients ------------------------------------------------------------------------------- */

/* One connection: `len` bytes sent while the echo is read (poll), every byte compared; with
 * half_close, shutdown(SHUT_WR) after the last byte, and the echo must end in EOF. */
static void exchange(int port, size_t len, bool half_close, uint32_t pattern)
{
	uint8_t *data = malloc(len), *back = malloc(len);
	assert_true(data && back);
	pattern_fill(data, len, pattern);
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	set_nonblock(fd);
	size_t sent = 0, got = 0;
	bool shut = false, eof = false;
	uint64_t deadline = now_ms() + 10000;
	while ((got < len || (half_close && !eof)) && now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
		if (poll(&p, 1, 500) < 0 && errno != EINTR)
			break;
		if ((p.revents & POLLOUT) && sent < len) {
			ssize_t n = send_retry(fd, data + sent, len - sent, MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
		}
		if (half_close && sent == len && !shut) {
			assert_int_equal(shutdown(fd, SHUT_WR), 0);
			shut = true;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t extra;
			ssize_t n = got < len ? recv_retry(fd, back + got, len - got, 0)
					      : recv_retry(fd, &extra, 1, 0);
			if (n == 0)
				eof = true;
			if (n > 0 && got == len) {
				print_error("[%s] bytes past the %zu sent\n", test_backend_name(), len);
				fail();
			}
			if (n > 0)
				got += (size_t)n;
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
		}
	}
	close(fd);
	if (got != len || (half_close && !eof))
		print_error("[%s] %zu-byte exchange%s: %zu sent, %zu back%s\n", test_backend_name(),
			    len, half_close ? " with half-close" : "", sent, got,
			    half_close && !eof ? ", no EOF" : "");
	assert_int_equal(got, len);
	assert_memory_equal(back, data, len);
	assert_true(!half_close || eof);
	free(data);
	free(back);
}

/* The tutorial's exchange and streams of several sizes, half-closed and not. */
static void exchanges(int port)
{
	assert_true(hello_echoed(port));
	exchange(port, 1, true, 1);
	exchange(port, 1000, false, 2);
	exchange(port, 65536, true, 3);
	exchange(port, 1u << 20, true, 4);
	exchange(port, 300000, false, 5);
}

struct load {
	int rc;
	double msgs, errors, stalled, cpu_us_per_msg;
};

static void load_argv(const char **argv, char bufs[][24], int port, pid_t pid, int conns,
		      int size, int depth, const char *seconds)
{
	snprintf(bufs[0], 24, "%d", port);
	snprintf(bufs[1], 24, "%d", conns);
	snprintf(bufs[2], 24, "%d", size);
	snprintf(bufs[3], 24, "%d", depth);
	snprintf(bufs[4], 24, "%d", (int)pid);
	const char *a[] = { proc_bin("echoload"), "-p", bufs[0], "-c", bufs[1], "-s", bufs[2],
			    "-d", bufs[3], "--duration", seconds, "--warmup", "0.1",
			    "--server-pid", bufs[4], "--json", "-q", NULL };
	memcpy(argv, a, sizeof(a));
}

static struct load load_result(struct child *l, int rc)
{
	char *out = proc_out(l);
	struct load r = { rc, test_field(out, "\"msgs\""), test_field(out, "\"errors\""),
			  test_field(out, "\"stalled_conns\""),
			  test_field(out, "\"server_cpu_us_per_msg\"") };
	if (rc != 0 || r.errors != 0 || r.stalled != 0 || !(r.msgs > 0)) {
		char *err = proc_log(l);
		print_error("[%s] echoload exit %d: %s%s\n", test_backend_name(), rc, out, err);
		free(err);
	}
	free(out);
	proc_cleanup(l);
	return r;
}

/* echoload's every byte verified, nothing stalled, and a reasonable server CPU per message. */
static void assert_load(const struct load *r)
{
	print_message("  [%s] echoload: %.0f messages, %.0f errors, server %.1f us/msg\n",
		      test_backend_name(), r->msgs, r->errors, r->cpu_us_per_msg);
	assert_int_equal(r->rc, 0);
	assert_true(r->errors == 0 && r->stalled == 0 && r->msgs > 0);
	assert_true(r->cpu_us_per_msg >= 0 && r->cpu_us_per_msg < CPU_US_PER_MSG);
}

static struct load run_load(const struct child *c, int conns, int size, int depth,
			    const char *seconds)
{
	const char *argv[20];
	char bufs[5][24];
	load_argv(argv, bufs, c->port, c->pid, conns, size, depth, seconds);
	struct child l;
	int rc = proc_run(argv, 20000, &l);
	return load_result(&l, rc);
}

/* --- the cases ----------------------------------------------------------------------------- */

/* Short reads and writes, EINTR and spurious EAGAIN on every recv and send: byte-exact. */
static void test_io_faults(void **state)
{
	(void)state;
	enum model m = model_of(test_backend_name());
	const char *faults = io_faults(m);
	struct child c;
	start_under(&c, faults, NULL, NULL);
	if (m != COMPLETION) {
		/* 1000-byte messages, 4 in flight: a short read ends mid-message */
		struct load r = run_load(&c, 8, 1000, 4, "0.3");
		assert_load(&r);
	}
	exchanges(c.port);
	assert_idle(&c);
	const char *summary = stop_and_summary(&c);
	if (m == COMPLETION) {
		/* io_uring does the socket I/O: the shim saw no receive and no accept at all */
		assert_true(shim_count(summary, "calls_read") == 0);
		assert_true(shim_count(summary, "calls_accept") == 0);
		static const char *const io[] = { "short_read", "short_write", "eintr", "eagain" };
		for (size_t i = 0; i < sizeof(io) / sizeof(io[0]); i++)
			assert_true(shim_count(summary, io[i]) == 0);
	} else {
		assert_injected(summary, faults);
	}
	proc_cleanup(&c);
}

static bool both_backoffs_logged(const struct child *c)
{
	return proc_log_has(c, "event=accept_backoff error=\"Too many open files\"") &&
	       proc_log_has(c, "event=accept_backoff error=\"Too many open files in system\"");
}

/* accept4 fails in bursts: ECONNABORTED is skipped and accepting goes on; EMFILE and ENFILE
 * make echod back off (event=accept_backoff) and then serve again. Every connection is served
 * in the end (the shim leaves failed ones queued), byte-exact. */
static void test_accept_fault_bursts(void **state)
{
	(void)state;
	enum model m = model_of(test_backend_name());
	if (m == COMPLETION) {
		print_message("  [%s] accepts happen inside the kernel: nothing to inject\n",
			      test_backend_name());
		skip();
	}
	const char *faults = accept_faults(m);
	struct child c;
	start_under(&c, faults, NULL, NULL);
	/* One connection at a time, each echoed, until both kinds of backoff were seen (bounded:
	 * about 2 accept calls per connection, so ~150 calls give each kind a few bursts). */
	uint64_t t0 = now_ms();
	int n = 0;
	bool seen = false;
	while (n < 300 && now_ms() - t0 < 5000 && !seen) {
		if (!hello_echoed(c.port))
			fail_with_log(&c, "a connection was not echoed");
		n++;
		seen = n >= 60 && n % 10 == 0 && both_backoffs_logged(&c);
	}
	print_message("  [%s] %d connections in %llu ms\n", test_backend_name(), n,
		      (unsigned long long)(now_ms() - t0));
	if (!both_backoffs_logged(&c))
		fail_with_log(&c, "no accept_backoff for EMFILE and for ENFILE");
	/* New connections all at once, while bursts go on. */
	struct load r = run_load(&c, 16, 128, 1, "0.2");
	assert_load(&r);
	assert_idle(&c);
	const char *summary = stop_and_summary(&c);
	assert_injected(summary, faults);
	/* Backing off, not retrying at once: each EMFILE/ENFILE burst of 2 is at most 2 lines. */
	int lines = count_lines(&c, "event=accept_backoff");
	double bursts = shim_count(summary, "accept_emfile") + shim_count(summary, "accept_enfile");
	print_message("  [%s] %d accept_backoff lines for %.0f EMFILE/ENFILE\n",
		      test_backend_name(), lines, bursts);
	assert_true(lines >= 2 && lines <= bursts);
	assert_true(test_stop_count(&c, "accept_backoffs=") == lines);
	proc_cleanup(&c);
}

enum outcome { ECHOED, REFUSED, BROKEN };

/* The tutorial's exchange on a new connection, when echod may refuse it: it is either echoed
 * exactly, or reset (or closed) with nothing echoed; anything else is broken. */
static enum outcome hello_or_refused(int port)
{
	int fd = tcp_connect(port);
	if (fd < 0)
		/* The reset can come before connect returns, when a signal made it wait on. */
		return errno == ECONNRESET ? REFUSED : BROKEN;
	char back[16];
	size_t got = 0;
	errno = 0;
	if (send_all(fd, "Hello, world", 12) == 0) {
		while (got < 12) {
			ssize_t n = recv_retry(fd, back + got, 12 - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	int err = errno;
	close(fd);
	if (got == 12 && memcmp(back, "Hello, world", 12) == 0)
		return ECHOED;
	if (got == 0 && (err == ECONNRESET || err == EPIPE || err == 0))
		return REFUSED;
	print_error("[%s] hello: %zu bytes back (%s)\n", test_backend_name(), got, strerror(err));
	return BROKEN;
}

/* A count on the stop line, 0 when echod does not have that counter. */
static double stop_count0(const struct child *c, const char *key)
{
	double v = test_stop_count(c, key);
	return v < 0 ? 0 : v;
}

/* The most warn or error lines any one event has in echod's log, and which event. */
static int busiest_warning(const struct child *c, char *event, size_t len)
{
	char *log = proc_log(c);
	char names[64][48];
	int counts[64], n = 0, most = 0;
	event[0] = '\0';
	char *save = NULL;
	for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *e = strstr(line, " event=");
		if (!e || (!strstr(line, " level=warn ") && !strstr(line, " level=error ")))
			continue;
		e += 7;
		size_t k = strcspn(e, " ");
		if (k >= sizeof(names[0]))
			k = sizeof(names[0]) - 1;
		int i = 0;
		while (i < n && !(strlen(names[i]) == k && strncmp(names[i], e, k) == 0))
			i++;
		if (i == n && n < 64) {
			memcpy(names[n], e, k);
			names[n][k] = '\0';
			counts[n++] = 0;
		}
		if (i < n && ++counts[i] > most) {
			most = counts[i];
			snprintf(event, len, "%s", names[i]);
		}
	}
	free(log);
	return most;
}

/* Each failed allocation cost exactly one connection, counted as out of memory (refused before
 * it was served, or closed), and no event was logged more than once a second. */
static void assert_nomem_accounted(const struct child *c, const char *summary, uint64_t ms)
{
	double failed = shim_count(summary, "malloc");
	double refused = test_stop_count(c, "refused_nomem="), closed = stop_count0(c, "closed_nomem=");
	char event[48];
	int lines = busiest_warning(c, event, sizeof(event));
	int allowed = (int)(ms / 1000) + 2; /* a line a second, and the last count at the end */
	print_message("  [%s] %.0f allocations failed: refused_nomem=%.0f closed_nomem=%.0f "
		      "closed_error=%.0f; event=%s logged %d times in %llu ms\n", test_backend_name(),
		      failed, refused, closed, stop_count0(c, "closed_error="), event, lines,
		      (unsigned long long)ms);
	char why[256] = "";
	if (refused + closed != failed)
		snprintf(why, sizeof(why), "%.0f allocations failed, %.0f connections counted out "
			 "of memory (refused_nomem, closed_nomem)", failed, refused + closed);
	if (lines > allowed)
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "%sevent=%s logged %d times "
			 "in %llu ms", why[0] ? "; " : "", event, lines, (unsigned long long)ms);
	if (why[0])
		fail_with_log(c, why);
}

/* echod's own allocations fail (30% of them) once long-lived connections are in: a new
 * connection whose allocation failed is reset at once and counted, warnings at most one a
 * second; everyone else (echoload) keeps being served byte-exact, and echod never crashes. */
static void test_alloc_faults(void **state)
{
	(void)state;
	const char *faults = "malloc=0.3";
	char arm[64];
	snprintf(arm, sizeof(arm), "/tmp/echod-faults-%d.arm", (int)getpid());
	unlink(arm);
	struct child c;
	start_under(&c, faults, arm, NULL);
	/* echod logs event=start before its workers set up (uring probes on a socketpair): count
	 * its fds once a worker has echoed, and the count has settled. */
	assert_true(hello_echoed(c.port));
	int fds0 = -1;
	for (int i = 0, last = -2; i < 100 && fds0 != last; i++) {
		last = fds0;
		usleep(10000);
		fds0 = proc_count_fds(c.pid);
	}
	const char *argv[20];
	char bufs[5][24];
	load_argv(argv, bufs, c.port, c.pid, 8, 512, 2, "0.5");
	struct child l;
	assert_int_equal(proc_spawn(&l, argv), 0);
	/* Arm once echoload's 8 connections are accepted (and, 20 ms on, adopted). */
	uint64_t t0 = now_ms();
	while (proc_count_fds(c.pid) < fds0 + 8 && now_ms() - t0 < 5000)
		usleep(2000);
	assert_true(proc_count_fds(c.pid) >= fds0 + 8);
	usleep(20000);
	FILE *f = fopen(arm, "w");
	assert_non_null(f);
	fclose(f);
	/* New connections meanwhile: each echoed exactly, or refused. */
	int echoed = 0, refused = 0;
	uint64_t armed_at = now_ms();
	for (int i = 0; i < 200 && now_ms() - armed_at < 3000; i++) {
		enum outcome o = hello_or_refused(c.port);
		if (o == BROKEN)
			fail_with_log(&c, "a new connection was neither echoed nor refused");
		echoed += o == ECHOED;
		refused += o == REFUSED;
	}
	int rc = proc_wait(&l, 10000);
	struct load r = load_result(&l, rc);
	assert_load(&r);
	print_message("  [%s] new connections: %d echoed, %d refused\n", test_backend_name(),
		      echoed, refused);
	assert_true(echoed > 0 && refused > 0);
	assert_true(hello_or_refused(c.port) != BROKEN);
	assert_idle(&c);
	uint64_t ms = now_ms() - armed_at;
	const char *summary = stop_and_summary(&c);
	unlink(arm);
	assert_injected(summary, faults);
	assert_true(test_stop_count(&c, "refused_nomem=") == refused);
	assert_nomem_accounted(&c, summary, ms);
	proc_cleanup(&c);
}

/* The readiness backends grow a table as fds grow: readiness.c's slots (256 at first, doubling)
 * and poll.c's pollfd array (64). With every realloc failing from the first accept on, the
 * connections past the first size cannot be watched: each must cost only itself, counted, and
 * warnings must stay at one a second however many there are. The first ones are served on. */
static void test_alloc_faults_table_growth(void **state)
{
	(void)state;
	enum model m = model_of(test_backend_name());
	if (m == COMPLETION) {
		print_message("  [%s] no table grows with the fds: nothing to fail\n",
			      test_backend_name());
		skip();
	}
	enum { N = 300 }; /* fds past 256 */
	raise_nofile();
	const char *faults = "realloc=1";
	struct child c;
	start_under(&c, faults, NULL, NULL);
	static int fds[N];
	uint64_t t0 = now_ms();
	for (int i = 0; i < N; i++) {
		fds[i] = tcp_connect(c.port);
		/* A reset can come before connect returns, when a signal made it wait on. */
		assert_true(fds[i] >= 0 || (i >= 8 && errno == ECONNRESET));
		if (fds[i] >= 0)
			(void)send_all(fds[i], "Hello, world", 12); /* fails if refused first */
	}
	int echoed = 0, refused = 0;
	for (int i = 0; i < N; i++) {
		char back[12];
		size_t got = 0;
		errno = fds[i] < 0 ? ECONNRESET : 0;
		while (fds[i] >= 0 && got < 12) {
			ssize_t n = recv_retry(fds[i], back + got, 12 - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		if (got == 12 && memcmp(back, "Hello, world", 12) == 0)
			echoed++;
		else if (got == 0 && (errno == ECONNRESET || errno == 0))
			refused++;
		else
			fail_with_log(&c, "a connection was neither echoed nor refused");
	}
	uint64_t ms = now_ms() - t0;
	print_message("  [%s] %d connections: %d echoed, %d refused in %llu ms\n",
		      test_backend_name(), N, echoed, refused, (unsigned long long)ms);
	/* The first connections are served on, and new ones (low fds again) once the rest go. */
	for (int i = 0; i < 8; i++) {
		assert_int_equal(send_all(fds[i], "again", 5), 0);
		char back[5];
		assert_int_equal(recv_exact(fds[i], back, 5), 5);
		assert_memory_equal(back, "again", 5);
	}
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	usleep(50000);
	assert_true(hello_echoed(c.port));
	assert_true(echoed >= 8 && refused > 0);
	const char *summary = stop_and_summary(&c);
	assert_injected(summary, faults);
	assert_nomem_accounted(&c, summary, ms);
	proc_cleanup(&c);
}

/* Datagrams under the same faults: every one echoed once, whole, in order, to the socket that
 * sent it, from bursts of up to UDP_WINDOW per socket so that batches form. */
#define UDP_SOCKS 16
#define UDP_PER_SOCK 150
#define UDP_WINDOW 4
#define UDP_MAX 1000 /* 16 x 4 in flight fit echod's receive buffer (no real drop) */

static size_t udp_len(int sock, uint32_t seq)
{
	return 1 + (size_t)(((uint32_t)sock * 7919u + seq * 104729u) % UDP_MAX);
}

static void test_udp_faults(void **state)
{
	(void)state;
	enum model m = model_of(test_backend_name());
	const char *faults = udp_faults(m);
	const char *more[] = { "--listen", "udp:127.0.0.1:0", "--udp-rate", "0", NULL };
	struct child c;
	start_under(&c, faults, NULL, more);
	int port = proc_udp_port(&c);
	assert_true(port > 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fds[UDP_SOCKS];
	uint32_t sent[UDP_SOCKS] = { 0 }, got[UDP_SOCKS] = { 0 };
	struct pollfd pfd[UDP_SOCKS];
	for (int i = 0; i < UDP_SOCKS; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		assert_true(fds[i] >= 0);
		pfd[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
	}
	static uint8_t out[UDP_MAX], back[UDP_MAX + 1];
	uint32_t total = 0, wrong = 0;
	uint64_t deadline = now_ms() + 20000;
	while (total < UDP_SOCKS * UDP_PER_SOCK && now_ms() < deadline) {
		for (int i = 0; i < UDP_SOCKS; i++) {
			while (sent[i] < UDP_PER_SOCK && sent[i] - got[i] < UDP_WINDOW) {
				size_t len = udp_len(i, sent[i]);
				pattern_fill(out, len, (uint32_t)i << 16 | sent[i]);
				if (sendto_retry(fds[i], out, len, 0, (struct sockaddr *)&to,
						 sizeof(to)) != (ssize_t)len)
					break;
				sent[i]++;
			}
		}
		if (poll(pfd, UDP_SOCKS, 2000) == 0)
			break; /* nothing for 2 s: lost, counted below */
		for (int i = 0; i < UDP_SOCKS; i++) {
			ssize_t n;
			while ((n = recv_retry(fds[i], back, sizeof(back), 0)) >= 0) {
				size_t len = udp_len(i, got[i]);
				pattern_fill(out, len, (uint32_t)i << 16 | got[i]);
				if ((size_t)n != len || memcmp(back, out, len) != 0)
					wrong++;
				got[i]++;
				total++;
			}
		}
	}
	for (int i = 0; i < UDP_SOCKS; i++)
		close(fds[i]);
	if (wrong || total != UDP_SOCKS * UDP_PER_SOCK) {
		char why[96];
		snprintf(why, sizeof(why), "%u of %u datagrams echoed, %u of them wrong", total,
			 UDP_SOCKS * UDP_PER_SOCK, wrong);
		fail_with_log(&c, why);
	}
	const char *summary = stop_and_summary(&c);
	assert_int_equal(test_stop_count(&c, "udp_echoed="), UDP_SOCKS * UDP_PER_SOCK);
	if (m == COMPLETION) {
		/* io_uring receives and sends the datagrams (its writes are echod's log lines) */
		assert_true(shim_count(summary, "calls_read") == 0);
		assert_true(shim_count(summary, "short_write") == 0);
		assert_true(shim_count(summary, "eintr") == 0);
	} else {
		assert_injected(summary, faults);
	}
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
#ifdef __SANITIZE_THREAD__
	/* TSan's runtime must come first and intercepts the same calls; make test runs this
	 * suite on the plain and ASan builds. */
	printf("[ SKIPPED  ] faults: not under ThreadSanitizer\n");
	return 0;
#endif
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_io_faults, teardown),
		cmocka_unit_test_teardown(test_accept_fault_bursts, teardown),
		cmocka_unit_test_teardown(test_alloc_faults, teardown),
		cmocka_unit_test_teardown(test_alloc_faults_table_growth, teardown),
		cmocka_unit_test_teardown(test_udp_faults, teardown),
	};
	return test_run_per_backend("faults", tests, sizeof(tests) / sizeof(tests[0])) ? 1 : 0;
}
