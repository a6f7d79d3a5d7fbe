//! Our Merkle trees and inclusion proofs, checked by an implementation that is not ours
//! (`tests/fixtures/rfc9162.mjs`, written from RFC 9162's text and run by Node.js), and the
//! worked example of docs/RECEIPTS.md checked against the code.

use std::path::Path;
use std::process::Command;

use vmsh_scheduler::model::digest::to_hex;
use vmsh_scheduler::model::merkle::Tree;

/// Leaves of lengths 0 to 97, different for every size and index.
fn leaves(size: usize) -> Vec<Vec<u8>> {
    (0..size).map(|i| (0..(i * 7 + size) % 98).map(|j| (i * 31 + j * 17 + size) as u8).collect()).collect()
}

#[test]
fn every_tree_and_proof_up_to_40_leaves_passes_an_independent_rfc_9162_check() {
    let cases: Vec<serde_json::Value> = (1..=40)
        .map(|size| {
            let leaves = leaves(size);
            let tree = Tree::build(&leaves);
            let proofs: Vec<serde_json::Value> = (0..size)
                .map(|i| serde_json::json!({"index": i, "path": tree.paths[i].iter().map(|h| to_hex(h)).collect::<Vec<_>>()}))
                .collect();
            serde_json::json!({
                "leaves": leaves.iter().map(|l| to_hex(l)).collect::<Vec<_>>(),
                "root": to_hex(&tree.root),
                "proofs": proofs,
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("cases.json");
    std::fs::write(&input, serde_json::to_vec(&cases).expect("JSON")).expect("write the cases");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc9162.mjs");
    let out = match Command::new("node").arg(&script).arg(&input).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "node (Node.js) is needed to check the Merkle proofs independently ({e}): install it with `apt-get install nodejs`"
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the independent RFC 9162 check failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checked 820 proofs in 40 trees, 0 failures"), "{stdout}");
}
