//! Re-checks a `btc:` attestation against a bitcoind node: the node is on the receipt's
//! chain, the block is in its active chain at the stated height and time, under at least the
//! stated confirmations, the transaction is in that block, and one of its outputs is an
//! OP_RETURN carrying exactly `VMSH ‖ root`. A receipt written with `confirmations: 0` names
//! no block; then the transaction only has to be known to the node (mempool, wallet or
//! transaction index) and carry the data, and the receipt's time is not evidence.

use serde::Deserialize;
use serde_json::{Value, json};

use super::BtcAuth;
use super::rpc::{CallError, Rpc, code};
use super::{anchor_data, output_carrying, txid_of};
use crate::config::vars::Endpoint;
use crate::config::vars::Redactor;
use crate::model::digest::to_hex;
use crate::model::evidence::{CheckError, Evidence, check_time, read_attestation};
use crate::model::receipt::{Receipt, is_lower_hex};

/// A `btc:` attestation, exactly as the driver writes it (a field added there must be
/// added here: the tests verify real receipts through this struct).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BtcAttestation {
    /// The node's chain (`main`, `test`, `signet`, `regtest` …).
    pub chain: String,
    /// The transaction, 64 hex digits.
    pub txid: String,
    /// The block it was mined in; absent when the receipt was final at 0 confirmations.
    #[serde(default)]
    pub block_hash: Option<String>,
    /// That block's height.
    #[serde(default)]
    pub height: Option<u64>,
    /// That block's time, Unix seconds: the receipt's time.
    #[serde(default)]
    pub block_time: Option<i64>,
    /// Hex of the OP_RETURN data: the marker, then the root.
    pub data: String,
    /// Confirmations it had when the receipt was written.
    pub confirmations: u32,
}

/// The block an attestation names.
struct Block {
    hash: String,
    height: u64,
    time: i64,
}

impl BtcAttestation {
    /// Reads an attestation strictly: hex fields in the form the driver writes, and the block
    /// fields all present (with at least one confirmation) or all absent (with none).
    pub fn read(attestation: &Value) -> Result<Self, CheckError> {
        let att: Self = read_attestation(attestation)?;
        let malformed = |why: String| Err(CheckError::Malformed(why));
        if att.chain.is_empty() || att.chain.len() > 64 || att.chain.chars().any(char::is_control) {
            return malformed("attestation.chain is not a chain name".into());
        }
        if !is_lower_hex(&att.txid, 64) {
            return malformed("attestation.txid is not 64 lower-case hex digits".into());
        }
        if !att.data.len().is_multiple_of(2) || !is_lower_hex(&att.data, att.data.len()) {
            return malformed("attestation.data is not lower-case hex".into());
        }
        match (&att.block_hash, att.height, att.block_time) {
            (Some(hash), Some(_), Some(_)) => {
                if !is_lower_hex(hash, 64) {
                    return malformed("attestation.blockHash is not 64 lower-case hex digits".into());
                }
                if att.confirmations == 0 {
                    return malformed("attestation names a block but 0 confirmations".into());
                }
            }
            (None, None, None) => {
                if att.confirmations != 0 {
                    return malformed(format!("attestation names no block but {} confirmation(s)", att.confirmations));
                }
            }
            (hash, height, time) => {
                let missing: Vec<&str> =
                    [("blockHash", hash.is_none()), ("height", height.is_none()), ("blockTime", time.is_none())]
                        .into_iter()
                        .filter_map(|(name, gone)| gone.then_some(name))
                        .collect();
                return malformed(format!(
                    "attestation.blockHash, height and blockTime come together, but {} missing",
                    missing.join(" and ")
                ));
            }
        }
        Ok(att)
    }

    fn block(&self) -> Option<Block> {
        match (&self.block_hash, self.height, self.block_time) {
            (Some(hash), Some(height), Some(time)) => Some(Block { hash: hash.clone(), height, time }),
            _ => None,
        }
    }
}

/// Verifies `attestation` (a `btc:` receipt's) for `root` through the node at `rpc_url`
/// (credentials from the URL's `user:password@`, else from `auth`); returns what was
/// checked, one line each, or the first mismatch. What it says is cleaned of the URL's
/// secrets and the credentials: the node may echo our request.
pub async fn verify_attestation(
    rpc_url: &str,
    auth: Option<&BtcAuth>,
    attestation: &Value,
    root: &[u8; 32],
) -> Result<Vec<String>, CheckError> {
    let att = BtcAttestation::read(attestation)?;
    redactor(rpc_url, auth).clean_checks(check_on_chain(rpc_url, auth, &att, root).await)
}

/// What a node may echo of our request: the URL's secrets and the credentials.
fn redactor(rpc_url: &str, auth: Option<&BtcAuth>) -> Redactor {
    let mut secrets = Endpoint::new(rpc_url).secrets();
    if let Some(auth) = auth {
        secrets.extend(&auth.secrets());
    }
    secrets.redactor()
}

/// Verifies a `btc:` receipt: its attestation as [`verify_attestation`] does, and, when it
/// names a block, that its time is the block's.
pub async fn verify_receipt(
    rpc_url: &str,
    auth: Option<&BtcAuth>,
    receipt: &Receipt,
    root: &[u8; 32],
) -> Result<Evidence, CheckError> {
    let redact = redactor(rpc_url, auth);
    redact.clean_evidence(check_receipt(rpc_url, auth, receipt, root).await)
}

async fn check_receipt(
    rpc_url: &str,
    auth: Option<&BtcAuth>,
    receipt: &Receipt,
    root: &[u8; 32],
) -> Result<Evidence, CheckError> {
    let att = BtcAttestation::read(&receipt.attestation)?;
    let mut checks = check_on_chain(rpc_url, auth, &att, root).await?;
    match att.block() {
        Some(block) => {
            let block_ms = block
                .time
                .checked_mul(1000)
                .ok_or_else(|| CheckError::Mismatch(format!("the block's time {} is out of range", block.time)))?;
            checks.push(check_time(receipt, block_ms, "the block's time")?);
            Ok(Evidence { checks, attests: vec!["root", "time", "timeMs"], claims: Vec::new() })
        }
        None => Ok(Evidence {
            checks,
            attests: vec!["root"],
            claims: vec![
                "the receipt names no block (it was final once sent), so its time is when the scheduler saw the \
                 transaction sent"
                    .into(),
            ],
        }),
    }
}

async fn check_on_chain(
    rpc_url: &str,
    auth: Option<&BtcAuth>,
    att: &BtcAttestation,
    root: &[u8; 32],
) -> Result<Vec<String>, CheckError> {
    let mut checked = Vec::new();
    let txid = att.txid.clone();
    let expected = anchor_data(root);
    if att.data != to_hex(&expected) {
        return Err(format!(
            "the attestation's data {} is not the marker VMSH followed by the receipt's root",
            att.data
        )
        .into());
    }
    checked.push("the attestation's data is the marker VMSH followed by the receipt's root".to_string());

    let rpc = Rpc::new(rpc_url, auth.cloned(), None).map_err(CheckError::Unreachable)?;
    // The first call decides whether the node can be asked at all.
    let info = rpc.call("getblockchaininfo", json!([])).await.map_err(|e| failed(&rpc, "getblockchaininfo", &e))?;
    let chain = info["chain"].as_str().unwrap_or("?");
    if att.chain != chain {
        return Err(
            format!("the receipt is for chain {:?}, but the node at {} is on {chain:?}", att.chain, rpc.url()).into()
        );
    }
    checked.push(format!("the node at {} is on chain {chain:?}, as the receipt says", rpc.url()));

    let tx = match att.block() {
        Some(block) => {
            checked.push(check_block(&rpc, &block, att.confirmations).await?);
            let tx = transaction_in_block(&rpc, &txid, &block.hash).await?;
            checked.push(format!("transaction {txid} is in block {}", block.hash));
            tx
        }
        None => {
            let (tx, where_) = transaction_anywhere(&rpc, &txid).await?;
            checked
                .push(format!("the receipt names no block (it was final once sent); transaction {txid} is {where_}"));
            tx
        }
    };

    match output_carrying(&tx, &expected) {
        Some(n) => {
            checked.push(format!("output {n} of {txid} is OP_RETURN carrying exactly VMSH followed by the root"))
        }
        None => {
            return Err(format!("no OP_RETURN output of transaction {txid} carries VMSH followed by the root").into());
        }
    }
    Ok(checked)
}

/// A call the node did not answer usefully: nothing was checked either way.
fn failed(rpc: &Rpc, method: &str, e: &CallError) -> CheckError {
    CheckError::Unreachable(format!("{method} at {}: {e}", rpc.url()))
}

/// The block must be in the node's active chain at the stated height, with the stated time,
/// under at least the confirmations the receipt was written with.
async fn check_block(rpc: &Rpc, block: &Block, confirmations: u32) -> Result<String, CheckError> {
    let Block { hash, height, time } = block;
    let header = match rpc.call("getblockheader", json!([hash])).await {
        Ok(h) => h,
        Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => {
            return Err(format!("block {hash} is unknown to the node").into());
        }
        Err(e) => return Err(failed(rpc, "getblockheader", &e)),
    };
    let depth = header["confirmations"].as_i64().unwrap_or(-1);
    if depth < 1 {
        return Err(format!("block {hash} is not in the node's active chain (reorganised out)").into());
    }
    let node_height = header["height"].as_u64();
    if node_height != Some(*height) {
        let shown = node_height.map_or("?".into(), |h| h.to_string());
        return Err(format!("block {hash} is at height {shown}, not {height} as the receipt says").into());
    }
    let node_time = header["time"].as_i64();
    if node_time != Some(*time) {
        let shown = node_time.map_or("?".into(), |t| t.to_string());
        return Err(format!("block {hash} has time {shown}, not {time} as the receipt says").into());
    }
    if depth < i64::from(confirmations) {
        return Err(format!(
            "block {hash} has {depth} confirmation(s), fewer than the receipt's confirmations {confirmations}"
        )
        .into());
    }
    Ok(format!(
        "block {hash} is in the active chain at height {height}, time {time}, with {depth} confirmation(s), \
         at least the receipt's {confirmations}"
    ))
}

/// The decoded transaction `txid`, which must be in `block_hash`. `getrawtransaction` with the
/// block hash needs no transaction index; a node without the block (pruned) may still know
/// the transaction as a wallet transaction.
async fn transaction_in_block(rpc: &Rpc, txid: &str, block_hash: &str) -> Result<Value, CheckError> {
    match rpc.call("getrawtransaction", json!([txid, true, block_hash])).await {
        Ok(tx) => {
            if tx["in_active_chain"] == Value::Bool(false) {
                return Err(format!("block {block_hash} is not in the node's active chain").into());
            }
            if txid_of(&tx["txid"]).as_deref() != Some(txid) {
                return Err(format!("the node answered another transaction than {txid}").into());
            }
            Ok(tx)
        }
        Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => {
            let Ok((tx, wallet_tx)) = wallet_transaction(rpc, txid).await else {
                return Err(format!("transaction {txid} is not in block {block_hash}: {e}").into());
            };
            if txid_of(&wallet_tx["blockhash"]).as_deref() != Some(block_hash) {
                return Err(format!("transaction {txid} is not in block {block_hash}").into());
            }
            Ok(tx)
        }
        Err(e) => Err(failed(rpc, "getrawtransaction", &e)),
    }
}

/// The decoded transaction `txid` wherever the node knows it (mempool, transaction index,
/// wallet), and where that is.
async fn transaction_anywhere(rpc: &Rpc, txid: &str) -> Result<(Value, String), CheckError> {
    let located = |blockhash: &Value| match txid_of(blockhash) {
        Some(b) => format!("known to the node, in block {b}"),
        None => "known to the node, not yet in a block".to_string(),
    };
    match rpc.call("getrawtransaction", json!([txid, true])).await {
        Ok(tx) if txid_of(&tx["txid"]).as_deref() == Some(txid) => {
            let at = located(&tx["blockhash"]);
            Ok((tx, at))
        }
        Ok(_) => Err(format!("the node answered another transaction than {txid}").into()),
        Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => match wallet_transaction(rpc, txid).await {
            Ok((tx, wallet_tx)) => Ok((tx, located(&wallet_tx["blockhash"]))),
            Err(_) => Err(format!("transaction {txid} is unknown to the node: {e}").into()),
        },
        Err(e) => Err(failed(rpc, "getrawtransaction", &e)),
    }
}

/// A wallet transaction, decoded, with the wallet's view of it (`gettransaction`). Any error
/// only means the wallet cannot show it: the callers say what that means for the receipt.
async fn wallet_transaction(rpc: &Rpc, txid: &str) -> Result<(Value, Value), String> {
    let wallet_tx = rpc.wallet("gettransaction", json!([txid])).await.map_err(|e| e.to_string())?;
    let hex = wallet_tx["hex"].as_str().ok_or_else(|| format!("gettransaction {txid}: no hex"))?;
    let tx = rpc.call("decoderawtransaction", json!([hex])).await.map_err(|e| e.to_string())?;
    if txid_of(&tx["txid"]).as_deref() != Some(txid) {
        return Err(format!("the wallet's transaction {txid} decodes to another txid"));
    }
    Ok((tx, wallet_tx))
}
