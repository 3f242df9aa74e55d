//! Startup and shutdown (SPEC §7): the order of events the orchestrator relies on.
//!
//! Startup: configuration (done by main), listener, mode (http: upstream started), serving,
//! then the lock file and health. SIGTERM/SIGINT: unhealthy and no lock file at once; serving
//! goes on for `healthcheck_interval`; then no new connections, in-flight calls get up to
//! `write_timeout`; then the mode shuts down (http: SIGTERM to the upstream); exit 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::config::{Config, Mode};
use crate::connections::Connections;
use crate::duration::format_go;
use crate::lifecycle::{Lifecycle, Signals, signal_name};
use crate::limiter::Limiter;
use crate::listener::Acceptor;
use crate::metrics::{self, Metrics};
use crate::modes;
use crate::process::{self, Children, Deadlines};
use crate::sockets;
use crate::watchdog::{Event, Watchdog};
use crate::workers::Workers;

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
    crate::listener::install_panic_hook();

    let listener = match sockets::listen(config.port, config.write_timeout) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot listen on port {}: {e}", config.port);
            return 1;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(config.port);

    log::info!("{}", crate::cli::version_line());
    log::info!("Watchdog mode: {}\tfprocess: {:?}", config.mode.name(), config.fprocess);
    if let Some(program) = config.argv.first() {
        match process::check_program(program) {
            process::Program::Runnable => {}
            // SPEC §4: a fork-mode function that cannot be started is a 500 per call; a missing
            // file may still be mounted or written before the first call.
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
    let deadlines = match Deadlines::start() {
        Ok(d) => d,
        Err(e) => {
            log::error!("cannot start the deadline thread: {e}");
            return 1;
        }
    };
    let connections = match Connections::new(port, config.read_timeout, config.write_timeout) {
        Ok(c) => c,
        Err(e) => {
            log::error!("cannot set up the connection sweeper: {e}");
            return 1;
        }
    };
    crate::alloc::set_alarm(connections.alarm_fd());
    let limiter = Limiter::new(config.max_inflight, config.queue_timeout, config.queue_size);
    let metrics = Arc::new(Metrics::new(Arc::clone(&limiter)));
    let children = Arc::new(Children::new(pid1));
    let (events_tx, events) = bounded(16);
    let metrics_port = config.metrics_port;
    let wd = Arc::new(Watchdog {
        lifecycle: Lifecycle::new(config.suppress_lock),
        config,
        limiter,
        metrics: Arc::clone(&metrics),
        children: Arc::clone(&children),
        deadlines,
        connections: Arc::clone(&connections),
        handler,
        events: events_tx.clone(),
    });
    // The upstream first: its own start-up runs while ours goes on.
    if let Err(e) = wd.handler.start(&wd) {
        log::error!("{e}");
        return 1;
    }
    spawn_signal_thread(signals, pid1, Arc::clone(&children), events_tx);
    let workers = Workers::new(Arc::clone(&wd));
    let acceptor = match Acceptor::start(listener, port, workers) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    log::info!("{}", wd.config.timeouts_line());
    log::info!("{}", wd.config.concurrency_line());
    log::info!("{}", wd.config.logging_line());
    log::info!("Listening on port: {port}");

    if let Err(e) = wd.handler.wait_ready(&wd) {
        log::error!("{e}");
        children.kill_all();
        return 1;
    }
    if let Err(e) = wd.lifecycle.mark_serving() {
        log::error!("{e}");
        children.kill_all();
        return 1;
    }
    // What health and the first calls do not need starts once the watchdog is healthy.
    if let Err(e) = connections.start_sweeper() {
        log::error!("cannot start the connection sweeper: {e}");
        children.kill_all();
        return 1;
    }
    metrics::serve(metrics_port, metrics);
    crate::alloc::size_window();

    let signal = match wait_event(&events, None) {
        Some(Event::Signal(sig)) => sig,
        Some(Event::Fatal(why)) => return fatal(&wd, &why),
        None => return 1,
    };
    shutdown(&wd, &acceptor, &events, signal)
}

fn spawn_signal_thread(signals: Signals, pid1: bool, children: Arc<Children>, events: Sender<Event>) {
    let spawned = crate::threads::spawn("fw-signals", move || {
        // As PID 1, orphans are swept after SIGCHLD (at most every 100 ms: every call's process
        // sends one) and at least once a second.
        let mut last_sweep = Instant::now();
        let mut pending = false;
        loop {
            let timeout = if !pid1 {
                None
            } else if pending {
                Some(ORPHAN_SWEEP.saturating_sub(last_sweep.elapsed()))
            } else {
                Some(Duration::from_secs(1))
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
                children.reap_orphans();
                last_sweep = Instant::now();
                pending = false;
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

fn fatal(wd: &Watchdog, why: &str) -> i32 {
    log::error!("{why}");
    wd.lifecycle.begin_drain();
    wd.children.kill_all();
    1
}

/// A second SIGTERM or SIGINT during the drain (a second Ctrl-C) ends the watchdog at once,
/// with the shell's code for death by that signal. One sent within `SIGNAL_ECHO` of the first
/// is the same signal delivered twice (`timeout(1)` signals the child and then its group).
fn second_signal(wd: &Watchdog, sig: i32, first: Instant) -> Option<i32> {
    if first.elapsed() < SIGNAL_ECHO {
        return None;
    }
    log::warn!("{} again: exiting now, {} calls cut short", signal_name(sig), wd.limiter.in_flight());
    wd.connections.close_upgraded();
    wd.handler.kill();
    wd.children.kill_all();
    Some(128 + sig)
}

fn shutdown(wd: &Watchdog, acceptor: &Acceptor, events: &Receiver<Event>, signal: i32) -> i32 {
    let interval = wd.config.healthcheck_interval;
    log::info!("{}: no new connections in {}", signal_name(signal), format_go(interval));
    wd.lifecycle.begin_drain();
    let first = Instant::now();
    let until = first + interval;
    loop {
        match wait_event(events, Some(until)) {
            Some(Event::Fatal(why)) => return fatal(wd, &why),
            Some(Event::Signal(sig)) => {
                if let Some(code) = second_signal(wd, sig, first) {
                    return code;
                }
            }
            None => break,
        }
    }
    acceptor.stop();
    log::info!("No new connections allowed, draining: {} requests", wd.limiter.in_flight());
    // Done when no call is in flight and no connection holds a request not yet answered (one
    // tiny_http has parsed but no worker has taken counts too), as Go's Shutdown waits for
    // every connection to go idle; websocket sessions hold places, so they keep it waiting.
    let drain_until = Instant::now() + wd.config.write_timeout;
    while (wd.limiter.in_flight() > 0 || !wd.connections.quiescent()) && Instant::now() < drain_until {
        match wait_event(events, Some(Instant::now() + DRAIN_POLL)) {
            Some(Event::Fatal(why)) => return fatal(wd, &why),
            Some(Event::Signal(sig)) => {
                if let Some(code) = second_signal(wd, sig, first) {
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
    // Websocket sessions held their places through the drain; now they end.
    wd.connections.close_upgraded();
    wd.handler.shutdown(wd);
    log::info!("Exiting. Active connections: {}", wd.limiter.in_flight());
    wd.children.kill_all();
    0
}
