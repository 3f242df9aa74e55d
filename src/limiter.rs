//! The in-flight counter: `max_inflight` admission (SPEC §6), `/_/ready`'s 429, the drain wait
//! and the `http_requests_in_flight` gauge all read this one number.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct Limiter {
    /// 0: admit everything (the count is still kept).
    max: usize,
    in_flight: AtomicUsize,
}

/// One admitted function call; dropping it (also while unwinding) frees the place.
pub(crate) struct Slot(Arc<Limiter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    pub(crate) fn new(max: usize) -> Arc<Limiter> {
        Arc::new(Limiter { max, in_flight: AtomicUsize::new(0) })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

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

    /// All `max_inflight` places are taken.
    pub(crate) fn saturated(&self) -> bool {
        self.max > 0 && self.in_flight() >= self.max
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_max_and_releases_on_drop() {
        let l = Limiter::new(2);
        let a = l.try_acquire().expect("first");
        let b = l.try_acquire().expect("second");
        assert!(l.try_acquire().is_none() && l.saturated());
        drop(a);
        assert!(!l.saturated());
        let c = l.try_acquire().expect("after release");
        assert_eq!(l.in_flight(), 2);
        drop((b, c));
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn unlimited_still_counts() {
        let l = Limiter::new(0);
        let slots: Vec<_> = (0..100).filter_map(|_| l.try_acquire()).collect();
        assert_eq!((slots.len(), l.in_flight(), l.saturated()), (100, 100, false));
    }
}
