//! streaming mode: bodies through real processes over real sockets.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn body_passes_through_cat_byte_for_byte() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    for size in [0, 1, 1024, 1025, 200_000] {
        let body = pattern(size);
        let r = wd.post("/", &body);
        assert_eq!(r.status, 200, "size {size}");
        assert!(r.body == body, "size {size}: got {} bytes", r.body.len());
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    }
}

#[test]
fn output_before_input_is_spooled_not_truncated() {
    // 256 KiB of output before reading 4 MiB of input: more than the in-memory spool, so part of
    // it goes through the temporary file.
    let dir = TempDir::new("spool");
    let f = dir.script("f", "head -c 262144 /dev/zero | tr '\\0' h; cat");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let body = pattern(4 << 20);
    let r = wd.post("/", &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 262_144 + body.len());
    assert!(r.body[..262_144].iter().all(|&b| b == b'h'));
    assert!(r.body[262_144..] == body[..], "the body after the preamble differs");
    assert!(
        std::fs::read_dir(&wd.tmpdir.0).expect("tmpdir").flatten().all(|e| e.file_name() == ".lock"),
        "the spool file must not be left behind"
    );
}

#[test]
fn chunked_request_bodies_arrive_whole_and_are_announced() {
    let dir = TempDir::new("chunked");
    let f = dir.script("f", "echo \"te=$Http_Transfer_Encoding\"; cat");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let mut s = wd.connect();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n").expect("send");
    let r = read_response(&mut BufReader::new(s), false).expect("response");
    assert_eq!(r.text(), "te=chunked\nhello world");
}

#[test]
fn output_streams_as_it_is_produced() {
    let dir = TempDir::new("live");
    let f = dir.script("f", "echo first; sleep 1.5; echo second");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let mut s = wd.connect();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").expect("send");
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let first = start.elapsed();
    while !String::from_utf8_lossy(&got).contains("second") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let second = start.elapsed();
    assert!(
        second - first >= Duration::from_millis(1000),
        "first at {first:?}, second at {second:?}: not streamed"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Transfer-Encoding: chunked"), "{text}");
}

#[test]
fn cgi_environment_is_set_and_cannot_be_spoofed() {
    let wd = Watchdog::start(&[("fprocess", "env"), ("MY_SETTING", "a=b")]);
    let r = wd.request(
        "POST",
        "/some/pa%20th?a=1&b=%20x",
        &[
            ("X-Custom-Header", "v1"),
            ("x-lower", "v2"),
            ("Method", "SPOOF"),
            ("Path", "/spoof"),
            ("Query", "spoof=1"),
            ("Proxy", "http://evil:3128"),
        ],
        b"hi",
    );
    let env = env_map(&r.text());
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("Http_Method"), Some("POST"));
    assert_eq!(get("Http_Path"), Some("/some/pa th"));
    assert_eq!(get("Http_Query"), Some("a=1&b=%20x"));
    assert_eq!(get("Http_X_Custom_Header"), Some("v1"));
    assert_eq!(get("Http_X_Lower"), Some("v2"));
    assert_eq!(get("Http_Content_Length"), Some("2"));
    assert_eq!(get("Http_Host"), Some(format!("127.0.0.1:{}", wd.port).as_str()));
    assert_eq!(get("Http_Proxy"), None, "httpoxy: the Proxy header is dropped");
    assert_eq!(get("MY_SETTING"), Some("a=b"), "the watchdog's environment is inherited");
    let env = env_map(&wd.request("GET", "/plain", &[("Query", "spoof=1")], b"").text());
    assert_eq!(env.get("Http_Query"), None, "no query string: no Http_Query, whatever the headers say");
    assert_eq!(env.get("Http_X_Custom_Header"), None, "headers of an earlier call must not leak");
}

#[test]
fn stderr_goes_to_the_log_never_into_the_response() {
    let dir = TempDir::new("stderr");
    let f = dir.script("f", "echo diag-line >&2; printf 'no newline at the end' >&2; echo result");
    let mut wd = Watchdog::start(&[("fprocess", &f)]);
    assert_eq!(wd.post("/", b"").text(), "result\n");
    let line = wd.wait_log("stderr: diag-line", STARTUP);
    assert!(line.len() > 20 && line.as_bytes()[4] == b'/' && line.as_bytes()[10] == b' ', "{line}");
    wd.wait_log("stderr: no newline at the end", STARTUP);
}

#[test]
fn failure_before_output_is_500_after_output_200() {
    let dir = TempDir::new("fail");
    let f = dir.script("f", "[ \"$Http_Path\" = /late ] && echo partial; exit 3");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let r = wd.post("/early", b"");
    assert_eq!((r.status, r.text().trim()), (500, "exit status 3"));
    let r = wd.post("/late", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "partial\n"));
}

#[test]
fn a_function_that_cannot_start_is_500() {
    let wd = Watchdog::start(&[("fprocess", "/no/such/function --flag")]);
    let r = wd.post("/", b"x");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("/no/such/function"), "{}", r.text());
}

#[test]
fn exec_timeout_kills_the_whole_process_group() {
    let dir = TempDir::new("timeout");
    let child_pid = dir.path("grandchild.pid");
    let f = dir.script("f", &format!("echo partial; sleep 30 & echo $! > {}; wait", child_pid.display()));
    let wd = Watchdog::start(&[("fprocess", &f), ("exec_timeout", "1")]);
    let t = std::time::Instant::now();
    let r = streamed_request(wd.port, "POST", "/", &[], b"");
    assert_eq!(
        (r.status, r.body.as_slice(), r.complete),
        (200, &b"partial\n"[..], true),
        "the output so far, ended at exec_timeout"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let pid = read_pid(&child_pid);
    wait_for("the grandchild to be killed", Duration::from_secs(5), || !pid_running(pid));
    wait_for("no zombie children", Duration::from_secs(5), || zombie_children(wd.pid()).is_empty());
}

#[test]
fn x_timeout_shortens_exec_timeout_but_never_extends_it() {
    let dir = TempDir::new("xt");
    let f = dir.script("f", "sleep 4; echo late");
    let wd = Watchdog::start(&[("fprocess", &f), ("exec_timeout", "2")]);
    let r = wd.request("POST", "/", &[("X-Timeout", "500ms")], b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.elapsed < Duration::from_millis(1900), "X-Timeout 500ms took {:?}", r.elapsed);
    let r = wd.request("POST", "/", &[("X-Timeout", "60s")], b"");
    assert_eq!(r.status, 500);
    assert!(
        r.elapsed >= Duration::from_millis(1800) && r.elapsed < Duration::from_secs(4),
        "capped at exec_timeout: {:?}",
        r.elapsed
    );
}

#[test]
fn http10_clients_get_a_close_delimited_body() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let mut s = wd.connect();
    s.write_all(b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello").expect("send");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&raw);
    assert!(closed, "the connection ends the body");
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert!(!text.contains("chunked"), "{text}");
}

#[test]
fn http10_keep_alive_gets_a_content_length() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let s = wd.connect();
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    for i in 0..3 {
        let body = format!("round {i}");
        w.write_all(
            format!(
                "POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("send");
        let resp = read_response(&mut r, false).expect("response");
        assert_eq!(resp.header("Content-Length"), Some(body.len().to_string().as_str()));
        assert_eq!(resp.text(), body);
    }
}

#[test]
fn head_requests_get_no_body() {
    let wd = Watchdog::start(&[("fprocess", "echo some output")]);
    let r = wd.request("HEAD", "/", &[], b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn concurrent_calls_run_in_parallel_in_separate_processes() {
    let dir = TempDir::new("parallel");
    let f = dir.script("f", "echo $$; sleep 1");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let port = wd.port;
    let start = Instant::now();
    let calls: Vec<_> =
        (0..4).map(|_| std::thread::spawn(move || request(port, "POST", "/", &[], b""))).collect();
    let pids: std::collections::HashSet<String> =
        calls.into_iter().map(|h| h.join().expect("call").text()).collect();
    assert_eq!(pids.len(), 4);
    assert!(start.elapsed() < Duration::from_millis(3500), "4 one-second calls took {:?}", start.elapsed());
}

#[test]
fn functions_start_with_no_blocked_or_caught_signals() {
    // cat installs no handlers of its own, so what it shows is what it inherited.
    let wd = Watchdog::start(&[("fprocess", "cat /proc/self/status")]);
    let text = wd.post("/", b"").text();
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigCgt:\t0000000000000000"), "{text}");
}

#[test]
fn a_stream_ended_by_exec_timeout_is_the_output_so_far_and_is_logged() {
    let dir = TempDir::new("ended");
    let f = dir.script("f", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.2; done");
    // exec_timeout ends it after about five lines: what was written is the answer, ended
    // normally (the contract's "output written so far is returned with 200"); the log tells.
    let mut wd = Watchdog::start(&[("fprocess", &f), ("exec_timeout", "1")]);
    let r = streamed_request(wd.port, "POST", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.complete, "a stream ended by exec_timeout lacks its last chunk");
    assert!(r.body.starts_with(b"line 1\n"), "{:?}", String::from_utf8_lossy(&r.body));
    assert!(!r.body.ends_with(b"line 10\n"), "{:?}", String::from_utf8_lossy(&r.body));
    wd.wait_log("response ended after", STARTUP);
    // A function that ends the stream itself, even with an error, ends it properly.
    let g = dir.script("g", "echo one; echo two; exit 3");
    let wd = Watchdog::start(&[("fprocess", &g)]);
    let r = streamed_request(wd.port, "POST", "/", &[], b"");
    assert_eq!((r.status, r.body.as_slice(), r.complete), (200, &b"one\ntwo\n"[..], true));
}
