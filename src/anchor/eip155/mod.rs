//! `eip155:<chain id>`: anchors a root in a transaction on an EVM chain, signed locally with
//! the configured key and sent over JSON-RPC.
//!
//! - With a `contract`, the transaction calls `anchor(bytes32 root, bytes32 batchId, string memo,
//!   bool persist)`, where `batchId` is the SHA-256 of the batch id. Without one, it is a
//!   zero-value transaction to the sender's own address whose data is the 4-byte marker
//!   `VMSH` (0x564d5348) followed by the 32 root bytes.
//! - The transaction is signed and its hash known before it is sent; the signed bytes are
//!   recorded durably first, so after a crash the same transaction (same hash, same nonce) is
//!   looked up or sent again, never a second one.
//! - Nonces: one lock per (chain, sender) is held from reading the node's pending transaction
//!   count until the node has accepted the transaction, so namespaces anchoring with one key
//!   at once never send two transactions with one nonce. The node's count is the truth: a
//!   dropped transaction frees its nonce again.
//! - A recorded transaction is always sent again byte for byte (same hash, same nonce) before
//!   anything new is built: after a crash, a timeout or a drop. If the node cannot say whether
//!   it holds the recorded one, nothing is sent until it can.
//! - An anchor is final once its block has `confirmations` blocks on top, counting its own
//!   (1 = mined); until then it is pending. A transaction the node no longer knows is dropped
//!   (and the scheduler sends it again, once).
//! - Error classes: connection failures, timeouts, HTTP 5xx and 429, and node errors that say
//!   "try again" (rate limits, unknown block, busy) → network; HTTP 401/403 → auth; the node
//!   refusing the transaction (insufficient funds, wrong chain, underpriced, reverted) →
//!   validation. Messages name the entry and show the node as scheme://host:port only
//!   (`eip155.base (https://node.example/…): …`): paths often hold API keys.
//! - Nothing the node says goes into a receipt unchecked: before a confirmation counts, the
//!   node must still be on the chain, its receipt must be for our transaction and agree with
//!   the transaction's block, the transaction it returns must hash to the hash we signed and
//!   carry our root, the block it returns must be the receipt's block, and its head must not
//!   be below that block. The sender is recovered from the signature, not taken from the
//!   node. An answer that fails a check is looked at again later, never recorded.

use std::sync::Arc;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError, TransportErrorKind};
use serde_json::json;
use sha2::{Digest, Sha256};

mod config;
mod verify;

pub use self::config::{EvmSpec, EvmTarget};
pub use self::verify::{Checks, EvmAttestation, verify_attestation, verify_receipt};
use super::locks::SendLocks;
use super::{BoxFuture, Driver, ProgressSink, entry_label};
use crate::model::digest::to_hex;
use crate::model::{AnchorError, AnchorRequest, Attestation, Confirmation, ErrorClass, Pending, Recovery, Submitted};

/// Data prefix of marker transactions.
pub const MARKER: [u8; 4] = *b"VMSH";

alloy::sol! {
    /// The anchor contract's entry point.
    function anchor(bytes32 root, bytes32 batchId, string memo, bool persist);
}

/// Anchors roots on one EVM chain with one key.
pub struct EvmDriver {
    /// `eip155.<entry> (<host>)`, the start of every message.
    label: String,
    target: EvmTarget,
    signer: PrivateKeySigner,
    provider: RootProvider,
    locks: Arc<SendLocks>,
}

impl EvmDriver {
    /// A driver for the entry `eip155.<name>`.
    pub fn new(name: &str, target: &EvmTarget, locks: Arc<SendLocks>) -> Result<Self, String> {
        let key = target.key.expose();
        let key_bytes = crate::model::digest::parse_hex32(key.strip_prefix("0x").unwrap_or(key))
            .ok_or("key is not a 32-byte hex private key")?;
        let signer = PrivateKeySigner::from_bytes(&B256::from(key_bytes))
            .map_err(|_| "key is not a valid secp256k1 private key")?;
        let provider = connect(target.rpc_url.expose())?;
        let label = entry_label("eip155", name, target.rpc_url.expose());
        Ok(Self { label, target: target.clone(), signer, provider, locks })
    }

    /// A failure, in a message naming the entry and the node.
    fn fail(&self, class: ErrorClass, what: impl std::fmt::Display) -> AnchorError {
        AnchorError::new(class, format!("{}: {what}", self.label))
    }

    /// A failed call `what`, classified (see [`classify`]).
    fn failed(&self, e: &RpcError<TransportErrorKind>, what: &str) -> AnchorError {
        let e = classify(e, what);
        AnchorError { message: format!("{}: {}", self.label, e.message), ..e }
    }

    /// An answer that contradicts what we sent or what the node said before: nothing is
    /// recorded from it, and the anchor is looked at again later.
    fn untrusted(&self, what: impl std::fmt::Display) -> AnchorError {
        AnchorError::uncertain(ErrorClass::Unknown, format!("{}: {what}; looking again later", self.label))
    }

    fn expected_chain(&self, req: &AnchorRequest) -> Result<u64, AnchorError> {
        req.target
            .name
            .parse()
            .map_err(|_| self.fail(ErrorClass::Validation, format!("{}: not a chain id", req.target)))
    }

    fn required(&self, req: &AnchorRequest) -> u32 {
        req.confirmations.unwrap_or(self.target.confirmations).max(1)
    }

    fn poll_ms(&self) -> u64 {
        u64::try_from(self.target.poll_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// The call data and recipient for `req`.
    fn payload(&self, req: &AnchorRequest) -> (Address, Bytes) {
        match self.target.contract {
            Some(contract) => {
                let batch_id: [u8; 32] = Sha256::digest(req.batch_id.as_bytes()).into();
                let call = anchorCall {
                    root: B256::from(req.root),
                    batchId: B256::from(batch_id),
                    memo: self.target.memo.clone(),
                    persist: self.target.persist,
                };
                (Address::from(contract), Bytes::from(call.abi_encode()))
            }
            None => {
                let mut data = MARKER.to_vec();
                data.extend_from_slice(&req.root);
                (self.signer.address(), Bytes::from(data))
            }
        }
    }

    async fn check_chain(&self, req: &AnchorRequest) -> Result<u64, AnchorError> {
        let expected = self.expected_chain(req)?;
        let reported = self.provider.get_chain_id().await.map_err(|e| self.failed(&e, "eth_chainId"))?;
        if reported != expected {
            return Err(self.fail(
                ErrorClass::Validation,
                format!("the node is on chain {reported}, not {expected}; point rpcUrl at a node of chain {expected}"),
            ));
        }
        Ok(expected)
    }

    /// Sends a recorded transaction again, byte for byte. `Ok(true)`: the node holds it (or
    /// already did); `Ok(false)`: its nonce went to another transaction, so it can never land.
    async fn resend(&self, raw: &[u8]) -> Result<bool, AnchorError> {
        match self.provider.send_raw_transaction(raw).await {
            Ok(_) => Ok(true),
            Err(e) => match rpc_message(&e) {
                Some(m) if m.contains("already known") || m.contains("already imported") => Ok(true),
                Some(m) if m.contains("nonce too low") => Ok(false),
                _ => Err(self.failed(&e, "eth_sendRawTransaction")),
            },
        }
    }

    /// Signs a transaction with the next nonce, records it, sends it. Holds the sender's
    /// nonce lock throughout so concurrent anchors get distinct nonces.
    async fn sign_record_send(
        &self,
        req: &AnchorRequest,
        chain_id: u64,
        progress: &dyn ProgressSink,
    ) -> Result<(B256, u64), AnchorError> {
        let from = self.signer.address();
        let (to, input) = self.payload(req);
        let request = TransactionRequest::default().from(from).to(to).input(input.clone().into()).value(U256::ZERO);
        let gas_limit = match self.target.gas_limit {
            Some(g) => g,
            // Headroom over the estimate: state may change between estimate and inclusion.
            None => {
                let estimate =
                    self.provider.estimate_gas(request).await.map_err(|e| self.failed(&e, "eth_estimateGas"))?;
                estimate.saturating_add(estimate / 5)
            }
        };
        let fees = self.provider.estimate_eip1559_fees().await.map_err(|e| self.failed(&e, "fee estimation"))?;
        let lock = self.locks.get(&format!("eip155:{chain_id}#{from:#x}"));
        let _sending = lock.lock().await;
        for _ in 0..3 {
            let nonce = self
                .provider
                .get_transaction_count(from)
                .pending()
                .await
                .map_err(|e| self.failed(&e, "eth_getTransactionCount"))?;
            let mut tx = TxEip1559 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: fees.max_fee_per_gas,
                max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                to: TxKind::Call(to),
                value: U256::ZERO,
                access_list: Default::default(),
                input: input.clone(),
            };
            let signature = self
                .signer
                .sign_transaction_sync(&mut tx)
                .map_err(|e| self.fail(ErrorClass::Unknown, format!("signing failed: {e}")))?;
            let envelope = TxEnvelope::from(tx.into_signed(signature));
            let hash = *envelope.tx_hash();
            let raw = envelope.encoded_2718();
            progress
                .record(json!({
                    "txHash": format!("{hash:#x}"),
                    "raw": format!("0x{}", to_hex(&raw)),
                    "nonce": nonce,
                    "from": format!("{from:#x}"),
                    "chainId": chain_id,
                }))
                .await?;
            match self.provider.send_raw_transaction(&raw).await {
                Ok(_) => return Ok((hash, nonce)),
                // Another process used this nonce meanwhile: ask the node again.
                Err(e) if rpc_message(&e).is_some_and(|m| m.contains("nonce too low")) => continue,
                Err(e) => return Err(self.failed(&e, "eth_sendRawTransaction")),
            }
        }
        Err(self.fail(ErrorClass::Network, "could not find a free nonce in three tries"))
    }

    /// Where a sent transaction stands. A failed query says nothing about the anchor itself,
    /// so its error is never a refusal; a reverted transaction is. Every answer that goes
    /// into the attestation is checked first (see the module docs).
    async fn look_up(&self, req: &AnchorRequest, hash: B256, pending: &Pending) -> Result<Confirmation, AnchorError> {
        let query = |e: RpcError<TransportErrorKind>, what: &str| {
            let e = self.failed(&e, what);
            AnchorError::uncertain(e.class, e.message)
        };
        // The node behind the URL may have changed since the transaction was sent.
        let chain_id = self.check_chain(req).await.map_err(|e| AnchorError::uncertain(e.class, e.message))?;
        let receipt =
            self.provider.get_transaction_receipt(hash).await.map_err(|e| query(e, "eth_getTransactionReceipt"))?;
        let Some(receipt) = receipt else {
            let known =
                self.provider.get_transaction_by_hash(hash).await.map_err(|e| query(e, "eth_getTransactionByHash"))?;
            return Ok(match known {
                Some(_) => Confirmation::Waiting(Pending { depth: 0, ..pending.clone() }),
                None => Confirmation::Dropped(format!(
                    "{}: transaction {hash:#x} is neither mined nor in the node's mempool",
                    self.label
                )),
            });
        };
        if receipt.transaction_hash != hash {
            return Err(self.untrusted(format!(
                "asked for the receipt of {hash:#x}, the node answered that of {:#x}",
                receipt.transaction_hash
            )));
        }
        if !receipt.status() {
            return Ok(Confirmation::Rejected(
                self.fail(ErrorClass::Validation, format!("transaction {hash:#x} was mined but reverted")),
            ));
        }
        let (Some(block_number), Some(block_hash)) = (receipt.block_number, receipt.block_hash) else {
            return Ok(Confirmation::Waiting(Pending { depth: 0, ..pending.clone() }));
        };
        let head = self.provider.get_block_number().await.map_err(|e| query(e, "eth_blockNumber"))?;
        if head < block_number {
            return Err(self.untrusted(format!(
                "the node's head {head} is below block {block_number}, which it says holds {hash:#x}"
            )));
        }
        let depth = u32::try_from(head - block_number + 1).unwrap_or(u32::MAX);
        if depth < pending.required.max(1) {
            return Ok(Confirmation::Waiting(Pending { depth, ..pending.clone() }));
        }
        let block = self
            .provider
            .get_block_by_hash(block_hash)
            .await
            .map_err(|e| query(e, "eth_getBlockByHash"))?
            // Reorged out between the receipt and this call: look again later.
            .ok_or_else(|| self.untrusted(format!("block {block_hash:#x} disappeared")))?;
        if block.header.hash != block_hash || block.header.number != block_number {
            return Err(self.untrusted(format!(
                "asked for block {block_hash:#x} (number {block_number}), the node answered block {:#x} (number {})",
                block.header.hash, block.header.number
            )));
        }
        let block_time = block.header.timestamp;
        // The receipt shows what was sent, as the chain has it (the config may have changed
        // since); it must be the very transaction we signed.
        let tx = self
            .provider
            .get_transaction_by_hash(hash)
            .await
            .map_err(|e| query(e, "eth_getTransactionByHash"))?
            .ok_or_else(|| self.untrusted(format!("transaction {hash:#x} disappeared")))?;
        let envelope = tx.inner.inner();
        let signed_hash = alloy::primitives::keccak256(envelope.encoded_2718());
        if signed_hash != hash {
            return Err(self.untrusted(format!("asked for transaction {hash:#x}, the node answered {signed_hash:#x}")));
        }
        if tx.block_hash.is_some_and(|b| b != block_hash) || tx.block_number.is_some_and(|n| n != block_number) {
            return Err(
                self.untrusted(format!("the node puts transaction {hash:#x} in another block than its receipt does"))
            );
        }
        let input = alloy::consensus::Transaction::input(&tx).clone();
        if alloy::consensus::Transaction::chain_id(&tx) != Some(chain_id) || !anchors(&input, &req.root) {
            return Err(self.untrusted(format!(
                "transaction {hash:#x} is not an anchor of this root on chain {chain_id}; was the attempt's record replaced?"
            )));
        }
        let to = alloy::consensus::Transaction::to(&tx).map(|a| format!("{a:#x}"));
        let from =
            sender(envelope).ok_or_else(|| self.untrusted(format!("transaction {hash:#x} has no valid signature")))?;
        Ok(Confirmation::Confirmed(Attestation {
            data: json!({
                "chainId": chain_id,
                "txHash": format!("{hash:#x}"),
                "from": format!("{from:#x}"),
                "to": to,
                "data": format!("0x{}", to_hex(&input)),
                "contract": !(input.len() == 36 && input[..4] == MARKER),
                "blockNumber": block_number,
                "blockHash": format!("{block_hash:#x}"),
                "blockTime": block_time,
                "confirmations": depth,
            }),
            anchored_at: i64::try_from(block_time).ok().map(|t| t.saturating_mul(1000)),
        }))
    }

    fn pending_for(&self, req: &AnchorRequest, chain_id: u64, hash: B256, nonce: Option<u64>) -> Pending {
        Pending {
            data: json!({"chainId": chain_id, "txHash": format!("{hash:#x}"), "nonce": nonce}),
            required: self.required(req),
            depth: 0,
            poll_ms: self.poll_ms(),
            fee: None,
        }
    }
}

/// The JSON-RPC error message, if the node answered with one.
fn rpc_message(e: &RpcError<TransportErrorKind>) -> Option<String> {
    match e {
        RpcError::ErrorResp(payload) => Some(payload.message.to_ascii_lowercase()),
        _ => None,
    }
}

/// The sender of a transaction we sent (always EIP-1559), recovered from its signature: the
/// node's `from` field is only its word.
fn sender(envelope: &TxEnvelope) -> Option<Address> {
    match envelope {
        TxEnvelope::Eip1559(signed) => signed.signature().recover_address_from_prehash(&signed.signature_hash()).ok(),
        _ => None,
    }
}

/// Whether transaction data anchors `root`: the marker and the root, or a call of the anchor
/// contract with that root.
fn anchors(input: &[u8], root: &[u8; 32]) -> bool {
    if input.len() == 36 && input[..4] == MARKER {
        input[4..] == root[..]
    } else {
        anchorCall::abi_decode(input).is_ok_and(|c| c.root.0 == *root)
    }
}

/// Maps a transport or node error to a class; `what` names the call that failed. The node's
/// text may echo our request: the driver's guard (`super::Guarded`) cleans it, after it is
/// shortened here.
fn classify(e: &RpcError<TransportErrorKind>, what: &str) -> AnchorError {
    match e {
        RpcError::ErrorResp(payload) => {
            let m = payload.message.to_ascii_lowercase();
            // Nodes say "try again" in many words (and -32005 is the common limit code).
            let transient = payload.code == -32005
                || [
                    "rate limit",
                    "too many requests",
                    "header not found",
                    "unknown block",
                    "busy",
                    "timeout",
                    "try again",
                ]
                .iter()
                .any(|w| m.contains(w));
            let class = if transient { ErrorClass::Network } else { ErrorClass::Validation };
            AnchorError::new(class, format!("{what}: the node refused: {}", shorten(&payload.message)))
        }
        RpcError::Transport(TransportErrorKind::HttpError(h)) => {
            let class = match h.status {
                401 | 403 => ErrorClass::Auth,
                429 | 500..=599 => ErrorClass::Network,
                _ => ErrorClass::Validation,
            };
            AnchorError::new(class, format!("{what}: HTTP {}", h.status))
        }
        // Our transport's messages never carry the URL (see super::client).
        RpcError::Transport(kind) => {
            AnchorError::new(ErrorClass::Network, format!("{what}: cannot reach the node: {kind}"))
        }
        RpcError::NullResp => AnchorError::new(ErrorClass::Network, format!("{what}: the node returned nothing")),
        RpcError::DeserError { .. } => {
            AnchorError::new(ErrorClass::Unknown, format!("{what}: the node's answer is not valid JSON-RPC"))
        }
        other => AnchorError::new(ErrorClass::Unknown, format!("{what}: {other}")),
    }
}

/// The first line of a node's message, at most 300 characters.
fn shorten(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim();
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}

fn hash_from(data: &serde_json::Value) -> Option<B256> {
    data.get("txHash").and_then(|h| h.as_str()).and_then(|h| h.parse().ok())
}

/// The transaction recorded before sending: hash, signed bytes, nonce.
fn recorded(progress: Option<&serde_json::Value>) -> Option<(B256, Vec<u8>, Option<u64>)> {
    let p = progress?;
    let raw = p.get("raw")?.as_str()?.strip_prefix("0x").and_then(crate::model::digest::parse_hex)?;
    Some((hash_from(p)?, raw, p.get("nonce").and_then(|n| n.as_u64())))
}

/// A provider over [`super::client::RpcTransport`]: timeouts, a capped answer, no URL in errors.
fn connect(url: &str) -> Result<RootProvider, String> {
    let transport = super::client::RpcTransport::new(url, super::client::REQUEST_TIMEOUT)?;
    let local = url.contains("://127.0.0.1") || url.contains("://localhost") || url.contains("://[::1]");
    let client = alloy::rpc::client::ClientBuilder::default().transport(transport, local);
    Ok(ProviderBuilder::default().connect_client(client))
}

impl Driver for EvmDriver {
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            let chain_id = self.check_chain(req).await?;
            // A recorded transaction goes out again as it is, so a drop or a lost answer
            // never turns into a second anchor.
            if let Some((hash, raw, nonce)) = recorded(req.progress.as_ref())
                && self.resend(&raw).await?
            {
                return Ok(Submitted::Pending(self.pending_for(req, chain_id, hash, nonce)));
            }
            let (hash, nonce) = self.sign_record_send(req, chain_id, progress).await?;
            Ok(Submitted::Pending(self.pending_for(req, chain_id, hash, Some(nonce))))
        })
    }

    fn recover<'a>(&'a self, req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        Box::pin(async move {
            // Nothing recorded: nothing was sent (the transaction is recorded before sending).
            let Some((hash, raw, nonce)) = recorded(req.progress.as_ref()) else {
                return match req.progress {
                    None => Recovery::NotDone,
                    Some(_) => {
                        Recovery::Later(self.fail(ErrorClass::Unknown, "the recorded transaction is unreadable"))
                    }
                };
            };
            let chain_id = match self.expected_chain(req) {
                Ok(id) => id,
                Err(e) => return Recovery::Later(e),
            };
            let pending = self.pending_for(req, chain_id, hash, nonce);
            match self.look_up(req, hash, &pending).await {
                Ok(Confirmation::Confirmed(att)) => Recovery::Done(att),
                Ok(Confirmation::Waiting(p)) => Recovery::Pending(p),
                // Reverted: nothing anchored, a new transaction may be sent.
                Ok(Confirmation::Rejected(_)) => Recovery::NotDone,
                // Never reached the node, or was dropped: send the very same bytes again.
                Ok(Confirmation::Dropped(_)) => match self.resend(&raw).await {
                    Ok(true) => Recovery::Pending(pending),
                    Ok(false) => Recovery::NotDone,
                    Err(e) => Recovery::Later(e),
                },
                // The node cannot tell now: sending anything could make a second anchor.
                Err(e) => Recovery::Later(e),
            }
        })
    }

    fn confirm<'a>(
        &'a self,
        req: &'a AnchorRequest,
        pending: &'a Pending,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
        Box::pin(async move {
            let hash = hash_from(&pending.data)
                .ok_or_else(|| self.fail(ErrorClass::Unknown, "pending anchor without a transaction hash"))?;
            self.look_up(req, hash, pending).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_data_is_the_marker_then_the_root() {
        let target = EvmTarget {
            rpc_url: "http://127.0.0.1:1".into(),
            chain_id: None,
            contract: None,
            key: crate::config::vars::Secret::new("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
            persist: false,
            confirmations: 1,
            memo: String::new(),
            poll_interval: std::time::Duration::from_secs(1),
            gas_limit: None,
            aggregate: None,
        };
        let d = EvmDriver::new("default", &target, Arc::default()).expect("driver");
        let req = AnchorRequest {
            namespace: "n".into(),
            cadence: crate::model::CadenceKind::Fast,
            target: crate::model::Target::parse("eip155:31337").expect("target"),
            batch_id: "b".into(),
            root: [9; 32],
            attempt_id: "a".into(),
            confirmations: None,
            policy_oid: None,
            progress: None,
            membership: None,
        };
        let (to, data) = d.payload(&req);
        assert_eq!(to, d.signer.address(), "a marker transaction goes to the sender itself");
        assert_eq!(&data[..4], b"VMSH");
        assert_eq!(&data[4..], &[9u8; 32]);
        let with_contract =
            EvmDriver::new("c", &EvmTarget { contract: Some([1; 20]), ..target }, Arc::default()).expect("driver");
        let (to, data) = with_contract.payload(&req);
        assert_eq!(to, Address::from([1u8; 20]));
        let call = anchorCall::abi_decode(&data).expect("decodes");
        assert_eq!(call.root, B256::from([9u8; 32]));
    }

    #[test]
    fn a_bad_key_is_refused_without_printing_it() {
        let target = EvmTarget {
            rpc_url: "http://127.0.0.1:1".into(),
            chain_id: None,
            contract: None,
            key: crate::config::vars::Secret::new("0x".to_string() + &"0".repeat(64)),
            persist: false,
            confirmations: 1,
            memo: String::new(),
            poll_interval: std::time::Duration::from_secs(1),
            gas_limit: None,
            aggregate: None,
        };
        let e = EvmDriver::new("d", &target, Arc::default()).err().expect("zero is not a key");
        assert!(!e.contains("0000000000"), "{e}");
    }
}
