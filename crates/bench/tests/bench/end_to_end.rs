//! The real thing, briefly: seed a fresh database with the seeder, start
//! the server in-process on it, run the `read` scenario for three seconds.

use clap::Parser;
use tenantry_bench::bench::{self, BenchArgs};
use tenantry_bench::seed::{self, FkChecks, LoadOptions};

use crate::helpers::FreshDatabase;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_self_hosted_read_run_has_throughput_and_no_errors() {
    let db = FreshDatabase::create().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("results.json");
    let html = dir.path().join("report.html");
    let cli = Cli::parse_from([
        "bench",
        "--database-url",
        &db.url,
        "--seed-tenants",
        "12",
        "--seed-posts",
        "1500",
        "--scenario",
        "read",
        "--tenants",
        "5",
        "--connections",
        "4",
        "--warmup",
        "500ms",
        "--duration",
        "3s",
        "--no-progress",
        "--out",
        out.to_str().expect("utf-8 path"),
        "--html",
        html.to_str().expect("utf-8 path"),
    ]);
    bench::run(cli.bench).await.expect("the bench runs");

    let report = tenantry_bench::report::Report::from_json(
        &std::fs::read_to_string(&out).expect("results written"),
    )
    .expect("results parse");
    let read = report.scenario("read").expect("the read scenario ran");
    assert!(
        read.throughput_rps > 0.0,
        "throughput {}",
        read.throughput_rps
    );
    assert_eq!(read.errors, 0, "errors: {:?}", read.errors_by_status);
    assert!(read.latency_ms.p99 > 0.0);
    assert_eq!(read.tenants.len(), 5);
    assert!(
        read.tenants
            .iter()
            .all(|t| t.ok > 0 && !t.series.t.is_empty())
    );
    let seeded = report
        .target
        .seeded
        .as_ref()
        .expect("the bench seeded the database");
    assert_eq!(seeded.tenants, 12);
    assert!(
        std::fs::read_to_string(&html)
            .expect("report written")
            .contains("<svg")
    );

    // The seeded database is consistent.
    let client = seed::load::connect(&db.url).await.expect("connect");
    let failed = seed::load::verify(&client).await.expect("verify runs");
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_with_foreign_key_checks_writes_the_same_consistent_data() {
    let db = FreshDatabase::create().await;
    let mut config = seed::plan::SeedConfig {
        tenants: 30,
        users: 200,
        memberships_per_user: 2.0,
        posts: 3_000,
        zipf_exponent: 1.0,
        likes_per_post: 1.5,
        comments_per_post: 0.5,
        days: 30,
        seed: 7,
        anchor_ms: 1_767_225_600_000,
        hub_communities: 0,
    };
    let options = LoadOptions {
        fk_checks: FkChecks::Checked,
        progress: false,
    };
    let summary = seed::seed_database(&db.url, &config, &options)
        .await
        .expect("seeding works");
    assert_eq!(summary.fk_checks, FkChecks::Checked);
    let posts = summary
        .tables
        .iter()
        .find(|t| t.table == "posts")
        .expect("posts");
    assert_eq!(posts.rows, 3_000);
    let client = seed::load::connect(&db.url).await.expect("connect");
    let failed = seed::load::verify(&client).await.expect("verify runs");
    assert!(failed.is_empty(), "{failed:?}");

    // A second seed into the same database is refused, not mixed in.
    config.seed = 8;
    let again = seed::seed_database(&db.url, &config, &options).await;
    let err = again.expect_err("a non-empty database is refused");
    assert!(err.to_string().contains("already holds tenants"), "{err}");
}
