/* fault_shim.c - fault injection for echod, loaded with LD_PRELOAD (tests/test_faults.c): the
 * socket calls echod makes from user space come back short or fail the way a busy kernel makes
 * them, and echod's own allocations fail the way a full heap does. It owns the hooks, their
 * configuration, the per-thread dice and the one summary line printed at exit.
 *
 *   ECHOD_FAULTS="short_read=0.3,short_write=0.3,eintr=0.05,eagain=0.05,accept_abort=0.02,
 *                 accept_emfile=0.01,accept_enfile=0.01,malloc=0.001,burst=3,pause=16"
 *   ECHOD_FAULT_SEED=N        the dice (default 1); thread k's stream is derived from N and k
 *   ECHOD_FAULT_AFTER_MS=N    no fault at all until N ms after the shim was loaded
 *   ECHOD_FAULT_ARM_FILE=PATH no fault at all until PATH exists (a test creates it once what
 *                             must not fail, its long-lived connections, is in place)
 *
 * Probabilities are per call:
 *   short_read    recv, read, recvmsg, readv on a stream socket return fewer bytes than are
 *                 queued, down to 1: the real call with a smaller length (FIONREAD says what
 *                 is queued), so no byte is ever lost; recvmmsg (datagrams) fills fewer
 *                 messages than it was given room for, down to 1
 *   short_write   send, write, sendmsg, writev on a stream socket take fewer bytes, down to 1:
 *                 the real call with a shorter length; sendmmsg sends fewer of its datagrams,
 *                 down to 1, and the caller must send the rest
 *   eintr         any of those, and accept/accept4: EINTR without calling the real function
 *   eagain        the same, EAGAIN, on a non-blocking socket only; eagain_read, eagain_write
 *                 and eagain_accept set one family (an edge-style backend cannot take all)
 *   accept_abort, accept_emfile, accept_enfile
 *                 accept/accept4 fail with ECONNABORTED, EMFILE or ENFILE for `burst` calls
 *                 in a row (default 3), then at least `pause` calls (default 16) go through
 *   malloc        malloc, calloc, realloc called from echod's own code return NULL
 *   realloc       realloc alone (instead of malloc's probability): tables that grow
 *
 * Only sockets are touched (echod's log writes to a file, its wake-ups read an eventfd; a short
 * read of an eventfd is EINVAL, not a fault), and short lengths only on stream sockets (a short
 * datagram would be a lost one; batches of datagrams are cut by whole datagrams). The failing
 * calls return without calling the kernel, so an EMFILE leaves the connection queued, as the
 * real one does; an injected ECONNABORTED leaves it too (the real one had already taken a dead
 * connection off the queue), so every client is served in the end and a test can demand
 * byte-exact echoes of all of them.
 *
 * Allocations: only those whose caller is echod's executable fail (the return address is
 * checked against its executable segments), never the shim's own, dlsym's, or those libc,
 * liburing or libmicrohttpd make internally, where a NULL would test their code, not echod's.
 * They are armed once echod's start-up is over, which a failure would only turn into exit 1:
 * by the arm file or the clock when given, else at echod's first accept()/accept4() (the
 * readiness backends, whose worker loops are up by then; uring accepts inside the kernel and
 * needs one of the other two). A line `fault_shim: armed by=...` on stderr says when. A
 * thread-local guard keeps everything the shim itself calls away from its own hooks.
 *
 * Threads: each thread has its own slot (dice, accept burst, counters) that only it writes, so
 * the hot path takes no lock and no shared cache line; the exit summary sums the slots:
 *   fault_shim: summary seed=1 armed=1 short_read=N ... malloc=N calls_read=N calls_write=N ...
 * malloc= counts every allocation failed, realloc's too; calls_* count what the hooks saw
 * (after arming), so a test can also prove a backend never makes a call (uring: no recv, send
 * or accept4 at all).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Static TLS (the library is loaded with the program): no allocation on first touch, which a
 * malloc hook could not survive. */
#define TLS __thread __attribute__((tls_model("initial-exec")))
#define EXPORT __attribute__((visibility("default")))

enum fault {
	F_SHORT_READ, F_SHORT_WRITE, F_EINTR, F_EAGAIN, F_ACCEPT_ABORT, F_ACCEPT_EMFILE,
	F_ACCEPT_ENFILE, F_MALLOC, F_COUNT
};
static const char *const fault_names[F_COUNT] = {
	"short_read", "short_write", "eintr", "eagain", "accept_abort", "accept_emfile",
	"accept_enfile", "malloc",
};

enum family { C_READ, C_WRITE, C_ACCEPT, C_ALLOC, C_COUNT };
static const char *const family_names[C_COUNT] = { "read", "write", "accept", "alloc" };

#define P_ONE (1ull << 32) /* probabilities are fractions of 2^32, compared to 32 random bits */

/* Written by the constructor before any thread exists, read-only after. */
static struct {
	bool any;                  /* some fault configured */
	uint64_t short_read, short_write, eintr, malloc_p, realloc_p;
	bool realloc_set;          /* realloc= given: realloc_p, not malloc_p, for realloc */
	uint64_t eagain[C_ACCEPT + 1]; /* per family */
	uint64_t accept_p[3];      /* abort, emfile, enfile */
	unsigned burst, pause;
	uint64_t seed;
	long long after_ms;        /* -1: arm allocations at the first accept */
	char arm_file[256];        /* when set: no fault until this file exists */
	uint64_t t0_ms;
	uintptr_t exe_lo[4], exe_hi[4]; /* echod's executable segments */
	int nexe;
} cfg = { .burst = 3, .pause = 16, .seed = 1, .after_ms = -1 };

static atomic_bool armed;   /* faults from now on (after_ms), allocations too */
static _Atomic uint64_t arm_file_checked_ms; /* the arm file is looked for every 10 ms */

struct slot {
	uint64_t rng;
	unsigned burst_left, pause_left;
	int burst_err;
	int next_burst_err; /* the kind the next burst is of (they take turns) */
	uint64_t faults[F_COUNT], calls[C_COUNT]; /* written by the owner, read at exit */
};
#define MAX_THREADS 512
static struct slot slots[MAX_THREADS];
static atomic_uint nslots;
static TLS struct slot *self;
static TLS int busy; /* inside the shim: every hook passes straight through */

/* --- the real functions -------------------------------------------------------------------- */

static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_recvmmsg)(int, struct mmsghdr *, unsigned, int, struct timespec *);
static int (*real_sendmmsg)(int, struct mmsghdr *, unsigned, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);

/* dlsym may allocate before real_malloc is known: those few bytes come from here, are never
 * freed, and never fail. */
static _Alignas(16) char boot[8192];
static size_t boot_used;
static bool resolving;

static bool in_boot(const void *p)
{
	return (const char *)p >= boot && (const char *)p < boot + sizeof(boot);
}

static void *boot_alloc(size_t n)
{
	size_t need = (n + 16 + 15) & ~(size_t)15; /* a 16-byte header holds the size */
	if (need > sizeof(boot) - boot_used)
		return NULL;
	char *p = boot + boot_used;
	boot_used += need;
	memcpy(p, &n, sizeof(n));
	return p + 16;
}

/* Function pointers from dlsym are object pointers to POSIX: copy, do not cast. */
#define RESOLVE(name)                                                   \
	do {                                                            \
		void *sym_ = dlsym(RTLD_NEXT, #name);                   \
		memcpy(&real_##name, &sym_, sizeof(sym_));              \
	} while (0)

/* Before main() (the constructor, or an earlier hook on the one thread there is): no race. */
static void resolve(void)
{
	if (resolving)
		return;
	resolving = true;
	busy++;
	RESOLVE(malloc);
	RESOLVE(calloc);
	RESOLVE(realloc);
	RESOLVE(free);
	RESOLVE(recv);
	RESOLVE(read);
	RESOLVE(recvmsg);
	RESOLVE(readv);
	RESOLVE(send);
	RESOLVE(write);
	RESOLVE(sendmsg);
	RESOLVE(writev);
	RESOLVE(recvmmsg);
	RESOLVE(sendmmsg);
	RESOLVE(accept);
	RESOLVE(accept4);
	busy--;
	resolving = false;
}

#define NEED(name)                   \
	do {                         \
		if (!real_##name)    \
			resolve();   \
	} while (0)

/* --- configuration ------------------------------------------------------------------------- */

static uint64_t clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void say(const char *line)
{
	busy++;
	if (real_write) {
		ssize_t w = real_write(STDERR_FILENO, line, strlen(line));
		(void)w; /* nowhere to report a failing stderr */
	}
	busy--;
}

/* A typo must not quietly test nothing: a bad ECHOD_FAULTS stops the process at once. */
static void bad_config(const char *what, const char *item)
{
	char line[256];
	snprintf(line, sizeof(line), "fault_shim: ECHOD_FAULTS: %s '%s' (faults: short_read "
		 "short_write eintr eagain eagain_read eagain_write eagain_accept accept_abort "
		 "accept_emfile accept_enfile malloc realloc; burst=N pause=N)\n", what, item);
	say(line);
	_exit(64);
}

static uint64_t parse_p(const char *item, const char *v)
{
	char *end;
	double p = strtod(v, &end);
	if (end == v || *end || !(p >= 0 && p <= 1))
		bad_config("not a probability from 0 to 1 in", item);
	return (uint64_t)(p * (double)P_ONE);
}

static void parse_item(const char *item)
{
	const char *eq = strchr(item, '=');
	if (!eq)
		bad_config("no value in", item);
	size_t klen = (size_t)(eq - item);
	const char *v = eq + 1;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(item, k, klen) == 0)
	if (KEY("burst") || KEY("pause")) {
		char *end;
		unsigned long n = strtoul(v, &end, 10);
		if (end == v || *end || n > 1000000 || (KEY("burst") && n == 0))
			bad_config("not a count (burst 1 or more) in", item);
		*(KEY("burst") ? &cfg.burst : &cfg.pause) = (unsigned)n;
		return;
	}
	uint64_t p = parse_p(item, v);
	cfg.any |= p > 0;
	if (KEY("short_read"))
		cfg.short_read = p;
	else if (KEY("short_write"))
		cfg.short_write = p;
	else if (KEY("eintr"))
		cfg.eintr = p;
	else if (KEY("eagain"))
		cfg.eagain[C_READ] = cfg.eagain[C_WRITE] = cfg.eagain[C_ACCEPT] = p;
	else if (KEY("eagain_read"))
		cfg.eagain[C_READ] = p;
	else if (KEY("eagain_write"))
		cfg.eagain[C_WRITE] = p;
	else if (KEY("eagain_accept"))
		cfg.eagain[C_ACCEPT] = p;
	else if (KEY("accept_abort"))
		cfg.accept_p[0] = p;
	else if (KEY("accept_emfile"))
		cfg.accept_p[1] = p;
	else if (KEY("accept_enfile"))
		cfg.accept_p[2] = p;
	else if (KEY("malloc"))
		cfg.malloc_p = p;
	else if (KEY("realloc")) {
		cfg.realloc_p = p;
		cfg.realloc_set = true;
	}
	else
		bad_config("unknown fault", item);
#undef KEY
}

/* The program's own executable segments: the first object dl_iterate_phdr reports. */
static int find_exe(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	for (int i = 0; i < info->dlpi_phnum && cfg.nexe < 4; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		cfg.exe_lo[cfg.nexe] = info->dlpi_addr + ph->p_vaddr;
		cfg.exe_hi[cfg.nexe] = cfg.exe_lo[cfg.nexe] + ph->p_memsz;
		cfg.nexe++;
	}
	return 1; /* the first is the program */
}

__attribute__((constructor)) static void shim_init(void)
{
	busy++;
	NEED(malloc);
	cfg.t0_ms = clock_ms();
	const char *seed = getenv("ECHOD_FAULT_SEED");
	if (seed && *seed)
		cfg.seed = strtoull(seed, NULL, 10);
	const char *after = getenv("ECHOD_FAULT_AFTER_MS");
	if (after && *after)
		cfg.after_ms = strtoll(after, NULL, 10);
	const char *file = getenv("ECHOD_FAULT_ARM_FILE");
	if (file && *file)
		snprintf(cfg.arm_file, sizeof(cfg.arm_file), "%s", file);
	const char *spec = getenv("ECHOD_FAULTS");
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", spec ? spec : "");
	for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
	     item = strtok_r(NULL, ",", &save))
		parse_item(item);
	dl_iterate_phdr(find_exe, NULL);
	busy--;
}

/* --- dice and bookkeeping ------------------------------------------------------------------ */

static uint64_t next(struct slot *s)
{
	/* splitmix64 */
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static bool roll(struct slot *s, uint64_t p)
{
	return p && (next(s) >> 32) < p;
}

static void bump(uint64_t *n)
{
	__atomic_store_n(n, *n + 1, __ATOMIC_RELAXED); /* one writer; read by the exit summary */
}

static void arm(const char *why)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed) || atomic_exchange(&armed, true))
		return;
	char line[128];
	snprintf(line, sizeof(line), "fault_shim: armed by=%s after_ms=%llu\n", why,
		 (unsigned long long)(clock_ms() - cfg.t0_ms));
	say(line);
}

/* Has the test created the arm file? Looked for at most every 10 ms, whatever the threads. */
static bool arm_file_exists(void)
{
	uint64_t now = clock_ms();
	uint64_t last = atomic_load_explicit(&arm_file_checked_ms, memory_order_relaxed);
	if (last && now - last < 10)
		return false;
	atomic_store_explicit(&arm_file_checked_ms, now, memory_order_relaxed);
	busy++;
	bool there = access(cfg.arm_file, F_OK) == 0;
	busy--;
	if (there)
		arm("file");
	return there;
}

/* Faults may happen now: I/O at once unless ECHOD_FAULT_ARM_FILE or ECHOD_FAULT_AFTER_MS says
 * not yet. */
static bool io_live(void)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		return true;
	if (cfg.arm_file[0])
		return arm_file_exists();
	if (cfg.after_ms < 0)
		return true;
	if (clock_ms() - cfg.t0_ms < (uint64_t)cfg.after_ms)
		return false;
	arm("after_ms");
	return true;
}

/* This thread's slot when a hook of `family` may inject now, counting the call; else NULL. */
static struct slot *hook(enum family family)
{
	if (!cfg.any || busy || !io_live())
		return NULL;
	struct slot *s = self;
	if (!s) {
		unsigned i = atomic_fetch_add(&nslots, 1);
		if (i >= MAX_THREADS)
			return NULL; /* more threads than slots: those run without faults */
		s = self = &slots[i];
		s->rng = cfg.seed * 0x2545f4914f6cdd1dull + i;
	}
	bump(&s->calls[family]);
	return s;
}

static int count(struct slot *s, enum fault f, int err)
{
	bump(&s->faults[f]);
	return err;
}

/* SO_TYPE of fd, or 0 when it is not a socket. Asked only when a fault has been rolled. */
static int sock_type(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);
	busy++;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		type = 0;
	busy--;
	return type;
}

static bool nonblocking(int fd, int flags)
{
	busy++;
	bool nb = (flags & MSG_DONTWAIT) || (fcntl(fd, F_GETFL) & O_NONBLOCK);
	busy--;
	return nb;
}

/* EINTR or EAGAIN instead of the call, or 0. */
static int io_error(struct slot *s, enum family family, int fd, int flags)
{
	bool eintr = roll(s, cfg.eintr);
	bool eagain = !eintr && roll(s, cfg.eagain[family]);
	if (!(eintr || eagain) || !sock_type(fd))
		return 0;
	if (eintr)
		return count(s, F_EINTR, EINTR);
	return nonblocking(fd, flags) ? count(s, F_EAGAIN, EAGAIN) : 0;
}

/* A length from 1 to max - 1. */
static size_t shorter(struct slot *s, size_t max)
{
	return 1 + (size_t)(next(s) % (max - 1));
}

/* How many of len bytes a read may take: fewer than are queued when the dice say so. */
static size_t read_len(struct slot *s, int fd, size_t len)
{
	if (len < 2 || !roll(s, cfg.short_read) || sock_type(fd) != SOCK_STREAM)
		return len;
	int queued = 0;
	busy++;
	int rc = ioctl(fd, FIONREAD, &queued);
	busy--;
	size_t cap = rc == 0 && queued > 0 && (size_t)queued < len ? (size_t)queued : len;
	if (cap < 2)
		return len; /* one byte or none queued: nothing to cut */
	count(s, F_SHORT_READ, 0);
	return shorter(s, cap);
}

static size_t write_len(struct slot *s, int fd, size_t len)
{
	if (len < 2 || !roll(s, cfg.short_write) || sock_type(fd) != SOCK_STREAM)
		return len;
	count(s, F_SHORT_WRITE, 0);
	return shorter(s, len);
}

/* An iovec array cut to `want` bytes in `out` (at most IOV_CUT entries); its count. */
#define IOV_CUT 64
static int iov_cut(const struct iovec *iov, int n, size_t want, struct iovec *out)
{
	int k = 0;
	for (; k < n && want; k++) {
		out[k] = iov[k];
		if (out[k].iov_len > want)
			out[k].iov_len = want;
		want -= out[k].iov_len;
	}
	return k;
}

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;
	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* The start of every I/O hook: this thread's slot when faults may be injected now (else NULL),
 * and in *err an EINTR or EAGAIN to fail the call with instead (else 0). */
static struct slot *io_hook(enum family family, int fd, int flags, int *err)
{
	struct slot *s = hook(family);
	*err = s ? io_error(s, family, fd, flags) : 0;
	return s;
}

/* A call failed without reaching the kernel. */
static int injected(int err)
{
	errno = err;
	return -1;
}

/* --- reads --------------------------------------------------------------------------------- */

EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	NEED(recv);
	int err;
	struct slot *s = io_hook(C_READ, fd, flags, &err);
	if (err)
		return injected(err);
	if (s)
		len = read_len(s, fd, len);
	return real_recv(fd, buf, len, flags);
}

EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	NEED(read);
	int err;
	struct slot *s = io_hook(C_READ, fd, 0, &err);
	if (err)
		return injected(err);
	if (s)
		len = read_len(s, fd, len);
	return real_read(fd, buf, len);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
	NEED(readv);
	int err;
	struct slot *s = io_hook(C_READ, fd, 0, &err);
	if (err)
		return injected(err);
	if (s && n > 0 && n <= IOV_CUT) {
		size_t total = iov_total(iov, n), want = read_len(s, fd, total);
		if (want < total) {
			struct iovec cut[IOV_CUT];
			return real_readv(fd, cut, iov_cut(iov, n, want, cut));
		}
	}
	return real_readv(fd, iov, n);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	NEED(recvmsg);
	int err;
	struct slot *s = io_hook(C_READ, fd, flags, &err);
	if (err)
		return injected(err);
	if (s && msg && msg->msg_iovlen > 0 && msg->msg_iovlen <= IOV_CUT) {
		int n = (int)msg->msg_iovlen;
		size_t total = iov_total(msg->msg_iov, n), want = read_len(s, fd, total);
		if (want < total) {
			struct iovec cut[IOV_CUT];
			struct msghdr m = *msg;
			m.msg_iov = cut;
			m.msg_iovlen = (size_t)iov_cut(msg->msg_iov, n, want, cut);
			ssize_t r = real_recvmsg(fd, &m, flags);
			/* what the kernel writes back: the source's length, control, flags */
			msg->msg_namelen = m.msg_namelen;
			msg->msg_controllen = m.msg_controllen;
			msg->msg_flags = m.msg_flags;
			return r;
		}
	}
	return real_recvmsg(fd, msg, flags);
}

/* Of a batch of n datagrams, how many a call may take: fewer when the dice (p) say so. */
static unsigned batch_len(struct slot *s, enum fault f, uint64_t p, unsigned n)
{
	if (n < 2 || !roll(s, p))
		return n;
	count(s, f, 0);
	return (unsigned)shorter(s, n);
}

EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *timeout)
{
	NEED(recvmmsg);
	int err;
	struct slot *s = io_hook(C_READ, fd, flags, &err);
	if (err)
		return injected(err);
	if (s)
		n = batch_len(s, F_SHORT_READ, cfg.short_read, n);
	return real_recvmmsg(fd, v, n, flags, timeout);
}

/* --- writes -------------------------------------------------------------------------------- */

EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	NEED(send);
	int err;
	struct slot *s = io_hook(C_WRITE, fd, flags, &err);
	if (err)
		return injected(err);
	if (s)
		len = write_len(s, fd, len);
	return real_send(fd, buf, len, flags);
}

EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	NEED(write);
	int err;
	struct slot *s = io_hook(C_WRITE, fd, 0, &err);
	if (err)
		return injected(err);
	if (s)
		len = write_len(s, fd, len);
	return real_write(fd, buf, len);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	NEED(writev);
	int err;
	struct slot *s = io_hook(C_WRITE, fd, 0, &err);
	if (err)
		return injected(err);
	if (s && n > 0 && n <= IOV_CUT) {
		size_t total = iov_total(iov, n), want = write_len(s, fd, total);
		if (want < total) {
			struct iovec cut[IOV_CUT];
			return real_writev(fd, cut, iov_cut(iov, n, want, cut));
		}
	}
	return real_writev(fd, iov, n);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	NEED(sendmsg);
	int err;
	struct slot *s = io_hook(C_WRITE, fd, flags, &err);
	if (err)
		return injected(err);
	if (s && msg && msg->msg_iovlen > 0 && msg->msg_iovlen <= IOV_CUT) {
		int n = (int)msg->msg_iovlen;
		size_t total = iov_total(msg->msg_iov, n), want = write_len(s, fd, total);
		if (want < total) {
			struct iovec cut[IOV_CUT];
			struct msghdr m = *msg;
			m.msg_iov = cut;
			m.msg_iovlen = (size_t)iov_cut(msg->msg_iov, n, want, cut);
			return real_sendmsg(fd, &m, flags);
		}
	}
	return real_sendmsg(fd, msg, flags);
}

EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
	NEED(sendmmsg);
	int err;
	struct slot *s = io_hook(C_WRITE, fd, flags, &err);
	if (err)
		return injected(err);
	if (s)
		n = batch_len(s, F_SHORT_WRITE, cfg.short_write, n);
	return real_sendmmsg(fd, v, n, flags);
}

/* --- accepting ----------------------------------------------------------------------------- */

static const int accept_errs[3] = { ECONNABORTED, EMFILE, ENFILE };
static const enum fault accept_faults[3] = { F_ACCEPT_ABORT, F_ACCEPT_EMFILE, F_ACCEPT_ENFILE };

/* An error instead of the accept, or 0: a burst under way, a new one, EINTR, EAGAIN. */
static int accept_error(struct slot *s, int fd)
{
	if (s->burst_left) {
		if (--s->burst_left == 0)
			s->pause_left = cfg.pause;
		return count(s, accept_faults[s->burst_err], accept_errs[s->burst_err]);
	}
	if (s->pause_left) {
		s->pause_left--;
	} else if (roll(s, cfg.accept_p[0] + cfg.accept_p[1] + cfg.accept_p[2])) {
		/* One roll for "a burst now", then the configured kinds in turn: a short run
		 * still meets every kind it asked for, where independent rolls may miss one. */
		for (int k = 0; k < 3; k++) {
			int i = (s->next_burst_err + k) % 3;
			if (cfg.accept_p[i] <= 0)
				continue;
			s->next_burst_err = (i + 1) % 3;
			s->burst_err = i;
			s->burst_left = cfg.burst;
			return accept_error(s, fd);
		}
	}
	return io_error(s, C_ACCEPT, fd, 0);
}

EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	NEED(accept4);
	if (cfg.any && !busy && cfg.after_ms < 0 && !cfg.arm_file[0])
		arm("accept");
	struct slot *s = hook(C_ACCEPT);
	int err = s ? accept_error(s, fd) : 0;
	if (err) {
		errno = err;
		return -1;
	}
	return real_accept4(fd, sa, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	NEED(accept);
	if (cfg.any && !busy && cfg.after_ms < 0 && !cfg.arm_file[0])
		arm("accept");
	struct slot *s = hook(C_ACCEPT);
	int err = s ? accept_error(s, fd) : 0;
	if (err) {
		errno = err;
		return -1;
	}
	return real_accept(fd, sa, len);
}

/* --- allocations --------------------------------------------------------------------------- */

static bool from_exe(const void *caller)
{
	uintptr_t a = (uintptr_t)caller;
	for (int i = 0; i < cfg.nexe; i++)
		if (a >= cfg.exe_lo[i] && a < cfg.exe_hi[i])
			return true;
	return false;
}

/* Allocations may fail from now on: the arm file is there, ECHOD_FAULT_AFTER_MS has passed,
 * or else echod has called accept. */
static bool alloc_live(void)
{
	return cfg.arm_file[0] || cfg.after_ms >= 0
		       ? io_live()
		       : atomic_load_explicit(&armed, memory_order_relaxed);
}

/* Should this allocation (probability p), called from `caller`, fail? */
static bool alloc_fails(const void *caller, uint64_t p)
{
	if (!p || busy || !from_exe(caller) || !alloc_live())
		return false;
	struct slot *s = hook(C_ALLOC);
	if (!s || !roll(s, p))
		return false;
	count(s, F_MALLOC, 0);
	errno = ENOMEM;
	return true;
}

EXPORT void *malloc(size_t n)
{
	if (!real_malloc) {
		if (resolving)
			return boot_alloc(n);
		resolve();
	}
	if (alloc_fails(__builtin_return_address(0), cfg.malloc_p))
		return NULL;
	return real_malloc(n);
}

EXPORT void *calloc(size_t n, size_t size)
{
	if (!real_calloc) {
		if (resolving)
			return n && size > SIZE_MAX / n ? NULL : boot_alloc(n * size); /* zeroed */
		resolve();
	}
	if (alloc_fails(__builtin_return_address(0), cfg.malloc_p))
		return NULL;
	return real_calloc(n, size);
}

EXPORT void *realloc(void *p, size_t n)
{
	if (!real_realloc) {
		if (resolving)
			return NULL; /* nothing reallocates while dlsym runs */
		resolve();
	}
	if (in_boot(p)) {
		size_t old;
		memcpy(&old, (char *)p - 16, sizeof(old));
		void *q = real_malloc(n);
		if (q)
			memcpy(q, p, old < n ? old : n);
		return q;
	}
	if (alloc_fails(__builtin_return_address(0), cfg.realloc_set ? cfg.realloc_p : cfg.malloc_p))
		return NULL;
	return real_realloc(p, n);
}

EXPORT void free(void *p)
{
	if (!p || in_boot(p))
		return;
	if (!real_free)
		resolve();
	real_free(p);
}

/* --- the summary --------------------------------------------------------------------------- */

static uint64_t load(const uint64_t *n)
{
	return __atomic_load_n(n, __ATOMIC_RELAXED);
}

__attribute__((destructor)) static void shim_fini(void)
{
	busy++;
	uint64_t faults[F_COUNT] = { 0 }, calls[C_COUNT] = { 0 };
	unsigned n = atomic_load(&nslots);
	if (n > MAX_THREADS)
		n = MAX_THREADS;
	for (unsigned i = 0; i < n; i++) {
		for (int f = 0; f < F_COUNT; f++)
			faults[f] += load(&slots[i].faults[f]);
		for (int c = 0; c < C_COUNT; c++)
			calls[c] += load(&slots[i].calls[c]);
	}
	char line[512];
	int len = snprintf(line, sizeof(line), "fault_shim: summary seed=%llu armed=%d threads=%u",
			   (unsigned long long)cfg.seed, (int)atomic_load(&armed), n);
	for (int f = 0; f < F_COUNT && len > 0 && (size_t)len < sizeof(line); f++)
		len += snprintf(line + len, sizeof(line) - (size_t)len, " %s=%llu", fault_names[f],
				(unsigned long long)faults[f]);
	for (int c = 0; c < C_COUNT && len > 0 && (size_t)len < sizeof(line); c++)
		len += snprintf(line + len, sizeof(line) - (size_t)len, " calls_%s=%llu",
				family_names[c], (unsigned long long)calls[c]);
	if (len > 0 && (size_t)len < sizeof(line) - 1) {
		line[len] = '\n';
		line[len + 1] = '\0';
		say(line);
	}
	busy--;
}
