//! Raw socket work that std does not offer: the listening socket with its inherited options,
//! and finding the accepted socket behind a tiny_http `Request`.

use std::collections::HashSet;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
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

/// What accepted connections inherit from the listening socket (ENGINEERING.md trap 4).
pub(crate) struct SocketOptions {
    /// `SO_RCVTIMEO`: zero leaves reads unbounded. Also bounds `accept()`, which is why the
    /// listener module replaces tiny_http's accept thread when it times out.
    pub(crate) read_timeout: Duration,
    /// `SO_SNDTIMEO`: a client that stops reading cannot pin a worker for longer.
    pub(crate) write_timeout: Duration,
}

/// Binds `[::]:port` (dual stack, like Go's `:8080`), or `0.0.0.0:port` where IPv6 is off.
pub(crate) fn listen(port: u16, opts: &SocketOptions) -> io::Result<TcpListener> {
    let fd = match bind_v6(port) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)) => {
            bind_v4(port)?
        }
        Err(e) => return Err(e),
    };
    // SAFETY: fd is a fresh socket we own; TcpListener takes over closing it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    apply_options(fd, opts)?;
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

fn apply_options(fd: RawFd, opts: &SocketOptions) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int)?;
    // Dead peers are noticed within ~2 minutes instead of the kernel's 2 hours.
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6 as libc::c_int)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, timeval(opts.write_timeout))?;
    if !opts.read_timeout.is_zero() {
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, timeval(opts.read_timeout))?;
    }
    Ok(())
}

/// Stops the listening socket for every descriptor that shares it (tiny_http holds clones):
/// blocked `accept()` calls return and new connections are refused.
pub(crate) fn stop_listening(listener: &TcpListener) {
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
}

/// The inodes of the connections accepted on `port` that this process still holds.
///
/// Found among our own descriptors (a connection has an inode while any of its descriptors is
/// open, and tiny_http holds two per connection): cheap, unlike /proc/net/tcp, whose read walks
/// the kernel's whole socket table. `None` if /proc/self/fd cannot be listed.
pub(crate) fn accepted_sockets(port: u16) -> Option<HashSet<u64>> {
    let mut found = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        // SAFETY: fstat writes into the zeroed stat we pass; a stale fd just fails.
        let mut st: libc::stat = unsafe { mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            continue;
        }
        if name_of(fd, libc::getsockname).is_some_and(|a| a.port() == port) && !is_listening(fd) {
            found.insert(st.st_ino);
        }
    }
    Some(found)
}

fn is_listening(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid out pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && value != 0
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

/// Shuts down (`how`: `libc::SHUT_RD` or `SHUT_RDWR`) the connection from `peer` to our `port`.
/// With `SHUT_RD` tiny_http stops reading requests from it after the current one: used when a
/// request's framing is broken (invalid Content-Length, unsupported Transfer-Encoding) and the
/// bytes after its head cannot be trusted to start the next request (ENGINEERING.md trap 2).
/// tiny_http never hands out the socket, so it is found among our descriptors by its address
/// pair.
pub(crate) fn shutdown_connection(port: u16, peer: SocketAddr, how: libc::c_int) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return false };
    let mut done = false;
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        let matches = name_of(fd, libc::getsockname).is_some_and(|l| l.port() == port)
            && name_of(fd, libc::getpeername).is_some_and(|p| same_peer(p, peer));
        if matches {
            unsafe { libc::shutdown(fd, how) };
            done = true;
        }
    }
    done
}

/// Peers compare equal across the IPv4-mapped IPv6 form of a dual-stack socket.
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s.ip(), IpAddr::V4),
        ip => ip,
    };
    a.port() == b.port() && canon(a) == canon(b)
}
