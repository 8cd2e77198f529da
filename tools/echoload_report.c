/* echoload_report.c - the result of a run, three ways: a summary with units for people, and
 * one JSON object or a CSV header and row for scripts. JSON and CSV come from the same field
 * table, so they always carry the same names and values. */
#include "echoload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum field_type { F_STR, F_INT, F_NUM, F_NULL };

struct field {
	const char *name;
	enum field_type type;
	const char *s;
	uint64_t i;
	double d;
	int decimals; /* F_NUM with a fraction: digits after the point (0: 3) */
};

#define MAX_FIELDS (96 + 6 * CPU_STAT_MAX) /* --cpu-stat: 6 per CPU */

struct table {
	struct field f[MAX_FIELDS];
	int n;
};

static void add(struct table *t, struct field f)
{
	if (t->n < MAX_FIELDS)
		t->f[t->n++] = f;
}

static void add_str(struct table *t, const char *name, const char *s)
{
	add(t, (struct field){ .name = name, .type = s ? F_STR : F_NULL, .s = s });
}

static void add_int(struct table *t, const char *name, uint64_t i)
{
	add(t, (struct field){ .name = name, .type = F_INT, .i = i });
}

static void add_num(struct table *t, const char *name, double d)
{
	add(t, (struct field){ .name = name, .type = isfinite(d) ? F_NUM : F_NULL, .d = d });
}

/* Ratios that are often well below 1 (wake-ups per message at depth): more digits. */
static void add_ratio(struct table *t, const char *name, double d)
{
	add(t, (struct field){ .name = name, .type = isfinite(d) ? F_NUM : F_NULL, .d = d,
			       .decimals = 4 });
}

/* A count that only --udp measures: null (empty in CSV) for TCP. */
static void add_udp_int(struct table *t, const struct options *o, const char *name, uint64_t i)
{
	if (o->udp)
		add_int(t, name, i);
	else
		add_str(t, name, NULL);
}

/* Lost datagrams as a share of those sent in the interval; NAN when none was sent. */
static double loss_rate(const struct counters *c)
{
	return c->dg_sent ? (double)c->dg_lost / (double)c->dg_sent : NAN;
}

static double per_s(const struct result *r, double v)
{
	return r->measured_s > 0 ? v / r->measured_s : 0;
}

/* CPU seconds as µs per echoed message and % of one core; NAN when undefined. */
static double cpu_us_per_msg(const struct result *r, double cpu_s)
{
	return cpu_s >= 0 && r->cnt.msgs ? cpu_s * 1e6 / (double)r->cnt.msgs : NAN;
}

static double cpu_pct(const struct result *r, double cpu_s)
{
	return cpu_s >= 0 && r->measured_s > 0 ? cpu_s * 100 / r->measured_s : NAN;
}

static double lat_us(const struct result *r, double p)
{
	return r->lat->count ? (double)hist_percentile(r->lat, p) / 1000.0 : NAN;
}

/* ns rounded to the significant digits the histogram holds (hist.h: a bucket's upper bound is
 * up to 2^-bits above the truth, so its last nanoseconds are not information); *decimals: the
 * digits after the point that leaves in µs. */
static uint64_t lat_round(const struct hist *h, uint64_t ns, int *decimals)
{
	unsigned digits = hist_digits(h) ? hist_digits(h) : 1;
	uint64_t limit = 1, scale = 1;
	int dropped = 0;
	for (unsigned i = 0; i < digits; i++)
		limit *= 10;
	while (ns / scale >= limit) {
		scale *= 10;
		dropped++;
	}
	uint64_t q = ns / scale + (ns % scale >= (scale + 1) / 2);
	if (q == limit) /* 99,960 -> 100,000: one digit more, all of it a zero */
		dropped++;
	*decimals = dropped >= 3 ? 0 : 3 - dropped;
	return q * scale;
}

/* A percentile of h for JSON and CSV, in µs to the histogram's digits (min and max are exact:
 * lat_us); null when h is empty. */
static void add_pct(struct table *t, const char *name, const struct hist *h, double p)
{
	if (!h->count) {
		add_str(t, name, NULL);
		return;
	}
	int decimals;
	uint64_t ns = lat_round(h, hist_percentile(h, p), &decimals);
	add(t, (struct field){ .name = name, .type = F_NUM, .d = (double)ns / 1000.0,
			       .decimals = decimals });
}

/* Decimals for a value known to within res: no more digits than the data has (a 10 ms tick
 * over 1,000 messages is 10 µs per message: none after the point). At most 3. */
static int digits_for(double res)
{
	if (!(res > 0))
		return 3;
	double d = floor(-log10(res) + 1e-9);
	return d < 0 ? 0 : d > 3 ? 3 : (int)d;
}

/* v to those digits, as JSON and CSV print it. */
static void add_res(struct table *t, const char *name, double v, double res)
{
	int d = digits_for(res);
	double scale = pow(10, d);
	add(t, (struct field){ .name = name, .type = isfinite(v) ? F_NUM : F_NULL,
			       .d = round(v * scale) / scale, .decimals = d ? d : 3 });
}

/* What one step of a CPU reading is worth per message, in µs; and in % of the interval. */
static double cpu_res_per_msg(const struct result *r, double res_s)
{
	return r->cnt.msgs ? res_s * 1e6 / (double)r->cnt.msgs : NAN;
}

static double cpu_res_pct(const struct result *r, double res_s)
{
	return r->measured_s > 0 ? res_s * 100 / r->measured_s : NAN;
}

double rate_achieved_pct(const struct result *r)
{
	const struct counters *c = &r->cnt;
	return r->opt->rate > 0 && c->slots_due ? 100.0 * (double)c->sent_in_interval /
							  (double)c->slots_due
						: NAN;
}

bool result_valid(const struct result *r)
{
	const struct counters *c = &r->cnt;
	if (c->errors || c->unanswered_bytes || c->stalled || !c->msgs)
		return false;
	return r->opt->rate <= 0 || rate_achieved_pct(r) >= RATE_VALID_PCT;
}

/* --cpu-stat: one CPU's ticks. Busy is what ran there, interrupts included; idle, iowait and
 * steal (the hypervisor's, not this machine's work) are not. */
static uint64_t ticks_total(const struct cpu_ticks *c)
{
	uint64_t n = 0;
	for (int k = 0; k < CPU_FIELDS; k++)
		n += c->t[k];
	return n;
}

static uint64_t ticks_busy(const struct cpu_ticks *c)
{
	return c->t[CPU_USER] + c->t[CPU_NICE] + c->t[CPU_SYSTEM] + c->t[CPU_IRQ] +
	       c->t[CPU_SOFTIRQ];
}

static double ticks_pct(const struct cpu_ticks *c, uint64_t ticks)
{
	uint64_t total = ticks_total(c);
	return total ? 100.0 * (double)ticks / (double)total : NAN;
}

static double busy_us_per_msg(const struct result *r, uint64_t ticks)
{
	return r->cnt.msgs ? (double)ticks * r->tick_s * 1e6 / (double)r->cnt.msgs : NAN;
}

enum { CS_USER, CS_SYSTEM, CS_IRQ, CS_SOFTIRQ, CS_STEAL, CS_BUSY, CS_COLS };

/* The --cpu-stat columns of CPU i, in CS_* order; NAN when unknown. user includes nice. */
static void cpu_stat_values(const struct result *r, unsigned i, double v[CS_COLS])
{
	const struct cpu_ticks *c = &r->cpu[i];
	v[CS_USER] = ticks_pct(c, c->t[CPU_USER] + c->t[CPU_NICE]);
	v[CS_SYSTEM] = ticks_pct(c, c->t[CPU_SYSTEM]);
	v[CS_IRQ] = ticks_pct(c, c->t[CPU_IRQ]);
	v[CS_SOFTIRQ] = ticks_pct(c, c->t[CPU_SOFTIRQ]);
	v[CS_STEAL] = ticks_pct(c, c->t[CPU_STEAL]);
	v[CS_BUSY] = busy_us_per_msg(r, ticks_busy(c));
	if (!r->cpu_ok)
		for (int k = 0; k < CS_COLS; k++)
			v[k] = NAN;
}

static void add_cpu_stat(const struct result *r, struct table *t)
{
	static const char *const col[CS_COLS] = { "user_pct", "system_pct", "irq_pct",
						  "softirq_pct", "steal_pct", "busy_us_per_msg" };
	static char names[CPU_STAT_MAX][CS_COLS][40];
	const struct options *o = r->opt;
	for (unsigned i = 0; i < o->ncpu_stat; i++) {
		double v[CS_COLS];
		cpu_stat_values(r, i, v);
		uint64_t total = ticks_total(&r->cpu[i]);
		for (int k = 0; k < CS_COLS; k++) {
			snprintf(names[i][k], sizeof(names[i][k]), "cpu%u_%s", o->cpu_stat[i],
				 col[k]);
			add_res(t, names[i][k], v[k], k == CS_BUSY ? cpu_res_per_msg(r, r->tick_s)
					: total ? 100.0 / (double)total : NAN);
		}
	}
}

/* Did everything come back, did the open loop keep its schedule: the fields a script needs
 * to reject a result (valid) and to see why. */
static void add_checks(const struct result *r, struct table *t)
{
	const struct options *o = r->opt;
	const struct counters *c = &r->cnt;
	if (o->udp) /* a datagram is answered or lost: loss is the rate */
		add_str(t, "unanswered_bytes", NULL);
	else
		add_int(t, "unanswered_bytes", c->unanswered_bytes);
	if (o->rate > 0) {
		add_int(t, "never_sent", c->never_sent);
		add_pct(t, "send_lag_p99_us", r->lag, 99);
		add_res(t, "rate_achieved_pct", rate_achieved_pct(r),
			c->slots_due ? 100.0 / (double)c->slots_due : NAN);
	} else {
		add_str(t, "never_sent", NULL);
		add_str(t, "send_lag_p99_us", NULL);
		add_str(t, "rate_achieved_pct", NULL);
	}
	add_int(t, "valid", result_valid(r));
}

/* Connections per second of the measured interval (--reconnect): those whose clean close
 * completed inside it, like msgs_per_s's messages made inside it. */
static double conns_per_s(const struct result *r)
{
	return per_s(r, (double)r->cnt.conns_done);
}

/* TCP connections opened, and with --reconnect their churn: closed cleanly, per second,
 * connect latency, failed connects. null where they do not apply. */
static void add_churn(const struct result *r, struct table *t)
{
	const struct options *o = r->opt;
	const struct counters *c = &r->cnt;
	if (o->reconnect)
		add_int(t, "reconnect", o->reconnect);
	else
		add_str(t, "reconnect", NULL);
	if (o->udp)
		add_str(t, "conns_opened", NULL);
	else
		add_int(t, "conns_opened", c->conns_opened);
	if (!o->reconnect) {
		static const char *const none[] = { "conns_closed", "conns_per_s", "connect_p50_us",
						    "connect_p99_us", "connect_errors" };
		for (size_t i = 0; i < sizeof(none) / sizeof(*none); i++)
			add_str(t, none[i], NULL);
		return;
	}
	add_int(t, "conns_closed", c->conns_closed);
	add_num(t, "conns_per_s", conns_per_s(r));
	add_pct(t, "connect_p50_us", r->conn_lat, 50);
	add_pct(t, "connect_p99_us", r->conn_lat, 99);
	add_int(t, "connect_errors", c->connect_errors);
}

static void build(const struct result *r, struct table *t)
{
	const struct options *o = r->opt;
	const struct counters *c = &r->cnt;
	t->n = 0;
	add_str(t, "tool", "echoload");
	add_str(t, "version", ECHOLOAD_VERSION);
	add_str(t, "label", o->label);
	add_str(t, "backend", o->server_backend[0] ? o->server_backend : NULL);
	add_str(t, "timestamp", r->timestamp);
	add_str(t, "kernel", r->kernel);
	add_str(t, "host", o->host);
	add_int(t, "port", strtoull(o->port, NULL, 10));
	add_str(t, "engine", o->engine == ENGINE_URING ? "uring" : "epoll");
	add_str(t, "proto", o->udp ? "udp" : "tcp");
	add_int(t, "connections", o->conns);
	add_int(t, "size", o->size);
	add_int(t, "depth", o->depth);
	add_int(t, "threads", o->threads);
	add_num(t, "rate", o->rate);
	add_num(t, "warmup_s", o->warmup);
	add_num(t, "duration_s", r->measured_s);
	add_int(t, "msgs", c->msgs);
	add_num(t, "msgs_per_s", per_s(r, (double)c->msgs));
	add_num(t, "mb_per_s", per_s(r, (double)c->msgs * o->size / 1e6));
	add_num(t, "lat_min_us", lat_us(r, 0));
	add_pct(t, "lat_p50_us", r->lat, 50);
	add_pct(t, "lat_p90_us", r->lat, 90);
	add_pct(t, "lat_p99_us", r->lat, 99);
	add_pct(t, "lat_p999_us", r->lat, 99.9);
	add_num(t, "lat_max_us", lat_us(r, 100));
	add_num(t, "lat_mean_us", r->lat->count ? hist_mean(r->lat) / 1000.0 : NAN);
	add_int(t, "errors", c->errors);
	add_int(t, "lost_bytes", c->lost_bytes);
	add_int(t, "lost_msgs", c->lost_msgs);
	add_int(t, "dup_bytes", c->dup_bytes);
	add_int(t, "dup_msgs", c->dup_msgs);
	add_int(t, "corrupt_bytes", c->corrupt_bytes);
	add_int(t, "reordered", c->reordered);
	add_int(t, "conn_errors", c->conn_errors);
	add_int(t, "in_flight_at_stop", c->in_flight);
	add_int(t, "stalled_conns", c->stalled);
	add_udp_int(t, o, "datagrams_sent", c->dg_sent);
	add_udp_int(t, o, "datagrams_received", c->dg_received);
	add_udp_int(t, o, "datagrams_lost", c->dg_lost);
	add(t, (struct field){ .name = "loss_rate", .type = o->udp && c->dg_sent ? F_NUM : F_NULL,
			       .d = loss_rate(c), .decimals = 6 });
	add_udp_int(t, o, "datagrams_late", c->dg_late);
	add_udp_int(t, o, "misdelivered", c->misdelivered);
	if (o->udp)
		add_num(t, "udp_timeout_ms", (double)o->udp_timeout_ns / 1e6);
	else
		add_str(t, "udp_timeout_ms", NULL);
	add_res(t, "client_cpu_pct", cpu_pct(r, r->client_cpu_s),
		cpu_res_pct(r, r->client_cpu_res_s));
	add_res(t, "client_cpu_us_per_msg", cpu_us_per_msg(r, r->client_cpu_s),
		cpu_res_per_msg(r, r->client_cpu_res_s));
	if (o->server_pid)
		add_int(t, "server_pid", (uint64_t)o->server_pid);
	else
		add_str(t, "server_pid", NULL);
	add_res(t, "server_cpu_pct", cpu_pct(r, r->server_cpu_s),
		cpu_res_pct(r, r->server_cpu_res_s));
	add_res(t, "server_cpu_us_per_msg", cpu_us_per_msg(r, r->server_cpu_s),
		cpu_res_per_msg(r, r->server_cpu_res_s));
	add_ratio(t, "server_syscalls_per_msg", r->work.syscalls_per_msg);
	add_ratio(t, "server_wakeups_per_msg", r->work.wakeups_per_msg);
	add_ratio(t, "server_completions_per_wakeup", r->work.completions_per_wakeup);
	/* after the older columns, so that those read by position stay where they were */
	add_int(t, "lat_overflow", r->lat->overflow);
	add_int(t, "lat_p99_samples", hist_rests_on(r->lat, 99));
	add_int(t, "lat_p999_samples", hist_rests_on(r->lat, 99.9));
	add_checks(r, t);
	add_cpu_stat(r, t); /* as many columns as --cpu-stat lists CPUs */
	add_churn(r, t);    /* after all the older columns, so none of them moves */
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void csv_string(const char *s)
{
	if (!strpbrk(s, ",\"\r\n")) {
		fputs(s, stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		if (*s == '"')
			putchar('"');
		putchar(*s);
	}
	putchar('"');
}

/* A number as JSON and CSV want it: integers without a fraction, others to 3 decimals (or
 * the field's own). */
static void print_num(double d, int decimals)
{
	if (d == floor(d) && fabs(d) < 1e15)
		printf("%.0f", d);
	else
		printf("%.*f", decimals ? decimals : 3, d);
}

static void print_value(const struct field *f, bool json)
{
	switch (f->type) {
	case F_STR:
		if (json)
			json_string(f->s);
		else
			csv_string(f->s);
		break;
	case F_INT:
		printf("%llu", (unsigned long long)f->i);
		break;
	case F_NUM:
		print_num(f->d, f->decimals);
		break;
	case F_NULL:
		if (json)
			fputs("null", stdout);
		break;
	}
}

void report_json(const struct result *r)
{
	struct table t;
	build(r, &t);
	putchar('{');
	for (int i = 0; i < t.n; i++) {
		printf("%s\"%s\":", i ? "," : "", t.f[i].name);
		print_value(&t.f[i], true);
	}
	printf("}\n");
}

void report_csv(const struct result *r)
{
	struct table t;
	build(r, &t);
	for (int i = 0; i < t.n; i++)
		printf("%s%s", i ? "," : "", t.f[i].name);
	putchar('\n');
	for (int i = 0; i < t.n; i++) {
		if (i)
			putchar(',');
		print_value(&t.f[i], false);
	}
	putchar('\n');
}

/* --- for people ---------------------------------------------------------------------------- */

/* 1234567 -> "1,234,567" */
const char *grouped(uint64_t v, char *buf, size_t len)
{
	char digits[32];
	int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
	size_t o = 0;
	for (int i = 0; i < n && o + 2 < len; i++) {
		if (i && (n - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = '\0';
	return buf;
}

/* ns as µs to the histogram's significant digits: "12.3", "0.512", "1,230". */
static const char *us(const struct hist *h, uint64_t ns, char *buf, size_t len)
{
	int decimals;
	uint64_t v = lat_round(h, ns, &decimals);
	if (v >= 1000000)
		grouped(v / 1000, buf, len);
	else
		snprintf(buf, len, "%.*f", decimals, (double)v / 1000.0);
	return buf;
}

/* The value at p as us() prints it; "-" when nothing was measured, ">" and the range when
 * p's rank lies among the values above it (only min and max are known exactly there). */
static const char *lat_text(const struct result *r, double p, char *buf, size_t len)
{
	const struct hist *h = r->lat;
	if (!h->count) {
		snprintf(buf, len, "-");
	} else if (p > 0 && p < 100 && hist_overflowed(h, p)) {
		buf[0] = '>';
		us(h, h->max_trackable, buf + 1, len - 1);
	} else {
		us(h, hist_percentile(h, p), buf, len);
	}
	return buf;
}

/* Fewer values than this at or above a percentile's rank, and the summary says how many: one
 * more slow message would then move it, and a reader should know its tail is that thin. */
#define FEW_SAMPLES 100

static void human_latency(const struct result *r)
{
	static const struct {
		const char *name;
		double p;
	} pct[] = { { "p50", 50 }, { "p90", 90 }, { "p99", 99 }, { "p99.9", 99.9 } };
	char a[48];
	printf("  latency µs   min %s", lat_text(r, 0, a, sizeof(a)));
	for (size_t i = 0; i < sizeof(pct) / sizeof(*pct); i++) {
		uint64_t n = hist_rests_on(r->lat, pct[i].p);
		printf("  %s %s", pct[i].name, lat_text(r, pct[i].p, a, sizeof(a)));
		if (n && n < FEW_SAMPLES)
			printf(" (rests on %llu sample%s)", (unsigned long long)n, n == 1 ? "" : "s");
	}
	printf("  max %s\n", lat_text(r, 100, a, sizeof(a)));
	if (r->lat->overflow)
		printf("  over range   %llu samples above %s µs, ranked above all others: a "
		       "percentile among them shows as >%s\n", (unsigned long long)r->lat->overflow,
		       us(r->lat, r->lat->max_trackable, a, sizeof(a)), a);
}

static void human_udp(const struct result *r)
{
	const struct counters *c = &r->cnt;
	char a[32], b[32], d[32];
	printf("  datagrams    %s sent in the interval: %s answered intact, %s lost (%.3f%%, no "
	       "reply within %g ms)", grouped(c->dg_sent, a, sizeof(a)),
	       grouped(c->dg_received, b, sizeof(b)), grouped(c->dg_lost, d, sizeof(d)),
	       c->dg_sent ? 100.0 * loss_rate(c) : 0.0, (double)r->opt->udp_timeout_ns / 1e6);
	if (c->dg_late)
		printf(", %llu late replies", (unsigned long long)c->dg_late);
	putchar('\n');
	if (!c->errors) {
		printf("  errors       none: every reply verified\n");
		return;
	}
	printf("  errors       %s events: corrupted %llu B, duplicated %llu, misdelivered %llu, "
	       "sockets failed %llu\n", grouped(c->errors, a, sizeof(a)),
	       (unsigned long long)c->corrupt_bytes, (unsigned long long)c->dup_msgs,
	       (unsigned long long)c->misdelivered, (unsigned long long)c->conn_errors);
}

static void human_errors(const struct counters *c)
{
	char a[32], b[32], d[32];
	if (!c->errors) {
		printf("  errors       none: every echoed byte verified\n");
		return;
	}
	printf("  errors       %s events: lost %s B (%llu whole msgs), duplicated %s B, "
	       "corrupted %llu B,\n               reordered %llu, connections failed %llu",
	       grouped(c->errors, a, sizeof(a)), grouped(c->lost_bytes, b, sizeof(b)),
	       (unsigned long long)c->lost_msgs, grouped(c->dup_bytes, d, sizeof(d)),
	       (unsigned long long)c->corrupt_bytes, (unsigned long long)c->reordered,
	       (unsigned long long)c->conn_errors);
	if (c->connect_errors)
		printf(", connects failed %llu", (unsigned long long)c->connect_errors);
	putchar('\n');
}

/* --reconnect: how fast connections came and went, and how long a connect took. */
static void human_churn(const struct result *r)
{
	const struct counters *c = &r->cnt;
	const struct hist *h = r->conn_lat;
	char a[32], b[32], d[32], e[48], f[48];
	printf("  connections  %s conns/s (%s closed cleanly after %u echoes each in the "
	       "interval); %s opened, %s closed in all\n",
	       grouped((uint64_t)llround(conns_per_s(r)), a, sizeof(a)),
	       grouped(c->conns_done, b, sizeof(b)), r->opt->reconnect,
	       grouped(c->conns_opened, d, sizeof(d)), grouped(c->conns_closed, e, sizeof(e)));
	if (h->count)
		printf("  connect µs   p50 %s  p99 %s  max %s (%s connects issued in the interval)\n",
		       us(h, hist_percentile(h, 50), e, sizeof(e)),
		       us(h, hist_percentile(h, 99), f, sizeof(f)),
		       us(h, hist_percentile(h, 100), a, sizeof(a)),
		       grouped(h->count, b, sizeof(b)));
	else
		printf("  connect µs   - (no connect issued in the interval completed)\n");
}

static int min_int(int a, int b)
{
	return a < b ? a : b;
}

/* A process's CPU time, and beside it all the time of the CPUs it has to itself (--cpu-stat):
 * on loopback a packet's receive softirq runs on the sender's CPU and is charged to whatever
 * task runs there, so neither figure alone is one side's cost. */
static void human_cpu(const struct result *r, const char *who, double cpu_s, double res_s,
		      const bool *side, pid_t pid, const char *backend)
{
	double per_msg = cpu_us_per_msg(r, cpu_s);
	printf("  %-12s %.*f%% of one core, ", who,
	       min_int(1, digits_for(cpu_res_pct(r, res_s))), cpu_pct(r, cpu_s));
	if (isfinite(per_msg))
		printf("%.*f µs per message", min_int(2, digits_for(cpu_res_per_msg(r, res_s))),
		       per_msg);
	else
		printf("- µs per message");
	uint64_t busy = 0;
	unsigned n = 0;
	for (unsigned i = 0; r->cpu_ok && i < r->opt->ncpu_stat; i++)
		if (side[i]) {
			n++;
			busy += ticks_busy(&r->cpu[i]);
		}
	if (n && isfinite(busy_us_per_msg(r, busy))) {
		printf("; CPU%s ", n > 1 ? "s" : "");
		for (unsigned i = 0, k = 0; i < r->opt->ncpu_stat; i++)
			if (side[i])
				printf("%s%u", k++ ? "," : "", r->opt->cpu_stat[i]);
		printf(" in all: %.*f µs", min_int(2, digits_for(cpu_res_per_msg(r, r->tick_s))),
		       busy_us_per_msg(r, busy));
	}
	if (pid && backend && *backend)
		printf("  (pid %d, backend %s)", (int)pid, backend);
	else if (pid)
		printf("  (pid %d)", (int)pid);
	putchar('\n');
}

/* --cpu-stat, one line per CPU: where its time went, in % of the interval. */
static void human_cpu_stat(const struct result *r)
{
	const struct options *o = r->opt;
	if (o->ncpu_stat && !r->cpu_ok) {
		printf("  CPUs         unknown: /proc/stat unreadable at the end\n");
		return;
	}
	for (unsigned i = 0; i < o->ncpu_stat; i++) {
		double v[CS_COLS];
		cpu_stat_values(r, i, v);
		uint64_t total = ticks_total(&r->cpu[i]);
		int d = min_int(1, digits_for(total ? 100.0 / (double)total : NAN));
		char who[16];
		snprintf(who, sizeof(who), "CPU %u", o->cpu_stat[i]);
		printf("  %-12s %.*f%% busy: user %.*f, system %.*f, irq %.*f, softirq %.*f, "
		       "steal %.*f (%%); ", who, d, ticks_pct(&r->cpu[i], ticks_busy(&r->cpu[i])),
		       d, v[CS_USER], d, v[CS_SYSTEM], d, v[CS_IRQ], d, v[CS_SOFTIRQ], d,
		       v[CS_STEAL]);
		if (isfinite(v[CS_BUSY]))
			printf("%.*f µs per message",
			       min_int(2, digits_for(cpu_res_per_msg(r, r->tick_s))), v[CS_BUSY]);
		else
			printf("- µs per message");
		printf("%s\n", r->cpu_client[i] ? " (echoload's)" : r->cpu_server[i] ? " (the server's)"
											 : "");
	}
}

/* Which messages the result is made of, and for an open loop whether it kept its schedule. */
static void human_messages(const struct result *r)
{
	const struct counters *c = &r->cnt;
	char a[32], b[32], d[48], e[48], f[48];
	if (r->opt->rate <= 0) {
		printf("  messages     %s sent in the interval echoed intact (those in flight at "
		       "its end too)\n", grouped(c->msgs, a, sizeof(a)));
		return;
	}
	printf("  messages     %s of the %s due in the interval echoed intact\n",
	       grouped(c->msgs, a, sizeof(a)), grouped(c->slots_due, b, sizeof(b)));
	printf("  sending      %.1f%% of --rate sent within the interval; late by µs",
	       isfinite(rate_achieved_pct(r)) ? rate_achieved_pct(r) : 0.0);
	if (r->lag->count)
		printf(" p50 %s  p99 %s  max %s", us(r->lag, hist_percentile(r->lag, 50), d, sizeof(d)),
		       us(r->lag, hist_percentile(r->lag, 99), e, sizeof(e)),
		       us(r->lag, hist_percentile(r->lag, 100), f, sizeof(f)));
	else
		printf(" -");
	printf("; %s never sent\n", grouped(c->never_sent, a, sizeof(a)));
}

/* Bytes sent that never came back, on connections still open: why the run failed when every
 * byte that did come back was right. */
static void human_unanswered(const struct result *r)
{
	const struct counters *c = &r->cnt;
	char a[32], b[32], d[32], e[32];
	if (c->errors)
		human_errors(c);
	else
		printf("  errors       none in the bytes that came back, but not all came back:\n");
	printf("  unanswered   %s B on %s connection%s still open and owing them when the drain "
	       "ended: %s message%s partly echoed, %s not at all\n",
	       grouped(c->unanswered_bytes, a, sizeof(a)), grouped(c->stalled, b, sizeof(b)),
	       c->stalled == 1 ? "" : "s", grouped(c->in_flight_partly, d, sizeof(d)),
	       c->in_flight_partly == 1 ? "" : "s",
	       grouped(c->in_flight - c->in_flight_partly, e, sizeof(e)));
}

/* A ratio with precision that fits its size; "-" when unknown. */
static const char *ratio(double v, char *buf, size_t len)
{
	if (!isfinite(v))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f", v < 1 ? 3 : v < 100 ? 2 : 0, v);
	return buf;
}

static void human_work(const struct result *r)
{
	const struct server_work *w = &r->work;
	char a[32], b[32], c[32];
	if (isnan(w->syscalls_per_msg) && isnan(w->wakeups_per_msg) &&
	    isnan(w->completions_per_wakeup)) {
		printf("  server work  unknown: no usable scrapes of %s\n", r->opt->server_metrics);
		return;
	}
	printf("  server work  %s syscalls and %s wake-ups per message, %s completions per "
	       "wake-up\n", ratio(w->syscalls_per_msg, a, sizeof(a)),
	       ratio(w->wakeups_per_msg, b, sizeof(b)),
	       ratio(w->completions_per_wakeup, c, sizeof(c)));
}

void report_human(const struct result *r)
{
	const struct options *o = r->opt;
	char a[32];
	printf("echoload %s -> %s %s port %s, engine %s, %s\n", ECHOLOAD_VERSION,
	       o->udp ? "UDP" : "TCP", o->host, o->port,
	       o->engine == ENGINE_URING ? "uring" : "epoll", r->timestamp);
	printf("  load         %u %s x depth %u, %u B %s, %u thread%s, ", o->conns,
	       o->udp ? "sockets" : "connections", o->depth, o->size,
	       o->udp ? "datagrams" : "messages", o->threads, o->threads > 1 ? "s" : "");
	if (o->rate > 0)
		printf("open loop at %s msgs/s\n",
		       grouped((uint64_t)llround(o->rate), a, sizeof(a)));
	else
		printf("closed loop\n");
	printf("  measured     %.2f s after %.2f s warm-up\n", r->measured_s, o->warmup);
	printf("  throughput   %s msgs/s, %.2f MB/s echoed each way\n",
	       grouped((uint64_t)llround(per_s(r, (double)r->cnt.msgs)), a, sizeof(a)),
	       per_s(r, (double)r->cnt.msgs * o->size / 1e6));
	human_latency(r);
	human_messages(r);
	if (o->reconnect)
		human_churn(r);
	if (o->udp)
		human_udp(r);
	else if (r->cnt.unanswered_bytes)
		human_unanswered(r);
	else
		human_errors(&r->cnt);
	human_cpu(r, "client CPU", r->client_cpu_s, r->client_cpu_res_s, r->cpu_client, 0, NULL);
	if (o->server_pid && r->server_cpu_s >= 0)
		human_cpu(r, "server CPU", r->server_cpu_s, r->server_cpu_res_s, r->cpu_server,
			  o->server_pid, o->server_backend);
	else if (o->server_pid)
		printf("  server CPU   unknown: /proc/%d unreadable at the end\n",
		       (int)o->server_pid);
	human_cpu_stat(r);
	if (o->server_metrics)
		human_work(r);
}
