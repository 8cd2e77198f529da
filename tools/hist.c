/* hist.c - see hist.h. Bucket index of v, with sub = 2^bits:
 *   v < 2*sub:  v itself (exact)
 *   otherwise:  shift*sub + (v >> shift), shift = floor(log2 v) - bits
 * so bucket i >= 2*sub covers [m << shift, (m+1) << shift) with m = i - shift*sub in [sub, 2*sub):
 * its width over its lower bound is at most 1/sub.
 *
 * Only buckets between bucket_of(min) and bucket_of(min(max, max_trackable)) can be non-zero,
 * so copy, merge, reset and the percentile walk stay within that span (see hist.h, Cost). */
#include "hist.h"

#include <stdlib.h>
#include <string.h>

#define PPB 1000000000ull /* 100% in parts per billion: the unit hist_rank computes in */

static size_t bucket_of(unsigned bits, uint64_t v)
{
	uint64_t sub = (uint64_t)1 << bits;
	if (v < 2 * sub)
		return (size_t)v;
	unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - bits;
	return (size_t)(shift * sub + (v >> shift));
}

/* The largest value bucket i holds: HdrHistogram's "highest equivalent value". */
static uint64_t bucket_high(unsigned bits, size_t i)
{
	uint64_t sub = (uint64_t)1 << bits;
	if (i < 2 * sub)
		return i;
	unsigned shift = (unsigned)(i / sub) - 1;
	return ((((uint64_t)i - shift * sub) + 1) << shift) - 1;
}

/* The span of buckets that may be non-zero; false when none can be. */
static bool hist_span(const struct hist *h, size_t *lo, size_t *hi)
{
	if (h->count == h->overflow)
		return false;
	*lo = bucket_of(h->bits, h->min);
	*hi = bucket_of(h->bits, h->max < h->max_trackable ? h->max : h->max_trackable);
	return true;
}

int hist_init(struct hist *h, uint64_t max_trackable, unsigned bits)
{
	memset(h, 0, sizeof(*h));
	if (bits < 1 || bits > 16 || max_trackable < 1)
		return -1;
	h->bits = bits;
	h->max_trackable = max_trackable;
	h->nbuckets = bucket_of(bits, max_trackable) + 1;
	/* calloc's zeroes, not a memset: pages the latencies never reach are never touched */
	h->buckets = calloc(h->nbuckets, sizeof(*h->buckets));
	if (!h->buckets)
		return -1;
	h->min = UINT64_MAX;
	return 0;
}

void hist_free(struct hist *h)
{
	free(h->buckets);
	h->buckets = NULL;
}

void hist_reset(struct hist *h)
{
	size_t lo, hi;
	if (hist_span(h, &lo, &hi))
		memset(h->buckets + lo, 0, (hi - lo + 1) * sizeof(*h->buckets));
	h->count = h->sum = h->max = h->overflow = 0;
	h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t value)
{
	if (value > h->max_trackable)
		h->overflow++;
	else
		h->buckets[bucket_of(h->bits, value)]++;
	h->count++;
	h->sum += value;
	if (value < h->min)
		h->min = value;
	if (value > h->max)
		h->max = value;
}

static int same_shape(const struct hist *a, const struct hist *b)
{
	return a->bits == b->bits && a->nbuckets == b->nbuckets &&
	       a->max_trackable == b->max_trackable;
}

int hist_merge(struct hist *dst, const struct hist *src)
{
	if (!same_shape(dst, src))
		return -1;
	size_t lo, hi;
	if (hist_span(src, &lo, &hi))
		for (size_t i = lo; i <= hi; i++)
			dst->buckets[i] += src->buckets[i];
	dst->count += src->count;
	dst->sum += src->sum;
	dst->overflow += src->overflow;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	return 0;
}

int hist_copy(struct hist *dst, const struct hist *src)
{
	if (!same_shape(dst, src))
		return -1;
	hist_reset(dst);
	size_t lo, hi;
	if (hist_span(src, &lo, &hi))
		memcpy(dst->buckets + lo, src->buckets + lo, (hi - lo + 1) * sizeof(*dst->buckets));
	dst->count = src->count;
	dst->sum = src->sum;
	dst->overflow = src->overflow;
	dst->min = src->min;
	dst->max = src->max;
	return 0;
}

uint64_t hist_rank(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	/* p to the nearest part per billion: exact for any p written with up to 7 decimals */
	uint64_t ppb = p >= 100 ? PPB : p > 0 ? (uint64_t)(p * (PPB / 100) + 0.5) : 0;
	if (ppb > PPB)
		ppb = PPB;
	/* ceil(ppb * count / PPB) without a 128-bit product: count = q*PPB + r splits it into
	 * q*ppb (exact, at most count) and ceil(r*ppb / PPB) (r*ppb < 10^18 fits) */
	uint64_t q = h->count / PPB, r = h->count % PPB;
	uint64_t rank = q * ppb + (r * ppb + PPB - 1) / PPB;
	return rank ? rank : 1;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t rank = hist_rank(h, p);
	if (rank == 0)
		return 0;
	if (rank == 1)
		return h->min;
	if (rank == h->count || rank > h->count - h->overflow)
		return h->max;
	size_t lo, hi;
	if (!hist_span(h, &lo, &hi))
		return h->max; /* unreachable: rank <= count - overflow means something is in range */
	uint64_t seen = 0;
	for (size_t i = lo; i <= hi; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t high = bucket_high(h->bits, i);
			return high < h->max ? high : h->max;
		}
	}
	return h->max;
}

uint64_t hist_rests_on(const struct hist *h, double p)
{
	uint64_t rank = hist_rank(h, p);
	return rank ? h->count - rank + 1 : 0;
}

bool hist_overflowed(const struct hist *h, double p)
{
	uint64_t rank = hist_rank(h, p);
	return rank && rank > h->count - h->overflow;
}

unsigned hist_digits(const struct hist *h)
{
	return h->bits * 30103u / 100000u; /* log10 2 = 0.30103 */
}

double hist_mean(const struct hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}
