//! Responses: how each is framed (pure), its status line and headers, and the writer that
//! sends it on our own descriptor of the connection.
//!
//! Every response is written by us, never through tiny_http's writer: tiny_http drops the
//! framing and connection headers it is given, adds `Server: tiny-http`, does not flush a
//! streamed body and holds a whole response in memory for an HTTP/1.0 client. Written on our
//! socket, a response can also start while its request body is still being read (full duplex).
//! That is safe because a connection's requests are answered one at a time (`registry`), so no
//! earlier response on it is unfinished.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::clock;
use crate::logging::BodyLog;
use crate::spool::Spool;

use super::status::reason;
use super::turn::{Completion, TurnEnd};

/// Headers we set ourselves whatever a caller passes (framing and connection management).
fn is_framing_header(name: &str) -> bool {
    ["Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Date"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// What of a request decides how its response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proto {
    pub(crate) http10: bool,
    pub(crate) keep_alive: bool,
    pub(crate) head_request: bool,
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0).
    Close,
    Length(u64),
    /// HEAD, 1xx, 204, 304: the head only.
    Nothing,
}

impl Proto {
    /// 1xx, 204 and 304 responses and answers to HEAD carry no body.
    pub(crate) fn has_body(self, status: u16) -> bool {
        !(self.head_request || bodiless(status))
    }

    /// The framing of a response of `length` (None: not known in advance).
    pub(crate) fn framing(self, status: u16, length: Option<u64>) -> Framing {
        if !self.has_body(status) {
            Framing::Nothing
        } else if let Some(n) = length {
            Framing::Length(n)
        } else if self.http10 {
            Framing::Close
        } else {
            Framing::Chunked
        }
    }

    /// A body of unknown length must be held back until it is whole: an HTTP/1.0 keep-alive
    /// client needs its length up front.
    pub(crate) fn needs_length(self) -> bool {
        self.http10 && self.keep_alive
    }
}

fn bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// The status line and headers for a response of `length` (None: streamed). `close`: the
/// connection ends after this response.
pub(crate) fn head(
    proto: Proto,
    status: u16,
    headers: &[(&str, &str)],
    length: Option<u64>,
    close: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let version = if proto.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let _ = write!(out, "{version} {status} {}\r\n", reason(status));
    for (name, value) in headers.iter().filter(|(n, _)| !is_framing_header(n)) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "Date: {}\r\n", clock::http_date_now());
    if !bodiless(status) {
        match length {
            Some(n) => {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
            None if !proto.http10 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            None => {}
        }
    }
    let close = close || !proto.keep_alive || (proto.http10 && length.is_none() && !bodiless(status));
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if proto.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A response being written piece by piece, each piece sent at once.
pub(crate) struct ResponseWriter {
    status: u16,
    framing: Framing,
    /// Sent together with the first piece of body, so a small response is one packet.
    pending_head: Option<Vec<u8>>,
    /// `needs_length`: the body is held here and sent with its length at the end.
    held: Option<Spool>,
    /// Kept to send the head once the held body's length is known.
    proto: Proto,
    headers: Vec<(String, String)>,
    close: bool,
    sent: u64,
    completion: Option<Completion>,
    body_log: Option<BodyLog>,
    end: Arc<TurnEnd>,
}

/// What `ResponseWriter::start` needs to know.
pub(crate) struct Start<'a> {
    pub(crate) proto: Proto,
    pub(crate) status: u16,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) length: Option<u64>,
    pub(crate) close: bool,
}

/// Bytes held in memory for a response that needs its length; beyond, a temporary file.
const HOLD_MEMORY: usize = 64 * 1024;

impl ResponseWriter {
    pub(crate) fn start(
        s: Start<'_>,
        completion: Option<Completion>,
        body_log: Option<BodyLog>,
        end: Arc<TurnEnd>,
    ) -> ResponseWriter {
        let hold = s.length.is_none() && s.proto.needs_length() && s.proto.has_body(s.status);
        let framing = if hold { Framing::Length(0) } else { s.proto.framing(s.status, s.length) };
        let pending_head = (!hold).then(|| head(s.proto, s.status, s.headers, s.length, s.close));
        ResponseWriter {
            status: s.status,
            framing,
            pending_head,
            held: hold.then(|| Spool::new(HOLD_MEMORY)),
            proto: s.proto,
            headers: if hold {
                s.headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
            } else {
                Vec::new()
            },
            close: s.close,
            sent: 0,
            completion,
            body_log,
            end,
        }
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes written so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    fn socket(&self) -> &super::socket::Socket {
        &self.end.conn().socket
    }

    /// Writes one piece of body (with the head, the first time; an empty piece sends the head
    /// only). A failed write means the client is gone or too slow: its connection is shut down.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() && self.pending_head.is_none() {
            return Ok(());
        }
        if self.framing != Framing::Nothing {
            if let Some(log) = &mut self.body_log {
                log.feed(data);
            }
            self.sent += data.len() as u64;
        }
        if let Some(held) = &mut self.held {
            return held.push(data);
        }
        if self.framing == Framing::Length(self.sent) && !data.is_empty() {
            // These are the body's last bytes: whoever counts the answer does it before the
            // client can have it all (a client that reads its answer, then the metrics, sees
            // its call counted).
            if let Some(c) = self.completion.take() {
                c.complete(self.status);
            }
        }
        let head = self.pending_head.take().unwrap_or_default();
        let result = match self.framing {
            Framing::Nothing => self.socket().send_all(&head),
            Framing::Chunked if !data.is_empty() => {
                let size = format!("{:x}\r\n", data.len());
                self.socket().send_parts(&[&head, size.as_bytes(), data, b"\r\n"])
            }
            Framing::Chunked => self.socket().send_all(&head),
            Framing::Close | Framing::Length(_) => self.socket().send_parts(&[&head, data]),
        };
        self.broken_if(result)
    }

    fn broken_if(&self, result: io::Result<()>) -> io::Result<()> {
        if result.is_err() {
            self.end.abort();
        }
        result
    }

    /// Whether `splice` can be used: a chunked body sent as it comes, not logged.
    pub(crate) fn can_splice(&self) -> bool {
        self.framing == Framing::Chunked && self.held.is_none() && self.body_log.is_none()
    }

    /// Sends the next `n` bytes waiting in the pipe `pipe` as one chunk, moved by the kernel
    /// without passing through our memory. Only when `can_splice`.
    pub(crate) fn splice(&mut self, pipe: RawFd, n: usize) -> io::Result<()> {
        let head = self.pending_head.take().unwrap_or_default();
        let size = format!("{n:x}\r\n");
        self.sent += n as u64;
        let socket = self.socket();
        let result = socket
            .send_parts_more(&[&head, size.as_bytes()])
            .and_then(|()| socket.splice_from(pipe, n, true))
            .and_then(|()| socket.send_all(b"\r\n"));
        self.broken_if(result)
    }

    /// Ends the body (the last chunk, or the held body with its length). Returns the body bytes
    /// sent.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        if let Some(c) = self.completion.take() {
            c.complete(self.status);
        }
        if let Some(mut held) = self.held.take() {
            let head = head(self.proto, self.status, &self.borrowed_headers(), Some(held.len()), self.close);
            let result = send_held(self.socket(), &head, &mut held);
            return self.broken_if(result).map(|()| self.sent);
        }
        self.write(&[])?;
        if self.framing == Framing::Chunked {
            let result = self.socket().send_all(b"0\r\n\r\n");
            self.broken_if(result)?;
        }
        if self.framing == Framing::Close {
            // The end of a close-delimited body is the end of the connection.
            self.end.keep_alive(false);
        }
        Ok(self.sent)
    }

    fn borrowed_headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// Ends the response as broken: the connection is closed without the last chunk (or before
    /// the declared length), so the client cannot take what it got as complete. Returns the
    /// body bytes sent.
    pub(crate) fn abort(mut self) -> u64 {
        if let Some(c) = self.completion.take() {
            c.complete(self.status);
        }
        self.end.abort();
        if self.held.is_some() { 0 } else { self.sent }
    }
}

fn send_held(socket: &super::socket::Socket, head: &[u8], held: &mut Spool) -> io::Result<()> {
    if let Some(body) = held.as_slice() {
        return socket.send_parts(&[head, body]);
    }
    socket.send_all(head)?;
    let mut reader = held.reader()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = io::Read::read(&mut reader, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        socket.send_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V11: Proto = Proto { http10: false, keep_alive: true, head_request: false };

    #[test]
    fn framing_follows_the_request_and_the_status() {
        let table: &[(Proto, u16, Option<u64>, Framing)] = &[
            (V11, 200, Some(5), Framing::Length(5)),
            (V11, 200, None, Framing::Chunked),
            (Proto { http10: true, keep_alive: false, ..V11 }, 200, None, Framing::Close),
            (Proto { head_request: true, ..V11 }, 200, Some(5), Framing::Nothing),
            (V11, 204, None, Framing::Nothing),
            (V11, 304, Some(5), Framing::Nothing),
            (V11, 101, None, Framing::Nothing),
        ];
        for (proto, status, length, want) in table {
            assert_eq!(proto.framing(*status, *length), *want, "{proto:?} {status} {length:?}");
        }
        assert!(Proto { http10: true, keep_alive: true, ..V11 }.needs_length());
        assert!(!Proto { http10: true, keep_alive: false, ..V11 }.needs_length());
    }

    #[test]
    fn heads_carry_our_framing_not_the_callers() {
        let text = |h: Vec<u8>| String::from_utf8(h).expect("ascii");
        let h = text(head(V11, 200, &[("Content-Length", "99"), ("X-A", "b")], Some(3), false));
        assert!(h.starts_with("HTTP/1.1 200 OK\r\nX-A: b\r\nDate: "), "{h}");
        assert!(h.ends_with("Content-Length: 3\r\n\r\n") && !h.contains("99"), "{h}");
        let h = text(head(V11, 200, &[], None, true));
        assert!(h.contains("Transfer-Encoding: chunked\r\n") && h.contains("Connection: close\r\n"), "{h}");
        let h10 = Proto { http10: true, keep_alive: true, ..V11 };
        let h = text(head(h10, 200, &[], Some(2), false));
        assert!(h.starts_with("HTTP/1.0 200 OK") && h.contains("Connection: keep-alive"), "{h}");
        let h = text(head(V11, 304, &[], Some(2), false));
        assert!(!h.contains("Content-Length"), "{h}");
    }
}
