#!/usr/bin/env bash
# The ARM binaries, tested under emulation: built by scripts/cross-build.sh, then run by
# qemu-user (Debian's qemu-user-static) through the public conformance suite and a few checks
# of what a 32-bit address space changes; the builds with the `jwt` feature through the
# jwt_auth tests (tests/jwt_auth.rs: every algorithm and curve, on 32 and 64 bits).
#
#   scripts/test-arm.sh [aarch64|armv7|all]      (default: all; needs root, debootstrap, qemu-user-static)
#
# One case of the suite is left out: qemu-user answers /proc/self/stat with its own made-up
# figures, so the process metrics read 0 there (metrics_process_metrics), which says nothing
# about the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

want=${1:-all}
case "$want" in
    aarch64) arches=(aarch64) ;;
    armv7) arches=(armv7) ;;
    all) arches=(aarch64 armv7) ;;
    *) echo "usage: $0 [aarch64|armv7|all]" >&2; exit 2 ;;
esac
suite=""
for dir in "${CONFORMANCE_DIR:-}" ../shared/conformance; do
    if [ -n "$dir" ] && [ -f "$dir/run.py" ]; then suite=$dir; break; fi
done
[ -n "$suite" ] || { echo "test-arm.sh needs the conformance suite (../shared/conformance or CONFORMANCE_DIR)" >&2; exit 1; }

scripts/cross-build.sh "$want"
scripts/cross-build.sh --jwt "$want"

work=$(mktemp -d)
trap 'pkill -P $$ >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# Every public case but the one qemu cannot answer truly.
cases=()
for name in $(sed -n 's/^def \([a-z0-9_]*\)(ctx):.*/\1/p' "$suite/public_cases.py"); do
    [ "$name" = metrics_process_metrics ] || cases+=(-k "$name")
done

# The first line of the answer to a POST declaring LENGTH and sending two bytes, if one comes
# within SECONDS.
raw() { # PORT LENGTH SECONDS
    python3 - "$@" <<'EOF'
import socket, sys
port, length, wait = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\nab" % length.encode())
s.settimeout(wait)
try:
    print(s.recv(4096).split(b"\r\n")[0].decode())
except socket.timeout:
    print("")
EOF
}

failed=0
for arch in "${arches[@]}"; do
    case "$arch" in
        aarch64) triple=aarch64-unknown-linux-gnu; qemu=qemu-aarch64-static ;;
        armv7) triple=armv7-unknown-linux-gnueabihf; qemu=qemu-arm-static ;;
    esac
    command -v "$qemu" >/dev/null || { echo "test-arm.sh needs $qemu (apt-get install qemu-user-static)" >&2; exit 1; }
    bin=$(readlink -f "target/$triple/release/fwatchdog")
    wrapper="$work/fwatchdog-$arch"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$bin" > "$wrapper"
    chmod +x "$wrapper"
    echo "== $arch: $(stat -c %s "$bin") bytes; $("$wrapper" --version | head -1)" >&2

    # The public suite, two cases at a time (emulation is slow, deadlines are real).
    if ! WATCHDOG_BIN="$wrapper" python3 "$suite/run.py" public -j 2 "${cases[@]}" > "$work/$arch.log" 2>&1; then
        grep -A3 '^FAIL' "$work/$arch.log" >&2 || true
        failed=1
    fi
    echo "$arch conformance: $(tail -1 "$work/$arch.log") (metrics_process_metrics left out: qemu fakes /proc/self/stat)" >&2

    # 32 bits: lengths beyond 4 GiB are refused or passed as 64-bit numbers, never wrapped.
    port=18680
    mkdir -p "$work/tmp-$arch"
    # wc -c answers only at the end of the body: a length wrapped to 32 bits would end it early.
    env -i PATH="$PATH" TMPDIR="$work/tmp-$arch" port=$port metrics_port=$((port + 1)) fprocess="wc -c" \
        "$wrapper" > "$work/$arch-wd.log" 2>&1 &
    wd=$!
    for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/_/health" && break; sleep 0.05; done
    check() { # WHAT EXPECTED ACTUAL
        if [ "$2" = "$3" ]; then echo "$arch: $1: ok" >&2; else echo "$arch: $1: expected $2, got $3" >&2; failed=1; fi
    }
    check "a call" "5" "$(curl -s --max-time 20 --data-binary hello "http://127.0.0.1:$port/" | tr -d ' ')"
    # A Content-Length of 2^32 + 1 that never arrives: a 64-bit build waits for the body; a
    # 32-bit one cannot frame it (tiny_http reads lengths as usize) and refuses it as too large.
    # Neither wraps it to 1 byte, which would answer at once. 2^64 - 1 is refused by both.
    if [ "$arch" = armv7 ]; then big="HTTP/1.1 413 Content Too Large"; else big=""; fi
    check "2^32 + 1 declared, 2 bytes sent" "$big" "$(raw "$port" 4294967297 2)"
    check "2^64 - 1 declared" "HTTP/1.1 413 Content Too Large" "$(raw "$port" 18446744073709551615 20)"
    check "a call after them" "10" "$(curl -s --max-time 20 --data-binary 'still here' "http://127.0.0.1:$port/" | tr -d ' ')"
    kill "$wd"
    wait "$wd" || true
    if grep -q panicked "$work/$arch-wd.log"; then echo "$arch: a panic:" >&2; grep -A3 panicked "$work/$arch-wd.log" >&2; failed=1; fi

    # The jwt build: the jwt_auth tests, through emulation (the test programs run natively).
    jwt_bin=$(readlink -f "target/jwt/$triple/release/fwatchdog")
    jwt_wrapper="$work/fwatchdog-jwt-$arch"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$qemu" "$jwt_bin" > "$jwt_wrapper"
    chmod +x "$jwt_wrapper"
    echo "== $arch jwt: $(stat -c %s "$jwt_bin") bytes" >&2
    if FWATCHDOG_BIN="$wrapper" FWATCHDOG_JWT_BIN="$jwt_wrapper" \
        cargo test --quiet --profile test-programs --test jwt_auth > "$work/$arch-jwt.log" 2>&1; then
        echo "$arch jwt_auth tests: $(grep 'test result' "$work/$arch-jwt.log" | tail -1)" >&2
    else
        grep -B2 -A12 'panicked' "$work/$arch-jwt.log" >&2 || tail -30 "$work/$arch-jwt.log" >&2
        failed=1
    fi
done
exit "$failed"
