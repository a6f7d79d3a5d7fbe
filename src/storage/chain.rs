//! Hash-chained JSON-lines files that count only up to a head committed in etcd: cluster
//! mode's outputs on a volume every replica writes (the `local:` journals, and each
//! namespace's index of its receipts).
//!
//! One process appends to a file (its name carries the node id), one line at a time: the line
//! is written after the committed head (lines past it, left by a crash or a pause before their
//! commit, never counted and are cut off first), made durable, and then the head moves to it
//! by a transaction that holds only under the fence the caller names (the namespace's claim).
//! Each line is a JSON object with `seq` (from 1) and `prev` (the hex SHA-256 of the line
//! before, or [`GENESIS`]); its hash is the SHA-256 of its bytes without the newline.
//!
//! Readers (recovery, `verify`) take a file's lines up to its committed head and no further.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cluster::ledger::{ChainHead, Head, OutputLedger};
use crate::model::digest::sha256_hex;
use crate::storage::durable::{SHARED_FILE, open_creating_dir};
use crate::storage::writer::Writer;

/// `prev` of a file's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line read back.
const MAX_LINE: usize = 1024 * 1024;

/// At most this many attempts per file are remembered as committed by this process.
const RECENT: usize = 4096;

/// Why a line was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The file could not be written or read.
    #[error("{0}")]
    Io(String),
    /// etcd could not be asked, or did not answer: the commit may or may not have landed.
    #[error("{0}")]
    Unknown(String),
    /// etcd refused the commit: the fence no longer holds (or the head moved).
    #[error("{0}")]
    Fenced(String),
}

/// A line committed: its number and hash, and what the caller stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    /// The line's number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// The caller's value of the line.
    pub value: T,
}

/// What this process knows of one of its files.
struct FileState<T> {
    head: Option<Head>,
    /// The file ends exactly at this (seq, hash), as last checked.
    end: Option<(u64, String)>,
    /// Lately committed lines, by the key the caller gave (an attempt id).
    recent: HashMap<String, Committed<T>>,
}

impl<T> Default for FileState<T> {
    fn default() -> Self {
        Self { head: None, end: None, recent: HashMap::new() }
    }
}

/// The chain files this process appends to, of one kind of line (`T` is what the caller
/// keeps of a committed line).
pub struct Chains<T> {
    ledger: Arc<dyn OutputLedger>,
    writer: Arc<Writer>,
    files: Mutex<HashMap<String, Arc<tokio::sync::Mutex<FileState<T>>>>>,
}

impl<T: Clone + Send + 'static> Chains<T> {
    /// Files committed in `ledger`, made durable by `writer`'s rounds.
    pub fn new(ledger: Arc<dyn OutputLedger>, writer: Arc<Writer>) -> Self {
        Self { ledger, writer, files: Mutex::new(HashMap::new()) }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn OutputLedger> {
        &self.ledger
    }

    fn state(&self, key: &str) -> Arc<tokio::sync::Mutex<FileState<T>>> {
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(files.entry(key.to_string()).or_default())
    }

    /// What this process committed lately for `id` in the file of head `key`.
    pub async fn recent(&self, key: &str, id: &str) -> Option<Committed<T>> {
        self.state(key).lock().await.recent.get(id).cloned()
    }

    /// Appends the line `line` makes (given its `seq` and `prev`) to `path`, whose head in
    /// etcd is `key`, and commits it under `namespace`'s fence. `id` names the line for
    /// [`Chains::recent`] (an attempt id): a line committed for it before is answered again,
    /// not appended twice.
    pub async fn commit(
        &self,
        namespace: &str,
        key: &str,
        path: &Path,
        id: &str,
        line: impl FnOnce(u64, &str) -> Result<(Vec<u8>, T), String> + Send + 'static,
    ) -> Result<Committed<T>, ChainError> {
        let state = self.state(key);
        let mut state = state.lock().await;
        if let Some(done) = state.recent.get(id) {
            return Ok(done.clone());
        }
        let head = match state.head.clone() {
            Some(h) => h,
            None => self
                .ledger
                .chain_head(key)
                .await
                .map_err(|e| ChainError::Unknown(format!("cannot read the head of {key} in etcd: {e}")))?,
        };
        let committed = ChainHead::of(&head).map_err(|e| ChainError::Unknown(e.to_string()))?;
        let end = state.end.take();
        let owned = path.to_path_buf();
        let written = self
            .writer
            .durable(move |touched| {
                let (seq, prev) = cut_to(&owned, end, committed.as_ref())?;
                let (mut bytes, value) = line(seq + 1, &prev)?;
                let hash = sha256_hex(&bytes);
                bytes.push(b'\n');
                let file = open_for_append(&owned).map_err(|e| format!("cannot open {}: {e}", owned.display()))?;
                (&file).write_all(&bytes).map_err(|e| format!("cannot append to {}: {e}", owned.display()))?;
                touched.add(&Arc::new(file)).map_err(|e| format!("cannot stat {}: {e}", owned.display()))?;
                Ok::<_, String>(Committed { seq: seq + 1, hash, value })
            })
            .await;
        let line = written.map_err(|e| ChainError::Io(e.to_string()))?;
        let to = ChainHead { seq: line.seq, hash: line.hash.clone() };
        match self.ledger.advance_chain(namespace, key, &head, &to).await {
            Ok(Some(new)) => {
                state.head = Some(new);
                state.end = Some((line.seq, line.hash.clone()));
                if state.recent.len() >= RECENT {
                    state.recent.clear();
                }
                state.recent.insert(id.to_string(), line.clone());
                Ok(line)
            }
            Ok(None) => {
                state.head = None;
                Err(ChainError::Fenced(format!(
                    "etcd refused to commit line {} of {}: namespace {namespace:?} is no longer this replica's (or the head moved); the line does not count",
                    line.seq,
                    path.display()
                )))
            }
            Err(e) => {
                // The commit may have landed: the head is read again before the next append.
                state.head = None;
                Err(ChainError::Unknown(format!("cannot commit line {} of {} in etcd: {e}", line.seq, path.display())))
            }
        }
    }
}

fn open_for_append(path: &Path) -> std::io::Result<File> {
    open_creating_dir(path, OpenOptions::new().create(true).append(true).mode(SHARED_FILE))
}

/// Makes the file end at the committed head `head` (empty when `None`) and returns where it
/// ends (seq, hash). Lines past the head never counted, and are cut off; a file with fewer
/// lines than its head lost lines that counted, which is refused, never papered over. `known`
/// is where this process last left the file, which spares reading it.
fn cut_to(path: &Path, known: Option<(u64, String)>, head: Option<&ChainHead>) -> Result<(u64, String), String> {
    let (want_seq, want_hash) = head.map_or((0, GENESIS.to_string()), |h| (h.seq, h.hash.clone()));
    if known.as_ref().is_some_and(|(s, h)| *s == want_seq && *h == want_hash) {
        return Ok((want_seq, want_hash));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && want_seq == 0 => return Ok((0, want_hash)),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut end = 0usize;
    let mut hash = GENESIS.to_string();
    for n in 0..want_seq {
        let rest = &bytes[end..];
        let Some(i) = rest.iter().position(|b| *b == b'\n') else {
            return Err(format!(
                "{} has {n} line(s) but line {want_seq} was committed: lines that counted are missing; restore the file",
                path.display()
            ));
        };
        hash = sha256_hex(&rest[..i]);
        end += i + 1;
    }
    if hash != want_hash {
        return Err(format!(
            "{}: line {want_seq} is not the line committed in etcd (its hash differs); refusing to extend it",
            path.display()
        ));
    }
    if end < bytes.len() {
        let file =
            OpenOptions::new().write(true).open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.set_len(end as u64).map_err(|e| format!("cannot cut {}: {e}", path.display()))?;
        file.sync_all().map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
    }
    Ok((want_seq, want_hash))
}

/// The lines of `path` that count (`1..=upto`), each with its hash, checking the chain; an
/// absent file has none.
pub fn committed_lines(path: &Path, upto: u64) -> Result<Vec<(Vec<u8>, String)>, String> {
    let file = match crate::fsread::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    while (out.len() as u64) < upto {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let seq = out.len() as u64 + 1;
        let Some(body) = line.strip_suffix(b"\n").filter(|_| n <= MAX_LINE) else {
            return Err(format!(
                "{}: line {seq} is missing or torn, but the file's head in etcd is line {upto}",
                path.display()
            ));
        };
        let fields: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("{}: line {seq} is not JSON: {e}", path.display()))?;
        if fields["seq"].as_u64() != Some(seq) || fields["prev"].as_str() != Some(prev.as_str()) {
            return Err(format!("{}: line {seq} does not chain from line {}", path.display(), seq - 1));
        }
        prev = sha256_hex(body);
        out.push((body.to_vec(), prev.clone()));
    }
    Ok(out)
}

/// The files in `dir` whose name is `<stem>@<node>.jsonl` for some node, by name without
/// the extension.
pub fn files_of(dir: &Path, stem: &str) -> std::io::Result<Vec<String>> {
    let prefix = format!("{stem}@");
    let entries = match std::fs::read_dir(dir) {
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
        // The rest is a node id, which holds no `@`: `a@b@c` is a file of stem `a@b`.
        if file.strip_prefix(&prefix).is_some_and(|node| !node.is_empty() && !node.contains('@')) {
            out.push(file);
        }
    }
    out.sort();
    Ok(out)
}

/// `dir/<file>.jsonl`.
pub fn path_in(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: &str) -> (String, String) {
        let text = serde_json::json!({"seq": seq, "prev": prev, "x": "y"}).to_string();
        let hash = sha256_hex(text.as_bytes());
        (text, hash)
    }

    #[test]
    fn lines_past_the_committed_head_are_cut_off_and_a_file_behind_it_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("j@a.jsonl");
        let (l1, h1) = line(1, GENESIS);
        let (l2, h2) = line(2, &h1);
        let (l3, _) = line(3, &h2);
        std::fs::write(&path, format!("{l1}\n{l2}\n{l3}\n")).expect("write");
        let head2 = ChainHead { seq: 2, hash: h2.clone() };
        assert_eq!(cut_to(&path, None, Some(&head2)).expect("cut"), (2, h2.clone()));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), format!("{l1}\n{l2}\n"), "line 3 never counted");
        assert_eq!(committed_lines(&path, 2).expect("read").len(), 2);
        let wrong = cut_to(&path, None, Some(&ChainHead { seq: 1, hash: "f".repeat(64) }));
        assert!(wrong.is_err_and(|e| e.contains("not the line committed")));
        let behind = cut_to(&path, None, Some(&ChainHead { seq: 5, hash: h2 }));
        assert!(behind.is_err_and(|e| e.contains("missing")));
        assert!(committed_lines(&path, 3).is_err_and(|e| e.contains("missing or torn")));
        cut_to(&path, None, None).expect("nothing committed: nothing counts");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }

    #[test]
    fn a_stems_files_are_found_by_name_and_a_longer_name_is_not_taken_for_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for f in ["j@a", "j@b", "j@b@c", "jj@a", "j"] {
            std::fs::write(path_in(tmp.path(), f), "").expect("write");
        }
        assert_eq!(files_of(tmp.path(), "j").expect("list"), ["j@a", "j@b"]);
    }
}
