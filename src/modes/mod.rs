//! One module per mode (SPEC §4, §5, §10.8); each turns a request into a response.

mod fork;
pub(crate) mod http;
pub(crate) mod serializing;
pub(crate) mod static_files;
pub(crate) mod streaming;

use crate::config::{Config, Mode};
use crate::exchange::Exchange;
use crate::server::Watchdog;

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
}

pub(crate) fn build(config: &Config) -> Result<Box<dyn Handler>, String> {
    match config.mode {
        Mode::Streaming => Ok(Box::new(streaming::Streaming)),
        Mode::Serializing => Ok(Box::new(serializing::Serializing)),
        Mode::Http => Ok(Box::new(http::Http::new(config)?)),
        Mode::Static => Ok(Box::new(static_files::StaticFiles::new(&config.static_path)?)),
    }
}
