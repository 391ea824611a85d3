//! Authentication: user JWTs (HS256) and the platform admin token.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::ApiError;

/// The claims Tenantry reads from a user token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Signs and verifies user tokens with one HS256 secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        // Only HS256: a token that names another algorithm (or `none`) fails
        // validation instead of choosing how it is checked.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `user`, valid for `ttl`.
    pub fn issue(
        &self,
        user: Uuid,
        ttl: Duration,
        email: Option<String>,
        name: Option<String>,
    ) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            email,
            name,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Checks signature, algorithm, expiry and the subject.
    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        self.verify_with_exp(token).map(|(user, _)| user)
    }

    /// Like [`JwtKeys::verify`], also returning the token's `exp`.
    pub fn verify_with_exp(&self, token: &str) -> Result<(AuthUser, u64), ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                };
                ApiError::Unauthenticated(why.to_owned())
            })?;
        let id = Uuid::parse_str(&data.claims.sub).map_err(|_| {
            ApiError::Unauthenticated("the token's sub claim must be a UUID".to_owned())
        })?;
        // Claims are stored as the user's profile; PostgreSQL cannot store a
        // NUL character, and nothing legitimate sends one.
        let stored = |claim: &Option<String>| claim.as_deref().is_none_or(|v| !v.contains('\0'));
        if !stored(&data.claims.email) || !stored(&data.claims.name) {
            return Err(ApiError::Unauthenticated(
                "the token's email or name claim contains a NUL character".to_owned(),
            ));
        }
        let exp = data.claims.exp;
        Ok((
            AuthUser {
                id,
                email: data.claims.email,
                name: data.claims.name,
            },
            exp,
        ))
    }
}

/// The `Bearer` credential of a request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    token_str(bearer_bytes(headers)?)
}

/// The `Bearer` credential of a request, as sent: a memoized caller is
/// found by these bytes without reading them as text.
pub fn bearer_bytes(headers: &HeaderMap) -> Result<&[u8], ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated("missing Authorization header".to_owned()))?
        .as_bytes();
    let malformed = || ApiError::Unauthenticated("expected 'Bearer <token>'".to_owned());
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(malformed)?;
    let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// A credential as text. A header value is visible ASCII or obs-text
/// (bytes >= 0x80); a token with the latter fails like any wrong token.
pub fn token_str(token: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(token)
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".to_owned()))
}

/// A signed-in user, provisioned in `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// Compares without stopping at the first difference, so response time does
/// not reveal how much of a guessed token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let user = Uuid::now_v7();
        let token = keys
            .issue(
                user,
                Duration::from_secs(60),
                Some("a@example.com".into()),
                None,
            )
            .expect("issue");
        let verified = keys.verify(&token).expect("valid");
        assert_eq!(verified.id, user);
        assert_eq!(verified.email.as_deref(), Some("a@example.com"));

        let other = JwtKeys::new(b"another-secret-another-secret-xx");
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
