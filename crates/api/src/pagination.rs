//! Keyset pagination: `?limit=` and opaque `?cursor=` tokens bound to the
//! tenant and the list that issued them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tenantry_db::Keyset;
use uuid::Uuid;

use crate::problem::ApiError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// The query parameters every list takes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    #[param(schema_with = limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = cursor_schema)]
    pub cursor: Option<String>,
}

/// The schema of `?limit=`: a whole number from 1 to [`MAX_LIMIT`], default
/// [`DEFAULT_LIMIT`] (400 otherwise).
pub fn limit_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT))
        .default(Some(DEFAULT_LIMIT.into()))
        .description(Some(format!(
            "How many items: 1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}."
        )))
        .build()
}

/// The schema of `?cursor=`: an opaque token (400 if it is not one this list
/// issued for this tenant).
pub fn cursor_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The `next_cursor` of the previous page, as it was: opaque, bound to the tenant and the list that issued it.",
        ))
        .build()
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match &self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    /// The position the cursor holds, checked to come from the same list.
    pub fn after<K: DeserializeOwned>(
        &self,
        scope: Uuid,
        list: &str,
    ) -> Result<Option<K>, ApiError> {
        self.cursor
            .as_deref()
            .map(|raw| decode(raw, scope, list))
            .transpose()
    }
}

/// A page of a list (API.md: `{"items": [...], "next_cursor": ...}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says
    /// whether there is a next page.
    pub fn from_rows<R, K: Serialize>(
        mut rows: Vec<R>,
        limit: i64,
        scope: Uuid,
        list: &str,
        key: impl Fn(&R) -> K,
        view: impl Fn(R) -> T,
    ) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode(scope, list, &key(last)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<K> {
    /// The tenant (or the nil UUID for platform lists).
    s: Uuid,
    /// The list's name.
    l: String,
    k: K,
}

fn encode<K: Serialize>(scope: Uuid, list: &str, key: &K) -> String {
    let envelope = Envelope {
        s: scope,
        l: list.to_owned(),
        k: key,
    };
    let json = serde_json::to_vec(&envelope).expect("cursor keys serialise");
    URL_SAFE_NO_PAD.encode(json)
}

fn decode<K: DeserializeOwned>(raw: &str, scope: Uuid, list: &str) -> Result<K, ApiError> {
    let invalid = || ApiError::BadRequest("invalid cursor".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let envelope: Envelope<K> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if envelope.s != scope || envelope.l != list {
        return Err(ApiError::BadRequest(
            "this cursor belongs to another list".to_owned(),
        ));
    }
    Ok(envelope.k)
}

/// The keyset of a newest-first (or oldest-first) list, as a cursor key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TimeKey {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl From<Keyset> for TimeKey {
    fn from(k: Keyset) -> Self {
        Self {
            at: k.created_at,
            id: k.id,
        }
    }
}

impl From<TimeKey> for Keyset {
    fn from(k: TimeKey) -> Self {
        Keyset {
            created_at: k.at,
            id: k.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_only_work_for_the_list_that_issued_them() {
        let tenant = Uuid::now_v7();
        let key = TimeKey {
            at: Utc::now(),
            id: Uuid::now_v7(),
        };
        let token = encode(tenant, "posts", &key);
        let params = PageParams {
            limit: None,
            cursor: Some(token),
        };
        let back: TimeKey = params.after(tenant, "posts").expect("ok").expect("some");
        assert_eq!(back.id, key.id);
        assert!(params.after::<TimeKey>(Uuid::now_v7(), "posts").is_err());
        assert!(params.after::<TimeKey>(tenant, "members").is_err());
        let garbage = PageParams {
            limit: None,
            cursor: Some("%%%".to_owned()),
        };
        assert!(garbage.after::<TimeKey>(tenant, "posts").is_err());
    }

    #[test]
    fn limit_is_bounded() {
        let p = |l: &str| PageParams {
            limit: Some(l.to_owned()),
            cursor: None,
        };
        assert_eq!(p("1").limit().expect("ok"), 1);
        assert_eq!(p("100").limit().expect("ok"), 100);
        assert!(p("0").limit().is_err());
        assert!(p("101").limit().is_err());
        assert!(p("ten").limit().is_err());
        assert_eq!(PageParams::default().limit().expect("ok"), DEFAULT_LIMIT);
    }
}
