/* test_reactor.c - the reactor contract (engine/reactor.h), held against every backend in the
 * engine's table over real sockets: socketpairs, loopback TCP, an eventfd.
 *
 * Every case is written once; main() runs the whole group once per backend in backend_table
 * (named "reactor/<backend>", so a failure says which). A backend that cannot initialise here
 * (io_uring disabled, say) is reported and skipped, not failed. Nothing branches on a
 * backend's name; the fd-limit case branches on the capability bit, as the core does.
 *
 * Every completion goes through one callback that checks what must hold whatever the test:
 * never delivered inside loop_submit()/loop_cancel(), nothing after an op's final completion,
 * OPF_BUFFER on every recv that carries bytes, op->armed false when the final one runs.
 * SIGPIPE is not ignored, on purpose: a send without MSG_NOSIGNAL ends the run, naming the
 * backend.
 *
 * Bounded in time: the loop only ever runs through loop_run_once() with a short timeout and
 * a deadline, and an alarm ends the process (naming the backend) if a test hangs anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "reactor.h"

#define TEST_ALARM_S 30  /* a single test taking this long is hung */
#define SETTLE_MS 50     /* "nothing more happens": how long we watch */

static const struct backend *be; /* the backend this round of the group runs on */

static uint64_t ms_now(void)
{
	return loop_clock_ms();
}

/* --- fixture: one loop, tracked ops and fds, contract checks -------------------------------- */

static struct loop L;
static bool loop_up;
static int in_api;            /* > 0 while inside loop_submit/loop_cancel */
static int violations;
static char first_violation[256];
static long n_submits, n_finals;

static void violation(const char *fmt, ...)
{
	if (violations++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(first_violation, sizeof(first_violation), fmt, ap);
		va_end(ap);
	}
}

#define MAX_TRACKED_FDS 512
static int tracked[MAX_TRACKED_FDS];
static int ntracked;

static int track(int fd)
{
	assert_true(fd >= 0);
	assert_true(ntracked < MAX_TRACKED_FDS);
	tracked[ntracked++] = fd;
	return fd;
}

/* Close a tracked fd now (so teardown does not close whatever reuses its number). */
static void close_tracked(int *fd)
{
	for (int i = 0; i < ntracked; i++) {
		if (tracked[i] == *fd) {
			tracked[i] = tracked[--ntracked];
			break;
		}
	}
	close(*fd);
	*fd = -1;
}

/* An op and everything seen of it. */
struct trk {
	struct op op;
	int ncompl, nfinal, after_final, ndata;
	bool final_seen;
	int final_res;
	unsigned final_flags;
	int last_res;
	unsigned last_flags;
	int nbatch;            /* completions with OPF_BATCH */
	bool hold;             /* keep recv buffers instead of releasing them at once */
	uint32_t held[64];
	int nheld;
	uint8_t *data;         /* every byte received, in order */
	size_t len, cap;
	int accepted[64];
	int naccepted;
	void (*hook)(struct trk *t, int res, unsigned fl); /* runs after the bookkeeping */
	int idx;
	/* RECVMSG: where the source goes; SENDMSG: the destination and the bytes. */
	struct msghdr mh;
	struct sockaddr_storage name;
	struct iovec iov;
};

#define MAX_TRKS 160
static struct trk trks[MAX_TRKS];
static int ntrks;

static void on_done(struct loop *loop, struct op *op, int res, unsigned fl);
static struct op *batch_pending; /* an OPF_BATCH completion's op: the next must be its own */

static void trk_reset(struct trk *t, enum op_code code, int fd)
{
	uint8_t *data = t->data;
	size_t cap = t->cap;
	int idx = t->idx;
	memset(t, 0, sizeof(*t));
	t->data = data;
	t->cap = cap;
	t->idx = idx;
	t->op = (struct op){ .code = code, .fd = fd, .done = on_done, .owner = t };
}

static struct trk *new_trk(enum op_code code, int fd)
{
	assert_true(ntrks < MAX_TRKS);
	struct trk *t = &trks[ntrks];
	t->idx = ntrks++;
	trk_reset(t, code, fd);
	if (!t->data) { /* never NULL, so comparing zero bytes of it is well-defined */
		t->cap = 4096;
		t->data = malloc(t->cap);
		assert_non_null(t->data);
	}
	return t;
}

static void append(struct trk *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		while (cap < t->len + n)
			cap *= 2;
		t->data = realloc(t->data, cap);
		if (!t->data)
			abort();
		t->cap = cap;
	}
	memcpy(t->data + t->len, p, n);
	t->len += n;
}

static void on_done(struct loop *loop, struct op *op, int res, unsigned fl)
{
	struct trk *t = op->owner;
	if (in_api)
		violation("%s: completion (res %d) delivered inside loop_submit/loop_cancel",
			  be->name, res);
	if (t->final_seen) {
		t->after_final++;
		violation("%s: completion (res %d) after the final one", be->name, res);
	}
	t->ncompl++;
	t->last_res = res;
	t->last_flags = fl;
	if (op->code == OP_RECV && res > 0 && !(fl & OPF_BUFFER))
		violation("%s: recv of %d bytes without OPF_BUFFER", be->name, res);
	if (op->code == OP_RECVMSG && (fl & OPF_MORE) && !(fl & OPF_BUFFER))
		violation("%s: recvmsg completion (res %d) with OPF_MORE and no buffer", be->name,
			  res);
	if ((fl & OPF_BUFFER) && (op->code == OP_RECVMSG) != !!(op->buf.bid & LOOP_DGRAM_BID))
		violation("%s: %s buffer id %#x in the wrong pool", be->name,
			  op->code == OP_RECVMSG ? "recvmsg" : "recv", op->buf.bid);
	if ((fl & OPF_TRUNC) && op->code != OP_RECVMSG)
		violation("%s: OPF_TRUNC on op code %d", be->name, (int)op->code);
	if (batch_pending && batch_pending != op)
		violation("%s: a completion of another op (res %d) came between an OPF_BATCH and "
			  "the rest of its batch", be->name, res);
	if ((fl & OPF_BATCH) && (!(fl & OPF_MORE) || op->code != OP_RECV || res <= 0))
		violation("%s: OPF_BATCH on op code %d, res %d, flags %#x", be->name,
			  (int)op->code, res, fl);
	batch_pending = (fl & OPF_BATCH) ? op : NULL;
	if (op->code == OP_SEND && res == -EAGAIN)
		violation("%s: a send completed -EAGAIN (it must wait for room)", be->name);
	if (fl & OPF_BATCH)
		t->nbatch++;
	if (fl & OPF_BUFFER) {
		if (res > 0) {
			if (op->buf.len != (uint32_t)res)
				violation("%s: buf.len %u != res %d", be->name, op->buf.len, res);
			t->ndata++;
			append(t, op->buf.base, (size_t)res);
		}
		if (t->hold && res > 0 && t->nheld < 64)
			t->held[t->nheld++] = op->buf.bid;
		else
			loop_buf_release(loop, op->buf.bid);
	}
	if (op->code == OP_ACCEPT && res >= 0) {
		track(res);
		if (t->naccepted < 64)
			t->accepted[t->naccepted++] = res;
	}
	if (!(fl & OPF_MORE)) {
		if (op->armed)
			violation("%s: op still armed in its final completion", be->name);
		t->final_seen = true;
		t->nfinal++;
		t->final_res = res;
		t->final_flags = fl;
		n_finals++;
	}
	if (t->hook)
		t->hook(t, res, fl);
}

static int sub(struct trk *t)
{
	t->final_seen = false;
	in_api++;
	int rc = loop_submit(&L, &t->op);
	in_api--;
	if (rc == 0)
		n_submits++;
	return rc;
}

static void can(struct trk *t)
{
	if (batch_pending == &t->op)
		batch_pending = NULL; /* reactor.h: a cancel ends the batch, the rest is dropped */
	in_api++;
	assert_int_equal(loop_cancel(&L, &t->op), 0);
	in_api--;
}

static void release_held(struct trk *t)
{
	for (int i = 0; i < t->nheld; i++)
		loop_buf_release(&L, t->held[i]);
	t->nheld = 0;
}

static void start_loop(uint32_t nbufs, uint32_t bufsize)
{
	struct loop_config cfg = { .nbufs = nbufs, .bufsize = bufsize, .max_fds = 1024 };
	assert_int_equal(loop_init(&L, be, &cfg), 0);
	loop_up = true;
}

/* A loop with a datagram pool of dnbufs x dbufsize (LOOP_DGRAM_HEADROOM included). */
static void start_loop_dgram(uint32_t dnbufs, uint32_t dbufsize)
{
	struct loop_config cfg = { .nbufs = 8, .bufsize = 4096, .max_fds = 1024,
				   .dgram_nbufs = dnbufs, .dgram_bufsize = dbufsize };
	assert_int_equal(loop_init(&L, be, &cfg), 0);
	loop_up = true;
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "test_reactor: a test hung (alarm); backend: ";
	(void)!write(2, msg, sizeof(msg) - 1);
	(void)!write(2, be->name, strlen(be->name));
	(void)!write(2, "\n", 1);
	_exit(3);
}

static void on_sigpipe(int sig)
{
	(void)sig;
	static const char msg[] = "test_reactor: SIGPIPE (a send without MSG_NOSIGNAL); backend: ";
	(void)!write(2, msg, sizeof(msg) - 1);
	(void)!write(2, be->name, strlen(be->name));
	(void)!write(2, "\n", 1);
	_exit(4);
}

static int ndrecs;

static int setup(void **state)
{
	(void)state;
	ndrecs = 0;
	violations = 0;
	first_violation[0] = '\0';
	n_submits = n_finals = 0;
	ntracked = 0;
	ntrks = 0;
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, on_sigpipe);
	alarm(TEST_ALARM_S);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (loop_up) {
		loop_fini(&L);
		loop_up = false;
	}
	for (int i = 0; i < ntracked; i++)
		close(tracked[i]);
	batch_pending = NULL;
	for (int i = 0; i < MAX_TRKS; i++) {
		free(trks[i].data);
		memset(&trks[i], 0, sizeof(trks[i]));
	}
	alarm(0);
	return 0;
}

/* Every test ends with this: the checks on_done made along the way. */
static void assert_contract_kept(void)
{
	if (batch_pending)
		violation("%s: an OPF_BATCH completion was not followed by its op's next", be->name);
	if (violations)
		print_error("[%s] %d contract violation(s); first: %s\n", be->name, violations,
			    first_violation);
	assert_int_equal(violations, 0);
}

/* Run the loop until cond holds or ms pass; cond is re-evaluated after every iteration. */
#define RUN_UNTIL(cond, ms)                                                                      \
	do {                                                                                     \
		uint64_t dl_ = ms_now() + (ms);                                                  \
		while (!(cond) && ms_now() < dl_)                                                \
			assert_int_equal(loop_run_once(&L, 10), 0);                              \
	} while (0)

/* Run the loop for ms; returns how many iterations that took. */
static long settle(int ms)
{
	long iters = 0;
	uint64_t dl = ms_now() + (uint64_t)ms;
	while (ms_now() < dl) {
		assert_int_equal(loop_run_once(&L, 10), 0);
		iters++;
	}
	return iters;
}

/* --- sockets -------------------------------------------------------------------------------- */

static void nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	assert_true(fl >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

enum kind { UNIX_PAIR, TCP_PAIR };
static const char *const kind_name[] = { "socketpair", "tcp" };

static int tcp_listener(int family, int *port)
{
	int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -1;
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	}
	if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 128) < 0 ||
	    getsockname(l, (struct sockaddr *)&ss, &sl) < 0) {
		close(l);
		return -1;
	}
	*port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					 : ((struct sockaddr_in *)&ss)->sin_port);
	return l;
}

static int tcp_connect_to(int family, int port, int rcvbuf)
{
	int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0)
		return -1;
	if (rcvbuf)
		setsockopt(c, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons((uint16_t)port);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons((uint16_t)port);
		sl = sizeof(*a);
	}
	if (connect(c, (struct sockaddr *)&ss, sl) < 0) {
		close(c);
		return -1;
	}
	return c;
}

/* sv[0]: the loop's end, sv[1]: the test's peer; both non-blocking and tracked. small: cap the
 * buffers in between (TCP: the loop's send buffer and the peer's receive buffer), so "the
 * peer does not read" fills up after a few hundred kilobytes. */
static void make_pair(enum kind k, int sv[2], bool small)
{
	if (k == UNIX_PAIR) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	} else {
		int port;
		int l = tcp_listener(AF_INET, &port);
		assert_true(l >= 0);
		sv[1] = tcp_connect_to(AF_INET, port, small ? 65536 : 0);
		assert_true(sv[1] >= 0);
		sv[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		assert_true(sv[0] >= 0);
		close(l);
		int one = 1;
		setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (small) {
		int sz = 65536;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	nonblock(sv[0]);
	nonblock(sv[1]);
	track(sv[0]);
	track(sv[1]);
}

static void put(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

/* --- recv ----------------------------------------------------------------------------------- */

/* Multishot: ten messages, each delivered with OPF_MORE|OPF_BUFFER into a pool of 4 buffers
 * (so buffers must come back through loop_buf_release); then one cancel, one final. */
static void recv_multishot_on(enum kind k)
{
	int sv[2];
	start_loop(4, 4096);
	make_pair(k, sv, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	assert_int_equal(t->ncompl, 0);
	for (int i = 0; i < 10; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "message %d", i);
		put(sv[1], msg, (size_t)n);
		size_t want = t->len + (size_t)n;
		RUN_UNTIL(t->len >= want || t->final_seen, 2000);
		assert_false(t->final_seen);
		assert_int_equal(t->len, want);
		assert_memory_equal(t->data + want - (size_t)n, msg, (size_t)n);
		assert_int_equal(t->last_flags, OPF_MORE | OPF_BUFFER);
		assert_true(t->op.armed);
	}
	assert_int_equal(t->ndata, 10);
	can(t);
	assert_int_equal(t->nfinal, 0); /* not from inside cancel */
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->final_res, -ECANCELED);
	assert_false(t->op.armed);
	put(sv[1], "late", 4);
	settle(SETTLE_MS);
	assert_int_equal(t->ncompl, 11);
	assert_contract_kept();
}

static void test_recv_multishot_unix(void **state)
{
	(void)state;
	recv_multishot_on(UNIX_PAIR);
}

static void test_recv_multishot_tcp(void **state)
{
	(void)state;
	recv_multishot_on(TCP_PAIR);
}

/* One megabyte through a pool of 4 small buffers, in order, byte for byte. */
static void test_recv_stream_1mib_tcp(void **state)
{
	(void)state;
	int sv[2];
	start_loop(4, 2048);
	make_pair(TCP_PAIR, sv, false);
	size_t len = 1u << 20;
	uint8_t *data = malloc(len);
	fill(data, len, 7);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	size_t off = 0;
	uint64_t dl = ms_now() + 10000;
	while (t->len < len && !t->final_seen && ms_now() < dl) {
		if (off < len) {
			ssize_t n = send(sv[1], data + off, len - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
		}
		assert_int_equal(loop_run_once(&L, 5), 0);
	}
	assert_false(t->final_seen);
	assert_int_equal(t->len, len);
	assert_memory_equal(t->data, data, len);
	free(data);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_contract_kept();
}

/* max_bytes: a caller with a byte budget keeps max_bytes at what is left and stops (cancels)
 * when it reaches 0, as the echo core does with --conn-buffer. However much the peer has sent,
 * however the backend reads ahead, the caller gets exactly its budget. no_limit: io_uring as if
 * the kernel lacked the multishot byte limit (one-shot recvs; other backends ignore it). */
#define RECV_BUDGET 5000u

static void budget_hook(struct trk *t, int res, unsigned fl)
{
	(void)fl;
	if (res <= 0)
		return;
	if (t->len > RECV_BUDGET)
		violation("%s: recv delivered %zu bytes past a budget of %u", be->name, t->len,
			  RECV_BUDGET);
	else if (t->len == RECV_BUDGET && t->op.armed)
		can(t);
	else
		t->op.max_bytes = RECV_BUDGET - (uint32_t)t->len;
}

static void recv_bounded(bool no_limit)
{
	int sv[2];
	struct loop_config cfg = { .nbufs = 64, .bufsize = 2048, .max_fds = 1024,
				   .no_recv_limit = no_limit };
	assert_int_equal(loop_init(&L, be, &cfg), 0);
	loop_up = true;
	make_pair(TCP_PAIR, sv, false);
	static uint8_t data[65536];
	fill(data, sizeof(data), 11);
	put(sv[1], data, sizeof(data));
	struct trk *t = new_trk(OP_RECV, sv[0]);
	t->hook = budget_hook;
	t->op.max_bytes = RECV_BUDGET;
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->final_seen, 2000);
	settle(SETTLE_MS);
	assert_int_equal(t->len, RECV_BUDGET);
	assert_memory_equal(t->data, data, RECV_BUDGET);
	/* The rest waits in the kernel: a new recv with a new budget gets it, in order. */
	t->final_seen = false;
	t->op.max_bytes = RECV_BUDGET;
	t->hook = NULL;
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->len >= 2 * RECV_BUDGET, 2000);
	assert_memory_equal(t->data, data, t->len);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_contract_kept();
}

static void test_recv_honours_max_bytes(void **state)
{
	(void)state;
	recv_bounded(false);
}

static void test_recv_honours_max_bytes_oneshot(void **state)
{
	(void)state;
	recv_bounded(true);
}

/* Bytes then EOF: all the bytes, then res 0, final; nothing after. */
static void recv_eof_on(enum kind k, bool with_data)
{
	int sv[2];
	start_loop(8, 4096);
	make_pair(k, sv, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	if (with_data)
		put(sv[1], "the tail", 8);
	assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
	assert_int_equal(sub(t), 0);
	assert_int_equal(t->ncompl, 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->final_res, 0);
	assert_int_equal(t->final_flags & OPF_MORE, 0);
	assert_int_equal(t->len, with_data ? 8 : 0);
	if (with_data)
		assert_memory_equal(t->data, "the tail", 8);
	settle(SETTLE_MS);
	assert_int_equal(t->after_final, 0);
	assert_contract_kept();
}

static void test_recv_eof_unix(void **state)
{
	(void)state;
	recv_eof_on(UNIX_PAIR, true);
}

static void test_recv_eof_tcp(void **state)
{
	(void)state;
	recv_eof_on(TCP_PAIR, true);
}

static void test_recv_eof_empty(void **state)
{
	(void)state;
	recv_eof_on(TCP_PAIR, false);
}

/* A reset peer: a final negative result (or EOF), not a hang or a spin. */
static void test_recv_reset(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(TCP_PAIR, sv, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	settle(20);
	put(sv[0], "unread", 6); /* the peer closes with this unread: RST */
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(sv[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close_tracked(&sv[1]);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_true(t->final_res <= 0);
	assert_true(settle(100) < 40);
	assert_contract_kept();
}

/* --- cancel --------------------------------------------------------------------------------- */

/* Cancel before the loop ever waited, cancel of an idle armed recv, cancel twice: exactly one
 * final completion each, -ECANCELED, none after. */
static void test_cancel_recv(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);

	struct trk *t = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	can(t);
	can(t); /* a second cancel is a no-op */
	assert_int_equal(t->ncompl, 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->ncompl, 1);
	assert_int_equal(t->final_res, -ECANCELED);

	trk_reset(t, OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	settle(20); /* armed for real now */
	assert_int_equal(t->ncompl, 0);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->ncompl, 1);
	assert_int_equal(t->final_res, -ECANCELED);
	assert_false(t->op.armed);
	put(sv[1], "after", 5);
	settle(SETTLE_MS);
	assert_int_equal(t->ncompl, 1);
	can(t); /* cancelling a final op does nothing */
	settle(20);
	assert_int_equal(t->ncompl, 1);

	/* The bytes that arrived while nothing was armed wait for the next recv: never lost. */
	trk_reset(t, OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->len == 5, 2000);
	assert_memory_equal(t->data, "after", 5);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_contract_kept();
}

/* Data races the cancel: data completions may come first, then exactly one final; every byte
 * is delivered either by this op or by the next one on the fd, in order. */
static void test_cancel_races_data(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	settle(20);
	put(sv[1], "racing", 6);
	can(t);
	assert_int_equal(t->ncompl, 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_true(t->final_res == -ECANCELED || t->final_res >= 0);
	put(sv[1], "+more", 5);
	settle(SETTLE_MS);
	assert_int_equal(t->after_final, 0);
	size_t got = t->len;
	assert_true(got <= 6);
	assert_memory_equal(t->data, "racing", got);
	struct trk *u = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(u), 0);
	RUN_UNTIL(got + u->len == 11, 2000);
	assert_int_equal(got + u->len, 11);
	assert_memory_equal(u->data, "racing+more" + got, 11 - got);
	can(u);
	RUN_UNTIL(u->final_seen, 2000);
	assert_contract_kept();
}

/* --- send ----------------------------------------------------------------------------------- */

/* A peer that does not read: the send completes short or stays pending, never claims more than
 * went out; once the peer reads, the rest goes and every byte arrives in order. */
static void send_backpressure_on(enum kind k)
{
	int sv[2];
	start_loop(8, 4096);
	make_pair(k, sv, true);
	size_t len = 2u << 20;
	uint8_t *data = malloc(len), *back = malloc(len);
	fill(data, len, 3);
	struct trk *t = new_trk(OP_SEND, sv[0]);

	/* Phase 1: nobody reads. Submit the remainder until one send stays pending. */
	size_t off = 0;
	bool pending = false;
	uint64_t dl = ms_now() + 5000;
	while (off < len && ms_now() < dl) {
		trk_reset(t, OP_SEND, sv[0]);
		t->op.buf = (struct buf){ .base = (char *)data + off, .len = (uint32_t)(len - off) };
		assert_int_equal(sub(t), 0);
		assert_int_equal(t->ncompl, 0); /* even an immediate send completes later */
		RUN_UNTIL(t->final_seen, 200);
		if (!t->final_seen) {
			pending = true;
			break;
		}
		assert_true(t->final_res > 0);
		assert_true((size_t)t->final_res <= len - off);
		off += (size_t)t->final_res;
	}
	print_message("  [%s/%s] peer not reading: %zu of %zu bytes accepted, then pending\n",
		      be->name, kind_name[k], off, len);
	assert_true(pending);
	assert_true(off < len);
	assert_true(t->op.armed);

	/* Phase 2: the peer reads everything; the pending send completes, the rest follows. */
	size_t got = 0;
	dl = ms_now() + 10000;
	while (got < len && ms_now() < dl) {
		ssize_t n = recv(sv[1], back + got, len - got, 0);
		if (n > 0)
			got += (size_t)n;
		assert_int_equal(loop_run_once(&L, n > 0 ? 0 : 2), 0);
		if (t->final_seen && off < len) {
			assert_true(t->final_res > 0);
			off += (size_t)t->final_res;
			if (off < len) {
				trk_reset(t, OP_SEND, sv[0]);
				t->op.buf = (struct buf){ .base = (char *)data + off,
							  .len = (uint32_t)(len - off) };
				assert_int_equal(sub(t), 0);
			}
		}
	}
	assert_int_equal(off, len);
	assert_int_equal(got, len);
	assert_memory_equal(back, data, len);
	free(data);
	free(back);
	assert_contract_kept();
}

static void test_send_backpressure_unix(void **state)
{
	(void)state;
	send_backpressure_on(UNIX_PAIR);
}

static void test_send_backpressure_tcp(void **state)
{
	(void)state;
	send_backpressure_on(TCP_PAIR);
}

/* Gathered sends: 2 MiB in 40 runs of 1 byte to 200 KB, sent as chains of up to
 * LOOP_SEND_MAX_SEGS runs to a peer that reads only after a send has stayed pending. Sends come
 * back short, also in the middle of a run; each resumes there, and the peer gets every byte in
 * order. A readiness backend makes one sendmsg per chain, never a send per run. */
#define GATHER_RUNS 40
static void send_gathered_on(enum kind k)
{
	int sv[2];
	start_loop(8, 4096);
	make_pair(k, sv, true);
	struct seg runs[GATHER_RUNS];
	size_t len = 0;
	for (int i = 0; i < GATHER_RUNS; i++) {
		runs[i].len = i % 4 == 0 ? 1 : (uint32_t)(i * 5003 % 200000) + 1;
		len += runs[i].len;
	}
	uint8_t *data = malloc(len), *back = malloc(len);
	fill(data, len, 11);
	size_t at = 0;
	for (int i = 0; i < GATHER_RUNS; i++) {
		runs[i] = (struct seg){ .next = i + 1 < GATHER_RUNS ? &runs[i + 1] : NULL,
					.base = (char *)data + at, .len = runs[i].len };
		at += runs[i].len;
	}
	struct trk *t = new_trk(OP_SEND, sv[0]);
	int head = 0, mid_run = 0, chains = 0, singles = 0;
	size_t sent = 0, got = 0;
	bool reading = false;
	uint64_t before = L.tally.syscalls[SC_SEND], dl = ms_now() + 10000;
	while ((sent < len || got < len) && ms_now() < dl) {
		if (!t->op.armed && sent < len) {
			trk_reset(t, OP_SEND, sv[0]);
			t->op.segs = &runs[head];
			t->op.nsegs = GATHER_RUNS - head < (int)LOOP_SEND_MAX_SEGS
					      ? (uint32_t)(GATHER_RUNS - head)
					      : LOOP_SEND_MAX_SEGS;
			assert_int_equal(sub(t), 0);
			chains++;
			singles += t->op.nsegs == 1;
		}
		assert_int_equal(loop_run_once(&L, 2), 0);
		if (t->final_seen && !t->op.armed && t->op.segs == &runs[head] && t->ncompl) {
			assert_true(t->final_res > 0);
			uint32_t n = (uint32_t)t->final_res;
			sent += n;
			while (n) { /* resume where the send ended: mid-run if need be */
				uint32_t take = n < runs[head].len ? n : runs[head].len;
				runs[head].off += take;
				runs[head].len -= take;
				n -= take;
				if (runs[head].len == 0)
					head++;
			}
			mid_run += head < GATHER_RUNS && runs[head].off > 0;
			t->ncompl = 0;
		} else if (t->op.armed) {
			reading = true; /* pending: the peer's buffer is full */
		}
		if (reading) {
			ssize_t n = recv(sv[1], back + got, len - got, 0);
			if (n > 0)
				got += (size_t)n;
		}
	}
	print_message("  [%s/%s] %zu bytes in %d runs: %d sends, %d ended mid-run\n", be->name,
		      kind_name[k], len, GATHER_RUNS, chains, mid_run);
	assert_int_equal(sent, len);
	assert_int_equal(got, len);
	assert_memory_equal(back, data, len);
	assert_true(mid_run > 0);
	if (strcmp(be->name, "uring") != 0) {
		/* a plain send only for a chain of one run (the last run, alone) */
		assert_true(L.tally.syscalls[SC_SEND] - before <= (uint64_t)singles * 2);
		assert_true(L.tally.syscalls[SC_SENDMSG] >= (uint64_t)(chains - singles));
	}
	free(data);
	free(back);
	assert_contract_kept();
}

static void test_send_gathered_unix(void **state)
{
	(void)state;
	send_gathered_on(UNIX_PAIR);
}

static void test_send_gathered_tcp(void **state)
{
	(void)state;
	send_gathered_on(TCP_PAIR);
}

/* A stream with more waiting than one buffer holds comes out in batches: every OPF_BATCH
 * completion is followed at once by its op's next (on_done checks), the bytes arrive whole and
 * in order, and at least one batch happens. Readiness backends take several buffers with one
 * recvmsg once a recv has filled its buffer; io_uring marks consecutive CQEs of one recv. */
static void test_recv_batches(void **state)
{
	(void)state;
	int sv[2];
	start_loop(16, 4096);
	make_pair(TCP_PAIR, sv, false);
	size_t len = 64 * 4096 + 100;
	uint8_t *data = malloc(len);
	fill(data, len, 5);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	size_t off = 0;
	uint64_t dl = ms_now() + 5000;
	assert_int_equal(sub(t), 0);
	while (t->len < len && !t->final_seen && ms_now() < dl) {
		if (off < len) {
			ssize_t n = send(sv[1], data + off, len - off < 40000 ? len - off : 40000,
					 MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
		}
		assert_int_equal(loop_run_once(&L, 2), 0);
	}
	print_message("  [%s] %zu bytes in %d completions, %d with OPF_BATCH\n", be->name, t->len,
		      t->ndata, t->nbatch);
	assert_false(t->final_seen);
	assert_int_equal(t->len, len);
	assert_memory_equal(t->data, data, len);
	assert_true(t->nbatch > 0);
	if (strcmp(be->name, "uring") != 0)
		assert_true(L.tally.syscalls[SC_RECVMSG] > 0);
	free(data);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_contract_kept();
}

/* A send to a closed peer fails (MSG_NOSIGNAL: no SIGPIPE), final; so does a pending send whose
 * peer goes away. */
static void test_send_to_closed_peer(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, true);
	close_tracked(&sv[1]);
	struct trk *t = new_trk(OP_SEND, sv[0]);
	t->op.buf = (struct buf){ .base = "x", .len = 1 };
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_true(t->final_res == -EPIPE || t->final_res == -ECONNRESET);

	int sp[2];
	make_pair(TCP_PAIR, sp, true);
	size_t len = 4u << 20;
	char *big = calloc(1, len);
	struct trk *u = new_trk(OP_SEND, sp[0]);
	size_t off = 0;
	for (int i = 0; i < 100; i++) {
		trk_reset(u, OP_SEND, sp[0]);
		u->op.buf = (struct buf){ .base = big + off, .len = (uint32_t)(len - off) };
		assert_int_equal(sub(u), 0);
		RUN_UNTIL(u->final_seen, 100);
		if (!u->final_seen)
			break;
		off += (size_t)u->final_res;
	}
	assert_false(u->final_seen); /* pending */
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(sp[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close_tracked(&sp[1]); /* unread data: RST */
	RUN_UNTIL(u->final_seen, 2000);
	assert_int_equal(u->nfinal, 1);
	assert_true(u->final_res < 0 || (size_t)u->final_res < len - off);
	free(big);
	assert_true(settle(100) < 40);
	assert_contract_kept();
}

/* Cancel of a pending send: one final, -ECANCELED (or a count that raced it). */
static void test_cancel_pending_send(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, true);
	size_t len = 4u << 20;
	char *big = calloc(1, len);
	struct trk *t = new_trk(OP_SEND, sv[0]);
	for (int i = 0; i < 100; i++) {
		trk_reset(t, OP_SEND, sv[0]);
		t->op.buf = (struct buf){ .base = big, .len = (uint32_t)len };
		assert_int_equal(sub(t), 0);
		RUN_UNTIL(t->final_seen, 100);
		if (!t->final_seen)
			break;
	}
	assert_false(t->final_seen);
	can(t);
	assert_int_equal(t->ncompl, 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_true(t->final_res == -ECANCELED || t->final_res >= 0);
	char sink[65536];
	while (recv(sv[1], sink, sizeof(sink), 0) > 0)
		;
	settle(SETTLE_MS);
	assert_int_equal(t->after_final, 0);
	free(big);
	assert_contract_kept();
}

/* Both sides on one fd: a pending send and an armed recv do not disturb each other when one
 * of them completes or is cancelled. */
static void test_send_and_recv_same_fd(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, true);
	size_t len = 4u << 20;
	char *big = calloc(1, len);
	struct trk *w = new_trk(OP_SEND, sv[0]);
	size_t off = 0;
	for (int i = 0; i < 100; i++) {
		trk_reset(w, OP_SEND, sv[0]);
		w->op.buf = (struct buf){ .base = big + off, .len = (uint32_t)(len - off) };
		assert_int_equal(sub(w), 0);
		RUN_UNTIL(w->final_seen, 100);
		if (!w->final_seen)
			break;
		off += (size_t)w->final_res;
	}
	assert_false(w->final_seen);
	struct trk *r = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(r), 0);
	put(sv[1], "ping", 4);
	RUN_UNTIL(r->len == 4, 2000);
	assert_int_equal(r->len, 4);
	assert_false(w->final_seen); /* still pending: nobody read */
	can(r);
	RUN_UNTIL(r->final_seen, 2000);
	assert_int_equal(r->final_res, -ECANCELED);
	assert_false(w->final_seen);
	char sink[65536];
	size_t drained = 0;
	uint64_t dl = ms_now() + 5000;
	while (!w->final_seen && ms_now() < dl) {
		ssize_t n = recv(sv[1], sink, sizeof(sink), 0);
		if (n > 0)
			drained += (size_t)n;
		assert_int_equal(loop_run_once(&L, 2), 0);
	}
	assert_true(w->final_seen);
	assert_true(w->final_res > 0);
	/* And the other way round: recv armed again, then the send side idle. */
	trk_reset(r, OP_RECV, sv[0]);
	assert_int_equal(sub(r), 0);
	put(sv[1], "pong", 4);
	RUN_UNTIL(r->len == 4, 2000);
	assert_memory_equal(r->data, "pong", 4);
	can(r);
	RUN_UNTIL(r->final_seen, 2000);
	free(big);
	assert_contract_kept();
}

/* --- never inside submit -------------------------------------------------------------------- */

/* Ops that can finish at once (an optimistic send, a recv with bytes waiting, an accept with a
 * connection waiting, an eventfd read) complete on the next iteration, not in loop_submit.
 * (on_done also checks this on every completion of every test.) */
static void test_no_completion_inside_submit(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);

	struct trk *s = new_trk(OP_SEND, sv[0]);
	s->op.buf = (struct buf){ .base = "now", .len = 3 };
	assert_int_equal(sub(s), 0);
	assert_int_equal(s->ncompl, 0);
	assert_true(s->op.armed);
	RUN_UNTIL(s->final_seen, 2000);
	assert_int_equal(s->final_res, 3);

	put(sv[1], "waiting", 7);
	struct trk *r = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(r), 0);
	assert_int_equal(r->ncompl, 0);
	RUN_UNTIL(r->len == 7, 2000);
	can(r);
	assert_int_equal(r->nfinal, 0);
	RUN_UNTIL(r->final_seen, 2000);

	int port;
	int l = track(tcp_listener(AF_INET, &port));
	nonblock(l);
	track(tcp_connect_to(AF_INET, port, 0));
	struct trk *a = new_trk(OP_ACCEPT, l);
	assert_int_equal(sub(a), 0);
	assert_int_equal(a->ncompl, 0);
	RUN_UNTIL(a->naccepted == 1, 2000);
	can(a);
	assert_int_equal(a->nfinal, 0);
	RUN_UNTIL(a->final_seen, 2000);

	int efd = track(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	uint64_t one = 1, val = 0;
	assert_int_equal(write(efd, &one, 8), 8);
	struct trk *e = new_trk(OP_READ, efd);
	e->op.buf = (struct buf){ .base = (char *)&val, .len = 8 };
	assert_int_equal(sub(e), 0);
	assert_int_equal(e->ncompl, 0);
	RUN_UNTIL(e->final_seen, 2000);
	assert_int_equal(e->final_res, 8);
	assert_int_equal(val, 1);
	assert_contract_kept();
}

/* --- OP_READ -------------------------------------------------------------------------------- */

/* One-shot read into caller memory: waits for the eventfd, completes once, final. */
static void test_read_eventfd(void **state)
{
	(void)state;
	start_loop(8, 4096);
	int efd = track(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	uint64_t val = 0, five = 5;
	struct trk *e = new_trk(OP_READ, efd);
	e->op.buf = (struct buf){ .base = (char *)&val, .len = 8 };
	assert_int_equal(sub(e), 0);
	settle(20);
	assert_int_equal(e->ncompl, 0);
	assert_int_equal(write(efd, &five, 8), 8);
	RUN_UNTIL(e->final_seen, 2000);
	assert_int_equal(e->ncompl, 1);
	assert_int_equal(e->final_res, 8);
	assert_int_equal(e->final_flags, 0);
	assert_int_equal(val, 5);
	/* And a pending read is cancellable. */
	trk_reset(e, OP_READ, efd);
	e->op.buf = (struct buf){ .base = (char *)&val, .len = 8 };
	assert_int_equal(sub(e), 0);
	settle(20);
	can(e);
	RUN_UNTIL(e->final_seen, 2000);
	assert_int_equal(e->ncompl, 1);
	assert_int_equal(e->final_res, -ECANCELED);
	assert_contract_kept();
}

/* --- pool dry ------------------------------------------------------------------------------- */

/* Hold every buffer of a 4-buffer pool: the next bytes give -ENOBUFS, final, and then the loop
 * sleeps (a backend still watching the readable fd would spin: thousands of iterations in
 * 100 ms instead of ~10). Buffers back, a new recv gets the bytes that waited. */
static void test_pool_dry_enobufs(void **state)
{
	(void)state;
	enum { NB = 4 };
	int sv[2];
	start_loop(NB, 4096);
	make_pair(UNIX_PAIR, sv, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	t->hold = true;
	assert_int_equal(sub(t), 0);
	for (int i = 0; i < NB; i++) {
		put(sv[1], "abcd", 4);
		RUN_UNTIL(t->ndata == i + 1 || t->final_seen, 2000);
		assert_false(t->final_seen);
	}
	assert_int_equal(t->nheld, NB);
	put(sv[1], "wxyz", 4);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->final_res, -ENOBUFS);
	assert_int_equal(t->final_flags & OPF_MORE, 0);
	long iters = settle(100);
	print_message("  [%s] pool dry, bytes waiting: %ld loop iterations in 100 ms\n", be->name,
		      iters);
	assert_true(iters < 40);
	assert_int_equal(t->ncompl, NB + 1);

	release_held(t);
	t->hold = false;
	size_t before = t->len;
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->len == before + 4, 2000);
	assert_memory_equal(t->data + before, "wxyz", 4);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_contract_kept();
}

/* A peer that hangs up on an fd with no armed op (a paused connection) must not wake the loop. */
static void test_no_spin_on_unwatched_hangup(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	settle(20);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	put(sv[1], "bye", 3);
	close_tracked(&sv[1]);
	long iters = settle(100);
	print_message("  [%s] hung-up peer, nothing armed: %ld iterations in 100 ms\n", be->name,
		      iters);
	assert_true(iters < 40);
	/* Re-armed, it sees the bytes and the EOF. */
	trk_reset(t, OP_RECV, sv[0]);
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->len, 3);
	assert_int_equal(t->final_res, 0);
	assert_contract_kept();
}

/* --- accept --------------------------------------------------------------------------------- */

static void accept_multishot_on(int family)
{
	start_loop(8, 4096);
	int port;
	int l = tcp_listener(family, &port);
	if (l < 0 && family == AF_INET6) {
		print_message("  [%s] no ::1 here: IPv6 accept skipped\n", be->name);
		skip();
	}
	track(l);
	nonblock(l);
	struct trk *a = new_trk(OP_ACCEPT, l);
	assert_int_equal(sub(a), 0);
	settle(10);
	enum { N = 6 };
	int clients[N];
	for (int i = 0; i < N; i++) {
		clients[i] = track(tcp_connect_to(family, port, 0));
		if (i == 2)
			RUN_UNTIL(a->naccepted == 3, 2000); /* some one by one, some in a burst */
	}
	RUN_UNTIL(a->naccepted == N, 2000);
	assert_int_equal(a->naccepted, N);
	assert_int_equal(a->nfinal, 0);
	assert_true(a->op.armed);
	/* Each accepted fd is a live connection to one of our clients. */
	for (int i = 0; i < N; i++) {
		char c = (char)('a' + i);
		put(clients[i], &c, 1);
	}
	int seen = 0;
	for (int i = 0; i < N; i++) {
		char c = 0;
		uint64_t dl = ms_now() + 2000;
		ssize_t n;
		while ((n = recv(a->accepted[i], &c, 1, 0)) < 0 && errno == EAGAIN && ms_now() < dl)
			usleep(1000);
		assert_int_equal(n, 1);
		assert_true(c >= 'a' && c < 'a' + N);
		seen |= 1 << (c - 'a');
	}
	assert_int_equal(seen, (1 << N) - 1);
	can(a);
	RUN_UNTIL(a->final_seen, 2000);
	assert_int_equal(a->nfinal, 1);
	assert_int_equal(a->final_res, -ECANCELED);
	track(tcp_connect_to(family, port, 0)); /* backlog: nobody accepts it now */
	settle(SETTLE_MS);
	assert_int_equal(a->naccepted, N);
	assert_contract_kept();
}

static void test_accept_multishot(void **state)
{
	(void)state;
	accept_multishot_on(AF_INET);
}

static void test_accept_multishot_ipv6(void **state)
{
	(void)state;
	accept_multishot_on(AF_INET6);
}

/* --- timers and waiting --------------------------------------------------------------------- */

struct tmr {
	struct loop_timer t;
	uint64_t due, fired_at;
	int order;
};
static int fired;

static void on_timer(struct loop *loop, struct loop_timer *t)
{
	(void)loop;
	struct tmr *m = t->owner;
	m->fired_at = loop_clock_ms();
	m->order = fired++;
}

/* Timers fire in deadline order, none early; the wait honours them even with fds watched. */
static void test_timers_in_order(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);
	struct trk *r = new_trk(OP_RECV, sv[0]); /* an idle fd being watched all along */
	assert_int_equal(sub(r), 0);
	static const int after[] = { 60, 20, 40, 5 };
	enum { N = sizeof(after) / sizeof(after[0]) };
	struct tmr m[N];
	fired = 0;
	assert_int_equal(loop_run_once(&L, 0), 0);
	for (int i = 0; i < N; i++) {
		m[i] = (struct tmr){ .t = { .fire = on_timer, .owner = &m[i] } };
		m[i].due = L.now_ms + (uint64_t)after[i];
		loop_timer_start(&L, &m[i].t, (uint64_t)after[i]);
	}
	uint64_t t0 = ms_now(), dl = t0 + 2000;
	/* -1: no bound but the timers; the alarm catches a wait that ignores them. */
	while (fired < N && ms_now() < dl)
		assert_int_equal(loop_run_once(&L, -1), 0);
	assert_int_equal(fired, N);
	assert_int_equal(m[3].order, 0);
	assert_int_equal(m[1].order, 1);
	assert_int_equal(m[2].order, 2);
	assert_int_equal(m[0].order, 3);
	for (int i = 0; i < N; i++)
		assert_true(m[i].fired_at >= m[i].due);
	assert_true(ms_now() - t0 < 1000);
	assert_int_equal(r->ncompl, 0);
	can(r);
	RUN_UNTIL(r->final_seen, 2000);
	assert_contract_kept();
}

/* A timer started by a completion that ends an idle wait counts from the wake-up, not from
 * when the loop went to sleep: a drain or idle timeout started then must not fire early. */
static struct tmr woke_timer;

static void start_timer_on_data(struct trk *t, int res, unsigned fl)
{
	(void)t;
	(void)fl;
	if (res > 0 && woke_timer.t.deadline_ms == 0 && woke_timer.due == 0) {
		woke_timer.due = ms_now() + 200;
		loop_timer_start(&L, &woke_timer.t, 200);
	}
}

static void test_timer_started_after_idle_wait(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);
	woke_timer = (struct tmr){ .t = { .fire = on_timer, .owner = &woke_timer } };
	fired = 0;
	struct trk *r = new_trk(OP_RECV, sv[0]);
	r->hook = start_timer_on_data;
	assert_int_equal(sub(r), 0);
	assert_int_equal(loop_run_once(&L, 0), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) { /* the loop sleeps 300 ms in one wait before this arrives */
		usleep(300 * 1000);
		_exit(write(sv[1], "x", 1) == 1 ? 0 : 1);
	}
	uint64_t dl = ms_now() + 3000;
	while (woke_timer.due == 0 && ms_now() < dl)
		assert_int_equal(loop_run_once(&L, 1000), 0);
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(woke_timer.due != 0);
	while (fired == 0 && ms_now() < dl)
		assert_int_equal(loop_run_once(&L, -1), 0);
	assert_int_equal(fired, 1);
	/* 1 ms of slack: now_ms and ms_now() read the clock a moment apart. */
	assert_true(woke_timer.fired_at + 1 >= woke_timer.due);
	can(r);
	RUN_UNTIL(r->final_seen, 2000);
	assert_contract_kept();
}

/* The wait's own timeout: 0 returns at once, 50 ms sleeps about that long. */
static void test_wait_timeout(void **state)
{
	(void)state;
	int sv[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);
	struct trk *r = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(r), 0);
	assert_int_equal(loop_run_once(&L, 0), 0);
	uint64_t t0 = ms_now();
	for (int i = 0; i < 10; i++)
		assert_int_equal(loop_run_once(&L, 0), 0);
	assert_true(ms_now() - t0 < 200);
	/* all 50 ms even when the test is stopped and continued meanwhile (make test-freeze):
	 * the reactor waits out an EINTR that epoll_wait and io_uring_enter return for it */
	t0 = ms_now();
	assert_int_equal(loop_run_once(&L, 50), 0);
	uint64_t took = ms_now() - t0;
	assert_true(took >= 40 && took < 1000);
	assert_int_equal(r->ncompl, 0);
	can(r);
	RUN_UNTIL(r->final_seen, 2000);
	assert_contract_kept();
}

/* --- many fds ------------------------------------------------------------------------------- */

/* Ten ready fds are all handled by one wait. */
static void test_every_ready_fd_per_wait(void **state)
{
	(void)state;
	enum { N = 10 };
	start_loop(32, 4096);
	int sv[N][2];
	struct trk *t[N];
	for (int i = 0; i < N; i++) {
		make_pair(UNIX_PAIR, sv[i], false);
		t[i] = new_trk(OP_RECV, sv[i][0]);
		assert_int_equal(sub(t[i]), 0);
	}
	settle(20);
	for (int i = 0; i < N; i++)
		put(sv[i][1], "x", 1);
	assert_int_equal(loop_run_once(&L, 1000), 0);
	int got = 0;
	for (int i = 0; i < N; i++)
		got += t[i]->ndata;
	assert_int_equal(got, N);
	for (int i = 0; i < N; i++)
		can(t[i]);
	RUN_UNTIL(n_finals == n_submits, 2000);
	assert_int_equal(n_finals, n_submits);
	assert_contract_kept();
}

/* fds near and past the backend's limit. With BACKEND_CAP_FD_LIMIT, submit on an fd >= max_fd
 * fails cleanly (-EMFILE) and harms nothing; below it everything works. Without the cap, an
 * fd well past the table size the loop was configured for works too. */
static void test_fd_limit(void **state)
{
	(void)state;
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 4200 && rl.rlim_max > rl.rlim_cur) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < 4200) {
		print_message("  [%s] RLIMIT_NOFILE %llu < 4200: fd-limit test skipped\n", be->name,
			      (unsigned long long)rl.rlim_cur);
		skip();
	}
	bool limited = be->caps & BACKEND_CAP_FD_LIMIT;
	start_loop(8, 4096);
	int sv[2];
	make_pair(UNIX_PAIR, sv, false);
	int high = limited ? be->max_fd - 1 : 1000; /* the highest fd select can watch */
	int past[2] = { limited ? be->max_fd : 2100, limited ? be->max_fd + 1000 : 4100 };

	/* Just below the limit: a normal life, then closed through the loop. */
	assert_int_equal(dup2(sv[0], high), high);
	struct trk *t = new_trk(OP_RECV, high);
	assert_int_equal(sub(t), 0);
	put(sv[1], "hi", 2);
	RUN_UNTIL(t->len == 2, 2000);
	assert_int_equal(t->len, 2);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(loop_close_fd(&L, high), 0);

	for (int i = 0; i < 2; i++) {
		int fd = past[i];
		assert_int_equal(dup2(sv[0], fd), fd);
		struct trk *r = new_trk(OP_RECV, fd);
		struct trk *s = new_trk(OP_SEND, fd);
		s->op.buf = (struct buf){ .base = "s", .len = 1 };
		if (limited) {
			assert_int_equal(sub(r), -EMFILE);
			assert_false(r->op.armed);
			assert_int_equal(sub(s), -EMFILE);
			assert_false(s->op.armed);
			can(r); /* not armed: nothing */
			settle(20);
			assert_int_equal(r->ncompl + s->ncompl, 0);
		} else {
			assert_int_equal(sub(r), 0);
			assert_int_equal(sub(s), 0);
			put(sv[1], "far", 3);
			RUN_UNTIL(r->len == 3 && s->final_seen, 2000);
			assert_int_equal(r->len, 3);
			assert_int_equal(s->final_res, 1);
			char c;
			assert_int_equal(recv(sv[1], &c, 1, 0), 1);
			can(r);
			RUN_UNTIL(r->final_seen, 2000);
		}
		assert_int_equal(loop_close_fd(&L, fd), 0);
	}

	/* The loop still serves a low fd, and closing fds through it left nothing stale. */
	struct trk *low = new_trk(OP_RECV, sv[0]);
	assert_int_equal(sub(low), 0);
	put(sv[1], "low", 3);
	RUN_UNTIL(low->len == 3, 2000);
	assert_int_equal(low->len, 3);
	can(low);
	RUN_UNTIL(low->final_seen, 2000);
	assert_int_equal(n_finals, n_submits);
	assert_contract_kept();
}

/* loop_close_fd, then a new socket that reuses the number: the loop neither fails nor
 * confuses the two. */
static void test_close_and_reuse_fd(void **state)
{
	(void)state;
	start_loop(8, 4096);
	for (int round = 0; round < 5; round++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		nonblock(sv[0]);
		struct trk *t = new_trk(OP_RECV, sv[0]);
		assert_int_equal(sub(t), 0);
		char msg[16];
		snprintf(msg, sizeof(msg), "r%d", round);
		put(sv[1], msg, 2);
		RUN_UNTIL(t->len == 2, 2000);
		assert_memory_equal(t->data, msg, 2);
		can(t);
		RUN_UNTIL(t->final_seen, 2000);
		assert_int_equal(loop_close_fd(&L, sv[0]), 0);
		close(sv[1]);
		assert_true(settle(30) < 20);
	}
	assert_contract_kept();
}

/* An fd closed behind the loop's back (not through loop_close_fd: a caller bug) with a recv
 * armed on it: the loop keeps working and does not spin, and the op still ends with exactly one
 * final completion (an error, or -ECANCELED once cancelled). */
static void test_fd_closed_behind_loop(void **state)
{
	(void)state;
	int sv[2], ok[2];
	start_loop(8, 4096);
	make_pair(UNIX_PAIR, sv, false);
	make_pair(UNIX_PAIR, ok, false);
	struct trk *t = new_trk(OP_RECV, sv[0]);
	struct trk *o = new_trk(OP_RECV, ok[0]);
	assert_int_equal(sub(t), 0);
	assert_int_equal(sub(o), 0);
	settle(20);
	close_tracked(&sv[0]);
	long iters = settle(100);
	print_message("  [%s] fd closed under an armed recv: final %s, %ld iterations in 100 ms\n",
		      be->name, t->final_seen ? "delivered" : "not yet", iters);
	assert_true(iters < 40);
	assert_true(t->nfinal == 0 || t->final_res < 0);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_true(t->final_res == -EBADF || t->final_res == -ECANCELED);
	/* The rest of the loop was not disturbed. */
	put(ok[1], "still", 5);
	RUN_UNTIL(o->len == 5, 2000);
	assert_int_equal(o->len, 5);
	can(o);
	RUN_UNTIL(o->final_seen, 2000);
	assert_int_equal(n_finals, n_submits);
	assert_contract_kept();
}

/* Churn: many connections whose completions, run from inside the backend's wait, cancel other
 * connections' recvs, close and reopen connections (the new socketpair takes the numbers just
 * freed, in the middle of a batch) and re-arm, while peers keep writing. Some connections sit
 * "parked" (nothing armed, bytes arriving) for a while, like paused ones. Each connection must
 * receive exactly its peer's bytes in order (a prefix, if closed early), and every submit gets
 * exactly one final completion. */
enum { CHURN_N = 40, CHURN_CAP = 1 << 16 };
struct churn_conn {
	int a, b;
	struct trk *t;
	uint8_t *sent;
	size_t nsent;
	bool closing; /* cancelled, to be closed and reopened at its final completion */
	bool parked;  /* final, not re-armed */
	int gen;
};
static struct churn_conn cc[CHURN_N];
static uint32_t rng_state;
static int churn_cancels, churn_reopens, churn_parks;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static void churn_hook(struct trk *t, int res, unsigned fl);

static void churn_arm(struct churn_conn *c)
{
	c->parked = false;
	if (sub(c->t) != 0)
		violation("%s: churn submit failed", be->name);
}

static void churn_open(int i)
{
	struct churn_conn *c = &cc[i];
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		violation("%s: socketpair: %s", be->name, strerror(errno));
		return;
	}
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	c->a = sv[0];
	c->b = sv[1];
	c->nsent = 0;
	c->closing = false;
	c->gen++;
	trk_reset(c->t, OP_RECV, c->a);
	c->t->hook = churn_hook;
	churn_arm(c);
}

/* c's op is final: check what it got, close it through the loop, open a new one. */
static void churn_reopen(int i)
{
	struct churn_conn *c = &cc[i];
	struct trk *t = c->t;
	if (t->len > c->nsent || memcmp(t->data, c->sent, t->len) != 0)
		violation("%s: churn conn %d gen %d: received bytes are not what was sent", be->name,
			  i, c->gen);
	loop_close_fd(&L, c->a);
	close(c->b);
	churn_open(i);
	churn_reopens++;
}

static void churn_hook(struct trk *t, int res, unsigned fl)
{
	int i = t->idx;
	struct churn_conn *c = &cc[i];
	if (res > 0) {
		uint32_t r = rng() % 64;
		int oi = (int)(rng() % CHURN_N);
		struct churn_conn *o = &cc[oi];
		if (r < 6) { /* cancel another connection's recv */
			if (o != c && o->t->op.armed && !o->closing) {
				can(o->t);
				churn_cancels++;
			}
		} else if (r < 9) { /* close a connection (maybe this one) */
			if (o->parked)
				churn_reopen(oi); /* right now, mid-batch */
			else if (!o->closing && o->t->op.armed) {
				o->closing = true;
				can(o->t);
			}
		} else if (r < 12 && o->parked) { /* resume a parked one */
			churn_arm(o);
		}
	}
	if (fl & OPF_MORE)
		return;
	if (c->closing) {
		churn_reopen(i);
		return;
	}
	if (res == -ECANCELED || res == -ENOBUFS || res > 0) {
		if (rng() % 2) {
			c->parked = true;
			churn_parks++;
		} else {
			churn_arm(c); /* re-arm from inside the callback */
		}
		return;
	}
	violation("%s: churn conn %d: unexpected final %d", be->name, i, res);
}

static void test_churn(void **state)
{
	(void)state;
	start_loop(16, 512);
	rng_state = 0x9e3779b9u;
	churn_cancels = churn_reopens = churn_parks = 0;
	for (int i = 0; i < CHURN_N; i++) {
		cc[i] = (struct churn_conn){ .t = new_trk(OP_RECV, -1), .sent = malloc(CHURN_CAP) };
		assert_non_null(cc[i].sent);
		assert_int_equal(cc[i].t->idx, i);
		churn_open(i);
	}
	uint64_t dl = ms_now() + 8000;
	for (int round = 0; round < 500 && ms_now() < dl; round++) {
		for (int w = 0; w < 8; w++) {
			struct churn_conn *c = &cc[rng() % CHURN_N];
			size_t n = 1 + rng() % 700;
			if (c->closing || c->nsent + n > CHURN_CAP)
				continue;
			for (size_t j = 0; j < n; j++)
				c->sent[c->nsent + j] = (uint8_t)(c->gen * 131 + (c->nsent + j) * 7);
			ssize_t k = send(c->b, c->sent + c->nsent, n, MSG_NOSIGNAL);
			if (k > 0)
				c->nsent += (size_t)k;
		}
		struct churn_conn *p = &cc[rng() % CHURN_N];
		if (p->parked && rng() % 4 == 0)
			churn_arm(p);
		assert_int_equal(loop_run_once(&L, 0), 0);
	}
	/* Drain: resume everything parked; every connection gets all its bytes. */
	bool done = false;
	uint64_t dl2 = ms_now() + 3000;
	while (!done && ms_now() < dl2) {
		for (int i = 0; i < CHURN_N; i++)
			cc[i].t->hook = NULL;
		for (int i = 0; i < CHURN_N; i++) {
			if (!cc[i].t->op.armed) { /* parked, or a close whose final came */
				cc[i].closing = false;
				churn_arm(&cc[i]);
			}
		}
		assert_int_equal(loop_run_once(&L, 5), 0);
		done = true;
		for (int i = 0; i < CHURN_N; i++)
			if (cc[i].t->len != cc[i].nsent)
				done = false;
	}
	for (int i = 0; i < CHURN_N; i++) {
		struct churn_conn *c = &cc[i];
		if (c->t->len != c->nsent || memcmp(c->t->data, c->sent, c->nsent) != 0)
			print_error("[%s] churn conn %d gen %d: %zu of %zu bytes\n", be->name, i,
				    c->gen, c->t->len, c->nsent);
		assert_int_equal(c->t->len, c->nsent);
		assert_memory_equal(c->t->data, c->sent, c->nsent);
	}
	print_message("  [%s] churn: %d cross-cancels, %d parked, %d close+reopen, %ld submits\n",
		      be->name, churn_cancels, churn_parks, churn_reopens, n_submits);
	/* Wind down: every submit has had exactly one final completion. */
	for (int i = 0; i < CHURN_N; i++)
		can(cc[i].t);
	RUN_UNTIL(n_finals == n_submits, 2000);
	assert_int_equal(n_finals, n_submits);
	for (int i = 0; i < CHURN_N; i++) {
		loop_close_fd(&L, cc[i].a);
		close(cc[i].b);
		free(cc[i].sent);
	}
	assert_true(churn_cancels > 0 && churn_reopens > 0 && churn_parks > 0);
	assert_contract_kept();
}

/* --- datagrams (OP_RECVMSG, OP_SENDMSG) ----------------------------------------------------- */

/* Every datagram a RECVMSG delivered: result, flags, source, and where its bytes sit in data. */
struct drec {
	int res;
	unsigned fl;
	struct sockaddr_storage src;
	socklen_t srclen;
	size_t off;
};
#define MAX_DRECS 1024
static struct drec drecs[MAX_DRECS];

static void dgram_hook(struct trk *t, int res, unsigned fl)
{
	if (!(fl & OPF_BUFFER))
		return;
	const struct op *op = &t->op;
	/* The payload lies inside its datagram buffer (the buffer is released by now: only
	 * pointers are compared). */
	const char *b = bufpool_addr(&L.dgram_pool, op->buf.bid & ~LOOP_DGRAM_BID);
	if (op->buf.base < b || op->buf.base + op->buf.len > b + L.dgram_pool.bufsize)
		violation("%s: datagram payload outside its buffer", be->name);
	if (op->buf.len != (uint32_t)(res > 0 ? res : 0))
		violation("%s: datagram buf.len %u != res %d", be->name, op->buf.len, res);
	if (ndrecs >= MAX_DRECS)
		return;
	struct drec *d = &drecs[ndrecs++];
	d->res = res;
	d->fl = fl;
	d->srclen = op->msg->msg_namelen;
	memcpy(&d->src, op->msg->msg_name,
	       d->srclen < sizeof(d->src) ? d->srclen : sizeof(d->src));
	d->off = t->len - (size_t)(res > 0 ? res : 0);
}

/* A RECVMSG on fd, every datagram recorded in drecs[]. */
static struct trk *new_rx(int fd)
{
	struct trk *t = new_trk(OP_RECVMSG, fd);
	t->mh = (struct msghdr){ .msg_name = &t->name, .msg_namelen = sizeof(t->name) };
	t->op.msg = &t->mh;
	t->hook = dgram_hook;
	return t;
}

/* A SENDMSG of p[0..n) from fd to dst. */
static struct trk *new_tx(int fd, const struct sockaddr_storage *dst, socklen_t dl, const void *p,
			  size_t n)
{
	struct trk *t = new_trk(OP_SENDMSG, fd);
	memcpy(&t->name, dst, dl);
	t->iov = (struct iovec){ .iov_base = (void *)p, .iov_len = n };
	t->mh = (struct msghdr){ .msg_name = &t->name, .msg_namelen = dl, .msg_iov = &t->iov,
				 .msg_iovlen = 1 };
	t->op.msg = &t->mh;
	return t;
}

/* A non-blocking UDP socket on the loopback, tracked; its address in *ss. -1 if the family
 * is not available here (no ::1). */
static int udp_sock(int family, struct sockaddr_storage *ss, socklen_t *sl)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		*sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*sl = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)ss, *sl) < 0 ||
	    getsockname(fd, (struct sockaddr *)ss, sl) < 0) {
		close(fd);
		return -1;
	}
	return track(fd);
}

static void udp_put(int fd, const struct sockaddr_storage *dst, socklen_t dl, const void *p,
		    size_t n)
{
	assert_int_equal(sendto(fd, p, n, 0, (const struct sockaddr *)dst, dl), (ssize_t)n);
}

/* The next datagram on a test socket, waiting up to 2 s; its length, or -1. */
static ssize_t udp_get(int fd, void *p, size_t cap)
{
	uint64_t dl = ms_now() + 2000;
	ssize_t n;
	while ((n = recv(fd, p, cap, 0)) < 0 && errno == EAGAIN && ms_now() < dl)
		usleep(500);
	return n;
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t al,
		      const struct sockaddr_storage *b, socklen_t bl)
{
	return al == bl && memcmp(a, b, al) == 0;
}

static void big_rcvbuf(int fd)
{
	int sz = 4 << 20;
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
}

/* Sizes from empty to the largest UDP payload arrive whole, each with its source and bytes. */
static void udp_sizes_on(int family)
{
	static const size_t sizes[] = { 0, 1, 1472, 8192, 65507 };
	enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
	start_loop_dgram(8, 65507 + LOOP_DGRAM_HEADROOM);
	struct sockaddr_storage ra, sa;
	socklen_t rl, sl;
	int rfd = udp_sock(family, &ra, &rl);
	if (rfd < 0 && family == AF_INET6) {
		print_message("  [%s] no ::1 here: IPv6 datagrams skipped\n", be->name);
		skip();
	}
	assert_true(rfd >= 0);
	big_rcvbuf(rfd);
	int sfd = udp_sock(family, &sa, &sl);
	assert_true(sfd >= 0);
	struct trk *t = new_rx(rfd);
	assert_int_equal(sub(t), 0);
	uint8_t *out = malloc(65507);
	assert_non_null(out);
	size_t total = 0;
	for (int i = 0; i < NS; i++) {
		fill(out, sizes[i], (uint32_t)i + 1);
		udp_put(sfd, &ra, rl, out, sizes[i]);
		total += sizes[i];
		RUN_UNTIL(ndrecs == i + 1 || t->final_seen, 2000);
		assert_false(t->final_seen);
		assert_int_equal(ndrecs, i + 1);
		const struct drec *d = &drecs[i];
		assert_int_equal(d->res, (int)sizes[i]);
		assert_int_equal(d->fl, OPF_MORE | OPF_BUFFER);
		assert_true(same_addr(&d->src, d->srclen, &sa, sl));
		assert_int_equal(t->len, total);
		assert_memory_equal(t->data + d->off, out, sizes[i]);
		/* Between completions the capacity is back for the next source. */
		assert_int_equal(t->mh.msg_namelen, sizeof(t->name));
	}
	free(out);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->final_res, -ECANCELED);
	assert_contract_kept();
}

static void test_udp_sizes_ipv4(void **state)
{
	(void)state;
	udp_sizes_on(AF_INET);
}

static void test_udp_sizes_ipv6(void **state)
{
	(void)state;
	udp_sizes_on(AF_INET6);
}

/* Larger than the payload capacity (dgram_bufsize - LOOP_DGRAM_HEADROOM): OPF_TRUNC and what
 * fit; the op stays armed and the next datagram is whole. */
static void test_udp_truncated(void **state)
{
	(void)state;
	enum { CAP = 512 };
	start_loop_dgram(4, CAP + LOOP_DGRAM_HEADROOM);
	struct sockaddr_storage ra, sa;
	socklen_t rl, sl;
	int rfd = udp_sock(AF_INET, &ra, &rl), sfd = udp_sock(AF_INET, &sa, &sl);
	assert_true(rfd >= 0 && sfd >= 0);
	struct trk *t = new_rx(rfd);
	assert_int_equal(sub(t), 0);
	uint8_t big[CAP * 2], small[CAP];
	fill(big, sizeof(big), 7);
	fill(small, sizeof(small), 8);
	udp_put(sfd, &ra, rl, big, sizeof(big));
	udp_put(sfd, &ra, rl, small, CAP); /* exactly the capacity: whole */
	udp_put(sfd, &ra, rl, small, CAP - 1); /* one short */
	RUN_UNTIL(ndrecs == 3 || t->final_seen, 2000);
	assert_int_equal(ndrecs, 3);
	assert_int_equal(drecs[0].res, CAP);
	assert_int_equal(drecs[0].fl, OPF_MORE | OPF_BUFFER | OPF_TRUNC);
	assert_memory_equal(t->data + drecs[0].off, big, CAP);
	assert_true(same_addr(&drecs[0].src, drecs[0].srclen, &sa, sl));
	assert_int_equal(drecs[1].res, CAP);
	assert_int_equal(drecs[1].fl, OPF_MORE | OPF_BUFFER);
	assert_memory_equal(t->data + drecs[1].off, small, CAP);
	assert_int_equal(drecs[2].res, CAP - 1);
	assert_int_equal(drecs[2].fl, OPF_MORE | OPF_BUFFER);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_contract_kept();
}

/* Every datagram buffer held by the caller: the next datagram gives -ENOBUFS, final, and the
 * loop sleeps; buffers back and re-armed, the datagrams that waited arrive, in order. */
static void test_udp_pool_dry_enobufs(void **state)
{
	(void)state;
	enum { NB = 4, N = 7 };
	start_loop_dgram(NB, 1024 + LOOP_DGRAM_HEADROOM);
	struct sockaddr_storage ra, sa;
	socklen_t rl, sl;
	int rfd = udp_sock(AF_INET, &ra, &rl), sfd = udp_sock(AF_INET, &sa, &sl);
	assert_true(rfd >= 0 && sfd >= 0);
	struct trk *t = new_rx(rfd);
	t->hold = true;
	assert_int_equal(sub(t), 0);
	for (int i = 0; i < N; i++) {
		char m[16];
		int n = snprintf(m, sizeof(m), "dgram %d", i);
		udp_put(sfd, &ra, rl, m, (size_t)n);
	}
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->final_res, -ENOBUFS);
	assert_int_equal(t->final_flags & OPF_MORE, 0);
	assert_int_equal(t->nheld, NB);
	assert_int_equal(ndrecs, NB);
	long iters = settle(100);
	print_message("  [%s] datagram pool dry, datagrams waiting: %ld iterations in 100 ms\n",
		      be->name, iters);
	assert_true(iters < 40);
	assert_int_equal(t->ncompl, NB + 1);

	release_held(t);
	t->hold = false;
	t->mh.msg_namelen = sizeof(t->name);
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(ndrecs == N, 2000);
	assert_int_equal(ndrecs, N);
	for (int i = 0; i < N; i++) {
		char m[16];
		int n = snprintf(m, sizeof(m), "dgram %d", i);
		assert_int_equal(drecs[i].res, n);
		assert_memory_equal(t->data + drecs[i].off, m, (size_t)n);
	}
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_contract_kept();
}

/* 200 datagrams from 4 sockets sent before the loop runs: all arrive, in order per source,
 * through a pool of 64 buffers (so buffers cycle); the receive costs batched syscalls. */
static void test_udp_burst_from_many(void **state)
{
	(void)state;
	enum { NSRC = 4, PER = 50, LEN = 100 };
	start_loop_dgram(64, 2048);
	struct sockaddr_storage ra, sa[NSRC];
	socklen_t rl, sl[NSRC];
	int rfd = udp_sock(AF_INET, &ra, &rl);
	assert_true(rfd >= 0);
	big_rcvbuf(rfd);
	int sfd[NSRC];
	for (int k = 0; k < NSRC; k++) {
		sfd[k] = udp_sock(AF_INET, &sa[k], &sl[k]);
		assert_true(sfd[k] >= 0);
	}
	struct trk *t = new_rx(rfd);
	assert_int_equal(sub(t), 0);
	settle(10);
	struct loop_tally before = L.tally;
	for (int j = 0; j < PER; j++) {
		for (int k = 0; k < NSRC; k++) {
			uint8_t m[LEN];
			fill(m, LEN, (uint32_t)(k * 1000 + j));
			m[0] = (uint8_t)k;
			m[1] = (uint8_t)j;
			udp_put(sfd[k], &ra, rl, m, LEN);
		}
	}
	RUN_UNTIL(ndrecs == NSRC * PER || t->final_seen, 5000);
	assert_false(t->final_seen);
	assert_int_equal(ndrecs, NSRC * PER);
	int next[NSRC] = { 0 };
	for (int i = 0; i < ndrecs; i++) {
		const struct drec *d = &drecs[i];
		assert_int_equal(d->res, LEN);
		const uint8_t *m = t->data + d->off;
		int k = m[0];
		assert_true(k < NSRC);
		assert_true(same_addr(&d->src, d->srclen, &sa[k], sl[k]));
		assert_int_equal(m[1], next[k]); /* in order per source */
		uint8_t want[LEN];
		fill(want, LEN, (uint32_t)(k * 1000 + next[k]));
		assert_memory_equal(m + 2, want + 2, LEN - 2);
		next[k]++;
	}
	uint64_t mm = L.tally.syscalls[SC_RECVMMSG] - before.syscalls[SC_RECVMMSG];
	uint64_t en = L.tally.syscalls[SC_IO_URING_ENTER] - before.syscalls[SC_IO_URING_ENTER];
	print_message("  [%s] %d datagrams: %llu recvmmsg, %llu io_uring_enter, %llu wake-ups\n",
		      be->name, ndrecs, (unsigned long long)mm, (unsigned long long)en,
		      (unsigned long long)(L.tally.wakeups - before.wakeups));
	/* Either batched receives (fewer calls than datagrams) or none at all (io_uring). */
	assert_true((mm > 0 && mm < (uint64_t)ndrecs) || (mm == 0 && en > 0));
	assert_int_equal(L.tally.syscalls[SC_RECV], before.syscalls[SC_RECV]);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_contract_kept();
}

/* 120 SENDMSGs submitted in one go, to two peers, sizes 0 to 1472: every one completes with
 * its length, and each peer gets its datagrams byte-exact and in submission order. */
static void test_udp_sendmsg_many_in_order(void **state)
{
	(void)state;
	enum { N = 120, MAXLEN = 1472 };
	start_loop_dgram(8, 4096);
	struct sockaddr_storage la, pa[2];
	socklen_t ll, pl[2];
	int lfd = udp_sock(AF_INET, &la, &ll);
	assert_true(lfd >= 0);
	int pfd[2];
	for (int k = 0; k < 2; k++) {
		pfd[k] = udp_sock(AF_INET, &pa[k], &pl[k]);
		assert_true(pfd[k] >= 0);
		big_rcvbuf(pfd[k]);
	}
	uint8_t *bytes = malloc((size_t)N * MAXLEN);
	assert_non_null(bytes);
	size_t len[N];
	struct trk *tx[N];
	struct loop_tally before = L.tally;
	for (int i = 0; i < N; i++) {
		len[i] = i == 0 ? 0 : (size_t)(i * 37) % MAXLEN + 2;
		uint8_t *p = bytes + (size_t)i * MAXLEN;
		fill(p, len[i], (uint32_t)i + 99);
		if (len[i] >= 2) {
			p[0] = (uint8_t)i;
			p[1] = (uint8_t)(i % 2);
		}
		tx[i] = new_tx(lfd, &pa[i % 2], pl[i % 2], p, len[i]);
		assert_int_equal(sub(tx[i]), 0);
	}
	assert_int_equal(n_finals, 0); /* never from inside submit */
	RUN_UNTIL(n_finals == N, 2000);
	assert_int_equal(n_finals, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(tx[i]->nfinal, 1);
		assert_int_equal(tx[i]->final_res, (int)len[i]);
	}
	uint8_t got[MAXLEN + 1];
	for (int k = 0; k < 2; k++) {
		for (int i = k; i < N; i += 2) {
			ssize_t n = udp_get(pfd[k], got, sizeof(got));
			assert_int_equal(n, (ssize_t)len[i]);
			assert_memory_equal(got, bytes + (size_t)i * MAXLEN, len[i]);
		}
		assert_int_equal(recv(pfd[k], got, sizeof(got), 0), -1); /* nothing more */
	}
	uint64_t mm = L.tally.syscalls[SC_SENDMMSG] - before.syscalls[SC_SENDMMSG];
	uint64_t en = L.tally.syscalls[SC_IO_URING_ENTER] - before.syscalls[SC_IO_URING_ENTER];
	print_message("  [%s] %d sendmsg: %llu sendmmsg, %llu io_uring_enter\n", be->name, N,
		      (unsigned long long)mm, (unsigned long long)en);
	assert_true((mm > 0 && mm < N) || (mm == 0 && en > 0));
	assert_int_equal(L.tally.syscalls[SC_SEND], before.syscalls[SC_SEND]);
	free(bytes);
	assert_contract_kept();
}

/* The UDP echo pattern: each datagram is sent back to its source from the recvmsg callback,
 * out of the datagram buffer itself, which is released when the send completes. */
#define ECHO_TX 64
static struct trk *echo_tx[ECHO_TX];
static int echo_ntx;

static void echo_sent(struct trk *t, int res, unsigned fl)
{
	(void)res;
	(void)fl;
	loop_buf_release(&L, t->op.buf.bid);
}

static void echo_hook(struct trk *t, int res, unsigned fl)
{
	if (!(fl & OPF_BUFFER) || t->nheld == 0)
		return;
	uint32_t bid = t->held[--t->nheld];
	struct trk *u = echo_tx[echo_ntx++ % ECHO_TX];
	trk_reset(u, OP_SENDMSG, t->op.fd);
	memcpy(&u->name, &t->name, t->mh.msg_namelen);
	u->iov = (struct iovec){ .iov_base = (void *)t->op.buf.base, .iov_len = (size_t)res };
	u->mh = (struct msghdr){ .msg_name = &u->name, .msg_namelen = t->mh.msg_namelen,
				 .msg_iov = &u->iov, .msg_iovlen = 1 };
	u->op.msg = &u->mh;
	u->op.buf = t->op.buf;
	u->op.buf.bid = bid;
	u->hook = echo_sent;
	if (loop_submit(&L, &u->op) < 0) {
		violation("%s: sendmsg from a callback refused", be->name);
		loop_buf_release(&L, bid);
	}
}

static void test_udp_echo_from_callback(void **state)
{
	(void)state;
	enum { NCLI = 3, ROUNDS = 10 };
	start_loop_dgram(32, 2048);
	struct sockaddr_storage ra, ca[NCLI];
	socklen_t rl, cl[NCLI];
	int rfd = udp_sock(AF_INET6, &ra, &rl);
	int family = AF_INET6;
	if (rfd < 0) {
		family = AF_INET;
		rfd = udp_sock(AF_INET, &ra, &rl);
	}
	assert_true(rfd >= 0);
	int cfd[NCLI];
	for (int k = 0; k < NCLI; k++) {
		cfd[k] = udp_sock(family, &ca[k], &cl[k]);
		assert_true(cfd[k] >= 0);
	}
	for (int i = 0; i < ECHO_TX; i++)
		echo_tx[i] = new_trk(OP_SENDMSG, rfd);
	echo_ntx = 0;
	struct trk *t = new_rx(rfd);
	t->hold = true;
	t->hook = echo_hook;
	assert_int_equal(sub(t), 0);
	for (int r = 0; r < ROUNDS; r++) {
		char m[NCLI][32];
		int n[NCLI];
		for (int k = 0; k < NCLI; k++) {
			n[k] = snprintf(m[k], sizeof(m[k]), "client %d round %d", k, r);
			udp_put(cfd[k], &ra, rl, m[k], (size_t)n[k]);
		}
		for (int k = 0; k < NCLI; k++) {
			char got[64];
			ssize_t len = -1;
			uint64_t dl = ms_now() + 2000;
			while (ms_now() < dl &&
			       (len = recv(cfd[k], got, sizeof(got), 0)) < 0 && errno == EAGAIN)
				assert_int_equal(loop_run_once(&L, 5), 0);
			assert_int_equal(len, n[k]);
			assert_memory_equal(got, m[k], (size_t)n[k]);
		}
	}
	assert_int_equal(echo_ntx, NCLI * ROUNDS);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	settle(20); /* the last sends' completions */
	assert_contract_kept();
}

/* Cancel of an idle RECVMSG, of one with datagrams racing it, and from inside its own
 * callback in the middle of a burst: one final each, nothing after, and no buffer leaks
 * (a pool of NB must then still take NB datagrams). */
static void cancel_mid_burst(struct trk *t, int res, unsigned fl)
{
	dgram_hook(t, res, fl);
	if ((fl & OPF_MORE) && ndrecs == 2)
		loop_cancel(&L, &t->op);
}

static void test_udp_cancel_recvmsg(void **state)
{
	(void)state;
	enum { NB = 8 };
	start_loop_dgram(NB, 1024);
	struct sockaddr_storage ra, sa;
	socklen_t rl, sl;
	int rfd = udp_sock(AF_INET, &ra, &rl), sfd = udp_sock(AF_INET, &sa, &sl);
	assert_true(rfd >= 0 && sfd >= 0);

	struct trk *t = new_rx(rfd);
	assert_int_equal(sub(t), 0);
	settle(10);
	can(t);
	can(t);
	assert_int_equal(t->ncompl, 0);
	RUN_UNTIL(t->final_seen, 2000);
	settle(20);
	assert_int_equal(t->ncompl, 1);
	assert_int_equal(t->final_res, -ECANCELED);

	/* Datagrams racing the cancel: some may come first, then one final. */
	t = new_rx(rfd);
	assert_int_equal(sub(t), 0);
	settle(10);
	for (int i = 0; i < 5; i++)
		udp_put(sfd, &ra, rl, "race", 4);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	settle(20);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->after_final, 0);
	char sink[64];
	while (recv(rfd, sink, sizeof(sink), 0) >= 0)
		;

	/* Cancelled from its own callback, after the 2nd datagram of a burst of 10. */
	ndrecs = 0;
	t = new_rx(rfd);
	t->hook = cancel_mid_burst;
	assert_int_equal(sub(t), 0);
	settle(10);
	for (int i = 0; i < 10; i++)
		udp_put(sfd, &ra, rl, "burst", 5);
	RUN_UNTIL(t->final_seen, 2000);
	settle(20);
	assert_int_equal(t->nfinal, 1);
	assert_int_equal(t->after_final, 0);
	assert_true(ndrecs >= 2);
	while (recv(rfd, sink, sizeof(sink), 0) >= 0)
		;

	/* No datagram buffer leaked: NB held datagrams still fit. */
	ndrecs = 0;
	t = new_rx(rfd);
	t->hold = true;
	assert_int_equal(sub(t), 0);
	for (int i = 0; i < NB; i++)
		udp_put(sfd, &ra, rl, "fits", 4);
	RUN_UNTIL(ndrecs == NB, 2000);
	assert_int_equal(ndrecs, NB);
	/* Every buffer now held: io_uring may end the op with -ENOBUFS already (its ring is
	 * empty), the readiness backends only when the next datagram comes. */
	assert_true(!t->final_seen || t->final_res == -ENOBUFS);
	release_held(t);
	can(t);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->nfinal, 1);
	assert_contract_kept();
}

/* Cancel of a SENDMSG right after its submit: exactly one final, -ECANCELED or its length
 * (io_uring may have sent it); the others leave in order, and the peer gets exactly those
 * that did not end cancelled. */
static void test_udp_cancel_queued_sendmsg(void **state)
{
	(void)state;
	start_loop_dgram(8, 4096);
	struct sockaddr_storage la, pa;
	socklen_t ll, pl;
	int lfd = udp_sock(AF_INET, &la, &ll), pfd = udp_sock(AF_INET, &pa, &pl);
	assert_true(lfd >= 0 && pfd >= 0);
	static const char *const msgs[] = { "one", "two", "three", "four" };
	struct trk *tx[4];
	for (int i = 0; i < 4; i++) {
		tx[i] = new_tx(lfd, &pa, pl, msgs[i], strlen(msgs[i]));
		assert_int_equal(sub(tx[i]), 0);
	}
	can(tx[1]);
	can(tx[3]);
	assert_int_equal(n_finals, 0);
	RUN_UNTIL(n_finals == 4, 2000);
	settle(20);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(tx[i]->nfinal, 1);
		assert_int_equal(tx[i]->after_final, 0);
		if (i == 1 || i == 3)
			assert_true(tx[i]->final_res == -ECANCELED ||
				    tx[i]->final_res == (int)strlen(msgs[i]));
		else
			assert_int_equal(tx[i]->final_res, (int)strlen(msgs[i]));
	}
	for (int i = 0; i < 4; i++) {
		if (tx[i]->final_res < 0)
			continue;
		char got[16];
		ssize_t n = udp_get(pfd, got, sizeof(got));
		assert_int_equal(n, (ssize_t)strlen(msgs[i]));
		assert_memory_equal(got, msgs[i], (size_t)n);
	}
	char got[16];
	assert_int_equal(recv(pfd, got, sizeof(got), 0), -1);
	assert_contract_kept();
}

/* A peer that cannot take more: SENDMSG completes with -EAGAIN at once, never waiting, and so
 * does every later one that meets the full peer; once it drains, sending works again.
 * Not over UDP: on loopback a UDP send never meets a full buffer (the loopback device releases
 * each datagram's send-buffer charge as it transmits it, and a full receiver drops silently),
 * and a corked socket grows its datagram in page fragments until EMSGSIZE. An AF_UNIX
 * datagram pair is the same operation on a socket whose sender does block, on the peer's
 * queue (net.unix.max_dgram_qlen) and its own send buffer. A backend that waited for
 * writability (io_uring without MSG_DONTWAIT parks the request on a poll) would never finish
 * them here. Results are a run of successes, then only -EAGAIN. */
static void test_udp_send_buffer_full(void **state)
{
	(void)state;
	enum { N = 100, LEN = 1000 };
	start_loop_dgram(8, 4096);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
	track(sv[0]);
	track(sv[1]);
	static uint8_t bytes[LEN];
	fill(bytes, LEN, 5);
	struct sockaddr_storage none;
	memset(&none, 0, sizeof(none));
	struct trk *tx[N];
	for (int i = 0; i < N; i++) {
		tx[i] = new_tx(sv[0], &none, 0, bytes, LEN);
		tx[i]->mh.msg_name = NULL; /* connected: no destination */
		assert_int_equal(sub(tx[i]), 0);
	}
	RUN_UNTIL(n_finals == N, 2000);
	assert_int_equal(n_finals, N);
	int ok = 0, eagain = 0;
	for (int i = 0; i < N; i++) {
		int res = tx[i]->final_res;
		if (res == LEN && eagain == 0)
			ok++;
		else if (res == -EAGAIN)
			eagain++;
		else
			fail_msg("[%s] sendmsg %d: res %d after %d sent, %d -EAGAIN", be->name, i,
				 res, ok, eagain);
	}
	print_message("  [%s] peer not reading: %d sent, then %d -EAGAIN\n", be->name, ok, eagain);
	assert_true(ok > 0 && eagain > 0);
	uint8_t got[LEN + 1];
	for (int i = 0; i < ok; i++) {
		assert_int_equal(recv(sv[1], got, sizeof(got), 0), LEN);
		assert_memory_equal(got, bytes, LEN);
	}
	assert_int_equal(recv(sv[1], got, sizeof(got), 0), -1);
	/* Drained: the socket sends again. */
	struct trk *t = new_tx(sv[0], &none, 0, bytes, 10);
	t->mh.msg_name = NULL;
	assert_int_equal(sub(t), 0);
	RUN_UNTIL(t->final_seen, 2000);
	assert_int_equal(t->final_res, 10);
	assert_int_equal(udp_get(sv[1], got, sizeof(got)), 10);
	assert_contract_kept();
}

/* RECVMSG on a loop without a datagram pool, and either op without a msghdr, are refused at
 * submit; nothing completes. */
static void test_udp_requires_pool(void **state)
{
	(void)state;
	start_loop(8, 4096);
	struct sockaddr_storage ra;
	socklen_t rl;
	int rfd = udp_sock(AF_INET, &ra, &rl);
	assert_true(rfd >= 0);
	struct trk *t = new_rx(rfd);
	assert_int_equal(sub(t), -EINVAL);
	assert_false(t->op.armed);
	struct trk *u = new_trk(OP_SENDMSG, rfd);
	assert_int_equal(sub(u), -EINVAL);
	settle(20);
	assert_int_equal(t->ncompl + u->ncompl, 0);
	assert_contract_kept();
}

/* --- main ----------------------------------------------------------------------------------- */

static bool backend_runs_here(const struct backend *b)
{
	struct loop loop;
	struct loop_config cfg = { .nbufs = 16, .bufsize = 4096, .max_fds = 1024 };
	int rc = loop_init(&loop, b, &cfg);
	if (rc < 0) {
		printf("[ SKIPPED  ] reactor/%s: init failed here (%s)\n", b->name, strerror(-rc));
		return false;
	}
	loop_fini(&loop);
	return true;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_recv_multishot_unix),
		T(test_recv_multishot_tcp),
		T(test_recv_stream_1mib_tcp),
		T(test_recv_honours_max_bytes),
		T(test_recv_honours_max_bytes_oneshot),
		T(test_recv_eof_unix),
		T(test_recv_eof_tcp),
		T(test_recv_eof_empty),
		T(test_recv_reset),
		T(test_cancel_recv),
		T(test_cancel_races_data),
		T(test_send_backpressure_unix),
		T(test_send_backpressure_tcp),
		T(test_send_gathered_unix),
		T(test_send_gathered_tcp),
		T(test_recv_batches),
		T(test_send_to_closed_peer),
		T(test_cancel_pending_send),
		T(test_send_and_recv_same_fd),
		T(test_no_completion_inside_submit),
		T(test_read_eventfd),
		T(test_pool_dry_enobufs),
		T(test_no_spin_on_unwatched_hangup),
		T(test_accept_multishot),
		T(test_accept_multishot_ipv6),
		T(test_timers_in_order),
		T(test_wait_timeout),
		T(test_timer_started_after_idle_wait),
		T(test_every_ready_fd_per_wait),
		T(test_fd_limit),
		T(test_close_and_reuse_fd),
		T(test_fd_closed_behind_loop),
		T(test_churn),
		T(test_udp_sizes_ipv4),
		T(test_udp_sizes_ipv6),
		T(test_udp_truncated),
		T(test_udp_pool_dry_enobufs),
		T(test_udp_burst_from_many),
		T(test_udp_sendmsg_many_in_order),
		T(test_udp_echo_from_callback),
		T(test_udp_cancel_recvmsg),
		T(test_udp_cancel_queued_sendmsg),
		T(test_udp_send_buffer_full),
		T(test_udp_requires_pool),
	};
	/* A glob over test names, as tests/lib_backends.c takes it (test_udp_* for instance). */
	const char *filter = getenv("ECHOD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	int failed = 0;
	for (size_t i = 0; i < backend_count; i++) {
		be = backend_table[i];
		if (!backend_runs_here(be))
			continue;
		char name[64];
		snprintf(name, sizeof(name), "reactor/%s", be->name);
		printf("[==========] %s: the reactor contract on the %s backend\n", name, be->name);
		fflush(stdout);
		int f = _cmocka_run_group_tests(name, tests, sizeof(tests) / sizeof(tests[0]), NULL,
						NULL);
		if (f)
			printf("[==========] %s: %d test(s) failed\n", name, f);
		failed += f;
	}
	return failed ? 1 : 0;
}
