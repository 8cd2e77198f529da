/* server.c - listeners, worker threads, signals, limits, graceful drain.
 *
 * The main thread resolves the backend (probing it once, so "cannot run here" is reported
 * before anything starts), binds every listener (so a busy port is one clear line and exit 71),
 * then starts N workers, each with its own loop, buffer pool and echo server. Each --listen
 * address is ONE socket, bound without SO_REUSEPORT, and every worker accepts from its own
 * dup of it: a SO_REUSEPORT group can be joined by any process of the same user (a second
 * echod would start and silently take part of the traffic), one plain socket cannot, so a busy
 * address is exit 71 whatever --threads says. --max-conns counts the whole process: every
 * worker's echo server reserves from one shared atomic count. Signals are blocked everywhere
 * and taken synchronously by the main thread with sigtimedwait; it wakes each worker through an
 * eventfd the worker's loop reads. A loop is created inside its worker thread: io_uring's
 * SINGLE_ISSUER wants that.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo.h"
#include "log.h"
#include "reactor.h"

#define LISTEN_BACKLOG 4096

struct worker {
	pthread_t thread;
	int index;
	const struct echod_config *cfg;
	const struct backend *be;
	_Atomic uint32_t *conns_total; /* the process's connections, shared by every worker */
	struct loop_config lcfg;
	int fds[CONFIG_MAX_LISTEN]; /* this worker's own dups of the listeners; -1 once handed on */
	int nfds;
	int wake_fd;
	uint64_t wake_val;
	struct op wake_op;
	struct echo_stats stats;
	int status;          /* 0 ok, else -errno from set-up or the loop */
	volatile int exited;
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

static void on_wake(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)op;
	(void)res;
	(void)cflags;
	echo_server_stop(loop->user);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop loop;
	struct echo_server srv;
	int rc = loop_init(&loop, w->be, &w->lcfg);
	if (rc < 0)
		goto out;
	const struct echod_config *cfg = w->cfg;
	struct echo_limits lim = { .max_conns = cfg->max_conns, .conns_total = w->conns_total,
				   .conn_buffer = cfg->conn_buffer,
				   .idle_timeout_ms = cfg->idle_timeout_ms,
				   .drain_timeout_ms = cfg->drain_timeout_ms };
	rc = echo_server_init(&srv, &loop, &lim);
	if (rc < 0)
		goto out_loop;
	w->wake_op = (struct op){ .code = OP_READ, .fd = w->wake_fd, .done = on_wake,
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
	/* The loop has stopped: cancel the wake read if it is still armed and let it finish. */
	if (w->wake_op.armed) {
		loop_cancel(&loop, &w->wake_op);
		for (int i = 0; i < 100 && w->wake_op.armed; i++)
			loop_run_once(&loop, 10);
	}
	w->stats = srv.stats;
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
	w->status = rc;
	w->exited = 1;
	return NULL;
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
	/* Each worker counts its own peak; the workers peak at different moments, so a sum would
	 * overstate the process's. The busiest worker's peak is what is known. */
	if (s->conns_peak > t->conns_peak)
		t->conns_peak = s->conns_peak;
}

static int wait_for_signal(struct worker *ws, unsigned n)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	struct timespec tick = { .tv_sec = 0, .tv_nsec = 200 * 1000 * 1000 };
	for (;;) {
		int sig = sigtimedwait(&set, NULL, &tick);
		if (sig > 0)
			return sig;
		for (unsigned i = 0; i < n; i++)
			if (ws[i].exited)
				return 0; /* a worker failed on its own: stop the rest */
	}
}

int server_run(const struct echod_config *cfg)
{
	log_threshold = cfg->log_level;
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	raise_fd_limit();

	struct loop_config lcfg = { .nbufs = cfg->buffers, .bufsize = cfg->buffer_size,
				    .max_fds = fd_limit(), .shared_listeners = cfg->threads > 1 };
	char why[512];
	const struct backend *be = choose_backend(cfg, &lcfg, why, sizeof(why));
	if (!be)
		return EXIT_UNAVAILABLE;

	unsigned n = cfg->threads;
	struct worker *ws = calloc(n, sizeof(*ws));
	if (!ws) {
		fprintf(stderr, "echod: out of memory\n");
		return 1;
	}
	/* One count of the process's connections, checked against --max-conns by every worker
	 * (per-worker limits refused connections while other workers had room). */
	_Atomic uint32_t conns_total = 0;
	int status = 0;
	unsigned started = 0;
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
		w->conns_total = &conns_total;
		w->lcfg = lcfg;
		w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->wake_fd < 0 || pthread_create(&w->thread, NULL, worker_main, w) != 0) {
			fprintf(stderr, "echod: cannot start worker %u: %s\n", started, strerror(errno));
			if (w->wake_fd >= 0)
				close(w->wake_fd);
			status = 1;
			break;
		}
	}
	int sig = started == n ? wait_for_signal(ws, n) : 0;
	log_msg(LOG_INFO, "stopping", "signal=%s drain_timeout_ms=%u",
		sig == SIGINT ? "INT" : sig == SIGTERM ? "TERM" : "none", cfg->drain_timeout_ms);
	struct echo_stats total = { 0 };
	for (unsigned i = 0; i < started; i++) {
		uint64_t one = 1;
		if (write(ws[i].wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_msg(LOG_WARN, "wake_failed", "worker=%u error=\"%s\"", i, strerror(errno));
	}
	for (unsigned i = 0; i < started; i++) {
		pthread_join(ws[i].thread, NULL);
		close(ws[i].wake_fd);
		sum_stats(&total, &ws[i].stats);
		if (ws[i].status < 0 && status == 0)
			status = 1;
	}
	log_msg(LOG_INFO, "stopped", "accepted=%llu refused_limit=%llu refused_fd=%llu closed=%llu "
		"aborted=%llu idle_closed=%llu bytes_in=%llu bytes_out=%llu spilled_bytes=%llu "
		"discarded_bytes=%llu paused=%llu enobufs=%llu accept_backoffs=%llu "
		"worker_conns_peak=%u status=%d",
		(unsigned long long)total.accepted, (unsigned long long)total.refused_limit,
		(unsigned long long)total.refused_fd, (unsigned long long)total.closed,
		(unsigned long long)total.aborted, (unsigned long long)total.idle_closed,
		(unsigned long long)total.bytes_in, (unsigned long long)total.bytes_out,
		(unsigned long long)total.spilled_bytes, (unsigned long long)total.discarded_bytes,
		(unsigned long long)total.paused,
		(unsigned long long)total.enobufs, (unsigned long long)total.accept_backoffs,
		total.conns_peak, status);
out:
	/* Workers that ran closed their own listeners; these never started. */
	for (unsigned i = started; i < n; i++)
		for (int j = 0; j < ws[i].nfds; j++)
			close(ws[i].fds[j]);
	free(ws);
	return status;
}

int server_list_backends(FILE *out)
{
	struct loop_config lcfg = { .nbufs = 64, .bufsize = 4096, .max_fds = fd_limit() };
	fprintf(out, "%-11s %-6s %-8s %s\n", "BACKEND", "PREF", "RUNS", "MODEL AND LIMITS");
	for (size_t i = 0; i < backend_count; i++) {
		const struct backend *be = backend_table[i];
		struct loop probe;
		int rc = loop_init(&probe, be, &lcfg);
		if (rc == 0)
			loop_fini(&probe);
		char limit[64] = "";
		if (be->caps & BACKEND_CAP_FD_LIMIT)
			snprintf(limit, sizeof(limit), "; fds < %d (FD_SETSIZE)", be->max_fd);
		fprintf(out, "%-11s %-6d %-8s %s%s%s%s\n", be->name, be->pref, rc == 0 ? "yes" : "no",
			be->summary, limit, rc == 0 ? "" : "; here: ", rc == 0 ? "" : strerror(-rc));
	}
	return 0;
}
