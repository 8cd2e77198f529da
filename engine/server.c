/* server.c - listeners, worker threads, signals, limits, graceful drain.
 *
 * The main thread checks what can be checked before anything starts (every worker's buffer
 * pool can be mapped, the backend initialises here, select has fds left for connections), so
 * each of those is one clear line on stderr; it binds every listener (a busy port is one line
 * and exit 71), then starts N workers, each with its own loop, buffer pool and echo server.
 * Each --listen address is ONE socket, bound without SO_REUSEPORT, and every worker accepts
 * from its own dup of it: a SO_REUSEPORT group can be joined by any process of the same user (a
 * second echod would start and silently take part of the traffic), one plain socket cannot, so
 * a busy address is exit 71 whatever --threads says. --max-conns counts the whole process:
 * every worker's echo server reserves from one shared atomic count. A loop is created inside
 * its worker thread: io_uring's SINGLE_ISSUER wants that.
 *
 * Signals. Every signal echod handles is blocked in every thread (the mask is set before the
 * workers start, and they inherit it) and read by the main thread from a signalfd, so none can
 * kill the process without a drain and none interrupts a worker. The main thread polls the
 * signalfd and one "notify" eventfd that workers write when they exit or answer a question, so
 * it sees both at once without a polling tick. It talks to a worker by setting bits in the
 * worker's atomic `requests` and then writing the worker's wake eventfd; the worker's loop reads
 * the eventfd and takes all the bits with one exchange, so a request is never lost or doubled
 * whatever the interleaving. What the workers publish for the main thread (their counters) goes
 * through one mutex; whether they have exited through an atomic flag.
 *
 *   TERM, INT  first: graceful drain, bounded by --drain-timeout. Second: cut what is left and
 *              stop now (nginx and HAProxy do the same). Later ones are logged and ignored.
 *   HUP        logged and ignored: there is no configuration to reload.
 *   USR1       one event=stats line with the process's counters, each worker's taken by that
 *              worker in its own thread.
 *   USR2, ALRM, PROF  logged and ignored: echod uses none, and none should kill a server
 *              without its drain.
 *
 * Watchdog: the workers must be gone --drain-timeout + 2 s after the first TERM/INT (2 s after
 * a cut). If one is not, the main thread logs which and ends the process with status 1.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "echo.h"
#include "log.h"
#include "reactor.h"

#define LISTEN_BACKLOG 4096
/* After the drain deadline, what the workers are allowed to take to close what is left. A
 * worker still running then is stuck (a bug or a stalled system call), not draining. */
#define WATCHDOG_MARGIN_MS 2000
/* How long the USR1 line waits for busy workers' counters before it is logged without them. */
#define STATS_WAIT_MS 1000

/* What the main thread asks of a worker (bits of worker.requests). */
#define REQ_STOP  0x1u /* drain: echo_server_stop() */
#define REQ_CUT   0x2u /* stop now: echo_server_cut() */
#define REQ_STATS 0x4u /* publish the counters */

/* What the main thread and every worker share. */
struct shared {
	_Atomic uint32_t conns_total; /* the process's connections, against --max-conns */
	pthread_mutex_t lock;         /* guards every worker's snap and snap_gen */
	int notify_fd;                /* eventfd: a worker exited or published its counters */
};

struct worker {
	pthread_t thread;
	int index;
	const struct echod_config *cfg;
	const struct backend *be;
	struct shared *sh;
	struct loop_config lcfg;
	int fds[CONFIG_MAX_LISTEN]; /* this worker's own dups of the listeners; -1 once handed on */
	int nfds;
	int wake_fd;
	uint64_t wake_val;
	struct op wake_op;
	_Atomic unsigned requests; /* REQ_* bits, set by the main thread before it writes wake_fd */
	bool ending;               /* worker thread only: its loop is over, on_wake stays quiet */
	/* Under sh->lock: the counters as the worker last published them, and how many times it
	 * has (a USR1 answer, and the final counters at exit). */
	struct echo_stats snap;
	uint64_t snap_gen;
	uint64_t snap_asked; /* main thread only: snap_gen when it last asked */
	/* Written by the worker before it sets `exited`, read by the main thread after. */
	uint32_t cut_conns;  /* connections it still had when it was told to cut */
	int status;          /* 0 ok, else -errno from set-up or the loop */
	atomic_bool exited;
};

static void format_addr(const struct sockaddr *sa, char *out, size_t len)
{
	char host[NI_MAXHOST], port[NI_MAXSERV];
	socklen_t salen = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						    : sizeof(struct sockaddr_in);
	if (getnameinfo(sa, salen, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, len, "?");
		return;
	}
	snprintf(out, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Bind one listening socket to `spec`, without SO_REUSEPORT, so no other socket can bind
 * the address while it is open. Returns the fd or -errno, with the bound address (port 0
 * resolved) or else `spec` in `where`. */
static int listen_on(const char *spec, char *where, size_t wlen)
{
	char host[CONFIG_ADDR_LEN], port[8];
	snprintf(where, wlen, "%s", spec);
	if (config_split_hostport(spec, host, sizeof(host), port, sizeof(port)) < 0)
		return -EINVAL;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai;
	int gai = getaddrinfo(host, port, &hints, &ai);
	if (gai != 0)
		return gai == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	struct sockaddr_storage addr;
	memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
	socklen_t alen = ai->ai_addrlen;
	freeaddrinfo(ai);
	int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	/* SO_REUSEADDR only lets a restart bind past TIME_WAIT connections; it never lets a
	 * second socket bind an address that is listening. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (addr.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&addr, alen) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
	    getsockname(fd, (struct sockaddr *)&addr, &alen) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	format_addr((struct sockaddr *)&addr, where, wlen);
	return fd;
}

/* Give each of the n workers its own fd for the listening socket `fd`: worker 0 the socket
 * itself, the others a dup (one open socket, so one accept queue that every worker's loop takes
 * from). Each worker closes its own through its echo server, so the socket stops listening
 * only when the last worker lets go. Returns 0, or -errno with `fd` and the dups closed. */
static int share_listener(int fd, struct worker *ws, unsigned n)
{
	int fds[256];
	fds[0] = fd;
	for (unsigned i = 1; i < n; i++) {
		fds[i] = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (fds[i] < 0) {
			int err = errno;
			for (unsigned j = 0; j < i; j++)
				close(fds[j]);
			return -err;
		}
	}
	for (unsigned i = 0; i < n; i++)
		ws[i].fds[ws[i].nfds++] = fds[i];
	return 0;
}

/* Wake the main thread's poll (a worker exited or published its counters). */
static void notify_main(struct worker *w)
{
	uint64_t one = 1;
	if (write(w->sh->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg(LOG_WARN, "notify_failed", "worker=%d error=\"%s\"", w->index, strerror(errno));
}

static void publish_stats(struct worker *w, const struct echo_stats *stats)
{
	pthread_mutex_lock(&w->sh->lock);
	w->snap = *stats;
	w->snap_gen++;
	pthread_mutex_unlock(&w->sh->lock);
}

/* The main thread's requests arrive here, in the worker's own thread, where its echo server
 * may be touched. The read is re-armed so a later request (a cut, USR1 during a drain) is
 * heard too; once the loop is ending it is left alone and worker_main cancels it. */
static void on_wake(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)cflags;
	struct worker *w = op->owner;
	struct echo_server *srv = loop->user;
	if (res == -ECANCELED)
		return; /* worker_main is shutting the loop down */
	unsigned req = atomic_exchange(&w->requests, 0u);
	if (req & REQ_STATS) {
		publish_stats(w, &srv->stats);
		notify_main(w);
	}
	if (req & REQ_CUT) {
		w->cut_conns = srv->stats.conns;
		echo_server_cut(srv); /* also stops, if the stop request came in the same read */
	} else if (req & REQ_STOP) {
		echo_server_stop(srv);
	}
	if (w->ending || loop_stopped(loop))
		return;
	/* -EAGAIN/-EINTR: the read found nothing yet; read again. Re-arming a read that fails
	 * otherwise would spin; the watchdog ends a stop this worker can no longer hear. */
	if (res < 0 && res != -EAGAIN && res != -EINTR) {
		log_msg(LOG_ERROR, "wake_failed", "worker=%d error=\"%s\"", w->index, strerror(-res));
		return;
	}
	int rc = loop_submit(loop, &w->wake_op);
	if (rc < 0)
		log_msg(LOG_ERROR, "wake_failed", "worker=%d error=\"%s\"", w->index, strerror(-rc));
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop loop;
	struct echo_server srv;
	struct echo_stats stats = { 0 };
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
				   .drain_timeout_ms = cfg->drain_timeout_ms };
	rc = echo_server_init(&srv, &loop, &lim);
	if (rc < 0)
		goto out_loop;
	w->wake_op = (struct op){ .code = OP_READ, .fd = w->wake_fd, .done = on_wake, .owner = w,
				  .buf = { .base = (char *)&w->wake_val, .len = sizeof(w->wake_val) } };
	rc = loop_submit(&loop, &w->wake_op);
	for (int i = 0; i < w->nfds && rc == 0; i++) {
		rc = echo_server_listen(&srv, w->fds[i]);
		if (rc == 0)
			w->fds[i] = -1; /* the echo server owns it now */
	}
	if (rc == 0)
		rc = loop_run(&loop);
	if (rc < 0)
		log_msg(LOG_ERROR, "worker_failed", "worker=%d error=\"%s\"", w->index, strerror(-rc));
	/* The loop has stopped (or failed): on_wake must not re-arm any more. Cancel the wake
	 * read if it is still armed and run the loop until its final is in (a stopped loop's
	 * run_once would return without waiting for it). */
	w->ending = true;
	if (loop_op_armed(&w->wake_op)) {
		loop_cancel(&loop, &w->wake_op);
		loop_set_stop(&loop, false);
		for (int i = 0; i < 100 && loop_op_armed(&w->wake_op); i++)
			loop_run_once(&loop, 10);
	}
	stats = srv.stats;
	echo_server_fini(&srv);
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
	publish_stats(w, &stats);
	w->status = rc;
	atomic_store_explicit(&w->exited, true, memory_order_release);
	notify_main(w);
	return NULL;
}

/* "32 GiB", "1 MiB", "8 KiB", "1.5 GiB", "1000 bytes": sizes as an operator types them. */
static void format_size(uint64_t bytes, char *out, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	int u = -1;
	uint64_t scale = 1;
	while (u < 3 && bytes >= scale * 1024) {
		scale *= 1024;
		u++;
	}
	if (u < 0)
		snprintf(out, len, "%llu bytes", (unsigned long long)bytes);
	else if (bytes % scale == 0)
		snprintf(out, len, "%llu %s", (unsigned long long)(bytes / scale), units[u]);
	else
		snprintf(out, len, "%.1f %s", (double)bytes / (double)scale, units[u]);
}

/* Map every worker's buffer pool once, as the workers will, and let go. A pool that cannot be
 * mapped fails every backend alike, so it is said here, in the pool's own terms, instead of as
 * "no backend can run here" with a suggestion that fails the same way. All of them at once,
 * because under strict overcommit the sum is what the kernel refuses. */
static int check_pools(const struct echod_config *cfg)
{
	unsigned n = cfg->threads;
	struct bufpool *pools = calloc(n, sizeof(*pools));
	if (!pools) {
		fprintf(stderr, "echod: out of memory\n");
		return 1;
	}
	int rc = 0;
	unsigned made = 0;
	for (; made < n && rc == 0; made++) {
		rc = bufpool_init(&pools[made], cfg->buffers, cfg->buffer_size);
		if (rc < 0)
			break;
	}
	for (unsigned i = 0; i < made; i++)
		bufpool_fini(&pools[i]);
	free(pools);
	if (rc == 0)
		return 0;
	uint64_t one = (uint64_t)cfg->buffers * cfg->buffer_size;
	char size[32], pool[32], all[32];
	format_size(cfg->buffer_size, size, sizeof(size));
	format_size(one, pool, sizeof(pool));
	format_size(one * n, all, sizeof(all));
	if (n == 1)
		fprintf(stderr, "echod: cannot allocate the buffer pool (--buffers %u x --buffer-size "
			"%s = %s): %s; lower --buffers or --buffer-size\n", cfg->buffers, size, pool,
			strerror(-rc));
	else
		fprintf(stderr, "echod: cannot allocate the buffer pools (--buffers %u x --buffer-size "
			"%s = %s per worker, %s for --threads %u): %s; lower --buffers, --buffer-size "
			"or --threads\n", cfg->buffers, size, pool, all, n, strerror(-rc));
	return 1;
}

/* Fds echod opens before its first connection: stdio, the main thread's signalfd and notify
 * eventfd, and per worker one dup of each listener and a wake eventfd. */
static uint64_t fds_before_connections(const struct echod_config *cfg)
{
	return 3 + 2 + (uint64_t)cfg->threads * ((uint64_t)cfg->nlisten + 1);
}

/* A backend that cannot watch fds from max_fd on (select: FD_SETSIZE) is refused before start
 * when the workers' own fds would already reach it: every worker would fail to watch its
 * listeners or its wake fd (one worker_failed line each after event=start), and no connection
 * could be served anyway. Returns 0 or the exit status, with the line printed. */
static int check_fd_room(const struct echod_config *cfg, const struct backend *be)
{
	if (!(be->caps & BACKEND_CAP_FD_LIMIT))
		return 0;
	uint64_t need = fds_before_connections(cfg);
	if (need < (uint64_t)be->max_fd)
		return 0;
	fprintf(stderr, "echod: backend %s watches only fds below %d, and %u workers x (%d listeners "
		"+ 1 wake fd) need %llu fds before the first connection; lower --threads or the "
		"--listen count, or use --backend epoll\n", be->name, be->max_fd, cfg->threads,
		cfg->nlisten, (unsigned long long)need);
	return EXIT_USAGE;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_msg(LOG_WARN, "rlimit", "error=\"%s\"", strerror(errno));
	}
}

static uint32_t fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (1u << 20))
		return 1u << 20;
	return (uint32_t)rl.rlim_cur;
}

/* Resolve --backend: a named one must initialise here; auto takes the best that does and
 * leaves in `why` the reasons better ones were skipped (logged once the server is up). */
static const struct backend *choose_backend(const struct echod_config *cfg,
					    const struct loop_config *lcfg, char *why, size_t len)
{
	struct loop probe;
	why[0] = '\0';
	if (strcmp(cfg->backend, "auto") == 0) {
		if (loop_init_auto(&probe, lcfg, why, len) < 0) {
			fprintf(stderr, "echod: no backend can run here (%s)\n", why);
			return NULL;
		}
		const struct backend *be = probe.be;
		loop_fini(&probe);
		return be;
	}
	const struct backend *be = backend_find(cfg->backend);
	int rc = loop_init(&probe, be, lcfg);
	if (rc < 0) {
		fprintf(stderr, "echod: backend %s cannot run here: %s%s; try --backend epoll "
			"(echod --list-backends shows what runs here)\n", be->name, strerror(-rc),
			rc == -EPERM ? " (disabled by kernel.io_uring_disabled or a seccomp filter?)"
				     : "");
		return NULL;
	}
	loop_fini(&probe);
	return be;
}

static void warn_fd_limit(const struct echod_config *cfg, const struct backend *be)
{
	if (!(be->caps & BACKEND_CAP_FD_LIMIT))
		return;
	/* --max-conns counts the whole process. Each worker's own fd per listener and its wake
	 * fd, plus stdio, come before any connection. */
	uint64_t need = (uint64_t)cfg->max_conns + (uint64_t)cfg->nlisten * cfg->threads +
			cfg->threads + 3;
	if (need > (uint64_t)be->max_fd)
		log_msg(LOG_WARN, "fd_limit",
			"backend=%s max_fd=%d max_conns=%u msg=\"--max-conns cannot be reached: fds at "
			"or above %d are refused; use --backend epoll for more connections\"",
			be->name, be->max_fd, cfg->max_conns, be->max_fd);
}

static void sum_stats(struct echo_stats *t, const struct echo_stats *s)
{
	t->accepted += s->accepted;
	t->refused_limit += s->refused_limit;
	t->refused_fd += s->refused_fd;
	t->closed += s->closed;
	t->aborted += s->aborted;
	t->idle_closed += s->idle_closed;
	t->bytes_in += s->bytes_in;
	t->bytes_out += s->bytes_out;
	t->spilled_bytes += s->spilled_bytes;
	t->discarded_bytes += s->discarded_bytes;
	t->paused += s->paused;
	t->enobufs += s->enobufs;
	t->accept_backoffs += s->accept_backoffs;
	t->conns += s->conns; /* open now: the USR1 line's; 0 in the final counters */
	/* Each worker counts its own peak; the workers peak at different moments, so a sum would
	 * overstate the process's. The busiest worker's peak is what is known. */
	if (s->conns_peak > t->conns_peak)
		t->conns_peak = s->conns_peak;
}

/* The signals echod takes, all read from the main thread's signalfd (see the top comment). */
static const struct {
	int sig;
	const char *name;
} signals[] = {
	{ SIGTERM, "TERM" }, { SIGINT, "INT" },   { SIGHUP, "HUP" },   { SIGUSR1, "USR1" },
	{ SIGUSR2, "USR2" }, { SIGALRM, "ALRM" }, { SIGPROF, "PROF" },
};

static const char *signal_name(int sig)
{
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (signals[i].sig == sig)
			return signals[i].name;
	return "?";
}

static void handled_signals(sigset_t *set)
{
	sigemptyset(set);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		sigaddset(set, signals[i].sig);
}

/* The main thread's state from the workers' start to the last one's exit. */
struct supervisor {
	const struct echod_config *cfg;
	struct shared *sh;
	struct worker *ws;
	unsigned n;            /* workers started */
	int sigfd;
	int stop_sig;          /* the TERM/INT that began the stop; -1: a worker failed; 0: running */
	int cut_sig;           /* the second one; 0: none */
	uint64_t stop_ms;      /* when the stop began */
	uint64_t deadline_ms;  /* the watchdog's, once stopping */
	bool stats_pending;    /* USR1 asked the workers for their counters */
	uint64_t stats_deadline_ms;
};

static bool worker_exited(struct worker *w)
{
	return atomic_load_explicit(&w->exited, memory_order_acquire);
}

static void ask_all(struct supervisor *sv, unsigned req)
{
	for (unsigned i = 0; i < sv->n; i++) {
		struct worker *w = &sv->ws[i];
		if (worker_exited(w))
			continue;
		/* The bits before the wake: a worker woken by an earlier write may take them early,
		 * and the wake this write causes then finds nothing, which is harmless. */
		atomic_fetch_or(&w->requests, req);
		uint64_t one = 1;
		if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_msg(LOG_WARN, "wake_failed", "worker=%u error=\"%s\"", i, strerror(errno));
	}
}

static void begin_stop(struct supervisor *sv, int sig)
{
	sv->stop_sig = sig;
	log_msg(LOG_INFO, "stopping", "signal=%s drain_timeout_ms=%u",
		sig > 0 ? signal_name(sig) : "none", sv->cfg->drain_timeout_ms);
	ask_all(sv, REQ_STOP);
	sv->stop_ms = loop_clock_ms();
	sv->deadline_ms = sv->stop_ms + sv->cfg->drain_timeout_ms + WATCHDOG_MARGIN_MS;
}

/* The second TERM/INT: whoever sends it wants the process gone now, not after the drain. The
 * line saying how many connections were cut comes once the workers have counted them. */
static void begin_cut(struct supervisor *sv, int sig)
{
	sv->cut_sig = sig;
	ask_all(sv, REQ_CUT);
	/* A cut takes no time: a worker still there 2 s later is stuck, not draining. */
	uint64_t deadline = loop_clock_ms() + WATCHDOG_MARGIN_MS;
	if (deadline < sv->deadline_ms)
		sv->deadline_ms = deadline;
}

/* The counters of the stop line and the USR1 line, in the same order. */
static void format_stats(char *out, size_t len, const struct echo_stats *s)
{
	snprintf(out, len, "accepted=%llu refused_limit=%llu refused_fd=%llu closed=%llu "
		 "aborted=%llu idle_closed=%llu bytes_in=%llu bytes_out=%llu spilled_bytes=%llu "
		 "discarded_bytes=%llu paused=%llu enobufs=%llu accept_backoffs=%llu "
		 "worker_conns_peak=%u",
		 (unsigned long long)s->accepted, (unsigned long long)s->refused_limit,
		 (unsigned long long)s->refused_fd, (unsigned long long)s->closed,
		 (unsigned long long)s->aborted, (unsigned long long)s->idle_closed,
		 (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
		 (unsigned long long)s->spilled_bytes, (unsigned long long)s->discarded_bytes,
		 (unsigned long long)s->paused, (unsigned long long)s->enobufs,
		 (unsigned long long)s->accept_backoffs, s->conns_peak);
}

/* USR1: each worker copies its own counters in its own thread (no other thread may read them
 * while it runs) and the main thread sums them into one line. */
static void stats_request(struct supervisor *sv)
{
	if (sv->stats_pending)
		return; /* the line under way answers this one too */
	pthread_mutex_lock(&sv->sh->lock);
	for (unsigned i = 0; i < sv->n; i++)
		sv->ws[i].snap_asked = sv->ws[i].snap_gen;
	pthread_mutex_unlock(&sv->sh->lock);
	ask_all(sv, REQ_STATS);
	sv->stats_pending = true;
	sv->stats_deadline_ms = loop_clock_ms() + STATS_WAIT_MS;
}

/* Log the USR1 line once every worker has answered (an exited worker's final counters are its
 * answer), or at the deadline with the answers there are: a worker busy for a second must not
 * hold the line back, and workers_replied says the sum is partial. */
static void stats_try_log(struct supervisor *sv)
{
	struct echo_stats total = { 0 };
	unsigned replied = 0;
	pthread_mutex_lock(&sv->sh->lock);
	for (unsigned i = 0; i < sv->n; i++) {
		struct worker *w = &sv->ws[i];
		if (w->snap_gen != w->snap_asked || worker_exited(w)) {
			sum_stats(&total, &w->snap);
			replied++;
		}
	}
	pthread_mutex_unlock(&sv->sh->lock);
	if (replied < sv->n && loop_clock_ms() < sv->stats_deadline_ms)
		return;
	sv->stats_pending = false;
	char line[768];
	format_stats(line, sizeof(line), &total);
	log_msg(replied < sv->n ? LOG_WARN : LOG_INFO, "stats",
		"signal=USR1 conns=%u workers=%u workers_replied=%u %s", total.conns, sv->n, replied,
		line);
}

static void on_signal(struct supervisor *sv, const struct signalfd_siginfo *si)
{
	int sig = (int)si->ssi_signo;
	const char *name = signal_name(sig);
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (!sv->stop_sig)
			begin_stop(sv, sig);
		else if (!sv->cut_sig)
			begin_cut(sv, sig);
		else
			log_msg(LOG_INFO, "signal", "signal=%s sender_pid=%u action=ignored "
				"msg=\"already stopping now\"", name, si->ssi_pid);
		break;
	case SIGHUP:
		/* The conventional reload (and what logrotate sends): echod reads no file and logs
		 * to stderr, so there is nothing to reload or reopen. */
		log_msg(LOG_INFO, "signal", "signal=HUP sender_pid=%u action=ignored "
			"msg=\"no configuration to reload\"", si->ssi_pid);
		break;
	case SIGUSR1:
		stats_request(sv);
		break;
	default:
		/* USR2, ALRM, PROF: their default action kills the process without a drain, and
		 * echod uses none of them, so one sent by mistake is said and survived. */
		log_msg(LOG_WARN, "signal", "signal=%s sender_pid=%u action=ignored "
			"msg=\"echod does not use it\"", name, si->ssi_pid);
		break;
	}
}

static void read_signals(struct supervisor *sv)
{
	struct signalfd_siginfo si[16];
	ssize_t got = read(sv->sigfd, si, sizeof(si));
	if (got < 0) {
		if (errno != EAGAIN && errno != EINTR)
			log_msg(LOG_ERROR, "signalfd_failed", "error=\"%s\"", strerror(errno));
		return;
	}
	for (size_t i = 0; i < (size_t)got / sizeof(si[0]); i++)
		on_signal(sv, &si[i]);
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
	/* Those that did finish are joined (at once), so a thread sanitizer reports no leak. */
	for (unsigned i = 0; i < sv->n; i++)
		if (worker_exited(&sv->ws[i]))
			pthread_join(sv->ws[i].thread, NULL);
	_exit(1);
}

static int ms_until(uint64_t now, uint64_t when)
{
	if (when <= now)
		return 0;
	return when - now > INT_MAX ? INT_MAX : (int)(when - now);
}

/* The main thread's loop until the last worker has exited: signals, worker exits, the USR1
 * line, the watchdog. It sleeps in poll until one of them has something to say. */
static void supervise(struct supervisor *sv)
{
	for (;;) {
		unsigned exited = 0;
		for (unsigned i = 0; i < sv->n; i++)
			exited += worker_exited(&sv->ws[i]);
		if (exited && !sv->stop_sig)
			begin_stop(sv, -1); /* a worker failed on its own: stop the rest */
		if (sv->stats_pending)
			stats_try_log(sv);
		if (exited == sv->n)
			return;
		uint64_t now = loop_clock_ms();
		int timeout = -1;
		if (sv->stop_sig) {
			if (now >= sv->deadline_ms)
				watchdog_fire(sv);
			timeout = ms_until(now, sv->deadline_ms);
		}
		if (sv->stats_pending) {
			int t = ms_until(now, sv->stats_deadline_ms);
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
		struct pollfd p[2] = { { .fd = sv->sigfd, .events = POLLIN },
				       { .fd = sv->sh->notify_fd, .events = POLLIN } };
		if (poll(p, 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			/* Cannot happen with two valid fds; do not spin if it does. The watchdog still
			 * bounds a stop, since the deadline is checked above on every turn. */
			log_msg(LOG_ERROR, "poll_failed", "error=\"%s\"", strerror(errno));
			struct timespec pause = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
			nanosleep(&pause, NULL);
			continue;
		}
		if (p[1].revents) {
			uint64_t v;
			if (read(sv->sh->notify_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				log_msg(LOG_ERROR, "notify_failed", "error=\"%s\"", strerror(errno));
		}
		if (p[0].revents)
			read_signals(sv);
	}
}

int server_run(const struct echod_config *cfg)
{
	log_threshold = cfg->log_level;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		fprintf(stderr, "echod: cannot ignore SIGPIPE: %s\n", strerror(errno));
		return 1;
	}
	/* Blocked before any thread exists, so every worker inherits the mask and the signals
	 * wait for the main thread's signalfd instead of killing the process. */
	sigset_t set;
	handled_signals(&set);
	int err = pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (err) {
		fprintf(stderr, "echod: cannot block signals: %s\n", strerror(err));
		return 1;
	}
	raise_fd_limit();
	int status = check_pools(cfg);
	if (status)
		return status;

	struct loop_config lcfg = { .nbufs = cfg->buffers, .bufsize = cfg->buffer_size,
				    .max_fds = fd_limit(), .shared_listeners = cfg->threads > 1 };
	char why[512];
	const struct backend *be = choose_backend(cfg, &lcfg, why, sizeof(why));
	if (!be)
		return EXIT_UNAVAILABLE;
	status = check_fd_room(cfg, be);
	if (status)
		return status;

	unsigned n = cfg->threads;
	struct worker *ws = calloc(n, sizeof(*ws));
	if (!ws) {
		fprintf(stderr, "echod: out of memory\n");
		return 1;
	}
	/* One count of the process's connections, checked against --max-conns by every worker
	 * (per-worker limits refused connections while other workers had room). */
	struct shared sh = { .lock = PTHREAD_MUTEX_INITIALIZER, .notify_fd = -1 };
	atomic_init(&sh.conns_total, 0);
	unsigned started = 0;
	int sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		fprintf(stderr, "echod: cannot read signals (signalfd): %s\n", strerror(errno));
		status = EXIT_OSERR;
		goto out;
	}
	sh.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (sh.notify_fd < 0) {
		fprintf(stderr, "echod: cannot create an eventfd: %s\n", strerror(errno));
		status = EXIT_OSERR;
		goto out;
	}
	char bound[CONFIG_MAX_LISTEN][CONFIG_ADDR_LEN + 16];
	for (int a = 0; a < cfg->nlisten; a++) {
		char where[CONFIG_ADDR_LEN + 16];
		int fd = listen_on(cfg->listen[a], where, sizeof(where));
		int rc = fd < 0 ? fd : share_listener(fd, ws, n);
		if (rc < 0) {
			fprintf(stderr, "echod: cannot listen on %s: %s\n", where, strerror(-rc));
			status = EXIT_OSERR;
			goto out;
		}
		snprintf(bound[a], sizeof(bound[a]), "%s", where);
	}
	/* Only now, with nothing left to fail at start-up, say what runs. */
	log_msg(LOG_INFO, "backend", "name=%s chosen_by=%s%s%s%s", be->name,
		strcmp(cfg->backend, "auto") == 0 ? "auto" : "flag", why[0] ? " skipped=\"" : "",
		why, why[0] ? "\"" : "");
	warn_fd_limit(cfg, be);
	for (int a = 0; a < cfg->nlisten; a++)
		log_msg(LOG_INFO, "listening", "addr=%s", bound[a]);
	log_msg(LOG_INFO, "start", "version=%s backend=%s threads=%u max_conns=%u conn_buffer=%u "
		"buffers=%u buffer_size=%u idle_timeout_ms=%u drain_timeout_ms=%u fd_limit=%u",
		ECHOD_VERSION, be->name, n, cfg->max_conns, cfg->conn_buffer, cfg->buffers,
		cfg->buffer_size, cfg->idle_timeout_ms, cfg->drain_timeout_ms, lcfg.max_fds);

	for (; started < n; started++) {
		struct worker *w = &ws[started];
		w->index = (int)started;
		w->cfg = cfg;
		w->be = be;
		w->sh = &sh;
		w->lcfg = lcfg;
		atomic_init(&w->requests, 0u);
		atomic_init(&w->exited, false);
		w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->wake_fd < 0) {
			fprintf(stderr, "echod: cannot start worker %u: eventfd: %s\n", started,
				strerror(errno));
			status = 1;
			break;
		}
		/* pthread_create returns its error; it does not set errno. */
		err = pthread_create(&w->thread, NULL, worker_main, w);
		if (err) {
			fprintf(stderr, "echod: cannot start worker %u: %s\n", started, strerror(err));
			close(w->wake_fd);
			status = 1;
			break;
		}
	}
	struct supervisor sv = { .cfg = cfg, .sh = &sh, .ws = ws, .n = started, .sigfd = sigfd };
	if (started < n)
		begin_stop(&sv, -1);
	supervise(&sv);

	struct echo_stats total = { 0 };
	uint64_t cut = 0;
	for (unsigned i = 0; i < started; i++) {
		err = pthread_join(ws[i].thread, NULL);
		if (err)
			log_msg(LOG_ERROR, "join_failed", "worker=%u error=\"%s\"", i, strerror(err));
		close(ws[i].wake_fd);
		sum_stats(&total, &ws[i].snap);
		cut += ws[i].cut_conns;
		if (ws[i].status < 0 && status == 0)
			status = 1;
	}
	if (sv.cut_sig)
		log_msg(LOG_WARN, "cut", "signal=%s conns=%llu msg=\"second signal: connections still "
			"draining were closed at once\"", signal_name(sv.cut_sig),
			(unsigned long long)cut);
	char line[768];
	format_stats(line, sizeof(line), &total);
	log_msg(LOG_INFO, "stopped", "%s status=%d", line, status);
out:
	/* Workers that ran closed their own listeners; these never started. */
	for (unsigned i = started; i < n; i++)
		for (int j = 0; j < ws[i].nfds; j++)
			close(ws[i].fds[j]);
	if (sh.notify_fd >= 0)
		close(sh.notify_fd);
	if (sigfd >= 0)
		close(sigfd);
	pthread_mutex_destroy(&sh.lock);
	free(ws);
	return status;
}

int server_list_backends(FILE *out)
{
	struct loop_config lcfg = { .nbufs = 64, .bufsize = 4096, .max_fds = fd_limit() };
	/* ORDER: the table's order, the one --backend auto tries them in. */
	fprintf(out, "%-11s %-6s %-8s %s\n", "BACKEND", "ORDER", "RUNS", "MODEL AND LIMITS");
	for (size_t i = 0; i < backend_count; i++) {
		const struct backend *be = backend_table[i];
		struct loop probe;
		int rc = loop_init(&probe, be, &lcfg);
		if (rc == 0)
			loop_fini(&probe);
		char limit[64] = "";
		if (be->caps & BACKEND_CAP_FD_LIMIT)
			snprintf(limit, sizeof(limit), "; fds < %d (FD_SETSIZE)", be->max_fd);
		fprintf(out, "%-11s %-6zu %-8s %s%s%s%s\n", be->name, i + 1, rc == 0 ? "yes" : "no",
			be->summary, limit, rc == 0 ? "" : "; here: ", rc == 0 ? "" : strerror(-rc));
	}
	return 0;
}
