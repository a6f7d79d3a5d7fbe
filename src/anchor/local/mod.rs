//! `local:<name>`: a hash-chained, append-only journal at `VMSH_ROOT/out/journal/<name>.jsonl`.
//!
//! Each line names the anchor and carries the hex SHA-256 of the previous line as written
//! (without its newline), so any edit, deletion or reordering breaks the chain. A line is
//! durable before the anchor counts: the storage writer ([`crate::storage::writer`]) appends
//! it under the journal's lock, with every other write queued meanwhile, and syncs them all in
//! one round of the group commit. The driver answers with the line and that round; the
//! receipt, written like any other scheme's, comes in a later round and only if that one
//! synced, so a receipt never names a line a crash could lose. A torn
//! last line (a crash mid-write, never acknowledged) is cut off before the next append.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

mod config;
pub mod shared;
mod verify;

pub use self::config::{LocalSpec, LocalTarget};
pub use self::verify::{LocalAttestation, replica_file, verify_receipt};

use super::{BoxFuture, Driver, ProgressSink};
use crate::clock::{Clock, WallMs, rfc3339};
use crate::model::CadenceKind;
use crate::model::digest::sha256_hex;
use crate::model::fsname;
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass, Recovery, Submitted};
use crate::storage::durable::{SHARED_FILE, open_creating_dir};
use crate::storage::writer::{WriteError, Writer};

/// `prev` of the first line of a journal.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest journal line we expect; the tail is read in one chunk of this size.
const TAIL_CHUNK: u64 = 1024 * 1024;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// 1-based line number.
    pub seq: u64,
    /// The namespace that anchored.
    pub namespace: String,
    /// The cadence that anchored.
    pub cadence: CadenceKind,
    /// The target as the namespaces file names it (`local:<name>`).
    pub target: String,
    /// The anchored batch's id, as its file gives it.
    pub batch_id: String,
    /// Root, `sha256:<hex>`.
    pub root: String,
    /// Append time, RFC 3339.
    pub time: String,
    /// Append time, Unix ms.
    pub time_ms: WallMs,
    /// The attempt this line completes; recovery after a crash looks lines up by it.
    pub attempt_id: String,
    /// Hex SHA-256 of the previous line, or [`GENESIS`].
    pub prev: String,
}

/// Where a journal ends; `file` is open for appending once the tail has been read.
#[derive(Debug, Default)]
struct Tail {
    file: Option<Arc<File>>,
    prev: String,
    seq: u64,
}

/// The journal driver.
pub struct LocalDriver {
    root: PathBuf,
    clock: Arc<dyn Clock>,
    tails: Mutex<HashMap<String, Arc<Mutex<Tail>>>>,
    /// Appends lines on its thread and makes them durable, shared with the receipts.
    writer: Arc<Writer>,
    /// Cluster mode: this replica's files of each journal, committed in etcd.
    shared: Option<shared::SharedJournals>,
}

impl LocalDriver {
    /// A driver writing journals under `root/out/journal`, made durable by `writer`.
    pub fn new(root: PathBuf, clock: Arc<dyn Clock>, writer: Arc<Writer>) -> Self {
        Self { root, clock, tails: Mutex::new(HashMap::new()), writer, shared: None }
    }

    /// Cluster mode: appends to this replica's own file of each journal, and a line counts
    /// once its commit in etcd is made (see [`shared`]).
    pub fn in_cluster(mut self, journals: shared::SharedJournals) -> Self {
        self.shared = Some(journals);
        self
    }

    /// The journal file of a `local:` target name.
    pub fn journal_path(root: &Path, name: &str) -> PathBuf {
        root.join("out").join("journal").join(format!("{}.jsonl", fsname::encode(name)))
    }

    fn tail(&self, name: &str) -> Arc<Mutex<Tail>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is intact.
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(tails.entry(name.to_string()).or_default())
    }

    /// The journal's path, as a receipt names it (relative to the root), and the entry to
    /// append for `req`, before its `seq` and `prev` are known.
    fn entry(&self, req: &AnchorRequest) -> (PathBuf, String, JournalEntry) {
        let path = Self::journal_path(&self.root, &req.target.name);
        let rel = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
        let now = self.clock.wall_ms();
        let entry = JournalEntry {
            seq: 0,
            namespace: req.namespace.clone(),
            cadence: req.cadence,
            target: req.target.to_string(),
            batch_id: req.batch_id.clone(),
            root: req.root_string(),
            time: rfc3339(now),
            time_ms: now,
            attempt_id: req.attempt_id.clone(),
            prev: String::new(),
        };
        (path, rel, entry)
    }
}

impl Driver for LocalDriver {
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            if let Some(shared) = &self.shared {
                return self.anchor_shared(shared, req).await.map(Submitted::Anchored);
            }
            let tail = self.tail(&req.target.name);
            let (path, rel, mut entry) = self.entry(req);
            // The lock is taken on the writer thread, so it is held for the write alone and
            // not across the hops to and from that thread. The answer comes once the line is
            // written; the receipt, which names it, follows the round that makes it durable.
            let appended = self
                .writer
                .written(move |touched| {
                    let (hash, file) = append_unsynced(&path, &tail, &mut entry)?;
                    touched.add(&file).map_err(|e| format!("cannot stat journal {}: {e}", path.display()))?;
                    Ok::<_, String>((entry, hash))
                })
                .await;
            match appended {
                Ok(((entry, hash), round)) => {
                    Ok(Submitted::Written { attestation: attestation(&rel, &entry, &hash), round })
                }
                Err(WriteError::Write(e)) => Err(AnchorError::new(ErrorClass::Unknown, e)),
                Err(e @ (WriteError::NotDurable(_) | WriteError::Stopped(_))) => {
                    Err(AnchorError::new(ErrorClass::Unknown, format!("{e}; the attempt will be resumed")))
                }
            }
        })
    }

    fn recover<'a>(&'a self, req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        Box::pin(async move {
            if let Some(shared) = &self.shared {
                return match self.recover_shared(shared, req).await {
                    Ok(Some(att)) => Recovery::Done(att),
                    Ok(None) => Recovery::NotDone,
                    // Appending now might repeat the attempt.
                    Err(e) => Recovery::Later(AnchorError::new(ErrorClass::Unknown, e)),
                };
            }
            let path = Self::journal_path(&self.root, &req.target.name);
            let rel = path.strip_prefix(&self.root).unwrap_or(&path).display().to_string();
            let id = req.attempt_id.clone();
            let found = tokio::task::spawn_blocking(move || find_attempt(&path, &id)).await;
            match found {
                Ok(Ok(Some((entry, hash)))) => Recovery::Done(attestation(&rel, &entry, &hash)),
                Ok(Ok(None)) => Recovery::NotDone,
                // The journal could not be read: appending now might repeat the attempt.
                Ok(Err(e)) => {
                    Recovery::Later(AnchorError::new(ErrorClass::Unknown, format!("cannot read the journal: {e}")))
                }
                Err(e) => Recovery::Later(AnchorError::new(ErrorClass::Unknown, format!("journal reader failed: {e}"))),
            }
        })
    }
}

fn attestation(journal: &str, entry: &JournalEntry, line_hash: &str) -> Attestation {
    Attestation {
        data: serde_json::json!({
            "journal": journal,
            "seq": entry.seq,
            "lineHash": line_hash,
            "prev": entry.prev,
        }),
        anchored_at: Some(entry.time_ms),
    }
}

/// Fills in `entry`'s `seq` and `prev` and appends it under the journal's lock, without
/// syncing; returns the line's hash and the journal file, whose file system a round of the
/// group commit must sync before the line counts.
fn append_unsynced(path: &Path, tail: &Mutex<Tail>, entry: &mut JournalEntry) -> Result<(String, Arc<File>), String> {
    // A panic mid-append leaves at worst a torn line, which the next load cuts off.
    let mut tail = tail.lock().unwrap_or_else(|p| {
        let mut tail = p.into_inner();
        tail.file = None;
        tail
    });
    let file = match &tail.file {
        Some(file) => Arc::clone(file),
        None => {
            let (prev, seq) = load_tail(path)?;
            let file =
                Arc::new(open_for_append(path).map_err(|e| format!("cannot open journal {}: {e}", path.display()))?);
            *tail = Tail { file: Some(Arc::clone(&file)), prev, seq };
            file
        }
    };
    entry.seq = tail.seq + 1;
    entry.prev = tail.prev.clone();
    let mut line = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    let hash = sha256_hex(&line);
    line.push(b'\n');
    if let Err(e) = (&*file).write_all(&line) {
        // The file may now end in a partial line; re-read (and repair) the tail next time.
        tail.file = None;
        return Err(format!("cannot append to journal {}: {e}", path.display()));
    }
    tail.prev = hash.clone();
    tail.seq = entry.seq;
    Ok((hash, file))
}

/// Opens (creating) a journal for appending; a new file's folder entry is made durable by
/// the group commit's round like the line written to it.
fn open_for_append(path: &Path) -> std::io::Result<File> {
    open_creating_dir(path, OpenOptions::new().create(true).append(true).mode(SHARED_FILE))
}

/// Reads the last complete line's hash and seq, cutting off a torn last line.
fn load_tail(path: &Path) -> Result<(String, u64), String> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((GENESIS.to_string(), 0)),
        Err(e) => return Err(format!("cannot open journal {}: {e}", path.display())),
    };
    let io = |e: std::io::Error| format!("cannot read journal {}: {e}", path.display());
    let len = file.metadata().map_err(io)?.len();
    let start = len.saturating_sub(TAIL_CHUNK);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut chunk = Vec::new();
    file.read_to_end(&mut chunk).map_err(io)?;
    let mut complete = chunk.len();
    if chunk.last().is_some_and(|b| *b != b'\n') {
        complete = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete == 0 && start > 0 {
            return Err(format!("journal {} ends in a line longer than 1 MiB", path.display()));
        }
        file.set_len(start + complete as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    let body = &chunk[..complete];
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if body.is_empty() {
        return Ok((GENESIS.to_string(), 0));
    }
    let last_start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if last_start == 0 && start > 0 {
        return Err(format!("journal {} ends in a line longer than 1 MiB", path.display()));
    }
    let last = &body[last_start..];
    let entry: JournalEntry = serde_json::from_slice(last).map_err(|e| {
        format!("journal {} ends in an unreadable line ({e}); refusing to extend a broken chain", path.display())
    })?;
    Ok((sha256_hex(last), entry.seq))
}

fn find_attempt(path: &Path, attempt_id: &str) -> std::io::Result<Option<(JournalEntry, String)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut found = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        // Cheap filter before parsing; the last match wins (it is the one acknowledged).
        if !contains(&line, attempt_id.as_bytes()) {
            continue;
        }
        if let Ok(entry) = serde_json::from_slice::<JournalEntry>(&line)
            && entry.attempt_id == attempt_id
        {
            found = Some((entry, sha256_hex(&line)));
        }
    }
    Ok(found)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A journal whose chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Number of lines.
    pub lines: u64,
    /// Hash of the last line ([`GENESIS`] when empty).
    pub head: String,
}

/// Checks every link of a journal's hash chain.
pub fn verify_chain(path: &Path) -> Result<ChainSummary, String> {
    verify_chain_upto(path, None).map(|(summary, _)| summary)
}

/// Checks the links of a journal's hash chain from the first line up to line `upto` (every
/// line when `None`); returns the summary and the last line checked, with its hash.
pub fn verify_chain_upto(
    path: &Path,
    upto: Option<u64>,
) -> Result<(ChainSummary, Option<(JournalEntry, String)>), String> {
    // Whatever a path names, only a regular file is read (a named pipe would block).
    let file = crate::fsread::open_regular(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    verify_chain_in(file, upto)
}

/// [`verify_chain_upto`] over a journal already opened.
pub fn verify_chain_in(
    file: File,
    upto: Option<u64>,
) -> Result<(ChainSummary, Option<(JournalEntry, String)>), String> {
    let mut prev = GENESIS.to_string();
    let mut last = None;
    let mut lines = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    while upto.is_none_or(|u| lines < u) {
        line.clear();
        // A line longer than any the driver writes is not read whole: the file is not a journal.
        let n = (&mut reader)
            .take(TAIL_CHUNK + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read it: {e}"))?;
        if n == 0 {
            break;
        }
        lines += 1;
        if n as u64 > TAIL_CHUNK {
            return Err(format!("line {lines} is longer than {} KiB, longer than any journal line", TAIL_CHUNK / 1024));
        }
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(format!("line {lines} is torn (no newline)"));
        };
        let entry: JournalEntry =
            serde_json::from_slice(body).map_err(|e| format!("line {lines} is not a journal entry: {e}"))?;
        if entry.prev != prev {
            return Err(format!("line {lines}: prev {} does not match the hash of line {}", entry.prev, lines - 1));
        }
        if entry.seq != lines {
            return Err(format!("line {lines}: seq is {}", entry.seq));
        }
        prev = sha256_hex(body);
        last = Some((entry, prev.clone()));
    }
    if let Some(u) = upto
        && lines < u
    {
        return Err(format!("the journal has only {lines} line(s), not {u}"));
    }
    Ok((ChainSummary { lines, head: prev }, last))
}

/// Reads every entry of a journal (for tests and tooling).
pub fn read_entries(path: &Path) -> Result<Vec<JournalEntry>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).map_err(|e| format!("bad journal line: {e}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::NoProgress;
    use crate::clock::ManualClock;
    use crate::model::Target;
    use crate::model::receipt::Receipt;
    use crate::storage::receipts::ReceiptWriter;

    /// An anchor of `attempt` for `ns` to `local:demo`.
    pub(super) fn request(ns: &str, attempt: &str) -> AnchorRequest {
        AnchorRequest {
            namespace: ns.into(),
            cadence: CadenceKind::Fast,
            target: Target::parse("local:demo").expect("target"),
            batch_id: "b1".into(),
            root: [7; 32],
            attempt_id: attempt.into(),
            confirmations: None,
            policy_oid: None,
            progress: None,
            membership: None,
        }
    }

    /// Anchors `attempt` for `ns` through `d`, then commits its receipt as the pool does.
    pub(super) async fn anchored(d: &LocalDriver, receipts: &ReceiptWriter, attempt: &str) -> (Receipt, PathBuf) {
        let req = request("ns", attempt);
        let Submitted::Written { attestation, round } = d.anchor(&req, &NoProgress).await.expect("anchor") else {
            panic!("a journal line is a write of the scheduler's own");
        };
        receipts.commit(&req, attestation, Some(round), 0).await.expect("receipt")
    }

    fn driver(root: &Path) -> LocalDriver {
        LocalDriver::new(root.to_path_buf(), Arc::new(ManualClock::new(1_700_000_000_000)), Arc::default())
    }

    #[actix_rt::test]
    async fn appends_form_a_verifiable_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = driver(tmp.path());
        for i in 0..5 {
            let att = d
                .anchor(&request("ns", &format!("a{i}")), &NoProgress)
                .await
                .expect("anchor")
                .into_attestation()
                .expect("final");
            assert_eq!(att.data["seq"], i + 1);
        }
        let path = LocalDriver::journal_path(tmp.path(), "demo");
        assert_eq!(verify_chain(&path).expect("chain").lines, 5);
        // A fresh driver (a restart) continues the same chain.
        let d2 = driver(tmp.path());
        d2.anchor(&request("ns", "a5"), &NoProgress).await.expect("anchor");
        assert_eq!(verify_chain(&path).expect("chain").lines, 6);
    }

    #[actix_rt::test]
    async fn a_torn_last_line_is_cut_before_the_next_append() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = driver(tmp.path());
        d.anchor(&request("ns", "a0"), &NoProgress).await.expect("anchor");
        let path = LocalDriver::journal_path(tmp.path(), "demo");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"seq\":2,\"namesp").expect("write torn");
        drop(f);
        assert!(verify_chain(&path).is_err());
        driver(tmp.path()).anchor(&request("ns", "a1"), &NoProgress).await.expect("anchor");
        assert_eq!(verify_chain(&path).expect("repaired").lines, 2);
    }

    #[actix_rt::test]
    async fn tampering_breaks_the_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = driver(tmp.path());
        for i in 0..3 {
            d.anchor(&request("ns", &format!("a{i}")), &NoProgress).await.expect("anchor");
        }
        let path = LocalDriver::journal_path(tmp.path(), "demo");
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replacen("\"b1\"", "\"b2\"", 1)).expect("tamper");
        let err = verify_chain(&path).expect_err("tampered");
        assert!(err.contains("line 2"), "{err}");
    }

    #[actix_rt::test]
    async fn a_receipt_names_the_line_its_anchor_wrote_and_follows_the_round_that_made_it_durable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(Writer::default());
        let d = LocalDriver::new(
            tmp.path().to_path_buf(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::clone(&writer),
        );
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), Arc::clone(&writer));
        let Submitted::Written { round, .. } = d.anchor(&request("ns", "a0"), &NoProgress).await.expect("anchor")
        else {
            panic!("a journal line is a write of the scheduler's own");
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !writer.round_durable(round) {
            assert!(std::time::Instant::now() < deadline, "round {round} never synced");
            tokio::task::yield_now().await;
        }
        let (receipt, path) = anchored(&d, &receipts, "a1").await;
        assert_eq!((receipt.attempt_id.as_str(), receipt.time_ms), ("a1", 1_700_000_000_000));
        assert_eq!(receipt.attestation["seq"], 2, "the receipt names the line it appended");
        let on_disk: Receipt = serde_json::from_slice(&fs::read(&path).expect("receipt")).expect("parses");
        assert_eq!(on_disk, receipt);
        let journal = LocalDriver::journal_path(tmp.path(), "demo");
        let (_, last) = verify_chain_upto(&journal, Some(2)).expect("chain");
        let (entry, hash) = last.expect("line 2");
        assert_eq!(
            (entry.attempt_id.as_str(), hash.as_str()),
            ("a1", receipt.attestation["lineHash"].as_str().unwrap_or(""))
        );
        // One round for the first line; one for the second line, then one for its receipt.
        assert_eq!(writer.rounds(), 3);
    }

    #[actix_rt::test]
    async fn concurrent_anchors_share_rounds_and_each_gets_its_own_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(Writer::default());
        let d = Arc::new(LocalDriver::new(
            tmp.path().to_path_buf(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::clone(&writer),
        ));
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), Arc::clone(&writer));
        let anchors: Vec<_> = (0..200)
            .map(|i| {
                let (d, receipts) = (Arc::clone(&d), receipts.clone());
                tokio::spawn(async move { anchored(&d, &receipts, &format!("a{i:03}")).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for anchor in anchors {
            let (receipt, _) = anchor.await.expect("task");
            seqs.push(receipt.attestation["seq"].as_u64().unwrap_or(0));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "every anchor has a line of its own");
        let rounds = writer.rounds();
        assert!(rounds < 400, "200 lines and 200 receipts took {rounds} rounds: none were shared");
    }

    #[actix_rt::test]
    async fn a_line_whose_round_fails_gets_no_receipt_and_stays_in_the_chain_for_recovery() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let failing = Arc::new(Writer::new(Arc::new(crate::storage::group_commit::GroupCommit::with_sync(
            crate::storage::group_commit::failing_sync,
        ))));
        let d = LocalDriver::new(
            tmp.path().to_path_buf(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::clone(&failing),
        );
        let receipts = ReceiptWriter::new(tmp.path().to_path_buf(), failing);
        let req = request("ns", "a0");
        let Submitted::Written { attestation, round } = d.anchor(&req, &NoProgress).await.expect("written") else {
            panic!("a journal line is a write of the scheduler's own");
        };
        let err = receipts.commit(&req, attestation, Some(round), 0).await.expect_err("line not durable");
        assert!(err.message.contains("was not made durable"), "{}", err.message);
        assert!(!tmp.path().join("out/anchors").exists(), "no receipt names a line that may be lost");
        // The line stays in the chain: the attempt is resumed, and recovery finds it.
        assert!(matches!(d.recover(&req).await, Recovery::Done(_)));
        let journal = LocalDriver::journal_path(tmp.path(), "demo");
        assert_eq!(verify_chain(&journal).expect("chain").lines, 1);
    }

    #[actix_rt::test]
    async fn recover_finds_an_attempt_that_reached_the_journal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = driver(tmp.path());
        d.anchor(&request("ns", "attempt-1"), &NoProgress).await.expect("anchor");
        assert!(matches!(d.recover(&request("ns", "attempt-1")).await, Recovery::Done(_)));
        assert_eq!(d.recover(&request("ns", "attempt-2")).await, Recovery::NotDone);
    }
}
