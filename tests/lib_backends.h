/* lib_backends.h - what the suites that run the real echod once per backend share: the group
 * runner over the engine's backend table (a backend added to backends.c is tested with no new
 * test code), starting echod on the current backend, and the teardown that kills what a failed
 * assertion left running. */
#ifndef ECHOD_TEST_LIB_BACKENDS_H
#define ECHOD_TEST_LIB_BACKENDS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>

#include <cmocka.h>

#include "lib_proc.h"
#include "reactor.h"

/* The backend the current round runs on; NULL outside a per-backend round (echod's auto). */
extern const struct backend *test_backend;
const char *test_backend_name(void);

/* Run `tests` once per backend that initialises here, as "<suite>/<backend>"; a backend that
 * cannot is reported in one line and skipped. Returns the number of failed tests. */
int test_run_per_backend(const char *suite, const struct CMUnitTest *tests, size_t n);

/* echod on 127.0.0.1, a free port, the current backend, plus extra args; fails the test (with
 * echod's log) if it does not start. */
void test_start_echod(struct child *c, const char *const *extra);
/* The same, but a failure to start is the caller's to judge: 0, or -1 with echod's exit status
 * in *status and its log still readable (proc_log), the child to be cleaned up. */
int test_try_start_echod(struct child *c, const char *const *extra, int *status);
/* echoload's verified rate and p99 against port: `conns` connections of 128-byte ping-pong for
 * `seconds` after 0.1 s of warm-up. msgs_per_s is 0 (and echoload's error printed) when it
 * fails. */
struct test_rate {
	double msgs_per_s, p99_us;
};
struct test_rate test_echo_rate(int port, int conns, double seconds);
/* A number after `key` in text (JSON "key": N or logfmt key=N); -1 if absent or null. */
double test_field(const char *text, const char *key);
/* A count on the echod child's `event=stopped` line ("udp_echoed="); -1 if absent. */
double test_stop_count(const struct child *c, const char *key);

/* A cmocka teardown: kill and reap the children a failed test left running. */
int test_kill_strays(void **state);

#endif
