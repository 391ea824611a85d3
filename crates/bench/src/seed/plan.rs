//! The global part of a seeded data set — users, tenants and memberships —
//! computed in memory before anything is written.
//!
//! Everything here is a pure function of [`SeedConfig`]: the same seed and
//! anchor give byte-identical rows, so a benchmark can be rerun on the same
//! data and a bug found on seeded data can be reproduced. Each kind of row
//! draws from its own ChaCha stream, so adding a draw to one kind never
//! shifts the others.

use std::collections::HashSet;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::text;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// What to generate. Sizes are totals, not per tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedConfig {
    pub tenants: usize,
    pub users: usize,
    /// Mean memberships per user (at least 1: every user belongs somewhere).
    pub memberships_per_user: f64,
    pub posts: u64,
    /// The Zipf exponent of tenant sizes: the tenant of rank `r` (1-based)
    /// gets a share proportional to `1 / r^s`. 0 makes all tenants equal;
    /// 1 (the default) gives the top 1% of 10,000 tenants about half the posts.
    pub zipf_exponent: f64,
    pub likes_per_post: f64,
    pub comments_per_post: f64,
    /// Posts are spread over this many days before the anchor.
    pub days: u32,
    pub seed: u64,
    /// "Now" of the data set, in Unix milliseconds. Part of the identity of
    /// a data set: the same seed and anchor give the same rows.
    pub anchor_ms: i64,
    /// The lowest-id user also joins this many of the largest tenants.
    pub hub_communities: usize,
}

impl SeedConfig {
    /// Rejects sizes that cannot make a coherent data set.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.tenants >= 1, "--tenants must be at least 1");
        anyhow::ensure!(
            self.tenants <= 10_000_000,
            "--tenants must be at most 10,000,000"
        );
        anyhow::ensure!(self.users >= 1, "--users must be at least 1");
        anyhow::ensure!(
            self.users <= u32::MAX as usize,
            "--users must fit in 32 bits"
        );
        anyhow::ensure!(
            self.memberships_per_user >= 1.0 && self.memberships_per_user.is_finite(),
            "--memberships-per-user must be at least 1"
        );
        anyhow::ensure!(
            self.zipf_exponent >= 0.0 && self.zipf_exponent.is_finite(),
            "--zipf must be a non-negative number"
        );
        anyhow::ensure!(
            self.likes_per_post >= 0.0 && self.likes_per_post.is_finite(),
            "--likes-per-post must be a non-negative number"
        );
        anyhow::ensure!(
            self.comments_per_post >= 0.0 && self.comments_per_post.is_finite(),
            "--comments-per-post must be a non-negative number"
        );
        anyhow::ensure!(self.days >= 1, "--days must be at least 1");
        Ok(())
    }

    /// The first millisecond posts may have (the anchor minus `days`).
    pub fn content_start_ms(&self) -> i64 {
        self.anchor_ms - i64::from(self.days) * DAY_MS
    }

    /// A generator for one purpose: each gets its own ChaCha stream.
    pub(crate) fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }
}

/// ChaCha streams of the global rows; tenant `i`'s content uses
/// `CONTENT_STREAM + i`.
const USERS_STREAM: u64 = 1;
const TENANTS_STREAM: u64 = 2;
const MEMBERSHIPS_STREAM: u64 = 3;
pub(crate) const CONTENT_STREAM: u64 = 1 << 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: Uuid,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Moderator,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// Index into [`Plan::users`].
    pub user: u32,
    pub role: Role,
    pub joined_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub tier: &'static str,
    /// Index into [`Plan::users`].
    pub owner: u32,
    pub created_ms: i64,
    /// 1-based size rank: rank 1 is the largest tenant.
    pub rank: usize,
    pub posts: u64,
    /// Sorted by user id, the memberships primary key order. The owner is
    /// one of them.
    pub members: Vec<MemberRow>,
}

/// The global rows of a data set, in primary key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Sorted by id.
    pub users: Vec<UserRow>,
    /// Sorted by id (tenant ids are time-ordered, so by creation too).
    pub tenants: Vec<TenantRow>,
}

impl Plan {
    pub fn memberships(&self) -> usize {
        self.tenants.iter().map(|t| t.members.len()).sum()
    }
}

/// A UUIDv7 for `ms`, its random bits drawn from `rng`: ids sort like their
/// timestamps, as ids made by the server do.
pub fn uuid_v7(rng: &mut ChaCha8Rng, ms: i64) -> Uuid {
    let mut bytes = [0u8; 10];
    rng.fill(&mut bytes);
    let ms = u64::try_from(ms).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
}

/// A uniform millisecond in `[from, to)` (or `from` if the range is empty).
pub fn between(rng: &mut ChaCha8Rng, from: i64, to: i64) -> i64 {
    if to <= from {
        from
    } else {
        rng.random_range(from..to)
    }
}

/// A count with mean `mean`, geometrically distributed (many small values,
/// a long tail), as likes and comments per post are in real communities.
pub fn geometric(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    // P(k) = (1-p)^k p has mean (1-p)/p.
    let p = 1.0 / (1.0 + mean);
    let u: f64 = rng.random::<f64>();
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let k = ((1.0 - u).ln() / (1.0 - p).ln()).floor();
    if k.is_finite() && k >= 0.0 {
        k.min(1e12) as u64
    } else {
        0
    }
}

/// Zipf weights `1 / rank^s` for ranks `1..=n`.
pub fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect()
}

/// Splits `total` into shares proportional to `weights`, exactly (largest
/// remainder), so `--posts` is the number of posts written.
pub fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut shares: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let assigned: u64 = shares.iter().sum();
    let mut left = total.saturating_sub(assigned);
    // Hand out what rounding down left over, largest fraction first (ties by
    // index, so the result is deterministic).
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// Samples indexes in proportion to weights (binary search over the
/// cumulative sums).
pub struct WeightedIndex {
    cumulative: Vec<f64>,
}

impl WeightedIndex {
    pub fn new(weights: &[f64]) -> Self {
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Self { cumulative }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.cumulative.len().saturating_sub(1))
    }
}

/// Computes the users, tenants and memberships of a data set.
pub fn plan(config: &SeedConfig) -> Plan {
    let users = plan_users(config);
    let mut tenants = plan_tenants(config, users.len());
    plan_memberships(config, &users, &mut tenants);
    plan_hub(config, &users, &mut tenants);
    Plan { users, tenants }
}

/// The hub: user 0 (the lowest id) joins the `hub_communities` largest
/// tenants it is not yet in, as a plain member. Draws nothing random, so
/// other rows are the same with or without it.
fn plan_hub(config: &SeedConfig, users: &[UserRow], tenants: &mut [TenantRow]) {
    if config.hub_communities == 0 || users.is_empty() {
        return;
    }
    let mut by_rank: Vec<usize> = (0..tenants.len()).collect();
    by_rank.sort_by_key(|&t| tenants[t].rank);
    for &t in by_rank.iter().take(config.hub_communities) {
        let tenant = &mut tenants[t];
        if tenant.members.iter().any(|m| m.user == 0) {
            continue;
        }
        tenant.members.push(MemberRow {
            user: 0,
            role: Role::Member,
            joined_ms: tenant.created_ms,
        });
        tenant.members.sort_by_key(|m| users[m.user as usize].id);
    }
}

fn plan_users(config: &SeedConfig) -> Vec<UserRow> {
    let mut rng = config.rng(USERS_STREAM);
    // Users signed up before any tenant they belong to was created.
    let from = config.anchor_ms - 500 * DAY_MS;
    let to = config.anchor_ms - 400 * DAY_MS;
    let mut users: Vec<UserRow> = (0..config.users)
        .map(|_| {
            let created_ms = between(&mut rng, from, to);
            UserRow {
                id: uuid_v7(&mut rng, created_ms),
                created_ms,
            }
        })
        .collect();
    users.sort_by_key(|u| u.id);
    users
}

fn plan_tenants(config: &SeedConfig, users: usize) -> Vec<TenantRow> {
    let mut rng = config.rng(TENANTS_STREAM);
    let n = config.tenants;
    let from = config.anchor_ms - 400 * DAY_MS;
    let to = config.content_start_ms() - DAY_MS;
    let mut tenants: Vec<TenantRow> = (0..n)
        .map(|_| {
            let created_ms = between(&mut rng, from, to.max(from + 1));
            TenantRow {
                id: uuid_v7(&mut rng, created_ms),
                slug: String::new(),
                name: String::new(),
                tier: "free",
                owner: rng.random_range(0..users as u32),
                created_ms,
                rank: 0,
                posts: 0,
                members: Vec::new(),
            }
        })
        .collect();
    tenants.sort_by_key(|t| t.id);

    // Size ranks are a random permutation, so a tenant's age says nothing
    // about its size.
    let mut ranks: Vec<usize> = (1..=n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        ranks.swap(i, j);
    }
    let by_rank = apportion(config.posts, &zipf_weights(n, config.zipf_exponent));
    let enterprise = n.div_ceil(100);
    let pro = enterprise + n.div_ceil(10);
    for (i, tenant) in tenants.iter_mut().enumerate() {
        let rank = ranks[i];
        tenant.rank = rank;
        tenant.posts = by_rank[rank - 1];
        tenant.tier = if rank <= enterprise {
            "enterprise"
        } else if rank <= pro {
            "pro"
        } else {
            "free"
        };
        let (slug, name) = text::community_name(&mut rng, i + 1);
        tenant.slug = slug;
        tenant.name = name;
    }
    tenants
}

fn plan_memberships(config: &SeedConfig, users: &[UserRow], tenants: &mut [TenantRow]) {
    let mut rng = config.rng(MEMBERSHIPS_STREAM);
    let mut taken: HashSet<(u32, u32)> = HashSet::new();
    for (t, tenant) in tenants.iter_mut().enumerate() {
        tenant.members.push(MemberRow {
            user: tenant.owner,
            role: Role::Owner,
            joined_ms: tenant.created_ms,
        });
        taken.insert((t as u32, tenant.owner));
    }

    // Communities that hold more posts also draw more members.
    let mut weight_of_tenant = vec![0.0; tenants.len()];
    let weights = zipf_weights(tenants.len(), config.zipf_exponent);
    for (t, tenant) in tenants.iter().enumerate() {
        weight_of_tenant[t] = weights[tenant.rank - 1];
    }
    let pick = WeightedIndex::new(&weight_of_tenant);
    let extra_mean = config.memberships_per_user - 1.0;
    let joined_until = config.content_start_ms();
    for user in 0..users.len() as u32 {
        let wanted = (1 + geometric(&mut rng, extra_mean)).min(tenants.len() as u64);
        let mut joined = 0;
        let mut attempts = 0;
        while joined < wanted && attempts < wanted * 20 {
            attempts += 1;
            let t = pick.sample(&mut rng);
            if !taken.insert((t as u32, user)) {
                continue;
            }
            let tenant = &mut tenants[t];
            let roll: f64 = rng.random();
            let role = if roll < 0.02 {
                Role::Admin
            } else if roll < 0.07 {
                Role::Moderator
            } else {
                Role::Member
            };
            let joined_ms = between(&mut rng, tenant.created_ms, joined_until);
            tenant.members.push(MemberRow {
                user,
                role,
                joined_ms,
            });
            joined += 1;
        }
    }
    for tenant in tenants.iter_mut() {
        tenant.members.sort_by_key(|m| users[m.user as usize].id);
    }
}

/// A small configuration with the CLI's proportions, for tests.
#[cfg(test)]
pub(crate) fn test_config(tenants: usize, posts: u64, seed: u64) -> SeedConfig {
    SeedConfig {
        tenants,
        users: tenants * 10,
        memberships_per_user: 3.0,
        posts,
        zipf_exponent: 1.0,
        likes_per_post: 2.0,
        comments_per_post: 0.5,
        days: 90,
        seed,
        anchor_ms: 1_767_225_600_000, // 2026-01-01
        hub_communities: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tenants: usize, posts: u64, seed: u64) -> SeedConfig {
        test_config(tenants, posts, seed)
    }

    #[test]
    fn apportion_hands_out_exactly_the_total() {
        let shares = apportion(1_000, &zipf_weights(7, 1.0));
        assert_eq!(shares.iter().sum::<u64>(), 1_000);
        assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0, 1.0]), vec![3, 3, 2, 2]);
        assert_eq!(apportion(5, &[]), Vec::<u64>::new());
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let a = plan(&config(300, 30_000, 7));
        let b = plan(&config(300, 30_000, 7));
        assert_eq!(a, b);
        let c = plan(&config(300, 30_000, 8));
        assert_ne!(a.tenants[0].id, c.tenants[0].id);
    }

    #[test]
    fn the_top_one_percent_of_tenants_hold_a_large_share_of_posts() {
        let cfg = config(2_000, 200_000, 42);
        let plan = plan(&cfg);
        let mut sizes: Vec<u64> = plan.tenants.iter().map(|t| t.posts).collect();
        assert_eq!(sizes.iter().sum::<u64>(), 200_000);
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = sizes[..20].iter().sum();
        let share = top as f64 / 200_000.0;
        // Zipf(1) over 2,000 ranks: H(20) / H(2000) ≈ 0.44.
        assert!(share > 0.40 && share < 0.48, "top 1% share {share}");
        // ... and most tenants are small: the median is far below the mean.
        let median = sizes[sizes.len() / 2];
        assert!(median * 3 < 100, "median {median} vs mean 100");
    }

    #[test]
    fn a_zero_exponent_makes_tenants_equal() {
        let mut cfg = config(100, 10_000, 1);
        cfg.zipf_exponent = 0.0;
        let plan = plan(&cfg);
        assert!(plan.tenants.iter().all(|t| t.posts == 100));
    }

    #[test]
    fn every_tenant_has_one_owner_and_unique_members() {
        let cfg = config(500, 10_000, 3);
        let plan = plan(&cfg);
        let mut pairs = HashSet::new();
        for tenant in &plan.tenants {
            let owners: Vec<_> = tenant
                .members
                .iter()
                .filter(|m| m.role == Role::Owner)
                .collect();
            assert_eq!(owners.len(), 1, "{}", tenant.slug);
            assert_eq!(owners[0].user, tenant.owner);
            for m in &tenant.members {
                assert!(pairs.insert((tenant.id, m.user)), "duplicate membership");
                assert!(plan.users[m.user as usize].created_ms <= m.joined_ms);
                assert!(m.joined_ms >= tenant.created_ms);
            }
            assert!(
                tenant
                    .members
                    .windows(2)
                    .all(|w| plan.users[w[0].user as usize].id < plan.users[w[1].user as usize].id)
            );
        }
        // Each user joins at least once (owners aside, on average ~3 times).
        let mean = plan.memberships() as f64 / cfg.users as f64;
        assert!(mean > 2.5 && mean < 3.6, "mean memberships {mean}");
    }

    #[test]
    fn ids_sort_like_their_timestamps_and_slugs_are_valid() {
        let plan = plan(&config(200, 1_000, 5));
        assert!(plan.tenants.windows(2).all(|w| w[0].id < w[1].id));
        assert!(
            plan.tenants
                .windows(2)
                .all(|w| w[0].created_ms <= w[1].created_ms)
        );
        let slugs: HashSet<_> = plan.tenants.iter().map(|t| t.slug.clone()).collect();
        assert_eq!(slugs.len(), plan.tenants.len());
        for t in &plan.tenants {
            tenantry_core::TenantSlug::parse(&t.slug).unwrap_or_else(|e| panic!("{}: {e}", t.slug));
            let ms = t.id.get_timestamp().expect("v7").to_unix();
            assert_eq!(
                ms.0 as i64 * 1_000 + i64::from(ms.1 / 1_000_000),
                t.created_ms
            );
        }
    }

    #[test]
    fn tiers_follow_size() {
        let plan = plan(&config(1_000, 100_000, 9));
        let biggest = plan
            .tenants
            .iter()
            .max_by_key(|t| t.posts)
            .expect("tenants");
        assert_eq!(biggest.tier, "enterprise");
        assert_eq!(
            plan.tenants
                .iter()
                .filter(|t| t.tier == "enterprise")
                .count(),
            10
        );
    }

    #[test]
    fn geometric_has_the_requested_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 200_000;
        let sum: u64 = (0..n).map(|_| geometric(&mut rng, 2.0)).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean - 2.0).abs() < 0.05, "mean {mean}");
        assert_eq!(geometric(&mut rng, 0.0), 0);
    }
}
