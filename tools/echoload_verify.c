/* echoload_verify.c - the message format, and the byte-exact check of every echo.
 *
 * Message seq of connection id, size bytes:
 *   [0,4)    id, little-endian            [4,12)  seq, little-endian
 *   [12,16)  check: 32 bits of a hash of (id, seq), so a header found in the stream can be
 *            trusted as really ours (a random match is 2^-64 with the id) and a damaged one is
 *            never taken for another message
 *   [16,size) payload: a shared random pattern read from an offset hashed from (id, seq) and
 *            XORed with a second 8-byte key, so each message has its own bytes and no two
 *            messages share a run of bytes, yet making and checking them is a word-wide loop
 *
 * Every received byte is compared with the stream the connection expects, stopping at what
 * was actually sent. At the first difference the bytes from there on are held and explained by
 * the smallest change that makes the bytes after it agree again (CONFIRM of them, or all there
 * are): a header of another of our messages (messages lost, repeated, or arriving late =
 * reordered), one changed byte (corrupted), two swapped bytes (reordered), k bytes missing
 * (lost) or k extra bytes (duplicated; reordered if they are the bytes last counted lost).
 * What nothing explains is counted as corrupted and skipped up to the next valid header.
 * Each explanation is one error event, so anything unexpected fails the run even in the rare
 * case where it is classified wrongly. Explaining may need bytes that have not arrived; if
 * none come for a while (or the connection or run ends) the decision is taken with what there
 * is (verify_settle). The fast path costs one compare per byte and allocates nothing; the
 * held-bytes machinery exists only for connections that went wrong. */
#include "echoload.h"

#include <stdlib.h>
#include <string.h>

#define PAT_LEN 65536u  /* payload offsets are hashed below this: power of two */
#define CONFIRM 16      /* agreeing bytes after a change that prove it (2^-128 by chance) */
#define HOLD_EXTRA 1024 /* held bytes beyond two messages: losses and repeats up to that long
			 * are found byte-exactly; longer ones through the next header */
#define HOLD_MSGS_MAX (1u << 20) /* ... but no more than this for the two messages: with huge
				  * --size, errors on many connections must not exhaust memory */

struct mismatch {
	uint8_t *buf;        /* received bytes not yet explained; buf[0] is unexpected */
	size_t len, cap;
	uint8_t *want;       /* cap bytes: the expected stream, compared against buf */
	uint64_t last;       /* when bytes last arrived */
	bool lost_sync;      /* nothing explained them: skipping to the next valid header */
	bool counted;        /* included in the worker's npending */
};

enum edit_kind { EDIT_FLIP, EDIT_SWAP, EDIT_DROP, EDIT_DUP };

struct edit {
	enum edit_kind kind;
	size_t a, b;         /* received bytes it consumes; expected bytes it skips */
	size_t agree;        /* bytes that agree after it (at most CONFIRM) */
};

static uint8_t *pattern;
static uint32_t msize;

/* --- the message format ------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t msg_key(uint32_t id, uint64_t seq)
{
	return mix64(mix64(id + 0x9e3779b97f4a7c15ull) ^ seq);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void msg_header(uint32_t id, uint64_t seq, uint64_t key, uint8_t h[MSG_HDR])
{
	put_le(h, id, 4);
	put_le(h + 4, seq, 8);
	put_le(h + 12, key >> 32, 4);
}

/* Payload byte at message offset o (>= MSG_HDR): base[o] ^ mask byte o % 8. */
struct payload {
	const uint8_t *base;
	uint8_t kb[8];
	uint64_t mask;       /* kb as a word in memory order: XOR of 8 aligned bytes at once */
};

static void payload_of(uint64_t key, struct payload *pl)
{
	pl->base = pattern + (key & (PAT_LEN - 1));
	put_le(pl->kb, mix64(key ^ 0x6a09e667f3bcc909ull), 8);
	memcpy(&pl->mask, pl->kb, 8);
}

static void payload_bytes(const struct payload *pl, size_t off, uint8_t *out, size_t n)
{
	const uint8_t *src = pl->base + off;
	size_t i = 0;
	for (; i < n && (off + i) % 8; i++)
		out[i] = src[i] ^ pl->kb[(off + i) % 8];
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= pl->mask;
		memcpy(out + i, &v, 8);
	}
	for (; i < n; i++)
		out[i] = src[i] ^ pl->kb[(off + i) % 8];
}

/* How many leading bytes of p equal payload bytes [off, off + n). */
static size_t payload_agree(const struct payload *pl, size_t off, const uint8_t *p, size_t n)
{
	const uint8_t *src = pl->base + off;
	size_t i = 0;
	for (; i < n && (off + i) % 8; i++)
		if (p[i] != (src[i] ^ pl->kb[(off + i) % 8]))
			return i;
	for (; i + 8 <= n; i += 8) {
		uint64_t v, r;
		memcpy(&v, src + i, 8);
		memcpy(&r, p + i, 8);
		if ((v ^ pl->mask) != r)
			break; /* the byte loop below finds which */
	}
	for (; i < n; i++)
		if (p[i] != (src[i] ^ pl->kb[(off + i) % 8]))
			return i;
	return n;
}

static bool header_valid(const uint8_t *p, uint32_t *id, uint64_t *seq)
{
	*id = (uint32_t)get_le(p, 4);
	*seq = get_le(p + 4, 8);
	return (uint32_t)get_le(p + 12, 4) == (uint32_t)(msg_key(*id, *seq) >> 32);
}

bool msg_header_parse(const uint8_t *p, uint32_t *id, uint64_t *seq)
{
	return header_valid(p, id, seq);
}

int msg_setup(uint32_t size)
{
	msize = size;
	pattern = malloc(PAT_LEN + size);
	if (!pattern)
		return -1;
	uint64_t x = 0x243f6a8885a308d3ull; /* fixed: runs are reproducible */
	for (size_t i = 0; i < PAT_LEN + size; i += 8) {
		uint8_t w[8];
		put_le(w, mix64(x++), 8);
		memcpy(pattern + i, w, PAT_LEN + size - i < 8 ? PAT_LEN + size - i : 8);
	}
	return 0;
}

void msg_teardown(void)
{
	free(pattern);
	pattern = NULL;
}

void msg_stream(uint32_t id, uint64_t pos, uint8_t *out, size_t len)
{
	while (len) {
		uint64_t seq = pos / msize;
		uint32_t off = (uint32_t)(pos % msize);
		size_t m = msize - off < len ? msize - off : len, done = 0;
		uint64_t key = msg_key(id, seq);
		if (off < MSG_HDR) {
			uint8_t h[MSG_HDR];
			msg_header(id, seq, key, h);
			done = MSG_HDR - off < m ? MSG_HDR - off : m;
			memcpy(out, h + off, done);
		}
		struct payload pl;
		payload_of(key, &pl);
		payload_bytes(&pl, off + done, out + done, m - done);
		out += m;
		pos += m;
		len -= m;
	}
}

static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
	size_t i = 0;
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/* How many leading bytes of p equal the stream of id from pos on. */
static size_t stream_agree(uint32_t id, uint64_t pos, const uint8_t *p, size_t n)
{
	size_t done = 0;
	while (done < n) {
		uint64_t seq = pos / msize;
		uint32_t off = (uint32_t)(pos % msize);
		size_t m = msize - off < n - done ? msize - off : n - done, i = 0;
		uint64_t key = msg_key(id, seq);
		if (off < MSG_HDR) {
			uint8_t h[MSG_HDR];
			msg_header(id, seq, key, h);
			i = MSG_HDR - off < m ? MSG_HDR - off : m;
			size_t same = first_diff(p + done, h + off, i);
			if (same < i)
				return done + same;
		}
		struct payload pl;
		payload_of(key, &pl);
		size_t same = payload_agree(&pl, off + i, p + done + i, m - i);
		if (same < m - i)
			return done + i + same;
		done += m;
		pos += m;
	}
	return done;
}

/* Received bytes that match what c expects, never past what was sent. */
static size_t agree_sent(const struct conn *c, const uint8_t *p, size_t n)
{
	uint64_t room = c->sent - c->rx;
	return stream_agree(c->id, c->rx, p, room < n ? (size_t)room : n);
}

/* --- holding unexpected bytes ------------------------------------------------------------- */

static struct mismatch *mm_get(struct worker *w, struct conn *c)
{
	if (c->mm)
		return c->mm;
	struct mismatch *mm = calloc(1, sizeof(*mm));
	/* room for a lost or repeated message and more, and to find the next header after it */
	size_t two = 2 * (size_t)msize;
	size_t cap = (two < HOLD_MSGS_MAX ? two : HOLD_MSGS_MAX) + HOLD_EXTRA;
	if (mm) {
		mm->buf = malloc(cap);
		mm->want = malloc(cap);
	}
	if (!mm || !mm->buf || !mm->want) {
		if (mm) {
			free(mm->buf);
			free(mm->want);
		}
		free(mm);
		worker_fail(w, 1, "out of memory");
		return NULL;
	}
	mm->cap = cap;
	c->mm = mm;
	return mm;
}

static void mm_consume(struct mismatch *mm, size_t n)
{
	memmove(mm->buf, mm->buf + n, mm->len - n);
	mm->len -= n;
}

/* Keeps the worker's count of connections with held bytes, which its timer scans. */
static void mm_recount(struct worker *w, struct conn *c)
{
	struct mismatch *mm = c->mm;
	bool pending = mm->len > 0 || mm->lost_sync;
	if (pending != mm->counted) {
		mm->counted = pending;
		if (pending)
			w->npending++;
		else
			w->npending--;
	}
}

bool verify_pending(const struct conn *c)
{
	return c->mm && (c->mm->len > 0 || c->mm->lost_sync);
}

uint64_t verify_last_arrival(const struct conn *c)
{
	return c->mm ? c->mm->last : 0;
}

void verify_free(struct conn *c)
{
	if (c->mm) {
		free(c->mm->buf);
		free(c->mm->want);
	}
	free(c->mm);
	c->mm = NULL;
}

/* --- explanations ------------------------------------------------------------------------- */

#define FINAL_MIN_AGREE 4 /* deciding without CONFIRM bytes: fewer is too likely by chance */

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t whole_msgs_in(uint64_t lo, uint64_t hi)
{
	uint64_t first = (lo + msize - 1) / msize, end = hi / msize;
	return end > first ? end - first : 0;
}

/* Stream bytes [lo, hi) were just counted lost (whole: and the whole messages in them). */
static void remember_lost(struct conn *c, uint64_t lo, uint64_t hi, bool whole)
{
	c->skip_lo = lo;
	c->skip_hi = hi;
	c->skip_whole = whole;
}

/* Are the k bytes at r the ones last counted lost, from stream position q on? Then they came
 * late rather than never: they are recounted as reordered. */
static bool late_arrival(struct worker *w, struct conn *c, uint64_t q, const uint8_t *r,
			 size_t k)
{
	if (k == 0 || q < c->skip_lo || q + k > c->skip_hi || stream_agree(c->id, q, r, k) != k)
		return false;
	w->cnt.reordered++;
	w->cnt.lost_bytes -= min64(k, w->cnt.lost_bytes);
	if (c->skip_whole)
		w->cnt.lost_msgs -= min64(whole_msgs_in(q, q + k), w->cnt.lost_msgs);
	if (q == c->skip_lo)
		c->skip_lo += k;
	else if (q + k == c->skip_hi)
		c->skip_hi -= k;
	else
		c->skip_hi = q; /* a hole in the middle: keep the part before it */
	return true;
}

/* A valid header of ours at the start of the held bytes, for another message than expected:
 * the stream jumped. 1: explained; 0: not such a header; -1: need more bytes. */
static int explain_header(struct worker *w, struct conn *c, bool final)
{
	struct mismatch *mm = c->mm;
	uint32_t id;
	uint64_t s, size = msize;
	if (mm->len < MSG_HDR || !header_valid(mm->buf, &id, &s) || id != c->id)
		return 0;
	uint64_t sent_msgs = (c->sent + size - 1) / size;
	if (s >= sent_msgs || s * size == c->rx)
		return 0;
	uint64_t target = s * size;
	if (target > c->rx) { /* jumped ahead: everything in between never came */
		w->cnt.lost_bytes += target - c->rx;
		w->cnt.lost_msgs += whole_msgs_in(c->rx, target);
		conn_error(w, c, c->rx, "%llu bytes missing: the echo continues with message %llu",
			   (unsigned long long)(target - c->rx), (unsigned long long)s);
		remember_lost(c, c->rx, target, true);
		conn_advance(w, c, target, true);
		return 1;
	}
	/* went back: bytes or a whole message again, or one that was skipped arriving late */
	uint64_t back = c->rx - target;
	size_t k = (size_t)min64(back, size);
	if (mm->len < k && !final)
		return -1;
	k = (size_t)min64(k, mm->len);
	if (late_arrival(w, c, target, mm->buf, k)) {
		conn_error(w, c, c->rx, "message %llu arrived after later ones (reordered)",
			   (unsigned long long)s);
	} else {
		w->cnt.dup_bytes += k;
		if (k == size)
			w->cnt.dup_msgs++;
		if (c->rx % size)
			conn_damage(c, c->rx / size);
		conn_error(w, c, c->rx, "%zu bytes of message %llu came again (duplicated)", k,
			   (unsigned long long)s);
	}
	mm_consume(mm, k);
	return 1;
}

/* Bytes agreeing after an edit: received[a..] against expected[b..]. Returns false if they
 * disagree; *done tells whether both sides ran out (nothing more to compare, ever). */
static bool edit_agrees(const uint8_t *r, size_t rn, const uint8_t *e, size_t en,
			uint64_t e_avail, struct edit *ed, bool *done)
{
	if (ed->a > rn || ed->b > en)
		return false;
	size_t n = rn - ed->a < en - ed->b ? rn - ed->a : en - ed->b;
	if (n > CONFIRM)
		n = CONFIRM;
	if (memcmp(r + ed->a, e + ed->b, n) != 0)
		return false;
	ed->agree = n;
	*done = ed->a + n == rn && ed->b + n == e_avail;
	return true;
}

/* Candidate i in the order tried, the smallest changes first: a changed byte, two swapped,
 * then k = 1, 2, ... bytes missing or extra. */
static bool edit_candidate(size_t i, const uint8_t *r, size_t rn, const uint8_t *e, size_t en,
			   struct edit *ed)
{
	if (i == 0) {
		*ed = (struct edit){ EDIT_FLIP, 1, 1, 0 };
		return rn >= 1 && en >= 1;
	}
	if (i == 1) {
		*ed = (struct edit){ EDIT_SWAP, 2, 2, 0 };
		return rn >= 2 && en >= 2 && r[0] == e[1] && r[1] == e[0];
	}
	size_t k = (i - 2) / 2 + 1;
	if ((i - 2) % 2 == 0)
		*ed = (struct edit){ EDIT_DROP, 0, k, 0 };
	else
		*ed = (struct edit){ EDIT_DUP, k, 0, 0 };
	return true;
}

/* The first change whose following bytes agree for CONFIRM bytes, or to the end of both
 * sides. When final, failing that, the one with the most agreeing bytes. */
static bool find_edit(const uint8_t *r, size_t rn, const uint8_t *e, size_t en,
		      uint64_t e_avail, bool final, struct edit *out)
{
	bool have = false;
	for (size_t i = 0;; i++) {
		if (i >= 2 && (i - 2) / 2 + 1 > rn && (i - 2) / 2 + 1 > en)
			break; /* no larger shift fits either side */
		struct edit ed = { EDIT_FLIP, 0, 0, 0 };
		bool done = false;
		if (!edit_candidate(i, r, rn, e, en, &ed) ||
		    !edit_agrees(r, rn, e, en, e_avail, &ed, &done))
			continue;
		if (ed.agree >= CONFIRM || done) {
			*out = ed;
			return true;
		}
		if (final && ed.agree >= FINAL_MIN_AGREE && (!have || ed.agree > out->agree)) {
			*out = ed;
			have = true;
		}
	}
	return have;
}

static void apply_edit(struct worker *w, struct conn *c, const struct edit *ed)
{
	struct mismatch *mm = c->mm;
	switch (ed->kind) {
	case EDIT_FLIP:
		w->cnt.corrupt_bytes++;
		conn_error(w, c, c->rx, "corrupted byte: expected 0x%02x, got 0x%02x", mm->want[0],
			   mm->buf[0]);
		break;
	case EDIT_SWAP:
		w->cnt.reordered++;
		conn_error(w, c, c->rx, "2 bytes swapped (reordered)");
		break;
	case EDIT_DROP:
		w->cnt.lost_bytes += ed->b;
		remember_lost(c, c->rx, c->rx + ed->b, false);
		conn_error(w, c, c->rx, "%zu byte%s missing (lost)", ed->b, ed->b > 1 ? "s" : "");
		break;
	case EDIT_DUP:
		if (late_arrival(w, c, c->skip_lo, mm->buf, ed->a)) {
			conn_error(w, c, c->rx, "%zu bytes missing earlier arrived now (reordered)",
				   ed->a);
			break;
		}
		w->cnt.dup_bytes += ed->a;
		if (c->rx % msize)
			conn_damage(c, c->rx / msize);
		conn_error(w, c, c->rx, "%zu extra byte%s (duplicated)", ed->a,
			   ed->a > 1 ? "s" : "");
		break;
	}
	mm_consume(mm, ed->a);
	if (ed->b)
		conn_advance(w, c, c->rx + ed->b, true);
}

/* Explains the unexpected byte at mm->buf[0]: true if done, false if it needs more bytes. */
static bool explain(struct worker *w, struct conn *c, bool final)
{
	struct mismatch *mm = c->mm;
	int h = explain_header(w, c, final);
	if (h != 0)
		return h > 0;
	uint64_t e_avail = c->sent - c->rx;
	size_t en = (size_t)min64(e_avail, mm->cap);
	msg_stream(c->id, c->rx, mm->want, en);
	struct edit ed = { EDIT_FLIP, 0, 0, 0 };
	if (find_edit(mm->buf, mm->len, mm->want, en, e_avail, final, &ed)) {
		apply_edit(w, c, &ed);
		return true;
	}
	if (!final) /* more bytes may still confirm an explanation (a full buffer is final) */
		return false;
	conn_error(w, c, c->rx, "unrecognised bytes (corrupted); looking for the next message");
	if (c->rx % msize)
		conn_damage(c, c->rx / msize);
	mm->lost_sync = true;
	return true;
}

/* Skips garbage up to the next valid header of ours. true: in step again (or, when final,
 * given up on everything sent so far); false: need more bytes. */
static bool resync(struct worker *w, struct conn *c, bool final)
{
	struct mismatch *mm = c->mm;
	uint64_t sent_msgs = (c->sent + msize - 1) / msize;
	for (size_t j = 0; j + MSG_HDR <= mm->len; j++) {
		uint32_t id;
		uint64_t s;
		if (header_valid(mm->buf + j, &id, &s) && id == c->id && s < sent_msgs) {
			w->cnt.corrupt_bytes += j;
			mm_consume(mm, j);
			mm->lost_sync = false;
			return true;
		}
	}
	/* keep a possible header's first bytes, unless nothing more will come */
	size_t keep = final ? 0 : (mm->len < MSG_HDR - 1 ? mm->len : MSG_HDR - 1);
	w->cnt.corrupt_bytes += mm->len - keep;
	mm_consume(mm, mm->len - keep);
	if (!final)
		return false;
	/* the rest of what was sent will not be recognised: count it lost, start afresh */
	if (c->sent > c->rx) {
		w->cnt.lost_bytes += c->sent - c->rx;
		w->cnt.lost_msgs += whole_msgs_in(c->rx, c->sent);
		remember_lost(c, c->rx, c->sent, true);
		conn_advance(w, c, c->sent, true);
	}
	mm->lost_sync = false;
	return true;
}

/* Works through the held bytes: pass the ones that agree, explain the first that does not,
 * repeat. Stops when more bytes are needed, or (final) when all are accounted for. */
static void work_through(struct worker *w, struct conn *c, bool final)
{
	struct mismatch *mm = c->mm;
	for (;;) {
		if (!mm->lost_sync) {
			size_t ok = agree_sent(c, mm->buf, mm->len);
			if (ok) {
				mm_consume(mm, ok);
				conn_advance(w, c, c->rx + ok, false);
			}
		}
		if (mm->len == 0 && !(final && mm->lost_sync))
			break;
		if (mm->lost_sync ? !resync(w, c, final) : !explain(w, c, final))
			break;
	}
	mm_recount(w, c);
}

void verify_received(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
	if (!verify_pending(c)) { /* the fast path: everything matches */
		size_t ok = agree_sent(c, p, n);
		if (ok)
			conn_advance(w, c, c->rx + ok, false);
		if (ok == n || c->dead)
			return;
		p += ok;
		n -= ok;
	}
	struct mismatch *mm = mm_get(w, c);
	if (!mm)
		return;
	while (n > 0 && !c->dead) {
		if (mm->len == mm->cap) /* full: every explanation was testable, decide */
			work_through(w, c, true);
		size_t take = mm->cap - mm->len < n ? mm->cap - mm->len : n;
		memcpy(mm->buf + mm->len, p, take);
		mm->len += take;
		mm->last = w->now;
		p += take;
		n -= take;
		work_through(w, c, false);
	}
}

void verify_settle(struct worker *w, struct conn *c)
{
	if (verify_pending(c))
		work_through(w, c, true);
}
