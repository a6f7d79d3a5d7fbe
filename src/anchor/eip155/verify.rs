//! Re-checks an `eip155:` receipt through a node: the transaction it attests, its block and
//! its depth, against what the receipt says.

use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError, TransportErrorKind};
use sha2::{Digest, Sha256};

use super::{MARKER, anchorCall, classify, connect};
use crate::config::vars::{Endpoint, Redactor, display_url};
use crate::model::digest::to_hex;
use crate::model::evidence::{CheckError, Evidence, check_time, read_attestation};
use crate::model::receipt::{Receipt, is_lower_hex};

/// What [`verify_attestation`] found.
pub type Checks = Vec<String>;

/// An `eip155:` attestation, exactly as the driver writes it (a field added there must be
/// added here: the tests verify real receipts through this struct).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvmAttestation {
    /// The chain the transaction is on.
    pub chain_id: u64,
    /// The transaction's hash, `0x` and 64 hex digits.
    pub tx_hash: String,
    /// Its sender.
    pub from: String,
    /// Its recipient: the contract, or the sender itself for a marker transaction.
    pub to: Option<String>,
    /// Its input data, `0x` and hex.
    pub data: String,
    /// Whether it is a contract call rather than a marker transaction.
    pub contract: bool,
    /// The block it was mined in.
    pub block_number: u64,
    /// That block's hash.
    pub block_hash: String,
    /// That block's time, Unix seconds: the receipt's time.
    pub block_time: u64,
    /// Confirmations it had when the receipt was written.
    pub confirmations: u32,
}

impl EvmAttestation {
    /// Reads an attestation strictly, with every hex field in the form the driver writes.
    pub fn read(attestation: &serde_json::Value) -> Result<Self, CheckError> {
        let att: Self = read_attestation(attestation)?;
        let hex = |field: &str, value: &str, digits: Option<usize>| {
            let ok = value.strip_prefix("0x").is_some_and(|h| {
                h.len().is_multiple_of(2) && digits.is_none_or(|d| h.len() == d) && is_lower_hex(h, h.len())
            });
            let what = digits.map_or("an even number of".to_string(), |d| d.to_string());
            if ok {
                Ok(())
            } else {
                Err(CheckError::Malformed(format!(
                    "attestation.{field} is not 0x followed by {what} lower-case hex digits"
                )))
            }
        };
        hex("txHash", &att.tx_hash, Some(64))?;
        hex("from", &att.from, Some(40))?;
        if let Some(to) = &att.to {
            hex("to", to, Some(40))?;
        }
        hex("data", &att.data, None)?;
        hex("blockHash", &att.block_hash, Some(64))?;
        Ok(att)
    }
}

/// What the node showed of an attested transaction.
struct Found {
    checks: Checks,
    /// The block's time, Unix seconds, as the node has it.
    block_time: u64,
    /// The SHA-256 of the batch id a contract call anchors; `None` for a marker transaction.
    batch_id: Option<[u8; 32]>,
}

/// Re-checks an eip155 receipt's attestation through a node: the node is on the attested
/// chain (and `expected_chain`), the transaction exists with the attested sender, recipient
/// and data, anchors `root`, succeeded, and sits in the attested block, whose time is the
/// attested `blockTime`, under at least the attested confirmations. What it says is cleaned
/// of the URL's secrets: the node may echo our request.
pub async fn verify_attestation(
    rpc_url: &str,
    attestation: &serde_json::Value,
    root: &[u8; 32],
    expected_chain: Option<u64>,
) -> Result<Checks, CheckError> {
    let att = EvmAttestation::read(attestation)?;
    let redact = Endpoint::new(rpc_url).secrets().redactor();
    let checks = check_on_chain(rpc_url, &att, root, expected_chain).await.map(|found| found.checks);
    checks.map(|c| c.iter().map(|line| redact.clean(line)).collect()).map_err(|e| from_node(e, rpc_url, &redact))
}

/// Verifies an eip155 receipt through the node at `rpc_url`: its attestation as
/// [`verify_attestation`] does, its target's chain, that its time is the block's, and for a
/// contract call that the call anchors its batch id.
pub async fn verify_receipt(rpc_url: &str, receipt: &Receipt, root: &[u8; 32]) -> Result<Evidence, CheckError> {
    let redact = Endpoint::new(rpc_url).secrets().redactor();
    check_receipt(rpc_url, receipt, root)
        .await
        .map(|e| e.map_lines(|l| redact.clean(l)))
        .map_err(|e| from_node(e, rpc_url, &redact))
}

/// A verification error cleaned of the URL's secrets, naming the node when the node said it
/// (a malformed attestation is found before any node is asked).
fn from_node(e: CheckError, rpc_url: &str, redact: &Redactor) -> CheckError {
    match e {
        CheckError::Malformed(_) => redact.clean_check(e),
        e => e.map_reason(|reason| redact.clean(&format!("{reason} (node {})", display_url(rpc_url)))),
    }
}

async fn check_receipt(rpc_url: &str, receipt: &Receipt, root: &[u8; 32]) -> Result<Evidence, CheckError> {
    let att = EvmAttestation::read(&receipt.attestation)?;
    let chain = receipt.target.strip_prefix("eip155:").and_then(|c| c.parse().ok());
    let found = check_on_chain(rpc_url, &att, root, chain).await?;
    let mut checks = found.checks;
    let block_ms = i64::try_from(found.block_time)
        .ok()
        .and_then(|t| t.checked_mul(1000))
        .ok_or_else(|| CheckError::Mismatch(format!("the block's time {} is out of range", found.block_time)))?;
    checks.push(check_time(receipt, block_ms, "the block's time")?);
    let mut attests = vec!["target", "root", "time", "timeMs"];
    if let Some(anchored) = found.batch_id {
        let stated: [u8; 32] = Sha256::digest(receipt.batch_id.as_bytes()).into();
        if anchored != stated {
            return Err(CheckError::Mismatch(format!(
                "the contract call anchors batch id hash 0x{}, not the SHA-256 of the receipt's batchId {:?}",
                to_hex(&anchored),
                receipt.batch_id
            )));
        }
        checks.push("the contract call anchors the SHA-256 of the receipt's batchId".into());
        attests.push("batchId");
    }
    Ok(Evidence { checks, attests, claims: Vec::new() })
}

async fn check_on_chain(
    rpc_url: &str,
    att: &EvmAttestation,
    root: &[u8; 32],
    expected_chain: Option<u64>,
) -> Result<Found, CheckError> {
    let mut checks = Vec::new();
    let provider = connect(rpc_url).map_err(CheckError::Unreachable)?;
    // A node that cannot answer proves nothing either way.
    let unreachable = |e: RpcError<TransportErrorKind>, what: &str| {
        CheckError::Unreachable(format!("cannot ask the node: {}", classify(&e, what)))
    };
    let chain = provider.get_chain_id().await.map_err(|e| unreachable(e, "eth_chainId"))?;
    if chain != att.chain_id {
        return Err(format!("the node is on chain {chain}, the attestation says chain {}", att.chain_id).into());
    }
    if Some(chain) != expected_chain {
        return Err(format!("the node is on chain {chain}, not the chain of the receipt's target").into());
    }
    checks.push(format!("the node is on chain {chain}, the receipt's"));
    let hash: B256 = att
        .tx_hash
        .parse()
        .map_err(|_| CheckError::Malformed("attestation.txHash is not a transaction hash".into()))?;
    let tx = provider
        .get_transaction_by_hash(hash)
        .await
        .map_err(|e| unreachable(e, "eth_getTransactionByHash"))?
        .ok_or_else(|| format!("the node does not know transaction {hash:#x}"))?;
    let input = alloy::consensus::Transaction::input(&tx).clone();
    if format!("0x{}", to_hex(&input)) != att.data {
        return Err(format!("transaction {hash:#x} carries other data than the receipt says").into());
    }
    let from = format!("{:#x}", tx.inner.signer());
    if from != att.from {
        return Err(format!("transaction {hash:#x} is from {from}, not the receipt's sender {}", att.from).into());
    }
    let to = alloy::consensus::Transaction::to(&tx).map(|a| format!("{a:#x}"));
    if to != att.to {
        return Err(format!(
            "transaction {hash:#x} goes to {}, not the receipt's recipient {}",
            shown_to(&to),
            shown_to(&att.to)
        )
        .into());
    }
    checks.push(format!("transaction {hash:#x} exists, from {from} to {}, carrying the attested data", shown_to(&to)));
    let marker = input.len() == 36 && input[..4] == MARKER;
    if att.contract == marker {
        let is = if marker { "a marker transaction" } else { "a contract call" };
        return Err(format!("the receipt says contract: {}, but the transaction is {is}", att.contract).into());
    }
    let (anchored_root, batch_id) = if marker {
        (input[4..] == root[..], None)
    } else {
        match anchorCall::abi_decode(&input) {
            Ok(call) => (call.root.0 == *root, Some(call.batchId.0)),
            Err(_) => (false, None),
        }
    };
    if !anchored_root {
        return Err("the transaction's data does not anchor this receipt's root".into());
    }
    checks.push(format!("its data anchors the receipt's root ({})", if marker { "marker" } else { "contract call" }));
    let receipt = provider
        .get_transaction_receipt(hash)
        .await
        .map_err(|e| unreachable(e, "eth_getTransactionReceipt"))?
        .ok_or_else(|| format!("transaction {hash:#x} is not mined"))?;
    if !receipt.status() {
        return Err(format!("transaction {hash:#x} reverted").into());
    }
    let block_hash = receipt.block_hash.map(|h| format!("{h:#x}"));
    if block_hash.as_deref() != Some(att.block_hash.as_str()) {
        return Err(format!(
            "the transaction is in block {}, not the receipt's block {} (a reorg?)",
            block_hash.unwrap_or_else(|| "none".into()),
            att.block_hash
        )
        .into());
    }
    if receipt.block_number != Some(att.block_number) {
        let shown = receipt.block_number.map_or("?".into(), |n| n.to_string());
        return Err(
            format!("the transaction is in block number {shown}, not the receipt's {}", att.block_number).into()
        );
    }
    let Some(in_block) = receipt.block_hash else {
        return Err(format!("transaction {hash:#x} is mined in no block").into());
    };
    let block = provider
        .get_block_by_hash(in_block)
        .await
        .map_err(|e| unreachable(e, "eth_getBlockByHash"))?
        .ok_or_else(|| format!("block {} is gone from the node (a reorg?)", att.block_hash))?;
    let block_time = block.header.timestamp;
    if block_time != att.block_time {
        return Err(format!(
            "block {} has time {block_time}, not the receipt's blockTime {}",
            att.block_number, att.block_time
        )
        .into());
    }
    let head = provider.get_block_number().await.map_err(|e| unreachable(e, "eth_blockNumber"))?;
    let depth = head.saturating_sub(att.block_number).saturating_add(1);
    if depth < u64::from(att.confirmations) {
        return Err(format!(
            "block {} has {depth} confirmation(s), fewer than the receipt's confirmations {}",
            att.block_number, att.confirmations
        )
        .into());
    }
    checks.push(format!(
        "mined and successful in block {} ({}) at time {block_time}, now under {depth} confirmation(s), at least the receipt's {}",
        att.block_number, att.block_hash, att.confirmations
    ));
    Ok(Found { checks, block_time, batch_id })
}

fn shown_to(to: &Option<String>) -> String {
    to.clone().unwrap_or_else(|| "no one".into())
}
