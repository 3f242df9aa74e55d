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
//!
//! When a drain ends, open sessions are closed as websockets close: each side gets a close
//! frame (1001, going away) from the watchdog, where its side of the relay stands between two
//! frames, and a moment to answer before the connections are cut. The relay follows the frame
//! boundaries of both directions for that (`Frames`), nothing more.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
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

/// The open sessions, for the close frames at the end of a drain.
static SESSIONS: Mutex<Vec<Weak<Sides>>> = Mutex::new(Vec::new());

/// A close frame with code 1001 (going away), as a server sends it (unmasked).
const GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

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
    let up_side = match up.try_clone() {
        Ok(u) => u,
        Err(e) => {
            log::error!("cannot relay a websocket session: {e}");
            let _ = up.shutdown(Shutdown::Both);
            client.client_side().shutdown();
            client.complete(101);
            log.write(Outcome { status: 101, bytes: 0 });
            return;
        }
    };
    let sides = Arc::new(Sides {
        client: client.client_side(),
        up: up_side,
        to_client: Mutex::new(Frames::default()),
        to_upstream: Mutex::new(Frames::default()),
    });
    {
        let mut open = SESSIONS.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|s| s.strong_count() > 0);
        open.push(Arc::downgrade(&sides));
    }
    let session = Session { client, up, relay, log, sides };
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
    sides: Arc<Sides>,
}

/// Where each direction of a session stands; a direction's bytes are written under its lock,
/// so a close frame can go in between two frames.
struct Sides {
    client: ClientSide,
    up: TcpStream,
    to_client: Mutex<Frames>,
    to_upstream: Mutex<Frames>,
}

impl Sides {
    /// Sends each side a close frame (1001) if its direction stands between two frames, and
    /// relays nothing more to it. Returns whether both got one.
    fn going_away(&self) -> bool {
        let mut to_client = self.to_client.lock().unwrap_or_else(PoisonError::into_inner);
        let client_ok = to_client.at_boundary() && self.client.send(&GOING_AWAY).is_ok();
        to_client.closed = true;
        drop(to_client);
        let mut to_up = self.to_upstream.lock().unwrap_or_else(PoisonError::into_inner);
        let up_ok = to_up.at_boundary() && (&self.up).write_all(&masked(&GOING_AWAY, mask_key())).is_ok();
        to_up.closed = true;
        client_ok && up_ok
    }
}

/// At the end of a drain: every open session gets its close frames, then up to `wait` for
/// both sides to answer and the session to end, before its connections are cut.
pub(crate) fn close_all(wait: Duration) {
    let open: Vec<Arc<Sides>> = {
        let mut open = SESSIONS.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|s| s.strong_count() > 0);
        open.iter().filter_map(Weak::upgrade).collect()
    };
    if open.is_empty() {
        return;
    }
    let closed = open.iter().filter(|s| s.going_away()).count();
    log::info!("Closing {} websocket sessions (1001 going away): {closed} at a frame boundary", open.len());
    drop(open);
    let until = Instant::now() + wait;
    while RELAYS.load(Ordering::Acquire) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A frame as a client sends it: the payload masked with `key` (RFC 6455 §5.3).
fn masked(frame: &[u8; 4], key: [u8; 4]) -> [u8; 8] {
    let mut out = [frame[0], frame[1] | 0x80, key[0], key[1], key[2], key[3], 0, 0];
    for (i, b) in frame[2..].iter().enumerate() {
        out[6 + i] = b ^ key[i % 4];
    }
    out
}

/// A masking key: it only has to be unpredictable to the client's JavaScript, which never
/// sees this frame, so the clock's nanoseconds do.
fn mask_key() -> [u8; 4] {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    (nanos ^ 0x5a5a_a5a5).to_le_bytes()
}

/// Where a byte stream of websocket frames stands: inside a frame or between two.
#[derive(Default)]
struct Frames {
    /// Header bytes of the next frame seen so far.
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The watchdog closed this direction: nothing more is relayed.
    closed: bool,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have < 2 {
                continue;
            }
            let masked = self.head[1] & 0x80 != 0;
            let short = self.head[1] & 0x7f;
            let ext = match short {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let total = 2 + ext + if masked { 4 } else { 0 };
            if self.have < total {
                continue;
            }
            self.remaining = match ext {
                0 => u64::from(short),
                2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                _ => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0xff; 8])),
            };
            self.have = 0;
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

impl Session {
    fn run(self) {
        let Session { mut client, up, relay, log, sides } = self;
        let to_client = client.client_side();
        // Bytes relayed to the client (the 101 head excluded), for the log line.
        let mut sent = 0u64;
        let up_write = up.try_clone();
        std::thread::scope(|s| {
            // Client to upstream: tiny_http's reader is the client's side, bytes it buffered
            // after the head first.
            let inbound = crate::threads::spawn_scoped(s, || {
                if let Ok(mut w) = up_write {
                    let _ = copy(&mut client, &mut w, &sides.to_upstream);
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
                        let mut frames = sides.to_client.lock().unwrap_or_else(PoisonError::into_inner);
                        if frames.closed {
                            // The watchdog closed this side: what follows is not relayed.
                            continue;
                        }
                        if to_client.send(&buf[..n]).is_err() {
                            break;
                        }
                        frames.feed(&buf[..n]);
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

fn copy(reader: &mut Upgraded, w: &mut impl Write, frames: &Mutex<Frames>) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut frames = frames.lock().unwrap_or_else(PoisonError::into_inner);
        if frames.closed {
            // The watchdog closed this side: what follows is not relayed.
            continue;
        }
        w.write_all(&buf[..n])?;
        frames.feed(&buf[..n]);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_followed_across_pieces() {
        // (frame bytes, masked): short, 16-bit and 64-bit lengths, empty payloads.
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0x81, 0x03, b'a', b'b', b'c']);
        stream.extend_from_slice(&[0x82, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4]);
        stream.extend(std::iter::repeat_n(7u8, 256));
        stream.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        stream.extend(std::iter::repeat_n(9u8, 65536));
        stream.extend_from_slice(&GOING_AWAY);
        stream.extend_from_slice(&[0x89, 0x00]);
        let ends = [5, 5 + 8 + 256, 5 + 8 + 256 + 10 + 65536, stream.len() - 2, stream.len()];
        for piece in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut f = Frames::default();
            let mut at = 0;
            for chunk in stream.chunks(piece) {
                f.feed(chunk);
                at += chunk.len();
                assert_eq!(f.at_boundary(), ends.contains(&at), "piece {piece}, at {at}");
            }
        }
    }

    #[test]
    fn a_masked_close_frame_unmasks_to_its_code() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let m = masked(&GOING_AWAY, key);
        assert_eq!(&m[..2], &[0x88, 0x82]);
        assert_eq!([m[6] ^ key[0], m[7] ^ key[1]], [0x03, 0xe9]);
    }

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
