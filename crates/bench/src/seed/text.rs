//! Cheap, plausible text: community names, people's names and post bodies.
//!
//! Post bodies draw their words from a vocabulary of [`VOCABULARY`] words
//! with Zipf-distributed frequencies, as natural text has: a few words are
//! in a large share of the posts (the hand-written [`WORDS`], the most
//! frequent ranks), most are rare (made-up words, from syllables). So search
//! meets both kinds: a common word matches a fifth of a community, a rare
//! one a few dozen posts.
//!
//! Text generation runs on the same two cores as PostgreSQL while seeding,
//! so it only picks from prepared lists (one binary search per word) and
//! appends to one buffer — no formatting machinery per word.

use std::sync::OnceLock;

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

/// How many words post bodies are written with.
pub const VOCABULARY: usize = 5_000;

/// The Zipf exponent of word frequencies: the word of rank `r` is drawn
/// with weight `1 / r^s` (natural language is close to 1).
const WORD_ZIPF: f64 = 1.0;

/// The hand-written words that English full-text search drops (stop words
/// of PostgreSQL's `english` configuration): a query of them finds nothing.
const STOP_WORDS: &[&str] = &[
    "the", "a", "we", "our", "this", "that", "to", "and", "with", "for", "at", "in", "on", "after",
    "before", "who", "is", "are", "was", "again",
];

/// The words by rank (most frequent first) and their cumulative weights.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

fn vocabulary() -> &'static Vocabulary {
    static VOCABULARY_CELL: OnceLock<Vocabulary> = OnceLock::new();
    VOCABULARY_CELL.get_or_init(|| {
        let mut words: Vec<String> = WORDS.iter().map(|w| (*w).to_owned()).collect();
        let mut n = 0;
        while words.len() < VOCABULARY {
            words.push(made_up_word(n));
            n += 1;
        }
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(WORD_ZIPF);
                total
            })
            .collect();
        Vocabulary { words, cumulative }
    })
}

/// The `n`th made-up word: three consonant-vowel syllables ("kazomi"), from
/// a permutation of `n` so that neighbouring ranks do not look alike.
/// Distinct for every `n` below 14^3 * 5^3 = 343,000.
fn made_up_word(n: usize) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    const SYLLABLES: usize = 14 * 5;
    const SPACE: usize = SYLLABLES * SYLLABLES * SYLLABLES;
    // 7,919 is prime and divides neither 2, 5 nor 7: a bijection of 0..SPACE.
    let mut code = (n * 7_919 + 12_345) % SPACE;
    let mut word = String::with_capacity(6);
    for _ in 0..3 {
        let syllable = code % SYLLABLES;
        code /= SYLLABLES;
        word.push(char::from(CONSONANTS[syllable / VOWELS.len()]));
        word.push(char::from(VOWELS[syllable % VOWELS.len()]));
    }
    word
}

/// A word drawn with the vocabulary's Zipf frequencies.
pub fn draw_word(rng: &mut ChaCha8Rng) -> &'static str {
    let vocabulary = vocabulary();
    let total = vocabulary.cumulative.last().copied().unwrap_or(0.0);
    let u = rng.random::<f64>() * total;
    let rank = vocabulary
        .cumulative
        .partition_point(|&c| c <= u)
        .min(vocabulary.words.len() - 1);
    &vocabulary.words[rank]
}

/// The most frequent words that search does not drop: each is in several
/// percent of a community's posts.
pub fn common_words() -> &'static [&'static str] {
    static COMMON: OnceLock<Vec<&'static str>> = OnceLock::new();
    COMMON.get_or_init(|| {
        WORDS
            .iter()
            .copied()
            .filter(|w| !STOP_WORDS.contains(w))
            .collect()
    })
}

/// The word of `rank` (0-based, most frequent first; below [`VOCABULARY`]).
pub fn word_of_rank(rank: usize) -> &'static str {
    &vocabulary().words[rank.min(VOCABULARY - 1)]
}

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
        out.push_str(draw_word(rng));
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
    fn the_vocabulary_has_distinct_words_with_zipf_frequencies() {
        let words: std::collections::HashSet<&str> = (0..VOCABULARY).map(word_of_rank).collect();
        assert_eq!(words.len(), VOCABULARY);
        // Ranks 1 and 10 under Zipf(1): about ten times as frequent.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..200_000 {
            *counts.entry(draw_word(&mut rng)).or_insert(0_u32) += 1;
        }
        let (first, tenth) = (counts[word_of_rank(0)], counts[word_of_rank(9)]);
        assert!((8..=12).contains(&(first / tenth)), "{first} / {tenth}");
        // Most of the vocabulary is rare, but it is used.
        let rare = (1_000..VOCABULARY)
            .filter(|&r| counts.contains_key(word_of_rank(r)))
            .count();
        assert!(rare > 2_000, "{rare}");
        assert!(common_words().iter().all(|w| !STOP_WORDS.contains(w)));
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
