//! Test harness: the real `fwatchdog` binary, started on ephemeral ports (`port=0`, the bound
//! port is read back from its log) with a private TMPDIR, spoken to over real sockets.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test: `FWATCHDOG_BIN` (scripts/test.sh sets it to the shipped release
/// binary, while the test programs themselves are built without LTO), else the one cargo built
/// with the tests.
pub fn bin() -> String {
    std::env::var("FWATCHDOG_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_fwatchdog").to_string())
}
/// The binary built with the `jwt` feature: `FWATCHDOG_JWT_BIN` (scripts/test.sh builds it into
/// target/jwt), else that place if a build is there; `None` (and a skip) without one.
pub fn jwt_bin() -> Option<String> {
    let candidate = std::env::var("FWATCHDOG_JWT_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| format!("{}/target/jwt/release/fwatchdog", env!("CARGO_MANIFEST_DIR")));
    if Path::new(&candidate).is_file() {
        return Some(candidate);
    }
    skip(&format!("no fwatchdog built with the jwt feature at {candidate} (scripts/test.sh builds it)"));
    None
}

/// Generous: these tests run on loaded 2-core CI machines.
pub const STARTUP: Duration = Duration::from_secs(15);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A private directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("fwatchdog-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        TempDir(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// An executable `sh` script; returns its path.
    pub fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Captured output of a process, line by line, with arrival order kept across streams.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<(bool, String)>>>);

impl Output {
    fn pump(&self, stream: impl Read + Send + 'static, is_stderr: bool) {
        let out = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
                let text = String::from_utf8_lossy(&line).trim_end_matches('\n').to_string();
                out.0.lock().unwrap().push((is_stderr, text));
                line.clear();
            }
        });
    }

    /// Captures `stream` line by line (for processes the tests start themselves).
    pub fn pump_public(&self, stream: impl Read + Send + 'static, is_stderr: bool) {
        self.pump(stream, is_stderr);
    }

    pub fn stderr(&self) -> String {
        self.lines(true).join("\n")
    }

    pub fn stdout(&self) -> String {
        self.lines(false).join("\n")
    }

    pub fn lines(&self, stderr: bool) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|(e, _)| *e == stderr).map(|(_, l)| l.clone()).collect()
    }

    pub fn all(&self) -> String {
        self.0.lock().unwrap().iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }
}

pub struct Watchdog {
    pub child: Child,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub tmpdir: TempDir,
    pub output: Output,
}

pub struct Options {
    pub env: Vec<(String, String)>,
    /// Wait for /_/health to be 200 (else only for the port to be known).
    pub wait_healthy: bool,
    /// Run as PID 1 of a new PID namespace (`unshare --pid --fork`).
    pub pid_namespace: bool,
    /// RLIMIT_NOFILE (soft and hard) for the watchdog.
    pub nofile: Option<u64>,
    /// Put TMPDIR on a tmpfs of this many bytes (a mount namespace of its own: needs root).
    pub tmpfs_tmpdir: Option<u64>,
    /// Another binary than `bin()` (the `jwt` build).
    pub bin: Option<String>,
}

impl Options {
    pub fn new(env: &[(&str, &str)]) -> Options {
        Options {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wait_healthy: true,
            pid_namespace: false,
            nofile: None,
            tmpfs_tmpdir: None,
            bin: None,
        }
    }
}

impl Watchdog {
    /// Starts the watchdog with `env` (plus PATH, HOME, a private TMPDIR and port=0 /
    /// metrics_port=0 unless given) and waits until /_/health is 200.
    pub fn start(env: &[(&str, &str)]) -> Watchdog {
        Self::start_with(Options::new(env))
    }

    pub fn start_with(opts: Options) -> Watchdog {
        let tmpdir = TempDir::new("tmp");
        let program = || opts.bin.clone().unwrap_or_else(bin);
        let mut cmd = if opts.pid_namespace {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--kill-child", "--", &program()]);
            c
        } else if let Some(size) = opts.tmpfs_tmpdir {
            // unshare and sh exec in turn, so the child's pid is the watchdog's.
            let mut c = Command::new("unshare");
            let script = format!("mount -t tmpfs -o size={size} fwtest \"$TMPDIR\" && exec \"$0\"");
            c.args(["-m", "--propagation", "private", "sh", "-c", &script, &program()]);
            c
        } else {
            Command::new(program())
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
            .env("HOME", "/tmp")
            .env("TMPDIR", &tmpdir.0)
            .env("port", "0")
            .env("metrics_port", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(limit) = opts.nofile {
            use std::os::unix::process::CommandExt;
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc_rlimit(limit);
                    if setrlimit(7, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start fwatchdog");
        let output = Output::default();
        output.pump(child.stdout.take().expect("stdout"), false);
        output.pump(child.stderr.take().expect("stderr"), true);
        let mut wd = Watchdog { child, port: 0, metrics_port: None, tmpdir, output };
        let log = wd.wait_log("Listening on port: ", STARTUP);
        wd.port = number_after(&log, "Listening on port: ").expect("port in log");
        if opts.wait_healthy {
            wd.wait_until("GET /_/health == 200", STARTUP, |wd| {
                try_request(wd.port, "GET", "/_/health", &[], b"").is_some_and(|r| r.status == 200)
            });
            // The metrics server starts right after the watchdog turns healthy.
            let deadline = Instant::now() + Duration::from_secs(5);
            while wd.metrics_port.is_none() && Instant::now() < deadline {
                wd.metrics_port =
                    wd.output.stderr().lines().find_map(|l| number_after(l, "Metrics listening on port: "));
                if wd.output.stderr().contains("Metrics server") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        wd
    }

    /// Waits for a stderr/stdout line containing `needle`; returns it.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output.all().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(line) = self.output.all().lines().find(|l| l.contains(needle)) {
                    return line.to_string();
                }
                panic!("watchdog exited ({status}) before logging {needle:?}:\n{}", self.output.all());
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {timeout:?}:\n{}",
                self.output.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut(&mut Watchdog) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("watchdog exited ({status}) while waiting for {what}:\n{}", self.output.all());
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}:\n{}",
                self.output.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.port, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[], body)
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.port)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.tmpdir.path(".lock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit status, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }

    pub fn rss_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The number right after `prefix` in `line` (text or JSON log lines).
fn number_after(line: &str, prefix: &str) -> Option<u16> {
    let rest = line.split(prefix).nth(1)?;
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // The function processes and upstreams run in process groups of their own and would
        // outlive a killed watchdog: kill everything below it first.
        for pid in descendants(self.child.id()) {
            unsafe { kill(pid as i32, SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process below `pid`, children first found through /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let path = task.path().join("children");
            let children = std::fs::read_to_string(path).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                found.push(c);
                queue.push(c);
            }
        }
    }
    found
}

// Minimal libc surface, so the tests need no crates.
#[repr(C)]
pub struct Rlimit {
    cur: u64,
    max: u64,
}
fn libc_rlimit(n: u64) -> Rlimit {
    Rlimit { cur: n, max: n }
}
unsafe extern "C" {
    pub fn kill(pid: i32, sig: i32) -> i32;
    fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
}
pub const SIGTERM: i32 = 15;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
    /// The body was chunked.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|| panic!("{method} {path}: no response from port {port}"))
}

/// One request on a fresh connection (Content-Length body); `None` on connection errors.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut r = read_response(&mut BufReader::new(s), method == "HEAD")?;
    r.elapsed = start.elapsed();
    Some(r)
}

/// Reads one response (Content-Length, chunked or close-delimited body).
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> Option<Response> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next()?.to_string();
    let status: u16 = parts.next()?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let chunked = get("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if head_only || status < 200 || status == 204 || status == 304 {
    } else if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end).ok()?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = get("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    } else {
        r.read_to_end(&mut body).ok()?;
    }
    Some(Response { version, status, headers, body, elapsed: Duration::ZERO, chunked })
}

/// All bytes until the server closes the connection (or `timeout`); (bytes, closed).
pub fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(timeout)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub fn run_bin(args: &[&str], env: &[(&str, &str)], tmpdir: &Path) -> (i32, String, String) {
    run_program(&bin(), args, env, tmpdir)
}

/// `run_bin` with another build of the watchdog.
pub fn run_program(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    tmpdir: &Path,
) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", tmpdir)
        .env("port", "0")
        .env("metrics_port", "0")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .output()
        .expect("run fwatchdog");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `env` output as a map.
pub fn env_map(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn pid_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Direct children of `pid` that are zombies.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push(child);
        }
    }
    found
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn read_pid(path: &Path) -> u32 {
    let mut pid = 0;
    wait_for(&format!("pid file {}", path.display()), Duration::from_secs(10), || {
        pid = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        pid != 0
    });
    pid
}

/// A test cannot run here because a tool is missing: says so ("SKIPPED: ..."), or fails when
/// `FWATCHDOG_REQUIRE_ALL` is set (CI installs every tool, so nothing may be skipped there).
pub fn skip(why: &str) {
    if std::env::var_os("FWATCHDOG_REQUIRE_ALL").is_some() {
        panic!("FWATCHDOG_REQUIRE_ALL is set but this test would be skipped: {why}");
    }
    skipped(why);
}

/// Says that a test is skipped on purpose (set up so by the caller, not for a missing tool).
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
    // cargo shows a passing test's output only with --nocapture: the test command collects
    // skips in this file and sums them up at the end.
    if let Some(path) = std::env::var_os("FWATCHDOG_SKIP_LOG") {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(path) {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

/// Whether this process may create mount namespaces (root); prints why a test is skipped if not.
pub fn can_mount() -> bool {
    let ok = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=4096 t /mnt 2>/dev/null || mount -t tmpfs -o size=4096 t /tmp",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("cannot mount a tmpfs in a mount namespace (needs root; CI runs as root)");
    }
    ok
}

/// A port nobody listens on right now, for an upstream a test starts. It is taken below the
/// kernel's ephemeral range: a port from there (what binding port 0 gives) is free again once
/// this function returns, and a connection another test opens meanwhile (a hundred websocket
/// sessions, Autobahn) may take it as its local port before the upstream binds it. Never the
/// same port twice in one test program; programs start at different points (their pid).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let span = ephemeral_low.saturating_sub(low);
    if span < 1000 {
        return std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    }
    let start = std::process::id().wrapping_mul(997) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port left in {low}..{ephemeral_low}");
        let port = (low + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `tests/interop`: helper programs on real frameworks (Python `websockets`, Node `ws`, ...).
pub fn interop(file: &str) -> String {
    format!("{}/tests/interop/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether `python3` can import `module`; prints why a test is skipped if not.
pub fn have_python_module(module: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!("python3 cannot import {module} (pip install it; .ci/run does)"));
    }
    ok
}

/// Whether Node.js and the npm package `name` (in tests/interop/node_modules) are there.
pub fn have_node_module(name: &str) -> bool {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let module = std::path::Path::new(&interop(&format!("node_modules/{name}"))).is_dir();
    if !(node && module) {
        skip(&format!("needs node and `npm install` in tests/interop ({name}); .ci/run does it"));
    }
    node && module
}

/// Runs a helper program to completion (killed after `timeout`); returns its stdout.
pub fn run_helper(program: &str, args: &[&str], timeout: Duration) -> String {
    let mut child = Command::new(program)
        .args(args)
        .env("NODE_PATH", interop("node_modules"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let output = Output::default();
    if let Some(out) = child.stdout.take() {
        output.pump_public(out, false);
    }
    if let Some(err) = child.stderr.take() {
        output.pump_public(err, true);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish in {timeout:?}; stderr:\n{}", output.stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the pumps take the last lines.
    std::thread::sleep(Duration::from_millis(50));
    let out = output.stdout();
    if out.trim().is_empty() {
        eprintln!("{program} {args:?} printed nothing; stderr:\n{}", output.stderr());
    }
    out
}

/// The raw text of the value of `"key":` in a flat JSON object (strings unquoted).
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => out.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    c => c,
                }),
                c => out.push(c),
            }
        }
        return None;
    }
    let mut depth = 0;
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' if depth > 0 => depth -= 1,
                ',' | '}' if depth == 0 => return true,
                _ => {}
            }
            false
        })
        .map_or(rest.len(), |(i, _)| i);
    Some(rest[..end].trim().to_string())
}

/// The value of one sample in the watchdog's Prometheus exposition (`name{labels}` exactly).
pub fn metric(wd: &Watchdog, sample: &str) -> Option<f64> {
    let port = wd.metrics_port?;
    let text = request(port, "GET", "/metrics", &[], b"").text();
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A response read to the end of its connection, with whether its body ended properly: the
/// last chunk of a chunked body, or all of a Content-Length. A stream the server cut off
/// arrives incomplete.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub body: Vec<u8>,
    pub complete: bool,
}

/// Sends one request (Content-Length body, `Connection: close`) and reads the response until
/// the server closes the connection.
pub fn streamed_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Streamed {
    let mut s = connect(port);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    let (raw, _) = read_until_closed(&mut s, Duration::from_secs(30));
    parse_streamed(&raw)
}

/// Parses a raw response (see `Streamed`).
pub fn parse_streamed(raw: &[u8]) -> Streamed {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let mut rest = &raw[end..];
    if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Streamed { status, body, complete: false };
            };
            let size = std::str::from_utf8(&rest[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
            let Some(size) = size else { return Streamed { status, body, complete: false } };
            rest = &rest[line_end + 2..];
            if size == 0 {
                return Streamed { status, body, complete: rest.starts_with(b"\r\n") };
            }
            if rest.len() < size + 2 {
                body.extend_from_slice(&rest[..rest.len().min(size)]);
                return Streamed { status, body, complete: false };
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
    let complete = match header("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => rest.len() >= n,
        None => true,
    };
    Streamed { status, body: rest.to_vec(), complete }
}

/// Two busy loops for the length of a test: a loaded 2-core machine, so that a race between
/// threads shows up instead of hiding behind an idle CPU.
pub struct CpuHog(Vec<Child>);

impl CpuHog {
    pub fn start() -> CpuHog {
        CpuHog(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a head of 3 MiB of headers (more than the 1 MiB limit) and returns what came back,
/// and whether the connection was closed.
pub fn send_oversized_head(port: u16) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").expect("head");
    let header = format!("X-Filler: {}\r\n", "f".repeat(1000));
    let mut sent = 0;
    while sent < 3 << 20 {
        if s.write_all(header.as_bytes()).is_err() {
            break;
        }
        sent += header.len();
    }
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    (String::from_utf8_lossy(&raw).into_owned(), closed)
}
