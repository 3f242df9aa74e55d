//! http mode's long-running function process: started once, its output relayed to
//! the log, watched until it exits, stopped last at shutdown.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};

use super::handler::{Context, Fail};
use crate::config::{Config, UpstreamUrl};
use crate::logging::{FunctionLog, Stream};
use crate::process::{Kill, ProcessGroup, describe_exit};

/// How long the upstream may take to accept connections before the watchdog gives up.
const READY_LIMIT: Duration = Duration::from_secs(120);
/// How long the upstream gets between SIGTERM and SIGKILL at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    state: OnceLock<Running>,
}

struct Running {
    group: Arc<ProcessGroup>,
    stopping: Arc<AtomicBool>,
    exited: Receiver<String>,
    has_exited: Arc<AtomicBool>,
}

/// The upstream's address: an IP literal, or `localhost` (127.0.0.1). The upstream runs in the
/// same container; a `FROM scratch` image has no /etc/hosts or resolver to ask about other
/// names, and leaving the C resolver out keeps the static binary small.
pub(crate) fn resolve(url: &UpstreamUrl) -> Result<SocketAddr, String> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), url.port));
    }
    host.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, url.port)).map_err(|_| {
        format!("the upstream host {host:?} must be an IP address or localhost (the upstream runs in this container)")
    })
}

impl Upstream {
    pub(crate) fn new(config: &Config) -> Result<Upstream, String> {
        let url = config.upstream.as_ref().ok_or("mode=http needs upstream_url")?;
        Ok(Upstream { addr: resolve(url)?, state: OnceLock::new() })
    }

    /// Starts the process, its log relays and the thread that waits for it to exit; `fail` ends
    /// the watchdog if it exits unasked.
    pub(crate) fn start(&self, ctx: &Context, fail: Fail) -> Result<(), String> {
        let config = &ctx.config;
        let mut f = ctx
            .children
            .spawn_bound(&config.argv)
            .map_err(|e| format!("cannot start the upstream {:?}: {e}", config.fprocess))?;
        log::info!("Forking: {}, arguments: {:?}", config.argv[0], &config.argv[1..]);
        drop(f.stdin.take());
        let (prefix, limit) = (config.prefix_logs, config.log_buffer_size);
        if let Some(out) = f.stdout.take() {
            relay("fw-upstream-out", out, FunctionLog::new(Stream::Stdout, prefix, limit));
        }
        if let Some(err) = f.stderr.take() {
            relay("fw-upstream-err", err, FunctionLog::new(Stream::Stderr, prefix, limit));
        }
        let (tx, exited) = bounded(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let has_exited = Arc::new(AtomicBool::new(false));
        let running = Running {
            group: Arc::clone(&f.group),
            stopping: Arc::clone(&stopping),
            exited,
            has_exited: Arc::clone(&has_exited),
        };
        let children = Arc::clone(&ctx.children);
        crate::threads::spawn("fw-upstream", move || {
            let status = children.finish(f);
            let why = format!("the upstream process exited: {}", describe_exit(status));
            has_exited.store(true, Ordering::Release);
            if stopping.load(Ordering::Acquire) {
                log::info!("{why}");
            } else {
                fail(format!("{why}; stopping the watchdog so it is restarted"));
            }
            let _ = tx.send(why);
        })
        .map_err(|e| format!("cannot start the upstream monitor: {e}"))?;
        let _ = self.state.set(running);
        Ok(())
    }

    /// Blocks until the upstream accepts TCP connections, logged every 5 s. The first polls are
    /// 100 µs apart, backing off to 10 ms: a connect attempt to a local port costs some 20 µs,
    /// and an upstream that listens within milliseconds is found within a tenth of one.
    pub(crate) fn wait_ready(&self) -> Result<(), String> {
        let started = Instant::now();
        let mut next_log = Duration::from_secs(5);
        let mut pause = Duration::from_micros(100);
        loop {
            if self.state.get().is_some_and(|r| r.has_exited.load(Ordering::Acquire)) {
                return Err("the upstream process exited before it accepted connections".into());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).is_ok() {
                log::info!(
                    "Upstream {} accepts connections after {:.3}s",
                    self.addr,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            let waited = started.elapsed();
            if waited > READY_LIMIT {
                return Err(format!(
                    "the upstream did not accept connections on {} within {}s",
                    self.addr,
                    READY_LIMIT.as_secs()
                ));
            }
            if waited >= next_log {
                log::info!(
                    "Waiting for the upstream to accept connections on {} ({}s)",
                    self.addr,
                    waited.as_secs()
                );
                next_log += Duration::from_secs(5);
            }
            std::thread::sleep(pause);
            pause = (pause * 3 / 2).min(Duration::from_millis(10));
        }
    }

    /// SIGTERM to the upstream's process group; SIGKILL if it is still there after a grace period.
    pub(crate) fn stop(&self) {
        let Some(running) = self.state.get() else { return };
        if running.has_exited.load(Ordering::Acquire) {
            return;
        }
        running.stopping.store(true, Ordering::Release);
        log::info!("Sending SIGTERM to the upstream");
        running.group.terminate();
        if running.exited.recv_timeout(STOP_GRACE).is_err() {
            log::info!("The upstream is still running {}s after SIGTERM: killing it", STOP_GRACE.as_secs());
            running.group.kill(Kill::Cleanup);
            let _ = running.exited.recv_timeout(Duration::from_secs(2));
        }
    }

    /// SIGKILL to the upstream's process group, without waiting.
    pub(crate) fn kill(&self) {
        if let Some(running) = self.state.get() {
            running.stopping.store(true, Ordering::Release);
            running.group.kill(Kill::Cleanup);
        }
    }
}

fn relay(name: &'static str, mut pipe: impl Read + Send + 'static, mut log: FunctionLog) {
    let spawned = crate::threads::spawn(name, move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => log.feed(&buf[..n]),
            }
        }
        log.finish();
    });
    if let Err(e) = spawned {
        log::error!("cannot relay the upstream's output: {e}");
    }
}
