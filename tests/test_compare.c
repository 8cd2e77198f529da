/* test_compare.c - bench/compare's summaries (bench/summarize.awk) on a raw.csv written here,
 * through `bench/compare --from-raw DIR`: no echod runs, the whole suite takes about a second.
 *
 * The synthetic raw.csv holds three points, uring and epoll at each:
 *   A  128 B, 50 connections, closed loop, 3 repeats: uring's msgs/s are 1.36, 1.00 and 0.92 x
 *      epoll's in the same repeats (a median of 1.00 that is not "1.00"), and echoload itself
 *      at 95% CPU for uring (a saturated client);
 *   B  128 B, 500 connections, closed loop, 8 repeats, three of them bad: uring's repeat 8
 *      says valid=0, epoll's repeat 3 has stalled connections and its repeat 8 errors and exit
 *      status 1; the bad rows claim 999,999 msgs/s, which must not reach any median;
 *   C  128 B, 50 connections, open loop at 50,000 msgs/s (50% of capacity), 3 repeats, and
 *      a fourth epoll run that achieved only 90% of the rate (valid=0: rate missed);
 *   D  128 B, 5,000 connections, closed loop, 3 repeats, one epoll p99 60 times the others.
 * What must come out: the saturated row flagged (summary.csv, JSON, table.md); an interval
 * with every median and every paired ratio, a bootstrap one from 6 runs on, that holds its
 * median and is the same on every rerun; A's ratio printed with its 0.92-1.36 interval; the
 * bad runs counted as rejected and kept out of the medians; closed-loop latency labelled as
 * Little's law; an older raw.csv (without the new columns) still summarised, the new fields
 * empty; and `--env-only` writing the env file's fields. Every one of these fails on the
 * script before issue 15 (which had none of those columns, options or notes). And a raw.csv of
 * echoload --reconnect runs (conns_per_s) gives a conns/s column with its ratio to epoll; one
 * without, none.
 *
 * ECHOD_COMPARE_SCRIPT runs another copy of the script (an older one, to see these fail). The
 * script is found from the repository root: this file's compile-time path (make compiles it
 * from the root, where make test runs it too), else upward from the test binary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib_proc.h"

#define RUN_MS 20000 /* a loaded machine; the runs take well under a second */

static char script[PATH_MAX];
static char build_dir[PATH_MAX];
static char dir[64];      /* the synthetic run: raw.csv, then the summaries */
static char old_dir[64];  /* an older raw.csv */
static char *summary_csv; /* dir's summary.csv, table.md, summary.json and the stderr */
static char *table_md;
static char *summary_json;
static char *run_stderr;
static int run_status;

/* ---- the synthetic raw.csv ------------------------------------------------------------------ */

static const char raw_header[] =
	"tool,label,connections,size,depth,rate,msgs_per_s,lat_p50_us,lat_p99_us,lat_p999_us,"
	"errors,conn_errors,stalled_conns,unanswered_bytes,client_cpu_pct,client_cpu_us_per_msg,"
	"server_cpu_pct,server_cpu_us_per_msg,rate_achieved_pct,valid,"
	"cpu0_user_pct,cpu0_system_pct,cpu0_irq_pct,cpu0_softirq_pct,cpu0_steal_pct,"
	"cpu0_busy_us_per_msg,cpu1_user_pct,cpu1_system_pct,cpu1_irq_pct,cpu1_softirq_pct,"
	"cpu1_steal_pct,cpu1_busy_us_per_msg,repeat,order,exit_status,load_pct\n";

struct run {
	const char *label;
	int conns, rate, repeat;
	double msgs, p99, client_pct;
	int errors, stalled, valid, exit_status;
	double achieved; /* rate_achieved_pct; 0: empty (closed loop) */
};

static void put_run(FILE *f, const struct run *r)
{
	/* the p50/p999, CPU figures and cpuN columns follow from the few that matter here */
	char achieved[32] = "";
	if (r->achieved > 0)
		snprintf(achieved, sizeof(achieved), "%.1f", r->achieved);
	fprintf(f, "echoload,%s,%d,128,1,%d,%.3f,%.1f,%.1f,%.1f,%d,0,%d,0,%.1f,7.00,%.1f,8.00,%s,%d,"
		"20,40,0,15,0.5,9.00,20,30,0,10,0.5,7.50,%d,1,%d,%s\n",
		r->label, r->conns, r->rate, r->msgs, r->p99 / 3, r->p99, r->p99 * 2, r->errors,
		r->stalled, r->client_pct, r->client_pct, achieved, r->valid, r->repeat,
		r->exit_status, r->rate ? "50" : "");
}

static const struct run runs[] = {
	/* A: closed loop, 50 connections; uring / epoll = 1.36, 1.00, 0.92 */
	{ "uring", 50, 0, 1, 136000, 800, 95, 0, 0, 1, 0, 0 },
	{ "epoll", 50, 0, 1, 100000, 900, 50, 0, 0, 1, 0, 0 },
	{ "epoll", 50, 0, 2, 100000, 900, 52, 0, 0, 1, 0, 0 },
	{ "uring", 50, 0, 2, 100000, 800, 94, 0, 0, 1, 0, 0 },
	{ "uring", 50, 0, 3, 92000, 800, 96, 0, 0, 1, 0, 0 },
	{ "epoll", 50, 0, 3, 100000, 900, 48, 0, 0, 1, 0, 0 },
	/* B: closed loop, 500 connections, 8 repeats, three bad runs */
	{ "uring", 500, 0, 1, 120000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 1, 100000, 7000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 2, 102000, 7000, 60, 0, 0, 1, 0, 0 },
	{ "uring", 500, 0, 2, 125000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "uring", 500, 0, 3, 118000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 3, 999999, 7000, 60, 0, 2, 1, 0, 0 },     /* stalled, echoload said nothing */
	{ "epoll", 500, 0, 4, 98000, 7000, 60, 0, 0, 1, 0, 0 },
	{ "uring", 500, 0, 4, 130000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "uring", 500, 0, 5, 122000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 5, 105000, 7000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 6, 101000, 7000, 60, 0, 0, 1, 0, 0 },
	{ "uring", 500, 0, 6, 127000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "uring", 500, 0, 7, 124000, 6000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 7, 99000, 7000, 60, 0, 0, 1, 0, 0 },
	{ "epoll", 500, 0, 8, 999999, 7000, 60, 3, 0, 0, 1, 0 },     /* errors, exit 1 */
	{ "uring", 500, 0, 8, 999999, 6000, 60, 0, 0, 0, 0, 0 },     /* valid=0 */
	/* C: open loop at 50,000 msgs/s, 50 connections; epoll's 4th run short of the rate */
	{ "uring", 50, 50000, 1, 50000, 300, 40, 0, 0, 1, 0, 100 },
	{ "epoll", 50, 50000, 1, 50000, 350, 40, 0, 0, 1, 0, 100 },
	{ "epoll", 50, 50000, 2, 50000, 350, 40, 0, 0, 1, 0, 100 },
	{ "uring", 50, 50000, 2, 50000, 300, 40, 0, 0, 1, 0, 100 },
	{ "uring", 50, 50000, 3, 50000, 300, 40, 0, 0, 1, 0, 100 },
	{ "epoll", 50, 50000, 3, 50000, 350, 40, 0, 0, 1, 0, 100 },
	{ "epoll", 50, 50000, 4, 45000, 90000, 40, 0, 0, 0, 0, 90 }, /* rate missed */
	/* D: closed loop, 5,000 connections; one of epoll's p99s is 60 times the others (as a
	 * real run of poll had: 24,500, 27,700 and 1,630,000 us) */
	{ "uring", 5000, 0, 1, 150000, 40000, 50, 0, 0, 1, 0, 0 },
	{ "epoll", 5000, 0, 1, 100000, 24500, 50, 0, 0, 1, 0, 0 },
	{ "epoll", 5000, 0, 2, 100000, 1630000, 50, 0, 0, 1, 0, 0 },
	{ "uring", 5000, 0, 2, 151000, 41000, 50, 0, 0, 1, 0, 0 },
	{ "uring", 5000, 0, 3, 149000, 42000, 50, 0, 0, 1, 0, 0 },
	{ "epoll", 5000, 0, 3, 100000, 27700, 50, 0, 0, 1, 0, 0 },
};

/* An older raw.csv: echoload's columns before issue 15, no repeat or exit_status either. */
static const char old_raw[] =
	"tool,version,label,timestamp,kernel,host,port,engine,connections,size,depth,threads,rate,"
	"warmup_s,duration_s,msgs,msgs_per_s,mb_per_s,lat_min_us,lat_p50_us,lat_p90_us,lat_p99_us,"
	"lat_p999_us,lat_max_us,lat_mean_us,errors,lost_bytes,lost_msgs,dup_bytes,dup_msgs,"
	"corrupt_bytes,reordered,conn_errors,in_flight_at_stop,stalled_conns,client_cpu_pct,"
	"client_cpu_us_per_msg,server_pid,server_cpu_pct,server_cpu_us_per_msg\n"
	"echoload,0.1.0,uring,2026-11-29T11:26:25Z,6.18,127.0.0.1,1,uring,50,128,1,1,0,1,3,1,"
	"135000,17,30,345,400,817,1700,5000,370,0,0,0,0,0,0,0,0,50,0,95,6.97,1,96,6.96\n"
	"echoload,0.1.0,epoll,2026-11-29T11:26:30Z,6.18,127.0.0.1,1,uring,50,128,1,1,0,1,3,1,"
	"122000,15,30,400,500,936,1900,6000,409,0,0,0,0,0,0,0,0,50,0,94,7.77,1,96,8.01\n";

/* ---- running the script and reading what it wrote --------------------------------------- */

static bool is_root(const char *d)
{
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/bench/compare", d);
	if (access(p, X_OK) != 0)
		return false;
	snprintf(p, sizeof(p), "%s/tests/test_compare.c", d);
	return access(p, R_OK) == 0;
}

static bool find_script(const char *argv0)
{
	const char *over = getenv("ECHOD_COMPARE_SCRIPT");
	if (over && *over) {
		snprintf(script, sizeof(script), "%s", over);
		return access(script, X_OK) == 0;
	}
	char d[PATH_MAX];
	snprintf(d, sizeof(d), "%s", __FILE__);
	char *slash = strrchr(d, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(d, sizeof(d), ".");
	strncat(d, "/..", sizeof(d) - strlen(d) - 1);
	if (!is_root(d)) {
		if (!realpath(argv0, d))
			return false;
		for (;;) {
			slash = strrchr(d, '/');
			if (!slash || slash == d)
				return false;
			*slash = '\0';
			if (is_root(d))
				break;
		}
	}
	snprintf(script, sizeof(script), "%.*s/bench/compare", (int)(sizeof(script) - 16), d);
	return true;
}

static char *slurp_in(const char *d, const char *name)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", d, name);
	char *s = proc_read_file(p);
	return s ? s : strdup("");
}

/* `bench/compare --from-raw D --build BUILD`: its exit status; its stderr into *err. Charts
 * too, so that every version of the script runs all of its path; the rerun that only checks
 * the summary is the same leaves them out (--no-charts) to keep the suite near a second. */
static int from_raw(const char *d, bool charts, char **err)
{
	const char *argv[] = { script, "--from-raw", d, "--build", build_dir,
			       charts ? NULL : "--no-charts", NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	*err = proc_log(&c);
	proc_cleanup(&c);
	return rc;
}

/* The field named col of the row for (backend, connections, rate) in summary.csv (backend
 * first) or raw.csv (its "label" column), "" if there is no such row or column: into out. */
static const char *cell(const char *csv, const char *backend, int conns, int rate,
			const char *col, char *out, size_t len)
{
	out[0] = '\0';
	char *copy = strdup(csv), *save = NULL;
	bool header = true;
	int c_label = 0, c_conns = -1, c_rate = -1, want = -1;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *fields[128];
		int n = 0;
		for (char *p = line;; p++) { /* split on commas, keeping empty fields */
			fields[n++] = p;
			p = strchr(p, ',');
			if (!p || n == 128)
				break;
			*p = '\0';
		}
		if (header) {
			for (int i = 0; i < n; i++) {
				if (!strcmp(fields[i], "label")) /* raw.csv; summary.csv leads with it */
					c_label = i;
				if (!strcmp(fields[i], "connections"))
					c_conns = i;
				if (!strcmp(fields[i], "rate"))
					c_rate = i;
				if (!strcmp(fields[i], col))
					want = i;
			}
			header = false;
			if (want < 0 || c_conns < 0)
				break;
			continue;
		}
		if (n <= want || strcmp(fields[c_label], backend) != 0 || atoi(fields[c_conns]) != conns)
			continue;
		if (c_rate >= 0 && atoi(fields[c_rate]) != rate)
			continue;
		if (c_rate < 0 && rate)
			continue;
		snprintf(out, len, "%s", fields[want]);
		break;
	}
	free(copy);
	return out;
}

static double num(const char *csv, const char *backend, int conns, int rate, const char *col)
{
	char v[64];
	cell(csv, backend, conns, rate, col, v, sizeof(v));
	if (!v[0]) {
		print_error("summary.csv: no %s for %s, %d connections, rate %d\n", col, backend,
			    conns, rate);
		fail();
	}
	return strtod(v, NULL);
}

/* The line of table.md that starts with "| backend | 128 | conns |" in the section named. */
static const char *table_row(const char *section, const char *backend, int conns, char *out,
			     size_t len)
{
	out[0] = '\0';
	const char *s = strstr(table_md, section);
	if (!s)
		return out;
	char want[64];
	snprintf(want, sizeof(want), "\n| %s | 128 | %d |", backend, conns);
	const char *p = strstr(s, want);
	if (!p)
		return out;
	p++;
	const char *nl = strchr(p, '\n');
	snprintf(out, len, "%.*s", (int)(nl ? nl - p : (long)strlen(p)), p);
	return out;
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_compare.XXXXXX");
	snprintf(old_dir, sizeof(old_dir), "/tmp/test_compare_old.XXXXXX");
	if (!mkdtemp(dir) || !mkdtemp(old_dir))
		return -1;
	char p[128];
	snprintf(p, sizeof(p), "%s/raw.csv", dir);
	FILE *f = fopen(p, "w");
	if (!f)
		return -1;
	fputs(raw_header, f);
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
		put_run(f, &runs[i]);
	fclose(f);
	snprintf(p, sizeof(p), "%s/raw.csv", old_dir);
	f = fopen(p, "w");
	if (!f)
		return -1;
	fputs(old_raw, f);
	fclose(f);
	run_status = from_raw(dir, true, &run_stderr);
	summary_csv = slurp_in(dir, "summary.csv");
	table_md = slurp_in(dir, "table.md");
	summary_json = slurp_in(dir, "summary.json");
	return 0;
}

static void rm_rf(const char *d)
{
	const char *argv[] = { "rm", "-rf", d, NULL };
	struct child c;
	proc_run(argv, 10000, &c);
	proc_cleanup(&c);
}

static int group_teardown(void **state)
{
	(void)state;
	free(summary_csv);
	free(table_md);
	free(summary_json);
	free(run_stderr);
	rm_rf(dir);
	rm_rf(old_dir);
	return 0;
}

static void ran_cleanly(void)
{
	if (run_status != 0) {
		print_error("%s --from-raw %s: exit %d; stderr:\n%s", script, dir, run_status,
			    run_stderr);
		fail();
	}
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* Issue 15 point 1: echoload at 95% CPU is flagged, in every output; epoll's 50% is not. */
static void test_saturated_client_flagged(void **state)
{
	(void)state;
	ran_cleanly();
	char v[64], row[2048];
	assert_string_equal(cell(summary_csv, "uring", 50, 0, "client_saturated", v, sizeof(v)), "1");
	assert_string_equal(cell(summary_csv, "epoll", 50, 0, "client_saturated", v, sizeof(v)), "0");
	assert_non_null(strstr(summary_json, "\"backend\":\"uring\",\"size\":128,\"connections\":50,"));
	assert_non_null(strstr(summary_json, "\"client_saturated\":1"));
	table_row("## Closed loop", "uring", 50, row, sizeof(row));
	if (!strstr(row, "client CPU 95%")) {
		print_error("table.md's uring row at 50 connections does not flag the client at 95%%:"
			    "\n%s\n", row);
		fail();
	}
	table_row("## Closed loop", "epoll", 50, row, sizeof(row));
	assert_null(strstr(row, "client CPU"));
}

/* Point 2: with 7 accepted runs the interval is a bootstrap one, holds the median, and is the
 * same on a rerun (the generator is seeded fixed); the paired ratio has one too. */
static void test_bootstrap_interval_holds_median(void **state)
{
	(void)state;
	ran_cleanly();
	char v[64];
	assert_string_equal(cell(summary_csv, "uring", 500, 0, "interval", v, sizeof(v)), "boot95");
	double m = num(summary_csv, "uring", 500, 0, "msgs_per_s");
	double lo = num(summary_csv, "uring", 500, 0, "msgs_per_s_lo");
	double hi = num(summary_csv, "uring", 500, 0, "msgs_per_s_hi");
	if (!(lo <= m && m <= hi && lo < hi && lo >= 118000 && hi <= 130000)) {
		print_error("msgs/s %.0f, interval %.0f-%.0f: not around the median within the "
			    "runs' range 118,000-130,000\n", m, lo, hi);
		fail();
	}
	double r = num(summary_csv, "uring", 500, 0, "msgs_ratio_vs_epoll");
	double rlo = num(summary_csv, "uring", 500, 0, "msgs_ratio_vs_epoll_lo");
	double rhi = num(summary_csv, "uring", 500, 0, "msgs_ratio_vs_epoll_hi");
	assert_true(rlo <= r && r <= rhi && rlo < rhi);
	assert_int_equal((int)num(summary_csv, "uring", 500, 0, "pairs"), 6);
	/* a rerun gives the very same file */
	char *err = NULL;
	assert_int_equal(from_raw(dir, false, &err), 0);
	free(err);
	char *again = slurp_in(dir, "summary.csv");
	bool same = strcmp(again, summary_csv) == 0;
	free(again);
	assert_true(same);
}

/* Point 2: a median ratio of 1.00 over repeats of 1.36, 1.00 and 0.92 is printed with that
 * spread (min-max: three runs), not as a bare "1.00". */
static void test_ratio_shows_its_interval(void **state)
{
	(void)state;
	ran_cleanly();
	char v[64], row[2048];
	assert_string_equal(cell(summary_csv, "uring", 50, 0, "msgs_ratio_vs_epoll", v, sizeof(v)), "1.000");
	assert_string_equal(cell(summary_csv, "uring", 50, 0, "msgs_ratio_vs_epoll_lo", v, sizeof(v)), "0.920");
	assert_string_equal(cell(summary_csv, "uring", 50, 0, "msgs_ratio_vs_epoll_hi", v, sizeof(v)), "1.360");
	assert_string_equal(cell(summary_csv, "uring", 50, 0, "interval", v, sizeof(v)), "minmax");
	table_row("## Closed loop", "uring", 50, row, sizeof(row));
	if (!strstr(row, "| 1.00 (0.92–1.36) |")) {
		print_error("table.md's uring row at 50 connections lacks \"1.00 (0.92–1.36)\":\n%s\n",
			    row);
		fail();
	}
}

/* An interval far wider than its median must not round the median away: D's epoll p99 (runs
 * of 24,500, 27,700 and 1,630,000 us) was printed "0 (0–1,600,000)", rounded to the hundred
 * thousands its interval's width supports. The median keeps two significant digits. */
static void test_wide_interval_keeps_median(void **state)
{
	(void)state;
	ran_cleanly();
	char row[2048];
	table_row("## Closed loop", "epoll", 5000, row, sizeof(row));
	if (!strstr(row, "| 28,000 (25,000–1,630,000) |")) {
		print_error("table.md's epoll row at 5,000 connections lacks the p99 "
			    "\"28,000 (25,000–1,630,000)\":\n%s\n", row[0] ? row : table_md);
		fail();
	}
}

/* Point 6: valid=0, stalls, errors and a non-zero exit reject a run: counted, said, listed,
 * and not averaged in (the bad rows' 999,999 msgs/s would move every median). A run short of
 * its open-loop rate is rejected too, and flagged as such. */
static void test_bad_runs_rejected_and_counted(void **state)
{
	(void)state;
	ran_cleanly();
	assert_int_equal((int)num(summary_csv, "uring", 500, 0, "repeats"), 7);
	assert_int_equal((int)num(summary_csv, "uring", 500, 0, "rejected"), 1);
	assert_int_equal((int)num(summary_csv, "uring", 500, 0, "msgs_per_s"), 124000);
	assert_int_equal((int)num(summary_csv, "epoll", 500, 0, "repeats"), 6);
	assert_int_equal((int)num(summary_csv, "epoll", 500, 0, "rejected"), 2);
	assert_int_equal((int)num(summary_csv, "epoll", 500, 0, "msgs_per_s"), 100500);
	assert_int_equal((int)num(summary_csv, "epoll", 500, 0, "errors"), 3); /* still shown */
	assert_true(num(summary_csv, "epoll", 500, 0, "msgs_per_s_hi") < 999999);
	assert_int_equal((int)num(summary_csv, "epoll", 50, 50000, "rejected"), 1);
	char row[2048];
	table_row("## Closed loop", "epoll", 500, row, sizeof(row));
	assert_non_null(strstr(row, "| 6 (2 rejected) |"));
	table_row("## Open loop", "epoll", 50, row, sizeof(row));
	assert_non_null(strstr(row, "rate missed in 1"));
	assert_non_null(strstr(table_md, "Rejected runs"));
	assert_non_null(strstr(table_md, "epoll size=128 conns=500 repeat 3: 2 stalled connections"));
	assert_non_null(strstr(table_md, "uring size=128 conns=500 repeat 8: valid=0"));
	assert_non_null(strstr(run_stderr, "rejected epoll size=128 conns=500 repeat 8: echoload exit status 1, 3 errors"));
}

/* Point 4: closed-loop latency is labelled as queueing, with Little's law's figure beside it:
 * 50 connections x depth 1 / 100,000 msgs/s = 500 us. The open-loop point has its own table. */
static void test_closed_loop_latency_is_littles_law(void **state)
{
	(void)state;
	ran_cleanly();
	assert_int_equal((int)num(summary_csv, "epoll", 50, 0, "littles_law_us"), 500);
	assert_non_null(strstr(table_md, "Little's law"));
	assert_non_null(strstr(table_md, "not a latency result"));
	char v[64];
	assert_string_equal(cell(summary_csv, "uring", 50, 50000, "loop", v, sizeof(v)), "open");
	assert_non_null(strstr(table_md, "## Open loop"));
}

/* A raw.csv from before these columns still gives every output; what it lacks stays empty. */
static void test_old_raw_new_fields_empty(void **state)
{
	(void)state;
	char *err = NULL;
	int rc = from_raw(old_dir, true, &err);
	if (rc != 0) {
		print_error("--from-raw on an old raw.csv: exit %d\n%s", rc, err);
		free(err);
		fail();
	}
	free(err);
	char *csv = slurp_in(old_dir, "summary.csv");
	char v[64];
	cell(csv, "uring", 50, 0, "rejected", v, sizeof(v));
	bool rejected_zero = strcmp(v, "0") == 0;
	cell(csv, "uring", 50, 0, "server_total_cpu_us_per_msg", v, sizeof(v));
	bool total_empty = v[0] == '\0';
	cell(csv, "uring", 50, 0, "client_saturated", v, sizeof(v));
	bool flagged = strcmp(v, "1") == 0;
	bool has_column = strstr(csv, ",server_total_cpu_us_per_msg,") != NULL;
	free(csv);
	assert_true(has_column);
	assert_true(rejected_zero);
	assert_true(total_empty);
	assert_true(flagged);
}

/* bench/compare --reconnect: echoload's conns_per_s (after its older columns, before the
 * script's own) becomes a conns/s column in table.md, median and interval, with its paired
 * ratio to epoll beside it (uring's repeats: 1.2, 1.3 and 1.1 times epoll's); summary.csv has
 * both. A raw.csv without the column (the group's own) has no such column in its table. */
static const char churn_raw[] =
	"tool,label,connections,size,depth,rate,msgs_per_s,lat_p99_us,errors,valid,reconnect,"
	"conns_opened,conns_per_s,repeat,order,exit_status,load_pct\n"
	"echoload,epoll,50,128,1,0,100000,900,0,1,10,31000,10000,1,1,0,\n"
	"echoload,uring,50,128,1,0,120000,800,0,1,10,37000,12000,1,2,0,\n"
	"echoload,uring,50,128,1,0,132600,800,0,1,10,40000,13260,2,1,0,\n"
	"echoload,epoll,50,128,1,0,102000,900,0,1,10,31600,10200,2,2,0,\n"
	"echoload,epoll,50,128,1,0,98000,900,0,1,10,30400,9800,3,1,0,\n"
	"echoload,uring,50,128,1,0,107800,800,0,1,10,33400,10780,3,2,0,\n";

static void test_reconnect_conns_column(void **state)
{
	(void)state;
	char d[64], p[128];
	snprintf(d, sizeof(d), "/tmp/test_compare_churn.XXXXXX");
	assert_non_null(mkdtemp(d));
	snprintf(p, sizeof(p), "%s/raw.csv", d);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(churn_raw, f);
	fclose(f);
	char *err = NULL;
	int rc = from_raw(d, false, &err);
	char *csv = slurp_in(d, "summary.csv"), *md = slurp_in(d, "table.md");
	rm_rf(d);
	char v[4][64], row[2048] = "";
	cell(csv, "epoll", 50, 0, "conns_per_s", v[0], sizeof(v[0]));
	cell(csv, "uring", 50, 0, "conns_ratio_vs_epoll", v[1], sizeof(v[1]));
	cell(csv, "uring", 50, 0, "conns_ratio_vs_epoll_lo", v[2], sizeof(v[2]));
	cell(csv, "uring", 50, 0, "conns_ratio_vs_epoll_hi", v[3], sizeof(v[3]));
	const char *line = strstr(md, "\n| uring | 128 | 50 |");
	if (line)
		snprintf(row, sizeof(row), "%.*s", (int)strcspn(line + 1, "\n"), line + 1);
	bool ok = rc == 0 && !strcmp(v[0], "10000") && !strcmp(v[1], "1.200") &&
		  !strcmp(v[2], "1.100") && !strcmp(v[3], "1.300") &&
		  strstr(md, "| msgs/s | ÷ epoll | conns/s | ÷ epoll |") &&
		  strstr(row, "| 12,000 (10,800–13,300) | 1.20 (1.10–1.30) |");
	const char *head = strstr(md, "| backend |");
	if (!ok) /* the header and the row: cmocka's message buffer holds no whole table */
		print_error("--from-raw with conns_per_s: exit %d; conns_per_s %s, ratio %s (%s-%s)"
			    "\ntable.md's header: %.*s\nuring's row: %s\nstderr:\n%s", rc, v[0], v[1],
			    v[2], v[3], head ? (int)strcspn(head, "\n") : 0, head ? head : "", row,
			    err);
	free(err);
	free(csv);
	free(md);
	assert_true(ok);
	/* runs without --reconnect: no conns/s column, the table as it always was */
	ran_cleanly();
	assert_null(strstr(table_md, "conns/s"));
}

/* Point 10: the env file's fields (a real run writes the same through the same function;
 * make test's bench/compare --smoke runs that path). */
static void test_env_file_fields(void **state)
{
	(void)state;
	char out[64];
	snprintf(out, sizeof(out), "/tmp/test_compare_env.XXXXXX");
	assert_non_null(mkdtemp(out));
	const char *argv[] = { script, "--env-only", "--build", build_dir, "--out", out, NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *log = proc_log(&c);
	proc_cleanup(&c);
	char *env = slurp_in(out, "env.txt");
	rm_rf(out);
	static const char *const fields[] = { "command: ", "git: ", "compiler: ", "flags: ",
					      "liburing: ", "kernel: ", "cpu: ", "steal: ",
					      "echod: ", "echoload: " };
	bool ok = rc == 0;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		char want[32];
		snprintf(want, sizeof(want), "\n%s", fields[i]);
		if (strncmp(env, fields[i], strlen(fields[i])) != 0 && !strstr(env, want)) {
			print_error("env.txt has no \"%s\" line\n", fields[i]);
			ok = false;
		}
	}
	if (!ok)
		print_error("--env-only: exit %d; stderr:\n%s\nenv.txt:\n%s", rc, log, env);
	free(log);
	free(env);
	assert_true(ok);
}

/* Variants (--backends "epoll epoll+VAR=VALUE@DIR"): each entry runs with its own environment
 * and build and is its own row. DIR here holds an echod that writes its environment to a
 * file and then becomes the real echod, so the test sees both reach the right server. Runs
 * echod and echoload for real: two 0.2 s runs, about 1.5 s. */
static void test_variants_env_and_build(void **state)
{
	(void)state;
	char tmp[64], out[256];
	snprintf(tmp, sizeof(tmp), "/tmp/test_compare_var.XXXXXX");
	assert_non_null(mkdtemp(tmp));
	snprintf(out, sizeof(out), "%s/out", tmp);
	char wrapper[PATH_MAX], seen[PATH_MAX], text[3 * PATH_MAX];
	snprintf(wrapper, sizeof(wrapper), "%s/echod", tmp);
	snprintf(seen, sizeof(seen), "%s/seen", tmp);
	snprintf(text, sizeof(text),
		 "#!/bin/sh\necho \"var=$ECHOD_TEST_VARIANT\" >>%s\nexec %s/echod \"$@\"\n", seen,
		 build_dir);
	FILE *f = fopen(wrapper, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(wrapper, 0755), 0);
	char other[PATH_MAX + 64];
	snprintf(other, sizeof(other), "epoll epoll+ECHOD_TEST_VARIANT=x1@%s", tmp);
	const char *argv[] = { script, "--build", build_dir, "--backends", other, "--sizes", "128",
			       "--conns", "2", "--repeats", "1", "--duration", "0.2", "--warmup",
			       "0.1", "--idle", "0", "--no-charts", "--client-engine", "epoll",
			       "--out", out, NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *log = proc_log(&c);
	proc_cleanup(&c);
	char *raw = slurp_in(out, "raw.csv");
	char *saw = slurp_in(tmp, "seen");
	/* raw.csv's rows: tool,version,label,... */
	bool ok = rc == 0 && strstr(raw, ",epoll,") && strstr(raw, ",epoll+ECHOD_TEST_VARIANT=x1@") &&
		  strcmp(saw, "var=x1\n") == 0;
	if (!ok)
		print_error("exit %d; the wrapper saw \"%s\"; stderr:\n%s\n", rc, saw, log);
	free(log);
	free(raw);
	free(saw);
	rm_rf(tmp);
	assert_true(ok);
}

/* --server-cpu-limit: echod runs in a cgroup with that CPU quota. A closed loop of ten
 * connections keeps an uncapped echod at 40-70% of its CPU; capped at 10% its own CPU, as
 * echoload reads it, stays near 10, env.txt says the setting, and the cgroup is gone after.
 * One 0.5 s run. Skips where no cgroup can be made (exit 69). */
static void test_server_cpu_limit(void **state)
{
	(void)state;
	char out[64];
	snprintf(out, sizeof(out), "/tmp/test_compare_cap.XXXXXX");
	assert_non_null(mkdtemp(out));
	const char *argv[] = { script, "--build", build_dir, "--backends", "epoll", "--sizes",
			       "128", "--conns", "10", "--repeats", "1", "--duration", "0.5",
			       "--warmup", "0.2", "--idle", "0", "--no-charts", "--client-engine",
			       "epoll", "--server-cpu-limit", "10", "--out", out, NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *log = proc_log(&c);
	char cg1[96], cg2[96];
	snprintf(cg1, sizeof(cg1), "/sys/fs/cgroup/cpu/echod-compare-%d", (int)c.pid);
	snprintf(cg2, sizeof(cg2), "/sys/fs/cgroup/echod-compare-%d", (int)c.pid);
	proc_cleanup(&c);
	if (rc == 69) {
		printf("  skipped: bench/compare could not make a CPU cgroup here (%.*s)\n",
		       (int)strcspn(log, "\n"), log);
		free(log);
		rm_rf(out);
		return;
	}
	char *raw = slurp_in(out, "raw.csv"), *env = slurp_in(out, "env.txt");
	rm_rf(out);
	char cpu[32];
	cell(raw, "epoll", 10, 0, "server_cpu_pct", cpu, sizeof(cpu));
	bool gone = access(cg1, F_OK) != 0 && access(cg2, F_OK) != 0;
	bool ok = rc == 0 && cpu[0] && strtod(cpu, NULL) > 0 && strtod(cpu, NULL) <= 15 &&
		  strstr(env, "\nserver CPU limit: 10% of one CPU (cgroup v") && gone;
	if (!ok)
		print_error("--server-cpu-limit 10: exit %d, server_cpu_pct %s, cgroup %s\nenv.txt:\n%s"
			    "\nstderr:\n%s\n", rc, cpu, gone ? "removed" : "left behind", env, log);
	free(raw);
	free(env);
	free(log);
	assert_true(ok);
}

/* ---- bench/peers/run --peer: a locally built server beside echod --------------------------- */
/* Unlike the tests above, the first of these runs echod and echoload for real (through
 * bench/peers/run: one 0.3 s run after 0.1 s of warm-up), about 1.5 s in all. */

/* bench/peers/run beside the bench/compare found (ECHOD_PEERS_SCRIPT runs another copy). */
static const char *peers_script(void)
{
	static char p[PATH_MAX];
	const char *over = getenv("ECHOD_PEERS_SCRIPT");
	if (over && *over)
		snprintf(p, sizeof(p), "%s", over);
	else if (strrchr(script, '/'))
		snprintf(p, sizeof(p), "%.*s/peers/run", (int)(strrchr(script, '/') - script), script);
	else
		snprintf(p, sizeof(p), "bench/peers/run");
	return p;
}

/* How many of raw.csv's rows are labelled label, and the least msgs_per_s among them. */
static int raw_rows(const char *csv, const char *label, double *min_msgs)
{
	char *copy = strdup(csv), *save = NULL;
	int c_label = -1, c_msgs = -1, rows = 0;
	bool header = true;
	*min_msgs = 0;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *fields[160];
		int n = 0;
		for (char *p = line;; p++) {
			fields[n++] = p;
			p = strchr(p, ',');
			if (!p || n == 160)
				break;
			*p = '\0';
		}
		if (header) {
			for (int i = 0; i < n; i++) {
				if (!strcmp(fields[i], "label"))
					c_label = i;
				if (!strcmp(fields[i], "msgs_per_s"))
					c_msgs = i;
			}
			header = false;
			if (c_label < 0 || c_msgs < 0)
				break;
			continue;
		}
		if (n <= c_msgs || n <= c_label || strcmp(fields[c_label], label) != 0)
			continue;
		double m = strtod(fields[c_msgs], NULL);
		if (!rows++ || m < *min_msgs)
			*min_msgs = m;
	}
	free(copy);
	return rows;
}

/* --peer NAME=COMMAND: echod itself under another name stands in for a locally built server
 * (one that takes its port as {port} in an argument of its own form). It runs as "other",
 * one repeat, 0.3 s: raw.csv has its row with messages echoed, env.txt its command line and
 * its executable's sha256sum. Fails on the script before --peer (an unknown option: 64). */
static void test_peers_run_local_server(void **state)
{
	(void)state;
	char out[64];
	snprintf(out, sizeof(out), "/tmp/test_compare_peers.XXXXXX");
	assert_non_null(mkdtemp(out));
	char peer[PATH_MAX + 96];
	snprintf(peer, sizeof(peer), "other=%s/echod --backend=poll --listen 127.0.0.1:{port}",
		 build_dir);
	const char *argv[] = { peers_script(), "--build", build_dir, "--peer", peer,
			       "--servers", "other", "--conns", "2", "--repeats", "1",
			       "--duration", "0.3", "--warmup", "0.1", "--client-engine", "epoll",
			       "--out", out, NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *log = proc_log(&c);
	proc_cleanup(&c);
	char *raw = slurp_in(out, "raw.csv");
	char *env = slurp_in(out, "env.txt");
	rm_rf(out);
	double msgs = 0;
	int rows = raw_rows(raw, "other", &msgs);
	char want[PATH_MAX + 128]; /* "\npeer other: <the command as given>\n" */
	snprintf(want, sizeof(want), "\npeer other: %s\n", peer + strlen("other="));
	bool has_cmd = strstr(env, want) != NULL;
	bool has_sum = strstr(env, "\npeer other sha256: ") != NULL;
	bool ok = rc == 0 && rows == 1 && msgs > 0 && has_cmd && has_sum;
	if (!ok)
		print_error("%s --peer '%s' --servers other: exit %d, %d rows labelled other "
			    "(least msgs/s %.0f), env.txt %s the command%s; stderr:\n%s\nraw.csv:\n%s"
			    "\nenv.txt:\n%s", argv[0], peer, rc, rows, msgs, has_cmd ? "has" : "lacks",
			    has_sum ? "" : " and lacks its sha256", log, raw, env);
	free(log);
	free(raw);
	free(env);
	assert_true(ok);
}

/* A --peer whose executable does not exist: exit 64 before any run (OUT never made), with one
 * line on stderr that names the path. */
static void test_peers_run_missing_peer(void **state)
{
	(void)state;
	char tmp[64], out[96];
	snprintf(tmp, sizeof(tmp), "/tmp/test_compare_nopeer.XXXXXX");
	assert_non_null(mkdtemp(tmp));
	snprintf(out, sizeof(out), "%s/out", tmp);
	static const char path[] = "/nonexistent/test_compare/echo-server";
	const char *argv[] = { peers_script(), "--build", build_dir, "--peer",
			       "gone=/nonexistent/test_compare/echo-server -p {port}",
			       "--servers", "echod-epoll gone", "--repeats", "1", "--duration", "0.3",
			       "--out", out, NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *log = proc_log(&c);
	proc_cleanup(&c);
	bool out_made = access(out, F_OK) == 0;
	rm_rf(tmp);
	const char *nl = strchr(log, '\n');
	bool one_line = nl && nl[1] == '\0';
	bool names = strstr(log, path) != NULL;
	if (rc != 64 || !one_line || !names || out_made)
		print_error("--peer with a missing executable: exit %d (want 64), %s made, stderr "
			    "(want one line naming %s):\n%s", rc, out_made ? "OUT" : "nothing", path,
			    log);
	free(log);
	assert_int_equal(rc, 64);
	assert_true(one_line);
	assert_true(names);
	assert_false(out_made);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	/* the build directory: the one this binary sits in (<build>/tests/test_compare) */
	const char *echod = proc_bin("echod");
	snprintf(build_dir, sizeof(build_dir), "%.*s", (int)(strlen(echod) - strlen("/echod")), echod);
	if (!find_script(argv[0])) {
		fprintf(stderr, "test_compare: cannot find bench/compare (run from the repository "
				"root, or set ECHOD_COMPARE_SCRIPT)\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_saturated_client_flagged),
		cmocka_unit_test(test_bootstrap_interval_holds_median),
		cmocka_unit_test(test_ratio_shows_its_interval),
		cmocka_unit_test(test_wide_interval_keeps_median),
		cmocka_unit_test(test_bad_runs_rejected_and_counted),
		cmocka_unit_test(test_closed_loop_latency_is_littles_law),
		cmocka_unit_test(test_old_raw_new_fields_empty),
		cmocka_unit_test(test_reconnect_conns_column),
		cmocka_unit_test(test_env_file_fields),
		cmocka_unit_test(test_variants_env_and_build),
		cmocka_unit_test(test_server_cpu_limit),
		cmocka_unit_test(test_peers_run_local_server),
		cmocka_unit_test(test_peers_run_missing_peer),
	};
	const char *filter = getenv("ECHOD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests_name("compare", tests, group_setup, group_teardown);
}
