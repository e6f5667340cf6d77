//! The database facts several replicas rest on (SPEC §8), on the real PostgreSQL (skipped with a
//! notice without SHIPMATE_TEST_POSTGRES_URL) and, where SQLite has its own answer, on SQLite:
//! the gateway lock, `LISTEN/NOTIFY` wake-ups, heartbeat rows, and one `serve` per SQLite file.
//! Whole processes are driven in `tests/cluster.rs`.

mod support;

use std::time::Duration;

use chrono::Utc;
use shipmate::domain::identity::Identity;
use shipmate::domain::promotion::Stage;
use shipmate::domain::version::Version;
use shipmate::store::{
    lock_for_serving, NewPromotion, NewRelease, ReplicaBeat, Store, StoreError, Wakeup,
};
use sqlx::Connection;

const PATIENCE: Duration = Duration::from_secs(10);

async fn postgres_store() -> Option<(String, Store)> {
    let url = support::postgres_database().await?;
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some((url, store))
}

#[tokio::test]
async fn one_replica_at_a_time_holds_the_gateway_lock_and_a_dead_holder_frees_it() {
    let Some((url, first)) = postgres_store().await else {
        return;
    };
    let second = Store::connect(&url)
        .await
        .expect("connect a second replica");

    let mut held = first
        .try_gateway_lock()
        .await
        .expect("try")
        .expect("the first replica takes the free lock");
    assert!(held.still_held().await);
    assert!(
        second.try_gateway_lock().await.expect("try").is_none(),
        "a second replica must not get the lock while it is held"
    );

    // The holder's session dies (as when its process is killed): the server frees the lock,
    // the old holder sees it is gone, and the other replica gets it.
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("admin");
    let terminated: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS killed",
    )
    .fetch_one(&mut admin)
    .await
    .expect("terminate the holder's session");
    assert_eq!(
        terminated, 1,
        "exactly one session of this database held an advisory lock"
    );
    assert!(
        !held.still_held().await,
        "a holder whose session died must know it lost the lock"
    );
    let taken_over = support::wait_until(PATIENCE, || async {
        second.try_gateway_lock().await.ok().flatten().is_some()
    })
    .await;
    assert!(taken_over, "the lock was not free after its holder died");
}

#[tokio::test]
async fn dropping_the_lock_lets_another_replica_take_it() {
    let Some((url, first)) = postgres_store().await else {
        return;
    };
    let second = Store::connect(&url)
        .await
        .expect("connect a second replica");
    let held = first.try_gateway_lock().await.expect("try").expect("free");
    assert!(second.try_gateway_lock().await.expect("try").is_none());
    drop(held);
    let taken_over = support::wait_until(PATIENCE, || async {
        second.try_gateway_lock().await.ok().flatten().is_some()
    })
    .await;
    assert!(
        taken_over,
        "a dropped lock must be free for the next replica"
    );
}

#[tokio::test]
async fn a_job_committed_by_one_replica_wakes_another_at_commit_and_not_before() {
    let Some((url, writer)) = postgres_store().await else {
        return;
    };
    let listener_store = Store::connect(&url).await.expect("connect the listener");
    let mut wakeups = listener_store
        .job_wakeups()
        .await
        .expect("listen")
        .expect("PostgreSQL has a listener");

    let ci = Identity::new("api", "ci");
    let version: Version = "1.0.0".parse().expect("version");
    let mut tx = writer.begin().await.expect("begin");
    tx.insert_release(NewRelease {
        service: "api",
        version: &version,
        commit: None,
        notes: None,
        created_by: &ci,
        at: Utc::now(),
    })
    .await
    .expect("release");
    let promotion = tx
        .insert_promotion(NewPromotion {
            service: "api",
            version: &version,
            environment: "dev",
            stage: Stage::Approved,
            requested_by: &ci,
            rollback: false,
            previous_version: None,
            required_approvals: 0,
            force_reason: None,
            hotfix_reason: None,
            retry_of: None,
            expires_at: None,
            at: Utc::now(),
            digest: None,
        })
        .await
        .expect("promotion");
    assert!(tx
        .enqueue_deploy(promotion.id, Utc::now())
        .await
        .expect("enqueue"));
    // Nothing is announced before the commit: another replica must not look for a job it
    // cannot see yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wakeups.next())
            .await
            .is_err(),
        "a wake-up arrived before the commit"
    );
    tx.commit().await.expect("commit");
    let woken = tokio::time::timeout(PATIENCE, wakeups.next())
        .await
        .expect("a wake-up within the patience")
        .expect("listener");
    assert_eq!(woken, Wakeup::JobReady);
}

#[tokio::test]
async fn heartbeats_list_live_replicas_with_the_gateway_holder() {
    let Some((_, store)) = postgres_store().await else {
        return;
    };
    let started = Utc::now();
    for (id, gateway) in [("replica-a", false), ("replica-b", true)] {
        store
            .replica_heartbeat(&ReplicaBeat {
                id,
                host: "test-host",
                pid: 42,
                started_at: started,
                holds_gateway: gateway,
            })
            .await
            .expect("beat");
    }
    store
        .gateway_taken_by("replica-a")
        .await
        .expect("replica-a takes the gateway");
    let replicas = store.replicas(Duration::from_secs(15)).await.expect("list");
    let holders: Vec<&str> = replicas
        .iter()
        .filter(|r| r.holds_gateway)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(replicas.len(), 2);
    assert_eq!(
        holders,
        ["replica-a"],
        "the new holder replaces the old one"
    );

    // A replica that stops cleanly removes its row; one never seen again is pruned.
    store
        .prune_replicas(Duration::from_secs(600), Some("replica-b"))
        .await
        .expect("prune");
    let ids: Vec<String> = store
        .replicas(Duration::from_secs(15))
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["replica-a"]);
    assert_eq!(
        store
            .prune_replicas(Duration::ZERO, None)
            .await
            .expect("prune"),
        1,
        "a row older than the limit is pruned"
    );
}

#[tokio::test]
async fn a_second_serve_lock_on_a_sqlite_file_is_refused_naming_the_file_and_the_holder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bot.db");
    let url = format!("sqlite://{}", file.display());
    let held = lock_for_serving(&url, "host-a")
        .expect("lock")
        .expect("a file database is locked");
    let refusal = lock_for_serving(&url, "host-b").expect_err("a second lock must be refused");
    let StoreError::Locked(message) = refusal else {
        panic!("unexpected error: {refusal}");
    };
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())) && message.contains("host-a"),
        "{message}"
    );
    assert!(message.contains("PostgreSQL"), "{message}");
    drop(held);
    assert!(
        lock_for_serving(&url, "host-b")
            .expect("free again")
            .is_some(),
        "the lock goes with its holder"
    );
    assert!(
        lock_for_serving("postgres://nobody@127.0.0.1/none", "host")
            .expect("no lock")
            .is_none(),
        "PostgreSQL takes any number of replicas"
    );
}
