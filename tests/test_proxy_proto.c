/* test_proxy_proto.c - the PROXY protocol parser (engine/proxy_proto.h) against HAProxy's
 * doc/proxy-protocol.txt: the document's examples, v1 and v2 of every family, the result at
 * every truncation of each valid header (always 0, "need more"), the exact byte at which each
 * kind of bad header fails, the size limits, and the v1 addresses against inet_pton. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "proxy_proto.h"

static const uint8_t SIG[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* What follows a header on the wire: the connection's own bytes, never part of it. */
static const char TRAIL[] = "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";

/* A header of hlen bytes must parse whole: hlen alone and with trailing bytes (the same
 * result), every shorter prefix 0 without touching *out; returns the parse. */
static struct proxy_info expect_ok(const void *hdr, size_t hlen)
{
	uint8_t buf[2 * PROXY_MAX + sizeof(TRAIL)];
	struct proxy_info pi, again, untouched;
	assert_true(hlen <= PROXY_MAX);
	memcpy(buf, hdr, hlen);
	int rc = proxy_parse(buf, hlen, &pi);
	if (rc != (int)hlen) {
		print_error("header of %zu bytes: got %d (%s: %s)\n", hlen, rc, proxy_strerror(rc),
			    rc < 0 ? pi.error : "");
		fail();
	}
	assert_null(pi.error);
	for (size_t cut = 0; cut < hlen; cut++) {
		memset(&untouched, 0xa5, sizeof(untouched));
		memcpy(&again, &untouched, sizeof(again));
		rc = proxy_parse(buf, cut, &again);
		if (rc != 0) {
			print_error("prefix %zu of %zu: got %d (%s), want 0\n", cut, hlen, rc,
				    rc < 0 ? again.error : "success");
			fail();
		}
		assert_memory_equal(&again, &untouched, sizeof(again));
	}
	/* Trailing bytes: the application's, a second header, one junk byte of each value. */
	memcpy(buf + hlen, TRAIL, sizeof(TRAIL));
	assert_int_equal(proxy_parse(buf, hlen + sizeof(TRAIL) - 1, &again), (int)hlen);
	assert_memory_equal(&again, &pi, sizeof(pi));
	memcpy(buf + hlen, hdr, hlen);
	assert_int_equal(proxy_parse(buf, 2 * hlen, &again), (int)hlen);
	for (int b = 0; b < 256; b++) {
		buf[hlen] = (uint8_t)b;
		assert_int_equal(proxy_parse(buf, hlen + 1, &again), (int)hlen);
	}
	return pi;
}

static struct proxy_info expect_ok_str(const char *line)
{
	return expect_ok(line, strlen(line));
}

/* bad (len bytes) must fail with rc from exactly `at` bytes on: 0 before, rc at `at` and at
 * every longer length; and out->error must be `why`. */
static void expect_fail_at(const void *bad, size_t len, size_t at, int want, const char *why)
{
	struct proxy_info pi;
	assert_true(at >= 1 && at <= len);
	for (size_t n = 0; n <= len; n++) {
		memset(&pi, 0, sizeof(pi));
		int rc = proxy_parse(bad, n, &pi);
		int expect = n < at ? 0 : want;
		if (rc != expect) {
			print_error("%zu of %zu bytes (first %zu bytes: \"%.*s\"): got %d (%s), want %d\n",
				    n, len, at, (int)at, (const char *)bad, rc,
				    rc < 0 ? pi.error : proxy_strerror(rc), expect);
			fail();
		}
		if (rc < 0 && why && strcmp(pi.error, why) != 0) {
			print_error("\"%.*s\": error \"%s\", want \"%s\"\n", (int)len,
				    (const char *)bad, pi.error, why);
			fail();
		}
	}
}

/* A v1 line that fails at the byte where `mark` is (the index of the first char of `mark`
 * in line, plus one), with -EPROTO. mark NULL: at the last byte. */
static void v1_bad(const char *line, const char *mark, const char *why)
{
	size_t len = strlen(line);
	size_t at = mark ? (size_t)(strstr(line, mark) - line) + 1 : len;
	assert_true(mark == NULL || strstr(line, mark) != NULL);
	expect_fail_at(line, len, at, -EPROTO, why);
}

static const struct sockaddr_in *in4(const struct sockaddr_storage *ss)
{
	return (const struct sockaddr_in *)ss;
}

static const struct sockaddr_in6 *in6(const struct sockaddr_storage *ss)
{
	return (const struct sockaddr_in6 *)ss;
}

static void assert_in4(const struct sockaddr_storage *ss, const char *addr, unsigned port)
{
	char txt[INET_ADDRSTRLEN];
	assert_int_equal(in4(ss)->sin_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &in4(ss)->sin_addr, txt, sizeof(txt)));
	assert_string_equal(txt, addr);
	assert_int_equal(ntohs(in4(ss)->sin_port), port);
}

static void assert_in6(const struct sockaddr_storage *ss, const char *addr, unsigned port)
{
	struct in6_addr want;
	assert_int_equal(in6(ss)->sin6_family, AF_INET6);
	assert_int_equal(inet_pton(AF_INET6, addr, &want), 1);
	assert_memory_equal(&in6(ss)->sin6_addr, &want, 16);
	assert_int_equal(ntohs(in6(ss)->sin6_port), port);
}

/* --- v1 ----------------------------------------------------------------------------------- */

static void test_v1_spec_examples(void **state)
{
	(void)state;
	/* 2.1: the example before an HTTP request. */
	struct proxy_info pi = expect_ok_str("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
	assert_int_equal(pi.version, 1);
	assert_false(pi.local);
	assert_int_equal(pi.family, AF_INET);
	assert_int_equal(pi.socktype, SOCK_STREAM);
	assert_in4(&pi.src, "192.168.0.1", 56324);
	assert_in4(&pi.dst, "192.168.0.11", 443);

	/* The maximum line lengths, each exactly as long as the document counts. */
	const char *v4max = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
	assert_int_equal(strlen(v4max), 56);
	pi = expect_ok_str(v4max);
	assert_in4(&pi.src, "255.255.255.255", 65535);
	assert_in4(&pi.dst, "255.255.255.255", 65535);

	const char *v6max = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(strlen(v6max), 104);
	pi = expect_ok_str(v6max);
	assert_int_equal(pi.family, AF_INET6);
	assert_in6(&pi.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	assert_in6(&pi.dst, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);

	const char *unk = "PROXY UNKNOWN\r\n";
	assert_int_equal(strlen(unk), 15);
	pi = expect_ok_str(unk);
	assert_int_equal(pi.version, 1);
	assert_true(pi.local);
	assert_int_equal(pi.family, AF_UNSPEC);
	assert_int_equal(pi.socktype, 0);

	const char *worst = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(strlen(worst), PROXY_V1_MAX);
	pi = expect_ok_str(worst);
	assert_true(pi.local);
	assert_int_equal(pi.family, AF_UNSPEC);
}

static void test_v1_forms(void **state)
{
	(void)state;
	struct proxy_info pi = expect_ok_str("PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n");
	assert_in4(&pi.src, "0.0.0.0", 0);
	assert_in4(&pi.dst, "10.0.0.1", 1);

	pi = expect_ok_str("PROXY TCP6 ::1 2001:db8::1 80 8080\r\n");
	assert_in6(&pi.src, "::1", 80);
	assert_in6(&pi.dst, "2001:db8::1", 8080);

	/* inet_ntop writes v4-mapped addresses with a dotted tail. */
	pi = expect_ok_str("PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n");
	assert_in6(&pi.src, "::ffff:192.0.2.1", 1);
	assert_in6(&pi.dst, "::", 2);

	pi = expect_ok_str("PROXY TCP6 1:2:3:4:5:6:7:: FE80::ABcd:1 65535 0\r\n");
	assert_in6(&pi.src, "1:2:3:4:5:6:7:0", 65535);
	assert_in6(&pi.dst, "fe80::abcd:1", 0);

	pi = expect_ok_str("PROXY TCP6 1:2:3:4:5:6:1.2.3.4 ::1:2:3:4:5:6:7 9 9\r\n");
	assert_in6(&pi.src, "1:2:3:4:5:6:102:304", 9);
	assert_in6(&pi.dst, "0:1:2:3:4:5:6:7", 9);

	/* UNKNOWN: whatever precedes the CRLF is ignored. */
	pi = expect_ok_str("PROXY UNKNOWN whatever\tthe sender\x01\x80 says\r\n");
	assert_true(pi.local);
	expect_ok_str("PROXY UNKNOWN \r\n");
	expect_ok_str("PROXY UNKNOWN TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
}

static void test_v1_bad_start(void **state)
{
	(void)state;
	/* The first byte decides: neither 'P' nor CR fails at once. */
	for (int b = 0; b < 256; b++) {
		if (b == 'P' || b == '\r')
			continue;
		uint8_t one = (uint8_t)b;
		expect_fail_at(&one, 1, 1, -EPROTO, "not a PROXY header");
	}
	v1_bad("GET / HTTP/1.1\r\n", "G", "not a PROXY header");
	v1_bad("PROXx TCP4", "x", "not a PROXY header");
	v1_bad("PROXY\r\n", "\r", "not a PROXY header");
	v1_bad("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", " TCP4", "bad v1 protocol");
	v1_bad("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "tcp4", "bad v1 protocol");
	v1_bad("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "5 1", "bad v1 protocol");
	v1_bad("PROXY TCP4\r\n", "\r", "bad v1 protocol");
	v1_bad("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "DP4", "bad v1 protocol");
	v1_bad("PROXY UNKNOWNZ\r\n", "Z", "bad v1 protocol");
	v1_bad("PROXY UNKNOWN\n", "\n", "bad v1 protocol");
}

static void test_v1_bad_addresses(void **state)
{
	(void)state;
	static const struct { const char *line, *mark; } cases[] = {
		{ "PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", "6." },
		{ "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "6 5" },
		{ "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "1.2" },
		{ "PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n", "0 5" },
		{ "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", " 5." },
		{ "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", ".5 " },
		{ "PROXY TCP4 1..2.3 5.6.7.8 1 2\r\n", ".2.3" },
		{ "PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n", ".1.2.3" },
		{ "PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n", "+" },
		{ "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", " 5.6" },
		{ "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "::" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8x 1 2\r\n", "x" },
		{ "PROXY TCP4 1.2.3.4 0x5.6.7.8 1 2\r\n", "x" },
		{ "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", ".2" },
		{ "PROXY TCP6 ::1 ::: 1 2\r\n", ": 1" },
		{ "PROXY TCP6 1:::2 ::1 1 2\r\n", ":2" },
		{ "PROXY TCP6 1::2::3 ::1 1 2\r\n", ":3" },
		{ "PROXY TCP6 :1::2 ::1 1 2\r\n", "1::" },
		{ "PROXY TCP6 1:2: ::1 1 2\r\n", " ::1" },
		{ "PROXY TCP6 12345:: ::1 1 2\r\n", "5::" },
		{ "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", ":9" },
		{ "PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n", ":: ::1" },
		{ "PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", " ::1" },
		{ "PROXY TCP6 1::2:3:4:5:6:7:8 ::1 1 2\r\n", ":8" },
		{ "PROXY TCP6 g:: ::1 1 2\r\n", "g" },
		{ "PROXY TCP6 ::ffff:1.2.3 ::1 1 2\r\n", " ::1" },
		{ "PROXY TCP6 ::ffff:1.2.3.4:5 ::1 1 2\r\n", ":5" },
		{ "PROXY TCP6 ::1.2.3.04 ::1 1 2\r\n", "4 " },
		{ "PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n", ".2.3.4" },
		{ "PROXY TCP6 1:2:3:4:5:1.2.3.4 ::1 1 2\r\n", ".2.3.4" },
		{ "PROXY TCP6 ::a.2.3.4 ::1 1 2\r\n", ".2.3.4" },
		{ "PROXY TCP6 [::1] ::1 1 2\r\n", "[" },
		{ "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "%" },
		{ "PROXY TCP6  ::1 ::1 1 2\r\n", " ::1 ::1" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		v1_bad(cases[i].line, cases[i].mark, "bad v1 address");
	/* A separator other than one space is refused where it stands. */
	v1_bad("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "\t", "bad v1 address");
	v1_bad("PROXY TCP4 1.2.3.4\r\n", "\r", "v1 line ends early");
	v1_bad("PROXY TCP6 ::1\n", "\n", "v1 line ends early");
}

static void test_v1_bad_ports(void **state)
{
	(void)state;
	static const struct { const char *line, *mark, *why; } cases[] = {
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "6 2", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "9\r", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "1 2", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "0\r", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "+", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "-", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n", "x", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", " 1 2", "bad v1 port" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "\r", "v1 line ends early" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", " 3", "bad v1 line end" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", " \r", "bad v1 line end" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "\n", "bad v1 line end" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rZ", "Z", "bad v1 line end" },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "\r\n", "bad v1 line end" },
		{ "PROXY UNKNOWN junk\n\r\n", "\n", "bad v1 line end" },
		{ "PROXY UNKNOWN junk\rjunk\r\n", "junk\r\n", "bad v1 line end" },
		{ "PROXY UNKNOWN\rZ", "Z", "bad v1 line end" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		v1_bad(cases[i].line, cases[i].mark, cases[i].why);
}

/* A line whose CRLF is not within 107 bytes fails with -EMSGSIZE at the first length from
 * which no CRLF can end it in time. */
static void test_v1_too_long(void **state)
{
	(void)state;
	char line[256];
	/* UNKNOWN with its rest of line 107 bytes long, then 108. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 105, "\r\n", 2);
	expect_ok(line, 107);
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 106, "\r\n", 2);
	/* 106 bytes without a CR at the end: the CRLF would end at byte 108. */
	expect_fail_at(line, 108, 106, -EMSGSIZE, "v1 line too long");
	expect_fail_at(line, sizeof(line), 106, -EMSGSIZE, "v1 line too long");

	/* TCP6 with two valid 45-byte addresses: 102 bytes in, " 0 0\r\n" no longer fits. */
	const char *a45 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
	assert_int_equal(strlen(a45), 45);
	snprintf(line, sizeof(line), "PROXY TCP6 %s %s 1 2\r\n", a45, a45);
	expect_fail_at(line, strlen(line), 102, -EMSGSIZE, "v1 line too long");
	/* One 45-byte address and a short one fit, and are what inet_pton makes of them. */
	snprintf(line, sizeof(line), "PROXY TCP6 %s ::1 65535 65535\r\n", a45);
	struct proxy_info pi = expect_ok_str(line);
	assert_in6(&pi.src, a45, 65535);
	/* Content errors before the limit are still -EPROTO. */
	snprintf(line, sizeof(line), "PROXY TCP6 %s %s 1 2\r\n", a45, a45);
	line[60] = 'z';
	expect_fail_at(line, strlen(line), 61, -EPROTO, "bad v1 address");
	/* No line is "need more" at 107 bytes, whatever they are. */
	memset(line, 'a', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	assert_int_equal(proxy_parse(line, PROXY_V1_MAX, &pi), -EMSGSIZE);
}

/* Random strings over the address alphabets: accepted exactly when inet_pton accepts them,
 * with the same bytes; and every valid one is "need more" at each of its prefixes. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static void differential(int af, const char *alphabet, unsigned maxlen, unsigned rounds)
{
	size_t na = strlen(alphabet);
	unsigned accepted = 0;
	for (unsigned r = 0; r < rounds; r++) {
		char addr[64], line[160];
		unsigned len = 1 + rnd(maxlen);
		for (unsigned i = 0; i < len; i++)
			addr[i] = alphabet[rnd((unsigned)na)];
		addr[len] = '\0';
		/* Bias towards plausible shapes: sometimes a real address, mutated once. */
		if (r % 4 == 0) {
			uint8_t raw[16];
			for (int i = 0; i < 16; i++)
				raw[i] = rnd(3) ? 0 : (uint8_t)rnd(256);
			inet_ntop(af, raw, addr, sizeof(addr));
			if (r % 8 == 0) {
				size_t l = strlen(addr);
				addr[rnd((unsigned)l)] = alphabet[rnd((unsigned)na)];
			}
		}
		uint8_t want[16];
		int ok = inet_pton(af, addr, want);
		int n = snprintf(line, sizeof(line), "PROXY %s %s %s 1 2\r\n",
				 af == AF_INET ? "TCP4" : "TCP6", addr,
				 af == AF_INET ? "1.2.3.4" : "::1");
		struct proxy_info pi;
		memset(&pi, 0, sizeof(pi));
		int rc = proxy_parse(line, (size_t)n, &pi);
		if ((rc == n) != (ok == 1)) {
			print_error("\"%s\": inet_pton says %d, proxy_parse %d (%s)\n", addr, ok, rc,
				    rc < 0 ? pi.error : "");
			fail();
		}
		if (ok == 1) {
			accepted++;
			const void *got = af == AF_INET ? (const void *)&in4(&pi.src)->sin_addr
							: (const void *)&in6(&pi.src)->sin6_addr;
			assert_memory_equal(got, want, af == AF_INET ? 4 : 16);
			for (int cut = 0; cut < n; cut++)
				assert_int_equal(proxy_parse(line, (size_t)cut, &pi), 0);
		}
	}
	assert_true(accepted > rounds / 10);
}

static void test_v1_addresses_match_inet_pton(void **state)
{
	(void)state;
	differential(AF_INET, "0123456789.", 16, 100000);
	differential(AF_INET6, "0123456789abcdefABCDEF:.", 40, 200000);
	differential(AF_INET6, "0f:.1", 24, 100000);
}

/* --- v2 ----------------------------------------------------------------------------------- */

/* A v2 header: signature, ver_cmd, fam, then the length (alen + tlen unless len >= 0). */
static size_t v2(uint8_t *b, uint8_t ver_cmd, uint8_t fam, const void *addr, size_t alen,
		 const void *tlv, size_t tlen, long len)
{
	memcpy(b, SIG, 12);
	b[12] = ver_cmd;
	b[13] = fam;
	size_t l = len >= 0 ? (size_t)len : alen + tlen;
	b[14] = (uint8_t)(l >> 8);
	b[15] = (uint8_t)l;
	if (alen)
		memcpy(b + 16, addr, alen);
	if (tlen)
		memcpy(b + 16 + alen, tlv, tlen);
	return 16 + alen + tlen;
}

static const uint8_t ADDR4[12] = { 192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb };

static void test_v2_families(void **state)
{
	(void)state;
	uint8_t b[1024];
	/* 0x11 TCP over IPv4 and 0x12 UDP: "Address length is 2*4 + 2*2 = 12 bytes". */
	struct proxy_info pi = expect_ok(b, v2(b, 0x21, 0x11, ADDR4, 12, NULL, 0, -1));
	assert_int_equal(pi.version, 2);
	assert_false(pi.local);
	assert_int_equal(pi.family, AF_INET);
	assert_int_equal(pi.socktype, SOCK_STREAM);
	assert_in4(&pi.src, "192.168.0.1", 56324);
	assert_in4(&pi.dst, "192.168.0.11", 443);
	pi = expect_ok(b, v2(b, 0x21, 0x12, ADDR4, 12, NULL, 0, -1));
	assert_int_equal(pi.socktype, SOCK_DGRAM);
	assert_in4(&pi.src, "192.168.0.1", 56324);

	/* 0x21 TCP over IPv6 and 0x22 UDP: 2*16 + 2*2 = 36 bytes. */
	uint8_t a6[36];
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", a6), 1);
	assert_int_equal(inet_pton(AF_INET6, "fe80::abcd", a6 + 16), 1);
	a6[32] = 0x00; a6[33] = 0x50; a6[34] = 0xff; a6[35] = 0xff;
	pi = expect_ok(b, v2(b, 0x21, 0x21, a6, 36, NULL, 0, -1));
	assert_int_equal(pi.family, AF_INET6);
	assert_int_equal(pi.socktype, SOCK_STREAM);
	assert_in6(&pi.src, "2001:db8::1", 80);
	assert_in6(&pi.dst, "fe80::abcd", 65535);
	pi = expect_ok(b, v2(b, 0x21, 0x22, a6, 36, NULL, 0, -1));
	assert_int_equal(pi.socktype, SOCK_DGRAM);

	/* 0x31 UNIX stream and 0x32 datagram: 2*108 = 216 bytes. */
	uint8_t au[216] = { 0 };
	strcpy((char *)au, "/run/haproxy.sock");
	strcpy((char *)au + 108, "/run/echod.sock");
	pi = expect_ok(b, v2(b, 0x21, 0x31, au, 216, NULL, 0, -1));
	assert_int_equal(pi.family, AF_UNIX);
	assert_int_equal(pi.socktype, SOCK_STREAM);
	const struct sockaddr_un *su = (const struct sockaddr_un *)&pi.src;
	const struct sockaddr_un *du = (const struct sockaddr_un *)&pi.dst;
	assert_int_equal(su->sun_family, AF_UNIX);
	assert_string_equal(su->sun_path, "/run/haproxy.sock");
	assert_string_equal(du->sun_path, "/run/echod.sock");
	pi = expect_ok(b, v2(b, 0x21, 0x32, au, 216, NULL, 0, -1));
	assert_int_equal(pi.socktype, SOCK_DGRAM);

	/* A path of all 108 bytes is still a C string; an abstract one (leading NUL) is kept. */
	memset(au, 'p', 108);
	memset(au + 108, 0, 108);
	memcpy(au + 109, "abstract", 8);
	pi = expect_ok(b, v2(b, 0x21, 0x31, au, 216, NULL, 0, -1));
	su = (const struct sockaddr_un *)&pi.src;
	du = (const struct sockaddr_un *)&pi.dst;
	assert_int_equal(strlen(su->sun_path), 108);
	assert_int_equal(du->sun_path[0], '\0');
	assert_memory_equal(du->sun_path + 1, "abstract", 8);
}

static void test_v2_local_and_unspec(void **state)
{
	(void)state;
	uint8_t b[1024];
	/* LOCAL "should not present any address so it sets this field to zero", but receivers
	 * "must not assume zero is presented for LOCAL connections": both skip the block. */
	struct proxy_info pi = expect_ok(b, v2(b, 0x20, 0x00, NULL, 0, NULL, 0, -1));
	assert_int_equal(pi.version, 2);
	assert_true(pi.local);
	assert_int_equal(pi.family, AF_UNSPEC);
	assert_int_equal(pi.socktype, 0);
	pi = expect_ok(b, v2(b, 0x20, 0x11, ADDR4, 12, NULL, 0, -1));
	assert_true(pi.local);
	assert_int_equal(pi.family, AF_UNSPEC);
	/* LOCAL ignores the family byte whole, even values PROXY would refuse, and any block. */
	pi = expect_ok(b, v2(b, 0x20, 0xff, ADDR4, 5, NULL, 0, -1));
	assert_true(pi.local);

	/* \x00 with PROXY: "free to accept the connection anyway and use the real endpoints
	 * addresses or to reject the connection": accepted, addresses ignored. So for an
	 * UNSPEC family with a transport, or a family with the UNSPEC transport. */
	static const uint8_t unspec[] = { 0x00, 0x01, 0x02, 0x10, 0x20, 0x30 };
	for (size_t i = 0; i < sizeof(unspec); i++) {
		pi = expect_ok(b, v2(b, 0x21, unspec[i], ADDR4, 12, NULL, 0, -1));
		assert_true(pi.local);
		assert_int_equal(pi.family, AF_UNSPEC);
		pi = expect_ok(b, v2(b, 0x21, unspec[i], NULL, 0, NULL, 0, -1));
		assert_true(pi.local);
	}
}

static void test_v2_tlvs(void **state)
{
	(void)state;
	uint8_t b[1024];
	/* ALPN "h2", a zero-length NOOP, AUTHORITY, a custom type: skipped, length counted. */
	static const uint8_t tlv[] = {
		0x01, 0x00, 0x02, 'h', '2',
		0x04, 0x00, 0x00,
		0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm',
		0xe0, 0x00, 0x01, 0x42,
	};
	size_t n = v2(b, 0x21, 0x11, ADDR4, 12, tlv, sizeof(tlv), -1);
	assert_int_equal(n, 16 + 12 + sizeof(tlv));
	struct proxy_info pi = expect_ok(b, n);
	assert_in4(&pi.src, "192.168.0.1", 56324);

	/* Every registered type once (2.2.1 to 2.2.7): CRC32C (not verified: "If the checksum
	 * functionality is supported by the receiver", and it is not), UNIQUE_ID, an SSL TLV
	 * with its sub-TLVs (whose insides are not judged), NETNS. */
	static const uint8_t all[] = {
		0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
		0x05, 0x00, 0x03, 'i', 'd', '1',
		0x20, 0x00, 0x13, 0x07, 0x00, 0x00, 0x00, 0x00,
			0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '3',
			0x22, 0x00, 0x01, 'x',
		0x30, 0x00, 0x02, 'n', 's',
		0xf8, 0x00, 0x00,
	};
	n = v2(b, 0x21, 0x21, (uint8_t[36]){ 0 }, 36, all, sizeof(all), -1);
	pi = expect_ok(b, n);
	assert_int_equal(pi.family, AF_INET6);

	/* The largest header: one NOOP filling the header up to PROXY_V2_MAX. */
	uint8_t big[PROXY_V2_MAX];
	memset(big, 0, sizeof(big));
	size_t vlen = PROXY_V2_MAX - 16 - 12 - 3;
	big[0] = 0x04;
	big[1] = (uint8_t)(vlen >> 8);
	big[2] = (uint8_t)vlen;
	n = v2(b, 0x21, 0x11, ADDR4, 12, big, 3 + vlen, -1);
	assert_int_equal(n, PROXY_V2_MAX);
	expect_ok(b, n);

	/* A TLV that does not fit the header fails as soon as its length is read: 2 bytes in
	 * the header, 3 announced. */
	static const uint8_t over[] = { 0x01, 0x00, 0x03, 'h', '2' };
	n = v2(b, 0x21, 0x11, ADDR4, 12, over, sizeof(over), -1);
	expect_fail_at(b, n, 16 + 12 + 3, -EPROTO, "malformed v2 TLV");
	/* The second TLV's length runs past the end. */
	static const uint8_t over2[] = { 0x04, 0x00, 0x00, 0x05, 0xff, 0xff, 0x00 };
	n = v2(b, 0x21, 0x21, (uint8_t[36]){ 0 }, 36, over2, sizeof(over2), -1);
	expect_fail_at(b, n, 16 + 36 + 6, -EPROTO, "malformed v2 TLV");
	/* One or two bytes after the addresses cannot be a TLV ("a TLV can not be smaller than
	 * [3 bytes]"): known from the length field alone. */
	n = v2(b, 0x21, 0x11, ADDR4, 12, "\x04", 1, -1);
	expect_fail_at(b, n, 16, -EPROTO, "malformed v2 TLV");
	/* ... and after a first TLV, once that one's length is read. */
	n = v2(b, 0x21, 0x11, ADDR4, 12, "\x04\x00\x00\x04\x00", 5, -1);
	expect_fail_at(b, n, 16 + 12 + 3, -EPROTO, "malformed v2 TLV");
	/* A NOOP of length 1 leaves its value in the header: fine; 3 with 2 left: not. */
	n = v2(b, 0x21, 0x31, (uint8_t[216]){ 0 }, 216, "\x04\x00\x01z", 4, -1);
	expect_ok(b, n);
	n = v2(b, 0x21, 0x31, (uint8_t[216]){ 0 }, 216, "\x04\x00\x03zz", 5, -1);
	expect_fail_at(b, n, 16 + 216 + 3, -EPROTO, "malformed v2 TLV");
}

static void test_v2_bad(void **state)
{
	(void)state;
	uint8_t b[1024];
	size_t n = v2(b, 0x21, 0x11, ADDR4, 12, NULL, 0, -1);
	/* Each signature byte changed fails at that byte. */
	for (size_t i = 0; i < 12; i++) {
		uint8_t c[64];
		memcpy(c, b, n);
		c[i] ^= 0x20;
		expect_fail_at(c, n, i + 1, -EPROTO, "not a PROXY header");
	}
	/* v1's CR-led cousin and bare CRLF lines are not signatures either. */
	expect_fail_at("\r\nGET", 5, 3, -EPROTO, "not a PROXY header");
	/* Version: "the receiver must only accept" 2. */
	static const uint8_t vers[] = { 0x01, 0x11, 0x31, 0xf1, 0x00 };
	for (size_t i = 0; i < sizeof(vers); i++) {
		n = v2(b, vers[i], 0x11, ADDR4, 12, NULL, 0, -1);
		expect_fail_at(b, n, 13, -EPROTO, "bad v2 version");
	}
	/* Commands other than LOCAL and PROXY: "Receivers must drop connections". */
	for (unsigned cmd = 2; cmd < 16; cmd++) {
		n = v2(b, (uint8_t)(0x20 | cmd), 0x11, ADDR4, 12, NULL, 0, -1);
		expect_fail_at(b, n, 13, -EPROTO, "bad v2 command");
	}
	/* Families and transports past the assigned ones, with PROXY: "must be rejected". */
	for (unsigned fam = 4; fam < 16; fam++) {
		n = v2(b, 0x21, (uint8_t)(fam << 4 | 1), ADDR4, 12, NULL, 0, -1);
		expect_fail_at(b, n, 14, -EPROTO, "bad v2 address family");
	}
	for (unsigned t = 3; t < 16; t++) {
		n = v2(b, 0x21, (uint8_t)(0x10 | t), ADDR4, 12, NULL, 0, -1);
		expect_fail_at(b, n, 14, -EPROTO, "bad v2 transport");
		n = v2(b, 0x21, (uint8_t)t, ADDR4, 12, NULL, 0, -1);
		expect_fail_at(b, n, 14, -EPROTO, "bad v2 transport");
	}
	/* The length must cover the family's address block: refused at the length field. */
	static const struct { uint8_t fam; size_t need; } blocks[] = {
		{ 0x11, 12 }, { 0x12, 12 }, { 0x21, 36 }, { 0x22, 36 }, { 0x31, 216 }, { 0x32, 216 },
	};
	uint8_t zeros[300] = { 0 };
	for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
		for (size_t short_by = 1; short_by <= 3; short_by++) {
			n = v2(b, 0x21, blocks[i].fam, zeros, blocks[i].need - short_by, NULL, 0, -1);
			expect_fail_at(b, n, 16, -EPROTO, "v2 length shorter than its addresses");
		}
		n = v2(b, 0x21, blocks[i].fam, zeros, 0, NULL, 0, -1);
		expect_fail_at(b, n, 16, -EPROTO, "v2 length shorter than its addresses");
		expect_ok(b, v2(b, 0x21, blocks[i].fam, zeros, blocks[i].need, NULL, 0, -1));
	}
	/* Huge lengths: refused at the length field, before any of the block is waited for. */
	static const long huge[] = { PROXY_V2_MAX - 16 + 1, 1000, 0x8000, 0xffff };
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		n = v2(b, 0x21, 0x11, ADDR4, 12, NULL, 0, huge[i]);
		expect_fail_at(b, n, 16, -EMSGSIZE, "v2 header too long");
		n = v2(b, 0x20, 0x00, NULL, 0, NULL, 0, huge[i]);
		expect_fail_at(b, 16, 16, -EMSGSIZE, "v2 header too long");
	}
	/* No header is "need more" at PROXY_V2_MAX bytes. */
	memset(b, 0, sizeof(b));
	v2(b, 0x20, 0x00, NULL, 0, NULL, 0, PROXY_V2_MAX - 16);
	struct proxy_info pi;
	assert_int_equal(proxy_parse(b, PROXY_V2_MAX, &pi), PROXY_V2_MAX);
	assert_int_equal(proxy_parse(b, PROXY_V2_MAX - 1, &pi), 0);
}

/* The bytes after the header belong to the connection: never counted, whatever they are. */
static void test_trailing_data(void **state)
{
	(void)state;
	const char *two = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nPROXY TCP4 9.9.9.9 9.9.9.9 9 9\r\n";
	struct proxy_info pi;
	assert_int_equal(proxy_parse(two, strlen(two), &pi), 32);
	assert_in4(&pi.src, "1.2.3.4", 1);
	uint8_t b[600];
	size_t n = v2(b, 0x21, 0x11, ADDR4, 12, NULL, 0, -1);
	memset(b + n, 0xff, sizeof(b) - n);
	assert_int_equal(proxy_parse(b, sizeof(b), &pi), 28);
	/* A LOCAL header followed by a v1 line: the v1 line is data. */
	n = v2(b, 0x20, 0x00, NULL, 0, NULL, 0, -1);
	memcpy(b + n, two, strlen(two));
	assert_int_equal(proxy_parse(b, n + strlen(two), &pi), 16);
	assert_true(pi.local);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(proxy_strerror(0), "incomplete PROXY header");
	assert_string_equal(proxy_strerror(-EPROTO), "malformed PROXY header");
	assert_string_equal(proxy_strerror(-EMSGSIZE), "PROXY header too long");
	assert_string_equal(proxy_strerror(28), "ok");
	assert_non_null(proxy_strerror(-EINVAL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_spec_examples),
		cmocka_unit_test(test_v1_forms),
		cmocka_unit_test(test_v1_bad_start),
		cmocka_unit_test(test_v1_bad_addresses),
		cmocka_unit_test(test_v1_bad_ports),
		cmocka_unit_test(test_v1_too_long),
		cmocka_unit_test(test_v1_addresses_match_inet_pton),
		cmocka_unit_test(test_v2_families),
		cmocka_unit_test(test_v2_local_and_unspec),
		cmocka_unit_test(test_v2_tlvs),
		cmocka_unit_test(test_v2_bad),
		cmocka_unit_test(test_trailing_data),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests_name("proxy_proto", tests, NULL, NULL);
}
