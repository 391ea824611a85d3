//! Feature flags: which of the platform's features a tenant may use.
//!
//! A tier says, per [`Feature`], on, off, or on for a percentage of tenants
//! (`{"rollout": 0–100}`); a tenant's own `features` lay the same values on
//! top. [`FeatureFlags::resolve`] turns both into plain on/off for one
//! tenant, once, when its limits are computed (and memoized with them), so a
//! request checks a flag with an array index, never a database statement.
//!
//! A rollout is deterministic per tenant and per feature: the tenant is in
//! when the stable hash of `(feature, tenant id)` falls in the first
//! `percent` of 100 buckets, so raising a rollout only ever adds tenants and
//! two nodes always agree.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

/// A feature a tenant can have switched off; its endpoints then answer 403
/// `feature_disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Journeys,
    Search,
    Analytics,
    Shares,
    Announcements,
    Feed,
    Events,
}

impl Feature {
    /// Every feature, in the order [`FeatureFlags`] keeps them.
    pub const ALL: [Feature; 7] = [
        Feature::Journeys,
        Feature::Search,
        Feature::Analytics,
        Feature::Shares,
        Feature::Announcements,
        Feature::Feed,
        Feature::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Journeys => "journeys",
            Feature::Search => "search",
            Feature::Analytics => "analytics",
            Feature::Shares => "shares",
            Feature::Announcements => "announcements",
            Feature::Feed => "feed",
            Feature::Events => "events",
        }
    }

    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One feature's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    On,
    Off,
    /// On for this percentage (0–100) of tenants.
    Rollout(u8),
}

impl Flag {
    /// Reads `true`, `false` or `{"rollout": 0–100}`.
    pub fn from_json(value: &Value) -> Result<Flag, String> {
        match value {
            Value::Bool(true) => Ok(Flag::On),
            Value::Bool(false) => Ok(Flag::Off),
            Value::Object(map) if map.len() == 1 => {
                let percent = map
                    .get("rollout")
                    .and_then(Value::as_u64)
                    .filter(|p| *p <= 100)
                    .ok_or_else(flag_shape)?;
                Ok(Flag::Rollout(percent as u8))
            }
            _ => Err(flag_shape()),
        }
    }

    fn to_json(self) -> Value {
        match self {
            Flag::On => Value::Bool(true),
            Flag::Off => Value::Bool(false),
            Flag::Rollout(p) => serde_json::json!({ "rollout": p }),
        }
    }

    /// Whether this flag is on for `tenant`'s `feature`.
    pub fn is_on(self, feature: &str, tenant: Uuid) -> bool {
        match self {
            Flag::On => true,
            Flag::Off => false,
            Flag::Rollout(percent) => bucket(feature, tenant) < u64::from(percent),
        }
    }
}

fn flag_shape() -> String {
    "must be true, false or {\"rollout\": 0-100}".to_owned()
}

/// The bucket (0–99) of a tenant in a feature's rollout: FNV-1a over the
/// feature's name and the tenant id, stable across builds and nodes.
fn bucket(feature: &str, tenant: Uuid) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in feature
        .bytes()
        .chain([0])
        .chain(tenant.as_bytes().iter().copied())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % 100
}

/// A flag per [`Feature`]: a tier's (which may hold rollouts), or a tenant's
/// resolved ones (only on and off). Every feature is on unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureFlags([Flag; Feature::ALL.len()]);

impl Default for FeatureFlags {
    fn default() -> Self {
        FeatureFlags([Flag::On; Feature::ALL.len()])
    }
}

impl FeatureFlags {
    /// Every feature off.
    pub fn none() -> Self {
        FeatureFlags([Flag::Off; Feature::ALL.len()])
    }

    pub fn get(&self, feature: Feature) -> Flag {
        self.0[feature as usize]
    }

    pub fn set(&mut self, feature: Feature, flag: Flag) {
        self.0[feature as usize] = flag;
    }

    /// Whether `feature` is on. Meant for resolved flags (see
    /// [`FeatureFlags::resolve`]); an unresolved rollout counts as off.
    pub fn enabled(&self, feature: Feature) -> bool {
        self.get(feature) == Flag::On
    }

    /// These (a tier's) flags with a tenant's overrides on top, each rollout
    /// decided for `tenant`: every flag comes out on or off. Overrides that
    /// do not parse are ignored (writes are checked by
    /// [`validate_overrides`]); names that are not features are the
    /// application's own flags and do not concern this table.
    pub fn resolve(&self, tenant: Uuid, overrides: &Value) -> FeatureFlags {
        let mut resolved = *self;
        for feature in Feature::ALL {
            let flag = overrides
                .get(feature.as_str())
                .and_then(|v| Flag::from_json(v).ok())
                .unwrap_or(self.get(feature));
            let on = flag.is_on(feature.as_str(), tenant);
            resolved.set(feature, if on { Flag::On } else { Flag::Off });
        }
        resolved
    }
}

/// Checks a tenant's `features` as written by an admin: each value of a
/// known feature must be `true`, `false`, `{"rollout": 0–100}` or `null`
/// (which removes the override). Other names are the application's own
/// flags: a boolean or a rollout is resolved like a feature's in
/// `GET /v1/tenant`, anything else is kept as it is. Returns the failing
/// name and why.
pub fn validate_overrides(features: &Value) -> Result<(), (String, String)> {
    let Some(map) = features.as_object() else {
        return Ok(());
    };
    for (name, value) in map {
        if Feature::parse(name).is_some() && !value.is_null() {
            Flag::from_json(value).map_err(|why| (name.clone(), why))?;
        }
    }
    Ok(())
}

/// The effective `features` of a tenant as `GET /v1/tenant` shows them: every
/// feature as `true`/`false` from `resolved`, and the tenant's own other
/// flags with rollouts decided for it.
pub fn effective(resolved: &FeatureFlags, tenant: Uuid, overrides: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(map) = overrides.as_object() {
        for (name, value) in map {
            if Feature::parse(name).is_none() {
                let value = match Flag::from_json(value) {
                    Ok(flag) => Value::Bool(flag.is_on(name, tenant)),
                    Err(_) => value.clone(),
                };
                out.insert(name.clone(), value);
            }
        }
    }
    for feature in Feature::ALL {
        out.insert(
            feature.as_str().to_owned(),
            Value::Bool(resolved.enabled(feature)),
        );
    }
    Value::Object(out)
}

/// In a tiers file: `[tiers.<t>.features]` with `name = true|false` or
/// `name = { rollout = 25 }`; unknown names are refused.
impl<'de> Deserialize<'de> for FeatureFlags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagsVisitor;
        impl<'de> Visitor<'de> for FlagsVisitor {
            type Value = FeatureFlags;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of feature names to true, false or { rollout = 0-100 }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeatureFlags, A::Error> {
                let mut flags = FeatureFlags::default();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    let feature = Feature::parse(&name).ok_or_else(|| {
                        let known: Vec<&str> = Feature::ALL.iter().map(|f| f.as_str()).collect();
                        de::Error::custom(format!(
                            "unknown feature '{name}' (one of {})",
                            known.join(", ")
                        ))
                    })?;
                    let flag = Flag::from_json(&value)
                        .map_err(|why| de::Error::custom(format!("feature {name}: {why}")))?;
                    flags.set(feature, flag);
                }
                Ok(flags)
            }
        }
        deserializer.deserialize_map(FlagsVisitor)
    }
}

impl Serialize for FeatureFlags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Feature::ALL.len()))?;
        for feature in Feature::ALL {
            map.serialize_entry(feature.as_str(), &self.get(feature).to_json())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn everything_is_on_unless_said_otherwise() {
        let flags = FeatureFlags::default().resolve(Uuid::now_v7(), &json!({}));
        assert!(Feature::ALL.iter().all(|f| flags.enabled(*f)));
    }

    #[test]
    fn a_tenant_override_wins_over_the_tier() {
        let mut tier = FeatureFlags::default();
        tier.set(Feature::Search, Flag::Off);
        let tenant = Uuid::now_v7();
        let flags = tier.resolve(tenant, &json!({"search": true, "journeys": false}));
        assert!(flags.enabled(Feature::Search));
        assert!(!flags.enabled(Feature::Journeys));
        assert!(flags.enabled(Feature::Events));
    }

    #[test]
    fn rollouts_are_deterministic_monotonic_and_near_their_percentage() {
        let tenants: Vec<Uuid> = (0..4_000).map(|_| Uuid::new_v4()).collect();
        let on = |percent: u8| -> Vec<bool> {
            tenants
                .iter()
                .map(|t| Flag::Rollout(percent).is_on("search", *t))
                .collect()
        };
        let (at25, at50) = (on(25), on(50));
        assert_eq!(at25, on(25), "the same answer every time");
        assert!(
            at25.iter().zip(&at50).all(|(a, b)| !a || *b),
            "raising a rollout only adds tenants"
        );
        let share = at50.iter().filter(|x| **x).count() as f64 / tenants.len() as f64;
        assert!((0.45..0.55).contains(&share), "50 % rollout gave {share}");
        assert!(on(0).iter().all(|x| !x));
        assert!(on(100).iter().all(|x| *x));
    }

    #[test]
    fn overrides_are_checked_only_for_known_features() {
        assert!(validate_overrides(&json!({"search": {"rollout": 30}, "beta": [1]})).is_ok());
        assert!(validate_overrides(&json!({"search": null})).is_ok());
        let refused = validate_overrides(&json!({"feed": {"rollout": 101}}));
        assert!(matches!(refused, Err((name, _)) if name == "feed"));
        assert!(validate_overrides(&json!({"feed": "yes"})).is_err());
    }

    #[test]
    fn tiers_file_flags_parse_and_refuse_unknown_names() {
        #[derive(Deserialize)]
        struct T {
            features: FeatureFlags,
        }
        let t: T = toml::from_str("[features]\nsearch = false\njourneys = { rollout = 10 }\n")
            .expect("valid");
        assert_eq!(t.features.get(Feature::Search), Flag::Off);
        assert_eq!(t.features.get(Feature::Journeys), Flag::Rollout(10));
        assert_eq!(t.features.get(Feature::Feed), Flag::On);
        assert!(toml::from_str::<T>("[features]\nserach = false\n").is_err());
    }

    #[test]
    fn effective_shows_every_feature_and_decides_custom_rollouts() {
        let tenant = Uuid::now_v7();
        let overrides = json!({"beta": {"rollout": 100}, "odd": [1], "search": false});
        let resolved = FeatureFlags::default().resolve(tenant, &overrides);
        let shown = effective(&resolved, tenant, &overrides);
        assert_eq!(shown["search"], json!(false));
        assert_eq!(shown["feed"], json!(true));
        assert_eq!(shown["beta"], json!(true));
        assert_eq!(shown["odd"], json!([1]));
    }
}
