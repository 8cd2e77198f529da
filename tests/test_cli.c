/* test_cli.c - the real echod binary's answer to bad flag values: exit 64 and exactly one
 * line on stderr naming the flag and what it accepts, instead of serving with a wrapped value
 * (exit 0 later) or failing to listen (exit 71). And the addresses that must keep working. */
#include <arpa/inet.h>
#include <netinet/in.h>
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

#include "lib_proc.h"

/* Long enough for a loaded machine (and ASan) to start and refuse; an old echod that takes
 * the value starts serving instead and is killed at the deadline (proc_run returns -1). */
#define RUN_MS 5000

/* Run echod with args (on an ephemeral port, so an echod that wrongly accepts the value
 * does not take the default one) and require exit 64 with one line that starts with
 * "echod: <prefix>", contains `needle` and ends with the --help pointer. */
static void expect_usage(const char *const *args, const char *prefix, const char *needle)
{
	const char *argv[16] = { proc_bin("echod"), "--log-level", "error" };
	int n = 3;
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	bool has_listen = false;
	for (int i = 0; args[i]; i++)
		has_listen |= strcmp(args[i], "--listen") == 0;
	if (!has_listen) {
		argv[n++] = "--listen";
		argv[n++] = "127.0.0.1:0";
	}
	argv[n] = NULL;
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *log = proc_log(&c);
	char want[512];
	snprintf(want, sizeof(want), "echod: %s", prefix);
	static const char tail[] = "; see 'echod --help'\n";
	const char *nl = strchr(log, '\n');
	if (rc != 64 || strncmp(log, want, strlen(want)) != 0 || !strstr(log, needle) || !nl ||
	    nl[1] != '\0' || (size_t)(nl + 1 - log) < sizeof(tail) - 1 ||
	    strcmp(nl + 2 - sizeof(tail), tail) != 0) {
		char line[512] = "";
		for (int i = 0; args[i]; i++)
			snprintf(line + strlen(line), sizeof(line) - strlen(line), " %s", args[i]);
		if (rc == -1)
			print_error("echod%s: still running after %d ms (it took the value and "
				    "served; killed), want exit 64; stderr:\n%s", line, RUN_MS, log);
		else
			print_error("echod%s: exit %d, want 64 and one line; stderr:\n%s", line, rc,
				    log);
		free(log);
		proc_cleanup(&c);
		fail();
	}
	free(log);
	proc_cleanup(&c);
}

static int teardown(void **state)
{
	(void)state;
	proc_kill_strays();
	return 0;
}

/* Point 1: K/M multiplies that wrapped, and values past 2^64. */
static void test_sizes_out_of_range(void **state)
{
	(void)state;
	expect_usage((const char *[]){ "--buffer-size", "18014398509481985K", NULL },
		     "--buffer-size: 18014398509481985K is out of range (512 to 1M)", "");
	expect_usage((const char *[]){ "--buffer-size", "17592186044417M", NULL },
		     "--buffer-size: 17592186044417M is out of range (512 to 1M)", "");
	expect_usage((const char *[]){ "--conn-buffer", "17592186044480M", NULL },
		     "--conn-buffer: 17592186044480M is out of range (1K to 64M)", "");
	expect_usage((const char *[]){ "--conn-buffer", "18446744073709551617", NULL },
		     "--conn-buffer: 18446744073709551617 is out of range (1K to 64M)", "");
}

/* Point 2: addresses that are not addresses, or do not resolve, are usage errors. */
static void test_bad_addresses(void **state)
{
	(void)state;
	expect_usage((const char *[]){ "--listen", "1.2.3.4.5:1", NULL },
		     "--listen: 1.2.3.4.5:1 is not a valid address: ", "HOST:PORT or [IPv6]:PORT");
	expect_usage((const char *[]){ "--listen", "999.0.0.1:0", NULL },
		     "--listen: 999.0.0.1:0 is not a valid address: ", "HOST:PORT or [IPv6]:PORT");
	expect_usage((const char *[]){ "--listen", " 127.0.0.1:0", NULL },
		     "--listen: ' 127.0.0.1:0' is not a valid address: ", "HOST:PORT or [IPv6]:PORT");
	expect_usage((const char *[]){ "--listen", "nonexistent.invalid:0", NULL },
		     "--listen: nonexistent.invalid:0 cannot be resolved: ",
		     "HOST:PORT or [IPv6]:PORT");
	expect_usage((const char *[]){ "--listen", "[::zz]:0", NULL },
		     "--listen: [::zz]:0 is not a valid address: ", "HOST:PORT or [IPv6]:PORT");
	char h127[140], h300[320];
	memset(h127, 'a', 127);
	strcpy(h127 + 127, ":0");
	expect_usage((const char *[]){ "--listen", h127, NULL }, "--listen: ",
		     "is not a valid address");
	memset(h300, 'b', 300);
	strcpy(h300 + 300, ":0");
	expect_usage((const char *[]){ "--listen", h300, NULL }, "--listen: host ",
		     "is 300 characters, too long (at most 253)");
	/* A newline in a value cannot split the line. */
	expect_usage((const char *[]){ "--listen", "a\nb:0", NULL },
		     "--listen: 'a\\x0ab:0' is not a valid address: ", "HOST:PORT");
}

/* Point 3: a timeout below 1 ms rounded to 0 (never); strtod took hex, exponents, inf. */
static void test_bad_timeouts(void **state)
{
	(void)state;
	expect_usage((const char *[]){ "--idle-timeout", "0.0004", NULL },
		     "--idle-timeout: 0.0004 is below 1 ms; the smallest timeout is 0.001", "");
	expect_usage((const char *[]){ "--drain-timeout", "0.0004", NULL },
		     "--drain-timeout: 0.0004 is below 1 ms; the smallest timeout is 0.001", "");
	expect_usage((const char *[]){ "--idle-timeout", "0x10", NULL },
		     "--idle-timeout: 0x10 is not a number of seconds", "decimals like 1.5");
	expect_usage((const char *[]){ "--idle-timeout", "1e3", NULL },
		     "--idle-timeout: 1e3 is not a number of seconds", "decimals like 1.5");
	expect_usage((const char *[]){ "--drain-timeout", "inf", NULL },
		     "--drain-timeout: inf is not a number of seconds", "(expected 0 to 3600");
}

/* Point 4: the other number flags, and option words getopt reports as '?'. */
static void test_other_garbage(void **state)
{
	(void)state;
	expect_usage((const char *[]){ "--list-backends=1", NULL },
		     "option '--list-backends' takes no value", "");
	expect_usage((const char *[]){ "--listen", "--threads", NULL },
		     "option '--listen' needs a value (got --threads)", "");
	expect_usage((const char *[]){ "--threads", "0", NULL },
		     "--threads: 0 is out of range (1 to 256)", "");
	expect_usage((const char *[]){ "--threads", "99999999999999999999", NULL },
		     "--threads: 99999999999999999999 is out of range (1 to 256)", "");
	expect_usage((const char *[]){ "--max-conns", "-1", NULL },
		     "--max-conns: -1 is out of range (1 to 1000000)", "");
	expect_usage((const char *[]){ "--buffers", "1e3", NULL },
		     "--buffers: 1e3 is not a whole number (expected 16 to 32768)", "");
	expect_usage((const char *[]){ "--threads", "4 ", NULL },
		     "--threads: '4 ' is not a whole number", "");
}

static bool ipv6_loopback(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* The forms that must keep working: numeric IPv4, a name that resolves, the wildcard, and
 * IPv6 in brackets, all in one process; and the smallest timeouts are accepted. */
static void test_good_addresses_serve(void **state)
{
	(void)state;
	bool v6 = ipv6_loopback();
	const char *args[] = { "--listen", "0.0.0.0:0", "--listen", "localhost:0", "--listen",
			       "127.0.0.1:0", "--idle-timeout", "0.001", "--drain-timeout",
			       "1.5", v6 ? "--listen" : NULL, "[::1]:0", NULL };
	struct child c;
	int status = -1;
	if (echod_start(&c, 0, &status, args) < 0) {
		char *log = proc_log(&c);
		print_error("echod did not start (exit %d):\n%s", status, log);
		free(log);
		fail();
	}
	assert_int_equal(proc_log_has(&c, "addr=0.0.0.0:"), true);
	assert_int_equal(proc_log_has(&c, "idle_timeout_ms=1 "), true);
	assert_int_equal(proc_log_has(&c, "drain_timeout_ms=1500"), true);
	if (v6)
		assert_int_equal(proc_log_has(&c, "addr=[::1]:"), true);
	assert_true(hello_echoed(c.port));
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	proc_cleanup(&c);
}

/* `echod --list-backends`: under each io_uring backend that runs here, one indented line
 * naming each newer feature with its state, "on" (available and used), "available, off" or
 * "not in this kernel", and the batched-wait and set-up settings; nothing under the others.
 * Every kernel that runs the `uring` backend (multishot recv, 6.0) registers ring fds (5.18),
 * so there ring fd registration is "on" for both io_uring backends. */
static void test_list_backends_io_uring_features(void **state)
{
	(void)state;
#ifndef ECHOD_HAVE_URING
	print_message("  no io_uring backend in this build (no liburing): nothing to describe\n");
	skip();
#else
	static const char *const features[] = { "registered ring fd", "direct accept",
						"recv bundles", "incremental buffers", "min-wait",
						"nodrop", "submit-stable" };
	static const char *const states[] = { "on", "available, off", "not in this kernel" };
	const char *argv[] = { proc_bin("echod"), "--list-backends", NULL };
	struct child c;
	assert_int_equal(proc_run(argv, RUN_MS, &c), 0);
	char *out = proc_out(&c);
	proc_cleanup(&c);
	bool uring_runs = false;
	int described = 0;
	char *save = NULL;
	char *lines[32];
	int n = 0;
	for (char *l = strtok_r(out, "\n", &save); l && n < 32; l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	for (int i = 1; i < n; i++) {
		char name[32] = "", runs[8] = "";
		if (lines[i][0] == ' ' || sscanf(lines[i], "%31s %*d %7s", name, runs) != 2)
			continue;
		bool io_uring = strcmp(name, "uring") == 0 || strcmp(name, "uring-poll") == 0;
		const char *next = i + 1 < n ? lines[i + 1] : "";
		bool has_detail = strncmp(next, "    ", 4) == 0;
		if (!io_uring || strcmp(runs, "yes") != 0) {
			if (has_detail)
				fail_msg("%s: a line under it: %s", name, next);
			continue;
		}
		uring_runs |= strcmp(name, "uring") == 0;
		print_message("  %s\n  %s\n", lines[i], next);
		if (strncmp(next, "    io_uring: ", 14) != 0)
			fail_msg("%s: no io_uring line under it (got: %s)", name, next);
		described++;
		/* Each feature once, as "NAME STATE", clauses separated by "; ". */
		for (size_t f = 0; f < sizeof(features) / sizeof(features[0]); f++) {
			char key[64];
			snprintf(key, sizeof(key), "; %s ", features[f]);
			const char *at = strstr(next, key);
			if (f == 0 && !at) { /* the first clause follows "io_uring: " */
				snprintf(key, sizeof(key), "io_uring: %s ", features[f]);
				at = strstr(next, key);
			}
			if (!at)
				fail_msg("%s: feature '%s' missing: %s", name, features[f], next);
			const char *st = at + strlen(key);
			bool ok = false;
			for (size_t k = 0; k < sizeof(states) / sizeof(states[0]) && !ok; k++) {
				size_t len = strlen(states[k]);
				ok = strncmp(st, states[k], len) == 0 &&
				     (st[len] == ';' || st[len] == '\0' || st[len] == ' ');
			}
			if (!ok)
				fail_msg("%s: feature '%s' has no allowed state: %s", name,
					 features[f], st);
		}
		assert_non_null(strstr(next, "; batched wait "));
		assert_non_null(strstr(next, "; set-up "));
		/* uring comes first in the table, so uring-poll is checked too. */
		if (uring_runs)
			assert_non_null(strstr(next, "io_uring: registered ring fd on;"));
	}
	free(out);
	if (described == 0) {
		print_message("  io_uring cannot run here: no feature line to check\n");
		skip();
	}
#endif
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_sizes_out_of_range, teardown),
		cmocka_unit_test_teardown(test_bad_addresses, teardown),
		cmocka_unit_test_teardown(test_bad_timeouts, teardown),
		cmocka_unit_test_teardown(test_other_garbage, teardown),
		cmocka_unit_test_teardown(test_good_addresses_serve, teardown),
		cmocka_unit_test_teardown(test_list_backends_io_uring_features, teardown),
	};
	return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
