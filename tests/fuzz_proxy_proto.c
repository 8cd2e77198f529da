/* fuzz_proxy_proto.c - libFuzzer harness for proxy_parse (engine/proxy_proto.c). Beyond what
 * ASan and UBSan catch (a read past len, an overflow), it aborts when an invariant breaks:
 *   - the result is a length <= len, 0, -EPROTO or -EMSGSIZE, and 0 only below the limit;
 *   - a success is stable: every shorter prefix is 0, one more or one less trailing byte
 *     gives the same length and the same proxy_info, and it is v2's 16 + length field;
 *   - a failure is stable: one more byte fails the same way, one less is 0 or the same;
 *   - a complete v1 line is accepted exactly when an independent reading of it (split on
 *     single spaces, inet_pton, strict ports) accepts it, with the same addresses.
 * Built by `make fuzz` (clang -fsanitize=fuzzer,address,undefined). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_proxy_proto: %s:%d: invariant broken: %s\n",  \
				__FILE__, __LINE__, #cond);                                  \
			abort();                                                             \
		}                                                                            \
	} while (0)

/* proxy_parse on a private copy of n bytes, so ASan sees a read past n (the fuzzer's own
 * buffer may be larger than the prefix under test). */
static int parse_copy(const uint8_t *data, size_t n, const uint8_t *extra, size_t nextra,
		      struct proxy_info *out)
{
	memset(out, 0x5a, sizeof(*out));
	if (n + nextra == 0)
		return proxy_parse(data, 0, out);
	uint8_t *copy = malloc(n + nextra); /* exactly: one byte more would hide an overread */
	check(copy != NULL);
	memcpy(copy, data, n);
	if (nextra)
		memcpy(copy + n, extra, nextra);
	int rc = proxy_parse(copy, n + nextra, out);
	free(copy);
	return rc;
}

/* A strict decimal port: "0" or no leading zero, at most 65535. */
static int oracle_port(const char *t, size_t n, uint16_t *port)
{
	if (n == 0 || n > 5 || (n > 1 && t[0] == '0'))
		return 0;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i] < '0' || t[i] > '9')
			return 0;
		v = v * 10 + (unsigned)(t[i] - '0');
	}
	if (v > 65535)
		return 0;
	*port = (uint16_t)v;
	return 1;
}

/* A complete v1 line (its LF within the first PROXY_V1_MAX bytes) read the plain way. Returns
 * 1 valid (filling the wanted addresses), 0 invalid, -1 not a complete line (no verdict). */
struct v1_want {
	int af;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	size_t len;
};

static int oracle_v1(const uint8_t *data, size_t size, struct v1_want *w)
{
	size_t lim = size < PROXY_V1_MAX ? size : PROXY_V1_MAX;
	const uint8_t *lf = memchr(data, '\n', lim);
	if (!lf)
		return -1;
	size_t e = (size_t)(lf - data); /* the LF */
	w->len = e + 1;
	if (e == 0 || data[e - 1] != '\r' || memchr(data, '\r', e - 1))
		return 0;
	char line[PROXY_V1_MAX + 1];
	size_t n = e - 1;
	memcpy(line, data, n);
	line[n] = '\0';
	/* UNKNOWN, then the end or a space and anything (NULs included). */
	if (n >= 13 && memcmp(line, "PROXY UNKNOWN", 13) == 0 && (n == 13 || line[13] == ' ')) {
		w->af = AF_UNSPEC;
		return 1;
	}
	if (memchr(line, '\0', n))
		return 0;
	/* Exactly six fields separated by single spaces. */
	const char *f[6];
	size_t fl[6];
	size_t nf = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || line[i] == ' ') {
			if (nf == 6)
				return 0;
			f[nf] = line + start;
			fl[nf++] = i - start;
			start = i + 1;
		}
	}
	if (nf != 6)
		return 0;
	for (size_t i = 0; i < 6; i++)
		if (fl[i] == 0)
			return 0;
	if (fl[0] != 5 || memcmp(f[0], "PROXY", 5) != 0 || fl[1] != 4)
		return 0;
	if (memcmp(f[1], "TCP4", 4) == 0)
		w->af = AF_INET;
	else if (memcmp(f[1], "TCP6", 4) == 0)
		w->af = AF_INET6;
	else
		return 0;
	char a[64];
	for (int k = 0; k < 2; k++) {
		if (fl[2 + k] >= sizeof(a))
			return 0;
		memcpy(a, f[2 + k], fl[2 + k]);
		a[fl[2 + k]] = '\0';
		if (inet_pton(w->af, a, k == 0 ? w->src : w->dst) != 1)
			return 0;
	}
	return oracle_port(f[4], fl[4], &w->sport) && oracle_port(f[5], fl[5], &w->dport);
}

static void check_v1(const uint8_t *data, size_t size, int rc, const struct proxy_info *pi)
{
	struct v1_want w;
	int ok = oracle_v1(data, size, &w);
	if (ok < 0)
		return;
	if (ok == 0) {
		check(rc < 0);
		return;
	}
	check(rc == (int)w.len);
	check(pi->version == 1);
	check(pi->family == w.af);
	if (w.af == AF_UNSPEC) {
		check(pi->local);
	} else if (w.af == AF_INET) {
		const struct sockaddr_in *s = (const void *)&pi->src, *d = (const void *)&pi->dst;
		check(memcmp(&s->sin_addr, w.src, 4) == 0 && memcmp(&d->sin_addr, w.dst, 4) == 0);
		check(ntohs(s->sin_port) == w.sport && ntohs(d->sin_port) == w.dport);
	} else {
		const struct sockaddr_in6 *s = (const void *)&pi->src, *d = (const void *)&pi->dst;
		check(memcmp(&s->sin6_addr, w.src, 16) == 0 && memcmp(&d->sin6_addr, w.dst, 16) == 0);
		check(ntohs(s->sin6_port) == w.sport && ntohs(d->sin6_port) == w.dport);
	}
}

/* A v2 success, read back from the bytes. */
static void check_v2(const uint8_t *data, int rc, const struct proxy_info *pi)
{
	check(rc == 16 + (data[14] << 8 | data[15]));
	check(pi->version == 2);
	unsigned cmd = data[12] & 0xf, fam = data[13] >> 4, proto = data[13] & 0xf;
	bool addrs = cmd == 1 && fam >= 1 && fam <= 3 && proto >= 1 && proto <= 2;
	check(pi->local == !addrs);
	if (!addrs)
		return;
	check(pi->socktype == (proto == 1 ? SOCK_STREAM : SOCK_DGRAM));
	const uint8_t *a = data + 16;
	if (fam == 1) {
		const struct sockaddr_in *s = (const void *)&pi->src, *d = (const void *)&pi->dst;
		check(pi->family == AF_INET && s->sin_family == AF_INET);
		check(memcmp(&s->sin_addr, a, 4) == 0 && memcmp(&d->sin_addr, a + 4, 4) == 0);
		check(memcmp(&s->sin_port, a + 8, 2) == 0 && memcmp(&d->sin_port, a + 10, 2) == 0);
	} else if (fam == 2) {
		const struct sockaddr_in6 *s = (const void *)&pi->src, *d = (const void *)&pi->dst;
		check(pi->family == AF_INET6 && d->sin6_family == AF_INET6);
		check(memcmp(&s->sin6_addr, a, 16) == 0 && memcmp(&d->sin6_addr, a + 16, 16) == 0);
	} else {
		const struct sockaddr_un *s = (const void *)&pi->src, *d = (const void *)&pi->dst;
		check(pi->family == AF_UNIX && s->sun_family == AF_UNIX);
		check(memcmp(s->sun_path, a, 108) == 0 && memcmp(d->sun_path, a + 108, 108) == 0);
		check(strlen(s->sun_path) <= 108 && strlen(d->sun_path) <= 108);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info pi, again;
	int rc = parse_copy(data, size, NULL, 0, &pi);
	check(rc <= (int)size || rc <= 0);
	check(rc >= 0 || rc == -EPROTO || rc == -EMSGSIZE);
	size_t limit = size && data[0] == 'P' ? PROXY_V1_MAX : PROXY_V2_MAX;
	if (rc == 0) {
		check(size < limit);
		return 0;
	}
	static const uint8_t tails[] = { 0x00, '\n', 0xff };
	if (rc < 0) {
		check(pi.error != NULL && *pi.error != '\0');
		check(strcmp(proxy_strerror(rc), "ok") != 0);
		const char *why = pi.error;
		for (size_t t = 0; t < sizeof(tails); t++) {
			check(parse_copy(data, size, &tails[t], 1, &again) == rc);
			check(again.error == why);
		}
		int shorter = parse_copy(data, size - 1, NULL, 0, &again);
		check(shorter == 0 || (shorter == rc && again.error == why));
		if (data[0] == 'P')
			check_v1(data, size, rc, &pi);
		return 0;
	}
	check((size_t)rc <= limit);
	check(pi.error == NULL);
	check(pi.local == (pi.family == AF_UNSPEC));
	check(pi.local ? pi.socktype == 0 : pi.socktype == SOCK_STREAM || pi.socktype == SOCK_DGRAM);
	for (size_t t = 0; t < sizeof(tails); t++) {
		check(parse_copy(data, size, &tails[t], 1, &again) == rc);
		check(memcmp(&again, &pi, sizeof(pi)) == 0);
	}
	if ((size_t)rc < size) {
		check(parse_copy(data, size - 1, NULL, 0, &again) == rc);
		check(memcmp(&again, &pi, sizeof(pi)) == 0);
	}
	for (size_t k = 0; k < (size_t)rc; k++)
		check(parse_copy(data, k, NULL, 0, &again) == 0);
	if (data[0] == 'P')
		check_v1(data, size, rc, &pi);
	else
		check_v2(data, rc, &pi);
	return 0;
}
