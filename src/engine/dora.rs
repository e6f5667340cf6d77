//! Delivery metrics (SPEC §9): which (service, environment) pairs a question covers, one read of
//! the promotions that ended in the window, and `domain::dora`'s arithmetic. The window ends at
//! the rules clock's now, so every replica answers the same from the same records.

use std::sync::{Arc, Mutex};

use crate::config::{Config, EnvironmentConfig, ServiceConfig};
use crate::domain::dora::{self, Deliveries, DoraReport, Pair, Window};

use super::clock::Time;
use super::{environment_of, known_service, EngineError, ErrorKind};
use crate::store::Store;

/// `GET /api/v1/dora`: one report pooling what the query covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoraQuery {
    /// `None`: every service.
    pub service: Option<String>,
    /// `None`: the last environment of each service's pipeline (production, typically).
    pub environment: Option<String>,
    /// 1 to 365.
    pub days: u32,
}

/// The metrics of one service's environment over one window (the `/ui/dora` page's cells).
#[derive(Debug, Clone, PartialEq)]
pub struct DoraEntry {
    pub service: String,
    pub environment: String,
    pub days: u32,
    pub report: DoraReport,
}

#[derive(Clone)]
pub(super) struct Dora {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    /// The last answer of [`Dora::all`] (what `/ui/dora` shows), kept while nothing changed.
    pub all_cache: Arc<Mutex<Option<AllCache>>>,
}

/// What [`Dora::all`] answered, and for what: its windows, the minute it ended them at, and the
/// audit trail's head then (every change of a promotion or release writes an event, so the same
/// head means the same records, on any replica).
pub(super) struct AllCache {
    days: Vec<u32>,
    minute: i64,
    audit_head: i64,
    entries: Vec<DoraEntry>,
}

impl Dora {
    /// One report for `query`, its pairs pooled.
    pub async fn report(&self, query: &DoraQuery) -> Result<DoraReport, EngineError> {
        let days = checked_days(query.days)?;
        let pairs = self.query_pairs(query.service.as_deref(), query.environment.as_deref())?;
        let window = Window::ending_at(self.time.now(), days);
        let deliveries = self.read(&pairs, window).await?;
        Ok(deliveries.report(&pairs, window))
    }

    /// Every configured service × environment × window of `days`, from one read of the longest
    /// window, in configuration order.
    pub async fn all(&self, days: &[u32]) -> Result<Vec<DoraEntry>, EngineError> {
        let days = days
            .iter()
            .map(|days| checked_days(*days))
            .collect::<Result<Vec<u32>, EngineError>>()?;
        let Some(longest) = days.iter().max() else {
            return Ok(Vec::new());
        };
        let now = self.time.now();
        let minute = now.timestamp().div_euclid(60);
        let audit_head = self.store.audit_head().await?;
        if let Some(hit) = self.cached(&days, minute, audit_head) {
            return Ok(hit);
        }
        let deliveries = self.read(&[], Window::ending_at(now, *longest)).await?;
        let mut entries = Vec::new();
        for (service, environment) in self.every_pair() {
            for days in &days {
                let window = Window::ending_at(now, *days);
                let pair = [(service.clone(), environment.clone())];
                entries.push(DoraEntry {
                    report: deliveries.report(&pair, window),
                    service: service.clone(),
                    environment: environment.clone(),
                    days: *days,
                });
            }
        }
        *self.lock_cache() = Some(AllCache {
            days,
            minute,
            audit_head,
            entries: entries.clone(),
        });
        Ok(entries)
    }

    /// The cached answer for these windows, if it was made this minute with the same head.
    fn cached(&self, days: &[u32], minute: i64, audit_head: i64) -> Option<Vec<DoraEntry>> {
        let cache = self.lock_cache();
        let cache = cache.as_ref()?;
        (cache.days == days && cache.minute == minute && cache.audit_head == audit_head)
            .then(|| cache.entries.clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<AllCache>> {
        self.all_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `/release dora [service] [env] [days]`: a line per environment. Without an environment,
    /// every environment of the pipeline; a lone word that names no service but an environment
    /// means that environment of every service.
    pub async fn chat(
        &self,
        service: Option<&str>,
        environment: Option<&str>,
        days: Option<u32>,
    ) -> Result<String, EngineError> {
        let days = checked_days(days.unwrap_or(dora::DEFAULT_DAYS))?;
        let pairs = self.chat_pairs(service, environment)?;
        let window = Window::ending_at(self.time.now(), days);
        let deliveries = self.read(&pairs, window).await?;
        let lines: Vec<String> = pairs
            .iter()
            .map(|pair| dora::summary_line(&deliveries.report(std::slice::from_ref(pair), window)))
            .collect();
        Ok(lines.join("\n"))
    }

    /// One read: of the pair when there is one, of every service otherwise.
    async fn read(&self, pairs: &[Pair], window: Window) -> Result<Deliveries, EngineError> {
        let only = match pairs {
            [(service, environment)] => Some((service.as_str(), environment.as_str())),
            _ => None,
        };
        let records = self
            .store
            .ended_promotions(only, window.from, window.to)
            .await?;
        Ok(Deliveries::new(records))
    }

    fn query_pairs(
        &self,
        service: Option<&str>,
        environment: Option<&str>,
    ) -> Result<Vec<Pair>, EngineError> {
        match (service, environment) {
            (Some(name), environment) => {
                let service = known_service(&self.config, name)?;
                let environment = match environment {
                    Some(name) => environment_of(service, name)?,
                    None => last_environment(service)?,
                };
                Ok(vec![pair(service, environment)])
            }
            (None, Some(environment)) => self.services_with(environment),
            (None, None) => self
                .config
                .services
                .iter()
                .map(|service| Ok(pair(service, last_environment(service)?)))
                .collect(),
        }
    }

    fn chat_pairs(
        &self,
        service: Option<&str>,
        environment: Option<&str>,
    ) -> Result<Vec<Pair>, EngineError> {
        match (service, environment) {
            (Some(word), None)
                if self.config.service(word).is_none() && self.is_environment(word) =>
            {
                self.services_with(word)
            }
            (Some(name), environment) => {
                let service = known_service(&self.config, name)?;
                match environment {
                    Some(name) => Ok(vec![pair(service, environment_of(service, name)?)]),
                    None => Ok(service
                        .environments
                        .iter()
                        .map(|environment| pair(service, environment))
                        .collect()),
                }
            }
            (None, Some(environment)) => self.services_with(environment),
            (None, None) => Ok(self.every_pair()),
        }
    }

    fn every_pair(&self) -> Vec<Pair> {
        self.config
            .services
            .iter()
            .flat_map(|service| {
                service
                    .environments
                    .iter()
                    .map(move |environment| pair(service, environment))
            })
            .collect()
    }

    fn is_environment(&self, name: &str) -> bool {
        self.every_pair().iter().any(|(_, env)| env == name)
    }

    /// That environment of every service that has it.
    fn services_with(&self, environment: &str) -> Result<Vec<Pair>, EngineError> {
        let pairs: Vec<Pair> = self
            .every_pair()
            .into_iter()
            .filter(|(_, env)| env == environment)
            .collect();
        if pairs.is_empty() {
            return Err(EngineError::not_found(format!(
                "no service has an environment `{environment}`; environments: {}",
                self.environment_names().join(", ")
            )));
        }
        Ok(pairs)
    }

    /// Every environment name once, in pipeline order of first appearance.
    fn environment_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, environment) in self.every_pair() {
            if !names.contains(&environment) {
                names.push(environment);
            }
        }
        names
    }
}

fn pair(service: &ServiceConfig, environment: &EnvironmentConfig) -> Pair {
    (service.name.clone(), environment.name.clone())
}

fn last_environment(service: &ServiceConfig) -> Result<&EnvironmentConfig, EngineError> {
    service.environments.last().ok_or_else(|| {
        EngineError::new(
            ErrorKind::Internal,
            format!("{} has no environments", service.name),
        )
    })
}

fn checked_days(days: u32) -> Result<u32, EngineError> {
    if dora::DAYS.contains(&days) {
        Ok(days)
    } else {
        Err(EngineError::bad_input(format!(
            "days: {days} is out of range; write a whole number of days from 1 to 365, e.g. 30"
        )))
    }
}
