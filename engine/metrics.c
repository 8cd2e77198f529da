/* metrics.c - what the metrics port says: the Prometheus exposition of every worker's
 * counters, and the health and readiness answers (metrics_http.c serves them).
 *
 * Counters cost the data path one plain add each: a worker's loop owns them and copies them out
 * only when asked (workers_collect, worker.c), in its own thread. So a scrape asks every worker
 * and waits for the answers, bounded; a worker that cannot answer within that time is not
 * running its loop, which is exactly what /healthz must report. Families are labelled by
 * worker="N", so imbalance between workers shows; process-wide facts (build, start time,
 * draining) have no worker label.
 */
#include "metrics.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* How long a scrape or a health check waits for a worker's answer. A loop answers within one
 * iteration; a second is far beyond any healthy one, and well inside Prometheus's 10 s. */
#define ANSWER_WAIT_MS 1000

/* The exposition is built with plain appends, not printf: a scrape formats a few hundred numbers,
 * and printf's generality made it most of a scrape's cost (bench/instructions --metrics). */
struct out {
	char *p;
	size_t len, cap;
	bool oom;
};

static void put_n(struct out *o, const char *s, size_t n)
{
	if (o->oom)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 16384;
		while (cap < o->len + n + 1)
			cap *= 2;
		char *p = realloc(o->p, cap);
		if (!p) {
			o->oom = true;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void put(struct out *o, const char *s)
{
	put_n(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
	char b[24];
	size_t i = sizeof(b);
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put_n(o, b + i, sizeof(b) - i);
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP ");
	put(o, name);
	put(o, " ");
	put(o, help);
	put(o, "\n# TYPE ");
	put(o, name);
	put(o, " ");
	put(o, type);
	put(o, "\n");
}

/* name{worker="w"[,key="val"]} v */
static void sample(struct out *o, const char *name, unsigned w, const char *key,
		   const char *val, uint64_t v)
{
	put(o, name);
	put(o, "{worker=\"");
	put_u64(o, w);
	if (key) {
		put(o, "\",");
		put(o, key);
		put(o, "=\"");
		put(o, val);
	}
	put(o, "\"} ");
	put_u64(o, v);
	put(o, "\n");
}

/* A process-wide value: no labels. */
static void single(struct out *o, const char *name, uint64_t v)
{
	put(o, name);
	put(o, " ");
	put_u64(o, v);
	put(o, "\n");
}

/* Offsets into struct echo_stats of the per-worker families with no other label. */
struct simple {
	const char *name, *type, *help;
	size_t off;
	bool u32;
};

#define U64(field) offsetof(struct echo_stats, field), false
#define U32(field) offsetof(struct echo_stats, field), true

static const struct simple simple_families[] = {
	{ "echod_connections_active", "gauge", "Open connections.", U32(conns) },
	{ "echod_connections_accepted_total", "counter",
	  "Connections accepted and served (refused ones are not counted here).", U64(accepted) },
	{ "echod_bytes_received_total", "counter", "Bytes received from clients.", U64(bytes_in) },
	{ "echod_bytes_sent_total", "counter", "Bytes echoed back to clients.", U64(bytes_out) },
	{ "echod_spilled_bytes_total", "counter",
	  "Bytes copied into a connection's own spill buffer because its peer was not reading.",
	  U64(spilled_bytes) },
	{ "echod_discarded_bytes_total", "counter",
	  "Bytes read and dropped after echod half-closed a connection in a drain.",
	  U64(discarded_bytes) },
	{ "echod_recv_paused_total", "counter",
	  "Times a connection stopped receiving because --conn-buffer bytes were queued.",
	  U64(paused) },
	{ "echod_recv_nobufs_total", "counter", "Receives that found the buffer pool empty.",
	  U64(enobufs) },
	{ "echod_accept_backoffs_total", "counter",
	  "Times accepting paused after an error such as running out of file descriptors.",
	  U64(accept_backoffs) },
	{ "echod_connections_aborted_total", "counter",
	  "Connections closed before their echo was complete (reset, error, idle, cut).",
	  U64(aborted) },
};

static uint64_t field(const struct echo_stats *s, const struct simple *d)
{
	const char *p = (const char *)s + d->off;
	if (d->u32)
		return *(const uint32_t *)(const void *)p;
	return *(const uint64_t *)(const void *)p;
}

static void render_to(struct out *o, const struct metrics_view *v, const struct workers_snapshot *c)
{
	family(o, "echod_build_info", "gauge", "Version and backend of this echod; always 1.");
	put(o, "echod_build_info{version=\"" ECHOD_VERSION "\",backend=\"");
	put(o, v->backend);
	put(o, "\"} 1\n");
	family(o, "process_start_time_seconds", "gauge",
	       "Start time of the process since the Unix epoch, in seconds.");
	char t[48];
	snprintf(t, sizeof(t), "process_start_time_seconds %.3f\n", v->start_time);
	put(o, t);
	family(o, "echod_draining", "gauge",
	       "1 from the first SIGTERM/SIGINT on (no new connections), else 0.");
	single(o, "echod_draining", atomic_load(&v->sh->draining));
	family(o, "echod_workers", "gauge", "Worker loops.");
	single(o, "echod_workers", c->n);
	family(o, "echod_workers_answering", "gauge",
	       "Worker loops that answered this scrape within a second (the others' counters are "
	       "the last they gave).");
	single(o, "echod_workers_answering", c->replied);

	for (size_t d = 0; d < sizeof(simple_families) / sizeof(simple_families[0]); d++) {
		const struct simple *s = &simple_families[d];
		family(o, s->name, s->type, s->help);
		for (unsigned w = 0; w < c->n; w++)
			sample(o, s->name, w, NULL, NULL, field(&c->c[w].echo, s));
	}
	family(o, "echod_buffers", "gauge", "Buffers in the worker's pool.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_buffers", w, NULL, NULL, c->c[w].buffers);
	family(o, "echod_buffers_in_use", "gauge", "Pool buffers holding queued bytes.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_buffers_in_use", w, NULL, NULL, c->c[w].buffers_held);

	family(o, "echod_connections_closed_total", "counter",
	       "Connections closed, by reason: eof (the client half-closed and got its echo), "
	       "reset (by the client), idle (--idle-timeout), drain (echod's stop), error.");
	for (unsigned w = 0; w < c->n; w++)
		for (int r = 0; r < ECHO_CLOSE_REASONS; r++)
			sample(o, "echod_connections_closed_total", w, "reason",
			       echo_close_reason_names[r], c->c[w].echo.closed_by[r]);

	family(o, "echod_connections_refused_total", "counter",
	       "Connections accepted and reset at once, by reason: max_conns (--max-conns), "
	       "fd_limit (the backend cannot watch the fd), out_of_memory.");
	for (unsigned w = 0; w < c->n; w++) {
		const struct echo_stats *s = &c->c[w].echo;
		const char *name = "echod_connections_refused_total";
		sample(o, name, w, "reason", "max_conns", s->refused_limit);
		sample(o, name, w, "reason", "fd_limit", s->refused_fd);
		sample(o, name, w, "reason", "out_of_memory", s->refused_nomem);
	}

	family(o, "echod_proxy_headers_total", "counter",
	       "--proxy-protocol: connections by what their header did: accepted, rejected "
	       "(malformed, oversized, or the connection closed first), timeout (none within 5 s).");
	for (unsigned w = 0; w < c->n; w++) {
		const struct echo_stats *s = &c->c[w].echo;
		const char *name = "echod_proxy_headers_total";
		sample(o, name, w, "result", "accepted", s->proxy_accepted);
		sample(o, name, w, "result", "rejected", s->proxy_rejected);
		sample(o, name, w, "result", "timeout", s->proxy_timeouts);
	}

	family(o, "echod_udp_datagrams_received_total", "counter", "UDP datagrams received.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_udp_datagrams_received_total", w, NULL, NULL, c->c[w].udp.received);
	family(o, "echod_udp_datagrams_echoed_total", "counter", "UDP datagrams sent back.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_udp_datagrams_echoed_total", w, NULL, NULL, c->c[w].udp.echoed);
	family(o, "echod_udp_received_bytes_total", "counter", "UDP payload bytes received.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_udp_received_bytes_total", w, NULL, NULL, c->c[w].udp.bytes_in);
	family(o, "echod_udp_sent_bytes_total", "counter", "UDP payload bytes sent back.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_udp_sent_bytes_total", w, NULL, NULL, c->c[w].udp.bytes_out);
	family(o, "echod_udp_datagrams_dropped_total", "counter",
	       "UDP datagrams not echoed, by reason: truncated (larger than a buffer), source_port "
	       "(from port 0-1023 or 2049), broadcast (or multicast source), rate (--udp-rate), "
	       "send_buffer (the socket's send buffer was full), send_error.");
	for (unsigned w = 0; w < c->n; w++)
		for (int r = 0; r < UDP_DROP_REASONS; r++)
			sample(o, "echod_udp_datagrams_dropped_total", w, "reason",
			       udp_drop_reason_names[r], c->c[w].udp.dropped[r]);

	family(o, "echod_loop_wakeups_total", "counter", "Returns from the backend's wait.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_loop_wakeups_total", w, NULL, NULL, c->c[w].loop.wakeups);
	family(o, "echod_completions_total", "counter",
	       "Operations completed (accepts, receives, sends, reads), as the echo core saw them.");
	for (unsigned w = 0; w < c->n; w++)
		sample(o, "echod_completions_total", w, NULL, NULL, c->c[w].loop.completions);
	family(o, "echod_syscalls_total", "counter",
	       "System calls the worker's loop made, by call, counted where they are issued.");
	for (unsigned w = 0; w < c->n; w++)
		for (int k = 0; k < SC_COUNT; k++)
			sample(o, "echod_syscalls_total", w, "call", loop_syscall_names[k],
			       c->c[w].loop.syscalls[k]);
}

char *metrics_render(const struct metrics_view *v, size_t *len)
{
	struct workers_snapshot c;
	if (workers_collect(v->ws, v->n, ANSWER_WAIT_MS, &c) < 0)
		return NULL;
	struct out o = { 0 };
	render_to(&o, v, &c);
	workers_snapshot_free(&c);
	if (o.oom) {
		free(o.p);
		return NULL;
	}
	*len = o.len;
	return o.p;
}

static char *render_cb(void *arg, size_t *len)
{
	return metrics_render(arg, len);
}

/* Every worker's loop is running and answers. During a drain that is still true: the process
 * is alive and finishing its work; only /readyz turns. */
bool metrics_healthy(const struct metrics_view *v, char *msg, size_t len)
{
	struct workers_snapshot c;
	if (workers_collect(v->ws, v->n, ANSWER_WAIT_MS, &c) < 0) {
		snprintf(msg, len, "out of memory\n");
		return false;
	}
	/* A worker that has finished its part of a drain is done, not failed: /healthz stays 200
	 * until the process exits. One whose loop ended before any stop, or with an error,
	 * failed. */
	bool stopping = atomic_load(&v->sh->draining);
	unsigned exited = 0, silent = 0;
	for (unsigned i = 0; i < c.n; i++) {
		struct worker *w = &v->ws[i];
		if (worker_loop_over(w))
			exited += !stopping || (worker_exited(w) && w->status < 0);
		else if (!c.answered[i])
			silent++;
	}
	workers_snapshot_free(&c);
	if (exited || silent) {
		snprintf(msg, len, "not ok: %u of %u workers failed, %u not answering\n", exited, c.n,
			 silent);
		return false;
	}
	snprintf(msg, len, "ok\n");
	return true;
}

static bool healthy_cb(void *arg, char *msg, size_t len)
{
	return metrics_healthy(arg, msg, len);
}

/* Listening and accepting: every worker has its listeners armed and no stop has begun. */
bool metrics_ready(const struct metrics_view *v, char *msg, size_t len)
{
	if (atomic_load(&v->sh->draining)) {
		snprintf(msg, len, "draining\n");
		return false;
	}
	unsigned listening = atomic_load(&v->sh->listening);
	if (listening < v->n) {
		snprintf(msg, len, "starting: %u of %u workers listening\n", listening, v->n);
		return false;
	}
	snprintf(msg, len, "ready\n");
	return true;
}

static bool ready_cb(void *arg, char *msg, size_t len)
{
	return metrics_ready(arg, msg, len);
}

int metrics_start(struct metrics_http **out, struct metrics_view *v, const int *fds, int n)
{
	struct metrics_handler h = { .render = render_cb, .healthy = healthy_cb,
				     .ready = ready_cb, .arg = v };
	return metrics_http_start(out, fds, n, &h);
}
