//! `local:` journals in cluster mode, on a volume every replica writes.
//!
//! Each replica appends to a file of its own per journal, `<name>@<node>.jsonl`, so no two
//! processes ever append to one file (appends from two machines to one file on a network
//! file system may interleave or overwrite). A line counts only once the file's head in etcd
//! (`<prefix>journals/<name>@<node>`) has moved to it, by a transaction that holds only while
//! this replica still owns the line's namespace. A line past the committed head, written by a
//! replica that crashed or was paused before its commit, is no line of the journal: it is cut
//! off before the next append, and `verify` refuses a receipt that names it.
//!
//! Appends to one file run one at a time: append, make durable, commit, and only then the
//! next, so each commit moves the head from the line before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Tail, attestation, load_tail};
use crate::cluster::ledger::{Head, JournalHead, OutputLedger};
use crate::model::digest::sha256_hex;
use crate::model::fsname;
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass};

/// At most this many attempts per file are remembered as committed by this process.
const RECENT: usize = 4096;

/// The file of journal `name` that replica `node` appends to, without its extension: also
/// the name of its head in etcd.
pub fn file_name(name: &str, node: &str) -> String {
    format!("{}@{node}", fsname::encode(name))
}

/// Where file `file` (a [`file_name`]) of a journal lives under `root`.
pub fn file_path(root: &Path, file: &str) -> PathBuf {
    root.join("out").join("journal").join(format!("{file}.jsonl"))
}

/// The files of journal `name` under `root`, every replica's, by their [`file_name`].
pub fn files_of(root: &Path, name: &str) -> std::io::Result<Vec<String>> {
    let prefix = format!("{}@", fsname::encode(name));
    let dir = root.join("out").join("journal");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".jsonl")).map(str::to_string) else {
            continue;
        };
        // The rest is a node id, which holds no `@`: `a@b@c` is a file of journal `a@b`.
        if file.strip_prefix(&prefix).is_some_and(|node| !node.is_empty() && !node.contains('@')) {
            out.push(file);
        }
    }
    out.sort();
    Ok(out)
}

/// What this process knows of one of its files: the committed head, and the attempts it
/// committed lately (an attempt whose namespace was lost and taken back may be anchored by
/// its old job and its new one at once: the second finds the first's line here).
#[derive(Default)]
struct FileState {
    head: Option<Head>,
    recent: HashMap<String, Attestation>,
}

/// This replica's journal files and their commit points.
pub struct SharedJournals {
    node: String,
    ledger: Arc<dyn OutputLedger>,
    files: Mutex<HashMap<String, Arc<tokio::sync::Mutex<FileState>>>>,
    /// `vmsh_cluster_fenced_writes_total{what="journal"}`.
    fenced: prometheus::IntCounter,
}

impl SharedJournals {
    /// Journals appended to as replica `node`, committed in `ledger`.
    pub fn new(node: &str, ledger: Arc<dyn OutputLedger>, fenced: prometheus::IntCounter) -> Self {
        Self { node: node.to_string(), ledger, files: Mutex::new(HashMap::new()), fenced }
    }

    /// The ledger, which the receipts are committed in too.
    pub fn ledger(&self) -> &Arc<dyn OutputLedger> {
        &self.ledger
    }

    fn state(&self, file: &str) -> Arc<tokio::sync::Mutex<FileState>> {
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(files.entry(file.to_string()).or_default())
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
        let state = shared.state(&file);
        let mut state = state.lock().await;
        if let Some(done) = state.recent.get(&req.attempt_id) {
            return Ok(done.clone());
        }
        let head = match state.head.clone() {
            Some(h) => h,
            None => shared
                .ledger
                .journal_head(&file)
                .await
                .map_err(|e| unknown(format!("cannot read the head of journal {file} in etcd: {e}")))?,
        };
        let committed = JournalHead::of(&head).map_err(|e| unknown(e.to_string()))?;
        let path = file_path(&self.root, &file);
        let rel = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
        let (_, _, mut entry) = self.entry(req);
        let tail = self.tail(&file);
        let written = self
            .writer
            .durable(move |touched| {
                cut_to(&path, &tail, committed.as_ref())?;
                let (hash, f) = super::append_unsynced(&path, &tail, &mut entry)?;
                touched.add(&f).map_err(|e| format!("cannot stat journal {}: {e}", path.display()))?;
                Ok::<_, String>((entry, hash))
            })
            .await;
        let (entry, hash) = written.map_err(|e| unknown(format!("{e}; the attempt will be resumed")))?;
        let to = JournalHead { seq: entry.seq, hash: hash.clone() };
        match shared.ledger.advance_journal(&req.namespace, &file, &head, &to).await {
            Ok(Some(new)) => {
                let att = attestation(&rel, &entry, &hash);
                state.head = Some(new);
                if state.recent.len() >= RECENT {
                    state.recent.clear();
                }
                state.recent.insert(req.attempt_id.clone(), att.clone());
                Ok(att)
            }
            Ok(None) => {
                state.head = None;
                shared.fenced.inc();
                Err(unknown(format!(
                    "journal {file}: etcd refused to commit line {}: namespace {} is no longer this replica's (or the head moved); the line does not count",
                    entry.seq, req.namespace
                )))
            }
            Err(e) => {
                // The commit may have landed: the head is read again before the next append.
                state.head = None;
                Err(unknown(format!(
                    "journal {file}: cannot commit line {} in etcd: {e}; the attempt will be resumed",
                    entry.seq
                )))
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
        if let Some(done) = shared.state(&own).lock().await.recent.get(&req.attempt_id) {
            return Ok(Some(done.clone()));
        }
        let (root, name) = (self.root.clone(), req.target.name.clone());
        let files = tokio::task::spawn_blocking(move || files_of(&root, &name))
            .await
            .map_err(|e| format!("journal reader failed: {e}"))?
            .map_err(|e| format!("cannot list the journal's files: {e}"))?;
        for file in files {
            let head = shared.ledger.journal_head(&file).await.map_err(|e| format!("journal {file}: {e}"))?;
            let Some(committed) = JournalHead::of(&head).map_err(|e| e.to_string())? else { continue };
            let path = file_path(&self.root, &file);
            let rel = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
            let id = req.attempt_id.clone();
            let found = tokio::task::spawn_blocking(move || super::find_attempt_upto(&path, &id, committed.seq))
                .await
                .map_err(|e| format!("journal reader failed: {e}"))?
                .map_err(|e| format!("cannot read journal {file}: {e}"))?;
            if let Some((entry, hash)) = found {
                return Ok(Some(attestation(&rel, &entry, &hash)));
            }
        }
        Ok(None)
    }
}

/// Makes the file end at the committed head `head` (empty when `None`): lines past it never
/// counted, and are cut off. A file with fewer lines than its committed head lost lines that
/// counted: that is refused, never papered over.
fn cut_to(path: &Path, tail: &Mutex<Tail>, head: Option<&JournalHead>) -> Result<(), String> {
    let mut tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (want_seq, want_hash) = head.map_or((0, super::GENESIS), |h| (h.seq, h.hash.as_str()));
    if tail.file.is_some() && tail.seq == want_seq && tail.prev == want_hash {
        return Ok(());
    }
    let (prev, seq) = load_tail(path)?;
    if seq == want_seq && prev == want_hash {
        *tail = Tail { file: None, prev, seq };
        return Ok(());
    }
    if seq < want_seq {
        return Err(format!(
            "journal {} has {seq} line(s) but line {want_seq} was committed: lines that counted are missing from the file; restore it",
            path.display()
        ));
    }
    // Find where line `want_seq` ends, checking it is the line committed.
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read journal {}: {e}", path.display()))?;
    let mut end = 0usize;
    let mut last_hash = super::GENESIS.to_string();
    for n in 0..want_seq {
        let rest = &bytes[end..];
        let Some(i) = rest.iter().position(|b| *b == b'\n') else {
            return Err(format!("journal {} ends before line {}", path.display(), n + 1));
        };
        last_hash = sha256_hex(&rest[..i]);
        end += i + 1;
    }
    if last_hash != want_hash {
        return Err(format!(
            "journal {}: line {want_seq} is not the line committed in etcd (its hash differs); refusing to extend it",
            path.display()
        ));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open journal {}: {e}", path.display()))?;
    file.set_len(end as u64).map_err(|e| format!("cannot cut journal {}: {e}", path.display()))?;
    file.sync_all().map_err(|e| format!("cannot sync journal {}: {e}", path.display()))?;
    *tail = Tail { file: None, prev: last_hash, seq: want_seq };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::JournalEntry;
    use super::*;

    fn line(seq: u64, prev: &str) -> (String, String) {
        let entry = JournalEntry {
            seq,
            namespace: "ns".into(),
            cadence: crate::model::CadenceKind::Fast,
            target: "local:j".into(),
            batch_id: "b".into(),
            root: "sha256:00".into(),
            time: "t".into(),
            time_ms: 0,
            attempt_id: format!("a{seq}"),
            prev: prev.into(),
        };
        let text = serde_json::to_string(&entry).expect("json");
        let hash = sha256_hex(text.as_bytes());
        (text, hash)
    }

    #[test]
    fn lines_past_the_committed_head_are_cut_off_and_a_file_behind_it_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("j@a.jsonl");
        let (l1, h1) = line(1, super::super::GENESIS);
        let (l2, h2) = line(2, &h1);
        let (l3, _) = line(3, &h2);
        std::fs::write(&path, format!("{l1}\n{l2}\n{l3}\n")).expect("write");
        let tail = Mutex::new(Tail::default());
        cut_to(&path, &tail, Some(&JournalHead { seq: 2, hash: h2.clone() })).expect("cut");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), format!("{l1}\n{l2}\n"), "line 3 never counted");
        let wrong = cut_to(&path, &Mutex::new(Tail::default()), Some(&JournalHead { seq: 1, hash: "f".repeat(64) }));
        assert!(wrong.is_err_and(|e| e.contains("not the line committed")));
        let behind = cut_to(&path, &Mutex::new(Tail::default()), Some(&JournalHead { seq: 5, hash: h2 }));
        assert!(behind.is_err_and(|e| e.contains("missing")));
        cut_to(&path, &Mutex::new(Tail::default()), None).expect("nothing committed: nothing counts");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }

    #[test]
    fn a_journals_files_are_found_by_name_and_a_longer_name_is_not_taken_for_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for f in ["j@a", "j@b", "j@b@c", "jj@a", "j"] {
            std::fs::create_dir_all(tmp.path().join("out/journal")).expect("mkdir");
            std::fs::write(file_path(tmp.path(), f), "").expect("write");
        }
        assert_eq!(files_of(tmp.path(), "j").expect("list"), ["j@a", "j@b"]);
        assert_eq!(file_name("a/b", "n1"), "a%2Fb@n1");
    }
}
