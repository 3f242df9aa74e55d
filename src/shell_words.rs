//! Splitting `fprocess` into a program and its arguments.
//!
//! POSIX shell quoting without any expansion: white space separates words; single quotes keep
//! everything literally; double quotes keep everything except `\"`, `\\`, `\$`, `` \` `` and
//! backslash-newline; a backslash outside quotes escapes the next character. So
//! `sh -c 'echo hi'` is `["sh", "-c", "echo hi"]`, where the Go reference (which splits on single
//! spaces) would pass `'echo` and `hi'`.

use std::fmt;

/// Why a command line could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WordsError {
    /// A quote opened at this byte offset is never closed.
    UnterminatedQuote { quote: char, at: usize },
    /// The line ends with a lone backslash.
    TrailingBackslash,
}

impl fmt::Display for WordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WordsError::UnterminatedQuote { quote, at } => {
                write!(f, "unterminated {quote} quote opened at character {}", at + 1)
            }
            WordsError::TrailingBackslash => f.write_str("ends with a lone backslash"),
        }
    }
}

pub(crate) fn split(line: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even an empty pair of quotes) has been seen.
    let mut in_word = false;
    let mut chars = line.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, ch)) => word.push(ch),
                        None => return Err(WordsError::UnterminatedQuote { quote: '\'', at }),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some(&(_, next @ ('"' | '\\' | '$' | '`'))) => {
                                word.push(next);
                                chars.next();
                            }
                            Some(&(_, '\n')) => {
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        Some((_, ch)) => word.push(ch),
                        None => return Err(WordsError::UnterminatedQuote { quote: '"', at }),
                    }
                }
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, ch)) => {
                    in_word = true;
                    word.push(ch);
                }
                None => return Err(WordsError::TrailingBackslash),
            },
            ch => {
                in_word = true;
                word.push(ch);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap_or_else(|e| panic!("split({line:?}) failed: {e}"))
    }

    #[test]
    fn splits_like_a_posix_shell_without_expansion() {
        let cases: &[(&str, &[&str])] = &[
            ("cat", &["cat"]),
            ("  python3   index.py  ", &["python3", "index.py"]),
            ("sh -c 'echo hi'", &["sh", "-c", "echo hi"]),
            (r#"sh -c "echo \"quoted\" \$HOME""#, &["sh", "-c", r#"echo "quoted" $HOME"#]),
            (r#"echo "a\nb""#, &["echo", r"a\nb"]),
            (r"echo a\ b", &["echo", "a b"]),
            ("echo '' x", &["echo", "", "x"]),
            ("echo a''b \"c\"'d'", &["echo", "ab", "cd"]),
            ("echo $HOME *", &["echo", "$HOME", "*"]),
            ("a\tb\nc", &["a", "b", "c"]),
            ("", &[]),
            ("   ", &[]),
            ("echo 'it''s'", &["echo", "its"]),
            ("echo \"\u{e9}t\u{e9}\"", &["echo", "\u{e9}t\u{e9}"]),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), *want, "split({line:?})");
        }
    }

    #[test]
    fn rejects_unbalanced_quotes_and_trailing_backslash() {
        assert_eq!(split("sh -c 'echo"), Err(WordsError::UnterminatedQuote { quote: '\'', at: 6 }));
        assert_eq!(split("echo \"x"), Err(WordsError::UnterminatedQuote { quote: '"', at: 5 }));
        assert_eq!(split("echo x\\"), Err(WordsError::TrailingBackslash));
    }
}
