/* hist.c - see hist.h. Bucket index of v, with sub = 2^bits:
 *   v < 2*sub:  v itself (exact)
 *   otherwise:  shift*sub + (v >> shift), shift = floor(log2 v) - bits
 * so bucket i >= 2*sub covers [m << shift, (m+1) << shift) with m = i - shift*sub in [sub, 2*sub):
 * its width over its lower bound is at most 1/sub. */
#include "hist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t bucket_of(unsigned bits, uint64_t v)
{
	uint64_t sub = (uint64_t)1 << bits;
	if (v < 2 * sub)
		return (size_t)v;
	unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - bits;
	return (size_t)(shift * sub + (v >> shift));
}

static uint64_t bucket_low(unsigned bits, size_t i, uint64_t *width)
{
	uint64_t sub = (uint64_t)1 << bits;
	if (i < 2 * sub) {
		*width = 1;
		return i;
	}
	unsigned shift = (unsigned)(i / sub) - 1;
	*width = (uint64_t)1 << shift;
	return ((uint64_t)i - shift * sub) << shift;
}

int hist_init(struct hist *h, uint64_t max_trackable, unsigned bits)
{
	memset(h, 0, sizeof(*h));
	if (bits < 1 || bits > 16 || max_trackable < 1)
		return -1;
	h->bits = bits;
	h->max_trackable = max_trackable;
	h->nbuckets = bucket_of(bits, max_trackable) + 1;
	h->buckets = calloc(h->nbuckets, sizeof(*h->buckets));
	if (!h->buckets)
		return -1;
	hist_reset(h);
	return 0;
}

void hist_free(struct hist *h)
{
	free(h->buckets);
	h->buckets = NULL;
}

void hist_reset(struct hist *h)
{
	memset(h->buckets, 0, h->nbuckets * sizeof(*h->buckets));
	h->count = h->sum = h->max = 0;
	h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t value)
{
	uint64_t tracked = value < h->max_trackable ? value : h->max_trackable;
	h->buckets[bucket_of(h->bits, tracked)]++;
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
	for (size_t i = 0; i < dst->nbuckets; i++)
		dst->buckets[i] += src->buckets[i];
	dst->count += src->count;
	dst->sum += src->sum;
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
	memcpy(dst->buckets, src->buckets, dst->nbuckets * sizeof(*dst->buckets));
	dst->count = src->count;
	dst->sum = src->sum;
	dst->min = src->min;
	dst->max = src->max;
	return 0;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 100)
		return h->max;
	uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < h->nbuckets; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t width, low = bucket_low(h->bits, i, &width);
			uint64_t mid = low + (width - 1) / 2;
			if (mid < h->min)
				return h->min;
			return mid > h->max ? h->max : mid;
		}
	}
	return h->max;
}

double hist_mean(const struct hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}
