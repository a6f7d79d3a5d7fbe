//! The shortest end-to-end path: start, anchor, answer HTTP, stop cleanly.

use std::time::Duration;

use vmsh_scheduler::health::NamespaceStatus;

use crate::support::{HealthParts as _, Root, Scheduler, metric, root_hex, wait_for};

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
    assert_eq!(s.health().ns("dao:vaultmesh").status, NamespaceStatus::Ok);
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {}", s.stderr());
}

#[test]
fn the_large_fleet_switch_drops_namespace_from_the_duration_histogram_only() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:demo", every: "1s"}
  b:
    cadence:
      fast: {target: "local:demo", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false")]);
    for ns in ["a", "b"] {
        wait_for(Duration::from_secs(10), "a receipt", || (!root.receipts(ns).is_empty()).then_some(()));
    }
    let m = wait_for(Duration::from_secs(10), "both anchors in one histogram", || {
        let m = s.metrics();
        let labels = [("cadence", "fast"), ("target", "local:demo"), ("status", "success")];
        (metric(&m, "vmsh_anchor_duration_seconds_count", &labels).unwrap_or(0.0) >= 2.0).then_some(m)
    });
    let histogram: Vec<&str> = m.lines().filter(|l| l.starts_with("vmsh_anchor_duration_seconds")).collect();
    assert!(!histogram.is_empty());
    assert!(histogram.iter().all(|l| !l.contains("namespace=")), "{histogram:#?}");
    for ns in ["a", "b"] {
        assert!(metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", ns)]).unwrap_or(0.0) >= 1.0, "{ns}");
        assert!(metric(&m, "vmsh_last_success_timestamp_seconds", &[("namespace", ns)]).is_some(), "{ns}");
    }
}
