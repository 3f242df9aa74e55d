//! Command line and configuration, through the real binary.

mod common;

use common::*;

#[test]
fn version_flag_prints_version_and_sha() {
    let dir = TempDir::new("version");
    for flag in ["-version", "--version"] {
        let (code, out, _) = run_bin(&[flag], &[], &dir.0);
        assert_eq!(code, 0, "{flag}");
        assert!(out.starts_with("Version: 0.") && out.contains("\tSHA: "), "{flag}: {out:?}");
    }
}

#[test]
fn run_healthcheck_follows_the_lock_file_or_else_health() {
    let dir = TempDir::new("hc");
    // Nothing listens on this port: no lock file, no health.
    let idle = free_port().to_string();
    let (code, _, err) = run_bin(&["-run-healthcheck"], &[("port", idle.as_str())], &dir.0);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("unable to find lock file") && err.contains(&idle), "{err}");
    std::fs::write(dir.path(".lock"), b"").expect("lock");
    let (code, _, _) = run_bin(&["--run-healthcheck"], &[("port", idle.as_str())], &dir.0);
    assert_eq!(code, 0);
    // suppress_lock=true writes none: the check asks /_/health instead (an image's HEALTHCHECK).
    let wd = Watchdog::start(&[("fprocess", "cat"), ("suppress_lock", "true")]);
    let empty = TempDir::new("hc-empty");
    let port = wd.port.to_string();
    let (code, _, err) = run_bin(&["-run-healthcheck"], &[("port", port.as_str())], &empty.0);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn settings_that_would_silently_disable_a_limit_are_refused_or_warned_about() {
    let dir = TempDir::new("strict");
    let (code, _, err) = run_bin(&[], &[("fprocess", "cat"), ("port", "99999")], &dir.0);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("invalid port \"99999\""), "{err}");
    // A negative duration keeps the default, with a warning; so does queue_size without a queue.
    let mut wd = Watchdog::start(&[
        ("fprocess", "cat"),
        ("exec_timeout", "-5s"),
        ("read_timeout", "-1"),
        ("queue_size", "3"),
    ]);
    wd.wait_log("Timeouts: read: 30s write: 30s hard: 30s", STARTUP);
    let log = wd.output.all();
    assert!(log.contains("exec_timeout") && log.contains("negative"), "{log}");
    assert!(!log.contains("missing unit"), "{log}");
    assert!(log.contains("queue_size is set but there is no wait queue"), "{log}");
}

#[test]
fn unknown_arguments_print_usage_and_exit_2() {
    let dir = TempDir::new("usage");
    let (code, _, err) = run_bin(&["--bogus"], &[("fprocess", "cat")], &dir.0);
    assert_eq!(code, 2);
    assert!(err.contains("Usage: fwatchdog") && err.contains("--bogus"), "{err}");
}

#[test]
fn help_prints_usage_on_stdout_and_exits_0() {
    let dir = TempDir::new("help");
    for flag in ["-h", "-help", "--help"] {
        let (code, out, err) = run_bin(&[flag], &[], &dir.0);
        assert_eq!(code, 0, "{flag}: {err}");
        assert!(out.starts_with("Usage: fwatchdog") && out.contains("upstream_url"), "{flag}: {out}");
    }
}

#[test]
fn with_log_format_json_a_fatal_configuration_error_is_json_too() {
    let dir = TempDir::new("fatal-json");
    let (code, _, err) =
        run_bin(&[], &[("log_format", "json"), ("mode", "afterburn"), ("fprocess", "cat")], &dir.0);
    assert_eq!(code, 1);
    let line = err.trim();
    assert!(line.starts_with("{\"time\":\"") && line.ends_with('}'), "{line}");
    assert_eq!(json_field(line, "level").as_deref(), Some("error"), "{line}");
    assert!(json_field(line, "msg").is_some_and(|m| m.contains("unknown mode \"afterburn\"")), "{line}");
}

#[test]
fn an_fprocess_that_cannot_run_fails_at_startup() {
    let dir = TempDir::new("noexec");
    let not_exec = dir.path("handler.sh");
    std::fs::write(&not_exec, "#!/bin/sh\necho hi\n").expect("write");
    let not_exec = not_exec.display().to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("fprocess", "no-such-program-xyz arg")],
            "\"no-such-program-xyz\" is not an executable file in any PATH",
        ),
        (&[("fprocess", &not_exec)], "is not executable (chmod +x)"),
        (&[("fprocess", "/")], "/ is a directory"),
        (&[("mode", "serializing"), ("fprocess", &not_exec)], "is not executable"),
        (
            &[("mode", "http"), ("fprocess", "/no/such/server"), ("upstream_url", "http://127.0.0.1:1")],
            "/no/such/server does not exist",
        ),
    ];
    for (env, needle) in cases {
        let (code, _, err) = run_bin(&[], env, &dir.0);
        assert_eq!(code, 1, "{env:?}: {err}");
        assert!(
            err.contains("fprocess cannot run: ") && err.contains(needle),
            "{env:?}: {needle:?} not in {err}"
        );
    }
}

#[test]
fn a_missing_fork_function_file_is_an_error_line_then_500_per_call() {
    let dir = TempDir::new("later");
    let path = dir.path("appears-later.sh").display().to_string();
    let mut wd = Watchdog::start(&[("fprocess", &path)]);
    wd.wait_log(&format!("fprocess: {path} does not exist; calls will fail with 500"), STARTUP);
    assert_eq!(wd.post("/", b"").status, 500);
    dir.script("appears-later.sh", "echo now-here");
    assert_eq!(wd.post("/", b"").text(), "now-here\n");
}

#[test]
fn startup_lines_name_concurrency_log_format_and_ready_path() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("max_workers", "7"), ("ready_path", "/ready")]);
    wd.wait_log(
        "Concurrency: max_inflight: 0 (unset), max_workers: 7 calls at a time, 7 more waiting, 429 beyond",
        STARTUP,
    );
    wd.wait_log("Log format: text\tready_path: /ready", STARTUP);
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("max_inflight", "3")]);
    wd.wait_log("Concurrency: max_inflight: 3 calls at a time, 429 beyond", STARTUP);
}

#[test]
fn classic_watchdog_options_get_one_warning_each() {
    let classic = ["cgi_headers", "debug_headers"];
    let mut env: Vec<(&str, &str)> = classic.iter().map(|k| (*k, "true")).collect();
    env.extend([
        ("fprocess", "cat"),
        ("combine_output", "true"),
        ("marshal_request", "true"),
        ("write_debug", "true"),
        ("read_debug", "true"),
    ]);
    let mut wd = Watchdog::start(&env);
    wd.wait_log("Listening on port", STARTUP);
    let err = wd.output.stderr();
    for option in classic {
        let needle = format!("{option}=\"true\" is a classic-watchdog option fwatchdog ignores: ");
        assert_eq!(err.matches(&needle).count(), 1, "{option}: {err}");
    }
    // Implemented since: combine_output in fork modes; marshal_request in serializing mode only.
    for option in ["combine_output", "write_debug", "read_debug"] {
        assert!(!err.contains(&format!("{option}=\"true\" is a classic-watchdog option")), "{err}");
    }
    assert_eq!(err.matches("marshal_request applies to mode=serializing only").count(), 1, "{err}");
}

#[test]
fn fatal_configuration_exits_1_with_one_clear_line() {
    let dir = TempDir::new("fatal");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "\"fprocess\""),
        (
            &[("fprocess", "cat"), ("mode", "afterburn")],
            "valid modes are streaming, serializing, http and static",
        ),
        (&[("fprocess", "cat"), ("write_timeout", "0")], "write timeout must be over 0s"),
        (&[("fprocess", "sh -c 'oops")], "unterminated ' quote"),
        (&[("fprocess", "cat"), ("jwt_auth", "true")], "jwt_auth=true needs a build with JWT support"),
        (&[("mode", "http"), ("fprocess", "srv")], "upstream_url"),
    ];
    for (env, needle) in cases {
        let (code, _, err) = run_bin(&[], env, &dir.0);
        assert_eq!(code, 1, "{env:?}: {err}");
        assert!(err.contains(needle), "{env:?}: expected {needle:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "{env:?}: one line expected: {err:?}");
    }
}

#[test]
fn unparsable_values_are_logged_and_the_default_kept() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("exec_timeout", "5x"), ("max_inflight", "many")]);
    wd.wait_log("invalid value for exec_timeout: \"5x\"", STARTUP);
    wd.wait_log("invalid value for max_inflight: \"many\"", STARTUP);
    wd.wait_log("Timeouts: read: 30s write: 30s hard: 30s health: 30s", STARTUP);
    assert_eq!(wd.post("/", b"still works").body, b"still works");
}

#[test]
fn fprocess_is_split_with_shell_quoting() {
    let wd = Watchdog::start(&[(
        "fprocess",
        r#"sh -c 'printf "%s|" "$@"' argv0 "two words" 'single '"'"'quoted'"'"'' plain"#,
    )]);
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "two words|single 'quoted'|plain|"));
}

#[test]
fn function_process_wins_over_fprocess() {
    let wd = Watchdog::start(&[
        ("fprocess", "echo from-fprocess"),
        ("function_process", "echo from-function_process"),
    ]);
    assert_eq!(wd.post("/", b"").text(), "from-function_process\n");
}

#[test]
fn port_zero_listens_on_a_free_port_and_logs_it() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    assert_ne!(wd.port, 0);
    assert!(wd.metrics_port.is_some_and(|p| p != 0 && p != wd.port));
}

#[test]
fn busy_port_is_a_startup_error() {
    let first = Watchdog::start(&[("fprocess", "cat")]);
    let dir = TempDir::new("busy");
    let port = first.port.to_string();
    let (code, _, err) = run_bin(&[], &[("fprocess", "cat"), ("port", &port)], &dir.0);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on port {port}")), "{err}");
}

/// The variables of the README's Configuration table (its first column).
fn readme_variables() -> std::collections::BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let table = readme.split("| variable | default | meaning |").nth(1).expect("the Configuration table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            l.split('|').nth(1).unwrap_or("").split(',').map(|n| n.trim().trim_matches('`').to_string())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn help_lists_exactly_the_variables_the_readme_documents() {
    let dir = TempDir::new("help-vars");
    let (_, out, _) = run_bin(&["--help"], &[], &dir.0);
    let section = out.split("Variables (").nth(1).expect("a Variables section in --help");
    let in_help: std::collections::BTreeSet<String> = section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .flat_map(|l| {
            let names = l.trim_start().split("  ").next().unwrap_or("");
            names.split(',').map(|n| n.trim().to_string()).collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    let documented = readme_variables();
    assert!(documented.len() > 25, "{documented:?}");
    assert_eq!(in_help, documented, "--help's variables vs the README's table");
}
