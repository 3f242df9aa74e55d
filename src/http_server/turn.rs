//! The end of a request's turn on its connection, and what happens next.
//!
//! A request's body reader and its answer each hold the turn's end; whichever is done last hands
//! the request back to tiny_http and ends the turn (`Registry::finish`). If the connection has a
//! pipelined request waiting, its turn begins: on a receiving thread it is served next by the
//! same thread (`take_next`); elsewhere (a websocket session's thread, whose connection carries
//! no more requests) it is let go with its connection.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tiny_http::Request;

use super::refusal;
use super::registry::{Conn, Registry, Turn};

thread_local! {
    static RECEIVER: Cell<bool> = const { Cell::new(false) };
    static NEXT: RefCell<Vec<Turn>> = const { RefCell::new(Vec::new()) };
}

/// Marks the calling thread as one that serves the turns that come up on it.
pub(crate) fn mark_receiver() {
    RECEIVER.with(|r| r.set(true));
}

/// A turn that came up on this thread, to serve next.
pub(crate) fn take_next() -> Option<Turn> {
    NEXT.with(|n| n.borrow_mut().pop())
}

/// Bookkeeping run just before the last bytes of a call's answer go out (the caller's: its
/// in-flight place released, the call counted), so a client that sends its next request the
/// moment it has the answer never finds the place still taken.
pub(crate) struct Completion(pub(crate) Box<dyn FnOnce(u16) + Send>);

impl Completion {
    pub(crate) fn complete(self, status: u16) {
        (self.0)(status)
    }
}

/// The end of a request's turn, shared by its body reader and its answer: whichever is done last
/// hands the request back to tiny_http and ends the turn.
pub(crate) struct TurnEnd {
    pub(crate) conn: Arc<Conn>,
    /// The request, once its body reader is done, with the declared body bytes not read and
    /// whether its body was abandoned (not read to its end).
    pub(crate) req: Mutex<Option<(Request, u64, bool)>>,
    /// The connection may carry the next request.
    pub(crate) keep: AtomicBool,
}

impl TurnEnd {
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// `false`: the connection ends after this answer.
    pub(crate) fn keep_alive(&self, keep: bool) {
        if !keep {
            self.keep.store(false, Ordering::Release);
        }
    }

    /// The answer broke off: the connection is shut down at once.
    pub(crate) fn abort(&self) {
        self.keep.store(false, Ordering::Release);
        self.conn.abort();
    }
}

impl Drop for TurnEnd {
    fn drop(&mut self) {
        let req = self.req.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((req, unread, abandoned)) = req {
            if abandoned {
                // The answer is complete; nothing more is read or written on the connection.
                self.conn.abort();
            }
            refusal::hand_back(req, unread, abandoned);
        }
        let Some(registry) = Registry::get() else { return };
        let (next, discard) = registry.finish(&self.conn, self.keep.load(Ordering::Acquire));
        for req in discard {
            refusal::let_go(req);
        }
        if let Some(turn) = next {
            if RECEIVER.with(Cell::get) {
                NEXT.with(|n| n.borrow_mut().push(turn));
            } else {
                let (req, conn, _) = turn.into_parts();
                refusal::let_go(req);
                let (_, discard) = registry.finish(&conn, false);
                discard.into_iter().for_each(refusal::let_go);
            }
        }
    }
}
