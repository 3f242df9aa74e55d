//! The static binary in an empty root, as in a `FROM scratch` image: no libc, no /etc, no /proc,
//! no /dev; busybox (from Debian's busybox-static) is the function. It runs as PID 1 of its own
//! PID namespace in its own network namespace, as a container runtime would start it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STATIC_BIN: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/target/x86_64-unknown-linux-gnu/release/fwatchdog");

fn find_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// A 64-bit ELF without a PT_INTERP program header (no dynamic loader needed).
fn is_static(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else { return false };
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let u64_at =
        |o: usize| b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize);
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    b.starts_with(b"\x7fELF")
        && (0..phnum)
            .all(|i| b.get(phoff + i * phentsize..phoff + i * phentsize + 4) != Some(&[3, 0, 0, 0][..]))
}

fn can_isolate() -> bool {
    Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `args` inside the network namespace of `pid`.
fn in_netns(pid: u32, args: &[&str]) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .args(args)
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_static_binary_serves_from_an_empty_root_as_pid_1() {
    let static_bin = PathBuf::from(STATIC_BIN);
    if !static_bin.exists() {
        panic!("{STATIC_BIN} is missing: run scripts/build-static.sh first (scripts/test.sh does)");
    }
    assert!(is_static(&static_bin), "{STATIC_BIN} is not statically linked");
    let Some(busybox) = find_busybox() else {
        skip("busybox is not installed (Debian package busybox-static; .ci/run installs it)");
        return;
    };
    assert!(is_static(&busybox), "{} must be the static busybox (busybox-static)", busybox.display());
    if !can_isolate() {
        skip("unshare --net --pid needs root");
        return;
    }

    let dir = TempDir::new("scratch");
    let root = dir.path("root");
    for sub in ["bin", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::copy(&static_bin, root.join("fwatchdog")).expect("copy watchdog");
    std::fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");

    let setup = format!("ip link set lo up && exec chroot {} /fwatchdog", root.display());
    let mut child = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--", "sh", "-c", &setup])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("fprocess", "/bin/busybox cat")
        .env("TMPDIR", "/tmp")
        .env("healthcheck_interval", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the watchdog in its namespaces");
    let output = Output::default();
    output.pump_public(child.stdout.take().expect("stdout"), false);
    output.pump_public(child.stderr.take().expect("stderr"), true);

    // The watchdog is the (only) child of unshare, PID 1 inside.
    let mut pid = 0u32;
    wait_for("the watchdog process", Duration::from_secs(10), || {
        pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        pid != 0 && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("fwatchdog"))
    });
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        nspid.lines().any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "not PID 1: {nspid}"
    );

    let start = Instant::now();
    let health = loop {
        if let Some(body) = in_netns(pid, &["curl", "-s", "-m", "2", "http://127.0.0.1:8080/_/health"]) {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no health answer:\n{}", output.all());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health, "OK");
    assert!(root.join("tmp/.lock").exists(), "lock file inside the root");
    let echoed =
        in_netns(pid, &["curl", "-s", "-m", "5", "--data-binary", "from scratch", "http://127.0.0.1:8080/"]);
    assert_eq!(echoed.as_deref(), Some("from scratch"), "{}", output.all());
    let metrics =
        in_netns(pid, &["curl", "-s", "-m", "5", "http://127.0.0.1:8081/metrics"]).expect("metrics");
    assert!(metrics.contains("http_requests_total{code=\"200\",method=\"post\"} 1"), "{metrics}");

    unsafe { kill(pid as i32, SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM:\n{}", output.all());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", output.all());
    assert!(!root.join("tmp/.lock").exists(), "lock file removed on SIGTERM");
    assert!(output.all().contains("SIGTERM: no new connections in 1s"), "{}", output.all());
}
