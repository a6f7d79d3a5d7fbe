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
//! # Fee bumping (replace-by-fee)
//! With `maxFeeRate` set, a transaction still unmined `bumpAfter` after it was sent (a time,
//! or a number of blocks; six by default) is replaced at a higher fee through the wallet, and
//! so on until one is mined or the next raise would pass `maxFeeRate`: then it waits at the
//! cap (`Pending.fee.at_cap`) and lands when fees drop. Without `maxFeeRate` nothing is ever
//! replaced. How the new rate is chosen is in `fee.rs`; funding asks for confirmed coins only (`minconf`),
//! since bitcoind refuses to bump a transaction whose change another one already spends.
//!
//! A replacement is made with `psbtbumpfee` (at an explicit `fee_rate`), signed by
//! `walletprocesspsbt` and extracted by `finalizepsbt`: none of these broadcasts anything or
//! changes the wallet. Its bytes are checked (our OP_RETURN, and every coin the replaced
//! transaction spends), recorded with every earlier txid of the attempt, and only then sent
//! with `sendrawtransaction` — the same order as the first send, so a crash between the
//! record and the send leaves a transaction the next look finds or sends again byte for byte.
//! `bumpfee` is not used: it broadcasts before it returns, so a crash right after it would
//! leave a replacement nobody recorded, findable only through wallet metadata
//! (`replaced_by_txid`) that a restored wallet backup lacks.
//!
//! Each replacement spends every coin the transaction it replaces spends (bitcoind's
//! feebumper keeps all inputs), so at most one of an attempt's transactions can ever be
//! mined: that is what keeps an anchor exactly-once while several versions of it are out
//! there. Whichever of them is mined completes the attempt, and the receipt names that one —
//! the original too, if a miner took it before its replacement. A transaction the wallet
//! itself says replaced one of ours (`replaced_by_txid`, e.g. an operator's `bumpfee`) is
//! followed as ours as well.
//!
//! # Confirmations
//! An anchor is final once `gettransaction` reports at least `confirmations` (the cadence's,
//! else the entry's; 1 = mined) for one of the attempt's transactions. Until then it is
//! pending, looked at every `pollInterval`, newest transaction first. With `confirmations: 0`
//! it is final once broadcast, and the receipt has no block fields. Our own replacement
//! conflicting with an earlier transaction is not a drop. The attempt is *dropped* (the
//! scheduler sends again, once: the latest recorded transaction, as it is) when every one of
//! its transactions the wallet knows is conflicted (negative confirmations: a double spend
//! that is none of ours was mined), or when none is mined or in the node's mempool
//! (`getmempoolentry` answers -5, e.g. evicted, or reorged out and not re-accepted) — and the
//! wallet, asked again after the mempool, still reports none mined (a block may have mined
//! one between the wallet's first answer and the mempool's). Dropped wallet transactions are
//! abandoned (`abandontransaction`) so the wallet frees their coins and never rebroadcasts
//! them beside the re-send. A mined transaction reorged back into the mempool is followed
//! again from 0 confirmations.
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
//! recorded txids) rather than replaced. A failed replacement leaves the anchor pending: the
//! transaction it would have replaced still waits, and the next look tries again. Messages
//! name the entry and the node as scheme://host:port (`btc.default (http://127.0.0.1:8332): …`).
//!
//! # What is checked
//! Nothing the node says goes into a receipt unless it agrees with what was sent. The txid
//! and outputs of the signed transaction are read from its bytes here, not taken from
//! `decoderawtransaction`; before a confirmation counts, the wallet's `gettransaction` must
//! name our txid, its `hex` must be our transaction carrying our OP_RETURN, and the block it
//! names must be in the active chain at the height and time it says, as deep as required. An answer that fails a
//! check is looked at again later, never recorded.

mod attempt;
mod config;
mod fee;
mod rpc;
mod tx;
mod verify;

use std::sync::Arc;

use serde_json::{Value, json};

use self::attempt::{Attempt, Current, Mined, Recorded, Seen, Standing, WalletView};
pub use self::config::{BtcAuth, BtcSpec, BtcTarget, DEFAULT_BUMP_AFTER};
use self::fee::NextRate;
use self::rpc::{CallError, Rpc, code};
pub use self::verify::{BtcAttestation, verify_attestation, verify_receipt};
use super::locks::{SendLock, SendLocks};
use super::{BoxFuture, Driver, ProgressSink};
use crate::clock::{Clock, WallMs};
use crate::config::bump::BumpAfter;
use crate::model::digest::{parse_hex32, to_hex};
use crate::model::{
    AnchorError, AnchorRequest, Attestation, Confirmation, ErrorClass, Pending, PendingFee, Recovery, Submitted,
};

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

/// Most transactions an attempt follows beyond those it recorded: replacements the wallet says
/// it made itself (`replaced_by_txid`).
const MAX_FOLLOWED: usize = 8;

/// When a transaction was sent: wall-clock ms and the chain height then, as `bumpAfter`
/// counts them.
type SentAt = (Option<WallMs>, Option<u64>);

/// Anchors roots in OP_RETURN outputs through one bitcoind wallet.
pub struct BtcDriver {
    /// `btc.<entry> (<host>)`, the start of every message.
    label: String,
    chain: String,
    confirmations: u32,
    fee_rate: Option<f64>,
    /// `maxFeeRate` in sat/kvB; `None`: never replace.
    cap: Option<u64>,
    bump_after: BumpAfter,
    poll_ms: u64,
    rpc: Rpc,
    send_lock: SendLock,
    /// Stamps each send, for `bumpAfter`.
    clock: Arc<dyn Clock>,
}

impl BtcDriver {
    /// A driver for the entry `btc.<name>`; `locks` serialises sends per wallet, and `clock`
    /// tells when a transaction has waited `bumpAfter`.
    pub fn new(name: &str, target: &BtcTarget, locks: &SendLocks, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let rpc = Rpc::new(target.rpc_url.expose(), Some(target.auth.clone()), target.wallet.as_deref())?;
        let send_lock =
            locks.get(&format!("btc:{}#{}", target.rpc_url.expose(), target.wallet.as_deref().unwrap_or("")));
        Ok(Self {
            label: super::entry_label("btc", name, target.rpc_url.expose()),
            chain: target.chain.clone(),
            confirmations: target.confirmations,
            fee_rate: target.fee_rate,
            cap: target.max_fee_rate.map(fee::per_kvb),
            bump_after: target.bump_after,
            poll_ms: u64::try_from(target.poll_interval.as_millis()).unwrap_or(u64::MAX),
            rpc,
            send_lock,
            clock,
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

    /// The node must be on the configured chain: anchoring on another is worthless. Returns
    /// the height of its tip, which `bumpAfter` counts blocks from.
    async fn check_chain(&self) -> Result<Option<u64>, AnchorError> {
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
        Ok(info["blocks"].as_u64())
    }

    /// Whether the node's mempool holds `txid`.
    async fn in_mempool(&self, txid: &str) -> Result<bool, CallError> {
        match self.rpc.call("getmempoolentry", json!([txid])).await {
            Ok(_) => Ok(true),
            Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where the attempt whose transactions are `txids` (oldest first) stands. Transactions
    /// the wallet says replaced one of them are added to `txids`.
    ///
    /// The newest is looked at first: it is the one waiting, as a rule, and if an older one
    /// was mined, every newer one conflicts with that block and has left the mempool, so the
    /// look goes on to the older ones. For each, the wallet's view first, then the mempool's.
    ///
    /// The answers are not one snapshot: a block can take a transaction out of the mempool
    /// between them. So when no transaction is mined or waiting, the wallet is asked again,
    /// and its second answers decide. bitcoind brings the wallet up to the chain tip before
    /// answering a wallet call, so those answers already count the block that took one out of
    /// the mempool, if one did: it is mined then. Only then does a conflict mean a double
    /// spend that is none of ours: with one of ours mined, that one would have been found.
    async fn survey(&self, txids: &mut Vec<String>) -> Result<Standing, AnchorError> {
        let mut followed = 0;
        let mut i = txids.len();
        while i > 0 {
            i -= 1;
            let seen = self.wallet_view(&txids[i]).await?;
            if let Some(next) = seen.replaced_by.as_ref().filter(|t| !txids.contains(t))
                && followed < MAX_FOLLOWED
            {
                followed += 1;
                txids.push(next.clone());
                i = txids.len();
                continue;
            }
            match &seen.view {
                WalletView::Mined(m) => return Ok(Standing::Mined(m.clone(), seen)),
                WalletView::Conflicted(_) => {}
                WalletView::Unknown | WalletView::Unconfirmed => {
                    if self.in_mempool(&seen.txid).await.map_err(|e| self.fail("getmempoolentry", &e))? {
                        return Ok(Standing::Live(seen));
                    }
                }
            }
        }
        let mut conflict = None;
        let mut in_wallet = Vec::new();
        for txid in txids.iter().rev() {
            let seen = self.wallet_view(txid).await?;
            match &seen.view {
                WalletView::Mined(m) => return Ok(Standing::Mined(m.clone(), seen)),
                WalletView::Conflicted(blocks) => {
                    conflict.get_or_insert((seen.txid, *blocks));
                }
                WalletView::Unconfirmed => in_wallet.push(seen.txid),
                WalletView::Unknown => {}
            }
        }
        Ok(match conflict {
            Some((txid, blocks)) if in_wallet.is_empty() => Standing::Conflicted { txid, blocks },
            _ => Standing::Gone { in_wallet },
        })
    }

    /// What the wallet (`gettransaction`) says of `txid`.
    async fn wallet_view(&self, txid: &str) -> Result<Seen, AnchorError> {
        let unknown =
            || Seen { txid: txid.to_string(), view: WalletView::Unknown, fee: None, hex: None, replaced_by: None };
        let tx = match self.rpc.wallet("gettransaction", json!([txid])).await {
            Ok(tx) => tx,
            Err(e) if e.is(code::INVALID_ADDRESS_OR_KEY) => return Ok(unknown()),
            Err(e) => return Err(self.fail("gettransaction", &e)),
        };
        if let Some(other) = txid_of(&tx["txid"]).filter(|t| t != txid) {
            return Err(self.untrusted(format!("asked the wallet for transaction {txid}, it answered {other}")));
        }
        let confirmations =
            tx["confirmations"].as_i64().ok_or_else(|| self.bad_answer("gettransaction", "confirmations"))?;
        let hex = tx["hex"].as_str().map(str::to_string);
        let seen = |view| Seen {
            txid: txid.to_string(),
            view,
            fee: fee::sats(&tx["fee"]),
            hex: hex.clone(),
            replaced_by: txid_of(&tx["replaced_by_txid"]),
        };
        if confirmations < 0 {
            return Ok(seen(WalletView::Conflicted(confirmations)));
        }
        if confirmations == 0 {
            return Ok(seen(WalletView::Unconfirmed));
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
        Ok(seen(WalletView::Mined(Mined {
            confirmations: u32::try_from(confirmations).unwrap_or(u32::MAX),
            block_hash,
            height,
            block_time,
            hex: hex.clone(),
        })))
    }

    /// The transaction `seen` as the one an anchor waits on: its rate from the wallet, else
    /// from the last look or the record.
    fn current(&self, seen: &Seen, pending: Option<&Pending>, attempt: &Attempt) -> Current {
        let same = |p: &&Pending| txid_of(&p.data["txid"]).as_deref() == Some(seen.txid.as_str());
        let record = attempt.record.as_ref().filter(|r| r.txid == seen.txid);
        let rate = seen
            .rate()
            .or_else(|| pending.filter(same).and_then(|p| p.fee.as_ref()).map(|f| f.rate))
            .or_else(|| record.and_then(|r| r.rate))
            .unwrap_or(0);
        let hex = seen.hex.clone().or_else(|| record.map(|r| r.hex.clone()));
        Current { txid: seen.txid.clone(), rate, hex }
    }

    /// Now, as `bumpAfter` counts from a send.
    fn sent_now(&self, tip: Option<u64>) -> SentAt {
        (Some(self.clock.wall_ms()), tip)
    }

    /// When `txid` was sent, as the last look recorded it; a transaction the last look did
    /// not wait on counts from now.
    fn sent_at(&self, pending: &Pending, txid: &str, tip: Option<u64>) -> SentAt {
        match &pending.fee {
            Some(f) if txid_of(&pending.data["txid"]).as_deref() == Some(txid) => (f.sent_ms, f.sent_height),
            _ => self.sent_now(tip),
        }
    }

    fn fee(&self, rate: u64, replacements: u32, at_cap: bool, (sent_ms, sent_height): SentAt) -> PendingFee {
        PendingFee {
            unit: "sat/kvB".into(),
            rate,
            tip: None,
            cap: self.cap,
            replacements,
            at_cap,
            sent_ms,
            sent_height,
        }
    }

    fn pending(&self, txid: &str, required: u32, depth: u32, fee: PendingFee) -> Pending {
        Pending {
            data: json!({"txid": txid, "chain": self.chain}),
            required,
            depth,
            poll_ms: self.poll_ms,
            fee: Some(fee),
        }
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

    /// Broadcast (or found `depth` deep): final at once without required confirmations, else
    /// pending.
    fn sent(
        &self,
        req: &AnchorRequest,
        current: &Current,
        replacements: u32,
        depth: u32,
        tip: Option<u64>,
    ) -> Submitted {
        match self.required(req) {
            0 => Submitted::Anchored(self.attestation(&current.txid, &req.root, None)),
            required => {
                let fee = self.fee(current.rate, replacements, false, self.sent_now(tip));
                Submitted::Pending(self.pending(&current.txid, required, depth, fee))
            }
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
        let tip = self.check_chain().await?;
        // A transaction recorded for this attempt may be out there: send that very one again
        // rather than a second anchor, unless the node refuses it for good.
        if let Some(recorded) = Recorded::from_progress(req.progress.as_ref()) {
            let replacements = u32::try_from(recorded.replaced.len()).unwrap_or(u32::MAX);
            match self.broadcast(&recorded.hex).await {
                Ok(None) => return Ok(self.sent(req, &Current::of_record(&recorded), replacements, 0, tip)),
                // Refused — perhaps because an earlier transaction of the attempt holds its
                // coins: then that one is the anchor, and a new one would be a second.
                Ok(Some(_refused)) if !recorded.replaced.is_empty() => {
                    let mut attempt = Attempt::new(req.progress.as_ref(), None);
                    match self.survey(&mut attempt.txids).await? {
                        Standing::Mined(m, seen) => {
                            let current = self.current(&seen, None, &attempt);
                            let n = attempt.replacements(&seen.txid);
                            return Ok(self.sent(req, &current, n, m.confirmations, tip));
                        }
                        Standing::Live(seen) => {
                            let current = self.current(&seen, None, &attempt);
                            return Ok(self.sent(req, &current, attempt.replacements(&seen.txid), 0, tip));
                        }
                        Standing::Conflicted { .. } | Standing::Gone { .. } => {}
                    }
                }
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
        let mut options = serde_json::Map::new();
        if let Some(rate) = self.fee_rate {
            options.insert("fee_rate".into(), json!(rate));
        }
        // A transaction whose change another one spends cannot be bumped ("Transaction has
        // descendants in the wallet"): while bumping is on, spend confirmed coins only.
        if self.cap.is_some() {
            options.insert("minconf".into(), json!(1));
        }
        let params = if options.is_empty() { json!([raw]) } else { json!([raw, options]) };
        let funded =
            self.rpc.wallet("fundrawtransaction", params).await.map_err(|e| self.fail("fundrawtransaction", &e))?;
        let paid = fee::sats(&funded["fee"]);
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
        let record = Recorded {
            txid,
            hex: hex.to_string(),
            rate: paid.map(|f| fee::rate_of(f, parsed.vsize)),
            replaced: Vec::new(),
        };
        progress.record(record.to_json()).await?;
        match self.broadcast(hex).await {
            Ok(None) => Ok(self.sent(req, &Current::of_record(&record), 0, 0, tip)),
            Ok(Some(e)) | Err(e) => Err(self.fail("sendrawtransaction", &e)),
        }
    }

    async fn confirm_pending(
        &self,
        req: &AnchorRequest,
        pending: &Pending,
        progress: &dyn ProgressSink,
    ) -> Result<Confirmation, AnchorError> {
        let txid = txid_of(&pending.data["txid"]).ok_or_else(|| {
            AnchorError::new(ErrorClass::Unknown, format!("{}: the pending anchor has no txid", self.label))
        })?;
        let tip = self.check_chain().await?;
        let required = self.required(req);
        let mut attempt = Attempt::new(req.progress.as_ref(), Some(&txid));
        match self.survey(&mut attempt.txids).await? {
            Standing::Mined(m, seen) if m.confirmations >= required => {
                self.check_mined(&seen.txid, &req.root, &m, required).await?;
                Ok(Confirmation::Confirmed(self.attestation(&seen.txid, &req.root, Some(&m))))
            }
            Standing::Mined(m, seen) => {
                let current = self.current(&seen, Some(pending), &attempt);
                let sent = self.sent_at(pending, &seen.txid, tip);
                let fee = self.fee(current.rate, attempt.replacements(&seen.txid), false, sent);
                Ok(Confirmation::Waiting(self.pending(&seen.txid, required, m.confirmations, fee)))
            }
            Standing::Live(seen) => self.waiting(req, pending, &attempt, &seen, tip, progress).await,
            Standing::Conflicted { txid, blocks } => Ok(Confirmation::Dropped(format!(
                "{}: transaction {txid} conflicts with one mined {} block(s) ago",
                self.label,
                blocks.unsigned_abs()
            ))),
            Standing::Gone { in_wallet } if !in_wallet.is_empty() => {
                let mut failed = Vec::new();
                for t in &in_wallet {
                    if let Err(e) = self.rpc.wallet("abandontransaction", json!([t])).await {
                        failed.push((t, e));
                    }
                }
                let abandoned = match &failed[..] {
                    [] => "abandoned in the wallet".to_string(),
                    [(_, e)] if in_wallet.len() == 1 => format!("could not be abandoned in the wallet: {e}"),
                    _ => {
                        let each = failed.iter().map(|(t, e)| format!("{t} could not be abandoned in the wallet: {e}"));
                        each.collect::<Vec<_>>().join("; ")
                    }
                };
                let which = match &in_wallet[..] {
                    [one] => format!("transaction {one} is"),
                    many => format!("transactions {} are", many.join(", ")),
                };
                Ok(Confirmation::Dropped(format!(
                    "{}: {which} no longer in the node's mempool and not mined ({abandoned})",
                    self.label
                )))
            }
            Standing::Gone { .. } if pending.depth == 0 => Ok(Confirmation::Dropped(format!(
                "{}: transaction {txid} is neither in the wallet nor in the node's mempool",
                self.label
            ))),
            // It was mined and now nobody knows it: more likely the wrong wallet or node than a
            // drop, so keep waiting rather than send a second anchor.
            Standing::Gone { .. } => Err(AnchorError::new(
                ErrorClass::Unknown,
                format!(
                    "{}: transaction {txid} had {} confirmation(s) and is now unknown to the wallet and mempool; is the right wallet loaded?",
                    self.label, pending.depth
                ),
            )),
        }
    }

    /// One of the attempt's transactions (`seen`) waits in the mempool. A replacement recorded
    /// after it that the node does not have (the process stopped between the record and the
    /// send) is sent now, byte for byte. Then the waiting one is replaced at a higher fee once
    /// it has waited `bumpAfter`, within the cap.
    async fn waiting(
        &self,
        req: &AnchorRequest,
        pending: &Pending,
        attempt: &Attempt,
        seen: &Seen,
        tip: Option<u64>,
        progress: &dyn ProgressSink,
    ) -> Result<Confirmation, AnchorError> {
        let (live, sent) = match attempt.recorded_after(&seen.txid) {
            Some(recorded) => match self.broadcast(&recorded.hex).await {
                Ok(None) => (Current::of_record(recorded), self.sent_now(tip)),
                Ok(Some(e)) | Err(e) => {
                    return Err(AnchorError::new(
                        e.class(),
                        format!(
                            "{}: sendrawtransaction: the recorded replacement {} was not accepted ({e}); transaction {} still waits in the mempool",
                            self.label, recorded.txid, seen.txid
                        ),
                    ));
                }
            },
            None => (self.current(seen, Some(pending), attempt), self.sent_at(pending, &seen.txid, tip)),
        };
        let required = self.required(req);
        if required == 0 {
            return Ok(Confirmation::Confirmed(self.attestation(&live.txid, &req.root, None)));
        }
        let replacements = attempt.replacements(&live.txid);
        let wait = |at_cap| {
            let fee = self.fee(live.rate, replacements, at_cap, sent);
            Ok(Confirmation::Waiting(self.pending(&live.txid, required, 0, fee)))
        };
        let Some(cap) = self.cap else { return wait(false) };
        if !self.bump_after.due(sent.0, self.clock.wall_ms(), sent.1, tip) {
            return wait(false);
        }
        // No raise the wallet accepts fits under the cap: no need to ask the node.
        if live.rate.saturating_add(fee::WALLET_INCREMENTAL) > cap {
            return wait(true);
        }
        // Bumping may add coins: not while another anchor through this wallet picks its own.
        let _one_at_a_time = self.send_lock.lock().await;
        let incremental = self.incremental_fee().await?;
        let estimate = self.estimate().await?;
        match fee::next_rate(live.rate, estimate, incremental, cap) {
            NextRate::AtCap => wait(true),
            NextRate::Raise(rate) => {
                let replacement = self.replace(req, attempt, &live, rate, progress).await?;
                let n = u32::try_from(attempt.txids.len()).unwrap_or(u32::MAX);
                let fee = self.fee(replacement.rate, n, false, self.sent_now(tip));
                Ok(Confirmation::Waiting(self.pending(&replacement.txid, required, 0, fee)))
            }
        }
    }

    /// The node's incremental relay fee (sat/kvB), which a replacement's extra fee must pay
    /// for its own size.
    async fn incremental_fee(&self) -> Result<u64, AnchorError> {
        let info = self.rpc.call("getnetworkinfo", json!([])).await.map_err(|e| self.fail("getnetworkinfo", &e))?;
        Ok(fee::sats(&info["incrementalfee"]).unwrap_or(fee::WALLET_INCREMENTAL))
    }

    /// The node's fee estimate (sat/kvB) for [`fee::CONF_TARGET`] blocks, if it has one (a node
    /// without enough history has none).
    async fn estimate(&self) -> Result<Option<u64>, AnchorError> {
        match self.rpc.call("estimatesmartfee", json!([fee::CONF_TARGET])).await {
            Ok(answer) => Ok(fee::sats(&answer["feerate"])),
            Err(CallError::Rpc { .. }) => Ok(None),
            Err(e) => Err(self.fail("estimatesmartfee", &e)),
        }
    }

    /// Replaces `live` at `rate` (sat/kvB): builds and signs the replacement without
    /// broadcasting it, checks it, records it with every earlier txid of the attempt, and
    /// only then sends it.
    async fn replace(
        &self,
        req: &AnchorRequest,
        attempt: &Attempt,
        live: &Current,
        rate: u64,
        progress: &dyn ProgressSink,
    ) -> Result<Current, AnchorError> {
        let bumped = self
            .rpc
            .wallet("psbtbumpfee", json!([live.txid, {"fee_rate": fee::fee_rate_option(rate)}]))
            .await
            .map_err(|e| self.fail("psbtbumpfee", &e))?;
        let psbt = bumped["psbt"].as_str().ok_or_else(|| self.bad_answer("psbtbumpfee", "a PSBT"))?;
        let processed = self
            .rpc
            .wallet("walletprocesspsbt", json!([psbt]))
            .await
            .map_err(|e| self.fail("walletprocesspsbt", &e))?;
        let psbt = processed["psbt"].as_str().ok_or_else(|| self.bad_answer("walletprocesspsbt", "a PSBT"))?;
        let finalized =
            self.rpc.call("finalizepsbt", json!([psbt])).await.map_err(|e| self.fail("finalizepsbt", &e))?;
        let hex = match (&finalized["complete"], finalized["hex"].as_str()) {
            (Value::Bool(true), Some(hex)) => hex.to_string(),
            _ => {
                return Err(AnchorError::new(
                    ErrorClass::Validation,
                    format!(
                        "{}: the wallet could not sign every input of the replacement of transaction {}; is it watch-only, or locked?",
                        self.label, live.txid
                    ),
                ));
            }
        };
        let parsed = from_hex(&hex)
            .and_then(|b| tx::parse(&b))
            .ok_or_else(|| self.bad_answer("finalizepsbt", "a readable transaction"))?;
        let refused = |why: &str| {
            AnchorError::new(
                ErrorClass::Validation,
                format!("{}: the replacement of transaction {} {why}; nothing was sent", self.label, live.txid),
            )
        };
        if !parsed.carries(&anchor_data(&req.root)) {
            return Err(refused("lost its OP_RETURN output"));
        }
        match live.hex.as_deref().and_then(from_hex).and_then(|b| tx::parse(&b)) {
            Some(original) if original.txid == parsed.txid => return Err(refused("is the transaction itself")),
            Some(original) if !parsed.spends_all_of(&original) => {
                return Err(refused("does not spend every coin the transaction spends, so both could be mined"));
            }
            Some(_) => {}
            None => {
                return Err(self.untrusted(format!(
                    "the wallet gave no readable bytes for transaction {}, so a replacement cannot be checked",
                    live.txid
                )));
            }
        }
        let record = Recorded {
            rate: Some(fee::sats(&bumped["fee"]).map_or(rate, |f| fee::rate_of(f, parsed.vsize))),
            txid: parsed.txid,
            hex,
            replaced: attempt.txids.clone(),
        };
        progress.record(record.to_json()).await?;
        match self.broadcast(&record.hex).await {
            Ok(None) => Ok(Current::of_record(&record)),
            Ok(Some(e)) | Err(e) => Err(self.fail("sendrawtransaction", &e)),
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
        let tip = match self.check_chain().await {
            Ok(tip) => tip,
            Err(e) => return later(e),
        };
        let required = self.required(req);
        let mut attempt = Attempt::new(Some(progress), None);
        let done_or_pending = |current: &Current, attempt: &Attempt| match required {
            0 => Recovery::Done(self.attestation(&current.txid, &req.root, None)),
            _ => {
                let fee = self.fee(current.rate, attempt.replacements(&current.txid), false, self.sent_now(tip));
                Recovery::Pending(self.pending(&current.txid, required, 0, fee))
            }
        };
        match self.survey(&mut attempt.txids).await {
            // The node cannot tell now: ask again later rather than send anything.
            Err(e) => later(e),
            Ok(Standing::Mined(m, seen)) if m.confirmations >= required => {
                match self.check_mined(&seen.txid, &req.root, &m, required).await {
                    Ok(()) => Recovery::Done(self.attestation(&seen.txid, &req.root, Some(&m))),
                    Err(e) => later(e),
                }
            }
            Ok(Standing::Mined(m, seen)) => {
                let current = self.current(&seen, None, &attempt);
                let fee = self.fee(current.rate, attempt.replacements(&seen.txid), false, self.sent_now(tip));
                Recovery::Pending(self.pending(&seen.txid, required, m.confirmations, fee))
            }
            // A replacement recorded after the waiting one may never have reached the node:
            // the same bytes again. Refused, the waiting one (also ours) is the anchor.
            Ok(Standing::Live(seen)) => match attempt.recorded_after(&seen.txid) {
                Some(recorded) => match self.broadcast(&recorded.hex).await {
                    Ok(None) => done_or_pending(&Current::of_record(recorded), &attempt),
                    Ok(Some(_refused)) => done_or_pending(&self.current(&seen, None, &attempt), &attempt),
                    Err(e) => later(self.fail("sendrawtransaction", &e)),
                },
                None => done_or_pending(&self.current(&seen, None, &attempt), &attempt),
            },
            // A double spend was mined: none of these can ever be; a new one is needed.
            Ok(Standing::Conflicted { .. }) => Recovery::NotDone,
            // Never reached the node, or lost: the same bytes again (same txid) are safe.
            Ok(Standing::Gone { .. }) => match self.broadcast(&recorded.hex).await {
                Ok(None) => done_or_pending(&Current::of_record(&recorded), &attempt),
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
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
        Box::pin(self.confirm_pending(req, pending, progress))
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
        assert_eq!(ok, Some(Recorded { txid: txid.to_string(), hex: hex.into(), rate: None, replaced: vec![] }));
        assert_eq!(Recorded::from_progress(Some(&json!({"txid": "ab", "hex": hex}))), None);
        assert_eq!(Recorded::from_progress(Some(&json!({"txid": txid, "hex": "xyz"}))), None);
        assert_eq!(Recorded::from_progress(Some(&json!({"txid": "ab".repeat(32), "hex": hex}))), None, "another txid");
        assert_eq!(Recorded::from_progress(None), None);
    }

    #[test]
    fn a_record_keeps_every_txid_of_the_attempt_and_a_damaged_list_is_unreadable() {
        let hex = "0100000001c997a5e56e104102fa209c6a852dd90660a20b2d9c352423edce25857fcd3704000000004847304402204e45e16932b8af514961a1d3a1a25fdf3f4f7732e9d624c6c61548ab5fb8cd410220181522ec8eca07de4860a4acdd12909d831cc56cbbac4622082221a8768d1d0901ffffffff0200ca9a3b00000000434104ae1a62fe09c5f51b13905f07f06b99a2f7159b2225f374cd378d71302fa28414e7aab37397f554a7df5f142c21c1b7303b8a0626f1baded5c72a704f7e6cd84cac00286bee0000000043410411db93e1dcdb8a016b49840f8c53bc1eb68a382e97b1482ecad7b148a6909a5cb2e0eaddfb84ccf9744464f82e160bfa9b8b64f9d4c03f999b8643f656b412a3ac00000000";
        let txid = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16";
        let (first, later) = ("aa".repeat(32), "bb".repeat(32));
        let record = Recorded { txid: txid.into(), hex: hex.into(), rate: Some(7_000), replaced: vec![first.clone()] };
        let progress = record.to_json();
        assert_eq!(progress, json!({"txid": txid, "hex": hex, "rate": 7_000, "replaced": [first]}));
        assert_eq!(Recorded::from_progress(Some(&progress)), Some(record));
        for damaged in [json!("x"), json!(["zz"]), json!([1])] {
            let mut p = progress.clone();
            p["replaced"] = damaged;
            assert_eq!(Recorded::from_progress(Some(&p)), None, "{p}");
        }
        // The transaction the last look waited on counts too, after those recorded.
        let attempt = Attempt::new(Some(&progress), Some(&later));
        assert_eq!(attempt.txids, vec![first.clone(), txid.to_string(), later.clone()]);
        assert_eq!((attempt.replacements(&first), attempt.replacements(txid), attempt.replacements(&later)), (0, 1, 2));
        assert!(attempt.recorded_after(&first).is_some() && attempt.recorded_after(txid).is_none());
        assert_eq!(Attempt::new(None, Some(txid)).txids, vec![txid.to_string()], "nothing readable recorded");
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
