//! fwatchdog: a drop-in replacement for the OpenFaaS of-watchdog.
//!
//! The watchdog is the entrypoint of a function container. It serves HTTP on one port and
//! turns each request into a function call: a process forked per request whose stdin and
//! stdout carry the body (streaming and serializing modes), a long-running HTTP server the
//! request is relayed to (http mode), or a file (static mode). Around that it keeps the
//! contract with the orchestrator: health and readiness endpoints, a lock file, a concurrency
//! limit, timeouts, a graceful drain on SIGTERM, and Prometheus metrics.
//!
//! The design is synchronous. tiny_http (`listener`) parses requests; a pool of worker threads
//! (`workers`) takes them from its queue directly and routes each (`dispatch`): health checks,
//! readiness and refusals are answered at once, function calls run on the same thread, up to
//! a fixed number at a time. Beside tiny_http, the watchdog keeps its own view of every
//! accepted connection (`connections`, `sockets`): one request at a time per connection, and
//! the read and write deadlines tiny_http lacks. Each mode lives in one file under `modes/`.
//! Every workaround for a quirk of tiny_http lives in `exchange` (one request and its
//! response), `connections` (what spans requests) or `listener` (accepting). The state all of
//! them share is in `watchdog`.

mod alloc;
mod cgi;
mod cgi_response;
mod child_io;
mod cli;
mod clock;
mod config;
mod connections;
mod dispatch;
mod duration;
mod envelope;
mod exchange;
mod json;
mod lifecycle;
mod limiter;
mod listener;
mod logging;
mod metrics;
mod modes;
mod process;
mod request;
mod server;
mod sockets;
mod spool;
mod threads;
mod upstream;
mod watchdog;
mod words;
mod workers;

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

fn main() {
    threads::mark_ours();
    alloc::tune_malloc();
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
    server::run(config)
}
