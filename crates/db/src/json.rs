//! JSON through PostgreSQL's `jsonb`, both ways.
//!
//! `jsonb` keeps a number as `numeric`, exactly as written, and prints it back
//! as plain decimal, never with an exponent: the `1.7976931348623157e308` that
//! serde_json writes comes back as a 309-digit integer. serde_json's default
//! (best-effort, fast) float parser could not read every such text back: it
//! answered "number out of range" near `f64::MAX`, `row.get` then panicked,
//! and one tenant's setting took down every list of tenants. Two things keep
//! what the server stores readable:
//!
//! - The workspace builds serde_json with `float_roundtrip`: floats parse
//!   correctly rounded, so every finite `f64` the server writes reads back
//!   equal from the exact decimal `jsonb` prints (the property tests below
//!   model that text and fail if the feature is ever dropped). The same
//!   feature makes the server read a client's float exactly as sent.
//! - [`Jsonb`] decodes a `json`/`jsonb` column without failing on whatever
//!   PostgreSQL may hold (a number beyond `f64` written by hand, rows from an
//!   older server): the fast path is serde_json as before, and only a text
//!   serde_json refuses is read again leniently. One bad value never takes a
//!   request, let alone a list, down.

use std::error::Error;

use serde_json::Value;
use tokio_postgres::types::{FromSql, Type};

/// A `json` or `jsonb` column, decoded leniently (see the module doc). Read
/// JSON columns with `row.try_get::<_, Jsonb>(..)?.0`, never `row.get`.
#[derive(Debug, Clone, PartialEq)]
pub struct Jsonb(pub Value);

impl<'a> FromSql<'a> for Jsonb {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            // The binary format of jsonb is a version byte, then the text.
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("unsupported jsonb encoding version".into()),
            }
        } else {
            raw
        };
        decode(text).map(Jsonb)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }
}

/// Parses JSON text as PostgreSQL prints it. serde_json first (the common,
/// fast case); if it refuses, the text is read again with each number that
/// is not an exact `i64`/`u64` parsed by `f64::from_str` (correctly rounded)
/// and rewritten in the form serde_json writes. A number beyond `f64` is kept
/// as a string of its digits rather than lost: the value cannot be a number
/// here, but whoever reads it sees what was stored.
pub fn decode(text: &[u8]) -> Result<Value, Box<dyn Error + Sync + Send>> {
    let first = match serde_json::from_slice(text) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let text = std::str::from_utf8(text)?;
    let value = serde_json::from_str(&rewrite_numbers(text))
        .map_err(|second| format!("undecodable JSON ({first}; read again: {second})"))?;
    tracing::warn!(error = %first, "JSON column decoded with correctly rounded numbers");
    Ok(value)
}

/// `text` with every number that is not an exact integer rewritten (see
/// [`decode`]). Strings, including escaped quotes inside them, are copied
/// untouched.
fn rewrite_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let mut in_string = false;
    let mut escaped = false;
    while let Some((i, c)) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            continue;
        }
        if c != '-' && !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if d.is_ascii_digit() || matches!(d, '.' | 'e' | 'E' | '+' | '-') {
                end = j + d.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let token = &text[i..end];
        if token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok() {
            out.push_str(token);
            continue;
        }
        match token.parse::<f64>() {
            Ok(x) if x.is_finite() => match serde_json::Number::from_f64(x) {
                Some(n) => out.push_str(&n.to_string()),
                None => out.push_str(token),
            },
            _ => {
                out.push('"');
                out.push_str(token);
                out.push('"');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text `jsonb` prints for the number serde_json writes as `written`
    /// (serde_json's own output: digits, optional fraction, optional exponent).
    ///
    /// PostgreSQL's `numeric_in` keeps the exact decimal value and a display scale
    /// of `max(0, fraction digits - exponent)`; `numeric_out` prints that value
    /// plain, with exactly that many fraction digits, and no sign on zero.
    fn pg_numeric_text(written: &str) -> String {
        let (negative, unsigned) = match written.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, written),
        };
        let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
            None => (unsigned, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: String = format!("{int_part}{frac_part}");
        // Where the decimal point falls within `digits`.
        let point = int_part.len() as i64 + exponent;
        let scale = (frac_part.len() as i64 - exponent).max(0);

        let mut int_digits = String::new();
        let mut frac_digits = String::new();
        for (i, d) in digits.chars().enumerate() {
            if (i as i64) < point {
                int_digits.push(d);
            } else {
                frac_digits.push(d);
            }
        }
        // Zeros the exponent adds after the digits, or between the point and them.
        if point > digits.len() as i64 {
            int_digits.extend(std::iter::repeat_n(
                '0',
                (point - digits.len() as i64) as usize,
            ));
        }
        if point < 0 {
            frac_digits.insert_str(0, &"0".repeat(point.unsigned_abs() as usize));
        }
        let int_digits = int_digits.trim_start_matches('0');
        let int_digits = if int_digits.is_empty() {
            "0"
        } else {
            int_digits
        };
        // Trailing zeros beyond the scale carry no value; fewer are padded.
        let mut frac: String = frac_digits.chars().take(scale as usize).collect();
        while (frac.len() as i64) < scale {
            frac.push('0');
        }
        let zero = int_digits == "0" && frac.chars().all(|c| c == '0');
        let sign = if negative && !zero { "-" } else { "" };
        if frac.is_empty() {
            format!("{sign}{int_digits}")
        } else {
            format!("{sign}{int_digits}.{frac}")
        }
    }

    #[test]
    fn pg_numeric_text_prints_what_postgresql_prints() {
        for (written, printed) in [
            ("1.0", "1.0"),
            ("-0.0", "0.0"),
            ("0.5", "0.5"),
            ("1e20", "100000000000000000000"),
            ("1.5e-7", "0.00000015"),
            ("-2.5e3", "-2500"),
            ("123.456", "123.456"),
            (
                "1.7976931348623157e308",
                &format!("17976931348623157{}", "0".repeat(292)),
            ),
            ("5e-324", &format!("0.{}5", "0".repeat(323))),
        ] {
            assert_eq!(pg_numeric_text(written), printed, "{written}");
        }
    }

    #[test]
    fn a_number_beyond_f64_is_kept_as_its_digits_and_the_rest_decodes() {
        let stored = pg_numeric_text("1.7976931348623157e308");
        let text = format!(r#"{{"x": {stored}, "s": "-1e999 \" 5", "n": [1, -2.5, 1e999]}}"#);
        let value = decode(text.as_bytes()).expect("decodes");
        assert_eq!(value["x"].as_f64(), Some(f64::MAX));
        assert_eq!(value["s"], "-1e999 \" 5");
        assert_eq!(value["n"][0], 1);
        assert_eq!(value["n"][1].as_f64(), Some(-2.5));
        // Beyond f64: kept as the digits PostgreSQL printed.
        assert_eq!(value["n"][2], "1e999");
    }

    #[test]
    fn jsonb_accepts_both_json_types_and_checks_the_version_byte() {
        let jsonb = Jsonb::from_sql(&Type::JSONB, b"\x01{\"a\": 1}").expect("jsonb");
        assert_eq!(jsonb.0, serde_json::json!({"a": 1}));
        let json = Jsonb::from_sql(&Type::JSON, b"[true]").expect("json");
        assert_eq!(json.0, serde_json::json!([true]));
        assert!(Jsonb::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(!<Jsonb as FromSql>::accepts(&Type::TEXT));
    }

    /// Any finite f64, with the edges `any::<f64>()` rarely draws.
    fn any_finite() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            any::<f64>().prop_filter("finite", |x| x.is_finite()),
            (1u64..(1 << 52)).prop_map(f64::from_bits), // subnormals
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(-0.0),
            Just(0.1 + 0.2),
            Just(9_007_199_254_740_993.0),
            // A subnormal the default parser misread by an ulp.
            Just(6.50736165164083e-309),
        ]
    }

    proptest::proptest! {
        /// The modelled jsonb text is the exact decimal serde_json wrote: the
        /// standard library's correctly rounded parser reads it back to `x`.
        #[test]
        fn pg_numeric_text_keeps_the_value(x in any_finite()) {
            let written = serde_json::Number::from_f64(x).expect("finite").to_string();
            let printed = pg_numeric_text(&written);
            proptest::prop_assert!(!printed.contains(['e', 'E']), "{}", printed);
            proptest::prop_assert_eq!(printed.parse::<f64>().expect("a decimal"), x, "{} -> {}", written, printed);
        }

        /// Every finite float, written by serde_json and printed back by
        /// jsonb, reads back equal with this build's serde_json: strictly, and
        /// through the lenient decoder.
        #[test]
        fn every_float_reads_back_through_jsonb(x in any_finite()) {
            let n = serde_json::Number::from_f64(x).expect("finite");
            let printed = pg_numeric_text(&n.to_string());
            let strict: Value = serde_json::from_str(&printed)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{printed}: {e}")))?;
            proptest::prop_assert_eq!(strict.as_f64(), Some(x), "{}", printed);
            let stored = format!("{{\"v\": [{printed}]}}");
            let lenient = decode(stored.as_bytes()).expect("decodes");
            proptest::prop_assert_eq!(lenient["v"][0].as_f64(), Some(x), "{}", printed);
        }
    }
}
