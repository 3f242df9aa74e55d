//! Functions on the frameworks users deploy, under the watchdog: Flask + waitress (python3-http,
//! python3-flask templates), Express (node templates) and Go net/http (golang-middleware) in
//! http mode, and a Python function reading stdin with CGI variables in the fork modes. Each
//! check asserts what the framework received and what the client got.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Framework {
    Flask,
    Express,
    Go,
}

/// The command that starts the framework's function on `port`, or `None` (skipped) when the
/// framework is not installed.
fn upstream(fw: Framework, port: u16) -> Option<String> {
    match fw {
        Framework::Flask => (have_python_module("flask") && have_python_module("waitress"))
            .then(|| format!("python3 {} {port}", interop("flask_app.py"))),
        Framework::Express => {
            have_node_module("express").then(|| format!("node {} {port}", interop("express_app.js")))
        }
        Framework::Go => go_app().map(|bin| format!("{} {port}", bin.display())),
    }
}

/// The Go function, built once per test run (standard library only: no network needed).
fn go_app() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-go-app");
        let run = std::process::Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(interop("go_app"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .output();
        match run {
            Ok(o) if o.status.success() => Ok(out),
            Ok(o) => Err(format!("go build failed: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => Err(format!("no Go toolchain ({e}); apt install golang-go, as .ci/run does")),
        }
    });
    match built {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            skip(why);
            None
        }
    }
}

fn start(fw: Framework) -> Option<Watchdog> {
    let port = free_port();
    let cmd = upstream(fw, port)?;
    let url = format!("http://127.0.0.1:{port}");
    Some(Watchdog::start(&[("mode", "http"), ("fprocess", &cmd), ("upstream_url", &url)]))
}

/// CRC-32 (IEEE), as zlib, Python's zlib.crc32 and Go's crc32.ChecksumIEEE compute it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn field(r: &Response, key: &str) -> String {
    json_field(&r.text(), key).unwrap_or_else(|| panic!("no {key} in {}", r.text()))
}

/// Sends raw bytes on a fresh connection and reads one response.
fn raw(wd: &Watchdog, bytes: &[u8]) -> Response {
    let mut s = wd.connect();
    s.write_all(bytes).expect("send");
    read_response(&mut BufReader::new(s), false).expect("response")
}

fn bodiless_requests_arrive_with_content_length_0(fw: Framework, wd: &Watchdog) {
    for (method, framing) in [("POST", ""), ("PUT", ""), ("POST", "Content-Length: 0\r\n")] {
        let head = format!("{method} /echo HTTP/1.1\r\nHost: x\r\n{framing}Connection: close\r\n\r\n");
        let r = raw(wd, head.as_bytes());
        assert_eq!(r.status, 200, "{fw:?} {method} {framing:?}: {}", r.text());
        let seen = (field(&r, "content_length"), field(&r, "transfer_encoding"), field(&r, "body_len"));
        assert_eq!(
            seen,
            ("0".into(), "null".into(), "0".into()),
            "{fw:?} {method} {framing:?}: {}",
            r.text()
        );
        assert_eq!(field(&r, "framework_length"), "0", "{fw:?}: the framework's own length");
    }
}

fn uploads_arrive_whole(fw: Framework, wd: &Watchdog) {
    // Content-Length.
    let body = body_of(1_000_000, 7);
    let r = wd.request("PUT", "/echo?kind=cl", &[("X-Custom", "v1")], &body);
    assert_eq!(field(&r, "content_length"), "1000000", "{fw:?}");
    assert_eq!(
        (field(&r, "body_len"), field(&r, "body_crc")),
        ("1000000".into(), crc32(&body).to_string()),
        "{fw:?}"
    );
    assert_eq!((field(&r, "custom"), field(&r, "query")), ("v1".into(), "kind=cl".into()), "{fw:?}");
    // Chunked, in uneven pieces.
    let body = body_of(300_000, 3);
    let mut s = wd.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .expect("head");
    for piece in body.chunks(7001) {
        write!(s, "{:x}\r\n", piece.len()).expect("size");
        s.write_all(piece).expect("chunk");
        s.write_all(b"\r\n").expect("crlf");
    }
    s.write_all(b"0\r\n\r\n").expect("last chunk");
    let r = read_response(&mut BufReader::new(s), false).expect("response");
    assert_eq!(
        (field(&r, "body_len"), field(&r, "body_crc")),
        ("300000".into(), crc32(&body).to_string()),
        "{fw:?} chunked upload: {}",
        r.text()
    );
}

fn expect_100_continue_is_answered_before_the_body(fw: Framework, wd: &Watchdog) {
    let body = body_of(50_000, 9);
    let mut s = wd.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 50000\r\nConnection: close\r\n\r\n")
        .expect("head");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("interim response");
    assert!(line.starts_with("HTTP/1.1 100"), "{fw:?}: expected 100 Continue, got {line:?}");
    // tiny_http writes the interim response, with its own `Server` header (README).
    loop {
        let mut header = String::new();
        r.read_line(&mut header).expect("interim head");
        if header == "\r\n" {
            break;
        }
    }
    s.write_all(&body).expect("body");
    let resp = read_response(&mut r, false).expect("final response");
    assert_eq!(resp.status, 200, "{fw:?}");
    assert_eq!(
        (field(&resp, "body_len"), field(&resp, "body_crc")),
        ("50000".into(), crc32(&body).to_string()),
        "{fw:?}"
    );
}

fn several_set_cookie_headers_stay_separate(fw: Framework, wd: &Watchdog) {
    let r = wd.get("/cookies");
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        ["a=a-value; Path=/", "b=b-value; Path=/", "c=c-value; Path=/"],
        "{fw:?}: {:?}",
        r.headers
    );
    assert!(r.headers.iter().any(|(k, _)| k == "Set-Cookie"), "canonical name: {:?}", r.headers);
}

fn streamed_responses_arrive_as_they_are_written(fw: Framework, wd: &Watchdog) {
    let mut s = wd.connect();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut r = BufReader::new(s);
    let mut seen = Vec::new();
    let mut first_part = None;
    let mut line = String::new();
    while r.read_line(&mut line).expect("read") > 0 {
        if line.starts_with("part-") && first_part.is_none() {
            first_part = Some(Instant::now());
        }
        if line.starts_with("part-") {
            seen.push(line.trim().to_string());
        }
        line.clear();
    }
    let end = Instant::now();
    assert_eq!(seen, ["part-0", "part-1", "part-2", "part-3", "part-4"], "{fw:?}");
    // The function sleeps 0.3 s after each part: relayed as written, the first part comes
    // about 1.5 s before the end; buffered, together with it.
    let lead = end - first_part.expect("a first part");
    assert!(lead >= Duration::from_millis(700), "{fw:?}: first part only {lead:?} before the end");
}

fn head_requests_get_no_body_and_the_connection_goes_on(fw: Framework, wd: &Watchdog) {
    let mut s = wd.connect();
    s.write_all(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?after=head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut r = BufReader::new(s);
    let head = read_response(&mut r, true).expect("HEAD response");
    assert_eq!(head.status, 200, "{fw:?}");
    assert!(head.header("Content-Type").is_some_and(|t| t.starts_with("application/json")), "{fw:?}");
    let next = read_response(&mut r, false).expect("response after HEAD");
    assert_eq!(field(&next, "query"), "after=head", "{fw:?}");
}

fn a_5_mb_response_arrives_intact(fw: Framework, wd: &Watchdog) {
    let r = wd.get("/big?size=5000000");
    assert_eq!(r.status, 200, "{fw:?}");
    assert_eq!(r.body.len(), 5_000_000, "{fw:?}");
    assert!(r.body.iter().enumerate().all(|(i, &b)| b == i as u8), "{fw:?}: corrupted body");
}

fn a_hundred_concurrent_calls_each_get_their_own_answer(fw: Framework, wd: &Watchdog) {
    let port = wd.port;
    let calls: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let body = body_of(100 * i + 1, i as u8);
                let r = request(port, "POST", &format!("/echo?call={i}"), &[], &body);
                (i, body, r)
            })
        })
        .collect();
    for call in calls {
        let (i, body, r) = call.join().expect("call thread");
        assert_eq!(r.status, 200, "{fw:?} call {i}");
        assert_eq!(field(&r, "query"), format!("call={i}"), "{fw:?}");
        assert_eq!(
            (field(&r, "body_len"), field(&r, "body_crc")),
            (body.len().to_string(), crc32(&body).to_string()),
            "{fw:?} call {i}"
        );
    }
}

fn exercise(fw: Framework) {
    let Some(wd) = start(fw) else { return };
    assert_eq!(field(&wd.get("/echo"), "framework"), format!("{fw:?}").to_lowercase());
    bodiless_requests_arrive_with_content_length_0(fw, &wd);
    uploads_arrive_whole(fw, &wd);
    expect_100_continue_is_answered_before_the_body(fw, &wd);
    several_set_cookie_headers_stay_separate(fw, &wd);
    streamed_responses_arrive_as_they_are_written(fw, &wd);
    head_requests_get_no_body_and_the_connection_goes_on(fw, &wd);
    a_5_mb_response_arrives_intact(fw, &wd);
    a_hundred_concurrent_calls_each_get_their_own_answer(fw, &wd);
}

#[test]
fn flask_on_waitress() {
    exercise(Framework::Flask);
}

#[test]
fn express() {
    exercise(Framework::Express);
}

#[test]
fn go_net_http() {
    exercise(Framework::Go);
}

/// The classic python3 template's shape: a handler reading stdin, with CGI variables.
#[test]
fn python_stdin_function_with_cgi_variables_in_both_fork_modes() {
    let dir = TempDir::new("cgi-py");
    let f = dir.path("handler.py");
    std::fs::write(
        &f,
        r#"import json, os, sys, zlib
body = sys.stdin.buffer.read()
env = os.environ
print(json.dumps({"method": env.get("Http_Method"), "path": env.get("Http_Path"),
                  "query": env.get("Http_Query"), "custom": env.get("Http_X_Custom"),
                  "content_type": env.get("Http_Content_Type"),
                  "chunked": env.get("Http_Transfer_Encoding"),
                  "body_len": len(body), "body_crc": zlib.crc32(body)}))
"#,
    )
    .expect("handler");
    let fprocess = format!("python3 {}", f.display());
    for mode in ["streaming", "serializing"] {
        let wd =
            Watchdog::start(&[("mode", mode), ("fprocess", &fprocess), ("content_type", "application/json")]);
        let body = body_of(200_000, 5);
        let r = wd.request(
            "POST",
            "/fn/path?x=1&y=two",
            &[("X-Custom", "from client"), ("Content-Type", "text/csv")],
            &body,
        );
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"), "{mode}");
        let fields = ["method", "path", "query", "custom", "content_type", "body_len", "body_crc"];
        let got: Vec<String> = fields.iter().map(|k| field(&r, k)).collect();
        assert_eq!(
            got,
            ["POST", "/fn/path", "x=1&y=two", "from client", "text/csv", "200000", &crc32(&body).to_string()],
            "{mode}"
        );
        // A chunked upload reaches stdin whole and is announced as chunked.
        let mut s = wd.connect();
        s.write_all(b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            .expect("send");
        let mut text = String::new();
        let r = read_response(&mut BufReader::new(s), false).expect("response");
        r.body.as_slice().read_to_string(&mut text).expect("utf-8");
        assert_eq!(
            (field(&r, "method"), field(&r, "chunked"), field(&r, "body_len")),
            ("PUT".into(), "chunked".into(), "11".into()),
            "{mode}: {text}"
        );
    }
}

#[test]
fn the_python_http_example_reads_content_length_and_chunked_bodies() {
    let port = free_port();
    let app = format!("{}/examples/python-http/app.py", env!("CARGO_MANIFEST_DIR"));
    let url = format!("http://127.0.0.1:{port}");
    let cmd = format!("python3 {app}");
    // The example's own settings (its Dockerfile), on a port of the test's choosing: the app
    // reads it from upstream_url.
    let wd = Watchdog::start(&[
        ("mode", "http"),
        ("fprocess", &cmd),
        ("upstream_url", &url),
        ("ready_path", "/ready"),
    ]);
    assert_eq!(wd.get("/_/ready").status, 200);
    let r = wd.post("/hello", br#"{"name":"you"}"#);
    assert_eq!(r.text(), r#"{"hello": "you", "bytes": 14}"#);
    let r = raw(
        &wd,
        b"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{\"nam\r\n9\r\ne\":\"chu\"}\r\n0\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"hello": "chu", "bytes": 14}"#));
    // The next call is a call, not the rest of the last body read as a request.
    assert_eq!(wd.get("/x").text(), r#"{"hello": "world", "path": "/x"}"#);
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

/// `marshal_request=true` gives the function the classic watchdog's JSON envelope byte for byte:
/// the same requests go to a Go net/http server that marshals them as the classic watchdog does
/// (`types.MarshalRequest`) and through fwatchdog to `cat`.
#[test]
fn marshal_request_envelope_is_byte_for_byte_the_classic_watchdogs() {
    let Some(go) = go_app() else { return };
    let go_port = free_port();
    let mut reference = std::process::Command::new(&go)
        .arg(go_port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the Go server");
    wait_for("the Go server to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", go_port)).is_ok()
    });
    let wd = Watchdog::start(&[("mode", "serializing"), ("fprocess", "cat"), ("marshal_request", "true")]);
    let requests: [&[u8]; 4] = [
        b"POST /classic-envelope HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nX-Test: a\r\nx-test: b\r\nX-Html: <a&b> \"q\" \\ z\r\nuser-agent: t\tab\r\nContent-Length: 6\r\nConnection: close\r\n\r\n\x00\xff\x10ab\n",
        b"POST /classic-envelope?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        b"GET /classic-envelope HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        b"PUT /classic-envelope HTTP/1.1\r\nHost: x\r\nx_underscore: 1\r\nX-LOUD-NAME: 2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ];
    for request in requests {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", go_port)).expect("connect to Go");
        s.write_all(request).expect("send to Go");
        let expected = read_response(&mut BufReader::new(s), false).expect("Go's answer");
        assert_eq!(expected.status, 200, "{}", expected.text());
        let got = raw(&wd, request);
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), expected.text(), "for {}", String::from_utf8_lossy(request));
    }
    let _ = reference.kill();
    let _ = reference.wait();
}
