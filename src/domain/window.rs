//! Release windows and freezes: when a promotion may start (SPEC §2, §3 `windows`/`freeze`, §4).
//!
//! Pure: every question takes the instant it is about. Occurrences are computed in the window's
//! time zone, so "14:00 Europe/Berlin" stays 14:00 on the wall clock across DST; the open span is
//! then `duration` of real (UTC) time from that start, so a `2h` window is open for two hours of
//! elapsed time even on the night the clocks change (its local end may read 1h off the naive sum).
//! One consequence: a daily `24h` window in a DST zone is closed for the extra fall-back hour.
//! Occurrences that overlap or touch are one open span, so "open until" is when it really closes.
//!
//! DST, as observed with the cron crate 0.15 and asserted in the tests below:
//! - a local time that does not exist (spring forward, e.g. 02:30 in Berlin on 2026-03-29) is
//!   **skipped** by cron: that day has no occurrence; it is not moved to 03:30;
//! - a local time that happens twice (fall back, e.g. 01:30 in New York on 2026-11-01) is yielded
//!   **twice** by cron; a window opens once per local time, so we keep the first (earlier) instant
//!   and drop the repeat.

use std::time::Duration;

use chrono::{DateTime, LocalResult, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Occurrences merged into one span at most; past it a window counts as "open at least until" the
/// last merged end, so a window that never closes (e.g. daily for 24h in UTC) can't loop forever.
const MAX_MERGED_OCCURRENCES: usize = 512;

/// A half-open interval of time: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Span {
    /// `start` is inside, `end` is not: a window closing at 16:00 is closed at 16:00.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// A recurring release window: opens on its cron schedule (in its zone), stays open `duration`.
#[derive(Debug, Clone)]
pub struct Window {
    name: String,
    schedule: cron::Schedule,
    duration: Duration,
    /// `duration` as chrono arithmetic; saturated, since absurd config durations must not panic.
    length: TimeDelta,
    timezone: Tz,
}

impl Window {
    pub fn new(
        name: impl Into<String>,
        schedule: cron::Schedule,
        duration: Duration,
        timezone: Tz,
    ) -> Self {
        Window {
            name: name.into(),
            schedule,
            duration,
            length: TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX),
            timezone,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The span that contains `at`, if the window is open then.
    ///
    /// Occurrences that overlap or touch (`0 0 9-11 * * *` for 1h) form one span, so `end` is when
    /// the window really closes. `start` is the earliest occurrence still containing `at`.
    pub fn open_at(&self, at: DateTime<Utc>) -> Option<Span> {
        // cron only iterates forward: anything open at `at` started after `at - duration`.
        self.spans_from(saturating_sub(at, self.length))
            .next()
            .filter(|span| span.contains(at))
    }

    /// The next `n` openings strictly after `after`. A span already open at `after` is not an
    /// opening, nor is an occurrence that only extends it.
    pub fn next_openings(&self, after: DateTime<Utc>, n: usize) -> Vec<Span> {
        self.spans_from(saturating_sub(after, self.length))
            .filter(|span| span.start > after)
            .take(n)
            .collect()
    }

    /// The next opening strictly after `after`; `None` if the schedule has no future occurrence.
    pub fn next_opening(&self, after: DateTime<Utc>) -> Option<Span> {
        self.next_openings(after, 1).into_iter().next()
    }

    /// `at` in this window's zone with UTC alongside, for cards and `windows`.
    pub fn format_time(&self, at: DateTime<Utc>) -> String {
        format_with_utc(at, self.timezone)
    }

    /// Occurrence starts strictly after `after`, each local time once (see the module docs).
    fn starts_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        occurrences_after(&self.schedule, self.timezone, after)
    }

    /// Merged spans of occurrences starting strictly after `from`. Stops after a span that hit
    /// [`MAX_MERGED_OCCURRENCES`]: what follows it would not be a real opening.
    fn spans_from(&self, from: DateTime<Utc>) -> impl Iterator<Item = Span> + '_ {
        let mut starts = self.starts_after(from).peekable();
        let mut capped = false;
        std::iter::from_fn(move || {
            if capped {
                return None;
            }
            let start = starts.next()?;
            let mut end = saturating_add(start, self.length);
            let mut merged = 1;
            while let Some(next) = starts.next_if(|next| *next <= end) {
                end = end.max(saturating_add(next, self.length));
                merged += 1;
                if merged >= MAX_MERGED_OCCURRENCES {
                    capped = true;
                    break;
                }
            }
            Some(Span { start, end })
        })
    }
}

/// The instants a cron schedule read in `timezone` fires strictly after `after`, each local time
/// once: a local time skipped by a spring-forward does not occur, and one repeated by a
/// fall-back occurs at its first instant only. Windows and `[[schedule]]`s both go by this.
pub fn occurrences_after(
    schedule: &cron::Schedule,
    timezone: Tz,
    after: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    let local_after = after.with_timezone(&timezone);
    schedule
        .after(&local_after)
        // cron resolves an ambiguous local time to both instants; the earlier one can
        // precede `after` when `after` lies in the repeated hour.
        .filter(move |start| *start > local_after)
        .filter(
            move |start| match timezone.from_local_datetime(&start.naive_local()) {
                LocalResult::Ambiguous(earlier, _) => *start == earlier,
                _ => true,
            },
        )
        .map(|start| start.with_timezone(&Utc))
}

/// When to post "`<window>` opens in X": `(X, instant)` for each lead, earliest first. Leads
/// longer than the time since the epoch are left out rather than wrapped.
pub fn announcement_times(
    span: &Span,
    announce_before: &[Duration],
) -> Vec<(Duration, DateTime<Utc>)> {
    let mut times: Vec<_> = announce_before
        .iter()
        .filter_map(|lead| {
            let delta = TimeDelta::from_std(*lead).ok()?;
            Some((*lead, span.start.checked_sub_signed(delta)?))
        })
        .collect();
    times.sort_by_key(|(_, at)| *at);
    times.dedup_by_key(|(_, at)| *at);
    times
}

/// Where a freeze came from: `[[freeze]]` in `bot.toml`, or `/release freeze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeSource {
    Configured,
    AdHoc,
}

/// No promotion starts in the listed environments during `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Environment names; `*` freezes all.
    pub environments: Vec<String>,
    pub reason: Option<String>,
    pub source: FreezeSource,
}

impl Freeze {
    pub const ALL: &'static str = "*";

    pub fn span(&self) -> Span {
        Span {
            start: self.start,
            end: self.end,
        }
    }

    pub fn applies_to(&self, environment: &str) -> bool {
        self.environments
            .iter()
            .any(|e| e == Self::ALL || e == environment)
    }

    /// Half-open like windows: a freeze ending at 09:00 no longer blocks at 09:00.
    pub fn covers(&self, environment: &str, at: DateTime<Utc>) -> bool {
        self.applies_to(environment) && self.span().contains(at)
    }
}

/// May a promotion into an environment start now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// `closes_at` is when the environment's windows close (`None`: it has none). A freeze that
    /// begins before then is not reflected: the engine asks again at each start.
    Open { closes_at: Option<DateTime<Utc>> },
    /// `next_opening` is the earliest of the environment's windows; `None` if none opens again.
    OutsideWindow { next_opening: Option<Span> },
    /// `until`: when the freezes covering the environment end (chained freezes count as one).
    Frozen {
        until: DateTime<Utc>,
        reason: Option<String>,
    },
}

/// The one question the engine asks before starting a promotion into `environment`.
///
/// A freeze wins over an open window (and is reported over a closed one, since it is the reason
/// people need to know). No windows means always open unless frozen; with several windows the
/// environment is open if any is.
pub fn start_gate(
    environment: &str,
    windows: &[&Window],
    freezes: &[Freeze],
    at: DateTime<Utc>,
) -> Gate {
    if let Some(gate) = frozen(environment, freezes, at) {
        return gate;
    }
    if windows.is_empty() {
        return Gate::Open { closes_at: None };
    }
    let open_ends: Vec<_> = windows
        .iter()
        .filter_map(|w| w.open_at(at))
        .map(|s| s.end)
        .collect();
    match open_ends.into_iter().max() {
        Some(mut closes_at) => {
            // Another window open when this one closes (or opening right then) keeps it open.
            for _ in 0..MAX_MERGED_OCCURRENCES {
                let later = windows
                    .iter()
                    .filter_map(|w| w.open_at(closes_at))
                    .map(|s| s.end)
                    .max();
                match later {
                    Some(end) if end > closes_at => closes_at = end,
                    _ => break,
                }
            }
            Gate::Open {
                closes_at: Some(closes_at),
            }
        }
        None => Gate::OutsideWindow {
            next_opening: windows
                .iter()
                .filter_map(|w| w.next_opening(at))
                .min_by_key(|s| s.start),
        },
    }
}

fn frozen(environment: &str, freezes: &[Freeze], at: DateTime<Utc>) -> Option<Gate> {
    let covering: Vec<&Freeze> = freezes
        .iter()
        .filter(|f| f.covers(environment, at))
        .collect();
    let mut until = covering.iter().map(|f| f.end).max()?;
    // A freeze covering the end of another extends it; each pass either extends or stops.
    for _ in 0..freezes.len() {
        match freezes
            .iter()
            .filter(|f| f.covers(environment, until))
            .map(|f| f.end)
            .max()
        {
            Some(end) if end > until => until = end,
            _ => break,
        }
    }
    let mut reasons: Vec<&str> = Vec::new();
    for reason in covering.iter().filter_map(|f| f.reason.as_deref()) {
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    Some(Gate::Frozen {
        until,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    })
}

/// `Tue 2026-11-24 14:00 CET`: what people in that zone read on their clock.
pub fn format_in_zone(at: DateTime<Utc>, timezone: Tz) -> String {
    at.with_timezone(&timezone)
        .format("%a %Y-%m-%d %H:%M %Z")
        .to_string()
}

/// `Tue 2026-11-24 14:00 CET (13:00 UTC)`; the UTC part names its weekday when the UTC date
/// differs (`Wed 2026-11-25 00:30 CET (Tue 23:30 UTC)`) and is left out for UTC itself.
pub fn format_with_utc(at: DateTime<Utc>, timezone: Tz) -> String {
    let local = format_in_zone(at, timezone);
    if timezone == Tz::UTC || timezone == Tz::Etc__UTC {
        return local;
    }
    let same_day = at.with_timezone(&timezone).date_naive() == at.date_naive();
    let utc = if same_day {
        at.format("%H:%M UTC")
    } else {
        at.format("%a %H:%M UTC")
    };
    format!("{local} ({utc})")
}

fn saturating_add(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Saturates at the epoch: cron has no years before 1970 anyway.
fn saturating_sub(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_sub_signed(delta)
        .unwrap_or(DateTime::UNIX_EPOCH)
        .max(DateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};
    use chrono_tz::{America::New_York, Europe::Berlin};
    use std::str::FromStr;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn window(cron: &str, hours: u64, tz: Tz) -> Window {
        Window::new(
            "w",
            cron::Schedule::from_str(cron).unwrap(),
            Duration::from_secs(hours * 3600),
            tz,
        )
    }

    fn span(start: &str, end: &str) -> Span {
        Span {
            start: utc(start),
            end: utc(end),
        }
    }

    fn starts(spans: &[Span]) -> Vec<DateTime<Utc>> {
        spans.iter().map(|s| s.start).collect()
    }

    #[test]
    fn tue_thu_window_is_open_inside_and_closed_at_its_edges() {
        let w = window("0 0 14 * * Tue,Thu", 2, Berlin);
        let tuesday_1430 = local(Berlin, 2026, 11, 24, 14, 30);
        assert_eq!(tuesday_1430.with_timezone(&Berlin).weekday(), Weekday::Tue);
        assert_eq!(
            w.open_at(tuesday_1430),
            Some(span("2026-11-24T13:00:00Z", "2026-11-24T15:00:00Z"))
        );
        assert_eq!(
            w.open_at(local(Berlin, 2026, 11, 24, 14, 0))
                .map(|s| s.start),
            Some(utc("2026-11-24T13:00:00Z"))
        );
        assert_eq!(w.open_at(local(Berlin, 2026, 11, 24, 16, 0)), None);
        assert_eq!(w.open_at(local(Berlin, 2026, 11, 24, 13, 59)), None);
        assert_eq!(
            w.open_at(local(Berlin, 2026, 11, 25, 14, 30)),
            None,
            "Wednesday"
        );
    }

    #[test]
    fn next_three_openings_from_a_friday() {
        let w = window("0 0 14 * * Tue,Thu", 2, Berlin);
        let friday = local(Berlin, 2026, 11, 27, 9, 0);
        assert_eq!(friday.with_timezone(&Berlin).weekday(), Weekday::Fri);
        assert_eq!(
            w.next_openings(friday, 3),
            vec![
                span("2026-12-01T13:00:00Z", "2026-12-01T15:00:00Z"),
                span("2026-12-03T13:00:00Z", "2026-12-03T15:00:00Z"),
                span("2026-12-08T13:00:00Z", "2026-12-08T15:00:00Z"),
            ]
        );
    }

    #[test]
    fn next_openings_are_strictly_after_and_skip_the_open_one() {
        let w = window("0 0 14 * * Tue,Thu", 2, Berlin);
        let opening = utc("2026-11-24T13:00:00Z");
        assert_eq!(
            starts(&w.next_openings(opening, 1)),
            vec![utc("2026-11-26T13:00:00Z")],
            "the opening at `after` itself is not next"
        );
        assert_eq!(
            w.next_opening(opening - TimeDelta::seconds(1))
                .map(|s| s.start),
            Some(opening)
        );
        assert_eq!(
            starts(&w.next_openings(utc("2026-11-24T14:00:00Z"), 1)),
            vec![utc("2026-11-26T13:00:00Z")],
            "while open, the next opening is the following one"
        );
    }

    #[test]
    fn daily_14_00_keeps_local_time_across_dst_in_berlin() {
        let w = window("0 0 14 * * *", 2, Berlin);
        assert_eq!(
            starts(&w.next_openings(utc("2026-03-28T00:00:00Z"), 2)),
            vec![utc("2026-03-28T13:00:00Z"), utc("2026-03-29T12:00:00Z")]
        );
        assert_eq!(
            starts(&w.next_openings(utc("2026-10-24T00:00:00Z"), 2)),
            vec![utc("2026-10-24T12:00:00Z"), utc("2026-10-25T13:00:00Z")]
        );
    }

    #[test]
    fn daily_14_00_keeps_local_time_across_dst_in_new_york() {
        let w = window("0 0 14 * * *", 2, New_York);
        assert_eq!(
            starts(&w.next_openings(utc("2026-03-07T00:00:00Z"), 2)),
            vec![utc("2026-03-07T19:00:00Z"), utc("2026-03-08T18:00:00Z")]
        );
        assert_eq!(
            starts(&w.next_openings(utc("2026-10-31T00:00:00Z"), 2)),
            vec![utc("2026-10-31T18:00:00Z"), utc("2026-11-01T19:00:00Z")]
        );
    }

    /// The raw crate behaviour this module builds on; if a cron upgrade changes it, this fails.
    #[test]
    fn cron_0_15_skips_nonexistent_and_repeats_ambiguous_local_times() {
        let gap = cron::Schedule::from_str("0 30 2 * * *").unwrap();
        let from = Berlin.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let raw: Vec<_> = gap
            .after(&from)
            .take(2)
            .map(|t| t.with_timezone(&Utc))
            .collect();
        assert_eq!(
            raw,
            vec![utc("2026-03-30T00:30:00Z"), utc("2026-03-31T00:30:00Z")],
            "02:30 on 2026-03-29 does not exist in Berlin: skipped, not shifted to 03:30"
        );

        let repeat = cron::Schedule::from_str("0 30 1 * * *").unwrap();
        let from = New_York.with_ymd_and_hms(2026, 10, 31, 12, 0, 0).unwrap();
        let raw: Vec<_> = repeat
            .after(&from)
            .take(3)
            .map(|t| t.with_timezone(&Utc))
            .collect();
        assert_eq!(
            raw,
            vec![
                utc("2026-11-01T05:30:00Z"), // 01:30 EDT
                utc("2026-11-01T06:30:00Z"), // 01:30 EST: cron fires twice
                utc("2026-11-02T06:30:00Z"),
            ]
        );
    }

    #[test]
    fn nonexistent_local_time_skips_that_day() {
        let berlin = window("0 30 2 * * *", 1, Berlin);
        assert_eq!(
            starts(&berlin.next_openings(utc("2026-03-28T00:00:00Z"), 2)),
            vec![utc("2026-03-28T01:30:00Z"), utc("2026-03-30T00:30:00Z")]
        );
        // Nothing opens on the 29th: not at the would-be 02:30 CET (01:30Z), nor shifted to 03:30.
        for at in [
            "2026-03-29T00:45:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T02:00:00Z",
        ] {
            assert_eq!(berlin.open_at(utc(at)), None, "{at}");
        }

        let new_york = window("0 30 2 * * *", 1, New_York);
        assert_eq!(
            starts(&new_york.next_openings(utc("2026-03-07T00:00:00Z"), 2)),
            vec![utc("2026-03-07T07:30:00Z"), utc("2026-03-09T06:30:00Z")]
        );
    }

    #[test]
    fn a_cron_schedule_fires_a_repeated_local_time_once_and_a_skipped_one_never() {
        let schedule = |cron: &str| cron::Schedule::from_str(cron).expect("cron");
        let fires = |cron: &str, after: &str, until: &str| -> Vec<DateTime<Utc>> {
            let schedule = schedule(cron);
            occurrences_after(&schedule, Berlin, utc(after))
                .take_while(|at| *at <= utc(until))
                .collect()
        };
        // 02:30 Berlin on the fall-back night: 00:30Z, not again at 01:30Z.
        assert_eq!(
            fires(
                "0 30 2 * * *",
                "2026-10-24T23:00:00Z",
                "2026-10-25T23:00:00Z"
            ),
            [utc("2026-10-25T00:30:00Z")]
        );
        // Asked from inside the repeated hour, the first pass is already over.
        assert!(fires(
            "0 30 2 * * *",
            "2026-10-25T01:28:00Z",
            "2026-10-25T23:00:00Z"
        )
        .is_empty());
        // 02:30 does not exist on the spring-forward night.
        assert!(fires(
            "0 30 2 * * *",
            "2026-03-28T23:00:00Z",
            "2026-03-29T23:00:00Z"
        )
        .is_empty());
    }

    #[test]
    fn ambiguous_local_time_opens_once() {
        let w = window("0 30 1 * * *", 1, New_York);
        assert_eq!(
            starts(&w.next_openings(utc("2026-10-31T12:00:00Z"), 2)),
            vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
        // 01:30 EST (the repeat) is not an opening: open 05:30Z-06:30Z only.
        assert!(w.open_at(utc("2026-11-01T06:00:00Z")).is_some());
        assert_eq!(w.open_at(utc("2026-11-01T06:30:00Z")), None);
        assert_eq!(w.open_at(utc("2026-11-01T06:45:00Z")), None);
        // Asked from inside the repeated hour (01:10 EST), the day's opening has passed.
        assert_eq!(
            w.next_opening(utc("2026-11-01T06:10:00Z")).map(|s| s.start),
            Some(utc("2026-11-02T06:30:00Z"))
        );

        let berlin = window("0 30 2 * * *", 1, Berlin);
        assert_eq!(
            starts(&berlin.next_openings(utc("2026-10-24T12:00:00Z"), 2)),
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        assert_eq!(berlin.open_at(utc("2026-10-25T01:45:00Z")), None);
    }

    #[test]
    fn looking_back_from_the_repeated_hour_ignores_the_first_pass() {
        // Searching from 01:52 EST, cron first yields 01:55 EDT: an instant before the start.
        let w = Window::new(
            "w",
            cron::Schedule::from_str("0 0,55 * * * *").unwrap(),
            Duration::from_secs(10 * 60),
            New_York,
        );
        let at = utc("2026-11-01T07:02:00Z"); // 02:02 EST
        assert_eq!(
            w.open_at(at),
            Some(span("2026-11-01T07:00:00Z", "2026-11-01T07:10:00Z"))
        );
    }

    #[test]
    fn a_span_crosses_midnight() {
        let w = window("0 0 22 * * Fri", 4, Berlin);
        let saturday_1am = local(Berlin, 2026, 11, 28, 1, 0);
        assert_eq!(
            w.open_at(saturday_1am),
            Some(span("2026-11-27T21:00:00Z", "2026-11-28T01:00:00Z"))
        );
        assert_eq!(w.open_at(local(Berlin, 2026, 11, 28, 2, 0)), None);
    }

    #[test]
    fn a_span_crossing_dst_lasts_its_duration_in_real_time() {
        // Spring forward: 01:00 CET + 3h of real time ends at 05:00 CEST on the wall clock.
        let w = window("0 0 1 * * *", 3, Berlin);
        let open = w.open_at(utc("2026-03-29T02:30:00Z")).unwrap();
        assert_eq!(open, span("2026-03-29T00:00:00Z", "2026-03-29T03:00:00Z"));
        assert_eq!(
            format_in_zone(open.end, Berlin),
            "Sun 2026-03-29 05:00 CEST"
        );
        // Fall back: 01:00 CEST + 3h ends at 03:00 CET.
        let open = w.open_at(utc("2026-10-25T01:30:00Z")).unwrap();
        assert_eq!(open, span("2026-10-24T23:00:00Z", "2026-10-25T02:00:00Z"));
        assert_eq!(format_in_zone(open.end, Berlin), "Sun 2026-10-25 03:00 CET");
    }

    #[test]
    fn touching_occurrences_are_one_span() {
        let w = window("0 0 9-11 * * *", 1, Berlin);
        let at = local(Berlin, 2026, 11, 24, 9, 30);
        assert_eq!(
            w.open_at(at),
            Some(Span {
                start: local(Berlin, 2026, 11, 24, 9, 0),
                end: local(Berlin, 2026, 11, 24, 12, 0),
            })
        );
        assert_eq!(
            starts(&w.next_openings(at, 1)),
            vec![local(Berlin, 2026, 11, 25, 9, 0)],
            "10:00 extends the open span, it is not an opening"
        );
    }

    #[test]
    fn a_window_that_never_closes_is_capped_not_endless() {
        let w = window("0 0 0 * * *", 24, Tz::UTC);
        let at = utc("2026-11-24T12:00:00Z");
        let open = w.open_at(at).unwrap();
        assert_eq!(open.start, utc("2026-11-24T00:00:00Z"));
        assert_eq!(
            open.end,
            open.start + TimeDelta::days(MAX_MERGED_OCCURRENCES as i64),
            "open at least until the last merged occurrence ends"
        );
        assert_eq!(
            w.next_openings(at, 1),
            vec![],
            "no invented opening after the cap"
        );
    }

    #[test]
    fn daily_24h_in_a_dst_zone_closes_for_the_extra_fall_back_hour() {
        // Real-time duration: the 25h local day of 2026-10-25 leaves 22:00Z-23:00Z uncovered,
        // and the 23h day of 2027-03-28 overlaps the next occurrence (merged, no gap).
        let w = window("0 0 0 * * *", 24, Berlin);
        let open = w.open_at(utc("2026-10-01T12:00:00Z")).unwrap();
        assert_eq!(open.end, utc("2026-10-25T22:00:00Z"));
        assert_eq!(format_in_zone(open.end, Berlin), "Sun 2026-10-25 23:00 CET");
        let next = w.next_opening(utc("2026-10-01T12:00:00Z")).unwrap();
        assert_eq!(next.start, utc("2026-10-25T23:00:00Z"));
        assert_eq!(
            next.end,
            utc("2027-10-31T22:00:00Z"),
            "spring forward 2027 is no gap"
        );
    }

    #[test]
    fn announcements_precede_the_opening() {
        let opening = span("2026-11-24T13:00:00Z", "2026-11-24T15:00:00Z");
        let leads = [Duration::from_secs(300), Duration::from_secs(1800)];
        assert_eq!(
            announcement_times(&opening, &leads),
            vec![
                (Duration::from_secs(1800), utc("2026-11-24T12:30:00Z")),
                (Duration::from_secs(300), utc("2026-11-24T12:55:00Z")),
            ]
        );
    }

    fn freeze(envs: &[&str], start: &str, end: &str, reason: Option<&str>) -> Freeze {
        Freeze {
            start: utc(start),
            end: utc(end),
            environments: envs.iter().map(|e| e.to_string()).collect(),
            reason: reason.map(str::to_string),
            source: FreezeSource::AdHoc,
        }
    }

    #[test]
    fn freeze_coverage() {
        let all = freeze(&["*"], "2026-12-23T00:00:00Z", "2027-01-02T00:00:00Z", None);
        let prod = freeze(
            &["production"],
            "2026-12-23T00:00:00Z",
            "2027-01-02T00:00:00Z",
            None,
        );
        let inside = utc("2026-12-24T10:00:00Z");
        assert!(all.covers("staging", inside) && all.covers("production", inside));
        assert!(prod.covers("production", inside));
        assert!(!prod.covers("staging", inside));
        assert!(
            prod.covers("production", utc("2026-12-23T00:00:00Z")),
            "start is inside"
        );
        assert!(
            !prod.covers("production", utc("2027-01-02T00:00:00Z")),
            "end is not"
        );
        assert!(!prod.covers("production", utc("2026-12-22T23:59:59Z")));
    }

    #[test]
    fn gate_env_without_windows_is_open_unless_frozen() {
        let at = utc("2026-11-24T10:00:00Z");
        assert_eq!(
            start_gate("staging", &[], &[], at),
            Gate::Open { closes_at: None }
        );
        let f = freeze(
            &["*"],
            "2026-11-24T09:00:00Z",
            "2026-11-24T12:00:00Z",
            Some("incident"),
        );
        assert_eq!(
            start_gate("staging", &[], &[f], at),
            Gate::Frozen {
                until: utc("2026-11-24T12:00:00Z"),
                reason: Some("incident".to_string())
            }
        );
    }

    #[test]
    fn gate_freeze_beats_an_open_window() {
        let w = window("0 0 14 * * Tue,Thu", 2, Berlin);
        let at = local(Berlin, 2026, 11, 24, 14, 30);
        let f = freeze(
            &["production"],
            "2026-11-24T00:00:00Z",
            "2026-11-25T00:00:00Z",
            None,
        );
        assert_eq!(
            start_gate("production", &[&w], std::slice::from_ref(&f), at),
            Gate::Frozen {
                until: utc("2026-11-25T00:00:00Z"),
                reason: None
            }
        );
        assert_eq!(
            start_gate("staging", &[&w], &[f], at),
            Gate::Open {
                closes_at: Some(utc("2026-11-24T15:00:00Z"))
            },
            "a freeze for another environment does not apply"
        );
    }

    #[test]
    fn gate_freeze_ending_exactly_now_does_not_block() {
        let at = utc("2026-11-24T12:00:00Z");
        let f = freeze(&["*"], "2026-11-24T09:00:00Z", "2026-11-24T12:00:00Z", None);
        assert_eq!(
            start_gate("production", &[], &[f], at),
            Gate::Open { closes_at: None }
        );
    }

    #[test]
    fn gate_chained_freezes_report_the_last_end_and_every_reason() {
        let at = utc("2026-11-24T10:00:00Z");
        let freezes = [
            freeze(
                &["production"],
                "2026-11-24T09:00:00Z",
                "2026-11-24T12:00:00Z",
                Some("incident"),
            ),
            freeze(
                &["*"],
                "2026-11-24T11:00:00Z",
                "2026-11-24T15:00:00Z",
                Some("migration"),
            ),
            freeze(&["*"], "2026-11-24T15:00:00Z", "2026-11-24T16:00:00Z", None),
            freeze(
                &["*"],
                "2026-11-24T17:00:00Z",
                "2026-11-24T18:00:00Z",
                Some("later"),
            ),
        ];
        assert_eq!(
            start_gate("production", &[], &freezes, at),
            Gate::Frozen {
                until: utc("2026-11-24T16:00:00Z"),
                reason: Some("incident".to_string())
            }
        );
    }

    #[test]
    fn gate_outside_windows_names_the_earliest_next_opening() {
        let tue_thu = window("0 0 14 * * Tue,Thu", 2, Berlin);
        let monday = window("0 0 9 * * Mon", 1, New_York);
        let friday = local(Berlin, 2026, 11, 27, 9, 0);
        assert_eq!(
            start_gate("production", &[&tue_thu, &monday], &[], friday),
            Gate::OutsideWindow {
                next_opening: Some(span("2026-11-30T14:00:00Z", "2026-11-30T15:00:00Z"))
            }
        );
        assert_eq!(
            start_gate(
                "production",
                &[&monday, &tue_thu],
                &[],
                local(Berlin, 2026, 11, 30, 16, 0)
            ),
            Gate::OutsideWindow {
                next_opening: Some(span("2026-12-01T13:00:00Z", "2026-12-01T15:00:00Z"))
            }
        );
    }

    #[test]
    fn gate_open_if_any_window_is_and_closes_when_the_last_does() {
        let afternoon = window("0 0 14 * * *", 2, Berlin);
        let overlapping = window("0 0 15 * * *", 2, Berlin);
        let at = local(Berlin, 2026, 11, 24, 14, 30);
        assert_eq!(
            start_gate("production", &[&afternoon, &overlapping], &[], at),
            Gate::Open {
                closes_at: Some(local(Berlin, 2026, 11, 24, 17, 0))
            }
        );
        let morning = window("0 0 9 * * *", 1, Berlin);
        assert_eq!(
            start_gate("production", &[&morning, &afternoon], &[], at),
            Gate::Open {
                closes_at: Some(local(Berlin, 2026, 11, 24, 16, 0))
            }
        );
    }

    #[test]
    fn gate_window_that_never_opens_again() {
        let past = window("0 0 14 1 1 * 2020", 2, Berlin);
        assert_eq!(
            start_gate("production", &[&past], &[], utc("2026-11-24T10:00:00Z")),
            Gate::OutsideWindow { next_opening: None }
        );
    }

    #[test]
    fn formats_local_time_with_utc() {
        assert_eq!(
            format_with_utc(utc("2026-11-24T13:00:00Z"), Berlin),
            "Tue 2026-11-24 14:00 CET (13:00 UTC)"
        );
        assert_eq!(
            format_with_utc(utc("2026-07-07T12:00:00Z"), Berlin),
            "Tue 2026-07-07 14:00 CEST (12:00 UTC)"
        );
        assert_eq!(
            format_with_utc(utc("2026-11-24T23:30:00Z"), Berlin),
            "Wed 2026-11-25 00:30 CET (Tue 23:30 UTC)"
        );
        assert_eq!(
            format_with_utc(utc("2026-11-24T13:00:00Z"), Tz::UTC),
            "Tue 2026-11-24 13:00 UTC"
        );
        let w = window("0 0 14 * * *", 2, New_York);
        assert_eq!(
            w.format_time(utc("2026-11-24T19:00:00Z")),
            "Tue 2026-11-24 14:00 EST (19:00 UTC)"
        );
    }
}
