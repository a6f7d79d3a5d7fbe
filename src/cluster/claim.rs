//! Fenced ownership of a namespace in etcd.
//!
//! A replica registers as a member under a lease (`<prefix>members/<node>`), and claims a
//! namespace by creating `<prefix>owners/<namespace>` attached to that same lease. The claim
//! is the fence: every write the owner makes for the namespace is a transaction that holds
//! only while the claim key still carries the owner's lease. A replica that was paused past
//! its lease (a GC stop, SIGSTOP, a partition) finds its claim gone — etcd deleted it with
//! the lease, and another replica may hold it now under another lease — so its write is
//! refused, whatever its own clock believes.
//!
//! A claim is created only where none exists, so a namespace moves only after its old owner
//! released it (deleted the key) or its lease expired.

use super::etcd::{Compare, Etcd, EtcdError, KeyValue, Op};

/// The keys of one cluster, under a prefix (`/vmsh-scheduler/` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, which ends with `/` (added when missing).
    pub fn new(prefix: &str) -> Self {
        let prefix = if prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        Self { prefix }
    }

    /// The prefix itself.
    pub(crate) fn prefix_bytes(&self) -> Vec<u8> {
        self.prefix.as_bytes().to_vec()
    }

    /// Where every member is registered.
    pub fn members(&self) -> Vec<u8> {
        format!("{}members/", self.prefix).into_bytes()
    }

    /// Member `node`'s registration.
    pub fn member(&self, node: &str) -> Vec<u8> {
        format!("{}members/{node}", self.prefix).into_bytes()
    }

    /// Where every claim is.
    pub fn owners(&self) -> Vec<u8> {
        format!("{}owners/", self.prefix).into_bytes()
    }

    /// The claim on `namespace`.
    pub fn owner(&self, namespace: &str) -> Vec<u8> {
        format!("{}owners/{namespace}", self.prefix).into_bytes()
    }

    /// Where every namespace's state snapshot is.
    pub fn states(&self) -> Vec<u8> {
        format!("{}state/", self.prefix).into_bytes()
    }

    /// Namespace `namespace`'s state snapshot.
    pub fn state(&self, namespace: &str) -> Vec<u8> {
        format!("{}state/{namespace}", self.prefix).into_bytes()
    }

    /// Where every replica's state log is.
    pub fn logs(&self) -> Vec<u8> {
        format!("{}log/", self.prefix).into_bytes()
    }

    /// Replica `node`'s state log.
    pub fn log_dir(&self, node: &str) -> Vec<u8> {
        format!("{}log/{node}/", self.prefix).into_bytes()
    }

    /// Entry `seq` of replica `node`'s state log; zero-padded, so key order is log order.
    pub fn log(&self, node: &str, seq: u64) -> Vec<u8> {
        format!("{}log/{node}/{seq:020}", self.prefix).into_bytes()
    }

    /// What a key under `dir` (one of [`Self::members`], [`Self::owners`]) names: a node
    /// id or a namespace, which may itself hold `/`.
    pub fn name_in<'a>(dir: &[u8], key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key.strip_prefix(dir)?).ok()
    }
}

/// A replica's hold on a namespace: the claim key carries this lease and names this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The claim key.
    pub key: Vec<u8>,
    /// The owner's member lease.
    pub lease: i64,
    /// The owner's node id.
    pub node: String,
}

impl Fence {
    /// The comparisons that hold only while this replica still owns the namespace.
    pub fn holds(&self) -> [Compare; 2] {
        [Compare::Lease(self.key.clone(), self.lease), Compare::Value(self.key.clone(), self.node.as_bytes().to_vec())]
    }
}

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This replica owns it now (or already did).
    Ours(Fence),
    /// Another replica holds it (its node id).
    Held(String),
}

/// Claims `namespace` for `node` under `lease`, unless another replica holds it.
pub async fn claim(etcd: &Etcd, keys: &Keys, namespace: &str, node: &str, lease: i64) -> Result<Claimed, EtcdError> {
    let key = keys.owner(namespace);
    let fence = Fence { key: key.clone(), lease, node: node.to_string() };
    let create = [Op::Put { key: key.clone(), value: node.as_bytes().to_vec(), lease }];
    let out = etcd.txn(&[Compare::CreateRevision(key.clone(), 0)], &create, &[Op::Get(key.clone())]).await?;
    if out.succeeded {
        return Ok(Claimed::Ours(fence));
    }
    let holder: Option<&KeyValue> = out.gets.first().and_then(|g| g.first());
    match holder {
        Some(kv) if kv.lease == lease && kv.value == node.as_bytes() => Ok(Claimed::Ours(fence)),
        Some(kv) => Ok(Claimed::Held(String::from_utf8_lossy(&kv.value).into_owned())),
        // Released between the two steps: the next round claims it.
        None => Ok(Claimed::Held(String::new())),
    }
}

/// Lets go of `fence`'s namespace, if this replica still holds it.
pub async fn release(etcd: &Etcd, fence: &Fence) -> Result<bool, EtcdError> {
    Ok(etcd.txn(&fence.holds(), &[Op::Delete(fence.key.clone())], &[]).await?.succeeded)
}

/// Writes `value` at `key` only while `fence` holds: `false` when this replica no longer owns
/// the namespace (nothing was written).
pub async fn fenced_put(etcd: &Etcd, fence: &Fence, key: &[u8], value: &[u8]) -> Result<bool, EtcdError> {
    let put = [Op::Put { key: key.to_vec(), value: value.to_vec(), lease: 0 }];
    Ok(etcd.txn(&fence.holds(), &put, &[]).await?.succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_prefix_and_name_what_they_hold() {
        let k = Keys::new("/vmsh-scheduler");
        assert_eq!(k.member("node-a"), b"/vmsh-scheduler/members/node-a".to_vec());
        assert_eq!(k.owner("dao:x"), b"/vmsh-scheduler/owners/dao:x".to_vec());
        assert_eq!(k.state("dao:x"), b"/vmsh-scheduler/state/dao:x".to_vec());
        assert_eq!(Keys::name_in(&k.owners(), &k.owner("dao/x")), Some("dao/x"), "a name may hold a slash");
        assert_eq!(Keys::name_in(&k.members(), &k.owner("dao:x")), None);
        assert!(k.member("a").starts_with(&k.members()) && k.owner("a").starts_with(&k.owners()));
    }

    #[test]
    fn a_fence_compares_the_lease_and_the_node() {
        let f = Fence { key: b"k".to_vec(), lease: 9, node: "n".into() };
        assert_eq!(f.holds(), [Compare::Lease(b"k".to_vec(), 9), Compare::Value(b"k".to_vec(), b"n".to_vec())]);
    }
}
