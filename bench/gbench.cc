// gbench.cc - the project's only C++: implements gbench.h's C API over Google Benchmark and
// hosts echod-bench's main(), which registers every linked bench/bm_*.c and runs them.

#include "gbench.h"

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <vector>

// The C handles are thin wrappers, so C never sees a C++ type and needs no casts.
struct gbench_state {
	benchmark::State &bm;
};

struct gbench_def {
	benchmark::internal::Benchmark *bm;
	std::string name; // the family's name, which reported runs carry as function_name
	struct Check {
		gbench_check_fn *fn;
		void *arg;
	};
	std::vector<Check> checks;
};

namespace {

// A registered benchmark: Google Benchmark's "family" of runs, one per argument set.
using Family = benchmark::internal::Benchmark;

// Set by any reported error, so the exit status tells scripts (and the test suite) that a
// benchmark or the wrapper itself failed, not just the console output.
std::atomic<bool> g_failed{false};

// Owns the handles given to C. push_back on a deque never moves existing elements, so the
// pointers stay valid; the library's Benchmark objects they point to also live until exit.
std::deque<gbench_def> g_defs;

void report_failure(const char *where, const char *what) noexcept
{
	g_failed = true;
	std::fprintf(stderr, "gbench: %s: %s\n", where, what);
}

// Runs f so that no exception reaches the C caller: C frames have no unwind tables to run
// through, and the C code could not handle one anyway.
template <typename F>
void guarded(const char *where, F &&f) noexcept
{
	try {
		f();
	} catch (const std::exception &e) {
		report_failure(where, e.what());
	} catch (...) {
		report_failure(where, "unknown exception");
	}
}

// Applies a registration option; a NULL handle (failed registration, already reported) is
// ignored so that C registration code stays a flat list of calls.
template <typename F>
void configure(gbench_def *d, const char *where, F &&f) noexcept
{
	if (d != nullptr)
		guarded(where, [&] { f(*d->bm); });
}

// gbench.h's flags are our own bits, translated here rather than aliased, so that the C
// header does not depend on the library's numbering.
benchmark::Counter::Flags counter_flags(unsigned flags)
{
	int out = benchmark::Counter::kDefaults;
	if (flags & GBENCH_COUNTER_RATE)
		out |= benchmark::Counter::kIsRate;
	if (flags & GBENCH_COUNTER_PER_ITERATION)
		out |= benchmark::Counter::kAvgIterations;
	if (flags & GBENCH_COUNTER_INVERT)
		out |= benchmark::Counter::kInvert;
	return static_cast<benchmark::Counter::Flags>(out);
}

benchmark::TimeUnit time_unit(gbench_time_unit unit)
{
	switch (unit) {
	case GBENCH_US:
		return benchmark::kMicrosecond;
	case GBENCH_MS:
		return benchmark::kMillisecond;
	case GBENCH_S:
		return benchmark::kSecond;
	case GBENCH_NS:
		break;
	}
	return benchmark::kNanosecond;
}

// Runs gbench_check's functions on each result as it is reported. It wraps the display
// reporter the flags ask for (console, JSON, CSV), so output is unchanged; the file reporter
// (--benchmark_out) sees the same runs and needs no checking of its own. Wrapping the display
// side means a check sees what the reader sees: with --benchmark_report_aggregates_only, the
// mean and median rather than each repetition.
class CheckingReporter : public benchmark::BenchmarkReporter {
public:
	explicit CheckingReporter(benchmark::BenchmarkReporter *inner) : inner_(inner) {}

	bool ReportContext(const Context &context) override
	{
		inner_->SetOutputStream(&GetOutputStream());
		inner_->SetErrorStream(&GetErrorStream());
		return inner_->ReportContext(context);
	}

	void ReportRuns(const std::vector<Run> &runs) override
	{
		inner_->ReportRuns(runs);
		for (const Run &run : runs)
			check(run);
	}

	void Finalize() override { inner_->Finalize(); }

private:
	static void check(const Run &run)
	{
		if (run.error_occurred || run.iterations <= 0)
			return;
		const char *aggregate = "";
		if (run.run_type == Run::RT_Aggregate) {
			// stddev and cv are spreads, not per-iteration times: nothing to check.
			if (run.aggregate_name != "mean" && run.aggregate_name != "median")
				return;
			aggregate = run.aggregate_name.c_str();
		}
		for (const gbench_def &d : g_defs) {
			if (d.checks.empty() || d.name != run.run_name.function_name)
				continue;
			const std::string name = run.benchmark_name();
			const double iters = static_cast<double>(run.iterations);
			gbench_result r{name.c_str(), aggregate, run.iterations,
					run.real_accumulated_time * 1e9 / iters,
					run.cpu_accumulated_time * 1e9 / iters};
			for (const gbench_def::Check &c : d.checks) {
				char why[256] = "";
				if (!c.fn(&r, c.arg, why, sizeof why)) {
					std::string where = "check failed: " + name;
					report_failure(where.c_str(), *why ? why : "no reason given");
				}
			}
		}
	}

	std::unique_ptr<benchmark::BenchmarkReporter> inner_;
};

} // namespace

// ---- inside a running benchmark ---------------------------------------------------------------

bool gbench_keep_running(gbench_state *st)
{
	return st->bm.KeepRunning();
}

bool gbench_keep_running_batch(gbench_state *st, int64_t n)
{
	// The header's inline loop asserts n > 0, and that assert is live here (this file is
	// built without NDEBUG): an abort. An error report is kinder, and KeepRunning() after
	// it ends the loop the way the library expects.
	if (n <= 0) {
		gbench_skip_with_error(st, "gbench_keep_running_batch: batch size must be > 0");
		return st->bm.KeepRunning();
	}
	return st->bm.KeepRunningBatch(n);
}

void gbench_set_iteration_time(gbench_state *st, double seconds)
{
	// A negative time would silently lower the total and NaN would poison it.
	if (!(seconds >= 0)) {
		gbench_skip_with_error(st, "gbench_set_iteration_time: negative or NaN time");
		return;
	}
	st->bm.SetIterationTime(seconds);
}

int64_t gbench_range(const gbench_state *st, int idx)
{
	return st->bm.range(static_cast<std::size_t>(idx));
}

int64_t gbench_iterations(const gbench_state *st)
{
	return st->bm.iterations();
}

// The library aborts on Pause/Resume after SkipWithError; C error paths are simpler if these
// are harmless there.
void gbench_pause_timing(gbench_state *st)
{
	if (!st->bm.error_occurred())
		st->bm.PauseTiming();
}

void gbench_resume_timing(gbench_state *st)
{
	if (!st->bm.error_occurred())
		st->bm.ResumeTiming();
}

void gbench_set_items_processed(gbench_state *st, int64_t items)
{
	st->bm.SetItemsProcessed(items);
}

void gbench_set_bytes_processed(gbench_state *st, int64_t bytes)
{
	st->bm.SetBytesProcessed(bytes);
}

void gbench_counter(gbench_state *st, const char *name, double value, unsigned flags)
{
	guarded("gbench_counter", [&] {
		st->bm.counters[name] = benchmark::Counter(value, counter_flags(flags));
	});
}

void gbench_skip_with_error(gbench_state *st, const char *msg)
{
	g_failed = true;
	if (st->bm.error_occurred()) // the library allows one call per run; keep the first cause
		return;
	guarded("gbench_skip_with_error", [&] { st->bm.SkipWithError(msg ? msg : "error"); });
}

void gbench_set_label(gbench_state *st, const char *label)
{
	guarded("gbench_set_label", [&] { st->bm.SetLabel(label ? label : ""); });
}

// ---- registration -----------------------------------------------------------------------------

gbench_def *gbench_register(const char *name, gbench_fn *fn, void *arg)
{
	gbench_def *d = nullptr;
	guarded("gbench_register", [&] {
		auto run = [fn, arg](benchmark::State &bm) {
			gbench_state st{bm};
			fn(&st, arg);
		};
		g_defs.push_back(gbench_def{benchmark::RegisterBenchmark(name, run), name, {}});
		d = &g_defs.back();
	});
	return d;
}

void gbench_arg(gbench_def *d, int64_t a)
{
	configure(d, "gbench_arg", [&](Family &b) { b.Arg(a); });
}

void gbench_args(gbench_def *d, const int64_t *args, size_t n)
{
	configure(d, "gbench_args", [&](Family &b) {
		b.Args(std::vector<int64_t>(args, args + n));
	});
}

void gbench_range_multiplier(gbench_def *d, int multiplier)
{
	configure(d, "gbench_range_multiplier", [&](Family &b) { b.RangeMultiplier(multiplier); });
}

void gbench_arg_range(gbench_def *d, int64_t lo, int64_t hi)
{
	configure(d, "gbench_arg_range", [&](Family &b) { b.Range(lo, hi); });
}

void gbench_dense_range(gbench_def *d, int64_t lo, int64_t hi, int step)
{
	configure(d, "gbench_dense_range", [&](Family &b) { b.DenseRange(lo, hi, step); });
}

void gbench_arg_names(gbench_def *d, const char *const *names, size_t n)
{
	configure(d, "gbench_arg_names", [&](Family &b) {
		b.ArgNames(std::vector<std::string>(names, names + n));
	});
}

void gbench_use_real_time(gbench_def *d)
{
	configure(d, "gbench_use_real_time", [](Family &b) { b.UseRealTime(); });
}

void gbench_use_manual_time(gbench_def *d)
{
	configure(d, "gbench_use_manual_time", [](Family &b) { b.UseManualTime(); });
}

void gbench_measure_process_cpu_time(gbench_def *d)
{
	configure(d, "gbench_measure_process_cpu_time",
		  [](Family &b) { b.MeasureProcessCPUTime(); });
}

void gbench_check(gbench_def *d, gbench_check_fn *fn, void *arg)
{
	if (d != nullptr && fn != nullptr)
		guarded("gbench_check", [&] { d->checks.push_back(gbench_def::Check{fn, arg}); });
}

void gbench_min_time(gbench_def *d, double seconds)
{
	configure(d, "gbench_min_time", [&](Family &b) { b.MinTime(seconds); });
}

void gbench_unit(gbench_def *d, gbench_time_unit unit)
{
	configure(d, "gbench_unit", [&](Family &b) { b.Unit(time_unit(unit)); });
}

// ---- running ----------------------------------------------------------------------------------

int gbench_main(int argc, char **argv)
{
	int rc = 1;
	guarded("gbench_main", [&] {
		benchmark::Initialize(&argc, argv);
		if (benchmark::ReportUnrecognizedArguments(argc, argv))
			return;
		// Zero means the filter matched nothing (the library says so): for a smoke
		// run that is a failure, not a pass.
		CheckingReporter display(benchmark::CreateDefaultDisplayReporter());
		std::size_t ran = benchmark::RunSpecifiedBenchmarks(&display);
		benchmark::Shutdown();
		rc = (ran == 0 || g_failed) ? 1 : 0;
	});
	return rc;
}

// Weak, so that a hook whose bm_*.c is not linked in resolves to null instead of failing the
// link; the declarations without it are in gbench.h.
extern "C" {
void bm_selftest_register(void) __attribute__((weak));
void bm_core_register(void) __attribute__((weak));
void bm_wakeup_register(void) __attribute__((weak));
void bm_roundtrip_register(void) __attribute__((weak));
}

int main(int argc, char **argv)
{
	void (*const hooks[])(void) = {
		bm_selftest_register,
		bm_core_register,
		bm_wakeup_register,
		bm_roundtrip_register,
	};
	for (auto hook : hooks)
		if (hook != nullptr)
			hook();
	return gbench_main(argc, argv);
}
