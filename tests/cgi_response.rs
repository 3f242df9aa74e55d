//! `cgi_response=true`: a fork-mode function sets its status and headers with a CGI header
//! block at the start of its stdout (RFC 3875 §6).

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);
const MODES: [&str; 2] = ["streaming", "serializing"];

/// A function answering by its path.
fn function(dir: &TempDir) -> String {
    dir.script(
        "f",
        r#"case "$Http_Path" in
  /nf) printf 'Status: 404 Not Found\r\nContent-Type: text/html\r\nX-A: 1\r\nConnection: close, X-Private\r\nX-Private: p\r\nContent-Length: 99\r\nTransfer-Encoding: gzip\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Duration-Seconds: 99\r\n\r\n<p>nope</p>' ;;
  /loc) printf 'Location: /there?x=1\n\n' ;;
  /plain) echo "hello world" ;;
  /empty) ;;
  /headonly) printf 'Status: 204\nX-C: 3\n\n' ;;
  /bad) printf 'Status: 404\nnot a header line\n\nbody'; exec sleep 60 ;;
  /badstatus) printf 'Status: 1000 Big\n\n' ;;
  /unended) printf 'Status: 404\nX-A: 1\n' ;;
  /huge) i=0; while [ $i -lt 2000 ]; do printf 'X-Filler-%d: 0123456789012345678901234567890123456789\n' $i; i=$((i+1)); done; printf '\nbody' ;;
  /fail) printf 'Status: 404\n'; exit 3 ;;
  /echo) printf 'Status: 201 Created\nX-Got: body\n\n'; cat ;;
esac
"#,
    )
}

#[test]
fn a_function_sets_its_status_and_headers_in_both_fork_modes() {
    let dir = TempDir::new("cgi");
    let f = function(&dir);
    for mode in MODES {
        let mut wd = Watchdog::start(&[("mode", mode), ("fprocess", &f), ("cgi_response", "true")]);

        let r = wd.get("/nf");
        assert_eq!((r.status, r.text().as_str()), (404, "<p>nope</p>"), "{mode}: {r:?}");
        assert_eq!(r.header("Content-Type"), Some("text/html"), "{mode}: the function's type wins");
        assert_eq!(r.header("X-A"), Some("1"), "{mode}");
        let cookies: Vec<_> =
            r.headers.iter().filter(|(k, _)| k == "Set-Cookie").map(|(_, v)| v.as_str()).collect();
        assert_eq!(cookies, ["a=1", "b=2"], "{mode}: repeated headers kept in order");
        assert_eq!(r.header("X-Private"), None, "{mode}: named in Connection, so hop-by-hop");
        assert_ne!(r.header("Connection"), Some("close, X-Private"), "{mode}");
        assert_ne!(r.header("Content-Length"), Some("99"), "{mode}: framing is the watchdog's");
        assert_ne!(r.header("Transfer-Encoding"), Some("gzip"), "{mode}");
        if mode == "serializing" {
            let duration = r.header("X-Duration-Seconds").unwrap_or("");
            assert_ne!(duration, "99", "the watchdog's own header wins");
            assert_eq!(r.headers.iter().filter(|(k, _)| k == "X-Duration-Seconds").count(), 1);
        }

        let r = wd.get("/loc");
        assert_eq!((r.status, r.header("Location")), (302, Some("/there?x=1")), "{mode}: {r:?}");

        let r = wd.get("/plain");
        assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"), "{mode}: no block, all body");
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"), "{mode}");

        let r = wd.get("/empty");
        assert_eq!((r.status, r.body.len()), (200, 0), "{mode}");

        let r = wd.get("/headonly");
        assert_eq!((r.status, r.header("X-C")), (204, Some("3")), "{mode}: {r:?}");

        let big = vec![b'q'; 200_000];
        let r = wd.post("/echo", &big);
        assert_eq!((r.status, r.header("X-Got")), (201, Some("body")), "{mode}");
        assert!(r.body == big, "{mode}: the body after the block comes through whole");

        let r = wd.request("HEAD", "/nf", &[], b"");
        assert_eq!((r.status, r.body.len()), (404, 0), "{mode}: HEAD");

        // The function's status is in the log line and the metrics.
        wd.wait_log("GET /nf - 404 -", WAIT);
        wd.wait_log("GET /loc - 302 -", WAIT);
        wd.wait_log("POST /echo - 201 -", WAIT);
        assert_eq!(metric(&wd, r#"http_requests_total{code="404",method="get"}"#), Some(1.0), "{mode}");
        assert_eq!(metric(&wd, r#"http_requests_total{code="201",method="post"}"#), Some(1.0), "{mode}");
    }
}

#[test]
fn a_malformed_block_is_a_502_with_the_reason_logged_and_the_function_stopped() {
    let dir = TempDir::new("cgi-bad");
    let f = function(&dir);
    for mode in MODES {
        let mut wd = Watchdog::start(&[
            ("mode", mode),
            ("fprocess", &f),
            ("cgi_response", "true"),
            ("exec_timeout", "120s"),
            ("write_timeout", "120s"),
        ]);
        for (path, reason) in [
            ("/bad", "not a header line: not a header line"),
            ("/badstatus", "is not a status code from 200 to 599"),
            ("/unended", "the output ended inside the header block"),
            ("/huge", "header block longer than 64 KiB"),
        ] {
            // Without a body, and with one the function never reads (streaming: full duplex).
            for (method, body) in [("GET", &b""[..]), ("POST", &[b'x'; 300_000][..])] {
                let r = wd.request(method, path, &[], body);
                assert_eq!(r.status, 502, "{mode} {method} {path}: {r:?}");
                assert!(r.text().contains(reason), "{mode} {method} {path}: {}", r.text());
                assert!(!r.text().contains("body"), "{mode} {path}: nothing of the output is sent");
                wd.wait_log(&format!("{method} {path}: malformed CGI response from the function: "), WAIT);
                wd.wait_log(&format!("{method} {path} - 502 -"), WAIT);
            }
        }
        // /bad went on to sleep for a minute: it was stopped when its block was refused.
        wait_for("the sleeping function to be stopped", WAIT, || descendants(wd.pid()).is_empty());

        // A function that fails before its block is complete: the usual 500.
        let r = wd.get("/fail");
        assert_eq!(r.status, 500, "{mode}: {r:?}");
        assert!(r.text().contains("exit"), "{mode}: {}", r.text());
    }
}

#[test]
fn streaming_sends_the_status_when_the_block_is_complete_not_before() {
    let dir = TempDir::new("cgi-stream");
    // The block is completed only after the first line of the body arrives; then each line is
    // echoed as it comes.
    let f =
        dir.script("f", "printf 'Status: 201\\n'; read first; printf 'X-First: %s\\n\\n' \"$first\"; cat");
    let wd = Watchdog::start(&[("mode", "streaming"), ("fprocess", &f), ("cgi_response", "true")]);
    let mut s = wd.connect();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").expect("head");
    s.write_all(b"6\r\nready\n\r\n").expect("first chunk");
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    // The head arrives while the request body is still open: its X-First proves the status
    // line was not sent before the block was complete.
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).expect("head line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 201 Created\r\n"), "{head}");
    assert!(head.contains("X-First: ready\r\n"), "{head}");
    s.write_all(b"5\r\nmore\n\r\n0\r\n\r\n").expect("rest");
    let mut rest = Vec::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).expect("chunk");
        if line.trim().is_empty() || line == "0\r\n" {
            if line == "0\r\n" {
                break;
            }
            continue;
        }
        rest.push(line);
    }
    assert_eq!(rest, ["5\r\n", "more\n"], "the body after the block, as a chunk");
}

#[test]
fn http10_keep_alive_clients_get_the_status_with_a_length() {
    let dir = TempDir::new("cgi-10");
    let f = function(&dir);
    for mode in MODES {
        let wd = Watchdog::start(&[("mode", mode), ("fprocess", &f), ("cgi_response", "true")]);
        let mut s = wd.connect();
        for _ in 0..2 {
            s.write_all(b"GET /nf HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").expect("request");
            let r = read_response(&mut BufReader::new(&mut s), false).expect("response");
            assert_eq!((r.status, r.text().as_str()), (404, "<p>nope</p>"), "{mode}: {r:?}");
            assert_eq!(r.header("Content-Length"), Some("11"), "{mode}");
        }
    }
}

#[test]
fn without_the_option_a_header_block_is_plain_output_and_http_mode_warns() {
    let dir = TempDir::new("cgi-off");
    let f = dir.script("f", "printf 'Status: 404\\n\\nbody'");
    for mode in MODES {
        let wd = Watchdog::start(&[("mode", mode), ("fprocess", &f)]);
        let r = wd.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "Status: 404\n\nbody"), "{mode}");
    }
    let port = free_port();
    let mut wd = Watchdog::start(&[
        ("mode", "http"),
        ("fprocess", &format!("python3 -m http.server {port} --bind 127.0.0.1")),
        ("upstream_url", &format!("http://127.0.0.1:{port}")),
        ("cgi_response", "true"),
    ]);
    wd.wait_log("cgi_response applies to the streaming and serializing modes", WAIT);
}
