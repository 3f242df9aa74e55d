//! Health state, the lock file and shutdown signals (SPEC §3, §7).
//!
//! One `Lifecycle` value is shared by the request handlers (health, readiness) and the main
//! thread that runs the shutdown sequence; nothing else flips the health state.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

pub(crate) struct Lifecycle {
    state: AtomicU8,
    lock_path: PathBuf,
    suppress_lock: bool,
}

impl Lifecycle {
    pub(crate) fn new(suppress_lock: bool) -> Self {
        Lifecycle {
            state: AtomicU8::new(STARTING),
            lock_path: lock_path(),
            suppress_lock,
        }
    }

    /// Accepting work: started, not shutting down, and the lock file is present (the
    /// orchestrator, or an operator, can take a replica out of rotation by deleting it).
    pub(crate) fn healthy(&self) -> bool {
        self.state.load(Ordering::Acquire) == SERVING
            && (self.suppress_lock || self.lock_path.exists())
    }

    pub(crate) fn draining(&self) -> bool {
        self.state.load(Ordering::Acquire) == DRAINING
    }

    /// Writes the lock file (unless suppressed) and turns healthy.
    pub(crate) fn mark_serving(&self) -> io::Result<()> {
        if self.suppress_lock {
            log::info!(
                "Warning: \"suppress_lock\" is enabled. No automated health-checks will be in place for your function."
            );
        } else {
            log::info!("Writing lock-file to: {}", self.lock_path.display());
            write_lock_file(&self.lock_path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot write {}: {e}; to disable the lock file set suppress_lock=true",
                        self.lock_path.display()
                    ),
                )
            })?;
        }
        self.state.store(SERVING, Ordering::Release);
        Ok(())
    }

    /// Turns unhealthy at once and removes the lock file (first step of SIGTERM handling).
    pub(crate) fn begin_drain(&self) {
        self.state.store(DRAINING, Ordering::Release);
        if !self.suppress_lock {
            log::info!("Removing lock-file : {}", self.lock_path.display());
            if let Err(e) = std::fs::remove_file(&self.lock_path) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::info!("Unable to mark server as unhealthy: {e}");
                }
            }
        }
    }
}

/// `$TMPDIR/.lock` (`/tmp/.lock` by default), as the reference and `-run-healthcheck` use.
pub(crate) fn lock_path() -> PathBuf {
    std::env::temp_dir().join(".lock")
}

fn write_lock_file(path: &PathBuf) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o660)
        .open(path)
        .map(drop)
}

/// The signals the main thread waits for. Blocked in every thread (call before spawning any),
/// so they stay pending until `wait_for_signal` takes them; as PID 1 an unhandled SIGTERM would
/// otherwise be ignored. Children get a clean signal mask from std.
pub(crate) struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    pub(crate) fn block(with_sigchld: bool) -> Signals {
        // SAFETY: plain sigset manipulation on a local value.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            if with_sigchld {
                libc::sigaddset(&mut set, libc::SIGCHLD);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// Waits up to `timeout` for one of the blocked signals; `None` on timeout.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<i32> {
        loop {
            let sig = match timeout {
                None => {
                    let mut sig: libc::c_int = 0;
                    // SAFETY: set is initialised; sig is a valid out pointer.
                    let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
                    if rc == 0 { sig } else { -1 }
                }
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
                    };
                    // SAFETY: set and ts are valid for the call; info may be null.
                    unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) }
                }
            };
            if sig > 0 {
                return Some(sig);
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
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
