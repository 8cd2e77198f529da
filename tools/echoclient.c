/* echoclient - the socket tutorial's echo client as a real tool.
 *
 *   echoclient [--host H] [--port P] [MESSAGE]   send MESSAGE (default "Hello, world"), read back
 *                                                exactly as many bytes, print Received '...'
 *   echoclient -i                                 send each line of stdin, print each echo
 *
 * Exit 0 when every echo matched, 1 when one differed or the server could not be reached
 * (with the reason), 64 on bad usage. send() and recv() may move fewer bytes than asked:
 * both are looped, which is the tutorial's warning about partial send/recv, taken seriously.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int connect_to(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0) {
		fprintf(stderr, "echoclient: cannot resolve %s: %s\n", host, gai_strerror(gai));
		return -1;
	}
	int fd = -1, err = 0;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			err = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		fprintf(stderr, "echoclient: cannot connect to %s:%s: %s\n", host, port, strerror(err));
	return fd;
}

static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads exactly len bytes; returns len, fewer on EOF, or -errno. */
static ssize_t recv_all(int fd, char *p, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, p + got, len - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* One round trip; prints Received '...'. Returns 0 if the echo matched. */
static int round_trip(int fd, const char *msg, size_t len)
{
	char *back = malloc(len ? len : 1);
	if (!back)
		return 1;
	int rc = send_all(fd, msg, len);
	ssize_t got = rc < 0 ? rc : recv_all(fd, back, len);
	if (got < 0) {
		fprintf(stderr, "echoclient: %s\n", strerror((int)-got));
		free(back);
		return 1;
	}
	printf("Received '%.*s'\n", (int)got, back);
	fflush(stdout);
	int bad = (size_t)got != len || memcmp(back, msg, len) != 0;
	if ((size_t)got < len)
		fprintf(stderr, "echoclient: server closed after %zd of %zu bytes\n", got, len);
	else if (bad)
		fprintf(stderr, "echoclient: the echo differs from what was sent\n");
	free(back);
	return bad;
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: echoclient [--host H] [--port P] [-i] [MESSAGE]\n"
		     "  --host H     server address [127.0.0.1]\n"
		     "  --port P     server port [65432]\n"
		     "  -i           interactive: send each line of standard input, print its echo\n"
		     "  MESSAGE      what to send [Hello, world]\n");
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *port = "65432";
	int interactive = 0;
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' }, { "port", required_argument, NULL, 'p' },
		{ "interactive", no_argument, NULL, 'i' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "H:p:ih", opts, NULL)) != -1) {
		switch (c) {
		case 'H': host = optarg; break;
		case 'p': port = optarg; break;
		case 'i': interactive = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 64;
		}
	}
	if (optind + 1 < argc || (interactive && optind < argc)) {
		usage(stderr);
		return 64;
	}
	int fd = connect_to(host, port);
	if (fd < 0)
		return 1;
	int bad = 0;
	if (interactive) {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n;
		while (!bad && (n = getline(&line, &cap, stdin)) > 0) {
			if (line[n - 1] == '\n')
				line[--n] = '\0';
			if (n > 0)
				bad = round_trip(fd, line, (size_t)n);
		}
		free(line);
	} else {
		const char *msg = optind < argc ? argv[optind] : "Hello, world";
		bad = round_trip(fd, msg, strlen(msg));
	}
	close(fd);
	return bad;
}
