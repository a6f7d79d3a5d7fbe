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
//! - A recorded transaction is always followed before anything new is built: any of the
//!   attempt's transactions found mined completes it; else the latest is sent again byte for
//!   byte (same hash, same nonce) after a crash, a timeout or a drop, which also fills the gap
//!   its nonce would leave. If the node cannot say whether it holds them, nothing is sent
//!   until it can. Only a nonce another transaction took lets a new transaction be built.
//! - A transaction not mined `bumpAfter` after it was sent is replaced with the same nonce at
//!   a higher fee ([`fees`]), recorded first with every hash before it ([`sent`]), up to the
//!   cap, where it waits for fees to drop and says so in its pending fee.
//! - An anchor is final once its block has `confirmations` blocks on top, counting its own
//!   (1 = mined), counted on the block the node has at that height now; until then it is
//!   pending. A pending transaction the node no longer knows is dropped (and the scheduler
//!   sends it again, once).
//! - Error classes: connection failures, timeouts, HTTP 5xx and 429, and node errors that say
//!   "try again" (rate limits, unknown block, busy) → network; HTTP 401/403 → auth; the node
//!   refusing the transaction (insufficient funds, wrong chain, underpriced, reverted) →
//!   validation. Messages name the entry and show the node as scheme://host:port only
//!   (`eip155.base (https://node.example/…): …`): paths often hold API keys.
//! - Nothing the node says goes into a receipt unchecked: before a confirmation counts, the
//!   node must still be on the chain, its receipt must be for our transaction and agree with
//!   the transaction's block, the transaction it returns must hash to the hash we signed and
//!   carry our root, the block it returns for the receipt's height must be the receipt's block
//!   (else it was reorged out, and is followed), and its head must not be below that block. The sender is recovered from the signature, not taken from the
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
pub mod fees;
mod sent;
mod verify;

pub use self::config::{DEFAULT_BUMP_AFTER, EvmSpec, EvmTarget};
use self::fees::{Fees, Next};
use self::sent::Sent;
pub use self::verify::{Checks, EvmAttestation, verify_attestation, verify_receipt};
use super::locks::SendLocks;
use super::{BoxFuture, Driver, ProgressSink, entry_label};
use crate::clock::Clock;
use crate::model::digest::to_hex;
use crate::model::{
    AnchorError, AnchorRequest, Attestation, Confirmation, ErrorClass, Pending, PendingFee, Recovery, Submitted,
};

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
    /// When replacements are due.
    clock: Arc<dyn Clock>,
}

impl EvmDriver {
    /// A driver for the entry `eip155.<name>`.
    pub fn new(name: &str, target: &EvmTarget, locks: Arc<SendLocks>, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let key = target.key.expose();
        let key_bytes = crate::model::digest::parse_hex32(key.strip_prefix("0x").unwrap_or(key))
            .ok_or("key is not a 32-byte hex private key")?;
        let signer = PrivateKeySigner::from_bytes(&B256::from(key_bytes))
            .map_err(|_| "key is not a valid secp256k1 private key")?;
        let provider = connect(target.rpc_url.expose())?;
        let label = entry_label("eip155", name, target.rpc_url.expose());
        Ok(Self { label, target: target.clone(), signer, provider, locks, clock })
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

    /// Sends signed bytes. A node that already holds them counts as sent.
    async fn send_raw(&self, raw: &[u8]) -> Result<(), SendRefused> {
        match self.provider.send_raw_transaction(raw).await {
            Ok(_) => Ok(()),
            Err(e) => match rpc_message(&e) {
                Some(m) if m.contains("already known") || m.contains("already imported") => Ok(()),
                Some(m) if m.contains("nonce too low") => Err(SendRefused::NonceUsed),
                Some(m) if is_fee_refusal(&m) => Err(SendRefused::Fee(self.failed(&e, "eth_sendRawTransaction"))),
                _ => Err(SendRefused::Other(self.failed(&e, "eth_sendRawTransaction"))),
            },
        }
    }

    /// The node's current fee suggestion.
    async fn suggested(&self) -> Result<Fees, AnchorError> {
        let fees = self.provider.estimate_eip1559_fees().await.map_err(|e| self.failed(&e, "fee estimation"))?;
        let limit = u128::from(u64::MAX);
        if fees.max_fee_per_gas > limit || fees.max_priority_fee_per_gas > limit {
            return Err(self.untrusted("the node suggests a fee above 18 billion gwei per gas"));
        }
        Ok(Fees { max_fee: fees.max_fee_per_gas, tip: fees.max_priority_fee_per_gas })
    }

    async fn head(&self) -> Result<u64, AnchorError> {
        self.provider.get_block_number().await.map_err(|e| self.failed(&e, "eth_blockNumber"))
    }

    /// Signs `tx` (whose nonce and fees are set), the signed bytes and their hash.
    fn sign(&self, mut tx: TxEip1559) -> Result<(B256, Vec<u8>, TxEip1559), AnchorError> {
        let signature = self
            .signer
            .sign_transaction_sync(&mut tx)
            .map_err(|e| self.fail(ErrorClass::Unknown, format!("signing failed: {e}")))?;
        let envelope = TxEnvelope::from(tx.clone().into_signed(signature));
        Ok((*envelope.tx_hash(), envelope.encoded_2718(), tx))
    }

    /// Signs a transaction with the next nonce, records it, sends it. Holds the sender's
    /// nonce lock throughout so concurrent anchors get distinct nonces.
    async fn sign_record_send(
        &self,
        req: &AnchorRequest,
        chain_id: u64,
        progress: &dyn ProgressSink,
    ) -> Result<(Sent, bool), AnchorError> {
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
        let (fees, capped) = fees::first(self.suggested().await?, self.target.max_fee_per_gas);
        let lock = self.locks.get(&format!("eip155:{chain_id}#{from:#x}"));
        let _sending = lock.lock().await;
        for _ in 0..3 {
            let nonce = self
                .provider
                .get_transaction_count(from)
                .pending()
                .await
                .map_err(|e| self.failed(&e, "eth_getTransactionCount"))?;
            let height = self.head().await?;
            let (hash, raw, tx) = self.sign(TxEip1559 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: fees.max_fee,
                max_priority_fee_per_gas: fees.tip,
                to: TxKind::Call(to),
                value: U256::ZERO,
                access_list: Default::default(),
                input: input.clone(),
            })?;
            let sent = Sent::first(hash, raw, tx, from, self.clock.wall_ms(), height);
            progress.record(sent.to_json()).await?;
            match self.send_raw(&sent.raw).await {
                Ok(()) => return Ok((sent, capped)),
                // Another process used this nonce meanwhile: ask the node again.
                Err(SendRefused::NonceUsed) => continue,
                // Over the cap the network takes nothing now: the recorded transaction waits
                // at the cap and is sent again as fees drop.
                Err(SendRefused::Fee(_)) if capped => return Ok((sent, true)),
                Err(SendRefused::Fee(e) | SendRefused::Other(e)) => return Err(e),
            }
        }
        Err(self.fail(ErrorClass::Network, "could not find a free nonce in three tries"))
    }

    /// Follows an attempt's recorded transactions: one mined is looked at (see
    /// [`Self::mined`]); none mined, the latest is replaced at a higher fee once `bumpAfter`
    /// has passed, or sent again (the same bytes, refilling its nonce) when every pool lost
    /// it. `Dropped` only when another transaction took the nonce. Without `progress` (a
    /// recovery), nothing new is signed: the next look replaces it.
    async fn follow(
        &self,
        req: &AnchorRequest,
        sent: &Sent,
        before: Option<&Pending>,
        progress: Option<&dyn ProgressSink>,
    ) -> Result<Confirmation, AnchorError> {
        // The node behind the URL may have changed since the transaction was sent.
        let chain_id = self.check_chain(req).await.map_err(|e| AnchorError::uncertain(e.class, e.message))?;
        if let Some(found) = self.any_mined(req, chain_id, sent).await? {
            return Ok(found);
        }
        let query = |e: RpcError<TransportErrorKind>, what: &str| {
            let e = self.failed(&e, what);
            AnchorError::uncertain(e.class, e.message)
        };
        let at_cap = before.and_then(|p| p.fee.as_ref()).is_some_and(|f| f.at_cap);
        let waiting = |sent: &Sent, at_cap: bool| Confirmation::Waiting(self.pending_for(req, chain_id, sent, at_cap));
        let in_pool =
            self.provider.get_transaction_by_hash(sent.hash).await.map_err(|e| query(e, "eth_getTransactionByHash"))?;
        let height = self.provider.get_block_number().await.map_err(|e| query(e, "eth_blockNumber"))?;
        if in_pool.is_some() {
            let due = self.target.bump_after.due(sent.sent_ms, self.clock.wall_ms(), sent.sent_height, Some(height));
            return match progress {
                Some(progress) if due => self.replace(req, chain_id, sent, height, progress).await,
                _ => Ok(waiting(sent, at_cap)),
            };
        }
        // In no pool the node knows, and not mined: its nonce is free again, or taken.
        if sent.raw.is_empty() {
            return Ok(Confirmation::Dropped(format!(
                "{}: transaction {:#x} is neither mined nor in the node's mempool",
                self.label, sent.hash
            )));
        }
        let from = sent.from.unwrap_or_else(|| self.signer.address());
        let used = self
            .provider
            .get_transaction_count(from)
            .latest()
            .await
            .map_err(|e| query(e, "eth_getTransactionCount"))?;
        let nonce = sent.nonce().unwrap_or(u64::MAX);
        if used > nonce {
            // One of ours may have been mined since we looked: look once more.
            if let Some(found) = self.any_mined(req, chain_id, sent).await? {
                return Ok(found);
            }
            return Ok(Confirmation::Dropped(format!(
                "{}: nonce {nonce} was used by another transaction; none of the attempt's {} was mined",
                self.label,
                sent.replaced.len() + 1
            )));
        }
        // Its nonce is free: a gap that holds up every later transaction of this sender. A
        // pending anchor seen gone is dropped, so the scheduler counts it and sends it again
        // (as a first send, below); one waiting at the fee cap is offered again on every look.
        if before.is_some() && !at_cap {
            return Ok(Confirmation::Dropped(format!(
                "{}: transaction {:#x} is neither mined nor in the node's mempool; its nonce {nonce} is free",
                self.label, sent.hash
            )));
        }
        match self.send_raw(&sent.raw).await {
            Ok(()) | Err(SendRefused::NonceUsed) => Ok(waiting(sent, at_cap)),
            // The network asks more than it offers (the base fee rose past its fee cap): a
            // new offer, at once, as the old one is in no pool to wait in.
            // Without a sink (a recovery) nothing new may be signed: say it is in no pool, so
            // the attempt goes on as a send, which follows it here again and replaces it.
            Err(SendRefused::Fee(e)) => match progress {
                Some(progress) => self.replace(req, chain_id, sent, height, progress).await,
                None => Ok(Confirmation::Dropped(format!("{}; it is in no pool", e.message))),
            },
            Err(SendRefused::Other(e)) => Err(AnchorError::uncertain(e.class, e.message)),
        }
    }

    /// The first of the attempt's transactions the node has a receipt for, looked at.
    async fn any_mined(
        &self,
        req: &AnchorRequest,
        chain_id: u64,
        sent: &Sent,
    ) -> Result<Option<Confirmation>, AnchorError> {
        for hash in sent.hashes() {
            let receipt = self.provider.get_transaction_receipt(hash).await.map_err(|e| {
                let e = self.failed(&e, "eth_getTransactionReceipt");
                AnchorError::uncertain(e.class, e.message)
            })?;
            if let Some(receipt) = receipt {
                let pending = Pending {
                    data: json!({"chainId": chain_id, "txHash": format!("{hash:#x}"), "nonce": sent.nonce()}),
                    ..self.pending_for(req, chain_id, sent, false)
                };
                return self.mined(req, hash, receipt, &pending).await.map(Some);
            }
        }
        Ok(None)
    }

    /// Replaces the latest transaction with one offering more (see [`fees::bumped`]): signed,
    /// recorded, then sent. At the cap, nothing new: it waits for fees to drop.
    async fn replace(
        &self,
        req: &AnchorRequest,
        chain_id: u64,
        sent: &Sent,
        height: u64,
        progress: &dyn ProgressSink,
    ) -> Result<Confirmation, AnchorError> {
        let (Some(tx), Some(current)) = (sent.tx.clone(), sent.fees()) else {
            return Err(self.untrusted("the recorded transaction is not an EIP-1559 transaction"));
        };
        let cap = fees::cap(self.target.max_fee_per_gas, sent.first_max_fee.unwrap_or(current.max_fee));
        let suggested = self.suggested().await.map_err(|e| AnchorError::uncertain(e.class, e.message))?;
        let next = match fees::bumped(current, suggested, cap) {
            Next::AtCap => return Ok(Confirmation::Waiting(self.pending_for(req, chain_id, sent, true))),
            Next::Replace(next) => next,
        };
        let (hash, raw, tx) =
            self.sign(TxEip1559 { max_fee_per_gas: next.max_fee, max_priority_fee_per_gas: next.tip, ..tx })?;
        let replacement = sent.replaced_by(hash, raw, tx, self.clock.wall_ms(), height);
        progress.record(replacement.to_json()).await?;
        let at_cap = matches!(fees::bumped(next, suggested, cap), Next::AtCap);
        match self.send_raw(&replacement.raw).await {
            // Taken: a mined one of ours turns up on the next look.
            Ok(()) | Err(SendRefused::NonceUsed) => {
                Ok(Confirmation::Waiting(self.pending_for(req, chain_id, &replacement, at_cap)))
            }
            // Still too little for this network: it stays recorded, is sent again on the
            // next look, and raised again from there.
            Err(SendRefused::Fee(_)) if at_cap => {
                Ok(Confirmation::Waiting(self.pending_for(req, chain_id, &replacement, true)))
            }
            Err(SendRefused::Fee(e) | SendRefused::Other(e)) => Err(AnchorError::uncertain(e.class, e.message)),
        }
    }

    /// Where a mined transaction stands. A failed query says nothing about the anchor itself,
    /// so its error is never a refusal; a reverted transaction is. Every answer that goes
    /// into the attestation is checked first (see the module docs).
    async fn mined(
        &self,
        req: &AnchorRequest,
        hash: B256,
        receipt: alloy::rpc::types::TransactionReceipt,
        pending: &Pending,
    ) -> Result<Confirmation, AnchorError> {
        let query = |e: RpcError<TransportErrorKind>, what: &str| {
            let e = self.failed(&e, what);
            AnchorError::uncertain(e.class, e.message)
        };
        let chain_id = self.expected_chain(req)?;
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
        // The block at that height on the node's chain now: a block that was reorged out
        // may still be found by its hash.
        let block = self
            .provider
            .get_block_by_number(block_number.into())
            .await
            .map_err(|e| query(e, "eth_getBlockByNumber"))?
            .ok_or_else(|| self.untrusted(format!("block {block_number} disappeared")))?;
        if block.header.number != block_number {
            return Err(self.untrusted(format!(
                "asked for block {block_number}, the node answered block {}",
                block.header.number
            )));
        }
        if block.header.hash != block_hash {
            // Reorged out between the receipt and this call: it is followed on the next look.
            return Ok(Confirmation::Waiting(Pending { depth: 0, ..pending.clone() }));
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

    /// The pending anchor of `sent`'s latest transaction, not yet mined.
    fn pending_for(&self, req: &AnchorRequest, chain_id: u64, sent: &Sent, at_cap: bool) -> Pending {
        let fee = sent.fees().map(|f| PendingFee {
            unit: "wei/gas".into(),
            rate: sent::wei(f.max_fee),
            tip: Some(sent::wei(f.tip)),
            cap: Some(sent::wei(fees::cap(self.target.max_fee_per_gas, sent.first_max_fee.unwrap_or(f.max_fee)))),
            replacements: u32::try_from(sent.replaced.len()).unwrap_or(u32::MAX),
            at_cap,
            sent_ms: sent.sent_ms,
            sent_height: sent.sent_height,
        });
        Pending {
            data: json!({"chainId": chain_id, "txHash": format!("{:#x}", sent.hash), "nonce": sent.nonce()}),
            required: self.required(req),
            depth: 0,
            poll_ms: self.poll_ms(),
            fee,
        }
    }
}

/// Why a node did not take a transaction.
enum SendRefused {
    /// Its nonce is used: a transaction with it is mined.
    NonceUsed,
    /// It offers too little: under the base fee, or under the replacement rule.
    Fee(AnchorError),
    /// Anything else.
    Other(AnchorError),
}

/// Whether a node's refusal is about the fee offered (geth, Nethermind, Besu and anvil words).
fn is_fee_refusal(message: &str) -> bool {
    ["underpriced", "fee cap", "less than block base fee", "fee too low", "max fee per gas", "feecap"]
        .iter()
        .any(|w| message.contains(w))
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

/// What the attempt recorded before sending, if anything readable.
fn recorded(progress: Option<&serde_json::Value>) -> Option<Sent> {
    progress.and_then(Sent::read)
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
            // A recorded transaction is followed first: sent again as it is, or found mined,
            // so a drop or a lost answer never turns into a second anchor.
            if let Some(sent) = recorded(req.progress.as_ref()) {
                match self.follow(req, &sent, None, Some(progress)).await? {
                    Confirmation::Confirmed(att) => return Ok(Submitted::Anchored(att)),
                    Confirmation::Waiting(p) => return Ok(Submitted::Pending(p)),
                    Confirmation::Rejected(e) => return Err(e),
                    // Its nonce went to another transaction: it can never land.
                    Confirmation::Dropped(_) => {}
                }
            }
            let (sent, at_cap) = self.sign_record_send(req, chain_id, progress).await?;
            Ok(Submitted::Pending(self.pending_for(req, chain_id, &sent, at_cap)))
        })
    }

    fn recover<'a>(&'a self, req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        Box::pin(async move {
            // Nothing recorded: nothing was sent (the transaction is recorded before sending).
            let Some(sent) = recorded(req.progress.as_ref()) else {
                return match req.progress {
                    None => Recovery::NotDone,
                    Some(_) => {
                        Recovery::Later(self.fail(ErrorClass::Unknown, "the recorded transaction is unreadable"))
                    }
                };
            };
            match self.follow(req, &sent, None, None).await {
                Ok(Confirmation::Confirmed(att)) => Recovery::Done(att),
                Ok(Confirmation::Waiting(p)) => Recovery::Pending(p),
                // Reverted, or its nonce went to another transaction: nothing anchored, a new
                // transaction may be sent.
                Ok(Confirmation::Rejected(_) | Confirmation::Dropped(_)) => Recovery::NotDone,
                // The node cannot tell now: sending anything could make a second anchor.
                Err(e) => Recovery::Later(e),
            }
        })
    }

    fn confirm<'a>(
        &'a self,
        req: &'a AnchorRequest,
        pending: &'a Pending,
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
        Box::pin(async move {
            // The record is the truth: it holds a replacement recorded after this pending
            // anchor was (a stop between the record and the send leaves them apart).
            let sent = recorded(req.progress.as_ref())
                .or_else(|| Sent::hash_only(&pending.data))
                .ok_or_else(|| self.fail(ErrorClass::Unknown, "pending anchor without a transaction hash"))?;
            self.follow(req, &sent, Some(pending), Some(progress)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::new(0))
    }

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
            bump_after: config::DEFAULT_BUMP_AFTER,
            max_fee_per_gas: None,
            aggregate: None,
            concurrency: None,
        };
        let d = EvmDriver::new("default", &target, Arc::default(), clock()).expect("driver");
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
            EvmDriver::new("c", &EvmTarget { contract: Some([1; 20]), ..target }, Arc::default(), clock())
                .expect("driver");
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
            bump_after: config::DEFAULT_BUMP_AFTER,
            max_fee_per_gas: None,
            aggregate: None,
            concurrency: None,
        };
        let e = EvmDriver::new("d", &target, Arc::default(), clock()).err().expect("zero is not a key");
        assert!(!e.contains("0000000000"), "{e}");
    }
}
