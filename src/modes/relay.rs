//! One call relayed to the upstream, over a kept-alive connection, spoken with ureq-proto (the
//! HTTP/1.1 state machine at the core of ureq) on our own sockets.
//!
//! A call costs what HTTP costs: the request head, and its body when it is small, in one write;
//! the answer read as it comes. A kept connection is checked with one non-blocking peek before
//! it is used (the upstream may have closed it while it waited). There are no per-call socket
//! timeouts: the call's deadline (exec_timeout, X-Timeout, write_timeout for the answer's head)
//! shuts its connection down (`Cutoff`), which ends whatever read or write the call is blocked
//! in. A kept connection that fails before any byte of the answer came is tried once more on a
//! fresh one when the request can be sent again safely, as Go's transport does: an idempotent
//! method whose body (if any) is still in hand.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq_proto::BodyMode;
use ureq_proto::client::state::{RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult, SendRequestResult};
use ureq_proto::http;

use crate::deadlines::{DeadlineGuard, Deadlines, Expire};

/// Room for the request head and a body small enough to go out with it.
const OUTPUT: usize = 16 * 1024;
/// Room for the answer's head; grown up to `MAX_ANSWER_HEAD` for an answer with huge headers.
const INPUT: usize = 16 * 1024;
const MAX_ANSWER_HEAD: usize = 1 << 20;
/// A connect to the upstream that takes longer than this fails (a local upstream accepts or
/// refuses at once).
const CONNECT: Duration = Duration::from_secs(10);

/// The kept-alive connections to the upstream.
pub(crate) struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
    keep: usize,
    connect: Duration,
}

/// The request, as it goes to the upstream.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a str,
    /// The upstream's path prefix and the client's target, in origin form.
    pub(crate) target: &'a str,
    /// The end-to-end headers to relay; framing headers are the relay's.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: Body<'a>,
}

pub(crate) enum Body<'a> {
    /// No body and no framing header.
    None,
    /// A body in hand, sent with its Content-Length (`Content-Length: 0` when empty).
    Bytes(&'a [u8]),
    /// A body of known length, streamed.
    Sized(u64, &'a mut dyn Read),
    /// A body of unknown length, streamed chunked.
    Chunked(&'a mut dyn Read),
}

impl Body<'_> {
    fn in_hand(&self) -> bool {
        matches!(self, Body::None | Body::Bytes(_))
    }
}

/// Why a call failed before the upstream's answer started.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection to the upstream (refused, or the connect failed).
    Connect(io::Error),
    /// The call's deadline passed.
    TimedOut,
    /// The client's body could not be read (the caller knows why).
    ClientBody,
    /// The request cannot be written as HTTP/1.1 (a target or header the protocol refuses).
    Request(String),
    /// The connection failed, or the upstream's answer was not HTTP.
    Upstream(String),
}

/// The upstream's answer: its head, and its body to read.
pub(crate) struct Answer<'p> {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: AnswerBody<'p>,
}

/// A call's deadline on its connection (see the module note).
struct Cutoff {
    fd: RawFd,
    expired: AtomicBool,
}

impl Expire for Cutoff {
    fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        // SAFETY: the descriptor is open: the connection is closed or pooled only after the
        // deadline is removed, which waits for this call (see `deadlines::Expire`).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }
}

/// A connection in use, with its deadline (dropped first: see `Cutoff`).
struct Held {
    deadline: Option<(DeadlineGuard, Arc<Cutoff>)>,
    stream: TcpStream,
    reused: bool,
    /// Whether the connection may carry another call after this one: not after a chunked
    /// body, which upstreams that do not read chunked bodies (Python's http.server, many small
    /// servers) answer as if it were empty, then take what follows for a request of its own
    /// and answer or close it, unasked, a moment later, while the connection waits in the pool.
    keep: bool,
}

impl Held {
    fn expired(&self) -> bool {
        self.deadline.as_ref().is_some_and(|(_, c)| c.expired.load(Ordering::Acquire))
    }

    /// Ends the deadline; the connection goes back to the pool if it can carry another call.
    fn release(mut self, pool: &Pool, reusable: bool) {
        let expired = self.expired();
        self.deadline = None;
        if reusable && !expired && self.keep {
            pool.put(self.stream);
        }
    }

    fn error(&self, e: io::Error) -> Failure {
        if self.expired() { Failure::TimedOut } else { Failure::Upstream(e.to_string()) }
    }
}

/// A step of a call failed before any answer byte: whether trying again may help.
enum Attempt<T> {
    Done(T),
    Failed(Failure),
    /// A kept connection failed before the upstream said anything (it had closed it).
    Stale(Failure),
}

impl Pool {
    pub(crate) fn new(addr: SocketAddr, keep: usize) -> Pool {
        Pool { addr, idle: Mutex::new(Vec::new()), keep, connect: CONNECT }
    }

    /// A connect that takes longer than `limit` fails (jwt_auth's GETs of the issuer).
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn connect_timeout(mut self, limit: Duration) -> Pool {
        self.connect = limit;
        self
    }

    /// A kept connection the upstream has not closed, or a new one.
    fn take(&self, fresh: bool) -> io::Result<(TcpStream, bool)> {
        if !fresh {
            loop {
                let kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
                match kept {
                    Some(s) if still_open(&s) => return Ok((s, true)),
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let s = TcpStream::connect_timeout(&self.addr, self.connect)?;
        s.set_nodelay(true)?;
        Ok((s, false))
    }

    fn put(&self, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep {
            idle.push(s);
        }
    }

    /// Relays `req` and returns the answer's head. The call ends at `limits.ends_at`, and
    /// earlier if the answer's head has not come by `limits.head_by`.
    pub(crate) fn call<'p>(
        &'p self,
        req: &mut Outgoing<'_>,
        deadlines: &Arc<Deadlines>,
        limits: Limits,
    ) -> Result<Answer<'p>, Failure> {
        let retry = replayable(req);
        let mut fresh = false;
        loop {
            let first = limits.first();
            if first.is_some_and(|t| t <= Instant::now()) {
                return Err(Failure::TimedOut);
            }
            let (stream, reused) = self.take(fresh).map_err(Failure::Connect)?;
            let deadline = first.map(|at| cut_at(deadlines, at, &stream));
            let keep = !matches!(req.body, Body::Chunked(_));
            let held = Held { deadline, stream, reused, keep };
            match self.attempt(req, held, deadlines, limits) {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Failed(f) => return Err(f),
                Attempt::Stale(f) if !retry || fresh => return Err(f),
                Attempt::Stale(_) => fresh = true,
            }
        }
    }

    fn attempt<'p>(
        &'p self,
        req: &mut Outgoing<'_>,
        mut held: Held,
        deadlines: &Arc<Deadlines>,
        limits: Limits,
    ) -> Attempt<Answer<'p>> {
        let call = match prepare(req, self.addr) {
            Ok(call) => call,
            Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
        };
        let call = match send(req, call, &mut held) {
            Attempt::Done(call) => call,
            Attempt::Failed(f) => return Attempt::Failed(f),
            Attempt::Stale(f) => return Attempt::Stale(f),
        };
        receive(call, held, self, deadlines, limits)
    }
}

/// A call's time limits.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    /// When the whole call ends (exec_timeout, X-Timeout).
    pub(crate) ends_at: Option<Instant>,
    /// When the answer's head must have come (write_timeout).
    pub(crate) head_by: Option<Instant>,
}

impl Limits {
    fn first(&self) -> Option<Instant> {
        match (self.ends_at, self.head_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn cut_at(deadlines: &Arc<Deadlines>, at: Instant, stream: &TcpStream) -> (DeadlineGuard, Arc<Cutoff>) {
    let cutoff = Arc::new(Cutoff { fd: stream.as_raw_fd(), expired: AtomicBool::new(false) });
    (deadlines.schedule(at, &cutoff), cutoff)
}

/// GET, HEAD, OPTIONS and TRACE can be sent again (RFC 9110 §9.2.1), as Go's transport does,
/// when their body (if any) is in hand.
fn replayable(req: &Outgoing<'_>) -> bool {
    let safe = matches!(req.method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
        || req.headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("idempotency-key") || k.eq_ignore_ascii_case("x-idempotency-key")
        });
    safe && req.body.in_hand()
}

/// A kept connection is usable if nothing waits to be read on it: the upstream neither closed it
/// (the read would end) nor sent anything unasked.
fn still_open(s: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a valid buffer; the descriptor is open (we own the stream).
    let n = unsafe {
        libc::recv(s.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

fn prepare(req: &Outgoing<'_>, addr: SocketAddr) -> Result<Call<ureq_proto::client::state::Prepare>, String> {
    let uri = format!("http://{addr}{}", req.target);
    let mut builder = http::Request::builder().method(req.method).uri(uri.as_str());
    for (name, value) in req.headers {
        // A name or value the protocol crate refuses is skipped, not fatal for the call.
        if let (Ok(n), Ok(v)) =
            (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_bytes(value.as_bytes()))
        {
            builder = builder.header(n, v);
        }
    }
    builder = match &req.body {
        Body::None => builder,
        Body::Bytes(b) => builder.header("content-length", b.len()),
        Body::Sized(n, _) => builder.header("content-length", *n),
        Body::Chunked(_) => builder.header("transfer-encoding", "chunked"),
    };
    let request = builder.body(()).map_err(|e| format!("invalid request: {e}"))?;
    let mut call = Call::new(request).map_err(|e| e.to_string())?;
    call.allow_non_standard_methods(true);
    Ok(call)
}

/// Writes the request: the head and, when they fit, a body in hand or the first of a streamed
/// one, in one write.
fn send(
    req: &mut Outgoing<'_>,
    call: Call<ureq_proto::client::state::Prepare>,
    held: &mut Held,
) -> Attempt<Call<RecvResponse>> {
    let head_room: usize = req.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
        + req.target.len()
        + req.method.len()
        + 128;
    let mut out = vec![0u8; OUTPUT.max(head_room + OUTPUT / 2)];
    let mut call = call.proceed();
    let mut used = 0;
    while !call.can_proceed() {
        match call.write(&mut out[used..]) {
            Ok(0) => return Attempt::Failed(Failure::Request("the request head does not fit".into())),
            Ok(n) => used += n,
            Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
        }
    }
    let next = match call.proceed() {
        Ok(Some(next)) => next,
        Ok(None) => return Attempt::Failed(Failure::Request("the request head was not written".into())),
        Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
    };
    let mut body_call = match next {
        SendRequestResult::RecvResponse(call) => {
            return match write_all(held, &out[..used], true) {
                Ok(()) => Attempt::Done(call),
                Err(f) => f,
            };
        }
        SendRequestResult::SendBody(call) => call,
        // The relay never sends `Expect`.
        SendRequestResult::Await100(call) => match call.proceed() {
            Ok(ureq_proto::client::Await100Result::SendBody(call)) => call,
            Ok(ureq_proto::client::Await100Result::RecvResponse(call)) => {
                return match write_all(held, &out[..used], true) {
                    Ok(()) => Attempt::Done(call),
                    Err(f) => f,
                };
            }
            Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
        },
    };
    let mut first = true;
    match &mut req.body {
        Body::None => {}
        Body::Bytes(bytes) => {
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                match body_call.write(rest, &mut out[used..]) {
                    Ok((taken, written)) => {
                        rest = &rest[taken..];
                        used += written;
                    }
                    Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
                }
                if !rest.is_empty() {
                    if let Err(f) = write_all(held, &out[..used], first) {
                        return f;
                    }
                    (first, used) = (false, 0);
                }
            }
        }
        Body::Sized(_, reader) | Body::Chunked(reader) => {
            let mut input = vec![0u8; OUTPUT];
            while !body_call.can_proceed() {
                // Room for a piece once framed, and for the last chunk after it.
                let room =
                    body_call.calculate_max_input((out.len() - used).saturating_sub(16)).min(input.len());
                if room == 0 {
                    if let Err(f) = write_all(held, &out[..used], first) {
                        return f;
                    }
                    (first, used) = (false, 0);
                    continue;
                }
                let n = match reader.read(&mut input[..room]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Attempt::Failed(Failure::ClientBody),
                };
                if n == 0 && !body_call.is_chunked() {
                    // A sized body that ended short: the client's reader knows why.
                    return Attempt::Failed(Failure::ClientBody);
                }
                // An empty piece ends a chunked body.
                match body_call.write(&input[..n], &mut out[used..]) {
                    Ok((_, written)) => used += written,
                    Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
                }
                if used >= out.len() / 2 && !body_call.can_proceed() {
                    if let Err(f) = write_all(held, &out[..used], first) {
                        return f;
                    }
                    (first, used) = (false, 0);
                }
            }
        }
    }
    if !body_call.can_proceed() {
        // A body in hand, or none, ends with an empty piece (the last chunk, if chunked).
        match body_call.write(&[], &mut out[used..]) {
            Ok((_, written)) => used += written,
            Err(e) => return Attempt::Failed(Failure::Request(e.to_string())),
        }
    }
    if used > 0
        && let Err(f) = write_all(held, &out[..used], first)
    {
        return f;
    }
    match body_call.proceed() {
        Some(call) => Attempt::Done(call),
        None => Attempt::Failed(Failure::Request("the request body was not complete".into())),
    }
}

/// Writes `bytes`; a failure of the first write on a kept connection may mean the upstream
/// had closed it.
fn write_all<T>(held: &mut Held, bytes: &[u8], first: bool) -> Result<(), Attempt<T>> {
    match held.stream.write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) => {
            let f = held.error(e);
            Err(if first && held.reused && !held.expired() { Attempt::Stale(f) } else { Attempt::Failed(f) })
        }
    }
}

fn receive<'p>(
    mut call: Call<RecvResponse>,
    mut held: Held,
    pool: &'p Pool,
    deadlines: &Arc<Deadlines>,
    limits: Limits,
) -> Attempt<Answer<'p>> {
    let mut input = vec![0u8; INPUT];
    let mut filled = 0;
    let (used, response) = loop {
        if filled == input.len() {
            if input.len() >= MAX_ANSWER_HEAD {
                return Attempt::Failed(Failure::Upstream("the answer's head is larger than 1 MiB".into()));
            }
            input.resize(input.len() * 2, 0);
        }
        let n = match (&held.stream).read(&mut input[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let f = held.error(e);
                return if filled == 0 && held.reused && !held.expired() {
                    Attempt::Stale(f)
                } else {
                    Attempt::Failed(f)
                };
            }
        };
        if n == 0 {
            if held.expired() {
                return Attempt::Failed(Failure::TimedOut);
            }
            let f = Failure::Upstream("the upstream closed the connection before answering".into());
            return if filled == 0 && held.reused { Attempt::Stale(f) } else { Attempt::Failed(f) };
        }
        filled += n;
        match call.try_response(&input[..filled], false) {
            Ok((used, Some(response))) => break (used, response),
            Ok((used, None)) => {
                // An informational answer (100, 103) consumed: keep what follows.
                if used > 0 {
                    input.copy_within(used..filled, 0);
                    filled -= used;
                }
            }
            Err(e) => return Attempt::Failed(Failure::Upstream(format!("invalid answer: {e}"))),
        }
    };
    if limits.first() != limits.ends_at {
        // The head came in time: from now on only the call's own end counts.
        if held.expired() {
            return Attempt::Failed(Failure::TimedOut);
        }
        held.deadline = limits.ends_at.map(|at| cut_at(deadlines, at, &held.stream));
    }
    let (parts, ()) = response.into_parts();
    let status = parts.status.as_u16();
    let state = match call.proceed() {
        Some(RecvResponseResult::RecvBody(body)) => State::Body(body),
        Some(RecvResponseResult::Redirect(r)) => State::Done(!r.must_close_connection()),
        Some(RecvResponseResult::Cleanup(c)) => State::Done(!c.must_close_connection()),
        None => return Attempt::Failed(Failure::Upstream("incomplete answer head".into())),
    };
    let mut body = AnswerBody { state, held: Some(held), input, start: used, end: filled, pool };
    body.finish_if_done();
    Attempt::Done(Answer { status, headers: parts.headers, body })
}

// One per call, held in place for the call's length: boxing the large variant would only add
// an allocation per call.
#[allow(clippy::large_enum_variant)]
enum State {
    Body(Call<RecvBody>),
    /// The answer is complete; whether the connection may carry another call.
    Done(bool),
    Finished,
}

/// The answer's body, decoded (chunked framing removed) as it is read.
pub(crate) struct AnswerBody<'p> {
    state: State,
    held: Option<Held>,
    input: Vec<u8>,
    start: usize,
    end: usize,
    pool: &'p Pool,
}

impl AnswerBody<'_> {
    /// Whether the body's end is marked by the connection's end (no length, not chunked).
    pub(crate) fn length(&self) -> Option<u64> {
        match &self.state {
            State::Body(call) => match call.body_mode() {
                BodyMode::LengthDelimited(n) => Some(n),
                BodyMode::NoBody => Some(0),
                _ => None,
            },
            _ => Some(0),
        }
    }

    /// A complete answer gives its connection back: to the pool when it can carry another call
    /// and nothing unasked followed the answer.
    fn finish_if_done(&mut self) {
        if let State::Done(reusable) = self.state {
            self.state = State::Finished;
            if let Some(held) = self.held.take() {
                held.release(self.pool, reusable && self.start == self.end);
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        let timed_out = self.held.as_ref().is_some_and(Held::expired);
        self.state = State::Finished;
        self.held = None;
        if timed_out { io::Error::new(io::ErrorKind::TimedOut, "exec_timeout") } else { e }
    }
}

impl Read for AnswerBody<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let State::Body(call) = &mut self.state else { return Ok(0) };
            let close_delimited = call.body_mode() == BodyMode::CloseDelimited;
            if self.start < self.end {
                let (taken, written) = match call.read(&self.input[self.start..self.end], out) {
                    Ok(v) => v,
                    Err(e) => return Err(self.fail(io::Error::other(format!("invalid answer body: {e}")))),
                };
                let ended = call.can_proceed() && !close_delimited;
                self.start += taken;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                if ended {
                    self.body_ended();
                }
                if written > 0 || ended {
                    return Ok(written);
                }
                if taken > 0 {
                    continue;
                }
            }
            if self.start > 0 {
                // Keep the part of a piece (a chunk's size line) that came without the rest.
                self.input.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end == self.input.len() {
                let e = io::Error::other("invalid answer body: a chunk size line without its end");
                return Err(self.fail(e));
            }
            let Some(held) = self.held.as_ref() else { return Ok(0) };
            let n = match (&held.stream).read(&mut self.input[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(e)),
            };
            if n == 0 {
                if close_delimited && !held.expired() {
                    // The end of a close-delimited body.
                    self.state = State::Done(false);
                    self.finish_if_done();
                    return Ok(0);
                }
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection mid-answer",
                );
                return Err(self.fail(e));
            }
            self.end += n;
        }
    }
}

impl AnswerBody<'_> {
    /// The body came whole: its connection may carry the next call.
    fn body_ended(&mut self) {
        let State::Body(call) = std::mem::replace(&mut self.state, State::Finished) else { return };
        let reusable = match call.proceed() {
            Some(RecvBodyResult::Cleanup(c)) => !c.must_close_connection(),
            Some(RecvBodyResult::Redirect(r)) => !r.must_close_connection(),
            None => false,
        };
        self.state = State::Done(reusable);
        self.finish_if_done();
    }
}

impl Drop for AnswerBody<'_> {
    fn drop(&mut self) {
        // An answer not read to its end leaves its connection unusable.
        if let Some(held) = self.held.take() {
            let _ = held.stream.shutdown(Shutdown::Both);
            held.release(self.pool, false);
        }
    }
}
