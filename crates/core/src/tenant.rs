//! A tenant's lifecycle and how people join it.

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Whether a tenant serves requests. `Deleted` tenants answer 404 like unknown
/// ones while a background purge removes their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
    Deleted,
    /// Created by an import whose archive is not loaded yet: serves nothing
    /// (like an unknown tenant) until the archive is verified and in.
    Importing,
}

impl TenantStatus {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "deleted" => Ok(Self::Deleted),
            "importing" => Ok(Self::Importing),
            _ => Err(ParseError::new("status must be active or suspended")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
            Self::Importing => "importing",
        }
    }
}

/// Who may become a member: anyone signed in (`Open`, via `POST /v1/members/me`)
/// or only people an admin adds (`Invite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinPolicy {
    Open,
    #[default]
    Invite,
}

impl JoinPolicy {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "open" => Ok(Self::Open),
            "invite" => Ok(Self::Invite),
            _ => Err(ParseError::new("join_policy must be open or invite")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Invite => "invite",
        }
    }
}
