#!/usr/bin/env python3
"""Checks that the deployment examples deploy.

- examples/kubernetes/*.yaml: valid against the Kubernetes API schemas (kubernetes-validate,
  strict: unknown fields are errors), every pod template meets the "restricted" Pod Security
  Standard, uses the numeric user of the image it runs, and grants the watchdog the grace
  period its drain needs.
- examples/openfaas/stack.yml: a stack faas-cli can build (lang: dockerfile, a handler
  directory with a Dockerfile, an image), with timeouts inside OpenFaaS's 30 s grace period.
- examples/*/Dockerfile: a numeric USER (runAsNonRoot cannot check a user name).

Exit status 1 with one line per problem; "SKIPPED" (or, with FWATCHDOG_REQUIRE_ALL set, a
failure) when PyYAML or kubernetes-validate is missing.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
EXAMPLES = os.path.join(ROOT, "examples")
# faas-netes (CE) leaves terminationGracePeriodSeconds unset: Kubernetes' default.
OPENFAAS_GRACE = 30
# After the drain, http mode gives the upstream this long to stop after SIGTERM.
UPSTREAM_STOP = 5
# The example each image name in the manifests is built from.
IMAGES = {"python-fn": "python-http", "shell-fn": "shell-function"}
# Volume types the restricted standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}

problems = []


def problem(where, what):
    problems.append(f"{os.path.relpath(where, ROOT)}: {what}")


def skip(why):
    print(f"SKIPPED: examples check: {why}", file=sys.stderr)
    sys.exit(1 if os.environ.get("FWATCHDOG_REQUIRE_ALL") else 0)


def seconds(text):
    """A watchdog duration (bare seconds or Go form such as 1m30s) in seconds."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def drain_budget(env):
    """Seconds the watchdog may take from SIGTERM to exit with this environment."""
    write = seconds(env.get("write_timeout", "30"))
    interval = seconds(env.get("healthcheck_interval", env.get("write_timeout", "30")))
    return interval + write + (UPSTREAM_STOP if env.get("mode") == "http" else 0)


def dockerfile_user(path):
    users = re.findall(r"^USER\s+(\S+)", open(path).read(), re.M)
    return users[-1] if users else None


def check_dockerfiles():
    uids = {}
    for name in sorted(os.listdir(EXAMPLES)):
        path = os.path.join(EXAMPLES, name, "Dockerfile")
        if not os.path.isfile(path):
            continue
        user = dockerfile_user(path)
        if user is None or not re.fullmatch(r"\d+(:\d+)?", user):
            problem(path, f"USER must be numeric (uid[:gid]) for runAsNonRoot, found {user!r}")
            continue
        uid = int(user.split(":")[0])
        if uid == 0:
            problem(path, "USER 0 is root")
        uids[name] = uid
    return uids


def restricted(where, pod):
    """The restricted Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problem(where, f"{key} is not allowed")
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problem(where, f"volume {vol.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problem(where, f"sysctl {sysctl.get('name')} is not allowed")
    if (psc.get("seLinuxOptions") or {}).get("user") or (psc.get("seLinuxOptions") or {}).get("role"):
        problem(where, "seLinuxOptions user/role are not allowed")
    containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
    containers += pod.get("ephemeralContainers") or []
    if not containers:
        problem(where, "no containers")
    for c in containers:
        name = f"container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problem(where, f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(where, f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problem(where, f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problem(where, f"{name}: only NET_BIND_SERVICE may be added")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            problem(where, f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problem(where, f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(where, f"{name}: seccompProfile must be RuntimeDefault or Localhost, found {seccomp!r}")
        if sc.get("procMount", "Default") != "Default":
            problem(where, f"{name}: procMount must be Default")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problem(where, f"{name}: hostPort {port['hostPort']}")


def check_kubernetes(yaml, uids):
    directory = os.path.join(EXAMPLES, "kubernetes")
    for name in sorted(os.listdir(directory)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(directory, name)
        run = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", path],
                             capture_output=True, text=True)
        if run.returncode != 0:
            problem(path, "kubernetes-validate: " + (run.stdout + run.stderr).strip().replace("\n", " | "))
        try:
            docs = list(yaml.safe_load_all(open(path)))
        except yaml.YAMLError as e:
            problem(path, f"not YAML: {e}".replace("\n", " "))
            continue
        for doc in docs:
            if not doc or doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                continue
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            pod = doc["spec"]["template"]["spec"]
            restricted(path, pod)
            grace = pod.get("terminationGracePeriodSeconds", 30)
            for c in pod.get("containers") or []:
                env = {e["name"]: e.get("value", "") for e in c.get("env") or []}
                budget = drain_budget(env)
                if grace < budget:
                    problem(path, f"{where}: terminationGracePeriodSeconds {grace} < drain budget {budget:g} s")
                image = c.get("image", "")
                uid = (c.get("securityContext") or {}).get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser"))
                example = IMAGES.get(image.rsplit("/", 1)[-1].split(":")[0])
                if example in uids and uid not in (None, uids[example]):
                    problem(path, f"{where}: runAsUser {uid} is not {example}'s USER {uids[example]}")
                if uid is None:
                    problem(path, f"{where}: set runAsUser to the image's numeric USER")


def check_stack(yaml):
    path = os.path.join(EXAMPLES, "openfaas", "stack.yml")
    try:
        stack = yaml.safe_load(open(path))
    except yaml.YAMLError as e:
        problem(path, f"not YAML: {e}".replace("\n", " "))
        return
    if str(stack.get("version")) not in ("1.0", "1"):
        problem(path, f"version {stack.get('version')!r}")
    provider = stack.get("provider") or {}
    if provider.get("name") != "openfaas":
        problem(path, "provider.name must be openfaas")
    functions = stack.get("functions") or {}
    if not functions:
        problem(path, "no functions")
    for name, fn in functions.items():
        if fn.get("lang") != "dockerfile":
            problem(path, f"{name}: lang must be dockerfile (found {fn.get('lang')!r})")
        handler = fn.get("handler")
        handler_dir = os.path.normpath(os.path.join(os.path.dirname(path), handler or ""))
        if not handler or not os.path.isfile(os.path.join(handler_dir, "Dockerfile")):
            problem(path, f"{name}: handler {handler!r} is not a directory with a Dockerfile")
        if not fn.get("image"):
            problem(path, f"{name}: no image")
        unknown = set(fn) - {"lang", "handler", "image", "environment", "labels", "annotations",
                             "build_args", "secrets", "limits", "requests", "constraints",
                             "environment_file", "readonly_root_filesystem", "namespace"}
        if unknown:
            problem(path, f"{name}: unknown keys {sorted(unknown)}")
        env = {k: str(v) for k, v in (fn.get("environment") or {}).items()}
        budget = drain_budget(env)
        if budget > OPENFAAS_GRACE:
            problem(path, f"{name}: drain budget {budget:g} s exceeds the {OPENFAAS_GRACE} s grace period")
        exec_timeout = seconds(env.get("exec_timeout", "30"))
        if exec_timeout > seconds(env.get("write_timeout", "30")):
            problem(path, f"{name}: exec_timeout longer than write_timeout")


def main():
    try:
        import yaml
    except ImportError:
        skip("PyYAML is not installed (pip install pyyaml)")
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    uids = check_dockerfiles()
    check_kubernetes(yaml, uids)
    check_stack(yaml)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("examples: Kubernetes schema (strict) and restricted Pod Security Standard, OpenFaaS stack, "
          "numeric image users, grace periods: OK")


if __name__ == "__main__":
    main()
