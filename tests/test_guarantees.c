/* test_guarantees.c - README's promises under attack, on the real echod, once per backend:
 * stuck clients never starve the others, --conn-buffer bounds a connection's memory, a stop
 * echoes every byte it received before its FIN, refusals are resets and always logged.
 *
 * The stuck-client cases need TCP buffers small enough that a client which never reads blocks
 * the server's send after kilobytes, not megabytes: main() moves the whole test into a network
 * namespace of its own (it goes away with the process) with tcp_wmem/tcp_rmem capped at 64 KiB.
 * That needs root (CAP_SYS_ADMIN); without it those cases skip with one line.
 */
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib_backends.h"

static bool small_buffers; /* inside our own network namespace with 64 KiB TCP buffers */

static void need_small_buffers(void)
{
	if (!small_buffers) {
		print_message("  [%s] skipped: needs root for a network namespace with small TCP "
			      "buffers\n", test_backend_name());
		skip();
	}
}

/* 50 connections of 128-byte ping-pong for 0.3 s, verified by echoload. */
static struct test_rate measure(int port)
{
	return test_echo_rate(port, 50, 0.3);
}

/* Start `n` stuck clients (they send, never read) and wait until they have pushed all they
 * can. Returns the helper, which holds them until it is stopped. */
static void stuck_clients(struct child *h, int port, int n)
{
	char portstr[16], nstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(nstr, sizeof(nstr), "%d", n);
	const char *argv[] = { proc_bin("helper_stuckclients"), portstr, nstr, NULL };
	assert_int_equal(proc_spawn(h, argv), 0);
	assert_true(proc_wait_out(h, "stuck ", 15000));
	char *out = proc_out(h);
	int held = (int)test_field(out, "stuck");
	free(out);
	assert_int_equal(held, n); /* none refused or closed */
}

/* Issue 17.1: each stuck connection used to keep the pool buffer under its blocked send, so
 * `--buffers` of them stopped the server for everyone. For N = buffers - 1, buffers,
 * 2 x buffers and 10 x buffers stuck clients, 50 others keep at least half their rate. */
static void test_stuck_clients_never_starve_others(void **state)
{
	(void)state;
	need_small_buffers();
	const int buffers = 16;
	struct child c;
	test_start_echod(&c, (const char *const[]){ "--buffers", "16", "--buffer-size", "4K",
					 "--conn-buffer", "16K", NULL });
	/* The unloaded rate: the median of three runs, so one fast or slow moment of this shared
	 * machine does not set the bar. */
	struct test_rate runs[3];
	for (int i = 0; i < 3; i++)
		runs[i] = measure(c.port);
	struct test_rate base = runs[0];
	for (int i = 0; i < 3; i++) {
		int below = 0, above = 0;
		for (int j = 0; j < 3; j++) {
			below += runs[j].msgs_per_s < runs[i].msgs_per_s;
			above += runs[j].msgs_per_s > runs[i].msgs_per_s;
		}
		if (below <= 1 && above <= 1)
			base = runs[i];
	}
	assert_true(base.msgs_per_s > 0);
	const int steps[] = { buffers - 1, buffers, 2 * buffers, 10 * buffers };
	struct child helpers[4];
	int have = 0;
	for (int i = 0; i < 4; i++) {
		stuck_clients(&helpers[i], c.port, steps[i] - have);
		have = steps[i];
		/* Up to three looks (this machine is noisy); starved clients measure 0 in every one. */
		struct test_rate r = measure(c.port);
		for (int look = 1; look < 3 && r.msgs_per_s < base.msgs_per_s / 2; look++)
			r = measure(c.port);
		print_message("  [%s] %3d stuck clients: %.0f msgs/s (unloaded %.0f), p99 %.0f us\n",
			      test_backend_name(), have, r.msgs_per_s, base.msgs_per_s, r.p99_us);
		assert_true(r.msgs_per_s >= base.msgs_per_s / 2);
		assert_true(r.p99_us > 0 && r.p99_us < 100000);
	}
	for (int i = 0; i < 4; i++) {
		proc_stop(&helpers[i], SIGTERM, 5000);
		proc_cleanup(&helpers[i]);
	}
	assert_int_equal(proc_stop(&c, SIGTERM, 15000), 0);
	proc_cleanup(&c);
}

/* Issue 17.2: with --conn-buffer 16K, 300 connections whose peers never read must cost at most
 * --conn-buffer + one buffer each (io_uring's read-ahead used to take ~140 KB each). Measured
 * as RSS growth; the pool's pages (touched as it is used) are allowed for on top. */
static void test_conn_buffer_bounds_memory(void **state)
{
	(void)state;
	need_small_buffers();
	const long conn_buffer = 16 << 10, bufsize = 8 << 10, nbufs = 256, n = 300;
	struct child c;
	test_start_echod(&c, (const char *const[]){ "--buffers", "256", "--buffer-size", "8K",
					 "--conn-buffer", "16K", NULL });
	assert_true(hello_echoed(c.port));
	long before = proc_rss_kb(c.pid);
	struct child h;
	stuck_clients(&h, c.port, (int)n);
	long after = proc_rss_kb(c.pid);
	long per_conn = (after - before) * 1024 / n;
	long bound = conn_buffer + bufsize + nbufs * bufsize / n + 1024;
	print_message("  [%s] %ld stuck connections: %ld bytes each (bound %ld)\n",
		      test_backend_name(), n, per_conn, bound);
#ifdef __SANITIZE_ADDRESS__
	/* ASan pads and quarantines every allocation: RSS measures its allocator, not echod. */
	print_message("  [%s] RSS bound not checked under AddressSanitizer\n", test_backend_name());
#else
	assert_true(per_conn <= bound);
#endif
	assert_true(hello_echoed(c.port)); /* and the others are still served */
	proc_stop(&h, SIGTERM, 5000);
	proc_cleanup(&h);
	assert_int_equal(proc_stop(&c, SIGTERM, 15000), 0);
	proc_cleanup(&c);
}

/* Issue 17.3: under load, SIGTERM; every client must get back exactly what the server received
 * from it, then a FIN (no RST), and the stop line must show bytes_in = bytes_out with nothing
 * aborted. io_uring used to drop receives that raced the stop's cancel. */
static void test_sigterm_echoes_everything_received(void **state)
{
	(void)state;
	/* select: every fd below FD_SETSIZE */
	int n = strcmp(test_backend_name(), "select") == 0 ? 900 : 1000;
	struct child c;
	test_start_echod(&c, NULL);
	char portstr[16], nstr[16];
	snprintf(portstr, sizeof(portstr), "%d", c.port);
	snprintf(nstr, sizeof(nstr), "%d", n);
	const char *argv[] = { proc_bin("helper_streams"), portstr, nstr, "20", NULL };
	struct child h;
	assert_int_equal(proc_spawn(&h, argv), 0);
	assert_true(proc_wait_out(&h, "ready", 10000));
	usleep(700 * 1000);
	assert_int_equal(proc_stop(&c, SIGTERM, 15000), 0);
	assert_int_equal(proc_wait(&h, 25000), 0);
	char *out = proc_out(&h), *log = proc_log(&c);
	const char *summary = strstr(out, "streams");
	print_message("  [%s] %s", test_backend_name(), summary ? summary : out);
	double received = test_field(out, "received"), in = test_field(log, "bytes_in"),
	       echoed = test_field(log, "bytes_out");
	assert_true(received > 0);
	assert_true(test_field(out, "eof") == n);
	assert_true(test_field(out, "reset") == 0);
	assert_true(test_field(out, "mismatched") == 0);
	assert_true(test_field(out, "unfinished") == 0);
	assert_true(in == echoed);
	assert_true(received == echoed);
	assert_true(test_field(log, "aborted=") == 0);
	free(out);
	free(log);
	proc_cleanup(&h);
	proc_cleanup(&c);
}

/* Issue 17.6: a refused connection is reset whether or not the client has sent anything (a
 * plain close gave an EOF, which looks like an echo of nothing), and the count of refusals in
 * a burst is logged even when no refusal follows it. */
static void test_refusal_is_reset_and_logged(void **state)
{
	(void)state;
	struct child c;
	test_start_echod(&c, (const char *const[]){ "--max-conns", "1", NULL });
	int keep = tcp_connect(c.port);
	assert_true(keep >= 0);
	assert_int_equal(send_all(keep, "k", 1), 0);
	char x;
	assert_int_equal(recv_exact(keep, &x, 1), 1); /* accepted, so the next ones are refused */
	int refused[3];
	for (int i = 0; i < 3; i++) {
		refused[i] = tcp_connect(c.port);
		assert_true(refused[i] >= 0);
	}
	for (int i = 0; i < 3; i++) {
		errno = 0;
		ssize_t r = recv_retry(refused[i], &x, 1, 0);
		assert_int_equal(r, -1);
		assert_int_equal(errno, ECONNRESET);
		close(refused[i]);
	}
	/* The first refusal is logged at once, the other two within the next second. */
	uint64_t end = now_ms() + 3000;
	while (!proc_log_has(&c, "count=2") && now_ms() < end)
		usleep(50000);
	assert_true(proc_log_has(&c, "reason=max_conns fd="));
	assert_true(proc_log_has(&c, "count=2"));
	close(keep);
	assert_int_equal(proc_stop(&c, SIGTERM, 15000), 0);
	proc_cleanup(&c);
}

/* Issue 9: SIGTERM while accepting fails for want of fds, then one more connection, so the
 * stop's cancel and the accept's EMFILE meet: the listener's final completion is an error.
 * echod used to take it for a reason to back off, never closed the listener, and the drain
 * never ended (io_uring: only SIGKILL stopped it). It must exit within the drain timeout. */
static void test_sigterm_while_out_of_fds_exits(void **state)
{
	(void)state;
	struct child c;
	const char *args[] = { "--listen", "127.0.0.1:0", "--backend", test_backend_name(),
			       "--drain-timeout", "1", NULL };
	int st = 0;
	assert_int_equal(echod_start(&c, 24, &st, args), 0);
	int fds[40], n = 0;
	while (n < 40 && !proc_log_has(&c, "event=accept_backoff")) {
		fds[n] = tcp_connect(c.port);
		if (fds[n] < 0)
			break;
		n++;
		usleep(5000);
	}
	assert_true(proc_log_has(&c, "event=accept_backoff"));
	assert_int_equal(kill(c.pid, SIGTERM), 0);
	int extra = tcp_connect(c.port); /* the accept that races the stop (may be refused) */
	uint64_t t0 = now_ms();
	int rc = proc_wait(&c, 6000);
	print_message("  [%s] %d clients filled the fd table; exit %d after %llu ms\n",
		      test_backend_name(), n, rc, (unsigned long long)(now_ms() - t0));
	assert_int_equal(rc, 0);
	if (extra >= 0)
		close(extra);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	proc_cleanup(&c);
}

static bool write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return false;
	bool ok = fputs(text, f) >= 0;
	return fclose(f) == 0 && ok;
}

/* A network namespace of our own, loopback up, TCP buffers capped at 64 KiB. */
static bool enter_small_buffer_netns(void)
{
	if (unshare(CLONE_NEWNET) < 0)
		return false;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	bool up = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 &&
		  (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) == 0);
	if (s >= 0)
		close(s);
	return up && write_file("/proc/sys/net/ipv4/tcp_wmem", "4096 16384 65536") &&
	       write_file("/proc/sys/net/ipv4/tcp_rmem", "4096 65536 65536");
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	small_buffers = enter_small_buffer_netns();
	if (!small_buffers)
		printf("[ SKIPPED  ] guarantees: stuck-client cases need root (a network namespace "
		       "with small TCP buffers): %s\n", strerror(errno));
	raise_nofile();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_stuck_clients_never_starve_others, test_kill_strays),
		cmocka_unit_test_teardown(test_conn_buffer_bounds_memory, test_kill_strays),
		cmocka_unit_test_teardown(test_sigterm_echoes_everything_received, test_kill_strays),
		cmocka_unit_test_teardown(test_refusal_is_reset_and_logged, test_kill_strays),
		cmocka_unit_test_teardown(test_sigterm_while_out_of_fds_exits, test_kill_strays),
	};
	int failed = test_run_per_backend("guarantees", tests, sizeof(tests) / sizeof(tests[0]));
	return failed ? 1 : 0;
}
