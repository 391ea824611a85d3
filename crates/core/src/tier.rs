//! Service tiers and the limits they set.
//!
//! A tenant's effective limits are its tier's [`Limits`] with the tenant's own
//! [`LimitOverrides`] laid on top. Tiers are built in (`free`, `pro`,
//! `enterprise`) and can be replaced or extended by a TOML file.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ParseError;
use crate::features::FeatureFlags;

/// The name of a tier in the [`TierTable`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TierName(String);

impl TierName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a tier (or an override) limits. Rates are per second; a burst is
/// how many requests may arrive at once above the steady rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub rate_per_sec: u32,
    pub burst: u32,
    pub user_rate_per_sec: u32,
    pub db_concurrency: u32,
    /// The least and the most database operations at once the autoscaler
    /// may move the tenant to on its measured queue wait, starting from
    /// `db_concurrency` (see [`Limits::db_concurrency_bounds`]). Unset:
    /// half and twice `db_concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_concurrency_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_concurrency_max: Option<u32>,
    pub statement_timeout_ms: u32,
    pub cache_ttl_secs: u32,
    pub max_members: u64,
    pub max_posts: u64,
    pub max_storage_mb: u64,
    pub analytics_events_per_day: u64,
    /// Weight in the fair queue across tenants: a weight-4 tenant is admitted
    /// four times as often as a weight-1 tenant when both are waiting.
    pub weight: u32,
    /// The tier's feature flags (`[tiers.<t>.features]`); every feature is
    /// on unless the file says otherwise. In a tenant's effective limits
    /// (see `AppState::limits_of`) they are resolved to on or off.
    #[serde(default)]
    pub features: FeatureFlags,
    /// Hours between scheduled backups (exports) of each tenant; 0: none.
    #[serde(default)]
    pub backup_every_hours: u32,
    /// Scheduled backups kept per tenant; older ones are pruned.
    #[serde(default = "default_backups_kept")]
    pub backups_kept: u32,
    /// When the tenant's measurements raise alerts (`[tiers.<t>.thresholds]`).
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_backups_kept() -> u32 {
    7
}

/// When a tenant's measurements raise an alert: a threshold alert opens when
/// a measure breaks its threshold for `for_minutes` consecutive minutes and
/// resolves after as many clean ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Request latency, 99th percentile over a minute, in milliseconds.
    pub p99_ms: f64,
    /// Server errors (5xx) ÷ requests over a minute.
    pub error_rate: f64,
    /// Requests answered 429 ÷ requests over a minute.
    pub throttle_rate: f64,
    /// Time queued for the fair database share, 99th percentile, in ms.
    pub db_wait_p99_ms: f64,
    /// Consecutive minutes a measure must break (or clear) its threshold.
    pub for_minutes: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            p99_ms: 1_000.0,
            error_rate: 0.05,
            throttle_rate: 0.25,
            db_wait_p99_ms: 250.0,
            for_minutes: 2,
        }
    }
}

/// A tenant's own thresholds over its tier's (`PATCH .. {"thresholds"}`);
/// `None` keeps the tier's. Unknown names are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_wait_p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_minutes: Option<u32>,
}

impl Thresholds {
    /// Lays `o` on top of these thresholds.
    pub fn with(&self, o: &ThresholdOverrides) -> Thresholds {
        Thresholds {
            p99_ms: o.p99_ms.unwrap_or(self.p99_ms),
            error_rate: o.error_rate.unwrap_or(self.error_rate),
            throttle_rate: o.throttle_rate.unwrap_or(self.throttle_rate),
            db_wait_p99_ms: o.db_wait_p99_ms.unwrap_or(self.db_wait_p99_ms),
            for_minutes: o.for_minutes.unwrap_or(self.for_minutes),
        }
    }

    /// Positive, finite numbers; rates at most 1; 1 to 1,440 minutes.
    pub fn validate(&self) -> Result<(), ParseError> {
        for (name, v) in [
            ("p99_ms", self.p99_ms),
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("db_wait_p99_ms", self.db_wait_p99_ms),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ParseError::new(format!("{name} must be a positive number")));
            }
        }
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
        ] {
            if v > 1.0 {
                return Err(ParseError::new(format!("{name} must be at most 1")));
            }
        }
        if !(1..=1_440).contains(&self.for_minutes) {
            return Err(ParseError::new("for_minutes must be from 1 to 1440"));
        }
        Ok(())
    }
}

impl Limits {
    /// Lays `overrides` on top of these limits.
    pub fn with(&self, overrides: &LimitOverrides) -> Limits {
        Limits {
            rate_per_sec: overrides.rate_per_sec.unwrap_or(self.rate_per_sec),
            burst: overrides.burst.unwrap_or(self.burst),
            user_rate_per_sec: overrides
                .user_rate_per_sec
                .unwrap_or(self.user_rate_per_sec),
            db_concurrency: overrides.db_concurrency.unwrap_or(self.db_concurrency),
            db_concurrency_min: self.db_concurrency_min,
            db_concurrency_max: self.db_concurrency_max,
            statement_timeout_ms: overrides
                .statement_timeout_ms
                .unwrap_or(self.statement_timeout_ms),
            cache_ttl_secs: overrides.cache_ttl_secs.unwrap_or(self.cache_ttl_secs),
            max_members: overrides.max_members.unwrap_or(self.max_members),
            max_posts: overrides.max_posts.unwrap_or(self.max_posts),
            max_storage_mb: overrides.max_storage_mb.unwrap_or(self.max_storage_mb),
            analytics_events_per_day: overrides
                .analytics_events_per_day
                .unwrap_or(self.analytics_events_per_day),
            weight: overrides.weight.unwrap_or(self.weight),
            features: self.features,
            backup_every_hours: self.backup_every_hours,
            backups_kept: self.backups_kept,
            thresholds: self.thresholds.clone(),
        }
    }

    /// The autoscaler's bounds for the tenant's database concurrency:
    /// `(min, max)`, always with `1 ≤ min ≤ db_concurrency ≤ max` (an
    /// override of `db_concurrency` outside the tier's bounds widens them).
    pub fn db_concurrency_bounds(&self) -> (u32, u32) {
        let base = self.db_concurrency.max(1);
        let min = self
            .db_concurrency_min
            .unwrap_or(base.div_ceil(2))
            .clamp(1, base);
        let max = self
            .db_concurrency_max
            .unwrap_or(base.saturating_mul(2))
            .max(base);
        (min, max)
    }

    fn validate(&self) -> Result<(), ParseError> {
        for (name, value) in [
            ("db_concurrency_min", self.db_concurrency_min),
            ("db_concurrency_max", self.db_concurrency_max),
        ] {
            if value == Some(0) {
                return Err(ParseError::new(format!("{name} must be at least 1")));
            }
        }
        if let (Some(min), Some(max)) = (self.db_concurrency_min, self.db_concurrency_max)
            && min > max
        {
            return Err(ParseError::new(
                "db_concurrency_min must be at most db_concurrency_max",
            ));
        }
        let positive = [
            ("rate_per_sec", self.rate_per_sec),
            ("burst", self.burst),
            ("user_rate_per_sec", self.user_rate_per_sec),
            ("db_concurrency", self.db_concurrency),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("weight", self.weight),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ParseError::new(format!("{name} must be at least 1")));
            }
        }
        self.thresholds
            .validate()
            .map_err(|e| ParseError::new(format!("thresholds: {e}")))
    }
}

/// Per-tenant overrides set by a platform admin; `None` keeps the tier's value.
/// Unknown names are refused so a typo never silently does nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_rate_per_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_posts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_storage_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics_events_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl LimitOverrides {
    /// Checks that no override sets a rate, concurrency, timeout or weight to 0.
    pub fn validate(&self) -> Result<(), ParseError> {
        let zero = [
            ("rate_per_sec", self.rate_per_sec),
            ("burst", self.burst),
            ("user_rate_per_sec", self.user_rate_per_sec),
            ("db_concurrency", self.db_concurrency),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("weight", self.weight),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        match zero {
            Some((name, _)) => Err(ParseError::new(format!("{name} must be at least 1"))),
            None => Ok(()),
        }
    }
}

/// The tiers a platform offers, by name, and which one new tenants get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTable {
    #[serde(default = "default_tier_name")]
    pub default_tier: String,
    pub tiers: BTreeMap<String, Limits>,
}

fn default_tier_name() -> String {
    "free".to_owned()
}

impl Default for TierTable {
    fn default() -> Self {
        let tiers = BTreeMap::from([
            (
                "free".to_owned(),
                Limits {
                    rate_per_sec: 50,
                    burst: 100,
                    user_rate_per_sec: 10,
                    db_concurrency: 2,
                    db_concurrency_min: Some(1),
                    db_concurrency_max: Some(4),
                    statement_timeout_ms: 2_000,
                    cache_ttl_secs: 30,
                    max_members: 1_000,
                    max_posts: 10_000,
                    max_storage_mb: 500,
                    analytics_events_per_day: 100_000,
                    weight: 1,
                    features: FeatureFlags::default(),
                    backup_every_hours: 24,
                    backups_kept: 3,
                    thresholds: Thresholds::default(),
                },
            ),
            (
                "pro".to_owned(),
                Limits {
                    rate_per_sec: 500,
                    burst: 1_000,
                    user_rate_per_sec: 50,
                    db_concurrency: 4,
                    db_concurrency_min: Some(2),
                    db_concurrency_max: Some(8),
                    statement_timeout_ms: 5_000,
                    cache_ttl_secs: 60,
                    max_members: 100_000,
                    max_posts: 1_000_000,
                    max_storage_mb: 10_000,
                    analytics_events_per_day: 5_000_000,
                    weight: 2,
                    features: FeatureFlags::default(),
                    backup_every_hours: 24,
                    backups_kept: 7,
                    thresholds: Thresholds::default(),
                },
            ),
            (
                "enterprise".to_owned(),
                Limits {
                    rate_per_sec: 5_000,
                    burst: 10_000,
                    user_rate_per_sec: 200,
                    db_concurrency: 8,
                    db_concurrency_min: Some(4),
                    db_concurrency_max: Some(16),
                    statement_timeout_ms: 15_000,
                    cache_ttl_secs: 120,
                    max_members: 10_000_000,
                    max_posts: 100_000_000,
                    max_storage_mb: 1_000_000,
                    analytics_events_per_day: 100_000_000,
                    weight: 4,
                    features: FeatureFlags::default(),
                    backup_every_hours: 6,
                    backups_kept: 28,
                    thresholds: Thresholds::default(),
                },
            ),
        ]);
        Self {
            default_tier: default_tier_name(),
            tiers,
        }
    }
}

impl TierTable {
    /// Reads a tier table from TOML:
    ///
    /// ```toml
    /// default_tier = "free"
    /// [tiers.free]
    /// rate_per_sec = 50
    /// # ... every field of `Limits`
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, ParseError> {
        let table: TierTable =
            toml::from_str(text).map_err(|e| ParseError::new(format!("tiers file: {e}")))?;
        table.validate()?;
        Ok(table)
    }

    pub fn validate(&self) -> Result<(), ParseError> {
        if self.tiers.is_empty() {
            return Err(ParseError::new("tiers file: at least one tier is needed"));
        }
        if !self.tiers.contains_key(&self.default_tier) {
            return Err(ParseError::new(format!(
                "tiers file: default_tier '{}' is not a defined tier",
                self.default_tier
            )));
        }
        for (name, limits) in &self.tiers {
            limits
                .validate()
                .map_err(|e| ParseError::new(format!("tier {name}: {e}")))?;
        }
        Ok(())
    }

    /// Parses a tier name that exists in this table.
    pub fn parse_name(&self, raw: &str) -> Result<TierName, ParseError> {
        if self.tiers.contains_key(raw) {
            Ok(TierName(raw.to_owned()))
        } else {
            let known: Vec<&str> = self.tiers.keys().map(String::as_str).collect();
            Err(ParseError::new(format!(
                "tier must be one of {}",
                known.join(", ")
            )))
        }
    }

    pub fn default_name(&self) -> TierName {
        TierName(self.default_tier.clone())
    }

    /// The limits of `tier`, or of the default tier if `tier` was removed from
    /// the table since the tenant was created (a tenant never loses all limits).
    pub fn limits(&self, tier: &str) -> &Limits {
        self.tiers
            .get(tier)
            .or_else(|| self.tiers.get(&self.default_tier))
            .expect("validated: the default tier exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tiers_are_valid_and_ordered() {
        let table = TierTable::default();
        table.validate().expect("valid");
        assert!(table.limits("pro").rate_per_sec > table.limits("free").rate_per_sec);
        assert!(table.limits("enterprise").weight > table.limits("pro").weight);
    }

    #[test]
    fn concurrency_bounds_default_around_the_base_and_take_in_an_override() {
        let table = TierTable::default();
        assert_eq!(table.limits("free").db_concurrency_bounds(), (1, 4));
        let mut bare = table.limits("pro").clone();
        bare.db_concurrency_min = None;
        bare.db_concurrency_max = None;
        assert_eq!(bare.db_concurrency_bounds(), (2, 8));
        let wide = table.limits("free").with(&LimitOverrides {
            db_concurrency: Some(10),
            ..Default::default()
        });
        assert_eq!(wide.db_concurrency_bounds(), (1, 10));
        let mut crossed = table.limits("free").clone();
        crossed.db_concurrency_min = Some(5);
        crossed.db_concurrency_max = Some(3);
        assert!(crossed.validate().is_err());
        crossed.db_concurrency_min = Some(0);
        crossed.db_concurrency_max = None;
        assert!(crossed.validate().is_err());
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let table = TierTable::default();
        let overrides = LimitOverrides {
            rate_per_sec: Some(7),
            ..Default::default()
        };
        let limits = table.limits("free").with(&overrides);
        assert_eq!(limits.rate_per_sec, 7);
        assert_eq!(limits.burst, table.limits("free").burst);
    }

    #[test]
    fn unknown_override_names_are_refused() {
        let err = serde_json::from_str::<LimitOverrides>(r#"{"rate_per_second": 5}"#);
        assert!(err.is_err());
        let zero = LimitOverrides {
            db_concurrency: Some(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }

    /// A tiers file with one tier, `basic`: the built-in `free` with
    /// `thresholds` (as TOML, the tier's own sub-table).
    fn with_thresholds(thresholds: Thresholds) -> String {
        let mut basic = TierTable::default().limits("free").clone();
        basic.thresholds = thresholds;
        toml::to_string(&TierTable {
            default_tier: "basic".to_owned(),
            tiers: BTreeMap::from([("basic".to_owned(), basic)]),
        })
        .expect("serialise")
    }

    #[test]
    fn a_tier_reads_its_thresholds_from_its_own_table_and_a_tenant_overrides_them() {
        let file = with_thresholds(Thresholds {
            p99_ms: 300.0,
            for_minutes: 3,
            ..Thresholds::default()
        });
        assert!(file.contains("[tiers.basic.thresholds]"), "{file}");
        let table = TierTable::from_toml(&file).expect("valid table");
        let t = &table.limits("basic").thresholds;
        assert_eq!((t.p99_ms, t.for_minutes), (300.0, 3));
        assert_eq!(t.error_rate, Thresholds::default().error_rate);
        let mine = t.with(&ThresholdOverrides {
            p99_ms: Some(50.0),
            ..Default::default()
        });
        assert_eq!((mine.p99_ms, mine.for_minutes), (50.0, 3));
        let bad = with_thresholds(Thresholds {
            error_rate: 2.0,
            ..Thresholds::default()
        });
        assert!(TierTable::from_toml(&bad).is_err());
    }

    #[test]
    fn toml_table_must_name_an_existing_default() {
        let file = |default: &str| {
            let free = TierTable::default().limits("free").clone();
            toml::to_string(&TierTable {
                default_tier: default.to_owned(),
                tiers: BTreeMap::from([("basic".to_owned(), free)]),
            })
            .expect("serialise")
        };
        let table = TierTable::from_toml(&file("basic")).expect("valid table");
        assert_eq!(table.default_name().as_str(), "basic");
        assert_eq!(table.limits("basic"), TierTable::default().limits("free"));
        assert!(TierTable::from_toml(&file("gold")).is_err());
        assert!(table.parse_name("free").is_err());
    }
}
