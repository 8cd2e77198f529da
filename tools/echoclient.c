/* echoclient - the socket tutorial's echo client as a real tool.
 *
 *   echoclient [--host H] [--port P] [--timeout S] [MESSAGE]
 *                          send MESSAGE (default "Hello, world"), read back exactly as many
 *                          bytes, print Received '...'
 *   echoclient -i          send each line of stdin, print each echo
 *   echoclient --probe     a health check (Kubernetes exec probe, keepalived MISC_CHECK):
 *                          one unique message, silent on success; exit 0 healthy, 1 connected
 *                          but no byte-exact echo in time, 2 cannot connect
 *
 * Exit 0 when every echo matched; 1 when one differed, the server could not be reached, or it
 * went silent for --timeout seconds (each with one line saying why); 64 on bad usage.
 *
 * Sending and receiving are interleaved: the socket is non-blocking and one poll() loop sends
 * what the kernel takes and reads whatever echo has come back. Sending a whole message before
 * reading deadlocks once it is larger than the socket buffers plus what the server queues: the
 * server stops reading while its echo is not read, and a blocked send never gets to read it.
 * send() and recv() may move fewer bytes than asked: both are looped, which is the tutorial's
 * warning about partial send/recv, taken seriously. Every wait on the network is bounded by
 * --timeout, so a server that accepts and never answers is reported instead of waited on.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h" /* ECHOD_VERSION: the tools carry the server's version */

#define EXIT_FAIL 1
#define EXIT_DOWN 2 /* --probe: nothing accepted the connection */
#define EXIT_USAGE 64
#define MIN_TIMEOUT_S 0.001 /* poll() counts milliseconds */
#define MAX_TIMEOUT_S 86400

/* Where we talk to and how long we wait, for the loops and for their messages. */
struct target {
	char where[320];  /* host:port as the user gave it, [v6]:port for IPv6 literals */
	double timeout_s; /* as given, for messages */
	int timeout_ms;   /* for poll() */
	bool quiet;       /* --probe: print nothing when the echo matches */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) {
		/* Cannot happen on Linux; without a clock no wait could be bounded. */
		perror("echoclient: clock_gettime");
		exit(EXIT_FAIL);
	}
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to timeout_ms for events on fd; a signal does not restart the full wait. Returns
 * the revents, 0 on timeout, or -errno. */
static int wait_for(int fd, short events, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int64_t left = deadline - mono_ms();
		int n = poll(&p, 1, left > 0 ? (int)left : 0);
		if (n > 0)
			return p.revents;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

/* One address, non-blocking, so the handshake can be bounded by --timeout (a blocking
 * connect() to a host that drops SYNs waits the kernel's two minutes). Returns the connected
 * non-blocking fd, -1 with *err set, or -2 when the timeout expired. */
static int connect_one(const struct addrinfo *ai, int timeout_ms, int *err)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			ai->ai_protocol);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		*err = errno;
		close(fd);
		return -1;
	}
	int ev = wait_for(fd, POLLOUT, timeout_ms);
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (ev == 0) {
		close(fd);
		return -2;
	}
	if (ev < 0)
		*err = -ev;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		*err = errno;
	else if (soerr != 0)
		*err = soerr;
	else
		return fd;
	close(fd);
	return -1;
}

/* Tries each address in turn, each within the timeout; reports the last failure. */
static int connect_to(const struct target *t, const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0) {
		fprintf(stderr, "echoclient: cannot resolve %s: %s\n", host,
			gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		return -1;
	}
	int fd = -1, err = 0;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
		fd = connect_one(ai, t->timeout_ms, &err);
	freeaddrinfo(res);
	if (fd == -2)
		fprintf(stderr,
			"echoclient: cannot connect to %s within %g s (no answer to the handshake: "
			"is the address right, or the server swamped? raise --timeout)\n",
			t->where, t->timeout_s);
	else if (fd < 0)
		fprintf(stderr, "echoclient: cannot connect to %s: %s\n", t->where, strerror(err));
	return fd < 0 ? -1 : fd;
}

/* The echo exactly as received: fwrite, not %s, so a NUL byte does not cut it short. */
static int print_echo(const char *back, size_t got)
{
	if (fputs("Received '", stdout) == EOF || fwrite(back, 1, got, stdout) != got ||
	    fputs("'\n", stdout) == EOF || fflush(stdout) == EOF) {
		fprintf(stderr, "echoclient: cannot write to standard output: %s\n",
			strerror(errno));
		return -1;
	}
	return 0;
}

static bool would_block(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* One round trip on the non-blocking fd: sends msg while reading its echo (see the top of the
 * file for why both at once), prints Received '...'. Each wait for the socket is bounded by
 * the timeout; any progress starts a new wait, so a slow but moving echo of any size is fine.
 * Returns 0 if the echo matched. */
static int round_trip(const struct target *t, int fd, const char *msg, size_t len)
{
	char *back = malloc(len ? len : 1);
	if (!back) {
		fprintf(stderr, "echoclient: no memory for a %zu-byte echo\n", len);
		return 1;
	}
	size_t sent = 0, got = 0;
	bool eof = false;
	while (got < len) {
		int ev = wait_for(fd, (short)(POLLIN | (sent < len ? POLLOUT : 0)), t->timeout_ms);
		if (ev == 0) {
			if (got == 0)
				fprintf(stderr,
					"echoclient: no echo from %s within %g s (is it an echo "
					"server? raise --timeout)\n",
					t->where, t->timeout_s);
			else
				fprintf(stderr,
					"echoclient: no echo from %s within %g s after %zu of %zu "
					"bytes came back (server stuck or slow? raise --timeout)\n",
					t->where, t->timeout_s, got, len);
			free(back);
			return 1;
		}
		if (ev < 0 || (ev & POLLNVAL)) { /* POLLNVAL alone would spin: neither branch runs */
			fprintf(stderr, "echoclient: poll: %s\n", strerror(ev < 0 ? -ev : EBADF));
			free(back);
			return 1;
		}
		/* On POLLERR/POLLHUP too: the send or recv below is what names the error. */
		if (sent < len && (ev & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t n = send(fd, msg + sent, len - sent, MSG_NOSIGNAL);
			if (n >= 0) {
				sent += (size_t)n;
			} else if (!would_block(errno)) {
				fprintf(stderr,
					"echoclient: lost the connection to %s after sending %zu "
					"of %zu bytes: %s\n",
					t->where, sent, len, strerror(errno));
				free(back);
				return 1;
			}
		}
		if (ev & (POLLIN | POLLERR | POLLHUP)) {
			ssize_t n = recv(fd, back + got, len - got, 0);
			if (n > 0) {
				got += (size_t)n;
			} else if (n == 0) {
				eof = true;
				break;
			} else if (!would_block(errno)) {
				fprintf(stderr,
					"echoclient: lost the connection to %s after %zu of %zu "
					"bytes came back: %s\n",
					t->where, got, len, strerror(errno));
				free(back);
				return 1;
			}
		}
	}
	bool differs = !eof && memcmp(back, msg, len) != 0;
	bool printed = t->quiet && !eof && !differs ? true : print_echo(back, got) == 0;
	int bad = !printed || eof || differs;
	if (eof)
		fprintf(stderr, "echoclient: server closed after %zu of %zu bytes\n", got, len);
	else if (differs)
		fprintf(stderr, "echoclient: the echo differs from what was sent\n");
	free(back);
	return bad;
}

/* Bad usage: one line naming the problem, not the whole help, and exit 64. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("echoclient: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see --help)\n", stderr);
	va_end(ap);
	return EXIT_USAGE;
}

/* Seconds, fractions allowed ("0.5"), at least a millisecond. 0, or EXIT_USAGE after one line. */
static int parse_timeout(const char *s, struct target *t)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	/* Leading digit or dot: refuses "", " 5", "-1", "+1", "inf", "nan", which strtod takes. */
	if (!(isdigit((unsigned char)s[0]) || s[0] == '.') || *end != '\0' || errno != 0 ||
	    !(v >= MIN_TIMEOUT_S) || v > MAX_TIMEOUT_S)
		return usage_error("--timeout: '%s' is not a number of seconds from 0.001 to 86400",
				   s);
	t->timeout_s = v;
	t->timeout_ms = (int)(v * 1000.0 + 0.5);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: echoclient [--host H] [--port P] [--timeout S] [-i | --probe] [MESSAGE]\n"
		"  --host H           server address [127.0.0.1]\n"
		"  --port P           server port, 1 to 65535 [65432]\n"
		"  --timeout S        seconds to wait for the connection, and for echo bytes each\n"
		"                     time none are moving; 0.001 to 86400, fractions allowed [5]\n"
		"  -i, --interactive  send each line of standard input, print its echo\n"
		"  --probe            health check: send one unique message (or MESSAGE), print\n"
		"                     nothing if it comes back byte-exact; exit 0 healthy, 1\n"
		"                     connected but no exact echo within the timeout, 2 cannot\n"
		"                     connect (for Kubernetes exec probes, keepalived MISC_CHECK)\n"
		"  -h, --help         this help\n"
		"  -V, --version      version\n"
		"  MESSAGE            what to send [Hello, world]\n"
		"Exit 0 if every echo matched; 1 if one differed, the server could not be reached\n"
		"or went silent for the timeout (--probe: 2 if it could not be reached); 64 on bad\n"
		"usage.\n");
}

/* A port to connect to: 1 to 65535, decimal (getaddrinfo would take "99999" and wrap it, or
 * look a name up in /etc/services). 0, or EXIT_USAGE after one line. */
static int check_port(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (!isdigit((unsigned char)s[0]) || *end != '\0' || errno != 0 || v < 1 || v > 65535)
		return usage_error("--port: '%s' is not a port from 1 to 65535", s);
	return 0;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *port = "65432";
	struct target t = { .timeout_s = 5, .timeout_ms = 5000 };
	int interactive = 0, probe = 0;
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' }, { "port", required_argument, NULL, 'p' },
		{ "interactive", no_argument, NULL, 'i' }, { "help", no_argument, NULL, 'h' },
		{ "timeout", required_argument, NULL, 'T' }, { "probe", no_argument, NULL, 'P' },
		{ "version", no_argument, NULL, 'V' }, { NULL, 0, NULL, 0 },
	};
	int c;
	opterr = 0; /* our own one-line messages */
	while ((c = getopt_long(argc, argv, ":H:p:ihV", opts, NULL)) != -1) {
		switch (c) {
		case 'H': host = optarg; break;
		case 'p':
			if (check_port(optarg) != 0)
				return EXIT_USAGE;
			port = optarg;
			break;
		case 'i': interactive = 1; break;
		case 'P': probe = 1; break;
		case 'V': printf("echoclient %s\n", ECHOD_VERSION); return 0;
		case 'T':
			if (parse_timeout(optarg, &t) != 0)
				return EXIT_USAGE;
			break;
		case 'h': usage(stdout); return 0;
		case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			if (optopt) {
				char opt[3] = { '-', (char)optopt, '\0' };
				return usage_error("unknown option '%s'", opt);
			}
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind + 1 < argc)
		return usage_error("one MESSAGE at most; quote it if it has spaces: '%s'",
				   argv[optind + 1]);
	if (interactive && optind < argc)
		return usage_error("-i reads its messages from standard input, not '%s'",
				   argv[optind]);
	if (interactive && probe)
		return usage_error("--probe sends one message; it cannot be combined with -i");
	snprintf(t.where, sizeof(t.where), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
	t.quiet = probe;
	int fd = connect_to(&t, host, port);
	if (fd < 0)
		return probe ? EXIT_DOWN : EXIT_FAIL;
	int bad = 0;
	if (interactive) {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n;
		while (!bad && (n = getline(&line, &cap, stdin)) > 0) {
			if (line[n - 1] == '\n')
				line[--n] = '\0';
			if (n > 0)
				bad = round_trip(&t, fd, line, (size_t)n);
		}
		if (!bad && ferror(stdin)) {
			fprintf(stderr, "echoclient: cannot read standard input: %s\n",
				strerror(errno));
			bad = 1;
		}
		free(line);
	} else if (probe && optind == argc) {
		/* Unique per probe, so an echo left over from an earlier one cannot pass for it. */
		char msg[96];
		int n = snprintf(msg, sizeof(msg), "echoclient probe pid=%d t=%lld\n", (int)getpid(),
				 (long long)mono_ms());
		bad = round_trip(&t, fd, msg, (size_t)n);
	} else {
		const char *msg = optind < argc ? argv[optind] : "Hello, world";
		bad = round_trip(&t, fd, msg, strlen(msg));
	}
	close(fd);
	return bad ? EXIT_FAIL : 0;
}
