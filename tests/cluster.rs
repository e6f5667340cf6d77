//! Three real `shipmate serve` processes on one PostgreSQL database behave as one bot (SPEC §8):
//! one active promotion per environment whichever replica is asked, each deploy run once, an
//! approval on one replica starting a deploy on another at once, a killed replica's `command`
//! deploy dying with it and a remote deploy it watched finished by another, one Discord gateway
//! session at a time with failover, and `GET /api/v1/cluster`. On SQLite, one serve per file.
//!
//! The PostgreSQL tests skip with a notice when SHIPMATE_TEST_POSTGRES_URL is not set.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Method;
use serde_json::Value;
use support::cluster::{
    group_members, now_ms, running, serve_expecting_exit, shared_config_sandbox, start_replica,
    Cluster, RECORD_SCRIPT,
};
use support::discord::embed_title;
use support::fake_discord::{self, FakeDiscord, CHANNEL_ID, GUILD_ID};
use support::fake_webhook::{FakeWebhook, Mode, SECRET};
use support::serve::poll;
use support::*;

/// How long work a killed replica leased can wait for another: the deploy lease, then a sweep.
const LEASE_RUNS_OUT: Duration = Duration::from_secs(100);
/// SPEC §8: another replica holds the gateway within 30 s of the holder's death.
const GATEWAY_TAKEOVER: Duration = Duration::from_secs(30);
/// A replica runs this many deploys at once (`MAX_CONCURRENT_DEPLOYS`, src/engine/deploys.rs).
const DEPLOY_SLOTS: usize = 16;

/// Holds its deploy slot until the file `open` exists.
const HOLD_SCRIPT: &str = r#"#!/bin/sh
while [ ! -f open ]; do sleep 0.5; done
"#;

/// Writes its pid (its process group's id) and its parent's (the replica running it); then, while
/// the file `hold` exists, sleeps in a child that the parent-death signal does not reach.
const LINGER_SCRIPT: &str = r#"#!/bin/sh
echo "$$ $PPID" > "pid-$SHIPMATE_PROMOTION_ID"
if [ -f hold ]; then sleep 600; fi
"#;

/// A `[[service]]` with one environment deploying with `script`, needing `approvals` leads.
fn service(name: &str, environment: &str, script: &str, approvals: u32) -> String {
    let approvals = match approvals {
        0 => String::new(),
        n => format!("  approvals = {{ required = {n}, from = \"leads\", expires = \"24h\" }}\n"),
    };
    format!(
        r#"
[[service]]
name = "{name}"
  [[service.environment]]
  name = "{environment}"
  backend = {{ kind = "command", run = ["{script}"], timeout = "900s" }}
{approvals}"#
    )
}

/// Service `hooked`, environment `production`, deployed through `hook`.
fn hooked(hook: &FakeWebhook) -> String {
    format!(
        r#"
[[service]]
name = "hooked"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "webhook", url = "{url}", secret = "{SECRET}", timeout = "300s", poll_every = "100ms" }}
"#,
        url = hook.url
    )
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

// ---- one active promotion per environment ----

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_promotions_of_one_environment_open_exactly_one() {
    let Some(cluster) = Cluster::builder()
        .config(&service("race", "production", "./deploy.sh", 1))
        .start(3)
        .await
    else {
        return;
    };
    let cluster = &cluster;
    let answers = join_all((0..20).map(|n| async move {
        let version = format!("2.0.{n}");
        let answer = cluster
            .promote(cluster.round_robin(n), "race", &version, "production")
            .await;
        (cluster.name(cluster.round_robin(n)), answer)
    }))
    .await;

    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(_, (status, _))| *status == 202)
        .map(|(_, (_, body))| body)
        .collect();
    assert_eq!(accepted.len(), 1, "exactly one is taken: {answers:#?}");
    let winner = accepted[0]["id"].as_i64().expect("id");
    let version = accepted[0]["version"].as_str().expect("version");
    let active = format!("#{winner} race {version} → production");
    for (replica, (status, body)) in answers.iter().filter(|(_, (status, _))| *status != 202) {
        assert_eq!(*status, 409, "{replica}: {body}");
        assert_eq!(body["error"]["code"], "conflict", "{replica}: {body}");
        let text = message(body);
        assert!(
            text.contains("race production already has a promotion in progress"),
            "{replica}: {text}"
        );
        assert!(text.contains(&active), "names the active one: {text}");
        assert!(
            text.contains(&format!("/release cancel {winner}")),
            "{text}"
        );
    }

    assert_eq!(
        cluster.promotion(winner).await["state"],
        "awaiting_approval"
    );
    let (status, history) = cluster
        .request_as(
            1,
            CI_TOKEN,
            Method::GET,
            "/api/v1/services/race/history?limit=50",
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(1),
        "one promotion stored: {history:#}"
    );
}

// ---- every deploy once ----

#[tokio::test(flavor = "multi_thread")]
async fn fifty_promotions_spread_over_three_replicas_each_deploy_exactly_once() {
    let services: String = (0..50)
        .map(|n| service(&format!("svc{n:02}"), "staging", "./record.sh", 0))
        .collect();
    let Some(cluster) = Cluster::builder()
        .config(&services)
        .script("record.sh", RECORD_SCRIPT)
        .start(3)
        .await
    else {
        return;
    };
    let cluster = &cluster;
    let started = Instant::now();
    let answers = join_all((0..50).map(|n| async move {
        let service = format!("svc{n:02}");
        cluster
            .promote(cluster.round_robin(n), &service, "1.0.0", "staging")
            .await
    }))
    .await;
    let ids: BTreeSet<i64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["id"].as_i64().expect("id")
        })
        .collect();
    assert_eq!(ids.len(), 50);
    for id in &ids {
        cluster
            .wait_for_state(*id, "succeeded", Duration::from_secs(60))
            .await;
    }
    let elapsed = started.elapsed();

    let runs = cluster.runs();
    assert_eq!(runs.len(), 50, "one run per promotion: {runs:#?}");
    let services: BTreeSet<&str> = runs.iter().map(|run| run.service.as_str()).collect();
    assert_eq!(services.len(), 50, "each service deployed once: {runs:#?}");
    let promotions: BTreeSet<i64> = runs.iter().map(|run| run.promotion).collect();
    assert_eq!(promotions, ids);
    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for run in &runs {
        let replica = cluster
            .replica_of_pid(run.replica_pid)
            .unwrap_or_else(|| panic!("{run:?} was run by no replica"));
        *per_replica.entry(cluster.name(replica)).or_default() += 1;
    }
    eprintln!("50 promotions succeeded in {elapsed:?}; deploys per replica: {per_replica:?}");
}

// ---- wake-ups across replicas ----

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_on_one_replica_starts_the_deploy_on_another_at_once() {
    let mut config: String = (0..DEPLOY_SLOTS)
        .map(|n| service(&format!("hold{n:02}"), "staging", "./hold.sh", 0))
        .collect();
    config.push_str(&service("gated", "production", "./record.sh", 1));
    let Some(mut cluster) = Cluster::builder()
        .config(&config)
        .script("hold.sh", HOLD_SCRIPT)
        .script("record.sh", RECORD_SCRIPT)
        .start(1)
        .await
    else {
        return;
    };
    // Replica A, alone, fills every deploy slot it has, so the deploy the approval starts can
    // only run on B or C, which learn of it from the database.
    let mut holding = Vec::new();
    for n in 0..DEPLOY_SLOTS {
        let service = format!("hold{n:02}");
        holding.push(cluster.promote_id(0, &service, "1.0.0", "staging").await);
    }
    for id in &holding {
        cluster
            .wait_for_state(*id, "deploying", Duration::from_secs(30))
            .await;
    }
    let gated = cluster.promote_id(0, "gated", "1.0.0", "production").await;
    assert_eq!(cluster.promotion(gated).await["state"], "awaiting_approval");
    cluster.add_replica().await;
    cluster.add_replica().await;

    let approved_ms = now_ms();
    let (status, body) = cluster.act(0, gated, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let run = cluster
        .wait_run(gated, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("the approved deploy never ran:\n{}", cluster.logs()));
    let latency = run.started_ms - approved_ms;
    let runner = cluster.replica_of_pid(run.replica_pid);
    eprintln!(
        "approval on replica-a → deploy started on {:?} after {latency} ms",
        runner.map(|index| cluster.name(index))
    );
    assert!(
        matches!(runner, Some(1 | 2)),
        "the deploy ran on {runner:?}, not on replica B or C (A's {DEPLOY_SLOTS} deploy slots were taken; did MAX_CONCURRENT_DEPLOYS change?)"
    );
    assert!(
        latency < 2000,
        "the deploy started {latency} ms after the approval: the other replicas waited for a poll instead of being woken"
    );

    std::fs::write(cluster.path("open"), "").expect("open the held deploys");
    for id in holding.iter().chain([&gated]) {
        cluster
            .wait_for_state(*id, "succeeded", Duration::from_secs(30))
            .await;
    }
}

// ---- a replica killed mid-deploy ----

/// The script's (pid, parent pid) from its `pid-<id>` file, once written.
fn script_pids(cluster: &Cluster, id: i64) -> (i32, u32) {
    let path = cluster.path(&format!("pid-{id}"));
    let read = || {
        let text = std::fs::read_to_string(&path).ok()?;
        let (pid, parent) = text.trim().split_once(' ')?;
        Some((pid.parse().ok()?, parent.parse().ok()?))
    };
    assert!(
        poll(Duration::from_secs(20), || read().is_some()),
        "the deploy script of #{id} never started:\n{}",
        cluster.logs()
    );
    read().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_deploy_dies_with_its_killed_replica_is_interrupted_and_retried_on_another() {
    let Some(mut cluster) = Cluster::builder()
        .config(&service("linger", "staging", "./linger.sh", 0))
        .script("linger.sh", LINGER_SCRIPT)
        .start(3)
        .await
    else {
        return;
    };
    std::fs::write(cluster.path("hold"), "").expect("hold the first deploy");
    let id = cluster.promote_id(1, "linger", "1.0.0", "staging").await;
    let (leader, parent) = script_pids(&cluster, id);
    let runner = cluster
        .replica_of_pid(parent)
        .unwrap_or_else(|| panic!("the script's parent {parent} is no replica"));
    assert!(
        poll(Duration::from_secs(10), || group_members(leader).len() >= 2),
        "the script's sleep never started"
    );
    // Killed mid-deploy: once the replica has recorded the script's process group. (Killed in
    // the instant between the fork and that record, the leader still dies by its parent-death
    // signal, but nothing would know to kill its children.)
    let recorded = format!("SELECT COUNT(*) FROM deploy_processes WHERE promotion_id = {id}");
    let recorded = wait_until(Duration::from_secs(10), || async {
        cluster.sql_count(&recorded).await == 1
    })
    .await;
    assert!(recorded, "the script's process group was never recorded");
    // The retry must not linger.
    std::fs::remove_file(cluster.path("hold")).expect("release the hold");

    cluster.kill(runner);
    let killed_at = Instant::now();
    assert!(
        poll(Duration::from_secs(5), || !running(leader)),
        "the deploy script outlived its SIGKILLed replica"
    );
    let interrupted = cluster
        .wait_for_state(id, "interrupted", LEASE_RUNS_OUT)
        .await;
    eprintln!(
        "#{id} interrupted {:?} after {} was killed",
        killed_at.elapsed(),
        cluster.name(runner)
    );
    assert!(
        interrupted["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "an interrupted promotion says why: {interrupted:#}"
    );
    let events = interrupted["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "interrupted" && e["actor"] == "shipmate:bot"),
        "{events:#?}"
    );
    // The script's child, beyond the parent-death signal's reach, was killed by a replica's sweep.
    assert!(
        poll(Duration::from_secs(5), || group_members(leader).is_empty()),
        "left of the killed deploy: {:?}\n{}",
        group_members(leader),
        cluster.logs()
    );

    let other = cluster.round_robin(0);
    let (status, retry) = cluster.act(other, id, "retry", CI_TOKEN).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["retry_of"], id, "{retry:#}");
    let retry_id = retry["id"].as_i64().expect("retry id");
    cluster
        .wait_for_state(retry_id, "succeeded", Duration::from_secs(30))
        .await;
    let (_, retry_parent) = script_pids(&cluster, retry_id);
    let retry_runner = cluster.replica_of_pid(retry_parent);
    assert!(
        retry_runner.is_some_and(|index| cluster.live().contains(&index)),
        "the retry ran on {retry_runner:?}"
    );
    assert_eq!(cluster.promotion(id).await["state"], "interrupted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_deploy_watched_by_a_killed_replica_is_finished_by_another_once() {
    let hook = FakeWebhook::start(Mode::Async {
        polls: None,
        fail: None,
    })
    .await;
    let Some(mut cluster) = Cluster::builder().config(&hooked(&hook)).start(1).await else {
        return;
    };
    // Replica A, alone, starts the deployment and watches it; then B and C join and A dies.
    let id = cluster.promote_id(0, "hooked", "9.0.0", "production").await;
    let watched = wait_until(Duration::from_secs(20), || async { hook.polls() >= 2 }).await;
    assert!(watched, "never polled:\n{}", cluster.logs());
    cluster.add_replica().await;
    cluster.add_replica().await;
    cluster.kill(0);
    let killed_at = Instant::now();
    let polls_at_kill = hook.polls();

    let resumed = wait_until(LEASE_RUNS_OUT, || async { hook.polls() > polls_at_kill }).await;
    assert!(
        resumed,
        "no replica took the deploy over:\n{}",
        cluster.logs()
    );
    eprintln!(
        "#{id} watched again {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(cluster.promotion(id).await["state"], "deploying");
    hook.finish(None);
    cluster
        .wait_for_state(id, "succeeded", Duration::from_secs(30))
        .await;

    let keys: BTreeSet<_> = hook
        .events("deploy")
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 1, "one distinct Idempotency-Key: {keys:?}");
    assert_eq!(hook.deployments().len(), 1, "one deployment started");
    assert!(hook.events("cancel").is_empty(), "nothing was cancelled");
}

// ---- the Discord gateway ----

/// The live replica the cluster view names as the gateway holder, once the fake has exactly one
/// session open and the holder is not `not`; fails after `timeout`.
async fn wait_for_holder(
    cluster: &Cluster,
    fake: &FakeDiscord,
    not: Option<usize>,
    timeout: Duration,
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let last = cluster.cluster_view(cluster.round_robin(0)).await;
        let holder = last["gateway_holder"].as_str().and_then(|id| {
            let entry = last["replicas"]
                .as_array()?
                .iter()
                .find(|r| r["id"] == id)?;
            let pid = u32::try_from(entry["pid"].as_i64()?).ok()?;
            cluster.replica_of_pid(pid)
        });
        if let Some(holder) = holder.filter(|h| Some(*h) != not && cluster.live().contains(h)) {
            if fake.open_sessions() == 1 {
                return holder;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single live gateway holder within {timeout:?}: {} session(s) open; cluster view: {last:#}\n{}",
            fake.open_sessions(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The card of promotion `id` on the fake, once its embed satisfies `shows`.
async fn card_where(
    fake: &FakeDiscord,
    id: i64,
    shows: impl Fn(&fake_discord::Message) -> bool,
) -> fake_discord::Message {
    let prefix = format!("#{id} ");
    let card = |messages: Vec<fake_discord::Message>| {
        messages
            .into_iter()
            .find(|m| embed_title(m).contains(&prefix) && shows(m))
    };
    let found = wait_until(Duration::from_secs(20), || {
        let hit = card(fake.messages(CHANNEL_ID)).is_some();
        async move { hit }
    })
    .await;
    assert!(
        found,
        "card #{id} never showed what was awaited: {:#?}",
        fake.messages(CHANNEL_ID)
    );
    card(fake.messages(CHANNEL_ID)).expect("found above")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_holds_the_discord_gateway_and_another_takes_over_when_it_dies() {
    let fake = FakeDiscord::start(DISCORD_BOT_TOKEN, DISCORD_APP_ID).await;
    let Some(mut cluster) = Cluster::builder().discord(&fake.api_url()).start(3).await else {
        return;
    };
    let holder = wait_for_holder(&cluster, &fake, None, GATEWAY_TAKEOVER).await;

    // api 1.4.2 waits for two leads' approval in production, its card on Discord.
    for environment in ["dev", "staging"] {
        let id = cluster.promote_id(1, "api", "1.4.2", environment).await;
        cluster
            .wait_for_state(id, "succeeded", Duration::from_secs(30))
            .await;
    }
    let id = cluster.promote_id(2, "api", "1.4.2", "production").await;
    let card = card_where(&fake, id, |m| {
        m.embeds[0]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("**awaiting approval**"))
    })
    .await;

    cluster.kill(holder);
    let killed_at = Instant::now();
    let successor = wait_for_holder(&cluster, &fake, Some(holder), GATEWAY_TAKEOVER).await;
    eprintln!(
        "gateway: {} killed, {} holds it after {:?}",
        cluster.name(holder),
        cluster.name(successor),
        killed_at.elapsed()
    );

    // A lead's ✅ reaches the new holder and counts once.
    let reaction = fake.reaction_add(
        DISCORD_LEAD2,
        &[DISCORD_LEADS_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        card.id,
        "✅",
    );
    fake.dispatch("MESSAGE_REACTION_ADD", reaction).await;
    card_where(&fake, id, |m| {
        support::discord::embed_text(m).contains("1/2")
    })
    .await;
    let promotion = cluster.promotion(id).await;
    assert_eq!(promotion["state"], "awaiting_approval", "{promotion:#}");
    assert_eq!(
        promotion["approvals"].as_array().map(Vec::len),
        Some(1),
        "{promotion:#}"
    );
    let approvals = promotion["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "approval")
        .count();
    assert_eq!(approvals, 1, "one approval in the audit: {promotion:#}");
    assert_eq!(
        fake.max_open_sessions(),
        1,
        "more than one replica held a gateway session at one time"
    );
}

// ---- GET /api/v1/cluster ----

/// Whether `view` lists exactly the replicas `pids`, each described, with `runner` running a
/// job and the others none.
fn lists(view: &Value, pids: &BTreeSet<i64>, runner: i64) -> bool {
    let Some(replicas) = view["replicas"].as_array() else {
        return false;
    };
    let listed: BTreeSet<i64> = replicas.iter().filter_map(|r| r["pid"].as_i64()).collect();
    let described = replicas.iter().all(|r| {
        ["id", "host", "started_at", "last_seen"]
            .iter()
            .all(|key| r[*key].as_str().is_some_and(|text| !text.is_empty()))
            && r["holds_gateway"].is_boolean()
    });
    let jobs_right = replicas.iter().all(|r| {
        let jobs = r["jobs_running"].as_i64().unwrap_or(-1);
        if r["pid"] == runner {
            jobs >= 1
        } else {
            jobs == 0
        }
    });
    listed == *pids && replicas.len() == pids.len() && described && jobs_right
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_view_lists_every_replica_and_which_runs_a_deploy() {
    let Some(mut cluster) = Cluster::builder()
        .config(&service("linger", "staging", "./linger.sh", 0))
        .script("linger.sh", LINGER_SCRIPT)
        .start(3)
        .await
    else {
        return;
    };
    let bot = cluster.bot(0);
    let (status, body) = send_json(
        &bot.http,
        Method::GET,
        &format!("{}/api/v1/cluster", bot.base),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401, "the cluster view needs a token: {body}");

    std::fs::write(cluster.path("hold"), "").expect("hold the deploy");
    let id = cluster.promote_id(2, "linger", "1.0.0", "staging").await;
    let (_, parent) = script_pids(&cluster, id);
    let runner = i64::from(parent);
    let mut pids: BTreeSet<i64> = (0..cluster.len())
        .map(|index| i64::from(cluster.pid(index)))
        .collect();
    for index in 0..cluster.len() {
        wait_listing(&cluster, index, &pids, runner).await;
    }

    // A dead replica leaves the list.
    let victim = (0..cluster.len())
        .find(|&index| i64::from(cluster.pid(index)) != runner)
        .expect("a replica not running the deploy");
    pids.remove(&i64::from(cluster.pid(victim)));
    cluster.kill(victim);
    wait_listing(&cluster, cluster.round_robin(0), &pids, runner).await;
}

/// Waits until replica `viewer`'s cluster view [`lists`] `pids` with `runner`'s job.
async fn wait_listing(cluster: &Cluster, viewer: usize, pids: &BTreeSet<i64>, runner: i64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let view = cluster.cluster_view(viewer).await;
        if lists(&view, pids, runner) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never listed exactly the replicas {pids:?} with a deploy on pid {runner}: {view:#}",
            cluster.name(viewer)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- SQLite: one serve per database file ----

#[tokio::test(flavor = "multi_thread")]
async fn a_second_serve_on_the_same_sqlite_file_refuses_to_start_and_names_the_file() {
    let sandbox = shared_config_sandbox(RECORDING_SCRIPT, |database_url| {
        test_config(database_url, "./deploy.sh")
    });
    let mut first = start_replica(&sandbox, "first").await;

    let output = serve_expecting_exit(&sandbox, Duration::from_secs(30))
        .unwrap_or_else(|why| panic!("a second serve on the same SQLite file started: {why}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{}: {text}", output.status);
    let file = sandbox.path("bot.db").display().to_string();
    assert!(text.contains(&file), "the refusal names {file}: {text}");
    let (status, body) = first.request(Method::GET, "/api/v1/services", None).await;
    assert_eq!(status, 200, "the first serve goes on: {body}");

    // The claim dies with its process: after a crash the bot starts again on the file.
    first.crash();
    let again = start_replica(&sandbox, "again").await;
    let (status, body) = again.request(Method::GET, "/api/v1/services", None).await;
    assert_eq!(status, 200, "{body}");
}
