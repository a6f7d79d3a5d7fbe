//! Which live replica owns a namespace: rendezvous (highest random weight) hashing.
//!
//! Every replica computes the same answer from the same member list, with no coordination:
//! a namespace belongs to the member whose `SHA-256(member ‖ 0x00 ‖ namespace)` is highest.
//! When a member joins it takes only the namespaces it now wins (about 1/n of them), and
//! when one leaves only its own namespaces move, each to the member that ranked second for
//! it. The hash is SHA-256 so that no member id, however chosen, can aim at a namespace.
//!
//! This decides where a namespace *should* be; a namespace *moves* only once its old
//! owner has let it go or its lease has expired (the claim in etcd is the fence).

use sha2::{Digest, Sha256};

/// The weight of `member` for `namespace`: the first 8 bytes of the SHA-256 of both.
pub fn weight(member: &str, namespace: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    // A separator, so ("ab", "c") and ("a", "bc") weigh differently.
    h.update([0u8]);
    h.update(namespace.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The member that owns `namespace` among `members`; `None` when there are none. Ties (a
/// 64-bit collision) go to the smaller member id, so every replica agrees.
pub fn owner<'a>(namespace: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members.into_iter().map(|m| (weight(m, namespace), std::cmp::Reverse(m))).max().map(|(_, m)| m.0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn namespaces(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("dao:ns-{i:05}")).collect()
    }

    fn assignment<'a>(names: &[String], members: &[&'a str]) -> BTreeMap<String, &'a str> {
        names.iter().map(|n| (n.clone(), owner(n, members.iter().copied()).expect("a member"))).collect()
    }

    #[test]
    fn every_replica_computes_the_same_owner_whatever_the_order_of_the_list() {
        let a = ["node-a", "node-b", "node-c"];
        let b = ["node-c", "node-a", "node-b"];
        for n in namespaces(500) {
            assert_eq!(owner(&n, a), owner(&n, b), "{n}");
        }
        assert_eq!(owner("x", []), None);
    }

    #[test]
    fn namespaces_spread_evenly_over_the_members() {
        let names = namespaces(10_000);
        let members = ["node-a", "node-b", "node-c"];
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for owner in assignment(&names, &members).values() {
            *counts.entry(owner).or_default() += 1;
        }
        for (m, c) in &counts {
            // 3,333 each on average; a binomial spread of a few dozen.
            assert!((3_100..3_570).contains(c), "{m} owns {c} of 10,000: {counts:?}");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_namespaces_and_a_member_joining_takes_only_its_share() {
        let names = namespaces(10_000);
        let three = assignment(&names, &["node-a", "node-b", "node-c"]);
        let two = assignment(&names, &["node-a", "node-b"]);
        for (n, before) in &three {
            if *before != "node-c" {
                assert_eq!(two[n], *before, "{n} moved though its owner stayed");
            }
        }
        let four = assignment(&names, &["node-a", "node-b", "node-c", "node-d"]);
        let moved: Vec<_> = names.iter().filter(|n| three[*n] != four[*n]).collect();
        assert!(moved.iter().all(|n| four[*n] == "node-d"), "only to the new member");
        assert!((2_300..2_700).contains(&moved.len()), "about a quarter moves: {}", moved.len());
    }

    #[test]
    fn the_separator_keeps_member_and_namespace_apart() {
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
    }
}
