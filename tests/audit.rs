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
