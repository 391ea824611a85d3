//! Reading a row's columns where a statement put them.
//!
//! `Row::try_get("name")` compares the name with every column before it, on
//! every read: a page of twenty posts read by name made about 2,500 name
//! comparisons, and chrono's general date arithmetic turned each
//! `timestamptz` into a `DateTime` (callgrind, an uncached
//! `GET /v1/posts?limit=20`: 12 % of the server's instructions between the
//! two). Here a column is read at the position its statement gives it, after
//! one comparison of its name, and by name only when it is not there, so a
//! statement that selects more or other columns still reads right.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};

/// Where column `name` is in `row` (the first one so named), or 0 when it is
/// not there (every read then falls back to its name).
pub(crate) fn position(row: &Row, name: &str) -> usize {
    row.columns()
        .iter()
        .position(|c| c.name() == name)
        .unwrap_or(0)
}

/// Column `name` of `row`: read at `at` when it is there, else by name.
pub(crate) fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    at: usize,
    name: &str,
) -> Result<T, tokio_postgres::Error> {
    if row.columns().get(at).is_some_and(|c| c.name() == name) {
        row.try_get(at)
    } else {
        row.try_get(name)
    }
}

/// A `timestamptz` column, as [`get`] reads it.
pub(crate) fn time(
    row: &Row,
    at: usize,
    name: &str,
) -> Result<DateTime<Utc>, tokio_postgres::Error> {
    get::<Timestamp>(row, at, name).map(|t| t.0)
}

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` decoded from PostgreSQL's microseconds since 2000 in one
/// step from the Unix epoch, where `postgres-types` adds a `Duration` to a
/// date (the same instant; `±infinity` is refused by both).
struct Timestamp(DateTime<Utc>);

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let micros = i64::from_be_bytes(raw.try_into().map_err(|_| "invalid timestamp length")?);
        micros
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .map(Self)
            .ok_or_else(|| "value too large to decode".into())
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(micros: i64) -> Option<DateTime<Utc>> {
        Timestamp::from_sql(&Type::TIMESTAMPTZ, &micros.to_be_bytes())
            .ok()
            .map(|t| t.0)
    }

    /// What `postgres-types` makes of the same bytes.
    fn theirs(micros: i64) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::from_sql(&Type::TIMESTAMPTZ, &micros.to_be_bytes()).ok()
    }

    #[test]
    fn a_timestamp_decodes_as_postgres_types_decodes_it() {
        for micros in [
            0,
            1,
            -1,
            999_999,
            -1_000_001,
            PG_EPOCH_MICROS,
            -PG_EPOCH_MICROS,
            850_000_000_123_456,
            -63_082_281_600_000_000, // 0001-01-01
            252_455_615_999_999_999, // 9999-12-31T23:59:59.999999
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(decode(micros), theirs(micros), "{micros}");
        }
        assert!(decode(i64::MAX).is_none(), "infinity is refused");
        assert!(decode(i64::MIN).is_none(), "-infinity is refused");
    }

    proptest::proptest! {
        #[test]
        fn any_instant_decodes_as_postgres_types_decodes_it(micros in -200_000_000_000_000_000_i64..200_000_000_000_000_000) {
            proptest::prop_assert_eq!(decode(micros), theirs(micros));
        }
    }
}
