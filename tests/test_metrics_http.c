/* test_metrics_http.c - the metrics port, driven directly: metrics_http_start on sockets bound
 * here, a handler whose answers the test controls, and real clients on plain sockets (the
 * hostile ones need byte-level control no HTTP client gives). Routes, status codes and
 * headers; then the bounds: malformed and oversized requests, 1,000 concurrent connections,
 * a slow-loris client, and stop with connections open. Built without libmicrohttpd, it checks
 * that the stub says so and refuses. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_proc.h"
#include "metrics_http.h"

/* A bound, listening socket on 127.0.0.1 and a port the kernel picks. */
static int listen_local(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1024), 0); /* room for the 1,000 at once */
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

#ifdef ECHOD_HAVE_MHD

static const char BODY[] = "# HELP echod_test_total A counter for the test.\n"
			   "# TYPE echod_test_total counter\n"
			   "echod_test_total{worker=\"0\"} 42\n";
static atomic_bool healthy_now = true, ready_now = true;
static atomic_int renders;

static char *render(void *arg, size_t *len)
{
	(void)arg;
	atomic_fetch_add(&renders, 1);
	*len = strlen(BODY);
	return strdup(BODY);
}

static bool healthy(void *arg, char *msg, size_t len)
{
	(void)arg;
	bool ok = atomic_load(&healthy_now);
	snprintf(msg, len, ok ? "ok\n" : "worker 1 is not running\n");
	return ok;
}

static bool ready(void *arg, char *msg, size_t len)
{
	(void)arg;
	bool ok = atomic_load(&ready_now);
	snprintf(msg, len, ok ? "ok\n" : "draining\n");
	return ok;
}

static const struct metrics_handler handler = { render, healthy, ready, NULL };

static struct metrics_http *start_server(int *port)
{
	int fd = listen_local(port);
	struct metrics_http *m;
	assert_int_equal(metrics_http_start(&m, &fd, 1, &handler), 0);
	assert_non_null(m);
	return m;
}

/* The server most tests share (group setup), and its port. */
static struct metrics_http *shared;
static int shared_port;

static int setup(void **state)
{
	(void)state;
	raise_nofile();
	shared = start_server(&shared_port);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	metrics_http_stop(shared);
	return 0;
}

/* --- a small client -------------------------------------------------------------------------- */

struct resp {
	int status;         /* 0: no status line arrived */
	char head[8192];    /* status line and headers, NUL-terminated */
	char body[8192];
	size_t body_len;
};

/* Send all of req, then read one response (head, and Content-Length bytes unless `head_only`),
 * within 3 s. A send cut short by the server (it answered and closed) is not an error: the
 * answer is read all the same. */
static void exchange(int fd, const char *req, size_t len, bool head_only, struct resp *r)
{
	memset(r, 0, sizeof(*r));
	size_t off = 0;
	uint64_t end = now_ms() + 3000;
	while (off < len && now_ms() < end) {
		ssize_t n = send_retry(fd, req + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
		struct pollfd p = { .fd = fd, .events = POLLOUT | POLLIN };
		poll(&p, 1, 50);
		if (p.revents & POLLIN)
			break; /* answered before reading everything: read the answer */
	}
	char buf[16384];
	size_t have = 0;
	char *body = NULL;
	size_t want = SIZE_MAX;
	while (now_ms() < end && (!body || (size_t)(buf + have - body) < want)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, (int)(end - now_ms())) <= 0)
			break;
		ssize_t n = recv_retry(fd, buf + have, sizeof(buf) - 1 - have, MSG_DONTWAIT);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			break;
		}
		have += (size_t)n;
		buf[have] = '\0';
		char *eoh = body ? NULL : strstr(buf, "\r\n\r\n");
		if (eoh) {
			body = eoh + 4;
			const char *cl = strcasestr(buf, "\r\nContent-Length: ");
			want = head_only ? 0 : cl ? strtoul(cl + 18, NULL, 10) : SIZE_MAX;
		}
		if (have == sizeof(buf) - 1)
			break;
	}
	buf[have] = '\0';
	sscanf(buf, "HTTP/1.%*d %d", &r->status);
	size_t hl = body ? (size_t)(body - buf) : have;
	snprintf(r->head, sizeof(r->head), "%.*s", (int)hl, buf);
	r->body_len = body ? (size_t)(buf + have - body) : 0;
	if (r->body_len >= sizeof(r->body))
		r->body_len = sizeof(r->body) - 1;
	if (body)
		memcpy(r->body, body, r->body_len);
	r->body[r->body_len] = '\0';
}

static void request(const char *req, bool head_only, struct resp *r)
{
	int fd = tcp_connect(shared_port);
	assert_true(fd >= 0);
	exchange(fd, req, strlen(req), head_only, r);
	close(fd);
}

/* The server closed the connection (end of stream or reset) within ms. */
static bool closed_within(int fd, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;
	char b[4096];
	while (now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, (int)(end - now_ms())) <= 0)
			return false;
		ssize_t n = recv_retry(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return true;
	}
	return false;
}

static void assert_header(const struct resp *r, const char *line)
{
	if (!strcasestr(r->head, line))
		fail_msg("response lacks \"%s\":\n%s", line, r->head);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

/* --- routes ---------------------------------------------------------------------------------- */

static void test_metrics(void **state)
{
	(void)state;
	assert_true(metrics_http_available());
	int fd = tcp_connect(shared_port);
	assert_true(fd >= 0);
	/* Twice on one connection: a scraper's kept-alive connection gets fresh numbers. */
	for (int i = 0; i < 2; i++) {
		int before = atomic_load(&renders);
		struct resp r;
		exchange(fd, GET("/metrics"), strlen(GET("/metrics")), false, &r);
		assert_int_equal(r.status, 200);
		assert_header(&r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
		assert_header(&r, "\r\nCache-Control: no-store\r\n");
		char cl[64];
		snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(BODY));
		assert_header(&r, cl);
		assert_string_equal(r.body, BODY);
		assert_int_equal(atomic_load(&renders), before + 1);
	}
	close(fd);
	/* A query string is not part of the path. */
	struct resp r;
	request(GET("/metrics?name[]=x"), false, &r);
	assert_int_equal(r.status, 200);
}

static void test_health_and_ready(void **state)
{
	(void)state;
	struct resp r;
	request(GET("/healthz"), false, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok\n");
	assert_header(&r, "\r\nContent-Type: text/plain; charset=utf-8\r\n");
	assert_header(&r, "\r\nCache-Control: no-store\r\n");
	request(GET("/readyz"), false, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok\n");

	atomic_store(&ready_now, false);
	request(GET("/readyz"), false, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "draining\n");
	request(GET("/healthz"), false, &r); /* draining is not unhealthy */
	assert_int_equal(r.status, 200);
	atomic_store(&healthy_now, false);
	request(GET("/healthz"), false, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "worker 1 is not running\n");
	assert_header(&r, "\r\nCache-Control: no-store\r\n");
	atomic_store(&healthy_now, true);
	atomic_store(&ready_now, true);
}

static void test_not_found(void **state)
{
	(void)state;
	const char *paths[] = { GET("/"), GET("/metrics/"), GET("/Metrics"), GET("/healthz/x"),
				"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", NULL };
	for (int i = 0; paths[i]; i++) {
		struct resp r;
		request(paths[i], false, &r);
		if (r.status != 404)
			fail_msg("%s-> %d, want 404", paths[i], r.status);
		assert_non_null(strstr(r.body, "/metrics"));
	}
}

static void test_method_not_allowed(void **state)
{
	(void)state;
	const char *reqs[] = { "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
			       "PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
			       "DELETE /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
			       "OPTIONS /metrics HTTP/1.1\r\nHost: x\r\n\r\n", NULL };
	for (int i = 0; reqs[i]; i++) {
		struct resp r;
		request(reqs[i], false, &r);
		if (r.status != 405)
			fail_msg("%s-> %d, want 405", reqs[i], r.status);
		assert_header(&r, "\r\nAllow: GET, HEAD\r\n");
	}
}

static void test_head(void **state)
{
	(void)state;
	int fd = tcp_connect(shared_port);
	assert_true(fd >= 0);
	const char req[] = "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	struct resp r;
	exchange(fd, req, strlen(req), true, &r);
	assert_int_equal(r.status, 200);
	char cl[64];
	snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(BODY));
	assert_header(&r, cl);
	assert_header(&r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
	assert_int_equal(r.body_len, 0);
	/* No body follows, and the connection stays usable. */
	struct pollfd p = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 200), 0);
	exchange(fd, GET("/healthz"), strlen(GET("/healthz")), false, &r);
	assert_int_equal(r.status, 200);
	close(fd);
}

/* A body is never read: refused, and the connection closed (its bytes are not a request). */
static void test_body_refused(void **state)
{
	(void)state;
	int fd = tcp_connect(shared_port);
	assert_true(fd >= 0);
	const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
	struct resp r;
	exchange(fd, req, strlen(req), false, &r);
	assert_int_equal(r.status, 413);
	assert_true(closed_within(fd, 2000));
	close(fd);
}

/* --- hostile clients ------------------------------------------------------------------------- */

struct loris {
	int port;
	int64_t dropped_ms; /* after connecting; -1: never dropped */
	int sent;
};

/* One byte a second of a request that never ends, until the server drops the connection;
 * bounded: TIMEOUT + 4 bytes. */
static void *slow_loris(void *arg)
{
	struct loris *l = arg;
	l->dropped_ms = -1;
	int fd = tcp_connect(l->port);
	if (fd < 0)
		return NULL;
	uint64_t t0 = now_ms();
	static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaa";
	for (int i = 0; i < METRICS_HTTP_TIMEOUT_S + 4 && i < (int)sizeof(req) - 1; i++) {
		if (send_retry(fd, req + i, 1, MSG_NOSIGNAL) != 1) {
			l->dropped_ms = (int64_t)(now_ms() - t0);
			break;
		}
		l->sent++;
		if (closed_within(fd, 1000)) {
			l->dropped_ms = (int64_t)(now_ms() - t0);
			break;
		}
	}
	close(fd);
	return NULL;
}

/* One hostile request on its own connection: want status `want` (0: no answer at all), then
 * the connection closed. */
static void hostile(const char *what, const char *req, size_t len, int want)
{
	int fd = tcp_connect(shared_port);
	assert_true(fd >= 0);
	struct resp r;
	exchange(fd, req, len, false, &r);
	bool closed = closed_within(fd, 2000);
	close(fd);
	if (r.status != want || !closed)
		fail_msg("%s: status %d, %s; want %d and closed", what, r.status,
			 closed ? "closed" : "left open", want);
}

/* Malformed request lines and 100 KB of headers each get a 4xx and a closed connection, while
 * a slow-loris client (running alongside) is dropped at the request deadline; then the server
 * still answers. The statuses are pinned: most are libmicrohttpd's own. */
static void test_hostile_requests(void **state)
{
	(void)state;
	struct loris l = { .port = shared_port };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, slow_loris, &l), 0);

	static const struct { const char *what, *req; int want; } bad[] = {
		/* MHD closes a one-word request line without answering. */
		{ "one word", "GARBAGE\r\n\r\n", 0 },
		{ "no version", "GET /metrics\r\n\r\n", 400 },
		{ "bad version", "GET /metrics HTTP/x.y\r\nHost: x\r\n\r\n", 400 },
		{ "header without colon", "GET /metrics HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
		  400 },
		{ "HTTP/1.1 without Host", "GET /metrics HTTP/1.1\r\n\r\n", 400 },
		/* MHD passes these bytes on as the method: refused here. */
		{ "control bytes", "\x01\x02\x03 /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		hostile(bad[i].what, bad[i].req, strlen(bad[i].req), bad[i].want);

	/* 100 KB of headers, and a 100 KB request line: MHD's buffer is full first. */
	size_t cap = 110 * 1024;
	char *big = malloc(cap);
	assert_non_null(big);
	size_t n = (size_t)snprintf(big, cap, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; n < 100 * 1024; i++)
		n += (size_t)snprintf(big + n, cap - n, "X-Pad-%04d: %0100d\r\n", i, 0);
	n += (size_t)snprintf(big + n, cap - n, "\r\n");
	hostile("100 KB of headers", big, n, 431);
	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', 100 * 1024);
	n = 5 + 100 * 1024 + (size_t)snprintf(big + 5 + 100 * 1024, 64, " HTTP/1.1\r\n\r\n");
	hostile("100 KB request line", big, n, 414);
	/* Over METRICS_HTTP_MAX_REQUEST but small enough for MHD's buffer: our own count. */
	n = (size_t)snprintf(big, cap, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ");
	memset(big + n, 'b', METRICS_HTTP_MAX_REQUEST);
	n += METRICS_HTTP_MAX_REQUEST;
	n += (size_t)snprintf(big + n, cap - n, "\r\n\r\n");
	hostile("9 KB of headers", big, n, 431);
	free(big);

	/* Just under the limit is served. */
	struct resp r;
	char ok[METRICS_HTTP_MAX_REQUEST];
	n = (size_t)snprintf(ok, sizeof(ok), "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ");
	size_t pad = METRICS_HTTP_MAX_REQUEST - n - 8;
	memset(ok + n, 'c', pad);
	memcpy(ok + n + pad, "\r\n\r\n", 5);
	request(ok, false, &r);
	assert_int_equal(r.status, 200);

	pthread_join(t, NULL);
	print_message("  slow loris: dropped after %lld ms, %d bytes sent\n",
		      (long long)l.dropped_ms, l.sent);
	assert_true(l.dropped_ms >= (METRICS_HTTP_TIMEOUT_S - 1) * 1000);
	assert_true(l.dropped_ms <= (METRICS_HTTP_TIMEOUT_S + 2) * 1000);
	request(GET("/metrics"), false, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, BODY);
}

#define CROWD 1000
/* Half of them from 127.0.0.1 first (its per-address limit bites), the rest from 127.0.0.2 to
 * 127.0.0.4 (then the total limit bites). */
#define SOURCES 4

/* 1,000 clients at once, each sending a request: at most METRICS_HTTP_MAX_CONNS are served
 * (each kept open, so no slot frees during the count), at most half of them from one address
 * (the others from it are closed at once);
 * once they are gone, a request is served again. */
static void test_many_connections(void **state)
{
	(void)state;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 2 * CROWD + 200) {
		print_message("  skipped: RLIMIT_NOFILE is %llu, need %d\n",
			      (unsigned long long)rl.rlim_cur, 2 * CROWD + 200);
		skip();
	}
	int port;
	struct metrics_http *m = start_server(&port);
	static struct pollfd p[CROWD];
	static int src[CROWD];
	static bool sent[CROWD];
	for (int i = 0; i < CROWD; i++) {
		p[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		assert_true(p[i].fd >= 0);
		src[i] = i < CROWD / 2 ? 0 : 1 + i % (SOURCES - 1);
		sent[i] = false;
		struct sockaddr_in from = { .sin_family = AF_INET,
					    .sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)src[i]) };
		assert_int_equal(bind(p[i].fd, (struct sockaddr *)&from, sizeof(from)), 0);
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int rc = connect_retry(p[i].fd, (struct sockaddr *)&to, sizeof(to));
		assert_true(rc == 0 || errno == EINPROGRESS);
		p[i].events = POLLOUT;
	}
	/* 2 s to connect, send and be answered; served connections are kept alive far longer. */
	int served = 0, refused = 0, per_source[SOURCES] = { 0 };
	uint64_t end = now_ms() + 2000;
	static const char req[] = GET("/metrics");
	while (now_ms() < end) {
		if (poll(p, CROWD, 100) < 0)
			break;
		for (int i = 0; i < CROWD; i++) {
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			if (!sent[i] && (p[i].revents & POLLOUT)) {
				sent[i] = send_retry(p[i].fd, req, sizeof(req) - 1, MSG_NOSIGNAL) ==
					  (ssize_t)sizeof(req) - 1;
				p[i].events = POLLIN;
			}
			if (!(p[i].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			char b[512];
			ssize_t n = recv_retry(p[i].fd, b, sizeof(b) - 1, MSG_DONTWAIT);
			if (n > 0 && strncmp(b, "HTTP/1.1 200", 12) == 0) {
				served++;
				per_source[src[i]]++;
				p[i].events = 0; /* keep it open, stop looking */
			} else if (n == 0 || (n < 0 && errno != EAGAIN)) {
				refused++;
				close(p[i].fd);
				p[i].fd = -1;
			}
		}
	}
	print_message("  %d served, %d closed by the server, %d waiting; per address %d %d %d %d\n",
		      served, refused, CROWD - served - refused, per_source[0], per_source[1],
		      per_source[2], per_source[3]);
	assert_true(served >= 1);
	assert_true(served <= METRICS_HTTP_MAX_CONNS);
	for (int s = 0; s < SOURCES; s++)
		assert_true(per_source[s] <= METRICS_HTTP_MAX_CONNS / 2);
	for (int i = 0; i < CROWD; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	/* The server notices the closes on its next wake-up: retry, bounded. */
	struct resp r = { 0 };
	for (int i = 0; i < 30 && r.status != 200; i++) {
		int fd = tcp_connect(port);
		assert_true(fd >= 0);
		exchange(fd, GET("/metrics"), strlen(GET("/metrics")), false, &r);
		close(fd);
		if (r.status != 200)
			usleep(100 * 1000);
	}
	assert_int_equal(r.status, 200);
	metrics_http_stop(m);
}

/* Stop does not wait for clients: idle, half-sent and kept-alive connections are closed, and
 * so is the listening socket. */
static void test_stop_with_open_connections(void **state)
{
	(void)state;
	int port;
	struct metrics_http *m = start_server(&port);
	int fds[4];
	for (int i = 0; i < 4; i++) {
		fds[i] = tcp_connect(port);
		assert_true(fds[i] >= 0);
	}
	assert_int_equal(send_all(fds[1], "GET /metr", 9), 0);
	struct resp r;
	exchange(fds[2], GET("/healthz"), strlen(GET("/healthz")), false, &r);
	assert_int_equal(r.status, 200);
	uint64_t t0 = now_ms();
	metrics_http_stop(m);
	uint64_t took = now_ms() - t0;
	print_message("  stop took %llu ms\n", (unsigned long long)took);
	assert_true(took < 1000);
	for (int i = 0; i < 4; i++) {
		assert_true(closed_within(fds[i], 1000));
		close(fds[i]);
	}
	assert_int_equal(tcp_connect(port), -1);
}

/* A failure to start closes the sockets it was given and says why in one line. */
static void test_start_failure(void **state)
{
	(void)state;
	struct metrics_http *m = (struct metrics_http *)&m;
	assert_int_equal(metrics_http_start(&m, NULL, 0, &handler), -EINVAL);
	assert_null(m);
	metrics_http_stop(NULL);
}

#else /* !ECHOD_HAVE_MHD */

static bool fd_is_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

static void test_unavailable(void **state)
{
	(void)state;
	assert_false(metrics_http_available());
	int port;
	int fd = listen_local(&port);
	struct metrics_http *m = (struct metrics_http *)&m;
	const struct metrics_handler h = { 0 };
	assert_int_equal(metrics_http_start(&m, &fd, 1, &h), -ENOTSUP);
	assert_null(m);
	assert_true(fd_is_closed(fd));
	metrics_http_stop(NULL);
}

#endif

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
#ifdef ECHOD_HAVE_MHD
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_health_and_ready),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_method_not_allowed),
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_body_refused),
		cmocka_unit_test(test_hostile_requests),
		cmocka_unit_test(test_many_connections),
		cmocka_unit_test(test_stop_with_open_connections),
		cmocka_unit_test(test_start_failure),
	};
	return cmocka_run_group_tests_name("metrics_http", tests, setup, teardown);
#else
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unavailable),
	};
	return cmocka_run_group_tests_name("metrics_http (without libmicrohttpd)", tests, NULL,
					   NULL);
#endif
}
