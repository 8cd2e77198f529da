/* fuzz_echo_core.c - libFuzzer harness for the echo core (engine/echo.c) on the fake backend
 * (tests/lib_fake_backend.c): the input is a program for an interpreter that plays the kernel
 * and the clients, one completion at a time. It keeps, per connection, the exact bytes the core
 * took in and the exact bytes the fake backend was told went out, and aborts when:
 *   - a connection sends bytes that are not the next ones it received (loss, duplication,
 *     reordering), or holds more than --conn-buffer unsent;
 *   - a received byte is neither queued for its echo nor accounted for: the connection was
 *     failed by the input (an error, a timeout that expired, a cut, a bad PROXY header), or its
 *     echo was complete (a drain's read-and-drop), or it was PROXY header (checked against
 *     proxy_parse on the bytes so far);
 *   - a pool buffer is neither free nor held by a connection (nfree + bufs_held != nbufs);
 *   - a connection is freed with an op armed (also ASan's use-after-free), or without closing
 *     its fd, or without having echoed everything it took in (unless the input failed it);
 *   - at the end (every send completed, EOF to every connection, the server stopped, a bounded
 *     number of iterations) a connection is left or the server is not done.
 * Input: 6 bytes of setup (pool, --conn-buffer, --max-conns, PROXY protocol, timeouts), then
 * opcodes with their argument bytes (see step()). The loop's clock is this file's: reactor.c's
 * clock_gettime is renamed to fuzz_clock_gettime by the Makefile, so time moves only when the
 * input says and a run replays exactly. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "echo.h"
#include "lib_fake_backend.h"
#include "log.h"
#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_clock_gettime(clockid_t clk, struct timespec *ts);

#define check(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_echo_core: %s:%d: invariant broken: %s\n",    \
				__FILE__, __LINE__, #cond);                                  \
			abort();                                                             \
		}                                                                            \
	} while (0)

#define MAX_CONNS 24     /* connections one input may open */
#define FINAL_ROUNDS 200 /* iterations the closing drain may take */

static uint64_t vclock_ms;

int fuzz_clock_gettime(clockid_t clk, struct timespec *ts)
{
	(void)clk; /* reactor.c reads CLOCK_MONOTONIC only */
	ts->tv_sec = (time_t)(vclock_ms / 1000);
	ts->tv_nsec = (long)(vclock_ms % 1000) * 1000000;
	return 0;
}

enum hdr_state { HDR_NONE, HDR_PENDING, HDR_DONE }; /* PROXY header; a bad one dooms */

/* One client as the harness sees it. */
struct mconn {
	bool alive;
	int fd, peer;
	int forgotten0;    /* fake_state.forgotten[fd] at the accept: it moves when freed */
	unsigned serial;
	uint8_t *in;       /* bytes the core took in for echo, in order */
	size_t nin, cap;
	size_t nout;       /* bytes sent, checked against in[] as they go */
	size_t ndelivered; /* every byte handed to a recv (pattern position) */
	/* Failed by the input: an error, an expired timeout, a cut, a bad header. Its bytes may
	 * be dropped; everything else still holds. */
	bool doomed;
	uint64_t accepted_at, last_active;
	enum hdr_state hdr;
	uint8_t hbuf[PROXY_MAX];
	size_t nhdr;
	struct op *rx;     /* its recv op, once seen: for data that races a cancel */
	bool cb_set;       /* a cancel is pending and cb_left is what the recv may still bring */
	uint32_t cb_left;
};

struct harness {
	struct loop loop;
	struct echo_server srv;
	struct echo_limits lim;
	struct fake_state *fk;
	int lfd[2], lforgotten0[2]; /* TCP-like and Unix listeners */
	bool lalive[2];
	struct mconn c[MAX_CONNS];
	int nconns;
	bool stopped;
	uint64_t stop_ms;
	uint8_t *scratch; /* a send's bytes, copied out */
	const uint8_t *p, *end;
};

static uint8_t next(struct harness *h)
{
	return h->p < h->end ? *h->p++ : 0;
}

static uint8_t pattern(const struct mconn *m, size_t off)
{
	uint32_t x = (uint32_t)off * 2654435761u ^ m->serial * 40503u;
	return (uint8_t)(x >> 24 ^ x >> 11);
}

static struct mconn *pick(struct harness *h, uint8_t sel)
{
	int alive = 0;
	for (int i = 0; i < h->nconns; i++)
		alive += h->c[i].alive;
	if (alive == 0)
		return NULL;
	int k = sel % alive;
	for (int i = 0; i < h->nconns; i++)
		if (h->c[i].alive && k-- == 0)
			return &h->c[i];
	return NULL;
}

static void take_in(struct mconn *m, const uint8_t *d, size_t n)
{
	if (n == 0)
		return;
	if (m->nin + n > m->cap) {
		m->cap = (m->nin + n) * 2;
		m->in = realloc(m->in, m->cap);
		check(m->in != NULL);
	}
	memcpy(m->in + m->nin, d, n);
	m->nin += n;
}

/* --- the model kept in step with the core -------------------------------------------------- */

/* After every step: who was freed, and what must hold of everyone. */
static void sync_model(struct harness *h)
{
	struct fake_state *fk = h->fk;
	int alive = 0;
	for (int i = 0; i < h->nconns; i++) {
		struct mconn *m = &h->c[i];
		if (!m->alive)
			continue;
		if (fk->forgotten[m->fd] != m->forgotten0) {
			/* Freed: nothing armed, its fd closed, its echo complete unless failed. */
			check(fk->rd[m->fd] == NULL && fk->wr[m->fd] == NULL);
			check(fcntl(m->fd, F_GETFD) == -1);
			check(m->doomed || m->nout == m->nin);
			m->alive = false;
			close(m->peer);
			free(m->in);
			m->in = NULL;
			continue;
		}
		alive++;
		check(m->nout <= m->nin && m->nin - m->nout <= h->lim.conn_buffer);
		struct op *rx = fk->rd[m->fd], *tx = fk->wr[m->fd];
		if (rx) {
			check(rx->code == OP_RECV && rx->fd == m->fd && rx->armed);
			check(!m->rx || m->rx == rx);
			m->rx = rx;
		}
		if (tx) {
			check(tx->code == OP_SEND && tx->fd == m->fd && tx->armed);
			check(fake_send_len(tx) > 0 && fake_send_len(tx) <= m->nin - m->nout);
		}
	}
	for (int l = 0; l < 2; l++)
		if (h->lalive[l] && fk->forgotten[h->lfd[l]] != h->lforgotten0[l])
			h->lalive[l] = false;
	check(h->srv.stats.conns == (uint32_t)alive);
	check(h->srv.bufs_held <= h->loop.pool.nbufs);
	check(h->loop.pool.nfree + h->srv.bufs_held == h->loop.pool.nbufs);
	check(h->loop.ntimers <= 7);
}

/* Before the loop runs at vclock_ms: every connection a timer may now fail is doomed. */
static void doom_by_time(struct harness *h)
{
	for (int i = 0; i < h->nconns; i++) {
		struct mconn *m = &h->c[i];
		if (!m->alive)
			continue;
		if (h->lim.idle_timeout_ms && vclock_ms - m->last_active >= h->lim.idle_timeout_ms)
			m->doomed = true;
		if (m->hdr == HDR_PENDING &&
		    vclock_ms - m->accepted_at >= h->lim.proxy_timeout_ms)
			m->doomed = true;
		if (h->stopped && vclock_ms - h->stop_ms >= h->lim.drain_timeout_ms)
			m->doomed = true;
	}
}

static void run_loop(struct harness *h)
{
	doom_by_time(h);
	fake_run(&h->loop);
}

/* The bytes of this delivery the core must take in for echo: all of them, or with a PROXY
 * header still arriving, what follows the header in the stream so far (proxy_parse on the
 * first PROXY_MAX bytes); -1 when the header is bad (the connection is rejected). Commits the
 * header's progress only when `commit`. */
static long expect_in(struct mconn *m, const uint8_t *d, size_t n, bool commit)
{
	if (m->hdr != HDR_PENDING)
		return (long)n;
	uint8_t buf[PROXY_MAX];
	size_t have = m->nhdr, k = n < PROXY_MAX - have ? n : PROXY_MAX - have;
	memcpy(buf, m->hbuf, have);
	memcpy(buf + have, d, k);
	struct proxy_info info;
	int rc = proxy_parse(buf, have + k, &info);
	if (rc == 0 && have + k == PROXY_MAX)
		rc = -EMSGSIZE;
	if (commit) {
		memcpy(m->hbuf, buf, have + k);
		m->nhdr = have + k;
		if (rc > 0)
			m->hdr = HDR_DONE;
		if (rc < 0)
			m->doomed = true;
	}
	return rc < 0 ? -1 : rc == 0 ? 0 : (long)(have + n) - rc;
}

/* Hand n bytes to m's armed recv and account for every one of them. batch: OPF_BATCH on it
 * (the caller delivers the rest of the batch next, reactor.h). */
static void deliver(struct harness *h, struct mconn *m, const uint8_t *d, uint32_t n, bool more,
		    bool batch)
{
	struct op *rx = h->fk->rd[m->fd];
	if (!rx || n == 0)
		return;
	/* reactor.h: no completion carries more than max_bytes, which the caller keeps current
	 * between completions; also for data that races a cancel, which the contract allows. */
	if (rx->max_bytes && n > rx->max_bytes)
		n = rx->max_bytes;
	if (n > h->loop.pool.bufsize)
		n = h->loop.pool.bufsize;
	/* A recv whose cancel is pending gets, in all, no more than the budget the connection had
	 * left (what every backend does: readiness cancels at once; io_uring bounds a run by the
	 * budget at its start and does not renew it while cancelling). max_bytes alone cannot
	 * say "nothing more": 0 means no bound. */
	if (rx->cancelling) {
		if (!m->cb_set) {
			m->cb_set = true;
			uint32_t held = (uint32_t)(m->nin - m->nout);
			m->cb_left = h->lim.conn_buffer > held ? h->lim.conn_buffer - held : 0;
			if (rx->max_bytes && m->cb_left > rx->max_bytes)
				m->cb_left = rx->max_bytes;
		}
		if (n > m->cb_left)
			n = m->cb_left;
		if (n == 0)
			return;
		m->cb_left -= n;
	} else {
		m->cb_set = false;
	}
	struct echo_stats s0 = h->srv.stats;
	bool doomed = m->doomed;
	int bid = fake_recv_flags(&h->loop, m->fd, d, n,
				  more ? OPF_MORE | (batch ? OPF_BATCH : 0) : 0);
	m->ndelivered += n;
	if (bid < 0)
		return; /* the pool was dry: -ENOBUFS, nothing taken */
	uint64_t took = h->srv.stats.bytes_in - s0.bytes_in;
	uint64_t dropped = h->srv.stats.discarded_bytes - s0.discarded_bytes;
	check(took <= n && dropped <= n && (took == 0 || dropped == 0));
	take_in(m, d + n - took, took);
	if (took)
		m->last_active = h->loop.now_ms;
	if (doomed)
		return;
	if (dropped) {
		/* Read and dropped after the drain's half-close: only once all was echoed. */
		check(dropped == n && h->stopped && m->nout == m->nin);
		return;
	}
	long want = expect_in(m, d, n, false);
	if (want < 0 ? took == 0 : took == (uint64_t)want) {
		expect_in(m, d, n, true);
		return;
	}
	/* Otherwise only a connection closing after a complete echo may leave bytes unread. */
	check(took == 0 && h->stopped && m->nout == m->nin);
}

static void do_accept(struct harness *h, uint8_t sel)
{
	int l = sel & 1;
	if (h->nconns == MAX_CONNS || !h->lalive[l])
		return;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	if (sv[0] >= FAKE_MAX_FDS || !h->fk->rd[h->lfd[l]]) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	struct fake_state *fk = h->fk;
	fk->cancel_res[sv[0]] = 0; /* left by an earlier connection on this fd number */
	fk->cancel_busy[sv[0]] = 0;
	int forgotten0 = fk->forgotten[sv[0]];
	uint64_t accepted = h->srv.stats.accepted;
	fake_accept(&h->loop, h->lfd[l], sv[0]);
	if (h->srv.stats.accepted == accepted) {
		check(fcntl(sv[0], F_GETFD) == -1); /* refused (max_conns) or listener closing */
		close(sv[1]);
		return;
	}
	struct mconn *m = &h->c[h->nconns++];
	*m = (struct mconn){ .alive = true, .fd = sv[0], .peer = sv[1], .forgotten0 = forgotten0,
			     .serial = (unsigned)h->nconns, .accepted_at = h->loop.now_ms,
			     .last_active = h->loop.now_ms,
			     .hdr = h->lim.proxy_protocol ? HDR_PENDING : HDR_NONE };
}

static void do_send(struct harness *h, struct mconn *m, uint32_t n)
{
	struct op *tx = h->fk->wr[m->fd];
	if (!tx)
		return;
	uint32_t len = fake_send_len(tx); /* a gathered send: all its runs */
	if (n > len)
		n = len;
	check(len <= h->lim.conn_buffer);
	fake_send(&h->loop, m->fd, n, h->scratch);
	check(m->nout + n <= m->nin);
	check(memcmp(h->scratch, m->in + m->nout, n) == 0);
	m->nout += n;
	if (n)
		m->last_active = h->loop.now_ms;
}

/* Data that arrives after the core asked to cancel the recv (io_uring: it raced the cancel):
 * the fake backend has dropped the op and queued its final; deliver to it first. */
static void do_race(struct harness *h, struct mconn *m, uint32_t n)
{
	struct op *rx = m->rx;
	if (!rx || !rx->armed || !rx->cancelling || h->fk->rd[m->fd] || h->loop.pool.nfree == 0)
		return;
	uint8_t d[4096];
	for (uint32_t i = 0; i < n && i < sizeof(d); i++)
		d[i] = pattern(m, m->ndelivered + i);
	h->fk->rd[m->fd] = rx;
	deliver(h, m, d, n < sizeof(d) ? n : sizeof(d), true, false);
	if (h->fk->rd[m->fd] == rx)
		h->fk->rd[m->fd] = NULL; /* its -ECANCELED final is still queued */
}

static const int recv_results[] = { -ENOBUFS, 0, -ECONNRESET };
static const int send_errors[] = { -EPIPE, -ECONNRESET, -EIO };
static const int cancel_errors[] = { -ECONNRESET, -ENOBUFS, -EIO, -EMFILE };
static const int accept_errors[] = { -EMFILE, -ENFILE, -ENOMEM };
static const uint32_t advance_ms[] = { 1, 2, 5, 10, 50, 200, 1000, 5000 };
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum opcode {
	DO_ACCEPT_CONN,	 /* sel: listener */
	DO_DELIVER,	 /* conn, len (1..128, or a fraction of the buffer), final? */
	DO_DELIVER_RAW,	 /* conn, len-1, that many input bytes (PROXY headers) */
	DO_RECV_RESULT,	 /* conn, which: -ENOBUFS, EOF, -ECONNRESET */
	DO_SEND_SHORT,	 /* conn, how short */
	DO_SEND_ALL,	 /* conn */
	DO_SEND_ERROR,	 /* conn, which */
	DO_CANCEL_RES,	 /* conn (or a listener), which error a cancel's final carries */
	DO_CANCEL_BUSY,	 /* conn (or a listener), how many cancels are refused */
	DO_RUN,		 /* one loop iteration, the clock standing */
	DO_ADVANCE,	 /* the clock moves on, then one iteration */
	DO_RACE,	 /* conn, len: data racing the recv's cancel */
	DO_ACCEPT_ERROR, /* sel: listener, which error */
	DO_PEER_UNREAD,	 /* conn: bytes sit unread at the peer (SIOCOUTQ > 0) */
	DO_PEER_READ,	 /* conn: the peer reads all */
	DO_STOP,
	DO_CUT,
	DO_COUNT
};

/* A connection's fd, or with the selector's top bit a listener's (for the cancel knobs). */
static int pick_fd(struct harness *h, uint8_t sel, struct mconn **mp)
{
	*mp = NULL;
	if (sel & 0x80) {
		int l = sel & 1;
		return h->lalive[l] ? h->lfd[l] : -1;
	}
	*mp = pick(h, sel);
	return *mp ? (*mp)->fd : -1;
}

static void step(struct harness *h)
{
	uint8_t op = next(h) % DO_COUNT, a = next(h);
	struct mconn *m = op == DO_ACCEPT_CONN || op >= DO_RUN ? NULL : pick(h, a);
	uint8_t d[256 + 4096];
	switch (op) {
	case DO_ACCEPT_CONN:
		do_accept(h, a);
		break;
	case DO_DELIVER: {
		uint8_t b = next(h), fin = next(h);
		uint32_t n = b < 0x80 ? b + 1u : ((b & 0x7fu) + 1) * h->loop.pool.bufsize / 128;
		if (!m)
			break;
		for (uint32_t i = 0; i < n && i < sizeof(d); i++)
			d[i] = pattern(m, m->ndelivered + i);
		struct op *rx = h->fk->rd[m->fd];
		if ((fin & 2) && !(fin & 1) && rx && !rx->cancelling && n >= 2 &&
		    (!rx->max_bytes || n <= rx->max_bytes)) {
			/* A batch (a readiness recvmsg into several buffers, consecutive CQEs):
			 * 2 to 4 pieces back to back, all but the last with OPF_BATCH. */
			uint32_t k = 2 + (uint32_t)(fin >> 2) % 3, off = 0;
			if (k > n)
				k = n;
			for (uint32_t i = 0; i < k; i++) {
				uint32_t len = i + 1 < k ? n / k : n - off;
				deliver(h, m, d + off, len, true, i + 1 < k);
				off += len;
			}
			break;
		}
		deliver(h, m, d, n, !(fin & 1), false);
		break;
	}
	case DO_DELIVER_RAW: {
		uint32_t n = next(h) + 1u, i = 0;
		for (; i < n && h->p < h->end; i++)
			d[i] = next(h);
		if (m)
			deliver(h, m, d, i, true, false);
		break;
	}
	case DO_RECV_RESULT: {
		int res = recv_results[next(h) % ARRAY_LEN(recv_results)];
		if (!m || !h->fk->rd[m->fd])
			break;
		if (res == -ECONNRESET || (res == 0 && m->hdr == HDR_PENDING))
			m->doomed = true;
		fake_recv_result(&h->loop, m->fd, res);
		break;
	}
	case DO_SEND_SHORT: {
		uint8_t b = next(h);
		struct op *tx = m ? h->fk->wr[m->fd] : NULL;
		if (tx && fake_send_len(tx) > 1)
			do_send(h, m, 1 + b % (fake_send_len(tx) - 1));
		break;
	}
	case DO_SEND_ALL:
		if (m && h->fk->wr[m->fd])
			do_send(h, m, fake_send_len(h->fk->wr[m->fd]));
		break;
	case DO_SEND_ERROR: {
		int res = send_errors[next(h) % ARRAY_LEN(send_errors)];
		if (!m || !h->fk->wr[m->fd])
			break;
		m->doomed = true;
		fake_send_result(&h->loop, m->fd, res);
		break;
	}
	case DO_CANCEL_RES:
	case DO_CANCEL_BUSY: {
		uint8_t b = next(h);
		int fd = pick_fd(h, a, &m);
		if (fd < 0)
			break;
		if (op == DO_CANCEL_BUSY) {
			h->fk->cancel_busy[fd] = 1 + b % 3;
			break;
		}
		h->fk->cancel_res[fd] = cancel_errors[b % ARRAY_LEN(cancel_errors)];
		if (m)
			m->doomed = true;
		break;
	}
	case DO_RUN:
		run_loop(h);
		break;
	case DO_ADVANCE:
		vclock_ms += advance_ms[a % ARRAY_LEN(advance_ms)];
		run_loop(h);
		break;
	case DO_RACE:
		m = pick(h, a);
		if (m)
			do_race(h, m, 1 + next(h));
		break;
	case DO_ACCEPT_ERROR: {
		int l = a & 1;
		int res = accept_errors[next(h) % ARRAY_LEN(accept_errors)];
		if (h->lalive[l])
			fake_recv_result(&h->loop, h->lfd[l], res);
		break;
	}
	case DO_PEER_UNREAD:
	case DO_PEER_READ:
		m = pick(h, a);
		if (!m)
			break;
		if (op == DO_PEER_UNREAD) {
			(void)send(m->fd, "u", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		} else {
			char sink[256];
			while (recv(m->peer, sink, sizeof(sink), MSG_DONTWAIT) > 0)
				;
		}
		break;
	case DO_STOP:
	case DO_CUT:
		if (!h->stopped) {
			h->stopped = true;
			h->stop_ms = h->loop.now_ms;
		}
		if (op == DO_CUT) {
			for (int i = 0; i < h->nconns; i++)
				h->c[i].doomed = true;
			echo_server_cut(&h->srv);
		} else {
			echo_server_stop(&h->srv);
		}
		break;
	}
	sync_model(h);
}

/* Every send completed, EOF to every connection, the peers read, the server stopped; then the
 * loop runs (the clock moving only when nothing else moves) until the server is done. */
static void finish(struct harness *h)
{
	for (int round = 0; round < FINAL_ROUNDS && !echo_server_done(&h->srv); round++) {
		bool moved = false;
		for (int i = 0; i < h->nconns; i++) {
			struct mconn *m = &h->c[i];
			if (!m->alive)
				continue;
			char sink[256];
			while (recv(m->peer, sink, sizeof(sink), MSG_DONTWAIT) > 0)
				;
			if (h->fk->wr[m->fd]) {
				do_send(h, m, fake_send_len(h->fk->wr[m->fd]));
				moved = true;
			} else if (h->fk->rd[m->fd]) {
				if (m->hdr == HDR_PENDING)
					m->doomed = true;
				fake_recv_result(&h->loop, m->fd, 0);
				moved = true;
			}
			sync_model(h);
		}
		if (round > 0 && !h->stopped) {
			h->stopped = true;
			h->stop_ms = h->loop.now_ms;
			echo_server_stop(&h->srv);
			moved = true;
		}
		if (!moved)
			vclock_ms += 10; /* a linger check, a migration, a back-off */
		run_loop(h);
		sync_model(h);
	}
	check(echo_server_done(&h->srv));
	check(h->loop.stop);
	for (int i = 0; i < h->nconns; i++)
		check(!h->c[i].alive);
	check(h->srv.bufs_held == 0 && h->loop.pool.nfree == h->loop.pool.nbufs);
}

static const uint32_t drain_ms[] = { 0, 1, 10, 100, 1000, 5000 };
static const uint32_t idle_ms[] = { 0, 1, 10, 100, 1000, 0 };
static const uint32_t proxy_ms[] = { 1, 10, 100, 5000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 6)
		return 0;
	log_threshold = LOG_ERROR; /* refusals and back-offs would flood the fuzzer's output */
	static struct harness h;
	memset(&h, 0, sizeof(h));
	h.p = data + 6;
	h.end = data + size;
	vclock_ms = 1000000;
	/* Within echod's own ranges (engine/config.c): buffers >= 16, buffer size >= 512,
	 * --conn-buffer >= 1K and >= the buffer size; --max-conns at most what the harness
	 * opens, so that refusals happen (and enough connections to run the pool dry). */
	uint32_t nbufs = 16 + data[0] % 49, bufsize = 512u << (data[1] % 4);
	uint32_t cb = bufsize * (1 + (data[2] & 15)) + (data[2] >> 4) * 37;
	h.lim = (struct echo_limits){
		.max_conns = 1 + (data[3] & 0x7f) % MAX_CONNS,
		.conn_buffer = cb < 1024 ? 1024 : cb,
		.idle_timeout_ms = idle_ms[data[4] % ARRAY_LEN(idle_ms)],
		.drain_timeout_ms = drain_ms[data[5] % ARRAY_LEN(drain_ms)],
		.udp_rate = 1000,
		.proxy_protocol = data[3] & 0x80,
		.proxy_timeout_ms = proxy_ms[(data[4] >> 4) % ARRAY_LEN(proxy_ms)],
	};
	struct loop_config cfg = { .nbufs = nbufs, .bufsize = bufsize, .max_fds = FAKE_MAX_FDS };
	check(loop_init(&h.loop, &fake_backend, &cfg) == 0);
	check(echo_server_init(&h.srv, &h.loop, &h.lim) == 0);
	h.fk = fake_of(&h.loop);
	h.scratch = malloc(h.lim.conn_buffer);
	check(h.scratch != NULL);
	const int family[2] = { AF_INET, AF_UNIX };
	for (int l = 0; l < 2; l++) {
		h.lfd[l] = socket(family[l], SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		check(h.lfd[l] >= 0 && h.lfd[l] < FAKE_MAX_FDS);
		h.lforgotten0[l] = h.fk->forgotten[h.lfd[l]];
		check(echo_server_listen(&h.srv, h.lfd[l]) == 0); /* the server owns it now */
		h.lalive[l] = true;
	}
	while (h.p < h.end)
		step(&h);
	finish(&h);
	echo_server_fini(&h.srv);
	loop_fini(&h.loop);
	free(h.scratch);
	return 0;
}
