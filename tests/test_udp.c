/* test_udp.c - RFC 862 over UDP: the source and rate rules as pure functions, then the real
 * echod's UDP listener on every backend over loopback (IPv4 and IPv6).
 *
 * Every wait is bounded: sockets carry receive timeouts and children are stopped with
 * deadlines. Counts of what echod dropped are read from its stop line.
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
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"
#include "udp.h"

/* ---- pure functions ----------------------------------------------------------------------- */

static int refused4(const char *ip, int port)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	assert_int_equal(inet_pton(AF_INET, ip, &in.sin_addr), 1);
	return udp_source_refused((struct sockaddr *)&in, sizeof(in));
}

static int refused6(const char *ip, int port)
{
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
	assert_int_equal(inet_pton(AF_INET6, ip, &in6.sin6_addr), 1);
	return udp_source_refused((struct sockaddr *)&in6, sizeof(in6));
}

static void test_source_rules(void **state)
{
	(void)state;
	/* Ephemeral and registered ports of single hosts are answered. */
	assert_int_equal(refused4("127.0.0.1", 40000), -1);
	assert_int_equal(refused4("10.1.2.3", 1024), -1);
	assert_int_equal(refused4("192.168.1.255", 5000), -1); /* a subnet's broadcast: unknown here */
	assert_int_equal(refused6("::1", 65535), -1);
	assert_int_equal(refused6("2001:db8::1", 2048), -1);
	/* Services: another echo (7), chargen (19), DNS, NTP, NFS (2049). */
	int ports[] = { 0, 7, 19, 53, 123, 1023, 2049 };
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		assert_int_equal(refused4("127.0.0.1", ports[i]), UDP_DROP_SOURCE_PORT);
		assert_int_equal(refused6("::1", ports[i]), UDP_DROP_SOURCE_PORT);
	}
	assert_int_equal(refused4("127.0.0.1", 2050), -1);
	/* Not one host: broadcast and multicast, also inside IPv4-mapped IPv6. */
	assert_int_equal(refused4("255.255.255.255", 40000), UDP_DROP_BROADCAST);
	assert_int_equal(refused4("224.0.0.1", 40000), UDP_DROP_BROADCAST);
	assert_int_equal(refused4("239.255.255.250", 40000), UDP_DROP_BROADCAST);
	assert_int_equal(refused4("223.255.255.255", 40000), -1);
	assert_int_equal(refused4("240.0.0.1", 40000), -1);
	assert_int_equal(refused6("ff02::1", 40000), UDP_DROP_BROADCAST);
	assert_int_equal(refused6("::ffff:224.0.0.251", 40000), UDP_DROP_BROADCAST);
	assert_int_equal(refused6("::ffff:255.255.255.255", 40000), UDP_DROP_BROADCAST);
	assert_int_equal(refused6("::ffff:127.0.0.1", 40000), -1);
	/* A source that is no IP address is not answered. */
	struct sockaddr_storage none = { .ss_family = AF_UNIX };
	assert_int_equal(udp_source_refused((struct sockaddr *)&none, sizeof(none)),
			 UDP_DROP_SOURCE_PORT);
}

static struct sockaddr_in v4(uint32_t a)
{
	return (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(40000),
				     .sin_addr.s_addr = htonl(a) };
}

static int allowed(struct udp_rate *r, uint32_t addr, int n, uint64_t now)
{
	struct sockaddr_in in = v4(addr);
	int ok = 0;
	for (int i = 0; i < n; i++)
		ok += udp_rate_allow(r, (struct sockaddr *)&in, now);
	return ok;
}

static void test_rate_bucket(void **state)
{
	(void)state;
	struct udp_rate r;
	assert_int_equal(udp_rate_init(&r, 100, 64), 0);
	/* A second's worth at once, then nothing until time passes. */
	assert_int_equal(allowed(&r, 0x7f000001, 150, 1000), 100);
	assert_int_equal(allowed(&r, 0x7f000001, 1, 1000), 0);
	/* 100/s: one more every 10 ms, and 50 after half a second. */
	assert_int_equal(allowed(&r, 0x7f000001, 5, 1010), 1);
	assert_int_equal(allowed(&r, 0x7f000001, 100, 1510), 50);
	/* Never more than a second's worth, however long the pause. */
	assert_int_equal(allowed(&r, 0x7f000001, 300, 1000000), 100);
	/* Another address has its own bucket; an IPv4-mapped IPv6 source is the IPv4 one. */
	assert_int_equal(allowed(&r, 0x7f000002, 150, 1000000), 100);
	struct sockaddr_in6 m = { .sin6_family = AF_INET6 };
	assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.2", &m.sin6_addr), 1);
	assert_false(udp_rate_allow(&r, (struct sockaddr *)&m, 1000000));
	/* A clock that goes back (it cannot, but) takes nothing away and gives nothing. */
	assert_int_equal(allowed(&r, 0x7f000002, 1, 999000), 0);
	udp_rate_fini(&r);
	/* 0 = no cap, no table. */
	assert_int_equal(udp_rate_init(&r, 0, 64), 0);
	assert_null(r.slots);
	assert_int_equal(allowed(&r, 1, 100000, 0), 100000);
	udp_rate_fini(&r);
	assert_int_equal(udp_rate_init(&r, 1, 63), -EINVAL);
}

/* 100,000 forged sources through a 64-slot table: memory stays the table, the buckets of
 * sources that keep coming back are still found, and none of them gets more than its rate
 * plus one refill per eviction. */
static void test_rate_table_bounded(void **state)
{
	(void)state;
	struct udp_rate r;
	assert_int_equal(udp_rate_init(&r, 10, 64), 0);
	struct udp_bucket *slots = r.slots;
	int ok = 0;
	for (uint32_t i = 0; i < 100000; i++)
		ok += allowed(&r, 0x0a000000u + i, 1, 5000);
	assert_int_equal(ok, 100000); /* each new source starts with a full bucket */
	assert_ptr_equal(r.slots, slots);
	int used = 0;
	for (int i = 0; i < 64; i++)
		used += r.slots[i].used;
	assert_int_equal(used, 64);
	udp_rate_fini(&r);
}

/* ---- the real echod ---------------------------------------------------------------------- */

/* The port of echod's UDP listener, from its `listening addr=udp:HOST:PORT` line. */
static void start_udp(struct child *c, const char *host, const char *const *more)
{
	char listen[64];
	snprintf(listen, sizeof(listen), "udp:%s:0", host);
	const char *args[16] = { "--listen", listen };
	int n = 2;
	for (int i = 0; more && more[i]; i++)
		args[n++] = more[i];
	args[n] = NULL;
	test_start_echod(c, args);
	assert_true(proc_udp_port(c) > 0);
}

/* A UDP socket with a 2 s receive timeout, bound to `family`'s loopback, any port. */
static int udp_socket(int family)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct timeval tv = { .tv_sec = 2 };
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	int big = 1 << 20;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	return fd;
}

static socklen_t server_addr(int family, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		in6->sin6_addr = in6addr_loopback;
		return sizeof(*in6);
	}
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof(*in);
}

/* One datagram there and back: the same bytes, one datagram, from the server's address. */
static void roundtrip(int family, int port, size_t len)
{
	int fd = udp_socket(family);
	struct sockaddr_storage to, from;
	socklen_t tolen = server_addr(family, port, &to), fromlen = sizeof(from);
	uint8_t *out = malloc(len + 1), *back = malloc(70000);
	pattern_fill(out, len + 1, (uint32_t)len);
	assert_int_equal(sendto_retry(fd, out, len, 0, (struct sockaddr *)&to, tolen), (ssize_t)len);
	ssize_t n = recvfrom_retry(fd, back, 70000, MSG_TRUNC, (struct sockaddr *)&from, &fromlen);
	if (n != (ssize_t)len)
		print_error("[%s] %zu bytes sent, %zd back (%s)\n", test_backend_name(), len, n,
			    n < 0 ? strerror(errno) : "");
	assert_int_equal(n, (ssize_t)len);
	assert_memory_equal(back, out, len);
	assert_int_equal(fromlen, tolen);
	assert_memory_equal(&from, &to, tolen);
	free(out);
	free(back);
	close(fd);
}

static void stop_clean(struct child *c)
{
	assert_int_equal(proc_stop(c, SIGTERM, 10000), 0);
}

static void test_sizes(void **state)
{
	(void)state;
	struct child c;
	start_udp(&c, "127.0.0.1", NULL);
	int port = proc_udp_port(&c);
	size_t sizes[] = { 0, 1, 1472, 8192, 65507 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		roundtrip(AF_INET, port, sizes[i]);
	stop_clean(&c);
	assert_int_equal(test_stop_count(&c, "udp_echoed="), 5);
	assert_int_equal(test_stop_count(&c, "udp_bytes_out="), 1 + 1472 + 8192 + 65507);
	proc_cleanup(&c);
}

static void test_ipv6(void **state)
{
	(void)state;
	struct child c;
	start_udp(&c, "[::1]", NULL);
	int port = proc_udp_port(&c);
	roundtrip(AF_INET6, port, 1);
	roundtrip(AF_INET6, port, 65507);
	stop_clean(&c);
	proc_cleanup(&c);
}

/* 10,000 datagrams from 50 sockets, a few in flight per socket: every reply comes back to the
 * socket that sent it, carrying that socket's own sequence. */
#define SOCKS 50
#define PER_SOCK 200
#define WINDOW 4
static void test_many_sources(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--udp-rate", "0", NULL }; /* one address sends them all */
	start_udp(&c, "127.0.0.1", more);
	struct sockaddr_storage to;
	socklen_t tolen = server_addr(AF_INET, proc_udp_port(&c), &to);
	int fds[SOCKS];
	uint32_t sent[SOCKS] = { 0 }, got[SOCKS] = { 0 };
	struct pollfd pfd[SOCKS];
	for (int i = 0; i < SOCKS; i++) {
		fds[i] = udp_socket(AF_INET);
		set_nonblock(fds[i]);
		pfd[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
	}
	uint32_t total = 0, wrong = 0;
	uint64_t deadline = now_ms() + 20000;
	while (total < SOCKS * PER_SOCK && now_ms() < deadline) {
		for (int i = 0; i < SOCKS; i++) {
			while (sent[i] < PER_SOCK && sent[i] - got[i] < WINDOW) {
				uint32_t msg[8] = { (uint32_t)i, sent[i], 0xec40d00du };
				ssize_t n = sendto_retry(fds[i], msg, sizeof(msg), 0,
							 (struct sockaddr *)&to, tolen);
				if (n != (ssize_t)sizeof(msg))
					break;
				sent[i]++;
			}
		}
		if (poll(pfd, SOCKS, 2000) <= 0)
			break; /* nothing for 2 s: lost, counted below */
		for (int i = 0; i < SOCKS; i++) {
			uint32_t msg[8];
			ssize_t n;
			while ((n = recv_retry(fds[i], msg, sizeof(msg), 0)) >= 0) {
				if (n != (ssize_t)sizeof(msg) || msg[0] != (uint32_t)i ||
				    msg[1] != got[i] || msg[2] != 0xec40d00du)
					wrong++;
				got[i]++;
				total++;
			}
		}
	}
	for (int i = 0; i < SOCKS; i++)
		close(fds[i]);
	stop_clean(&c);
	if (total != SOCKS * PER_SOCK) {
		char *log = proc_log(&c);
		print_error("[%s] %u of %u echoed; echod:\n%s\n", test_backend_name(), total,
			    SOCKS * PER_SOCK, log);
		free(log);
	}
	assert_int_equal(wrong, 0);
	assert_int_equal(total, SOCKS * PER_SOCK);
	assert_int_equal(test_stop_count(&c, "udp_echoed="), SOCKS * PER_SOCK);
	proc_cleanup(&c);
}

/* Nothing answers a datagram from a service's port: not 2049 (NFS), and, where this test may
 * bind one, not a port below 1024. */
static void test_refused_source_ports(void **state)
{
	(void)state;
	struct child c;
	start_udp(&c, "127.0.0.1", NULL);
	struct sockaddr_storage to;
	socklen_t tolen = server_addr(AF_INET, proc_udp_port(&c), &to);
	int refused = 0;
	int ports[] = { 2049, 1023 };
	for (size_t i = 0; i < 2; i++) {
		int fd = udp_socket(AF_INET);
		struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons((uint16_t)ports[i]),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
			printf("  [%s] source port %d not tested: bind: %s (needs root, or the port "
			       "is taken)\n", test_backend_name(), ports[i], strerror(errno));
			close(fd);
			continue;
		}
		struct timeval tv = { .tv_usec = 300000 };
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
		assert_int_equal(sendto_retry(fd, "ping", 4, 0, (struct sockaddr *)&to, tolen), 4);
		char back[8];
		assert_int_equal(recv_retry(fd, back, sizeof(back), 0), -1);
		refused++;
		close(fd);
	}
	roundtrip(AF_INET, proc_udp_port(&c), 4); /* and an ordinary port still is */
	stop_clean(&c);
	assert_int_equal(test_stop_count(&c, "udp_dropped_source_port="), refused);
	assert_int_equal(test_stop_count(&c, "udp_echoed="), 1);
	proc_cleanup(&c);
}

/* --udp-rate: one address gets a second's worth of replies at once and then the rate, counted
 * as drops, whatever source ports it uses and however many workers there are (the reuseport
 * group steers by source address, so one address meets one bucket). */
static void rate_capped(const char *threads)
{
	struct child c;
	const char *more[] = { "--udp-rate", "50", "--threads", threads, NULL };
	start_udp(&c, "127.0.0.1", more);
	struct sockaddr_storage to;
	socklen_t tolen = server_addr(AF_INET, proc_udp_port(&c), &to);
	enum { NSOCK = 16, EACH = 15 };
	int fds[NSOCK];
	uint64_t t0 = now_ms();
	for (int i = 0; i < NSOCK; i++) {
		fds[i] = udp_socket(AF_INET);
		for (int k = 0; k < EACH; k++)
			assert_int_equal(sendto_retry(fds[i], "x", 1, 0, (struct sockaddr *)&to, tolen), 1);
	}
	uint64_t took = now_ms() - t0;
	int replies = 0;
	struct pollfd pfd[NSOCK];
	for (int i = 0; i < NSOCK; i++) {
		set_nonblock(fds[i]);
		pfd[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
	}
	/* Until 300 ms pass without a reply. */
	while (poll(pfd, NSOCK, 300) > 0) {
		char b[4];
		for (int i = 0; i < NSOCK; i++)
			while (recv_retry(fds[i], b, sizeof(b), 0) == 1)
				replies++;
	}
	for (int i = 0; i < NSOCK; i++)
		close(fds[i]);
	stop_clean(&c);
	/* 50 at once, and one more per 20 ms the burst took to send. */
	double dropped = test_stop_count(&c, "udp_dropped_rate=");
	printf("  [%s] threads=%s: %d of %d answered, %.0f dropped for the rate, %llu ms\n",
	       test_backend_name(), threads, replies, NSOCK * EACH, dropped,
	       (unsigned long long)took);
	assert_true(replies >= 50);
	assert_true(replies <= 50 + 1 + (int)(took / 20));
	assert_int_equal((int)dropped + replies, NSOCK * EACH);
	proc_cleanup(&c);
}

static void test_rate_cap(void **state)
{
	(void)state;
	rate_capped("1");
}

static void test_threads_rate_cap_per_address(void **state)
{
	(void)state;
	rate_capped("4");
}

/* Every worker serves the UDP listener (each has its own socket in the group). */
static void test_threads_udp_and_tcp(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--threads", "3", "--udp-rate", "0", NULL };
	start_udp(&c, "127.0.0.1", more);
	int port = proc_udp_port(&c);
	for (int i = 0; i < 60; i++)
		roundtrip(AF_INET, port, (size_t)i * 7);
	assert_true(hello_echoed(c.port)); /* TCP beside it */
	stop_clean(&c);
	assert_int_equal(test_stop_count(&c, "udp_echoed="), 60);
	proc_cleanup(&c);
}

/* A second echod on the same UDP address: exit 71 with one line, also with --threads (its
 * first socket binds without SO_REUSEPORT). */
static void test_busy_udp_port(void **state)
{
	(void)state;
	struct child a, b;
	const char *more[] = { "--threads", "2", NULL };
	start_udp(&a, "127.0.0.1", more);
	char addr[48];
	snprintf(addr, sizeof(addr), "udp:127.0.0.1:%d", proc_udp_port(&a));
	const char *args[] = { "--listen", addr, "--threads", "2", "--backend", test_backend_name(),
			       NULL };
	int st = -1;
	assert_int_equal(echod_start(&b, 0, &st, args), -1);
	assert_int_equal(st, 71);
	assert_true(proc_log_has(&b, "cannot listen on udp:127.0.0.1:"));
	assert_true(proc_log_has(&b, "Address already in use"));
	proc_cleanup(&b);
	roundtrip(AF_INET, proc_udp_port(&a), 10); /* the first one still has all of it */
	stop_clean(&a);
	proc_cleanup(&a);
}

/* SIGTERM while datagrams stream in: a clean exit, soon. */
static void test_stop_under_load(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--udp-rate", "0", NULL };
	start_udp(&c, "127.0.0.1", more);
	struct sockaddr_storage to;
	socklen_t tolen = server_addr(AF_INET, proc_udp_port(&c), &to);
	int fd = udp_socket(AF_INET);
	set_nonblock(fd);
	char buf[1400] = { 0 };
	for (int i = 0; i < 2000; i++)
		(void)sendto_retry(fd, buf, sizeof(buf), 0, (struct sockaddr *)&to, tolen);
	uint64_t t0 = now_ms();
	assert_int_equal(proc_stop(&c, SIGTERM, 5000), 0);
	assert_true(now_ms() - t0 < 3000);
	close(fd);
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_source_rules),
		cmocka_unit_test(test_rate_bucket),
		cmocka_unit_test(test_rate_table_bounded),
	};
	int failed = cmocka_run_group_tests_name("udp_rules", pure, NULL, NULL);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_sizes, test_kill_strays),
		cmocka_unit_test_teardown(test_ipv6, test_kill_strays),
		cmocka_unit_test_teardown(test_many_sources, test_kill_strays),
		cmocka_unit_test_teardown(test_refused_source_ports, test_kill_strays),
		cmocka_unit_test_teardown(test_rate_cap, test_kill_strays),
		cmocka_unit_test_teardown(test_threads_rate_cap_per_address, test_kill_strays),
		cmocka_unit_test_teardown(test_threads_udp_and_tcp, test_kill_strays),
		cmocka_unit_test_teardown(test_busy_udp_port, test_kill_strays),
		cmocka_unit_test_teardown(test_stop_under_load, test_kill_strays),
	};
	failed += test_run_per_backend("udp", tests, sizeof(tests) / sizeof(tests[0]));
	return failed ? 1 : 0;
}
