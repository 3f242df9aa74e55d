//! Health state, the lock file and shutdown signals.
//!
//! One `Lifecycle` value is shared by the request handlers (health, readiness) and the main
//! thread that runs the shutdown sequence; nothing else flips the health state.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::time::Duration;

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

pub(crate) struct Lifecycle {
    state: AtomicU8,
    lock_path: PathBuf,
    suppress_lock: bool,
    /// The lock file this watchdog wrote (device, inode): it removes that one only, not one
    /// another watchdog sharing the directory wrote since.
    written: OnceLock<(u64, u64)>,
}

impl Lifecycle {
    pub(crate) fn new(suppress_lock: bool) -> Self {
        Lifecycle {
            state: AtomicU8::new(STARTING),
            lock_path: lock_path(),
            suppress_lock,
            written: OnceLock::new(),
        }
    }

    /// Accepting work: started, not shutting down, and the lock file is present (the
    /// orchestrator, or an operator, can take a replica out of rotation by deleting it).
    pub(crate) fn healthy(&self) -> bool {
        self.state.load(Ordering::Acquire) == SERVING && (self.suppress_lock || self.lock_path.exists())
    }

    /// Writes the lock file (unless suppressed) and turns healthy.
    pub(crate) fn mark_serving(&self) -> io::Result<()> {
        if self.suppress_lock {
            log::info!(
                "Warning: \"suppress_lock\" is enabled. No automated health-checks will be in place for your function."
            );
        } else {
            log::info!("Writing lock-file to: {}", self.lock_path.display());
            let written = write_lock_file(&self.lock_path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot write {}: {e}; to disable the lock file set suppress_lock=true",
                        self.lock_path.display()
                    ),
                )
            })?;
            let _ = self.written.set(written);
        }
        self.state.store(SERVING, Ordering::Release);
        Ok(())
    }

    /// Turns unhealthy at once and removes the lock file (first step of SIGTERM handling).
    pub(crate) fn begin_drain(&self) {
        self.state.store(DRAINING, Ordering::Release);
        let Some(&ours) = self.written.get() else { return };
        let present = std::fs::symlink_metadata(&self.lock_path).ok().map(|m| identity(&m));
        if present.is_some_and(|p| p != ours) {
            log::info!(
                "Leaving lock-file {}: another watchdog wrote it after this one",
                self.lock_path.display()
            );
            return;
        }
        log::info!("Removing lock-file : {}", self.lock_path.display());
        if let Err(e) = std::fs::remove_file(&self.lock_path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::info!("Unable to mark server as unhealthy: {e}");
        }
    }
}

/// `$TMPDIR/.lock` (`/tmp/.lock` by default), as the reference and `-run-healthcheck` use.
pub(crate) fn lock_path() -> PathBuf {
    std::env::temp_dir().join(".lock")
}

/// `-run-healthcheck`: healthy if the lock file exists, as in the Go watchdog; without one
/// (`suppress_lock=true`, or a lock file in a directory the probe does not see), if the
/// watchdog's own `/_/health` on `port` answers 200, so that an image's HEALTHCHECK works
/// whatever the lock file setting.
pub(crate) fn health_check() -> Result<(), String> {
    if lock_path().exists() {
        return Ok(());
    }
    let port = match std::env::var("port") {
        Ok(p) if !p.is_empty() => p,
        _ => "8080".into(),
    };
    probe_health(&port).map_err(|e| format!("unable to find lock file, and /_/health on port {port}: {e}"))
}

fn probe_health(port: &str) -> io::Result<()> {
    use std::io::{Read, Write};
    let port: u16 = port.trim().parse().map_err(|_| io::Error::other("not a port"))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /_/health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    match &head[9..12] {
        b"200" => Ok(()),
        code => Err(io::Error::other(format!("answered {}", String::from_utf8_lossy(code)))),
    }
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Writes a new lock file (a new inode, renamed into place, so that each watchdog's file is
/// its own) and returns its identity.
fn write_lock_file(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let fresh = dir.join(format!(".lock.{}.new", std::process::id()));
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&fresh)?;
    // Exactly 0660, whatever the umask.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o660))
        .and_then(|()| file.metadata())
        .and_then(|meta| std::fs::rename(&fresh, path).map(|()| identity(&meta)));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written
}

/// Write end of the self-pipe the signal handler reports to (-1 before `Signals::install`).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe calls here: one write, errno preserved for the interrupted code.
    // SAFETY: __errno_location is thread-local and valid; write on a pipe is signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
        if fd >= 0 {
            let byte = sig as u8;
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

/// SIGTERM, SIGINT (and SIGCHLD as PID 1) delivered through a self-pipe to one thread.
///
/// Handlers rather than a blocked signal mask: a mask is inherited by every process we start
/// (std does not clear it), and a function or upstream that cannot receive SIGTERM is a bug.
/// Caught signals revert to their default in children at exec. As PID 1, a signal without a
/// handler would be ignored, so these handlers are what makes SIGTERM work in a container.
pub(crate) struct Signals {
    read: OwnedFd,
}

impl Signals {
    pub(crate) fn install(with_sigchld: bool) -> io::Result<Signals> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh descriptors; the write end stays open for the
        // process's lifetime (the handler may run at any time).
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let mut signals = vec![libc::SIGTERM, libc::SIGINT];
        if with_sigchld {
            signals.push(libc::SIGCHLD);
        }
        for sig in signals {
            // SAFETY: a zeroed sigaction with a valid handler and an empty mask is well formed.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals { read })
    }

    /// Waits up to `timeout` (forever: `None`) for a signal; `None` on timeout.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<i32> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut pfd = libc::pollfd { fd: self.read.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                return None;
            }
            let mut byte = 0u8;
            // SAFETY: reading one byte into a valid buffer.
            let got = unsafe { libc::read(self.read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            if got == 1 {
                return Some(i32::from(byte));
            }
        }
    }
}

pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGCHLD => "SIGCHLD",
        _ => "signal",
    }
}
