/* config.c - command-line parsing and validation (getopt_long). Every value is range-checked
 * here, so the rest of echod can trust its config; every error is one line naming the flag,
 * the value and what would be accepted. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"

#define DEFAULT_LISTEN "127.0.0.1:65432"

/* Every range, once: parsing checks against these and --help prints them. */
#define THREADS_MIN 1u
#define THREADS_MAX 256u
#define MAX_CONNS_MIN 1u
#define MAX_CONNS_MAX 1000000u
#define CONN_BUFFER_MIN 1024u
#define CONN_BUFFER_MAX (64u << 20)
#define BUFFERS_MIN 16u
#define BUFFERS_MAX 32768u
#define BUFFER_SIZE_MIN 512u
#define BUFFER_SIZE_MAX (1u << 20)
#define IDLE_TIMEOUT_MAX_S 86400u
#define DRAIN_TIMEOUT_MAX_S 3600u
#define UDP_RATE_MAX 10000000u
#define PROXY_TIMEOUT_MAX_S 3600u

const char *const config_listen_kind_names[] = { [LISTEN_TCP] = "tcp", [LISTEN_UDP] = "udp",
						  [LISTEN_UNIX] = "unix" };

void config_defaults(struct echod_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->backend, "auto");
	cfg->threads = 1;
	cfg->max_conns = 10000;
	cfg->conn_buffer = 256 * 1024;
	cfg->buffers = 2048;
	cfg->buffer_size = 8192;
	cfg->idle_timeout_ms = 0;
	cfg->drain_timeout_ms = 5000;
	cfg->log_level = LOG_INFO;
	cfg->unix_mode = -1;
	cfg->proxy_timeout_ms = 5000;
	cfg->udp_rate = 1000;
}

static void fail(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* How a value appears in an error line: as typed when that is unambiguous, else in single
 * quotes with non-printable bytes (and \ and ') as \xNN, so an empty or space-padded value is
 * visible and a newline in it cannot break the one-line promise. Cut at 64 bytes ("...") so a
 * huge value does not push the reason out of the line. */
struct shown {
	char s[64 * 4 + 8];
};

static const char *show(struct shown *b, const char *v)
{
	bool plain = v[0] != '\0';
	for (const char *q = v; *q && plain; q++)
		plain = isalnum((unsigned char)*q) || strchr("._:+-[]%/,=@", *q);
	size_t n = 0, cap = sizeof(b->s);
	if (!plain)
		b->s[n++] = '\'';
	size_t i = 0;
	for (; v[i] && i < 64; i++) {
		unsigned char ch = (unsigned char)v[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '\'')
			b->s[n++] = (char)ch;
		else
			n += (size_t)snprintf(b->s + n, cap - n, "\\x%02x", ch);
	}
	if (v[i]) {
		memcpy(b->s + n, "...", 3);
		n += 3;
	}
	if (!plain)
		b->s[n++] = '\'';
	b->s[n] = '\0';
	return b->s;
}

/* "1M", "8K" or "512": a byte count as a user would type it. */
static const char *show_size(char *buf, size_t len, uint64_t v)
{
	if (v && v % (1024 * 1024) == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v / (1024 * 1024)));
	else if (v && v % 1024 == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(v / 1024));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
	return buf;
}

void config_usage(FILE *out)
{
	char cb_lo[24], cb_hi[24], bs_lo[24], bs_hi[24];
	fprintf(out,
		"Usage: echod [OPTION]...\n"
		"An echo server (RFC 862: TCP, UDP, Unix sockets) with a choice of kernel event\n"
		"interfaces.\n"
		"\n"
		"  -l, --listen [KIND:]ADDR   address to serve; repeatable, any mix of kinds:\n"
		"                             HOST:PORT or tcp:HOST:PORT  TCP\n"
		"                             udp:HOST:PORT               UDP\n"
		"                             unix:/path, unix:@name      Unix stream socket\n"
		"                             (a file; @: the abstract namespace)\n"
		"                             HOST is an IPv4 address (a.b.c.d), an IPv6 one in\n"
		"                             brackets ([::1]:PORT) or a name that resolves here;\n"
		"                             PORT 0 to 65535, 0 picks a free port (logged)\n"
		"                             [" DEFAULT_LISTEN "]\n"
		"      --unix-mode MODE       permissions of unix: socket files, octal (0660)\n"
		"                             [as the umask leaves them]\n"
		"      --proxy-protocol       every TCP and Unix connection starts with a PROXY\n"
		"                             protocol v1 or v2 header (from a load balancer):\n"
		"                             consumed, not echoed; its client is the one logged\n"
		"      --proxy-timeout SECONDS  close a connection whose header is not complete\n"
		"                             this long after its accept; 0.001 to %u [5]\n"
		"      --user NAME            after binding, become this user (its groups too);\n"
		"                             for a start as root [stay who started echod]\n"
		"      --udp-rate N           UDP replies per second per source address; 0 = no\n"
		"                             cap; 0 to %u [1000]\n"
		"  -b, --backend NAME         auto, uring, epoll, uring-poll, poll, select [auto]\n"
		"      --list-backends        show the backends built in and whether they run here\n"
		"  -t, --threads N            worker loops, all accepting from the same listeners;\n"
		"                             %u to %u [1]\n"
		"      --max-conns N          connections for the whole process; more are accepted\n"
		"                             and reset at once; %u to %u [10000]\n"
		"      --conn-buffer BYTES    per-connection high-water mark of unsent bytes;\n"
		"                             %s to %s, at least --buffer-size [256K]\n"
		"      --buffers N            receive buffers per worker; %u to %u [2048]\n"
		"      --buffer-size BYTES    bytes per receive buffer; %s to %s [8K]\n"
		"      --idle-timeout SECONDS close connections silent this long; 0 = never;\n"
		"                             at most %u [0]\n"
		"      --drain-timeout SECONDS on SIGTERM/SIGINT, time to flush queued echoes;\n"
		"                             0 = close at once; at most %u [5]\n"
		"      --drain-grace SECONDS  on SIGTERM/SIGINT, first serve (and accept) this long\n"
		"                             with /readyz at 503, so a load balancer moves new\n"
		"                             connections away and open ones finish; then the\n"
		"                             drain; at most %u [0]\n"
		"      --log-level LEVEL      error, warn, info, debug [info]\n"
		"      --metrics HOST:PORT    serve GET /metrics (Prometheus), /healthz and\n"
		"                             /readyz over HTTP there; repeatable; HOST:PORT as\n"
		"                             for --listen [off]\n"
		"  -h, --help                 this help\n"
		"  -V, --version              version\n"
		"\n"
		"N and BYTES are whole decimal numbers; BYTES may end in K or M (powers of 1024).\n"
		"UDP: each datagram goes back to its source whole; none is answered from a\n"
		"source port below 1024, from port 2049, or from a broadcast or multicast\n"
		"address.\n"
		"SECONDS are plain decimals (30, 1.5, 0.25), rounded to the millisecond: 0, or\n"
		"0.001 and more; no hex, exponents, inf or nan. A value out of range is an error,\n"
		"never clamped. Logs go to stderr, one logfmt line each.\n"
		"Exit status: 0 after a clean stop, 64 bad usage (also an address that is not\n"
		"valid or does not resolve), 69 backend cannot run here, 71 cannot listen,\n"
		"1 other failure.\n"
		"Started by systemd with sockets (LISTEN_FDS), echod serves those instead of\n"
		"its default address, and reports readiness over NOTIFY_SOCKET.\n",
		PROXY_TIMEOUT_MAX_S, UDP_RATE_MAX, THREADS_MIN, THREADS_MAX, MAX_CONNS_MIN, MAX_CONNS_MAX,
		show_size(cb_lo, sizeof(cb_lo), CONN_BUFFER_MIN),
		show_size(cb_hi, sizeof(cb_hi), CONN_BUFFER_MAX), BUFFERS_MIN, BUFFERS_MAX,
		show_size(bs_lo, sizeof(bs_lo), BUFFER_SIZE_MIN),
		show_size(bs_hi, sizeof(bs_hi), BUFFER_SIZE_MAX), IDLE_TIMEOUT_MAX_S,
		DRAIN_TIMEOUT_MAX_S, DRAIN_TIMEOUT_MAX_S);
}

/* Digits to a number that saturates at UINT64_MAX instead of wrapping, so a huge value is
 * reported as out of range, never silently taken modulo 2^64. Returns the end of the digits. */
static const char *scan_digits(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*out = v;
	return s;
}

/* A whole number in [min, max], optionally with a K or M suffix (powers of 1024) when `bytes`.
 * Only digits (and the suffix): strtoull's leading spaces, '+', hex and wrap-around of
 * negatives are all refused. A leading '-' is reported as out of range, which it is. */
static int parse_number(const char *flag, const char *s, bool bytes, uint64_t min, uint64_t max,
			uint32_t *out, char *err, size_t len)
{
	struct shown sh;
	char lo[24], hi[24];
	if (bytes) {
		show_size(lo, sizeof(lo), min);
		show_size(hi, sizeof(hi), max);
	} else {
		snprintf(lo, sizeof(lo), "%llu", (unsigned long long)min);
		snprintf(hi, sizeof(hi), "%llu", (unsigned long long)max);
	}
	bool negative = s[0] == '-';
	const char *p = s + negative;
	uint64_t v;
	const char *digits_end = scan_digits(p, &v);
	const char *end = digits_end;
	uint64_t mult = 1;
	if (bytes && (*end == 'K' || *end == 'k'))
		mult = 1024;
	else if (bytes && (*end == 'M' || *end == 'm'))
		mult = 1024 * 1024;
	if (mult > 1)
		end++;
	if (digits_end == p || *end) {
		fail(err, len, "%s: %s is not %s (expected %s to %s%s)", flag, show(&sh, s),
		     bytes ? "a size" : "a whole number", lo, hi,
		     bytes ? ": digits, optionally followed by K or M" : "");
		return -1;
	}
	v = v > UINT64_MAX / mult ? UINT64_MAX : v * mult;
	if (negative || v < min || v > max) {
		fail(err, len, "%s: %s is out of range (%s to %s)", flag, show(&sh, s), lo, hi);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

/* Seconds as plain decimals ("30", "1.5", "0.25"), to whole milliseconds, rounded to the
 * nearest. strtod is not used: it takes "0x10", "1e3", "inf" and "nan", none of which anyone
 * means as a timeout. A value above 0 but below 1 ms is refused rather than rounded: rounding
 * it down would make it 0, which means something else entirely (never / no drain). */
static int parse_seconds(const char *flag, const char *s, uint32_t max_s, const char *zero,
			 uint32_t *out_ms, char *err, size_t len)
{
	struct shown sh;
	bool negative = s[0] == '-';
	const char *p = s + negative;
	uint64_t whole;
	const char *end = scan_digits(p, &whole);
	const char *frac = NULL;
	if (end > p && *end == '.' && isdigit((unsigned char)end[1])) {
		frac = end + 1;
		for (end = frac; isdigit((unsigned char)*end); end++)
			;
	}
	if (end == p || *end) {
		fail(err, len, "%s: %s is not a number of seconds (expected 0 to %u, decimals "
		     "like 1.5 allowed; %s)", flag, show(&sh, s), max_s, zero);
		return -1;
	}
	/* Milliseconds from the first three decimals; the rest only rounds and tells a value
	 * that is not zero from one that is. */
	uint64_t ms_part = 0;
	bool rest_nonzero = false, round_up = false;
	int i = 0;
	for (; frac && isdigit((unsigned char)frac[i]); i++) {
		unsigned d = (unsigned)(frac[i] - '0');
		if (i < 3)
			ms_part = ms_part * 10 + d;
		else
			rest_nonzero |= d != 0;
		if (i == 3)
			round_up = d >= 5;
	}
	for (; i < 3; i++) /* "1.5": 5 tenths are 500 ms */
		ms_part *= 10;
	bool nonzero = whole || ms_part || rest_nonzero;
	if (negative || whole > max_s || (whole == max_s && (ms_part || rest_nonzero))) {
		fail(err, len, "%s: %s is out of range (0 to %u)", flag, show(&sh, s), max_s);
		return -1;
	}
	if (nonzero && whole == 0 && ms_part == 0) {
		fail(err, len, "%s: %s is below 1 ms; the smallest timeout is 0.001 (%s)", flag,
		     show(&sh, s), zero);
		return -1;
	}
	uint64_t ms = whole * 1000 + ms_part + round_up;
	*out_ms = (uint32_t)ms; /* <= 86400000: fits */
	return 0;
}

enum split_result { SPLIT_OK, SPLIT_FORM, SPLIT_PORT, SPLIT_LONG };

/* The form of HOST:PORT or [HOST]:PORT only; what the host is, is check_host()'s business.
 * On SPLIT_LONG, *hl is the host's length. */
static enum split_result split(const char *s, char *host, size_t hostlen, char *port,
			       size_t portlen, bool *bracketed, size_t *hl)
{
	const char *colon;
	const char *h = s;
	*bracketed = s[0] == '[';
	if (*bracketed) {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return SPLIT_FORM;
		h = s + 1;
		*hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return SPLIT_FORM; /* bare IPv6 needs brackets */
		*hl = (size_t)(colon - s);
	}
	const char *p = colon + 1;
	if (*hl == 0 || !p[0])
		return SPLIT_FORM;
	for (const char *q = p; *q; q++)
		if (!isdigit((unsigned char)*q))
			return SPLIT_FORM;
	uint64_t pv;
	scan_digits(p, &pv);
	if (pv > 65535)
		return SPLIT_PORT;
	if (*hl >= hostlen)
		return SPLIT_LONG;
	if (strlen(p) >= portlen)
		return SPLIT_PORT; /* only zeros can make a port of 0..65535 this long */
	memcpy(host, h, *hl);
	host[*hl] = '\0';
	strcpy(port, p);
	return SPLIT_OK;
}

int config_split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
	bool bracketed;
	size_t hl;
	return split(s, host, hostlen, port, portlen, &bracketed, &hl) == SPLIT_OK ? 0 : -1;
}

#define LISTEN_FORMS "expected HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:65432, [::1]:65432 " \
		     "or localhost:65432"
#define IPV4_FORM "an IPv4 address is a.b.c.d, each 0 to 255"

/* Why h is not a host name as resolvers know it (RFC 1123: letters, digits, '-', dot-separated
 * labels of 1..63), with '_' allowed too, which /etc/hosts and container DNS do use; NULL if it
 * is one. Checked before asking the resolver so that garbage (" 127.0.0.1", "a b") gets a plain
 * answer, not a DNS query. */
static const char *not_a_name(const char *h, char *why, size_t len)
{
	size_t label = 0;
	for (const char *q = h; *q; q++) {
		unsigned char ch = (unsigned char)*q;
		if (ch == '.') {
			if (label == 0)
				return "it has an empty label (\"..\" or a leading dot)";
			label = 0;
		} else if (isalnum(ch) || ch == '-' || ch == '_') {
			if (++label > 63)
				return "it has a label (a part between dots) longer than 63 characters";
		} else {
			if (ch == ' ')
				return "it has a space";
			if (ch > 0x20 && ch < 0x7f && ch != '\'')
				snprintf(why, len, "it has '%c', which no host name has", ch);
			else
				snprintf(why, len, "it has the byte 0x%02x, which no host name has", ch);
			return why;
		}
	}
	return NULL;
}

/* What the host of a --listen (or --metrics) value is, checked now so that a bad or
 * unresolvable address is a usage error (64) with a reason, instead of a bind failure (71)
 * saying "Cannot assign requested address" about an address that never existed. */
static int check_host(const char *flag, const char *spec, const char *host, const char *port,
		      bool bracketed, char *err, size_t len)
{
	struct shown sa, sh;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST };
	struct addrinfo *ai;
	int gai;
	if (bracketed) {
		/* getaddrinfo rather than inet_pton: it also takes a scope, [fe80::1%eth0]. */
		hints.ai_family = AF_INET6;
		if (getaddrinfo(host, port, &hints, &ai) != 0) {
			fail(err, len, "%s: %s is not a valid address: %s is not an IPv6 "
			     "address (" LISTEN_FORMS ")", flag, show(&sa, spec), show(&sh, host));
			return -1;
		}
		freeaddrinfo(ai);
		return 0;
	}
	/* All digits and dots, or anything inet_aton would take ("127.1", "0x7f.1", "2130706433"):
	 * an IPv4 address, and only the dotted quad is accepted, so what is bound is what was
	 * written ("010.0.0.1" is not octal 8.0.0.1 here). */
	struct in_addr a4;
	hints.ai_family = AF_INET;
	bool numeric = strspn(host, "0123456789.") == strlen(host);
	if (!numeric && getaddrinfo(host, port, &hints, &ai) == 0) {
		freeaddrinfo(ai);
		numeric = true;
	}
	if (numeric) {
		if (inet_pton(AF_INET, host, &a4) == 1)
			return 0;
		fail(err, len, "%s: %s is not a valid address: %s is not an IPv4 address "
		     "(" IPV4_FORM "; " LISTEN_FORMS ")", flag, show(&sa, spec), show(&sh, host));
		return -1;
	}
	char whybuf[64];
	const char *why = not_a_name(host, whybuf, sizeof(whybuf));
	if (why) {
		fail(err, len, "%s: %s is not a valid address: %s is neither an IP address "
		     "nor a host name: %s (" LISTEN_FORMS ")", flag, show(&sa, spec),
		     show(&sh, host), why);
		return -1;
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	gai = getaddrinfo(host, port, &hints, &ai);
	if (gai != 0) {
		fail(err, len, "%s: %s cannot be resolved: %s (" LISTEN_FORMS ")", flag,
		     show(&sa, spec), gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		return -1;
	}
	freeaddrinfo(ai);
	return 0;
}

static int check_backend(const char *name, char *err, size_t len)
{
	if (strcmp(name, "auto") == 0 || backend_find(name))
		return 0;
	char known[256] = "auto";
	for (size_t i = 0; i < backend_count; i++) {
		strncat(known, ", ", sizeof(known) - strlen(known) - 1);
		strncat(known, backend_table[i]->name, sizeof(known) - strlen(known) - 1);
	}
	struct shown sh;
	fail(err, len, "--backend: unknown backend %s (known: %s)", show(&sh, name), known);
	return -1;
}

enum { OPT_LIST = 256, OPT_MAX_CONNS, OPT_CONN_BUFFER, OPT_BUFFERS, OPT_BUFFER_SIZE,
       OPT_IDLE, OPT_DRAIN, OPT_GRACE, OPT_LOG_LEVEL, OPT_METRICS, OPT_UNIX_MODE, OPT_PROXY, OPT_UDP_RATE,
       OPT_PROXY_TIMEOUT, OPT_USER };

static const struct option long_opts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "backend", required_argument, NULL, 'b' },
	{ "list-backends", no_argument, NULL, OPT_LIST },
	{ "threads", required_argument, NULL, 't' },
	{ "max-conns", required_argument, NULL, OPT_MAX_CONNS },
	{ "conn-buffer", required_argument, NULL, OPT_CONN_BUFFER },
	{ "buffers", required_argument, NULL, OPT_BUFFERS },
	{ "buffer-size", required_argument, NULL, OPT_BUFFER_SIZE },
	{ "idle-timeout", required_argument, NULL, OPT_IDLE },
	{ "drain-timeout", required_argument, NULL, OPT_DRAIN },
	{ "drain-grace", required_argument, NULL, OPT_GRACE },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "metrics", required_argument, NULL, OPT_METRICS },
	{ "unix-mode", required_argument, NULL, OPT_UNIX_MODE },
	{ "proxy-protocol", no_argument, NULL, OPT_PROXY },
	{ "udp-rate", required_argument, NULL, OPT_UDP_RATE },
	{ "proxy-timeout", required_argument, NULL, OPT_PROXY_TIMEOUT },
	{ "user", required_argument, NULL, OPT_USER },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static const char *long_name(int c)
{
	for (const struct option *o = long_opts; o->name; o++)
		if (o->val == c)
			return o->name;
	return "?";
}

/* A HOST:PORT for --listen or --metrics (`flag`), checked the same way for both, copied to
 * `out` (CONFIG_ADDR_LEN bytes). */
static int check_address(const char *flag, const char *spec, const char *s, char *out, char *err,
			 size_t len)
{
	struct shown sa, sh;
	char host[CONFIG_HOST_MAX + 1], port[8];
	bool bracketed;
	size_t hl;
	switch (split(s, host, sizeof(host), port, sizeof(port), &bracketed, &hl)) {
	case SPLIT_OK:
		break;
	case SPLIT_FORM:
		fail(err, len, "%s: %s is not HOST:PORT (" LISTEN_FORMS "; PORT 0 to 65535)", flag,
		     show(&sa, spec));
		return -1;
	case SPLIT_PORT:
		fail(err, len, "%s: %s: port %s is out of range (0 to 65535)", flag, show(&sa, spec),
		     show(&sh, strrchr(s, ':') + 1));
		return -1;
	case SPLIT_LONG:
		memcpy(host, s + bracketed, 24);
		host[24] = '\0';
		fail(err, len, "%s: host %s... is %zu characters, too long (at most %d)", flag,
		     show(&sh, host), hl, CONFIG_HOST_MAX);
		return -1;
	}
	if (check_host(flag, spec, host, port, bracketed, err, len) < 0)
		return -1;
	snprintf(out, CONFIG_ADDR_LEN, "%s", s); /* fits: split() */
	return 0;
}

static bool too_many(const char *flag, int n, char *err, size_t len)
{
	if (n < CONFIG_MAX_LISTEN)
		return false;
	fail(err, len, "%s: too many addresses (at most %d)", flag, CONFIG_MAX_LISTEN);
	return true;
}

/* unix:/path or unix:@name: a path that fits sun_path; the file itself is looked at when the
 * server binds (a stale socket is removed then, a live one refused). */
static int check_unix_path(const char *spec, const char *path, char *err, size_t len)
{
	struct shown sa;
	size_t n = strlen(path);
	if (n == 0 || (path[0] == '@' && n == 1)) {
		fail(err, len, "--listen: %s names no socket (expected unix:/path or unix:@name)",
		     show(&sa, spec));
		return -1;
	}
	if (n > CONFIG_UNIX_PATH_MAX) {
		fail(err, len, "--listen: %s: the path is %zu bytes, too long for a Unix socket "
		     "(at most %d)", show(&sa, spec), n, CONFIG_UNIX_PATH_MAX);
		return -1;
	}
	return 0;
}

static int add_listen(struct echod_config *cfg, const char *s, char *err, size_t len)
{
	struct config_listener l = { .kind = LISTEN_TCP };
	const char *rest = s;
	if (too_many("--listen", cfg->nlisten, err, len))
		return -1;
	if (strncmp(s, "tcp:", 4) == 0) {
		rest = s + 4;
	} else if (strncmp(s, "udp:", 4) == 0) {
		l.kind = LISTEN_UDP;
		rest = s + 4;
	} else if (strncmp(s, "unix:", 5) == 0) {
		l.kind = LISTEN_UNIX;
		rest = s + 5;
		if (check_unix_path(s, rest, err, len) < 0)
			return -1;
		snprintf(l.addr, sizeof(l.addr), "%s", rest);
	}
	if (l.kind != LISTEN_UNIX && check_address("--listen", s, rest, l.addr, err, len) < 0)
		return -1;
	cfg->listen[cfg->nlisten++] = l;
	return 0;
}

/* --unix-mode: octal permission bits, as chmod takes them ("660", "0660"). */
static int parse_mode(const char *arg, int *mode, char *err, size_t len)
{
	struct shown sh;
	size_t n = strlen(arg);
	if (n == 0 || n > 4 || strspn(arg, "01234567") != n) {
		fail(err, len, "--unix-mode: %s is not an octal mode (e.g. 0660, 0600)",
		     show(&sh, arg));
		return -1;
	}
	unsigned long m = strtoul(arg, NULL, 8);
	if (m > 0777) {
		fail(err, len, "--unix-mode: %s has bits beyond 0777 (setuid, setgid and sticky "
		     "mean nothing on a socket)", show(&sh, arg));
		return -1;
	}
	*mode = (int)m;
	return 0;
}

static int apply(struct echod_config *cfg, int c, const char *arg, char *err, size_t len)
{
	uint32_t v;
	/* A value that is itself a long option means the value was left out: "--listen
	 * --threads 2" would otherwise complain that "--threads" is not HOST:PORT. */
	if (strncmp(arg, "--", 2) == 0) {
		struct shown sh;
		fail(err, len, "option '--%s' needs a value (got %s)", long_name(c), show(&sh, arg));
		return -1;
	}
	switch (c) {
	case 'l':
		return add_listen(cfg, arg, err, len);
	case OPT_METRICS:
		if (too_many("--metrics", cfg->nmetrics, err, len) ||
		    check_address("--metrics", arg, arg, cfg->metrics[cfg->nmetrics], err, len) < 0)
			return -1;
		cfg->nmetrics++;
		return 0;
	case OPT_UNIX_MODE:
		return parse_mode(arg, &cfg->unix_mode, err, len);
	case OPT_USER: {
		/* The name is looked up when echod starts (exit 64 if there is no such user); here
		 * only its form: what useradd accepts, which never needs quoting in a log line. */
		size_t n = strlen(arg);
		struct shown sh;
		if (n == 0 || n >= sizeof(cfg->user) ||
		    strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
			    n || arg[0] == '-') {
			fail(err, len, "--user: %s is not a user name (letters, digits, '_', '.', "
			     "'-'; at most %zu characters)", show(&sh, arg), sizeof(cfg->user) - 1);
			return -1;
		}
		memcpy(cfg->user, arg, n + 1);
		return 0;
	}
	case OPT_PROXY_TIMEOUT:
		if (parse_seconds("--proxy-timeout", arg, PROXY_TIMEOUT_MAX_S, "", &cfg->proxy_timeout_ms,
				  err, len) < 0)
			return -1;
		if (cfg->proxy_timeout_ms == 0) {
			fail(err, len, "--proxy-timeout: 0 would wait forever for a header; give at "
			     "least 0.001");
			return -1;
		}
		return 0;
	case OPT_UDP_RATE:
		return parse_number("--udp-rate", arg, false, 0, UDP_RATE_MAX, &cfg->udp_rate, err,
				    len);
	case 'b':
		if (check_backend(arg, err, len) < 0)
			return -1;
		snprintf(cfg->backend, sizeof(cfg->backend), "%s", arg); /* known names are short */
		return 0;
	case 't':
		if (parse_number("--threads", arg, false, THREADS_MIN, THREADS_MAX, &v, err, len) < 0)
			return -1;
		cfg->threads = v;
		return 0;
	case OPT_MAX_CONNS:
		return parse_number("--max-conns", arg, false, MAX_CONNS_MIN, MAX_CONNS_MAX,
				    &cfg->max_conns, err, len);
	case OPT_CONN_BUFFER:
		return parse_number("--conn-buffer", arg, true, CONN_BUFFER_MIN, CONN_BUFFER_MAX,
				    &cfg->conn_buffer, err, len);
	case OPT_BUFFERS:
		return parse_number("--buffers", arg, false, BUFFERS_MIN, BUFFERS_MAX, &cfg->buffers,
				    err, len);
	case OPT_BUFFER_SIZE:
		return parse_number("--buffer-size", arg, true, BUFFER_SIZE_MIN, BUFFER_SIZE_MAX,
				    &cfg->buffer_size, err, len);
	case OPT_IDLE:
		return parse_seconds("--idle-timeout", arg, IDLE_TIMEOUT_MAX_S, "0 = never",
				     &cfg->idle_timeout_ms, err, len);
	case OPT_DRAIN:
		return parse_seconds("--drain-timeout", arg, DRAIN_TIMEOUT_MAX_S, "0 = close at once",
				     &cfg->drain_timeout_ms, err, len);
	case OPT_GRACE:
		return parse_seconds("--drain-grace", arg, DRAIN_TIMEOUT_MAX_S, "0 = drain at once",
				     &cfg->drain_grace_ms, err, len);
	case OPT_LOG_LEVEL:
		if (log_level_parse(arg, &cfg->log_level) < 0) {
			struct shown sh;
			fail(err, len, "--log-level: %s is not a level (expected error, warn, info "
			     "or debug)", show(&sh, arg));
			return -1;
		}
		return 0;
	default:
		return -1;
	}
}

/* An option word as typed, in single quotes like the option names of the other messages
 * (show() already quotes, and escapes, one that needs it). */
static const char *show_word(struct shown *b, const char *w)
{
	struct shown t;
	show(&t, w);
	snprintf(b->s, sizeof(b->s), t.s[0] == '\'' ? "%s" : "'%s'", t.s);
	return b->s;
}

/* getopt_long's '?' covers three mistakes; say which. `arg` is the word it stopped at. */
static void bad_option(const char *arg, char *err, size_t len)
{
	struct shown sh;
	if (strncmp(arg, "--", 2) != 0) {
		char opt[2] = { (char)optopt, '\0' }; /* a control byte too: shown escaped */
		fail(err, len, "unknown option '-%s'", show(&sh, opt));
		return;
	}
	const char *name = arg + 2;
	size_t n = strcspn(name, "=");
	char word[40];
	snprintf(word, sizeof(word), "--%.*s", (int)(n < 30 ? n : 30), name);
	char matches[160] = "";
	int count = 0;
	const struct option *hit = NULL;
	for (const struct option *o = long_opts; o->name && n > 0; o++) {
		if (strncmp(o->name, name, n) != 0)
			continue;
		if (strlen(o->name) == n) { /* exact: it can only have had a value it takes none */
			hit = o;
			count = 1;
			break;
		}
		hit = o;
		count++;
		snprintf(matches + strlen(matches), sizeof(matches) - strlen(matches), "%s--%s",
			 count > 1 ? ", " : "", o->name);
	}
	if (count == 1 && name[n] == '=' && hit->has_arg == no_argument)
		fail(err, len, "option '--%s' takes no value", hit->name);
	else if (count > 1)
		fail(err, len, "option %s is ambiguous (%s)", show_word(&sh, word), matches);
	else
		fail(err, len, "unknown option %s", show_word(&sh, n ? word : arg));
}

enum config_action config_parse(struct echod_config *cfg, int argc, char **argv, char *err,
				size_t errlen)
{
	config_defaults(cfg);
	enum config_action action = CONFIG_RUN;
	optind = 0; /* glibc: full re-initialisation, so tests may parse many times */
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":l:b:t:hV", long_opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			action = CONFIG_HELP;
			break;
		case 'V':
			action = CONFIG_VERSION;
			break;
		case OPT_LIST:
			action = CONFIG_LIST_BACKENDS;
			break;
		case OPT_PROXY:
			cfg->proxy_protocol = true;
			break;
		case ':':
			fail(err, errlen, "option '%s' needs a value", argv[optind - 1]);
			return CONFIG_ERROR;
		case '?':
			bad_option(argv[optind - 1], err, errlen);
			return CONFIG_ERROR;
		default:
			if (apply(cfg, c, optarg, err, errlen) < 0)
				return CONFIG_ERROR;
		}
	}
	if (optind < argc) {
		struct shown sh;
		fail(err, errlen, "unexpected argument '%s'", show(&sh, argv[optind]));
		return CONFIG_ERROR;
	}
	if (cfg->conn_buffer < cfg->buffer_size) {
		char cb[24], bs[24];
		fail(err, errlen, "--conn-buffer (%s) must be at least --buffer-size (%s)",
		     show_size(cb, sizeof(cb), cfg->conn_buffer),
		     show_size(bs, sizeof(bs), cfg->buffer_size));
		return CONFIG_ERROR;
	}
	if (cfg->nlisten == 0) {
		add_listen(cfg, DEFAULT_LISTEN, err, errlen);
		cfg->listen_default = true;
	}
	return action;
}
