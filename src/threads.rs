//! Every thread the watchdog starts, started in one place that marks it as ours.
//!
//! tiny_http starts threads of its own (the accept thread, one per connection), and some of our
//! code must tell them apart from ours: the allocator's head alarm applies to tiny_http's
//! threads only, and the panic hook treats a panic in them differently. A thread inherits its
//! name from the thread that starts it (after a listener restart every tiny_http thread is
//! named like ours), so the mark is a thread-local flag set here, never a name.

use std::cell::Cell;
use std::io;
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};

thread_local! {
    // Const-initialised and without a destructor: readable from the allocator.
    static OURS: Cell<bool> = const { Cell::new(false) };
}

/// Starts a named thread of ours.
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        mark_ours();
        f()
    })
}

/// Starts a helper thread of ours inside `scope` (it borrows from the caller's stack).
pub(crate) fn spawn_scoped<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> ScopedJoinHandle<'scope, T> {
    scope.spawn(move || {
        mark_ours();
        f()
    })
}

/// Marks the calling thread as ours (the main thread, at startup).
pub(crate) fn mark_ours() {
    OURS.with(|o| o.set(true));
}

/// Whether the calling thread was started by the watchdog (not by tiny_http). Safe to call from
/// the allocator: no allocation, no lock.
pub(crate) fn is_ours() -> bool {
    OURS.try_with(Cell::get).unwrap_or(false)
}
