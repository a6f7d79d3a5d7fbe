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

use crate::clock::{WallMs, rfc3339};
use crate::config::targets::{Resolved, TargetsConfig};
use crate::config::vars::Redactor;
use crate::model::digest::parse_hex32;
use crate::model::{Scheme, Target};
use crate::receipts::{self, Receipt};

/// Largest file read as a receipt: an exec attestation is at most one 64 KiB output line, and
/// a time-stamp token a few kilobytes.
const MAX_RECEIPT_BYTES: u64 = 1024 * 1024;

/// Why a check against a target did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The evidence contradicts the receipt.
    Mismatch(String),
    /// The evidence could not be had (a node down or refusing the credentials, a journal or
    /// trust bundle not found): nothing was checked either way.
    Unreachable(String),
    /// The attestation is not one this service writes (an unknown or missing field, a value
    /// of the wrong form): there is nothing to check it against.
    Malformed(String),
}

impl CheckError {
    /// The reason, whichever kind it is.
    pub fn reason(&self) -> &str {
        match self {
            CheckError::Mismatch(r) | CheckError::Unreachable(r) | CheckError::Malformed(r) => r,
        }
    }

    /// The same kind of error with its reason rewritten by `f`.
    pub fn map_reason(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            CheckError::Mismatch(r) => CheckError::Mismatch(f(&r)),
            CheckError::Unreachable(r) => CheckError::Unreachable(f(&r)),
            CheckError::Malformed(r) => CheckError::Malformed(f(&r)),
        }
    }

    /// The same error with its reason cleaned of `redact`'s secrets: a node may echo them.
    pub fn cleaned(self, redact: &Redactor) -> Self {
        self.map_reason(|r| redact.clean(r))
    }
}

/// `checks` cleaned of `redact`'s secrets, as [`CheckError::cleaned`] cleans an error.
pub fn cleaned_checks(checks: Result<Vec<String>, CheckError>, redact: &Redactor) -> Result<Vec<String>, CheckError> {
    match checks {
        Ok(checks) => Ok(checks.iter().map(|c| redact.clean(c)).collect()),
        Err(e) => Err(e.cleaned(redact)),
    }
}

impl Evidence {
    /// The same evidence with every line cleaned of `redact`'s secrets.
    pub fn cleaned(self, redact: &Redactor) -> Self {
        let clean = |lines: Vec<String>| lines.iter().map(|l| redact.clean(l)).collect();
        Evidence { checks: clean(self.checks), attests: self.attests, claims: clean(self.claims) }
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

/// Reads a scheme's attestation strictly into `T` (whose serde attributes deny unknown
/// fields); any difference from what the driver writes is [`CheckError::Malformed`].
pub fn read_attestation<T: serde::de::DeserializeOwned>(attestation: &serde_json::Value) -> Result<T, CheckError> {
    serde_path_to_error::deserialize(attestation.clone())
        .map_err(|e| CheckError::Malformed(receipts::field_error(&e, "attestation.")))
}

/// What a driver established about a receipt from its target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// What was checked, one line each.
    pub checks: Vec<String>,
    /// The top-level receipt fields the target attests and that were checked against it
    /// (`root` always; `time`, `namespace` … where the target holds them).
    pub attests: Vec<&'static str>,
    /// Attestation fields that are the writer's own claims, not evidence, one line each.
    pub claims: Vec<String>,
}

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
    let receipt = match receipts::parse(&bytes) {
        Ok(r) => r,
        Err(e @ receipts::ReadError::UnknownVersion(_)) => {
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

/// Compares the receipt's time with the time the evidence gives (Unix ms); `source` names
/// that time ("the block's time").
pub fn check_time(receipt: &Receipt, evidence_ms: WallMs, source: &str) -> Result<String, CheckError> {
    if receipt.time_ms != evidence_ms {
        return Err(CheckError::Mismatch(format!(
            "the receipt's time {} is not {source} {}",
            receipt.time,
            rfc3339(evidence_ms)
        )));
    }
    Ok(format!("the receipt's time {} is {source}", receipt.time))
}
