/* test_deploy.c - the deployment examples in tools/deploy/ are what the README says they are:
 * HAProxy accepts its example (and the tcp-check variant, which also runs here against echod:
 * UP while echod echoes, DOWN once it stops), keepalived accepts its example and the
 * MISC_CHECK command it runs tells a live echod from a stopped one, and the Kubernetes
 * manifest is valid YAML whose echod flags start a real echod, whose probes name declared ports
 * and whose grace period covers echod's whole stop. Each tool that is missing skips its part in
 * one line (tools/install-deps installs them all). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib_backends.h"
#include "lib_haproxy.h"

#define HAPROXY_CFG "tools/deploy/haproxy.cfg"
#define KEEPALIVED_CONF "tools/deploy/keepalived.conf"
#define K8S_YAML "tools/deploy/kubernetes.yaml"

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* text with every `from` replaced by `to` (malloc'd; text is freed). */
static char *replace_all(char *text, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to), n = 0;
	for (const char *p = strstr(text, from); p; p = strstr(p + fl, from))
		n++;
	char *out = malloc(strlen(text) + n * (tl > fl ? tl - fl : 0) + 1), *o = out;
	const char *p = text, *q;
	while ((q = strstr(p, from))) {
		memcpy(o, p, (size_t)(q - p));
		o += q - p;
		memcpy(o, to, tl);
		o += tl;
		p = q + fl;
	}
	strcpy(o, p);
	free(text);
	return out;
}

static const char *which(const char *const *where)
{
	for (; *where; where++)
		if (access(*where, X_OK) == 0)
			return *where;
	return NULL;
}

/* Run argv to completion; its exit status (its output printed when it is not `expect`). */
static int run(const char *const *argv, int expect)
{
	struct child c;
	int rc = proc_run(argv, 20000, &c);
	if (rc != expect) {
		char *out = proc_out(&c), *log = proc_log(&c);
		print_message("  %s: exit %d\n%s%s", argv[0], rc, out, log);
		free(out);
		free(log);
	}
	proc_cleanup(&c);
	return rc;
}

static void port_str(int port, char *buf, size_t len)
{
	snprintf(buf, len, "%d", port);
}

/* --- HAProxy ---------------------------------------------------------------------------- */

/* The example's commented tcp-check variant, uncommented: "# backend echod" to the end. */
static char *tcp_check_variant(const char *example)
{
	const char *v = strstr(example, "\n# backend echod\n");
	assert_non_null(v);
	char *out = malloc(strlen(v) + 1), *o = out;
	for (const char *line = v + 1; *line;) {
		size_t len = strcspn(line, "\n");
		if (strncmp(line, "# ", 2) == 0) {
			memcpy(o, line + 2, len - 2);
			o += len - 2;
		}
		*o++ = '\n';
		line += len + (line[len] == '\n');
	}
	*o = '\0';
	return out;
}

/* The example with its backend replaced: `backend` (a whole section), and loopback ports. */
static char *example_with(const char *backend, int front, int stats, const char *sock)
{
	char *cfg = proc_read_file(HAPROXY_CFG);
	assert_non_null(cfg);
	char *cut = strstr(cfg, "# --- the backend ---");
	assert_non_null(cut);
	*cut = '\0';
	char b[64];
	snprintf(b, sizeof(b), "    bind 127.0.0.1:%d\n", front);
	cfg = replace_all(cfg, "    bind *:7\n", b);
	snprintf(b, sizeof(b), "    bind 127.0.0.1:%d\n", stats);
	cfg = replace_all(cfg, "    bind *:8404\n", b);
	char s[160];
	snprintf(s, sizeof(s), "stats socket %s ", sock);
	cfg = replace_all(cfg, "stats socket /run/haproxy-echo.sock ", s);
	cfg = replace_all(cfg, "maxconn 10000\n", "maxconn 1000\n"); /* the tests' fd limit */
	char *out = malloc(strlen(cfg) + strlen(backend) + 1);
	strcpy(out, cfg);
	strcat(out, backend);
	free(cfg);
	return out;
}

static void test_haproxy_example_valid(void **state)
{
	(void)state;
	const char *hp = haproxy_path();
	if (!hp) {
		printf("  skipped: haproxy is not installed (tools/install-deps installs it)\n");
		return;
	}
	assert_int_equal(run((const char *[]){ hp, "-c", "-q", "-f", HAPROXY_CFG, NULL }, 0), 0);
	char *example = proc_read_file(HAPROXY_CFG);
	char *variant = tcp_check_variant(example);
	assert_non_null(strstr(variant, "tcp-check expect string"));
	char *cfg = example_with(variant, 7, 8404, "/tmp/unused.sock");
	char path[64];
	snprintf(path, sizeof(path), "/tmp/echod-deploy-%d.cfg", (int)getpid());
	write_text(path, cfg);
	assert_int_equal(run((const char *[]){ hp, "-c", "-q", "-f", path, NULL }, 0), 0);
	unlink(path);
	free(cfg);
	free(variant);
	free(example);
}

static bool wait_h1(const char *sock, const char *want, int timeout_ms)
{
	char st[32] = "";
	for (uint64_t end = now_ms() + (uint64_t)timeout_ms; now_ms() < end; usleep(20000)) {
		haproxy_server(sock, "echod", "h1", st, sizeof(st));
		if (strcmp(st, want) == 0)
			return true;
	}
	print_error("echod/h1 is \"%s\", not %s, after %d ms\n", st, want, timeout_ms);
	return false;
}

/* The variant for an echod without --metrics, run: its echo exchange (with the PROXY header
 * the check must send) keeps echod UP, and a stopped echod goes DOWN. */
static void test_haproxy_tcp_check_variant_runs(void **state)
{
	(void)state;
	const char *hp = haproxy_path();
	if (!hp) {
		printf("  skipped: haproxy is not installed (tools/install-deps installs it)\n");
		return;
	}
	struct child e;
	test_start_echod(&e, (const char *const[]){ "--proxy-protocol", NULL });
	char *example = proc_read_file(HAPROXY_CFG);
	char *variant = tcp_check_variant(example);
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d\n", e.port);
	variant = replace_all(variant, "inter 2s", "inter 100ms");
	variant = replace_all(variant, "192.0.2.11:7\n", addr);
	variant = replace_all(variant, "    server h2 192.0.2.12:7\n", "");
	variant = replace_all(variant, "    server h3 192.0.2.13:7\n", "");
	char sock[64], path[64];
	snprintf(sock, sizeof(sock), "/tmp/echod-deploy-%d.sock", (int)getpid());
	snprintf(path, sizeof(path), "/tmp/echod-deploy-%d.cfg", (int)getpid());
	int front = free_port(SOCK_STREAM), stats = free_port(SOCK_STREAM);
	char *cfg = example_with(variant, front, stats, sock);
	write_text(path, cfg);
	struct child h;
	assert_int_equal(proc_spawn(&h, (const char *const[]){ hp, "-db", "-f", path, NULL }), 0);
	if (!wait_h1(sock, "UP", 3000)) {
		char *log = proc_log(&h);
		print_error("haproxy:\n%s\nits configuration:\n%s\n", log, cfg);
		free(log);
		fail();
	}
	assert_true(hello_echoed(front)); /* and through it, the echo */
	assert_int_equal(proc_stop(&e, SIGTERM, 5000), 0);
	assert_true(wait_h1(sock, "DOWN", 2 * 100 + 1000));
	proc_cleanup(&e);
	proc_stop(&h, SIGTERM, 5000);
	proc_cleanup(&h);
	unlink(path);
	unlink(sock);
	free(cfg);
	free(variant);
	free(example);
}

/* --- keepalived ------------------------------------------------------------------------- */

/* keepalived --config-test: the complaints it logs about FILE ("" when none; malloc'd). */
static char *keepalived_complaints(const char *kd, const char *file)
{
	char log[64], opt[80];
	snprintf(log, sizeof(log), "/tmp/echod-keepalived-%d.log", (int)getpid());
	snprintf(opt, sizeof(opt), "--config-test=%s", log);
	unlink(log);
	struct child c;
	/* Its exit status says nothing (it ends by signalling itself); its log says it all. */
	proc_run((const char *[]){ kd, opt, "-f", file, NULL }, 20000, &c);
	proc_cleanup(&c);
	char *text = proc_read_file(log);
	unlink(log);
	return text ? text : strdup("");
}

static void test_keepalived_example(void **state)
{
	(void)state;
	static const char *const where[] = { "/usr/sbin/keepalived", "/sbin/keepalived", NULL };
	const char *kd = which(where);
	char *conf = proc_read_file(KEEPALIVED_CONF);
	assert_non_null(conf);
	if (!kd) {
		printf("  skipped keepalived --config-test: keepalived is not installed "
		       "(tools/install-deps installs it)\n");
	} else {
		char *said = keepalived_complaints(kd, KEEPALIVED_CONF);
		if (*said)
			print_error("keepalived on %s:\n%s\n", KEEPALIVED_CONF, said);
		assert_string_equal(said, "");
		free(said);
		/* ... and it does complain where there is something to say */
		char bad[64];
		snprintf(bad, sizeof(bad), "/tmp/echod-keepalived-%d.conf", (int)getpid());
		char *broken = replace_all(strdup(conf), "lb_algo lc", "lb_algo least");
		write_text(bad, broken);
		said = keepalived_complaints(kd, bad);
		assert_non_null(strstr(said, "least"));
		free(said);
		free(broken);
		unlink(bad);
	}
	/* The MISC_CHECK command, pointed at a local echod: 0 while it echoes, 2 once it is gone. */
	const char *p = strstr(conf, "misc_path \"");
	assert_non_null(p);
	p += strlen("misc_path \"");
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "%.*s", (int)strcspn(p, "\""), p);
	struct child e;
	test_start_echod(&e, NULL);
	char port[16];
	port_str(e.port, port, sizeof(port));
	const char *argv[16];
	int n = 0;
	for (char *tok = strtok(cmd, " "); tok && n < 15; tok = strtok(NULL, " "))
		argv[n++] = tok;
	argv[n] = NULL;
	assert_string_equal(argv[0], "/usr/bin/echoclient");
	argv[0] = proc_bin("echoclient");
	for (int i = 1; i + 1 < n; i++) {
		if (strcmp(argv[i], "--host") == 0)
			argv[i + 1] = "127.0.0.1";
		if (strcmp(argv[i], "--port") == 0)
			argv[i + 1] = port;
	}
	assert_int_equal(run(argv, 0), 0);
	assert_int_equal(proc_stop(&e, SIGTERM, 5000), 0);
	proc_cleanup(&e);
	assert_int_equal(run(argv, 2), 2);
	free(conf);
}

/* --- Kubernetes -------------------------------------------------------------------------- */

/* The seconds after `flag=` in text; -1 if absent. */
static double flag_value(const char *text, const char *flag)
{
	const char *p = strstr(text, flag);
	return p ? strtod(p + strlen(flag), NULL) : -1;
}

static void test_kubernetes_manifest(void **state)
{
	(void)state;
	char *y = proc_read_file(K8S_YAML);
	assert_non_null(y);
	static const char *const where[] = { "/usr/bin/yamllint", "/usr/local/bin/yamllint", NULL };
	const char *lint = which(where);
	if (!lint)
		printf("  skipped yamllint: not installed (tools/install-deps installs it)\n");
	else
		assert_int_equal(run((const char *[]){ lint, "-s", "-d", "{extends: relaxed, rules: "
						       "{line-length: {max: 100}}}", K8S_YAML, NULL },
				     0), 0);
	/* The grace period covers echod's whole stop: grace + drain + its 2 s watchdog. */
	double grace = flag_value(y, "--drain-grace="), drain = flag_value(y, "--drain-timeout=");
	double period = flag_value(y, "terminationGracePeriodSeconds:");
	assert_true(grace > 0 && drain >= 0 && period > 0);
	assert_true(period > grace + drain + 2);
	/* Every port a probe or the Service names is declared by the container. */
	static const char *const named[] = { "port: metrics", "targetPort: echo-tcp",
					     "targetPort: echo-udp" };
	for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
		assert_non_null(strstr(y, named[i]));
		char decl[48];
		snprintf(decl, sizeof(decl), "name: %s,", strchr(named[i], ':') + 2);
		assert_non_null(strstr(y, decl));
	}
	/* The container's arguments start a real echod (addresses moved to loopback). */
	int tport = free_port(SOCK_STREAM), uport = free_port(SOCK_DGRAM);
	int mport = free_port(SOCK_STREAM);
	const char *args[24];
	int n = 0;
	static char store[16][64];
	for (const char *p = strstr(y, "args:\n"); p && (p = strstr(p, "\n            - --"));) {
		p += strlen("\n            - ");
		size_t len = strcspn(p, "\n");
		assert_true(n < 16 && len < 48);
		snprintf(store[n], sizeof(store[n]), "%.*s", (int)len, p);
		char *v = store[n];
		if (strncmp(v, "--listen=0.0.0.0:7007", 21) == 0)
			snprintf(v, 64, "--listen=127.0.0.1:%d", tport);
		else if (strncmp(v, "--listen=udp:0.0.0.0:7007", 25) == 0)
			snprintf(v, 64, "--listen=udp:127.0.0.1:%d", uport);
		else if (strncmp(v, "--metrics=0.0.0.0:9862", 22) == 0)
			snprintf(v, 64, "--metrics=127.0.0.1:%d", mport);
		args[n] = store[n];
		n++;
	}
	assert_int_equal(n, 7);
	args[n] = NULL;
	struct child e;
	int st = 0;
	if (echod_start(&e, 0, &st, args) < 0) {
		char *log = proc_log(&e);
		/* without libmicrohttpd --metrics is refused: the rest of the flags parsed */
		assert_true(st == 69 && strstr(log, "--metrics"));
		free(log);
		proc_cleanup(&e);
		free(y);
		return;
	}
	for (int i = 0; i < n; i++)
		assert_true(strncmp(args[i], "--listen=0.0.0.0", 16) != 0);
	/* The commented exec probe's command passes against it. */
	const char *cmdline = strstr(y, "command: [echoclient,");
	assert_non_null(cmdline);
	assert_non_null(strstr(cmdline, "--probe, --host, 127.0.0.1, --port, \"7007\", --timeout,"));
	char port[16];
	port_str(tport, port, sizeof(port));
	assert_int_equal(run((const char *[]){ proc_bin("echoclient"), "--probe", "--host",
					       "127.0.0.1", "--port", port, "--timeout", "1", NULL },
			     0), 0);
	/* Two TERMs: the manifest's 10 s grace is for balancers, not for this test. */
	kill(e.pid, SIGTERM);
	usleep(100 * 1000);
	assert_int_equal(proc_stop(&e, SIGTERM, 5000), 0);
	assert_true(proc_log_has(&e, "drain_grace_ms=10000"));
	proc_cleanup(&e);
	free(y);
}

/* A failed assertion leaves its files behind: every test's go here. */
static int teardown(void **state)
{
	static const char *const kinds[] = { "deploy-%d.cfg", "deploy-%d.sock",
					     "keepalived-%d.log", "keepalived-%d.conf" };
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		char name[64], path[96];
		snprintf(name, sizeof(name), kinds[i], (int)getpid());
		snprintf(path, sizeof(path), "/tmp/echod-%s", name);
		unlink(path);
	}
	return test_kill_strays(state);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_haproxy_example_valid, teardown),
		cmocka_unit_test_teardown(test_haproxy_tcp_check_variant_runs, teardown),
		cmocka_unit_test_teardown(test_keepalived_example, teardown),
		cmocka_unit_test_teardown(test_kubernetes_manifest, teardown),
	};
	return cmocka_run_group_tests_name("deploy", tests, NULL, NULL);
}
