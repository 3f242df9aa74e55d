//! One module per mode; each turns a request into an answer: streaming and serializing fork a
//! function per request (`fork` holds what they share), http relays to one long-running server
//! (and relays websockets, `websocket`), static serves files. `handler` holds what every mode
//! uses; this file picks the mode's handler.

mod fork;
mod handler;
pub(crate) mod http;
pub(crate) mod relay;
pub(crate) mod serializing;
pub(crate) mod static_files;
pub(crate) mod streaming;
pub(crate) mod upstream;
pub(crate) mod websocket;

use crate::config::{Config, Mode};

pub(crate) use handler::{Context, Handler};

pub(crate) fn build(config: &Config) -> Result<Box<dyn Handler>, String> {
    match config.mode {
        Mode::Streaming => Ok(Box::new(streaming::Streaming)),
        Mode::Serializing => Ok(Box::new(serializing::Serializing)),
        Mode::Http => Ok(Box::new(http::Http::new(config)?)),
        Mode::Static => Ok(Box::new(static_files::StaticFiles::new(&config.static_path)?)),
    }
}
