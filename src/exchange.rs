//! One request and its response, over tiny_http, with every trap of ENGINEERING.md handled in
//! this one place: bodies are read through a fixed buffer by us (trap 1), short bodies are
//! errors (trap 3), responses are written by us through `into_writer` with our own head and
//! chunking, flushed per piece (traps 6 and 8), and bytes are counted here (trap 11).

use std::io::{self, Write};
use std::time::Instant;

use tiny_http::{HTTPVersion, Request};

use crate::clock;
use crate::limiter::Slot;
use crate::metrics::Metrics;
use crate::request::{self, Framing, Head, Rejection, RequestInfo};

/// Why reading a request body failed. All are the client's fault.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// `read_timeout` passed, for the whole body or for one read.
    Timeout,
    /// The connection ended before Content-Length bytes arrived.
    Truncated { read: u64, expected: u64 },
    /// The connection failed, or the chunked encoding is invalid.
    Io(io::Error),
}

impl BodyError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            BodyError::Timeout => 408,
            _ => 400,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            BodyError::Timeout => "request body not received within read_timeout".into(),
            BodyError::Truncated { read, expected } => {
                format!("request body ended after {read} of {expected} bytes")
            }
            BodyError::Io(e) => format!("reading the request body failed: {e}"),
        }
    }
}

/// Bookkeeping done just before the last bytes of a function call's response go out: the
/// in-flight place is released and the call counted. Done before rather than after, as Go's
/// server does, so a client that sends its next request the moment it has the answer never
/// finds the place still taken or the counter not yet updated.
struct Completion {
    slot: Option<Slot>,
    metrics: std::sync::Arc<Metrics>,
    method: String,
    received: Instant,
}

impl Completion {
    fn complete(self, status: u16) {
        drop(self.slot);
        self.metrics.observe(&self.method, status, self.received.elapsed());
    }
}

/// A request being answered.
pub(crate) struct Exchange {
    req: Request,
    pub(crate) info: RequestInfo,
    body_read: u64,
    body_done: bool,
    completion: Option<Completion>,
}

/// What `Exchange::accept` hands back for a request that must be refused before any reading.
pub(crate) struct Refused {
    pub(crate) req: Request,
    pub(crate) rejection: Rejection,
}

impl Exchange {
    /// Validates a request's head (SPEC §3).
    pub(crate) fn accept(req: Request, received: Instant) -> Result<Exchange, Box<Refused>> {
        let result = {
            let head = Head {
                method: req.method().as_str(),
                target: req.url(),
                http10: *req.http_version() == HTTPVersion(1, 0),
                headers: req
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
                    .collect(),
                body_length: req.body_length().map(|n| n as u64),
                peer: req.remote_addr().copied(),
            };
            request::inspect(&head, received)
        };
        match result {
            Ok(info) => {
                let body_done = info.framing == Framing::Empty;
                Ok(Exchange { req, info, body_read: 0, body_done, completion: None })
            }
            Err(rejection) => Err(Box::new(Refused { req, rejection })),
        }
    }

    /// Makes this exchange a counted function call, holding its in-flight `slot` if admitted
    /// (see `Completion`).
    pub(crate) fn count_as_call(&mut self, slot: Option<Slot>, metrics: std::sync::Arc<Metrics>) {
        self.completion = Some(Completion {
            slot,
            metrics,
            method: self.info.method.clone(),
            received: self.info.received,
        });
    }

    fn complete(&mut self, status: u16) {
        if let Some(c) = self.completion.take() {
            c.complete(status);
        }
    }

    /// The request headers, in order, as sent.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.req.headers().iter().map(|h| (h.field.as_str().as_str(), h.value.as_str()))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    pub(crate) fn body_done(&self) -> bool {
        self.body_done
    }

    pub(crate) fn body_read(&self) -> u64 {
        self.body_read
    }

    /// Reads the next piece of the body into `buf`; `Ok(0)` once it is complete.
    ///
    /// `deadline` bounds the whole body; each read is also bounded by the socket's
    /// `SO_RCVTIMEO` (read_timeout), so a stalled client is noticed within about twice
    /// read_timeout. A slow but steady trickle is only bounded by the deadline between reads.
    pub(crate) fn read_body(
        &mut self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<usize, BodyError> {
        if self.body_done || buf.is_empty() {
            return Ok(0);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(BodyError::Timeout);
        }
        let expected = match self.info.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let want = match expected {
            Some(n) => buf.len().min((n - self.body_read).min(usize::MAX as u64) as usize),
            None => buf.len(),
        };
        let n = loop {
            match self.req.as_reader().read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(BodyError::Timeout);
                }
                Err(e) => return Err(BodyError::Io(e)),
            }
        };
        self.body_read += n as u64;
        match expected {
            Some(total) if n == 0 && self.body_read < total => {
                return Err(BodyError::Truncated { read: self.body_read, expected: total });
            }
            Some(total) if self.body_read >= total => self.body_done = true,
            _ if n == 0 => self.body_done = true,
            _ => {}
        }
        Ok(n)
    }

    /// Reads and discards the body if that cannot block: it is preloaded by tiny_http, or empty.
    fn discard_preloaded(&mut self) {
        if !self.info.preloaded {
            return;
        }
        let mut buf = [0u8; 1024];
        while !self.body_done {
            if self.read_body(&mut buf, None).is_err() {
                return;
            }
        }
    }

    /// Sends a complete response and returns the body bytes sent.
    ///
    /// If the request body has not been read, tiny_http would read and discard the rest of it
    /// before answering (trap 1), paced by the client; then the answer is written by a
    /// short-lived thread of its own so no worker waits for a slow or huge upload.
    pub(crate) fn respond(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> u64 {
        self.discard_preloaded();
        self.complete(status);
        if !self.body_done {
            return abandon(self.req, status, headers, body);
        }
        let send_body = has_body(&self.info, status);
        let mut out = head(&self.info, status, headers, Some(body.len() as u64));
        if send_body {
            out.extend_from_slice(body);
        }
        let mut w = self.req.into_writer();
        match w.write_all(&out).and_then(|()| w.flush()) {
            Ok(()) if send_body => body.len() as u64,
            _ => 0,
        }
    }

    /// Starts a streamed response. The body must have been read completely (tiny_http cannot
    /// write a response while the request body is still being read, trap 7).
    ///
    /// `length`: the body's exact size when known; otherwise the body is chunked (HTTP/1.1) or
    /// delimited by closing the connection (HTTP/1.0 without keep-alive). For an HTTP/1.0
    /// keep-alive client the caller must know the length (`needs_length`).
    pub(crate) fn stream(
        mut self,
        status: u16,
        headers: &[(&str, &str)],
        length: Option<u64>,
    ) -> ResponseStream {
        debug_assert!(self.body_done, "stream() before the request body was read");
        let framing = if !has_body(&self.info, status) {
            Out::Nothing
        } else if let Some(n) = length {
            Out::Length(n)
        } else if self.info.http10 {
            Out::Raw
        } else {
            Out::Chunked
        };
        let head = head(&self.info, status, headers, length);
        let completion = self.completion.take().map(|c| (c, status));
        ResponseStream {
            w: self.req.into_writer(),
            framing,
            pending_head: Some(head),
            sent: 0,
            scratch: Vec::new(),
            completion,
        }
    }

    /// HTTP/1.0 keep-alive cannot carry a body of unknown length.
    pub(crate) fn needs_length(&self) -> bool {
        self.info.http10 && self.info.keep_alive
    }
}

/// Refuses a request whose head failed the checks of `request::inspect`.
pub(crate) fn refuse(refused: Refused, port: u16) {
    let Refused { req, rejection } = refused;
    let peer = req.remote_addr().copied();
    if let Rejection::AbsurdLength(n) = rejection {
        // Any answer makes tiny_http drain the body into one allocation of its declared size
        // (trap 1), which no process survives at this size. Close the connection and leave the
        // request alone: this costs one parked tiny_http thread per such request, not the process.
        log::warn!("closing a connection that announced a {n}-byte body");
        if let Some(peer) = peer {
            crate::sockets::shutdown_connection(port, peer, libc::SHUT_RDWR);
        }
        std::mem::forget(req);
        return;
    }
    if rejection.breaks_framing()
        && let Some(peer) = peer
    {
        // tiny_http would otherwise parse the body as the next request (trap 2).
        crate::sockets::shutdown_connection(port, peer, libc::SHUT_RD);
    }
    let body = rejection.message();
    let preloaded = req.body_length().is_none_or(|n| n as u64 <= request::PRELOAD_LIMIT);
    if preloaded || rejection.breaks_framing() {
        let _ = req.respond(tiny_response(rejection.status(), &[("Connection", "close")], body.as_bytes()));
    } else {
        abandon(req, rejection.status(), &[], body.as_bytes());
    }
}

/// Answers through tiny_http's own `respond`, which writes the response first and then drains
/// the unread body, on a thread of its own (the drain is paced by the client).
fn abandon(req: Request, status: u16, headers: &[(&str, &str)], body: &[u8]) -> u64 {
    let response = tiny_response(status, headers, body);
    let len = body.len() as u64;
    let spawned = std::thread::Builder::new().name("fw-drain".into()).spawn(move || {
        let _ = req.respond(response);
    });
    if let Err(e) = spawned {
        log::error!("cannot start a thread to finish a request: {e}");
    }
    len
}

fn tiny_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let mut response = tiny_http::Response::from_data(body.to_vec()).with_status_code(status);
    // Our own Server header keeps tiny_http from adding "tiny-http (Rust)" (trap 8).
    let server = [("Server", "fwatchdog"), ("Content-Type", "text/plain; charset=utf-8")];
    for (name, value) in server.iter().chain(headers) {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    response
}

/// 1xx, 204 and 304 responses and answers to HEAD carry no body.
fn has_body(info: &RequestInfo, status: u16) -> bool {
    !(info.is_head() || status < 200 || status == 204 || status == 304)
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        418 => "I'm a teapot",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Headers we set ourselves whatever a caller passes (framing and connection management).
fn is_framing_header(name: &str) -> bool {
    ["Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Date"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The status line and headers, with framing chosen for `length` (None: streamed).
fn head(info: &RequestInfo, status: u16, headers: &[(&str, &str)], length: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let version = if info.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let _ = write!(out, "{version} {status} {}\r\n", reason(status));
    for (name, value) in headers.iter().filter(|(n, _)| !is_framing_header(n)) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "Date: {}\r\n", clock::http_date_now());
    let bodiless_status = status < 200 || status == 204 || status == 304;
    if !bodiless_status {
        match length {
            Some(n) => {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
            None if !info.http10 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            None => {}
        }
    }
    let close = !info.keep_alive || (info.http10 && length.is_none() && !bodiless_status);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if info.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Chunked,
    /// Close-delimited (HTTP/1.0).
    Raw,
    Length(u64),
    /// HEAD, 204, 304: the head only.
    Nothing,
}

/// A response whose body is written piece by piece, each piece flushed to the client.
pub(crate) struct ResponseStream {
    w: Box<dyn Write + Send>,
    framing: Out,
    /// Sent together with the first piece of body, so a small response is one packet.
    pending_head: Option<Vec<u8>>,
    sent: u64,
    scratch: Vec<u8>,
    completion: Option<(Completion, u16)>,
}

impl ResponseStream {
    /// Body bytes written so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() && self.pending_head.is_none() {
            return Ok(());
        }
        self.scratch.clear();
        if let Some(head) = self.pending_head.take() {
            self.scratch.extend_from_slice(&head);
        }
        match self.framing {
            Out::Nothing => {}
            Out::Chunked if data.is_empty() => {}
            Out::Chunked => {
                let _ = write!(self.scratch, "{:x}\r\n", data.len());
                self.scratch.extend_from_slice(data);
                self.scratch.extend_from_slice(b"\r\n");
            }
            Out::Raw | Out::Length(_) => self.scratch.extend_from_slice(data),
        }
        if self.framing != Out::Nothing {
            self.sent += data.len() as u64;
        }
        self.w.write_all(&self.scratch)?;
        self.w.flush()
    }

    /// Ends the body (the last chunk) and flushes. Returns the body bytes sent.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        if let Some((c, status)) = self.completion.take() {
            c.complete(status);
        }
        self.write(&[])?;
        if self.framing == Out::Chunked {
            self.w.write_all(b"0\r\n\r\n")?;
        }
        self.w.flush()?;
        Ok(self.sent)
    }
}

/// `X-Duration-Seconds` for a call that started at `since`.
pub(crate) fn duration_header(since: Instant) -> String {
    crate::duration::seconds_f6(since.elapsed())
}
