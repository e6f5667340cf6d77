//! The gateway connection: serenity's client with the intents the bot needs, feeding interactions
//! and reactions to [`Inbound`]. serenity reconnects a dropped shard itself (RECONNECT, INVALID
//! SESSION, a closed socket); this loop only restarts the client if it stops altogether.

use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ClientBuilder, Context, EventHandler, GatewayIntents, Interaction, Reaction, Ready,
};
use serenity::async_trait;
use tokio_util::sync::CancellationToken;

use super::inbound::Inbound;
use super::{build_http, commands};
use crate::engine::GatewayTurn;

const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Slash commands and buttons need no intent; reactions need these two, neither privileged.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGE_REACTIONS
        | GatewayIntents::DIRECT_MESSAGE_REACTIONS
}

struct Handler {
    inbound: Arc<Inbound>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.inbound.discord().learn_bot_user(ready.user.id);
        tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "connected to the Discord gateway");
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        self.inbound.interaction(interaction).await;
    }

    async fn reaction_add(&self, _ctx: Context, reaction: Reaction) {
        self.inbound.reaction(reaction, true).await;
    }

    async fn reaction_remove(&self, _ctx: Context, reaction: Reaction) {
        self.inbound.reaction(reaction, false).await;
    }
}

/// Registers `/release`, then keeps a gateway session up until `shutdown`. Only the replica
/// holding the gateway lock may: `turn` is the proof (the caller fires `shutdown` when the turn
/// is lost, and a lost turn opens no new session).
pub async fn run(inbound: Arc<Inbound>, turn: &GatewayTurn, shutdown: CancellationToken) {
    let config = inbound.discord().config.clone();
    match commands::register(inbound.discord().http(), config.guild_id).await {
        Ok(()) => tracing::info!(guild = ?config.guild_id, "registered the /release command"),
        Err(e) => {
            tracing::error!(error = %e, "could not register the /release command; run `shipmate discord register-commands` once Discord is reachable")
        }
    }
    let handler = Arc::new(Handler { inbound });
    let mut delay = Duration::from_secs(1);
    while !shutdown.is_cancelled() && !turn.is_lost() {
        let http = match build_http(&config) {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "Discord is off");
                return;
            }
        };
        match ClientBuilder::new_with_http(http, intents())
            .event_handler_arc(handler.clone())
            .await
        {
            Ok(mut client) => {
                let shards = client.shard_manager.clone();
                tokio::select! {
                    result = client.start() => match result {
                        Ok(()) => tracing::warn!("the Discord gateway client stopped; restarting"),
                        Err(e) => tracing::error!(error = %e, "the Discord gateway client failed; restarting"),
                    },
                    () = shutdown.cancelled() => {
                        shards.shutdown_all().await;
                        return;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not start the Discord gateway client"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}
