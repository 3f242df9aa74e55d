#!/usr/bin/env bash
# The project's test command: format and lint checks, the static build (the chroot test runs
# it), unit and integration tests through the real binary, and the public conformance suite
# when ../shared/conformance exists.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
scripts/build-static.sh
cargo test --release --no-fail-fast

if [ -d ../shared/conformance ]; then
    WATCHDOG_BIN=target/release/fwatchdog python3 ../shared/conformance/run.py public
fi
