/* server.c - the process around the loops: start-up checks, listeners, workers started and joined.
 *
 * The main thread checks what can be checked before anything starts (every worker's buffer
 * pool can be mapped, the backend initialises here, select has fds left for connections), so
 * each of those is one clear line on stderr; it binds every listener (a busy port is one line
 * and exit 71; listeners.c says how each kind is shared by the workers), then starts N workers,
 * each with its own loop, buffer pool and echo server. --max-conns counts the whole process:
 * every worker's echo server reserves from one shared atomic count. A loop is created inside
 * its worker thread: io_uring's SINGLE_ISSUER wants that.
 *
 * Signals, the stop and the watchdog: supervisor.c. A worker thread: worker.c.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "echo.h"
#include "listeners.h"
#include "privileges.h"
#include "sdnotify.h"
#include "log.h"
#include "metrics.h"
#include "reactor.h"
#include "supervisor.h"
#include "worker.h"

#define DGRAM_BUFFERS 64
#define DGRAM_PAYLOAD 65536u /* IPv4's largest payload is 65,507 bytes, IPv6's 65,527 */

/* Give worker i the listener fd fds[i] of `kind` (-1: that worker does not serve it). */
static void hand_out(struct worker *ws, unsigned n, enum listen_kind kind, const int *fds)
{
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		ws[i].kinds[ws[i].nfds] = kind;
		ws[i].fds[ws[i].nfds++] = fds[i];
	}
}

/* What to do about a listener that could not be opened, where the error alone does not say. */
static const char *listen_hint(const struct config_listener *l, int rc)
{
	if (l->kind == LISTEN_UNIX && rc == -EADDRINUSE)
		return " (a server answers on that socket; stop it or pick another path)";
	if (l->kind == LISTEN_UNIX && rc == -EEXIST)
		return " (the path exists and is not a socket; echod removes only stale sockets)";
	if (rc == -EADDRINUSE)
		return " (another process has the address; stop it or pick another port)";
	return "";
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

/* Fds echod opens before its first connection: stdio, and per worker one dup of each listener
 * and a wake eventfd. */
static uint64_t fds_before_connections(const struct echod_config *cfg)
{
	return 3 + (uint64_t)cfg->threads * ((uint64_t)cfg->nlisten + 1);
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

/* The metrics port's sockets, bound like the echo listeners (a busy port: exit 71). Returns 0
 * or the exit status, with the line printed and what was bound closed. */
static int bind_metrics(const struct echod_config *cfg, int *fds,
			char (*where)[CONFIG_ADDR_LEN + 16])
{
	if (cfg->nmetrics && !metrics_http_available()) {
		fprintf(stderr, "echod: --metrics: this echod was built without libmicrohttpd; "
			"install it (tools/install-deps) and rebuild, or run without --metrics\n");
		return EXIT_UNAVAILABLE;
	}
	for (int i = 0; i < cfg->nmetrics; i++) {
		struct config_listener l = { .kind = LISTEN_TCP };
		struct listener_file none;
		snprintf(l.addr, sizeof(l.addr), "%s", cfg->metrics[i]);
		int rc = listener_open(&l, -1, 1, &fds[i], where[i], sizeof(where[i]), &none);
		if (rc < 0) {
			fprintf(stderr, "echod: cannot serve metrics on %s: %s\n", where[i],
				strerror(-rc));
			for (int j = 0; j < i; j++)
				close(fds[j]);
			return EXIT_OSERR;
		}
	}
	return 0;
}

int server_run(const struct echod_config *cfg)
{
	struct timespec started_at;
	clock_gettime(CLOCK_REALTIME, &started_at);
	log_threshold = cfg->log_level;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		fprintf(stderr, "echod: cannot ignore SIGPIPE: %s\n", strerror(errno));
		return 1;
	}
	/* Blocked before any thread exists, so every worker inherits the mask and the signals
	 * wait for the main thread's sigtimedwait instead of killing the process. */
	sigset_t set;
	supervisor_signals(&set);
	int err = pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (err) {
		fprintf(stderr, "echod: cannot block signals: %s\n", strerror(err));
		return 1;
	}
	raise_fd_limit();
	int status = check_pools(cfg);
	if (status)
		return status;

	/* Sockets from a service manager replace the default address (not an explicit one). */
	struct inherited_listener inh[CONFIG_MAX_LISTEN];
	char ierr[256];
	int ninh = listeners_inherited(inh, CONFIG_MAX_LISTEN, ierr, sizeof(ierr));
	if (ninh < 0) {
		fprintf(stderr, "echod: %s\n", ierr);
		return EXIT_OSERR;
	}
	int nlisten = ninh > 0 && cfg->listen_default ? 0 : cfg->nlisten;
	struct loop_config lcfg = { .nbufs = cfg->buffers, .bufsize = cfg->buffer_size,
				    .max_fds = fd_limit(), .shared_listeners = cfg->threads > 1 };
	bool serves_udp = false;
	for (int a = 0; a < nlisten; a++)
		serves_udp |= cfg->listen[a].kind == LISTEN_UDP;
	for (int a = 0; a < ninh; a++)
		serves_udp |= inh[a].kind == LISTEN_UDP;
	if (serves_udp) {
			/* One datagram buffer per reply in flight; the largest UDP payload fits. */
			lcfg.dgram_nbufs = DGRAM_BUFFERS;
			lcfg.dgram_bufsize = DGRAM_PAYLOAD + LOOP_DGRAM_HEADROOM;
		}
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
	struct shared sh = { .lock = PTHREAD_MUTEX_INITIALIZER, .main_thread = pthread_self() };
	atomic_init(&sh.conns_total, 0);
	atomic_init(&sh.draining, false);
	atomic_init(&sh.listening, 0u);
	/* Waits for answers count on the monotonic clock: a clock step must not stretch them. */
	pthread_condattr_t ca;
	if ((err = pthread_condattr_init(&ca)) != 0 ||
	    (err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) != 0 ||
	    (err = pthread_cond_init(&sh.answered, &ca)) != 0) {
		fprintf(stderr, "echod: cannot set up the workers' condition variable: %s\n",
			strerror(err));
		free(ws);
		return 1;
	}
	pthread_condattr_destroy(&ca);
	int mfds[CONFIG_MAX_LISTEN];
	char mwhere[CONFIG_MAX_LISTEN][CONFIG_ADDR_LEN + 16];
	struct metrics_http *mh = NULL;
	int nmfds = 0;
	unsigned started = 0;
	char bound[WORKER_MAX_LISTEN][CONFIG_ADDR_LEN + 96];
	struct listener_file files[CONFIG_MAX_LISTEN];
	int nfiles = 0;
	int *lfds = calloc(n, sizeof(*lfds));
	if (!lfds) {
		fprintf(stderr, "echod: out of memory\n");
		status = 1;
		goto out;
	}
	for (int a = 0; a < nlisten; a++) {
		const struct config_listener *l = &cfg->listen[a];
		int rc = listener_open(l, cfg->unix_mode, n, lfds, bound[a], sizeof(bound[a]),
				       &files[nfiles]);
		if (rc < 0) {
			fprintf(stderr, "echod: cannot listen on %s: %s%s\n", bound[a], strerror(-rc),
				listen_hint(l, rc));
			status = EXIT_OSERR;
			free(lfds);
			goto out;
		}
		nfiles += files[nfiles].set;
		hand_out(ws, n, l->kind, lfds);
	}
	/* A passed stream listener is shared like our own (dups: one accept queue). A passed UDP
	 * socket is one socket: binding more group members for the other workers would need the
	 * privilege a socket-activated echod does not have (port 7), and sharing one socket
	 * would split an address's --udp-rate bucket across workers; so worker 0 serves it. */
	for (int a = 0; a < ninh; a++) {
		int rc = 0;
		if (inh[a].kind == LISTEN_UDP) {
			lfds[0] = inh[a].fd;
			for (unsigned i = 1; i < n; i++)
				lfds[i] = -1;
		} else {
			rc = listener_share(inh[a].fd, n, lfds);
		}
		if (rc == 0)
			hand_out(ws, n, inh[a].kind, lfds);
		if (rc < 0) {
			fprintf(stderr, "echod: cannot share the passed socket %s: %s\n", inh[a].where,
				strerror(-rc));
			status = EXIT_OSERR;
			free(lfds);
			goto out;
		}
		snprintf(bound[nlisten + a], sizeof(bound[0]), "%s from=service_manager%s%s%s",
			 inh[a].where, inh[a].name[0] ? " name=\"" : "", inh[a].name,
			 inh[a].name[0] ? "\"" : "");
	}
	free(lfds);
	status = bind_metrics(cfg, mfds, mwhere);
	if (status)
		goto out;
	nmfds = cfg->nmetrics;
	/* Everything privileged (binding) is done: become --user before any worker starts. */
	if (cfg->user[0]) {
		char perr[256];
		const char *paths[CONFIG_MAX_LISTEN];
		for (int i = 0; i < nfiles; i++)
			paths[i] = files[i].path;
		status = privileges_drop(cfg->user, paths, nfiles, perr, sizeof(perr));
		if (status) {
			fprintf(stderr, "echod: %s\n", perr);
			goto out;
		}
	} else if (geteuid() == 0) {
		log_msg(LOG_WARN, "running_as_root", "msg=\"echod needs no privilege once bound: "
			"give --user NAME (or let systemd pass the sockets to an unprivileged "
			"service)\"");
	}
	/* Only now, with nothing left to fail at start-up, say what runs. */
	log_msg(LOG_INFO, "backend", "name=%s chosen_by=%s%s%s%s", be->name,
		strcmp(cfg->backend, "auto") == 0 ? "auto" : "flag", why[0] ? " skipped=\"" : "",
		why, why[0] ? "\"" : "");
	warn_fd_limit(cfg, be);
	for (int a = 0; a < nlisten + ninh; a++)
		log_msg(LOG_INFO, "listening", "addr=%s", bound[a]);
	for (int a = 0; a < nmfds; a++)
		log_msg(LOG_INFO, "metrics", "addr=%s paths=/metrics,/healthz,/readyz", mwhere[a]);
	log_msg(LOG_INFO, "start", "version=%s backend=%s threads=%u max_conns=%u conn_buffer=%u "
		"buffers=%u buffer_size=%u idle_timeout_ms=%u drain_timeout_ms=%u drain_grace_ms=%u "
		"fd_limit=%u", ECHOD_VERSION, be->name, n, cfg->max_conns, cfg->conn_buffer,
		cfg->buffers, cfg->buffer_size, cfg->idle_timeout_ms, cfg->drain_timeout_ms,
		cfg->drain_grace_ms, lcfg.max_fds);

	for (; started < n; started++) {
		struct worker *w = &ws[started];
		w->index = (int)started;
		w->cfg = cfg;
		w->be = be;
		w->sh = &sh;
		w->lcfg = lcfg;
		atomic_init(&w->requests, 0u);
		atomic_init(&w->exited, false);
		atomic_init(&w->loop_over, false);
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
	struct sdnotify notify;
	sdnotify_open(&notify);
	struct supervisor sv = { .cfg = cfg, .sh = &sh, .ws = ws, .n = started, .notify = &notify,
				 .backend = be->name };
	struct metrics_view mv = { .ws = ws, .n = started, .sh = &sh, .backend = be->name,
				   .start_time = (double)started_at.tv_sec +
						 (double)started_at.tv_nsec / 1e9 };
	if (started == n && nmfds) {
		/* After the workers: the port answers about workers that exist. Started by this
		 * thread, with every signal blocked, so the HTTP thread takes none. */
		int rc = metrics_start(&mh, &mv, mfds, nmfds);
		nmfds = 0; /* metrics_start owns them now, whatever it returned */
		if (rc < 0) {
			log_msg(LOG_ERROR, "metrics_failed", "error=\"%s\"", strerror(-rc));
			status = EXIT_OSERR;
			supervisor_begin_stop(&sv, -1);
		}
	}
	if (started < n)
		supervisor_begin_stop(&sv, -1);
	supervise(&sv);
	/* /healthz said 200 until here: the last worker has just exited. */
	metrics_http_stop(mh);

	struct echo_stats total = { 0 };
	struct udp_stats udp = { 0 };
	uint64_t cut = 0;
	for (unsigned i = 0; i < started; i++) {
		err = pthread_join(ws[i].thread, NULL);
		if (err)
			log_msg(LOG_ERROR, "join_failed", "worker=%u error=\"%s\"", i, strerror(err));
		close(ws[i].wake_fd);
		worker_stats_sum(&total, &ws[i].snap.echo);
		worker_udp_sum(&udp, &ws[i].snap.udp);
		cut += ws[i].cut_conns;
		if (ws[i].status < 0 && status == 0)
			status = 1;
	}
	if (sv.cut_sig)
		log_msg(LOG_WARN, "cut", "signal=%s conns=%llu msg=\"second signal: connections still "
			"draining were closed at once\"", supervisor_signal_name(sv.cut_sig),
			(unsigned long long)cut);
	char line[1024], uline[512];
	worker_stats_format(line, sizeof(line), &total);
	worker_udp_format(uline, sizeof(uline), &udp);
	log_msg(LOG_INFO, "stopped", "%s %s status=%d", line, uline, status);
	sdnotify_close(&notify);
out:
	/* Workers that ran closed their own listeners; these never started. */
	for (unsigned i = started; i < n; i++)
		for (int j = 0; j < ws[i].nfds; j++)
			close(ws[i].fds[j]);
	for (int i = 0; i < nmfds; i++)
		close(mfds[i]);
	for (int i = 0; i < nfiles; i++)
		listener_file_remove(&files[i]);
	pthread_cond_destroy(&sh.answered);
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
		/* What the running loop found (io_uring's features), asked while it is up. */
		char detail[512] = "";
		if (rc == 0 && be->describe)
			be->describe(&probe, detail, sizeof(detail));
		if (rc == 0)
			loop_fini(&probe);
		char limit[64] = "";
		if (be->caps & BACKEND_CAP_FD_LIMIT)
			snprintf(limit, sizeof(limit), "; fds < %d (FD_SETSIZE)", be->max_fd);
		fprintf(out, "%-11s %-6zu %-8s %s%s%s%s\n", be->name, i + 1, rc == 0 ? "yes" : "no",
			be->summary, limit, rc == 0 ? "" : "; here: ", rc == 0 ? "" : strerror(-rc));
		/* Indented under its backend; its first word is never a backend's name and its third
		 * never "yes", for scripts that read the table (bench/compare). */
		if (detail[0])
			fprintf(out, "    %s\n", detail);
	}
	return 0;
}
