/* bm_roundtrip - one echo round trip through the reactor and a backend, in one thread.
 *
 * The reactor side of one connection echoes the way the core does: a multishot OP_RECV, each
 * received buffer sent back with OP_SEND (one send in flight per fd, the rest queued), the
 * buffer released when its send is complete. The benchmark thread is also the client on the
 * other end: per iteration it sends N bytes (non-blocking) and runs loop_run_once until all N
 * came back, reading its end non-blocking between iterations of the loop.
 *
 * Transports: an AF_UNIX socketpair, and TCP over 127.0.0.1 (listen on port 0, connect,
 * plain accept(), TCP_NODELAY on both ends).
 *
 * Wall-clock time, and the CPU column is the whole process's (name ".../process_time"): an
 * io_uring backend may hand an operation the kernel cannot finish inline to its io-wq workers,
 * which are threads of this process, and that CPU belongs to the round trip. For the readiness
 * backends, which have no such threads, it is this thread's CPU.
 */
#include "gbench.h"
#include "reactor.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RT_NBUFS   64
#define RT_BUFSIZE 4096
#define RT_MAX_FDS 1024
#define RT_WAIT_MS 1000 /* one loop_run_once never blocks longer than this */
#define RT_STALLS  5    /* loop_run_once calls in a row without progress: an error */
#define RT_MAX_MSG (64 * 1024)

enum rt_transport { RT_SOCKETPAIR, RT_TCP };

struct rt_echo {
	struct loop loop;
	int fd;          /* the reactor's end */
	struct op recv;
	struct op send;
	/* Received buffers waiting for the send op, oldest first. */
	struct buf queue[RT_NBUFS];
	unsigned qhead, qlen;
	uint32_t send_bid; /* the buffer the send op is working through */
	unsigned long events; /* completions seen: progress for stall detection */
	int error;            /* first unexpected result (negative errno), or 0 */
};

static void rt_fail(struct gbench_state *st, const char *what, int err)
{
	char msg[160];
	snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
	gbench_skip_with_error(st, msg);
}

static void rt_set_error(struct rt_echo *e, int err)
{
	if (e->error == 0)
		e->error = err;
}

/* Start the send op on the next queued buffer, if it is idle and there is one. */
static void rt_send_next(struct rt_echo *e)
{
	if (e->send.armed || e->qlen == 0)
		return;
	struct buf b = e->queue[e->qhead];
	e->qhead = (e->qhead + 1) % RT_NBUFS;
	e->qlen--;
	e->send_bid = b.bid;
	e->send.buf = b;
	int rc = loop_submit(&e->loop, &e->send);
	if (rc < 0) {
		loop_buf_release(&e->loop, b.bid);
		rt_set_error(e, rc);
	}
}

static void rt_send_done(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	struct rt_echo *e = op->owner;
	(void)cflags;
	e->events++;
	if (res >= 0 && (uint32_t)res < op->buf.len) {
		/* short send: the rest of the same buffer goes next */
		op->buf.base += res;
		op->buf.len -= (uint32_t)res;
		int rc = loop_submit(loop, op);
		if (rc < 0) {
			loop_buf_release(loop, e->send_bid);
			rt_set_error(e, rc);
		}
		return;
	}
	loop_buf_release(loop, e->send_bid);
	if (res < 0) {
		if (res != -ECANCELED)
			rt_set_error(e, res);
		return;
	}
	rt_send_next(e);
}

static void rt_recv_done(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	struct rt_echo *e = op->owner;
	e->events++;
	if (res > 0 && (cflags & OPF_BUFFER)) {
		if (e->qlen == RT_NBUFS) { /* cannot happen: one entry per pool buffer */
			loop_buf_release(loop, op->buf.bid);
			rt_set_error(e, -EOVERFLOW);
			return;
		}
		e->queue[(e->qhead + e->qlen) % RT_NBUFS] = op->buf;
		e->qlen++;
		rt_send_next(e);
		return;
	}
	if (cflags & OPF_BUFFER)
		loop_buf_release(loop, op->buf.bid);
	if (res == 0)
		rt_set_error(e, -EPIPE);
	else if (res < 0 && res != -ECANCELED && res != -ENOBUFS)
		rt_set_error(e, res);
	/* -ENOBUFS or a recv that cannot stay armed: the client loop re-arms */
}

static int rt_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

/* A connected TCP pair over 127.0.0.1: fds[0] the accepted end, fds[1] the client end. */
static int rt_tcp_pair(int fds[2])
{
	int one = 1, err = 0;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	int cfd = -1, afd = -1;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 1) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
		err = -errno;
		goto out;
	}
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		err = -errno;
		goto out;
	}
	afd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (afd < 0) {
		err = -errno;
		goto out;
	}
	if (setsockopt(afd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
	    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
		err = -errno;
		goto out;
	}
	err = rt_nonblock(cfd);
out:
	close(lfd);
	if (err != 0) {
		if (cfd >= 0)
			close(cfd);
		if (afd >= 0)
			close(afd);
		return err;
	}
	fds[0] = afd;
	fds[1] = cfd;
	return 0;
}

/* One round trip of n bytes: out goes to the reactor, comes back into back. */
static int rt_round_trip(struct gbench_state *st, struct rt_echo *e, int cfd, const char *out,
			 char *back, size_t n)
{
	size_t sent = 0, got = 0;
	int stalls = 0;
	while (got < n) {
		bool progress = false;
		if (sent < n) {
			ssize_t w = send(cfd, out + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w > 0) {
				sent += (size_t)w;
				progress = true;
			} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				rt_fail(st, "client send", errno);
				return -1;
			}
		}
		ssize_t r = recv(cfd, back + got, n - got, MSG_DONTWAIT);
		if (r > 0) {
			got += (size_t)r;
			progress = true;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
			rt_fail(st, "client recv", r == 0 ? EPIPE : errno);
			return -1;
		}
		if (!e->recv.armed) {
			int rc = loop_submit(&e->loop, &e->recv);
			if (rc < 0) {
				rt_fail(st, "re-arm recv", -rc);
				return -1;
			}
		}
		unsigned long before = e->events;
		int rc = loop_run_once(&e->loop, RT_WAIT_MS);
		if (rc < 0) {
			rt_fail(st, "loop_run_once", -rc);
			return -1;
		}
		if (e->error != 0) {
			rt_fail(st, "echo", -e->error);
			return -1;
		}
		if (e->events != before || progress)
			stalls = 0;
		else if (++stalls > RT_STALLS) {
			gbench_skip_with_error(st, "round trip stalled");
			return -1;
		}
	}
	return 0;
}

/* Cancel the ops, run the loop until they are final. Returns true when they are. */
static bool rt_quiesce(struct rt_echo *e)
{
	loop_cancel(&e->loop, &e->recv);
	loop_cancel(&e->loop, &e->send);
	/* A poll first: readiness backends deliver cancels as deferred completions. */
	for (int round = 0; round < 50; round++) {
		if (!e->recv.armed && !e->send.armed)
			return true;
		loop_run_once(&e->loop, round == 0 ? 0 : 10);
	}
	return !e->recv.armed && !e->send.armed;
}

static void bm_roundtrip(struct gbench_state *st, void *arg)
{
	uintptr_t a = (uintptr_t)arg;
	const struct backend *be = backend_table[a >> 1];
	enum rt_transport tr = (a & 1) ? RT_TCP : RT_SOCKETPAIR;
	int64_t arg0 = gbench_range(st, 0);
	if (arg0 <= 0 || arg0 > RT_MAX_MSG) {
		gbench_skip_with_error(st, "message size out of range");
		return;
	}
	size_t n = (size_t)arg0;

	struct rt_echo *e = calloc(1, sizeof(*e));
	char *bufs = malloc(2 * n);
	if (e == NULL || bufs == NULL) {
		rt_fail(st, "malloc", ENOMEM);
		free(e);
		free(bufs);
		return;
	}
	int fds[2] = {-1, -1};
	int rc;
	if (tr == RT_TCP) {
		rc = rt_tcp_pair(fds);
	} else {
		rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0
			     ? 0 : -errno;
	}
	if (rc < 0) {
		rt_fail(st, tr == RT_TCP ? "tcp pair" : "socketpair", -rc);
		free(e);
		free(bufs);
		return;
	}
	struct loop_config cfg = {.nbufs = RT_NBUFS, .bufsize = RT_BUFSIZE, .max_fds = RT_MAX_FDS};
	rc = loop_init(&e->loop, be, &cfg);
	if (rc < 0) {
		char what[96];
		snprintf(what, sizeof what, "loop_init(%s)", be->name);
		rt_fail(st, what, -rc);
		close(fds[0]);
		close(fds[1]);
		free(e);
		free(bufs);
		return;
	}
	e->fd = fds[0];
	e->recv = (struct op){.code = OP_RECV, .fd = e->fd, .done = rt_recv_done, .owner = e};
	e->send = (struct op){.code = OP_SEND, .fd = e->fd, .done = rt_send_done, .owner = e};
	bool ok = true;
	rc = loop_submit(&e->loop, &e->recv);
	if (rc < 0) {
		rt_fail(st, "submit recv", -rc);
		ok = false;
	}

	/* One checked round trip before timing, so broken echo is an error, not a fast result. */
	char *out = bufs, *back = bufs + n;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(i * 31 + 7);
	if (ok && rt_round_trip(st, e, fds[1], out, back, n) < 0)
		ok = false;
	if (ok && memcmp(out, back, n) != 0) {
		gbench_skip_with_error(st, "round trip: bytes came back changed");
		ok = false;
	}
	if (ok) {
		while (gbench_keep_running(st))
			if (rt_round_trip(st, e, fds[1], out, back, n) < 0)
				break;
		int64_t iters = gbench_iterations(st);
		gbench_set_bytes_processed(st, iters * (int64_t)n);
		gbench_set_items_processed(st, iters);
	}

	bool final = rt_quiesce(e);
	/* Buffers received but never sent back go home before the pool does. */
	while (e->qlen > 0) {
		loop_buf_release(&e->loop, e->queue[e->qhead].bid);
		e->qhead = (e->qhead + 1) % RT_NBUFS;
		e->qlen--;
	}
	if (final) {
		loop_close_fd(&e->loop, fds[0]);
		loop_fini(&e->loop);
		free(e);
	} else {
		gbench_skip_with_error(st, "teardown: ops still armed after cancel");
		close(fds[0]); /* the backend may still touch the ops: leak them and the loop */
	}
	close(fds[1]);
	free(bufs);
}

void bm_roundtrip_register(void)
{
	static const char *const transports[] = {"socketpair", "tcp"};
	for (size_t i = 0; i < backend_count; i++) {
		for (uintptr_t t = 0; t < 2; t++) {
			char name[96];
			snprintf(name, sizeof name, "roundtrip/%s/%s", backend_table[i]->name,
				 transports[t]);
			struct gbench_def *d =
				gbench_register(name, bm_roundtrip, (void *)((i << 1) | t));
			gbench_use_real_time(d);
			gbench_measure_process_cpu_time(d);
			gbench_arg(d, 64);
			gbench_arg(d, 4096);
		}
	}
}
