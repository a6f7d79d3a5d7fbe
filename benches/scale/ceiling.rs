//! The disk's ceiling for `local:` anchors: the file work of one anchor done as fast as the
//! disk allows, with no scheduler at all.
//!
//! Each operation is what a `local:` anchor writes before it counts, done by the service's
//! own local driver, receipt writer and storage writer: a line appended to one of the shared
//! journals, then, once that is durable, a receipt in its namespace's folder, each made
//! durable by a round of the group commit. As many anchors as the anchoring phases give the pool workers are kept
//! in flight. The batch read and the state log are left out, so this is an upper bound on
//! what the service can sustain on this disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vmsh_scheduler::anchor::local::LocalDriver;
use vmsh_scheduler::anchor::{Driver, NoProgress};
use vmsh_scheduler::clock::SystemClock;
use vmsh_scheduler::model::fsname;
use vmsh_scheduler::model::{AnchorRequest, Submitted};
use vmsh_scheduler::model::{CadenceKind, Target};
use vmsh_scheduler::storage::durable::ensure_dir;
use vmsh_scheduler::storage::receipts::ReceiptWriter;
use vmsh_scheduler::storage::writer::Writer;

use crate::fixture;

/// Anchors per second over `window`, for `namespaces` receipt folders, `journals` journals
/// and `in_flight` anchors at a time, under `dir` (a new folder; it is left for the caller to
/// delete, as deleting many files slows the file system's next writes).
pub(crate) fn local_anchor_io(
    dir: &Path,
    namespaces: usize,
    journals: usize,
    in_flight: usize,
    window: Duration,
) -> Result<f64, String> {
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    for i in 0..namespaces {
        // The service's folders exist after the first anchor of each namespace.
        let folder = dir.join("out").join("anchors").join(fsname::encode(&fixture::name(i)));
        ensure_dir(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    let targets = (0..journals.max(1))
        .map(|j| Target::parse(&format!("local:j{j:02}")).map_err(|e| format!("bad target: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let writer = Arc::new(Writer::default());
    let driver = Arc::new(LocalDriver::new(dir.to_path_buf(), Arc::new(SystemClock::new()), Arc::clone(&writer)));
    let shared = Arc::new((targets, ReceiptWriter::new(dir.to_path_buf(), writer)));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + window;
    runtime.block_on(async {
        let anchors: Vec<_> = (0..in_flight.max(1))
            .map(|_| {
                let (driver, shared, next, done) =
                    (Arc::clone(&driver), Arc::clone(&shared), Arc::clone(&next), Arc::clone(&done));
                tokio::spawn(async move {
                    let (targets, receipts) = &*shared;
                    while Instant::now() < until {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let ns = (k % namespaces.max(1) as u64) as usize;
                        let request = AnchorRequest {
                            namespace: fixture::name(ns),
                            cadence: CadenceKind::Fast,
                            target: targets[ns % targets.len()].clone(),
                            batch_id: "bench-1".into(),
                            root: [7; 32],
                            attempt_id: format!("{k:016x}{}", "0".repeat(48)),
                            confirmations: None,
                            policy_oid: None,
                            progress: None,
                            membership: None,
                        };
                        let (attestation, after) = match driver.anchor(&request, &NoProgress).await {
                            Ok(Submitted::Written { attestation, round }) => (attestation, Some(round)),
                            Ok(Submitted::Anchored(attestation)) => (attestation, None),
                            Ok(Submitted::Pending(_)) => return Err("a local anchor came back pending".into()),
                            Err(e) => return Err(e.message),
                        };
                        receipts.commit(&request, attestation, after, 0).await.map_err(|e| e.message)?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for anchor in anchors {
            anchor.await.map_err(|e| format!("a disk ceiling task failed: {e}"))??;
        }
        Ok::<(), String>(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
