#!/usr/bin/env bash
# A static, stripped release binary for x86_64 (glibc, crt-static): runs in an empty root, as
# in a FROM scratch image. Prints its path and size.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${TARGET:-x86_64-unknown-linux-gnu}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release --target "$target" >&2
bin="target/$target/release/fwatchdog"
size=$(stat -c %s "$bin")
printf '%s %s bytes (%s MiB)\n' "$bin" "$size" "$(awk "BEGIN{printf \"%.2f\", $size/1048576}")"
