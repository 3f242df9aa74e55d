#!/usr/bin/env bash
# Static fwatchdog binaries for ARM: aarch64 (arm64 nodes) and armv7 (32-bit Raspberry Pi class
# boards), built with Debian 13's Rust in a debootstrap'd chroot (rustup cannot add targets on
# the build machine; Debian ships each target's standard library as a package).
#
#   scripts/cross-build.sh [--jwt] [aarch64|armv7|all]   (default: all; needs root and debootstrap)
#
# Results: target/aarch64-unknown-linux-gnu/release/fwatchdog and
# target/armv7-unknown-linux-gnueabihf/release/fwatchdog, static (crt-static), stripped; with
# --jwt, built with the `jwt` feature into target/jwt/<triple>/release/fwatchdog.
#
# The chroot is made once and kept (FWATCHDOG_CHROOT, default target/debian-trixie; about
# 1.7 GB; a few minutes to set up). The crates are vendored on the host (`cargo vendor`), so the
# build inside needs no network. Rust comes from trixie-backports at a pinned version
# (FWATCHDOG_DEBIAN_RUST; trixie's own 1.85 lacks let chains, which the code uses): the
# toolchain and every target's standard library must be the same version, and on 2026-12-02 the
# mirror listed 1.97.1 whose armhf files were missing (404), so the pin is 1.96.1, whose
# packages exist for all three architectures.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out=target
features=""
if [ "${1:-}" = --jwt ]; then out=target/jwt; features="--features jwt"; shift; fi
want=${1:-all}
case "$want" in
    aarch64) targets=(aarch64) ;;
    armv7) targets=(armv7) ;;
    all) targets=(aarch64 armv7) ;;
    *) echo "usage: $0 [aarch64|armv7|all]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "cross-build.sh needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "cross-build.sh needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }

root=${FWATCHDOG_CHROOT:-$repo/target/debian-trixie}
mirror=${FWATCHDOG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
rust_version=${FWATCHDOG_DEBIAN_RUST:-1.96.1+dfsg1-2~bpo13+1}

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# Debian's name for each target: architecture, Rust target, cross gcc.
arch_of() { case "$1" in aarch64) echo arm64 ;; armv7) echo armhf ;; esac; }
triple_of() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
gcc_of() { case "$1" in aarch64) echo aarch64-linux-gnu ;; armv7) echo arm-linux-gnueabihf ;; esac; }

if [ ! -f "$root/.fwatchdog-ready" ]; then
    echo "== making the build chroot in $root (once)" >&2
    [ -x "$root/usr/bin/apt-get" ] || debootstrap --variant=minbase trixie "$root" "$mirror" >&2
    cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror trixie main
deb $mirror trixie-backports main
EOF
    in_root dpkg --add-architecture arm64
    in_root dpkg --add-architecture armhf
    in_root apt-get update -qq
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross >&2
    touch "$root/.fwatchdog-ready"
fi

# Rust's packages at the pinned version, fetched from the mirror's pool by file name (the index
# lists only the newest backport, whose files may be incomplete), installed with apt so that
# their own dependencies come from the index.
series=$(sed 's/^\([0-9]*\.[0-9]*\).*/\1/' <<<"$rust_version")
arches=(amd64)
for t in "${targets[@]}"; do arches+=("$(arch_of "$t")"); done
if [ "$(in_root dpkg-query -W -f '${Version}' rustc 2>/dev/null || true)" != "$rust_version" ] ||
    ! in_root dpkg-query -W "${arches[@]/#/libstd-rust-dev:}" >/dev/null 2>&1; then
    echo "== Debian's Rust $rust_version into the chroot" >&2
    debs=$root/var/cache/fwatchdog-rust
    rm -rf "$debs"
    mkdir -p "$debs"
    files=("rustc_${rust_version}_amd64.deb" "cargo_${rust_version}_amd64.deb")
    for a in "${arches[@]}"; do
        files+=("libstd-rust-dev_${rust_version}_$a.deb" "libstd-rust-${series}_${rust_version}_$a.deb")
    done
    for f in "${files[@]}"; do
        url="$mirror/pool/main/r/rustc/$(sed 's/+/%2b/g; s/~/%7e/g' <<<"$f")"
        curl -sf -o "$debs/$f" "$url" || { echo "cannot fetch $url: set FWATCHDOG_DEBIAN_RUST to a version the mirror has" >&2; exit 1; }
    done
    in_root apt-get update -qq
    in_root sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades /var/cache/fwatchdog-rust/*.deb" >&2
fi

# The sources as they are in the work tree (uncommitted changes included), the crates vendored.
build=$root/build/fwatchdog
rm -rf "$build"
mkdir -p "$build"
tar -C "$repo" --exclude=./target --exclude=./.git --exclude=./tests/interop/node_modules -cf - . | tar -C "$build" -xf -
cargo vendor --locked --quiet "$build/vendor" >/dev/null
mkdir -p "$build/.cargo"
cat > "$build/.cargo/config.toml" <<EOF
[source.crates-io]
replace-with = "vendored"
[source.vendored]
directory = "vendor"
EOF
for t in "${targets[@]}"; do
    triple=$(triple_of "$t")
    cat >> "$build/.cargo/config.toml" <<EOF
[target.$triple]
linker = "$(gcc_of "$t")-gcc"
rustflags = ["-C", "target-feature=+crt-static"]
EOF
done

# The commit for -version, as a native build records it (the copy inside has no .git).
sha=${FWATCHDOG_GIT_SHA:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
for t in "${targets[@]}"; do
    triple=$(triple_of "$t")
    echo "== building fwatchdog for $triple with $(in_root rustc --version)" >&2
    in_root sh -c "cd /build/fwatchdog && FWATCHDOG_GIT_SHA=$sha cargo build --offline --locked --release --target $triple $features" >&2
    mkdir -p "$out/$triple/release"
    cp "$build/target/$triple/release/fwatchdog" "$out/$triple/release/fwatchdog"
    echo "$out/$triple/release/fwatchdog: $(stat -c %s "$out/$triple/release/fwatchdog") bytes" >&2
done
