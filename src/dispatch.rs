//! Routing each request the listener receives (SPEC §3, §6).
//!
//! The dispatcher thread never does I/O on a request: health and readiness checks, refusals and
//! 429s go to a small control pool, function calls to the worker pool, so a slow client or a
//! pipelined connection can only hold up its own request, and health answers while every
//! worker is busy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tiny_http::Request;

use crate::exchange::{self, Exchange, Refused};
use crate::logging::{self, CallRecord};
use crate::modes::Outcome;
use crate::pool::Pool;
use crate::request::Rejection;
use crate::server::Watchdog;

const CONTROL_THREADS: usize = 16;
const CONTROL_QUEUE: usize = 1024;
/// How long a connection whose framing was broken stays refused (it is closed right away; this
/// only has to outlive requests tiny_http already parsed from it).
const POISON_TTL: Duration = Duration::from_secs(30);

/// Queued work is boxed: crossbeam's bounded queues allocate and touch every slot up front, so
/// a slot the size of an `Exchange` (~500 bytes) made 1024 + 256 slots cost 640 KiB of idle
/// memory; a pointer costs 20 KiB.
enum Control {
    Refuse(Box<Refused>),
    Health(Box<Exchange>),
    Ready(Box<Exchange>),
    /// A function call that found no place: 429.
    Busy(Box<Exchange>, String),
}

pub(crate) struct Dispatcher {
    wd: Arc<Watchdog>,
    workers: Arc<Pool<Box<Exchange>>>,
    control: Arc<Pool<Control>>,
    poisoned: Mutex<HashMap<SocketAddr, Instant>>,
    any_poisoned: AtomicBool,
}

impl Dispatcher {
    pub(crate) fn new(wd: Arc<Watchdog>) -> Arc<Dispatcher> {
        let workers = wd.config.workers();
        let w = Arc::clone(&wd);
        let worker_pool = Pool::new("worker", workers, workers, move |ex: Box<Exchange>| run_call(&w, *ex));
        let c = Arc::clone(&wd);
        let control = Pool::new("control", CONTROL_THREADS, CONTROL_QUEUE, move |job| run_control(&c, job));
        Arc::new(Dispatcher {
            wd,
            workers: worker_pool,
            control,
            poisoned: Mutex::new(HashMap::new()),
            any_poisoned: AtomicBool::new(false),
        })
    }

    pub(crate) fn dispatch(&self, req: Request) {
        let received = Instant::now();
        if self.is_poisoned(req.remote_addr()) {
            let rejection = Rejection::BadFraming("request on a connection with broken framing");
            self.control.submit_wait(Control::Refuse(Box::new(Refused { req, rejection })));
            return;
        }
        let mut ex = match Exchange::accept(req, received) {
            Ok(ex) => Box::new(ex),
            Err(refused) => {
                if refused.rejection.breaks_framing() {
                    self.poison(refused.req.remote_addr());
                }
                self.control.submit_wait(Control::Refuse(refused));
                return;
            }
        };
        match ex.info.path.as_slice() {
            b"/_/health" => return self.control.submit_wait(Control::Health(ex)),
            b"/_/ready" => return self.control.submit_wait(Control::Ready(ex)),
            _ => {}
        }
        let Some(slot) = self.wd.limiter.try_acquire() else {
            let max = self.wd.limiter.max();
            ex.count_as_call(None, Arc::clone(&self.wd.metrics));
            let msg = format!("Concurrent request limit exceeded. Max concurrent requests: {max}\n");
            return self.control.submit_wait(Control::Busy(ex, msg));
        };
        ex.count_as_call(Some(slot), Arc::clone(&self.wd.metrics));
        if let Err(ex) = self.workers.submit(ex) {
            let workers = self.wd.config.workers();
            let msg = format!(
                "Concurrent request limit exceeded: all {workers} workers are busy and {workers} calls are waiting\n"
            );
            self.control.submit_wait(Control::Busy(ex, msg));
        }
    }

    fn is_poisoned(&self, peer: Option<&SocketAddr>) -> bool {
        if !self.any_poisoned.load(Ordering::Acquire) {
            return false;
        }
        let Some(peer) = peer else { return false };
        let poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        poisoned.get(peer).is_some_and(|at| at.elapsed() < POISON_TTL)
    }

    fn poison(&self, peer: Option<&SocketAddr>) {
        let Some(peer) = peer else { return };
        let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        poisoned.retain(|_, at| at.elapsed() < POISON_TTL);
        poisoned.insert(*peer, Instant::now());
        self.any_poisoned.store(true, Ordering::Release);
    }
}

/// One function call, on a worker thread. A panic anywhere in the mode's handler is caught
/// here: the request gets a 500 (tiny_http answers a dropped request) and the worker lives on.
fn run_call(wd: &Watchdog, ex: Exchange) {
    let record = (ex.info.method.clone(), ex.info.uri.clone(), ex.info.call_id.clone());
    let (received, quiet) = (ex.info.received, ex.info.kube_probe);
    let outcome = match catch_unwind(AssertUnwindSafe(|| wd.handler.handle(ex, wd))) {
        Ok(outcome) => outcome,
        Err(_) => {
            wd.metrics.observe(&record.0, 500, received.elapsed());
            Outcome { status: 500, bytes: 0 }
        }
    };
    if !quiet {
        log_call(wd, &record.0, &record.1, record.2.as_deref(), received, outcome);
    }
}

fn log_call(
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
    });
}

fn run_control(wd: &Watchdog, job: Control) {
    match job {
        Control::Refuse(refused) => exchange::refuse(*refused, wd.port),
        Control::Health(ex) => health(wd, *ex),
        Control::Ready(ex) => ready(wd, *ex),
        Control::Busy(ex, msg) => {
            let headers = [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("X-Content-Type-Options", "nosniff"),
                ("X-OpenFaaS-Internal", "faas-middleware"),
            ];
            ex.respond(429, &headers, msg.as_bytes());
        }
    }
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
