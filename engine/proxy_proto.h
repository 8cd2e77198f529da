/* proxy_proto.h - the PROXY protocol header parser (HAProxy's doc/proxy-protocol.txt, v1 text
 * and v2 binary): a pure function of the bytes received so far. No I/O, no allocation, no
 * globals, so a connection can call it again each time more bytes arrive. */
#ifndef ECHOD_PROXY_PROTO_H
#define ECHOD_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* v1: the spec's worst case, "PROXY UNKNOWN <v6> <v6> 65535 65535\r\n", CRLF included; a
 * line whose CRLF is not within this many bytes is refused with -EMSGSIZE. */
#define PROXY_V1_MAX 107

/* v2: the 16 fixed bytes plus at most 536 more. The spec designs both formats to fit in the
 * smallest TCP segment every host must accept (576 - 40 = 536 bytes); the largest address
 * block (AF_UNIX, 216) leaves 320 bytes of TLVs. The length field could say 65535, but we need
 * no TLV, and a connection should not have to buffer 64K before its first echo byte. */
#define PROXY_V2_MAX (16 + 536)

/* The larger of the two: a caller that can hold this many bytes never gets "need more"
 * (0) back with a full buffer. */
#define PROXY_MAX PROXY_V2_MAX

struct proxy_info {
	int version;     /* 1 or 2 */
	bool local;      /* v2 LOCAL, v2 UNSPEC family or transport, or v1 "UNKNOWN": no
			  * addresses; keep the socket's own */
	int family;      /* AF_INET, AF_INET6, AF_UNIX; AF_UNSPEC when local */
	int socktype;    /* SOCK_STREAM (v1 is TCP only) or SOCK_DGRAM; 0 when local */
	/* AF_INET/AF_INET6: address and port, both in network order as sockaddr wants.
	 * AF_UNIX: the 108 bytes of sun_path as sent; the byte after sun_path (still inside
	 * sockaddr_storage) is zero, so the path is a C string even when all 108 are used. */
	struct sockaddr_storage src, dst;
	const char *error; /* after a negative return: what was wrong, e.g. "bad v1 address" */
};

/* Returns the header's length in bytes (> 0) when buf starts with a complete valid header,
 * 0 when the bytes so far are a prefix of some valid header and more are needed, or a
 * negative errno: -EPROTO not a PROXY header or malformed, -EMSGSIZE longer than
 * PROXY_V1_MAX / PROXY_V2_MAX. A prefix that no more bytes could make valid fails at once.
 * Bytes after the header are the connection's data: never read, never counted.
 * *out is written in full on success, only out->error on failure, not at all on 0. */
int proxy_parse(const void *buf, size_t len, struct proxy_info *out);

/* A short phrase for rc, for logs: the class of a failure ("malformed PROXY header"); the
 * precise reason is out->error. */
const char *proxy_strerror(int rc);

#endif
