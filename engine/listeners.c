/* listeners.c - binding what --listen names, one kind at a time, for n workers.
 *
 * TCP and Unix stream listeners are ONE socket, bound without SO_REUSEPORT, and every worker
 * accepts from its own dup: a SO_REUSEPORT group can be joined by any process of the same user
 * (a second echod would start and silently take part of the traffic), one plain socket cannot,
 * so a busy address is exit 71 whatever --threads says.
 *
 * UDP has no accept queue to share, and n workers waiting on one datagram socket would all
 * wake for each burst. So each worker gets its own socket in a SO_REUSEPORT group, but the
 * group is founded by a socket bound WITHOUT the option, which is the busy-address check; the
 * option is set on it after its bind (Linux then builds the group when the next member binds),
 * and from then on a plain bind, like a second echod's first, still fails. A classic BPF
 * program steers each datagram by its source ADDRESS, not the kernel's 4-tuple hash, so all of
 * one address's datagrams meet one worker's --udp-rate bucket, whatever ports it uses.
 *
 * Unix socket files: a file where a server still answers is refused (exit 71); a socket file
 * nothing answers is a stale one from a process that died, removed with a log line; the file
 * gets --unix-mode between bind and listen (no one can connect before listen); and at exit it
 * is removed only if it is still the file we bound (a successor may have replaced it).
 */
#include "listeners.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define LISTEN_BACKLOG 4096

static int resolve(const char *spec, int socktype, struct sockaddr_storage *addr, socklen_t *alen)
{
	char host[CONFIG_ADDR_LEN], port[8];
	if (config_split_hostport(spec, host, sizeof(host), port, sizeof(port)) < 0)
		return -EINVAL;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = socktype,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai;
	int gai = getaddrinfo(host, port, &hints, &ai);
	if (gai != 0)
		return gai == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	memcpy(addr, ai->ai_addr, ai->ai_addrlen);
	*alen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int fail_close(int fd)
{
	int err = errno;
	close(fd);
	return -err;
}

/* IPV6_V6ONLY: [::]:7 serves IPv6 only, as written; 0.0.0.0:7 can be listed beside it. */
static int bind_inet(int fd, const struct sockaddr_storage *addr, socklen_t alen)
{
	int one = 1;
	if (addr->ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		return -errno;
	return bind(fd, (const struct sockaddr *)addr, alen) < 0 ? -errno : 0;
}

static int open_tcp(const char *spec, char *where, size_t wlen)
{
	struct sockaddr_storage addr;
	socklen_t alen;
	int rc = resolve(spec, SOCK_STREAM, &addr, &alen);
	if (rc < 0)
		return rc;
	int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	/* SO_REUSEADDR only lets a restart bind past TIME_WAIT connections; it never lets a
	 * second socket bind an address that is listening. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return fail_close(fd);
	if ((rc = bind_inet(fd, &addr, alen)) < 0) {
		close(fd);
		return rc;
	}
	/* Before listen(): every connection accepted from it inherits TCP_NODELAY (echo replies
	 * are small and latency-bound), so the core sets nothing per connection. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return fail_close(fd);
	if (listen(fd, LISTEN_BACKLOG) < 0 || getsockname(fd, (struct sockaddr *)&addr, &alen) < 0)
		return fail_close(fd);
	log_format_addr((struct sockaddr *)&addr, alen, where, wlen);
	return fd;
}

/* sockaddr_un for "/path" or "@name" (abstract: a leading NUL, and no NUL counted after). */
static socklen_t unix_addr(const char *path, struct sockaddr_un *un)
{
	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	size_t n = strlen(path); /* config.c: at most CONFIG_UNIX_PATH_MAX */
	memcpy(un->sun_path, path, n);
	if (path[0] == '@') {
		un->sun_path[0] = '\0';
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	}
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* A socket file at `path`: is a server answering there? connect() tells: refused means no one
 * listens (stale), anything else that is not success is an answer we cannot judge. */
static int probe_unix(const struct sockaddr_un *un, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int rc = connect(fd, (const struct sockaddr *)un, len) == 0 ? 0 : -errno;
	close(fd);
	/* Non-blocking: a live server with a full backlog says EAGAIN; it is still live. */
	if (rc == 0 || rc == -EAGAIN || rc == -EINPROGRESS)
		return 1;
	if (rc == -ECONNREFUSED)
		return 0;
	return rc;
}

static int open_unix(const char *path, int mode, char *where, size_t wlen,
		     struct listener_file *file)
{
	struct sockaddr_un un;
	socklen_t len = unix_addr(path, &un);
	snprintf(where, wlen, "unix:%s", path);
	if (path[0] != '@') {
		struct stat st;
		if (lstat(path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode))
				return -EEXIST; /* a file that is not a socket is never ours to remove */
			int live = probe_unix(&un, len);
			if (live != 0)
				return live > 0 ? -EADDRINUSE : live;
			if (unlink(path) < 0 && errno != ENOENT)
				return -errno;
			log_msg(LOG_WARN, "unix_stale_removed", "path=\"%s\" msg=\"a socket file no "
				"server answered on was left by an earlier run; removed\"", path);
		} else if (errno != ENOENT) {
			return -errno;
		}
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&un, len) < 0)
		return fail_close(fd);
	if (path[0] != '@') {
		struct stat st;
		if ((mode >= 0 && chmod(path, (mode_t)mode) < 0) || stat(path, &st) < 0) {
			int err = errno;
			(void)unlink(path);
			close(fd);
			return -err;
		}
		snprintf(file->path, sizeof(file->path), "%s", path);
		file->dev = st.st_dev;
		file->ino = st.st_ino;
		file->set = true;
	}
	if (listen(fd, LISTEN_BACKLOG) < 0) {
		int err = errno;
		listener_file_remove(file);
		close(fd);
		return -err;
	}
	return fd;
}

void listener_file_remove(struct listener_file *file)
{
	struct stat st;
	if (!file->set)
		return;
	file->set = false;
	if (stat(file->path, &st) == 0 && st.st_dev == file->dev && st.st_ino == file->ino &&
	    unlink(file->path) < 0)
		log_msg(LOG_WARN, "unix_unlink_failed", "path=\"%s\" error=\"%s\"", file->path,
			strerror(errno));
}

/* Steer datagrams to group member hash(source address) % n. Offsets are from the IP header
 * (SKF_NET_OFF): the program runs with the data pointer past the UDP header. A dual-stack
 * socket sees IPv4 headers too, so the version nibble picks the layout. */
static int steer_by_source(int fd, unsigned n)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF),
		BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0),
		/* IPv4: the source is bytes 12..15. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 12)),
		BPF_JUMP(BPF_JMP | BPF_JA, 10, 0, 0), /* to the mix */
		/* IPv6: the source is bytes 8..23, folded into one word. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 8)),
		BPF_STMT(BPF_MISC | BPF_TAX, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 12)),
		BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
		BPF_STMT(BPF_MISC | BPF_TAX, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 16)),
		BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
		BPF_STMT(BPF_MISC | BPF_TAX, 0),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 20)),
		BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
		/* Mix (neighbouring addresses differ in low bits only), then pick a member. */
		BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 0x9e3779b1u),
		BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0
		       ? -errno
		       : 0;
}

static int open_udp(const char *spec, unsigned n, int *fds, char *where, size_t wlen)
{
	struct sockaddr_storage addr;
	socklen_t alen;
	int rc = resolve(spec, SOCK_DGRAM, &addr, &alen);
	if (rc < 0)
		return rc;
	int one = 1;
	unsigned made = 0;
	for (; made < n; made++) {
		int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		fds[made] = fd;
		/* A burst larger than the receive buffer is dropped by the kernel before we see
		 * it: ask for 2 MiB (Linux caps it at net.core.rmem_max, at least doubling the
		 * default; raise that sysctl for more). Best effort: the default still works. */
		int rcvbuf = 2 << 20;
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
		/* The founder binds plain (the busy check), the others join its group. */
		if (made > 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
			rc = -errno;
			made++;
			break;
		}
		rc = bind_inet(fd, &addr, alen);
		if (rc == 0 && made == 0 && n > 1 &&
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
			rc = -errno;
		if (rc == 0 && made == 0 && getsockname(fd, (struct sockaddr *)&addr, &alen) < 0)
			rc = -errno; /* port 0: the members join the port the founder got */
		if (rc < 0) {
			made++;
			break;
		}
	}
	if (rc == 0 && n > 1 && (rc = steer_by_source(fds[0], n)) < 0)
		log_msg(LOG_WARN, "udp_steering_off", "addr=%s error=\"%s\" msg=\"datagrams are "
			"spread by address and port: with --threads the --udp-rate cap holds per "
			"worker\"", spec, strerror(-rc)), rc = 0;
	if (rc < 0) {
		for (unsigned i = 0; i < made; i++)
			close(fds[i]);
		return rc;
	}
	log_format_addr((struct sockaddr *)&addr, alen, where, wlen);
	return 0;
}

/* Every worker's fd for a stream listener: the socket itself for worker 0, dups for the rest
 * (one open socket: one accept queue, and it stops listening when the last worker lets go). */
int listener_share(int fd, unsigned n, int *fds)
{
	fds[0] = fd;
	for (unsigned i = 1; i < n; i++) {
		fds[i] = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (fds[i] < 0) {
			int err = errno;
			for (unsigned j = 0; j < i; j++)
				close(fds[j]);
			return -err;
		}
	}
	return 0;
}

int listener_open(const struct config_listener *l, int unix_mode, unsigned n, int *fds,
		  char *where, size_t wlen, struct listener_file *file)
{
	memset(file, 0, sizeof(*file));
	snprintf(where, wlen, "%s%s", l->kind == LISTEN_UDP ? "udp:" : "", l->addr);
	if (l->kind == LISTEN_UDP)
		return open_udp(l->addr, n, fds, where + 4, wlen - 4);
	int fd = l->kind == LISTEN_UNIX ? open_unix(l->addr, unix_mode, where, wlen, file)
					: open_tcp(l->addr, where, wlen);
	if (fd < 0)
		return fd;
	int rc = listener_share(fd, n, fds);
	if (rc < 0)
		listener_file_remove(file);
	return rc;
}
