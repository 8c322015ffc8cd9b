#!/usr/bin/env bash
# HTTP "hello" over loopback: ioloop (reactor handlers, and --tasks) against the mio reference.
#
#   benches/http.sh                      # 3 interleaved runs of 10 s per server and load
#   RUNS=5 DURATION=20s benches/http.sh
#
# Builds examples/http_hello.rs and examples/http_mio.rs in release, then for each run drives
# every server in turn (ioloop, tasks, mio, mio-sr; the next run starts with tasks, and so
# on, so drift hits all alike) with wrk, twice: plain keep-alive (one request in flight per
# connection) and pipelined (DEPTH requests per write, through a small Lua script). The
# server runs on CPU 0 and wrk on CPU 1 (taskset), one wrk thread, CONNS connections.
#
# Reported per server: median req/s, and median server CPU time per request — utime + stime
# from /proc/PID/stat before and after the measured run (clock ticks), divided by the requests
# wrk completed. Loopback req/s carry about ±10 % noise, and on a 2-core box wrk is the
# bottleneck (the server idles 20-35 % of the time), so req/s mostly measure wrk; CPU µs/req is
# what the event loop's own cost moves. Ratios are to mio (the reference: edge-triggered, reads
# drained to WouldBlock as mio's docs require), paired: each run's figure over mio's in the
# same run, reported as the median and the range over the runs; above 1.00 is better for
# req/s, below 1.00 is better for µs/req. mio-sr is http_mio --short-read, mio with tokio's
# shortcut (a short read ends the draining), which saves the read that returns WouldBlock.
#
# Environment: RUNS (3), DURATION (10s), CONNS (64), DEPTH (16), WARMUP (2s),
# SERVER_CPU (0), WRK_CPU (1).
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
DEPTH=${DEPTH:-16}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}

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
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
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

clk_tck=$(getconf CLK_TCK)

# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat; counted
# after the ")" that ends the command name).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# run_one NAME LOAD ARGS...: starts the server, warms up, measures, appends a result line.
run_one() {
    local name=$1 load=$2
    shift 2
    taskset -c "$SERVER_CPU" "$@" 127.0.0.1:0 >"$tmp/listen" &
    server_pid=$!
    until grep -q '^listening on ' "$tmp/listen" 2>/dev/null; do
        kill -0 "$server_pid" 2>/dev/null || { echo "$name did not start" >&2; exit 1; }
        sleep 0.05
    done
    local addr
    addr=$(sed -n 's/^listening on //p' "$tmp/listen")
    local script=()
    if [ "$load" = pipelined ]; then script=(-s "$tmp/pipeline.lua"); fi
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" "${script[@]}" "http://$addr/" >/dev/null
    local before after
    before=$(cpu_ticks "$server_pid")
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "${script[@]}" "http://$addr/" >"$tmp/wrk"
    after=$(cpu_ticks "$server_pid")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    if grep -Eq 'Socket errors|Non-2xx' "$tmp/wrk"; then
        echo "warning: $name $load:" >&2
        grep -E 'Socket errors|Non-2xx' "$tmp/wrk" >&2
    fi
    local requests rps
    requests=$(awk '/requests in/ {print $1}' "$tmp/wrk")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk")
    # CPU µs per request.
    local us
    us=$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$requests" \
        'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
    printf '%-9s %-10s run %d: %10.0f req/s  %7s us/req CPU  (%d requests)\n' \
        "$name" "$load" "$run" "$rps" "$us" "$requests" >&2
    echo "$load $name $run $rps $us" >>"$tmp/results"
}

echo "wrk -t1 -c$CONNS -d$DURATION (pipelined: depth $DEPTH), server on CPU $SERVER_CPU," \
    "wrk on CPU $WRK_CPU, $RUNS interleaved runs" >&2
# server_args NAME: the command line of a server.
server_args() {
    case $1 in
        ioloop) echo "$bin/http_hello" ;;
        tasks) echo "$bin/http_hello --tasks" ;;
        mio) echo "$bin/http_mio" ;;
        mio-sr) echo "$bin/http_mio --short-read" ;;
    esac
}

servers=(ioloop tasks mio mio-sr)
for run in $(seq 1 "$RUNS"); do
    for load in keep-alive pipelined; do
        # Each run starts one server further along, so that no server always runs first
        # (or always right after the same one).
        for i in 0 1 2 3; do
            name=${servers[$(((run - 1 + i) % 4))]}
            # shellcheck disable=SC2046
            run_one "$name" "$load" $(server_args "$name")
        done
    done
done

# Medians and ratios.
echo
awk -v runs="$RUNS" '
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
        t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
    }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    k = $1 SUBSEP $2
    n[k]++
    rps[k, n[k]] = $4
    us[k, n[k]] = $5
    run_rps[$1, $2, $3] = $4
    run_us[$1, $2, $3] = $5
    if ($3 > nruns) nruns = $3
}
END {
    split("keep-alive pipelined", loads, " ")
    split("ioloop tasks mio mio-sr", servers, " ")
    printf "%-10s %-7s %10s %10s %16s %16s\n", "load", "server", "req/s", "CPU us/req",
        "req/s x mio", "us/req x mio"
    for (l = 1; l <= 2; l++) {
        for (s = 1; s <= 4; s++) {
            k = loads[l] SUBSEP servers[s]
            delete a; delete b; delete ra; delete ub
            for (i = 1; i <= n[k]; i++) { a[i] = rps[k, i]; b[i] = us[k, i] }
            # Paired: the value of each run over the value of mio in the same run.
            m = 0
            for (r = 1; r <= nruns; r++) {
                if ((loads[l], servers[s], r) in run_rps && (loads[l], "mio", r) in run_rps) {
                    m++
                    ra[m] = run_rps[loads[l], servers[s], r] / run_rps[loads[l], "mio", r]
                    ub[m] = run_us[loads[l], servers[s], r] / run_us[loads[l], "mio", r]
                }
            }
            lo_r = hi_r = median(ra, m); lo_u = hi_u = median(ub, m)
            for (i = 1; i <= m; i++) {
                if (ra[i] < lo_r) lo_r = ra[i]; if (ra[i] > hi_r) hi_r = ra[i]
                if (ub[i] < lo_u) lo_u = ub[i]; if (ub[i] > hi_u) hi_u = ub[i]
            }
            printf "%-10s %-7s %10.0f %10.3f %5.2f %4.2f-%4.2f %5.2f %4.2f-%4.2f\n", loads[l],
                servers[s], median(a, n[k]), median(b, n[k]), median(ra, m), lo_r, hi_r,
                median(ub, m), lo_u, hi_u
        }
    }
    printf "(medians of %d runs; x mio = median and range of the per-run ratios to mio,\n", runs
    printf " each run timing every server in turn, in a rotating order)\n"
}' "$tmp/results"
