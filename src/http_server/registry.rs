//! Every connection tiny_http has accepted, from its `accept` to the moment tiny_http has closed
//! it and we are done with it too, and what the watchdog keeps for each:
//!
//! - **Turns.** A connection's requests are answered one at a time, in order, as Go's server
//!   does: a request that arrives while an earlier one of its connection is being answered waits
//!   in the connection's backlog (holding no thread and no `max_inflight` place) and comes back
//!   when that one ends. So no response ever waits inside tiny_http for another (its writers are
//!   chained per connection), and a pipelining client holds at most one thread.
//! - **Deadlines.** The time a request may take to arrive (`read_timeout`: head and body, from the
//!   end of the previous response), and to be answered (`write_timeout`), kept by `timer`.
//! - **The scan** of the bytes tiny_http receives (`head_scan`), and the answer owed to a head the
//!   scan withheld, written once every request before it is answered.
//!
//! Requests lead to their connection through the address tiny_http reports for them, which
//! `intercept` made the connection's id. A connection's record lives in a slot of one table;
//! descriptors map to slots through `FdTable`, which `intercept` reads on every `recv`.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use tiny_http::Request;

use super::deadline::{self, Due, View};
use super::head_scan::{HeadScan, Refusal, Verdict};
use super::socket::Socket;
use super::status::reason;
use super::timer::Timer;

/// Requests of one connection waiting for their turn; beyond this the connection's read side is
/// shut, so tiny_http reads no more of them (the ones already read are still answered).
const MAX_BACKLOG: usize = 256;
/// The worker gets this long past `write_timeout` to send its own 504 before the connection is
/// cut.
const RESPONSE_GRACE: Duration = Duration::from_secs(1);
/// After tiny_http has closed a connection, our descriptor of it stays open this long, so that a
/// client still reading the last response is not reset by unread bytes of its own.
const LINGER: Duration = Duration::from_secs(1);
/// A connection tiny_http has not started to read this long after accepting it waits in its
/// pool behind busy threads (see `Registry::wake_pool`).
const READ_START: Duration = Duration::from_millis(500);
/// How many of tiny_http's listening sockets (accept generations) can be watched at once.
const LISTENERS: usize = 8;
/// The first bytes of the addresses that name connections (`ConnId::address`): 100::/64 is the
/// IPv6 discard prefix (RFC 6666), never a real peer.
const NAME_PREFIX: u16 = 0x0100;

/// A connection's record: a slot of the table and that slot's reuse count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnId {
    slot: u32,
    reuse: u32,
}

impl ConnId {
    /// The address tiny_http reports as the peer of the connection's requests.
    fn address(self) -> Ipv6Addr {
        let (s, r) = (self.slot, self.reuse);
        Ipv6Addr::new(NAME_PREFIX, 0, 0, 0, (r >> 16) as u16, r as u16, (s >> 16) as u16, s as u16)
    }

    /// The connection an address from `address` names.
    pub(crate) fn of_address(addr: &SocketAddr) -> Option<ConnId> {
        let SocketAddr::V6(v6) = addr else { return None };
        let s = v6.ip().segments();
        (s[0] == NAME_PREFIX && s[1..4] == [0, 0, 0]).then(|| ConnId {
            reuse: (u32::from(s[4]) << 16) | u32::from(s[5]),
            slot: (u32::from(s[6]) << 16) | u32::from(s[7]),
        })
    }

    /// Packed for `FdTable` (never 0).
    fn pack(self) -> u64 {
        (u64::from(self.reuse) << 32) | (u64::from(self.slot) + 1)
    }

    fn unpack(v: u64) -> Option<ConnId> {
        let slot = (v & 0xffff_ffff) as u32;
        (slot != 0).then(|| ConnId { slot: slot - 1, reuse: (v >> 32) as u32 })
    }
}

/// Descriptor number → the connection tiny_http holds it for. Sized once from the descriptor
/// limit; its pages are only touched for the numbers in use.
struct FdTable(Box<[AtomicU64]>);

impl FdTable {
    fn new(size: usize) -> FdTable {
        // Zeroed by the allocator, not written entry by entry: a large table (a million
        // descriptors is a common container limit) stays untouched, costing no memory, until
        // descriptors that high are used.
        let table = Box::<[AtomicU64]>::new_zeroed_slice(size);
        // SAFETY: an all-zero AtomicU64 is a valid 0.
        FdTable(unsafe { table.assume_init() })
    }

    fn entry(&self, fd: RawFd) -> Option<&AtomicU64> {
        usize::try_from(fd).ok().and_then(|i| self.0.get(i))
    }
}

pub(crate) struct Registry {
    slots: RwLock<Vec<Slot>>,
    free: Mutex<Vec<u32>>,
    fds: FdTable,
    /// Our listening sockets (one per accept generation): descriptor and generation, -1 free.
    listeners: [(AtomicI32, AtomicU64); LISTENERS],
    timer: Arc<Timer<Entry>>,
    idle_memory: Mutex<IdleMemory>,
    read_timeout: Option<Duration>,
    write_timeout: Duration,
    port: u16,
    /// Live connections per listener generation, for retiring old generations.
    per_generation: Mutex<Vec<(u64, usize)>>,
    /// Told when a generation's last connection is gone.
    generation_done: Mutex<Option<GenerationDone>>,
    /// Connections being answered; when it drops to 0, memory goes back to the system
    /// after a while without requests (`IdleMemory`).
    busy: AtomicUsize,
    /// Requests arrived so far (the sign of activity `IdleMemory` watches).
    arrivals: AtomicU64,
    /// Heads the scan withheld, by the metric's label.
    refused: Mutex<Vec<(&'static str, u64)>>,
}

/// Told the listener generation whose last connection is gone.
type GenerationDone = Box<dyn Fn(u64) + Send + Sync>;

struct Slot {
    reuse: u32,
    conn: Option<Arc<Conn>>,
}

/// What the timer hands back.
enum Entry {
    /// A connection's earliest deadline.
    Conn(Weak<Conn>),
    /// Time to see whether the watchdog stayed idle (`IdleMemory`).
    IdleMemory,
}

/// Memory back to the system after a burst: when no request has arrived and none has been answered for 2,
/// 12 and 30 seconds (the burst's threads end meanwhile: tiny_http's after 5 s idle, ours after
/// 10 s), the C allocator is asked to return its free pages.
#[derive(Default)]
struct IdleMemory {
    since: Option<Instant>,
    arrivals: u64,
    step: usize,
}

const IDLE_MEMORY_CHECKS: [Duration; 3] =
    [Duration::from_secs(2), Duration::from_secs(12), Duration::from_secs(30)];

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// One connection.
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    /// Itself, for the timer's entries.
    me: Weak<Conn>,
    /// The real peer, for log lines.
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) socket: Socket,
    generation: u64,
    accepted: Instant,
    /// Input ends here for tiny_http: the scan withheld a head, or the connection was cut.
    input_closed: AtomicBool,
    state: Mutex<State>,
}

struct State {
    /// Descriptors of it tiny_http holds (the accepted one, and its clone it reads from).
    tiny_fds: u8,
    read_started: bool,
    scan: HeadScan,
    /// An answer owed to a withheld head, once the requests before it are answered.
    refusal: Option<Refusal>,
    /// Requests that reached us, and turns ended.
    arrived: u64,
    ended: u64,
    busy: bool,
    backlog: VecDeque<(Request, u64)>,
    /// The end of the last response, or when the connection was accepted.
    idle_since: Instant,
    body_until: Option<Instant>,
    respond_until: Option<Instant>,
    upgraded: bool,
    /// The watchdog shut it down; what is left of it is let go.
    cut: bool,
    released: Option<Instant>,
    /// The timer's entry for it.
    armed: Option<Instant>,
}

/// What becomes of a request from tiny_http.
pub(crate) enum Arrival {
    /// Its turn: answer it.
    Serve(Turn),
    /// It waits in its connection's backlog and comes back when the turn before it ends.
    Waiting,
    /// Its connection is gone or cut: let it go.
    Discard(Request),
}

/// A request whose turn has come.
pub(crate) struct Turn {
    req: Request,
    conn: Arc<Conn>,
    /// Its place among the requests of its connection (from 1), as the scan counts heads.
    seq: u64,
    /// When the request started, for `read_timeout`: the end of the previous response on its
    /// connection, or when the connection was accepted.
    started: Instant,
}

impl Turn {
    pub(crate) fn req(&self) -> &Request {
        &self.req
    }

    pub(crate) fn into_parts(self) -> (Request, Arc<Conn>, Instant) {
        (self.req, self.conn, self.started)
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

impl Registry {
    /// Sets up the registry (once, before the first listener).
    pub(crate) fn init(
        port: u16,
        read_timeout: Duration,
        write_timeout: Duration,
    ) -> io::Result<&'static Registry> {
        let timer = Timer::start(|entry, at| {
            let Some(registry) = Registry::get() else { return };
            match entry {
                Entry::Conn(conn) => {
                    if let Some(conn) = conn.upgrade() {
                        registry.deadline(&conn, at);
                    }
                }
                Entry::IdleMemory => registry.idle_memory_check(),
            }
        })?;
        let registry = Registry {
            slots: RwLock::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            fds: FdTable::new(descriptor_limit()),
            listeners: std::array::from_fn(|_| (AtomicI32::new(-1), AtomicU64::new(0))),
            timer,
            idle_memory: Mutex::new(IdleMemory::default()),
            read_timeout: (!read_timeout.is_zero()).then_some(read_timeout),
            write_timeout,
            port,
            per_generation: Mutex::new(Vec::new()),
            generation_done: Mutex::new(None),
            busy: AtomicUsize::new(0),
            arrivals: AtomicU64::new(0),
            refused: Mutex::new(Vec::new()),
        };
        let _ = REGISTRY.set(registry);
        REGISTRY.get().ok_or_else(|| io::Error::other("the connection registry is already set up"))
    }

    pub(crate) fn get() -> Option<&'static Registry> {
        REGISTRY.get()
    }

    /// Connections accepted on `fd` belong to listener generation `generation` from now on.
    pub(crate) fn watch_listener(&self, fd: RawFd, generation: u64) -> io::Result<()> {
        for (slot_fd, slot_gen) in &self.listeners {
            slot_gen.store(generation, Ordering::Release);
            if slot_fd.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Ok(());
            }
        }
        Err(io::Error::other("too many listener generations at once"))
    }

    /// `fd` no longer accepts for us.
    pub(crate) fn unwatch_listener(&self, fd: RawFd) {
        for (slot_fd, _) in &self.listeners {
            let _ = slot_fd.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub(crate) fn listener_generation(&self, fd: RawFd) -> Option<u64> {
        self.listeners
            .iter()
            .find(|(slot_fd, _)| slot_fd.load(Ordering::Acquire) == fd)
            .map(|(_, generation)| generation.load(Ordering::Acquire))
    }

    /// Who to tell when a listener generation's last connection is gone.
    pub(crate) fn on_generation_done(&self, f: GenerationDone) {
        *self.generation_done.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
    }

    /// Live connections of listener generation `generation`.
    pub(crate) fn connections_of(&self, generation: u64) -> usize {
        let counts = self.per_generation.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().find(|(g, _)| *g == generation).map_or(0, |(_, n)| *n)
    }

    /// tiny_http accepted `fd` on a listener of `generation`.
    pub(crate) fn accepted(
        &self,
        fd: RawFd,
        peer: Option<SocketAddr>,
        generation: u64,
    ) -> io::Result<ConnId> {
        let socket = Socket::duplicate(fd)?;
        let now = Instant::now();
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let index = match self.free.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            Some(i) => i,
            None => {
                slots.push(Slot { reuse: 0, conn: None });
                (slots.len() - 1) as u32
            }
        };
        let slot = &mut slots[index as usize];
        slot.reuse = slot.reuse.wrapping_add(1);
        let id = ConnId { slot: index, reuse: slot.reuse };
        let conn = Arc::new_cyclic(|me| Conn {
            id,
            me: me.clone(),
            peer,
            socket,
            generation,
            accepted: now,
            input_closed: AtomicBool::new(false),
            state: Mutex::new(State {
                tiny_fds: 1,
                read_started: false,
                scan: HeadScan::new(),
                refusal: None,
                arrived: 0,
                ended: 0,
                busy: false,
                backlog: VecDeque::new(),
                idle_since: now,
                body_until: None,
                respond_until: None,
                upgraded: false,
                cut: false,
                released: None,
                armed: None,
            }),
        });
        slot.conn = Some(Arc::clone(&conn));
        drop(slots);
        if let Some(entry) = self.fds.entry(fd) {
            entry.store(id.pack(), Ordering::Release);
        }
        {
            let mut counts = self.per_generation.lock().unwrap_or_else(PoisonError::into_inner);
            match counts.iter_mut().find(|(g, _)| *g == generation) {
                Some((_, n)) => *n += 1,
                None => counts.push((generation, 1)),
            }
        }
        conn.rearm(&mut conn.lock(), self);
        Ok(id)
    }

    /// tiny_http asks for the peer of `fd`, right after accepting `id`: `fd` is the descriptor it
    /// reads the connection from. Returns the address that names the connection.
    pub(crate) fn read_half(&self, fd: RawFd, id: ConnId) -> Option<(Ipv6Addr, u16)> {
        let conn = self.conn(id)?;
        self.fds.entry(fd)?.store(id.pack(), Ordering::Release);
        conn.lock().tiny_fds += 1;
        Some((id.address(), conn.peer.map_or(0, |p| p.port())))
    }

    pub(crate) fn conn_of_id(&self, id: ConnId) -> Option<Arc<Conn>> {
        self.conn(id)
    }

    fn conn(&self, id: ConnId) -> Option<Arc<Conn>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.get(id.slot as usize)?;
        slot.conn.as_ref().filter(|_| slot.reuse == id.reuse).cloned()
    }

    /// The connection tiny_http holds `fd` for.
    pub(crate) fn conn_of_fd(&self, fd: RawFd) -> Option<Arc<Conn>> {
        let packed = self.fds.entry(fd)?.load(Ordering::Acquire);
        self.conn(ConnId::unpack(packed)?)
    }

    /// `fd` is about to be closed (by anyone).
    pub(crate) fn fd_closing(&self, fd: RawFd) {
        // A generation's listening socket closes when its accept thread ends.
        self.unwatch_listener(fd);
        let Some(packed) = self.fds.entry(fd).map(|e| e.swap(0, Ordering::AcqRel)) else { return };
        let Some(conn) = ConnId::unpack(packed).and_then(|id| self.conn(id)) else { return };
        let mut state = conn.lock();
        state.tiny_fds = state.tiny_fds.saturating_sub(1);
        if state.tiny_fds == 0 && state.released.is_none() {
            // tiny_http is done with it; our record goes once we are too, after `LINGER`.
            state.released = Some(Instant::now() + LINGER);
            conn.rearm(&mut state, self);
        }
    }

    /// A request from tiny_http, in the order tiny_http read them (the caller keeps that order).
    pub(crate) fn arrive(&self, req: Request) -> Arrival {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        let Some(conn) = req.remote_addr().and_then(ConnId::of_address).and_then(|id| self.conn(id)) else {
            return Arrival::Discard(req);
        };
        let mut state = conn.lock();
        state.arrived += 1;
        let seq = state.arrived;
        if state.cut && !state.busy {
            return Arrival::Discard(req);
        }
        // Behind a request still being answered it waits, even on a cut connection: it is let go
        // when that one has ended (`finish`), so nothing of tiny_http's waits for it.
        if state.busy {
            state.backlog.push_back((req, seq));
            if state.backlog.len() == MAX_BACKLOG {
                log::warn!(
                    "{}: more than {MAX_BACKLOG} pipelined requests waiting; reading no more of them",
                    conn.peer_name()
                );
                conn.close_input();
            }
            return Arrival::Waiting;
        }
        let started = state.idle_since;
        self.begin_turn(&conn, &mut state);
        drop(state);
        Arrival::Serve(Turn { req, conn, seq, started })
    }

    fn begin_turn(&self, conn: &Conn, state: &mut State) {
        state.busy = true;
        state.respond_until = Some(Instant::now() + self.write_timeout + RESPONSE_GRACE);
        self.busy.fetch_add(1, Ordering::AcqRel);
        conn.rearm(state, self);
    }

    /// The current request of `conn` is answered. `keep`: the connection may carry more
    /// requests. Returns the connection's next request, if one waits, and the ones to let go.
    pub(crate) fn finish(&self, conn: &Arc<Conn>, keep: bool) -> (Option<Turn>, Vec<Request>) {
        let now = Instant::now();
        let mut state = conn.lock();
        if !state.busy {
            return (None, Vec::new());
        }
        state.ended += 1;
        state.busy = false;
        let idle = self.busy.fetch_sub(1, Ordering::AcqRel) == 1;
        state.body_until = None;
        state.respond_until = None;
        state.upgraded = false;
        state.idle_since = now;
        let mut result = (None, Vec::new());
        if !keep || state.cut {
            // Both ways: what waits is let go, and tiny_http's answer to each must fail at once
            // rather than wait for a client that may not read.
            state.cut = true;
            conn.socket.shutdown(libc::SHUT_RDWR);
            conn.input_closed.store(true, Ordering::Release);
            result.1 = state.backlog.drain(..).map(|(req, _)| req).collect();
        } else if let Some((req, seq)) = state.backlog.pop_front() {
            self.begin_turn(conn, &mut state);
            result.0 = Some(Turn { req, conn: Arc::clone(conn), seq, started: now });
        } else {
            conn.answer_refusal(&mut state);
        }
        if idle && !state.busy {
            self.idle_memory_watch();
        }
        conn.rearm(&mut state, self);
        result
    }

    /// No request is being answered or waits, none has been read by tiny_http and not taken
    /// yet, and no connection is receiving a head. Idle keep-alive connections do not count: they
    /// are simply closed.
    pub(crate) fn quiescent(&self) -> bool {
        let conns = self.all();
        conns.iter().all(|c| {
            let s = c.lock();
            !s.busy && s.backlog.is_empty() && s.scan.heads() <= s.arrived && s.scan.partial_head().is_none()
        })
    }

    /// Closes every relayed websocket (the end of a drain).
    pub(crate) fn close_upgraded(&self) {
        for conn in self.all() {
            if conn.lock().upgraded {
                conn.socket.shutdown(libc::SHUT_RDWR);
            }
        }
    }

    fn all(&self) -> Vec<Arc<Conn>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.iter().filter_map(|s| s.conn.clone()).collect()
    }

    /// Heads the scan withheld, by the metric's label, since the start.
    pub(crate) fn refused_heads(&self) -> Vec<(&'static str, u64)> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn count_refusal(&self, refusal: Refusal) {
        let mut counts = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        match counts.iter_mut().find(|(label, _)| *label == refusal.label()) {
            Some((_, n)) => *n += 1,
            None => counts.push((refusal.label(), 1)),
        }
    }

    /// The record of `conn` goes: tiny_http has closed it, we are done, its linger is over.
    fn remove(&self, conn: &Conn) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(conn.id.slot as usize)
            && slot.reuse == conn.id.reuse
            && slot.conn.take().is_some()
        {
            self.free.lock().unwrap_or_else(PoisonError::into_inner).push(conn.id.slot);
        }
        drop(slots);
        let now_empty = {
            let mut counts = self.per_generation.lock().unwrap_or_else(PoisonError::into_inner);
            let mut empty = false;
            if let Some((_, n)) = counts.iter_mut().find(|(g, _)| *g == conn.generation) {
                *n = n.saturating_sub(1);
                empty = *n == 0;
            }
            counts.retain(|(_, n)| *n > 0);
            empty
        };
        if now_empty && let Some(f) = &*self.generation_done.lock().unwrap_or_else(PoisonError::into_inner) {
            f(conn.generation);
        }
    }

    /// Wakes tiny_http's connection pool for a connection none of its threads has started to
    /// read: its pool can queue a new connection behind threads it counts as idle but has
    /// already woken for earlier ones, and then nothing reads it until another connection
    /// arrives or closes. A new connection makes the pool start a thread or wake one, and
    /// either takes the oldest queued connection next; one empty connection of ours does that.
    fn wake_pool(&self) {
        log::debug!("a connection waits for a tiny_http thread; waking its pool");
        let targets = [
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, self.port)),
        ];
        let timeout = Duration::from_millis(200);
        let _ = targets.iter().any(|t| std::net::TcpStream::connect_timeout(t, timeout).is_ok());
    }

    /// The timer's call: `conn`'s earliest deadline (as armed at `at`) has come.
    pub(crate) fn deadline(&self, conn: &Arc<Conn>, at: Instant) {
        let now = Instant::now();
        let mut state = conn.lock();
        if state.armed == Some(at) {
            state.armed = None;
        }
        let due = deadline::decide(&conn.view(&state, self), now);
        log::trace!("{}: {due:?}", conn.peer_name());
        match due {
            Due::Nothing => {}
            Due::CloseIdle { partial_head } => {
                state.cut = true;
                conn.input_closed.store(true, Ordering::Release);
                if partial_head {
                    log::warn!(
                        "{}: request not received within read_timeout; closing the connection",
                        conn.peer_name()
                    );
                    conn.socket.send_now(TIMEOUT_408);
                }
                conn.socket.shutdown(libc::SHUT_RDWR);
            }
            Due::BodyLate => {
                log::warn!("{}: request body not received within read_timeout", conn.peer_name());
                state.body_until = None;
                conn.socket.shutdown(libc::SHUT_RD);
            }
            Due::ResponseLate => {
                log::warn!(
                    "{}: response not complete within write_timeout; closing the connection",
                    conn.peer_name()
                );
                state.respond_until = None;
                state.cut = true;
                conn.input_closed.store(true, Ordering::Release);
                conn.socket.shutdown(libc::SHUT_RDWR);
            }
            Due::WakePool => {
                state.read_started = true;
                drop(state);
                self.wake_pool();
                state = conn.lock();
            }
            Due::Remove => {
                drop(state);
                self.remove(conn);
                return;
            }
        }
        conn.rearm(&mut state, self);
    }
}

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\n\r\n408 Request Timeout: request not received within read_timeout\n";

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer for log lines.
    pub(crate) fn peer_name(&self) -> String {
        self.peer.map_or_else(|| "a client".into(), |p| p.to_string())
    }

    /// tiny_http (or the startup check) has read from it.
    pub(crate) fn read_seen(&self) -> bool {
        self.lock().read_started
    }

    pub(crate) fn input_closed(&self) -> bool {
        self.input_closed.load(Ordering::Acquire)
    }

    /// No more input reaches tiny_http or our body readers: the read side is shut.
    fn close_input(&self) {
        self.input_closed.store(true, Ordering::Release);
        self.socket.shutdown(libc::SHUT_RD);
    }

    /// Bytes tiny_http just received on this connection (from `intercept`).
    pub(crate) fn received(&self, data: &[u8]) -> Verdict {
        let mut state = self.lock();
        state.read_started = true;
        let verdict = state.scan.feed(data, Instant::now());
        if let Verdict::Stop { refusal, .. } = verdict {
            self.input_closed.store(true, Ordering::Release);
            if let Some(refusal) = refusal {
                log::info!("{}: refused {}", self.peer_name(), refusal.reason());
                if let Some(registry) = Registry::get() {
                    registry.count_refusal(refusal);
                }
                state.refusal = Some(refusal);
                self.answer_refusal(&mut state);
            }
        }
        verdict
    }

    /// Writes the answer owed to a withheld head once every request before it is answered, and
    /// ends the connection.
    fn answer_refusal(&self, state: &mut State) {
        let Some(refusal) = state.refusal else { return };
        if state.busy || !state.backlog.is_empty() || state.ended < state.scan.heads() {
            return;
        }
        state.refusal = None;
        let body = refusal.message();
        let answer = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            refusal.status(),
            reason(refusal.status()),
            body.len()
        );
        self.socket.send_now(answer.as_bytes());
        self.socket.shutdown(libc::SHUT_RDWR);
        state.cut = true;
    }

    /// The current request reads its body until `until` at the latest.
    pub(crate) fn reading_body(&self, until: Option<Instant>) {
        let Some(until) = until else { return };
        let mut state = self.lock();
        state.body_until = Some(until);
        if let Some(registry) = Registry::get() {
            self.rearm(&mut state, registry);
        }
    }

    /// The current request has read its whole body.
    pub(crate) fn body_read(&self) {
        self.lock().body_until = None;
    }

    /// The body of its `seq`-th request arrived whole (tiny_http's decoder reports a chunked
    /// body cut inside a chunk as a clean end; the scan knows better).
    pub(crate) fn body_complete(&self, seq: u64) -> bool {
        self.lock().scan.body_complete(seq)
    }

    /// The connection now carries a websocket: no deadlines until it ends.
    pub(crate) fn upgraded(&self) {
        let mut state = self.lock();
        state.upgraded = true;
        state.body_until = None;
        state.respond_until = None;
    }

    /// Its request is answered before its body was read: tiny_http must neither wait for the rest
    /// nor read it as the next request. The connection closes after this response.
    pub(crate) fn stop_reading(&self) {
        self.close_input();
        self.lock().cut = true;
    }

    /// Shuts the connection down both ways now (a response broke off: the client must not take
    /// what it got as complete).
    pub(crate) fn abort(&self) {
        self.socket.shutdown(libc::SHUT_RDWR);
        self.input_closed.store(true, Ordering::Release);
        self.lock().cut = true;
    }

    fn view(&self, state: &State, registry: &Registry) -> View {
        View {
            busy: state.busy || !state.backlog.is_empty(),
            upgraded: state.upgraded,
            cut: state.cut,
            read_deadline: registry.read_timeout.map(|t| state.idle_since + t),
            body_until: state.body_until,
            respond_until: state.respond_until,
            partial_head: state.scan.partial_head().is_some(),
            head_waiting: state.scan.heads() > state.arrived,
            read_started: state.read_started,
            read_start_by: self.accepted + READ_START,
            released: state.released,
        }
    }

    /// Makes sure the timer wakes for this connection's earliest deadline.
    fn rearm(&self, state: &mut State, registry: &Registry) {
        let Some(next) = deadline::next_due(&self.view(state, registry), Instant::now()) else { return };
        if state.armed.is_none_or(|armed| next < armed) {
            state.armed = Some(next);
            registry.timer.schedule(next, Entry::Conn(self.me.clone()));
        }
    }
}

impl Registry {
    /// No request is being answered now: watch whether it stays so, unless already watching.
    fn idle_memory_watch(&self) {
        let mut watch = self.idle_memory.lock().unwrap_or_else(PoisonError::into_inner);
        if watch.since.is_none() {
            let now = Instant::now();
            *watch =
                IdleMemory { since: Some(now), arrivals: self.arrivals.load(Ordering::Relaxed), step: 0 };
            self.timer.schedule(now + IDLE_MEMORY_CHECKS[0], Entry::IdleMemory);
        }
    }

    /// A check is due: memory goes back if nothing happened since the watch began.
    fn idle_memory_check(&self) {
        let mut watch = self.idle_memory.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(since) = watch.since else { return };
        let calm =
            self.arrivals.load(Ordering::Relaxed) == watch.arrivals && self.busy.load(Ordering::Acquire) == 0;
        if !calm {
            // Not idle; the next watch begins when the calls of now are answered.
            *watch = IdleMemory::default();
            if self.busy.load(Ordering::Acquire) == 0 {
                drop(watch);
                self.idle_memory_watch();
            }
            return;
        }
        super::alloc::give_back();
        watch.step += 1;
        match IDLE_MEMORY_CHECKS.get(watch.step) {
            Some(step) => self.timer.schedule(since + *step, Entry::IdleMemory),
            // Over; the next watch begins with the next request answered.
            None => *watch = IdleMemory::default(),
        }
    }
}

/// The soft descriptor limit (raised to the hard one at startup), capped: the size of the table
/// from descriptors to connections.
fn descriptor_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: limit is a valid out pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let n = if got { limit.rlim_cur } else { 1024 };
    usize::try_from(n).unwrap_or(usize::MAX).clamp(1024, 1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_round_trip_and_never_collide_with_peers() {
        for (slot, reuse) in [(0, 1), (7, 2), (u32::MAX - 1, u32::MAX), (65_536, 65_535)] {
            let id = ConnId { slot, reuse };
            let addr = SocketAddr::new(id.address().into(), 4321);
            assert_eq!(ConnId::of_address(&addr), Some(id));
            assert_eq!(ConnId::unpack(id.pack()), Some(id));
        }
        for real in ["127.0.0.1:80", "[::1]:80", "[2001:db8::1]:80", "[100:0:0:1::]:80"] {
            let addr: SocketAddr = real.parse().expect("address");
            assert_eq!(ConnId::of_address(&addr), None, "{real}");
        }
        assert_eq!(ConnId::unpack(0), None);
    }
}
