/* test_config.c - echod's command line: every flag, its range, and the exact one-line
 * messages for bad input; plus the CLI's exit codes and help/version on stdout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "lib_proc.h"

static enum config_action parse(struct echod_config *cfg, char *err, const char *const *args)
{
	char *argv[32] = { "echod" };
	int argc = 1;
	for (int i = 0; args[i]; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;
	err[0] = '\0';
	return config_parse(cfg, argc, argv, err, 256);
}

static void expect_error(const char *const *args, const char *message)
{
	struct echod_config cfg;
	char err[256];
	assert_int_equal(parse(&cfg, err, args), CONFIG_ERROR);
	assert_string_equal(err, message);
}

static void test_defaults(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[256];
	const char *args[] = { NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_RUN);
	assert_int_equal(cfg.nlisten, 1);
	assert_string_equal(cfg.listen[0], "127.0.0.1:65432");
	assert_string_equal(cfg.backend, "auto");
	assert_int_equal(cfg.threads, 1);
	assert_int_equal(cfg.max_conns, 10000);
	assert_int_equal(cfg.conn_buffer, 256 * 1024);
	assert_int_equal(cfg.buffers, 2048);
	assert_int_equal(cfg.buffer_size, 8192);
	assert_int_equal(cfg.idle_timeout_ms, 0);
	assert_int_equal(cfg.drain_timeout_ms, 5000);
	assert_int_equal(cfg.log_level, LOG_INFO);
}

static void test_every_flag(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[256];
	const char *args[] = { "--listen", "127.0.0.1:7", "-l", "[::1]:8", "--backend", "epoll",
			       "--threads", "4", "--max-conns", "77", "--conn-buffer", "1M",
			       "--buffers", "512", "--buffer-size", "16K", "--idle-timeout", "2.5",
			       "--drain-timeout", "0", "--log-level", "debug", NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_RUN);
	assert_int_equal(cfg.nlisten, 2);
	assert_string_equal(cfg.listen[0], "127.0.0.1:7");
	assert_string_equal(cfg.listen[1], "[::1]:8");
	assert_string_equal(cfg.backend, "epoll");
	assert_int_equal(cfg.threads, 4);
	assert_int_equal(cfg.max_conns, 77);
	assert_int_equal(cfg.conn_buffer, 1 << 20);
	assert_int_equal(cfg.buffers, 512);
	assert_int_equal(cfg.buffer_size, 16384);
	assert_int_equal(cfg.idle_timeout_ms, 2500);
	assert_int_equal(cfg.drain_timeout_ms, 0);
	assert_int_equal(cfg.log_level, LOG_DEBUG);
	const char *eq[] = { "--backend=epoll", "--max-conns=5", NULL };
	assert_int_equal(parse(&cfg, err, eq), CONFIG_RUN);
	assert_int_equal(cfg.max_conns, 5);
}

static void test_actions(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[256];
	const char *h[] = { "--help", NULL }, *v[] = { "-V", NULL }, *l[] = { "--list-backends", NULL };
	assert_int_equal(parse(&cfg, err, h), CONFIG_HELP);
	assert_int_equal(parse(&cfg, err, v), CONFIG_VERSION);
	assert_int_equal(parse(&cfg, err, l), CONFIG_LIST_BACKENDS);
}

static void test_bad_values(void **state)
{
	(void)state;
	expect_error((const char *[]){ "--max-conns", "0", NULL },
		     "invalid value for --max-conns: '0' (expected 1..1000000)");
	expect_error((const char *[]){ "--max-conns", "12x", NULL },
		     "invalid value for --max-conns: '12x' (expected 1..1000000)");
	expect_error((const char *[]){ "--max-conns", "-1", NULL },
		     "invalid value for --max-conns: '-1' (expected 1..1000000)");
	expect_error((const char *[]){ "--threads", "0", NULL },
		     "invalid value for --threads: '0' (expected 1..256)");
	expect_error((const char *[]){ "--buffers", "8", NULL },
		     "invalid value for --buffers: '8' (expected 16..32768)");
	expect_error((const char *[]){ "--buffer-size", "2G", NULL },
		     "invalid value for --buffer-size: '2G' (expected bytes 512..1048576)");
	expect_error((const char *[]){ "--conn-buffer", "100", NULL },
		     "invalid value for --conn-buffer: '100' (expected bytes 1024..67108864)");
	expect_error((const char *[]){ "--conn-buffer", "4K", "--buffer-size", "8K", NULL },
		     "--conn-buffer (4096) must be at least --buffer-size (8192)");
	expect_error((const char *[]){ "--idle-timeout", "-3", NULL },
		     "invalid value for --idle-timeout: '-3' (expected seconds 0..86400)");
	expect_error((const char *[]){ "--drain-timeout", "soon", NULL },
		     "invalid value for --drain-timeout: 'soon' (expected seconds 0..3600)");
	expect_error((const char *[]){ "--log-level", "loud", NULL },
		     "invalid value for --log-level: 'loud' (expected error, warn, info or debug)");
	expect_error((const char *[]){ "--listen", "65432", NULL },
		     "invalid value for --listen: '65432' (expected HOST:PORT, e.g. 127.0.0.1:65432 "
		     "or [::1]:65432, port 0..65535)");
	expect_error((const char *[]){ "--listen", "127.0.0.1:70000", NULL },
		     "invalid value for --listen: '127.0.0.1:70000' (expected HOST:PORT, e.g. "
		     "127.0.0.1:65432 or [::1]:65432, port 0..65535)");
	expect_error((const char *[]){ "--listen", "::1:80", NULL },
		     "invalid value for --listen: '::1:80' (expected HOST:PORT, e.g. "
		     "127.0.0.1:65432 or [::1]:65432, port 0..65535)");
	expect_error((const char *[]){ "--frobnicate", NULL }, "unknown option '--frobnicate'");
	expect_error((const char *[]){ "-z", NULL }, "unknown option '-z'");
	expect_error((const char *[]){ "--backend", NULL }, "option '--backend' needs a value");
	expect_error((const char *[]){ "stray", NULL }, "unexpected argument 'stray'");
}

static void test_unknown_backend_lists_known(void **state)
{
	(void)state;
	struct echod_config cfg;
	char err[256];
	const char *args[] = { "--backend", "kqueue", NULL };
	assert_int_equal(parse(&cfg, err, args), CONFIG_ERROR);
	assert_non_null(strstr(err, "unknown backend 'kqueue' (known: auto, "));
	assert_non_null(strstr(err, "epoll"));
}

static void test_split_hostport(void **state)
{
	(void)state;
	char host[64], port[8];
	assert_int_equal(config_split_hostport("[::1]:9", host, 64, port, 8), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "9");
	assert_int_equal(config_split_hostport("localhost:0", host, 64, port, 8), 0);
	assert_string_equal(host, "localhost");
	assert_int_equal(config_split_hostport(":80", host, 64, port, 8), -1);
	assert_int_equal(config_split_hostport("[::1]80", host, 64, port, 8), -1);
	assert_int_equal(config_split_hostport("h:", host, 64, port, 8), -1);
}

/* The binary itself: exit codes and where the text goes. */
static void test_cli_exit_codes(void **state)
{
	(void)state;
	struct child c;
	const char *bad[] = { proc_bin("echod"), "--max-conns", "0", NULL };
	assert_int_equal(proc_run(bad, 5000, &c), 64);
	char *log = proc_log(&c);
	assert_string_equal(log, "echod: invalid value for --max-conns: '0' (expected 1..1000000); "
				 "see 'echod --help'\n");
	free(log);
	proc_cleanup(&c);
	const char *help[] = { proc_bin("echod"), "--help", NULL };
	assert_int_equal(proc_run(help, 5000, &c), 0);
	assert_false(proc_log_has(&c, "Usage")); /* help is on stdout, not stderr */
	proc_cleanup(&c);
	const char *ver[] = { proc_bin("echod"), "--version", NULL };
	assert_int_equal(proc_run(ver, 5000, &c), 0);
	proc_cleanup(&c);
	const char *list[] = { proc_bin("echod"), "--list-backends", NULL };
	assert_int_equal(proc_run(list, 5000, &c), 0);
	proc_cleanup(&c);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_flag),
		cmocka_unit_test(test_actions),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_unknown_backend_lists_known),
		cmocka_unit_test(test_split_hostport),
		cmocka_unit_test(test_cli_exit_codes),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
