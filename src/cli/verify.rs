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
//! - with `inclusion` (a leaf of an aggregate): the leaf names exactly the receipt's namespace,
//!   cadence, batch, root and attempt, its path leads to `inclusion.root` by RFC 9162
//!   §2.1.3.2, and the target's checks below are made against the aggregate's anchor instead
//!   of the receipt's own: that root, with the identity every aggregate's anchor has (no
//!   namespace, batch `aggregate-<size>`, the root in hex as attempt). The leaf binds what it
//!   names, so those fields count as attested.
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
use crate::model::aggregate::{self, Leaf};
use crate::model::digest::{parse_hex, parse_hex32, to_hex};
use crate::model::evidence::{CheckError, Evidence};
use crate::model::merkle::{leaf_hash, verify_inclusion};
use crate::model::receipt::{Inclusion, Receipt};
use crate::model::{Scheme, Target};
use crate::storage::receipts;

/// Largest file read as a receipt: an exec attestation is at most one 64 KiB output line, and
/// a time-stamp token a few kilobytes.
const MAX_RECEIPT_BYTES: u64 = 1024 * 1024;

/// The top-level fields a receipt states about its anchor (`version` names the format, and
/// `attestation` is the driver's to check).
const STATED: [&str; 9] =
    ["namespace", "cadence", "target", "batchId", "root", "time", "timeMs", "attemptId", "schedulerVersion"];

/// The top-level fields an aggregate's leaf names, checked against the receipt before its
/// inclusion proof counts.
const LEAF_BINDS: [&str; 5] = ["namespace", "cadence", "batchId", "root", "attemptId"];

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
    /// Cluster mode's etcd (`VMSH_ETCD_*`), when set: where a receipt with a `ledger` is
    /// committed; why it cannot be reached, when the settings are unusable.
    pub etcd: Option<Result<std::sync::Arc<crate::cluster::etcd::Etcd>, String>>,
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
                // A leaf under the attested root binds what it names as firmly as the root.
                let bound: &[&str] = if receipt.inclusion.is_some() { &LEAF_BINDS } else { &[] };
                let unbacked: Vec<&str> =
                    STATED.into_iter().filter(|f| !evidence.attests.contains(f) && !bound.contains(f)).collect();
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
    // The root the target attests: the receipt's own, or that of the aggregate it is a leaf of.
    let anchored = match &receipt.inclusion {
        None => root_bytes,
        Some(inclusion) => match check_inclusion(&receipt, inclusion, &root_bytes) {
            Ok((anchored, lines)) => {
                report.passed.extend(lines);
                anchored
            }
            Err(why) => return report.failed(why),
        },
    };
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
    // Cluster mode: the file counts only with its commit in etcd.
    if let Some(prefix) = &receipt.ledger {
        let etcd = match &opts.etcd {
            Some(Ok(etcd)) => etcd,
            Some(Err(why)) => return report.unverifiable(format!("cannot reach the cluster's etcd: {why}")),
            None => {
                return report.unverifiable(format!(
                    "this receipt was written in cluster mode: it counts only with its commit in etcd under {prefix}; give verify the cluster's VMSH_ETCD_ENDPOINTS (and the other VMSH_ETCD_* settings)"
                ));
            }
        };
        let checked = runtime().and_then(|rt| rt.block_on(check_ledger(etcd, prefix, path, &bytes, &receipt)));
        match checked {
            Ok(lines) => report.passed.extend(lines),
            Err(CheckError::Mismatch(why)) => return report.failed(why),
            Err(CheckError::Unreachable(why) | CheckError::Malformed(why)) => return report.unverifiable(why),
        }
    }
    // What the target holds: this receipt's own anchor, or its aggregate's, which names no
    // namespace, batch or attempt of this receipt's.
    let attested = match &receipt.inclusion {
        None => receipt.clone(),
        Some(inclusion) => {
            let id = aggregate::identity(&anchored, inclusion.size);
            Receipt {
                namespace: id.namespace.to_string(),
                batch_id: id.batch_id,
                root: format!("sha256:{}", to_hex(&anchored)),
                attempt_id: id.attempt_id,
                inclusion: None,
                ..receipt.clone()
            }
        }
    };
    let resolved = opts.targets.as_ref().and_then(|t| t.resolve(&target).ok());
    match target.scheme {
        Scheme::Local => {
            let checked = crate::anchor::local::verify_receipt(&attested, &target, &opts.root, &anchored);
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
            let checked = crate::anchor::rfc3161::verify_receipt(&attested, &anchored, bundle.as_deref());
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
            let checked =
                runtime().and_then(|rt| rt.block_on(crate::anchor::eip155::verify_receipt(&rpc, &attested, &anchored)));
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
                rt.block_on(crate::anchor::btc::verify_receipt(&rpc, auth.as_ref(), &attested, &anchored))
            });
            report.conclude(&receipt, checked)
        }
    }
}

/// Cluster mode: a committed line of the namespace's receipt index names this file with its
/// SHA-256, and a `local:` receipt's journal line is at or below its file's committed head.
async fn check_ledger(
    etcd: &crate::cluster::etcd::Etcd,
    prefix: &str,
    path: &Path,
    bytes: &[u8],
    receipt: &Receipt,
) -> Result<Vec<String>, CheckError> {
    use crate::cluster::claim::Keys;
    use crate::cluster::ledger::{ChainHead, head};
    let keys = Keys::new(prefix);
    let unreachable = |e: crate::cluster::etcd::EtcdError| CheckError::Unreachable(format!("etcd under {prefix}: {e}"));
    let keys = &keys;
    let committed = |name: String| async move {
        let h = head(etcd, keys, &name).await.map_err(unreachable)?;
        ChainHead::of(&h).map_err(unreachable).map(|c| c.map_or(0, |c| c.seq))
    };
    let (Some(file), Some(folder)) = (path.file_name().and_then(|n| n.to_str()), path.parent()) else {
        return Err(CheckError::Unreachable(format!("{} names no file in a folder", path.display())));
    };
    let digest = crate::model::digest::sha256_hex(bytes);
    let indexes = crate::storage::chain::files_of(folder, receipts::INDEX_STEM)
        .map_err(|e| CheckError::Unreachable(format!("cannot list the receipt index in {}: {e}", folder.display())))?;
    let mut lines = Vec::new();
    let mut found = None;
    for index in &indexes {
        let upto = committed(receipts::index_head_name(&receipt.namespace, index)).await?;
        let chain = crate::storage::chain::committed_lines(&crate::storage::chain::path_in(folder, index), upto)
            .map_err(|e| CheckError::Mismatch(format!("the receipt index {index}: {e}")))?;
        for (line, _) in chain {
            let Ok(line) = serde_json::from_slice::<receipts::IndexLine>(&line) else { continue };
            if line.receipt == file {
                found = Some((index.clone(), line, upto));
            }
        }
    }
    let Some((index, line, upto)) = found else {
        return Err(CheckError::Mismatch(format!(
            "no committed line of namespace {:?}'s receipt index names {file}: it is not a receipt (written by a replica that no longer owned the namespace, or never committed)",
            receipt.namespace
        )));
    };
    if line.sha256 != digest || line.attempt_id != receipt.attempt_id {
        return Err(CheckError::Mismatch(format!(
            "line {} of {index}.jsonl commits another receipt under this name (SHA-256 {}, attempt {}); this file was changed",
            line.seq, line.sha256, line.attempt_id
        )));
    }
    lines.push(format!(
        "committed in etcd under {prefix}: line {} of {index}.jsonl (its head is line {upto}) names this file with its SHA-256 {digest}",
        line.seq
    ));
    if receipt.target.starts_with("local:")
        && let Some(journal) = receipt.attestation.get("journal").and_then(|j| j.as_str())
        && let Some(name) = receipt.target.strip_prefix("local:")
        && let Some(file) = crate::anchor::local::replica_file(journal, name)
    {
        let seq = receipt.attestation.get("seq").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let upto = committed(crate::anchor::local::shared::head_name(&file)).await?;
        if seq > upto {
            return Err(CheckError::Mismatch(format!(
                "journal line {seq} of {file}.jsonl is past the journal's committed head (line {upto}): it does not count"
            )));
        }
        lines.push(format!("journal line {seq} of {file}.jsonl is committed in etcd (its head is line {upto})"));
    }
    Ok(lines)
}

/// Checks a receipt's inclusion proof: its leaf names exactly this receipt's anchor, and
/// its path leads from that leaf, by RFC 9162 §2.1.3.2, to the root it gives. Returns that
/// root (the one the target must attest) and what was checked; any difference is a mismatch.
fn check_inclusion(
    receipt: &Receipt,
    inclusion: &Inclusion,
    root: &[u8; 32],
) -> Result<([u8; 32], Vec<String>), String> {
    // check_form held every hash to its hex form already.
    let (Some(bytes), Some(tree_root), Some(path), Some(attempt_id)) = (
        parse_hex(&inclusion.leaf),
        parse_hex32(&inclusion.root),
        inclusion.path.iter().map(|p| parse_hex32(p)).collect::<Option<Vec<_>>>(),
        parse_hex32(&receipt.attempt_id),
    ) else {
        return Err("the inclusion proof's hashes do not parse".into());
    };
    let leaf = Leaf::decode(&bytes).map_err(|e| format!("inclusion.leaf is not a leaf this service writes: {e}"))?;
    let m = &leaf.member;
    let differs = [
        ("namespace", m.namespace != receipt.namespace),
        ("cadence", m.cadence != receipt.cadence),
        ("batch id", m.batch_id != receipt.batch_id),
        ("root", m.root != *root),
        ("attempt id", m.attempt_id != attempt_id),
        ("tree size", leaf.size != inclusion.size),
    ];
    if let Some((what, _)) = differs.iter().find(|(_, differs)| *differs) {
        return Err(format!("the inclusion leaf names a different {what} than the receipt"));
    }
    verify_inclusion(&leaf_hash(&bytes), inclusion.index, inclusion.size, &path, &tree_root)
        .map_err(|e| format!("the inclusion proof does not hold: {e}"))?;
    Ok((
        tree_root,
        vec![
            "the inclusion leaf names this namespace, cadence, batch, root and attempt, and the tree's size".into(),
            format!(
                "the inclusion path leads from leaf {} of {} to root {} (RFC 9162 §2.1.3.2); the target must attest that root",
                inclusion.index, inclusion.size, inclusion.root
            ),
        ],
    ))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::anchor::local::LocalDriver;
    use crate::anchor::{Driver, NoProgress};
    use crate::clock::ManualClock;
    use crate::model::aggregate::{GroupKey, Member, tree_leaves};
    use crate::model::digest::to_hex;
    use crate::model::merkle::Tree;
    use crate::model::{AnchorRequest, CadenceKind, Submitted};
    use crate::storage::receipts::ReceiptWriter;

    fn member(namespace: &str, root: u8, attempt: u8) -> Member {
        Member {
            namespace: namespace.into(),
            cadence: CadenceKind::Fast,
            batch_id: "b1".into(),
            root: [root; 32],
            attempt_id: [attempt; 32],
        }
    }

    /// A `local:` receipt of namespace `ns` whose journal line anchors the root of a tree of
    /// three namespaces' leaves, written by the real driver and receipt writer, with its
    /// inclusion proof; the root it was written under, and the other two leaves' proofs.
    async fn aggregated() -> (tempfile::TempDir, PathBuf, Receipt, Vec<Inclusion>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(crate::storage::writer::Writer::default());
        let driver = LocalDriver::new(
            tmp.path().to_path_buf(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::clone(&writer),
        );
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), writer);
        let ours = member("ns", 7, 0xab);
        let leaves = tree_leaves(&[member("other", 1, 1), ours.clone(), member("third", 2, 2)]).expect("leaves");
        let tree = Tree::build(&leaves);
        let index = leaves
            .iter()
            .position(|l| Leaf::decode(l).is_ok_and(|l| l.member == ours))
            .expect("our leaf is in the tree");
        // The journal line is the aggregate's, as the scheduler writes it; the receipt is ours.
        let key = GroupKey {
            target: Target::parse("local:demo").expect("target"),
            cadence: ours.cadence,
            confirmations: None,
            policy_oid: None,
        };
        let aggregate = key.request(tree.root, leaves.len() as u64, None);
        let Submitted::Written { attestation, round } = driver.anchor(&aggregate, &NoProgress).await.expect("anchor")
        else {
            panic!("a journal line is a write of the scheduler's own");
        };
        let req = AnchorRequest {
            namespace: ours.namespace.clone(),
            cadence: ours.cadence,
            target: key.target.clone(),
            batch_id: ours.batch_id.clone(),
            root: ours.root,
            attempt_id: to_hex(&ours.attempt_id),
            confirmations: None,
            policy_oid: None,
            progress: None,
            membership: None,
        };
        let proof = |i: usize| Inclusion {
            leaf: to_hex(&leaves[i]),
            index: i as u64,
            size: leaves.len() as u64,
            path: tree.paths[i].iter().map(|h| to_hex(h)).collect(),
            root: to_hex(&tree.root),
        };
        let (receipt, path) =
            receipts.commit_with(&req, Some(proof(index)), attestation, Some(round), 0).await.expect("receipt");
        let others = (0..leaves.len()).filter(|&i| i != index).map(proof).collect();
        (tmp, path, receipt, others)
    }

    fn write(path: &Path, receipt: &Receipt) {
        let mut bytes = serde_json::to_vec_pretty(receipt).expect("JSON");
        bytes.push(b'\n');
        std::fs::write(path, bytes).expect("write the receipt");
    }

    fn verify(root: &Path, path: &Path) -> Report {
        verify_receipt(path, &VerifyOptions { root: root.to_path_buf(), ..VerifyOptions::default() })
    }

    #[actix_rt::test]
    async fn a_receipt_whose_leaf_leads_to_the_anchored_aggregate_root_verifies_with_its_leaf_fields_attested() {
        let (tmp, path, _, _) = aggregated().await;
        let report = verify(tmp.path(), &path);
        assert_eq!(report.verdict, Verdict::Verified, "{report:?}");
        assert!(report.passed.iter().any(|l| l.contains("RFC 9162")), "{report:?}");
        assert!(
            report.not_evidence.iter().all(|l| l.starts_with("schedulerVersion:")),
            "the journal and the leaf attest every field but the writer's version: {report:?}"
        );
    }

    #[actix_rt::test]
    async fn a_changed_leaf_index_size_path_or_root_of_an_aggregated_receipt_is_a_mismatch() {
        let (tmp, path, receipt, others) = aggregated().await;
        // Leaf 0 of 3 has its siblings on the sides leaf 0 of 4 has: only the size in the
        // leaf tells the two trees apart.
        assert_eq!(receipt.inclusion.as_ref().map(|i| i.index), Some(0), "our leaf sorts first");
        type Edit = Box<dyn Fn(&mut Receipt)>;
        let inc = |f: fn(&mut Inclusion)| -> Edit {
            Box::new(move |r: &mut Receipt| f(r.inclusion.as_mut().expect("inclusion")))
        };
        let other_leaf = Leaf { member: member("other", 1, 1), size: 3 }.encode().expect("leaf");
        let leaf_of = move |m: Member, size: u64| -> Edit {
            let hex = to_hex(&Leaf { member: m, size }.encode().expect("leaf"));
            Box::new(move |r: &mut Receipt| r.inclusion.as_mut().expect("inclusion").leaf = hex.clone())
        };
        let mut other_cadence = member("ns", 7, 0xab);
        other_cadence.cadence = CadenceKind::Strong;
        let mut other_batch = member("ns", 7, 0xab);
        other_batch.batch_id = "b2".into();
        let cases: Vec<(&str, Edit)> = vec![
            (
                "another member's leaf",
                Box::new(move |r: &mut Receipt| r.inclusion.as_mut().expect("inclusion").leaf = to_hex(&other_leaf)),
            ),
            ("a leaf naming another namespace", leaf_of(member("nt", 7, 0xab), 3)),
            ("a leaf naming another cadence", leaf_of(other_cadence, 3)),
            ("a leaf naming another batch", leaf_of(other_batch, 3)),
            ("a leaf naming another root", leaf_of(member("ns", 8, 0xab), 3)),
            ("a leaf naming another attempt", leaf_of(member("ns", 7, 0xac), 3)),
            ("a leaf naming another tree size", leaf_of(member("ns", 7, 0xab), 4)),
            ("a leaf byte changed", inc(|i| i.leaf.replace_range(10..12, "ff"))),
            ("a leaf cut short", inc(|i| i.leaf.truncate(i.leaf.len() - 2))),
            ("a leaf with a byte more", inc(|i| i.leaf.push_str("00"))),
            ("the index plus one", inc(|i| i.index = (i.index + 1) % 3)),
            ("the index minus one", inc(|i| i.index = (i.index + 2) % 3)),
            ("the index past the tree", inc(|i| i.index = 3)),
            ("the size plus one", inc(|i| i.size = 4)),
            ("the size minus one", inc(|i| i.size = 2)),
            ("the size zero", inc(|i| i.size = 0)),
            ("a path hash changed", inc(|i| i.path[0].replace_range(0..2, "00"))),
            ("the last path hash changed", inc(|i| i.path.last_mut().expect("a path").replace_range(62..64, "00"))),
            ("a path hash missing", inc(|i| drop(i.path.pop()))),
            ("a path hash more", inc(|i| i.path.push("ab".repeat(32)))),
            ("the path reversed", inc(|i| i.path.reverse())),
            ("the inclusion root changed", inc(|i| i.root.replace_range(0..2, "00"))),
            ("the receipt's root changed", Box::new(|r: &mut Receipt| r.root = format!("sha256:{}", "08".repeat(32)))),
        ];
        let mut cases = cases;
        for other in others {
            // A proof that holds, of another namespace's leaf.
            cases.push((
                "another member's whole proof",
                Box::new(move |r: &mut Receipt| r.inclusion = Some(other.clone())),
            ));
        }
        for (what, edit) in cases {
            let mut changed = receipt.clone();
            edit(&mut changed);
            assert_ne!(changed, receipt, "{what}: the edit changed nothing");
            write(&path, &changed);
            let report = verify(tmp.path(), &path);
            assert!(matches!(report.verdict, Verdict::Failed(_)), "{what}: {:?}", report.verdict);
            assert_eq!(report.verdict.exit_code(), 1, "{what}");
        }
        write(&path, &receipt);
        assert_eq!(verify(tmp.path(), &path).verdict, Verdict::Verified, "the receipt as written");
    }

    #[actix_rt::test]
    async fn an_aggregated_receipt_without_its_proof_is_not_the_anchor_its_journal_line_names() {
        let (tmp, path, mut receipt, _) = aggregated().await;
        receipt.inclusion = None;
        write(&path, &receipt);
        let report = verify(tmp.path(), &path);
        assert!(matches!(&report.verdict, Verdict::Failed(m) if m.contains("different namespace")), "{report:?}");
    }

    #[test]
    fn a_leaf_under_the_attested_root_counts_as_evidence_of_the_fields_it_names() {
        let mut receipt = Receipt {
            version: crate::model::receipt::RECEIPT_VERSION,
            attempt_id: "ab".repeat(32),
            namespace: "ns".into(),
            cadence: CadenceKind::Fast,
            target: "rfc3161:tsa".into(),
            batch_id: "b1".into(),
            root: format!("sha256:{}", "07".repeat(32)),
            time: crate::clock::rfc3339(0),
            time_ms: 0,
            inclusion: None,
            attestation: serde_json::json!({}),
            scheduler_version: crate::VERSION.into(),
            ledger: None,
        };
        let root_only = || Ok(Evidence { attests: vec!["root", "time", "timeMs"], ..Evidence::default() });
        let own = Report::new().conclude(&receipt, root_only());
        for field in ["namespace", "cadence", "batchId", "attemptId"] {
            assert!(own.not_evidence[0].contains(field), "{field}: {own:?}");
        }
        receipt.inclusion =
            Some(Inclusion { leaf: "01".into(), index: 0, size: 1, path: Vec::new(), root: "07".repeat(32) });
        let leaf = Report::new().conclude(&receipt, root_only());
        assert_eq!(
            leaf.not_evidence,
            vec![format!("target, schedulerVersion: well formed, but nothing {} holds attests them", receipt.target)]
        );
    }
}
