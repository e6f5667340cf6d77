//! This replica among the others (SPEC §8): its heartbeat row, its turn at holding the platform
//! connections (the gateway lock), and wake-ups when another replica leaves it work.
//!
//! On SQLite the same code runs with one replica: the heartbeat row is its own, the gateway lock
//! is always held (one process per file), and there is no listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{GatewayLock, ReplicaBeat, ReplicaRecord, Store, Wakeup};

use super::EngineError;

/// How often a replica writes its heartbeat row.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A replica not seen for three heartbeats is not listed.
const ALIVE_WITHIN: Duration = Duration::from_secs(15);
/// Rows of replicas gone this long are deleted.
const PRUNE_AFTER: Duration = Duration::from_secs(600);
/// How often a replica without the gateway lock tries to take it, and how often the holder checks
/// it still holds it: a dead holder is replaced well within SPEC §8's 30 seconds.
const GATEWAY_LOCK_EVERY: Duration = Duration::from_secs(5);
/// The longest wait before the listener, once broken, is opened again.
const LISTENER_RETRY_MAX: Duration = Duration::from_secs(30);

/// Who this replica is: the id is also the owner name of every job lease it takes.
#[derive(Debug)]
pub struct Replica {
    pub id: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    holds_gateway: AtomicBool,
}

impl Replica {
    pub fn new(started_at: DateTime<Utc>) -> Self {
        Replica {
            id: format!("replica-{}", uuid::Uuid::new_v4()),
            host: crate::deploy::process::host_name(),
            started_at,
            holds_gateway: AtomicBool::new(false),
        }
    }
}

/// `GET /api/v1/cluster`: the replicas seen lately and which one holds the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The replica that answered.
    pub this_replica: String,
    pub gateway_holder: Option<String>,
    pub replicas: Vec<ReplicaRecord>,
}

/// The proof that this replica holds the gateway lock, which the platform connections need to
/// run: only [`Cluster::gateway_turn`] makes one. While it lives a watcher keeps checking the
/// lock; [`GatewayTurn::lost`] fires the moment the lock is found gone, and the connections must
/// close at once. Dropping the turn lets the lock go.
pub struct GatewayTurn {
    lost: CancellationToken,
    watcher: JoinHandle<()>,
    replica: Arc<Replica>,
}

impl GatewayTurn {
    /// Resolves when the lock is lost (another replica may hold it now).
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

impl Drop for GatewayTurn {
    fn drop(&mut self) {
        // The watcher owns the lock's connection: ending it closes the session and frees the lock.
        self.watcher.abort();
        self.replica.holds_gateway.store(false, Ordering::SeqCst);
    }
}

/// This replica's part in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    store: Store,
    replica: Arc<Replica>,
}

impl Cluster {
    pub fn new(store: Store, replica: Arc<Replica>) -> Self {
        Cluster { store, replica }
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Waits until this replica holds the gateway lock; `None` at shutdown.
    pub async fn gateway_turn(&self, shutdown: &CancellationToken) -> Option<GatewayTurn> {
        let mut logged_waiting = false;
        loop {
            match self.store.try_gateway_lock().await {
                Ok(Some(lock)) => return Some(self.take_turn(lock).await),
                Ok(None) if !logged_waiting => {
                    tracing::info!(
                        "another replica holds the chat platform connections; standing by"
                    );
                    logged_waiting = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not try the gateway lock; trying again")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(GATEWAY_LOCK_EVERY) => {}
            }
        }
    }

    async fn take_turn(&self, lock: GatewayLock) -> GatewayTurn {
        self.replica.holds_gateway.store(true, Ordering::SeqCst);
        if let Err(e) = self.store.gateway_taken_by(&self.replica.id).await {
            tracing::warn!(error = %e, "could not record holding the gateway; the next heartbeat will");
        }
        tracing::info!(replica = %self.replica.id, "this replica holds the chat platform connections");
        let lost = CancellationToken::new();
        let watcher = tokio::spawn(watch_lock(lock, lost.clone()));
        GatewayTurn {
            lost,
            watcher,
            replica: self.replica.clone(),
        }
    }

    /// Writes the heartbeat row every few seconds until `shutdown`, then removes it.
    pub async fn run_heartbeat(self, shutdown: CancellationToken) {
        loop {
            self.beat().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            }
        }
        if let Err(e) = self
            .store
            .prune_replicas(PRUNE_AFTER, Some(&self.replica.id))
            .await
        {
            tracing::warn!(error = %e, "could not remove this replica's heartbeat row");
        }
    }

    async fn beat(&self) {
        let beat = ReplicaBeat {
            id: &self.replica.id,
            host: &self.replica.host,
            pid: std::process::id(),
            started_at: self.replica.started_at,
            holds_gateway: self.replica.holds_gateway.load(Ordering::SeqCst),
        };
        if let Err(e) = self.store.replica_heartbeat(&beat).await {
            tracing::warn!(error = %e, "could not write this replica's heartbeat");
        }
        if let Err(e) = self.store.prune_replicas(PRUNE_AFTER, None).await {
            tracing::warn!(error = %e, "could not prune old replica rows");
        }
    }

    /// Wakes this replica's workers when another replica leaves a job, until `shutdown`. A
    /// listener that had to reconnect wakes them too: notifications sent meanwhile are lost.
    pub async fn run_wakeups(self, shutdown: CancellationToken) {
        let jobs_ready = self.store.jobs_ready();
        let mut delay = Duration::from_secs(1);
        while !shutdown.is_cancelled() {
            let mut wakeups = match self.store.job_wakeups().await {
                Ok(Some(wakeups)) => wakeups,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "could not listen for jobs; the workers look every few seconds meanwhile");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(LISTENER_RETRY_MAX);
                    continue;
                }
            };
            delay = Duration::from_secs(1);
            // Whatever was left while nobody listened is looked for now.
            jobs_ready.notify_one();
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = wakeups.next() => next,
                };
                match next {
                    Ok(Wakeup::JobReady) => jobs_ready.notify_one(),
                    Ok(Wakeup::Reconnected) => {
                        tracing::info!("the job listener reconnected; looking for missed jobs");
                        jobs_ready.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the job listener failed; opening it again");
                        break;
                    }
                }
            }
        }
    }

    /// The replicas seen lately.
    pub async fn view(&self) -> Result<ClusterView, EngineError> {
        let replicas = self.store.replicas(ALIVE_WITHIN).await?;
        let gateway_holder = replicas
            .iter()
            .find(|replica| replica.holds_gateway)
            .map(|replica| replica.id.clone());
        Ok(ClusterView {
            this_replica: self.replica.id.clone(),
            gateway_holder,
            replicas,
        })
    }
}

/// Checks the lock every few seconds; fires `lost` and ends (dropping the lock) once it is gone.
async fn watch_lock(mut lock: GatewayLock, lost: CancellationToken) {
    loop {
        tokio::time::sleep(GATEWAY_LOCK_EVERY).await;
        if !lock.still_held().await {
            tracing::error!("lost the gateway lock; closing the chat platform connections");
            lost.cancel();
            return;
        }
    }
}
