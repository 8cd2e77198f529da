/* test_install.c - `make install DESTDIR=<temporary dir> PREFIX=/usr` from the repository, with
 * this build's programs (BUILD=<the build directory this test was built in>), then: the tree
 * holds exactly the three programs, three manual pages and two systemd units, with their modes;
 * the installed echod runs; mandoc -Tlint has nothing to say about the installed pages;
 * systemd-analyze verify has nothing to say about the installed units in that root; and
 * `make uninstall` leaves no file behind. A few seconds; mandoc or systemd-analyze absent: that
 * case skips with one line.
 *
 * Nothing is compiled: make gets `-o` for each program (never remade, nor checked against its
 * sources), since make test runs this from build, build/san and build/nouring, whose flags a bare
 * `make BUILD=build/nouring` would not reproduce; the test also checks the programs kept their
 * modification times and were installed byte for byte. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_proc.h"

#define MAKE_MS 60000 /* no compiling: a fraction of a second, but a loaded machine... */
#define TOOL_MS 30000

/* What `make install PREFIX=/usr` installs, sorted as strcmp sorts. */
static const struct {
	const char *path;
	mode_t mode;
} expected[] = {
	{ "usr/bin/echoclient", 0755 },
	{ "usr/bin/echod", 0755 },
	{ "usr/bin/echoload", 0755 },
	{ "usr/lib/systemd/system/echod.service", 0644 },
	{ "usr/lib/systemd/system/echod.socket", 0644 },
	{ "usr/share/man/man1/echoclient.1", 0644 },
	{ "usr/share/man/man1/echoload.1", 0644 },
	{ "usr/share/man/man8/echod.8", 0644 },
};
#define NEXPECTED (sizeof(expected) / sizeof(expected[0]))
static const char *const programs[] = { "echod", "echoclient", "echoload" };

static char build_dir[PATH_MAX]; /* absolute */
static char repo[PATH_MAX];      /* where the Makefile is */
static char dest[PATH_MAX];      /* DESTDIR */
static int install_rc = -1;
static char *install_out;
static struct timespec built_mtime[3];

/* ---- helpers ------------------------------------------------------------------------------ */

static bool find_program(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(out, len, "%.*s/%s", (int)n, n ? path : ".", name);
		if (access(out, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* Run argv to completion; returns its exit status (-1: did not finish in time, killed) and in
 * *output its stdout followed by its stderr (malloc'd). */
static int run(const char *const *argv, int timeout_ms, char **output)
{
	struct child c;
	int rc = proc_run(argv, timeout_ms, &c);
	char *out = proc_out(&c), *err = proc_log(&c);
	size_t lo = strlen(out), le = strlen(err);
	char *all = malloc(lo + le + 1);
	assert_non_null(all);
	memcpy(all, out, lo);
	memcpy(all + lo, err, le + 1);
	free(out);
	free(err);
	proc_cleanup(&c);
	*output = all;
	return rc;
}

/* Every non-directory under dest, relative to it, sorted. */
static char *found[256];
static size_t nfound;

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_D || type == FTW_DP)
		return 0;
	size_t skip = strlen(dest) + 1;
	if (nfound < sizeof(found) / sizeof(found[0]))
		found[nfound++] = strdup(strlen(path) > skip ? path + skip : path);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk_dest(void)
{
	for (size_t i = 0; i < nfound; i++)
		free(found[i]);
	nfound = 0;
	assert_int_equal(nftw(dest, collect, 16, FTW_PHYS), 0);
	qsort(found, nfound, sizeof(found[0]), by_name);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

static void remove_tree(const char *path)
{
	nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static bool same_file_content(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool same = fa && fb;
	while (same) {
		char x[65536], y[65536];
		size_t na = fread(x, 1, sizeof(x), fa), nb = fread(y, 1, sizeof(y), fb);
		if (na != nb || memcmp(x, y, na) != 0)
			same = false;
		if (na == 0)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

static int copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	if (!in)
		return -1;
	FILE *out = fopen(to, "wb");
	if (!out) {
		fclose(in);
		return -1;
	}
	char buf[8192];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
	fclose(in);
	return fclose(out);
}

/* make -s -C REPO TARGET DESTDIR=dest PREFIX=/usr BUILD=build -o BUILD/echod ... */
static int run_make(const char *target, char **output)
{
	char mk[PATH_MAX], d[PATH_MAX + 16], b[PATH_MAX + 16], old[3][PATH_MAX + 16];
	if (!find_program("make", mk, sizeof(mk))) {
		*output = strdup("make is not installed\n");
		return -1;
	}
	snprintf(d, sizeof(d), "DESTDIR=%s", dest);
	snprintf(b, sizeof(b), "BUILD=%s", build_dir);
	for (int i = 0; i < 3; i++)
		snprintf(old[i], sizeof(old[i]), "%s/%s", build_dir, programs[i]);
	const char *argv[] = { mk, "-s", "--no-print-directory", "-C", repo, target, d,
			       "PREFIX=/usr", b, "-o", old[0], "-o", old[1], "-o", old[2], NULL };
	return run(argv, MAKE_MS, output);
}

static bool is_repo(const char *dir)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/Makefile", dir);
	if (access(p, R_OK) != 0)
		return false;
	snprintf(p, sizeof(p), "%s/tools/systemd/echod.service", dir);
	return access(p, R_OK) == 0;
}

/* The repository: the nearest directory at or above the build directory with the Makefile
 * (build, build/san, build/nouring), else the current directory (an out-of-tree BUILD=dir
 * run from the repository). */
static bool find_repo(void)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", build_dir);
	for (;;) {
		if (is_repo(dir)) {
			snprintf(repo, sizeof(repo), "%s", dir);
			return true;
		}
		char *slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			break;
		*slash = '\0';
	}
	return getcwd(dir, sizeof(dir)) && is_repo(dir) &&
	       snprintf(repo, sizeof(repo), "%s", dir) > 0;
}

/* ---- the install, once for the whole group ------------------------------------------------ */

static int group_setup(void **state)
{
	(void)state;
	/* A make test's own make flags (jobserver fds, its command-line variables) and any
	 * directory variables in the environment are not this install's. */
	static const char *const unset[] = { "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
					     "GNUMAKEFLAGS", "DESTDIR", "PREFIX", "BINDIR", "MANDIR",
					     "SYSTEMDUNITDIR", "BUILD", "SANITIZE" };
	for (size_t i = 0; i < sizeof(unset) / sizeof(unset[0]); i++)
		unsetenv(unset[i]);
	if (!find_repo()) {
		install_out = strdup("cannot find the repository (Makefile and tools/systemd/) at "
				     "or above the build directory or in the current directory\n");
		return 0;
	}
	for (int i = 0; i < 3; i++) {
		char p[PATH_MAX + 16];
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s", build_dir, programs[i]);
		if (stat(p, &st) == 0)
			built_mtime[i] = st.st_mtim;
	}
	snprintf(dest, sizeof(dest), "/tmp/echod-install-XXXXXX");
	if (!mkdtemp(dest)) {
		dest[0] = '\0';
		install_out = strdup("mkdtemp failed\n");
		return 0;
	}
	install_rc = run_make("install", &install_out);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	proc_kill_strays();
	if (dest[0])
		remove_tree(dest);
	for (size_t i = 0; i < nfound; i++)
		free(found[i]);
	free(install_out);
	return 0;
}

static void require_installed(void)
{
	static bool said;
	if (install_rc != 0) {
		if (!said)
			print_error("make install DESTDIR=%s PREFIX=/usr BUILD=%s (in %s): exit %d:\n%s",
				    dest, build_dir, repo[0] ? repo : "?", install_rc,
				    install_out ? install_out : "");
		else
			print_error("make install failed (above)\n");
		said = true;
		fail();
	}
}

/* ---- the cases ---------------------------------------------------------------------------- */

static void test_install_tree(void **state)
{
	(void)state;
	require_installed();
	walk_dest();
	/* A merge of the two sorted lists: what is missing, what should not be there. */
	bool ok = true;
	size_t i = 0, j = 0;
	while (i < NEXPECTED || j < nfound) {
		int cmp = i == NEXPECTED ? 1 : j == nfound ? -1 : strcmp(expected[i].path, found[j]);
		if (cmp < 0) {
			print_error("missing:    %s\n", expected[i++].path);
			ok = false;
		} else if (cmp > 0) {
			print_error("unexpected: %s\n", found[j++]);
			ok = false;
		} else {
			char p[PATH_MAX * 2];
			struct stat st;
			snprintf(p, sizeof(p), "%s/%s", dest, expected[i].path);
			if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode) ||
			    (st.st_mode & 07777) != expected[i].mode) {
				print_error("%s: mode %04o%s, want %04o\n", expected[i].path,
					    (unsigned)(st.st_mode & 07777),
					    S_ISREG(st.st_mode) ? "" : " (not a regular file)",
					    (unsigned)expected[i].mode);
				ok = false;
			}
			i++;
			j++;
		}
	}
	if (!ok && install_out[0])
		print_error("make install output:\n%s", install_out);
	assert_true(ok);

	/* This build's programs, untouched by the install (not relinked), copied byte for byte. */
	for (int k = 0; k < 3; k++) {
		char built[PATH_MAX + 16], inst[PATH_MAX + 32];
		struct stat st;
		snprintf(built, sizeof(built), "%s/%s", build_dir, programs[k]);
		snprintf(inst, sizeof(inst), "%s/usr/bin/%s", dest, programs[k]);
		assert_int_equal(stat(built, &st), 0);
		if (st.st_mtim.tv_sec != built_mtime[k].tv_sec ||
		    st.st_mtim.tv_nsec != built_mtime[k].tv_nsec) {
			print_error("%s was rebuilt by make install\n", built);
			fail();
		}
		if (!same_file_content(built, inst)) {
			print_error("%s differs from %s\n", inst, built);
			fail();
		}
	}

	/* The service runs the installed echod, not the repo's /usr/bin default by accident:
	 * with PREFIX=/usr both are /usr/bin/echod, so look for exactly one such line. */
	char unit[PATH_MAX + 64];
	snprintf(unit, sizeof(unit), "%s/usr/lib/systemd/system/echod.service", dest);
	FILE *f = fopen(unit, "r");
	assert_non_null(f);
	char line[1024];
	int execs = 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "ExecStart=", 10) == 0) {
			execs++;
			if (strncmp(line, "ExecStart=/usr/bin/echod ", 25) != 0) {
				print_error("echod.service: %s", line);
				fail();
			}
		}
	fclose(f);
	assert_int_equal(execs, 1);
}

static void test_installed_echod_runs(void **state)
{
	(void)state;
	require_installed();
	char bin[PATH_MAX + 32];
	snprintf(bin, sizeof(bin), "%s/usr/bin/echod", dest);
	const char *argv[] = { bin, "--version", NULL };
	char *out;
	int rc = run(argv, TOOL_MS, &out);
	if (rc != 0 || strncmp(out, "echod ", 6) != 0) {
		print_error("%s --version: exit %d:\n%s", bin, rc, out);
		free(out);
		fail();
	}
	free(out);
}

/* mandoc -Tlint, every level down to style, on the installed pages. Two kinds of message are
 * about this host rather than the pages, and are left out (as tests/test_manpages.c does on
 * tools/man): "referenced manual not found" (whether sd_notify(3) or haproxy(1) is installed
 * here is the host's business; and mandoc looks only in its fixed manpath, /usr/share/man and
 * the like, never beside the page, so a reference to one of the three pages themselves is
 * checked against the tree instead: it must be installed there), and mandoc's note that the
 * host's mandoc.db is out of date. Anything else fails the case. */
static void test_installed_manpages_lint(void **state)
{
	(void)state;
	require_installed();
	char mandoc[PATH_MAX];
	if (!find_program("mandoc", mandoc, sizeof(mandoc))) {
		print_message("  [install] mandoc -Tlint skipped: mandoc is not installed "
			      "(tools/install-deps installs it)\n");
		skip();
	}
	char pages[3][PATH_MAX + 64];
	snprintf(pages[0], sizeof(pages[0]), "%s/usr/share/man/man8/echod.8", dest);
	snprintf(pages[1], sizeof(pages[1]), "%s/usr/share/man/man1/echoload.1", dest);
	snprintf(pages[2], sizeof(pages[2]), "%s/usr/share/man/man1/echoclient.1", dest);
	const char *argv[] = { mandoc, "-Tlint", pages[0], pages[1], pages[2], NULL };
	char *out;
	int rc = run(argv, TOOL_MS, &out);
	static const char *const ours[] = { "Xr echod 8", "Xr echoload 1", "Xr echoclient 1" };
	static const char *const files[] = { "man8/echod.8", "man1/echoload.1",
					     "man1/echoclient.1" };
	char *rest = calloc(1, strlen(out) + 1);
	assert_non_null(rest);
	for (char *save, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		bool host = strstr(l, "outdated mandoc.db lacks") != NULL;
		const char *xr = strstr(l, "STYLE: referenced manual not found: ");
		if (xr)
			host = true;
		for (size_t k = 0; xr && k < 3; k++) {
			const char *ref = xr + strlen("STYLE: referenced manual not found: ");
			size_t n = strlen(ours[k]);
			if (strncmp(ref, ours[k], n) == 0 && (ref[n] == '\0' || ref[n] == ' ')) {
				char p[PATH_MAX + 64];
				snprintf(p, sizeof(p), "%s/usr/share/man/%s", dest, files[k]);
				host = access(p, R_OK) == 0;
			}
		}
		if (!host) {
			strcat(rest, l);
			strcat(rest, "\n");
		}
	}
	free(out);
	/* Exit 1 is style messages: only the ones left out above may have caused it. */
	if (rest[0] || (rc != 0 && rc != 1)) {
		print_error("mandoc -Tlint on the installed pages: exit %d:\n%s", rc, rest);
		free(rest);
		fail();
	}
	free(rest);
}

/* systemd-analyze verify --root=DESTDIR on the installed units, by name, so they are found
 * where systemd looks (DESTDIR/usr/lib/systemd/system). The root needs the units theirs depend
 * on: sysinit.target at least (every unit's default Requires=; without it verify stops at
 * "Unit sysinit.target not found"), and, so that ordering is checked against the real ones,
 * basic.target, sockets.target, multi-user.target and shutdown.target; they are copied from
 * this host into DESTDIR/etc/systemd/system and removed afterwards. verify also requires
 * ExecStart='s program inside the root, and runs man for Documentation=man:echod(8): MANPATH
 * points it at the installed pages. Any output at all fails the case (verify exits 0 after
 * many of its warnings). */
static void test_installed_units_verify(void **state)
{
	(void)state;
	require_installed();
	char analyze[PATH_MAX], man[PATH_MAX];
	if (!find_program("systemd-analyze", analyze, sizeof(analyze))) {
		print_message("  [install] systemd-analyze verify skipped: systemd-analyze is not "
			      "installed (tools/install-deps installs systemd)\n");
		skip();
	}
	static const char *const dirs[] = { "/usr/lib/systemd/system", "/lib/systemd/system" };
	static const char *const targets[] = { "sysinit.target", "basic.target", "sockets.target",
					       "multi-user.target", "shutdown.target" };
	const char *sysdir = NULL;
	for (size_t i = 0; i < 2 && !sysdir; i++) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s/sysinit.target", dirs[i]);
		if (access(p, R_OK) == 0)
			sysdir = dirs[i];
	}
	if (!sysdir) {
		print_message("  [install] systemd-analyze verify skipped: no sysinit.target on this "
			      "host to copy into the root\n");
		skip();
	}
	char etc[PATH_MAX + 32], unitdir[PATH_MAX + 64];
	snprintf(etc, sizeof(etc), "%s/etc", dest);
	snprintf(unitdir, sizeof(unitdir), "%s/etc/systemd/system", dest);
	char mk[PATH_MAX + 64];
	snprintf(mk, sizeof(mk), "%s/etc/systemd", dest);
	assert_true(mkdir(etc, 0755) == 0 && mkdir(mk, 0755) == 0 && mkdir(unitdir, 0755) == 0);
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		char from[PATH_MAX + 64], to[PATH_MAX * 2];
		snprintf(from, sizeof(from), "%s/%s", sysdir, targets[i]);
		snprintf(to, sizeof(to), "%s/%s", unitdir, targets[i]);
		if (access(from, R_OK) == 0)
			assert_int_equal(copy_file(from, to), 0);
	}

	char root[PATH_MAX + 16], manpath[PATH_MAX + 32];
	snprintf(root, sizeof(root), "--root=%s", dest);
	snprintf(manpath, sizeof(manpath), "%s/usr/share/man", dest);
	bool have_man = find_program("man", man, sizeof(man));
	if (!have_man)
		print_message("  [install] man is not installed: verify runs with --man=no (the "
			      "Documentation=man:echod(8) link is not checked)\n");
	const char *argv[] = { analyze, "verify", root, have_man ? "--man=yes" : "--man=no",
			       "echod.socket", "echod.service", NULL };
	char *saved = getenv("MANPATH") ? strdup(getenv("MANPATH")) : NULL;
	setenv("MANPATH", manpath, 1);
	char *out;
	int rc = run(argv, TOOL_MS, &out);
	if (saved) {
		setenv("MANPATH", saved, 1);
		free(saved);
	} else {
		unsetenv("MANPATH");
	}
	remove_tree(etc);
	if (rc != 0 || out[0]) {
		print_error("systemd-analyze verify --root=%s echod.socket echod.service: exit %d:\n%s",
			    dest, rc, out);
		free(out);
		fail();
	}
	free(out);
}

static void test_uninstall_leaves_no_files(void **state)
{
	(void)state;
	require_installed();
	char *out;
	int rc = run_make("uninstall", &out);
	if (rc != 0) {
		print_error("make uninstall DESTDIR=%s PREFIX=/usr: exit %d:\n%s", dest, rc, out);
		free(out);
		fail();
	}
	free(out);
	walk_dest();
	for (size_t i = 0; i < nfound; i++)
		print_error("left by make uninstall: %s\n", found[i]);
	assert_int_equal(nfound, 0);
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", proc_bin("echod"));
	*strrchr(dir, '/') = '\0';
	if (!realpath(dir, build_dir)) {
		fprintf(stderr, "test_install: cannot resolve %s: %s\n", dir, strerror(errno));
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_install_tree),
		cmocka_unit_test(test_installed_echod_runs),
		cmocka_unit_test(test_installed_manpages_lint),
		cmocka_unit_test(test_installed_units_verify),
		cmocka_unit_test(test_uninstall_leaves_no_files),
	};
	return cmocka_run_group_tests_name("install", tests, group_setup, group_teardown);
}
