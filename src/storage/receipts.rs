//! Receipts: one JSON file per successful anchor, under `VMSH_ROOT/out/anchors/<namespace>/`.
//!
//! What is written here is also what `verify` reads ([`parse`], [`check_form`]): a receipt
//! with a field this build does not write, or of another format version, is refused rather
//! than partly vouched for.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::{self, ChainError, Chains, Committed};
use super::writer::{WriteError, Writer};
use crate::clock::{WallMs, compact_utc, rfc3339};
use crate::cluster::ledger::{ChainHead, OutputLedger};
use crate::model::digest::sha256_hex;
use crate::model::fsname;
use crate::model::merkle::MAX_PATH;
use crate::model::receipt::{Inclusion, RECEIPT_VERSION, Receipt, is_lower_hex, json_kind};
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass};
use crate::storage::durable::{self, SHARED_FILE};

/// The longest leaf, in hex digits: a version byte, three fields of up to 65535 bytes behind
/// their lengths, two hashes and the tree size.
const MAX_LEAF_HEX: usize = 2 * (1 + 3 * (2 + 65_535) + 32 + 32 + 8);

/// Where every anchor's receipt is made durable, whatever its scheme: the one step between a
/// driver's attestation and an anchor that counts.
#[derive(Clone)]
pub struct ReceiptWriter {
    root: PathBuf,
    writer: Arc<Writer>,
    /// Cluster mode: each namespace's index of its receipts, committed in etcd.
    index: Option<Arc<ReceiptIndex>>,
}

/// Cluster mode: a receipt counts once a line of its namespace's index names it with its
/// SHA-256, and that line is committed ([`super::chain`]). Each replica appends to its own
/// index file per namespace, `out/anchors/<namespace>/receipts@<node>.jsonl`, whose head is
/// `<prefix>receipts/<namespace>@<node>`: a receipt file written by a replica that was
/// paused past its lease is in no committed line, and is no receipt.
struct ReceiptIndex {
    node: String,
    chains: Chains<IndexLine>,
    /// `vmsh_cluster_fenced_writes_total{what="receipt"}`.
    fenced: prometheus::IntCounter,
}

/// One line of a namespace's receipt index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexLine {
    /// The line's number, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the line before, or the chain's genesis.
    pub prev: String,
    /// The attempt the receipt is of.
    pub attempt_id: String,
    /// The receipt's file name, in the namespace's folder.
    pub receipt: String,
    /// Hex SHA-256 of the receipt file's bytes.
    pub sha256: String,
}

/// The stem of a namespace's receipt index files (`receipts@<node>.jsonl`).
pub const INDEX_STEM: &str = "receipts";

/// The etcd head of a namespace's index file `file` (`receipts@<node>`).
pub fn index_head_name(namespace: &str, file: &str) -> String {
    let node = file.strip_prefix(INDEX_STEM).and_then(|n| n.strip_prefix('@')).unwrap_or(file);
    format!("receipts/{}@{node}", folder_name(namespace))
}

/// The committed lines of every index file of `namespace` under `root` (every replica's),
/// with the ledger's heads: what `existing` and `verify` read.
pub async fn committed_index(
    ledger: &dyn OutputLedger,
    root: &Path,
    namespace: &str,
) -> Result<Vec<IndexLine>, String> {
    let folder = root.join("out").join("anchors").join(folder_name(namespace));
    let listed = folder.clone();
    let files = tokio::task::spawn_blocking(move || chain::files_of(&listed, INDEX_STEM))
        .await
        .map_err(|e| format!("index reader failed: {e}"))?
        .map_err(|e| format!("cannot list the receipt index of {namespace}: {e}"))?;
    let mut out = Vec::new();
    for file in files {
        let head_name = index_head_name(namespace, &file);
        let head = ledger.chain_head(&head_name).await.map_err(|e| format!("{head_name}: {e}"))?;
        let Some(committed) = ChainHead::of(&head).map_err(|e| e.to_string())? else { continue };
        let path = chain::path_in(&folder, &file);
        let lines = tokio::task::spawn_blocking(move || chain::committed_lines(&path, committed.seq))
            .await
            .map_err(|e| format!("index reader failed: {e}"))??;
        for (bytes, _) in lines {
            out.push(serde_json::from_slice(&bytes).map_err(|e| format!("{file}: a line is not an index line: {e}"))?);
        }
    }
    Ok(out)
}

impl ReceiptWriter {
    /// Receipts under `root/out/anchors`, made durable by `writer`'s rounds.
    pub fn new(root: PathBuf, writer: Arc<Writer>) -> Self {
        Self { root, writer, index: None }
    }

    /// Cluster mode: a receipt counts once replica `node` committed a line naming it in its
    /// namespace's index, in `ledger` under the namespace's claim; `fenced` counts the
    /// commits refused.
    pub fn in_cluster(mut self, node: &str, ledger: Arc<dyn OutputLedger>, fenced: prometheus::IntCounter) -> Self {
        let chains = Chains::new(ledger, Arc::clone(&self.writer));
        self.index = Some(Arc::new(ReceiptIndex { node: node.to_string(), chains, fenced }));
        self
    }

    /// Writes the receipt of `req`, whose proof is `attestation`, and answers once it is
    /// durable; `now` dates it when the target gave no time. A proof held by the scheduler's
    /// own write (a `local:` journal line) names that write's storage round in `after`: the
    /// receipt comes in a later round, and only if that one made the proof durable.
    pub async fn commit(
        &self,
        req: &AnchorRequest,
        attestation: Attestation,
        after: Option<u64>,
        now: WallMs,
    ) -> Result<(Receipt, PathBuf), AnchorError> {
        self.commit_with(req, None, attestation, after, now).await
    }

    /// The receipt already written for `req`'s attempt, if any. A resumed attempt may have
    /// written its receipt before the crash and not lived to record its success; a target
    /// that cannot say whether it anchored (an `exec:` command) then anchors again, at
    /// another time, and a second receipt would name the same attempt.
    pub async fn existing(&self, req: &AnchorRequest) -> Option<PathBuf> {
        let folder = self.root.join("out").join("anchors").join(folder_name(&req.namespace));
        let suffix = format!("-{}-{}.json", req.cadence, short_id(&req.attempt_id));
        let attempt = req.attempt_id.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for path in std::fs::read_dir(&folder).ok()?.flatten().map(|e| e.path()) {
                if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)) {
                    continue;
                }
                // Only a whole receipt of this very attempt counts, and only once it is
                // durable: the crash may have come before the round that was to sync it.
                let Ok(bytes) = std::fs::read(&path) else { continue };
                let Ok(receipt) = crate::model::receipt::parse(&bytes) else { continue };
                if receipt.attempt_id != attempt || File::open(&path).and_then(|f| f.sync_all()).is_err() {
                    continue;
                }
                found.push((path, sha256_hex(&bytes)));
            }
            File::open(&folder).and_then(|d| d.sync_all()).ok()?;
            Some(found)
        })
        .await
        .ok()
        .flatten()?;
        let Some(index) = &self.index else { return found.into_iter().next().map(|(path, _)| path) };
        // In cluster mode only a receipt a committed index line names counts: another file
        // may be a paused replica's, written after it lost the namespace.
        let lines = committed_index(index.chains.ledger().as_ref(), &self.root, &req.namespace).await.ok()?;
        let line = lines.into_iter().rev().find(|l| l.attempt_id == req.attempt_id)?;
        found
            .into_iter()
            .find(|(path, digest)| *digest == line.sha256 && path.file_name().is_some_and(|n| *n == *line.receipt))
            .map(|(path, _)| path)
    }

    /// [`ReceiptWriter::commit`] for an anchor that is a leaf of an aggregate: the receipt
    /// carries its `inclusion` proof, and `attestation` is the target's proof of the
    /// aggregate's root.
    pub async fn commit_with(
        &self,
        req: &AnchorRequest,
        inclusion: Option<Inclusion>,
        attestation: Attestation,
        after: Option<u64>,
        now: WallMs,
    ) -> Result<(Receipt, PathBuf), AnchorError> {
        let mut receipt = receipt_for(req, attestation, now);
        receipt.inclusion = inclusion;
        receipt.ledger = self.index.as_ref().map(|i| i.chains.ledger().prefix().to_string());
        let root = self.root.clone();
        // The receipt moves to the writer thread and back: no copy of its proof per anchor.
        let written = self
            .writer
            .durable_after(after, move |touched| {
                let (path, file, digest) = write_unsynced_digest(&root, &receipt)?;
                touched.add(&Arc::new(file))?;
                Ok::<_, std::io::Error>((receipt, path, digest))
            })
            .await;
        let (receipt, path, digest) = match written {
            Ok(written) => written,
            Err(WriteError::Write(e) | WriteError::NotDurable(e)) => return Err(unwritten(&e)),
            Err(e @ WriteError::Stopped(_)) => return Err(unwritten(&std::io::Error::other(e.to_string()))),
        };
        if let Some(index) = &self.index {
            self.commit_index(index, &receipt, &path, digest).await?;
        }
        Ok((receipt, path))
    }
}

impl ReceiptWriter {
    /// Commits the line of `receipt`'s namespace index that names it: only then does it count.
    async fn commit_index(
        &self,
        index: &ReceiptIndex,
        receipt: &Receipt,
        path: &Path,
        digest: String,
    ) -> Result<(), AnchorError> {
        let folder = self.root.join("out").join("anchors").join(folder_name(&receipt.namespace));
        let file = format!("{INDEX_STEM}@{}", index.node);
        let index_path = chain::path_in(&folder, &file);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let attempt = receipt.attempt_id.clone();
        let line = move |seq: u64, prev: &str| {
            let line = IndexLine { seq, prev: prev.to_string(), attempt_id: attempt, receipt: name, sha256: digest };
            Ok((serde_json::to_vec(&line).map_err(|e| e.to_string())?, line))
        };
        let head = index_head_name(&receipt.namespace, &file);
        let committed = index.chains.commit(&receipt.namespace, &head, &index_path, &receipt.attempt_id, line).await;
        let fail = |m: String| AnchorError::new(ErrorClass::Unknown, m);
        match committed {
            Ok(Committed { value, .. }) if path.file_name().is_some_and(|n| *n == *value.receipt) => Ok(()),
            Ok(Committed { value, .. }) => Err(fail(format!(
                "another receipt ({}) was committed for attempt {} before {}; this file does not count",
                value.receipt,
                receipt.attempt_id,
                path.display()
            ))),
            Err(ChainError::Fenced(e)) => {
                index.fenced.inc();
                Err(fail(format!("anchored, but {} does not count: {e}", path.display())))
            }
            Err(e) => Err(fail(format!(
                "anchored, but the receipt's index line could not be committed ({e}); the attempt will be resumed"
            ))),
        }
    }
}

/// The receipt of an anchor whose proof is `attestation`; `now` dates it when the target
/// gave no time.
pub fn receipt_for(req: &AnchorRequest, attestation: Attestation, now: WallMs) -> Receipt {
    let time_ms = attestation.anchored_at.unwrap_or(now);
    Receipt {
        version: RECEIPT_VERSION,
        attempt_id: req.attempt_id.clone(),
        namespace: req.namespace.clone(),
        cadence: req.cadence,
        target: req.target.to_string(),
        batch_id: req.batch_id.clone(),
        root: req.root_string(),
        time: rfc3339(time_ms),
        time_ms,
        inclusion: None,
        attestation: attestation.data,
        scheduler_version: crate::VERSION.to_string(),
        ledger: None,
    }
}

/// The failure of an anchor that went through but whose receipt could not be written.
fn unwritten(e: &std::io::Error) -> AnchorError {
    AnchorError::new(
        ErrorClass::Unknown,
        format!("anchored, but the receipt could not be written ({e}); the attempt will be resumed"),
    )
}

/// Where a receipt is written: sortable by time, unique by attempt.
pub fn receipt_path(root: &Path, receipt: &Receipt) -> PathBuf {
    root.join("out").join("anchors").join(folder_name(&receipt.namespace)).join(file_name(receipt))
}

/// The folder (under `out/anchors/`) of a namespace's receipts.
pub fn folder_name(namespace: &str) -> String {
    fsname::encode(namespace)
}

/// A receipt's file name: `<UTC time>-<cadence>-<first 16 characters of the attempt id>.json`.
pub fn file_name(receipt: &Receipt) -> String {
    format!("{}-{}-{}.json", compact_utc(receipt.time_ms), receipt.cadence, short_id(&receipt.attempt_id))
}

/// The part of an attempt id a receipt's file name carries.
fn short_id(attempt_id: &str) -> String {
    attempt_id.chars().take(16).collect()
}

/// Checks that every top-level field holds what this service writes there: a valid
/// namespace name and target, a batch id as batches allow, a `sha256:` root and an attempt id
/// in lower-case hex, a version number for `schedulerVersion`, an object for `attestation`,
/// and hex where `inclusion` holds hashes. Fields no evidence can confirm are at least held to
/// this.
pub fn check_form(receipt: &Receipt) -> Result<(), String> {
    crate::config::namespaces::check_namespace_name(&receipt.namespace).map_err(|e| format!("namespace: {e}"))?;
    let target = crate::model::Target::parse(&receipt.target).map_err(|e| format!("target: {e}"))?;
    if target.to_string() != receipt.target {
        return Err(format!("target {:?} is not written as this service writes it", receipt.target));
    }
    let id = &receipt.batch_id;
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err("batchId: must be 1 to 256 printable characters".into());
    }
    let canonical_root = receipt
        .root
        .strip_prefix("sha256:")
        .and_then(crate::model::digest::parse_hex32)
        .is_some_and(|r| receipt.root == format!("sha256:{}", crate::model::digest::to_hex(&r)));
    if !canonical_root {
        return Err(format!("root {:?} is not sha256:<64 lower-case hex digits>", shorten(&receipt.root)));
    }
    if !is_lower_hex(&receipt.attempt_id, 64) {
        return Err(format!("attemptId {:?} is not 64 lower-case hex digits", shorten(&receipt.attempt_id)));
    }
    if !is_version(&receipt.scheduler_version) {
        return Err(format!(
            "schedulerVersion {:?} is not a version number (MAJOR.MINOR.PATCH)",
            shorten(&receipt.scheduler_version)
        ));
    }
    if !receipt.attestation.is_object() {
        return Err(format!("attestation is a JSON {}, not an object", json_kind(&receipt.attestation)));
    }
    if let Some(inclusion) = &receipt.inclusion {
        check_inclusion_form(inclusion)?;
    }
    if let Some(prefix) = &receipt.ledger
        && (!prefix.starts_with('/')
            || prefix.len() > 256
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(format!("ledger {:?} is not an etcd key prefix (/…)", shorten(prefix)));
    }
    Ok(())
}

/// Holds an inclusion proof to the form this service writes: hashes of 64 lower-case hex
/// digits, a leaf of whole bytes in lower-case hex, no longer a path than a tree can have.
/// Whether the proof holds is `verify`'s to say.
fn check_inclusion_form(inclusion: &Inclusion) -> Result<(), String> {
    let leaf = &inclusion.leaf;
    let leaf_ok = !leaf.is_empty()
        && leaf.len().is_multiple_of(2)
        && leaf.len() <= MAX_LEAF_HEX
        && is_lower_hex(leaf, leaf.len());
    if !leaf_ok {
        return Err(format!("inclusion.leaf {:?} is not bytes in lower-case hex", shorten(leaf)));
    }
    if inclusion.path.len() > MAX_PATH {
        return Err(format!(
            "inclusion.path has {} hashes; no tree has paths longer than {MAX_PATH}",
            inclusion.path.len()
        ));
    }
    if let Some((i, p)) = inclusion.path.iter().enumerate().find(|(_, p)| !is_lower_hex(p, 64)) {
        return Err(format!("inclusion.path[{i}] {:?} is not 64 lower-case hex digits", shorten(p)));
    }
    if !is_lower_hex(&inclusion.root, 64) {
        return Err(format!("inclusion.root {:?} is not 64 lower-case hex digits", shorten(&inclusion.root)));
    }
    Ok(())
}

/// A semantic version as Cargo writes one: `MAJOR.MINOR.PATCH`, optionally followed by
/// `-pre-release` and `+build` of letters, digits, `.` and `-`.
fn is_version(s: &str) -> bool {
    let (core, rest) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let core_ok = numbers.len() == 3 && numbers.iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let rest_ok = rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'));
    core_ok && rest_ok && (s.len() == core.len() || !rest.is_empty()) && s.len() <= 64
}

/// At most 80 characters of a value, for an error message.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Writes a receipt without waiting for it to be durable; returns its path and the file,
/// whose file system a round of the group commit must sync before the receipt counts.
pub fn write_unsynced(root: &Path, receipt: &Receipt) -> std::io::Result<(PathBuf, File)> {
    write_unsynced_digest(root, receipt).map(|(path, file, _)| (path, file))
}

/// [`write_unsynced`], with the hex SHA-256 of the bytes written: what cluster mode records.
fn write_unsynced_digest(root: &Path, receipt: &Receipt) -> std::io::Result<(PathBuf, File, String)> {
    let path = receipt_path(root, receipt);
    let mut bytes = serde_json::to_vec_pretty(receipt).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let file = durable::write_unsynced(&path, &bytes, SHARED_FILE)?;
    Ok((path, file, sha256_hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CadenceKind;
    use crate::model::receipt::{ReadError, parse};

    #[test]
    fn receipts_land_in_the_namespace_folder_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let receipt = Receipt {
            version: RECEIPT_VERSION,
            attempt_id: "ab".repeat(32),
            namespace: "../../etc".into(),
            cadence: CadenceKind::Fast,
            target: "local:demo".into(),
            batch_id: "b1".into(),
            root: format!("sha256:{}", "00".repeat(32)),
            time: crate::clock::rfc3339(1_729_740_000_000),
            time_ms: 1_729_740_000_000,
            inclusion: None,
            attestation: serde_json::json!({"line": 1}),
            scheduler_version: crate::VERSION.into(),
            ledger: None,
        };
        let (path, _) = write_unsynced(tmp.path(), &receipt).expect("write");
        assert!(path.starts_with(tmp.path().join("out/anchors")));
        assert_eq!(path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()), Some("%2E.%2F..%2Fetc"));
        let back: Receipt = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back, receipt);
    }

    fn request() -> AnchorRequest {
        AnchorRequest {
            namespace: "dao:vaultmesh".into(),
            cadence: CadenceKind::Strong,
            target: crate::model::Target::parse("rfc3161:tsa").expect("target"),
            batch_id: "b1".into(),
            root: [0x0f; 32],
            attempt_id: "ab".repeat(32),
            confirmations: None,
            policy_oid: None,
            progress: None,
            membership: None,
        }
    }

    #[actix_rt::test]
    async fn a_committed_receipt_is_durable_and_dated_by_its_attestation_or_now() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(Writer::default());
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), Arc::clone(&writer));
        let att = Attestation { data: serde_json::json!({"token": "00"}), anchored_at: None };
        let (receipt, path) = receipts.commit(&request(), att, None, 1_729_740_000_000).await.expect("written");
        assert_eq!(writer.rounds(), 1, "answered only after a round synced it");
        assert_eq!(receipt.time_ms, 1_729_740_000_000, "no time from the target: now");
        let back: Receipt = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back, receipt);
        assert_eq!(check_form(&back), Ok(()));
        let att = Attestation { data: serde_json::json!({}), anchored_at: Some(1_000) };
        let (receipt, _) = receipts.commit(&request(), att, None, 1_729_740_000_000).await.expect("written");
        assert_eq!(receipt.time_ms, 1_000, "the target's time wins");
    }

    #[actix_rt::test]
    async fn a_resumed_attempt_finds_the_whole_receipt_it_wrote_before_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), Arc::new(Writer::default()));
        assert_eq!(receipts.existing(&request()).await, None, "no folder yet");
        let att = Attestation { data: serde_json::json!({"token": "00"}), anchored_at: None };
        let (_, path) = receipts.commit(&request(), att, None, 1_729_740_000_000).await.expect("written");
        assert_eq!(receipts.existing(&request()).await, Some(path.clone()));
        let other = AnchorRequest { attempt_id: "cd".repeat(32), ..request() };
        assert_eq!(receipts.existing(&other).await, None, "another attempt's receipt is not this one's");
        let strong_as_fast = AnchorRequest { cadence: CadenceKind::Fast, ..request() };
        assert_eq!(receipts.existing(&strong_as_fast).await, None, "nor another cadence's");
        // A receipt torn by a crash before its round synced it does not count.
        std::fs::write(&path, b"{\"version\": 1, \"attemp").expect("tear it");
        assert_eq!(receipts.existing(&request()).await, None);
    }

    #[actix_rt::test]
    async fn a_receipt_whose_round_fails_fails_its_anchor_for_resumption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(Writer::new(Arc::new(crate::storage::group_commit::GroupCommit::with_sync(
            crate::storage::group_commit::failing_sync,
        ))));
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), writer);
        let att = Attestation { data: serde_json::json!({}), anchored_at: None };
        let e = receipts.commit(&request(), att, None, 0).await.expect_err("not durable");
        assert!(e.message.contains("receipt could not be written") && e.message.contains("EIO"), "{}", e.message);
    }

    fn sample() -> Receipt {
        Receipt {
            version: RECEIPT_VERSION,
            attempt_id: "ab".repeat(32),
            namespace: "dao:vaultmesh".into(),
            cadence: CadenceKind::Fast,
            target: "local:demo".into(),
            batch_id: "b1".into(),
            root: format!("sha256:{}", "0f".repeat(32)),
            time: crate::clock::rfc3339(1_729_740_000_000),
            time_ms: 1_729_740_000_000,
            inclusion: None,
            attestation: serde_json::json!({"seq": 1}),
            scheduler_version: crate::VERSION.into(),
            ledger: None,
        }
    }

    #[test]
    fn a_written_receipt_parses_back_and_is_well_formed() {
        let bytes = serde_json::to_vec_pretty(&sample()).expect("JSON");
        let back = parse(&bytes).expect("parses");
        assert_eq!(back, sample());
        assert_eq!(check_form(&back), Ok(()));
    }

    #[test]
    fn unknown_fields_versions_and_non_receipts_are_refused() {
        let mut extra = serde_json::to_value(sample()).expect("JSON");
        extra["notarizedBy"] = serde_json::json!("a bank");
        let e = parse(extra.to_string().as_bytes()).expect_err("unknown field");
        assert!(matches!(&e, ReadError::NotAReceipt(m) if m.contains("notarizedBy")), "{e}");
        let mut newer = serde_json::to_value(sample()).expect("JSON");
        newer["version"] = serde_json::json!(99);
        newer["somethingNew"] = serde_json::json!(true);
        assert_eq!(parse(newer.to_string().as_bytes()), Err(ReadError::UnknownVersion("99".into())));
        assert!(matches!(parse(b"# README"), Err(ReadError::NotJson(_))));
        assert!(matches!(parse(b"[1, 2]"), Err(ReadError::NotAReceipt(m)) if m.contains("array")));
        assert!(matches!(parse(b"{}"), Err(ReadError::NotAReceipt(m)) if m.contains("version")));
    }

    #[test]
    fn fields_no_evidence_confirms_are_still_held_to_their_form() {
        type Edit = fn(&mut Receipt);
        let cases: [(&str, Edit); 8] = [
            ("namespace", |r| r.namespace = " padded".into()),
            ("target", |r| r.target = "ipfs:x".into()),
            ("batchId", |r| r.batch_id = String::new()),
            ("root", |r| r.root = format!("sha256:{}", "0F".repeat(32))),
            ("attemptId", |r| r.attempt_id = "xyz".into()),
            ("schedulerVersion", |r| r.scheduler_version = "banana".into()),
            ("schedulerVersion", |r| r.scheduler_version = "1.2".into()),
            ("attestation", |r| r.attestation = serde_json::json!("done")),
        ];
        for (field, edit) in cases {
            let mut r = sample();
            edit(&mut r);
            let e = check_form(&r).expect_err(field);
            assert!(e.contains(field), "{field}: {e}");
        }
        for version in ["0.1.0", "1.20.3-rc.1", "2.0.0+build.5", "1.0.0-alpha+001"] {
            assert!(is_version(version), "{version}");
        }
        for version in ["1.0.0-", "1.0.0+", "1..0", "v1.0.0", "1.0.0 "] {
            assert!(!is_version(version), "{version}");
        }
    }

    fn with_inclusion() -> Receipt {
        let mut r = sample();
        r.inclusion = Some(Inclusion {
            leaf: "01".repeat(40),
            index: 1,
            size: 3,
            path: vec!["aa".repeat(32), "bb".repeat(32)],
            root: "cc".repeat(32),
        });
        r
    }

    #[test]
    fn a_receipt_of_its_own_anchor_has_no_inclusion_field_and_one_of_an_aggregate_reads_back() {
        let own = serde_json::to_value(sample()).expect("JSON");
        assert!(own.get("inclusion").is_none(), "{own}");
        let bytes = serde_json::to_vec_pretty(&with_inclusion()).expect("JSON");
        let back = parse(&bytes).expect("parses");
        assert_eq!(back, with_inclusion());
        assert_eq!(check_form(&back), Ok(()));
        let mut extra = serde_json::to_value(with_inclusion()).expect("JSON");
        extra["inclusion"]["signedBy"] = serde_json::json!("me");
        let e = parse(extra.to_string().as_bytes()).expect_err("unknown field");
        assert!(matches!(&e, ReadError::NotAReceipt(m) if m.contains("inclusion.signedBy")), "{e}");
    }

    #[test]
    fn an_inclusion_proof_is_held_to_its_form() {
        type Edit = fn(&mut Inclusion);
        let cases: [(&str, Edit); 8] = [
            ("inclusion.leaf", |i| i.leaf = String::new()),
            ("inclusion.leaf", |i| i.leaf = "abc".into()),
            ("inclusion.leaf", |i| i.leaf = "AB".into()),
            ("inclusion.path[1]", |i| i.path[1] = "bb".repeat(31)),
            ("inclusion.path[0]", |i| i.path[0] = "AA".repeat(32)),
            ("inclusion.path", |i| i.path = vec!["aa".repeat(32); 65]),
            ("inclusion.root", |i| i.root = format!("sha256:{}", "cc".repeat(32))),
            ("inclusion.root", |i| i.root = "cc".into()),
        ];
        for (field, edit) in cases {
            let mut r = with_inclusion();
            edit(r.inclusion.as_mut().expect("inclusion"));
            let e = check_form(&r).expect_err(field);
            assert!(e.starts_with(field), "{field}: {e}");
        }
    }
}
