//! Per-tenant content — posts with their likes and comments — and the COPY
//! encoding of every seeded table.
//!
//! Tenant `i`'s content draws from its own ChaCha stream, so it does not
//! depend on the order tenants are generated in, and counters are derived
//! from the rows themselves (`like_count` is the number of like rows), so the
//! data set is consistent by construction.
//!
//! Extension point: when a migration adds another tenant table (`events`,
//! `journeys`, `analytics_events`, ...), give it a row type and a generator
//! here (drawing after the existing draws, or from a stream of its own), an
//! encoder below, and a [`super::load::TableSpec`] in `load.rs`. Nothing is
//! generated for tables that do not exist yet.

use std::collections::HashSet;

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::binary::CopyEncoder;
use super::plan::{
    CONTENT_STREAM, DAY_MS, Plan, SeedConfig, TenantRow, between, geometric, uuid_v7,
};
use super::text;

#[derive(Debug, Clone, PartialEq)]
pub struct PostRow {
    pub id: Uuid,
    /// Index into [`Plan::users`].
    pub author: u32,
    pub created_ms: i64,
    pub content: String,
    pub like_count: i32,
    pub comment_count: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LikeRow {
    pub post: Uuid,
    pub user: u32,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommentRow {
    pub id: Uuid,
    pub post: Uuid,
    pub author: u32,
    pub created_ms: i64,
    pub content: String,
}

/// One tenant's content, each list in its table's primary key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantContent {
    pub posts: Vec<PostRow>,
    pub likes: Vec<LikeRow>,
    pub comments: Vec<CommentRow>,
}

impl TenantContent {
    /// What the quotas count as the tenant's storage (`tenants.storage_bytes`):
    /// the bytes of its posts' content.
    pub fn storage_bytes(&self) -> i64 {
        self.posts.iter().map(|p| p.content.len() as i64).sum()
    }
}

/// Likes and comments arrive within a week of their post.
const REACTION_WINDOW_MS: i64 = 7 * DAY_MS;

/// Generates tenant `index`'s posts, likes and comments.
pub fn tenant_content(config: &SeedConfig, plan: &Plan, index: usize) -> TenantContent {
    let tenant = &plan.tenants[index];
    let mut rng = config.rng(CONTENT_STREAM + index as u64);
    let members = &tenant.members;
    let mut out = TenantContent::default();
    if members.is_empty() || tenant.posts == 0 {
        return out;
    }
    let start = config.content_start_ms().max(tenant.created_ms);
    let end = config.anchor_ms;

    let mut times: Vec<i64> = (0..tenant.posts)
        .map(|_| between(&mut rng, start, end))
        .collect();
    times.sort_unstable();
    out.posts.reserve(times.len());
    for created_ms in times {
        let id = uuid_v7(&mut rng, created_ms);
        let author = members[rng.random_range(0..members.len())].user;
        let mut content = String::with_capacity(160);
        text::sentence_into(&mut rng, &mut content, 30, 280);

        let likes = geometric(&mut rng, config.likes_per_post).min(members.len() as u64) as usize;
        let reactions_end = (created_ms + REACTION_WINDOW_MS).min(end);
        let first_like = out.likes.len();
        for m in distinct(&mut rng, members.len(), likes) {
            out.likes.push(LikeRow {
                post: id,
                user: members[m].user,
                created_ms: between(&mut rng, created_ms, reactions_end),
            });
        }
        // Primary key order within the post: by user id.
        out.likes[first_like..].sort_unstable_by_key(|l| plan.users[l.user as usize].id);

        let comments = geometric(&mut rng, config.comments_per_post);
        for _ in 0..comments {
            let at = between(&mut rng, created_ms, reactions_end);
            let mut body = String::with_capacity(80);
            text::sentence_into(&mut rng, &mut body, 10, 150);
            out.comments.push(CommentRow {
                id: uuid_v7(&mut rng, at),
                post: id,
                author: members[rng.random_range(0..members.len())].user,
                created_ms: at,
                content: body,
            });
        }
        out.posts.push(PostRow {
            id,
            author,
            created_ms,
            content,
            like_count: i32::try_from(likes).unwrap_or(i32::MAX),
            comment_count: i32::try_from(comments).unwrap_or(i32::MAX),
        });
    }
    out.comments.sort_unstable_by_key(|c| c.id);
    out
}

/// `k` distinct indexes below `n` (Floyd's algorithm: `k` draws, no
/// rejection loop, whatever `k / n` is).
fn distinct(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    let mut chosen = Vec::with_capacity(k);
    let mut seen = HashSet::with_capacity(k);
    for j in n - k..n {
        let t = rng.random_range(0..=j);
        let pick = if seen.contains(&t) { j } else { t };
        seen.insert(pick);
        chosen.push(pick);
    }
    chosen
}

// ---------------------------------------------------------------------------
// COPY encoders: one per table, columns in the order of the COPY statements
// in `load.rs`.
// ---------------------------------------------------------------------------

pub const USERS_COLUMNS: &str = "id, email, display_name, created_at";
/// `post_count` (V2, quotas) is known from the plan; `storage_bytes` only
/// once the content exists, so the loader sets it after the posts.
pub const TENANTS_COLUMNS: &str =
    "id, slug, name, tier, owner_user_id, member_count, post_count, created_at, updated_at";
pub const MEMBERSHIPS_COLUMNS: &str = "tenant_id, user_id, role, created_at";
pub const POSTS_COLUMNS: &str =
    "tenant_id, id, author_id, content, like_count, comment_count, created_at, updated_at";
pub const LIKES_COLUMNS: &str = "tenant_id, post_id, user_id, created_at";
pub const COMMENTS_COLUMNS: &str = "tenant_id, id, post_id, author_id, content, created_at";

pub fn encode_users(enc: &mut CopyEncoder, plan: &Plan) {
    let mut email = String::new();
    for (i, user) in plan.users.iter().enumerate() {
        enc.row(4);
        enc.uuid(&user.id);
        email.clear();
        email.push_str("user");
        email.push_str(&i.to_string());
        email.push_str("@seed.tenantry.test");
        enc.text(&email);
        enc.text(&text::person_name(i));
        enc.timestamp_ms(user.created_ms);
    }
}

pub fn encode_tenants(enc: &mut CopyEncoder, plan: &Plan) {
    for tenant in &plan.tenants {
        enc.row(9);
        enc.uuid(&tenant.id);
        enc.text(&tenant.slug);
        enc.text(&tenant.name);
        enc.text(tenant.tier);
        enc.uuid(&plan.users[tenant.owner as usize].id);
        enc.int8(tenant.members.len() as i64);
        enc.int8(i64::try_from(tenant.posts).unwrap_or(i64::MAX));
        enc.timestamp_ms(tenant.created_ms);
        enc.timestamp_ms(tenant.created_ms);
    }
}

pub fn encode_memberships(enc: &mut CopyEncoder, plan: &Plan, tenant: &TenantRow) {
    for m in &tenant.members {
        enc.row(4);
        enc.uuid(&tenant.id);
        enc.uuid(&plan.users[m.user as usize].id);
        enc.text(m.role.as_str());
        enc.timestamp_ms(m.joined_ms);
    }
}

pub fn encode_posts(enc: &mut CopyEncoder, plan: &Plan, tenant: &TenantRow, posts: &[PostRow]) {
    for p in posts {
        enc.row(8);
        enc.uuid(&tenant.id);
        enc.uuid(&p.id);
        enc.uuid(&plan.users[p.author as usize].id);
        enc.text(&p.content);
        enc.int4(p.like_count);
        enc.int4(p.comment_count);
        enc.timestamp_ms(p.created_ms);
        enc.timestamp_ms(p.created_ms);
    }
}

pub fn encode_likes(enc: &mut CopyEncoder, plan: &Plan, tenant: &TenantRow, likes: &[LikeRow]) {
    for l in likes {
        enc.row(4);
        enc.uuid(&tenant.id);
        enc.uuid(&l.post);
        enc.uuid(&plan.users[l.user as usize].id);
        enc.timestamp_ms(l.created_ms);
    }
}

pub fn encode_comments(
    enc: &mut CopyEncoder,
    plan: &Plan,
    tenant: &TenantRow,
    comments: &[CommentRow],
) {
    for c in comments {
        enc.row(6);
        enc.uuid(&tenant.id);
        enc.uuid(&c.id);
        enc.uuid(&c.post);
        enc.uuid(&plan.users[c.author as usize].id);
        enc.text(&c.content);
        enc.timestamp_ms(c.created_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{plan, test_config};
    use super::*;

    #[test]
    fn content_is_deterministic_per_tenant() {
        let cfg = test_config(50, 5_000, 11);
        let p = plan(&cfg);
        for i in [0, 7, 49] {
            assert_eq!(tenant_content(&cfg, &p, i), tenant_content(&cfg, &p, i));
        }
        let other = test_config(50, 5_000, 12);
        let q = plan(&other);
        let a = tenant_content(&cfg, &p, 3);
        let b = tenant_content(&other, &q, 3);
        assert_ne!(a.posts.first().map(|p| p.id), b.posts.first().map(|p| p.id));
    }

    #[test]
    fn counters_match_the_rows_and_rows_are_in_key_order() {
        let cfg = test_config(40, 4_000, 5);
        let p = plan(&cfg);
        let mut posts = 0;
        for (i, tenant) in p.tenants.iter().enumerate() {
            let c = tenant_content(&cfg, &p, i);
            assert_eq!(c.posts.len() as u64, tenant.posts);
            posts += c.posts.len();
            assert!(c.posts.windows(2).all(|w| w[0].id < w[1].id));
            assert!(
                c.posts
                    .windows(2)
                    .all(|w| w[0].created_ms <= w[1].created_ms)
            );
            assert!(c.comments.windows(2).all(|w| w[0].id < w[1].id));
            let members: HashSet<u32> = tenant.members.iter().map(|m| m.user).collect();
            let mut like_keys = HashSet::new();
            for post in &c.posts {
                assert!(members.contains(&post.author));
                assert!(post.created_ms >= cfg.content_start_ms());
                assert!(post.created_ms < cfg.anchor_ms);
                let likes: Vec<_> = c.likes.iter().filter(|l| l.post == post.id).collect();
                assert_eq!(likes.len() as i32, post.like_count);
                let comments = c.comments.iter().filter(|x| x.post == post.id).count();
                assert_eq!(comments as i32, post.comment_count);
            }
            for like in &c.likes {
                assert!(members.contains(&like.user));
                assert!(like_keys.insert((like.post, like.user)), "duplicate like");
            }
            assert!(
                c.likes
                    .windows(2)
                    .all(|w| (w[0].post, p.users[w[0].user as usize].id)
                        < (w[1].post, p.users[w[1].user as usize].id))
            );
        }
        assert_eq!(posts, 4_000);
    }

    #[test]
    fn distinct_picks_distinct_indexes() {
        let mut rng = cfg_rng();
        for (n, k) in [(10, 10), (10, 3), (1_000, 999), (5, 0), (3, 7)] {
            let picks = distinct(&mut rng, n, k);
            assert_eq!(picks.len(), k.min(n));
            let set: HashSet<_> = picks.iter().collect();
            assert_eq!(set.len(), picks.len());
            assert!(picks.iter().all(|&i| i < n));
        }
    }

    fn cfg_rng() -> ChaCha8Rng {
        test_config(1, 1, 1).rng(99)
    }
}
