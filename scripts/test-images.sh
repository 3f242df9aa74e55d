#!/usr/bin/env bash
# The scratch image (Dockerfile.scratch), built with podman from the prebuilt static binaries
# for linux/amd64, and linux/arm64 and linux/arm/v7 when scripts/cross-build.sh has built them,
# as one multi-arch manifest, in two flavours: fwatchdog:latest, and fwatchdog:latest-jwt
# built with the `jwt` feature (jwt_auth); then the amd64 images run for real, as Kubernetes
# and OpenFaaS run them.
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
scripts/build-static.sh --jwt >/dev/null
for flavour in "" -jwt; do
    dir=target
    [ "$flavour" = -jwt ] && dir=target/jwt
    declare -A binary=(
        [amd64]=$dir/x86_64-unknown-linux-gnu/release/fwatchdog
        [arm64]=$dir/aarch64-unknown-linux-gnu/release/fwatchdog
        [arm]=$dir/armv7-unknown-linux-gnueabihf/release/fwatchdog
    )
    manifest=localhost/fwatchdog:latest$flavour
    podman manifest rm "$manifest" >/dev/null 2>&1 || true
    podman manifest create "$manifest" >/dev/null
    for arch in amd64 arm64 arm; do
        bin=${binary[$arch]}
        if [ ! -f "$bin" ]; then
            echo "note: no $bin (scripts/cross-build.sh makes it): no linux/$arch$flavour image" >&2
            continue
        fi
        ctx="$work/build-$arch$flavour"
        mkdir -p "$ctx/out/rootfs"
        cp "$bin" "$ctx/out/rootfs/fwatchdog"
        mkdir -m 1777 "$ctx/out/rootfs/tmp"
        variant=()
        [ "$arch" = arm ] && variant=(--variant v7)
        tag=localhost/fwatchdog:$arch$flavour
        podman build --quiet --pull=never --format docker --arch "$arch" "${variant[@]}" -f Dockerfile.scratch \
            --build-context build="$ctx" -t "$tag" . >/dev/null
        podman manifest add "$manifest" "containers-storage:$tag" >/dev/null
        size=$(podman image inspect --format '{{.Size}}' "$tag")
        check "linux/$arch$flavour image ($size bytes) holds the $arch binary" "$arch" \
            "$(podman image inspect --format '{{.Architecture}}' "$tag")"
    done
    echo "manifest $manifest: $(podman manifest inspect "$manifest" | grep -c '"architecture"') platforms" >&2
    unset binary
done

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

# jwt_auth: the default image refuses it and names the one that has it; the -jwt image, under
# the restricted profile, checks tokens of a test OIDC issuer (tests/interop/oidc_issuer.py,
# PyJWT) whose key set is at http://localhost:<port>/keys: the name is resolved inside the
# empty image by the static binary.
run fwt-nojwt $((port + 50)) -e fprocess="/bin/busybox cat" -e jwt_auth=true "$image"
for _ in $(seq 1 50); do [ "$(podman inspect --format '{{.State.Running}}' fwt-nojwt)" = false ] && break; sleep 0.1; done
check "jwt_auth in the default image: exits" "1" "$(exit_code fwt-nojwt)"
podman logs fwt-nojwt 2>&1 | grep -q -- "-jwt" || { echo "FAIL: the default image does not name the -jwt one" >&2; failed=1; }
python3 tests/interop/oidc_issuer.py --port $((port + 60)) >/dev/null 2>&1 &
issuer_pid=$!
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$((port + 60))/keys" && break; sleep 0.1; done
run fwt-jwt $((port + 70)) "${restricted[@]}" -e fprocess="/bin/busybox cat" -e jwt_auth=true \
    -e jwt_auth_discovery_url="http://127.0.0.1:$((port + 60))/.well-known/openid-configuration" \
    -e OPENFAAS_NAME=fn1 -e OPENFAAS_NAMESPACE=openfaas-fn localhost/fwatchdog:amd64-jwt
healthy $((port + 70)) || podman logs fwt-jwt >&2
iss="http://localhost:$((port + 60))"
token=$(curl -s -X POST "http://127.0.0.1:$((port + 60))/mint" \
    -d "{\"claims\": {\"iss\": \"$iss\", \"aud\": \"$iss\", \"function\": {\"permissions\": [\"openfaas-fn:*\"]}}, \"exp_in\": 300}")
check "jwt image: no token" "401" "$(curl -s -o /dev/null -w '%{http_code}' --data-binary x "http://127.0.0.1:$((port + 70))/")"
check "jwt image: a token" "signed" "$(curl -s -H "Authorization: Bearer $token" --data-binary signed "http://127.0.0.1:$((port + 70))/")"
kill "$issuer_pid" 2>/dev/null || true

podman image rm localhost/fwatchdog-test-fn localhost/fwatchdog-test-base >/dev/null 2>&1 || true
exit "$failed"
