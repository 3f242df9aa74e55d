//! The listener survives what kills tiny_http's accept thread: running
//! out of descriptors makes accept() fail, which may not leave the watchdog deaf. And since
//! read deadlines are kept per connection, not by the listening socket, an idle listener never
//! times out and restarts.

mod common;

use std::io::Write;
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
    // The connections of the restarted listener are guarded as the first ones were: tiny_http
    // reads them on threads started from ours, which must not pass for ours.
    let seen = wd.output.stderr().len();
    let (text, closed) = send_oversized_head(wd.port);
    assert!(text.starts_with("HTTP/1.1 431") && closed, "after the restart: {text:?}");
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nab")
        .expect("send");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413") && closed, "after the restart: {text:?}");
    // A header line sent as fast as loopback allows is cut at the head limit, not buffered.
    let before_peak = wd.rss_kb("VmHWM:");
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).expect("connect");
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ");
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0u64;
    while sent < 1 << 30 && s.write_all(&chunk).is_ok() {
        sent += chunk.len() as u64;
    }
    assert!(sent < 1 << 30, "the endless header line was never cut");
    let peak = wd.rss_kb("VmHWM:");
    // Measured: 0.6 MiB more; 22 MiB when the limit was an allocator alarm that took the
    // restarted listener's threads for ours.
    assert!(peak < before_peak + 8 * 1024, "peak RSS {peak} KiB (before: {before_peak} KiB)");
    let after = wd.output.stderr()[seen..].to_string();
    assert!(!after.contains("panic"), "{after}");
    // The descriptors really ran out, and the listener was restarted because of it.
    let log = wd.output.stderr();
    assert!(
        log.contains("restarting the listener") || log.contains("tiny_http accept thread panicked"),
        "the accept thread never failed, so this test proved nothing:\n{log}"
    );
}
