/* metrics_http.c - the metrics port on libmicrohttpd: one MHD daemon (own polling thread) per
 * listening socket, plus one small "deadline" thread for all of them.
 *
 * Why the deadline thread: MHD's connection timeout counts inactivity, and every byte received
 * is activity, so a client sending one byte a second would hold a slot for ever. The deadline
 * thread gives each request METRICS_HTTP_TIMEOUT_S from its first moment (the connection's
 * start, or the end of the previous response on a kept-alive connection) to its complete
 * header, and shuts the socket down when that passes. Idle kept-alive connections are closed
 * by MHD's own timeout of the same length.
 *
 * MHD answers on its own, without calling us, and closes: a request line or header too big
 * for the connection's memory (414 URI Too Long if the request line is not complete, 431
 * Request Header Fields Too Large otherwise), a malformed request line or header (400),
 * HTTP/1.1 without Host (400, strict mode), an HTTP version other than 1.0/1.1 (505). A
 * request line of one word ("GARBAGE") is closed without an answer. These answers are MHD's
 * own (HTML, no Cache-Control); it has no hook to replace them. What reaches us and is bad
 * anyway gets our 400 (a method that is not a token), 431 (over METRICS_HTTP_MAX_REQUEST by
 * our count) or 413 (a body), all with `Connection: close`. Connections over the limits:
 * over the per-address one, accepted and closed at once; over the total, left in the
 * listen backlog until a slot frees (MHD stops accepting).
 */
#include "metrics_http.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"

/* Per-connection memory in MHD: the read buffer (request line and headers, kept in place) and
 * MHD's parsed-header records, plus the response header being written. Twice the request
 * limit leaves room for the records, so a request of up to METRICS_HTTP_MAX_REQUEST fits; one
 * that does not is refused by MHD (414/431), and one that fits the pool but is over the limit
 * by our own count (request_size) is refused with 431 too. */
#define POOL_BYTES (2 * METRICS_HTTP_MAX_REQUEST)
/* One address (one scraper, or one attacker) gets at most half the slots, so another scraper
 * can still get in while someone holds connections open. */
#define PER_IP_CONNS (METRICS_HTTP_MAX_CONNS / 2)

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define EXPOSITION "text/plain; version=0.0.4; charset=utf-8"

/* One open scrape connection, for the request deadline. */
struct conn {
	struct conn *prev, *next;
	int fd;               /* our dup of MHD's socket: shutting it down never hits a reused fd */
	uint64_t deadline_ms; /* 0: being answered, MHD's inactivity timeout applies */
};

struct daemon_slot {
	struct MHD_Daemon *d;
	char why[160];        /* MHD's own words while starting, for the failure line */
	atomic_bool started;  /* after this, MHD's messages are dropped: nothing per request */
};

struct metrics_http {
	struct metrics_handler h;
	pthread_mutex_t lock;         /* conns, stopping */
	pthread_cond_t wake;          /* deadline thread: a new deadline, or stop */
	struct conn *conns;
	bool stopping;
	pthread_t deadline_thread;
	int n;
	struct daemon_slot slot[];
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool metrics_http_available(void)
{
	return true;
}

/* --- request deadlines ---------------------------------------------------------------------- */

static void *deadline_main(void *arg)
{
	struct metrics_http *m = arg;
	pthread_mutex_lock(&m->lock);
	while (!m->stopping) {
		uint64_t now = mono_ms(), next = UINT64_MAX;
		for (struct conn *c = m->conns; c; c = c->next) {
			if (!c->deadline_ms)
				continue;
			if (c->deadline_ms <= now) {
				/* MHD sees end of stream and closes the connection itself. */
				shutdown(c->fd, SHUT_RDWR);
				c->deadline_ms = 0;
			} else if (c->deadline_ms < next) {
				next = c->deadline_ms;
			}
		}
		if (next == UINT64_MAX) {
			pthread_cond_wait(&m->wake, &m->lock);
		} else {
			struct timespec ts = { .tv_sec = (time_t)(next / 1000),
					       .tv_nsec = (long)(next % 1000) * 1000000 };
			pthread_cond_timedwait(&m->wake, &m->lock, &ts);
		}
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static struct conn *conn_of(struct MHD_Connection *connection)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

static void set_deadline(struct metrics_http *m, struct conn *c, bool armed)
{
	if (!c)
		return;
	pthread_mutex_lock(&m->lock);
	c->deadline_ms = armed ? mono_ms() + METRICS_HTTP_TIMEOUT_S * 1000u : 0;
	if (armed)
		pthread_cond_signal(&m->wake);
	pthread_mutex_unlock(&m->lock);
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct metrics_http *m = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct conn *c = calloc(1, sizeof(*c));
		int fd = ci && c ? fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
		if (fd < 0) {
			/* No deadline could be kept for it: better no connection. We are in MHD's
			 * thread, so its fd is still its own here. */
			free(c);
			if (ci)
				shutdown(ci->connect_fd, SHUT_RDWR);
			*socket_context = NULL;
			return;
		}
		c->fd = fd;
		*socket_context = c;
		pthread_mutex_lock(&m->lock);
		c->next = m->conns;
		if (m->conns)
			m->conns->prev = c;
		m->conns = c;
		pthread_mutex_unlock(&m->lock);
		set_deadline(m, c, true);
		return;
	}
	struct conn *c = *socket_context;
	if (!c)
		return;
	pthread_mutex_lock(&m->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		m->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&m->lock);
	close(c->fd);
	free(c);
	*socket_context = NULL;
}

/* A response is sent (or the request failed): the next request's time starts now. */
static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)con_cls;
	(void)toe;
	set_deadline(cls, conn_of(connection), true);
}

/* --- requests -------------------------------------------------------------------------------- */

/* body is copied, or, when `owned`, taken (malloc'd) and freed by MHD. */
static enum MHD_Result reply(struct MHD_Connection *connection, unsigned status,
			     const char *type, char *body, size_t len, bool owned, bool close_after,
			     const char *allow)
{
	struct MHD_Response *r =
		owned ? MHD_create_response_from_buffer_with_free_callback(len, body, free)
		      : MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_COPY);
	if (!r) {
		if (owned)
			free(body);
		return MHD_NO; /* MHD closes the connection */
	}
	bool ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) == MHD_YES &&
		  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES;
	if (ok && allow)
		ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) == MHD_YES;
	if (ok && close_after)
		ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close") == MHD_YES;
	enum MHD_Result ret = ok ? MHD_queue_response(connection, status, r) : MHD_NO;
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *connection, unsigned status,
				  const char *text, bool close_after, const char *allow)
{
	return reply(connection, status, TEXT_PLAIN, (char *)text, strlen(text), false,
		     close_after, allow);
}

static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *key,
				       const char *value)
{
	(void)kind;
	*(size_t *)cls += strlen(key) + 2 + (value ? strlen(value) : 0) + 2; /* "K: V\r\n" */
	return MHD_YES;
}

/* The request line and headers as sent, give or take optional whitespace. */
static size_t request_size(struct MHD_Connection *connection, const char *method,
			   const char *url, const char *version)
{
	size_t n = strlen(method) + 1 + strlen(url) + 1 + strlen(version) + 2 + 2;
	MHD_get_connection_values(connection, MHD_HEADER_KIND, add_header_size, &n);
	return n;
}

/* RFC 9110's token: MHD takes any bytes up to the first space as the method. */
static bool is_token(const char *s)
{
	return *s && strspn(s, "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
			       "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(s);
}

static bool has_body(struct MHD_Connection *connection)
{
	const char *cl = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	return (cl && strspn(cl, "0") != strlen(cl)) ||
	       MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
					   MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

static enum MHD_Result answer_status(struct metrics_http *m, struct MHD_Connection *connection,
				     bool (*check)(void *, char *, size_t))
{
	char msg[256] = "";
	bool good = check(m->h.arg, msg, sizeof(msg));
	msg[sizeof(msg) - 1] = '\0';
	return reply_text(connection, good ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, msg,
			  false, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct metrics_http *m = cls;
	(void)upload_data;
	(void)upload_data_size;
	/* First call: the header is complete, so the request is in time. A request with a body
	 * is answered now: MHD then reads no body and closes after the answer. Any other is
	 * answered on the second call, when MHD has finished the request, so the connection can
	 * be kept alive (MHD closes after an answer queued on the first call). */
	static char header_seen;
	bool body = has_body(connection);
	if (!*con_cls && !body) {
		set_deadline(m, conn_of(connection), false);
		*con_cls = &header_seen;
		return MHD_YES;
	}
	if (!*con_cls)
		set_deadline(m, conn_of(connection), false);
	if (!is_token(method))
		return reply_text(connection, MHD_HTTP_BAD_REQUEST, "malformed request\n", true,
				  NULL);
	if (request_size(connection, method, url, version) > METRICS_HTTP_MAX_REQUEST)
		return reply_text(connection, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE,
				  "request header too large\n", true, NULL);
	enum { METRICS, HEALTHZ, READYZ } route;
	if (strcmp(url, "/metrics") == 0)
		route = METRICS;
	else if (strcmp(url, "/healthz") == 0)
		route = HEALTHZ;
	else if (strcmp(url, "/readyz") == 0)
		route = READYZ;
	else
		return reply_text(connection, MHD_HTTP_NOT_FOUND,
				  "not found: this port serves /metrics, /healthz and /readyz\n",
				  body, NULL);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "method not allowed: GET or HEAD\n", body, "GET, HEAD");
	if (body)
		return reply_text(connection, MHD_HTTP_CONTENT_TOO_LARGE,
				  "a request body is not accepted here\n", true, NULL);
	if (route == HEALTHZ)
		return answer_status(m, connection, m->h.healthy);
	if (route == READYZ)
		return answer_status(m, connection, m->h.ready);
	size_t len = 0;
	char *text = m->h.render(m->h.arg, &len);
	if (!text)
		return reply_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n",
				  false, NULL);
	return reply(connection, MHD_HTTP_OK, EXPOSITION, text, len, true, false, NULL);
}

/* --- start and stop ------------------------------------------------------------------------- */

/* MHD's messages: kept while a daemon starts (for the one failure line), dropped after. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct daemon_slot *s = cls;
	if (atomic_load_explicit(&s->started, memory_order_acquire))
		return;
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	for (char *p = s->why; *p; p++) /* one logfmt value: no quotes, no line breaks */
		if (*p == '"' || *p == '\n' || *p == '\r')
			*p = *p == '"' ? '\'' : ' ';
	size_t n = strlen(s->why);
	while (n && s->why[n - 1] == ' ')
		s->why[--n] = '\0';
}

static void sock_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

static bool same_socket(int a, int b)
{
	struct stat sa, sb;
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* One daemon on fd, which stays the caller's: MHD gets a dup. MHD closes the socket it was
 * given on some of its failure paths and not on others; a dup lets us tell, without racing
 * another thread for the fd number: while we hold fd, only a dup of it can be the same socket. */
static int start_daemon(struct metrics_http *m, struct daemon_slot *s, int fd)
{
	int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (d < 0)
		return -errno;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
			 (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
										 : MHD_USE_POLL);
	errno = 0;
	s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m,
				MHD_OPTION_LISTEN_SOCKET, (MHD_socket)d,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_CONNS,
				MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PER_IP_CONNS,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT_S,
				MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)POOL_BYTES,
				/* RFC 9112: HTTP/1.1 without Host is a 400. */
				MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
				MHD_OPTION_NOTIFY_CONNECTION, on_connection, m,
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, m,
				MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
				MHD_OPTION_END);
	if (s->d) {
		atomic_store_explicit(&s->started, true, memory_order_release);
		return 0;
	}
	int err = errno ? errno : EIO;
	if (same_socket(fd, d))
		close(d);
	return -err;
}

static void stop_daemons(struct metrics_http *m, int n)
{
	for (int i = 0; i < n; i++)
		MHD_stop_daemon(m->slot[i].d); /* closes its connections and its socket */
}

/* Everything but the daemons; started: whether the deadline thread runs. */
static void destroy(struct metrics_http *m, bool started)
{
	if (started) {
		pthread_mutex_lock(&m->lock);
		m->stopping = true;
		pthread_cond_signal(&m->wake);
		pthread_mutex_unlock(&m->lock);
		pthread_join(m->deadline_thread, NULL);
	}
	pthread_cond_destroy(&m->wake);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static struct metrics_http *create(int n, const struct metrics_handler *h, int *err)
{
	struct metrics_http *m = calloc(1, sizeof(*m) + (size_t)n * sizeof(m->slot[0]));
	pthread_condattr_t ca;
	if (!m || pthread_condattr_init(&ca) != 0) {
		free(m);
		*err = -ENOMEM;
		return NULL;
	}
	m->h = *h;
	m->n = n;
	pthread_mutex_init(&m->lock, NULL);
	/* Deadlines are monotonic: a clock step must neither end nor extend them. */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->wake, &ca);
	pthread_condattr_destroy(&ca);
	int e = pthread_create(&m->deadline_thread, NULL, deadline_main, m);
	if (e) {
		destroy(m, false);
		*err = -e;
		return NULL;
	}
	return m;
}

int metrics_http_start(struct metrics_http **out, const int *fds, int n,
		       const struct metrics_handler *h)
{
	*out = NULL;
	int err = -EINVAL, started = 0;
	struct metrics_http *m = n > 0 ? create(n, h, &err) : NULL;
	for (; m && started < n; started++) {
		err = start_daemon(m, &m->slot[started], fds[started]);
		if (err < 0)
			break;
	}
	if (m && started == n) {
		for (int i = 0; i < n; i++)
			close(fds[i]); /* each daemon has its dup */
		*out = m;
		return 0;
	}
	char addr[INET6_ADDRSTRLEN + 8] = "-";
	if (n > 0)
		sock_name(fds[started], addr, sizeof(addr));
	const char *why = m && m->slot[started].why[0] ? m->slot[started].why
						       : "cannot start the HTTP server";
	log_msg(LOG_ERROR, "metrics_failed", "addr=%s err=\"%s\" msg=\"%s\"", addr,
		strerror(-err), why);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	if (m) {
		stop_daemons(m, started);
		destroy(m, true);
	}
	return err;
}

void metrics_http_stop(struct metrics_http *m)
{
	if (!m)
		return;
	/* MHD_stop_daemon joins its thread after closing every connection (each one's CLOSED
	 * notification frees its deadline record), so no record outlives this. */
	stop_daemons(m, m->n);
	destroy(m, true);
}
