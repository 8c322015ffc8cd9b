#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: builds the benches, runs every workload's interleaved runner
# (contenders alternate round by round; paired per-round CPU-time ratios), and writes the
# machine description, the tables and the goal verdicts.
#
#   benches/run.sh [OUTPUT]          # default: BENCHMARKS.md at the workspace root
#   ROUNDS_SCALE=0.2 benches/run.sh /tmp/quick.md   # fewer rounds, for a smoke run
#   FANIN_RUNS=1 benches/run.sh      # fanin once (default 3 runs, its goals on their median)
#
# Keeps the sections "## Analysis" and "## HTTP" of an existing OUTPUT (written by hand:
# where the missed goals' cost is; the numbers of benches/http.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-$root/BENCHMARKS.md}
scale=${ROUNDS_SCALE:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
md=$work/tables.md
tsv=$work/results.tsv
: >"$md"
: >"$tsv"

rounds() { python3 -c "import sys; print(max(2, round($1 * $scale)))"; }

cargo bench --workspace --no-run 2>&1 | tail -n 3
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# bench name, rounds env var, rounds
for spec in "pingpong PINGPONG_ROUNDS 500" "fanin FANIN_ROUNDS 300" \
    "idle_scale IDLE_SCALE_ROUNDS 20" "churn CHURN_ROUNDS 200" \
    "waker WAKER_ROUNDS 300" "timers TIMERS_ROUNDS 15"; do
    set -- $spec
    n=$(rounds "$3")
    echo "== $1: $n interleaved rounds" >&2
    env "$2=$n" IOLOOP_BENCH_MD="$md" IOLOOP_BENCH_TSV="$tsv" \
        cargo bench --bench "$1" 2>/dev/null
done
# fanin's goals sit within its run-to-run drift (each process lays its sockets and heap out
# anew), so it runs FANIN_RUNS times in all, each a fresh process: the table is the first run,
# the goals take the median of the runs' ratios, and every run's ratios are listed.
fanin_runs=${FANIN_RUNS:-3}
repeats=""
for k in $(seq 2 "$fanin_runs"); do
    n=$(rounds 300)
    echo "== fanin, run $k of $fanin_runs: $n interleaved rounds" >&2
    env FANIN_ROUNDS="$n" IOLOOP_BENCH_MD="$work/fanin-$k.md" IOLOOP_BENCH_TSV="$work/fanin-$k.tsv" \
        cargo bench --bench fanin 2>/dev/null
    repeats="$repeats $work/fanin-$k.tsv"
done
# The poll and select notifiers against mio's own on poll(2): a second build of the waker
# bench, with mio configured as on a system without epoll or kqueue (its own target dir, so
# the main build is untouched; the first time it compiles everything once more, ~1 min).
n=$(rounds 300)
echo "== waker against mio on poll(2): $n interleaved rounds" >&2
env IOLOOP_MIO_POLL=1 RUSTFLAGS="--cfg mio_unsupported_force_poll_poll" \
    CARGO_TARGET_DIR="$root/target/mio-poll" WAKER_ROUNDS="$n" \
    IOLOOP_BENCH_MD="$md" IOLOOP_BENCH_TSV="$tsv" cargo bench --bench waker 2>/dev/null
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

http_section=""
analysis_section=""
if [ -f "$out" ]; then
    http_section=$(awk '/^## HTTP/{on=1} /^## / && !/^## HTTP/{on=0} on' "$out")
    analysis_section=$(awk '/^## Analysis/{on=1} /^## / && !/^## Analysis/{on=0} on' "$out")
fi

OUT="$out" MD="$md" TSV="$tsv" REPEATS="$repeats" HTTP="$http_section" ANALYSIS="$analysis_section" LOAD_BEFORE="$load_before" \
    LOAD_AFTER="$load_after" python3 - <<'EOF'
import os, platform, subprocess

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"

model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or "?"
rows = {}
for line in open(os.environ["TSV"]):
    f = line.rstrip("\n").split("\t")
    title, ident, cpu, wall = f[0], f[1], float(f[2]), float(f[3])
    ratios = dict(kv.split("=", 1) for kv in f[4:])
    rows[(title, ident)] = (cpu, wall, {k: float(v) for k, v in ratios.items()})

def ratio(title, ident, base):
    r = rows.get((title, ident))
    return None if r is None else r[2].get(base)

# Further runs of a workload (fanin): (title, ident) -> [the ratios of each run].
runs = {}
for (title, ident), r in rows.items():
    runs[(title, ident)] = [r[2]]
for path in os.environ.get("REPEATS", "").split():
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if (f[0], f[1]) in runs:
            runs[(f[0], f[1])].append({k: float(v) for k, v in (kv.split("=", 1) for kv in f[4:])})

def run_ratios(title, ident, base):
    return [r[base] for r in runs.get((title, ident), []) if base in r]

def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

goals = []  # (workload, contender, measure, value, goal, met)
def goal(title, ident, base, limit, measure, text):
    v = ratio(title, ident, base)
    if v is None:
        return
    each = run_ratios(title, ident, base)
    if len(each) > 1:
        # Several runs: the median of the runs' medians, and each run's.
        v = median(each)
        value = f"{v:.3f} (runs: " + ", ".join(f"{x:.3f}" for x in each) + ")"
        if v <= limit:
            verdict = "met (median of the runs)"
        elif min(each) <= limit:
            verdict = "missed by the median of the runs, met in " + \
                f"{sum(x <= limit for x in each)} of {len(each)}"
        elif v <= limit * 1.02:
            verdict = "missed (by < 2 %, within run-to-run noise)"
        else:
            verdict = "**missed**"
        goals.append((title, ident, measure + f", median of {len(each)} runs", value, text, verdict))
        return
    lo, hi = ratio(title, ident, base + "~lo"), ratio(title, ident, base + "~hi")
    value = f"{v:.3f}" if None in (lo, hi) else f"{v:.3f} ({lo:.3f}-{hi:.3f})"
    if v <= limit:
        verdict = "met"
    elif lo is not None and lo <= limit:
        verdict = "missed by the median, within its 95 % interval"
    elif v <= limit * 1.02:
        verdict = "missed (by < 2 %, within run-to-run noise)"
    else:
        verdict = "**missed**"
    goals.append((title, ident, measure, value, text, verdict))

idents = sorted({i for (t, i) in rows})
def ids(title, prefixes):
    return [i for (t, i) in sorted(rows) if t == title and i.startswith(prefixes)]

# pingpong (issues: sys <= 1.03 x floor, reactor <= 1.10 x floor, both <= 1.00 x mio; like
# with like: Level against the level floor, Edge against the edge floor and mio).
for mode in ("level", "edge"):
    goal("pingpong", f"ioloop-sys-epoll-{mode}", f"floor-{mode}", 1.03,
         f"time/hop x floor-{mode}", "<= 1.03")
    goal("pingpong", f"ioloop-epoll-{mode}", f"floor-{mode}", 1.10,
         f"time/hop x floor-{mode}", "<= 1.10")
for i in ("ioloop-sys-epoll-edge", "ioloop-epoll-edge"):
    goal("pingpong", i, "mio", 1.0, "time/hop x mio", "<= 1.00 (mio is edge-triggered)")
for i in ids("fanin", ("ioloop-",)):
    goal("fanin", i, "mio", 1.0, "time/event x mio", "<= 1.00 (events/s >= mio)")
for i in ids("idle_scale", ("ioloop-sys-epoll", "ioloop-sys-uring", "ioloop-epoll", "ioloop-uring")):
    if i.endswith("/10000"):
        goal("idle_scale", i, "own/10", 1.10, "time/hop x own/10", "<= 1.10")
for i in ids("churn", ("ioloop-",)):
    goal("churn", i, "mio", 1.0, "time/op x mio", "<= 1.00 (ops/s >= mio)")
# Like with like: epoll, io_uring (and kqueue) against mio's Waker on epoll; poll and select
# against mio's Waker on poll(2) (the `waker-mio-poll` build), since a level-triggered
# notifier must be read on every wake-up, by mio as by ioloop.
for i in ids("waker", ("ioloop-",)):
    if not any(b in i for b in ("-poll", "-select")):
        goal("waker", i, "mio", 1.0, "CPU/round trip x mio", "<= 1.00")
for i in ids("waker-mio-poll", ("ioloop-",)):
    goal("waker-mio-poll", i, "mio-poll", 1.0, "CPU/round trip x mio on poll(2)",
         "<= 1.00 (mio's Waker on poll(2))")
for i in ids("timers", ("ioloop-",)):
    goal("timers", i, "heap", 2.0, "time/timer x heap", "<= 2.00")

growth = []
for i in ids("idle_scale", ("ioloop-sys-poll", "ioloop-sys-select", "ioloop-poll", "ioloop-select")):
    v = ratio("idle_scale", i, "own/10")
    if v is not None and not i.endswith("/10"):
        growth.append(f"| {i} | {v:.1f} x |")

rev = sh("git rev-parse --short HEAD")
dirty = " (plus uncommitted changes)" if sh("git status --porcelain -- src sys benches Cargo.toml") else ""
doc = []
doc.append("# Benchmarks\n")
doc.append("Generated by `benches/run.sh` (do not edit by hand, except the HTTP section).\n")
doc.append("## Machine\n")
doc.append(f"- CPUs: {sh('nproc')} x {model}")
doc.append(f"- kernel: {platform.release()} ({platform.machine()})")
doc.append(f"- rustc: {sh('rustc --version')}")
doc.append(f"- commit: {rev}{dirty}; date: {sh('date -u +%Y-%m-%dT%H:%MZ')}")
doc.append(f"- load average (1/5/15 min) before / after the run: {os.environ['LOAD_BEFORE']} / {os.environ['LOAD_AFTER']} "
           "(a shared machine: other jobs ran during the measurement)")
doc.append("")
doc.append("## How to regenerate\n")
doc.append("```sh\nbenches/run.sh            # about 4-6 minutes (one more the first time: the mio-on-poll build); ROUNDS_SCALE=0.2 for a smoke run\n```\n")
doc.append("Each workload runs all its contenders in one process, interleaved: every round runs each "
           "contender once (in a random order per round), and the ratios are medians of the per-round ratios "
           "of CPU time (thread CPU time; process CPU time for `waker`), so load from other processes "
           "hits both sides of a ratio alike. Ratios are of *time* per element: below 1 is faster. "
           "`cargo bench --bench <name>` runs the same contenders under criterion instead "
           "(`IOLOOP_BENCH_CLOCK=cpu` for thread CPU time); `python3 benches/compare.py` summarises those.\n")
doc.append("Contenders: `floor-*` raw libc epoll (the floor), `mio` (1.x), `polling` (3.x), "
           "`ioloop-sys-<backend>-<mode>` the `Poller` backends, `ioloop-<backend>-<mode>` the "
           "`IoLoop` reactor (handlers), `ioloop-task-<backend>` the task layer. `mio-poll` "
           "(table waker-mio-poll) is mio built with `--cfg mio_unsupported_force_poll_poll`, its "
           "`poll(2)` selector: the like-with-like base for the poll and select notifiers.\n")
doc.append("## Goals\n")
doc.append("| workload | contender | measure | value (95 % interval) | goal | verdict |")
doc.append("|---|---|---|---:|---|---|")
for g in goals:
    doc.append("| " + " | ".join(g) + " |")
doc.append("")
doc.append("The interval is a distribution-free 95 % confidence interval of the median of the "
           "paired per-round ratios (order statistics): how closely this run pins the median "
           "down. It does not cover the drift between runs on this shared machine, which moves "
           "ratios by up to about 2 % (see Analysis).\n")
ctls = [(g, ratio("fanin", f"mio-control-{g}", "mio")) for g in range(1, 10)]
ctls = [(g, c) for g, c in ctls if c is not None]
if ctls:
    doc.append("fanin's controls, `mio-control-<group>` (mio's code again, on its own socketpairs, one in "
               "each group of contenders: the groups are listed under fanin's table), measured "
               + ", ".join(f"{c:.3f} (group {g})" for g, c in ctls)
               + " x mio in the first run: the size of the noise that the placement of a contender's "
               "sockets alone makes in that workload; a contender's ratio is best read against its "
               "group's control.\n")
fanin_ids = [i for (t, i) in sorted(rows) if t == "fanin" and i != "mio"]
nruns = max((len(run_ratios("fanin", i, "mio")) for i in fanin_ids), default=0)
if nruns > 1:
    doc.append(f"fanin ran {nruns} times, each a fresh process (`FANIN_RUNS`, default 3): its goals "
               "above are the median of the runs' ratios; the table under Results is the first run. "
               "Every run's ratio x mio:\n")
    doc.append("| contender | " + " | ".join(f"run {k}" for k in range(1, nruns + 1)) + " | median |")
    doc.append("|---|" + "---:|" * (nruns + 1))
    for i in fanin_ids:
        each = run_ratios("fanin", i, "mio")
        if len(each) == nruns:
            doc.append(f"| {i} | " + " | ".join(f"{x:.3f}" for x in each) + f" | {median(each):.3f} |")
    doc.append("")
fu = ratio("waker", "floor-uring", "mio")
su = ratio("waker", "ioloop-sys-uring", "floor-uring")
if None not in (fu, su):
    doc.append(f"io_uring's waker against its floor: `floor-uring` (a raw ring set up as owned mode, a "
               f"multishot poll of an eventfd) is {fu:.3f} x mio; ioloop-sys-uring is {su:.3f} x "
               "floor-uring.\n")
fs = ratio("waker-mio-poll", "floor-select", "mio-poll")
ss = ratio("waker-mio-poll", "ioloop-sys-select", "floor-select")
sp = ratio("waker-mio-poll", "ioloop-sys-poll", "floor-poll")
if None not in (fs, ss, sp):
    doc.append(f"select's waker against its floor: `floor-select` (raw `select(2)` on an eventfd, read "
               f"on each wake-up) is {fs:.3f} x mio on poll(2) by itself, so no select loop can meet "
               f"that goal; ioloop-sys-select is {ss:.3f} x floor-select, as ioloop-sys-poll is "
               f"{sp:.3f} x floor-poll.\n")
if growth:
    doc.append("poll and select (no goal; the growth of the per-hop time with the idle fds registered):\n")
    doc.append("| contender | x own/10 |")
    doc.append("|---|---:|")
    doc.extend(growth)
    doc.append("")
    doc.append("select cannot hold fds >= FD_SETSIZE (1024): its 10 000-fd case is n/a.\n")
analysis = os.environ.get("ANALYSIS", "").strip()
if not analysis:
    analysis = "## Analysis\n\n_Where the cost of each missed goal is (written by hand; kept by run.sh)._"
doc.append(analysis + "\n")
doc.append("## Results\n")
doc.append(open(os.environ["MD"]).read().rstrip() + "\n")
http = os.environ.get("HTTP", "").strip()
if not http:
    http = "## HTTP\n\n_Placeholder: the lead fills this in with the numbers of `benches/http.sh`._"
doc.append(http + "\n")
open(os.environ["OUT"], "w").write("\n".join(doc))
print(f"wrote {os.environ['OUT']}")
EOF
