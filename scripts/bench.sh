#!/usr/bin/env bash
# Reproducible benchmark of fwatchdog, optionally side by side with another watchdog binary.
#
#   scripts/bench.sh [--vs OTHER_BINARY] [--nginx] [--runs N] [--seconds S] [--quick] [--smoke]
#
# Each run measures every scenario once per binary, the binaries alternating, so both see the
# same machine state; with --vs the ratio column is the median of the per-run ratios (paired),
# not a ratio of medians. Tools: wrk, curl, taskset, and scripts/benchtool.rs (compiled here
# with rustc: spawn ceiling, startup, sequential latency, a fast upstream, a streaming echo
# client). CPU figures are the watchdog process's own user+system time (its function or
# upstream processes excluded). Prints a Markdown table.
#
# --nginx adds nginx (Debian's package) as a relay in front of the same upstream, in the http
# scenarios only: one worker process, a keep-alive upstream pool, no buffering; its column is
# the best-known relay's figure and "ours/nginx" the paired ratio. Where perf is installed, the
# pinned http run is repeated under `perf stat` to count system calls, futex calls and context
# switches per request in the relay's process.
#
#   --quick   1 run of 3 s per scenario      --smoke   1 run of 1 s: checks that every
#   --runs N  runs (default 3)                         scenario still runs (CI)
#   --seconds S  load duration (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
seconds=5
other=""
with_nginx=""
gib_mib=1024
while [ $# -gt 0 ]; do
    case "$1" in
        --vs) other=$(readlink -f "$2"); shift 2 ;;
        --nginx) with_nginx=1; shift ;;
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --quick) runs=1; seconds=3; shift ;;
        --smoke) runs=1; seconds=1; gib_mib=64; shift ;;
        *) echo "usage: $0 [--vs OTHER_BINARY] [--nginx] [--runs N] [--seconds S] [--quick] [--smoke]" >&2; exit 2 ;;
    esac
done
for tool in wrk curl rustc taskset; do
    command -v "$tool" >/dev/null || { echo "bench.sh needs $tool (apt-get install wrk curl util-linux)" >&2; exit 1; }
done
[ -z "$with_nginx" ] || command -v nginx >/dev/null || { echo "--nginx needs nginx (apt-get install nginx-light)" >&2; exit 1; }

work=$(mktemp -d)
trap 'pkill -P $$ >/dev/null 2>&1 || true; pkill -f "$work/benchtool upstream" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
PORT=18480
METRICS=18481
UPSTREAM=18490

scripts/build-static.sh >/dev/null 2>&1
ours=$(readlink -f target/x86_64-unknown-linux-gnu/release/fwatchdog)
rustc -O -o "$work/benchtool" scripts/benchtool.rs
bt="$work/benchtool"
head -c 1024 /dev/urandom > "$work/body1k"
head -c 65536 /dev/urandom > "$work/body64k"
for size in 1k 64k; do
    cat > "$work/post$size.lua" <<EOF
wrk.method = "POST"
local f = io.open("$work/body$size", "rb"); wrk.body = f:read("*a"); f:close()
EOF
done

binaries=("$ours")
[ -n "$other" ] && binaries+=("$other")
[ -n "$with_nginx" ] && binaries+=(nginx)
label() { [ "$1" = "$ours" ] && echo fwatchdog || basename "$1"; }
cpus=$(nproc)

wd_pid=""
start_wd() { # CPULIST BINARY ENV...
    local cpu=$1 bin=$2; shift 2
    mkdir -p "$work/tmp"
    if [ "$bin" = nginx ]; then
        # The relay alone: the upstream the watchdogs start as their fprocess, started here.
        taskset -c "$cpu" "$bt" upstream "$UPSTREAM" >/dev/null 2>&1 &
        start_nginx "$cpu"
    else
        env -i PATH="$PATH" HOME="$HOME" TMPDIR="$work/tmp" port=$PORT metrics_port=$METRICS "$@" \
            taskset -c "$cpu" "$bin" >"$work/wd.log" 2>&1 &
    fi
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
start_nginx() { # CPULIST
    mkdir -p "$work/nginx/logs"
    cat > "$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    upstream function { server 127.0.0.1:$UPSTREAM; keepalive 64; }
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location / {
            proxy_pass http://function;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
    taskset -c "$1" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/wd.log" 2>&1 &
}
# System calls, futex calls and context switches per request in the relay's process (all its
# threads), over one more pinned load run.
count_calls() { # BINARY RUN
    command -v perf >/dev/null || return 0
    local out="$work/perf.out" n perf_pid
    perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_futex,context-switches -p "$wd_pid" -o "$out" &
    perf_pid=$!
    sleep 0.2
    n=$(taskset -c 0 wrk -t1 -c16 -d"${seconds}s" "http://127.0.0.1:$PORT/" | wrk_reqs)
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    for event in raw_syscalls:sys_enter syscalls:sys_enter_futex context-switches; do
        record "calls_${event##*:}" "$1" "$(awk -F, -v e="$event" -v n="$n" '$3 == e {printf "%.2f", $1 / n}' "$out")" "$2"
    done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$wd_pid/stat"; }
threads() { ls "/proc/$wd_pid/task" | wc -l; }
median() { sort -g | awk '{a[NR]=$1} END{ if (NR == 0) print "-"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
wrk_rps() { awk '/Requests\/sec/{print $2}'; }
wrk_reqs() { awk '/requests in/{print $1}'; }
wrk_pct() { # PCT  -> microseconds
    awk -v p="$1%" '$1==p { v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} }'
}
record() { # KEY BINARY VALUE RUN
    echo "$4 $3" >> "$work/$1.$(label "$2")"
}

# One load run against the running watchdog: records req/s, p50/p99, CPU µs per request, and
# the thread count in the middle of the run. LOADCPU: where wrk runs.
measure() { # KEY BINARY RUN LOADCPU WRK-ARGS...
    local key=$1 bin=$2 run=$3 loadcpu=$4; shift 4
    local t0 t1 out mid
    t0=$(cpu_ticks)
    (sleep "$(awk -v s="$seconds" 'BEGIN{print s/2}')"; threads > "$work/mid") &
    out=$(taskset -c "$loadcpu" wrk "$@" -d"${seconds}s" --latency "http://127.0.0.1:$PORT/")
    wait $!
    t1=$(cpu_ticks)
    record "${key}_rps" "$bin" "$(wrk_rps <<<"$out")" "$run"
    record "${key}_p50" "$bin" "$(wrk_pct 50 <<<"$out")" "$run"
    record "${key}_p99" "$bin" "$(wrk_pct 99 <<<"$out")" "$run"
    record "${key}_cpu" "$bin" "$(awk -v a="$t0" -v b="$t1" -v n="$(wrk_reqs <<<"$out")" 'BEGIN{printf "%.1f", (b-a)*10000/n}')" "$run"
    record "${key}_threads" "$bin" "$(cat "$work/mid")" "$run"
}

echo "== machine: $cpus cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d)" >&2
http_env=(mode=http fprocess="$bt upstream $UPSTREAM" upstream_url="http://127.0.0.1:$UPSTREAM")

for run in $(seq 1 "$runs"); do
    echo "== run $run/$runs" >&2
    record spawn "$ours" "$("$bt" spawn-baseline 16 "$seconds")" "$run"
    record listen "$ours" "$("$bt" listen-time 20 $((PORT + 300)) | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')" "$run"
    for bin in "${binaries[@]}"; do
        # http mode, pinned: wrk on CPU 0, the watchdog and its upstream on CPU 1.
        start_wd 1 "$bin" "${http_env[@]}"
        taskset -c 0 wrk -t1 -c16 -d1s "http://127.0.0.1:$PORT/" >/dev/null
        measure pin16 "$bin" "$run" 0 -t1 -c16
        count_calls "$bin" "$run"
        # The same pinned load straight to the upstream, for the "of direct" figure.
        out=$(taskset -c 0 wrk -t1 -c16 -d"${seconds}s" "http://127.0.0.1:$UPSTREAM/")
        record direct16 "$bin" "$(wrk_rps <<<"$out")" "$run"
        stop_wd

        # http mode, unpinned, 16 / 64 / 256 connections; 64 KiB POST echo; sequential latency.
        start_wd "0-$((cpus - 1))" "$bin" "${http_env[@]}"
        wrk -t2 -c16 -d1s "http://127.0.0.1:$PORT/" >/dev/null
        measure http16 "$bin" "$run" "0-$((cpus - 1))" -t2 -c16
        measure http64 "$bin" "$run" "0-$((cpus - 1))" -t2 -c64
        record rss64 "$bin" "$(awk '/VmHWM/{print $2}' "/proc/$wd_pid/status")" "$run"
        measure http256 "$bin" "$run" "0-$((cpus - 1))" -t2 -c256
        record rss256 "$bin" "$(awk '/VmHWM/{print $2}' "/proc/$wd_pid/status")" "$run"
        measure echo64 "$bin" "$run" "0-$((cpus - 1))" -t2 -c16 -s "$work/post64k.lua"
        lat=$("$bt" latency "127.0.0.1:$PORT/" 3000)
        direct=$("$bt" latency "127.0.0.1:$UPSTREAM/" 3000)
        p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$lat")
        d50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$direct")
        record seq_added "$bin" "$(awk "BEGIN{print $p50 - $d50}")" "$run"
        stop_wd
        [ "$bin" = nginx ] && continue

        # Fork modes: cat with a 1 KiB body, 16 connections.
        for mode in streaming serializing; do
            start_wd "0-$((cpus - 1))" "$bin" mode=$mode fprocess=cat
            wrk -t2 -c16 -d1s -s "$work/post1k.lua" "http://127.0.0.1:$PORT/" >/dev/null
            out=$(wrk -t2 -c16 -d"${seconds}s" -s "$work/post1k.lua" "http://127.0.0.1:$PORT/")
            record "${mode}_rps" "$bin" "$(wrk_rps <<<"$out")" "$run"
            stop_wd
        done

        # 1 GiB through streaming cat, sent and read back at once (chunked, 1 MiB pieces).
        start_wd "0-$((cpus - 1))" "$bin" mode=streaming fprocess=cat
        t0=$(cpu_ticks)
        out=$("$bt" stream-echo "127.0.0.1:$PORT" "$gib_mib")
        t1=$(cpu_ticks)
        record gib_mbs "$bin" "$(sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' <<<"$out")" "$run"
        grep -q "complete=true" <<<"$out" || record gib_incomplete "$bin" 1 "$run"
        record gib_cpu "$bin" "$(awk -v a="$t0" -v b="$t1" -v m="$gib_mib" 'BEGIN{printf "%.2f", (b-a)/100*1024/m}')" "$run"
        record gib_rss "$bin" "$(awk '/VmHWM/{print $2}' "/proc/$wd_pid/status")" "$run"
        stop_wd

        # Idle memory and threads; startup in both modes.
        start_wd "0-$((cpus - 1))" "$bin" mode=streaming fprocess=cat
        sleep 1
        record idle_rss "$bin" "$(awk '/VmRSS/{print $2}' "/proc/$wd_pid/status")" "$run"
        record idle_threads "$bin" "$(threads)" "$run"
        stop_wd
        s=$("$bt" startup "$bin" 20 $((PORT + 100)))
        record startup "$bin" "$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' <<<"$s")" "$run"
        s=$("$bt" startup "$bin" 20 $((PORT + 200)) http)
        record startup_http "$bin" "$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' <<<"$s")" "$run"
    done
done

med() { # KEY BINARY
    local f="$work/$1.$(label "$2")"
    [ -s "$f" ] && awk '{print $2}' "$f" | median || echo "-"
}
# The median over runs of ours/other, each run's pair measured back to back.
paired() { # KEY [OTHER-LABEL]
    local a="$work/$1.fwatchdog" b="$work/$1.${2:-$(basename "$other")}"
    [ -s "$a" ] && [ -s "$b" ] || { echo "-"; return; }
    join "$a" "$b" | awk '$3 > 0 {printf "%.3f\n", $2/$3}' | median
}
row() { # NAME KEY
    local line="| $1 |"
    for bin in "${binaries[@]}"; do line+=" $(med "$2" "$bin") |"; done
    [ -n "$other" ] && line+=" $(paired "$2") |"
    [ -n "$with_nginx" ] && line+=" $(paired "$2" nginx) |"
    echo "$line"
}
echo
echo "Machine: $cpus cores, $(uname -m), kernel $(uname -r); $(date -u +%Y-%m-%d); medians of $runs runs of ${seconds}s."
echo
header="| scenario |"; sep="|---|"
for bin in "${binaries[@]}"; do header+=" $(label "$bin") |"; sep+="---|"; done
[ -n "$other" ] && { header+=" ours/other (paired) |"; sep+="---|"; }
[ -n "$with_nginx" ] && { header+=" ours/nginx (paired) |"; sep+="---|"; }
echo "$header"; echo "$sep"
row "http GET, 16 conns, pinned (req/s)" pin16_rps
row "  CPU per request, pinned (µs)" pin16_cpu
row "  system calls per request, pinned" calls_sys_enter
row "  futex calls per request, pinned" calls_sys_enter_futex
row "  context switches per request, pinned" calls_context-switches
row "  same pinned load straight to the upstream (req/s)" direct16
row "  p50 / p99 latency, pinned (µs)" pin16_p50
row "" pin16_p99
row "http GET, 16 conns (req/s)" http16_rps
row "  CPU per request (µs)" http16_cpu
row "  threads during the run" http16_threads
row "http GET, 64 conns (req/s)" http64_rps
row "  CPU per request (µs)" http64_cpu
row "  threads during the run" http64_threads
row "  peak RSS after 64 conns (KiB)" rss64
row "http GET, 256 conns (req/s)" http256_rps
row "  threads during the run" http256_threads
row "  peak RSS after 256 conns (KiB)" rss256
row "http 64 KiB POST echo, 16 conns (req/s)" echo64_rps
row "  CPU per request (µs)" echo64_cpu
row "  p99 latency (µs)" echo64_p99
row "added p50 latency, sequential keep-alive (µs)" seq_added
row "streaming cat, 1 KiB, 16 conns (req/s)" streaming_rps
row "serializing cat, 1 KiB, 16 conns (req/s)" serializing_rps
row "${gib_mib} MiB through streaming cat, full duplex (MB/s)" gib_mbs
row "  CPU seconds per GiB" gib_cpu
row "  peak RSS (KiB)" gib_rss
row "idle RSS (KiB)" idle_rss
row "idle threads" idle_threads
row "startup to 200 on /_/health, streaming (ms)" startup
row "startup to 200 on /_/health, http mode (ms)" startup_http
echo
echo "Spawn ceiling (16 threads spawning cat and round-tripping 1 KiB, no HTTP): $(med spawn "$ours") /s"
echo "The benchmark upstream's own time from spawn to listening: $(med listen "$ours") ms"
for bin in "${binaries[@]}"; do
    [ "$bin" = nginx ] && continue
    p=$(med pin16_rps "$bin"); d=$(med direct16 "$bin"); s=$(med streaming_rps "$bin"); z=$(med serializing_rps "$bin"); c=$(med spawn "$ours")
    inc=""; [ -s "$work/gib_incomplete.$(label "$bin")" ] && inc=" (its ${gib_mib} MiB echoes came back incomplete)"
    echo "$(label "$bin"): pinned http/direct $(awk -v a="$p" -v b="$d" 'BEGIN{printf "%.2f", a/b}'), streaming/ceiling $(awk -v a="$s" -v b="$c" 'BEGIN{printf "%.2f", a/b}'), serializing/ceiling $(awk -v a="$z" -v b="$c" 'BEGIN{printf "%.2f", a/b}')$inc"
done
echo "Binary size: $(stat -c %s "$ours") bytes ($(awk "BEGIN{printf \"%.2f\", $(stat -c %s "$ours")/1048576}") MiB, static, stripped)"
