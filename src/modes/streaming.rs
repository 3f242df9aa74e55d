//! streaming mode (SPEC §4): one process per request; the body flows into its stdin while it
//! arrives and its stdout flows to the client as it is produced.
//!
//! Three ways, by how the body arrives:
//! - **Full duplex** (a body still to come over the network, HTTP/1.1): the response is written
//!   straight on the connection's socket (decision D2) from the function's first output on,
//!   while a helper thread feeds the body to stdin. Nothing is buffered beyond one read.
//! - **Body already here** (empty, or ≤ 1 KiB read by tiny_http with the head): it goes to
//!   stdin at once and the response goes through tiny_http's writer.
//! - **Spooled** (HTTP/1.0 clients, or no view of the connection because /proc is missing):
//!   tiny_http cannot answer before the body is read (ENGINEERING.md trap 7), so output is
//!   held in a spool (64 KiB in memory, the rest in an unlinked temporary file) until then.
//!
//! The status (200) goes out with the first byte of output; a function that fails before
//! writing anything gets a 500 with a one-line reason. A failure after output started is
//! logged; a function killed by a signal it did not get from us (a crash) ends the stream
//! without its last chunk, so the client can tell the body is incomplete. A non-zero exit or
//! exec_timeout after output ends it normally (SPEC §4: "a failure can only end the stream").

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::cgi_response::{self, Head};
use crate::child_io::{self, Feed, Next};
use crate::exchange::{BodyError, Direct, Exchange, ResponseStream};
use crate::process::Kill;
use crate::sockets::Socket;
use crate::spool::Spool;
use crate::watchdog::Watchdog;

use super::IoBuffer;
use super::fork::{self, Call, Ended};
use super::{Handler, Outcome};

const SPOOL_MEMORY: usize = 64 * 1024;

pub(crate) struct Streaming;

impl Handler for Streaming {
    fn handle(&self, ex: Exchange, wd: &Watchdog) -> Outcome {
        let call = match fork::start(&ex, wd) {
            Ok(call) => call,
            Err(e) => return fork::spawn_failed(ex, wd, &e, &[]),
        };
        let mut buf = IoBuffer::take();
        if !ex.info.preloaded
            && !ex.info.http10
            && let Some(socket) = ex.info.peer.and_then(|p| wd.connections.socket(p))
        {
            return full_duplex(ex, call, socket, wd, &mut buf);
        }
        spooled(ex, call, wd, &mut buf)
    }
}

/// The response, before and after its first byte, on the connection's socket.
enum Duplex {
    Pending(Direct),
    Started(ResponseStream),
    /// The client went away mid-response.
    Gone(Outcome),
}

fn full_duplex(
    mut ex: Exchange,
    mut call: Call,
    socket: Arc<Socket>,
    wd: &Watchdog,
    buf: &mut [u8],
) -> Outcome {
    let own = [("Content-Type", wd.config.content_type.as_str())];
    let (done_rx, done_tx) = match child_io::done_signal() {
        Ok(pair) => pair,
        Err(e) => {
            call.f.group.kill(Kill::Cleanup);
            fork::end(call, wd, buf);
            return super::text(ex, 500, &format!("cannot set up the call: {e}\n"), &[]);
        }
    };
    let mut reply = Duplex::Pending(ex.direct(socket));
    let stdin = call.f.stdin.take();
    call.io.watch_input(done_rx);
    // Output goes from the function's pipe into the socket by splice, not through our memory.
    call.io.leave_stdout_in_pipe();
    // A body streams through: wider pipes mean a quarter of the wake-ups, for the function
    // and for us (pipe pages are only taken while data sits in them).
    child_io::widen(stdin.as_ref().map(|s| s.as_raw_fd()));
    child_io::widen(call.io.stdout_fd());
    let (peer, conns) = (ex.info.peer, Arc::clone(ex.connections()));
    let (respond_by, ends_at, pid) = (call.respond_by, call.ends_at, call.f.pid());
    let group = Arc::clone(&call.f.group);
    let io = &mut call.io;
    let mut late = false;
    let mut input_done = false;
    let feed = Feed::default();
    let fed = std::thread::scope(|s| {
        let feeder =
            crate::threads::spawn_scoped(s, || child_io::feed_body(&mut ex, stdin, &group, done_tx, &feed));
        loop {
            let respond = if matches!(reply, Duplex::Pending(_)) && !late { respond_by } else { None };
            let deadline = earliest(respond, ends_at);
            match io.next(buf, deadline) {
                Ok(Next::Stdout(n)) => {
                    let current = begin(std::mem::replace(&mut reply, GONE), io.cgi_head(), &own);
                    reply = emit(current, Output::Bytes(&buf[..n]), &group);
                }
                Ok(Next::HeadDone) => {
                    // The function's status and headers go out now, before its body.
                    let current = begin(std::mem::replace(&mut reply, GONE), io.cgi_head(), &own);
                    reply = emit(current, Output::Bytes(&[]), &group);
                }
                Ok(Next::StdoutReady(n)) => {
                    let current = std::mem::replace(&mut reply, GONE);
                    match io.stdout_fd() {
                        Some(fd) => {
                            let current = begin(current, io.cgi_head(), &own);
                            reply = emit(current, Output::Pipe(fd, n), &group);
                        }
                        None => reply = current,
                    }
                    if matches!(reply, Duplex::Gone(_)) {
                        io.close_stdout();
                    }
                }
                Ok(Next::InputDone) => input_done = true,
                Ok(Next::StdoutEnd) | Err(_) => break,
                Ok(Next::Deadline) if ends_at.is_some_and(|t| std::time::Instant::now() >= t) => {
                    // exec_timeout: the group is killed by the deadline thread; stop waiting for
                    // output even if a descendant that left the group still holds stdout.
                    group.kill(Kill::ExecTimeout);
                    io.close_stdout();
                    break;
                }
                Ok(Next::Deadline) => {
                    late = true;
                    group.kill(Kill::WriteTimeout);
                }
            }
        }
        if !input_done {
            // Output is over; the function may still be reading its input.
            io.wait_exit(pid, buf);
            if !feed.complete() {
                // It is gone without having read all of it: the rest is not waited for, and
                // the connection closes after the response.
                feed.stop();
                conns.stop_reading(peer);
            }
        }
        feeder.join()
    });
    let client_error = match fed {
        Ok(Ok(_)) => None,
        Ok(Err((e, stdin))) => {
            // Killed before its stdin closes: it never sees a truncated body as complete.
            call.f.group.kill(Kill::ClientBody);
            drop(stdin);
            Some(e)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let limit = call.limit;
    let ended = fork::end(call, wd, buf);
    let close = !ex.body_done();
    let label = format!("{} {}", ex.info.method, ex.info.uri);
    let outcome = match reply {
        Duplex::Started(stream) => finish_stream(stream, &ended, limit, client_error.as_ref(), &label),
        Duplex::Gone(outcome) => outcome,
        Duplex::Pending(direct) => {
            let (status, msg) = if let Some(e) = &client_error {
                log::info!("{label}: {}", e.message());
                (e.status(), format!("{}\n", e.message()))
            } else if ended.killed_for == Some(Kill::WriteTimeout) {
                (504, fork::write_timeout_message(&wd.config))
            } else if let Some(reason) = ended.refused_head() {
                (502, fork::malformed_head(&ex.info, reason))
            } else if ended.timed_out() || !ended.status.success() {
                (500, format!("{}\n", fork::failure(&ended, limit)))
            } else {
                // No output at all (a header block always starts the response).
                (200, String::new())
            };
            let text = [("Content-Type", "text/plain; charset=utf-8")];
            let headers: &[(&str, &str)] = if status == 200 { &own } else { &text };
            let bytes = direct.respond(status, headers, msg.as_bytes(), close);
            Outcome { status, bytes }
        }
    };
    ex.release();
    outcome
}

fn earliest(a: Option<std::time::Instant>, b: Option<std::time::Instant>) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A piece of the function's output: in our buffer, or still in its pipe.
enum Output<'a> {
    Bytes(&'a [u8]),
    Pipe(std::os::fd::RawFd, usize),
}

const GONE: Duplex = Duplex::Gone(Outcome { status: 200, bytes: 0 });

/// Starts the response if it has not started: with the function's CGI head, if any.
fn begin(reply: Duplex, head: Option<&Head>, own: &[(&str, &str)]) -> Duplex {
    match reply {
        Duplex::Pending(direct) => {
            let (status, headers) = cgi_response::response(head, own);
            Duplex::Started(direct.stream(status, &headers))
        }
        other => other,
    }
}

/// Sends one piece of output on a started response (an empty piece sends the head only).
fn emit(reply: Duplex, data: Output<'_>, group: &crate::process::ProcessGroup) -> Duplex {
    let Duplex::Started(mut stream) = reply else {
        return reply;
    };
    let sent = match data {
        Output::Bytes(bytes) => stream.write(bytes),
        Output::Pipe(fd, n) if stream.can_splice() => stream.splice(fd, n),
        Output::Pipe(fd, n) => {
            // No splice (no body on this response, a HEAD request; or the body is logged): take
            // the output out of the pipe and write it (a HEAD response drops it).
            let mut scratch = vec![0u8; n.min(64 * 1024)];
            // SAFETY: reading into a valid buffer from a pipe we own.
            let got = unsafe { libc::read(fd, scratch.as_mut_ptr().cast(), scratch.len()) };
            stream.write(&scratch[..usize::try_from(got).unwrap_or(0)])
        }
    };
    if sent.is_err() {
        // The client stopped reading: the output has nowhere to go.
        group.kill(Kill::ClientGone);
        return Duplex::Gone(abort(stream));
    }
    Duplex::Started(stream)
}

/// Ends a response that has started. It ends normally when the function ended it, also with
/// a non-zero exit (logged); it is cut, without its end, when the watchdog ended it early
/// (exec_timeout, write_timeout, the request body broke off, the client stopped reading) or the
/// function crashed, so the client cannot take what it got as complete.
fn finish_stream(
    stream: ResponseStream,
    ended: &Ended,
    limit: Option<std::time::Duration>,
    client_error: Option<&BodyError>,
    label: &str,
) -> Outcome {
    let why = if let Some(e) = client_error {
        Some(e.message())
    } else if ended.killed_for.is_some() || ended.crashed() {
        Some(fork::failure(ended, limit))
    } else {
        None
    };
    if let Some(why) = why {
        log::warn!("{label}: response cut after {} bytes: {why}", stream.sent());
        return abort(stream);
    }
    if !ended.status.success() {
        log::warn!("{label}: function failed after its response started: {}", fork::failure(ended, limit));
    }
    let (status, sent) = (stream.status(), stream.sent());
    Outcome { status, bytes: stream.finish().unwrap_or(sent) }
}

/// Ends a started response as broken (see `ResponseStream::abort`).
fn abort(stream: ResponseStream) -> Outcome {
    let status = stream.status();
    Outcome { status, bytes: stream.abort() }
}

/// The response, before and after its first byte, through tiny_http's writer. One per call, on
/// the worker's stack: boxing the pending exchange would only add an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Reply {
    Pending(Exchange),
    Started(ResponseStream),
    /// The client went away mid-response.
    Gone(Outcome),
}

struct Progress {
    /// The response could not start by write_timeout; the function was killed.
    late: bool,
    spool_failed: Option<std::io::Error>,
}

/// The body is already here, or output must wait for the whole body (spool).
fn spooled(mut ex: Exchange, mut call: Call, wd: &Watchdog, buf: &mut [u8]) -> Outcome {
    let mut spool = Spool::new(SPOOL_MEMORY);
    let mut state = Progress { late: false, spool_failed: None };

    if let Err(e) = feed(&mut ex, &mut call, &mut spool, buf, &mut state) {
        call.f.group.kill(Kill::ClientBody);
        fork::end(call, wd, buf);
        log::info!("{} {}: {}", ex.info.method, ex.info.uri, e.message());
        return super::text(ex, e.status(), &format!("{}\n", e.message()), &[]);
    }

    let own = [("Content-Type", wd.config.content_type.as_str())];
    let buffer_all = ex.needs_length();
    let label = format!("{} {}", ex.info.method, ex.info.uri);
    let mut reply = Reply::Pending(ex);
    if (!spool.is_empty() || call.io.cgi_head().is_some())
        && !buffer_all
        && call.io.stdout_open()
        && !state.late
        && state.spool_failed.is_none()
    {
        reply = start(reply, call.io.cgi_head(), &own);
        if let Reply::Started(stream) = &mut reply
            && super::copy_spool(&mut spool, stream).and_then(|()| stream.write(&[])).is_err()
        {
            reply = gone(reply, &mut call);
        }
        // Sent: its memory goes back now, not when a long response ends.
        spool = Spool::new(0);
    }
    while call.io.stdout_open() {
        let waiting = matches!(reply, Reply::Pending(_)) && !state.late;
        let deadline = earliest(if waiting { call.respond_by } else { None }, call.ends_at);
        match call.io.next(buf, deadline) {
            Ok(Next::Stdout(n)) if buffer_all || state.late || state.spool_failed.is_some() => {
                if buffer_all
                    && !state.late
                    && state.spool_failed.is_none()
                    && let Err(e) = spool.push(&buf[..n])
                {
                    state.spool_failed = Some(e);
                    call.f.group.kill(Kill::Cleanup);
                }
            }
            Ok(first @ (Next::Stdout(_) | Next::HeadDone))
                if matches!(reply, Reply::Pending(_))
                    && !buffer_all
                    && !state.late
                    && state.spool_failed.is_none() =>
            {
                // The first output (or a complete CGI head): take whatever else is already
                // there, without waiting. If that includes the end, the answer goes out whole,
                // with a Content-Length, in one write.
                let n = if let Next::Stdout(n) = first { n } else { 0 };
                if let Err(e) = gather(&mut call, &mut spool, buf, n) {
                    state.spool_failed = Some(e);
                    call.f.group.kill(Kill::Cleanup);
                    continue;
                }
                if call.io.stdout_open() {
                    reply = start(reply, call.io.cgi_head(), &own);
                    if let Reply::Started(stream) = &mut reply
                        && super::copy_spool(&mut spool, stream).and_then(|()| stream.write(&[])).is_err()
                    {
                        reply = gone(reply, &mut call);
                    }
                    spool = Spool::new(0);
                }
            }
            Ok(Next::Stdout(n)) => {
                if let Reply::Started(stream) = &mut reply
                    && stream.write(&buf[..n]).is_err()
                {
                    reply = gone(reply, &mut call);
                }
            }
            Ok(Next::StdoutEnd) | Err(_) => break,
            Ok(Next::InputDone | Next::StdoutReady(_) | Next::HeadDone) => {}
            Ok(Next::Deadline) if call.ends_at.is_some_and(|t| std::time::Instant::now() >= t) => {
                call.f.group.kill(Kill::ExecTimeout);
                call.io.close_stdout();
            }
            Ok(Next::Deadline) => {
                state.late = true;
                call.f.group.kill(Kill::WriteTimeout);
            }
        }
    }
    let limit = call.limit;
    let ended = fork::end(call, wd, buf);
    match reply {
        Reply::Started(stream) => finish_stream(stream, &ended, limit, None, &label),
        Reply::Gone(outcome) => outcome,
        Reply::Pending(ex) => {
            let (status, headers) = cgi_response::response(ended.head.as_ref(), &own);
            if ended.killed_for == Some(Kill::WriteTimeout) {
                super::text(ex, 504, &fork::write_timeout_message(&wd.config), &[])
            } else if let Some(reason) = ended.refused_head() {
                let msg = fork::malformed_head(&ex.info, reason);
                super::text(ex, 502, &msg, &[])
            } else if let Some(e) = state.spool_failed {
                super::text(ex, 500, &format!("cannot buffer the function's output: {e}\n"), &[])
            } else if !spool.is_empty() {
                super::send_spool(ex, status, &headers, &mut spool)
            } else if ended.timed_out() || !ended.status.success() {
                super::text(ex, 500, &format!("{}\n", fork::failure(&ended, limit)), &[])
            } else {
                let bytes = ex.respond(status, &headers, b"");
                Outcome { status, bytes }
            }
        }
    }
}

/// The request body phase: the body goes to stdin, stdout to the spool.
fn feed(
    ex: &mut Exchange,
    call: &mut Call,
    spool: &mut Spool,
    buf: &mut [u8],
    state: &mut Progress,
) -> Result<(), BodyError> {
    let stdin = call.f.stdin.take();
    if ex.info.preloaded {
        // At most 1 KiB, already in memory: reading never blocks and the pipe takes it whole.
        let mut body = Vec::new();
        loop {
            let n = ex.read_body(buf)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&body);
        }
        return Ok(());
    }
    let (done_rx, done_tx) = match child_io::done_signal() {
        Ok(pair) => pair,
        Err(e) => return Err(BodyError::Io(e)),
    };
    call.io.watch_input(done_rx);
    let respond_by = call.respond_by;
    let group = std::sync::Arc::clone(&call.f.group);
    let io = &mut call.io;
    let feed = Feed::default();
    let fed = std::thread::scope(|s| {
        let feeder =
            crate::threads::spawn_scoped(s, || child_io::feed_body(ex, stdin, &group, done_tx, &feed));
        loop {
            let deadline = if state.late { None } else { respond_by };
            match io.next(buf, deadline) {
                Ok(Next::Stdout(n)) => {
                    if state.spool_failed.is_none()
                        && let Err(e) = spool.push(&buf[..n])
                    {
                        state.spool_failed = Some(e);
                        group.kill(Kill::Cleanup);
                    }
                }
                Ok(Next::StdoutEnd | Next::StdoutReady(_) | Next::HeadDone) => {}
                Ok(Next::InputDone) | Err(_) => break,
                Ok(Next::Deadline) => {
                    state.late = true;
                    group.kill(Kill::WriteTimeout);
                }
            }
        }
        feeder.join()
    });
    match fed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, stdin))) => {
            // Killed before its stdin closes: it never sees a truncated body as complete.
            group.kill(Kill::ClientBody);
            drop(stdin);
            Err(e)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Puts `n` bytes of output from `buf` into the (empty) spool, then whatever output is
/// available right now, up to the spool's memory size.
fn gather(call: &mut Call, spool: &mut Spool, buf: &mut [u8], n: usize) -> std::io::Result<()> {
    spool.push(&buf[..n])?;
    while spool.len() < SPOOL_MEMORY as u64 {
        match call.io.next(buf, Some(std::time::Instant::now())) {
            Ok(Next::Stdout(m)) => spool.push(&buf[..m])?,
            Ok(Next::InputDone | Next::StdoutReady(_) | Next::HeadDone) => {}
            Ok(Next::StdoutEnd | Next::Deadline) | Err(_) => break,
        }
    }
    Ok(())
}

/// Starts the response: with the function's CGI head, if any.
fn start(reply: Reply, head: Option<&Head>, own: &[(&str, &str)]) -> Reply {
    match reply {
        Reply::Pending(ex) => {
            let (status, headers) = cgi_response::response(head, own);
            Reply::Started(ex.stream(status, &headers, None))
        }
        other => other,
    }
}

/// The client stopped reading: the output has nowhere to go, so the function is stopped.
fn gone(reply: Reply, call: &mut Call) -> Reply {
    call.f.group.kill(Kill::ClientGone);
    match reply {
        Reply::Started(stream) => Reply::Gone(abort(stream)),
        other => other,
    }
}
