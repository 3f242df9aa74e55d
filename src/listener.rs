//! Accepting connections with tiny_http, for as long as the process lives.
//!
//! tiny_http's accept thread ends for good on any accept error, EMFILE included, or when it
//! panics (a failed `try_clone` when descriptors run out), and the server then silently stops
//! accepting (ENGINEERING.md trap 5). So the listener runs in *generations*: each is a
//! `tiny_http::Server` on a clone of the one listening socket, with its own receiving threads
//! (`workers::Receivers`). When a generation's accept thread ends, the supervisor starts the
//! next generation (backing off if that repeats at once); the old one keeps serving the
//! connections it accepted and is retired, its threads stopped, when the last of them has
//! closed. Which connections those are is read from our own descriptors: the sockets that
//! appeared while the generation was the one accepting. Read deadlines are not the listener's
//! business (`connections` keeps them), so an idle listener never times out.

use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use tiny_http::Server;

use crate::sockets;
use crate::workers::{Receivers, Workers};

/// Generation id meaning "whichever generation is accepting now" (a panic in tiny_http's
/// accept thread does not say which server it belonged to, but only one accept thread runs).
const CURRENT: u64 = u64::MAX;

enum Event {
    AcceptEnded { generation: u64, error: io::Error },
}

static EVENTS: OnceLock<Sender<Event>> = OnceLock::new();

struct Generation {
    id: u64,
    receivers: Arc<Receivers>,
    started: Instant,
    /// Connections that existed when this generation started (accepted by older ones).
    before: Option<HashSet<u64>>,
    /// Connections this generation accepted, known once its accept thread has ended.
    accepted: Option<HashSet<u64>>,
}

impl Generation {
    fn retire(&self) {
        self.receivers.retire();
    }
}

/// The accepting side of the watchdog.
pub(crate) struct Acceptor {
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
}

impl Acceptor {
    /// Starts accepting on `listener`; `workers` answer the requests.
    pub(crate) fn start(listener: TcpListener, port: u16, workers: Arc<Workers>) -> io::Result<Acceptor> {
        let (tx, rx) = unbounded();
        let _ = EVENTS.set(tx.clone());
        let stopping = Arc::new(AtomicBool::new(false));
        // Nothing can have been accepted before the first generation.
        let first = spawn_generation(&listener, 1, Some(HashSet::new()), &tx, &workers)?;
        let source = listener.try_clone()?;
        let stop = Arc::clone(&stopping);
        crate::threads::spawn("fw-listener", move || supervise(source, port, first, rx, tx, workers, stop))?;
        Ok(Acceptor { listener, stopping })
    }

    /// Stops accepting new connections; requests on open connections are still dispatched.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        sockets::stop_listening(&self.listener);
    }
}

fn spawn_generation(
    listener: &TcpListener,
    id: u64,
    before: Option<HashSet<u64>>,
    events: &Sender<Event>,
    workers: &Arc<Workers>,
) -> io::Result<Generation> {
    let server = Server::from_listener(listener.try_clone()?, None)
        .map_err(|e| io::Error::other(format!("cannot start the HTTP server: {e}")))?;
    let tx = events.clone();
    let report = Box::new(move |error: io::Error| {
        let _ = tx.send(Event::AcceptEnded { generation: id, error });
    });
    let receivers =
        Receivers::start(Arc::new(server), Arc::clone(workers), Receivers::default_spare(), report)?;
    Ok(Generation { id, receivers, started: Instant::now(), before, accepted: None })
}

fn supervise(
    listener: TcpListener,
    port: u16,
    first: Generation,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    workers: Arc<Workers>,
    stopping: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    let mut retiring: Vec<Generation> = Vec::new();
    let mut next_id = 2;
    let mut quick_failures = 0u32;
    let mut warned_no_proc = false;
    loop {
        let wait = if retiring.is_empty() { Duration::from_secs(3600) } else { Duration::from_secs(1) };
        match events.recv_timeout(wait) {
            Ok(Event::AcceptEnded { generation, error }) => {
                let Some(mut ended) = current.take_if(|g| generation == CURRENT || g.id == generation) else {
                    continue;
                };
                let now = sockets::accepted_sockets(port);
                ended.accepted = match (&now, &ended.before) {
                    (Some(now), Some(before)) => Some(now.difference(before).copied().collect()),
                    _ => None,
                };
                let lived = ended.started.elapsed();
                retiring.push(ended);
                if stopping.load(Ordering::Acquire) {
                    continue;
                }
                log::error!("accepting connections failed: {error}; restarting the listener");
                // An accept error that repeats at once (EMFILE) must not become a busy loop.
                quick_failures = if lived < Duration::from_millis(500) { quick_failures + 1 } else { 0 };
                if quick_failures > 0 {
                    std::thread::sleep(Duration::from_millis(20u64 << quick_failures.min(6)));
                }
                loop {
                    match spawn_generation(&listener, next_id, now.clone(), &events_tx, &workers) {
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
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if retiring.is_empty() {
            continue;
        }
        let Some(open) = sockets::accepted_sockets(port) else {
            if !warned_no_proc {
                warned_no_proc = true;
                log::warn!("/proc/self/fd is not readable: finished listener generations are kept");
            }
            continue;
        };
        retiring.retain(|g| {
            let done = g.accepted.as_ref().is_some_and(|mine| mine.is_disjoint(&open));
            if done {
                g.retire();
            }
            !done
        });
    }
}

/// Installs the panic hook: every panic is logged through our logger (one line, JSON when
/// configured), and a panic in tiny_http's accept thread (a failed `try_clone` or thread spawn
/// when descriptors or threads run out) starts the next listener generation, since such a
/// death sends no error through the request queue.
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
        let file = info.location().map(|l| l.file()).unwrap_or("");
        let ours = crate::threads::is_ours();
        if !ours && file.contains("tiny_http") && file.ends_with("client.rs") {
            // tiny_http reads a connection's peer address once and unwraps it for each request;
            // a client that resets the connection right after connecting makes that thread of
            // tiny_http end. Only that connection is affected, and it is gone anyway.
            log::debug!("tiny_http dropped a connection reset before it was read: {msg}");
            return;
        }
        log::error!("panic in thread {name} at {location}: {msg}");
        let in_accept_thread = !ours
            && ((file.contains("tiny_http")
                && (file.ends_with("refined_tcp_stream.rs") || file.ends_with("lib.rs")))
                || msg.contains("failed to spawn thread"));
        if in_accept_thread && let Some(events) = EVENTS.get() {
            let error = io::Error::other(format!("tiny_http accept thread panicked: {msg}"));
            let _ = events.send(Event::AcceptEnded { generation: CURRENT, error });
        }
    }));
}
