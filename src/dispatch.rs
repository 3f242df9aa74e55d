//! Routing each request: the one place that decides what a request is (health, readiness, a
//! websocket, a function call) and who answers it. It runs on the thread that took the request
//! from the HTTP server; answers that are not calls are written at once, and calls run on the
//! same thread once admitted (`limiter`) and let through by jwt_auth's gate (`auth`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::auth::{Denial, Gate};
use crate::config::Mode;
use crate::http_server::{self, Exchange, RequestInfo, Service};
use crate::lifecycle::Lifecycle;
use crate::limiter::{Admitted, Limiter, Refusal};
use crate::logging::{CallLog, Outcome};
use crate::metrics::Metrics;
use crate::modes::{Context, Handler};

pub(crate) struct Dispatcher {
    me: Weak<Dispatcher>,
    pub(crate) ctx: Context,
    pub(crate) handler: Box<dyn Handler>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) metrics: Arc<Metrics>,
    /// jwt_auth's check, passed by every call after its admission.
    gate: Gate,
}

impl Dispatcher {
    pub(crate) fn new(
        ctx: Context,
        handler: Box<dyn Handler>,
        lifecycle: Arc<Lifecycle>,
        limiter: Arc<Limiter>,
        metrics: Arc<Metrics>,
        gate: Gate,
    ) -> Arc<Dispatcher> {
        Arc::new_cyclic(|me| Dispatcher { me: me.clone(), ctx, handler, lifecycle, limiter, metrics, gate })
    }

    /// The call's log line, as the configuration wants it.
    fn call_log(&self, info: &RequestInfo, method: &str, uri: &str) -> CallLog {
        let config = &self.ctx.config;
        CallLog {
            method: method.to_string(),
            uri: uri.to_string(),
            call_id: config.log_callid.then(|| info.call_id.clone().unwrap_or_else(|| "none".into())),
            received: info.received,
            quiet: info.kube_probe,
            status_text: (config.mode == Mode::Http).then_some(http_server::reason),
        }
    }

    /// Counts the call when its last bytes go out, and frees its place then, if it has one.
    fn count(&self, ex: &mut Exchange, slot: Option<crate::limiter::Slot>) {
        let metrics = Arc::clone(&self.metrics);
        let (method, received) = (ex.info.method.clone(), ex.info.received);
        ex.on_last_bytes(move |status| {
            drop(slot);
            metrics.observe(&method, status, received.elapsed());
        });
    }

    /// A function call that got its admission.
    fn call(&self, mut ex: Exchange, admission: Result<Admitted, Refusal>) {
        let admitted = match admission {
            Ok(a) => a,
            Err(refusal) => return self.refuse(ex, refusal),
        };
        if self.limiter.queues() {
            self.metrics.observe_queue_wait(admitted.waited);
        }
        self.count(&mut ex, Some(admitted.slot));
        if let Err(denial) = self.gate.check(&mut ex) {
            return deny(ex, denial);
        }
        let config = &self.ctx.config;
        if config.read_debug || config.write_debug {
            let cap = config.log_buffer_size.unwrap_or(usize::MAX);
            ex.log_bodies(config.read_debug, config.write_debug, cap);
        }
        let log = self.call_log(&ex.info, &ex.info.method, &ex.info.uri);
        log.write(self.handle(ex));
    }

    /// The handler's answer; a panic anywhere in it costs this request a 500 (the exchange,
    /// dropped while unwinding, ends its turn and frees its place), never the thread.
    fn handle(&self, ex: Exchange) -> Outcome {
        let (method, received) = (ex.info.method.clone(), ex.info.received);
        match catch_unwind(AssertUnwindSafe(|| self.handler.handle(ex, &self.ctx))) {
            Ok(outcome) => outcome,
            Err(_) => {
                self.metrics.observe(&method, 500, received.elapsed());
                Outcome { status: 500, bytes: 0 }
            }
        }
    }

    /// A call that got no place: 429 (counted as a call, not logged, as the Go watchdog's
    /// limiter answers before its logging handler), or 503 at the end of a drain.
    fn refuse(&self, mut ex: Exchange, refusal: Refusal) {
        self.count(&mut ex, None);
        match refusal {
            Refusal::Busy => {
                let headers = [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("X-OpenFaaS-Internal", "faas-middleware"),
                ];
                ex.respond(429, &headers, self.limiter.busy_message().as_bytes());
            }
            Refusal::Closing => {
                let headers = [("Content-Type", "text/plain; charset=utf-8")];
                ex.respond(503, &headers, b"The watchdog is shutting down\n");
            }
        }
    }

    fn health(&self, ex: Exchange) {
        if ex.info.method != "GET" {
            ex.respond(405, &[("Allow", "GET")], b"");
        } else if self.lifecycle.healthy() {
            ex.respond(200, &[("Content-Type", "text/plain; charset=utf-8")], b"OK");
        } else {
            ex.respond(503, &[], b"");
        }
    }

    /// `/_/ready`: 503 when unhealthy, 429 at max_inflight, else the function's own answer to
    /// `GET <ready_path>` (not counted against max_inflight), else 200.
    fn ready(&self, mut ex: Exchange) {
        if ex.info.method != "GET" {
            ex.respond(405, &[("Allow", "GET")], b"");
            return;
        }
        if !self.lifecycle.healthy() {
            ex.respond(503, &[], b"");
            return;
        }
        if self.limiter.saturated() {
            ex.respond(429, &[], b"");
            return;
        }
        let Some(path) = &self.ctx.config.ready_path else {
            ex.respond(200, &[], b"");
            return;
        };
        if ex.info.retarget("GET", path).is_err() {
            ex.respond(500, &[], b"");
            return;
        }
        let log = self.call_log(&ex.info, "GET", path);
        log.write(self.handle(ex));
    }

    /// A relayed upgrade (http mode): it holds a place while it lasts, taken now or refused.
    fn upgrade(&self, mut ex: Exchange) {
        let Some(slot) = self.limiter.try_acquire() else {
            return self.refuse(ex, Refusal::Busy);
        };
        self.count(&mut ex, Some(slot));
        if let Err(denial) = self.gate.check(&mut ex) {
            return deny(ex, denial);
        }
        let log = self.call_log(&ex.info, &ex.info.method, &ex.info.uri);
        self.handler.upgrade(ex, &self.ctx, log);
    }
}

/// A call jwt_auth refused: counted as a call, and logged with the Go watchdog's line
/// (`POST / - 401 ACCESS DENIED - (0s)`) instead of the call's.
fn deny(ex: Exchange, denial: Denial) {
    let (method, path) = (ex.info.method.clone(), String::from_utf8_lossy(&ex.info.path).into_owned());
    ex.respond(denial.status, &denial.headers(), denial.body().as_bytes());
    let took = Duration::from_millis(denial.took.as_secs_f64().mul_add(1000.0, 0.5) as u64);
    log::info!("{method} {path} - {} ACCESS DENIED - ({})", denial.status, crate::duration::format_go(took));
}

impl Service for Dispatcher {
    fn serve(&self, ex: Exchange) {
        match ex.info.path.as_slice() {
            b"/_/health" => return self.health(ex),
            b"/_/ready" => return self.ready(ex),
            _ => {}
        }
        if ex.info.upgrade.is_some() && self.handler.relays_upgrades() {
            return self.upgrade(ex);
        }
        let Some(me) = self.me.upgrade() else { return };
        self.limiter.admit(move |admission| me.call(ex, admission));
        // Calls that waited for a place while this one ran go on this thread.
        self.limiter.run_parked();
    }
}
