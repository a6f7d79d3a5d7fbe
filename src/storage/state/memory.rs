//! A backend in memory for tests: it keeps what was committed, can be told to fail, and can
//! hold a commit until the test lets it go, so the store's grouping and retries can be
//! watched without a disk.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::backend::{Change, Namespaces, StateBackend, StoreError};
use super::{Loaded, Origin, STATE_VERSION, StateError, StateFile};

/// A backend in memory; clones share it, so a test keeps a handle on the one it gave away.
#[derive(Clone, Default)]
pub(crate) struct MemoryBackend(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Every commit that succeeded, in order.
    commits: Mutex<Vec<Vec<Change>>>,
    /// Commits begun, failed ones included.
    begun: AtomicUsize,
    failing: AtomicBool,
    /// Makes the next commit wait until the test sends on the other end.
    gate: Mutex<Option<Receiver<()>>>,
    /// The views closing wrote.
    closed: Mutex<Vec<Namespaces>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBackend {
    /// Makes every write fail (`true`) or succeed again.
    pub(crate) fn fail(&self, failing: bool) {
        self.0.failing.store(failing, Ordering::SeqCst);
    }

    /// Holds the next commit until the returned sender sends (or is dropped).
    pub(crate) fn hold_next_commit(&self) -> Sender<()> {
        let (release, gate) = channel();
        *lock(&self.0.gate) = Some(gate);
        release
    }

    /// Commits begun so far, failed ones included.
    pub(crate) fn begun(&self) -> usize {
        self.0.begun.load(Ordering::SeqCst)
    }

    /// The changes of every commit that succeeded, in order.
    pub(crate) fn commits(&self) -> Vec<Vec<Change>> {
        lock(&self.0.commits).clone()
    }

    /// The views written by closing.
    pub(crate) fn closed(&self) -> Vec<Namespaces> {
        lock(&self.0.closed).clone()
    }

    fn refused(&self) -> Result<(), StoreError> {
        if self.0.failing.load(Ordering::SeqCst) {
            return Err(StoreError::io("memory", std::io::Error::other("told to fail")));
        }
        Ok(())
    }
}

impl StateBackend for MemoryBackend {
    fn location(&self) -> &str {
        "memory"
    }

    /// What was committed, as a restart would find it.
    fn load(&mut self) -> Result<Loaded, StateError> {
        let mut state = StateFile { version: STATE_VERSION, ..StateFile::default() };
        for change in lock(&self.0.commits).iter().flatten() {
            state.apply(change.clone());
        }
        Ok(Loaded { state, origin: Origin::Current })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.0.begun.fetch_add(1, Ordering::SeqCst);
        let gate = lock(&self.0.gate).take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        self.refused()?;
        lock(&self.0.commits).push(changes.to_vec());
        Ok(())
    }

    /// As a shared store would: what was committed to the namespace, by anyone.
    fn load_namespaces(
        &self,
        namespaces: &[String],
    ) -> Result<Option<std::collections::BTreeMap<String, super::NamespaceState>>, StoreError> {
        self.refused()?;
        let mut found = std::collections::BTreeMap::<String, super::NamespaceState>::new();
        for change in lock(&self.0.commits).iter().flatten().filter(|c| namespaces.iter().any(|n| *n == *c.namespace)) {
            found
                .entry(change.namespace.to_string())
                .or_default()
                .cadences
                .insert(change.cadence, change.state.clone());
        }
        Ok(Some(found))
    }

    fn close(&self, state: &Namespaces) -> Result<u64, StoreError> {
        self.refused()?;
        lock(&self.0.closed).push(state.clone());
        Ok(0)
    }
}
