/* test_proxy.c - --proxy-protocol on the real echod, every backend: v1 and v2 headers whole,
 * a byte at a time and with data behind them; the refusals (malformed, oversized, missing,
 * too slow); a Unix listener; and Debian's real HAProxy in front with send-proxy and
 * send-proxy-v2 (skipped, with one line, where haproxy is not installed).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"
#include "lib_haproxy.h"

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* v2 PROXY over TCP/IPv4 from src:sport to 127.0.0.1:7; returns its length. */
static size_t v2_inet(uint8_t *h, const char *src, uint16_t sport)
{
	memcpy(h, v2_sig, 12);
	h[12] = 0x21; /* version 2, PROXY */
	h[13] = 0x11; /* AF_INET, STREAM */
	h[14] = 0;
	h[15] = 12;
	assert_int_equal(inet_pton(AF_INET, src, h + 16), 1);
	assert_int_equal(inet_pton(AF_INET, "127.0.0.1", h + 20), 1);
	h[24] = (uint8_t)(sport >> 8);
	h[25] = (uint8_t)sport;
	h[26] = 0;
	h[27] = 7;
	return 28;
}

/* Send `pre` (in pieces of `step` bytes, 0: at once), then `data`, half-close, and read to
 * EOF: what came back. */
static size_t exchange(int fd, const uint8_t *pre, size_t prelen, size_t step, const void *data,
		       size_t len, uint8_t *back, size_t cap)
{
	if (step == 0) {
		/* Header and data in one send: one segment on loopback. */
		uint8_t *all = malloc(prelen + len + 1);
		memcpy(all, pre, prelen);
		memcpy(all + prelen, data, len);
		assert_int_equal(send_all(fd, all, prelen + len), 0);
		free(all);
	} else {
		for (size_t i = 0; i < prelen; i += step) {
			size_t n = prelen - i < step ? prelen - i : step;
			assert_int_equal(send_all(fd, pre + i, n), 0);
			usleep(2000); /* separate segments: the parser sees every prefix */
		}
		assert_int_equal(send_all(fd, data, len), 0);
	}
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	return recv_to_eof(fd, back, cap);
}

/* The suite's own plumbing: closing an io_uring (lib_backends does, before each backend's
 * round) interrupts the process a few milliseconds later, and a recv with SO_RCVTIMEO then
 * ends with EINTR, handler or not. exchange() once took that for the end of the echo (1 run
 * in 30 on uring-poll); now it reads on. A child echoes 3,000 bytes 50 ms late. */
static void test_exchange_reads_on_after_eintr(void **state)
{
	(void)state;
	const struct backend *be = backend_find("uring-poll");
	struct loop loop;
	struct loop_config cfg = { .nbufs = 16, .bufsize = 4096, .max_fds = 64 };
	if (!be || loop_init(&loop, be, &cfg) < 0) {
		print_message("  skipped: no io_uring here\n");
		return;
	}
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct timeval tv = { .tv_sec = 5 };
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	/* Closed before the fork: a child holding the ring's fd would keep it open. */
	loop_fini(&loop); /* the interruption arrives while exchange() waits */
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		static uint8_t in[3000];
		size_t n = recv_to_eof(sv[1], in, sizeof(in));
		usleep(50 * 1000);
		_exit(n == sizeof(in) && send_all(sv[1], in, n) == 0 ? 0 : 1);
	}
	close(sv[1]);
	uint8_t data[3000], back[3100];
	pattern_fill(data, sizeof(data), 7);
	size_t got = exchange(sv[0], (const uint8_t *)"", 0, 0, data, sizeof(data), back,
			      sizeof(back));
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_int_equal(got, sizeof(data));
	assert_memory_equal(back, data, sizeof(data));
	close(sv[0]);
}

static void stop_clean(struct child *c)
{
	assert_int_equal(proc_stop(c, SIGTERM, 10000), 0);
}

static void expect_echo(int port, const uint8_t *pre, size_t prelen, size_t step)
{
	uint8_t data[3000], back[4000];
	pattern_fill(data, sizeof(data), (uint32_t)(prelen + step));
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	size_t got = exchange(fd, pre, prelen, step, data, sizeof(data), back, sizeof(back));
	assert_int_equal(got, sizeof(data));
	assert_memory_equal(back, data, sizeof(data));
	close(fd);
}

static void test_headers_then_echo(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--proxy-protocol", "--log-level", "debug", NULL };
	test_start_echod(&c, more);
	const char *v1 = "PROXY TCP4 192.0.2.1 198.51.100.2 5555 7\r\n";
	const char *v1_6 = "PROXY TCP6 2001:db8::1 2001:db8::2 1234 7\r\n";
	const char *unknown = "PROXY UNKNOWN\r\n";
	uint8_t v2[64], local[16];
	size_t v2len = v2_inet(v2, "203.0.113.9", 4321);
	memcpy(local, v2_sig, 12);
	local[12] = 0x20; /* LOCAL: the balancer's own health check */
	local[13] = local[14] = local[15] = 0;
	expect_echo(c.port, (const uint8_t *)v1, strlen(v1), 0);
	expect_echo(c.port, (const uint8_t *)v1_6, strlen(v1_6), 1);
	expect_echo(c.port, (const uint8_t *)unknown, strlen(unknown), 0);
	expect_echo(c.port, v2, v2len, 0);
	expect_echo(c.port, v2, v2len, 1);
	expect_echo(c.port, local, sizeof(local), 5);
	stop_clean(&c);
	assert_true(proc_log_has(&c, "client=192.0.2.1:5555 server=198.51.100.2:7"));
	assert_true(proc_log_has(&c, "client=[2001:db8::1]:1234"));
	assert_true(proc_log_has(&c, "client=203.0.113.9:4321 server=127.0.0.1:7"));
	assert_int_equal(test_stop_count(&c, "proxy_accepted="), 6);
	assert_int_equal(test_stop_count(&c, "proxy_rejected="), 0);
	/* Header bytes are consumed, not echoed: in and out are the data alone. */
	assert_int_equal(test_stop_count(&c, "bytes_in="), 6 * 3000);
	assert_int_equal(test_stop_count(&c, "bytes_out="), 6 * 3000);
	proc_cleanup(&c);
}

/* A connection whose first bytes cannot be a header is closed without an echo. */
static void expect_refused(int port, const void *pre, size_t len)
{
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	uint8_t back[64];
	size_t got = exchange(fd, pre, len, 0, "data", 4, back, sizeof(back));
	assert_int_equal(got, 0);
	close(fd);
}

static void test_bad_headers_closed(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--proxy-protocol", NULL };
	test_start_echod(&c, more);
	char longv1[200];
	memset(longv1, '1', sizeof(longv1));
	memcpy(longv1, "PROXY TCP4 ", 11);
	uint8_t huge[600];
	memset(huge, 0, sizeof(huge));
	memcpy(huge, v2_sig, 12);
	huge[12] = 0x21;
	huge[13] = 0x11;
	huge[14] = 0xff; /* 65,535 bytes of addresses and TLVs announced */
	huge[15] = 0xff;
	expect_refused(c.port, "GET / HTTP/1.0\r\n\r\n", 18);
	expect_refused(c.port, "PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", 34);
	expect_refused(c.port, longv1, sizeof(longv1));
	expect_refused(c.port, huge, sizeof(huge));
	/* Closed before the header was complete: nothing to echo, counted too. */
	int fd = tcp_connect(c.port);
	assert_true(fd >= 0);
	uint8_t back[8];
	assert_int_equal(exchange(fd, (const uint8_t *)"PROXY TCP", 9, 0, "", 0, back, sizeof(back)),
			 0);
	close(fd);
	expect_refused(c.port, "Hello, world", 12); /* no header at all: refused like the rest */
	stop_clean(&c);
	assert_int_equal(test_stop_count(&c, "proxy_rejected="), 6);
	assert_int_equal(test_stop_count(&c, "bytes_out="), 0);
	/* Six rejections inside a second: one line, the rest counted in the next. */
	char *log = proc_log(&c);
	int lines = 0;
	for (const char *p = log; (p = strstr(p, "event=proxy_rejected")); p++)
		lines++;
	free(log);
	assert_true(lines >= 1 && lines <= 2);
	proc_cleanup(&c);
}

static void test_slow_header_times_out(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--proxy-protocol", "--proxy-timeout", "0.3", NULL };
	test_start_echod(&c, more);
	int fd = tcp_connect(c.port);
	assert_true(fd >= 0);
	assert_int_equal(send_all(fd, "PROXY TCP4 ", 11), 0);
	uint64_t t0 = now_ms();
	char b;
	ssize_t n = recv_retry(fd, &b, 1, 0); /* until echod closes it (5 s socket timeout) */
	uint64_t took = now_ms() - t0;
	assert_true(n <= 0 && (n == 0 || errno == ECONNRESET));
	assert_true(took >= 250 && took < 2500);
	close(fd);
	expect_echo(c.port, (const uint8_t *)"PROXY UNKNOWN\r\n", 15, 0); /* others unaffected */
	stop_clean(&c);
	assert_int_equal(test_stop_count(&c, "proxy_timeouts="), 1);
	proc_cleanup(&c);
}

/* A Unix listener behind a balancer on the same host: a v2 header of family AF_UNIX. */
static void test_unix_listener(void **state)
{
	(void)state;
	char path[64], spec[80];
	snprintf(path, sizeof(path), "/tmp/echod-proxy-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", path);
	struct child c;
	const char *more[] = { "--proxy-protocol", "--listen", spec, "--log-level", "debug", NULL };
	test_start_echod(&c, more);
	uint8_t h[16 + 216];
	memcpy(h, v2_sig, 12);
	h[12] = 0x21;
	h[13] = 0x31; /* AF_UNIX, STREAM */
	h[14] = 0;
	h[15] = 216;
	memset(h + 16, 0, 216);
	strcpy((char *)h + 16, "/run/client.sock");
	strcpy((char *)h + 16 + 108, "/run/echod.sock");
	proc_unix_path = path;
	expect_echo(0, h, sizeof(h), 0);
	proc_unix_path = NULL;
	stop_clean(&c);
	assert_true(proc_log_has(&c, "client=unix:/run/client.sock"));
	assert_int_equal(test_stop_count(&c, "proxy_accepted="), 1);
	proc_cleanup(&c);
}

/* ---- HAProxy in front ---------------------------------------------------------------------- */

/* HAProxy is listening on port once a bind there fails. (Not a connect: a probe through the
 * balancer would reach echod as a connection that never sends a header.) */
static bool port_taken(int port, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	while (now_ms() < end) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
		int err = errno;
		close(fd);
		if (rc < 0 && err == EADDRINUSE)
			return true;
		usleep(20000);
	}
	return false;
}

/* One client through HAProxy: 256 KiB there and back, byte-exact; its own port is what echod
 * must log as the client. */
static void through_haproxy(int port, const struct child *echod, int *client_port)
{
	size_t len = 256u << 10;
	uint8_t *data = malloc(len), *back = malloc(len + 16);
	pattern_fill(data, len, (uint32_t)port);
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	struct sockaddr_in me;
	socklen_t mlen = sizeof(me);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&me, &mlen), 0);
	*client_port = ntohs(me.sin_port);
	/* Send and read at once: 256 KiB exceeds what the buffers on the way hold. */
	set_nonblock(fd);
	size_t sent = 0, got = 0;
	bool shut = false;
	uint64_t deadline = now_ms() + 10000;
	while (now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
		int ready = poll(&p, 1, 1000);
		assert_true(ready >= 0 || errno == EINTR);
		if (ready < 0)
			continue;
		if ((p.revents & POLLOUT) && sent < len) {
			ssize_t n = send_retry(fd, data + sent, len - sent, MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
		}
		if (sent == len && !shut) {
			assert_int_equal(shutdown(fd, SHUT_WR), 0);
			shut = true;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv_retry(fd, back + got, len + 16 - got, 0);
			if (n == 0)
				break;
			if (n > 0)
				got += (size_t)n;
		}
	}
	close(fd);
	if (got != len) {
		char *log = proc_log(echod);
		print_error("[%s] %zu of %zu bytes back through haproxy; echod:\n%s\n",
			    test_backend_name(), got, len, log);
		free(log);
	}
	assert_int_equal(got, len);
	assert_memory_equal(back, data, len);
	free(data);
	free(back);
}

/* test_haproxy_send_proxy once failed with HAProxy's bind taking EADDRINUSE: free_port()
 * had handed out a port of the ephemeral range, which a connection elsewhere took first. */
static void test_free_port_outside_ephemeral_range(void **state)
{
	(void)state;
	int low = 32768, high = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d %d", &low, &high), 2);
	fclose(f);
	for (int i = 0; i < 20; i++) {
		int types[] = { SOCK_STREAM, SOCK_DGRAM };
		int port = free_port(types[i % 2]);
		assert_true(port > 0);
		if (port >= low && port <= high)
			fail_msg("free_port() gave %d, inside the ephemeral range %d-%d", port, low,
				 high);
		int fd = socket(AF_INET, types[i % 2] | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(fd);
	}
}

static void test_haproxy_send_proxy(void **state)
{
	(void)state;
	const char *haproxy = haproxy_path();
	if (!haproxy) {
		printf("  [%s] skipped: haproxy is not installed (tools/install-deps installs it)\n",
		       test_backend_name());
		return;
	}
	struct child c, h;
	const char *more[] = { "--proxy-protocol", "--log-level", "debug", NULL };
	test_start_echod(&c, more);
	int fe1 = free_port(SOCK_STREAM), fe2 = free_port(SOCK_STREAM);
	char cfg[64];
	snprintf(cfg, sizeof(cfg), "/tmp/echod-haproxy-%d.cfg", (int)getpid());
	FILE *f = fopen(cfg, "w");
	assert_non_null(f);
	fprintf(f,
		"global\n  maxconn 100\n"
		"defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n"
		"  timeout server 10s\n"
		"frontend v1\n  bind 127.0.0.1:%d\n  default_backend echod_v1\n"
		"frontend v2\n  bind 127.0.0.1:%d\n  default_backend echod_v2\n"
		"backend echod_v1\n  server e 127.0.0.1:%d send-proxy\n"
		"backend echod_v2\n  server e 127.0.0.1:%d send-proxy-v2\n",
		fe1, fe2, c.port, c.port);
	fclose(f);
	const char *argv[] = { haproxy, "-db", "-f", cfg, NULL };
	assert_int_equal(proc_spawn(&h, argv), 0);
	if (!port_taken(fe1, 5000) || !port_taken(fe2, 5000)) {
		char *log = proc_log(&h);
		print_error("haproxy did not start:\n%s\n", log);
		free(log);
		fail();
	}
	int p1, p2;
	through_haproxy(fe1, &c, &p1);
	through_haproxy(fe2, &c, &p2);
	assert_int_equal(proc_stop(&h, SIGTERM, 5000) >= 0, 1);
	proc_cleanup(&h);
	unlink(cfg);
	stop_clean(&c);
	char want1[96], want2[96];
	snprintf(want1, sizeof(want1), "version=1 client=127.0.0.1:%d ", p1);
	snprintf(want2, sizeof(want2), "version=2 client=127.0.0.1:%d ", p2);
	if (!proc_log_has(&c, want1) || !proc_log_has(&c, want2)) {
		char *log = proc_log(&c);
		print_error("echod did not log the clients (%s, %s):\n%s\n", want1, want2, log);
		free(log);
		fail();
	}
	assert_int_equal(test_stop_count(&c, "proxy_rejected="), 0);
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_headers_then_echo, test_kill_strays),
		cmocka_unit_test_teardown(test_bad_headers_closed, test_kill_strays),
		cmocka_unit_test_teardown(test_slow_header_times_out, test_kill_strays),
		cmocka_unit_test_teardown(test_unix_listener, test_kill_strays),
		cmocka_unit_test_teardown(test_haproxy_send_proxy, test_kill_strays),
	};
	int failed = test_run_per_backend("proxy", tests, sizeof(tests) / sizeof(tests[0]));
	const struct CMUnitTest once[] = {
		cmocka_unit_test(test_exchange_reads_on_after_eintr),
		cmocka_unit_test(test_free_port_outside_ephemeral_range),
	};
	failed += cmocka_run_group_tests_name("proxy/plumbing", once, NULL, NULL);
	return failed ? 1 : 0;
}
