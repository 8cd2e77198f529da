/* echo.h - the echo protocol core (RFC 862 over TCP and Unix streams; UDP in udp.c), identical
 * for every backend.
 *
 * One `struct echo_server` per loop. It owns the loop's listeners and connections and speaks
 * to the kernel only through the reactor's operations.
 */
#ifndef ECHOD_ECHO_H
#define ECHOD_ECHO_H

#include <stdbool.h>
#include <stdint.h>

#include "reactor.h"
#include "preamble.h"
#include "udp.h"


struct echo_limits {
	uint32_t max_conns;        /* over it: accept and refuse at once */
	/* Connections of the whole process, shared by every worker's server, counted against
	 * max_conns; NULL: this server's own count is the limit (tests, one loop). */
	_Atomic uint32_t *conns_total;
	uint32_t conn_buffer;      /* high-water mark of queued bytes per connection */
	uint32_t idle_timeout_ms;  /* 0 = off */
	uint32_t drain_timeout_ms; /* on stop: time allowed to flush queued bytes */
	uint32_t udp_rate;         /* UDP replies per second per source address; 0 = no cap */
	bool proxy_protocol;       /* stream connections begin with a PROXY protocol header */
	uint32_t proxy_timeout_ms; /* ... complete this long after the accept, or closed */
};

/* Why a connection was closed; each close counts once, under the first reason that applies. */
enum echo_close_reason {
	ECHO_CLOSE_EOF,   /* the peer half-closed and got its echo (RFC 862's normal end) */
	ECHO_CLOSE_RESET, /* the peer reset the connection (ECONNRESET, EPIPE) */
	ECHO_CLOSE_IDLE,  /* --idle-timeout */
	ECHO_CLOSE_DRAIN, /* the server's stop: drained and half-closed by us, or cut */
	ECHO_CLOSE_ERROR, /* any other error on the socket or in the server */
	ECHO_CLOSE_NOMEM, /* no memory for its echo buffer: this one closed, the others served */
	ECHO_CLOSE_REASONS
};
extern const char *const echo_close_reason_names[ECHO_CLOSE_REASONS];

/* Counted by the loop's thread in plain integers; other threads see copies (worker.c). */
struct echo_stats {
	uint64_t accepted, refused_limit, refused_fd, refused_nomem;
	uint64_t closed_by[ECHO_CLOSE_REASONS], aborted, idle_closed;
	uint64_t bytes_in, bytes_out, spilled_bytes;
	uint64_t discarded_bytes; /* read and dropped after our half-close in a drain */
	uint64_t paused, enobufs, accept_backoffs;
	/* --proxy-protocol: headers accepted, connections closed for a bad or missing header,
	 * and for none within proxy_timeout_ms. */
	uint64_t proxy_accepted, proxy_rejected, proxy_timeouts;
	uint32_t conns, conns_peak;
};

/* Connections closed, for every reason. */
static inline uint64_t echo_stats_closed(const struct echo_stats *s)
{
	uint64_t n = 0;
	for (int i = 0; i < ECHO_CLOSE_REASONS; i++)
		n += s->closed_by[i];
	return n;
}

/* Queued bytes are struct seg runs (reactor.h): a pool buffer (bid >= 0) or the connection's
 * spill buffer (-1). */

struct conn;
struct listener {
	struct op acc;
	int fd;
	bool closing;
	bool unix_stream; /* AF_UNIX: no TCP options, nothing to wait for at close */
	bool nodelay;     /* TCP_NODELAY set on it: accepted sockets inherit it */
	struct echo_server *srv;
};

#define ECHO_MAX_LISTENERS 16

struct echo_server {
	struct loop *loop;
	struct echo_limits lim;
	uint32_t lowat;           /* resume receiving at or below this */
	uint32_t share;           /* pool buffers a backlogged connection may hold */
	struct seg *segs;         /* one per pool buffer, indexed by bid */
	uint32_t bufs_held;       /* pool buffers held in connection queues */
	struct listener listeners[ECHO_MAX_LISTENERS];
	int nlisteners, nlisteners_open;
	struct conn *head, *tail; /* all connections, least recently active first */
	struct conn *waiting, *waiting_tail; /* recv found the pool dry; woken first come first */
	struct loop_timer idle_timer, backoff_timer, drain_timer, migrate_timer, refusal_timer;
	struct loop_timer linger_timer, proxy_timer;
	struct preamble_list preambles;  /* connections whose PROXY header is still arriving */
	uint64_t proxy_logged_at;
	uint64_t proxy_unlogged;         /* rejections since the last line about them */
	uint64_t nomem_logged_at;
	uint64_t nomem_unlogged;         /* connections closed for memory since the last line */
	uint32_t backoff_ms;
	uint64_t migrated_at_ms;
	bool draining;
	uint64_t log_refusals_at;
	uint64_t refusals_unlogged;
	const char *refusal_reason; /* of the last refusal not yet logged */
	int refusal_fd;
	struct echo_stats stats;
	struct udp_echo udp;      /* the loop's UDP sockets */
};

int echo_server_init(struct echo_server *srv, struct loop *loop, const struct echo_limits *lim);
void echo_server_fini(struct echo_server *srv);
/* Start accepting on a bound, listening, non-blocking socket; the server owns it from now. */
int echo_server_listen(struct echo_server *srv, int fd);
/* Serve a bound datagram socket (the loop needs a datagram pool); owns it from now on. */
int echo_server_listen_udp(struct echo_server *srv, int fd);
/* Adopt an accepted socket as a connection (used by accept and by tests). */
int echo_server_adopt(struct echo_server *srv, int fd);
/* Graceful stop: close listeners, stop reading, flush queues (bounded by drain_timeout_ms),
 * close every connection; sets loop->stop once nothing is left. */
void echo_server_stop(struct echo_server *srv);
/* Stop now: what stop() has not finished is cut (counted as aborted; the second signal). */
void echo_server_cut(struct echo_server *srv);
bool echo_server_done(const struct echo_server *srv);

#endif
