//! SIGTERM/SIGINT drain and PID 1 duties.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigterm_drains_in_order_and_exits_0() {
    let dir = TempDir::new("term");
    let f = dir.script("f", "sleep 2; echo done");
    let mut wd = Watchdog::start(&[("fprocess", &f), ("healthcheck_interval", "1"), ("write_timeout", "10")]);
    let port = wd.port;
    let inflight = std::thread::spawn(move || request(port, "POST", "/", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    wd.signal(SIGTERM);
    wd.wait_until("health 503", Duration::from_secs(2), |wd| wd.get("/_/health").status == 503);
    assert!(!wd.lock_path().exists(), "lock file removed at once");
    assert_eq!(wd.get("/_/ready").status, 503);
    // Still serving during healthcheck_interval.
    let late = std::thread::spawn(move || request(port, "POST", "/", &[], b""));
    // After the interval, while calls are still in flight, new connections are refused.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed()));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "accepting after the interval");
    assert_eq!(inflight.join().expect("in-flight").text(), "done\n");
    assert_eq!(late.join().expect("late").text(), "done\n");
    assert_eq!(wd.wait_exit(Duration::from_secs(10)), Some(0));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1900), "exited {took:?} after SIGTERM, before the drain");
    wd.wait_log("SIGTERM: no new connections in 1s", STARTUP);
    wd.wait_log("No new connections allowed, draining: 2 requests", STARTUP);
}

#[test]
fn sigint_is_handled_like_sigterm() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("healthcheck_interval", "0")]);
    wd.signal(SIGINT);
    assert_eq!(wd.wait_exit(Duration::from_secs(5)), Some(0));
    wd.wait_log("SIGINT: no new connections in 0s", STARTUP);
}

#[test]
fn zero_healthcheck_interval_exits_promptly() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("healthcheck_interval", "0")]);
    let t0 = Instant::now();
    wd.signal(SIGTERM);
    assert_eq!(wd.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn the_drain_waits_at_most_write_timeout_and_leaves_no_process_behind() {
    let dir = TempDir::new("drain");
    let pidfile = dir.path("fn.pid");
    let f = dir.script("f", &format!("echo $$ > {}; exec sleep 30", pidfile.display()));
    let mut wd = Watchdog::start(&[
        ("fprocess", &f),
        ("healthcheck_interval", "0"),
        ("write_timeout", "1"),
        ("exec_timeout", "0"),
    ]);
    let port = wd.port;
    let _call = std::thread::spawn(move || try_request(port, "POST", "/", &[], b""));
    let pid = read_pid(&pidfile);
    let t0 = Instant::now();
    wd.signal(SIGTERM);
    assert_eq!(wd.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(4), "drain took {:?}", t0.elapsed());
    wait_for("the function to be killed at exit", Duration::from_secs(5), || !pid_running(pid));
}

fn pid_namespaces_work() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The watchdog's pid as seen from here when it runs under `unshare --pid --fork`.
fn inner_pid(wd: &Watchdog) -> u32 {
    let path = format!("/proc/{}/task/{}/children", wd.pid(), wd.pid());
    let mut pid = 0;
    wait_for("the watchdog inside the PID namespace", Duration::from_secs(5), || {
        pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    pid
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    if !pid_namespaces_work() {
        skip("unshare --pid needs root or user namespaces");
        return;
    }
    let dir = TempDir::new("pid1");
    // The function double-forks: the grandchild is orphaned and re-parented to PID 1, the
    // watchdog, which must reap it when it exits.
    let f = dir.script("f", "( sh -c 'sleep 0.3' & ) ; echo spawned");
    let mut opts = Options::new(&[("fprocess", &f), ("healthcheck_interval", "0")]);
    opts.pid_namespace = true;
    let mut wd = Watchdog::start_with(opts);
    let pid = inner_pid(&wd);
    for _ in 0..5 {
        assert_eq!(wd.post("/", b"").text(), "spawned\n");
    }
    wait_for("orphans reaped by the watchdog", Duration::from_secs(10), || zombie_children(pid).is_empty());
    std::thread::sleep(Duration::from_millis(800));
    assert!(zombie_children(pid).is_empty(), "zombies left: {:?}", zombie_children(pid));
    unsafe { kill(pid as i32, SIGTERM) };
    assert_eq!(wd.wait_exit(Duration::from_secs(10)), Some(0), "{}", wd.output.all());
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let dir = TempDir::new("twice");
    let pidfile = dir.path("fn.pid");
    let f = dir.script("f", &format!("echo $$ > {}; exec sleep 30", pidfile.display()));
    let mut wd =
        Watchdog::start(&[("fprocess", &f), ("healthcheck_interval", "30"), ("write_timeout", "40")]);
    let port = wd.port;
    let _call = std::thread::spawn(move || try_request(port, "POST", "/", &[], b""));
    let pid = read_pid(&pidfile);
    wd.signal(SIGINT);
    wd.wait_log("SIGINT: no new connections in 30s", STARTUP);
    // Past the window in which a repeat counts as the same signal delivered twice.
    std::thread::sleep(Duration::from_millis(600));
    let t0 = Instant::now();
    wd.signal(SIGINT);
    assert_eq!(wd.wait_exit(Duration::from_secs(10)), Some(130), "{}", wd.output.all());
    assert!(t0.elapsed() < Duration::from_secs(5), "exit took {:?}", t0.elapsed());
    wd.wait_log("SIGINT again: exiting now, 1 calls cut short", STARTUP);
    wait_for("the function to be killed at exit", Duration::from_secs(5), || !pid_running(pid));
}

#[test]
fn a_signal_delivered_twice_at_once_still_drains() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("healthcheck_interval", "1")]);
    wd.signal(SIGTERM);
    wd.signal(SIGTERM);
    assert_eq!(wd.wait_exit(Duration::from_secs(10)), Some(0), "{}", wd.output.all());
}

#[test]
fn a_watchdog_killed_outright_takes_its_upstream_along() {
    let dir = TempDir::new("orphan-upstream");
    let port = free_port();
    let pidfile = dir.path("upstream.pid");
    let upstream = dir.script(
        "up",
        &format!("echo $$ > {}; exec python3 -m http.server {port} --bind 127.0.0.1", pidfile.display()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let env = [("mode", "http"), ("fprocess", upstream.as_str()), ("upstream_url", url.as_str())];
    let mut wd = Watchdog::start(&env);
    let pid = read_pid(&pidfile);
    wd.signal(9);
    wd.wait_exit(Duration::from_secs(10));
    wait_for("the upstream to die with its watchdog", Duration::from_secs(10), || !pid_running(pid));
    // Its port is free again: a new watchdog starts with the same upstream.
    let wd = Watchdog::start(&env);
    assert_eq!(wd.get("/").status, 200);
}

#[test]
fn a_watchdog_removes_only_the_lock_file_it_wrote() {
    let shared = TempDir::new("shared-tmp");
    let tmp = shared.0.to_string_lossy().into_owned();
    let env = [("fprocess", "cat"), ("TMPDIR", tmp.as_str()), ("healthcheck_interval", "0")];
    let mut first = Watchdog::start(&env);
    let second = Watchdog::start(&env);
    first.signal(SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));
    first.wait_log("another watchdog wrote it", STARTUP);
    assert!(shared.path(".lock").exists(), "the first watchdog removed the second's lock file");
    assert_eq!(second.get("/_/health").status, 200, "the survivor stays healthy");
    second.signal(SIGTERM);
    wait_for("the second watchdog to remove its lock file", Duration::from_secs(10), || {
        !shared.path(".lock").exists()
    });
}
