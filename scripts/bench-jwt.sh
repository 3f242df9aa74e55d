#!/usr/bin/env bash
# jwt_auth's cost per call, in one interleaved run: static mode serving a 6-byte file (the
# cheapest call, so the check's share shows), wrk with 8 connections for 5 s, in rounds of:
# no jwt_auth; an RS256, a PS256 and an ES256 token reused by every call (the usual case: a
# client keeps its function token); and fresh RS256 and ES256 tokens (each call's signature
# checked: a token used once). Tokens come from the test issuer (tests/interop/oidc_issuer.py,
# PyJWT). Prints requests per second per round, then the medians.
#
#   scripts/bench-jwt.sh [rounds]      (default 3; needs wrk, curl, python3 with pyjwt and cryptography)
#   scripts/bench-jwt.sh --smoke       (CI: one round of 1 s per scenario; checks every answer is 200)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} duration=5s
if [ "$rounds" = --smoke ]; then rounds=1 duration=1s; fi
case "$rounds" in ''|*[!0-9]*) echo "usage: $0 [rounds | --smoke]" >&2; exit 2 ;; esac
scripts/build-static.sh --jwt >/dev/null
bin=target/jwt/x86_64-unknown-linux-gnu/release/fwatchdog
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo hello > "$work/f.txt"
mkdir "$work/tmp"
iport=18900 port=18910
python3 tests/interop/oidc_issuer.py --port $iport >/dev/null 2>&1 &
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$iport/keys" && break; sleep 0.1; done
iss=http://localhost:$iport
mint() { # KEY ALG
    curl -s -X POST "http://127.0.0.1:$iport/mint" -d "{\"key\": \"$1\", \"alg\": \"$2\", \"claims\": {\"iss\": \"$iss\",
        \"aud\": \"$iss\", \"function\": {\"permissions\": [\"ns:fn\"]}}, \"exp_in\": 3600}"
}
# Fresh tokens: 2 000 distinct ones (more than the 1 024 the watchdog remembers), cycled by a
# wrk script, so every call's signature is checked.
fresh() { # KEY ALG
    local file="$work/$2.tokens"
    curl -s -X POST "http://127.0.0.1:$iport/mint" -d "{\"key\": \"$1\", \"alg\": \"$2\", \"count\": 2000,
        \"claims\": {\"iss\": \"$iss\", \"aud\": \"$iss\", \"function\": {\"permissions\": [\"ns:fn\"]}}, \"exp_in\": 3600}" > "$file"
    cat > "$work/$2.lua" <<LUA
tokens = {}
for line in io.lines("$file") do tokens[#tokens + 1] = line end
i = 0
request = function()
    i = i % #tokens + 1
    return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[i]})
end
LUA
    echo "lua:$work/$2.lua"
}
declare -A results
run() { # NAME TOKEN [jwt]
    local name=$1 token=$2 env=(mode=static static_path="$work" port=$port metrics_port=$((port + 1)) TMPDIR="$work/tmp")
    [ -n "${3:-}" ] && env+=(jwt_auth=true jwt_auth_discovery_url="http://127.0.0.1:$iport/.well-known/openid-configuration"
        OPENFAAS_NAME=fn OPENFAAS_NAMESPACE=ns)
    env -i PATH="$PATH" "${env[@]}" "$bin" >/dev/null 2>&1 &
    local wd=$!
    for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/_/health" && break; sleep 0.05; done
    local args=(-t1 -c8 "-d$duration")
    case "$token" in
        "") ;;
        lua:*) args+=(-s "${token#lua:}") ;;
        *) args+=(-H "Authorization: Bearer $token") ;;
    esac
    local out rps
    out=$(wrk "${args[@]}" "http://127.0.0.1:$port/f.txt")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    if echo "$out" | grep -q 'Non-2xx'; then echo "$name: answers other than 200: $out" >&2; exit 1; fi
    kill -9 "$wd"; wait "$wd" 2>/dev/null || true  # no drain: the next scenario starts at once
    echo "round $r: $name $rps" >&2
    results[$name]="${results[$name]:-} $rps"
}
rs=$(mint rsa RS256) ps=$(mint rsa PS256) es=$(mint ec256 ES256)
rs_fresh=$(fresh rsa RS256) es_fresh=$(fresh ec256 ES256)
names=(off "RS256 reused" "PS256 reused" "ES256 reused" "RS256 fresh" "ES256 fresh")
for r in $(seq 1 "$rounds"); do
    run off ""
    run "RS256 reused" "$rs" jwt
    run "PS256 reused" "$ps" jwt
    run "ES256 reused" "$es" jwt
    run "RS256 fresh" "$rs_fresh" jwt
    run "ES256 fresh" "$es_fresh" jwt
done
for name in "${names[@]}"; do
    median=$(echo "${results[$name]}" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "$name: median $median req/s"
done
