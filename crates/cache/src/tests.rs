use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use super::*;

type R<T> = Result<T, String>;

async fn load_counted(
    cache: &Cache,
    loads: &AtomicU32,
    tenant: Uuid,
    ns: &'static str,
    key: &str,
    value: &str,
) -> String {
    let v = value.to_owned();
    let got = cache
        .get_or_load(tenant, ns, key, Duration::from_secs(30), || async {
            loads.fetch_add(1, SeqCst);
            R::Ok(v)
        })
        .await
        .expect("loads");
    (*got).clone()
}

#[tokio::test]
async fn a_second_lookup_is_served_from_memory_without_loading() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let t = Uuid::now_v7();
    assert_eq!(
        load_counted(&cache, &loads, t, "tenant", "", "a").await,
        "a"
    );
    assert_eq!(
        load_counted(&cache, &loads, t, "tenant", "", "b").await,
        "a"
    );
    assert_eq!(loads.load(SeqCst), 1);
    let s = cache.stats.ns("tenant");
    assert_eq!((s.hits_l1.load(SeqCst), s.misses.load(SeqCst)), (1, 1));
    let ts = cache.stats.tenant(t);
    assert_eq!(ts.hit_rate(), Some(0.5));
}

#[tokio::test]
async fn bumping_a_tenant_hides_its_entries_and_no_other_tenants() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    load_counted(&cache, &loads, a, "member", "u1", "old").await;
    load_counted(&cache, &loads, a, "posts:first", "20", "old").await;
    load_counted(&cache, &loads, b, "member", "u1", "old").await;
    cache.bump_tenant(a).await;
    assert_eq!(
        load_counted(&cache, &loads, a, "member", "u1", "new").await,
        "new"
    );
    assert_eq!(
        load_counted(&cache, &loads, a, "posts:first", "20", "new").await,
        "new"
    );
    assert_eq!(
        load_counted(&cache, &loads, b, "member", "u1", "new").await,
        "old"
    );
}

#[tokio::test]
async fn bumping_a_list_hides_only_that_list() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let t = Uuid::now_v7();
    load_counted(&cache, &loads, t, "member", "u1", "old").await;
    load_counted(&cache, &loads, t, "posts:first", "20", "old").await;
    load_counted(&cache, &loads, t, "events:upcoming", "20", "old").await;
    cache.bump_list(t, "posts").await;
    assert_eq!(
        load_counted(&cache, &loads, t, "posts:first", "20", "new").await,
        "new"
    );
    assert_eq!(
        load_counted(&cache, &loads, t, "member", "u1", "new").await,
        "old"
    );
    assert_eq!(
        load_counted(&cache, &loads, t, "events:upcoming", "20", "new").await,
        "old"
    );
}

#[tokio::test]
async fn bumping_a_list_of_many_tenants_hides_it_for_each_of_them_only() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for t in [a, b, c] {
        load_counted(&cache, &loads, t, "posts:first", "20", "old").await;
        load_counted(&cache, &loads, t, "member", "u1", "old").await;
    }
    cache.bump_lists(&[a, b], "posts").await;
    for (t, first) in [(a, "new"), (b, "new"), (c, "old")] {
        assert_eq!(
            load_counted(&cache, &loads, t, "posts:first", "20", "new").await,
            first
        );
        assert_eq!(
            load_counted(&cache, &loads, t, "member", "u1", "new").await,
            "old"
        );
    }
    assert_eq!(cache.invalidations.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn an_entry_is_reloaded_once_its_ttl_is_over() {
    let cache = Cache::local();
    let t = Uuid::now_v7();
    let get = |v: &'static str| {
        cache.get_or_load(
            t,
            "posts:first",
            "20",
            Duration::from_secs(30),
            move || async move { R::Ok(v.to_owned()) },
        )
    };
    assert_eq!(*get("a").await.expect("a"), "a");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(*get("b").await.expect("b"), "a", "still fresh at 29 s");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(*get("c").await.expect("c"), "c", "reloaded after 30 s");
}

#[tokio::test(start_paused = true)]
async fn the_loader_chooses_the_ttl_of_negative_entries() {
    let cache = Cache::local();
    let get = |found: Option<u32>| {
        cache.get_or_load_ttl(PLATFORM, "names:slug", "acme", move || async move {
            let ttl = if found.is_some() { 300 } else { 5 };
            R::Ok((found, Duration::from_secs(ttl)))
        })
    };
    assert_eq!(*get(None).await.expect("miss").0, None);
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(*get(Some(1)).await.expect("cached").0, None);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(*get(Some(1)).await.expect("reloaded").0, Some(1));
}

#[tokio::test]
async fn concurrent_misses_share_one_load() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let t = Uuid::now_v7();
    let one = || async {
        cache
            .get_or_load(t, "tenant", "", Duration::from_secs(30), || async {
                loads.fetch_add(1, SeqCst);
                tokio::task::yield_now().await;
                R::Ok(7u32)
            })
            .await
    };
    let results = futures::future::join_all((0..8).map(|_| one())).await;
    assert!(results.iter().all(|r| r.as_deref() == Ok(&7)));
    assert_eq!(loads.load(SeqCst), 1);
}

#[tokio::test]
async fn a_failed_load_caches_nothing() {
    let cache = Cache::local();
    let t = Uuid::now_v7();
    let failed = cache
        .get_or_load(t, "tenant", "", Duration::from_secs(30), || async {
            R::<u32>::Err("down".to_owned())
        })
        .await;
    assert_eq!(failed.err().as_deref().map(String::as_str), Some("down"));
    let loaded = cache
        .get_or_load(t, "tenant", "", Duration::from_secs(30), || async {
            R::Ok(1u32)
        })
        .await;
    assert_eq!(loaded.as_deref(), Ok(&1));
}

#[tokio::test]
async fn two_types_under_one_key_never_mix() {
    let cache = Cache::local();
    let t = Uuid::now_v7();
    let s = cache
        .get_or_load(t, "x", "k", Duration::from_secs(30), || async {
            R::Ok("s".to_owned())
        })
        .await;
    let n = cache
        .get_or_load(t, "x", "k", Duration::from_secs(30), || async {
            R::Ok(5u8)
        })
        .await;
    assert_eq!(
        (s.as_deref().map(String::as_str), n.as_deref()),
        (Ok("s"), Ok(&5))
    );
}

#[tokio::test]
async fn another_nodes_announcement_hides_the_entries_it_names() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let t = Uuid::now_v7();
    load_counted(&cache, &loads, t, "member", "u", "old").await;
    // This node's own announcement comes back over the channel: ignored.
    let own = fanout::Message {
        node: cache.node(),
        tenant: t,
        list: String::new(),
        generation: None,
    };
    cache.apply(&own).await;
    assert_eq!(
        load_counted(&cache, &loads, t, "member", "u", "new").await,
        "old"
    );
    let other = fanout::Message {
        node: Uuid::new_v4(),
        ..own
    };
    cache.apply(&other).await;
    assert_eq!(
        load_counted(&cache, &loads, t, "member", "u", "new").await,
        "new"
    );
}

#[tokio::test]
async fn a_reset_forgets_everything() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let t = Uuid::now_v7();
    load_counted(&cache, &loads, t, "tenant", "", "old").await;
    cache.reset().await;
    assert_eq!(
        load_counted(&cache, &loads, t, "tenant", "", "new").await,
        "new"
    );
}

#[test]
fn announcements_survive_encoding() {
    for generation in [None, Some(42)] {
        for list in ["", "posts", "names"] {
            let m = fanout::Message {
                node: Uuid::new_v4(),
                tenant: Uuid::now_v7(),
                list: list.to_owned(),
                generation,
            };
            assert_eq!(fanout::Message::decode(&m.encode()), Some(m));
        }
    }
    assert_eq!(fanout::Message::decode("garbage"), None);
}

#[tokio::test]
async fn size_and_evictions_are_counted_by_namespace() {
    let cache = Cache::new(CacheOptions {
        capacity: 10,
        ..CacheOptions::default()
    });
    let t = Uuid::now_v7();
    for i in 0..50 {
        let _ = cache
            .get_or_load(
                t,
                "member",
                &i.to_string(),
                Duration::from_secs(30),
                || async { R::Ok(i) },
            )
            .await;
    }
    cache.run_pending_tasks().await;
    let s = cache.stats.ns("member");
    assert!(s.evictions.load(SeqCst) >= 40, "evictions {:?}", s);
    assert!(s.entries.load(SeqCst) <= 10, "entries {:?}", s);
}

#[tokio::test]
async fn a_stamp_moves_with_its_tenant_the_platform_and_resets_but_not_with_lists() {
    let cache = Cache::local();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let loads = AtomicU32::new(0);
    load_counted(&cache, &loads, a, "tenant", "", "a").await;
    let stamp = cache.stamp(a);
    assert!(cache.is_current(a, stamp));

    // Tenants seen for the first time, in `a`'s slot or not, change
    // nothing of `a`'s: learning a generation is not a change.
    let same_slot = std::iter::repeat_with(Uuid::new_v4)
        .find(|t| cache.gens.epochs.slot(*t).as_ptr() == cache.gens.epochs.slot(a).as_ptr())
        .expect("one in 256 shares the slot");
    load_counted(&cache, &loads, same_slot, "tenant", "", "same slot").await;
    load_counted(&cache, &loads, same_slot, "member", "u", "same slot").await;
    for _ in 0..1_000 {
        load_counted(&cache, &loads, Uuid::new_v4(), "tenant", "", "other").await;
    }
    assert!(cache.is_current(a, stamp));

    cache.bump_list(a, "posts").await;
    load_counted(&cache, &loads, b, "tenant", "", "b").await;
    cache.bump_tenant(b).await;
    // `b` may share `a`'s slot (1 in 256); then the stamp moves too, which
    // only costs a memo rebuild.
    let shared_slot = cache.gens.epochs.slot(a).as_ptr() == cache.gens.epochs.slot(b).as_ptr();
    assert_eq!(cache.is_current(a, stamp), !shared_slot);

    let stamp = cache.stamp(a);
    cache.bump_tenant(a).await;
    assert!(!cache.is_current(a, stamp));

    let stamp = cache.stamp(a);
    cache.bump_list(PLATFORM, "names").await;
    assert!(!cache.is_current(a, stamp));
    assert!(!stamp.same_platform(cache.stamp(a)));

    let stamp = cache.stamp(a);
    cache.reset().await;
    assert!(!cache.is_current(a, stamp));

    // Another node's announcement moves it like a local bump.
    let stamp = cache.stamp(a);
    cache
        .apply(&fanout::Message {
            node: Uuid::now_v7(),
            tenant: a,
            list: TENANT.to_owned(),
            generation: None,
        })
        .await;
    assert!(!cache.is_current(a, stamp));
}

#[tokio::test]
async fn idle_tenants_generations_and_figures_are_forgotten_and_busy_ones_kept() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let (idle, busy) = (Uuid::now_v7(), Uuid::now_v7());
    // The idle tenant's entry lives 50 ms; the busy one's 30 s.
    cache
        .get_or_load(idle, "tenant", "", Duration::from_millis(50), || async {
            loads.fetch_add(1, SeqCst);
            R::Ok("idle".to_owned())
        })
        .await
        .expect("loads");
    load_counted(&cache, &loads, busy, "tenant", "", "busy").await;
    assert_eq!(cache.tenants_tracked(), 2);
    assert_eq!(cache.stats.tenants_len(), 2);
    // Figures of requests not yet flushed are kept, whatever the entries.
    cache.stats.tenant(idle).requests.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(120)).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.forget_idle_tenants(), (1, 0));
    assert_eq!(cache.tenants_tracked(), 1);
    // Flushed: now the figures go too.
    let s = cache.stats.tenant(idle);
    s.flushed.store(s.requests.load(SeqCst), SeqCst);
    drop(s);
    assert_eq!(cache.forget_idle_tenants(), (0, 1));
    assert_eq!(cache.stats.tenants_len(), 1);
    // The busy tenant is served from memory as before; the idle one loads
    // again, under a new generation.
    assert_eq!(
        load_counted(&cache, &loads, busy, "tenant", "", "other").await,
        "busy"
    );
    assert_eq!(
        load_counted(&cache, &loads, idle, "tenant", "", "again").await,
        "again"
    );
    assert_eq!(loads.load(SeqCst), 3);
}

#[tokio::test]
async fn a_peek_sees_only_what_l1_holds_under_the_current_generations() {
    let cache = Cache::local();
    let loads = AtomicU32::new(0);
    let (a, never) = (Uuid::now_v7(), Uuid::now_v7());
    assert!(cache.peek::<String>(never, "tenant", "").await.is_none());
    load_counted(&cache, &loads, a, "tenant", "", "a").await;
    let held = cache.peek::<String>(a, "tenant", "").await.expect("held");
    assert_eq!(*held, "a");
    // Another type, key or namespace is not the entry.
    assert!(cache.peek::<u64>(a, "tenant", "").await.is_none());
    assert!(cache.peek::<String>(a, "tenant", "b").await.is_none());
    assert!(cache.peek::<String>(a, "member", "").await.is_none());
    // A peek loads nothing.
    assert_eq!(loads.load(SeqCst), 1);
    // After a change, the old entry is out of reach.
    cache.bump_tenant(a).await;
    assert!(cache.peek::<String>(a, "tenant", "").await.is_none());
}
