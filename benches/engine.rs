//! Engine benchmarks (numbers are reported, not asserted):
//!
//! - `parse/mix`: the command grammar over a realistic mix of inputs (target ≥ 1,000,000/s).
//! - `engine/status`: `status` for all services on a file SQLite database with a few hundred
//!   promotions of history (target ≥ 20,000/s).
//! - `engine/promotion_lifecycle`: request → deploying → succeeded for 64 services at once with an
//!   in-process no-op backend on a file SQLite database (target ≥ 1,000 promotions/s).
//!
//! Run with `cargo bench --bench engine`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shipmate::config::Config;
use shipmate::deploy::{Backend, DeployCall, DeployOutcome};
use shipmate::domain::command::{self, Command};
use shipmate::domain::identity::{Actor, Identity};
use shipmate::domain::version::{Version, VersionSpec};
use shipmate::engine::{Backends, Engine, Request, Time};
use shipmate::metrics::StateLabels;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Services in the lifecycle benchmark: all of them promote at once in every iteration.
const LIFECYCLE_SERVICES: usize = 64;
/// Services in the status benchmark, each with dev → staging → production.
const STATUS_SERVICES: usize = 4;
/// Versions each status-benchmark service takes through dev and staging as history.
const STATUS_HISTORY_VERSIONS: u64 = 40;
/// Longest wait for one batch of promotions before the benchmark gives up.
const BATCH_DEADLINE: Duration = Duration::from_secs(30);

/// A backend that succeeds at once, so the engine's own cost is what is measured.
struct NoopBackend;

#[async_trait]
impl Backend for NoopBackend {
    fn kind(&self) -> &'static str {
        "noop"
    }

    async fn deploy(&self, _call: DeployCall) -> DeployOutcome {
        DeployOutcome::Succeeded
    }

    async fn check(&self, _service: &str, _environment: &str) -> Result<String, String> {
        Ok("does nothing".to_string())
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn actor() -> Actor {
    Actor::new(Identity::new("api", "ci")).with_roles(["deployers".to_string()])
}

/// `bot.toml` text: `services` as (name, [(environment, needs approval)]).
fn config_text(database_url: &str, services: &[(String, Vec<(&str, bool)>)]) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[database]
url = "{database_url}"

[roles]
leads = ["api:lead"]
deployers = ["api:ci", "api:lead"]
admins = ["api:lead"]

[[api_tokens]]
name = "ci"
sha256 = "{ci}"
roles = ["deployers"]
"#,
        ci = sha256_hex("bench-ci-token"),
    );
    for (service, environments) in services {
        text.push_str(&format!("\n[[service]]\nname = \"{service}\"\n"));
        for (environment, approval) in environments {
            text.push_str(&format!(
                "  [[service.environment]]\n  name = \"{environment}\"\n  backend = {{ kind = \"command\", run = [\"./deploy.sh\"], timeout = \"30s\" }}\n"
            ));
            if *approval {
                text.push_str(
                    "  approvals = { required = 1, from = \"leads\", expires = \"24h\" }\n",
                );
            }
        }
    }
    text
}

fn parse_config(text: &str, dir: &Path) -> Config {
    shipmate::config::parse(text, dir, &|_| None)
        .unwrap_or_else(|problems| panic!("benchmark config is invalid: {problems:?}"))
}

/// An engine on a fresh SQLite file with the no-op backend everywhere, and its running workers.
struct Bench {
    engine: Engine,
    shutdown: CancellationToken,
    workers: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl Bench {
    fn start(runtime: &Runtime, services: &[(String, Vec<(&str, bool)>)]) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let config = parse_config(&config_text(&database_url, services), dir.path());
        let backends = Backends::uniform(&config, Arc::new(NoopBackend));
        let engine = runtime
            .block_on(shipmate::app::build(config, Time::system(), Some(backends)))
            .expect("engine builds")
            .engine;
        let shutdown = CancellationToken::new();
        let grace = engine.config().server.shutdown_grace;
        let workers = runtime.spawn(engine.clone().run_workers(shutdown.clone(), grace));
        Bench {
            engine,
            shutdown,
            workers: Some(workers),
            _dir: dir,
        }
    }

    fn stop_workers(&mut self, runtime: &Runtime) {
        self.shutdown.cancel();
        if let Some(workers) = self.workers.take() {
            runtime.block_on(workers).expect("workers stop cleanly");
        }
    }

    fn stop(mut self, runtime: &Runtime) {
        self.stop_workers(runtime);
        runtime.block_on(self.engine.close());
    }
}

/// Terminal-state counters of every (service, environment), read without allocating.
struct Terminal {
    succeeded: Vec<StateLabels>,
    failed: Vec<StateLabels>,
}

impl Terminal {
    fn new(config: &Config) -> Terminal {
        let labels = |state: &str| {
            config
                .services
                .iter()
                .flat_map(|s| {
                    s.environments.iter().map(|e| StateLabels {
                        service: s.name.clone(),
                        environment: e.name.clone(),
                        state: state.to_string(),
                    })
                })
                .collect()
        };
        Terminal {
            succeeded: labels("succeeded"),
            failed: labels("failed"),
        }
    }

    fn sum(engine: &Engine, labels: &[StateLabels]) -> u64 {
        let promotions = &engine.metrics().promotions;
        labels
            .iter()
            .map(|l| promotions.get_or_create(l).get())
            .sum()
    }

    fn succeeded(&self, engine: &Engine) -> u64 {
        Self::sum(engine, &self.succeeded)
    }

    /// Waits until `target` promotions have succeeded in all; panics on a failure or after
    /// [`BATCH_DEADLINE`].
    async fn wait_for(&self, engine: &Engine, target: u64) {
        let deadline = Instant::now() + BATCH_DEADLINE;
        loop {
            let done = self.succeeded(engine);
            if done >= target {
                return;
            }
            let failed = Self::sum(engine, &self.failed);
            assert_eq!(failed, 0, "a benchmark deploy failed");
            assert!(
                Instant::now() < deadline,
                "only {done} of {target} promotions succeeded within {BATCH_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn promote(service: &str, version: Version, to: Option<&str>) -> Command {
    Command::Promote {
        service: service.to_string(),
        version: VersionSpec::Exact(version),
        to: to.map(str::to_string),
        force_reason: None,
        hotfix_reason: None,
    }
}

fn bench_parse(c: &mut Criterion) {
    let inputs = [
        "/release promote api 1.4.2 to production",
        "promote web v2.0.0-rc.1 --force \"hotfix for the login outage\"",
        "approve #42",
        "/release status",
        "status api",
        "history api production last 5",
        "create api 1.4.2 commit abc1234 notes fixes the login timeout and bumps the TLS library",
        "freeze production for 1h30m database migration in progress",
        "reject #17 wrong build, see thread",
        "rollback web staging to 1.3.9",
    ];
    for input in inputs {
        command::parse(input).unwrap_or_else(|e| panic!("`{input}` does not parse: {e}"));
    }
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("mix", |b| {
        b.iter(|| {
            for input in inputs {
                black_box(command::parse(black_box(input)).ok());
            }
        })
    });
    group.finish();
}

fn bench_status(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let services: Vec<(String, Vec<(&str, bool)>)> = (0..STATUS_SERVICES)
        .map(|i| {
            (
                format!("svc-{i}"),
                vec![("dev", false), ("staging", false), ("production", true)],
            )
        })
        .collect();
    let mut bench = Bench::start(&runtime, &services);
    let engine = bench.engine.clone();
    let actor = actor();
    let terminal = Terminal::new(engine.config());

    // History: every service takes each version through dev and staging; the last version then
    // waits for approval in production, so status has active rows too.
    runtime.block_on(async {
        let mut expected = 0;
        for patch in 1..=STATUS_HISTORY_VERSIONS {
            for environment in ["dev", "staging"] {
                for (service, _) in &services {
                    let command = promote(service, Version::new(1, 0, patch), Some(environment));
                    engine
                        .handle(Request::command(actor.clone(), command))
                        .await
                        .expect("promote");
                }
                expected += services.len() as u64;
                terminal.wait_for(&engine, expected).await;
            }
        }
        for (service, _) in &services {
            let version = Version::new(1, 0, STATUS_HISTORY_VERSIONS);
            let command = promote(service, version, Some("production"));
            engine
                .handle(Request::command(actor.clone(), command))
                .await
                .expect("promote");
        }
    });
    // Nothing left for the workers to do; stop them so they do not poll during the measurement.
    bench.stop_workers(&runtime);
    let status = || Command::Status { service: None };
    let reply = runtime
        .block_on(engine.handle(Request::command(actor.clone(), status())))
        .expect("status");
    black_box(reply);

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("status", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                engine
                    .handle(Request::command(actor.clone(), status()))
                    .await
                    .expect("status"),
            )
        })
    });
    group.finish();
    bench.stop(&runtime);
}

fn bench_lifecycle(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let services: Vec<(String, Vec<(&str, bool)>)> = (0..LIFECYCLE_SERVICES)
        .map(|i| (format!("svc-{i:02}"), vec![("prod", false)]))
        .collect();
    let names: Vec<String> = services.iter().map(|(name, _)| name.clone()).collect();
    let bench = Bench::start(&runtime, &services);
    let engine = bench.engine.clone();
    let actor = actor();
    let terminal = Terminal::new(engine.config());
    // The last version promoted; every batch takes the next one everywhere.
    let version = AtomicU64::new(0);

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(LIFECYCLE_SERVICES as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("promotion_lifecycle", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (engine, actor, names, terminal, version) =
                (&engine, &actor, &names, &terminal, &version);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let patch = version.fetch_add(1, Ordering::Relaxed) + 1;
                    let target = terminal.succeeded(engine) + names.len() as u64;
                    let start = Instant::now();
                    for service in names {
                        let command = promote(service, Version::new(1, 0, patch), Some("prod"));
                        engine
                            .handle(Request::command(actor.clone(), command))
                            .await
                            .expect("promote");
                    }
                    terminal.wait_for(engine, target).await;
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    bench.stop(&runtime);
}

criterion_group!(benches, bench_parse, bench_status, bench_lifecycle);
criterion_main!(benches);
