/* bm_selftest - a benchmark that needs no engine: an echo of N bytes over an AF_UNIX socketpair,
 * done by hand (write on one end, read on the other, write back, read back).
 *
 * It is the benchmark binary's smoke test: it proves gbench's timed loop, arguments, byte and
 * item rates and counters end to end, and gives a floor for the cost of one kernel round trip
 * that the echod benchmarks can be read against.
 */
#include "gbench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One thread drives both ends with blocking I/O, so each leg must fit in the socket buffer or
 * the write would wait for a read that never comes. 64 KiB fits the default AF_UNIX buffer
 * (~208 KiB); larger payloads go in several legs. */
#define LEG_MAX (64 * 1024)

struct pair {
	int a, b;
	long syscalls; /* write/read calls made, to show short transfers as a counter */
};

/* Moves exactly n bytes from fd `from` into fd `to` and reads them into dst. Returns 0, or an
 * errno value (EPIPE if the peer closed). */
static int leg(struct pair *p, int from, int to, const char *src, char *dst, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t w = write(from, src + done, n - done);
		p->syscalls++;
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? errno : EPIPE;
		done += (size_t)w;
	}
	for (size_t done = 0; done < n;) {
		ssize_t r = read(to, dst + done, n - done);
		p->syscalls++;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EPIPE;
		done += (size_t)r;
	}
	return 0;
}

/* n bytes from `out` go a -> b and come back b -> a into `back`. Returns 0 or an errno value. */
static int round_trip(struct pair *p, const char *out, char *mid, char *back, size_t n)
{
	for (size_t off = 0; off < n; off += LEG_MAX) {
		size_t len = n - off < LEG_MAX ? n - off : LEG_MAX;
		int err = leg(p, p->a, p->b, out + off, mid + off, len);
		if (err == 0)
			err = leg(p, p->b, p->a, mid + off, back + off, len);
		if (err != 0)
			return err;
	}
	return 0;
}

static void fail(struct gbench_state *st, const char *what, int err)
{
	char msg[128];
	snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
	gbench_skip_with_error(st, msg);
}

/* One checked round trip before timing, so a broken transfer is an error, not a fast result;
 * checking inside the loop would add a memcmp to what is measured. */
static int check_round_trip(struct gbench_state *st, struct pair *p, char *bufs, size_t n)
{
	char *out = bufs, *mid = bufs + n, *back = bufs + 2 * n;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(i * 31 + 7);
	int err = round_trip(p, out, mid, back, n);
	if (err != 0) {
		fail(st, "round trip", err);
		return -1;
	}
	if (memcmp(out, back, n) != 0) {
		gbench_skip_with_error(st, "round trip: bytes came back changed");
		return -1;
	}
	return 0;
}

static void timed_round_trips(struct gbench_state *st, struct pair *p, char *bufs, size_t n)
{
	p->syscalls = 0;
	while (gbench_keep_running(st)) {
		int err = round_trip(p, bufs, bufs + n, bufs + 2 * n, n);
		if (err != 0) {
			fail(st, "round trip", err);
			break;
		}
	}
	int64_t iters = gbench_iterations(st);
	gbench_set_bytes_processed(st, iters * (int64_t)n); /* payload bytes echoed */
	gbench_set_items_processed(st, iters);              /* round trips */
	gbench_counter(st, "syscalls", (double)p->syscalls, GBENCH_COUNTER_PER_ITERATION);
}

static void bm_socketpair_roundtrip(struct gbench_state *st, void *arg)
{
	(void)arg;
	int64_t arg0 = gbench_range(st, 0);
	if (arg0 <= 0) {
		gbench_skip_with_error(st, "payload size must be positive");
		return;
	}
	size_t n = (size_t)arg0;

	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
		fail(st, "socketpair", errno);
		return;
	}
	struct pair p = {.a = fds[0], .b = fds[1]};

	char *bufs = malloc(3 * n); /* out, mid (b's copy), back */
	if (bufs == NULL)
		fail(st, "malloc", ENOMEM);
	else if (check_round_trip(st, &p, bufs, n) == 0)
		timed_round_trips(st, &p, bufs, n);

	free(bufs);
	close(p.a);
	close(p.b);
}

void bm_selftest_register(void)
{
	struct gbench_def *d =
		gbench_register("selftest/socketpair_roundtrip", bm_socketpair_roundtrip, NULL);
	gbench_arg(d, 64);
	gbench_arg(d, 4096);
	gbench_arg(d, 65536);
}
