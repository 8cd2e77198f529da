/* lib_proc.h - test helpers: run the real echod (or another tool) as a child process, find
 * the port it logged, talk to it over loopback with deadlines, read its RSS and CPU time. */
#ifndef ECHOD_TEST_LIB_PROC_H
#define ECHOD_TEST_LIB_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct child {
	pid_t pid;
	int port;              /* from echod's `event=listening addr=HOST:PORT` */
	char log_path[64];     /* its stderr */
	char out_path[64];     /* its stdout */
};

/* Path of a binary built next to the tests: <dir of argv0>/../NAME (set by proc_init). */
void proc_init(const char *argv0);
const char *proc_bin(const char *name);

/* Start echod with args (NULL-terminated), wait up to 5 s for it to log its port. nofile > 0
 * caps the child's RLIMIT_NOFILE (soft and hard). Returns 0, or -1 if it exited (then
 * *status holds its exit status). */
int echod_start(struct child *c, int nofile, int *status, const char *const *args);
/* The same, with echod run by a wrapper program (wrapper ECHOD ARGS...), e.g. helper_nouring. */
int echod_start_via(struct child *c, const char *wrapper, int *status, const char *const *args);
/* Extra environment for every echod started from here on (the two above, and so lib_backends'
 * starts): "NAME=value" strings, NULL-terminated, put into the child just before exec. NULL,
 * the default: echod inherits the test's environment as it is. test_faults preloads its fault
 * shim this way, into echod only, never into echoload or the test itself. */
extern const char *const *proc_echod_env;
/* Start a program in the background, stdout and stderr to the child's files; 0 or -1. */
int proc_spawn(struct child *c, const char *const *argv);
/* Wait up to timeout_ms for the child's stdout to contain needle. */
bool proc_wait_out(const struct child *c, const char *needle, int timeout_ms);
/* Whole content of the child's stdout (malloc'd, NUL-terminated). */
char *proc_out(const struct child *c);
/* Run a program to completion within timeout_ms; returns its exit status or -1. */
int proc_run(const char *const *argv, int timeout_ms, struct child *c);
/* Send sig and wait up to timeout_ms; returns the exit status, -2 on timeout (then killed). */
int proc_stop(struct child *c, int sig, int timeout_ms);
int proc_wait(struct child *c, int timeout_ms);
void proc_cleanup(struct child *c);
/* Kill and clean up every child started here and not yet reaped (a test's teardown: a failed
 * assertion leaves its children behind). Returns how many there were. */
int proc_kill_strays(void);
/* The port of echod's UDP listener, from its `event=listening addr=udp:HOST:PORT`; -1. */
int proc_udp_port(const struct child *c);
/* Whole content of the child's stderr log (malloc'd, NUL-terminated). */
char *proc_log(const struct child *c);
bool proc_log_has(const struct child *c, const char *needle);
/* A whole file (malloc'd, NUL-terminated), or NULL if it cannot be opened. */
char *proc_read_file(const char *path);

long proc_rss_kb(pid_t pid);
/* A "NAME: N kB" line of /proc/PID/status (VmRSS, VmSize, ...); -1 if absent. */
long proc_status_kb(pid_t pid, const char *field);
/* utime + stime in milliseconds. */
long proc_cpu_ms(pid_t pid);
/* On-CPU time of all its threads in nanoseconds (schedstat: no 10 ms ticks); -1 if gone. */
long long proc_cpu_ns(pid_t pid);
int proc_count_fds(pid_t pid);

/* Sockets, all with deadlines so a broken server fails a test instead of hanging it. */
int tcp_connect(int port);        /* blocking socket, 5 s send/recv timeouts; -1 on failure */
/* A 127.0.0.1 port nobody has now for `socktype` (SOCK_STREAM, SOCK_DGRAM), chosen below the
 * kernel's ephemeral range so no outgoing connection takes it before it is used. -1 on
 * failure (also when that range starts below 11000). */
int free_port(int socktype);
/* When set, tcp_connect() (and so hello_echoed()) ignores the port and connects to this Unix
 * socket instead, and test_start_echod() also listens there: a suite's stream cases run over
 * a Unix listener unchanged. */
extern const char *proc_unix_path;
/* Blocking socket calls that go on after EINTR. Linux ends recv, send and connect on a socket
 * with SO_RCVTIMEO/SO_SNDTIMEO (which every socket here has) with EINTR whenever the task is
 * interrupted, handler or not (signal(7)): when it is stopped and continued (a frozen cgroup,
 * a debugger), or when an io_uring it closed finishes tearing down a few ms later (lib_backends'
 * runs_here()). Each calls again until the socket's own timeout has passed since the first
 * call (then -1, EAGAIN, as the uninterrupted call would have ended). connect_retry waits for
 * a connect that EINTR left going on (up to 5 s), its outcome in errno. */
int connect_retry(int fd, const struct sockaddr *to, socklen_t len); /* 0 or -1 */
ssize_t recv_retry(int fd, void *buf, size_t len, int flags);
ssize_t recvfrom_retry(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
		       socklen_t *fromlen);
ssize_t send_retry(int fd, const void *buf, size_t len, int flags);
ssize_t sendto_retry(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
		     socklen_t tolen);
int send_all(int fd, const void *buf, size_t len);        /* 0 or -errno */
ssize_t recv_exact(int fd, void *buf, size_t len);         /* bytes read before EOF/error */
/* Everything until EOF, an error or cap bytes: how many. Like recv_exact and send_all, it goes
 * on after EINTR (see recv_retry). */
size_t recv_to_eof(int fd, void *buf, size_t cap);
/* The tutorial's exchange on a fresh connection: "Hello, world" sent, the same 12 bytes back. */
bool hello_echoed(int port);
void set_nonblock(int fd);
void pattern_fill(uint8_t *buf, size_t len, uint32_t seed); /* deterministic, non-repeating */
uint64_t now_ms(void);
void raise_nofile(void);

#endif
