//! The listener survives what kills tiny_http's accept thread (ENGINEERING.md traps 4 and 5):
//! the read_timeout set on the listening socket also times out accept(), and running out of
//! descriptors makes accept() fail. Neither may leave the watchdog deaf, or leak threads.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn serving_continues_across_many_accept_timeouts_without_leaking_threads() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "1")]);
    // Idle: the accept thread times out every second and is replaced.
    std::thread::sleep(Duration::from_millis(3500));
    wd.wait_until("a fresh connection is served", Duration::from_secs(5), |wd| {
        try_request(wd.port, "POST", "/", &[], b"after idle").is_some_and(|r| r.text() == "after idle")
    });
    // A keep-alive connection outlives several generations while it stays active.
    let s = wd.connect();
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        let body = format!("keep-alive {n}");
        w.write_all(
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
        )
        .expect("send");
        let resp = read_response(&mut r, false).expect("response on the old connection");
        assert_eq!(resp.text(), body);
        n += 1;
        std::thread::sleep(Duration::from_millis(400));
    }
    drop((w, r));
    // While idle a generation ends every second; each leaves tiny_http's four pool threads,
    // which exit 5 s later. So the count settles around five generations' worth and must then
    // stay there: a leak would add ~5 threads per second.
    std::thread::sleep(Duration::from_millis(7000));
    let settled = wd.threads();
    std::thread::sleep(Duration::from_millis(6000));
    let later = wd.threads();
    assert!(later <= settled + 6, "threads grew from {settled} to {later} in 6 idle seconds");
    assert!(later <= 40, "{later} threads after many generations");
    assert_eq!(wd.post("/", b"end").text(), "end");
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
