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
