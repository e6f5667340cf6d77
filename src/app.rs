//! Wiring: config → store → engine → chat adapters → HTTP server and workers. `main` and the
//! tests both start the bot through here, so tests run the real thing.

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chat::discord::{self, Discord};
use crate::chat::slack::{self, Slack};
use crate::config::{self, BackendConfig, Config};
use crate::deploy::argocd::{ArgocdBackend, ArgocdSettings};
use crate::deploy::command::CommandBackend;
use crate::deploy::github::{GithubActionsBackend, GithubSettings};
use crate::deploy::kubernetes::{KubernetesBackend, KubernetesSettings};
use crate::deploy::webhook::{WebhookBackend, WebhookSettings};
use crate::deploy::Backend;
use crate::domain::audit_chain::{ChainCheck, ChainWalker};
use crate::engine::{Backends, ChatPort, Engine, EngineParts, Time};
use crate::engine::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::store::{ServeLock, Store, StoreError};
use crate::verify::{self, LiveProber, Prober};
use chrono::{DateTime, SecondsFormat, Utc};

/// A bot ready to run: the engine and the chat adapters that feed it.
pub struct Bot {
    pub engine: Engine,
    /// The database the engine writes (for tests and tools; front ends go through the engine).
    pub store: Store,
    slack: Option<Arc<Slack>>,
    discord: Option<Arc<discord::inbound::Inbound>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The database named in `database.url` (shown without its password) could not be opened.
    #[error("could not open the database at {url}: {source}; check `database.url` in bot.toml and that the database is up")]
    Connect { url: String, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Slack(#[from] slack::SetupError),
    #[error(transparent)]
    Discord(#[from] discord::SetupError),
}

/// Opens the database; an error names it without its password.
pub async fn connect(database_url: &str) -> Result<Store, BuildError> {
    Store::connect(database_url)
        .await
        .map_err(|source| BuildError::Connect {
            url: config::redacted_url(database_url),
            source,
        })
}

/// The backend of one environment; command backends run in the config's directory.
fn backend_from_config(config: &Config, backend: &BackendConfig) -> Arc<dyn Backend> {
    match backend {
        BackendConfig::Command { run, timeout, env } => Arc::new(CommandBackend::new(
            run.clone(),
            *timeout,
            config.base_dir.clone(),
            env.clone(),
        )),
        BackendConfig::GithubActions(github) => {
            Arc::new(GithubActionsBackend::new(GithubSettings {
                repo: github.repo.clone(),
                workflow: github.workflow.clone(),
                git_ref: github.git_ref.clone(),
                token: github.token.expose().to_string(),
                inputs: github.inputs.clone(),
                api_url: github.api_url.clone(),
                poll_every: github.poll_every,
                timeout: github.timeout,
            }))
        }
        BackendConfig::Webhook(hook) => Arc::new(WebhookBackend::new(WebhookSettings {
            url: hook.url.clone(),
            secret: hook.secret.as_ref().map(|s| s.expose().to_string()),
            timeout: hook.timeout,
            poll_every: hook.poll_every,
            unix_now: Arc::new(|| SystemClock.now().timestamp()),
        })),
        BackendConfig::Argocd(argo) => Arc::new(ArgocdBackend::new(ArgocdSettings {
            url: argo.url.clone(),
            app: argo.app.clone(),
            token: argo.token.expose().to_string(),
            image: argo.image.clone(),
            revision: argo.revision.clone(),
            timeout: argo.timeout,
            poll_every: argo.poll_every,
        })),
        BackendConfig::Kubernetes(k) => Arc::new(KubernetesBackend::new(KubernetesSettings {
            namespace: k.namespace.clone(),
            deployment: k.deployment.clone(),
            container: k.container.clone(),
            image: k.image.clone(),
            kubeconfig: k.kubeconfig.clone(),
            context: k.context.clone(),
            canary_deployment: k.canary_deployment.clone(),
            timeout: k.timeout,
            poll_every: k.poll_every,
        })),
    }
}

/// The backends `bot.toml` describes.
pub fn backends_from_config(config: &Config) -> Backends {
    let mut backends = Backends::default();
    for service in &config.services {
        for env in &service.environments {
            let backend = backend_from_config(config, &env.backend);
            backends.insert(&service.name, &env.name, backend);
        }
    }
    if let Some(prober) = prober_from_config(config) {
        for service in &config.services {
            for env in &service.environments {
                backends.insert_prober(&service.name, &env.name, prober.clone());
            }
        }
    }
    backends
}

/// The prober of `verify` checks: one HTTP client for every environment; command checks get
/// their environment's backend `env` table, as its deploy script does.
fn prober_from_config(config: &Config) -> Option<Arc<dyn Prober>> {
    let client = match verify::http_client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "could not build the HTTP client of verification checks; every check will fail");
            return None;
        }
    };
    let mut prober = LiveProber::new(config.base_dir.clone(), client);
    for service in &config.services {
        for env in &service.environments {
            prober = prober.with_command_env(&service.name, &env.name, env.backend.script_env());
        }
    }
    Some(Arc::new(prober))
}

/// How one environment's backend answered `check-backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendCheck {
    pub service: String,
    pub environment: String,
    pub kind: &'static str,
    /// What was seen, or what to fix.
    pub result: Result<String, String>,
}

/// `shipmate check-backends`: every environment's backend tried, read-only, one after another
/// (a remote server is asked once per environment).
pub async fn check_backends(config: &Config) -> Vec<BackendCheck> {
    let mut checks = Vec::new();
    for service in &config.services {
        for env in &service.environments {
            let backend = backend_from_config(config, &env.backend);
            let result = backend.check(&service.name, &env.name).await;
            checks.push(BackendCheck {
                service: service.name.clone(),
                environment: env.name.clone(),
                kind: backend.kind(),
                result,
            });
        }
    }
    checks
}

/// Audit events are read in pages of this many.
const AUDIT_PAGE: u32 = 1000;

/// `shipmate audit verify`: walks the whole chain in the order it was written.
pub async fn verify_audit(config: &Config) -> anyhow::Result<ChainCheck> {
    let store = connect(&config.database_url).await?;
    let mut walker = ChainWalker::default();
    let mut after = 0;
    loop {
        let page = store.audit_page(after, None, AUDIT_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        for link in &page {
            if let Err(broken) = walker.step(link) {
                store.close().await;
                return Ok(broken);
            }
        }
    }
    store.close().await;
    Ok(walker.finish())
}

/// `shipmate audit export`: events at or after `since` as JSON lines; returns how many.
pub async fn export_audit(
    config: &Config,
    since: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<u64> {
    let store = connect(&config.database_url).await?;
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = store.audit_page(after, since, AUDIT_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        for link in page {
            let at = DateTime::from_timestamp_millis(link.event.at)
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true));
            let line = serde_json::json!({
                "id": link.id,
                "at": at,
                "promotion_id": link.event.promotion_id,
                "actor": link.event.actor,
                "platform": link.event.platform,
                "kind": link.event.kind,
                "detail": link.event.detail,
                "hash": link.hash,
            });
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    store.close().await;
    Ok(written)
}

/// Makes this process the only `serve` of a SQLite file (the lock lasts as long as the value);
/// PostgreSQL takes any number of replicas. Taken before anything is read or written.
pub fn lock_database(database_url: &str) -> Result<Option<ServeLock>, StoreError> {
    crate::store::lock_for_serving(database_url, &crate::deploy::process::host_name())
}

/// Connects to the database, applies migrations, and builds the engine and chat adapters.
/// `backends` replaces the configured ones (benchmarks).
pub async fn build(
    config: Config,
    time: Time,
    backends: Option<Backends>,
) -> Result<Bot, BuildError> {
    let store = connect(&config.database_url).await?;
    store.migrate().await?;
    let backends = backends.unwrap_or_else(|| backends_from_config(&config));
    let slack = Slack::new(&config)?;
    let mut chats: Vec<Arc<dyn ChatPort>> = Vec::new();
    if let Some(slack) = &slack {
        chats.push(slack.clone());
    }
    let discord = Discord::new(&config)?;
    if let Some(discord) = &discord {
        chats.push(discord.clone());
    }
    let engine = Engine::new(EngineParts {
        config: Arc::new(config),
        store: store.clone(),
        time,
        metrics: Arc::new(Metrics::new()),
        backends,
        chats,
    });
    let discord = discord.map(|discord| discord::inbound::Inbound::new(engine.clone(), discord));
    Ok(Bot {
        engine,
        store,
        slack,
        discord,
    })
}

impl Bot {
    fn chat_routes(&self) -> Router {
        let mut routes = Router::new();
        if let Some(slack) = &self.slack {
            routes = routes.merge(slack::inbound::routes(self.engine.clone(), slack.clone()));
        }
        if let Some(endpoint) = self.discord.clone().and_then(discord::inbound::routes) {
            routes = routes.merge(endpoint);
        }
        routes
    }
}

/// Serves HTTP on `listener` and runs the workers until `shutdown` fires; then stops taking
/// requests, lets running deploys finish within the configured grace period, and closes the store.
pub async fn run(
    bot: Bot,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let engine = bot.engine.clone();
    match engine.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            count = n,
            "marked deploys left running by a stopped bot as interrupted"
        ),
        Err(e) => tracing::error!(error = %e, "start-up recovery failed"),
    }
    let grace = engine.config().server.shutdown_grace;
    let workers = tokio::spawn(engine.clone().run_workers(shutdown.clone(), grace));
    let cluster = engine.cluster().clone();
    let heartbeat = tokio::spawn(cluster.clone().run_heartbeat(shutdown.clone()));
    let wakeups = tokio::spawn(cluster.run_wakeups(shutdown.clone()));
    let connections = tokio::spawn(run_platform_connections(
        engine.clone(),
        bot.slack.clone(),
        bot.discord.clone(),
        shutdown.clone(),
    ));
    let router = crate::http::router(engine.clone(), bot.chat_routes(), shutdown.clone());
    let stop = shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    shutdown.cancel();
    for (task, name) in [
        (connections, "the chat platform connections"),
        (heartbeat, "the replica heartbeat"),
        (wakeups, "the job listener"),
    ] {
        if task.await.is_err() {
            tracing::error!("{name} stopped abnormally");
        }
    }
    if workers.await.is_err() {
        tracing::error!("workers stopped abnormally");
    }
    engine.close().await;
    served
}

/// The connections a platform keeps open to the bot — the Discord gateway and Slack Socket
/// Mode — run on one replica at a time: the holder of the gateway lock (SPEC §8). A replica
/// waits for its turn, runs them while it holds the lock, and closes them the moment it is lost.
async fn run_platform_connections(
    engine: Engine,
    slack: Option<Arc<Slack>>,
    discord: Option<Arc<discord::inbound::Inbound>>,
    shutdown: CancellationToken,
) {
    let slack = slack.filter(|slack| slack.config.app_token.is_some());
    if slack.is_none() && discord.is_none() {
        return;
    }
    while let Some(turn) = engine.cluster().gateway_turn(&shutdown).await {
        let stop = shutdown.child_token();
        let socket_mode = slack
            .clone()
            .map(|slack| slack::socket_mode::run(engine.clone(), slack, &turn, stop.clone()));
        let gateway = discord
            .clone()
            .map(|inbound| discord::gateway::run(inbound, &turn, stop.clone()));
        let lost = async {
            turn.lost().await;
            stop.cancel();
        };
        tokio::join!(
            async {
                if let Some(socket_mode) = socket_mode {
                    socket_mode.await;
                }
            },
            async {
                if let Some(gateway) = gateway {
                    gateway.await;
                }
            },
            async {
                tokio::select! {
                    () = lost => {}
                    () = stop.cancelled() => {}
                }
            },
        );
        if shutdown.is_cancelled() {
            return;
        }
    }
}
