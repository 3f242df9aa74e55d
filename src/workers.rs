//! The threads that answer requests (decision D1): each takes requests from tiny_http's queue
//! itself and answers them, function calls included, so a call crosses one hand-off (tiny_http's
//! connection thread to the worker) and no dispatcher.
//!
//! Threads come and go with the load. One at a time holds the *baton* and waits in
//! `Server::recv`; the others wait for the baton. Taking a request and giving it its turn on its
//! connection (`Connections::arrive`) happen under the baton, so a connection's requests are
//! registered in the order tiny_http parsed them. A thread that leaves to answer a request makes
//! sure `SPARE` threads are still waiting (starting one if not), so health checks, readiness and
//! 429s are answered at once even while every call slot is busy; a thread that has waited
//! `IDLE_EXIT` with more than `SPARE` others waiting ends, so idle resources go back.
//!
//! Function calls run on at most `Config::workers()` threads at once (`max_inflight`, else
//! `max_workers`). With `max_inflight` set, the limiter refuses call N+1 first (429). Without
//! it, a call that finds every worker busy waits on a bounded crossbeam queue, taken by the next
//! thread that finishes (the double check in `next_waiting` keeps one from being stranded); a
//! call that finds the queue full gets 429.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use tiny_http::Server;

use std::net::SocketAddr;

use crate::connections::{Arrival, Connections, Turn};
use crate::dispatch::{self, Routed};
use crate::exchange::{self, Exchange};
use crate::watchdog::Watchdog;

/// Threads kept waiting for requests beyond the busy ones.
const SPARE: usize = 2;
/// A thread that waited this long for work, with more than `SPARE` others waiting, ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Threads beyond the call workers, for answers that are not calls (health, 429, 4xx, a
/// connection's turn waiting on a slow reader). Each is held by a different connection.
const CONTROL_HEADROOM: usize = 512;

/// What every receiving thread shares, across listener generations.
pub(crate) struct Workers {
    pub(crate) wd: Arc<Watchdog>,
    /// Threads running function calls, at most `cap`.
    calls: AtomicUsize,
    cap: usize,
    waiting_tx: Sender<Box<Exchange>>,
    waiting_rx: Receiver<Box<Exchange>>,
    /// All threads, for the cap.
    threads: AtomicUsize,
    max_threads: usize,
}

/// Work for a thread.
enum Job<'a> {
    Turn(Turn),
    /// A call that waited for a worker, with the worker claimed for it.
    Waited(Box<Exchange>, Claim<'a>),
}

impl Workers {
    pub(crate) fn new(wd: Arc<Watchdog>) -> Arc<Workers> {
        let cap = wd.config.workers();
        // Calls waiting in the queue for a max_inflight place hold their receiving thread.
        let max_threads = cap + wd.config.queued_calls() + CONTROL_HEADROOM;
        let (waiting_tx, waiting_rx) = bounded(cap);
        Arc::new(Workers {
            wd,
            calls: AtomicUsize::new(0),
            cap,
            waiting_tx,
            waiting_rx,
            threads: AtomicUsize::new(0),
            max_threads,
        })
    }

    /// Claims one of the `cap` call workers; it is given back when the claim is dropped, also
    /// while unwinding.
    pub(crate) fn claim(&self) -> Option<Claim<'_>> {
        self.calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.cap).then_some(n + 1))
            .ok()
            .map(|_| Claim(self))
    }

    /// Queues a call for the next free worker; gives it back if the queue is full.
    pub(crate) fn wait_for_worker(&self, ex: Box<Exchange>) -> Result<(), Box<Exchange>> {
        self.waiting_tx.try_send(ex).map_err(|e| e.into_inner())
    }

    /// A queued call, with a worker claimed for it. Checked again after claiming, so a call
    /// queued while the last worker was finishing is never left behind.
    fn next_waiting(&self) -> Option<(Box<Exchange>, Claim<'_>)> {
        while !self.waiting_rx.is_empty() {
            // Every worker busy: one of them takes it when it finishes.
            let claim = self.claim()?;
            if let Ok(ex) = self.waiting_rx.try_recv() {
                return Some((ex, claim));
            }
        }
        None
    }

    /// Answers `first`, then the requests that waited behind it on its connection, then calls
    /// that waited for a worker.
    fn serve(&self, first: Turn) {
        let conns = &self.wd.connections;
        let mut job = Some(Job::Turn(first));
        while let Some(current) = job.take() {
            let (mut end, routed) = match current {
                Job::Turn(turn) => {
                    let end = TurnEnd::new(conns, turn.req.remote_addr().copied());
                    (end, dispatch::route(self, turn))
                }
                Job::Waited(ex, claim) => {
                    let end = TurnEnd::new(conns, ex.info.peer);
                    dispatch::run_call(&self.wd, *ex);
                    drop(claim);
                    (end, Routed::Done)
                }
            };
            match routed {
                Routed::Done => {
                    if let Some(turn) = end.next() {
                        job = Some(Job::Turn(turn));
                        continue;
                    }
                }
                // Someone else ends it.
                Routed::Detached => end.forget(),
            }
            job = self.next_waiting().map(|(ex, claim)| Job::Waited(ex, claim));
        }
    }
}

/// One of the call workers, claimed.
pub(crate) struct Claim<'a>(&'a Workers);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's turn: it must end (`next`), or the connection's later requests would wait
/// forever. If it is dropped without ending, by an unexpected unwind, the connection is cut and
/// what waited behind it let go.
struct TurnEnd<'a> {
    conns: &'a Arc<Connections>,
    peer: Option<SocketAddr>,
    open: bool,
}

impl<'a> TurnEnd<'a> {
    fn new(conns: &'a Arc<Connections>, peer: Option<SocketAddr>) -> Self {
        TurnEnd { conns, peer, open: true }
    }

    /// Ends the turn: the connection's next request, if one waits.
    fn next(&mut self) -> Option<Turn> {
        self.open = false;
        self.end(true)
    }

    /// The turn is ended elsewhere (a call waiting for a worker, a websocket session).
    fn forget(&mut self) {
        self.open = false;
    }

    fn end(&self, keep: bool) -> Option<Turn> {
        let (next, discard) = self.conns.finish(self.peer, keep);
        for req in discard {
            exchange::let_go(req, self.conns);
        }
        next
    }
}

impl Drop for TurnEnd<'_> {
    fn drop(&mut self) {
        if self.open {
            self.end(false);
        }
    }
}

/// Counts a receiving thread while it lives, also when it unwinds.
struct ThreadPlace<'a>(&'a Workers);

impl Drop for ThreadPlace<'_> {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A receiving thread that is not waiting: counted out of the idle ones while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(idle: &'a AtomicUsize) -> Self {
        idle.fetch_sub(1, Ordering::AcqRel);
        Busy(idle)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The receiving threads of one listener generation.
pub(crate) struct Receivers {
    server: Arc<Server>,
    workers: Arc<Workers>,
    /// Someone is waiting in `recv`.
    baton: Mutex<bool>,
    turn: Condvar,
    /// Threads waiting for the baton or holding it.
    idle: AtomicUsize,
    spare: usize,
    retired: AtomicBool,
    on_accept_error: Box<dyn Fn(io::Error) + Send + Sync>,
}

impl Receivers {
    /// Starts receiving from `server` with `spare` threads waiting. `on_accept_error` is told
    /// when tiny_http's accept thread reports that it ended.
    pub(crate) fn start(
        server: Arc<Server>,
        workers: Arc<Workers>,
        spare: usize,
        on_accept_error: Box<dyn Fn(io::Error) + Send + Sync>,
    ) -> io::Result<Arc<Receivers>> {
        let receivers = Arc::new(Receivers {
            server,
            workers,
            baton: Mutex::new(false),
            turn: Condvar::new(),
            idle: AtomicUsize::new(0),
            spare: spare.max(1),
            retired: AtomicBool::new(false),
            on_accept_error,
        });
        for _ in 0..receivers.spare {
            receivers.spawn()?;
        }
        Ok(receivers)
    }

    /// The default number of waiting threads for the generation that accepts.
    pub(crate) fn default_spare() -> usize {
        SPARE
    }

    /// Stops the threads of a generation that has no connections left.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.server.unblock();
        self.turn.notify_all();
    }

    fn spawn(self: &Arc<Self>) -> io::Result<()> {
        let w = &self.workers;
        if w.threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < w.max_threads).then_some(n + 1))
            .is_err()
        {
            return Ok(());
        }
        self.idle.fetch_add(1, Ordering::AcqRel);
        let me = Arc::clone(self);
        let spawned = crate::threads::spawn("fw-worker", move || me.run());
        if let Err(e) = spawned {
            self.idle.fetch_sub(1, Ordering::AcqRel);
            w.threads.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    fn run(self: Arc<Self>) {
        let _place = ThreadPlace(&self.workers);
        while let Some(arrival) = self.take() {
            if let Arrival::Waiting = arrival {
                continue;
            }
            // Busy from here on, whatever it is: spare threads are the ones waiting.
            let _busy = Busy::new(&self.idle);
            if self.idle.load(Ordering::Acquire) < self.spare
                && !self.retired.load(Ordering::Acquire)
                && let Err(e) = self.spawn()
            {
                log::error!("cannot start a worker thread: {e}");
            }
            // Calls catch their own panics; this is for a bug anywhere else, which may cost the
            // request but never the thread or its accounting (the guards restore it).
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match arrival {
                Arrival::Serve(turn) => self.workers.serve(turn),
                Arrival::Discard(req) | Arrival::Recheck(req) => {
                    exchange::let_go(req, &self.workers.wd.connections)
                }
                Arrival::Waiting => {}
            }));
            if handled.is_err() {
                log::error!("a request was lost to a bug; the worker goes on");
            }
        }
        crate::modes::IoBuffer::release();
        crate::alloc::release_own_stack();
    }

    /// Waits for the baton, then for a request; `None`: this thread ends.
    fn take(&self) -> Option<Arrival> {
        {
            let mut held = self.baton.lock().unwrap_or_else(PoisonError::into_inner);
            while *held {
                if self.retired.load(Ordering::Acquire) {
                    return self.leave();
                }
                let (guard, waited) =
                    self.turn.wait_timeout(held, IDLE_EXIT).unwrap_or_else(PoisonError::into_inner);
                held = guard;
                if waited.timed_out() && *held && self.may_leave() {
                    return None;
                }
            }
            *held = true;
        }
        let arrival = self.receive();
        *self.baton.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.turn.notify_one();
        arrival
    }

    /// Holding the baton: the next request, in tiny_http's order. `None`: this thread ends (and
    /// no longer counts as idle).
    fn receive(&self) -> Option<Arrival> {
        loop {
            if self.retired.load(Ordering::Acquire) {
                return self.leave();
            }
            match self.server.recv_timeout(IDLE_EXIT) {
                Ok(Some(req)) => {
                    let conns = &self.workers.wd.connections;
                    return Some(match conns.arrive(req) {
                        Arrival::Recheck(req) => conns.recheck(req),
                        arrival => arrival,
                    });
                }
                Ok(None) => {
                    if self.may_leave() {
                        return None;
                    }
                }
                Err(e) => (self.on_accept_error)(e),
            }
        }
    }

    /// One idle thread fewer, if more than `spare` are idle (or the generation is retired).
    fn may_leave(&self) -> bool {
        let floor = if self.retired.load(Ordering::Acquire) { 0 } else { self.spare };
        let left =
            self.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > floor).then(|| n - 1));
        left.is_ok()
    }

    fn leave(&self) -> Option<Arrival> {
        self.idle.fetch_sub(1, Ordering::AcqRel);
        None
    }
}
