/* proxy_proto.c - parses a PROXY protocol header (v1 text line, v2 binary block) from the
 * bytes received so far, written from HAProxy's doc/proxy-protocol.txt. Every byte is judged
 * as it arrives, so a prefix no later byte could make valid is refused at that byte ("It is
 * recommended to abort the connection as soon as possible"), and "need more" (0) only ever
 * means the prefix can still become a header. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

/* What a scanner says about one field of a v1 line. */
enum scan { SCAN_DONE, SCAN_MORE, SCAN_BAD };

/* The fail reasons, for out->error. */
static const char E_NOT_PROXY[] = "not a PROXY header";
static const char E_V1_PROTO[] = "bad v1 protocol";
static const char E_V1_ADDR[] = "bad v1 address";
static const char E_V1_PORT[] = "bad v1 port";
static const char E_V1_SHORT[] = "v1 line ends early";
static const char E_V1_EOL[] = "bad v1 line end";
static const char E_V1_LONG[] = "v1 line too long";
static const char E_V2_VER[] = "bad v2 version";
static const char E_V2_CMD[] = "bad v2 command";
static const char E_V2_FAM[] = "bad v2 address family";
static const char E_V2_PROTO[] = "bad v2 transport";
static const char E_V2_SHORT[] = "v2 length shorter than its addresses";
static const char E_V2_TLV[] = "malformed v2 TLV";
static const char E_V2_LONG[] = "v2 header too long";

/* The v2 signature: its 5th byte is a NUL, so it is compared as bytes, never as a string. */
static const unsigned char v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/* sun_path is copied whole (108 bytes); the zeroed byte after it must still be inside
 * sockaddr_storage for the path to read as a C string. */
_Static_assert(offsetof(struct sockaddr_un, sun_path) + 108 < sizeof(struct sockaddr_storage),
	       "no room for a NUL after a full sun_path");
_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) == 108, "sun_path is not 108 bytes");
_Static_assert(PROXY_MAX >= PROXY_V1_MAX && PROXY_MAX >= PROXY_V2_MAX, "PROXY_MAX too small");

static int fail(struct proxy_info *out, int rc, const char *why)
{
	out->error = why;
	return rc;
}

/* --- v1 fields ---------------------------------------------------------------------------
 * Each scanner reads the token starting at *pos and stops at the first byte that cannot be
 * part of it (the terminator, which the caller checks): SCAN_DONE with *pos on the
 * terminator, SCAN_MORE when the bytes ran out while the token could still be completed,
 * SCAN_BAD at the first byte that rules that out. */

/* "Exactly 4 integers in the range [0..255] ... separated by exactly one dot", "Heading
 * zeroes are not permitted": what inet_pton(AF_INET) accepts, and nothing else. */
static enum scan scan_ipv4(const unsigned char *s, size_t n, size_t *pos, uint8_t out[4])
{
	unsigned octets = 0, digits = 0, val = 0;
	for (size_t i = *pos; i < n; i++) {
		unsigned char c = s[i];
		if (c >= '0' && c <= '9') {
			if (digits == 1 && val == 0)
				return SCAN_BAD; /* a leading zero */
			val = val * 10 + (unsigned)(c - '0');
			if (val > 255)
				return SCAN_BAD;
			digits++;
		} else if (c == '.') {
			if (digits == 0 || octets == 3)
				return SCAN_BAD;
			out[octets++] = (uint8_t)val;
			digits = val = 0;
		} else {
			if (digits == 0 || octets != 3)
				return SCAN_BAD;
			out[3] = (uint8_t)val;
			*pos = i;
			return SCAN_DONE;
		}
	}
	return SCAN_MORE;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* IPv6 as inet_pton(AF_INET6) takes it (the spec's "sets of 4 hexadecimal digits" with one
 * "::", as senders' inet_ntop writes them): groups of 1 to 4 hex digits, at most one "::"
 * standing for one or more zero groups, optionally a dotted IPv4 tail for the last 32 bits
 * (inet_ntop writes ::ffff:a.b.c.d); 128 bits exactly. Judged byte by byte: a group that could
 * no longer fit, a second "::", a lone leading ':' fail where they appear. */
static enum scan scan_ipv6(const unsigned char *s, size_t n, size_t *pos, uint8_t out[16])
{
	uint16_t g[8];
	unsigned k = 0;         /* groups completed */
	int gap = -1;           /* where "::" stands: the index of the group after it */
	unsigned digits = 0, val = 0;
	bool decimal = true;    /* the group so far could be an IPv4 tail's first octet */
	bool colon = false;     /* a single ':' that still needs a group or a second ':' */
	bool lead = false;      /* that ':' began the address: only ':' may follow */
	size_t i;
	for (i = *pos; i < n; i++) {
		unsigned char c = s[i];
		int h = hexval(c);
		if (h >= 0) {
			if (lead)
				return SCAN_BAD;
			/* A new group must leave room: 8 in all, or 7 when "::" stands for one. */
			if (digits == 0 && k + 1 > (gap >= 0 ? 7u : 8u))
				return SCAN_BAD;
			if (digits == 4)
				return SCAN_BAD;
			val = val * 16 + (unsigned)h;
			digits++;
			decimal = decimal && h < 10;
			colon = false;
		} else if (c == ':') {
			if (digits > 0) {
				g[k++] = (uint16_t)val;
				digits = val = 0;
				decimal = true;
				colon = true;
				/* Next comes a group (k + 1 groups) or, without one yet, "::". */
				if (k > (gap >= 0 ? 6u : 7u))
					return SCAN_BAD;
			} else if (colon) {
				if (gap >= 0)
					return SCAN_BAD;
				gap = (int)k;
				colon = lead = false;
			} else if (i == *pos) {
				colon = lead = true;
			} else {
				return SCAN_BAD; /* ":::" */
			}
		} else if (c == '.') {
			/* The group so far was the first octet of an IPv4 tail, the last 32 bits:
			 * exactly groups 7 and 8 without "::", or anywhere up to them with one. */
			if (digits == 0 || !decimal || k + 2 > (gap >= 0 ? 7u : 8u) ||
			    (gap < 0 && k != 6))
				return SCAN_BAD;
			size_t at = i - digits;
			uint8_t v4[4];
			enum scan r = scan_ipv4(s, n, &at, v4);
			if (r != SCAN_DONE)
				return r;
			g[k++] = (uint16_t)(v4[0] << 8 | v4[1]);
			g[k++] = (uint16_t)(v4[2] << 8 | v4[3]);
			i = at;
			digits = 0;
			break;
		} else {
			break;
		}
	}
	if (i == n)
		return SCAN_MORE;
	/* The terminator: the address must be whole here. */
	if (colon)
		return SCAN_BAD;
	if (digits > 0)
		g[k++] = (uint16_t)val;
	if (gap < 0 ? k != 8 : k > 7)
		return SCAN_BAD;
	unsigned zeros = 8 - k, w = 0;
	for (unsigned j = 0; j < k; j++) {
		if ((int)j == gap)
			for (unsigned z = 0; z < zeros; z++, w++)
				out[2 * w] = out[2 * w + 1] = 0;
		out[2 * w] = (uint8_t)(g[j] >> 8);
		out[2 * w + 1] = (uint8_t)g[j];
		w++;
	}
	for (; w < 8; w++) /* "::" at the end */
		out[2 * w] = out[2 * w + 1] = 0;
	*pos = i;
	return SCAN_DONE;
}

/* "A decimal integer in the range [0..65535] inclusive. Heading zeroes are not permitted". */
static enum scan scan_port(const unsigned char *s, size_t n, size_t *pos, uint16_t *port)
{
	unsigned digits = 0, val = 0;
	for (size_t i = *pos; i < n; i++) {
		unsigned char c = s[i];
		if (c >= '0' && c <= '9') {
			if (digits == 1 && val == 0)
				return SCAN_BAD;
			val = val * 10 + (unsigned)(c - '0');
			if (val > 65535)
				return SCAN_BAD;
			digits++;
		} else {
			if (digits == 0)
				return SCAN_BAD;
			*port = (uint16_t)val;
			*pos = i;
			return SCAN_DONE;
		}
	}
	return SCAN_MORE;
}

/* UNKNOWN's ignored rest of line: any byte but CR and LF, up to the CR. */
static enum scan scan_rest(const unsigned char *s, size_t n, size_t *pos)
{
	for (size_t i = *pos; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n') {
			*pos = i;
			return SCAN_DONE;
		}
	}
	return SCAN_MORE;
}

/* --- v1 line -----------------------------------------------------------------------------
 * The line must end with CRLF within PROXY_V1_MAX bytes. Each field is scanned over only the
 * bytes that still leave room for the shortest possible rest of the line after it, so a line
 * that can no longer fit fails at the same byte whether the bytes come one at a time or all at
 * once. The shortest rests, from the terminator of each field on: */
#define V1_REST_SRC  9 /* " :: 0 0\r\n" */
#define V1_REST_DST  6 /* " 0 0\r\n" */
#define V1_REST_SPORT 4 /* " 0\r\n" */
#define V1_REST_DPORT 2 /* "\r\n" */

/* The bytes a field with `rest` after it may occupy, terminator included. */
static size_t v1_room(size_t n, unsigned rest)
{
	size_t lim = PROXY_V1_MAX + 1 - rest;
	return n < lim ? n : lim;
}

/* Turns a scanner's verdict into proxy_parse's: 1 go on, else the return value. */
static int v1_verdict(enum scan r, size_t n, unsigned rest, struct proxy_info *out,
		      const char *bad)
{
	if (r == SCAN_DONE)
		return 1;
	if (r == SCAN_BAD)
		return fail(out, -EPROTO, bad);
	if (n >= PROXY_V1_MAX + 1 - rest)
		return fail(out, -EMSGSIZE, E_V1_LONG);
	return 0;
}

/* The field just scanned must be followed by one space (when there is a byte there): 1 go on
 * past it. Anything else is the field's fault ("5.6.7.8x", "1.2.3.4\t"), or a line that ends
 * before its last field. */
static int v1_space(const unsigned char *s, size_t n, size_t *pos, struct proxy_info *out,
		    const char *bad)
{
	if (*pos >= n)
		return 0;
	if (s[*pos] != ' ')
		return fail(out, -EPROTO, s[*pos] == '\r' || s[*pos] == '\n' ? E_V1_SHORT : bad);
	(*pos)++;
	return 1;
}

/* After the last field, at the CR: CRLF ends the line; "the receiver must not tolerate a
 * single CR or LF character to end the line". */
static int v1_crlf(const unsigned char *s, size_t n, size_t pos, struct proxy_info *out)
{
	if (s[pos] != '\r')
		return fail(out, -EPROTO, E_V1_EOL);
	if (pos + 1 >= n)
		return 0;
	if (s[pos + 1] != '\n')
		return fail(out, -EPROTO, E_V1_EOL);
	return (int)pos + 2;
}

/* A prefix of `word` so far? 1 whole, 0 a proper prefix, -1 no. */
static int v1_word(const unsigned char *s, size_t n, size_t pos, const char *word)
{
	size_t w = strlen(word);
	size_t have = n - pos < w ? n - pos : w;
	if (memcmp(s + pos, word, have) != 0)
		return -1;
	return have == w;
}

static int parse_v1(const unsigned char *s, size_t n, struct proxy_info *out)
{
	static const char *const protos[] = { "TCP4 ", "TCP6 ", "UNKNOWN" };
	int w = v1_word(s, n, 0, "PROXY ");
	if (w < 0)
		return fail(out, -EPROTO, E_NOT_PROXY);
	if (w == 0)
		return 0;
	size_t pos = 6;
	int proto = -1;
	bool partial = false;
	for (int p = 0; p < 3; p++) {
		w = v1_word(s, n, pos, protos[p]);
		if (w > 0)
			proto = p;
		partial = partial || w == 0;
	}
	if (proto < 0)
		return partial ? 0 : fail(out, -EPROTO, E_V1_PROTO);
	pos += strlen(protos[proto]);

	int rc;
	if (proto == 2) {
		/* "For UNKNOWN, the rest of the line before the CRLF may be omitted by the sender,
		 * and the receiver must ignore anything presented before the CRLF is found": a
		 * space and anything, or the CRLF at once. */
		if (pos >= n)
			return 0;
		if (s[pos] != ' ' && s[pos] != '\r')
			return fail(out, -EPROTO, E_V1_PROTO); /* "UNKNOWNX" is another word */
		if (s[pos] == ' ') {
			pos++;
			rc = v1_verdict(scan_rest(s, v1_room(n, V1_REST_DPORT), &pos),
					n, V1_REST_DPORT, out, E_V1_EOL);
			if (rc <= 0)
				return rc;
		}
		rc = v1_crlf(s, n, pos, out);
		if (rc > 0) {
			memset(out, 0, sizeof(*out));
			out->version = 1;
			out->local = true;
			out->family = AF_UNSPEC;
		}
		return rc;
	}

	bool v6 = proto == 1;
	uint8_t src[16], dst[16];
	uint16_t sport = 0, dport = 0;
	for (int f = 0; f < 2; f++) {
		unsigned rest = f == 0 ? V1_REST_SRC : V1_REST_DST;
		size_t room = v1_room(n, rest);
		uint8_t *a = f == 0 ? src : dst;
		enum scan r = v6 ? scan_ipv6(s, room, &pos, a) : scan_ipv4(s, room, &pos, a);
		rc = v1_verdict(r, n, rest, out, E_V1_ADDR);
		if (rc <= 0)
			return rc;
		if ((rc = v1_space(s, n, &pos, out, E_V1_ADDR)) <= 0)
			return rc;
	}
	rc = v1_verdict(scan_port(s, v1_room(n, V1_REST_SPORT), &pos, &sport),
			n, V1_REST_SPORT, out, E_V1_PORT);
	if (rc <= 0)
		return rc;
	if ((rc = v1_space(s, n, &pos, out, E_V1_PORT)) <= 0)
		return rc;
	rc = v1_verdict(scan_port(s, v1_room(n, V1_REST_DPORT), &pos, &dport),
			n, V1_REST_DPORT, out, E_V1_PORT);
	if (rc <= 0)
		return rc;
	rc = v1_crlf(s, n, pos, out);
	if (rc <= 0)
		return rc;

	memset(out, 0, sizeof(*out));
	out->version = 1;
	out->socktype = SOCK_STREAM;
	if (v6) {
		struct sockaddr_in6 *si = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *di = (struct sockaddr_in6 *)&out->dst;
		out->family = si->sin6_family = di->sin6_family = AF_INET6;
		memcpy(&si->sin6_addr, src, 16);
		memcpy(&di->sin6_addr, dst, 16);
		si->sin6_port = htons(sport);
		di->sin6_port = htons(dport);
	} else {
		struct sockaddr_in *si = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *di = (struct sockaddr_in *)&out->dst;
		out->family = si->sin_family = di->sin_family = AF_INET;
		memcpy(&si->sin_addr, src, 4);
		memcpy(&di->sin_addr, dst, 4);
		si->sin_port = htons(sport);
		di->sin_port = htons(dport);
	}
	return rc;
}

/* --- v2 block ----------------------------------------------------------------------------- */

/* Address block sizes by family nibble: UNSPEC, INET, INET6, UNIX. */
static const unsigned v2_addr_len[4] = { 0, 12, 36, 216 };

static void v2_fill(const unsigned char *a, unsigned fam, unsigned proto, struct proxy_info *out)
{
	out->socktype = proto == 1 ? SOCK_STREAM : SOCK_DGRAM;
	if (fam == 1) {
		struct sockaddr_in *si = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *di = (struct sockaddr_in *)&out->dst;
		out->family = si->sin_family = di->sin_family = AF_INET;
		memcpy(&si->sin_addr, a, 4);
		memcpy(&di->sin_addr, a + 4, 4);
		memcpy(&si->sin_port, a + 8, 2); /* already network order */
		memcpy(&di->sin_port, a + 10, 2);
	} else if (fam == 2) {
		struct sockaddr_in6 *si = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *di = (struct sockaddr_in6 *)&out->dst;
		out->family = si->sin6_family = di->sin6_family = AF_INET6;
		memcpy(&si->sin6_addr, a, 16);
		memcpy(&di->sin6_addr, a + 16, 16);
		memcpy(&si->sin6_port, a + 32, 2);
		memcpy(&di->sin6_port, a + 34, 2);
	} else {
		struct sockaddr_un *su = (struct sockaddr_un *)&out->src;
		struct sockaddr_un *du = (struct sockaddr_un *)&out->dst;
		out->family = su->sun_family = du->sun_family = AF_UNIX;
		memcpy(su->sun_path, a, 108);
		memcpy(du->sun_path, a + 108, 108);
	}
}

static int parse_v2(const unsigned char *s, size_t n, struct proxy_info *out)
{
	if (memcmp(s, v2_sig, n < 12 ? n : 12) != 0)
		return fail(out, -EPROTO, E_NOT_PROXY);
	if (n < 13)
		return 0;
	/* "The highest four bits contains the version ... the receiver must only accept this
	 * value"; commands other than LOCAL and PROXY: "Receivers must drop connections". */
	if (s[12] >> 4 != 2)
		return fail(out, -EPROTO, E_V2_VER);
	unsigned cmd = s[12] & 0xf;
	if (cmd > 1)
		return fail(out, -EPROTO, E_V2_CMD);
	if (n < 14)
		return 0;
	/* LOCAL: "discard the protocol block including the family which is ignored", so its
	 * family byte is not judged. PROXY: family and transport values past the assigned
	 * ones "must be rejected as invalid by receivers". */
	unsigned fam = s[13] >> 4, proto = s[13] & 0xf;
	if (cmd == 1 && fam > 3)
		return fail(out, -EPROTO, E_V2_FAM);
	if (cmd == 1 && proto > 2)
		return fail(out, -EPROTO, E_V2_PROTO);
	if (n < 16)
		return 0;
	size_t total = 16 + ((size_t)s[14] << 8 | s[15]);
	if (total > PROXY_V2_MAX)
		return fail(out, -EMSGSIZE, E_V2_LONG);
	/* UNSPEC family or transport with PROXY: "The receiver is free to accept the connection
	 * anyway and use the real endpoint addresses ... The receiver should ignore address
	 * information": accepted, as local. Only a block with addresses has a known layout,
	 * so only there are the TLVs after it checked. */
	bool addrs = cmd == 1 && fam != 0 && proto != 0;
	if (addrs) {
		size_t p = 16 + v2_addr_len[fam];
		if (p > total)
			return fail(out, -EPROTO, E_V2_SHORT);
		/* TLVs: a type byte, a 16-bit length, that many bytes; each inside the header. */
		while (p < total) {
			if (total - p < 3)
				return fail(out, -EPROTO, E_V2_TLV);
			if (p + 3 > n)
				break;
			size_t vlen = (size_t)s[p + 1] << 8 | s[p + 2];
			if (vlen > total - p - 3)
				return fail(out, -EPROTO, E_V2_TLV);
			p += 3 + vlen;
		}
	}
	if (n < total)
		return 0;
	memset(out, 0, sizeof(*out));
	out->version = 2;
	if (addrs) {
		v2_fill(s + 16, fam, proto, out);
	} else {
		out->local = true;
		out->family = AF_UNSPEC;
	}
	return (int)total;
}

int proxy_parse(const void *buf, size_t len, struct proxy_info *out)
{
	const unsigned char *s = buf;
	if (len == 0)
		return 0;
	/* The first byte tells the two apart: 'P' of "PROXY", CR of the v2 signature. */
	if (s[0] == 'P')
		return parse_v1(s, len, out);
	if (s[0] == '\r')
		return parse_v2(s, len, out);
	return fail(out, -EPROTO, E_NOT_PROXY);
}

const char *proxy_strerror(int rc)
{
	if (rc > 0)
		return "ok";
	switch (rc) {
	case 0:
		return "incomplete PROXY header";
	case -EPROTO:
		return "malformed PROXY header";
	case -EMSGSIZE:
		return "PROXY header too long";
	default:
		return "unknown PROXY parse result";
	}
}
