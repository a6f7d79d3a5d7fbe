//! The leaves of an aggregate: what one namespace's anchor contributes to a tree whose root is
//! anchored once for many, written byte by byte (docs/RECEIPTS.md, "Inclusion proofs").
//!
//! A leaf binds everything a receipt says about its anchor, so that a proof of the leaf's
//! inclusion under an anchored root proves the receipt's namespace, cadence, batch, root and
//! attempt. It binds the tree's size too: the root commits to the leaves but not to their
//! number, and the anchor holds nothing but the root.
//!
//! Version 1, every field in this order:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `0x01` |
//! | 2 + n | namespace: length n (u16, big-endian), then n bytes of UTF-8 |
//! | 2 + n | cadence name (`fast`, `strong`, `cold`), the same way |
//! | 2 + n | batch id, the same way |
//! | 32 | the batch's root |
//! | 32 | the attempt id |
//! | 8 | the tree's size (u64, big-endian) |

use super::digest::to_hex;
use super::merkle::{Hash, Tree};
use super::receipt::Inclusion;
use super::{AnchorRequest, CadenceKind, Target};

/// The leaf format this build writes and reads.
pub const LEAF_VERSION: u8 = 1;

/// The namespace an aggregate's anchor names: none may be empty, so it cannot be taken for one.
pub const NAMESPACE: &str = "";

/// The prefix of an aggregate's batch id, `aggregate-<size>`.
const BATCH_PREFIX: &str = "aggregate-";

/// What an aggregate's anchor names in place of a namespace's batch and attempt: the target
/// holds these (a `local:` journal line, an eip155 contract's batch id), so the scheduler
/// that sends the anchor and `verify` that checks it must derive them alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Always [`NAMESPACE`].
    pub namespace: &'static str,
    /// `aggregate-<size>`.
    pub batch_id: String,
    /// The tree's root in lower-case hex: unique, since the leaves hold their attempt ids.
    pub attempt_id: String,
}

/// The identity of the anchor of the tree of `size` leaves whose root is `root`.
pub fn identity(root: &Hash, size: u64) -> Identity {
    Identity { namespace: NAMESPACE, batch_id: format!("{BATCH_PREFIX}{size}"), attempt_id: to_hex(root) }
}

/// Where, how and in which group an aggregate is anchored: its members share all of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// The members' target.
    pub target: Target,
    /// The members' cadence.
    pub cadence: CadenceKind,
    /// The members' required confirmations.
    pub confirmations: Option<u32>,
    /// The members' TSA policy.
    pub policy_oid: Option<String>,
}

impl GroupKey {
    /// The group a member's request belongs to.
    pub fn of(req: &AnchorRequest) -> Self {
        Self {
            target: req.target.clone(),
            cadence: req.cadence,
            confirmations: req.confirmations,
            policy_oid: req.policy_oid.clone(),
        }
    }

    /// The request that anchors the tree of `size` leaves whose root is `root`; `progress` is
    /// what an earlier run of it recorded.
    pub fn request(&self, root: Hash, size: u64, progress: Option<serde_json::Value>) -> AnchorRequest {
        let id = identity(&root, size);
        AnchorRequest {
            namespace: id.namespace.to_string(),
            cadence: self.cadence,
            target: self.target.clone(),
            batch_id: id.batch_id,
            root,
            attempt_id: id.attempt_id,
            confirmations: self.confirmations,
            policy_oid: self.policy_oid.clone(),
            progress,
            membership: None,
        }
    }
}

/// The number of leaves of the aggregate `req` anchors, when it anchors one.
pub fn size_of(req: &AnchorRequest) -> Option<u64> {
    if req.namespace != NAMESPACE {
        return None;
    }
    req.batch_id.strip_prefix(BATCH_PREFIX)?.parse().ok().filter(|&n| n > 0)
}

/// The member a request anchors, when its attempt id is a hash as the scheduler makes them.
pub fn member_of(req: &AnchorRequest) -> Option<Member> {
    Some(Member {
        namespace: req.namespace.clone(),
        cadence: req.cadence,
        batch_id: req.batch_id.clone(),
        root: req.root,
        attempt_id: super::digest::parse_hex32(&req.attempt_id)?,
    })
}

/// One namespace's anchor, as a member of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// The namespace whose root is anchored.
    pub namespace: String,
    /// The cadence that anchors it.
    pub cadence: CadenceKind,
    /// The batch the root comes from.
    pub batch_id: String,
    /// The batch's root.
    pub root: Hash,
    /// The attempt's id.
    pub attempt_id: Hash,
}

/// A leaf as its bytes say: a member, and the size of the tree it is a leaf of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Whose anchor the leaf is.
    pub member: Member,
    /// How many leaves its tree has.
    pub size: u64,
}

/// Why bytes are not a leaf, or a member cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    /// A text field that is empty or longer than a u16 length can say.
    #[error("its {0} must be 1 to 65535 bytes long")]
    FieldLength(&'static str),
    /// The first byte names a format this build does not know.
    #[error("leaf format version {0} is unknown to this build, which reads version {LEAF_VERSION}")]
    UnknownVersion(u8),
    /// The bytes end inside a field.
    #[error("it ends inside its {0}")]
    Truncated(&'static str),
    /// A text field that is not UTF-8.
    #[error("its {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A cadence name that is none of the three.
    #[error("its cadence {0:?} is not fast, strong or cold")]
    UnknownCadence(String),
    /// Bytes after the last field.
    #[error("it has {0} bytes after its last field")]
    TrailingBytes(usize),
    /// A tree of no leaves has no leaf.
    #[error("its tree size is 0")]
    EmptyTree,
}

impl Leaf {
    /// The leaf's bytes, as docs/RECEIPTS.md gives them.
    pub fn encode(&self) -> Result<Vec<u8>, LeafError> {
        let m = &self.member;
        if self.size == 0 {
            return Err(LeafError::EmptyTree);
        }
        let mut out = Vec::with_capacity(1 + 6 + m.namespace.len() + 6 + m.batch_id.len() + 72);
        out.push(LEAF_VERSION);
        for (field, text) in
            [("namespace", m.namespace.as_str()), ("cadence", m.cadence.as_str()), ("batch id", m.batch_id.as_str())]
        {
            let len = u16::try_from(text.len()).ok().filter(|&l| l > 0).ok_or(LeafError::FieldLength(field))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&m.root);
        out.extend_from_slice(&m.attempt_id);
        out.extend_from_slice(&self.size.to_be_bytes());
        Ok(out)
    }

    /// Reads a leaf strictly: every field of the version, nothing after them.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LeafError> {
        let mut rest = bytes;
        let version = take(&mut rest, 1, "version")?[0];
        if version != LEAF_VERSION {
            return Err(LeafError::UnknownVersion(version));
        }
        let namespace = text(&mut rest, "namespace")?;
        let cadence_name = text(&mut rest, "cadence")?;
        let cadence = CadenceKind::parse(&cadence_name).ok_or(LeafError::UnknownCadence(cadence_name))?;
        let batch_id = text(&mut rest, "batch id")?;
        let root = hash(&mut rest, "root")?;
        let attempt_id = hash(&mut rest, "attempt id")?;
        let mut size = [0u8; 8];
        size.copy_from_slice(take(&mut rest, 8, "tree size")?);
        let size = u64::from_be_bytes(size);
        if !rest.is_empty() {
            return Err(LeafError::TrailingBytes(rest.len()));
        }
        if size == 0 {
            return Err(LeafError::EmptyTree);
        }
        Ok(Leaf { member: Member { namespace, cadence, batch_id, root, attempt_id }, size })
    }
}

/// The leaves of one tree over `members`, in the tree's order: sorted by their bytes, each
/// member once. The order depends on the members alone, so an aggregate rebuilt from its
/// recorded members is the same tree.
pub fn tree_leaves(members: &[Member]) -> Result<Vec<Vec<u8>>, LeafError> {
    let mut members: Vec<&Member> = members.iter().collect();
    members.sort();
    members.dedup();
    let size = members.len() as u64;
    let mut leaves =
        members.into_iter().map(|m| Leaf { member: m.clone(), size }.encode()).collect::<Result<Vec<_>, _>>()?;
    // The members' order need not be their bytes' (a length prefix sorts before the text).
    leaves.sort();
    Ok(leaves)
}

/// A sealed aggregate: its tree's root and size, and each member's proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The tree's root: what the target anchors.
    pub root: Hash,
    /// The tree's number of leaves.
    pub size: u64,
    /// Each member's inclusion proof, in the order the members were given.
    pub proofs: Vec<Inclusion>,
}

/// Builds the tree over `members` (in the order [`tree_leaves`] gives) and every member's
/// proof of inclusion in it.
pub fn seal(members: &[Member]) -> Result<Sealed, LeafError> {
    let leaves = tree_leaves(members)?;
    let size = leaves.len() as u64;
    let tree = Tree::build(&leaves);
    let root_hex = to_hex(&tree.root);
    let proofs = members
        .iter()
        .map(|m| {
            let leaf = Leaf { member: m.clone(), size }.encode()?;
            // Every member's leaf is among the sorted leaves: they were made from these members.
            let index = leaves.binary_search(&leaf).map_err(|_| LeafError::EmptyTree)?;
            Ok(Inclusion {
                leaf: to_hex(&leaf),
                index: index as u64,
                size,
                path: tree.paths[index].iter().map(|h| to_hex(h)).collect(),
                root: root_hex.clone(),
            })
        })
        .collect::<Result<Vec<_>, LeafError>>()?;
    Ok(Sealed { root: tree.root, size, proofs })
}

/// Takes `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize, field: &'static str) -> Result<&'a [u8], LeafError> {
    if rest.len() < n {
        return Err(LeafError::Truncated(field));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Takes a length-prefixed UTF-8 field off the front of `rest`.
fn text(rest: &mut &[u8], field: &'static str) -> Result<String, LeafError> {
    let len = take(rest, 2, field)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len == 0 {
        return Err(LeafError::FieldLength(field));
    }
    let bytes = take(rest, len, field)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| LeafError::NotUtf8(field))
}

/// Takes 32 raw bytes off the front of `rest`.
fn hash(rest: &mut &[u8], field: &'static str) -> Result<Hash, LeafError> {
    let mut out = [0u8; 32];
    out.copy_from_slice(take(rest, 32, field)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ns: &str, attempt: u8) -> Member {
        Member {
            namespace: ns.into(),
            cadence: CadenceKind::Fast,
            batch_id: "b1".into(),
            root: [0x0f; 32],
            attempt_id: [attempt; 32],
        }
    }

    fn leaf() -> Leaf {
        Leaf { member: member("dao:vaultmesh", 0xab), size: 3 }
    }

    #[test]
    fn a_leaf_is_written_byte_by_byte_as_documented_and_reads_back() {
        let bytes = leaf().encode().expect("encodes");
        let mut want = vec![0x01, 0x00, 0x0d];
        want.extend_from_slice(b"dao:vaultmesh");
        want.extend_from_slice(&[0x00, 0x04]);
        want.extend_from_slice(b"fast");
        want.extend_from_slice(&[0x00, 0x02]);
        want.extend_from_slice(b"b1");
        want.extend_from_slice(&[0x0f; 32]);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&3u64.to_be_bytes());
        assert_eq!(bytes, want);
        assert_eq!(Leaf::decode(&bytes), Ok(leaf()));
    }

    #[test]
    fn every_truncation_trailing_byte_and_bad_field_is_refused_without_panicking() {
        let bytes = leaf().encode().expect("encodes");
        for n in 0..bytes.len() {
            assert!(Leaf::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Leaf::decode(&longer), Err(LeafError::TrailingBytes(1)));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Leaf::decode(&v2), Err(LeafError::UnknownVersion(2)));
        let mut not_utf8 = bytes.clone();
        not_utf8[3] = 0xff;
        assert_eq!(Leaf::decode(&not_utf8), Err(LeafError::NotUtf8("namespace")));
        let mut empty = vec![1, 0, 0];
        empty.extend_from_slice(&bytes[16..]);
        assert_eq!(Leaf::decode(&empty), Err(LeafError::FieldLength("namespace")));
        let mut long_len = bytes.clone();
        long_len[1] = 0xff;
        assert_eq!(Leaf::decode(&long_len), Err(LeafError::Truncated("namespace")));
        let mut warm = bytes.clone();
        warm[18..22].copy_from_slice(b"warm");
        assert_eq!(Leaf::decode(&warm), Err(LeafError::UnknownCadence("warm".into())));
        let mut no_tree = bytes.clone();
        let at = no_tree.len() - 8;
        no_tree[at..].copy_from_slice(&[0; 8]);
        assert_eq!(Leaf::decode(&no_tree), Err(LeafError::EmptyTree));
        // Every byte changed to every value: an error or another leaf, never a panic.
        for i in 0..bytes.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(other) = Leaf::decode(&b) {
                    assert_eq!(other.encode().as_ref(), Ok(&b), "byte {i} = {v}: decodes to what encodes back");
                }
            }
        }
    }

    #[test]
    fn a_field_too_long_or_empty_cannot_be_written() {
        let mut m = member(&"n".repeat(65_536), 1);
        assert_eq!(Leaf { member: m.clone(), size: 1 }.encode(), Err(LeafError::FieldLength("namespace")));
        m.namespace = "ns".into();
        m.batch_id = String::new();
        assert_eq!(Leaf { member: m.clone(), size: 1 }.encode(), Err(LeafError::FieldLength("batch id")));
        m.batch_id = "b".into();
        assert_eq!(Leaf { member: m, size: 0 }.encode(), Err(LeafError::EmptyTree));
    }

    #[test]
    fn a_tree_has_the_same_leaves_in_the_same_order_whatever_order_its_members_come_in() {
        let members = vec![member("b", 1), member("a", 2), member("ab", 3), member("a", 1), member("b", 1)];
        let leaves = tree_leaves(&members).expect("leaves");
        assert_eq!(leaves.len(), 4, "a member twice is one leaf");
        assert!(leaves.windows(2).all(|w| w[0] < w[1]), "sorted by their bytes");
        assert!(leaves.iter().all(|l| Leaf::decode(l).map(|l| l.size) == Ok(4)), "each carries the tree's size");
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(tree_leaves(&reversed).expect("leaves"), leaves);
        assert_eq!(tree_leaves(&[]).expect("no leaves"), Vec::<Vec<u8>>::new());
    }
    #[test]
    fn a_sealed_aggregate_gives_each_member_in_the_order_given_a_proof_that_holds_under_its_root() {
        let members = vec![member("b", 1), member("a", 2), member("c", 3)];
        let sealed = seal(&members).expect("sealed");
        assert_eq!((sealed.size, sealed.proofs.len()), (3, 3));
        for (m, proof) in members.iter().zip(&sealed.proofs) {
            let leaf = crate::model::digest::parse_hex(&proof.leaf).expect("hex");
            assert_eq!(Leaf::decode(&leaf).map(|l| l.member), Ok(m.clone()), "the proof is this member's");
            let path: Vec<Hash> =
                proof.path.iter().map(|p| crate::model::digest::parse_hex32(p).expect("hex")).collect();
            let held = crate::model::merkle::verify_inclusion(
                &crate::model::merkle::leaf_hash(&leaf),
                proof.index,
                proof.size,
                &path,
                &sealed.root,
            );
            assert_eq!(held, Ok(()), "{m:?}");
        }
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(seal(&reversed).expect("sealed").root, sealed.root, "the order members come in does not matter");
    }

    #[test]
    fn an_aggregates_anchor_names_no_namespace_its_size_and_its_root_as_attempt() {
        let key = GroupKey {
            target: Target::parse("local:j").expect("target"),
            cadence: CadenceKind::Fast,
            confirmations: None,
            policy_oid: None,
        };
        let req = key.request([0xab; 32], 20, None);
        assert_eq!((req.namespace.as_str(), req.batch_id.as_str()), ("", "aggregate-20"));
        assert_eq!(req.attempt_id, "ab".repeat(32));
        assert_eq!(size_of(&req), Some(20));
        assert_eq!(GroupKey::of(&req), key);
        let mut own = req.clone();
        own.namespace = "ns".into();
        assert_eq!(size_of(&own), None, "a namespace's own anchor is no aggregate");
    }
}
