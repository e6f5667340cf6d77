//! The `prometheus` check's probe against a real Prometheus scraping a real Pushgateway
//! (tests/support/prometheus.rs): pushed values are read, a value flip is seen, and a missing
//! series, a query that returns many series and a malformed query read as Prometheus answers
//! them. Skipped with a notice where the Debian packages are not installed, failed under CI=true.

mod support;

use std::time::{Duration, Instant};

use shipmate::deploy::DeployRequest;
use shipmate::domain::rollout::Step;
use shipmate::domain::verification::{judge, CheckKind, CheckSpec, Reading, Verdict};
use shipmate::verify::{LiveProber, ProbeTarget, Prober};
use support::prometheus::Prometheus;
use support::rollout::{calls, STEP_SCRIPT};
use tokio_util::sync::CancellationToken;

/// A pushed value shows about 2.5 s after the push; this is the bound, not the expectation.
const SHOWS_WITHIN: Duration = Duration::from_secs(15);
const JOB: &str = "canary_probe";

fn target() -> ProbeTarget {
    ProbeTarget {
        request: DeployRequest {
            promotion_id: 42,
            attempt: 1,
            digest: None,
            service: "api".to_string(),
            version: "1.4.2".to_string(),
            environment: "production".to_string(),
            previous_version: Some("1.4.1".to_string()),
            requested_by: "slack:U1".to_string(),
            rollback: false,
            commit: None,
            step: Step::FULL,
        },
    }
}

fn check(prometheus: &Prometheus, query: &str) -> CheckSpec {
    let kind = CheckKind::Prometheus {
        url: prometheus.url.clone(),
        query: query.to_string(),
        min: None,
        max: Some(0.01),
    };
    CheckSpec {
        name: CheckSpec::default_name(&kind, 1),
        kind,
        duration: Duration::from_secs(60),
        every: Duration::from_secs(5),
    }
}

/// One gauge per track of the canary's version: the query must pick one.
fn gauges(canary: f64) -> String {
    format!(
        "shipmate_test_error_ratio{{service=\"api\",version=\"1.4.2\",track=\"canary\"}} {canary}\n\
         shipmate_test_error_ratio{{service=\"api\",version=\"1.4.2\",track=\"stable\"}} 0\n"
    )
}

#[tokio::test]
async fn the_prober_reads_pushed_values_from_a_real_prometheus() {
    let begun = Instant::now();
    let Some(prometheus) = Prometheus::start().await else {
        return;
    };
    let started = begun.elapsed();
    let prober = LiveProber::new(std::env::temp_dir(), reqwest::Client::new());
    let target = target();
    let probe = |query: &str| {
        let check = check(&prometheus, query);
        let prober = &prober;
        let target = &target;
        async move {
            let reading = prober.probe(&check, target, CancellationToken::new()).await;
            let verdict = judge(&check.kind, &reading);
            (reading, verdict)
        }
    };
    let canary =
        r#"max(shipmate_test_error_ratio{service="{service}",version="{version}",track="canary"})"#;
    let seen = |value: f64| move |got: f64| got == value;

    prometheus.push(JOB, &gauges(0.002)).await;
    prometheus
        .wait_for_value(
            r#"shipmate_test_error_ratio{track="canary"}"#,
            seen(0.002),
            SHOWS_WITHIN,
        )
        .await;
    let first_seen = begun.elapsed();
    assert_eq!(
        probe(canary).await,
        (Reading::Value(0.002), Verdict::Pass),
        "a good value within max"
    );

    prometheus.push(JOB, &gauges(0.034)).await;
    prometheus
        .wait_for_value(
            r#"shipmate_test_error_ratio{track="canary"}"#,
            seen(0.034),
            SHOWS_WITHIN,
        )
        .await;
    assert_eq!(
        probe(canary).await,
        (
            Reading::Value(0.034),
            Verdict::Fail("0.034 > max 0.01".to_string())
        ),
        "the bad value after the flip"
    );

    let (reading, verdict) =
        probe(r#"shipmate_test_error_ratio{version="{previous_version}"}"#).await;
    assert_eq!(
        reading,
        Reading::NoData,
        "no series of the previous version"
    );
    assert!(matches!(verdict, Verdict::Inconclusive(_)), "{verdict:?}");

    let (reading, _) = probe(r#"shipmate_test_error_ratio{version="{version}"}"#).await;
    assert_eq!(
        reading,
        Reading::Broken(
            "the query returned 2 series; make it return one, e.g. wrap it in sum(…)".to_string()
        )
    );

    let (reading, verdict) = probe("sum(shipmate_test_error_ratio").await;
    match &reading {
        Reading::Broken(why) => assert!(
            why.starts_with("Prometheus refused the query (HTTP 400, bad_data):")
                && why.contains("parse error"),
            "{why}"
        ),
        other => panic!("a malformed query must be broken, got {other:?}"),
    }
    assert!(matches!(verdict, Verdict::Fail(_)), "{verdict:?}");

    eprintln!(
        "real prometheus: ready after {started:.1?}, first value seen after {first_seen:.1?}, done after {:.1?}",
        begun.elapsed()
    );
}

/// Service `shop` in production: a canary 10 → 50 → 100 gated by each version's error ratio.
fn canary_config(prometheus: &Prometheus) -> String {
    format!(
        r#"
[[service]]
name = "shop"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["./deploy.sh"], timeout = "30s" }}
  strategy = {{ kind = "canary", steps = [10, 50, 100], pause = "2s" }}
  verify = [ {{ kind = "prometheus", url = "{url}", query = 'max(shipmate_test_error_ratio{{version="{{version}}"}})', max = 0.01, for = "2s", every = "1s" }} ]
  on_failure = "rollback"
"#,
        url = prometheus.url
    )
}

async fn push_ratio(prometheus: &Prometheus, version: &str, ratio: f64) {
    let job = format!("shop_{}", version.replace('.', "_"));
    let text = format!("shipmate_test_error_ratio{{version=\"{version}\"}} {ratio}");
    prometheus.push(&job, &text).await;
    let query = format!("shipmate_test_error_ratio{{version=\"{version}\"}}");
    prometheus
        .wait_for_value(&query, move |got| got == ratio, SHOWS_WITHIN)
        .await;
}

/// SPEC §5.2 against a real Prometheus: good values let a canary walk its steps; a bad value
/// pushed while step 2 is held fails the gate and the old version is rolled back at once.
#[tokio::test]
async fn a_canary_gated_by_real_prometheus_rolls_back_when_the_error_ratio_climbs() {
    let begun = Instant::now();
    let Some(prometheus) = Prometheus::start().await else {
        return;
    };
    push_ratio(&prometheus, "1.0.0", 0.001).await;
    push_ratio(&prometheus, "1.1.0", 0.002).await;
    let bot = support::TestBot::builder()
        .script(STEP_SCRIPT)
        .real_clock()
        .config(&canary_config(&prometheus))
        .start()
        .await
        .expect("sqlite");

    let (status, first) = bot.promote(support::CI_TOKEN, "shop", "1.0.0", None).await;
    assert_eq!(status, 202, "{first}");
    let first = first["id"].as_i64().expect("id");
    bot.wait_for_state(first, "succeeded").await;
    assert_eq!(
        calls(&bot).len(),
        3,
        "three canary steps: {:?}",
        calls(&bot)
    );

    let (status, second) = bot.promote(support::CI_TOKEN, "shop", "1.1.0", None).await;
    assert_eq!(status, 202, "{second}");
    let second = second["id"].as_i64().expect("id");
    let in_step_two = support::wait_until(Duration::from_secs(20), || async {
        calls(&bot)
            .iter()
            .any(|c| c.starts_with("1.1.0 2/3 50 deploy"))
    })
    .await;
    assert!(in_step_two, "{:?}", calls(&bot));
    // Held before step 3 whatever Prometheus's delay: the checks keep running while paused.
    let (status, paused) = bot.say(support::CI_TOKEN, &format!("pause {second}")).await;
    assert_eq!(status, 200, "{paused}");
    push_ratio(&prometheus, "1.1.0", 0.05).await;

    let failed = bot.wait_for_state(second, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason
            .starts_with("prometheus check 1: 0.05 > max 0.01 at step 2/3 (50%); rolled back by #"),
        "{reason}"
    );
    let rolled_back = support::wait_until(Duration::from_secs(20), || async {
        calls(&bot)
            .iter()
            .any(|c| c == "1.0.0 1/1 100 deploy rollback=true")
    })
    .await;
    assert!(rolled_back, "{:?}", calls(&bot));
    assert!(
        !calls(&bot).iter().any(|c| c.starts_with("1.1.0 3/3")),
        "no step after the failed gate: {:?}",
        calls(&bot)
    );
    eprintln!("canary against real prometheus: {:.1?}", begun.elapsed());
}
