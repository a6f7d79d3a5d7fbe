//! The state in etcd, for cluster mode: the [`StateBackend`] contract kept on a store that
//! the replicas share.
//!
//! It has the file store's shape, a log folded into a snapshot, mapped onto keys:
//!
//! - **Commit**: one key per commit, `<prefix>log/<node>/<seq>`, holding all of the commit's
//!   changes, written by one transaction that holds only while this replica's member key
//!   still carries its lease. One key keeps a commit whole however many namespaces it
//!   touches (etcd limits a transaction to 128 operations by default, an aggregate's
//!   membership may touch a thousand), and the lease comparison is the fence: a replica
//!   paused past its lease has no member key any more, and its commit is refused.
//! - **Fold** ([`StateBackend::compact`], and at close): the whole state of each namespace
//!   the folded log keys name into `<prefix>state/<namespace>` as `{"through": R, "state": …}`,
//!   where `R` is the etcd revision of the last commit it includes; then this replica's
//!   folded log keys are deleted. A namespace no commit touched keeps its snapshot: at
//!   10,000 namespaces over three replicas, rewriting every owned one made four fifths of
//!   the keys put per anchor. A fold cut short leaves both, and is harmless: loading skips log entries at or
//!   below a namespace's `through`.
//! - **Load**: every snapshot key and every log key, read in one transaction (one revision),
//!   then each namespace's snapshot with the log entries above its `through` applied in
//!   revision order — whichever replica wrote them. A namespace that moved after its owner
//!   died (its lease expired before it folded) is found whole.
//!
//! What the caller must keep: a replica writes only the namespaces it owns, and releases a
//! namespace's claim only once `StateStore` answered its `Forget`: its changes are durable,
//! no fold holding it is under way, and no later fold carries it. A fold landing after the
//! next owner's could otherwise put back an older snapshot over log entries already folded
//! and deleted.
//!
//! Limits: one commit is one etcd request, so it must fit etcd's `--max-request-bytes`
//! (1.5 MiB by default): some thousands of changes, more than an aggregate of the default
//! 1,024 leaves records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::backend::{Change, Namespaces, StateBackend, StoreError};
use super::{Loaded, NamespaceState, Origin, STATE_VERSION, StateError, StateFile};
use crate::cluster::claim::Keys;
use crate::cluster::etcd::{Compare, Etcd, EtcdError, KeyValue, Op};

/// Commits between folds: each fold rewrites the snapshot of every namespace they touched.
const FOLD_EVERY: usize = 256;
/// Snapshot keys per fold transaction, under etcd's default limit of 128 operations.
const PER_TXN: usize = 100;
/// Bytes of keys and values in one transaction that writes snapshots: under etcd's default
/// `--max-request-bytes` of 1.5 MiB, with room for the request's own framing.
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// One commit as its log key holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    changes: Vec<Change>,
}

/// A namespace's snapshot as its state key holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    /// The revision of the last commit it includes.
    through: i64,
    state: NamespaceState,
}

/// The state in etcd (see the module docs).
pub struct EtcdBackend {
    etcd: Arc<Etcd>,
    keys: Keys,
    node: String,
    /// The member lease the commits are fenced on: switched only once every namespace held
    /// under the previous one was discarded (see [`EtcdBackend::switch_lease`]).
    lease: AtomicI64,
    /// Its own runtime, so that the store's blocking threads can wait for etcd; `None` only
    /// while dropped.
    rt: Option<tokio::runtime::Runtime>,
    location: String,
    /// The next log key's sequence number.
    seq: AtomicU64,
    /// The revision of this replica's last successful commit.
    last_revision: AtomicI64,
    /// Commits since the last fold.
    since_fold: AtomicUsize,
    /// The namespaces the unfolded log keys name, each with the sequence number of its last
    /// commit. Locked while a commit takes its sequence number, so a fold that reads the
    /// sequence finds every namespace of the keys below it here.
    touched: Mutex<BTreeMap<Arc<str>, u64>>,
    /// The first log sequence number written under the current lease: a fold deletes only
    /// from here. Entries written under an earlier lease may hold changes of namespaces lost
    /// with it, which their new owners may not have folded yet.
    floor: AtomicU64,
}

impl EtcdBackend {
    /// A backend writing as member `node`, whose member key carries `lease`; reads the
    /// store's revision to number its log.
    pub fn new(etcd: Arc<Etcd>, keys: Keys, node: &str, lease: i64, location: String) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("etcd client runtime", e))?;
        // Log keys go on above any an earlier run of this node wrote: each of its commits
        // raised the store's revision, so none of its sequence numbers is above today's.
        let dir = keys.log_dir(node);
        let (_, revision) = rt
            .block_on(etcd.get_prefix(&dir))
            .map_err(|e| StoreError::Remote { what: format!("state log ({location})"), reason: e.to_string() })?;
        Ok(Self {
            etcd,
            keys,
            node: node.to_string(),
            lease: AtomicI64::new(lease),
            rt: Some(rt),
            location,
            seq: AtomicU64::new(u64::try_from(revision).unwrap_or(0) + 1),
            last_revision: AtomicI64::new(0),
            since_fold: AtomicUsize::new(0),
            touched: Mutex::new(BTreeMap::new()),
            floor: AtomicU64::new(u64::try_from(revision).unwrap_or(0) + 1),
        })
    }

    fn log_dir(&self) -> Vec<u8> {
        self.keys.log_dir(&self.node)
    }

    /// Runs `request` to completion on the backend's runtime (from a blocking thread).
    fn block_on<T>(&self, request: impl std::future::Future<Output = Result<T, EtcdError>>) -> Result<T, EtcdError> {
        match &self.rt {
            Some(rt) => rt.block_on(request),
            None => Err(EtcdError::Config("the state backend is shutting down".into())),
        }
    }

    /// Fences the commits from now on on `lease`, the member lease this replica joined again
    /// under. The caller switches only once every namespace held under the old lease was
    /// discarded ([`crate::storage::state::store::Discard`] answered): a change made before
    /// the loss must never be committed under the new lease.
    pub fn switch_lease(&self, lease: i64) {
        self.floor.store(self.seq.load(Ordering::SeqCst), Ordering::SeqCst);
        self.lease.store(lease, Ordering::SeqCst);
    }

    /// Holds while this replica is a member under its lease.
    fn fence(&self) -> [Compare; 1] {
        [Compare::Lease(self.keys.member(&self.node), self.lease.load(Ordering::SeqCst))]
    }

    fn remote(&self, what: &str, e: EtcdError) -> StoreError {
        StoreError::Remote { what: format!("{what} ({})", self.location), reason: e.to_string() }
    }

    fn fenced(&self, what: &str) -> StoreError {
        StoreError::Fenced {
            what: format!("{what} ({})", self.location),
            reason: format!("member {}'s lease has expired: it no longer owns its namespaces", self.node),
        }
    }

    /// Every snapshot and log key, read at one revision.
    fn read_all(&self) -> Result<(Vec<KeyValue>, Vec<KeyValue>), EtcdError> {
        let (states, logs) = (self.keys.states(), self.keys.logs());
        let out = self.block_on(self.etcd.txn(&[], &[Op::GetPrefix(states), Op::GetPrefix(logs)], &[]))?;
        match <[Vec<KeyValue>; 2]>::try_from(out.gets) {
            Ok([s, l]) => Ok((s, l)),
            Err(_) => Err(EtcdError::Malformed { what: "txn", why: "not two ranges".into() }),
        }
    }

    /// The revision of the last commit, the next sequence number, and the namespaces the log
    /// keys below it name: what a fold asked for now covers.
    fn fold_point(&self) -> (i64, u64, Vec<Arc<str>>) {
        let touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.seq.load(Ordering::SeqCst);
        (self.last_revision.load(Ordering::SeqCst), seq, touched.keys().cloned().collect())
    }

    /// Writes the state of the `touched` namespaces `state` holds as their snapshots through
    /// `through`, then deletes this replica's log keys up to `seq` (exclusive). Namespaces
    /// not in `state` need no snapshot from this replica: one handed over wrote its own, and
    /// one lost keeps its keys (they are below the next lease's floor).
    fn fold(&self, state: &Namespaces, through: i64, seq: u64, touched: &[Arc<str>]) -> Result<u64, StoreError> {
        let mut written = 0u64;
        let mut puts = Vec::with_capacity(touched.len());
        for (ns, st) in touched.iter().filter_map(|ns| Some((ns, state.get(&**ns)?))) {
            let value = serde_json::to_vec(&Snapshot { through, state: (**st).clone() })
                .map_err(|e| StoreError::io("state snapshot", std::io::Error::other(e)))?;
            written += value.len() as u64;
            puts.push((self.keys.state(ns), value));
        }
        // Within etcd's limits on operations and bytes per request, as a migration writes.
        for txn in group_puts(puts) {
            let out = self.block_on(self.etcd.txn(&self.fence(), &txn, &[])).map_err(|e| self.remote("fold", e))?;
            if !out.succeeded {
                return Err(self.fenced("fold"));
            }
        }
        self.collect_below_floor()?;
        let dir = self.log_dir();
        let start = [dir.clone(), format!("{:020}", self.floor.load(Ordering::SeqCst)).into_bytes()].concat();
        let end = [dir, format!("{seq:020}").into_bytes()].concat();
        let delete = [Op::DeleteRange(start, end)];
        let out = self.block_on(self.etcd.txn(&self.fence(), &delete, &[])).map_err(|e| self.remote("fold", e))?;
        if !out.succeeded {
            return Err(self.fenced("fold"));
        }
        // Namespaces committed again since the fold point stay: their later keys remain.
        self.touched.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, last| *last >= seq);
        Ok(written)
    }
}

impl EtcdBackend {
    /// Deletes this replica's log entries from before its current lease (an earlier run, or
    /// a lease lost) once every change in them is in its namespace's snapshot, written since
    /// by whoever owns it now.
    fn collect_below_floor(&self) -> Result<(), StoreError> {
        let dir = self.log_dir();
        let floor = [dir.clone(), format!("{:020}", self.floor.load(Ordering::SeqCst)).into_bytes()].concat();
        let (entries, _) = self.block_on(self.etcd.range(&dir, &floor)).map_err(|e| self.remote("fold", e))?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut covered = Vec::new();
        let mut throughs: BTreeMap<Arc<str>, i64> = BTreeMap::new();
        for kv in &entries {
            let Ok(entry) = serde_json::from_slice::<Entry>(&kv.value) else { continue };
            let mut all = true;
            for change in &entry.changes {
                let through = match throughs.get(&change.namespace) {
                    Some(t) => *t,
                    None => {
                        let (found, _) = self
                            .block_on(self.etcd.get(&self.keys.state(&change.namespace)))
                            .map_err(|e| self.remote("fold", e))?;
                        let t = found
                            .and_then(|kv| serde_json::from_slice::<Snapshot>(&kv.value).ok())
                            .map_or(0, |s| s.through);
                        throughs.insert(change.namespace.clone(), t);
                        t
                    }
                };
                all &= through >= kv.mod_revision;
            }
            if all {
                covered.push(Op::Delete(kv.key.clone()));
            }
        }
        for chunk in covered.chunks(PER_TXN) {
            self.block_on(self.etcd.txn(&self.fence(), chunk, &[])).map_err(|e| self.remote("fold", e))?;
        }
        Ok(())
    }

    /// One namespace's state as last committed by any replica, for a replica that has just
    /// claimed it (its previous owner may have written since this one started): its snapshot
    /// with every later log entry applied. `None` when it has never had state.
    fn namespaces_now(&self, namespaces: &[String]) -> Result<BTreeMap<String, NamespaceState>, StoreError> {
        // A few namespaces: their snapshot keys alone; many (a replica taking over a share of
        // the fleet): every snapshot in one range, cheaper than thousands of reads.
        let mut reads: Vec<Op> = if namespaces.len() <= 64 {
            namespaces.iter().map(|ns| Op::Get(self.keys.state(ns))).collect()
        } else {
            vec![Op::GetPrefix(self.keys.states())]
        };
        reads.push(Op::GetPrefix(self.keys.logs()));
        let out = self.block_on(self.etcd.txn(&[], &reads, &[])).map_err(|e| self.remote("load", e))?;
        let mut gets = out.gets;
        let logs = gets.pop().unwrap_or_default();
        let snapshots: Vec<KeyValue> = gets.into_iter().flatten().collect();
        let mut state = assemble(&self.keys, &snapshots, &logs)
            .map_err(|reason| StoreError::Remote { what: format!("load ({})", self.location), reason })?;
        Ok(namespaces.iter().filter_map(|ns| Some((ns.clone(), state.namespaces.remove(ns)?))).collect())
    }
}

/// The puts that write every namespace of `state` as its snapshot through revision
/// `through`, grouped into transactions within etcd's default limits: at most [`PER_TXN`]
/// puts and [`MAX_TXN_BYTES`] bytes of keys and values each, counting every key twice (a
/// caller may compare each key in the same transaction). An error names a namespace whose
/// snapshot alone is larger.
pub fn snapshot_txns(keys: &Keys, state: &StateFile, through: i64) -> Result<Vec<Vec<Op>>, String> {
    let mut puts = Vec::with_capacity(state.namespaces.len());
    for (ns, st) in &state.namespaces {
        let value = serde_json::to_vec(&Snapshot { through, state: st.clone() })
            .map_err(|e| format!("the state of namespace {ns:?} cannot be written as JSON: {e}"))?;
        let key = keys.state(ns);
        let size = 2 * key.len() + value.len();
        if size > MAX_TXN_BYTES {
            return Err(format!(
                "the state of namespace {ns:?} takes {size} bytes, more than one etcd request carries ({MAX_TXN_BYTES})"
            ));
        }
        puts.push((key, value));
    }
    Ok(group_puts(puts))
}

/// Puts grouped into transactions of at most [`PER_TXN`] puts and [`MAX_TXN_BYTES`] bytes of
/// keys and values, each key counted twice (it may be compared in the same transaction). A
/// put larger than that goes alone, for etcd to refuse by name.
fn group_puts(puts: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Vec<Op>> {
    let (mut txns, mut current, mut bytes) = (Vec::new(), Vec::new(), 0);
    for (key, value) in puts {
        let size = 2 * key.len() + value.len();
        if !current.is_empty() && (current.len() >= PER_TXN || bytes + size > MAX_TXN_BYTES) {
            txns.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(Op::Put { key, value, lease: 0 });
    }
    if !current.is_empty() {
        txns.push(current);
    }
    txns
}

/// Every namespace's state: its snapshot, with the log entries above the snapshot's
/// revision applied in revision order, as a replica loads it. Pure, so the rule is testable
/// without etcd.
pub fn assemble(keys: &Keys, states: &[KeyValue], logs: &[KeyValue]) -> Result<StateFile, String> {
    let states_dir = keys.states();
    let mut out = StateFile { version: STATE_VERSION, ..StateFile::default() };
    let mut through: BTreeMap<String, i64> = BTreeMap::new();
    for kv in states {
        let ns = Keys::name_in(&states_dir, &kv.key).ok_or("a state key outside the state folder")?;
        let snapshot: Snapshot =
            serde_json::from_slice(&kv.value).map_err(|e| format!("state of namespace {ns:?} is not valid: {e}"))?;
        through.insert(ns.to_string(), snapshot.through);
        out.namespaces.insert(ns.to_string(), snapshot.state);
    }
    let mut logs: Vec<&KeyValue> = logs.iter().collect();
    logs.sort_by_key(|kv| kv.mod_revision);
    for kv in logs {
        let entry: Entry = serde_json::from_slice(&kv.value)
            .map_err(|e| format!("log entry {} is not valid: {e}", String::from_utf8_lossy(&kv.key)))?;
        for change in entry.changes {
            if through.get(&*change.namespace).is_some_and(|t| kv.mod_revision <= *t) {
                continue;
            }
            out.apply(change);
        }
    }
    for ns in out.namespaces.values_mut() {
        ns.share_batches();
    }
    Ok(out)
}

impl StateBackend for EtcdBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn load(&mut self) -> Result<Loaded, StateError> {
        let unreadable = |reason: String| StateError::Remote { location: self.location.clone(), reason };
        let (states, logs) = self.read_all().map_err(|e| unreadable(e.to_string()))?;
        // Carry on this replica's log after what an earlier run of it left.
        let mine = self.log_dir();
        let next = logs
            .iter()
            .filter_map(|kv| std::str::from_utf8(kv.key.strip_prefix(mine.as_slice())?).ok()?.parse::<u64>().ok())
            .max()
            .map_or(0, |s| s + 1);
        self.seq.fetch_max(next, Ordering::SeqCst);
        let fresh = states.is_empty() && logs.is_empty();
        let state = assemble(&self.keys, &states, &logs).map_err(unreadable)?;
        Ok(Loaded { state, origin: if fresh { Origin::Fresh } else { Origin::Current } })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let entry = serde_json::to_vec(&Entry { changes: changes.to_vec() })
            .map_err(|e| StoreError::io("state log entry", std::io::Error::other(e)))?;
        let seq = {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = self.seq.fetch_add(1, Ordering::SeqCst);
            for change in changes {
                touched.insert(change.namespace.clone(), seq);
            }
            seq
        };
        let key = [self.log_dir(), format!("{seq:020}").into_bytes()].concat();
        let put = [Op::Put { key, value: entry, lease: 0 }];
        let out = self.block_on(self.etcd.txn(&self.fence(), &put, &[])).map_err(|e| self.remote("commit", e))?;
        if !out.succeeded {
            return Err(self.fenced("commit"));
        }
        self.last_revision.fetch_max(out.revision, Ordering::SeqCst);
        self.since_fold.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn compaction_due(&self) -> bool {
        self.since_fold.load(Ordering::SeqCst) >= FOLD_EVERY
    }

    /// The view holds every commit that returned before the fold was asked for: those up to
    /// the revision and sequence read here.
    fn compact(&self, state: &Namespaces) -> Result<u64, StoreError> {
        let (through, seq, touched) = self.fold_point();
        self.since_fold.store(0, Ordering::SeqCst);
        self.fold(state, through, seq, &touched)
    }

    fn close(&self, state: &Namespaces) -> Result<u64, StoreError> {
        let (through, seq, touched) = self.fold_point();
        self.fold(state, through, seq, &touched)
    }

    /// The namespace's snapshot through this replica's last commit, fenced on the lease: its
    /// changes in this replica's log are in it, so a later fold may delete them.
    fn hand_over(&self, namespace: &str, state: &NamespaceState) -> Result<(), StoreError> {
        let through = self.last_revision.load(Ordering::SeqCst);
        let value = serde_json::to_vec(&Snapshot { through, state: state.clone() })
            .map_err(|e| StoreError::io("state snapshot", std::io::Error::other(e)))?;
        let put = [Op::Put { key: self.keys.state(namespace), value, lease: 0 }];
        let out = self.block_on(self.etcd.txn(&self.fence(), &put, &[])).map_err(|e| self.remote("hand-over", e))?;
        if !out.succeeded {
            return Err(self.fenced("hand-over"));
        }
        Ok(())
    }

    fn load_namespaces(&self, namespaces: &[String]) -> Result<Option<BTreeMap<String, NamespaceState>>, StoreError> {
        self.namespaces_now(namespaces).map(Some)
    }
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which an async context forbids; nothing of
        // the backend's runs in the background, so there is nothing to wait for.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CadenceKind;
    use crate::storage::state::CadenceState;

    fn kv(key: Vec<u8>, value: &impl Serialize, rev: i64) -> KeyValue {
        KeyValue {
            key,
            value: serde_json::to_vec(value).expect("json"),
            create_revision: rev,
            mod_revision: rev,
            lease: 0,
        }
    }

    fn change(ns: &str, backoff: u32) -> Change {
        Change {
            namespace: ns.into(),
            cadence: CadenceKind::Fast,
            state: std::sync::Arc::new(CadenceState { backoff, ..CadenceState::default() }),
        }
    }

    fn backoff(state: &StateFile, ns: &str) -> Option<u32> {
        state.namespaces.get(ns)?.cadences.get(&CadenceKind::Fast).map(|c| c.backoff)
    }

    #[test]
    fn log_entries_apply_in_revision_order_over_the_snapshot_and_never_below_it() {
        let keys = Keys::new("/p/");
        let snapshot = |backoff, through| {
            let mut st = NamespaceState::default();
            st.cadences
                .insert(CadenceKind::Fast, std::sync::Arc::new(CadenceState { backoff, ..CadenceState::default() }));
            Snapshot { through, state: st }
        };
        let logs = [
            kv(keys.log("b", 0), &Entry { changes: vec![change("x", 3)] }, 30),
            kv(keys.log("a", 0), &Entry { changes: vec![change("x", 1), change("y", 1)] }, 10),
            kv(keys.log("a", 1), &Entry { changes: vec![change("x", 2)] }, 20),
        ];
        let none = assemble(&keys, &[], &logs).expect("assembles");
        assert_eq!((backoff(&none, "x"), backoff(&none, "y")), (Some(3), Some(1)), "the latest revision wins");
        // A fold through revision 20 was written, its log keys not yet deleted.
        let states = [kv(keys.state("x"), &snapshot(2, 20), 25)];
        let folded = assemble(&keys, &states, &logs).expect("assembles");
        assert_eq!(backoff(&folded, "x"), Some(3), "only the entry above the fold applies");
        let states = [kv(keys.state("x"), &snapshot(9, 30), 35)];
        assert_eq!(
            backoff(&assemble(&keys, &states, &logs).expect("assembles"), "x"),
            Some(9),
            "nothing older over it"
        );
        let bad = [KeyValue { value: b"{".to_vec(), ..logs[0].clone() }];
        assert!(assemble(&keys, &[], &bad).is_err_and(|e| e.contains("log entry")));
    }

    #[test]
    fn snapshots_go_in_transactions_within_etcds_limits_and_assemble_back_to_the_same_state() {
        let keys = Keys::new("/p/");
        let mut state = StateFile { version: STATE_VERSION, ..StateFile::default() };
        let cadence = |backoff, message: usize| CadenceState {
            backoff,
            last_error: (message > 0).then(|| {
                Box::new(crate::storage::state::LastError {
                    class: crate::model::ErrorClass::Network,
                    message: "x".repeat(message),
                    at_ms: 1,
                })
            }),
            ..CadenceState::default()
        };
        let add = |state: &mut StateFile, ns: String, st: CadenceState| {
            state.namespaces.entry(ns).or_default().cadences.insert(CadenceKind::Fast, std::sync::Arc::new(st));
        };
        for i in 0..250 {
            add(&mut state, format!("dao:{i:03}"), cadence(i, 0));
        }
        // Five namespaces of 300 KB: three fill a transaction's bytes long before its count.
        for i in 0..5 {
            add(&mut state, format!("big:{i}"), cadence(1, 300_000));
        }
        let txns = snapshot_txns(&keys, &state, 42).expect("fits");
        let mut snapshots = Vec::new();
        for txn in &txns {
            assert!(!txn.is_empty() && txn.len() <= PER_TXN, "{} puts", txn.len());
            let mut bytes = 0;
            for op in txn {
                let Op::Put { key, value, lease: 0 } = op else { panic!("only puts: {op:?}") };
                bytes += 2 * key.len() + value.len();
                snapshots.push(kv(key.clone(), &serde_json::from_slice::<Snapshot>(value).expect("a snapshot"), 50));
            }
            assert!(bytes <= MAX_TXN_BYTES, "{bytes} bytes");
        }
        assert_eq!(snapshots.len(), 255);
        // big:0..=2 fill the first by bytes; big:3, big:4 and 98 small ones the second, by
        // count; then 100 and 52 small ones.
        let sizes: Vec<usize> = txns.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 100, 100, 52]);
        // A log entry at or below the snapshots' revision is older than them; one above is newer.
        let logs = [
            kv(keys.log("a", 0), &Entry { changes: vec![change("dao:000", 99)] }, 42),
            kv(keys.log("a", 1), &Entry { changes: vec![change("dao:001", 77)] }, 43),
        ];
        let mut loaded = assemble(&keys, &snapshots, &logs).expect("assembles");
        assert_eq!(backoff(&loaded, "dao:000"), Some(0), "an entry the snapshot includes is not applied again");
        assert_eq!(backoff(&loaded, "dao:001"), Some(77), "a later entry is");
        loaded
            .namespaces
            .get_mut("dao:001")
            .expect("there")
            .cadences
            .insert(CadenceKind::Fast, std::sync::Arc::new(cadence(1, 0)));
        assert_eq!(loaded, state, "every namespace as it was written");
        add(&mut state, "huge".into(), cadence(1, 2 * MAX_TXN_BYTES));
        let e = snapshot_txns(&keys, &state, 42).expect_err("one namespace over a request's limit");
        assert!(e.contains("\"huge\""), "{e}");
    }
}
