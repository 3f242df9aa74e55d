//! http mode: one long-running server, every request relayed to it with ureq.
//!
//! One shared Agent, configured against ureq's defaults: no proxy from the environment, no
//! redirects, statuses are not errors, no headers of its own, and a keep-alive pool as large as
//! the worker pool. Requests keep their framing: a Content-Length body is sent with that
//! Content-Length, a chunked one chunked (or whole with `http_buffer_req_body`). Responses are
//! streamed back as they arrive, flushed per read, so SSE and NDJSON reach the client event by
//! event. Hop-by-hop headers are dropped in both directions.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::relay::{self, Body, Outgoing, Pool};
use super::upstream::Upstream;
use crate::duration::seconds_f6;
use crate::http_server::{BodyError, Exchange, Framing, ResponseWriter, canonical_name, origin_form};
use crate::io_buffer::IoBuffer;
use crate::logging::CallLog;
use crate::spool::Spool;

use super::handler::{Context, Fail, Handler, Outcome};

const BUFFERED_BODY_MEMORY: usize = 1024 * 1024;
/// How long websocket sessions get to answer their close frames at the end of a drain.
const SESSION_CLOSE: Duration = Duration::from_secs(1);

pub(crate) struct Http {
    pool: Pool,
    upstream: Upstream,
    /// The upstream URL's path, put before every request target.
    prefix: String,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

fn hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || connection_tokens.iter().any(|t| t.eq_ignore_ascii_case(name))
}

fn connection_tokens<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

impl Http {
    pub(crate) fn new(config: &crate::config::Config) -> Result<Http, String> {
        let upstream = Upstream::new(config)?;
        let url = config.upstream.as_ref().ok_or("mode=http needs upstream_url")?;
        // As many kept connections as calls can run at once.
        let pool = Pool::new(upstream.addr, config.workers().max(16));
        Ok(Http { pool, upstream, prefix: url.prefix.clone() })
    }
}

/// Reads the client's body for the relay, remembering a client-side failure so it is reported as
/// the client's (4xx), not the upstream's.
struct ClientBody<'a> {
    ex: &'a mut Exchange,
    failed: &'a mut Option<BodyError>,
}

impl Read for ClientBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.ex.read_body(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let err = io::Error::other(e.message());
                *self.failed = Some(e);
                Err(err)
            }
        }
    }
}

/// Why a relay failed before the upstream's response started.
enum Failure {
    Client(BodyError),
    /// The body could not be held for `http_buffer_req_body` (e.g. a full $TMPDIR): ours.
    Buffer(io::Error),
    Upstream(relay::Failure),
    BadTarget,
}

impl Handler for Http {
    fn start(&self, ctx: &Context, fail: Fail) -> Result<(), String> {
        self.upstream.start(ctx, fail)
    }

    fn wait_ready(&self) -> Result<(), String> {
        self.upstream.wait_ready()
    }

    fn close_sessions(&self) {
        super::websocket::close_all(SESSION_CLOSE);
    }

    fn shutdown(&self) {
        self.upstream.stop();
    }

    fn kill(&self) {
        self.upstream.kill();
    }

    fn relays_upgrades(&self) -> bool {
        true
    }

    fn upgrade(&self, ex: Exchange, ctx: &Context, log: CallLog) {
        super::websocket::relay(ex, ctx, self.upstream.addr, &self.prefix, log);
    }

    fn handle(&self, mut ex: Exchange, ctx: &Context) -> Outcome {
        let super::handler::Limits { limit, respond_by } = super::handler::Limits::of(&ex.info, &ctx.config);
        let started = Instant::now();
        let limits = relay::Limits { ends_at: limit.map(|l| started + l), head_by: respond_by };
        let result = self.relay(&mut ex, ctx, limits);
        let duration = seconds_f6(started.elapsed());
        let answer = match result {
            Ok(answer) => answer,
            Err(failure) => return failed(ex, failure, &duration),
        };
        let status = answer.status;
        let tokens =
            connection_tokens(answer.headers.get_all("connection").iter().filter_map(|v| v.to_str().ok()));
        let length = answer.body.length();
        // Header names come in lower case; they go back in the canonical form the Go watchdog
        // writes (`Content-Type`, `X-Request-Id`).
        let named: Vec<(String, &str)> = answer
            .headers
            .iter()
            .filter(|(name, _)| *name != "content-length" && !hop_by_hop(name.as_str(), &tokens))
            .filter_map(|(name, value)| Some((canonical_name(name.as_str()), value.to_str().ok()?)))
            .collect();
        let mut headers: Vec<(&str, &str)> = named.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        headers.push(("X-Duration-Seconds", &duration));

        let mut reader = answer.body;
        if length.is_none() && ex.needs_length() {
            // An HTTP/1.0 keep-alive client needs the length up front.
            let mut spool = Spool::new(BUFFERED_BODY_MEMORY);
            let mut buf = IoBuffer::take();
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if spool.push(&buf[..n]).is_err() {
                            return respond_error(ex, 502, &duration);
                        }
                    }
                    Err(e) => {
                        log::warn!("reading the upstream's response failed: {e}");
                        return respond_error(ex, 502, &duration);
                    }
                }
            }
            return super::handler::send_spool(ex, status, &headers, &mut spool);
        }
        let mut stream = ex.start(status, &headers, length);
        let bytes = match copy_body(&mut reader, &mut stream) {
            Ok(()) => {
                let sent = stream.sent();
                stream.finish().unwrap_or(sent)
            }
            Err(Broken::Client) => stream.abort(),
            Err(Broken::Upstream(e)) => {
                log::warn!("the upstream's response broke off after {} bytes: {e}", stream.sent());
                // End the client's connection too, so it cannot take a truncated body as whole.
                stream.abort()
            }
        };
        Outcome { status, bytes }
    }
}

enum Broken {
    /// The client went away.
    Client,
    /// Reading the upstream's body failed.
    Upstream(io::Error),
}

/// Relays the upstream's body piece by piece, each piece flushed to the client.
fn copy_body(reader: &mut impl Read, stream: &mut ResponseWriter) -> Result<(), Broken> {
    let mut buf = IoBuffer::take();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Broken::Upstream(e)),
        };
        if stream.write(&buf[..n]).is_err() {
            return Err(Broken::Client);
        }
    }
}

impl Http {
    fn relay(
        &self,
        ex: &mut Exchange,
        ctx: &Context,
        limits: relay::Limits,
    ) -> Result<relay::Answer<'_>, Failure> {
        let origin = origin_form(&ex.info.uri).ok_or(Failure::BadTarget)?;
        let target = format!("{}{}", self.prefix, origin);
        let method = ex.info.method.clone();
        let tokens = connection_tokens(
            ex.headers().filter(|(k, _)| k.eq_ignore_ascii_case("connection")).map(|(_, v)| v),
        );
        let owned: Vec<(String, String)> = ex
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length") && !hop_by_hop(name, &tokens))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let headers: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let deadlines = &ctx.deadlines;
        let mut failed = None;
        let buffer = ctx.config.buffer_body || ex.info.preloaded;
        let mut out = Outgoing { method: &method, target: &target, headers: &headers, body: Body::None };
        let result = match ex.info.framing {
            Framing::Empty if ex.header("content-length").is_some() || sends_body(&method) => {
                // An empty body the client framed (`Content-Length: 0`), or a POST, PUT or PATCH
                // without one: `Content-Length: 0`, as Go's client sends, never an empty chunked
                // body (a server may not read chunked bodies at all).
                out.body = Body::Bytes(&[]);
                self.pool.call(&mut out, deadlines, limits)
            }
            Framing::Empty => self.pool.call(&mut out, deadlines, limits),
            Framing::Length(_) | Framing::Chunked if buffer => {
                // Read whole (bounded memory: a spool), then sent with its Content-Length.
                let mut spool = Spool::new(BUFFERED_BODY_MEMORY);
                let mut buf = IoBuffer::take();
                loop {
                    match ex.read_body(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if let Err(e) = spool.push(&buf[..n]) {
                                return Err(Failure::Buffer(e));
                            }
                        }
                        Err(e) => return Err(Failure::Client(e)),
                    }
                }
                drop(buf);
                let len = spool.len();
                if spool.as_slice().is_some() {
                    out.body = Body::Bytes(spool.as_slice().unwrap_or_default());
                    self.pool.call(&mut out, deadlines, limits)
                } else {
                    let mut reader = spool.reader().map_err(Failure::Buffer)?;
                    out.body = Body::Sized(len, &mut reader);
                    self.pool.call(&mut out, deadlines, limits)
                }
            }
            Framing::Length(n) => {
                let mut body = ClientBody { ex, failed: &mut failed };
                out.body = Body::Sized(n, &mut body);
                self.pool.call(&mut out, deadlines, limits)
            }
            Framing::Chunked => {
                let mut body = ClientBody { ex, failed: &mut failed };
                out.body = Body::Chunked(&mut body);
                self.pool.call(&mut out, deadlines, limits)
            }
        };
        match (result, failed) {
            (_, Some(client)) => Err(Failure::Client(client)),
            (Ok(answer), None) => Ok(answer),
            (Err(relay::Failure::Request(_)), None) => Err(Failure::BadTarget),
            (Err(e), None) => Err(Failure::Upstream(e)),
        }
    }
}

/// Methods whose requests carry a body, even an empty one.
fn sends_body(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

fn respond_error(ex: Exchange, status: u16, duration: &str) -> Outcome {
    let headers = [("X-Duration-Seconds", duration), ("X-OpenFaaS-Internal", "of-watchdog")];
    let bytes = ex.respond(status, &headers, b"");
    Outcome { status, bytes }
}

/// As Go's watchdog answers: refused or failed → 500, timeout → 504, a connection reset mid-request → 502; the
/// client's own failures are 4xx.
fn failed(ex: Exchange, failure: Failure, duration: &str) -> Outcome {
    let (method, uri) = (ex.info.method.clone(), ex.info.uri.clone());
    match failure {
        Failure::Client(e) => {
            log::info!("{method} {uri}: {}", e.message());
            super::handler::text(
                ex,
                e.status(),
                &format!("{}\n", e.message()),
                &[("X-Duration-Seconds", duration)],
            )
        }
        Failure::BadTarget => super::handler::text(ex, 400, "400 Bad Request: invalid request target\n", &[]),
        Failure::Buffer(e) => {
            log::error!("{method} {uri}: cannot buffer the request body: {e}");
            let msg = format!("cannot buffer the request body: {e}\n");
            let headers = [("X-Duration-Seconds", duration), ("X-OpenFaaS-Internal", "of-watchdog")];
            super::handler::text(ex, 500, &msg, &headers)
        }
        Failure::Upstream(e) => {
            let (status, why) = match e {
                relay::Failure::TimedOut => (504, String::new()),
                relay::Failure::Connect(e) => (500, e.to_string()),
                relay::Failure::Upstream(why) | relay::Failure::Request(why) => (502, why),
                relay::Failure::ClientBody => (502, "the request body could not be read".into()),
            };
            match status {
                504 => log::warn!("Upstream HTTP killed due to exec_timeout: {method} {uri}"),
                _ => log::error!("Upstream HTTP request error: {method} {uri}: {why}"),
            }
            respond_error(ex, status, duration)
        }
    }
}
