# echod - build, test, run, bench.
#
#   make run      install missing Debian packages, build, start echod on 127.0.0.1:65432
#   make test     the same, then the whole suite: plain, ASan+UBSan, and without liburing
#                 and libmicrohttpd
#   make bench    Google Benchmark microbenchmarks (bench/bm_*.c)
#   make compare  end-to-end backend comparison (QUICK=1 for a reduced matrix)
#
# Out-of-tree builds: BUILD=dir. Sanitizers: SANITIZE=address,undefined (own build dir).
# Optional libraries, found with pkg-config: liburing (io_uring backends) and libmicrohttpd
# (the --metrics port); HAVE_URING= or HAVE_MHD= on the command line builds without one.

CC       ?= cc
CXX      ?= c++
CFLAGS   ?= -O2 -g
CXXFLAGS ?= -O2 -g
# make install: GNU directory variables, each overridable; DESTDIR for staged installs.
# SYSTEMDUNITDIR: with PREFIX=/usr, /usr/lib/systemd/system (Debian 12's own units are in
# /lib/systemd/system, the same directory under its merged /usr); `pkg-config
# --variable=systemdsystemunitdir systemd` prints the distribution's. systemd also reads
# /usr/local/lib/systemd/system, the default.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system

ifdef SANITIZE
BUILD    ?= build/san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD    ?= build
SANFLAGS :=
endif

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CPPFLAGS += -D_GNU_SOURCE -Iengine -Ibackends -MMD -MP
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(SANFLAGS)
LDLIBS   += -lpthread

# io_uring backends are built only when liburing is present.
HAVE_URING := $(shell pkg-config --exists liburing 2>/dev/null && echo 1)
ifeq ($(HAVE_URING),1)
CPPFLAGS += -DECHOD_HAVE_URING
URING_LIBS := $(shell pkg-config --libs liburing)
URING_SRC := $(wildcard backends/uring*.c)
endif

# The metrics port (--metrics) is built only when libmicrohttpd is present; without it a stub
# says it is not available and echod refuses --metrics (exit 69).
HAVE_MHD := $(shell pkg-config --exists libmicrohttpd 2>/dev/null && echo 1)
ifeq ($(HAVE_MHD),1)
CPPFLAGS += -DECHOD_HAVE_MHD
MHD_LIBS := $(shell pkg-config --libs libmicrohttpd)
MHD_OFF  := engine/metrics_http_none.c
else
MHD_OFF  := engine/metrics_http.c
endif

ENGINE_SRC  := $(filter-out engine/main.c $(MHD_OFF),$(wildcard engine/*.c))
BACKEND_SRC := backends/readiness.c backends/select.c backends/poll.c backends/epoll.c $(URING_SRC)
BACKEND_SRC := $(wildcard $(BACKEND_SRC))
CORE_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(ENGINE_SRC) $(BACKEND_SRC))

BIN       := $(BUILD)/echod $(BUILD)/echoclient $(if $(wildcard tools/echoload.c),$(BUILD)/echoload)
BENCH_BIN := $(if $(wildcard bench/gbench.cc),$(BUILD)/bench/echod-bench)
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_HELPERS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/helper_*.c))
TESTLIB_SRC := $(wildcard tests/lib_*.c)
TESTLIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TESTLIB_SRC))

.PHONY: all deps run test check test-plain test-san test-freeze tsan-check soak bench compare \
	install uninstall clean
all: $(BIN) $(TEST_BIN) $(TEST_HELPERS)

deps:
	@tools/install-deps

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/echod: $(BUILD)/engine/main.o $(CORE_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(URING_LIBS) $(MHD_LIBS) $(LDLIBS)

$(BUILD)/echoclient: $(BUILD)/tools/echoclient.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

# echoload's io_uring engine needs liburing; without it a stub refuses --engine uring (exit 69).
ECHOLOAD_SRC := $(filter-out tools/echoload_uring.c tools/echoload_nouring.c,$(wildcard tools/echoload*.c)) \
		tools/hist.c $(if $(HAVE_URING),tools/echoload_uring.c,tools/echoload_nouring.c)
$(BUILD)/echoload: $(patsubst %.c,$(BUILD)/%.o,$(ECHOLOAD_SRC))
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(URING_LIBS) $(LDLIBS) -lm

$(BUILD)/tests/helper_%: $(BUILD)/tests/helper_%.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

# The fault-injection shim test_faults preloads into echod (LD_PRELOAD). Never sanitized: it
# wraps the allocator ASan replaces and runs before ASan's own set-up; test_faults says how it
# loads into an ASan echod.
$(BUILD)/tests/fault_shim.so: tests/fault_shim.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=c11 $(WARN) $(CFLAGS) -fPIC -shared -o $@ $< -ldl
$(BUILD)/tests/test_faults: | $(BUILD)/tests/fault_shim.so

$(BUILD)/tests/test_hist: $(BUILD)/tools/hist.o
$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(TESTLIB_OBJ) $(CORE_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(URING_LIBS) $(MHD_LIBS) -lcmocka $(LDLIBS) -lm

# --- running ---------------------------------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/echod $(ARGS)

# The whole suite on three builds: plain, ASan+UBSan, and one as if liburing and libmicrohttpd
# were missing (the io_uring backends and the metrics port left out: everything else must still
# build and pass; its epoll/poll/select rounds of the end-to-end suites are the full builds'
# own, so run-suite --light skips them there); then, on a ThreadSanitizer build, the suites
# where threads meet: signals (main thread and workers), and the integration, metrics, UDP and
# systemd cases with several workers (the metrics thread asks them; UDP workers share a port
# group; workers share a passed listener), on the uring and epoll backends, and the worker
# thread's own suite (test_worker: the main thread's requests);
# then a short run of each fuzz harness. The cluster behind HAProxy (test_cluster) and
# the deployment examples (test_deploy) run on the plain build only. cmocka's summary per
# binary, then one
# `N passed, N failed` line per build and a total.
SAN_BUILD := build/san
# -O1, as AddressSanitizer's authors advise: a third less compile time than -O2 for the same
# checks (the suite's waits, not the code's speed, set how long the tests take).
SAN_CFLAGS := -O1 -g
NOURING_BUILD := build/nouring
TSAN_BUILD := build/tsan
TSAN_TESTS := $(TSAN_BUILD)/echod $(TSAN_BUILD)/echoload $(TSAN_BUILD)/tests/test_signals \
	      $(TSAN_BUILD)/tests/test_integration $(TSAN_BUILD)/tests/test_metrics \
	      $(TSAN_BUILD)/tests/test_udp $(TSAN_BUILD)/tests/test_systemd \
	      $(TSAN_BUILD)/tests/test_worker
# The four builds compile on every core (a plain `make test` would compile them one file at a
# time, a fifth of the ten minutes the suite may take); a -j given by the caller wins.
TEST_JOBS := $(if $(filter -j%,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))
test: deps
	@$(MAKE) $(TEST_JOBS) --no-print-directory all $(BENCH_BIN)
	@$(MAKE) $(TEST_JOBS) --no-print-directory SANITIZE=address,undefined BUILD=$(SAN_BUILD) \
		CFLAGS="$(SAN_CFLAGS)" all
	@$(MAKE) $(TEST_JOBS) --no-print-directory HAVE_URING= HAVE_MHD= BUILD=$(NOURING_BUILD) all
	@$(MAKE) $(TEST_JOBS) --no-print-directory SANITIZE=thread BUILD=$(TSAN_BUILD) $(TSAN_TESTS)
	@$(MAKE) --no-print-directory fuzz-build
	@tests/run-suite --compare-smoke \
		$(foreach b,$(FUZZ_BINS),--fuzz $(b) $(FUZZ_SMOKE_SECONDS)) \
		--tsan $(TSAN_BUILD) --san $(SAN_BUILD) --light $(NOURING_BUILD) $(BUILD) $(SAN_BUILD)

test-plain: all
	@tests/run-suite $(BUILD)

# The whole suite under ASan+UBSan on all five backends (make test runs its end-to-end suites
# there on uring, epoll and select only, to stay within ten minutes): about six minutes more.
test-san: deps
	@$(MAKE) $(TEST_JOBS) --no-print-directory SANITIZE=address,undefined BUILD=$(SAN_BUILD) \
		CFLAGS="$(SAN_CFLAGS)" all
	@tests/run-suite $(SAN_BUILD)

# The plain suite with every test process group stopped and continued every 3 ms or so
# (tests/helper_freezer): what a frozen cgroup, a debugger or a busy CI host does to a process.
# Its waits then end in EINTR whatever its handlers; echod and the tests must take that in
# their stride. About twice as long as test-plain: not part of make test.
FREEZE_PERIOD_US ?= 3000
test-freeze: all
	@tests/run-suite --wrap "$(BUILD)/tests/helper_freezer $(FREEZE_PERIOD_US)" $(BUILD)

# The whole integration suite, every backend, every echod with 4 worker threads, on the
# ThreadSanitizer build: a data race anywhere on the way is a failure (halt_on_error: echod
# exits 66 and the case that stops it fails). Several minutes: not part of make test, whose
# TSan round runs the multi-threaded cases only.
tsan-check: deps
	@$(MAKE) $(TEST_JOBS) --no-print-directory SANITIZE=thread BUILD=$(TSAN_BUILD) $(TSAN_TESTS) \
		$(TSAN_BUILD)/echoclient
	TSAN_OPTIONS=halt_on_error=1 ECHOD_TEST_THREADS=4 $(TSAN_BUILD)/tests/test_integration

# make soak MINUTES=N: echod under ~10,000 mixed connections for N minutes (tests/soak says
# what load); fails on a wrong byte or on memory, descriptors or pool use drifting upward.
MINUTES ?= 5
soak: deps
	@$(MAKE) $(TEST_JOBS) --no-print-directory all $(BUILD)/tests/helper_stuckclients \
		$(BUILD)/tests/helper_churn
	tests/soak --minutes $(MINUTES) --build $(BUILD)

check: test

# --- benchmarks ------------------------------------------------------------------------------
GBENCH_OBJ := $(BUILD)/bench/gbench.o
BM_SRC  := $(wildcard bench/bm_*.c)
BM_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(BM_SRC))

$(BUILD)/bench/gbench.o: bench/gbench.cc bench/gbench.h
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -Ibench -Wall -Wextra -Werror $(CXXFLAGS) $(SANFLAGS) -c -o $@ $<

$(BUILD)/bench/%.o: CPPFLAGS += -Ibench -Itests
$(BUILD)/bench/echod-bench: $(BM_OBJ) $(GBENCH_OBJ) $(CORE_OBJ) $(BUILD)/tests/lib_fake_backend.o
	$(CXX) $(CXXFLAGS) $(SANFLAGS) -o $@ $^ $(URING_LIBS) $(MHD_LIBS) -lbenchmark $(LDLIBS)

bench: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/echod-bench
	$(BUILD)/bench/echod-bench $(BENCH_ARGS)

compare: deps
	@$(MAKE) --no-print-directory all
	bench/compare $(if $(QUICK),--quick) --build $(BUILD)

# --- fuzzing ---------------------------------------------------------------------------------
# libFuzzer harnesses, tests/fuzz_<name>.c, built with clang (ASan+UBSan) into
# build/fuzz/fuzz_<name>: proxy_proto (the PROXY header parser), config (the command line),
# echo_core (the echo core driven through tests/lib_fake_backend.c). `make fuzz` runs each for
# FUZZ_SECONDS (`make fuzz FUZZ=config` runs one) on build/fuzz/corpus-<name>, a copy of the
# seeds in tests/corpus/<name> that keeps what it finds (the repo's seeds are never written);
# a crashing input lands in build/fuzz/<name>-crash-*. make test runs each for
# FUZZ_SMOKE_SECONDS (run-suite --fuzz), or says they are skipped without clang.
# The engine files a harness needs are compiled with the fuzz flags into build/fuzz/, with two
# calls renamed so that a run is hermetic and replays exactly: config.c's getaddrinfo (the
# harness answers numeric hosts and localhost, never a DNS query) and reactor.c's
# clock_gettime (the loop's clock is the harness's, advanced by the input).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_HARNESSES := proxy_proto config echo_core
FUZZ         ?= $(FUZZ_HARNESSES)
FUZZ_BUILD   := $(BUILD)/fuzz
FUZZ_BINS    := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_HARNESSES))
FUZZ_CFLAGS  := -std=c11 $(WARN) -O1 -g -fno-omit-frame-pointer \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_LOOP    := engine/reactor.c engine/bufpool.c engine/backends.c $(BACKEND_SRC)
FUZZ_SRC_proxy_proto := engine/proxy_proto.c
FUZZ_SRC_config      := engine/config.c engine/log.c $(FUZZ_LOOP)
FUZZ_SRC_echo_core   := engine/echo.c engine/udp.c engine/preamble.c engine/proxy_proto.c \
			engine/log.c $(FUZZ_LOOP) tests/lib_fake_backend.c
.PHONY: fuzz fuzz-build

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -Itests $(FUZZ_RENAME) $(FUZZ_CFLAGS) -c -o $@ $<
$(FUZZ_BUILD)/engine/config.o: FUZZ_RENAME := -Dgetaddrinfo=fuzz_getaddrinfo
$(FUZZ_BUILD)/engine/reactor.o: FUZZ_RENAME := -Dclock_gettime=fuzz_clock_gettime

define FUZZ_LINK
$(FUZZ_BUILD)/fuzz_$(1): $(patsubst %.c,$(FUZZ_BUILD)/%.o,tests/fuzz_$(1).c $(FUZZ_SRC_$(1)))
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $$@ $$^ $(if $(filter $(FUZZ_LOOP),$(FUZZ_SRC_$(1))),$(URING_LIBS))
endef
$(foreach h,$(FUZZ_HARNESSES),$(eval $(call FUZZ_LINK,$(h))))

fuzz-build:
	@if command -v $(FUZZ_CC) >/dev/null 2>&1; then \
		$(MAKE) $(TEST_JOBS) --no-print-directory $(FUZZ_BINS); fi

fuzz: deps
	@$(MAKE) $(TEST_JOBS) --no-print-directory $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ))
	@for h in $(FUZZ); do \
		mkdir -p $(FUZZ_BUILD)/corpus-$$h && cp -R tests/corpus/$$h/. $(FUZZ_BUILD)/corpus-$$h/ && \
		echo "fuzz_$$h: $(FUZZ_SECONDS) s on $(FUZZ_BUILD)/corpus-$$h" && \
		$(FUZZ_BUILD)/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -max_len=1200 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/$$h- \
			$(FUZZ_BUILD)/corpus-$$h || exit 1; \
	done

# --- installing ------------------------------------------------------------------------------
# make install [PREFIX=/usr] [DESTDIR=stage] [BUILD=dir]: the three programs, their manual pages
# and the systemd units, nothing else; make uninstall removes exactly those (directories stay:
# they are shared). The programs are prerequisites, so `make && sudo make install` installs
# what `make` built and compiles nothing as root. echod.service's ExecStart= names the installed
# echod ($(BINDIR), without DESTDIR): sed rewrites the repo's /usr/bin/echod on the way.
INSTALL_BIN  := echod echoload echoclient
INSTALL_MAN1 := echoload.1 echoclient.1
INSTALL_MAN8 := echod.8
INSTALL_UNIT := echod.service echod.socket

install: $(BUILD)/echod $(BUILD)/echoclient $(BUILD)/echoload
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $^ $(DESTDIR)$(BINDIR)/
	install -m 0644 $(addprefix tools/man/,$(INSTALL_MAN1)) $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(addprefix tools/man/,$(INSTALL_MAN8)) $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 tools/systemd/echod.socket $(DESTDIR)$(SYSTEMDUNITDIR)/
	sed 's|^ExecStart=/usr/bin/echod |ExecStart=$(BINDIR)/echod |' tools/systemd/echod.service \
		>$(DESTDIR)$(SYSTEMDUNITDIR)/echod.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/echod.service
	@grep -q '^ExecStart=$(BINDIR)/echod ' $(DESTDIR)$(SYSTEMDUNITDIR)/echod.service || \
		{ echo "install: echod.service: no ExecStart=/usr/bin/echod line to point at" \
		  "$(BINDIR)/echod" >&2; exit 1; }

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INSTALL_BIN)) \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(INSTALL_MAN1)) \
		$(addprefix $(DESTDIR)$(MANDIR)/man8/,$(INSTALL_MAN8)) \
		$(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(INSTALL_UNIT))

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
