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

/* A cmocka teardown: kill and reap the children a failed test left running. */
int test_kill_strays(void **state);

#endif
