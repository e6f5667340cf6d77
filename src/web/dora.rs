//! `/ui/dora`: the four delivery metrics per service and environment over 7, 30 and 90 days, as
//! tables and inline SVG charts.

use askama::Template;
use chrono::{DateTime, Utc};

use super::charts::{bar_chart, Group};
use super::view::{iso, when, Layout};
use crate::domain::duration::format_duration;

/// The windows the page shows, in days.
pub const WINDOWS: [u32; 3] = [7, 30, 90];

/// One service's environment over one window: what the page needs of the engine's report.
#[derive(Debug, Clone, PartialEq)]
pub struct DoraCell {
    pub service: String,
    pub environment: String,
    pub days: u32,
    pub deploys: u64,
    pub frequency_per_day: f64,
    pub lead_p50: Option<f64>,
    pub lead_p90: Option<f64>,
    pub failure_rate: Option<f64>,
    pub restore_p50: Option<f64>,
}

#[derive(Template)]
#[template(path = "dora.html")]
pub struct DoraTemplate {
    layout: Layout,
    to: String,
    to_iso: String,
    services: Vec<ServiceMetrics>,
}

struct ServiceMetrics {
    service: String,
    /// For the section's id: the service's position (names may hold any character).
    anchor: usize,
    charts: Vec<Chart>,
    rows: Vec<Row>,
}

struct Chart {
    svg: String,
    caption: String,
}

struct Row {
    environment: String,
    window: String,
    deploys: u64,
    frequency: String,
    lead_p50: String,
    lead_p90: String,
    failure_rate: String,
    restore_p50: String,
}

/// The page of `cells` (in configuration order), measured up to `to`.
pub fn page(
    cells: &[DoraCell],
    to: DateTime<Utc>,
    layout: Layout,
) -> Result<DoraTemplate, askama::Error> {
    let mut services: Vec<&str> = Vec::new();
    for cell in cells {
        if !services.contains(&cell.service.as_str()) {
            services.push(&cell.service);
        }
    }
    let services = services
        .into_iter()
        .enumerate()
        .map(|(anchor, service)| {
            let mine: Vec<&DoraCell> = cells.iter().filter(|c| c.service == service).collect();
            service_metrics(service, anchor, &mine)
        })
        .collect::<Result<_, _>>()?;
    Ok(DoraTemplate {
        layout,
        to: when(to),
        to_iso: iso(to),
        services,
    })
}

fn service_metrics(
    service: &str,
    anchor: usize,
    cells: &[&DoraCell],
) -> Result<ServiceMetrics, askama::Error> {
    let mut environments: Vec<&str> = Vec::new();
    for cell in cells {
        if !environments.contains(&cell.environment.as_str()) {
            environments.push(&cell.environment);
        }
    }
    let series: Vec<String> = WINDOWS.iter().map(|d| format!("{d} days")).collect();
    let series: Vec<&str> = series.iter().map(String::as_str).collect();
    let chart = |key: &str, title: &str, value: &dyn Fn(&DoraCell) -> (Option<f64>, String)| {
        let groups: Vec<Group> = environments
            .iter()
            .map(|env| Group {
                label: env.to_string(),
                values: WINDOWS
                    .iter()
                    .map(|days| {
                        cells
                            .iter()
                            .find(|c| c.environment == *env && c.days == *days)
                            .map_or((None, "–".to_string()), |c| value(c))
                    })
                    .collect(),
            })
            .collect();
        bar_chart(&format!("dora-{anchor}-{key}"), title, &series, &groups).map(|svg| Chart {
            svg,
            caption: format!("{service}: {title}"),
        })
    };
    let hours = |seconds: Option<f64>| seconds.map(|s| s / 3600.0);
    let charts = vec![
        chart("frequency", "deploys per day", &|c| {
            (Some(c.frequency_per_day), per_day(c.frequency_per_day))
        })?,
        chart("lead", "lead time, median", &|c| {
            (hours(c.lead_p50), duration(c.lead_p50))
        })?,
        chart("failures", "change failure rate", &|c| {
            (c.failure_rate.map(|r| r * 100.0), percent(c.failure_rate))
        })?,
        chart("restore", "time to restore, median", &|c| {
            (hours(c.restore_p50), duration(c.restore_p50))
        })?,
    ];
    let rows = environments
        .iter()
        .flat_map(|env| {
            WINDOWS.iter().filter_map(move |days| {
                cells
                    .iter()
                    .find(|c| c.environment == *env && c.days == *days)
            })
        })
        .map(|c| Row {
            environment: c.environment.clone(),
            window: format!("{} days", c.days),
            deploys: c.deploys,
            frequency: per_day(c.frequency_per_day),
            lead_p50: duration(c.lead_p50),
            lead_p90: duration(c.lead_p90),
            failure_rate: percent(c.failure_rate),
            restore_p50: duration(c.restore_p50),
        })
        .collect();
    Ok(ServiceMetrics {
        service: service.to_string(),
        anchor,
        charts,
        rows,
    })
}

/// `0.43`
fn per_day(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// `3h12m`, to the minute (seconds for less than one); `–` for no data.
fn duration(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let whole = s.round() as u64;
            let shown = if whole >= 3600 {
                whole - whole % 60
            } else {
                whole
            };
            format_duration(std::time::Duration::from_secs(shown))
        }
        _ => "–".to_string(),
    }
}

/// `8.3%`; `–` when nothing ended in the window (the rate is unknown, not 0%).
fn percent(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r.is_finite() => {
            let percent = r * 100.0;
            if percent == percent.round() {
                format!("{percent:.0}%")
            } else {
                format!("{percent:.1}%")
            }
        }
        _ => "–".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cell(environment: &str, days: u32, deploys: u64) -> DoraCell {
        DoraCell {
            service: "api".into(),
            environment: environment.into(),
            days,
            deploys,
            frequency_per_day: deploys as f64 / f64::from(days),
            lead_p50: (deploys > 0).then_some(3.0 * 3600.0 + 720.0),
            lead_p90: (deploys > 0).then_some(86_400.0),
            failure_rate: (deploys > 0).then_some(1.0 / 12.0),
            restore_p50: None,
        }
    }

    #[test]
    fn the_page_has_a_table_row_per_environment_and_window_and_four_charts() {
        let cells: Vec<DoraCell> = ["staging", "production"]
            .iter()
            .flat_map(|env| {
                WINDOWS
                    .iter()
                    .map(move |days| cell(env, *days, u64::from(*days / 7)))
            })
            .collect();
        let to = Utc.with_ymd_and_hms(2026, 11, 17, 9, 0, 0).unwrap();
        let html = page(&cells, to, Layout::bare("Delivery metrics"))
            .and_then(|p| p.render())
            .expect("renders");
        assert_eq!(html.matches("<figure><svg").count(), 4, "{html}");
        assert_eq!(
            html.matches(r#"<tr><th scope="row">production</th>"#)
                .count(),
            3
        );
        assert!(html.contains("<td>30 days</td><td>4</td><td>0.13</td><td>3h12m</td><td>1d</td><td>8.3%</td><td>–</td>"), "{html}");
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(per_day(0.4333), "0.43");
        assert_eq!(per_day(12.4), "12");
        assert_eq!(duration(Some(42.4)), "42s");
        assert_eq!(duration(Some(11_545.0)), "3h12m");
        assert_eq!(duration(None), "–");
        assert_eq!(percent(Some(0.25)), "25%");
        assert_eq!(percent(Some(1.0 / 12.0)), "8.3%");
        assert_eq!(percent(None), "–");
    }
}
