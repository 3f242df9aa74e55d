//! The I/O of one forked function, driven by `poll(2)` from the call's own thread: stdout is
//! handed to the caller piece by piece, stderr is relayed to the log as it comes (so a function
//! never stalls on a full stderr pipe), and the end of the request body (fed to stdin by a
//! helper thread when it must be read from the network) arrives as an event too.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::cgi_response::{Head, Read as HeadRead, Reader};
use crate::http_server::{BodyError, BodyReader};
use crate::logging::FunctionLog;
use crate::process::{Kill, ProcessGroup};

/// What happened next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// `n` bytes of stdout are in the buffer.
    Stdout(usize),
    /// `n` bytes of stdout wait in the pipe, unread (see `ChildIo::leave_stdout_in_pipe`).
    StdoutReady(usize),
    /// The function's CGI header block is complete and no body byte has come yet
    /// (`cgi_response`; see `ChildIo::read_cgi_head`).
    HeadDone,
    /// stdout reached end of file (or its CGI header block was malformed).
    StdoutEnd,
    /// The input feeder finished.
    InputDone,
    /// The deadline passed.
    Deadline,
}

pub(crate) struct ChildIo {
    /// Report stdout data as `StdoutReady` and leave it in the pipe, for the caller to splice.
    in_pipe: bool,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    log: FunctionLog,
    input_done: Option<OwnedFd>,
    /// `cgi_response`: stdout starts with a header block, read here.
    head: Option<Reader>,
}

/// A pipe whose read end becomes readable (end of file) when the write end is dropped.
pub(crate) fn done_signal() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never wake just before the deadline and spin.
                left.as_millis()
                    .saturating_add(u128::from(left.subsec_nanos() % 1_000_000 != 0))
                    .min(i32::MAX as u128) as i32
            }
        };
        // SAFETY: fds points to fds.len() initialised pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Pipe capacity for calls whose body streams through.
const WIDE_PIPE: libc::c_int = 256 << 10;

/// Gives a pipe `WIDE_PIPE` bytes of capacity (best effort: the kernel may refuse, e.g. past
/// /proc/sys/fs/pipe-user-pages-soft, and the pipe stays as it was).
pub(crate) fn widen(fd: Option<RawFd>) {
    if let Some(fd) = fd {
        // SAFETY: F_SETPIPE_SZ on a pipe we own; failure leaves it unchanged.
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, WIDE_PIPE) };
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

impl ChildIo {
    pub(crate) fn new(
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
        log: FunctionLog,
        input_done: Option<OwnedFd>,
    ) -> ChildIo {
        ChildIo { in_pipe: false, stdout, stderr, log, input_done, head: None }
    }

    pub(crate) fn stdout_open(&self) -> bool {
        self.stdout.is_some()
    }

    /// stdout may start with a CGI header block (`cgi_response`): `next` hands on only what
    /// follows it, with `HeadDone` when it is complete before any body byte; `cgi_head` has
    /// it. A malformed block kills `group` and ends stdout.
    pub(crate) fn read_cgi_head(&mut self, group: Arc<ProcessGroup>) {
        self.head = Some(Reader::new(group));
    }

    /// The function's status and headers, once its block is complete.
    pub(crate) fn cgi_head(&self) -> Option<&Head> {
        self.head.as_ref().and_then(Reader::head)
    }

    /// The head and the reason it was malformed, when the call is over.
    pub(crate) fn take_cgi_parts(&mut self) -> (Option<Head>, Option<String>) {
        self.head.take().map(Reader::into_parts).unwrap_or_default()
    }

    /// From now on `next` reports stdout data as `StdoutReady` without reading it (after the
    /// CGI header block, if one is read).
    pub(crate) fn leave_stdout_in_pipe(&mut self) {
        self.in_pipe = true;
    }

    /// The stdout pipe's descriptor, while it is open.
    pub(crate) fn stdout_fd(&self) -> Option<RawFd> {
        self.stdout.as_ref().map(|s| s.as_raw_fd())
    }

    /// Stops reading stdout (the call's time is up, whoever still holds the pipe).
    pub(crate) fn close_stdout(&mut self) {
        self.stdout = None;
    }

    /// Also wake up when `fd` becomes readable (the feeder's end-of-input signal).
    pub(crate) fn watch_input(&mut self, fd: OwnedFd) {
        self.input_done = Some(fd);
    }

    /// Waits for the next stdout data, the end of stdout, the end of the input, or `deadline`.
    /// Must not be called once stdout has ended and the input is done.
    pub(crate) fn next(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<Next> {
        match self.head.take() {
            Some(reader) if reader.active() => {
                let (reader, next) = self.next_through_head(reader, buf, deadline);
                self.head = Some(reader);
                next
            }
            reader => {
                self.head = reader;
                self.next_raw(buf, deadline, self.in_pipe)
            }
        }
    }

    /// `next` while the header block is read or body bytes read with it are held.
    fn next_through_head(
        &mut self,
        mut reader: Reader,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> (Reader, io::Result<Next>) {
        let held = reader.take_held(buf);
        if held > 0 {
            return (reader, Ok(Next::Stdout(held)));
        }
        loop {
            let (read, ended) = match self.next_raw(buf, deadline, false) {
                Ok(Next::Stdout(n)) => (reader.push(&buf[..n]), false),
                Ok(Next::StdoutEnd) => (reader.finish(), true),
                other => return (reader, other),
            };
            match read {
                HeadRead::More => {}
                HeadRead::Malformed => {
                    self.stdout = None;
                    return (reader, Ok(Next::StdoutEnd));
                }
                HeadRead::Decided => {
                    let held = reader.take_held(buf);
                    let next = if held > 0 {
                        Next::Stdout(held)
                    } else if ended {
                        Next::StdoutEnd
                    } else {
                        // Only a block ends before any byte is held.
                        Next::HeadDone
                    };
                    return (reader, Ok(next));
                }
            }
        }
    }

    fn next_raw(&mut self, buf: &mut [u8], deadline: Option<Instant>, in_pipe: bool) -> io::Result<Next> {
        loop {
            if self.stdout.is_none() && self.input_done.is_none() {
                return Ok(Next::StdoutEnd);
            }
            let mut fds = [pollfd(-1), pollfd(-1), pollfd(-1)];
            if let Some(s) = &self.stdout {
                fds[0].fd = s.as_raw_fd();
            }
            if let Some(s) = &self.stderr {
                fds[1].fd = s.as_raw_fd();
            }
            if let Some(d) = &self.input_done {
                fds[2].fd = d.as_raw_fd();
            }
            if poll(&mut fds, deadline)? == 0 {
                return Ok(Next::Deadline);
            }
            if fds[1].revents != 0 {
                self.pump_stderr(buf);
            }
            if fds[2].revents != 0 {
                self.input_done = None;
                return Ok(Next::InputDone);
            }
            if fds[0].revents != 0
                && let Some(out) = &mut self.stdout
            {
                if in_pipe {
                    let mut n: libc::c_int = 0;
                    // SAFETY: FIONREAD writes one int.
                    let rc = unsafe { libc::ioctl(out.as_raw_fd(), libc::FIONREAD, &mut n) };
                    if rc == 0 && n > 0 {
                        return Ok(Next::StdoutReady(n as usize));
                    }
                    // Readable with nothing in it: the write end is closed.
                    self.stdout = None;
                    return Ok(Next::StdoutEnd);
                }
                match out.read(buf) {
                    Ok(0) | Err(_) => {
                        self.stdout = None;
                        return Ok(Next::StdoutEnd);
                    }
                    Ok(n) => return Ok(Next::Stdout(n)),
                }
            }
        }
    }

    fn pump_stderr(&mut self, buf: &mut [u8]) {
        if let Some(err) = &mut self.stderr {
            match err.read(buf) {
                Ok(0) | Err(_) => {
                    self.stderr = None;
                    self.log.finish();
                }
                Ok(n) => self.log.feed(&buf[..n]),
            }
        }
    }

    /// After stdout has ended: relays stderr until the process `pid` has exited (it may still
    /// be writing to stderr), then whatever stderr already holds.
    pub(crate) fn wait_exit(&mut self, pid: u32, buf: &mut [u8]) {
        let mut pidfd: Option<Option<OwnedFd>> = None;
        loop {
            if crate::process::has_exited(pid, false) {
                break;
            }
            let Some(err) = &self.stderr else {
                // Nothing left to relay: the caller's blocking wait is enough.
                return;
            };
            // Opened only when there is something to wait for (usually the process is gone).
            let pidfd = pidfd.get_or_insert_with(|| pidfd_open(pid));
            let mut fds = [pollfd(err.as_raw_fd()), pollfd(pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()))];
            // Without a pidfd (Linux < 5.3), look again every 20 ms.
            let recheck = pidfd.is_none().then(|| Instant::now() + std::time::Duration::from_millis(20));
            match poll(&mut fds, recheck) {
                Ok(_) if fds[0].revents != 0 => self.pump_stderr(buf),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The process is gone; take what its pipe still holds without waiting for holders
        // that outlive it (they are killed with the group).
        while let Some(err) = &self.stderr {
            let mut fds = [pollfd(err.as_raw_fd())];
            match poll(&mut fds, Some(Instant::now())) {
                Ok(1) => self.pump_stderr(buf),
                _ => break,
            }
        }
        self.log.finish();
    }
}

impl Drop for ChildIo {
    fn drop(&mut self) {
        self.log.finish();
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What a call and its body feeder share.
#[derive(Default)]
pub(crate) struct Feed {
    /// The whole body was read; set before stdin closes, so whoever sees the function exit
    /// after reading its input sees it set.
    complete: AtomicBool,
    /// The call stopped reading the body itself (the function exited without reading all of
    /// it): a read that fails from then on is no client error.
    stopped: AtomicBool,
}

impl Feed {
    pub(crate) fn complete(&self) -> bool {
        self.complete.load(Ordering::SeqCst)
    }

    /// The call gives up on the rest of the body; do this before shutting the connection's
    /// read side, so the feeder does not take the end it sees for the client's failure.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// Feeds the request body to the function's stdin as it arrives (streaming mode's helper
/// thread). If the function stops reading, the rest of the body is still read (and dropped) so
/// the request can be answered. On a client error the function's group is killed (for that
/// cause) while its stdin is still open, so it never sees a clean end of a truncated input;
/// stdin is handed back.
pub(crate) fn feed_body(
    body: &mut BodyReader,
    mut stdin: Option<ChildStdin>,
    group: &ProcessGroup,
    done: OwnedFd,
    feed: &Feed,
) -> Result<u64, (BodyError, Option<ChildStdin>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        match body.read(&mut buf) {
            Ok(0) => break Ok(true),
            Ok(n) => {
                if let Some(w) = &mut stdin
                    && w.write_all(&buf[..n]).is_err()
                {
                    stdin = None;
                }
            }
            Err(_) if feed.stopped.load(Ordering::SeqCst) => break Ok(false),
            Err(e) => break Err(e),
        }
    };
    match result {
        Ok(whole) => {
            if whole {
                feed.complete.store(true, Ordering::SeqCst);
            }
            drop(stdin);
            drop(done);
            Ok(body.bytes_read())
        }
        Err(e) => {
            group.kill(Kill::ClientBody);
            drop(done);
            Err((e, stdin))
        }
    }
}

/// Writes `input` to stdin and closes it, ignoring a function that does not read it all.
pub(crate) fn feed_reader(input: &mut dyn Read, mut stdin: ChildStdin) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdin.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    drop(stdin);
}
