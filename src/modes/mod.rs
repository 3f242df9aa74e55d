//! One module per mode (SPEC §4, §5, §10.8); each turns a request into a response. This file
//! holds what every mode uses: the `Handler` trait, a call's time limits, and plain answers.

mod fork;
pub(crate) mod http;
pub(crate) mod serializing;
pub(crate) mod static_files;
pub(crate) mod streaming;
pub(crate) mod websocket;

use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::config::{Config, Mode};
use crate::exchange::{Exchange, ResponseStream};
use crate::request::RequestInfo;
use crate::spool::Spool;
use crate::watchdog::Watchdog;

/// How a call ended, for the request log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) status: u16,
    /// Response body bytes sent.
    pub(crate) bytes: u64,
}

pub(crate) trait Handler: Send + Sync {
    /// Answers one request. Runs on a worker thread (or the control pool for `ready_path`).
    fn handle(&self, ex: Exchange, wd: &Watchdog) -> Outcome;

    /// Starts what the mode runs besides calls (http mode: the upstream process).
    fn start(&self, _wd: &std::sync::Arc<Watchdog>) -> Result<(), String> {
        Ok(())
    }

    /// Blocks until the mode can take calls (http mode: its upstream accepts connections).
    fn wait_ready(&self, _wd: &Watchdog) -> Result<(), String> {
        Ok(())
    }

    /// After the drain (http mode: stop the upstream).
    fn shutdown(&self, _wd: &Watchdog) {}

    /// Ends what the mode keeps running, at once (a second signal during the drain).
    fn kill(&self) {}

    /// `Upgrade` requests are relayed as websockets (http mode), not handled as calls.
    fn relays_upgrades(&self) -> bool {
        false
    }

    /// Where a relayed upgrade goes: the upstream's address and path prefix (http mode).
    fn upgrade_target(&self) -> Option<(std::net::SocketAddr, &str)> {
        None
    }
}

pub(crate) fn build(config: &Config) -> Result<Box<dyn Handler>, String> {
    match config.mode {
        Mode::Streaming => Ok(Box::new(streaming::Streaming)),
        Mode::Serializing => Ok(Box::new(serializing::Serializing)),
        Mode::Http => Ok(Box::new(http::Http::new(config)?)),
        Mode::Static => Ok(Box::new(static_files::StaticFiles::new(&config.static_path)?)),
    }
}

/// Size of the buffer stdout, stderr and bodies are moved through.
pub(crate) const IO_BUFFER: usize = 64 * 1024;

thread_local! {
    static SPARE_BUFFER: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// An I/O buffer of `IO_BUFFER` bytes, kept per worker thread between calls (a fresh 64 KiB
/// zeroed allocation per call showed up in profiles).
pub(crate) struct IoBuffer(Vec<u8>);

impl IoBuffer {
    pub(crate) fn take() -> IoBuffer {
        IoBuffer(SPARE_BUFFER.with(|b| b.take()).unwrap_or_else(|| vec![0u8; IO_BUFFER]))
    }

    /// Frees this thread's spare buffer (the thread is about to end).
    pub(crate) fn release() {
        SPARE_BUFFER.with(|b| drop(b.take()));
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

/// A call's time limits.
pub(crate) struct Limits {
    /// exec_timeout, or X-Timeout when that is shorter (SPEC §4); `None`: no limit.
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
    let mut stream = ex.stream(status, headers, Some(spool.len()));
    let bytes = copy_spool(spool, &mut stream).and_then(|()| stream.finish()).unwrap_or(0);
    Outcome { status, bytes }
}

/// Writes the spool's content to a started response.
pub(crate) fn copy_spool(spool: &mut Spool, stream: &mut ResponseStream) -> io::Result<()> {
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
