//! A shadow of tiny_http's request framing, fed with every byte tiny_http receives on a
//! connection (`intercept` hands it each `recv`): where each request head starts and ends, where
//! its body ends by tiny_http's own rules, and which heads tiny_http must never see.
//!
//! tiny_http mishandles some heads in ways no answer of ours can repair once it has read them
//! (see the module note in `mod.rs`): a request line of version 2.0 or 3.0 deadlocks its
//! connection thread for good; a byte beyond ASCII or a head line ended by a bare LF makes it
//! close the connection without an answer (or wait for a CRLF that never comes); a head line
//! grows in memory for as long as the client sends. The scan finds such a head at the byte
//! where it becomes one, and the bytes from that head on are withheld from tiny_http, which then
//! sees the connection end; the watchdog answers in its place.
//!
//! To know where the next head starts, the scan follows bodies exactly as tiny_http frames
//! them: its header lookups take the first header of a name, a `Transfer-Encoding` of any value
//! means chunked, a `Content-Length` counts only if it parses as a `usize`, `Connection:
//! upgrade` makes the rest of the connection the body, and its chunked decoder's grammar (no
//! trailers). Where tiny_http stops reading heads (close, upgrade, an error it answers itself),
//! the scan stops looking. Pure: bytes in, verdicts out, table-tested below.

use std::time::Instant;

/// What tiny_http may see of the bytes just received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// All of them.
    Pass,
    /// The first `keep` bytes only; after them the connection's input ends for tiny_http.
    /// `refusal`: what the client is told, once the requests before it are answered.
    Stop { keep: usize, refusal: Option<Refusal> },
}

/// Why a head was withheld from tiny_http, and the answer the client gets instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// HTTP/2.0 or 3.0 on an HTTP/1 connection.
    Version { prior_knowledge: bool },
    /// A byte beyond ASCII in the head.
    NonAscii,
    /// A head line ended by LF alone.
    BareLf,
    /// More than `MAX_HEAD` bytes without the end of the head.
    TooLarge,
}

impl Refusal {
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::Version { prior_knowledge: false } => 505,
            Refusal::Version { prior_knowledge: true } | Refusal::NonAscii | Refusal::BareLf => 400,
            Refusal::TooLarge => 431,
        }
    }

    /// The answer's body (the Go watchdog's wording where it answers the same way).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Version { prior_knowledge: false } => {
                "505 HTTP Version Not Supported: unsupported protocol version"
            }
            Refusal::Version { prior_knowledge: true } => "",
            Refusal::NonAscii => {
                "400 Bad Request: a byte beyond ASCII in the request head (percent-encode the path, \
                 use ASCII header values)\n"
            }
            Refusal::BareLf => "400 Bad Request: request head lines must end with CRLF\n",
            Refusal::TooLarge => "431 Request Header Fields Too Large\n",
        }
    }

    /// For the metric's label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Version { .. } => "version",
            Refusal::NonAscii => "non_ascii",
            Refusal::BareLf => "bare_lf",
            Refusal::TooLarge => "too_large",
        }
    }

    /// For the log line.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Version { .. } => "an HTTP/2 or HTTP/3 request line on an HTTP/1 connection",
            Refusal::NonAscii => "a byte beyond ASCII in the request head",
            Refusal::BareLf => "a request head line ended by a bare LF",
            Refusal::TooLarge => "a request head larger than 1 MiB",
        }
    }
}

/// Go's `http.DefaultMaxHeaderBytes`, as the Go watchdog uses: a head that has not ended within
/// this many bytes gets 431.
pub(crate) const MAX_HEAD: u64 = 1 << 20;
/// The longest chunk-size line (before any extension) let through to tiny_http's decoder, which
/// keeps it in memory whole.
const MAX_CHUNK_LINE: usize = 4096;

/// The scan of one connection.
#[derive(Debug)]
pub(crate) struct HeadScan {
    state: State,
    /// Heads passed to tiny_http whole.
    heads: u64,
    /// When the first byte of the head now being received arrived.
    head_started: Option<Instant>,
    /// Heads whose bodies have arrived whole (a body of any framing, or none).
    bodies: u64,
}

#[derive(Debug)]
enum State {
    Head(Box<Head>),
    /// A Content-Length body: bytes left; then a head, unless tiny_http reads no more.
    Body {
        left: u64,
        last: bool,
    },
    Chunked {
        chunk: Chunk,
        last: bool,
    },
    /// tiny_http reads no more heads on this connection: bytes pass unread by the scan.
    Done,
    /// A head was withheld: nothing more passes.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    /// The bytes of a chunk size so far (up to CR or `;`).
    Size(Vec<u8>),
    /// After `;`: an extension, skipped up to CR.
    Extension(Option<usize>),
    /// CR seen after the size: LF must follow.
    SizeLf(Option<usize>),
    Data(usize),
    DataCr,
    DataLf,
    /// After the last chunk's size line: CR LF must follow (no trailers).
    EndCr,
    EndLf,
}

impl HeadScan {
    pub(crate) fn new() -> HeadScan {
        HeadScan { state: State::Head(Box::default()), heads: 0, head_started: None, bodies: 0 }
    }

    /// Heads passed to tiny_http whole that become requests.
    pub(crate) fn heads(&self) -> u64 {
        self.heads
    }

    /// Part of a head has arrived, and not all of it (since when).
    pub(crate) fn partial_head(&self) -> Option<Instant> {
        match &self.state {
            State::Head(h) if h.bytes > 0 => self.head_started,
            _ => None,
        }
    }

    /// The body of the `head`-th head (from 1) has arrived whole: for a chunked body, its last
    /// chunk came (tiny_http's decoder reports a body cut inside a chunk as a clean end). The
    /// scan may be several requests ahead of whoever asks.
    pub(crate) fn body_complete(&self, head: u64) -> bool {
        self.bodies >= head
    }

    /// Scans bytes tiny_http just received, received at `now`.
    pub(crate) fn feed(&mut self, data: &[u8], now: Instant) -> Verdict {
        let mut at = 0;
        while at < data.len() {
            match &mut self.state {
                State::Done => return Verdict::Pass,
                State::Stopped => return Verdict::Stop { keep: at, refusal: None },
                State::Body { left, last } => {
                    let take = (data.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.bodies = self.heads;
                        self.state = next_head(*last);
                    }
                }
                State::Chunked { chunk, last } => {
                    let last = *last;
                    match step_chunk(chunk, &data[at..]) {
                        ChunkStep::More(n) => at += n,
                        ChunkStep::Ended(n) => {
                            at += n;
                            self.bodies = self.heads;
                            self.state = next_head(last);
                        }
                        ChunkStep::Broken(n) => {
                            // tiny_http's decoder fails here (or, for an endless size line, would
                            // keep it all in memory): the body reader sees the input end instead.
                            self.state = State::Stopped;
                            return Verdict::Stop { keep: at + n, refusal: None };
                        }
                    }
                }
                State::Head(head) => {
                    if head.bytes == 0 {
                        self.head_started = Some(now);
                    }
                    match head.step(&data[at..]) {
                        HeadStep::More(n) => at += n,
                        HeadStep::Refuse(n, refusal) => {
                            self.state = State::Stopped;
                            return Verdict::Stop { keep: at + n, refusal: Some(refusal) };
                        }
                        HeadStep::Ended(n) => {
                            at += n;
                            // A head tiny_http answers itself never becomes a request (and it
                            // reads no more): it is not counted.
                            if !head.answered_by_tiny_http() {
                                self.heads += 1;
                            }
                            self.head_started = None;
                            self.state = head.framing();
                            if !matches!(self.state, State::Body { .. } | State::Chunked { .. }) {
                                self.bodies = self.heads;
                            }
                        }
                    }
                }
            }
        }
        Verdict::Pass
    }
}

fn next_head(last: bool) -> State {
    if last { State::Done } else { State::Head(Box::default()) }
}

enum HeadStep {
    /// All `n` bytes belong to the head so far.
    More(usize),
    /// The head ended after `n` bytes.
    Ended(usize),
    /// The head must not reach tiny_http; it started in an earlier piece or `n` bytes in.
    Refuse(usize, Refusal),
}

/// The head being received, line by line, as tiny_http reads it: a line ends at CRLF; the
/// request line is trimmed and split on single spaces into method, target and version (more
/// pieces are ignored); a header line is trimmed and split at its first colon, its name may hold
/// no white space, its value is trimmed. Every field is followed byte by byte in fixed space, so
/// a line of any length is judged exactly as tiny_http will judge it.
#[derive(Debug, Default)]
struct Head {
    bytes: u64,
    lines: usize,
    line: Line,
    /// tiny_http answers this head itself (400, 417) and reads no more.
    rejected_by_tiny_http: bool,
    version: Option<Version>,
    transfer_encoding: bool,
    content_length: Option<Option<usize>>,
    expect_continue: Option<bool>,
    connection: Option<ConnectionTokens>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http09,
    Http10,
    Http11,
    /// 2.0 or 3.0: refused before tiny_http sees the line end.
    Later,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ConnectionTokens {
    close: bool,
    upgrade: bool,
    keep_alive: bool,
}

fn is_trim_space(b: u8) -> bool {
    // What `str::trim` removes from ASCII text: space, \t, \n, \x0b, \x0c, \r.
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The few bytes of a field the scan needs, and whether more followed.
#[derive(Debug, Clone, Copy)]
struct Small<const N: usize> {
    bytes: [u8; N],
    len: usize,
    /// Bytes beyond `N` were seen; `extra_blank`: all of them white space.
    extra: bool,
    extra_blank: bool,
}

impl<const N: usize> Default for Small<N> {
    fn default() -> Self {
        Small { bytes: [0; N], len: 0, extra: false, extra_blank: false }
    }
}

impl<const N: usize> Small<N> {
    fn push(&mut self, b: u8) {
        if self.len < N {
            self.bytes[self.len] = b;
            self.len += 1;
        } else {
            self.extra_blank =
                if self.extra { self.extra_blank && is_trim_space(b) } else { is_trim_space(b) };
            self.extra = true;
        }
    }

    /// The bytes, with trailing white space removed when `trim`; `None` if they do not fit.
    fn get(&self, trim: bool) -> Option<&[u8]> {
        let kept = &self.bytes[..self.len];
        match (self.extra, trim) {
            (false, false) => Some(kept),
            (_, true) if !self.extra || self.extra_blank => Some(trim_end(kept)),
            _ => None,
        }
    }
}

/// Which header's value a line carries (the first of each name counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    TransferEncoding,
    ContentLength,
    Expect,
    Connection,
    Other,
}

#[derive(Debug, Default)]
struct Line {
    /// The previous byte was CR.
    cr: bool,
    /// Bytes after the leading white space (tiny_http trims lines).
    len: usize,
    // The request line.
    piece: usize,
    method: Small<4>,
    target: Small<2>,
    version: Small<16>,
    /// A space ended the version piece; `after_blank`: only white space came after it.
    after_version: bool,
    after_blank: bool,
    // A header line.
    colon: bool,
    name: Small<24>,
    name_space: bool,
    field: Option<Field>,
    length: UsizeScan,
    expect: ExpectScan,
    tokens: TokenScan,
}

impl Head {
    fn step(&mut self, data: &[u8]) -> HeadStep {
        for (i, &b) in data.iter().enumerate() {
            self.bytes += 1;
            if self.bytes > MAX_HEAD {
                return HeadStep::Refuse(0, Refusal::TooLarge);
            }
            if b >= 0x80 {
                return HeadStep::Refuse(0, Refusal::NonAscii);
            }
            if b == b'\n' {
                if !self.line.cr {
                    return HeadStep::Refuse(0, Refusal::BareLf);
                }
                match self.end_line() {
                    LineEnd::More => continue,
                    LineEnd::HeadDone => return HeadStep::Ended(i + 1),
                    LineEnd::Refuse(refusal) => return HeadStep::Refuse(0, refusal),
                }
            }
            if self.line.cr {
                // A CR not followed by LF is part of the line.
                self.push(b'\r');
            }
            self.line.cr = b == b'\r';
            if !self.line.cr {
                self.push(b);
            }
        }
        HeadStep::More(data.len())
    }

    fn push(&mut self, b: u8) {
        let line = &mut self.line;
        if line.len == 0 && is_trim_space(b) {
            return;
        }
        line.len += 1;
        if self.lines == 0 {
            // Request line: method, target, version, split on single spaces.
            if line.piece > 2 {
                line.after_blank &= is_trim_space(b);
            } else if b == b' ' {
                if line.piece == 2 {
                    line.after_version = true;
                    line.after_blank = true;
                }
                line.piece += 1;
            } else {
                match line.piece {
                    0 => line.method.push(b),
                    1 => line.target.push(b),
                    _ => line.version.push(b),
                }
            }
            return;
        }
        if !line.colon {
            if b == b':' {
                line.colon = true;
                let field = self.field_of_name();
                self.line.field = Some(field);
            } else {
                line.name_space |= is_trim_space(b);
                self.line.name.push(b);
            }
            return;
        }
        match line.field {
            Some(Field::ContentLength) => line.length.push(b),
            Some(Field::Expect) => line.expect.push(b),
            Some(Field::Connection) => line.tokens.push(b),
            _ => {}
        }
    }

    /// The header a name (complete at its colon) stands for, if its value matters here.
    fn field_of_name(&self) -> Field {
        let Some(name) = self.line.name.get(false).filter(|_| !self.line.name_space) else {
            return Field::Other;
        };
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"Transfer-Encoding") {
            Field::TransferEncoding
        } else if is(b"Content-Length") && self.content_length.is_none() {
            Field::ContentLength
        } else if is(b"Expect") && self.expect_continue.is_none() {
            Field::Expect
        } else if is(b"Connection") && self.connection.is_none() {
            Field::Connection
        } else {
            Field::Other
        }
    }

    /// A line ended: the request line, a header line, or the empty line ending the head.
    fn end_line(&mut self) -> LineEnd {
        let line = std::mem::take(&mut self.line);
        self.lines += 1;
        if self.lines == 1 {
            return self.request_line(&line);
        }
        if line.len == 0 {
            return LineEnd::HeadDone;
        }
        if !line.colon || line.name_space {
            // tiny_http answers 400 and reads no more.
            self.rejected_by_tiny_http = true;
            return LineEnd::More;
        }
        match line.field {
            Some(Field::TransferEncoding) => self.transfer_encoding = true,
            Some(Field::ContentLength) => self.content_length = Some(line.length.value()),
            Some(Field::Expect) => self.expect_continue = Some(line.expect.matched()),
            Some(Field::Connection) => self.connection = Some(line.tokens.found),
            Some(Field::Other) | None => {}
        }
        LineEnd::More
    }

    fn request_line(&mut self, line: &Line) -> LineEnd {
        // Trailing white space is trimmed from the line: it shortens the version piece only when
        // nothing but white space follows it.
        let trim = !line.after_version || line.after_blank;
        self.version = if line.piece < 2 { None } else { line.version.get(trim).and_then(parse_version) };
        match self.version {
            Some(Version::Later) => {
                let prior_knowledge =
                    line.method.get(false) == Some(&b"PRI"[..]) && line.target.get(false) == Some(&b"*"[..]);
                LineEnd::Refuse(Refusal::Version { prior_knowledge })
            }
            None => {
                // tiny_http answers 400 and reads no more.
                self.rejected_by_tiny_http = true;
                LineEnd::More
            }
            Some(_) => LineEnd::More,
        }
    }

    /// tiny_http answers this head itself (400 for a line it cannot parse, 417 for an unknown
    /// `Expect`) and reads no more.
    fn answered_by_tiny_http(&self) -> bool {
        self.rejected_by_tiny_http || self.expect_continue == Some(false)
    }

    /// What follows the head, by tiny_http's rules.
    fn framing(&self) -> State {
        if self.answered_by_tiny_http() {
            // tiny_http answers 400 or 417 itself and reads no more.
            return State::Done;
        }
        let tokens = self.connection.unwrap_or_default();
        if tokens.upgrade {
            // The rest of the connection is this request's body.
            return State::Done;
        }
        let http10 = self.version == Some(Version::Http10);
        let last = tokens.close || (http10 && !tokens.keep_alive);
        if self.transfer_encoding {
            return State::Chunked { chunk: Chunk::Size(Vec::new()), last };
        }
        match self.content_length.flatten() {
            Some(n) if n > 0 => State::Body { left: n as u64, last },
            _ => next_head(last),
        }
    }
}

enum LineEnd {
    More,
    HeadDone,
    Refuse(Refusal),
}

fn parse_version(piece: &[u8]) -> Option<Version> {
    match piece {
        b"HTTP/0.9" => Some(Version::Http09),
        b"HTTP/1.0" => Some(Version::Http10),
        b"HTTP/1.1" => Some(Version::Http11),
        b"HTTP/2.0" | b"HTTP/3.0" => Some(Version::Later),
        _ => None,
    }
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| !is_trim_space(b)).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// `usize::from_str` on a trimmed value, byte by byte: an optional `+`, decimal digits, no
/// overflow, nothing between the digits.
#[derive(Debug, Default)]
struct UsizeScan {
    started: bool,
    ended: bool,
    plus: bool,
    digits: bool,
    value: usize,
    bad: bool,
}

impl UsizeScan {
    fn push(&mut self, b: u8) {
        if is_trim_space(b) {
            self.ended |= self.started;
            return;
        }
        if self.ended {
            self.bad = true;
        }
        let first = !self.started;
        self.started = true;
        match b {
            b'+' if first => self.plus = true,
            b'0'..=b'9' => {
                self.digits = true;
                match self.value.checked_mul(10).and_then(|v| v.checked_add(usize::from(b - b'0'))) {
                    Some(v) => self.value = v,
                    None => self.bad = true,
                }
            }
            _ => self.bad = true,
        }
    }

    fn value(&self) -> Option<usize> {
        (self.digits && !self.bad).then_some(self.value)
    }
}

/// Whether a trimmed value equals `100-continue`, ignoring case.
#[derive(Debug, Default)]
struct ExpectScan {
    matched: usize,
    ended: bool,
    bad: bool,
}

impl ExpectScan {
    const WANT: &'static [u8] = b"100-continue";

    fn push(&mut self, b: u8) {
        if is_trim_space(b) {
            self.ended |= self.matched > 0;
            return;
        }
        if self.ended
            || self.matched >= Self::WANT.len()
            || !Self::WANT[self.matched].eq_ignore_ascii_case(&b)
        {
            self.bad = true;
            return;
        }
        self.matched += 1;
    }

    fn matched(&self) -> bool {
        !self.bad && self.matched == Self::WANT.len()
    }
}

/// Which of `close`, `upgrade`, `keep-alive` a value contains, ignoring case (tiny_http looks for
/// them as substrings of the lowercased value).
#[derive(Debug, Default)]
struct TokenScan {
    window: [u8; 10],
    found: ConnectionTokens,
}

impl TokenScan {
    fn push(&mut self, b: u8) {
        self.window.rotate_left(1);
        self.window[9] = b.to_ascii_lowercase();
        self.found.close |= self.window.ends_with(b"close");
        self.found.upgrade |= self.window.ends_with(b"upgrade");
        self.found.keep_alive |= self.window.ends_with(b"keep-alive");
    }
}

enum ChunkStep {
    More(usize),
    Ended(usize),
    Broken(usize),
}

/// Follows tiny_http's chunked decoder (chunked_transfer 1.5): a size up to CR, or up to `;` and
/// then an ignored extension up to CR; LF; the data; CR LF; after a size of 0, CR LF.
fn step_chunk(chunk: &mut Chunk, data: &[u8]) -> ChunkStep {
    let mut at = 0;
    while at < data.len() {
        if let Chunk::Data(left) = chunk {
            let take = (data.len() - at).min(*left);
            at += take;
            *left -= take;
            if *left == 0 {
                *chunk = Chunk::DataCr;
            }
            continue;
        }
        let b = data[at];
        at += 1;
        let next = match chunk {
            Chunk::Size(bytes) => match b {
                b'\r' => Chunk::SizeLf(chunk_size(bytes)),
                b';' => Chunk::Extension(chunk_size(bytes)),
                _ if bytes.len() >= MAX_CHUNK_LINE => return ChunkStep::Broken(at),
                _ => {
                    bytes.push(b);
                    continue;
                }
            },
            Chunk::Extension(size) if b == b'\r' => Chunk::SizeLf(*size),
            Chunk::Extension(_) => continue,
            Chunk::SizeLf(Some(0)) if b == b'\n' => Chunk::EndCr,
            Chunk::SizeLf(Some(n)) if b == b'\n' => Chunk::Data(*n),
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::EndCr if b == b'\r' => Chunk::EndLf,
            Chunk::DataLf if b == b'\n' => Chunk::Size(Vec::new()),
            Chunk::EndLf if b == b'\n' => return ChunkStep::Ended(at),
            // A missing LF or CR, an unreadable size: the decoder fails here.
            _ => return ChunkStep::Broken(at),
        };
        *chunk = next;
    }
    ChunkStep::More(at)
}

/// The decoder's `usize::from_str_radix(size.trim(), 16)` on the size's bytes.
fn chunk_size(bytes: &[u8]) -> Option<usize> {
    usize::from_str_radix(std::str::from_utf8(bytes).ok()?.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after another; returns each verdict and the final scan.
    fn scan(pieces: &[&[u8]]) -> (Vec<Verdict>, HeadScan) {
        let mut s = HeadScan::new();
        let now = Instant::now();
        let verdicts = pieces.iter().map(|p| s.feed(p, now)).collect();
        (verdicts, s)
    }

    /// Where feeding `bytes` at once cuts them, and why. Fed one byte at a time the refusal
    /// must be the same, decided no later than the same byte (bytes already passed cannot be
    /// taken back: the cut is then at the deciding byte, which still keeps the head from ending).
    fn cut(bytes: &[u8]) -> Option<(usize, Option<Refusal>)> {
        let (v, _) = scan(&[bytes]);
        let whole = match v[0] {
            Verdict::Pass => None,
            Verdict::Stop { keep, refusal } => Some((keep, refusal)),
        };
        let mut s = HeadScan::new();
        let mut bytewise = None;
        for (i, b) in bytes.iter().enumerate() {
            if let Verdict::Stop { keep, refusal } = s.feed(std::slice::from_ref(b), Instant::now()) {
                bytewise = Some((i + keep, refusal));
                break;
            }
        }
        let shown = bytes.escape_ascii().to_string();
        assert_eq!(whole.map(|w| w.1), bytewise.map(|b| b.1), "whole vs bytewise refusal for {shown:?}");
        if let (Some(w), Some(b)) = (whole, bytewise) {
            assert!(w.0 <= b.0, "bytewise cut {} before the head's start {} for {shown:?}", b.0, w.0);
        }
        whole
    }

    /// Where the last head of `bytes` that starts with `GET / HTTP/2.0` begins.
    fn last_later(bytes: &[u8]) -> usize {
        bytes.windows(14).rposition(|w| w == b"GET / HTTP/2.0").expect("a later-version head")
    }

    const V505: Option<Refusal> = Some(Refusal::Version { prior_knowledge: false });

    /// Bytes, and where a whole feed of them is cut and why (None: all pass).
    type CutCase<'a> = (&'a [u8], Option<(usize, Option<Refusal>)>);

    #[test]
    fn ordinary_heads_pass_and_are_counted() {
        let (v, s) = scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(v, [Verdict::Pass, Verdict::Pass]);
        assert_eq!(s.heads(), 2);
        assert!(s.partial_head().is_none());
        let (_, s) = scan(&[b"GET / HTTP/1.1\r\nHo"]);
        assert!(s.partial_head().is_some(), "part of a head");
    }

    #[test]
    fn later_versions_are_withheld_where_their_head_starts() {
        let pri = Some(Refusal::Version { prior_knowledge: true });
        let table: &[CutCase<'_>] = &[
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", Some((0, V505))),
            (b"GET / HTTP/3.0\r\n\r\n", Some((0, V505))),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some((0, pri))),
            // Trimmed, extra pieces ignored, as tiny_http does.
            (b"  GET / HTTP/2.0 \t\r\n\r\n", Some((0, V505))),
            (b"GET / HTTP/2.0\t\r\n\r\n", Some((0, V505))),
            (b"GET / HTTP/2.0 extra\r\n\r\n", Some((0, V505))),
            // Not a version tiny_http knows: it answers 400 itself.
            (b"GET / HTTP/2.1\r\n\r\n", None),
            (b"GET  / HTTP/2.0\r\n\r\n", None),
            (b"GET / HTTP/2.0\t extra\r\n\r\n", None),
            // Behind a whole request: that one passes, the cut is where the next head starts.
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/2.0\r\n\r\n", Some((27, V505))),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/2.0\r\n\r\n", Some((43, V505))),
        ];
        for (bytes, want) in table {
            assert_eq!(cut(bytes), *want, "{:?}", bytes.escape_ascii().to_string());
        }
        // A long target does not hide the version.
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        long.extend_from_slice(b" HTTP/2.0\r\n\r\n");
        assert_eq!(cut(&long), Some((0, V505)));
    }

    #[test]
    fn bodies_are_skipped_as_tiny_http_frames_them() {
        // Whether the later-version head at the end is one tiny_http would read as a head.
        let table: &[(&[u8], bool)] = &[
            // A body that looks like a later-version head is a body.
            (b"POST / HTTP/1.1\r\nContent-Length: 18\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            // An invalid Content-Length is no body for tiny_http: what follows is a head.
            (b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabcGET / HTTP/2.0\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length:   003  \r\n\r\nabcGET / HTTP/2.0\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            // The first Content-Length counts.
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 9\r\n\r\nabcGET / HTTP/2.0\r\n\r\n", true),
            // Any Transfer-Encoding means chunked, and it wins over Content-Length.
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            // Upgrade: the rest is the body, never scanned.
            (b"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            // Connection: close, and HTTP/1.0 without keep-alive: tiny_http reads no more heads.
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            // Only the first Connection header counts; a token anywhere in its value counts.
            (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: x, y, CLOSE, z\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            // tiny_http answers an unknown Expect with 417, a header without colon or with a
            // space in its name with 400, and reads no more.
            (b"GET / HTTP/1.1\r\nExpect: later\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\nGET / HTTP/2.0\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nExpect:  100-Continue \r\n\r\nGET / HTTP/2.0\r\n\r\n", true),
        ];
        for (bytes, later_is_a_head) in table {
            let want = later_is_a_head.then(|| last_later(bytes));
            assert_eq!(cut(bytes).map(|c| c.0), want, "{:?}", bytes.escape_ascii().to_string());
        }
        // Fields of any length are followed exactly.
        let mut long_length = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
        long_length.extend(std::iter::repeat_n(b'0', 500));
        long_length.extend_from_slice(b"14\r\n\r\nGET / HTTP/2.0GET / HTTP/2.0\r\n\r\n");
        assert_eq!(cut(&long_length).map(|c| c.0), Some(last_later(&long_length)));
        let mut long_connection = b"GET / HTTP/1.1\r\nConnection: ".to_vec();
        long_connection.extend(std::iter::repeat_n(b'x', 500));
        long_connection.extend_from_slice(b"close\r\n\r\nGET / HTTP/2.0\r\n\r\n");
        assert_eq!(cut(&long_connection), None, "close found after 500 bytes of value");
    }

    #[test]
    fn heads_tiny_http_cannot_read_are_refused() {
        assert_eq!(cut(b"GET / HTTP/1.1\r\nX-City: S\xc3\xa3o\r\n\r\n"), Some((0, Some(Refusal::NonAscii))));
        assert_eq!(cut(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"), Some((0, Some(Refusal::NonAscii))));
        assert_eq!(cut(b"GET / HTTP/1.1\nHost: x\n\n"), Some((0, Some(Refusal::BareLf))));
        // A CR alone is part of the line, for tiny_http too.
        assert_eq!(cut(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), None);
        let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD as usize));
        assert_eq!(cut(&huge), Some((0, Some(Refusal::TooLarge))));
        // A refusal reaches back to the start of its head, even across pieces.
        let (v, _) = scan(&[b"GET / HTTP/1.1\r\n\r\nGET / HT", b"TP/2.0\r\n"]);
        assert_eq!(v, [Verdict::Pass, Verdict::Stop { keep: 0, refusal: V505 }]);
        // After a stop nothing passes.
        let (v, _) = scan(&[b"GET / HTTP/2.0\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(v[1], Verdict::Stop { keep: 0, refusal: None });
    }

    #[test]
    fn chunked_bodies_end_as_tiny_http_decodes_them() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (v, s) = scan(&[head, b"3\r\nabc\r\n0\r\n\r\n"]);
        assert_eq!(v, [Verdict::Pass, Verdict::Pass]);
        assert!(s.body_complete(1) && s.heads() == 1);
        let (_, s) = scan(&[head, b"3\r\nab"]);
        assert!(!s.body_complete(1), "cut inside a chunk");
        // The scan runs ahead of the reader: a body's completeness stays known after the next
        // head has passed too.
        let (_, s) =
            scan(&[head, b"3\r\nabc\r\n0\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"]);
        assert!(s.body_complete(1) && !s.body_complete(2) && s.heads() == 2);
        // Broken encodings: tiny_http's decoder fails; the input ends there.
        for broken in [&b"zz\r\n"[..], b"3\r\nabcX", b"0\r\nTrailer: x\r\n\r\n", b"3\rX"] {
            let (v, _) = scan(&[head, broken]);
            assert!(
                matches!(v[1], Verdict::Stop { refusal: None, .. }),
                "{:?}: {:?}",
                broken.escape_ascii().to_string(),
                v[1]
            );
        }
        // A size beyond usize is broken; the largest one is not (tiny_http then reads on).
        let (v, _) = scan(&[head, b"fffffffffffffffff\r\n"]);
        assert!(matches!(v[1], Verdict::Stop { .. }));
        let (v, _) = scan(&[head, b"ffffffffffffffff\r\nab"]);
        assert_eq!(v[1], Verdict::Pass);
        // An endless size line is cut before tiny_http keeps it all.
        let endless = vec![b'0'; MAX_CHUNK_LINE + 10];
        let (v, _) = scan(&[head, &endless]);
        assert!(matches!(v[1], Verdict::Stop { keep, .. } if keep == MAX_CHUNK_LINE + 1));
    }
}
