//! `vmsh-scheduler verify RECEIPT`: a receipt checks out against its journal, and tampering
//! with either is caught.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::{Root, Scheduler, exec_targets, root_hex, wait_for};

fn verify(root: &Root, receipt: &Path) -> (i32, String) {
    crate::helpers::run_verify(root, receipt, &[])
}

fn receipt_files(root: &Root, ns: &str) -> Vec<PathBuf> {
    crate::helpers::receipt_files(root, ns)
}

fn anchored_root(targets: Option<&str>, target: &str) -> Root {
    let root = Root::new();
    if let Some(t) = targets {
        root.anchors(t);
    }
    root.namespaces(&format!("namespaces:\n  n:\n    cadence:\n      fast: {{target: \"{target}\", every: \"1s\"}}\n"))
        .batch(None, "0001.json", "b1", &root_hex(3));
    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(10), "three receipts", || (receipt_files(&root, "n").len() >= 3).then_some(()));
    s.signal(libc::SIGTERM);
    s.wait_exit(Duration::from_secs(10));
    root
}

#[test]
fn a_local_receipt_verifies_against_its_journal() {
    let root = anchored_root(None, "local:j");
    for receipt in receipt_files(&root, "n") {
        let (code, out) = verify(&root, &receipt);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("hash chain intact"), "{out}");
        assert!(out.contains("VERIFIED"), "{out}");
    }
}

#[test]
fn a_tampered_receipt_fails_verification() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[1].clone();
    let text = std::fs::read_to_string(&receipt).expect("read");
    std::fs::write(&receipt, text.replace(&root_hex(3), &root_hex(4))).expect("tamper");
    let (code, out) = verify(&root, &receipt);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("different root"), "{out}");
}

#[test]
fn a_tampered_journal_fails_verification() {
    let root = anchored_root(None, "local:j");
    let journal = root.journal("j");
    let text = std::fs::read_to_string(&journal).expect("read");
    // Rewrite the first line's batch id: every later receipt's chain check must fail.
    std::fs::write(&journal, text.replacen("\"b1\"", "\"b9\"", 1)).expect("tamper");
    let receipt = receipt_files(&root, "n")[2].clone();
    let (code, out) = verify(&root, &receipt);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match the hash of line 1"), "{out}");
}

#[test]
fn an_exec_receipt_is_reported_as_not_verifiable() {
    let root = anchored_root(Some(&exec_targets(&[("t", "echo '{\"ok\": true}'")])), "exec:t");
    let (code, out) = verify(&root, &receipt_files(&root, "n")[0]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("NOT VERIFIABLE"), "{out}");
}
