/* echo.c - the echo protocol core: per-connection state machine, backpressure, fairness,
 * half-close, limits. It knows the reactor's operations and capability bits, never a backend.
 *
 * A connection receives into pool buffers and sends each buffer back as it arrived (no copy),
 * in order, at most one send in flight. Everything a connection decides is decided in
 * conn_step(), called after every completion that touched it, so the rules live in one place:
 *  - backpressure: a recv never delivers more than the connection's budget (--conn-buffer less
 *    what is queued: reactor.h's max_bytes), so queued bytes never pass the high-water mark;
 *    stop receiving there (or when the connection holds its share of pool buffers and its
 *    spill is full); resume at low water. What the peer sends beyond waits in the kernel;
 *  - fairness: pool buffers are shared by the loop, so a backlogged connection (its peer is not
 *    reading) keeps at most `share` of them; past that, and whenever the pool runs low, new
 *    bytes are copied into the connection's own spill buffer (at most --conn-buffer) and the
 *    pool buffer goes straight back. When the pool runs dry, every backlogged connection gives
 *    all of its pool buffers back, including the one under a send that has stalled (the send
 *    is cancelled and resent from the spill). So a stuck client's cost comes out of its own
 *    budget, never the pool: any number of them cannot starve the others;
 *  - half-close: after EOF, everything queued is sent, then shutdown(SHUT_WR), then close;
 *  - drain (stop): stop receiving and wait for the recv's final completion (bytes that raced
 *    the cancel are echoed too), send everything, shutdown(SHUT_WR), then read and drop until
 *    the peer's kernel has acknowledged every echo and the FIN (or the peer closes), so no RST
 *    can destroy echoed bytes the peer has not read yet; bounded by the drain deadline;
 *  - close: cancel both ops, and free nothing (not even the fd number) until both are final,
 *    so no completion can reach freed memory or a new connection that reused the fd.
 */
#include "echo.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define IDLE_SWEEP_MAX_MS 1000
#define MIGRATE_INTERVAL_MS 5
#define SEND_STALL_MS 1      /* a send armed since an earlier millisecond waits for its peer */
#define REFUSAL_LOG_MS 1000  /* at most one refusal line per second, the count of the rest */
#define LINGER_CHECK_MS 10   /* how often a drain looks for echoes acknowledged by the peer */
#define FINI_WAIT_ROUNDS 100 /* x FINI_WAIT_MS: how long fini waits for cancelled ops' finals */
#define FINI_WAIT_MS 10

struct conn {
	struct echo_server *srv;
	int fd;
	struct op rx, tx;
	struct seg *qhead, *qtail;
	uint32_t queued;           /* bytes received and not yet sent */
	uint32_t held;             /* pool buffers in the queue */
	struct seg spill;          /* in the queue iff spill.base != NULL */
	uint32_t spill_cap;
	bool eof;                  /* peer sent FIN */
	bool wr_shut;              /* drained and half-closed by us: reading to drop until FIN */
	bool closing;              /* waiting for both ops to be final, then freed */
	bool paused;               /* receiving stopped by backpressure */
	bool waiting_bufs;         /* recv found the pool dry; on srv->waiting */
	bool tcp;                  /* not a Unix stream: acknowledgements matter at close */
	struct preamble *pre;      /* --proxy-protocol: the header is still arriving */
	int8_t why;                /* enum echo_close_reason once decided, else -1 */
	uint64_t last_active_ms;
	uint64_t tx_at_ms;         /* when the send in flight was submitted */
	struct conn *prev, *next;  /* srv->head..tail, least recently active first */
	struct conn *wait_next;
};

const char *const echo_close_reason_names[ECHO_CLOSE_REASONS] = {
	[ECHO_CLOSE_EOF] = "eof",     [ECHO_CLOSE_RESET] = "reset", [ECHO_CLOSE_IDLE] = "idle",
	[ECHO_CLOSE_DRAIN] = "drain", [ECHO_CLOSE_ERROR] = "error", [ECHO_CLOSE_NOMEM] = "nomem",
};

static void conn_step(struct conn *c);
static void conn_nomem(struct conn *c, const char *what);
static void conns_unreserve(struct echo_server *srv);
static void refusals_flush(struct echo_server *srv);
static bool conn_all_acked(const struct conn *c);

/* --- bookkeeping --------------------------------------------------------------------------- */

static void list_unlink(struct echo_server *srv, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		srv->tail = c->prev;
	c->prev = c->next = NULL;
}

static void list_append(struct echo_server *srv, struct conn *c)
{
	c->prev = srv->tail;
	c->next = NULL;
	if (srv->tail)
		srv->tail->next = c;
	else
		srv->head = c;
	srv->tail = c;
}

static inline void conn_touch(struct conn *c)
{
	struct echo_server *srv = c->srv;
	c->last_active_ms = srv->loop->now_ms;
	if (srv->lim.idle_timeout_ms && srv->tail != c) {
		list_unlink(srv, c);
		list_append(srv, c);
	}
}

static void timers_stop(struct echo_server *srv)
{
	struct loop_timer *const all[] = { &srv->idle_timer,	&srv->backoff_timer,
					   &srv->drain_timer,	&srv->migrate_timer,
					   &srv->refusal_timer, &srv->linger_timer,
					   &srv->proxy_timer };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		loop_timer_stop(srv->loop, all[i]);
}

static void check_done(struct echo_server *srv)
{
	if (echo_server_done(srv)) {
		timers_stop(srv);
		refusals_flush(srv);
		loop_set_stop(srv->loop, true);
	}
}

static uint32_t pool_free(const struct echo_server *srv)
{
	return srv->loop->pool.nbufs - srv->bufs_held;
}

static bool pool_low(const struct echo_server *srv)
{
	return pool_free(srv) < srv->loop->pool.nbufs / 4;
}

/* Pool buffers a backlogged connection may keep; one when the pool runs low. */
static uint32_t conn_share(const struct echo_server *srv)
{
	return pool_low(srv) ? 1 : srv->share;
}

/* --- the queue ----------------------------------------------------------------------------- */

static void queue_push(struct conn *c, struct seg *s)
{
	s->next = NULL;
	if (c->qtail)
		c->qtail->next = s;
	else
		c->qhead = s;
	c->qtail = s;
}

static __attribute__((noinline)) void spill_free(struct conn *c)
{
	free(c->spill.base);
	memset(&c->spill, 0, sizeof(c->spill));
	c->spill_cap = 0;
}

/* Once per echoed message: a pool buffer back to the loop, inline; the spill out of line. */
static inline void seg_release(struct conn *c, struct seg *s)
{
	struct echo_server *srv = c->srv;
	if (s->bid >= 0) {
		c->held--;
		srv->bufs_held--;
		loop_buf_release(srv->loop, (uint32_t)s->bid);
	} else {
		spill_free(c);
	}
}

enum spill { SPILL_ROOM, SPILL_FULL, SPILL_NOMEM };

/* Room for n more bytes at the end of the spill, allocating it if the queue has none. The
 * spill only grows at its end: a send in flight may be reading its front. */
static __attribute__((noinline)) enum spill spill_room(struct conn *c, uint32_t n)
{
	if (!c->spill.base) {
		uint32_t cap = c->srv->lim.conn_buffer;
		if (n > cap)
			return SPILL_FULL;
		c->spill.base = malloc(cap);
		if (!c->spill.base)
			return SPILL_NOMEM;
		c->spill_cap = cap;
		c->spill.off = c->spill.len = 0;
		c->spill.bid = -1;
		queue_push(c, &c->spill);
		return SPILL_ROOM;
	}
	bool room = c->qtail == &c->spill && c->spill.off + c->spill.len + n <= c->spill_cap;
	return room ? SPILL_ROOM : SPILL_FULL;
}

static void spill_append(struct conn *c, const char *data, uint32_t n)
{
	memcpy(c->spill.base + c->spill.off + c->spill.len, data, n);
	c->spill.len += n;
	c->srv->stats.spilled_bytes += n;
}

static inline void conn_enqueue_buffer(struct conn *c, const struct buf *b)
{
	struct echo_server *srv = c->srv;
	struct seg *s = &srv->segs[b->bid];
	*s = (struct seg){ .base = b->base, .off = 0, .len = b->len, .bid = (int32_t)b->bid };
	c->held++;
	srv->bufs_held++;
	queue_push(c, s);
	c->queued += b->len;
}

/* A backlogged connection over its share of pool buffers: the bytes go to its spill, or, with
 * no spill room left, into the queue on the buffer after all (rx_blocked() pauses it next). */
static __attribute__((noinline)) void conn_enqueue_backlogged(struct conn *c, const struct buf *b)
{
	struct echo_server *srv = c->srv;
	enum spill sp = spill_room(c, b->len);
	if (sp == SPILL_NOMEM) {
		/* Holding the pool's buffers instead would starve everyone once the pool is dry. */
		loop_buf_release(srv->loop, b->bid);
		conn_nomem(c, "its echo buffer (--conn-buffer)");
		return;
	}
	if (sp == SPILL_FULL) {
		conn_enqueue_buffer(c, b);
		return;
	}
	spill_append(c, b->base, b->len);
	loop_buf_release(srv->loop, b->bid);
	c->queued += b->len;
}

/* The steady state keeps the pool buffer as the queue's run: no copy, no spill. */
static inline void conn_enqueue(struct conn *c, const struct buf *b)
{
	if (c->qhead && c->held >= conn_share(c->srv))
		conn_enqueue_backlogged(c, b);
	else
		conn_enqueue_buffer(c, b);
}

/* Give a backlogged connection's pool buffers back: every queued segment is copied, in order,
 * into one private spill of --conn-buffer bytes, and the pool buffers return to the loop. A
 * send reads the first tx.nsegs segments of the queue: if it has stalled (the peer is not
 * reading), or reads the spill (which cannot be rewritten under it), it is cancelled and
 * on_send() comes back here once it is final; a send still moving keeps its segments, and the
 * rest moves. */
static __attribute__((noinline)) void conn_migrate(struct conn *c)
{
	struct echo_server *srv = c->srv;
	struct seg *head = c->qhead, *from = head, *last_kept = NULL;
	uint32_t total = 0, pool_segs = 0;
	if (loop_op_armed(&c->tx)) {
		bool stalled = srv->loop->now_ms - c->tx_at_ms >= SEND_STALL_MS;
		for (uint32_t i = 0; i < c->tx.nsegs && from; i++) {
			if (from == &c->spill || stalled) {
				loop_cancel(srv->loop, &c->tx);
				return;
			}
			last_kept = from;
			from = from->next;
		}
	}
	for (struct seg *s = from; s; s = s->next) {
		total += s->len;
		pool_segs += s->bid >= 0;
	}
	if (pool_segs == 0)
		return;
	/* Recvs are bounded by the budget, so the queue fits; a spill is never larger. */
	uint32_t cap = srv->lim.conn_buffer;
	if (total > cap)
		return;
	char *mem = malloc(cap);
	if (!mem) {
		conn_nomem(c, "its echo buffer (--conn-buffer)"); /* its buffers go back */
		return;
	}
	uint32_t off = 0;
	for (struct seg *s = from; s;) {
		struct seg *next = s->next;
		memcpy(mem + off, s->base + s->off, s->len);
		off += s->len;
		if (s->bid >= 0)
			seg_release(c, s);
		else
			free(s->base); /* the old spill; c->spill is rewritten below */
		s = next;
	}
	c->spill = (struct seg){ .base = mem, .len = total, .bid = -1 };
	c->spill_cap = cap;
	if (last_kept)
		last_kept->next = &c->spill;
	else
		c->qhead = &c->spill;
	c->qtail = &c->spill;
	srv->stats.spilled_bytes += total;
}

/* The pool ran dry: make every backlogged connection give its buffers back. At most one sweep
 * per MIGRATE_INTERVAL_MS, so a long shortage costs O(conns) per interval, not per recv; a
 * sweep that is due later is left to a timer, so no waiter is forgotten. */
static void pool_reclaim(struct echo_server *srv)
{
	struct loop *loop = srv->loop;
	if (loop->now_ms - srv->migrated_at_ms < MIGRATE_INTERVAL_MS) {
		if (srv->migrate_timer.deadline_ms == 0)
			loop_timer_start(loop, &srv->migrate_timer, MIGRATE_INTERVAL_MS);
		return;
	}
	srv->migrated_at_ms = loop->now_ms;
	for (struct conn *o = srv->head, *next; o; o = next) {
		next = o->next;
		if (o->closing)
			continue;
		conn_migrate(o);
		if (o->closing)
			conn_step(o); /* out of memory: cancel its ops (and free it, if none is armed) */
	}
	/* Buffers under sends younger than SEND_STALL_MS stay where they are: if that left the
	 * pool dry, a waiter (no recv armed, so no later ENOBUFS to call us) needs another
	 * sweep, or it waits for ever. */
	if (srv->waiting && srv->migrate_timer.deadline_ms == 0)
		loop_timer_start(loop, &srv->migrate_timer, MIGRATE_INTERVAL_MS);
}

/* --- closing ------------------------------------------------------------------------------- */

static void wait_append(struct echo_server *srv, struct conn *c)
{
	c->waiting_bufs = true;
	c->wait_next = NULL;
	if (srv->waiting_tail)
		srv->waiting_tail->wait_next = c;
	else
		srv->waiting = c;
	srv->waiting_tail = c;
}

static struct conn *wait_pop(struct echo_server *srv)
{
	struct conn *c = srv->waiting;
	srv->waiting = c->wait_next;
	if (!srv->waiting)
		srv->waiting_tail = NULL;
	c->waiting_bufs = false;
	return c;
}

static void wait_remove(struct echo_server *srv, struct conn *c)
{
	struct conn *prev = NULL;
	for (struct conn *w = srv->waiting; w; prev = w, w = w->wait_next) {
		if (w == c) {
			if (prev)
				prev->wait_next = c->wait_next;
			else
				srv->waiting = c->wait_next;
			if (srv->waiting_tail == c)
				srv->waiting_tail = prev;
			break;
		}
	}
	c->waiting_bufs = false;
}

static void preamble_end(struct conn *c)
{
	if (!c->pre)
		return;
	preamble_list_remove(&c->srv->preambles, c->pre);
	free(c->pre);
	c->pre = NULL;
}

static void conn_free(struct conn *c)
{
	struct echo_server *srv = c->srv;
	preamble_end(c);
	while (c->qhead) {
		struct seg *s = c->qhead;
		c->qhead = s->next;
		seg_release(c, s);
	}
	if (c->waiting_bufs)
		wait_remove(srv, c);
	loop_close_fd(srv->loop, c->fd);
	list_unlink(srv, c);
	srv->stats.conns--;
	conns_unreserve(srv);
	srv->stats.closed_by[c->why >= 0 ? c->why : ECHO_CLOSE_ERROR]++;
	free(c);
	check_done(srv);
}

static void conn_decide(struct conn *c, enum echo_close_reason why)
{
	if (c->why < 0)
		c->why = (int8_t)why;
}

/* Close without echoing what is queued: counted, unless the echo was complete (lingering, with
 * everything acknowledged by the peer). */
static void conn_abort(struct conn *c, enum echo_close_reason why)
{
	if (!c->closing && (!c->wr_shut || !conn_all_acked(c)))
		c->srv->stats.aborted++;
	conn_decide(c, why);
	c->closing = true;
}

/* Memory ran out for this connection's echo buffer: it is closed, not the server, and the
 * others keep theirs. Counted (closed_nomem), logged once a second at most with the count. */
static void conn_nomem(struct conn *c, const char *what)
{
	struct echo_server *srv = c->srv;
	srv->nomem_unlogged++;
	uint64_t now = srv->loop->now_ms;
	if (!srv->nomem_logged_at || now - srv->nomem_logged_at >= REFUSAL_LOG_MS) {
		log_msg(LOG_WARN, "closed_nomem", "fd=%d queued=%u count=%llu msg=\"no memory for "
			"%s\"", c->fd, c->queued, (unsigned long long)srv->nomem_unlogged, what);
		srv->nomem_unlogged = 0;
		srv->nomem_logged_at = now;
	}
	conn_abort(c, ECHO_CLOSE_NOMEM);
}

/* A failed recv or send: the peer's reset, or something else. */
static enum echo_close_reason error_reason(int res)
{
	return res == -ECONNRESET || res == -EPIPE ? ECHO_CLOSE_RESET : ECHO_CLOSE_ERROR;
}

/* --- operations ---------------------------------------------------------------------------- */

static void on_recv(struct loop *loop, struct op *op, int res, unsigned cflags);
static void on_send(struct loop *loop, struct op *op, int res, unsigned cflags);

static void wake_waiters(struct echo_server *srv)
{
	uint32_t budget = pool_free(srv);
	while (srv->waiting && budget--)
		conn_step(wait_pop(srv));
}

static __attribute__((noinline)) void send_failed(struct conn *c, int rc)
{
	if (rc == -ENOMEM) {
		conn_nomem(c, "the backend to watch its fd"); /* counted and rate-limited */
	} else {
		log_msg(LOG_WARN, "submit_failed", "op=send error=\"%s\"", strerror(-rc));
		conn_abort(c, ECHO_CLOSE_ERROR);
	}
}

/* One send for everything queued, up to LOOP_SEND_MAX_SEGS runs: a pipelining peer's
 * messages, received into several buffers, leave in one syscall (or one SQE). */
static inline void conn_send_runs(struct conn *c, uint32_t n)
{
	c->tx.segs = c->qhead;
	c->tx.nsegs = n;
	c->tx_at_ms = c->srv->loop->now_ms;
	int rc = loop_submit(c->srv->loop, &c->tx);
	if (rc < 0)
		send_failed(c, rc);
}

static void conn_send_head(struct conn *c)
{
	uint32_t n = 1;
	for (const struct seg *s = c->qhead->next; s && n < LOOP_SEND_MAX_SEGS; s = s->next)
		n++;
	conn_send_runs(c, n);
}

static bool rx_blocked(const struct conn *c)
{
	const struct echo_server *srv = c->srv;
	if (c->queued >= srv->lim.conn_buffer)
		return true;
	/* Over its share of pool buffers with no spill room left: no more buffers for it. (The
	 * spill test first: most connections never have one, and it is one load.) */
	return c->spill.base && c->held >= conn_share(srv) &&
	       (c->qtail != &c->spill ||
		c->spill.off + c->spill.len + srv->loop->pool.bufsize > c->spill_cap);
}

static __attribute__((noinline)) void conn_update_rx(struct conn *c)
{
	struct echo_server *srv = c->srv;
	/* Saturating: a recv racing its cancel may bring max_bytes (at least 1: 0 means no bound)
	 * past a spent budget, and a wrapped room would lift the bound altogether. */
	uint32_t room = c->queued < srv->lim.conn_buffer ? srv->lim.conn_buffer - c->queued : 0;
	if (!c->paused && rx_blocked(c)) {
		c->paused = true;
		srv->stats.paused++;
	} else if (c->paused && c->queued <= srv->lowat && !rx_blocked(c)) {
		c->paused = false;
	}
	bool want = !c->paused && !c->waiting_bufs;
	/* Not paused means room: a recv takes at most what is left of the budget. */
	c->rx.max_bytes = room ? room : 1;
	if (want && !loop_op_armed(&c->rx)) {
		int rc = loop_submit(srv->loop, &c->rx);
		if (rc == -ENOMEM) {
			conn_nomem(c, "the backend to watch its fd"); /* its fd table could not grow */
			conn_step(c);
		} else if (rc < 0) {
			log_msg(LOG_WARN, "submit_failed", "op=recv error=\"%s\"", strerror(-rc));
			conn_abort(c, ECHO_CLOSE_ERROR);
			conn_step(c);
		}
	} else if (!want && loop_op_armed(&c->rx)) {
		loop_cancel(srv->loop, &c->rx);
	}
}

/* Has the peer's kernel acknowledged everything we sent, FIN included? Then a RST can no longer
 * destroy any of it (it sits in the peer's receive queue, which a RST does not purge), and the
 * close need not wait. Sockets that cannot say (not TCP) count as acknowledged. */
static bool conn_all_acked(const struct conn *c)
{
	/* A Unix stream's send puts the bytes in the peer's receive queue, which outlives our
	 * close; there SIOCOUTQ counts what the peer has not READ, which may never happen. */
	if (!c->tcp)
		return true;
	int unacked = 0;
	loop_count(c->srv->loop, SC_IOCTL);
	return ioctl(c->fd, SIOCOUTQ, &unacked) < 0 || unacked == 0;
}

/* Drained and half-closed: close once all is acknowledged, else read and drop meanwhile. */
static void conn_linger(struct conn *c)
{
	struct echo_server *srv = c->srv;
	if (conn_all_acked(c)) {
		c->closing = true;
		return;
	}
	if (srv->linger_timer.deadline_ms == 0)
		loop_timer_start(srv->loop, &srv->linger_timer, LINGER_CHECK_MS);
	if (loop_op_armed(&c->rx) || c->waiting_bufs || c->eof)
		return;
	c->rx.max_bytes = 0;
	if (loop_submit(srv->loop, &c->rx) < 0)
		c->closing = true;
}

/* Lingering connections whose echoes have all been acknowledged close now. */
static void on_linger_check(struct loop *loop, struct loop_timer *t)
{
	struct echo_server *srv = t->owner;
	bool lingering = false;
	for (struct conn *c = srv->head; c;) {
		struct conn *next = c->next;
		if (c->wr_shut && !c->closing) {
			if (conn_all_acked(c)) {
				c->closing = true;
				conn_step(c);
			} else {
				lingering = true;
			}
		}
		c = next;
	}
	if (lingering)
		loop_timer_start(loop, t, LINGER_CHECK_MS);
}

/* Everything but an open connection's steady state: ending (EOF or drain), lingering, closing. */
static __attribute__((noinline)) void conn_step_slow(struct conn *c)
{
	struct echo_server *srv = c->srv;
	if (!c->closing && !c->wr_shut && (c->eof || srv->draining)) {
		/* Stop receiving and let the recv finish: bytes that raced the cancel are echoed
		 * like the rest. Then, with everything sent, RFC 862 half-close. */
		if (loop_op_armed(&c->rx)) {
			loop_cancel(srv->loop, &c->rx);
			return;
		}
		if (c->qhead || loop_op_armed(&c->tx))
			return;
		/* After the peer's FIN, everything it sent has been read, so the close sends our
		 * FIN by itself (a close resets only with unread data left): a shutdown first
		 * would be one more syscall per connection, which churn pays in full. */
		if (!c->eof) {
			loop_count(srv->loop, SC_SHUTDOWN);
			shutdown(c->fd, SHUT_WR);
		}
		conn_decide(c, c->eof ? ECHO_CLOSE_EOF : ECHO_CLOSE_DRAIN);
		c->wr_shut = true;
		if (c->eof)
			c->closing = true;
	}
	if (c->wr_shut && !c->closing) {
		conn_linger(c);
		if (!c->closing)
			return;
	}
	if (c->closing) {
		if (loop_op_armed(&c->rx))
			loop_cancel(srv->loop, &c->rx);
		if (loop_op_armed(&c->tx))
			loop_cancel(srv->loop, &c->tx);
		if (!loop_op_armed(&c->rx) && !loop_op_armed(&c->tx))
			conn_free(c);
		return;
	}
	conn_update_rx(c);
}

/* What follows a completion once any send is under way: an ending connection goes the slow
 * way, an open one only has its receive budget brought up to date. */
static inline void conn_settle(struct conn *c)
{
	if (c->closing | c->wr_shut | c->eof | c->srv->draining) {
		conn_step_slow(c);
		return;
	}
	/* The steady state, twice per echo: receiving, room left, no spill; only the budget
	 * moves (armed implies not waiting for buffers; room and no spill: not blocked). */
	uint32_t lim = c->srv->lim.conn_buffer, room = c->queued < lim ? lim - c->queued : 0;
	if (loop_op_armed(&c->rx) && room && !c->spill.base && !c->paused)
		c->rx.max_bytes = room;
	else
		conn_update_rx(c);
}

/* The step after a completion: send what is queued if no send is under way, then settle.
 * Inline in the two completions that run once per echo (on_recv's data, on_send); conn_step()
 * is the same for everything else. */
static inline void conn_step_inline(struct conn *c)
{
	if (c->qhead && !loop_op_armed(&c->tx) && !c->closing && !c->wr_shut)
		conn_send_head(c);
	conn_settle(c);
}

static void conn_step(struct conn *c)
{
	conn_step_inline(c);
}

/* --- the PROXY protocol header ----------------------------------------------------------- */

/* One line per REFUSAL_LOG_MS at most: a flood of bad headers must not become a flood of
 * lines. The counters have every one. */
static void proxy_log_rejection(struct conn *c, const char *why)
{
	struct echo_server *srv = c->srv;
	srv->proxy_unlogged++;
	uint64_t now = srv->loop->now_ms;
	if (srv->proxy_logged_at && now - srv->proxy_logged_at < REFUSAL_LOG_MS)
		return;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char peer[128] = "?";
	if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0)
		log_format_addr((struct sockaddr *)&ss, len, peer, sizeof(peer));
	log_msg(LOG_WARN, "proxy_rejected", "peer=%s fd=%d error=\"%s\" count=%llu", peer, c->fd,
		why, (unsigned long long)srv->proxy_unlogged);
	srv->proxy_unlogged = 0;
	srv->proxy_logged_at = now;
}

/* Close a connection whose header is bad, missing or late, counted under `counter`. */
static void proxy_reject(struct conn *c, const char *why, uint64_t *counter)
{
	(*counter)++;
	proxy_log_rejection(c, why);
	preamble_end(c);
	conn_abort(c, ECHO_CLOSE_ERROR);
}

/* The header's client is who this connection is from, from now on (and in the log). */
static void proxy_accept(struct conn *c, const struct proxy_info *info)
{
	c->srv->stats.proxy_accepted++;
	preamble_end(c);
	if (log_threshold < LOG_DEBUG)
		return;
	char src[128] = "local", dst[128] = "local";
	if (!info->local) {
		socklen_t len = info->family == AF_INET	   ? sizeof(struct sockaddr_in)
				: info->family == AF_INET6 ? sizeof(struct sockaddr_in6)
							   : sizeof(struct sockaddr_un);
		log_format_addr((const struct sockaddr *)&info->src, len, src, sizeof(src));
		log_format_addr((const struct sockaddr *)&info->dst, len, dst, sizeof(dst));
	}
	log_msg(LOG_DEBUG, "proxy_header", "fd=%d version=%d client=%s server=%s", c->fd,
		info->version, src, dst);
}

/* Bytes while the header is arriving: the header's are consumed; what follows it in the same
 * receive is the connection's first data, echoed like any other. Returns the bytes of `b`
 * left to echo (b adjusted to them), or 0. */
static uint32_t proxy_take(struct conn *c, struct buf *b, uint32_t n)
{
	struct proxy_info info;
	bool done;
	int used = preamble_feed(c->pre, b->base, n, &info, &done);
	if (used < 0) {
		proxy_reject(c, info.error ? info.error : proxy_strerror(used),
			     &c->srv->stats.proxy_rejected);
		return 0;
	}
	if (!done)
		return 0;
	proxy_accept(c, &info);
	b->base += used;
	b->len = n - (uint32_t)used;
	return b->len;
}

static void on_proxy_deadline(struct loop *loop, struct loop_timer *t)
{
	struct echo_server *srv = t->owner;
	struct preamble *p;
	while ((p = srv->preambles.head) && loop->now_ms - p->started_ms >= srv->lim.proxy_timeout_ms) {
		struct conn *c = p->owner;
		proxy_reject(c, "no complete PROXY header in time (--proxy-timeout)",
			     &srv->stats.proxy_timeouts);
		conn_step(c);
	}
	if (p)
		loop_timer_start(loop, t, srv->lim.proxy_timeout_ms - (loop->now_ms - p->started_ms));
}

static int preamble_begin(struct conn *c)
{
	struct echo_server *srv = c->srv;
	c->pre = malloc(sizeof(*c->pre));
	if (!c->pre)
		return -ENOMEM;
	c->pre->len = 0;
	c->pre->started_ms = srv->loop->now_ms;
	c->pre->owner = c;
	preamble_list_append(&srv->preambles, c->pre);
	if (srv->proxy_timer.deadline_ms == 0)
		loop_timer_start(srv->loop, &srv->proxy_timer, srv->lim.proxy_timeout_ms);
	return 0;
}

/* Bytes for an open connection: queued, then sent. Within a batch (OPF_BATCH: more of this
 * recv follows at once) only the budget moves, and the last piece sends the lot: pausing
 * mid-batch would cancel the recv and drop what the backend has already read for it. */
static inline void conn_received(struct conn *c, const struct buf *b, unsigned cflags)
{
	struct echo_server *srv = c->srv;
	srv->stats.bytes_in += b->len;
	conn_touch(c);
	if (!c->qhead && !(cflags & OPF_BATCH) && !loop_op_armed(&c->tx)) {
		/* The steady state: nothing queued, no send in flight: the buffer leaves at once
		 * as the only run. */
		conn_enqueue_buffer(c, b);
		conn_send_runs(c, 1);
		conn_settle(c);
		if (srv->waiting)
			wake_waiters(srv);
		return;
	}
	conn_enqueue(c, b);
	if ((cflags & OPF_BATCH) && !c->closing) {
		uint32_t lim = srv->lim.conn_buffer;
		c->rx.max_bytes = c->queued < lim ? lim - c->queued : 1;
		return;
	}
	conn_step_inline(c);
	if (srv->waiting)
		wake_waiters(srv);
}

/* Everything else on_recv() meets: the PROXY header, ends, errors, lingering. */
static __attribute__((noinline)) void on_recv_slow(struct op *op, int res, unsigned cflags)
{
	struct conn *c = op->owner;
	struct echo_server *srv = c->srv;
	bool reclaim = false;
	if (res > 0 && c->pre && !c->closing && !c->wr_shut) {
		struct buf b = op->buf;
		res = (int)proxy_take(c, &b, (uint32_t)res);
		if (res == 0) {
			loop_buf_release(srv->loop, op->buf.bid);
			if (!(cflags & OPF_MORE) || c->closing)
				conn_step(c);
			return;
		}
		op->buf = b; /* what followed the header: echoed below like any data */
	} else if (res == 0 && c->pre && !c->closing) {
		proxy_reject(c, "closed before a complete PROXY header", &srv->stats.proxy_rejected);
	}
	if (res > 0 && !c->closing && !c->wr_shut) {
		conn_received(c, &op->buf, cflags); /* what followed the header */
		return;
	} else if (res > 0) {
		/* Aborted (counted as such), or lingering after a complete echo. */
		if (c->wr_shut && !c->closing)
			srv->stats.discarded_bytes += (uint64_t)res;
		loop_buf_release(srv->loop, op->buf.bid);
	} else {
		if (cflags & OPF_BUFFER)
			loop_buf_release(srv->loop, op->buf.bid);
		if (res == 0) {
			c->eof = true;
			if (c->wr_shut)
				c->closing = true;
		} else if (res == -ENOBUFS) {
			srv->stats.enobufs++;
			if (!c->closing && !c->waiting_bufs)
				wait_append(srv, c);
			reclaim = true; /* stuck clients may be sitting on the pool: below */
		} else if (res != -ECANCELED) {
			conn_abort(c, error_reason(res));
		}
	}
	if (!(cflags & OPF_MORE) || (res > 0 && !c->wr_shut))
		conn_step(c);
	/* Last: a reclaim may close and free any connection, this one too (out of memory for
	 * its spill with its ops final), so nothing may touch c after it. */
	if (reclaim)
		pool_reclaim(srv);
	if (srv->waiting)
		wake_waiters(srv);
}

/* Data on an open connection, past its PROXY header: the steady state, kept apart from the
 * rest (on_recv_slow) so the two completions of every echo run short and lean. */
static void on_recv(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)loop;
	struct conn *c = op->owner;
	if (__builtin_expect(res <= 0 || c->pre || c->closing || c->wr_shut, 0))
		on_recv_slow(op, res, cflags);
	else
		conn_received(c, &op->buf, cflags);
}

static void on_send(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)loop;
	(void)cflags;
	struct conn *c = op->owner;
	struct echo_server *srv = c->srv;
	struct seg *head = c->qhead;
	if (head && (uint32_t)res == head->len && !head->next && head->bid >= 0 && res > 0 &&
	    !c->closing) {
		/* The steady state: the whole queue, one pool buffer, sent at once. Apart from
		 * the general path below, accounting and all: sharing its first lines cost 5
		 * instructions per message (callgrind), the branch order being what saves them. */
		c->queued -= (uint32_t)res;
		srv->stats.bytes_out += (uint32_t)res;
		conn_touch(c);
		c->qhead = c->qtail = NULL;
		seg_release(c, head);
		conn_settle(c);
		if (srv->waiting)
			wake_waiters(srv);
		return;
	}
	if (res >= 0 && !c->closing) {
		uint32_t n = (uint32_t)res;
		c->queued -= n;
		srv->stats.bytes_out += n;
		if (n)
			conn_touch(c);
		/* A gathered send may end anywhere: in a run, or after several. */
		for (struct seg *s = c->qhead; n && s; s = c->qhead) {
			uint32_t take = n < s->len ? n : s->len;
			s->off += take;
			s->len -= take;
			n -= take;
			if (s->len == 0) {
				c->qhead = s->next;
				if (!c->qhead)
					c->qtail = NULL;
				seg_release(c, s);
			}
		}
	} else if (res == -ECANCELED && !c->closing) {
		conn_migrate(c); /* cancelled by conn_migrate() to free the pool: finish the job */
	} else if (res < 0 && res != -ECANCELED) {
		conn_abort(c, error_reason(res));
	}
	conn_step_inline(c);
	if (srv->waiting)
		wake_waiters(srv);
}

/* --- accepting ----------------------------------------------------------------------------- */

static void refusals_flush(struct echo_server *srv)
{
	if (!srv->refusals_unlogged)
		return;
	log_msg(LOG_WARN, "refused", "reason=%s fd=%d conns=%u max_conns=%u count=%llu",
		srv->refusal_reason, srv->refusal_fd, srv->stats.conns, srv->lim.max_conns,
		(unsigned long long)srv->refusals_unlogged);
	srv->refusals_unlogged = 0;
	srv->log_refusals_at = srv->loop->now_ms;
}

/* One line per REFUSAL_LOG_MS at most, counting the refusals since the last; the count of the
 * last burst is flushed by a timer, so no refusal goes unreported. */
static void log_refusal(struct echo_server *srv, const char *reason, int fd)
{
	srv->refusals_unlogged++;
	srv->refusal_reason = reason;
	srv->refusal_fd = fd;
	uint64_t since = srv->loop->now_ms - srv->log_refusals_at;
	if (srv->log_refusals_at && since < REFUSAL_LOG_MS) {
		if (srv->refusal_timer.deadline_ms == 0)
			loop_timer_start(srv->loop, &srv->refusal_timer, REFUSAL_LOG_MS - since);
		return;
	}
	refusals_flush(srv);
}

static void on_refusal_timer(struct loop *loop, struct loop_timer *t)
{
	(void)loop;
	refusals_flush(t->owner);
}

/* A refused connection is reset, always: SO_LINGER 0 makes close() send a RST whether or not
 * the client has sent bytes yet (a plain close sends a FIN if it has not, a RST if it has), so
 * the client's next read or write fails with ECONNRESET, never a clean EOF that could pass for
 * an echo of nothing. */
static void refuse(struct echo_server *srv, int fd, const char *reason)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	loop_count(srv->loop, SC_SETSOCKOPT);
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	loop_count(srv->loop, SC_CLOSE);
	close(fd);
	log_refusal(srv, reason, fd);
}

/* Echo replies are small and latency-bound; Nagle would hold them. */
static int set_nodelay(struct loop *loop, int fd)
{
	int one = 1;
	loop_count(loop, SC_SETSOCKOPT);
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* nodelay: the socket has TCP_NODELAY already (Linux copies it from the listener). */
static int adopt(struct echo_server *srv, int fd, bool tcp, bool nodelay)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (tcp && !nodelay)
		(void)set_nodelay(srv->loop, fd);
	c->tcp = tcp;
	c->srv = srv;
	if (srv->lim.proxy_protocol && preamble_begin(c) < 0) {
		free(c);
		return -ENOMEM;
	}
	c->fd = fd;
	c->rx = (struct op){ .code = OP_RECV, .fd = fd, .done = on_recv, .owner = c };
	c->tx = (struct op){ .code = OP_SEND, .fd = fd, .done = on_send, .owner = c };
	c->last_active_ms = srv->loop->now_ms;
	c->why = -1;
	list_append(srv, c);
	srv->stats.accepted++;
	if (++srv->stats.conns > srv->stats.conns_peak)
		srv->stats.conns_peak = srv->stats.conns;
	conn_step(c);
	return 0;
}

int echo_server_adopt(struct echo_server *srv, int fd)
{
	return adopt(srv, fd, true, false);
}

/* One more connection within max_conns, process-wide when the workers share a count. */
static bool conns_reserve(struct echo_server *srv)
{
	if (!srv->lim.conns_total)
		return srv->stats.conns < srv->lim.max_conns;
	uint32_t n = atomic_fetch_add_explicit(srv->lim.conns_total, 1, memory_order_relaxed);
	if (n < srv->lim.max_conns)
		return true;
	atomic_fetch_sub_explicit(srv->lim.conns_total, 1, memory_order_relaxed);
	return false;
}

static void conns_unreserve(struct echo_server *srv)
{
	if (srv->lim.conns_total)
		atomic_fetch_sub_explicit(srv->lim.conns_total, 1, memory_order_relaxed);
}

static void accept_one(struct echo_server *srv, const struct listener *l, int fd)
{
	const struct backend *be = srv->loop->be;
	if (!conns_reserve(srv)) {
		srv->stats.refused_limit++;
		refuse(srv, fd, "max_conns");
		return;
	}
	if ((be->caps & BACKEND_CAP_FD_LIMIT) && fd >= be->max_fd) {
		conns_unreserve(srv);
		srv->stats.refused_fd++;
		refuse(srv, fd, "fd_limit");
		return;
	}
	if (adopt(srv, fd, !l->unix_stream, l->nodelay) < 0) {
		conns_unreserve(srv);
		srv->stats.refused_nomem++;
		refuse(srv, fd, "out_of_memory");
	}
}

/* Out of fds or memory, or a listener that could not be armed: retrying at once would spin;
 * back off, doubling, and re-arm every idle listener when the timer fires (on_backoff). */
static void accept_backoff(struct echo_server *srv, struct listener *l, const char *event,
			   int err)
{
	srv->stats.accept_backoffs++;
	srv->backoff_ms = srv->backoff_ms ? srv->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (srv->backoff_ms > BACKOFF_MAX_MS)
		srv->backoff_ms = BACKOFF_MAX_MS;
	log_msg(LOG_WARN, event, "error=\"%s\" retry_ms=%u conns=%u fd=%d", strerror(-err),
		srv->backoff_ms, srv->stats.conns, l->fd);
	if (loop_op_armed(&l->acc))
		loop_cancel(srv->loop, &l->acc);
	loop_timer_start(srv->loop, &srv->backoff_timer, srv->backoff_ms);
}

/* A listener left unarmed would accept nobody again, with nothing in the log to say why. */
static void listener_arm(struct listener *l)
{
	int rc = loop_submit(l->srv->loop, &l->acc);
	if (rc < 0)
		accept_backoff(l->srv, l, "accept_arm_failed", rc);
}

static void on_backoff(struct loop *loop, struct loop_timer *t)
{
	(void)loop;
	struct echo_server *srv = t->owner;
	for (int i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];
		if (!l->closing && l->fd >= 0 && !loop_op_armed(&l->acc))
			listener_arm(l);
	}
}

static void on_accept(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	struct listener *l = op->owner;
	struct echo_server *srv = l->srv;
	if (res >= 0) {
		if (l->closing) {
			loop_count(loop, SC_CLOSE);
			close(res);
		} else {
			accept_one(srv, l, res);
		}
	} else if (res != -ECANCELED && !l->closing) {
		/* (A closing listener's final completion closes it, whatever it says.) */
		accept_backoff(srv, l, "accept_backoff", res);
		return;
	}
	if (res >= 0)
		srv->backoff_ms = 0;
	if (cflags & OPF_MORE)
		return;
	if (l->closing) {
		loop_close_fd(loop, l->fd);
		l->fd = -1;
		srv->nlisteners_open--;
		check_done(srv);
	} else if (srv->backoff_timer.deadline_ms == 0) {
		listener_arm(l);
	}
}

int echo_server_listen(struct echo_server *srv, int fd)
{
	if (srv->nlisteners == ECHO_MAX_LISTENERS)
		return -ENOSPC;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	struct listener *l = &srv->listeners[srv->nlisteners++];
	*l = (struct listener){ .fd = fd, .srv = srv, .unix_stream = ss.ss_family == AF_UNIX };
	/* A listener with TCP_NODELAY passes it to every socket it accepts: no setsockopt per
	 * connection, which a churning load (health checks, short connections) pays per accept.
	 * echod sets it before listen() (listeners.c); systemd does with NoDelay=yes. Set any
	 * later, it would miss connections already in the backlog: those are set one by one. */
	int on = 0;
	socklen_t olen = sizeof(on);
	l->nodelay = !l->unix_stream &&
		     getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &olen) == 0 && on;
	l->acc = (struct op){ .code = OP_ACCEPT, .fd = fd, .done = on_accept, .owner = l };
	srv->nlisteners_open++;
	int rc = loop_submit(srv->loop, &l->acc);
	if (rc < 0) {
		srv->nlisteners--;
		srv->nlisteners_open--;
	}
	return rc;
}

/* --- timers and life cycle ----------------------------------------------------------------- */

static uint32_t idle_period(const struct echo_server *srv)
{
	uint32_t p = srv->lim.idle_timeout_ms / 2;
	if (p > IDLE_SWEEP_MAX_MS)
		p = IDLE_SWEEP_MAX_MS;
	return p ? p : 1;
}

static void on_idle_sweep(struct loop *loop, struct loop_timer *t)
{
	struct echo_server *srv = t->owner;
	/* Least recently active first: stop at the first connection that is not idle. */
	for (struct conn *c = srv->head; c;) {
		struct conn *next = c->next;
		if (loop->now_ms - c->last_active_ms < srv->lim.idle_timeout_ms)
			break;
		if (!c->closing) {
			srv->stats.idle_closed++;
			log_msg(LOG_DEBUG, "idle_close", "fd=%d", c->fd);
			conn_abort(c, ECHO_CLOSE_IDLE);
			conn_step(c);
		}
		c = next;
	}
	if (!srv->draining)
		loop_timer_start(loop, t, idle_period(srv));
}

static void on_migrate_timer(struct loop *loop, struct loop_timer *t)
{
	struct echo_server *srv = t->owner;
	(void)loop;
	if (srv->waiting) {
		pool_reclaim(srv);
		wake_waiters(srv);
	}
}

static void cut_all(struct echo_server *srv)
{
	for (struct conn *c = srv->head; c;) {
		struct conn *next = c->next;
		conn_abort(c, ECHO_CLOSE_DRAIN);
		conn_step(c);
		c = next;
	}
}

static void on_drain_deadline(struct loop *loop, struct loop_timer *t)
{
	(void)loop;
	struct echo_server *srv = t->owner;
	if (srv->stats.conns)
		log_msg(LOG_WARN, "drain_timeout", "conns=%u", srv->stats.conns);
	cut_all(srv);
}

void echo_server_cut(struct echo_server *srv)
{
	echo_server_stop(srv);
	cut_all(srv);
}

static void on_udp_quiet(void *arg)
{
	check_done(arg);
}

int echo_server_init(struct echo_server *srv, struct loop *loop, const struct echo_limits *lim)
{
	memset(srv, 0, sizeof(*srv));
	srv->loop = loop;
	srv->lim = *lim;
	srv->lowat = lim->conn_buffer / 2;
	uint32_t nbufs = loop->pool.nbufs;
	uint32_t share = lim->conn_buffer / loop->pool.bufsize;
	if (share > nbufs / 16)
		share = nbufs / 16;
	srv->share = share < 2 ? 2 : share;
	srv->segs = calloc(nbufs, sizeof(*srv->segs));
	if (!srv->segs)
		return -ENOMEM;
	srv->idle_timer = (struct loop_timer){ .fire = on_idle_sweep, .owner = srv };
	srv->backoff_timer = (struct loop_timer){ .fire = on_backoff, .owner = srv };
	srv->drain_timer = (struct loop_timer){ .fire = on_drain_deadline, .owner = srv };
	srv->migrate_timer = (struct loop_timer){ .fire = on_migrate_timer, .owner = srv };
	srv->refusal_timer = (struct loop_timer){ .fire = on_refusal_timer, .owner = srv };
	srv->linger_timer = (struct loop_timer){ .fire = on_linger_check, .owner = srv };
	srv->proxy_timer = (struct loop_timer){ .fire = on_proxy_deadline, .owner = srv };
	if (lim->idle_timeout_ms)
		loop_timer_start(loop, &srv->idle_timer, idle_period(srv));
	udp_echo_init(&srv->udp, loop, lim->udp_rate, on_udp_quiet, srv);
	loop->user = srv;
	return 0;
}

void echo_server_stop(struct echo_server *srv)
{
	if (srv->draining)
		return;
	srv->draining = true;
	loop_timer_stop(srv->loop, &srv->idle_timer);
	loop_timer_stop(srv->loop, &srv->backoff_timer);
	for (int i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];
		if (l->fd < 0 || l->closing)
			continue;
		l->closing = true;
		if (loop_op_armed(&l->acc)) {
			loop_cancel(srv->loop, &l->acc);
		} else {
			loop_close_fd(srv->loop, l->fd);
			l->fd = -1;
			srv->nlisteners_open--;
		}
	}
	for (struct conn *c = srv->head; c;) {
		struct conn *next = c->next;
		conn_step(c);
		c = next;
	}
	loop_timer_start(srv->loop, &srv->drain_timer, srv->lim.drain_timeout_ms);
	udp_echo_stop(&srv->udp);
	check_done(srv);
}

bool echo_server_done(const struct echo_server *srv)
{
	return srv->draining && srv->stats.conns == 0 && srv->nlisteners_open == 0 &&
	       udp_echo_done(&srv->udp);
}

int echo_server_listen_udp(struct echo_server *srv, int fd)
{
	return udp_echo_listen(&srv->udp, fd);
}

static bool any_op_armed(const struct echo_server *srv)
{
	for (const struct conn *c = srv->head; c; c = c->next)
		if (loop_op_armed(&c->rx) || loop_op_armed(&c->tx))
			return true;
	for (int i = 0; i < srv->nlisteners; i++)
		if (loop_op_armed(&srv->listeners[i].acc))
			return true;
	return udp_echo_any_armed(&srv->udp);
}

/* The loop is going away (a stop that finished, or a loop that failed). Nothing the kernel may
 * still read is freed before its op is final (an io_uring send reads its buffer, a spill,
 * until its CQE): every op is cancelled and the loop run until the finals are in, bounded;
 * whatever is left after that is released without them. */
void echo_server_fini(struct echo_server *srv)
{
	struct loop *loop = srv->loop;
	srv->draining = true;
	for (int i = 0; i < srv->nlisteners; i++) {
		srv->listeners[i].closing = true;
		loop_cancel(loop, &srv->listeners[i].acc);
	}
	for (struct conn *c = srv->head; c; c = c->next) {
		conn_decide(c, ECHO_CLOSE_DRAIN);
		c->closing = true;
		loop_cancel(loop, &c->rx);
		loop_cancel(loop, &c->tx);
	}
	udp_echo_stop(&srv->udp);
	for (int i = 0; i < FINI_WAIT_ROUNDS && any_op_armed(srv); i++) {
		loop_set_stop(loop, false); /* the last close set it; the finals are still due */
		if (loop_run_once(loop, FINI_WAIT_MS) < 0)
			break;
	}
	while (srv->head) {
		struct conn *c = srv->head;
		loop_op_abandon(&c->rx);
		loop_op_abandon(&c->tx);
		conn_free(c);
	}
	for (int i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].fd >= 0)
			loop_close_fd(loop, srv->listeners[i].fd);
	udp_echo_fini(&srv->udp);
	timers_stop(srv);
	free(srv->segs);
	srv->segs = NULL;
}
