#!/usr/bin/env bash
# The project's test command: format, lint and import-cycle checks, the static build (the chroot test runs
# it), unit and integration tests through the real binary, the examples check, and the public
# conformance suite when ../shared/conformance exists. It takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
# The `jwt` feature (jwt_auth) builds apart, in target/jwt.
cargo clippy --release --all-targets --features jwt --target-dir target/jwt -- -D warnings
# Modules under src/ import one another without a cycle.
python3 scripts/check_imports.py
scripts/build-static.sh
# The tests run the shipped binary (release profile); the test programs themselves are built
# with a quicker profile. Skipped tests are listed at the end.
cargo build --release
cargo build --release --features jwt --target-dir target/jwt
skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
FWATCHDOG_BIN="$(pwd)/target/release/fwatchdog" FWATCHDOG_JWT_BIN="$(pwd)/target/jwt/release/fwatchdog" \
    FWATCHDOG_SKIP_LOG="$skips" cargo test --profile test-programs --no-fail-fast
# The jwt feature's own unit tests (token rules, patterns, URLs).
cargo test --profile test-programs --features jwt --target-dir target/jwt --bin fwatchdog
# The deployment examples: Kubernetes schema and Pod Security, the OpenFaaS stack file.
python3 scripts/check_examples.py

# The suite lives next to the checkout (../shared/conformance); a clone elsewhere points to it
# with CONFORMANCE_DIR.
suite=""
for dir in "${CONFORMANCE_DIR:-}" ../shared/conformance; do
    if [ -n "$dir" ] && [ -f "$dir/run.py" ]; then suite=$dir; break; fi
done
if [ -n "$suite" ]; then
    WATCHDOG_BIN=target/release/fwatchdog python3 "$suite/run.py" public
else
    echo "the conformance suite (not in ../shared/conformance; set CONFORMANCE_DIR)" >> "$skips"
    [ -z "${FWATCHDOG_REQUIRE_ALL:-}" ] || { echo "SKIPPED: the conformance suite" >&2; exit 1; }
fi
if [ -s "$skips" ]; then
    echo "SKIPPED ($(sort -u "$skips" | wc -l)):" >&2
    sort -u "$skips" | sed 's/^/  /' >&2
else
    echo "nothing skipped" >&2
fi
