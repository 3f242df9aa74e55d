//! streaming mode is full duplex (Go's watchdog is not): output reaches the client while the request
//! body is still arriving, in bounded memory, without writing to disk.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn line_echo(dir: &TempDir) -> String {
    dir.script("lines", "while IFS= read -r l; do printf '%s\\n' \"$l\"; done")
}

/// Reads one chunk of a chunked body; `None` at the last chunk.
fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).expect("chunk size");
    let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("chunk size line {size:?}"));
    let mut data = vec![0u8; n];
    r.read_exact(&mut data).expect("chunk data");
    let mut crlf = [0u8; 2];
    r.read_exact(&mut crlf).expect("chunk end");
    (n > 0).then_some(data)
}

fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("head line");
        if line == "\r\n" || line.is_empty() {
            return head;
        }
        head.push_str(&line);
    }
}

#[test]
fn each_line_is_echoed_before_the_client_sends_the_next() {
    let dir = TempDir::new("duplex");
    let wd = Watchdog::start(&[("fprocess", &line_echo(&dir))]);
    for framing in ["chunked", "length"] {
        let s = wd.connect();
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        // Over 1 KiB in all: tiny_http reads a smaller Content-Length body whole before it hands
        // the request over, so that one cannot be full duplex.
        let lines: Vec<String> =
            (0..5).map(|i| format!("line {i} of a body still arriving {}", "=".repeat(300))).collect();
        let total: usize = lines.iter().map(|l| l.len() + 1).sum();
        let head = match framing {
            "chunked" => "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            _ => format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n"),
        };
        w.write_all(head.as_bytes()).expect("head");
        let mut got = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let piece = format!("{line}\n");
            match framing {
                "chunked" => write!(w, "{:x}\r\n{piece}\r\n", piece.len()).expect("chunk"),
                _ => w.write_all(piece.as_bytes()).expect("piece"),
            }
            if i == 0 {
                let head = read_head(&mut r);
                assert!(head.starts_with("HTTP/1.1 200"), "{framing}: {head}");
            }
            // The echo of this line arrives while the rest of the body has not been sent.
            while !String::from_utf8_lossy(&got).contains(line.as_str()) {
                got.extend(
                    read_chunk(&mut r).unwrap_or_else(|| panic!("{framing}: body ended before line {i}")),
                );
            }
        }
        if framing == "chunked" {
            w.write_all(b"0\r\n\r\n").expect("last chunk");
        }
        while let Some(chunk) = read_chunk(&mut r) {
            got.extend(chunk);
        }
        let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&got), want, "{framing}");
        // The connection carries on.
        w.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nagain\n").expect("next");
        let next = read_response(&mut r, false).expect("next response");
        assert_eq!(next.text(), "again\n", "{framing}: keep-alive after a full-duplex response");
    }
}

#[test]
fn a_gibibyte_streams_through_cat_with_tmpdir_on_a_one_mib_tmpfs() {
    if !can_mount() {
        return;
    }
    let mut opts = Options::new(&[("fprocess", "cat")]);
    opts.tmpfs_tmpdir = Some(1 << 20);
    let wd = Watchdog::start_with(opts);
    const TOTAL: u64 = 1 << 30;
    let s = wd.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        w.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").expect("head");
        let block: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        let mut chunk = format!("{:x}\r\n", block.len()).into_bytes();
        chunk.extend_from_slice(&block);
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..(TOTAL >> 20) {
            w.write_all(&chunk).expect("body");
        }
        w.write_all(b"0\r\n\r\n").expect("end");
    });
    let mut r = BufReader::with_capacity(1 << 20, s);
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut n, mut bad) = (0u64, 0u64);
    while let Some(chunk) = read_chunk(&mut r) {
        for (i, b) in chunk.iter().enumerate() {
            if u64::from(*b) != (n + i as u64) % (1 << 20) % 251 {
                bad += 1;
            }
        }
        n += chunk.len() as u64;
    }
    sender.join().expect("sender");
    assert_eq!((n, bad), (TOTAL, 0), "all bytes back, in order");
    let peak = wd.rss_kb("VmHWM:");
    assert!(peak <= 4096, "peak RSS {peak} KiB, more than 4 MiB");
}

#[test]
fn pipelined_requests_get_complete_answers_in_order() {
    let dir = TempDir::new("pipeline");
    let wd = Watchdog::start(&[("fprocess", &dir.script("tagged", "printf '%s:' \"$Http_Path\"; cat"))]);
    let s = wd.connect();
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let bodies: Vec<Vec<u8>> =
        vec![b"small".to_vec(), vec![b'a'; 70_000], vec![], vec![b'b'; 3000], b"tail".to_vec()];
    let mut all = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if i == 2 {
            all.extend_from_slice(
                b"POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n0\r\n\r\n",
            );
        } else {
            all.extend_from_slice(
                format!("POST /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            );
            all.extend_from_slice(body);
        }
    }
    w.write_all(&all).expect("all requests at once");
    let mut r = BufReader::new(s);
    for (i, body) in bodies.iter().enumerate() {
        let resp = read_response(&mut r, false).unwrap_or_else(|| panic!("response {i}"));
        let mut want = format!("/{i}:").into_bytes();
        if i == 2 {
            want.extend_from_slice(b"chunk");
        } else {
            want.extend_from_slice(body);
        }
        assert_eq!(resp.status, 200, "response {i}");
        assert!(resp.body == want, "response {i}: {} bytes, expected {}", resp.body.len(), want.len());
    }
}

#[test]
fn output_before_the_body_is_read_and_a_function_that_ignores_it() {
    let dir = TempDir::new("ignore");
    let wd = Watchdog::start(&[("fprocess", &dir.script("hello", "echo early; sleep 0.2; echo done"))]);
    let mut s = wd.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // A large body the function never reads; its answer comes anyway, and the connection is
    // closed after it rather than waiting for a body nobody wants.
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n").expect("head");
    s.write_all(&[b'z'; 100_000]).expect("some body");
    let start = Instant::now();
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("early") && text.contains("done") && text.ends_with("0\r\n\r\n"), "{text}");
    assert!(
        closed && start.elapsed() < Duration::from_secs(5),
        "closed after the answer: {:?}",
        start.elapsed()
    );
    assert_eq!(wd.post("/", b"").text(), "early\ndone\n", "serving goes on");
}

#[test]
fn a_client_that_connects_over_http_1_0_gets_a_spooled_answer() {
    let dir = TempDir::new("http10");
    let wd = Watchdog::start(&[("fprocess", &line_echo(&dir))]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).expect("connect");
    let body = "a\n".repeat(2000);
    write!(s, "POST / HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("send");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200") && closed, "{}", &text[..80.min(text.len())]);
    assert!(text.ends_with(&body), "the whole body, close-delimited");
}
