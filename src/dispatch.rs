//! Routing each request (SPEC §3, §6): the one place that decides what a request is (a refusal,
//! health, readiness, a websocket, a function call) and who answers it. Runs on the thread that
//! took the request from tiny_http (`workers`); answers that are not calls are written at once,
//! calls run on that same thread when a worker is free.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use crate::connections::Turn;
use crate::exchange::{self, Exchange};
use crate::limiter::Refusal;
use crate::logging::{self, CallRecord};
use crate::modes::Outcome;
use crate::watchdog::Watchdog;
use crate::workers::Workers;

/// What became of a request.
pub(crate) enum Routed {
    /// Answered: its connection may go on with its next request.
    Done,
    /// Someone else answers it and ends its turn (a call waiting for a worker, a websocket).
    Detached,
}

pub(crate) fn route(workers: &Workers, turn: Turn) -> Routed {
    let wd = &workers.wd;
    let mut ex = match Exchange::accept(turn, &wd.connections, wd.config.read_timeout) {
        Ok(ex) => ex,
        Err(refused) => {
            exchange::refuse(*refused, &wd.connections);
            return Routed::Done;
        }
    };
    match ex.info.path.as_slice() {
        b"/_/health" => {
            health(wd, ex);
            return Routed::Done;
        }
        b"/_/ready" => {
            ready(wd, ex);
            return Routed::Done;
        }
        _ => {}
    }
    if ex.info.upgrade.is_some() && wd.handler.relays_upgrades() {
        return crate::modes::websocket::start(&workers.wd, ex);
    }
    let slot = match wd.limiter.acquire() {
        Ok((slot, waited)) => {
            if wd.limiter.queues() {
                wd.metrics.observe_queue_wait(waited);
            }
            slot
        }
        Err(Refusal::Busy) => {
            ex.count_as_call(None, Arc::clone(&wd.metrics));
            let max = wd.limiter.max();
            busy(ex, &format!("Concurrent request limit exceeded. Max concurrent requests: {max}\n"));
            return Routed::Done;
        }
        Err(Refusal::Closing) => {
            ex.count_as_call(None, Arc::clone(&wd.metrics));
            ex.respond(
                503,
                &[("Content-Type", "text/plain; charset=utf-8")],
                b"The watchdog is shutting down\n",
            );
            return Routed::Done;
        }
    };
    ex.count_as_call(Some(slot), Arc::clone(&wd.metrics));
    if let Some(_claim) = workers.claim() {
        run_call(wd, ex);
        return Routed::Done;
    }
    match workers.wait_for_worker(Box::new(ex)) {
        Ok(()) => Routed::Detached,
        Err(ex) => {
            let n = wd.config.workers();
            let msg = format!(
                "Concurrent request limit exceeded: all {n} workers are busy and {n} calls are waiting\n"
            );
            busy(*ex, &msg);
            Routed::Done
        }
    }
}

/// One function call. A panic anywhere in the mode's handler is caught here: the request gets
/// a 500 (tiny_http answers a dropped request) and the thread lives on.
pub(crate) fn run_call(wd: &Watchdog, mut ex: Exchange) {
    if wd.config.read_debug || wd.config.write_debug {
        let cap = wd.config.log_buffer_size.unwrap_or(usize::MAX);
        ex.log_bodies(wd.config.read_debug, wd.config.write_debug, cap);
    }
    let (method, uri, call_id) = (ex.info.method.clone(), ex.info.uri.clone(), ex.info.call_id.clone());
    let (received, quiet) = (ex.info.received, ex.info.kube_probe);
    let outcome = match catch_unwind(AssertUnwindSafe(|| wd.handler.handle(ex, wd))) {
        Ok(outcome) => outcome,
        Err(_) => {
            wd.metrics.observe(&method, 500, received.elapsed());
            Outcome { status: 500, bytes: 0 }
        }
    };
    if !quiet {
        log_call(wd, &method, &uri, call_id.as_deref(), received, outcome);
    }
}

pub(crate) fn log_call(
    wd: &Watchdog,
    method: &str,
    uri: &str,
    call_id: Option<&str>,
    received: Instant,
    outcome: Outcome,
) {
    logging::request_line(&CallRecord {
        method,
        uri,
        status: outcome.status,
        bytes: outcome.bytes,
        duration: received.elapsed(),
        call_id: wd.config.log_callid.then(|| call_id.unwrap_or("none")),
        status_text: wd.config.mode == crate::config::Mode::Http,
    });
}

/// 429 for a call that found no place (SPEC §6): counted in the metrics as a call, but not
/// logged, as the reference's limiter answers before its logging handler.
fn busy(ex: Exchange, msg: &str) {
    let headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-OpenFaaS-Internal", "faas-middleware"),
    ];
    ex.respond(429, &headers, msg.as_bytes());
}

fn health(wd: &Watchdog, ex: Exchange) {
    if ex.info.method != "GET" {
        ex.respond(405, &[("Allow", "GET")], b"");
    } else if wd.lifecycle.healthy() {
        ex.respond(200, &[("Content-Type", "text/plain; charset=utf-8")], b"OK");
    } else {
        ex.respond(503, &[], b"");
    }
}

/// `/_/ready`: 503 when unhealthy, 429 at max_inflight, else the function's own answer to
/// `GET <ready_path>` (not counted against max_inflight), else 200.
fn ready(wd: &Watchdog, mut ex: Exchange) {
    if ex.info.method != "GET" {
        ex.respond(405, &[("Allow", "GET")], b"");
        return;
    }
    if !wd.lifecycle.healthy() {
        ex.respond(503, &[], b"");
        return;
    }
    if wd.limiter.saturated() {
        ex.respond(429, &[], b"");
        return;
    }
    let Some(path) = &wd.config.ready_path else {
        ex.respond(200, &[], b"");
        return;
    };
    if ex.info.retarget("GET", path).is_err() {
        ex.respond(500, &[], b"");
        return;
    }
    let (received, quiet, call_id) = (ex.info.received, ex.info.kube_probe, ex.info.call_id.clone());
    let outcome = match catch_unwind(AssertUnwindSafe(|| wd.handler.handle(ex, wd))) {
        Ok(outcome) => outcome,
        Err(_) => Outcome { status: 500, bytes: 0 },
    };
    if !quiet {
        log_call(wd, "GET", path, call_id.as_deref(), received, outcome);
    }
}
