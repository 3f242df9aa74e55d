//! Command-line flags (SPEC §1). Everything else is configured through the environment.

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Serve,
    Version,
    HealthCheck,
    Usage(String),
}

pub(crate) const USAGE: &str = "Usage: fwatchdog [-version] [-run-healthcheck]

  -version          print the version and exit
  -run-healthcheck  exit 0 if the lock file exists, 1 if not (for exec probes)

The watchdog is configured through environment variables (fprocess, mode, port, ...);
see the README.";

pub(crate) fn parse<I: IntoIterator<Item = String>>(args: I) -> Command {
    let args: Vec<String> = args.into_iter().collect();
    match args.as_slice() {
        [] => Command::Serve,
        [flag] if matches!(flag.as_str(), "-version" | "--version") => Command::Version,
        [flag] if matches!(flag.as_str(), "-run-healthcheck" | "--run-healthcheck") => Command::HealthCheck,
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
        assert!(matches!(p(&["-x"]), Command::Usage(_)));
        assert!(matches!(p(&["-version", "extra"]), Command::Usage(_)));
    }
}
