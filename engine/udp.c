/* udp.c - the UDP echo (see udp.h): receive, judge the source, reply from the same buffer.
 *
 * A datagram arrives in a buffer of the loop's datagram pool and its reply is sent from that
 * buffer (no copy); the buffer goes back when the send completes. There is one reply slot per
 * datagram buffer, so a reply always has a slot, and what UDP may hold is the pool: when every
 * buffer is on its way out, receiving pauses (-ENOBUFS) until one returns, and the kernel's
 * receive buffer absorbs, then drops, the rest. A full send buffer drops the reply: nothing is
 * queued beyond the pool, and the loop never waits for a UDP socket to drain.
 */
#include "udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"

const char *const udp_drop_reason_names[UDP_DROP_REASONS] = {
	[UDP_DROP_TRUNCATED] = "truncated",	  [UDP_DROP_SOURCE_PORT] = "source_port",
	[UDP_DROP_BROADCAST] = "broadcast",	  [UDP_DROP_RATE] = "rate",
	[UDP_DROP_SEND_BUFFER] = "send_buffer", [UDP_DROP_SEND_ERROR] = "send_error",
};

#define RATE_SLOTS 4096u /* per worker: 4096 x 40 bytes */
#define RATE_WAYS 4u     /* slots an address may use; the oldest of them is evicted */

/* ---- who is answered ------------------------------------------------------------------ */

static bool ipv4_not_a_host(uint32_t a /* host order */)
{
	return a == 0xffffffffu || (a >> 28) == 0xe; /* limited broadcast, 224.0.0.0/4 */
}

int udp_source_refused(const struct sockaddr *sa, socklen_t len)
{
	uint16_t port;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		if (ipv4_not_a_host(ntohl(in->sin_addr.s_addr)))
			return UDP_DROP_BROADCAST;
		port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *b = in6->sin6_addr.s6_addr;
		if (b[0] == 0xff)
			return UDP_DROP_BROADCAST; /* ff00::/8: IPv6 multicast (it has no broadcast) */
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
				     (uint32_t)b[14] << 8 | b[15];
			if (ipv4_not_a_host(a))
				return UDP_DROP_BROADCAST;
		}
		port = ntohs(in6->sin6_port);
	} else {
		return UDP_DROP_SOURCE_PORT; /* no source we could name: nothing to answer */
	}
	if (port < 1024 || port == 2049)
		return UDP_DROP_SOURCE_PORT;
	return -1;
}

/* ---- rate table ----------------------------------------------------------------------- */

int udp_rate_init(struct udp_rate *r, uint32_t per_s, uint32_t nslots)
{
	memset(r, 0, sizeof(*r));
	r->per_s = per_s;
	if (per_s == 0)
		return 0;
	if (nslots < RATE_WAYS || (nslots & (nslots - 1)))
		return -EINVAL;
	r->slots = calloc(nslots, sizeof(*r->slots));
	if (!r->slots)
		return -ENOMEM;
	r->mask = nslots - 1;
	/* Unkeyed, a sender could pick sources that all land in one set and churn it. A failed
	 * getrandom leaves a fixed key: weaker, not wrong. */
	if (getrandom(&r->seed, sizeof(r->seed), GRND_NONBLOCK) != sizeof(r->seed))
		r->seed = 0x6a09e667f3bcc909ull;
	return 0;
}

void udp_rate_fini(struct udp_rate *r)
{
	free(r->slots);
	r->slots = NULL;
}

static void addr_key(const struct sockaddr *sa, uint8_t key[16])
{
	if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return;
	}
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	memcpy(key, mapped, 12);
	memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
}

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

bool udp_rate_allow(struct udp_rate *r, const struct sockaddr *sa, uint64_t now_ms)
{
	if (r->per_s == 0)
		return true;
	uint8_t key[16];
	addr_key(sa, key);
	uint64_t lo, hi;
	memcpy(&lo, key, 8);
	memcpy(&hi, key + 8, 8);
	uint32_t set = (uint32_t)mix(mix(r->seed ^ lo) ^ hi) & r->mask & ~(RATE_WAYS - 1);
	uint64_t full = (uint64_t)r->per_s * 1000;
	struct udp_bucket *b = NULL, *oldest = &r->slots[set];
	for (uint32_t i = 0; i < RATE_WAYS; i++) {
		struct udp_bucket *s = &r->slots[set + i];
		if (s->used && memcmp(s->addr, key, 16) == 0) {
			b = s;
			break;
		}
		if (!s->used || (oldest->used && s->seen_ms < oldest->seen_ms))
			oldest = s;
	}
	if (!b) {
		b = oldest;
		memcpy(b->addr, key, 16);
		b->used = true;
		b->tokens = full;
		b->seen_ms = now_ms;
	}
	/* Each millisecond adds per_s thousandths of a datagram; a second's worth at most. */
	if (now_ms > b->seen_ms) {
		uint64_t add = (now_ms - b->seen_ms) * r->per_s;
		b->tokens = add >= full - b->tokens ? full : b->tokens + add;
	}
	b->seen_ms = now_ms;
	if (b->tokens < 1000)
		return false;
	b->tokens -= 1000;
	return true;
}

/* ---- the echo --------------------------------------------------------------------------- */

static void on_recv(struct loop *loop, struct op *op, int res, unsigned cflags);
static void on_sent(struct loop *loop, struct op *op, int res, unsigned cflags);

static void drop(struct udp_echo *u, enum udp_drop_reason why)
{
	u->stats.dropped[why]++;
}

static int port_arm(struct udp_port *p)
{
	p->mh.msg_name = &p->src;
	p->mh.msg_namelen = sizeof(p->src);
	p->starved = false;
	return loop_submit(p->u->loop, &p->rx);
}

static void check_quiet(struct udp_echo *u)
{
	if (u->stopping && u->nports_open == 0 && u->on_quiet)
		u->on_quiet(u->quiet_arg);
}

/* A socket closes once its receive is final and its last reply has left. */
static void port_close_if_idle(struct udp_port *p)
{
	struct udp_echo *u = p->u;
	if (p->fd < 0 || loop_op_armed(&p->rx) || p->inflight)
		return;
	loop_close_fd(u->loop, p->fd);
	p->fd = -1;
	u->nports_open--;
	check_quiet(u);
}

static void reply(struct udp_port *p, const struct buf *b, uint32_t len)
{
	struct udp_echo *u = p->u;
	struct udp_reply *r = u->free_replies; /* one per buffer: never NULL while we hold b */
	u->free_replies = r->next_free;
	memcpy(&r->dst, &p->src, p->mh.msg_namelen);
	r->iov = (struct iovec){ .iov_base = b->base, .iov_len = len };
	r->mh = (struct msghdr){ .msg_name = &r->dst, .msg_namelen = p->mh.msg_namelen,
				 .msg_iov = &r->iov, .msg_iovlen = 1 };
	r->port = p;
	r->op = (struct op){ .code = OP_SENDMSG, .fd = p->fd, .msg = &r->mh, .done = on_sent,
			     .owner = r, .buf = *b };
	int rc = loop_submit(u->loop, &r->op);
	if (rc < 0) {
		drop(u, UDP_DROP_SEND_ERROR);
		loop_buf_release(u->loop, b->bid);
		r->next_free = u->free_replies;
		u->free_replies = r;
		return;
	}
	p->inflight++;
}

static void take(struct udp_port *p, const struct op *op, int res, unsigned cflags)
{
	struct udp_echo *u = p->u;
	u->stats.received++;
	u->stats.bytes_in += (uint64_t)res;
	int why = cflags & OPF_TRUNC ? UDP_DROP_TRUNCATED
				     : udp_source_refused((struct sockaddr *)&p->src,
							  p->mh.msg_namelen);
	if (why < 0 && !udp_rate_allow(&u->rate, (struct sockaddr *)&p->src, u->loop->now_ms))
		why = UDP_DROP_RATE;
	if (why >= 0) {
		drop(u, (enum udp_drop_reason)why);
		loop_buf_release(u->loop, op->buf.bid);
		return;
	}
	reply(p, &op->buf, (uint32_t)res);
}

static void on_recv(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)loop;
	struct udp_port *p = op->owner;
	struct udp_echo *u = p->u;
	if (cflags & OPF_BUFFER)
		take(p, op, res, cflags);
	if (cflags & OPF_MORE)
		return;
	if (u->stopping) {
		port_close_if_idle(p);
		return;
	}
	if (res == -ENOBUFS) {
		u->stats.enobufs++;
		p->starved = true; /* on_sent re-arms it when a buffer comes back */
		return;
	}
	/* A final with data (a backend that cannot stay armed) or an error of one datagram
	 * (EINTR, ECONNREFUSED from an earlier ICMP): receive again. Anything else would repeat
	 * forever: the socket is given up, loudly. */
	if (res >= 0 || res == -EINTR || res == -EAGAIN || res == -ECONNREFUSED) {
		int rc = port_arm(p);
		if (rc == 0)
			return;
		res = rc;
	}
	log_msg(LOG_ERROR, "udp_receive_failed", "fd=%d error=\"%s\" msg=\"this UDP socket is "
		"no longer served\"", p->fd, strerror(-res));
	port_close_if_idle(p);
}

static void on_sent(struct loop *loop, struct op *op, int res, unsigned cflags)
{
	(void)cflags;
	struct udp_reply *r = op->owner;
	struct udp_port *p = r->port;
	struct udp_echo *u = p->u;
	if (res >= 0) {
		u->stats.echoed++;
		u->stats.bytes_out += (uint64_t)res;
	} else {
		drop(u, res == -EAGAIN || res == -EWOULDBLOCK || res == -ENOBUFS
				? UDP_DROP_SEND_BUFFER
				: UDP_DROP_SEND_ERROR);
	}
	loop_buf_release(loop, op->buf.bid);
	r->next_free = u->free_replies;
	u->free_replies = r;
	p->inflight--;
	if (u->stopping) {
		port_close_if_idle(p);
		return;
	}
	for (int i = 0; i < u->nports; i++) {
		struct udp_port *q = &u->ports[i];
		if (q->starved && q->fd >= 0 && port_arm(q) < 0)
			q->starved = true; /* tried again when the next buffer returns */
	}
}

void udp_echo_init(struct udp_echo *u, struct loop *loop, uint32_t rate_per_s,
		   void (*on_quiet)(void *), void *quiet_arg)
{
	memset(u, 0, sizeof(*u));
	u->loop = loop;
	u->rate_per_s = rate_per_s;
	u->on_quiet = on_quiet;
	u->quiet_arg = quiet_arg;
}

/* The reply slots and the rate table exist only once a UDP socket does. */
static int first_port(struct udp_echo *u)
{
	uint32_t n = u->loop->dgram_pool.nbufs;
	if (n == 0)
		return -EINVAL;
	int rc = udp_rate_init(&u->rate, u->rate_per_s, RATE_SLOTS);
	if (rc < 0)
		return rc;
	u->replies = calloc(n, sizeof(*u->replies));
	if (!u->replies) {
		udp_rate_fini(&u->rate);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		u->replies[i].next_free = u->free_replies;
		u->free_replies = &u->replies[i];
	}
	return 0;
}

int udp_echo_listen(struct udp_echo *u, int fd)
{
	int rc = u->nports == UDP_MAX_PORTS ? -EMFILE : 0;
	if (rc == 0 && !u->replies)
		rc = first_port(u);
	if (rc < 0) {
		loop_close_fd(u->loop, fd);
		return rc;
	}
	struct udp_port *p = &u->ports[u->nports];
	*p = (struct udp_port){ .fd = fd, .u = u };
	p->rx = (struct op){ .code = OP_RECVMSG, .fd = fd, .msg = &p->mh, .done = on_recv,
			     .owner = p };
	rc = port_arm(p);
	if (rc < 0) {
		loop_close_fd(u->loop, fd);
		return rc;
	}
	u->nports++;
	u->nports_open++;
	return 0;
}

void udp_echo_stop(struct udp_echo *u)
{
	if (u->stopping)
		return;
	u->stopping = true;
	for (int i = 0; i < u->nports; i++) {
		struct udp_port *p = &u->ports[i];
		if (loop_op_armed(&p->rx))
			loop_cancel(u->loop, &p->rx);
		else
			port_close_if_idle(p);
	}
	check_quiet(u);
}

bool udp_echo_done(const struct udp_echo *u)
{
	return u->nports_open == 0;
}

bool udp_echo_any_armed(const struct udp_echo *u)
{
	for (int i = 0; i < u->nports; i++)
		if (loop_op_armed(&u->ports[i].rx) || u->ports[i].inflight)
			return true;
	return false;
}

void udp_echo_fini(struct udp_echo *u)
{
	for (int i = 0; i < u->nports; i++) {
		struct udp_port *p = &u->ports[i];
		loop_op_abandon(&p->rx);
		if (p->fd >= 0)
			loop_close_fd(u->loop, p->fd);
		p->fd = -1;
	}
	/* Replies still armed after the bounded wait are abandoned with the loop. */
	for (uint32_t i = 0; u->replies && i < u->loop->dgram_pool.nbufs; i++)
		loop_op_abandon(&u->replies[i].op);
	u->nports_open = 0;
	free(u->replies);
	u->replies = NULL;
	udp_rate_fini(&u->rate);
}
