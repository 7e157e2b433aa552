//! Human durations for flags: `500ms`, `5s`, `2m`, `1h 30m`, `30d`, or
//! plain seconds (`3`). The one parser of the CLI.

use std::time::Duration;

/// The longest duration a flag takes (about 31 years).
const MAX: Duration = Duration::from_secs(1_000_000_000);

/// Parses a duration flag value.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let d = if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let secs: f64 = t.parse().map_err(|_| {
            format!("'{text}' is not a duration; use e.g. 500ms, 5s, 2m, 1h or 30d")
        })?;
        if !secs.is_finite() || secs > MAX.as_secs_f64() {
            return Err(format!("'{text}' is out of range"));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(t).map_err(|e| {
            format!("'{text}' is not a duration ({e}); use e.g. 500ms, 5s, 2m, 1h or 30d")
        })?
    };
    if d > MAX {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse("5 parsecs")
            .unwrap_err()
            .contains("unknown time unit"));
        assert!(parse("x").is_err());
        assert!(parse("").is_err());
        assert!(parse("40000y").unwrap_err().contains("out of range"));
    }
}
