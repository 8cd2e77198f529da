/* udp.h - RFC 862 over UDP: each datagram back to its source, whole, identical on every backend.
 *
 * No per-peer state except a bounded rate table. UDP echo is a reflection and loop vector
 * (CVE-1999-0103: two echo services answering each other forever after one forged datagram),
 * so like OpenBSD inetd's builtin echo it does not answer sources that are servers (ports below
 * 1024, and 2049, NFS) or not a single host (broadcast, multicast), and it caps the replies to
 * any one address. Every datagram not echoed is counted under its reason.
 */
#ifndef ECHOD_UDP_H
#define ECHOD_UDP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "reactor.h"

enum udp_drop_reason {
	UDP_DROP_TRUNCATED,   /* larger than a datagram buffer: never echoed cut */
	UDP_DROP_SOURCE_PORT, /* from port 0..1023 or 2049: a service, maybe another echo */
	UDP_DROP_BROADCAST,   /* from a broadcast or multicast address */
	UDP_DROP_RATE,        /* over --udp-rate for its source address */
	UDP_DROP_SEND_BUFFER, /* the socket's send buffer was full (UDP promises nothing) */
	UDP_DROP_SEND_ERROR,  /* the send failed otherwise */
	UDP_DROP_REASONS
};
extern const char *const udp_drop_reason_names[UDP_DROP_REASONS];

struct udp_stats {
	uint64_t received, echoed, bytes_in, bytes_out;
	uint64_t dropped[UDP_DROP_REASONS];
	uint64_t enobufs; /* receives that found every datagram buffer in use */
};

/* Why a datagram from sa must not be answered: UDP_DROP_SOURCE_PORT, UDP_DROP_BROADCAST, or -1
 * (answer it). IPv4-mapped IPv6 sources are judged as the IPv4 address they carry. */
int udp_source_refused(const struct sockaddr *sa, socklen_t len);

/* Token buckets per source address (IPv4 stored as IPv4-mapped IPv6), in a fixed table: a
 * full set of slots evicts its least recently seen entry, so memory never grows, and an
 * attacker spraying forged sources only makes some buckets start full again. */
struct udp_bucket {
	uint8_t addr[16];
	uint64_t tokens; /* in thousandths of a datagram */
	uint64_t seen_ms;
	bool used;
};
struct udp_rate {
	struct udp_bucket *slots;
	uint32_t mask;   /* slots - 1 */
	uint32_t per_s;  /* replies per second per address; 0 = no cap */
	uint64_t seed;   /* keys the hash: a sender cannot aim at one set of slots */
};
int udp_rate_init(struct udp_rate *r, uint32_t per_s, uint32_t nslots);
void udp_rate_fini(struct udp_rate *r);
/* May a reply go to sa now? Takes a token if so. Burst: one second's worth. */
bool udp_rate_allow(struct udp_rate *r, const struct sockaddr *sa, uint64_t now_ms);

struct udp_echo;
struct udp_port {
	struct op rx;
	struct msghdr mh;
	struct sockaddr_storage src;
	int fd;
	uint32_t inflight; /* replies on their way out of this socket */
	bool starved;      /* its receive ended on -ENOBUFS: re-armed when a buffer returns */
	struct udp_echo *u;
};
struct udp_reply {
	struct op op;
	struct msghdr mh;
	struct iovec iov;
	struct sockaddr_storage dst;
	struct udp_port *port;
	struct udp_reply *next_free;
};

#define UDP_MAX_PORTS 16

struct udp_echo {
	struct loop *loop;
	struct udp_port ports[UDP_MAX_PORTS];
	int nports, nports_open;
	struct udp_reply *replies, *free_replies; /* one per datagram buffer */
	struct udp_rate rate;
	uint32_t rate_per_s;
	bool stopping;
	void (*on_quiet)(void *arg); /* stopping, and the last socket has closed */
	void *quiet_arg;
	struct udp_stats stats;
};

void udp_echo_init(struct udp_echo *u, struct loop *loop, uint32_t rate_per_s,
		   void (*on_quiet)(void *), void *quiet_arg);
/* Serve a bound, non-blocking datagram socket; owns it from now on (closed on failure too). The
 * loop must have a datagram pool. 0 or -errno. */
int udp_echo_listen(struct udp_echo *u, int fd);
/* Stop receiving; replies on their way finish; sockets close. */
void udp_echo_stop(struct udp_echo *u);
bool udp_echo_done(const struct udp_echo *u);
bool udp_echo_any_armed(const struct udp_echo *u);
/* After the loop's last run: close what is left and free. */
void udp_echo_fini(struct udp_echo *u);

#endif
