//! What streaming and serializing mode share: starting the function for a request, its
//! deadlines, and ending it.

use std::io::{self, Read};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cgi;
use crate::child_io::ChildIo;
use crate::config::Config;
use crate::duration::format_go;
use crate::exchange::{Exchange, ResponseStream};
use crate::logging::{FunctionLog, Stream};
use crate::process::{DeadlineGuard, Function, describe_exit};
use crate::request::RequestInfo;
use crate::server::Watchdog;
use crate::spool::Spool;

use super::Outcome;

/// Size of the buffer stdout, stderr and bodies are moved through.
pub(super) const IO_BUFFER: usize = 64 * 1024;

thread_local! {
    static SPARE_BUFFER: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// An I/O buffer of `IO_BUFFER` bytes, kept per worker thread between calls (a fresh 64 KiB
/// zeroed allocation per call showed up in profiles).
pub(super) struct IoBuffer(Vec<u8>);

impl IoBuffer {
    pub(super) fn take() -> IoBuffer {
        IoBuffer(SPARE_BUFFER.with(|b| b.take()).unwrap_or_else(|| vec![0u8; IO_BUFFER]))
    }
}

impl Drop for IoBuffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        SPARE_BUFFER.with(|b| b.set(Some(buf)));
    }
}

impl std::ops::Deref for IoBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for IoBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// A running function process for one request.
pub(super) struct Call {
    pub(super) f: Function,
    pub(super) io: ChildIo,
    /// The effective time limit (exec_timeout, or a shorter X-Timeout).
    pub(super) limit: Option<Duration>,
    /// When the response must have started (write_timeout), if that comes before `limit` ends
    /// the call anyway.
    pub(super) respond_by: Option<Instant>,
    _deadline: Option<DeadlineGuard>,
}

/// How a call's process ended.
pub(super) struct Ended {
    pub(super) status: ExitStatus,
    pub(super) timed_out: bool,
}

/// The call's time limit: exec_timeout, or X-Timeout when that is shorter (SPEC §4).
pub(crate) fn time_limit(info: &RequestInfo, config: &Config) -> Option<Duration> {
    match (config.exec_timeout, info.x_timeout) {
        (Some(exec), Some(x)) => Some(exec.min(x)),
        (exec, x) => exec.or(x),
    }
}

/// When reading the request body must be over.
pub(super) fn read_deadline(info: &RequestInfo, config: &Config) -> Option<Instant> {
    (!config.read_timeout.is_zero()).then(|| info.received + config.read_timeout)
}

/// Starts the function for `ex` with its CGI environment and arms its deadline.
pub(super) fn start(ex: &Exchange, wd: &Watchdog) -> io::Result<Call> {
    let env = cgi::environment(ex);
    let mut f = wd.children.spawn(&wd.config.argv, &env)?;
    let limit = time_limit(&ex.info, &wd.config);
    let guard = limit.map(|l| wd.deadlines.schedule(Instant::now() + l, &f.group));
    let respond_by =
        limit.is_none_or(|l| wd.config.write_timeout < l).then(|| ex.info.received + wd.config.write_timeout);
    let log = FunctionLog::new(Stream::Stderr, wd.config.prefix_logs, wd.config.log_buffer_size);
    let io = ChildIo::new(f.stdout.take(), f.stderr.take(), log, None);
    Ok(Call { f, io, limit, respond_by, _deadline: guard })
}

/// Waits for the process to exit (relaying the rest of its stderr), kills what is left of its
/// group and reaps it. A caller that gives up on stdout before its end gets the group killed.
pub(super) fn end(call: Call, wd: &Watchdog, buf: &mut [u8]) -> Ended {
    let Call { f, mut io, limit, .. } = call;
    if io.stdout_open() {
        f.group.kill();
    }
    io.wait_exit(f.pid(), buf);
    let timed_out = f.group.timed_out();
    let status = wd.children.finish(f);
    if timed_out {
        log::info!("Function was killed by ExecTimeout: {}", format_go(limit.unwrap_or_default()));
    }
    Ended { status, timed_out }
}

/// The one-line reason a call failed.
pub(super) fn failure(ended: &Ended, limit: Option<Duration>) -> String {
    if ended.timed_out {
        format!("function exceeded its timeout of {} and was killed", format_go(limit.unwrap_or_default()))
    } else {
        describe_exit(ended.status)
    }
}

pub(super) fn write_timeout_message(config: &Config) -> String {
    format!("function response not ready within write_timeout ({})\n", format_go(config.write_timeout))
}

pub(super) fn spawn_failed(ex: Exchange, wd: &Watchdog, e: &io::Error, extra: &[(&str, &str)]) -> Outcome {
    let program = wd.config.argv.first().map(String::as_str).unwrap_or("");
    log::error!("cannot start function {program:?}: {e}");
    text(ex, 500, &format!("cannot start function {program:?}: {e}\n"), extra)
}

/// A plain-text response.
pub(super) fn text(ex: Exchange, status: u16, msg: &str, extra: &[(&str, &str)]) -> Outcome {
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend_from_slice(extra);
    let bytes = ex.respond(status, &headers, msg.as_bytes());
    Outcome { status, bytes }
}

/// Sends a spooled body with its exact length.
pub(super) fn send_spool(ex: Exchange, status: u16, headers: &[(&str, &str)], spool: &mut Spool) -> Outcome {
    if let Some(body) = spool.as_slice() {
        let bytes = ex.respond(status, headers, body);
        return Outcome { status, bytes };
    }
    let mut stream = ex.stream(status, headers, Some(spool.len()));
    let bytes = copy_spool(spool, &mut stream).and_then(|()| stream.finish()).unwrap_or(0);
    Outcome { status, bytes }
}

/// Writes the spool's content to a started response.
pub(super) fn copy_spool(spool: &mut Spool, stream: &mut ResponseStream) -> io::Result<()> {
    let mut reader = spool.reader()?;
    let mut buf = IoBuffer::take();
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write(&buf[..n])?;
    }
}
