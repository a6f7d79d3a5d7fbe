//! What an EVM anchor offers to pay, and by how much a replacement raises it.
//!
//! A replacement (same sender, same nonce) must raise both the priority fee and the fee cap
//! by the node's replacement rule: geth, Nethermind and Besu ask for at least 10 % more on
//! both. We raise by 12.5 % ([`MARGIN_NUM`]/[`MARGIN_DEN`], rounded up), or to the node's
//! current suggestion when that is higher; the headroom over 10 % keeps a replacement valid
//! on a node whose rounding differs from ours. Nothing ever goes above the target's cap on
//! the fee cap: the last step goes to the cap exactly when that is still 10 % more, and a
//! transaction that would need more waits at the cap until the network's fees come down.

/// The replacement margin, 12.5 %: new ≥ old × 9 / 8.
pub const MARGIN_NUM: u128 = 9;
/// See [`MARGIN_NUM`].
pub const MARGIN_DEN: u128 = 8;

/// How many times the first transaction's fee cap the default cap allows, when the target
/// sets no `maxFeePerGas`: room for a spike of this size, never an unbounded spend.
pub const DEFAULT_CAP_FACTOR: u128 = 4;

/// An EIP-1559 transaction's fees, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// `maxFeePerGas`: the most paid per gas, base fee and tip together.
    pub max_fee: u128,
    /// `maxPriorityFeePerGas`: the tip to the block's producer.
    pub tip: u128,
}

/// What the next transaction of a stuck attempt offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A replacement with these fees.
    Replace(Fees),
    /// Even the cap is not enough for a valid replacement: keep the current one and wait.
    AtCap,
}

/// `v` raised by the replacement margin, rounded up, and by at least 1 wei.
fn raised(v: u128) -> u128 {
    let up = v.saturating_mul(MARGIN_NUM).div_ceil(MARGIN_DEN);
    up.max(v.saturating_add(1))
}

/// The fees of a first transaction: the node's suggestion, held under `cap`. Returns the fees
/// and whether the cap cut them.
pub fn first(suggested: Fees, cap: Option<u128>) -> (Fees, bool) {
    let tip = suggested.tip.min(suggested.max_fee);
    match cap {
        Some(cap) if suggested.max_fee > cap => (Fees { max_fee: cap, tip: tip.min(cap) }, true),
        _ => (Fees { max_fee: suggested.max_fee, tip }, false),
    }
}

/// The fees that replace `current`: each raised by the margin, or to the node's `suggested`
/// fees when they are higher, never above `cap`; [`Next::AtCap`] when the cap leaves no room
/// for a valid replacement.
pub fn bumped(current: Fees, suggested: Fees, cap: u128) -> Next {
    let (min_fee, min_tip) = (raised(current.max_fee), raised(current.tip));
    if min_fee > cap {
        // Less than our margin left: the cap itself, if it still passes the nodes' 10 % rule.
        let passes = |new: u128, old: u128| new.saturating_mul(10) >= old.saturating_mul(11);
        let tip = current.tip.saturating_mul(11).div_ceil(10).max(suggested.tip).min(cap);
        return if passes(cap, current.max_fee) && passes(tip, current.tip) {
            Next::Replace(Fees { max_fee: cap, tip })
        } else {
            Next::AtCap
        };
    }
    let tip = min_tip.max(suggested.tip);
    let max_fee = min_fee.max(suggested.max_fee).max(tip);
    if max_fee <= cap {
        return Next::Replace(Fees { max_fee, tip });
    }
    // The suggestion is above the cap: offer the cap, with as much of the tip as fits. The
    // tip's minimum fits, since a tip is never above its fee cap.
    Next::Replace(Fees { max_fee: cap, tip: tip.min(cap).max(min_tip) })
}

/// The cap on the fee cap: the target's, else [`DEFAULT_CAP_FACTOR`] times the first
/// transaction's.
pub fn cap(configured: Option<u128>, first_max_fee: u128) -> u128 {
    configured.unwrap_or_else(|| first_max_fee.saturating_mul(DEFAULT_CAP_FACTOR))
}

/// Reads `maxFeePerGas` as written in the targets file: `100 gwei`, `2.5 gwei`, `1000 wei`
/// or a bare number of wei. The error does not repeat the value.
pub fn parse_wei_per_gas(raw: &str) -> Result<u128, String> {
    const HOW: &str = "is not a fee per gas; write e.g. \"100 gwei\", \"2.5 gwei\" or \"30000000000\" (wei)";
    let s = raw.trim();
    let (number, scale_digits) = if let Some(n) = s.strip_suffix("gwei") {
        (n.trim(), 9u32)
    } else if let Some(n) = s.strip_suffix("wei") {
        (n.trim(), 0)
    } else {
        (s, 0)
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!frac.is_empty() && !digits(frac)) || number.ends_with('.') {
        return Err(HOW.into());
    }
    if frac.len() > scale_digits as usize {
        return Err("has more decimals than a wei".into());
    }
    let scale = 10u128.pow(scale_digits);
    let whole: u128 = whole.parse().map_err(|_| "is too large".to_string())?;
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<width$}", width = scale_digits as usize);
        padded.parse().map_err(|_| HOW.to_string())?
    };
    let wei = whole.checked_mul(scale).and_then(|w| w.checked_add(frac_value)).ok_or("is too large")?;
    // u64 holds 18 billion gwei per gas; anything near it is a typo, not a fee.
    if wei == 0 {
        return Err("is zero".into());
    }
    if wei > u128::from(u64::MAX) {
        return Err("is too large".into());
    }
    Ok(wei)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GWEI: u128 = 1_000_000_000;

    fn fees(max_fee: u128, tip: u128) -> Fees {
        Fees { max_fee, tip }
    }

    #[test]
    fn a_replacement_raises_both_fees_by_at_least_the_margin() {
        let current = fees(20 * GWEI, 2 * GWEI);
        let Next::Replace(next) = bumped(current, fees(GWEI, GWEI / 10), 1_000 * GWEI) else { panic!("room left") };
        assert_eq!(next, fees(22_500_000_000, 2_250_000_000));
        // geth's rule, checked as geth does: both at least 10 % more.
        assert!(next.max_fee * 100 >= current.max_fee * 110 && next.tip * 100 >= current.tip * 110);
        // Rounded up, and at least one wei more even for tiny values.
        assert_eq!(bumped(fees(7, 1), fees(0, 0), 100), Next::Replace(fees(8, 2)));
    }

    #[test]
    fn a_replacement_follows_the_suggestion_when_it_is_higher() {
        let next = bumped(fees(20 * GWEI, 2 * GWEI), fees(90 * GWEI, 5 * GWEI), 1_000 * GWEI);
        assert_eq!(next, Next::Replace(fees(90 * GWEI, 5 * GWEI)));
    }

    #[test]
    fn the_cap_bounds_a_replacement_and_then_stops_it() {
        let capped = bumped(fees(20 * GWEI, 2 * GWEI), fees(90 * GWEI, 5 * GWEI), 30 * GWEI);
        assert_eq!(capped, Next::Replace(fees(30 * GWEI, 5 * GWEI)), "the cap, with the suggested tip");
        assert_eq!(bumped(fees(30 * GWEI, 5 * GWEI), fees(90 * GWEI, 5 * GWEI), 30 * GWEI), Next::AtCap);
        // Less than the margin left under the cap is no valid replacement either.
        assert_eq!(bumped(fees(28 * GWEI, 2 * GWEI), fees(0, 0), 30 * GWEI), Next::AtCap);
        // A tip suggested above the cap is cut to it.
        assert_eq!(
            bumped(fees(10 * GWEI, GWEI), fees(90 * GWEI, 60 * GWEI), 30 * GWEI),
            Next::Replace(fees(30 * GWEI, 30 * GWEI))
        );
    }

    #[test]
    fn repeated_bumps_end_at_the_cap_and_stay_there() {
        let cap = 105 * GWEI;
        let mut current = fees(10 * GWEI, GWEI);
        let mut steps = 0;
        while let Next::Replace(next) = bumped(current, fees(0, 0), cap) {
            // Every step passes geth's rule: 10 % more on both.
            assert!(next.max_fee * 10 >= current.max_fee * 11 && next.tip * 10 >= current.tip * 11, "{next:?}");
            assert!(next.max_fee <= cap);
            current = next;
            steps += 1;
            assert!(steps < 100, "bumping ends");
        }
        assert_eq!(current.max_fee, cap, "the last step is the cap itself");
        assert_eq!(steps, 20, "19 steps of 12.5 % from 10 gwei reach 93.6 gwei; the cap is 12.2 % more");
    }

    #[test]
    fn a_cap_less_than_ten_percent_above_is_no_replacement() {
        assert_eq!(bumped(fees(95 * GWEI, GWEI), fees(0, 0), 100 * GWEI), Next::AtCap);
        assert_eq!(bumped(fees(90 * GWEI, GWEI), fees(0, 0), 99 * GWEI), Next::Replace(fees(99 * GWEI, 1_100_000_000)));
    }

    #[test]
    fn a_first_transaction_is_held_under_the_cap() {
        assert_eq!(first(fees(50 * GWEI, 2 * GWEI), Some(100 * GWEI)), (fees(50 * GWEI, 2 * GWEI), false));
        assert_eq!(first(fees(150 * GWEI, 2 * GWEI), Some(100 * GWEI)), (fees(100 * GWEI, 2 * GWEI), true));
        assert_eq!(first(fees(150 * GWEI, 2 * GWEI), None), (fees(150 * GWEI, 2 * GWEI), false));
        assert_eq!(cap(None, 25 * GWEI), 100 * GWEI);
        assert_eq!(cap(Some(7), 25 * GWEI), 7);
    }

    #[test]
    fn fees_per_gas_read_as_written_and_show_the_same() {
        assert_eq!(parse_wei_per_gas("100 gwei"), Ok(100 * GWEI));
        assert_eq!(parse_wei_per_gas("2.5gwei"), Ok(2_500_000_000));
        assert_eq!(parse_wei_per_gas("0.000000001 gwei"), Ok(1));
        assert_eq!(parse_wei_per_gas("1000 wei"), Ok(1000));
        assert_eq!(parse_wei_per_gas("30000000000"), Ok(30 * GWEI));
        for bad in [
            "",
            "gwei",
            "0",
            "0 gwei",
            "1.0000000001 gwei",
            "1.5 wei",
            "-1 gwei",
            "1e9",
            "ten gwei",
            "1.",
            ".5 gwei",
            "99999999999 gwei",
        ] {
            assert!(parse_wei_per_gas(bad).is_err(), "{bad}");
        }
        use crate::model::anchor::show_wei as show;
        assert_eq!(show(100 * GWEI), "100 gwei");
        assert_eq!(show(2_500_000_000), "2.5 gwei");
        assert_eq!(show(7), "7 wei");
    }
}
