//! The disk's ceiling for `local:` anchors: the file work of one anchor done as fast as the
//! disk allows, with no scheduler at all.
//!
//! Each operation is what a `local:` anchor writes before it counts: a line appended to one
//! of the shared journals and fsynced (under that journal's lock, as the driver holds it),
//! then a receipt written with the service's own atomic write (temporary file, fsync, rename,
//! folder fsync) into its namespace's folder. As many threads as the anchoring phases give
//! the pool run them side by side. The state log's group commit is left out, so this is an
//! upper bound on what the service can sustain on this disk.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmsh_scheduler::durable::{SHARED_FILE, ensure_dir, write_atomic};

/// Operations per second over `window`, for `namespaces` receipt folders, `journals` journals
/// and `threads` threads working in `dir` (emptied first).
pub fn local_anchor_io(
    dir: &Path,
    namespaces: usize,
    journals: usize,
    threads: usize,
    window: Duration,
) -> Result<f64, String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io("cannot empty", dir, e))?;
    }
    let folders: Vec<PathBuf> = (0..namespaces).map(|i| dir.join("anchors").join(format!("ns{i:06}"))).collect();
    for f in &folders {
        // The service's folders exist after the first anchor of each namespace.
        ensure_dir(f).map_err(|e| io("cannot create", f, e))?;
    }
    let journal_dir = dir.join("journal");
    ensure_dir(&journal_dir).map_err(|e| io("cannot create", &journal_dir, e))?;
    let journals: Vec<(PathBuf, Mutex<()>)> =
        (0..journals.max(1)).map(|j| (journal_dir.join(format!("j{j:02}.jsonl")), Mutex::new(()))).collect();
    let shared = Arc::new((folders, journals));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (shared, next, done, stop) =
                (Arc::clone(&shared), Arc::clone(&next), Arc::clone(&done), Arc::clone(&stop));
            std::thread::spawn(move || -> Result<(), String> {
                let (folders, journals) = &*shared;
                // Sizes of a real journal line and receipt.
                let line = [b'x'; 420];
                let receipt = [b'y'; 760];
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let ns = k % folders.len();
                    let (path, lock) = &journals[ns % journals.len()];
                    {
                        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
                        let mut f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|e| io("cannot open", path, e))?;
                        f.write_all(&line)
                            .and_then(|()| f.write_all(b"\n"))
                            .map_err(|e| io("cannot append to", path, e))?;
                        f.sync_data().map_err(|e| io("cannot fsync", path, e))?;
                    }
                    let file = folders[ns].join(format!("{k:012}-fast.json"));
                    write_atomic(&file, &receipt, SHARED_FILE).map_err(|e| io("cannot write", &file, e))?;
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
    let _ = std::fs::remove_dir_all(dir);
    Ok(counted as f64 / elapsed)
}
