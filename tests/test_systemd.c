/* test_systemd.c - echod as systemd starts it, with systemd's own tools, no init needed:
 * sockets passed by `systemd-socket-activate` (TCP, UDP, Unix, several at once, shared by two
 * workers; kinds echod cannot serve refused), the sd_notify protocol read from a socket the
 * test binds (READY=1 only once echod accepts, STOPPING=1 at SIGTERM, WATCHDOG=1 while the
 * workers answer), and --user. A tool or a privilege this machine lacks: one line, skipped.
 */
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"
#include "metrics_http.h"

static const char *activate_bin(void)
{
	static const char *const where[] = { "/usr/bin/systemd-socket-activate",
					     "/bin/systemd-socket-activate",
					     "/usr/lib/systemd/systemd-socket-activate" };
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++)
		if (access(where[i], X_OK) == 0)
			return where[i];
	return NULL;
}

static const char *need_activate(void)
{
	const char *bin = activate_bin();
	if (!bin) {
		print_message("  [%s] skipped: systemd-socket-activate is not installed (the systemd "
			      "package; tools/install-deps installs it)\n", test_backend_name());
		skip();
	}
	return bin;
}

/* systemd-socket-activate ARGS... -- echod on the current backend plus `extra`; returns once
 * it says it listens (it starts echod at the first connection or datagram). */
static void activate(struct child *c, const char *const *sa_args, const char *const *extra)
{
	const char *argv[40] = { need_activate() };
	int n = 1;
	for (int i = 0; sa_args[i]; i++)
		argv[n++] = sa_args[i];
	argv[n++] = proc_bin("echod");
	argv[n++] = "--backend";
	argv[n++] = test_backend_name();
	for (int i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	assert_int_equal(proc_spawn(c, argv), 0);
	uint64_t end = now_ms() + 5000;
	while (!proc_log_has(c, "Listening on") && now_ms() < end)
		usleep(10000);
	assert_true(proc_log_has(c, "Listening on"));
}

static void tcp_echo(int port, const char *what)
{
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	size_t n = strlen(what);
	assert_int_equal(send_all(fd, what, n), 0);
	char back[64];
	assert_int_equal(recv_exact(fd, back, n), (ssize_t)n);
	assert_memory_equal(back, what, n);
	close(fd);
}

static void stop(struct child *c)
{
	int st = proc_stop(c, SIGTERM, 10000);
	if (st != 0) {
		char *log = proc_log(c);
		print_error("[%s] exit %d:\n%s\n", test_backend_name(), st, log);
		free(log);
	}
	assert_int_equal(st, 0);
}

static void test_passed_tcp_ipv6_and_unix(void **state)
{
	(void)state;
	int port = free_port(SOCK_STREAM), port6 = free_port(SOCK_STREAM);
	char l1[32], l6[32], path[64];
	snprintf(l1, sizeof(l1), "127.0.0.1:%d", port);
	snprintf(l6, sizeof(l6), "[::1]:%d", port6);
	snprintf(path, sizeof(path), "/tmp/echod-sa-%d.sock", (int)getpid());
	unlink(path);
	const char *sa[] = { "-l", l1, "-l", path, "-l", l6, "--fdname=echo:local:echo6", NULL };
	struct child c;
	activate(&c, sa, NULL);
	tcp_echo(port, "over the passed TCP socket");
	int fd6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 to6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port6),
				    .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	assert_int_equal(connect_retry(fd6, (struct sockaddr *)&to6, sizeof(to6)), 0);
	assert_int_equal(send_all(fd6, "over IPv6", 9), 0);
	char back6[9];
	assert_int_equal(recv_exact(fd6, back6, 9), 9);
	assert_memory_equal(back6, "over IPv6", 9);
	close(fd6);
	proc_unix_path = path;
	tcp_echo(0, "over the passed Unix socket");
	proc_unix_path = NULL;
	stop(&c);
	char want[96];
	snprintf(want, sizeof(want), "event=listening addr=127.0.0.1:%d from=service_manager "
		 "name=\"echo\"", port);
	assert_true(proc_log_has(&c, want));
	assert_true(proc_log_has(&c, "from=service_manager name=\"local\""));
	snprintf(want, sizeof(want), "event=listening addr=[::1]:%d from=service_manager "
		 "name=\"echo6\"", port6);
	assert_true(proc_log_has(&c, want));
	/* The default address is not bound when sockets are passed. */
	assert_false(proc_log_has(&c, "addr=127.0.0.1:65432"));
	proc_cleanup(&c);
	unlink(path);
}

static void test_passed_udp(void **state)
{
	(void)state;
	int port = free_port(SOCK_DGRAM);
	char l1[32];
	snprintf(l1, sizeof(l1), "127.0.0.1:%d", port);
	const char *sa[] = { "--datagram", "-l", l1, NULL };
	const char *extra[] = { "--udp-rate", "0", NULL };
	struct child c;
	activate(&c, sa, extra);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { .tv_sec = 3 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (int i = 0; i < 20; i++) {
		char msg[16], back[16];
		int n = snprintf(msg, sizeof(msg), "datagram %d", i);
		assert_int_equal(sendto_retry(fd, msg, (size_t)n, 0, (struct sockaddr *)&to, sizeof(to)), n);
		assert_int_equal(recv_retry(fd, back, sizeof(back), 0), n);
		assert_memory_equal(back, msg, (size_t)n);
	}
	close(fd);
	stop(&c);
	assert_int_equal(test_stop_count(&c, "udp_echoed="), 20);
	proc_cleanup(&c);
}

/* A kind echod cannot serve is one line and exit 71, not a half-served unit. */
static void test_passed_unix_datagram_refused(void **state)
{
	(void)state;
	char path[64];
	snprintf(path, sizeof(path), "/tmp/echod-sa-dg-%d.sock", (int)getpid());
	unlink(path);
	const char *sa[] = { "--datagram", "-l", path, NULL };
	struct child c;
	activate(&c, sa, NULL);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	assert_int_equal(sendto_retry(fd, "x", 1, 0, (struct sockaddr *)&un, sizeof(un)), 1);
	close(fd);
	assert_int_equal(proc_wait(&c, 5000), 71);
	assert_true(proc_log_has(&c, "echod: passed fd 3 is a Unix datagram socket; echod serves "
				     "TCP and Unix stream listeners and UDP sockets\n"));
	proc_cleanup(&c);
	unlink(path);
}

/* The metrics line's port, then the sum of a family's samples per worker. */
static int metrics_port(const struct child *c)
{
	char *log = proc_log(c);
	const char *p = strstr(log, "event=metrics addr=127.0.0.1:");
	int port = p ? atoi(p + strlen("event=metrics addr=127.0.0.1:")) : -1;
	free(log);
	return port;
}

static char *http_get(int port, const char *path)
{
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	char req[128];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	assert_int_equal(send_all(fd, req, (size_t)n), 0);
	size_t cap = 1 << 20, len = 0;
	char *body = malloc(cap);
	len = recv_to_eof(fd, body, cap - 1);
	body[len] = '\0';
	close(fd);
	return body;
}

/* --threads 2 on ONE passed listener: both workers take connections (each has a dup of it). */
static void test_threads_share_passed_listener(void **state)
{
	(void)state;
	int port = free_port(SOCK_STREAM);
	char l1[32];
	snprintf(l1, sizeof(l1), "127.0.0.1:%d", port);
	const char *sa[] = { "-l", l1, NULL };
	/* The split is read from /metrics; an echod without the metrics port still serves. */
	bool metrics = metrics_http_available();
	const char *extra[] = { "--threads", "2", metrics ? "--metrics" : NULL, "127.0.0.1:0",
				NULL };
	struct child c;
	activate(&c, sa, extra);
	enum { N = 200 };
	int fds[N];
	for (int i = 0; i < N; i++) {
		fds[i] = tcp_connect(port);
		assert_true(fds[i] >= 0);
		assert_int_equal(send_all(fds[i], "x", 1), 0);
		char b;
		assert_int_equal(recv_exact(fds[i], &b, 1), 1);
	}
	int mport = metrics ? metrics_port(&c) : -1;
	if (mport < 0) {
		for (int i = 0; i < N; i++)
			close(fds[i]);
		stop(&c);
		proc_cleanup(&c);
		print_message("  [%s] skipped the split: this echod has no --metrics\n",
			      test_backend_name());
		return;
	}
	char *text = http_get(mport, "/metrics");
	double w[2];
	for (int i = 0; i < 2; i++) {
		char key[96];
		snprintf(key, sizeof(key), "echod_connections_accepted_total{worker=\"%d\"}", i);
		w[i] = test_field(text, key);
	}
	free(text);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	stop(&c);
	proc_cleanup(&c);
	print_message("  [%s] one passed listener, 2 workers: %.0f and %.0f of %d connections\n",
		      test_backend_name(), w[0], w[1], N);
	assert_int_equal(w[0] + w[1], N);
	assert_true(w[0] > 0 && w[1] > 0);
}

/* ---- sd_notify ------------------------------------------------------------------------------ */

/* A Unix datagram socket standing in for systemd's notification socket. */
static int notify_socket(char *path, size_t len)
{
	snprintf(path, len, "/tmp/echod-notify-%d.sock", (int)getpid());
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
	return fd;
}

/* The next notification within timeout_ms ("" on timeout). */
static void next_note(int fd, char *buf, size_t len, int timeout_ms)
{
	buf[0] = '\0';
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, timeout_ms) != 1)
		return;
	ssize_t n = recv_retry(fd, buf, len - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
}

static void test_notify_ready_then_stopping(void **state)
{
	(void)state;
	char path[64], note[512];
	int nfd = notify_socket(path, sizeof(path));
	setenv("NOTIFY_SOCKET", path, 1);
	setenv("WATCHDOG_USEC", "400000", 1); /* WATCHDOG=1 every 200 ms while workers answer */
	struct child c;
	const char *extra[] = { "--threads", "2", NULL };
	test_start_echod(&c, extra);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	next_note(nfd, note, sizeof(note), 5000);
	assert_non_null(strstr(note, "READY=1"));
	assert_non_null(strstr(note, "STATUS=serving: backend="));
	/* READY=1 means accepting: a connection made now is echoed. */
	assert_true(hello_echoed(c.port));
	next_note(nfd, note, sizeof(note), 2000);
	assert_non_null(strstr(note, "WATCHDOG=1"));
	assert_non_null(strstr(note, "answering=2"));
	assert_int_equal(kill(c.pid, SIGTERM), 0);
	bool stopping = false;
	for (int i = 0; i < 10 && !stopping; i++) {
		next_note(nfd, note, sizeof(note), 2000);
		assert_null(strstr(note, "READY=1"));
		stopping = strstr(note, "STOPPING=1") != NULL;
	}
	assert_true(stopping);
	assert_int_equal(proc_wait(&c, 10000), 0);
	proc_cleanup(&c);
	close(nfd);
	unlink(path);
}

/* ---- --user --------------------------------------------------------------------------------- */

static void test_user_drops_root(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		print_message("  [%s] skipped: --user needs a start as root\n", test_backend_name());
		skip();
	}
	struct passwd *pw = getpwnam("nobody");
	if (!pw) {
		print_message("  [%s] skipped: no user 'nobody' here\n", test_backend_name());
		skip();
	}
	uid_t uid = pw->pw_uid;
	struct child c;
	char path[64], spec[80];
	snprintf(path, sizeof(path), "/tmp/echod-user-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", path);
	unlink(path);
	const char *extra[] = { "--user", "nobody", "--listen", spec, NULL };
	test_start_echod(&c, extra);
	assert_true(hello_echoed(c.port));
	char status_path[64];
	snprintf(status_path, sizeof(status_path), "/proc/%d/status", (int)c.pid);
	FILE *f = fopen(status_path, "r");
	assert_non_null(f);
	char line[256];
	unsigned ruid = 0, euid = 0, suid = 0, fsuid = 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u %u %u %u", &ruid, &euid, &suid, &fsuid) == 4)
			break;
	fclose(f);
	/* Real, effective and saved: no way back to 0. */
	assert_int_equal(ruid, uid);
	assert_int_equal(euid, uid);
	assert_int_equal(suid, uid);
	assert_false(proc_log_has(&c, "event=running_as_root"));
	stop(&c);
	proc_cleanup(&c);
	/* Its socket file was handed to the user too, so the unprivileged echod removed it. */
	assert_int_equal(access(path, F_OK), -1);
	const char *bad[] = { "--user", "no-such-user-here", NULL };
	int st = -1;
	assert_int_equal(test_try_start_echod(&c, bad, &st), -1);
	assert_int_equal(st, 64);
	assert_true(proc_log_has(&c, "echod: --user: no user 'no-such-user-here' here\n"));
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_passed_tcp_ipv6_and_unix, test_kill_strays),
		cmocka_unit_test_teardown(test_passed_udp, test_kill_strays),
		cmocka_unit_test_teardown(test_passed_unix_datagram_refused, test_kill_strays),
		cmocka_unit_test_teardown(test_threads_share_passed_listener, test_kill_strays),
		cmocka_unit_test_teardown(test_notify_ready_then_stopping, test_kill_strays),
		cmocka_unit_test_teardown(test_user_drops_root, test_kill_strays),
	};
	return test_run_per_backend("systemd", tests, sizeof(tests) / sizeof(tests[0])) ? 1 : 0;
}
