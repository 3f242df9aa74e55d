//! What every mode uses: the `Handler` trait, the `Context` a handler is given, a call's time
//! limits, and plain answers.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::deadlines::Deadlines;
use crate::http_server::{Exchange, RequestInfo, ResponseWriter};
use crate::io_buffer::IoBuffer;
use crate::logging::CallLog;
pub(crate) use crate::logging::Outcome;
use crate::process::Children;
use crate::spool::Spool;

/// What a handler is given besides the request: the configuration and the function processes.
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) children: Arc<Children>,
    /// exec_timeout's clock.
    pub(crate) deadlines: Arc<Deadlines>,
}

/// Ends the watchdog with a non-zero status (http mode: the upstream died).
pub(crate) type Fail = Box<dyn Fn(String) + Send + Sync>;

pub(crate) trait Handler: Send + Sync {
    /// Answers one request.
    fn handle(&self, ex: Exchange, ctx: &Context) -> Outcome;

    /// Upgrade requests (`Connection: upgrade`) are relayed as sessions (`upgrade`), not calls.
    fn relays_upgrades(&self) -> bool {
        false
    }

    /// Relays an upgrade request as a session (http mode), with `log` written when it ends.
    fn upgrade(&self, ex: Exchange, ctx: &Context, log: CallLog) {
        log.write(self.handle(ex, ctx));
    }

    /// Starts what the mode runs besides calls (http mode: the upstream process); `fail` ends
    /// the watchdog if that stops.
    fn start(&self, _ctx: &Context, _fail: Fail) -> Result<(), String> {
        Ok(())
    }

    /// Blocks until the mode can take calls (http mode: its upstream accepts connections).
    fn wait_ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// At the end of the drain, before the connections still open are cut: sessions that
    /// outlived it are closed as their protocol closes (http mode: websocket close frames).
    fn close_sessions(&self) {}

    /// After the drain (http mode: stop the upstream).
    fn shutdown(&self) {}

    /// Ends what the mode keeps running, at once (a second signal during the drain).
    fn kill(&self) {}
}

/// A call's time limits.
pub(crate) struct Limits {
    /// exec_timeout, or X-Timeout when that is shorter; `None`: no limit.
    pub(crate) limit: Option<Duration>,
    /// When the response must have started (write_timeout), if that comes before `limit` ends
    /// the call anyway.
    pub(crate) respond_by: Option<Instant>,
}

impl Limits {
    pub(crate) fn of(info: &RequestInfo, config: &Config) -> Limits {
        let limit = match (config.exec_timeout, info.x_timeout) {
            (Some(exec), Some(x)) => Some(exec.min(x)),
            (exec, x) => exec.or(x),
        };
        let respond_by =
            limit.is_none_or(|l| config.write_timeout < l).then(|| info.received + config.write_timeout);
        Limits { limit, respond_by }
    }
}

/// `X-Duration-Seconds` for a call that started at `since`.
pub(crate) fn duration_header(since: Instant) -> String {
    crate::duration::seconds_f6(since.elapsed())
}

/// A plain-text response.
pub(crate) fn text(ex: Exchange, status: u16, msg: &str, extra: &[(&str, &str)]) -> Outcome {
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend_from_slice(extra);
    let bytes = ex.respond(status, &headers, msg.as_bytes());
    Outcome { status, bytes }
}

/// Sends a spooled body with its exact length.
pub(crate) fn send_spool(ex: Exchange, status: u16, headers: &[(&str, &str)], spool: &mut Spool) -> Outcome {
    if let Some(body) = spool.as_slice() {
        let bytes = ex.respond(status, headers, body);
        return Outcome { status, bytes };
    }
    let mut w = ex.start(status, headers, Some(spool.len()));
    let bytes = match copy_spool(spool, &mut w) {
        Ok(()) => w.finish().unwrap_or(0),
        Err(_) => w.abort(),
    };
    Outcome { status, bytes }
}

/// Writes the spool's content to a started answer.
pub(crate) fn copy_spool(spool: &mut Spool, w: &mut ResponseWriter) -> io::Result<()> {
    let mut reader = spool.reader()?;
    let mut buf = IoBuffer::take();
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write(&buf[..n])?;
    }
}
