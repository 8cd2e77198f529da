/* config.c - command-line parsing and validation (getopt_long). Every value is range-checked
 * here, so the rest of echod can trust its config; every error is one line naming the flag,
 * the value and what would be accepted. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "reactor.h"

#define DEFAULT_LISTEN "127.0.0.1:65432"

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
}

void config_usage(FILE *out)
{
	fprintf(out,
		"Usage: echod [OPTION]...\n"
		"A TCP echo server (RFC 862) with a choice of kernel event interfaces.\n"
		"\n"
		"  -l, --listen HOST:PORT     address to serve; repeatable; [::1]:PORT for IPv6;\n"
		"                             PORT 0 picks a free port (logged) [" DEFAULT_LISTEN "]\n"
		"  -b, --backend NAME         auto, uring, epoll, uring-poll, poll, select [auto]\n"
		"      --list-backends        show the backends built in and whether they run here\n"
		"  -t, --threads N            worker loops, all accepting from the same listeners [1]\n"
		"      --max-conns N          connections for the whole process; more are accepted\n"
		"                             and reset at once [10000]\n"
		"      --conn-buffer BYTES    per-connection high-water mark of unsent bytes [256K]\n"
		"      --buffers N            receive buffers per worker [2048]\n"
		"      --buffer-size BYTES    bytes per receive buffer [8K]\n"
		"      --idle-timeout SECONDS close connections silent this long; 0 = never [0]\n"
		"      --drain-timeout SECONDS on SIGTERM/SIGINT, time to flush queued echoes [5]\n"
		"      --log-level LEVEL      error, warn, info, debug [info]\n"
		"  -h, --help                 this help\n"
		"  -V, --version              version\n"
		"\n"
		"BYTES take K or M suffixes (powers of 1024). Logs go to stderr, one logfmt line each.\n"
		"Exit status: 0 after a clean stop, 64 bad usage, 69 backend cannot run here,\n"
		"71 cannot listen, 1 other failure.\n");
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

/* A whole decimal number, optionally with a K/M suffix when `bytes`. */
static int parse_u64(const char *s, bool bytes, uint64_t *out)
{
	if (!s[0] || !isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	if (bytes && (*end == 'K' || *end == 'k')) {
		v *= 1024;
		end++;
	} else if (bytes && (*end == 'M' || *end == 'm')) {
		v *= 1024 * 1024;
		end++;
	}
	if (*end)
		return -1;
	*out = v;
	return 0;
}

static int parse_range(const char *flag, const char *s, bool bytes, uint64_t min, uint64_t max,
		       uint32_t *out, char *err, size_t len)
{
	uint64_t v;
	if (parse_u64(s, bytes, &v) < 0 || v < min || v > max) {
		fail(err, len, "invalid value for %s: '%s' (expected %s%llu..%llu)", flag, s,
		     bytes ? "bytes " : "", (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

/* Seconds with up to three decimals, e.g. "5", "0.25". */
static int parse_seconds(const char *flag, const char *s, uint32_t max_s, uint32_t *out_ms,
			 char *err, size_t len)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!s[0] || *end || errno || !(v >= 0) || v > max_s || !isdigit((unsigned char)s[0])) {
		fail(err, len, "invalid value for %s: '%s' (expected seconds 0..%u)", flag, s,
		     max_s);
		return -1;
	}
	*out_ms = (uint32_t)(v * 1000.0 + 0.5);
	return 0;
}

int config_split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon;
	const char *h = s;
	size_t hl;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return -1; /* bare IPv6 needs brackets */
		hl = (size_t)(colon - s);
	}
	const char *p = colon + 1;
	if (hl == 0 || hl >= hostlen || !p[0] || strlen(p) >= portlen)
		return -1;
	for (const char *q = p; *q; q++)
		if (!isdigit((unsigned char)*q))
			return -1;
	if (strtoul(p, NULL, 10) > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, p);
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
	fail(err, len, "unknown backend '%s' (known: %s)", name, known);
	return -1;
}

enum { OPT_LIST = 256, OPT_MAX_CONNS, OPT_CONN_BUFFER, OPT_BUFFERS, OPT_BUFFER_SIZE,
       OPT_IDLE, OPT_DRAIN, OPT_LOG_LEVEL };

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
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static int add_listen(struct echod_config *cfg, const char *s, char *err, size_t len)
{
	char host[CONFIG_ADDR_LEN], port[8];
	if (config_split_hostport(s, host, sizeof(host), port, sizeof(port)) < 0) {
		fail(err, len, "invalid value for --listen: '%s' (expected HOST:PORT, e.g. "
		     "127.0.0.1:65432 or [::1]:65432, port 0..65535)", s);
		return -1;
	}
	if (cfg->nlisten == CONFIG_MAX_LISTEN) {
		fail(err, len, "too many --listen addresses (at most %d)", CONFIG_MAX_LISTEN);
		return -1;
	}
	snprintf(cfg->listen[cfg->nlisten++], CONFIG_ADDR_LEN, "%s", s);
	return 0;
}

static int apply(struct echod_config *cfg, int c, const char *arg, char *err, size_t len)
{
	uint32_t v;
	switch (c) {
	case 'l':
		return add_listen(cfg, arg, err, len);
	case 'b':
		if (check_backend(arg, err, len) < 0)
			return -1;
		snprintf(cfg->backend, sizeof(cfg->backend), "%s", arg); /* known names are short */
		return 0;
	case 't':
		if (parse_range("--threads", arg, false, 1, 256, &v, err, len) < 0)
			return -1;
		cfg->threads = v;
		return 0;
	case OPT_MAX_CONNS:
		return parse_range("--max-conns", arg, false, 1, 1000000, &cfg->max_conns, err, len);
	case OPT_CONN_BUFFER:
		return parse_range("--conn-buffer", arg, true, 1024, 64u << 20, &cfg->conn_buffer,
				   err, len);
	case OPT_BUFFERS:
		return parse_range("--buffers", arg, false, 16, 32768, &cfg->buffers, err, len);
	case OPT_BUFFER_SIZE:
		return parse_range("--buffer-size", arg, true, 512, 1u << 20, &cfg->buffer_size,
				   err, len);
	case OPT_IDLE:
		return parse_seconds("--idle-timeout", arg, 86400, &cfg->idle_timeout_ms, err, len);
	case OPT_DRAIN:
		return parse_seconds("--drain-timeout", arg, 3600, &cfg->drain_timeout_ms, err, len);
	case OPT_LOG_LEVEL:
		if (log_level_parse(arg, &cfg->log_level) < 0) {
			fail(err, len, "invalid value for --log-level: '%s' (expected error, warn, "
			     "info or debug)", arg);
			return -1;
		}
		return 0;
	default:
		return -1;
	}
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
		case ':':
			fail(err, errlen, "option '%s' needs a value", argv[optind - 1]);
			return CONFIG_ERROR;
		case '?':
			if (optopt)
				fail(err, errlen, "unknown option '-%c'", optopt);
			else
				fail(err, errlen, "unknown option '%s'", argv[optind - 1]);
			return CONFIG_ERROR;
		default:
			if (apply(cfg, c, optarg, err, errlen) < 0)
				return CONFIG_ERROR;
		}
	}
	if (optind < argc) {
		fail(err, errlen, "unexpected argument '%s'", argv[optind]);
		return CONFIG_ERROR;
	}
	if (cfg->conn_buffer < cfg->buffer_size) {
		fail(err, errlen, "--conn-buffer (%u) must be at least --buffer-size (%u)",
		     cfg->conn_buffer, cfg->buffer_size);
		return CONFIG_ERROR;
	}
	if (cfg->nlisten == 0)
		add_listen(cfg, DEFAULT_LISTEN, err, errlen);
	return action;
}
