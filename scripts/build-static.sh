#!/usr/bin/env bash
# A static, stripped release binary for x86_64 (glibc, crt-static): runs in an empty root, as
# in a FROM scratch image. Prints its path and size.
#
#   scripts/build-static.sh [--jwt]     (--jwt: with the `jwt` feature, into target/jwt/)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${TARGET:-x86_64-unknown-linux-gnu}
dir=target
features=()
if [ "${1:-}" = --jwt ]; then dir=target/jwt; features=(--features jwt); fi
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$target" --target-dir "$dir" "${features[@]}" >&2
bin="$dir/$target/release/fwatchdog"
size=$(stat -c %s "$bin")
printf '%s %s bytes (%s MiB)\n' "$bin" "$size" "$(awk "BEGIN{printf \"%.2f\", $size/1048576}")"
