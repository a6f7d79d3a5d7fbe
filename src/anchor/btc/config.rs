//! The `btc` section of the targets file: bitcoind wallets, and how to authenticate to them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
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
    poll_interval: Option<String>,
    aggregate: Option<AggregateRaw>,
}

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
    /// How often a pending transaction is looked at.
    pub poll_interval: Duration,
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
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
        entry_or_unusable(Self::NAME, name, unset, || btc_target(spec, aggregate, ctx))
    }

    /// `btc.<name>`, else `btc.default`.
    fn resolve<'a>(
        entries: &'a BTreeMap<String, Entry<BtcTarget>>,
        target: &Target,
    ) -> Result<(&'a str, &'a Self), String> {
        named_or_default(Self::NAME, entries, target)
    }
}

fn btc_target(spec: BtcSpec, aggregate: Option<AggregateSpec>, ctx: &LoadContext) -> Result<Entry<BtcTarget>, String> {
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
    if fee_rate.is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= 10_000.0)) {
        return Err("feeRate must be between 0 and 10000 sat/vB".into());
    }
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
        poll_interval,
        aggregate,
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
