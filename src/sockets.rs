//! Raw socket work that std does not offer: the listening socket with its inherited options,
//! finding the accepted sockets behind tiny_http's requests among our own descriptors, and a
//! `Socket`: our own duplicate of one of them (decision D2), to write on, shut down, and ask
//! the kernel about (TCP_INFO, queued bytes).

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: value lives for the call and its size is passed along.
    let ret = unsafe {
        libc::setsockopt(fd, level, name, (&value as *const T).cast(), mem::size_of::<T>() as libc::socklen_t)
    };
    cvt(ret).map(drop)
}

fn timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: libc::suseconds_t::from(d.subsec_micros() as i32),
    }
}

/// Binds `[::]:port` (dual stack, like Go's `:8080`), or `0.0.0.0:port` where IPv6 is off.
///
/// Accepted sockets inherit `TCP_NODELAY`, keepalive and `SO_SNDTIMEO` = `write_timeout` (a
/// client that stops reading cannot pin a thread for longer than that per write; ENGINEERING.md
/// trap 4). There is deliberately no `SO_RCVTIMEO`: it would also time out `accept()`, and the
/// connection layer (`connections`) bounds reads with whole-request deadlines instead.
pub(crate) fn listen(port: u16, write_timeout: Duration) -> io::Result<TcpListener> {
    let fd = match bind_v6(port) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)) => {
            bind_v4(port)?
        }
        Err(e) => return Err(e),
    };
    // SAFETY: fd is a fresh socket we own; TcpListener takes over closing it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int)?;
    // Dead peers are noticed within ~2 minutes instead of the kernel's 2 hours.
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6 as libc::c_int)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, timeval(write_timeout))?;
    cvt(unsafe { libc::listen(fd, 1024) })?;
    Ok(listener)
}

fn new_socket(family: libc::c_int) -> io::Result<RawFd> {
    cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })
}

/// A new socket of `family` with SO_REUSEADDR, set up and bound by `bind`; closed on error.
fn bound_socket(family: libc::c_int, bind: impl FnOnce(RawFd) -> io::Result<()>) -> io::Result<RawFd> {
    let fd = new_socket(family)?;
    match setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1 as libc::c_int).and_then(|()| bind(fd)) {
        Ok(()) => Ok(fd),
        Err(e) => {
            unsafe { libc::close(fd) };
            Err(e)
        }
    }
}

fn bind_v6(port: u16) -> io::Result<RawFd> {
    bound_socket(libc::AF_INET6, |fd| {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0 as libc::c_int)?;
        // SAFETY: all-zero is a valid sockaddr_in6 (the :: address).
        let mut addr: libc::sockaddr_in6 = unsafe { mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_port = port.to_be();
        let len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        cvt(unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_in6).cast(), len) }).map(drop)
    })
}

fn bind_v4(port: u16) -> io::Result<RawFd> {
    bound_socket(libc::AF_INET, |fd| {
        // SAFETY: all-zero is a valid sockaddr_in (0.0.0.0).
        let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        cvt(unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len) }).map(drop)
    })
}

/// Stops the listening socket for every descriptor that shares it (tiny_http holds clones):
/// blocked `accept()` calls return and new connections are refused.
pub(crate) fn stop_listening(listener: &TcpListener) {
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
}

/// One connection accepted on our port, as found among the process's descriptors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) fd: RawFd,
    pub(crate) inode: u64,
    pub(crate) peer: SocketAddr,
}

/// The descriptors of our own `Socket`s: scans skip them, so a connection counts as open only
/// while tiny_http holds it. A leaf lock: nothing else is locked while it is held.
static OWN_FDS: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

fn own_fds() -> HashSet<RawFd> {
    OWN_FDS.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default()
}

/// What a scan learned about one descriptor: kept so that the next scan asks the kernel about
/// a socket only once (its inode tells whether the number still names the same socket).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    inode: u64,
    /// `Some` for a connection accepted on our port.
    peer: Option<SocketAddr>,
}

/// The connections accepted on `port` that tiny_http still holds, one entry per connection
/// (it keeps two descriptors for each), keyed by inode. `None` if /proc/self/fd cannot be read.
/// `cache` carries what the previous scan learned.
///
/// A connection has an inode while any descriptor of it is open; reading our own descriptor
/// table is cheap, unlike /proc/net/tcp, whose read walks the kernel's whole socket table.
pub(crate) fn scan_cached(port: u16, cache: &mut HashMap<RawFd, Seen>) -> Option<HashMap<u64, Found>> {
    let own = own_fds();
    let mut next = HashMap::with_capacity(cache.len());
    let mut found = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if own.contains(&fd) {
            continue;
        }
        let Some(inode) = socket_inode(fd) else { continue };
        let seen = match cache.get(&fd) {
            Some(s) if s.inode == inode => *s,
            _ => Seen { inode, peer: accepted_peer(fd, port) },
        };
        next.insert(fd, seen);
        if let Some(peer) = seen.peer {
            found.entry(inode).or_insert(Found { fd, inode, peer });
        }
    }
    *cache = next;
    Some(found)
}

/// The peer of `fd` if it is a connection accepted on `port` (the listening socket has none).
fn accepted_peer(fd: RawFd, port: u16) -> Option<SocketAddr> {
    if name_of(fd, libc::getsockname).is_none_or(|a| a.port() != port) {
        return None;
    }
    name_of(fd, libc::getpeername).map(canonical)
}

fn socket_inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed stat we pass; a stale fd just fails.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    ok.then_some(st.st_ino)
}

/// Peers compare equal across the IPv4-mapped IPv6 form of a dual-stack socket.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn sockaddr_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

fn name_of(
    fd: RawFd,
    get: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> Option<SocketAddr> {
    // SAFETY: the kernel fills at most `len` bytes of the zeroed storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let ret = unsafe { get(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) };
    if ret < 0 { None } else { sockaddr_of(&storage) }
}

/// What TCP_INFO says about a connection, the parts the connection layer uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpInfo {
    /// Linux `TCP_ESTABLISHED` = 1, `TCP_CLOSE_WAIT` = 8, ...
    pub(crate) state: u8,
    pub(crate) bytes_received: u64,
    /// Milliseconds since data last arrived.
    pub(crate) last_data_recv_ms: u32,
}

pub(crate) const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

/// Our own descriptor of an accepted connection (decision D2): a duplicate of tiny_http's, so it
/// stays the same connection however tiny_http's descriptors are closed and their numbers
/// reused. Closed exactly once, when the last holder drops it.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    pub(crate) inode: u64,
    pub(crate) peer: SocketAddr,
}

impl Socket {
    /// Duplicates `found.fd` if it is still the connection the scan saw.
    pub(crate) fn adopt(found: &Found) -> Option<Socket> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1) that we then own; the
        // function processes we start never inherit it.
        let dup = unsafe { libc::fcntl(found.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        OWN_FDS.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(HashSet::new).insert(dup);
        let socket = Socket { fd, inode: found.inode, peer: found.peer };
        // The number may have been closed and reused between the scan and the dup.
        (socket_inode(dup) == Some(found.inode)).then_some(socket)
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A blocking send of all of `data` (bounded per call by `SO_SNDTIMEO`).
    pub(crate) fn send_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: data is a valid buffer of data.len() bytes.
            let n = unsafe { libc::send(self.raw(), data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// A blocking send of the concatenation of `parts`, without copying them together first.
    pub(crate) fn send_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        self.send_parts_flags(parts, libc::MSG_NOSIGNAL)
    }

    /// `send_parts`, telling the kernel more data follows at once (`MSG_MORE`).
    pub(crate) fn send_parts_more(&self, parts: &[&[u8]]) -> io::Result<()> {
        self.send_parts_flags(parts, libc::MSG_NOSIGNAL | libc::MSG_MORE)
    }

    fn send_parts_flags(&self, parts: &[&[u8]], flags: libc::c_int) -> io::Result<()> {
        let mut iov: Vec<libc::iovec> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() })
            .collect();
        let mut at = 0;
        while at < iov.len() {
            // SAFETY: msg points to live iovecs over buffers borrowed for the call.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_iov = iov[at..].as_mut_ptr();
            msg.msg_iovlen = (iov.len() - at) as _;
            let n = unsafe { libc::sendmsg(self.raw(), &msg, flags) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut n = n as usize;
            while at < iov.len() && n >= iov[at].iov_len {
                n -= iov[at].iov_len;
                at += 1;
            }
            if n > 0 {
                // SAFETY: n < iov_len, so the advanced pointer stays inside the buffer.
                iov[at].iov_base = unsafe { (iov[at].iov_base as *mut u8).add(n) }.cast();
                iov[at].iov_len -= n;
            }
        }
        Ok(())
    }

    /// Moves `n` bytes from the pipe `pipe` into the connection without copying them through
    /// user space (blocking, bounded per call by `SO_SNDTIMEO`). `more`: further data follows
    /// at once (the kernel may wait for it to fill a packet).
    pub(crate) fn splice_from(&self, pipe: RawFd, mut n: usize, more: bool) -> io::Result<()> {
        let flags = libc::SPLICE_F_MOVE | if more { libc::SPLICE_F_MORE } else { 0 };
        while n > 0 {
            // SAFETY: both descriptors are open; null offsets mean "current position".
            let moved = unsafe {
                libc::splice(pipe, std::ptr::null_mut(), self.raw(), std::ptr::null_mut(), n, flags)
            };
            if moved < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if moved == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            n -= moved as usize;
        }
        Ok(())
    }

    /// Sends what fits in the socket buffer right now, without waiting.
    pub(crate) fn send_now(&self, data: &[u8]) -> bool {
        // SAFETY: data is a valid buffer of data.len() bytes.
        let n = unsafe {
            libc::send(self.raw(), data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        };
        n == data.len() as isize
    }

    /// `libc::SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`, for every descriptor of the connection.
    pub(crate) fn shutdown(&self, how: libc::c_int) {
        unsafe { libc::shutdown(self.raw(), how) };
    }

    pub(crate) fn tcp_info(&self) -> Option<TcpInfo> {
        // SAFETY: the kernel fills at most `len` bytes of the zeroed struct.
        let mut info: libc::tcp_info = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                self.raw(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(TcpInfo {
            state: info.tcpi_state,
            bytes_received: info.tcpi_bytes_received,
            last_data_recv_ms: info.tcpi_last_data_recv,
        })
    }

    /// Bytes received that nobody has read yet.
    pub(crate) fn unread(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(self.raw(), libc::FIONREAD, &mut n) };
        if rc == 0 { usize::try_from(n).unwrap_or(0) } else { 0 }
    }

    /// Still a live connection (not closed on our side).
    pub(crate) fn is_open(&self) -> bool {
        self.tcp_info().is_some_and(|i| i.state == TCP_ESTABLISHED || i.state == TCP_CLOSE_WAIT)
    }

    /// The peer has closed or reset the connection: its FIN or RST arrived. (A read side shut by
    /// tiny_http or by us leaves the connection established.)
    pub(crate) fn peer_closed(&self) -> bool {
        self.tcp_info().is_some_and(|i| i.state != TCP_ESTABLISHED)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Forget the number before the OwnedFd closes it, so a scan never skips a reuse of it.
        if let Some(set) = OWN_FDS.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            set.remove(&self.fd.as_raw_fd());
        }
    }
}

impl io::Write for &Socket {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.send_all(data).map(|()| data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The inodes of the connections accepted on `port` that tiny_http still holds (the listener
/// uses it to tell when an old accept generation has no connections left).
pub(crate) fn accepted_sockets(port: u16) -> Option<HashSet<u64>> {
    scan_cached(port, &mut HashMap::new()).map(|found| found.into_keys().collect())
}
