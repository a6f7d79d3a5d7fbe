//! Re-checks a `btc:` attestation against a bitcoind node: the node is on the receipt's
//! chain, the block is in its active chain at the stated height and time, the transaction is
//! in that block, and one of its outputs is an OP_RETURN carrying exactly `VMSH ‖ root`.
//! A receipt written with `confirmations: 0` names no block; then the transaction only has to
//! be known to the node (mempool, wallet or transaction index) and carry the data.

use serde_json::{Value, json};

use super::rpc::{CallError, Rpc, code};
use super::{anchor_data, output_carrying, txid_of};
use crate::config::targets::BtcAuth;
use crate::digest::to_hex;
use crate::verify::CheckError;

/// Verifies `attestation` (a `btc:` receipt's) for `root` through the node at `rpc_url`
/// (credentials from the URL's `user:password@`, else from `auth`); returns what was
/// checked, one line each, or the first mismatch.
pub async fn verify_attestation(
    rpc_url: &str,
    auth: Option<&BtcAuth>,
    attestation: &Value,
    root: &[u8; 32],
) -> Result<Vec<String>, CheckError> {
    let mut checked = Vec::new();
    let field = |name: &str| format!("the attestation has no valid `{name}`");
    let txid = txid_of(&attestation["txid"]).ok_or_else(|| field("txid"))?;
    let block = match &attestation["blockHash"] {
        Value::Null => None,
        v => {
            let hash = txid_of(v).ok_or_else(|| field("blockHash"))?;
            let height = attestation["height"].as_u64().ok_or_else(|| field("height"))?;
            let time = attestation["blockTime"].as_i64().ok_or_else(|| field("blockTime"))?;
            Some((hash, height, time))
        }
    };
    let expected = anchor_data(root);
    let stated = attestation["data"].as_str().ok_or_else(|| field("data"))?;
    if !stated.eq_ignore_ascii_case(&to_hex(&expected)) {
        return Err(
            format!("the attestation's data {stated} is not the marker VMSH followed by the receipt's root").into()
        );
    }
    checked.push("the attestation's data is the marker VMSH followed by the receipt's root".to_string());

    let rpc = Rpc::new(rpc_url, auth.cloned(), None)?;
    // The first call decides whether the node can be asked at all.
    let info = rpc
        .call("getblockchaininfo", json!([]))
        .await
        .map_err(|e| CheckError::Unreachable(failed(&rpc, "getblockchaininfo", &e)))?;
    let chain = info["chain"].as_str().unwrap_or("?");
    match attestation["chain"].as_str() {
        Some(stated) if stated != chain => {
            return Err(
                format!("the receipt is for chain {stated:?}, but the node at {} is on {chain:?}", rpc.url()).into()
            );
        }
        Some(_) => checked.push(format!("the node at {} is on chain {chain:?}, as the receipt says", rpc.url())),
        None => checked.push(format!("the node at {} is on chain {chain:?} (the receipt names none)", rpc.url())),
    }

    let tx = match block {
        Some((hash, height, time)) => {
            checked.push(check_block(&rpc, &hash, height, time).await?);
            let tx = transaction_in_block(&rpc, &txid, &hash).await?;
            checked.push(format!("transaction {txid} is in block {hash}"));
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

fn failed(rpc: &Rpc, method: &str, e: &CallError) -> String {
    format!("{method} at {}: {e}", rpc.url())
}

/// The block must be in the node's active chain at `height`, with time `time`.
async fn check_block(rpc: &Rpc, hash: &str, height: u64, time: i64) -> Result<String, String> {
    let header = match rpc.call("getblockheader", json!([hash])).await {
        Ok(h) => h,
        Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => return Err(format!("block {hash} is unknown to the node")),
        Err(e) => return Err(failed(rpc, "getblockheader", &e)),
    };
    let depth = header["confirmations"].as_i64().unwrap_or(-1);
    if depth < 1 {
        return Err(format!("block {hash} is not in the node's active chain (reorganised out)"));
    }
    let node_height = header["height"].as_u64();
    if node_height != Some(height) {
        let shown = node_height.map_or("?".into(), |h| h.to_string());
        return Err(format!("block {hash} is at height {shown}, not {height} as the receipt says"));
    }
    let node_time = header["time"].as_i64();
    if node_time != Some(time) {
        let shown = node_time.map_or("?".into(), |t| t.to_string());
        return Err(format!("block {hash} has time {shown}, not {time} as the receipt says"));
    }
    Ok(format!("block {hash} is in the active chain at height {height}, time {time}, with {depth} confirmation(s)"))
}

/// The decoded transaction `txid`, which must be in `block_hash`. `getrawtransaction` with the
/// block hash needs no transaction index; a node without the block (pruned) may still know
/// the transaction as a wallet transaction.
async fn transaction_in_block(rpc: &Rpc, txid: &str, block_hash: &str) -> Result<Value, String> {
    match rpc.call("getrawtransaction", json!([txid, true, block_hash])).await {
        Ok(tx) => {
            if tx["in_active_chain"] == Value::Bool(false) {
                return Err(format!("block {block_hash} is not in the node's active chain"));
            }
            if txid_of(&tx["txid"]).as_deref() != Some(txid) {
                return Err(format!("the node answered another transaction than {txid}"));
            }
            Ok(tx)
        }
        Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => {
            let Ok((tx, wallet_tx)) = wallet_transaction(rpc, txid).await else {
                return Err(format!("transaction {txid} is not in block {block_hash}: {e}"));
            };
            if txid_of(&wallet_tx["blockhash"]).as_deref() != Some(block_hash) {
                return Err(format!("transaction {txid} is not in block {block_hash}"));
            }
            Ok(tx)
        }
        Err(e) => Err(failed(rpc, "getrawtransaction", &e)),
    }
}

/// The decoded transaction `txid` wherever the node knows it (mempool, transaction index,
/// wallet), and where that is.
async fn transaction_anywhere(rpc: &Rpc, txid: &str) -> Result<(Value, String), String> {
    let located = |blockhash: &Value| match txid_of(blockhash) {
        Some(b) => format!("known to the node, in block {b}"),
        None => "known to the node, not yet in a block".to_string(),
    };
    match rpc.call("getrawtransaction", json!([txid, true])).await {
        Ok(tx) if txid_of(&tx["txid"]).as_deref() == Some(txid) => {
            let at = located(&tx["blockhash"]);
            Ok((tx, at))
        }
        Ok(_) => Err(format!("the node answered another transaction than {txid}")),
        Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => match wallet_transaction(rpc, txid).await {
            Ok((tx, wallet_tx)) => Ok((tx, located(&wallet_tx["blockhash"]))),
            Err(_) => Err(format!("transaction {txid} is unknown to the node: {e}")),
        },
        Err(e) => Err(failed(rpc, "getrawtransaction", &e)),
    }
}

/// A wallet transaction, decoded, with the wallet's view of it (`gettransaction`).
async fn wallet_transaction(rpc: &Rpc, txid: &str) -> Result<(Value, Value), String> {
    let wallet_tx = rpc.wallet("gettransaction", json!([txid])).await.map_err(|e| failed(rpc, "gettransaction", &e))?;
    let hex = wallet_tx["hex"].as_str().ok_or_else(|| format!("gettransaction {txid}: no hex"))?;
    let tx =
        rpc.call("decoderawtransaction", json!([hex])).await.map_err(|e| failed(rpc, "decoderawtransaction", &e))?;
    if txid_of(&tx["txid"]).as_deref() != Some(txid) {
        return Err(format!("the wallet's transaction {txid} decodes to another txid"));
    }
    Ok((tx, wallet_tx))
}
