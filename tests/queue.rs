//! `queue_timeout` and `queue_size`: with `max_inflight` set, a call that finds every place
//! taken waits for one, first come first served, instead of getting 429 at once.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `n` calls at once; returns their statuses.
fn burst(port: u16, n: usize) -> Vec<u16> {
    let calls: Vec<_> = (0..n)
        .map(|i| std::thread::spawn(move || request(port, "POST", &format!("/{i}"), &[], b"").status))
        .collect();
    calls.into_iter().map(|c| c.join().expect("call")).collect()
}

#[test]
fn a_burst_of_three_times_max_inflight_all_succeeds_with_the_queue_and_mostly_not_without() {
    let dir = TempDir::new("qburst");
    let f = dir.script("f", "sleep 0.3; echo done");
    let queued = Watchdog::start(&[("fprocess", &f), ("max_inflight", "2"), ("queue_timeout", "20s")]);
    let statuses = burst(queued.port, 6);
    assert!(statuses.iter().all(|s| *s == 200), "with the queue: {statuses:?}");
    let plain = Watchdog::start(&[("fprocess", &f), ("max_inflight", "2")]);
    let statuses = burst(plain.port, 6);
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 3, "without the queue most get 429: {statuses:?}");
}

#[test]
fn waiting_calls_are_served_in_arrival_order() {
    let dir = TempDir::new("qfifo");
    let order = dir.path("order");
    let f = dir.script("f", &format!("echo \"$Http_Path\" >> {}; sleep 0.5", order.display()));
    let wd = Watchdog::start(&[("fprocess", &f), ("max_inflight", "1"), ("queue_timeout", "30s")]);
    let port = wd.port;
    let mut calls = Vec::new();
    for i in 0..4 {
        calls.push(std::thread::spawn(move || request(port, "POST", &format!("/{i}"), &[], b"").status));
        // Each call is running, waiting or done before the next one arrives.
        wait_for("the call to be queued", Duration::from_secs(20), || {
            let running = metric(&wd, "http_requests_in_flight").unwrap_or(0.0);
            let waiting = metric(&wd, "fwatchdog_queue_length").unwrap_or(0.0);
            let done = metric(&wd, "http_requests_total{code=\"200\",method=\"post\"}").unwrap_or(0.0);
            (running + waiting + done) as usize > i
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses: Vec<u16> = calls.into_iter().map(|c| c.join().expect("call")).collect();
    assert_eq!(statuses, [200; 4]);
    let seen = std::fs::read_to_string(&order).expect("order file");
    assert_eq!(seen.lines().collect::<Vec<_>>(), ["/0", "/1", "/2", "/3"]);
    let waits = metric(&wd, "fwatchdog_queue_wait_seconds_count").expect("wait histogram");
    assert_eq!(waits, 4.0, "every admitted call is observed, also the ones that did not wait");
    assert_eq!(metric(&wd, "fwatchdog_queue_length"), Some(0.0));
}

#[test]
fn a_call_that_waits_longer_than_queue_timeout_gets_429() {
    let dir = TempDir::new("qtimeout");
    let f = dir.script("f", "sleep 4; echo done");
    let wd = Watchdog::start(&[("fprocess", &f), ("max_inflight", "1"), ("queue_timeout", "500ms")]);
    let port = wd.port;
    let first = std::thread::spawn(move || request(port, "POST", "/", &[], b"").status);
    wait_for("the first call to run", Duration::from_secs(10), || {
        metric(&wd, "http_requests_in_flight") == Some(1.0)
    });
    let start = Instant::now();
    let second = wd.post("/", b"");
    let waited = start.elapsed();
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(3500),
        "refused after {waited:?}, queue_timeout is 500ms"
    );
    assert_eq!(first.join().expect("first"), 200);
}

#[test]
fn ready_says_429_when_the_queue_is_full_not_when_the_places_are() {
    let dir = TempDir::new("qready");
    let f = dir.script("f", "sleep 3; echo done");
    let wd = Watchdog::start(&[
        ("fprocess", &f),
        ("max_inflight", "1"),
        ("queue_timeout", "20s"),
        ("queue_size", "1"),
    ]);
    let port = wd.port;
    let first = std::thread::spawn(move || request(port, "POST", "/", &[], b"").status);
    wait_for("the first call to run", Duration::from_secs(10), || {
        metric(&wd, "http_requests_in_flight") == Some(1.0)
    });
    assert_eq!(wd.get("/_/ready").status, 200, "the one place is taken, the queue is empty");
    let second = std::thread::spawn(move || request(port, "POST", "/", &[], b"").status);
    wait_for("the second call to wait", Duration::from_secs(10), || {
        metric(&wd, "fwatchdog_queue_length") == Some(1.0)
    });
    assert_eq!(wd.get("/_/ready").status, 429);
    assert_eq!(wd.get("/_/health").status, 200);
    assert_eq!(wd.post("/", b"").status, 429, "the queue is full: refused at once");
    assert_eq!((first.join().expect("first"), second.join().expect("second")), (200, 200));
}

#[test]
fn the_queue_is_announced_and_needs_max_inflight() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("max_inflight", "3"), ("queue_timeout", "2s")]);
    wd.wait_log("max_inflight: 3 calls at a time, 12 more wait up to 2s", Duration::from_secs(10));
    assert_eq!(metric(&wd, "fwatchdog_queue_length"), Some(0.0));
    let mut unset = Watchdog::start(&[("fprocess", "cat"), ("queue_timeout", "2s")]);
    unset.wait_log("queue_timeout is set but max_inflight is not", Duration::from_secs(10));
    assert_eq!(metric(&unset, "fwatchdog_queue_length"), None, "no queue, no queue metrics");
    let plain = Watchdog::start(&[("fprocess", "cat"), ("max_inflight", "3")]);
    assert_eq!(metric(&plain, "fwatchdog_queue_length"), None);
}
