//! streaming mode: one process per request; the body flows into its stdin while it arrives and
//! its stdout flows to the client as it is produced, both at once (the answer can start before
//! the body has arrived; a function like `cat` echoes a body of any size in bounded memory).
//!
//! A body still on its way is fed to stdin by a helper thread while this thread relays stdout;
//! its output is spliced from the function's pipe into the connection, never passing through
//! our memory. A small body that came with the head goes to stdin at once, and output is read
//! instead: the first output and whatever follows at once are gathered, so a small answer goes
//! out whole, with a Content-Length, in one write.
//!
//! The status (200, or the function's with `cgi_response`) goes out with the first byte of
//! output; a function that fails before writing anything gets a 500 with a one-line reason
//! (logged). After output started, an answer the watchdog ends early (write_timeout, the body
//! broke off, the client stopped reading) or a function that crashed ends without its last
//! chunk, so the client can tell the body is incomplete. exec_timeout is the time limit the
//! operator set: the output written so far is the answer, ended normally; so is the answer of a
//! function that exits non-zero after its output. Both are logged.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::cgi_response::{self, Head};
use crate::child_io::{self, Feed, Next};
use crate::http_server::{Answer, BodyError, BodyReader, Exchange, ResponseWriter};
use crate::io_buffer::IoBuffer;
use crate::process::Kill;

use super::fork::{self, Call, Ended};
use super::handler::{Context, Handler, Outcome};

/// Output gathered before the answer starts, at most.
const GATHER: usize = 64 * 1024;

pub(crate) struct Streaming;

impl Handler for Streaming {
    fn handle(&self, ex: Exchange, ctx: &Context) -> Outcome {
        let mut call = match fork::start(&ex, ctx) {
            Ok(call) => call,
            Err(e) => return fork::spawn_failed(ex, ctx, &e, &[]),
        };
        let label = format!("{} {}", ex.info.method, ex.info.uri);
        let preloaded = ex.info.preloaded;
        let (mut body, answer) = ex.split();
        let mut buf = IoBuffer::take();
        let mut reply = Reply::Pending(answer);
        let own = [("Content-Type", ctx.config.content_type.as_str())];
        let stdin = call.f.stdin.take();
        let (fed, late) = if preloaded {
            // At most 1 KiB, already in memory: reading never blocks and the pipe takes it whole.
            let fed = feed_at_once(&mut body, stdin, &mut buf);
            let relayed = relay(&mut call, &mut reply, &own, &mut buf, false);
            (fed.map_err(|e| (e, None)), relayed.late)
        } else {
            let splice = reply.can_splice_later();
            match child_io::done_signal() {
                Ok((done_rx, done_tx)) => stream_through(
                    &mut call,
                    &mut body,
                    stdin,
                    (done_rx, done_tx),
                    &mut reply,
                    &own,
                    &mut buf,
                    splice,
                ),
                Err(e) => {
                    call.f.group.kill(Kill::Cleanup);
                    (Err((BodyError::Io(e), None)), false)
                }
            }
        };
        let client_error = match fed {
            Ok(()) => None,
            Err((e, stdin)) => {
                // Killed before its stdin closes: it never sees a truncated body as complete.
                call.f.group.kill(Kill::ClientBody);
                drop(stdin);
                Some(e)
            }
        };
        let limit = call.limit;
        let ended = fork::end(call, ctx, &mut buf);
        let close = !body.done();
        drop(body);
        match reply {
            Reply::Started(w) => finish(w, &ended, limit, client_error.as_ref(), &label),
            Reply::Done(outcome) | Reply::Gone(outcome) => outcome,
            Reply::Pending(answer) => {
                let (status, msg) = if let Some(e) = &client_error {
                    log::info!("{label}: {}", e.message());
                    (e.status(), format!("{}\n", e.message()))
                } else if late && !ended.timed_out() {
                    (504, fork::write_timeout_message(&ctx.config))
                } else if let Some(reason) = ended.refused_head() {
                    (502, fork::malformed_head(&label, reason))
                } else if ended.timed_out() || !ended.status.success() {
                    let reason = fork::failure(&ended, limit);
                    log::warn!("{label}: {reason}");
                    (500, format!("{reason}\n"))
                } else {
                    // No output at all (a header block always starts the answer).
                    (200, String::new())
                };
                let text = [("Content-Type", "text/plain; charset=utf-8")];
                let headers: &[(&str, &str)] = if status == 200 { &own } else { &text };
                let bytes = answer.respond(status, headers, msg.as_bytes(), close);
                Outcome { status, bytes }
            }
        }
    }
}

/// The answer, before and after its first byte.
#[allow(clippy::large_enum_variant)]
enum Reply {
    Pending(Answer),
    Started(ResponseWriter),
    /// Sent whole (the output ended while it was gathered).
    Done(Outcome),
    /// The client went away mid-answer.
    Gone(Outcome),
}

impl Reply {
    fn can_splice_later(&self) -> bool {
        matches!(self, Reply::Pending(a) if a.can_splice())
    }
}

/// A small body, already in memory, goes to stdin whole; stdin closes.
fn feed_at_once(
    body: &mut BodyReader,
    stdin: Option<std::process::ChildStdin>,
    buf: &mut [u8],
) -> Result<(), BodyError> {
    let mut whole = Vec::new();
    loop {
        let n = body.read(buf)?;
        if n == 0 {
            break;
        }
        whole.extend_from_slice(&buf[..n]);
    }
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(&whole);
    }
    Ok(())
}

type Fed = Result<(), (BodyError, Option<std::process::ChildStdin>)>;

/// A body still on its way: a helper thread feeds it to stdin while this thread relays output.
/// Returns how the feed ended and whether the answer was late.
#[allow(clippy::too_many_arguments)]
fn stream_through(
    call: &mut Call,
    body: &mut BodyReader,
    stdin: Option<std::process::ChildStdin>,
    (done_rx, done_tx): (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    reply: &mut Reply,
    own: &[(&str, &str)],
    buf: &mut [u8],
    splice: bool,
) -> (Fed, bool) {
    call.io.watch_input(done_rx);
    if splice {
        // Output goes from the function's pipe into the connection by splice.
        call.io.leave_stdout_in_pipe();
    }
    // A body streams through: wider pipes mean a quarter of the wake-ups, for the function and
    // for us (pipe pages are only taken while data sits in them).
    child_io::widen(stdin.as_ref().map(|s| s.as_raw_fd()));
    child_io::widen(call.io.stdout_fd());
    let stopper = body.stopper();
    let group = std::sync::Arc::clone(&call.f.group);
    let pid = call.f.pid();
    let feed = Feed::default();
    std::thread::scope(|s| {
        let feeder =
            crate::threads::spawn_scoped(s, || child_io::feed_body(body, stdin, &group, done_tx, &feed));
        let Relayed { late, input_done } = relay(call, reply, own, buf, true);
        if !input_done {
            // Output is over; the function may still be reading its input.
            call.io.wait_exit(pid, buf);
            if !feed.complete() {
                // It is gone without having read all of it: the rest is not waited for, and the
                // connection closes after the answer.
                feed.stop();
                stopper.stop();
            }
        }
        let fed = match feeder.join() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (fed, late)
    })
}

/// How relaying the output ended.
struct Relayed {
    /// The answer could not start by write_timeout (the function was killed for it).
    late: bool,
    /// The body feeder finished.
    input_done: bool,
}

/// Relays the function's output to the client until it ends. `feeding`: a helper thread feeds
/// the body meanwhile (its end arrives as `InputDone`).
fn relay(call: &mut Call, reply: &mut Reply, own: &[(&str, &str)], buf: &mut [u8], feeding: bool) -> Relayed {
    let mut late = false;
    let mut input_done = !feeding;
    loop {
        let pending = matches!(reply, Reply::Pending(_));
        let respond_by = if pending && !late { call.respond_by } else { None };
        match call.io.next(buf, earliest(respond_by, call.ends_at)) {
            Ok(Next::Stdout(n)) => {
                if matches!(reply, Reply::Pending(_)) && !feeding {
                    gather(call, reply, own, buf, n);
                } else {
                    *reply =
                        emit(begin(take(reply), call.io.cgi_head(), own), Output::Bytes(&buf[..n]), call);
                }
            }
            Ok(Next::HeadDone) => {
                // The function's status and headers go out now, before its body.
                *reply = emit(begin(take(reply), call.io.cgi_head(), own), Output::Bytes(&[]), call);
            }
            Ok(Next::StdoutReady(n)) => {
                if let Some(fd) = call.io.stdout_fd() {
                    *reply = emit(begin(take(reply), call.io.cgi_head(), own), Output::Pipe(fd, n), call);
                }
                if matches!(reply, Reply::Gone(_)) {
                    call.io.close_stdout();
                }
            }
            Ok(Next::InputDone) => input_done = true,
            Ok(Next::StdoutEnd) | Err(_) => break,
            Ok(Next::Deadline) if call.ends_at.is_some_and(|t| Instant::now() >= t) => {
                // exec_timeout: the group is killed by the deadline thread; stop waiting for
                // output even if a descendant that left the group still holds stdout.
                call.f.group.kill(Kill::ExecTimeout);
                call.io.close_stdout();
                break;
            }
            Ok(Next::Deadline) => {
                late = true;
                call.f.group.kill(Kill::WriteTimeout);
            }
        }
    }
    Relayed { late, input_done }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn take(reply: &mut Reply) -> Reply {
    std::mem::replace(reply, Reply::Gone(Outcome { status: 200, bytes: 0 }))
}

/// The first output of a call whose body is all in: it and whatever output is there at once,
/// up to `GATHER`. If that includes the end, the answer goes out whole with its length.
fn gather(call: &mut Call, reply: &mut Reply, own: &[(&str, &str)], buf: &mut [u8], n: usize) {
    let mut out = buf[..n].to_vec();
    let mut ended = false;
    while out.len() < GATHER {
        match call.io.next(buf, Some(Instant::now())) {
            Ok(Next::Stdout(m)) => out.extend_from_slice(&buf[..m]),
            Ok(Next::InputDone | Next::StdoutReady(_) | Next::HeadDone) => {}
            Ok(Next::StdoutEnd) | Err(_) => {
                ended = true;
                break;
            }
            Ok(Next::Deadline) => break,
        }
    }
    if ended {
        let Reply::Pending(answer) = take(reply) else { return };
        let (status, headers) = cgi_response::response(call.io.cgi_head(), own);
        let bytes = answer.respond(status, &headers, &out, false);
        *reply = Reply::Done(Outcome { status, bytes });
        return;
    }
    *reply = emit(begin(take(reply), call.io.cgi_head(), own), Output::Bytes(&out), call);
}

/// A piece of the function's output: in our buffer, or still in its pipe.
enum Output<'a> {
    Bytes(&'a [u8]),
    Pipe(std::os::fd::RawFd, usize),
}

/// Starts the answer if it has not started: with the function's CGI head, if any.
fn begin(reply: Reply, head: Option<&Head>, own: &[(&str, &str)]) -> Reply {
    match reply {
        Reply::Pending(answer) => {
            let (status, headers) = cgi_response::response(head, own);
            Reply::Started(answer.start(status, &headers))
        }
        other => other,
    }
}

/// Sends one piece of output on a started answer (an empty piece sends the head only).
fn emit(reply: Reply, data: Output<'_>, call: &Call) -> Reply {
    let Reply::Started(mut w) = reply else {
        return reply;
    };
    let sent = match data {
        Output::Bytes(bytes) => w.write(bytes),
        Output::Pipe(fd, n) if w.can_splice() => w.splice(fd, n),
        Output::Pipe(fd, n) => {
            // No splice (no body on this answer, a HEAD request; or the body is logged): take the
            // output out of the pipe and write it (a HEAD answer drops it).
            let mut scratch = vec![0u8; n.min(64 * 1024)];
            // SAFETY: reading into a valid buffer from a pipe we own.
            let got = unsafe { libc::read(fd, scratch.as_mut_ptr().cast(), scratch.len()) };
            w.write(&scratch[..usize::try_from(got).unwrap_or(0)])
        }
    };
    if sent.is_err() {
        // The client stopped reading: the output has nowhere to go.
        call.f.group.kill(Kill::ClientGone);
        let status = w.status();
        return Reply::Gone(Outcome { status, bytes: w.abort() });
    }
    Reply::Started(w)
}

/// Ends an answer that has started (see the module note for when it is cut).
fn finish(
    w: ResponseWriter,
    ended: &Ended,
    limit: Option<std::time::Duration>,
    client_error: Option<&BodyError>,
    label: &str,
) -> Outcome {
    let status = w.status();
    let cut = if let Some(e) = client_error {
        Some(e.message())
    } else if ended.killed_for.is_some_and(|k| k != Kill::ExecTimeout) || ended.crashed() {
        Some(fork::failure(ended, limit))
    } else {
        None
    };
    if let Some(why) = cut {
        log::warn!("{label}: response cut after {} bytes: {why}", w.sent());
        return Outcome { status, bytes: w.abort() };
    }
    if ended.timed_out() {
        // The operator's time limit, not a failure: what the function wrote so far is the
        // answer, ended normally (as the Go watchdog does); the log says where it stopped.
        log::warn!("{label}: response ended after {} bytes: {}", w.sent(), fork::failure(ended, limit));
    } else if !ended.status.success() {
        log::warn!("{label}: function failed after its response started: {}", fork::failure(ended, limit));
    }
    let sent = w.sent();
    Outcome { status, bytes: w.finish().unwrap_or(sent) }
}
