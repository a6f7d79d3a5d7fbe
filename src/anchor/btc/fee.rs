//! What a replacement pays. Rates are integers in sat/kvB (satoshis per 1,000 virtual bytes):
//! bitcoind takes `fee_rate` in sat/vB with at most three decimals, so sat/kvB is exact, and
//! every comparison below is integer arithmetic.
//!
//! bitcoind's wallet and mempool each set a floor under a replacement, and the higher one
//! decides:
//! - the mempool (BIP 125 rules 3 and 4): the replacement pays a higher absolute fee, and the
//!   extra fee pays for its own relay at the incremental relay fee (`incrementalfee` in
//!   `getnetworkinfo`, 1 sat/vB by default);
//! - the wallet (`psbtbumpfee`, `CheckFeeRate` in `wallet/feebumper.cpp`): the new total fee is
//!   at least the old fee plus `max(incrementalfee, WALLET_INCREMENTAL_RELAY_FEE)` over the
//!   new size, where `WALLET_INCREMENTAL_RELAY_FEE` is 5 sat/vB; below that it answers -8
//!   "Insufficient total fee". So each replacement raises the rate by at least 5 sat/vB.
//!
//! Like `bumpfee` without a `fee_rate`, the new rate is then raised to the node's estimate
//! (`estimatesmartfee`) when that is higher; unlike it, the rate is capped at the entry's
//! `maxFeeRate`. A replacement that cannot clear the floor under the cap is not made: the
//! anchor waits at the cap for fees to drop.

use serde_json::Value;

/// bitcoind's `WALLET_INCREMENTAL_RELAY_FEE` (sat/kvB): the least a wallet replacement raises
/// the fee rate by, whatever the node's own incremental relay fee.
pub(super) const WALLET_INCREMENTAL: u64 = 5_000;

/// The confirmation target (blocks) the replacement's estimate aims at: bitcoind's default
/// `-txconfirmtarget`, which `bumpfee` uses when given no rate.
pub(super) const CONF_TARGET: u64 = 6;

/// Satoshis in one bitcoin.
const COIN: f64 = 100_000_000.0;

/// What the next replacement pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NextRate {
    /// Replace at this rate (sat/kvB).
    Raise(u64),
    /// Even the smallest raise the wallet and mempool accept is over the cap: wait.
    AtCap,
}

/// The rate of the replacement of a transaction paying `old` (sat/kvB): at least `old` plus
/// the incremental relay fee (never less than the wallet's [`WALLET_INCREMENTAL`]), raised to
/// `estimate` when that is higher, and at most `cap`.
pub(super) fn next_rate(old: u64, estimate: Option<u64>, incremental: u64, cap: u64) -> NextRate {
    let floor = old.saturating_add(incremental.max(WALLET_INCREMENTAL));
    if floor > cap {
        return NextRate::AtCap;
    }
    NextRate::Raise(estimate.unwrap_or(0).clamp(floor, cap))
}

/// The rate (sat/kvB) of `fee` satoshis over `vsize` virtual bytes, rounded up as bitcoind
/// rounds a fee rate it must reach.
pub(super) fn rate_of(fee: u64, vsize: u64) -> u64 {
    fee.saturating_mul(1000).div_ceil(vsize.max(1))
}

/// A configured rate in sat/vB as sat/kvB.
pub(super) fn per_kvb(sat_per_vb: f64) -> u64 {
    // Validated to lie between 0 and 10,000 sat/vB, so this neither wraps nor saturates.
    (sat_per_vb * 1000.0).round() as u64
}

/// Satoshis of an amount bitcoind gives in BTC (a fee, negative in `gettransaction`; a rate
/// in BTC/kvB gives sat/kvB).
pub(super) fn sats(btc: &Value) -> Option<u64> {
    let btc = btc.as_f64()?.abs();
    // No amount exceeds the 21 million coins; anything else is not an amount.
    (btc.is_finite() && btc <= 21e6).then(|| (btc * COIN).round() as u64)
}

/// `fee_rate` as `psbtbumpfee` takes it: sat/vB, exact to the three decimals it reads.
pub(super) fn fee_rate_option(rate: u64) -> Value {
    Value::from(rate as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn btc_replacement_rate_clears_the_wallets_floor_then_follows_the_estimate_up_to_the_cap() {
        // 2 sat/vB, nothing estimated, the node's 1 sat/vB increment: the wallet's 5 decides.
        assert_eq!(next_rate(2_000, None, 1_000, 50_000), NextRate::Raise(7_000));
        // A node asking more than the wallet's 5 sat/vB raises the floor.
        assert_eq!(next_rate(2_000, None, 8_000, 50_000), NextRate::Raise(10_000));
        // An estimate above the floor is followed; one below it is not.
        assert_eq!(next_rate(2_000, Some(20_000), 1_000, 50_000), NextRate::Raise(20_000));
        assert_eq!(next_rate(2_000, Some(3_000), 1_000, 50_000), NextRate::Raise(7_000));
        // The cap bounds the estimate …
        assert_eq!(next_rate(2_000, Some(90_000), 1_000, 50_000), NextRate::Raise(50_000));
        // … and a floor over the cap means waiting, even when the estimate is higher still.
        assert_eq!(next_rate(46_000, Some(90_000), 1_000, 50_000), NextRate::AtCap);
        assert_eq!(next_rate(45_000, None, 1_000, 50_000), NextRate::Raise(50_000), "exactly the cap");
        assert_eq!(next_rate(50_000, None, 1_000, 50_000), NextRate::AtCap);
        assert_eq!(next_rate(u64::MAX, None, 1_000, 50_000), NextRate::AtCap, "no overflow");
    }

    #[test]
    fn btc_rates_convert_exactly_between_the_units_bitcoind_speaks() {
        assert_eq!(rate_of(282, 141), 2_000);
        assert_eq!(rate_of(283, 141), 2_008, "rounded up");
        assert_eq!(rate_of(100, 0), 100_000, "no division by zero");
        assert_eq!(per_kvb(2.5), 2_500);
        assert_eq!(per_kvb(0.001), 1);
        assert_eq!(sats(&json!(-0.00000282)), Some(282), "gettransaction's fee is negative");
        assert_eq!(sats(&json!(0.00001)), Some(1_000), "1 sat/vB in BTC/kvB");
        assert_eq!(sats(&json!("0.1")), None);
        assert_eq!(sats(&json!(1e300)), None);
        assert_eq!(fee_rate_option(7_001), json!(7.001));
        assert_eq!(fee_rate_option(7_000).to_string(), "7.0");
    }
}
