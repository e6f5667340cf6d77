//! The engine: applies a request as one transaction (state + audit + outbox jobs), asks `domain`
//! for every decision, and answers a [`Reply`]. Workers carry out the jobs it leaves behind.

mod actions;
pub mod card;
mod cards;
pub mod chat;
pub mod clock;
pub mod error;
pub mod reply;
mod scheduler;
mod windows;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::config::{BackendConfig, Config, EnvironmentConfig, ServiceConfig};
use crate::deploy::command::CommandBackend;
use crate::deploy::Backend;
use crate::domain::command::{self, Command};
use crate::domain::identity::{Actor, Identity};
use crate::domain::promotion::{transition, CardAction, PromotionEvent, PromotionState};
use crate::metrics::{Metrics, StateLabels};
use crate::store::{AuditEvent, PromotionRecord, PromotionView, Store, Tx};

pub use chat::{ChatError, ChatOrigin, ChatPlatform, ChatPort};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{EngineError, ErrorKind};
pub use reply::{EnvironmentStatus, Reply, ServiceStatus};

/// Deploy backends by (service, environment).
#[derive(Clone, Default)]
pub struct Backends(HashMap<(String, String), Arc<dyn Backend>>);

impl Backends {
    /// The backends `bot.toml` describes; command backends run in the config's directory.
    pub fn from_config(config: &Config) -> Self {
        let mut backends = Backends::default();
        for service in &config.services {
            for env in &service.environments {
                let backend: Arc<dyn Backend> = match &env.backend {
                    BackendConfig::Command { run, timeout } => Arc::new(CommandBackend::new(
                        run.clone(),
                        *timeout,
                        config.base_dir.clone(),
                    )),
                };
                backends.insert(&service.name, &env.name, backend);
            }
        }
        backends
    }

    /// One backend for every environment of every service (benchmarks, tests of the layer above).
    pub fn uniform(config: &Config, backend: Arc<dyn Backend>) -> Self {
        let mut backends = Backends::default();
        for service in &config.services {
            for env in &service.environments {
                backends.insert(&service.name, &env.name, backend.clone());
            }
        }
        backends
    }

    pub fn insert(&mut self, service: &str, environment: &str, backend: Arc<dyn Backend>) {
        self.0
            .insert((service.to_string(), environment.to_string()), backend);
    }

    fn get(&self, service: &str, environment: &str) -> Option<Arc<dyn Backend>> {
        self.0
            .get(&(service.to_string(), environment.to_string()))
            .cloned()
    }
}

/// The engine. Cheap to clone; every front end holds one.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    backends: Backends,
    /// Chat platforms that keep promotion cards, by platform.
    chats: HashMap<ChatPlatform, Arc<dyn ChatPort>>,
    /// Wakes the workers when a transaction left them a job.
    jobs_ready: Notify,
    worker_id: String,
    /// Windows and planned freezes from the configuration.
    calendar: windows::Calendar,
    /// The scheduler's previous tick (`None` before the first).
    scheduler_since: std::sync::Mutex<Option<DateTime<Utc>>>,
}

/// What a reaction on a card means (the adapter maps its configured emoji sets to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionVote {
    Approve,
    Reject,
    /// An approve reaction was removed.
    Withdraw,
}

impl ReactionVote {
    /// SPEC §3: an approve reaction approves and its removal withdraws; a reject reaction rejects
    /// (removing it undoes nothing); other emoji mean nothing.
    pub fn from_reaction(approve_emoji: bool, reject_emoji: bool, added: bool) -> Option<Self> {
        match (approve_emoji, reject_emoji, added) {
            (true, _, true) => Some(ReactionVote::Approve),
            (true, _, false) => Some(ReactionVote::Withdraw),
            (false, true, true) => Some(ReactionVote::Reject),
            _ => None,
        }
    }
}

/// A promotion with its audit trail, for `GET /api/v1/promotions/{id}`.
pub struct PromotionDetail {
    pub view: PromotionView,
    pub events: Vec<AuditEvent>,
}

impl Engine {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        backends: Backends,
        chats: Vec<Arc<dyn ChatPort>>,
    ) -> Self {
        Engine {
            inner: Arc::new(Inner {
                calendar: windows::Calendar::from_config(&config),
                scheduler_since: std::sync::Mutex::new(None),
                config,
                store,
                clock,
                metrics,
                backends,
                chats: chats
                    .into_iter()
                    .map(|chat| (chat.platform(), chat))
                    .collect(),
                jobs_ready: Notify::new(),
                worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Parses and runs one line of the command grammar (`promote api 1.4.2`).
    pub async fn execute_text(
        &self,
        actor: &Actor,
        text: &str,
        origin: Option<&ChatOrigin>,
    ) -> Result<Reply, EngineError> {
        let command = command::parse(text).map_err(|e| EngineError::bad_input(e.to_string()))?;
        self.execute_from(actor, command, origin).await
    }

    /// Runs one command for `actor`.
    pub async fn execute(&self, actor: &Actor, command: Command) -> Result<Reply, EngineError> {
        self.execute_from(actor, command, None).await
    }

    /// Runs one command typed in a chat channel: new cards go there when the service names no
    /// channel of its own.
    pub async fn execute_from(
        &self,
        actor: &Actor,
        command: Command,
        origin: Option<&ChatOrigin>,
    ) -> Result<Reply, EngineError> {
        match command {
            Command::Help { topic } => Ok(Reply::Help(command::help_text(topic.as_deref()))),
            Command::Create {
                service,
                version,
                commit,
                notes,
            } => self
                .create_release(
                    actor,
                    &service,
                    &version,
                    commit.as_deref(),
                    notes.as_deref(),
                )
                .await
                .map(Reply::Release),
            Command::Promote {
                service,
                version,
                to,
                force_reason,
            } => self
                .promote(
                    actor,
                    &service,
                    &version,
                    to.as_deref(),
                    force_reason.as_deref(),
                    origin,
                )
                .await
                .map(|view| Reply::promotion(view, "requested")),
            Command::Approve { id } => self.vote(actor, id, actions::VoteKind::Approve).await,
            Command::Reject { id, reason } => {
                self.vote(actor, id, actions::VoteKind::Reject(reason))
                    .await
            }
            Command::Cancel { id } => self
                .cancel(actor, id)
                .await
                .map(|view| Reply::promotion(view, "cancelled")),
            Command::Retry { id } => self
                .retry(actor, id, origin)
                .await
                .map(|view| Reply::promotion(view, "retry requested")),
            Command::Rollback {
                service,
                environment,
                to,
            } => self
                .rollback(actor, &service, &environment, to.as_ref(), origin)
                .await
                .map(|view| Reply::promotion(view, "rollback requested")),
            Command::Status { service } => self.status(service.as_deref()).await.map(Reply::Status),
            Command::History {
                service,
                environment,
                last,
            } => self
                .history(&service, environment.as_deref(), last.unwrap_or(10))
                .await
                .map(|promotions| Reply::History {
                    service,
                    promotions,
                }),
            Command::Windows { environment } => self
                .windows_report(environment.as_deref())
                .await
                .map(Reply::Text),
            Command::Freeze {
                target,
                duration,
                reason,
            } => self
                .freeze(actor, &target, duration, reason.as_deref())
                .await
                .map(Reply::Text),
            Command::Unfreeze { target } => self.unfreeze(actor, &target).await.map(Reply::Text),
        }
    }

    /// A removed approve reaction: takes the actor's approval back while votes are open.
    pub async fn withdraw(&self, actor: &Actor, id: i64) -> Result<Reply, EngineError> {
        self.vote(actor, id, actions::VoteKind::Withdraw).await
    }

    /// A button clicked on a promotion's card.
    pub async fn card_action(
        &self,
        actor: &Actor,
        action: CardAction,
        id: i64,
        origin: Option<&ChatOrigin>,
    ) -> Result<Reply, EngineError> {
        let command = match action {
            CardAction::Approve => Command::Approve { id },
            CardAction::Reject => Command::Reject { id, reason: None },
            CardAction::Cancel => Command::Cancel { id },
            CardAction::Retry => Command::Retry { id },
            CardAction::Rollback => {
                let promotion = self
                    .store()
                    .promotion(id)
                    .await?
                    .ok_or_else(|| unknown_promotion(id))?;
                Command::Rollback {
                    service: promotion.service,
                    environment: promotion.environment,
                    to: None,
                }
            }
        };
        self.execute_from(actor, command, origin).await
    }

    /// A reaction on a promotion's card.
    pub async fn react(
        &self,
        actor: &Actor,
        id: i64,
        vote: ReactionVote,
    ) -> Result<Reply, EngineError> {
        let command = match vote {
            ReactionVote::Approve => Command::Approve { id },
            ReactionVote::Reject => Command::Reject { id, reason: None },
            ReactionVote::Withdraw => return self.withdraw(actor, id).await,
        };
        self.execute(actor, command).await
    }

    pub async fn promotion_detail(&self, id: i64) -> Result<PromotionDetail, EngineError> {
        let view = self
            .store()
            .promotion_view(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        let events = self.store().events(id).await?;
        Ok(PromotionDetail { view, events })
    }

    pub async fn deploy_log(&self, id: i64) -> Result<Vec<String>, EngineError> {
        self.store()
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        Ok(self.store().deploy_log(id).await?)
    }

    /// What runs where, and what is active, for one service or all.
    pub async fn status(&self, service: Option<&str>) -> Result<Vec<ServiceStatus>, EngineError> {
        if let Some(name) = service {
            self.service(name)?;
        }
        let rows = self.store().status(service).await?;
        Ok(reply::status_from_rows(self.config(), service, &rows))
    }

    pub async fn history(
        &self,
        service: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PromotionRecord>, EngineError> {
        let config = self.service(service)?;
        if let Some(env) = environment {
            environment_of(config, env)?;
        }
        Ok(self
            .store()
            .history(service, environment, limit.clamp(1, 100))
            .await?)
    }

    /// Prometheus text for `/metrics`.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let active = self.store().active_counts().await?;
        Ok(self.metrics().render(&active))
    }

    fn service(&self, name: &str) -> Result<&ServiceConfig, EngineError> {
        self.config().service(name).ok_or_else(|| {
            EngineError::not_found(format!(
                "unknown service `{name}`; known services: {}",
                self.config().service_names().join(", ")
            ))
        })
    }

    fn notify_workers(&self) {
        self.inner.jobs_ready.notify_one();
    }

    /// Moves `promotion` through `event` inside `tx`, with its audit event. The stored row must
    /// still be in the state we read (a replica or worker may have moved it).
    async fn apply(
        &self,
        tx: &mut Tx,
        promotion: &PromotionRecord,
        event: PromotionEvent,
        actor: &Identity,
        detail: &str,
    ) -> Result<PromotionRecord, EngineError> {
        let now = self.now();
        let state = transition(promotion.state, event)
            .map_err(|e| EngineError::conflict(format!("{}: {e}", describe(promotion))))?;
        let mut updated = promotion.clone();
        updated.state = state;
        updated.updated_at = now;
        if state == PromotionState::Deploying {
            updated.started_at = Some(now);
        }
        if state.is_terminal() && updated.finished_at.is_none() {
            updated.finished_at = Some(now);
        }
        // The reason says why a promotion stopped short or waits; progress notes stay in the
        // audit trail.
        if (state.is_terminal() && state != PromotionState::Succeeded)
            || state == PromotionState::Queued
        {
            updated.reason = Some(detail.to_string());
        }
        if state == PromotionState::Deploying {
            updated.reason = None;
        }
        tx.update_promotion(&updated, promotion.state).await?;
        tx.audit(Some(promotion.id), actor, state.as_str(), detail, now)
            .await?;
        self.touch_cards(tx, promotion.id).await?;
        if state.is_terminal() && state != PromotionState::RolledBack {
            self.count_terminal(&updated);
        }
        Ok(updated)
    }

    fn count_terminal(&self, promotion: &PromotionRecord) {
        self.metrics()
            .promotions
            .get_or_create(&StateLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
                state: promotion.state.as_str().to_string(),
            })
            .inc();
    }
}

pub(crate) fn environment_of<'a>(
    service: &'a ServiceConfig,
    name: &str,
) -> Result<&'a EnvironmentConfig, EngineError> {
    service.environment(name).ok_or_else(|| {
        EngineError::not_found(format!(
            "{} has no environment `{name}`; its pipeline is {}",
            service.name,
            service.pipeline().join(" → ")
        ))
    })
}

pub(crate) fn unknown_promotion(id: i64) -> EngineError {
    EngineError::not_found(format!(
        "there is no promotion #{id}; /release status lists the active ones"
    ))
}

/// `#41 api 1.4.1 → production`
pub(crate) fn describe(promotion: &PromotionRecord) -> String {
    format!(
        "#{} {} {} → {}",
        promotion.id, promotion.service, promotion.version, promotion.environment
    )
}

/// Real time, for pacing chat deliveries: platforms rate-limit in real seconds, whatever the
/// engine's (possibly manual) clock says.
pub(crate) fn wall_now() -> DateTime<Utc> {
    Utc::now()
}

/// The bot itself, as the actor of what it does on its own (recovery, expiry).
pub(crate) fn bot_identity() -> Identity {
    Identity::new("shipmate", "bot")
}
