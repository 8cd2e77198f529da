/* test_echoclient.c - the real echoclient binary against a real echod, and against sockets the
 * test holds itself that never answer.
 *
 * - `-i` with a 16 MiB line (far beyond the socket buffers and echod's --conn-buffer) between
 *   two small ones: every echo printed whole, in order. A client that sends the whole line
 *   before reading deadlocks there, so the run is bounded and a hang is a failure.
 * - A listener that never accepts or reads: echoclient gives up after --timeout (default 5 s),
 *   exit 1, one line on stderr saying what timed out; the same for a handshake that never
 *   completes (a listener whose accept queue is full drops the SYN).
 * - Bad --timeout values: exit 64 and one line.
 * Every run is bounded; children are killed by pid (teardown kills what a failed test left).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"
#include "lib_proc.h"

#define BIG_LINE (16u << 20)
#define BIG_RUN_MS 20000 /* a healthy run takes well under a second, even with ASan */

static int held_fds[4] = { -1, -1, -1, -1 }; /* sockets a test holds; closed by teardown */
static int saved_stdin = -1; /* our stdin while a child's is redirected; restored by teardown */

/* Children inherit fd 0: point it at a file for the next runs, until stdin_restore(). */
static void stdin_from(const char *path)
{
	saved_stdin = dup(STDIN_FILENO);
	assert_true(saved_stdin >= 0);
	int in = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(in >= 0);
	assert_int_equal(dup2(in, STDIN_FILENO), STDIN_FILENO);
	close(in);
}

static void stdin_restore(void)
{
	if (saved_stdin < 0)
		return;
	/* No assertion: teardown calls this too, and must not jump. */
	if (dup2(saved_stdin, STDIN_FILENO) < 0)
		print_error("cannot restore stdin: %s\n", strerror(errno));
	close(saved_stdin);
	saved_stdin = -1;
}

static int teardown(void **state)
{
	(void)state;
	stdin_restore();
	int n = proc_kill_strays();
	if (n)
		printf("  killed %d child process(es) a failed test left running\n", n);
	for (size_t i = 0; i < sizeof(held_fds) / sizeof(*held_fds); i++) {
		if (held_fds[i] >= 0)
			close(held_fds[i]);
		held_fds[i] = -1;
	}
	return 0;
}

static char *read_path(const char *path)
{
	struct child tmp = { 0 };
	snprintf(tmp.log_path, sizeof(tmp.log_path), "%s", path);
	return proc_log(&tmp);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* A listener on 127.0.0.1, a free port, that nobody ever accepts from; returns the port. */
static int silent_listener(int backlog, int slot)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	held_fds[slot] = fd;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	return ntohs(sa.sin_port);
}

/* Runs echoclient with args to completion within timeout_ms; returns the status, -1 if it had
 * to be killed, and reports how long it ran. */
static int run_client(const char *const *args, int timeout_ms, struct child *c,
		      uint64_t *elapsed_ms)
{
	const char *argv[16] = { proc_bin("echoclient") };
	int n = 1;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	uint64_t t0 = now_ms();
	int rc = proc_run(argv, timeout_ms, c);
	if (elapsed_ms)
		*elapsed_ms = now_ms() - t0;
	return rc;
}

/* -i: a line of 16 MiB between two short ones, through echod with its default 256 KiB
 * --conn-buffer; each echo is printed whole and in order. */
static void test_interactive_line_larger_than_buffers(void **state)
{
	(void)state;
	struct child d, cl;
	const char *dargs[] = { "--listen", "127.0.0.1:0", NULL };
	assert_int_equal(echod_start(&d, 0, NULL, dargs), 0);

	/* Printable, no newline, not repeating with any short period. */
	char *big = malloc(BIG_LINE);
	assert_non_null(big);
	pattern_fill((uint8_t *)big, BIG_LINE, 17);
	for (size_t i = 0; i < BIG_LINE; i++)
		big[i] = (char)('a' + (unsigned char)big[i] % 26);
	char in_path[64];
	snprintf(in_path, sizeof(in_path), "/tmp/echoclient-test-%d.in", getpid());
	FILE *f = fopen(in_path, "w");
	assert_non_null(f);
	assert_true(fputs("one\n", f) >= 0);
	assert_int_equal(fwrite(big, 1, BIG_LINE, f), BIG_LINE);
	assert_true(fputs("\nthree\n", f) >= 0);
	assert_int_equal(fclose(f), 0);

	char port[8];
	snprintf(port, sizeof(port), "%d", d.port);
	const char *args[] = { "-i", "--port", port, NULL };
	stdin_from(in_path);
	unlink(in_path);
	uint64_t took;
	int rc = run_client(args, BIG_RUN_MS, &cl, &took);
	stdin_restore();
	if (rc != 0) {
		char *err = proc_log(&cl);
		print_error("echoclient -i exited %d after %llu ms%s; stderr: %s\n", rc,
			    (unsigned long long)took,
			    rc == -1 ? " (killed: still running, deadlocked?)" : "", err);
		free(err);
	}
	assert_int_equal(rc, 0);

	char *out = read_path(cl.out_path);
	static const char head[] = "Received 'one'\nReceived '", tail[] = "'\nReceived 'three'\n";
	size_t want = strlen(head) + BIG_LINE + strlen(tail), got = strlen(out);
	if (got != want)
		print_error("stdout is %zu bytes, want %zu\n", got, want);
	assert_int_equal(got, want);
	assert_memory_equal(out, head, strlen(head));
	assert_true(memcmp(out + strlen(head), big, BIG_LINE) == 0);
	assert_string_equal(out + strlen(head) + BIG_LINE, tail);
	free(out);
	free(big);
	proc_cleanup(&cl);
	assert_int_equal(proc_stop(&d, SIGTERM, 10000), 0);
	proc_cleanup(&d);
}

/* Against echod, a fractional --timeout is accepted and changes nothing when echoes come. */
static void test_timeout_with_a_live_server(void **state)
{
	(void)state;
	struct child d, cl;
	const char *args[] = { "--listen", "127.0.0.1:0", NULL };
	assert_int_equal(echod_start(&d, 0, NULL, args), 0);
	char port[8];
	snprintf(port, sizeof(port), "%d", d.port);
	const char *cargs[] = { "--port", port, "--timeout", "0.5", "ping", NULL };
	assert_int_equal(run_client(cargs, 5000, &cl, NULL), 0);
	char *out = read_path(cl.out_path);
	assert_string_equal(out, "Received 'ping'\n");
	free(out);
	proc_cleanup(&cl);
	assert_int_equal(proc_stop(&d, SIGTERM, 10000), 0);
	proc_cleanup(&d);
}

/* A server that completes the handshake (the kernel does) and never answers: after the
 * timeout, exit 1 with exactly `want` on stderr, nothing on stdout. */
static void expect_silent_timeout(const char *const *args, int bound_ms, uint64_t min_ms,
				  const char *want)
{
	struct child cl;
	uint64_t took;
	int rc = run_client(args, bound_ms, &cl, &took);
	char *err = proc_log(&cl), *out = read_path(cl.out_path);
	if (rc != 1 || strcmp(err, want) != 0 || took < min_ms)
		print_error("exit %d after %llu ms (%s), stderr:\n%swant exit 1 after %llu..%d ms, "
			    "stderr:\n%s",
			    rc, (unsigned long long)took, rc == -1 ? "killed: still waiting" : "ran",
			    err, (unsigned long long)min_ms, bound_ms, want);
	assert_int_equal(rc, 1);
	assert_string_equal(err, want);
	assert_int_equal(count_lines(err), 1);
	assert_string_equal(out, "");
	assert_true(took >= min_ms);
	free(err);
	free(out);
	proc_cleanup(&cl);
}

static void test_silent_server_times_out(void **state)
{
	(void)state;
	int p = silent_listener(16, 0);
	char port[8], want[160];
	snprintf(port, sizeof(port), "%d", p);
	snprintf(want, sizeof(want),
		 "echoclient: no echo from 127.0.0.1:%d within 1 s (is it an echo server? raise "
		 "--timeout)\n",
		 p);
	const char *args[] = { "--port", port, "--timeout", "1", NULL };
	expect_silent_timeout(args, 1000 + 2000, 900, want);
}

/* Without --timeout the wait is 5 s, not forever. */
static void test_silent_server_default_timeout(void **state)
{
	(void)state;
	int p = silent_listener(16, 0);
	char port[8], want[160];
	snprintf(port, sizeof(port), "%d", p);
	snprintf(want, sizeof(want),
		 "echoclient: no echo from 127.0.0.1:%d within 5 s (is it an echo server? raise "
		 "--timeout)\n",
		 p);
	const char *args[] = { "--port", port, "-i", NULL };
	/* -i too: the wait for an echo is bounded there as well (stdin: one line). */
	char in_path[64];
	snprintf(in_path, sizeof(in_path), "/tmp/echoclient-test-%d.in", getpid());
	FILE *f = fopen(in_path, "w");
	assert_non_null(f);
	assert_true(fputs("anyone there?\n", f) >= 0);
	assert_int_equal(fclose(f), 0);
	stdin_from(in_path);
	unlink(in_path);
	expect_silent_timeout(args, 5000 + 2000, 4900, want);
	stdin_restore();
}

/* A handshake that never completes: a listener with backlog 0 and one connection queued has a
 * full accept queue, and Linux then drops new SYNs (the client retries for two minutes). */
static void test_connect_times_out(void **state)
{
	(void)state;
	int p = silent_listener(0, 0);
	held_fds[1] = tcp_connect(p);
	assert_true(held_fds[1] >= 0);
	/* The listener is readable once that connection sits in its accept queue. */
	struct pollfd pfd = { .fd = held_fds[0], .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 2000), 1);
	char port[8], want[200];
	snprintf(port, sizeof(port), "%d", p);
	snprintf(want, sizeof(want),
		 "echoclient: cannot connect to 127.0.0.1:%d within 1 s (no answer to the "
		 "handshake: is the address right, or the server swamped? raise --timeout)\n",
		 p);
	const char *args[] = { "--port", port, "--timeout", "1", NULL };
	expect_silent_timeout(args, 1000 + 2000, 900, want);
}

/* Bad values: exit 64, one line naming --timeout, nothing on stdout, no connection tried
 * (port 1: a connection attempt would say "Connection refused" and exit 1). */
static void test_bad_timeout_exits_64(void **state)
{
	(void)state;
	static const char *const bad[] = { "0", "0.0", "-1", "-0.5", "abc", "", "5x", " 5",
					   "nan", "inf", "1e-9", "86401" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct child cl;
		const char *args[] = { "--port", "1", "--timeout", bad[i], NULL };
		int rc = run_client(args, 5000, &cl, NULL);
		char *err = proc_log(&cl), *out = read_path(cl.out_path);
		if (rc != 64 || count_lines(err) != 1 || !strstr(err, "--timeout") || *out)
			print_error("--timeout '%s': exit %d, stderr:\n%s", bad[i], rc, err);
		assert_int_equal(rc, 64);
		assert_int_equal(count_lines(err), 1);
		assert_non_null(strstr(err, "--timeout"));
		assert_string_equal(out, "");
		free(err);
		free(out);
		proc_cleanup(&cl);
	}
	/* No value at all: the same. */
	struct child cl;
	const char *args[] = { "--port", "1", "--timeout", NULL };
	assert_int_equal(run_client(args, 5000, &cl, NULL), 64);
	char *err = proc_log(&cl);
	assert_int_equal(count_lines(err), 1);
	assert_non_null(strstr(err, "--timeout"));
	free(err);
	proc_cleanup(&cl);
	/* --help documents it. */
	const char *help[] = { "--help", NULL };
	assert_int_equal(run_client(help, 5000, &cl, NULL), 0);
	char *out = read_path(cl.out_path);
	assert_non_null(strstr(out, "--timeout S"));
	free(out);
	proc_cleanup(&cl);
}

/* --probe, as an exec health check runs it: 0 and silent against echod; 1 with one line when
 * the server accepts and never echoes; 2 with one line when nothing accepts; 64 with -i. */
static void test_probe_exit_codes(void **state)
{
	(void)state;
	struct child d, cl;
	const char *dargs[] = { "--listen", "127.0.0.1:0", NULL };
	assert_int_equal(echod_start(&d, 0, NULL, dargs), 0);
	char port[8];
	snprintf(port, sizeof(port), "%d", d.port);
	const char *up[] = { "--port", port, "--probe", "--timeout", "2", NULL };
	assert_int_equal(run_client(up, 5000, &cl, NULL), 0);
	char *out = read_path(cl.out_path), *err = proc_log(&cl);
	assert_string_equal(out, "");
	assert_string_equal(err, "");
	free(out);
	free(err);
	proc_cleanup(&cl);
	const char *msg[] = { "--port", port, "--probe", "custom", NULL };
	assert_int_equal(run_client(msg, 5000, &cl, NULL), 0);
	proc_cleanup(&cl);
	assert_int_equal(proc_stop(&d, SIGTERM, 10000), 0);
	/* Two probes: each one message of its own, echoed (and no other traffic). */
	assert_int_equal(test_stop_count(&d, "accepted="), 2);
	proc_cleanup(&d);

	int p = silent_listener(16, 0);
	snprintf(port, sizeof(port), "%d", p);
	const char *silent[] = { "--port", port, "--probe", "--timeout", "0.3", NULL };
	assert_int_equal(run_client(silent, 5000, &cl, NULL), 1);
	err = proc_log(&cl);
	assert_int_equal(count_lines(err), 1);
	assert_non_null(strstr(err, "no echo from"));
	free(err);
	proc_cleanup(&cl);

	char down[8];
	snprintf(down, sizeof(down), "%d", free_port(SOCK_STREAM));
	const char *refused[] = { "--port", down, "--probe", NULL };
	assert_int_equal(run_client(refused, 5000, &cl, NULL), 2);
	err = proc_log(&cl);
	assert_int_equal(count_lines(err), 1);
	assert_non_null(strstr(err, "Connection refused"));
	free(err);
	proc_cleanup(&cl);

	const char *both[] = { "--probe", "-i", NULL };
	assert_int_equal(run_client(both, 5000, &cl, NULL), 64);
	proc_cleanup(&cl);
}

/* A port getaddrinfo would wrap (99999) or look up as a service name is refused up front. */
static void test_bad_port_exits_64(void **state)
{
	(void)state;
	static const char *const bad[] = { "0", "65536", "99999", "-1", "echo", "", "7x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct child cl;
		const char *args[] = { "--port", bad[i], NULL };
		int rc = run_client(args, 5000, &cl, NULL);
		char *err = proc_log(&cl);
		if (rc != 64 || count_lines(err) != 1 || !strstr(err, "--port"))
			print_error("--port '%s': exit %d, stderr:\n%s", bad[i], rc, err);
		assert_int_equal(rc, 64);
		assert_int_equal(count_lines(err), 1);
		free(err);
		proc_cleanup(&cl);
	}
	struct child cl;
	const char *version[] = { "--version", NULL };
	assert_int_equal(run_client(version, 5000, &cl, NULL), 0);
	char *out = read_path(cl.out_path);
	assert_true(strncmp(out, "echoclient ", 11) == 0);
	free(out);
	proc_cleanup(&cl);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_interactive_line_larger_than_buffers, teardown),
		cmocka_unit_test_teardown(test_timeout_with_a_live_server, teardown),
		cmocka_unit_test_teardown(test_silent_server_times_out, teardown),
		cmocka_unit_test_teardown(test_silent_server_default_timeout, teardown),
		cmocka_unit_test_teardown(test_connect_times_out, teardown),
		cmocka_unit_test_teardown(test_bad_timeout_exits_64, teardown),
		cmocka_unit_test_teardown(test_probe_exit_codes, teardown),
		cmocka_unit_test_teardown(test_bad_port_exits_64, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
