//! What tiny_http does with the sockets it accepts, seen as it happens: four C library functions
//! are defined here, so that the calls tiny_http (through std) makes to them land here first.
//! Each calls the kernel itself and tells the registry what happened. Calls on descriptors that
//! are not connections accepted on our port pass straight through (one table lookup).
//!
//! - `accept4` on one of our listening sockets: a new connection. It is registered with its
//!   peer address and our own duplicate of its descriptor (`Socket`), at once, so no connection
//!   is ever unknown to the watchdog.
//! - `getpeername`, the next call on tiny_http's accept thread, names the descriptor tiny_http
//!   will read the connection from (its clone of the accepted one). tiny_http keeps the answer
//!   as the peer address of every request of the connection; we answer with an address that
//!   names the connection instead (`ConnId::address`), so a request leads to its connection
//!   without any search, and the answer never fails (tiny_http's connection thread panics on a
//!   failed one, for a client that resets right after connecting).
//! - `recv` on that descriptor: the bytes go through the head scan (`head_scan`) before tiny_http
//!   sees them; what must not reach it is withheld, and the connection's input ends there.
//! - `close` of either descriptor: when tiny_http has closed both, it is done with the
//!   connection.
//!
//! They run on tiny_http's threads (and `recv` on ours too, when we read a request body through
//! tiny_http's reader); none of them blocks longer than the system call it stands for.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use libc::{c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};

use super::head_scan::Verdict;
use super::registry::{ConnId, Registry};

/// Checks, once at startup, that std's calls land here (a toolchain whose std calls other
/// functions, `recvfrom` or `read` for `recv`, would leave every connection unseen): a loopback
/// connection accepted, cloned, named and read the way tiny_http does it.
pub(crate) fn check(registry: &Registry) -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    registry.watch_listener(listener.as_raw_fd(), 0)?;
    let result = (|| {
        let mut client = TcpStream::connect(listener.local_addr()?)?;
        client.write_all(b"G")?;
        let (accepted, _) = listener.accept()?;
        let mut read_half = accepted.try_clone()?;
        let named = ConnId::of_address(&read_half.peer_addr()?).is_some();
        let mut byte = [0u8; 1];
        read_half.read_exact(&mut byte)?;
        let seen = registry.conn_of_fd(read_half.as_raw_fd()).is_some_and(|c| c.read_seen());
        if named && seen {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the HTTP server cannot see its connections (accept4/getpeername/recv not intercepted: named {named}, read {seen}); this build is broken"
            )))
        }
    })();
    registry.unwatch_listener(listener.as_raw_fd());
    result
}
use super::socket;

thread_local! {
    /// On tiny_http's accept thread: the connection just accepted, until tiny_http asks for the
    /// peer address of the descriptor it will read it from.
    static JUST_ACCEPTED: Cell<Option<ConnId>> = const { Cell::new(None) };
}

fn set_errno(code: c_int) {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() = code };
}

/// # Safety
/// As `accept4(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged.
    let accepted = unsafe { libc::syscall(libc::SYS_accept4, fd, addr, len, flags) } as c_int;
    if accepted < 0 {
        return accepted;
    }
    let Some(registry) = Registry::get() else { return accepted };
    let Some(listener) = registry.listener_generation(fd) else { return accepted };
    // SAFETY: the kernel filled `addr` with `*len` bytes (std always passes both).
    let peer = if len.is_null() { None } else { unsafe { socket::sockaddr_to(addr, *len) } };
    match registry.accepted(accepted, peer, listener) {
        Ok(id) => {
            JUST_ACCEPTED.with(|j| j.set(Some(id)));
            accepted
        }
        Err(e) => {
            // Out of descriptors: the accept fails as the kernel's would, and the listener
            // restarts (see `listener`).
            // SAFETY: closing the descriptor we were just given.
            unsafe { libc::syscall(libc::SYS_close, accepted) };
            set_errno(e.raw_os_error().unwrap_or(libc::EMFILE));
            -1
        }
    }
}

/// # Safety
/// As `getpeername(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if let Some(id) = JUST_ACCEPTED.with(Cell::take)
        && let Some(registry) = Registry::get()
        && let Some((ip, port)) = registry.read_half(fd, id)
        // SAFETY: the caller's buffer, of `*len` bytes.
        && unsafe { socket::write_sockaddr_v6(ip, port, addr, len) }
    {
        return 0;
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { libc::syscall(libc::SYS_getpeername, fd, addr, len) as c_int }
}

/// # Safety
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    let conn = Registry::get().and_then(|r| r.conn_of_fd(fd));
    let Some(conn) = conn.filter(|_| flags & libc::MSG_PEEK == 0) else {
        // SAFETY: the caller's arguments, passed on unchanged.
        return unsafe { sys_recv(fd, buf, len, flags) };
    };
    if conn.input_closed() {
        return 0;
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    let n = unsafe { sys_recv(fd, buf, len, flags) };
    if n <= 0 {
        return n;
    }
    // SAFETY: the kernel wrote `n` bytes into `buf`.
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) };
    match conn.received(data) {
        Verdict::Pass => n,
        Verdict::Stop { keep, .. } => keep as ssize_t,
    }
}

unsafe fn sys_recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    let null = std::ptr::null_mut::<c_void>();
    // SAFETY: the caller's arguments; no source address is asked for.
    unsafe { libc::syscall(libc::SYS_recvfrom, fd, buf, len, flags, null, null) as ssize_t }
}

/// # Safety
/// As `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // Forgotten before it is closed: the number may be reused the moment it is.
    if let Some(registry) = Registry::get() {
        registry.fd_closing(fd);
    }
    // SAFETY: the caller's argument, passed on unchanged.
    unsafe { libc::syscall(libc::SYS_close, fd) as c_int }
}
