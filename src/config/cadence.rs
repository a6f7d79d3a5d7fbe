//! The `every` period syntax: `<n>s|m|h|d` or `<n>*fast`.

use std::time::Duration;

/// Longest period accepted: 100 years. Anything longer is a typo, and far-future deadlines
/// would overflow timer arithmetic.
pub const MAX_PERIOD_SECS: u64 = 36_500 * 86_400;

/// A parsed `every` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// A fixed period in seconds.
    Fixed(u64),
    /// A whole number of fast periods.
    FastMultiple(u64),
}

/// Why an `every` value was rejected; the message is shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EveryError {
    /// Nothing to parse.
    #[error("is empty; write <n>s, <n>m, <n>h, <n>d or <n>*fast, e.g. \"89s\"")]
    Empty,
    /// Not of any accepted form.
    #[error("{0:?} is not a period; write <n>s, <n>m, <n>h, <n>d or <n>*fast, e.g. \"89s\"")]
    Syntax(String),
    /// n was zero.
    #[error("{0:?} is zero; a period must be at least 1")]
    Zero(String),
    /// The period does not fit.
    #[error("{0:?} is longer than the longest period accepted (36500d)")]
    TooLong(String),
    /// `<n>*fast` used for the fast cadence itself.
    #[error("{0:?} cannot be used by fast itself; give fast a fixed period such as \"89s\"")]
    RelativeFast(String),
}

/// Parses an `every` value.
pub fn parse_every(raw: &str) -> Result<Every, EveryError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(EveryError::Empty);
    }
    let syntax = || EveryError::Syntax(raw.to_string());
    if let Some((n, unit)) = s.split_once('*') {
        if unit.trim() != "fast" {
            return Err(syntax());
        }
        let n = parse_count(n.trim(), raw)?;
        // A multiple is checked against the fast period when resolved; reject the absurd early.
        if n > MAX_PERIOD_SECS {
            return Err(EveryError::TooLong(raw.to_string()));
        }
        return Ok(Every::FastMultiple(n));
    }
    // The unit is the last character, which need not be one byte long.
    let Some(unit) = s.chars().next_back() else { return Err(EveryError::Empty) };
    let digits = &s[..s.len() - unit.len_utf8()];
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(syntax()),
    };
    let n = parse_count(digits, raw)?;
    match n.checked_mul(scale) {
        Some(secs) if secs <= MAX_PERIOD_SECS => Ok(Every::Fixed(secs)),
        _ => Err(EveryError::TooLong(raw.to_string())),
    }
}

fn parse_count(digits: &str, raw: &str) -> Result<u64, EveryError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EveryError::Syntax(raw.to_string()));
    }
    let n: u64 = digits.parse().map_err(|_| EveryError::TooLong(raw.to_string()))?;
    if n == 0 {
        return Err(EveryError::Zero(raw.to_string()));
    }
    Ok(n)
}

impl Every {
    /// The period, given the fast cadence's period.
    pub fn resolve(self, raw: &str, fast: Option<Duration>) -> Result<Duration, EveryError> {
        match self {
            Every::Fixed(secs) => Ok(Duration::from_secs(secs)),
            Every::FastMultiple(n) => {
                let fast = fast.ok_or_else(|| EveryError::RelativeFast(raw.to_string()))?;
                match fast.as_secs().checked_mul(n) {
                    Some(secs) if secs <= MAX_PERIOD_SECS => Ok(Duration::from_secs(secs)),
                    _ => Err(EveryError::TooLong(raw.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_every("89s"), Ok(Every::Fixed(89)));
        assert_eq!(parse_every("5m"), Ok(Every::Fixed(300)));
        assert_eq!(parse_every("12h"), Ok(Every::Fixed(43_200)));
        assert_eq!(parse_every("1d"), Ok(Every::Fixed(86_400)));
        assert_eq!(parse_every(" 2m "), Ok(Every::Fixed(120)));
    }

    #[test]
    fn parses_fast_multiples() {
        assert_eq!(parse_every("34*fast"), Ok(Every::FastMultiple(34)));
        assert_eq!(parse_every("17 * fast"), Ok(Every::FastMultiple(17)));
        let strong = parse_every("34*fast").and_then(|e| e.resolve("34*fast", Some(Duration::from_secs(89))));
        assert_eq!(strong, Ok(Duration::from_secs(34 * 89)));
    }

    #[test]
    fn rejects_zero_negative_and_garbage() {
        assert!(matches!(parse_every("0s"), Err(EveryError::Zero(_))));
        assert!(matches!(parse_every("0*fast"), Err(EveryError::Zero(_))));
        for bad in ["-5s", "5", "s", "5w", "1.5h", "fast", "3*strong", "*fast", "5 s", "+5s"] {
            assert!(matches!(parse_every(bad), Err(EveryError::Syntax(_))), "{bad}");
        }
        assert_eq!(parse_every(""), Err(EveryError::Empty));
    }

    #[test]
    fn rejects_overflowing_periods() {
        assert!(matches!(parse_every("99999999999d"), Err(EveryError::TooLong(_))));
        assert!(matches!(parse_every("99999999999999999999999s"), Err(EveryError::TooLong(_))));
        assert!(matches!(parse_every("36501d"), Err(EveryError::TooLong(_))));
        assert_eq!(parse_every("36500d"), Ok(Every::Fixed(MAX_PERIOD_SECS)));
        let long_multiple = Every::FastMultiple(1_000_000).resolve("1000000*fast", Some(Duration::from_secs(86_400)));
        assert!(matches!(long_multiple, Err(EveryError::TooLong(_))));
    }

    #[test]
    fn fast_multiple_needs_a_fast_period() {
        assert!(matches!(Every::FastMultiple(2).resolve("2*fast", None), Err(EveryError::RelativeFast(_))));
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        // Every string of up to four fragments, multi-byte characters included.
        const PARTS: &[&str] = &["", "1", "0", "é", "*", "fast", "s", "d", "99999999999", " ", "𝟙", "-", "ß", "\u{0}"];
        let mut n = 0;
        for a in PARTS {
            for b in PARTS {
                for c in PARTS {
                    for d in PARTS {
                        let s = format!("{a}{b}{c}{d}");
                        if let Ok(e) = parse_every(&s) {
                            let _ = e.resolve(&s, Some(Duration::from_secs(1)));
                        }
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, PARTS.len().pow(4));
        assert!(matches!(parse_every("1é"), Err(EveryError::Syntax(_))));
        assert!(matches!(parse_every("é"), Err(EveryError::Syntax(_))));
    }

    #[test]
    fn long_and_boundary_inputs_are_parsed_exactly_or_refused() {
        // The boundaries of u64 and of the longest period.
        assert_eq!(parse_every(&format!("{MAX_PERIOD_SECS}s")), Ok(Every::Fixed(MAX_PERIOD_SECS)));
        assert!(matches!(parse_every(&format!("{}s", MAX_PERIOD_SECS + 1)), Err(EveryError::TooLong(_))));
        assert!(matches!(parse_every(&format!("{}s", u64::MAX)), Err(EveryError::TooLong(_))));
        assert!(matches!(parse_every(&format!("{}0s", u64::MAX)), Err(EveryError::TooLong(_))));
        assert!(matches!(parse_every(&format!("{}d", u64::MAX / 86_400 + 1)), Err(EveryError::TooLong(_))));
        assert_eq!(parse_every(&format!("{MAX_PERIOD_SECS}*fast")), Ok(Every::FastMultiple(MAX_PERIOD_SECS)));
        assert!(matches!(parse_every(&format!("{}*fast", u64::MAX)), Err(EveryError::TooLong(_))));
        let huge = Every::FastMultiple(MAX_PERIOD_SECS).resolve("x", Some(Duration::from_secs(u64::MAX)));
        assert!(matches!(huge, Err(EveryError::TooLong(_))));
        // Leading zeros are digits like any other; ten thousand of them still mean 1.
        assert_eq!(parse_every(&format!("{}1s", "0".repeat(10_000))), Ok(Every::Fixed(1)));
        assert!(matches!(parse_every(&"0".repeat(10_000)), Err(EveryError::Syntax(_))));
        assert!(matches!(parse_every(&format!("{}s", "0".repeat(10_000))), Err(EveryError::Zero(_))));
        // Long garbage of every kind: refused, and the message quotes it once.
        for long in [
            format!("{}s", "9".repeat(100_000)),
            format!("{}*fast", "9".repeat(100_000)),
            "*".repeat(10_000),
            format!("1{}s", " ".repeat(10_000)),
            format!("{}fast", "1*".repeat(5_000)),
            "é".repeat(10_000),
            format!("1{}", "\u{0}".repeat(10_000)),
        ] {
            let e = parse_every(&long).expect_err("refused");
            assert!(e.to_string().len() < long.len() * 8 + 200, "{} bytes", e.to_string().len());
        }
        // White space around the value (any Unicode white space) is not part of it.
        assert_eq!(parse_every("\u{3000}\t5m\u{2003}\n"), Ok(Every::Fixed(300)));
    }
}
