//! The store conformance suite: every test runs the same assertions on SQLite and, when
//! SHIPMATE_TEST_POSTGRES_URL is set, on PostgreSQL.

mod support;

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use shipmate::domain::approval::Approval;
use shipmate::domain::audit::{AuditEvent, AuditKind};
use shipmate::domain::identity::Identity;
use shipmate::domain::promotion::{Promotion, PromotionState, Stage, StageColumns};
use shipmate::domain::release::Release;
use shipmate::domain::version::Version;
use shipmate::store::{
    JobKind, JobLease, NewPromotion, NewRelease, ProcessRecord, Store, StoreError, Tx,
};
use sqlx::AnyPool;

static CI: LazyLock<Identity> = LazyLock::new(|| Identity::new("api", "ci"));
static LEAD: LazyLock<Identity> = LazyLock::new(|| Identity::new("slack", "ULEAD"));
static LEAD2: LazyLock<Identity> = LazyLock::new(|| Identity::new("slack", "ULEAD2"));

const LEASE: Duration = Duration::from_secs(60);

/// A fixed instant `minutes` after the suite's epoch.
fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 17, 9, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

fn v(text: &str) -> Version {
    text.parse().expect("test version")
}

/// One migrated database to run the assertions on.
struct Backend {
    label: String,
    url: String,
    store: Store,
}

async fn backends(dir: &Path) -> Vec<Backend> {
    let mut backends = Vec::new();
    for (db, url) in support::database_urls(dir).await {
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        backends.push(Backend {
            label: format!("{db:?}"),
            url,
            store,
        });
    }
    backends
}

/// A plain sqlx pool on the same database, for what the facade does not offer.
async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.expect("raw connect")
}

/// A stage in `state` with made-up data: whichever of a reason, a start at `t(1)` and an end at
/// `t(2)` the state has.
fn stage(state: PromotionState) -> Stage {
    let reason = || Some(format!("{state} in a test"));
    let fields = [
        (reason(), Some(t(1)), Some(t(2))),
        (reason(), None, Some(t(2))),
        (None, Some(t(1)), Some(t(2))),
        (None, Some(t(1)), None),
        (reason(), None, None),
        (None, None, None),
    ];
    fields
        .into_iter()
        .find_map(|(reason, started_at, finished_at)| {
            Stage::from_columns(StageColumns {
                state,
                reason,
                started_at,
                finished_at,
            })
            .ok()
        })
        .unwrap_or_else(|| panic!("no stage for {state}"))
}

/// A promotion requested by CI at `t(0)`, needing two approvals, without an approval deadline.
fn new_promotion<'a>(
    service: &'a str,
    version: &'a Version,
    environment: &'a str,
    state: PromotionState,
) -> NewPromotion<'a> {
    NewPromotion {
        service,
        version,
        environment,
        stage: stage(state),
        requested_by: &CI,
        rollback: false,
        previous_version: None,
        required_approvals: 2,
        force_reason: None,
        hotfix_reason: None,
        retry_of: None,
        expires_at: None,
        at: t(0),
        digest: None,
    }
}

/// Inserts a promotion in its own committed transaction.
async fn insert(store: &Store, new: NewPromotion<'_>) -> Result<Promotion, StoreError> {
    let mut tx = store.begin().await?;
    let record = tx.insert_promotion(new).await?;
    tx.commit().await?;
    Ok(record)
}

async fn promote(
    store: &Store,
    service: &str,
    version: &str,
    environment: &str,
    state: PromotionState,
) -> Promotion {
    insert(
        store,
        new_promotion(service, &v(version), environment, state),
    )
    .await
    .expect("insert promotion")
}

async fn update(
    store: &Store,
    updated: &Promotion,
    expected: PromotionState,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.update_promotion(updated, expected).await?;
    tx.commit().await
}

/// `promotion` moved to `state` at `at`, not yet written.
fn moved(promotion: &Promotion, state: PromotionState, at: DateTime<Utc>) -> Promotion {
    Promotion {
        stage: stage(state),
        updated_at: at,
        ..promotion.clone()
    }
}

async fn enqueue(store: &Store, promotion_id: i64, run_at: DateTime<Utc>) {
    let mut tx = store.begin().await.expect("begin");
    tx.enqueue_deploy(promotion_id, run_at)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
}

/// Claims due deploy jobs; returns (job id, promotion id, attempts).
async fn claim(
    store: &Store,
    worker: &str,
    now: DateTime<Utc>,
    limit: u32,
) -> Vec<(i64, i64, i64)> {
    store
        .claim_jobs(JobKind::Deploy, worker, now, LEASE, limit)
        .await
        .expect("claim jobs")
        .into_iter()
        .map(|job| (job.id, job.promotion_id, job.attempts))
        .collect()
}

/// Queues a deploy job for the promotion and claims it as `worker-log`: its lease.
async fn leased(store: &Store, promotion_id: i64) -> JobLease {
    enqueue(store, promotion_id, t(0)).await;
    let jobs = store
        .claim_jobs(JobKind::Deploy, "worker-log", t(0), LEASE, 100)
        .await
        .expect("claim");
    let job = jobs
        .iter()
        .find(|job| job.promotion_id == promotion_id)
        .expect("the job is claimed");
    job.lease("worker-log")
}

/// Ends every lease on the promotion's jobs, as the database's clock passing them would.
async fn expire_leases(url: &str, promotion_id: i64) {
    let raw = raw_pool(url).await;
    sqlx::query("UPDATE jobs SET lease_until = 0 WHERE promotion_id = $1")
        .bind(promotion_id)
        .execute(&raw)
        .await
        .expect("expire leases");
    raw.close().await;
}

async fn audit(
    store: &Store,
    promotion_id: Option<i64>,
    actor: &Identity,
    kind: AuditKind,
    minute: i64,
) {
    let mut tx = store.begin().await.expect("begin");
    tx.audit(
        promotion_id,
        actor,
        kind,
        &format!("{kind} detail"),
        t(minute),
    )
    .await
    .expect("audit");
    tx.commit().await.expect("commit");
}

async fn set_approval(
    store: &Store,
    promotion_id: i64,
    voter: &Identity,
    at: Option<DateTime<Utc>>,
) {
    let mut tx = store.begin().await.expect("begin");
    match at {
        Some(at) => tx.add_approval(promotion_id, voter, at).await,
        None => tx.remove_approval(promotion_id, voter).await,
    }
    .expect("approval");
    tx.commit().await.expect("commit");
}

async fn approvals(store: &Store, promotion_id: i64) -> Vec<Approval> {
    let mut tx = store.begin().await.expect("begin");
    tx.approvals(promotion_id).await.expect("approvals")
}

fn ids(promotions: &[Promotion]) -> Vec<i64> {
    promotions.iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn migrate_is_idempotent_and_readiness_follows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (db, url) in support::database_urls(dir.path()).await {
        let store = Store::connect(&url).await.expect("connect");
        assert!(!store.is_ready().await, "{db:?}: ready before migrate");
        store.migrate().await.expect("first migrate");
        assert!(store.is_ready().await, "{db:?}: not ready after migrate");
        store.migrate().await.expect("second migrate");
        assert!(store.is_ready().await, "{db:?}: not ready after re-migrate");
        store.close().await;

        let again = Store::connect(&url).await.expect("reconnect");
        assert!(
            again.is_ready().await,
            "{db:?}: a new connection sees it unmigrated"
        );
        again
            .migrate()
            .await
            .expect("migrate from a second process");
        assert!(
            again
                .record_inbound("slack", "Ev1", t(0))
                .await
                .expect("schema usable"),
            "{db:?}: schema not usable after re-migrate"
        );
        again.close().await;
    }
}

/// Inserts a release created by CI at `t(minute)`; `None` when it exists already.
async fn add_release(
    tx: &mut Tx,
    service: &str,
    version: &str,
    commit: &str,
    minute: i64,
) -> Option<Release> {
    tx.insert_release(NewRelease {
        service,
        version: &v(version),
        commit: Some(commit),
        notes: Some("fixes"),
        created_by: &CI,
        at: t(minute),
    })
    .await
    .expect("insert release")
}

#[tokio::test]
async fn releases_are_stored_and_listed_in_creation_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let mut tx = store.begin().await.expect("begin");
        // Created out of semver order, so creation order is observable.
        add_release(&mut tx, "api", "1.0.0", "aaa", 0).await;
        let created = add_release(&mut tx, "api", "1.2.0", "bbb", 1).await;
        add_release(&mut tx, "web", "3.0.0", "ccc", 2).await;
        add_release(&mut tx, "api", "1.1.0", "ddd", 3).await;
        let created = created.expect("a new release is inserted");
        let fields = (
            created.service.as_str(),
            &created.version,
            created.commit.as_deref(),
            created.notes.as_deref(),
            created.created_by.as_str(),
            created.created_at,
        );
        let expected = (
            "api",
            &v("1.2.0"),
            Some("bbb"),
            Some("fixes"),
            "api:ci",
            t(1),
        );
        assert_eq!(fields, expected, "{label}: inserted release");

        let duplicate = add_release(&mut tx, "api", "1.2.0", "eee", 4).await;
        assert_eq!(
            duplicate, None,
            "{label}: an existing release is not inserted again"
        );
        // The refused duplicate leaves the transaction usable (PostgreSQL aborts on errors).
        let found = tx.release("api", &v("1.2.0")).await.expect("lookup");
        assert_eq!(
            found.as_ref(),
            Some(&created),
            "{label}: lookup in the transaction"
        );
        tx.commit().await.expect("commit");

        let mut tx = store.begin().await.expect("begin");
        let found = tx.release("api", &v("1.2.0")).await.expect("lookup");
        assert_eq!(found, Some(created), "{label}: release lookup");
        let missing = tx.release("web", &v("1.2.0")).await.expect("lookup");
        assert_eq!(missing, None, "{label}: release of another service");
        let versions = tx.release_versions("api").await.expect("versions");
        let in_order = vec![v("1.0.0"), v("1.2.0"), v("1.1.0")];
        assert_eq!(versions, in_order, "{label}: creation order");
        drop(tx);
        store.close().await;
    }
}

#[tokio::test]
async fn one_active_promotion_per_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let first = promote(
            &store,
            "api",
            "1.0.0",
            "staging",
            PromotionState::AwaitingApproval,
        )
        .await;

        let second = insert(
            &store,
            new_promotion("api", &v("1.1.0"), "staging", PromotionState::Queued),
        )
        .await;
        assert!(
            matches!(second, Err(StoreError::ActiveExists)),
            "{label}: second active: {second:?}"
        );

        let elsewhere = insert(
            &store,
            new_promotion("api", &v("1.1.0"), "production", PromotionState::Queued),
        )
        .await;
        assert!(
            elsewhere.is_ok(),
            "{label}: another environment: {elsewhere:?}"
        );
        let other_service = insert(
            &store,
            new_promotion("web", &v("1.1.0"), "staging", PromotionState::Queued),
        )
        .await;
        assert!(
            other_service.is_ok(),
            "{label}: another service: {other_service:?}"
        );

        let cancelled = moved(&first, PromotionState::Cancelled, t(5));
        update(&store, &cancelled, PromotionState::AwaitingApproval)
            .await
            .expect("cancel");
        let after = insert(
            &store,
            new_promotion("api", &v("1.1.0"), "staging", PromotionState::Queued),
        )
        .await;
        assert!(
            after.is_ok(),
            "{label}: active after the first ended: {after:?}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn update_promotion_is_compare_and_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let original = promote(
            &store,
            "api",
            "1.0.0",
            "staging",
            PromotionState::AwaitingApproval,
        )
        .await;
        let stored = store.promotion(original.id).await.expect("read");
        assert_eq!(
            stored.as_ref(),
            Some(&original),
            "{label}: inserted record round-trips"
        );

        let approved = moved(&original, PromotionState::Approved, t(3));
        let stale = update(&store, &approved, PromotionState::Queued).await;
        assert!(
            matches!(stale, Err(StoreError::Concurrent)),
            "{label}: stale update: {stale:?}"
        );
        let unchanged = store.promotion(original.id).await.expect("read");
        assert_eq!(
            unchanged.as_ref(),
            Some(&original),
            "{label}: row changed by a refused update"
        );

        update(&store, &approved, PromotionState::AwaitingApproval)
            .await
            .expect("update with the right expected state");
        let deploying = Promotion {
            stage: Stage::Deploying { started_at: t(4) },
            expires_at: Some(t(60)),
            ..moved(&approved, PromotionState::Deploying, t(4))
        };
        update(&store, &deploying, PromotionState::Approved)
            .await
            .expect("second update");
        let written = store.promotion(original.id).await.expect("read");
        assert_eq!(
            written.as_ref(),
            Some(&deploying),
            "{label}: updated record"
        );
        store.close().await;
    }
}

/// Requests a promotion with its audit event and deploy job in one transaction, committed or not.
async fn request(store: &Store, label: &str, environment: &str, commit: bool) -> i64 {
    let version = v("1.0.0");
    let mut tx = store.begin().await.expect("begin");
    let promotion = tx
        .insert_promotion(new_promotion(
            "api",
            &version,
            environment,
            PromotionState::Queued,
        ))
        .await
        .expect("insert");
    tx.audit(Some(promotion.id), &CI, AuditKind::Requested, "", t(0))
        .await
        .expect("audit");
    tx.enqueue_deploy(promotion.id, t(0))
        .await
        .expect("enqueue");
    let inside = tx.promotion(promotion.id).await.expect("read inside");
    assert_eq!(
        inside.map(|p| p.id),
        Some(promotion.id),
        "{label}: visible inside its transaction"
    );
    if commit {
        tx.commit().await.expect("commit");
    }
    promotion.id
}

#[tokio::test]
async fn a_dropped_transaction_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let dropped = request(&store, &label, "staging", false).await;
        assert_eq!(
            store.promotion(dropped).await.expect("read"),
            None,
            "{label}: promotion"
        );
        assert!(
            store.events(dropped).await.expect("events").is_empty(),
            "{label}: audit event"
        );
        assert_eq!(claim(&store, "w1", t(1), 10).await, vec![], "{label}: job");

        // The same writes committed are all visible, so the absences above are meaningful.
        let kept = request(&store, &label, "production", true).await;
        assert!(
            store.promotion(kept).await.expect("read").is_some(),
            "{label}: committed promotion"
        );
        assert_eq!(
            store.events(kept).await.expect("events").len(),
            1,
            "{label}: committed event"
        );
        let jobs = claim(&store, "w1", t(1), 10).await;
        assert_eq!(
            jobs.iter().map(|j| j.1).collect::<Vec<_>>(),
            vec![kept],
            "{label}: committed job"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_audit_log_is_append_only_and_read_oldest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let promotion = promote(
            &store,
            "api",
            "1.0.0",
            "staging",
            PromotionState::AwaitingApproval,
        )
        .await;
        let other = promote(&store, "web", "1.0.0", "staging", PromotionState::Queued).await;
        let approved = AuditKind::entered(PromotionState::Approved);
        audit(&store, Some(promotion.id), &CI, AuditKind::Requested, 1).await;
        audit(&store, Some(other.id), &CI, AuditKind::Requested, 2).await;
        audit(&store, None, &LEAD, AuditKind::Freeze, 3).await;
        audit(&store, Some(promotion.id), &LEAD, approved, 4).await;
        audit(&store, Some(promotion.id), &LEAD2, approved, 5).await;

        let expected: Vec<AuditEvent> = [
            (&*CI, "api", AuditKind::Requested, 1),
            (&*LEAD, "slack", approved, 4),
            (&*LEAD2, "slack", approved, 5),
        ]
        .into_iter()
        .map(|(actor, platform, kind, minute)| AuditEvent {
            at: t(minute),
            actor: actor.to_string(),
            platform: platform.into(),
            kind,
            detail: format!("{kind} detail"),
        })
        .collect();
        assert_eq!(
            store.events(promotion.id).await.expect("events"),
            expected,
            "{label}: events"
        );

        let raw = raw_pool(&url).await;
        let update = sqlx::query("UPDATE audit_events SET detail = 'rewritten'")
            .execute(&raw)
            .await;
        assert!(update.is_err(), "{label}: UPDATE on audit_events succeeded");
        let delete = sqlx::query("DELETE FROM audit_events").execute(&raw).await;
        assert!(delete.is_err(), "{label}: DELETE on audit_events succeeded");
        raw.close().await;

        assert_eq!(
            store.events(promotion.id).await.expect("events"),
            expected,
            "{label}: events after tampering"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn approvals_count_each_voter_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let promotion = promote(
            &store,
            "api",
            "1.0.0",
            "production",
            PromotionState::AwaitingApproval,
        )
        .await;
        let other = promote(
            &store,
            "api",
            "1.0.0",
            "staging",
            PromotionState::AwaitingApproval,
        )
        .await;
        set_approval(&store, promotion.id, &LEAD2, Some(t(1))).await;
        set_approval(&store, promotion.id, &LEAD, Some(t(2))).await;
        set_approval(&store, promotion.id, &LEAD2, Some(t(5))).await;
        set_approval(&store, other.id, &CI, Some(t(1))).await;

        // Ordered by time, not by name; the repeated vote keeps its first time.
        let both = vec![
            Approval {
                by: LEAD2.clone(),
                at: t(1),
            },
            Approval {
                by: LEAD.clone(),
                at: t(2),
            },
        ];
        assert_eq!(
            approvals(&store, promotion.id).await,
            both,
            "{label}: approvals"
        );
        assert_eq!(
            store.approvals(promotion.id).await.expect("approvals"),
            both,
            "{label}: approvals read outside a transaction"
        );

        set_approval(&store, promotion.id, &LEAD2, None).await;
        let left = vec![Approval {
            by: LEAD.clone(),
            at: t(2),
        }];
        assert_eq!(
            approvals(&store, promotion.id).await,
            left,
            "{label}: after removal"
        );
        assert_eq!(
            approvals(&store, other.id).await.len(),
            1,
            "{label}: other promotion's approvals"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn jobs_are_claimed_with_leases() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let mut promotions = Vec::new();
        for environment in ["dev", "staging", "production"] {
            let promotion =
                promote(&store, "api", "1.0.0", environment, PromotionState::Queued).await;
            enqueue(&store, promotion.id, t(0)).await;
            promotions.push(promotion.id);
        }
        let [p1, p2, p3] = promotions[..] else {
            unreachable!()
        };

        let first = claim(&store, "worker-a", t(0), 2).await;
        assert_eq!(
            first.iter().map(|j| (j.1, j.2)).collect::<Vec<_>>(),
            vec![(p1, 1), (p2, 1)],
            "{label}: first claim"
        );
        assert!(
            first[0].0 < first[1].0,
            "{label}: claimed in id order: {first:?}"
        );
        let second = claim(&store, "worker-b", t(0), 2).await;
        assert_eq!(
            second.iter().map(|j| (j.1, j.2)).collect::<Vec<_>>(),
            vec![(p3, 1)],
            "{label}: second claim"
        );

        // Leases run on the database's clock: a replica whose clock is far ahead takes nothing.
        let far_ahead = Utc::now() + chrono::Duration::days(365);
        assert_eq!(
            claim(&store, "worker-c", far_ahead, 10).await,
            vec![],
            "{label}: a skewed clock steals no lease"
        );
        expire_leases(&url, p1).await;
        let stolen = claim(&store, "worker-c", t(0), 1).await;
        assert_eq!(
            stolen,
            vec![(first[0].0, p1, 2)],
            "{label}: claim of an expired lease"
        );

        let mut tx = store.begin().await.expect("begin");
        tx.delete_jobs(JobKind::Deploy, p1)
            .await
            .expect("delete jobs");
        tx.commit().await.expect("commit");
        assert_eq!(
            claim(&store, "worker-d", t(0), 10).await,
            vec![],
            "{label}: leases still held"
        );

        // An embedded database has one process: its leases are a dead process's at start-up. A
        // shared one keeps them (other replicas may hold them).
        let embedded = store.forget_leases_if_embedded().await.expect("forget");
        assert_eq!(embedded, label.contains("Sqlite"), "{label}: embedded");
        let released = claim(&store, "worker-d", t(0), 10).await;
        let expected = if embedded {
            vec![(p2, 2), (p3, 2)]
        } else {
            vec![]
        };
        assert_eq!(
            released.iter().map(|j| (j.1, j.2)).collect::<Vec<_>>(),
            expected,
            "{label}: after forget_leases_if_embedded"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_deploy_log_keeps_the_last_200_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let promotion = promote(&store, "api", "1.0.0", "staging", PromotionState::Deploying).await;
        let other = promote(&store, "web", "1.0.0", "staging", PromotionState::Deploying).await;
        let [lease, other_lease] = [
            leased(&store, promotion.id).await,
            leased(&store, other.id).await,
        ];
        let line = |n: usize| format!("line {n}");
        for (batch, range) in [0..100, 100..180, 180..250].into_iter().enumerate() {
            let lines: Vec<String> = range.map(line).collect();
            store
                .append_deploy_log(&lease, promotion.id, &lines, t(batch as i64))
                .await
                .expect("append");
        }
        store
            .append_deploy_log(&other_lease, other.id, &[line(0), line(1)], t(0))
            .await
            .expect("append");

        let expected: Vec<String> = (50..250).map(line).collect();
        assert_eq!(
            store.deploy_log(promotion.id).await.expect("log"),
            expected,
            "{label}: log"
        );
        assert_eq!(
            store.deploy_log(other.id).await.expect("log"),
            vec![line(0), line(1)],
            "{label}: other log"
        );

        let raw = raw_pool(&url).await;
        let stored: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deploy_log WHERE promotion_id = $1")
                .bind(promotion.id)
                .fetch_one(&raw)
                .await
                .expect("count");
        raw.close().await;
        assert_eq!(stored, 200, "{label}: rows kept in deploy_log");
        store.close().await;
    }
}

#[tokio::test]
async fn inbound_events_are_recorded_once_per_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let mut seen = Vec::new();
        for (source, event) in [
            ("slack", "Ev1"),
            ("slack", "Ev1"),
            ("discord", "Ev1"),
            ("slack", "Ev2"),
        ] {
            seen.push(
                store
                    .record_inbound(source, event, t(0))
                    .await
                    .expect("record"),
            );
        }
        assert_eq!(
            seen,
            vec![true, false, true, true],
            "{label}: first sightings"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn status_current_and_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let old = promote(&store, "api", "0.9.0", "staging", PromotionState::Succeeded).await;
        let staging = promote(&store, "api", "1.0.0", "staging", PromotionState::Succeeded).await;
        let dev = promote(&store, "api", "1.1.0", "dev", PromotionState::Succeeded).await;
        let waiting = promote(
            &store,
            "api",
            "1.1.0",
            "staging",
            PromotionState::AwaitingApproval,
        )
        .await;
        let web = promote(&store, "web", "2.0.0", "production", PromotionState::Queued).await;
        let mut tx = store.begin().await.expect("begin");
        for promotion in [&old, &staging, &dev] {
            tx.set_current(promotion).await.expect("set current");
        }
        tx.commit().await.expect("commit");
        set_approval(&store, waiting.id, &LEAD, Some(t(1))).await;
        set_approval(&store, waiting.id, &LEAD2, Some(t(2))).await;

        let mut tx = store.begin().await.expect("begin");
        let current = tx.current("api", "staging").await.expect("current");
        assert_eq!(
            current.as_ref(),
            Some(&staging),
            "{label}: set_current replaces"
        );
        let none = tx.current("api", "production").await.expect("current");
        assert_eq!(none, None, "{label}: nothing deployed");
        drop(tx);

        let rows = |service: Option<&'static str>| {
            let store = store.clone();
            async move {
                let mut rows: Vec<(i64, bool, i64)> = store
                    .status(service)
                    .await
                    .expect("status")
                    .iter()
                    .map(|row| (row.promotion.id, row.current, row.approval_count))
                    .collect();
                rows.sort();
                rows
            }
        };
        let api = vec![
            (staging.id, true, 0),
            (dev.id, true, 0),
            (waiting.id, false, 2),
        ];
        assert_eq!(rows(Some("api")).await, api, "{label}: api status");
        let mut all = api.clone();
        all.push((web.id, false, 0));
        assert_eq!(rows(None).await, all, "{label}: status of every service");

        let history = |environment, limit| store.history("api", environment, limit);
        let newest = history(None, 10).await.expect("history");
        assert_eq!(
            ids(&newest),
            vec![waiting.id, dev.id, staging.id, old.id],
            "{label}: history"
        );
        assert_eq!(newest[0], waiting, "{label}: history records");
        assert_eq!(
            ids(&history(None, 2).await.expect("history")),
            vec![waiting.id, dev.id],
            "{label}: limit"
        );
        let filtered = history(Some("staging"), 10).await.expect("history");
        assert_eq!(
            ids(&filtered),
            vec![waiting.id, staging.id, old.id],
            "{label}: environment filter"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn orphaned_deploys_are_those_nobody_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let jobless = promote(&store, "api", "1.0.0", "dev", PromotionState::Deploying).await;
        let held = promote(&store, "api", "1.0.0", "staging", PromotionState::Verifying).await;
        promote(&store, "api", "1.0.0", "production", PromotionState::Queued).await;
        promote(&store, "web", "1.0.0", "staging", PromotionState::Failed).await;
        enqueue(&store, held.id, t(0)).await;
        assert_eq!(
            claim(&store, "worker-b", t(0), 10).await.len(),
            1,
            "{label}: claim"
        );

        let orphans = |worker, all| store.orphaned_deploys(worker, all);
        assert_eq!(
            orphans("worker-a", false).await.expect("orphans"),
            vec![jobless.id],
            "{label}: lease held"
        );
        assert_eq!(
            orphans("worker-a", true).await.expect("orphans"),
            vec![jobless.id, held.id],
            "{label}: all"
        );
        expire_leases(&url, held.id).await;
        assert_eq!(
            orphans("worker-a", false).await.expect("orphans"),
            vec![jobless.id, held.id],
            "{label}: lease expired"
        );
        assert_eq!(
            orphans("worker-b", false).await.expect("orphans"),
            vec![jobless.id],
            "{label}: own lease"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn expired_approvals_are_awaiting_ones_past_their_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let version = v("1.0.0");
        let mut inserted = Vec::new();
        for (environment, state, expires) in [
            ("dev", PromotionState::AwaitingApproval, Some(60)),
            ("staging", PromotionState::AwaitingApproval, Some(180)),
            ("production", PromotionState::AwaitingApproval, None),
            ("qa", PromotionState::Approved, Some(0)),
            ("perf", PromotionState::Expired, Some(0)),
        ] {
            let new = NewPromotion {
                expires_at: expires.map(t),
                ..new_promotion("api", &version, environment, state)
            };
            inserted.push(insert(&store, new).await.expect("insert").id);
        }
        let expired = |minute| store.expired_approvals(t(minute));
        assert_eq!(
            expired(59).await.expect("expired"),
            Vec::<i64>::new(),
            "{label}: before deadlines"
        );
        assert_eq!(
            expired(60).await.expect("expired"),
            vec![inserted[0]],
            "{label}: at the deadline"
        );
        assert_eq!(
            expired(600).await.expect("expired"),
            inserted[..2].to_vec(),
            "{label}: later"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn freezes_are_active_until_they_end_or_are_lifted() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let mut tx = store.begin().await.expect("begin");
        let prod = tx
            .insert_freeze("production", t(0), t(120), Some("incident 7"), &CI)
            .await
            .expect("freeze production");
        let all = tx
            .insert_freeze("*", t(10), t(20), None, &LEAD)
            .await
            .expect("freeze all");
        tx.commit().await.expect("commit");
        let active = |at| {
            let store = &store;
            async move {
                let freezes = store.active_freezes(at).await.expect("active");
                freezes.into_iter().map(|f| f.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(active(t(5)).await, vec![prod.id], "{label}");
        assert_eq!(active(t(10)).await, vec![prod.id, all.id], "{label}");
        assert_eq!(
            active(t(20)).await,
            vec![prod.id],
            "{label}: ends are exclusive"
        );
        assert_eq!(prod.reason.as_deref(), Some("incident 7"), "{label}");

        let ended = store.freezes_ended(t(15), t(20)).await.expect("ended");
        assert_eq!(
            ended.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![all.id],
            "{label}"
        );

        let mut tx = store.begin().await.expect("begin");
        let lifted = tx
            .lift_freezes(Some("staging"), t(30), &LEAD)
            .await
            .expect("lift nothing");
        assert!(lifted.is_empty(), "{label}: no staging freeze");
        let lifted = tx
            .lift_freezes(Some("production"), t(30), &LEAD)
            .await
            .expect("lift");
        tx.commit().await.expect("commit");
        assert_eq!(
            lifted.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![prod.id],
            "{label}"
        );
        assert!(active(t(31)).await.is_empty(), "{label}: lifted");
        let ended = store.freezes_ended(t(100), t(120)).await.expect("ended");
        assert!(
            ended.is_empty(),
            "{label}: a lifted freeze does not end again"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn scheduler_occurrences_fire_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let mut fired = Vec::new();
        for (name, event, at) in [
            ("window:prod", "open", t(0)),
            ("window:prod", "open", t(0)),
            ("window:prod", "close", t(0)),
            ("window:prod", "open", t(60)),
            ("schedule:nightly", "open", t(0)),
        ] {
            let mut tx = store.begin().await.expect("begin");
            fired.push(
                tx.record_occurrence(name, event, at, t(1))
                    .await
                    .expect("record"),
            );
            tx.commit().await.expect("commit");
        }
        assert_eq!(fired, vec![true, false, true, true, true], "{label}");
        store.close().await;
    }
}

#[tokio::test]
async fn announcements_wait_in_the_outbox_per_platform() {
    use shipmate::domain::platform::ChatPlatform;
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let mut tx = store.begin().await.expect("begin");
        tx.enqueue_announcement(ChatPlatform::Slack, "C1", "prod-window is open", t(0))
            .await
            .expect("slack");
        tx.enqueue_announcement(ChatPlatform::Discord, "42", "prod-window is open", t(0))
            .await
            .expect("discord");
        tx.commit().await.expect("commit");
        let slack = store
            .claim_announcements(ChatPlatform::Slack, "w1", t(1), LEASE, 10)
            .await
            .expect("claim");
        assert_eq!(slack.len(), 1, "{label}");
        assert_eq!(
            (slack[0].channel.as_str(), slack[0].text.as_str()),
            ("C1", "prod-window is open"),
            "{label}"
        );
        let again = store
            .claim_announcements(ChatPlatform::Slack, "w2", t(1), LEASE, 10)
            .await
            .expect("claim again");
        assert!(again.is_empty(), "{label}: leased");
        store.finish_job(slack[0].id).await.expect("finish");
        let later = store
            .claim_announcements(ChatPlatform::Slack, "w2", t(5), LEASE, 10)
            .await
            .expect("claim after the lease");
        assert!(later.is_empty(), "{label}: sent ones are gone");
        let discord = store
            .claim_announcements(ChatPlatform::Discord, "w1", t(1), LEASE, 10)
            .await
            .expect("claim discord");
        assert_eq!(discord.len(), 1, "{label}");
        assert_eq!(discord[0].channel, "42", "{label}");
        store.close().await;
    }
}

#[tokio::test]
async fn the_queue_knows_its_promotions_and_busy_environments() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, store, .. } in backends(dir.path()).await {
        let api = promote(&store, "api", "1.0.0", "production", PromotionState::Queued).await;
        let web = promote(&store, "web", "1.0.0", "production", PromotionState::Queued).await;
        promote(&store, "web", "1.0.0", "staging", PromotionState::Deploying).await;
        let queued = store.queued_promotions().await.expect("queued");
        assert_eq!(ids(&queued), vec![api.id, web.id], "{label}: oldest first");
        assert_eq!(
            store.busy_environments().await.expect("busy"),
            vec!["staging".to_string()],
            "{label}"
        );

        let mut tx = store.begin().await.expect("begin");
        assert!(
            tx.enqueue_deploy(api.id, t(1)).await.expect("first"),
            "{label}"
        );
        assert!(
            !tx.enqueue_deploy(api.id, t(1)).await.expect("second"),
            "{label}: once"
        );
        tx.set_reason(web.id, "waiting for prod-window", t(1))
            .await
            .expect("reason");
        tx.commit().await.expect("commit");
        let mut busy = store.busy_environments().await.expect("busy");
        busy.sort();
        assert_eq!(
            busy,
            vec!["production".to_string(), "staging".to_string()],
            "{label}"
        );
        let web = store.promotion(web.id).await.expect("read").expect("web");
        assert_eq!(web.reason(), Some("waiting for prod-window"), "{label}");
        store.close().await;
    }
}

#[tokio::test]
async fn one_deploy_job_per_promotion_is_a_database_fact() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let api = promote(
            &store,
            "api",
            "1.0.0",
            "production",
            PromotionState::Approved,
        )
        .await;
        enqueue(&store, api.id, t(0)).await;
        let mut tx = store.begin().await.expect("begin");
        assert!(
            !tx.enqueue_deploy(api.id, t(1))
                .await
                .expect("enqueue again"),
            "{label}: a second enqueue reports the job exists"
        );
        tx.commit().await.expect("commit");
        // Even a writer that skips the facade (another replica's racing INSERT) gets no second.
        let raw = raw_pool(&url).await;
        let second = sqlx::query(
            "INSERT INTO jobs (kind, promotion_id, run_at, created_at) VALUES ('deploy', $1, 0, 0)",
        )
        .bind(api.id)
        .execute(&raw)
        .await;
        assert!(second.is_err(), "{label}: a second deploy job was stored");
        assert_eq!(
            claim(&store, "worker-a", t(5), 10).await.len(),
            1,
            "{label}: one job to claim"
        );
        raw.close().await;
        store.close().await;
    }
}

#[tokio::test]
async fn an_inconsistent_promotion_row_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let deploying = promote(&store, "api", "1.0.0", "staging", PromotionState::Deploying).await;
        let raw = raw_pool(&url).await;
        sqlx::query("UPDATE promotions SET started_at = NULL WHERE id = $1")
            .bind(deploying.id)
            .execute(&raw)
            .await
            .expect("damage the row");
        let read = store.promotion(deploying.id).await;
        let expected = format!("promotion #{}: deploying without started_at", deploying.id);
        assert!(
            matches!(&read, Err(StoreError::Corrupt(message)) if *message == expected),
            "{label}: {read:?}"
        );
        raw.close().await;
        store.close().await;
    }
}

/// The statements of migration 0004 before it creates the index: what it does to old duplicates.
/// Both dialects run the same text.
fn duplicate_cleanup() -> String {
    let sql = include_str!("../migrations/sqlite/0004_one_deploy_job.sql");
    assert_eq!(
        sql,
        include_str!("../migrations/postgres/0004_one_deploy_job.sql")
    );
    let cleanup = sql.split("CREATE UNIQUE INDEX").next().unwrap_or_default();
    cleanup
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn upgrading_keeps_the_deploy_job_a_worker_holds_and_drops_the_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let running = promote(&store, "api", "1.0.0", "staging", PromotionState::Deploying).await;
        let waiting = promote(&store, "web", "1.0.0", "staging", PromotionState::Approved).await;
        let raw = raw_pool(&url).await;
        // A database from before the index, where two replicas queued the same deploys.
        sqlx::query("DROP INDEX jobs_one_deploy")
            .execute(&raw)
            .await
            .expect("drop index");
        let job = |promotion: i64, leased: bool| {
            let raw = raw.clone();
            async move {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO jobs (kind, promotion_id, run_at, created_at, lease_owner) \
                     VALUES ('deploy', $1, 0, 0, $2) RETURNING id",
                )
                .bind(promotion)
                .bind(leased.then_some("worker-a"))
                .fetch_one(&raw)
                .await
                .expect("insert job");
                id
            }
        };
        let _older = job(running.id, false).await;
        let leased = job(running.id, true).await;
        let _newer = job(running.id, false).await;
        let oldest = job(waiting.id, false).await;
        let _again = job(waiting.id, false).await;

        sqlx::query(&duplicate_cleanup())
            .execute(&raw)
            .await
            .expect("cleanup");
        let mut kept: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'deploy' ORDER BY id")
                .fetch_all(&raw)
                .await
                .expect("jobs");
        kept.sort_unstable();
        assert_eq!(
            kept,
            vec![leased, oldest],
            "{label}: the leased one, else the oldest"
        );
        sqlx::query(
            "CREATE UNIQUE INDEX jobs_one_deploy ON jobs (promotion_id) WHERE kind = 'deploy'",
        )
        .execute(&raw)
        .await
        .expect("the index holds after the cleanup");
        raw.close().await;
        store.close().await;
    }
}

/// A worker that lost its lease (run out on the database's clock, then claimed by another)
/// can neither renew it nor write for the job: its log lines and its end are refused, while
/// the new holder's go through.
#[tokio::test]
async fn a_lost_lease_refuses_every_late_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let promotion = promote(&store, "api", "1.0.0", "staging", PromotionState::Queued).await;
        enqueue(&store, promotion.id, t(0)).await;
        let first = store
            .claim_jobs(JobKind::Deploy, "worker-a", t(0), LEASE, 1)
            .await
            .expect("claim");
        let first = first[0].lease("worker-a");
        assert!(
            store.renew_lease(&first, LEASE).await.expect("renew"),
            "{label}: renew"
        );
        let line = vec!["early".to_string()];
        store
            .append_deploy_log(&first, promotion.id, &line, t(1))
            .await
            .expect("append while held");

        expire_leases(&url, promotion.id).await;
        assert!(
            !store.renew_lease(&first, LEASE).await.expect("renew"),
            "{label}: an expired lease is not renewed"
        );
        let second = store
            .claim_jobs(JobKind::Deploy, "worker-b", t(0), LEASE, 1)
            .await
            .expect("claim");
        assert_eq!(second.len(), 1, "{label}: the job is claimed again");
        assert_eq!(
            second[0].attempts,
            first.attempt + 1,
            "{label}: fencing token"
        );
        let second = second[0].lease("worker-b");

        // Even a worker of the same name keeps out: the attempt number tells the claims apart.
        let same_name = JobLease {
            worker: "worker-b".to_string(),
            ..first.clone()
        };
        for late in [&first, &same_name] {
            assert!(
                !store.renew_lease(late, LEASE).await.expect("renew"),
                "{label}: renewal of a taken lease"
            );
            let refused = store
                .append_deploy_log(late, promotion.id, &["late".to_string()], t(2))
                .await;
            assert!(
                matches!(refused, Err(StoreError::LeaseLost)),
                "{label}: late log line: {refused:?}"
            );
            let mut tx = store.begin().await.expect("begin");
            let fenced = tx.hold_lease(late).await;
            assert!(
                matches!(fenced, Err(StoreError::LeaseLost)),
                "{label}: late end: {fenced:?}"
            );
        }
        assert!(
            store.renew_lease(&second, LEASE).await.expect("renew"),
            "{label}"
        );
        store
            .append_deploy_log(&second, promotion.id, &["second".to_string()], t(3))
            .await
            .expect("the new holder writes");
        let mut tx = store.begin().await.expect("begin");
        tx.hold_lease(&second)
            .await
            .expect("the new holder's fence");
        tx.commit().await.expect("commit");
        assert_eq!(
            store.deploy_log(promotion.id).await.expect("log"),
            ["early", "second"],
            "{label}: only the lease holders' lines"
        );
        store.close().await;
    }
}

/// Deploy script groups are recorded only under a held lease; a group counts as stale (its bot
/// gone) once no lease covers its job, and other promotions of the environment see it.
#[tokio::test]
async fn deploy_process_groups_are_recorded_under_the_lease() {
    let dir = tempfile::tempdir().expect("temp dir");
    for Backend { label, url, store } in backends(dir.path()).await {
        let promotion = promote(&store, "api", "1.0.0", "staging", PromotionState::Queued).await;
        let lease = leased(&store, promotion.id).await;
        let record = ProcessRecord {
            promotion_id: promotion.id,
            host: "host-a/boot".to_string(),
            pgid: 4242,
            started: 77,
        };
        store
            .record_process(&lease, &record, t(0))
            .await
            .expect("record");
        let stale = |worker: &'static str| store.stale_processes("host-a/boot", worker);
        assert_eq!(
            stale("worker-x").await.expect("stale"),
            [],
            "{label}: leased"
        );
        expire_leases(&url, promotion.id).await;
        assert_eq!(
            stale("worker-log").await.expect("stale"),
            [],
            "{label}: still the owner's"
        );
        assert_eq!(
            stale("worker-x").await.expect("stale"),
            std::slice::from_ref(&record),
            "{label}: lease ran out"
        );
        assert!(
            store
                .stale_processes("host-b/boot", "worker-x")
                .await
                .expect("stale")
                .is_empty(),
            "{label}: another host's groups are not ours"
        );
        let refused = store.record_process(&lease, &record, t(1)).await;
        assert!(
            matches!(refused, Err(StoreError::LeaseLost)),
            "{label}: {refused:?}"
        );

        let mut tx = store.begin().await.expect("begin");
        let others = tx
            .environment_processes("api", "staging", promotion.id + 1)
            .await
            .expect("others");
        assert_eq!(
            others,
            std::slice::from_ref(&record),
            "{label}: seen by the next promotion"
        );
        assert!(tx
            .environment_processes("api", "staging", promotion.id)
            .await
            .expect("own")
            .is_empty());
        tx.forget_process(&record).await.expect("forget");
        tx.commit().await.expect("commit");
        assert!(
            stale("worker-x").await.expect("stale").is_empty(),
            "{label}: forgotten"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn old_delivery_and_occurrence_records_are_pruned_and_recent_ones_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    for backend in backends(dir.path()).await {
        let store = &backend.store;
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 12, 0, 0).unwrap();
        assert!(store
            .record_inbound("slack:event", "Ev0OLD", day(1))
            .await
            .expect("old"));
        assert!(store
            .record_inbound("slack:event", "Ev0NEW", day(10))
            .await
            .expect("new"));
        let mut tx = store.begin().await.expect("tx");
        assert!(tx
            .record_occurrence("schedule:a", "run", day(1), day(1))
            .await
            .expect("old"));
        assert!(tx
            .record_occurrence("schedule:a", "run", day(10), day(10))
            .await
            .expect("new"));
        tx.commit().await.expect("commit");

        let pruned = store.prune_before(day(3)).await.expect("prune");
        assert_eq!(pruned, 2, "{}", backend.label);
        assert!(!store
            .seen_inbound("slack:event", "Ev0OLD")
            .await
            .expect("read"));
        assert!(store
            .seen_inbound("slack:event", "Ev0NEW")
            .await
            .expect("read"));
        let mut tx = store.begin().await.expect("tx");
        assert!(
            !tx.record_occurrence("schedule:a", "run", day(10), day(10))
                .await
                .expect("kept"),
            "{}: the recent occurrence was pruned",
            backend.label
        );
    }
}
