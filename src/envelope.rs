//! The classic watchdog's `marshal_request` envelope: the function reads, instead of the raw
//! body, the JSON that Go's `encoding/json` makes of
//! `struct { Header http.Header "header"; Body struct { Raw []byte "raw" } "body" }`:
//! `{"header":{"Content-Type":["text/plain"],...},"body":{"raw":"<base64>"}}`. Byte for byte
//! as Go writes it: header names in Go's canonical form and sorted, values in arrival order,
//! strings escaped as Go escapes them (HTML-safe), the body in standard padded base64.

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::http_server::canonical_name as canonical;
use crate::spool::Spool;

/// Writes the envelope of `body` (read to its end) with `headers` to `out`.
pub(crate) fn write<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    body: &mut Spool,
    out: &mut Spool,
) -> io::Result<()> {
    let mut grouped: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, value) in headers {
        let key = canonical(name);
        // Go's server takes these out of the header map (into r.Host and r.TransferEncoding).
        if key == "Host" || key == "Transfer-Encoding" {
            continue;
        }
        grouped.entry(key).or_default().push(value);
    }
    let mut head = String::from("{\"header\":{");
    for (i, (name, values)) in grouped.iter().enumerate() {
        if i > 0 {
            head.push(',');
        }
        go_string(&mut head, name);
        head.push_str(":[");
        for (j, v) in values.iter().enumerate() {
            if j > 0 {
                head.push(',');
            }
            go_string(&mut head, v);
        }
        head.push(']');
    }
    head.push_str("},\"body\":{\"raw\":\"");
    out.push(head.as_bytes())?;
    let mut reader = body.reader()?;
    let mut chunk = vec![0u8; 48 * 1024];
    let mut carry: Vec<u8> = Vec::with_capacity(2);
    let mut encoded = String::with_capacity(chunk.len() / 3 * 4 + 4);
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&chunk[..n]);
        let whole = carry.len() / 3 * 3;
        encoded.clear();
        base64(&carry[..whole], &mut encoded);
        out.push(encoded.as_bytes())?;
        carry.drain(..whole);
    }
    encoded.clear();
    base64(&carry, &mut encoded);
    encoded.push_str("\"}}");
    out.push(encoded.as_bytes())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `s` as Go's `encoding/json` writes a string (with its default HTML escaping).
fn go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_unicode_escape(out, c as u32),
            c if (c as u32) < 0x20 => push_unicode_escape(out, c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_unicode_escape(out: &mut String, code: u32) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((code >> shift) & 0xf) as usize] as char);
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `base64.StdEncoding`, which `[]byte` fields use).
fn base64(data: &[u8], out: &mut String) {
    for group in data.chunks(3) {
        let b = [group[0], group.get(1).copied().unwrap_or(0), group.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(BASE64[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(data: &[u8]) -> String {
        let mut s = String::new();
        base64(data, &mut s);
        s
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(encode(plain.as_bytes()), coded, "{plain:?}");
        }
        assert_eq!(encode(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        let mut s = String::new();
        go_string(&mut s, "a\"b\\c\td<e>&f\u{1}");
        assert_eq!(s, r#""a\"b\\c\td\u003ce\u003e\u0026f\u0001""#);
    }

    #[test]
    fn the_envelope_groups_sorts_and_canonicalises_headers() {
        let mut body = Spool::new(16);
        body.push(b"hello world, longer than the memory part").expect("push");
        let mut out = Spool::new(1 << 20);
        let headers = [
            ("x-b", "2"),
            ("Host", "example"),
            ("accept", "*/*"),
            ("X-B", "3"),
            ("transfer-encoding", "chunked"),
        ];
        write(headers.into_iter(), &mut body, &mut out).expect("envelope");
        let text = String::from_utf8(out.as_slice().expect("in memory").to_vec()).expect("utf-8");
        assert_eq!(
            text,
            r#"{"header":{"Accept":["*/*"],"X-B":["2","3"]},"body":{"raw":"aGVsbG8gd29ybGQsIGxvbmdlciB0aGFuIHRoZSBtZW1vcnkgcGFydA=="}}"#
        );
    }

    #[test]
    fn an_empty_body_is_an_empty_string() {
        let mut body = Spool::new(16);
        let mut out = Spool::new(1024);
        write(std::iter::empty(), &mut body, &mut out).expect("envelope");
        assert_eq!(out.as_slice().expect("in memory"), br#"{"header":{},"body":{"raw":""}}"#);
    }
}
