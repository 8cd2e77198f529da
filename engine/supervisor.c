/* supervisor.c - the main thread once the workers run.
 *
 * Signals. Every signal echod handles is blocked in every thread (the mask is set before the
 * workers start, and they inherit it) and taken by the main thread with sigtimedwait, so none
 * can kill the process without a drain and none interrupts a worker. Workers tell the main
 * thread they have exited with a signal of their own (pthread_kill, WORKER_NOTIFY_SIG), so one
 * wait hears the operator and the workers, without a polling tick. Requests to a worker go
 * through worker_ask() (worker.c): bits in its atomic `requests`, then a write to its wake
 * eventfd. Counters come back through workers_collect() (one mutex, one condition variable),
 * the same way the metrics thread gets them; whether a worker has exited through an atomic.
 *
 *   TERM, INT  first: /readyz turns 503; after --drain-grace (0 by default: at once), during
 *              which echod serves and accepts as before so a load balancer can move new
 *              connections elsewhere while the open ones finish, the graceful drain, bounded by
 *              --drain-timeout. Second: cut what is left and stop now (nginx and HAProxy do the
 *              same). Later ones are logged and ignored.
 *   HUP        logged and ignored: there is no configuration to reload.
 *   USR1       one event=stats line with the process's counters, each worker's taken by that
 *              worker in its own thread.
 *   USR2, ALRM, PROF  logged and ignored: echod uses none, and none should kill a server
 *              without its drain.
 *
 * Watchdog: the workers must be gone --drain-grace + --drain-timeout + 2 s after the first
 * TERM/INT (2 s after a cut). If one is not, the main thread logs which and ends the process with status 1.
 *
 * The service manager, when there is one (NOTIFY_SOCKET): READY=1 once every worker listens
 * (each tells the main thread with WORKER_NOTIFY_SIG), STOPPING=1 at the first TERM/INT, and
 * every few seconds STATUS= with the open connections; with WATCHDOG_USEC set, WATCHDOG=1 at
 * half that interval, sent only when every worker has answered within a second, so a stuck
 * loop (not just a live main thread) makes systemd restart echod.
 */
#include "supervisor.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* After the drain deadline, what the workers are allowed to take to close what is left. A
 * worker still running then is stuck (a bug or a stalled system call), not draining. */
#define WATCHDOG_MARGIN_MS 2000
/* How long the USR1 line waits for busy workers' counters before it is logged without them. */
#define STATS_WAIT_MS 1000
/* STATUS= this often without a watchdog (with one: at half its interval). */
#define NOTIFY_STATUS_MS 5000

/* The signals echod takes, all waited for by the main thread (see the top comment). */
static const struct {
	int sig;
	const char *name;
} signals[] = {
	{ SIGTERM, "TERM" }, { SIGINT, "INT" },   { SIGHUP, "HUP" },   { SIGUSR1, "USR1" },
	{ SIGUSR2, "USR2" }, { SIGALRM, "ALRM" }, { SIGPROF, "PROF" },
};

const char *supervisor_signal_name(int sig)
{
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (signals[i].sig == sig)
			return signals[i].name;
	return "?";
}

void supervisor_signals(sigset_t *set)
{
	sigemptyset(set);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		sigaddset(set, signals[i].sig);
	sigaddset(set, WORKER_NOTIFY_SIG);
}

static void ask_all(struct supervisor *sv, unsigned req)
{
	for (unsigned i = 0; i < sv->n; i++)
		worker_ask(&sv->ws[i], req);
}

/* The drain proper: the workers close their listeners and finish their connections. */
static void begin_drain(struct supervisor *sv)
{
	sv->grace_end_ms = 0;
	ask_all(sv, REQ_STOP);
	sv->deadline_ms = loop_clock_ms() + sv->cfg->drain_timeout_ms + WATCHDOG_MARGIN_MS;
}

void supervisor_begin_stop(struct supervisor *sv, int sig)
{
	sv->stop_sig = sig;
	/* Before the workers hear of it: /readyz turns 503 no later than the listeners close. */
	atomic_store(&sv->sh->draining, true);
	/* A worker that failed gets no grace: the process is already not what it was. */
	uint32_t grace = sig > 0 ? sv->cfg->drain_grace_ms : 0;
	log_msg(LOG_INFO, "stopping", "signal=%s drain_grace_ms=%u drain_timeout_ms=%u",
		sig > 0 ? supervisor_signal_name(sig) : "none", grace, sv->cfg->drain_timeout_ms);
	sdnotify_send(sv->notify, "STOPPING=1\nSTATUS=draining (signal %s)",
		      sig > 0 ? supervisor_signal_name(sig) : "none: a worker failed");
	sv->stop_ms = loop_clock_ms();
	if (grace) {
		/* 0 means no grace pending, so a clock at 0 cannot be mistaken for one. */
		sv->grace_end_ms = sv->stop_ms + grace;
		sv->deadline_ms = sv->grace_end_ms + sv->cfg->drain_timeout_ms + WATCHDOG_MARGIN_MS;
	} else {
		begin_drain(sv);
	}
}

/* The second TERM/INT: whoever sends it wants the process gone now, not after the drain. The
 * line saying how many connections were cut comes once the workers have counted them. */
static void begin_cut(struct supervisor *sv, int sig)
{
	sv->cut_sig = sig;
	sv->grace_end_ms = 0;
	ask_all(sv, REQ_CUT);
	/* A cut takes no time: a worker still there 2 s later is stuck, not draining. */
	uint64_t deadline = loop_clock_ms() + WATCHDOG_MARGIN_MS;
	if (deadline < sv->deadline_ms)
		sv->deadline_ms = deadline;
}

/* USR1: each worker copies its own counters in its own thread (no other thread may read them
 * while it runs) and the main thread sums them into one line. A worker busy for a second does
 * not hold the line back: it is logged with the answers there are, and workers_replied says
 * the sum is partial. Signals that arrive meanwhile wait, blocked, for the next turn. */
static void stats_log(struct supervisor *sv)
{
	struct workers_snapshot got;
	if (workers_collect(sv->ws, sv->n, STATS_WAIT_MS, &got) < 0) {
		log_msg(LOG_WARN, "stats", "signal=USR1 msg=\"out of memory\"");
		return;
	}
	struct echo_stats total = { 0 };
	struct udp_stats udp = { 0 };
	uint64_t wakeups = 0, completions = 0, syscalls = 0, held = 0;
	for (unsigned i = 0; i < got.n; i++) {
		if (!got.answered[i])
			continue;
		const struct worker_counters *c = &got.c[i];
		worker_stats_sum(&total, &c->echo);
		worker_udp_sum(&udp, &c->udp);
		held += c->buffers_held;
		wakeups += c->loop.wakeups;
		completions += c->loop.completions;
		for (int k = 0; k < SC_COUNT; k++)
			syscalls += c->loop.syscalls[k];
	}
	unsigned replied = got.replied;
	workers_snapshot_free(&got);
	char line[1024], uline[512];
	worker_stats_format(line, sizeof(line), &total);
	worker_udp_format(uline, sizeof(uline), &udp);
	log_msg(replied < sv->n ? LOG_WARN : LOG_INFO, "stats",
		"signal=USR1 conns=%u workers=%u workers_replied=%u %s %s buffers_in_use=%llu "
		"wakeups=%llu completions=%llu syscalls=%llu", total.conns, sv->n, replied, line,
		uline, (unsigned long long)held, (unsigned long long)wakeups,
		(unsigned long long)completions, (unsigned long long)syscalls);
}

static void on_signal(struct supervisor *sv, const siginfo_t *si)
{
	int sig = si->si_signo;
	const char *name = supervisor_signal_name(sig);
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (!sv->stop_sig)
			supervisor_begin_stop(sv, sig);
		else if (!sv->cut_sig)
			begin_cut(sv, sig);
		else
			log_msg(LOG_INFO, "signal", "signal=%s sender_pid=%u action=ignored "
				"msg=\"already stopping now\"", name, (unsigned)si->si_pid);
		break;
	case SIGHUP:
		/* The conventional reload (and what logrotate sends): echod reads no file and logs
		 * to stderr, so there is nothing to reload or reopen. */
		log_msg(LOG_INFO, "signal", "signal=HUP sender_pid=%u action=ignored "
			"msg=\"no configuration to reload\"", (unsigned)si->si_pid);
		break;
	case SIGUSR1:
		stats_log(sv);
		break;
	default:
		/* USR2, ALRM, PROF: their default action kills the process without a drain, and
		 * echod uses none of them, so one sent by mistake is said and survived. */
		log_msg(LOG_WARN, "signal", "signal=%s sender_pid=%u action=ignored "
			"msg=\"echod does not use it\"", name, (unsigned)si->si_pid);
		break;
	}
}

/* Workers still running when the stop should long be over. The process ends with _exit: exit()
 * would run atexit handlers and flush stdio under threads that may hold their locks. */
static _Noreturn void watchdog_fire(struct supervisor *sv)
{
	char list[512];
	size_t used = 0;
	unsigned stuck = 0;
	list[0] = '\0';
	for (unsigned i = 0; i < sv->n; i++) {
		if (worker_exited(&sv->ws[i]))
			continue;
		stuck++;
		if (used < sizeof(list) - 16) {
			int k = snprintf(list + used, sizeof(list) - used, "%s%u", used ? "," : "", i);
			if (k > 0)
				used += (size_t)k;
		} else if (list[used - 1] != '.') {
			snprintf(list + used, sizeof(list) - used, ",...");
			used += 4;
		}
	}
	log_msg(LOG_ERROR, "watchdog", "stuck_workers=%s stuck=%u workers=%u waited_ms=%llu cut=%s "
		"msg=\"workers did not finish the stop in time (--drain-timeout + 2 s, or 2 s after "
		"a cut); exiting without them\"", list, stuck, sv->n,
		(unsigned long long)(loop_clock_ms() - sv->stop_ms), sv->cut_sig ? "yes" : "no");
	/* Those that did finish are joined, so a thread sanitizer reports no leak; but never
	 * waited for: a thread still on its way out can block there on a lock the stuck worker
	 * holds (seen under ASan: its allocator's), and the watchdog must end the process. */
	for (unsigned i = 0; i < sv->n; i++)
		if (worker_exited(&sv->ws[i]))
			(void)pthread_tryjoin_np(sv->ws[i].thread, NULL);
	_exit(1);
}

/* Half the watchdog's interval (at least 1 ms), or NOTIFY_STATUS_MS if that is sooner. */
static uint64_t notify_every_ms(const struct supervisor *sv)
{
	uint64_t wd = sv->notify->watchdog_ms;
	uint64_t half = wd ? (wd / 2 ? wd / 2 : 1) : NOTIFY_STATUS_MS;
	return half < NOTIFY_STATUS_MS ? half : NOTIFY_STATUS_MS;
}

/* READY=1 once every worker listens; then STATUS= (and WATCHDOG=1) on schedule. */
static void notify_tick(struct supervisor *sv, uint64_t now)
{
	if (!sdnotify_enabled(sv->notify))
		return;
	if (!sv->ready_sent) {
		if (sv->stop_sig || atomic_load(&sv->sh->listening) < sv->n)
			return;
		sdnotify_send(sv->notify, "READY=1\nSTATUS=serving: backend=%s workers=%u",
			      sv->backend, sv->n);
		sv->ready_sent = true;
		sv->next_notify_ms = now + notify_every_ms(sv);
		return;
	}
	if (now < sv->next_notify_ms)
		return;
	struct workers_snapshot got;
	if (workers_collect(sv->ws, sv->n, STATS_WAIT_MS, &got) == 0) {
		uint32_t conns = 0;
		for (unsigned i = 0; i < got.n; i++)
			conns += got.c[i].echo.conns;
		bool all = got.replied == got.n;
		sdnotify_send(sv->notify, "%sSTATUS=%s: backend=%s workers=%u answering=%u conns=%u",
			      all && sv->notify->watchdog_ms ? "WATCHDOG=1\n" : "",
			      sv->stop_sig ? "draining" : "serving", sv->backend, got.n, got.replied,
			      conns);
		workers_snapshot_free(&got);
	}
	sv->next_notify_ms = loop_clock_ms() + notify_every_ms(sv);
}

static int ms_until(uint64_t now, uint64_t when)
{
	if (when <= now)
		return 0;
	return when - now > INT_MAX ? INT_MAX : (int)(when - now);
}

/* The main thread's loop until the last worker has exited: signals, worker exits, the USR1
 * line, the watchdog. It sleeps in sigtimedwait until one of them has something to say. */
void supervise(struct supervisor *sv)
{
	sigset_t set;
	supervisor_signals(&set);
	for (;;) {
		unsigned exited = 0;
		for (unsigned i = 0; i < sv->n; i++)
			exited += worker_exited(&sv->ws[i]);
		if (exited && !sv->stop_sig)
			supervisor_begin_stop(sv, -1); /* a worker failed on its own: stop the rest */
		else if (exited && sv->grace_end_ms)
			begin_drain(sv); /* ... also during a grace */
		if (exited == sv->n)
			return;
		uint64_t now = loop_clock_ms();
		int timeout = -1;
		if (sv->grace_end_ms && now >= sv->grace_end_ms) {
			log_msg(LOG_INFO, "drain", "msg=\"grace over: closing listeners, finishing "
				"connections\"");
			begin_drain(sv);
		}
		if (sv->stop_sig) {
			if (now >= sv->deadline_ms)
				watchdog_fire(sv);
			timeout = ms_until(now, sv->grace_end_ms ? sv->grace_end_ms : sv->deadline_ms);
		}
		notify_tick(sv, now);
		if (sv->ready_sent) {
			int t = ms_until(loop_clock_ms(), sv->next_notify_ms);
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
		struct timespec ts = { .tv_sec = timeout / 1000,
				       .tv_nsec = (long)(timeout % 1000) * 1000000 };
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, timeout < 0 ? NULL : &ts);
		if (sig == WORKER_NOTIFY_SIG)
			continue; /* the checks above see what changed */
		if (sig > 0) {
			on_signal(sv, &si);
		} else if (errno != EAGAIN && errno != EINTR) {
			/* Cannot happen with a valid set; do not spin if it does. The watchdog still
			 * bounds a stop, since the deadline is checked above on every turn. */
			log_msg(LOG_ERROR, "sigwait_failed", "error=\"%s\"", strerror(errno));
			struct timespec pause = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
			nanosleep(&pause, NULL);
		}
	}
}
