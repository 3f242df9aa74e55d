//! One request and its response, over tiny_http, with every trap of ENGINEERING.md that
//! concerns a single request handled in this one place: bodies are read through a fixed buffer
//! by us, within the request's deadline (traps 1, 3); a request answered before its body was
//! read closes its connection instead of letting tiny_http drain or misparse the rest (traps
//! 1, 2); responses are written by us with our own head and chunking, flushed per piece (traps
//! 6, 8), either through tiny_http's writer or, while the body is still being read, straight on
//! the connection's socket (trap 7, decision D2); bytes are counted here (trap 11).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tiny_http::{HTTPVersion, Request};

use crate::clock;
use crate::connections::{Connections, Turn};
use crate::limiter::Slot;
use crate::logging::BodyLog;
use crate::metrics::Metrics;
use crate::request::{self, Framing, Head, Rejection, RequestInfo};
use crate::sockets::Socket;

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

/// Bookkeeping done just before the last bytes of a function call's response go out: the
/// in-flight place is released and the call counted. Done before rather than after, as Go's
/// server does, so a client that sends its next request the moment it has the answer never
/// finds the place still taken or the counter not yet updated.
struct Completion {
    slot: Option<Slot>,
    metrics: Arc<Metrics>,
    method: String,
    received: Instant,
}

impl Completion {
    fn complete(self, status: u16) {
        drop(self.slot);
        self.metrics.observe(&self.method, status, self.received.elapsed());
    }
}

/// tiny_http drains an unread Content-Length body into one buffer of its remaining size when the
/// request is dropped (trap 1). Our read side is shut first, so the drain ends at once, but
/// its buffer of a huge declared size is mapped for that moment: one at a time (see `alloc`).
static HUGE_DRAIN: Mutex<()> = Mutex::new(());
const HUGE_REMAINDER: u64 = 64 << 20;

/// `read_debug`/`write_debug` never log more than this of one body.
const MAX_BODY_LOG: usize = 64 * 1024;

/// A request being answered.
pub(crate) struct Exchange {
    /// Taken when the request goes back to tiny_http answered; still here when the exchange is
    /// dropped unanswered (an unwind), which lets it go the guarded way (`let_go`).
    req: Option<Request>,
    pub(crate) info: RequestInfo,
    conns: Arc<Connections>,
    body_read: u64,
    body_done: bool,
    /// When the whole body must have arrived (read_timeout from the request's start).
    deadline: Option<Instant>,
    completion: Option<Completion>,
    /// `read_debug`, `write_debug`.
    read_log: Option<BodyLog>,
    write_log: Option<BodyLog>,
}

/// A request refused before its body is read.
pub(crate) struct Refused {
    pub(crate) req: Request,
    pub(crate) rejection: Rejection,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(req) = self.req.take() {
            let_go(req, &self.conns);
        }
    }
}

impl Exchange {
    fn req(&self) -> &Request {
        // Taken only by the methods that consume the exchange.
        self.req.as_ref().expect("the request is here until the exchange is consumed")
    }

    fn req_mut(&mut self) -> &mut Request {
        self.req.as_mut().expect("the request is here until the exchange is consumed")
    }

    fn take_req(&mut self) -> Request {
        self.req.take().expect("the request is taken once")
    }

    /// Validates a request's head (SPEC §3). `read_timeout` (zero: none) bounds its body from
    /// the request's start.
    pub(crate) fn accept(
        turn: Turn,
        conns: &Arc<Connections>,
        read_timeout: std::time::Duration,
    ) -> Result<Exchange, Box<Refused>> {
        let Turn { req, started } = turn;
        let received = Instant::now();
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
                let deadline = (!read_timeout.is_zero()).then(|| started + read_timeout);
                if !info.preloaded {
                    conns.reading_body(info.peer, deadline);
                }
                Ok(Exchange {
                    req: Some(req),
                    info,
                    conns: Arc::clone(conns),
                    body_read: 0,
                    body_done,
                    deadline,
                    completion: None,
                    read_log: None,
                    write_log: None,
                })
            }
            Err(rejection) => Err(Box::new(Refused { req, rejection })),
        }
    }

    /// Makes this exchange a counted function call, holding its in-flight `slot` if admitted
    /// (see `Completion`).
    pub(crate) fn count_as_call(&mut self, slot: Option<Slot>, metrics: Arc<Metrics>) {
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

    /// Counts the call as answered with `status` (a websocket session: 101, when it ends).
    pub(crate) fn complete_as(&mut self, status: u16) {
        self.complete(status);
    }

    /// The rest of the connection after an upgrade request's head, bytes tiny_http already
    /// buffered first (trap 14): the client's side of a websocket session.
    pub(crate) fn upgraded_reader(&mut self) -> &mut dyn std::io::Read {
        self.req_mut().as_reader()
    }

    /// The request headers, in order, as sent.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.req().headers().iter().map(|h| (h.field.as_str().as_str(), h.value.as_str()))
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

    pub(crate) fn connections(&self) -> &Arc<Connections> {
        &self.conns
    }

    /// Declared body bytes not read yet (0 when unknown or done).
    fn remaining(&self) -> u64 {
        match self.info.framing {
            Framing::Length(n) if !self.body_done => n.saturating_sub(self.body_read),
            _ => 0,
        }
    }

    /// Reads the next piece of the body into `buf`; `Ok(0)` once it is complete.
    ///
    /// A body cut short is an error, never an end: for Content-Length by count (trap 3); for
    /// chunked bodies, tiny_http's decoder reports a connection that ends inside a chunk as a
    /// clean end, so the end of a chunked body on a connection the client has closed counts as
    /// cut short (a client that half-closes right after its last chunk is taken for one that
    /// died: HTTP clients wait for the answer with the connection open). The sweeper shuts the
    /// read side at the deadline, which ends a read that waits for a slow client.
    pub(crate) fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        let result = self.read_body_piece(buf);
        if let (Some(log), Ok(n)) = (&mut self.read_log, &result) {
            log.feed(&buf[..*n]);
        }
        if self.body_done || result.is_err() {
            // Logged now: the body is over.
            self.read_log = None;
        }
        result
    }

    /// Logs the first `cap` bytes of the request body (`read`) and of the response body
    /// (`write`), at most `MAX_BODY_LOG`.
    pub(crate) fn log_bodies(&mut self, read: bool, write: bool, cap: usize) {
        let call = format!("{} {}", self.info.method, self.info.uri);
        let cap = cap.min(MAX_BODY_LOG);
        self.read_log = read.then(|| BodyLog::new("request", call.clone(), cap));
        self.write_log = write.then(|| BodyLog::new("response", call, cap));
    }

    fn read_body_piece(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        if self.body_done || buf.is_empty() {
            return Ok(0);
        }
        let late = || self.deadline.is_some_and(|d| Instant::now() >= d);
        if late() {
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
            match self.req_mut().as_reader().read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if self.deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(BodyError::Timeout);
                }
                Err(e) => return Err(BodyError::Io(e)),
            }
        };
        self.body_read += n as u64;
        let truncated = match expected {
            Some(total) if n == 0 && self.body_read < total => true,
            Some(total) if self.body_read >= total => {
                self.body_done = true;
                false
            }
            None if n == 0 => !self.chunked_end_is_real(),
            _ => false,
        };
        if truncated {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(BodyError::Timeout);
            }
            return Err(BodyError::Truncated { read: self.body_read, expected });
        }
        if n == 0 {
            self.body_done = true;
        }
        if self.body_done && !self.info.preloaded {
            self.conns.body_read(self.info.peer);
        }
        Ok(n)
    }

    /// tiny_http's chunked decoder returned end of body: a real last chunk, unless the client
    /// has closed the connection (it died mid-upload). tiny_http shutting the read side after
    /// a `Connection: close` request does not count: the connection stays established.
    fn chunked_end_is_real(&self) -> bool {
        match self.info.peer.and_then(|p| self.conns.socket(p)) {
            Some(socket) => !socket.peer_closed(),
            // Without our own view of the connection, trust the decoder.
            None => true,
        }
    }

    /// Reads and discards the body if that cannot block: it is preloaded by tiny_http, or empty.
    fn discard_preloaded(&mut self) {
        if !self.info.preloaded {
            return;
        }
        let mut buf = [0u8; 1024];
        while !self.body_done {
            if self.read_body(&mut buf).is_err() {
                return;
            }
        }
    }

    /// The request's body will not be read to its end: shut the connection's read side so that
    /// tiny_http neither waits for nor parses the rest, and close it after this response.
    /// Returns false if the connection's socket cannot be found.
    fn stop_reading(&mut self) -> bool {
        self.conns.stop_reading(self.info.peer)
    }

    /// Sends a complete response and returns the body bytes sent. A request whose body has not
    /// been read is answered with `Connection: close`.
    pub(crate) fn respond(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> u64 {
        if let Some(log) = &mut self.write_log {
            log.feed(body);
        }
        self.discard_preloaded();
        self.complete(status);
        let close = !self.body_done;
        if close && !self.stop_reading() {
            return answer_on_the_side(self.take_req(), status, headers, body);
        }
        let proto = Proto::of(&self.info);
        let send_body = proto.has_body(status);
        let mut out = head(proto, status, headers, Some(body.len() as u64), close);
        if send_body {
            out.extend_from_slice(body);
        }
        let remaining = self.remaining();
        let mut w = into_writer(self.take_req(), remaining, &self.conns, self.info.peer);
        match w.write_all(&out).and_then(|()| w.flush()) {
            Ok(()) if send_body => body.len() as u64,
            Ok(()) => 0,
            Err(_) => {
                drop(w);
                self.conns.abort(self.info.peer);
                0
            }
        }
    }

    /// Starts a streamed response through tiny_http's writer. The body must have been read
    /// completely (the writer cannot be taken while it is read, trap 7; see `direct`).
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
        let (framing, head) = self.framed_head(status, headers, length);
        let completion = self.completion.take().map(|c| (c, status));
        let (conns, peer) = (Arc::clone(&self.conns), self.info.peer);
        let mut stream = ResponseStream::new(
            status,
            Sink::Tiny(into_writer(self.take_req(), 0, &conns, peer)),
            framing,
            head,
            completion,
            conns,
            peer,
        );
        stream.body_log = self.write_log.take();
        stream
    }

    /// The response will go straight on the connection's socket, while the request body may
    /// still be read (full duplex, decision D2). Safe because a connection's requests are
    /// answered one at a time (`connections`): no earlier response on it is unfinished. Sends
    /// `100 Continue` first if the client asked for it (tiny_http sends it when the body is
    /// first read; nothing of ours may come before it). HTTP/1.1 clients only. When the
    /// response is done, `release` hands the request back to tiny_http with nothing more
    /// written through it.
    pub(crate) fn direct(&mut self, socket: Arc<Socket>) -> Direct {
        debug_assert!(!self.info.http10, "direct() needs an HTTP/1.1 client");
        let _ = self.req_mut().as_reader();
        Direct {
            socket,
            proto: Proto::of(&self.info),
            completion: self.completion.take(),
            body_log: self.write_log.take(),
            conns: Arc::clone(&self.conns),
            peer: self.info.peer,
        }
    }

    /// After `direct`: the request goes back to tiny_http answered, with nothing written
    /// through it. A body not read to its end closes the connection.
    pub(crate) fn release(mut self) {
        if !self.body_done {
            self.stop_reading();
        }
        let remaining = self.remaining();
        drop(into_writer(self.take_req(), remaining, &self.conns, self.info.peer));
    }

    fn framed_head(&self, status: u16, headers: &[(&str, &str)], length: Option<u64>) -> (Out, Vec<u8>) {
        let proto = Proto::of(&self.info);
        (proto.framing(status, length), head(proto, status, headers, length, false))
    }

    /// HTTP/1.0 keep-alive cannot carry a body of unknown length.
    pub(crate) fn needs_length(&self) -> bool {
        self.info.http10 && self.info.keep_alive
    }
}

/// The request's writer; dropping the request on the way drains its unread body (trap 1),
/// which ends at once because the read side was shut. A declared length beyond `isize::MAX`
/// makes that drain panic ("capacity overflow") before anything is written: then the answer is
/// lost and the connection is closed.
fn into_writer(
    req: Request,
    remaining: u64,
    conns: &Connections,
    peer: Option<SocketAddr>,
) -> Box<dyn Write + Send> {
    let take = move || {
        if remaining >= HUGE_REMAINDER {
            let _one = HUGE_DRAIN.lock().unwrap_or_else(PoisonError::into_inner);
            req.into_writer()
        } else {
            req.into_writer()
        }
    };
    let caught =
        crate::logging::expecting_panic(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(take)));
    match caught {
        Ok(w) => w,
        Err(_) => {
            log::info!("closing the connection of a request whose Content-Length cannot be drained");
            conns.abort(peer);
            Box::new(io::sink())
        }
    }
}

/// A response to be written on the connection's socket (see `Exchange::direct`).
pub(crate) struct Direct {
    socket: Arc<Socket>,
    proto: Proto,
    completion: Option<Completion>,
    body_log: Option<BodyLog>,
    conns: Arc<Connections>,
    peer: Option<SocketAddr>,
}

impl Direct {
    /// Starts a streamed (chunked) response.
    pub(crate) fn stream(self, status: u16, headers: &[(&str, &str)]) -> ResponseStream {
        let framing = self.proto.framing(status, None);
        let head = head(self.proto, status, headers, None, false);
        let completion = self.completion.map(|c| (c, status));
        let mut stream = ResponseStream::new(
            status,
            Sink::Socket(self.socket),
            framing,
            head,
            completion,
            self.conns,
            self.peer,
        );
        stream.body_log = self.body_log;
        stream
    }

    /// A complete response; `close`: the connection ends after it (its request body was not
    /// read to the end). Returns the body bytes sent.
    pub(crate) fn respond(mut self, status: u16, headers: &[(&str, &str)], body: &[u8], close: bool) -> u64 {
        if let Some(log) = &mut self.body_log {
            log.feed(body);
        }
        if let Some(c) = self.completion.take() {
            c.complete(status);
        }
        let send_body = self.proto.has_body(status);
        let mut out = head(self.proto, status, headers, Some(body.len() as u64), close);
        if send_body {
            out.extend_from_slice(body);
        }
        match self.socket.send_all(&out) {
            Ok(()) if send_body => body.len() as u64,
            Ok(()) => 0,
            Err(_) => {
                self.conns.abort(self.peer);
                0
            }
        }
    }
}

/// Refuses a request whose head failed the checks of `request::inspect`. The connection is
/// closed after the answer (as Go does after a 4xx from its parser); when the body's extent is
/// unknown (broken framing), tiny_http would otherwise parse it as the next request (trap 2).
pub(crate) fn refuse(refused: Refused, conns: &Connections) {
    let Refused { req, rejection } = refused;
    let peer = req.remote_addr().copied();
    if let Rejection::AbsurdLength(n) = rejection {
        log::warn!(
            "{}: refusing a request that announced a {n}-byte body",
            peer.map(|p| p.to_string()).unwrap_or_default()
        );
        refuse_undrainable(req, &rejection, conns);
        return;
    }
    let preloaded = rejection != Rejection::HeadersTooLarge
        && !rejection.breaks_framing()
        && req.body_length().is_none_or(|n| n as u64 <= request::PRELOAD_LIMIT);
    let remaining = if preloaded { 0 } else { req.body_length().map_or(0, |n| n as u64) };
    let body = rejection.message();
    // Nothing more is read from this connection, whatever the client sends next.
    if !conns.stop_reading(peer) && !preloaded {
        answer_on_the_side(req, rejection.status(), &[], body.as_bytes());
        return;
    }
    let out = refusal(rejection.status(), &body);
    let mut w = into_writer(req, remaining, conns, peer);
    let _ = w.write_all(out.as_bytes()).and_then(|()| w.flush());
}

/// A whole refusal: a plain-text `body` and the connection closed after it.
fn refusal(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        clock::http_date_now(),
        body.len()
    )
}

/// A request whose declared body no drain could survive (trap 1): beyond `isize::MAX` the
/// drain's buffer cannot even be asked for, and the panic that follows would leak the request's
/// writer if it came while `into_writer` returns (Rust drops the locals of a function whose
/// destructor panics, not its return value), leaving the next request on the connection
/// waiting for it forever. So the answer goes straight on the socket, the connection is shut,
/// and the request is taken apart with `upgrade`, which moves its reader and writer into one
/// struct: dropping that drops the writer even when the reader's drop panics.
fn refuse_undrainable(req: Request, rejection: &Rejection, conns: &Connections) {
    let peer = req.remote_addr().copied();
    let body = rejection.message();
    if let Some(socket) = peer.and_then(|p| conns.socket(p)) {
        let out = refusal(rejection.status(), &body);
        let _ = socket.send_all(out.as_bytes());
    }
    conns.abort(peer);
    // Its answer fails on the shut connection; what matters is the teardown.
    let stream = req.upgrade("close", tiny_http::Response::empty(rejection.status()));
    let _ = crate::logging::expecting_panic(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)))
    });
}

/// The one way to let go of a request nobody answers (its connection was cut, or it waited
/// behind a request that ended its connection). Dropping a tiny_http `Request` answers it with a
/// 500 and drains its unread body into one buffer of the declared size (trap 1): with the
/// connection's read side shut first the drain ends at once, a huge buffer is mapped one at a
/// time, and a size no allocation can have (a `Content-Length` beyond `isize::MAX`) panics inside
/// tiny_http's drop, which is contained here. Without our view of the connection the drain is
/// paced by the client, so it runs on a thread of its own.
pub(crate) fn let_go(req: Request, conns: &Connections) {
    let peer = req.remote_addr().copied();
    let declared = req.body_length().map_or(0, |n| n as u64);
    let undrained = declared > request::PRELOAD_LIMIT;
    if undrained && !conns.stop_reading(peer) {
        let spawned = crate::threads::spawn("fw-drain", move || drop_contained(req, declared)).map(drop);
        if let Err(e) = spawned {
            log::error!("cannot start a thread to let go of a request: {e}");
        }
        return;
    }
    drop_contained(req, declared);
}

fn drop_contained(req: Request, declared: u64) {
    let drop_it = move || {
        if declared >= HUGE_REMAINDER {
            let _one = HUGE_DRAIN.lock().unwrap_or_else(PoisonError::into_inner);
            drop(req);
        } else {
            drop(req);
        }
    };
    let caught =
        crate::logging::expecting_panic(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(drop_it)));
    if caught.is_err() {
        log::info!("let go of a request whose Content-Length cannot be drained");
    }
}

/// Without our own view of the connection (no /proc), a request whose body is unread is
/// answered through tiny_http's `respond`, which writes the answer and then drains the body,
/// paced by the client: on a thread of its own, so no worker waits for it.
fn answer_on_the_side(req: Request, status: u16, headers: &[(&str, &str)], body: &[u8]) -> u64 {
    let mut response = tiny_http::Response::from_data(body.to_vec()).with_status_code(status);
    // Our own Server header keeps tiny_http from adding "tiny-http (Rust)" (trap 8).
    let ours =
        [("Server", "fwatchdog"), ("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")];
    for (name, value) in ours.iter().chain(headers) {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    let len = body.len() as u64;
    let spawned = crate::threads::spawn("fw-drain", move || {
        let remaining = req.body_length().unwrap_or(0) as u64;
        let respond = move || {
            if remaining >= HUGE_REMAINDER {
                let _one = HUGE_DRAIN.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = req.respond(response);
            } else {
                let _ = req.respond(response);
            }
        };
        // The drain after the answer may panic in tiny_http (trap 1); contained like `let_go`.
        let _ = crate::logging::expecting_panic(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(respond))
        });
    });
    if let Err(e) = spawned {
        log::error!("cannot start a thread to finish a request: {e}");
    }
    len
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

/// What of a request decides how its response is framed.
#[derive(Debug, Clone, Copy)]
struct Proto {
    http10: bool,
    keep_alive: bool,
    head_request: bool,
}

impl Proto {
    fn of(info: &RequestInfo) -> Proto {
        Proto { http10: info.http10, keep_alive: info.keep_alive, head_request: info.is_head() }
    }

    /// 1xx, 204 and 304 responses and answers to HEAD carry no body.
    fn has_body(self, status: u16) -> bool {
        !(self.head_request || status < 200 || status == 204 || status == 304)
    }

    fn framing(self, status: u16, length: Option<u64>) -> Out {
        if !self.has_body(status) {
            Out::Nothing
        } else if let Some(n) = length {
            Out::Length(n)
        } else if self.http10 {
            Out::Raw
        } else {
            Out::Chunked
        }
    }
}

/// The status line and headers, with framing chosen for `length` (None: streamed). `close`:
/// the connection ends after this response.
fn head(info: Proto, status: u16, headers: &[(&str, &str)], length: Option<u64>, close: bool) -> Vec<u8> {
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
    let close = close || !info.keep_alive || (info.http10 && length.is_none() && !bodiless_status);
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

/// Where a streamed response goes.
enum Sink {
    /// tiny_http's writer for the request (the request is already consumed).
    Tiny(Box<dyn Write + Send>),
    /// The connection's socket, while tiny_http still holds the request (full duplex).
    Socket(Arc<Socket>),
}

impl Sink {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tiny(w) => w.write_all(data).and_then(|()| w.flush()),
            Sink::Socket(s) => s.send_all(data),
        }
    }
}

/// A response whose body is written piece by piece, each piece flushed to the client.
pub(crate) struct ResponseStream {
    status: u16,
    sink: Sink,
    framing: Out,
    /// Sent together with the first piece of body, so a small response is one packet.
    pending_head: Option<Vec<u8>>,
    sent: u64,
    scratch: Vec<u8>,
    completion: Option<(Completion, u16)>,
    conns: Arc<Connections>,
    peer: Option<SocketAddr>,
    /// `write_debug`.
    body_log: Option<BodyLog>,
}

impl ResponseStream {
    fn new(
        status: u16,
        sink: Sink,
        framing: Out,
        head: Vec<u8>,
        completion: Option<(Completion, u16)>,
        conns: Arc<Connections>,
        peer: Option<SocketAddr>,
    ) -> ResponseStream {
        ResponseStream {
            status,
            sink,
            framing,
            pending_head: Some(head),
            sent: 0,
            scratch: Vec::new(),
            completion,
            conns,
            peer,
            body_log: None,
        }
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes written so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Writes one piece of body (with the head, the first time). A failed write means the
    /// client is gone or too slow: its connection is shut down.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() && self.pending_head.is_none() {
            return Ok(());
        }
        if let Some(log) = self.body_log.as_mut().filter(|_| self.framing != Out::Nothing) {
            log.feed(data);
        }
        if let Sink::Socket(socket) = &self.sink
            && self.framing == Out::Chunked
            && !data.is_empty()
        {
            // Straight from the caller's buffer: no copy to frame the chunk.
            let head = self.pending_head.take().unwrap_or_default();
            let size = format!("{:x}\r\n", data.len());
            self.sent += data.len() as u64;
            let result = socket.send_parts(&[&head, size.as_bytes(), data, b"\r\n"]);
            if result.is_err() {
                self.conns.abort(self.peer);
            }
            return result;
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
        let result = self.sink.write_all(&self.scratch);
        if result.is_err() {
            self.conns.abort(self.peer);
        }
        result
    }

    /// Whether `splice` can be used: a chunked body straight on the socket.
    pub(crate) fn can_splice(&self) -> bool {
        matches!(self.sink, Sink::Socket(_)) && self.framing == Out::Chunked && self.body_log.is_none()
    }

    /// Sends the next `n` bytes waiting in the pipe `pipe` as one chunk, moved by the kernel
    /// without passing through our memory. Only when `can_splice`.
    pub(crate) fn splice(&mut self, pipe: std::os::fd::RawFd, n: usize) -> io::Result<()> {
        let Sink::Socket(socket) = &self.sink else {
            return Err(io::Error::other("splice needs the socket"));
        };
        let head = self.pending_head.take().unwrap_or_default();
        let size = format!("{n:x}\r\n");
        self.sent += n as u64;
        let result = socket
            .send_parts_more(&[&head, size.as_bytes()])
            .and_then(|()| socket.splice_from(pipe, n, true))
            .and_then(|()| socket.send_all(b"\r\n"));
        if result.is_err() {
            self.conns.abort(self.peer);
        }
        result
    }

    /// Ends the body (the last chunk) and flushes. Returns the body bytes sent.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        if let Some((c, status)) = self.completion.take() {
            c.complete(status);
        }
        self.write(&[])?;
        if self.framing == Out::Chunked {
            let result = self.sink.write_all(b"0\r\n\r\n");
            if result.is_err() {
                self.conns.abort(self.peer);
            }
            result?;
        }
        Ok(self.sent)
    }

    /// Ends the response as broken: the connection is closed without the last chunk (or before
    /// the declared length), so the client cannot take what it got as complete. Returns the body
    /// bytes sent.
    pub(crate) fn abort(mut self) -> u64 {
        if let Some((c, status)) = self.completion.take() {
            c.complete(status);
        }
        self.conns.abort(self.peer);
        self.sent
    }
}

/// `X-Duration-Seconds` for a call that started at `since`.
pub(crate) fn duration_header(since: Instant) -> String {
    crate::duration::seconds_f6(since.elapsed())
}
