/* hist.h - a log-linear latency histogram with HdrHistogram's layout and reporting conventions:
 * a bounded relative error, an integer rank, each percentile reported as the upper bound of its
 * bucket, and values beyond the range counted rather than folded into the top bucket.
 *
 * Layout. Values are unsigned integers in any unit (echoload records nanoseconds). Below
 * 2^(bits+1) every value has its own bucket; above, each power of two is split into 2^bits
 * equal buckets. A bucket's width is then at most 2^-bits of any value in it, so a reported
 * value (the bucket's upper bound) is never below the truth and at most 2^-bits above it.
 * HIST_BITS_3_DIGITS (10) is HdrHistogram's layout for 3 significant digits (its
 * sub-bucket count of 2^11: 2048 exact values, then 1024 buckets per power of two): at most
 * 0.098% high. Histograms with the same shape merge by adding counters, which is how
 * per-thread results are combined. Not thread-safe: one writer each.
 *
 * Cost. 2^(bits+1) counters for the exact values, then 2^bits per power of two up to
 * max_trackable, 8 bytes each: at 3 digits, echoload's 1 ns .. 60 s is 27,389 counters,
 * 214 KiB per histogram (2^7, the old 0.4% layout, was 30 KiB). echoload keeps two per worker
 * thread (its own and the copy the progress line reads) and one for the progress line's sum:
 * 642 KiB at --threads 1, 3.6 MiB at 8, 428 MiB at the limit of 1024, allocated. Record,
 * copy, merge, reset and the percentile walk touch only the buckets between the recorded min
 * and max, so what is resident, and what a worker publishing its copy 5 times a second
 * pays, is 8 KiB per power of two the latencies span (about 90 KiB for 10 us .. 10 ms, measured),
 * not the whole 60 s range: calloc's pages beyond them are never written.
 *
 * Percentiles. The value at percentile p is the rank-th smallest value recorded, with
 * rank = ceil(p/100 * count) (at least 1) computed in integers: p is read to 7 decimal places,
 * as parts per billion of the count, so p = 99.9 of 1,000 values is rank 999, never 1,000 by a
 * floating-point product a hair above 999. Reported: exactly min for rank 1 and max for rank
 * count (both are kept exactly); max for a rank among the overflowed values (below);
 * otherwise the upper bound of the rank's bucket, clamped to max (HdrHistogram's "highest
 * equivalent value"). What a percentile rests on is the number of values at or above its
 * rank, count - rank + 1: p99.9 of 1,000 values rests on 2.
 *
 * Overflow. A value above max_trackable is counted in count, sum, min, max and overflow, and
 * in no bucket. It still ranks (above every value in range, as it is larger), so the
 * percentiles below it are what they would be with an unbounded range; a percentile whose
 * rank falls among the overflowed values is only known to be > max_trackable: it is
 * reported as max, the upper bound of (max_trackable, max], hist_overflowed() says so, and
 * echoload prints it as "> max_trackable". */
#ifndef ECHOLOAD_HIST_H
#define ECHOLOAD_HIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_BITS_3_DIGITS 10

struct hist {
	unsigned bits;       /* sub-bucket bits: reported values at most 2^-bits high */
	size_t nbuckets;
	uint64_t max_trackable; /* larger values are counted in overflow, not in a bucket */
	uint64_t count, sum, min, max; /* min/max/sum exact, from the recorded values */
	uint64_t overflow;   /* values > max_trackable (included in count) */
	uint64_t *buckets;
};

/* 0, or -1 if out of memory or bits is outside 1..16. */
int hist_init(struct hist *h, uint64_t max_trackable, unsigned bits);
void hist_free(struct hist *h);
void hist_reset(struct hist *h);
void hist_record(struct hist *h, uint64_t value);
/* dst += src; both must come from hist_init with the same arguments. 0, or -1 if not. */
int hist_merge(struct hist *dst, const struct hist *src);
/* dst = src (same shape), for snapshots taken while src keeps changing in its own thread. */
int hist_copy(struct hist *dst, const struct hist *src);

/* p in percent, 0..100 (outside: clamped; NaN: 0). All 0 when the histogram is empty. */
uint64_t hist_rank(const struct hist *h, double p);     /* 1..count */
uint64_t hist_percentile(const struct hist *h, double p); /* the value at that rank */
uint64_t hist_rests_on(const struct hist *h, double p); /* count - rank + 1 */
bool hist_overflowed(const struct hist *h, double p);   /* the rank is above max_trackable */
/* Significant decimal digits every reported value holds: floor(bits * log10 2), 3 at
 * HIST_BITS_3_DIGITS. Printing more would claim precision the histogram does not have. */
unsigned hist_digits(const struct hist *h);
double hist_mean(const struct hist *h);

#endif
