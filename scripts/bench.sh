#!/usr/bin/env bash
# Reproducible benchmark of fwatchdog (and optionally another watchdog binary) on this machine.
#
#   scripts/bench.sh [--vs OTHER_BINARY] [--runs N] [--seconds S] [--quick]
#
# Tools: wrk (load, latency percentiles), curl, and scripts/benchtool.rs (compiled here with
# rustc: the spawn ceiling, startup time, sequential latency, and a fast upstream for http
# mode). Each scenario runs N times (default 3), alternating between the binaries when --vs is
# given; the medians are reported. Prints a Markdown table. Takes about 4 minutes, 8 with --vs.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
seconds=5
other=""
while [ $# -gt 0 ]; do
    case "$1" in
        --vs) other=$(readlink -f "$2"); shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --quick) runs=1; seconds=3; shift ;;
        *) echo "usage: $0 [--vs OTHER_BINARY] [--runs N] [--seconds S] [--quick]" >&2; exit 2 ;;
    esac
done
for tool in wrk curl rustc; do
    command -v "$tool" >/dev/null || { echo "bench.sh needs $tool (apt-get install wrk curl)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'pkill -P $$ >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
PORT=18480
METRICS=18481
UPSTREAM=18490

scripts/build-static.sh >/dev/null 2>&1
ours=$(readlink -f target/x86_64-unknown-linux-gnu/release/fwatchdog)
rustc -O -o "$work/benchtool" scripts/benchtool.rs
bt="$work/benchtool"
head -c 1024 /dev/urandom > "$work/body1k"
head -c 65536 /dev/urandom > "$work/body64k"
cat > "$work/post1k.lua" <<EOF
wrk.method = "POST"
local f = io.open("$work/body1k", "rb"); wrk.body = f:read("*a"); f:close()
EOF
cat > "$work/post64k.lua" <<EOF
wrk.method = "POST"
local f = io.open("$work/body64k", "rb"); wrk.body = f:read("*a"); f:close()
EOF

binaries=("$ours")
[ -n "$other" ] && binaries+=("$other")
label() { [ "$1" = "$ours" ] && echo fwatchdog || basename "$1"; }

wd_pid=""
start_wd() { # BINARY ENV...
    local bin=$1; shift
    env -i PATH="$PATH" HOME="$HOME" TMPDIR="$work/tmp" port=$PORT metrics_port=$METRICS "$@" "$bin" \
        >"$work/wd.log" 2>&1 &
    wd_pid=$!
    for _ in $(seq 1 500); do
        if curl -fs -o /dev/null "http://127.0.0.1:$PORT/_/health"; then return 0; fi
        sleep 0.02
    done
    echo "watchdog did not become healthy:" >&2; cat "$work/wd.log" >&2; exit 1
}
stop_wd() {
    [ -n "$wd_pid" ] && kill -9 "$wd_pid" 2>/dev/null || true
    wait "$wd_pid" 2>/dev/null || true
    pkill -9 -f "$bt upstream" 2>/dev/null || true
    wd_pid=""
    sleep 0.3
}
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
wrk_rps() { awk '/Requests\/sec/{print $2}'; }
wrk_pct() { # PCT  -> microseconds
    awk -v p="$1%" '$1==p { v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} }'
}
record() { # KEY BINARY VALUE
    echo "$3" >> "$work/$1.$(label "$2")"
}
med() { # KEY BINARY
    local f="$work/$1.$(label "$2")"
    [ -s "$f" ] && median < "$f" || echo "-"
}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d)" >&2

for run in $(seq 1 "$runs"); do
    echo "== run $run/$runs" >&2
    record spawn "$ours" "$("$bt" spawn-baseline 16 "$seconds")"
    for bin in "${binaries[@]}"; do
        # http mode, 16 connections: through the watchdog, then straight to the upstream.
        start_wd "$bin" mode=http fprocess="$bt upstream $UPSTREAM" upstream_url="http://127.0.0.1:$UPSTREAM"
        out=$(wrk -t2 -c16 -d"${seconds}s" --latency "http://127.0.0.1:$PORT/")
        record http_rps "$bin" "$(wrk_rps <<<"$out")"
        record http_p50 "$bin" "$(wrk_pct 50 <<<"$out")"
        record http_p99 "$bin" "$(wrk_pct 99 <<<"$out")"
        out=$(wrk -t2 -c16 -d"${seconds}s" --latency "http://127.0.0.1:$UPSTREAM/")
        record direct_rps "$bin" "$(wrk_rps <<<"$out")"
        record direct_p50 "$bin" "$(wrk_pct 50 <<<"$out")"
        record direct_p99 "$bin" "$(wrk_pct 99 <<<"$out")"
        lat=$("$bt" latency "127.0.0.1:$PORT/" 3000)
        direct=$("$bt" latency "127.0.0.1:$UPSTREAM/" 3000)
        p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$lat")
        d50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$direct")
        record seq_added "$bin" "$(awk "BEGIN{print $p50 - $d50}")"
        out=$(wrk -t2 -c16 -d"${seconds}s" --latency -s "$work/post64k.lua" "http://127.0.0.1:$PORT/")
        record echo64_rps "$bin" "$(wrk_rps <<<"$out")"
        record echo64_p99 "$bin" "$(wrk_pct 99 <<<"$out")"
        stop_wd

        # Fork modes: cat with a 1 KiB body, 16 connections.
        for mode in streaming serializing; do
            start_wd "$bin" mode=$mode fprocess=cat
            wrk -t2 -c16 -d1s -s "$work/post1k.lua" "http://127.0.0.1:$PORT/" >/dev/null
            out=$(wrk -t2 -c16 -d"${seconds}s" -s "$work/post1k.lua" "http://127.0.0.1:$PORT/")
            record "${mode}_rps" "$bin" "$(wrk_rps <<<"$out")"
            stop_wd
        done

        # 1 GiB through streaming cat (chunked upload from a pipe), peak RSS of the watchdog.
        start_wd "$bin" mode=streaming fprocess=cat
        t0=$(date +%s.%N)
        got=$(head -c 1073741824 /dev/zero | curl -s -T - -X POST "http://127.0.0.1:$PORT/" | wc -c)
        t1=$(date +%s.%N)
        [ "$got" = 1073741824 ] || { echo "1 GiB round trip returned $got bytes" >&2; exit 1; }
        record gib_mbs "$bin" "$(awk "BEGIN{printf \"%.0f\", 1073.741824/($t1-$t0)}")"
        record gib_rss "$bin" "$(awk '/VmHWM/{print $2}' /proc/$wd_pid/status)"
        stop_wd

        # Idle memory and startup time.
        start_wd "$bin" mode=streaming fprocess=cat
        sleep 1
        record idle_rss "$bin" "$(awk '/VmRSS/{print $2}' /proc/$wd_pid/status)"
        stop_wd
        s=$("$bt" startup "$bin" 20 $((PORT + 100)))
        record startup "$bin" "$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' <<<"$s")"
    done
done

ceiling=$(med spawn "$ours")
row() { # NAME KEY UNIT [ratio-key]
    local line="| $1 |"
    for bin in "${binaries[@]}"; do line+=" $(med "$2" "$bin") $3 |"; done
    if [ -n "$other" ]; then
        local a b; a=$(med "$2" "$ours"); b=$(med "$2" "$other")
        line+=" $(awk -v a="$a" -v b="$b" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "-" }') |"
    fi
    echo "$line"
}
echo
echo "Machine: $(nproc) cores, $(uname -m), kernel $(uname -r); $(date -u +%Y-%m-%d); medians of $runs runs of ${seconds}s."
echo
header="| scenario |"; sep="|---|"
for bin in "${binaries[@]}"; do header+=" $(label "$bin") |"; sep+="---|"; done
[ -n "$other" ] && { header+=" ratio |"; sep+="---|"; }
echo "$header"; echo "$sep"
row "http mode, 16 conns, GET (req/s)" http_rps ""
row "  same load straight to the upstream (req/s)" direct_rps ""
row "  http mode p50 latency (µs)" http_p50 ""
row "  http mode p99 latency (µs)" http_p99 ""
row "  added median latency, sequential keep-alive (µs)" seq_added ""
row "http mode, 64 KiB POST echo, 16 conns (req/s)" echo64_rps ""
row "  64 KiB echo p99 latency (µs)" echo64_p99 ""
row "streaming cat, 1 KiB, 16 conns (req/s)" streaming_rps ""
row "serializing cat, 1 KiB, 16 conns (req/s)" serializing_rps ""
row "1 GiB through streaming cat (MB/s)" gib_mbs ""
row "  peak RSS during 1 GiB (KiB)" gib_rss ""
row "idle RSS (KiB)" idle_rss ""
row "startup to 200 on /_/health (ms)" startup ""
echo
echo "Spawn ceiling (16 threads spawning cat and round-tripping 1 KiB, no HTTP): $ceiling /s"
for bin in "${binaries[@]}"; do
    h=$(med http_rps "$bin"); d=$(med direct_rps "$bin"); s=$(med streaming_rps "$bin"); z=$(med serializing_rps "$bin")
    echo "$(label "$bin"): http/direct $(awk -v a="$h" -v b="$d" 'BEGIN{printf "%.0f%%", 100*a/b}'), streaming/ceiling $(awk -v a="$s" -v b="$ceiling" 'BEGIN{printf "%.0f%%", 100*a/b}'), serializing/ceiling $(awk -v a="$z" -v b="$ceiling" 'BEGIN{printf "%.0f%%", 100*a/b}')"
done
echo "Binary size: $(stat -c %s "$ours") bytes ($(awk "BEGIN{printf \"%.2f\", $(stat -c %s "$ours")/1048576}") MiB, static, stripped)"
