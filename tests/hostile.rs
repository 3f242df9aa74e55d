//! No client can hurt another: what one hostile, broken, slow or pipelining client does may not
//! crash the watchdog or take service from other clients (each finding of the reliability
//! campaign, one test each).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn recording(dir: &TempDir) -> String {
    let log = dir.path("calls.log");
    dir.script("f", &format!("n=$(wc -c); echo \"$Http_Path $n\" >> {}; echo ran", log.display()))
}

fn calls(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path("calls.log")).unwrap_or_default()
}

/// Health on a fresh connection, with how long it took.
fn timed_health(port: u16) -> (Option<u16>, Duration) {
    let t = Instant::now();
    (try_request(port, "GET", "/_/health", &[], b"").map(|r| r.status), t.elapsed())
}

#[test]
fn huge_declared_bodies_held_open_cannot_crash_the_watchdog() {
    let mut wd = Watchdog::start(&[("fprocess", "cat")]);
    let mut held = Vec::new();
    for (n, length) in [(14, "10000000000000"), (2, "70368744177663"), (2, "9223372036854775807")] {
        for _ in 0..n {
            let mut s = wd.connect();
            let head = format!("GET /_/health HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\nabc");
            s.write_all(head.as_bytes()).expect("send");
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (status, took) = timed_health(wd.port);
    assert_eq!(status, Some(200), "alive and healthy with {} such connections held open", held.len());
    assert!(took < Duration::from_secs(1), "health took {took:?}");
    assert_eq!(wd.post("/", b"alive").text(), "alive");
    assert!(wd.wait_exit(Duration::from_millis(10)).is_none(), "still running");
}

#[test]
fn pipelined_requests_with_undrainable_lengths_leave_no_thread_stuck() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    for _ in 0..5 {
        let mut s = wd.connect();
        let one = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9270237145493852071\r\n\r\nabc";
        s.write_all(&[&one[..], &one[..]].concat()).expect("send");
        let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 413") && closed, "{text:?}");
    }
    let (status, took) = timed_health(wd.port);
    assert_eq!(status, Some(200));
    assert!(took < Duration::from_millis(500), "health took {took:?}");
    assert_eq!(wd.post("/", b"fine").text(), "fine");
}

#[test]
fn a_pipelining_connection_does_not_delay_anyone_elses_health_or_calls() {
    let dir = TempDir::new("pipeline");
    let slow = dir.script("slow", "[ \"$Http_Path\" = /slow ] && sleep 10; echo ok");
    let wd = Watchdog::start(&[("fprocess", &slow), ("max_inflight", "4")]);
    // 1100 pipelined calls to a 10 s function, on one connection that reads its answers.
    let mut s = wd.connect();
    let one = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1100).collect();
    s.write_all(&all).expect("pipelined requests");
    let reader = std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let (status, took) = timed_health(wd.port);
        assert_eq!(status, Some(200));
        assert!(took < Duration::from_millis(500), "health took {took:?} next to a pipelining client");
        let t = Instant::now();
        let r = wd.post("/fast", b"");
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "another client's call");
        assert!(t.elapsed() < Duration::from_secs(2), "the call took {:?}", t.elapsed());
    }
    drop(wd);
    let _ = reader.join();
}

#[test]
fn a_connection_that_pipelines_thousands_of_calls_and_never_reads_harms_no_one() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let mut s = wd.connect();
    let one = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * 20_000).collect();
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = s.write_all(&all);
    for _ in 0..3 {
        let (status, took) = timed_health(wd.port);
        assert_eq!(status, Some(200));
        assert!(took < Duration::from_millis(500), "health took {took:?}");
        let t = Instant::now();
        assert_eq!(wd.post("/", b"mine").text(), "mine", "another client's call");
        assert!(t.elapsed() < Duration::from_secs(2), "the call took {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(wd.threads() < 100, "{} threads: the pipeliner holds at most one", wd.threads());
}

#[test]
fn slow_uploads_and_slow_downloads_leave_other_clients_served() {
    let dir = TempDir::new("slow");
    let f = dir.script("f", "if [ \"$Http_Method\" = GET ]; then head -c 10485760 /dev/zero; else cat; fi");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = wd.connect();
        if i % 2 == 0 {
            // A slow upload: the head and a few bytes of a 64 KiB body.
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\nab").expect("send");
        } else {
            // A slow download: asks for 10 MiB and reads nothing.
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let body = format!("call {i}");
        let r = try_request(wd.port, "POST", "/", &[], body.as_bytes());
        assert_eq!(r.map(|r| r.text()), Some(body), "call {i} of another client");
        worst = worst.max(t.elapsed());
        let (status, took) = timed_health(wd.port);
        assert_eq!(status, Some(200));
        assert!(took < Duration::from_millis(500), "health took {took:?}");
    }
    assert!(worst < Duration::from_secs(1), "slowest call {worst:?}");
}

#[test]
fn hung_upstream_calls_leave_room_for_other_calls() {
    let dir = TempDir::new("hung");
    let port = free_port();
    let src = format!(
        r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/hang": time.sleep(60)
        self.send_response(200); self.send_header("Content-Length", "4"); self.end_headers(); self.wfile.write(b"echo")
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#
    );
    std::fs::write(dir.path("up.py"), src).expect("upstream");
    let fprocess = format!("python3 {}", dir.path("up.py").display());
    let url = format!("http://127.0.0.1:{port}");
    let wd = Watchdog::start(&[("mode", "http"), ("fprocess", &fprocess), ("upstream_url", &url)]);
    let mut hung = Vec::new();
    for _ in 0..300 {
        let mut s = wd.connect();
        s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        hung.push(s);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let r = wd.get("/echo");
    assert_eq!((r.status, r.text().as_str()), (200, "echo"), "an unrelated call still gets a worker");
}

#[test]
fn a_chunked_body_cut_inside_a_chunk_never_reaches_a_function_as_complete() {
    let dir = TempDir::new("cut");
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(&[("fprocess", &recording(&dir)), ("mode", mode)]);
        let mut s = wd.connect();
        // "abc" of a 10-byte chunk, then the client is gone.
        s.write_all(b"POST /cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc")
            .expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let (raw, _) = read_until_closed(&mut s, Duration::from_secs(10));
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.starts_with("HTTP/1.1 200"), "{mode}: a cut body got {text:?}");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !calls(&dir).contains("/cut"),
            "{mode}: the function took a cut body as complete: {}",
            calls(&dir)
        );
        assert_eq!(wd.post("/next", b"x").text(), "ran\n", "{mode}: serving goes on");
    }
}

#[test]
fn a_chunked_body_cut_inside_a_chunk_never_reaches_an_upstream_as_complete() {
    let dir = TempDir::new("cut-http");
    let port = free_port();
    let log = dir.path("upstream.log");
    let src = format!(
        r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = b""
        while True:
            n = int(self.rfile.readline().split(b";")[0], 16)
            if n == 0:
                self.rfile.readline(); break
            body += self.rfile.read(n); self.rfile.readline()
        open({log:?}, "a").write(self.path + " complete " + str(len(body)) + "\n")
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#,
        log = log.display().to_string()
    );
    std::fs::write(dir.path("up.py"), src).expect("upstream");
    let fprocess = format!("python3 {}", dir.path("up.py").display());
    let url = format!("http://127.0.0.1:{port}");
    let wd = Watchdog::start(&[("mode", "http"), ("fprocess", &fprocess), ("upstream_url", &url)]);
    let mut s = wd.connect();
    s.write_all(b"POST /cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc")
        .expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let (raw, _) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(
        !String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!seen.contains("/cut"), "the upstream took a cut body as complete: {seen}");
}

#[test]
fn exec_timeout_ends_the_call_even_when_a_descendant_leaves_the_group_holding_stdout() {
    let dir = TempDir::new("setsid");
    let f = dir.script("f", "echo started; setsid sh -c 'sleep 20; echo late' & exit 0");
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(&[("fprocess", &f), ("mode", mode), ("exec_timeout", "1")]);
        let t = Instant::now();
        let r = wd.post("/", b"");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(4), "{mode}: the call took {took:?}, exec_timeout is 1s");
        assert!(!r.text().contains("late"), "{mode}: {}", r.text());
    }
    let _ = std::process::Command::new("pkill").args(["-f", "sleep 20; echo late"]).status();
}

#[test]
fn broken_framing_closes_that_connection_only_never_the_address() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    // A fixed client port: the next connection comes from the same address.
    let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let probe = std::net::TcpListener::bind(local).expect("bind");
    let client_port = probe.local_addr().expect("addr").port();
    drop(probe);
    let connect = || {
        let sock = socket_from(client_port);
        sock.connect(wd.port).expect("connect from the same port")
    };
    let mut s = connect();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("send");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400") && closed, "{text:?}");
    assert!(!text.contains("200 OK"), "the smuggled request was not served: {text:?}");
    reset(s);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = connect();
    again.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok").expect("send");
    let resp = read_response(&mut BufReader::new(again), false).expect("response");
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"), "a new connection from the same address");
}

#[test]
fn a_function_that_crashes_after_output_ends_the_stream_without_its_last_chunk() {
    let dir = TempDir::new("crash");
    let f = dir.script("f", "echo partial; sleep 0.2; kill -SEGV $$");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    let mut s = wd.connect();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").expect("send");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("partial"), "{text:?}");
    assert!(closed && !text.ends_with("0\r\n\r\n"), "no last chunk: the client can tell: {text:?}");
    // Exiting non-zero is an answer, not a crash: that stream ends normally.
    let g = dir.script("g", "echo partial; exit 3");
    drop(wd);
    let wd = Watchdog::start(&[("fprocess", &g)]);
    assert_eq!(wd.post("/", b"").text(), "partial\n");
}

#[test]
fn control_characters_in_a_header_value_are_refused_before_the_function_runs() {
    let dir = TempDir::new("nul");
    let wd = Watchdog::start(&[("fprocess", &recording(&dir))]);
    let mut s = wd.connect();
    s.write_all(b"POST /nul HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n").expect("send");
    let (raw, _) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&raw));
    assert!(!calls(&dir).contains("/nul"), "{}", calls(&dir));
}

#[test]
fn idle_threads_and_memory_go_back_after_a_burst() {
    let dir = TempDir::new("burst");
    let f = dir.script("f", "sleep 1; head -c 200000 /dev/zero");
    let wd = Watchdog::start(&[("fprocess", &f)]);
    std::thread::sleep(Duration::from_millis(500));
    let (threads0, rss0) = (wd.threads(), wd.rss_kb("VmRSS:"));
    let port = wd.port;
    let burst: Vec<_> = (0..150)
        .map(|_| std::thread::spawn(move || request(port, "POST", "/", &[], b"").body.len()))
        .collect();
    for b in burst {
        assert_eq!(b.join().expect("call"), 200_000);
    }
    let peak = wd.threads();
    wait_for("threads back near their idle count", Duration::from_secs(40), || wd.threads() <= threads0 + 4);
    wait_for("memory back near its idle size", Duration::from_secs(40), || {
        wd.rss_kb("VmRSS:") <= 2 * rss0.max(3000)
    });
    eprintln!(
        "threads {threads0} -> {peak} -> {}, RSS {rss0} KiB -> {} KiB",
        wd.threads(),
        wd.rss_kb("VmRSS:")
    );
}

unsafe extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
}

/// A TCP socket bound to 127.0.0.1:`port` with SO_REUSEADDR, not yet connected.
struct BoundSocket(i32);

fn socket_from(port: u16) -> BoundSocket {
    unsafe extern "C" {
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    }
    let fd = unsafe { socket(2, 1, 0) };
    assert!(fd >= 0, "socket");
    let one = 1i32;
    unsafe { setsockopt(fd, 1, 2, (&one as *const i32).cast(), 4) };
    let addr = SockaddrIn::loopback(port);
    assert_eq!(unsafe { bind(fd, &addr, 16) }, 0, "bind to port {port}");
    BoundSocket(fd)
}

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
    zero: [u8; 8],
}

impl SockaddrIn {
    fn loopback(port: u16) -> SockaddrIn {
        SockaddrIn {
            family: 2,
            port: port.to_be(),
            addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            zero: [0; 8],
        }
    }
}

impl BoundSocket {
    fn connect(self, port: u16) -> std::io::Result<TcpStream> {
        use std::os::fd::FromRawFd;
        unsafe extern "C" {
            fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
        }
        let addr = SockaddrIn::loopback(port);
        let rc = unsafe { connect(self.0, &addr, 16) };
        let stream = unsafe { TcpStream::from_raw_fd(self.0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Closes with a reset (SO_LINGER 0): the port is free again at once, no TIME_WAIT.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        on: i32,
        secs: i32,
    }
    let l = Linger { on: 1, secs: 0 };
    unsafe { setsockopt(s.as_raw_fd(), 1, 13, (&l as *const Linger).cast(), 8) };
    drop(s);
}
