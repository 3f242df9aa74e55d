//! GETs of the issuer's documents (OpenID discovery, the key set) over plain HTTP, with time
//! limits: a connect, and a whole answer, never take longer than `Limits` allows.

use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deadlines::Deadlines;
use crate::modes::relay::{self, Body, Outgoing, Pool};

/// Longest document accepted (a key set is a few KiB).
const MAX_DOCUMENT: u64 = 1 << 20;

/// Time limits of one GET.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) connect: Duration,
    pub(crate) total: Duration,
}

/// An `http://host[:port]/path` URL taken apart.
#[derive(Debug, PartialEq)]
pub(crate) struct Url {
    /// `host:port` as written, for the Host header.
    pub(crate) authority: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) target: String,
}

impl Url {
    pub(crate) fn parse(url: &str) -> Result<Url, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                format!(
                    "{url}: https is not supported: the issuer must be reachable over plain HTTP (in a cluster, the gateway's service address)"
                )
            } else {
                format!("{url}: not an http:// URL")
            });
        };
        let (authority, target) = match rest.find(['/', '?', '#']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let target = target.split('#').next().unwrap_or("/");
        let target = if target.starts_with('/') { target.to_string() } else { format!("/{target}") };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url}: no host, or credentials in the URL"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:port`.
            Some(v6) => match v6.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
                None => return Err(format!("{url}: invalid host")),
            },
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| format!("{url}: invalid port {p:?}"))?,
        };
        if host.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("{url}: invalid URL"));
        }
        Ok(Url { authority: authority.to_string(), host: host.to_string(), port, target })
    }

    fn addr(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("cannot resolve {}: no address", self.host))
    }
}

/// GETs `url`; the body of a 200 answer, else why not.
pub(crate) fn get(url: &str, deadlines: &Arc<Deadlines>, limits: Limits) -> Result<Vec<u8>, String> {
    let parsed = Url::parse(url)?;
    let addr = parsed.addr()?;
    let pool = Pool::new(addr, 0).connect_timeout(limits.connect);
    let headers = [
        ("Host", parsed.authority.as_str()),
        ("User-Agent", "openfaas-watchdog"),
        ("Accept", "application/json"),
    ];
    let mut req = Outgoing { method: "GET", target: &parsed.target, headers: &headers, body: Body::None };
    let ends_at = Some(Instant::now() + limits.total);
    let answer = pool
        .call(&mut req, deadlines, relay::Limits { ends_at, head_by: None })
        .map_err(|f| format!("GET {url}: {}", failure(f, limits)))?;
    let mut body = Vec::new();
    answer
        .body
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: reading the answer: {e}"))?;
    if body.len() as u64 > MAX_DOCUMENT {
        return Err(format!("GET {url}: the answer is larger than 1 MiB"));
    }
    if answer.status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string();
        return Err(format!("GET {url}: status code: {}, body: {text}", answer.status));
    }
    Ok(body)
}

fn failure(f: relay::Failure, limits: Limits) -> String {
    match f {
        relay::Failure::Connect(e) => format!("cannot connect: {e}"),
        relay::Failure::TimedOut => format!("no complete answer within {:?}", limits.total),
        relay::Failure::ClientBody => "no request body to send".into(),
        relay::Failure::Request(why) | relay::Failure::Upstream(why) => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_or_refused() {
        let ok = |url: &str, host: &str, port: u16, target: &str| {
            let u = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((u.host.as_str(), u.port, u.target.as_str()), (host, port, target), "{url}");
        };
        ok(
            "http://gateway.openfaas:8080/.well-known/openid-configuration",
            "gateway.openfaas",
            8080,
            "/.well-known/openid-configuration",
        );
        ok(
            "http://127.0.0.1:8000/.well-known/jwks.json?x=1#frag",
            "127.0.0.1",
            8000,
            "/.well-known/jwks.json?x=1",
        );
        ok("http://localhost", "localhost", 80, "/");
        ok("http://[::1]:9000/keys", "::1", 9000, "/keys");
        ok("http://host?a=b", "host", 80, "/?a=b");
        for bad in [
            "https://gw/keys",
            "ftp://x/",
            "http://",
            "http://u:p@host/",
            "http://host:99999/",
            "http://host:x/",
            "http://host/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
