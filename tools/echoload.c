/* echoload - load an echo server (RFC 862) and verify every byte it echoes.
 *
 *   echoload [--host H] [--port P] [--connections N] [--size B] [--depth D] [--duration S]
 *            [--warmup S] [--threads T] [--rate R] [--engine epoll|uring] [--server-pid PID]
 *            [--server-metrics URL] [--cpu-stat LIST] [--label TEXT] [--json|--csv]
 *            [--quiet] [--udp [--udp-timeout T]] [--reconnect N]
 *
 * Closed loop by default (each connection keeps D messages outstanding); --rate makes it open
 * loop with latency measured from each message's intended send time, so a stalled server
 * cannot hide its stall by slowing the client down (no coordinated omission). Every message is
 * checked byte for byte; any loss, duplication, corruption, reordering or dropped connection
 * is counted and makes the exit status 1, and so does an echo still missing when the drain
 * after the stop ends. --udp sends datagrams instead (echoload_udp.c): loss is counted as a
 * rate, damage and misdelivery are errors. --reconnect N closes each connection cleanly after
 * N echoes and opens a new one in its place (echoload_reconnect.c): conns/s.
 *
 * This file: the command line, connecting, the worker threads, the per-second progress line,
 * CPU samples and server scrapes around the measured interval, and the exit status. See
 * echoload.h for the rest.
 */
#include "echoload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 5000
#define START_DELAY_NS (50 * 1000000ull) /* lets every thread set up before the common start */

static const char usage_text[] =
	"Usage: echoload [OPTION]...\n"
	"Load an echo server (RFC 862) and verify every byte it echoes.\n"
	"\n"
	"  -H, --host HOST          server name or address                  [127.0.0.1]\n"
	"  -p, --port PORT                                                  [65432]\n"
	"  -c, --connections N      concurrent connections                  [50]\n"
	"  -s, --size BYTES         message size, 16 or more                [128]\n"
	"  -d, --depth N            messages in flight per connection       [1]\n"
	"      --duration SECONDS   the measured interval                   [10]\n"
	"      --warmup SECONDS     load before measuring, not counted      [1]\n"
	"  -t, --threads N          event loops; connections are split      [1]\n"
	"  -r, --rate MSGS          open loop: MSGS messages/s in total, latency measured\n"
	"                           from each message's intended send time  [closed loop]\n"
	"  -e, --engine NAME        epoll or uring                          [epoll]\n"
	"      --reconnect N        churn: each connection echoes N messages, closes cleanly\n"
	"                           (its FIN, then the server's EOF) and a new one takes its\n"
	"                           place; reports conns/s and connect latency (TCP, closed\n"
	"                           loop: not with --udp or --rate)         [off]\n"
	"  -u, --udp                UDP: each connection is a connect()ed UDP socket and each\n"
	"                           message one datagram (--size 16 to 65507, --depth at most\n"
	"                           1024 per socket, epoll engine); loss is counted as a rate,\n"
	"                           damaged, duplicated or misdelivered replies are errors\n"
	"      --udp-timeout T      a datagram unanswered this long is lost and the next sent;\n"
	"                           seconds, or with ms                     [200ms]\n"
	"      --server-pid PID     also report the server's CPU per message (and its\n"
	"                           backend, when its command line names one)\n"
	"      --server-metrics URL also report the server's syscalls and wake-ups per\n"
	"                           message, from echod's http://HOST:PORT/metrics\n"
	"      --cpu-stat LIST      also report these CPUs' time (/proc/stat: user, system,\n"
	"                           irq, softirq, steal) and busy time per message; LIST\n"
	"                           like 0,1 or 0-3 (the CPUs client and server are pinned to)\n"
	"      --label TEXT         copied into the JSON and CSV output\n"
	"      --json, --csv        the result as one JSON object, or a CSV header and row\n"
	"      --progress           the progress line also when stderr is not a terminal\n"
	"                           (a log a soak test samples)\n"
	"  -q, --quiet              no progress line, no per-error details\n"
	"  -h, --help               -V, --version\n"
	"\n"
	"Progress goes to stderr once a second when it is a terminal (or with --progress).\n"
	"Exit status: 0 every echo verified (UDP: every reply; lost datagrams are not errors),\n"
	"1 errors in the echoes, bytes still unanswered when the drain after the stop ended\n"
	"(stalled connections), no message echoed, or cannot connect; 64 bad usage, 69 the\n"
	"engine cannot run here. An open loop that sent less than 99% of --rate within the\n"
	"measured interval warns and marks the result valid=0, but exits 0: what came back\n"
	"was verified.\n";

static volatile sig_atomic_t interrupted;

uint64_t now_ns(void)
{
	struct timespec ts;
	(void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* --- the command line ---------------------------------------------------------------------- */

enum { OPT_DURATION = 256, OPT_WARMUP, OPT_SERVER_PID, OPT_SERVER_METRICS, OPT_LABEL, OPT_JSON,
       OPT_CSV, OPT_UDP_TIMEOUT, OPT_PROGRESS, OPT_CPU_STAT, OPT_RECONNECT };

static const struct option long_opts[] = {
	{ "host", required_argument, NULL, 'H' },
	{ "port", required_argument, NULL, 'p' },
	{ "connections", required_argument, NULL, 'c' },
	{ "size", required_argument, NULL, 's' },
	{ "depth", required_argument, NULL, 'd' },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "warmup", required_argument, NULL, OPT_WARMUP },
	{ "threads", required_argument, NULL, 't' },
	{ "rate", required_argument, NULL, 'r' },
	{ "engine", required_argument, NULL, 'e' },
	{ "udp", no_argument, NULL, 'u' },
	{ "udp-timeout", required_argument, NULL, OPT_UDP_TIMEOUT },
	{ "server-pid", required_argument, NULL, OPT_SERVER_PID },
	{ "server-metrics", required_argument, NULL, OPT_SERVER_METRICS },
	{ "cpu-stat", required_argument, NULL, OPT_CPU_STAT },
	{ "reconnect", required_argument, NULL, OPT_RECONNECT },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "csv", no_argument, NULL, OPT_CSV },
	{ "quiet", no_argument, NULL, 'q' },
	{ "progress", no_argument, NULL, OPT_PROGRESS },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("echoload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see --help)\n", stderr);
	va_end(ap);
	return EXIT_USAGE;
}

static int parse_uint(const char *name, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s == '\0' || *s == '-' || *end != '\0' || errno || v < min || v > max)
		return usage_error("--%s: '%s' is not a whole number from %llu to %llu", name, s,
				   (unsigned long long)min, (unsigned long long)max);
	*out = v;
	return 0;
}

static int parse_u32(const char *name, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v;
	int rc = parse_uint(name, s, min, max, &v);
	*out = (uint32_t)v;
	return rc;
}

/* A non-negative number (seconds, msgs/s); positive unless zero_ok. */
static int parse_real(const char *name, const char *s, bool zero_ok, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (*s == '\0' || *end != '\0' || errno || !isfinite(v) || v < 0 || (v == 0 && !zero_ok) ||
	    v > max)
		return usage_error("--%s: '%s' is not a number %s %g", name, s,
				   zero_ok ? "from 0 to" : "above 0 and at most", max);
	*out = v;
	return 0;
}

/* A time of 1 ms to 60 s: seconds (`0.2`, `0.2s`) or milliseconds (`200ms`). */
static int parse_timeout(const char *name, const char *s, uint64_t *ns)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	double scale = strcmp(end, "ms") == 0 ? 1e6 : 1e9;
	if (*s == '\0' || (*end && strcmp(end, "ms") != 0 && strcmp(end, "s") != 0) || errno ||
	    !isfinite(v) || v * scale < 1e6 || v * scale > 60e9)
		return usage_error("--%s: '%s' is not a time from 1ms to 60s (seconds, or ms)",
				   name, s);
	*ns = (uint64_t)(v * scale + 0.5);
	return 0;
}

#define CPU_NUM_MAX 65535u

/* --cpu-stat: CPU numbers and ranges, comma-separated ("0,1", "0-3,8"), each once. */
static int parse_cpu_list(struct options *o, const char *s)
{
	const char *p = s;
	o->ncpu_stat = 0;
	for (;;) {
		char *end;
		unsigned long a, b;
		errno = 0;
		a = b = strtoul(p, &end, 10);
		if (end != p && *end == '-' && end[1] >= '0' && end[1] <= '9')
			b = strtoul(end + 1, &end, 10);
		if (end == p || *p < '0' || *p > '9' || errno || a > b || b > CPU_NUM_MAX ||
		    (*end != ',' && *end != '\0'))
			return usage_error("--cpu-stat: '%s' is not a list of CPU numbers like 0,1 "
					   "or 0-3", s);
		for (unsigned long n = a; n <= b; n++) {
			for (unsigned i = 0; i < o->ncpu_stat; i++)
				if (o->cpu_stat[i] == n)
					return usage_error("--cpu-stat: CPU %lu is listed twice in '%s'",
							   n, s);
			if (o->ncpu_stat == CPU_STAT_MAX)
				return usage_error("--cpu-stat: more than %u CPUs in '%s'",
						   CPU_STAT_MAX, s);
			o->cpu_stat[o->ncpu_stat++] = (unsigned)n;
		}
		if (*end == '\0')
			return 0;
		p = end + 1;
	}
}

static void defaults(struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->port = "65432";
	o->conns = 50;
	o->size = 128;
	o->depth = 1;
	o->threads = 1;
	o->duration = 10;
	o->warmup = 1;
	o->udp_timeout_ns = 200 * 1000000ull;
}

static int parse_one(struct options *o, int opt, const char *arg)
{
	uint32_t port;
	uint64_t pid;
	char why[400];
	switch (opt) {
	case 'H': o->host = arg; return 0;
	case 'p':
		if (parse_u32("port", arg, 1, 65535, &port))
			return EXIT_USAGE;
		o->port = arg;
		return 0;
	case 'c': return parse_u32("connections", arg, 1, 1000000, &o->conns);
	case 's': return parse_u32("size", arg, 0, MSG_MAX, &o->size); /* min: parse_args */
	case 'd': return parse_u32("depth", arg, 1, 65536, &o->depth);
	case 't': return parse_u32("threads", arg, 1, 1024, &o->threads);
	case OPT_DURATION: return parse_real("duration", arg, false, 1e6, &o->duration);
	case OPT_WARMUP: return parse_real("warmup", arg, true, 1e6, &o->warmup);
	case 'r': return parse_real("rate", arg, false, 1e9, &o->rate);
	case 'e':
		if (strcmp(arg, "epoll") == 0)
			o->engine = ENGINE_EPOLL;
		else if (strcmp(arg, "uring") == 0)
			o->engine = ENGINE_URING;
		else
			return usage_error("--engine: '%s' is not epoll or uring", arg);
		return 0;
	case OPT_SERVER_PID:
		if (parse_uint("server-pid", arg, 1, INT32_MAX, &pid))
			return EXIT_USAGE;
		o->server_pid = (pid_t)pid;
		return 0;
	case OPT_SERVER_METRICS:
		if (scrape_url_parse(arg, &o->metrics, why, sizeof(why)) < 0)
			return usage_error("--server-metrics %s", why);
		o->server_metrics = arg;
		return 0;
	case OPT_CPU_STAT: return parse_cpu_list(o, arg);
	case OPT_RECONNECT: return parse_u32("reconnect", arg, 1, 1000000000, &o->reconnect);
	case 'u': o->udp = true; return 0;
	case OPT_UDP_TIMEOUT: return parse_timeout("udp-timeout", arg, &o->udp_timeout_ns);
	case OPT_LABEL: o->label = arg; return 0;
	case OPT_JSON: o->json = true; return 0;
	case OPT_CSV: o->csv = true; return 0;
	case 'q': o->quiet = true; return 0;
	case OPT_PROGRESS: o->progress = true; return 0;
	}
	return EXIT_USAGE;
}

/* 0 to run; -1 after --help or --version (exit 0); EXIT_USAGE after one line on stderr. */
static int parse_args(struct options *o, int argc, char **argv)
{
	defaults(o);
	opterr = 0; /* our own one-line messages */
	int opt;
	while ((opt = getopt_long(argc, argv, ":H:p:c:s:d:t:r:e:uqhV", long_opts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(usage_text, stdout);
			return -1;
		}
		if (opt == 'V') {
			printf("echoload %s\n", ECHOLOAD_VERSION);
			return -1;
		}
		if (opt == ':')
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		if (opt == '?')
			return optopt ? usage_error("unknown option '-%c'", optopt)
				      : usage_error("unknown option '%s'", argv[optind - 1]);
		if (parse_one(o, opt, optarg))
			return EXIT_USAGE;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (o->json && o->csv)
		return usage_error("--json and --csv: choose one");
	if (o->udp && o->size < MSG_HDR)
		return usage_error("--size %u: with --udp each datagram carries a %u-byte header "
				   "(socket, sequence, check), so --size must be %u or more",
				   o->size, MSG_HDR, MSG_HDR);
	if (o->size < MSG_HDR)
		return usage_error("--size: '%u' is not a whole number from %u to %u", o->size,
				   MSG_HDR, MSG_MAX);
	if (o->udp && o->size > UDP_MSG_MAX)
		return usage_error("--size %u: a UDP datagram carries at most %u bytes", o->size,
				   UDP_MSG_MAX);
	if (o->udp && o->depth > UDP_DEPTH_MAX)
		return usage_error("--depth %u: with --udp at most %u datagrams per socket", o->depth,
				   UDP_DEPTH_MAX);
	if (o->udp && o->engine == ENGINE_URING)
		return usage_error("--udp runs on the epoll engine only; drop --engine uring");
	if (o->reconnect && o->udp)
		return usage_error("--reconnect opens and closes TCP connections; --udp sockets have "
				   "none: choose one");
	if (o->reconnect && o->rate > 0)
		return usage_error("--reconnect runs a closed loop; drop --rate (or --reconnect)");
	if (o->threads > o->conns)
		return usage_error("--threads %u is more than --connections %u", o->threads,
				   o->conns);
	return 0;
}

/* --- connecting ---------------------------------------------------------------------------- */

static void host_port(const struct options *o, char *buf, size_t len)
{
	snprintf(buf, len, strchr(o->host, ':') ? "[%s]:%s" : "%s:%s", o->host, o->port);
}

/* A connected nonblocking socket, or -1 with *err set; waits at most CONNECT_TIMEOUT_MS. */
static int connect_one(const struct options *o, const struct addrinfo *ai, int *err)
{
	if (o->udp)
		return udp_socket(ai, o->size, o->depth, err);
	int fd = connect_within(ai, CONNECT_TIMEOUT_MS, err);
	if (fd < 0)
		return -1;
	/* echo traffic is request/response: Nagle would hold pipelined messages back */
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static void raise_fd_limit(uint32_t conns)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)conns + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			perror("echoload: setrlimit(RLIMIT_NOFILE)");
	}
}

/* Connects all; the first address that works is used for every connection, and is kept in
 * peer (--reconnect's new connections go there too). 0 or -1. */
static int connect_all(const struct options *o, struct conn *conns,
		       struct sockaddr_storage *peer, socklen_t *peer_len)
{
	char where[300];
	host_port(o, where, sizeof(where));
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = o->udp ? SOCK_DGRAM : SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	int gai = getaddrinfo(o->host, o->port, &hints, &res);
	if (gai != 0) {
		fprintf(stderr, "echoload: cannot resolve %s: %s\n", o->host, gai_strerror(gai));
		return -1;
	}
	const struct addrinfo *ai = res;
	int err = 0;
	for (uint32_t i = 0; i < o->conns; i++) {
		int fd = connect_one(o, ai, &err);
		while (fd < 0 && i == 0 && ai->ai_next) {
			ai = ai->ai_next;
			fd = connect_one(o, ai, &err);
		}
		if (fd < 0) {
			fprintf(stderr, "echoload: cannot connect to %s: %s", where, strerror(err));
			if (i > 0)
				fprintf(stderr, " (connection %u of %u)", i + 1, o->conns);
			fputc('\n', stderr);
			freeaddrinfo(res);
			return -1;
		}
		conns[i].fd = fd;
		conns[i].id = i;
	}
	memcpy(peer, ai->ai_addr, ai->ai_addrlen);
	*peer_len = ai->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* --- CPU time ------------------------------------------------------------------------------ */

/* In nanoseconds, all threads: getrusage's figures are sampled at the tick on many kernels. */
static double self_cpu_s(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return -1;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The whole of a small /proc file in buf (NUL-terminated); its length, or -1 with errno. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	int err = errno;
	close(fd);
	if (n < 0) {
		errno = err;
		return -1;
	}
	buf[n] = '\0';
	return n;
}

/* Run time of all the process's threads in seconds, from each /proc/PID/task/TID/schedstat:
 * the scheduler's own nanoseconds (/proc/PID/stat has 10 ms ticks, which read 0 for a short
 * light run, and /proc/PID/schedstat is the main thread's alone). A thread that ends between
 * the two samples takes its time with it: echod's live as long as it does. -1 if unreadable
 * (a kernel without CONFIG_SCHED_INFO has no schedstat). */
static double proc_sched_s(pid_t pid, int *err)
{
	char path[96], buf[128];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d) {
		*err = errno;
		return -1;
	}
	uint64_t ns = 0;
	int threads = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/schedstat", (int)pid, e->d_name);
		if (read_small(path, buf, sizeof(buf)) < 0) {
			if (errno == ENOENT || errno == ESRCH)
				continue; /* the thread ended after readdir saw it */
			*err = errno;
			closedir(d);
			return -1;
		}
		char *end;
		unsigned long long v = strtoull(buf, &end, 10);
		if (end == buf) {
			*err = EINVAL;
			closedir(d);
			return -1;
		}
		ns += v;
		threads++;
	}
	closedir(d);
	*err = ESRCH;
	return threads ? (double)ns / 1e9 : -1;
}

static long user_hz(void)
{
	long hz = sysconf(_SC_CLK_TCK);
	return hz > 0 ? hz : 100;
}

/* utime + stime of all the process's threads, from /proc/PID/stat, in ticks; -1 if
 * unreadable. Only where schedstat is missing. */
static double proc_cpu_s(pid_t pid, int *err)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	ssize_t n = read_small(path, buf, sizeof(buf));
	*err = n < 0 ? errno : EINVAL;
	if (n <= 0)
		return -1;
	/* the command name may hold spaces and parentheses: fields resume after the last ')' */
	const char *p = strrchr(buf, ')');
	unsigned long ut, st;
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
			 &st) != 2)
		return -1;
	return (double)(ut + st) / (double)user_hz();
}

/* The listed CPUs' lines of /proc/stat (user nice system idle iowait irq softirq steal, in
 * USER_HZ ticks). 0, or -1 with the first missing CPU in *missing (-1: unreadable). */
static int read_cpu_stat(const struct options *o, struct cpu_ticks *out, long *missing)
{
	*missing = -1;
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return -1;
	bool found[CPU_STAT_MAX] = { false };
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0 && strncmp(line, "cpu", 3) == 0) {
		unsigned n;
		unsigned long long v[CPU_FIELDS] = { 0 };
		if (sscanf(line, "cpu%u %llu %llu %llu %llu %llu %llu %llu %llu", &n, &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9)
			continue; /* the "cpu " line: the sum of all */
		for (unsigned i = 0; i < o->ncpu_stat; i++)
			if (o->cpu_stat[i] == n) {
				for (int k = 0; k < CPU_FIELDS; k++)
					out[i].t[k] = v[k];
				found[i] = true;
			}
	}
	free(line);
	fclose(f);
	for (unsigned i = 0; i < o->ncpu_stat; i++)
		if (!found[i]) {
			*missing = o->cpu_stat[i];
			return -1;
		}
	return 0;
}

struct cpu_sample {
	double self, server;
	struct cpu_ticks cpu[CPU_STAT_MAX];
	bool cpu_ok;
};

static void cpu_sample(const struct options *o, bool server_ticks, struct cpu_sample *s)
{
	int err;
	long missing;
	s->self = self_cpu_s();
	s->server = !o->server_pid ? -1
		    : server_ticks ? proc_cpu_s(o->server_pid, &err)
				   : proc_sched_s(o->server_pid, &err);
	s->cpu_ok = o->ncpu_stat && read_cpu_stat(o, s->cpu, &missing) == 0;
}

/* --- the run ------------------------------------------------------------------------------- */

struct run {
	struct options opt;
	struct conn *conns;
	struct worker *w;
	pthread_t *tid;
	uint32_t nstarted;
	_Atomic uint64_t stop_at;
	atomic_bool abort_run;
	uint64_t t_begin, t_meas;
	struct cpu_sample cpu0, cpu1;
	uint64_t cpu0_at, cpu1_at;
	bool server_ticks;    /* no schedstat here: the server's CPU time in /proc/PID/stat ticks */
	struct scrape scrape0, scrape1; /* --server-metrics at the start and end of the interval */
	bool scraped0, scraped1;
	char timestamp[32];
	struct sockaddr_storage peer; /* the server's address, as connect_all found it */
	socklen_t peer_len;
};

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	/* open loop: latency counts from the intended send time, so oversleeping (50 µs of
	 * default timer slack) would be charged to the server */
	if (w->opt->rate > 0 && prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) < 0)
		fprintf(stderr, "echoload: prctl(PR_SET_TIMERSLACK): %s\n", strerror(errno));
	if (w->opt->udp)
		udp_run(w);
	else if (w->opt->engine == ENGINE_URING)
		uring_run(w);
	else
		epoll_run(w);
	return NULL;
}

static int setup_workers(struct run *r)
{
	const struct options *o = &r->opt;
	r->w = calloc(o->threads, sizeof(*r->w));
	r->tid = calloc(o->threads, sizeof(*r->tid));
	if (!r->w || !r->tid) {
		fprintf(stderr, "echoload: out of memory\n");
		return -1;
	}
	for (uint32_t i = 0; i < o->threads; i++) {
		struct worker *w = &r->w[i];
		uint32_t from = (uint32_t)((uint64_t)o->conns * i / o->threads);
		uint32_t to = (uint32_t)((uint64_t)o->conns * (i + 1) / o->threads);
		w->index = i;
		w->opt = o;
		w->conns = r->conns + from;
		w->nconns = to - from;
		w->t_begin = r->t_begin;
		w->t_meas = r->t_meas;
		w->stop_at = &r->stop_at;
		w->abort_run = &r->abort_run;
		w->peer = r->peer;
		w->peer_len = r->peer_len;
		if (o->reconnect)
			reconnect_setup(w);
		if (worker_setup(w) < 0) {
			fprintf(stderr, "echoload: %s\n", w->why);
			return -1;
		}
	}
	return 0;
}

/* Workers get no SIGINT/SIGTERM: the main thread turns them into an early stop. */
static int start_workers(struct run *r)
{
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	int err = pthread_sigmask(SIG_BLOCK, &block, &old);
	if (err) {
		fprintf(stderr, "echoload: pthread_sigmask: %s\n", strerror(err));
		return -1;
	}
	for (; r->nstarted < r->opt.threads; r->nstarted++) {
		err = pthread_create(&r->tid[r->nstarted], NULL, worker_main, &r->w[r->nstarted]);
		if (err) {
			fprintf(stderr, "echoload: pthread_create: %s\n", strerror(err));
			break;
		}
	}
	int restore = pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (restore)
		fprintf(stderr, "echoload: pthread_sigmask: %s\n", strerror(restore));
	if (err || restore) {
		atomic_store(&r->abort_run, true); /* the started ones stop; main joins them */
		return -1;
	}
	return 0;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / NS_PER_S), .tv_nsec = (long)(t % NS_PER_S) };
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL); /* EINTR: the loop re-checks */
}

/* The workers' published counters and latencies, summed. */
static void collect_published(struct run *r, struct counters *sum, struct hist *lat)
{
	memset(sum, 0, sizeof(*sum));
	hist_reset(lat);
	for (uint32_t i = 0; i < r->opt.threads; i++) {
		struct worker *w = &r->w[i];
		pthread_mutex_lock(&w->pub_lock);
		struct counters c = w->pub_cnt;
		hist_merge(lat, &w->pub_lat);
		pthread_mutex_unlock(&w->pub_lock);
		sum->msgs_all += c.msgs_all;
		sum->rx_bytes += c.rx_bytes;
		sum->errors += c.errors;
		sum->dg_lost += c.dg_lost;
		sum->conns_closed += c.conns_closed;
	}
}

struct progress {
	struct counters last;
	uint64_t last_at;
	struct hist lat;
};

static void show_progress(struct run *r, struct progress *p, uint64_t now)
{
	struct counters c;
	collect_published(r, &c, &p->lat);
	double dt = (double)(now - p->last_at) / 1e9;
	char p99[32] = "-";
	if (p->lat.count)
		snprintf(p99, sizeof(p99), "%.1f", (double)hist_percentile(&p->lat, 99) / 1000.0);
	char lost[48] = "";
	if (r->opt.udp)
		snprintf(lost, sizeof(lost), "  lost %llu", (unsigned long long)c.dg_lost);
	else if (r->opt.reconnect)
		snprintf(lost, sizeof(lost), "  %.0f conns/s",
			 (double)(c.conns_closed - p->last.conns_closed) / dt);
	fprintf(stderr, "echoload: %6.1f s  %10.0f msgs/s  %8.2f MB/s  p99 %s µs  errors %llu  "
		"msgs %llu%s%s\n", (double)(now - r->t_begin) / 1e9,
		(double)(c.msgs_all - p->last.msgs_all) / dt,
		(double)(c.rx_bytes - p->last.rx_bytes) / dt / 1e6, p99,
		(unsigned long long)c.errors, (unsigned long long)c.msgs_all, lost,
		now < r->t_meas ? "  (warm-up)" : "");
	p->last = c;
	p->last_at = now;
}

/* echod's counters at one edge of the measured interval (edge: "start" or "end"). A scrape
 * that fails costs one warning line and the server-side figures, not the run. */
static bool server_scrape(const struct options *o, struct scrape *s, const char *edge)
{
	char why[256];
	if (scrape_fetch(&o->metrics, s, why, sizeof(why)) == 0)
		return true;
	fprintf(stderr, "echoload: warning: --server-metrics %s at the %s of the measured "
		"interval: %s; no server-side counts in the result\n",
		o->server_metrics, edge, why);
	return false;
}

/* The main thread while workers run: CPU samples and server scrapes at the start and end of
 * the measured interval, a progress line per second on a terminal, and Ctrl-C as an early
 * stop. A scrape that hangs delays only the samples after it (by at most SCRAPE_TIMEOUT_MS):
 * the workers keep their own time. */
static void supervise(struct run *r)
{
	bool show = !r->opt.quiet && (r->opt.progress || isatty(STDERR_FILENO));
	struct progress p = { .last_at = r->t_begin };
	if (show && hist_init(&p.lat, r->w[0].lat.max_trackable, r->w[0].lat.bits) < 0)
		show = false;
	uint64_t next_line = r->t_begin + NS_PER_S;
	bool started = false;
	for (;;) {
		uint64_t now = now_ns(), stop = atomic_load(&r->stop_at);
		if (interrupted && now < stop)
			atomic_store(&r->stop_at, stop = now);
		if (atomic_load(&r->abort_run))
			break;
		if (!started && (now >= r->t_meas || now >= stop)) {
			cpu_sample(&r->opt, r->server_ticks, &r->cpu0);
			r->cpu0_at = now;
			if (r->opt.server_metrics)
				r->scraped0 = server_scrape(&r->opt, &r->scrape0, "start");
			started = true;
			continue; /* the scrape took time: look at the clock again */
		}
		if (now >= stop) {
			cpu_sample(&r->opt, r->server_ticks, &r->cpu1);
			r->cpu1_at = now;
			if (r->scraped0) /* a difference needs both ends */
				r->scraped1 = server_scrape(&r->opt, &r->scrape1, "end");
			break;
		}
		if (show && now >= next_line) {
			show_progress(r, &p, now);
			next_line += NS_PER_S;
		}
		uint64_t next = now + 100 * 1000000ull; /* notices Ctrl-C and failures */
		if (!started && r->t_meas < next)
			next = r->t_meas;
		if (stop < next)
			next = stop;
		if (show && next_line < next)
			next = next_line;
		sleep_until(next);
	}
	if (show)
		hist_free(&p.lat);
}

/* --- the result ---------------------------------------------------------------------------- */

static void sum_counters(struct counters *a, const struct counters *b)
{
	a->msgs += b->msgs;
	a->msgs_all += b->msgs_all;
	a->rx_bytes += b->rx_bytes;
	a->errors += b->errors;
	a->lost_bytes += b->lost_bytes;
	a->lost_msgs += b->lost_msgs;
	a->dup_bytes += b->dup_bytes;
	a->dup_msgs += b->dup_msgs;
	a->corrupt_bytes += b->corrupt_bytes;
	a->reordered += b->reordered;
	a->conn_errors += b->conn_errors;
	a->in_flight += b->in_flight;
	a->in_flight_partly += b->in_flight_partly;
	a->unanswered_bytes += b->unanswered_bytes;
	a->stalled += b->stalled;
	a->slots_due += b->slots_due;
	a->sent_in_interval += b->sent_in_interval;
	a->never_sent += b->never_sent;
	a->dg_sent += b->dg_sent;
	a->dg_received += b->dg_received;
	a->dg_lost += b->dg_lost;
	a->dg_late += b->dg_late;
	a->misdelivered += b->misdelivered;
	a->conns_opened += b->conns_opened;
	a->conns_closed += b->conns_closed;
	a->conns_done += b->conns_done;
	a->connect_errors += b->connect_errors;
}

/* The server-side figures: NAN unless both scrapes worked; a family missing from them (an
 * older echod, or a malformed line) is named in one warning. */
static void server_work_of(const struct run *r, uint64_t msgs, struct server_work *w)
{
	*w = (struct server_work){ NAN, NAN, NAN };
	if (!r->scraped1)
		return;
	scrape_work(&r->scrape0, &r->scrape1, msgs, w);
	char names[256];
	if (scrape_unusable(&r->scrape0, &r->scrape1, names, sizeof(names)))
		fprintf(stderr, "echoload: warning: --server-metrics %s: no usable %s (absent, "
			"malformed or decreasing); those figures are unknown\n",
			r->opt.server_metrics, names);
}

static void describe_system(struct result *res, const struct run *r)
{
	struct utsname u;
	snprintf(res->kernel, sizeof(res->kernel), "%s", uname(&u) == 0 ? u.release : "unknown");
	snprintf(res->timestamp, sizeof(res->timestamp), "%s", r->timestamp);
}

/* Which listed CPUs are echoload's and which the server's: in one's affinity and not in the
 * other's (bench/compare pins them apart). Neither when both may run there, or unknown. */
static void cpu_sides(const struct options *o, struct result *res)
{
	cpu_set_t self, server;
	if (!o->server_pid || sched_getaffinity(0, sizeof(self), &self) < 0 ||
	    sched_getaffinity(o->server_pid, sizeof(server), &server) < 0)
		return;
	for (unsigned i = 0; i < o->ncpu_stat; i++) {
		unsigned n = o->cpu_stat[i];
		if (n >= CPU_SETSIZE)
			continue;
		bool mine = CPU_ISSET(n, &self), its = CPU_ISSET(n, &server);
		res->cpu_client[i] = mine && !its;
		res->cpu_server[i] = its && !mine;
	}
}

/* --cpu-stat: each CPU's ticks over the measured interval. */
static void cpu_deltas(const struct run *r, struct result *res)
{
	res->tick_s = 1.0 / (double)user_hz();
	res->cpu_ok = r->cpu0.cpu_ok && r->cpu1.cpu_ok;
	for (unsigned i = 0; res->cpu_ok && i < r->opt.ncpu_stat; i++)
		for (int k = 0; k < CPU_FIELDS; k++) {
			uint64_t a = r->cpu0.cpu[i].t[k], b = r->cpu1.cpu[i].t[k];
			res->cpu[i].t[k] = b > a ? b - a : 0; /* iowait may go backwards */
		}
	cpu_sides(&r->opt, res);
}

static size_t append(char *buf, size_t len, size_t at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static size_t append(char *buf, size_t len, size_t at, const char *fmt, ...)
{
	if (at >= len)
		return at;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + at, len - at, fmt, ap);
	va_end(ap);
	return n < 0 ? at : at + (size_t)n;
}

/* The exit status the result implies; when it is 1, one line that says everything that was
 * wrong. A short open loop only warns: every echo that came was verified, but the numbers are
 * not at the rate asked for, and valid=0 says so to scripts. */
static int verdict(const struct result *res)
{
	const struct options *o = res->opt;
	const struct counters *c = &res->cnt;
	char why[1024], a[32], b[32], d[32];
	size_t n = 0;
	double pct = rate_achieved_pct(res);
	if (o->rate > 0 && c->msgs && !(pct >= RATE_VALID_PCT))
		fprintf(stderr, "echoload: warning: the open loop sent only %.1f%% of --rate within "
			"the measured interval: %s messages went out in it, %s were due, %s never "
			"went out; the result is marked valid=0\n", isfinite(pct) ? pct : 0.0,
			grouped(c->sent_in_interval, a, sizeof(a)), grouped(c->slots_due, b, sizeof(b)),
			grouped(c->never_sent, d, sizeof(d)));
	if (c->errors && o->udp)
		n = append(why, sizeof(why), n, "%s errors in the replies (corrupted %llu B, "
			   "duplicated %llu, misdelivered %llu, sockets failed %llu)",
			   grouped(c->errors, a, sizeof(a)), (unsigned long long)c->corrupt_bytes,
			   (unsigned long long)c->dup_msgs, (unsigned long long)c->misdelivered,
			   (unsigned long long)c->conn_errors);
	else if (c->errors)
		n = append(why, sizeof(why), n, "%s errors in the echoes (lost %llu B, duplicated "
			   "%llu B, corrupted %llu B, reordered %llu, connections failed %llu)",
			   grouped(c->errors, a, sizeof(a)), (unsigned long long)c->lost_bytes,
			   (unsigned long long)c->dup_bytes, (unsigned long long)c->corrupt_bytes,
			   (unsigned long long)c->reordered, (unsigned long long)c->conn_errors);
	if (c->connect_errors)
		n = append(why, sizeof(why), n, "; %s connect%s failed (first: %s%s)",
			   grouped(c->connect_errors, a, sizeof(a)), c->connect_errors == 1 ? "" : "s",
			   strerror(res->connect_err), res->connect_err == EADDRNOTAVAIL
				   ? ": no local port left, see TIME_WAIT in echoload(1)" : "");
	if (c->unanswered_bytes) {
		uint64_t partly = c->in_flight_partly, none = c->in_flight - partly;
		n = append(why, sizeof(why), n, "%s", n ? "; " : "");
		if (partly)
			n = append(why, sizeof(why), n, "%s message%s came back partly echoed%s",
				   grouped(partly, a, sizeof(a)), partly == 1 ? "" : "s",
				   none ? " and " : "");
		if (none)
			n = append(why, sizeof(why), n, "%s message%s never echoed",
				   grouped(none, a, sizeof(a)), none == 1 ? " was" : "s were");
		n = append(why, sizeof(why), n, ": %s bytes never answered (%s connection%s "
			   "stalled: open, and still owing echoes when the drain ended)",
			   grouped(c->unanswered_bytes, a, sizeof(a)),
			   grouped(c->stalled, b, sizeof(b)), c->stalled == 1 ? "" : "s");
	}
	if (c->msgs == 0)
		n = append(why, sizeof(why), n, "%sno message was echoed intact in the measured "
			   "interval", n ? "; " : "");
	if (n == 0)
		return 0;
	fprintf(stderr, "echoload: FAILED: %s\n", why);
	return 1;
}

/* Prints the result; returns the exit status it implies. */
static int finish_run(struct run *r)
{
	const struct options *o = &r->opt;
	for (uint32_t i = 0; i < o->threads; i++)
		if (r->w[i].status) {
			fprintf(stderr, "echoload: %s\n", r->w[i].why);
			return r->w[i].status;
		}
	static struct result res; /* static: large, and zeroed */
	res = (struct result){ .opt = o, .lat = &r->w[0].lat,
			       .lag = o->rate > 0 ? &r->w[0].lag : NULL,
			       .conn_lat = o->reconnect ? &r->w[0].conn_lat : NULL };
	for (uint32_t i = 0; i < o->threads; i++) {
		sum_counters(&res.cnt, &r->w[i].cnt);
		if (i)
			hist_merge(&r->w[0].lat, &r->w[i].lat);
		if (i && o->rate > 0)
			hist_merge(&r->w[0].lag, &r->w[i].lag);
		if (i && o->reconnect)
			hist_merge(&r->w[0].conn_lat, &r->w[i].conn_lat);
		if (!res.connect_err)
			res.connect_err = r->w[i].connect_err;
	}
	uint64_t stop = atomic_load(&r->stop_at);
	res.measured_s = stop > r->t_meas ? (double)(stop - r->t_meas) / 1e9 : 0;
	res.client_cpu_s = r->cpu1.self - r->cpu0.self;
	res.server_cpu_s = r->cpu0.server >= 0 && r->cpu1.server >= 0
				   ? r->cpu1.server - r->cpu0.server : -1;
	res.client_cpu_res_s = 1e-9;
	res.server_cpu_res_s = r->server_ticks ? 1.0 / (double)user_hz() : 1e-9;
	cpu_deltas(r, &res);
	server_work_of(r, res.cnt.msgs, &res.work);
	describe_system(&res, r);
	if (o->json)
		report_json(&res);
	else if (o->csv)
		report_csv(&res);
	else
		report_human(&res);
	fflush(stdout);
	return verdict(&res);
}

static void cleanup(struct run *r)
{
	for (uint32_t i = 0; i < r->nstarted; i++)
		pthread_join(r->tid[i], NULL);
	if (r->w)
		for (uint32_t i = 0; i < r->opt.threads; i++)
			if (r->w[i].conns)
				worker_teardown(&r->w[i]);
	for (uint32_t i = 0; r->conns && i < r->opt.conns; i++)
		if (r->conns[i].fd >= 0)
			close(r->conns[i].fd);
	free(r->conns);
	free(r->w);
	free(r->tid);
	msg_teardown();
}

static void start_clock(struct run *r)
{
	time_t t = time(NULL);
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(r->timestamp, sizeof(r->timestamp),
					     "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(r->timestamp, sizeof(r->timestamp), "unknown");
	r->t_begin = now_ns() + START_DELAY_NS;
	r->t_meas = r->t_begin + (uint64_t)(r->opt.warmup * 1e9);
	atomic_store(&r->stop_at, r->t_meas + (uint64_t)(r->opt.duration * 1e9));
}

/* The server's backend when its command line names one (`--backend X`, `--backend=X`,
 * `-b X`), so results say what was measured without a --label. */
static void learn_server_backend(struct options *o)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)o->server_pid);
	ssize_t n = read_small(path, buf, sizeof(buf));
	if (n <= 0)
		return;
	const char *value = NULL;
	for (const char *a = buf; a < buf + n; a += strlen(a) + 1) {
		const char *next = a + strlen(a) + 1;
		if (strncmp(a, "--backend=", 10) == 0)
			value = a + 10;
		else if ((strcmp(a, "--backend") == 0 || strcmp(a, "-b") == 0) && next < buf + n)
			value = next;
	}
	if (value && *value)
		snprintf(o->server_backend, sizeof(o->server_backend), "%s", value);
}

/* *server_ticks: the server's CPU time can only be had in ticks here (no schedstat). */
static int preflight(const struct options *o, bool *server_ticks)
{
	char why[256];
	if (o->engine == ENGINE_URING && uring_probe(why, sizeof(why)) < 0) {
		fprintf(stderr, "echoload: %s\n", why);
		return EXIT_UNAVAILABLE;
	}
	int err;
	if (o->server_pid && proc_sched_s(o->server_pid, &err) < 0) {
		if (proc_cpu_s(o->server_pid, &err) < 0)
			return usage_error("--server-pid %d: cannot read /proc/%d/stat: %s",
					   (int)o->server_pid, (int)o->server_pid, strerror(err));
		*server_ticks = true;
	}
	long missing;
	static struct cpu_ticks probe[CPU_STAT_MAX];
	if (o->ncpu_stat && read_cpu_stat(o, probe, &missing) < 0) {
		if (missing >= 0)
			return usage_error("--cpu-stat: no CPU %ld in /proc/stat", missing);
		return usage_error("--cpu-stat: cannot read /proc/stat: %s", strerror(errno));
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct run r; /* static: zeroed, and large */
	int rc = parse_args(&r.opt, argc, argv);
	if (rc)
		return rc < 0 ? 0 : rc;
	if ((rc = preflight(&r.opt, &r.server_ticks)) != 0)
		return rc;
	if (r.opt.server_pid)
		learn_server_backend(&r.opt);
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESETHAND };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 ||
	    signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		perror("echoload: sigaction");
		return 1;
	}
	raise_fd_limit(r.opt.conns);
	r.conns = calloc(r.opt.conns, sizeof(*r.conns));
	if (!r.conns || msg_setup(r.opt.size) < 0) {
		fprintf(stderr, "echoload: out of memory\n");
		free(r.conns);
		return 1;
	}
	for (uint32_t i = 0; i < r.opt.conns; i++)
		r.conns[i].fd = -1;
	rc = 1;
	if (connect_all(&r.opt, r.conns, &r.peer, &r.peer_len) == 0) {
		start_clock(&r);
		if (setup_workers(&r) == 0 && start_workers(&r) == 0) {
			supervise(&r);
			for (; r.nstarted > 0; r.nstarted--)
				pthread_join(r.tid[r.nstarted - 1], NULL);
			rc = finish_run(&r);
		}
	}
	atomic_store(&r.abort_run, true);
	cleanup(&r);
	return rc;
}
