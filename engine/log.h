/* log.h - logfmt lines on stderr: `ts=... level=... event=... key=value ...`, one per event. */
#ifndef ECHOD_LOG_H
#define ECHOD_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);
/* fmt continues the line after `event=...`: space-separated key=value pairs. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

struct sockaddr;
/* "1.2.3.4:5", "[::1]:5", "unix:/path", "unix:@name", "unix:(unnamed)"; "?" if unknown. */
void log_format_addr(const struct sockaddr *sa, unsigned salen, char *out, unsigned long len);

#endif
