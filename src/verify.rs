//! `vmsh-scheduler verify RECEIPT.json`: re-checks a receipt against what it attests, and
//! says what it checked.
//!
//! For `local:` receipts the journal's hash chain is checked from its first line up to the
//! receipt's line, and that line must name the receipt's namespace, cadence, batch, root and
//! attempt, and hash to the receipt's `lineHash`. `exec:` attestations are whatever the
//! command printed: only the receipt's own consistency can be checked.

use std::path::Path;

use crate::anchor::local::{LocalDriver, verify_chain_upto};
use crate::config::{Scheme, Target};
use crate::digest::parse_hex32;
use crate::receipts::Receipt;

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

/// Verifies the receipt at `path`; `root` is the VMSH_ROOT its journal paths are relative to.
pub fn verify_receipt(path: &Path, root: &Path) -> Verdict {
    let mut passed = Vec::new();
    let fail = |passed: Vec<String>, failure: String| Verdict::Failed { passed, failure };
    let receipt: Receipt = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return fail(passed, format!("{} is not a readable receipt: {e}", path.display())),
    };
    let root_ok = receipt.root.strip_prefix("sha256:").and_then(parse_hex32).is_some();
    if !root_ok {
        return fail(passed, format!("root {:?} is not sha256:<64 hex digits>", receipt.root));
    }
    passed.push(format!(
        "receipt is well formed (namespace {:?}, cadence {}, root {})",
        receipt.namespace, receipt.cadence, receipt.root
    ));
    let target = match Target::parse(&receipt.target) {
        Ok(t) => t,
        Err(e) => return fail(passed, format!("target: {e}")),
    };
    match target.scheme {
        Scheme::Local => verify_local(&receipt, &target, root, passed),
        Scheme::Exec => Verdict::Unverifiable {
            passed,
            reason: format!("{} attests whatever its command printed; there is nothing independent to check", target),
        },
        Scheme::Eip155 | Scheme::Btc | Scheme::Rfc3161 => {
            Verdict::Unverifiable { passed, reason: format!("this build has no {} verifier", target.scheme) }
        }
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
