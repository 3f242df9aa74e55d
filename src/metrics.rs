//! Prometheus metrics, written by hand in text format 0.0.4, and the small server
//! that exposes them on `metrics_port`.
//!
//! The hot path is one short mutex-protected map update per function call; exposition reads
//! /proc only when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::limiter::Limiter;

/// Prometheus' default buckets (`prometheus.DefBuckets`).
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BUCKET_LABELS: [&str; 11] =
    ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    /// Non-cumulative counts per bucket; cumulated when rendered.
    buckets: [u64; 11],
}

impl Series {
    fn record(&mut self, duration: Duration) {
        let secs = duration.as_secs_f64();
        self.count += 1;
        self.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
    }

    /// The histogram's samples; `labels` is empty or `a="b",...,` (with the trailing comma).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative += self.buckets[i];
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let plain = labels.trim_end_matches(',');
        let braces = if plain.is_empty() { String::new() } else { format!("{{{plain}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

pub(crate) struct Metrics {
    /// (method label, status code) → series; ordered so the exposition is stable.
    series: Mutex<BTreeMap<(&'static str, u16), Series>>,
    /// Waits for a `max_inflight` place of the calls that got one (with `queue_timeout`).
    queue_wait: Mutex<Series>,
    limiter: Arc<Limiter>,
}

/// The reference's method label: lower case for the standard methods, `unknown` otherwise, so
/// clients cannot create unbounded label values.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "get",
        "HEAD" => "head",
        "POST" => "post",
        "PUT" => "put",
        "DELETE" => "delete",
        "CONNECT" => "connect",
        "OPTIONS" => "options",
        "TRACE" => "trace",
        "PATCH" => "patch",
        _ => "unknown",
    }
}

impl Metrics {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Metrics {
        Metrics { series: Mutex::new(BTreeMap::new()), queue_wait: Mutex::new(Series::default()), limiter }
    }

    /// Records one finished function call.
    pub(crate) fn observe(&self, method: &str, status: u16, duration: Duration) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.entry((method_label(method), status)).or_default().record(duration);
    }

    /// Records how long an admitted call waited in the queue.
    pub(crate) fn observe_queue_wait(&self, waited: Duration) {
        self.queue_wait.lock().unwrap_or_else(PoisonError::into_inner).record(waited);
    }

    /// The queue's series, when there is a queue.
    fn render_queue(&self, out: &mut String) {
        if !self.limiter.queues() {
            return;
        }
        out.push_str("# HELP fwatchdog_queue_length Calls waiting for a max_inflight place.\n");
        out.push_str("# TYPE fwatchdog_queue_length gauge\n");
        let _ = writeln!(out, "fwatchdog_queue_length {}", self.limiter.waiting());
        out.push_str(
            "# HELP fwatchdog_queue_wait_seconds Seconds admitted calls waited for a max_inflight place.\n",
        );
        out.push_str("# TYPE fwatchdog_queue_wait_seconds histogram\n");
        let s = self.queue_wait.lock().unwrap_or_else(PoisonError::into_inner);
        s.render(out, "fwatchdog_queue_wait_seconds", "");
    }

    /// The whole exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        {
            let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            out.push_str("# HELP http_request_duration_seconds Seconds spent serving HTTP requests.\n");
            out.push_str("# TYPE http_request_duration_seconds histogram\n");
            for ((method, code), s) in series.iter() {
                let labels = format!("code=\"{code}\",method=\"{method}\",");
                s.render(&mut out, "http_request_duration_seconds", &labels);
            }
            out.push_str("# HELP http_requests_total The total number of HTTP requests handled.\n");
            out.push_str("# TYPE http_requests_total counter\n");
            for ((method, code), s) in series.iter() {
                let _ =
                    writeln!(out, "http_requests_total{{code=\"{code}\",method=\"{method}\"}} {}", s.count);
            }
        }
        out.push_str("# HELP http_requests_in_flight The number of function calls being served.\n");
        out.push_str("# TYPE http_requests_in_flight gauge\n");
        let _ = writeln!(out, "http_requests_in_flight {}", self.limiter.in_flight());
        self.render_queue(&mut out);
        out.push_str(
            "# HELP fwatchdog_refused_heads_total Request heads answered with an error before they reached the HTTP parser, by reason.\n",
        );
        out.push_str("# TYPE fwatchdog_refused_heads_total counter\n");
        for (reason, n) in crate::http_server::refused_heads() {
            let _ = writeln!(out, "fwatchdog_refused_heads_total{{reason=\"{reason}\"}} {n}");
        }
        process_metrics(&mut out);
        out
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> f64 {
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as f64 } else { 4096.0 }
}

/// What client_golang's process collector reports, from /proc/self.
fn process_metrics(out: &mut String) {
    let mut gauge = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may itself contain spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_ascii_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        // Indices are the stat(5) field numbers minus 3.
        if let (Some(utime), Some(stime)) = (field(11), field(12)) {
            gauge(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (utime + stime) / clock_ticks(),
            );
        }
        if let Some(vsize) = field(20) {
            gauge("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsize);
        }
        if let Some(rss) = field(21) {
            gauge(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss * page_size(),
            );
        }
        if let (Some(start), Some(boot)) = (field(19), boot_time()) {
            gauge(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + start / clock_ticks(),
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge("process_open_fds", "gauge", "Number of open file descriptors.", fds.count() as f64);
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: limit is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        gauge("process_max_fds", "gauge", "Maximum number of open file descriptors.", limit.rlim_cur as f64);
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// Serves `GET /metrics` on its own port, one connection at a time (scrapes are rare and
/// small). A port that cannot be bound is logged, not fatal, as in Go's watchdog.
pub(crate) fn serve(port: u16, metrics: Arc<Metrics>) -> Option<u16> {
    // Dual stack where IPv6 exists, like Go's ":8081"; SocketAddr, not a host string, so no
    // resolver is linked in.
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
    let listener = match TcpListener::bind(v6).or_else(|_| TcpListener::bind(v4)) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "Metrics server cannot listen on port {port}: {e}; serving functions without metrics"
            );
            return None;
        }
    };
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let spawned = crate::threads::spawn("fw-metrics", move || {
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => answer(stream, &metrics),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::error!("Metrics server accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the metrics server: {e}");
        return None;
    }
    log::info!("Metrics listening on port: {bound}");
    Some(bound)
}

fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, ctype, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        (b"GET" | b"HEAD", _) => {
            ("404 Not Found", "text/plain; charset=utf-8", "404 page not found\n".into())
        }
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "405 method not allowed\n".into()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != b"HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_inf_equal_to_count() {
        let m = Metrics::new(Limiter::new(0, 1024, Duration::ZERO, 0));
        m.observe("POST", 200, Duration::from_millis(300));
        m.observe("POST", 200, Duration::from_millis(3));
        m.observe("POST", 200, Duration::from_secs(30));
        m.observe("BREW", 418, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"0.25\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"0.5\"} 2\n"
            )
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"10\"} 2\n")
        );
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"+Inf\"} 3\n"
            )
        );
        assert!(text.contains("http_request_duration_seconds_count{code=\"200\",method=\"post\"} 3\n"));
        assert!(text.contains("http_requests_total{code=\"418\",method=\"unknown\"} 1\n"));
        assert!(text.contains("http_requests_in_flight 0\n"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
