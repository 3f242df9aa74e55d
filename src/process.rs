//! Starting function processes, ending them, and reaping them.
//!
//! Every process starts as the leader of its own process group, so a timeout or the end of a
//! call can kill everything it started (grandchildren included, which Go's watchdog leaves
//! running). The group is killed while the direct
//! child is still an unreaped zombie, so the group id cannot have been reused by then. As PID 1
//! the watchdog also reaps orphans that the kernel re-parents to it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::deadlines::Expire;

/// Why the watchdog killed a function's process group: the first cause recorded is the one a
/// call reports, whatever else (the function's death, other kills) its threads see first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kill {
    /// exec_timeout, or a shorter X-Timeout.
    ExecTimeout = 1,
    /// The response could not start within write_timeout.
    WriteTimeout = 2,
    /// The request body broke off, or did not arrive within read_timeout.
    ClientBody = 3,
    /// The client stopped reading the response.
    ClientGone = 4,
    /// Its CGI header block was malformed (`cgi_response`).
    BadHead = 5,
    /// The call is over (or the watchdog is), and whatever is left of the group goes.
    Cleanup = 6,
}

impl Kill {
    fn from_u8(n: u8) -> Option<Kill> {
        [
            Kill::ExecTimeout,
            Kill::WriteTimeout,
            Kill::ClientBody,
            Kill::ClientGone,
            Kill::BadHead,
            Kill::Cleanup,
        ]
        .into_iter()
        .find(|k| *k as u8 == n)
    }
}

/// A function process's group. `kill` is safe to call at any time, from any thread.
pub(crate) struct ProcessGroup {
    pgid: i32,
    reaped: Mutex<bool>,
    /// The first `Kill` cause, as its number; 0 while the watchdog has not killed it.
    cause: AtomicU8,
}

impl ProcessGroup {
    /// SIGKILL to the whole group, unless its leader has been reaped; `why` is remembered if
    /// it is the first cause.
    pub(crate) fn kill(&self, why: Kill) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            let _ = self.cause.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
            // SAFETY: kill has no memory effects; a negative pid names the group.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }

    /// SIGTERM to the whole group (http mode's upstream at shutdown).
    pub(crate) fn terminate(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        }
    }

    /// Why the watchdog killed the group while its leader ran, if it did.
    pub(crate) fn killed_for(&self) -> Option<Kill> {
        Kill::from_u8(self.cause.load(Ordering::Acquire))
    }
}

/// A pipe, both ends close-on-exec (the child gets its end through dup2).
fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) })
}

/// A started function process with its pipes.
pub(crate) struct Function {
    child: Child,
    pub(crate) group: Arc<ProcessGroup>,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: Option<ChildStderr>,
}

impl Function {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The processes the watchdog has started and not yet reaped.
pub(crate) struct Children {
    live: Mutex<HashMap<u32, Arc<ProcessGroup>>>,
    /// The watchdog's own environment, read once: std would otherwise copy it out of the
    /// process environment (under a lock) for every spawn that adds variables.
    base_env: Vec<(OsString, OsString)>,
    /// Programs resolved on PATH once (`cat` → `/usr/bin/cat`). With a bare name and an
    /// explicit environment that contains PATH, std gives up posix_spawn for fork+exec,
    /// measured at 4x our CPU per call.
    resolved: Mutex<HashMap<String, String>>,
    /// As PID 1: spawning holds it shared, orphan reaping exclusively, so an orphan sweep can
    /// never reap a child of ours before it is registered.
    gate: RwLock<()>,
    pid1: bool,
}

impl Children {
    pub(crate) fn new(pid1: bool) -> Children {
        Children {
            live: Mutex::new(HashMap::new()),
            base_env: std::env::vars_os().collect(),
            resolved: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            pid1,
        }
    }

    /// Starts `argv` with the watchdog's environment plus `env`, in a new process group. With
    /// `combine`, stderr is the same pipe as stdout (classic's `combine_output`: both, in the
    /// order written, are the output) and `Function::stderr` is `None`.
    pub(crate) fn spawn_with(
        &self,
        argv: &[String],
        env: &[(OsString, OsString)],
        combine: bool,
    ) -> io::Result<Function> {
        self.start(argv, env, combine, false)
    }

    /// As `spawn_with`, for a process that lives as long as the watchdog (http mode's upstream): the
    /// kernel kills it when the thread that started it ends, so a watchdog killed with SIGKILL
    /// (no drain, no SIGTERM of ours) does not leave it running and holding its port. Start it
    /// from a thread that lasts (the main thread).
    pub(crate) fn spawn_bound(&self, argv: &[String]) -> io::Result<Function> {
        self.start(argv, &[], false, true)
    }

    fn start(
        &self,
        argv: &[String],
        env: &[(OsString, OsString)],
        combine: bool,
        bound: bool,
    ) -> io::Result<Function> {
        let (program, args) = argv.split_first().ok_or_else(|| io::Error::other("empty command"))?;
        let program = self.resolve(program);
        let mut cmd = Command::new(&program);
        cmd.args(args)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            // No pre_exec hook for calls: it would force fork+exec instead of posix_spawn, a
            // third slower.
            .process_group(0);
        if bound {
            // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
            let parent = unsafe { libc::getpid() };
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The watchdog may have died before the request took effect.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
        let combined = if combine {
            let (read, write) = pipe()?;
            cmd.stdout(Stdio::from(write.try_clone()?)).stderr(Stdio::from(write));
            Some(ChildStdout::from(read))
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        };
        let _gate = self.pid1.then(|| self.gate.read().unwrap_or_else(PoisonError::into_inner));
        let mut child = cmd.spawn()?;
        // Our copies of the write end went with `cmd`'s Stdio when it was spawned; drop `cmd`
        // so that the output pipe ends when the function's last holder of it does.
        drop(cmd);
        if let Some(out) = combined {
            child.stdout = Some(out);
        }
        let group = Arc::new(ProcessGroup {
            pgid: child.id() as i32,
            reaped: Mutex::new(false),
            cause: AtomicU8::new(0),
        });
        self.lock_live().insert(child.id(), Arc::clone(&group));
        Ok(Function {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            group,
        })
    }

    /// `program` as an absolute path if it is found on PATH (the result is cached); unchanged
    /// otherwise, so the spawn reports the error.
    pub(crate) fn resolve(&self, program: &str) -> String {
        if program.contains('/') {
            return program.to_string();
        }
        let mut cache = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = cache.get(program) {
            return path.clone();
        }
        let found = search_path(program);
        if let Some(path) = &found {
            cache.insert(program.to_string(), path.clone());
        }
        found.unwrap_or_else(|| program.to_string())
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<ProcessGroup>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the process to exit, kills whatever is left of its group, and reaps it.
    pub(crate) fn finish(&self, mut f: Function) -> ExitStatus {
        drop(f.stdin.take());
        has_exited(f.child.id(), true);
        {
            let mut reaped = f.group.reaped.lock().unwrap_or_else(PoisonError::into_inner);
            unsafe { libc::kill(-f.group.pgid, libc::SIGKILL) };
            *reaped = true;
        }
        let status = f.child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0));
        self.lock_live().remove(&f.child.id());
        status
    }

    /// Kills every process group still running (at exit).
    pub(crate) fn kill_all(&self) {
        for group in self.lock_live().values() {
            group.kill(Kill::Cleanup);
        }
    }

    /// As PID 1: reaps exited processes that are not ours (orphans re-parented to us). Stops at
    /// the first exited child of ours, since the kernel shows only one exited child at a time
    /// and that one is its worker's to reap; returns false then, so the caller sweeps again
    /// soon (an orphan behind it sends no further signal).
    pub(crate) fn reap_orphans(&self) -> bool {
        if !self.pid1 {
            return true;
        }
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        loop {
            // SAFETY: info is a valid out pointer; WNOWAIT leaves the child waitable.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
            };
            let pid = unsafe { info.si_pid() };
            if rc != 0 || pid <= 0 {
                return true;
            }
            if self.lock_live().contains_key(&(pid as u32)) {
                return false;
            }
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}

/// The first executable `program` in the directories of PATH.
/// What a startup check finds about the program `fprocess` names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Program {
    Runnable,
    /// A path that does not exist (it may still appear before the first call).
    Missing(String),
    /// Nothing can make it run: not on PATH, a directory, or without execute permission.
    Unusable(String),
}

/// Checks `program` as the spawn will find it: on PATH when it has no `/`, else as a path.
pub(crate) fn check_program(program: &str) -> Program {
    if !program.contains('/') {
        return match search_path(program) {
            Some(_) => Program::Runnable,
            None => Program::Unusable(format!(
                "{program:?} is not an executable file in any PATH directory ({})",
                std::env::var("PATH").unwrap_or_default()
            )),
        };
    }
    match std::fs::metadata(program) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Program::Missing(format!("{program} does not exist"))
        }
        Err(e) => Program::Unusable(format!("{program}: {e}")),
        Ok(meta) if meta.is_dir() => Program::Unusable(format!("{program} is a directory")),
        Ok(_) if !executable(program) => Program::Unusable(format!("{program} is not executable (chmod +x)")),
        Ok(_) => Program::Runnable,
    }
}

/// Whether this process may execute `path` (permission bits, ACLs and noexec mounts included).
fn executable(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else { return false };
    // SAFETY: c is a valid NUL-terminated string.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

fn search_path(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let candidate = dir.join(program);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .then(|| candidate.to_string_lossy().into_owned())
    })
}

/// Whether the child `pid` has exited (or is not ours to wait for), without reaping it, so its
/// pid and process group id stay reserved. With `block`, waits for the exit.
pub(crate) fn has_exited(pid: u32, block: bool) -> bool {
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: info is a valid out pointer; WNOWAIT leaves the child waitable.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return rc != 0 || unsafe { info.si_pid() } != 0;
    }
}

/// Go's rendering of a failed process: `exit status 3`, `signal: killed`.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let sig = status.signal().unwrap_or(0);
    let name = match sig {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGPIPE => "broken pipe",
        libc::SIGTERM => "terminated",
        _ => return format!("signal: signal {sig}"),
    };
    format!("signal: {name}")
}

/// exec_timeout and X-Timeout end a function's whole process group.
impl Expire for ProcessGroup {
    fn expire(&self) {
        self.kill(Kill::ExecTimeout);
    }
}

/// Raises the soft open-files limit to the hard one (tiny_http's accept thread ends on EMFILE;
/// see `http_server`). Functions inherit the raised limit: restoring it would need a pre_exec hook, which
/// costs a third of the spawn rate, and container runtimes set soft = hard anyway.
pub(crate) fn raise_nofile_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: limit is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
}
