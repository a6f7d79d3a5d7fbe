//! `local:` journals in cluster mode, on a volume every replica writes.
//!
//! Each replica appends to a file of its own per journal, `<name>@<node>.jsonl`, so no two
//! processes ever append to one file (appends from two machines to one file on a network
//! file system may interleave or overwrite). A line counts only once the file's head in etcd
//! (`<prefix>journals/<name>@<node>`) has moved to it under the line's namespace's claim
//! ([`crate::storage::chain`]): a line written by a replica that crashed or was paused
//! before its commit is no line of the journal, and `verify` refuses a receipt that names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{JournalEntry, attestation};
use crate::cluster::ledger::{ChainHead, OutputLedger};
use crate::model::fsname;
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass};
use crate::storage::chain::{self, ChainError, Chains};
use crate::storage::writer::Writer;

/// The file of journal `name` that replica `node` appends to, without its extension.
pub fn file_name(name: &str, node: &str) -> String {
    format!("{}@{node}", fsname::encode(name))
}

/// The etcd head of journal file `file` (a [`file_name`]), under the prefix.
pub fn head_name(file: &str) -> String {
    format!("journals/{file}")
}

/// The folder of every journal file under `root`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("out").join("journal")
}

/// This replica's journal files and their commit points.
pub struct SharedJournals {
    node: String,
    chains: Chains<Attestation>,
    /// `vmsh_cluster_fenced_writes_total{what="journal"}`.
    fenced: prometheus::IntCounter,
}

impl SharedJournals {
    /// Journals appended to as replica `node`, committed in `ledger`, made durable by
    /// `writer`'s rounds.
    pub fn new(node: &str, ledger: Arc<dyn OutputLedger>, writer: Arc<Writer>, fenced: prometheus::IntCounter) -> Self {
        Self { node: node.to_string(), chains: Chains::new(ledger, writer), fenced }
    }
}

fn unknown(message: String) -> AnchorError {
    AnchorError::new(ErrorClass::Unknown, message)
}

impl super::LocalDriver {
    /// [`super::LocalDriver::anchor`] in cluster mode: append to this replica's file after
    /// its committed head, make the line durable, then commit it.
    pub(super) async fn anchor_shared(
        &self,
        shared: &SharedJournals,
        req: &AnchorRequest,
    ) -> Result<Attestation, AnchorError> {
        let file = file_name(&req.target.name, &shared.node);
        let path = chain::path_in(&dir(&self.root), &file);
        let rel = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
        let (_, _, mut entry) = self.entry(req);
        let line = move |seq: u64, prev: &str| {
            entry.seq = seq;
            entry.prev = prev.to_string();
            let bytes = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
            let att = attestation(&rel, &entry, &crate::model::digest::sha256_hex(&bytes));
            Ok((bytes, att))
        };
        let committed = shared.chains.commit(&req.namespace, &head_name(&file), &path, &req.attempt_id, line).await;
        match committed {
            Ok(c) => Ok(c.value),
            Err(ChainError::Fenced(e)) => {
                shared.fenced.inc();
                Err(unknown(e))
            }
            Err(e @ (ChainError::Io(_) | ChainError::Unknown(_))) => {
                Err(unknown(format!("{e}; the attempt will be resumed")))
            }
        }
    }

    /// [`super::LocalDriver::recover`] in cluster mode: the attempt's line among the
    /// committed lines of every replica's file of the journal.
    pub(super) async fn recover_shared(
        &self,
        shared: &SharedJournals,
        req: &AnchorRequest,
    ) -> Result<Option<Attestation>, String> {
        let own = file_name(&req.target.name, &shared.node);
        if let Some(done) = shared.chains.recent(&head_name(&own), &req.attempt_id).await {
            return Ok(Some(done.value));
        }
        let (journals, stem) = (dir(&self.root), fsname::encode(&req.target.name));
        let listed = journals.clone();
        let files = tokio::task::spawn_blocking(move || chain::files_of(&listed, &stem))
            .await
            .map_err(|e| format!("journal reader failed: {e}"))?
            .map_err(|e| format!("cannot list the journal's files: {e}"))?;
        for file in files {
            let head = shared
                .chains
                .ledger()
                .chain_head(&head_name(&file))
                .await
                .map_err(|e| format!("journal {file}: {e}"))?;
            let Some(committed) = ChainHead::of(&head).map_err(|e| e.to_string())? else { continue };
            let path = chain::path_in(&journals, &file);
            let rel = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
            let id = req.attempt_id.clone();
            let found = tokio::task::spawn_blocking(move || {
                let lines = chain::committed_lines(&path, committed.seq)?;
                Ok::<_, String>(lines.into_iter().rev().find_map(|(bytes, hash)| {
                    let entry: JournalEntry = serde_json::from_slice(&bytes).ok()?;
                    (entry.attempt_id == id).then(|| attestation(&rel, &entry, &hash))
                }))
            })
            .await
            .map_err(|e| format!("journal reader failed: {e}"))??;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_journal_file_is_named_for_the_journal_and_the_node() {
        assert_eq!(file_name("a/b", "n1"), "a%2Fb@n1");
        assert_eq!(head_name("a%2Fb@n1"), "journals/a%2Fb@n1");
    }
}
