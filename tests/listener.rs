//! The listener survives what kills tiny_http's accept thread: running
//! out of descriptors makes accept() fail, which may not leave the watchdog deaf. And since
//! read deadlines are kept per connection, not by the listening socket, an idle listener never
//! times out and restarts.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn an_idle_listener_neither_restarts_nor_grows_threads() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "1")]);
    assert_eq!(wd.post("/", b"warm").text(), "warm");
    std::thread::sleep(Duration::from_millis(6500));
    let settled = wd.threads();
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(wd.threads(), settled, "threads changed while idle");
    wd.wait_until("a fresh connection is served", Duration::from_secs(5), |wd| {
        try_request(wd.port, "POST", "/", &[], b"after idle").is_some_and(|r| r.text() == "after idle")
    });
    assert!(!wd.output.stderr().contains("restarting the listener"), "{}", wd.output.stderr());
}

#[test]
fn running_out_of_descriptors_does_not_leave_the_watchdog_deaf() {
    let mut opts = Options::new(&[("fprocess", "cat"), ("read_timeout", "30")]);
    opts.nofile = Some(64);
    let mut wd = Watchdog::start_with(opts);
    // Every connection costs tiny_http two descriptors: 60 connections exhaust 64.
    let mut conns: Vec<TcpStream> = Vec::new();
    for _ in 0..60 {
        match TcpStream::connect(("127.0.0.1", wd.port)) {
            Ok(s) => conns.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(conns);
    wd.wait_until("a request is served again", Duration::from_secs(20), |wd| {
        try_request(wd.port, "POST", "/", &[], b"back").is_some_and(|r| r.text() == "back")
    });
    assert_eq!(wd.get("/_/health").status, 200);
    // The descriptors really ran out, and the listener was restarted because of it.
    let log = wd.output.stderr();
    assert!(
        log.contains("restarting the listener") || log.contains("tiny_http accept thread panicked"),
        "the accept thread never failed, so this test proved nothing:\n{log}"
    );
}
