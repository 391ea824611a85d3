//! One error type at the HTTP edge, rendered as RFC 9457 problem+json.
//!
//! Every error the server answers goes through [`ApiError`], including the
//! rejections of axum's extractors (see [`Json`], [`Path`], [`Query`]), unknown
//! routes and panics, so clients only ever parse one error format.

use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};
use tenantry_db::DbError;

tokio::task_local! {
    /// The id of the request being served, so an error body can carry it.
    pub static REQUEST_ID: String;
}

/// The problem code of an error response, for the middleware that counts
/// throttles and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// One field's validation failure (422).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this tenant is suspended")]
    TenantSuspended,
    /// The tenant's feature flags switch this endpoint's feature off.
    #[error("the {0} feature is not enabled for this tenant")]
    FeatureDisabled(tenantry_core::Feature),
    #[error("quota {quota} exceeded")]
    QuotaExceeded { quota: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// An `Idempotency-Key` already used for a different request (422).
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the server is overloaded; retry in {retry_after} s")]
    Overloaded { retry_after: u64 },
    #[error("the query ran past this tenant's statement timeout")]
    QueryTimeout,
    /// The database is away (restarting, unreachable): 503
    /// `database_unavailable`, apart from `overloaded` (the server or the
    /// tenant's share is busy) and from internal errors, so a client knows
    /// to retry and an operator knows where to look.
    #[error("the database is unavailable; retry in {DATABASE_RETRY_AFTER} s")]
    DatabaseUnavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The `Retry-After` of `database_unavailable`. A restart of PostgreSQL takes
/// seconds; asking for a retry within one second would mostly meet the
/// same outage.
pub const DATABASE_RETRY_AFTER: u64 = 2;

/// "The database is away" is logged per request at most once per this
/// interval (with a count of the rest), so an outage is a few log lines.
static UNAVAILABLE_WARNING: tenantry_db::Throttle =
    tenantry_db::Throttle::new(std::time::Duration::from_secs(5));

impl From<anyhow::Error> for ApiError {
    /// An error from anywhere may wrap a broken database connection
    /// (`.context(...)` over a tokio-postgres or pool error): the cause chain
    /// is walked, and such an error is 503 `database_unavailable`, not 500.
    fn from(err: anyhow::Error) -> Self {
        match tenantry_db::unavailable_cause(err.as_ref()) {
            Some(reason) => DbError::Unavailable(reason).into(),
            None => ApiError::Internal(err),
        }
    }
}

/// The problem+json body (API.md, "Conventions").
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl ApiError {
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_)
            | Self::TenantSuspended
            | Self::FeatureDisabled(_)
            | Self::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) | Self::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::QueryTimeout | Self::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (API.md lists them).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::TenantSuspended => "tenant_suspended",
            Self::FeatureDisabled(_) => "feature_disabled",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::QueryTimeout => "query_timeout",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Bad request",
            Self::Unauthenticated(_) => "Authentication required",
            Self::Forbidden(_) => "Forbidden",
            Self::TenantSuspended => "Tenant suspended",
            Self::FeatureDisabled(_) => "Feature disabled",
            Self::QuotaExceeded { .. } => "Quota exceeded",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::RequestTimeout => "Request timeout",
            Self::Conflict(_) => "Conflict",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::Validation(_) => "Validation failed",
            Self::IdempotencyKeyReused(_) => "Idempotency key reused",
            Self::RateLimited { .. } => "Rate limited",
            Self::Overloaded { .. } => "Overloaded",
            Self::QueryTimeout => "Query timeout",
            Self::DatabaseUnavailable => "Database unavailable",
            Self::Internal(_) => "Internal server error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        if let Self::Internal(err) = &self {
            // Logged once, with its cause chain; the client sees nothing of it.
            tracing::error!(request_id = request_id.as_deref(), error = ?err, "internal error");
        }
        let status = self.status();
        let code = self.code();
        let errors = match &self {
            Self::Validation(errors) => Some(errors.clone()),
            _ => None,
        };
        let body = Problem {
            kind: format!("/problems/{code}"),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: code.to_owned(),
            request_id,
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unauthenticated(detail) => {
                let description = detail.replace(['"', '\\'], "'");
                let value = format!(
                    "Bearer realm=\"tenantry\", error=\"invalid_token\", error_description=\"{description}\""
                );
                let value = HeaderValue::from_str(&value)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"tenantry\""));
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
            Self::RateLimited { retry_after } | Self::Overloaded { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::QueryTimeout => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            Self::DatabaseUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(DATABASE_RETRY_AFTER));
            }
            _ => {}
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Conflict { constraint } => {
                ApiError::Conflict(format!("conflicts with existing data ({constraint})"))
            }
            DbError::Timeout => ApiError::QueryTimeout,
            DbError::ReadOnly => {
                ApiError::Forbidden("this access is read only: it cannot write".to_owned())
            }
            DbError::QuotaExceeded { quota } => ApiError::QuotaExceeded {
                quota: quota.to_owned(),
            },
            DbError::Busy(reason) => {
                tracing::debug!(%reason, "database busy");
                ApiError::Overloaded { retry_after: 1 }
            }
            DbError::Unavailable(reason) => {
                if let Some(held_back) = UNAVAILABLE_WARNING.admit() {
                    let request_id = REQUEST_ID.try_with(Clone::clone).ok();
                    tracing::warn!(%reason, held_back, request_id, "database unavailable");
                }
                ApiError::DatabaseUnavailable
            }
            DbError::Other(e) => e.into(),
        }
    }
}

/// `axum::Json`, with rejections as problem+json: malformed JSON 400, a
/// missing or wrong content type 415, a body over the limit 413, and a body
/// of the wrong shape 422 naming the field.
///
/// A body must be a JSON object, checked here once for every body rather
/// than in each handler: serde reads a struct from an array too (its tuple
/// form: `["text"]` made a post), which no client means. Every body this API
/// takes is an object; an endpoint that ever takes another shape needs its
/// own extractor. The check costs nothing: `T` is read straight from the
/// bytes, only asked for as a map (see [`ObjectOnly`]).
///
/// A number beyond `f64` (`1e400`) is a 422 naming its field: the server
/// could neither keep it nor read it back. Every other number is kept
/// exactly (see [`tenantry_db::json`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<ObjectBody<T>>::from_request(req, state).await {
            Ok(axum::Json(ObjectBody(value))) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `T`, read only from a JSON object.
struct ObjectBody<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectBody<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        T::deserialize(ObjectOnly(de)).map(ObjectBody)
    }
}

/// Asks the underlying deserializer for a map whatever `T` asks for, so
/// serde_json refuses anything but `{...}` ("invalid type: sequence, expected
/// struct ..."), a 422 for the body. Only the top level goes through here:
/// fields are read by serde_json's own map access.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The field serde names in "missing field `x`" or "unknown field `x`".
fn named_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split_once('`').map(|(name, _)| name.to_owned())
}

/// A body of the wrong shape (422), from serde_path_to_error's "field:
/// problem" (no field when the problem is the body as a whole).
fn data_error(detail: &str) -> ApiError {
    let (field, message) = match detail.split_once(": ") {
        Some((field, message)) if !field.contains(' ') && field != "." => {
            (field.to_owned(), message.to_owned())
        }
        _ => {
            let message = detail.strip_prefix(".: ").unwrap_or(detail).to_owned();
            (
                named_field(&message).unwrap_or_else(|| "body".to_owned()),
                message,
            )
        }
    };
    ApiError::Validation(vec![FieldError { field, message }])
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            data_error(
                text.strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text),
            )
        }
        JsonRejection::JsonSyntaxError(e) => {
            let text = e.body_text();
            let detail = text
                .strip_prefix("Failed to parse the request body as JSON: ")
                .unwrap_or(&text);
            // Well-formed JSON whose number is beyond f64 (`1e400`): serde_json
            // calls it a syntax error, but it is a value the server cannot
            // keep, named like any other (422).
            if detail.contains("number out of range") {
                let field = match detail.split_once(": ") {
                    Some((field, _)) if !field.contains(' ') && field != "." => field,
                    _ => "body",
                };
                return ApiError::validation(
                    field,
                    "number out of range: the server cannot store it",
                );
            }
            ApiError::BadRequest(format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "expected a body with Content-Type: application/json".to_owned(),
        ),
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: crate::config::BODY_LIMIT,
                }
            } else {
                ApiError::BadRequest(e.body_text())
            }
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `axum::extract::Path` with rejections as problem+json. A malformed id in
/// the path answers 404: no object has that id.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    axum::extract::Path<T>: axum::extract::FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::NotFound("no such resource".to_owned()))
            }
            Err(other) => Err(ApiError::Internal(anyhow::anyhow!(other.body_text()))),
        }
    }
}

/// `axum::extract::Query` with rejections as problem+json (400).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    axum::extract::Query<T>: axum::extract::FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "invalid query string: {}",
                rejection
                    .body_text()
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&rejection.body_text())
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// What [`Json`] makes of a body of `text`.
    fn read<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
        axum::Json::<ObjectBody<T>>::from_bytes(text.as_bytes())
            .map(|axum::Json(ObjectBody(value))| value)
            .map_err(json_rejection)
    }

    fn read_body<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
        read(&body.to_string())
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only through Debug
    struct Post {
        content: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_even_where_serde_would_read_it() {
        // serde reads a struct from its tuple form; the API does not.
        for value in [json!(["text", null]), json!("text"), json!(1), json!(null)] {
            let err = read_body::<Post>(value).expect_err("refused");
            assert_eq!(fields(err), ["body"]);
        }
        assert!(read_body::<Post>(json!({"content": "text"})).is_ok());
    }

    #[test]
    fn a_field_error_names_the_field_by_its_path() {
        let err = read_body::<Post>(json!({"content": "x", "inner": {"n": "one"}}))
            .expect_err("wrong type");
        assert_eq!(fields(err), ["inner.n"]);
        let err = read_body::<Post>(json!({})).expect_err("missing");
        assert_eq!(fields(err), ["content"]);
        let err = read_body::<Post>(json!({"content": "x", "extra": 1})).expect_err("unknown");
        assert_eq!(fields(err), ["extra"]);
    }

    #[test]
    fn a_number_beyond_f64_is_a_422_naming_its_field() {
        let err = read::<Post>(r#"{"content": "x", "inner": {"n": 1e400}}"#).expect_err("too big");
        assert_eq!(fields(err), ["inner.n"]);
        let err =
            read::<serde_json::Map<String, Value>>(r#"{"a": [-1e999]}"#).expect_err("too big");
        assert_eq!(fields(err), ["a[0]"]);
        // Malformed JSON stays a 400.
        assert!(matches!(
            read::<Post>(r#"{"content": "#),
            Err(ApiError::BadRequest(_))
        ));
    }
}
