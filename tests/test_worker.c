/* test_worker.c - one worker thread (engine/worker.c) on the fake backend, driven as the main
 * thread drives it (worker_ask, the published counters): its requests must reach it even when
 * its wake-up read cannot be armed again (epoll_ctl or an io_uring submit out of memory). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_fake_backend.h"
#include "worker.h"

static int wake_fd = -1;
static int wake_ok, wake_fail; /* submits of the wake read taken, then refused */

static void fail_wake_rearms(struct fake_state *st)
{
	st->submit_ok[wake_fd] = wake_ok;
	st->submit_fail[wake_fd] = wake_fail;
}

static uint64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct rig {
	struct echod_config cfg;
	struct shared sh;
	struct worker w;
};

static void rig_start(struct rig *r, int ok, int fail)
{
	memset(r, 0, sizeof(*r));
	config_defaults(&r->cfg);
	pthread_mutex_init(&r->sh.lock, NULL);
	pthread_cond_init(&r->sh.answered, NULL);
	r->sh.main_thread = pthread_self();
	wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(wake_fd >= 0 && wake_fd < FAKE_MAX_FDS);
	wake_ok = ok;
	wake_fail = fail;
	fake_on_init = fail_wake_rearms;
	r->w = (struct worker){ .index = 0, .cfg = &r->cfg, .be = &fake_backend, .sh = &r->sh,
				.lcfg = { .nbufs = 16, .bufsize = 512, .max_fds = 256 },
				.wake_fd = wake_fd };
	assert_int_equal(pthread_create(&r->w.thread, NULL, worker_main, &r->w), 0);
}

/* Ask for the counters; true when the worker published them within ms. */
static bool stats_answered(struct rig *r, int ms)
{
	pthread_mutex_lock(&r->sh.lock);
	uint64_t gen = r->w.snap_gen;
	pthread_mutex_unlock(&r->sh.lock);
	worker_ask(&r->w, REQ_STATS);
	uint64_t end = ms_now() + (uint64_t)ms;
	bool got = false;
	while (!got && ms_now() < end) {
		pthread_mutex_lock(&r->sh.lock);
		got = r->w.snap_gen != gen;
		pthread_mutex_unlock(&r->sh.lock);
		if (!got)
			usleep(1000);
	}
	return got;
}

/* Stop it and join it; false if it has not exited within ms (it is then left running). */
static bool stopped_within(struct rig *r, int ms)
{
	worker_ask(&r->w, REQ_STOP);
	uint64_t end = ms_now() + (uint64_t)ms;
	while (!worker_exited(&r->w) && ms_now() < end)
		usleep(1000);
	if (!worker_exited(&r->w))
		return false;
	assert_int_equal(pthread_join(r->w.thread, NULL), 0);
	assert_int_equal(r->w.status, 0);
	close(wake_fd);
	fake_on_init = NULL;
	pthread_mutex_destroy(&r->sh.lock);
	pthread_cond_destroy(&r->sh.answered);
	return true;
}

/* Three re-arms refused in a row: the worker tries again (10, 20, 40 ms later) and then hears
 * requests as before. It used to log wake_failed and hear nothing more, so a SIGTERM was
 * ended only by the watchdog's kill. */
static void test_wake_rearm_failures_are_retried(void **state)
{
	(void)state;
	static struct rig r; /* static: a failed test leaves its worker running */
	rig_start(&r, 2, 3); /* the first arm and one re-arm taken, three refused */
	assert_true(stats_answered(&r, 2000));
	assert_true(stats_answered(&r, 2000)); /* answered; the re-arm after it is refused */
	uint64_t t0 = ms_now();
	assert_true(stats_answered(&r, 2000)); /* by the retry timer, or the read armed again */
	assert_true(stats_answered(&r, 2000)); /* by the read, armed again */
	assert_true(ms_now() - t0 < 1000);
	assert_true(stopped_within(&r, 2000));
}

/* A wake-up read that can never be armed again: the retry still takes the requests, so a stop
 * is heard within the back-off's ceiling (1 s). */
static void test_stop_heard_when_wake_never_rearms(void **state)
{
	(void)state;
	static struct rig r; /* static: a failed test leaves its worker running */
	rig_start(&r, 1, 1 << 30);
	assert_true(stats_answered(&r, 2000)); /* the first arm's read; every re-arm is refused */
	usleep(300 * 1000);                     /* the back-off grows meanwhile */
	uint64_t t0 = ms_now();
	assert_true(stopped_within(&r, 3000));
	assert_true(ms_now() - t0 < 1500);
}

int main(void)
{
	/* What the worker tells the main thread with this signal, the tests read from its
	 * counters; its default action would end the process. */
	signal(WORKER_NOTIFY_SIG, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wake_rearm_failures_are_retried),
		cmocka_unit_test(test_stop_heard_when_wake_never_rearms),
	};
	return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
