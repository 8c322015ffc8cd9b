#!/usr/bin/env bash
# HTTP "hello" over loopback: ioloop (reactor handlers, and --tasks) against the mio reference.
#
#   benches/http.sh                      # both measurements, 5 runs of 5 s per server and load
#   RUNS=9 DURATION=10s MODES=capped benches/http.sh
#
# Builds examples/http_hello.rs and examples/http_mio.rs in release and drives them with wrk,
# twice per server: plain keep-alive (one request in flight per connection) and pipelined
# (DEPTH requests per write, through a small Lua script). One wrk thread, CONNS connections.
# Servers: ioloop (handlers), tasks (http_hello --tasks), mio (the reference: edge-triggered,
# reads drained to WouldBlock as mio's docs require) and mio-sr (http_mio --short-read: mio
# with tokio's shortcut, a short read ends the draining, which saves the read that returns
# WouldBlock).
#
# Two measurements (MODES, both by default):
#
# capped: the req/s goal. Each server runs AT THE SAME TIME as a second mio server, both on
#   CPU 0, each in its own CPU cgroup capped at CAP % of a CPU, each loaded by its own wrk on
#   CPU 1. The caps make the servers the bottleneck (wrk has a core for two servers that
#   may use CAP % each), so each one's req/s is its cap over its CPU time per request; and
#   running the pair side by side subjects both to the same moment of this shared machine,
#   so their ratio cancels the drift that moves sequential runs by 10-20 %. mio against mio
#   is measured the same way, as the control: its spread is the method's noise. The two
#   servers trade cgroups every run. Needs root and a cgroup CPU controller (v1 cpu or v2
#   cpu.max); without them this mode is skipped with a message. Each pair is checked: a
#   server that used less than 90 % of its cap was not saturated, and a warning says so
#   (lower CAP).
# free: one server at a time, uncapped, on CPU 0, wrk on CPU 1; every run times the servers
#   in turn, starting one server further along each run. On a 2-core box wrk is the
#   bottleneck here (the server idles 20-35 % of the time), so req/s mostly measure wrk;
#   the server's CPU per request is what its event loop moves.
#
# Reported per server: median req/s and median server CPU time per request (from
# /proc/PID/task/*/schedstat, or /proc/PID/stat where there is none, before and after the
# run, divided by the requests wrk completed), and the ratios to mio, paired: each run's figure over mio's in the same run
# (capped: the simultaneous mio), as the median and the range over the runs. Above 1.00 is
# better for req/s, below 1.00 is better for µs/req.
#
# Environment: MODES ("capped free"), RUNS (5), DURATION (5s), CONNS (64), DEPTH (16),
# WARMUP (2s), CAP (25, % of a CPU per capped server), SERVER_CPU (0), WRK_CPU (1).
set -euo pipefail

MODES=${MODES:-capped free}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
DEPTH=${DEPTH:-16}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
CAP=${CAP:-25}

cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    echo "wrk not found: installing it (Debian package wrk)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        sudo apt-get install -y wrk >/dev/null
    fi
fi

cargo build --release --quiet --example http_hello --example http_mio
bin=target/release/examples

tmp=$(mktemp -d)
pids=()
groups=()
cleanup() {
    local p g
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for g in "${groups[@]}"; do rmdir "$g" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Pipelining: every request() call hands wrk DEPTH requests to write at once; wrk counts each
# response.
cat >"$tmp/pipeline.lua" <<EOF
init = function(args)
    local r = {}
    for i = 1, $DEPTH do
        r[i] = wrk.format(nil, "/")
    end
    req = table.concat(r)
end
request = function()
    return req
end
EOF

# server_args NAME: the command line of a server.
server_args() {
    case $1 in
        ioloop) echo "$bin/http_hello" ;;
        tasks) echo "$bin/http_hello --tasks" ;;
        mio | ref) echo "$bin/http_mio" ;;
        mio-sr) echo "$bin/http_mio --short-read" ;;
    esac
}

declare -A pid addr

# start NAME: starts server NAME on SERVER_CPU and waits until it listens.
start() {
    local name=$1
    # shellcheck disable=SC2046
    taskset -c "$SERVER_CPU" $(server_args "$name") 127.0.0.1:0 >"$tmp/listen.$name" &
    pid[$name]=$!
    pids+=("$!")
    until grep -q '^listening on ' "$tmp/listen.$name" 2>/dev/null; do
        kill -0 "${pid[$name]}" 2>/dev/null || { echo "$name did not start" >&2; exit 1; }
        sleep 0.05
    done
    addr[$name]=$(sed -n 's/^listening on //p' "$tmp/listen.$name")
}

# cpu_ns NAME: the CPU time of all of the server's threads so far, in ns: the first field of
# each thread's schedstat, or (a kernel without schedstat) utime + stime from /proc/PID/stat,
# fields 14 and 15 counted after the ")" that ends the command name, in clock ticks.
clk_tck=$(getconf CLK_TCK)
cpu_ns() {
    local f t rest sum=0 stat
    if [ ! -e "/proc/${pid[$1]}/schedstat" ]; then
        stat=$(<"/proc/${pid[$1]}/stat")
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        echo $(((${12} + ${13}) * 1000000000 / clk_tck))
        return
    fi
    for f in /proc/"${pid[$1]}"/task/*/schedstat; do
        read -r t rest <"$f"
        sum=$((sum + t))
    done
    echo "$sum"
}

# drive NAME LOAD DURATION OUT: one wrk run against server NAME, its report in OUT.
drive() {
    local script=()
    if [ "$2" = pipelined ]; then script=(-s "$tmp/pipeline.lua"); fi
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$3" "${script[@]}" "http://${addr[$1]}/" >"$4"
}

# report OUT NAME LOAD: "requests seconds" of a wrk report (warning about errors in it).
report() {
    if grep -Eq 'Socket errors|Non-2xx' "$1"; then
        echo "warning: $2 $3:" >&2
        grep -E 'Socket errors|Non-2xx' "$1" >&2
    fi
    # "1234 requests in 5.00s, ..." (wrk's unit: us, ms, s, m or h).
    awk '/ requests in / {
        t = $4; sub(/,$/, "", t)
        u = t; sub(/^[0-9.]+/, "", u)
        f = u == "us" ? 1e-6 : u == "ms" ? 1e-3 : u == "m" ? 60 : u == "h" ? 3600 : 1
        print $1, t * f
    }' "$1"
}

# cap_setup: two CPU cgroups ("a" and "b") capped at CAP % of a CPU each; sets cg[a] and
# cg[b] to their cgroup.procs files. Returns 1 (saying why) where this machine cannot.
declare -A cg
cap_setup() {
    local quota=$((CAP * 1000)) base g
    if [ "$(id -u)" -ne 0 ]; then
        echo "capped: needs root to make CPU cgroups; skipped" >&2
        return 1
    fi
    if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        base=/sys/fs/cgroup/cpu # cgroup v1
        for g in a b; do
            mkdir -p "$base/ioloop-http-$g" || return 1
            groups+=("$base/ioloop-http-$g")
            echo 100000 >"$base/ioloop-http-$g/cpu.cfs_period_us" || return 1
            echo "$quota" >"$base/ioloop-http-$g/cpu.cfs_quota_us" || return 1
        done
    elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        base=/sys/fs/cgroup # cgroup v2
        echo +cpu >"$base/cgroup.subtree_control" || return 1
        for g in a b; do
            mkdir -p "$base/ioloop-http-$g" || return 1
            groups+=("$base/ioloop-http-$g")
            echo "$quota 100000" >"$base/ioloop-http-$g/cpu.max" || return 1
        done
    else
        echo "capped: no cgroup CPU controller (v1 cpu or v2 cpu.max) found; skipped" >&2
        return 1
    fi
    cg[a]=$base/ioloop-http-a/cgroup.procs
    cg[b]=$base/ioloop-http-b/cgroup.procs
}

servers=(ioloop tasks mio mio-sr)
for name in "${servers[@]}"; do start "$name"; done
for name in "${servers[@]}"; do drive "$name" keep-alive "$WARMUP" /dev/null; done

# free: one server at a time, uncapped. Lines: "load server run req/s us/req".
if [[ " $MODES " == *" free "* ]]; then
    echo "free: wrk -t1 -c$CONNS -d$DURATION (pipelined: depth $DEPTH), server on CPU" \
        "$SERVER_CPU, wrk on CPU $WRK_CPU, $RUNS interleaved runs" >&2
    for run in $(seq 1 "$RUNS"); do
        for load in keep-alive pipelined; do
            # Each run starts one server further along, so that no server always runs first
            # (or always right after the same one).
            for i in 0 1 2 3; do
                name=${servers[$(((run - 1 + i) % 4))]}
                before=$(cpu_ns "$name")
                drive "$name" "$load" "$DURATION" "$tmp/wrk"
                after=$(cpu_ns "$name")
                read -r n secs < <(report "$tmp/wrk" "$name" "$load")
                line=$(awk -v n="$n" -v s="$secs" -v ns=$((after - before)) \
                    'BEGIN { printf "%.0f %.3f", n / s, ns / 1e3 / n }')
                echo "free   $load $name run $run: $line" >&2
                echo "$load $name $run $line" >>"$tmp/free"
            done
        done
    done
fi

# capped: each server side by side with the reference mio ("ref"), both capped. Lines:
# "load server run req/s us/req ref-req/s ref-us/req utilization ref-utilization".
capped=false
if [[ " $MODES " == *" capped "* ]] && cap_setup; then
    capped=true
    start ref
    drive ref keep-alive "$WARMUP" /dev/null
    echo "capped: each server and a second mio side by side on CPU $SERVER_CPU, $CAP % of a" \
        "CPU each, one wrk -t1 -c$CONNS -d$DURATION each on CPU $WRK_CPU, $RUNS runs" >&2
    for run in $(seq 1 "$RUNS"); do
        # The two cgroups are alike; the pair trades them every run all the same.
        if ((run % 2)); then mine=a theirs=b; else mine=b theirs=a; fi
        for load in keep-alive pipelined; do
            for i in 0 1 2 3; do
                name=${servers[$(((run - 1 + i) % 4))]}
                echo "${pid[$name]}" >"${cg[$mine]}"
                echo "${pid[ref]}" >"${cg[$theirs]}"
                a0=$(cpu_ns "$name")
                b0=$(cpu_ns ref)
                drive "$name" "$load" "$DURATION" "$tmp/wrk.a" &
                wa=$!
                drive ref "$load" "$DURATION" "$tmp/wrk.b" &
                wb=$!
                wait "$wa"
                wait "$wb"
                a1=$(cpu_ns "$name")
                b1=$(cpu_ns ref)
                read -r na sa < <(report "$tmp/wrk.a" "$name" "$load")
                read -r nb sb < <(report "$tmp/wrk.b" "mio (ref)" "$load")
                line=$(awk -v na="$na" -v sa="$sa" -v ca=$((a1 - a0)) -v nb="$nb" -v sb="$sb" \
                    -v cb=$((b1 - b0)) -v cap="$CAP" 'BEGIN {
                        printf "%.0f %.3f %.0f %.3f %.3f %.3f", na / sa, ca / 1e3 / na,
                            nb / sb, cb / 1e3 / nb, ca / (sa * 1e7 * cap), cb / (sb * 1e7 * cap)
                    }')
                echo "capped $load $name run $run: $line" >&2
                echo "$load $name $run $line" >>"$tmp/capped"
            done
        done
    done
fi

# summary FILE TITLE: medians and paired ratios. Free lines are paired with mio's line of the
# same run; capped lines carry their own reference.
summary() {
    awk -v title="$2" '
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
        t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
    }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function range(a, n,    i, lo, hi) {
    lo = hi = a[1]
    for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
    return sprintf("%4.2f-%4.2f", lo, hi)
}
{
    line[NR] = $0
    wide = NF > 5
    if (NF == 5 && $2 == "mio") { mio_rps[$1, $3] = $4; mio_us[$1, $3] = $5 }
}
END {
    split("keep-alive pipelined", loads, " ")
    split("ioloop tasks mio mio-sr", servers, " ")
    print title
    printf "%-10s %-7s %10s %10s %16s %16s%s\n", "load", "server", "req/s", "CPU us/req",
        "req/s x mio", "us/req x mio", wide ? "  min cap used" : ""
    low = 1
    for (l = 1; l <= 2; l++) {
        for (s = 1; s <= 4; s++) {
            m = 0; used = 1
            delete a; delete b; delete ra; delete ub
            for (i = 1; i <= NR; i++) {
                nf = split(line[i], f, " ")
                if (f[1] != loads[l] || f[2] != servers[s]) continue
                if (nf > 5) { ref_rps = f[6]; ref_us = f[7] }
                else if ((f[1], f[3]) in mio_rps) { ref_rps = mio_rps[f[1], f[3]]; ref_us = mio_us[f[1], f[3]] }
                else continue
                m++
                a[m] = f[4]; b[m] = f[5]
                ra[m] = f[4] / ref_rps; ub[m] = f[5] / ref_us
                if (nf > 5) {
                    if (f[8] < used) used = f[8]
                    if (f[9] < used) used = f[9]
                }
            }
            if (m == 0) continue
            if (used < low) low = used
            printf "%-10s %-7s %10.0f %10.3f %5.2f %s %5.2f %s%s\n", loads[l], servers[s],
                median(a, m), median(b, m), median(ra, m), range(ra, m), median(ub, m),
                range(ub, m), wide ? sprintf("  %12.2f", used) : ""
        }
    }
    if (wide && low < 0.9)
        printf "warning: a server used %.0f %% of its cap: wrk did not saturate it (lower CAP)\n", low * 100
}' "$1"
}

echo
if [ -s "$tmp/free" ]; then
    summary "$tmp/free" "free (one server at a time, uncapped; x mio: per-run ratios to mio's run)"
    echo
fi
if $capped; then
    summary "$tmp/capped" "capped (side by side with a second mio, $CAP % of a CPU each; x mio: per-run ratios to it; mio's row is the control)"
fi
echo "(medians of $RUNS runs; ratios: median and range of the per-run ratios)"
