//! One request and its answer: what the rest of the watchdog is given. A mode reads the body
//! (`read_body`) and writes the answer (`respond`, or `start` and then a `ResponseWriter`), or
//! does both at once after `split`; the door decides how the answer reaches the client.
//!
//! A request's turn on its connection ends when both its body reader and its answer are done
//! (`TurnEnd`): the request goes back to tiny_http answered, with nothing written through it,
//! and the connection's next request, if one waits, is served.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tiny_http::{HTTPVersion, Request};

use crate::logging::BodyLog;

use super::refusal::Refused;
use super::registry::Turn;
use super::request::{self, Framing, Head, RequestInfo};
use super::response::{Proto, ResponseWriter, Start};
use super::turn::{Completion, TurnEnd};

/// Why reading a request body failed. All are the client's fault.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// `read_timeout` passed before the whole body arrived.
    Timeout,
    /// The connection ended before the body did (`expected`: its Content-Length, if any).
    Truncated { read: u64, expected: Option<u64> },
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
            BodyError::Truncated { read, expected: Some(expected) } => {
                format!("request body ended after {read} of {expected} bytes")
            }
            BodyError::Truncated { read, expected: None } => {
                format!("request body ended after {read} bytes, inside a chunk or before the last one")
            }
            BodyError::Io(e) => format!("reading the request body failed: {e}"),
        }
    }
}

/// `read_debug`/`write_debug` never log more than this of one body.
const MAX_BODY_LOG: usize = 64 * 1024;

/// Reads a request body through tiny_http's reader, within the request's deadline, and never
/// takes a body cut short for a complete one.
pub(crate) struct BodyReader {
    req: Option<Request>,
    /// The request's place on its connection (see `Conn::body_complete`).
    seq: u64,
    framing: Framing,
    preloaded: bool,
    read: u64,
    done: bool,
    /// When the whole body must have arrived (read_timeout from the request's start).
    deadline: Option<Instant>,
    log: Option<BodyLog>,
    end: Arc<TurnEnd>,
}

impl BodyReader {
    fn req(&mut self) -> &mut Request {
        // Taken only when the reader is dropped.
        self.req.as_mut().expect("the request is here while its body reader lives")
    }

    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Body bytes read so far.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Declared body bytes not read yet (0 when unknown or done).
    fn unread(&self) -> u64 {
        match self.framing {
            Framing::Length(n) if !self.done => n.saturating_sub(self.read),
            _ => 0,
        }
    }

    /// Reads the next piece of the body into `buf`; `Ok(0)` once it is complete.
    ///
    /// A body cut short is an error, never an end: a Content-Length body by count; a chunked
    /// body by the scan of what tiny_http received (its decoder takes a connection that ends
    /// inside a chunk for the end of the body). At the body's deadline the connection's read
    /// side is shut (`timer`), which ends a read that waits for a slow client.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        let result = self.read_piece(buf);
        if let (Some(log), Ok(n)) = (&mut self.log, &result) {
            log.feed(&buf[..*n]);
        }
        if self.done || result.is_err() {
            // Logged now: the body is over.
            self.log = None;
        }
        result
    }

    fn read_piece(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let late = |deadline: Option<Instant>| deadline.is_some_and(|d| Instant::now() >= d);
        if late(self.deadline) {
            return Err(BodyError::Timeout);
        }
        let expected = match self.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let want = match expected {
            Some(n) => buf.len().min(usize::try_from(n - self.read).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = loop {
            match io::Read::read(self.req().as_reader(), &mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if late(self.deadline) => return Err(BodyError::Timeout),
                Err(e) => return Err(BodyError::Io(e)),
            }
        };
        self.read += n as u64;
        let truncated = match expected {
            Some(total) if n == 0 && self.read < total => true,
            Some(total) if self.read >= total => {
                self.done = true;
                false
            }
            None if n == 0 => !self.end.conn.body_complete(self.seq),
            _ => false,
        };
        if truncated {
            if late(self.deadline) {
                return Err(BodyError::Timeout);
            }
            return Err(BodyError::Truncated { read: self.read, expected });
        }
        if n == 0 {
            self.done = true;
        }
        if self.done && !self.preloaded {
            self.end.conn.body_read();
        }
        Ok(n)
    }

    /// Reads and drops the body if that cannot block: it is already in memory, or empty.
    fn discard_preloaded(&mut self) {
        if !self.preloaded {
            return;
        }
        let mut buf = [0u8; 1024];
        while !self.done {
            if self.read(&mut buf).is_err() {
                return;
            }
        }
    }
}

/// Stops the reading of a body from another thread than the one reading it (the function is
/// done with its input: the rest is not waited for, and the connection closes after the answer).
pub(crate) struct Stopper(Arc<super::registry::Conn>);

impl Stopper {
    pub(crate) fn stop(&self) {
        self.0.stop_reading();
    }
}

impl BodyReader {
    pub(crate) fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.end.conn))
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        if !self.done {
            // Not read to its end: tiny_http must neither wait for the rest nor read it as the
            // next request, and the connection ends after the answer.
            self.end.keep_alive(false);
            self.end.conn.stop_reading();
        }
        let unread = self.unread();
        if let Some(req) = self.req.take() {
            *self.end.req.lock().unwrap_or_else(PoisonError::into_inner) = Some((req, unread, !self.done));
        }
    }
}

/// The answer side of a request.
pub(crate) struct Responder {
    proto: Proto,
    completion: Option<Completion>,
    log: Option<BodyLog>,
    end: Arc<TurnEnd>,
}

impl Responder {
    /// Starts an answer whose body follows (`length`: its exact size, if known; otherwise it is
    /// chunked, or close-delimited for HTTP/1.0, or held and sent with its length for an HTTP/1.0
    /// keep-alive client). `close`: the connection ends after it.
    fn start(
        self,
        status: u16,
        headers: &[(&str, &str)],
        length: Option<u64>,
        close: bool,
    ) -> ResponseWriter {
        let Responder { proto, completion, log, end } = self;
        if close {
            end.keep_alive(false);
        }
        ResponseWriter::start(Start { proto, status, headers, length, close }, completion, log, end)
    }

    /// A whole answer. Returns the body bytes sent.
    fn respond(self, status: u16, headers: &[(&str, &str)], body: &[u8], close: bool) -> u64 {
        let mut w = self.start(status, headers, Some(body.len() as u64), close);
        match w.write(body) {
            Ok(()) => w.finish().unwrap_or(0),
            Err(_) => w.abort(),
        }
    }
}

/// A request being answered.
pub(crate) struct Exchange {
    pub(crate) info: RequestInfo,
    body: BodyReader,
    responder: Responder,
    /// Request headers set by the watchdog, in place of the client's of the same name.
    replaced: Vec<(&'static str, String)>,
}

impl Exchange {
    /// Checks a request's head (`request::inspect`). `read_timeout` (zero: none) bounds its body
    /// from the request's start.
    pub(crate) fn accept(turn: Turn, read_timeout: Duration) -> Result<Exchange, Box<Refused>> {
        let received = Instant::now();
        let result = {
            let req = turn.req();
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
            };
            request::inspect(&head, received)
        };
        let info = match result {
            Ok(info) => info,
            Err(rejection) => return Err(Box::new(Refused { turn, rejection })),
        };
        let seq = turn.seq();
        let (req, conn, started) = turn.into_parts();
        let deadline = (!read_timeout.is_zero()).then(|| started + read_timeout);
        if !info.preloaded {
            conn.reading_body(deadline);
        }
        let end = Arc::new(TurnEnd { conn, req: Mutex::new(None), keep: AtomicBool::new(info.keep_alive) });
        let proto = Proto { http10: info.http10, keep_alive: info.keep_alive, head_request: info.is_head() };
        Ok(Exchange {
            body: BodyReader {
                req: Some(req),
                seq,
                framing: info.framing,
                preloaded: info.preloaded,
                read: 0,
                done: info.framing == Framing::Empty,
                deadline,
                log: None,
                end: Arc::clone(&end),
            },
            responder: Responder { proto, completion: None, log: None, end },
            replaced: Vec::new(),
            info,
        })
    }

    /// The request headers, in order, as sent, then those the watchdog set (`set_header`).
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let req = self.body.req.as_ref();
        let replaced = &self.replaced;
        req.into_iter()
            .flat_map(|r| r.headers().iter().map(|h| (h.field.as_str().as_str(), h.value.as_str())))
            .filter(move |(k, _)| !replaced.iter().any(|(name, _)| name.eq_ignore_ascii_case(k)))
            .chain(replaced.iter().map(|(name, value)| (*name, value.as_str())))
    }

    /// Sets a request header for whoever handles the call, replacing the client's (jwt_auth's
    /// `X-Auth-Seconds`).
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn set_header(&mut self, name: &'static str, value: String) {
        self.replaced.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.replaced.push((name, value));
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Runs `f` just before the last bytes of the answer go out (see `Completion`).
    pub(crate) fn on_last_bytes(&mut self, f: impl FnOnce(u16) + Send + 'static) {
        self.responder.completion = Some(Completion(Box::new(f)));
    }

    /// Logs the first `cap` bytes of the request body (`read`) and of the answer's body
    /// (`write`), at most `MAX_BODY_LOG`.
    pub(crate) fn log_bodies(&mut self, read: bool, write: bool, cap: usize) {
        let call = format!("{} {}", self.info.method, self.info.uri);
        let cap = cap.min(MAX_BODY_LOG);
        self.body.log = read.then(|| BodyLog::new("request", call.clone(), cap));
        self.responder.log = write.then(|| BodyLog::new("response", call, cap));
    }

    pub(crate) fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        self.body.read(buf)
    }

    pub(crate) fn body_done(&self) -> bool {
        self.body.done()
    }

    /// A body of unknown length is held back and sent whole for this client (HTTP/1.0
    /// keep-alive); the caller may prefer to read the whole output first.
    pub(crate) fn needs_length(&self) -> bool {
        self.responder.proto.needs_length()
    }

    /// Keeps the request's turn from ending while the value lives, even once the body and the
    /// answer are done.
    pub(super) fn hold_turn(&self) -> Arc<TurnEnd> {
        Arc::clone(&self.responder.end)
    }

    /// A whole answer. A body not read by now is not read at all: the connection closes after
    /// the answer. Returns the body bytes sent.
    pub(crate) fn respond(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> u64 {
        self.body.discard_preloaded();
        let close = !self.body.done;
        if close {
            self.body.end.conn.stop_reading();
        }
        let Exchange { body: reader, responder, .. } = self;
        drop(reader);
        responder.respond(status, headers, body, close)
    }

    /// Starts an answer whose body follows (see `Responder::start`). A body not read by now is
    /// not read at all.
    pub(crate) fn start(
        mut self,
        status: u16,
        headers: &[(&str, &str)],
        length: Option<u64>,
    ) -> ResponseWriter {
        self.body.discard_preloaded();
        let close = !self.body.done;
        let Exchange { body: reader, responder, .. } = self;
        drop(reader);
        responder.start(status, headers, length, close)
    }

    /// The body reader and the answer apart, to read the one while writing the other (full
    /// duplex). The client's `100 Continue`, if it asked for one, goes out first.
    pub(crate) fn split(mut self) -> (BodyReader, Answer) {
        // tiny_http sends 100 Continue when the body is first asked for; nothing of ours may
        // come before it.
        let _ = self.body.req().as_reader();
        let Exchange { body, responder, .. } = self;
        (body, Answer { responder })
    }

    /// The rest of the connection after an upgrade request, once the upgrade is agreed: the
    /// client's side of a websocket session. tiny_http hands it out as the request's body,
    /// bytes it already buffered first.
    pub(crate) fn into_upgraded(mut self) -> Upgraded {
        self.body.end.conn.upgraded();
        self.body.done = true;
        self.body.end.keep_alive(false);
        let Exchange { body, responder, .. } = self;
        Upgraded { body, completion: responder.completion }
    }
}

/// The answer side of a split exchange (see `Exchange::split`).
pub(crate) struct Answer {
    responder: Responder,
}

impl Answer {
    /// Whether the answer's body could be spliced into the connection from a pipe (a chunked
    /// body, not logged).
    pub(crate) fn can_splice(&self) -> bool {
        let p = self.responder.proto;
        !p.http10 && !p.head_request && self.responder.log.is_none()
    }

    /// Starts the answer; the connection stays open only if the body is read to its end.
    pub(crate) fn start(self, status: u16, headers: &[(&str, &str)]) -> ResponseWriter {
        self.responder.start(status, headers, None, false)
    }

    /// A whole answer. `close`: the connection ends after it (its body was not read to the end).
    pub(crate) fn respond(self, status: u16, headers: &[(&str, &str)], body: &[u8], close: bool) -> u64 {
        self.responder.respond(status, headers, body, close)
    }
}

/// A relayed websocket's client side.
pub(crate) struct Upgraded {
    body: BodyReader,
    completion: Option<Completion>,
}

impl Upgraded {
    /// Bytes from the client.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self.body.req().as_reader(), buf)
    }

    /// The way to the client, usable while this side is being read.
    pub(crate) fn client_side(&self) -> ClientSide {
        ClientSide(Arc::clone(&self.body.end.conn))
    }

    /// Counts the session as answered with `status` (101, when it ends).
    pub(crate) fn complete(&mut self, status: u16) {
        if let Some(c) = self.completion.take() {
            c.complete(status);
        }
    }
}

/// Writes to a relayed websocket's client, on our descriptor of the connection.
pub(crate) struct ClientSide(Arc<super::registry::Conn>);

impl ClientSide {
    pub(crate) fn send(&self, data: &[u8]) -> io::Result<()> {
        self.0.socket.send_all(data)
    }

    /// Ends the session both ways.
    pub(crate) fn shutdown(&self) {
        self.0.socket.shutdown(libc::SHUT_RDWR);
    }
}
