//! The deadlines and size limits the connection layer keeps (read_timeout, the head limit): a
//! whole request must arrive within read_timeout of its start, however slowly it trickles; an
//! idle keep-alive connection is closed after read_timeout; a head may not exceed 1 MiB.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Sends `head`, then `trickle` one byte every `interval` until the server closes; returns what
/// came back and the seconds from the first byte sent until the close.
fn trickle(port: u16, head: &[u8], trickle: &[u8], interval: Duration) -> (String, f64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let start = Instant::now();
    s.write_all(head).expect("head");
    let mut got = Vec::new();
    let mut i = 0;
    loop {
        let mut buf = [0u8; 4096];
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("the server never closed the connection");
        }
        if start.elapsed() >= interval * (i + 1)
            && s.write_all(&trickle[i as usize % trickle.len()..][..1]).is_ok()
        {
            i += 1;
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed().as_secs_f64())
}

fn recording(dir: &TempDir) -> String {
    let log = dir.path("calls.log");
    dir.script("f", &format!("n=$(wc -c); echo \"$Http_Path $n\" >> {}; echo ran", log.display()))
}

#[test]
fn a_trickled_head_is_cut_at_read_timeout_with_408() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "2")]);
    let (got, seconds) =
        trickle(wd.port, b"POST / HTTP/1.1\r\nHost: x\r\n", b"X-Slow: yes\r\n", Duration::from_millis(300));
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!((1.5..3.5).contains(&seconds), "cut after {seconds:.2}s, read_timeout is 2s");
    assert_eq!(wd.get("/_/health").status, 200);
}

#[test]
fn a_trickled_body_is_cut_at_read_timeout_and_never_reaches_the_function_as_complete() {
    let dir = TempDir::new("trickle");
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(&[("fprocess", &recording(&dir)), ("mode", mode), ("read_timeout", "2")]);
        let head = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
        let (got, seconds) = trickle(wd.port, head, b"abcdefgh", Duration::from_millis(300));
        assert!(got.starts_with("HTTP/1.1 408"), "{mode}: {got:?}");
        assert!((1.5..3.5).contains(&seconds), "{mode}: cut after {seconds:.2}s, read_timeout is 2s");
        std::thread::sleep(Duration::from_millis(300));
        let calls = std::fs::read_to_string(dir.path("calls.log")).unwrap_or_default();
        assert!(!calls.contains("/slow"), "{mode}: the function took a cut body as complete: {calls}");
        assert_eq!(wd.post("/next", b"x").text(), "ran\n", "{mode}: serving goes on");
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_read_timeout() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "2")]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").expect("send");
    let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_response(&mut r, false).expect("response").text(), "hi");
    let idle = Instant::now();
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let seconds = idle.elapsed().as_secs_f64();
    assert!(closed && rest.is_empty(), "closed without a word: {rest:?}");
    assert!((1.5..3.5).contains(&seconds), "closed after {seconds:.2}s idle, read_timeout is 2s");
}

#[test]
fn a_quick_answer_then_silence_is_closed_without_a_408_but_a_late_partial_head_gets_one() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "1")]);
    // Health is answered within microseconds of its request, closer than the kernel's clock
    // tick for "last data received" (4 ms at HZ=250): the request must not count as data that
    // came after the answer.
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            let port = wd.port;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(37 * i));
                let mut s = connect(port);
                s.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
                let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
                assert_eq!(read_response(&mut r, false).expect("response").status, 200);
                read_until_closed(&mut s, Duration::from_secs(10))
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (rest, closed) = client.join().expect("client");
        assert!(closed && rest.is_empty(), "client {i}: {}", String::from_utf8_lossy(&rest));
    }
    // Part of a head well after the answer, then nothing: that is a 408.
    let mut s = connect(wd.port);
    s.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_response(&mut r, false).expect("response").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"GET / HT").expect("partial head");
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(closed && rest.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn an_active_keep_alive_connection_stays_open_past_read_timeout() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "1")]);
    let s = TcpStream::connect(("127.0.0.1", wd.port)).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(s);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        let body = format!("request {n}");
        write!(w, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .expect("send");
        assert_eq!(read_response(&mut r, false).expect("response").text(), body);
        n += 1;
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// tiny_http gives each new connection a task in its thread pool; in a burst, tasks can queue
/// behind threads it counts as idle, and a queued keep-alive connection is read by nobody until
/// another one closes. Every connection of a burst must be served, well before read_timeout.
#[test]
fn every_connection_of_a_burst_of_keep_alive_clients_is_served() {
    const CLIENTS: usize = 96;
    let wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "2")]);
    let port = wd.port;
    let gate = Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || -> Result<usize, String> {
                gate.wait();
                let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
                let mut w = s.try_clone().map_err(|e| e.to_string())?;
                let mut r = std::io::BufReader::new(s);
                let start = Instant::now();
                let mut n = 0;
                // Busy for longer than read_timeout, on the one connection.
                while start.elapsed() < Duration::from_millis(3500) {
                    let body = format!("client {i} request {n}");
                    write!(w, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        .map_err(|e| format!("request {n}: {e}"))?;
                    let got = read_response(&mut r, false).ok_or(format!("request {n}: no answer"))?;
                    if got.status != 200 || got.text() != body {
                        return Err(format!("request {n}: {} {:?}", got.status, got.text()));
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(n)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().expect("client thread")).collect();
    let failed: Vec<_> =
        results.iter().enumerate().filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e))).collect();
    assert!(failed.is_empty(), "{} of {CLIENTS} clients failed: {failed:?}", failed.len());
}

#[test]
fn a_head_over_one_mebibyte_gets_431() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let (text, closed) = send_oversized_head(wd.port);
    assert!(text.starts_with("HTTP/1.1 431") && closed, "{text:?}");
    assert_eq!(wd.get("/_/health").status, 200);
}

#[test]
fn ten_clients_sending_gibibyte_header_lines_leave_the_watchdog_alive_and_small() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let port = wd.port;
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let (s2, w2) = (Arc::clone(&stop), Arc::clone(&slowest));
    let prober = std::thread::spawn(move || {
        let mut answered = 0;
        while !s2.load(Ordering::Acquire) {
            let t = Instant::now();
            let r = try_request(port, "GET", "/_/health", &[], b"");
            assert_eq!(r.map(|r| r.status), Some(200), "health answers during the attack");
            let mut w = w2.lock().expect("lock");
            *w = (*w).max(t.elapsed());
            answered += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        answered
    });
    let attackers: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ");
                let chunk = vec![b'a'; 1 << 20];
                let mut sent = 0u64;
                while sent < 1 << 30 && s.write_all(&chunk).is_ok() {
                    sent += chunk.len() as u64;
                }
                sent
            })
        })
        .collect();
    let sent: Vec<u64> = attackers.into_iter().map(|a| a.join().expect("attacker")).collect();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let answered = prober.join().expect("prober");
    assert!(sent.iter().all(|&n| n < 1 << 30), "every attacker was cut off: {sent:?}");
    let peak = wd.rss_kb("VmHWM:");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(answered >= 1, "health was asked during the attack");
    let slowest = *slowest.lock().expect("lock");
    assert!(slowest < Duration::from_secs(2), "slowest health check {slowest:?}");
    assert_eq!(wd.post("/", b"still here").text(), "still here");
}

#[test]
fn a_body_deadline_is_a_408_even_when_the_killed_function_is_seen_first() {
    // The deadline kills the function and answers 408; on a loaded machine the worker may see
    // the function die before the deadline's cause. The cause must win, every time.
    let _hog = CpuHog::start();
    let dir = TempDir::new("cause");
    let f = dir.script("f", "cat > /dev/null; echo ran");
    let wd = Watchdog::start(&[("fprocess", &f), ("read_timeout", "1")]);
    for i in 0..8 {
        let head = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
        let (got, _) = trickle(wd.port, head, b"abcdefgh", Duration::from_millis(100));
        assert!(got.starts_with("HTTP/1.1 408"), "attempt {i}: {got:?}");
    }
}
