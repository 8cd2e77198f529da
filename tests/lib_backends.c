/* lib_backends.c - see lib_backends.h. */
#include "lib_backends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct backend *test_backend;

const char *test_backend_name(void)
{
	return test_backend ? test_backend->name : "auto";
}

static bool runs_here(const struct backend *be)
{
	struct loop loop;
	struct loop_config cfg = { .nbufs = 16, .bufsize = 4096, .max_fds = 1024 };
	if (loop_init(&loop, be, &cfg) < 0)
		return false;
	loop_fini(&loop);
	return true;
}

/* Is `word` one of the space-separated words of `list`? */
static bool word_in(const char *word, const char *list)
{
	size_t len = strlen(word);
	for (const char *p = list; *p;) {
		p += strspn(p, " ");
		size_t n = strcspn(p, " ");
		if (n == len && strncmp(p, word, n) == 0)
			return true;
		p += n;
	}
	return false;
}

int test_run_per_backend(const char *suite, const struct CMUnitTest *tests, size_t n)
{
	/* A glob over test names, for a build that runs only part of a suite (make test's TSan
	 * build runs the multi-threaded cases). */
	const char *filter = getenv("ECHOD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	/* Space-separated backend names, for a build that runs a suite on some backends only
	 * (make test's TSan build: what threads share does not depend on the backend). */
	const char *only = getenv("ECHOD_TEST_BACKENDS");
	int failed = 0;
	for (size_t i = 0; i < backend_count; i++) {
		test_backend = backend_table[i];
		if (only && *only && !word_in(test_backend->name, only)) {
			printf("[ SKIPPED  ] %s/%s: not in ECHOD_TEST_BACKENDS (%s)\n", suite,
			       test_backend->name, only);
			continue;
		}
		if (!runs_here(test_backend)) {
			printf("[ SKIPPED  ] %s/%s: the backend cannot run on this machine\n", suite,
			       test_backend->name);
			continue;
		}
		char name[64];
		snprintf(name, sizeof(name), "%s/%s", suite, test_backend->name);
		failed += _cmocka_run_group_tests(name, tests, n, NULL, NULL);
	}
	test_backend = NULL;
	return failed;
}

int test_try_start_echod(struct child *c, const char *const *extra, int *status)
{
	const char *args[40] = { "--listen", "127.0.0.1:0" };
	int n = 2;
	if (test_backend) {
		args[n++] = "--backend";
		args[n++] = test_backend->name;
	}
	/* ECHOD_TEST_THREADS=N: every echod a suite starts here runs N workers (a case that
	 * gives its own --threads, later on the line, keeps it): the whole integration suite
	 * across threads, e.g. under ThreadSanitizer (make tsan-check). */
	const char *threads = getenv("ECHOD_TEST_THREADS");
	if (threads && *threads) {
		args[n++] = "--threads";
		args[n++] = threads;
	}
	char unix_listen[128];
	if (proc_unix_path) {
		snprintf(unix_listen, sizeof(unix_listen), "unix:%s", proc_unix_path);
		args[n++] = "--listen";
		args[n++] = unix_listen;
	}
	for (int i = 0; extra && extra[i] && n < 39; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	return echod_start(c, 0, status, args);
}

double test_field(const char *text, const char *key)
{
	const char *p = strstr(text, key);
	if (!p)
		return -1;
	p += strlen(key);
	while (*p == '"' || *p == ':' || *p == '=' || *p == ' ')
		p++;
	char *end;
	double v = strtod(p, &end);
	return end == p ? -1 : v;
}

double test_stop_count(const struct child *c, const char *key)
{
	char *log = proc_log(c);
	const char *line = strstr(log, "event=stopped");
	double v = line ? test_field(line, key) : -1;
	free(log);
	return v;
}

struct test_rate test_echo_rate(int port, int conns, double seconds)
{
	char portstr[16], nconns[16], dur[32];
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(nconns, sizeof(nconns), "%d", conns);
	snprintf(dur, sizeof(dur), "%g", seconds);
	const char *argv[] = { proc_bin("echoload"), "-p", portstr, "-c", nconns, "--duration", dur,
			       "--warmup", "0.1", "--json", "-q", NULL };
	struct child c;
	int rc = proc_run(argv, 20000, &c);
	char *out = proc_out(&c);
	struct test_rate r = { test_field(out, "\"msgs_per_s\""), test_field(out, "\"lat_p99_us\"") };
	if (rc != 0) {
		char *err = proc_log(&c);
		print_message("  [%s] echoload exit %d: %s", test_backend_name(), rc, err);
		free(err);
		r.msgs_per_s = 0;
	}
	free(out);
	proc_cleanup(&c);
	return r;
}

void test_start_echod(struct child *c, const char *const *extra)
{
	int st = 0;
	if (test_try_start_echod(c, extra, &st) < 0) {
		char *log = proc_log(c);
		print_error("echod --backend %s did not start (status %d):\n%s\n",
			    test_backend_name(), st, log);
		free(log);
		fail();
	}
}

int test_kill_strays(void **state)
{
	(void)state;
	int n = proc_kill_strays();
	if (n)
		printf("  [%s] killed %d child process(es) a failed test left running\n",
		       test_backend_name(), n);
	return 0;
}
