//! Time stamps, ids, tokens and keys in the shapes StackStorm produces.
//!
//! Hand-rolled instead of pulling in a date crate: the double needs exactly two formats
//! (ISO-8601 with microseconds for bodies, RFC 1123-ish for cookies) and nothing else.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rand::Rng as _;
use sha2::Digest as _;

/// `2016-05-28T12:39:28.650231Z`: what st2 puts in `expiry`, `start_timestamp`, ….
pub(crate) fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// `Sat, 01-Jun-2024 12:00:00 GMT`: the `expires` attribute webob writes into `Set-Cookie`.
pub(crate) fn cookie_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = secs % 86_400;
    format!(
        "{}, {d:02}-{}-{y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01, Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A UTC timestamp as st2's `isotime.parse` accepts it (`ISO8601_UTC_REGEX`:
/// `^\d{4}-\d{2}-\d{2}(\s|T)\d{2}:\d{2}:\d{2}(\.\d{3,6})?(Z|\+00|\+0000|\+00:00)$`), in
/// microseconds since the epoch; `None` where st2 raises "Datetime value does not match
/// expected format." (or, for an impossible date that fits the pattern, a parser error).
pub(crate) fn parse_iso8601_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())
            .flatten()
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10].is_ascii_whitespace())
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &s[19..];
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if !(3..=6).contains(&n) {
            return None;
        }
        micros = fraction[..n].parse::<i64>().ok()? * 10_i64.pow(6 - n as u32);
        rest = &fraction[n..];
    }
    if !matches!(rest, "Z" | "+00" | "+0000" | "+00:00") {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    if civil_from_days(days) != (year, month as u32, day as u32) {
        return None; // 31 April and the like
    }
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000) + micros)
}

/// A MongoDB ObjectId as st2 shows it: 24 lowercase hex digits (time, random, counter).
pub(crate) fn object_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as u32;
    let random: [u8; 5] = rand::rng().random();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    format!("{secs:08x}{}{count:06x}", hex(&random))
}

/// A user token: st2 uses `uuid.uuid4().hex`, 32 lowercase hex digits.
pub(crate) fn token() -> String {
    hex(&uuid4_bytes())
}

/// A request id as st2's middleware makes it: a dashed UUID4.
pub(crate) fn request_id() -> String {
    let h = hex(&uuid4_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An API key shaped like st2's: base64 of a sha256 hex digest, padding stripped.
pub(crate) fn api_key() -> String {
    let seed: [u8; 32] = rand::rng().random();
    let digest = hex(&sha2::Sha256::digest(seed));
    base64::engine::general_purpose::STANDARD
        .encode(digest)
        .trim_end_matches('=')
        .to_owned()
}

/// st2 stores API keys as `sha512("saltnpeper" + key)` and names that hash in its 401 text.
pub(crate) fn api_key_hash(key: &str) -> String {
    let mut h = sha2::Sha512::new();
    h.update(b"saltnpeper");
    h.update(key.as_bytes());
    hex(&h.finalize())
}

fn uuid4_bytes() -> [u8; 16] {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso8601_has_microseconds_and_a_z() {
        let t = UNIX_EPOCH + Duration::from_micros(1_464_439_168_650_231);
        assert_eq!(iso8601(t), "2016-05-28T12:39:28.650231Z");
    }

    #[test]
    fn timestamps_parse_as_st2_filters_read_them() {
        let t = UNIX_EPOCH + Duration::from_micros(1_464_439_168_650_231);
        assert_eq!(parse_iso8601_utc(&iso8601(t)), Some(1_464_439_168_650_231));
        for ok in [
            "2016-05-28T12:39:28Z",
            "2016-05-28 12:39:28.650+00",
            "2016-05-28T12:39:28.650231+0000",
            "2016-05-28T12:39:28+00:00",
        ] {
            assert!(parse_iso8601_utc(ok).is_some(), "{ok}");
        }
        for bad in [
            "2016-05-28",
            "2016-05-28T12:39:28",
            "2016-05-28T12:39:28.65Z",
            "2016-05-28T12:39:28+02:00",
            "2016-05-28T12:39:28 00:00",
            "2016-02-30T00:00:00Z",
        ] {
            assert_eq!(parse_iso8601_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn cookie_dates_use_webob_dashes() {
        let t = UNIX_EPOCH + Duration::from_secs(1_717_243_200);
        assert_eq!(cookie_date(t), "Sat, 01-Jun-2024 12:00:00 GMT");
    }

    #[test]
    fn object_ids_and_tokens_have_st2_lengths() {
        assert_eq!(object_id().len(), 24);
        assert_eq!(token().len(), 32);
        assert_eq!(request_id().len(), 36);
        assert_eq!(api_key_hash("k").len(), 128);
    }
}
