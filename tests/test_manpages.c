/* test_manpages.c - the manual pages in tools/man/ against the binaries they describe.
 *
 * For echod, echoload and echoclient: the long options `BIN --help` prints must be exactly the
 * ones the page gives an entry, and the page may mention no other. And every page must pass
 * `mandoc -Tlint` (skipped, with one line, where mandoc is not installed).
 *
 * How options are read:
 *   --help  every `--name` in its standard output, wherever it stands (an option named inside
 *           another one's description counts too; a set, so repeats do not matter).
 *   page    mdoc(7). An entry is an `.It` line with `Fl \-name` (or `Fl -name`) on it: Fl
 *           prints one dash before each argument, so `Fl \-name` is `--name`, and every
 *           argument up to the next macro or delimiter is one more flag (`Fl a \-bee`). A
 *           mention is such an Fl anywhere else (`.Op Fl \-x`, `at least Fl \-y`), or a
 *           `\-\-name` in an example (`.Dl`, `.D1`) or on a text line: examples must use real
 *           options. Another program's option is quoted with `.Ql` (`.Ql \-\-udp\-rate 0` in
 *           echoload.1), which is not read. `\-` and `\&` are undone before matching.
 *   Required: help == entries, and mentions within help. A failure prints one line per
 *           option saying which side has it, with the page's line number for a mention.
 *
 * mandoc: `mandoc -Tlint -W warning PAGE` must print nothing and exit 0. Then the full
 * `mandoc -Tlint PAGE` (style messages too) may report only "referenced manual not found"
 * (whether echoload(1), haproxy(1) or systemd.socket(5) is installed is this machine's
 * business, not the page's; those lines are shown, not counted); any other style message
 * fails.
 *
 * The pages are found from the repository root: the directory holding tests/test_manpages.c,
 * looked for from this file's compile-time path (make compiles from the root, so __FILE__ is
 * tests/test_manpages.c relative to it, or absolute), then upward from the test binary.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_proc.h"

#define RUN_MS 10000
#define MAX_OPTS 128
#define NAME_MAX_LEN 64

static char repo_root[PATH_MAX];
static char self_path[PATH_MAX];

struct optset {
	int n;
	char name[MAX_OPTS][NAME_MAX_LEN];
	int line[MAX_OPTS]; /* the page's line of the first sighting; 0 for --help */
};

static bool optset_has(const struct optset *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->name[i], name) == 0)
			return true;
	return false;
}

static void optset_add(struct optset *s, const char *name, size_t len, int line)
{
	char buf[NAME_MAX_LEN];
	if (len == 0 || len >= sizeof(buf))
		return;
	memcpy(buf, name, len);
	buf[len] = '\0';
	if (optset_has(s, buf) || s->n == MAX_OPTS)
		return;
	memcpy(s->name[s->n], buf, len + 1);
	s->line[s->n++] = line;
}

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Every `--name` in text: the dashes not preceded by another dash or a word character, the
 * name starting with a letter or digit, a trailing dash not part of it. */
static void scan_long_options(const char *text, struct optset *s, int line)
{
	for (const char *p = text; (p = strstr(p, "--")) != NULL; p += 2) {
		if (p > text && (is_name_char(p[-1]) || p[-1] == '-'))
			continue;
		const char *name = p + 2;
		if (!is_name_char(*name) || *name == '-' || *name == '_')
			continue;
		size_t n = 0;
		while (is_name_char(name[n]))
			n++;
		while (n > 0 && name[n - 1] == '-')
			n--;
		optset_add(s, name, n, line);
	}
}

/* A roff line with its escapes for a minus (`\-`) and the zero-width `\&` undone. */
static void unescape(const char *in, char *out, size_t len)
{
	size_t k = 0;
	for (size_t i = 0; in[i] && k + 1 < len; i++) {
		if (in[i] == '\\' && in[i + 1] == '-') {
			out[k++] = '-';
			i++;
		} else if (in[i] == '\\' && in[i + 1] == '&') {
			i++;
		} else {
			out[k++] = in[i];
		}
	}
	out[k] = '\0';
}

/* An mdoc macro name as it appears among a line's words (Ar, Ns, Op, Fl, Xr, ...). */
static bool is_macro(const char *w)
{
	size_t n = strlen(w);
	return (n == 2 || n == 3) && w[0] >= 'A' && w[0] <= 'Z' && w[1] >= 'a' && w[1] <= 'z' &&
	       (n == 2 || (w[2] >= 'a' && w[2] <= 'z'));
}

static bool is_delimiter(const char *w)
{
	return *w && strspn(w, ".,:;()[]|?!") == strlen(w);
}

/* The flags of every Fl on one macro line (already unescaped; words split on blanks, double
 * quotes kept together). */
static void scan_fl(char *line, struct optset *s, int lineno)
{
	char *words[64];
	int nw = 0;
	for (char *p = line; *p && nw < 64;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		if (*p == '"') {
			words[nw++] = ++p;
			while (*p && *p != '"')
				p++;
		} else {
			words[nw++] = p;
			while (*p && *p != ' ' && *p != '\t')
				p++;
		}
		if (*p)
			*p++ = '\0';
	}
	for (int i = 0; i < nw; i++) {
		if (strcmp(words[i], "Fl") != 0 && strcmp(words[i], ".Fl") != 0)
			continue;
		for (int j = i + 1; j < nw && !is_macro(words[j]) && !is_delimiter(words[j]); j++) {
			const char *w = words[j];
			if (w[0] != '-')
				continue; /* a short option, `Fl l`: -l */
			size_t n = strlen(w + 1);
			while (n > 0 && w[n] == '-')
				n--;
			optset_add(s, w + 1, n, lineno);
		}
	}
}

/* Reads a page: options with an .It entry, and options mentioned anywhere. */
static int read_page(const char *path, struct optset *entries, struct optset *mentions)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	char raw[4096], line[4096];
	int lineno = 0;
	while (fgets(raw, sizeof(raw), f)) {
		lineno++;
		raw[strcspn(raw, "\n")] = '\0';
		if (strncmp(raw, ".\\\"", 3) == 0 || strncmp(raw, "'\\\"", 3) == 0)
			continue; /* a comment */
		unescape(raw, line, sizeof(line));
		if (line[0] == '.' || line[0] == '\'') {
			bool example = strncmp(line + 1, "Dl", 2) == 0 || strncmp(line + 1, "D1", 2) == 0;
			bool item = strncmp(line + 1, "It", 2) == 0 && (line[3] == ' ' || !line[3]);
			if (example)
				scan_long_options(line, mentions, lineno);
			scan_fl(line, item ? entries : mentions, lineno);
		} else {
			scan_long_options(line, mentions, lineno);
		}
	}
	fclose(f);
	return 0;
}

static bool file_exists(const char *dir, const char *rel)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	return access(p, R_OK) == 0;
}

/* The repository root: where tests/test_manpages.c and tools/man/ are. */
static bool find_repo_root(const char *argv0)
{
	char dir[PATH_MAX];
	/* 1: this file's compile-time path, absolute or relative to the directory make ran in,
	 * which is where a test run from the root (make test, run-suite) stands too. */
	snprintf(dir, sizeof(dir), "%s", __FILE__);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		else
			snprintf(dir, sizeof(dir), ".");
	} else {
		snprintf(dir, sizeof(dir), "..");
	}
	if (file_exists(dir, "tests/test_manpages.c") && file_exists(dir, "tools/man") &&
	    realpath(dir, repo_root))
		return true;
	/* 2: upward from the test binary (build/tests/test_manpages, build/san/tests/...). */
	if (!realpath(argv0, dir))
		return false;
	while ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		const char *d = dir[0] ? dir : "/";
		if (file_exists(d, "tests/test_manpages.c") && file_exists(d, "tools/man")) {
			snprintf(repo_root, sizeof(repo_root), "%s", d);
			return true;
		}
		if (!dir[0])
			break;
	}
	return false;
}

static void page_path(const char *page, char *out, size_t len)
{
	snprintf(out, len, "%s/tools/man/%s", repo_root, page);
}

static void need_root(void)
{
	if (!repo_root[0]) {
		print_error("cannot find the repository root (a directory with "
			    "tests/test_manpages.c and tools/man/) from %s or %s; run the test "
			    "from the repository root\n", __FILE__, self_path);
		fail();
	}
}

/* The whole comparison for one binary and its page; one line per difference. */
static void check_options(const char *bin, const char *page)
{
	need_root();
	const char *argv[] = { proc_bin(bin), "--help", NULL };
	struct child c;
	int rc = proc_run(argv, RUN_MS, &c);
	char *out = proc_out(&c);
	proc_cleanup(&c);
	if (rc != 0) {
		print_error("%s --help: exit %d, want 0\n", argv[0], rc);
		free(out);
		fail();
	}
	static struct optset help, entries, mentions;
	memset(&help, 0, sizeof(help));
	memset(&entries, 0, sizeof(entries));
	memset(&mentions, 0, sizeof(mentions));
	scan_long_options(out, &help, 0);
	free(out);

	char path[PATH_MAX + 64];
	page_path(page, path, sizeof(path));
	rc = read_page(path, &entries, &mentions);
	if (rc < 0) {
		print_error("%s: %s\n", path, strerror(-rc));
		fail();
	}
	if (help.n == 0 || entries.n == 0) {
		print_error("%s: found %d long options in --help and %d entries in %s; the "
			    "extraction is broken (is the page mdoc with `.It Fl \\-name`?)\n", bin,
			    help.n, entries.n, path);
		fail();
	}
	int bad = 0;
	for (int i = 0; i < help.n; i++)
		if (!optset_has(&entries, help.name[i])) {
			print_error("%s --%s: printed by --help, but tools/man/%s has no entry for it "
				    "(.It Fl \\-%s)\n", bin, help.name[i], page, help.name[i]);
			bad++;
		}
	for (int i = 0; i < entries.n; i++)
		if (!optset_has(&help, entries.name[i])) {
			print_error("%s --%s: tools/man/%s:%d has an entry for it, but --help does "
				    "not print it\n", bin, entries.name[i], page, entries.line[i]);
			bad++;
		}
	for (int i = 0; i < mentions.n; i++)
		if (!optset_has(&help, mentions.name[i]) && !optset_has(&entries, mentions.name[i])) {
			print_error("%s --%s: tools/man/%s:%d mentions it, but --help does not print "
				    "it\n", bin, mentions.name[i], page, mentions.line[i]);
			bad++;
		}
	if (bad) {
		print_error("%s: %d difference(s) between --help (%d long options) and "
			    "tools/man/%s (%d entries)\n", bin, bad, help.n, page, entries.n);
		fail();
	}
}

static void test_echod_page_options(void **state)
{
	(void)state;
	check_options("echod", "echod.8");
}

static void test_echoload_page_options(void **state)
{
	(void)state;
	check_options("echoload", "echoload.1");
}

static void test_echoclient_page_options(void **state)
{
	(void)state;
	check_options("echoclient", "echoclient.1");
}

/* mandoc's path from PATH, or false. */
static bool find_mandoc(char *out, size_t len)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(out, len, "%.*s/mandoc", (int)n, n ? p : ".");
		if (access(out, X_OK) == 0)
			return true;
		p += n;
		if (*p == ':')
			p++;
	}
	return false;
}

/* Prints every line of text that is not a tolerated one and returns how many; counts the
 * tolerated ones in *tolerated: "referenced manual not found", and mandoc's note that its
 * database lacks a page, which the same check prints on stderr. */
static int untolerated_lines(const char *text, const char *what, const char *page, int *tolerated)
{
	int n = 0;
	for (const char *p = text; *p;) {
		size_t len = strcspn(p, "\n");
		char line[1024];
		snprintf(line, sizeof(line), "%.*s", (int)(len < sizeof(line) - 1 ? len : sizeof(line) - 1),
			 p);
		if (strstr(line, "referenced manual not found") || strstr(line, "mandoc.db lacks")) {
			(*tolerated)++;
		} else if (len > 0) {
			print_error("%s %s: %s\n", what, page, line);
			n++;
		}
		p += len;
		if (*p == '\n')
			p++;
	}
	return n;
}

static void test_mandoc_lint(void **state)
{
	(void)state;
	char mandoc[PATH_MAX + 16];
	if (!find_mandoc(mandoc, sizeof(mandoc))) {
		print_message("mandoc not installed (Debian package mandoc, from tools/install-deps): "
			      "page lint skipped\n");
		skip();
	}
	need_root();
	static const char *const pages[] = { "echod.8", "echoload.1", "echoclient.1" };
	int bad = 0;
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		char path[PATH_MAX + 64];
		page_path(pages[i], path, sizeof(path));
		/* Warnings and worse: none at all, exit 0. */
		const char *strict[] = { mandoc, "-Tlint", "-W", "warning", path, NULL };
		struct child c;
		int rc = proc_run(strict, RUN_MS, &c);
		char *out = proc_out(&c), *err = proc_log(&c);
		proc_cleanup(&c);
		if (rc != 0 || out[0] || err[0]) {
			print_error("mandoc -Tlint -W warning %s: exit %d, want 0 and no output:\n%s%s",
				    path, rc, out, err);
			bad++;
		}
		free(out);
		free(err);
		/* Style too: only what depends on the machine's installed pages. mandoc exits 1
		 * (style) when it printed any style message, tolerated or not: the lines decide. */
		const char *style[] = { mandoc, "-Tlint", path, NULL };
		/* Run in tools/man/, where mandoc finds the sibling pages echod(8) and echoload(1)
		 * name; the test is one thread, and the child takes the directory with it. */
		char here[PATH_MAX], mandir[PATH_MAX + 16];
		snprintf(mandir, sizeof(mandir), "%s/tools/man", repo_root);
		bool moved = getcwd(here, sizeof(here)) && chdir(mandir) == 0;
		rc = proc_run(style, RUN_MS, &c);
		if (moved && chdir(here) < 0)
			print_error("cannot return to %s: %s\n", here, strerror(errno));
		out = proc_out(&c);
		err = proc_log(&c);
		proc_cleanup(&c);
		int tolerated = 0;
		int n = untolerated_lines(out, "mandoc -Tlint", pages[i], &tolerated) +
			untolerated_lines(err, "mandoc -Tlint (stderr)", pages[i], &tolerated);
		if (tolerated)
			print_message("note: %s: %d cross-reference message(s) from mandoc about pages "
				      "not installed here (not counted)\n", pages[i], tolerated);
		if (n || (rc != 0 && rc != 1)) {
			print_error("mandoc -Tlint %s: exit %d, %d message(s) above\n", path, rc,
				    n);
			bad++;
		}
		free(out);
		free(err);
	}
	if (bad)
		fail();
}

int main(int argc, char **argv)
{
	(void)argc;
	proc_init(argv[0]);
	snprintf(self_path, sizeof(self_path), "%s", argv[0]);
	find_repo_root(argv[0]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echod_page_options),
		cmocka_unit_test(test_echoload_page_options),
		cmocka_unit_test(test_echoclient_page_options),
		cmocka_unit_test(test_mandoc_lint),
	};
	const char *filter = getenv("ECHOD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests_name("manpages", tests, NULL, NULL);
}
