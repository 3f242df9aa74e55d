//! One thread that sleeps until the earliest of many deadlines and hands each due entry to its
//! owner. With nothing queued it sleeps until woken: an idle watchdog does not wake up.
//!
//! Entries are cheap to queue and never removed: an owner whose deadline moved looks again when
//! the stale entry comes, and queues the next one (see `registry`).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub(crate) struct Timer<T> {
    inner: Mutex<Inner<T>>,
    wake: Condvar,
}

struct Inner<T> {
    entries: BTreeMap<(Instant, u64), T>,
    seq: u64,
    /// When the thread wakes next (`None`: when woken).
    next_wake: Option<Instant>,
}

impl<T: Send + 'static> Timer<T> {
    /// Starts the thread; `due` is called (outside any lock) with each entry whose time came.
    pub(crate) fn start(due: impl Fn(T, Instant) + Send + 'static) -> io::Result<Arc<Timer<T>>> {
        let timer = Arc::new(Timer {
            inner: Mutex::new(Inner { entries: BTreeMap::new(), seq: 0, next_wake: None }),
            wake: Condvar::new(),
        });
        let runner = Arc::clone(&timer);
        crate::threads::spawn("fw-timer", move || runner.run(due))?;
        Ok(timer)
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `entry` back at `at`.
    pub(crate) fn schedule(&self, at: Instant, entry: T) {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner.entries.insert((at, seq), entry);
        if inner.next_wake.is_none_or(|w| at < w) {
            self.wake.notify_one();
        }
    }

    fn run(&self, due: impl Fn(T, Instant)) {
        let mut inner = self.lock();
        loop {
            let now = Instant::now();
            let mut ready = Vec::new();
            while let Some(entry) = inner.entries.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((at, _), value) = entry.remove_entry();
                ready.push((at, value));
            }
            if !ready.is_empty() {
                drop(inner);
                for (at, value) in ready {
                    due(value, at);
                }
                inner = self.lock();
                continue;
            }
            let next = inner.entries.first_key_value().map(|(k, _)| k.0);
            inner.next_wake = next;
            inner = match next {
                None => self.wake.wait(inner).unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    self.wake.wait_timeout(inner, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0)
                }
            };
            inner.next_wake = None;
        }
    }
}
