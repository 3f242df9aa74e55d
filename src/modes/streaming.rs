//! streaming mode (SPEC §4): one process per request; the body flows into its stdin while it
//! arrives and its stdout flows to the client as it is produced.
//!
//! tiny_http cannot start a response before the request body has been read (ENGINEERING.md
//! trap 7), so until then stdout goes to a spool (64 KiB in memory, the rest in an unlinked
//! temporary file): a function like `cat` never blocks on a full pipe, memory stays bounded,
//! and nothing is truncated. Then the spool is sent, followed by live output, chunked and
//! flushed per read. The status (200) goes out with the first byte of output; a function that
//! fails before writing anything gets a 500 with a one-line reason.

use std::io::Write;

use crate::child_io::{self, Next};
use crate::exchange::{Exchange, ResponseStream};
use crate::server::Watchdog;
use crate::spool::Spool;

use super::IoBuffer;
use super::fork::{self, Call};
use super::{Handler, Outcome};

const SPOOL_MEMORY: usize = 64 * 1024;

pub(crate) struct Streaming;

/// The response, before and after its first byte. One per call, on the worker's stack: boxing
/// the pending exchange would only add an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Reply {
    Pending(Exchange),
    Started(ResponseStream),
    /// The client went away mid-response.
    Gone(u64),
}

impl Handler for Streaming {
    fn handle(&self, mut ex: Exchange, wd: &Watchdog) -> Outcome {
        let mut call = match fork::start(&ex, wd) {
            Ok(call) => call,
            Err(e) => return fork::spawn_failed(ex, wd, &e, &[]),
        };
        let mut buf = IoBuffer::take();
        let mut spool = Spool::new(SPOOL_MEMORY);
        let mut state = Progress { late: false, spool_failed: None };

        if let Err(e) = feed(&mut ex, &mut call, wd, &mut spool, &mut buf, &mut state) {
            call.f.group.kill();
            fork::end(call, wd, &mut buf);
            log::info!("{} {}: {}", ex.info.method, ex.info.uri, e.message());
            return super::text(ex, e.status(), &format!("{}\n", e.message()), &[]);
        }

        let content_type = wd.config.content_type.as_str();
        let headers = [("Content-Type", content_type)];
        let buffer_all = ex.needs_length();
        let mut reply = Reply::Pending(ex);
        if !spool.is_empty()
            && !buffer_all
            && call.io.stdout_open()
            && !state.late
            && state.spool_failed.is_none()
        {
            reply = start(reply, &headers);
            if let Reply::Started(stream) = &mut reply
                && super::copy_spool(&mut spool, stream).is_err()
            {
                reply = gone(reply, &mut call);
            }
        }
        while call.io.stdout_open() {
            let waiting = matches!(reply, Reply::Pending(_)) && !state.late;
            let deadline = if waiting { call.respond_by } else { None };
            match call.io.next(&mut buf, deadline) {
                Ok(Next::Stdout(n)) if buffer_all || state.late || state.spool_failed.is_some() => {
                    if buffer_all
                        && !state.late
                        && state.spool_failed.is_none()
                        && let Err(e) = spool.push(&buf[..n])
                    {
                        state.spool_failed = Some(e);
                        call.f.group.kill();
                    }
                }
                Ok(Next::Stdout(n)) if matches!(reply, Reply::Pending(_)) => {
                    // The first output: take whatever else is already there, without waiting.
                    // If that includes the end, the answer goes out whole, with a
                    // Content-Length, in one write.
                    if let Err(e) = gather(&mut call, &mut spool, &mut buf, n) {
                        state.spool_failed = Some(e);
                        call.f.group.kill();
                        continue;
                    }
                    if call.io.stdout_open() {
                        reply = start(reply, &headers);
                        if let Reply::Started(stream) = &mut reply
                            && super::copy_spool(&mut spool, stream).is_err()
                        {
                            reply = gone(reply, &mut call);
                        }
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
                Ok(Next::InputDone) => {}
                Ok(Next::Deadline) => {
                    state.late = true;
                    call.f.group.kill();
                }
            }
        }
        let limit = call.limit;
        let ended = fork::end(call, wd, &mut buf);
        match reply {
            Reply::Started(stream) => {
                if !ended.status.success() {
                    log::info!(
                        "function failed after its response started: {}",
                        fork::failure(&ended, limit)
                    );
                }
                let bytes = stream.finish().unwrap_or(0);
                Outcome { status: 200, bytes }
            }
            Reply::Gone(bytes) => Outcome { status: 200, bytes },
            Reply::Pending(ex) => {
                if state.late && !ended.timed_out {
                    super::text(ex, 504, &fork::write_timeout_message(&wd.config), &[])
                } else if let Some(e) = state.spool_failed {
                    super::text(ex, 500, &format!("cannot buffer the function's output: {e}\n"), &[])
                } else if !spool.is_empty() {
                    super::send_spool(ex, 200, &headers, &mut spool)
                } else if ended.timed_out || !ended.status.success() {
                    super::text(ex, 500, &format!("{}\n", fork::failure(&ended, limit)), &[])
                } else {
                    let bytes = ex.respond(200, &headers, b"");
                    Outcome { status: 200, bytes }
                }
            }
        }
    }
}

struct Progress {
    /// The response could not start by write_timeout; the function was killed.
    late: bool,
    spool_failed: Option<std::io::Error>,
}

/// The request body phase: the body goes to stdin, stdout to the spool.
fn feed(
    ex: &mut Exchange,
    call: &mut Call,
    wd: &Watchdog,
    spool: &mut Spool,
    buf: &mut [u8],
    state: &mut Progress,
) -> Result<(), crate::exchange::BodyError> {
    let stdin = call.f.stdin.take();
    if ex.info.preloaded {
        // At most 1 KiB, already in memory: reading never blocks and the pipe takes it whole.
        let mut body = Vec::new();
        loop {
            let n = ex.read_body(buf, None)?;
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
        Err(e) => return Err(crate::exchange::BodyError::Io(e)),
    };
    call.io.watch_input(done_rx);
    let read_deadline = super::read_deadline(&ex.info, &wd.config);
    let respond_by = call.respond_by;
    let group = std::sync::Arc::clone(&call.f.group);
    let io = &mut call.io;
    let fed = std::thread::scope(|s| {
        let feeder = s.spawn(|| child_io::feed_body(ex, stdin, read_deadline, done_tx));
        loop {
            let deadline = if state.late { None } else { respond_by };
            match io.next(buf, deadline) {
                Ok(Next::Stdout(n)) => {
                    if state.spool_failed.is_none()
                        && let Err(e) = spool.push(&buf[..n])
                    {
                        state.spool_failed = Some(e);
                        group.kill();
                    }
                }
                Ok(Next::StdoutEnd) => {}
                Ok(Next::InputDone) | Err(_) => break,
                Ok(Next::Deadline) => {
                    state.late = true;
                    group.kill();
                }
            }
        }
        feeder.join()
    });
    match fed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, stdin))) => {
            // Killed before its stdin closes: it never sees a truncated body as complete.
            group.kill();
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
            Ok(Next::InputDone) => {}
            Ok(Next::StdoutEnd | Next::Deadline) | Err(_) => break,
        }
    }
    Ok(())
}

fn start(reply: Reply, headers: &[(&str, &str)]) -> Reply {
    match reply {
        Reply::Pending(ex) => Reply::Started(ex.stream(200, headers, None)),
        other => other,
    }
}

/// The client stopped reading: the output has nowhere to go, so the function is stopped.
fn gone(reply: Reply, call: &mut Call) -> Reply {
    call.f.group.kill();
    match reply {
        Reply::Started(stream) => Reply::Gone(stream.sent()),
        other => other,
    }
}
