//! Raw socket work that std does not offer: the listening socket with the options its accepted
//! connections inherit, and `Socket`, our own descriptor of an accepted connection.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
/// Accepted sockets inherit `TCP_NODELAY`, keepalive and `SO_SNDTIMEO` = `write_timeout`, so a
/// client that stops reading cannot hold a writer longer than that per write. There is no
/// `SO_RCVTIMEO`: it would also time out `accept()` (ending tiny_http's accept thread); reads are
/// bounded by whole-request deadlines instead (`timer`).
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
    // Dead peers are noticed within about two minutes instead of the kernel's two hours.
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6 as libc::c_int)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, timeval(write_timeout))?;
    // SAFETY: listen on a socket we own.
    cvt(unsafe { libc::listen(fd, 1024) })?;
    Ok(listener)
}

fn new_socket(family: libc::c_int) -> io::Result<RawFd> {
    // SAFETY: socket has no memory effects.
    cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })
}

/// A new socket of `family` with SO_REUSEADDR, bound by `bind`; closed on error.
fn bound_socket(family: libc::c_int, bind: impl FnOnce(RawFd) -> io::Result<()>) -> io::Result<RawFd> {
    let fd = new_socket(family)?;
    match setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1 as libc::c_int).and_then(|()| bind(fd)) {
        Ok(()) => Ok(fd),
        Err(e) => {
            // SAFETY: closing the socket we just made.
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
        // SAFETY: addr is a valid sockaddr_in6 of `len` bytes.
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
        // SAFETY: addr is a valid sockaddr_in of `len` bytes.
        cvt(unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len) }).map(drop)
    })
}

/// Stops the listening socket for every descriptor that shares it (tiny_http holds clones):
/// blocked `accept()` calls return and new connections are refused.
pub(crate) fn stop_listening(listener: &TcpListener) {
    // SAFETY: shutdown on a socket we own.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
}

/// A socket address from the kernel's `sockaddr` (IPv4-mapped IPv6 addresses as IPv4).
///
/// # Safety
/// `addr` must point to `len` readable bytes.
pub(crate) unsafe fn sockaddr_to(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the caller vouches for `len` bytes; the family field comes first.
    match i32::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say it is a sockaddr_in.
            let a = unsafe { &*(addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say it is a sockaddr_in6.
            let a = unsafe { &*(addr as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// Writes an IPv6 socket address where the kernel would write one.
///
/// # Safety
/// `addr` must point to `*len` writable bytes and `len` to a writable length.
pub(crate) unsafe fn write_sockaddr_v6(
    ip: Ipv6Addr,
    port: u16,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> bool {
    let size = mem::size_of::<libc::sockaddr_in6>();
    // SAFETY: the caller vouches for both pointers.
    if addr.is_null() || len.is_null() || (unsafe { *len } as usize) < size {
        return false;
    }
    // SAFETY: all-zero is a valid sockaddr_in6, written into room for one.
    unsafe {
        let mut a: libc::sockaddr_in6 = mem::zeroed();
        a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        a.sin6_port = port.to_be();
        a.sin6_addr.s6_addr = ip.octets();
        std::ptr::write_unaligned(addr as *mut libc::sockaddr_in6, a);
        *len = size as libc::socklen_t;
    }
    true
}

/// Our own descriptor of an accepted connection: a duplicate of the one tiny_http reads, so it
/// stays the same connection however tiny_http's descriptors are closed and their numbers
/// reused. Closed once, when the connection's record goes.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Duplicates `fd` (close-on-exec: the functions we start never inherit it).
    pub(crate) fn duplicate(fd: RawFd) -> io::Result<Socket> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1) that we then own.
        let dup = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: a fresh descriptor we own.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(dup) } })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A blocking send of all of `data` (bounded per call by `SO_SNDTIMEO`).
    pub(crate) fn send_all(&self, data: &[u8]) -> io::Result<()> {
        self.send_parts_flags(&[data], libc::MSG_NOSIGNAL)
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
            // SAFETY: a valid msghdr on a socket we own.
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
    /// user space (blocking, bounded per call by `SO_SNDTIMEO`). `more`: further data follows.
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

    /// Sends what fits in the socket buffer right now, without waiting (a short answer on a
    /// connection that is about to be closed).
    pub(crate) fn send_now(&self, data: &[u8]) -> bool {
        // SAFETY: data is a valid buffer of data.len() bytes.
        let n = unsafe {
            libc::send(self.raw(), data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        };
        n == data.len() as isize
    }

    /// `libc::SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`, for every descriptor of the connection.
    pub(crate) fn shutdown(&self, how: libc::c_int) {
        // SAFETY: shutdown on a socket we own.
        unsafe { libc::shutdown(self.raw(), how) };
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
