//! Admission: whether a function call runs now, waits for a place, or is refused, and the one
//! text a refused call gets. `/_/ready`'s 429, the drain's wait and the
//! `http_requests_in_flight` gauge all read the same count.
//!
//! Calls run at most `max_inflight` at a time, or, when that is not set, `max_workers` at a
//! time. Past the limit:
//! - with `max_inflight` and `queue_timeout`, a call waits for a place on its own thread, first
//!   come first served, in a queue of `queue_size`, for up to `queue_timeout` (as Knative's
//!   queue-proxy does) — the call keeps its thread, so health and refusals keep theirs;
//! - with `max_inflight` alone, it is refused at once (429), as in the Go watchdog;
//! - without `max_inflight`, it is parked (holding no thread) until a call ends; the thread of
//!   the call that ended runs it. `max_workers` calls may be parked; beyond, 429.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};

/// A call given its admission: run it with the place, or answer the refusal.
pub(crate) type Call = Box<dyn FnOnce(Result<Admitted, Refusal>) + Send>;

pub(crate) struct Limiter {
    /// Calls that run at once.
    max: usize,
    /// `max` is `max_inflight` (the user's limit, which readiness reports), not `max_workers`.
    declared: bool,
    in_flight: AtomicUsize,
    /// Longest wait for a place on the caller's thread; zero: no such queue.
    queue_timeout: Duration,
    queue_size: usize,
    queue: Mutex<Queue>,
    turn: Condvar,
    /// Calls in that queue (read without the lock by `Slot::drop` and the metrics).
    waiting: AtomicUsize,
    /// Parked calls (no `max_inflight`), and how many there are.
    parked_tx: Sender<Call>,
    parked_rx: Receiver<Call>,
    parked: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    /// Tickets in arrival order; the front one takes the next free place.
    tickets: VecDeque<u64>,
    next: u64,
    /// The drain is over: waiting calls are refused.
    closed: bool,
}

/// Why a call got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every place is taken and no wait is possible or it timed out (429).
    Busy,
    /// The watchdog is shutting down (503).
    Closing,
}

/// A call that got a place.
pub(crate) struct Admitted {
    pub(crate) slot: Slot,
    /// How long it waited for it.
    pub(crate) waited: Duration,
}

/// One admitted function call; dropping it (also while unwinding) frees the place.
pub(crate) struct Slot(Arc<Limiter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.0.waiting.load(Ordering::Acquire) > 0 {
            // Under the lock, so a waiter between its check and its wait cannot miss it.
            drop(self.0.lock());
            self.0.turn.notify_all();
        }
    }
}

impl Limiter {
    /// `max_inflight` (0: none), `max_workers`, and the queue (`queue_timeout` zero: none).
    pub(crate) fn new(
        max_inflight: usize,
        max_workers: usize,
        queue_timeout: Duration,
        queue_size: usize,
    ) -> Arc<Limiter> {
        let declared = max_inflight > 0;
        let queue_timeout = if declared && queue_size > 0 { queue_timeout } else { Duration::ZERO };
        let (parked_tx, parked_rx) = bounded(if declared { 0 } else { max_workers });
        Arc::new(Limiter {
            max: if declared { max_inflight } else { max_workers.max(1) },
            declared,
            in_flight: AtomicUsize::new(0),
            queue_timeout,
            queue_size,
            queue: Mutex::new(Queue::default()),
            turn: Condvar::new(),
            waiting: AtomicUsize::new(0),
            parked_tx,
            parked_rx,
            parked: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The text of a 429.
    pub(crate) fn busy_message(&self) -> String {
        format!("Concurrent request limit exceeded. Max concurrent requests: {}\n", self.max)
    }

    /// A place now, without waiting.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    /// Admits `call`: runs it now on this thread with a place, after waiting for one (when that
    /// is how the limit is kept), or parks it; or runs it with the refusal, so it can answer.
    pub(crate) fn admit(self: &Arc<Self>, call: impl FnOnce(Result<Admitted, Refusal>) + Send + 'static) {
        if !self.queue_timeout.is_zero() {
            return call(self.acquire_waiting());
        }
        if let Some(slot) = self.try_acquire() {
            return call(Ok(Admitted { slot, waited: Duration::ZERO }));
        }
        if self.declared {
            return call(Err(Refusal::Busy));
        }
        let since = Instant::now();
        let call: Call = Box::new(move |admission| {
            call(admission.map(|a| Admitted { slot: a.slot, waited: since.elapsed() }))
        });
        self.parked.fetch_add(1, Ordering::AcqRel);
        match self.parked_tx.try_send(call) {
            // A place may have come free while it was being parked.
            Ok(()) => self.run_parked(),
            Err(e) => {
                self.parked.fetch_sub(1, Ordering::AcqRel);
                (e.into_inner())(Err(Refusal::Busy));
            }
        }
    }

    /// Runs parked calls on this thread while places are free (after a call of this thread
    /// ended). Checked again after taking a place, so a call parked while the last call was
    /// ending is never left behind.
    pub(crate) fn run_parked(self: &Arc<Self>) {
        while self.parked.load(Ordering::Acquire) > 0 {
            let Some(slot) = self.try_acquire() else {
                // Every place is taken: the call that frees one runs it.
                return;
            };
            match self.parked_rx.try_recv() {
                Ok(call) => {
                    self.parked.fetch_sub(1, Ordering::AcqRel);
                    call(Ok(Admitted { slot, waited: Duration::ZERO }));
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// A place for a call in the timed queue: at once if one is free and nobody waits, else
    /// after waiting in the queue for up to `queue_timeout`.
    fn acquire_waiting(self: &Arc<Self>) -> Result<Admitted, Refusal> {
        if self.waiting.load(Ordering::Acquire) == 0
            && let Some(slot) = self.try_acquire()
        {
            return Ok(Admitted { slot, waited: Duration::ZERO });
        }
        let start = Instant::now();
        let deadline = start + self.queue_timeout;
        let mut q = self.lock();
        if q.closed {
            return Err(Refusal::Closing);
        }
        if q.tickets.len() >= self.queue_size {
            return Err(Refusal::Busy);
        }
        let ticket = q.next;
        q.next += 1;
        q.tickets.push_back(ticket);
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let result = loop {
            if q.closed {
                break Err(Refusal::Closing);
            }
            if q.tickets.front() == Some(&ticket)
                && let Some(slot) = self.try_acquire()
            {
                break Ok(Admitted { slot, waited: start.elapsed() });
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(Refusal::Busy);
            }
            q = self.turn.wait_timeout(q, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        };
        q.tickets.retain(|t| *t != ticket);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        drop(q);
        // The next in line may take a place now (or the one this call leaves unused).
        self.turn.notify_all();
        result
    }

    /// Refuses every waiting call and every later one (the drain is over). Parked calls are
    /// answered here, on the caller's thread.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.turn.notify_all();
        while let Ok(call) = self.parked_rx.try_recv() {
            self.parked.fetch_sub(1, Ordering::AcqRel);
            call(Err(Refusal::Closing));
        }
    }

    /// No call can get a place without waiting longer than it may, by the user's limit: every
    /// `max_inflight` place is taken, and the queue, if there is one, is full.
    pub(crate) fn saturated(&self) -> bool {
        if !self.declared || self.in_flight() < self.max {
            return false;
        }
        self.queue_timeout.is_zero() || self.waiting() >= self.queue_size
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Calls waiting for a place (in the timed queue, or parked).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire) + self.parked.load(Ordering::Acquire)
    }

    /// A timed queue is configured.
    pub(crate) fn queues(&self) -> bool {
        !self.queue_timeout.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Admits a call that reports its admission on a channel and then holds its place until
    /// told to let go (or, refused, just reports it).
    fn call(l: &Arc<Limiter>) -> (mpsc::Receiver<Result<Duration, Refusal>>, mpsc::Sender<()>) {
        let (report_tx, report) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let l2 = Arc::clone(l);
        std::thread::spawn(move || {
            l2.admit(move |admission| match admission {
                Ok(a) => {
                    let _ = report_tx.send(Ok(a.waited));
                    let _ = release_rx.recv();
                    drop(a.slot);
                }
                Err(r) => {
                    let _ = report_tx.send(Err(r));
                }
            });
        });
        (report, release)
    }

    fn within<T>(rx: &mpsc::Receiver<T>) -> T {
        rx.recv_timeout(Duration::from_secs(10)).expect("an admission within 10 s")
    }

    #[test]
    fn admits_up_to_max_inflight_then_refuses_with_one_text() {
        let l = Limiter::new(2, 1024, Duration::ZERO, 0);
        let (a, release_a) = call(&l);
        let (b, _hold_b) = call(&l);
        assert!(within(&a).is_ok() && within(&b).is_ok());
        let (c, _) = call(&l);
        assert_eq!(within(&c), Err(Refusal::Busy));
        assert!(l.saturated());
        assert_eq!(l.busy_message(), "Concurrent request limit exceeded. Max concurrent requests: 2\n");
        drop(release_a);
        while l.in_flight() != 1 {
            std::thread::yield_now();
        }
        assert!(!l.saturated());
    }

    #[test]
    fn without_max_inflight_calls_beyond_max_workers_are_parked_then_run() {
        let l = Limiter::new(0, 1, Duration::ZERO, 0);
        let (a, release_a) = call(&l);
        assert!(within(&a).is_ok());
        // Parked: no answer yet, and readiness does not report max_workers.
        let (b, release_b) = call(&l);
        while l.waiting() != 1 {
            std::thread::yield_now();
        }
        assert!(!l.saturated());
        // The parked queue holds max_workers calls; one more is refused.
        let (c, _) = call(&l);
        assert_eq!(within(&c), Err(Refusal::Busy));
        assert!(b.try_recv().is_err(), "still parked");
        // The call that ends runs the parked one on its thread.
        drop(release_a);
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.try_recv().is_err(), "parked calls run when their thread looks");
        // (Run on a thread of its own: the parked call runs on it and holds it until released.)
        let runner = {
            let l = Arc::clone(&l);
            std::thread::spawn(move || l.run_parked())
        };
        assert!(within(&b).is_ok());
        drop(release_b);
        runner.join().expect("the parked call ran and ended");
    }

    #[test]
    fn a_waiting_call_gets_the_place_freed_for_it() {
        let l = Limiter::new(1, 1024, Duration::from_secs(30), 4);
        let (a, release_a) = call(&l);
        assert!(within(&a).is_ok());
        let (b, _hold_b) = call(&l);
        while l.waiting() == 0 {
            std::thread::yield_now();
        }
        assert!(!l.saturated(), "one waits, three more may");
        drop(release_a);
        let waited = within(&b).expect("a place");
        assert!(waited < Duration::from_secs(30));
    }

    #[test]
    fn the_wait_ends_at_queue_timeout_and_a_full_queue_refuses_at_once() {
        let l = Limiter::new(1, 1024, Duration::from_millis(50), 1);
        let (a, _hold_a) = call(&l);
        assert!(within(&a).is_ok());
        let (b, _) = call(&l);
        while l.waiting() == 0 {
            std::thread::yield_now();
        }
        assert!(l.saturated());
        let (c, _) = call(&l);
        assert_eq!(within(&c), Err(Refusal::Busy), "queue full");
        assert_eq!(within(&b), Err(Refusal::Busy), "timed out");
    }

    #[test]
    fn closing_refuses_the_waiting_and_the_parked_calls() {
        let l = Limiter::new(1, 1024, Duration::from_secs(30), 4);
        let (a, _hold_a) = call(&l);
        assert!(within(&a).is_ok());
        let (b, _) = call(&l);
        while l.waiting() == 0 {
            std::thread::yield_now();
        }
        l.close();
        assert_eq!(within(&b), Err(Refusal::Closing));

        let l = Limiter::new(0, 1, Duration::ZERO, 0);
        let (a, _hold) = call(&l);
        assert!(within(&a).is_ok());
        let (b, _) = call(&l);
        while l.waiting() != 1 {
            std::thread::yield_now();
        }
        l.close();
        assert_eq!(within(&b), Err(Refusal::Closing));
    }
}
