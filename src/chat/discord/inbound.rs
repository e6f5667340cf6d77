//! What Discord sends the bot — `/release` commands, button clicks, reactions — turned into engine
//! calls, and the optional signed HTTP interactions endpoint `POST /discord/interactions`.
//!
//! Interactions from the gateway and from the endpoint take one path: each is recorded once by
//! its id, answered within Discord's 3 seconds (deferred when the engine is slower), and every
//! refusal goes back ephemerally to the person who clicked or typed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use serenity::all::{
    ChannelId, CommandInteraction, ComponentInteraction, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, EditInteractionResponse,
    Interaction, InteractionId, Member, Reaction, ReactionType, UserId,
};
use serenity::interactions_endpoint::Verifier;

use super::commands::command_text;
use super::reactions::{still_approves, ReactionTurns};
use super::render::{self, MAX_CONTENT};
use super::Discord;
use crate::domain::identity::{Actor, Identity};
use crate::engine::{ChatOrigin, ChatPlatform, Engine, ReactionVote, Reply, Request, RequestKind};

/// Work still running after this long is deferred, leaving a margin within Discord's 3 s.
const DEFER_AFTER: Duration = Duration::from_millis(1500);
/// Signed requests older (or newer) than this are refused, like Slack's 5 minutes.
const MAX_SIGNATURE_AGE_SECS: i64 = 300;
/// The delivery source of reactions (see [`Request::reacted`]).
const REACTION_SOURCE: &str = "discord:reaction";
/// Longest any one answer to Discord (a callback, an edit of the deferred answer, a follow-up)
/// may take: a hung call must not hold the handler, or the interim answer that keeps the
/// interaction alive, hostage.
pub const ANSWER_TIMEOUT: Duration = Duration::from_millis(1_000);

/// What the gateway handler and the HTTP endpoint share.
pub struct Inbound {
    engine: Engine,
    discord: Arc<Discord>,
    reaction_turns: ReactionTurns,
}

impl Inbound {
    pub fn new(engine: Engine, discord: Arc<Discord>) -> Arc<Inbound> {
        Arc::new(Inbound {
            engine,
            discord,
            reaction_turns: ReactionTurns::default(),
        })
    }

    pub(crate) fn discord(&self) -> &Arc<Discord> {
        &self.discord
    }

    /// Counts what Discord sent that never became a request.
    fn count_unhandled(&self, kind: &str, outcome: &str) {
        self.engine
            .count_unhandled(ChatPlatform::Discord, kind, outcome);
    }

    pub async fn interaction(&self, interaction: Interaction) {
        match interaction {
            Interaction::Command(command) => self.command(command).await,
            Interaction::Component(component) => self.component(component).await,
            _ => self.count_unhandled("interaction", "ignored"),
        }
    }

    async fn command(&self, command: CommandInteraction) {
        let text = match command_text(&command.data.options) {
            Ok(text) => text,
            // Options Discord validated but we cannot read: the person still gets an answer.
            Err(problem) => {
                self.count_unhandled("command", "refused");
                return self.answer_command(&command, Err(problem), false).await;
            }
        };
        let request = Request {
            actor: actor(command.user.id, command.member.as_deref()),
            origin: Some(origin(command.channel_id)),
            delivery: None,
            kind: RequestKind::Typed(text),
        }
        .delivered("discord:interaction", command.id.to_string());
        let http = self.discord.http();
        let (id, token) = (command.id, command.token.as_str());
        let (result, deferred) = within_deadline(self.engine.handle(request), async {
            let defer = CreateInteractionResponse::Defer(ephemeral());
            log_failure(bounded(http.create_interaction_response(id, token, &defer, vec![])).await);
        })
        .await;
        let answer = match result {
            Ok(Reply::Duplicate) => return,
            Ok(reply) => Ok(reply.to_text()),
            Err(error) => Err(error.message),
        };
        self.answer_command(&command, answer, deferred).await;
    }

    /// The ephemeral answer to a command: a new response, or the edit of the deferred one.
    async fn answer_command(
        &self,
        command: &CommandInteraction,
        answer: Result<String, String>,
        deferred: bool,
    ) {
        let http = self.discord.http();
        let (id, token) = (command.id, command.token.as_str());
        let text = render::truncate(&answer.unwrap_or_else(|refusal| refusal), MAX_CONTENT);
        if deferred {
            let edit = EditInteractionResponse::new().content(text);
            log_failure(
                bounded(http.edit_original_interaction_response(token, &edit, vec![])).await,
            );
        } else {
            let answer = CreateInteractionResponse::Message(ephemeral().content(text));
            log_failure(
                bounded(http.create_interaction_response(id, token, &answer, vec![])).await,
            );
        }
    }

    async fn component(&self, component: ComponentInteraction) {
        let http = self.discord.http();
        let (id, token) = (component.id, component.token.as_str());
        let custom_id = component.data.custom_id.as_str();
        let kind = match (
            render::parse_custom_id(custom_id),
            render::parse_checklist_id(custom_id),
        ) {
            (Some((action, promotion)), _) => RequestKind::CardAction { action, promotion },
            (None, Some((promotion, item))) => RequestKind::ChecklistTick { promotion, item },
            (None, None) => {
                // Not our button: acknowledge so the person does not see "interaction failed".
                acknowledge(http, id, token).await;
                self.count_unhandled("button", "ignored");
                return;
            }
        };
        let request = Request {
            actor: actor(component.user.id, component.member.as_ref()),
            origin: Some(origin(component.channel_id)),
            delivery: None,
            kind,
        }
        .delivered("discord:interaction", component.id.to_string());
        let work = self.engine.handle(request);
        let (result, deferred) = within_deadline(work, acknowledge(http, id, token)).await;
        let refusal = match result {
            Ok(Reply::Duplicate) => return,
            // The card itself shows the change, edited from the outbox.
            Ok(_) if deferred => return,
            Ok(_) => return acknowledge(http, id, token).await,
            Err(refusal) => refusal,
        };
        let text = render::truncate(&refusal.message, MAX_CONTENT);
        if deferred {
            let followup = CreateInteractionResponseFollowup::new()
                .content(text)
                .ephemeral(true);
            log_failure(bounded(http.create_followup_message(token, &followup, vec![])).await);
        } else {
            let answer = CreateInteractionResponse::Message(
                CreateInteractionResponseMessage::new()
                    .content(text)
                    .ephemeral(true),
            );
            log_failure(
                bounded(http.create_interaction_response(id, token, &answer, vec![])).await,
            );
        }
    }

    /// A reaction added to or removed from a card: a vote, a withdrawal, or nothing.
    pub async fn reaction(&self, reaction: Reaction, added: bool) {
        let Some(user) = reaction.user_id else {
            return;
        };
        let ReactionType::Unicode(emoji) = &reaction.emoji else {
            return;
        };
        if self.discord.is_bot(user) {
            return;
        }
        let config = &self.discord.config;
        let vote = ReactionVote::from_reaction(
            config
                .approve_reactions
                .iter()
                .any(|e| same_emoji(e, emoji)),
            config.reject_reactions.iter().any(|e| same_emoji(e, emoji)),
            added,
        );
        let Some(vote) = vote else {
            return;
        };
        let _turn = self.reaction_turns.turn(reaction.message_id, user).await;
        let held = match vote {
            ReactionVote::Reject => None,
            ReactionVote::Approve | ReactionVote::Withdraw => {
                still_approves(
                    self.discord.http(),
                    reaction.channel_id,
                    reaction.message_id,
                    user,
                    &config.approve_reactions,
                )
                .await
            }
        };
        let vote = vote.reconcile(held);
        let request = Request {
            actor: actor(user, reaction.member.as_ref()),
            origin: Some(origin(reaction.channel_id)),
            delivery: None,
            kind: RequestKind::Reaction {
                message_id: reaction.message_id.to_string(),
                vote,
            },
        }
        // A gateway event has no delivery id; a resumed or handed-over session may repeat one.
        .reacted(
            REACTION_SOURCE,
            format!("{}:{user}:{emoji}", reaction.message_id),
            added,
        );
        if let Err(error) = self.engine.handle(request).await {
            let text = format!("<@{user}> {}", error.message);
            self.discord
                .notice(reaction.channel_id, reaction.message_id, &text)
                .await;
        }
    }
}

fn ephemeral() -> CreateInteractionResponseMessage {
    CreateInteractionResponseMessage::new().ephemeral(true)
}

/// `discord:<user>` with a `discord-role:<role>` membership per guild role the member holds.
fn actor(user: UserId, member: Option<&Member>) -> Actor {
    let roles = member
        .map(|m| {
            m.roles
                .iter()
                .map(|r| Identity::new("discord-role", &r.to_string()))
        })
        .into_iter()
        .flatten();
    Actor::new(Identity::new("discord", &user.to_string())).with_memberships(roles)
}

fn origin(channel: ChannelId) -> ChatOrigin {
    ChatOrigin {
        platform: ChatPlatform::Discord,
        channel: channel.to_string(),
    }
}

/// ✔️ arrives with or without its variation selector, depending on the client.
fn same_emoji(configured: &str, sent: &str) -> bool {
    let plain = |s: &str| s.replace('\u{FE0F}', "");
    plain(configured) == plain(sent)
}

/// Runs `work`; if it is still running after [`DEFER_AFTER`], runs `defer` (the interim answer)
/// and keeps waiting. Returns the result and whether `defer` ran.
async fn within_deadline<T>(
    work: impl Future<Output = T>,
    defer: impl Future<Output = ()>,
) -> (T, bool) {
    tokio::pin!(work);
    tokio::select! {
        biased;
        result = &mut work => (result, false),
        () = tokio::time::sleep(DEFER_AFTER) => {
            defer.await;
            (work.await, true)
        }
    }
}

async fn acknowledge(http: &serenity::all::Http, id: InteractionId, token: &str) {
    let ack = CreateInteractionResponse::Acknowledge;
    log_failure(bounded(http.create_interaction_response(id, token, &ack, vec![])).await);
}

/// A call to Discord bounded by [`ANSWER_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = serenity::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(ANSWER_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "Discord did not answer within {}ms",
            ANSWER_TIMEOUT.as_millis()
        )),
    }
}

fn log_failure<T>(result: Result<T, String>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not answer a Discord interaction");
    }
}

// ---- the HTTP interactions endpoint ----

struct Endpoint {
    inbound: Arc<Inbound>,
    verifier: Verifier,
}

/// `POST /discord/interactions`, when `[discord] public_key` is set.
pub fn routes(inbound: Arc<Inbound>) -> Option<Router> {
    let key = inbound.discord.config.public_key?;
    let verifier = match Verifier::try_new(key) {
        Ok(verifier) => verifier,
        Err(_) => {
            tracing::error!(
                "discord.public_key is not a valid ed25519 key; the interactions endpoint is off"
            );
            return None;
        }
    };
    let state = Arc::new(Endpoint { inbound, verifier });
    Some(
        Router::new()
            .route("/discord/interactions", post(endpoint))
            .with_state(state),
    )
}

fn rejected(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": "discord_request_rejected", "message": message}})),
    )
        .into_response()
}

impl Endpoint {
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = header("x-signature-ed25519").ok_or("missing X-Signature-Ed25519")?;
        let timestamp = header("x-signature-timestamp").ok_or("missing X-Signature-Timestamp")?;
        let sent_at: i64 = timestamp
            .parse()
            .map_err(|_| "X-Signature-Timestamp is not a Unix time")?;
        if (self.inbound.engine.time().real_now().timestamp() - sent_at).abs()
            > MAX_SIGNATURE_AGE_SECS
        {
            return Err("X-Signature-Timestamp is more than 5 minutes off");
        }
        self.verifier
            .verify(signature, timestamp, body)
            .map_err(|()| "bad signature")
    }
}

/// Decodes an interactions-endpoint request body (fuzzed in `fuzz/`). serenity 0.12.5's
/// `ImageHash` parser panics on some non-ASCII hashes; that is a malformed body, not a panic.
pub fn decode_interaction(body: &[u8]) -> Result<Interaction, serde_json::Error> {
    std::panic::catch_unwind(|| serde_json::from_slice(body)).unwrap_or_else(|_| {
        Err(serde::de::Error::custom(
            "malformed field (the Discord library could not decode it)",
        ))
    })
}

async fn endpoint(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(problem) = endpoint.verify(&headers, &body) {
        tracing::warn!(problem, "rejected a Discord interactions request");
        return rejected(StatusCode::UNAUTHORIZED, problem);
    }
    let interaction = match decode_interaction(&body) {
        Ok(interaction) => interaction,
        Err(e) => {
            return rejected(
                StatusCode::BAD_REQUEST,
                &format!("malformed interaction: {e}"),
            )
        }
    };
    if let Interaction::Ping(_) = interaction {
        return Json(json!({"type": 1})).into_response();
    }
    // Answered through the callback endpoint like gateway interactions; 202 tells Discord so.
    let inbound = endpoint.inbound.clone();
    tokio::spawn(async move { inbound.interaction(interaction).await });
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(start_paused = true)]
    async fn quick_work_is_answered_directly() {
        let deferred = AtomicBool::new(false);
        let work = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            "done"
        };
        let (result, was_deferred) =
            within_deadline(work, async { deferred.store(true, Ordering::SeqCst) }).await;
        assert_eq!((result, was_deferred), ("done", false));
        assert!(!deferred.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_work_is_deferred_before_discords_three_seconds() {
        let started = tokio::time::Instant::now();
        let deferred_at = std::sync::Mutex::new(None);
        let work = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "done"
        };
        let (result, was_deferred) = within_deadline(work, async {
            *deferred_at.lock().unwrap() = Some(started.elapsed());
        })
        .await;
        assert_eq!((result, was_deferred), ("done", true));
        let at = deferred_at.lock().unwrap().expect("deferred");
        assert!(at < Duration::from_secs(3), "deferred after {at:?}");
        assert!(started.elapsed() >= Duration::from_secs(10));
    }

    #[test]
    fn the_check_mark_matches_with_or_without_its_variation_selector() {
        assert!(same_emoji("✔️", "✔"));
        assert!(same_emoji("✔", "✔️"));
        assert!(!same_emoji("✅", "✔️"));
    }

    /// Found by `fuzz/` (discord_interaction): serenity 0.12.5 slices image hashes by byte, so a
    /// 34-byte avatar with a multi-byte character at an odd offset panicked the decoder.
    #[test]
    fn an_avatar_hash_with_a_multibyte_character_is_refused_not_a_panic() {
        let avatar = format!("a_0é{}", "0".repeat(29));
        assert_eq!(avatar.len(), 34);
        let body = serde_json::json!({
            "type": 2,
            "member": {"user": {"id": "1", "username": "a", "avatar": avatar}},
        });
        let error = decode_interaction(body.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("malformed"), "{error}");
    }
}
