//! Running a [`ScenarioPlan`]: one task per connection, closed or open
//! loop, all bounded by the plan's end, with a live progress line.
//!
//! Open loop follows wrk2: request `k` of a stream is due at
//! `start + k / rate` and goes to worker `k mod connections`; its latency
//! is counted from the due time, so when the server stalls, the requests
//! that should have been sent meanwhile are charged for the wait instead of
//! silently not being sent (coordinated omission). Closed loop measures
//! what each connection experiences from its send.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, sleep_until};

use super::client::{Connection, Endpoint, Failure, Headers};
use super::scenario::{Load, ScenarioPlan, Stream};
use super::stats::{Outcome, Recorder};
use super::workload::Workload;

/// How long an open-loop worker may run behind its schedule after the end
/// before it gives up the rest (counted as dropped).
const GRACE: Duration = Duration::from_secs(5);

pub struct DriveOptions {
    pub name: &'static str,
    pub seed: u64,
    pub timeout: Duration,
    pub progress: bool,
    /// Record each tenant's results (and series); off, only the totals and
    /// the operations'.
    pub per_tenant: bool,
}

/// What a run measured.
pub struct Driven {
    pub recorder: Arc<Recorder>,
    /// Seconds between the end of warm-up and the end of the plan.
    pub measured_s: f64,
}

/// Runs `plan` to its end.
pub async fn drive(
    plan: &ScenarioPlan,
    workload: &Arc<Workload>,
    endpoint: &Endpoint,
    options: &DriveOptions,
) -> anyhow::Result<Driven> {
    // Open every connection before the clock starts.
    let mut workers = Vec::new();
    for (s, stream) in plan.streams.iter().enumerate() {
        for w in 0..stream.load.connections().max(1) {
            let mut conn = Connection::new(endpoint.clone(), options.timeout);
            conn.open()
                .await
                .with_context(|| format!("Failed to open connection {w} to {}", endpoint.addr))?;
            let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
            rng.set_stream(((s as u64) << 32) | w as u64);
            workers.push((stream.clone(), w, conn, rng));
        }
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let recorder = Arc::new(Recorder::new(
        t0 + plan.warmup,
        plan.loaded_from.map(|l| t0 + l),
        if options.per_tenant {
            workload.tenants.len()
        } else {
            0
        },
    ));

    let mut tasks = tokio::task::JoinSet::new();
    for (stream, w, conn, rng) in workers {
        let worker = Worker {
            stream,
            index: w,
            conn,
            rng,
            t0,
            workload: workload.clone(),
            recorder: recorder.clone(),
        };
        tasks.spawn(worker.run());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let progress = progress_line(options, plan, t0, recorder.clone(), stopped);
    while let Some(joined) = tasks.join_next().await {
        joined.context("a load worker panicked")?;
    }
    let _ = stop.send(true);
    let _ = progress.await;
    Ok(Driven {
        recorder,
        measured_s: (plan.end - plan.warmup).as_secs_f64(),
    })
}

struct Worker {
    stream: Stream,
    index: usize,
    conn: Connection,
    rng: ChaCha8Rng,
    t0: Instant,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
}

impl Worker {
    async fn run(mut self) {
        match self.stream.load {
            Load::Closed { .. } => self.closed_loop().await,
            Load::Open { rate, connections } => self.open_loop(rate, connections).await,
        }
        self.recorder
            .reconnects
            .fetch_add(self.conn.reconnects(), Ordering::Relaxed);
    }

    async fn closed_loop(&mut self) {
        let end = self.t0 + self.stream.end;
        sleep_until(self.t0 + self.stream.start).await;
        loop {
            let mut sent = Instant::now();
            if let Some(turns) = self.stream.turns {
                let open = self.t0 + turns.next_open(sent.saturating_duration_since(self.t0));
                if open > sent {
                    sleep_until(open).await;
                    sent = Instant::now();
                }
            }
            if sent >= end {
                break;
            }
            let tenant = match self.stream.tenants.len() {
                0 => None,
                n => Some(self.stream.tenants[self.rng.random_range(0..n)]),
            };
            self.send(tenant, sent).await;
        }
    }

    async fn open_loop(&mut self, rate: f64, connections: usize) {
        let start = self.t0 + self.stream.start;
        let end = self.t0 + self.stream.end;
        let span = (self.stream.end.saturating_sub(self.stream.start)).as_secs_f64();
        let slots = (span * rate).ceil() as u64;
        let step = connections.max(1) as u64;
        let (turns, t0) = (self.stream.turns, self.t0);
        let in_turn =
            move |due: Instant| turns.is_none_or(|t| t.is_open(due.saturating_duration_since(t0)));
        let mut k = self.index as u64;
        while k < slots {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            if due >= end {
                break;
            }
            if Instant::now() > end + GRACE {
                // The slots left, but for those in other streams' turns.
                let left = (k..slots)
                    .step_by(step as usize)
                    .filter(|&j| in_turn(start + Duration::from_secs_f64(j as f64 / rate)))
                    .count() as u64;
                self.recorder.dropped.fetch_add(left, Ordering::Relaxed);
                break;
            }
            if !in_turn(due) {
                k += step;
                continue;
            }
            sleep_until(due).await;
            let tenant = match self.stream.tenants.len() {
                0 => None,
                n => Some(self.stream.tenants[(k % n as u64) as usize]),
            };
            self.send(tenant, due).await;
            k += step;
        }
    }

    /// Sends the stream's next request for `tenant`; latency from `since`.
    async fn send(&mut self, tenant: Option<usize>, since: Instant) {
        let target = tenant.map(|t| &self.workload.tenants[t]);
        let call = (self.stream.pick)(&mut self.rng, target);
        let headers = match target {
            Some(t) => Headers {
                auth: t.users.get(call.user).map(|u| u.auth.clone()),
                tenant: Some(t.header.clone()),
            },
            None => Headers::default(),
        };
        let answer = self
            .conn
            .send(call.method, &call.path, &headers, call.body)
            .await;
        let latency = since.elapsed();
        let outcome = match answer {
            Ok(a) => Outcome::Status(a.status.as_u16()),
            Err(Failure::Timeout(_)) => Outcome::Timeout,
            Err(Failure::Io(e)) => {
                tracing::debug!(error = %e, "request failed");
                Outcome::Io
            }
        };
        self.recorder
            .record(since, latency, tenant, call.op, outcome);
    }
}

/// Updates a one-line status every second while the run lasts.
fn progress_line(
    options: &DriveOptions,
    plan: &ScenarioPlan,
    t0: Instant,
    recorder: Arc<Recorder>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let target = if options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(plan.end.as_secs()), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>15} [{bar:20}] {pos:>3}/{len}s {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(options.name);
    let (warmup, loaded_from) = (plan.warmup, plan.loaded_from);
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {
                    bar.finish_and_clear();
                    return;
                }
            }
            let elapsed = t0.elapsed();
            let requests = recorder.live.requests.load(Ordering::Relaxed);
            let errors = recorder.live.errors.load(Ordering::Relaxed);
            let phase = if elapsed < warmup {
                "warming up"
            } else if loaded_from.is_some_and(|l| elapsed >= l) {
                "flood"
            } else if loaded_from.is_some() {
                "solo"
            } else {
                "measuring"
            };
            bar.set_position(elapsed.as_secs());
            bar.set_message(format!(
                "{phase}  {:>7} req/s  {requests} req  {errors} errors  p99 {:.2} ms",
                requests - last,
                recorder.p99_ms()
            ));
            last = requests;
        }
    })
}
