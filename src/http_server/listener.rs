//! Accepting connections with tiny_http, for as long as the process lives.
//!
//! tiny_http's accept thread ends for good on any accept error (running out of descriptors
//! included) or when it panics (a failed `try_clone` or thread spawn when descriptors or threads
//! run out), and the server then silently stops accepting. So the listener runs in
//! *generations*: each is a `tiny_http::Server` on a clone of the one listening socket, with its
//! own receiving threads. When a generation's accept thread ends, the supervisor starts the
//! next one (backing off if that repeats at once); the old one keeps serving the connections it
//! accepted, and its threads stop when the registry says the last of them is gone.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use tiny_http::Server;

use super::receivers::{Pool, Receivers};
use super::registry::Registry;
use super::socket;

/// Generation id meaning "whichever generation is accepting now" (a panic in tiny_http's accept
/// thread does not say which server it belonged to, but only one accept thread runs).
const CURRENT: u64 = u64::MAX;

enum Event {
    AcceptEnded {
        generation: u64,
        error: io::Error,
    },
    /// A generation's last connection is gone.
    Empty(u64),
}

static EVENTS: OnceLock<Sender<Event>> = OnceLock::new();

struct Generation {
    id: u64,
    receivers: Arc<Receivers>,
    started: Instant,
}

/// The accepting side of the watchdog.
pub(crate) struct Acceptor {
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
}

impl Acceptor {
    /// Starts accepting on `listener`; `pool` answers the requests.
    pub(crate) fn start(
        listener: TcpListener,
        registry: &'static Registry,
        pool: Arc<Pool>,
    ) -> io::Result<Acceptor> {
        let (tx, rx) = unbounded();
        let _ = EVENTS.set(tx.clone());
        let empty = tx.clone();
        registry.on_generation_done(Box::new(move |generation| {
            let _ = empty.send(Event::Empty(generation));
        }));
        let stopping = Arc::new(AtomicBool::new(false));
        let first = spawn_generation(&listener, registry, 1, &tx, &pool)?;
        let source = listener.try_clone()?;
        let stop = Arc::clone(&stopping);
        crate::threads::spawn("fw-listener", move || supervise(source, registry, first, rx, tx, pool, stop))?;
        Ok(Acceptor { listener, stopping })
    }

    /// Stops accepting new connections; requests on open connections are still answered.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        socket::stop_listening(&self.listener);
    }
}

fn spawn_generation(
    listener: &TcpListener,
    registry: &Registry,
    id: u64,
    events: &Sender<Event>,
    pool: &Arc<Pool>,
) -> io::Result<Generation> {
    let clone = listener.try_clone()?;
    registry.watch_listener(clone.as_raw_fd(), id)?;
    let server = Server::from_listener(clone, None)
        .map_err(|e| io::Error::other(format!("cannot start the HTTP server: {e}")))?;
    let tx = events.clone();
    let report = Box::new(move |error: io::Error| {
        let _ = tx.send(Event::AcceptEnded { generation: id, error });
    });
    let receivers = Receivers::start(Arc::new(server), Arc::clone(pool), report)?;
    Ok(Generation { id, receivers, started: Instant::now() })
}

fn supervise(
    listener: TcpListener,
    registry: &'static Registry,
    first: Generation,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    pool: Arc<Pool>,
    stopping: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    let mut retiring: Vec<Generation> = Vec::new();
    let mut next_id = 2;
    let mut quick_failures = 0u32;
    while let Ok(event) = events.recv() {
        match event {
            Event::Empty(generation) => retiring.retain(|g| {
                let done = g.id == generation;
                if done {
                    g.receivers.retire();
                }
                !done
            }),
            Event::AcceptEnded { generation, error } => {
                let Some(ended) = current.take_if(|g| generation == CURRENT || g.id == generation) else {
                    continue;
                };
                let lived = ended.started.elapsed();
                if registry.connections_of(ended.id) == 0 {
                    ended.receivers.retire();
                } else {
                    retiring.push(ended);
                }
                if stopping.load(Ordering::Acquire) {
                    continue;
                }
                log::error!("accepting connections failed: {error}; restarting the listener");
                // An accept error that repeats at once (out of descriptors) must not become a
                // busy loop.
                quick_failures = if lived < Duration::from_millis(500) { quick_failures + 1 } else { 0 };
                if quick_failures > 0 {
                    std::thread::sleep(Duration::from_millis(20u64 << quick_failures.min(6)));
                }
                loop {
                    match spawn_generation(&listener, registry, next_id, &events_tx, &pool) {
                        Ok(g) => {
                            current = Some(g);
                            next_id += 1;
                            break;
                        }
                        Err(e) => {
                            log::error!("{e}; retrying in 1s");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            }
        }
    }
}

/// Installs the panic hook: every panic is logged through our logger (one line, JSON when
/// configured), and a panic in tiny_http's accept thread (a failed `try_clone` or thread spawn
/// when descriptors or threads run out) starts the next listener generation, since such a death
/// sends no error through the request queue.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if crate::logging::panic_expected() {
            return;
        }
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        log::error!("panic in thread {name} at {location}: {msg}");
        let file = info.location().map(|l| l.file()).unwrap_or("");
        let in_accept_thread = !crate::threads::is_ours()
            && ((file.contains("tiny_http")
                && (file.ends_with("refined_tcp_stream.rs") || file.ends_with("lib.rs")))
                || msg.contains("failed to spawn thread"));
        if in_accept_thread && let Some(events) = EVENTS.get() {
            let error = io::Error::other(format!("tiny_http accept thread panicked: {msg}"));
            let _ = events.send(Event::AcceptEnded { generation: CURRENT, error });
        }
    }));
}
