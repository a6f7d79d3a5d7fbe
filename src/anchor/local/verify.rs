//! Re-checks a `local:` receipt against its journal: the journal is the one the target
//! names, its hash chain is intact up to the receipt's line, and that line holds every field
//! the receipt states, hashes to `lineHash` and chains from `prev`.

use std::path::Path;

use serde::Deserialize;

use super::{LocalDriver, verify_chain_in};
use crate::fsread::open_regular;
use crate::model::Target;
use crate::model::digest::to_hex;
use crate::model::evidence::{CheckError, Evidence, check_time, read_attestation};
use crate::model::receipt::{Receipt, is_lower_hex};

/// A `local:` attestation, exactly as the driver writes it (a field added there must be
/// added here: the tests verify real receipts through this struct).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalAttestation {
    /// The journal, relative to the root: `out/journal/<encoded name>.jsonl`.
    pub journal: String,
    /// The line's number, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the line as written.
    pub line_hash: String,
    /// Hex SHA-256 of the line before it (64 zeros for the first).
    pub prev: String,
}

/// The journal path a receipt names for `local:<name>`, relative to the root.
fn journal_field(name: &str) -> String {
    format!("out/journal/{}.jsonl", crate::model::fsname::encode(name))
}

/// The replica's file of journal `name` that `journal` (an attestation's field) names, as
/// `<encoded name>@<node>`, if it is one.
pub fn replica_file(journal: &str, name: &str) -> Option<String> {
    let file = journal.strip_prefix("out/journal/")?.strip_suffix(".jsonl")?;
    let node = file.strip_prefix(&format!("{}@", crate::model::fsname::encode(name)))?;
    let valid =
        !node.is_empty() && node.len() <= 128 && node.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    valid.then(|| file.to_string())
}

/// Verifies a `local:` receipt for `target` against the journals under `root`; `anchored` is
/// the root the journal line must hold (the receipt's own, or its aggregate's).
pub fn verify_receipt(
    receipt: &Receipt,
    target: &Target,
    root: &Path,
    anchored: &[u8; 32],
) -> Result<Evidence, CheckError> {
    let att: LocalAttestation = read_attestation(&receipt.attestation)?;
    for (field, value) in [("lineHash", &att.line_hash), ("prev", &att.prev)] {
        if !is_lower_hex(value, 64) {
            return Err(CheckError::Malformed(format!("attestation.{field} is not 64 lower-case hex digits")));
        }
    }
    if att.seq == 0 {
        return Err(CheckError::Malformed("attestation.seq is 0; journal lines count from 1".into()));
    }
    let mut checks = Vec::new();
    let named = journal_field(&target.name);
    // Cluster mode's receipts (with a ledger) name one replica's file of the journal.
    let replicas = receipt.ledger.is_some().then(|| replica_file(&att.journal, &target.name)).flatten();
    let journal = match replicas {
        Some(file) => root.join("out").join("journal").join(format!("{file}.jsonl")),
        None if att.journal == named => LocalDriver::journal_path(root, &target.name),
        None => {
            return Err(CheckError::Mismatch(format!(
                "the attestation's journal {:?} is not {named}, the journal of {target}",
                att.journal
            )));
        }
    };
    // Whether the journal can be read at all decides "not verifiable" against "contradicted".
    let file = open_regular(&journal).map_err(|e| {
        let what = if e.is_not_found() { "not found".to_string() } else { e.to_string() };
        CheckError::Unreachable(format!(
            "journal {}: {what}; give the root whose out/journal/ holds it with --root DIR (or VMSH_ROOT)",
            journal.display()
        ))
    })?;
    let seq = att.seq;
    let (summary, line) = verify_chain_in(file, Some(seq))
        .map_err(|e| CheckError::Mismatch(format!("journal {}: {e}", journal.display())))?;
    checks.push(format!("journal {} hash chain intact over lines 1..={}", journal.display(), summary.lines));
    let Some((entry, hash)) = line else {
        return Err(CheckError::Mismatch(format!("journal {} has no line {seq}", journal.display())));
    };
    let same = [
        ("namespace", entry.namespace == receipt.namespace),
        ("cadence", entry.cadence == receipt.cadence),
        ("target", entry.target == receipt.target),
        ("batch id", entry.batch_id == receipt.batch_id),
        ("root", entry.root == format!("sha256:{}", to_hex(anchored))),
        ("attempt id", entry.attempt_id == receipt.attempt_id),
        ("time", entry.time == receipt.time),
    ];
    for (what, same) in same {
        if !same {
            return Err(CheckError::Mismatch(format!("journal line {seq} has a different {what} than the receipt")));
        }
    }
    checks.push(check_time(receipt, entry.time_ms, &format!("journal line {seq}'s time"))?);
    checks.push(format!("journal line {seq} names this namespace, cadence, target, batch, root and attempt"));
    if entry.prev != att.prev {
        return Err(CheckError::Mismatch(format!(
            "journal line {seq} chains from prev {}, not the receipt's prev {}",
            entry.prev, att.prev
        )));
    }
    if hash != att.line_hash {
        return Err(CheckError::Mismatch(format!(
            "journal line {seq} hashes to {hash}, not the receipt's lineHash {}",
            att.line_hash
        )));
    }
    checks.push(format!("journal line {seq} hashes to the receipt's lineHash {hash} and chains from its prev"));
    Ok(Evidence {
        checks,
        attests: vec!["namespace", "cadence", "target", "batchId", "root", "time", "timeMs", "attemptId"],
        claims: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    /// The root the driver wrote into, and the receipt of the second of its two anchors.
    async fn written() -> (tempfile::TempDir, Receipt) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(crate::storage::writer::Writer::default());
        let d = LocalDriver::new(
            tmp.path().to_path_buf(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::clone(&writer),
        );
        let receipts = crate::storage::receipts::ReceiptWriter::new(tmp.path().to_path_buf(), writer);
        super::super::tests::anchored(&d, &receipts, "a0").await;
        let (receipt, _) = super::super::tests::anchored(&d, &receipts, "a1").await;
        (tmp, receipt)
    }

    fn root_of(receipt: &Receipt) -> [u8; 32] {
        receipt.root.strip_prefix("sha256:").and_then(crate::model::digest::parse_hex32).expect("a root")
    }

    fn target() -> Target {
        Target::parse("local:demo").expect("target")
    }

    #[actix_rt::test]
    async fn a_receipt_the_driver_wrote_verifies_with_every_field_attested() {
        let (tmp, receipt) = written().await;
        let evidence = verify_receipt(&receipt, &target(), tmp.path(), &root_of(&receipt)).expect("verifies");
        for field in ["namespace", "cadence", "target", "batchId", "root", "time", "timeMs", "attemptId"] {
            assert!(evidence.attests.contains(&field), "{field}: {evidence:?}");
        }
    }

    #[actix_rt::test]
    async fn each_attestation_field_is_checked_or_refused() {
        let (tmp, receipt) = written().await;
        let with = |key: &str, value: serde_json::Value| {
            let mut r = receipt.clone();
            r.attestation[key] = value;
            verify_receipt(&r, &target(), tmp.path(), &root_of(&r))
        };
        let other_hash = "ab".repeat(32);
        assert!(
            matches!(with("journal", "out/journal/x.jsonl".into()), Err(CheckError::Mismatch(m)) if m.contains("journal"))
        );
        assert!(matches!(with("seq", 1.into()), Err(CheckError::Mismatch(m)) if m.contains("line 1")));
        assert!(
            matches!(with("lineHash", other_hash.clone().into()), Err(CheckError::Mismatch(m)) if m.contains("lineHash"))
        );
        assert!(matches!(with("prev", other_hash.into()), Err(CheckError::Mismatch(m)) if m.contains("prev")));
        assert!(matches!(with("prev", "AB".into()), Err(CheckError::Malformed(m)) if m.contains("prev")));
        assert!(matches!(with("seq", 0.into()), Err(CheckError::Malformed(m)) if m.contains("seq")));
        assert!(matches!(with("extra", 1.into()), Err(CheckError::Malformed(m)) if m.contains("extra")));
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let e =
            verify_receipt(&receipt, &target(), elsewhere.path(), &root_of(&receipt)).expect_err("no journal there");
        assert!(matches!(&e, CheckError::Unreachable(m) if m.contains("not found") && m.contains("--root")), "{e:?}");
    }

    #[actix_rt::test]
    async fn a_journal_that_is_no_journal_is_refused_without_being_read_whole_or_waited_on() {
        let (tmp, receipt) = written().await;
        let journal = LocalDriver::journal_path(tmp.path(), "demo");
        std::fs::write(&journal, vec![b'x'; 3 * 1024 * 1024]).expect("write");
        let e = verify_receipt(&receipt, &target(), tmp.path(), &root_of(&receipt)).expect_err("one endless line");
        assert!(matches!(&e, CheckError::Mismatch(m) if m.contains("longer than")), "{e:?}");
        std::fs::remove_file(&journal).expect("remove");
        let path = std::ffi::CString::new(journal.to_str().expect("utf-8")).expect("no NUL");
        // SAFETY: mkfifo only reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
        let e = verify_receipt(&receipt, &target(), tmp.path(), &root_of(&receipt)).expect_err("a named pipe");
        assert!(matches!(&e, CheckError::Unreachable(m) if m.contains("not a regular file")), "{e:?}");
    }
}
