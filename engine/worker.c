/* worker.c - one worker thread: its loop, its echo server, the main thread's requests
 * (stop, cut, counters) taken in its own thread, and its counters handed back on exit. */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Wake the main thread's wait (a worker exited). */
static void notify_main(struct worker *w)
{
	int err = pthread_kill(w->sh->main_thread, WORKER_NOTIFY_SIG);
	if (err)
		log_msg(LOG_WARN, "notify_failed", "worker=%d error=\"%s\"", w->index, strerror(err));
}

static void publish(struct worker *w, const struct worker_counters *c)
{
	pthread_mutex_lock(&w->sh->lock);
	w->snap = *c;
	w->snap_gen++;
	pthread_cond_broadcast(&w->sh->answered);
	pthread_mutex_unlock(&w->sh->lock);
}

static void counters_of(struct worker_counters *c, const struct echo_server *srv,
			const struct loop *loop)
{
	c->echo = srv->stats;
	c->udp = srv->udp.stats;
	c->loop = loop->tally;
	c->buffers = loop->pool.nbufs;
	c->buffers_held = srv->bufs_held;
}

/* A wake-up read that could not be armed (or failed) is tried again this much later, doubling:
 * meanwhile the retry itself takes the requests, so a stop is still heard. */
#define WAKE_RETRY_MIN_MS 10
#define WAKE_RETRY_MAX_MS 1000

/* The main thread's requests (worker_ask), taken in the worker's own thread, where its echo
 * server may be touched. */
static void take_requests(struct worker *w, struct loop *loop)
{
	struct echo_server *srv = loop->user;
	unsigned req = atomic_exchange(&w->requests, 0u);
	if (req & REQ_STATS) {
		struct worker_counters c;
		counters_of(&c, srv, loop);
		publish(w, &c);
	}
	if (req & REQ_CUT) {
		w->cut_conns = srv->stats.conns;
		echo_server_cut(srv); /* also stops, if the stop request came in the same read */
	} else if (req & REQ_STOP) {
		echo_server_stop(srv);
	}
}

/* Arm the wake-up read again, or retry later. A worker that cannot read its wake-ups would
 * hear no stop: re-arming at once would spin, giving up would leave the stop to the
 * watchdog's kill. */
static void wake_arm(struct worker *w, struct loop *loop, int failed)
{
	if (failed == 0) {
		failed = loop_submit(loop, &w->wake_op);
		if (failed == 0) {
			w->wake_retry_ms = 0;
			return;
		}
	}
	if (w->wake_retry_ms == 0) /* one line per outage, not per retry */
		log_msg(LOG_ERROR, "wake_failed", "worker=%d error=\"%s\" retry_ms=%d", w->index,
			strerror(-failed), WAKE_RETRY_MIN_MS);
	w->wake_retry_ms = w->wake_retry_ms ? w->wake_retry_ms * 2 : WAKE_RETRY_MIN_MS;
	if (w->wake_retry_ms > WAKE_RETRY_MAX_MS)
		w->wake_retry_ms = WAKE_RETRY_MAX_MS;
	loop_timer_start(loop, &w->wake_retry, w->wake_retry_ms);
}

static void on_wake_retry(struct loop *loop, struct loop_timer *t)
{
	struct worker *w = t->owner;
	if (worker_loop_over(w) || loop_stopped(loop))
		return;
	take_requests(w, loop);
	if (worker_loop_over(w) || loop_stopped(loop))
		return;
	if (!loop_op_armed(&w->wake_op))
		wake_arm(w, loop, 0);
}

/* The wake-up read completed: take the requests, and read again so a later one (a cut, USR1
 * during a drain) is heard too; once the loop is ending it is left alone and worker_main
 * cancels it. */
static void on_wake(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)cflags;
	struct worker *w = op->owner;
	if (res == -ECANCELED)
		return; /* worker_main is shutting the loop down */
	take_requests(w, loop);
	if (worker_loop_over(w) || loop_stopped(loop))
		return;
	/* -EAGAIN/-EINTR: the read found nothing yet; read again. */
	wake_arm(w, loop, res < 0 && res != -EAGAIN && res != -EINTR ? res : 0);
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop loop;
	struct echo_server srv;
	struct worker_counters final = { .buffers = w->lcfg.nbufs };
	/* "echod-w3" in top -H, ps -L and /proc/PID/task/TID/comm: which thread is which worker.
	 * Only a name: a failure is not worth a line. */
	char name[16];
	snprintf(name, sizeof(name), "echod-w%d", w->index);
	(void)pthread_setname_np(pthread_self(), name);
	int rc = loop_init(&loop, w->be, &w->lcfg);
	if (rc < 0)
		goto out;
	const struct echod_config *cfg = w->cfg;
	struct echo_limits lim = { .max_conns = cfg->max_conns, .conns_total = &w->sh->conns_total,
				   .conn_buffer = cfg->conn_buffer,
				   .idle_timeout_ms = cfg->idle_timeout_ms,
				   .drain_timeout_ms = cfg->drain_timeout_ms,
				   .udp_rate = cfg->udp_rate,
				   .proxy_protocol = cfg->proxy_protocol,
				   .proxy_timeout_ms = cfg->proxy_timeout_ms };
	rc = echo_server_init(&srv, &loop, &lim);
	if (rc < 0)
		goto out_loop;
	w->wake_op = (struct op){ .code = OP_READ, .fd = w->wake_fd, .done = on_wake, .owner = w,
				  .buf = { .base = (char *)&w->wake_val, .len = sizeof(w->wake_val) } };
	w->wake_retry = (struct loop_timer){ .fire = on_wake_retry, .owner = w };
	rc = loop_submit(&loop, &w->wake_op);
	for (int i = 0; i < w->nfds && rc == 0; i++) {
		if (w->kinds[i] == LISTEN_UDP) {
			rc = echo_server_listen_udp(&srv, w->fds[i]);
			w->fds[i] = -1; /* owned (or closed) by the echo server, whatever rc says */
			continue;
		}
		rc = echo_server_listen(&srv, w->fds[i]);
		if (rc == 0)
			w->fds[i] = -1; /* the echo server owns it now */
	}
	if (rc == 0) {
		atomic_fetch_add(&w->sh->listening, 1);
		/* The main thread tells the service manager READY=1 once all are listening. */
		pthread_kill(w->sh->main_thread, WORKER_NOTIFY_SIG);
	}
	if (rc == 0)
		rc = loop_run(&loop);
	if (rc < 0)
		log_msg(LOG_ERROR, "worker_failed", "worker=%d error=\"%s\"", w->index, strerror(-rc));
	/* From here on no request is read: what is published now answers them (a scrape in the
	 * last second of a drain must not wait for, or call stuck, a worker that is closing). */
	struct worker_counters last;
	counters_of(&last, &srv, &loop);
	publish(w, &last);
	atomic_store_explicit(&w->loop_over, true, memory_order_release);
	/* The loop has stopped (or failed), and with loop_over set on_wake re-arms no more.
	 * Cancel the wake read if it is still armed and run the loop until its final is in (a
	 * stopped loop's run_once would return without waiting for it). */
	if (loop_op_armed(&w->wake_op)) {
		loop_cancel(&loop, &w->wake_op);
		loop_set_stop(&loop, false);
		for (int i = 0; i < 100 && loop_op_armed(&w->wake_op); i++)
			loop_run_once(&loop, 10);
	}
	loop_timer_stop(&loop, &w->wake_retry);
	echo_server_fini(&srv);
	counters_of(&final, &srv, &loop); /* after fini: its closes are counted too */
out_loop:
	loop_fini(&loop);
out:
	/* The listeners this worker never handed to its echo server are still its own to close;
	 * the other workers' dups keep the socket listening. */
	for (int i = 0; i < w->nfds; i++) {
		if (w->fds[i] >= 0)
			close(w->fds[i]);
		w->fds[i] = -1;
	}
	publish(w, &final);
	w->status = rc;
	atomic_store_explicit(&w->loop_over, true, memory_order_release);
	atomic_store_explicit(&w->exited, true, memory_order_release);
	notify_main(w);
	return NULL;
}

bool worker_exited(struct worker *w)
{
	return atomic_load_explicit(&w->exited, memory_order_acquire);
}

bool worker_loop_over(struct worker *w)
{
	return atomic_load_explicit(&w->loop_over, memory_order_acquire);
}

void worker_ask(struct worker *w, unsigned req)
{
	if (worker_exited(w))
		return;
	/* The bits before the wake: a worker woken by an earlier write may take them early, and
	 * the wake this write causes then finds nothing, which is harmless. */
	atomic_fetch_or(&w->requests, req);
	uint64_t one = 1;
	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg(LOG_WARN, "wake_failed", "worker=%d error=\"%s\"", w->index, strerror(errno));
}

int workers_collect(struct worker *ws, unsigned n, unsigned wait_ms,
		    struct workers_snapshot *out)
{
	struct shared *sh = ws[0].sh;
	*out = (struct workers_snapshot){ .n = n, .c = calloc(n, sizeof(*out->c)),
					  .answered = calloc(n, sizeof(*out->answered)) };
	uint64_t *asked = calloc(n, sizeof(*asked));
	if (!out->c || !out->answered || !asked) {
		free(asked);
		workers_snapshot_free(out);
		return -ENOMEM;
	}
	pthread_mutex_lock(&sh->lock);
	for (unsigned i = 0; i < n; i++)
		asked[i] = ws[i].snap_gen;
	pthread_mutex_unlock(&sh->lock);
	for (unsigned i = 0; i < n; i++)
		worker_ask(&ws[i], REQ_STATS);
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	int rc = 0;
	pthread_mutex_lock(&sh->lock);
	for (;;) {
		out->replied = 0;
		for (unsigned i = 0; i < n; i++) {
			out->answered[i] = ws[i].snap_gen != asked[i] || worker_loop_over(&ws[i]);
			out->replied += out->answered[i];
		}
		if (out->replied == n || rc == ETIMEDOUT)
			break;
		rc = pthread_cond_timedwait(&sh->answered, &sh->lock, &until);
	}
	for (unsigned i = 0; i < n; i++)
		out->c[i] = ws[i].snap;
	pthread_mutex_unlock(&sh->lock);
	free(asked);
	return 0;
}

void workers_snapshot_free(struct workers_snapshot *s)
{
	free(s->c);
	free(s->answered);
	s->c = NULL;
	s->answered = NULL;
}

void worker_stats_sum(struct echo_stats *t, const struct echo_stats *s)
{
	t->accepted += s->accepted;
	t->refused_limit += s->refused_limit;
	t->refused_fd += s->refused_fd;
	t->refused_nomem += s->refused_nomem;
	for (int i = 0; i < ECHO_CLOSE_REASONS; i++)
		t->closed_by[i] += s->closed_by[i];
	t->aborted += s->aborted;
	t->idle_closed += s->idle_closed;
	t->bytes_in += s->bytes_in;
	t->bytes_out += s->bytes_out;
	t->spilled_bytes += s->spilled_bytes;
	t->discarded_bytes += s->discarded_bytes;
	t->paused += s->paused;
	t->enobufs += s->enobufs;
	t->accept_backoffs += s->accept_backoffs;
	t->proxy_accepted += s->proxy_accepted;
	t->proxy_rejected += s->proxy_rejected;
	t->proxy_timeouts += s->proxy_timeouts;
	t->conns += s->conns; /* open now: the USR1 line's; 0 in the final counters */
	/* Each worker counts its own peak; the workers peak at different moments, so a sum would
	 * overstate the process's. The busiest worker's peak is what is known. */
	if (s->conns_peak > t->conns_peak)
		t->conns_peak = s->conns_peak;
}

void worker_udp_sum(struct udp_stats *t, const struct udp_stats *s)
{
	t->received += s->received;
	t->echoed += s->echoed;
	t->bytes_in += s->bytes_in;
	t->bytes_out += s->bytes_out;
	t->enobufs += s->enobufs;
	for (int i = 0; i < UDP_DROP_REASONS; i++)
		t->dropped[i] += s->dropped[i];
}

void worker_udp_format(char *out, size_t len, const struct udp_stats *s)
{
	int n = snprintf(out, len, "udp_received=%llu udp_echoed=%llu udp_bytes_in=%llu "
			 "udp_bytes_out=%llu udp_enobufs=%llu", (unsigned long long)s->received,
			 (unsigned long long)s->echoed, (unsigned long long)s->bytes_in,
			 (unsigned long long)s->bytes_out, (unsigned long long)s->enobufs);
	for (int i = 0; i < UDP_DROP_REASONS && n > 0 && (size_t)n < len; i++)
		n += snprintf(out + n, len - (size_t)n, " udp_dropped_%s=%llu",
			      udp_drop_reason_names[i], (unsigned long long)s->dropped[i]);
}

void worker_stats_format(char *out, size_t len, const struct echo_stats *s)
{
	snprintf(out, len, "accepted=%llu refused_limit=%llu refused_fd=%llu refused_nomem=%llu "
		 "closed=%llu closed_eof=%llu closed_reset=%llu closed_idle=%llu closed_drain=%llu "
		 "closed_error=%llu closed_nomem=%llu "
		 "aborted=%llu idle_closed=%llu bytes_in=%llu bytes_out=%llu spilled_bytes=%llu "
		 "discarded_bytes=%llu paused=%llu enobufs=%llu accept_backoffs=%llu "
		 "proxy_accepted=%llu proxy_rejected=%llu proxy_timeouts=%llu worker_conns_peak=%u",
		 (unsigned long long)s->accepted, (unsigned long long)s->refused_limit,
		 (unsigned long long)s->refused_fd, (unsigned long long)s->refused_nomem,
		 (unsigned long long)echo_stats_closed(s),
		 (unsigned long long)s->closed_by[ECHO_CLOSE_EOF],
		 (unsigned long long)s->closed_by[ECHO_CLOSE_RESET],
		 (unsigned long long)s->closed_by[ECHO_CLOSE_IDLE],
		 (unsigned long long)s->closed_by[ECHO_CLOSE_DRAIN],
		 (unsigned long long)s->closed_by[ECHO_CLOSE_ERROR],
		 (unsigned long long)s->closed_by[ECHO_CLOSE_NOMEM],
		 (unsigned long long)s->aborted, (unsigned long long)s->idle_closed,
		 (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
		 (unsigned long long)s->spilled_bytes, (unsigned long long)s->discarded_bytes,
		 (unsigned long long)s->paused, (unsigned long long)s->enobufs,
		 (unsigned long long)s->accept_backoffs, (unsigned long long)s->proxy_accepted,
		 (unsigned long long)s->proxy_rejected, (unsigned long long)s->proxy_timeouts,
		 s->conns_peak);
}
