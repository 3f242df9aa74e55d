//! What streaming and serializing mode share: starting the function for a request, its
//! deadlines, and ending it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cgi;
use crate::cgi_response::Head;
use crate::child_io::ChildIo;
use crate::config::Config;
use crate::deadlines::DeadlineGuard;
use crate::duration::format_go;
use crate::http_server::Exchange;
use crate::logging::{FunctionLog, Stream};
use crate::process::{Function, Kill, describe_exit};

use super::handler::{Context, Limits, Outcome, text};

/// A running function process for one request.
pub(super) struct Call {
    pub(super) f: Function,
    pub(super) io: ChildIo,
    /// The effective time limit (exec_timeout, or a shorter X-Timeout).
    pub(super) limit: Option<Duration>,
    /// When the response must have started (write_timeout), if that comes before `limit` ends
    /// the call anyway.
    pub(super) respond_by: Option<Instant>,
    /// When `limit` ends the call: its group is killed then, and the call stops waiting for
    /// output even if a descendant that left the group still holds stdout open.
    pub(super) ends_at: Option<Instant>,
    _deadline: Option<DeadlineGuard>,
}

/// How a call's process ended.
pub(super) struct Ended {
    pub(super) status: ExitStatus,
    /// Why the watchdog killed it, if it did: then that is the call's outcome, and a death by
    /// signal is no crash.
    pub(super) killed_for: Option<Kill>,
    /// `cgi_response`: the function's status and headers, if it wrote a header block.
    pub(super) head: Option<Head>,
    /// `cgi_response`: why its header block was refused (the call answers 502).
    pub(super) malformed: Option<String>,
}

impl Ended {
    pub(super) fn timed_out(&self) -> bool {
        self.killed_for == Some(Kill::ExecTimeout)
    }

    /// Died of a signal the watchdog did not send.
    pub(super) fn crashed(&self) -> bool {
        self.status.signal().is_some() && self.killed_for.is_none()
    }

    /// Why the function's CGI header block was refused, unless it also exited with an error
    /// code of its own (then that is the better reason).
    pub(super) fn refused_head(&self) -> Option<&str> {
        self.malformed.as_deref().filter(|_| self.status.code().is_none_or(|c| c == 0))
    }
}

/// Starts the function for `ex` with its CGI environment and arms its deadline.
pub(super) fn start(ex: &Exchange, ctx: &Context) -> io::Result<Call> {
    let env = cgi::environment(ex);
    let mut f = ctx.children.spawn_with(&ctx.config.argv, &env, ctx.config.combine_output)?;
    let Limits { limit, respond_by } = Limits::of(&ex.info, &ctx.config);
    let ends_at = limit.map(|l| Instant::now() + l);
    let guard = ends_at.map(|t| ctx.deadlines.schedule(t, &f.group));
    let log = FunctionLog::new(Stream::Stderr, ctx.config.prefix_logs, ctx.config.log_buffer_size);
    let mut io = ChildIo::new(f.stdout.take(), f.stderr.take(), log, None);
    if ctx.config.cgi_response {
        io.read_cgi_head(std::sync::Arc::clone(&f.group));
    }
    Ok(Call { f, io, limit, respond_by, ends_at, _deadline: guard })
}

/// Waits for the process to exit (relaying the rest of its stderr), kills what is left of its
/// group and reaps it. A caller that gives up on stdout before its end gets the group killed.
pub(super) fn end(call: Call, ctx: &Context, buf: &mut [u8]) -> Ended {
    let Call { f, mut io, limit, .. } = call;
    if io.stdout_open() {
        f.group.kill(Kill::Cleanup);
    }
    io.wait_exit(f.pid(), buf);
    let (head, malformed) = io.take_cgi_parts();
    let killed_for = f.group.killed_for();
    let status = ctx.children.finish(f);
    // A cause counts only if the kill is what ended the function; one that exited on its own
    // (just before, or while the group's stragglers were killed) reports its own exit.
    let killed_for = killed_for.filter(|_| status.signal().is_some());
    if killed_for == Some(Kill::ExecTimeout) {
        log::warn!("Function was killed by ExecTimeout: {}", format_go(limit.unwrap_or_default()));
    }
    Ended { status, killed_for, head, malformed }
}

/// The one-line reason a call failed: the watchdog's own reason for killing the function, if
/// it did, else how the function ended.
pub(super) fn failure(ended: &Ended, limit: Option<Duration>) -> String {
    match ended.killed_for {
        Some(Kill::ExecTimeout) => {
            format!(
                "function exceeded its timeout of {} and was killed",
                format_go(limit.unwrap_or_default())
            )
        }
        Some(Kill::WriteTimeout) => "the response did not start within write_timeout".into(),
        Some(Kill::ClientBody) => "the request body broke off".into(),
        Some(Kill::ClientGone) => "the client stopped reading the response".into(),
        Some(Kill::BadHead) => "malformed CGI response from the function".into(),
        Some(Kill::Cleanup) | None => describe_exit(ended.status),
    }
}

/// Logs why a function's CGI header block was refused (`label`: the call's method and URI);
/// returns the 502's message.
pub(super) fn malformed_head(label: &str, reason: &str) -> String {
    log::warn!("{label}: malformed CGI response from the function: {reason}");
    format!("malformed CGI response from the function: {reason}\n")
}

pub(super) fn write_timeout_message(config: &Config) -> String {
    format!("function response not ready within write_timeout ({})\n", format_go(config.write_timeout))
}

pub(super) fn spawn_failed(ex: Exchange, ctx: &Context, e: &io::Error, extra: &[(&str, &str)]) -> Outcome {
    let program = ctx.config.argv.first().map(String::as_str).unwrap_or("");
    log::error!("cannot start function {program:?}: {e}");
    text(ex, 500, &format!("cannot start function {program:?}: {e}\n"), extra)
}
