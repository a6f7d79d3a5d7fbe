//! The commit points of outputs on a shared volume, kept in etcd.
//!
//! In cluster mode receipts and `local:` journals are files on a volume every replica
//! writes, and a replica paused past its lease could wake and finish writing one. So a file
//! alone proves nothing: a receipt counts once its digest is recorded here by the
//! namespace's owner, under its fence, and a journal's head moves only by a comparison on
//! its previous head, so two replicas can never both append after the same line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::claim::{Fence, Keys};
use super::etcd::{Compare, Etcd, EtcdError, Op};
use super::member::Fences;

impl Keys {
    /// The record of attempt `attempt`'s receipt for `namespace` (attempt ids are hex, so the
    /// namespace after them may hold anything).
    pub fn receipt(&self, attempt: &str, namespace: &str) -> Vec<u8> {
        [self.receipts(), format!("{attempt}/{namespace}").into_bytes()].concat()
    }

    /// Where every receipt record is.
    pub fn receipts(&self) -> Vec<u8> {
        [self.prefix_bytes(), b"receipts/".to_vec()].concat()
    }

    /// The head of journal `name`.
    pub fn journal(&self, name: &str) -> Vec<u8> {
        [self.prefix_bytes(), format!("journals/{name}").into_bytes()].concat()
    }
}

/// What recording a receipt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now: the receipt counts.
    New,
    /// Recorded before with this digest (a retry): the receipt counts.
    Same,
    /// Recorded before with another digest: this file is not the attempt's receipt.
    Other(String),
    /// This replica no longer owns the namespace: nothing recorded, the file does not count.
    Fenced,
}

/// Records `digest` (hex SHA-256 of the receipt's bytes) as attempt `attempt`'s receipt for
/// the namespace `fence` holds, once.
pub async fn record_receipt(
    etcd: &Etcd,
    keys: &Keys,
    fence: &Fence,
    namespace: &str,
    attempt: &str,
    digest: &str,
) -> Result<Recorded, EtcdError> {
    let key = keys.receipt(attempt, namespace);
    let [lease, holder] = fence.holds();
    let compare = [lease, holder, Compare::CreateRevision(key.clone(), 0)];
    let put = [Op::Put { key: key.clone(), value: digest.as_bytes().to_vec(), lease: 0 }];
    let out = etcd.txn(&compare, &put, &[Op::Get(key)]).await?;
    if out.succeeded {
        return Ok(Recorded::New);
    }
    let existing = out.gets.first().and_then(|g| g.first()).map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    Ok(match existing {
        Some(d) if d == digest => Recorded::Same,
        Some(d) => Recorded::Other(d),
        // Nothing recorded, so the comparison that failed is the fence.
        None => Recorded::Fenced,
    })
}

/// The digest recorded for attempt `attempt`'s receipt for `namespace`, if any.
pub async fn receipt(etcd: &Etcd, keys: &Keys, attempt: &str, namespace: &str) -> Result<Option<String>, EtcdError> {
    let (found, _) = etcd.get(&keys.receipt(attempt, namespace)).await?;
    Ok(found.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// A journal's head as etcd holds it: its value and the revision to compare on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// What the journal's writer stored (its last line's sequence and hash).
    pub value: Vec<u8>,
    /// The revision that wrote it; 0 for a journal without a head yet.
    pub revision: i64,
}

/// Journal `name`'s head now.
pub async fn head(etcd: &Etcd, keys: &Keys, name: &str) -> Result<Head, EtcdError> {
    let (found, _) = etcd.get(&keys.journal(name)).await?;
    Ok(found.map_or(Head { value: Vec::new(), revision: 0 }, |kv| Head { value: kv.value, revision: kv.mod_revision }))
}

/// Moves journal `name`'s head from `from` to `to`, only if nobody moved it meanwhile and
/// member `node` still holds `lease`: the new head, or `None` when either has changed (read
/// the head again; the line after `from` is someone else's).
pub async fn advance(
    etcd: &Etcd,
    keys: &Keys,
    (node, lease): (&str, i64),
    name: &str,
    from: &Head,
    to: &[u8],
) -> Result<Option<Head>, EtcdError> {
    let key = keys.journal(name);
    let compare = [Compare::Lease(keys.member(node), lease), Compare::ModRevision(key.clone(), from.revision)];
    let put = [Op::Put { key, value: to.to_vec(), lease: 0 }];
    let out = etcd.txn(&compare, &put, &[]).await?;
    Ok(out.succeeded.then(|| Head { value: to.to_vec(), revision: out.revision }))
}

/// Moves journal `name`'s head from `from` to `to`, only if nobody moved it meanwhile and
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
    let key = keys.journal(name);
    let [lease, holder] = fence.holds();
    let compare = [lease, holder, Compare::ModRevision(key.clone(), from.revision)];
    let put = [Op::Put { key, value: to.to_vec(), lease: 0 }];
    let out = etcd.txn(&compare, &put, &[]).await?;
    Ok(out.succeeded.then(|| Head { value: to.to_vec(), revision: out.revision }))
}

/// A journal's committed head as its value holds it: the last line that counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHead {
    /// The line's number (1-based).
    pub seq: u64,
    /// Hex SHA-256 of the line.
    pub hash: String,
}

impl JournalHead {
    /// The head `head` holds; `None` for a journal without one (nothing committed yet).
    pub fn of(head: &Head) -> Result<Option<Self>, EtcdError> {
        if head.revision == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&head.value)
            .map(Some)
            .map_err(|e| EtcdError::Malformed { what: "journal head", why: e.to_string() })
    }
}

/// A future the ledger answers with.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EtcdError>> + Send + 'a>>;

/// Where cluster mode commits its outputs: the receipt writer and the `local:` driver call
/// this, so neither needs to know etcd.
pub trait OutputLedger: Send + Sync {
    /// The etcd prefix, named in every receipt so `verify` knows where its record is.
    fn prefix(&self) -> &str;
    /// Records `digest` as attempt `attempt`'s receipt for `namespace`, under its claim.
    fn record_receipt<'a>(
        &'a self,
        namespace: &'a str,
        attempt: &'a str,
        digest: &'a str,
    ) -> LedgerFuture<'a, Recorded>;
    /// The digest recorded for attempt `attempt`'s receipt for `namespace`, if any.
    fn receipt<'a>(&'a self, namespace: &'a str, attempt: &'a str) -> LedgerFuture<'a, Option<String>>;
    /// Journal file `journal`'s head now.
    fn journal_head<'a>(&'a self, journal: &'a str) -> LedgerFuture<'a, Head>;
    /// Moves journal file `journal`'s head from `from` to `to`, under `namespace`'s claim:
    /// the new head, or `None` when the head moved or the claim is gone.
    fn advance_journal<'a>(
        &'a self,
        namespace: &'a str,
        journal: &'a str,
        from: &'a Head,
        to: &'a JournalHead,
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

    fn record_receipt<'a>(
        &'a self,
        namespace: &'a str,
        attempt: &'a str,
        digest: &'a str,
    ) -> LedgerFuture<'a, Recorded> {
        Box::pin(async move {
            let Some(fence) = self.fences.get(namespace) else { return Ok(Recorded::Fenced) };
            record_receipt(&self.etcd, &self.keys, &fence, namespace, attempt, digest).await
        })
    }

    fn receipt<'a>(&'a self, namespace: &'a str, attempt: &'a str) -> LedgerFuture<'a, Option<String>> {
        Box::pin(receipt(&self.etcd, &self.keys, attempt, namespace))
    }

    fn journal_head<'a>(&'a self, journal: &'a str) -> LedgerFuture<'a, Head> {
        Box::pin(head(&self.etcd, &self.keys, journal))
    }

    fn advance_journal<'a>(
        &'a self,
        namespace: &'a str,
        journal: &'a str,
        from: &'a Head,
        to: &'a JournalHead,
    ) -> LedgerFuture<'a, Option<Head>> {
        Box::pin(async move {
            let value = serde_json::to_vec(to)
                .map_err(|e| EtcdError::Malformed { what: "journal head", why: e.to_string() })?;
            // An aggregate's anchor names no namespace: it is made of this replica's own, and
            // holds while this replica is a member under its lease.
            if namespace.is_empty() {
                let Some((member, lease)) = self.fences.member() else { return Ok(None) };
                let key = self.keys.journal(journal);
                let compare = [Compare::Lease(member, lease), Compare::ModRevision(key.clone(), from.revision)];
                let out = self.etcd.txn(&compare, &[Op::Put { key, value: value.clone(), lease: 0 }], &[]).await?;
                return Ok(out.succeeded.then_some(Head { value, revision: out.revision }));
            }
            let Some(fence) = self.fences.get(namespace) else { return Ok(None) };
            advance_fenced(&self.etcd, &self.keys, &fence, journal, from, &value).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_records_name_the_attempt_first_so_any_namespace_name_fits() {
        let k = Keys::new("/v/");
        assert_eq!(k.receipt("ab01", "dao/x"), b"/v/receipts/ab01/dao/x".to_vec());
        assert!(k.receipt("ab01", "x").starts_with(&k.receipts()));
        assert_eq!(k.journal("audit"), b"/v/journals/audit".to_vec());
    }
}
