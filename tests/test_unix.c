/* test_unix.c - the socket FILE of a unix: listener, on the real echod: a stale one from a
 * dead server is replaced (and said so), a live one is refused (exit 71), something that is
 * not a socket is never touched, --unix-mode sets its permissions, and it is gone after a
 * clean exit but left alone if another file took its place. Plus the abstract namespace.
 * (The echo itself over a Unix listener runs on every backend in test_integration.)
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_backends.h"

static char path[64], spec[80];

static int setup(void **state)
{
	(void)state;
	snprintf(path, sizeof(path), "/tmp/echod-unix-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", path);
	unlink(path);
	return 0;
}

static int teardown(void **state)
{
	test_kill_strays(state);
	unlink(path);
	proc_unix_path = NULL;
	return 0;
}

static void echoes_there(void)
{
	proc_unix_path = path;
	assert_true(hello_echoed(0));
	proc_unix_path = NULL;
}

static void test_stale_socket_replaced(void **state)
{
	(void)state;
	/* What a killed server leaves: a bound socket file nobody listens on. */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
	close(fd);
	struct child c;
	const char *more[] = { "--listen", spec, NULL };
	test_start_echod(&c, more);
	assert_true(proc_log_has(&c, "event=unix_stale_removed"));
	echoes_there();
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	proc_cleanup(&c);
	struct stat st;
	assert_int_equal(lstat(path, &st), -1); /* removed at the clean exit */
	assert_int_equal(errno, ENOENT);
}

static void test_live_socket_refused(void **state)
{
	(void)state;
	struct child a, b;
	const char *more[] = { "--listen", spec, NULL };
	test_start_echod(&a, more);
	int st = -1;
	assert_int_equal(test_try_start_echod(&b, more, &st), -1);
	assert_int_equal(st, 71);
	char want[256];
	snprintf(want, sizeof(want), "echod: cannot listen on %s: Address already in use (a server "
		 "answers on that socket; stop it or pick another path)\n", spec);
	char *log = proc_log(&b);
	assert_string_equal(log, want);
	free(log);
	proc_cleanup(&b);
	echoes_there(); /* the first one is untouched */
	assert_int_equal(proc_stop(&a, SIGTERM, 10000), 0);
	proc_cleanup(&a);
}

static void test_not_a_socket_left_alone(void **state)
{
	(void)state;
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("precious\n", f);
	fclose(f);
	struct child c;
	const char *more[] = { "--listen", spec, NULL };
	int st = -1;
	assert_int_equal(test_try_start_echod(&c, more, &st), -1);
	assert_int_equal(st, 71);
	assert_true(proc_log_has(&c, "is not a socket"));
	proc_cleanup(&c);
	struct stat sb;
	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_size, 9);
}

static void test_mode_and_replaced_file_kept(void **state)
{
	(void)state;
	struct child c;
	const char *more[] = { "--listen", spec, "--unix-mode", "0600", NULL };
	test_start_echod(&c, more);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Someone replaces the file while echod runs: at exit echod removes only its own. */
	assert_int_equal(unlink(path), 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	proc_cleanup(&c);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_abstract_namespace(void **state)
{
	(void)state;
	char name[64], aspec[80];
	snprintf(name, sizeof(name), "echod-test-%d", (int)getpid());
	snprintf(aspec, sizeof(aspec), "unix:@%s", name);
	struct child c;
	const char *more[] = { "--listen", aspec, NULL };
	test_start_echod(&c, more);
	char want[96];
	snprintf(want, sizeof(want), "event=listening addr=unix:@%s", name);
	assert_true(proc_log_has(&c, want));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	memcpy(un.sun_path + 1, name, strlen(name));
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	assert_int_equal(connect_retry(fd, (struct sockaddr *)&un, len), 0);
	assert_int_equal(send_all(fd, "abstract", 8), 0);
	char back[8];
	assert_int_equal(recv_exact(fd, back, 8), 8);
	assert_memory_equal(back, "abstract", 8);
	close(fd);
	assert_int_equal(proc_stop(&c, SIGTERM, 10000), 0);
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stale_socket_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_live_socket_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_socket_left_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode_and_replaced_file_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abstract_namespace, setup, teardown),
	};
	return cmocka_run_group_tests_name("unix_socket_file", tests, NULL, NULL) ? 1 : 0;
}
