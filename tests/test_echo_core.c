/* test_echo_core.c - the echo core against the fake backend: every completion is chosen by
 * the test, so byte patterns the kernel rarely produces (1-byte receives, 1-byte sends, EOF or
 * reset with bytes queued, a dry pool) are exercised exactly and repeatably. Connection fds are
 * real socketpair ends, so shutdown() and close() by the core can be observed on the peer. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "echo.h"
#include "lib_fake_backend.h"

struct fixture {
	struct loop loop;
	struct echo_server srv;
	int fd, peer;
	struct fake_state *fk;
};

static struct fixture *setup_with(uint32_t nbufs, uint32_t bufsize, uint32_t conn_buffer,
				  uint32_t max_conns)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct loop_config cfg = { .nbufs = nbufs, .bufsize = bufsize, .max_fds = 256 };
	assert_int_equal(loop_init(&f->loop, &fake_backend, &cfg), 0);
	struct echo_limits lim = { .max_conns = max_conns, .conn_buffer = conn_buffer,
				   .drain_timeout_ms = 1000 };
	assert_int_equal(echo_server_init(&f->srv, &f->loop, &lim), 0);
	f->fk = fake_of(&f->loop);
	return f;
}

static int new_conn(struct fixture *f, int *peer)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_true(sv[0] < FAKE_MAX_FDS);
	assert_int_equal(echo_server_adopt(&f->srv, sv[0]), 0);
	assert_non_null(f->fk->rd[sv[0]]); /* receiving at once */
	*peer = sv[1];
	return sv[0];
}

static int setup(void **state)
{
	struct fixture *f = setup_with(64, 512, 4096, 100);
	f->fd = new_conn(f, &f->peer);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	echo_server_fini(&f->srv);
	loop_fini(&f->loop);
	if (f->peer >= 0)
		close(f->peer);
	free(f);
	return 0;
}

static uint64_t now_ms_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* Complete sends on fd `chunk` bytes at a time until none is armed; returns bytes sent. */
static size_t drain(struct fixture *f, int fd, uint32_t chunk, uint8_t *out)
{
	size_t total = 0;
	for (int guard = 0; f->fk->wr[fd] && guard < 1000000; guard++) {
		uint32_t len = fake_send_len(f->fk->wr[fd]), n = len < chunk ? len : chunk;
		fake_send(&f->loop, fd, n, out ? out + total : NULL);
		total += n;
		fake_run(&f->loop);
	}
	return total;
}

static void test_one_byte_receives_and_sends(void **state)
{
	struct fixture *f = *state;
	enum { N = 3000 };
	uint8_t in[N], out[N];
	for (int i = 0; i < N; i++)
		in[i] = (uint8_t)(i * 7 + 3);
	/* 3000 one-byte receives while the first send never completes: the queue grows past the
	 * connection's share of pool buffers, so most bytes go through the spill. */
	size_t received = 0;
	while (received < N && f->fk->rd[f->fd]) {
		assert_true(fake_recv(&f->loop, f->fd, &in[received], 1, true) >= 0);
		received++;
	}
	assert_true(received >= 3000 || f->srv.stats.paused > 0);
	assert_true(f->srv.stats.spilled_bytes > 0);
	/* Then every byte goes out one byte per send, in order, exactly once. */
	size_t sent = 0;
	while (sent < received) {
		size_t n = drain(f, f->fd, 1, out + sent);
		sent += n;
		if (n == 0)
			break;
		while (received < N && f->fk->rd[f->fd]) {
			assert_true(fake_recv(&f->loop, f->fd, &in[received], 1, true) >= 0);
			received++;
		}
	}
	assert_int_equal(received, N);
	assert_int_equal(sent, N);
	assert_memory_equal(out, in, N);
	assert_int_equal(f->loop.pool.nfree, f->loop.pool.nbufs);
	assert_int_equal(f->srv.bufs_held, 0);
}

static void test_short_send_continues_with_remainder(void **state)
{
	struct fixture *f = *state;
	uint8_t in[100];
	for (int i = 0; i < 100; i++)
		in[i] = (uint8_t)i;
	fake_recv(&f->loop, f->fd, in, 100, true);
	struct op *tx = f->fk->wr[f->fd];
	assert_non_null(tx);
	assert_int_equal(tx->nsegs, 1);
	assert_int_equal(fake_send_len(tx), 100);
	char *start = tx->segs->base + tx->segs->off;
	fake_send(&f->loop, f->fd, 30, NULL);
	fake_run(&f->loop);
	tx = f->fk->wr[f->fd];
	assert_non_null(tx);
	assert_ptr_equal(tx->segs->base + tx->segs->off, start + 30); /* same buffer, no copy */
	assert_int_equal(fake_send_len(tx), 70);
	uint8_t out[70];
	assert_int_equal(drain(f, f->fd, 70, out), 70);
	assert_memory_equal(out, in + 30, 70);
}

/* A batch of receives (OPF_BATCH on all but the last) is answered by one send of every run,
 * and a send that ends in the middle of a run resumes there, with the rest still gathered. */
static void test_batch_answered_with_one_gathered_send(void **state)
{
	struct fixture *f = *state;
	uint8_t in[350], out[350];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 13 + 1);
	for (int i = 0; i < 3; i++) {
		fake_recv_flags(&f->loop, f->fd, in + 100 * i, 100, OPF_MORE | OPF_BATCH);
		assert_null(f->fk->wr[f->fd]); /* held: more of the batch follows */
	}
	fake_recv(&f->loop, f->fd, in + 300, 50, true);
	struct op *tx = f->fk->wr[f->fd];
	assert_non_null(tx);
	assert_int_equal(tx->nsegs, 4);
	assert_int_equal(fake_send_len(tx), 350);
	assert_int_equal(f->fk->submits[f->fd], 2); /* the recv, and one send */
	fake_send(&f->loop, f->fd, 150, out);
	fake_run(&f->loop);
	tx = f->fk->wr[f->fd];
	assert_non_null(tx);
	assert_int_equal(tx->nsegs, 3);
	assert_int_equal(tx->segs->off, 50); /* mid-run, in the same buffer */
	assert_int_equal(fake_send_len(tx), 200);
	assert_int_equal(drain(f, f->fd, 1000, out + 150), 200);
	assert_memory_equal(out, in, sizeof(in));
	assert_int_equal(f->srv.bufs_held, 0);
	assert_int_equal(f->loop.pool.nfree, f->loop.pool.nbufs);
}

/* The pool runs dry while a gathered send is in flight. A young send keeps every run it reads
 * (they are the kernel's until it completes) and the rest of the queue moves to the spill; a
 * stalled one is cancelled and everything moves. No byte changes on the way. */
static void test_reclaim_spares_runs_of_gathered_send(void **state)
{
	(void)state;
	struct fixture *f = setup_with(64, 512, 8192, 200);
	f->peer = -1;
	int peer, fd = new_conn(f, &peer);
	uint8_t in[4 * 512 + 100], out[sizeof(in)];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 31 + 7);
	fake_recv_flags(&f->loop, fd, in, 512, OPF_MORE | OPF_BATCH);
	fake_recv_flags(&f->loop, fd, in + 512, 512, OPF_MORE | OPF_BATCH);
	fake_recv(&f->loop, fd, in + 1024, 512, true);
	assert_int_equal(f->fk->wr[fd]->nsegs, 3);
	fake_recv(&f->loop, fd, in + 1536, 512, true); /* a fourth pool buffer, queued behind */
	fake_recv(&f->loop, fd, in + 2048, 100, true);
	uint32_t held = f->srv.bufs_held;
	assert_true(held >= 4);
	/* Others take the rest of the pool, each under a send that never completes. */
	int fds[80], peers[80], n = 0;
	char x[512];
	memset(x, 'x', sizeof(x));
	while (f->loop.pool.nfree > 0 && n < 80) {
		fds[n] = new_conn(f, &peers[n]);
		fake_recv(&f->loop, fds[n], x, sizeof(x), true);
		n++;
	}
	assert_int_equal(f->loop.pool.nfree, 0);
	int cancels = f->fk->cancels[fd];
	fds[n] = new_conn(f, &peers[n]);
	assert_int_equal(fake_recv(&f->loop, fds[n], "y", 1, true), -1); /* dry: reclaim */
	n++;
	/* Young: the three runs under the send stay; the fourth buffer went to the spill. */
	assert_int_equal(f->fk->cancels[fd], cancels);
	assert_non_null(f->fk->wr[fd]);
	assert_int_equal(f->fk->wr[fd]->nsegs, 3);
	assert_int_equal(f->srv.bufs_held, (uint32_t)(n - 1) + 3);
	/* Stalled: once SEND_STALL_MS has passed, the next dry pool cancels it and moves all. */
	usleep(20000);
	f->loop.now_ms = loop_clock_ms();
	int w = fds[n - 1];
	while (fake_recv(&f->loop, w, "z", 1, true) >= 0) /* the waiter takes what is left */
		;
	fake_run(&f->loop);
	assert_true(f->fk->cancels[fd] > cancels);
	fake_run(&f->loop);
	assert_int_equal(drain(f, fd, 700, out), sizeof(in));
	assert_memory_equal(out, in, sizeof(in));
	close(peer);
	for (int i = 0; i < n; i++)
		close(peers[i]);
	echo_server_fini(&f->srv);
	loop_fini(&f->loop);
	free(f);
}

/* A batch's pieces are queued with no send yet (it waits for the last piece), and the next
 * completion is the recv's -ENOBUFS: the pool is dry. The batch must go out, and the reclaim
 * that the dry pool starts must come after it: run first, it found this connection's pool
 * buffers with no send under them, failed to allocate their spill (the address space is
 * capped here, as in test_exhaustion) and closed and freed the connection inside the recv's
 * callback, which then touched it again: a double free. In a child, for the cap. */
static void test_dry_pool_after_batch_sends_then_reclaims(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__)
	print_message("  skipped: AddressSanitizer reserves terabytes of address space, so "
		      "RLIMIT_AS cannot make the spill's allocation fail\n");
	return;
#endif
	fflush(NULL);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct fixture *f = setup_with(16, 512, 1u << 20, 100);
		int peer, fd = new_conn(f, &peer);
		char x[512];
		memset(x, 'x', sizeof(x));
		fake_recv_flags(&f->loop, fd, x, 512, OPF_MORE | OPF_BATCH);
		fake_recv_flags(&f->loop, fd, x, 512, OPF_MORE | OPF_BATCH);
		if (f->fk->wr[fd] || f->srv.bufs_held != 2)
			_exit(2); /* held for the rest of the batch */
		int peers[16], n = 0;
		for (; f->loop.pool.nfree > 0 && n < 16; n++) {
			int o = new_conn(f, &peers[n]);
			fake_recv(&f->loop, o, x, sizeof(x), true);
		}
		struct rlimit rl;
		if (getrlimit(RLIMIT_AS, &rl) < 0)
			_exit(3);
		FILE *st = fopen("/proc/self/statm", "r");
		unsigned long pages = 0;
		if (!st || fscanf(st, "%lu", &pages) != 1)
			_exit(3);
		fclose(st);
		rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (256u << 10);
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			_exit(3);
		if (fake_recv(&f->loop, fd, x, 1, true) != -1) /* the rest: -ENOBUFS */
			_exit(4);
		fake_run(&f->loop);
		struct op *tx = f->fk->wr[fd];
		_exit(tx && fake_send_len(tx) == 1024 && f->srv.stats.conns == (uint32_t)n + 1 ? 0 : 5);
	}
	int status = 0;
	assert_int_equal(waitpid(kid, &status, 0), kid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		print_error("child: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
			    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_eof_with_bytes_queued_echoes_then_half_closes(void **state)
{
	struct fixture *f = *state;
	uint8_t in[1500];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i ^ 0x5a);
	fake_recv(&f->loop, f->fd, in, 500, true);
	fake_recv(&f->loop, f->fd, in + 500, 500, true);
	fake_recv(&f->loop, f->fd, in + 1000, 500, true);
	fake_recv_result(&f->loop, f->fd, 0); /* EOF while 1500 bytes wait */
	fake_run(&f->loop);
	assert_true(fd_is_open(f->fd));
	assert_int_equal(f->fk->forgotten[f->fd], 0);
	uint8_t out[1500];
	assert_int_equal(drain(f, f->fd, 200, out), 1500);
	assert_memory_equal(out, in, 1500);
	/* All echoed: shutdown(SHUT_WR) then close, so the peer reads EOF. */
	assert_int_equal(f->fk->forgotten[f->fd], 1);
	assert_false(fd_is_open(f->fd));
	char x;
	assert_int_equal(recv(f->peer, &x, 1, 0), 0);
	assert_int_equal(f->srv.stats.conns, 0);
	assert_int_equal(f->srv.stats.aborted, 0);
	assert_int_equal(f->loop.pool.nfree, f->loop.pool.nbufs);
}

static void test_reset_with_bytes_queued_releases_everything(void **state)
{
	struct fixture *f = *state;
	uint8_t in[512] = { 1 };
	for (int i = 0; i < 3; i++)
		fake_recv(&f->loop, f->fd, in, 512, true);
	assert_non_null(f->fk->wr[f->fd]);
	fake_recv_result(&f->loop, f->fd, -ECONNRESET);
	/* The in-flight send is cancelled; nothing is freed before its final completion. */
	assert_int_equal(f->fk->cancels[f->fd], 1);
	assert_true(fd_is_open(f->fd));
	fake_run(&f->loop);
	assert_false(fd_is_open(f->fd));
	assert_int_equal(f->srv.stats.conns, 0);
	assert_int_equal(f->srv.stats.aborted, 1);
	assert_int_equal(f->loop.pool.nfree, f->loop.pool.nbufs);
	assert_int_equal(f->srv.bufs_held, 0);
}

static void test_backpressure_pauses_and_resumes(void **state)
{
	struct fixture *f = *state; /* high water 4096, low water 2048 */
	uint8_t chunk[512];
	int n = 0;
	while (f->fk->rd[f->fd] && n < 100) {
		memset(chunk, n, sizeof(chunk));
		fake_recv(&f->loop, f->fd, chunk, sizeof(chunk), true);
		n++;
	}
	fake_run(&f->loop);
	assert_null(f->fk->rd[f->fd]); /* paused: recv cancelled */
	assert_int_equal(n, 4096 / 512);
	assert_int_equal(f->srv.stats.paused, 1);
	int submits = f->fk->submits[f->fd];
	/* Sending 1500 bytes leaves 2596 queued: still above low water, still paused. */
	fake_send(&f->loop, f->fd, 512, NULL);
	fake_run(&f->loop);
	fake_send(&f->loop, f->fd, 512, NULL);
	fake_run(&f->loop);
	fake_send(&f->loop, f->fd, 476, NULL);
	fake_run(&f->loop);
	assert_null(f->fk->rd[f->fd]);
	/* Below low water: receiving again. */
	fake_send(&f->loop, f->fd, 36, NULL);
	fake_run(&f->loop);
	fake_send(&f->loop, f->fd, 512, NULL);
	fake_run(&f->loop);
	assert_non_null(f->fk->rd[f->fd]);
	assert_true(f->fk->submits[f->fd] > submits);
}

/* Stuck connections fill the whole pool (two buffers each while it is not low, one after);
 * the next connection finds it dry. The core must move the stuck connections' queued bytes
 * into their own spill buffers, hand the pool back, and wake the waiting connection; and the
 * stuck connections still echo every byte in order. */
/* Found by fuzz_echo_core: every pool buffer under a send submitted in the same millisecond
 * (so not yet "stalled") when a 17th connection's recv finds the pool dry. The reclaim sweep
 * then frees nothing, and the waiter (no recv armed, so no later ENOBUFS) used to wait for
 * ever, however long those sends then stalled. Now the sweep comes again while anyone waits. */
static void test_pool_dry_under_young_sends_is_reclaimed_later(void **state)
{
	(void)state;
	struct fixture *f = setup_with(16, 512, 8192, 100);
	f->peer = -1;
	int fds[17], peers[17];
	char data[512];
	memset(data, 'x', sizeof(data));
	for (int i = 0; i < 17; i++)
		fds[i] = new_conn(f, &peers[i]);
	for (int i = 0; i < 16; i++) /* each buffer goes straight out as its echo, never done */
		fake_recv(&f->loop, fds[i], data, sizeof(data), true);
	assert_int_equal(f->loop.pool.nfree, 0);
	assert_int_equal(fake_recv(&f->loop, fds[16], "y", 1, true), -1); /* -ENOBUFS: waits */
	uint64_t until = now_ms_real() + 1000;
	while (!f->fk->rd[fds[16]] && now_ms_real() < until) {
		usleep(5000);
		fake_run(&f->loop);
	}
	assert_non_null(f->fk->rd[fds[16]]); /* receiving again: a stalled send gave way */
	assert_true(f->loop.pool.nfree > 0);
	for (int i = 0; i < 17; i++)
		close(peers[i]);
	echo_server_fini(&f->srv);
	loop_fini(&f->loop);
	free(f);
}

static void test_pool_exhaustion_and_recovery(void **state)
{
	(void)state;
	struct fixture *f = setup_with(16, 512, 65536, 100);
	int fds[16], peers[16], nstuck = 0;
	uint8_t a[512], b[512];
	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	while (f->loop.pool.nfree > 0 && nstuck < 16) {
		int i = nstuck++;
		fds[i] = new_conn(f, &peers[i]);
		fake_recv(&f->loop, fds[i], a, 512, true); /* in flight, never completes yet */
		if (f->loop.pool.nfree > 0)
			fake_recv(&f->loop, fds[i], b, 512, true); /* queued behind it */
	}
	assert_int_equal(f->loop.pool.nfree, 0);
	assert_true(nstuck < 16); /* some held two buffers: migration has work to do */
	int peer;
	int fd = new_conn(f, &peer);
	assert_int_equal(fake_recv(&f->loop, fd, "x", 1, true), -1); /* -ENOBUFS */
	assert_int_equal(f->srv.stats.enobufs, 1);
	fake_run(&f->loop);
	assert_int_equal(f->loop.pool.nfree, 16 - (uint32_t)nstuck); /* one head each stays */
	assert_non_null(f->fk->rd[fd]); /* and the waiter is receiving again */
	assert_true(fake_recv(&f->loop, fd, "x", 1, true) >= 0);
	uint8_t out[1024];
	assert_int_equal(drain(f, fd, 1, out), 1);
	assert_int_equal(out[0], 'x');
	for (int i = 0; i < nstuck; i++) {
		size_t n = drain(f, fds[i], 1024, out);
		assert_true(n == 512 || n == 1024);
		assert_memory_equal(out, a, 512);
		if (n == 1024)
			assert_memory_equal(out + 512, b, 512);
		close(peers[i]);
	}
	assert_int_equal(f->srv.bufs_held, 0);
	close(peer);
	f->peer = -1;
	teardown((void **)&f);
}

static void test_max_conns_refuses_and_counts(void **state)
{
	(void)state;
	struct fixture *f = setup_with(16, 512, 4096, 2);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	assert_int_equal(echo_server_listen(&f->srv, lfd), 0);
	int sv[3][2];
	for (int i = 0; i < 3; i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
		fake_accept(&f->loop, lfd, sv[i][0]);
	}
	assert_int_equal(f->srv.stats.conns, 2);
	assert_int_equal(f->srv.stats.refused_limit, 1);
	assert_true(fd_is_open(sv[0][0]));
	assert_true(fd_is_open(sv[1][0]));
	assert_false(fd_is_open(sv[2][0])); /* accepted and closed at once */
	char x;
	assert_int_equal(recv(sv[2][1], &x, 1, 0), 0);
	assert_non_null(f->fk->rd[lfd]); /* still accepting */
	for (int i = 0; i < 3; i++)
		close(sv[i][1]);
	f->peer = -1;
	teardown((void **)&f);
}

static void test_stop_drains_queue_then_stops_loop(void **state)
{
	struct fixture *f = *state;
	uint8_t in[300];
	memset(in, 'q', sizeof(in));
	fake_recv(&f->loop, f->fd, in, 300, true);
	echo_server_stop(&f->srv);
	fake_run(&f->loop);
	assert_null(f->fk->rd[f->fd]); /* no more reading */
	assert_false(f->loop.stop);     /* but still flushing */
	/* Bytes an earlier send left in the socket that the peer has not taken yet: a RST now
	 * (a close with unread input) would destroy them. */
	assert_int_equal(write(f->fd, "zz", 2), 2);
	uint8_t out[300];
	assert_int_equal(drain(f, f->fd, 100, out), 300);
	assert_memory_equal(out, in, 300);
	/* Everything echoed, then the half-close; the server reads on and drops what the peer
	 * still sends, so nothing it has not taken can be reset away, until the peer has it all. */
	assert_non_null(f->fk->rd[f->fd]);
	assert_false(f->loop.stop);
	fake_recv(&f->loop, f->fd, in, 50, true);
	fake_run(&f->loop);
	assert_null(f->fk->wr[f->fd]); /* dropped, not echoed */
	assert_int_equal(f->srv.stats.discarded_bytes, 50);
	assert_int_equal(f->srv.stats.bytes_in, 300);
	usleep(30 * 1000);
	fake_run(&f->loop);
	assert_false(f->loop.stop); /* the peer has still not taken its bytes */
	char x[3];
	assert_int_equal(recv(f->peer, x, 3, 0), 2);
	assert_int_equal(recv(f->peer, x, 1, 0), 0); /* then EOF */
	usleep(30 * 1000);
	fake_run(&f->loop); /* the linger check sees it all taken: the recv is cancelled */
	fake_run(&f->loop); /* its final: closed */
	assert_true(f->loop.stop);
	assert_true(echo_server_done(&f->srv));
	assert_int_equal(f->srv.stats.aborted, 0);
}

/* A recv that completes after the stop's cancel was issued (io_uring: data that raced the
 * cancel) is echoed before the half-close, never dropped: every byte counted in is sent out. */
static void test_stop_echoes_bytes_that_race_the_cancel(void **state)
{
	struct fixture *f = *state;
	uint8_t in[200];
	memset(in, 'r', sizeof(in));
	struct op *rx = f->fk->rd[f->fd];
	echo_server_stop(&f->srv);
	/* The fake backend's cancel is deferred: bytes arrive first, then the final. */
	assert_true(rx->armed);
	f->fk->rd[f->fd] = rx;
	fake_recv(&f->loop, f->fd, in, 200, true);
	fake_run(&f->loop);
	uint8_t out[200];
	assert_int_equal(drain(f, f->fd, 100, out), 200);
	assert_memory_equal(out, in, 200);
	char x;
	assert_int_equal(recv(f->peer, &x, 1, 0), 0);
	assert_int_equal(f->srv.stats.bytes_in, f->srv.stats.bytes_out);
	assert_int_equal(f->srv.stats.aborted, 0);
}

/* Connections whose recv found the pool dry are woken first come, first served: with one
 * buffer back, the earliest waiter gets it (they were woken last-in first-out, so a long
 * shortage could starve the first). No loop iteration runs here, so the clock stands still
 * and the sends holding the pool are not yet stalled: the reclaim cannot free them. */
static void test_buffer_waiters_woken_in_order(void **state)
{
	(void)state;
	struct fixture *f = setup_with(16, 512, 65536, 100);
	int fds[16], peers[16];
	uint8_t a[512];
	memset(a, 'a', sizeof(a));
	for (int i = 0; i < 16; i++) {
		fds[i] = new_conn(f, &peers[i]);
		assert_true(fake_recv(&f->loop, fds[i], a, 512, true) >= 0); /* its echo in flight */
	}
	assert_int_equal(f->loop.pool.nfree, 0);
	int w[3], wpeer[3];
	for (int i = 0; i < 3; i++) {
		w[i] = new_conn(f, &wpeer[i]);
		assert_int_equal(fake_recv(&f->loop, w[i], "x", 1, true), -1); /* -ENOBUFS */
		assert_null(f->fk->rd[w[i]]);
	}
	fake_send(&f->loop, fds[0], 512, NULL); /* one buffer comes back */
	assert_non_null(f->fk->rd[w[0]]);
	assert_null(f->fk->rd[w[1]]);
	assert_null(f->fk->rd[w[2]]);
	for (int i = 0; i < 16; i++)
		close(peers[i]);
	for (int i = 0; i < 3; i++)
		close(wpeer[i]);
	f->peer = -1;
	teardown((void **)&f);
}

/* A listener's final completion after a stop closes it, whatever it carries: an accept error
 * (EMFILE) that won the race with the stop's cancel used to send it into back-off, so it was
 * never closed and the drain never ended (io_uring, SIGTERM while out of fds). */
static void test_stop_closes_listener_whose_final_is_an_error(void **state)
{
	(void)state;
	struct fixture *f = setup_with(16, 512, 4096, 10);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0 && lfd < FAKE_MAX_FDS);
	assert_int_equal(echo_server_listen(&f->srv, lfd), 0);
	f->fk->cancel_res[lfd] = -EMFILE;
	echo_server_stop(&f->srv);
	fake_run(&f->loop);
	assert_false(fd_is_open(lfd));
	assert_int_equal(f->srv.nlisteners_open, 0);
	assert_true(f->loop.stop);
	assert_true(echo_server_done(&f->srv));
	f->peer = -1;
	teardown((void **)&f);
}

/* The same for a connection: the recv's final after the stop's cancel is an error (a reset).
 * Nothing was received, nothing is lost: it closes and the stop finishes. */
static void test_stop_closes_conn_whose_final_is_an_error(void **state)
{
	struct fixture *f = *state;
	f->fk->cancel_res[f->fd] = -ECONNRESET;
	echo_server_stop(&f->srv);
	fake_run(&f->loop);
	assert_int_equal(f->srv.stats.conns, 0);
	assert_true(f->loop.stop);
	assert_true(echo_server_done(&f->srv));
}

/* A cancel the backend cannot issue now (io_uring with no SQE free) is issued again on the
 * next iterations: the stop used to wait forever for a final that was never asked for. */
static void test_refused_cancel_is_retried(void **state)
{
	struct fixture *f = *state;
	f->fk->cancel_busy[f->fd] = 3;
	echo_server_stop(&f->srv);
	for (int i = 0; i < 10 && f->fk->cancels[f->fd] < 4; i++)
		fake_run(&f->loop);
	fake_run(&f->loop);
	assert_int_equal(f->fk->cancels[f->fd], 4);
	/* Cancelled for real: echoed everything (nothing), half-closed, lingering for the FIN. */
	char x;
	assert_int_equal(recv(f->peer, &x, 1, MSG_DONTWAIT), 0);
	fake_recv_result(&f->loop, f->fd, 0);
	fake_run(&f->loop);
	assert_true(f->loop.stop);
	assert_int_equal(f->loop.cancels_pending, NULL);
}

/* A loop that goes away with a send in flight (its loop failed): the send is cancelled and its
 * final completion taken before the buffer it reads is freed (io_uring's kernel reads it until
 * then). fini used to free first, and the backend cancelled later. */
static void test_fini_waits_for_finals_before_freeing(void **state)
{
	struct fixture *f = *state;
	uint8_t in[200];
	memset(in, 'f', sizeof(in));
	fake_recv(&f->loop, f->fd, in, sizeof(in), true);
	fake_run(&f->loop);
	assert_non_null(f->fk->wr[f->fd]); /* the echo is in flight */
	int fd = f->fd;
	struct echo_limits lim = f->srv.lim;
	echo_server_fini(&f->srv);
	assert_int_equal(f->fk->cancels[fd], 2); /* recv and send */
	assert_null(f->fk->wr[fd]);
	assert_null(f->fk->rd[fd]);
	assert_int_equal(f->srv.stats.conns, 0);
	assert_int_equal(f->loop.pool.nfree, f->loop.pool.nbufs); /* every buffer back */
	assert_int_equal(echo_server_init(&f->srv, &f->loop, &lim), 0); /* for teardown */
}

/* A listener whose re-arm fails (epoll_ctl or an io_uring submit out of memory) used to stay
 * unarmed for good: echod accepted nobody again, after one log line. Now it backs off, as for
 * EMFILE, and arms again when the back-off timer fires. */
static void test_listener_rearm_failure_backs_off_and_retries(void **state)
{
	(void)state;
	struct fixture *f = setup_with(16, 512, 4096, 10);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0 && lfd < FAKE_MAX_FDS);
	assert_int_equal(echo_server_listen(&f->srv, lfd), 0);
	int sv[2][2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
	f->fk->submit_fail[lfd] = 2;
	fake_recv_result(&f->loop, lfd, sv[0][0]); /* an accept's final completion: re-arm */
	assert_int_equal(f->srv.stats.conns, 1);
	assert_null(f->fk->rd[lfd]); /* the re-arm was refused */
	assert_int_equal(f->srv.stats.accept_backoffs, 1);
	uint64_t until = now_ms_real() + 2000;
	while (!f->fk->rd[lfd] && now_ms_real() < until) {
		usleep(2000);
		fake_run(&f->loop);
	}
	assert_non_null(f->fk->rd[lfd]); /* armed again, on the second retry */
	assert_int_equal(f->fk->submit_fail[lfd], 0);
	assert_int_equal(f->srv.stats.accept_backoffs, 2);
	fake_accept(&f->loop, lfd, sv[1][0]);
	assert_int_equal(f->srv.stats.conns, 2);
	for (int i = 0; i < 2; i++)
		close(sv[i][1]);
	f->peer = -1;
	teardown((void **)&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one_byte_receives_and_sends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_answered_with_one_gathered_send, setup,
						teardown),
		cmocka_unit_test(test_reclaim_spares_runs_of_gathered_send),
		cmocka_unit_test(test_dry_pool_after_batch_sends_then_reclaims),
		cmocka_unit_test_setup_teardown(test_short_send_continues_with_remainder, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_eof_with_bytes_queued_echoes_then_half_closes,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_with_bytes_queued_releases_everything,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure_pauses_and_resumes, setup,
						teardown),
		cmocka_unit_test(test_pool_exhaustion_and_recovery),
		cmocka_unit_test(test_pool_dry_under_young_sends_is_reclaimed_later),
		cmocka_unit_test(test_max_conns_refuses_and_counts),
		cmocka_unit_test_setup_teardown(test_stop_drains_queue_then_stops_loop, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_stop_echoes_bytes_that_race_the_cancel, setup,
						teardown),
		cmocka_unit_test(test_buffer_waiters_woken_in_order),
		cmocka_unit_test(test_stop_closes_listener_whose_final_is_an_error),
		cmocka_unit_test(test_listener_rearm_failure_backs_off_and_retries),
		cmocka_unit_test_setup_teardown(test_stop_closes_conn_whose_final_is_an_error, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_refused_cancel_is_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fini_waits_for_finals_before_freeing, setup,
						teardown),
	};
	return cmocka_run_group_tests_name("echo_core", tests, NULL, NULL);
}
