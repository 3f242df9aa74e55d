//! Wall-clock renderings: the Go `log` prefix (local time), RFC 3339 for JSON logs, and the HTTP
//! `Date` header. No time crate: these are the only three formats we need.

use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32, // 0 = Sunday
}

fn unix_now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(_) => (0, 0),
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn utc(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// Local time as the C library sees it (TZ, /etc/localtime); UTC when it cannot tell, as in a
/// `FROM scratch` image.
fn local(secs: i64) -> Civil {
    // On armv7 the C library's time_t is 32 bits and ends in January 2038: past it (or before
    // 1901) the date is ours, in UTC, rather than a wrapped one.
    #[allow(clippy::unnecessary_fallible_conversions, reason = "time_t is i32 on 32-bit targets")]
    let fits = libc::time_t::try_from(secs).ok();
    let Some(t) = fits else {
        return utc(secs);
    };
    // SAFETY: localtime_r only writes into the tm we pass; a zeroed tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return utc(secs);
    }
    Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        weekday: tm.tm_wday as u32,
    }
}

/// `2026/11/25 21:12:26`: Go's `log.LstdFlags`.
pub(crate) fn log_stamp() -> String {
    let c = local(unix_now().0);
    format!("{:04}/{:02}/{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// `2026-11-25T21:12:26.123Z`: RFC 3339 in UTC with milliseconds.
pub(crate) fn rfc3339_now() -> String {
    let (secs, nanos) = unix_now();
    let c = utc(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        nanos / 1_000_000
    )
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `Wed, 25 Nov 2026 21:12:26 GMT` (RFC 9110 IMF-fixdate) for a Unix time.
pub(crate) fn http_date(secs: i64) -> String {
    let c = utc(secs);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[c.weekday as usize % 7],
        c.day,
        MONTHS[(c.month as usize).saturating_sub(1) % 12],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

pub(crate) fn http_date_now() -> String {
    http_date(unix_now().0)
}

/// Parses the IMF-fixdate form of an HTTP date (the only form we emit, and what every browser
/// sends back in `If-Modified-Since`). Obsolete forms yield `None`, which callers treat as absent.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: i64 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_641_146), "Wed, 25 Nov 2026 21:12:26 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        for t in [0, 951_782_400, 1_795_641_146, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
        }
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn log_dates_past_2038_are_not_wrapped() {
        // 2100-01-01T00:00:00Z: a year either side of it, whatever the local zone.
        let c = local(4_102_444_800);
        assert!((2099..=2100).contains(&c.year), "{}", c.year);
        assert_eq!(local(2_147_483_648 + 86_400).year, 2038);
    }

    #[test]
    fn log_stamp_has_go_shape() {
        let s = log_stamp();
        let b = s.as_bytes();
        assert_eq!(b.len(), 19, "{s}");
        assert_eq!((b[4], b[7], b[10], b[13], b[16]), (b'/', b'/', b' ', b':', b':'), "{s}");
    }
}
