//! Cheap, plausible text: community names, people's names and post bodies
//! made of words drawn from small lists.
//!
//! Text generation runs on the same two cores as PostgreSQL while seeding,
//! so it only picks from static lists and appends to one buffer — no
//! formatting machinery per word.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

const ADJECTIVES: &[&str] = &[
    "alpine", "amber", "ancient", "arctic", "autumn", "bold", "bright", "calm", "coastal",
    "cosmic", "crimson", "curious", "daring", "desert", "early", "eastern", "electric", "emerald",
    "evening", "fearless", "forest", "friendly", "gentle", "golden", "grand", "green", "hidden",
    "highland", "hungry", "indie", "island", "jolly", "lively", "lucky", "lunar", "mellow",
    "midnight", "misty", "modern", "morning", "northern", "ocean", "open", "quiet", "rapid",
    "rocky", "rustic", "silver", "solar", "southern", "steady", "sunny", "swift", "urban",
    "valley", "vintage", "wild", "windy", "winter", "young",
];

const NOUNS: &[&str] = &[
    "anglers",
    "architects",
    "artists",
    "bakers",
    "beekeepers",
    "birders",
    "bookworms",
    "builders",
    "campers",
    "chess-club",
    "chefs",
    "climbers",
    "coders",
    "collective",
    "cyclists",
    "dancers",
    "designers",
    "divers",
    "drummers",
    "explorers",
    "farmers",
    "foodies",
    "gamers",
    "gardeners",
    "guild",
    "hikers",
    "historians",
    "knitters",
    "makers",
    "mentors",
    "musicians",
    "navigators",
    "painters",
    "parents",
    "photographers",
    "pilots",
    "poets",
    "potters",
    "readers",
    "riders",
    "rowers",
    "runners",
    "sailors",
    "singers",
    "skaters",
    "skiers",
    "society",
    "stargazers",
    "surfers",
    "swimmers",
    "tinkerers",
    "travellers",
    "volunteers",
    "walkers",
    "weavers",
    "writers",
    "yogis",
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Amara", "Ben", "Carla", "Chen", "Dara", "Diego", "Elif", "Emil", "Fatima",
    "Finn", "Grace", "Hana", "Ivan", "Jonas", "Kai", "Lea", "Leila", "Marco", "Maya", "Nina",
    "Noah", "Omar", "Priya", "Rosa", "Sami", "Sofia", "Tariq", "Uma", "Vera", "Yuki", "Zoe",
];

const LAST_NAMES: &[&str] = &[
    "Abara", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
    "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Patel", "Quinn", "Rossi", "Schmidt",
    "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zhang",
];

const WORDS: &[&str] = &[
    "the",
    "a",
    "we",
    "our",
    "this",
    "that",
    "today",
    "tomorrow",
    "weekend",
    "meetup",
    "session",
    "route",
    "plan",
    "idea",
    "question",
    "photo",
    "update",
    "thanks",
    "everyone",
    "great",
    "new",
    "first",
    "last",
    "next",
    "time",
    "place",
    "park",
    "trail",
    "studio",
    "workshop",
    "event",
    "group",
    "team",
    "season",
    "morning",
    "evening",
    "again",
    "really",
    "loved",
    "shared",
    "joined",
    "finished",
    "started",
    "looking",
    "forward",
    "to",
    "and",
    "with",
    "for",
    "at",
    "in",
    "on",
    "after",
    "before",
    "who",
    "is",
    "are",
    "was",
    "coming",
    "bring",
    "snacks",
    "gear",
    "notes",
    "map",
    "weather",
    "looks",
    "good",
    "rain",
    "sun",
    "early",
    "late",
    "beginners",
    "welcome",
    "advanced",
    "practice",
    "progress",
    "goal",
    "small",
    "big",
    "fun",
    "tips",
    "advice",
    "recommend",
    "favourite",
    "spot",
    "near",
    "city",
    "river",
    "lake",
    "hill",
    "coffee",
    "lunch",
    "dinner",
    "after-party",
    "vote",
];

/// A tenant's slug and display name, unique by `index`: "alpine-hikers-17"
/// and "Alpine Hikers 17".
pub fn community_name(rng: &mut ChaCha8Rng, index: usize) -> (String, String) {
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    let slug = format!("{adjective}-{noun}-{index}");
    let name = format!(
        "{} {} {index}",
        capitalize(adjective),
        capitalize(&noun.replace('-', " "))
    );
    (slug, name)
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// A person's display name, derived from the user's index (no draw).
pub fn person_name(index: usize) -> String {
    let first = FIRST_NAMES[index % FIRST_NAMES.len()];
    let last = LAST_NAMES[(index / FIRST_NAMES.len()) % LAST_NAMES.len()];
    format!("{first} {last}")
}

/// Appends a sentence-like text of `min_len..max_len` bytes to `out`.
pub fn sentence_into(rng: &mut ChaCha8Rng, out: &mut String, min_len: usize, max_len: usize) {
    let target = rng.random_range(min_len..max_len.max(min_len + 1));
    let start = out.len();
    while out.len() - start < target {
        if out.len() > start {
            out.push(' ');
        }
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    // Capitalise the first letter and end the sentence.
    if let Some(first) = out[start..].chars().next() {
        let upper = first.to_ascii_uppercase();
        out.replace_range(
            start..start + first.len_utf8(),
            upper.encode_utf8(&mut [0; 4]),
        );
    }
    out.push('.');
}

/// The words seeded posts are written with: what the search benchmark
/// looks for (stop words like "the" find nothing, as in real searches).
pub fn words() -> &'static [&'static str] {
    WORDS
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn community_slugs_are_valid_slugs() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for i in 1..2_000 {
            let (slug, name) = community_name(&mut rng, i);
            assert!(tenantry_core::TenantSlug::parse(&slug).is_ok(), "{slug}");
            assert!(name.ends_with(&i.to_string()));
        }
    }

    #[test]
    fn sentences_have_the_requested_length() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            let mut s = String::new();
            sentence_into(&mut rng, &mut s, 40, 200);
            assert!(s.len() >= 41 && s.len() < 220, "{s}");
            assert!(s.starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(s.ends_with('.'));
        }
    }
}
