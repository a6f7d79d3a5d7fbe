//! `btc:<name>`: anchors a root in an OP_RETURN output through a bitcoind wallet's JSON-RPC.
//!
//! # What is sent
//! One transaction per anchor whose only non-change output is `OP_RETURN <VMSH ‖ root>`: the
//! 4-byte marker `VMSH` (0x564d5348) followed by the 32 root bytes. It is built with
//! `createrawtransaction` (no inputs, one `data` output), paid for by `fundrawtransaction`
//! (with `fee_rate` in sat/vB when `feeRate` is configured, else the wallet's estimate),
//! signed by `signrawtransactionwithwallet` (which must report `complete`); its txid is read
//! from its bytes, and `decoderawtransaction` must agree. The signed transaction and its txid are recorded
//! durably (the progress sink) *before* `sendrawtransaction`, so after a crash the very same
//! transaction is looked up or broadcast again — same txid, never a second anchor. Wallet
//! calls go to `/wallet/<name>` when `wallet` is configured. Before anything is built, the
//! node must report (`getblockchaininfo`) the configured chain.
//!
//! Funding to sending runs under one lock per wallet, so namespaces anchoring through one
//! wallet at once never pick the same coins (which would make the second transaction a
//! conflicting double spend the mempool rejects).
//!
//! # Confirmations
//! An anchor is final once `gettransaction` reports at least `confirmations` (the cadence's,
//! else the entry's; 1 = mined). Until then it is pending, looked at every `pollInterval`.
//! With `confirmations: 0` it is final once broadcast, and the receipt has no block fields.
//! It is *dropped* (the scheduler sends a new one, once) when the wallet reports it
//! conflicted (negative confirmations: a double spend was mined) or when it has 0
//! confirmations and is no longer in the node's mempool (`getmempoolentry` answers -5,
//! e.g. evicted, or reorged out and not re-accepted) — and the wallet, asked again after the
//! mempool, still reports 0 confirmations (a block may have mined it between the wallet's
//! first answer and the mempool's). A dropped wallet transaction is abandoned
//! (`abandontransaction`) so the wallet frees its coins and never rebroadcasts it beside its
//! replacement.
//!
//! # Receipts
//! The attestation holds `chain`, `txid`, `blockHash`, `height`, `blockTime` (Unix seconds;
//! also the anchor time), `data` (hex of marker ‖ root) and `confirmations` (at finality).
//! [`verify_attestation`] re-checks one against a node.
//!
//! # Error classes
//! | what happened | class |
//! |---|---|
//! | connection refused or reset, timeout, HTTP 5xx without a JSON-RPC error | network |
//! | RPC -28 (warming up), -10 (initial block download), -9 (no peers); cookie file missing (bitcoind deletes it when it stops) | network |
//! | HTTP 401 / 403; RPC -13 / -14 (wallet locked); cookie file unreadable | auth |
//! | RPC -4 (insufficient funds, wallet error), -6, -25 (inputs missing or spent), -26 (rejected by the mempool), -27, and errors about the request (-3, -5, -8, -18, -19, -22, -32600…-32700); wrong chain; a signature the wallet cannot complete; non-JSON-RPC HTTP 4xx (wrong URL) | validation |
//! | anything else (e.g. -1, -32603, an answer of the wrong shape) | unknown |
//!
//! Network and unknown failures may have anchored: the attempt is resumed (looked up by its
//! recorded txid) rather than replaced. Messages name the entry and the node as
//! scheme://host:port (`btc.default (http://127.0.0.1:8332): …`).
//!
//! # What is checked
//! Nothing the node says goes into a receipt unless it agrees with what was sent. The txid
//! and outputs of the signed transaction are read from its bytes here, not taken from
//! `decoderawtransaction`; before a confirmation counts, the wallet's `gettransaction` must
//! name our txid, its `hex` must be our transaction carrying our OP_RETURN, and the block it
//! names must be in the active chain at the height and time it says, as deep as required. An answer that fails a
//! check is looked at again later, never recorded.

mod config;
mod rpc;
mod tx;
mod verify;

use serde_json::{Value, json};

pub use self::config::{BtcAuth, BtcSpec, BtcTarget, DEFAULT_BUMP_AFTER};
use self::rpc::{CallError, Rpc, code};
pub use self::verify::{BtcAttestation, verify_attestation, verify_receipt};
use super::locks::{SendLock, SendLocks};
use super::{BoxFuture, Driver, ProgressSink};
use crate::model::digest::{parse_hex32, to_hex};
use crate::model::{AnchorError, AnchorRequest, Attestation, Confirmation, ErrorClass, Pending, Recovery, Submitted};

/// The 4 bytes before the root in the OP_RETURN output: ASCII `VMSH`.
pub const MARKER: [u8; 4] = *b"VMSH";

/// The OP_RETURN data anchoring `root`: [`MARKER`] followed by the root.
pub fn anchor_data(root: &[u8; 32]) -> [u8; 36] {
    let mut data = [0u8; 36];
    data[..4].copy_from_slice(&MARKER);
    data[4..].copy_from_slice(root);
    data
}

/// The data of an `OP_RETURN <push>` output script (hex), or `None` for any other script.
/// Exactly one push must follow OP_RETURN, covering the rest of the script.
pub fn op_return_data(script_hex: &str) -> Option<Vec<u8>> {
    let script = from_hex(script_hex)?;
    let (&op_return, rest) = script.split_first()?;
    if op_return != 0x6a {
        return None;
    }
    let (&op, rest) = rest.split_first()?;
    let (len, data) = match op {
        0x01..=0x4b => (usize::from(op), rest),
        0x4c => {
            let (&n, data) = rest.split_first()?;
            (usize::from(n), data)
        }
        0x4d => {
            let (n, data) = rest.split_at_checked(2)?;
            (usize::from(u16::from_le_bytes([n[0], n[1]])), data)
        }
        _ => return None,
    };
    (data.len() == len).then(|| data.to_vec())
}

/// Parses an even number of hex digits.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Whether a decoded transaction (bitcoind's `vout` shape) has an OP_RETURN output carrying
/// exactly `data`; returns that output's index.
fn output_carrying(decoded: &Value, data: &[u8]) -> Option<u64> {
    decoded["vout"].as_array()?.iter().enumerate().find_map(|(i, out)| {
        let script = out["scriptPubKey"]["hex"].as_str()?;
        let n = out["n"].as_u64().unwrap_or(i as u64);
        (op_return_data(script)? == data).then_some(n)
    })
}

/// A txid as bitcoind writes it: 64 hex digits, lower case.
fn txid_of(value: &Value) -> Option<String> {
    value.as_str().filter(|s| parse_hex32(s).is_some()).map(str::to_ascii_lowercase)
}

/// The transaction recorded before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    txid: String,
    hex: String,
}

impl Recorded {
    /// The record, if it is readable and its bytes are the transaction its txid names.
    fn from_progress(progress: Option<&Value>) -> Option<Self> {
        let p = progress?;
        let txid = txid_of(&p["txid"])?;
        let hex = p["hex"].as_str()?.to_string();
        let parsed = tx::parse(&from_hex(&hex)?)?;
        (parsed.txid == txid).then_some(Self { txid, hex })
    }
}

/// The block a transaction is in, as the wallet says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mined {
    confirmations: u32,
    block_hash: String,
    height: u64,
    block_time: i64,
    /// The transaction's bytes as the wallet has them (`gettransaction`'s `hex`).
    hex: Option<String>,
}

/// Where a transaction stands, as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TxState {
    /// In a block of the active chain.
    Mined(Mined),
    /// Waiting in the mempool.
    InMempool,
    /// Conflicted: a double spend was mined that many blocks ago.
    Conflicted(i64),
    /// Neither mined nor in the mempool; `in_wallet` if the wallet still lists it.
    Gone {
        /// The wallet lists it (with 0 confirmations).
        in_wallet: bool,
    },
}

/// What the wallet says of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WalletView {
    /// It does not list it.
    Unknown,
    /// It lists it with 0 confirmations: only the mempool can tell whether it still waits.
    Unconfirmed,
    /// Mined or conflicted.
    Settled(TxState),
}

/// Anchors roots in OP_RETURN outputs through one bitcoind wallet.
pub struct BtcDriver {
    /// `btc.<entry> (<host>)`, the start of every message.
    label: String,
    chain: String,
    confirmations: u32,
    fee_rate: Option<f64>,
    poll_ms: u64,
    rpc: Rpc,
    send_lock: SendLock,
}

impl BtcDriver {
    /// A driver for the entry `btc.<name>`; `locks` serialises sends per wallet.
    pub fn new(name: &str, target: &BtcTarget, locks: &SendLocks) -> Result<Self, String> {
        let rpc = Rpc::new(target.rpc_url.expose(), Some(target.auth.clone()), target.wallet.as_deref())?;
        let send_lock =
            locks.get(&format!("btc:{}#{}", target.rpc_url.expose(), target.wallet.as_deref().unwrap_or("")));
        Ok(Self {
            label: super::entry_label("btc", name, target.rpc_url.expose()),
            chain: target.chain.clone(),
            confirmations: target.confirmations,
            fee_rate: target.fee_rate,
            poll_ms: u64::try_from(target.poll_interval.as_millis()).unwrap_or(u64::MAX),
            rpc,
            send_lock,
        })
    }

    fn required(&self, req: &AnchorRequest) -> u32 {
        req.confirmations.unwrap_or(self.confirmations)
    }

    fn fail(&self, method: &str, e: &CallError) -> AnchorError {
        AnchorError::new(e.class(), format!("{}: {method}: {e}", self.label))
    }

    fn bad_answer(&self, method: &str, what: &str) -> AnchorError {
        AnchorError::new(ErrorClass::Unknown, format!("{}: {method} answered without {what}", self.label))
    }

    /// An answer that contradicts what was sent or what the node said before: nothing is
    /// recorded from it, and the anchor is looked at again later.
    fn untrusted(&self, what: impl std::fmt::Display) -> AnchorError {
        AnchorError::uncertain(ErrorClass::Unknown, format!("{}: {what}; looking again later", self.label))
    }

    /// Checks what the node says of a mined transaction against what was sent: the wallet's
    /// bytes are our transaction (`txid`) and carry `root`, and the block it names is in the
    /// active chain at the height and with the time the wallet gave, at least `required`
    /// blocks deep and at least as deep as the wallet says.
    async fn check_mined(&self, txid: &str, root: &[u8; 32], m: &Mined, required: u32) -> Result<(), AnchorError> {
        let parsed = m.hex.as_deref().and_then(from_hex).and_then(|b| tx::parse(&b));
        match parsed {
            Some(p) if p.txid != txid => {
                return Err(
                    self.untrusted(format!("the wallet's bytes for transaction {txid} are transaction {}", p.txid))
                );
            }
            Some(p) if !p.carries(&anchor_data(root)) => {
                return Err(self.untrusted(format!(
                    "the wallet's transaction {txid} has no OP_RETURN output carrying VMSH and this root"
                )));
            }
            Some(_) => {}
            None => return Err(self.untrusted(format!("gettransaction {txid} answered without readable hex"))),
        }
        let header = self
            .rpc
            .call("getblockheader", json!([m.block_hash]))
            .await
            .map_err(|e| self.fail("getblockheader", &e))?;
        let (height, time, depth) =
            (header["height"].as_u64(), header["time"].as_i64(), header["confirmations"].as_i64());
        if txid_of(&header["hash"]).is_some_and(|h| h != m.block_hash)
            || height != Some(m.height)
            || time != Some(m.block_time)
            || depth.is_none_or(|d| d < 1)
        {
            return Err(self.untrusted(format!(
                "block {} is not in the active chain at height {} with time {}, as the wallet says",
                m.block_hash, m.height, m.block_time
            )));
        }
        // A block can only have come on top since the wallet answered, never gone: a chain
        // shorter than the wallet's count means the wallet overstated it, and the receipt
        // would carry its number.
        if depth.is_none_or(|d| d < i64::from(required.max(1)) || d < i64::from(m.confirmations)) {
            return Err(self.untrusted(format!(
                "block {} has {} confirmation(s) in the node's chain, not the {} the wallet says",
                m.block_hash,
                depth.unwrap_or_default(),
                m.confirmations
            )));
        }
        Ok(())
    }

    /// The node must be on the configured chain: anchoring on another is worthless.
    async fn check_chain(&self) -> Result<(), AnchorError> {
        let info =
            self.rpc.call("getblockchaininfo", json!([])).await.map_err(|e| self.fail("getblockchaininfo", &e))?;
        let chain = info["chain"].as_str().ok_or_else(|| self.bad_answer("getblockchaininfo", "a chain"))?;
        if chain != self.chain {
            return Err(AnchorError::new(
                ErrorClass::Validation,
                format!(
                    "{}: the node is on chain {chain:?}, not {:?} as configured (network); point rpcUrl at a {} node",
                    self.label, self.chain, self.chain
                ),
            ));
        }
        Ok(())
    }

    /// Whether the node's mempool holds `txid`.
    async fn in_mempool(&self, txid: &str) -> Result<bool, CallError> {
        match self.rpc.call("getmempoolentry", json!([txid])).await {
            Ok(_) => Ok(true),
            Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where `txid` stands: the wallet's view first, then the mempool's.
    ///
    /// The two answers are not one snapshot: a block can take the transaction out of the
    /// mempool between them. So when the mempool does not hold it, the wallet is asked again,
    /// and its second answer decides. bitcoind brings the wallet up to the chain tip before
    /// answering a wallet call, so that answer already counts the block that took it out of
    /// the mempool, if one did: it is mined (or conflicted) then, and only gone if the
    /// wallet still reports 0 confirmations.
    async fn look(&self, txid: &str) -> Result<TxState, AnchorError> {
        if let WalletView::Settled(state) = self.wallet_view(txid).await? {
            return Ok(state);
        }
        if self.in_mempool(txid).await.map_err(|e| self.fail("getmempoolentry", &e))? {
            return Ok(TxState::InMempool);
        }
        Ok(match self.wallet_view(txid).await? {
            WalletView::Settled(state) => state,
            WalletView::Unconfirmed => TxState::Gone { in_wallet: true },
            WalletView::Unknown => TxState::Gone { in_wallet: false },
        })
    }

    /// What the wallet (`gettransaction`) says of `txid`.
    async fn wallet_view(&self, txid: &str) -> Result<WalletView, AnchorError> {
        let tx = match self.rpc.wallet("gettransaction", json!([txid])).await {
            Ok(tx) => tx,
            Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => return Ok(WalletView::Unknown),
            Err(e) => return Err(self.fail("gettransaction", &e)),
        };
        if let Some(other) = txid_of(&tx["txid"]).filter(|t| t != txid) {
            return Err(self.untrusted(format!("asked the wallet for transaction {txid}, it answered {other}")));
        }
        let confirmations =
            tx["confirmations"].as_i64().ok_or_else(|| self.bad_answer("gettransaction", "confirmations"))?;
        if confirmations < 0 {
            return Ok(WalletView::Settled(TxState::Conflicted(confirmations)));
        }
        if confirmations == 0 {
            return Ok(WalletView::Unconfirmed);
        }
        let block_hash =
            txid_of(&tx["blockhash"]).ok_or_else(|| self.bad_answer("gettransaction", "the block hash"))?;
        let (height, block_time) = match (tx["blockheight"].as_u64(), tx["blocktime"].as_i64()) {
            (Some(h), Some(t)) => (h, t),
            // Older nodes do not report the height: the header has it.
            _ => {
                let header = self
                    .rpc
                    .call("getblockheader", json!([block_hash]))
                    .await
                    .map_err(|e| self.fail("getblockheader", &e))?;
                let h = header["height"].as_u64().ok_or_else(|| self.bad_answer("getblockheader", "a height"))?;
                let t = header["time"].as_i64().ok_or_else(|| self.bad_answer("getblockheader", "a time"))?;
                (h, t)
            }
        };
        Ok(WalletView::Settled(TxState::Mined(Mined {
            confirmations: u32::try_from(confirmations).unwrap_or(u32::MAX),
            block_hash,
            height,
            block_time,
            hex: tx["hex"].as_str().map(str::to_string),
        })))
    }

    fn pending(&self, txid: &str, required: u32, depth: u32) -> Pending {
        Pending { data: json!({"txid": txid, "chain": self.chain}), required, depth, poll_ms: self.poll_ms, fee: None }
    }

    fn attestation(&self, txid: &str, root: &[u8; 32], mined: Option<&Mined>) -> Attestation {
        let data = to_hex(&anchor_data(root));
        match mined {
            Some(m) => Attestation {
                data: json!({
                    "chain": self.chain,
                    "txid": txid,
                    "blockHash": m.block_hash,
                    "height": m.height,
                    "blockTime": m.block_time,
                    "data": data,
                    "confirmations": m.confirmations,
                }),
                anchored_at: Some(m.block_time.saturating_mul(1000)),
            },
            None => Attestation {
                data: json!({"chain": self.chain, "txid": txid, "data": data, "confirmations": 0}),
                anchored_at: None,
            },
        }
    }

    /// Broadcast: final at once without required confirmations, else pending.
    fn sent(&self, req: &AnchorRequest, txid: &str) -> Submitted {
        match self.required(req) {
            0 => Submitted::Anchored(self.attestation(txid, &req.root, None)),
            required => Submitted::Pending(self.pending(txid, required, 0)),
        }
    }

    /// Broadcasts a signed transaction: `Ok(None)` once the node has it (accepted now, or
    /// already in its mempool or chain), `Ok(Some(why))` when the node refuses it for good
    /// (inputs spent or missing, rejected by the mempool).
    async fn broadcast(&self, hex: &str) -> Result<Option<CallError>, CallError> {
        match self.rpc.call("sendrawtransaction", json!([hex])).await {
            Ok(_) => Ok(None),
            Err(e) if e.is(code::VERIFY_ALREADY_IN_CHAIN) => Ok(None),
            // Older nodes answer a repeat with "txn-already-in-mempool" / "txn-already-known".
            Err(CallError::Rpc { code: code::VERIFY_REJECTED, message }) if message.contains("already") => Ok(None),
            Err(e) if e.is(code::VERIFY_ERROR) || e.is(code::VERIFY_REJECTED) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    async fn anchor_root(&self, req: &AnchorRequest, progress: &dyn ProgressSink) -> Result<Submitted, AnchorError> {
        self.check_chain().await?;
        // A transaction recorded for this attempt may be out there: send that very one again
        // rather than a second anchor, unless the node refuses it for good.
        if let Some(recorded) = Recorded::from_progress(req.progress.as_ref()) {
            match self.broadcast(&recorded.hex).await {
                Ok(None) => return Ok(self.sent(req, &recorded.txid)),
                Ok(Some(_refused)) => {}
                Err(e) => return Err(self.fail("sendrawtransaction", &e)),
            }
        }
        let _one_at_a_time = self.send_lock.lock().await;
        let data = anchor_data(&req.root);
        let raw = self
            .rpc
            .call("createrawtransaction", json!([[], [{"data": to_hex(&data)}]]))
            .await
            .map_err(|e| self.fail("createrawtransaction", &e))?;
        let raw = raw.as_str().ok_or_else(|| self.bad_answer("createrawtransaction", "a transaction"))?;
        let params = match self.fee_rate {
            Some(rate) => json!([raw, {"fee_rate": rate}]),
            None => json!([raw]),
        };
        let funded =
            self.rpc.wallet("fundrawtransaction", params).await.map_err(|e| self.fail("fundrawtransaction", &e))?;
        let funded = funded["hex"].as_str().ok_or_else(|| self.bad_answer("fundrawtransaction", "a transaction"))?;
        let signed = self
            .rpc
            .wallet("signrawtransactionwithwallet", json!([funded]))
            .await
            .map_err(|e| self.fail("signrawtransactionwithwallet", &e))?;
        if signed["complete"] != Value::Bool(true) {
            let why = signed["errors"][0]["error"].as_str().unwrap_or("no reason given");
            return Err(AnchorError::new(
                ErrorClass::Validation,
                format!("{}: the wallet could not sign every input ({why}); is it watch-only, or locked?", self.label),
            ));
        }
        let hex =
            signed["hex"].as_str().ok_or_else(|| self.bad_answer("signrawtransactionwithwallet", "a transaction"))?;
        let parsed = from_hex(hex)
            .and_then(|b| tx::parse(&b))
            .ok_or_else(|| self.bad_answer("signrawtransactionwithwallet", "a readable transaction"))?;
        let decoded = self
            .rpc
            .call("decoderawtransaction", json!([hex]))
            .await
            .map_err(|e| self.fail("decoderawtransaction", &e))?;
        let txid = parsed.txid.clone();
        if txid_of(&decoded["txid"]).as_deref() != Some(txid.as_str()) {
            return Err(AnchorError::new(
                ErrorClass::Validation,
                format!(
                    "{}: decoderawtransaction gives another txid than the signed transaction's bytes ({txid}); nothing was sent",
                    self.label
                ),
            ));
        }
        if !parsed.carries(&data) {
            return Err(AnchorError::new(
                ErrorClass::Validation,
                format!("{}: the signed transaction {txid} lost its OP_RETURN output; nothing was sent", self.label),
            ));
        }
        progress.record(json!({"txid": txid, "hex": hex})).await?;
        match self.broadcast(hex).await {
            Ok(None) => Ok(self.sent(req, &txid)),
            Ok(Some(e)) | Err(e) => Err(self.fail("sendrawtransaction", &e)),
        }
    }

    async fn confirm_pending(&self, req: &AnchorRequest, pending: &Pending) -> Result<Confirmation, AnchorError> {
        let txid = txid_of(&pending.data["txid"]).ok_or_else(|| {
            AnchorError::new(ErrorClass::Unknown, format!("{}: the pending anchor has no txid", self.label))
        })?;
        self.check_chain().await?;
        let required = self.required(req);
        match self.look(&txid).await? {
            TxState::Mined(m) if m.confirmations >= required => {
                self.check_mined(&txid, &req.root, &m, required).await?;
                Ok(Confirmation::Confirmed(self.attestation(&txid, &req.root, Some(&m))))
            }
            TxState::Mined(m) => Ok(Confirmation::Waiting(self.pending(&txid, required, m.confirmations))),
            TxState::InMempool if required == 0 => {
                Ok(Confirmation::Confirmed(self.attestation(&txid, &req.root, None)))
            }
            TxState::InMempool => Ok(Confirmation::Waiting(self.pending(&txid, required, 0))),
            TxState::Conflicted(n) => Ok(Confirmation::Dropped(format!(
                "{}: transaction {txid} conflicts with one mined {} block(s) ago",
                self.label,
                n.unsigned_abs()
            ))),
            TxState::Gone { in_wallet: true } => {
                let abandoned = match self.rpc.wallet("abandontransaction", json!([txid])).await {
                    Ok(_) => "abandoned in the wallet".to_string(),
                    Err(e) => format!("could not be abandoned in the wallet: {e}"),
                };
                Ok(Confirmation::Dropped(format!(
                    "{}: transaction {txid} is no longer in the node's mempool and not mined ({abandoned})",
                    self.label
                )))
            }
            TxState::Gone { in_wallet: false } if pending.depth == 0 => Ok(Confirmation::Dropped(format!(
                "{}: transaction {txid} is neither in the wallet nor in the node's mempool",
                self.label
            ))),
            // It was mined and now nobody knows it: more likely the wrong wallet or node than a
            // drop, so keep waiting rather than send a second anchor.
            TxState::Gone { in_wallet: false } => Err(AnchorError::new(
                ErrorClass::Unknown,
                format!(
                    "{}: transaction {txid} had {} confirmation(s) and is now unknown to the wallet and mempool; is the right wallet loaded?",
                    self.label, pending.depth
                ),
            )),
        }
    }

    async fn recover_attempt(&self, req: &AnchorRequest) -> Recovery {
        let Some(progress) = req.progress.as_ref() else { return Recovery::NotDone };
        let later = |e: AnchorError| Recovery::Later(AnchorError::uncertain(e.class, e.message));
        // A damaged record cannot be looked up, and sending anew could make a second anchor.
        let Some(recorded) = Recorded::from_progress(Some(progress)) else {
            return later(AnchorError::new(
                ErrorClass::Unknown,
                format!("{}: the recorded transaction is unreadable", self.label),
            ));
        };
        if let Err(e) = self.check_chain().await {
            return later(e);
        }
        let required = self.required(req);
        match self.look(&recorded.txid).await {
            // The node cannot tell now: ask again later rather than send anything.
            Err(e) => later(e),
            Ok(TxState::Mined(m)) if m.confirmations >= required => {
                match self.check_mined(&recorded.txid, &req.root, &m, required).await {
                    Ok(()) => Recovery::Done(self.attestation(&recorded.txid, &req.root, Some(&m))),
                    Err(e) => later(e),
                }
            }
            Ok(TxState::Mined(m)) => Recovery::Pending(self.pending(&recorded.txid, required, m.confirmations)),
            Ok(TxState::InMempool) if required == 0 => {
                Recovery::Done(self.attestation(&recorded.txid, &req.root, None))
            }
            Ok(TxState::InMempool) => Recovery::Pending(self.pending(&recorded.txid, required, 0)),
            // A double spend was mined: this transaction can never be; a new one is needed.
            Ok(TxState::Conflicted(_)) => Recovery::NotDone,
            // Never reached the node, or lost: the same bytes again (same txid) are safe.
            Ok(TxState::Gone { .. }) => match self.broadcast(&recorded.hex).await {
                Ok(None) if required == 0 => Recovery::Done(self.attestation(&recorded.txid, &req.root, None)),
                Ok(None) => Recovery::Pending(self.pending(&recorded.txid, required, 0)),
                Ok(Some(_refused)) => Recovery::NotDone,
                Err(e) => later(self.fail("sendrawtransaction", &e)),
            },
        }
    }
}

impl Driver for BtcDriver {
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(self.anchor_root(req, progress))
    }

    fn recover<'a>(&'a self, req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        Box::pin(self.recover_attempt(req))
    }

    fn confirm<'a>(
        &'a self,
        req: &'a AnchorRequest,
        pending: &'a Pending,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
        Box::pin(self.confirm_pending(req, pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_data_is_the_marker_then_the_root() {
        let data = anchor_data(&[0xab; 32]);
        assert_eq!(&data[..4], &[0x56, 0x4d, 0x53, 0x48]);
        assert_eq!(&data[4..], &[0xab; 32]);
    }

    #[test]
    fn op_return_scripts_are_read_exactly() {
        let data = to_hex(&anchor_data(&[1; 32]));
        assert_eq!(op_return_data(&format!("6a24{data}")).map(|d| to_hex(&d)), Some(data.clone()));
        assert_eq!(op_return_data(&format!("6a4c24{data}")).map(|d| to_hex(&d)), Some(data.clone()));
        assert_eq!(op_return_data(&format!("6a4d2400{data}")).map(|d| to_hex(&d)), Some(data.clone()));
        // Wrong length, trailing bytes, another opcode, not hex.
        assert_eq!(op_return_data(&format!("6a23{data}")), None);
        assert_eq!(op_return_data(&format!("6a24{data}00")), None);
        assert_eq!(op_return_data(&format!("0014{}", "00".repeat(20))), None);
        assert_eq!(op_return_data("6a2"), None);
        assert_eq!(op_return_data("6a"), None);
        assert_eq!(op_return_data("zz"), None);
    }

    #[test]
    fn recorded_progress_needs_a_txid_and_the_bytes_it_names() {
        // Bitcoin's first person-to-person transaction.
        let hex = "0100000001c997a5e56e104102fa209c6a852dd90660a20b2d9c352423edce25857fcd3704000000004847304402204e45e16932b8af514961a1d3a1a25fdf3f4f7732e9d624c6c61548ab5fb8cd410220181522ec8eca07de4860a4acdd12909d831cc56cbbac4622082221a8768d1d0901ffffffff0200ca9a3b00000000434104ae1a62fe09c5f51b13905f07f06b99a2f7159b2225f374cd378d71302fa28414e7aab37397f554a7df5f142c21c1b7303b8a0626f1baded5c72a704f7e6cd84cac00286bee0000000043410411db93e1dcdb8a016b49840f8c53bc1eb68a382e97b1482ecad7b148a6909a5cb2e0eaddfb84ccf9744464f82e160bfa9b8b64f9d4c03f999b8643f656b412a3ac00000000";
        let txid = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16";
        let ok = Recorded::from_progress(Some(&json!({"txid": txid.to_uppercase(), "hex": hex})));
        assert_eq!(ok, Some(Recorded { txid: txid.to_string(), hex: hex.into() }));
        assert_eq!(Recorded::from_progress(Some(&json!({"txid": "ab", "hex": hex}))), None);
        assert_eq!(Recorded::from_progress(Some(&json!({"txid": txid, "hex": "xyz"}))), None);
        assert_eq!(Recorded::from_progress(Some(&json!({"txid": "ab".repeat(32), "hex": hex}))), None, "another txid");
        assert_eq!(Recorded::from_progress(None), None);
    }

    #[test]
    fn the_output_carrying_the_data_is_found_wherever_the_wallet_put_it() {
        let data = anchor_data(&[9; 32]);
        let decoded = json!({"vout": [
            {"n": 0, "scriptPubKey": {"hex": format!("0014{}", "11".repeat(20))}},
            {"n": 1, "scriptPubKey": {"hex": format!("6a24{}", to_hex(&data))}},
        ]});
        assert_eq!(output_carrying(&decoded, &data), Some(1));
        assert_eq!(output_carrying(&decoded, &anchor_data(&[8; 32])), None);
    }
}
