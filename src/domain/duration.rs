//! Durations as people write them: `45s`, `30m`, `2h`, `1d`, `1h30m`.

use std::time::Duration;

/// The longest duration shipmate takes anywhere (a freeze, a window, a timeout, an approval's
/// life). Longer ones mean a typo, and unbounded ones overflow date arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{input}` is not a duration: write it like 45s, 30m, 2h, 1d or 1h30m")]
    NotADuration { input: String },
    #[error(
        "`{input}` is longer than shipmate allows: at most {}",
        format_duration(MAX_DURATION)
    )]
    TooLong { input: String },
}

/// Parses a humantime-style duration; zero is refused because nothing in shipmate means "no time",
/// and anything over [`MAX_DURATION`].
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError::NotADuration {
        input: input.to_string(),
    };
    let trimmed = input.trim();
    // humantime accepts bare numbers as seconds only with a unit; a leading digit guards "m" or "".
    if !trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(error());
    }
    match humantime::parse_duration(trimmed) {
        Ok(duration) if duration > MAX_DURATION => Err(DurationError::TooLong {
            input: input.to_string(),
        }),
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(error()),
    }
}

/// Formats a duration compactly for people: `1h30m`, `45s`, `2d`.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        for (input, secs) in [
            ("45s", 45),
            ("30m", 1_800),
            ("2h", 7_200),
            ("1d", 86_400),
            ("1h30m", 5_400),
            ("1h 30m", 5_400),
        ] {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_secs(secs)),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_malformed_durations() {
        for input in ["", "m", "10", "ten minutes", "0s", "-5m", "5x"] {
            let err = parse_duration(input).unwrap_err();
            assert!(err.to_string().contains("45s, 30m"), "{input}: {err}");
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }
}
