//! The connections behind the requests (decision D2): one turn at a time per connection, and
//! the deadlines tiny_http does not keep.
//!
//! tiny_http reads every connection on a thread of its own and puts each parsed request in one
//! shared queue, several per connection when the client pipelines (ENGINEERING.md trap 15: a
//! response waits for the previous one on its connection). It has no deadlines and no limit on
//! a request head (traps 4 and 13). This module adds both, beside tiny_http:
//!
//! - **Turns.** A connection's requests are served one after another, as Go's server does: a
//!   request that arrives while an earlier one of its connection is being answered waits in
//!   that connection's backlog, holding no thread and no `max_inflight` place, and is served
//!   when the earlier one is done. So no response ever waits in tiny_http's writer for another,
//!   and one pipelining client can hold at most one thread. Connections are told apart by peer
//!   address: two live connections never share one, and a request object keeps its connection
//!   alive.
//! - **The sweeper.** A thread that, every `TICK` (and when the allocator sees tiny_http grow a
//!   buffer past `alloc::HEAD_ALARM`), finds the connections tiny_http holds among our
//!   descriptors, keeps a `Socket` (our duplicate) for each, and cuts the ones past a limit:
//!   a head or an idle keep-alive wait longer than `read_timeout` (408 if part of a head came),
//!   a head over 1 MiB (431), a body not complete within `read_timeout` of the request's start,
//!   a response not complete within `write_timeout` of its request (as Go's server does).
//!   Cutting is `shutdown()` on the connection: tiny_http and our workers see the end at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tiny_http::Request;

use crate::sockets::{self, Socket};

/// Requests of one connection waiting for their turn; beyond this, the connection's read side is
/// shut, so tiny_http parses no more of them (the ones already parsed are still answered).
const MAX_BACKLOG: usize = 256;
/// How often the sweeper looks at every connection.
const TICK: Duration = Duration::from_millis(250);
/// More than one kernel clock tick (HZ=100 at the coarsest), in milliseconds: see
/// `received_since`.
const JIFFY_SLACK_MS: u128 = 25;
/// At most this many empty connections per sweep to wake tiny_http's pool (`kick`).
const MAX_KICKS: usize = 256;
const KICK_CONNECT: Duration = Duration::from_millis(200);
/// Go's `DefaultMaxHeaderBytes`, as the reference uses: more than this without a complete head
/// gets 431.
const MAX_HEAD: u64 = 1 << 20;
/// A connection busy with a request whose body is complete can still receive the next
/// pipelined request (head and body) into kernel buffers, a few MiB at most; more than this
/// while nothing reads it is a head tiny_http is growing.
const MAX_UNREAD_WHILE_BUSY: u64 = 8 << 20;
/// The worker gets this long past `write_timeout` to send its own 504 before the sweeper cuts
/// the connection.
const RESPONSE_GRACE: Duration = Duration::from_secs(1);
/// A closed connection's entry (and our descriptor of it) is kept this long, so that the
/// kernel does not reset the connection while the client is still reading the last response.
const LINGER: Duration = Duration::from_secs(1);

const TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\n\r\n408 Request Timeout: request not received within read_timeout\n";
const TOO_LARGE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 36\r\n\r\n431 Request Header Fields Too Large\n";

/// What becomes of a request from tiny_http.
pub(crate) enum Arrival {
    /// Its turn: answer it.
    Serve(Turn),
    /// It waits in its connection's backlog and comes back from `finish`.
    Waiting,
    /// Its connection was shut down by the watchdog: drop it (tiny_http's answer to a dropped
    /// request then fails at once).
    Discard(Request),
    /// Its peer's last connection was shut down by the watchdog: it was parsed from that one
    /// before the cut, or it comes from a new connection from the same address. `recheck` tells.
    Recheck(Request),
}

/// A request whose turn has come.
pub(crate) struct Turn {
    pub(crate) req: Request,
    /// When the request started, for `read_timeout`: the end of the previous response on its
    /// connection, or when the connection was first seen.
    pub(crate) started: Instant,
}

/// What the watchdog knows about one connection.
struct Conn {
    /// One of its requests is being answered.
    busy: bool,
    /// Its requests that wait for their turn, in order.
    backlog: VecDeque<Request>,
    /// The end of its last response, or when it was first seen.
    idle_since: Instant,
    /// Requests started on it.
    requests: u64,
    /// The current request's body must be complete by then.
    body_until: Option<Instant>,
    /// The current response must be complete by then.
    respond_until: Option<Instant>,
    /// A relayed websocket: no deadlines.
    upgraded: bool,
    /// The watchdog shut it down; what is left of it is discarded.
    cut: bool,
    socket: Option<Arc<Socket>>,
    /// The phase the sweeper last saw it in, (requests, busy with its body read), and the bytes
    /// it had received when that phase began.
    seen: Option<(u64, bool, u64)>,
    created: Instant,
    /// Since when no scan found tiny_http holding it.
    gone_since: Option<Instant>,
    /// At the last sweep it had bytes waiting in the kernel and no request yet: no tiny_http
    /// thread may be reading it (`kick`).
    unread: bool,
}

impl Conn {
    fn new(now: Instant) -> Conn {
        Conn {
            busy: false,
            backlog: VecDeque::new(),
            idle_since: now,
            requests: 0,
            body_until: None,
            respond_until: None,
            upgraded: false,
            cut: false,
            socket: None,
            seen: None,
            created: now,
            gone_since: None,
            unread: false,
        }
    }
}

/// A cut the sweeper decided on, applied once it is sure the connection is still in the same
/// request.
struct Decision {
    socket: Arc<Socket>,
    cut: Cut,
    requests: u64,
}

/// A connection whose received bytes and head deadline the sweeper checks.
struct Watched {
    socket: Arc<Socket>,
    idle_since: Instant,
    requests: u64,
    /// Busy with a request whose body is read.
    busy: bool,
    /// Its `Conn::unread`.
    unread: bool,
    last: Option<(u64, bool, u64)>,
}

/// What ends a connection early, and what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// No complete head within read_timeout: 408 if part of one arrived, else just closed.
    HeadTimeout {
        partial: bool,
    },
    HeadTooLarge,
    /// The body did not arrive in time: the read side is shut; the worker answers 408.
    BodyTimeout,
    /// The response was not complete within write_timeout.
    ResponseTimeout,
}

pub(crate) struct Connections {
    port: u16,
    read_timeout: Option<Duration>,
    write_timeout: Duration,
    table: Mutex<HashMap<SocketAddr, Conn>>,
    /// One scan at a time, and what the last one learned.
    scan: Mutex<HashMap<RawFd, sockets::Seen>>,
    nudge: Nudge,
    /// Requests that arrived so far (the sweeper's sign of activity).
    arrivals: std::sync::atomic::AtomicU64,
    /// /proc/self/fd was readable at the last scan.
    proc_ok: std::sync::atomic::AtomicBool,
}

impl Connections {
    pub(crate) fn new(port: u16, read_timeout: Duration, write_timeout: Duration) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Connections {
            port,
            read_timeout: (!read_timeout.is_zero()).then_some(read_timeout),
            write_timeout,
            table: Mutex::new(HashMap::new()),
            scan: Mutex::new(HashMap::new()),
            nudge: Nudge::new()?,
            arrivals: std::sync::atomic::AtomicU64::new(0),
            proc_ok: std::sync::atomic::AtomicBool::new(true),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Conn>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The descriptor the allocator writes to when tiny_http grows a buffer past the alarm size.
    pub(crate) fn alarm_fd(&self) -> RawFd {
        self.nudge.write.as_raw_fd()
    }

    /// A request from tiny_http, in the order tiny_http parsed them (the caller keeps that order).
    pub(crate) fn arrive(&self, req: Request) -> Arrival {
        let now = Instant::now();
        self.arrivals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(peer) = req.remote_addr().map(|a| sockets::canonical(*a)) else {
            return Arrival::Serve(Turn { req, started: now });
        };
        let mut table = self.lock();
        let conn = table.entry(peer).or_insert_with(|| Conn::new(now));
        if conn.busy {
            conn.backlog.push_back(req);
            if conn.backlog.len() == MAX_BACKLOG {
                log::warn!(
                    "{peer}: more than {MAX_BACKLOG} pipelined requests waiting; reading no more of them"
                );
                match &conn.socket {
                    Some(s) => s.shutdown(libc::SHUT_RD),
                    None => self.nudge.wake(),
                }
            }
            return Arrival::Waiting;
        }
        if conn.cut {
            return Arrival::Recheck(req);
        }
        conn.busy = true;
        conn.requests += 1;
        conn.respond_until = Some(now + self.write_timeout + RESPONSE_GRACE);
        Arrival::Serve(Turn { req, started: conn.idle_since })
    }

    /// A request whose peer's entry is cut (`Arrival::Recheck`), after a scan of our descriptors:
    /// if that peer now has a different live connection, this is a new connection from the same
    /// address (the cut poisons a connection, never an address) and gets a fresh entry;
    /// otherwise it is a leftover of the cut one. Still in tiny_http's order: called under the
    /// same baton as `arrive`.
    pub(crate) fn recheck(&self, req: Request) -> Arrival {
        self.refresh();
        let Some(peer) = req.remote_addr().map(|a| sockets::canonical(*a)) else {
            return Arrival::Discard(req);
        };
        let cut = self.lock().get(&peer).is_some_and(|c| c.cut);
        if cut { Arrival::Discard(req) } else { self.arrive(req) }
    }

    /// The request being answered on `peer`'s connection is done and dropped. `keep`: the
    /// connection may carry more requests (false after `Connection: close`, a cut, or a failed
    /// write). Returns the next request of the connection to serve, and the ones to drop (the
    /// caller drops them, outside the lock).
    pub(crate) fn finish(&self, peer: Option<SocketAddr>, keep: bool) -> (Option<Turn>, Vec<Request>) {
        let Some(peer) = peer.map(sockets::canonical) else { return (None, Vec::new()) };
        let now = Instant::now();
        let mut table = self.lock();
        let Some(conn) = table.get_mut(&peer) else { return (None, Vec::new()) };
        conn.body_until = None;
        conn.respond_until = None;
        conn.upgraded = false;
        conn.idle_since = now;
        if !keep || conn.cut {
            // Both ways: the requests left are dropped, and tiny_http's answer to each must fail
            // at once rather than wait for a client that may not read.
            conn.cut = true;
            if let Some(s) = &conn.socket {
                s.shutdown(libc::SHUT_RDWR);
            }
            conn.busy = false;
            return (None, conn.backlog.drain(..).collect());
        }
        match conn.backlog.pop_front() {
            Some(req) => {
                conn.requests += 1;
                conn.respond_until = Some(now + self.write_timeout + RESPONSE_GRACE);
                (Some(Turn { req, started: now }), Vec::new())
            }
            None => {
                conn.busy = false;
                (None, Vec::new())
            }
        }
    }

    /// The current request of `peer` reads its body until `until` at the latest.
    pub(crate) fn reading_body(&self, peer: Option<SocketAddr>, until: Option<Instant>) {
        let (Some(peer), Some(until)) = (peer, until) else { return };
        if let Some(conn) = self.lock().get_mut(&sockets::canonical(peer)) {
            conn.body_until = Some(until);
        }
    }

    /// The current request of `peer` has read its whole body.
    pub(crate) fn body_read(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        if let Some(conn) = self.lock().get_mut(&sockets::canonical(peer)) {
            conn.body_until = None;
        }
    }

    /// `peer`'s connection now carries a websocket: no deadlines until it ends.
    pub(crate) fn upgraded(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        if let Some(conn) = self.lock().get_mut(&sockets::canonical(peer)) {
            conn.upgraded = true;
            conn.body_until = None;
            conn.respond_until = None;
        }
    }

    /// Shuts the read side of `peer`'s connection now (its request is answered before its body
    /// was read: tiny_http must neither wait for that body nor parse it as the next request,
    /// traps 1 and 2). The connection is closed after the current response.
    pub(crate) fn stop_reading(&self, peer: Option<SocketAddr>) -> bool {
        let Some(socket) = peer.and_then(|p| self.socket(p)) else { return false };
        socket.shutdown(libc::SHUT_RD);
        if let Some(conn) = self.lock().get_mut(&socket.peer) {
            conn.cut = true;
        }
        true
    }

    /// Shuts `peer`'s connection down both ways now (a response broke off: the client must not
    /// take what it got as complete).
    pub(crate) fn abort(&self, peer: Option<SocketAddr>) {
        if let Some(socket) = peer.and_then(|p| self.socket(p)) {
            socket.shutdown(libc::SHUT_RDWR);
            if let Some(conn) = self.lock().get_mut(&socket.peer) {
                conn.cut = true;
            }
        }
    }

    /// Our descriptor of `peer`'s connection, found with a scan of our descriptors if it is not
    /// known yet. `None` if it is gone or /proc/self/fd cannot be read.
    pub(crate) fn socket(&self, peer: SocketAddr) -> Option<Arc<Socket>> {
        let peer = sockets::canonical(peer);
        let known = self.lock().get(&peer).and_then(|c| c.socket.clone());
        if let Some(s) = known.filter(|s| s.is_open()) {
            return Some(s);
        }
        self.refresh();
        self.lock().get(&peer).and_then(|c| c.socket.clone())
    }

    /// Scans our descriptors for the connections tiny_http holds and adopts the new ones.
    /// Returns the peers found, or `None` if /proc/self/fd cannot be read.
    fn refresh(&self) -> Option<Vec<SocketAddr>> {
        let mut last = self.scan.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(found) = sockets::scan_cached(self.port, &mut last) else {
            if self.proc_ok.swap(false, std::sync::atomic::Ordering::Relaxed) {
                log::warn!(
                    "/proc/self/fd is not readable: read_timeout, request size limits and full-duplex \
                     streaming need it"
                );
            }
            return None;
        };
        let now = Instant::now();
        let mut adopt = Vec::new();
        {
            let table = self.lock();
            for f in found.values() {
                let known =
                    table.get(&f.peer).and_then(|c| c.socket.as_ref()).is_some_and(|s| s.inode == f.inode);
                if !known {
                    adopt.push(*f);
                }
            }
        }
        let adopted: Vec<Socket> = adopt.iter().filter_map(Socket::adopt).collect();
        let mut table = self.lock();
        for socket in adopted {
            let conn = table.entry(socket.peer).or_insert_with(|| Conn::new(now));
            if conn.socket.is_some() && !conn.busy && conn.backlog.is_empty() {
                // A new connection from the address of one that has ended: a fresh start.
                *conn = Conn::new(now);
            }
            conn.socket = Some(Arc::new(socket));
            conn.gone_since = None;
        }
        let peers: Vec<SocketAddr> = found.values().map(|f| f.peer).collect();
        for peer in &peers {
            if let Some(conn) = table.get_mut(peer) {
                conn.gone_since = None;
            }
        }
        Some(peers)
    }

    /// Starts the sweeper thread.
    pub(crate) fn start_sweeper(self: &Arc<Self>) -> io::Result<()> {
        let conns = Arc::clone(self);
        crate::threads::spawn("fw-connections", move || {
            let mut quiet = Quiet::default();
            loop {
                conns.nudge.wait(TICK);
                let busy = conns.sweep();
                quiet.observe(conns.arrivals.load(std::sync::atomic::Ordering::Relaxed), busy);
            }
        })?;
        Ok(())
    }

    /// One look at every connection; returns whether any is being answered.
    fn sweep(&self) -> bool {
        let scan_started = Instant::now();
        let Some(live) = self.refresh() else { return true };
        let now = Instant::now();
        let live: HashSet<SocketAddr> = live.into_iter().collect();
        let mut decisions: Vec<Decision> = Vec::new();
        let mut watch: Vec<Watched> = Vec::new();
        // Deadlines first, under the lock: deciding them needs no system call.
        {
            let mut table = self.lock();
            table.retain(|peer, conn| {
                if live.contains(peer)
                    || conn.busy
                    || !conn.backlog.is_empty()
                    || conn.created >= scan_started
                {
                    return true;
                }
                let since = *conn.gone_since.get_or_insert(now);
                now.duration_since(since) < LINGER
            });
            for (peer, conn) in table.iter_mut() {
                let Some(socket) = conn.socket.clone() else { continue };
                if conn.cut || conn.upgraded || !live.contains(peer) {
                    continue;
                }
                let requests = conn.requests;
                if conn.busy {
                    if conn.body_until.is_some_and(|t| now >= t) {
                        conn.body_until = None;
                        decisions.push(Decision {
                            socket: Arc::clone(&socket),
                            cut: Cut::BodyTimeout,
                            requests,
                        });
                    }
                    if conn.respond_until.is_some_and(|t| now >= t) {
                        conn.cut = true;
                        decisions.push(Decision { socket, cut: Cut::ResponseTimeout, requests });
                        continue;
                    }
                    if conn.body_until.is_some() {
                        // Its body is being read: what arrives is that body.
                        continue;
                    }
                }
                watch.push(Watched {
                    socket,
                    idle_since: conn.idle_since,
                    requests,
                    busy: conn.busy,
                    unread: conn.unread,
                    last: conn.seen,
                });
            }
        }
        // Then what needs TCP_INFO, outside the lock.
        let mut seen = Vec::with_capacity(watch.len());
        let mut unread = Vec::new();
        let mut stalled = 0;
        for w in watch {
            let Some(info) = w.socket.tcp_info() else { continue };
            if w.requests == 0 && !w.busy && info.bytes_received > 0 && w.socket.unread() > 0 {
                unread.push(w.socket.peer);
                if w.unread {
                    stalled += 1;
                }
            }
            // Bytes received since this phase (idle, or busy with its body read) began: the
            // baseline is set when the sweeper first sees the phase, and kept while it lasts. A
            // connection with no request yet has received nothing but its first head.
            let baseline = match w.last {
                Some((r, busy, b)) if r == w.requests && busy == w.busy => b,
                None if w.requests == 0 && !w.busy => 0,
                _ => info.bytes_received,
            };
            seen.push((w.socket.peer, (w.requests, w.busy, baseline)));
            let grown = info.bytes_received.saturating_sub(baseline);
            let limit = if w.busy { MAX_UNREAD_WHILE_BUSY } else { MAX_HEAD };
            if grown > limit {
                decisions.push(Decision { socket: w.socket, cut: Cut::HeadTooLarge, requests: w.requests });
                continue;
            }
            if w.busy {
                continue;
            }
            if let Some(timeout) = self.read_timeout {
                let waited = now.duration_since(w.idle_since);
                if waited >= timeout {
                    // Part of a head arrived since the connection went idle (or, before its first
                    // request, at all): 408 as Go does; a plain idle keep-alive is just closed.
                    let partial = if w.requests == 0 {
                        info.bytes_received > 0
                    } else {
                        // Bytes counted since this idle phase was first seen, or an arrival
                        // clearly after it began.
                        grown > 0 || received_since(&info, waited)
                    };
                    decisions.push(Decision {
                        socket: w.socket,
                        cut: Cut::HeadTimeout { partial },
                        requests: w.requests,
                    });
                }
            }
        }
        let mut act = Vec::with_capacity(decisions.len());
        {
            let mut table = self.lock();
            for (peer, view) in seen {
                if let Some(conn) = table.get_mut(&peer) {
                    conn.seen = Some(view);
                    conn.unread = false;
                }
            }
            for peer in unread {
                if let Some(conn) = table.get_mut(&peer) {
                    conn.unread = true;
                }
            }
            for d in decisions {
                let Some(conn) = table.get_mut(&d.socket.peer) else { continue };
                let go = match d.cut {
                    Cut::BodyTimeout | Cut::ResponseTimeout => true,
                    // A request may have started since the decision: then it is not idle.
                    Cut::HeadTimeout { .. } => !conn.busy && conn.requests == d.requests && !conn.cut,
                    Cut::HeadTooLarge => conn.requests == d.requests && !conn.cut,
                };
                if go {
                    if d.cut != Cut::BodyTimeout {
                        conn.cut = true;
                    }
                    act.push(d);
                }
            }
        }
        for d in act {
            self.apply(&d.socket, d.cut);
        }
        if stalled > 0 {
            self.kick(stalled);
        }
        self.lock().values().any(|c| c.busy)
    }

    /// Wakes tiny_http's connection pool for `stalled` connections that no thread of it reads.
    ///
    /// tiny_http hands each accepted connection to a pool task that lives as long as the
    /// connection. When a burst of connections arrives, its pool can queue tasks behind threads
    /// it counts as idle but has already woken for earlier tasks; the queued connections then
    /// wait until some other connection closes (with keep-alive clients, possibly never: their
    /// first request would get our 408 after read_timeout). Every new connection makes the
    /// pool start a thread or wake one, and either takes the oldest queued task next, so one
    /// empty connection of our own per stalled connection gets each of them a thread.
    fn kick(&self, stalled: usize) {
        log::debug!("{stalled} connections wait for a tiny_http thread; waking its pool");
        let targets = [
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port)),
        ];
        for _ in 0..stalled.min(MAX_KICKS) {
            let connected =
                targets.iter().any(|t| std::net::TcpStream::connect_timeout(t, KICK_CONNECT).is_ok());
            if !connected {
                break;
            }
        }
    }

    fn apply(&self, socket: &Socket, cut: Cut) {
        let peer = socket.peer;
        match cut {
            Cut::HeadTimeout { partial } => {
                if partial {
                    log::warn!("{peer}: request not received within read_timeout; closing the connection");
                    socket.send_now(TIMEOUT_408);
                }
                socket.shutdown(libc::SHUT_RDWR);
            }
            Cut::HeadTooLarge => {
                log::info!("{peer}: request head larger than {MAX_HEAD} bytes; closing the connection");
                socket.send_now(TOO_LARGE_431);
                socket.shutdown(libc::SHUT_RDWR);
            }
            Cut::BodyTimeout => {
                log::warn!("{peer}: request body not received within read_timeout");
                socket.shutdown(libc::SHUT_RD);
            }
            Cut::ResponseTimeout => {
                log::warn!("{peer}: response not complete within write_timeout; closing the connection");
                socket.shutdown(libc::SHUT_RDWR);
            }
        }
    }

    /// No connection is being answered, has requests waiting, or has received bytes of a request
    /// since it was last answered (a request tiny_http parsed but no worker has taken yet, or a
    /// head still arriving). Idle keep-alive connections do not count: they are simply closed.
    pub(crate) fn quiescent(&self) -> bool {
        self.refresh();
        let now = Instant::now();
        let idle: Vec<(Arc<Socket>, Instant, u64)> = {
            let table = self.lock();
            if table.values().any(|c| c.busy || !c.backlog.is_empty()) {
                return false;
            }
            table
                .values()
                .filter(|c| !c.cut && c.gone_since.is_none())
                .filter_map(|c| Some((Arc::clone(c.socket.as_ref()?), c.idle_since, c.requests)))
                .collect()
        };
        idle.iter().all(|(socket, idle_since, requests)| match socket.tcp_info() {
            // Not established any more: nothing can come from it.
            Some(info) if info.state != sockets::TCP_ESTABLISHED => true,
            Some(info) if *requests == 0 => info.bytes_received == 0,
            Some(info) => !received_since(&info, now.duration_since(*idle_since)),
            None => true,
        })
    }

    /// Closes every websocket relay (the end of a drain).
    pub(crate) fn close_upgraded(&self) {
        let sockets: Vec<Arc<Socket>> =
            self.lock().values().filter(|c| c.upgraded).filter_map(|c| c.socket.clone()).collect();
        for s in sockets {
            s.shutdown(libc::SHUT_RDWR);
        }
    }
}

/// After a burst, freed memory goes back to the kernel: when no request has arrived and none
/// has been answered for 2, 12 and 30 seconds (threads of the burst end meanwhile: tiny_http's
/// after 5 s idle, ours after 10 s), the C allocator is asked to return its free pages
/// (`alloc::give_back`).
#[derive(Default)]
struct Quiet {
    arrivals: u64,
    since: Option<Instant>,
    /// How many of `QUIET_STEPS` are done in this quiet spell.
    done: usize,
}

const QUIET_STEPS: [Duration; 3] = [Duration::from_secs(2), Duration::from_secs(12), Duration::from_secs(30)];

impl Quiet {
    fn observe(&mut self, arrivals: u64, busy: bool) {
        if busy || arrivals != self.arrivals {
            self.arrivals = arrivals;
            self.since = None;
            self.done = 0;
            return;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if QUIET_STEPS.get(self.done).is_some_and(|step| since.elapsed() >= *step) {
            crate::alloc::give_back();
            self.done += 1;
        }
    }
}

/// Wakes the sweeper early: a pipe it polls, written by `wake` and by the allocator (which may
/// not lock or allocate).
struct Nudge {
    read: OwnedFd,
    write: OwnedFd,
}

impl Nudge {
    fn new() -> io::Result<Nudge> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh descriptors that we now own.
        Ok(unsafe { Nudge { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) } })
    }

    fn wake(&self) {
        let byte = 1u8;
        // SAFETY: one byte from a valid buffer; a full pipe already means "wake up".
        unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }

    /// Sleeps up to `timeout`, or until woken.
    fn wait(&self, timeout: Duration) {
        let mut pfd = libc::pollfd { fd: self.read.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        if n > 0 {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a valid buffer; the pipe is non-blocking.
            while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
    }
}

/// Whether data arrived on a connection within the last `elapsed` (it went idle `elapsed` ago).
/// The kernel keeps the time of the last arrival in clock ticks (4 ms at HZ=250), so a request
/// answered within a tick looked like data that came after its answer: `JIFFY_SLACK_MS` of
/// margin. Data in the first moments of an idle phase is left to other evidence.
fn received_since(info: &sockets::TcpInfo, elapsed: Duration) -> bool {
    u128::from(info.last_data_recv_ms) + JIFFY_SLACK_MS < elapsed.as_millis()
}
