//! Timestamps in JSON, as chrono writes them (RFC 3339, `Z`, the fraction's
//! digits as needed: 0, 3, 6 or 9), without chrono's general formatting
//! machinery: ~3,400 instructions a timestamp there (callgrind), a few
//! hundred here. Every post in a list carries two.
//!
//! Use on a `DateTime<Utc>` field with
//! `#[serde(serialize_with = "crate::json_time::serialize")]`.

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use serde::{Serialize as _, Serializer};

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(t, &mut buf) {
        Some(len) => {
            s.serialize_str(std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?)
        }
        // Years outside 0..=9999 and leap seconds: chrono's own form.
        None => t.serialize(s),
    }
}

/// Writes `t` into `buf`; `None` where chrono's form differs from the
/// common one.
pub(crate) fn write(t: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    // The fields of the naive UTC time: a `DateTime`'s own accessors add
    // its (zero) offset again for each field they read.
    let t = t.naive_utc();
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    digits(&mut buf[0..4], year);
    buf[4] = b'-';
    digits(&mut buf[5..7], t.month());
    buf[7] = b'-';
    digits(&mut buf[8..10], t.day());
    buf[10] = b'T';
    digits(&mut buf[11..13], t.hour());
    buf[13] = b':';
    digits(&mut buf[14..16], t.minute());
    buf[16] = b':';
    digits(&mut buf[17..19], t.second());
    let end = if nanos == 0 {
        19
    } else if nanos.is_multiple_of(1_000_000) {
        digits(&mut buf[20..23], nanos / 1_000_000);
        23
    } else if nanos.is_multiple_of(1_000) {
        digits(&mut buf[20..26], nanos / 1_000);
        26
    } else {
        digits(&mut buf[20..29], nanos);
        29
    };
    if end > 19 {
        buf[19] = b'.';
    }
    buf[end] = b'Z';
    Some(end + 1)
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[derive(serde::Serialize)]
    struct Fast(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    fn same_as_chrono(t: DateTime<Utc>) {
        let ours = serde_json::to_string(&Fast(t)).expect("serializes");
        let chrono = serde_json::to_string(&t).expect("serializes");
        assert_eq!(ours, chrono, "for {t:?}");
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = Utc
            .with_ymd_and_hms(2026, 11, 25, 1, 2, 3)
            .single()
            .expect("a valid time");
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            123_456_000,
            500_000_000,
            999_999_999,
            123_456_789,
            7_000_000,
        ] {
            same_as_chrono(base + chrono::Duration::nanoseconds(nanos));
        }
        // A spread of dates, including the year's ends and leap days.
        let mut t = Utc
            .with_ymd_and_hms(1970, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid time");
        for _ in 0..2_000 {
            same_as_chrono(t);
            t += chrono::Duration::seconds(86_400 * 17 + 3_607) + chrono::Duration::microseconds(7);
        }
        for (y, mo, d) in [(0, 1, 1), (9999, 12, 31), (2024, 2, 29), (1, 1, 1)] {
            same_as_chrono(
                Utc.with_ymd_and_hms(y, mo, d, 23, 59, 59)
                    .single()
                    .expect("a valid time"),
            );
        }
    }

    #[test]
    fn falls_back_to_chrono_outside_four_digit_years() {
        for y in [-1, 10_000, 262_000] {
            same_as_chrono(
                Utc.with_ymd_and_hms(y, 6, 1, 12, 0, 0)
                    .single()
                    .expect("a valid time"),
            );
        }
    }
}
