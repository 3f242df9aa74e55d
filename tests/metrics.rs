//! Prometheus metrics, checked by hand, by promtool and by a real Prometheus server.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn scrape(wd: &Watchdog) -> String {
    let port = wd.metrics_port.expect("metrics port in the log");
    let r = request(port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    r.text()
}

/// The value of the sample whose line starts with `series` (name and labels, as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn calls_are_counted_by_code_and_method_but_health_checks_are_not() {
    let dir = TempDir::new("count");
    let f = dir.script("f", "cat; [ \"$Http_Path\" = /fail ] && exit 1; exit 0");
    let wd = Watchdog::start(&[("fprocess", &f), ("mode", "serializing")]);
    wd.post("/", b"x");
    wd.post("/", b"x");
    wd.get("/");
    wd.post("/fail", b"x");
    wd.request("BREW", "/", &[], b"");
    wd.get("/_/health");
    wd.get("/_/ready");
    let text = scrape(&wd);
    assert_eq!(value(&text, r#"http_requests_total{code="200",method="post"}"#), Some(2.0), "{text}");
    assert_eq!(value(&text, r#"http_requests_total{code="200",method="get"}"#), Some(1.0));
    assert_eq!(value(&text, r#"http_requests_total{code="500",method="post"}"#), Some(1.0));
    assert_eq!(value(&text, r#"http_requests_total{code="200",method="unknown"}"#), Some(1.0));
    assert_eq!(text.lines().filter(|l| l.starts_with("http_requests_total{")).count(), 4, "{text}");
    assert_eq!(value(&text, r#"http_request_duration_seconds_count{code="200",method="post"}"#), Some(2.0));
    assert_eq!(
        value(&text, r#"http_request_duration_seconds_bucket{code="200",method="post",le="+Inf"}"#),
        Some(2.0)
    );
    assert_eq!(value(&text, "http_requests_in_flight"), Some(0.0));
}

#[test]
fn refusals_at_max_inflight_are_counted_and_the_gauge_follows_calls() {
    let dir = TempDir::new("gauge");
    let f = dir.script("f", "sleep 2; echo done");
    let mut wd = Watchdog::start(&[("fprocess", &f), ("max_inflight", "2")]);
    let port = wd.port;
    let calls: Vec<_> =
        (0..2).map(|_| std::thread::spawn(move || request(port, "POST", "/", &[], b""))).collect();
    wd.wait_until("two calls in flight", Duration::from_secs(10), |wd| {
        value(&scrape(wd), "http_requests_in_flight") == Some(2.0)
    });
    assert_eq!(wd.post("/", b"").status, 429);
    for c in calls {
        assert_eq!(c.join().expect("call").status, 200);
    }
    let text = scrape(&wd);
    assert_eq!(value(&text, "http_requests_in_flight"), Some(0.0));
    assert_eq!(value(&text, r#"http_requests_total{code="429",method="post"}"#), Some(1.0), "{text}");
}

#[test]
fn process_metrics_are_read_from_proc() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let text = scrape(&wd);
    let rss = value(&text, "process_resident_memory_bytes").expect("rss");
    let status = std::fs::read_to_string(format!("/proc/{}/status", wd.pid())).expect("status");
    let vm_rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    let vm_rss: f64 = vm_rss.trim().trim_end_matches(" kB").trim().parse::<f64>().expect("kB") * 1024.0;
    assert!(rss > vm_rss / 2.0 && rss < vm_rss * 2.0, "rss {rss} vs VmRSS {vm_rss}");
    let fds = value(&text, "process_open_fds").expect("fds");
    assert!((3.0..200.0).contains(&fds), "{fds}");
    assert!(value(&text, "process_max_fds").expect("max fds") >= fds);
    let start = value(&text, "process_start_time_seconds").expect("start");
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(start > now - 120.0 && start <= now + 1.0, "{start} vs {now}");
    assert!(value(&text, "process_cpu_seconds_total").is_some());
}

#[test]
fn a_busy_metrics_port_is_logged_and_functions_are_still_served() {
    let taken = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("metrics_port", &port)]);
    wd.wait_log(&format!("Metrics server cannot listen on port {port}"), STARTUP);
    assert_eq!(wd.post("/", b"served").text(), "served");
    assert_eq!(wd.get("/_/health").status, 200);
}

#[test]
fn promtool_accepts_the_exposition() {
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        skip("promtool is not installed (Debian package prometheus; .ci/run installs it)");
        return;
    };
    assert!(out.status.success());
    let with_queue = [("fprocess", "cat"), ("max_inflight", "2"), ("queue_timeout", "1s")];
    for env in [&[("fprocess", "cat")][..], &with_queue[..]] {
        let wd = Watchdog::start(env);
        wd.post("/", b"x");
        wd.get("/");
        let text = scrape(&wd);
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("promtool output");
        assert!(
            out.status.success(),
            "promtool check metrics failed for {env:?}:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.contains("fwatchdog_queue_wait_seconds_count 2"), env.len() > 1, "{text}");
    }
}

/// One instant-vector value from Prometheus' HTTP API, if the query has a result yet.
fn prometheus_query(port: u16, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let r = try_request(port, "GET", &format!("/api/v1/query?query={encoded}"), &[], b"")?;
    let text = r.text();
    // ..."value":[1764108745.123,"1"]...
    let at = text.find("\"value\":[")?;
    let rest = &text[at..];
    let quote = rest.find(",\"")? + 2;
    rest[quote..].split('"').next()?.parse().ok()
}

#[test]
fn a_real_prometheus_scrapes_the_watchdog() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        skip("prometheus is not installed (Debian package prometheus; .ci/run installs it)");
        return;
    }
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    for _ in 0..3 {
        wd.post("/", b"counted");
    }
    let dir = TempDir::new("prom");
    let metrics_port = wd.metrics_port.expect("metrics port");
    let config = dir.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: fwatchdog\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .expect("config");
    let prom_port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let mut up = None;
    let mut total = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline && (up != Some(1.0) || total != Some(3.0)) {
        std::thread::sleep(Duration::from_millis(500));
        up = prometheus_query(prom_port, r#"up{job="fwatchdog"}"#);
        total =
            prometheus_query(prom_port, r#"http_requests_total{job="fwatchdog",code="200",method="post"}"#);
    }
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(up, Some(1.0), "Prometheus never saw the target up");
    assert_eq!(total, Some(3.0), "Prometheus' view of http_requests_total");
}
