/* test_cluster.c - echod scaled out behind the real HAProxy, on hosts simulated by network
 * namespaces (bench/cluster builds them): load spreads over the hosts, a crashed host costs
 * only its own connections, a draining host finishes its connections while HAProxy moves new
 * ones elsewhere, a new host joins, a host whose link goes down is taken out.
 *
 * One cluster serves the whole group: 3 hosts and a spare, HAProxy checking /readyz every
 * 250 ms (fall 2, rise 2), echod with --drain-grace 2. Each test starts from a healed cluster
 * (hosts 1-3 running and UP, the spare stopped) and breaks one thing. The test process talks
 * inside the namespaces with sockets it opens there (setns around socket()), and to HAProxy
 * over its stats socket, a file. Skips in one line without root, iproute2, haproxy or network
 * namespaces. ECHOD_CLUSTER_KEEP=1 keeps the cluster's directory (logs, configuration). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib_backends.h"
#include "lib_haproxy.h"

#define HOSTS 3
#define SPARE (HOSTS + 1)
#define INTER_MS 250
#define FALL 2
#define RISE 2
#define GRACE_MS 2000 /* echod's --drain-grace */
#define FRONT "10.200.0.3"
#define ECHO_PORT 7
#define METRICS_PORT 9862

static char dir[64];        /* the cluster's directory (bench/cluster up --dir) */
static char name[32];       /* its namespaces' prefix, from DIR/cluster.env */
static char build_dir[256]; /* where echod and echoload are */

static void host_addr(int i, char *buf, size_t len)
{
	snprintf(buf, len, "10.200.0.%d", 10 + i);
}

static void ns_name(const char *machine, char *buf, size_t len)
{
	snprintf(buf, len, "%s-%s", name, machine);
}

/* bench/cluster VERB DIR [ARG]: 0 or its exit status (its output printed on failure). */
static int cluster(const char *verb, const char *arg)
{
	const char *argv[] = { "bench/cluster", verb, dir, arg, NULL };
	struct child c;
	int rc = proc_run(argv, 30000, &c);
	if (rc != 0) {
		char *log = proc_log(&c), *out = proc_out(&c);
		print_error("bench/cluster %s %s: exit %d\n%s%s", verb, arg ? arg : "", rc, out, log);
		free(log);
		free(out);
	}
	proc_cleanup(&c);
	return rc;
}

/* A TCP socket connected to addr:port from inside the namespace of `machine` (the socket keeps
 * its namespace after this thread returns to its own), with 2 s send/receive timeouts. */
static int ns_connect(const char *machine, const char *addr, int port)
{
	char ns[64], path[96];
	ns_name(machine, ns, sizeof(ns));
	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	int target = open(path, O_RDONLY | O_CLOEXEC);
	int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (target < 0 || self < 0 || setns(target, CLONE_NEWNET) < 0) {
		print_error("setns %s: %s\n", path, strerror(errno));
		abort();
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (setns(self, CLONE_NEWNET) < 0)
		abort(); /* the rest of the process would run in the wrong network */
	close(target);
	close(self);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, addr, &a.sin_addr);
	if (connect_retry(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A new client connection through HAProxy echoes 64 bytes back exactly. */
static bool probe(void)
{
	int fd = ns_connect("cl", FRONT, ECHO_PORT);
	if (fd < 0)
		return false;
	uint8_t out[64], back[64];
	pattern_fill(out, sizeof(out), (uint32_t)now_ms());
	bool ok = send_all(fd, out, sizeof(out)) == 0 &&
		  recv_exact(fd, back, sizeof(back)) == (ssize_t)sizeof(back) &&
		  memcmp(out, back, sizeof(out)) == 0;
	close(fd);
	return ok;
}

/* The whole HTTP response to GET path on host i's metrics port, or NULL (malloc'd). */
static char *host_get(int i, const char *path)
{
	char addr[32];
	host_addr(i, addr, sizeof(addr));
	int fd = ns_connect("cl", addr, METRICS_PORT);
	if (fd < 0)
		return NULL;
	char req[128];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	if (send_all(fd, req, (size_t)n) == 0)
		len = recv_to_eof(fd, buf, cap - 1);
	close(fd);
	buf[len] = '\0';
	if (!len) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* HTTP status of host i's /readyz; -1 without an answer. */
static int readyz(int i)
{
	char *r = host_get(i, "/readyz");
	int status = r && strncmp(r, "HTTP/1.", 7) == 0 ? atoi(r + 9) : -1;
	free(r);
	return status;
}

/* echod_connections_accepted_total of host i, summed over its workers; -1 without an answer. */
static double accepted(int i)
{
	char *r = host_get(i, "/metrics");
	if (!r)
		return -1;
	double sum = 0;
	static const char key[] = "\nechod_connections_accepted_total";
	for (const char *p = strstr(r, key); p; p = strstr(p + 1, key)) {
		const char *v = strchr(p + 1, ' ');
		sum += v ? strtod(v, NULL) : 0;
	}
	free(r);
	return sum;
}

/* HAProxy's view of server svname ("h1"): its status into status, its open sessions as the
 * result (-1: no answer). */
static int server_stat(const char *svname, char *status, size_t len)
{
	char sock[128];
	snprintf(sock, sizeof(sock), "%.64s/haproxy.sock", dir);
	return haproxy_server(sock, "echod", svname, status, len);
}

/* Milliseconds until HAProxy shows svname with status want ("UP", "DOWN"; not "UP 1/2", which
 * is UP with a failed check, going down),
 * polled every 10 ms; -1 if not within timeout_ms. */
static long wait_status(const char *svname, const char *want, long timeout_ms)
{
	uint64_t t0 = now_ms();
	char st[32] = "";
	while ((long)(now_ms() - t0) <= timeout_ms) {
		if (server_stat(svname, st, sizeof(st)) >= 0 && strcmp(st, want) == 0)
			return (long)(now_ms() - t0);
		usleep(10000);
	}
	print_error("%s: still %s after %ld ms (waited for %s)\n", svname, st, timeout_ms, want);
	return -1;
}

static pid_t host_pid(int i)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/h%d.pid", dir, i);
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

/* Alive, and not a zombie: the script that started it has exited, so it is reparented, and
 * whoever reaps it may take a while; a zombie answers kill(pid, 0) like a live process. */
static bool alive(pid_t pid)
{
	char path[64], stat[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(stat, 1, sizeof(stat) - 1, f);
	fclose(f);
	stat[n] = '\0';
	const char *p = strrchr(stat, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static bool host_running(int i)
{
	pid_t pid = host_pid(i);
	return pid > 0 && alive(pid);
}

/* `ip -n NS link set dev eth0 up|down` on host i */
static int host_link(int i, const char *state)
{
	char ns[64], machine[16];
	snprintf(machine, sizeof(machine), "h%d", i);
	ns_name(machine, ns, sizeof(ns));
	const char *argv[] = { "ip", "-n", ns, "link", "set", "dev", "eth0", state, NULL };
	struct child c;
	int rc = proc_run(argv, 5000, &c);
	proc_cleanup(&c);
	return rc;
}

/* echoload from the client namespace through HAProxy, in the background (--json on stdout). */
static void echoload_start(struct child *c, int conns, const char *seconds)
{
	char ns[64], nconns[16];
	ns_name("cl", ns, sizeof(ns));
	snprintf(nconns, sizeof(nconns), "%d", conns);
	char bin[320];
	snprintf(bin, sizeof(bin), "%s/echoload", build_dir);
	const char *argv[] = { "ip", "netns", "exec", ns, bin, "--host", FRONT, "--port", "7",
			       "--connections", nconns, "--duration", seconds, "--warmup", "0.2",
			       "--json", "--quiet", NULL };
	assert_int_equal(proc_spawn(c, argv), 0);
}

/* Its exit status; its JSON result in *json (malloc'd); echoload's output printed when the
 * status is not the expected one. */
static int echoload_end(struct child *c, char **json, int expected)
{
	int rc = proc_wait(c, 20000);
	*json = proc_out(c);
	if (rc != expected) {
		char *log = proc_log(c);
		print_message("  echoload exit %d: %s%s", rc, *json, log);
		free(log);
	}
	proc_cleanup(c);
	return rc;
}

static double jnum(const char *json, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\"", key);
	return test_field(json, k);
}

/* No byte was damaged, duplicated or reordered on any connection. */
static void assert_bytes_intact(const char *json)
{
	assert_true(jnum(json, "msgs") > 0);
	assert_true(jnum(json, "corrupt_bytes") == 0);
	assert_true(jnum(json, "dup_bytes") == 0);
	assert_true(jnum(json, "reordered") == 0);
}

/* Every test starts here: hosts 1-3 running, linked and UP; the spare stopped and DOWN. */
static int heal(void **state)
{
	(void)state;
	for (int i = 1; i <= HOSTS; i++) {
		if (host_link(i, "up") != 0)
			return -1;
		if (!host_running(i) && cluster("start-host", (char[]){ (char)('0' + i), 0 }) != 0)
			return -1;
	}
	if (host_running(SPARE)) {
		pid_t pid = host_pid(SPARE);
		kill(pid, SIGKILL);
		for (uint64_t until = now_ms() + 5000; alive(pid) && now_ms() < until;)
			usleep(10000);
	}
	char sv[16];
	for (int i = 1; i <= HOSTS; i++) {
		snprintf(sv, sizeof(sv), "h%d", i);
		if (wait_status(sv, "UP", 5000) < 0)
			return -1;
	}
	snprintf(sv, sizeof(sv), "h%d", SPARE);
	return wait_status(sv, "DOWN", 5000) < 0 ? -1 : 0;
}

/* 1. Spread: 300 connections through HAProxy; every host gets some, none more than twice
 * another's share. */
static void test_spread(void **state)
{
	(void)state;
	double before[HOSTS + 1], got[HOSTS + 1], lo = 1e18, hi = 0;
	for (int i = 1; i <= HOSTS; i++)
		assert_true((before[i] = accepted(i)) >= 0);
	struct child load;
	echoload_start(&load, 300, "0.5");
	char *json;
	assert_int_equal(echoload_end(&load, &json, 0), 0);
	assert_bytes_intact(json);
	assert_true(jnum(json, "errors") == 0);
	free(json);
	for (int i = 1; i <= HOSTS; i++) {
		got[i] = accepted(i) - before[i];
		lo = got[i] < lo ? got[i] : lo;
		hi = got[i] > hi ? got[i] : hi;
	}
	print_message("  accepted per host: %.0f %.0f %.0f\n", got[1], got[2], got[3]);
	assert_true(got[1] + got[2] + got[3] >= 300);
	assert_true(lo > 0);
	assert_true(hi <= 2 * lo);
}

/* 2. Crash: kill -9 one host's echod mid-run. Only its connections fail (every byte on the
 * others verified); new connections succeed within fall x inter + 1 s; HAProxy shows it DOWN. */
static void test_crash(void **state)
{
	(void)state;
	struct child load;
	echoload_start(&load, 300, "1.5");
	usleep(600 * 1000);
	char st[32];
	int on_h1 = server_stat("h1", st, sizeof(st));
	assert_true(on_h1 > 0);
	uint64_t t0 = now_ms();
	assert_int_equal(kill(host_pid(1), SIGKILL), 0);
	long first_ok = -1;
	while (now_ms() - t0 < FALL * INTER_MS + 1000) {
		if (probe()) {
			first_ok = (long)(now_ms() - t0);
			break;
		}
		usleep(10000);
	}
	long down = wait_status("h1", "DOWN", FALL * INTER_MS + 1000 - (long)(now_ms() - t0));
	int later_ok = 0;
	for (int k = 0; k < 20; k++)
		later_ok += probe();
	char *json;
	int rc = echoload_end(&load, &json, 1);
	print_message("  %d connections on h1 at the kill; echoload: conn_errors %.0f errors %.0f "
		      "msgs %.0f; first new connection echoed %ld ms after the kill, DOWN after "
		      "%ld ms\n", on_h1, jnum(json, "conn_errors"), jnum(json, "errors"),
		      jnum(json, "msgs"), first_ok, down);
	assert_true(first_ok >= 0);
	assert_true(down >= 0);
	assert_int_equal(later_ok, 20);
	assert_int_equal(rc, 1); /* the failed connections are errors... */
	assert_bytes_intact(json);
	/* ... and they are all there is: every error is a failed connection, each one of h1's */
	assert_true(jnum(json, "conn_errors") == on_h1);
	assert_true(jnum(json, "errors") == on_h1);
	free(json);
}

/* 3. Drain: SIGTERM one host mid-run. /readyz turns 503, HAProxy marks it DOWN and sends it no
 * new connection, its open connections finish their echoes and close cleanly: no reset, no
 * error, and echod exits 0. */
static void test_drain(void **state)
{
	(void)state;
	struct child load;
	echoload_start(&load, 300, "1.2");
	usleep(500 * 1000);
	char st[32];
	int on_h2 = server_stat("h2", st, sizeof(st));
	assert_true(on_h2 > 0);
	pid_t pid = host_pid(2);
	uint64_t t0 = now_ms();
	assert_int_equal(kill(pid, SIGTERM), 0);
	int ready = 0;
	while (now_ms() - t0 < 500 && (ready = readyz(2)) != 503)
		usleep(10000);
	long r503 = (long)(now_ms() - t0);
	assert_int_equal(ready, 503);
	long down = wait_status("h2", "DOWN", FALL * INTER_MS + 1000);
	assert_true(down >= 0);
	/* DOWN: new connections go elsewhere, every one echoed. */
	double at_down = accepted(2);
	int ok = 0;
	for (int k = 0; k < 30; k++)
		ok += probe();
	double after = accepted(2);
	char *json;
	int rc = echoload_end(&load, &json, 0);
	long load_done = (long)(now_ms() - t0);
	print_message("  %d connections on h2 at SIGTERM; /readyz 503 after %ld ms, DOWN after %ld "
		      "ms; h2 accepted %.0f then %.0f across 30 new connections; echoload done "
		      "%ld ms after SIGTERM (grace %d ms)\n", on_h2, r503, down, at_down, after,
		      load_done, GRACE_MS);
	assert_int_equal(ok, 30);
	assert_true(at_down >= 0 && after == at_down);
	assert_true(load_done < GRACE_MS); /* the run ended inside the grace, so it proves the drain */
	assert_int_equal(rc, 0);
	assert_bytes_intact(json);
	assert_true(jnum(json, "errors") == 0);
	assert_true(jnum(json, "conn_errors") == 0);
	free(json);
	/* echod ends by itself after its grace; its stop line: clean ends only. */
	uint64_t until = now_ms() + 6000;
	while (alive(pid) && now_ms() < until)
		usleep(20000);
	assert_false(alive(pid));
	char path[128];
	snprintf(path, sizeof(path), "%s/h2.log", dir);
	char *text = proc_read_file(path);
	assert_non_null(text);
	const char *stop = strstr(text, "event=stopped");
	assert_non_null(stop);
	print_message("  h2: %.*s\n", (int)strcspn(stop, "\n"), stop);
	assert_true(test_field(stop, "closed_reset") == 0);
	assert_true(test_field(stop, "aborted") == 0);
	assert_true(test_field(stop, "closed_eof") >= on_h2);
	assert_true(test_field(stop, "status") == 0);
	free(text);
}

/* 4. Join: echod starts on the spare host; HAProxy sends it connections after rise x inter. */
static void test_join(void **state)
{
	(void)state;
	char sv[16];
	snprintf(sv, sizeof(sv), "h%d", SPARE);
	assert_int_equal(cluster("start-host", (char[]){ (char)('0' + SPARE), 0 }), 0);
	long up = wait_status(sv, "UP", RISE * INTER_MS + 1000);
	print_message("  %s UP %ld ms after its echod was ready (rise x inter = %d ms)\n", sv, up,
		      RISE * INTER_MS);
	assert_true(up >= 0);
	double before = accepted(SPARE);
	struct child load;
	echoload_start(&load, 120, "0.3");
	char *json;
	assert_int_equal(echoload_end(&load, &json, 0), 0);
	assert_true(jnum(json, "errors") == 0);
	free(json);
	double got = accepted(SPARE) - before;
	print_message("  %s accepted %.0f of 120 new connections\n", sv, got);
	assert_true(got >= 120 / (HOSTS + 1) / 2);
}

/* 5. Link down: a host's interface goes down under load. HAProxy marks it DOWN; new load runs
 * on the others without an error. */
static void test_link_down(void **state)
{
	(void)state;
	struct child load;
	echoload_start(&load, 300, "1.5");
	usleep(500 * 1000);
	char st[32];
	int on_h3 = server_stat("h3", st, sizeof(st));
	uint64_t t0 = now_ms();
	assert_int_equal(host_link(3, "down"), 0);
	long down = wait_status("h3", "DOWN", FALL * INTER_MS + 1000);
	print_message("  %d connections on h3; DOWN %ld ms after its link went down\n", on_h3,
		      down);
	assert_true(down >= 0);
	(void)t0;
	struct child after;
	echoload_start(&after, 100, "0.3");
	char *json;
	assert_int_equal(echoload_end(&after, &json, 0), 0);
	assert_true(jnum(json, "errors") == 0);
	free(json);
	/* The first run: h3's connections stalled (the link drops their packets: no reset reaches
	 * anyone), the others' bytes all verified. */
	int rc = echoload_end(&load, &json, 0);
	print_message("  the run across the cut: exit %d, stalled %.0f, errors %.0f\n", rc,
		      jnum(json, "stalled_conns"), jnum(json, "errors"));
	assert_bytes_intact(json);
	assert_true(jnum(json, "errors") == 0);
	assert_true(jnum(json, "stalled_conns") <= on_h3);
	free(json);
}

static bool have(const char *cmd)
{
	char sh[128];
	snprintf(sh, sizeof(sh), "command -v %s >/dev/null 2>&1", cmd);
	return system(sh) == 0;
}

/* Why this machine cannot run the cluster, or NULL. */
static const char *cannot_run(void)
{
	if (geteuid() != 0)
		return "needs root (network namespaces)";
	if (!have("ip"))
		return "needs iproute2's ip (tools/install-deps installs it)";
	if (!have("haproxy"))
		return "needs haproxy (tools/install-deps installs it)";
	if (access("bench/cluster", X_OK) != 0)
		return "bench/cluster not found (run from the repository's top directory)";
	char probe_ns[48], sh[160];
	snprintf(probe_ns, sizeof(probe_ns), "echod-probe-%d", (int)getpid());
	snprintf(sh, sizeof(sh), "ip netns add %s 2>/dev/null && ip netns del %s", probe_ns,
		 probe_ns);
	if (system(sh) != 0)
		return "cannot create network namespaces here";
	return NULL;
}

static int cluster_up(void **state)
{
	(void)state;
	snprintf(build_dir, sizeof(build_dir), "%s", proc_bin("echod"));
	*strrchr(build_dir, '/') = '\0';
	snprintf(dir, sizeof(dir), "/tmp/echod-test-cluster.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	char hosts[16], spare[16], inter[16], fall[16], rise[16], grace[16];
	snprintf(grace, sizeof(grace), "%g", GRACE_MS / 1000.0);
	snprintf(hosts, sizeof(hosts), "%d", HOSTS);
	snprintf(spare, sizeof(spare), "%d", SPARE - HOSTS);
	snprintf(inter, sizeof(inter), "%d", INTER_MS);
	snprintf(fall, sizeof(fall), "%d", FALL);
	snprintf(rise, sizeof(rise), "%d", RISE);
	const char *argv[] = { "bench/cluster", "up", "--dir", dir, "--hosts", hosts, "--spare",
			       spare, "--build", build_dir, "--inter", inter, "--fall", fall,
			       "--rise", rise, "--grace", grace, NULL };
	struct child c;
	int rc = proc_run(argv, 60000, &c);
	if (rc != 0) {
		char *log = proc_log(&c);
		print_error("bench/cluster up: exit %d\n%s", rc, log);
		free(log);
		proc_cleanup(&c);
		return -1;
	}
	proc_cleanup(&c);
	char env[128];
	snprintf(env, sizeof(env), "%s/cluster.env", dir);
	FILE *f = fopen(env, "r");
	if (!f || fscanf(f, "name=%31s", name) != 1)
		return -1;
	fclose(f);
	return 0;
}

static int cluster_down(void **state)
{
	(void)state;
	int rc = cluster("down", NULL);
	if (getenv("ECHOD_CLUSTER_KEEP")) {
		printf("cluster: logs and configuration kept in %s\n", dir);
		return rc;
	}
	char sh[128];
	snprintf(sh, sizeof(sh), "rm -rf %s", dir);
	if (system(sh) != 0)
		rc = -1;
	return rc;
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const char *why = cannot_run();
	if (why) {
		printf("cluster: skipped: %s\n", why);
		return 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_spread, heal, test_kill_strays),
		cmocka_unit_test_setup_teardown(test_crash, heal, test_kill_strays),
		cmocka_unit_test_setup_teardown(test_drain, heal, test_kill_strays),
		cmocka_unit_test_setup_teardown(test_join, heal, test_kill_strays),
		cmocka_unit_test_setup_teardown(test_link_down, heal, test_kill_strays),
	};
	return cmocka_run_group_tests_name("cluster", tests, cluster_up, cluster_down);
}
