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

/// The `name: value` lines of the worked example's text block in docs/RECEIPTS.md.
fn worked_example() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RECEIPTS.md"))
        .expect("docs/RECEIPTS.md");
    let from = text.find("### Worked example").expect("the worked example of docs/RECEIPTS.md");
    let block = &text[from..];
    let start = block.find("```text\n").expect("its text block") + "```text\n".len();
    let end = start + block[start..].find("```").expect("the end of its text block");
    block[start..end]
        .lines()
        .map(|l| {
            let (name, value) = l.split_once(": ").expect("a `name: value` line");
            (name.to_string(), value.to_string())
        })
        .collect()
}

fn hash(hex: &str) -> [u8; 32] {
    vmsh_scheduler::model::digest::parse_hex32(hex).expect("64 hex digits")
}

#[test]
fn the_worked_example_of_the_receipts_docs_is_what_the_code_computes() {
    use vmsh_scheduler::model::aggregate::{Leaf, tree_leaves};
    use vmsh_scheduler::model::merkle::{leaf_hash, node_hash, verify_inclusion};

    let lines = worked_example();
    let get = |name: &str| -> &str {
        &lines.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("the example has no {name:?} line")).1
    };
    let leaves: Vec<Vec<u8>> = (0..3)
        .map(|i| vmsh_scheduler::model::digest::parse_hex(get(&format!("leaf {i}"))).expect("a leaf in hex"))
        .collect();
    let members: Vec<_> = leaves.iter().map(|l| Leaf::decode(l).expect("a leaf the code reads").member).collect();
    let mut names: Vec<&str> = members.iter().map(|m| m.namespace.as_str()).collect();
    names.sort();
    assert_eq!(names, ["dao:vaultmesh", "lab:sensors", "ops:audit"]);
    assert_eq!(tree_leaves(&members).expect("leaves"), leaves, "the leaves, in the tree's order");
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(leaf_hash(leaf), hash(get(&format!("leaf hash {i}"))), "leaf hash {i}");
    }
    assert_eq!(node_hash(&leaf_hash(&leaves[0]), &leaf_hash(&leaves[1])), hash(get("node 0-1")));
    let tree = Tree::build(&leaves);
    assert_eq!(tree.root, hash(get("root")), "root");
    for (i, leaf) in leaves.iter().enumerate() {
        let path: Vec<[u8; 32]> = get(&format!("path {i}")).split(' ').map(hash).collect();
        assert_eq!(tree.paths[i], path, "path {i}");
        assert_eq!(verify_inclusion(&leaf_hash(leaf), i as u64, 3, &path, &tree.root), Ok(()), "path {i} verifies");
    }
}
