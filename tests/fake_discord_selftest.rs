//! Self-test of the fake Discord (`tests/support/fake_discord.rs`): serenity 0.12.5's real `Http`
//! and `Client` talk to it, its payload builders deserialize into serenity's strict models, and
//! its signatures pass serenity's `Verifier`.

#[path = "support/fake_discord.rs"]
mod fake_discord;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_discord::*;
use serde_json::{json, Value};
use serenity::all::{
    ApplicationId, ButtonStyle, ChannelId, ChannelType, CommandOptionType,
    ComponentInteractionDataKind, Context, CreateActionRow, CreateButton, CreateCommand,
    CreateCommandOption, CreateEmbed, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, CreateMessage, CreateThread, EditInteractionResponse,
    EditMessage, EventHandler, GatewayIntents, GuildId, Http, HttpBuilder, Interaction, MessageId,
    Reaction, ReactionType, Ready, ResolvedValue,
};
use serenity::http::HttpError;
use tokio::sync::mpsc;

const TOKEN: &str = "fake-bot-token";
const APP: u64 = 1_100_000_000_000_000_000;
const LEAD: u64 = 53_908_232_506_183_680;
const LEAD_ROLE: &str = "539082325061836999";
const WAIT: Duration = Duration::from_secs(10);
/// serenity's reconnects may involve its own back-off; generous on purpose.
const RECONNECT_WAIT: Duration = Duration::from_secs(30);

fn http(fake: &FakeDiscord, token: &str) -> Http {
    HttpBuilder::new(token)
        .proxy(fake.api_url())
        .ratelimiter_disabled(true)
        .application_id(ApplicationId::new(APP))
        .build()
}

fn card() -> CreateMessage {
    CreateMessage::new()
        .content("Release api 1.4.2 to production is waiting for approval")
        .embed(
            CreateEmbed::new()
                .title("api 1.4.2")
                .description("2 approvals needed"),
        )
        .components(vec![CreateActionRow::Buttons(vec![
            CreateButton::new("approve:rel_42")
                .label("Approve")
                .style(ButtonStyle::Success),
            CreateButton::new("reject:rel_42")
                .label("Reject")
                .style(ButtonStyle::Danger),
        ])])
}

fn status_and_code(err: serenity::Error) -> (u16, isize) {
    match err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(resp)) => {
            (resp.status_code.as_u16(), resp.error.code)
        }
        other => panic!("expected an unsuccessful request, got {other:?}"),
    }
}

#[tokio::test]
async fn rest_messages_threads_reactions_and_commands() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let http = http(&fake, TOKEN);
    let channel = ChannelId::new(CHANNEL_ID);

    let sent = channel.send_message(&http, card()).await.expect("send");
    assert_eq!(
        sent.content,
        "Release api 1.4.2 to production is waiting for approval"
    );
    assert_eq!(sent.embeds[0].title.as_deref(), Some("api 1.4.2"));
    assert_eq!(sent.components[0].components.len(), 2);
    assert!(sent.author.bot);
    assert_eq!(sent.author.id.get(), APP);

    let edited = channel
        .edit_message(
            &http,
            sent.id,
            EditMessage::new().content("approved by Mason"),
        )
        .await
        .expect("edit");
    assert!(edited.edited_timestamp.is_some());
    assert_eq!(edited.embeds.len(), 1, "an edit without embeds keeps them");

    let thread = channel
        .create_thread_from_message(&http, sent.id, CreateThread::new("api 1.4.2 log"))
        .await
        .expect("thread");
    assert_eq!(
        thread.id.get(),
        sent.id.get(),
        "a message's thread has its id"
    );
    assert_eq!(thread.kind, ChannelType::PublicThread);
    assert_eq!(thread.parent_id, Some(channel));
    let second = channel
        .create_thread_from_message(&http, sent.id, CreateThread::new("again"))
        .await
        .expect_err("one thread per message");
    assert_eq!(status_and_code(second), (400, 160_004));

    let reply = thread
        .id
        .send_message(&http, CreateMessage::new().content("deploying step 1"))
        .await
        .expect("post in thread");
    assert!(reply.id > sent.id, "snowflakes increase");
    sent.react(&http, ReactionType::Unicode("✅".into()))
        .await
        .expect("react");

    let stored = fake
        .message(CHANNEL_ID, sent.id.get())
        .expect("stored card");
    assert_eq!(stored.content, "approved by Mason");
    assert_eq!(stored.edits, 1);
    assert_eq!(stored.edited_at.len(), 1);
    assert_eq!(stored.embeds[0]["title"], "api 1.4.2");
    assert_eq!(
        stored.components[0]["components"][0]["custom_id"],
        "approve:rel_42"
    );
    assert_eq!(stored.components[0]["components"][1]["style"], 4);
    assert_eq!(stored.reactions, vec!["✅".to_string()]);
    assert_eq!(
        fake.messages(CHANNEL_ID).len(),
        1,
        "thread replies are not in the channel"
    );
    let in_thread = fake.thread(sent.id.get());
    assert_eq!(in_thread.len(), 1);
    assert_eq!(in_thread[0].content, "deploying step 1");
    assert_eq!(fake.calls(Route::CreateReaction), 1);

    let fetched = channel.message(&http, sent.id).await.expect("get message");
    assert_eq!(fetched.reactions.len(), 1);
    assert!(fetched.reactions[0].me);
    assert!(fetched.thread.is_some());

    // Errors with Discord's codes.
    let unknown = channel
        .edit_message(&http, MessageId::new(42), EditMessage::new().content("x"))
        .await
        .expect_err("unknown message");
    assert_eq!(status_and_code(unknown), (404, 10008));
    let nowhere = ChannelId::new(4242)
        .send_message(&http, CreateMessage::new().content("x"))
        .await
        .expect_err("unknown channel");
    assert_eq!(status_and_code(nowhere), (404, 10003));
    let intruder = channel
        .send_message(
            &self::http(&fake, "wrong-token"),
            CreateMessage::new().content("x"),
        )
        .await
        .expect_err("bad token");
    assert_eq!(status_and_code(intruder), (401, 0));
    assert_eq!(fake.messages(CHANNEL_ID).len(), 1);

    // Command registration, global (POST and PUT) and per guild (PUT).
    let release = CreateCommand::new("release")
        .description("Release operations")
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::SubCommand,
                "promote",
                "Promote a version",
            )
            .add_sub_option(
                CreateCommandOption::new(CommandOptionType::String, "service", "Service")
                    .required(true),
            ),
        );
    let created = serenity::all::Command::create_global_command(&http, release.clone())
        .await
        .expect("create global");
    assert_eq!(created.name, "release");
    let set = serenity::all::Command::set_global_commands(&http, vec![release.clone()])
        .await
        .expect("overwrite global");
    assert_eq!(set.len(), 1);
    assert_ne!(set[0].id, created.id, "an overwrite mints new ids");
    let guild = GuildId::new(GUILD_ID)
        .set_commands(&http, vec![release])
        .await
        .expect("guild commands");
    assert_eq!(guild[0].guild_id, Some(GuildId::new(GUILD_ID)));
    assert_eq!(fake.registered_commands(Scope::Global).len(), 1);
    let registered = fake.registered_commands(Scope::Guild(GUILD_ID));
    assert_eq!(registered[0]["options"][0]["name"], "promote");
    assert_eq!(registered[0]["options"][0]["options"][0]["required"], true);
    assert!(
        fake.unknown_requests().is_empty(),
        "{:?}",
        fake.unknown_requests()
    );
}

/// serenity 0.12.5 does NOT expose `retry_after` in this error: `ErrorResponse` has only
/// `status_code`, `url`, `method` and `error: DiscordJsonError { code, message, errors }`, and the
/// 429 body (`{"message","retry_after","global"}`, no `code`) does not even decode into
/// `DiscordJsonError` (which requires `code`), so `error.code` is -1 and `error.message` is
/// serenity's "Could not decode json" text. Headers (`Retry-After`, `X-RateLimit-*`) are dropped
/// too. Only serenity's own ratelimiter (off when using the proxy) reads them, and it sleeps and
/// retries internally instead of surfacing them.
#[tokio::test]
async fn rate_limit_comes_back_as_unsuccessful_request_429() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let http = http(&fake, TOKEN);
    fake.set_retry_after(1.25);
    fake.fail_next(Route::CreateMessage, 1);

    let err = ChannelId::new(CHANNEL_ID)
        .send_message(&http, card())
        .await
        .expect_err("429");
    match err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(resp)) => {
            assert_eq!(resp.status_code.as_u16(), 429);
            assert_eq!(resp.error.code, -1, "the 429 body has no code: {resp:?}");
            assert!(
                resp.error.message.contains("Could not decode json"),
                "{resp:?}"
            );
            assert!(resp
                .url
                .ends_with("/api/v10/channels/645027906669510667/messages"));
        }
        other => panic!("expected UnsuccessfulRequest, got {other:?}"),
    }
    assert!(fake.messages(CHANNEL_ID).is_empty(), "a 429 stores nothing");

    // The raw response carries what the docs promise.
    fake.fail_next(Route::EditMessage, 1);
    let raw = reqwest::Client::new()
        .patch(format!(
            "{}/api/v10/channels/{CHANNEL_ID}/messages/1",
            fake.api_url()
        ))
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"content": "x"}))
        .send()
        .await
        .expect("raw request");
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["retry-after"], "2");
    assert_eq!(raw.headers()["x-ratelimit-scope"], "user");
    assert_eq!(raw.headers()["content-type"], "application/json");
    let body: Value = raw.json().await.expect("json");
    assert_eq!(
        body,
        json!({"message": "You are being rate limited.", "retry_after": 1.25, "global": false})
    );

    ChannelId::new(CHANNEL_ID)
        .send_message(&http, card())
        .await
        .expect("the knob is spent");
    assert_eq!(fake.calls(Route::CreateMessage), 2);
    assert_eq!(fake.messages(CHANNEL_ID).len(), 1);
}

#[derive(Debug)]
enum Seen {
    Ready(Box<Ready>),
    Reaction(Box<Reaction>),
    Interaction(Box<Interaction>),
}

struct Handler {
    tx: mpsc::UnboundedSender<Seen>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _: Context, ready: Ready) {
        let _ = self.tx.send(Seen::Ready(Box::new(ready)));
    }

    async fn reaction_add(&self, _: Context, reaction: Reaction) {
        let _ = self.tx.send(Seen::Reaction(Box::new(reaction)));
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        match &interaction {
            Interaction::Command(command) => {
                let reply = CreateInteractionResponse::Message(
                    CreateInteractionResponseMessage::new().content("Promotion #7 queued"),
                );
                if let Err(why) = command.create_response(&ctx.http, reply).await {
                    panic!("command response failed: {why:?}");
                }
            }
            Interaction::Component(component) => {
                let update = CreateInteractionResponse::UpdateMessage(
                    CreateInteractionResponseMessage::new().content("Approved by Mason"),
                );
                if let Err(why) = component.create_response(&ctx.http, update).await {
                    panic!("component response failed: {why:?}");
                }
            }
            _ => {}
        }
        let _ = self.tx.send(Seen::Interaction(Box::new(interaction)));
    }
}

struct Bot {
    rx: mpsc::UnboundedReceiver<Seen>,
    http: Arc<Http>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bot {
    async fn start(fake: &FakeDiscord) -> Bot {
        let (tx, rx) = mpsc::unbounded_channel();
        let intents = GatewayIntents::GUILDS
            | GatewayIntents::GUILD_MESSAGE_REACTIONS
            | GatewayIntents::DIRECT_MESSAGE_REACTIONS;
        let mut client = serenity::client::ClientBuilder::new_with_http(http(fake, TOKEN), intents)
            .event_handler(Handler { tx })
            .await
            .expect("client builds");
        let http = client.http.clone();
        let task = tokio::spawn(async move {
            if let Err(why) = client.start().await {
                eprintln!("client stopped: {why:?}");
            }
        });
        Bot { rx, http, task }
    }

    async fn next(&mut self, timeout: Duration) -> Seen {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => panic!("the event handler is gone"),
            Err(_) => panic!("no event within {timeout:?}"),
        }
    }

    async fn ready(&mut self) -> Ready {
        match self.next(WAIT).await {
            Seen::Ready(ready) => *ready,
            other => panic!("expected READY, got {other:?}"),
        }
    }

    async fn reaction(&mut self, timeout: Duration) -> Reaction {
        loop {
            match self.next(timeout).await {
                Seen::Reaction(reaction) => return *reaction,
                // A re-identify delivers READY again.
                Seen::Ready(_) => continue,
                other => panic!("expected a reaction, got {other:?}"),
            }
        }
    }

    async fn interaction(&mut self) -> Interaction {
        match self.next(WAIT).await {
            Seen::Interaction(interaction) => *interaction,
            other => panic!("expected an interaction, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn serenity_client_gets_ready_reactions_and_interactions() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let mut bot = Bot::start(&fake).await;

    let ready = bot.ready().await;
    assert_eq!(ready.user.id.get(), APP);
    assert_eq!(ready.application.id.get(), APP);
    let identifies = fake.wait_identifies(1, WAIT).await;
    assert_eq!(identifies[0].intents, 9217);
    assert_eq!(
        identifies[0].token,
        format!("Bot {TOKEN}"),
        "serenity 0.12.5 sends the prefixed token in IDENTIFY"
    );
    assert_eq!(bot.http.application_id(), Some(ApplicationId::new(APP)));

    let card = ChannelId::new(CHANNEL_ID)
        .send_message(&bot.http, card())
        .await
        .expect("card");
    let stored = fake.message(CHANNEL_ID, card.id.get()).expect("stored");

    let reaction = fake.reaction_add(
        LEAD,
        &[LEAD_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        card.id.get(),
        "✅",
    );
    fake.dispatch("MESSAGE_REACTION_ADD", reaction).await;
    let reaction = bot.reaction(WAIT).await;
    assert_eq!(reaction.message_id, card.id);
    assert_eq!(reaction.user_id.map(|u| u.get()), Some(LEAD));
    assert_eq!(reaction.emoji, ReactionType::Unicode("✅".into()));
    let member = reaction.member.expect("member on a guild reaction");
    assert_eq!(member.roles[0].to_string(), LEAD_ROLE);
    assert_eq!(reaction.message_author_id.map(|u| u.get()), Some(APP));

    let command = fake.command_interaction(
        1_100_000_000_000_000_010,
        "command-token",
        LEAD,
        &[LEAD_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        "promote",
        &[
            ("service", "api"),
            ("version", "1.4.2"),
            ("environment", "production"),
        ],
    );
    fake.dispatch("INTERACTION_CREATE", command).await;
    let Interaction::Command(command) = bot.interaction().await else {
        panic!("expected a command interaction");
    };
    assert_eq!(command.data.name, "release");
    let options = command.data.options();
    assert_eq!(options[0].name, "promote");
    let ResolvedValue::SubCommand(sub) = &options[0].value else {
        panic!("expected a subcommand: {options:?}");
    };
    let values: Vec<(&str, &str)> = sub
        .iter()
        .map(|o| match o.value {
            ResolvedValue::String(value) => (o.name, value),
            ref other => panic!("{} is not a string: {other:?}", o.name),
        })
        .collect();
    assert_eq!(
        values,
        vec![
            ("service", "api"),
            ("version", "1.4.2"),
            ("environment", "production")
        ]
    );
    assert_eq!(
        command.member.as_ref().expect("member").roles[0].to_string(),
        LEAD_ROLE
    );
    let callback = fake.wait_callback(1_100_000_000_000_000_010, WAIT).await;
    assert_eq!(callback.kind, 4);
    assert_eq!(callback.data["content"], "Promotion #7 queued");
    assert!(callback.latency.expect("dispatched") < INTERACTION_DEADLINE);
    // A second callback for the same interaction is refused.
    let again = command
        .create_response(&bot.http, CreateInteractionResponse::Acknowledge)
        .await
        .expect_err("already acknowledged");
    assert_eq!(status_and_code(again), (400, 40060));
    // @original is the message the callback posted; follow-ups are recorded per token.
    command
        .edit_response(
            &bot.http,
            EditInteractionResponse::new().content("Promotion #7 deploying"),
        )
        .await
        .expect("edit @original");
    command
        .create_followup(
            &bot.http,
            CreateInteractionResponseFollowup::new().content("done"),
        )
        .await
        .expect("follow-up");
    assert_eq!(
        fake.original_edits("command-token")[0]["content"],
        "Promotion #7 deploying"
    );
    assert_eq!(fake.followups("command-token")[0]["content"], "done");
    let contents: Vec<String> = fake
        .messages(CHANNEL_ID)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(
        contents[1..],
        ["Promotion #7 deploying".to_string(), "done".to_string()]
    );

    let click = fake.button_interaction(
        1_100_000_000_000_000_020,
        "button-token",
        LEAD,
        &[LEAD_ROLE],
        &stored,
        "approve:rel_42",
    );
    fake.dispatch("INTERACTION_CREATE", click).await;
    let Interaction::Component(component) = bot.interaction().await else {
        panic!("expected a component interaction");
    };
    assert_eq!(component.data.custom_id, "approve:rel_42");
    assert!(matches!(
        component.data.kind,
        ComponentInteractionDataKind::Button
    ));
    assert_eq!(component.message.id, card.id);
    assert_eq!(component.message.components[0].components.len(), 2);
    let callback = fake.wait_callback(1_100_000_000_000_000_020, WAIT).await;
    assert_eq!(callback.kind, 7);
    let card = fake.message(CHANNEL_ID, card.id.get()).expect("card");
    assert_eq!(card.content, "Approved by Mason", "type 7 updates the card");
    assert_eq!(card.edits, 1);
    // serenity's start-up asks only for the gateway URL (no /users/@me, no /oauth2/applications/@me).
    assert_eq!(fake.calls(Route::GetGateway), 1);
    assert_eq!(fake.calls(Route::GetGatewayBot), 0);
    assert_eq!(fake.calls(Route::GetCurrentUser), 0);
    assert_eq!(fake.calls(Route::GetCurrentApplication), 0);
    assert!(
        fake.unknown_requests().is_empty(),
        "{:?}",
        fake.unknown_requests()
    );
}

/// Reconnect timings measured here (serenity 0.12.5, loopback) are printed with `--nocapture`.
#[tokio::test]
async fn serenity_client_survives_drops_reconnects_and_invalid_sessions() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let mut bot = Bot::start(&fake).await;
    bot.ready().await;
    let card = ChannelId::new(CHANNEL_ID)
        .send_message(&bot.http, CreateMessage::new().content("card"))
        .await
        .expect("card");
    let mut round = 0;
    let mut check = |fake: FakeDiscord, what: &'static str| {
        round += 1;
        let emoji = ["🅰", "🅱", "🆎", "🆑", "🅾"][round % 5];
        async move {
            let started = Instant::now();
            fake.wait_session(RECONNECT_WAIT).await;
            let reconnected = started.elapsed();
            let data = fake.reaction_add(
                LEAD,
                &[LEAD_ROLE],
                CHANNEL_ID,
                GUILD_ID,
                card.id.get(),
                emoji,
            );
            fake.dispatch("MESSAGE_REACTION_ADD", data).await;
            (what, emoji, reconnected, started)
        }
    };

    // 1. An abrupt TCP close: serenity resumes the session.
    fake.drop_connection();
    let (what, emoji, took, started) = check(fake.clone(), "drop_connection").await;
    let reaction = bot.reaction(RECONNECT_WAIT).await;
    assert_eq!(reaction.emoji, ReactionType::Unicode(emoji.into()));
    eprintln!(
        "{what}: session back after {took:?}, event handled after {:?}",
        started.elapsed()
    );
    assert_eq!(fake.identifies().len(), 1, "resumed, not re-identified");
    assert!(fake.resumes().last().expect("a resume").accepted);

    // 2. Op 7 RECONNECT: serenity resumes too.
    fake.send_reconnect();
    let (what, emoji, took, started) = check(fake.clone(), "op 7").await;
    let reaction = bot.reaction(RECONNECT_WAIT).await;
    assert_eq!(reaction.emoji, ReactionType::Unicode(emoji.into()));
    eprintln!(
        "{what}: session back after {took:?}, event handled after {:?}",
        started.elapsed()
    );
    assert_eq!(fake.resumes().len(), 2);

    // 3. Op 9 resumable: resume.
    fake.send_invalid_session(true);
    let (what, emoji, took, started) = check(fake.clone(), "op 9 (resumable)").await;
    let reaction = bot.reaction(RECONNECT_WAIT).await;
    assert_eq!(reaction.emoji, ReactionType::Unicode(emoji.into()));
    eprintln!(
        "{what}: session back after {took:?}, event handled after {:?}",
        started.elapsed()
    );
    assert_eq!(fake.resumes().len(), 3);

    // 4. Op 9 not resumable: serenity must IDENTIFY again.
    fake.send_invalid_session(false);
    let started = Instant::now();
    let identifies = fake.wait_identifies(2, RECONNECT_WAIT).await;
    eprintln!(
        "op 9 (not resumable): re-identified after {:?}",
        started.elapsed()
    );
    assert_eq!(identifies[1].intents, 9217);
    let (what, emoji, took, started) = check(fake.clone(), "op 9 (not resumable)").await;
    let reaction = bot.reaction(RECONNECT_WAIT).await;
    assert_eq!(reaction.emoji, ReactionType::Unicode(emoji.into()));
    eprintln!(
        "{what}: session back after {took:?}, event handled after {:?}",
        started.elapsed()
    );

    // 5. A drop whose RESUME is refused (op 9 false): re-identify.
    fake.reject_resumes(true);
    fake.drop_connection();
    let started = Instant::now();
    fake.wait_identifies(3, RECONNECT_WAIT).await;
    eprintln!(
        "drop + refused resume: re-identified after {:?}",
        started.elapsed()
    );
    assert!(!fake.resumes().last().expect("a resume").accepted);
    let (what, emoji, took, started) = check(fake.clone(), "drop + refused resume").await;
    let reaction = bot.reaction(RECONNECT_WAIT).await;
    assert_eq!(reaction.emoji, ReactionType::Unicode(emoji.into()));
    eprintln!(
        "{what}: session back after {took:?}, event handled after {:?}",
        started.elapsed()
    );
    // Reconnects reuse the first gateway URL: no further GET /gateway.
    assert_eq!(fake.calls(Route::GetGateway), 1);
    // 1 + one per resume (drop, op 7, op 9 true) + the new shard after op 9 false + the refused
    // resume's connection + the new shard after it.
    assert_eq!(fake.connections(), 7, "one connection per attempt");
}

#[test]
fn signatures_pass_serenitys_verifier() {
    use serenity::interactions_endpoint::Verifier;
    let verifier = Verifier::new(TEST_PUBLIC_KEY_HEX);
    let body = ping_interaction();
    let (signature, timestamp) = sign_interaction(&body, "1714564800");
    assert_eq!(
        signature,
        "54413437657bb3d7832ba1a52486812f7c65dfe47f307f506b5d746ab0e8d227d6e8da508ec53988e6d8d781a15a13a3b7b427d816cbde61d2449644ec1b4f00",
        "the documented example signature"
    );
    assert!(verifier
        .verify(&signature, &timestamp, body.as_bytes())
        .is_ok());
    let tampered = body.replace("A_UNIQUE_TOKEN", "ANOTHER_TOKEN");
    assert!(verifier
        .verify(&signature, &timestamp, tampered.as_bytes())
        .is_err());
    assert!(verifier
        .verify(&signature, "1714564801", body.as_bytes())
        .is_err());
    let (fresh, now) = sign_interaction(&body, &now_timestamp());
    assert!(verifier.verify(&fresh, &now, body.as_bytes()).is_ok());
    let ping: Interaction = serde_json::from_str(&body).expect("PING parses");
    assert!(matches!(ping, Interaction::Ping(_)));
}

#[tokio::test]
async fn builders_deserialize_into_serenity_models() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let command = fake.command_interaction_values(
        1,
        "t",
        LEAD,
        &[LEAD_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        "history",
        &[("service", json!("api")), ("limit", json!(5))],
    );
    let Interaction::Command(command) = serde_json::from_value(command).expect("command parses")
    else {
        panic!("not a command");
    };
    let ResolvedValue::SubCommand(sub) = &command.data.options()[0].value else {
        panic!("no subcommand");
    };
    assert!(matches!(sub[1].value, ResolvedValue::Integer(5)), "{sub:?}");
    let remove = fake.reaction_remove(LEAD, CHANNEL_ID, GUILD_ID, 7, "shipit:1234");
    assert!(remove.get("member").is_none());
    let remove: Reaction = serde_json::from_value(remove).expect("reaction remove parses");
    assert!(matches!(remove.emoji, ReactionType::Custom { .. }));
}

#[tokio::test]
async fn heartbeats_are_acknowledged_and_keep_the_session() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    fake.set_heartbeat_interval(100);
    let mut bot = Bot::start(&fake).await;
    bot.ready().await;
    let deadline = Instant::now() + WAIT;
    while fake.heartbeats() < 5 {
        assert!(
            Instant::now() < deadline,
            "only {} heartbeat(s) in {WAIT:?}",
            fake.heartbeats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.connections(),
        1,
        "acknowledged heartbeats keep the connection"
    );
    assert!(fake.resumes().is_empty());
    let data = fake.reaction_add(LEAD, &[LEAD_ROLE], CHANNEL_ID, GUILD_ID, 1, "✅");
    fake.dispatch("MESSAGE_REACTION_ADD", data).await;
    assert_eq!(bot.reaction(WAIT).await.message_id, MessageId::new(1));
}

#[tokio::test]
async fn embeds_over_discords_limits_are_refused_and_outages_answer_500_and_429() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let http = http(&fake, TOKEN);
    let channel = ChannelId::new(CHANNEL_ID);
    // Each part within its own limit, 6,016 characters together: Discord's 400 50035. Sent raw
    // (serenity refuses such an embed itself before sending it).
    let embed = json!({"description": "d".repeat(4_096), "fields": [
        {"name": "f", "value": "v".repeat(1_000)}, {"name": "g", "value": "w".repeat(918)}]});
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v10/channels/{CHANNEL_ID}/messages",
            fake.api_url()
        ))
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"embeds": [embed]}))
        .send()
        .await
        .expect("the fake answers");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["code"], 50035, "{body}");
    assert_eq!(fake.refusals().len(), 1);

    fake.start_outage(vec![OutageAnswer::ServerError, OutageAnswer::RateLimited]);
    let first = channel.send_message(&http, card()).await.expect_err("500");
    assert_eq!(status_and_code(first).0, 500);
    let second = channel.send_message(&http, card()).await.expect_err("429");
    assert_eq!(status_and_code(second).0, 429);
    fake.end_outage();
    channel.send_message(&http, card()).await.expect("back");
}

#[tokio::test]
async fn a_held_route_answers_late() {
    let fake = FakeDiscord::start(TOKEN, APP).await;
    let http = http(&fake, TOKEN);
    fake.hang(Route::CreateMessage, Some(Duration::from_millis(300)));
    let started = Instant::now();
    ChannelId::new(CHANNEL_ID)
        .send_message(&http, card())
        .await
        .expect("answered after the delay");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(fake.held_calls(Route::CreateMessage), 1);
}
