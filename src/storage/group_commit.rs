//! Group commit of finished writes: one `syncfs` makes every write that finished before it
//! began durable, however many files and folders they touched.
//!
//! A `local:` anchor creates a receipt file in its namespace's folder and appends to a
//! journal. Made durable one by one, that is a data write, an inode write and a cache flush
//! per file and per folder; at thousands of anchors a second those synchronous writes, and
//! the thread switches around each, cost more than all the rest of the anchor. Writers here
//! finish their writes without syncing, then wait for a round: a round syncs the file system
//! of every waiter once, so writes that finish while a round runs share the next one.
//!
//! `syncfs` writes back everything dirty on that file system, the scheduler's or not; on a
//! volume of its own (the usual deployment) that is only the scheduler's files.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Rounds of `syncfs`, shared by every writer of one scheduler.
#[derive(Debug)]
pub struct GroupCommit {
    rounds: Mutex<Rounds>,
    /// Writers waiting for an even round, and for an odd one. At most two rounds have
    /// waiters (the one running and the next), so a round's end wakes only its own writers
    /// and one writer of the next, to run it.
    finished: [Condvar; 2],
    /// Syncs the file system of a descriptor (`syncfs`; another function in tests).
    sync_fs: fn(RawFd) -> io::Result<()>,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self { rounds: Mutex::default(), finished: [Condvar::new(), Condvar::new()], sync_fs: syncfs }
    }
}

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds begun so far; the one running, if any, is the last of them.
    started: u64,
    /// Rounds finished so far.
    finished: u64,
    /// A round is running.
    running: bool,
    /// The file systems the next round syncs: a device and an open file on it, owned by a
    /// writer that waits for that round (so the descriptor stays open until it is synced).
    next: Vec<(u64, RawFd)>,
    /// The last round that failed, and why.
    failed: Option<(u64, String)>,
}

impl GroupCommit {
    /// A group with no round run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A group whose rounds sync with `sync_fs` (a disk that fails or stalls, in tests).
    #[cfg(test)]
    pub(crate) fn with_sync(sync_fs: fn(RawFd) -> io::Result<()>) -> Self {
        Self { sync_fs, ..Self::default() }
    }

    /// Blocks until every write made so far to `file`'s file system (through any descriptor)
    /// is durable. `file` must stay open until this returns; it may be a folder.
    pub fn sync(&self, file: &File) -> io::Result<()> {
        self.sync_devices(&[(file.metadata()?.dev(), file.as_raw_fd())])
    }

    /// Blocks until every write made so far to the file systems of `touched` is durable, in
    /// one round.
    pub fn sync_touched(&self, touched: &Touched) -> io::Result<()> {
        let devices: Vec<_> = touched.files.iter().map(|(device, file)| (*device, file.as_raw_fd())).collect();
        self.sync_devices(&devices)
    }

    fn sync_devices(&self, devices: &[(u64, RawFd)]) -> io::Result<()> {
        let mut rounds = self.lock();
        // A round already running may have begun before these writes finished: wait for the next.
        let mine = rounds.started + 1;
        for &(device, fd) in devices {
            if !rounds.next.iter().any(|(d, _)| *d == device) {
                rounds.next.push((device, fd));
            }
        }
        loop {
            if rounds.finished >= mine {
                return match &rounds.failed {
                    // A failure fails every writer that may have depended on it, including
                    // ones of later rounds that have not woken yet: they retry, which is safe.
                    Some((round, why)) if *round >= mine => Err(io::Error::other(why.clone())),
                    _ => Ok(()),
                };
            }
            if rounds.running {
                rounds = self.finished[parity(mine)].wait(rounds).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            rounds.running = true;
            rounds.started += 1;
            let round = rounds.started;
            let targets = std::mem::take(&mut rounds.next);
            drop(rounds);
            let result = targets.iter().try_for_each(|(_, fd)| (self.sync_fs)(*fd));
            rounds = self.lock();
            rounds.running = false;
            rounds.finished = round;
            if let Err(e) = result {
                rounds.failed = Some((round, format!("syncing the file system failed: {e}")));
            }
            self.finished[parity(round)].notify_all();
            if !rounds.next.is_empty() {
                self.finished[parity(round + 1)].notify_one();
            }
        }
    }

    /// Rounds finished so far.
    pub fn rounds(&self) -> u64 {
        self.lock().finished
    }

    fn lock(&self) -> MutexGuard<'_, Rounds> {
        // The counters stay consistent under every panic point, so a poisoned lock is usable.
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The file systems a batch of writes touched, each with one open file on it that names it
/// to `syncfs` (kept open until the round that syncs it).
#[derive(Debug, Default)]
pub struct Touched {
    files: Vec<(u64, Arc<File>)>,
}

impl Touched {
    /// Notes that a write went through `file`; the file is kept only if it is the first on
    /// its file system.
    pub fn add(&mut self, file: &Arc<File>) -> io::Result<()> {
        let device = file.metadata()?.dev();
        if !self.files.iter().any(|(d, _)| *d == device) {
            self.files.push((device, Arc::clone(file)));
        }
        Ok(())
    }

    /// No write was noted.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A disk whose every sync fails with EIO, for tests of what a failed round does.
#[cfg(test)]
pub(crate) fn failing_sync(_: RawFd) -> io::Result<()> {
    Err(io::Error::other("EIO"))
}

fn parity(round: u64) -> usize {
    usize::from(round % 2 == 1)
}

#[cfg(target_os = "linux")]
fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor owned by a writer blocked until this round ends.
    if unsafe { libc::syncfs(fd) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_fd: RawFd) -> io::Result<()> {
    // No per-file-system sync elsewhere: sync them all.
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A disk on which a sync takes 2 ms.
    fn slow_sync(fd: RawFd) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        syncfs(fd)
    }

    static CALLS: AtomicU32 = AtomicU32::new(0);

    /// A disk whose first sync fails.
    fn failing_once(fd: RawFd) -> io::Result<()> {
        if CALLS.fetch_add(1, Ordering::SeqCst) == 0 { Err(io::Error::other("EIO")) } else { syncfs(fd) }
    }

    #[test]
    fn a_lone_writer_runs_its_own_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = GroupCommit::new();
        let mut file = File::create(dir.path().join("a")).expect("create");
        file.write_all(b"x").expect("write");
        group.sync(&file).expect("sync");
        assert_eq!(group.rounds(), 1);
        group.sync(&file).expect("sync again");
        assert_eq!(group.rounds(), 2, "a later sync never counts on an earlier round");
    }

    #[test]
    fn concurrent_writers_share_rounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = Arc::new(GroupCommit { sync_fs: slow_sync, ..GroupCommit::default() });
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (group, path) = (Arc::clone(&group), dir.path().join(format!("f{t}")));
                std::thread::spawn(move || -> io::Result<()> {
                    for i in 0..20 {
                        let mut file = File::create(path.with_extension(i.to_string()))?;
                        file.write_all(b"receipt")?;
                        group.sync(&file)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("writes");
        }
        // 320 syncs, each in one round; rounds run one at a time, so writers that finished
        // during a 2 ms round share the next.
        let rounds = group.rounds();
        assert!((1..=320).contains(&rounds), "{rounds} rounds");
        assert!(rounds < 320, "no round was shared: {rounds}");
    }

    #[test]
    fn touched_files_keep_one_per_file_system_and_sync_in_one_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = GroupCommit::new();
        let mut touched = Touched::default();
        assert!(touched.is_empty());
        for name in ["a", "b", "c"] {
            let mut file = File::create(dir.path().join(name)).expect("create");
            file.write_all(b"x").expect("write");
            touched.add(&Arc::new(file)).expect("stat");
        }
        assert_eq!(touched.files.len(), 1, "one folder, one file system");
        group.sync_touched(&touched).expect("sync");
        assert_eq!(group.rounds(), 1);
    }

    #[test]
    fn a_failed_round_fails_its_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = GroupCommit { sync_fs: failing_once, ..GroupCommit::default() };
        let file = File::create(dir.path().join("a")).expect("create");
        let err = group.sync(&file).expect_err("round 1 failed");
        assert!(err.to_string().contains("EIO"), "{err}");
        group.sync(&file).expect("round 2 is fine");
    }
}
