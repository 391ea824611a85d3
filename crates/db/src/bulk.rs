//! Statements that carry many tenants' rows at once (the flushes of counts
//! and measurements every few seconds or minutes), written a chunk at a
//! time.
//!
//! Why chunks: a connection keeps its request and write buffers at the size
//! of the largest message it ever sent (tokio-postgres never shrinks them).
//! One statement carrying every active tenant (about 24 MB for 20,000
//! tenants' performance rows) left that much on the connection for good,
//! after those tenants had gone idle (heaptrack, BENCHMARKS.md "Session 10").
//! Short statements also keep row locks and the statement timeout small.

use std::future::Future;

use crate::DbError;

/// Runs `write` on `items`, `per_statement` at a time, in order. Every chunk
/// is tried even after one fails; returns each chunk's result, or the first
/// failure.
pub async fn in_chunks<'a, T, R, F, Fut>(
    items: &'a [T],
    per_statement: usize,
    mut write: F,
) -> Result<Vec<R>, DbError>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: Future<Output = Result<R, DbError>>,
{
    let mut done = Vec::with_capacity(items.len().div_ceil(per_statement.max(1)));
    let mut failed = None;
    for chunk in items.chunks(per_statement.max(1)) {
        match write(chunk).await {
            Ok(r) => done.push(r),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(done), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_chunk_is_tried_and_the_first_failure_is_returned() {
        let items: Vec<u32> = (0..10).collect();
        let mut seen = Vec::new();
        let sums = in_chunks(&items, 4, |c| {
            seen.push(c.len());
            std::future::ready(Ok(c.iter().sum::<u32>()))
        })
        .await
        .expect("no failure");
        assert_eq!((seen, sums), (vec![4, 4, 2], vec![6, 22, 17]));

        let mut tried = 0;
        let failed = in_chunks(&items, 3, |c| {
            tried += 1;
            std::future::ready(match c[0] {
                3 => Err(DbError::Busy("first".to_owned())),
                6 => Err(DbError::Busy("second".to_owned())),
                _ => Ok(()),
            })
        })
        .await;
        assert_eq!(tried, 4, "the chunks after a failure are still written");
        assert!(matches!(failed, Err(DbError::Busy(m)) if m == "first"));
        let none: &[u32] = &[];
        let written = in_chunks(none, 3, |_| std::future::ready(Ok(()))).await;
        assert_eq!(written.expect("nothing to fail").len(), 0);
    }
}
