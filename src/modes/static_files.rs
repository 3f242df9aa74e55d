//! static mode: files from `static_path` for GET and HEAD.
//!
//! Hardened where Go's `http.FileServer` (the reference) is not: no `..` escape (raw,
//! percent-encoded, or through a symlink that leaves the root), no dotfiles, no directory
//! listings. Directories serve their `index.html`; `Last-Modified`/`If-Modified-Since` and
//! single byte ranges are honoured; files are streamed in bounded memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::clock;
use crate::http_server::Exchange;
use crate::io_buffer::IO_BUFFER;

use super::handler::{Context, Handler, Outcome};

pub(crate) struct StaticFiles {
    /// Canonical root: every file served must resolve inside it.
    root: PathBuf,
}

impl StaticFiles {
    pub(crate) fn new(root: &Path) -> Result<StaticFiles, String> {
        let root = root.canonicalize().map_err(|e| format!("static_path {}: {e}", root.display()))?;
        log::info!("Serving files at: {}", root.display());
        Ok(StaticFiles { root })
    }
}

/// The request path as safe relative segments, or `None` if it must not be served.
fn segments(path: &[u8]) -> Option<Vec<&str>> {
    if path.contains(&0) {
        return None;
    }
    let path = std::str::from_utf8(path).ok()?;
    let mut out = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            // `..` never climbs, and dotfiles (.env, .git) are never served.
            s if s.starts_with('.') => return None,
            s if s.contains('\\') => return None,
            s => out.push(s),
        }
    }
    Some(out)
}

fn percent_encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Content-Type by extension, or by sniffing the first bytes when the extension is unknown.
fn content_type(path: &Path, head: &[u8]) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    let by_ext = match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        _ => "",
    };
    if by_ext.is_empty() { sniff(head) } else { by_ext }
}

/// A small part of the WHATWG sniffing algorithm (what Go's DetectContentType does): HTML,
/// a few binary signatures, then text versus binary.
pub(crate) fn sniff(data: &[u8]) -> &'static str {
    let trimmed = {
        let start = data.iter().position(|b| !b" \t\n\x0c\r".contains(b)).unwrap_or(data.len());
        &data[start..]
    };
    const HTML: [&[u8]; 16] = [
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
    ];
    for sig in HTML {
        if trimmed.len() > sig.len()
            && trimmed[..sig.len()].eq_ignore_ascii_case(sig)
            && matches!(trimmed[sig.len()], b' ' | b'>')
        {
            return "text/html; charset=utf-8";
        }
    }
    if trimmed.starts_with(b"<!--") {
        return "text/html; charset=utf-8";
    }
    const MAGIC: [(&[u8], &str); 7] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b\x08", "application/x-gzip"),
    ];
    for (magic, ctype) in MAGIC {
        if data.starts_with(magic) {
            return ctype;
        }
    }
    if trimmed.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    let binary = data.iter().any(|&b| b < 0x20 && !b"\t\n\x0c\r\x1b".contains(&b));
    if binary { "application/octet-stream" } else { "text/plain; charset=utf-8" }
}

/// A single `bytes=` range, resolved against `size`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// No usable Range header: the whole file.
    Whole,
    /// Inclusive start and end.
    Part(u64, u64),
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Whole;
    };
    if spec.contains(',') {
        // Several ranges would need multipart/byteranges; the whole file is a valid answer.
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Range::Whole };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => Some((a, b.min(size.saturating_sub(1)))),
        (Ok(a), Err(_)) if last.is_empty() => Some((a, size.saturating_sub(1))),
        (Err(_), Ok(n)) if first.is_empty() => {
            if n == 0 {
                return Range::Unsatisfiable;
            }
            Some((size.saturating_sub(n), size.saturating_sub(1)))
        }
        _ => None,
    };
    match parsed {
        None => Range::Whole,
        Some((a, _)) if a >= size => Range::Unsatisfiable,
        Some((a, b)) => Range::Part(a, b),
    }
}

impl Handler for StaticFiles {
    fn handle(&self, mut ex: Exchange, _ctx: &Context) -> Outcome {
        let reply = |ex: Exchange, status: u16, headers: &[(&str, &str)], body: &str| {
            let mut h = vec![("Content-Type", "text/plain; charset=utf-8")];
            h.extend_from_slice(headers);
            let bytes = ex.respond(status, &h, body.as_bytes());
            Outcome { status, bytes }
        };
        if ex.info.method != "GET" && ex.info.method != "HEAD" {
            return reply(ex, 405, &[("Allow", "GET, HEAD")], "405 method not allowed\n");
        }
        let Some(segs) = segments(&ex.info.path) else {
            return reply(ex, 404, &[], "404 page not found\n");
        };
        let trailing_slash = ex.info.path.ends_with(b"/");
        let query = ex.info.query.as_ref().map(|q| format!("?{q}")).unwrap_or_default();
        if segs.last() == Some(&"index.html") && !trailing_slash {
            // The reference's FileServer sends /dir/index.html to /dir/.
            return reply(ex, 301, &[("Location", &format!("./{query}"))], "");
        }
        let mut path = self.root.clone();
        path.extend(&segs);
        // Resolves symlinks; anything that lands outside the root does not exist for us.
        let resolved = match path.canonicalize() {
            Ok(p) if p.starts_with(&self.root) => p,
            _ => return reply(ex, 404, &[], "404 page not found\n"),
        };
        let file_path = if resolved.is_dir() {
            if !trailing_slash {
                // Relative, as the reference's FileServer answers, so the redirect stays inside
                // the function behind the gateway's /function/<name>/ prefix.
                let last = segs.last().map(|s| percent_encode_segment(s)).unwrap_or_default();
                // `a:b/` would read as a URL with scheme `a`.
                let dot = if last.contains(':') { "./" } else { "" };
                let location = format!("{dot}{last}/{query}");
                return reply(ex, 301, &[("Location", &location)], "");
            }
            let index = resolved.join("index.html");
            match index.canonicalize() {
                Ok(p) if p.starts_with(&self.root) && p.is_file() => p,
                // No directory listings.
                _ => return reply(ex, 404, &[], "404 page not found\n"),
            }
        } else if trailing_slash {
            return reply(ex, 404, &[], "404 page not found\n");
        } else {
            resolved
        };
        let Ok(mut file) = File::open(&file_path) else {
            return reply(ex, 404, &[], "404 page not found\n");
        };
        let Ok(meta) = file.metadata() else {
            return reply(ex, 404, &[], "404 page not found\n");
        };
        if !meta.is_file() {
            return reply(ex, 404, &[], "404 page not found\n");
        }
        let size = meta.len();
        let mtime =
            meta.modified().ok().and_then(|m| m.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64);
        let last_modified = mtime.map(clock::http_date);
        if let (Some(m), Some(since)) =
            (mtime, ex.header("If-Modified-Since").and_then(clock::parse_http_date))
            && m <= since
        {
            let lm = last_modified.clone().unwrap_or_default();
            let bytes = ex.respond(304, &[("Last-Modified", &lm)], b"");
            return Outcome { status: 304, bytes };
        }
        let mut head = vec![0u8; 512.min(size as usize)];
        if file.read_exact(&mut head).is_err() {
            return reply(ex, 500, &[], "500 cannot read file\n");
        }
        let ctype = content_type(&file_path, &head);
        let range_header = ex.header("Range").map(str::to_string);
        let if_range_ok = match ex.header("If-Range") {
            None => true,
            Some(v) => last_modified.as_deref() == Some(v.trim()),
        };
        let range = if if_range_ok { parse_range(range_header.as_deref(), size) } else { Range::Whole };
        let lm = last_modified.unwrap_or_default();
        let mut headers = vec![("Content-Type", ctype), ("Accept-Ranges", "bytes")];
        if !lm.is_empty() {
            headers.push(("Last-Modified", &lm));
        }
        let content_range;
        let (status, start, len) = match range {
            Range::Whole => (200, 0, size),
            Range::Part(a, b) => {
                content_range = format!("bytes {a}-{b}/{size}");
                headers.push(("Content-Range", &content_range));
                (206, a, b - a + 1)
            }
            Range::Unsatisfiable => {
                content_range = format!("bytes */{size}");
                headers.push(("Content-Range", &content_range));
                let bytes = ex.respond(416, &headers, b"");
                return Outcome { status: 416, bytes };
            }
        };
        if file.seek(SeekFrom::Start(start)).is_err() {
            return reply(ex, 500, &[], "500 cannot read file\n");
        }
        // Any request body is read and dropped first, so the connection can carry the next
        // request.
        let mut sink = [0u8; 4096];
        while !ex.body_done() {
            if ex.read_body(&mut sink).is_err() {
                break;
            }
        }
        if !ex.body_done() {
            return reply(ex, 400, &[], "400 bad request body\n");
        }
        let mut w = ex.start(status, &headers, Some(len));
        let mut left = len;
        let mut buf = vec![0u8; IO_BUFFER.min(usize::try_from(len.max(1)).unwrap_or(IO_BUFFER))];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match file.read(&mut buf[..want]) {
                // The file shrank while it was sent: the answer cannot be completed.
                Ok(0) | Err(_) => return Outcome { status, bytes: w.abort() },
                Ok(n) => {
                    if w.write(&buf[..n]).is_err() {
                        return Outcome { status, bytes: w.abort() };
                    }
                    left -= n as u64;
                }
            }
        }
        let sent = w.sent();
        let bytes = w.finish().unwrap_or(sent);
        Outcome { status, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(segments(b"/a/b.txt"), Some(vec!["a", "b.txt"]));
        assert_eq!(segments(b"//a/./b"), Some(vec!["a", "b"]));
        assert_eq!(segments(b"/"), Some(vec![]));
        for bad in
            [&b"/../x"[..], b"/a/../../x", b"/.env", b"/.git/config", b"/a/.hidden", b"/a\0b", b"/..\\x"]
        {
            assert_eq!(segments(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=6-10"), 11), Range::Part(6, 10));
        assert_eq!(parse_range(Some("bytes=6-"), 11), Range::Part(6, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 11), Range::Part(8, 10));
        assert_eq!(parse_range(Some("bytes=5-100"), 11), Range::Part(5, 10));
        assert_eq!(parse_range(Some("bytes=11-"), 11), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 11), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 11), Range::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 11), Range::Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 11), Range::Whole);
        assert_eq!(parse_range(None, 11), Range::Whole);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"  <!doctype html><p>x"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<p>hello</p>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(sniff(b"plain words\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01\x02binary"), "application/octet-stream");
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
    }
}
