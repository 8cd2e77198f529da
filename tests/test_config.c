/* test_config.c - echod's command line: every flag, its range, and the exact one-line
 * messages for bad input; plus the CLI's exit codes and help/version on stdout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "lib_proc.h"

static enum config_action parse(struct echod_config *cfg, char *err, const char *const *args)
{
	char *argv[32] = { "echod" };
	int argc = 1;
	for (int i = 0; args[i]; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;
	err[0] = '\0';
	return config_parse(cfg, argc, argv, err, 1024);
}

/* Parse args, which must be refused; err gets the line. Says which args were taken if not. */
static void refuse(const char *const *args, char *err)
{
	struct echod_config cfg;
	enum config_action a = parse(&cfg, err, args);
	if (a == CONFIG_ERROR)
		return;
	char line[1024] = "";
	for (int i = 0; args[i]; i++)
		snprintf(line + strlen(line), sizeof(line) - strlen(line), " %s", args[i]);
	print_error("echod%s: accepted (action %d; threads=%u max_conns=%u conn_buffer=%u "
		    "buffers=%u buffer_size=%u idle_timeout_ms=%u drain_timeout_ms=%u), "
		    "want an error\n", line, (int)a, cfg.threads, cfg.max_conns, cfg.conn_buffer,
		    cfg.buffers, cfg.buffer_size, cfg.idle_timeout_ms, cfg.drain_timeout_ms);
	fail();
}

static void expect_error(const char *const *args, const char *message)
{
	char err[1024];
	refuse(args, err);
	assert_string_equal(err, message);
}

static void test_defaults(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *args[] = { NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_RUN);
	assert_int_equal(cfg.nlisten, 1);
	assert_string_equal(cfg.listen[0].addr, "127.0.0.1:65432");
	assert_string_equal(cfg.backend, "auto");
	assert_int_equal(cfg.threads, 1);
	assert_int_equal(cfg.max_conns, 10000);
	assert_int_equal(cfg.conn_buffer, 256 * 1024);
	assert_int_equal(cfg.buffers, 2048);
	assert_int_equal(cfg.buffer_size, 8192);
	assert_int_equal(cfg.idle_timeout_ms, 0);
	assert_int_equal(cfg.drain_timeout_ms, 5000);
	assert_int_equal(cfg.drain_grace_ms, 0);
	assert_int_equal(cfg.log_level, LOG_INFO);
}

static void test_every_flag(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *args[] = { "--listen", "127.0.0.1:7", "-l", "[::1]:8", "--backend", "epoll",
			       "--threads", "4", "--max-conns", "77", "--conn-buffer", "1M",
			       "--buffers", "512", "--buffer-size", "16K", "--idle-timeout", "2.5",
			       "--drain-timeout", "0", "--drain-grace", "12.5", "--log-level",
			       "debug", NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_RUN);
	assert_int_equal(cfg.nlisten, 2);
	assert_string_equal(cfg.listen[0].addr, "127.0.0.1:7");
	assert_string_equal(cfg.listen[1].addr, "[::1]:8");
	assert_string_equal(cfg.backend, "epoll");
	assert_int_equal(cfg.threads, 4);
	assert_int_equal(cfg.max_conns, 77);
	assert_int_equal(cfg.conn_buffer, 1 << 20);
	assert_int_equal(cfg.buffers, 512);
	assert_int_equal(cfg.buffer_size, 16384);
	assert_int_equal(cfg.idle_timeout_ms, 2500);
	assert_int_equal(cfg.drain_timeout_ms, 0);
	assert_int_equal(cfg.drain_grace_ms, 12500);
	assert_int_equal(cfg.log_level, LOG_DEBUG);
	const char *eq[] = { "--backend=epoll", "--max-conns=5", NULL };
	assert_int_equal(parse(&cfg, err, eq), CONFIG_RUN);
	assert_int_equal(cfg.max_conns, 5);
}

static void test_actions(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *h[] = { "--help", NULL }, *v[] = { "-V", NULL }, *l[] = { "--list-backends", NULL };
	assert_int_equal(parse(&cfg, err, h), CONFIG_HELP);
	assert_int_equal(parse(&cfg, err, v), CONFIG_VERSION);
	assert_int_equal(parse(&cfg, err, l), CONFIG_LIST_BACKENDS);
}

#define LISTEN_FORMS "expected HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:65432, [::1]:65432 " \
		     "or localhost:65432"

static void test_bad_values(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--max-conns", "0", NULL },
		     "--max-conns: 0 is out of range (1 to 1000000)");
	expect_error((const char *[]){ "--max-conns", "12x", NULL },
		     "--max-conns: 12x is not a whole number (expected 1 to 1000000)");
	expect_error((const char *[]){ "--max-conns", "-1", NULL },
		     "--max-conns: -1 is out of range (1 to 1000000)");
	expect_error((const char *[]){ "--threads", "0", NULL },
		     "--threads: 0 is out of range (1 to 256)");
	expect_error((const char *[]){ "--buffers", "8", NULL },
		     "--buffers: 8 is out of range (16 to 32768)");
	expect_error((const char *[]){ "--buffer-size", "2G", NULL },
		     "--buffer-size: 2G is not a size (expected 512 to 1M: digits, optionally "
		     "followed by K or M)");
	expect_error((const char *[]){ "--conn-buffer", "100", NULL },
		     "--conn-buffer: 100 is out of range (1K to 64M)");
	expect_error((const char *[]){ "--conn-buffer", "4K", "--buffer-size", "8K", NULL },
		     "--conn-buffer (4K) must be at least --buffer-size (8K)");
	expect_error((const char *[]){ "--idle-timeout", "-3", NULL },
		     "--idle-timeout: -3 is out of range (0 to 86400)");
	expect_error((const char *[]){ "--drain-timeout", "soon", NULL },
		     "--drain-timeout: soon is not a number of seconds (expected 0 to 3600, "
		     "decimals like 1.5 allowed; 0 = close at once)");
	expect_error((const char *[]){ "--log-level", "loud", NULL },
		     "--log-level: loud is not a level (expected error, warn, info or debug)");
	expect_error((const char *[]){ "--listen", "65432", NULL },
		     "--listen: 65432 is not HOST:PORT (" LISTEN_FORMS "; PORT 0 to 65535)");
	expect_error((const char *[]){ "--listen", "127.0.0.1:70000", NULL },
		     "--listen: 127.0.0.1:70000: port 70000 is out of range (0 to 65535)");
	expect_error((const char *[]){ "--listen", "::1:80", NULL },
		     "--listen: ::1:80 is not HOST:PORT (" LISTEN_FORMS "; PORT 0 to 65535)");
	expect_error((const char *[]){ "--frobnicate", NULL }, "unknown option '--frobnicate'");
	expect_error((const char *[]){ "-z", NULL }, "unknown option '-z'");
	expect_error((const char *[]){ "--=x", NULL }, "unknown option '--=x'");
	expect_error((const char *[]){ "--a b", NULL }, "unknown option '--a b'");
	expect_error((const char *[]){ "--backend", NULL }, "option '--backend' needs a value");
	expect_error((const char *[]){ "stray", NULL }, "unexpected argument 'stray'");
	/* Control bytes in what is quoted back are escaped: one line, always (fuzz_config). */
	static const char *const raw[][2] = { { "foo\nbar", NULL }, { "-\n", NULL },
					      { "-\x1b", NULL } };
	for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
		char err[1024];
		refuse(raw[i], err);
		for (const char *p = err; *p; p++)
			assert_true((unsigned char)*p >= 0x20);
	}
}

/* Issue: "--buffer-size 18014398509481985K" was taken as 1024, because the K multiply wrapped
 * modulo 2^64. Every size flag must refuse a value its suffix takes past the range, never
 * wrap it back into range. */
static void test_size_overflow(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--buffer-size", "18014398509481985K", NULL },
		     "--buffer-size: 18014398509481985K is out of range (512 to 1M)");
	/* (2^44 + 1) M wraps to exactly 1M, the largest buffer size. */
	expect_error((const char *[]){ "--buffer-size", "17592186044417M", NULL },
		     "--buffer-size: 17592186044417M is out of range (512 to 1M)");
	expect_error((const char *[]){ "--conn-buffer", "18014398509481985K", NULL },
		     "--conn-buffer: 18014398509481985K is out of range (1K to 64M)");
	expect_error((const char *[]){ "--conn-buffer", "17592186044480M", NULL },
		     "--conn-buffer: 17592186044480M is out of range (1K to 64M)");
	/* Digits past 2^64 saturate instead of wrapping, whatever the flag. */
	expect_error((const char *[]){ "--buffer-size", "99999999999999999999999999K", NULL },
		     "--buffer-size: 99999999999999999999999999K is out of range (512 to 1M)");
	expect_error((const char *[]){ "--buffers", "18446744073709551632", NULL },
		     "--buffers: 18446744073709551632 is out of range (16 to 32768)");
	expect_error((const char *[]){ "--max-conns", "4294967297", NULL },
		     "--max-conns: 4294967297 is out of range (1 to 1000000)");
	expect_error((const char *[]){ "--buffer-size", "2M", NULL },
		     "--buffer-size: 2M is out of range (512 to 1M)");
	expect_error((const char *[]){ "--buffer-size", "511", NULL },
		     "--buffer-size: 511 is out of range (512 to 1M)");
	/* The edges themselves, and lower-case suffixes, are accepted. */
	struct echod_config cfg;
	char err[1024];
	const char *edges[] = { "--buffer-size", "1m", "--conn-buffer", "64M", NULL };
	assert_int_equal(parse(&cfg, err, edges), CONFIG_RUN);
	assert_int_equal(cfg.buffer_size, 1u << 20);
	assert_int_equal(cfg.conn_buffer, 64u << 20);
	const char *low[] = { "--buffer-size", "512", "--conn-buffer", "1k", NULL };
	assert_int_equal(parse(&cfg, err, low), CONFIG_RUN);
	assert_int_equal(cfg.buffer_size, 512);
	assert_int_equal(cfg.conn_buffer, 1024);
}

/* strtoull took leading spaces and signs, and "K" alone; none is a number a user means. */
static void test_number_garbage(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--threads", "+4", NULL },
		     "--threads: +4 is not a whole number (expected 1 to 256)");
	expect_error((const char *[]){ "--threads", "4 ", NULL },
		     "--threads: '4 ' is not a whole number (expected 1 to 256)");
	expect_error((const char *[]){ "--threads", "", NULL },
		     "--threads: '' is not a whole number (expected 1 to 256)");
	expect_error((const char *[]){ "--threads", "0x10", NULL },
		     "--threads: 0x10 is not a whole number (expected 1 to 256)");
	expect_error((const char *[]){ "--threads", "257", NULL },
		     "--threads: 257 is out of range (1 to 256)");
	expect_error((const char *[]){ "--threads", "99999999999999999999", NULL },
		     "--threads: 99999999999999999999 is out of range (1 to 256)");
	expect_error((const char *[]){ "--buffers", "1e3", NULL },
		     "--buffers: 1e3 is not a whole number (expected 16 to 32768)");
	expect_error((const char *[]){ "--max-conns", "1K", NULL },
		     "--max-conns: 1K is not a whole number (expected 1 to 1000000)");
	expect_error((const char *[]){ "--buffer-size", "K", NULL },
		     "--buffer-size: K is not a size (expected 512 to 1M: digits, optionally "
		     "followed by K or M)");
	expect_error((const char *[]){ "--buffer-size", "8KB", NULL },
		     "--buffer-size: 8KB is not a size (expected 512 to 1M: digits, optionally "
		     "followed by K or M)");
	expect_error((const char *[]){ "--buffer-size", "-8K", NULL },
		     "--buffer-size: -8K is out of range (512 to 1M)");
}

/* Issue: "--idle-timeout 0.0004" became 0, which means never; strtod also took "0x10" (16 s),
 * "1e3", "inf" and "nan". Seconds are plain decimals; a value above 0 and below 1 ms is
 * refused with the smallest one. */
static void test_timeouts(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--idle-timeout", "0.0004", NULL },
		     "--idle-timeout: 0.0004 is below 1 ms; the smallest timeout is 0.001 "
		     "(0 = never)");
	expect_error((const char *[]){ "--idle-timeout", "0.0009999", NULL },
		     "--idle-timeout: 0.0009999 is below 1 ms; the smallest timeout is 0.001 "
		     "(0 = never)");
	expect_error((const char *[]){ "--drain-timeout", "0.0004", NULL },
		     "--drain-timeout: 0.0004 is below 1 ms; the smallest timeout is 0.001 "
		     "(0 = close at once)");
	const char *garbage[] = { "0x10", "1e3", "inf", "nan", "-nan", "1.5e1", ".5", "1.", " 1",
				  "+1", "1s", "", NULL };
	for (int i = 0; garbage[i]; i++) {
		char err[1024];
		const char *idle[] = { "--idle-timeout", garbage[i], NULL };
		refuse(idle, err);
		assert_non_null(strstr(err, "is not a number of seconds (expected 0 to 86400, "
					    "decimals like 1.5 allowed; 0 = never)"));
		const char *drain[] = { "--drain-timeout", garbage[i], NULL };
		refuse(drain, err);
		assert_non_null(strstr(err, "is not a number of seconds (expected 0 to 3600, "));
	}
	expect_error((const char *[]){ "--idle-timeout", "86400.001", NULL },
		     "--idle-timeout: 86400.001 is out of range (0 to 86400)");
	expect_error((const char *[]){ "--drain-timeout", "3601", NULL },
		     "--drain-timeout: 3601 is out of range (0 to 3600)");
	expect_error((const char *[]){ "--drain-grace", "3600.5", NULL },
		     "--drain-grace: 3600.5 is out of range (0 to 3600)");
	expect_error((const char *[]){ "--drain-grace", "-1", NULL },
		     "--drain-grace: -1 is out of range (0 to 3600)");
	expect_error((const char *[]){ "--drain-grace", "soon", NULL },
		     "--drain-grace: soon is not a number of seconds (expected 0 to 3600, decimals "
		     "like 1.5 allowed; 0 = drain at once)");
	expect_error((const char *[]){ "--drain-timeout", "99999999999999999999999", NULL },
		     "--drain-timeout: 99999999999999999999999 is out of range (0 to 3600)");
	static const struct { const char *in; uint32_t ms; } ok[] = {
		{ "0", 0 }, { "0.000", 0 }, { "0.001", 1 }, { "0.0015", 2 }, { "1.5", 1500 },
		{ "30", 30000 }, { "0.25", 250 }, { "2.9999", 3000 }, { "86400", 86400000 },
		{ "86400.0000", 86400000 },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct echod_config cfg;
		char err[1024];
		const char *args[] = { "--idle-timeout", ok[i].in, NULL };
		assert_int_equal(parse(&cfg, err, args), CONFIG_RUN);
		assert_int_equal(cfg.idle_timeout_ms, ok[i].ms);
	}
}

/* Issue: bad and unresolvable --listen hosts passed parsing and failed at bind as exit 71,
 * "Cannot assign requested address" (or "Invalid argument" for a 127-character host, whose
 * value did not fit the config). They are usage errors, reported with the reason. */
static void test_listen_addresses(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--listen", "1.2.3.4.5:1", NULL },
		     "--listen: 1.2.3.4.5:1 is not a valid address: 1.2.3.4.5 is not an IPv4 "
		     "address (an IPv4 address is a.b.c.d, each 0 to 255; " LISTEN_FORMS ")");
	expect_error((const char *[]){ "--listen", "999.0.0.1:0", NULL },
		     "--listen: 999.0.0.1:0 is not a valid address: 999.0.0.1 is not an IPv4 "
		     "address (an IPv4 address is a.b.c.d, each 0 to 255; " LISTEN_FORMS ")");
	/* inet_aton's shorthands are not what anyone means by an address to listen on. */
	expect_error((const char *[]){ "--listen", "127.1:0", NULL },
		     "--listen: 127.1:0 is not a valid address: 127.1 is not an IPv4 "
		     "address (an IPv4 address is a.b.c.d, each 0 to 255; " LISTEN_FORMS ")");
	expect_error((const char *[]){ "--listen", "0x7f000001:0", NULL },
		     "--listen: 0x7f000001:0 is not a valid address: 0x7f000001 is not an IPv4 "
		     "address (an IPv4 address is a.b.c.d, each 0 to 255; " LISTEN_FORMS ")");
	expect_error((const char *[]){ "--listen", " 127.0.0.1:0", NULL },
		     "--listen: ' 127.0.0.1:0' is not a valid address: ' 127.0.0.1' is neither an "
		     "IP address nor a host name: it has a space (" LISTEN_FORMS ")");
	expect_error((const char *[]){ "--listen", "[localhost]:0", NULL },
		     "--listen: [localhost]:0 is not a valid address: localhost is not an IPv6 "
		     "address (" LISTEN_FORMS ")");
	expect_error((const char *[]){ "--listen", "a\nb:0", NULL },
		     "--listen: 'a\\x0ab:0' is not a valid address: 'a\\x0ab' is neither an IP "
		     "address nor a host name: it has the byte 0x0a, which no host name has ("
		     LISTEN_FORMS ")");

	struct echod_config cfg;
	char err[1024];
	/* A name that does not resolve: the resolver's own words (which depend on whether DNS is
	 * reachable: "Name or service not known" or a temporary failure). */
	const char *unresolvable[] = { "--listen", "nonexistent.invalid:0", NULL };
	refuse(unresolvable, err);
	assert_non_null(strstr(err, "--listen: nonexistent.invalid:0 cannot be resolved: "));
	assert_non_null(strstr(err, " (" LISTEN_FORMS ")"));

	char host[400], arg[420];
	memset(host, 'a', 127);
	host[127] = '\0';
	snprintf(arg, sizeof(arg), "%s:0", host);
	const char *h127[] = { "--listen", arg, NULL };
	refuse(h127, err);
	assert_non_null(strstr(err, "is neither an IP address nor a host name: it has a label "
				    "(a part between dots) longer than 63 characters"));
	/* 127 characters in labels of 63 and less: a name, it just does not resolve. */
	memcpy(host + 60, ".", 1);
	memcpy(host + 120, ".", 1);
	snprintf(arg, sizeof(arg), "%s:0", host);
	refuse(h127, err);
	assert_non_null(strstr(err, " cannot be resolved: "));

	memset(host, 'b', 300);
	host[300] = '\0';
	snprintf(arg, sizeof(arg), "%s:0", host);
	const char *h300[] = { "--listen", arg, NULL };
	refuse(h300, err);
	assert_string_equal(err, "--listen: host bbbbbbbbbbbbbbbbbbbbbbbb... is 300 characters, "
				 "too long (at most 253)");
	snprintf(arg, sizeof(arg), "[%s]:0", host);
	refuse(h300, err);
	assert_string_equal(err, "--listen: host bbbbbbbbbbbbbbbbbbbbbbbb... is 300 characters, "
				 "too long (at most 253)");

	/* What works keeps working; a stored value is the value given. */
	const char *good[] = { "--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--listen",
			       "localhost:0", "--listen", "0.0.0.0:7", "--listen", "[::]:0",
			       "--listen", "[::ffff:127.0.0.1]:65535", NULL };
	assert_int_equal(parse(&cfg, err, good), CONFIG_RUN);
	assert_int_equal(cfg.nlisten, 6);
	assert_string_equal(cfg.listen[2].addr, "localhost:0");
	assert_string_equal(cfg.listen[5].addr, "[::ffff:127.0.0.1]:65535");
	/* The longest host that fits is stored whole (server.c splits it again). */
	memset(host, 'c', 253);
	for (int i = 60; i < 253; i += 61)
		host[i] = '.';
	host[253] = '\0';
	snprintf(arg, sizeof(arg), "[%s]:0065535", host);
	char h[CONFIG_ADDR_LEN], p[8];
	assert_int_equal(config_split_hostport(arg, h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, host);
	assert_string_equal(p, "0065535");
	assert_true(strlen(arg) < CONFIG_ADDR_LEN);
}

/* --metrics takes addresses exactly as --listen does, with errors naming --metrics; off by
 * default, and it does not change the echo addresses. */
static void test_metrics_addresses(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *none[] = { NULL };
	assert_int_equal(parse(&cfg, err, none), CONFIG_RUN);
	assert_int_equal(cfg.nmetrics, 0);

	const char *good[] = { "--metrics", "127.0.0.1:9100", "--metrics", "[::1]:0",
			       "--metrics=localhost:9101", NULL };
	assert_int_equal(parse(&cfg, err, good), CONFIG_RUN);
	assert_int_equal(cfg.nmetrics, 3);
	assert_string_equal(cfg.metrics[0], "127.0.0.1:9100");
	assert_string_equal(cfg.metrics[1], "[::1]:0");
	assert_string_equal(cfg.metrics[2], "localhost:9101");
	assert_int_equal(cfg.nlisten, 1);
	assert_string_equal(cfg.listen[0].addr, "127.0.0.1:65432");

	expect_error((const char *[]){ "--metrics", "9100", NULL },
		     "--metrics: 9100 is not HOST:PORT (" LISTEN_FORMS "; PORT 0 to 65535)");
	expect_error((const char *[]){ "--metrics", "127.0.0.1:70000", NULL },
		     "--metrics: 127.0.0.1:70000: port 70000 is out of range (0 to 65535)");
	expect_error((const char *[]){ "--metrics", "999.0.0.1:0", NULL },
		     "--metrics: 999.0.0.1:0 is not a valid address: 999.0.0.1 is not an IPv4 "
		     "address (an IPv4 address is a.b.c.d, each 0 to 255; " LISTEN_FORMS ")");
	expect_error((const char *[]){ "--metrics", "[localhost]:0", NULL },
		     "--metrics: [localhost]:0 is not a valid address: localhost is not an IPv6 "
		     "address (" LISTEN_FORMS ")");
	expect_error((const char *[]){ "--metrics", "a b:0", NULL },
		     "--metrics: 'a b:0' is not a valid address: 'a b' is neither an IP address "
		     "nor a host name: it has a space (" LISTEN_FORMS ")");
	refuse((const char *[]){ "--metrics", "nonexistent.invalid:0", NULL }, err);
	assert_non_null(strstr(err, "--metrics: nonexistent.invalid:0 cannot be resolved: "));
	expect_error((const char *[]){ "--metrics", "--threads", NULL },
		     "option '--metrics' needs a value (got --threads)");

	const char *nine[] = { "--metrics", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--metrics",
			       "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
			       "--metrics", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--metrics",
			       "127.0.0.1:0", "--metrics", "[::1]:0", NULL };
	expect_error(nine, "--metrics: too many addresses (at most 8)");
	nine[16] = NULL; /* eight are fine */
	assert_int_equal(parse(&cfg, err, nine), CONFIG_RUN);
	assert_int_equal(cfg.nmetrics, 8);
}

/* getopt_long's '?' is three different mistakes; "--list-backends=1" used to print
 * "unknown option '-" and a stray NUL (its optopt is 256, printed with %c). */
static void test_option_words(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--help=x", NULL }, "option '--help' takes no value");
	expect_error((const char *[]){ "--list-backends=1", NULL },
		     "option '--list-backends' takes no value");
	expect_error((const char *[]){ "--buffer", "8K", NULL },
		     "option '--buffer' is ambiguous (--buffers, --buffer-size)");
	expect_error((const char *[]){ "--listen", "--threads", "2", NULL },
		     "option '--listen' needs a value (got --threads)");
	expect_error((const char *[]){ "-t", "--max-conns=5", NULL },
		     "option '--threads' needs a value (got --max-conns=5)");
}

/* --help states every range parsing enforces, and the rules for SECONDS. */
static void test_usage_states_ranges(void **state)
{
	(void)state;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	config_usage(f);
	fclose(f);
	const char *must[] = { "1 to 256 [1]", "1 to 1000000 [10000]", "1K to 64M",
			       "16 to 32768 [2048]", "512 to 1M [8K]", "at most 86400 [0]",
			       "at most 3600 [5]", "0.001 and more; no hex, exponents, inf or nan",
			       "0 = close at once", "--metrics HOST:PORT", "/metrics", "/healthz",
			       "/readyz", "0.001 to 3600 [5]", "0 to 10000000 [1000]", NULL };
	for (int i = 0; must[i]; i++) {
		if (!strstr(text, must[i]))
			fail_msg("--help lacks \"%s\"", must[i]);
	}
	free(text);
}

static void test_unknown_backend_lists_known(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *args[] = { "--backend", "kqueue", NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_ERROR);
	assert_non_null(strstr(err, "--backend: unknown backend kqueue (known: auto, "));
	assert_non_null(strstr(err, "epoll"));
}

static void test_split_hostport(void **state)
{
	(void)state;
	char host[64], port[8];
	assert_int_equal(config_split_hostport("[::1]:9", host, 64, port, 8), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "9");
	assert_int_equal(config_split_hostport("localhost:0", host, 64, port, 8), 0);
	assert_string_equal(host, "localhost");
	assert_int_equal(config_split_hostport(":80", host, 64, port, 8), -1);
	assert_int_equal(config_split_hostport("[::1]80", host, 64, port, 8), -1);
	assert_int_equal(config_split_hostport("h:", host, 64, port, 8), -1);
}

/* The binary itself: exit codes and where the text goes. */
static void test_cli_exit_codes(void **state)
{
	(void)state;
	struct child c;
	const char *bad[] = { proc_bin("echod"), "--max-conns", "0", NULL };
	assert_int_equal(proc_run(bad, 5000, &c), 64);
	char *log = proc_log(&c);
	assert_string_equal(log, "echod: --max-conns: 0 is out of range (1 to 1000000); "
				 "see 'echod --help'\n");
	free(log);
	proc_cleanup(&c);
	const char *help[] = { proc_bin("echod"), "--help", NULL };
	assert_int_equal(proc_run(help, 5000, &c), 0);
	assert_false(proc_log_has(&c, "Usage")); /* help is on stdout, not stderr */
	proc_cleanup(&c);
	const char *ver[] = { proc_bin("echod"), "--version", NULL };
	assert_int_equal(proc_run(ver, 5000, &c), 0);
	proc_cleanup(&c);
	const char *list[] = { proc_bin("echod"), "--list-backends", NULL };
	assert_int_equal(proc_run(list, 5000, &c), 0);
	proc_cleanup(&c);
}

/* Every kind of listener, any mix, and the flags that go with them. */
static void test_listener_kinds(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *args[] = { "-l", "127.0.0.1:7", "-l", "tcp:[::1]:7", "-l", "udp:127.0.0.1:7",
			       "-l", "udp:[::1]:0", "-l", "unix:/run/echod.sock", "-l",
			       "unix:@echod", "--unix-mode", "660", "--udp-rate", "0",
			       "--proxy-protocol", "--proxy-timeout", "0.25", NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_RUN);
	assert_int_equal(cfg.nlisten, 6);
	const enum listen_kind kinds[] = { LISTEN_TCP, LISTEN_TCP, LISTEN_UDP,
					   LISTEN_UDP, LISTEN_UNIX, LISTEN_UNIX };
	const char *addrs[] = { "127.0.0.1:7", "[::1]:7", "127.0.0.1:7", "[::1]:0",
				"/run/echod.sock", "@echod" };
	for (int i = 0; i < 6; i++) {
		assert_int_equal(cfg.listen[i].kind, kinds[i]);
		assert_string_equal(cfg.listen[i].addr, addrs[i]);
	}
	assert_int_equal(cfg.unix_mode, 0660);
	assert_int_equal(cfg.udp_rate, 0);
	assert_true(cfg.proxy_protocol);
	assert_int_equal(cfg.proxy_timeout_ms, 250);
	const char *none[] = { NULL };
	assert_int_equal(parse(&cfg, err, none), CONFIG_RUN);
	assert_int_equal(cfg.unix_mode, -1);
	assert_int_equal(cfg.udp_rate, 1000);
	assert_false(cfg.proxy_protocol);
	assert_int_equal(cfg.proxy_timeout_ms, 5000);
	assert_string_equal(config_listen_kind_names[LISTEN_UDP], "udp");
}

static void test_listener_kinds_refused(void **state)
{
	(void)state;
	char longpath[160] = "unix:/";
	memset(longpath + 6, 'a', 107);
	longpath[6 + 107] = '\0'; /* "/" + 107 = 108 bytes: one too many */
	const char *a1[] = { "-l", longpath, NULL };
	expect_error(a1, "--listen: unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			 "a...: the path is 108 bytes, too long for a Unix socket (at most "
			 "107)");
	const char *a2[] = { "-l", "unix:", NULL };
	expect_error(a2, "--listen: unix: names no socket (expected unix:/path or unix:@name)");
	const char *a3[] = { "-l", "unix:@", NULL };
	expect_error(a3, "--listen: unix:@ names no socket (expected unix:/path or unix:@name)");
	const char *a4[] = { "-l", "udp:127.0.0.1", NULL };
	expect_error(a4, "--listen: udp:127.0.0.1 is not HOST:PORT (expected HOST:PORT or "
			 "[IPv6]:PORT, e.g. 127.0.0.1:65432, [::1]:65432 or localhost:65432; PORT "
			 "0 to 65535)");
	const char *a5[] = { "-l", "udp:127.0.0.1:70000", NULL };
	expect_error(a5, "--listen: udp:127.0.0.1:70000: port 70000 is out of range (0 to 65535)");
	const char *a6[] = { "--unix-mode", "0680", NULL };
	expect_error(a6, "--unix-mode: 0680 is not an octal mode (e.g. 0660, 0600)");
	const char *a7[] = { "--unix-mode", "4755", NULL };
	expect_error(a7, "--unix-mode: 4755 has bits beyond 0777 (setuid, setgid and sticky mean "
			 "nothing on a socket)");
	const char *a8[] = { "--udp-rate", "-1", NULL };
	expect_error(a8, "--udp-rate: -1 is out of range (0 to 10000000)");
	const char *a9[] = { "--proxy-timeout", "0", NULL };
	expect_error(a9, "--proxy-timeout: 0 would wait forever for a header; give at least 0.001");
	const char *a10[] = { "--proxy-protocol=yes", NULL };
	expect_error(a10, "option '--proxy-protocol' takes no value");
}

static void test_user_flag(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[1024];
	const char *ok[] = { "--user", "nobody", NULL };
	assert_int_equal(parse(&cfg, err, ok), CONFIG_RUN);
	assert_string_equal(cfg.user, "nobody");
	assert_true(cfg.listen_default);
	const char *none[] = { "-l", "127.0.0.1:7", NULL };
	assert_int_equal(parse(&cfg, err, none), CONFIG_RUN);
	assert_string_equal(cfg.user, "");
	assert_false(cfg.listen_default);
	const char *a1[] = { "--user", "a b", NULL };
	expect_error(a1, "--user: 'a b' is not a user name (letters, digits, '_', '.', '-'; at "
			 "most 32 characters)");
	const char *a2[] = { "--user", "abcdefghijklmnopqrstuvwxyz0123456", NULL };
	expect_error(a2, "--user: abcdefghijklmnopqrstuvwxyz0123456 is not a user name (letters, "
			 "digits, '_', '.', '-'; at most 32 characters)");
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_flag),
		cmocka_unit_test(test_actions),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_size_overflow),
		cmocka_unit_test(test_number_garbage),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_listen_addresses),
		cmocka_unit_test(test_metrics_addresses),
		cmocka_unit_test(test_option_words),
		cmocka_unit_test(test_usage_states_ranges),
		cmocka_unit_test(test_unknown_backend_lists_known),
		cmocka_unit_test(test_split_hostport),
		cmocka_unit_test(test_cli_exit_codes),
		cmocka_unit_test(test_listener_kinds),
		cmocka_unit_test(test_listener_kinds_refused),
		cmocka_unit_test(test_user_flag),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
