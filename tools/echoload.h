/* echoload.h - what echoload's parts share: the options, one connection's state, one worker
 * (a thread with its own event loop and its own share of the connections), and the calls
 * between the parts:
 *
 *   echoload.c         command line, connecting, threads, progress, CPU sampling
 *   echoload_report.c  the final summary, JSON and CSV
 *   echoload_conn.c    per-connection bookkeeping the engines drive: pacing, send queue,
 *                      completions, latency, drain
 *   echoload_verify.c  the message format and the byte-exact check of every echo
 *   echoload_scrape.c  --server-metrics: echod's own counters over HTTP (echoload_scrape.h)
 *   echoload_epoll.c   the epoll engine      echoload_uring.c   the io_uring engine
 *   echoload_udp.c     --udp: datagram sockets, their window, timeouts and verdicts, and
 *                      their epoll engine (recvmmsg/sendmmsg)
 *   echoload_reconnect.c  --reconnect: a connection's life after its N echoes (the clean
 *                      close, the new connection on its slot), shared by both engines
 *
 * A connection's bytes are one stream: message seq occupies stream bytes [seq*size, seq*size +
 * size). All positions below are stream offsets, so a partial send or recv is just a smaller
 * step forward. */
#ifndef ECHOLOAD_H
#define ECHOLOAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "echoload_scrape.h"
#include "hist.h"

#define ECHOLOAD_VERSION "0.2.0"
#define EXIT_USAGE 64       /* bad flag or value (sysexits EX_USAGE) */
#define EXIT_UNAVAILABLE 69 /* the chosen engine cannot run here (EX_UNAVAILABLE) */

#define MSG_HDR 16          /* header: conn id, seq, check (see echoload_verify.c) */
#define MSG_MAX (16u << 20) /* largest --size */
#define UDP_MSG_MAX 65507u  /* largest --size with --udp: an IPv4 datagram's payload */
#define UDP_DEPTH_MAX 1024u /* largest --depth with --udp (see echoload_udp.c) */
#define NS_PER_S 1000000000ull
#define CPU_STAT_MAX 64     /* CPUs --cpu-stat may list */
#define RATE_VALID_PCT 99.0 /* an open loop that achieved less than this % of --rate is not a
			     * measurement at that rate: valid=0 */

enum engine_kind { ENGINE_EPOLL, ENGINE_URING };

struct options {
	const char *host, *port;
	uint32_t conns, size, depth, threads;
	double duration, warmup, rate; /* seconds, seconds, msgs/s in total (0: closed loop) */
	enum engine_kind engine;
	pid_t server_pid;              /* 0: not given */
	char server_backend[32];       /* its --backend, from /proc/PID/cmdline; "" if unknown */
	const char *server_metrics;    /* --server-metrics URL as given; NULL: not given */
	struct scrape_url metrics;     /* ... parsed */
	bool json, csv, quiet;
	bool progress;                 /* --progress: the progress line without a terminal */
	const char *label;
	bool udp;                      /* --udp: datagrams instead of a stream */
	uint64_t udp_timeout_ns;       /* --udp-timeout: a datagram unanswered this long is lost */
	unsigned ncpu_stat;            /* --cpu-stat: CPUs whose /proc/stat lines are reported */
	unsigned cpu_stat[CPU_STAT_MAX];
	uint32_t reconnect;            /* --reconnect N: each connection echoes N messages, closes
					* cleanly and is replaced by a new one; 0: connections
					* stay open for the whole run */
};

/* Counted by each worker, summed for the report. Every unexpected event adds 1 to errors and
 * to the kind it was classified as, so a misclassified corner case still fails the run. */
struct counters {
	uint64_t msgs;        /* intact echoes of messages due inside the measured interval (open
			       * loop: intended send time; closed: created), whenever they came */
	uint64_t msgs_all;    /* intact echoes at any time (warm-up, measured, drain) */
	uint64_t rx_bytes;    /* echoed bytes received, intact or not */
	uint64_t errors;      /* error events of all kinds */
	uint64_t lost_bytes, lost_msgs;     /* expected, never came (msgs: not a byte of them) */
	uint64_t dup_bytes, dup_msgs;       /* came more than once (msgs: a whole copy) */
	uint64_t corrupt_bytes;             /* came with other values (bit flips, garbage) */
	uint64_t reordered;                 /* swapped bytes; a message after a later one */
	uint64_t conn_errors;               /* closed or reset by the server, or failed */
	/* What the drain did not get back. On a connection still open when it ended, every byte
	 * sent and not echoed fails the run: lost, or a server that stopped answering. Not
	 * counted in errors, which are the bytes that did come and came wrong. */
	uint64_t in_flight;        /* messages at least partly sent, not wholly echoed (the
				    * result's in_flight_at_stop: a name from when it was counted
				    * at the stop and excused) */
	uint64_t in_flight_partly; /* ... of which some bytes did come back */
	uint64_t unanswered_bytes; /* bytes sent and not echoed */
	uint64_t stalled;          /* connections with unanswered bytes */
	/* Open loop. */
	uint64_t slots_due;        /* pacing slots due inside the measured interval */
	uint64_t never_sent;       /* ... whose message never went out, not one byte (the
				    * --depth cap held it back, or its connection failed) */
	uint64_t sent_in_interval; /* messages that went out (their first byte) inside it, when
				    * ever due: a steady lag shifts as many in as out */
	/* --udp only. Datagrams are counted by when they were sent: those sent inside the
	 * measured interval, and what became of them (during the drain too). */
	uint64_t dg_sent;       /* sent inside the measured interval */
	uint64_t dg_received;   /* ... whose reply came back intact */
	uint64_t dg_lost;       /* ... given up after --udp-timeout without a reply (not an error) */
	uint64_t dg_late;       /* replies that came after their datagram was given up (any
				 * time; not an error, and the datagram stays counted lost) */
	uint64_t misdelivered;  /* replies with another socket's id, or a sequence this socket
				 * never sent (error) */
	/* TCP. conns_opened: connections established, the first ones included. --reconnect only:
	 * conns_closed: connections that echoed their N messages and closed cleanly (server's
	 * EOF read after our FIN); conns_done: ... of those, the ones whose close completed
	 * inside the measured interval (conns/s); connect_errors: connects that failed, each also
	 * counted in errors. */
	uint64_t conns_opened, conns_closed, conns_done, connect_errors;
};

struct mismatch; /* echoload_verify.c: received bytes not yet explained */
struct udp_sock;   /* echoload_udp.c: one UDP socket's window */
struct udp_worker; /* echoload_udp.c: a worker's timeout queue and I/O batches */

/* --reconnect: where a connection is in its life. Without it every connection is OPEN until it
 * fails or the run ends. */
enum conn_phase {
	CONN_OPEN,       /* echoing (the zero value: the first connections start here) */
	CONN_CONNECTING, /* a new connection's connect() is under way */
	CONN_CLOSING,    /* its N echoes verified, our FIN sent: reading until the server's EOF */
	CONN_DONE,       /* closed cleanly after the stop, or its connect failed: no new one */
};

struct conn {
	int fd;
	uint32_t id;            /* in every header: which connection a message belongs to (with
				 * --reconnect each new connection on a slot gets a new one) */
	uint32_t index;         /* in its worker's array */
	uint64_t queued;        /* stream bytes of the messages created so far (whole messages) */
	uint64_t sent;          /* stream bytes handed to the kernel (<= queued) */
	uint64_t rx;            /* first stream byte not yet accounted for by received bytes */
	uint64_t credits;       /* open loop: pacing slots granted to this connection */
	uint64_t credits_used;  /* ... and used to create messages */
	uint64_t *stamp;        /* at seq % depth: send time of seq (open loop: intended time) */
	uint64_t bad_until;     /* messages below this seq were damaged: not intact, no latency */
	uint64_t last_rx;       /* when bytes last arrived (or the run started) */
	uint64_t skip_lo, skip_hi; /* stream bytes last counted lost: if they turn up, reordered */
	bool skip_whole;        /* ... and the whole messages in them were counted lost too */
	struct mismatch *mm;    /* NULL until the first unexpected byte */
	struct udp_sock *udp;   /* --udp: its window (the stream fields above stay 0) */
	bool dead;              /* closed by the server or failed: no more I/O on it */
	bool dirty;             /* on the worker's list of connections with bytes to send */
	uint8_t phase;          /* enum conn_phase */
	uint32_t gen;           /* --reconnect: connections this slot has had before this one */
	uint64_t connect_at;    /* --reconnect: when this connection's connect() was issued */
	/* engine state */
	bool out_armed;         /* epoll: EPOLLOUT registered */
	bool send_busy;         /* uring: a send is in flight (at most one, to keep order) */
	uint8_t *txbuf;         /* uring: the bytes of that send, alive until it completes */
	uint32_t txlen, txoff;
};

struct worker {
	unsigned index;
	const struct options *opt;
	struct conn *conns;
	uint32_t nconns;
	struct counters cnt;
	struct hist lat;          /* ns: every message due inside the measured interval, at its
				   * echo's latency, or, never echoed, at its lateness when the
				   * drain ended (a lower bound) */
	struct hist lag;          /* open loop, ns: how late the messages due inside the measured
				   * interval went out (never: their lateness at the end) */
	uint64_t t_begin, t_meas; /* CLOCK_MONOTONIC ns: start sending; start measuring */
	_Atomic uint64_t *stop_at; /* shared: end of the measured interval; no new messages */
	atomic_bool *abort_run;   /* shared: a worker failed, everybody stops */
	uint64_t now;             /* refreshed by worker_clock() once per loop iteration */
	uint64_t stop_seen;       /* when this worker noticed stop_at (0: still running) */
	uint64_t last_rx;         /* when a byte last arrived, to end a stuck drain early */
	uint32_t *dirty;          /* indexes of connections with bytes to send */
	uint32_t ndirty;
	uint32_t npending;        /* connections holding unexplained bytes */
	double slot_ns;           /* open loop: one pacing slot every slot_ns, round-robin */
	uint64_t next_slot;
	bool started;
	uint64_t stop;            /* stop_at as last read by worker_step */
	pthread_mutex_t pub_lock; /* a copy of cnt and lat for the progress line */
	struct counters pub_cnt;
	struct hist pub_lat;
	uint64_t next_publish;
	int status;               /* 0, or an exit status with why[] saying what failed */
	char why[256];
	struct udp_worker *udp;   /* --udp: the timeout queue and I/O batches */
	/* --reconnect */
	struct hist conn_lat;     /* ns from connect() to established, for connects issued inside
				   * the measured interval */
	struct sockaddr_storage peer; /* the server's address, as the first connections used */
	socklen_t peer_len;
	bool vary_src;            /* the server is on 127.0.0.0/8: rotate source addresses */
	uint32_t next_src;        /* ... the next one, an offset into RECONNECT_SOURCES */
	int connect_err;          /* errno of the first connect that failed (0: none) */
};

/* echoload.c */
uint64_t now_ns(void);

/* echoload_conn.c: called by the engines. */
int worker_setup(struct worker *w);       /* allocations; 0 or -1 (why[] set) */
void worker_teardown(struct worker *w);
void worker_clock(struct worker *w);
/* Sleeps until the common start time, so that all workers start sending together. */
void worker_wait_start(const struct worker *w);
/* Timers, pacing, stop and drain. Returns ns the engine may sleep, or -1 when finished. */
int64_t worker_step(struct worker *w);
void worker_fail(struct worker *w, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void conn_received(struct worker *w, struct conn *c, const uint8_t *p, size_t n);
/* Bytes to send next: fills buf with up to cap bytes from c->sent on, returns how many. */
size_t conn_fill(const struct conn *c, uint8_t *buf, size_t cap);
/* n more bytes were handed to the kernel: from now on their echoes are expected. */
void conn_sent(struct worker *w, struct conn *c, size_t n);
/* Puts c on the worker's list of connections to send on (the engine's flush walks it). */
void conn_want_send(struct worker *w, struct conn *c);
/* Call flush(w, engine, c) for each connection marked by conn_want_send() since the last call,
 * in marking order (also those marked while this runs), and clear the marks. */
void worker_flush_dirty(struct worker *w, void (*flush)(struct worker *, void *, struct conn *),
			void *engine);
/* The server closed (err 0) or the socket failed (errno value); the engine stops I/O on it. */
void conn_failed(struct worker *w, struct conn *c, int err);
/* Accounts for stream bytes up to pos (messages ending before it are complete); damaged marks
 * the messages in between as not intact. */
void conn_advance(struct worker *w, struct conn *c, uint64_t pos, bool damaged);
void conn_damage(struct conn *c, uint64_t seq);
/* Creates messages (or datagrams) while the window and, open loop, the pacing allow. */
void conn_refill(struct worker *w, struct conn *c);
/* Latency of a message created (open loop: due) at stamp, completed now: counted if stamp is
 * inside the interval. */
void worker_completed(struct worker *w, uint64_t stamp);
/* A message created (open loop: due) at stamp went out now: its send lag (open loop). */
void worker_sent(struct worker *w, uint64_t stamp);
/* Report one error event (the first few go to stderr with details). */
void conn_error(struct worker *w, const struct conn *c, uint64_t pos, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* echoload_verify.c */
int msg_setup(uint32_t size);             /* the shared payload pattern; 0 or -1 */
/* Reads a message header at p (MSG_HDR bytes): false if its check does not match. */
bool msg_header_parse(const uint8_t *p, uint32_t *id, uint64_t *seq);
void msg_teardown(void);
/* Stream bytes [pos, pos + len) of connection id. */
void msg_stream(uint32_t id, uint64_t pos, uint8_t *out, size_t len);
/* Checks received bytes against the stream, explains the unexpected ones. */
void verify_received(struct worker *w, struct conn *c, const uint8_t *p, size_t n);
/* Decides now, with the bytes there are, about held unexpected bytes: called when none came
 * for a while, or the connection or the run ends. */
void verify_settle(struct worker *w, struct conn *c);
bool verify_pending(const struct conn *c);
uint64_t verify_last_arrival(const struct conn *c); /* when held bytes last arrived */
void verify_free(struct conn *c);

/* echoload_reconnect.c: --reconnect, for the engines. A connection's life: OPEN until
 * conn_close_due(), then the engine sends its FIN (shutdown SHUT_WR) and calls conn_closing();
 * at the server's EOF conn_eof() says whether this was that clean end; conn_cycle_done() closes
 * the socket and says whether the engine opens a new one (reconnect_socket, conn_connecting,
 * its connect) and reports conn_established() or conn_connect_failed(). */
void reconnect_setup(struct worker *w);  /* after peer is set: source rotation */
/* Every echo of the connection's N messages verified, nothing held back or in flight: time for
 * the engine to half-close it. */
bool conn_close_due(const struct worker *w, const struct conn *c);
void conn_closing(struct conn *c);       /* our FIN went out */
/* The server's EOF: true if it ends a clean close (held bytes are decided first), false if
 * the server closed on its own (the engine fails the connection as before). */
bool conn_eof(struct worker *w, struct conn *c);
/* A cleanly closed connection: its socket closed, counted, the slot reset for a new
 * connection. true: open one; false: the run is stopping, the slot is done. */
bool conn_cycle_done(struct worker *w, struct conn *c);
/* A TCP socket for a new connection (flags: SOCK_NONBLOCK or 0), TCP_NODELAY set and, on
 * loopback, bound to the next source address; -1 with *err. */
int reconnect_socket(struct worker *w, int flags, int *err);
void conn_connecting(struct worker *w, struct conn *c, int fd); /* connect() issued on fd */
void conn_established(struct worker *w, struct conn *c);
/* The connect failed (err: errno value): an error; the engine has closed the socket. */
void conn_connect_failed(struct worker *w, struct conn *c, int err);

/* echoload_udp.c */
/* A nonblocking UDP socket connect()ed to ai (replies from elsewhere are filtered by the
 * kernel), with room to receive a window of datagrams; -1 with *err on failure. */
int udp_socket(const struct addrinfo *ai, uint32_t size, uint32_t depth, int *err);
int udp_setup(struct worker *w);          /* 0 or -1 (why[] set) */
void udp_teardown(struct worker *w);
bool udp_may_create(const struct worker *w, const struct conn *c);
void udp_create(struct worker *w, struct conn *c, uint64_t stamp);
bool udp_unsent(const struct conn *c);
uint64_t udp_outstanding(const struct conn *c);
/* Gives up datagrams unanswered for --udp-timeout; returns the next such deadline. */
uint64_t udp_expire(struct worker *w);
int udp_run(struct worker *w);            /* the epoll engine for --udp */

/* echoload_epoll.c, echoload_uring.c: run the loop until worker_step() says finished. */
int epoll_run(struct worker *w);
/* epoll_pwait2 with a nanosecond timeout (open-loop pacing needs better than milliseconds);
 * epoll_wait on kernels without it (< 5.11), remembered in *no_pwait2. */
struct epoll_event;
int epoll_wait_ns(int ep, struct epoll_event *ev, int max, int64_t wait_ns, bool *no_pwait2);
int uring_run(struct worker *w);
/* 0 if --engine uring can run here, else -1 with one line in why. */
int uring_probe(char *why, size_t len);

/* echoload.c: one CPU's /proc/stat line, in USER_HZ ticks */
enum { CPU_USER, CPU_NICE, CPU_SYSTEM, CPU_IDLE, CPU_IOWAIT, CPU_IRQ, CPU_SOFTIRQ, CPU_STEAL,
       CPU_FIELDS };
struct cpu_ticks {
	uint64_t t[CPU_FIELDS];
};

/* echoload_report.c */
struct result {
	const struct options *opt;
	struct counters cnt;
	const struct hist *lat;
	const struct hist *lag;   /* open loop only; else NULL */
	double measured_s;        /* the measured interval actually run */
	double client_cpu_s;      /* user + system of this process over the measured interval */
	double server_cpu_s;      /* < 0: not measured */
	double client_cpu_res_s;  /* what one step of each reading is: 1 ns, or a 10 ms tick */
	double server_cpu_res_s;
	/* --cpu-stat: each listed CPU's ticks over the measured interval (ok false: unreadable),
	 * and whose it is: pinned to echoload and not to the server, or the other way round */
	struct cpu_ticks cpu[CPU_STAT_MAX];
	bool cpu_ok;
	bool cpu_client[CPU_STAT_MAX], cpu_server[CPU_STAT_MAX];
	double tick_s;            /* one /proc/stat tick */
	struct server_work work;  /* from --server-metrics; NAN where unknown */
	char timestamp[32], kernel[128];
	const struct hist *conn_lat; /* --reconnect: connect latencies; else NULL */
	int connect_err;          /* errno of the first connect that failed, 0 if none */
};
/* Open loop: the messages that went out inside the interval, in % of the slots --rate
 * scheduled in it (the rate achieved over the rate asked for); NAN for a closed loop. */
double rate_achieved_pct(const struct result *r);
/* false when the result must not be used: errors, unanswered bytes, stalled connections, no
 * message, or an open loop short of RATE_VALID_PCT of --rate. */
bool result_valid(const struct result *r);
void report_human(const struct result *r);
/* 1234567 -> "1,234,567" in buf */
const char *grouped(uint64_t v, char *buf, size_t len);
void report_json(const struct result *r);
void report_csv(const struct result *r);

#endif
