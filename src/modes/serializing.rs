//! serializing mode: the whole request body is read, then given to one process per
//! request; its whole stdout becomes the response, with `X-Duration-Seconds`. Bodies and
//! outputs are held in spools (1 MiB in memory, the rest in a temporary file), so a large one
//! costs disk, not memory.

use std::io::Write;

use crate::cgi_response;
use crate::child_io::{self, Next};
use crate::http_server::Exchange;
use crate::io_buffer::IoBuffer;
use crate::process::Kill;
use crate::spool::Spool;

use super::fork;
use super::handler::{Context, Handler, Outcome, duration_header};

const SPOOL_MEMORY: usize = 1024 * 1024;
/// Input up to this size is written to stdin at once: an empty pipe always takes it whole.
const DIRECT_INPUT: u64 = 4096;

pub(crate) struct Serializing;

impl Handler for Serializing {
    fn handle(&self, mut ex: Exchange, ctx: &Context) -> Outcome {
        let mut buf = IoBuffer::take();
        let mut input = Spool::new(SPOOL_MEMORY);
        loop {
            match ex.read_body(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = input.push(&buf[..n]) {
                        let duration = duration_header(ex.info.received);
                        let msg = format!("cannot buffer the request body: {e}\n");
                        return super::handler::text(ex, 500, &msg, &[("X-Duration-Seconds", &duration)]);
                    }
                }
                Err(e) => {
                    let duration = duration_header(ex.info.received);
                    log::info!("{} {}: {}", ex.info.method, ex.info.uri, e.message());
                    let msg = format!("{}\n", e.message());
                    return super::handler::text(ex, e.status(), &msg, &[("X-Duration-Seconds", &duration)]);
                }
            }
        }

        if ctx.config.marshal_request {
            let mut envelope = Spool::new(SPOOL_MEMORY);
            if let Err(e) = crate::envelope::write(ex.headers(), &mut input, &mut envelope) {
                let duration = duration_header(ex.info.received);
                let msg = format!("cannot marshal the request: {e}\n");
                return super::handler::text(ex, 500, &msg, &[("X-Duration-Seconds", &duration)]);
            }
            input = envelope;
        }

        let mut call = match fork::start(&ex, ctx) {
            Ok(call) => call,
            Err(e) => {
                let duration = duration_header(ex.info.received);
                return fork::spawn_failed(ex, ctx, &e, &[("X-Duration-Seconds", &duration)]);
            }
        };
        let mut output = Spool::new(SPOOL_MEMORY);
        let mut output_failed = None;
        let mut late = false;
        let stdin = call.f.stdin.take();
        let group = std::sync::Arc::clone(&call.f.group);
        let (io, respond_by, ends_at) = (&mut call.io, call.respond_by, call.ends_at);
        std::thread::scope(|s| {
            if let Some(mut stdin) = stdin {
                match input.as_slice() {
                    Some(small) if input.len() <= DIRECT_INPUT => {
                        let _ = stdin.write_all(small);
                    }
                    _ => {
                        let input = &mut input;
                        crate::threads::spawn_scoped(s, move || {
                            if let Ok(mut reader) = input.reader() {
                                child_io::feed_reader(&mut reader, stdin);
                            }
                        });
                    }
                }
            }
            loop {
                let respond = if late { None } else { respond_by };
                let deadline = match (respond, ends_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match io.next(&mut buf, deadline) {
                    Ok(Next::Stdout(n)) => {
                        if output_failed.is_none()
                            && let Err(e) = output.push(&buf[..n])
                        {
                            output_failed = Some(e);
                            group.kill(Kill::Cleanup);
                        }
                    }
                    Ok(Next::StdoutEnd) | Err(_) => break,
                    Ok(Next::InputDone | Next::StdoutReady(_) | Next::HeadDone) => {}
                    Ok(Next::Deadline) if ends_at.is_some_and(|t| std::time::Instant::now() >= t) => {
                        // exec_timeout: stop waiting even if a descendant that left the group
                        // still holds stdout open.
                        group.kill(Kill::ExecTimeout);
                        io.close_stdout();
                        break;
                    }
                    Ok(Next::Deadline) => {
                        late = true;
                        group.kill(Kill::WriteTimeout);
                    }
                }
            }
        });
        let limit = call.limit;
        let ended = fork::end(call, ctx, &mut buf);
        let duration = duration_header(ex.info.received);
        let timing = [("X-Duration-Seconds", duration.as_str())];
        if ended.killed_for == Some(Kill::WriteTimeout) {
            return super::handler::text(ex, 504, &fork::write_timeout_message(&ctx.config), &timing);
        }
        if let Some(reason) = ended.refused_head() {
            let msg = fork::malformed_head(&format!("{} {}", ex.info.method, ex.info.uri), reason);
            return super::handler::text(ex, 502, &msg, &timing);
        }
        if ended.timed_out() || !ended.status.success() {
            let reason = fork::failure(&ended, limit);
            log::warn!("{} {}: {reason}", ex.info.method, ex.info.uri);
            // The reference sets the configured Content-Type before it knows the outcome.
            let headers = [("Content-Type", ctx.config.content_type.as_str()), timing[0]];
            let bytes = ex.respond(500, &headers, reason.as_bytes());
            return super::handler::Outcome { status: 500, bytes };
        }
        if let Some(e) = output_failed {
            return super::handler::text(
                ex,
                500,
                &format!("cannot buffer the function's output: {e}\n"),
                &timing,
            );
        }
        let own = [("Content-Type", ctx.config.content_type.as_str()), timing[0]];
        let (status, headers) = cgi_response::response(ended.head.as_ref(), &own);
        super::handler::send_spool(ex, status, &headers, &mut output)
    }
}
