//! Go's duration grammar (`time.ParseDuration`) and its `Duration.String()` rendering.
//!
//! Users copy timeouts from of-watchdog configurations (`"1m30s"`, `"500ms"`, `"10"`), and the
//! startup log line prints them the way the Go reference does, so both directions follow Go
//! exactly rather than approximately.

use std::fmt;
use std::time::Duration;

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// The string is empty (after an optional sign).
    Empty,
    /// A number was expected at this point.
    MissingNumber,
    /// A number is not followed by a unit (`"10"` is only accepted by [`parse_config_duration`]).
    MissingUnit,
    /// The unit is none of ns, us, µs, ms, s, m, h.
    UnknownUnit(String),
    /// The value does not fit in 2^63 nanoseconds (about 292 years).
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => f.write_str("empty duration"),
            DurationError::MissingNumber => f.write_str("expected a number"),
            DurationError::MissingUnit => f.write_str("missing unit (ns, us, ms, s, m or h)"),
            DurationError::UnknownUnit(u) => write!(f, "unknown unit {u:?}"),
            DurationError::Overflow => f.write_str("duration too large"),
        }
    }
}

/// A signed duration in nanoseconds, as Go's `time.Duration`.
pub(crate) fn parse_go_duration(text: &str) -> Result<i64, DurationError> {
    let (negative, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if first != b'.' && !first.is_ascii_digit() {
            return Err(DurationError::MissingNumber);
        }
        let (whole, rest) = leading_int(s)?;
        let had_whole = rest.len() != s.len();
        s = rest;
        let (mut fraction, mut scale, mut had_fraction) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let (f, sc, after) = leading_fraction(rest);
            had_fraction = after.len() != rest.len();
            (fraction, scale) = (f, sc);
            s = after;
        }
        if !had_whole && !had_fraction {
            return Err(DurationError::MissingNumber);
        }
        let unit_len = s.bytes().position(|c| c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit);
        }
        let unit = unit_nanos(&s[..unit_len])?;
        s = &s[unit_len..];
        if whole > (1u64 << 63) / unit {
            return Err(DurationError::Overflow);
        }
        let mut value = whole * unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > 1u64 << 63 {
                return Err(DurationError::Overflow);
            }
        }
        total = total.checked_add(value).ok_or(DurationError::Overflow)?;
        if total > 1u64 << 63 {
            return Err(DurationError::Overflow);
        }
    }
    if negative {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| DurationError::Overflow)
}

/// The of-watchdog rule for timeout variables: a bare integer is seconds,
/// anything else is a Go duration.
pub(crate) fn parse_config_duration(text: &str) -> Result<i64, DurationError> {
    // A bare negative number is read as seconds too, so that it is refused as negative rather
    // than for a missing unit.
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = text.parse().map_err(|_| DurationError::Overflow)?;
        return secs.checked_mul(SEC as i64).ok_or(DurationError::Overflow);
    }
    parse_go_duration(text)
}

fn unit_nanos(unit: &str) -> Result<u64, DurationError> {
    Ok(match unit {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => SEC,
        "m" => MIN,
        "h" => HOUR,
        other => return Err(DurationError::UnknownUnit(other.to_string())),
    })
}

fn leading_int(s: &str) -> Result<(u64, &str), DurationError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut value: u64 = 0;
    for b in s[..digits].bytes() {
        if value > (1u64 << 63) / 10 {
            return Err(DurationError::Overflow);
        }
        value = value * 10 + u64::from(b - b'0');
        if value > 1u64 << 63 {
            return Err(DurationError::Overflow);
        }
    }
    Ok((value, &s[digits..]))
}

/// Digits after the decimal point; precision beyond 2^63 is dropped, as Go does.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (mut value, mut scale, mut overflow) = (0u64, 1f64, false);
    for b in s[..digits].bytes() {
        if overflow || value > (i64::MAX as u64) / 10 {
            overflow = true;
            continue;
        }
        let next = value * 10 + u64::from(b - b'0');
        if next > 1u64 << 63 {
            overflow = true;
            continue;
        }
        value = next;
        scale *= 10.0;
    }
    (value, scale, &s[digits..])
}

/// Go's `time.Duration.String()`: `"1m30s"`, `"2.5s"`, `"500ms"`, `"1h0m0s"`, `"0s"`.
pub(crate) fn format_go(d: Duration) -> String {
    let nanos = d.as_nanos().min(u128::from(u64::MAX)) as u64;
    let mut out: Vec<u8> = Vec::with_capacity(24);
    if nanos < SEC {
        if nanos == 0 {
            return "0s".to_string();
        }
        let (prec, unit) = if nanos < US {
            (0, "ns")
        } else if nanos < MS {
            (3, "\u{b5}s")
        } else {
            (6, "ms")
        };
        out.extend(unit.bytes().rev());
        let whole = push_fraction(&mut out, nanos, prec);
        push_int(&mut out, whole);
    } else {
        out.push(b's');
        let mut rest = push_fraction(&mut out, nanos, 9);
        push_int(&mut out, rest % 60);
        rest /= 60;
        if rest > 0 {
            out.push(b'm');
            push_int(&mut out, rest % 60);
            rest /= 60;
            if rest > 0 {
                out.push(b'h');
                push_int(&mut out, rest);
            }
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Pushes (reversed) the `prec` fractional digits of `v`, without trailing zeros; returns the
/// integer part.
fn push_fraction(out: &mut Vec<u8>, mut v: u64, prec: u32) -> u64 {
    let mut printing = false;
    for _ in 0..prec {
        let digit = (v % 10) as u8;
        printing = printing || digit != 0;
        if printing {
            out.push(b'0' + digit);
        }
        v /= 10;
    }
    if printing {
        out.push(b'.');
    }
    v
}

fn push_int(out: &mut Vec<u8>, mut v: u64) {
    if v == 0 {
        out.push(b'0');
    }
    while v > 0 {
        out.push(b'0' + (v % 10) as u8);
        v /= 10;
    }
}

/// Seconds with 6 decimals, as the reference's `X-Duration-Seconds` (`fmt.Sprintf("%f")`).
pub(crate) fn seconds_f6(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        let cases: &[(&str, Result<i64, DurationError>)] = &[
            ("1m30s", Ok(90 * SEC as i64)),
            ("1.5h", Ok(90 * MIN as i64)),
            ("300ms", Ok(300 * MS as i64)),
            ("1µs", Ok(1_000)),
            ("1μs", Ok(1_000)),
            ("1us", Ok(1_000)),
            ("2h45m", Ok((2 * HOUR + 45 * MIN) as i64)),
            (".5s", Ok(500 * MS as i64)),
            ("1.s", Ok(SEC as i64)),
            ("0", Ok(0)),
            ("-1s", Ok(-(SEC as i64))),
            ("+2s", Ok(2 * SEC as i64)),
            ("10", Err(DurationError::MissingUnit)),
            ("-1", Err(DurationError::MissingUnit)),
            ("5x", Err(DurationError::UnknownUnit("x".into()))),
            ("", Err(DurationError::Empty)),
            ("s", Err(DurationError::MissingNumber)),
            (".s", Err(DurationError::MissingNumber)),
            ("1s2", Err(DurationError::MissingUnit)),
            ("9999999999h", Err(DurationError::Overflow)),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_go_duration(text), want, "parse_go_duration({text:?})");
        }
    }

    #[test]
    fn config_durations_accept_bare_seconds() {
        assert_eq!(parse_config_duration("10"), Ok(10 * SEC as i64));
        assert_eq!(parse_config_duration("0"), Ok(0));
        assert_eq!(parse_config_duration("2500ms"), Ok(2500 * MS as i64));
        // Negative, refused by the configuration as such (not for a missing unit).
        assert_eq!(parse_config_duration("-1"), Ok(-(SEC as i64)));
        assert!(parse_config_duration("5x").is_err());
        assert!(parse_config_duration("").is_err());
        assert!(parse_config_duration("99999999999999999999").is_err());
    }

    #[test]
    fn durations_render_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_millis(5400 * 1000 + 1), "1h30m0.001s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go(*d), *want, "format_go({d:?})");
        }
    }
}
