/* test_exhaustion.c - echod when a resource runs out, on every backend: memory that cannot be
 * had (a small RLIMIT_AS, set on the running echod) costs only the connections that need more
 * of it, and 10,000 connections that send a byte and never read stay within the documented
 * memory bound. (Descriptors running out, with a connection storm: test_integration's
 * test_emfile_backs_off.) */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib_backends.h"

/* 40 stuck clients want 4 MiB of echo buffer each (--conn-buffer 4M: 160 MiB in all, more
 * than the 64 MiB heap glibc reserves per thread) while echod may map only 8 MiB more than it
 * has: most of them cannot get it. Each that cannot is closed, counted and logged (at most
 * a line a second); everyone else is served, and echod stops cleanly. Before, a connection
 * that could not get its buffer kept the pool's buffers instead, and once the pool ran dry
 * nobody was served. */
static void test_address_space_runs_out(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__)
	print_message("  [%s] skipped: AddressSanitizer reserves terabytes of address space, so "
		      "RLIMIT_AS cannot bound echod's allocations\n", test_backend_name());
	return;
#endif
	struct child c;
	test_start_echod(&c, (const char *const[]){ "--buffers", "64", "--buffer-size", "8K",
					 "--conn-buffer", "4M", "--drain-timeout", "0.5", NULL });
	assert_true(hello_echoed(c.port));
	long vm = proc_status_kb(c.pid, "VmSize");
	assert_true(vm > 0);
	struct rlimit rl = { .rlim_cur = (rlim_t)(vm + 8192) * 1024,
			     .rlim_max = (rlim_t)(vm + 8192) * 1024 };
	assert_int_equal(prlimit(c.pid, RLIMIT_AS, &rl, NULL), 0);
	char port[16];
	snprintf(port, sizeof(port), "%d", c.port);
	struct child h;
	const char *argv[] = { proc_bin("helper_stuckclients"), port, "40", "4194304", NULL };
	assert_int_equal(proc_spawn(&h, argv), 0);
	assert_true(proc_wait_out(&h, "stuck ", 15000));
	/* The others: served, byte-exact, now. */
	struct test_rate r = test_echo_rate(c.port, 10, 0.3);
	print_message("  [%s] address space capped at +8 MiB, 40 stuck clients: %.0f msgs/s for "
		      "the others\n", test_backend_name(), r.msgs_per_s);
	assert_true(r.msgs_per_s > 0);
	assert_true(hello_echoed(c.port));
	proc_stop(&h, SIGTERM, 5000);
	proc_cleanup(&h);
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	double nomem = test_stop_count(&c, "closed_nomem=");
	print_message("  [%s] closed for want of memory: %.0f\n", test_backend_name(), nomem);
	assert_true(nomem > 0);
	char *log = proc_log(&c);
	int lines = 0;
	for (const char *p = log; (p = strstr(p, "event=closed_nomem")); p++)
		lines++;
	free(log);
	assert_true(lines >= 1 && lines <= 3); /* at most one a second */
	proc_cleanup(&c);
}

/* 10,000 connections each send one byte, get it back and never read again: echod's memory
 * grows by at most ECHO_CONN_BYTES (README "Limits": 1 KiB) a connection plus the buffer
 * pool's pages. */
static void test_ten_thousand_idle_connections(void **state)
{
	(void)state;
	enum { N = 10000, POOL = 256, BUF = 8192 };
	if (test_backend->caps & BACKEND_CAP_FD_LIMIT) {
		print_message("  [%s] skipped: holds at most %u connections (test_fd_limit_refusal)\n",
			      test_backend_name(), test_backend->max_fd);
		return;
	}
	raise_nofile();
	struct rlimit nf;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &nf), 0);
	if (nf.rlim_cur < N + 100) {
		print_message("  [%s] skipped: RLIMIT_NOFILE %llu is below %d\n", test_backend_name(),
			      (unsigned long long)nf.rlim_cur, N + 100);
		return;
	}
	struct child c;
	test_start_echod(&c, (const char *const[]){ "--buffers", "256", "--buffer-size", "8K",
					 "--max-conns", "20000", NULL });
	assert_true(hello_echoed(c.port));
	long before = proc_rss_kb(c.pid);
	static int fds[N];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c.port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	uint64_t t0 = now_ms();
	for (int i = 0; i < N; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fds[i] >= 0);
		assert_int_equal(connect_retry(fds[i], (struct sockaddr *)&to, sizeof(to)), 0);
		assert_int_equal(send_retry(fds[i], "x", 1, MSG_NOSIGNAL), 1);
	}
	/* Every byte came back: each connection is held and was served. */
	int back = 0;
	for (int i = 0; i < N && now_ms() - t0 < 20000; i++) {
		char b = 0;
		ssize_t n;
		while ((n = recv_retry(fds[i], &b, 1, MSG_DONTWAIT)) < 0 && errno == EAGAIN &&
		       now_ms() - t0 < 20000)
			usleep(1000);
		back += n == 1 && b == 'x';
	}
	assert_int_equal(back, N);
	long after = proc_rss_kb(c.pid);
	long grew = (after - before) * 1024;
	long bound = (long)N * 1024 + (long)POOL * BUF;
	print_message("  [%s] %d connections held: RSS +%ld KiB, %ld B each (bound %ld B each "
		      "with the pool's pages)\n", test_backend_name(), N, grew / 1024, grew / N,
		      bound / N);
#if defined(__SANITIZE_ADDRESS__)
	print_message("  [%s] RSS bound not checked under AddressSanitizer\n", test_backend_name());
#else
	assert_true(grew <= bound);
#endif
	for (int i = 0; i < N; i++)
		close(fds[i]);
	assert_true(hello_echoed(c.port));
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_address_space_runs_out, test_kill_strays),
		cmocka_unit_test_teardown(test_ten_thousand_idle_connections, test_kill_strays),
	};
	int failed = test_run_per_backend("exhaustion", tests, sizeof(tests) / sizeof(tests[0]));
	return failed ? 1 : 0;
}
