//! http mode against real upstream servers.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// A Python upstream that answers every request with a JSON echo of what it received.
fn echo_upstream(dir: &TempDir, port: u16) -> String {
    let src = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def __getattr__(self, name):
        if name.startswith("do_"): return self.any
        raise AttributeError(name)
    def any(self):
        te = self.headers.get("Transfer-Encoding", "")
        body = b""
        if "chunked" in te.lower():
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline(); break
                body += self.rfile.read(n); self.rfile.readline()
        elif self.headers.get("Content-Length"):
            body = self.rfile.read(int(self.headers["Content-Length"]))
        out = json.dumps({"method": self.command, "target": self.path,
                          "headers": [[k, v] for k, v in self.headers.items()],
                          "body_len": len(body), "chunked": "chunked" in te.lower()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "X-Secret, keep-alive")
        self.send_header("X-Secret", "hop-by-hop")
        self.send_header("x-request-id", "abc")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
    let path = dir.path("echo.py");
    std::fs::write(&path, src).expect("write upstream");
    format!("python3 {} {port}", path.display())
}

fn http_watchdog(fprocess: &str, port: u16, extra: &[(&str, &str)]) -> Watchdog {
    let url = format!("http://127.0.0.1:{port}");
    let mut env = vec![("mode", "http"), ("fprocess", fprocess), ("upstream_url", url.as_str())];
    env.extend_from_slice(extra);
    Watchdog::start(&env)
}

fn json_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &text[start..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim_matches('"'))
}

/// A header as the upstream received it. ureq sends header names in lower case (HTTP header
/// names are case-insensitive; the README says so).
fn upstream_header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("[\"{}\", \"", name.to_ascii_lowercase());
    let start = text.find(&needle)? + needle.len();
    let rest = &text[start..];
    Some(&rest[..rest.find('"')?])
}

#[test]
fn methods_targets_and_headers_are_relayed_but_hop_by_hop_headers_are_not() {
    let dir = TempDir::new("relay");
    let port = free_port();
    let wd = http_watchdog(&echo_upstream(&dir, port), port, &[]);
    let r = wd.request(
        "PROPFIND",
        "/a/b%2Fc?x=1&y=%20z",
        &[
            ("X-Custom", "v"),
            ("Connection", "X-Private"),
            ("X-Private", "secret"),
            ("TE", "trailers"),
            ("Keep-Alive", "1"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert_eq!(json_field(&text, "method"), Some("PROPFIND"));
    assert_eq!(json_field(&text, "target"), Some("/a/b%2Fc?x=1&y=%20z"));
    let r = wd.get("http://example.com/absolute?form=1");
    assert_eq!(
        json_field(&r.text(), "target"),
        Some("/absolute?form=1"),
        "absolute-form targets go upstream in origin form"
    );
    assert_eq!(upstream_header(&text, "X-Custom"), Some("v"));
    assert_eq!(upstream_header(&text, "Host"), Some(format!("127.0.0.1:{}", wd.port).as_str()));
    for hop in ["X-Private", "TE", "Keep-Alive"] {
        assert_eq!(upstream_header(&text, hop), None, "{hop} must not reach the upstream: {text}");
    }
    // Response header names come back in canonical form, as the Go watchdog writes them.
    let mut s = wd.connect();
    s.write_all(b"GET /names HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let (raw, _) = read_until_closed(&mut s, Duration::from_secs(30));
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("\r\nContent-Type: application/json\r\n"), "{raw}");
    assert!(!raw.contains("\r\ncontent-type:"), "{raw}");
    assert!(raw.contains("\r\nX-Request-Id: abc\r\n"), "{raw}");
    // The upstream's hop-by-hop headers do not reach the client either.
    assert_eq!(r.header("X-Secret"), None, "{:?}", r.headers);
    assert_eq!(r.header("Keep-Alive"), None);
    assert!(r.header("X-Duration-Seconds").is_some());
}

#[test]
fn bodies_keep_their_framing() {
    let dir = TempDir::new("framing");
    let port = free_port();
    let wd = http_watchdog(&echo_upstream(&dir, port), port, &[]);
    // No body: neither Content-Length nor chunked upstream.
    let text = wd.get("/none").text();
    assert_eq!((json_field(&text, "body_len"), json_field(&text, "chunked")), (Some("0"), Some("false")));
    assert_eq!(upstream_header(&text, "Transfer-Encoding"), None, "{text}");
    // Bodiless POST and PUT (no framing at all), and an explicit `Content-Length: 0` on any
    // method: `Content-Length: 0` upstream, never an empty chunked body.
    for (method, framing) in [("POST", ""), ("PUT", ""), ("PATCH", ""), ("DELETE", "Content-Length: 0\r\n")] {
        let mut s = wd.connect();
        write!(s, "{method} /empty HTTP/1.1\r\nHost: x\r\n{framing}Connection: close\r\n\r\n").expect("send");
        let text = read_response(&mut BufReader::new(s), false).expect("response").text();
        assert_eq!(upstream_header(&text, "Content-Length"), Some("0"), "{method}: {text}");
        assert_eq!(upstream_header(&text, "Transfer-Encoding"), None, "{method}: {text}");
    }
    // Content-Length: sent with that Content-Length, small and large.
    for size in [10usize, 300_000] {
        let text = wd.post("/cl", &vec![b'x'; size]).text();
        assert_eq!(upstream_header(&text, "Content-Length"), Some(size.to_string().as_str()), "{text}");
        assert_eq!(json_field(&text, "body_len"), Some(size.to_string().as_str()));
    }
    // Chunked: sent chunked.
    let mut s = wd.connect();
    s.write_all(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").expect("send");
    let r = read_response(&mut BufReader::new(s), false).expect("response");
    let text = r.text();
    assert_eq!(
        (json_field(&text, "chunked"), json_field(&text, "body_len")),
        (Some("true"), Some("5")),
        "{text}"
    );
}

#[test]
fn head_requests_get_the_upstream_headers_without_a_body() {
    let dir = TempDir::new("head");
    let port = free_port();
    let wd = http_watchdog(&echo_upstream(&dir, port), port, &[]);
    let mut s = wd.connect();
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut r = BufReader::new(s);
    let head = read_response(&mut r, true).expect("HEAD response");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // The next response on the connection parses: no stray body after the HEAD answer.
    let next = read_response(&mut r, false).expect("response after HEAD");
    assert_eq!(json_field(&next.text(), "target"), Some("/after"));
}

#[test]
fn wsgiref_gets_whole_bodies_with_content_length_and_buffering_for_chunked_clients() {
    let dir = TempDir::new("wsgi");
    let app = dir.path("app.py");
    std::fs::write(
        &app,
        r#"
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
def app(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    out = ("cl=%s got=%d" % (environ.get("CONTENT_LENGTH", ""), len(body))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=Quiet).serve_forever()
"#,
    )
    .expect("write app");
    let port = free_port();
    let fprocess = format!("python3 {} {port}", app.display());
    let wd = http_watchdog(&fprocess, port, &[]);
    assert_eq!(wd.post("/", &vec![b'w'; 70_000]).text(), "cl=70000 got=70000");

    let port = free_port();
    let fprocess = format!("python3 {} {port}", app.display());
    let wd = http_watchdog(&fprocess, port, &[("http_buffer_req_body", "true")]);
    let mut s = wd.connect();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwsgi\r\n4\r\nbody\r\n0\r\n\r\n").expect("send");
    assert_eq!(read_response(&mut BufReader::new(s), false).expect("response").text(), "cl=8 got=8");
}

#[test]
fn python_http_server_files_come_back_byte_for_byte() {
    let dir = TempDir::new("pyserver");
    let site = dir.path("site");
    std::fs::create_dir_all(&site).expect("site");
    let data: Vec<u8> = (0..500_000u32).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(site.join("data.bin"), &data).expect("data");
    let port = free_port();
    // http.server speaks HTTP/1.0 and closes every connection: the pool must cope.
    let fprocess = format!("python3 -m http.server {port} --bind 127.0.0.1 --directory {}", site.display());
    let wd = http_watchdog(&fprocess, port, &[]);
    for _ in 0..3 {
        let r = wd.get("/data.bin");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Length"), Some("500000"));
        assert!(r.body == data, "{} bytes back", r.body.len());
    }
    assert_eq!(wd.get("/missing").status, 404);
}

#[test]
fn node_sse_events_arrive_as_they_are_sent() {
    if std::process::Command::new("node").arg("--version").output().is_err() {
        skip("node is not installed");
        return;
    }
    let dir = TempDir::new("sse");
    let server = dir.path("sse.js");
    std::fs::write(
        &server,
        r#"
const http = require("http");
http.createServer((req, res) => {
  res.writeHead(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"});
  let i = 0;
  const t = setInterval(() => {
    res.write(`data: event-${i}\n\n`);
    if (++i === 4) { clearInterval(t); res.end(); }
  }, 500);
  req.on("close", () => clearInterval(t));
}).listen(Number(process.argv[2]), "127.0.0.1");
"#,
    )
    .expect("write server");
    let port = free_port();
    let wd = http_watchdog(&format!("node {} {port}", server.display()), port, &[]);
    let mut s = wd.connect();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").expect("send");
    let start = Instant::now();
    let (mut got, mut buf, mut seen) = (Vec::new(), [0u8; 4096], Vec::new());
    while seen.len() < 4 {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        while text.contains(&format!("data: event-{}", seen.len())) {
            seen.push(start.elapsed());
        }
    }
    assert!(seen[3] - seen[0] >= Duration::from_millis(1200), "events at {seen:?}: not streamed");
    assert!(String::from_utf8_lossy(&got).contains("Transfer-Encoding: chunked"));
}

#[test]
fn localhost_in_upstream_url_works() {
    let dir = TempDir::new("localhost");
    let port = free_port();
    let url = format!("http://localhost:{port}/");
    let wd = Watchdog::start(&[
        ("mode", "http"),
        ("fprocess", &echo_upstream(&dir, port)),
        ("upstream_url", &url),
    ]);
    assert_eq!(json_field(&wd.get("/x").text(), "target"), Some("/x"));
}

#[test]
fn an_upstream_that_resets_mid_request_is_502_and_refused_is_500() {
    let dir = TempDir::new("reset");
    let script = dir.path("rude.py");
    // Reads the request head, then closes without answering; stops listening on /stop.
    std::fs::write(
        &script,
        r#"
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    head = c.recv(65536)
    if b"/stop" in head:
        c.close(); s.close(); time.sleep(60)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
"#,
    )
    .expect("write");
    let port = free_port();
    let wd = http_watchdog(&format!("python3 {} {port}", script.display()), port, &[]);
    let r = wd.get("/reset");
    assert_eq!(r.status, 502, "{:?}", r);
    assert_eq!(r.header("X-OpenFaaS-Internal"), Some("of-watchdog"));
    let _ = try_request(wd.port, "GET", "/stop", &[], b"");
    std::thread::sleep(Duration::from_millis(300));
    let r = wd.get("/refused");
    assert_eq!(r.status, 500);
    assert!(r.header("X-Duration-Seconds").is_some());
}

#[test]
fn exec_timeout_and_x_timeout_give_504() {
    let dir = TempDir::new("timeout");
    let script = dir.path("slow.py");
    std::fs::write(
        &script,
        r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        time.sleep(3)
        self.send_response(200); self.send_header("Content-Length", "4"); self.end_headers(); self.wfile.write(b"late")
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
    )
    .expect("write");
    let port = free_port();
    let wd = http_watchdog(&format!("python3 {} {port}", script.display()), port, &[("exec_timeout", "2")]);
    let r = wd.request("GET", "/", &[("X-Timeout", "500ms")], b"");
    assert_eq!(r.status, 504);
    assert!(r.elapsed < Duration::from_millis(1800), "{:?}", r.elapsed);
    let r = wd.request("GET", "/", &[("X-Timeout", "30s")], b"");
    assert_eq!(r.status, 504, "X-Timeout is capped at exec_timeout");
    assert!(
        r.elapsed >= Duration::from_millis(1800) && r.elapsed < Duration::from_millis(2900),
        "{:?}",
        r.elapsed
    );
}

#[test]
fn a_client_that_leaves_mid_stream_frees_its_worker() {
    let dir = TempDir::new("leave");
    let script = dir.path("endless.py");
    let closed = dir.path("client-gone");
    std::fs::write(
        &script,
        format!(
            r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/quick":
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok"); return
        self.send_response(200); self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        try:
            for i in range(600):
                self.wfile.write(b"6\r\ntick!\n\r\n"); self.wfile.flush(); time.sleep(0.05)
        except OSError:
            open({closed:?}, "w").close()
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#
        ),
    )
    .expect("write");
    let port = free_port();
    let wd = http_watchdog(&format!("python3 {} {port}", script.display()), port, &[("max_inflight", "1")]);
    let mut s = wd.connect();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut buf = [0u8; 256];
    assert!(s.read(&mut buf).expect("first bytes") > 0);
    drop(s);
    wait_for("the upstream to see the relay stop", Duration::from_secs(10), || closed.exists());
    let mut wd = wd;
    wd.wait_until("the only place is free again", Duration::from_secs(10), |wd| {
        try_request(wd.port, "GET", "/quick", &[], b"").is_some_and(|r| r.status == 200 && r.text() == "ok")
    });
}

#[test]
fn the_watchdog_exits_non_zero_when_the_upstream_exits_even_with_0() {
    let dir = TempDir::new("exit0");
    let script = dir.path("brief.py");
    // Listens (so the watchdog turns healthy), then exits 0 a second later.
    std::fs::write(
        &script,
        "import socket, sys, time\ns = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8)\ntime.sleep(1.5)\n",
    )
    .expect("write");
    let port = free_port();
    let mut wd = http_watchdog(&format!("python3 {} {port}", script.display()), port, &[]);
    let code = wd.wait_exit(Duration::from_secs(15));
    assert!(matches!(code, Some(c) if c != 0), "exit status {code:?}");
    wd.wait_log("the upstream process exited: exit status 0", STARTUP);
}

#[test]
fn an_upstream_that_never_listens_is_a_startup_failure() {
    let dir = TempDir::new("never");
    let script = dir.script("up", "sleep 2; exit 0");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut opts = Options::new(&[("mode", "http"), ("fprocess", &script), ("upstream_url", &url)]);
    opts.wait_healthy = false;
    let mut wd = Watchdog::start_with(opts);
    assert_eq!(wd.get("/_/health").status, 503, "not healthy before the upstream listens");
    assert_eq!(wd.wait_exit(Duration::from_secs(15)), Some(1));
    wd.wait_log("the upstream process exited before it accepted connections", STARTUP);
}

#[test]
fn upstreams_start_with_no_blocked_signals() {
    let dir = TempDir::new("sigmask");
    let port = free_port();
    let wd = http_watchdog(&echo_upstream(&dir, port), port, &[]);
    let pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", wd.pid(), wd.pid()))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .expect("upstream pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
}

#[test]
fn a_streamed_answer_cut_by_exec_timeout_arrives_without_its_end() {
    let dir = TempDir::new("cut");
    let script = dir.path("drip.py");
    std::fs::write(
        &script,
        r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        for i in range(10):
            line = b"line %d\n" % i
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line)); self.wfile.flush(); time.sleep(0.2)
        self.wfile.write(b"0\r\n\r\n")
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
    )
    .expect("write");
    let port = free_port();
    let wd = http_watchdog(&format!("python3 {} {port}", script.display()), port, &[("exec_timeout", "1")]);
    let r = streamed_request(wd.port, "GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"line 0\n"), "{:?}", String::from_utf8_lossy(&r.body));
    assert!(
        !r.complete,
        "cut by exec_timeout, yet it ended with its last chunk: {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Context switches so far of each of the process's threads.
fn switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut seen = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = status.lines().find_map(|l| l.strip_prefix("Name:\t")).unwrap_or("?").to_string();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        seen.insert(format!("{} ({name})", task.file_name().to_string_lossy()), n);
    }
    seen
}

#[test]
fn an_idle_watchdog_never_wakes_up() {
    // Within about half a minute of its last call the watchdog lets idle threads go and gives
    // memory back; from then on, with kept connections to its upstream and nobody calling,
    // nothing may wake it (a node on battery): no timer, no polling of sockets or descriptors.
    let dir = TempDir::new("idle");
    let port = free_port();
    let wd = http_watchdog(&echo_upstream(&dir, port), port, &[]);
    for _ in 0..3 {
        assert_eq!(wd.get("/warm").status, 200);
    }
    std::thread::sleep(Duration::from_secs(35));
    let before = switches(wd.pid());
    std::thread::sleep(Duration::from_secs(5));
    let after = switches(wd.pid());
    assert_eq!(after, before, "threads woke up while idle (thread: context switches)");
    assert_eq!(wd.get("/after").status, 200);
}
