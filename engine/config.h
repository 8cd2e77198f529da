/* config.h - echod's command line: defaults, parsing, validation, usage text. */
#ifndef ECHOD_CONFIG_H
#define ECHOD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define ECHOD_VERSION "0.1.0"
#define CONFIG_MAX_LISTEN 8
/* The longest host --listen takes: a DNS name is at most 253 characters, so every name a
 * resolver can answer fits, and anything longer is refused as too long at parse time. */
#define CONFIG_HOST_MAX 253
/* A whole --listen value: "[" host "]:" and a port of at most 7 digits ("0065535"), NUL. */
#define CONFIG_ADDR_LEN (CONFIG_HOST_MAX + 11)

/* Exit codes, documented in --help and README.md (sysexits.h values). */
#define EXIT_USAGE 64       /* bad flag or value */
#define EXIT_UNAVAILABLE 69 /* the chosen backend cannot run here */
#define EXIT_OSERR 71       /* cannot listen, or another OS resource is missing */

/* What a --listen value serves: "HOST:PORT" or "tcp:HOST:PORT", "udp:HOST:PORT",
 * "unix:/path" or "unix:@name" (Linux's abstract namespace). */
enum listen_kind { LISTEN_TCP, LISTEN_UDP, LISTEN_UNIX };
extern const char *const config_listen_kind_names[]; /* "tcp", "udp", "unix" */
/* sun_path holds 108 bytes with the NUL; an abstract name has no NUL but '@' stands for it. */
#define CONFIG_UNIX_PATH_MAX 107

struct config_listener {
	enum listen_kind kind;
	char addr[CONFIG_ADDR_LEN]; /* HOST:PORT, or the path ("@name": abstract) */
};

struct echod_config {
	struct config_listener listen[CONFIG_MAX_LISTEN];
	int nlisten;
	char metrics[CONFIG_MAX_LISTEN][CONFIG_ADDR_LEN]; /* --metrics HOST:PORT; none: off */
	int nmetrics;
	char backend[32];
	unsigned threads;
	uint32_t max_conns;
	uint32_t conn_buffer;
	uint32_t buffers, buffer_size;
	uint32_t idle_timeout_ms, drain_timeout_ms, drain_grace_ms;
	enum log_level log_level;
	int unix_mode;       /* --unix-mode: permissions of unix: socket files; -1: the umask's */
	bool proxy_protocol; /* --proxy-protocol: TCP and Unix connections begin with a header */
	uint32_t proxy_timeout_ms; /* --proxy-timeout: the header's deadline after the accept */
	uint32_t udp_rate;   /* --udp-rate: replies per second per source address; 0: no cap */
	char user[33];       /* --user: who to become after binding; "": stay who we are */
	bool listen_default; /* no --listen given: the default address (not bound when the
			      * service manager passes sockets) */
};

enum config_action { CONFIG_RUN, CONFIG_HELP, CONFIG_VERSION, CONFIG_LIST_BACKENDS,
		     CONFIG_ERROR };

void config_defaults(struct echod_config *cfg);
/* Parses argv into cfg. On CONFIG_ERROR, err holds one line saying what is wrong (no newline;
 * values are quoted and escaped so the line stays one line). Every --listen and --metrics
 * host is checked here: numeric addresses must be valid literals and names must resolve
 * (getaddrinfo), so a bad address is a usage error, not a failure to listen. Timeouts are
 * whole milliseconds: 0, or 1 ms and more. */
enum config_action config_parse(struct echod_config *cfg, int argc, char **argv, char *err,
				size_t errlen);
void config_usage(FILE *out);
/* "127.0.0.1:80", "[::1]:80", "localhost:80" -> host and port strings. 0 or -1 (not
 * HOST:PORT, port above 65535, or a part too long for its buffer). Only the form is checked. */
int config_split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

#endif
