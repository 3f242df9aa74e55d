//! exec_timeout's clock: one thread that ends calls whose time is up, whatever their own thread
//! is blocked on (a forked function's process group is killed, an upstream connection is shut).
//!
//! With nothing due the thread sleeps until woken, so an idle watchdog does not wake up. A new
//! deadline later than the one the thread sleeps towards wakes nothing: with the usual
//! exec_timeout every new deadline is later than all others, so scheduling one costs a lock
//! and no context switch. A call that ends first removes its deadline (`DeadlineGuard`).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

/// What a deadline ends. Called with the clock's lock held: a call that removes its deadline
/// first (dropping its guard) is sure `expire` is not running and will not run.
pub(crate) trait Expire: Send + Sync {
    fn expire(&self);
}

pub(crate) struct Deadlines {
    due: Mutex<Due>,
    wake: Condvar,
}

struct Due {
    entries: BTreeMap<(Instant, u64), Weak<dyn Expire>>,
    seq: u64,
    /// When the thread wakes next (`None`: when woken).
    next_wake: Option<Instant>,
}

/// Removes its deadline when dropped (the call ended first).
pub(crate) struct DeadlineGuard {
    deadlines: Arc<Deadlines>,
    key: (Instant, u64),
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        self.deadlines.lock().entries.remove(&self.key);
    }
}

impl Deadlines {
    pub(crate) fn start() -> io::Result<Arc<Deadlines>> {
        let d = Arc::new(Deadlines {
            due: Mutex::new(Due { entries: BTreeMap::new(), seq: 0, next_wake: None }),
            wake: Condvar::new(),
        });
        let runner = Arc::clone(&d);
        crate::threads::spawn("fw-deadlines", move || runner.run())?;
        Ok(d)
    }

    fn lock(&self) -> MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends `what` at `at`, unless the guard is dropped first.
    pub(crate) fn schedule<T: Expire + 'static>(
        self: &Arc<Self>,
        at: Instant,
        what: &Arc<T>,
    ) -> DeadlineGuard {
        let weak: Weak<dyn Expire> = Arc::downgrade(what) as Weak<dyn Expire>;
        let mut due = self.lock();
        due.seq += 1;
        let key = (at, due.seq);
        due.entries.insert(key, weak);
        if due.next_wake.is_none_or(|w| at < w) {
            self.wake.notify_one();
        }
        DeadlineGuard { deadlines: Arc::clone(self), key }
    }

    fn run(&self) {
        let mut due = self.lock();
        loop {
            let now = Instant::now();
            if let Some(entry) = due.entries.first_entry()
                && entry.key().0 <= now
            {
                if let Some(what) = entry.remove().upgrade() {
                    what.expire();
                }
                continue;
            }
            let next = due.entries.first_key_value().map(|(k, _)| k.0);
            due.next_wake = next;
            due = match next {
                None => self.wake.wait(due).unwrap_or_else(PoisonError::into_inner),
                Some(t) => self
                    .wake
                    .wait_timeout(due, t.saturating_duration_since(now))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0),
            };
            due.next_wake = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    struct Flag(AtomicBool);

    impl Expire for Flag {
        fn expire(&self) {
            self.0.store(true, Ordering::Release);
        }
    }

    fn wait_for(flag: &Flag, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if flag.0.load(Ordering::Acquire) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_deadline_ends_its_call_and_a_dropped_guard_prevents_it() {
        let d = Deadlines::start().expect("start");
        let (late, early) = (Arc::new(Flag(AtomicBool::new(false))), Arc::new(Flag(AtomicBool::new(false))));
        let now = Instant::now();
        // The earlier deadline is scheduled second: the sleeping thread must be woken for it.
        let _late = d.schedule(now + Duration::from_millis(300), &late);
        let cancelled = d.schedule(now + Duration::from_millis(50), &Arc::new(Flag(AtomicBool::new(false))));
        let _early = d.schedule(now + Duration::from_millis(100), &early);
        drop(cancelled);
        assert!(wait_for(&early, Duration::from_secs(10)), "the earlier deadline fired");
        assert!(!late.0.load(Ordering::Acquire), "the later one not yet");
        assert!(wait_for(&late, Duration::from_secs(10)), "the later deadline fired");
        let kept = Arc::new(Flag(AtomicBool::new(false)));
        let guard = d.schedule(Instant::now() + Duration::from_millis(50), &kept);
        drop(guard);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!kept.0.load(Ordering::Acquire), "a removed deadline never fires");
    }
}
