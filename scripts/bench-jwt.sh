#!/usr/bin/env bash
# jwt_auth's cost per call, in one interleaved run: static mode serving a 6-byte file (the
# cheapest call, so the check's share shows), wrk with one thread and 8 connections, in rounds
# of: no jwt_auth; an RS256, a PS256 and an ES256 token reused by every call (the usual case: a
# client keeps its function token); and fresh RS256 and ES256 tokens (2 000 distinct ones
# cycled: each call's signature checked). Tokens come from the test issuer
# (tests/interop/oidc_issuer.py, PyJWT). Prints requests per second per scenario, then the
# medians; with --vs, the same scenarios against another watchdog (the Go of-watchdog) in the
# same rounds, and the median of the per-round ratios.
#
#   scripts/bench-jwt.sh [--runs N] [--seconds S] [--vs OTHER_BINARY]   (defaults: 3 runs of 5 s)
#   scripts/bench-jwt.sh --smoke     (CI: one round of 1 s per scenario)
#
# Every answer must be a 200, or the script fails. Needs wrk, curl, python3 with pyjwt and
# cryptography. The Go watchdog reads its issuer from 127.0.0.1:8000 (jwt_auth_local) and
# serves metrics on 8081: with --vs both ports must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 seconds=5 other=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --vs) other=$(readlink -f "$2"); shift 2 ;;
        --smoke) runs=1 seconds=1; shift ;;
        *) echo "usage: $0 [--runs N] [--seconds S] [--vs OTHER_BINARY] [--smoke]" >&2; exit 2 ;;
    esac
done
scripts/build-static.sh --jwt >/dev/null
ours=target/jwt/x86_64-unknown-linux-gnu/release/fwatchdog
work=$(mktemp -d)
issuer_pid=""
trap 'kill -9 $(jobs -p) $issuer_pid 2>/dev/null || true; rm -rf "$work"' EXIT
echo hello > "$work/f.txt"
mkdir "$work/tmp"
port=18910
iport=18900
[ -n "$other" ] && iport=8000
python3 tests/interop/oidc_issuer.py --port $iport >/dev/null 2>&1 &
issuer_pid=$!
disown  # its end is no news
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$iport/keys" && break; sleep 0.1; done
iss=http://localhost:$iport

mint() { # KEY ALG COUNT: COUNT tokens granting ns:fn, one per line
    curl -fs -X POST "http://127.0.0.1:$iport/mint" -d "{\"key\": \"$1\", \"alg\": \"$2\", \"count\": $3,
        \"claims\": {\"iss\": \"$iss\", \"aud\": \"$iss\", \"function\": {\"permissions\": [\"ns:fn\"]}}, \"exp_in\": 3600}"
}
# A wrk script sending the tokens of FILE in turn.
cycle() { # FILE
    cat > "$1.lua" <<LUA
tokens = {}
for line in io.lines("$1") do tokens[#tokens + 1] = line end
i = 0
request = function()
    i = i % #tokens + 1
    return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[i]})
end
LUA
    echo "$1.lua"
}
declare -A lua=([off]="")
for spec in "RS256 reused:rsa:RS256:1" "PS256 reused:rsa:PS256:1" "ES256 reused:ec256:ES256:1" \
    "RS256 fresh:rsa:RS256:2000" "ES256 fresh:ec256:ES256:2000"; do
    IFS=: read -r name key alg count <<<"$spec"
    file="$work/${name// /_}"
    mint "$key" "$alg" "$count" > "$file"
    lua[$name]=$(cycle "$file")
done
names=(off "RS256 reused" "PS256 reused" "ES256 reused" "RS256 fresh" "ES256 fresh")

declare -A results
measure() { # WHO SCENARIO: requests per second
    local who=$1 name=$2 env=(mode=static static_path="$work" port=$port TMPDIR="$work/tmp")
    if [ "$name" != off ]; then
        env+=(jwt_auth=true OPENFAAS_NAME=fn OPENFAAS_NAMESPACE=ns)
        if [ "$who" = ours ]; then
            env+=(jwt_auth_discovery_url="http://127.0.0.1:$iport/.well-known/openid-configuration")
        else
            env+=(jwt_auth_local=true)
        fi
    fi
    local bin=$ours
    if [ "$who" = ours ]; then env+=(metrics_port=$((port + 1))); else bin=$other; fi
    env -i PATH="$PATH" "${env[@]}" "$bin" >/dev/null 2>&1 &
    local wd=$!
    for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/_/health" && break; sleep 0.05; done
    local args=(-t1 -c8 "-d${seconds}s")
    [ -n "${lua[$name]}" ] && args+=(-s "${lua[$name]}")
    local out
    out=$(wrk "${args[@]}" "http://127.0.0.1:$port/f.txt")
    kill -9 "$wd"; wait "$wd" 2>/dev/null || true  # no drain: the next scenario starts at once
    if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then echo "$who, $name: not every answer was a 200: $out" >&2; exit 1; fi
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}
median() { # FORMAT
    tr ' ' '\n' | sed '/^$/d' | sort -g | awk -v f="$1" '{a[NR]=$1} END {printf f "\n", a[int((NR+1)/2)]}'
}

for r in $(seq 1 "$runs"); do
    for name in "${names[@]}"; do
        rps=$(measure ours "$name")
        results[ours $name]+=" $rps"
        line="run $r: $name: fwatchdog $rps"
        if [ -n "$other" ]; then
            other_rps=$(measure other "$name")
            results[other $name]+=" $other_rps"
            results[ratio $name]+=" $(awk -v a="$rps" -v b="$other_rps" 'BEGIN {printf "%.2f", a / b}')"
            line+=", other $other_rps"
        fi
        echo "$line" >&2
    done
done
echo "| scenario | fwatchdog (req/s) |${other:+ other (req/s) | ours / other |}"
echo "|---|---|${other:+---|---|}"
for name in "${names[@]}"; do
    line="| $name | $(echo "${results[ours $name]}" | median %.0f) |"
    [ -n "$other" ] && line+=" $(echo "${results[other $name]}" | median %.0f) | $(echo "${results[ratio $name]}" | median %.2f) |"
    echo "$line"
done
