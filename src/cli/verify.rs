//! `vmsh-scheduler verify RECEIPT.json`: re-checks a receipt against what it attests, and
//! says what it checked and what it could not.
//!
//! Every field of a receipt is either checked against the evidence or the receipt is refused:
//! a receipt of another format version, with a field this service does not write, or with a
//! field that is not what this service writes there, is not verifiable (exit 2). Fields no
//! evidence covers (the scheduler's version; for network targets, which hold only the root,
//! the namespace, cadence, batch and attempt) are held to their form and listed as
//! "not evidence". The rest is checked:
//!
//! - everywhere: `time` is `timeMs` written as RFC 3339, and a receipt that sits in an
//!   `out/anchors/<namespace>/` folder has the folder and file name its fields give.
//! - `local:`: the journal is the one the target names (under `--root`), its hash chain is
//!   intact up to the receipt's line, and that line holds every top-level field, hashes to
//!   `lineHash` and chains from `prev`.
//! - `rfc3161:`: the token time-stamps the root's SHA-256 and holds the attested genTime (the
//!   receipt's time), serial, policy, nonce and TSA name; with a trust bundle (`--trust-bundle`
//!   or the entry's `trustBundle`), its signature, signer chain as of genTime and time-stamping
//!   usage too.
//! - `eip155:`: through a node (`--rpc` or the entry's `rpcUrl`), the node is on the target's
//!   chain and the transaction, from and to the attested addresses, carries the attested data,
//!   anchors the root (and, for a contract call, the batch), succeeded, and sits in the
//!   attested block, whose time is the receipt's, under at least the attested confirmations.
//! - `btc:`: through bitcoind (`--rpc` or the entry's `rpcUrl` and credentials), the block is
//!   in the active chain at the attested height and time (the receipt's), under at least the
//!   attested confirmations, and holds the transaction, one of whose outputs is an OP_RETURN
//!   carrying exactly the marker and the root.
//! - `exec:` attestations are whatever the command printed: only the receipt's own form and
//!   consistency can be checked, so the answer is at best "not verifiable".

use std::path::{Path, PathBuf};

use crate::anchor::targets::{Resolved, TargetsConfig};
use crate::clock::rfc3339;
use crate::model::digest::parse_hex32;
use crate::model::evidence::{CheckError, Evidence};
use crate::model::receipt::Receipt;
use crate::model::{Scheme, Target};
use crate::storage::receipts;

/// Largest file read as a receipt: an exec attestation is at most one 64 KiB output line, and
/// a time-stamp token a few kilobytes.
const MAX_RECEIPT_BYTES: u64 = 1024 * 1024;

/// The top-level fields a receipt states about its anchor (`version` names the format, and
/// `attestation` is the driver's to check).
const STATED: [&str; 9] =
    ["namespace", "cadence", "target", "batchId", "root", "time", "timeMs", "attemptId", "schedulerVersion"];

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

/// The answer about a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every field was checked against the evidence or is listed as not evidence.
    Verified,
    /// The evidence (or the receipt itself) contradicts the receipt: why.
    Failed(String),
    /// The receipt cannot be checked: it is not one, or its evidence could not be had; why.
    Unverifiable(String),
}

impl Verdict {
    /// Exit code: 0 verified, 1 a mismatch, 2 not verifiable.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Verified => 0,
            Verdict::Failed(_) => 1,
            Verdict::Unverifiable(_) => 2,
        }
    }
}

/// What `verify` found: every check that passed, every stated field that is not evidence,
/// and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Checks that passed, one line each.
    pub passed: Vec<String>,
    /// Fields the receipt states that no evidence backs, one line each.
    pub not_evidence: Vec<String>,
    /// The answer.
    pub verdict: Verdict,
}

impl Report {
    fn new() -> Self {
        Self { passed: Vec::new(), not_evidence: Vec::new(), verdict: Verdict::Verified }
    }

    fn failed(mut self, why: impl Into<String>) -> Self {
        self.verdict = Verdict::Failed(why.into());
        self
    }

    fn unverifiable(mut self, why: impl Into<String>) -> Self {
        self.verdict = Verdict::Unverifiable(why.into());
        self
    }

    /// Folds a driver's answer in.
    fn conclude(mut self, receipt: &Receipt, checked: Result<Evidence, CheckError>) -> Self {
        match checked {
            Ok(evidence) => {
                self.passed.extend(evidence.checks);
                let unbacked: Vec<&str> = STATED.into_iter().filter(|f| !evidence.attests.contains(f)).collect();
                if !unbacked.is_empty() {
                    self.not_evidence.push(format!(
                        "{}: well formed, but nothing {} holds attests {}",
                        unbacked.join(", "),
                        receipt.target,
                        if unbacked.len() == 1 { "it" } else { "them" }
                    ));
                }
                self.not_evidence.extend(evidence.claims);
                self
            }
            Err(CheckError::Mismatch(why)) => self.failed(why),
            Err(CheckError::Unreachable(why)) => self.unverifiable(why),
            Err(CheckError::Malformed(why)) => self.unverifiable(format!("not a receipt this service writes: {why}")),
        }
    }
}

/// Verifies the receipt at `path`.
pub fn verify_receipt(path: &Path, opts: &VerifyOptions) -> Report {
    let mut report = Report::new();
    let bytes = match read_receipt(path) {
        Ok(b) => b,
        Err(why) => return report.unverifiable(why),
    };
    let receipt = match crate::model::receipt::parse(&bytes) {
        Ok(r) => r,
        Err(e @ crate::model::receipt::ReadError::UnknownVersion(_)) => {
            return report.unverifiable(format!("not a receipt this build can read: {e}"));
        }
        Err(e) => return report.unverifiable(format!("not a receipt this service writes: {e}")),
    };
    if let Err(e) = receipts::check_form(&receipt) {
        return report.unverifiable(format!("not a receipt this service writes: {e}"));
    }
    // check_form parsed both already.
    let (Ok(target), Some(root_bytes)) =
        (Target::parse(&receipt.target), receipt.root.strip_prefix("sha256:").and_then(parse_hex32))
    else {
        return report.unverifiable("not a receipt this service writes: its target or root does not parse");
    };
    report.passed.push(format!(
        "receipt is well formed (version {}, namespace {:?}, cadence {}, target {}, root {})",
        receipt.version, receipt.namespace, receipt.cadence, receipt.target, receipt.root
    ));
    if receipt.time != rfc3339(receipt.time_ms) {
        return report.failed(format!(
            "the receipt's time {:?} is not its timeMs {} ({})",
            receipt.time,
            receipt.time_ms,
            rfc3339(receipt.time_ms)
        ));
    }
    let standard_root = match check_location(path, &receipt) {
        Ok(Some((root, line))) => {
            report.passed.push(line);
            Some(root)
        }
        Ok(None) => {
            report.not_evidence.push(format!(
                "the file's name and folder: {} is not in an out/anchors/<namespace>/ folder",
                path.display()
            ));
            None
        }
        Err(why) => return report.failed(why),
    };
    let resolved = opts.targets.as_ref().and_then(|t| t.resolve(&target).ok());
    match target.scheme {
        Scheme::Local => {
            let checked = crate::anchor::local::verify_receipt(&receipt, &target, &opts.root);
            // A journal missing, or contradicting the receipt, may only be another root's.
            let checked = checked.map_err(|e| match e {
                CheckError::Unreachable(why) => CheckError::Unreachable(root_hint(why, standard_root, &opts.root)),
                CheckError::Mismatch(why) => CheckError::Mismatch(root_hint(why, standard_root, &opts.root)),
                other => other,
            });
            report.conclude(&receipt, checked)
        }
        Scheme::Exec => {
            let mut report = report.conclude(&receipt, Ok(Evidence::default()));
            report.not_evidence.push("attestation: whatever the command printed".into());
            report.unverifiable(format!(
                "{target} attests whatever its command printed; there is nothing independent to check"
            ))
        }
        Scheme::Rfc3161 => {
            let configured = match &resolved {
                Some(Resolved::Tsa(_, t)) => t.trust_bundle.clone(),
                _ => None,
            };
            let bundle = opts.trust_bundle.clone().or(configured);
            let checked = crate::anchor::rfc3161::verify_receipt(&receipt, &root_bytes, bundle.as_deref());
            report.conclude(&receipt, checked)
        }
        Scheme::Eip155 => {
            let configured = match &resolved {
                Some(Resolved::Evm(_, t)) => Some(t.rpc_url.expose().to_string()),
                _ => None,
            };
            let Some(rpc) = opts.rpc.clone().or(configured) else {
                return report.unverifiable(no_node(&target));
            };
            let checked = runtime()
                .and_then(|rt| rt.block_on(crate::anchor::eip155::verify_receipt(&rpc, &receipt, &root_bytes)));
            report.conclude(&receipt, checked)
        }
        Scheme::Btc => {
            let (url, auth) = match &resolved {
                Some(Resolved::Btc(_, t)) => (Some(t.rpc_url.expose().to_string()), Some(t.auth.clone())),
                _ => (None, None),
            };
            let Some(rpc) = opts.rpc.clone().or(url) else {
                return report.unverifiable(no_node(&target));
            };
            let checked = runtime().and_then(|rt| {
                rt.block_on(crate::anchor::btc::verify_receipt(&rpc, auth.as_ref(), &receipt, &root_bytes))
            });
            report.conclude(&receipt, checked)
        }
    }
}

fn no_node(target: &Target) -> String {
    format!(
        "no node to ask: give --rpc URL, or a targets file (--anchors FILE or VMSH_ANCHORS) with an entry for {target}"
    )
}

/// The receipt's bytes, or why there are none to read.
fn read_receipt(path: &Path) -> Result<Vec<u8>, String> {
    crate::fsread::read_regular(path, MAX_RECEIPT_BYTES).map_err(|e| match e {
        crate::fsread::ReadError::Io(e) => format!("cannot read {}: {e}", path.display()),
        other => format!("{} is not a receipt: it {other}", path.display()),
    })
}

/// When the receipt sits where receipts are written (`<root>/out/anchors/<folder>/<file>`),
/// checks that the folder is its namespace's and the file name the one its time, cadence and
/// attempt give; returns that root and what was checked. `Ok(None)`: it sits elsewhere.
fn check_location(path: &Path, receipt: &Receipt) -> Result<Option<(PathBuf, String)>, String> {
    let Ok(path) = std::path::absolute(path) else { return Ok(None) };
    let (Some(file), Some(folder_path)) = (path.file_name(), path.parent()) else { return Ok(None) };
    let (Some(folder), Some(anchors)) = (folder_path.file_name(), folder_path.parent()) else { return Ok(None) };
    let Some(out) = anchors.parent().filter(|_| anchors.file_name().is_some_and(|n| n == "anchors")) else {
        return Ok(None);
    };
    let Some(root) = out.parent().filter(|_| out.file_name().is_some_and(|n| n == "out")) else { return Ok(None) };
    let (folder, file) = (folder.to_string_lossy(), file.to_string_lossy());
    let want_folder = receipts::folder_name(&receipt.namespace);
    if folder != want_folder {
        return Err(format!(
            "the receipt sits in folder out/anchors/{folder}, but namespace {:?} writes to out/anchors/{want_folder}",
            receipt.namespace
        ));
    }
    let want_file = receipts::file_name(receipt);
    if file != want_file {
        return Err(format!("its file name {file} is not {want_file}, the name its time, cadence and attempt give"));
    }
    Ok(Some((
        root.to_path_buf(),
        format!(
            "its folder and file name (out/anchors/{folder}/{file}) are the ones its namespace, time, cadence and attempt give"
        ),
    )))
}

/// Adds to a reason about a journal the root the receipt sits under, when that is not the
/// root whose journal was read.
fn root_hint(why: String, receipt_root: Option<PathBuf>, searched: &Path) -> String {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    match receipt_root {
        Some(r) if !same(&r, searched) => {
            format!(
                "{why}; the receipt sits under {}, not under {}: try --root {}",
                r.display(),
                searched.display(),
                r.display()
            )
        }
        _ => why,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CheckError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CheckError::Unreachable(format!("cannot start I/O: {e}")))
}
