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

#define MAX_FIELDS 64

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
	add_num(t, "lat_p50_us", lat_us(r, 50));
	add_num(t, "lat_p90_us", lat_us(r, 90));
	add_num(t, "lat_p99_us", lat_us(r, 99));
	add_num(t, "lat_p999_us", lat_us(r, 99.9));
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
	add_num(t, "client_cpu_pct", cpu_pct(r, r->client_cpu_s));
	add_num(t, "client_cpu_us_per_msg", cpu_us_per_msg(r, r->client_cpu_s));
	if (o->server_pid)
		add_int(t, "server_pid", (uint64_t)o->server_pid);
	else
		add_str(t, "server_pid", NULL);
	add_num(t, "server_cpu_pct", cpu_pct(r, r->server_cpu_s));
	add_num(t, "server_cpu_us_per_msg", cpu_us_per_msg(r, r->server_cpu_s));
	add_ratio(t, "server_syscalls_per_msg", r->work.syscalls_per_msg);
	add_ratio(t, "server_wakeups_per_msg", r->work.wakeups_per_msg);
	add_ratio(t, "server_completions_per_wakeup", r->work.completions_per_wakeup);
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
static const char *grouped(uint64_t v, char *buf, size_t len)
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

/* A latency in µs with precision that fits its size. */
static const char *us(double v, char *buf, size_t len)
{
	if (!isfinite(v))
		snprintf(buf, len, "-");
	else if (v < 10)
		snprintf(buf, len, "%.2f", v);
	else if (v < 1000)
		snprintf(buf, len, "%.1f", v);
	else
		grouped((uint64_t)llround(v), buf, len);
	return buf;
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
	       "corrupted %llu B,\n               reordered %llu, connections failed %llu\n",
	       grouped(c->errors, a, sizeof(a)), grouped(c->lost_bytes, b, sizeof(b)),
	       (unsigned long long)c->lost_msgs, grouped(c->dup_bytes, d, sizeof(d)),
	       (unsigned long long)c->corrupt_bytes, (unsigned long long)c->reordered,
	       (unsigned long long)c->conn_errors);
}

static void human_cpu(const struct result *r, const char *who, double cpu_s, pid_t pid,
		      const char *backend)
{
	double per_msg = cpu_us_per_msg(r, cpu_s);
	printf("  %-12s %.1f%% of one core, ", who, cpu_pct(r, cpu_s));
	if (isfinite(per_msg))
		printf("%.2f µs per message", per_msg);
	else
		printf("- µs per message");
	if (pid && backend && *backend)
		printf("  (pid %d, backend %s)", (int)pid, backend);
	else if (pid)
		printf("  (pid %d)", (int)pid);
	putchar('\n');
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
	char a[32], b[32], c[32], d[32], e[32], f[32];
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
	printf("  latency µs   min %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
	       us(lat_us(r, 0), a, sizeof(a)), us(lat_us(r, 50), b, sizeof(b)),
	       us(lat_us(r, 90), c, sizeof(c)), us(lat_us(r, 99), d, sizeof(d)),
	       us(lat_us(r, 99.9), e, sizeof(e)), us(lat_us(r, 100), f, sizeof(f)));
	printf("  messages     %s echoed intact in the interval, %s in flight at stop",
	       grouped(r->cnt.msgs, a, sizeof(a)), grouped(r->cnt.in_flight, b, sizeof(b)));
	if (r->cnt.stalled)
		printf(" (%llu connections stalled)", (unsigned long long)r->cnt.stalled);
	putchar('\n');
	if (o->udp)
		human_udp(r);
	else
		human_errors(&r->cnt);
	human_cpu(r, "client CPU", r->client_cpu_s, 0, NULL);
	if (o->server_pid && r->server_cpu_s >= 0)
		human_cpu(r, "server CPU", r->server_cpu_s, o->server_pid, o->server_backend);
	else if (o->server_pid)
		printf("  server CPU   unknown: /proc/%d/stat unreadable at the end\n",
		       (int)o->server_pid);
	if (o->server_metrics)
		human_work(r);
}
