//! Everything the watchdog writes to its own stdout and stderr.
//!
//! Three kinds of lines, each rendered in one place:
//! - the watchdog's own messages (`log::info!` and friends, through env_logger),
//! - the one line per function call ([`request_line`]),
//! - the function's output lines ([`FunctionLog`]), split when longer than `log_buffer_size`.
//!
//! Text is byte-compatible with the Go reference (`2026/11/25 21:12:26 message`); with
//! `log_format=json` every line is one JSON object instead.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::clock;
use crate::json;

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// Installs the logger. Dependencies stay quiet unless something is really wrong: tiny_http
/// logs every accept error, and our accept threads end on purpose (see `listener`).
pub(crate) fn init(fmt: LogFormat) {
    let _ = FORMAT.set(fmt);
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .filter_module("fwatchdog", log::LevelFilter::Info)
        .filter_module("tiny_http", log::LevelFilter::Off)
        .format(|buf, record| {
            let line = render(record.level(), &record.args().to_string(), &[]);
            buf.write_all(line.as_bytes())
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}

thread_local! {
    static PANIC_EXPECTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, whose panic is an expected outcome handled by the caller: the panic hook then
/// leaves it out of the log.
pub(crate) fn expecting_panic<R>(f: impl FnOnce() -> R) -> R {
    PANIC_EXPECTED.with(|p| p.set(true));
    let result = f();
    PANIC_EXPECTED.with(|p| p.set(false));
    result
}

/// Whether the current thread is inside `expecting_panic`.
pub(crate) fn panic_expected() -> bool {
    PANIC_EXPECTED.with(|p| p.get())
}

/// A structured value for JSON log fields.
pub(crate) enum Field<'a> {
    Str(&'a str),
    Num(f64),
    Int(u64),
}

/// One rendered line, newline included.
fn render(level: log::Level, msg: &str, fields: &[(&str, Field<'_>)]) -> String {
    match format() {
        LogFormat::Text => format!("{} {}\n", clock::log_stamp(), msg),
        LogFormat::Json => {
            let mut out = String::with_capacity(96 + msg.len());
            out.push_str("{\"time\":");
            json::push_str(&mut out, &clock::rfc3339_now());
            out.push_str(",\"level\":");
            json::push_str(&mut out, &level.as_str().to_ascii_lowercase());
            out.push_str(",\"msg\":");
            json::push_str(&mut out, msg);
            for (key, value) in fields {
                out.push(',');
                json::push_str(&mut out, key);
                out.push(':');
                match value {
                    Field::Str(s) => json::push_str(&mut out, s),
                    Field::Num(n) if n.is_finite() => {
                        let _ = write!(out, "{n}");
                    }
                    Field::Num(_) => out.push_str("null"),
                    Field::Int(n) => {
                        let _ = write!(out, "{n}");
                    }
                }
            }
            out.push_str("}\n");
            out
        }
    }
}

fn write_stderr(line: &[u8]) {
    let _ = std::io::stderr().lock().write_all(line);
}

/// `read_debug`/`write_debug`: the first `cap` bytes of a request or response body, logged in
/// one line (escaped) when the body ends or the call is over, whichever comes first.
pub(crate) struct BodyLog {
    what: &'static str,
    call: String,
    cap: usize,
    kept: Vec<u8>,
    total: u64,
}

impl BodyLog {
    pub(crate) fn new(what: &'static str, call: String, cap: usize) -> BodyLog {
        BodyLog { what, call, cap, kept: Vec::new(), total: 0 }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl Drop for BodyLog {
    fn drop(&mut self) {
        let shown = if (self.kept.len() as u64) < self.total {
            format!(" (the first {} shown)", self.kept.len())
        } else {
            String::new()
        };
        log::info!(
            "{} {} body, {} bytes{shown}: {}",
            self.call,
            self.what,
            self.total,
            self.kept.escape_ascii()
        );
    }
}

/// How a call ended, for its log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) status: u16,
    /// Response body bytes sent.
    pub(crate) bytes: u64,
}

/// A call's log line, prepared when the call starts and written when it ends (for a websocket,
/// when its session ends, on another thread).
pub(crate) struct CallLog {
    pub(crate) method: String,
    pub(crate) uri: String,
    /// `log_callid`: the call's `X-Call-Id` (`none` without one); `None`: not shown.
    pub(crate) call_id: Option<String>,
    pub(crate) received: Instant,
    /// No line (`User-Agent: kube-probe/*`).
    pub(crate) quiet: bool,
    /// The status's text, where it is written (`200 OK`, as the Go watchdog does in http mode).
    pub(crate) status_text: Option<fn(u16) -> &'static str>,
}

impl CallLog {
    pub(crate) fn write(&self, outcome: Outcome) {
        if self.quiet {
            return;
        }
        request_line(&CallRecord {
            method: &self.method,
            uri: &self.uri,
            status: outcome.status,
            bytes: outcome.bytes,
            duration: self.received.elapsed(),
            call_id: self.call_id.as_deref(),
            reason: self.status_text.map_or("", |text| text(outcome.status)),
        });
    }
}

struct CallRecord<'a> {
    method: &'a str,
    uri: &'a str,
    status: u16,
    bytes: u64,
    duration: Duration,
    call_id: Option<&'a str>,
    /// Written after the status, if not empty.
    reason: &'a str,
}

/// The one line per function call: `POST /path - 200 - ContentLength: 13B (0.0049s)` (http
/// mode: `- 200 OK -`). The size is the body bytes sent, where the Go watchdog writes the
/// upstream's declared length (`-1B` when it streams).
fn request_line(rec: &CallRecord<'_>) {
    let reason = rec.reason;
    let status = if reason.is_empty() { rec.status.to_string() } else { format!("{} {reason}", rec.status) };
    let mut msg = format!(
        "{} {} - {status} - ContentLength: {} ({:.4}s)",
        rec.method,
        rec.uri,
        human_size(rec.bytes as f64),
        rec.duration.as_secs_f64()
    );
    if let Some(id) = rec.call_id {
        let _ = write!(msg, " [{id}]");
    }
    let path = rec.uri.split('?').next().unwrap_or(rec.uri);
    let fields = [
        ("method", Field::Str(rec.method)),
        ("path", Field::Str(path)),
        ("uri", Field::Str(rec.uri)),
        ("status", Field::Int(u64::from(rec.status))),
        ("bytes", Field::Int(rec.bytes)),
        ("duration_seconds", Field::Num(rec.duration.as_secs_f64())),
        ("call_id", Field::Str(rec.call_id.unwrap_or(""))),
    ];
    let n = if rec.call_id.is_some() { fields.len() } else { fields.len() - 1 };
    // Text lines look the same at every level; JSON readers can filter timeouts and failures.
    let level = match rec.status {
        408 | 504 => log::Level::Warn,
        500.. => log::Level::Error,
        _ => log::Level::Info,
    };
    write_stderr(render(level, &msg, &fields[..n]).as_bytes());
}

/// go-units `HumanSize`: decimal units, `%.4g`: `13B`, `1.024kB`, `1.5MB`.
pub(crate) fn human_size(mut size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g4(size), UNITS[i])
}

/// Go's `%.4g` for the non-negative values human_size produces.
fn format_g4(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    let sci = format!("{v:.3e}");
    let exp: i32 = sci.split('e').nth(1).and_then(|e| e.parse().ok()).unwrap_or(0);
    if !(-4..4).contains(&exp) {
        let (mantissa, _) = sci.split_once('e').unwrap_or((&sci, ""));
        let mantissa = trim_fraction(mantissa);
        return format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let fixed = format!("{:.*}", (3 - exp) as usize, v);
    trim_fraction(&fixed).to_string()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

/// Which of the watchdog's own streams a function line goes to, and its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts a byte stream into lines of at most `limit` bytes (no limit: `None`).
///
/// A longer line comes out as consecutive pieces of `limit` bytes, so one endless line can
/// neither exhaust memory nor stall the function (the reference gives up with "token too long"
/// and stops reading). A trailing `\r` is dropped, as Go's `bufio.ScanLines` does.
pub(crate) struct LineSplitter {
    limit: Option<usize>,
    line: Vec<u8>,
    /// The last piece was cut at the limit; a newline right after it ends that piece, not an
    /// empty line.
    cut: bool,
}

impl LineSplitter {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        LineSplitter { limit, line: Vec::new(), cut: false }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.cut && self.line.is_empty() && data[0] == b'\n' {
                data = &data[1..];
                self.cut = false;
                continue;
            }
            self.cut = false;
            let room = self.limit.map_or(usize::MAX, |l| l - self.line.len());
            let take = data.len().min(room);
            match data[..take].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    emit(&self.line);
                    self.line.clear();
                }
                None => {
                    self.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.limit.is_some_and(|l| self.line.len() >= l) {
                        emit(&self.line);
                        self.line.clear();
                        self.cut = true;
                    }
                }
            }
        }
    }

    /// The last line, even without a newline.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.line.is_empty() {
            emit(&self.line);
            self.line.clear();
        }
    }
}

/// Relays one output stream of a function to the watchdog's own stream of the same name.
pub(crate) struct FunctionLog {
    stream: Stream,
    prefix: bool,
    lines: LineSplitter,
}

impl FunctionLog {
    pub(crate) fn new(stream: Stream, prefix: bool, limit: Option<usize>) -> Self {
        FunctionLog { stream, prefix, lines: LineSplitter::new(limit) }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        let (stream, prefix) = (self.stream, self.prefix);
        self.lines.feed(data, |line| write_function_line(stream, prefix, line));
    }

    pub(crate) fn finish(&mut self) {
        let (stream, prefix) = (self.stream, self.prefix);
        self.lines.finish(|line| write_function_line(stream, prefix, line));
    }
}

fn write_function_line(stream: Stream, prefix: bool, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let rendered = match format() {
        LogFormat::Json => match json::object_keys(&text) {
            Some(keys) => own_json_line(text.trim(), &keys, stream),
            None => render(log::Level::Info, &text, &[("stream", Field::Str(stream.name()))]),
        },
        LogFormat::Text if prefix => format!("{} {}: {}\n", clock::log_stamp(), stream.name(), text),
        LogFormat::Text => format!("{text}\n"),
    };
    match stream {
        Stream::Stdout => {
            let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
        }
        Stream::Stderr => write_stderr(rendered.as_bytes()),
    }
}

/// A function that already logs JSON objects keeps its own structure; `time` and `stream` are
/// added in front when it has no such keys, so every line can be ordered and attributed.
fn own_json_line(object: &str, keys: &[&str], stream: Stream) -> String {
    let mut out = String::with_capacity(object.len() + 64);
    out.push('{');
    if !keys.contains(&"time") {
        out.push_str("\"time\":");
        json::push_str(&mut out, &clock::rfc3339_now());
        out.push(',');
    }
    if !keys.contains(&"stream") {
        out.push_str("\"stream\":");
        json::push_str(&mut out, stream.name());
        out.push(',');
    }
    let rest = &object[1..];
    if keys.is_empty() && out.ends_with(',') {
        out.pop();
    }
    out.push_str(rest);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_json_lines_gain_time_and_stream_only_when_missing() {
        let line = own_json_line(r#"{"msg":"x"}"#, &["msg"], Stream::Stderr);
        assert!(
            line.starts_with(r#"{"time":""#) && line.ends_with(",\"stream\":\"stderr\",\"msg\":\"x\"}\n"),
            "{line}"
        );
        let kept = r#"{"time":"t","stream":"s","a":1}"#;
        assert_eq!(own_json_line(kept, &["time", "stream", "a"], Stream::Stdout), format!("{kept}\n"));
        let empty = own_json_line("{}", &[], Stream::Stdout);
        assert!(empty.ends_with(",\"stream\":\"stdout\"}\n") && json::is_object(&empty), "{empty}");
    }

    #[test]
    fn human_sizes_match_go_units() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0B"),
            (13.0, "13B"),
            (999.0, "999B"),
            (1000.0, "1kB"),
            (1024.0, "1.024kB"),
            (1536.0, "1.536kB"),
            (1_048_576.0, "1.049MB"),
            (999_999.0, "1000kB"),
            (12_345_678_901.0, "12.35GB"),
        ];
        for (size, want) in cases {
            assert_eq!(human_size(*size), *want, "human_size({size})");
        }
    }

    fn pieces(limit: Option<usize>, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = LineSplitter::new(limit);
        for chunk in chunks {
            lines.feed(chunk, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        lines.finish(|l| out.push(String::from_utf8_lossy(l).into_owned()));
        out
    }

    #[test]
    fn long_lines_are_split_into_pieces_of_the_limit() {
        assert_eq!(
            pieces(Some(4), &[b"abcdefghij\nx", b"z\r\n", b"tail"]),
            ["abcd", "efgh", "ij", "xz", "tail"]
        );
        assert_eq!(pieces(None, &[b"abcdefghij\n"]), ["abcdefghij"]);
        assert_eq!(pieces(Some(3), &[b"abc", b"\n\n"]), ["abc", ""], "a line of exactly the limit");
        assert_eq!(pieces(Some(3), &[b"abcdef\nx"]), ["abc", "def", "x"]);
        assert_eq!(pieces(Some(64), &[b"\n", b"a\n"]), ["", "a"], "empty lines are lines");
    }
}
