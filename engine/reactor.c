/* reactor.c - the loop: deferred completions, timers, cancel, and backend selection.
 *
 * What a backend does not have to do lives here once: bookkeeping of an op's armed state,
 * the queue of completions found inside submit/cancel (run before the next wait, so callbacks
 * never re-enter the caller), and a handful of timers (the core needs only a few: the idle
 * sweep, accept back-off, drain deadline), kept in a small array rather than a heap.
 */
#include "reactor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CANCEL_RETRY_MS 1

const char *const loop_syscall_names[SC_COUNT] = {
	[SC_ACCEPT] = "accept4",	   [SC_RECV] = "recv",
	[SC_SEND] = "send",		   [SC_READ] = "read",
	[SC_CLOSE] = "close",		   [SC_SHUTDOWN] = "shutdown",
	[SC_IOCTL] = "ioctl",		   [SC_SETSOCKOPT] = "setsockopt",
	[SC_RECVMMSG] = "recvmmsg",	   [SC_SENDMMSG] = "sendmmsg",
	[SC_RECVMSG] = "recvmsg",	   [SC_SENDMSG] = "sendmsg",
	[SC_SELECT] = "select",		   [SC_POLL] = "poll",
	[SC_EPOLL_WAIT] = "epoll_wait",	   [SC_EPOLL_CTL] = "epoll_ctl",
	[SC_IO_URING_ENTER] = "io_uring_enter",
};

uint64_t loop_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const struct backend *backend_find(const char *name)
{
	for (size_t i = 0; i < backend_count; i++)
		if (strcmp(backend_table[i]->name, name) == 0)
			return backend_table[i];
	return NULL;
}

int loop_init(struct loop *loop, const struct backend *be, const struct loop_config *cfg)
{
	memset(loop, 0, sizeof(*loop));
	int rc = bufpool_init(&loop->pool, cfg->nbufs, cfg->bufsize);
	if (rc < 0)
		return rc;
	if (cfg->dgram_nbufs) {
		rc = cfg->dgram_bufsize > LOOP_DGRAM_HEADROOM
			     ? bufpool_init(&loop->dgram_pool, cfg->dgram_nbufs, cfg->dgram_bufsize)
			     : -EINVAL;
		if (rc < 0) {
			bufpool_fini(&loop->pool);
			return rc;
		}
	}
	loop->be = be;
	loop->now_ms = loop_clock_ms();
	rc = be->init(loop, cfg);
	if (rc < 0) {
		bufpool_fini(&loop->dgram_pool);
		bufpool_fini(&loop->pool);
		loop->be = NULL;
	}
	return rc;
}

int loop_init_auto(struct loop *loop, const struct loop_config *cfg, char *why, size_t len)
{
	size_t used = 0;
	if (len)
		why[0] = '\0';
	for (size_t i = 0; i < backend_count; i++) {
		int rc = loop_init(loop, backend_table[i], cfg);
		if (rc == 0)
			return 0;
		if (used < len) {
			int n = snprintf(why + used, len - used, "%s%s: %s", used ? "; " : "",
					 backend_table[i]->name, strerror(-rc));
			if (n > 0)
				used += (size_t)n;
		}
	}
	return -ENODEV;
}

void loop_fini(struct loop *loop)
{
	if (loop->be)
		loop->be->fini(loop);
	bufpool_fini(&loop->dgram_pool);
	bufpool_fini(&loop->pool);
	loop->be = NULL;
}

/* A callback that starts a timer or stamps activity must see the time the loop woke up, not
 * the time it went to sleep: after an idle wait the difference is the whole idle period. So
 * the clock is read once per wake-up, by the first completion or else after the wait. */
static __attribute__((noinline)) void clock_read(struct loop *loop)
{
	loop->now_ms = loop_clock_ms();
	loop->clock_stale = false;
}

/* Inline and light: loop_complete runs it once per completion, and reads the clock once. */
static inline void clock_refresh(struct loop *loop)
{
	if (loop->clock_stale)
		clock_read(loop);
}

void loop_clock_refresh(struct loop *loop)
{
	clock_refresh(loop);
}

static __attribute__((noinline)) void cancel_unqueue(struct loop *loop, struct op *op);

/* loop_complete's long way (reactor.h): the first completion after a wait reads the clock, and
 * a final one with a cancel still queued takes it off the queue. */
void loop_complete_slow(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	clock_refresh(loop);
	if (!(cflags & OPF_MORE)) {
		op->armed = false;
		if (op->cancel_queued)
			cancel_unqueue(loop, op);
	}
	op->done(loop, op, res, cflags);
}

void loop_defer(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	op->res = res;
	op->cflags = cflags;
	op->next_deferred = NULL;
	if (loop->deferred_tail)
		loop->deferred_tail->next_deferred = op;
	else
		loop->deferred_head = op;
	loop->deferred_tail = op;
}

/* Completions queued while running these go to a fresh list and run next iteration, so a
 * callback that keeps submitting cannot starve the wait. */
static void run_deferred(struct loop *loop)
{
	struct op *op = loop->deferred_head;
	loop->deferred_head = loop->deferred_tail = NULL;
	while (op) {
		struct op *next = op->next_deferred;
		loop_complete(loop, op, op->res, op->cflags);
		op = next;
	}
}

/* A cancel the backend could not issue now (io_uring: no SQE free) is queued and issued again
 * every iteration until it goes through: a caller that cancels and waits for the final
 * completion (a closing connection whose peer does not read) must never wait forever. */
int loop_cancel(struct loop *loop, struct op *op)
{
	if (!op->armed || op->cancelling)
		return 0;
	op->cancelling = true;
	if (loop->be->cancel(loop, op) < 0 && !op->cancel_queued) {
		op->cancel_queued = true;
		op->next_cancel = loop->cancels_pending;
		loop->cancels_pending = op;
	}
	return 0;
}

static void retry_cancels(struct loop *loop)
{
	struct op **p = &loop->cancels_pending;
	while (*p) {
		struct op *op = *p;
		if (loop->be->cancel(loop, op) == 0) {
			*p = op->next_cancel;
			op->cancel_queued = false;
		} else {
			p = &op->next_cancel;
		}
	}
}

/* A final completion takes its op off the pending cancels: the caller may free it now. Out
 * of line: it is rare, and loop_complete runs once per completion. */
static __attribute__((noinline)) void cancel_unqueue(struct loop *loop, struct op *op)
{
	for (struct op **p = &loop->cancels_pending; *p; p = &(*p)->next_cancel) {
		if (*p == op) {
			*p = op->next_cancel;
			break;
		}
	}
	op->cancel_queued = false;
}

int loop_close_fd(struct loop *loop, int fd)
{
	if (loop->be->forget_fd)
		loop->be->forget_fd(loop, fd);
	if (loop->be->close_fd)
		return loop->be->close_fd(loop, fd);
	loop_count(loop, SC_CLOSE);
	return close(fd) < 0 ? -errno : 0;
}

void loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t after_ms)
{
	if (t->deadline_ms == 0) {
		if (loop->ntimers == LOOP_MAX_TIMERS)
			return; /* the core uses a fixed handful; this is a programming error */
		t->slot = loop->ntimers;
		loop->timers[loop->ntimers++] = t;
	}
	t->deadline_ms = loop->now_ms + after_ms;
	if (t->deadline_ms == 0)
		t->deadline_ms = 1;
}

void loop_timer_stop(struct loop *loop, struct loop_timer *t)
{
	if (t->deadline_ms == 0)
		return;
	struct loop_timer *last = loop->timers[--loop->ntimers];
	loop->timers[t->slot] = last;
	last->slot = t->slot;
	t->deadline_ms = 0;
}

static int next_timeout(const struct loop *loop, int max_wait_ms)
{
	int wait = max_wait_ms;
	for (int i = 0; i < loop->ntimers; i++) {
		uint64_t d = loop->timers[i]->deadline_ms;
		int64_t left = d > loop->now_ms ? (int64_t)(d - loop->now_ms) : 0;
		if (wait < 0 || left < wait)
			wait = (int)left;
	}
	return wait;
}

static void fire_timers(struct loop *loop)
{
	for (int i = 0; i < loop->ntimers;) {
		struct loop_timer *t = loop->timers[i];
		if (t->deadline_ms > loop->now_ms) {
			i++;
			continue;
		}
		loop_timer_stop(loop, t); /* moves the last timer into slot i */
		t->fire(loop, t);
	}
}

/* The backend's wait for up to timeout_ms; one that EINTR ends with nothing to show waits
 * out the rest. epoll_wait and io_uring_enter end with EINTR, handler or not, when the thread
 * is stopped and continued (a frozen cgroup, a debugger) or task work runs, where poll and
 * select restart: every backend gives the caller "work, or the timeout" alike. */
static int wait_out(struct loop *loop, int timeout)
{
	uint64_t since = loop->now_ms, done = loop->tally.completions;
	for (;;) {
		loop->clock_stale = true;
		int rc = loop->be->wait(loop, timeout);
		loop->tally.wakeups++;
		if (rc != -EINTR || timeout == 0 || loop->deferred_head || loop->stop ||
		    loop->tally.completions != done)
			return rc;
		if (timeout > 0) {
			clock_refresh(loop);
			uint64_t spent = loop->now_ms - since;
			if (spent >= (uint64_t)timeout)
				return rc;
			timeout -= (int)spent;
			since = loop->now_ms;
		}
	}
}

int loop_run_once(struct loop *loop, int max_wait_ms)
{
	if (loop->deferred_head)
		run_deferred(loop);
	if (loop->stop)
		return 0; /* a completion just finished the loop: do not block in wait */
	if (loop->cancels_pending)
		retry_cancels(loop);
	int timeout = loop->deferred_head ? 0 : next_timeout(loop, max_wait_ms);
	if (loop->cancels_pending && (timeout < 0 || timeout > CANCEL_RETRY_MS))
		timeout = CANCEL_RETRY_MS;
	int rc = wait_out(loop, timeout);
	if (rc < 0 && rc != -EINTR)
		return rc;
	clock_refresh(loop);
	if (loop->ntimers)
		fire_timers(loop);
	return 0;
}

int loop_run(struct loop *loop)
{
	while (!loop->stop) {
		int rc = loop_run_once(loop, -1);
		if (rc < 0)
			return rc;
	}
	return 0;
}
