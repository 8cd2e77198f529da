/* lib_fake_backend.c - see lib_fake_backend.h. Cancels complete through loop_defer(), as the
 * contract requires, so fake_run() (one loop iteration with no waiting) delivers them. */
#include "lib_fake_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void (*fake_on_init)(struct fake_state *st);

static int fake_init(struct loop *loop, const struct loop_config *cfg)
{
	(void)cfg;
	loop->be_state = calloc(1, sizeof(struct fake_state));
	if (!loop->be_state)
		return -ENOMEM;
	if (fake_on_init)
		fake_on_init(loop->be_state);
	return 0;
}

static void fake_fini(struct loop *loop)
{
	free(loop->be_state);
	loop->be_state = NULL;
}

struct fake_state *fake_of(struct loop *loop)
{
	return loop->be_state;
}

static int fake_submit(struct loop *loop, struct op *op)
{
	struct fake_state *st = fake_of(loop);
	if (op->fd < 0 || op->fd >= FAKE_MAX_FDS)
		return -EBADF;
	if (op->code == OP_RECVMSG || op->code == OP_SENDMSG)
		return -EOPNOTSUPP; /* datagrams are tested on the real backends (test_reactor) */
	if (st->submit_ok[op->fd] > 0) {
		st->submit_ok[op->fd]--;
	} else if (st->submit_fail[op->fd] > 0) {
		st->submit_fail[op->fd]--;
		return -ENOMEM;
	}
	st->submits[op->fd]++;
	st->reads |= op->code == OP_READ;
	if (op->code == OP_SEND)
		st->wr[op->fd] = op;
	else
		st->rd[op->fd] = op;
	return 0;
}

static int fake_cancel(struct loop *loop, struct op *op)
{
	struct fake_state *st = fake_of(loop);
	st->cancels[op->fd]++;
	if (st->cancel_busy[op->fd] > 0) {
		st->cancel_busy[op->fd]--;
		return -EBUSY; /* no SQE free, say */
	}
	if (st->rd[op->fd] == op)
		st->rd[op->fd] = NULL;
	else if (st->wr[op->fd] == op)
		st->wr[op->fd] = NULL;
	else
		return 0;
	loop_defer(loop, op, st->cancel_res[op->fd] ? st->cancel_res[op->fd] : -ECANCELED, 0);
	return 0;
}

/* OP_READs are done for real (see the header); other completions are the test's to make.
 * A wait that may block and finds nothing naps 1 ms rather than spin. The echo core's tests,
 * its fuzzer and its benchmark submit no OP_READ, and their waits skip the scan. */
static int fake_wait(struct loop *loop, int timeout_ms)
{
	struct fake_state *st = fake_of(loop);
	int done = 0;
	for (int fd = 0; st->reads && fd < FAKE_MAX_FDS; fd++) {
		struct op *op = st->rd[fd];
		if (!op || op->code != OP_READ)
			continue;
		ssize_t n = read(fd, op->buf.base, op->buf.len);
		if (n < 0 && errno == EAGAIN)
			continue;
		st->rd[fd] = NULL;
		loop_complete(loop, op, n < 0 ? -errno : (int)n, 0);
		done++;
	}
	if (!done && timeout_ms != 0)
		usleep(1000);
	return done;
}

static void fake_buf_release(struct loop *loop, uint32_t bid)
{
	fake_of(loop)->releases++;
	bufpool_put(&loop->pool, bid);
}

static void fake_forget_fd(struct loop *loop, int fd)
{
	if (fd >= 0 && fd < FAKE_MAX_FDS)
		fake_of(loop)->forgotten[fd]++;
}

const struct backend fake_backend = {
	.name = "fake",
	.summary = "in-memory, for tests",
	.init = fake_init,
	.fini = fake_fini,
	.submit = fake_submit,
	.cancel = fake_cancel,
	.wait = fake_wait,
	.buf_release = fake_buf_release,
	.forget_fd = fake_forget_fd,
};

int fake_recv(struct loop *loop, int fd, const void *data, uint32_t len, bool more)
{
	return fake_recv_flags(loop, fd, data, len, more ? OPF_MORE : 0);
}

int fake_recv_flags(struct loop *loop, int fd, const void *data, uint32_t len, unsigned flags)
{
	bool more = flags & OPF_MORE;
	struct fake_state *st = fake_of(loop);
	struct op *op = st->rd[fd];
	if (!op)
		return -2;
	int64_t bid = bufpool_get(&loop->pool);
	if (bid < 0) {
		st->rd[fd] = NULL;
		loop_complete(loop, op, -ENOBUFS, 0);
		return -1;
	}
	char *base = bufpool_addr(&loop->pool, (uint32_t)bid);
	memcpy(base, data, len);
	op->buf = (struct buf){ .base = base, .len = len, .bid = (uint32_t)bid };
	if (!more)
		st->rd[fd] = NULL;
	loop_complete(loop, op, (int)len, OPF_BUFFER | flags);
	return (int)bid;
}

void fake_recv_result(struct loop *loop, int fd, int res)
{
	struct fake_state *st = fake_of(loop);
	struct op *op = st->rd[fd];
	if (!op)
		return;
	st->rd[fd] = NULL;
	loop_complete(loop, op, res, 0);
}

uint32_t fake_send_len(const struct op *op)
{
	if (op->nsegs == 0)
		return op->buf.len;
	uint32_t n = 0, k = 0;
	for (const struct seg *s = op->segs; s && k < op->nsegs; s = s->next, k++)
		n += s->len;
	return n;
}

void fake_send(struct loop *loop, int fd, uint32_t n, void *out)
{
	struct fake_state *st = fake_of(loop);
	struct op *op = st->wr[fd];
	if (!op)
		return;
	uint32_t len = fake_send_len(op);
	if (n > len)
		n = len;
	if (out && op->nsegs == 0) {
		memcpy(out, op->buf.base, n);
	} else if (out) {
		char *to = out;
		uint32_t left = n, k = 0;
		for (const struct seg *s = op->segs; s && left && k < op->nsegs; s = s->next, k++) {
			uint32_t take = left < s->len ? left : s->len;
			memcpy(to, s->base + s->off, take);
			to += take;
			left -= take;
		}
	}
	st->wr[fd] = NULL;
	loop_complete(loop, op, (int)n, 0);
}

void fake_send_result(struct loop *loop, int fd, int res)
{
	struct fake_state *st = fake_of(loop);
	struct op *op = st->wr[fd];
	if (!op)
		return;
	st->wr[fd] = NULL;
	loop_complete(loop, op, res, 0);
}

void fake_accept(struct loop *loop, int lfd, int newfd)
{
	struct op *op = fake_of(loop)->rd[lfd];
	if (op)
		loop_complete(loop, op, newfd, OPF_MORE);
}

void fake_run(struct loop *loop)
{
	loop_run_once(loop, 0);
}
