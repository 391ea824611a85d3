//! Custom domains a tenant can be reached at.

use std::fmt;

use crate::ParseError;

/// A lowercase DNS hostname with at least two labels, such as
/// `community.example.org`. Ports and trailing dots are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() || host.len() > 253 {
            return Err(ParseError::new("domain must be 1 to 253 characters long"));
        }
        let labels: Vec<&str> = host.split('.').collect();
        if labels.len() < 2 {
            return Err(ParseError::new("domain must have at least two labels"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(ParseError::new(format!("'{raw}' is not a valid hostname")));
            }
        }
        Ok(Self(host))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_trailing_dot() {
        let d = Domain::parse("Community.Example.ORG.").expect("valid");
        assert_eq!(d.as_str(), "community.example.org");
    }

    #[test]
    fn refuses_non_hostnames() {
        for bad in [
            "localhost",
            "a..b",
            "-a.com",
            "a-.com",
            "exa mple.com",
            "x.com:80",
            "",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
