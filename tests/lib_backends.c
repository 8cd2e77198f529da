/* lib_backends.c - see lib_backends.h. */
#include "lib_backends.h"

#include <stdio.h>
#include <stdlib.h>

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

int test_run_per_backend(const char *suite, const struct CMUnitTest *tests, size_t n)
{
	/* A glob over test names, for a build that runs only part of a suite (make test's TSan
	 * build runs the multi-threaded cases). */
	const char *filter = getenv("ECHOD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	int failed = 0;
	for (size_t i = 0; i < backend_count; i++) {
		test_backend = backend_table[i];
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

void test_start_echod(struct child *c, const char *const *extra)
{
	const char *args[40] = { "--listen", "127.0.0.1:0" };
	int n = 2;
	if (test_backend) {
		args[n++] = "--backend";
		args[n++] = test_backend->name;
	}
	for (int i = 0; extra && extra[i] && n < 39; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	int st = 0;
	if (echod_start(c, 0, &st, args) < 0) {
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
