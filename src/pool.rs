//! A thread pool that grows on demand up to a fixed size, fed by a bounded crossbeam queue.
//! Every thread runs the pool's one handler on the messages it receives; a message refused
//! because the queue is full comes back to the sender, who can still answer it.
//!
//! Threads are started lazily (startup stays fast and idle memory small) and then kept. The
//! `balance` counter is idle threads minus queued jobs: a job that finds no idle thread starts a
//! new one while the pool is below its size, so N admitted calls on an N-thread pool never wait
//! behind each other.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

pub(crate) struct Pool<T: Send + 'static> {
    name: &'static str,
    tx: Sender<T>,
    rx: Receiver<T>,
    handler: Box<dyn Fn(T) + Send + Sync>,
    max_threads: usize,
    threads: AtomicUsize,
    balance: AtomicIsize,
}

impl<T: Send + 'static> Pool<T> {
    pub(crate) fn new(
        name: &'static str,
        max_threads: usize,
        queue: usize,
        handler: impl Fn(T) + Send + Sync + 'static,
    ) -> Arc<Pool<T>> {
        let (tx, rx) = bounded(queue.max(1));
        Arc::new(Pool {
            name,
            tx,
            rx,
            handler: Box::new(handler),
            max_threads: max_threads.max(1),
            threads: AtomicUsize::new(0),
            balance: AtomicIsize::new(0),
        })
    }

    /// Queues a message; gives it back when the queue is full.
    pub(crate) fn submit(self: &Arc<Self>, job: T) -> Result<(), T> {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => return Err(job),
        }
        if self.balance.fetch_sub(1, Ordering::AcqRel) <= 0 {
            self.grow();
        }
        Ok(())
    }

    /// Queues a message, waiting for room when the queue is full.
    pub(crate) fn submit_wait(self: &Arc<Self>, job: T) {
        if let Err(job) = self.submit(job)
            && self.tx.send(job).is_ok()
            && self.balance.fetch_sub(1, Ordering::AcqRel) <= 0
        {
            self.grow();
        }
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }

    fn grow(self: &Arc<Self>) {
        let claimed = self
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_threads).then_some(n + 1))
            .is_ok();
        if !claimed {
            return;
        }
        let pool = Arc::clone(self);
        let spawned = std::thread::Builder::new().name(format!("fw-{}", self.name)).spawn(move || pool.run());
        if let Err(e) = spawned {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            log::error!("cannot start a {} thread: {e}", self.name);
        }
    }

    fn run(&self) {
        loop {
            self.balance.fetch_add(1, Ordering::AcqRel);
            let Ok(job) = self.rx.recv() else { return };
            // The handler's own catch turns a panic into a 500; this one keeps the thread alive
            // whatever the handler does.
            if catch_unwind(AssertUnwindSafe(|| (self.handler)(job))).is_err() {
                log::error!("a {} job panicked; the thread carries on", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    type Job = Box<dyn FnOnce() + Send>;

    fn closures(max: usize, queue: usize) -> Arc<Pool<Job>> {
        Pool::new("test", max, queue, |job: Job| job())
    }

    #[test]
    fn n_jobs_on_n_threads_run_at_the_same_time() {
        let pool = closures(4, 4);
        let barrier = Arc::new(Barrier::new(5));
        for _ in 0..4 {
            let b = Arc::clone(&barrier);
            assert!(
                pool.submit(Box::new(move || {
                    b.wait();
                }))
                .is_ok()
            );
        }
        // Deadlocks (and the test times out) if any job waits behind another.
        barrier.wait();
        assert_eq!(pool.threads(), 4);
    }

    #[test]
    fn a_full_queue_gives_the_job_back() {
        let pool = closures(1, 1);
        let (hold_tx, hold_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
        let job = move || {
            let _ = started_tx.send(());
            let _ = hold_rx.recv();
        };
        assert!(pool.submit(Box::new(job)).is_ok());
        started_rx.recv_timeout(Duration::from_secs(10)).expect("first job started");
        assert!(pool.submit(Box::new(|| {})).is_ok(), "one job fits in the queue");
        assert!(pool.submit(Box::new(|| {})).is_err(), "the next one does not");
        drop(hold_tx);
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_thread() {
        let pool = closures(1, 4);
        assert!(pool.submit(Box::new(|| panic!("boom"))).is_ok());
        let (tx, rx) = crossbeam_channel::bounded(1);
        assert!(
            pool.submit(Box::new(move || {
                let _ = tx.send(7);
            }))
            .is_ok()
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        assert_eq!(pool.threads(), 1);
    }
}
