//! Websocket relay in http mode, with real upstreams and clients: Python `websockets`
//! and Node `ws` (tests/interop), through the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn python_upstream(port: u16) -> String {
    format!("python3 {} {port}", interop("ws_upstream.py"))
}

fn node_upstream(port: u16) -> String {
    format!("node {} {port}", interop("ws_upstream.js"))
}

fn relay(fprocess: &str, port: u16, extra: &[(&str, &str)]) -> Watchdog {
    let url = format!("http://127.0.0.1:{port}");
    let mut env = vec![("mode", "http"), ("fprocess", fprocess), ("upstream_url", url.as_str())];
    env.extend_from_slice(extra);
    Watchdog::start(&env)
}

fn python_client(wd: &Watchdog, scenario: &str, arg: &str) -> String {
    let url = format!("ws://127.0.0.1:{}", wd.port);
    run_helper("python3", &[&interop("ws_client.py"), &url, scenario, arg], CLIENT_TIMEOUT)
}

fn node_client(wd: &Watchdog, scenario: &str) -> String {
    let url = format!("ws://127.0.0.1:{}", wd.port);
    run_helper("node", &[&interop("ws_client.js"), &url, scenario], CLIENT_TIMEOUT)
}

fn field(json: &str, key: &str) -> String {
    json_field(json, key).unwrap_or_else(|| panic!("no {key:?} in {json:?}"))
}

fn can_run_python() -> bool {
    have_python_module("websockets.asyncio.server")
}

#[test]
fn python_text_binary_fragments_ping_big_message_and_close_pass_through() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let mut wd = relay(&python_upstream(port), port, &[]);
    let out = python_client(&wd, "basic", "");
    assert_eq!(field(&out, "text"), "hello", "{out}");
    assert_eq!(field(&out, "binary"), "[0,1,255,32,98,105,110,97,114,121]", "{out}");
    assert_eq!(
        field(&out, "fragmented"),
        "frag-1 frag-2 frag-3",
        "a fragmented message arrives whole: {out}"
    );
    assert!(field(&out, "pong_ms").parse::<f64>().is_ok(), "ping answered by a pong: {out}");
    assert_eq!(field(&out, "big_ok"), "true", "a 16 MiB message echoes intact: {out}");
    assert_eq!(field(&out, "big_len"), (16 << 20).to_string(), "{out}");
    assert_eq!(field(&out, "close_code"), "1000", "the client's close handshake completes: {out}");
    let line = wd.wait_log("GET /ws?q=1 - 101 Switching Protocols - ContentLength:", Duration::from_secs(10));
    assert!(line.contains("ContentLength: 16.78MB"), "bytes relayed to the client are logged: {line}");
    assert_eq!(
        metric(&wd, "http_requests_total{code=\"101\",method=\"get\"}"),
        Some(1.0),
        "one request, code 101"
    );
    assert_eq!(metric(&wd, "http_requests_in_flight"), Some(0.0), "its max_inflight place is released");
}

#[test]
fn node_text_binary_fragments_ping_big_message_and_close_pass_through() {
    if !have_node_module("ws") {
        return;
    }
    let port = free_port();
    let wd = relay(&node_upstream(port), port, &[]);
    let out = node_client(&wd, "basic");
    assert_eq!(field(&out, "text"), "hello", "{out}");
    assert_eq!(field(&out, "text_is_binary"), "false", "text stays text: {out}");
    assert_eq!(field(&out, "binary"), "[0,1,255]", "{out}");
    assert_eq!(field(&out, "binary_is_binary"), "true", "binary stays binary: {out}");
    assert_eq!(field(&out, "fragmented"), "frag-1 frag-2 frag-3", "{out}");
    assert_eq!(field(&out, "big_ok"), "true", "{out}");
    assert_eq!(field(&out, "close_code"), "1000", "{out}");
}

#[test]
fn a_close_from_the_upstream_reaches_the_client_with_its_code() {
    if !can_run_python() || !have_node_module("ws") {
        return;
    }
    let port = free_port();
    let wd = relay(&python_upstream(port), port, &[]);
    let out = python_client(&wd, "server_close", "4001");
    assert_eq!(field(&out, "close_code"), "4001", "{out}");
    assert_eq!(field(&out, "reason"), "bye", "{out}");
    drop(wd);
    let port = free_port();
    let wd = relay(&node_upstream(port), port, &[]);
    let out = node_client(&wd, "server_close");
    assert_eq!(field(&out, "close_code"), "4002", "{out}");
}

#[test]
fn an_upstream_that_drops_the_connection_ends_the_session_and_serving_goes_on() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let wd = relay(&python_upstream(port), port, &[]);
    let out = python_client(&wd, "abort", "");
    assert_eq!(field(&out, "closed"), "true", "the client sees the end: {out}");
    assert!(field(&out, "seconds").parse::<f64>().is_ok_and(|s| s < 5.0), "promptly: {out}");
    assert_eq!(field(&python_client(&wd, "basic", ""), "text"), "hello", "a new session works");
}

#[test]
fn an_upstream_process_that_dies_mid_session_closes_it_and_stops_the_watchdog() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let mut wd = relay(&python_upstream(port), port, &[]);
    let out = python_client(&wd, "upstream_exit", "");
    assert_eq!(field(&out, "closed"), "true", "{out}");
    let code = wd.wait_exit(Duration::from_secs(15));
    assert!(code.is_some_and(|c| c != 0), "the watchdog exits non-zero when its upstream dies: {code:?}");
}

#[test]
fn a_refused_upgrade_comes_back_as_a_plain_response() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let wd = relay(&python_upstream(port), port, &[]);
    let out = python_client(&wd, "refuse", "");
    assert_eq!(field(&out, "refused"), "true", "{out}");
    assert_eq!(field(&out, "status"), "403", "{out}");
    assert_eq!(field(&out, "body"), "no websockets here\n", "{out}");
    assert_eq!(wd.get("/_/health").status, 200);
}

#[test]
fn a_hundred_sessions_at_once() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let wd = relay(&python_upstream(port), port, &[]);
    let out = python_client(&wd, "concurrent", "100");
    assert_eq!(field(&out, "ok"), "100", "{out}");
    wait_for("every session counted", Duration::from_secs(10), || {
        metric(&wd, "http_requests_total{code=\"101\",method=\"get\"}") == Some(100.0)
    });
}

#[test]
fn a_session_holds_a_max_inflight_place_while_open() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let wd = relay(&python_upstream(port), port, &[("max_inflight", "1")]);
    let url = format!("ws://127.0.0.1:{}", wd.port);
    let mut holder = Command::new("python3")
        .args([&interop("ws_client.py"), &url, "hold", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    assert!(lines.next().is_some_and(|l| l.is_ok_and(|l| l.contains("open"))), "the first session opens");
    assert_eq!(field(&python_client(&wd, "status", ""), "status"), "429", "a second session is refused");
    assert_eq!(wd.post("/call", b"x").status, 429, "and so is a call");
    assert_eq!(wd.get("/_/ready").status, 429, "readiness says so");
    let done = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = holder.wait();
    assert!(
        field(&done, "echoes").parse::<u32>().is_ok_and(|n| n > 5),
        "the first session kept working: {done}"
    );
    wait_for("the place is free again", Duration::from_secs(10), || {
        try_request(wd.port, "GET", "/_/ready", &[], b"").is_some_and(|r| r.status == 200)
    });
    assert_eq!(field(&python_client(&wd, "status", ""), "status"), "101", "a new session opens");
}

#[test]
fn sigterm_keeps_a_session_through_the_drain_then_closes_it() {
    if !can_run_python() {
        return;
    }
    let port = free_port();
    let mut wd =
        relay(&python_upstream(port), port, &[("healthcheck_interval", "1"), ("write_timeout", "2")]);
    let url = format!("ws://127.0.0.1:{}", wd.port);
    let mut holder = Command::new("python3")
        .args([&interop("ws_client.py"), &url, "hold", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    assert!(lines.next().is_some_and(|l| l.is_ok_and(|l| l.contains("open"))), "the session opens");
    let start = Instant::now();
    wd.signal(SIGTERM);
    let code = wd.wait_exit(Duration::from_secs(15));
    let took = start.elapsed();
    let done = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = holder.wait();
    assert_eq!(code, Some(0), "exit 0 after the drain");
    assert!(took >= Duration::from_millis(2500), "interval (1s) and drain (2s) ran first: {took:?}");
    let seconds: f64 = field(&done, "seconds").parse().unwrap_or(0.0);
    let echoes: u32 = field(&done, "echoes").parse().unwrap_or(0);
    assert!(seconds < 15.0, "the session was closed, not left to its own 20 s: {done}");
    assert!(echoes >= 20, "it kept working through interval and drain: {done}");
    // Closed as websockets close: each side got a close frame, 1001 (going away), from the
    // watchdog. The upstream closes nothing itself on SIGTERM (it only exits a moment later),
    // so the 1001 it logs is the watchdog's, sent before its SIGTERM.
    assert_eq!(field(&done, "close_code"), "1001", "the client's close code: {done}");
    let log = wd.output.all();
    assert!(
        log.contains("upstream: session closed with code 1001"),
        "the upstream got no close frame: {log}"
    );
}

/// `wstest` of the Autobahn test suite (a Python 2 program: `.ci/run` installs it into a
/// Python 2.7 when the machine has one), or `FWATCHDOG_WSTEST`.
fn wstest() -> Option<String> {
    if let Ok(why) = std::env::var("FWATCHDOG_SKIP_AUTOBAHN") {
        skipped(&why);
        return None;
    }
    let candidates = [
        std::env::var("FWATCHDOG_WSTEST").unwrap_or_default(),
        format!("{}/.pyenv/versions/2.7.18/bin/wstest", std::env::var("HOME").unwrap_or_default()),
    ];
    let found = candidates
        .into_iter()
        .find(|c| !c.is_empty() && Command::new(c).arg("--help").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        skip("Autobahn's wstest is not installed (.ci/run installs it into Python 2.7)");
    }
    found
}

/// An Autobahn verdict's class. OK and NON-STRICT both pass (NON-STRICT: the peer failed the
/// connection a little late); which of the two a timing-dependent case gets changes from run
/// to run on a loaded machine, direct or relayed alike.
fn class(verdict: &str) -> &'static str {
    match verdict {
        "OK" | "NON-STRICT" => "pass",
        "INFORMATIONAL" => "informational",
        "UNIMPLEMENTED" => "unimplemented",
        _ => "failed",
    }
}

#[test]
fn autobahn_fuzzing_client_gives_the_same_verdicts_through_the_relay_as_directly() {
    let Some(wstest) = wstest() else { return };
    if !can_run_python() {
        return;
    }
    let dir = TempDir::new("autobahn");
    let direct_port = free_port();
    let mut direct = Command::new("python3")
        .args([&interop("ws_upstream.py"), &direct_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("direct upstream");
    let port = free_port();
    let wd = relay(&python_upstream(port), port, &[]);
    wait_for("the direct upstream listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", direct_port)).is_ok()
    });
    let reports = dir.path("reports");
    let spec = format!(
        r#"{{"outdir": "{}", "servers": [{{"agent": "direct", "url": "ws://127.0.0.1:{direct_port}"}},
            {{"agent": "relay", "url": "ws://127.0.0.1:{}"}}], "cases": ["*"], "exclude-cases": [],
            "exclude-agent-cases": {{}}}}"#,
        reports.display(),
        wd.port
    );
    std::fs::write(dir.path("spec.json"), spec).expect("spec");
    let spec_path = dir.path("spec.json").display().to_string();
    run_helper(&wstest, &["-m", "fuzzingclient", "-s", &spec_path], Duration::from_secs(600));
    let _ = direct.kill();
    let _ = direct.wait();
    let mut verdicts: std::collections::BTreeMap<String, [Option<String>; 2]> = Default::default();
    for entry in std::fs::read_dir(&reports).expect("reports").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let agent = if name.starts_with("direct_case_") {
            0
        } else if name.starts_with("relay_case_") {
            1
        } else {
            continue;
        };
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("case report");
        let id = json_field(&text, "id").expect("case id");
        let verdict =
            format!("{} / {}", class(&field(&text, "behavior")), class(&field(&text, "behaviorClose")));
        verdicts.entry(id).or_default()[agent] = Some(verdict);
    }
    assert!(verdicts.len() > 500, "Autobahn ran its cases: {}", verdicts.len());
    let differ: Vec<_> = verdicts.iter().filter(|(_, [d, r])| d != r).collect();
    assert!(differ.is_empty(), "cases whose verdict differs (direct vs relay): {differ:?}");
}
