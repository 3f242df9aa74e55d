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

use ureq::http;

use super::upstream::Upstream;
use crate::duration::seconds_f6;
use crate::http_server::{BodyError, Exchange, Framing, ResponseWriter, canonical_name, origin_form};
use crate::io_buffer::IoBuffer;
use crate::logging::CallLog;
use crate::spool::Spool;

use super::handler::{Context, Fail, Handler, Outcome};

const BUFFERED_BODY_MEMORY: usize = 1024 * 1024;

pub(crate) struct Http {
    agent: ureq::Agent,
    upstream: Upstream,
    /// `http://<ip>:<port><prefix>`: the host is already resolved (see `upstream::resolve`).
    base: String,
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
        let host = match upstream.addr {
            std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            std::net::SocketAddr::V4(a) => a.ip().to_string(),
        };
        let base = format!("http://{host}:{}{}", upstream.addr.port(), url.prefix);
        let workers = config.workers();
        let agent_config = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .allow_non_standard_methods(true)
            .user_agent(ureq::config::AutoHeaderValue::None)
            .accept(ureq::config::AutoHeaderValue::None)
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .max_idle_connections(workers.max(16))
            .max_idle_connections_per_host(workers.max(16))
            .input_buffer_size(16 * 1024)
            .output_buffer_size(16 * 1024)
            .no_delay(true)
            .build();
        let agent = ureq::Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::new(),
            UpstreamResolver(upstream.addr),
        );
        Ok(Http { agent, upstream, base, prefix: url.prefix.clone() })
    }
}

/// Every relayed request goes to the one upstream, resolved at startup: no DNS per call, and
/// no getaddrinfo in the binary (it cannot work in a `FROM scratch` image anyway, and it is a
/// fifth of a static binary's size).
#[derive(Debug)]
struct UpstreamResolver(std::net::SocketAddr);

impl ureq::unversioned::resolver::Resolver for UpstreamResolver {
    fn resolve(
        &self,
        _uri: &http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(self.0);
        Ok(addrs)
    }
}

/// Reads the client's body for ureq, remembering a client-side failure so it is reported as
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
    Upstream(ureq::Error),
    BadTarget,
}

impl Handler for Http {
    fn start(&self, ctx: &Context, fail: Fail) -> Result<(), String> {
        self.upstream.start(ctx, fail)
    }

    fn wait_ready(&self) -> Result<(), String> {
        self.upstream.wait_ready()
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
        let result = self.relay(&mut ex, ctx, limit, respond_by);
        let duration = seconds_f6(started.elapsed());
        let response = match result {
            Ok(response) => response,
            Err(failure) => return failed(ex, failure, &duration),
        };
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let tokens =
            connection_tokens(parts.headers.get_all("connection").iter().filter_map(|v| v.to_str().ok()));
        let chunked = parts.headers.contains_key("transfer-encoding");
        let length = if chunked {
            None
        } else {
            parts.headers.get("content-length").and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        };
        // ureq hands header names over in lower case; they go back in the canonical form the Go
        // watchdog writes (`Content-Type`, `X-Request-Id`).
        let named: Vec<(String, &str)> = parts
            .headers
            .iter()
            .filter(|(name, _)| *name != "content-length" && !hop_by_hop(name.as_str(), &tokens))
            .filter_map(|(name, value)| Some((canonical_name(name.as_str()), value.to_str().ok()?)))
            .collect();
        let mut headers: Vec<(&str, &str)> = named.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        headers.push(("X-Duration-Seconds", &duration));

        let mut reader = body.into_reader();
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
        limit: Option<Duration>,
        respond_by: Option<Instant>,
    ) -> Result<http::Response<ureq::Body>, Failure> {
        let target = origin_form(&ex.info.uri).ok_or(Failure::BadTarget)?;
        let uri = format!("{}{}", self.base, target);
        let mut builder = http::Request::builder().method(ex.info.method.as_str()).uri(uri.as_str());
        let tokens = connection_tokens(
            ex.headers().filter(|(k, _)| k.eq_ignore_ascii_case("connection")).map(|(_, v)| v),
        );
        for (name, value) in ex.headers() {
            if name.eq_ignore_ascii_case("content-length") || hop_by_hop(name, &tokens) {
                continue;
            }
            // A name or value the http crate refuses is skipped, not fatal for the call.
            if let (Ok(n), Ok(v)) =
                (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(value))
            {
                builder = builder.header(n, v);
            }
        }
        let mut failed = None;
        let configure = Timing { limit, respond_by };
        let buffer = ctx.config.buffer_body || ex.info.preloaded;
        let result = match ex.info.framing {
            Framing::Empty if ex.header("content-length").is_some() || sends_body(&ex.info.method) => {
                // An empty body the client framed (`Content-Length: 0`), or a POST, PUT or PATCH
                // without one: `Content-Length: 0`, as Go's client sends, never an empty chunked
                // body (a server may not read chunked bodies at all).
                let req =
                    builder.header("content-length", 0).body(&[][..]).map_err(|_| Failure::BadTarget)?;
                self.agent.run(configure.apply(&self.agent, req))
            }
            Framing::Empty => {
                let req = builder.body(()).map_err(|_| Failure::BadTarget)?;
                self.agent.run(configure.apply(&self.agent, req))
            }
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
                let builder = builder.header("content-length", spool.len());
                match spool.as_slice() {
                    Some(bytes) => {
                        let req = builder.body(bytes).map_err(|_| Failure::BadTarget)?;
                        self.agent.run(configure.apply(&self.agent, req))
                    }
                    None => {
                        let mut reader = spool.reader().map_err(Failure::Buffer)?;
                        let req = builder
                            .body(ureq::SendBody::from_reader(&mut reader))
                            .map_err(|_| Failure::BadTarget)?;
                        self.agent.run(configure.apply(&self.agent, req))
                    }
                }
            }
            Framing::Length(n) => {
                let mut body = ClientBody { ex, failed: &mut failed };
                let req = builder
                    .header("content-length", n)
                    .body(ureq::SendBody::from_reader(&mut body))
                    .map_err(|_| Failure::BadTarget)?;
                self.agent.run(configure.apply(&self.agent, req))
            }
            Framing::Chunked => {
                let mut body = ClientBody { ex, failed: &mut failed };
                let req =
                    builder.body(ureq::SendBody::from_reader(&mut body)).map_err(|_| Failure::BadTarget)?;
                self.agent.run(configure.apply(&self.agent, req))
            }
        };
        match (result, failed) {
            (_, Some(client)) => Err(Failure::Client(client)),
            (Ok(response), None) => Ok(response),
            (Err(e), None) => Err(Failure::Upstream(e)),
        }
    }
}

/// Methods whose requests carry a body, even an empty one.
fn sends_body(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

/// The call's time limits, as ureq timeouts.
struct Timing {
    limit: Option<Duration>,
    respond_by: Option<Instant>,
}

impl Timing {
    fn apply<S: ureq::AsSendBody>(&self, agent: &ureq::Agent, req: http::Request<S>) -> http::Request<S> {
        let cfg = agent.configure_request(req).timeout_global(self.limit);
        let cfg = match self.respond_by {
            // The response head must arrive in time for the response to start by write_timeout.
            Some(t) => cfg.timeout_recv_response(Some(t.saturating_duration_since(Instant::now()))),
            None => cfg,
        };
        cfg.build()
    }
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
            let status = match &e {
                ureq::Error::Timeout(_) => 504,
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => 500,
                ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => 500,
                _ => 502,
            };
            match status {
                504 => log::warn!("Upstream HTTP killed due to exec_timeout: {method} {uri}"),
                _ => log::error!("Upstream HTTP request error: {method} {uri}: {e}"),
            }
            respond_error(ex, status, duration)
        }
    }
}
