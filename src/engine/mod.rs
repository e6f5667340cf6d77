//! The engine. One way in: [`Engine::handle`] takes a [`Request`] from any front end (Slack,
//! Discord, the HTTP API, the scheduler), drops repeated platform deliveries, finds the card a
//! reaction is on, runs the request through the use case that owns it, and answers a [`Reply`].
//! Each use case is a small type holding only what it uses:
//!
//! - [`promotions`] / [`votes`]: create, promote, vote, cancel, retry, roll back, expire;
//! - [`freezes`]: freeze, unfreeze, the windows report;
//! - [`deploys`]: the deploy worker (jobs, leases, the backend, its output and end);
//! - [`outbox`]: cards and announcements sent to the chat platforms;
//! - [`scheduler`]: window and freeze announcements, `[[schedule]]`s, starting the queue.
//!
//! They share the [`ledger`] (a promotion's move stored with its audit event and the card
//! updates it owes, in one transaction) and the [`calendar`] (windows and freezes). The rules
//! themselves are in `domain`.

mod announcer;
mod calendar;
pub mod card;
pub mod chat;
pub mod clock;
pub mod cluster;
mod commands;
mod controls;
mod deploys;
mod dora;
pub mod error;
mod freezes;
pub mod governance;
mod ledger;
mod outbox;
pub mod pages;
mod promotions;
pub mod reply;
pub mod request;
mod rollout;
mod scheduler;
pub mod signing;
pub mod view;
mod votes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EnvironmentConfig, ServiceConfig};
use crate::deploy::Backend;
use crate::domain::command;
use crate::domain::identity::Identity;
use crate::metrics::Metrics;
use crate::store::{DeliveryMark, Store};
use crate::verify::Prober;

pub use crate::domain::approval::ReactionVote;
pub use crate::domain::dora::DoraReport;
pub use crate::store::ReplicaRecord;
pub use chat::{ChatError, ChatOrigin, ChatPlatform, ChatPort};
pub use clock::{Clock, ManualClock, SystemClock, Time};
pub use cluster::{Cluster, ClusterView, GatewayTurn};
pub use dora::{DoraEntry, DoraQuery};
pub use error::{EngineError, ErrorKind};
pub use reply::{EnvironmentStatus, Reply, ServiceStatus};
pub use request::{Delivery, Request, RequestKind};
pub use view::{PromotionDetail, PromotionView};

use commands::Commands;
use request::Deliveries;
use view::Reads;

/// Deploy backends and verification probers by (service, environment). `app` builds them from
/// the configuration.
#[derive(Clone, Default)]
pub struct Backends {
    deploy: HashMap<(String, String), Arc<dyn Backend>>,
    probers: HashMap<(String, String), Arc<dyn Prober>>,
}

impl Backends {
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
        self.deploy
            .insert((service.to_string(), environment.to_string()), backend);
    }

    /// The prober of an environment's `verify` checks.
    pub fn insert_prober(&mut self, service: &str, environment: &str, prober: Arc<dyn Prober>) {
        self.probers
            .insert((service.to_string(), environment.to_string()), prober);
    }

    fn get(&self, service: &str, environment: &str) -> Option<Arc<dyn Backend>> {
        self.deploy
            .get(&(service.to_string(), environment.to_string()))
            .cloned()
    }

    /// Whether the environment's backend works remotely (its calls are resumed, not interrupted).
    fn is_remote(&self, service: &str, environment: &str) -> bool {
        self.get(service, environment)
            .is_some_and(|backend| backend.is_remote())
    }

    fn prober(&self, service: &str, environment: &str) -> Option<Arc<dyn Prober>> {
        self.probers
            .get(&(service.to_string(), environment.to_string()))
            .cloned()
    }
}

/// The engine. Cheap to clone; every front end holds one.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Parts>,
}

struct Parts {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    store: Store,
    time: Time,
    commands: Arc<Commands>,
    deliveries: Deliveries,
    workers: worker::Workers,
    cluster: cluster::Cluster,
    pages: pages::WebReads,
    /// For building the commands of a request that records its delivery.
    shared: Shared,
}

/// What the engine is built from.
pub struct EngineParts {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub metrics: Arc<Metrics>,
    pub backends: Backends,
    pub chats: Vec<Arc<dyn ChatPort>>,
}

/// What the use cases share, built once.
struct Shared {
    config: Arc<Config>,
    store: Store,
    time: Time,
    metrics: Arc<Metrics>,
    ledger: ledger::Ledger,
    calendar: Arc<calendar::Calendar>,
    announcer: announcer::Announcer,
    platforms: Arc<HashSet<ChatPlatform>>,
    /// Woken when a rollout control is stored, so the rollout sees it at once.
    controls_changed: Arc<Notify>,
    /// Signs card links to the web pages and the pages' sign-ins.
    signer: Arc<signing::Signer>,
    /// The delivery metrics `/ui/dora` showed last (see `dora::AllCache`).
    dora_cache: Arc<std::sync::Mutex<Option<dora::AllCache>>>,
}

impl Shared {
    fn commands(&self) -> Commands {
        self.commands_on(self.store.clone())
    }

    /// The commands of one request, whose transactions record its platform delivery.
    fn commands_recording(&self, mark: DeliveryMark) -> Commands {
        self.commands_on(self.store.recording(mark))
    }

    fn promotions_on(&self, store: Store) -> promotions::Promotions {
        promotions::Promotions {
            config: self.config.clone(),
            store,
            time: self.time.clone(),
            metrics: self.metrics.clone(),
            ledger: self.ledger.clone(),
            calendar: self.calendar.clone(),
            platforms: self.platforms.clone(),
        }
    }

    fn commands_on(&self, store: Store) -> Commands {
        Commands {
            promotions: self.promotions_on(store.clone()),
            freezes: freezes::Freezes {
                config: self.config.clone(),
                store: store.clone(),
                time: self.time.clone(),
                calendar: self.calendar.clone(),
                announcer: self.announcer.clone(),
                ledger: self.ledger.clone(),
            },
            reads: Reads {
                config: self.config.clone(),
                store: store.clone(),
                metrics: self.metrics.clone(),
            },
            controls: controls::Controls {
                config: self.config.clone(),
                store: store.clone(),
                time: self.time.clone(),
                ledger: self.ledger.clone(),
                controls_changed: self.controls_changed.clone(),
            },
            dora: dora::Dora {
                config: self.config.clone(),
                store,
                time: self.time.clone(),
                all_cache: self.dora_cache.clone(),
            },
        }
    }

    fn workers(
        &self,
        commands: Arc<Commands>,
        backends: Backends,
        chats: HashMap<ChatPlatform, Arc<dyn ChatPort>>,
        worker_id: String,
    ) -> worker::Workers {
        worker::Workers {
            deploys: Arc::new(deploys::DeployWorker {
                store: self.store.clone(),
                time: self.time.clone(),
                metrics: self.metrics.clone(),
                ledger: self.ledger.clone(),
                calendar: self.calendar.clone(),
                backends,
                worker_id: worker_id.clone(),
                config: self.config.clone(),
                controls_changed: self.controls_changed.clone(),
                rollbacks: Arc::new(self.promotions_on(self.store.clone())),
            }),
            outbox: Arc::new(outbox::Outbox {
                config: self.config.clone(),
                store: self.store.clone(),
                time: self.time.clone(),
                chats,
                worker_id,
                rate_limited: Default::default(),
                signer: self.signer.clone(),
            }),
            scheduler: scheduler::Scheduler {
                config: self.config.clone(),
                store: self.store.clone(),
                time: self.time.clone(),
                calendar: self.calendar.clone(),
                announcer: self.announcer.clone(),
                ledger: self.ledger.clone(),
                commands: commands.clone(),
                since: Mutex::new(None),
            },
            commands,
            last_prune: Mutex::new(None),
        }
    }
}

impl Engine {
    pub fn new(parts: EngineParts) -> Self {
        let EngineParts {
            config,
            store,
            time,
            metrics,
            backends,
            chats,
        } = parts;
        let chats: HashMap<ChatPlatform, Arc<dyn ChatPort>> = chats
            .into_iter()
            .map(|chat| (chat.platform(), chat))
            .collect();
        let platforms: Arc<HashSet<ChatPlatform>> = Arc::new(chats.keys().copied().collect());
        let jobs_ready = store.jobs_ready();
        let replica = Arc::new(cluster::Replica::new(time.real_now()));
        let shared = Shared {
            ledger: ledger::Ledger::new(
                store.clone(),
                time.clone(),
                metrics.clone(),
                !chats.is_empty(),
                jobs_ready,
            ),
            calendar: Arc::new(calendar::Calendar::new(config.clone())),
            announcer: announcer::Announcer::new(config.clone(), time.clone(), platforms.clone()),
            platforms,
            controls_changed: Arc::new(Notify::new()),
            signer: Arc::new(signing::Signer::from_config(&config)),
            dora_cache: Arc::default(),
            config,
            store,
            time,
            metrics,
        };
        let commands = Arc::new(shared.commands());
        let workers = shared.workers(commands.clone(), backends, chats, replica.id.clone());
        let pages = pages::WebReads {
            config: shared.config.clone(),
            store: shared.store.clone(),
            time: shared.time.clone(),
            calendar: shared.calendar.clone(),
            reads: commands.reads.clone(),
        };
        Engine {
            inner: Arc::new(Parts {
                deliveries: Deliveries::new(
                    shared.store.clone(),
                    shared.time.clone(),
                    shared.metrics.clone(),
                ),
                metrics: shared.metrics.clone(),
                config: shared.config.clone(),
                store: shared.store.clone(),
                time: shared.time.clone(),
                commands,
                workers,
                cluster: cluster::Cluster::new(shared.store.clone(), replica),
                pages,
                shared,
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Signs and checks card links and web sign-ins.
    pub fn signer(&self) -> &signing::Signer {
        &self.inner.shared.signer
    }

    /// The counters and histograms `/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The engine's time sources.
    pub fn time(&self) -> &Time {
        &self.inner.time
    }

    /// Handles one request: the one way in for every front end.
    ///
    /// A platform delivery seen before answers [`Reply::Duplicate`] and does nothing. A reaction
    /// on a message that is no card answers [`Reply::Nothing`]; so does a refused reaction whose
    /// refusal the person was told once already (reactions are easy to repeat).
    pub async fn handle(&self, request: Request) -> Result<Reply, EngineError> {
        let label = request.kind.label();
        let platform = request.origin.as_ref().map(|o| o.platform);
        let deliveries = &self.inner.deliveries;
        let count = |outcome| {
            if let Some(platform) = platform {
                deliveries.count(platform, label, outcome);
            }
        };
        let delivery = match &request.delivery {
            Some(delivery) => Some(deliveries.resolve(delivery).await?),
            None => None,
        };
        let mark = match &delivery {
            Some(delivery) if deliveries.seen(delivery).await? => {
                count("duplicate");
                return Ok(Reply::Duplicate);
            }
            Some(delivery) => Some(deliveries.mark(delivery)),
            None => None,
        };
        let commands = match &mark {
            Some(mark) => Arc::new(self.inner.shared.commands_recording(mark.clone())),
            None => self.inner.commands.clone(),
        };
        let (result, refused) = self.decide(&commands, &request).await;
        if let Some(mark) = &mark {
            if mark.seen_before() {
                count("duplicate");
                return Ok(Reply::Duplicate);
            }
            deliveries.settle(mark, &result).await;
        }
        count(if refused { "refused" } else { "ok" });
        result
    }

    /// Runs a request through the use case that owns it; answers the reply and whether the
    /// request was refused. A reaction is on a card or means nothing; a refused one is told once
    /// per person and promotion.
    async fn decide(
        &self,
        commands: &Commands,
        request: &Request,
    ) -> (Result<Reply, EngineError>, bool) {
        let reaction_on = match &request.kind {
            RequestKind::Reaction { message_id, .. } => {
                match self.card_of(request, message_id).await {
                    Ok(Some(id)) => Some(id),
                    Ok(None) => return (Ok(Reply::Nothing), false),
                    // Nobody asked for an answer to a reaction: log, say nothing.
                    Err(error) => {
                        tracing::error!(%error, "could not look up a reacted message");
                        return (Ok(Reply::Nothing), false);
                    }
                }
            }
            _ => None,
        };
        let result = self.dispatch(commands, request, reaction_on).await;
        let refused = result.is_err();
        let result = match (result, reaction_on) {
            (Err(error), Some(promotion)) if error.kind != ErrorKind::Internal => {
                self.tell_once(request, promotion, error).await
            }
            (result, _) => result,
        };
        (result, refused)
    }

    async fn dispatch(
        &self,
        commands: &Commands,
        request: &Request,
        reaction_on: Option<i64>,
    ) -> Result<Reply, EngineError> {
        let command = match (&request.kind, reaction_on) {
            (RequestKind::Command(command), _) => command.clone(),
            (RequestKind::Typed(text), _) => {
                command::parse(text).map_err(|e| EngineError::bad_input(e.to_string()))?
            }
            (RequestKind::CardAction { action, promotion }, _) => {
                commands.card_command(*action, *promotion).await?
            }
            (RequestKind::ChecklistTick { promotion, item }, _) => command::Command::Check {
                id: *promotion,
                item: *item,
            },
            (RequestKind::Reaction { vote, .. }, Some(id)) => {
                return commands.promotions.react(&request.actor, id, *vote).await;
            }
            (RequestKind::Reaction { .. }, None) => return Ok(Reply::Nothing),
        };
        commands
            .execute(&request.actor, command, request.origin.as_ref())
            .await
    }

    /// The promotion whose card the reacted message is.
    async fn card_of(
        &self,
        request: &Request,
        message_id: &str,
    ) -> Result<Option<i64>, EngineError> {
        let Some(origin) = &request.origin else {
            return Err(EngineError::bad_input(
                "a reaction needs the channel it was added in",
            ));
        };
        Ok(self
            .inner
            .store
            .card_promotion(origin.platform, &origin.channel, message_id)
            .await?)
    }

    /// A refused reaction: the refusal the first time this person is refused on this promotion,
    /// [`Reply::Nothing`] after.
    async fn tell_once(
        &self,
        request: &Request,
        promotion: i64,
        error: EngineError,
    ) -> Result<Reply, EngineError> {
        let Some(origin) = &request.origin else {
            return Err(error);
        };
        let source = format!("{}:notice", origin.platform);
        // Keyed by the platform's own user id (`42:U0LEAD1`), as recorded before.
        let identity = request.actor.identity.as_str();
        let user = identity.split_once(':').map_or(identity, |(_, id)| id);
        let key = format!("{promotion}:{user}");
        if self.inner.deliveries.first_time(&source, &key).await {
            Err(error)
        } else {
            Ok(Reply::Nothing)
        }
    }

    /// Counts a chat delivery that never became a request (not ours, malformed).
    pub fn count_unhandled(&self, platform: ChatPlatform, kind: &str, outcome: &str) {
        self.inner.deliveries.count(platform, kind, outcome);
    }

    // ---- reads ----

    pub async fn promotion_detail(&self, id: i64) -> Result<PromotionDetail, EngineError> {
        self.inner.commands.reads.promotion_detail(id).await
    }

    /// What a promotion waits for, or what stopped it (SPEC §10).
    pub async fn why(&self, id: i64) -> Result<governance::Why, EngineError> {
        self.inner.commands.promotions.why(id).await
    }

    pub async fn deploy_log(&self, id: i64) -> Result<Vec<String>, EngineError> {
        self.inner.commands.reads.deploy_log(id).await
    }

    /// What runs where, and what is active, for one service or all.
    pub async fn status(&self, service: Option<&str>) -> Result<Vec<ServiceStatus>, EngineError> {
        self.inner.commands.reads.status(service).await
    }

    pub async fn history(
        &self,
        service: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::domain::promotion::Promotion>, EngineError> {
        self.inner
            .commands
            .reads
            .history(service, environment, limit)
            .await
    }

    /// The web front page: what runs where, the queue, windows and freezes.
    pub async fn overview(&self) -> Result<pages::Overview, EngineError> {
        self.inner.pages.overview().await
    }

    /// One promotion for its web page: audit trail, rollout steps, checks, deploy log.
    pub async fn promotion_page(&self, id: i64) -> Result<pages::PromotionPage, EngineError> {
        self.inner.pages.promotion_page(id).await
    }

    /// A page of the audit log, newest first.
    pub async fn audit_log(
        &self,
        query: &pages::AuditQuery,
    ) -> Result<pages::AuditPage, EngineError> {
        self.inner.pages.audit_log(query).await
    }

    /// Delivery metrics (`GET /api/v1/dora`): one [`DoraReport`] pooling the (service,
    /// environment) pairs `query` covers, over the `days` before the rules clock's now.
    /// Unknown service or environment: not found, listing the known ones; days outside 1..=365:
    /// bad input.
    pub async fn dora(&self, query: &DoraQuery) -> Result<DoraReport, EngineError> {
        self.inner.commands.dora.report(query).await
    }

    /// Delivery metrics of every service × environment × window in `days` (e.g. `&[7, 30, 90]`),
    /// in configuration order, from one database read: what `/ui/dora` shows.
    pub async fn dora_all(&self, days: &[u32]) -> Result<Vec<DoraEntry>, EngineError> {
        self.inner.commands.dora.all(days).await
    }

    /// Prometheus text for `/metrics`.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        self.inner.commands.reads.metrics_text().await
    }

    /// Ready: the database answers and its migrations are applied.
    pub async fn is_ready(&self) -> bool {
        self.inner.store.is_ready().await
    }

    // ---- running ----

    /// Start-up recovery: deploys left running by a process that is gone become `interrupted`.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        self.inner.workers.deploys.recover().await
    }

    /// Runs the workers until `shutdown`; then lets running deploys finish for `grace`.
    pub async fn run_workers(self, shutdown: CancellationToken, grace: Duration) {
        self.inner.workers.run(shutdown, grace).await
    }

    /// This replica's part among several (SPEC §8): heartbeat, gateway lock, wake-ups.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// `GET /api/v1/cluster`: the replicas seen lately.
    pub async fn cluster_view(&self) -> Result<ClusterView, EngineError> {
        self.inner.cluster.view().await
    }

    /// Closes the database connections (after the workers stopped).
    pub async fn close(&self) {
        self.inner.store.close().await;
    }
}

pub(crate) fn known_service<'a>(
    config: &'a Config,
    name: &str,
) -> Result<&'a ServiceConfig, EngineError> {
    config.service(name).ok_or_else(|| {
        EngineError::not_found(format!(
            "unknown service `{name}`; known services: {}",
            config.service_names().join(", ")
        ))
    })
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

/// The bot itself, as the actor of what it does on its own (recovery, expiry).
pub(crate) fn bot_identity() -> Identity {
    Identity::new("shipmate", "bot")
}
