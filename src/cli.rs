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
  -run-healthcheck  exit 0 if the lock file exists, or else if /_/health on $port answers
                    200; 1 if not (for exec probes and an image's HEALTHCHECK)
  -h, --help        print this help and exit

Everything else is configured through environment variables, for example:
  fprocess='python3 handler.py' mode=http upstream_url=http://127.0.0.1:5000 fwatchdog

Variables (the README's Configuration table has the details):
  mode                              streaming (default), serializing, http or static
  fprocess, function_process        the function's command line (not in static mode)
  upstream_url, http_upstream_url   http mode: where the function's own server listens
  port                              8080; 0 picks a free port
  metrics_port                      8081
  read_timeout                      30s: to read a request; idle keep-alive wait
  write_timeout                     30s: until a response is complete (> 0)
  exec_timeout                      30s: longest function call (0: none)
  healthcheck_interval              = write_timeout: serving on, unhealthy, after SIGTERM
  max_inflight                      calls at once; more get 429 (0: max_workers)
  queue_timeout                     with max_inflight: how long a call may wait for a place
  queue_size                        with queue_timeout: calls that may wait at once
  max_workers                       1024: calls at once without max_inflight
  combine_output                    fork modes: stderr into the response
  cgi_response                      fork modes: status and headers from a CGI header block
  marshal_request                   serializing mode: the classic JSON envelope on stdin
  read_debug, write_debug           log request / response bodies
  content_type                      application/octet-stream: fork modes' Content-Type
  static_path                       /home/app/public: static mode's directory
  suppress_lock                     no lock file
  http_buffer_req_body, buffer_http  http mode: send bodies with Content-Length
  prefix_logs                       true: date, time and stream before function lines
  log_buffer_size                   65536: longest function log line kept whole (-1: any)
  log_callid, log_call_id           append the X-Call-Id to request log lines
  ready_path                        /_/ready answers with GET <ready_path>'s status
  log_format                        text or json
  jwt_auth                          calls need an OpenFaaS IAM function token (`jwt` builds)
  jwt_auth_local                    jwt_auth: the gateway port-forwarded to 127.0.0.1:8000
  jwt_auth_debug                    jwt_auth: log the issuer, keys and each token
  jwt_auth_discovery_url            jwt_auth: another OpenID discovery document
  OPENFAAS_NAME, OPENFAAS_NAMESPACE  jwt_auth: the function's name and namespace

A second SIGTERM or SIGINT (Ctrl-C) during the drain exits at once.";

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
