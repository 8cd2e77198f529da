# bench/summarize.awk - what bench/compare and bench/peers/run make of their raw.csv: one row per
# (backend, size, connections, offered rate) with medians, intervals and paired ratios.
#
#   awk -F, -f bench/summarize.awk -v out=DIR -v ref=epoll [-v proto=tcp] [-v sat=80]
#       [-v title=backend] [-v target=0.05] [-v max_repeats=N] DIR/raw.csv
#       writes DIR/summary.csv, DIR/summary.json and DIR/table.md; rejected runs to stderr
#   ... -v mode=check -v point=SIZE,CONNS,RATE [-v only="a b"] raw.csv   the widest paired-
#       ratio interval at that point (of the backends in only, if given), relative to its
#       median ("1e9" until there are 6 pairs): adaptive repeats
#   ... -v mode=capacity [-v only="a b"] raw.csv    "SIZE CONNS MSGS_PER_S": the slowest
#       backend's (of only, if given) closed-loop median at each point, what the open-loop
#       rates are fractions of
#   ... -v mode=judge               stdin is a header and one row: why that run is rejected
#       (an empty line if it is not), then a one-line account of it for the progress log
#   awk -F, -f bench/summarize.awk -v mode=merge raw.csv RUN.csv   raw.csv with RUN.csv's rows
#       after its own, columns matched by name (a failed run's row has only the few columns
#       the script knows; a new echoload may add some): the union of the columns, in order
#
# Columns are picked from raw.csv's header by name, so a raw.csv from an older echoload works:
# a column it lacks leaves the fields computed from it empty (null in JSON), and a rule that
# needs it (valid, unanswered_bytes, the cpuN_* columns) does not apply. Rows are grouped by
# label, size, connections and rate (0: closed loop).
#
# A run is rejected, not averaged in, when echoload exited non-zero (bench/compare's
# exit_status column), or counted errors, connection errors, stalled connections, unanswered
# bytes, or said valid=0, or left no result at all. Its point counts it (the "rejected" column,
# and a list under the table) and the medians are of the other runs: one bad run on a noisy
# machine does not poison a point, nor pass unnoticed. "errors" stays the sum over every run.
# An open-loop run with valid=0 and nothing else wrong fell short of its offered rate: it is
# rejected too (its latency leaves out the messages it never sent), reported as "rate missed";
# a rate sweep's line ends where a backend stops keeping up.
#
# Intervals. Every median and every paired ratio gets one: with 2 to 5 accepted runs it is the
# min-max over them (a bootstrap of so few values would give the same two numbers and claim a
# confidence it does not have: min-max of n runs holds the true median with probability
# 1 - 2^(1-n), 75% at 3, 94% at 5); from 6 on, a 95% percentile bootstrap over the repeats,
# B resamples with the generator seeded fixed for each interval, so the same raw.csv always
# gives the same numbers. A ratio pairs each run with the reference backend's run of the same
# repeat (same point, back to back), which is why it is steadier than either median. Tables
# round every value to the digits its interval supports: to the decimal of the half-width's
# leading digit, one more if that digit is 1, 2 or 3 (3.55 or less: two significant digits),
# as particle physicists round an uncertainty.
#
# CPU: echod runs pinned to CPU 0, echoload to CPU 1. server_cpu_us_per_msg and
# client_cpu_us_per_msg are each process's own CPU time per message (as echoload reads it);
# the cpuN_* columns (echoload --cpu-stat 0,1) are the whole CPU from /proc/stat, so they
# include the softirq and interrupt time the kernel spends on packets, billed to whichever
# process happened to run: server_total_cpu_us_per_msg is CPU 0's busy time per message,
# client_total_cpu_us_per_msg CPU 1's, and *_softirq_pct the share of each CPU in softirq.
# A row is client-saturated when CPU 1 (the larger of echoload's own CPU % and the whole CPU's
# busy %) is above sat: then msgs/s and CPU per message are what the client allowed, and a
# ratio between two backends may be the client's, not the servers'.
#
# summary.csv (and summary.json, with "_vs_ref" for "_vs_<ref>" and a "ref" field): the first
# 16 columns are as they always were (tests/run-suite reads 5, 7 and 9): backend (or server),
# size, connections, repeats (accepted runs), msgs_per_s, p99_us, server_cpu_us_per_msg,
# client_cpu_us_per_msg, errors (over every run), msgs_ratio_vs_<ref>,
# server_cpu_ratio_vs_<ref>, server_syscalls_per_msg, server_wakeups_per_msg,
# server_completions_per_wakeup, proto, loss_rate. Then: rejected (runs not averaged in), rate
# (offered msgs/s, 0 closed loop), load_pct (% of capacity it was asked as), loop (closed or
# open), latency_is (what the latency columns measure: closed loop, queueing), interval (none,
# minmax or boot95: how this row's _lo/_hi were made), pairs (repeats paired with the
# reference), msgs_per_s_lo/_hi, p50_us and p999_us (each with
# _lo/_hi), p99_us_lo/_hi, littles_law_us (connections x depth / msgs/s: the mean latency a
# closed loop must show), server_ and client_cpu_us_per_msg_lo/_hi, the two ratios' _lo/_hi,
# client_cpu_pct, client_busy_pct (CPU 1 as a whole), server_cpu_pct, server_busy_pct (CPU 0),
# each with _lo/_hi, client_saturated (0 or 1; empty without a figure), server_total_ and
# client_total_cpu_us_per_msg (CPU 0's, CPU 1's busy time per message) and
# server_total_cpu_ratio_vs_<ref>, each with _lo/_hi, server_softirq_pct, client_softirq_pct,
# steal_pct (mean of the two CPUs') and rate_achieved_pct, conns_per_s and
# conns_ratio_vs_<ref> (each with _lo/_hi: echoload --reconnect's connections per second).
# Empty where raw.csv has no source. table.md has a conns/s column (and its ratio) only when
# some row of raw.csv has conns_per_s, so tables of runs without --reconnect stay as they were.

BEGIN {
	if (mode == "") mode = "summary"
	if (sat == "") sat = 80
	if (title == "") title = "backend"
	if (B == "") B = 2000
	if (tool == "") tool = "bench/compare"
	if (proto == "") proto = "tcp"
	if (list_rejects == "") list_rejects = 1
	RATE_MISSED = "valid=0: rate missed"
	# what each stored metric is read from (computed ones, b0 b1 st, in keep())
	src["m"] = "msgs_per_s"; src["p50"] = "lat_p50_us"; src["p99"] = "lat_p99_us"
	src["p999"] = "lat_p999_us"; src["s"] = "server_cpu_us_per_msg"
	src["c"] = "client_cpu_us_per_msg"; src["cp"] = "client_cpu_pct"
	src["sp"] = "server_cpu_pct"; src["y"] = "server_syscalls_per_msg"
	src["w"] = "server_wakeups_per_msg"; src["q"] = "server_completions_per_wakeup"
	src["l"] = "loss_rate"; src["t0"] = "cpu0_busy_us_per_msg"; src["t1"] = "cpu1_busy_us_per_msg"
	src["si0"] = "cpu0_softirq_pct"; src["si1"] = "cpu1_softirq_pct"; src["ra"] = "rate_achieved_pct"
	src["cps"] = "conns_per_s"
	nsrc = split("m p50 p99 p999 s c cp sp y w q l t0 t1 si0 si1 ra cps", srcs, " ")
}

mode == "merge" {
	if (FNR == 1) {
		file++
		for (i = 1; i <= NF; i++) { mname[file, i] = $i; if (!($i in mhave)) { mhave[$i] = 1; mh[++mnh] = $i } }
		next
	}
	mrows++; mfrom[mrows] = file; mline[mrows] = $0
	next
}
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
mode == "judge" { print reject_reasons(); print progress(); exit }
{
	lab = field("label"); size = field("size"); conns = field("connections"); rate = field("rate") + 0
	key = lab "," size "," conns "," rate
	rep = field("repeat")
	if (rep == "") rep = ++occurrence[key] # an older raw.csv: repeats ran in file order
	if (!(key in seen)) {
		seen[key] = 1; order[++nkeys] = key
		pkey[key] = size "," conns "," rate; klab[key] = lab; ksize[key] = size
		kconns[key] = conns; krate[key] = rate
	}
	errs[key] += field("errors")
	if (field("conns_per_s") != "") churn = 1 # echoload --reconnect: the tables add conns/s
	if (field("load_pct") != "") load[key] = field("load_pct")
	if (field("depth") != "") kdepth[key] = field("depth")
	why = reject_reasons()
	if (why != "") {
		rejected[key]++
		if (index(why, RATE_MISSED) == 1) missed[key]++
		rejects[++nrejects] = lab " size=" size " conns=" conns (rate > 0 ? " rate=" rate : "") " repeat " rep ": " why
		next
	}
	i = ++n[key]
	R[key, i] = rep
	at[key, rep] = i
	keep(key, i)
}

function field(name) { return (name in col) ? $col[name] : "" }

# Why this row is rejected ("" if it is not): every rule checks only a column the row has.
function reject_reasons(   why, s) {
	why = ""
	s = field("exit_status"); if (s != "" && s != 0) why = why ", " (s ~ /^[0-9]+$/ ? "echoload exit status " s : s)
	s = field("errors"); if (s != "" && s > 0) why = why ", " s " errors"
	s = field("conn_errors"); if (s != "" && s > 0) why = why ", " s " connection errors"
	s = field("stalled_conns"); if (s != "" && s > 0) why = why ", " s " stalled connections"
	s = field("unanswered_bytes"); if (s != "" && s > 0) why = why ", " s " unanswered bytes"
	s = field("valid")
	if (s != "" && s == 0) {
		# echoload's valid=0 with nothing else wrong: an open loop short of its rate, which is
		# past saturation (bench/compare goes on), not a broken run
		if (why == "" && field("rate") > 0 && field("rate_achieved_pct") != "")
			why = why ", " RATE_MISSED " (" field("rate_achieved_pct") "% of the offered rate)"
		else
			why = why ", valid=0"
	}
	if (field("msgs_per_s") == "") why = why ", no result"
	return substr(why, 3)
}

function progress(   s) {
	s = field("label") " size=" field("size") " conns=" field("connections")
	if (field("rate") > 0) s = s " rate=" field("rate")
	s = s " repeat " field("repeat")
	if (field("msgs_per_s") == "") return s
	s = s sprintf(": %.0f msgs/s, p99 %.0f us%s, server %.2f us/msg, client CPU %.0f%%", field("msgs_per_s"), field("lat_p99_us"), field("rate") > 0 ? "" : " (closed loop: queueing)", field("server_cpu_us_per_msg"), field("client_cpu_pct"))
	if (field("conns_per_s") != "") s = s sprintf(", %.0f conns/s", field("conns_per_s"))
	return s
}

function merge(   r, out, j, n, x, val, i) {
	out = mh[1]; for (j = 2; j <= mnh; j++) out = out "," mh[j]
	print out
	for (r = 1; r <= mrows; r++) {
		n = split(mline[r], x, ",")
		for (j = 1; j <= mnh; j++) val[mh[j]] = ""
		for (i = 1; i <= n; i++) val[mname[mfrom[r], i]] = x[i]
		out = val[mh[1]]; for (j = 2; j <= mnh; j++) out = out "," val[mh[j]]
		print out
	}
}

function keep(key, i,   j, f, u, s, b) {
	for (j = 1; j <= nsrc; j++) { f = srcs[j]; v[key, f, i] = field(src[f]) }
	# whole-CPU busy %: what the CPU did, whoever it did it for (steal is not ours: left out)
	for (u = 0; u <= 1; u++) {
		s = field("cpu" u "_user_pct")
		b = s == "" ? "" : s + field("cpu" u "_system_pct") + field("cpu" u "_irq_pct") + field("cpu" u "_softirq_pct")
		v[key, "b" u, i] = b
	}
	s = field("cpu0_steal_pct")
	v[key, "st", i] = s == "" ? "" : (s + field("cpu1_steal_pct")) / 2
}

function floor_(x) { return x == int(x) ? x : (x < 0 ? int(x) - 1 : int(x)) }
function isort(a, k,   i, j, t) {
	for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
}
function median_sorted(a, k) { return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }

# Median of a[1..k] into MED, its interval into LO and HI ("" when k < 2); sorts a.
function describe(a, k,   b, j, c, cnt, cum, i1, i2, tally, vals, tcount, nv, key2, lo_rank, hi_rank, x) {
	MED = LO = HI = ""
	if (k == 0) return
	isort(a, k)
	MED = median_sorted(a, k)
	if (k == 1) return
	if (k < 6) { LO = a[1]; HI = a[k]; return }
	# Percentile bootstrap. A resample's median is a[i1] or the mean of a[i1] and a[i2]: tally
	# those index pairs (a few dozen distinct ones) instead of sorting B medians.
	srand(1)
	for (b = 1; b <= B; b++) {
		for (j = 1; j <= k; j++) cnt[j] = 0
		for (j = 1; j <= k; j++) { c = int(rand() * k) + 1; cnt[c]++ }
		cum = 0; i1 = i2 = 0
		for (j = 1; j <= k; j++) {
			cum += cnt[j]
			if (!i1 && cum >= int((k + 1) / 2)) i1 = j
			if (cum >= int(k / 2) + 1) { i2 = j; break }
		}
		if (k % 2) i1 = i2
		tally[i1 "," i2]++
	}
	nv = 0
	for (key2 in tally) { split(key2, x, ","); vals[++nv] = (a[x[1]] + a[x[2]]) / 2; tcount[nv] = tally[key2] }
	# sort the distinct medians, carrying their counts
	for (i1 = 2; i1 <= nv; i1++) for (i2 = i1; i2 > 1 && vals[i2-1] > vals[i2]; i2--) {
		c = vals[i2]; vals[i2] = vals[i2-1]; vals[i2-1] = c
		c = tcount[i2]; tcount[i2] = tcount[i2-1]; tcount[i2-1] = c
	}
	lo_rank = int(0.025 * B + 0.5); hi_rank = B - lo_rank + 1
	cum = 0
	for (j = 1; j <= nv; j++) {
		cum += tcount[j]
		if (LO == "" && cum >= lo_rank) LO = vals[j]
		if (cum >= hi_rank) { HI = vals[j]; break }
	}
}

# The median and interval of metric f over the accepted runs of key that have it; returns k.
function stat(key, f,   i, k, a) {
	k = 0
	for (i = 1; i <= n[key]; i++) if (v[key, f, i] != "") a[++k] = v[key, f, i] + 0
	describe(a, k)
	return k
}

# key's metric f over the reference backend's in the same repeat, paired: median and interval
# of the per-repeat ratios; returns the number of pairs.
function ratio(key, f,   rkey, i, j, k, a, x, y) {
	rkey = ref "," pkey[key]
	k = 0
	for (i = 1; i <= n[key]; i++) {
		if (!((rkey, R[key, i]) in at)) continue
		j = at[rkey, R[key, i]]
		x = v[key, f, i]; y = v[rkey, f, j]
		if (x != "" && y != "" && y + 0 > 0) a[++k] = x / y
	}
	describe(a, k)
	return k
}

# --- formatting ------------------------------------------------------------------------------

function num(x, fmt) { return x == "" ? "" : sprintf(fmt, x) }
function grouped(s,   neg, ip, rest, outp) {
	neg = substr(s, 1, 1) == "-"; if (neg) s = substr(s, 2)
	ip = s; rest = ""
	if (index(s, ".")) { ip = substr(s, 1, index(s, ".") - 1); rest = substr(s, index(s, ".")) }
	outp = ""
	while (length(ip) > 3) { outp = "," substr(ip, length(ip) - 2) outp; ip = substr(ip, 1, length(ip) - 3) }
	return (neg ? "-" : "") ip outp rest
}
# v rounded to d decimals (d < 0: to tens, hundreds, ...), thousands grouped
function rounded(x, d,   r) {
	if (d >= 0) return grouped(sprintf("%." d "f", x))
	r = 10 ^ (-d)
	return grouped(sprintf("%.0f", int(x / r + (x < 0 ? -0.5 : 0.5)) * r))
}
# One run has no interval; runs differ by 10-20% on this kind of machine: three significant
# digits are already generous.
function single(x,   e, d) {
	if (x == 0) return "0"
	e = floor_(log(x < 0 ? -x : x) / log(10) + 1e-9)
	d = 2 - e
	return rounded(x, d > 4 ? 4 : d)
}
# "median (lo–hi)" to the digits the interval supports; dflt decimals when every run agreed.
# The median keeps two significant digits however wide its interval: one run far off (a p99 of
# 1.6 s among two of 25 ms) would otherwise round a median of 27,700 to "0".
function human(med, lo, hi, dflt,   w, e, d) {
	if (med == "") return "—"
	if (lo == "" || hi == "") return single(med)
	w = (hi - lo) / 2
	if (w <= 0) return rounded(med, dflt) " (no spread)"
	e = floor_(log(w) / log(10) + 1e-9)
	d = -e + (w / 10 ^ e < 3.55 ? 1 : 0)
	if (med != 0 && d < 1 - floor_(log(med < 0 ? -med : med) / log(10) + 1e-9))
		d = 1 - floor_(log(med < 0 ? -med : med) / log(10) + 1e-9)
	if (d > 4) d = 4
	return rounded(med, d) " (" rounded(lo, d) "–" rounded(hi, d) ")"
}

# One output column: its name, the value, and how JSON writes it (n number, s string).
function put(name, value, type) { H[++nh] = name; V[nh] = value; T[nh] = type }
function put_stat(name, fmt) { put(name, num(MED, fmt), "n"); put(name "_lo", num(LO, fmt), "n"); put(name "_hi", num(HI, fmt), "n") }

# --- the modes that answer bench/compare's questions while it runs ---------------------------

function wanted(label) { return only == "" || index(" " only " ", " " label " ") > 0 }

# The widest relative interval of the ratios judged at point: 1e9 while some has fewer than 6
# pairs; -1 when there is nothing to judge (no backend but the reference, or none with an
# accepted run: an open-loop point every backend is past).
function check_point(   i, key, f, k, rel, worst, fs, nf, j, rkey) {
	worst = -1
	rkey = ref "," point
	for (i = 1; i <= nkeys; i++) {
		key = order[i]
		if (pkey[key] != point || klab[key] == ref || !wanted(klab[key])) continue
		if (!n[key] || !n[rkey]) continue
		# closed loop: msgs/s and server CPU; open loop: the rate is fixed, CPU is the result
		nf = split(krate[key] > 0 ? "s" : "m s", fs, " ")
		for (j = 1; j <= nf; j++) {
			k = ratio(key, fs[j])
			if (k < 6 || MED <= 0) { worst = 1e9; continue }
			rel = HI / MED - 1; if (1 - LO / MED > rel) rel = 1 - LO / MED
			if (rel > worst) worst = rel
		}
	}
	printf "%.4f\n", worst
}

function capacities(   i, key, p) {
	for (i = 1; i <= nkeys; i++) {
		key = order[i]
		if (krate[key] != 0 || !wanted(klab[key]) || stat(key, "m") == 0) continue
		p = ksize[key] " " kconns[key]
		if (!(p in cap) || MED < cap[p]) { if (!(p in cap)) porder[++np] = p; cap[p] = MED }
	}
	for (i = 1; i <= np; i++) printf "%s %.0f\n", porder[i], cap[porder[i]]
}

END {
	if (mode == "judge") exit
	if (mode == "merge") { merge(); exit }
	if (mode == "check") { check_point(); exit }
	if (mode == "capacity") { capacities(); exit }
	summary()
}

# --- the summary -----------------------------------------------------------------------------

function summary(   i, key, csv, json, md, j, closed, open, nrows, line, sep, name, x, msg) {
	csv = out "/summary.csv"; json = out "/summary.json"; md = out "/table.md"
	if (list_rejects != "0")
		for (i = 1; i <= nrejects; i++) print tool ": rejected " rejects[i] " (not averaged in)" > "/dev/stderr"
	if (nrejects) print tool ": " nrejects " run" (nrejects > 1 ? "s" : "") " rejected; the medians are of the others" > "/dev/stderr"
	printf "" > md
	print "[" > json
	for (i = 1; i <= nkeys; i++) {
		key = order[i]
		row(key)
		if (i == 1) {
			line = ""
			for (j = 1; j <= nh; j++) line = line (j > 1 ? "," : "") H[j]
			print line > csv
		}
		line = ""
		for (j = 1; j <= nh; j++) line = line (j > 1 ? "," : "") V[j]
		print line >> csv
		line = "  {\"ref\":\"" ref "\""
		for (j = 1; j <= nh; j++) {
			name = H[j]; sub("_vs_" ref, "_vs_ref", name)
			x = V[j] == "" ? "null" : (T[j] == "s" ? "\"" V[j] "\"" : V[j])
			line = line ",\"" name "\":" x
		}
		print line "}" (i < nkeys ? "," : "") >> json
		if (krate[key] > 0) open = 1; else closed = 1
	}
	print "]" >> json
	if (closed) table(md, 0)
	if (open) table(md, 1)
	notes(md, closed, open)
}

# Computes every column of key's row into H, V, T (summary.csv and JSON), and the human forms
# for table.md into cell[key, NAME].
function row(key,   k, pairs, cown, cbusy, satd, c, m3, p99, s3, c3, rm3, rs3, little, sb) {
	nh = 0
	k = n[key]
	cell[key, "label"] = klab[key]; cell[key, "size"] = ksize[key]; cell[key, "conns"] = kconns[key]
	cell[key, "errors"] = errs[key] + 0
	cell[key, "runs"] = k + 0 (rejected[key] ? " (" rejected[key] " rejected)" : "")
	cell[key, "rate"] = grouped(krate[key]); cell[key, "load"] = load[key] == "" ? "—" : load[key] "%"
	put(title, klab[key], "s"); put("size", ksize[key], "n"); put("connections", kconns[key], "n")
	put("repeats", k, "n")
	stat(key, "m"); keep3(m3); put("msgs_per_s", num(MED, "%.0f"), "n"); cell[key, "m"] = human(MED, LO, HI, 0)
	stat(key, "p99"); keep3(p99); put("p99_us", num(MED, "%.1f"), "n"); cell[key, "p99"] = human(MED, LO, HI, 0)
	stat(key, "s"); keep3(s3); put("server_cpu_us_per_msg", num(MED, "%.2f"), "n"); cell[key, "s"] = human(MED, LO, HI, 2)
	stat(key, "c"); keep3(c3); put("client_cpu_us_per_msg", num(MED, "%.2f"), "n"); cell[key, "c"] = human(MED, LO, HI, 2)
	put("errors", errs[key] + 0, "n")
	pairs = ratio(key, "m"); keep3(rm3); put("msgs_ratio_vs_" ref, num(MED, "%.3f"), "n")
	cell[key, "rm"] = ratio_cell(key)
	ratio(key, "s"); keep3(rs3); put("server_cpu_ratio_vs_" ref, num(MED, "%.3f"), "n")
	cell[key, "rs"] = ratio_cell(key)
	stat(key, "y"); put("server_syscalls_per_msg", num(MED, "%.2f"), "n"); cell[key, "y"] = human(MED, LO, HI, 2)
	stat(key, "w"); put("server_wakeups_per_msg", num(MED, "%.4f"), "n"); cell[key, "w"] = human(MED, LO, HI, 4)
	stat(key, "q"); put("server_completions_per_wakeup", num(MED, "%.2f"), "n"); cell[key, "q"] = human(MED, LO, HI, 2)
	put("proto", proto, "s")
	stat(key, "l"); put("loss_rate", proto == "udp" ? num(MED, "%.6f") : "", "n")
	cell[key, "l"] = MED == "" ? "—" : human(100 * MED, LO == "" ? "" : 100 * LO, HI == "" ? "" : 100 * HI, 3)
	# --- the columns above keep their places (tests/run-suite reads 5, 7 and 9); new ones follow
	put("rejected", rejected[key] + 0, "n")
	put("rate", krate[key], "n"); put("load_pct", load[key], "n")
	put("loop", krate[key] > 0 ? "open" : "closed", "s")
	put("latency_is", krate[key] > 0 ? "latency from intended send time" : "closed-loop queueing (Little's law) not latency", "s")
	put("interval", k >= 6 ? "boot95" : k >= 2 ? "minmax" : "none", "s")
	put("pairs", pairs, "n")
	put("msgs_per_s_lo", num(m3[1], "%.0f"), "n"); put("msgs_per_s_hi", num(m3[2], "%.0f"), "n")
	stat(key, "p50"); put_stat("p50_us", "%.1f"); cell[key, "p50"] = human(MED, LO, HI, 0)
	put("p99_us_lo", num(p99[1], "%.1f"), "n"); put("p99_us_hi", num(p99[2], "%.1f"), "n")
	stat(key, "p999"); put_stat("p999_us", "%.1f"); cell[key, "p999"] = human(MED, LO, HI, 0)
	# Little's law: a closed loop's mean latency is what is in flight over the rate
	little = krate[key] == 0 && m3[0] > 0 && kdepth[key] != "" ? kconns[key] * kdepth[key] / m3[0] * 1e6 : ""
	put("littles_law_us", num(little, "%.1f"), "n"); cell[key, "little"] = little == "" ? "—" : rounded(little, 0)
	put("server_cpu_us_per_msg_lo", num(s3[1], "%.2f"), "n"); put("server_cpu_us_per_msg_hi", num(s3[2], "%.2f"), "n")
	put("client_cpu_us_per_msg_lo", num(c3[1], "%.2f"), "n"); put("client_cpu_us_per_msg_hi", num(c3[2], "%.2f"), "n")
	put("msgs_ratio_vs_" ref "_lo", num(rm3[1], "%.3f"), "n"); put("msgs_ratio_vs_" ref "_hi", num(rm3[2], "%.3f"), "n")
	put("server_cpu_ratio_vs_" ref "_lo", num(rs3[1], "%.3f"), "n"); put("server_cpu_ratio_vs_" ref "_hi", num(rs3[2], "%.3f"), "n")
	stat(key, "cp"); put_stat("client_cpu_pct", "%.1f"); cown = MED; cell[key, "cp"] = human(MED, LO, HI, 0)
	stat(key, "b1"); put_stat("client_busy_pct", "%.1f"); cbusy = MED
	stat(key, "sp"); put_stat("server_cpu_pct", "%.1f"); cell[key, "sp"] = human(MED, LO, HI, 0)
	stat(key, "b0"); put_stat("server_busy_pct", "%.1f")
	cell[key, "busy"] = MED == "" && cbusy == "" ? "—" : num(MED, "%.0f") " / " num(cbusy, "%.0f")
	# saturated: echoload itself, or its CPU as a whole (softirq for its packets, or anything
	# else this shared machine ran there), above the threshold
	satd = cown != "" && cown > sat || cbusy != "" && cbusy > sat
	put("client_saturated", cown == "" && cbusy == "" ? "" : satd, "n")
	stat(key, "t0"); put_stat("server_total_cpu_us_per_msg", "%.2f"); cell[key, "t0"] = human(MED, LO, HI, 2)
	stat(key, "t1"); put_stat("client_total_cpu_us_per_msg", "%.2f"); cell[key, "t1"] = human(MED, LO, HI, 2)
	ratio(key, "t0"); put_stat("server_total_cpu_ratio_vs_" ref, "%.3f"); cell[key, "rt0"] = ratio_cell(key)
	stat(key, "si0"); put("server_softirq_pct", num(MED, "%.1f"), "n"); sb = MED
	stat(key, "si1"); put("client_softirq_pct", num(MED, "%.1f"), "n")
	cell[key, "si"] = sb == "" && MED == "" ? "—" : num(sb, "%.0f") " / " num(MED, "%.0f")
	stat(key, "st"); put("steal_pct", num(MED, "%.1f"), "n")
	stat(key, "ra"); put("rate_achieved_pct", num(MED, "%.1f"), "n"); cell[key, "ra"] = MED == "" ? "—" : rounded(MED, 1)
	# echoload --reconnect: connections per second, and paired to the reference like msgs/s
	stat(key, "cps"); put_stat("conns_per_s", "%.0f"); cell[key, "cps"] = human(MED, LO, HI, 0)
	ratio(key, "cps"); put_stat("conns_ratio_vs_" ref, "%.3f"); cell[key, "rcps"] = ratio_cell(key)
	c = ""
	if (cown != "" && cown > sat) c = c ", client CPU " sprintf("%.0f", cown) "%"
	else if (satd) c = c ", client's CPU 1 busy " sprintf("%.0f", cbusy) "%"
	if (missed[key]) c = c ", rate missed in " missed[key]
	else if (krate[key] > 0 && (MED != "" ? MED < 99 : m3[0] != "" && m3[0] < 0.99 * krate[key])) c = c ", rate missed"
	if (rejected[key] > missed[key]) c = c ", " rejected[key] - missed[key] " rejected"
	if (k == 0) c = c ", no accepted run"
	cell[key, "flags"] = substr(c, 3)
}
function keep3(a) { a[0] = MED; a[1] = LO; a[2] = HI }
function ratio_cell(key) { return MED == "" ? "—" : klab[key] == ref ? "1" : human(MED, LO, HI, 2) }

# The tables' columns: header text (UNIT, REF stand for the unit and the reference backend) and
# the cell it shows, "|" between columns.
function columns(open,   loss, conns) {
	loss = proto == "udp" ? "|loss %=l" : ""
	conns = churn ? "|conns/s=cps|÷ REF=rcps" : "" # only when the runs churned connections
	if (!open)
		return "TITLE=label|size=size|CONNS=conns|runs=runs|UNITs/s=m|÷ REF=rm" conns "|server CPU µs/UNIT=s|÷ REF=rs|client CPU µs/UNIT=c|client CPU %=cp|CPU 0 µs/UNIT=t0|÷ REF=rt0|CPU 1 µs/UNIT=t1|busy % CPU 0 / 1=busy|softirq % CPU 0 / 1=si" loss "|p99 µs ¹=p99|Little's law µs ¹=little|server syscalls/UNIT=y|wake-ups/UNIT=w|completions/wake-up=q|errors=errors|flags=flags"
	return "TITLE=label|size=size|CONNS=conns|offered UNITs/s=rate|% of capacity=load|achieved %=ra|runs=runs|p50 µs=p50|p99 µs=p99|p99.9 µs=p999|server CPU µs/UNIT=s|÷ REF=rs|CPU 0 µs/UNIT=t0|÷ REF=rt0|server CPU %=sp|client CPU %=cp|busy % CPU 0 / 1=busy|softirq % CPU 0 / 1=si" loss "|errors=errors|flags=flags"
}

function table(md, open,   spec, nc, cs, hd, ck, i, j, key, line, sepl, h) {
	print (open ? "## Open loop at fixed rates" : "## Closed loop") (proto == "udp" ? " (UDP)" : "") >> md
	print "" >> md
	nc = split(columns(open), cs, "|")
	line = "|"; sepl = "|"
	for (j = 1; j <= nc; j++) {
		h = substr(cs[j], 1, index(cs[j], "=") - 1); ck[j] = substr(cs[j], index(cs[j], "=") + 1)
		gsub(/TITLE/, title, h); gsub(/CONNS/, proto == "udp" ? "sockets" : "conns", h)
		gsub(/UNIT/, proto == "udp" ? "datagram" : "msg", h); gsub(/REF/, ref, h)
		line = line " " h " |"
		sepl = sepl (j <= 3 && ck[j] != "size" && ck[j] != "conns" || ck[j] == "flags" ? "---|" : "---:|")
	}
	print line >> md
	print sepl >> md
	for (i = 1; i <= nkeys; i++) {
		key = order[i]
		if ((krate[key] > 0) != open) continue
		line = "|"
		for (j = 1; j <= nc; j++) line = line " " cell[key, ck[j]] " |"
		print line >> md
	}
	print "" >> md
}

function notes(md, closed, open,   i) {
	print "Each cell: the median over the accepted runs and, in brackets, its interval: min–max with 2 to 5 runs, a 95% bootstrap interval from 6 on (" B " resamples, fixed seed). \"÷ " ref "\": the median of the per-repeat ratios to " ref " (same point, same repeat), its interval the same way. Values are rounded to the digits the interval supports (a single run, with none, to three significant digits). \"runs\": the accepted runs, and how many were rejected (errors, stalls, unanswered bytes, valid=0 or echoload failing): those are not averaged in." >> md
	print "" >> md
	print "CPU: server and client CPU µs/" (proto == "udp" ? "datagram" : "msg") " are each process's own CPU time per message (as echoload reads it; softirq work on its packets may be charged to whichever process was on the CPU); CPU 0 and CPU 1 (echod's and echoload's pinned CPUs, from /proc/stat, when echoload has --cpu-stat) are the whole CPU's busy time per message, softirq included, which the kernel spends on packets and bills to neither process. Client CPU above " sat "% (echoload's own, or CPU 1 busy as a whole: softirq for its packets, or anything else this shared machine ran there) flags the row: the client may have set the pace, so msgs/s and CPU per message there are one observation, not two, and a ratio may be the client's." >> md
	print "" >> md
	if (churn) {
		print "conns/s: connection churn (echoload --reconnect N): each connection echoes N messages, closes cleanly (its FIN, then the server's EOF) and is replaced by a new one; conns/s counts the connections whose close completed inside the measured interval, per second. msgs/s and CPU per message then include connecting and closing." >> md
		print "" >> md
	}
	if (closed) {
		print "¹ Closed loop: every connection sends its next message only when the echo of the last is back, so latency here is mostly queueing: by Little's law the mean is connections × depth ÷ msgs/s (the \"Little's law\" column). It is not a latency result; the open-loop runs are (bench/compare --fixed-rate, --rate-sweep)." >> md
		print "" >> md
	}
	if (open) {
		print "Open loop: echoload sends at the offered rate whatever the server does and counts latency from each message's intended send time (no coordinated omission). \"% of capacity\": of the slowest backend's closed-loop msgs/s at that point. \"rate missed in N\": N runs sent less than 99% of the offered rate in time (echoload's valid=0): past saturation, those runs are left out, like the rejected ones." >> md
		print "" >> md
	}
	if (nrejects) {
		print "Rejected runs (not averaged in):" >> md
		print "" >> md
		for (i = 1; i <= nrejects; i++) print "- " rejects[i] >> md
		print "" >> md
	}
}
