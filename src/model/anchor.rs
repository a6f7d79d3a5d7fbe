//! What an anchor attempt is made of and how it ends, as every part of the scheduler speaks of
//! it: the request, the error and its class, a pending anchor, the proof.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::digest::to_hex;
use super::receipt::Inclusion;
use super::time::WallMs;
use super::{CadenceKind, Target};

/// What kind of failure an anchor attempt hit; decides the backoff multiplier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// The target could not be reached or timed out.
    Network,
    /// The target refused our credentials.
    Auth,
    /// The target (or our own input) rejected the data.
    Validation,
    /// Anything else.
    Unknown,
}

impl ErrorClass {
    /// Every class, for metrics and docs.
    pub const ALL: [ErrorClass; 4] =
        [ErrorClass::Network, ErrorClass::Auth, ErrorClass::Validation, ErrorClass::Unknown];

    /// Backoff multiplier: auth problems need an operator, so retry slowly; validation
    /// problems are often a batch being rewritten, so retry sooner.
    pub fn multiplier(self) -> f64 {
        match self {
            ErrorClass::Network => 1.0,
            ErrorClass::Auth => 2.0,
            ErrorClass::Validation => 0.5,
            ErrorClass::Unknown => 1.0,
        }
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Network => "network",
            ErrorClass::Auth => "auth",
            ErrorClass::Validation => "validation",
            ErrorClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed anchor attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AnchorError {
    /// Decides the backoff multiplier.
    pub class: ErrorClass,
    /// What happened, for logs and /health; never holds secrets.
    pub message: String,
    /// The target certainly refused: nothing was anchored, so the next run may start a new
    /// attempt (with a newer batch). Otherwise the attempt may have gone through and is
    /// resumed — the target asked first — before anything new is sent.
    pub refused: bool,
}

impl AnchorError {
    /// A failure whose class the driver knows for sure: auth and validation failures are
    /// refusals; network and unknown failures may still have anchored.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        let refused = matches!(class, ErrorClass::Auth | ErrorClass::Validation);
        Self { class, message: message.into(), refused }
    }

    /// A failure whose class is a guess (e.g. from words in a command's output): whatever the
    /// class, the attempt may have gone through.
    pub fn uncertain(class: ErrorClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), refused: false }
    }
}

/// One anchor to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRequest {
    /// The namespace whose root this is.
    pub namespace: String,
    /// Which cadence asked.
    pub cadence: CadenceKind,
    /// Where to anchor.
    pub target: Target,
    /// The batch the root comes from, as its file gives it.
    pub batch_id: String,
    /// The Merkle root, 32 bytes.
    pub root: [u8; 32],
    /// Deterministic attempt id; targets may use it to recognise a repeat.
    pub attempt_id: String,
    /// Required confirmations, when the cadence sets them.
    pub confirmations: Option<u32>,
    /// Requested TSA policy.
    pub policy_oid: Option<String>,
    /// What an earlier run of this attempt recorded before sending (e.g. a signed
    /// transaction), so a resumed attempt can find or repeat exactly that.
    pub progress: Option<serde_json::Value>,
    /// The aggregate this attempt is a leaf of, once recorded: such an attempt is anchored
    /// only as part of that aggregate, never on its own.
    pub membership: Option<Inclusion>,
}

impl AnchorRequest {
    /// The root as written in batches and receipts: `sha256:<hex>`.
    pub fn root_string(&self) -> String {
        format!("sha256:{}", to_hex(&self.root))
    }
}

/// What a successful anchor proves, as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attestation {
    /// Driver-specific evidence (journal line hash, command output, tx hash …).
    pub data: serde_json::Value,
    /// When the target says the anchor happened, if it says; else completion time is used.
    pub anchored_at: Option<WallMs>,
}

/// An anchor sent but not yet final: it needs `required` confirmations (blocks on top of it)
/// and has `depth` so far. Recorded in state, so a restart resumes waiting instead of sending
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// What the driver needs to find the anchor again (transaction hash, chain …).
    pub data: serde_json::Value,
    /// Confirmations required.
    pub required: u32,
    /// Confirmations seen so far (0 while in the mempool).
    pub depth: u32,
    /// How long to wait before looking again, ms (about a block interval).
    pub poll_ms: u64,
    /// What the anchor's transaction pays, for senders that can raise it; absent otherwise
    /// and in records written before fees were tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<PendingFee>,
}

/// The fee a pending transaction offers, and how far the sender has raised it. Rates are
/// integers in the smallest unit that keeps them exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingFee {
    /// What the rates count: `wei/gas` (EVM) or `sat/kvB` (Bitcoin: satoshis per 1,000
    /// virtual bytes, so 1.5 sat/vB is 1500).
    pub unit: String,
    /// The rate offered now: the EVM fee cap (`maxFeePerGas`), or the Bitcoin fee rate.
    pub rate: u64,
    /// The EVM priority fee (`maxPriorityFeePerGas`); absent for Bitcoin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip: Option<u64>,
    /// The configured cap on `rate`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
    /// How many times the transaction was replaced at a higher fee.
    pub replacements: u32,
    /// Raised as far as the cap allows and still not mined: it waits for fees to drop.
    pub at_cap: bool,
    /// When the current transaction was sent (Unix ms): the clock `bumpAfter` runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<WallMs>,
    /// The block height when it was sent: `bumpAfter` counted in blocks runs on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_height: Option<u64>,
}

impl PendingFee {
    /// The rates as people read them: `40 gwei/gas, tip 2 gwei (cap 40 gwei)` or
    /// `12.5 sat/vB (cap 20 sat/vB)`.
    pub fn describe(&self) -> String {
        let show = |v: u64| match self.unit.as_str() {
            "wei/gas" => show_wei(u128::from(v)),
            "sat/kvB" => {
                let (whole, frac) = (v / 1000, v % 1000);
                if frac == 0 {
                    format!("{whole} sat/vB")
                } else {
                    format!("{whole}.{} sat/vB", format!("{frac:03}").trim_end_matches('0'))
                }
            }
            other => format!("{v} {other}"),
        };
        let per = if self.unit == "wei/gas" { " per gas" } else { "" };
        let tip = self.tip.map(|t| format!(", tip {}", show(t))).unwrap_or_default();
        let cap = self.cap.map(|c| format!(" (cap {})", show(c))).unwrap_or_default();
        format!("{}{per}{tip}{cap}", show(self.rate))
    }
}

/// Wei (per gas) as people write it: `30 gwei`, `1.5 gwei`, `7 wei`.
pub fn show_wei(wei: u128) -> String {
    const GWEI: u128 = 1_000_000_000;
    if wei >= GWEI / 1000 {
        let (whole, frac) = (wei / GWEI, wei % GWEI);
        if frac == 0 {
            format!("{whole} gwei")
        } else {
            format!("{whole}.{} gwei", format!("{frac:09}").trim_end_matches('0'))
        }
    } else {
        format!("{wei} wei")
    }
}

/// The result of sending an anchor.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Final at once (timestamp token, command output).
    Anchored(Attestation),
    /// Final once the scheduler's own write that holds the proof (a `local:` journal line) is
    /// durable: that write is in storage round `round`, and the receipt must come after it.
    Written {
        /// The proof.
        attestation: Attestation,
        /// The storage round that makes the proof's write durable.
        round: u64,
    },
    /// Sent; final after enough confirmations.
    Pending(Pending),
}

/// Where a pending anchor stands now.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmation {
    /// Deep enough: the proof.
    Confirmed(Attestation),
    /// Not deep enough yet (depth updated).
    Waiting(Pending),
    /// The target no longer knows it (dropped from the mempool, or reorged out and gone):
    /// it must be sent again.
    Dropped(String),
    /// The target refused it for good (e.g. the transaction was mined but reverted): the
    /// attempt failed.
    Rejected(AnchorError),
}

/// What a driver knows about an attempt that may or may not have happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// The target holds it: no need to send again.
    Done(Attestation),
    /// The target holds it, not yet deep enough: wait for it.
    Pending(Pending),
    /// The target certainly does not hold it.
    NotDone,
    /// The target can never tell (e.g. an external command): re-sending with the same
    /// attempt id is the only option.
    Unknown,
    /// The target could tell but did not answer now (node down, wallet not loaded): send
    /// nothing, ask again later.
    Later(AnchorError),
}

impl Submitted {
    /// The proof, when the anchor was final at once.
    pub fn into_attestation(self) -> Option<Attestation> {
        match self {
            Submitted::Anchored(att) | Submitted::Written { attestation: att, .. } => Some(att),
            Submitted::Pending(_) => None,
        }
    }
}
