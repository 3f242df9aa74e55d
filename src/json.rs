//! The little JSON the watchdog needs: escaping strings for log lines, and recognising a line
//! that already is a JSON object (a function that logs JSON keeps its structure).

use std::fmt::Write as _;

/// Appends `s` as a JSON string literal.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// True if `text` is exactly one JSON object (surrounding white space allowed).
#[cfg(test)]
pub(crate) fn is_object(text: &str) -> bool {
    object_keys(text).is_some()
}

/// The top-level keys of `text` as written (escapes left as they are), if it is exactly one JSON
/// object (surrounding white space allowed).
pub(crate) fn object_keys(text: &str) -> Option<Vec<&str>> {
    let t = text.trim();
    let b = t.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut p = Parser { b, i: 0, depth: 0, keys: Vec::new() };
    (p.value() && p.i == b.len()).then(|| p.keys.iter().map(|&(s, e)| &t[s..e]).collect())
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// Spans of the outermost object's keys, quotes excluded.
    keys: Vec<(usize, usize)>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> bool {
        self.ws();
        match self.peek() {
            Some(b'{') => self.container(b'}', true),
            Some(b'[') => self.container(b']', false),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => false,
        }
    }

    fn container(&mut self, close: u8, object: bool) -> bool {
        self.depth += 1;
        if self.depth > 128 {
            return false;
        }
        self.i += 1;
        if self.eat(close) {
            self.depth -= 1;
            return true;
        }
        loop {
            if object {
                self.ws();
                let start = self.i + 1;
                if !(self.string() && self.eat(b':')) {
                    return false;
                }
                if self.depth == 1 {
                    let end = self.b[..self.i].iter().rposition(|&c| c == b'"').unwrap_or(start);
                    self.keys.push((start, end.max(start)));
                }
            }
            if !self.value() {
                return false;
            }
            if self.eat(close) {
                self.depth -= 1;
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn string(&mut self) -> bool {
        if self.peek() != Some(b'"') {
            return false;
        }
        self.i += 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => return true,
                b'\\' => match self.peek() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                    Some(b'u') => {
                        let hex = self.b.get(self.i + 1..self.i + 5);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return false;
                        }
                        self.i += 5;
                    }
                    _ => return false,
                },
                c if c < 0x20 => return false,
                _ => {}
            }
        }
        false
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn number(&mut self) -> bool {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            p.i > s
        };
        if !digits(self) {
            return false;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !digits(self) {
                return false;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return false;
            }
        }
        self.i > start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn recognises_json_objects_only() {
        for yes in [r#"{}"#, r#" {"a": 1, "b": [true, false, null, -1.5e3, "x\"y"], "c": {"d": "\u00e9"}} "#]
        {
            assert!(is_object(yes), "{yes}");
        }
        for no in [
            "",
            "[]",
            "\"x\"",
            "{",
            "{not json}",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a":01x}"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            assert!(!is_object(no), "{no}");
        }
    }

    #[test]
    fn lists_top_level_keys_only() {
        assert_eq!(
            object_keys(r#" {"a": {"b": 1}, "c\"d" : [ {"e": 2} ], "": 0} "#),
            Some(vec!["a", r#"c\"d"#, ""])
        );
        assert_eq!(object_keys("{}"), Some(vec![]));
        assert_eq!(object_keys("[1]"), None);
    }
}
