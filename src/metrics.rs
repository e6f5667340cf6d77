//! Prometheus metrics (SPEC §6). Counters and histograms live in-process; the active-promotion
//! gauge is read from the database at scrape time so it is right across replicas.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub service: String,
    pub environment: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub service: String,
    pub environment: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    pub service: String,
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub service: String,
    pub environment: String,
    /// `prometheus check 2`.
    pub check: String,
    /// `passed`, `failed` or `stopped` (the gate ended otherwise: abort, advance, another check).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    pub service: String,
    pub environment: String,
    /// `true` when shipmate started it (a failure with on_failure = "rollback", or an abort).
    pub automatic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChatLabels {
    pub platform: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 0.1 s … ~3.6 h: deploys take seconds to hours.
    Histogram::new(exponential_buckets(0.1, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub releases_created: Family<ServiceLabels, Counter>,
    pub promotions: Family<StateLabels, Counter>,
    pub deploys_started: Family<EnvironmentLabels, Counter>,
    pub active_promotions: Family<StateLabels, Gauge>,
    pub deploy_duration: HistogramFamily<OutcomeLabels>,
    pub promotion_lead: HistogramFamily<EnvironmentLabels>,
    pub chat_events: Family<ChatLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub verifications: Family<CheckLabels, Counter>,
    pub rollbacks: Family<RollbackLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shipmate");
        let metrics = Metrics {
            releases_created: Family::default(),
            promotions: Family::default(),
            deploys_started: Family::default(),
            active_promotions: Family::default(),
            deploy_duration: Family::new_with_constructor(seconds_histogram),
            promotion_lead: Family::new_with_constructor(seconds_histogram),
            chat_events: Family::default(),
            http_requests: Family::default(),
            verifications: Family::default(),
            rollbacks: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "releases_created",
            "Releases created",
            metrics.releases_created.clone(),
        );
        registry.register(
            "promotions",
            "Promotions that reached a terminal state",
            metrics.promotions.clone(),
        );
        registry.register(
            "deploys_started",
            "Deploys started (promotions that entered deploying)",
            metrics.deploys_started.clone(),
        );
        registry.register(
            "active_promotions",
            "Promotions in an active state",
            metrics.active_promotions.clone(),
        );
        registry.register(
            "deploy_duration_seconds",
            "Deploy duration by outcome",
            metrics.deploy_duration.clone(),
        );
        registry.register(
            "promotion_lead_seconds",
            "Time from request to succeeded",
            metrics.promotion_lead.clone(),
        );
        registry.register(
            "chat_events",
            "Chat events received",
            metrics.chat_events.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route template and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "verifications",
            "Verification checks by outcome, one per check and gate",
            metrics.verifications.clone(),
        );
        registry.register(
            "rollbacks",
            "Rollbacks started, by whether shipmate started them",
            metrics.rollbacks.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Prometheus text, with the active gauge set from `(service, environment, state, count)`.
    pub fn render(&self, active: &[(String, String, String, i64)]) -> String {
        self.active_promotions.clear();
        for (service, environment, state, count) in active {
            self.active_promotions
                .get_or_create(&StateLabels {
                    service: service.clone(),
                    environment: environment.clone(),
                    state: state.clone(),
                })
                .set(*count);
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            tracing::error!("could not encode metrics");
        }
        text
    }

    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}
