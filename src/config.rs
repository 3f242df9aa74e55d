//! Configuration from the environment (the README's Configuration table): pure parsing, built
//! once at startup and then shared read-only.
//!
//! Unparsable values keep their default, as in the Go reference, but each one produces a warning
//! line naming the variable, the bad value and the default used. Values that make the watchdog
//! unable to do its job (no fprocess, an unknown mode, `write_timeout=0`, ...) are errors: the
//! process exits 1 with a one-line reason.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::{self, parse_config_duration};
use crate::logging::LogFormat;
use crate::shell_words;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Streaming,
    Serializing,
    Http,
    Static,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Streaming => "streaming",
            Mode::Serializing => "serializing",
            Mode::Http => "http",
            Mode::Static => "static",
        }
    }
}

/// Where http mode relays requests: `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Prepended to every request URI; no trailing slash.
    pub(crate) prefix: String,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// Everything the watchdog needs to know, validated.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) mode: Mode,
    /// The function's command line as configured (for logs).
    pub(crate) fprocess: String,
    /// `fprocess` split into words; empty only in static mode.
    pub(crate) argv: Vec<String>,
    pub(crate) upstream: Option<UpstreamUrl>,
    pub(crate) port: u16,
    pub(crate) metrics_port: u16,
    /// Longest time to read a request; zero disables the limit.
    pub(crate) read_timeout: Duration,
    /// Longest time until a response starts; always > 0.
    pub(crate) write_timeout: Duration,
    /// Longest function call; `None` when disabled (0 or negative).
    pub(crate) exec_timeout: Option<Duration>,
    pub(crate) healthcheck_interval: Duration,
    /// 0: no limit.
    pub(crate) max_inflight: usize,
    /// Worker threads when `max_inflight` is 0.
    pub(crate) max_workers: usize,
    /// How long a call may wait for a `max_inflight` place; zero: 429 at once.
    pub(crate) queue_timeout: Duration,
    /// Calls that may wait for a place at once.
    pub(crate) queue_size: usize,
    /// Fork modes: the function's stderr goes into the response with its stdout.
    pub(crate) combine_output: bool,
    /// Fork modes: the function's stdout may start with a CGI header block (status, headers).
    pub(crate) cgi_response: bool,
    /// Serializing mode: the function reads the classic JSON envelope instead of the body.
    pub(crate) marshal_request: bool,
    /// Log the first bytes of every call's request / response body.
    pub(crate) read_debug: bool,
    pub(crate) write_debug: bool,
    pub(crate) content_type: String,
    pub(crate) static_path: PathBuf,
    pub(crate) suppress_lock: bool,
    pub(crate) buffer_body: bool,
    pub(crate) prefix_logs: bool,
    /// Longest function log line kept whole; `None` is unlimited.
    pub(crate) log_buffer_size: Option<usize>,
    pub(crate) log_callid: bool,
    pub(crate) ready_path: Option<String>,
    pub(crate) log_format: LogFormat,
    /// `jwt_auth=true`: calls need an OpenFaaS IAM function token (read by the `jwt` feature).
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) jwt_auth: Option<JwtAuth>,
}

/// jwt_auth's settings, and the function's identity as the environment gives it.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "jwt"), allow(dead_code))]
pub(crate) struct JwtAuth {
    /// Discovery at the port-forwarded gateway (`jwt_auth_local`).
    pub(crate) local: bool,
    pub(crate) debug: bool,
    /// `jwt_auth_discovery_url`: another discovery document than the gateway's.
    pub(crate) discovery_url: Option<String>,
    /// `OPENFAAS_NAME`.
    pub(crate) name: Option<String>,
    /// `OPENFAAS_NAMESPACE`; unset: the service account's namespace file.
    pub(crate) namespace: Option<String>,
}

impl Config {
    /// Concurrent function calls the worker pool runs.
    pub(crate) fn workers(&self) -> usize {
        if self.max_inflight > 0 { self.max_inflight } else { self.max_workers }
    }

    /// Calls that may wait for a `max_inflight` place at once.
    pub(crate) fn queued_calls(&self) -> usize {
        if self.queue_timeout.is_zero() { 0 } else { self.queue_size }
    }

    /// Startup line: how many calls run at once and what happens beyond.
    pub(crate) fn concurrency_line(&self) -> String {
        if self.max_inflight > 0 && !self.queue_timeout.is_zero() {
            format!(
                "Concurrency: max_inflight: {} calls at a time, {} more wait up to {} (queue_size, queue_timeout), 429 beyond",
                self.max_inflight,
                self.queue_size,
                duration::format_go(self.queue_timeout)
            )
        } else if self.max_inflight > 0 {
            format!("Concurrency: max_inflight: {} calls at a time, 429 beyond", self.max_inflight)
        } else {
            format!(
                "Concurrency: max_inflight: 0 (unset), max_workers: {0} calls at a time, {0} more waiting, 429 beyond",
                self.max_workers
            )
        }
    }

    /// Startup line: log format and what `/_/ready` asks.
    pub(crate) fn logging_line(&self) -> String {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let ready = self.ready_path.as_deref().unwrap_or("(none: /_/ready follows /_/health)");
        format!("Log format: {format}\tready_path: {ready}")
    }

    /// The reference's startup line: `Timeouts: read: 10s write: 1m30s hard: 2.5s health: 1m30s`.
    pub(crate) fn timeouts_line(&self) -> String {
        format!(
            "Timeouts: read: {} write: {} hard: {} health: {}",
            duration::format_go(self.read_timeout),
            duration::format_go(self.write_timeout),
            duration::format_go(self.exec_timeout.unwrap_or(Duration::ZERO)),
            duration::format_go(self.healthcheck_interval),
        )
    }
}

/// A configuration the watchdog cannot run with; the message is the whole story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Options of the classic watchdog that users bring along, and what fwatchdog does instead.
const IGNORED_CLASSIC: [(&str, &str); 2] = [
    ("cgi_headers", "request headers always reach fork-mode functions as Http_* variables"),
    ("debug_headers", "request headers are not logged"),
];

/// The log format asked for, read on its own so that a configuration error is reported in it.
pub(crate) fn log_format_of(value: Option<&str>) -> LogFormat {
    if value == Some("json") { LogFormat::Json } else { LogFormat::Text }
}

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_LOG_BUFFER: usize = 64 * 1024;
pub(crate) const DEFAULT_MAX_WORKERS: usize = 1024;
/// More threads than this is a configuration mistake rather than a workload.
const MAX_WORKERS_LIMIT: usize = 65_536;

/// The environment, read through one place that records warnings.
struct Env<'a> {
    vars: &'a HashMap<String, String>,
    warnings: Vec<String>,
}

impl Env<'_> {
    /// The first non-empty value among `names` (empty means unset, as in the reference).
    fn get(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|name| {
            let value = self.vars.get(*name)?;
            (!value.is_empty()).then_some((*name, value.as_str()))
        })
    }

    fn warn(&mut self, name: &str, value: &str, why: impl fmt::Display, default: impl fmt::Display) {
        self.warnings.push(format!(
            "Warning: invalid value for {name}: {value:?} ({why}); using the default {default}"
        ));
    }

    fn duration(&mut self, name: &'static str, default: i64) -> i64 {
        let Some((name, value)) = self.get(&[name]) else {
            return default;
        };
        match parse_config_duration(value) {
            // write_timeout's own check refuses it with the reference's message.
            Ok(nanos) if nanos < 0 && name != "write_timeout" => {
                let shown = duration::format_go(Duration::from_nanos(default.max(0) as u64));
                let value = value.to_string();
                self.warn(name, &value, "a negative duration; 0 is the value that turns it off", shown);
                default
            }
            Ok(nanos) => nanos,
            Err(e) => {
                let shown = duration::format_go(Duration::from_nanos(default.max(0) as u64));
                let value = value.to_string();
                self.warn(name, &value, e, shown);
                default
            }
        }
    }

    fn number<T: std::str::FromStr + fmt::Display + Copy>(
        &mut self,
        names: &[&'static str],
        default: T,
        valid: impl Fn(T) -> bool,
    ) -> T {
        let Some((name, value)) = self.get(names) else {
            return default;
        };
        match value.trim().parse::<T>() {
            Ok(n) if valid(n) => n,
            _ => {
                let value = value.to_string();
                self.warn(name, &value, "not a valid number here", default);
                default
            }
        }
    }

    /// A TCP port: a value that cannot be one stops the start, as a port in use does (a
    /// watchdog on another port than the one its orchestrator probes would only look dead).
    fn port(&mut self, name: &'static str, default: u16) -> Result<u16, ConfigError> {
        let Some((name, value)) = self.get(&[name]) else {
            return Ok(default);
        };
        value
            .trim()
            .parse::<u16>()
            .map_err(|_| ConfigError(format!("invalid {name} {value:?}: expected a TCP port, 0 to 65535")))
    }

    /// `true`/`1` and `false`/`0`; with `go_forms`, also Go's `strconv.ParseBool` spellings.
    /// A boolean option (default false) that only means something in some modes (`applies`):
    /// set elsewhere, it is warned about (`<name> applies to <scope>; <instead>`) and off.
    fn boolean_in(&mut self, name: &'static str, applies: bool, scope: &str, instead: &str) -> bool {
        let on = self.boolean(&[name], false, true);
        if on && !applies {
            self.warnings.push(format!("{name} applies to {scope}; {instead}"));
        }
        on && applies
    }

    fn boolean(&mut self, names: &[&'static str], default: bool, go_forms: bool) -> bool {
        let mut result = default;
        for name in names {
            let Some((name, value)) = self.get(&[name]) else {
                continue;
            };
            let parsed = match value {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                "t" | "T" | "TRUE" | "True" if go_forms => Some(true),
                "f" | "F" | "FALSE" | "False" if go_forms => Some(false),
                _ => None,
            };
            match parsed {
                // Aliases combine with "or", like the reference's getBools.
                Some(b) if names.len() > 1 => result = result || b,
                Some(b) => result = b,
                None => {
                    let value = value.to_string();
                    self.warn(name, &value, "expected true or false", default);
                }
            }
        }
        result
    }
}

/// Parses the environment. Returns the configuration and the warnings to log once logging is
/// set up.
pub(crate) fn from_env<I>(vars: I) -> Result<(Config, Vec<String>), ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let vars: HashMap<String, String> = vars.into_iter().collect();
    let mut env = Env { vars: &vars, warnings: Vec::new() };

    let jwt_auth = env.boolean(&["jwt_auth"], false, false).then(|| JwtAuth {
        local: env.boolean(&["jwt_auth_local"], false, false),
        debug: env.boolean(&["jwt_auth_debug"], false, false),
        discovery_url: env.get(&["jwt_auth_discovery_url"]).map(|(_, v)| v.to_string()),
        name: env.get(&["OPENFAAS_NAME"]).map(|(_, v)| v.to_string()),
        // Set means set, even empty, as in the Go watchdog.
        namespace: vars.get("OPENFAAS_NAMESPACE").cloned(),
    });
    if jwt_auth.is_some() && !cfg!(feature = "jwt") {
        return Err(ConfigError(
            "jwt_auth=true needs a build with JWT support: this fwatchdog was built without the `jwt` \
             feature; use the image tagged -jwt, or build with --features jwt \
             (scripts/build-static.sh --jwt)"
                .into(),
        ));
    }

    let mode = match env.get(&["mode"]).map(|(_, v)| v) {
        None | Some("streaming") => Mode::Streaming,
        Some("serializing") => Mode::Serializing,
        Some("http") => Mode::Http,
        Some("static") => Mode::Static,
        Some(other) => {
            return Err(ConfigError(format!(
                "unknown mode {other:?}: valid modes are streaming, serializing, http and static"
            )));
        }
    };

    let fprocess = env.get(&["function_process", "fprocess"]).map(|(_, v)| v.to_string());
    let argv = match &fprocess {
        Some(line) => shell_words::split(line)
            .map_err(|e| ConfigError(format!("cannot split fprocess {line:?}: {e}")))?,
        None => Vec::new(),
    };
    if argv.is_empty() && mode != Mode::Static {
        return Err(ConfigError(
            "provide a \"function_process\" or \"fprocess\" environmental variable for your \
             function (the command to run)"
                .into(),
        ));
    }

    let upstream = if mode == Mode::Http {
        let Some((name, raw)) = env.get(&["http_upstream_url", "upstream_url"]) else {
            return Err(ConfigError(
                "mode=http needs the upstream's address in \"upstream_url\" (or \
                 \"http_upstream_url\"), e.g. http://127.0.0.1:5000"
                    .into(),
            ));
        };
        Some(parse_upstream(raw).map_err(|why| ConfigError(format!("invalid {name} {raw:?}: {why}")))?)
    } else {
        None
    };

    let port = env.port("port", 8080)?;
    let metrics_port = env.port("metrics_port", 8081)?;

    let default = DEFAULT_TIMEOUT.as_nanos() as i64;
    let read_timeout = to_duration(env.duration("read_timeout", default));
    let write_nanos = env.duration("write_timeout", default);
    if write_nanos <= 0 {
        return Err(ConfigError(format!(
            "HTTP write timeout must be over 0s (write_timeout={:?})",
            vars.get("write_timeout").map(String::as_str).unwrap_or("")
        )));
    }
    let write_timeout = to_duration(write_nanos);
    let exec_nanos = env.duration("exec_timeout", default);
    let exec_timeout = (exec_nanos > 0).then(|| to_duration(exec_nanos));
    let healthcheck_interval = to_duration(env.duration("healthcheck_interval", write_nanos));

    let max_inflight = env.number(&["max_inflight"], 0usize, |n| n <= MAX_WORKERS_LIMIT);
    let max_workers =
        env.number(&["max_workers"], DEFAULT_MAX_WORKERS, |n| (1..=MAX_WORKERS_LIMIT).contains(&n));

    let mut queue_timeout = to_duration(env.duration("queue_timeout", 0).max(0));
    if !queue_timeout.is_zero() && max_inflight == 0 {
        env.warnings.push(
            "queue_timeout is set but max_inflight is not: calls beyond max_workers get 429 at once".into(),
        );
        queue_timeout = Duration::ZERO;
    }
    if queue_timeout >= write_timeout {
        let capped = write_timeout.saturating_sub(Duration::from_millis(100)).max(Duration::from_millis(1));
        env.warnings.push(format!(
            "queue_timeout {} is not shorter than write_timeout {}: a call could wait until its 504; using {}",
            duration::format_go(queue_timeout),
            duration::format_go(write_timeout),
            duration::format_go(capped)
        ));
        queue_timeout = capped;
    }
    let default_queue = (4 * max_inflight).clamp(1, MAX_WORKERS_LIMIT);
    let queue_size = env.number(&["queue_size"], default_queue, |n| (1..=MAX_WORKERS_LIMIT).contains(&n));
    if env.get(&["queue_size"]).is_some() && queue_timeout.is_zero() {
        env.warnings.push(
            "queue_size is set but there is no wait queue (it needs queue_timeout and max_inflight): ignored"
                .into(),
        );
    }

    let content_type = match env.get(&["content_type"]) {
        Some((_, v)) if valid_header_value(v) => v.to_string(),
        Some((name, v)) => {
            let v = v.to_string();
            env.warn(name, &v, "not a valid header value", "application/octet-stream");
            "application/octet-stream".to_string()
        }
        None => "application/octet-stream".to_string(),
    };

    let static_path = PathBuf::from(env.get(&["static_path"]).map(|(_, v)| v).unwrap_or("/home/app/public"));
    if mode == Mode::Static && !static_path.is_dir() {
        return Err(ConfigError(format!(
            "static_path {} is not a directory: mode=static serves files from it",
            static_path.display()
        )));
    }

    let suppress_lock = env.boolean(&["suppress_lock"], false, false);
    let buffer_body = env.boolean(&["http_buffer_req_body", "buffer_http"], false, false);
    let prefix_logs = env.boolean(&["prefix_logs"], true, true);
    let log_callid = env.boolean(&["log_callid", "log_call_id"], false, false);

    let log_buffer_size = match env.get(&["log_buffer_size"]) {
        None => Some(DEFAULT_LOG_BUFFER),
        Some((_, "-1")) => None,
        Some((name, v)) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                let v = v.to_string();
                env.warn(name, &v, "expected a positive size in bytes or -1", DEFAULT_LOG_BUFFER);
                Some(DEFAULT_LOG_BUFFER)
            }
        },
    };

    let ready_path = env
        .get(&["ready_path"])
        .map(|(_, v)| if v.starts_with('/') { v.to_string() } else { format!("/{v}") });
    if let Some(path) = ready_path.as_deref().filter(|p| !crate::http_server::valid_target(p)) {
        return Err(ConfigError(format!("invalid ready_path {path:?}: not a valid request path")));
    }

    let log_format = match env.get(&["log_format"]) {
        None | Some((_, "text")) => LogFormat::Text,
        Some((_, "json")) => LogFormat::Json,
        Some((name, v)) => {
            let v = v.to_string();
            env.warn(name, &v, "expected text or json", "text");
            LogFormat::Text
        }
    };

    let fork_mode = matches!(mode, Mode::Streaming | Mode::Serializing);
    let fork_scope = "the streaming and serializing modes";
    let (combine_instead, cgi_instead) = if mode == Mode::Http {
        ("the upstream's stderr is logged", "the upstream sets its own status and headers; ignored")
    } else {
        ("ignored", "static mode answers with the files' own status and type; ignored")
    };
    let combine_output = env.boolean_in("combine_output", fork_mode, fork_scope, combine_instead);
    let cgi_response = env.boolean_in("cgi_response", fork_mode, fork_scope, cgi_instead);
    let marshal_request =
        env.boolean_in("marshal_request", mode == Mode::Serializing, "mode=serializing only", "ignored");

    let read_debug = env.boolean(&["read_debug"], false, true);
    let write_debug = env.boolean(&["write_debug"], false, true);

    for (name, what) in IGNORED_CLASSIC {
        if let Some((name, value)) = env.get(&[name]) {
            env.warnings
                .push(format!("{name}={value:?} is a classic-watchdog option fwatchdog ignores: {what}"));
        }
    }

    let config = Config {
        mode,
        fprocess: fprocess.unwrap_or_default(),
        argv,
        upstream,
        port,
        metrics_port,
        read_timeout,
        write_timeout,
        exec_timeout,
        healthcheck_interval,
        max_inflight,
        max_workers,
        queue_timeout,
        queue_size,
        combine_output,
        cgi_response,
        marshal_request,
        read_debug,
        write_debug,
        content_type,
        static_path,
        suppress_lock,
        buffer_body,
        prefix_logs,
        log_buffer_size,
        log_callid,
        ready_path,
        log_format,
        jwt_auth,
    };
    Ok((config, env.warnings))
}

fn to_duration(nanos: i64) -> Duration {
    Duration::from_nanos(nanos.max(0) as u64)
}

/// Visible ASCII, spaces and tabs: what we can put on a header line verbatim.
pub(crate) fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn parse_upstream(raw: &str) -> Result<UpstreamUrl, String> {
    let rest = if let Some(rest) = raw.strip_prefix("http://") {
        rest
    } else if raw.starts_with("https://") {
        return Err("https is not supported: the upstream is a local plain-HTTP server".into());
    } else {
        return Err("expected http://host:port".into());
    };
    let (authority, prefix) = match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(_) => return Err("a query or fragment is not allowed".into()),
        None => (rest, ""),
    };
    if prefix.contains(['?', '#']) {
        return Err("a query or fragment is not allowed".into());
    }
    if authority.contains('@') {
        return Err("user info is not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or("unbalanced [ in the host")?;
        let port = &v6[end + 1..];
        (&authority[..end + 2], port.strip_prefix(':').unwrap_or(port))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = if port.is_empty() {
        80
    } else {
        port.parse::<u16>().ok().filter(|p| *p > 0).ok_or("invalid port")?
    };
    Ok(UpstreamUrl { host: host.to_string(), port, prefix: prefix.trim_end_matches('/').to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn config(pairs: &[(&str, &str)]) -> Config {
        parse(pairs).unwrap_or_else(|e| panic!("{pairs:?}: {e}")).0
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&[("fprocess", "cat")]);
        assert_eq!(c.mode, Mode::Streaming);
        assert_eq!(c.argv, ["cat"]);
        assert_eq!((c.port, c.metrics_port), (8080, 8081));
        assert_eq!(c.read_timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.write_timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.exec_timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(c.healthcheck_interval, DEFAULT_TIMEOUT);
        assert_eq!(c.content_type, "application/octet-stream");
        assert_eq!(c.static_path, PathBuf::from("/home/app/public"));
        assert_eq!(c.log_buffer_size, Some(65536));
        assert!(c.prefix_logs && !c.suppress_lock && !c.buffer_body && !c.log_callid);
        assert_eq!((c.max_inflight, c.workers()), (0, DEFAULT_MAX_WORKERS));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn aliases_and_precedence() {
        let c = config(&[("fprocess", "a"), ("function_process", "b c")]);
        assert_eq!(c.argv, ["b", "c"]);
        let c = config(&[("fprocess", "a"), ("function_process", "")]);
        assert_eq!(c.argv, ["a"], "an empty function_process counts as unset");
        let c = config(&[
            ("mode", "http"),
            ("fprocess", "srv"),
            ("upstream_url", "http://127.0.0.1:1"),
            ("http_upstream_url", "http://127.0.0.1:5000/base/"),
        ]);
        let up = c.upstream.expect("upstream");
        assert_eq!((up.host.as_str(), up.port, up.prefix.as_str()), ("127.0.0.1", 5000, "/base"));
        assert!(config(&[("fprocess", "a"), ("buffer_http", "true")]).buffer_body);
        assert!(config(&[("fprocess", "a"), ("http_buffer_req_body", "1")]).buffer_body);
        assert!(config(&[("fprocess", "a"), ("log_call_id", "true")]).log_callid);
    }

    #[test]
    fn healthcheck_interval_defaults_to_write_timeout() {
        let c = config(&[("fprocess", "a"), ("write_timeout", "1m30s")]);
        assert_eq!(c.healthcheck_interval, Duration::from_secs(90));
        let c = config(&[("fprocess", "a"), ("healthcheck_interval", "0")]);
        assert_eq!(c.healthcheck_interval, Duration::ZERO);
    }

    #[test]
    fn timeouts_line_matches_the_reference() {
        let c = config(&[
            ("fprocess", "cat"),
            ("read_timeout", "10"),
            ("write_timeout", "1m30s"),
            ("exec_timeout", "2500ms"),
        ]);
        assert_eq!(c.timeouts_line(), "Timeouts: read: 10s write: 1m30s hard: 2.5s health: 1m30s");
    }

    #[test]
    fn unparsable_values_keep_defaults_with_one_warning_each() {
        let (c, warnings) = parse(&[
            ("fprocess", "cat"),
            ("exec_timeout", "5x"),
            ("read_timeout", "-1"),
            ("metrics_port", ""),
            ("max_inflight", "-3"),
            ("suppress_lock", "yes"),
            ("log_buffer_size", "0"),
            ("log_format", "xml"),
        ])
        .expect("config");
        assert_eq!(c.exec_timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(c.read_timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.metrics_port, 8081);
        assert_eq!(c.max_inflight, 0);
        assert!(!c.suppress_lock);
        assert_eq!(c.log_buffer_size, Some(DEFAULT_LOG_BUFFER));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(warnings.len(), 6, "{warnings:#?}");
        let exec = warnings.iter().find(|w| w.contains("exec_timeout")).expect("exec_timeout warning");
        assert!(exec.contains("\"5x\"") && exec.contains("30s"), "{exec}");
    }

    #[test]
    fn negative_durations_keep_the_default_with_a_warning_never_turn_a_limit_off() {
        for (name, value) in [("exec_timeout", "-5s"), ("queue_timeout", "-1s"), ("read_timeout", "-1")] {
            let (c, warnings) =
                parse(&[("fprocess", "cat"), ("max_inflight", "2"), (name, value)]).expect("config");
            assert_eq!(warnings.len(), 1, "{name}={value}: {warnings:#?}");
            assert!(warnings[0].contains(name) && warnings[0].contains("negative"), "{}", warnings[0]);
            assert!(!warnings[0].contains("missing unit"), "{}", warnings[0]);
            let fresh = config(&[("fprocess", "cat"), ("max_inflight", "2")]);
            assert_eq!(
                (c.exec_timeout, c.queue_timeout, c.read_timeout),
                (fresh.exec_timeout, fresh.queue_timeout, fresh.read_timeout),
                "{name}={value}"
            );
        }
        assert!(parse(&[("fprocess", "cat"), ("write_timeout", "-1s")]).is_err());
    }

    #[test]
    fn impossible_ports_stop_the_start() {
        for (name, value) in [("port", "99999"), ("port", "http"), ("metrics_port", "-1"), ("port", "65536")]
        {
            let e = parse(&[("fprocess", "cat"), (name, value)]).expect_err(value).0;
            assert!(e.contains(name) && e.contains(value), "{e}");
        }
        assert_eq!(config(&[("fprocess", "cat"), ("port", "65535")]).port, 65535);
    }

    #[test]
    fn queue_size_without_a_queue_is_warned_about() {
        let (_, warnings) = parse(&[("fprocess", "cat"), ("queue_size", "5")]).expect("config");
        assert!(warnings.iter().any(|w| w.contains("queue_size")), "{warnings:#?}");
        let (_, warnings) = parse(&[
            ("fprocess", "cat"),
            ("queue_size", "5"),
            ("queue_timeout", "1s"),
            ("max_inflight", "1"),
        ])
        .expect("config");
        assert!(warnings.is_empty(), "{warnings:#?}");
    }

    #[test]
    fn exec_timeout_zero_disables_and_log_buffer_minus_one_is_unlimited() {
        let c = config(&[("fprocess", "a"), ("exec_timeout", "0"), ("log_buffer_size", "-1")]);
        assert_eq!(c.exec_timeout, None);
        assert_eq!(c.log_buffer_size, None);
    }

    #[test]
    fn prefix_logs_takes_go_parsebool_forms() {
        for (v, want) in [("false", false), ("F", false), ("FALSE", false), ("0", false), ("True", true)] {
            assert_eq!(config(&[("fprocess", "a"), ("prefix_logs", v)]).prefix_logs, want, "{v}");
        }
    }

    #[test]
    fn fatal_configurations_name_the_problem() {
        let err = |pairs: &[(&str, &str)]| parse(pairs).expect_err("should fail").0;
        let e = err(&[]);
        assert!(e.contains("fprocess") && e.contains("function_process"), "{e}");
        let e = err(&[("fprocess", "cat"), ("write_timeout", "0")]);
        assert!(e.to_lowercase().contains("write timeout"), "{e}");
        let e = err(&[("fprocess", "cat"), ("mode", "afterburn")]);
        assert!(e.contains("streaming, serializing, http and static"), "{e}");
        let e = err(&[("fprocess", "srv"), ("mode", "http")]);
        assert!(e.contains("upstream_url"), "{e}");
        let e = err(&[("fprocess", "srv"), ("mode", "http"), ("upstream_url", "https://x")]);
        assert!(e.contains("https"), "{e}");
        let e = err(&[("fprocess", "srv"), ("mode", "http"), ("upstream_url", "http://x:99999")]);
        assert!(e.contains("port"), "{e}");
        let e = err(&[("fprocess", "sh -c 'echo")]);
        assert!(e.contains("unterminated"), "{e}");
        if !cfg!(feature = "jwt") {
            let e = err(&[("fprocess", "cat"), ("jwt_auth", "true")]);
            assert!(e.contains("without the `jwt` feature"), "{e}");
        }
        let e = err(&[("mode", "static"), ("static_path", "/definitely/not/here")]);
        assert!(e.contains("static_path"), "{e}");
        let e = err(&[("fprocess", "cat"), ("ready_path", "/bad%zz")]);
        assert!(e.contains("ready_path"), "{e}");
    }

    #[test]
    fn static_mode_needs_no_fprocess() {
        let c = config(&[("mode", "static"), ("static_path", "/")]);
        assert!(c.argv.is_empty());
    }

    #[test]
    fn upstream_urls() {
        let ok = |s: &str| parse_upstream(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("http://localhost").port, 80);
        assert_eq!(ok("http://[::1]:5000").host, "[::1]");
        assert_eq!(ok("http://127.0.0.1:5000/").prefix, "");
        assert!(parse_upstream("127.0.0.1:5000").is_err());
        assert!(parse_upstream("http://:5000").is_err());
        assert!(parse_upstream("http://h:5000/?q=1").is_err());
    }
}
