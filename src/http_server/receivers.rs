//! The threads that take requests from tiny_http's queue and answer them, function calls
//! included, so a call crosses one hand-off (tiny_http's connection thread to the receiver) and
//! no dispatcher.
//!
//! Threads come and go with the load. One at a time holds the *baton* and waits in
//! `Server::recv`; the others wait for the baton. Taking a request and giving it its turn on its
//! connection (`Registry::arrive`) happen under the baton, so a connection's requests are
//! registered in the order tiny_http read them. A thread that leaves to answer a request makes
//! sure `spare` threads are still waiting (starting one if not), so health checks, readiness and
//! refusals are answered at once even while every call is busy; a thread that has waited
//! `IDLE_EXIT` with more than `spare` others waiting ends, so idle resources go back. The total
//! is capped (`max_threads`): past it, requests wait in tiny_http's queue.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tiny_http::Server;

use super::exchange::Exchange;
use super::refusal;
use super::registry::{Arrival, Registry, Turn};
use super::turn;

/// Threads kept waiting for requests beyond the busy ones.
const SPARE: usize = 2;
/// A thread that waited this long for work, with more than `SPARE` others waiting, ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// What answers requests (the watchdog's routing): given each request whose turn has come.
pub(crate) trait Service: Send + Sync {
    fn serve(&self, ex: Exchange);
}

/// What every receiving thread shares, across listener generations.
pub(crate) struct Pool {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) read_timeout: Duration,
    threads: AtomicUsize,
    max_threads: usize,
}

impl Pool {
    pub(crate) fn new(service: Arc<dyn Service>, read_timeout: Duration, max_threads: usize) -> Arc<Pool> {
        Arc::new(Pool { service, read_timeout, threads: AtomicUsize::new(0), max_threads })
    }

    /// Answers `first`, then what comes up on this thread after it (a pipelined request of a
    /// connection whose turn ended here).
    fn serve(&self, first: Turn) {
        let mut next = Some(first);
        while let Some(turn) = next.take() {
            match Exchange::accept(turn, self.read_timeout) {
                Ok(ex) => {
                    // The turn lasts until this thread is done with the call too (its log line,
                    // the upstream connection put back): a client that sends its next request
                    // the moment it has the answer then finds it served here, next, instead of
                    // by a thread woken or started for it.
                    let _held = ex.hold_turn();
                    self.service.serve(ex);
                }
                Err(refused) => refusal::refuse(*refused),
            }
            next = turn::take_next();
        }
    }
}

/// Counts a receiving thread while it lives, also when it unwinds.
struct ThreadPlace<'a>(&'a Pool);

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
    pool: Arc<Pool>,
    /// Someone is waiting in `recv`.
    baton: Mutex<bool>,
    turn: Condvar,
    /// Threads waiting for the baton or holding it.
    idle: AtomicUsize,
    retired: AtomicBool,
    on_accept_error: Box<dyn Fn(io::Error) + Send + Sync>,
}

impl Receivers {
    /// Starts receiving from `server`. `on_accept_error` is told when tiny_http's accept thread
    /// reports that it ended.
    pub(crate) fn start(
        server: Arc<Server>,
        pool: Arc<Pool>,
        on_accept_error: Box<dyn Fn(io::Error) + Send + Sync>,
    ) -> io::Result<Arc<Receivers>> {
        let receivers = Arc::new(Receivers {
            server,
            pool,
            baton: Mutex::new(false),
            turn: Condvar::new(),
            idle: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            on_accept_error,
        });
        for _ in 0..SPARE {
            receivers.spawn()?;
        }
        Ok(receivers)
    }

    /// Stops the threads of a generation that has no connections left.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.server.unblock();
        self.turn.notify_all();
    }

    fn spawn(self: &Arc<Self>) -> io::Result<()> {
        let pool = &self.pool;
        if pool
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < pool.max_threads).then_some(n + 1))
            .is_err()
        {
            return Ok(());
        }
        self.idle.fetch_add(1, Ordering::AcqRel);
        let me = Arc::clone(self);
        let spawned = crate::threads::spawn("fw-worker", move || me.run());
        if let Err(e) = spawned {
            self.idle.fetch_sub(1, Ordering::AcqRel);
            pool.threads.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    fn run(self: Arc<Self>) {
        let _place = ThreadPlace(&self.pool);
        turn::mark_receiver();
        while let Some(arrival) = self.take() {
            let turn = match arrival {
                Arrival::Serve(turn) => turn,
                Arrival::Waiting => continue,
                Arrival::Discard(req) => {
                    refusal::let_go(req);
                    continue;
                }
            };
            // Busy from here on: spare threads are the ones waiting.
            let _busy = Busy::new(&self.idle);
            if self.idle.load(Ordering::Acquire) < SPARE
                && !self.retired.load(Ordering::Acquire)
                && let Err(e) = self.spawn()
            {
                log::error!("cannot start a worker thread: {e}");
            }
            // Calls catch their own panics; this is for a bug anywhere else, which may cost the
            // request but never the thread or its accounting (turns end when their exchange is
            // dropped, and the guards above restore the counts).
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.pool.serve(turn)));
            if served.is_err() {
                log::error!("a request was lost to a bug; the worker goes on");
                while let Some(left) = turn::take_next() {
                    let (req, conn, _) = left.into_parts();
                    refusal::let_go(req);
                    if let Some(registry) = Registry::get() {
                        let (_, discard) = registry.finish(&conn, false);
                        discard.into_iter().for_each(refusal::let_go);
                    }
                }
            }
        }
        crate::io_buffer::IoBuffer::release();
        super::alloc::release_own_stack();
    }

    /// Waits for the baton, then for a request; `None`: this thread ends.
    fn take(&self) -> Option<Arrival> {
        {
            let mut held = self.baton.lock().unwrap_or_else(PoisonError::into_inner);
            while *held {
                if self.retired.load(Ordering::Acquire) {
                    return self.leave();
                }
                if self.idle.load(Ordering::Acquire) <= SPARE {
                    // One of the spares: waits without a timeout (an idle watchdog sleeps).
                    held = self.turn.wait(held).unwrap_or_else(PoisonError::into_inner);
                    continue;
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
            let got = if self.idle.load(Ordering::Acquire) <= SPARE {
                self.server.recv().map(Some)
            } else {
                self.server.recv_timeout(IDLE_EXIT)
            };
            match got {
                Ok(Some(req)) => {
                    let registry = Registry::get()?;
                    return Some(registry.arrive(req));
                }
                Ok(None) => {
                    if self.may_leave() {
                        return None;
                    }
                }
                // `unblock` (a retirement) makes `recv` fail with this kind.
                Err(e) if e.kind() == io::ErrorKind::Other && self.retired.load(Ordering::Acquire) => {}
                Err(e) => (self.on_accept_error)(e),
            }
        }
    }

    /// One idle thread fewer, if more than `SPARE` are idle (or the generation is retired).
    fn may_leave(&self) -> bool {
        let floor = if self.retired.load(Ordering::Acquire) { 0 } else { SPARE };
        self.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > floor).then(|| n - 1)).is_ok()
    }

    fn leave(&self) -> Option<Arrival> {
        self.idle.fetch_sub(1, Ordering::AcqRel);
        None
    }
}
