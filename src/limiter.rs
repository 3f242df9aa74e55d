//! The in-flight counter: `max_inflight` admission (SPEC §6), `/_/ready`'s 429, the drain wait
//! and the `http_requests_in_flight` gauge all read this one number.
//!
//! With `queue_timeout` set, a call that finds every place taken waits for one in a bounded
//! first-come-first-served queue (`queue_size` long) for up to that long before it is refused,
//! as Knative's queue-proxy does, instead of getting 429 at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub(crate) struct Limiter {
    /// 0: admit everything (the count is still kept).
    max: usize,
    in_flight: AtomicUsize,
    /// Longest wait for a place; zero: no queue.
    queue_timeout: Duration,
    queue_size: usize,
    queue: Mutex<Queue>,
    turn: Condvar,
    /// Calls in the queue (read without the lock by `Slot::drop` and the metrics).
    waiting: AtomicUsize,
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
    /// Every place is taken and the queue is full, or the wait timed out (429).
    Busy,
    /// The watchdog is shutting down (503).
    Closing,
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
    pub(crate) fn new(max: usize, queue_timeout: Duration, queue_size: usize) -> Arc<Limiter> {
        let queue_timeout = if max == 0 || queue_size == 0 { Duration::ZERO } else { queue_timeout };
        Arc::new(Limiter {
            max,
            in_flight: AtomicUsize::new(0),
            queue_timeout,
            queue_size,
            queue: Mutex::new(Queue::default()),
            turn: Condvar::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A place now, without waiting.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        if self.max == 0 {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Some(Slot(Arc::clone(self)));
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    /// A place for a function call: at once if one is free and nobody waits for one, else after
    /// waiting in the queue (when there is one) for up to `queue_timeout`. Returns how long it
    /// waited too.
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<(Slot, Duration), Refusal> {
        if self.queue_timeout.is_zero() || self.waiting.load(Ordering::Acquire) == 0 {
            if let Some(slot) = self.try_acquire() {
                return Ok((slot, Duration::ZERO));
            }
            if self.queue_timeout.is_zero() {
                return Err(Refusal::Busy);
            }
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
                break Ok((slot, start.elapsed()));
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

    /// Refuses every waiting call and every later one (the drain is over).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.turn.notify_all();
    }

    /// No call can get a place without waiting longer than it may: every place is taken, and
    /// the queue, if there is one, is full.
    pub(crate) fn saturated(&self) -> bool {
        if self.max == 0 || self.in_flight() < self.max {
            return false;
        }
        self.queue_timeout.is_zero() || self.waiting() >= self.queue_size
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Calls waiting in the queue for a place.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A queue is configured.
    pub(crate) fn queues(&self) -> bool {
        !self.queue_timeout.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that waits in `l`'s queue (once this returns).
    fn queued(l: &Arc<Limiter>) -> std::thread::JoinHandle<Result<(), Refusal>> {
        let waiter = {
            let l = Arc::clone(l);
            std::thread::spawn(move || l.acquire().map(|_| ()))
        };
        while l.waiting() == 0 {
            std::thread::yield_now();
        }
        waiter
    }

    #[test]
    fn admits_up_to_max_and_releases_on_drop() {
        let l = Limiter::new(2, Duration::ZERO, 0);
        let a = l.try_acquire().expect("first");
        let b = l.try_acquire().expect("second");
        assert!(l.acquire().is_err() && l.saturated());
        drop(a);
        assert!(!l.saturated());
        let c = l.try_acquire().expect("after release");
        assert_eq!(l.in_flight(), 2);
        drop((b, c));
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn unlimited_still_counts() {
        let l = Limiter::new(0, Duration::from_secs(1), 4);
        let slots: Vec<_> = (0..100).filter_map(|_| l.acquire().ok()).collect();
        assert_eq!((slots.len(), l.in_flight(), l.saturated(), l.queues()), (100, 100, false, false));
    }

    #[test]
    fn a_waiting_call_gets_the_place_freed_for_it() {
        let l = Limiter::new(1, Duration::from_secs(30), 4);
        let (held, _) = l.acquire().expect("first");
        let waiter = {
            let l = Arc::clone(&l);
            std::thread::spawn(move || l.acquire().map(|(_, waited)| waited))
        };
        while l.waiting() == 0 {
            std::thread::yield_now();
        }
        assert!(!l.saturated(), "one waits, three more may");
        drop(held);
        let waited = waiter.join().expect("waiter").expect("a place");
        assert!(waited < Duration::from_secs(30));
        assert_eq!((l.in_flight(), l.waiting()), (0, 0));
    }

    #[test]
    fn the_wait_ends_at_queue_timeout_and_a_full_queue_refuses_at_once() {
        let l = Limiter::new(1, Duration::from_millis(50), 1);
        let _held = l.acquire().expect("first");
        let waiter = queued(&l);
        assert!(l.saturated());
        assert_eq!(l.acquire().map(|_| ()), Err(Refusal::Busy), "queue full");
        assert_eq!(waiter.join().expect("waiter"), Err(Refusal::Busy), "timed out");
        assert_eq!(l.waiting(), 0);
    }

    #[test]
    fn closing_refuses_the_waiting_calls() {
        let l = Limiter::new(1, Duration::from_secs(30), 4);
        let _held = l.acquire().expect("first");
        let waiter = queued(&l);
        l.close();
        assert_eq!(waiter.join().expect("waiter"), Err(Refusal::Closing));
    }
}
