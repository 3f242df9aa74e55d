//! What the watchdog needs to know about a request, read once from its head, and the checks a
//! request must pass before anything reads its body: refused here are heads tiny_http would
//! misread (a Content-Length it cannot parse is no body to it, so the body would be read as the
//! next request) or drain at any cost (a length no buffer can hold). Pure, table-tested.

use std::time::{Duration, Instant};

use crate::duration::parse_config_duration;

/// tiny_http reads a Content-Length body of at most this many bytes while parsing the head
/// (unless `Expect: 100-continue`), so such a body is already in memory when we get the request.
pub(crate) const PRELOAD_LIMIT: u64 = 1024;
/// Go's `http.DefaultMaxHeaderBytes`, as the reference uses.
pub(crate) const MAX_HEADER_BYTES: usize = 1 << 20;
/// Beyond this, tiny_http's drain of an unread body (see `refusal`) would ask for more address
/// space than a 64-bit process has, so such a request is refused by closing its connection.
pub(crate) const ABSURD_CONTENT_LENGTH: u64 = 1 << 46;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding, or an upgrade request).
    Empty,
    Length(u64),
    Chunked,
}

/// The request head, validated.
#[derive(Debug, Clone)]
pub(crate) struct RequestInfo {
    pub(crate) method: String,
    /// The request target as sent: path and raw query.
    pub(crate) uri: String,
    /// Percent-decoded path, as Go's `r.URL.Path`.
    pub(crate) path: Vec<u8>,
    /// The raw query, if non-empty.
    pub(crate) query: Option<String>,
    pub(crate) http10: bool,
    /// tiny_http keeps reading requests from this connection after this one.
    pub(crate) keep_alive: bool,
    pub(crate) framing: Framing,
    /// The body is already in memory (reading it never blocks).
    pub(crate) preloaded: bool,
    pub(crate) host: Option<String>,
    pub(crate) call_id: Option<String>,
    /// A valid, positive `X-Timeout`.
    pub(crate) x_timeout: Option<Duration>,
    /// `User-Agent: kube-probe/...`: no request log line.
    pub(crate) kube_probe: bool,
    /// `Connection: upgrade` with `Upgrade: <protocol>`: the protocol asked for.
    pub(crate) upgrade: Option<String>,
    pub(crate) received: Instant,
}

impl RequestInfo {
    pub(crate) fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Makes this the request `method target` (`/_/ready` calls the function as `GET ready_path`;
    /// config has checked that `ready_path` parses).
    pub(crate) fn retarget(&mut self, method: &str, target: &str) -> Result<(), Rejection> {
        let (path, query) = split_target(target)?;
        self.method = method.to_string();
        self.uri = target.to_string();
        (self.path, self.query) = (path, query);
        Ok(())
    }
}

/// A request refused before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 400, with the reason.
    BadRequest(&'static str),
    /// 400 where the body's extent is unknown: the connection must not be reused.
    BadFraming(&'static str),
    /// 431.
    HeadersTooLarge,
    /// 501: a Transfer-Encoding other than chunked; the body's extent is unknown.
    UnsupportedEncoding,
    /// A Content-Length no drain could survive; the connection is closed without an answer.
    AbsurdLength(u64),
}

impl Rejection {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Rejection::BadRequest(_) | Rejection::BadFraming(_) => 400,
            Rejection::HeadersTooLarge => 431,
            Rejection::UnsupportedEncoding => 501,
            Rejection::AbsurdLength(_) => 413,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Rejection::BadRequest(why) | Rejection::BadFraming(why) => format!("400 Bad Request: {why}\n"),
            Rejection::HeadersTooLarge => "431 Request Header Fields Too Large\n".into(),
            Rejection::UnsupportedEncoding => "501 Not Implemented: unsupported Transfer-Encoding\n".into(),
            Rejection::AbsurdLength(n) => format!("413 Content Too Large: {n} bytes\n"),
        }
    }
}

/// The head of a request, independent of tiny_http so the checks can be unit tested.
pub(crate) struct Head<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) http10: bool,
    pub(crate) headers: Vec<(&'a str, &'a str)>,
    /// What tiny_http made of Content-Length (`None` when absent or unparsable).
    pub(crate) body_length: Option<u64>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn contains_token(value: &str, token: &str) -> bool {
    value.to_ascii_lowercase().contains(token)
}

pub(crate) fn inspect(head: &Head<'_>, received: Instant) -> Result<RequestInfo, Rejection> {
    let size = head.method.len()
        + head.target.len()
        + head.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
    if size > MAX_HEADER_BYTES {
        return Err(Rejection::HeadersTooLarge);
    }
    if head.method.is_empty() || !head.method.bytes().all(is_tchar) {
        return Err(Rejection::BadRequest("invalid method"));
    }
    if head.headers.iter().any(|(k, _)| k.is_empty() || !k.bytes().all(is_tchar)) {
        return Err(Rejection::BadRequest("invalid header name"));
    }
    // RFC 9110 §5.5: no control characters but tab in a field value (Go answers 400 too).
    if head.headers.iter().any(|(_, v)| v.bytes().any(|b| b.is_ascii_control() && b != b'\t')) {
        return Err(Rejection::BadRequest("invalid header value"));
    }
    fn all<'h, 'n>(head: &'h Head<'_>, name: &'n str) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
        head.headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
    let get = |name: &'static str| all(head, name);
    let first = |name: &'static str| all(head, name).next();

    let hosts: Vec<&str> = get("Host").collect();
    if hosts.len() > 1 {
        return Err(Rejection::BadRequest("too many Host headers"));
    }
    if hosts.is_empty() && !head.http10 {
        return Err(Rejection::BadRequest("missing required Host header"));
    }

    let connection = get("Connection").collect::<Vec<_>>().join(",");
    let upgrade = contains_token(&connection, "upgrade");
    // The same rule tiny_http applies to decide whether it reads another request.
    let keep_alive = !(contains_token(&connection, "close")
        || upgrade
        || (head.http10 && !contains_token(&connection, "keep-alive")));

    let encodings: Vec<&str> = get("Transfer-Encoding").map(str::trim).collect();
    let lengths: Vec<&str> = get("Content-Length").map(str::trim).collect();
    if !encodings.is_empty() && !encodings.iter().all(|e| e.eq_ignore_ascii_case("chunked")) {
        return Err(Rejection::UnsupportedEncoding);
    }
    let framing = if upgrade {
        // tiny_http hands the rest of the connection out as the "body" of an upgrade request:
        // only a websocket relay reads it, as the client's side of the session.
        Framing::Empty
    } else if !encodings.is_empty() {
        Framing::Chunked
    } else if let Some(first_len) = lengths.first() {
        if lengths.iter().any(|l| l != first_len) {
            return Err(Rejection::BadFraming("conflicting Content-Length headers"));
        }
        // tiny_http ignores a Content-Length it cannot parse (a `usize`: 4 GiB and more on a
        // 32-bit target) and reads the body as the next request: such a request is refused,
        // as too large when the length is a number this build cannot frame.
        let digits = !first_len.is_empty() && first_len.bytes().all(|b| b.is_ascii_digit());
        let Some(n) = head.body_length.filter(|_| digits) else {
            if digits {
                return Err(Rejection::AbsurdLength(first_len.parse().unwrap_or(u64::MAX)));
            }
            return Err(Rejection::BadFraming("invalid Content-Length"));
        };
        if n > ABSURD_CONTENT_LENGTH {
            return Err(Rejection::AbsurdLength(n));
        }
        if n == 0 { Framing::Empty } else { Framing::Length(n) }
    } else {
        Framing::Empty
    };
    let expect_continue = first("Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let preloaded = match framing {
        Framing::Empty => true,
        Framing::Length(n) => n <= PRELOAD_LIMIT && !expect_continue,
        Framing::Chunked => false,
    };

    let (path, query) = split_target(head.target)?;
    let x_timeout = first("X-Timeout")
        .and_then(|v| parse_config_duration(v.trim()).ok())
        .filter(|nanos| *nanos > 0)
        .map(|nanos| Duration::from_nanos(nanos as u64));

    Ok(RequestInfo {
        method: head.method.to_string(),
        uri: head.target.to_string(),
        path,
        query,
        http10: head.http10,
        keep_alive,
        framing,
        preloaded,
        host: hosts.first().map(|h| h.to_string()),
        call_id: first("X-Call-Id").map(str::to_string),
        x_timeout,
        kube_probe: first("User-Agent").is_some_and(|ua| ua.starts_with("kube-probe")),
        upgrade: if upgrade {
            first("Upgrade").map(|p| p.trim().to_string()).filter(|p| !p.is_empty())
        } else {
            None
        },
        received,
    })
}

/// Go's `textproto.CanonicalMIMEHeaderKey` for a valid token: `x-custom-HEADER` becomes
/// `X-Custom-Header` (request::inspect has already refused names that are not tokens).
pub(crate) fn canonical_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// The origin form (`/path?query`) of a request target, also of the absolute form
/// (`http://host/path?query`); `None` for anything else.
pub(crate) fn origin_form(target: &str) -> Option<&str> {
    if let Some(rest) = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        return Some(rest.find(['/', '?']).map_or("/", |i| &rest[i..]));
    }
    target.starts_with('/').then_some(target)
}

/// A request target the watchdog can serve (config uses it to check `ready_path`).
pub(crate) fn valid_target(target: &str) -> bool {
    split_target(target).is_ok()
}

/// Splits a request target into its decoded path and raw query.
fn split_target(target: &str) -> Result<(Vec<u8>, Option<String>), Rejection> {
    if target == "*" {
        return Ok((b"*".to_vec(), None));
    }
    let origin = origin_form(target).ok_or(Rejection::BadRequest("invalid request target"))?;
    if origin.bytes().any(|b| b.is_ascii_control()) {
        return Err(Rejection::BadRequest("control character in request target"));
    }
    let (raw_path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, (!q.is_empty()).then(|| q.to_string())),
        None => (origin, None),
    };
    let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
    let path = percent_decode(raw_path.as_bytes()).ok_or(Rejection::BadRequest("invalid URL escape"))?;
    Ok((path, query))
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(target: &'a str, headers: &[(&'a str, &'a str)]) -> Head<'a> {
        let body_length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.parse().ok());
        Head { method: "POST", target, http10: false, headers: headers.to_vec(), body_length }
    }

    fn ok(h: &Head<'_>) -> RequestInfo {
        inspect(h, Instant::now()).unwrap_or_else(|e| panic!("{}: {e:?}", h.target))
    }

    fn rejected(h: &Head<'_>) -> Rejection {
        inspect(h, Instant::now()).expect_err("should be rejected")
    }

    #[test]
    fn splits_and_decodes_targets() {
        let i = ok(&head("/some/path?a=1&b=%20x", &[("Host", "x")]));
        assert_eq!((i.path.as_slice(), i.query.as_deref()), (&b"/some/path"[..], Some("a=1&b=%20x")));
        let i = ok(&head("/a%20b%2Fc", &[("Host", "x")]));
        assert_eq!(i.path, b"/a b/c");
        let i = ok(&head("http://example.com/x?y", &[("Host", "x")]));
        assert_eq!((i.path.as_slice(), i.query.as_deref()), (&b"/x"[..], Some("y")));
        let i = ok(&head("/plain?", &[("Host", "x")]));
        assert_eq!(i.query, None, "an empty query is no query");
        assert_eq!(rejected(&head("/bad%zz", &[("Host", "x")])), Rejection::BadRequest("invalid URL escape"));
        assert_eq!(
            rejected(&head("nope", &[("Host", "x")])),
            Rejection::BadRequest("invalid request target")
        );
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(rejected(&head("/", &[])), Rejection::BadRequest("missing required Host header"));
        assert_eq!(
            rejected(&head("/", &[("Host", "a"), ("host", "b")])),
            Rejection::BadRequest("too many Host headers")
        );
        let mut h = head("/", &[]);
        h.http10 = true;
        assert!(!ok(&h).keep_alive, "HTTP/1.0 without keep-alive closes");
    }

    #[test]
    fn framing_rules() {
        let i = ok(&head("/", &[("Host", "x"), ("Content-Length", "5")]));
        assert_eq!((i.framing, i.preloaded), (Framing::Length(5), true));
        let i = ok(&head("/", &[("Host", "x"), ("Content-Length", "5"), ("Expect", "100-continue")]));
        assert_eq!((i.framing, i.preloaded), (Framing::Length(5), false));
        let i = ok(&head("/", &[("Host", "x"), ("Content-Length", "2048")]));
        assert_eq!((i.framing, i.preloaded), (Framing::Length(2048), false));
        let i = ok(&head("/", &[("Host", "x"), ("Transfer-Encoding", "Chunked")]));
        assert_eq!(i.framing, Framing::Chunked);
        let i = ok(&head("/", &[("Host", "x"), ("Content-Length", "0")]));
        assert_eq!(i.framing, Framing::Empty);
        let i = ok(&head("/", &[("Host", "x"), ("Connection", "Upgrade"), ("Content-Length", "9")]));
        assert_eq!((i.framing, i.keep_alive), (Framing::Empty, false));
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("Content-Length", "5x")])),
            Rejection::BadFraming("invalid Content-Length")
        );
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("Content-Length", "-1")])),
            Rejection::BadFraming("invalid Content-Length")
        );
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("Content-Length", "5"), ("Content-Length", "6")])),
            Rejection::BadFraming("conflicting Content-Length headers")
        );
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("Transfer-Encoding", "gzip")])),
            Rejection::UnsupportedEncoding
        );
        let huge = (ABSURD_CONTENT_LENGTH + 1).to_string();
        assert!(matches!(
            rejected(&head("/", &[("Host", "x"), ("Content-Length", &huge)])),
            Rejection::AbsurdLength(_)
        ));
        assert!(
            ok(&head("/", &[("Host", "x"), ("Content-Length", "100000000000")])).framing
                == Framing::Length(100_000_000_000)
        );
        // A number tiny_http could not read as a usize (4 GiB and more on a 32-bit target):
        // too large for this build, never a body of unknown extent.
        let mut unread = head("/", &[("Host", "x"), ("Content-Length", "4294967297")]);
        unread.body_length = None;
        assert_eq!(rejected(&unread), Rejection::AbsurdLength(4_294_967_297));
        let mut beyond = head("/", &[("Host", "x"), ("Content-Length", "99999999999999999999999")]);
        beyond.body_length = None;
        assert_eq!(rejected(&beyond), Rejection::AbsurdLength(u64::MAX));
    }

    #[test]
    fn header_limits_and_names() {
        let big = "x".repeat(MAX_HEADER_BYTES);
        assert_eq!(rejected(&head("/", &[("Host", "x"), ("X-Big", &big)])), Rejection::HeadersTooLarge);
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("Bad Name", "v")])),
            Rejection::BadRequest("invalid header name")
        );
    }

    #[test]
    fn control_characters_in_header_values_are_refused() {
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("X-A", "a\u{0}b")])),
            Rejection::BadRequest("invalid header value")
        );
        assert_eq!(
            rejected(&head("/", &[("Host", "x"), ("X-A", "a\u{7f}")])),
            Rejection::BadRequest("invalid header value")
        );
        assert_eq!(ok(&head("/", &[("Host", "x"), ("X-A", "tab\there")])).method, "POST");
    }

    #[test]
    fn per_call_headers() {
        let i = ok(&head(
            "/",
            &[
                ("Host", "x"),
                ("X-Timeout", "1500ms"),
                ("X-Call-Id", "abc"),
                ("User-Agent", "kube-probe/1.29"),
            ],
        ));
        assert_eq!(i.x_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(i.call_id.as_deref(), Some("abc"));
        assert!(i.kube_probe);
        let i = ok(&head("/", &[("Host", "x"), ("X-Timeout", "2"), ("User-Agent", "curl/8")]));
        assert_eq!(i.x_timeout, Some(Duration::from_secs(2)));
        assert!(!i.kube_probe);
        assert_eq!(ok(&head("/", &[("Host", "x"), ("X-Timeout", "soon")])).x_timeout, None);
        assert_eq!(ok(&head("/", &[("Host", "x"), ("X-Timeout", "0")])).x_timeout, None);
    }

    #[test]
    fn canonical_header_names_follow_go() {
        for (raw, want) in [
            ("content-type", "Content-Type"),
            ("X-CUSTOM-header", "X-Custom-Header"),
            ("x", "X"),
            ("a--b", "A--B"),
            ("weird_name", "Weird_name"),
            ("x-forwarded-for", "X-Forwarded-For"),
        ] {
            assert_eq!(canonical_name(raw), want, "{raw}");
        }
    }
}
