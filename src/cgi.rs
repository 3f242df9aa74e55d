//! The CGI-style environment of a forked function: `Http_*` variables, as Go's watchdog sets
//! them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::http_server::{Exchange, Framing, canonical_name};

/// Header names whose `Http_` variable the watchdog sets itself; a request header must not
/// spoof them (Go's watchdog lets a `Method: X` header overwrite `Http_Method`). Host and Transfer-Encoding are re-derived from the request, as Go
/// moves them out of `r.Header`.
const RESERVED: &[&str] = &["Method", "Path", "Query", "Host", "Transfer-Encoding"];

/// `Http_<Header_Name>` for each request header (first value wins), then the watchdog's own
/// variables, which override anything a header produced.
pub(crate) fn environment(ex: &Exchange) -> Vec<(OsString, OsString)> {
    let info = &ex.info;
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(16);
    let mut seen: Vec<String> = Vec::with_capacity(16);
    for (name, value) in ex.headers() {
        let key = canonical_name(name);
        if seen.contains(&key)
            || key.eq_ignore_ascii_case("Proxy") // httpoxy: HTTP_PROXY must never come from a client
            || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&key))
            || value.bytes().any(|b| b == 0)
        {
            continue;
        }
        env.push((format!("Http_{}", key.replace('-', "_")).into(), value.into()));
        seen.push(key);
    }
    env.push(("Http_Method".into(), info.method.clone().into()));
    if !info.path.is_empty() && !info.path.contains(&0) {
        env.push(("Http_Path".into(), OsString::from_vec(info.path.clone())));
    }
    if let Some(q) = &info.query {
        env.push(("Http_Query".into(), q.into()));
    }
    if info.framing == Framing::Chunked {
        env.push(("Http_Transfer_Encoding".into(), "chunked".into()));
    }
    if let Some(host) = &info.host {
        env.push(("Http_Host".into(), host.into()));
    }
    env
}
