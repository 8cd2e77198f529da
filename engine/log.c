/* log.c - logfmt logging. One formatted write per line, so lines from worker threads never
 * interleave; the threshold is checked before any formatting. */
#include "log.h"

#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_level_parse(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_DEBUG; i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

const char *log_level_name(enum log_level level)
{
	return level_names[level];
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	if (level > log_threshold)
		return;
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], event);
	if (fmt && fmt[0] && n > 0 && (size_t)n < sizeof(line) - 2) {
		line[n++] = ' ';
		va_list ap;
		va_start(ap, fmt);
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
		if (m > 0)
			n += m;
	}
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w; /* nowhere left to report a failing stderr */
}

void log_format_addr(const struct sockaddr *sa, unsigned salen, char *out, unsigned long len)
{
	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
		size_t n = salen > offsetof(struct sockaddr_un, sun_path)
				   ? salen - offsetof(struct sockaddr_un, sun_path)
				   : 0;
		if (n == 0) {
			snprintf(out, len, "unix:(unnamed)");
		} else if (un->sun_path[0] == '\0') {
			snprintf(out, len, "unix:@%.*s", (int)(n - 1), un->sun_path + 1);
		} else {
			size_t l = strnlen(un->sun_path, n);
			snprintf(out, len, "unix:%.*s", (int)l, un->sun_path);
		}
		return;
	}
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (getnameinfo(sa, (socklen_t)salen, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, len, "?");
		return;
	}
	snprintf(out, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}
