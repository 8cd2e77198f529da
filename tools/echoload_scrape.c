/* echoload_scrape.c - see echoload_scrape.h.
 *
 * The HTTP client is deliberately small: one GET with Connection: close, no redirects, no TLS,
 * no keep-alive. What it must get right is the framing (Content-Length, chunked, or until the
 * close) and the bounds, so that a wrong or hostile URL costs the run at most
 * SCRAPE_TIMEOUT_MS and SCRAPE_MAX_RESPONSE bytes and a warning, never its result. */
#include "echoload_scrape.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_INITIAL (64u << 10) /* echod's exposition is a few KiB per worker */
#define HEAD_MAX (64u << 10)         /* status line and headers */

const char *const scrape_family_names[SF_COUNT] = {
	[SF_SYSCALLS] = "echod_syscalls_total",
	[SF_WAKEUPS] = "echod_loop_wakeups_total",
	[SF_COMPLETIONS] = "echod_completions_total",
};

/* --- the URL ------------------------------------------------------------------------------- */

static int url_error(char *why, size_t len, const char *url, const char *what)
{
	snprintf(why, len, "'%s': %s; want http://HOST:PORT/metrics", url, what);
	return -1;
}

int scrape_url_parse(const char *url, struct scrape_url *u, char *why, size_t len)
{
	if (strncasecmp(url, "http://", 7) != 0)
		return url_error(why, len, url, "not an http:// URL");
	const char *host = url + 7, *p;
	size_t n;
	if (*host == '[') {
		n = strspn(++host, "0123456789abcdefABCDEF:.");
		if (n == 0 || host[n] != ']' || !memchr(host, ':', n))
			return url_error(why, len, url, "brackets must hold an IPv6 address");
		p = host + n + 1;
	} else {
		n = strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				 "0123456789.-_");
		if (n == 0)
			return url_error(why, len, url, "no host");
		p = host + n;
	}
	if (n >= sizeof(u->host))
		return url_error(why, len, url, "the host is too long");
	if (*p != ':')
		return url_error(why, len, url, "no :PORT after the host");
	const char *port = p + 1;
	size_t digits = strspn(port, "0123456789");
	unsigned long v = digits && digits <= 5 ? strtoul(port, NULL, 10) : 0;
	if (v < 1 || v > 65535)
		return url_error(why, len, url, "the port must be a number from 1 to 65535");
	const char *path = port + digits;
	if (*path && strcmp(path, "/metrics") != 0)
		return url_error(why, len, url, "the path must be /metrics or nothing");
	memcpy(u->host, host, n);
	u->host[n] = '\0';
	memcpy(u->port, port, digits);
	u->port[digits] = '\0';
	snprintf(u->authority, sizeof(u->authority), "%.*s", (int)(path - (url + 7)), url + 7);
	return 0;
}

/* --- the exposition (Prometheus text format 0.0.4) ----------------------------------------- */

static bool blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static size_t skip_blanks(const char *p, size_t n, size_t i)
{
	while (i < n && blank(p[i]))
		i++;
	return i;
}

/* Past a metric or label name at p[i] ([a-zA-Z_:][a-zA-Z0-9_:]*); i itself if there is none. */
static size_t skip_name(const char *p, size_t n, size_t i)
{
	size_t k = i;
	while (k < n && (p[k] == '_' || p[k] == ':' || isalpha((unsigned char)p[k]) ||
			 (k > i && isdigit((unsigned char)p[k]))))
		k++;
	return k;
}

/* Past the label set {name="value",...} that opens at p[i], or 0 if it is malformed. A value
 * may hold anything, '}' and ',' included; an escaped quote (\") does not end it. */
static size_t skip_labels(const char *p, size_t n, size_t i)
{
	for (i++;;) {
		i = skip_blanks(p, n, i);
		if (i < n && p[i] == '}')
			return i + 1; /* also "{}" and a trailing comma, as Prometheus allows */
		size_t k = skip_name(p, n, i);
		if (k == i)
			return 0;
		i = skip_blanks(p, n, k);
		if (i >= n || p[i] != '=')
			return 0;
		i = skip_blanks(p, n, i + 1);
		if (i >= n || p[i] != '"')
			return 0;
		for (i++; i < n && p[i] != '"'; i++)
			if (p[i] == '\\')
				i++;
		if (i >= n)
			return 0;
		i = skip_blanks(p, n, i + 1);
		if (i < n && p[i] == ',')
			i++;
		else if (i < n && p[i] == '}')
			return i + 1;
		else
			return 0;
	}
}

static size_t token_end(const char *p, size_t n, size_t i)
{
	while (i < n && !blank(p[i]))
		i++;
	return i;
}

/* A counter's value: the whole token a finite float >= 0 ("123", "1.5e+06"; the format's
 * floats, so a counter past 2^53 loses its last digits, which no run here comes near). */
static bool parse_value(const char *p, size_t n, double *v)
{
	char buf[64];
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	char *end;
	errno = 0;
	*v = strtod(buf, &end);
	return end == buf + n && errno == 0 && isfinite(*v) && *v >= 0;
}

/* The optional timestamp after a value: milliseconds, an integer. */
static bool parse_timestamp(const char *p, size_t n)
{
	size_t i = n && p[0] == '-';
	if (i == n)
		return false;
	for (; i < n; i++)
		if (!isdigit((unsigned char)p[i]))
			return false;
	return true;
}

static int family_of(const char *name, size_t n)
{
	for (int f = 0; f < SF_COUNT; f++) {
		const char *want = scrape_family_names[f];
		if (strlen(want) == n && memcmp(want, name, n) == 0)
			return f;
	}
	return -1;
}

/* One line: name [labels] value [timestamp]. A sample of one of our families is added to its
 * sum; a malformed one marks it bad. Anything else is none of our business. */
static void parse_line(const char *p, size_t n, struct scrape *s, bool *bad)
{
	if (n && p[n - 1] == '\r')
		n--;
	size_t i = skip_blanks(p, n, 0);
	if (i == n || p[i] == '#')
		return;
	size_t name_end = skip_name(p, n, i);
	int f = family_of(p + i, name_end - i);
	if (f < 0)
		return;
	i = skip_blanks(p, n, name_end);
	bool labels = i < n && p[i] == '{';
	if (labels && (i = skip_labels(p, n, i)) == 0) {
		bad[f] = true;
		return;
	}
	size_t v0 = skip_blanks(p, n, i), v1 = token_end(p, n, v0);
	size_t t0 = skip_blanks(p, n, v1), t1 = token_end(p, n, t0);
	double v;
	/* a bare name needs a blank before its value, else the name ran into something else */
	if ((v0 == name_end && !labels) || !parse_value(p + v0, v1 - v0, &v) ||
	    (t0 < n && !parse_timestamp(p + t0, t1 - t0)) || skip_blanks(p, n, t1) != n) {
		bad[f] = true;
		return;
	}
	s->sum[f] += v;
	s->found[f] = true;
}

void scrape_parse(const char *text, size_t len, struct scrape *s)
{
	bool bad[SF_COUNT] = { false };
	memset(s, 0, sizeof(*s));
	for (size_t pos = 0; pos < len;) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		parse_line(text + pos, end - pos, s, bad);
		pos = end + 1;
	}
	for (int f = 0; f < SF_COUNT; f++)
		s->found[f] = s->found[f] && !bad[f] && isfinite(s->sum[f]);
}

/* --- HTTP framing -------------------------------------------------------------------------- */

void scrape_http_init(struct http_response *r)
{
	memset(r, 0, sizeof(*r));
	r->content_length = -1;
}

static int http_bad(struct http_response *r, const char *what)
{
	snprintf(r->why, sizeof(r->why), "%s", what);
	return HTTP_BAD;
}

/* The line that starts at pos: returns where the next one starts (0: no line end yet), and in
 * *end where this one's text ends, before "\r\n" or a bare "\n". */
static size_t line_at(const char *buf, size_t len, size_t pos, size_t *end)
{
	const char *nl = pos < len ? memchr(buf + pos, '\n', len - pos) : NULL;
	if (!nl)
		return 0;
	size_t e = (size_t)(nl - buf);
	*end = e > pos && buf[e - 1] == '\r' ? e - 1 : e;
	return e + 1;
}

static bool has_token(const char *v, size_t n, const char *token)
{
	size_t t = strlen(token);
	for (size_t i = 0; i + t <= n; i++)
		if (strncasecmp(v + i, token, t) == 0)
			return true;
	return false;
}

static int http_header(struct http_response *r, const char *h, size_t n)
{
	const char *colon = memchr(h, ':', n), *v, *e = h + n;
	if (!colon)
		return http_bad(r, "a header line without a colon");
	size_t name = (size_t)(colon - h);
	for (v = colon + 1; v < e && blank(*v); v++)
		;
	while (e > v && blank(e[-1]))
		e--;
	if (name == 17 && strncasecmp(h, "Transfer-Encoding", name) == 0) {
		r->chunked = has_token(v, (size_t)(e - v), "chunked");
	} else if (name == 14 && strncasecmp(h, "Content-Length", name) == 0) {
		int64_t cl = 0;
		if (v == e)
			return http_bad(r, "an empty Content-Length");
		for (; v < e; v++) {
			if (!isdigit((unsigned char)*v))
				return http_bad(r, "a Content-Length that is not a number");
			cl = cl * 10 + (*v - '0');
			if (cl > SCRAPE_MAX_RESPONSE)
				return http_bad(r, "a Content-Length above 4 MiB");
		}
		r->content_length = cl;
	}
	return HTTP_MORE;
}

/* The status line and headers: HTTP_MORE until the empty line that ends them has arrived. */
static int http_head(struct http_response *r, const char *buf, size_t len)
{
	size_t end, next = line_at(buf, len, 0, &end);
	if (!next)
		return HTTP_MORE;
	if (end < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)buf[7]) ||
	    buf[8] != ' ' || !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]) || (end > 12 && buf[12] != ' '))
		return http_bad(r, "not an HTTP/1.x response");
	r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	for (size_t pos = next;; pos = next) {
		if (!(next = line_at(buf, len, pos, &end)))
			return HTTP_MORE;
		if (end == pos) {
			r->head_len = r->chunk_pos = next;
			return HTTP_DONE;
		}
		if (http_header(r, buf + pos, end - pos) == HTTP_BAD)
			return HTTP_BAD;
	}
}

static int hex_digit(char ch)
{
	return isdigit((unsigned char)ch) ? ch - '0' : tolower((unsigned char)ch) - 'a' + 10;
}

/* The chunk whose size line starts at pos: HTTP_MORE while not all of it is there, HTTP_BAD,
 * or HTTP_DONE with its data at *data, *n bytes, and *next after it. The last chunk has n 0
 * and ends after the trailer section. */
static int chunk_at(struct http_response *r, const char *buf, size_t len, size_t pos,
		    size_t *data, size_t *n, size_t *next)
{
	size_t end, line = line_at(buf, len, pos, &end), size = 0, i = pos;
	if (!line)
		return HTTP_MORE;
	for (; i < end && isxdigit((unsigned char)buf[i]); i++)
		if ((size = size * 16 + (size_t)hex_digit(buf[i])) > SCRAPE_MAX_RESPONSE)
			return http_bad(r, "a chunk above 4 MiB");
	if (i == pos || (i < end && buf[i] != ';' && !blank(buf[i])))
		return http_bad(r, "a malformed chunk size");
	*data = line;
	*n = size;
	if (size == 0) { /* trailer fields, if any, up to an empty line */
		for (size_t p = line;; p = line) {
			if (!(line = line_at(buf, len, p, &end)))
				return HTTP_MORE;
			if (end == p) {
				*next = line;
				return HTTP_DONE;
			}
		}
	}
	if (len - line < size)
		return HTTP_MORE;
	size_t after = line + size;
	if (after < len && buf[after] != '\r' && buf[after] != '\n')
		return http_bad(r, "chunk data longer than its size");
	if (!(line = line_at(buf, len, after, &end)))
		return HTTP_MORE;
	if (end != after)
		return http_bad(r, "chunk data longer than its size");
	*next = line;
	return HTTP_DONE;
}

/* Walks the chunks from where the last call stopped; once the last one is there, joins their
 * data in place (each moves down over the framing before it: writes stay behind reads). */
static int chunked_body(struct http_response *r, char *buf, size_t len, bool eof,
			size_t *body_len)
{
	size_t data, n, next;
	int rc;
	while ((rc = chunk_at(r, buf, len, r->chunk_pos, &data, &n, &next)) == HTTP_DONE && n)
		r->chunk_pos = next;
	if (rc == HTTP_MORE && eof)
		return http_bad(r, "the response ended inside its chunked body");
	if (rc != HTTP_DONE)
		return rc;
	size_t out = r->head_len;
	for (size_t pos = r->head_len;
	     chunk_at(r, buf, len, pos, &data, &n, &next) == HTTP_DONE && n; pos = next) {
		memmove(buf + out, buf + data, n);
		out += n;
	}
	*body_len = out - r->head_len;
	return HTTP_DONE;
}

int scrape_http_feed(struct http_response *r, char *buf, size_t len, bool eof,
		     size_t *body_len)
{
	if (!r->head_len) {
		int rc = http_head(r, buf, len);
		if (rc == HTTP_MORE && len > HEAD_MAX)
			return http_bad(r, "headers longer than 64 KiB");
		if (rc == HTTP_MORE && eof)
			return http_bad(r, len ? "the response ended inside its headers"
					       : "an empty response");
		if (rc != HTTP_DONE)
			return rc;
		if (r->status != 200) {
			snprintf(r->why, sizeof(r->why), "HTTP status %d", r->status);
			return HTTP_BAD;
		}
	}
	if (r->chunked) /* it wins over a Content-Length (RFC 9112, 6.3) */
		return chunked_body(r, buf, len, eof, body_len);
	size_t have = len - r->head_len;
	if (r->content_length >= 0 && have >= (uint64_t)r->content_length) {
		*body_len = (size_t)r->content_length;
		return HTTP_DONE;
	}
	if (r->content_length >= 0 && eof)
		return http_bad(r, "the response ended before its Content-Length");
	if (!eof)
		return HTTP_MORE;
	*body_len = have; /* no framing: the body is all there is until the close */
	return HTTP_DONE;
}

/* --- the GET ------------------------------------------------------------------------------- */

static uint64_t clock_ms(void)
{
	struct timespec ts;
	(void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 1 when fd is ready for events (or has an error to show), 0 at the deadline, -1 (errno). */
static int wait_for(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = clock_ms();
		if (now >= deadline)
			return 0;
		struct pollfd pfd = { .fd = fd, .events = events };
		int n = poll(&pfd, 1, (int)(deadline - now));
		if (n >= 0 || errno != EINTR)
			return n > 0 ? 1 : n;
	}
}

int connect_within(const struct addrinfo *ai, int timeout_ms, int *err)
{
	uint64_t deadline = clock_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	*err = 0;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		int ready = errno == EINPROGRESS ? wait_for(fd, POLLOUT, deadline) : -1;
		socklen_t sl = sizeof(*err);
		if (ready == 0)
			*err = ETIMEDOUT;
		else if (ready < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &sl) < 0)
			*err = errno;
	}
	if (*err) {
		close(fd);
		return -1;
	}
	return fd;
}

static int connect_to(const struct scrape_url *u, uint64_t deadline, char *why, size_t len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	int gai = getaddrinfo(u->host, u->port, &hints, &res);
	if (gai != 0) {
		snprintf(why, len, "cannot resolve %s: %s", u->host, gai_strerror(gai));
		return -1;
	}
	int fd = -1, err = ETIMEDOUT;
	for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		uint64_t now = clock_ms();
		fd = now < deadline ? connect_within(ai, (int)(deadline - now), &err) : -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(why, len, "cannot connect to %s: %s", u->authority, strerror(err));
	return fd;
}

/* After a send or recv that failed: 0 to try again (interrupted, or ready now), else the errno
 * value to give up with (ETIMEDOUT at the deadline). */
static int again_or_error(int fd, short events, uint64_t deadline)
{
	int err = errno;
	if (err == EINTR)
		return 0;
	if (err != EAGAIN)
		return err;
	int ready = wait_for(fd, events, deadline);
	return ready > 0 ? 0 : ready == 0 ? ETIMEDOUT : errno;
}

static int send_request(int fd, const struct scrape_url *u, uint64_t deadline, char *why,
			size_t len)
{
	char req[512];
	int n = snprintf(req, sizeof(req),
			 "GET /metrics HTTP/1.1\r\nHost: %s\r\nUser-Agent: echoload\r\n"
			 "Accept: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n",
			 u->authority);
	for (size_t off = 0; off < (size_t)n;) {
		ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
		int err = w > 0 ? 0 : w < 0 ? again_or_error(fd, POLLOUT, deadline) : EPIPE;
		if (err) {
			snprintf(why, len, "cannot send the request: %s", strerror(err));
			return -1;
		}
		off += w > 0 ? (size_t)w : 0;
	}
	return 0;
}

/* Makes room for more of the response, up to one byte past the limit (so that a response of
 * exactly the limit can still be seen to end). 0, or -1 with why. */
static int grow(char **buf, size_t *cap, size_t used, char *why, size_t len)
{
	if (used < *cap)
		return 0;
	if (*cap > SCRAPE_MAX_RESPONSE) {
		snprintf(why, len, "the response is larger than 4 MiB");
		return -1;
	}
	size_t want = *cap ? *cap * 2 : RESPONSE_INITIAL;
	if (want > SCRAPE_MAX_RESPONSE + 1)
		want = SCRAPE_MAX_RESPONSE + 1;
	char *p = realloc(*buf, want);
	if (!p) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	*buf = p;
	*cap = want;
	return 0;
}

/* Reads until the response is complete: its body at *buf + *body, *body_len bytes. */
static int receive(int fd, uint64_t deadline, char **buf, size_t *body, size_t *body_len,
		   char *why, size_t len)
{
	struct http_response r;
	scrape_http_init(&r);
	size_t cap = 0, used = 0;
	for (int state = HTTP_MORE; state == HTTP_MORE;) {
		if (grow(buf, &cap, used, why, len) < 0)
			return -1;
		ssize_t got = recv(fd, *buf + used, cap - used, 0);
		if (got < 0) {
			int err = again_or_error(fd, POLLIN, deadline);
			if (!err)
				continue;
			snprintf(why, len, "no complete response: %s", strerror(err));
			return -1;
		}
		used += (size_t)got;
		state = scrape_http_feed(&r, *buf, used, got == 0, body_len);
		if (state == HTTP_BAD) {
			snprintf(why, len, "%s", r.why);
			return -1;
		}
	}
	*body = r.head_len;
	return 0;
}

int scrape_fetch(const struct scrape_url *u, struct scrape *s, char *why, size_t len)
{
	uint64_t deadline = clock_ms() + SCRAPE_TIMEOUT_MS;
	int fd = connect_to(u, deadline, why, len);
	if (fd < 0)
		return -1;
	char *buf = NULL;
	size_t body = 0, body_len = 0;
	int rc = send_request(fd, u, deadline, why, len);
	if (rc == 0)
		rc = receive(fd, deadline, &buf, &body, &body_len, why, len);
	close(fd);
	if (rc == 0)
		scrape_parse(buf + body, body_len, s);
	free(buf);
	return rc;
}

/* --- the figures --------------------------------------------------------------------------- */

/* The growth of family f between the scrapes; NAN if unknown or negative (echod restarted). */
static double delta(const struct scrape *a, const struct scrape *b, enum scrape_family f)
{
	return a->found[f] && b->found[f] && b->sum[f] >= a->sum[f] ? b->sum[f] - a->sum[f] : NAN;
}

void scrape_work(const struct scrape *before, const struct scrape *after, uint64_t msgs,
		 struct server_work *w)
{
	double n = msgs ? (double)msgs : NAN, wakeups = delta(before, after, SF_WAKEUPS);
	w->syscalls_per_msg = delta(before, after, SF_SYSCALLS) / n;
	w->wakeups_per_msg = wakeups / n;
	w->completions_per_wakeup =
		wakeups > 0 ? delta(before, after, SF_COMPLETIONS) / wakeups : NAN;
}

int scrape_unusable(const struct scrape *before, const struct scrape *after, char *buf,
		    size_t len)
{
	int count = 0;
	size_t used = 0;
	if (len)
		buf[0] = '\0';
	for (int f = 0; f < SF_COUNT; f++) {
		if (!isnan(delta(before, after, (enum scrape_family)f)))
			continue;
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, "%s%s", count ? ", " : "",
						 scrape_family_names[f]);
		count++;
	}
	return count;
}
