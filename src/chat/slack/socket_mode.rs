//! Slack Socket Mode: when `[slack].app_token` is set, the bot opens WebSockets to Slack
//! (`apps.connections.open` with the app-level `xapp-` token) and receives slash commands,
//! button clicks and events over them, so no public URL is needed. Envelopes are handled by the
//! same [`Inbound`] code as the HTTP endpoints; they need no signature check.
//!
//! slack-morphism acknowledges an envelope only after its callback returns, and reads the next
//! frame of a connection only then, so the callbacks do what the HTTP handlers do before they
//! answer (database work; slow notices are already spawned) and nothing more. Connecting,
//! pinging, reconnecting after errors or a `disconnect` frame and retrying
//! `apps.connections.open` are the crate's job (by default 2 connections, a ping every 15 s,
//! reconnect attempts every 30 s), and it logs its connection errors through `tracing`.

use std::sync::Arc;

use slack_morphism::prelude::*;
use tokio_util::sync::CancellationToken;

use super::inbound::Inbound;
use super::Slack;
use crate::engine::{Engine, GatewayTurn};

/// What slack-morphism passes to error handlers (its own alias is private).
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Listens on Socket Mode with `[slack].app_token` until `shutdown` fires, then closes the
/// connections. Returns at once when no app token is configured. Only the replica holding the
/// gateway lock listens (`turn` is the proof; the caller fires `shutdown` when it is lost), so
/// with several replicas one set of connections is open.
pub async fn run(
    engine: Engine,
    slack: Arc<Slack>,
    turn: &GatewayTurn,
    shutdown: CancellationToken,
) {
    let Some(app_token) = slack.config.app_token.as_ref() else {
        return;
    };
    if turn.is_lost() {
        return;
    }
    let token = SlackApiToken::new(app_token.expose().to_string().into());
    let environment = SlackClientEventsListenerEnvironment::new(slack.client())
        .with_error_handler(on_error)
        .with_user_state(Inbound::new(engine, slack.clone()));
    let callbacks = SlackSocketModeListenerCallbacks::new()
        .with_hello_events(on_hello)
        .with_command_events(on_command)
        .with_interaction_events(on_interaction)
        .with_push_events(on_push_event);
    let listener = SlackClientSocketModeListener::new(
        &SlackClientSocketModeConfig::new(),
        Arc::new(environment),
        callbacks,
    );
    if let Err(e) = listener.listen_for(&token).await {
        tracing::error!(error = %e, "could not start Slack Socket Mode");
        return;
    }
    listener.start().await;
    tracing::info!("Slack Socket Mode started");
    shutdown.cancelled().await;
    listener.shutdown().await;
    tracing::info!("Slack Socket Mode stopped");
}

async fn inbound(state: &SlackClientEventsUserState) -> Result<Arc<Inbound>, BoxError> {
    state
        .read()
        .await
        .get_user_state::<Arc<Inbound>>()
        .cloned()
        .ok_or_else(|| "the Socket Mode listener has no inbound handler".into())
}

/// `hello` frames; generic because slack-morphism 2.31.1 does not export the event's type name.
async fn on_hello<E: std::fmt::Debug>(
    event: E,
    _client: Arc<SlackHyperClient>,
    _state: SlackClientEventsUserState,
) {
    tracing::info!(hello = ?event, "connected to Slack Socket Mode");
}

async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<SlackHyperClient>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let reply = inbound(&state).await?.command(event.into()).await;
    Ok(
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(reply))
            .with_response_type(SlackMessageResponseType::Ephemeral),
    )
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackHyperClient>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    inbound(&state).await?.interaction(event).await;
    Ok(())
}

async fn on_push_event(
    event: SlackPushEventCallback,
    _client: Arc<SlackHyperClient>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    inbound(&state).await?.push_event(event).await?;
    Ok(())
}

/// Connection and protocol errors, and callback failures. Answering a success status makes the
/// crate acknowledge a failed envelope: redelivering it would fail the same way.
fn on_error(
    error: BoxError,
    _client: Arc<SlackHyperClient>,
    _state: SlackClientEventsUserState,
) -> HttpStatusCode {
    tracing::warn!(error = %error, "Slack Socket Mode error");
    HttpStatusCode::OK
}
