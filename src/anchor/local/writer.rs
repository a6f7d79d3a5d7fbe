//! The journal writer: one thread that does the file work of every `local:` anchor, in
//! rounds of the group commit.
//!
//! Each anchor appends a journal line, waits for it to be durable, writes its receipt and
//! waits again. Done on a blocking thread per anchor, every wait is a sleep and a wake-up of
//! that thread, and at thousands of anchors a second those thread switches cost more than
//! the writes. Here one thread takes every anchor queued since its last round, writes their
//! lines and the receipts of the lines the last round made durable, and syncs them all in one
//! round. A line is therefore durable a round before its receipt is written, as before, and
//! an anchor is answered once its receipt is durable.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{JournalEntry, Tail, append_unsynced, attestation};
use crate::anchor::pool::{receipt_for, receipt_unwritten};
use crate::group_commit::{GroupCommit, Touched};
use crate::model::receipt::Receipt;
use crate::model::{AnchorError, AnchorRequest, ErrorClass};
use crate::receipts::{self};

/// New anchors taken into one round at most, so a burst neither holds the first of them back
/// for long nor makes one round's list unbounded.
const MAX_PER_ROUND: usize = 512;

/// What an anchor comes to: its receipt and where it was written.
pub(super) type Written = Result<(Receipt, PathBuf), AnchorError>;

/// One `local:` anchor for the writer.
pub(super) struct Job {
    /// The journal file.
    pub journal: PathBuf,
    /// The journal's path as a receipt names it.
    pub rel: String,
    /// Where the journal ends.
    pub tail: Arc<Mutex<Tail>>,
    /// The line to append, before its `seq` and `prev` are known.
    pub entry: JournalEntry,
    /// The anchor.
    pub request: AnchorRequest,
    /// Where receipts are written.
    pub receipts_root: PathBuf,
    /// Where the outcome goes.
    pub done: oneshot::Sender<Written>,
}

/// A job whose line is written (durable once its round ends), with the line's hash.
struct Lined {
    job: Job,
    hash: String,
}

/// The writer's loop: it ends when every sender is dropped and its work is done.
pub(super) fn run(rx: &Receiver<Job>, commit: &GroupCommit) {
    let mut lined: Vec<Lined> = Vec::new();
    loop {
        let mut fresh = Vec::new();
        // With receipts still to write there is work whether or not anchors arrive.
        if lined.is_empty() {
            match rx.recv() {
                Ok(job) => fresh.push(job),
                Err(_) => return,
            }
        }
        while fresh.len() < MAX_PER_ROUND {
            match rx.try_recv() {
                Ok(job) => fresh.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        lined = round(std::mem::take(&mut lined), fresh, commit);
    }
}

/// One round: writes the receipts of `lined` (whose lines are durable) and the lines of
/// `fresh`, syncs them together, answers the anchors whose receipts are now durable and
/// returns those whose lines are.
fn round(lined: Vec<Lined>, fresh: Vec<Job>, commit: &GroupCommit) -> Vec<Lined> {
    let mut touched = Touched::default();
    let mut finishing = Vec::with_capacity(lined.len());
    for Lined { job, hash } in lined {
        let receipt = receipt_for(&job.request, attestation(&job.rel, &job.entry, &hash), job.entry.time_ms);
        let written = receipts::write_unsynced(&job.receipts_root, &receipt)
            .and_then(|(path, file)| touched.add(&Arc::new(file)).map(|()| path));
        match written {
            Ok(path) => finishing.push((job.done, receipt, path)),
            Err(e) => answer(job.done, Err(receipt_unwritten(&e))),
        }
    }
    let mut appended = Vec::with_capacity(fresh.len());
    for mut job in fresh {
        let written = append_unsynced(&job.journal, &job.tail, &mut job.entry).and_then(|(hash, file)| {
            touched.add(&file).map_err(|e| format!("cannot stat journal {}: {e}", job.journal.display()))?;
            Ok(hash)
        });
        match written {
            Ok(hash) => appended.push(Lined { job, hash }),
            Err(e) => answer(job.done, Err(AnchorError::new(ErrorClass::Unknown, e))),
        }
    }
    if touched.is_empty() {
        return appended;
    }
    match commit.sync_touched(&touched) {
        Ok(()) => {
            for (done, receipt, path) in finishing {
                answer(done, Ok((receipt, path)));
            }
            appended
        }
        Err(e) => {
            for (done, _, _) in finishing {
                answer(done, Err(receipt_unwritten(&e)));
            }
            // A line written but not synced stays in the journal and the next line chains
            // from it: the attempt is resumed, and recovery finds the line there.
            for Lined { job, .. } in appended {
                let why = format!("cannot make journal {} durable: {e}", job.journal.display());
                answer(job.done, Err(AnchorError::new(ErrorClass::Unknown, why)));
            }
            Vec::new()
        }
    }
}

fn answer(done: oneshot::Sender<Written>, outcome: Written) {
    // The anchor may have timed out or been cancelled; its attempt is resumed from the journal.
    let _ = done.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::local::{LocalDriver, verify_chain_upto};
    use crate::clock::ManualClock;
    use std::os::fd::RawFd;
    use std::path::Path;

    fn request(attempt: &str) -> AnchorRequest {
        super::super::tests::request(&format!("ns-{attempt}"), attempt)
    }

    fn job(driver: &LocalDriver, root: &Path, attempt: &str) -> (Job, oneshot::Receiver<Written>) {
        let req = request(attempt);
        let (journal, rel, entry) = driver.entry(&req);
        let (done, outcome) = oneshot::channel();
        let job = Job {
            journal,
            rel,
            tail: driver.tail(&req.target.name),
            entry,
            request: req,
            receipts_root: root.to_path_buf(),
            done,
        };
        (job, outcome)
    }

    /// Receipt files under `root`, across every namespace folder.
    fn receipts_in(root: &Path) -> usize {
        let Ok(folders) = std::fs::read_dir(root.join("out/anchors")) else { return 0 };
        folders.flatten().filter_map(|f| std::fs::read_dir(f.path()).ok()).map(|files| files.count()).sum()
    }

    fn failing_sync(_: RawFd) -> std::io::Result<()> {
        Err(std::io::Error::other("EIO"))
    }

    #[test]
    fn a_receipt_is_written_only_in_the_round_after_its_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let commit = GroupCommit::new();
        let driver = LocalDriver::new(tmp.path().into(), Arc::new(ManualClock::new(1_700_000_000_000)), Arc::default());
        let (jobs, mut outcomes): (Vec<_>, Vec<_>) =
            ["a", "b", "c"].iter().map(|a| job(&driver, tmp.path(), a)).unzip();

        let lined = round(Vec::new(), jobs, &commit);
        assert_eq!(lined.len(), 3);
        assert_eq!(commit.rounds(), 1, "three lines, one round");
        assert_eq!(receipts_in(tmp.path()), 0, "no receipt before its line is durable");
        assert!(outcomes.iter_mut().all(|o| o.try_recv().is_err()), "nothing answered yet");

        let journal = LocalDriver::journal_path(tmp.path(), "demo");
        assert_eq!(verify_chain_upto(&journal, None).expect("chain").0.lines, 3);
        let rest = round(lined, Vec::new(), &commit);
        assert!(rest.is_empty());
        assert_eq!(commit.rounds(), 2, "three receipts, one round");
        assert_eq!(receipts_in(tmp.path()), 3);
        for (i, mut outcome) in outcomes.into_iter().enumerate() {
            let (receipt, path) = outcome.try_recv().expect("answered").expect("anchored");
            assert_eq!(receipt.attestation["seq"], i + 1);
            assert!(path.is_file());
        }
    }

    #[test]
    fn a_failed_round_fails_its_anchors_and_keeps_their_lines() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let driver = LocalDriver::new(tmp.path().into(), Arc::new(ManualClock::new(1_700_000_000_000)), Arc::default());
        let (first, mut first_outcome) = job(&driver, tmp.path(), "a");
        let lined = round(Vec::new(), vec![first], &GroupCommit::new());
        let (second, mut second_outcome) = job(&driver, tmp.path(), "b");

        let failing = GroupCommit::with_sync(failing_sync);
        assert!(round(lined, vec![second], &failing).is_empty(), "nothing goes on after a failed round");
        let receipt_error = first_outcome.try_recv().expect("answered").expect_err("receipt not durable");
        assert!(receipt_error.message.contains("receipt could not be written"), "{}", receipt_error.message);
        let line_error = second_outcome.try_recv().expect("answered").expect_err("line not durable");
        assert!(line_error.message.contains("cannot make journal"), "{}", line_error.message);
        // Both lines stay in the chain: the attempts are resumed and recovery finds them.
        let journal = LocalDriver::journal_path(tmp.path(), "demo");
        assert_eq!(verify_chain_upto(&journal, None).expect("chain").0.lines, 2);
    }

    #[actix_rt::test]
    async fn concurrent_anchors_share_rounds_and_each_gets_its_own_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let commit = Arc::new(GroupCommit::new());
        let driver = Arc::new(LocalDriver::new(
            tmp.path().into(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::clone(&commit),
        ));
        let anchors: Vec<_> = (0..200)
            .map(|i| {
                let (driver, root) = (Arc::clone(&driver), tmp.path().to_path_buf());
                tokio::spawn(async move { driver.anchor_with_receipt(&request(&format!("a{i:03}")), &root).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for anchor in anchors {
            let (receipt, _) = anchor.await.expect("task").expect("anchored");
            seqs.push(receipt.attestation["seq"].as_u64().unwrap_or(0));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "every anchor has a line of its own");
        assert_eq!(receipts_in(tmp.path()), 200);
        let rounds = commit.rounds();
        assert!(rounds < 200, "200 anchors took {rounds} rounds: none were shared");
    }
}
