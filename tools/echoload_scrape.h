/* echoload_scrape.h - the server's own counters (--server-metrics): the URL, one bounded HTTP
 * GET of echod's /metrics, the Prometheus text exposition summed per family, and the figures
 * per message from a scrape at each end of the measured interval.
 *
 * Apart from echoload.h so that tests/test_echoload.c can compile echoload_scrape.c in and hold
 * the pure parts (URL, HTTP framing, exposition) to literal text. */
#ifndef ECHOLOAD_SCRAPE_H
#define ECHOLOAD_SCRAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAPE_TIMEOUT_MS 2000          /* connect, request and whole response */
#define SCRAPE_MAX_RESPONSE (4u << 20)  /* status line, headers and body, as received */

struct scrape_url {
	char host[256];      /* name or address, IPv6 without its brackets */
	char port[6];
	char authority[264]; /* HOST:PORT as in the URL, for the Host header */
};

/* The families echoload reads; each summed over all its series (workers, calls). */
enum scrape_family { SF_SYSCALLS, SF_WAKEUPS, SF_COMPLETIONS, SF_COUNT };
extern const char *const scrape_family_names[SF_COUNT];

struct scrape {
	double sum[SF_COUNT];
	bool found[SF_COUNT]; /* at least one sample, none malformed, the sum finite */
};

/* What the server did per message echoed in the interval; NAN where unknown. */
struct server_work {
	double syscalls_per_msg, wakeups_per_msg, completions_per_wakeup;
};

/* http://HOST:PORT/metrics or http://HOST:PORT (HOST may be [IPv6]). 0, or -1 with one line
 * in why saying what is wrong. */
int scrape_url_parse(const char *url, struct scrape_url *u, char *why, size_t len);

/* Sums the families over the exposition text[0..len) (not NUL-terminated). Comments, other
 * families and unparsable lines are skipped; a malformed sample of one of ours makes that
 * family not found, since its sum would be wrong. */
void scrape_parse(const char *text, size_t len, struct scrape *s);

/* An HTTP/1.x response as it arrives: call with everything received so far (eof: nothing more
 * will come). Content-Length, chunked transfer coding, or until the connection closes. */
enum { HTTP_MORE, HTTP_DONE, HTTP_BAD };
struct http_response {
	size_t head_len;       /* 0 until the empty line ending the headers has arrived */
	int status;
	bool chunked;
	int64_t content_length; /* -1: not given */
	size_t chunk_pos;      /* chunked: the size line of the first chunk not yet complete */
	char why[96];          /* HTTP_BAD: what was wrong */
};
void scrape_http_init(struct http_response *r);
/* HTTP_MORE, HTTP_BAD (why set), or HTTP_DONE: the body is then decoded in place at
 * buf + r->head_len, *body_len bytes. */
int scrape_http_feed(struct http_response *r, char *buf, size_t len, bool eof,
		     size_t *body_len);

/* A nonblocking socket connected to ai within timeout_ms, or -1 with *err (an errno value).
 * echoload's load connections use it too. */
struct addrinfo;
int connect_within(const struct addrinfo *ai, int timeout_ms, int *err);

/* GET /metrics from u and parse it, all within SCRAPE_TIMEOUT_MS. 0, or -1 with why. */
int scrape_fetch(const struct scrape_url *u, struct scrape *s, char *why, size_t len);

/* The figures from the scrapes before and after an interval in which msgs were echoed. */
void scrape_work(const struct scrape *before, const struct scrape *after, uint64_t msgs,
		 struct server_work *w);
/* The families without a usable difference between the two scrapes (absent, malformed or
 * decreasing), comma-separated into buf; returns how many. */
int scrape_unusable(const struct scrape *before, const struct scrape *after, char *buf,
		    size_t len);

#endif
