//! The `jitter` syntax of a cadence: a duration (`30s`, `500ms`) or a percent of the
//! period (`5%`), at most half the period.

use std::time::Duration;

use super::duration::parse_duration;

/// Largest jitter, as a share of the period: with offsets under half a period, two runs of
/// a cadence are never closer than half a period, nor further apart than one and a half.
pub const MAX_SHARE_PERCENT: u32 = 50;

/// A `jitter` value as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// A fixed bound.
    Fixed(Duration),
    /// A share of the period, in hundredths of a percent.
    Share(u32),
}

/// Checks the syntax of a `jitter` value (the bound against the period is checked once the
/// period is known, by [`resolve`]).
pub fn parse_jitter(raw: &str) -> Result<Jitter, String> {
    let s = raw.trim();
    if let Some(number) = s.strip_suffix('%') {
        let number = number.trim();
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 2 || whole.len() > 3 {
            return Err(format!("{raw:?} is not a percent; write e.g. \"5%\" or \"12.5%\""));
        }
        let whole: u32 = whole.parse().map_err(|_| format!("{raw:?} is not a percent"))?;
        let fraction: u32 = format!("{fraction:0<2}").parse().unwrap_or(0);
        let hundredths = whole * 100 + fraction;
        if hundredths == 0 {
            return Err(format!("{raw:?} is zero; leave jitter out for none"));
        }
        if hundredths > MAX_SHARE_PERCENT * 100 {
            return Err(format!("{raw:?} is more than {MAX_SHARE_PERCENT}% of the period"));
        }
        return Ok(Jitter::Share(hundredths));
    }
    parse_duration(s).map(Jitter::Fixed).map_err(|e| format!("{raw:?} {e}, or a percent of the period such as \"5%\""))
}

/// The bound of `jitter` for a cadence of `period`; an error when it is more than half the
/// period.
pub fn resolve(jitter: Jitter, period: Duration) -> Result<Duration, String> {
    let half = period / 2;
    match jitter {
        Jitter::Share(hundredths) => Ok(period.mul_f64(f64::from(hundredths) / 10_000.0)),
        Jitter::Fixed(d) if d <= half => Ok(d),
        Jitter::Fixed(d) => Err(format!(
            "{} ms is more than half the period ({} ms): runs would come closer than half a period apart",
            d.as_millis(),
            period.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jitter_is_a_duration_or_a_percent_of_at_most_half_the_period() {
        assert_eq!(parse_jitter("30s"), Ok(Jitter::Fixed(Duration::from_secs(30))));
        assert_eq!(parse_jitter(" 500ms "), Ok(Jitter::Fixed(Duration::from_millis(500))));
        assert_eq!(parse_jitter("5%"), Ok(Jitter::Share(500)));
        assert_eq!(parse_jitter("12.5%"), Ok(Jitter::Share(1250)));
        assert_eq!(parse_jitter("50%"), Ok(Jitter::Share(5000)));
        for bad in ["", "%", "51%", "0%", "-5%", "5.123%", "1e3%", "10", "0s", "2*fast", "1000%"] {
            assert!(parse_jitter(bad).is_err(), "{bad:?} accepted");
        }
        let minute = Duration::from_secs(60);
        assert_eq!(resolve(Jitter::Share(500), minute), Ok(Duration::from_secs(3)));
        assert_eq!(resolve(Jitter::Fixed(Duration::from_secs(30)), minute), Ok(Duration::from_secs(30)));
        let e = resolve(Jitter::Fixed(Duration::from_secs(31)), minute).expect_err("over half");
        assert!(e.contains("more than half the period"), "{e}");
    }
}
