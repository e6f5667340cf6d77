//! The tamper-evident audit trail (SPEC §10) end to end: a real history through the HTTP API,
//! `shipmate audit verify` on it, a row edited behind the bot's back with `sqlite3` or `psql` and
//! named by `verify`, one chain under concurrent writers on PostgreSQL, and `audit export`.

mod support;

use std::process::{Command, Output};

use chrono::Utc;
use shipmate::domain::audit::AuditKind;
use shipmate::domain::identity::Identity;
use support::serve::BIN;
use support::*;

fn shipmate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the shipmate binary")
}

fn verify(bot: &TestBot) -> (i32, String) {
    let config = bot.path("bot.toml");
    let output = shipmate(&["audit", "verify", "--config", &config.display().to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// A release through dev and staging: a dozen events or so.
async fn history(bot: &TestBot) {
    bot.reach("api", "1.0.0", &["dev", "staging"]).await;
}

/// The id of the third event of the chain: one with events after it.
async fn third_event(bot: &TestBot) -> i64 {
    let page = bot.store.audit_page(0, None, 3).await.expect("read events");
    assert_eq!(page.len(), 3, "the history has at least three events");
    page[2].id
}

async fn the_chain_verifies_until_a_row_is_edited(db: Db) {
    let Some(bot) = TestBot::builder().db(db).start().await else {
        return;
    };
    history(&bot).await;
    let (code, text) = verify(&bot);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("audit chain intact"), "{text}");

    let victim = third_event(&bot).await;
    let edit = format!("UPDATE audit_events SET detail = 'approved by nobody' WHERE id = {victim}");
    let edited = match db {
        // The table refuses updates (a trigger); someone with the power to drop that can still
        // edit a row, and the chain is what shows it.
        Db::Sqlite => {
            let file = bot.path("bot.db");
            Command::new("sqlite3")
                .arg(&file)
                .arg(format!("DROP TRIGGER audit_events_no_update; {edit}"))
                .output()
        }
        Db::Postgres => Command::new("psql")
            .arg(&bot.database_url)
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update; {edit}"
            ))
            .output(),
    }
    .expect("run sqlite3 or psql (installed by .ci/run)");
    assert!(edited.status.success(), "{edited:?}");

    let (code, text) = verify(&bot);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("broken at event #{victim}:")),
        "verify must name the edited event #{victim}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_until_a_row_is_edited_on_sqlite() {
    the_chain_verifies_until_a_row_is_edited(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_until_a_row_is_edited_on_postgres() {
    the_chain_verifies_until_a_row_is_edited(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_writers_keep_one_chain_on_postgres() {
    let Some(bot) = TestBot::builder().db(Db::Postgres).start().await else {
        return;
    };
    let before = bot
        .store
        .audit_page(0, None, 10_000)
        .await
        .expect("read")
        .len();
    let writers: Vec<_> = (0..20)
        .map(|writer| {
            let store = bot.store.clone();
            tokio::spawn(async move {
                let actor = Identity::new("api", &format!("writer{writer}"));
                for round in 0..5 {
                    let mut tx = store.begin().await.expect("begin");
                    for event in 0..3 {
                        tx.audit(
                            None,
                            &actor,
                            AuditKind::Freeze,
                            &format!("writer {writer} round {round} event {event}"),
                            Utc::now(),
                        )
                        .await
                        .expect("audit");
                    }
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let events = bot.store.audit_page(0, None, 10_000).await.expect("read");
    assert_eq!(events.len(), before + 20 * 5 * 3);
    let (code, text) = verify(&bot);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("intact: {} events", events.len())),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_json_lines_since_a_time_and_refuses_a_bad_one() {
    let bot = TestBot::start().await;
    history(&bot).await;
    let config = bot.path("bot.toml").display().to_string();
    let all = shipmate(&["audit", "export", "--config", &config]);
    assert!(all.status.success(), "{all:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let stored = bot.store.audit_page(0, None, 10_000).await.expect("read");
    assert_eq!(lines.len(), stored.len());
    assert!(lines
        .iter()
        .all(|line| line["hash"].as_str().is_some_and(|h| h.len() == 64)));
    assert_eq!(lines[0]["kind"], stored[0].event.kind.as_str());

    let future = shipmate(&[
        "audit",
        "export",
        "--config",
        &config,
        "--since",
        "2999-01-01",
    ]);
    assert!(future.status.success(), "{future:?}");
    assert!(future.stdout.is_empty(), "nothing happened after 2999");

    let bad = shipmate(&[
        "audit",
        "export",
        "--config",
        &config,
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--since `yesterday`"),
        "{bad:?}"
    );
}

async fn audit_api_filters_and_pages(db: Db) {
    let Some(bot) = TestBot::builder().db(db).start().await else {
        return;
    };
    let dev = bot.promote_id("api", "1.0.0", Some("dev")).await;
    bot.wait_for_state(dev, "succeeded").await;
    let (status, _) = bot.say(ADMIN_TOKEN, "freeze staging for 1h audit").await;
    assert_eq!(status, 200);
    let web = bot.promote_id("web", "2.0.0", Some("staging")).await;
    let bot = &bot;
    let get =
        |query: String| async move { bot.get(&format!("/api/v1/audit{query}"), CI_TOKEN).await };

    let (status, all) = get(String::new()).await;
    assert_eq!(status, 200, "{all}");
    let events = all["events"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["release_created", "requested", "succeeded", "freeze"] {
        assert!(kinds.contains(&kind), "every kind of event: {kinds:?}");
    }
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(
        events
            .iter()
            .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64)),
        "each event carries its chain link: {all:#}"
    );

    let (_, web_only) = get("?service=web&environment=staging".into()).await;
    let promotions: Vec<i64> = web_only["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["promotion_id"].as_i64().unwrap_or(-1))
        .collect();
    assert!(
        !promotions.is_empty() && promotions.iter().all(|p| *p == web),
        "{web_only:#}"
    );
    let (_, admin) = get("?actor=api:admin".into()).await;
    assert!(
        admin["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["actor"] == "api:admin")),
        "{admin:#}"
    );

    // Pages of two, following next_before, give back every event once.
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let (status, page) = get(query.clone()).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["id"].as_i64()),
        );
        match page["next_before"].as_i64() {
            Some(before) => query = format!("?limit=2&before={before}"),
            None => break,
        }
    }
    assert_eq!(paged, ids, "pages cover the log once, in order");
    let (_, future) = get("?since=2099-01-01".into()).await;
    assert_eq!(future["events"], serde_json::json!([]), "{future}");

    for (query, problem) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?before=x", "before"),
        ("?since=yesterday", "since"),
        ("?colour=red", "colour"),
    ] {
        let (status, refused) = get(query.into()).await;
        assert_eq!(status, 400, "{query}: {refused}");
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(problem), "{query}: {message}");
    }
    let (status, _) = bot.get("/api/v1/audit", "").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_api_filters_and_pages_on_sqlite() {
    audit_api_filters_and_pages(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_api_filters_and_pages_on_postgres() {
    audit_api_filters_and_pages(Db::Postgres).await;
}
