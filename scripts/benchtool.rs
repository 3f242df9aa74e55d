//! Measurement helpers for scripts/bench.sh, compiled with `rustc -O` (std only):
//!
//!   benchtool spawn-baseline THREADS SECONDS   rate at which one process can spawn `cat` and
//!                                              round-trip 1 KiB through it (the ceiling for
//!                                              fork modes on this machine)
//!   benchtool startup BINARY RUNS PORT [http]  time from spawning the watchdog to its first
//!                                              200 on GET /_/health (median, min, max); with
//!                                              `http`, in http mode in front of `upstream`
//!   benchtool listen-time RUNS PORT            time from spawning `benchtool upstream` until it
//!                                              accepts a connection (what http mode waits for)
//!   benchtool latency HOST:PORT/PATH REQUESTS  sequential GETs on one keep-alive connection:
//!                                              p50/p99 latency in microseconds
//!   benchtool upstream PORT                    a fast HTTP/1.1 keep-alive server for http mode:
//!                                              GET answers "hello world", POST echoes its body
//!                                              (Content-Length or chunked)
//!   benchtool probe HOST:PORT SECONDS MS       every MS milliseconds, one POST / (body "ping",
//!                                              expecting it back) and one GET /_/health, each on
//!                                              a fresh connection, 5 s timeout: success rates and
//!                                              latency percentiles (the "other client" under attack)
//!   benchtool soak HOST:PORT SECONDS CONNS [close]
//!                                              CONNS keep-alive connections POSTing bodies of
//!                                              random sizes (0 to 1 MiB, Content-Length or
//!                                              chunked) to an echo function; every answer is
//!                                              checked byte for byte. Prints ok/errors. With
//!                                              `close`, a fresh connection per request, and a
//!                                              refused connection ends that client (refused, not
//!                                              an error: for a watchdog that stops accepting)
//!   benchtool fuzz HOST:PORT CASES SEED        CASES malformed or hostile requests (random
//!                                              bytes, broken framing, huge or bad fields, cut
//!                                              bodies), each on a fresh connection; after each
//!                                              batch of 50, /_/health must answer 200 within 1 s
//!   benchtool stream-echo HOST:PORT MIB        POSTs MIB MiB (chunked, 1 MiB chunks) from one
//!                                              thread while another reads the echo back; prints
//!                                              MB/s (the client costs little next to curl)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "spawn-baseline" => spawn_baseline(arg(1).parse().unwrap_or(16), arg(2).parse().unwrap_or(5.0)),
        "startup" => startup(&arg(1), arg(2).parse().unwrap_or(20), arg(3).parse().unwrap_or(18700), arg(4) == "http"),
        "listen-time" => listen_time(arg(1).parse().unwrap_or(20), arg(2).parse().unwrap_or(18900)),
        "latency" => latency(&arg(1), arg(2).parse().unwrap_or(2000)),
        "upstream" => upstream(arg(1).parse().unwrap_or(5000)),
        "stream-echo" => stream_echo(&arg(1), arg(2).parse().unwrap_or(1024)),
        "probe" => probe(&arg(1), arg(2).parse().unwrap_or(30.0), arg(3).parse().unwrap_or(100)),
        "soak" => soak(&arg(1), arg(2).parse().unwrap_or(60.0), arg(3).parse().unwrap_or(64), arg(4) == "close"),
        "fuzz" => fuzz(&arg(1), arg(2).parse().unwrap_or(1000), arg(3).parse().unwrap_or(1)),
        _ => {
            eprintln!(
                "usage: benchtool spawn-baseline THREADS SECONDS | startup BINARY RUNS PORT | latency HOST:PORT/PATH REQUESTS | upstream PORT | stream-echo HOST:PORT MIB"
            );
            std::process::exit(2);
        }
    }
}

fn round_trip(payload: &[u8]) -> bool {
    let Ok(mut child) = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return false;
    };
    let Some(mut stdin) = child.stdin.take() else { return false };
    let ok = stdin.write_all(payload).is_ok();
    drop(stdin);
    let mut out = Vec::new();
    let read = child.stdout.take().map(|mut s| s.read_to_end(&mut out).is_ok()).unwrap_or(false);
    let status = child.wait().map(|s| s.success()).unwrap_or(false);
    ok && read && status && out == payload
}

fn spawn_baseline(threads: usize, seconds: f64) {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let payload = [b'x'; 1024];
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < seconds {
                    if round_trip(&payload) {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    println!("{:.0}", total as f64 / start.elapsed().as_secs_f64());
}

fn health_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_nodelay(true);
    if s.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1.1 200"))
}

fn print_times(mut times: Vec<f64>) {
    times.sort_by(|a, b| a.total_cmp(b));
    println!("median_ms={:.2} min_ms={:.2} max_ms={:.2}", times[times.len() / 2], times[0], times[times.len() - 1]);
}

fn listen_time(runs: usize, port: u16) {
    let me = std::env::current_exe().unwrap_or_default();
    let mut times = Vec::new();
    for i in 0..runs {
        let p = port + (i % 50) as u16;
        let t0 = Instant::now();
        let Ok(mut child) = Command::new(&me).args(["upstream", &p.to_string()]).spawn() else {
            std::process::exit(1);
        };
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            std::thread::sleep(Duration::from_micros(50));
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    print_times(times);
}

fn startup(binary: &str, runs: usize, port: u16, http: bool) {
    let dir = std::env::temp_dir().join(format!("benchtool-startup-{}", std::process::id()));
    let me = std::env::current_exe().unwrap_or_default();
    let mut times = Vec::new();
    for i in 0..runs {
        let p = port + (i % 50) as u16 * 3;
        let mut cmd = Command::new(binary);
        cmd.env("fprocess", "cat")
            .env("port", p.to_string())
            .env("metrics_port", (p + 1).to_string())
            .env("TMPDIR", &dir)
            .stderr(Stdio::null());
        if http {
            cmd.env("mode", "http")
                .env("fprocess", format!("{} upstream {}", me.display(), p + 2))
                .env("upstream_url", format!("http://127.0.0.1:{}", p + 2));
        }
        let t0 = Instant::now();
        let Ok(mut child) = cmd.spawn() else {
            eprintln!("cannot start {binary}");
            std::process::exit(1);
        };
        while !health_ok(p) {
            if t0.elapsed() > Duration::from_secs(10) {
                eprintln!("no 200 on /_/health within 10 s");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        // SIGKILL leaves an http-mode upstream behind: end it too.
        let _ = child.kill();
        let _ = child.wait();
        if http {
            let _ = Command::new("pkill").args(["-f", &format!("upstream {}$", p + 2)]).status();
        }
    }
    print_times(times);
}

fn latency(target: &str, requests: usize) {
    let (hostport, path) = target.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((target, "/".into()));
    let Ok(mut s) = TcpStream::connect(hostport) else {
        eprintln!("cannot connect to {hostport}");
        std::process::exit(1);
    };
    let _ = s.set_nodelay(true);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n");
    let mut times = Vec::with_capacity(requests);
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..requests {
        let t0 = Instant::now();
        if s.write_all(request.as_bytes()).is_err() {
            break;
        }
        // Read one response with a Content-Length body.
        let mut got = Vec::new();
        let total = loop {
            let Ok(n) = s.read(&mut buf) else { break None };
            if n == 0 {
                break None;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break Some(());
                }
            }
        };
        if total.is_none() {
            eprintln!("connection closed");
            break;
        }
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).copied().unwrap_or(0.0);
    println!("p50_us={:.1} p99_us={:.1} n={}", pct(0.5), pct(0.99), times.len());
}

fn upstream(port: u16) {
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {port}: {e}");
            std::process::exit(1);
        }
    };
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || serve_upstream(conn));
    }
}

fn serve_upstream(conn: TcpStream) {
    use std::io::BufRead;
    let _ = conn.set_nodelay(true);
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = std::io::BufReader::with_capacity(64 * 1024, conn);
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let is_post = line.starts_with("POST");
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                }
            }
        }
        body.clear();
        if chunked {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return };
                let start = body.len();
                body.resize(start + n, 0);
                let mut crlf = [0u8; 2];
                if r.read_exact(&mut body[start..]).is_err() || r.read_exact(&mut crlf).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        }
        let payload: &[u8] = if is_post { &body } else { b"hello world" };
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", payload.len());
        let mut out = Vec::with_capacity(head.len() + payload.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(payload);
        if w.write_all(&out).is_err() {
            return;
        }
    }
}

/// Reads a chunked body to its end (or to where the connection ends); returns its length.
fn drain_chunked(r: &mut impl std::io::BufRead) -> u64 {
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return total;
        }
        let Ok(mut n) = usize::from_str_radix(line.trim(), 16) else {
            eprintln!("bad chunk size line {line:?}");
            return total;
        };
        if n == 0 {
            let _ = r.read_line(&mut line);
            return total;
        }
        total += n as u64;
        while n > 0 {
            let want = n.min(buf.len());
            if r.read_exact(&mut buf[..want]).is_err() {
                return total;
            }
            n -= want;
        }
        let mut crlf = [0u8; 2];
        let _ = r.read_exact(&mut crlf);
    }
}

fn stream_echo(addr: &str, mib: u64) {
    use std::io::BufRead;
    let Ok(conn) = TcpStream::connect(addr) else {
        eprintln!("cannot connect to {addr}");
        std::process::exit(1);
    };
    let Ok(mut w) = conn.try_clone() else { std::process::exit(1) };
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut chunk = format!("{:x}\r\n", 1 << 20).into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', 1 << 20));
        chunk.extend_from_slice(b"\r\n");
        let _ = w.write_all(b"POST / HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..mib {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let mut r = std::io::BufReader::with_capacity(1 << 20, conn);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            eprintln!("no response");
            std::process::exit(1);
        }
        if line == "\r\n" {
            break;
        }
    }
    let got = drain_chunked(&mut r);
    let secs = start.elapsed().as_secs_f64();
    // A watchdog that stops reading the body early would leave the sender blocked.
    drop(r);
    let _ = sender.join();
    // MB/s of what came back; `complete=false` when the echo lost bytes (the Go watchdog drops
    // the unread request body once the response has started).
    println!("mb_per_s={:.0} seconds={secs:.3} complete={}", got as f64 / 1e6 / secs, got == mib << 20);
}

/// One request on a fresh connection; the response's status and body, or `None`.
fn one_shot(addr: &str, request: &[u8], timeout: Duration) -> Option<(u16, Vec<u8>)> {
    use std::net::ToSocketAddrs;
    let sa = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(request).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| out[i + 4..].to_vec())?;
    Some((status, body))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn probe(addr: &str, seconds: f64, every_ms: u64) {
    let call = b"POST / HTTP/1.1\r\nHost: probe\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping";
    let health = b"GET /_/health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n";
    let start = Instant::now();
    let (mut calls, mut healths) = (Vec::new(), Vec::new());
    let (mut call_fail, mut health_fail) = (0u32, 0u32);
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        match one_shot(addr, call, Duration::from_secs(5)) {
            Some((200, body)) if body.windows(4).any(|w| w == b"ping") => calls.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => call_fail += 1,
        }
        let t = Instant::now();
        match one_shot(addr, health, Duration::from_secs(5)) {
            Some((200, _)) => healths.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => health_fail += 1,
        }
        std::thread::sleep(Duration::from_millis(every_ms));
    }
    calls.sort_by(|a, b| a.total_cmp(b));
    healths.sort_by(|a, b| a.total_cmp(b));
    let ok = calls.len() as u32;
    println!(
        "calls_ok={ok} calls_failed={call_fail} success_pct={:.2} call_p50_ms={:.1} call_p99_ms={:.1} call_max_ms={:.1} health_ok={} health_failed={health_fail} health_p99_ms={:.1} health_max_ms={:.1}",
        100.0 * f64::from(ok) / f64::from((ok + call_fail).max(1)),
        percentile(&calls, 0.5),
        percentile(&calls, 0.99),
        calls.last().copied().unwrap_or(f64::NAN),
        healths.len(),
        percentile(&healths, 0.99),
        healths.last().copied().unwrap_or(f64::NAN),
    );
}

/// A small xorshift generator: reproducible runs from a seed, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Reads one response (Content-Length or chunked body) from a keep-alive connection.
fn read_one(r: &mut impl std::io::BufRead) -> Option<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let n = usize::from_str_radix(line.trim(), 16).ok()?;
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some((status, body))
}

fn soak(addr: &str, seconds: f64, conns: usize, fresh: bool) {
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1) * 0x1234_5678_9abc_def1);
                let (mut ok, mut bad, mut bytes, mut refused) = (0u64, 0u64, 0u64, 0u64);
                let mut conn: Option<(TcpStream, std::io::BufReader<TcpStream>)> = None;
                while start.elapsed().as_secs_f64() < seconds {
                    if conn.is_none() {
                        let Ok(s) = TcpStream::connect(&addr) else {
                            if fresh {
                                refused += 1;
                                break;
                            }
                            bad += 1;
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        let Ok(r) = s.try_clone() else { continue };
                        conn = Some((s, std::io::BufReader::with_capacity(64 * 1024, r)));
                    }
                    let Some((w, r)) = conn.as_mut() else { continue };
                    let size = match rng.below(10) {
                        0 => 0,
                        1..=5 => rng.below(1024) as usize,
                        6..=8 => rng.below(64 * 1024) as usize,
                        _ => rng.below(1 << 20) as usize,
                    };
                    let seed = rng.next();
                    let body: Vec<u8> = (0..size).map(|j| (seed.wrapping_add(j as u64 * 31) >> 3) as u8).collect();
                    let chunked = rng.below(3) == 0;
                    let mut req = Vec::with_capacity(size + 256);
                    let close = if fresh { "Connection: close\r\n" } else { "" };
                    if chunked {
                        req.extend_from_slice(format!("POST /soak HTTP/1.1\r\nHost: soak\r\n{close}Transfer-Encoding: chunked\r\n\r\n").as_bytes());
                        for piece in body.chunks(16 * 1024) {
                            req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                            req.extend_from_slice(piece);
                            req.extend_from_slice(b"\r\n");
                        }
                        req.extend_from_slice(b"0\r\n\r\n");
                    } else {
                        req.extend_from_slice(format!("POST /soak HTTP/1.1\r\nHost: soak\r\n{close}Content-Length: {size}\r\n\r\n").as_bytes());
                        req.extend_from_slice(&body);
                    }
                    // Written by a helper while this thread reads: a full-duplex echo of a large
                    // body answers before the whole body is sent.
                    let sender = w.try_clone().map(|mut w2| std::thread::spawn(move || w2.write_all(&req).is_ok()));
                    let got = read_one(r);
                    let sent = sender.ok().map(|h| h.join().unwrap_or(false)).unwrap_or(false);
                    match got {
                        Some((200, echoed)) if sent && echoed == body => {
                            ok += 1;
                            bytes += size as u64;
                            if fresh {
                                conn = None;
                            }
                        }
                        other => {
                            bad += 1;
                            if bad <= 3 {
                                eprintln!(
                                    "connection {i}: a {size}-byte body came back as {:?}",
                                    other.map(|(s, b)| (s, b.len()))
                                );
                            }
                            conn = None;
                        }
                    }
                }
                (ok, bad, bytes, refused)
            })
        })
        .collect();
    let (mut ok, mut bad, mut bytes, mut refused) = (0, 0, 0, 0);
    for h in handles {
        if let Ok((o, b, n, r)) = h.join() {
            ok += o;
            bad += b;
            bytes += n;
            refused += r;
        }
    }
    println!("ok={ok} errors={bad} refused={refused} mb={:.0} rps={:.0}", bytes as f64 / 1e6, ok as f64 / seconds);
}

/// One hostile request: what it sends, and whether it then closes its side.
fn hostile(rng: &mut Rng) -> (Vec<u8>, bool) {
    let valid = b"POST /fuzz?x=1 HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello".to_vec();
    let mut req = match rng.below(12) {
        0 => (0..rng.below(2000)).map(|_| rng.next() as u8).collect(),
        1 => {
            // Valid, then flipped bytes.
            let mut v = valid.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = rng.next() as u8;
            }
            v
        }
        2 => valid[..rng.below(valid.len() as u64) as usize].to_vec(),
        3 => b"GET / HTTP/1.1\r\nHost: fuzz\r\nContent-Length: -1\r\n\r\n".to_vec(),
        4 => format!("POST / HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {}\r\n\r\nabc", rng.next()).into_bytes(),
        5 => b"POST / HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n".to_vec(),
        6 => b"POST / HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
        7 => format!("GET /{} HTTP/1.1\r\nHost: fuzz\r\n\r\n", "a".repeat(rng.below(100_000) as usize)).into_bytes(),
        8 => {
            let mut v = b"GET / HTTP/1.1\r\nHost: fuzz\r\n".to_vec();
            for i in 0..rng.below(500) {
                v.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(rng.below(200) as usize)).as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        }
        9 => b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        10 => b"POST / HTTP/1.1\r\nHost: fuzz\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\nab".to_vec(),
        _ => b"GET / HTTP/1.1\r\nHost: fuzz\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello".to_vec(),
    };
    if rng.below(4) == 0 {
        // Pipelined: the same again behind it.
        let again = req.clone();
        req.extend_from_slice(&again);
    }
    (req, rng.below(2) == 0)
}

fn fuzz(addr: &str, cases: usize, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let health = b"GET /_/health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
    let (mut answered, mut closed) = (0u64, 0u64);
    for case in 0..cases {
        let (req, half_close) = hostile(&mut rng);
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(&req);
            if half_close {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => answered += 1,
                _ => closed += 1,
            }
        }
        if case % 50 == 49 {
            let t = Instant::now();
            match one_shot(addr, health, Duration::from_secs(1)) {
                Some((200, _)) => {}
                other => {
                    println!("FAIL: after case {case}, /_/health gave {:?} in {:?}", other.map(|o| o.0), t.elapsed());
                    std::process::exit(1);
                }
            }
        }
    }
    println!("cases={cases} answered={answered} closed_or_silent={closed} health=ok");
}
