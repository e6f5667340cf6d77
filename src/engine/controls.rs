//! Commands for a running rollout (SPEC §5.2): pause, resume, advance, abort. Each is stored on
//! the promotion's rollout row; the deploy worker running it reads the row (on any replica) and
//! acts on it.

use std::sync::Arc;

use super::clock::Time;
use super::ledger::Ledger;
use super::reply::Reply;
use super::EngineError;
use crate::config::Config;
use crate::domain::identity::Actor;
use crate::store::Store;

/// One command for a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Advance,
    Abort { reason: Option<String> },
}

pub(super) struct Controls {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub ledger: Ledger,
}

impl Controls {
    pub async fn control(
        &self,
        _actor: &Actor,
        _id: i64,
        _control: Control,
    ) -> Result<Reply, EngineError> {
        Err(EngineError::new(
            super::ErrorKind::Refused,
            "rollout controls are being built",
        ))
    }
}
