//! Time as a port: the real clock in production, a manual one in tests.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Rung when the clock jumps (a manual clock moved by a test): whoever sleeps until a time
    /// on this clock must look again. A clock that only runs never jumps.
    fn jumped(&self) -> Option<Arc<Notify>> {
        None
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    jumped: Arc<Notify>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
            jumped: Arc::default(),
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
        self.jumped.notify_one();
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
        self.jumped.notify_one();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn jumped(&self) -> Option<Arc<Notify>> {
        Some(self.jumped.clone())
    }
}

/// Every reading of "now" in the engine, from two injected sources:
/// - `rules`: the time release rules are judged at (windows, freezes, approval expiry, audit
///   times, the scheduler). Tests use a [`ManualClock`] to move it.
/// - `real`: the time processes and platforms live by (job leases and heartbeats, job due times,
///   card-edit pacing, signature ages). Platforms rate-limit in real seconds and a lease is about
///   a process being alive, whatever the rules clock says; a manual `rules` clock must not make
///   a running deploy's lease look expired.
#[derive(Clone)]
pub struct Time {
    rules: Arc<dyn Clock>,
    real: Arc<dyn Clock>,
}

impl Time {
    /// `rules` for release rules, the system clock for real time.
    pub fn new(rules: Arc<dyn Clock>) -> Self {
        Time {
            rules,
            real: Arc::new(SystemClock),
        }
    }

    /// Both sources injected (tests that drive real time too).
    pub fn with_real(rules: Arc<dyn Clock>, real: Arc<dyn Clock>) -> Self {
        Time { rules, real }
    }

    pub fn system() -> Self {
        Time::new(Arc::new(SystemClock))
    }

    /// The time release rules are judged at.
    pub fn now(&self) -> DateTime<Utc> {
        self.rules.now()
    }

    /// Real time, for leases, job due times and platform pacing.
    pub fn real_now(&self) -> DateTime<Utc> {
        self.real.now()
    }

    /// Resolves when the real clock jumps (never, on the system clock).
    pub async fn real_clock_jumped(&self) {
        match self.real.jumped() {
            Some(jumped) => jumped.notified().await,
            None => std::future::pending().await,
        }
    }
}
