//! Building the router and running the server.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use tenantry_cache::{Cache, CacheOptions, L2};
use tenantry_db::embedded::EmbeddedPostgres;
use tenantry_db::{Db, DbOptions};
use tenantry_fairness::rate::RateLimiter;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{BODY_LIMIT, Secrets, Settings};
use crate::state::AppState;
use crate::telemetry;

/// Every route of the API.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(crate::routes::all())
        .split_for_parts();
    let tiers: Vec<String> = state.tiers.load().tiers.keys().cloned().collect();
    let cells: Vec<String> = state.cells.iter().map(|c| c.name.clone()).collect();
    let openapi = crate::openapi::contract(openapi, &tiers, &cells);
    api.merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi))
        .fallback(telemetry::not_found)
        .method_not_allowed_fallback(telemetry::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(telemetry::panic_response))
        .layer(axum::middleware::from_fn(crate::lifecycle::buffer_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::request::shed::shed,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::request::support::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::versions::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::observe,
        ))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then drains
/// in-flight requests. Background workers stop with it.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let purge = tokio::spawn(crate::purge::run(state.clone(), stop_rx.clone()));
    let maintenance = tokio::spawn(crate::maintenance::run(state.clone(), stop_rx.clone()));
    let platform = crate::ops::maintenance::registry().register(
        crate::moves::MOVE,
        crate::moves::MoveJob::new(state.clone()),
    );
    let mut batch = crate::batch::start(&state.db, &state.batch, &state.cache, &stop_rx, platform);
    for cell in state.cells.others() {
        batch.extend(crate::batch::start_cell(
            cell,
            &state.batch,
            &state.cache,
            &stop_rx,
        ));
    }
    let fanout = tokio::spawn(tenantry_cache::fanout::run(
        state.cache.clone(),
        stop_rx.clone(),
    ));
    let warm = tokio::spawn(crate::warm::run(state.clone(), stop_rx.clone()));
    let backups = tokio::spawn(crate::lifecycle::run_backups(
        state.clone(),
        stop_rx.clone(),
    ));
    let usage = tokio::spawn(crate::ops::usage::run(
        state.db.clone(),
        state.usage.clone(),
        stop_rx.clone(),
    ));
    let observe = tokio::spawn(crate::observe::run(state.clone(), stop_rx.clone()));
    // Each cell's replicas are polled against their own primary.
    let replicas: Vec<_> = state
        .cells
        .iter()
        .filter(|cell| cell.db.replicas().is_some())
        .map(|cell| tokio::spawn(tenantry_db::replica::run(cell.db.clone(), stop_rx.clone())))
        .collect();
    let scaling = tokio::spawn(crate::scaling::run(state.clone(), stop_rx.clone()));
    let upkeep = tokio::spawn(metrics_upkeep(state.clone(), stop_rx));
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("The HTTP server failed");
    // In-flight requests are answered (the collector is still running for
    // the ones waiting on it); now workers finish their batch and the
    // collector writes what it holds.
    let _ = stop_tx.send(true);
    let _ = tokio::join!(
        purge,
        maintenance,
        upkeep,
        fanout,
        warm,
        backups,
        usage,
        observe,
        scaling
    );
    for task in batch.into_iter().chain(replicas) {
        let _ = task.await;
    }
    result
}

/// How often idle tenants' per-tenant state is swept out of the cache's
/// generations and statistics.
const FORGET_IDLE_EVERY: u32 = 12;

async fn metrics_upkeep(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = 0_u32;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                state.metrics.run_upkeep();
                // Keys whose limit has fully recovered behave as never seen.
                state.fairness.rate.retain_recent();
                let share = state.fairness.db_share.stats();
                metrics::gauge!("tenantry_db_share_in_use").set(f64::from(share.in_use));
                metrics::gauge!("tenantry_db_share_waiting").set(share.waiting as f64);
                let cpu = state.fairness.cpu_share.stats();
                metrics::gauge!("tenantry_cpu_share_in_use").set(f64::from(cpu.in_use));
                metrics::gauge!("tenantry_cpu_share_waiting").set(cpu.waiting as f64);
                state.cache.run_pending_tasks().await;
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(FORGET_IDLE_EVERY) {
                    let (gens, stats) = state.cache.forget_idle_tenants();
                    let views = state.views.sweep();
                    state.memo.sweep(tokio::time::Instant::now());
                    state.provisioned.sweep(tokio::time::Instant::now());
                    tracing::debug!(gens, stats, views, "forgot idle tenants' cache state");
                }
                metrics::gauge!("tenantry_tenant_state_entries", "kind" => "cache_generations")
                    .set(state.cache.tenants_tracked() as f64);
                metrics::gauge!("tenantry_tenant_state_entries", "kind" => "cache_stats")
                    .set(state.cache.stats.tenants_len() as f64);
                metrics::gauge!("tenantry_tenant_state_entries", "kind" => "tenant_views")
                    .set(state.views.len() as f64);
                metrics::gauge!("tenantry_tenant_state_entries", "kind" => "memo_callers")
                    .set(state.memo.entries() as f64);
                metrics::gauge!("tenantry_tenant_state_entries", "kind" => "verified_tokens")
                    .set(state.tokens_len() as f64);
                metrics::gauge!("tenantry_tenant_state_entries", "kind" => "provisioned_users")
                    .set(state.provisioned.len() as f64);
                metrics::gauge!("tenantry_db_statements_sent").set(tenantry_db::statements_total() as f64);
                for cell in state.cells.iter() {
                    replica_metrics(&cell.db, &cell.name);
                }
            }
        }
    }
}

/// Read replicas' lag and the reads each target served.
fn replica_metrics(db: &Db, cell: &str) {
    let Some(replicas) = db.replicas() else {
        return;
    };
    for r in replicas.statuses() {
        let labels = [("replica", r.name.clone()), ("cell", r.cell.clone())];
        metrics::gauge!("tenantry_replica_lag_bytes", &labels).set(r.lag_bytes as f64);
        metrics::gauge!("tenantry_replica_lag_seconds", &labels).set(r.lag_seconds);
        metrics::gauge!("tenantry_replica_up", &labels).set(f64::from(u8::from(r.usable)));
        metrics::counter!("tenantry_db_reads_total", "target" => r.name.clone(), "cell" => cell.to_owned())
            .absolute(r.reads);
    }
    let (primary, fallbacks) = replicas.primary_reads();
    metrics::counter!("tenantry_db_reads_total", "target" => "primary", "cell" => cell.to_owned())
        .absolute(primary + fallbacks);
}

/// A configured server: database up and migrated, listener bound.
pub struct Application {
    state: Arc<AppState>,
    listener: TcpListener,
    embedded: Option<EmbeddedPostgres>,
    data_dir: PathBuf,
    /// The tiers file, reloaded on SIGHUP.
    config_file: Option<PathBuf>,
    pub secrets: Secrets,
}

impl Application {
    /// Starts the database (embedded when no `DATABASE_URL`), migrates it and
    /// binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, |state| state).await
    }

    /// [`Application::build`], with a last word on the state before it is
    /// shared: the tests start every server through here, adjusting tiers,
    /// the cache or fairness as they need.
    pub async fn build_with(
        settings: Settings,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let tiers = settings.tiers()?;
        let secrets = Secrets::load(&settings)?;
        let (url, embedded) = match &settings.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = EmbeddedPostgres::start(&settings.data_dir)
                    .await
                    .context("Failed to start the embedded PostgreSQL")?;
                (pg.connection_string(), Some(pg))
            }
        };
        let db_options = DbOptions {
            max_connections: settings.db_max_connections,
            statement_mode: settings.statement_mode,
            ..DbOptions::default()
        };
        let db = Db::connect(&url, &db_options)?;
        // Read replicas hang on their cell's pool: the one place they are
        // attached (see `tenantry_db::replica`).
        let replica_specs = match &settings.replicas {
            Some(spec) => tenantry_db::replica::parse_specs(spec)?,
            None => Vec::new(),
        };
        let with_replicas = |db: Db, cell: &str| -> anyhow::Result<Db> {
            let urls: Vec<String> = replica_specs
                .iter()
                .filter(|r| r.cell == cell)
                .map(|r| r.url.clone())
                .collect();
            if urls.is_empty() {
                return Ok(db);
            }
            Ok(db.with_replicas(tenantry_db::replica::Replicas::connect(
                cell,
                &urls,
                &db_options,
                settings.replica_options.clone(),
            )?))
        };
        let db = with_replicas(db, crate::cells::MAIN)?;
        tenantry_db::migrate::migrate(&db)
            .await
            .context("Failed to migrate the database")?;
        // Every cell has the full schema: migrated at start, like main.
        let mut cells = Vec::new();
        for (name, url) in crate::cells::parse(settings.cells.as_deref().unwrap_or(""))? {
            let cell_db = Db::connect(
                &url,
                &DbOptions {
                    max_connections: settings.db_max_connections,
                    statement_mode: settings.statement_mode,
                    ..DbOptions::default()
                },
            )
            .with_context(|| format!("Failed to configure the cell {name}"))?;
            tenantry_db::migrate::migrate(&cell_db)
                .await
                .with_context(|| format!("Failed to migrate the cell {name}"))?;
            let cell_db = with_replicas(cell_db, &name)?;
            cells.push((name, cell_db));
        }
        let redis = match &settings.redis_url {
            Some(url) => Some(tenantry_cache::redis_client(
                url,
                settings.redis_ca_file.as_deref(),
            )?),
            None => None,
        };
        let rate = match &redis {
            Some(client) => RateLimiter::with_redis_client(client.clone()),
            None => RateLimiter::local(),
        };
        let cache = redis.map(|client| {
            Cache::new(CacheOptions {
                redis: Some(L2::with_client(client, "tenantry:")),
                db: Some(db.clone()),
                ..CacheOptions::default()
            })
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("Failed to listen on {}", settings.listen))?;
        let mut state = AppState::new(
            db,
            tiers,
            &secrets.jwt_secret,
            secrets.admin_token.clone(),
            settings.base_domain.clone(),
            telemetry::prometheus(),
        )
        .with_fairness(rate, settings.max_in_flight, settings.db_queue_budget)
        .with_enforcement(settings.fairness)
        .with_partition_horizon(settings.partition_horizon_months)
        .with_batch(
            tenantry_jobs::ingest::IngestConfig {
                window: settings.ingest_window,
                ..Default::default()
            },
            settings.job_workers,
        )
        .with_observe(settings.observe.clone())
        .with_cells(
            cells,
            tenantry_jobs::ingest::IngestConfig {
                window: settings.ingest_window,
                ..Default::default()
            },
        );
        state.batch.worker_config.lease = settings.job_lease;
        state.batch.export_dir = settings
            .export_dir
            .clone()
            .unwrap_or_else(|| settings.data_dir.join("exports"));
        if let Some(cache) = cache {
            state = state.with_cache(cache);
        }
        if let Some(capacity) = settings.db_share {
            state = state.with_db_share(capacity);
        }
        if let Some(capacity) = settings.cpu_share {
            state = state.with_cpu_share(capacity);
        }
        state = state.with_adaptive(settings.adaptive);
        let state = Arc::new(configure(state));
        Ok(Self {
            state,
            listener,
            embedded,
            data_dir: settings.data_dir,
            config_file: settings.config_file,
            secrets,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown`, then stops the embedded database if it
    /// started one.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        // Registered before the first request: from here a SIGHUP reloads
        // the tiers file instead of ending the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("Failed to listen for SIGHUP")?;
        let (reload_stop, reload_stopped) = tokio::sync::watch::channel(false);
        let reload = tokio::spawn(crate::ops::reload::run(
            self.state.clone(),
            self.config_file.clone(),
            hangup,
            reload_stopped,
        ));
        if !self.state.fairness.enforce {
            tracing::warn!("TENANTRY_FAIRNESS=off: no rate limits and no database share");
        }
        let db_note = match &self.embedded {
            Some(_) => format!("embedded PostgreSQL in {}", self.data_dir.display()),
            None => "DATABASE_URL".to_owned(),
        };
        // The one line a newcomer looks for: on stdout, apart from the logs.
        println!(
            "==> tenantry ready on http://{addr} (API docs: http://{addr}/docs; {db_note}; admin token: {})",
            self.secrets.admin_token
        );
        tracing::info!(%addr, "ready");
        let result = run(self.listener, self.state, shutdown).await;
        let _ = reload_stop.send(true);
        let _ = reload.await;
        if let Some(pg) = self.embedded {
            pg.stop()
                .await
                .context("Failed to stop the embedded PostgreSQL")?;
        }
        result
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
