/* fuzz_config.c - libFuzzer harness for the command line (config_parse, engine/config.c).
 * Beyond what ASan and UBSan catch, it aborts when an invariant breaks:
 *   - a parse that does not fail leaves a value outside its documented range (README, Usage),
 *     or an address, backend, user or mode the parser should have refused;
 *   - a failure leaves anything but one non-empty line in the error buffer (no control
 *     characters), NUL-terminated, and a shorter buffer gets a prefix of the same line;
 *   - the same argv parsed twice gives a different result (getopt's state is reset per call);
 *   - one flag's N, BYTES or SECONDS value is accepted, refused or converted otherwise than an
 *     independent reading of the README's rules says;
 *   - a size the parser prints (a range's bounds, or "--conn-buffer (X) must be at least
 *     --buffer-size (Y)") does not read back as the value it stands for.
 * Input: first byte below 0x80: one value flag (byte % flags) and its value (the rest, up to a
 * NUL), as "--flag VALUE" or, with bit 0x40, "--flag=VALUE". Otherwise an argv vector: the
 * rest split on NUL bytes; a word starting 0x01 is the flag named by its next byte (known
 * flags, so the value parsers are reached), followed by the word's remainder, if any, as the
 * next argument; one starting 0x02 is that flag with "=" and the remainder in the same word.
 * Hermetic: config.c's getaddrinfo is fuzz_getaddrinfo below (renamed by the Makefile), which
 * answers numeric hosts and "localhost" only: no DNS query, the same answer every run. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "reactor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_getaddrinfo(const char *host, const char *port, const struct addrinfo *hints,
		     struct addrinfo **res);
int fuzz_clock_gettime(clockid_t clk, struct timespec *ts);

#define check(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_config: %s:%d: invariant broken: %s\n",        \
				__FILE__, __LINE__, #cond);                                  \
			abort();                                                             \
		}                                                                            \
	} while (0)

#define MAX_WORDS 24
#define MAX_WORD 256
#define ERR_LEN 1024 /* main.c's */
#define ERR_SHORT 40

int fuzz_getaddrinfo(const char *host, const char *port, const struct addrinfo *hints,
		     struct addrinfo **res)
{
	if (hints && (hints->ai_flags & AI_NUMERICHOST))
		return getaddrinfo(host, port, hints, res);
	if (host && strcmp(host, "localhost") == 0) {
		struct addrinfo h = *hints;
		h.ai_flags |= AI_NUMERICHOST;
		return getaddrinfo("127.0.0.1", port, &h, res);
	}
	return EAI_NONAME;
}

/* reactor.o is built with its clock renamed for fuzz_echo_core; nothing here runs a loop. */
int fuzz_clock_gettime(clockid_t clk, struct timespec *ts)
{
	return clock_gettime(clk, ts);
}

/* --- the documented ranges, and an independent reading of the value rules --------------- */

enum kind { K_NUMBER, K_BYTES, K_SECONDS, K_MODE };

struct value_flag {
	const char *name;
	enum kind kind;
	uint64_t min, max; /* K_SECONDS: max in seconds; min 1 means 0 is refused */
};

static const struct value_flag value_flags[] = {
	{ "threads", K_NUMBER, 1, 256 },
	{ "max-conns", K_NUMBER, 1, 1000000 },
	{ "buffers", K_NUMBER, 16, 32768 },
	{ "udp-rate", K_NUMBER, 0, 10000000 },
	{ "buffer-size", K_BYTES, 512, 1u << 20 },
	{ "conn-buffer", K_BYTES, 1024, 64u << 20 },
	{ "idle-timeout", K_SECONDS, 0, 86400 },
	{ "drain-timeout", K_SECONDS, 0, 3600 },
	{ "drain-grace", K_SECONDS, 0, 3600 },
	{ "proxy-timeout", K_SECONDS, 1, 3600 },
	{ "unix-mode", K_MODE, 0, 0777 },
};
#define NVALUE_FLAGS (sizeof(value_flags) / sizeof(value_flags[0]))

/* Leading zeros off; more than `most` significant digits: too big for any range here. */
static bool ref_digits(const char *s, size_t n, size_t most, uint64_t *v)
{
	while (n > 1 && *s == '0') {
		s++;
		n--;
	}
	if (n > most)
		return false;
	*v = 0;
	for (size_t i = 0; i < n; i++)
		*v = *v * 10 + (uint64_t)(s[i] - '0');
	return true;
}

/* N: decimal digits only; BYTES: the same, then optionally K or M (either case, 1024^k). */
static bool ref_number(const char *s, bool bytes, uint64_t min, uint64_t max, uint64_t *out)
{
	size_t n = strspn(s, "0123456789");
	const char *t = s + n;
	uint64_t mult = 1, v;
	if (bytes && (*t == 'K' || *t == 'k'))
		mult = 1024, t++;
	else if (bytes && (*t == 'M' || *t == 'm'))
		mult = 1024 * 1024, t++;
	if (n == 0 || *t || !ref_digits(s, n, 12, &v))
		return false;
	v *= mult; /* < 10^12 * 2^20: no overflow */
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* SECONDS: digits, optionally '.' and digits; at most max; 0 or at least 0.001; rounded half
 * up to the millisecond (which only the fourth decimal decides). */
static bool ref_seconds(const char *s, uint64_t max_s, uint64_t *ms)
{
	size_t w = strspn(s, "0123456789"), nf = 0;
	const char *f = s + w;
	if (*f == '.') {
		f++;
		nf = strspn(f, "0123456789");
		if (nf == 0)
			return false;
	}
	uint64_t whole;
	if (w == 0 || f[nf] != '\0' || !ref_digits(s, w, 12, &whole))
		return false;
	bool frac_nonzero = strspn(f, "0") < nf;
	if (whole > max_s || (whole == max_s && frac_nonzero))
		return false;
	uint64_t milli = 0;
	for (size_t i = 0; i < 3; i++)
		milli = milli * 10 + (i < nf ? (uint64_t)(f[i] - '0') : 0);
	if (whole == 0 && milli == 0 && frac_nonzero)
		return false;
	*ms = whole * 1000 + milli + (nf > 3 && f[3] >= '5');
	return true;
}

/* MODE: one to four octal digits, at most 0777. */
static bool ref_mode(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	if (n == 0 || n > 4 || strspn(s, "01234567") != n)
		return false;
	*out = strtoul(s, NULL, 8);
	return *out <= 0777;
}

/* --- running the parser ------------------------------------------------------------------ */

struct outcome {
	enum config_action action;
	struct echod_config cfg;
	char err[ERR_LEN];
};

/* One line, NUL-terminated, not empty; control characters would break the line in a log. */
static void check_message(const char *err, size_t cap)
{
	size_t n = strnlen(err, cap);
	check(n < cap);
	check(n > 0);
	for (size_t i = 0; i < n; i++)
		check((unsigned char)err[i] >= 0x20 && err[i] != 0x7f);
}

static enum config_action parse_into(struct echod_config *cfg, char *const words[], int n,
				     char *err, size_t errlen)
{
	char *argv[MAX_WORDS + 2];
	argv[0] = "echod";
	memcpy(argv + 1, words, sizeof(*words) * (size_t)n); /* getopt permutes its copy */
	argv[n + 1] = NULL;
	return config_parse(cfg, n + 1, argv, err, errlen);
}

/* Parses words[0..n) with a buffer exactly ERR_LEN long (ASan sees an overrun) and checks
 * what every parse must keep; fills *o. */
static void run(char *const words[], int n, struct outcome *o)
{
	char *err = malloc(ERR_LEN);
	check(err != NULL);
	memset(err, 0x5a, ERR_LEN);
	o->action = parse_into(&o->cfg, words, n, err, ERR_LEN);
	if (o->action == CONFIG_ERROR)
		check_message(err, ERR_LEN);
	memcpy(o->err, err, ERR_LEN);
	free(err);

	/* Again, with a short buffer: the same verdict and values, the same line cut short. */
	struct echod_config again;
	char *shorter = malloc(ERR_SHORT);
	check(shorter != NULL);
	memset(shorter, 0x5a, ERR_SHORT);
	check(parse_into(&again, words, n, shorter, ERR_SHORT) == o->action);
	check(memcmp(&again, &o->cfg, sizeof(again)) == 0);
	if (o->action == CONFIG_ERROR) {
		check_message(shorter, ERR_SHORT);
		check(strncmp(shorter, o->err, ERR_SHORT - 1) == 0);
	}
	free(shorter);
}

static void check_host_port(const char *addr, bool unix_path)
{
	check(strnlen(addr, CONFIG_ADDR_LEN) < CONFIG_ADDR_LEN);
	if (unix_path) {
		size_t n = strlen(addr);
		check(n >= 1 && n <= CONFIG_UNIX_PATH_MAX && strcmp(addr, "@") != 0);
		return;
	}
	char host[CONFIG_HOST_MAX + 1], port[8];
	check(config_split_hostport(addr, host, sizeof(host), port, sizeof(port)) == 0);
	if (addr[0] == '[') {
		struct addrinfo hints = { .ai_family = AF_INET6,
					  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
		struct addrinfo *ai;
		check(getaddrinfo(host, port, &hints, &ai) == 0);
		freeaddrinfo(ai);
		return;
	}
	struct in_addr a4;
	check(inet_pton(AF_INET, host, &a4) == 1 || strcmp(host, "localhost") == 0);
}

/* Everything a config that did not fail must hold: every range, every refusal. */
static void check_config(const struct echod_config *c)
{
	check(c->threads >= 1 && c->threads <= 256);
	check(c->max_conns >= 1 && c->max_conns <= 1000000);
	check(c->buffers >= 16 && c->buffers <= 32768);
	check(c->buffer_size >= 512 && c->buffer_size <= (1u << 20));
	check(c->conn_buffer >= 1024 && c->conn_buffer <= (64u << 20));
	check(c->conn_buffer >= c->buffer_size);
	check(c->idle_timeout_ms <= 86400u * 1000);
	check(c->drain_timeout_ms <= 3600u * 1000);
	check(c->drain_grace_ms <= 3600u * 1000);
	check(c->proxy_timeout_ms >= 1 && c->proxy_timeout_ms <= 3600u * 1000);
	check(c->udp_rate <= 10000000);
	check(c->unix_mode == -1 || (c->unix_mode >= 0 && c->unix_mode <= 0777));
	check(c->log_level >= LOG_ERROR && c->log_level <= LOG_DEBUG);
	check(strnlen(c->backend, sizeof(c->backend)) < sizeof(c->backend));
	check(strcmp(c->backend, "auto") == 0 || backend_find(c->backend) != NULL);
	size_t un = strnlen(c->user, sizeof(c->user));
	check(un < sizeof(c->user));
	check(un == 0 || (c->user[0] != '-' &&
			  strspn(c->user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					  "0123456789_.-") == un));
	check(c->nlisten >= 1 && c->nlisten <= CONFIG_MAX_LISTEN);
	check(c->nmetrics >= 0 && c->nmetrics <= CONFIG_MAX_LISTEN);
	for (int i = 0; i < c->nlisten; i++) {
		check(c->listen[i].kind == LISTEN_TCP || c->listen[i].kind == LISTEN_UDP ||
		      c->listen[i].kind == LISTEN_UNIX);
		check_host_port(c->listen[i].addr, c->listen[i].kind == LISTEN_UNIX);
	}
	for (int i = 0; i < c->nmetrics; i++)
		check_host_port(c->metrics[i], false);
	if (c->listen_default)
		check(c->nlisten == 1 && c->listen[0].kind == LISTEN_TCP &&
		      strcmp(c->listen[0].addr, "127.0.0.1:65432") == 0);
}

/* "... must be at least --buffer-size (Y)": both sizes, as printed, read back as the values. */
static void check_size_message(const struct outcome *o)
{
	char cb[32], bs[32];
	if (sscanf(o->err, "--conn-buffer (%31[^)]) must be at least --buffer-size (%31[^)])", cb,
		   bs) != 2)
		return;
	char *words[] = { "--conn-buffer", cb, "--buffer-size", bs };
	struct outcome back;
	run(words, 4, &back);
	check(back.action == CONFIG_ERROR && strcmp(back.err, o->err) == 0);
	check(back.cfg.conn_buffer == o->cfg.conn_buffer);
	check(back.cfg.buffer_size == o->cfg.buffer_size);
}

/* "... is out of range (LO to HI)", the line's end: the bounds, as printed (sizes as the help
 * text prints them), read back as the flag's documented range. Only for a value of digits,
 * signs and suffixes, which cannot itself contain the words. */
static void check_range_message(const struct value_flag *f, const char *value, const char *err)
{
	const char *r = strstr(err, "out of range (");
	char lo[32], hi[32];
	int end = -1;
	uint64_t v;
	if (strspn(value, "-0123456789KkMm") != strlen(value) || !r ||
	    sscanf(r, "out of range (%31s to %31[^)])%n", lo, hi, &end) != 2 || end < 0 ||
	    r[end] != '\0')
		return;
	check(ref_number(lo, f->kind == K_BYTES, 0, UINT64_MAX, &v) && v == f->min);
	check(ref_number(hi, f->kind == K_BYTES, 0, UINT64_MAX, &v) && v == f->max);
}

/* --- the two input forms ----------------------------------------------------------------- */

static void fuzz_value(const uint8_t *data, size_t size)
{
	const struct value_flag *f = &value_flags[data[0] % NVALUE_FLAGS];
	char value[MAX_WORD + 1], joined[MAX_WORD + 32];
	size_t n = strnlen((const char *)data + 1, size - 1);
	if (n > MAX_WORD)
		n = MAX_WORD;
	memcpy(value, data + 1, n);
	value[n] = '\0';
	char flag[32];
	snprintf(flag, sizeof(flag), "--%s", f->name);
	snprintf(joined, sizeof(joined), "%s=%s", flag, value);
	char *sep[] = { flag, value }, *one[] = { joined };
	struct outcome o;
	if (data[0] & 0x40)
		run(one, 1, &o);
	else
		run(sep, 2, &o);

	uint64_t want = 0;
	bool ok;
	switch (f->kind) {
	case K_NUMBER:
	case K_BYTES:
		ok = ref_number(value, f->kind == K_BYTES, f->min, f->max, &want);
		break;
	case K_SECONDS:
		ok = ref_seconds(value, f->max, &want) && want >= f->min;
		break;
	default:
		ok = ref_mode(value, &want);
	}
	/* The other of the pair keeps its default: --conn-buffer 256K, --buffer-size 8K. */
	if (ok && strcmp(f->name, "buffer-size") == 0)
		ok = want <= 256 * 1024;
	if (ok && strcmp(f->name, "conn-buffer") == 0)
		ok = want >= 8192;
	check(ok == (o.action == CONFIG_RUN));
	if (!ok) {
		check_size_message(&o);
		if (f->kind == K_NUMBER || f->kind == K_BYTES)
			check_range_message(f, value, o.err);
		return;
	}
	const struct echod_config *c = &o.cfg;
	static const size_t field[] = {
		offsetof(struct echod_config, threads),	      offsetof(struct echod_config, max_conns),
		offsetof(struct echod_config, buffers),	      offsetof(struct echod_config, udp_rate),
		offsetof(struct echod_config, buffer_size),   offsetof(struct echod_config, conn_buffer),
		offsetof(struct echod_config, idle_timeout_ms),
		offsetof(struct echod_config, drain_timeout_ms),
		offsetof(struct echod_config, drain_grace_ms),
		offsetof(struct echod_config, proxy_timeout_ms),
	};
	if (f->kind == K_MODE) {
		check(c->unix_mode == (int)want);
	} else {
		uint32_t got; /* every one of these fields is 32 bits (threads: unsigned) */
		memcpy(&got, (const char *)c + field[f - value_flags], sizeof(got));
		check(got == want);
	}
	check_config(c);
}

static const char *const known_flags[] = {
	"--listen",	  "-l",		     "--backend",     "-b",	       "--list-backends",
	"--threads",	  "-t",		     "--max-conns",   "--conn-buffer", "--buffers",
	"--buffer-size",  "--idle-timeout",  "--drain-timeout", "--drain-grace", "--log-level",
	"--metrics",	  "--unix-mode",     "--proxy-protocol", "--udp-rate", "--proxy-timeout",
	"--user",	  "--help",	     "-h",	      "--version",     "-V",
	"--",
};
#define NKNOWN (sizeof(known_flags) / sizeof(known_flags[0]))

static void fuzz_argv(const uint8_t *data, size_t size)
{
	static char store[MAX_WORDS][MAX_WORD + 40];
	char *words[MAX_WORDS];
	int n = 0;
	size_t i = 0;
	while (i < size && n < MAX_WORDS) {
		const char *w = (const char *)data + i;
		size_t len = strnlen(w, size - i);
		i += len + 1;
		size_t take = len < MAX_WORD ? len : MAX_WORD;
		if (take >= 2 && (w[0] == 1 || w[0] == 2)) {
			const char *flag = known_flags[(uint8_t)w[1] % NKNOWN];
			if (w[0] == 2) {
				snprintf(store[n], sizeof(store[n]), "%s=%.*s", flag, (int)take - 2,
					 w + 2);
				words[n] = store[n];
				n++;
				continue;
			}
			snprintf(store[n], sizeof(store[n]), "%s", flag);
			words[n] = store[n];
			n++;
			if (take == 2 || n == MAX_WORDS)
				continue;
			w += 2;
			take -= 2;
		}
		memcpy(store[n], w, take);
		store[n][take] = '\0';
		words[n] = store[n];
		n++;
	}
	struct outcome o;
	run(words, n, &o);
	if (o.action == CONFIG_ERROR)
		check_size_message(&o);
	else
		check_config(&o.cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] < 0x80)
		fuzz_value(data, size);
	else
		fuzz_argv(data + 1, size - 1);
	return 0;
}
