//! The CGI response of a forked function (`cgi_response=true`, RFC 3875 §6): its stdout may
//! start with a header block (`Status: 404 Not Found`, `Content-Type: ...`, `Location: ...`, any
//! other header, one per line) ended by a blank line; what follows is the body.
//!
//! Whether there is a block is decided on the first line: a block starts with `Name:` where
//! `Name` is a header token; anything else (an empty line, JSON, text with a space before any
//! colon) means the whole output is the body, sent with status 200 as without the option. The
//! decision needs no more than the bytes up to the first colon or non-token byte, so plain output
//! streams on at once. Inside a block every line must be a header; a block longer than
//! `MAX_HEAD`, or output ending inside it, is malformed (the call answers 502).

use std::borrow::Cow;
use std::sync::Arc;

use crate::http_server::canonical_name as canonical;
use crate::process::ProcessGroup;

/// The longest header block taken, blank line included.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Headers the function may not set: connection management and framing belong to the
/// watchdog (RFC 9110 §7.6.1; `Connection` may name more).
const HOP_BY_HOP: &[&str] = &[
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Te",
    "Trailer",
    "Upgrade",
    "Transfer-Encoding",
    "Content-Length",
    "Date",
];

/// A function's status and headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// Canonical names, in the order written, without the status and hop-by-hop headers.
    headers: Vec<(String, String)>,
}

impl Head {
    /// The response headers: the watchdog's own (`own`), then the function's. A function's
    /// `Content-Type` replaces the configured one; other headers of the watchdog's (such as
    /// `X-Duration-Seconds`) are not taken from the function.
    pub(crate) fn merge<'a>(&'a self, own: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let theirs = |name: &str| self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut out: Vec<(&str, &str)> = own
            .iter()
            .copied()
            .filter(|(n, _)| !(n.eq_ignore_ascii_case("Content-Type") && theirs(n)))
            .collect();
        for (name, value) in &self.headers {
            let watchdogs = own
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name) && !n.eq_ignore_ascii_case("Content-Type"));
            if !watchdogs {
                out.push((name, value));
            }
        }
        out
    }
}

/// The status and headers a response starts with: the function's head if it wrote one, else
/// 200 and the watchdog's own headers.
pub(crate) fn response<'a, 'o>(
    head: Option<&'a Head>,
    own: &'o [(&'a str, &'a str)],
) -> (u16, Cow<'o, [(&'a str, &'a str)]>) {
    match head {
        Some(head) => (head.status, Cow::Owned(head.merge(own))),
        None => (200, Cow::Borrowed(own)),
    }
}

/// What the bytes pushed so far turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not decided yet.
    More,
    /// No header block: everything pushed is body.
    NoHead,
    /// A header block; the body starts at this offset of everything pushed.
    Head(Head, usize),
    Malformed(String),
}

/// Reads a header block pushed in pieces of any size, looking at each byte once.
#[derive(Default)]
pub(crate) struct HeadParser {
    seen: Vec<u8>,
    /// Start of the line being read.
    line: usize,
    /// Next byte to look at.
    pos: usize,
    /// The first line's colon was found: this is a header block.
    block: bool,
    fields: Vec<(String, String)>,
}

impl HeadParser {
    pub(crate) fn push(&mut self, data: &[u8]) -> Step {
        self.seen.extend_from_slice(data);
        while !self.block && self.pos < self.seen.len() {
            match self.seen[self.pos] {
                b':' if self.pos > 0 => self.block = true,
                b if is_token(b) => self.pos += 1,
                _ => return Step::NoHead,
            }
        }
        while self.block {
            let Some(end) = self.seen[self.pos..].iter().position(|&b| b == b'\n').map(|i| self.pos + i)
            else {
                self.pos = self.seen.len();
                break;
            };
            if end >= MAX_HEAD {
                return too_long();
            }
            let mut line = &self.seen[self.line..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                return self.complete(end + 1);
            }
            match field(line) {
                Ok(f) => self.fields.push(f),
                Err(e) => return Step::Malformed(e),
            }
            self.line = end + 1;
            self.pos = end + 1;
        }
        match self.seen.len() > MAX_HEAD {
            true if self.block => too_long(),
            // A first line of 64 KiB of token characters is not a header.
            true => Step::NoHead,
            false => Step::More,
        }
    }

    /// The output ended before a decision.
    pub(crate) fn finish(&mut self) -> Step {
        if self.block {
            Step::Malformed("the output ended inside the header block (no blank line after it)".into())
        } else {
            Step::NoHead
        }
    }

    /// Everything pushed, for a body that turned out to include it.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.seen
    }

    fn complete(&mut self, body_at: usize) -> Step {
        match head(std::mem::take(&mut self.fields)) {
            Ok(head) => Step::Head(head, body_at),
            Err(e) => Step::Malformed(e),
        }
    }
}

fn too_long() -> Step {
    Step::Malformed(format!("header block longer than {} KiB", MAX_HEAD / 1024))
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One `Name: value` line.
fn field(line: &[u8]) -> Result<(String, String), String> {
    let shown = || line[..line.len().min(80)].escape_ascii().to_string();
    let colon =
        line.iter().position(|&b| b == b':').ok_or_else(|| format!("not a header line: {}", shown()))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(format!("not a header line: {}", shown()));
    }
    let value = value.trim_ascii();
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("control character in a header value: {}", shown()));
    }
    let value = std::str::from_utf8(value).map_err(|_| format!("header value is not UTF-8: {}", shown()))?;
    // Token bytes are ASCII.
    let name = String::from_utf8_lossy(name);
    Ok((canonical(&name), value.to_string()))
}

/// The block's fields as a status and the headers to send.
fn head(fields: Vec<(String, String)>) -> Result<Head, String> {
    let mut status = None;
    let mut location = false;
    // Names listed in Connection are hop-by-hop too.
    let mut listed: Vec<String> = Vec::new();
    for (name, value) in &fields {
        match name.as_str() {
            "Status" if status.is_some() => return Err("more than one Status header".into()),
            "Status" => status = Some(parse_status(value)?),
            "Location" => location = true,
            "Connection" => listed.extend(value.split(',').map(|n| canonical(n.trim()))),
            _ => {}
        }
    }
    let headers = fields
        .into_iter()
        .filter(|(name, _)| {
            name != "Status"
                && !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
                && !listed.iter().any(|l| l == name)
        })
        .collect();
    // A Location without a Status is a redirect (RFC 3875 §6.2.3).
    let status = status.unwrap_or(if location { 302 } else { 200 });
    Ok(Head { status, headers })
}

/// `404` or `404 Not Found`: a final status. The reason phrase sent is the watchdog's, as Go's
/// is.
fn parse_status(value: &str) -> Result<u16, String> {
    let code = value.split_once(' ').map_or(value, |(code, _)| code);
    match code.parse::<u16>() {
        Ok(n) if code.len() == 3 && (200..=599).contains(&n) => Ok(n),
        _ => Err(format!("Status {value:?} is not a status code from 200 to 599")),
    }
}

/// A function's stdout read through its header block (see `ChildIo`).
pub(crate) struct Reader {
    /// While the block is read.
    parser: Option<HeadParser>,
    head: Option<Head>,
    malformed: Option<String>,
    /// Body bytes read with the block, not yet handed on.
    held: Vec<u8>,
    held_at: usize,
    /// The call's processes, stopped when the block is malformed: the answer is decided.
    group: Arc<ProcessGroup>,
}

/// What the reader made of a piece of output.
pub(crate) enum Read {
    /// More output is needed.
    More,
    /// The block (if any) is complete: `held` bytes, if any, come next.
    Decided,
    /// The block is malformed; the function was stopped.
    Malformed,
}

impl Reader {
    pub(crate) fn new(group: Arc<ProcessGroup>) -> Reader {
        Reader {
            parser: Some(HeadParser::default()),
            head: None,
            malformed: None,
            held: Vec::new(),
            held_at: 0,
            group,
        }
    }

    /// Output still goes through the reader (the block, or body bytes it holds).
    pub(crate) fn active(&self) -> bool {
        self.parser.is_some() || self.held_at < self.held.len()
    }

    pub(crate) fn push(&mut self, data: &[u8]) -> Read {
        let Some(parser) = &mut self.parser else {
            return Read::Decided;
        };
        let step = parser.push(data);
        self.decide(step)
    }

    /// The output ended.
    pub(crate) fn finish(&mut self) -> Read {
        let Some(parser) = &mut self.parser else {
            return Read::Decided;
        };
        let step = parser.finish();
        self.decide(step)
    }

    fn decide(&mut self, step: Step) -> Read {
        let body_at = match step {
            Step::More => return Read::More,
            Step::NoHead => 0,
            Step::Head(head, at) => {
                self.head = Some(head);
                at
            }
            Step::Malformed(reason) => {
                self.parser = None;
                self.malformed = Some(reason);
                self.group.kill(crate::process::Kill::BadHead);
                return Read::Malformed;
            }
        };
        self.held = self.parser.take().map(HeadParser::into_bytes).unwrap_or_default();
        self.held_at = body_at;
        if self.held_at >= self.held.len() {
            self.held = Vec::new();
            self.held_at = 0;
        }
        Read::Decided
    }

    /// Moves held body bytes into `buf`; 0 when none are left.
    pub(crate) fn take_held(&mut self, buf: &mut [u8]) -> usize {
        let rest = &self.held[self.held_at..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.held_at += n;
        if self.held_at >= self.held.len() {
            self.held = Vec::new();
            self.held_at = 0;
        }
        n
    }

    pub(crate) fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// The head and the reason it was malformed, when the call is over.
    pub(crate) fn into_parts(self) -> (Option<Head>, Option<String>) {
        (self.head, self.malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_at_once(out: &[u8]) -> Step {
        let mut p = HeadParser::default();
        match p.push(out) {
            Step::More => p.finish(),
            step => step,
        }
    }

    fn byte_by_byte(out: &[u8]) -> Step {
        let mut p = HeadParser::default();
        for b in out {
            match p.push(std::slice::from_ref(b)) {
                Step::More => {}
                step => return step,
            }
        }
        p.finish()
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> Head {
        Head { status, headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn a_header_block_gives_status_headers_and_where_the_body_starts() {
        let out = b"Status: 404 Not Found\r\ncontent-type: text/html\nX-Thing:  a b \n\r\n<p>no</p>";
        let body_at = out.len() - b"<p>no</p>".len();
        let want = Step::Head(head(404, &[("Content-Type", "text/html"), ("X-Thing", "a b")]), body_at);
        assert_eq!(all_at_once(out), want);
        assert_eq!(byte_by_byte(out), want);
    }

    #[test]
    fn output_that_does_not_start_with_a_header_is_all_body() {
        for out in [
            &b"hello world\n"[..],
            b"{\"a\": 1}",
            b"\nStatus: 404\n\n",
            b": x\n\n",
            b"plain",
            b"",
            b"Hello world: this is text\n",
        ] {
            assert_eq!(all_at_once(out), Step::NoHead, "{out:?}");
            assert_eq!(byte_by_byte(out), Step::NoHead, "{out:?}");
        }
    }

    #[test]
    fn plain_output_is_recognised_before_its_first_newline() {
        let mut p = HeadParser::default();
        assert_eq!(p.push(b"Hel"), Step::More);
        assert_eq!(p.push(b"lo there"), Step::NoHead);
    }

    #[test]
    fn location_alone_redirects_and_status_wins_over_it() {
        let want = head(302, &[("Location", "/elsewhere")]);
        assert_eq!(all_at_once(b"Location: /elsewhere\n\n"), Step::Head(want, 22));
        let want = head(301, &[("Location", "https://x/")]);
        assert_eq!(all_at_once(b"Location: https://x/\nStatus: 301\n\n"), Step::Head(want, 34));
    }

    #[test]
    fn hop_by_hop_and_framing_headers_are_dropped() {
        let out = b"Connection: close, X-Private\nX-Private: 1\nTransfer-Encoding: chunked\nContent-Length: 3\nKeep-Alive: 5\nUpgrade: h2c\nDate: x\nSet-Cookie: a=1\nSet-Cookie: b=2\n\n";
        let want = head(200, &[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]);
        assert_eq!(all_at_once(out), Step::Head(want, out.len()));
    }

    #[test]
    fn malformed_blocks_are_refused_with_a_reason() {
        for (out, why) in [
            (&b"Status: 404\nthis is not a header\n\n"[..], "not a header line"),
            (b"Status: 404\n folded: x\n\n", "not a header line"),
            (b"Status: abc\n\n", "not a status code"),
            (b"Status: 101 Switching\n\n", "not a status code"),
            (b"Status: 4040\n\n", "not a status code"),
            (b"Status: 200\nStatus: 404\n\n", "more than one Status"),
            (b"X-A: a\x01b\n\n", "control character"),
            (b"X-A: \xff\n\n", "not UTF-8"),
            (b"Status: 404\nX-A: 1\n", "ended inside the header block"),
            (b"Status: 404", "ended inside the header block"),
        ] {
            for step in [all_at_once(out), byte_by_byte(out)] {
                match step {
                    Step::Malformed(reason) => assert!(reason.contains(why), "{out:?}: {reason}"),
                    other => panic!("{out:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_block_is_limited_to_64_kib() {
        let mut out = b"Status: 200\n".to_vec();
        while out.len() <= MAX_HEAD {
            out.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\n");
        }
        out.extend_from_slice(b"\nbody");
        match all_at_once(&out) {
            Step::Malformed(reason) => assert!(reason.contains("64 KiB"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let mut p = HeadParser::default();
        let mut last = Step::More;
        for piece in out.chunks(1000) {
            last = p.push(piece);
            if last != Step::More {
                break;
            }
        }
        assert!(matches!(last, Step::Malformed(_)), "{last:?}");
        // One endless line of token characters is not a block.
        assert_eq!(all_at_once(&vec![b'a'; MAX_HEAD + 10]), Step::NoHead);
    }

    #[test]
    fn the_functions_content_type_replaces_the_configured_one_and_ours_win_otherwise() {
        let h = head(201, &[("Content-Type", "text/html"), ("X-Duration-Seconds", "9"), ("X-A", "1")]);
        let own = [("Content-Type", "text/plain"), ("X-Duration-Seconds", "0.1")];
        assert_eq!(
            h.merge(&own),
            vec![("X-Duration-Seconds", "0.1"), ("Content-Type", "text/html"), ("X-A", "1")]
        );
        let h = head(200, &[("X-A", "1")]);
        assert_eq!(h.merge(&own), vec![own[0], own[1], ("X-A", "1")]);
    }
}
