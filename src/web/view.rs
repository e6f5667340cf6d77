//! The templates' data: plain strings made from the engine's views, so the templates only place
//! and escape them.

use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// The links between pages (not for the holder of a single signed link).
    pub nav: bool,
    /// The API token name of the signed-in reader, for "Sign out".
    pub signed_in: Option<String>,
}

impl Layout {
    /// The frame of pages shown before anyone is known (sign-in, refusals).
    pub fn bare(title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            nav: false,
            signed_in: None,
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub next: String,
    pub problem: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub layout: Layout,
    pub heading: &'a str,
    pub message: &'a str,
    pub action_href: Option<&'a str>,
    pub action_label: &'a str,
}

/// `2026-11-17 09:00 UTC`
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2026-11-17 09:00:05 UTC`, for timelines where seconds tell events apart.
pub fn when_exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// For `<time datetime=…>`.
pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `3h2m ago`, `1d4h ago`, `just now`: the two largest units, as people read a status board.
pub fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    let (days, hours, minutes) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => "just now".to_string(),
        (0, 0, m) => format!("{m}m ago"),
        (0, h, 0) => format!("{h}h ago"),
        (0, h, m) => format!("{h}h{m}m ago"),
        (d, 0, _) => format!("{d}d ago"),
        (d, h, _) => format!("{d}d{h}h ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ago_reads_like_a_status_board() {
        let now = Utc.with_ymd_and_hms(2026, 11, 17, 12, 0, 0).unwrap();
        let before = |s: i64| ago(now, now - chrono::Duration::seconds(s));
        assert_eq!(before(5), "just now");
        assert_eq!(before(125), "2m ago");
        assert_eq!(before(3 * 3600 + 125), "3h2m ago");
        assert_eq!(before(86_400 + 4 * 3600 + 700), "1d4h ago");
    }
}
