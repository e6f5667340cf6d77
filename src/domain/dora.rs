//! Delivery metrics (DORA, SPEC §9) from the bot's own records: pure arithmetic over the
//! promotions that ended in a time window. The store selects the rows; everything counted,
//! matched and ranked here is unit-tested without a database.
//!
//! Definitions:
//! - a **deploy** is a promotion that succeeded (and is `succeeded`, or `rolled_back` since) and
//!   is not itself a rollback, counted at the time it finished;
//! - its **lead time** runs from its release's commit time (`committed_at`, when given) or else
//!   the release's creation, to the deploy's success;
//! - a **change** is a non-rollback promotion that ended `succeeded`, `rolled_back` or `failed`;
//!   it **failed** when it ended `failed` or was later `rolled_back`; the change failure rate is
//!   failed changes / changes, `None` when there were no changes (unknown, not 0%);
//! - **time to restore** runs from a failed change's end (the failed deploy, or the success of the
//!   deploy that was rolled back later) to the next success of any promotion (a rollback counts)
//!   in that service and environment; a failure not yet followed by a success is not counted.
//!
//! Percentiles are nearest-rank (the smallest sample with at least p% of the samples at or below
//! it), so they are always a time that really happened; `None` when there are no samples.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::duration::format_duration;
use super::promotion::PromotionState;

/// The windows the metrics may span, in days; 30 when none is asked for.
pub const DAYS: RangeInclusive<u32> = 1..=365;
pub const DEFAULT_DAYS: u32 = 30;

/// A number of days outside [`DAYS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a number of days: write a whole number from 1 to 365, e.g. 30")]
pub struct DaysError {
    pub input: String,
}

/// Reads a window length as people write it: `30`, or `30d`.
pub fn parse_days(input: &str) -> Result<u32, DaysError> {
    let digits = input.strip_suffix(['d', 'D']).unwrap_or(input);
    digits
        .bytes()
        .all(|byte| byte.is_ascii_digit())
        .then(|| digits.parse::<u32>().ok())
        .flatten()
        .filter(|days| DAYS.contains(days))
        .ok_or_else(|| DaysError {
            input: input.to_string(),
        })
}

/// How a change's promotion ended, as far as the metrics are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    Failed,
    /// Succeeded, then replaced by a rollback.
    RolledBack,
}

impl Ending {
    /// The promotion states the metrics read (the store selects exactly these).
    pub const STATES: [PromotionState; 3] = [
        PromotionState::Succeeded,
        PromotionState::Failed,
        PromotionState::RolledBack,
    ];

    pub fn of(state: PromotionState) -> Option<Ending> {
        match state {
            PromotionState::Succeeded => Some(Ending::Succeeded),
            PromotionState::Failed => Some(Ending::Failed),
            PromotionState::RolledBack => Some(Ending::RolledBack),
            _ => None,
        }
    }

    /// Whether the promotion reached `succeeded` (a rolled-back one did, before it was replaced).
    fn succeeded(self) -> bool {
        self != Ending::Failed
    }

    fn failed_change(self) -> bool {
        self != Ending::Succeeded
    }
}

/// One promotion that ended, as the store reads it for the metrics (grouped by its service and
/// environment, see [`Deliveries::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub ending: Ending,
    pub rollback: bool,
    pub finished_at: DateTime<Utc>,
    /// When the promotion was requested: the lead time's start if its release is unknown.
    pub requested_at: DateTime<Utc>,
    pub release_created_at: Option<DateTime<Utc>>,
    /// The release's commit time, when the release says it.
    pub committed_at: Option<DateTime<Utc>>,
}

impl DeliveryRecord {
    /// Where the lead time starts: the commit, else the release's creation, else the request.
    pub fn lead_time_start(&self) -> DateTime<Utc> {
        self.committed_at
            .or(self.release_created_at)
            .unwrap_or(self.requested_at)
    }

    fn is_deploy(&self) -> bool {
        !self.rollback && self.ending.succeeded()
    }

    fn is_change(&self) -> bool {
        !self.rollback
    }
}

/// The span the metrics cover: the `days` before `to`, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub days: u32,
}

impl Window {
    pub fn ending_at(to: DateTime<Utc>, days: u32) -> Window {
        Window {
            from: to - chrono::Duration::days(i64::from(days)),
            to,
            days,
        }
    }

    fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at <= self.to
    }
}

/// Lead time percentiles, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LeadTime {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

/// Time to restore percentiles, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RestoreTime {
    pub p50: Option<f64>,
}

/// The four delivery metrics over one window, for one (service, environment) or several together
/// (their deploys, changes and samples pooled). Serialized as `GET /api/v1/dora` answers it:
///
/// ```json
/// {"service": "api", "environment": "production", "days": 30,
///  "from": "2026-10-18T09:00:00.000Z", "to": "2026-11-17T09:00:00.000Z",
///  "deploys": 12, "deployment_frequency_per_day": 0.4,
///  "lead_time_seconds": {"p50": 10800.0, "p90": 86400.0},
///  "change_failure_rate": 0.0833, "time_to_restore_seconds": {"p50": 1500.0},
///  "changes": 12, "failed_changes": 1, "restores": 1}
/// ```
///
/// `service` / `environment` are `null` when the report pools several. An empty window has 0
/// deploys, a frequency of 0, `null` percentiles and a `null` change failure rate (no changes: the
/// rate is unknown, not 0%).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoraReport {
    pub service: Option<String>,
    pub environment: Option<String>,
    pub days: u32,
    #[serde(serialize_with = "rfc3339")]
    pub from: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub to: DateTime<Utc>,
    pub deploys: u64,
    pub deployment_frequency_per_day: f64,
    pub lead_time_seconds: LeadTime,
    pub change_failure_rate: Option<f64>,
    pub time_to_restore_seconds: RestoreTime,
    /// Non-rollback promotions that ended in the window (the rate's denominator).
    pub changes: u64,
    pub failed_changes: u64,
    /// Failed changes followed by a success (the time-to-restore samples).
    pub restores: u64,
}

fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// A (service, environment) pair.
pub type Pair = (String, String);

/// Ended promotions grouped by (service, environment), each group in order of end: built once
/// from one read, then asked for any number of windows and pairs.
#[derive(Debug, Default)]
pub struct Deliveries {
    by_pair: HashMap<Pair, Vec<DeliveryRecord>>,
}

/// The samples of one window, pooled over pairs.
#[derive(Default)]
struct Tally {
    deploys: u64,
    changes: u64,
    failed_changes: u64,
    lead_millis: Vec<i64>,
    restore_millis: Vec<i64>,
}

impl Deliveries {
    /// The records of each (service, environment), in any order (a pair given twice is merged).
    /// For restores to be found, they must hold every success after the earliest window asked
    /// for (the store reads everything up to now).
    pub fn new(groups: impl IntoIterator<Item = (Pair, Vec<DeliveryRecord>)>) -> Deliveries {
        let mut by_pair: HashMap<Pair, Vec<DeliveryRecord>> = HashMap::new();
        for (pair, records) in groups {
            by_pair.entry(pair).or_default().extend(records);
        }
        for group in by_pair.values_mut() {
            group.sort_by_key(|record| record.finished_at);
        }
        Deliveries { by_pair }
    }

    /// The metrics of `pairs` (pooled) over `window`.
    pub fn report(&self, pairs: &[Pair], window: Window) -> DoraReport {
        let mut tally = Tally::default();
        for pair in pairs {
            if let Some(group) = self.by_pair.get(pair) {
                tally.add(group, window);
            }
        }
        tally.report(pairs, window)
    }
}

impl Tally {
    fn add(&mut self, group: &[DeliveryRecord], window: Window) {
        for record in group.iter().filter(|r| window.contains(r.finished_at)) {
            if record.is_deploy() {
                self.deploys += 1;
                let lead = record.finished_at - record.lead_time_start();
                self.lead_millis.push(lead.num_milliseconds().max(0));
            }
            if !record.is_change() {
                continue;
            }
            self.changes += 1;
            if record.ending.failed_change() {
                self.failed_changes += 1;
                if let Some(restored) = next_success(group, record.finished_at) {
                    let downtime = restored - record.finished_at;
                    self.restore_millis.push(downtime.num_milliseconds());
                }
            }
        }
    }

    fn report(mut self, pairs: &[Pair], window: Window) -> DoraReport {
        self.lead_millis.sort_unstable();
        self.restore_millis.sort_unstable();
        let one = |name: fn(&Pair) -> &String| {
            let first = pairs.first().map(name)?;
            pairs
                .iter()
                .all(|pair| name(pair) == first)
                .then(|| first.clone())
        };
        DoraReport {
            service: one(|pair| &pair.0),
            environment: one(|pair| &pair.1),
            days: window.days,
            from: window.from,
            to: window.to,
            deploys: self.deploys,
            deployment_frequency_per_day: self.deploys as f64 / f64::from(window.days.max(1)),
            lead_time_seconds: LeadTime {
                p50: percentile(&self.lead_millis, 50),
                p90: percentile(&self.lead_millis, 90),
            },
            change_failure_rate: (self.changes > 0)
                .then(|| self.failed_changes as f64 / self.changes as f64),
            time_to_restore_seconds: RestoreTime {
                p50: percentile(&self.restore_millis, 50),
            },
            changes: self.changes,
            failed_changes: self.failed_changes,
            restores: self.restore_millis.len() as u64,
        }
    }
}

/// The first success strictly after `after` in a group sorted by end time.
fn next_success(group: &[DeliveryRecord], after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let later = group.partition_point(|record| record.finished_at <= after);
    group
        .get(later..)?
        .iter()
        .find(|record| record.ending.succeeded())
        .map(|record| record.finished_at)
}

/// The nearest-rank `p`th percentile of sorted milliseconds, in seconds.
fn percentile(sorted_millis: &[i64], p: usize) -> Option<f64> {
    let rank = (p * sorted_millis.len()).div_ceil(100).max(1);
    sorted_millis
        .get(rank - 1)
        .map(|millis| *millis as f64 / 1000.0)
}

/// One compact line for chat:
/// `api production, 30 days: 12 deploys (0.4/day) · lead time p50 3h p90 1d · change failure 8% · restore p50 25m`.
pub fn summary_line(report: &DoraReport) -> String {
    let scope = [report.service.as_deref(), report.environment.as_deref()]
        .iter()
        .map(|name| name.unwrap_or("all"))
        .collect::<Vec<_>>()
        .join(" ");
    let days = plural(u64::from(report.days), "day");
    if report.changes == 0 {
        return format!("{scope}, {days}: no deploys");
    }
    let lead = &report.lead_time_seconds;
    let failure_rate = report
        .change_failure_rate
        .map_or_else(|| "–".to_string(), |rate| format!("{:.0}%", rate * 100.0));
    format!(
        "{scope}, {days}: {} ({}/day) · lead time p50 {} p90 {} · change failure {failure_rate} · restore p50 {}",
        plural(report.deploys, "deploy"),
        decimal(report.deployment_frequency_per_day),
        seconds(lead.p50),
        seconds(lead.p90),
        seconds(report.time_to_restore_seconds.p50),
    )
}

fn plural(count: u64, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

/// `0.4`, `0.03`, `12`: two decimals at most, without trailing zeros.
fn decimal(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A time in its two largest units (`3h20m`, `1d4h`, `25m`), or `–` when there is none.
fn seconds(value: Option<f64>) -> String {
    let Some(value) = value else {
        return "–".to_string();
    };
    let whole = value.max(0.0).round() as u64;
    let unit = [86_400, 3_600, 60, 1]
        .into_iter()
        .position(|size| whole >= size)
        .unwrap_or(3);
    // Drop what is below the second largest unit.
    let keep = [3_600, 60, 1, 1][unit];
    format_duration(Duration::from_secs(whole - whole % keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(hours)
    }

    fn now() -> DateTime<Utc> {
        at(30 * 24)
    }

    /// A promotion that ended at hour `end`, released at hour `release`.
    fn ended(ending: Ending, release: i64, end: i64) -> DeliveryRecord {
        DeliveryRecord {
            ending,
            rollback: false,
            finished_at: at(end),
            requested_at: at(end),
            release_created_at: Some(at(release)),
            committed_at: None,
        }
    }

    fn rollback(end: i64) -> DeliveryRecord {
        DeliveryRecord {
            rollback: true,
            ..ended(Ending::Succeeded, 0, end)
        }
    }

    fn pair(service: &str, environment: &str) -> Pair {
        (service.to_string(), environment.to_string())
    }

    fn api() -> Vec<Pair> {
        vec![pair("api", "production")]
    }

    /// The report of `records`, all of api in production.
    fn report(records: Vec<DeliveryRecord>, days: u32) -> DoraReport {
        Deliveries::new([(pair("api", "production"), records)])
            .report(&api(), Window::ending_at(now(), days))
    }

    #[test]
    fn counts_deploys_lead_times_failures_and_restores() {
        use Ending::*;
        let records = vec![
            ended(Succeeded, 0, 2),    // lead 2h
            ended(Succeeded, 10, 14),  // lead 4h
            ended(Failed, 20, 21),     // failed at 21h …
            ended(Succeeded, 20, 24),  // … restored by the retry at 24h: 3h; lead 4h
            ended(RolledBack, 30, 31), // lead 1h, failed: live at 31h …
            rollback(31 + 1),          // … rolled back at 32h: restored in 1h
            ended(Succeeded, 40, 50),  // lead 10h
        ];
        let report = report(records, 30);
        assert_eq!(report.deploys, 5, "the rollback is no deploy");
        assert_eq!(report.changes, 6);
        assert_eq!(report.failed_changes, 2);
        assert_eq!(report.change_failure_rate, Some(2.0 / 6.0));
        assert_eq!(report.deployment_frequency_per_day, 5.0 / 30.0);
        // Lead times 1h 2h 4h 4h 10h: p50 is the 3rd, p90 the 5th.
        assert_eq!(report.lead_time_seconds.p50, Some(4.0 * 3600.0));
        assert_eq!(report.lead_time_seconds.p90, Some(10.0 * 3600.0));
        // Restores 1h and 3h: the nearest-rank median is the 1st.
        assert_eq!(report.restores, 2);
        assert_eq!(report.time_to_restore_seconds.p50, Some(3600.0));
        assert_eq!(report.service.as_deref(), Some("api"));
        assert_eq!(report.environment.as_deref(), Some("production"));
    }

    #[test]
    fn an_empty_window_has_no_deploys_no_percentiles_and_an_unknown_failure_rate() {
        let report = report(Vec::new(), 7);
        assert_eq!(report.deploys, 0);
        assert_eq!(report.deployment_frequency_per_day, 0.0);
        assert_eq!(
            report.lead_time_seconds,
            LeadTime {
                p50: None,
                p90: None
            }
        );
        assert_eq!(report.change_failure_rate, None);
        assert_eq!(report.time_to_restore_seconds.p50, None);
        assert_eq!(report.from, now() - chrono::Duration::days(7));
        assert_eq!(report.to, now());
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert!(json["lead_time_seconds"]["p50"].is_null(), "{json}");
        assert!(json["change_failure_rate"].is_null(), "{json}");
        assert_eq!(json["from"], "2026-11-24T00:00:00.000Z");
    }

    #[test]
    fn a_rollback_is_neither_a_deploy_nor_a_change_but_it_restores() {
        let records = vec![ended(Ending::Failed, 0, 5), rollback(7)];
        let report = report(records, 30);
        assert_eq!((report.deploys, report.changes), (0, 1));
        assert_eq!(report.change_failure_rate, Some(1.0));
        assert_eq!(report.time_to_restore_seconds.p50, Some(2.0 * 3600.0));
        assert_eq!(report.lead_time_seconds.p50, None);
    }

    #[test]
    fn a_failed_rollback_is_no_failed_change() {
        let mut failed_rollback = rollback(5);
        failed_rollback.ending = Ending::Failed;
        let report = report(vec![ended(Ending::Succeeded, 0, 3), failed_rollback], 30);
        assert_eq!(
            (report.deploys, report.changes, report.failed_changes),
            (1, 1, 0)
        );
    }

    #[test]
    fn a_later_rolled_back_deploy_is_a_deploy_and_a_failed_change() {
        let report = report(vec![ended(Ending::RolledBack, 0, 3)], 30);
        assert_eq!(report.deploys, 1);
        assert_eq!(report.failed_changes, 1);
        assert_eq!(report.change_failure_rate, Some(1.0));
        assert_eq!(report.restores, 0, "not restored yet: no success after it");
    }

    #[test]
    fn only_what_ended_inside_the_window_counts_but_a_restore_may_come_after_it() {
        // Window of 1 day: from hour 696 to 720.
        let records = vec![
            ended(Ending::Succeeded, 0, 600),
            ended(Ending::Failed, 690, 700),
            ended(Ending::Succeeded, 690, 719),
        ];
        let day = report(records, 1);
        assert_eq!((day.deploys, day.changes), (1, 2));
        assert_eq!(day.time_to_restore_seconds.p50, Some(19.0 * 3600.0));
        let earlier = vec![
            ended(Ending::Failed, 0, 600),
            ended(Ending::Succeeded, 0, 700),
        ];
        let day = report(earlier, 1);
        assert_eq!(day.restores, 0, "the failure ended before the window");
    }

    #[test]
    fn restores_are_matched_within_the_same_service_and_environment() {
        let deliveries = Deliveries::new([
            (pair("api", "production"), vec![ended(Ending::Failed, 0, 5)]),
            (pair("api", "staging"), vec![ended(Ending::Succeeded, 0, 6)]),
            (
                pair("web", "production"),
                vec![ended(Ending::Succeeded, 0, 7)],
            ),
        ]);
        let report = deliveries.report(&api(), Window::ending_at(now(), 30));
        assert_eq!((report.failed_changes, report.restores), (1, 0));
    }

    #[test]
    fn a_pair_given_twice_is_merged_in_order_of_end() {
        let deliveries = Deliveries::new([
            (
                pair("api", "production"),
                vec![ended(Ending::Succeeded, 0, 9)],
            ),
            (pair("api", "production"), vec![ended(Ending::Failed, 0, 5)]),
        ]);
        let report = deliveries.report(&api(), Window::ending_at(now(), 30));
        assert_eq!(report.time_to_restore_seconds.p50, Some(4.0 * 3600.0));
    }

    #[test]
    fn pooled_pairs_add_up_and_name_only_what_they_share() {
        let deliveries = Deliveries::new([
            (
                pair("api", "production"),
                vec![ended(Ending::Succeeded, 0, 5)],
            ),
            (
                pair("web", "production"),
                vec![ended(Ending::Succeeded, 0, 7)],
            ),
        ]);
        let pairs = [pair("api", "production"), pair("web", "production")];
        let report = deliveries.report(&pairs, Window::ending_at(now(), 30));
        assert_eq!(report.deploys, 2);
        assert_eq!(report.service, None);
        assert_eq!(report.environment.as_deref(), Some("production"));
        let none = deliveries.report(&[], Window::ending_at(now(), 30));
        assert_eq!((none.deploys, none.service), (0, None));
    }

    #[test]
    fn lead_time_starts_at_the_commit_when_known() {
        let mut record = ended(Ending::Succeeded, 10, 12);
        assert_eq!(record.lead_time_start(), at(10));
        record.committed_at = Some(at(8));
        assert_eq!(record.lead_time_start(), at(8));
        record.committed_at = None;
        record.release_created_at = None;
        assert_eq!(record.lead_time_start(), record.requested_at);
        assert_eq!(
            report(vec![ended(Ending::Succeeded, 13, 12)], 30)
                .lead_time_seconds
                .p50,
            Some(0.0),
            "a release newer than its success (clock skew) is no negative lead time"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[1000], 50), Some(1.0));
        assert_eq!(percentile(&[1000], 90), Some(1.0));
        assert_eq!(percentile(&[1000, 2000], 50), Some(1.0));
        assert_eq!(percentile(&[1000, 2000], 90), Some(2.0));
        let ten: Vec<i64> = (1..=10).map(|s| s * 1000).collect();
        assert_eq!(percentile(&ten, 50), Some(5.0));
        assert_eq!(percentile(&ten, 90), Some(9.0));
        assert_eq!(percentile(&ten, 100), Some(10.0));
    }

    #[test]
    fn days_are_whole_numbers_from_1_to_365() {
        assert_eq!(parse_days("30"), Ok(30));
        assert_eq!(parse_days("7d"), Ok(7));
        assert_eq!(parse_days("365"), Ok(365));
        for bad in [
            "0",
            "366",
            "-1",
            "+5",
            "",
            "d",
            "1.5",
            "thirty",
            "99999999999",
        ] {
            let error = parse_days(bad).map_err(|e| e.to_string());
            assert!(
                matches!(&error, Err(message) if message.contains("from 1 to 365")),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn the_chat_line_is_compact() {
        use Ending::*;
        let mut records: Vec<DeliveryRecord> = (0..11)
            .map(|i| ended(Succeeded, 10 * i, 10 * i + 3))
            .collect();
        records.push(ended(RolledBack, 200, 224));
        records.push(rollback(224 + 1));
        let line = summary_line(&report(records, 30));
        assert_eq!(
            line,
            "api production, 30 days: 12 deploys (0.4/day) · lead time p50 3h p90 3h \
             · change failure 8% · restore p50 1h"
        );
        let empty = summary_line(&report(Vec::new(), 1));
        assert_eq!(empty, "api production, 1 day: no deploys");
    }

    #[test]
    fn times_read_in_their_two_largest_units() {
        assert_eq!(seconds(None), "–");
        assert_eq!(seconds(Some(0.0)), "0s");
        assert_eq!(seconds(Some(45.4)), "45s");
        assert_eq!(seconds(Some(25.0 * 60.0 + 13.0)), "25m13s");
        assert_eq!(seconds(Some(3.0 * 3600.0 + 20.0 * 60.0 + 15.0)), "3h20m");
        assert_eq!(seconds(Some(86_400.0 + 4.0 * 3600.0 + 59.0)), "1d4h");
        assert_eq!(decimal(0.4), "0.4");
        assert_eq!(decimal(12.0), "12");
        assert_eq!(decimal(1.0 / 30.0), "0.03");
    }
}
