/* test_uring.c - the situations io_uring makes hard, against the two io_uring backends
 * ("uring", "uring-poll"): a buffer ring far smaller than the number of senders, a completion
 * queue far smaller than one pass's completions (it must overflow, and nothing be lost), peers
 * that go away while the kernel still holds sends for them, and thousands of connections that
 * come and go without leaking an fd or a pool buffer.
 *
 * Two cases run the echo core in this process over real loopback sockets (the client side is
 * non-blocking and interleaved with loop_run_once), so the pool and the fd table can be
 * inspected exactly; one runs the echod binary (<dir of argv[0]>/../echod) and watches its fds.
 * Two run echod with io_uring_setup refused by a seccomp filter (tests/helper_nouring): the
 * named backend must refuse in one line and exit 69, auto must fall back to epoll and say why.
 * A backend missing from this build or refused by this kernel is skipped, not failed.
 * Everything is bounded: deadlines on every loop, an alarm for a hang.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#include "echo.h"
#include "lib_proc.h"
#include "reactor.h"
#ifdef ECHOD_HAVE_URING
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <time.h>

#include "uring_common.h"
#endif

#define TEST_ALARM_S 60

static const struct backend *be;

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "test_uring: a test hung (alarm); backend: ";
	(void)!write(2, msg, sizeof(msg) - 1);
	(void)!write(2, be->name, strlen(be->name));
	(void)!write(2, "\n", 1);
	_exit(3);
}

static int setup(void **state)
{
	(void)state;
	signal(SIGALRM, on_alarm);
	alarm(TEST_ALARM_S);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	alarm(0);
	proc_kill_strays(); /* a failed test's echod must not outlive it */
	return 0;
}

static int count_own_fds(void)
{
	return proc_count_fds(getpid());
}

/* --- an echo server in this process ------------------------------------------------------- */

struct inproc {
	struct loop loop;
	struct echo_server srv;
	int port;
};

static void inproc_start_depth(struct inproc *s, uint32_t nbufs, uint32_t bufsize,
			       uint32_t conn_buffer, uint32_t queue_depth)
{
	struct loop_config cfg = { .nbufs = nbufs, .bufsize = bufsize, .max_fds = 4096,
				   .queue_depth = queue_depth };
	assert_int_equal(loop_init(&s->loop, be, &cfg), 0);
	struct echo_limits lim = { .max_conns = 20000, .conn_buffer = conn_buffer,
				   .idle_timeout_ms = 0, .drain_timeout_ms = 2000 };
	assert_int_equal(echo_server_init(&s->srv, &s->loop, &lim), 0);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sl), 0);
	assert_int_equal(listen(l, 4096), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(echo_server_listen(&s->srv, l), 0);
}

static void inproc_start(struct inproc *s, uint32_t nbufs, uint32_t bufsize, uint32_t conn_buffer)
{
	inproc_start_depth(s, nbufs, bufsize, conn_buffer, 0);
}

/* Graceful stop, run to completion. */
static void inproc_stop(struct inproc *s)
{
	echo_server_stop(&s->srv);
	uint64_t dl = now_ms() + 5000;
	while (!s->loop.stop && now_ms() < dl)
		assert_int_equal(loop_run_once(&s->loop, 10), 0);
	assert_true(echo_server_done(&s->srv));
	s->loop.stop = false; /* the loop itself goes on, for assert_whole_pool */
}

/* Loop iterations in `ms` with nothing to do: a sleeping loop makes about ms / 10. */
static long idle_iterations(struct loop *loop, int ms)
{
	long n = 0;
	uint64_t dl = now_ms() + (uint64_t)ms;
	while (now_ms() < dl) {
		assert_int_equal(loop_run_once(loop, 10), 0);
		n++;
	}
	return n;
}

static int client_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	/* Loopback: the handshake completes in the kernel, no accept needed yet. */
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_nonblock(fd);
	return fd;
}

/* n clients that each send `len` pattern bytes (at most `chunk` per send) while reading the
 * echo back, interleaved with loop iterations, until everything is back or 20 s pass; then
 * every client's echo is compared byte for byte. The clients stay connected until
 * streams_close(). */
#define STREAMS_MAX 64
struct streams {
	int n;
	size_t len;
	int fd[STREAMS_MAX];
	uint8_t *out[STREAMS_MAX], *back[STREAMS_MAX];
	size_t sent[STREAMS_MAX], got[STREAMS_MAX];
};

/* Returns the milliseconds it took. */
static uint64_t streams_run(struct inproc *s, struct streams *st, int n, size_t len, size_t chunk,
			    uint32_t seed)
{
	assert_true(n <= STREAMS_MAX);
	st->n = n;
	st->len = len;
	for (int i = 0; i < n; i++) {
		st->fd[i] = client_connect(s->port);
		st->out[i] = malloc(len);
		st->back[i] = malloc(len);
		assert_non_null(st->out[i]);
		assert_non_null(st->back[i]);
		pattern_fill(st->out[i], len, seed + (uint32_t)i);
		st->sent[i] = st->got[i] = 0;
	}
	size_t total = 0;
	uint64_t t0 = now_ms(), dl = t0 + 20000;
	while (total < (size_t)n * len && now_ms() < dl) {
		for (int i = 0; i < n; i++) {
			if (st->sent[i] < len) {
				size_t want = len - st->sent[i] > chunk ? chunk : len - st->sent[i];
				ssize_t k = send(st->fd[i], st->out[i] + st->sent[i], want, MSG_NOSIGNAL);
				if (k > 0)
					st->sent[i] += (size_t)k;
			}
			ssize_t k = recv(st->fd[i], st->back[i] + st->got[i], len - st->got[i], 0);
			if (k > 0) {
				st->got[i] += (size_t)k;
				total += (size_t)k;
			}
		}
		assert_int_equal(loop_run_once(&s->loop, 0), 0);
	}
	uint64_t took = now_ms() - t0;
	for (int i = 0; i < n; i++) {
		if (st->got[i] != len)
			print_error("[%s] conn %d: %zu of %zu bytes back\n", be->name, i, st->got[i], len);
		assert_int_equal(st->got[i], len);
		assert_memory_equal(st->back[i], st->out[i], len);
	}
	return took;
}

static void streams_close(struct streams *st)
{
	for (int i = 0; i < st->n; i++) {
		close(st->fd[i]);
		free(st->out[i]);
		free(st->back[i]);
	}
	st->n = 0;
}

/* Hold every buffer of the pool with one recv that never releases: exactly nbufs must come
 * out before -ENOBUFS, or some buffer was lost on the way (the kernel ring or the stack). */
struct holder {
	struct op op;
	uint32_t bids[1024];
	uint32_t n;
	int final_res;
	bool final;
};

static void on_hold(struct loop *loop, struct op *op, int res, unsigned fl)
{
	(void)loop;
	struct holder *h = op->owner;
	if ((fl & OPF_BUFFER) && h->n < 1024)
		h->bids[h->n++] = op->buf.bid;
	if (!(fl & OPF_MORE)) {
		h->final = true;
		h->final_res = res;
	}
}

/* A nonblocking socketpair and a multishot recv on sv[0] that holds every buffer it gets. */
static void hold_recv(struct loop *loop, int sv[2], struct holder *h)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	set_nonblock(sv[0]);
	set_nonblock(sv[1]);
	*h = (struct holder){ .op = { .code = OP_RECV, .fd = sv[0], .done = on_hold } };
	h->op.owner = h;
	assert_int_equal(loop_submit(loop, &h->op), 0);
}

static void assert_whole_pool(struct loop *loop)
{
	int sv[2];
	struct holder h;
	hold_recv(loop, sv, &h);
	uint64_t dl = now_ms() + 5000;
	while (!h.final && now_ms() < dl) {
		uint32_t before = h.n;
		assert_int_equal(send(sv[1], "0123456789abcdef", 16, MSG_NOSIGNAL), 16);
		while (h.n == before && !h.final && now_ms() < dl)
			assert_int_equal(loop_run_once(loop, 10), 0);
	}
	assert_true(h.final);
	print_message("  [%s] pool check: %u of %u buffers handed out, then %s\n", be->name, h.n,
		      loop->pool.nbufs, strerror(-h.final_res));
	assert_int_equal(h.final_res, -ENOBUFS);
	assert_int_equal(h.n, loop->pool.nbufs);
	for (uint32_t i = 0; i < h.n; i++)
		loop_buf_release(loop, h.bids[i]);
	close(sv[0]);
	close(sv[1]);
}

/* --- which buffers get used --------------------------------------------------------------- */

/* One message at a time, each buffer given back before the next: the loop must keep reusing a
 * few warm buffers, not walk the whole pool in ring order (whose pages would all stay
 * resident: what 10,000 idle connections that each echoed a byte cost in bench/RESULTS.md). */
static void test_few_warm_buffers_serve_sequential_messages(void **state)
{
	(void)state;
	struct loop loop;
	struct loop_config cfg = { .nbufs = 1024, .bufsize = 4096, .max_fds = 1024 };
	assert_int_equal(loop_init(&loop, be, &cfg), 0);
	int sv[2];
	struct holder h;
	hold_recv(&loop, sv, &h);
	static bool used[1024];
	memset(used, 0, sizeof(used));
	uint32_t distinct = 0;
	uint64_t dl = now_ms() + 5000;
	for (int i = 0; i < 300 && !h.final && now_ms() < dl; i++) {
		assert_int_equal(send(sv[1], "x", 1, MSG_NOSIGNAL), 1);
		while (h.n == 0 && !h.final && now_ms() < dl)
			assert_int_equal(loop_run_once(&loop, 10), 0);
		assert_int_equal(h.n, 1);
		distinct += !used[h.bids[0]];
		used[h.bids[0]] = true;
		loop_buf_release(&loop, h.bids[0]);
		h.n = 0;
	}
	print_message("  [%s] 300 messages one after another used %u distinct buffers of %u\n",
		      be->name, distinct, cfg.nbufs);
	assert_false(h.final);
	assert_true(distinct <= 64);
	loop_cancel(&loop, &h.op);
	while (!h.final && now_ms() < dl + 2000)
		assert_int_equal(loop_run_once(&loop, 10), 0);
	assert_true(h.final);
	for (uint32_t i = 0; i < h.n; i++)
		loop_buf_release(&loop, h.bids[i]);
	loop_fini(&loop);
	close(sv[0]);
	close(sv[1]);
}

/* --- buffer ring exhaustion ---------------------------------------------------------------- */

/* 20 connections stream 64 KiB each at once through a pool of 4 buffers: the ring runs dry
 * over and over. Every byte must come back in order, the loop must sleep once the clients are
 * done, and every buffer must be back in the pool at the end. */
static void test_tiny_pool_many_senders(void **state)
{
	(void)state;
	enum { N = 20, LEN = 64 * 1024 };
	int fds0 = count_own_fds();
	struct inproc s;
	inproc_start(&s, 4, 2048, 16 * 1024);
	struct streams st;
	uint64_t took = streams_run(&s, &st, N, LEN, 3000, 100);
	print_message("  [%s] 4 buffers, %d senders: %d x %d bytes echoed in %llu ms, pool dry %llu "
		      "times, %llu pauses\n", be->name, N, N, LEN, (unsigned long long)took,
		      (unsigned long long)s.srv.stats.enobufs,
		      (unsigned long long)s.srv.stats.paused);
	long iters = idle_iterations(&s.loop, 100);
	assert_true(iters < 40); /* no spin with the pool (nearly) dry and clients idle */
	assert_int_equal(s.srv.bufs_held, 0);
	streams_close(&st);
	inproc_stop(&s);
	echo_server_fini(&s.srv);
	assert_whole_pool(&s.loop);
	loop_fini(&s.loop);
	assert_int_equal(count_own_fds(), fds0);
}

/* --- connect/close churn ------------------------------------------------------------------- */

/* 10,000 connections, each one echo and a close of one of three kinds (FIN, FIN after
 * shutdown, RST), with fd numbers reused all the time. Nothing may be left: every connection
 * accepted is closed, no pool buffer is held or lost, the process has the fds it started with. */
static void test_10k_connect_close(void **state)
{
	(void)state;
	enum { CYCLES = 10000 };
	int fds0 = count_own_fds();
	struct inproc s;
	inproc_start(&s, 16, 4096, 64 * 1024);
	uint64_t t0 = now_ms(), dl = t0 + 40000;
	int done = 0;
	for (; done < CYCLES && now_ms() < dl; done++) {
		int fd = client_connect(s.port);
		char b = (char)('a' + done % 26), r = 0;
		assert_int_equal(send(fd, &b, 1, MSG_NOSIGNAL), 1);
		ssize_t k = -1;
		uint64_t d1 = now_ms() + 2000;
		while ((k = recv(fd, &r, 1, 0)) < 0 && errno == EAGAIN && now_ms() < d1)
			assert_int_equal(loop_run_once(&s.loop, 1), 0);
		assert_int_equal(k, 1);
		assert_int_equal(r, b);
		switch (done % 3) {
		case 0:
			break;
		case 1:
			shutdown(fd, SHUT_WR);
			break;
		case 2: {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			break;
		}
		}
		close(fd);
		assert_int_equal(loop_run_once(&s.loop, 0), 0);
	}
	assert_int_equal(done, CYCLES);
	/* Let the server see the last closes. */
	uint64_t d2 = now_ms() + 5000;
	while (s.srv.stats.conns > 0 && now_ms() < d2)
		assert_int_equal(loop_run_once(&s.loop, 10), 0);
	print_message("  [%s] %d connect/echo/close cycles in %llu ms: accepted %llu, closed %llu, "
		      "open %u\n", be->name, CYCLES, (unsigned long long)(now_ms() - t0),
		      (unsigned long long)s.srv.stats.accepted,
		      (unsigned long long)echo_stats_closed(&s.srv.stats), s.srv.stats.conns);
	assert_int_equal(s.srv.stats.conns, 0);
	assert_int_equal(s.srv.stats.accepted, CYCLES);
	assert_int_equal(echo_stats_closed(&s.srv.stats), CYCLES);
	assert_int_equal(s.srv.bufs_held, 0);
	/* The listener (and the loop's ring) are all the fds the server has left. */
	int fds_running = count_own_fds();
	inproc_stop(&s);
	echo_server_fini(&s.srv);
	assert_whole_pool(&s.loop);
	loop_fini(&s.loop);
	int fds1 = count_own_fds();
	print_message("  [%s] fds: %d before, %d while idle, %d after\n", be->name, fds0,
		      fds_running, fds1);
	assert_true(fds_running <= fds0 + 3);
	assert_int_equal(fds1, fds0);
}

/* --- peers leaving with sends in flight (the echod binary) --------------------------------- */

static long log_stat(const struct child *c, const char *key)
{
	char *log = proc_log(c);
	const char *p = strstr(log, "event=stopped");
	long v = -1;
	if (p && (p = strstr(p, key)))
		v = atol(p + strlen(key));
	free(log);
	return v;
}

/* Clients push megabytes and never read, so echod's sends sit in the kernel (io_uring holds
 * them, or waits for POLLOUT), then go away: a third with RST, a third with close(), a third
 * half-close first. echod must notice every one, close its side, give back the fds, keep
 * serving, and stop at once on SIGTERM (nothing left to drain). */
static void test_peer_closes_with_sends_in_flight(void **state)
{
	(void)state;
	enum { N = 24 };
	struct child c;
	const char *args[] = { "--listen", "127.0.0.1:0", "--backend", be->name, "--conn-buffer",
			       "256K", "--drain-timeout", "5", NULL };
	int st = 0;
	if (echod_start(&c, 0, &st, args) < 0) {
		char *log = proc_log(&c);
		print_error("echod --backend %s did not start (status %d):\n%s\n", be->name, st, log);
		free(log);
		fail();
	}
	usleep(100 * 1000);
	int fds0 = proc_count_fds(c.pid);
	int fd[N];
	static uint8_t chunk[65536];
	for (int i = 0; i < N; i++) {
		fd[i] = client_connect(c.port);
		int small = 16384;
		setsockopt(fd[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	/* Push until the server has stopped taking bytes from every client. */
	uint64_t dl = now_ms() + 3000;
	size_t pushed = 0;
	while (now_ms() < dl) {
		bool any = false;
		for (int i = 0; i < N; i++) {
			ssize_t k = send(fd[i], chunk, sizeof(chunk), MSG_NOSIGNAL);
			if (k > 0) {
				pushed += (size_t)k;
				any = true;
			}
		}
		if (!any) {
			usleep(200 * 1000); /* quiet: has everybody stalled for good? */
			bool more = false;
			for (int i = 0; i < N && !more; i++)
				more = send(fd[i], chunk, 1, MSG_NOSIGNAL) > 0;
			if (!more)
				break;
		}
	}
	int fds_busy = proc_count_fds(c.pid);
	for (int i = 0; i < N; i++) {
		if (i % 3 == 0) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			setsockopt(fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		} else if (i % 3 == 1) {
			shutdown(fd[i], SHUT_WR);
		}
		close(fd[i]);
	}
	uint64_t d2 = now_ms() + 5000;
	int fds_now = proc_count_fds(c.pid);
	while (fds_now > fds0 && now_ms() < d2) {
		usleep(20 * 1000);
		fds_now = proc_count_fds(c.pid);
	}
	print_message("  [%s] %d stalled clients pushed %zu bytes; echod fds %d idle, %d busy, "
		      "%d after they left\n", be->name, N, pushed, fds0, fds_busy, fds_now);
	assert_true(fds_busy >= fds0 + N);
	assert_int_equal(fds_now, fds0);
	/* Still serving. */
	assert_true(hello_echoed(c.port));
	uint64_t t = now_ms();
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	uint64_t took = now_ms() - t;
	long accepted = log_stat(&c, "accepted="), closed = log_stat(&c, "closed=");
	print_message("  [%s] SIGTERM to exit: %llu ms; accepted %ld, closed %ld\n", be->name,
		      (unsigned long long)took, accepted, closed);
	assert_true(took < 2000); /* nothing was left to drain */
	assert_int_equal(accepted, N + 1);
	assert_int_equal(closed, N + 1);
	proc_cleanup(&c);
}

/* --- completion queue overflow ------------------------------------------------------------ */

/* A ring of 4 SQEs and 16 CQEs under 64 streaming connections and small buffers: one kernel
 * pass posts far more completions than the CQ holds, so the kernel keeps the rest on its
 * overflow list (and ends multishot recvs that could not post). Every byte must still come
 * back in order, the overflow must really have happened, and the pool must be whole after. */
static void test_cq_overflow(void **state)
{
	(void)state;
#ifndef ECHOD_HAVE_URING
	skip(); /* no io_uring backend in this build */
#else
	enum { N = 64, LEN = 32 * 1024 };
	struct inproc s;
	inproc_start_depth(&s, 256, 512, 16 * 1024, 4);
	struct streams st;
	uint64_t took = streams_run(&s, &st, N, LEN, LEN, 7);
	print_message("  [%s] SQ 4 / CQ %u: %d x %d bytes echoed in %llu ms, CQ overflowed in %llu "
		      "waits\n", be->name, s.loop.cq_entries, N, LEN, (unsigned long long)took,
		      (unsigned long long)s.loop.cq_overflows);
	assert_true(s.loop.cq_overflows > 0);
	streams_close(&st);
	inproc_stop(&s);
	echo_server_fini(&s.srv);
	assert_whole_pool(&s.loop);
	loop_fini(&s.loop);
#endif
}

/* --- io_uring refused (kernel.io_uring_disabled, seccomp) --------------------------------- */

/* Asked for by name, the backend says in one line why it cannot run and what to use instead,
 * and echod exits 69 without listening. */
static void test_refused_when_io_uring_blocked(void **state)
{
	(void)state;
	struct child c;
	int st = -1;
	const char *args[] = { "--backend", be->name, "--listen", "127.0.0.1:0", NULL };
	int rc = echod_start_via(&c, "helper_nouring", &st, args);
	if (rc == 0)
		proc_stop(&c, SIGKILL, 2000);
	char *log = proc_log(&c);
	proc_cleanup(&c);
	if (st == 125) {
		free(log);
		skip(); /* no seccomp here */
	}
	print_message("  [%s] blocked: exit %d: %s", be->name, st, log);
	assert_int_equal(rc, -1);
	assert_int_equal(st, 69);
	int lines = 0;
	for (const char *p = log; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 1);
	assert_non_null(strstr(log, "cannot run here: Operation not permitted"));
	assert_non_null(strstr(log, "kernel.io_uring_disabled"));
	assert_non_null(strstr(log, "try --backend epoll"));
	assert_null(strstr(log, "event=listening"));
	free(log);
}

/* --backend auto skips io_uring, logs why, and serves on epoll. */
static void test_auto_falls_back_when_io_uring_blocked(void **state)
{
	(void)state;
	struct child c;
	int st = -1;
	const char *args[] = { "--backend", "auto", "--listen", "127.0.0.1:0", NULL };
	int rc = echod_start_via(&c, "helper_nouring", &st, args);
	if (rc < 0 && st == 125) {
		proc_cleanup(&c);
		skip();
	}
	assert_int_equal(rc, 0);
	assert_true(proc_log_has(&c, "event=backend name=epoll chosen_by=auto "
				     "skipped=\"uring: Operation not permitted\""));
	assert_true(hello_echoed(c.port));
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	proc_cleanup(&c);
}

/* --- newer io_uring features: the probe against independent checks ------------------------- */

#ifdef ECHOD_HAVE_URING
/* The kernel's values (include/uapi/linux/io_uring.h), which liburing 2.3 lacks; spelled out
 * here rather than taken from uring_common.c, so that a wrong value there shows. */
#define T_FEAT_RECVSEND_BUNDLE (1u << 14) /* 6.10 */
#define T_FEAT_MIN_TIMEOUT (1u << 15)     /* 6.12 */
#define T_RECVSEND_BUNDLE (1u << 4)       /* 6.10, sqe->ioprio */
#define T_PBUF_RING_INC 2u                /* 6.12, io_uring_buf_reg's flags (2.3: "pad") */

/* A buffer ring of n buffers of `size` bytes in group bgid of ring r, registered with the
 * given flags; returns the mapping (ring, then the buffers) or NULL with *err. */
static void *t_bufring(struct io_uring *r, uint16_t bgid, unsigned n, unsigned size,
		       uint16_t flags, int *err, size_t *bytes)
{
	*bytes = 4096 + (size_t)n * size;
	void *mem = mmap(NULL, *bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(mem != MAP_FAILED);
	struct io_uring_buf_ring *br = mem;
	io_uring_buf_ring_init(br);
	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(br, (char *)mem + 4096 + (size_t)i * size, size,
				      (unsigned short)i, (int)(n - 1), (int)i);
	io_uring_buf_ring_advance(br, (int)n);
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)mem;
	reg.ring_entries = n;
	reg.bgid = bgid;
	memcpy((char *)&reg + offsetof(struct io_uring_buf_reg, bgid) + 2, &flags, 2); /* flags */
	*err = io_uring_register(r->ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1);
	if (*err < 0) {
		munmap(mem, *bytes);
		return NULL;
	}
	return mem;
}

/* The first CQE within 1 s (the ring is the test's own, plain set-up). */
static struct io_uring_cqe t_cqe(struct io_uring *r)
{
	struct io_uring_cqe *cqe = NULL, copy = { .res = -ETIME };
	struct __kernel_timespec ts = { .tv_sec = 1 };
	if (io_uring_wait_cqe_timeout(r, &cqe, &ts) == 0) {
		copy = *cqe;
		io_uring_cqe_seen(r, cqe);
	}
	return copy;
}

/* Does a multishot accept into a kernel-picked direct descriptor take a real connection? */
static bool t_direct_accept_works(struct io_uring *r)
{
	if (io_uring_register_files_sparse(r, 4) < 0)
		return false;
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t sl = sizeof(sa_family_t);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sl), 0); /* autobind: abstract name */
	assert_int_equal(listen(l, 4), 0);
	sl = sizeof(sa);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);
	io_uring_prep_multishot_accept_direct(sqe, l, NULL, NULL, 0);
	sqe->user_data = 1;
	assert_int_equal(io_uring_submit(r), 1);
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c >= 0);
	assert_int_equal(connect(c, (struct sockaddr *)&sa, sl), 0);
	struct io_uring_cqe cqe = t_cqe(r);
	/* A slot index (not an fd) and the accept still armed; EINVAL on a kernel without it. */
	bool works = cqe.user_data == 1 && cqe.res >= 0 && cqe.res < 4 &&
		     (cqe.flags & IORING_CQE_F_MORE);
	print_message("  [%s] direct accept by hand: res %d, flags %#x\n", be->name, cqe.res,
		      cqe.flags);
	if (cqe.flags & IORING_CQE_F_MORE) {
		sqe = io_uring_get_sqe(r);
		io_uring_prep_cancel64(sqe, 1, 0);
		sqe->user_data = 2;
		assert_true(io_uring_submit(r) >= 1);
		for (int i = 0; i < 2; i++)
			(void)t_cqe(r);
	}
	close(c);
	close(l);
	assert_int_equal(io_uring_unregister_files(r), 0);
	return works;
}

/* Does a bundle recv gather two buffers' worth of queued bytes in one completion? */
static bool t_recv_bundle_works(struct io_uring *r)
{
	int err = 0;
	size_t bytes = 0;
	void *mem = t_bufring(r, 9, 2, 8, 0, &err, &bytes);
	if (!mem)
		return false;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(write(sv[1], "0123456789abcdef", 16), 16);
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);
	io_uring_prep_recv(sqe, sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 9;
	sqe->ioprio |= T_RECVSEND_BUNDLE;
	sqe->user_data = 3;
	assert_int_equal(io_uring_submit(r), 1);
	struct io_uring_cqe cqe = t_cqe(r);
	print_message("  [%s] bundle recv by hand: res %d (two 8-byte buffers, 16 bytes queued)\n",
		      be->name, cqe.res);
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(io_uring_unregister_buf_ring(r, 9), 0);
	munmap(mem, bytes);
	return cqe.res > 0;
}

static void assert_features_equal(const struct uc_features *a, const struct uc_features *b)
{
	assert_int_equal(a->ring_fd, b->ring_fd);
	assert_int_equal(a->direct_accept, b->direct_accept);
	assert_int_equal(a->recv_bundle, b->recv_bundle);
	assert_int_equal(a->pbuf_inc, b->pbuf_inc);
	assert_int_equal(a->min_wait, b->min_wait);
	assert_int_equal(a->nodrop, b->nodrop);
	assert_int_equal(a->submit_stable, b->submit_stable);
}
#endif

/* What uc_init's probe found must be what the kernel does when asked by other means: the
 * feature bits of a ring of the test's own, and each feature used for real on that ring (a
 * connection accepted into a direct descriptor, a recv gathering two buffers, a buffer ring
 * registered with the incremental flag). And the probe run again without trusting the bits
 * (SQE probes only) must agree. */
static void test_feature_probe(void **state)
{
	(void)state;
#ifndef ECHOD_HAVE_URING
	skip(); /* no io_uring backend in this build */
#else
	struct loop loop;
	struct loop_config cfg = { .nbufs = 16, .bufsize = 4096, .max_fds = 1024 };
	assert_int_equal(loop_init(&loop, be, &cfg), 0);
	struct uc *uc = uc_of_loop(&loop);
	assert_non_null(uc);

	struct io_uring r;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	assert_int_equal(io_uring_queue_init_params(8, &r, &p), 0);
	struct uc_features want = {
		.ring_fd = io_uring_register_ring_fd(&r) == 1,
		.min_wait = p.features & T_FEAT_MIN_TIMEOUT,
		.nodrop = p.features & IORING_FEAT_NODROP,
		.submit_stable = p.features & IORING_FEAT_SUBMIT_STABLE,
	};
	int err = 0;
	size_t bytes = 0;
	void *inc = t_bufring(&r, 7, 1, 64, T_PBUF_RING_INC, &err, &bytes);
	want.pbuf_inc = inc != NULL;
	if (inc) {
		assert_int_equal(io_uring_unregister_buf_ring(&r, 7), 0);
		munmap(inc, bytes);
	} else {
		assert_int_equal(err, -EINVAL); /* refused, not failed */
	}
	want.direct_accept = t_direct_accept_works(&r);
	want.recv_bundle = t_recv_bundle_works(&r);
	/* The feature bit came with bundles: where it is set they must work. */
	if (p.features & T_FEAT_RECVSEND_BUNDLE)
		assert_true(want.recv_bundle);
	io_uring_queue_exit(&r);

	char line[512];
	uc_describe(&loop, line, sizeof(line));
	print_message("  [%s] %s\n", be->name, line);
	assert_features_equal(&uc->has, &want);
	struct uc_features again;
	assert_int_equal(uc_probe_features(uc, false, &again), 0);
	assert_features_equal(&again, &want);
	assert_int_equal(uc->probe_error, 0);
	/* Used: the registered ring fd when there is one, nothing else these backends do not
	 * say they use, and the line says so. */
	assert_int_equal(!!(uc->uses & UC_USE_RING_FD), want.ring_fd);
	assert_int_equal(!!(uc->enter_flags & IORING_ENTER_REGISTERED_RING), want.ring_fd);
	assert_int_equal(uc->uses & UC_USE_MIN_WAIT, 0); /* no ECHOD_URING_WAIT here */
	assert_int_equal(uc->wait_nr, 1);
	assert_non_null(strstr(line, want.ring_fd ? "registered ring fd on" :
					  "registered ring fd not in this kernel"));
	assert_non_null(strstr(line, "batched wait off"));
	/* The probes left nothing behind: the loop still echoes through its own ring. */
	loop_fini(&loop);
	assert_null(uc_of_loop(&loop));
#endif
}

/* ECHOD_URING_WAIT's syntax: whole decimal numbers in range, nothing else. */
static void test_wait_env_parse(void **state)
{
	(void)state;
#ifndef ECHOD_HAVE_URING
	skip();
#else
	unsigned nr = 99, us = 99;
	assert_int_equal(uc_wait_parse("8:50", &nr, &us), 0);
	assert_int_equal(nr, 8);
	assert_int_equal(us, 50);
	assert_int_equal(uc_wait_parse("4", &nr, &us), 0);
	assert_int_equal(nr, 4);
	assert_int_equal(us, 0);
	assert_int_equal(uc_wait_parse("1024:1000000", &nr, &us), 0);
	const char *bad[] = { "", "0", "1025", "4:", ":5", "4:1000001", "+4", " 4", "4 ", "4x",
			      "4:5:6", "-1", "0x10", "4:-1", "99999999999", "4:99999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		nr = us = 77;
		if (uc_wait_parse(bad[i], &nr, &us) != -EINVAL)
			fail_msg("ECHOD_URING_WAIT=\"%s\" was taken", bad[i]);
		assert_int_equal(nr, 77); /* left as it was */
	}
#endif
}

#ifdef ECHOD_HAVE_URING
/* A loop on `be` created with ECHOD_URING_WAIT=value (read by the backend's init only). */
static void loop_with_wait_env(struct loop *loop, const char *value)
{
	struct loop_config cfg = { .nbufs = 16, .bufsize = 4096, .max_fds = 1024 };
	assert_int_equal(setenv("ECHOD_URING_WAIT", value, 1), 0);
	int rc = loop_init(loop, be, &cfg);
	assert_int_equal(unsetenv("ECHOD_URING_WAIT"), 0);
	assert_int_equal(rc, 0);
}

static uint64_t t_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct lone_read {
	struct op op;
	uint64_t buf;
	uint64_t done_us; /* 0: not yet */
	int res;
};

static void on_lone_read(struct loop *loop, struct op *op, int res, unsigned fl)
{
	(void)loop;
	(void)fl;
	struct lone_read *r = op->owner;
	r->res = res;
	r->done_us = t_now_us();
}

/* One OP_READ on an empty eventfd, submitted and in the kernel (one iteration that does not
 * block), so that the eventfd write that follows is a lone completion in a later wait. */
static int lone_read_arm(struct loop *loop, struct lone_read *r)
{
	memset(r, 0, sizeof(*r));
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(efd >= 0);
	r->op = (struct op){ .code = OP_READ, .fd = efd,
			     .buf = { .base = (char *)&r->buf, .len = sizeof(r->buf) },
			     .done = on_lone_read, .owner = r };
	assert_int_equal(loop_submit(loop, &r->op), 0);
	assert_int_equal(loop_run_once(loop, 0), 0);
	assert_int_equal(r->done_us, 0);
	return efd;
}

static void eventfd_kick(int efd)
{
	uint64_t one = 1;
	assert_int_equal(write(efd, &one, sizeof(one)), (ssize_t)sizeof(one));
}

static void t_timer_fired(struct loop *loop, struct loop_timer *t)
{
	(void)loop;
	*(uint64_t *)t->owner = t_now_us();
}
#endif

/* ECHOD_URING_WAIT=4:1000: a wait asks for four completions but, with min-wait, returns with a
 * lone one within about the min-wait (1 ms), never at the loop's timeout (1 s here). */
static void test_wait_batch_min_wait_releases_lone(void **state)
{
	(void)state;
#ifndef ECHOD_HAVE_URING
	skip();
#else
	struct loop loop;
	loop_with_wait_env(&loop, "4:1000");
	struct uc *uc = uc_of_loop(&loop);
	assert_non_null(uc);
	assert_int_equal(uc->wait_nr, 4);
	assert_int_equal(uc->min_wait_usec, 1000);
	if (!uc->has.min_wait) {
		loop_fini(&loop);
		print_message("  [%s] this kernel has no min-wait (IORING_FEAT_MIN_TIMEOUT, 6.12)\n",
			      be->name);
		skip();
	}
	assert_true(uc->uses & UC_USE_MIN_WAIT);
	char line[512];
	uc_describe(&loop, line, sizeof(line));
	assert_non_null(strstr(line, "min-wait on"));
	assert_non_null(strstr(line, "batched wait 4 completions, min-wait 1000 us"));
	struct lone_read r;
	int efd = lone_read_arm(&loop, &r);
	uint64_t t0 = t_now_us();
	eventfd_kick(efd);
	assert_int_equal(loop_run_once(&loop, 1000), 0);
	uint64_t took = t_now_us() - t0;
	print_message("  [%s] wait_nr 4, min-wait 1000 us: a lone completion after %llu us\n",
		      be->name, (unsigned long long)took);
	assert_true(r.done_us != 0);
	assert_int_equal(r.res, 8);
	assert_true(took < 1000 + 50000); /* min-wait + slack for a loaded or sanitized run */
	close(efd);
	loop_fini(&loop);
#endif
}

/* ECHOD_URING_WAIT=4 (no min-wait): the wait holds a lone completion for three more, but the
 * loop's next timer (40 ms) still bounds it: the timer fires on time and the completion comes
 * with it, not later. */
static void test_wait_batch_bounded_by_timer(void **state)
{
	(void)state;
#ifndef ECHOD_HAVE_URING
	skip();
#else
	enum { TIMER_MS = 40, SLACK_MS = 50 };
	struct loop loop;
	loop_with_wait_env(&loop, "4");
	struct uc *uc = uc_of_loop(&loop);
	assert_non_null(uc);
	assert_int_equal(uc->wait_nr, 4);
	assert_int_equal(uc->min_wait_usec, 0);
	struct lone_read r;
	int efd = lone_read_arm(&loop, &r);
	uint64_t fired_us = 0;
	struct loop_timer t = { .fire = t_timer_fired, .owner = &fired_us };
	uint64_t t0 = t_now_us();
	loop_timer_start(&loop, &t, TIMER_MS);
	eventfd_kick(efd);
	while ((!fired_us || !r.done_us) && t_now_us() - t0 < 1000000)
		assert_int_equal(loop_run_once(&loop, -1), 0);
	uint64_t read_ms = (r.done_us - t0) / 1000, timer_ms = (fired_us - t0) / 1000;
	print_message("  [%s] wait_nr 4, no min-wait: the lone completion after %llu ms, the "
		      "%d ms timer after %llu ms\n", be->name, (unsigned long long)read_ms,
		      TIMER_MS, (unsigned long long)timer_ms);
	assert_true(fired_us && r.done_us);
	assert_int_equal(r.res, 8);
	assert_true(timer_ms <= TIMER_MS + SLACK_MS);   /* the timer was not held back */
	assert_true(read_ms <= TIMER_MS + SLACK_MS);    /* nor the completion past it */
	assert_true(read_ms >= TIMER_MS - 10);          /* batching did hold it: policy in force */
	close(efd);
	loop_fini(&loop);
#endif
}

/* --- main ----------------------------------------------------------------------------------- */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	raise_nofile();
	const struct CMUnitTest tests[] = {
		T(test_few_warm_buffers_serve_sequential_messages),
		T(test_tiny_pool_many_senders),
		T(test_10k_connect_close),
		T(test_peer_closes_with_sends_in_flight),
		T(test_cq_overflow),
		T(test_refused_when_io_uring_blocked),
		T(test_auto_falls_back_when_io_uring_blocked),
		T(test_feature_probe),
		T(test_wait_env_parse),
		T(test_wait_batch_min_wait_releases_lone),
		T(test_wait_batch_bounded_by_timer),
	};
	static const char *const names[] = { "uring", "uring-poll" };
	int failed = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		be = backend_find(names[i]);
		if (!be) {
			printf("[ SKIPPED  ] uring/%s: not in this build (no liburing)\n", names[i]);
			continue;
		}
		struct loop loop;
		struct loop_config cfg = { .nbufs = 16, .bufsize = 4096, .max_fds = 1024 };
		int rc = loop_init(&loop, be, &cfg);
		if (rc < 0) {
			printf("[ SKIPPED  ] uring/%s: cannot run here (%s)\n", names[i],
			       strerror(-rc));
			continue;
		}
		loop_fini(&loop);
		char name[64];
		snprintf(name, sizeof(name), "uring/%s", names[i]);
		failed += _cmocka_run_group_tests(name, tests, sizeof(tests) / sizeof(tests[0]), NULL,
						  NULL);
	}
	return failed ? 1 : 0;
}
