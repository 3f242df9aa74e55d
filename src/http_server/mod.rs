//! The HTTP server: every contact with tiny_http and with the connections it accepts is in this
//! folder, and nothing outside it knows about either. The rest of the watchdog gets, for each
//! request whose turn has come, an `Exchange`: the request's facts (`RequestInfo`), its headers,
//! a body reader, and an answer to write (`respond`, or `start` and a `ResponseWriter`, or both
//! at once after `split`); for a websocket, `into_upgraded`. How the answer reaches the client
//! is decided here.
//!
//! # How it works
//!
//! tiny_http (0.12, unmodified from crates.io) accepts connections, reads each on a thread of its
//! own, parses request heads and queues requests. Receiving threads (`receivers`) take requests
//! from its queue and answer them, calls included; two spare ones always wait, so health checks
//! and refusals never wait for a call. Beside tiny_http, the watchdog keeps its own record of
//! every connection (`registry`), from the moment tiny_http accepts it: `intercept` defines the
//! C library's `accept4`, `getpeername`, `recv` and `close`, so the calls tiny_http makes to them
//! land there first. Each connection gets our own descriptor (`socket`), on which every answer
//! is written; every byte tiny_http receives passes a shadow of its parser (`head_scan`); and
//! its requests carry the connection's id as their peer address, so a request leads to its
//! connection directly. A connection's requests are answered one at a time (`registry`: turns);
//! one thread (`timer`) keeps the deadlines (`deadline`).
//!
//! # tiny_http's traps, and the one place that handles each
//!
//! | what tiny_http does | where it is handled |
//! |---|---|
//! | Its accept thread ends for good on any accept error (out of descriptors) or panic | `listener`: generations |
//! | It reads every connection on a pool thread; the pool can queue a new connection behind threads it counts as idle, and nothing reads it | `registry::wake_pool`, when `deadline` sees a connection no thread started to read |
//! | A connection reset before tiny_http asks for its peer address panics the thread that reads it | `intercept::getpeername` never fails for a connection it names |
//! | An `HTTP/2.0` or `HTTP/3.0` request line deadlocks its connection thread for good (its 505 waits for the writer of the request it is refusing) | `head_scan` withholds such a head; `registry` answers 505 (`PRI * HTTP/2.0`: 400) |
//! | A byte beyond ASCII in a head makes it close the connection without an answer | `head_scan`: 400 with the reason |
//! | A head line ended by a bare LF makes it wait for a CRLF | `head_scan`: 400 |
//! | No limit on a head: a line grows in memory for as long as the client sends | `head_scan`: 431 past 1 MiB |
//! | Its chunked decoder keeps a chunk-size line in memory whole, and takes a connection that ends inside a chunk for the end of the body | `head_scan` (size lines past 4 KiB end the input; it knows whether the last chunk came), `exchange::BodyReader` |
//! | A `Content-Length` it cannot parse (or that overflows a `usize`) is no body to it: the body is read as the next request | `request::inspect` refuses it (400, connection closed); `head_scan` frames bodies as tiny_http does |
//! | A body cut short by the client ends like a complete one | `exchange::BodyReader` (counts, and asks `head_scan` for chunked bodies) |
//! | No read or write deadlines | `deadline` and `timer`; `socket::listen` sets `SO_SNDTIMEO` |
//! | Dropping a request drains its unread body into one buffer of the declared size (panicking beyond `isize::MAX`, waiting for a slow client) | `refusal`: every request leaves through `hand_back`, `refuse` or `let_go`; `alloc` maps huge buffers |
//! | Its writer drops framing and connection headers, adds `Server: tiny-http`, does not flush streamed bodies and holds an HTTP/1.0 answer in memory; a request dropped unanswered gets a 500 | `response`: every answer is written on our socket; `turn` hands requests back with nothing written through them |
//! | Its writers are chained per connection: an answer waits for the one before it | `registry`: one request at a time per connection |
//! | The body reader borrows the request and answering consumes it: no answer while the body is read | `exchange::split`: the answer goes on our socket while tiny_http's reader is read |
//! | It sends `100 Continue` when the body is first read | `exchange::split` asks for the body before anything of ours is written |
//! | After an upgrade request, the body reader is the rest of the connection (bytes it buffered first), and its upgraded stream cannot be split | `exchange::into_upgraded`: reads through tiny_http, writes on our socket |
//!
//! Inside this folder modules import downward: `status`, `socket`, `head_scan`, `deadline`,
//! `timer`, `request`, `alloc` use nothing of it; then `registry`, `intercept`, `refusal`, `turn`,
//! `response`, `exchange`, `receivers`, `listener`, and this file.

mod alloc;
mod deadline;
mod exchange;
mod head_scan;
mod intercept;
mod listener;
mod receivers;
mod refusal;
mod registry;
mod request;
mod response;
mod socket;
mod status;
mod timer;
mod turn;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use alloc::{Allocator, tune_malloc};
pub(crate) use exchange::{Answer, BodyError, BodyReader, ClientSide, Exchange, Upgraded};
pub(crate) use listener::install_panic_hook;
pub(crate) use receivers::Service;
pub(crate) use request::{Framing, RequestInfo, canonical_name, origin_form, valid_target};
pub(crate) use response::ResponseWriter;
pub(crate) use status::reason;

use listener::Acceptor;
use receivers::Pool;
use registry::Registry;

/// What the server needs to know.
pub(crate) struct Settings {
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Receiving threads at most (calls, calls waiting for a place, and room for the rest).
    pub(crate) max_threads: usize,
}

/// The listening socket, bound before anything else starts (a port in use fails the start).
pub(crate) struct Bound {
    listener: TcpListener,
    pub(crate) port: u16,
}

pub(crate) fn bind(port: u16, write_timeout: Duration) -> io::Result<Bound> {
    let listener = socket::listen(port, write_timeout)?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    Ok(Bound { listener, port })
}

/// The running server.
pub(crate) struct HttpServer {
    acceptor: Acceptor,
    registry: &'static Registry,
}

impl HttpServer {
    /// Starts accepting on `bound`; `service` answers every request.
    pub(crate) fn start(
        bound: Bound,
        settings: Settings,
        service: Arc<dyn Service>,
    ) -> io::Result<HttpServer> {
        let registry = Registry::init(bound.port, settings.read_timeout, settings.write_timeout)?;
        intercept::check(registry)?;
        let pool = Pool::new(service, settings.read_timeout, settings.max_threads);
        let acceptor = Acceptor::start(bound.listener, registry, pool)?;
        alloc::size_window();
        Ok(HttpServer { acceptor, registry })
    }

    /// No new connections from now on; requests on open ones are still answered.
    pub(crate) fn stop_accepting(&self) {
        self.acceptor.stop();
    }

    /// No request is being answered, waits, or is arriving (see `Registry::quiescent`).
    pub(crate) fn quiescent(&self) -> bool {
        self.registry.quiescent()
    }

    /// Ends every relayed websocket (the end of a drain).
    pub(crate) fn close_upgraded(&self) {
        self.registry.close_upgraded();
    }
}

/// Heads refused before tiny_http saw them, by reason, since the start (for the metrics).
pub(crate) fn refused_heads() -> Vec<(&'static str, u64)> {
    Registry::get().map(Registry::refused_heads).unwrap_or_default()
}
