/* test_metrics.c - the metrics port on the real echod, once per backend: counters that add up
 * exactly to a known load (bytes, accepts, closes by reason, refusals), a live scrape that
 * Prometheus's own promtool accepts, /readyz turning 503 at the first SIGTERM while a drain
 * goes on with /healthz 200 until the exit, and echo traffic that keeps its rate while hostile
 * clients hammer the metrics port.
 *
 * Scrapes are plain HTTP/1.1 over a socket (what Prometheus sends), never a mock. The cases named
 * test_threads_* run two workers (and so also on the ThreadSanitizer build, see Makefile). An
 * echod built without libmicrohttpd refuses --metrics (exit 69): then every case skips with one
 * line.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib_backends.h"

#define SCRAPE_WAIT_MS 5000 /* for counters to reach what the test expects */

struct server {
	struct child c;
	int mport; /* the metrics port */
};

/* echod on the current backend with --metrics on a free port, plus extra args. Skips when this
 * echod has no metrics support (built without libmicrohttpd). */
static void start_server(struct server *s, const char *const *extra)
{
	const char *args[40] = { "--metrics", "127.0.0.1:0" };
	int n = 2;
	for (int i = 0; extra && extra[i] && n < 39; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	int st = 0;
	if (test_try_start_echod(&s->c, args, &st) < 0) {
		char *log = proc_log(&s->c);
		bool unavailable = st == 69 && strstr(log, "--metrics");
		if (unavailable) {
			print_message("  [%s] skipped: this echod was built without libmicrohttpd\n",
				      test_backend_name());
			free(log);
			proc_cleanup(&s->c);
			skip();
		}
		print_error("echod did not start (status %d):\n%s\n", st, log);
		free(log);
		fail();
	}
	s->mport = 0;
	for (uint64_t end = now_ms() + 2000; !s->mport && now_ms() < end;) {
		char *log = proc_log(&s->c);
		const char *p = strstr(log, "event=metrics addr=127.0.0.1:");
		if (p)
			s->mport = atoi(p + strlen("event=metrics addr=127.0.0.1:"));
		free(log);
		if (!s->mport)
			usleep(10000);
	}
	assert_true(s->mport > 0);
}

/* One HTTP/1.1 request on a fresh connection; returns the status code (-1: no answer) and the
 * body, malloc'd, in *body if body is not NULL. */
static int http(int port, const char *method, const char *path, char **body)
{
	int fd = tcp_connect(port);
	if (fd < 0)
		return -1;
	char req[256];
	int len = snprintf(req, sizeof(req),
			   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method,
			   path);
	if (send_all(fd, req, (size_t)len) < 0) {
		close(fd);
		return -1;
	}
	size_t cap = 1 << 16, used = 0;
	char *resp = malloc(cap);
	assert_non_null(resp);
	uint64_t t0 = now_ms();
	int err = 0;
	for (;;) {
		if (used + 1 == cap) {
			cap *= 2;
			resp = realloc(resp, cap);
			assert_non_null(resp);
		}
		ssize_t n = recv_retry(fd, resp + used, cap - used - 1, 0);
		if (n < 0)
			err = errno;
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	close(fd);
	resp[used] = '\0';
	int status = -1;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
		status = -1;
		/* Say how it ended: a reset, a timeout, or a clean close with nothing said. */
		print_message("  %s %s: no HTTP answer after %llu ms, %zu bytes, %s\n", method, path,
			      (unsigned long long)(now_ms() - t0), used,
			      err ? strerror(err) : "closed");
	}
	if (body) {
		const char *b = strstr(resp, "\r\n\r\n");
		*body = strdup(b ? b + 4 : "");
		assert_non_null(*body);
	}
	free(resp);
	return status;
}

static char *scrape(const struct server *s)
{
	char *body = NULL;
	int st = http(s->mport, "GET", "/metrics", &body);
	if (st != 200)
		print_error("GET /metrics: status %d\n%s\n", st, body ? body : "");
	assert_int_equal(st, 200);
	return body;
}

/* The sum of a family's samples (every worker) whose labels contain `match` (NULL: all). */
static double metric(const char *text, const char *name, const char *match)
{
	double sum = 0;
	size_t nlen = strlen(name);
	for (const char *line = text; line && *line;) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		if (len > nlen && strncmp(line, name, nlen) == 0 &&
		    (line[nlen] == '{' || line[nlen] == ' ')) {
			const char *sp = memchr(line, ' ', len);
			char labels[512] = "";
			size_t ll = sp ? (size_t)(sp - line) : 0;
			snprintf(labels, sizeof(labels), "%.*s", (int)ll, line);
			if (sp && (!match || strstr(labels, match)))
				sum += strtod(sp + 1, NULL);
		}
		line = eol ? eol + 1 : NULL;
	}
	return sum;
}

struct expect {
	const char *name, *match;
	double value;
};

/* Scrape until every expectation holds (closes and idle timeouts land asynchronously), at most
 * SCRAPE_WAIT_MS; on failure, say which did not and show the last scrape. */
static char *scrape_until(const struct server *s, const struct expect *e, size_t n)
{
	uint64_t end = now_ms() + SCRAPE_WAIT_MS;
	for (;;) {
		char *text = scrape(s);
		size_t bad = n;
		for (size_t i = 0; i < n && bad == n; i++)
			if (metric(text, e[i].name, e[i].match) != e[i].value)
				bad = i;
		if (bad == n)
			return text;
		if (now_ms() >= end) {
			print_error("[%s] %s{%s} = %.0f, expected %.0f; scrape:\n%s\n",
				    test_backend_name(), e[bad].name, e[bad].match ? e[bad].match : "",
				    metric(text, e[bad].name, e[bad].match), e[bad].value, text);
			free(text);
			fail();
		}
		free(text);
		usleep(20000);
	}
}

/* A connection that sends len bytes and reads them all back; the socket stays open. */
static int echo_conn(int port, size_t len)
{
	int fd = tcp_connect(port);
	assert_true(fd >= 0);
	uint8_t *out = malloc(len), *in = malloc(len);
	assert_non_null(out);
	assert_non_null(in);
	pattern_fill(out, len, (uint32_t)len);
	assert_int_equal(send_all(fd, out, len), 0);
	assert_int_equal(recv_exact(fd, in, len), (ssize_t)len);
	assert_memory_equal(in, out, len);
	free(out);
	free(in);
	return fd;
}

/* RFC 862's normal end: half-close, read the server's FIN, close. */
static void end_clean(int fd)
{
	char b;
	shutdown(fd, SHUT_WR);
	assert_int_equal(recv_retry(fd, &b, 1, 0), 0);
	close(fd);
}

static void end_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Every counter the issue names, after a load whose every byte and close is known. */
static void test_threads_exact_deltas(void **state)
{
	(void)state;
	struct server s;
	start_server(&s, (const char *const[]){ "--idle-timeout", "0.5", "--max-conns", "6",
						"--threads", "2", NULL });
	const struct expect zero[] = {
		{ "echod_connections_accepted_total", NULL, 0 },
		{ "echod_bytes_received_total", NULL, 0 },
		{ "echod_connections_active", NULL, 0 },
		{ "echod_draining", NULL, 0 },
		{ "echod_workers", NULL, 2 },
		{ "echod_workers_answering", NULL, 2 },
		{ "echod_build_info", test_backend_name(), 1 },
	};
	free(scrape_until(&s, zero, sizeof(zero) / sizeof(zero[0])));

	/* 3 clean echoes of 1000 bytes; 2 of 10 bytes ended by a reset; 2 left idle. */
	for (int i = 0; i < 3; i++)
		end_clean(echo_conn(s.c.port, 1000));
	int rst[2];
	for (int i = 0; i < 2; i++)
		rst[i] = echo_conn(s.c.port, 10);
	for (int i = 0; i < 2; i++)
		end_reset(rst[i]);
	int idle[2];
	for (int i = 0; i < 2; i++)
		idle[i] = tcp_connect(s.c.port);
	const struct expect after_idle[] = {
		{ "echod_connections_closed_total", "reason=\"eof\"", 3 },
		{ "echod_connections_closed_total", "reason=\"reset\"", 2 },
		{ "echod_connections_closed_total", "reason=\"idle\"", 2 },
		{ "echod_connections_active", NULL, 0 },
	};
	free(scrape_until(&s, after_idle, sizeof(after_idle) / sizeof(after_idle[0])));
	for (int i = 0; i < 2; i++)
		close(idle[i]);

	/* --max-conns 6, process-wide: six held, the seventh refused (a reset). */
	int held[6];
	for (int i = 0; i < 6; i++)
		held[i] = echo_conn(s.c.port, 100);
	int extra = tcp_connect(s.c.port);
	assert_true(extra >= 0);
	char b;
	assert_true(recv_retry(extra, &b, 1, 0) <= 0);
	close(extra);
	for (int i = 0; i < 6; i++)
		end_clean(held[i]);
	const struct expect done[] = {
		{ "echod_connections_accepted_total", NULL, 13 },
		{ "echod_connections_refused_total", "reason=\"max_conns\"", 1 },
		{ "echod_connections_refused_total", "reason=\"fd_limit\"", 0 },
		{ "echod_bytes_received_total", NULL, 3 * 1000 + 2 * 10 + 6 * 100 },
		{ "echod_bytes_sent_total", NULL, 3 * 1000 + 2 * 10 + 6 * 100 },
		{ "echod_connections_closed_total", "reason=\"eof\"", 9 },
		{ "echod_connections_closed_total", "reason=\"reset\"", 2 },
		{ "echod_connections_closed_total", "reason=\"idle\"", 2 },
		{ "echod_connections_closed_total", "reason=\"drain\"", 0 },
		{ "echod_connections_closed_total", "reason=\"error\"", 0 },
		{ "echod_connections_active", NULL, 0 },
		{ "echod_buffers_in_use", NULL, 0 },
	};
	char *text = scrape_until(&s, done, sizeof(done) / sizeof(done[0]));
	/* The loop's own counts moved with the load, and the backend's wait is among the calls. */
	assert_true(metric(text, "echod_loop_wakeups_total", NULL) > 0);
	assert_true(metric(text, "echod_completions_total", NULL) >= 13 + 11 * 2);
	assert_true(metric(text, "echod_syscalls_total", NULL) > 0);
	/* TCP_NODELAY is set once per listener (each worker sets it on the shared socket) and
	 * inherited by the 13 accepted connections; the refusal's SO_LINGER is the third. */
	assert_true(metric(text, "echod_syscalls_total", "call=\"setsockopt\"") <= 2 + 1);
	/* Every close here follows the peer's FIN, a reset or the idle timeout: none needs a
	 * shutdown first. On io_uring the closes themselves go on the ring, all but the
	 * refusal's (a close(2) right after SO_LINGER, to reset at once). */
	assert_true(metric(text, "echod_syscalls_total", "call=\"shutdown\"") == 0);
	if (strcmp(test_backend_name(), "uring") == 0)
		assert_true(metric(text, "echod_syscalls_total", "call=\"close\"") <= 1);
	free(text);

	/* echoload's connections (within --max-conns): every one accepted, closed, and every byte
	 * echoed. */
	char port[16];
	snprintf(port, sizeof(port), "%d", s.c.port);
	const char *argv[] = { proc_bin("echoload"), "-p", port, "-c", "5", "--duration", "0.3",
			       "--warmup", "0", "-q", NULL };
	struct child l;
	int rc = proc_run(argv, 20000, &l);
	if (rc != 0) {
		char *log = proc_log(&l);
		print_error("echoload exit %d: %s\n", rc, log);
		free(log);
	}
	assert_int_equal(rc, 0);
	proc_cleanup(&l);
	const struct expect loaded[] = {
		{ "echod_connections_accepted_total", NULL, 18 },
		{ "echod_connections_active", NULL, 0 },
	};
	text = scrape_until(&s, loaded, sizeof(loaded) / sizeof(loaded[0]));
	double closed = metric(text, "echod_connections_closed_total", NULL);
	assert_true(closed == 18);
	assert_true(metric(text, "echod_bytes_received_total", NULL) ==
		    metric(text, "echod_bytes_sent_total", NULL));
	assert_true(metric(text, "echod_bytes_received_total", NULL) > 3620);
	free(text);
	assert_int_equal(proc_stop(&s.c, SIGTERM, 5000), 0);
	proc_cleanup(&s.c);
}

/* Prometheus's own checker on a live scrape: no problems, nothing printed. */
static void test_promtool_accepts_scrape(void **state)
{
	(void)state;
	if (system("command -v promtool >/dev/null 2>&1") != 0) {
		print_message("  [%s] skipped: promtool not installed (tools/install-deps installs "
			      "the prometheus package)\n", test_backend_name());
		skip();
	}
	struct server s;
	start_server(&s, NULL);
	int fd = echo_conn(s.c.port, 64);
	char *text = scrape(&s);
	end_clean(fd);
	char path[] = "/tmp/test_metrics.XXXXXX";
	int tf = mkstemp(path);
	assert_true(tf >= 0);
	assert_int_equal(write(tf, text, strlen(text)), (ssize_t)strlen(text));
	close(tf);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char out[4096];
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	unlink(path);
	if (st != 0 || n != 0)
		print_error("promtool check metrics: status %d:\n%s\n", st, out);
	assert_int_equal(st, 0);
	assert_int_equal(n, 0);
	free(text);
	assert_int_equal(proc_stop(&s.c, SIGTERM, 5000), 0);
	proc_cleanup(&s.c);
}

/* The UDP and PROXY counters carry their reasons as labels: a rate-capped address's drops, a
 * header accepted and one refused. */
static void test_udp_and_proxy_reasons(void **state)
{
	(void)state;
	struct server s;
	const char *more[] = { "--listen", "udp:127.0.0.1:0", "--udp-rate", "1", "--proxy-protocol",
			       NULL };
	start_server(&s, more);
	int uport = proc_udp_port(&s.c);
	assert_true(uport > 0);
	int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)uport),
				  .sin_addr.s_addr = htonl(0x7f000001) };
	for (int i = 0; i < 3; i++) /* one a second: the first answered, two dropped */
		assert_int_equal(sendto_retry(u, "x", 1, 0, (struct sockaddr *)&to, sizeof(to)), 1);
	int fd = tcp_connect(s.c.port);
	assert_true(fd >= 0);
	assert_int_equal(send_all(fd, "PROXY UNKNOWN\r\nab", 17), 0);
	char back[2];
	assert_int_equal(recv_exact(fd, back, 2), 2);
	int bad = tcp_connect(s.c.port);
	assert_true(bad >= 0);
	assert_int_equal(send_all(bad, "nonsense", 8), 0);
	const struct expect e[] = {
		{ "echod_udp_datagrams_received_total", NULL, 3 },
		{ "echod_udp_datagrams_echoed_total", NULL, 1 },
		{ "echod_udp_datagrams_dropped_total", "reason=\"rate\"", 2 },
		{ "echod_udp_datagrams_dropped_total", "reason=\"source_port\"", 0 },
		{ "echod_proxy_headers_total", "result=\"accepted\"", 1 },
		{ "echod_proxy_headers_total", "result=\"rejected\"", 1 },
		{ "echod_proxy_headers_total", "result=\"timeout\"", 0 },
	};
	free(scrape_until(&s, e, sizeof(e) / sizeof(e[0])));
	close(u);
	close(bad);
	end_clean(fd);
	assert_int_equal(proc_stop(&s.c, SIGTERM, 5000), 0);
	proc_cleanup(&s.c);
}

/* A client that sends and never reads keeps the drain going until --drain-timeout: /readyz says
 * 503 from the SIGTERM on, /healthz says 200 until the port closes with the process. */
static void test_threads_readyz_turns_at_sigterm(void **state)
{
	(void)state;
	struct server s;
	start_server(&s, (const char *const[]){ "--drain-timeout", "1.5", "--threads", "2", NULL });
	/* Ready once every worker has armed its listeners, a moment after the port is logged:
	 * what a balancer's probe sees at start-up ("starting: 1 of 2 workers listening"). */
	int ready = 0;
	for (uint64_t until = now_ms() + 2000; now_ms() < until; usleep(5000))
		if ((ready = http(s.mport, "GET", "/readyz", NULL)) == 200)
			break;
	assert_int_equal(ready, 200);
	assert_int_equal(http(s.mport, "GET", "/healthz", NULL), 200);
	/* The stuck client: fill its socket and the server's queue until sends stop going in. */
	int fd = tcp_connect(s.c.port);
	assert_true(fd >= 0);
	set_nonblock(fd);
	static char chunk[65536];
	uint64_t end = now_ms() + 3000, last_progress = now_ms();
	while (now_ms() < end && now_ms() - last_progress < 150) {
		ssize_t n = send_retry(fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
		if (n > 0)
			last_progress = now_ms();
		else
			usleep(5000);
	}
	uint64_t t0 = now_ms();
	assert_int_equal(kill(s.c.pid, SIGTERM), 0);
	for (uint64_t until = now_ms() + 1000; now_ms() < until; usleep(5000))
		if ((ready = http(s.mport, "GET", "/readyz", NULL)) == 503)
			break;
	assert_int_equal(ready, 503);
	print_message("  [%s] /readyz 503 %llu ms after SIGTERM\n", test_backend_name(),
		      (unsigned long long)(now_ms() - t0));
	/* Until the exit: every answer is 200, and the drain really lasted (the client held it). */
	int health = 0, answers = 0;
	uint64_t last_200 = 0;
	for (uint64_t until = now_ms() + 5000; now_ms() < until; usleep(20000)) {
		health = http(s.mport, "GET", "/healthz", NULL);
		if (health < 0)
			break; /* the port closed: the process is exiting */
		if (health != 200) {
			char *body = NULL;
			http(s.mport, "GET", "/healthz", &body);
			print_error("/healthz %d during the drain: %s\n", health, body);
			free(body);
		}
		assert_int_equal(health, 200);
		answers++;
		last_200 = now_ms();
	}
	assert_int_equal(health, -1);
	assert_true(last_200 - t0 >= 1000); /* 200 through the drain, not just its first moment */
	assert_true(answers > 10);
	assert_int_equal(proc_wait(&s.c, 5000), 0);
	close(fd);
	proc_cleanup(&s.c);
}

/* --drain-grace: from the SIGTERM /readyz says 503, yet for the grace echod serves as before,
 * new connections included, so a balancer can move new clients away while open ones finish;
 * then the drain: an idle client gets its EOF, and the process exits 0. */
static void test_drain_grace_serves_then_drains(void **state)
{
	(void)state;
	struct server s;
	start_server(&s, (const char *const[]){ "--drain-grace", "0.8", "--drain-timeout", "1",
						NULL });
	int ready = 0;
	for (uint64_t until = now_ms() + 2000; now_ms() < until; usleep(5000))
		if ((ready = http(s.mport, "GET", "/readyz", NULL)) == 200)
			break;
	assert_int_equal(ready, 200);
	int open_fd = tcp_connect(s.c.port);
	assert_true(open_fd >= 0);
	char back[8];
	assert_int_equal(send_all(open_fd, "before", 6), 0);
	assert_int_equal(recv_exact(open_fd, back, 6), 6);
	uint64_t t0 = now_ms();
	assert_int_equal(kill(s.c.pid, SIGTERM), 0);
	for (uint64_t until = now_ms() + 500; now_ms() < until; usleep(5000))
		if ((ready = http(s.mport, "GET", "/readyz", NULL)) == 503)
			break;
	assert_int_equal(ready, 503);
	/* Inside the grace: the open connection echoes, a new one is accepted and echoes. */
	assert_int_equal(send_all(open_fd, "during", 6), 0);
	assert_int_equal(recv_exact(open_fd, back, 6), 6);
	assert_memory_equal(back, "during", 6);
	int late_fd = tcp_connect(s.c.port);
	assert_true(late_fd >= 0);
	assert_int_equal(send_all(late_fd, "late", 4), 0);
	assert_int_equal(recv_exact(late_fd, back, 4), 4);
	assert_memory_equal(back, "late", 4);
	assert_true(now_ms() - t0 < 800); /* all of that inside the grace */
	/* The grace over: the drain half-closes both; EOF, not a reset, and not before. */
	assert_int_equal(recv_retry(open_fd, back, 1, 0), 0);
	uint64_t eof_ms = now_ms() - t0;
	assert_int_equal(recv_retry(late_fd, back, 1, 0), 0);
	print_message("  [%s] EOF %llu ms after SIGTERM (grace 800 ms)\n", test_backend_name(),
		      (unsigned long long)eof_ms);
	assert_true(eof_ms >= 790);
	close(open_fd);
	close(late_fd);
	assert_int_equal(proc_wait(&s.c, 3000), 0);
	char *log = proc_log(&s.c);
	assert_non_null(strstr(log, "event=stopping signal=TERM drain_grace_ms=800"));
	assert_non_null(strstr(log, "event=drain msg=\"grace over"));
	free(log);
	proc_cleanup(&s.c);
}

/* A second SIGTERM during a long grace stops at once, as during a drain: a cut. */
static void test_second_signal_cuts_the_grace(void **state)
{
	(void)state;
	struct server s;
	start_server(&s, (const char *const[]){ "--drain-grace", "30", NULL });
	int fd = tcp_connect(s.c.port);
	assert_true(fd >= 0);
	char back[2];
	assert_int_equal(send_all(fd, "hi", 2), 0);
	assert_int_equal(recv_exact(fd, back, 2), 2);
	assert_int_equal(kill(s.c.pid, SIGTERM), 0);
	int ready = 0;
	for (uint64_t until = now_ms() + 1000; now_ms() < until; usleep(5000))
		if ((ready = http(s.mport, "GET", "/readyz", NULL)) == 503)
			break;
	assert_int_equal(ready, 503);
	uint64_t t0 = now_ms();
	assert_int_equal(kill(s.c.pid, SIGTERM), 0);
	assert_int_equal(proc_wait(&s.c, 3000), 0);
	print_message("  [%s] exit %llu ms after the second SIGTERM\n", test_backend_name(),
		      (unsigned long long)(now_ms() - t0));
	assert_true(proc_log_has(&s.c, "event=cut signal=TERM conns=1"));
	close(fd);
	proc_cleanup(&s.c);
}

/* Once, on the default backend: a bad request to the metrics port costs the echo path nothing.
 * Malformed lines, 100 KB of headers, a thousand connections and a one-byte-a-second client at
 * once, while echoload measures; the rate stays within noise of the unloaded one and echod's
 * memory stays bounded. */
static double echo_rate(int port)
{
	return test_echo_rate(port, 20, 0.5).msgs_per_s;
}

static void test_hostile_scrapers(void **state)
{
	(void)state;
	raise_nofile();
	struct server s;
	start_server(&s, NULL);
	double before[3], during[3];
	for (int i = 0; i < 3; i++)
		before[i] = echo_rate(s.c.port);
	long rss0 = proc_rss_kb(s.c.pid);

	/* The hostile clients: a thousand connections held open (each with half a request), one
	 * that dribbles a byte at a time, and bad requests between the measurements. */
	enum { HOLD = 1000 };
	static int held[HOLD];
	int nheld = 0;
	for (int i = 0; i < HOLD; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (fd < 0)
			break;
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(s.mport),
					 .sin_addr.s_addr = htonl(0x7f000001) };
		if (connect_retry(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
			close(fd);
			break;
		}
		held[nheld++] = fd;
	}
	for (int i = 0; i < nheld; i++)
		(void)send_retry(held[i], "GET /metr", 9, MSG_NOSIGNAL);
	int loris = tcp_connect(s.mport);
	assert_true(loris >= 0);
	static char big[100 * 1024 + 64];
	for (int i = 0; i < 3; i++) {
		(void)send_retry(loris, "G", 1, MSG_NOSIGNAL);
		int bad = tcp_connect(s.mport);
		if (bad >= 0) {
			(void)send_all(bad, "\x01\x02 nonsense\r\n\r\n", 15);
			close(bad);
		}
		bad = tcp_connect(s.mport);
		if (bad >= 0) {
			int len = snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nX: ");
			memset(big + len, 'a', sizeof(big) - (size_t)len - 4);
			memcpy(big + sizeof(big) - 4, "\r\n\r\n", 4);
			(void)send_retry(bad, big, sizeof(big), MSG_NOSIGNAL);
			close(bad);
		}
		during[i] = echo_rate(s.c.port);
	}
	long rss1 = proc_rss_kb(s.c.pid);
	for (int i = 0; i < nheld; i++)
		close(held[i]);
	close(loris);
	/* Medians of three: the machine is shared and noisy (±30%); a scraper that reached the
	 * echo path would cost far more than that. */
	double b = before[0], d = during[0];
	for (int i = 0; i < 3; i++) {
		int lb = 0, ld = 0;
		for (int j = 0; j < 3; j++) {
			lb += before[j] < before[i];
			ld += during[j] < during[i];
		}
		if (lb == 1)
			b = before[i];
		if (ld == 1)
			d = during[i];
	}
	print_message("  [%s] echo rate %.0f msgs/s alone, %.0f under hostile scrapers (%d held "
		      "connections); rss %ld -> %ld KiB\n", test_backend_name(), b, d, nheld, rss0,
		      rss1);
	assert_true(b > 0);
	assert_true(d > b * 0.5);
	assert_true(rss1 - rss0 < 16 * 1024);
	/* Still serving, both ports. */
	assert_true(hello_echoed(s.c.port));
	assert_int_equal(http(s.mport, "GET", "/healthz", NULL), 200);
	assert_int_equal(proc_stop(&s.c, SIGTERM, 5000), 0);
	proc_cleanup(&s.c);
}

/* The edge: --metrics on an echod without libmicrohttpd is exit 69 and one line saying so; a
 * metrics address already in use is exit 71 and one line naming it, like a busy --listen. */
static void test_cli_refusals(void **state)
{
	(void)state;
	struct child c;
	int st = 0;
#ifndef ECHOD_HAVE_MHD
	const char *args[] = { "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", NULL };
	assert_int_equal(echod_start(&c, 0, &st, args), -1);
	assert_int_equal(st, 69);
	char *log = proc_log(&c);
	assert_non_null(strstr(log, "echod: --metrics: this echod was built without libmicrohttpd"));
	assert_null(strchr(strchr(log, '\n') + 1, '\n')); /* one line */
	free(log);
	proc_cleanup(&c);
#else
	int busy = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t alen = sizeof(a);
	assert_int_equal(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(busy, 1), 0);
	assert_int_equal(getsockname(busy, (struct sockaddr *)&a, &alen), 0);
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(a.sin_port));
	const char *args[] = { "--listen", "127.0.0.1:0", "--metrics", addr, NULL };
	assert_int_equal(echod_start(&c, 0, &st, args), -1);
	close(busy);
	assert_int_equal(st, 71);
	char want[96];
	snprintf(want, sizeof(want), "echod: cannot serve metrics on %s: Address already in use\n",
		 addr);
	char *log = proc_log(&c);
	assert_string_equal(log, want);
	free(log);
	proc_cleanup(&c);
#endif
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_threads_exact_deltas, test_kill_strays),
		cmocka_unit_test_teardown(test_threads_readyz_turns_at_sigterm, test_kill_strays),
	};
	int failed = test_run_per_backend("metrics", tests, sizeof(tests) / sizeof(tests[0]));
	/* Once, on the default backend: the exposition and the metrics port are the same code
	 * whatever the backend (the per-backend cases above check the values). */
	const struct CMUnitTest once[] = {
		cmocka_unit_test_teardown(test_promtool_accepts_scrape, test_kill_strays),
		cmocka_unit_test_teardown(test_hostile_scrapers, test_kill_strays),
		cmocka_unit_test_teardown(test_udp_and_proxy_reasons, test_kill_strays),
		cmocka_unit_test_teardown(test_drain_grace_serves_then_drains, test_kill_strays),
		cmocka_unit_test_teardown(test_second_signal_cuts_the_grace, test_kill_strays),
	};
	failed += cmocka_run_group_tests_name("metrics/once", once, NULL, NULL);
	const struct CMUnitTest cli[] = {
		cmocka_unit_test_teardown(test_cli_refusals, test_kill_strays),
	};
	failed += cmocka_run_group_tests_name("metrics/cli", cli, NULL, NULL);
	return failed ? 1 : 0;
}
