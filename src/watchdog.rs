//! The state every part of a running watchdog shares: built once by `server` at startup, then
//! read by the request path, the modes and the shutdown sequence. Nothing here depends on how
//! requests are received, so the modes never import the startup code.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::connections::Connections;
use crate::lifecycle::Lifecycle;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::modes::Handler;
use crate::process::{Children, Deadlines};

pub(crate) struct Watchdog {
    pub(crate) config: Config,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) children: Arc<Children>,
    pub(crate) deadlines: Arc<Deadlines>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) handler: Box<dyn Handler>,
    pub(crate) events: Sender<Event>,
}

/// What the main thread waits for while serving.
pub(crate) enum Event {
    Signal(i32),
    /// The watchdog cannot go on (http mode: the upstream died); exit non-zero.
    Fatal(String),
}

impl Watchdog {
    /// Ends the process soon with a non-zero status (http mode: the upstream died).
    pub(crate) fn fail(&self, why: String) {
        let _ = self.events.send(Event::Fatal(why));
    }
}
