//! Grouped bar charts drawn as inline SVG (no script, no image request): one group per
//! environment, one bar per window. The SVG is an askama template, so every label is escaped
//! like the rest of the page.

use askama::Template;

/// Colours that read on light and dark backgrounds alike.
const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1"];
const LEFT: u32 = 4;
const PLOT_TOP: u32 = 30;
const BASELINE: u32 = 140;
const HEIGHT: u32 = 164;
const BAR: u32 = 20;
const BAR_GAP: u32 = 6;
const GROUP_GAP: u32 = 22;
const MIN_WIDTH: u32 = 230;

/// One group of bars: its label, and per series a value (none: no data) and how to show it.
pub struct Group {
    pub label: String,
    pub values: Vec<(Option<f64>, String)>,
}

#[derive(Template)]
#[template(path = "bar_chart.html")]
struct BarChart {
    id: String,
    title: String,
    width: u32,
    height: u32,
    left: u32,
    baseline: u32,
    label_y: u32,
    bar_width: u32,
    groups: Vec<GroupView>,
    legend: Vec<LegendView>,
}

struct GroupView {
    label: String,
    label_x: u32,
    bars: Vec<BarView>,
}

struct BarView {
    x: u32,
    y: u32,
    /// None: no data, no bar (its label says so).
    height: Option<u32>,
    color: &'static str,
    label: String,
    label_x: u32,
    label_y: u32,
    tooltip: String,
}

struct LegendView {
    x: u32,
    text_x: u32,
    color: &'static str,
    label: String,
}

/// A chart with an element id `id`, an accessible `title`, one bar per `series` in each group.
pub fn bar_chart(
    id: &str,
    title: &str,
    series: &[&str],
    groups: &[Group],
) -> Result<String, askama::Error> {
    let count = u32::try_from(series.len()).unwrap_or(1).max(1);
    let group_width = count * (BAR + BAR_GAP) - BAR_GAP;
    let groups_count = u32::try_from(groups.len()).unwrap_or(0);
    let width = (LEFT + groups_count * (group_width + GROUP_GAP) + GROUP_GAP).max(MIN_WIDTH);
    let max = groups
        .iter()
        .flat_map(|g| g.values.iter().filter_map(|(v, _)| *v))
        .fold(0.0_f64, f64::max);
    let plot = f64::from(BASELINE - PLOT_TOP);
    let groups = (0u32..)
        .zip(groups)
        .map(|(index, group)| {
            let start = LEFT + GROUP_GAP / 2 + index * (group_width + GROUP_GAP);
            let bars = (0u32..)
                .zip(&group.values)
                .zip(series.iter().cycle())
                .map(|((n, (value, shown)), name)| {
                    let x = start + n * (BAR + BAR_GAP);
                    let height = value.map(|v| scaled(v, max, plot));
                    let top = BASELINE - height.unwrap_or(0);
                    BarView {
                        x,
                        y: top,
                        height,
                        color: COLORS[n as usize % COLORS.len()],
                        label: shown.clone(),
                        label_x: x + BAR / 2,
                        label_y: top.saturating_sub(3),
                        tooltip: format!("{}, {name}: {shown}", group.label),
                    }
                })
                .collect();
            GroupView {
                label: group.label.clone(),
                label_x: start + group_width / 2,
                bars,
            }
        })
        .collect();
    let legend = (0u32..)
        .zip(series)
        .map(|(n, label)| LegendView {
            x: LEFT + n * 70,
            text_x: LEFT + n * 70 + 12,
            color: COLORS[n as usize % COLORS.len()],
            label: label.to_string(),
        })
        .collect();
    BarChart {
        id: id.to_string(),
        title: title.to_string(),
        width,
        height: HEIGHT,
        left: LEFT,
        baseline: BASELINE,
        label_y: HEIGHT - 8,
        bar_width: BAR,
        groups,
        legend,
    }
    .render()
}

/// A bar's height for `value` on a plot `plot` high whose tallest bar is `max`.
fn scaled(value: f64, max: f64, plot: f64) -> u32 {
    if max <= 0.0 || !value.is_finite() || value <= 0.0 {
        return 0;
    }
    // At most `plot`, which fits u32: the cast cannot truncate.
    (value / max * plot).round().clamp(0.0, plot) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_tallest_and_missing_values_draw_no_bar() {
        let groups = [
            Group {
                label: "staging".into(),
                values: vec![(Some(2.0), "2/day".into()), (Some(1.0), "1/day".into())],
            },
            Group {
                label: "<prod>".into(),
                values: vec![(None, "–".into()), (Some(0.0), "0/day".into())],
            },
        ];
        let svg =
            bar_chart("freq", "Deploys per day", &["7 days", "30 days"], &groups).expect("renders");
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "3 bars and 2 legend keys: {svg}"
        );
        assert!(
            svg.contains(r#"height="110""#),
            "the tallest bar fills the plot: {svg}"
        );
        assert!(svg.contains(r#"height="55""#), "half of it: {svg}");
        assert!(
            svg.contains(r#"height="0""#),
            "a zero is a bar of no height: {svg}"
        );
        assert!(svg.contains("&#60;prod&#62;"), "labels are escaped: {svg}");
        assert!(svg.contains(r#"aria-labelledby="freq-title""#));
    }
}
