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
fn run_healthcheck_follows_the_lock_file() {
    let dir = TempDir::new("hc");
    let (code, _, err) = run_bin(&["-run-healthcheck"], &[], &dir.0);
    assert_eq!((code, err.trim()), (1, "unable to find lock file."));
    std::fs::write(dir.path(".lock"), b"").expect("lock");
    let (code, _, _) = run_bin(&["--run-healthcheck"], &[], &dir.0);
    assert_eq!(code, 0);
}

#[test]
fn unknown_arguments_print_usage_and_exit_2() {
    let dir = TempDir::new("usage");
    let (code, _, err) = run_bin(&["--bogus"], &[("fprocess", "cat")], &dir.0);
    assert_eq!(code, 2);
    assert!(err.contains("Usage: fwatchdog") && err.contains("--bogus"), "{err}");
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
        (&[("fprocess", "cat"), ("jwt_auth", "true")], "jwt_auth=true is not supported"),
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
