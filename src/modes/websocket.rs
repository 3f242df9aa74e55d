//! Websocket relay for http mode: a request with `Connection: upgrade` and an `Upgrade` header
//! is not a call but a session between the client and the upstream.
//!
//! ureq does not do upgrades, so the handshake is ours: a plain TCP connection to the upstream,
//! the client's request head written on it (hop-by-hop headers dropped, `Connection: Upgrade`
//! and `Upgrade` kept), the upstream's answer read back. A `101` goes to the client as the
//! upstream sent it (header names in canonical form), then bytes flow both ways until either
//! side closes, and the other is closed. Any other answer goes back as a plain response and the
//! connection is closed.
//!
//! Each session runs on two threads of its own, not on a call worker: `MAX_RELAYS` sessions at
//! most, each holding a `max_inflight` place while it is open (taken by the caller), as in the
//! Go watchdog. A session counts as one request with code 101 when it ends, its duration the
//! session's length.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::http_server::{ClientSide, Exchange, Upgraded, canonical_name, origin_form};
use crate::logging::CallLog;

use super::handler::{Context, Outcome};

/// Websocket sessions open at once, at most.
pub(crate) const MAX_RELAYS: usize = 1024;
/// Longest upstream answer head we read.
const MAX_HEAD: usize = 64 * 1024;
/// The handshake with the upstream must be done within this (or exec_timeout if shorter).
const HANDSHAKE: Duration = Duration::from_secs(30);

static RELAYS: AtomicUsize = AtomicUsize::new(0);

/// Headers that describe one connection (RFC 9110 §7.6.1); the upgrade's own two are written
/// by us.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Relays `ex`, an upgrade request, to the upstream at `upstream` (paths under `prefix`);
/// `log` is written when the session (or the upstream's refusal) ends.
pub(crate) fn relay(ex: Exchange, ctx: &Context, upstream: SocketAddr, prefix: &str, log: CallLog) {
    if RELAYS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_RELAYS).then_some(n + 1))
        .is_err()
    {
        let outcome = super::handler::text(
            ex,
            503,
            &format!("too many websocket sessions (at most {MAX_RELAYS})\n"),
            &[],
        );
        log.write(outcome);
        return;
    }
    let relay = RelayPlace;
    let limits = super::handler::Limits::of(&ex.info, &ctx.config);
    let timeout = limits.limit.map_or(HANDSHAKE, |l| l.min(HANDSHAKE));
    let started = Instant::now();
    let (mut up, head, early) = match handshake(&ex, upstream, prefix, timeout) {
        Ok(answer) => answer,
        Err(e) => {
            let status = if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                504
            } else {
                500
            };
            log::warn!("Upstream websocket handshake failed: {} {}: {e}", ex.info.method, ex.info.uri);
            let duration = crate::duration::seconds_f6(started.elapsed());
            let headers = [("X-Duration-Seconds", duration.as_str()), ("X-OpenFaaS-Internal", "of-watchdog")];
            let bytes = ex.respond(status, &headers, b"");
            log.write(Outcome { status, bytes });
            return;
        }
    };
    if head.status != 101 {
        let outcome = answer_refusal(ex, &mut up, head, early, started);
        log.write(outcome);
        return;
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(canonical_name(name).as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&early);
    let mut client = ex.into_upgraded();
    if client.client_side().send(&out).is_err() {
        let _ = up.shutdown(Shutdown::Both);
        client.complete(101);
        log.write(Outcome { status: 101, bytes: 0 });
        return;
    }
    let _ = up.set_read_timeout(None);
    let _ = up.set_write_timeout(None);
    let session = Session { client, up, relay, log };
    if let Err(e) = crate::threads::spawn("fw-websocket", move || session.run()) {
        log::error!("cannot start a websocket relay thread: {e}");
    }
}

/// Holds one of the `MAX_RELAYS` places.
struct RelayPlace;

impl Drop for RelayPlace {
    fn drop(&mut self) {
        RELAYS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The upstream's answer head.
struct AnswerHead {
    status: u16,
    headers: Vec<(String, String)>,
}

/// Connects to the upstream, sends the upgrade request, reads the answer head. Returns the
/// stream, the head and any bytes read past it.
fn handshake(
    ex: &Exchange,
    upstream: SocketAddr,
    prefix: &str,
    timeout: Duration,
) -> io::Result<(TcpStream, AnswerHead, Vec<u8>)> {
    let mut up = TcpStream::connect_timeout(&upstream, timeout)?;
    up.set_nodelay(true)?;
    up.set_read_timeout(Some(timeout))?;
    up.set_write_timeout(Some(timeout))?;
    let target = origin_form(&ex.info.uri).unwrap_or("/");
    let mut req = format!("{} {prefix}{target} HTTP/1.1\r\n", ex.info.method).into_bytes();
    let tokens: Vec<String> = ex
        .headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in ex.headers() {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || tokens.contains(&lower) {
            continue;
        }
        req.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let protocol = ex.info.upgrade.as_deref().unwrap_or("websocket");
    req.extend_from_slice(format!("Connection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n").as_bytes());
    up.write_all(&req)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "upstream answer head too large"));
        }
        let n = up.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed during the handshake"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = parse_head(&buf[..end])?;
    Ok((up, head, buf[end..].to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> io::Result<AnswerHead> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed upstream answer head");
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(AnswerHead { status, headers })
}

/// The upstream refused the upgrade: its answer goes back as a plain response, then the
/// connection is closed (tiny_http reads no more requests after an upgrade request).
fn answer_refusal(
    ex: Exchange,
    up: &mut TcpStream,
    head: AnswerHead,
    early: Vec<u8>,
    started: Instant,
) -> Outcome {
    let header =
        |name: &str| head.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let bodiless = head.status < 200 || head.status == 204 || head.status == 304 || ex.info.is_head();
    let mut body = early;
    let limit: u64 = 16 << 20;
    let complete = if bodiless {
        body.clear();
        true
    } else if chunked {
        read_chunked(up, &mut body, limit)
    } else if let Some(n) = length {
        read_exact_len(up, &mut body, n.min(limit))
    } else {
        let _ = up.take(limit).read_to_end(&mut body);
        true
    };
    let _ = up.shutdown(Shutdown::Both);
    if !complete {
        log::warn!("the upstream's answer to an upgrade broke off");
    }
    let duration = crate::duration::seconds_f6(started.elapsed());
    let mut headers: Vec<(String, &str)> = head
        .headers
        .iter()
        .filter(|(k, _)| {
            let lower = k.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&lower.as_str()) && lower != "content-length"
        })
        .map(|(k, v)| (canonical_name(k), v.as_str()))
        .collect();
    headers.push(("X-Duration-Seconds".into(), duration.as_str()));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let status = head.status;
    let bytes = ex.respond(status, &headers, &body);
    Outcome { status, bytes }
}

fn read_exact_len(up: &mut TcpStream, body: &mut Vec<u8>, n: u64) -> bool {
    let have = body.len() as u64;
    if have >= n {
        body.truncate(n as usize);
        return true;
    }
    up.take(n - have).read_to_end(body).is_ok() && body.len() as u64 == n
}

/// Reads a chunked body (the early bytes are already in `body`) and decodes it in place.
fn read_chunked(up: &mut TcpStream, body: &mut Vec<u8>, limit: u64) -> bool {
    let mut raw = std::mem::take(body);
    let mut chunk = [0u8; 8192];
    loop {
        match decode_chunked(&raw) {
            Some(decoded) => {
                *body = decoded;
                return true;
            }
            None if raw.len() as u64 > limit => return false,
            None => match up.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            },
        }
    }
}

/// The decoded body if `raw` holds a complete chunked body, else `None`.
fn decode_chunked(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&raw[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let end = at + find(&raw[at..], b"\r\n")?;
                if end == at {
                    return Some(out);
                }
                at = end + 2;
            }
        }
        if raw.len() < at + size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

/// An open session.
struct Session {
    client: Upgraded,
    up: TcpStream,
    relay: RelayPlace,
    log: CallLog,
}

impl Session {
    fn run(self) {
        let Session { mut client, up, relay, log } = self;
        let to_client = client.client_side();
        // Bytes relayed to the client (the 101 head excluded), for the log line.
        let mut sent = 0u64;
        let up_write = up.try_clone();
        std::thread::scope(|s| {
            // Client to upstream: tiny_http's reader is the client's side, bytes it buffered
            // after the head first.
            let inbound = crate::threads::spawn_scoped(s, || {
                if let Ok(mut w) = up_write {
                    let _ = copy(&mut client, &mut w);
                }
                end_both(&up, &to_client);
            });
            // Upstream to client, on our descriptor of the connection.
            let mut buf = vec![0u8; 16 * 1024];
            let mut reader = &up;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_client.send(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                }
            }
            end_both(&up, &to_client);
            let _ = inbound.join();
        });
        client.complete(101);
        drop(client);
        drop(relay);
        log.write(Outcome { status: 101, bytes: sent });
    }
}

fn end_both(up: &TcpStream, client: &ClientSide) {
    let _ = up.shutdown(Shutdown::Both);
    client.shutdown();
}

fn copy(reader: &mut Upgraded, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_once_complete() {
        assert_eq!(decode_chunked(b"3\r\nabc\r\n0\r\n\r\n").as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            decode_chunked(b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(decode_chunked(b"3\r\nabc\r\n0\r\n"), None, "no final empty line yet");
        assert_eq!(decode_chunked(b"5\r\nabc"), None);
        assert_eq!(decode_chunked(b"zz\r\n"), None);
    }

    #[test]
    fn answer_heads_parse() {
        let h = parse_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: x=\r\n\r\n",
        )
        .expect("parses");
        assert_eq!(h.status, 101);
        assert_eq!(h.headers[1], ("sec-websocket-accept".to_string(), "x=".to_string()));
        assert!(parse_head(b"SPDY/3 200 OK\r\n\r\n").is_err());
    }
}
