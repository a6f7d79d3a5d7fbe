//! The `btc` section of the targets file: bitcoind wallets, and how to authenticate to them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
use crate::config::bump::{BumpAfter, parse_bump_after};
use crate::config::concurrency;
use crate::config::targets::{
    Entry, Flex, LoadContext, Problem, Section, entry_or_unusable, http_url, named_or_default, poll, read_text,
    relative_to,
};
use crate::config::vars::{Endpoint, Secret, Secrets, Unresolved, percent_decode};
use crate::model::Target;

/// A `btc` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BtcSpec {
    rpc_url: Option<String>,
    network: Option<String>,
    confirmations: Option<Flex<u32>>,
    rpc_user: Option<String>,
    rpc_password: Option<String>,
    rpc_password_file: Option<String>,
    cookie_file: Option<String>,
    wallet: Option<String>,
    fee_rate: Option<Flex<f64>>,
    max_fee_rate: Option<Flex<f64>>,
    bump_after: Option<String>,
    poll_interval: Option<String>,
    aggregate: Option<AggregateRaw>,
    concurrency: Option<Flex<u32>>,
}

/// How long an unconfirmed anchor waits before it is replaced at a higher fee, unless
/// `bumpAfter` says otherwise: six blocks is the confirmation target bitcoind's wallet aims
/// its fee estimate at (`-txconfirmtarget`), so a transaction still unmined after six blocks
/// has missed the target it was priced for.
pub const DEFAULT_BUMP_AFTER: BumpAfter = BumpAfter::Blocks(6);

/// Highest `feeRate` and `maxFeeRate`, sat/vB: far above any fee market so far, low enough to
/// catch a value meant in sat/kvB or BTC/kvB.
const MAX_RATE: f64 = 10_000.0;

/// How to authenticate to bitcoind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtcAuth {
    /// `rpcuser` / `rpcpassword`.
    UserPassword {
        /// The RPC user name.
        user: String,
        /// The RPC password; every driver text is cleaned of it.
        password: Secret,
    },
    /// bitcoind's `.cookie` file, read at each request (bitcoind rewrites it when it restarts).
    Cookie(PathBuf),
}

/// A bitcoind wallet reached over JSON-RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct BtcTarget {
    /// JSON-RPC endpoint (http or https), without the credentials it may have carried.
    pub rpc_url: Endpoint,
    /// `main`, `test`, `signet` or `regtest`, as `getblockchaininfo` reports it.
    pub chain: String,
    /// Confirmations required unless the cadence sets its own.
    pub confirmations: u32,
    /// Credentials.
    pub auth: BtcAuth,
    /// Wallet name, for a node with several wallets.
    pub wallet: Option<String>,
    /// Fee rate in sat/vB; the wallet's estimate when not set.
    pub fee_rate: Option<f64>,
    /// The highest fee rate (sat/vB) a replacement may pay. Without it an anchor is never
    /// replaced: its first fee is all the entry may spend.
    pub max_fee_rate: Option<f64>,
    /// How long an unconfirmed anchor waits before it is replaced at a higher fee.
    pub bump_after: BumpAfter,
    /// How often a pending transaction is looked at.
    pub poll_interval: Duration,
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
    /// How many of its jobs run at once; the scheme's default (or VMSH_ANCHOR_WORKERS) when not set.
    pub concurrency: Option<u32>,
}

impl BtcAuth {
    /// The password and the basic-auth login it makes, or the cookie file (read when needed:
    /// bitcoind writes a new cookie each time it starts).
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        match self {
            BtcAuth::UserPassword { user, password } => secrets.login(user, password.expose()),
            BtcAuth::Cookie(path) => secrets.file(path),
        };
        secrets
    }
}

impl BtcTarget {
    /// The credentials and the RPC URL's secret parts.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = self.rpc_url.secrets();
        secrets.extend(&self.auth.secrets());
        secrets
    }
}

impl Section for BtcTarget {
    const NAME: &'static str = "btc";
    type Spec = BtcSpec;
    type Built = Entry<BtcTarget>;

    fn build(
        name: &str,
        spec: BtcSpec,
        unset: &[&Unresolved],
        ctx: &LoadContext,
    ) -> Result<Entry<BtcTarget>, Vec<Problem>> {
        let aggregate = aggregate::build(spec.aggregate.as_ref(), &format!("{}.{name}", Self::NAME))?;
        let concurrency = concurrency::build(spec.concurrency.as_ref(), &format!("{}.{name}", Self::NAME))?;
        entry_or_unusable(Self::NAME, name, unset, || btc_target(spec, aggregate, concurrency, ctx))
    }

    /// `btc.<name>`, else `btc.default`.
    fn resolve<'a>(
        entries: &'a BTreeMap<String, Entry<BtcTarget>>,
        target: &Target,
    ) -> Result<(&'a str, &'a Self), String> {
        named_or_default(Self::NAME, entries, target)
    }
}

fn btc_target(
    spec: BtcSpec,
    aggregate: Option<AggregateSpec>,
    concurrency: Option<u32>,
    ctx: &LoadContext,
) -> Result<Entry<BtcTarget>, String> {
    let rpc_url = http_url("rpcUrl", spec.rpc_url)?;
    let chain = match spec.network.as_deref().unwrap_or("mainnet") {
        "mainnet" | "main" => "main",
        "testnet" | "test" => "test",
        "signet" => "signet",
        "regtest" => "regtest",
        _ => return Err("network must be mainnet, testnet, signet or regtest".into()),
    }
    .to_string();
    let confirmations = spec.confirmations.map_or(1, |Flex(c)| c);
    if confirmations > 10_000 {
        return Err("confirmations must be at most 10000".into());
    }
    let fee_rate = spec.fee_rate.map(|Flex(f)| f);
    if fee_rate.is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= MAX_RATE)) {
        return Err("feeRate must be between 0 and 10000 sat/vB".into());
    }
    let max_fee_rate = spec.max_fee_rate.map(|Flex(f)| f);
    if max_fee_rate.is_some_and(|f| !(1.0..=MAX_RATE).contains(&f)) {
        return Err("maxFeeRate must be between 1 and 10000 sat/vB".into());
    }
    if let (Some(first), Some(cap)) = (fee_rate, max_fee_rate)
        && cap < first
    {
        return Err("maxFeeRate must be at least feeRate: it caps what a replacement may pay".into());
    }
    let bump_after = match spec.bump_after {
        Some(_) if max_fee_rate.is_none() => {
            return Err("bumpAfter needs maxFeeRate, the highest fee rate a replacement may pay; set maxFeeRate or remove bumpAfter".into());
        }
        Some(raw) => parse_bump_after(&raw).map_err(|e| format!("bumpAfter {e}"))?,
        None => DEFAULT_BUMP_AFTER,
    };
    let poll_interval = poll("pollInterval", spec.poll_interval, Duration::from_secs(30))?;
    let (rpc_url, url_auth) = split_userinfo(&rpc_url);
    let explicit = match (spec.rpc_user, spec.rpc_password, spec.rpc_password_file, spec.cookie_file) {
        (Some(user), Some(pw), None, None) => Some(BtcAuth::UserPassword { user, password: Secret::new(pw) }),
        (Some(user), None, Some(f), None) => {
            let path = relative_to(&ctx.root, &f);
            let pw = read_text(&path, "rpcPasswordFile")?;
            Some(BtcAuth::UserPassword { user, password: Secret::new(pw.trim()) })
        }
        (None, None, None, Some(c)) => Some(BtcAuth::Cookie(relative_to(&ctx.root, &c))),
        (None, None, None, None) => None,
        _ => return Err("give either rpcUser with one of rpcPassword / rpcPasswordFile, or cookieFile alone".into()),
    };
    let Some(auth) = explicit.or(url_auth) else {
        return Ok(Entry::Unusable(
            "no RPC credentials: set rpcUser with rpcPassword (or rpcPasswordFile), or cookieFile, or put user:password@ in rpcUrl".into(),
        ));
    };
    Ok(Entry::Ready(BtcTarget {
        rpc_url: Endpoint::new(rpc_url),
        chain,
        confirmations,
        auth,
        wallet: spec.wallet,
        fee_rate,
        max_fee_rate,
        bump_after,
        poll_interval,
        aggregate,
        concurrency,
    }))
}

/// Takes `user:password@` out of a URL (bitcoind URLs often carry it), so the URL can be
/// shown and the password kept secret.
fn split_userinfo(url: &str) -> (String, Option<BtcAuth>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let auth =
                BtcAuth::UserPassword { user: percent_decode(user), password: Secret::new(percent_decode(password)) };
            (format!("{scheme}://{host}{path}"), Some(auth))
        }
        None => (url.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn built(extra: &str) -> Result<BtcTarget, String> {
        let yaml = format!("{{rpcUrl: 'http://127.0.0.1:8332', rpcUser: u, rpcPassword: p{extra}}}");
        let spec: BtcSpec = serde_yaml::from_str(&yaml).map_err(|e| e.to_string())?;
        let ctx = LoadContext { root: Path::new("/").to_path_buf(), ..LoadContext::default() };
        match btc_target(spec, None, None, &ctx)? {
            Entry::Ready(t) => Ok(t),
            Entry::Unusable(why) => Err(why),
        }
    }

    #[test]
    fn btc_fee_bumping_is_off_until_max_fee_rate_is_set_and_waits_six_blocks_by_default() {
        let t = built("").expect("valid");
        assert_eq!((t.max_fee_rate, t.bump_after), (None, BumpAfter::Blocks(6)));
        let t = built(", feeRate: 2, maxFeeRate: '50'").expect("valid");
        assert_eq!((t.max_fee_rate, t.bump_after), (Some(50.0), DEFAULT_BUMP_AFTER));
        let t = built(", maxFeeRate: 20, bumpAfter: 10m").expect("valid");
        assert_eq!(t.bump_after, BumpAfter::Time(Duration::from_secs(600)));
        let t = built(", maxFeeRate: 20, bumpAfter: 2 blocks").expect("valid");
        assert_eq!(t.bump_after, BumpAfter::Blocks(2));
    }

    #[test]
    fn btc_bump_settings_that_cannot_work_are_refused_in_one_line() {
        for (extra, says) in [
            (", bumpAfter: 3 blocks", "bumpAfter needs maxFeeRate"),
            (", maxFeeRate: 0.5", "maxFeeRate must be between 1 and 10000"),
            (", maxFeeRate: 20000", "maxFeeRate must be between 1 and 10000"),
            (", maxFeeRate: .nan", "maxFeeRate must be between 1 and 10000"),
            (", feeRate: 30, maxFeeRate: 20", "maxFeeRate must be at least feeRate"),
            (", maxFeeRate: 20, bumpAfter: soon", "bumpAfter is not"),
            (", maxFeeRate: 20, bumpAfter: 0 blocks", "bumpAfter is zero blocks"),
        ] {
            let e = built(extra).expect_err(extra);
            assert!(e.contains(says) && !e.contains('\n'), "{extra}: {e}");
        }
    }
}
