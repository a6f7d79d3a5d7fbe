//! Receipts: one JSON file per successful anchor, under `VMSH_ROOT/out/anchors/<namespace>/`.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::{WallMs, compact_utc};
use crate::config::CadenceKind;
use crate::durable::{self, SHARED_FILE};
use crate::fsname;
use crate::group_commit::GroupCommit;

/// Receipt format version.
pub const RECEIPT_VERSION: u32 = 1;

/// What a third party needs to check an anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Receipt format version.
    pub version: u32,
    /// The attempt's deterministic id.
    pub attempt_id: String,
    /// Namespace name.
    pub namespace: String,
    /// Cadence that anchored.
    pub cadence: CadenceKind,
    /// Target, as configured (`local:demo`).
    pub target: String,
    /// The batch's id.
    pub batch_id: String,
    /// The root, `sha256:<hex>`.
    pub root: String,
    /// When the anchor happened, RFC 3339 UTC.
    pub time: String,
    /// The same instant in Unix milliseconds.
    pub time_ms: WallMs,
    /// The driver's proof.
    pub attestation: serde_json::Value,
    /// Version of the scheduler that wrote this receipt.
    pub scheduler_version: String,
}

/// Where a receipt is written: sortable by time, unique by attempt.
pub fn receipt_path(root: &Path, receipt: &Receipt) -> PathBuf {
    let short_id: String = receipt.attempt_id.chars().take(16).collect();
    root.join("out").join("anchors").join(fsname::encode(&receipt.namespace)).join(format!(
        "{}-{}-{short_id}.json",
        compact_utc(receipt.time_ms),
        receipt.cadence
    ))
}

/// Writes a receipt durably (with `commit`'s next round); returns its path.
pub fn write(root: &Path, receipt: &Receipt, commit: &GroupCommit) -> std::io::Result<PathBuf> {
    let (path, file) = write_unsynced(root, receipt)?;
    commit.sync(&file)?;
    Ok(path)
}

/// Writes a receipt without waiting for it to be durable; returns its path and the file,
/// whose file system a round of the group commit must sync before the receipt counts.
pub fn write_unsynced(root: &Path, receipt: &Receipt) -> std::io::Result<(PathBuf, File)> {
    let path = receipt_path(root, receipt);
    let mut bytes = serde_json::to_vec_pretty(receipt).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let file = durable::write_unsynced(&path, &bytes, SHARED_FILE)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            attestation: serde_json::json!({"line": 1}),
            scheduler_version: crate::VERSION.into(),
        };
        let path = write(tmp.path(), &receipt, &GroupCommit::new()).expect("write");
        assert!(path.starts_with(tmp.path().join("out/anchors")));
        assert_eq!(path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()), Some("%2E.%2F..%2Fetc"));
        let back: Receipt = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back, receipt);
    }
}
