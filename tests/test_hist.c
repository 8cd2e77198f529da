/* test_hist.c - tools/hist.c, echoload's latency histogram, on synthetic data whose order
 * statistics are known exactly: 3 significant digits (reported values never below the truth and
 * at most 0.1% above it), the integer rank (p99.9 of 1,000 values is the 999th), the bucket's
 * upper bound as the reported value, min and max exact, values beyond the range counted and
 * ranked at the top, merge and copy carrying every count, and how many values a percentile
 * rests on. Each case failed on the histogram before these conventions (midpoints, a
 * floating-point rank, overflow clamped into the top bucket). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../tools/hist.h"

#define RANGE 60000000000ull /* echoload's: 60 s in ns */

static void init(struct hist *h, uint64_t max_trackable)
{
	assert_int_equal(hist_init(h, max_trackable, HIST_BITS_3_DIGITS), 0);
}

/* The upper bound of v's bucket at 3 digits, from the layout hist.h describes (exact below
 * 2^(bits+1), then 2^bits buckets per power of two), not from hist.c's own arithmetic. */
static uint64_t upper_bound(uint64_t v)
{
	unsigned bits = HIST_BITS_3_DIGITS;
	if (v < (2ull << bits))
		return v;
	unsigned width_log2 = (unsigned)(63 - __builtin_clzll(v)) - bits;
	return v | ((1ull << width_log2) - 1);
}

/* got must be the value at a rank whose true value is want: never below it, at most 0.1%
 * above it (3 significant digits). */
static void near(const char *what, double p, uint64_t got, uint64_t want)
{
	if (got < want || (double)(got - want) > (double)want * 0.001)
		fail_msg("%s p%g: %llu, want %llu (+0.1%% at most)", what, p, (unsigned long long)got,
			 (unsigned long long)want);
}

static void test_uniform_million(void **state)
{
	(void)state;
	struct hist h;
	init(&h, RANGE);
	assert_int_equal(hist_digits(&h), 3);
	const uint64_t n = 1000000;
	for (uint64_t v = 1; v <= n; v++)
		hist_record(&h, v);
	/* The value at rank r is r itself: every p to the nearest ppm, against ppm's exact rank. */
	for (uint64_t ppm = 1; ppm < 1000000; ppm += 997) {
		double p = (double)ppm / 10000;
		assert_int_equal(hist_rank(&h, p), ppm);
		near("uniform", p, hist_percentile(&h, p), ppm);
	}
	static const struct { double p; uint64_t rank; } named[] = {
		{ 50, 500000 }, { 90, 900000 }, { 99, 990000 }, { 99.9, 999000 },
		{ 99.99, 999900 }, { 99.999, 999990 }, { 12.3456, 123456 },
	};
	for (size_t i = 0; i < sizeof(named) / sizeof(*named); i++) {
		assert_int_equal(hist_rank(&h, named[i].p), named[i].rank);
		near("uniform", named[i].p, hist_percentile(&h, named[i].p), named[i].rank);
	}
	hist_free(&h);
}

/* 9,000 values at 50 µs and 1,000 at 5..6 ms: the percentiles on either side of the gap must
 * land on the right mode. */
static uint64_t bimodal(uint64_t rank)
{
	return rank <= 9000 ? 49999 + rank : 5000000 + 1000 * (rank - 9001);
}

static void test_bimodal(void **state)
{
	(void)state;
	struct hist h;
	init(&h, RANGE);
	for (uint64_t r = 10000; r >= 1; r--) /* order does not matter; descending to show it */
		hist_record(&h, bimodal(r));
	static const struct { double p; uint64_t rank; } at[] = {
		{ 1, 100 }, { 50, 5000 }, { 89.99, 8999 }, { 90, 9000 }, { 90.01, 9001 },
		{ 95, 9500 }, { 99, 9900 }, { 99.9, 9990 }, { 99.99, 9999 },
	};
	for (size_t i = 0; i < sizeof(at) / sizeof(*at); i++) {
		assert_int_equal(hist_rank(&h, at[i].p), at[i].rank);
		near("bimodal", at[i].p, hist_percentile(&h, at[i].p), bimodal(at[i].rank));
	}
	hist_free(&h);
}

static void test_p999_of_1000_is_the_999th(void **state)
{
	(void)state;
	struct hist h;
	init(&h, RANGE);
	for (uint64_t v = 1; v <= 1000; v++) /* below 2048: every value its own bucket */
		hist_record(&h, v);
	assert_int_equal(hist_rank(&h, 99.9), 999);
	assert_int_equal(hist_percentile(&h, 99.9), 999);
	assert_int_equal(hist_percentile(&h, 99), 990);
	hist_reset(&h);
	for (uint64_t v = 1; v <= 1000; v++) /* the same ranks, 1,000 ns apart in wide buckets */
		hist_record(&h, v * 1000);
	near("1,000 x 1000", 99.9, hist_percentile(&h, 99.9), 999000);
	assert_true(hist_percentile(&h, 99.9) < h.max);
	hist_free(&h);
}

static void test_min_and_max_exact(void **state)
{
	(void)state;
	struct hist h;
	init(&h, RANGE);
	assert_int_equal(hist_percentile(&h, 0), 0); /* empty: all zero */
	assert_int_equal(hist_percentile(&h, 100), 0);
	assert_int_equal(hist_rank(&h, 50), 0);
	/* min and max inside wide buckets (512 ns at 1 ms), away from either edge */
	for (uint64_t i = 0; i < 1000; i++)
		hist_record(&h, 1000001 + 333 * i);
	const uint64_t min = 1000001, max = 1000001 + 333 * 999;
	assert_int_equal(h.min, min);
	assert_int_equal(h.max, max);
	assert_int_equal(hist_percentile(&h, 0), min);
	assert_int_equal(hist_percentile(&h, -1), min);
	assert_int_equal(hist_percentile(&h, 100), max);
	assert_int_equal(hist_percentile(&h, 1000), max);
	/* every p whose rank is 1 or count is min or max, not a bucket's bound */
	assert_int_equal(hist_percentile(&h, 0.05), min);
	assert_int_equal(hist_percentile(&h, 0.1), min);
	assert_int_equal(hist_percentile(&h, 99.95), max);
	assert_int_equal(hist_percentile(&h, 99.91), max);
	hist_free(&h);
}

static void test_reports_upper_bound(void **state)
{
	(void)state;
	struct hist h;
	init(&h, 1ull << 42);
	/* 10000 is the low edge of [10000, 10007]: the median is the bucket's top, not its middle */
	hist_record(&h, 10000);
	hist_record(&h, 10000);
	hist_record(&h, 20000);
	hist_record(&h, 20000);
	assert_int_equal(upper_bound(10000), 10007);
	assert_int_equal(hist_percentile(&h, 50), 10007);
	/* ... clamped to max when max is in that bucket */
	hist_reset(&h);
	hist_record(&h, 10000);
	hist_record(&h, 10000);
	hist_record(&h, 10005);
	assert_int_equal(hist_percentile(&h, 50), 10005);
	/* at every magnitude: v three times and one far larger value; rank 2 is v's bucket's top */
	for (uint64_t v = 3; v < (1ull << 40); v += v / 3) {
		hist_reset(&h);
		for (int k = 0; k < 3; k++)
			hist_record(&h, v);
		hist_record(&h, 1ull << 41);
		if (hist_percentile(&h, 50) != upper_bound(v))
			fail_msg("p50 of %llu: %llu, want %llu", (unsigned long long)v,
				 (unsigned long long)hist_percentile(&h, 50),
				 (unsigned long long)upper_bound(v));
		near("upper bound", 50, hist_percentile(&h, 50), v);
	}
	hist_free(&h);
}

static void test_overflow_counted(void **state)
{
	(void)state;
	struct hist h;
	init(&h, 1000000);
	for (uint64_t v = 1; v <= 990; v++)
		hist_record(&h, v);
	for (uint64_t v = 0; v < 10; v++)
		hist_record(&h, 2000000 + v); /* beyond max_trackable */
	hist_record(&h, 1000000); /* max_trackable itself is in range */
	assert_int_equal(h.count, 1001);
	assert_int_equal(h.overflow, 10);
	assert_int_equal(h.max, 2000009);
	/* ranked at the top: the percentiles below them are the in-range ranks */
	assert_int_equal(hist_percentile(&h, 50), 501);
	assert_false(hist_overflowed(&h, 50));
	assert_int_equal(hist_rank(&h, 99), 991);
	assert_false(hist_overflowed(&h, 99));
	near("overflow", 99, hist_percentile(&h, 99), 1000000);
	/* a rank among them: only known to be above the range; reported as max, and flagged */
	assert_int_equal(hist_rank(&h, 99.9), 1000);
	assert_true(hist_overflowed(&h, 99.9));
	assert_int_equal(hist_percentile(&h, 99.9), h.max);
	assert_int_equal(hist_percentile(&h, 100), h.max);
	assert_int_equal(hist_percentile(&h, 0), 1);
	hist_reset(&h);
	assert_int_equal(h.overflow, 0);
	hist_record(&h, 5000000); /* nothing but overflow */
	assert_int_equal(h.overflow, 1);
	assert_true(hist_overflowed(&h, 50));
	assert_int_equal(hist_percentile(&h, 50), 5000000);
	hist_free(&h);
}

static void same_counts(const struct hist *a, const struct hist *b)
{
	assert_int_equal(a->count, b->count);
	assert_int_equal(a->sum, b->sum);
	assert_int_equal(a->min, b->min);
	assert_int_equal(a->max, b->max);
	assert_int_equal(a->overflow, b->overflow);
	assert_int_equal(a->nbuckets, b->nbuckets);
	assert_memory_equal(a->buckets, b->buckets, a->nbuckets * sizeof(*a->buckets));
}

static void test_merge_and_copy_add_every_count(void **state)
{
	(void)state;
	const uint64_t range = 100000000; /* 100 ms */
	struct hist a, b, all, copy;
	init(&a, range);
	init(&b, range);
	init(&all, range);
	init(&copy, range);
	/* two threads' latencies, 1 µs .. 1 s: the top 1% beyond the range */
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64: fixed, spread values */
		uint64_t v = i % 100 == 99 ? range + 1 + x % range : 1000 + x % (range / 10);
		hist_record(i % 3 ? &a : &b, v);
		hist_record(&all, v);
	}
	assert_true(a.overflow > 0 && b.overflow > 0);
	assert_int_equal(hist_merge(&a, &b), 0);
	same_counts(&a, &all);
	static const double ps[] = { 0, 1, 50, 90, 98.9, 99, 99.9, 100 };
	for (size_t i = 0; i < sizeof(ps) / sizeof(*ps); i++)
		assert_int_equal(hist_percentile(&a, ps[i]), hist_percentile(&all, ps[i]));
	/* a copy over a histogram holding other values must hold exactly the source's */
	for (uint64_t v = 90000000; v < 90100000; v += 7)
		hist_record(&copy, v);
	hist_record(&copy, 3);
	assert_int_equal(hist_copy(&copy, &all), 0);
	same_counts(&copy, &all);
	/* reset clears every bucket it had filled */
	hist_reset(&copy);
	struct hist empty;
	init(&empty, range);
	same_counts(&copy, &empty);
	/* different shapes do not mix */
	struct hist other;
	assert_int_equal(hist_init(&other, range, HIST_BITS_3_DIGITS - 1), 0);
	assert_int_equal(hist_merge(&a, &other), -1);
	assert_int_equal(hist_copy(&other, &a), -1);
	hist_free(&other);
	hist_free(&empty);
	hist_free(&copy);
	hist_free(&all);
	hist_free(&b);
	hist_free(&a);
}

static void test_rests_on(void **state)
{
	(void)state;
	struct hist h;
	init(&h, RANGE);
	assert_int_equal(hist_rests_on(&h, 99), 0); /* empty */
	hist_record(&h, 42);
	assert_int_equal(hist_rests_on(&h, 99.9), 1);
	assert_int_equal(hist_rests_on(&h, 0), 1);
	hist_reset(&h);
	for (uint64_t v = 1; v <= 1000; v++)
		hist_record(&h, v * 1000);
	assert_int_equal(hist_rests_on(&h, 0), 1000);
	assert_int_equal(hist_rests_on(&h, 50), 501);
	assert_int_equal(hist_rests_on(&h, 90), 101);
	assert_int_equal(hist_rests_on(&h, 99), 11);
	assert_int_equal(hist_rests_on(&h, 99.9), 2);
	assert_int_equal(hist_rests_on(&h, 100), 1);
	hist_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uniform_million),
		cmocka_unit_test(test_bimodal),
		cmocka_unit_test(test_p999_of_1000_is_the_999th),
		cmocka_unit_test(test_min_and_max_exact),
		cmocka_unit_test(test_reports_upper_bound),
		cmocka_unit_test(test_overflow_counted),
		cmocka_unit_test(test_merge_and_copy_add_every_count),
		cmocka_unit_test(test_rests_on),
	};
	return cmocka_run_group_tests_name("hist", tests, NULL, NULL);
}
