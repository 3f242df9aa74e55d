//! fwatchdog: a drop-in replacement for the OpenFaaS of-watchdog.
//!
//! The watchdog is the entrypoint of a function container. It serves HTTP on one port and
//! turns each request into a function call: a process forked per request whose stdin and
//! stdout carry the body (streaming and serializing modes), a long-running HTTP server the
//! request is relayed to (http mode), or a file (static mode). Around that it keeps the
//! contract with the orchestrator: health and readiness endpoints, a lock file, a concurrency
//! limit, timeouts, a graceful drain on SIGTERM, and Prometheus metrics.
//!
//! The design is synchronous. A tiny_http listener (`listener`) hands requests to a
//! dispatcher (`dispatch`) that answers health checks and refusals on a small control pool and
//! queues function calls, over a bounded crossbeam channel, to a fixed-size pool of worker
//! threads (`pool`). Each mode lives in one file under `modes/`. Every workaround for a quirk of
//! tiny_http lives in `exchange` (bodies and responses) or `listener` (accepting).

mod alloc;
mod cgi;
mod child_io;
mod cli;
mod clock;
mod config;
mod dispatch;
mod duration;
mod exchange;
mod json;
mod lifecycle;
mod limiter;
mod listener;
mod logging;
mod metrics;
mod modes;
mod pool;
mod process;
mod request;
mod server;
mod sockets;
mod spool;
mod upstream;
mod words;

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

fn main() {
    let code = match cli::parse(std::env::args().skip(1)) {
        cli::Command::Version => {
            println!("{}", cli::version_line());
            0
        }
        cli::Command::HealthCheck => {
            if lifecycle::lock_path().exists() {
                0
            } else {
                eprintln!("unable to find lock file.");
                1
            }
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
            logging::init(config::LogFormat::Text);
            log::error!("Error loading config: {e}");
            return 1;
        }
    };
    logging::init(config.log_format);
    for warning in warnings {
        log::warn!("{warning}");
    }
    server::run(config)
}
