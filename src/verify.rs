//! `vmsh-scheduler verify RECEIPT.json`: re-checks a receipt against what it attests, and
//! says what it checked.
//!
//! - `local:`: the journal's hash chain from its first line up to the receipt's line, and
//!   that line names the receipt's namespace, cadence, batch, root and attempt and hashes to
//!   the receipt's `lineHash`.
//! - `rfc3161:`: the token time-stamps the root's SHA-256; with a trust bundle (`--trust-bundle`
//!   or the entry's `trustBundle`), its signature, signer chain as of genTime and time-stamping
//!   usage too.
//! - `eip155:`: through a node (`--rpc` or the entry's `rpcUrl`), the transaction exists with
//!   the attested data, anchors the root, succeeded, and sits in the attested block.
//! - `btc:`: through bitcoind (`--rpc` or the entry's `rpcUrl` and credentials), the block is in
//!   the active chain at the attested height, holds the transaction, and one of its outputs is
//!   an OP_RETURN carrying exactly the marker and the root.
//! - `exec:` attestations are whatever the command printed: only the receipt's own consistency
//!   can be checked.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::anchor::local::{LocalDriver, verify_chain_upto};
use crate::config::targets::{Resolved, TargetsConfig};
use crate::config::{Scheme, Target};
use crate::digest::parse_hex32;
use crate::receipts::Receipt;

/// Why a check against a target did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The target answered, and it contradicts the receipt.
    Mismatch(String),
    /// The target could not be asked (down, refused the credentials): nothing was checked.
    Unreachable(String),
}

impl CheckError {
    /// The reason, whichever kind it is.
    pub fn reason(&self) -> &str {
        match self {
            CheckError::Mismatch(r) | CheckError::Unreachable(r) => r,
        }
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl From<String> for CheckError {
    fn from(reason: String) -> Self {
        CheckError::Mismatch(reason)
    }
}

impl From<&str> for CheckError {
    fn from(reason: &str) -> Self {
        CheckError::Mismatch(reason.to_string())
    }
}

/// Where to check what a receipt attests, beyond the receipt itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// VMSH_ROOT: journals are found under it.
    pub root: PathBuf,
    /// Trusted CA bundle for rfc3161 tokens (default: the entry's `trustBundle`).
    pub trust_bundle: Option<PathBuf>,
    /// JSON-RPC endpoint for eip155 and btc receipts (default: the entry's `rpcUrl`).
    pub rpc: Option<String>,
    /// The targets file, for the defaults above.
    pub targets: Option<TargetsConfig>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed; what was checked, one line each.
    Verified(Vec<String>),
    /// A check failed: what passed before, and what failed.
    Failed {
        /// Checks that passed.
        passed: Vec<String>,
        /// The check that failed and why.
        failure: String,
    },
    /// This kind of receipt cannot be checked by this build; why.
    Unverifiable {
        /// Checks that passed.
        passed: Vec<String>,
        /// Why nothing more can be checked.
        reason: String,
    },
}

impl Verdict {
    /// Exit code: 0 verified, 1 a mismatch, 2 not verifiable.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Verified(_) => 0,
            Verdict::Failed { .. } => 1,
            Verdict::Unverifiable { .. } => 2,
        }
    }
}

/// Verifies the receipt at `path`.
pub fn verify_receipt(path: &Path, opts: &VerifyOptions) -> Verdict {
    let mut passed = Vec::new();
    let fail = |passed: Vec<String>, failure: String| Verdict::Failed { passed, failure };
    let receipt: Receipt = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return fail(passed, format!("{} is not a readable receipt: {e}", path.display())),
    };
    let Some(root_bytes) = receipt.root.strip_prefix("sha256:").and_then(parse_hex32) else {
        return fail(passed, format!("root {:?} is not sha256:<64 hex digits>", receipt.root));
    };
    passed.push(format!(
        "receipt is well formed (namespace {:?}, cadence {}, root {})",
        receipt.namespace, receipt.cadence, receipt.root
    ));
    let target = match Target::parse(&receipt.target) {
        Ok(t) => t,
        Err(e) => return fail(passed, format!("target: {e}")),
    };
    let resolved = opts.targets.as_ref().and_then(|t| t.resolve(&target).ok());
    match target.scheme {
        Scheme::Local => verify_local(&receipt, &target, &opts.root, passed),
        Scheme::Exec => Verdict::Unverifiable {
            passed,
            reason: format!("{} attests whatever its command printed; there is nothing independent to check", target),
        },
        Scheme::Rfc3161 => {
            let configured = match &resolved {
                Some(Resolved::Tsa(_, t)) => t.trust_bundle.clone(),
                _ => None,
            };
            verify_tsa(&receipt, &root_bytes, opts.trust_bundle.clone().or(configured).as_deref(), passed)
        }
        Scheme::Eip155 => {
            let configured = match &resolved {
                Some(Resolved::Evm(_, t)) => Some(t.rpc_url.expose().to_string()),
                _ => None,
            };
            let Some(rpc) = opts.rpc.clone().or(configured) else {
                return Verdict::Unverifiable { passed, reason: "no node to ask: give --rpc URL".into() };
            };
            let checked = runtime().and_then(|rt| {
                rt.block_on(crate::anchor::eip155::verify_attestation(
                    &rpc,
                    &receipt.attestation,
                    &root_bytes,
                    target.name.parse().ok(),
                ))
            });
            conclude(passed, checked)
        }
        Scheme::Btc => {
            let (url, auth) = match &resolved {
                Some(Resolved::Btc(_, t)) => (Some(t.rpc_url.expose().to_string()), Some(t.auth.clone())),
                _ => (None, None),
            };
            let Some(rpc) = opts.rpc.clone().or(url) else {
                return Verdict::Unverifiable { passed, reason: "no node to ask: give --rpc URL".into() };
            };
            let checked = runtime().and_then(|rt| {
                rt.block_on(crate::anchor::btc::verify_attestation(
                    &rpc,
                    auth.as_ref(),
                    &receipt.attestation,
                    &root_bytes,
                ))
            });
            conclude(passed, checked)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CheckError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CheckError::Unreachable(format!("cannot start I/O: {e}")))
}

fn conclude(mut passed: Vec<String>, checked: Result<Vec<String>, CheckError>) -> Verdict {
    match checked {
        Ok(lines) => {
            passed.extend(lines);
            Verdict::Verified(passed)
        }
        Err(CheckError::Mismatch(failure)) => Verdict::Failed { passed, failure },
        Err(CheckError::Unreachable(reason)) => Verdict::Unverifiable { passed, reason },
    }
}

fn verify_tsa(receipt: &Receipt, root: &[u8; 32], bundle: Option<&Path>, mut passed: Vec<String>) -> Verdict {
    let fail = |passed: Vec<String>, failure: String| Verdict::Failed { passed, failure };
    let Some(token) = receipt.attestation.get("token").and_then(|t| t.as_str()) else {
        return fail(passed, "attestation has no token".into());
    };
    let token = match base64::engine::general_purpose::STANDARD.decode(token) {
        Ok(t) => t,
        Err(e) => return fail(passed, format!("token is not base64: {e}")),
    };
    let pem = match bundle.map(std::fs::read).transpose() {
        Ok(p) => p,
        Err(e) => return fail(passed, format!("trust bundle: {e}")),
    };
    match crate::anchor::rfc3161::verify_token(&token, root, pem.as_deref()) {
        Ok(info) => {
            passed.push(format!(
                "token time-stamps the root's SHA-256 (genTime {}, serial {}, policy {}{})",
                crate::clock::rfc3339(info.gen_time_ms),
                info.serial_hex,
                info.policy,
                info.tsa_name.map(|n| format!(", TSA {n}")).unwrap_or_default()
            ));
            match bundle {
                Some(b) if info.verified => passed.push(format!(
                    "token signature, signer chain and time-stamping usage verified against {}",
                    b.display()
                )),
                _ => passed.push("signature not checked: give --trust-bundle PEM to check it".into()),
            }
            if info.gen_time_ms != receipt.time_ms {
                return fail(passed, "the receipt's time differs from the token's genTime".into());
            }
            Verdict::Verified(passed)
        }
        Err(e) => fail(passed, format!("token: {e}")),
    }
}

fn verify_local(receipt: &Receipt, target: &Target, root: &Path, mut passed: Vec<String>) -> Verdict {
    let fail = |passed: Vec<String>, failure: String| Verdict::Failed { passed, failure };
    let journal = LocalDriver::journal_path(root, &target.name);
    let Some(seq) = receipt.attestation.get("seq").and_then(|v| v.as_u64()) else {
        return fail(passed, "attestation has no journal line number (seq)".into());
    };
    let (summary, line) = match verify_chain_upto(&journal, Some(seq)) {
        Ok(found) => found,
        Err(e) => return fail(passed, format!("journal {}: {e}", journal.display())),
    };
    passed.push(format!("journal {} hash chain intact over lines 1..={}", journal.display(), summary.lines));
    let Some((entry, hash)) = line else { return fail(passed, format!("journal has no line {seq}")) };
    let expected = [
        ("namespace", entry.namespace == receipt.namespace),
        ("cadence", entry.cadence == receipt.cadence),
        ("batch id", entry.batch_id == receipt.batch_id),
        ("root", entry.root == receipt.root),
        ("attempt id", entry.attempt_id == receipt.attempt_id),
    ];
    for (what, same) in expected {
        if !same {
            return fail(passed, format!("journal line {seq} has a different {what} than the receipt"));
        }
    }
    passed.push(format!("journal line {seq} names this namespace, cadence, batch, root and attempt"));
    match receipt.attestation.get("lineHash").and_then(|v| v.as_str()) {
        Some(h) if h == hash => passed.push(format!("journal line {seq} hashes to the receipt's lineHash {h}")),
        Some(h) => return fail(passed, format!("journal line {seq} hashes to {hash}, the receipt says {h}")),
        None => return fail(passed, "attestation has no lineHash".into()),
    }
    Verdict::Verified(passed)
}
