//! The disk's ceiling for `local:` anchors: the file work of one anchor done as fast as the
//! disk allows, with no scheduler at all.
//!
//! Each operation is what a `local:` anchor writes before it counts: a line appended to one
//! of the shared journals (under that journal's lock, as the driver holds it) and made
//! durable by the group commit, then a receipt written into its namespace's folder with the
//! service's own grouped write (temporary file, rename, group commit). As many threads as the
//! anchoring phases give the pool run them side by side. The state log's group commit is
//! left out, so this is an upper bound on what the service can sustain on this disk.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmsh_scheduler::durable::{SHARED_FILE, ensure_dir, write_grouped};
use vmsh_scheduler::group_commit::GroupCommit;

/// Operations per second over `window`, for `namespaces` receipt folders, `journals` journals
/// and `threads` threads working in `dir` (a new folder; it is left for the caller to delete,
/// as deleting many files slows the file system's next writes).
pub fn local_anchor_io(
    dir: &Path,
    namespaces: usize,
    journals: usize,
    threads: usize,
    window: Duration,
) -> Result<f64, String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let folders: Vec<PathBuf> = (0..namespaces).map(|i| dir.join("anchors").join(format!("ns{i:06}"))).collect();
    for f in &folders {
        // The service's folders exist after the first anchor of each namespace.
        ensure_dir(f).map_err(|e| io("cannot create", f, e))?;
    }
    let journal_dir = dir.join("journal");
    ensure_dir(&journal_dir).map_err(|e| io("cannot create", &journal_dir, e))?;
    let journals = (0..journals.max(1))
        .map(|j| {
            let path = journal_dir.join(format!("j{j:02}.jsonl"));
            let file =
                OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("cannot open", &path, e))?;
            Ok((path, Mutex::new(Arc::new(file))))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let shared = Arc::new((folders, journals, GroupCommit::new()));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (shared, next, done, stop) =
                (Arc::clone(&shared), Arc::clone(&next), Arc::clone(&done), Arc::clone(&stop));
            std::thread::spawn(move || -> Result<(), String> {
                let (folders, journals, commit) = &*shared;
                // Sizes of a real journal line and receipt.
                let mut line = [b'x'; 421];
                line[420] = b'\n';
                let receipt = [b'y'; 760];
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let ns = k % folders.len();
                    let (path, lock) = &journals[ns % journals.len()];
                    let journal = {
                        let file = lock.lock().unwrap_or_else(|p| p.into_inner());
                        (&**file).write_all(&line).map_err(|e| io("cannot append to", path, e))?;
                        Arc::clone(&file)
                    };
                    commit.sync(&journal).map_err(|e| io("cannot sync", path, e))?;
                    let file = folders[ns].join(format!("{k:012}-fast.json"));
                    write_grouped(&file, &receipt, SHARED_FILE, commit).map_err(|e| io("cannot write", &file, e))?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for w in workers {
        w.join().map_err(|_| "a disk ceiling thread panicked".to_string())??;
    }
    Ok(counted as f64 / elapsed)
}
