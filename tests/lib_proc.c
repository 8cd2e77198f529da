/* lib_proc.c - see lib_proc.h. */
#include "lib_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char bin_dir[PATH_MAX + 4]; /* argv0's directory + "/.." */

void proc_init(const char *argv0)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", argv0);
	char *slash = strrchr(buf, '/');
	if (slash)
		*slash = '\0';
	else
		strcpy(buf, ".");
	snprintf(bin_dir, sizeof(bin_dir), "%s/..", buf);
	signal(SIGPIPE, SIG_IGN);
}

const char *proc_bin(const char *name)
{
	static char path[PATH_MAX + 64];
	if (strncmp(name, "helper_", 7) == 0)
		snprintf(path, sizeof(path), "%s/tests/%s", bin_dir, name);
	else
		snprintf(path, sizeof(path), "%s/%s", bin_dir, name);
	return path;
}

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Children not yet reaped, so a test that fails half-way (cmocka jumps out of it, leaving its
 * struct child on a dead stack frame) does not leave an echod running into the next test. */
#define MAX_LIVE 64
static struct child live[MAX_LIVE];

static void live_add(const struct child *c)
{
	for (int i = 0; i < MAX_LIVE; i++) {
		if (live[i].pid == 0) {
			live[i] = *c;
			return;
		}
	}
}

static void live_remove(pid_t pid)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live[i].pid == pid)
			live[i].pid = 0;
}

int proc_kill_strays(void)
{
	int n = 0;
	for (int i = 0; i < MAX_LIVE; i++) {
		if (live[i].pid == 0)
			continue;
		struct child c = live[i];
		live[i].pid = 0;
		proc_cleanup(&c);
		n++;
	}
	return n;
}

const char *const *proc_echod_env;
static const char *const *spawn_env; /* proc_echod_env while an echod is being spawned */

static pid_t spawn(const char *const *argv, struct child *c, int nofile)
{
	static int seq;
	snprintf(c->log_path, sizeof(c->log_path), "/tmp/echod-test-%d-%d.err", getpid(), ++seq);
	snprintf(c->out_path, sizeof(c->out_path), "/tmp/echod-test-%d-%d.out", getpid(), seq);
	pid_t pid = fork();
	if (pid > 0) {
		c->pid = pid;
		live_add(c);
	}
	if (pid != 0)
		return pid;
	int err = open(c->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int out = open(c->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (err < 0 || out < 0 || dup2(err, 2) < 0 || dup2(out, 1) < 0)
		_exit(127);
	if (nofile > 0) {
		struct rlimit rl = { .rlim_cur = (rlim_t)nofile, .rlim_max = (rlim_t)nofile };
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			_exit(127);
	}
	for (const char *const *e = spawn_env; e && *e; e++)
		if (putenv((char *)*e) != 0)
			_exit(127);
	execvp(argv[0], (char *const *)argv);
	_exit(127);
}

int proc_spawn(struct child *c, const char *const *argv)
{
	memset(c, 0, sizeof(*c));
	return spawn(argv, c, 0) < 0 ? -1 : 0;
}

static char *slurp(const char *path)
{
	char *data = proc_read_file(path);
	return data ? data : strdup("");
}

char *proc_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *data = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&data, &len);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, m);
	fclose(f);
	fclose(m);
	return data;
}

char *proc_log(const struct child *c)
{
	return slurp(c->log_path);
}

char *proc_out(const struct child *c)
{
	return slurp(c->out_path);
}

bool proc_wait_out(const struct child *c, const char *needle, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		char *out = proc_out(c);
		bool has = strstr(out, needle) != NULL;
		free(out);
		if (has)
			return true;
		if (now_ms() >= end)
			return false;
		usleep(20000);
	}
}

int proc_udp_port(const struct child *c)
{
	char *log = proc_log(c);
	const char *p = strstr(log, "addr=udp:");
	int port = -1;
	if (p) {
		const char *end = strchr(p, '\n');
		const char *colon = p;
		for (const char *q = p; *q && (!end || q < end); q++)
			if (*q == ':')
				colon = q;
		port = atoi(colon + 1);
	}
	free(log);
	return port;
}

bool proc_log_has(const struct child *c, const char *needle)
{
	char *log = proc_log(c);
	bool has = strstr(log, needle) != NULL;
	free(log);
	return has;
}

int proc_wait(struct child *c, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		int st;
		pid_t r = waitpid(c->pid, &st, WNOHANG);
		if (r == c->pid) {
			live_remove(c->pid);
			c->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		if (r < 0)
			return -1;
		if (now_ms() >= end)
			return -2;
		sleep_ms(5);
	}
}

int proc_stop(struct child *c, int sig, int timeout_ms)
{
	if (c->pid <= 0)
		return -1;
	kill(c->pid, sig);
	int rc = proc_wait(c, timeout_ms);
	if (rc == -2) {
		kill(c->pid, SIGKILL);
		proc_wait(c, 2000);
	}
	return rc;
}

void proc_cleanup(struct child *c)
{
	if (c->pid > 0)
		proc_stop(c, SIGKILL, 2000);
	unlink(c->log_path);
	unlink(c->out_path);
}

static int start_echod(struct child *c, const char *wrapper, int nofile, int *status,
		       const char *const *args)
{
	const char *argv[64];
	char wrapper_path[PATH_MAX + 64];
	int n = 0;
	if (wrapper) {
		snprintf(wrapper_path, sizeof(wrapper_path), "%s", proc_bin(wrapper));
		argv[n++] = wrapper_path;
	}
	argv[n++] = proc_bin("echod");
	for (int i = 0; args[i] && n < 62; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	memset(c, 0, sizeof(*c));
	spawn_env = proc_echod_env;
	c->pid = spawn(argv, c, nofile);
	spawn_env = NULL;
	if (c->pid < 0)
		return -1;
	uint64_t end = now_ms() + 5000;
	while (now_ms() < end) {
		char *log = proc_log(c);
		const char *p = strstr(log, "event=listening addr=");
		if (p) {
			const char *colon = strchr(p + 21, ' ');
			const char *q = p + 21;
			const char *last = NULL;
			for (; *q && q != colon && *q != '\n'; q++)
				if (*q == ':')
					last = q;
			c->port = last ? atoi(last + 1) : 0;
		}
		free(log);
		if (c->port > 0 && proc_log_has(c, "event=start"))
			return 0;
		int st = proc_wait(c, 0);
		if (st >= 0) {
			if (status)
				*status = st;
			return -1;
		}
		sleep_ms(5);
	}
	proc_stop(c, SIGKILL, 1000);
	return -1;
}

int echod_start(struct child *c, int nofile, int *status, const char *const *args)
{
	return start_echod(c, NULL, nofile, status, args);
}

int echod_start_via(struct child *c, const char *wrapper, int *status, const char *const *args)
{
	return start_echod(c, wrapper, 0, status, args);
}

int proc_run(const char *const *argv, int timeout_ms, struct child *c)
{
	memset(c, 0, sizeof(*c));
	c->pid = spawn(argv, c, 0);
	if (c->pid < 0)
		return -1;
	int rc = proc_wait(c, timeout_ms);
	if (rc == -2) {
		kill(c->pid, SIGKILL);
		proc_wait(c, 2000);
		return -1;
	}
	return rc;
}

static long stat_field_sum(pid_t pid, int a, int b)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command name may hold spaces */
	if (!p)
		return -1;
	long sum = 0;
	int field = 2;
	for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
		field++;
		if (field == a || field == b)
			sum += atol(tok);
	}
	return sum;
}

long proc_cpu_ms(pid_t pid)
{
	long ticks = stat_field_sum(pid, 14, 15);
	return ticks < 0 ? -1 : ticks * 1000 / sysconf(_SC_CLK_TCK);
}

long long proc_cpu_ns(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	long long total = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char stat[128];
		snprintf(stat, sizeof(stat), "/proc/%d/task/%.16s/schedstat", (int)pid, e->d_name);
		FILE *f = fopen(stat, "r");
		long long ns = 0;
		if (f) {
			if (fscanf(f, "%lld", &ns) != 1)
				ns = 0;
			fclose(f);
		}
		total += ns;
	}
	closedir(d);
	return total;
}

long proc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256], fmt[48];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	snprintf(fmt, sizeof(fmt), "%s: %%ld kB", field);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long kb = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, fmt, &kb) == 1)
			break;
	fclose(f);
	return kb;
}

long proc_rss_kb(pid_t pid)
{
	return proc_status_kb(pid, "VmRSS");
}

int proc_count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

const char *proc_unix_path;

/* The low end of the kernel's ephemeral range, from which connect() and bind(port 0) take
 * their ports; 32768 (the default) if it cannot be read. */
static int ephemeral_low(void)
{
	int low = 32768, high;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%d %d", &low, &high) != 2)
			low = 32768;
		fclose(f);
	}
	return low;
}

static bool port_bindable(int socktype, int port)
{
	int fd = socket(AF_INET, socktype | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* A port from the kernel's ephemeral range is free only until some other socket connects:
 * the suites run beside echoload runs that take thousands of those ports a second, and one of
 * them took a port between free_port() and HAProxy's bind. Below the range nothing takes a
 * port unasked; a random pick makes two suites choosing at once unlikely to meet. */
int free_port(int socktype)
{
	enum { LOWEST = 10000 };
	int below = ephemeral_low();
	if (below - LOWEST < 1000)
		return -1;
	static unsigned seed;
	if (!seed)
		seed = (unsigned)getpid() ^ (unsigned)time(NULL);
	for (int tries = 0; tries < 200; tries++) {
		int port = LOWEST + (int)(rand_r(&seed) % (unsigned)(below - LOWEST));
		if (port_bindable(socktype, port))
			return port;
	}
	return -1;
}

int tcp_connect(int port)
{
	int fd = socket(proc_unix_path ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct sockaddr *to = (struct sockaddr *)&sa;
	socklen_t tolen = sizeof(sa);
	if (proc_unix_path) {
		snprintf(un.sun_path, sizeof(un.sun_path), "%s", proc_unix_path);
		to = (struct sockaddr *)&un;
		tolen = sizeof(un);
	}
	struct timeval tv = { .tv_sec = 5 };
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (!proc_unix_path)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int err = connect_retry(fd, to, tolen) < 0 ? errno : 0;
	if (err) {
		fprintf(stderr, "tcp_connect: 127.0.0.1:%d: %s\n", port, strerror(err));
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

int connect_retry(int fd, const struct sockaddr *to, socklen_t len)
{
	if (connect(fd, to, len) == 0)
		return 0;
	/* The connect goes on in the kernel after EINTR: wait for it, bounded, and take its
	 * outcome from SO_ERROR (calling connect again would only say EALREADY). */
	int err = errno;
	uint64_t end = now_ms() + 5000;
	while (err == EINTR && now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int n = poll(&p, 1, (int)(end - now_ms()));
		if (n < 0 && errno == EINTR)
			continue;
		socklen_t elen = sizeof(err);
		if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		else if (n == 0)
			err = ETIMEDOUT;
	}
	errno = err;
	return err ? -1 : 0;
}

/* After an EINTR: false once the socket's own timeout (opt: SO_RCVTIMEO or SO_SNDTIMEO) has
 * passed since the call began (start); errno is then EAGAIN, what the uninterrupted call would
 * have said. Restarting the whole timeout at every interruption would never time out under
 * frequent ones. */
static bool retry_in_time(int fd, int opt, uint64_t start)
{
	if (errno != EINTR)
		return false;
	uint64_t now = now_ms();
	struct timeval tv = { 0 };
	socklen_t len = sizeof(tv);
	if (getsockopt(fd, SOL_SOCKET, opt, &tv, &len) < 0 || (tv.tv_sec == 0 && tv.tv_usec == 0))
		return true; /* no timeout: the call would wait on */
	if (now - start < (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000)
		return true;
	errno = EAGAIN;
	return false;
}

ssize_t recv_retry(int fd, void *buf, size_t len, int flags)
{
	ssize_t n;
	uint64_t start = now_ms();
	while ((n = recv(fd, buf, len, flags)) < 0 && retry_in_time(fd, SO_RCVTIMEO, start))
		;
	return n;
}

ssize_t recvfrom_retry(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
		       socklen_t *fromlen)
{
	ssize_t n;
	uint64_t start = now_ms();
	while ((n = recvfrom(fd, buf, len, flags, from, fromlen)) < 0 &&
	       retry_in_time(fd, SO_RCVTIMEO, start))
		;
	return n;
}

ssize_t send_retry(int fd, const void *buf, size_t len, int flags)
{
	ssize_t n;
	uint64_t start = now_ms();
	while ((n = send(fd, buf, len, flags)) < 0 && retry_in_time(fd, SO_SNDTIMEO, start))
		;
	return n;
}

ssize_t sendto_retry(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
		     socklen_t tolen)
{
	ssize_t n;
	uint64_t start = now_ms();
	while ((n = sendto(fd, buf, len, flags, to, tolen)) < 0 &&
	       retry_in_time(fd, SO_SNDTIMEO, start))
		;
	return n;
}

int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send_retry(fd, p, len, MSG_NOSIGNAL);
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t recv_exact(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv_retry(fd, (char *)buf + got, len - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

size_t recv_to_eof(int fd, void *buf, size_t cap)
{
	size_t got = 0;
	while (got < cap) {
		ssize_t n = recv_retry(fd, (char *)buf + got, cap - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

bool hello_echoed(int port)
{
	int fd = tcp_connect(port);
	if (fd < 0)
		return false;
	char buf[12];
	int rc = send_all(fd, "Hello, world", 12);
	ssize_t n = rc == 0 ? recv_exact(fd, buf, sizeof(buf)) : -1;
	int err = errno;
	close(fd);
	if (n == 12 && memcmp(buf, "Hello, world", 12) == 0)
		return true;
	fprintf(stderr, "hello_echoed: no echo from 127.0.0.1:%d: send %s, %zd bytes back (%s)\n",
		port, strerror(-rc), n, strerror(err));
	return false;
}

void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void pattern_fill(uint8_t *buf, size_t len, uint32_t seed)
{
	uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}
