//! Short durations in the targets file (timeouts, poll intervals): `<n>ms`, `<n>s`, `<n>m`, `<n>h`.

use std::time::Duration;

/// Longest duration accepted: one day.
pub(crate) const MAX: Duration = Duration::from_secs(86_400);

/// Parses `<n>ms|s|m|h` with n ≥ 1, up to a day. The error does not repeat the value: a
/// value of the targets file may come from a secret.
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
    const NOT_A_DURATION: &str = "is not a duration; write e.g. \"500ms\", \"30s\" or \"2m\"";
    let s = raw.trim();
    let (digits, scale_ms) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1u64)
    } else if let Some(d) = s.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = s.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = s.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        return Err(NOT_A_DURATION.into());
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NOT_A_DURATION.into());
    }
    let n: u64 = digits.parse().map_err(|_| "is longer than a day".to_string())?;
    if n == 0 {
        return Err("is zero".into());
    }
    match n.checked_mul(scale_ms).map(Duration::from_millis) {
        Some(d) if d <= MAX => Ok(d),
        _ => Err("is longer than a day".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_the_rest() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        for bad in ["", "0s", "5", "1.5s", "-1s", "2d", "25h", "99999999999999999999ms", "ms", "é"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
