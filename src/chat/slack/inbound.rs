//! Slack's inbound endpoints: `/slack/commands`, `/slack/interactions`, `/slack/events`.
//! Every request is verified over its raw body before anything is parsed, answered within
//! Slack's 3 seconds, and deduplicated in the database where Slack may deliver it twice.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use slack_morphism::prelude::*;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use super::blocks::{escape, parse_action, parse_checklist};
use super::Slack;
use crate::domain::identity::{Actor, Identity};
use crate::engine::{
    ChatOrigin, ChatPlatform, Engine, EngineError, ErrorKind, ReactionVote, Request, RequestKind,
};

/// What the inbound endpoints share; Socket Mode feeds the same handlers.
pub(crate) struct Inbound {
    engine: Engine,
    slack: Arc<Slack>,
    verifier: SlackEventSignatureVerifier,
}

impl Inbound {
    pub(crate) fn new(engine: Engine, slack: Arc<Slack>) -> Arc<Inbound> {
        let secret = SlackSigningSecret::new(slack.config.signing_secret.expose().to_string());
        Arc::new(Inbound {
            engine,
            verifier: SlackEventSignatureVerifier::new(&secret),
            slack,
        })
    }
}

pub fn routes(engine: Engine, slack: Arc<Slack>) -> Router {
    let state = Inbound::new(engine, slack);
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
        .route("/slack/events", post(events))
        .with_state(state)
}

fn rejected(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": "slack_request_rejected", "message": message}})),
    )
        .into_response()
}

/// A request that is not provably from Slack.
struct Unverified(&'static str);

impl IntoResponse for Unverified {
    fn into_response(self) -> Response {
        rejected(StatusCode::UNAUTHORIZED, self.0)
    }
}

/// A request body Slack signed: the extractor every Slack endpoint starts with.
struct Signed(String);

impl FromRequest<Arc<Inbound>> for Signed {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        inbound: &Arc<Inbound>,
    ) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, inbound)
            .await
            .map_err(IntoResponse::into_response)?;
        inbound
            .verify(&headers, &body)
            .map(Signed)
            .map_err(IntoResponse::into_response)
    }
}

impl Inbound {
    /// The body, if Slack signed it in the last 5 minutes; otherwise the 401 to answer.
    fn verify(&self, headers: &HeaderMap, body: &Bytes) -> Result<String, Unverified> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER)
            .ok_or(Unverified("missing X-Slack-Signature"))?;
        let timestamp = header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP)
            .ok_or(Unverified("missing X-Slack-Request-Timestamp"))?;
        let body = std::str::from_utf8(body).map_err(|_| Unverified("body is not UTF-8"))?;
        self.verifier
            .verify(signature, body, timestamp)
            .map_err(|e| {
                tracing::warn!(error = %e, "rejected a Slack request");
                Unverified("bad signature or a timestamp older than 5 minutes")
            })?;
        Ok(body.to_string())
    }

    async fn actor(&self, user: &str) -> Actor {
        Actor::new(Identity::new("slack", user))
            .with_memberships(self.slack.actor_identities(user).await)
    }

    /// Counts what Slack sent that never became a request.
    fn count_unhandled(&self, kind: &str, outcome: &str) {
        self.engine
            .count_unhandled(ChatPlatform::Slack, kind, outcome);
    }

    /// A request from `user` in `channel`.
    async fn request(&self, user: &str, channel: &str, kind: RequestKind) -> Request {
        Request {
            actor: self.actor(user).await,
            origin: Some(origin(channel)),
            delivery: None,
            kind,
        }
    }

    fn tell_later(&self, channel: String, user: String, text: String) {
        let slack = self.slack.clone();
        tokio::spawn(async move { slack.tell(&channel, &user, &escape(&text)).await });
    }
}

// ---- slash commands ----

/// Decodes a slash command's form body (the step before anything acts on it; fuzzed in `fuzz/`).
pub fn decode_slash_command(body: &str) -> Result<SlashCommand, serde_urlencoded::de::Error> {
    serde_urlencoded::from_str(body)
}

async fn commands(State(inbound): State<Arc<Inbound>>, Signed(body): Signed) -> Response {
    let event = match decode_slash_command(&body) {
        Ok(event) => event,
        Err(e) => {
            return rejected(
                StatusCode::BAD_REQUEST,
                &format!("malformed slash command: {e}"),
            )
        }
    };
    Json(json!({"response_type": "ephemeral", "text": inbound.command(event).await}))
        .into_response()
}

/// The fields of a slash command the bot uses. Decoding only these (not slack-morphism's whole
/// `SlackCommandEvent`, which parses `response_url` as a URL) is a tenth of a command's CPU.
#[derive(Debug, Deserialize)]
pub struct SlashCommand {
    pub user_id: String,
    pub channel_id: String,
    #[serde(default)]
    pub text: String,
}

impl From<SlackCommandEvent> for SlashCommand {
    fn from(event: SlackCommandEvent) -> Self {
        SlashCommand {
            user_id: event.user_id.to_string(),
            channel_id: event.channel_id.to_string(),
            text: event.text.unwrap_or_default(),
        }
    }
}

impl Inbound {
    /// Runs a slash command; returns the reply for the person who typed it (Slack-escaped).
    pub(crate) async fn command(&self, event: SlashCommand) -> String {
        let kind = RequestKind::Typed(event.text);
        let request = self.request(&event.user_id, &event.channel_id, kind).await;
        let reply = match self.engine.handle(request).await {
            Ok(reply) => reply.to_text(),
            Err(error) => error.message,
        };
        escape(&reply)
    }
}

// ---- buttons ----

#[derive(Deserialize)]
struct InteractionForm {
    payload: String,
}

/// Decodes an interactivity request: a form whose `payload` field is the JSON event (fuzzed in
/// `fuzz/`).
pub fn decode_interaction(body: &str) -> Result<SlackInteractionEvent, String> {
    serde_urlencoded::from_str::<InteractionForm>(body)
        .map_err(|e| e.to_string())
        .and_then(|form| {
            serde_json::from_str::<SlackInteractionEvent>(&form.payload).map_err(|e| e.to_string())
        })
}

async fn interactions(State(inbound): State<Arc<Inbound>>, Signed(body): Signed) -> Response {
    match decode_interaction(&body) {
        Ok(event) => {
            inbound.interaction(event).await;
            StatusCode::OK.into_response()
        }
        Err(e) => rejected(
            StatusCode::BAD_REQUEST,
            &format!("malformed interaction payload: {e}"),
        ),
    }
}

async fn block_actions(inbound: &Inbound, event: SlackInteractionBlockActionsEvent) {
    let Some(user) = event.user.map(|u| u.id.to_string()) else {
        return;
    };
    let channel = match &event.container {
        SlackInteractionActionContainer::Message(message) => {
            message.channel_id.as_ref().map(ToString::to_string)
        }
        _ => None,
    }
    .or_else(|| event.channel.map(|c| c.id.to_string()));
    let Some(channel) = channel else {
        return;
    };
    let actions = event.actions.unwrap_or_default();
    let ours = actions
        .iter()
        .filter_map(|action| parse_action(action.action_id.as_ref(), action.value.as_deref()));
    for (index, (action, promotion)) in ours.enumerate() {
        // One click is one trigger id; a second action in it (there is none today) gets its own.
        let delivery = match index {
            0 => event.trigger_id.to_string(),
            n => format!("{}:{n}", event.trigger_id),
        };
        let kind = RequestKind::CardAction { action, promotion };
        let request = inbound
            .request(&user, &channel, kind)
            .await
            .delivered("slack:interaction", delivery);
        if let Err(error) = inbound.engine.handle(request).await {
            inbound.tell_later(channel.clone(), user.clone(), error.message);
        }
    }
    for action in &actions {
        let selected: Vec<String> = action
            .selected_options
            .iter()
            .flatten()
            .map(|option| option.value.clone())
            .collect();
        for (promotion, item) in parse_checklist(action.action_id.as_ref(), &selected) {
            // Slack sends every checked box; the engine takes an item ticked before as a no-op.
            let kind = RequestKind::ChecklistTick { promotion, item };
            let request = inbound.request(&user, &channel, kind).await.delivered(
                "slack:interaction",
                format!("{}:check:{item}", event.trigger_id),
            );
            if let Err(error) = inbound.engine.handle(request).await {
                inbound.tell_later(channel.clone(), user.clone(), error.message);
            }
        }
    }
}

// ---- events: reactions ----

/// Decodes an Events API delivery (fuzzed in `fuzz/`).
pub fn decode_event(body: &str) -> Result<SlackPushEvent, serde_json::Error> {
    serde_json::from_str(body)
}

async fn events(State(inbound): State<Arc<Inbound>>, Signed(body): Signed) -> Response {
    let event = match decode_event(&body) {
        Ok(event) => event,
        Err(e) => return rejected(StatusCode::BAD_REQUEST, &format!("malformed event: {e}")),
    };
    match event {
        SlackPushEvent::UrlVerification(verification) => (
            [(header::CONTENT_TYPE, "text/plain")],
            verification.challenge,
        )
            .into_response(),
        SlackPushEvent::EventCallback(callback) => match inbound.push_event(callback).await {
            Ok(()) => StatusCode::OK.into_response(),
            // Not recorded: a non-2xx answer makes Slack deliver the event again.
            Err(error) => rejected(StatusCode::SERVICE_UNAVAILABLE, &error.message),
        },
        SlackPushEvent::AppRateLimited(_) => {
            tracing::warn!("Slack is dropping events: app_rate_limited");
            StatusCode::OK.into_response()
        }
    }
}

impl Inbound {
    /// An Events API delivery; the engine acts on it once per event id however often Slack
    /// sends it.
    /// An error means the bot could not act on it now (its database failed) and Slack should
    /// deliver it again.
    pub(crate) async fn push_event(
        &self,
        callback: SlackPushEventCallback,
    ) -> Result<(), EngineError> {
        event_callback(self, callback.event_id.as_ref(), callback.event).await
    }

    /// Button clicks, once per trigger id.
    pub(crate) async fn interaction(&self, event: SlackInteractionEvent) {
        if let SlackInteractionEvent::BlockActions(event) = event {
            block_actions(self, event).await;
        }
    }
}

/// A reaction as Slack reports it.
struct SlackReaction<'a> {
    event_id: &'a str,
    user: &'a str,
    name: &'a str,
    item: &'a SlackReactionsItem,
    added: bool,
}

async fn event_callback(
    inbound: &Inbound,
    event_id: &str,
    event: SlackEventCallbackBody,
) -> Result<(), EngineError> {
    let reacted = match &event {
        SlackEventCallbackBody::ReactionAdded(r) => SlackReaction {
            event_id,
            user: r.user.as_ref(),
            name: r.reaction.as_ref(),
            item: &r.item,
            added: true,
        },
        SlackEventCallbackBody::ReactionRemoved(r) => SlackReaction {
            event_id,
            user: r.user.as_ref(),
            name: r.reaction.as_ref(),
            item: &r.item,
            added: false,
        },
        _ => {
            inbound.count_unhandled("event", "ignored");
            return Ok(());
        }
    };
    reaction(inbound, reacted).await
}

async fn reaction(inbound: &Inbound, reacted: SlackReaction<'_>) -> Result<(), EngineError> {
    let SlackReactionsItem::Message(message) = reacted.item else {
        return Ok(());
    };
    let Some(channel) = message.origin.channel.as_ref().map(ToString::to_string) else {
        return Ok(());
    };
    let config = &inbound.slack.config;
    let approves = config.approve_reactions.iter().any(|r| r == reacted.name);
    let rejects = config.reject_reactions.iter().any(|r| r == reacted.name);
    let Some(vote) = ReactionVote::from_reaction(approves, rejects, reacted.added) else {
        return Ok(());
    };
    let kind = RequestKind::Reaction {
        message_id: message.origin.ts.to_string(),
        vote,
    };
    let request = inbound
        .request(reacted.user, &channel, kind)
        .await
        .delivered("slack:event", reacted.event_id);
    match inbound.engine.handle(request).await {
        Err(error) if error.kind == ErrorKind::Internal => return Err(error),
        Err(error) => inbound.tell_later(channel, reacted.user.to_string(), error.message),
        Ok(_) => {}
    }
    Ok(())
}

fn origin(channel: &str) -> ChatOrigin {
    ChatOrigin {
        platform: ChatPlatform::Slack,
        channel: channel.to_string(),
    }
}
