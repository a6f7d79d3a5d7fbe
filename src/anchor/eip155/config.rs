//! The `eip155` section of the targets file: EVM chains, the node and key for each, and
//! which entry `eip155:<chain id>` uses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
use crate::config::bump::{BumpAfter, parse_bump_after};
use crate::config::concurrency;
use crate::config::targets::{
    Entry, Flex, LoadContext, Problem, Section, configured, entry_or_unusable, http_url, poll, read_text, ready,
    relative_to,
};
use crate::config::vars::{Endpoint, Secret, Secrets, Unresolved};
use crate::model::Target;
use crate::model::digest::parse_hex32;

/// When a transaction not mined is replaced, unless the entry says: a competitively priced
/// transaction is in one of the next blocks, so three blocks without it mean it was outbid or
/// the fees rose (about 36 s on Ethereum, 6 s on a 2-second chain).
pub const DEFAULT_BUMP_AFTER: BumpAfter = BumpAfter::Blocks(3);

/// An `eip155` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EvmSpec {
    rpc_url: Option<String>,
    chain_id: Option<Flex<u64>>,
    contract: Option<String>,
    key: Option<String>,
    key_file: Option<String>,
    persist: Option<Flex<bool>>,
    confirmations: Option<Flex<u32>>,
    memo: Option<String>,
    poll_interval: Option<String>,
    gas_limit: Option<Flex<u64>>,
    bump_after: Option<String>,
    max_fee_per_gas: Option<serde_yaml::Value>,
    aggregate: Option<AggregateRaw>,
    concurrency: Option<Flex<u32>>,
}

/// An EVM chain reached over JSON-RPC with a local signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmTarget {
    /// JSON-RPC endpoint (http or https).
    pub rpc_url: Endpoint,
    /// Chain id the node must report; the target's id when not set.
    pub chain_id: Option<u64>,
    /// Anchor contract; without one, a marker transaction to the sender itself is sent.
    pub contract: Option<[u8; 20]>,
    /// The signing key (32 bytes, hex).
    pub key: Secret,
    /// The contract call's `persist` argument.
    pub persist: bool,
    /// Confirmations required unless the cadence sets its own.
    pub confirmations: u32,
    /// The contract call's `memo` argument.
    pub memo: String,
    /// How often a pending transaction is looked at.
    pub poll_interval: Duration,
    /// Gas limit; estimated when not set.
    pub gas_limit: Option<u64>,
    /// How long an unmined transaction waits before it is replaced at a higher fee.
    pub bump_after: BumpAfter,
    /// The most a transaction may offer per gas (its fee cap), in wei; when not set,
    /// [`super::fees::DEFAULT_CAP_FACTOR`] times the attempt's first offer.
    pub max_fee_per_gas: Option<u128>,
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
    /// How many of its jobs run at once; the scheme's default (or VMSH_ANCHOR_WORKERS) when not set.
    pub concurrency: Option<u32>,
}

impl EvmTarget {
    /// The signing key (however it may be written) and the RPC URL's secret parts.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = self.rpc_url.secrets();
        secrets.hex_key(self.key.expose());
        secrets
    }
}

impl Section for EvmTarget {
    const NAME: &'static str = "eip155";
    type Spec = EvmSpec;
    type Built = Entry<EvmTarget>;

    fn build(
        name: &str,
        spec: EvmSpec,
        unset: &[&Unresolved],
        ctx: &LoadContext,
    ) -> Result<Entry<EvmTarget>, Vec<Problem>> {
        let aggregate = aggregate::build(spec.aggregate.as_ref(), &format!("{}.{name}", Self::NAME))?;
        let concurrency = concurrency::build(spec.concurrency.as_ref(), &format!("{}.{name}", Self::NAME))?;
        entry_or_unusable(Self::NAME, name, unset, || evm_target(spec, aggregate, concurrency, ctx))
    }

    /// The entry named by the chain id (`eip155."8453"`), else the entry whose `chainId` is
    /// that id, else `eip155.default` (whose `chainId`, if set, must match).
    fn resolve<'a>(
        entries: &'a BTreeMap<String, Entry<EvmTarget>>,
        target: &Target,
    ) -> Result<(&'a str, &'a Self), String> {
        let id: u64 = target.name.parse().map_err(|_| format!("{target}: not a chain id"))?;
        let by_id = entries
            .iter()
            .find(|(_, e)| matches!(e, Entry::Ready(t) if t.chain_id == Some(id)))
            .map(|(k, v)| (k.as_str(), v));
        let (name, entry) = match entries.get_key_value(&target.name).map(|(k, v)| (k.as_str(), v)) {
            Some(found) => found,
            None => match by_id {
                Some(found) => found,
                None => configured("eip155", entries, target)?,
            },
        };
        let (name, t) = ready("eip155", name, entry)?;
        match t.chain_id {
            Some(configured) if configured != id => Err(format!(
                "{target} resolves to eip155.{name}, whose chainId is {configured}; add an entry for chain {id}"
            )),
            _ => Ok((name, t)),
        }
    }
}

fn evm_target(
    spec: EvmSpec,
    aggregate: Option<AggregateSpec>,
    concurrency: Option<u32>,
    ctx: &LoadContext,
) -> Result<Entry<EvmTarget>, String> {
    let rpc_url = http_url("rpcUrl", spec.rpc_url)?;
    let chain_id = spec.chain_id.map(|Flex(id)| id);
    if chain_id == Some(0) {
        return Err("chainId must be a positive integer".into());
    }
    let contract = match spec.contract {
        None => None,
        Some(c) => {
            let hex = c.strip_prefix("0x").unwrap_or(&c);
            let bytes = (hex.len() == 40)
                .then(|| parse_hex32(&format!("{hex}{}", "0".repeat(24))))
                .flatten()
                .ok_or("contract must be a 20-byte hex address (0x followed by 40 hex digits)")?;
            let mut addr = [0u8; 20];
            addr.copy_from_slice(&bytes[..20]);
            Some(addr)
        }
    };
    let confirmations = spec.confirmations.map_or(1, |Flex(c)| c);
    if confirmations > 10_000 {
        return Err("confirmations must be at most 10000".into());
    }
    let memo = spec.memo.unwrap_or_default();
    if memo.len() > 256 {
        return Err("memo must be at most 256 bytes".into());
    }
    let poll_interval = poll("pollInterval", spec.poll_interval, Duration::from_secs(4))?;
    let bump_after = match spec.bump_after {
        None => DEFAULT_BUMP_AFTER,
        Some(raw) => parse_bump_after(&raw).map_err(|e| format!("bumpAfter {e}"))?,
    };
    let max_fee_per_gas = match spec.max_fee_per_gas {
        None => None,
        Some(value) => {
            let raw = match value {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            Some(super::fees::parse_wei_per_gas(&raw).map_err(|e| format!("maxFeePerGas {e}"))?)
        }
    };
    let key = match (spec.key, spec.key_file) {
        (Some(_), Some(_)) => return Err("set key or keyFile, not both".into()),
        (Some(k), None) => Secret::new(k),
        (None, Some(f)) => {
            let path = relative_to(&ctx.root, &f);
            let text = read_text(&path, "keyFile")?;
            Secret::new(text.trim())
        }
        (None, None) => {
            return Ok(Entry::Unusable("no signing key: set key (e.g. ${EVM_ANCHOR_KEY}) or keyFile".into()));
        }
    };
    let hex = key.expose().strip_prefix("0x").unwrap_or(key.expose());
    let valid = parse_hex32(hex).is_some_and(|bytes| {
        alloy::signers::local::PrivateKeySigner::from_bytes(&alloy::primitives::B256::from(bytes)).is_ok()
    });
    if !valid {
        return Err("key must be a valid secp256k1 private key: 64 hex digits, optionally after 0x".into());
    }
    Ok(Entry::Ready(EvmTarget {
        rpc_url: Endpoint::new(rpc_url),
        chain_id,
        contract,
        key,
        persist: spec.persist.is_some_and(|Flex(p)| p),
        confirmations,
        memo,
        poll_interval,
        gas_limit: spec.gas_limit.map(|Flex(g)| g),
        bump_after,
        max_fee_per_gas,
        aggregate,
        concurrency,
    }))
}
