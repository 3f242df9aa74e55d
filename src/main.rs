//! fwatchdog: a drop-in replacement for the OpenFaaS of-watchdog.
//!
//! The watchdog is the entrypoint of a function container. It serves HTTP on one port and
//! turns each request into a function call: a process forked per request whose stdin and
//! stdout carry the body (streaming and serializing modes), a long-running HTTP server the
//! request is relayed to (http mode), or a file (static mode). Around that it keeps the
//! contract with the orchestrator: health and readiness endpoints, a lock file, a concurrency
//! limit, timeouts, a graceful drain on SIGTERM, and Prometheus metrics.
//!
//! The design is synchronous. `http_server` accepts and reads requests with tiny_http and owns
//! everything about connections (its module note explains how, and where each of tiny_http's
//! quirks is handled); `dispatch` decides what each request is; `limiter` admits calls; `auth`
//! checks jwt_auth's tokens (the `jwt` feature); each mode lives in one file under `modes/` and
//! runs function processes through `process` and `child_io`; `run` starts it all in order and
//! drains it on SIGTERM.

mod auth;
mod cgi;
mod cgi_response;
mod child_io;
mod cli;
mod clock;
mod config;
mod deadlines;
mod dispatch;
mod duration;
mod envelope;
mod http_server;
mod io_buffer;
mod json;
mod lifecycle;
mod limiter;
mod logging;
mod metrics;
mod modes;
mod process;
mod run;
mod shell_words;
mod spool;
mod threads;

#[global_allocator]
static GLOBAL: http_server::Allocator = http_server::Allocator;

fn main() {
    threads::mark_ours();
    http_server::tune_malloc();
    let code = match cli::parse(std::env::args().skip(1)) {
        cli::Command::Version => {
            println!("{}", cli::version_line());
            0
        }
        cli::Command::HealthCheck => match lifecycle::health_check() {
            Ok(()) => 0,
            Err(why) => {
                eprintln!("{why}");
                1
            }
        },
        cli::Command::Help => {
            println!("{}", cli::USAGE);
            0
        }
        cli::Command::Usage(why) => {
            eprintln!("fwatchdog: {why}\n{}", cli::USAGE);
            2
        }
        cli::Command::Serve => serve(),
    };
    std::process::exit(code);
}

fn serve() -> i32 {
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let (config, warnings) = match config::from_env(env) {
        Ok(parsed) => parsed,
        Err(e) => {
            logging::init(config::log_format_of(std::env::var("log_format").ok().as_deref()));
            log::error!("Error loading config: {e}");
            return 1;
        }
    };
    logging::init(config.log_format);
    for warning in warnings {
        log::warn!("{warning}");
    }
    run::run(config)
}
