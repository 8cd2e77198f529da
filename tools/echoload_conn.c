/* echoload_conn.c - the bookkeeping both engines share: when a connection creates a message
 * (closed loop: when one of its depth echoes completes; open loop: when its pacing slot is due
 * and fewer than depth are outstanding), what it sends next, which echoes completed intact and
 * how long they took, errors, the end of the run and the drain after it. The engines only move
 * bytes and call in here.
 *
 * Which messages a result is made of: those due inside the measured interval (open loop: by
 * intended send time; closed loop: by creation), whenever their echoes come. Choosing by
 * completion time would drop exactly the messages a stall at the end delays past the stop, and
 * report the run as if the stall had not happened. So the drain goes on sending slots due
 * before the stop that the --depth cap held back, records the echoes it gets, and when it ends
 * every message due in the interval that was never echoed, or never sent, goes into the
 * latency histogram at its lateness then (a lower bound on a latency that never ended). */
#include "echoload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SETTLE_NS (100 * 1000000ull)     /* decide about held bytes after this long idle */
#define DRAIN_MAX_NS (2 * NS_PER_S)      /* wait at most this for echoes after the stop */
#define DRAIN_IDLE_NS (500 * 1000000ull) /* ... or this long without any byte arriving */
#define PUBLISH_NS (200 * 1000000ull)    /* refresh the copy the progress line reads */
#define UDP_DRAIN_MARGIN_NS (50 * 1000000ull) /* --udp: drain for the timeout and this */
#define LAT_MAX_NS (60 * NS_PER_S)       /* histogram range 1 ns .. 60 s, 0.1% error */
#define LAT_BITS HIST_BITS_3_DIGITS
#ifndef ERRORS_SHOWN
#define ERRORS_SHOWN 10                  /* detailed error lines on stderr per run */
#endif

static atomic_uint errors_shown;

void worker_fail(struct worker *w, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->why, sizeof(w->why), fmt, ap);
	va_end(ap);
	w->status = status;
	atomic_store(w->abort_run, true);
}

void conn_error(struct worker *w, const struct conn *c, uint64_t pos, const char *fmt, ...)
{
	w->cnt.errors++;
	if (w->opt->quiet)
		return;
	unsigned n = atomic_fetch_add(&errors_shown, 1);
	if (n >= ERRORS_SHOWN)
		return;
	char what[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fprintf(stderr, "echoload: conn %u msg %llu byte %u: %s\n", c->id,
		(unsigned long long)(pos / w->opt->size), (unsigned)(pos % w->opt->size), what);
	if (n + 1 == ERRORS_SHOWN)
		fprintf(stderr, "echoload: further errors are counted, not shown\n");
}

int worker_setup(struct worker *w)
{
	const struct options *o = w->opt;
	int err = pthread_mutex_init(&w->pub_lock, NULL); /* first: teardown may then destroy it */
	if (err) {
		snprintf(w->why, sizeof(w->why), "pthread_mutex_init: %s", strerror(err));
		return -1;
	}
	if (hist_init(&w->lat, LAT_MAX_NS, LAT_BITS) < 0 ||
	    hist_init(&w->pub_lat, LAT_MAX_NS, LAT_BITS) < 0 ||
	    (o->rate > 0 && hist_init(&w->lag, LAT_MAX_NS, LAT_BITS) < 0) ||
	    (o->reconnect && hist_init(&w->conn_lat, LAT_MAX_NS, LAT_BITS) < 0))
		goto oom;
	w->dirty = calloc(w->nconns ? w->nconns : 1, sizeof(*w->dirty));
	if (!w->dirty)
		goto oom;
	for (uint32_t i = 0; i < w->nconns; i++) {
		w->conns[i].index = i;
		if (o->udp)
			continue; /* its window lives in udp_setup's allocations */
		w->conns[i].stamp = calloc(o->depth, sizeof(uint64_t));
		if (!w->conns[i].stamp)
			goto oom;
	}
	if (o->udp && udp_setup(w) < 0)
		return -1;
	if (o->rate > 0) /* this worker's share of the rate, in proportion to its connections */
		w->slot_ns = 1e9 * o->conns / (o->rate * w->nconns);
	return 0;
oom:
	snprintf(w->why, sizeof(w->why), "out of memory");
	return -1;
}

void worker_teardown(struct worker *w)
{
	for (uint32_t i = 0; i < w->nconns; i++) {
		free(w->conns[i].stamp);
		verify_free(&w->conns[i]);
	}
	udp_teardown(w);
	free(w->dirty);
	hist_free(&w->lat);
	hist_free(&w->pub_lat);
	if (w->opt->rate > 0)
		hist_free(&w->lag);
	if (w->opt->reconnect)
		hist_free(&w->conn_lat);
	pthread_mutex_destroy(&w->pub_lock);
}

void worker_clock(struct worker *w)
{
	w->now = now_ns();
}

void worker_wait_start(const struct worker *w)
{
	struct timespec ts = { .tv_sec = (time_t)(w->t_begin / NS_PER_S),
			       .tv_nsec = (long)(w->t_begin % NS_PER_S) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

void conn_want_send(struct worker *w, struct conn *c)
{
	if (!c->dirty && !c->dead) {
		c->dirty = true;
		w->dirty[w->ndirty++] = c->index;
	}
}

void worker_flush_dirty(struct worker *w, void (*flush)(struct worker *, void *, struct conn *),
			void *engine)
{
	for (uint32_t i = 0; i < w->ndirty; i++) {
		struct conn *c = &w->conns[w->dirty[i]];
		c->dirty = false;
		flush(w, engine, c);
	}
	w->ndirty = 0;
}

/* Open loop: when the worker's s-th slot is due. */
static uint64_t global_slot_time(const struct worker *w, uint64_t s)
{
	return w->t_begin + (uint64_t)((double)s * w->slot_ns);
}

/* ... and the k-th slot of connection c (slots go round-robin). */
static uint64_t slot_time(const struct worker *w, const struct conn *c, uint64_t k)
{
	return global_slot_time(w, k * w->nconns + c->index);
}

/* The first of the worker's slots due at or after t. */
static uint64_t first_slot_at(const struct worker *w, uint64_t t)
{
	if (t <= w->t_begin)
		return 0;
	uint64_t s = (uint64_t)((double)(t - w->t_begin) / w->slot_ns);
	while (s > 0 && global_slot_time(w, s - 1) >= t) /* the division rounds either way */
		s--;
	while (global_slot_time(w, s) < t)
		s++;
	return s;
}

/* Due (open loop), or created (closed loop), inside the measured interval. */
static bool in_interval(const struct worker *w, uint64_t stamp)
{
	return stamp >= w->t_meas && stamp < w->stop;
}

/* Room for one more message: fewer than depth outstanding (UDP: its window's own rule), and
 * with --reconnect fewer than N made on this connection. */
static bool may_create(const struct worker *w, const struct conn *c)
{
	if (w->opt->udp)
		return udp_may_create(w, c);
	uint32_t size = w->opt->size;
	if (w->opt->reconnect && c->queued / size >= w->opt->reconnect)
		return false;
	return c->queued / size - c->rx / size < w->opt->depth;
}

/* Creates messages while there is room (and, open loop, slots are due). */
void conn_refill(struct worker *w, struct conn *c)
{
	uint32_t size = w->opt->size, depth = w->opt->depth;
	if (c->dead || c->phase != CONN_OPEN)
		return;
	/* closed loop: nothing new after the stop; open loop: the credits, granted only for slots
	 * due before it, are the limit, and the drain sends those the depth cap held back */
	if (w->opt->rate <= 0 && (w->stop_seen || w->now >= w->stop))
		return;
	while (may_create(w, c)) {
		uint64_t t = w->now;
		if (w->opt->rate > 0) {
			if (c->credits_used >= c->credits)
				break;
			t = slot_time(w, c, c->credits_used++);
		}
		if (w->opt->udp) {
			udp_create(w, c, t);
			continue;
		}
		c->stamp[(c->queued / size) % depth] = t;
		c->queued += size;
	}
	if (w->opt->udp ? udp_unsent(c) : c->queued > c->sent)
		conn_want_send(w, c);
}

void worker_completed(struct worker *w, uint64_t stamp)
{
	w->cnt.msgs_all++;
	if (!in_interval(w, stamp))
		return;
	w->cnt.msgs++;
	hist_record(&w->lat, w->now > stamp ? w->now - stamp : 0);
}

void worker_sent(struct worker *w, uint64_t stamp)
{
	if (w->opt->rate <= 0)
		return;
	if (w->now >= w->t_meas && w->now < w->stop)
		w->cnt.sent_in_interval++;
	if (in_interval(w, stamp))
		hist_record(&w->lag, w->now > stamp ? w->now - stamp : 0);
}

static void complete(struct worker *w, struct conn *c, uint64_t seq)
{
	if (seq < c->bad_until)
		return;
	worker_completed(w, c->stamp[seq % w->opt->depth]);
}

void conn_damage(struct conn *c, uint64_t seq)
{
	if (seq + 1 > c->bad_until)
		c->bad_until = seq + 1;
}

void conn_advance(struct worker *w, struct conn *c, uint64_t pos, bool damaged)
{
	uint32_t size = w->opt->size;
	uint64_t first = c->rx / size, last = pos / size;
	if (damaged && pos > c->rx)
		conn_damage(c, (pos - 1) / size);
	c->rx = pos;
	for (uint64_t seq = first; seq < last; seq++)
		complete(w, c, seq);
	if (last > first)
		conn_refill(w, c);
	if (conn_close_due(w, c)) /* --reconnect: its N echoes are in; the engine half-closes */
		conn_want_send(w, c);
}

void conn_received(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
	worker_clock(w); /* latency ends when the bytes are in hand, not when the batch began */
	w->last_rx = c->last_rx = w->now;
	w->cnt.rx_bytes += n;
	verify_received(w, c, p, n);
}

size_t conn_fill(const struct conn *c, uint8_t *buf, size_t cap)
{
	uint64_t left = c->queued - c->sent;
	size_t n = left < cap ? (size_t)left : cap;
	msg_stream(c->id, c->sent, buf, n);
	return n;
}

void conn_sent(struct worker *w, struct conn *c, size_t n)
{
	uint64_t size = w->opt->size, from = c->sent;
	c->sent += n;
	if (w->opt->rate <= 0)
		return;
	worker_clock(w); /* the loop's time is from before the sends of this batch */
	/* the messages whose first byte went out with these */
	for (uint64_t seq = (from + size - 1) / size; seq * size < c->sent; seq++)
		worker_sent(w, c->stamp[seq % w->opt->depth]);
}

void conn_failed(struct worker *w, struct conn *c, int err)
{
	if (c->dead)
		return;
	verify_settle(w, c);
	c->dead = true;
	uint64_t size = w->opt->size;
	/* a close after the stop with every echo back is the normal end, not an error */
	if (w->stop_seen && c->rx >= c->sent)
		return;
	w->cnt.conn_errors++;
	uint64_t missing = (c->sent + size - 1) / size - c->rx / size;
	if (c->sent > c->rx) {
		w->cnt.lost_bytes += c->sent - c->rx;
		w->cnt.lost_msgs += (c->sent + size - 1) / size - (c->rx + size - 1) / size;
	}
	if (err)
		conn_error(w, c, c->rx, "connection failed: %s (%llu unanswered message%s)",
			   strerror(err), (unsigned long long)missing, missing == 1 ? "" : "s");
	else
		conn_error(w, c, c->rx,
			   "connection closed by the server (%llu unanswered message%s)",
			   (unsigned long long)missing, missing == 1 ? "" : "s");
	c->queued = c->sent = c->rx; /* nothing of it is in flight any more */
}

/* Open loop: grants every slot due by now, and after the stop every slot due before it (the
 * loop may wake late); returns when the next is due, UINT64_MAX when none is before the stop. */
static uint64_t release_slots(struct worker *w)
{
	uint64_t until = w->now < w->stop ? w->now + 1 : w->stop;
	for (;;) {
		uint64_t t = global_slot_time(w, w->next_slot);
		if (t >= until)
			return t < w->stop ? t : UINT64_MAX;
		struct conn *c = &w->conns[w->next_slot++ % w->nconns];
		c->credits++;
		conn_refill(w, c);
	}
}

/* Held bytes nothing new arrived for: decide with what there is. Returns the next deadline. */
static uint64_t settle_idle(struct worker *w)
{
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < w->nconns && w->npending; i++) {
		struct conn *c = &w->conns[i];
		if (!verify_pending(c))
			continue;
		uint64_t due = verify_last_arrival(c) + SETTLE_NS;
		if (w->now >= due) {
			verify_settle(w, c);
			if (conn_close_due(w, c)) /* the held bytes were all its connection owed */
				conn_want_send(w, c);
		} else if (due < next)
			next = due;
	}
	return next;
}

static void publish(struct worker *w)
{
	pthread_mutex_lock(&w->pub_lock);
	w->pub_cnt = w->cnt;
	(void)hist_copy(&w->pub_lat, &w->lat); /* same shape: made by the same hist_init call */
	pthread_mutex_unlock(&w->pub_lock);
	w->next_publish = w->now + PUBLISH_NS;
}

static bool drained(const struct worker *w)
{
	for (uint32_t i = 0; i < w->nconns; i++) {
		const struct conn *c = &w->conns[i];
		if (c->dead)
			continue;
		if (w->opt->udp ? udp_outstanding(c) > 0 : c->rx < c->queued || verify_pending(c))
			return false;
		if (c->credits_used < c->credits) /* open loop: slots due before the stop unsent */
			return false;
	}
	return true;
}

/* A message due in the interval that never came back, or never went out: its lateness now. */
static void never_came(struct worker *w, uint64_t stamp, bool unsent)
{
	if (!in_interval(w, stamp))
		return;
	uint64_t late = w->now > stamp ? w->now - stamp : 0;
	hist_record(&w->lat, late);
	if (unsent && w->opt->rate > 0) {
		w->cnt.never_sent++;
		hist_record(&w->lag, late);
	}
}

/* A connection still open when the drain ended: what it sent and never got back. The drain
 * waited as long as bytes kept coming, so these are lost (or the server stopped answering). */
static void count_unanswered(struct worker *w, struct conn *c)
{
	uint64_t size = w->opt->size;
	if (c->sent > c->rx) {
		w->cnt.stalled++;
		w->cnt.unanswered_bytes += c->sent - c->rx;
		if (c->rx % size)
			w->cnt.in_flight_partly++;
	}
	for (uint64_t seq = c->rx / size; seq * size < c->queued; seq++) {
		bool unsent = seq * size >= c->sent;
		if (!unsent)
			w->cnt.in_flight++;
		if (seq >= c->bad_until) /* a damaged one is an error already, and has no latency */
			never_came(w, c->stamp[seq % w->opt->depth], unsent);
	}
}

/* The end: settle what is held, then account for what did not come back. */
static void finish(struct worker *w)
{
	for (uint32_t i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		verify_settle(w, c);
		if (w->opt->udp && !c->dead) /* answered or given up by now: loss is a rate */
			w->cnt.in_flight += udp_outstanding(c);
		else if (!c->dead)
			count_unanswered(w, c);
		for (uint64_t k = c->credits_used; k < c->credits; k++) /* open loop: held back */
			never_came(w, slot_time(w, c, k), true);
	}
	if (w->opt->rate > 0) {
		uint64_t hi = first_slot_at(w, w->stop), lo = first_slot_at(w, w->t_meas);
		if (hi > w->next_slot) /* only slots granted can have been due to this loop */
			hi = w->next_slot;
		w->cnt.slots_due = hi > lo ? hi - lo : 0;
	}
	publish(w);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

int64_t worker_step(struct worker *w)
{
	if (atomic_load_explicit(w->abort_run, memory_order_relaxed))
		return -1;
	w->stop = atomic_load_explicit(w->stop_at, memory_order_relaxed);
	if (!w->started) {
		w->started = true;
		w->last_rx = w->now;
		if (!w->opt->udp) /* connected by main before the start */
			w->cnt.conns_opened += w->nconns;
		for (uint32_t i = 0; i < w->nconns; i++) {
			w->conns[i].last_rx = w->now;
			conn_refill(w, &w->conns[i]);
		}
	}
	if (!w->stop_seen && w->now >= w->stop)
		w->stop_seen = w->now;
	uint64_t wake = w->now + PUBLISH_NS;
	if (!w->stop_seen)
		wake = min_u64(wake, w->stop);
	if (w->opt->rate > 0)
		wake = min_u64(wake, release_slots(w));
	if (w->npending)
		wake = min_u64(wake, settle_idle(w));
	if (w->opt->udp)
		wake = min_u64(wake, udp_expire(w));
	if (w->now >= w->next_publish)
		publish(w);
	wake = min_u64(wake, w->next_publish);
	if (w->stop_seen) {
		/* UDP: long enough for every datagram still out to be answered or given up */
		uint64_t udp_wait = w->opt->udp ? w->opt->udp_timeout_ns + UDP_DRAIN_MARGIN_NS : 0;
		uint64_t max_ns = udp_wait > DRAIN_MAX_NS ? udp_wait : DRAIN_MAX_NS;
		uint64_t idle_ns = udp_wait > DRAIN_IDLE_NS ? udp_wait : DRAIN_IDLE_NS;
		uint64_t idle_from = w->last_rx > w->stop_seen ? w->last_rx : w->stop_seen;
		if (drained(w) || w->now >= w->stop_seen + max_ns ||
		    w->now >= idle_from + idle_ns) {
			finish(w);
			return -1;
		}
		wake = min_u64(wake, w->stop_seen + max_ns);
		wake = min_u64(wake, idle_from + idle_ns);
	}
	return wake > w->now ? (int64_t)(wake - w->now) : 0;
}
