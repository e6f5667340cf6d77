//! Delivery metrics over 100,000 promotions (issue 15, SPEC §9): two years of api (dev → staging →
//! production) and web (staging → production) history seeded straight into the database, of which
//! the 90-day window holds about 12,000. Prints p50/p99/max of `dora_all(&[7, 30, 90])` (what
//! /ui/dora asks for), of the read alone and of single API reports, with the CPU time per call.
//! Target: /ui/dora under 50 ms p99.
//!
//! Run with `bash bench/dora.sh` (or `cargo bench --bench dora`): SQLite always, PostgreSQL when
//! SHIPMATE_TEST_POSTGRES_URL is set. `DORA_BENCH_PROMOTIONS=200000` seeds more.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::*;

const HOUR: i64 = 3600;

fn main() {
    let runtime = support::bench_runtime();
    for db in [Db::Sqlite, Db::Postgres] {
        runtime.block_on(measure(db));
    }
}

/// One database's measurement.
async fn measure(db: Db) {
    let promotions: usize = std::env::var("DORA_BENCH_PROMOTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let Some(bot) = TestBot::builder().db(db).start().await else {
        println!("{db:?}: not available here (set SHIPMATE_TEST_POSTGRES_URL): skipped");
        return;
    };
    let seeded = std::time::Instant::now();
    seed(&bot, promotions).await;
    println!(
        "{db:?}: seeded {promotions} promotions in {:?}",
        seeded.elapsed()
    );

    let entries = bot.engine.dora_all(&[7, 30, 90]).await.expect("dora_all");
    let deploys_90: u64 = entries
        .iter()
        .filter(|e| e.days == 90)
        .map(|e| e.report.deploys)
        .sum();
    assert!(deploys_90 > 0, "the seeded window holds deploys");
    println!("{db:?}: {deploys_90} deploys in the 90-day windows");

    let (from, to) = (start_time() - chrono::Duration::days(90), start_time());
    time_it(&format!("{db:?} the 90-day read alone"), || async {
        bot.store
            .ended_promotions(None, from, to)
            .await
            .map(|_| ())
            .map_err(shipmate::engine::EngineError::from)
    })
    .await;
    time_it(&format!("{db:?} dora_all(&[7, 30, 90])"), || async {
        bot.engine.dora_all(&[7, 30, 90]).await.map(|_| ())
    })
    .await;
    let one = shipmate::engine::DoraQuery {
        service: Some("api".into()),
        environment: None,
        days: 30,
    };
    time_it(&format!("{db:?} dora(api production 30)"), || async {
        bot.engine.dora(&one).await.map(|_| ())
    })
    .await;
    let pooled = shipmate::engine::DoraQuery {
        service: None,
        environment: None,
        days: 90,
    };
    time_it(&format!("{db:?} dora(all production 90)"), || async {
        bot.engine.dora(&pooled).await.map(|_| ())
    })
    .await;
}

/// Runs `call` 200 times; prints wall-clock percentiles and the process CPU time per call (on a
/// busy machine the wall clock mostly measures the wait for a core).
async fn time_it<F, Fut>(label: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), shipmate::engine::EngineError>>,
{
    const RUNS: u32 = 200;
    // The bot's own workers tick meanwhile: their CPU per second, measured idle, is taken off.
    let idle = Duration::from_secs(3);
    let idle_before = process_cpu();
    tokio::time::sleep(idle).await;
    let background_per_second = process_cpu().saturating_sub(idle_before).as_secs_f64() / 3.0;
    let mut samples = Vec::new();
    let cpu_before = process_cpu();
    let loop_started = std::time::Instant::now();
    for _ in 0..RUNS {
        let started = std::time::Instant::now();
        call().await.expect("dora");
        samples.push(started.elapsed());
    }
    let background = loop_started.elapsed().as_secs_f64() * background_per_second;
    let cpu = process_cpu().saturating_sub(cpu_before).as_secs_f64() - background;
    let cpu_per_call = Duration::from_secs_f64(cpu.max(0.0) / f64::from(RUNS));
    samples.sort();
    let at = |p: usize| samples[(p * samples.len()).div_ceil(100).max(1) - 1];
    println!(
        "{label}: wall p50 {:?} p99 {:?} max {:?}; CPU {cpu_per_call:?} per call \
         ({RUNS} runs; background {:.0} ms/s taken off)",
        at(50),
        at(99),
        samples[samples.len() - 1],
        background_per_second * 1000.0,
    );
}

/// User + system CPU time of this process so far, from /proc/self/stat (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// `promotions` ended promotions over the two years before the start, oldest first: each release
/// of api goes dev → staging → production, each of web staging → production, a few hours apart;
/// 80% succeed, 8% fail, 4% are rolled back later, 3% are rollbacks, the rest were rejected.
async fn seed(bot: &TestBot, promotions: usize) {
    use sqlx::Connection;
    let pipelines: [(&str, &[&str]); 2] = [
        ("api", &["dev", "staging", "production"]),
        ("web", &["staging", "production"]),
    ];
    let span_ms = chrono::Duration::days(730).num_milliseconds();
    let start_ms = (start_time() - chrono::Duration::days(730)).timestamp_millis();
    let mut releases = Vec::new();
    let mut rows = Vec::new();
    let mut version = 0;
    while rows.len() < promotions {
        version += 1;
        for (service, environments) in pipelines {
            let created = start_ms + span_ms * rows.len() as i64 / promotions as i64;
            releases.push(format!(
                "('{service}', '1.0.{version}', 'api:ci', {created})"
            ));
            for (step, environment) in environments.iter().enumerate() {
                let n = rows.len();
                let end = created + (step as i64 + 1) * 2 * HOUR * 1000;
                let (state, rollback, reason) = match n % 100 {
                    0..=79 => ("succeeded", 0, "NULL"),
                    80..=87 => ("failed", 0, "'exit 3'"),
                    88..=91 => ("rolled_back", 0, "'replaced by a rollback'"),
                    92..=94 => ("succeeded", 1, "NULL"),
                    _ => ("rejected", 0, "'no'"),
                };
                let started = if state == "rejected" {
                    "NULL".to_string()
                } else {
                    (end - 600_000).to_string()
                };
                rows.push(format!(
                    "('{service}', '1.0.{version}', '{environment}', '{state}', 'api:ci', \
                     {rollback}, 0, {reason}, {created}, {end}, {started}, {end})"
                ));
            }
        }
    }
    rows.truncate(promotions);
    let mut db = bot.raw_connection().await;
    let mut tx = db.begin().await.expect("begin");
    for chunk in releases.chunks(500) {
        let sql = format!(
            "INSERT INTO releases (service, version, created_by, created_at) VALUES {}",
            chunk.join(", ")
        );
        sqlx::query(&sql).execute(&mut *tx).await.expect("releases");
    }
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO promotions (service, version, environment, state, requested_by, \
             is_rollback, required_approvals, reason, created_at, updated_at, started_at, \
             finished_at) VALUES {}",
            chunk.join(", ")
        );
        sqlx::query(&sql)
            .execute(&mut *tx)
            .await
            .expect("promotions");
    }
    tx.commit().await.expect("commit");
    // PostgreSQL's autovacuum would have analysed a table this size; SQLite is measured as the
    // bot leaves it, without statistics.
    if bot.database_url.starts_with("postgres") {
        sqlx::query("ANALYZE")
            .execute(&mut db)
            .await
            .expect("analyze");
    }
}
