//! Log lines.

mod common;

use common::*;

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'/',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
        && b[19] == b' '
}

#[test]
fn one_request_line_per_call_in_the_reference_format() {
    let mut wd = Watchdog::start(&[("fprocess", "cat")]);
    wd.post("/echo?x=1", &[b'a'; 1536]);
    let line = wd.wait_log("POST /echo?x=1 - 200 - ContentLength: ", STARTUP);
    assert!(is_stamp(&line), "{line}");
    let rest = &line[20..];
    assert!(rest.starts_with("POST /echo?x=1 - 200 - ContentLength: 1.536kB ("), "{rest}");
    assert!(rest.ends_with("s)") && rest.contains("(0."), "{rest}");
}

#[test]
fn log_callid_appends_the_call_id_or_none() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("log_callid", "true")]);
    wd.request("POST", "/with-id", &[("X-Call-Id", "abc-123")], b"x");
    wd.post("/without-id", b"x");
    assert!(wd.wait_log("POST /with-id - 200", STARTUP).ends_with(" [abc-123]"));
    assert!(wd.wait_log("POST /without-id - 200", STARTUP).ends_with(" [none]"));
}

#[test]
fn kube_probes_are_not_logged() {
    let mut wd = Watchdog::start(&[("fprocess", "cat")]);
    wd.request("GET", "/probed", &[("User-Agent", "kube-probe/1.29")], b"");
    wd.request("GET", "/visible", &[("User-Agent", "curl/8.0")], b"");
    wd.wait_log("GET /visible - 200", STARTUP);
    assert!(!wd.output.stderr().contains("/probed"), "{}", wd.output.stderr());
}

#[test]
fn long_lines_are_split_never_dropped_and_never_stall_the_function() {
    let dir = TempDir::new("long");
    // 200 chars, then 3000 short lines (more than a pipe holds), then the result.
    let f = dir.script(
        "f",
        "printf 'before\\n' >&2; head -c 200 /dev/zero | tr '\\0' L >&2; printf '\\n' >&2; \
         i=0; while [ $i -lt 3000 ]; do echo \"tail-$i\" >&2; i=$((i+1)); done; printf 'last-unterminated' >&2; echo body",
    );
    let mut wd = Watchdog::start(&[("fprocess", &f), ("log_buffer_size", "64"), ("exec_timeout", "20")]);
    assert_eq!(wd.post("/", b"").text(), "body\n");
    wd.wait_log("stderr: last-unterminated", STARTUP);
    let lines = wd.output.lines(true);
    let pieces: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.ends_with("stderr: before"))
        .skip(1)
        .take_while(|l| !l.ends_with("stderr: tail-0"))
        .map(|l| l.split("stderr: ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(pieces.concat(), "L".repeat(200));
    assert_eq!(pieces.iter().map(|p| p.len()).collect::<Vec<_>>(), [64, 64, 64, 8]);
    assert!(lines.iter().any(|l| l.ends_with("stderr: tail-2999")));
}

#[test]
fn prefix_logs_false_logs_function_lines_verbatim() {
    let dir = TempDir::new("raw");
    let f = dir.script("f", "echo raw-line >&2; echo ok");
    let mut wd = Watchdog::start(&[("fprocess", &f), ("prefix_logs", "false")]);
    wd.post("/", b"");
    wd.wait_until("the raw line", STARTUP, |wd| wd.output.lines(true).iter().any(|l| l == "raw-line"));
}

/// Minimal checks that a line is one JSON object with the given string keys.
fn json_object_with(line: &str, keys: &[&str]) -> bool {
    line.starts_with('{') && line.ends_with('}') && keys.iter().all(|k| line.contains(&format!("\"{k}\":\"")))
}

#[test]
fn json_log_format_makes_every_line_one_object() {
    let dir = TempDir::new("json");
    let f = dir.script("f", "echo 'plain stderr line' >&2; echo '{\"own\":\"json\"}' >&2; cat");
    let mut wd = Watchdog::start(&[("fprocess", &f), ("log_format", "json"), ("log_callid", "true")]);
    wd.request("POST", "/json-path?q=1", &[("X-Call-Id", "id-7")], b"hello");
    wd.wait_log("\"path\":\"/json-path\"", STARTUP);
    wd.wait_log("plain stderr line", STARTUP);
    let lines = wd.output.lines(true);
    for line in &lines {
        assert!(
            json_object_with(line, &["time", "level", "msg"])
                || json_object_with(line, &["time", "stream", "own"]),
            "not a JSON log line: {line}"
        );
    }
    let call = lines.iter().find(|l| l.contains("\"path\":\"/json-path\"")).expect("request line");
    for field in [
        "\"method\":\"POST\"",
        "\"status\":200",
        "\"bytes\":5",
        "\"call_id\":\"id-7\"",
        "\"duration_seconds\":",
    ] {
        assert!(call.contains(field), "{field} missing from {call}");
    }
    let fn_line = lines.iter().find(|l| l.contains("plain stderr line")).expect("function line");
    assert!(fn_line.contains("\"stream\":\"stderr\""), "{fn_line}");
    let own = lines.iter().find(|l| l.contains("\"own\":\"json\"")).expect("the function's JSON line");
    assert!(
        own.starts_with("{\"time\":\"") && own.ends_with(",\"stream\":\"stderr\",\"own\":\"json\"}"),
        "a function's own JSON line keeps its fields and gains time and stream: {own}"
    );
}

#[test]
fn json_levels_mark_timeouts_and_failures() {
    let dir = TempDir::new("levels");
    let f = dir.script(
        "f",
        "cat >/dev/null; case \"$Http_Path\" in /fail) exit 3;; /slow) sleep 10;; esac; echo ok",
    );
    let mut wd = Watchdog::start(&[
        ("fprocess", &f),
        ("mode", "serializing"),
        ("log_format", "json"),
        ("exec_timeout", "1s"),
    ]);
    for path in ["/fine", "/fail", "/slow"] {
        wd.post(path, b"x");
    }
    let level = |wd: &mut Watchdog, path: &str| {
        let line = wd.wait_log(&format!("\"path\":\"{path}\""), STARTUP);
        json_field(&line, "level").unwrap_or_default()
    };
    assert_eq!(level(&mut wd, "/fine"), "info");
    assert_eq!(level(&mut wd, "/fail"), "error");
    // A serializing call that times out is a 500: an error line, after a warning.
    assert_eq!(level(&mut wd, "/slow"), "error");
    let killed = wd.wait_log("killed by ExecTimeout", STARTUP);
    assert_eq!(json_field(&killed, "level").as_deref(), Some("warn"), "{killed}");
}

#[test]
fn every_mode_logs_why_a_call_failed_once_at_warn() {
    let dir = TempDir::new("why");
    let f = dir.script("f", "echo oops >&2; exit 3");
    for mode in ["streaming", "serializing"] {
        let mut wd = Watchdog::start(&[("fprocess", &f), ("mode", mode), ("log_format", "json")]);
        assert_eq!(wd.post("/fail", b"x").status, 500);
        wd.wait_log("\"path\":\"/fail\"", STARTUP);
        let reasons: Vec<String> =
            wd.output.stderr().lines().filter(|l| l.contains("exit status 3")).map(str::to_string).collect();
        assert_eq!(reasons.len(), 1, "{mode}: one line with the reason: {reasons:?}");
        assert_eq!(json_field(&reasons[0], "level").as_deref(), Some("warn"), "{mode}: {}", reasons[0]);
        // A function that cannot start says so too.
        let mut wd = Watchdog::start(&[("fprocess", "/no/such/fn"), ("mode", mode)]);
        assert_eq!(wd.post("/", b"x").status, 500);
        wd.wait_log("cannot start function \"/no/such/fn\"", STARTUP);
    }
}
