/* bm_core.c - the echo core's own cost per echoed message, with no syscalls: the fake backend
 * delivers a receive and completes the send the core issues. What is left is the state
 * machine, queueing and buffer bookkeeping that every backend pays on top of its kernel work. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo.h"
#include "gbench.h"
#include "lib_fake_backend.h"

void bm_core_register(void);

static void bm_core_echo(struct gbench_state *st, void *arg)
{
	(void)arg;
	uint32_t size = (uint32_t)gbench_range(st, 0);
	uint32_t depth = (uint32_t)gbench_range(st, 1);
	struct loop loop;
	struct echo_server srv;
	struct loop_config cfg = { .nbufs = 256, .bufsize = 65536, .max_fds = 256 };
	struct echo_limits lim = { .max_conns = 16, .conn_buffer = 1u << 20 };
	int sv[2];
	if (loop_init(&loop, &fake_backend, &cfg) < 0 || echo_server_init(&srv, &loop, &lim) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || echo_server_adopt(&srv, sv[0]) < 0) {
		gbench_skip_with_error(st, "set-up failed");
		return;
	}
	char *msg = calloc(1, size);
	struct fake_state *fk = fake_of(&loop);
	while (gbench_keep_running(st)) {
		/* `depth` messages arrive before the first send completes (pipelining). */
		for (uint32_t i = 0; i < depth; i++)
			fake_recv(&loop, sv[0], msg, size, true);
		while (fk->wr[sv[0]])
			fake_send(&loop, sv[0], fake_send_len(fk->wr[sv[0]]), NULL);
	}
	gbench_set_items_processed(st, gbench_iterations(st) * depth);
	gbench_set_bytes_processed(st, gbench_iterations(st) * depth * size);
	free(msg);
	echo_server_fini(&srv);
	loop_fini(&loop);
	close(sv[1]);
}

void bm_core_register(void)
{
	struct gbench_def *d = gbench_register("core/echo", bm_core_echo, NULL);
	const int64_t cases[][2] = { { 128, 1 }, { 128, 8 }, { 4096, 1 }, { 65536, 1 } };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		gbench_args(d, cases[i], 2);
	const char *names[] = { "size", "depth" };
	gbench_arg_names(d, names, 2);
}
