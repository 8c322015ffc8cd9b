#!/usr/bin/env bash
# HTTP "hello" over loopback: ioloop (reactor handlers, and --tasks) against the mio reference.
#
#   benches/http.sh                      # 3 interleaved runs of 10 s per server and load
#   RUNS=5 DURATION=20s benches/http.sh
#
# Builds examples/http_hello.rs and examples/http_mio.rs in release, then for each run drives
# every server in turn (ioloop, tasks, mio, mio-sr, ioloop... so drift hits all alike)
# with wrk, twice: plain keep-alive (one request in flight per connection) and pipelined
# (DEPTH requests per write, through a small Lua script). The server runs on CPU 0 and wrk on
# CPU 1 (taskset), one wrk thread, CONNS connections.
#
# Reported per server: median req/s, and median server CPU time per request — utime + stime
# from /proc/PID/stat before and after the measured run (clock ticks), divided by the requests
# wrk completed. Loopback req/s carry about ±10 % noise, and on a 2-core box wrk is the
# bottleneck (the server idles 20-35 % of the time), so req/s mostly measure wrk; CPU µs/req is
# what the event loop's own cost moves. Ratios are to mio (the reference: edge-triggered, reads
# drained to WouldBlock as mio's docs require): above 1.00 is better for req/s, below 1.00 is
# better for µs/req. mio-sr is http_mio --short-read, mio with tokio's shortcut (a short read
# ends the draining), which saves the read that returns WouldBlock.
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
    echo "$load $name $rps $us" >>"$tmp/results"
}

echo "wrk -t1 -c$CONNS -d$DURATION (pipelined: depth $DEPTH), server on CPU $SERVER_CPU," \
    "wrk on CPU $WRK_CPU, $RUNS interleaved runs" >&2
for run in $(seq 1 "$RUNS"); do
    for load in keep-alive pipelined; do
        run_one ioloop "$load" "$bin/http_hello"
        run_one tasks "$load" "$bin/http_hello" --tasks
        run_one mio "$load" "$bin/http_mio"
        run_one mio-sr "$load" "$bin/http_mio" --short-read
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
    rps[k, n[k]] = $3
    us[k, n[k]] = $4
}
END {
    split("keep-alive pipelined", loads, " ")
    split("ioloop tasks mio mio-sr", servers, " ")
    printf "%-10s %-7s %12s %11s %10s %10s\n", "load", "server", "req/s", "CPU us/req", "req/s x", "us/req x"
    for (l = 1; l <= 2; l++) {
        for (s = 1; s <= 4; s++) {
            k = loads[l] SUBSEP servers[s]
            delete a; delete b
            for (i = 1; i <= n[k]; i++) { a[i] = rps[k, i]; b[i] = us[k, i] }
            mr[s] = median(a, n[k]); mu[s] = median(b, n[k])
        }
        for (s = 1; s <= 4; s++) {
            printf "%-10s %-7s %12.0f %11.3f %10.2f %10.2f\n", loads[l], servers[s], mr[s], mu[s],
                mr[s] / mr[3], mu[s] / mu[3]
        }
    }
    printf "(medians of %d runs; x = ratio to mio)\n", runs
}' "$tmp/results"
