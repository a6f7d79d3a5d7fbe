//! Merkle trees as RFC 9162 (Certificate Transparency v2) §2.1 defines them: one root over many
//! leaves, and for each leaf an audit path that proves it is in the tree.
//!
//! The standard is followed to the letter, domain separation included (0x00 before a leaf,
//! 0x01 before two children), so that anyone with an RFC 9162 implementation can check our
//! proofs, and a leaf can never pass for an interior node.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf's, a node's or a root.
pub type Hash = [u8; 32];

/// The longest audit path a tree whose size fits in a `u64` can have.
pub const MAX_PATH: usize = 64;

/// The hash of a leaf: SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the tree with no leaves: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (`n` > 1): where RFC 9162 splits a tree of `n`.
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    let k = n.next_power_of_two() / 2;
    if k == n { n / 2 } else { k }
}

/// A tree over leaves in the order given: its root and every leaf's audit path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The Merkle Tree Hash of all leaves (RFC 9162 §2.1.1).
    pub root: Hash,
    /// For each leaf, by index, its audit path (RFC 9162 §2.1.3.1): the deepest sibling first.
    pub paths: Vec<Vec<Hash>>,
}

impl Tree {
    /// Builds the tree over `leaves` (the leaf bytes, not yet hashed), with every audit path,
    /// in O(n log n).
    pub fn build<L: AsRef<[u8]>>(leaves: &[L]) -> Tree {
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
        Tree::from_leaf_hashes(&hashes)
    }

    /// Builds the tree whose leaves hash to `hashes`.
    pub fn from_leaf_hashes(hashes: &[Hash]) -> Tree {
        if hashes.is_empty() {
            return Tree { root: empty_root(), paths: Vec::new() };
        }
        let mut paths = vec![Vec::new(); hashes.len()];
        let root = subtree(hashes, &mut paths);
        Tree { root, paths }
    }

    /// The number of leaves.
    pub fn size(&self) -> usize {
        self.paths.len()
    }
}

/// MTH(D[n]) of a non-empty run of leaf hashes. Each leaf of one half gets the other half's
/// root appended to its path once both halves are done, so the deepest sibling comes first, as
/// PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) (and its mirror) has it. Each level touches
/// every leaf once: O(n log n) in all, with a recursion as deep as the tree.
fn subtree(hashes: &[Hash], paths: &mut [Vec<Hash>]) -> Hash {
    match hashes {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split(hashes.len());
            let (left_hashes, right_hashes) = hashes.split_at(k);
            let (left_paths, right_paths) = paths.split_at_mut(k);
            let left = subtree(left_hashes, left_paths);
            let right = subtree(right_hashes, right_paths);
            left_paths.iter_mut().for_each(|p| p.push(right));
            right_paths.iter_mut().for_each(|p| p.push(left));
            node_hash(&left, &right)
        }
    }
}

/// Why an inclusion proof does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not that of a leaf of a tree of that size.
    #[error("index {index} is not a leaf of a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf's index.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// The path has more hashes than the way from that leaf to the root.
    #[error("the path is longer than the way from leaf {index} to the root of a tree of size {size}")]
    PathTooLong {
        /// The leaf's index.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// The path ends before the root.
    #[error("the path ends before the root of a tree of size {size}")]
    PathTooShort {
        /// The tree's size.
        size: u64,
    },
    /// The path leads to another root.
    #[error("the path leads to root {}, not to the root given", super::digest::to_hex(.0))]
    OtherRoot(Hash),
}

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is `root`,
/// by the verification algorithm of RFC 9162 §2.1.3.2, step by step.
pub fn verify_inclusion(leaf_hash: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> Result<(), ProofError> {
    // 1. leaf_index must be less than tree_size.
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash.
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    // 4. For each p in the path:
    for p in path {
        // a. sn = 0 means the root was reached with hashes left over.
        if s == 0 {
            return Err(ProofError::PathTooLong { index, size });
        }
        // b. A right child, or the last node of its level (which has no right sibling):
        if f & 1 == 1 || f == s {
            // i. p is the left sibling.
            r = node_hash(p, &r);
            // ii. Climb past the levels where this node has no sibling.
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            // Otherwise p is the right sibling.
            r = node_hash(&r, p);
        }
        // c. One level up.
        f >>= 1;
        s >>= 1;
    }
    // 5. The path must end at the root, and lead to the one given.
    if s != 0 {
        return Err(ProofError::PathTooShort { size });
    }
    if r != *root {
        return Err(ProofError::OtherRoot(r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH(D[n]) straight from RFC 9162 §2.1.1's recursive definition, to check the builder by.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves {
            [] => empty_root(),
            [one] => leaf_hash(one),
            _ => {
                let k = split(leaves.len());
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]) straight from RFC 9162 §2.1.3.1.
    fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
        if leaves.len() <= 1 {
            return Vec::new();
        }
        let k = split(leaves.len());
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf {i}").repeat(i % 3 + 1).into_bytes()).collect()
    }

    #[test]
    fn the_split_is_the_largest_power_of_two_below_the_size() {
        let cases = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (64, 32), (65, 64)];
        for (n, k) in cases {
            assert_eq!(split(n), k, "n = {n}");
        }
    }

    #[test]
    fn the_empty_tree_and_one_leaf_have_the_rfc_roots() {
        assert_eq!(
            crate::model::digest::to_hex(&Tree::build::<Vec<u8>>(&[]).root),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let tree = Tree::build(&[b"x"]);
        assert_eq!(tree.root, leaf_hash(b"x"));
        assert_eq!(tree.paths, vec![Vec::<Hash>::new()]);
        assert_ne!(leaf_hash(b"x"), Sha256::digest(b"x").as_slice(), "leaves are domain-separated");
    }

    #[test]
    fn roots_and_paths_are_those_of_the_rfc_definitions_for_every_size_up_to_64() {
        for n in 1..=64 {
            let l = leaves(n);
            let tree = Tree::build(&l);
            assert_eq!(tree.root, mth(&l), "root of {n}");
            for m in 0..n {
                assert_eq!(tree.paths[m], path(m, &l), "path of {m} in {n}");
            }
        }
    }

    #[test]
    fn every_leaf_of_every_tree_up_to_64_verifies() {
        for n in 1..=64u64 {
            let l = leaves(n as usize);
            let tree = Tree::build(&l);
            for (m, leaf) in l.iter().enumerate() {
                let got = verify_inclusion(&leaf_hash(leaf), m as u64, n, &tree.paths[m], &tree.root);
                assert_eq!(got, Ok(()), "leaf {m} of {n}");
            }
        }
    }

    /// Every way of changing a proof but its size, each of which must fail.
    type Proof = (Hash, u64, u64, Vec<Hash>, Hash);
    fn mutations(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> Vec<(String, Proof)> {
        let mut out = Vec::new();
        let mut flipped = *leaf;
        flipped[0] ^= 1;
        out.push(("leaf".to_string(), (flipped, index, size, path.to_vec(), *root)));
        let mut other_root = *root;
        other_root[31] ^= 0x80;
        out.push(("root".into(), (*leaf, index, size, path.to_vec(), other_root)));
        for i in [index.wrapping_sub(1), index + 1, index ^ 1, index + size, u64::MAX] {
            if i != index {
                out.push((format!("index {i}"), (*leaf, i, size, path.to_vec(), *root)));
            }
        }
        for i in 0..path.len() {
            for byte in [0, 17, 31] {
                let mut p = path.to_vec();
                p[i][byte] ^= 1;
                out.push((format!("path[{i}] byte {byte}"), (*leaf, index, size, p, *root)));
            }
            let mut missing = path.to_vec();
            missing.remove(i);
            out.push((format!("path[{i}] missing"), (*leaf, index, size, missing, *root)));
        }
        for at in 0..=path.len() {
            let mut extra = path.to_vec();
            extra.insert(at, [0xab; 32]);
            out.push((format!("extra hash at {at}"), (*leaf, index, size, extra, *root)));
        }
        if path.len() > 1 && path[0] != path[1] {
            let mut swapped = path.to_vec();
            swapped.swap(0, 1);
            out.push(("path swapped".into(), (*leaf, index, size, swapped, *root)));
        }
        out
    }

    #[test]
    fn a_changed_leaf_index_path_element_or_root_fails() {
        for n in 1..=64u64 {
            let l = leaves(n as usize);
            let tree = Tree::build(&l);
            for (m, leaf) in l.iter().enumerate() {
                for (what, (leaf, index, size, path, root)) in
                    mutations(&leaf_hash(leaf), m as u64, n, &tree.paths[m], &tree.root)
                {
                    let got = verify_inclusion(&leaf, index, size, &path, &root);
                    assert!(got.is_err(), "leaf {m} of {n}, changed {what}: verified");
                }
            }
        }
    }

    #[test]
    fn every_other_index_of_the_same_size_fails() {
        for n in 1..=64u64 {
            let l = leaves(n as usize);
            let tree = Tree::build(&l);
            for m in 0..n {
                let h = leaf_hash(&l[m as usize]);
                for other in (0..n + 2).filter(|&o| o != m) {
                    let got = verify_inclusion(&h, other, n, &tree.paths[m as usize], &tree.root);
                    assert!(got.is_err(), "leaf {m} of {n} claimed as {other}: verified");
                }
            }
        }
    }

    /// The sides the siblings of leaf `index` sit on, leaf to root, in a tree of `size`: all
    /// that the verification of §2.1.3.2 reads of the index and the size.
    fn shape(index: u64, size: u64) -> Vec<bool> {
        let (mut f, mut s, mut sides) = (index, size - 1, Vec::new());
        while s > 0 {
            let left = f & 1 == 1 || f == s;
            sides.push(left);
            if left && f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
            f >>= 1;
            s >>= 1;
        }
        sides
    }

    #[test]
    fn a_changed_size_fails_unless_the_root_cannot_tell_it_which_is_why_leaves_carry_it() {
        // The root commits to the leaves, not to their number: leaf 0 of 4 and leaf 0 of 3
        // have siblings on the same sides, so one proof serves both sizes. RFC 9162 signs the
        // size beside the root for that reason; our leaves carry it instead.
        let tree = Tree::build(&leaves(4));
        let h = leaf_hash(&leaves(4)[0]);
        assert_eq!(verify_inclusion(&h, 0, 3, &tree.paths[0], &tree.root), Ok(()));
        for n in 1..=64u64 {
            let l = leaves(n as usize);
            let tree = Tree::build(&l);
            for m in 0..n {
                let h = leaf_hash(&l[m as usize]);
                for other in (0..=130u64).chain([u64::MAX]).filter(|&o| o != n) {
                    let got = verify_inclusion(&h, m, other, &tree.paths[m as usize], &tree.root);
                    let same_shape = other > m && shape(m, other) == shape(m, n);
                    assert_eq!(got.is_ok(), same_shape, "leaf {m} of {n} claimed in a tree of {other}: {got:?}");
                }
            }
        }
    }

    #[test]
    fn an_index_at_or_past_the_size_fails() {
        let tree = Tree::build(&leaves(5));
        let h = leaf_hash(&leaves(5)[4]);
        assert_eq!(
            verify_inclusion(&h, 5, 5, &tree.paths[4], &tree.root),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert!(verify_inclusion(&h, 0, 0, &[], &empty_root()).is_err());
    }

    #[test]
    fn no_input_makes_verification_panic() {
        // A small deterministic generator: arbitrary indexes, sizes and path lengths.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let edges = [0, 1, 2, 3, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1];
        for i in 0..20_000 {
            let pick = |v: u64| if v.is_multiple_of(4) { edges[(v / 4 % 8) as usize] } else { v % 200 };
            let (index, size) = (pick(next()), pick(next()));
            let len = (next() % 70) as usize;
            let path: Vec<Hash> = (0..len).map(|j| [(i + j) as u8; 32]).collect();
            let _ = verify_inclusion(&[i as u8; 32], index, size, &path, &[0; 32]);
        }
    }

    #[test]
    fn a_large_tree_builds_every_path_quickly() {
        let hashes: Vec<Hash> = (0..10_000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let tree = Tree::from_leaf_hashes(&hashes);
        assert_eq!(tree.size(), 10_000);
        assert!(tree.paths.iter().all(|p| p.len() <= 14));
        for m in [0, 1, 4095, 4096, 8191, 8192, 9_999] {
            assert_eq!(verify_inclusion(&hashes[m], m as u64, 10_000, &tree.paths[m], &tree.root), Ok(()));
        }
    }
}
