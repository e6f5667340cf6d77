//! The web pages against the real bot (SPEC §9): who may read them (sign-in with an API token,
//! open access, a card's signed link), what each page shows for a history made through the API,
//! live updates over server-sent events, and escaping of every text people or scripts wrote.

mod support;

use std::time::Duration;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use support::*;

/// A browser that follows no redirect, so each answer can be looked at.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn set_cookie(&self) -> &str {
        self.headers
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl Browser {
    fn new(bot: &TestBot) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: bot.base.clone(),
            cookie: None,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        };
        let response = request.send().await.expect("the bot answers");
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    /// Signs in with `token`; keeps the cookie it gets.
    async fn sign_in(&mut self, token: &str) -> Page {
        let page = self
            .post_form("/ui/login", &[("token", token), ("next", "/ui")])
            .await;
        let cookie = page.set_cookie().split(';').next().unwrap_or_default();
        if !cookie.is_empty() {
            self.cookie = Some(cookie.to_string());
        }
        page
    }

    async fn signed_in(bot: &TestBot) -> Browser {
        let mut browser = Browser::new(bot);
        let page = browser.sign_in(LEAD_TOKEN).await;
        assert_eq!(page.status, 303, "{}", page.body);
        browser
    }
}

const OPEN: &str = "\n[web]\naccess = \"open\"\n";

// ---- access ----

#[tokio::test]
async fn strangers_are_sent_to_sign_in_and_come_back_where_they_were_going() {
    let bot = TestBot::start().await;
    let browser = Browser::new(&bot);

    let root = browser.get("/").await;
    assert_eq!((root.status, root.location()), (303, "/ui"));
    for (path, next) in [
        ("/ui", "%2Fui"),
        (
            "/ui/audit?actor=api%3Aci",
            "%2Fui%2Faudit%3Factor%3Dapi%253Aci",
        ),
        ("/ui/dora", "%2Fui%2Fdora"),
        ("/ui/promotions/1", "%2Fui%2Fpromotions%2F1"),
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(page.location(), format!("/ui/login?next={next}"), "{path}");
    }
    let form = browser.get("/ui/login?next=%2Fui%2Faudit").await;
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains(r#"<label for="token">API token"#),
        "{}",
        form.body
    );
    assert!(
        form.body.contains(r#"name="next" value="/ui/audit""#),
        "{}",
        form.body
    );
    // The API is not a page: its own 401, not a redirect.
    let api = browser.get("/api/v1/services").await;
    assert_eq!(api.status, 401);
}

#[tokio::test]
async fn an_api_token_signs_in_with_a_signed_httponly_cookie_until_sign_out_or_expiry() {
    let bot = TestBot::start().await;
    let mut browser = Browser::new(&bot);

    let wrong = browser.sign_in("not-a-token").await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("not one of this bot&#39;s API tokens"),
        "{}",
        wrong.body
    );
    assert!(wrong.set_cookie().is_empty());

    let page = browser
        .post_form("/ui/login", &[("token", LEAD_TOKEN), ("next", "/ui/audit")])
        .await;
    assert_eq!((page.status, page.location()), (303, "/ui/audit"));
    let cookie = page.set_cookie().to_string();
    for attribute in [
        "shipmate_session=",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/ui",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(
        !cookie.contains(LEAD_TOKEN),
        "the token itself is never kept: {cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http here: {cookie}");
    browser.cookie = Some(cookie.split(';').next().unwrap_or_default().to_string());

    let overview = browser.get("/ui").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains("signed in as api:lead"));
    assert!(overview
        .body
        .contains(r#"<form method="post" action="/ui/logout">"#));

    // An altered cookie is no sign-in.
    let mut forged = Browser::new(&bot);
    forged.cookie = browser
        .cookie
        .as_ref()
        .map(|c| c.replace("bGVhZA", "YWRtaW4"));
    assert_eq!(forged.get("/ui").await.status, 303);

    let out = browser.post_form("/ui/logout", &[]).await;
    assert_eq!((out.status, out.location()), (303, "/ui/login"));
    assert!(
        out.set_cookie().contains("Max-Age=0"),
        "{}",
        out.set_cookie()
    );

    // Signed in again, the sign-in lasts 12 hours on the bot's clock.
    let mut again = Browser::new(&bot);
    again.sign_in(ADMIN_TOKEN).await;
    assert_eq!(again.get("/ui").await.status, 200);
    bot.clock.advance(Duration::from_secs(12 * 3600 + 1));
    assert_eq!(again.get("/ui").await.status, 303, "expired sign-in");
}

#[tokio::test]
async fn sign_in_goes_back_only_to_these_pages_and_refuses_other_sites_forms() {
    let bot = TestBot::start().await;
    let browser = Browser::new(&bot);
    for next in [
        "//evil.example/ui",
        "https://evil.example/",
        "/api/v1/services",
    ] {
        let page = browser
            .post_form("/ui/login", &[("token", CI_TOKEN), ("next", next)])
            .await;
        assert_eq!((page.status, page.location()), (303, "/ui"), "{next}");
    }
    let cross_site = browser
        .send(
            browser
                .http
                .post(format!("{}/ui/login", bot.base))
                .header("origin", "https://evil.example")
                .form(&[("token", CI_TOKEN)]),
        )
        .await;
    assert_eq!(cross_site.status, 403);
    assert!(cross_site.set_cookie().is_empty());
}

#[tokio::test]
async fn open_access_lets_anyone_read_every_page() {
    let bot = TestBot::with_config(OPEN).await;
    let browser = Browser::new(&bot);
    let id = bot.promote_id("api", "1.0.0", None).await;
    bot.wait_for_state(id, "succeeded").await;
    for path in ["/ui", "/ui/audit", &format!("/ui/promotions/{id}")] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(!page.body.contains("Sign out"), "{path}");
    }
    // Nothing to sign in to.
    let login = browser.get("/ui/login?next=%2Fui%2Faudit").await;
    assert_eq!((login.status, login.location()), (303, "/ui/audit"));
}

// ---- signed links ----

/// The card's "details" link of promotion `id`, as Slack shows it (`&` escaped in mrkdwn).
async fn card_link(bot: &TestBot, id: i64, state: &str) -> String {
    let card = bot.card_in_state(RELEASES_CHANNEL, id, state).await;
    let blocks = card.blocks.to_string();
    let start = blocks
        .find("<https://bot.example/ui/promotions/")
        .unwrap_or_else(|| panic!("no page link in {blocks}"));
    let link = &blocks[start + 1..];
    let end = link.find('|').expect("link label");
    link[..end].replace("&amp;", "&")
}

#[tokio::test]
async fn a_card_links_to_its_page_with_a_signed_expiring_query_that_opens_that_page_alone() {
    let bot = TestBot::builder()
        .slack()
        .public_url("https://bot.example")
        .start()
        .await
        .expect("sqlite");
    let id = bot.promote_id("api", "1.0.0", None).await;
    bot.wait_for_state(id, "succeeded").await;
    let link = card_link(&bot, id, "succeeded").await;
    let path = link.replace("https://bot.example", "");
    assert!(
        path.starts_with(&format!("/ui/promotions/{id}?exp=")) && path.contains("&sig="),
        "{link}"
    );
    let exp: i64 = path
        .split("exp=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|n| n.parse().ok())
        .expect("exp");
    assert_eq!(exp, (start_time() + chrono::Duration::days(30)).timestamp());

    let browser = Browser::new(&bot);
    let page = browser.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("#{id} api 1.0.0 → dev")));
    assert!(
        !page.body.contains(r#"href="/ui/audit""#),
        "a link opens one page, no navigation"
    );
    // Its live view takes the same link.
    let events = path.replacen(
        &format!("/ui/promotions/{id}?"),
        &format!("/ui/promotions/{id}/events?"),
        1,
    );
    assert!(
        page.body
            .contains(&format!("data-events=\"{}\"", events.replace('&', "&#38;"))),
        "{}",
        page.body
    );

    // The link opens nothing else.
    assert_eq!(browser.get("/ui").await.status, 303);
    let other = path.replacen(
        &format!("/ui/promotions/{id}?"),
        &format!("/ui/promotions/{}?", id + 1),
        1,
    );
    let refused = browser.get(&other).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("altered"), "{}", refused.body);

    let tampered = browser
        .get(&path.replace(&format!("exp={exp}"), &format!("exp={}", exp + 86_400)))
        .await;
    assert_eq!(tampered.status, 403);
    assert!(
        tampered.body.contains("This link was altered"),
        "{}",
        tampered.body
    );
    assert!(
        tampered.body.contains(&format!(
            "href=\"/ui/login?next=%2Fui%2Fpromotions%2F{id}\""
        )),
        "{}",
        tampered.body
    );

    bot.clock.advance(Duration::from_secs(30 * 86_400 + 1));
    let expired = browser.get(&path).await;
    assert_eq!(expired.status, 403);
    assert!(
        expired.body.contains("This link has expired"),
        "{}",
        expired.body
    );
}

// ---- what the pages show ----

#[tokio::test]
async fn the_overview_shows_what_runs_where_the_queue_the_windows_and_the_freezes() {
    let window = r#"
[[window]]
name = "prod-window"
cron = "0 0 14 * * Tue,Thu"
duration = "2h"
timezone = "Europe/Berlin"
"#;
    let bot = TestBot::builder()
        .production_windows(&["prod-window"])
        .config(window)
        .start()
        .await
        .expect("sqlite");
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let queued = bot.promote_id("api", "1.4.2", Some("production")).await;
    let (status, body) = bot
        .say(ADMIN_TOKEN, "freeze staging for 2h \"db migration\"")
        .await;
    assert_eq!(status, 200, "{body}");
    let browser = Browser::signed_in(&bot).await;
    let page = browser.get("/ui").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    // The matrix: columns are every environment, api's cells say version, since when, by whom.
    assert!(
        body.contains(
            r#"<th scope="col">dev</th><th scope="col">staging</th><th scope="col">production</th>"#
        ),
        "{body}"
    );
    assert!(body.contains(r#"<th scope="row">api</th>"#));
    assert!(body.contains("<strong>1.4.2</strong>"));
    assert!(body.contains(", by api:ci"), "{body}");
    assert!(
        body.contains("nothing deployed"),
        "production and web run nothing yet"
    );
    // The active promotion, in its cell and in the queue table.
    assert!(
        body.contains(&format!(
            r#"<a href="/ui/promotions/{queued}">#{queued} api 1.4.2 → production</a>"#
        )),
        "{body}"
    );
    assert!(body.contains("awaiting approval"));
    assert!(body.contains("0/2"));
    // The calendar: 2026-11-17 is a Tuesday, 09:00 UTC: the window opens at 13:00 UTC.
    assert!(
        body.contains("prod-window (2h): Tue 2026-11-17 14:00 CET (13:00 UTC)"),
        "{body}"
    );
    assert!(
        body.contains(
            r#"<span class="state state-closed">closed</span> opens 2026-11-17 13:00 UTC"#
        ),
        "{body}"
    );
    assert!(body.contains(r#"<span class="state state-frozen">frozen</span> until 2026-11-17 11:00 UTC (db migration)"#), "{body}");
    assert!(body.contains("with /release freeze"));
}

#[tokio::test]
async fn a_promotion_page_shows_its_timeline_approvals_steps_checks_and_deploy_log() {
    let shop = r#"
[[service]]
name = "shop"
  [[service.environment]]
  name = "live"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "30s" }
  verify = [{ kind = "command", run = ["./deploy.sh"] }]
"#;
    let bot = TestBot::with_config(shop).await;
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let prod = bot.promote_id("api", "1.4.2", Some("production")).await;
    let (status, body) = bot.act(prod, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let browser = Browser::signed_in(&bot).await;
    let waiting = browser.get(&format!("/ui/promotions/{prod}")).await;
    assert_eq!(waiting.status, 200);
    assert!(waiting.body.contains("<h1>#"), "{}", waiting.body);
    assert!(waiting.body.contains("1 of 2 needed."), "{}", waiting.body);
    assert!(
        waiting
            .body
            .contains(r#"<tr><th scope="row">api:lead</th><td>2026-11-17 09:00:00 UTC</td></tr>"#),
        "{}",
        waiting.body
    );
    assert!(waiting.body.contains("staging → production"));
    assert!(
        waiting.body.contains("<script>"),
        "live updates while it is active"
    );

    let checked = bot.promote_id("shop", "2.0.0", None).await;
    bot.wait_for_state(checked, "succeeded").await;
    let page = browser.get(&format!("/ui/promotions/{checked}")).await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    for kind in ["requested", "deploying", "verifying", "succeeded"] {
        assert!(
            body.contains(&format!("<td>{kind}</td>")),
            "{kind} missing from the timeline: {body}"
        );
    }
    assert!(body.contains("Rollout (direct)"), "{body}");
    assert!(body.contains(r#"<tr><th scope="row">deploy</th><td><span class="state state-done">done</span></td></tr>"#), "{body}");
    assert!(body.contains(r#"<tr><th scope="row">verification checks</th><td><span class="state state-done">done</span></td></tr>"#), "{body}");
    assert!(body.contains(r#"command check 1 <span class="muted">(command)</span></th><td>verification</td><td>1</td><td>passed</td>"#), "{body}");
    assert!(
        body.contains("deploying shop 2.0.0 to live\nstep 2\ndone\n"),
        "{body}"
    );
    assert!(
        !body.contains("<script>"),
        "an ended promotion has no live view"
    );
    assert!(body.contains("This environment needs no approval."));

    let missing = browser.get("/ui/promotions/9999").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("there is no promotion #9999"));
    assert_eq!(browser.get("/ui/promotions/abc").await.status, 400);
}

#[tokio::test]
async fn the_audit_log_filters_by_service_environment_and_actor_and_pages_back() {
    let bot = TestBot::start().await;
    bot.reach("api", "1.0.0", &["dev"]).await;
    bot.reach("web", "2.0.0", &["staging"]).await;
    let (status, body) = bot.say(ADMIN_TOKEN, "freeze production for 1h").await;
    assert_eq!(status, 200, "{body}");
    let browser = Browser::signed_in(&bot).await;

    let all = browser.get("/ui/audit").await.body;
    assert!(
        all.contains("api → dev") && all.contains("web → staging"),
        "{all}"
    );
    assert!(all.contains("<td>freeze</td><td>api:admin</td>"), "{all}");
    assert!(all.contains(r#"<label for="actor">Actor<input id="actor" name="actor" value="""#));

    let web = browser.get("/ui/audit?service=web").await.body;
    assert!(
        web.contains("web → staging") && !web.contains("api → dev"),
        "{web}"
    );
    assert!(web.contains(r#"<option value="web" selected>"#), "{web}");
    let dev = browser.get("/ui/audit?environment=dev").await.body;
    assert!(
        dev.contains("api → dev") && !dev.contains("web → staging"),
        "{dev}"
    );
    let admin = browser.get("/ui/audit?actor=api%3Aadmin").await.body;
    assert!(
        admin.contains("<td>freeze</td>") && !admin.contains("api → dev"),
        "{admin}"
    );
    let nobody = browser.get("/ui/audit?actor=slack%3AU0NOBODY").await.body;
    assert!(
        nobody.contains("No audit events match these filters."),
        "{nobody}"
    );

    // More than a page: 60 more events; the first page holds 50, "Older events" the rest.
    for n in 0..60 {
        bot.sql(&format!(
            "INSERT INTO audit_events (promotion_id, at, actor, platform, kind, detail) \
             VALUES (NULL, 0, 'api:ci', 'api', 'freeze', 'filler {n}')"
        ))
        .await;
    }
    let first = browser.get("/ui/audit?actor=api%3Aci").await.body;
    assert_eq!(first.matches("<td>api:ci</td>").count(), 50, "{first}");
    let older = first
        .split("href=\"")
        .filter_map(|rest| rest.split('"').next())
        .find(|href| href.contains("before="))
        .expect("an Older events link")
        .replace("&#38;", "&");
    assert!(
        older.starts_with("/ui/audit?actor=api%3Aci&before="),
        "{older}"
    );
    let second = browser.get(&older).await.body;
    let rest = second.matches("<td>api:ci</td>").count();
    assert!(
        rest > 10,
        "the older page holds the filler's start and api:ci's promotions: {second}"
    );
    assert!(second.contains("filler 0"));
    assert!(!second.contains("filler 59"));
    assert!(
        second.contains(r#"<a href="/ui/audit?actor=api%3Aci">Newest</a>"#),
        "{second}"
    );
    assert_eq!(browser.get("/ui/audit?before=soon").await.status, 400);
}

// ---- escaping ----

/// Prints text no page may pass through unescaped.
const HOSTILE_SCRIPT: &str = r#"#!/bin/sh
echo "<script>alert('log')</script> & \"quoted\""
"#;

/// `text` as HTML shows it: the five characters that matter as numeric references.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

const HOSTILE: &str =
    r#"<script>alert("x")</script> & 'single' "double" <img src=x onerror=alert(1)>"#;

#[tokio::test]
async fn every_text_people_or_scripts_wrote_is_escaped() {
    let bot = TestBot::builder()
        .script(HOSTILE_SCRIPT)
        .config(OPEN)
        .start()
        .await
        .expect("sqlite");
    let (status, body) = bot
        .post(
            "/api/v1/releases",
            CI_TOKEN,
            json!({"service": "api", "version": "1.0.0", "commit": HOSTILE, "notes": HOSTILE}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dev = bot.promote_id("api", "1.0.0", None).await;
    bot.wait_for_state(dev, "succeeded").await;
    bot.reach("api", "1.0.0", &["staging"]).await;
    let prod = bot.promote_id("api", "1.0.0", Some("production")).await;
    let (status, body) = bot
        .post(
            &format!("/api/v1/promotions/{prod}/reject"),
            LEAD_TOKEN,
            json!({"reason": HOSTILE}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bot
        .say(ADMIN_TOKEN, &format!("freeze staging for 1h {HOSTILE}"))
        .await;
    assert_eq!(status, 200, "{body}");

    let browser = Browser::new(&bot);
    let pages = [
        format!("/ui/promotions/{dev}"),
        format!("/ui/promotions/{prod}"),
        "/ui".to_string(),
        "/ui/audit".to_string(),
        "/ui/audit?actor=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_string(),
    ];
    for path in &pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let body = &page.body;
        assert!(
            !body.contains("<script>alert"),
            "{path} lets a script through: {body}"
        );
        assert!(
            !body.contains("<img src=x"),
            "{path} lets a tag through: {body}"
        );
        assert!(
            !body.contains("\"><script"),
            "{path} lets a value out of its attribute"
        );
        // The only script is the live view's own.
        for script in body.match_indices("<script>") {
            assert!(
                body[script.0..].starts_with("<script>(function(){var box"),
                "{path}"
            );
        }
    }
    let dev_page = browser.get(&pages[0]).await.body;
    let log_line = escaped(r#"<script>alert('log')</script> & "quoted""#);
    assert!(
        dev_page.contains(&log_line),
        "the deploy log line: {dev_page}"
    );
    assert!(
        dev_page.matches(&escaped(HOSTILE)).count() >= 2,
        "notes and commit: {dev_page}"
    );
    let prod_page = browser.get(&pages[1]).await.body;
    assert!(prod_page.contains("rejected"), "{prod_page}");
    assert!(
        prod_page.matches(&escaped(HOSTILE)).count() >= 4,
        "the reason in the state and the timeline, the notes and commit: {prod_page}"
    );
    let overview = browser.get("/ui").await.body;
    assert!(
        overview.contains(&escaped("<img src=x onerror=alert(1)>")),
        "the freeze reason: {overview}"
    );
    let audit = browser.get(&pages[4]).await.body;
    assert!(
        audit.contains(&format!(
            r#"value="{}""#,
            escaped(r#""><script>alert(1)</script>"#)
        )),
        "{audit}"
    );
    // And a script that did slip through would not run: only the live view's hash may.
    let headers = browser.get("/ui").await.headers;
    let policy = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(!policy.contains("script-src 'unsafe-inline'"), "{policy}");
}

// ---- live updates ----

/// Reads server-sent events from `response` until one of `kind` whose data contains `needle`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    kind: &str,
    needle: &str,
) -> String {
    let wait = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let name = event
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("message");
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .collect();
                let data = data.join("\n");
                if name == kind && data.contains(needle) {
                    return data;
                }
            }
            let chunk = response
                .chunk()
                .await
                .expect("stream")
                .expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind} event with {needle:?}; unread: {buffer}"))
}

#[tokio::test]
async fn a_promotion_page_streams_its_new_state_as_it_changes_and_ends_with_it() {
    let bot = TestBot::start().await;
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let prod = bot.promote_id("api", "1.4.2", Some("production")).await;
    let browser = Browser::signed_in(&bot).await;
    let mut stream = browser
        .http
        .get(format!("{}/ui/promotions/{prod}/events", bot.base))
        .header(COOKIE, browser.cookie.clone().unwrap_or_default())
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut buffer = String::new();
    let first = next_event(&mut stream, &mut buffer, "state", "awaiting approval").await;
    assert!(first.contains("0 of 2 needed."), "{first}");

    bot.act(prod, "approve", LEAD_TOKEN).await;
    let one = next_event(&mut stream, &mut buffer, "state", "1 of 2 needed.").await;
    assert!(one.contains("api:lead"), "{one}");
    bot.act(prod, "approve", LEAD2_TOKEN).await;
    let done = next_event(&mut stream, &mut buffer, "state", "state-succeeded").await;
    assert!(
        done.contains("deploying api 1.4.2 to production"),
        "the log arrives too: {done}"
    );
    next_event(&mut stream, &mut buffer, "end", "ended").await;

    // Without a sign-in or a link, no stream.
    let stranger = Browser::new(&bot)
        .get(&format!("/ui/promotions/{prod}/events"))
        .await;
    assert_eq!(stranger.status, 303);
}

#[tokio::test]
async fn the_pages_read_the_same_on_postgresql() {
    let Some(bot) = TestBot::builder()
        .db(Db::Postgres)
        .config(OPEN)
        .start()
        .await
    else {
        eprintln!("skipped: SHIPMATE_TEST_POSTGRES_URL is not set");
        return;
    };
    bot.reach("api", "1.0.0", &["dev"]).await;
    let browser = Browser::new(&bot);
    let overview = browser.get("/ui").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains("<strong>1.0.0</strong>"));
    let audit = browser
        .get("/ui/audit?service=api&environment=dev&actor=api%3Aci")
        .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(
        audit.body.contains("<td>requested</td><td>api:ci</td>"),
        "{}",
        audit.body
    );
    let none = browser.get("/ui/audit?service=web").await;
    assert!(
        none.body.contains("No audit events match these filters."),
        "{}",
        none.body
    );
}

/// Fails a production deploy of a version ending in `.13`; everything else succeeds.
const PRODUCTION_UNLUCKY: &str = r#"#!/bin/sh
echo "deploying $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT"
case "$SHIPMATE_ENVIRONMENT:$SHIPMATE_VERSION" in production:*.13) exit 3;; esac
"#;

/// At `hour` after the start: creates `web <version>`, deploys it to staging, then at
/// `production_hour` to production; returns how that ended.
async fn web_release(bot: &TestBot, version: &str, hour: u64, production_hour: u64) -> String {
    bot.clock
        .set(start_time() + chrono::Duration::hours(hour as i64));
    let (status, body) = bot
        .post(
            "/api/v1/releases",
            CI_TOKEN,
            json!({"service": "web", "version": version}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let staging = bot.promote_id("web", version, Some("staging")).await;
    bot.wait_for_state(staging, "succeeded").await;
    bot.clock
        .set(start_time() + chrono::Duration::hours(production_hour as i64));
    let id = bot.promote_id("web", version, Some("production")).await;
    let ended = wait_until(Duration::from_secs(20), || async {
        let state = bot.promotion(id).await["state"].clone();
        state == "succeeded" || state == "failed"
    })
    .await;
    assert!(ended, "#{id} never ended");
    bot.promotion(id).await["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_dora_page_shows_the_four_keys_per_environment_and_window_with_charts() {
    let bot = TestBot::builder()
        .script(PRODUCTION_UNLUCKY)
        .start()
        .await
        .expect("sqlite");
    // web in production: 1.0.0 released at 0h, live at 3h (lead 3h); 1.0.13 fails at 11h;
    // 1.2.0 released at 12h, live at 14h (lead 2h), restoring production 3h after the failure.
    assert_eq!(web_release(&bot, "1.0.0", 0, 3).await, "succeeded");
    assert_eq!(web_release(&bot, "1.0.13", 10, 11).await, "failed");
    assert_eq!(web_release(&bot, "1.2.0", 12, 14).await, "succeeded");
    let browser = Browser::signed_in(&bot).await;
    let page = browser.get("/ui/dora").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains(r#"<h2 id="dora-0">api</h2>"#)
            && body.contains(r#"<h2 id="dora-1">web</h2>"#),
        "{body}"
    );
    assert_eq!(
        body.matches("<figure><svg").count(),
        8,
        "4 charts for each of 2 services"
    );
    assert!(body.contains("<figcaption>web: change failure rate</figcaption>"));
    // Production over 7 days: 2 deploys, 1 of 3 changes failed, restored in 3h.
    let row = body
        .split("<tr>")
        .find(|row| row.starts_with(r#"<th scope="row">production</th><td>7 days</td><td>2</td>"#))
        .unwrap_or_else(|| panic!("no 7-day production row with 2 deploys: {body}"));
    assert!(row.contains("<td>0.29</td>"), "2 deploys in 7 days: {row}");
    assert!(row.contains("<td>33.3%</td><td>3h</td></tr>"), "{row}");
    // Staging: 3 deploys, nothing failed, nothing to restore.
    assert!(
        body.contains(r#"<th scope="row">staging</th><td>7 days</td><td>3</td><td>0.43</td>"#),
        "{body}"
    );
    // api deployed nothing: dashes, not zeros, where there is no data.
    assert!(body.contains(r#"<th scope="row">dev</th><td>90 days</td><td>0</td><td>0.00</td><td>–</td><td>–</td><td>–</td><td>–</td>"#), "{body}");

    // The page keeps its last answer only while nothing changed: a new deploy shows at once.
    let again = browser.get("/ui/dora").await.body;
    assert_eq!(&again, body, "nothing changed, the same page");
    let dev = bot.promote_id("api", "1.0.0", Some("dev")).await;
    bot.wait_for_state(dev, "succeeded").await;
    let after = browser.get("/ui/dora").await.body;
    assert!(
        after.contains(r#"<th scope="row">dev</th><td>90 days</td><td>1</td>"#),
        "{after}"
    );
}
