//! Requests the door answers or lets go itself, and the ways a tiny_http `Request` leaves our
//! hands: answered (`hand_back`), refused (`refuse`), or unanswered (`let_go`).
//!
//! A tiny_http `Request` that goes drains its unread body into one buffer of the declared size:
//! a declared size no allocation can have (beyond `isize::MAX`) panics inside tiny_http, and a
//! large one takes memory, or time if the client sends it slowly. So every request leaves here,
//! with its connection's read side shut first when its body is unread (the drain then ends at
//! once), a huge drain's buffer within an address-space budget (`alloc`), and tiny_http's panic
//! contained.

use std::net::SocketAddr;
use std::sync::Arc;

use tiny_http::Request;

use crate::clock;

use super::registry::{Conn, ConnId, Registry, Turn};
use super::request::Rejection;
use super::status::reason;

/// A request refused before its body is read (see `refuse`).
pub(crate) struct Refused {
    pub(crate) turn: Turn,
    pub(crate) rejection: Rejection,
}

fn conn_of(req: &Request) -> Option<Arc<Conn>> {
    let id = req.remote_addr().and_then(|a: &SocketAddr| ConnId::of_address(a))?;
    Registry::get()?.conn_of_id(id)
}

/// Runs `f`, which drops a request that may panic in tiny_http's drain, with the drain's
/// buffer within the address-space budget for huge ones (`alloc::drain_share`), and the panic
/// contained (and not logged as one).
fn contained(declared: u64, f: impl FnOnce()) -> bool {
    let guarded = move || {
        let _share = super::alloc::drain_share(declared);
        f();
    };
    let caught =
        crate::logging::expecting_panic(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(guarded)));
    caught.is_ok()
}

/// Gives a request back to tiny_http without a word written through it: its writer is taken
/// and dropped, which tells tiny_http the answer is done. Dropping the request itself would
/// make tiny_http write a 500, waiting behind the writers of earlier requests of its
/// connection. A declared body longer than any buffer can be makes tiny_http's drain panic
/// while it hands out the writer, which would then be lost, and the connection with it:
/// `upgrade` moves reader and writer into one value whose drop drops the writer even when the
/// reader's drop panics (what it writes goes nowhere: its connection is shut by then).
///
/// `abandoned`: the body was not read to its end (the connection is shut both ways by then).
/// What tiny_http had already buffered of it is read out first: a drain that panics, and a
/// chunked body (which tiny_http never drains), would otherwise leave those bytes to be read as
/// the next request head, one the head scan took for body and never checked.
fn release(req: Request, unread: u64, abandoned: bool) {
    let declared = req.body_length().map_or(0, |n| n as u64);
    // Reading a body to its end drops tiny_http's drain with it (its reader is fused): the panic
    // or the huge buffer can come from either step, so both are contained.
    let ok = if declared > isize::MAX as u64 {
        let stream = req.upgrade("close", tiny_http::Response::empty(400));
        contained(0, move || {
            let mut stream = stream;
            empty_buffered(&mut stream);
            drop(stream);
        })
    } else {
        contained(unread, move || {
            let mut req = req;
            if abandoned {
                empty_buffered(req.as_reader());
            }
            drop(req.into_writer());
        })
    };
    if !ok {
        log::info!("let go of a request whose Content-Length cannot be drained");
    }
}

/// Reads a request's body reader to its end, where the connection's input is closed: only what
/// tiny_http had buffered comes out (at most its 1 KiB buffer, and a chunk decoder's state).
fn empty_buffered(reader: &mut dyn std::io::Read) {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// The request was answered on our socket: it goes back to tiny_http. `unread`: declared body
/// bytes never read; `abandoned`: its body was not read to its end (see `release`).
pub(crate) fn hand_back(req: Request, unread: u64, abandoned: bool) {
    release(req, unread, abandoned);
}

/// A request nobody answers: its connection was cut, and it was parsed before the cut. Only
/// called when no earlier request of its connection is still being answered (`Registry` keeps
/// such a request in the backlog until then), so nothing of tiny_http's waits for anything.
pub(crate) fn let_go(req: Request) {
    let declared = req.body_length().map_or(0, |n| n as u64);
    match conn_of(&req) {
        // Nothing more is read or written on it.
        Some(conn) => conn.abort(),
        None => {
            // Never expected: every request of ours names its connection (`intercept`). Without
            // it the drain is paced by the client: not on a worker.
            log::error!("a request without its connection; letting it go on a thread of its own");
            let spawned = crate::threads::spawn("fw-drain", move || release(req, declared, false));
            if let Err(e) = spawned {
                log::error!("cannot start a thread to let go of a request: {e}");
            }
            return;
        }
    }
    release(req, declared, true);
}

/// A whole refusal: a plain-text `body` and the connection closed after it.
pub(crate) fn refusal(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        clock::http_date_now(),
        body.len()
    )
}

/// Refuses a request whose head failed the checks of `request::inspect`. The connection is
/// closed after the answer, as Go does after a 4xx from its parser; nothing more is read from
/// it first, so tiny_http cannot take the rest (of a body of unknown extent) for the next
/// request.
pub(crate) fn refuse(refused: Refused) {
    let Refused { turn, rejection } = refused;
    let (req, conn, _) = turn.into_parts();
    if let Rejection::AbsurdLength(n) = rejection {
        log::warn!("{}: refusing a request that announced a {n}-byte body", conn.peer_name());
    }
    conn.stop_reading();
    conn.socket.send_now(refusal(rejection.status(), &rejection.message()).as_bytes());
    conn.abort();
    let declared = req.body_length().map_or(0, |n| n as u64);
    release(req, declared, true);
    if let Some(registry) = Registry::get() {
        let (_, discard) = registry.finish(&conn, false);
        discard.into_iter().for_each(let_go);
    }
}
