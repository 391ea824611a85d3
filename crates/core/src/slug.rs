//! Tenant slugs: the name a tenant is addressed by in URLs, subdomains and headers.

use std::fmt;

use crate::ParseError;

/// Words no tenant may take: they name parts of the platform itself, or would
/// make a subdomain look official (`admin.example.com`).
const RESERVED: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "billing",
    "blog",
    "cdn",
    "dashboard",
    "docs",
    "help",
    "healthz",
    "internal",
    "login",
    "mail",
    "metrics",
    "new",
    "openapi",
    "platform",
    "readyz",
    "root",
    "settings",
    "signup",
    "static",
    "status",
    "support",
    "system",
    "tenant",
    "tenantry",
    "tenants",
    "test",
    "www",
];

/// A tenant's slug: 3 to 63 characters of lowercase ASCII letters, digits and
/// hyphens, starting with a letter, not ending with a hyphen, no `--`, and not
/// a reserved word. That is exactly what a DNS label allows, so every slug is
/// also a valid subdomain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let len = raw.len();
        if !(3..=63).contains(&len) {
            return Err(ParseError::new("slug must be 3 to 63 characters long"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ParseError::new(
                "slug may contain only lowercase letters, digits and hyphens",
            ));
        }
        if !raw.as_bytes()[0].is_ascii_lowercase() {
            return Err(ParseError::new("slug must start with a letter"));
        }
        if raw.ends_with('-') || raw.contains("--") {
            return Err(ParseError::new(
                "slug must not end with a hyphen or contain two hyphens in a row",
            ));
        }
        if RESERVED.contains(&raw) {
            return Err(ParseError::new(format!("slug '{raw}' is reserved")));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantSlug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_label_slugs() {
        for ok in ["acme", "a1b", "acme-corp", "x2-y3-z4", &"a".repeat(63)] {
            assert!(TenantSlug::parse(ok).is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn refuses_bad_slugs_with_a_reason() {
        for bad in [
            "ab",
            "Acme",
            "1acme",
            "acme-",
            "ac--me",
            "acme_corp",
            "acme.corp",
            "admin",
            "www",
            "ünï",
            "",
            &"a".repeat(64),
        ] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            TenantSlug::parse("api").expect_err("reserved").to_string(),
            "slug 'api' is reserved"
        );
    }
}
