//! What the scheduler needs of the place its state is kept, as one small trait: a state file
//! with its log on this machine ([`super::file::FileBackend`]), or a key-value store that the
//! members of a cluster share.
//!
//! The unit of state is one cadence of one namespace. Every write ([`Change`]) replaces the
//! whole state of a cadence, so writing a change twice, or over a later state, changes
//! nothing: a failed write can be written again without knowing how far it got.
//!
//! The [`super::store::StateStore`] actor owns the state in memory and calls its backend from
//! blocking threads. It groups the changes that arrive while a commit runs into the next one,
//! retries a failed commit, and reports every write to health and metrics; a backend only
//! writes, and says when it could not.
//!
//! The contract a backend keeps:
//!
//! - **Load.** [`StateBackend::load`] runs once, before anything else, and returns every
//!   cadence's state as last committed. A change whose commit returned `Ok` is in it; a
//!   change whose commit failed or never returned may or may not be.
//! - **Durable when acknowledged.** [`StateBackend::commit`] returns `Ok` only once every
//!   change it was given survives a crash of the process and of the machine. The namespace
//!   actor waits for this before it sends an attempt to its target, so a crash never forgets
//!   an attempt that may have been sent.
//! - **Order.** Commits run one at a time, in the order their changes were made, and a
//!   commit's changes are in that order too: the later change of a cadence wins, within a
//!   commit and across commits. A backend may write only the last change of each cadence of
//!   a commit.
//! - **Whole commits.** After a crash, a commit's changes are all in what `load` returns or
//!   none of them are. The members of an aggregate record their membership (and the
//!   aggregate's progress) in one commit ([`super::store::Hold`]), and a crash must not keep
//!   some of them: the rest would build another aggregate.
//! - **Failure.** An `Err` means none of the commit's changes may be counted on, though they
//!   may be durable (a transaction whose answer was lost). The caller keeps them in memory
//!   and commits them again; every waiter sees the error meanwhile.
//! - **Ownership.** Only one process may write the state. The file store's ownership is the
//!   lock on the state file, taken before `load` (`src/lockfile.rs`), so its commits need no
//!   condition. A store shared by several processes must make each commit conditional on
//!   this process still owning the state (its lease, or its leader key's revision, compared
//!   in the same transaction as the writes), and fail the commit when it does not.
//! - **Compaction.** A backend that keeps a log of changes asks, through
//!   [`StateBackend::compaction_due`], for a view of the whole state to fold the log into
//!   ([`StateBackend::compact`]); the view is taken after the request, so it holds every
//!   change committed before it. A compaction may run while one commit runs. A backend that
//!   writes every change in place never asks.
//! - **Close.** [`StateBackend::close`] is the last write of a shutdown, after the last
//!   commit returned, and runs alone. It leaves the store complete in its final form; when it
//!   fails, nothing committed is lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{CadenceState, Loaded, NamespaceState, StateError};
use crate::model::CadenceKind;

/// One cadence's new state: what a commit writes (and one line of the file store's log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Namespace name.
    #[serde(rename = "ns")]
    pub namespace: Arc<str>,
    /// Cadence.
    pub cadence: CadenceKind,
    /// Its whole new state.
    pub state: Arc<CadenceState>,
}

/// A point-in-time view of every namespace's state, cheap to take: namespaces are shared
/// with memory until memory changes them.
pub type Namespaces = BTreeMap<Arc<str>, Arc<NamespaceState>>;

/// Why a write did not become durable. Cloned to everyone who waits for the write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file system refused a write, or the sync that makes it durable.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// A shared store (etcd) could not be reached, or refused the write.
    #[error("{what}: {reason}")]
    Remote {
        /// What was being written, and where.
        what: String,
        /// Why not.
        reason: String,
    },
    /// A shared store refused the write because this process no longer owns what it wrote.
    #[error("{what}: refused: {reason}")]
    Fenced {
        /// What was being written, and where.
        what: String,
        /// Why this process no longer owns it.
        reason: String,
    },
}

impl StoreError {
    /// An I/O error while writing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { what: what.into(), source: Arc::new(source) }
    }
}

/// Where the scheduler's state is kept; see the module documentation for the contract.
///
/// Every method but `load` and `compaction_due` blocks until its write is done, and is
/// called from a blocking thread; `commit` and `compact` may run at the same time.
pub trait StateBackend: Send + Sync + 'static {
    /// Where the state is kept, as log lines and /health name it (the state file's path).
    fn location(&self) -> &str;

    /// Reads every namespace's state; called once, before any other method.
    fn load(&mut self) -> Result<Loaded, StateError>;

    /// Makes `changes` durable, in order; returns once they are.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;

    /// Whether the backend asks for a view of the whole state to fold its log into. Asked on
    /// every change from the actor's thread: it answers at once, without waiting for a write.
    fn compaction_due(&self) -> bool {
        false
    }

    /// Folds the backend's log into `state`; returns the bytes written, for the log line.
    fn compact(&self, _state: &Namespaces) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// The last write of a shutdown; returns the bytes written, for the log line.
    fn close(&self, state: &Namespaces) -> Result<u64, StoreError>;

    /// The last write of a namespace this process lets go of (after its last commit): a store
    /// others read writes its whole state, so that nothing of it is left only in this
    /// process's log, which later folds delete. A store only this process writes has nothing
    /// to do.
    fn hand_over(&self, _namespace: &str, _state: &NamespaceState) -> Result<(), StoreError> {
        Ok(())
    }

    /// Some namespaces' state as the store has it now, for a process that has just come to
    /// own them (a namespace never written is left out). A store only this process writes
    /// answers `None`: its memory is the truth.
    fn load_namespaces(&self, _namespaces: &[String]) -> Result<Option<BTreeMap<String, NamespaceState>>, StoreError> {
        Ok(None)
    }
}
