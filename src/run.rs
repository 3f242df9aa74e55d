//! Startup and shutdown: the order of events the orchestrator relies on.
//!
//! Startup: configuration (done by main), the listening socket, the mode (http: upstream
//! started), serving, then the lock file and health. SIGTERM/SIGINT: unhealthy and no lock file
//! at once; serving goes on for `healthcheck_interval`; then no new connections, in-flight calls
//! get up to `write_timeout`; then the mode shuts down (http: SIGTERM to the upstream); exit 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::auth::Gate;
use crate::config::{Config, Mode};
use crate::deadlines::Deadlines;
use crate::dispatch::Dispatcher;
use crate::duration::format_go;
use crate::http_server::{self, HttpServer, Service, Settings};
use crate::lifecycle::{Lifecycle, Signals, signal_name};
use crate::limiter::Limiter;
use crate::metrics::{self, Metrics};
use crate::modes::{self, Context};
use crate::process::{self, Children};

/// Receiving threads beyond the calls and the calls waiting for a place, for answers that are
/// not calls (health, 429, 4xx, requests of slow clients).
const CONTROL_HEADROOM: usize = 512;

/// What the main thread waits for while serving.
enum Event {
    Signal(i32),
    /// The watchdog cannot go on (http mode: the upstream died); exit non-zero.
    Fatal(String),
}

/// Shortest time between two orphan sweeps as PID 1.
const ORPHAN_SWEEP: Duration = Duration::from_millis(100);
/// How often the drain looks at the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// A second signal this soon after the first is the same one delivered twice.
const SIGNAL_ECHO: Duration = Duration::from_millis(200);

/// Runs the watchdog until it is told to stop; returns the exit status.
pub(crate) fn run(config: Config) -> i32 {
    let pid1 = std::process::id() == 1;
    let signals = match Signals::install(pid1) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    process::raise_nofile_limit();
    http_server::install_panic_hook();
    let deadlines = match Deadlines::start() {
        Ok(d) => d,
        Err(e) => {
            log::error!("cannot start the deadline thread: {e}");
            return 1;
        }
    };
    // jwt_auth's issuer before the port is bound, as the Go watchdog does: until it answers,
    // connections are refused rather than left waiting.
    let gate = match Gate::start(&config, &deadlines) {
        Ok(g) => g,
        Err(e) => {
            log::error!("Error: error creating JWTAuthMiddleware: {e}");
            return 1;
        }
    };

    let bound = match http_server::bind(config.port, config.write_timeout) {
        Ok(b) => b,
        Err(e) => {
            log::error!("cannot listen on port {}: {e}", config.port);
            return 1;
        }
    };
    let port = bound.port;

    log::info!("{}", crate::cli::version_line());
    log::info!("Watchdog mode: {}\tfprocess: {:?}", config.mode.name(), config.fprocess);
    if let Some(program) = config.argv.first() {
        match process::check_program(program) {
            process::Program::Runnable => {}
            // A fork-mode function that cannot be started is a 500 per call; a missing file may
            // still be mounted or written before the first call.
            process::Program::Missing(why) if config.mode != Mode::Http => {
                log::error!("fprocess: {why}; calls will fail with 500 until it does");
            }
            process::Program::Missing(why) | process::Program::Unusable(why) => {
                log::error!("fprocess cannot run: {why}");
                return 1;
            }
        }
    }
    let handler = match modes::build(&config) {
        Ok(h) => h,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let limiter =
        Limiter::new(config.max_inflight, config.max_workers, config.queue_timeout, config.queue_size);
    let metrics = Arc::new(Metrics::new(Arc::clone(&limiter)));
    let children = Arc::new(Children::new(pid1));
    let (events_tx, events) = bounded(16);
    let metrics_port = config.metrics_port;
    let settings = Settings {
        read_timeout: config.read_timeout,
        write_timeout: config.write_timeout,
        max_threads: config.workers() + config.queued_calls() + CONTROL_HEADROOM,
    };
    let lifecycle = Arc::new(Lifecycle::new(config.suppress_lock));
    let ctx = Context { config, children: Arc::clone(&children), deadlines };
    // The upstream first: its own start-up runs while ours goes on.
    let fail_tx = events_tx.clone();
    let fail = Box::new(move |why: String| {
        let _ = fail_tx.send(Event::Fatal(why));
    });
    if let Err(e) = handler.start(&ctx, fail) {
        log::error!("{e}");
        return 1;
    }
    spawn_signal_thread(signals, pid1, Arc::clone(&children), events_tx);
    let jwt_line = gate.closed().then_some("JWT Auth: true");
    let wd = Dispatcher::new(ctx, handler, lifecycle, Arc::clone(&limiter), Arc::clone(&metrics), gate);
    let service: Arc<dyn Service> = wd.clone();
    let server = match HttpServer::start(bound, settings, service) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let config = &wd.ctx.config;
    log::info!("{}", config.timeouts_line());
    log::info!("{}", config.concurrency_line());
    log::info!("{}", config.logging_line());
    if let Some(line) = jwt_line {
        log::info!("{line}");
    }
    log::info!("Listening on port: {port}");

    if let Err(e) = wd.handler.wait_ready() {
        log::error!("{e}");
        children.kill_all();
        return 1;
    }
    if let Err(e) = wd.lifecycle.mark_serving() {
        log::error!("{e}");
        children.kill_all();
        return 1;
    }
    metrics::serve(metrics_port, metrics);

    let signal = match wait_event(&events, None) {
        Some(Event::Signal(sig)) => sig,
        Some(Event::Fatal(why)) => return fatal(&wd, &why),
        None => return 1,
    };
    shutdown(&wd, &server, &events, signal)
}

fn spawn_signal_thread(signals: Signals, pid1: bool, children: Arc<Children>, events: Sender<Event>) {
    let spawned = crate::threads::spawn("fw-signals", move || {
        // As PID 1, orphans are swept after SIGCHLD (at most every 100 ms: every call's process
        // sends one), and again while a sweep was held up. No signal, no wake-up.
        let mut last_sweep = Instant::now();
        let mut pending = false;
        loop {
            let timeout = if !pid1 {
                None
            } else if pending {
                Some(ORPHAN_SWEEP.saturating_sub(last_sweep.elapsed()))
            } else {
                None
            };
            match signals.wait(timeout) {
                Some(libc::SIGCHLD) => pending = true,
                Some(sig) => {
                    if events.send(Event::Signal(sig)).is_err() {
                        return;
                    }
                }
                None => pending = true,
            }
            if pid1 && pending && last_sweep.elapsed() >= ORPHAN_SWEEP {
                // An exited child of ours (its worker about to reap it) may hide an orphan:
                // then the sweep is repeated until it gets past it.
                pending = !children.reap_orphans();
                last_sweep = Instant::now();
            }
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the signal thread: {e}; SIGTERM will not drain");
    }
}

fn wait_event(events: &Receiver<Event>, until: Option<Instant>) -> Option<Event> {
    match until {
        None => events.recv().ok(),
        Some(t) => events.recv_deadline(t).ok(),
    }
}

fn fatal(wd: &Dispatcher, why: &str) -> i32 {
    log::error!("{why}");
    wd.lifecycle.begin_drain();
    wd.ctx.children.kill_all();
    1
}

/// A second SIGTERM or SIGINT during the drain (a second Ctrl-C) ends the watchdog at once,
/// with the shell's code for death by that signal. One sent within `SIGNAL_ECHO` of the first
/// is the same signal delivered twice (`timeout(1)` signals the child and then its group).
fn second_signal(wd: &Dispatcher, server: &HttpServer, sig: i32, first: Instant) -> Option<i32> {
    if first.elapsed() < SIGNAL_ECHO {
        return None;
    }
    log::warn!("{} again: exiting now, {} calls cut short", signal_name(sig), wd.limiter.in_flight());
    server.close_upgraded();
    wd.handler.kill();
    wd.ctx.children.kill_all();
    Some(128 + sig)
}

fn shutdown(wd: &Dispatcher, server: &HttpServer, events: &Receiver<Event>, signal: i32) -> i32 {
    let interval = wd.ctx.config.healthcheck_interval;
    log::info!("{}: no new connections in {}", signal_name(signal), format_go(interval));
    wd.lifecycle.begin_drain();
    let first = Instant::now();
    let until = first + interval;
    loop {
        match wait_event(events, Some(until)) {
            Some(Event::Fatal(why)) => return fatal(wd, &why),
            Some(Event::Signal(sig)) => {
                if let Some(code) = second_signal(wd, server, sig, first) {
                    return code;
                }
            }
            None => break,
        }
    }
    server.stop_accepting();
    log::info!("No new connections allowed, draining: {} requests", wd.limiter.in_flight());
    // Done when no call is in flight and no connection holds a request not yet answered (one
    // tiny_http has parsed but no worker has taken counts too), as Go's Shutdown waits for
    // every connection to go idle; websocket sessions hold places, so they keep it waiting.
    let drain_until = Instant::now() + wd.ctx.config.write_timeout;
    while (wd.limiter.in_flight() > 0 || !server.quiescent()) && Instant::now() < drain_until {
        match wait_event(events, Some(Instant::now() + DRAIN_POLL)) {
            Some(Event::Fatal(why)) => return fatal(wd, &why),
            Some(Event::Signal(sig)) => {
                if let Some(code) = second_signal(wd, server, sig, first) {
                    return code;
                }
            }
            None => {}
        }
    }
    // Calls still waiting for a place get 503; give them a moment to send it.
    wd.limiter.close();
    let refused_by = Instant::now() + Duration::from_millis(500);
    while wd.limiter.waiting() > 0 && Instant::now() < refused_by {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Websocket sessions held their places through the drain; now they end: closed as
    // websockets close, then cut.
    wd.handler.close_sessions();
    server.close_upgraded();
    wd.handler.shutdown();
    log::info!("Exiting. Active connections: {}", wd.limiter.in_flight());
    wd.ctx.children.kill_all();
    0
}
