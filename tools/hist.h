/* hist.h - a log-linear latency histogram with bounded relative error (HdrHistogram's idea).
 *
 * Values are unsigned integers in any unit (echoload records nanoseconds). Below 2^bits every
 * value has its own bucket; above, each power of two is split into 2^bits equal buckets, so a
 * reported value is within 2^-(bits+1) of the truth (bits = 7: 0.4%) while the whole range
 * 1 ns .. max costs a few thousand counters. Histograms with the same shape merge by adding
 * counters, which is how per-thread results are combined. Not thread-safe: one writer each. */
#ifndef ECHOLOAD_HIST_H
#define ECHOLOAD_HIST_H

#include <stddef.h>
#include <stdint.h>

struct hist {
	unsigned bits;       /* sub-bucket bits: relative error <= 2^-(bits+1) */
	size_t nbuckets;
	uint64_t max_trackable; /* larger values are counted in the top bucket */
	uint64_t count, sum, min, max; /* min/max/sum exact, from the recorded values */
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

/* Value at percentile p (0..100): the midpoint of the bucket holding the ceil(p% * count)-th
 * smallest value, clamped to [min, max]. 0 when empty. p = 0 gives min, p = 100 gives max. */
uint64_t hist_percentile(const struct hist *h, double p);
double hist_mean(const struct hist *h);

#endif
