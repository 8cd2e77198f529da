/* gbench - a small C API over Google Benchmark, so echod's benchmarks are written in C.
 *
 * A benchmark is a function that sets up, runs the timed loop, and cleans up:
 *
 *     static void bm_thing(struct gbench_state *st, void *arg)
 *     {
 *         size_t n = (size_t)gbench_range(st, 0);
 *         ...setup, not timed...
 *         while (gbench_keep_running(st)) {
 *             ...the work being measured...
 *         }
 *         gbench_set_bytes_processed(st, gbench_iterations(st) * (int64_t)n);
 *         ...cleanup, not timed...
 *     }
 *
 *     void bm_thing_register(void)
 *     {
 *         struct gbench_def *d = gbench_register("thing/variant", bm_thing, NULL);
 *         gbench_arg(d, 64);
 *         gbench_arg(d, 4096);
 *     }
 *
 * C has no static initialisers, so registration is explicit: each bench/bm_*.c defines one of
 * the hooks declared at the end of this file, and main() (in gbench.cc) calls the hooks that
 * are linked in, then gbench_main().
 *
 * No function here lets a C++ exception escape. A failure inside the wrapper (out of memory)
 * is printed to stderr and makes gbench_main() return 1.
 */
#ifndef ECHOD_GBENCH_H
#define ECHOD_GBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- inside a running benchmark ------------------------------------------------------------ */

/* The state of one run of a benchmark; valid only during the call that received it. */
struct gbench_state;

/* The timed loop's condition. The first call starts the timer; the benchmark must not return
 * before this has returned false (Google Benchmark aborts if it does, unless an error was
 * reported with gbench_skip_with_error). */
bool gbench_keep_running(struct gbench_state *st);

/* The same for a loop whose body does n iterations' work (n > 0), for bodies so short that one
 * call per iteration would be a visible part of what is measured (a call into the C++ side is
 * a few ns). The last pass may overshoot what the library asked for by up to n - 1; those
 * iterations are counted, so gbench_iterations() is always a multiple of n here. n <= 0 is
 * reported as an error and ends the loop. Do not mix with gbench_keep_running in one loop. */
bool gbench_keep_running_batch(struct gbench_state *st, int64_t n);

/* Argument idx of this run (see gbench_arg / gbench_args). idx must be in range. */
int64_t gbench_range(const struct gbench_state *st, int idx);

/* Iterations completed so far; after the loop, the total. */
int64_t gbench_iterations(const struct gbench_state *st);

/* Exclude per-iteration setup from the timing. They are costly (a clock read each), so prefer
 * setup outside the loop. Pair them within one iteration: the loop must end with the timer
 * running. After gbench_skip_with_error they do nothing, so error paths need not care. */
void gbench_pause_timing(struct gbench_state *st);
void gbench_resume_timing(struct gbench_state *st);

/* With gbench_use_manual_time: this iteration's time in seconds, as the benchmark measured it
 * (say, from a timestamp taken in another thread). Call it once per iteration; the reported
 * time is the sum over the iterations divided by their number, and Google Benchmark sizes the
 * run by it. Without manual time the value is ignored. A negative or NaN value is reported as
 * an error. */
void gbench_set_iteration_time(struct gbench_state *st, double seconds);

/* Keep a computation the benchmark does not otherwise use: the compiler must assume the
 * (empty) asm reads *p and any memory, so whatever was stored there is computed and stored
 * before it, and nothing after it may reuse values loaded before it. Pass the address of the
 * result: `gbench_do_not_optimize(&sum);`. Costs no instruction beyond that store. GNU C
 * (gcc, clang), which is what the project builds with; __asm__ is accepted under -std=c11. */
static inline void gbench_do_not_optimize(const void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

/* Only the memory barrier: every store before it is done, every load after it is redone. */
static inline void gbench_clobber_memory(void)
{
	__asm__ volatile("" : : : "memory");
}

/* Totals for the whole run, reported per second (items_per_second, bytes_per_second). */
void gbench_set_items_processed(struct gbench_state *st, int64_t items);
void gbench_set_bytes_processed(struct gbench_state *st, int64_t bytes);

/* How gbench_counter's value is reported. */
enum gbench_counter_flag {
	GBENCH_COUNTER_PLAIN = 0,               /* the value as given */
	GBENCH_COUNTER_RATE = 1u << 0,          /* divided by the run's duration: per second */
	GBENCH_COUNTER_PER_ITERATION = 1u << 1, /* divided by the iteration count */
	GBENCH_COUNTER_INVERT = 1u << 2,        /* inverted last: RATE|INVERT = seconds each */
};

/* A user counter, reported as a column (console) or a field (JSON). Setting the same name
 * again replaces the value, so pass the run's total after the loop. flags: gbench_counter_flag
 * values or-ed together. */
void gbench_counter(struct gbench_state *st, const char *name, double value, unsigned flags);

/* Mark this run failed with a message (copied). The loop ends at the next
 * gbench_keep_running; the benchmark may also just return. Only the first message is kept. */
void gbench_skip_with_error(struct gbench_state *st, const char *msg);

/* Free text shown after the results (copied). */
void gbench_set_label(struct gbench_state *st, const char *label);

/* ---- registration -------------------------------------------------------------------------- */

typedef void gbench_fn(struct gbench_state *st, void *arg);

/* A registered benchmark, to attach arguments and options to. NULL after a failed registration;
 * every function below accepts NULL and does nothing, so registration code needs no checks. */
struct gbench_def;

/* Register fn under name (copied); arg is passed to every run. Without arguments it runs once
 * per measurement as "name"; each argument set added below adds a run "name/a/b...". */
struct gbench_def *gbench_register(const char *name, gbench_fn *fn, void *arg);

/* One run with a single argument. */
void gbench_arg(struct gbench_def *d, int64_t a);

/* One run with n arguments, gbench_range(st, 0..n-1). For a cartesian product, call this in
 * nested loops. */
void gbench_args(struct gbench_def *d, const int64_t *args, size_t n);

/* Runs for lo, then powers of the multiplier (default 8) strictly between, then hi.
 * Set the multiplier first. */
void gbench_range_multiplier(struct gbench_def *d, int multiplier);
void gbench_arg_range(struct gbench_def *d, int64_t lo, int64_t hi);

/* Runs for lo, lo+step, ... up to hi inclusive. */
void gbench_dense_range(struct gbench_def *d, int64_t lo, int64_t hi, int step);

/* Names shown in the run name, "name/bytes:64" instead of "name/64"; one per argument. */
void gbench_arg_names(struct gbench_def *d, const char *const *names, size_t n);

/* Measure wall-clock time instead of this thread's CPU time. Needed whenever the work happens
 * in the kernel or another thread while this one blocks, or blocking would look free. */
void gbench_use_real_time(struct gbench_def *d);

/* The reported time is what the benchmark gives gbench_set_iteration_time, not a clock the
 * library reads; Google Benchmark appends "/manual_time" to the run's name. For latencies that
 * begin or end in another thread, or where per-iteration set-up must stay out of the time
 * without the clock reads of gbench_pause_timing. */
void gbench_use_manual_time(struct gbench_def *d);

/* The CPU column (and, unless real or manual time is used, the run's length) counts the CPU
 * time of every thread of the process, not just the benchmark's own; "/process_time" is
 * appended to the name. For work handed to other threads. */
void gbench_measure_process_cpu_time(struct gbench_def *d);

/* A reported result, as gbench_check sees it. */
struct gbench_result {
	const char *name;      /* the run's name as reported: "family/args/...", "..._median" */
	const char *aggregate; /* "" for one repetition; "mean" or "median" over repetitions */
	int64_t iterations;    /* of the run; for "mean" and "median", the repetitions */
	double real_ns; /* per iteration, in ns: wall clock, or the manual time when used */
	double cpu_ns;  /* per iteration, in ns: this thread's CPU, or the process's */
};

/* Returns true if r is right; if not, writes why (NUL-terminated, at most len bytes). */
typedef bool gbench_check_fn(const struct gbench_result *r, void *arg, char *why, size_t len);

/* Check each result of this benchmark as it is reported (each repetition shown, and the mean
 * and median when there are several; runs that failed are not checked). A false return is
 * printed to stderr and makes gbench_main() return 1. For benchmarks that test the framework,
 * which can only be judged on what was reported, not from inside the timed loop. */
void gbench_check(struct gbench_def *d, gbench_check_fn *fn, void *arg);

/* Minimum measuring time in seconds (> 0). Overrides --benchmark_min_time, so use it only
 * where a benchmark needs a floor, not to make it fast. */
void gbench_min_time(struct gbench_def *d, double seconds);

enum gbench_time_unit { GBENCH_NS, GBENCH_US, GBENCH_MS, GBENCH_S };

/* Unit of the reported times (default nanoseconds). */
void gbench_unit(struct gbench_def *d, enum gbench_time_unit unit);

/* ---- running ------------------------------------------------------------------------------- */

/* Parse Google Benchmark's flags from argv (--benchmark_filter=, --benchmark_format=json,
 * --benchmark_out=, --benchmark_min_time=, --benchmark_list_tests, ...), run the registered
 * benchmarks that match, report. Returns 0, or 1 on an unknown argument, a filter matching
 * nothing, a benchmark that reported an error, or a failure inside the wrapper. */
int gbench_main(int argc, char **argv);

/* ---- registration hooks --------------------------------------------------------------------- */

/* Each bench/bm_NAME.c defines bm_NAME_register() to register its benchmarks. main() calls
 * those linked in; a hook whose file does not exist (yet) is simply skipped. */
void bm_selftest_register(void);  /* wrapper smoke test over a socketpair; no engine */
void bm_core_register(void);      /* the echo core against a fake backend */
void bm_wakeup_register(void);    /* dispatch cost vs idle fds; a sleeping loop's wake-up */
void bm_roundtrip_register(void); /* a round trip through the reactor and a backend */

#ifdef __cplusplus
}
#endif

#endif /* ECHOD_GBENCH_H */
