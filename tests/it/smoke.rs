//! The shortest end-to-end path: start, anchor, answer HTTP, stop cleanly.

use std::time::Duration;

use crate::helpers::{Root, Scheduler, metric, root_hex, wait_for};

#[test]
fn anchors_a_local_target_and_stops_cleanly_on_sigterm() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  dao:vaultmesh:
    cadence:
      fast: {target: "local:demo", every: "1s"}
"#,
    )
    .batch(Some("dao:vaultmesh"), "0001.json", "b1", &root_hex(1));
    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(10), "two receipts", || (root.receipts("dao:vaultmesh").len() >= 2).then_some(()));
    let m = s.metrics();
    assert!(
        metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", "dao:vaultmesh"), ("cadence", "fast")])
            .unwrap_or(0.0)
            >= 2.0
    );
    assert_eq!(s.health()["namespaces"]["dao:vaultmesh"]["status"], "ok");
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {}", s.stderr());
}
