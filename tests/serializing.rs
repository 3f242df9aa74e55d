//! serializing mode.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::*;

#[test]
fn echo_with_content_length_and_duration() {
    let wd =
        Watchdog::start(&[("fprocess", "cat"), ("mode", "serializing"), ("content_type", "text/x-test")]);
    let body = b"serialize me ".repeat(100);
    let r = wd.post("/", &body);
    assert_eq!((r.status, &r.body), (200, &body));
    assert!(!r.chunked);
    assert_eq!(r.header("Content-Length"), Some(body.len().to_string().as_str()));
    assert_eq!(r.header("Content-Type"), Some("text/x-test"));
    let duration = r.header("X-Duration-Seconds").expect("X-Duration-Seconds");
    let (whole, frac) = duration.split_once('.').expect("decimal");
    assert!(whole.parse::<u64>().is_ok() && frac.len() == 6, "{duration}");
}

#[test]
fn large_input_and_output_survive_the_spools() {
    // 3 MiB in, 3 MiB out: both beyond the 1 MiB kept in memory.
    let wd = Watchdog::start(&[("fprocess", "cat"), ("mode", "serializing")]);
    let body: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 253) as u8).collect();
    let r = wd.post("/", &body);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "{} bytes back", r.body.len());
}

#[test]
fn nonzero_exit_is_500_with_the_reason_and_no_output() {
    let dir = TempDir::new("exit");
    let f = dir.script("f", "cat >/dev/null; echo partial-output; exit 3");
    let wd =
        Watchdog::start(&[("fprocess", &f), ("mode", "serializing"), ("content_type", "application/json")]);
    let r = wd.post("/", b"x");
    assert_eq!((r.status, r.text().as_str()), (500, "exit status 3"));
    assert!(r.header("X-Duration-Seconds").is_some());
    assert_eq!(r.header("Content-Type"), Some("application/json"), "errors carry content_type");
}

#[test]
fn a_function_ignoring_its_input_still_succeeds() {
    let dir = TempDir::new("ignore");
    let f = dir.script("f", "echo ignored");
    let wd = Watchdog::start(&[("fprocess", &f), ("mode", "serializing")]);
    for _ in 0..5 {
        let r = wd.post("/", &vec![b'z'; 2 << 20]);
        assert_eq!((r.status, r.text().as_str()), (200, "ignored\n"));
    }
}

#[test]
fn exec_timeout_is_500_without_partial_output() {
    let dir = TempDir::new("timeout");
    let f = dir.script("f", "echo partial; exec sleep 30");
    let wd = Watchdog::start(&[("fprocess", &f), ("mode", "serializing"), ("exec_timeout", "500ms")]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert!(!r.text().contains("partial"), "{}", r.text());
    assert!(r.text().contains("timeout of 500ms"), "{}", r.text());
    assert!(r.elapsed < Duration::from_secs(5));
    wait_for("no zombie children", Duration::from_secs(5), || zombie_children(wd.pid()).is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("mode", "serializing")]);
    let s = wd.connect();
    let mut w = s.try_clone().expect("clone");
    w.write_all(b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .expect("send");
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).expect("first").text(), "hello");
    assert_eq!(read_response(&mut r, false).expect("second").text(), "abc");
}
