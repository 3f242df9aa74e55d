//! /_/health, /_/ready, the lock file and max_inflight.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn healthy_once_started_with_a_0660_lock_file() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let mode = std::fs::metadata(wd.lock_path()).expect("lock file").permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let r = wd.get("/_/health");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"OK"[..]));
    assert_eq!(wd.get("/_/ready").status, 200);
}

#[test]
fn health_and_ready_refuse_other_methods_without_running_the_function() {
    let dir = TempDir::new("h405");
    let marker = dir.path("ran");
    let f = dir.script("f", &format!("touch {}", marker.display()));
    let wd = Watchdog::start(&[("fprocess", &f)]);
    for path in ["/_/health", "/_/ready"] {
        for method in ["POST", "PUT", "DELETE", "HEAD"] {
            let r = wd.request(method, path, &[], b"body");
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("Allow"), Some("GET"));
        }
    }
    assert!(!marker.exists(), "the function must not run");
}

#[test]
fn health_follows_the_lock_file() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    std::fs::remove_file(wd.lock_path()).expect("remove lock");
    assert_eq!(wd.get("/_/health").status, 503);
    assert_eq!(wd.get("/_/ready").status, 503);
    assert_eq!(wd.post("/", b"served anyway").text(), "served anyway");
    std::fs::write(wd.lock_path(), b"").expect("recreate lock");
    assert_eq!(wd.get("/_/health").status, 200);
}

#[test]
fn suppress_lock_is_healthy_without_a_lock_file() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("suppress_lock", "true")]);
    assert_eq!(wd.get("/_/health").status, 200);
    assert!(!wd.lock_path().exists());
}

#[test]
fn health_answers_while_every_worker_is_busy() {
    let dir = TempDir::new("busy");
    let f = dir.script("slow", "sleep 3; echo done");
    let wd = Watchdog::start(&[("fprocess", &f), ("max_inflight", "2")]);
    let port = wd.port;
    let slow: Vec<_> =
        (0..2).map(|_| std::thread::spawn(move || request(port, "POST", "/", &[], b""))).collect();
    let mut wd = wd;
    wd.wait_until("both calls in flight (/_/ready 429)", Duration::from_secs(10), |wd| {
        wd.get("/_/ready").status == 429
    });
    let t = Instant::now();
    assert_eq!(wd.get("/_/health").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "health took {:?} while workers were busy", t.elapsed());
    for h in slow {
        assert_eq!(h.join().expect("call").text(), "done\n");
    }
}

#[test]
fn max_inflight_refuses_with_429_and_always_frees_the_place() {
    let dir = TempDir::new("429");
    let f = dir.script("f", "[ \"$Http_Path\" = /fail ] && exit 1; sleep 2; echo ok");
    let mut wd = Watchdog::start(&[("fprocess", &f), ("max_inflight", "1"), ("mode", "serializing")]);
    let port = wd.port;
    let first = std::thread::spawn(move || request(port, "POST", "/", &[], b""));
    wd.wait_until("the first call in flight", Duration::from_secs(10), |wd| wd.get("/_/ready").status == 429);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "Concurrent request limit exceeded. Max concurrent requests: 1\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("X-OpenFaaS-Internal"), Some("faas-middleware"));
    assert_eq!(first.join().expect("first").text(), "ok\n");
    // A failing call releases its place too.
    assert_eq!(wd.post("/fail", b"").status, 500);
    assert_eq!(wd.get("/_/ready").status, 200);
}

#[test]
fn ready_path_asks_the_function() {
    let dir = TempDir::new("ready");
    let f = dir.script(
        "f",
        "[ \"$Http_Path\" = /healthz ] || exit 1; echo \"ready via $Http_Method $Http_Path $Http_Query\"",
    );
    let wd = Watchdog::start(&[("fprocess", &f), ("ready_path", "/healthz?deep=1")]);
    let r = wd.get("/_/ready");
    assert_eq!((r.status, r.text().as_str()), (200, "ready via GET /healthz deep=1\n"));
    let dir2 = TempDir::new("ready-fail");
    let failing = dir2.script("f", "exit 3");
    let wd = Watchdog::start(&[("fprocess", &failing), ("ready_path", "/healthz")]);
    assert_eq!(wd.get("/_/ready").status, 500, "a failing readiness function is not ready");
}

#[test]
fn health_ready_and_429_answer_at_once_while_every_call_slot_and_queue_place_is_held() {
    let dir = TempDir::new("held");
    let f = dir.script("slow", "sleep 4; echo done");
    // Without max_inflight: 2 workers, then 2 queued calls, then 429.
    let mut wd = Watchdog::start(&[("fprocess", &f), ("max_workers", "2")]);
    let port = wd.port;
    let slow: Vec<_> =
        (0..4).map(|_| std::thread::spawn(move || request(port, "POST", "/", &[], b""))).collect();
    wd.wait_until("4 functions started", Duration::from_secs(10), |wd| {
        descendants(wd.pid()).len() >= 2 && wd.post("/", b"").status == 429
    });
    let t = Instant::now();
    let r = wd.post("/", b"");
    assert_eq!(r.status, 429, "a fifth call is refused");
    assert_eq!(r.text(), "Concurrent request limit exceeded. Max concurrent requests: 2\n", "one 429 text");
    assert!(t.elapsed() < Duration::from_secs(1), "the 429 took {:?}", t.elapsed());
    // Many health checks at once, each on its own connection: none waits for a call.
    let t = Instant::now();
    let checks: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || request(port, "GET", "/_/health", &[], b"").status))
        .collect();
    for c in checks {
        assert_eq!(c.join().expect("health"), 200);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "50 health checks took {:?}", t.elapsed());
    assert_eq!(wd.get("/_/ready").status, 200, "ready: no max_inflight, so not 429");
    for h in slow {
        assert_eq!(h.join().expect("call").text(), "done\n", "queued calls run when a worker frees");
    }
}
