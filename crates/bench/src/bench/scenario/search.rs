//! `search`: full-text search in a tenant (`GET /v1/search?q=`), with the
//! kinds of query users send, each reported as its own operation:
//!
//! - `search-common-word` (40%): one of the most frequent words of the
//!   seeded text (each in several percent of a community's posts — the
//!   costly kind to rank);
//! - `search-rare-word` (30%): a word from the long tail of the seeded
//!   vocabulary (ranks 1,000 to 5,000: a few dozen posts in a 100,000-post
//!   community);
//! - `search-two-words` (30%): a common word and a word drawn with the
//!   text's own frequencies (both must match).

use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, any_user, choose};
use crate::bench::workload::TenantTarget;
use crate::seed::text;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("search", pick)
}

/// The rarest words (by rank) a rare-word query picks from.
const RARE_RANKS: std::ops::Range<usize> = 1_000..text::VOCABULARY;

fn common_word(rng: &mut ChaCha8Rng) -> &'static str {
    choose(rng, text::common_words())
        .copied()
        .unwrap_or("trail")
}

pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let user = tenant.map_or(0, |t| any_user(rng, t));
    let kind = rng.random_range(0..10);
    let (op, q) = if kind < 4 {
        ("search-common-word", common_word(rng).to_owned())
    } else if kind < 7 {
        let rank = rng.random_range(RARE_RANKS);
        ("search-rare-word", text::word_of_rank(rank).to_owned())
    } else {
        let first = common_word(rng);
        let second = text::draw_word(rng);
        ("search-two-words", format!("{first}+{second}"))
    };
    Call {
        op,
        method: Method::GET,
        path: format!("/v1/search?q={q}&limit=20"),
        body: None,
        user,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn queries_mix_common_rare_and_two_word_searches_of_the_seeded_words() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut ops = std::collections::HashMap::new();
        for _ in 0..1_000 {
            let call = pick(&mut rng, None);
            let q = call
                .path
                .strip_prefix("/v1/search?q=")
                .and_then(|p| p.strip_suffix("&limit=20"))
                .expect("a search path");
            let words: Vec<&str> = q.split('+').collect();
            match call.op {
                "search-common-word" => {
                    assert!(text::common_words().contains(&q), "{q}");
                }
                "search-rare-word" => {
                    assert!(
                        RARE_RANKS.clone().any(|r| text::word_of_rank(r) == q),
                        "{q}"
                    );
                }
                "search-two-words" => assert_eq!(words.len(), 2, "{q}"),
                other => panic!("unexpected operation {other}"),
            }
            *ops.entry(call.op).or_insert(0) += 1;
        }
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(ops.values().all(|&n| n > 200), "{ops:?}");
    }
}
