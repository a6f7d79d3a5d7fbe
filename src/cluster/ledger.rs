//! The commit points of outputs on a shared volume, kept in etcd.
//!
//! In cluster mode receipts and `local:` journals are files on a volume every replica
//! writes, and a replica paused past its lease could wake and finish writing one. So a file
//! alone proves nothing: each is a hash-chained file of one replica (a journal, or a
//! namespace's index of its receipts) whose lines count up to the head committed here, and a
//! head moves only by a transaction that compares the previous head and holds only under the
//! namespace owner's fence. etcd holds one key per file, whatever the number of anchors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::claim::{Fence, Keys};
use super::etcd::{Compare, Etcd, EtcdError, Op};
use super::member::Fences;

impl Keys {
    /// The committed head of chain file `name` (`journals/<file>`, `receipts/<file>`).
    pub fn chain(&self, name: &str) -> Vec<u8> {
        [self.prefix_bytes(), name.as_bytes().to_vec()].concat()
    }
}

/// A chain file's head as etcd holds it: its value and the revision to compare on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// What the journal's writer stored (its last line's sequence and hash).
    pub value: Vec<u8>,
    /// The revision that wrote it; 0 for a journal without a head yet.
    pub revision: i64,
}

/// Chain file `name`'s head now.
pub async fn head(etcd: &Etcd, keys: &Keys, name: &str) -> Result<Head, EtcdError> {
    let (found, _) = etcd.get(&keys.chain(name)).await?;
    Ok(found.map_or(Head { value: Vec::new(), revision: 0 }, |kv| Head { value: kv.value, revision: kv.mod_revision }))
}

/// Moves chain file `name`'s head from `from` to `to`, only if nobody moved it meanwhile and
/// the member key `member` still carries `lease`: the new head, or `None` when either has
/// changed.
pub async fn advance_member(
    etcd: &Etcd,
    keys: &Keys,
    (member, lease): (Vec<u8>, i64),
    name: &str,
    from: &Head,
    to: &[u8],
) -> Result<Option<Head>, EtcdError> {
    let key = keys.chain(name);
    let compare = [Compare::Lease(member, lease), Compare::ModRevision(key.clone(), from.revision)];
    let out = etcd.txn(&compare, &[Op::Put { key, value: to.to_vec(), lease: 0 }], &[]).await?;
    Ok(out.succeeded.then(|| Head { value: to.to_vec(), revision: out.revision }))
}

/// Moves chain file `name`'s head from `from` to `to`, only if nobody moved it meanwhile and
/// the namespace `fence` holds is still this replica's: the new head, or `None` when either
/// has changed.
pub async fn advance_fenced(
    etcd: &Etcd,
    keys: &Keys,
    fence: &Fence,
    name: &str,
    from: &Head,
    to: &[u8],
) -> Result<Option<Head>, EtcdError> {
    let key = keys.chain(name);
    let [lease, holder] = fence.holds();
    let compare = [lease, holder, Compare::ModRevision(key.clone(), from.revision)];
    let put = [Op::Put { key, value: to.to_vec(), lease: 0 }];
    let out = etcd.txn(&compare, &put, &[]).await?;
    Ok(out.succeeded.then(|| Head { value: to.to_vec(), revision: out.revision }))
}

/// A chain file's committed head as its value holds it: the last line that counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The line's number (1-based).
    pub seq: u64,
    /// Hex SHA-256 of the line.
    pub hash: String,
}

impl ChainHead {
    /// The head `head` holds; `None` for a file without one (nothing committed yet).
    pub fn of(head: &Head) -> Result<Option<Self>, EtcdError> {
        if head.revision == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&head.value)
            .map(Some)
            .map_err(|e| EtcdError::Malformed { what: "chain head", why: e.to_string() })
    }
}

/// A future the ledger answers with.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EtcdError>> + Send + 'a>>;

/// Where cluster mode commits its outputs: the receipt writer and the `local:` driver call
/// this, so neither needs to know etcd.
pub trait OutputLedger: Send + Sync {
    /// The etcd prefix, named in every receipt so `verify` knows where its commit is.
    fn prefix(&self) -> &str;
    /// Chain file `name`'s head now.
    fn chain_head<'a>(&'a self, name: &'a str) -> LedgerFuture<'a, Head>;
    /// Moves chain file `name`'s head from `from` to `to`, under `namespace`'s claim (an
    /// empty namespace, an aggregate's anchor, under this replica's member lease): the new
    /// head, or `None` when the head moved or the fence no longer holds.
    fn advance_chain<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        from: &'a Head,
        to: &'a ChainHead,
    ) -> LedgerFuture<'a, Option<Head>>;
}

/// The ledger in etcd, fenced on the claims a replica holds.
pub struct EtcdLedger {
    etcd: Arc<Etcd>,
    keys: Keys,
    prefix: String,
    fences: Fences,
}

impl EtcdLedger {
    /// A ledger under `prefix`, fenced on `fences`.
    pub fn new(etcd: Arc<Etcd>, prefix: &str, fences: Fences) -> Self {
        Self { etcd, keys: Keys::new(prefix), prefix: prefix.to_string(), fences }
    }
}

impl OutputLedger for EtcdLedger {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn chain_head<'a>(&'a self, name: &'a str) -> LedgerFuture<'a, Head> {
        Box::pin(head(&self.etcd, &self.keys, name))
    }

    fn advance_chain<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        from: &'a Head,
        to: &'a ChainHead,
    ) -> LedgerFuture<'a, Option<Head>> {
        Box::pin(async move {
            let value =
                serde_json::to_vec(to).map_err(|e| EtcdError::Malformed { what: "chain head", why: e.to_string() })?;
            // An aggregate's anchor names no namespace: it is made of this replica's own, and
            // holds while this replica is a member under its lease.
            if namespace.is_empty() {
                let Some(member) = self.fences.member() else { return Ok(None) };
                return advance_member(&self.etcd, &self.keys, member, name, from, &value).await;
            }
            let Some(fence) = self.fences.get(namespace) else { return Ok(None) };
            advance_fenced(&self.etcd, &self.keys, &fence, name, from, &value).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_head_is_a_key_under_the_prefix_and_reads_back_as_written() {
        let k = Keys::new("/v/");
        assert_eq!(k.chain("journals/audit@a"), b"/v/journals/audit@a".to_vec());
        assert_eq!(ChainHead::of(&Head { value: Vec::new(), revision: 0 }).expect("none"), None);
        let h = ChainHead { seq: 3, hash: "ab".into() };
        let stored = Head { value: serde_json::to_vec(&h).expect("json"), revision: 9 };
        assert_eq!(ChainHead::of(&stored).expect("read"), Some(h));
    }
}
