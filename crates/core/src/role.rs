//! Roles of a member within a tenant.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// A member's role. Ordered by power: `Member < Moderator < Admin < Owner`,
/// so a permission check reads `role >= Role::Moderator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Moderator,
    Admin,
    Owner,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "member" => Ok(Self::Member),
            "moderator" => Ok(Self::Moderator),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            _ => Err(ParseError::new(
                "role must be one of owner, admin, moderator, member",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Member < Role::Moderator);
        assert!(Role::Moderator < Role::Admin);
        assert!(Role::Admin < Role::Owner);
    }

    #[test]
    fn parse_round_trips() {
        for role in [Role::Member, Role::Moderator, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("Owner").is_err());
    }
}
