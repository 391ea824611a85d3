//! Telling the other nodes about a bump: Redis pub/sub, or PostgreSQL
//! LISTEN/NOTIFY when there is no Redis (or it is down). Every node listens
//! on both that it has; a listener that loses its connection resets the
//! cache when it is back, since it may have missed announcements.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{Cache, L2};

/// The PostgreSQL channel of cache announcements.
pub const PG_CHANNEL: &str = "tenantry_cache";

/// The Redis channel of cache announcements.
pub fn redis_channel(l2: &L2) -> String {
    format!("{}invalidate", l2.prefix)
}

/// One "cache LISTEN failed" warning per interval while the database is away.
static LISTEN_WARNING: tenantry_db::Throttle = tenantry_db::Throttle::new(Duration::from_secs(10));

/// How long a lost listener waits before reconnecting. Fixed, not growing:
/// the cache is stale for as long as the listener is away, so it comes back
/// as soon as the database does.
const RECONNECT: Duration = Duration::from_millis(500);

/// One bump: `tenant`'s `list` (empty: the whole tenant) moved to
/// `generation` (agreed through Redis), or to a new local one (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub node: Uuid,
    pub tenant: Uuid,
    pub list: String,
    pub generation: Option<u64>,
}

impl Message {
    pub fn encode(&self) -> String {
        let generation = self
            .generation
            .map_or_else(|| "-".to_owned(), |g| g.to_string());
        format!("{} {} {} {}", self.node, self.tenant, generation, self.list)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(4, ' ');
        let node = Uuid::parse_str(parts.next()?).ok()?;
        let tenant = Uuid::parse_str(parts.next()?).ok()?;
        let generation = match parts.next()? {
            "-" => None,
            g => Some(g.parse().ok()?),
        };
        let list = parts.next().unwrap_or_default().to_owned();
        Some(Self {
            node,
            tenant,
            list,
            generation,
        })
    }
}

/// Runs the listeners this cache has (PostgreSQL, Redis) until `stop`.
pub async fn run(cache: Arc<Cache>, stop: watch::Receiver<bool>) {
    let pg = {
        let cache = cache.clone();
        let stop = stop.clone();
        async move {
            if cache.db().is_some() {
                listen_pg(&cache, stop).await;
            }
        }
    };
    let redis = {
        let cache = cache.clone();
        async move {
            if cache.l2().is_some() {
                listen_redis(&cache, stop).await;
            }
        }
    };
    tokio::join!(pg, redis);
}

async fn listen_pg(cache: &Cache, mut stop: watch::Receiver<bool>) {
    let Some(db) = cache.db() else { return };
    let mut first = true;
    loop {
        match db.listen(PG_CHANNEL).await {
            Ok(mut rx) => {
                if !first {
                    cache.reset().await;
                }
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        payload = rx.recv() => match payload {
                            Some(p) => {
                                if let Some(m) = Message::decode(&p) {
                                    cache.apply(&m).await;
                                }
                            }
                            None => break,
                        },
                    }
                }
                tracing::warn!("cache LISTEN connection lost; reconnecting");
            }
            Err(e) => {
                // Every half second while the database is away: throttled.
                if let Some(held_back) = LISTEN_WARNING.admit() {
                    tracing::warn!(error = %e, held_back, "cache LISTEN failed; retrying");
                }
            }
        }
        first = false;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(RECONNECT) => {},
        }
    }
}

async fn listen_redis(cache: &Cache, mut stop: watch::Receiver<bool>) {
    let Some(l2) = cache.l2() else { return };
    let channel = redis_channel(l2);
    let mut first = true;
    loop {
        let subscribed = async {
            let mut pubsub = l2.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(pubsub)) => {
                if !first {
                    cache.reset().await;
                }
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                let payload: String = msg.get_payload().unwrap_or_default();
                                if let Some(m) = Message::decode(&payload) {
                                    cache.apply(&m).await;
                                }
                            }
                            None => break,
                        },
                    }
                }
                tracing::warn!("cache pub/sub connection lost; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cache SUBSCRIBE failed; retrying"),
            Err(_) => tracing::debug!("cache SUBSCRIBE timed out; retrying"),
        }
        first = false;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(RECONNECT) => {},
        }
    }
}
