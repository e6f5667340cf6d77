//! Running one command of the grammar: each goes to the use case that owns it.

use crate::domain::command::{self, Command};
use crate::domain::identity::Actor;
use crate::domain::promotion::CardAction;

use super::chat::ChatOrigin;
use super::controls::{Control, Controls};
use super::dora::Dora;
use super::freezes::Freezes;
use super::promotions::{Overrides, Promotions};
use super::reply::Reply;
use super::view::Reads;
use super::votes::VoteKind;
use super::EngineError;

pub(super) struct Commands {
    pub promotions: Promotions,
    pub freezes: Freezes,
    pub reads: Reads,
    pub controls: Controls,
    pub dora: Dora,
}

impl Commands {
    /// Runs `command` for `actor`. New cards go to `origin` when the service names no channel.
    pub async fn execute(
        &self,
        actor: &Actor,
        command: Command,
        origin: Option<&ChatOrigin>,
    ) -> Result<Reply, EngineError> {
        let promotions = &self.promotions;
        match command {
            Command::Help { topic } => Ok(Reply::Help(command::help_text(topic.as_deref()))),
            Command::Create {
                service,
                version,
                commit,
                notes,
                manifest,
            } => promotions
                .create_release(
                    actor,
                    &service,
                    &version,
                    commit.as_deref(),
                    notes.as_deref(),
                    &manifest,
                )
                .await
                .map(|(release, created)| Reply::Release {
                    release: Box::new(release),
                    created,
                }),
            Command::Promote {
                service,
                version,
                to,
                force_reason,
                hotfix_reason,
            } => promotions
                .promote(
                    actor,
                    &service,
                    &version,
                    to.as_deref(),
                    Overrides {
                        force: force_reason.as_deref(),
                        hotfix: hotfix_reason.as_deref(),
                    },
                    origin,
                )
                .await
                .map(|view| Reply::promotion(view, "requested")),
            Command::Approve { id } => promotions.vote(actor, id, VoteKind::Approve).await,
            Command::Check { id, item } => promotions.tick(actor, id, item).await,
            Command::Why { id } => promotions
                .why(id)
                .await
                .map(|why| Reply::Text(why.to_text())),
            Command::Reject { id, reason } => {
                promotions.vote(actor, id, VoteKind::Reject(reason)).await
            }
            Command::Cancel { id } => promotions
                .cancel(actor, id)
                .await
                .map(|view| Reply::promotion(view, "cancelled")),
            Command::Retry { id } => promotions
                .retry(actor, id, origin)
                .await
                .map(|view| Reply::promotion(view, "retry requested")),
            Command::Rollback {
                service,
                environment,
                to,
            } => promotions
                .rollback(actor, &service, &environment, to.as_ref(), origin)
                .await
                .map(|view| Reply::promotion(view, "rollback requested")),
            Command::Pause { id } => self.controls.control(actor, id, Control::Pause).await,
            Command::Resume { id } => self.controls.control(actor, id, Control::Resume).await,
            Command::Advance { id } => self.controls.control(actor, id, Control::Advance).await,
            Command::Abort { id, reason } => {
                self.controls
                    .control(actor, id, Control::Abort { reason })
                    .await
            }
            other => self.execute_report(actor, other).await,
        }
    }

    /// The commands that report or set freezes rather than move a promotion.
    async fn execute_report(&self, actor: &Actor, command: Command) -> Result<Reply, EngineError> {
        match command {
            Command::Status { service } => self
                .reads
                .status(service.as_deref())
                .await
                .map(Reply::Status),
            Command::History {
                service,
                environment,
                last,
            } => self
                .reads
                .history(&service, environment.as_deref(), last.unwrap_or(10))
                .await
                .map(|promotions| Reply::History {
                    service,
                    promotions,
                }),
            Command::Windows { environment } => self
                .freezes
                .windows_report(environment.as_deref())
                .await
                .map(Reply::Text),
            Command::Freeze {
                target,
                duration,
                reason,
            } => self
                .freezes
                .freeze(actor, &target, duration, reason.as_deref())
                .await
                .map(Reply::Text),
            Command::Unfreeze { target } => {
                self.freezes.unfreeze(actor, &target).await.map(Reply::Text)
            }
            Command::Dora {
                service,
                environment,
                days,
            } => self
                .dora
                .chat(service.as_deref(), environment.as_deref(), days)
                .await
                .map(Reply::Text),
            moving => Err(EngineError::new(
                super::ErrorKind::Internal,
                format!("`{moving:?}` is not a report"),
            )),
        }
    }

    /// The command a card button stands for.
    pub async fn card_command(&self, action: CardAction, id: i64) -> Result<Command, EngineError> {
        Ok(match action {
            CardAction::Approve => Command::Approve { id },
            CardAction::Reject => Command::Reject { id, reason: None },
            CardAction::Cancel => Command::Cancel { id },
            CardAction::Retry => Command::Retry { id },
            CardAction::Pause => Command::Pause { id },
            CardAction::Resume => Command::Resume { id },
            CardAction::Abort => Command::Abort { id, reason: None },
            CardAction::Rollback => {
                let promotion = self.reads.promotion_view(id).await?.promotion;
                Command::Rollback {
                    service: promotion.service,
                    environment: promotion.environment,
                    to: None,
                }
            }
        })
    }
}
