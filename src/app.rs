//! Wiring: config → store → engine → HTTP server and workers. `main` and the tests both start the
//! bot through here, so tests run the real thing.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Backends, Clock, Engine};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Connects to the database, applies migrations and builds the engine.
pub async fn build(
    config: Config,
    clock: Arc<dyn Clock>,
    backends: Option<Backends>,
) -> Result<Engine, StoreError> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    let backends = backends.unwrap_or_else(|| Backends::from_config(&config));
    Ok(Engine::new(
        Arc::new(config),
        store,
        clock,
        Arc::new(Metrics::new()),
        backends,
        Vec::new(),
    ))
}

/// Serves HTTP on `listener` and runs the workers until `shutdown` fires; then stops taking
/// requests, lets running deploys finish within the configured grace period, and closes the store.
pub async fn run(
    engine: Engine,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
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
    let router = crate::http::router(engine.clone());
    let stop = shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    shutdown.cancel();
    if workers.await.is_err() {
        tracing::error!("workers stopped abnormally");
    }
    engine.store().close().await;
    served
}
