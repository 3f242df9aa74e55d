//! Command-line flags (`--help`, `--version`, `--run-healthcheck`). Everything else is configured
//! through the environment.

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Serve,
    Version,
    HealthCheck,
    Help,
    Usage(String),
}

pub(crate) const USAGE: &str = "Usage: fwatchdog [-version] [-run-healthcheck] [-h]

  -version          print the version and exit
  -run-healthcheck  exit 0 if the lock file exists, 1 if not (for exec probes)
  -h, --help        print this help and exit

Everything else is configured through environment variables, for example:
  fprocess='python3 handler.py' mode=http upstream_url=http://127.0.0.1:5000 fwatchdog

  fprocess (function_process)  the function's command line (required, except in static mode)
  mode                         streaming (default), serializing, http or static
  upstream_url                 http mode: where the function's own server listens
  port, metrics_port           8080 and 8081
  read_timeout, write_timeout  30s each; exec_timeout 30s (0: none); healthcheck_interval
  max_inflight, max_workers    calls at a time; unset: max_workers (1024) run, as many wait
  content_type, static_path, ready_path, suppress_lock, http_buffer_req_body,
  prefix_logs, log_buffer_size, log_callid, log_format (text or json)

A second SIGTERM or SIGINT (Ctrl-C) during the drain exits at once.
The README lists every variable with its default.";

pub(crate) fn parse<I: IntoIterator<Item = String>>(args: I) -> Command {
    let args: Vec<String> = args.into_iter().collect();
    match args.as_slice() {
        [] => Command::Serve,
        [flag] if matches!(flag.as_str(), "-version" | "--version") => Command::Version,
        [flag] if matches!(flag.as_str(), "-run-healthcheck" | "--run-healthcheck") => Command::HealthCheck,
        [flag] if matches!(flag.as_str(), "-h" | "-help" | "--help") => Command::Help,
        [other, ..] => Command::Usage(format!("unknown argument {other:?}")),
    }
}

pub(crate) fn version_line() -> String {
    let sha = option_env!("FWATCHDOG_GIT_SHA").filter(|s| !s.is_empty()).unwrap_or("unknown");
    format!("Version: {}\tSHA: {sha}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Command {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        assert_eq!(p(&[]), Command::Serve);
        assert_eq!(p(&["-version"]), Command::Version);
        assert_eq!(p(&["--version"]), Command::Version);
        assert_eq!(p(&["-run-healthcheck"]), Command::HealthCheck);
        assert_eq!(p(&["--run-healthcheck"]), Command::HealthCheck);
        for help in ["-h", "-help", "--help"] {
            assert_eq!(p(&[help]), Command::Help);
        }
        assert!(matches!(p(&["-x"]), Command::Usage(_)));
        assert!(matches!(p(&["-version", "extra"]), Command::Usage(_)));
    }
}
