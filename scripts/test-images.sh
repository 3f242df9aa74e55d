#!/usr/bin/env bash
# The scratch image (Dockerfile.scratch), built with podman from the prebuilt static binaries
# for linux/amd64, and linux/arm64 and linux/arm/v7 when scripts/cross-build.sh has built them,
# as one multi-arch manifest; then the amd64 image run for real, as Kubernetes and OpenFaaS run
# it.
#
#   scripts/test-images.sh      (needs root, podman, runc and busybox-static; no registry)
#
# Nothing is pulled: the Dockerfile's build stage is replaced by a directory holding the binary
# and a mode-1777 tmp (`--build-context build=DIR`), and the base image of the template test
# is made here from busybox. Podman runs with its own containers.conf: runc (crun refuses some
# hosts' hybrid cgroup mounts) and limits that a container may have where they cannot be raised.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in podman runc curl; do
    command -v "$tool" >/dev/null || { echo "test-images.sh needs $tool (apt-get install podman runc curl)" >&2; exit 1; }
done
# busybox-static's busybox runs in any image, with nothing beside it.
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "test-images.sh needs busybox-static (/bin/busybox)" >&2; exit 1; }

work=$(mktemp -d)
names=()
cleanup() {
    for n in "${names[@]}"; do podman rm -f -t 0 "$n" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$work/containers.conf"

failed=0
check() { # WHAT EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok: $1" >&2; else echo "FAIL: $1: expected ${2:-nothing}, got ${3:-nothing}" >&2; failed=1; fi
}

# ---------------------------------------------------------------- build
scripts/build-static.sh >/dev/null
declare -A binary=(
    [amd64]=target/x86_64-unknown-linux-gnu/release/fwatchdog
    [arm64]=target/aarch64-unknown-linux-gnu/release/fwatchdog
    [arm]=target/armv7-unknown-linux-gnueabihf/release/fwatchdog
)
podman manifest rm localhost/fwatchdog:latest >/dev/null 2>&1 || true
podman manifest create localhost/fwatchdog:latest >/dev/null
for arch in amd64 arm64 arm; do
    bin=${binary[$arch]}
    if [ ! -f "$bin" ]; then
        echo "note: no $bin (scripts/cross-build.sh makes it): no linux/$arch image" >&2
        continue
    fi
    ctx="$work/build-$arch"
    mkdir -p "$ctx/out/rootfs"
    cp "$bin" "$ctx/out/rootfs/fwatchdog"
    mkdir -m 1777 "$ctx/out/rootfs/tmp"
    variant=()
    [ "$arch" = arm ] && variant=(--variant v7)
    podman build --quiet --pull=never --format docker --arch "$arch" "${variant[@]}" -f Dockerfile.scratch \
        --build-context build="$ctx" -t "localhost/fwatchdog:$arch" . >/dev/null
    podman manifest add localhost/fwatchdog:latest "containers-storage:localhost/fwatchdog:$arch" >/dev/null
    size=$(podman image inspect --format '{{.Size}}' "localhost/fwatchdog:$arch")
    check "linux/$arch image ($size bytes) holds the $arch binary" "$arch" \
        "$(podman image inspect --format '{{.Architecture}}' "localhost/fwatchdog:$arch")"
done
echo "manifest: $(podman manifest inspect localhost/fwatchdog:latest | grep -c '"architecture"') platforms" >&2

# ---------------------------------------------------------------- run (amd64)
image=localhost/fwatchdog:amd64
port=18780
# What examples/kubernetes' security context asks for: a non-root user, a read-only root,
# no capabilities, no privilege escalation, and an emptyDir at /tmp.
restricted=(--user 10001:10001 --read-only --tmpfs /tmp:rw,mode=1777 --cap-drop ALL --security-opt no-new-privileges)
run() { # NAME PORT PODMAN-ARGS... -- ENV...
    local name=$1 p=$2; shift 2
    names+=("$name")
    podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
    # No health timer (it needs systemd): `podman healthcheck run` runs the check on demand.
    podman run -d --name "$name" --network host --health-interval disable -v "$busybox:/bin/busybox:ro" \
        -e port="$p" -e metrics_port=$((p + 1)) "$@" >/dev/null
}
healthy() { # PORT
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/_/health")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}
exit_code() { podman inspect --format '{{.State.ExitCode}}' "$1"; }

# A call, health, HEALTHCHECK and a stop that drains, under the restricted profile.
run fwt-restricted "$port" "${restricted[@]}" -e fprocess="/bin/busybox cat" -e healthcheck_interval=1 "$image"
healthy "$port" || { podman logs fwt-restricted >&2; }
check "restricted: a call" "hello" "$(curl -s --data-binary hello "http://127.0.0.1:$port/")"
check "restricted: /_/health" "200" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_/health")"
check "restricted: HEALTHCHECK" "0" "$(podman healthcheck run fwt-restricted >/dev/null 2>&1; echo $?)"
podman stop -t 20 fwt-restricted >/dev/null
check "restricted: podman stop drains and exits" "0" "$(exit_code fwt-restricted)"
podman logs fwt-restricted 2>&1 | grep -q "Removing lock-file" || { echo "FAIL: no drain in the log" >&2; failed=1; }

# Any user: the image's own /tmp is writable by everyone.
run fwt-nobody $((port + 10)) --user 65534:65534 -e fprocess="/bin/busybox cat" "$image"
healthy $((port + 10)) || podman logs fwt-nobody >&2
check "--user 65534: a call" "nobody" "$(curl -s --data-binary nobody "http://127.0.0.1:$((port + 10))/")"

# A read-only root and nothing writable (podman mounts a tmpfs at /tmp unless told not to): the
# lock file cannot be written, said clearly...
run fwt-readonly $((port + 20)) --read-only --read-only-tmpfs=false -e fprocess="/bin/busybox cat" "$image"
for _ in $(seq 1 50); do [ "$(podman inspect --format '{{.State.Running}}' fwt-readonly)" = false ] && break; sleep 0.1; done
check "read-only root: exits" "1" "$(exit_code fwt-readonly)"
podman logs fwt-readonly 2>&1 | grep -q "suppress_lock=true" || { echo "FAIL: the lock-file error does not name suppress_lock" >&2; failed=1; }
# ...and with suppress_lock=true it serves, and HEALTHCHECK follows /_/health.
run fwt-nolock $((port + 30)) --read-only --read-only-tmpfs=false -e fprocess="/bin/busybox cat" \
    -e suppress_lock=true "$image"
healthy $((port + 30)) || podman logs fwt-nolock >&2
check "suppress_lock, read-only: a call" "no lock" "$(curl -s --data-binary 'no lock' "http://127.0.0.1:$((port + 30))/")"
check "suppress_lock: HEALTHCHECK" "0" "$(podman healthcheck run fwt-nolock >/dev/null 2>&1; echo $?)"

# The OpenFaaS template pattern: a base image (made here from busybox) that copies the watchdog
# out of ours.
base="$work/base"
mkdir -p "$base/bin" "$base/usr/bin" "$base/home/app"
mkdir -m 1777 "$base/tmp"
cp "$busybox" "$base/bin/busybox"
ln -s busybox "$base/bin/sh"
tar -C "$base" -cf - . | podman import - localhost/fwatchdog-test-base:latest >/dev/null
cat > "$work/Dockerfile.template" <<EOF
FROM localhost/fwatchdog-test-base:latest
COPY --from=$image /fwatchdog /usr/bin/fwatchdog
ENV fprocess="/bin/busybox rev"
USER 10001:10001
CMD ["/usr/bin/fwatchdog"]
EOF
podman build --quiet --pull=never --format docker -f "$work/Dockerfile.template" -t localhost/fwatchdog-test-fn "$work" >/dev/null
names+=(fwt-template)
podman rm -f -t 0 fwt-template >/dev/null 2>&1 || true
podman run -d --name fwt-template --network host --health-interval disable -e port=$((port + 40)) \
    -e metrics_port=$((port + 41)) \
    localhost/fwatchdog-test-fn >/dev/null
healthy $((port + 40)) || podman logs fwt-template >&2
check "template pattern: the function answers" "olleh" "$(printf hello | curl -s --data-binary @- "http://127.0.0.1:$((port + 40))/" | tr -d '\n')"

podman image rm localhost/fwatchdog-test-fn localhost/fwatchdog-test-base >/dev/null 2>&1 || true
exit "$failed"
