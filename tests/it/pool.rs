//! The anchor pool: time limits, one run per cadence at a time, and liveness while targets fail.

use std::time::Duration;

use vmsh_scheduler::model::ErrorClass;

use crate::support::proc::is_dead;
use crate::support::{CadenceParts, Root, Scheduler, exec_targets, lines, root_hex, stamps, wait_for};

const LONG: Duration = Duration::from_secs(15);

#[test]
fn a_hung_target_delays_other_namespaces_by_at_most_the_timeout() {
    let root = Root::new();
    // One worker, so the hung target and the healthy namespace compete for it.
    root.anchors(&exec_targets(&[("hung", r#"echo $$ >> "$VMSH_ROOT/hung.pids"; exec sleep 30"#)]))
        .namespaces(
            r#"
namespaces:
  hung:
    cadence:
      fast: {target: "exec:hung", every: "1s"}
  healthy:
    cadence:
      fast: {target: "local:healthy", every: "1s"}
"#,
        )
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_WORKERS", "1"), ("VMSH_ANCHOR_TIMEOUT_S", "1")]);
    let journal = root.journal("healthy");
    let entries = wait_for(LONG, "five anchors of the healthy namespace", || {
        vmsh_scheduler::anchor::local::read_entries(&journal).ok().filter(|e| e.len() >= 5)
    });
    // Each healthy anchor comes at most one period plus one timeout (plus slack) after the last.
    for pair in entries.windows(2) {
        let gap = pair[1].time_ms - pair[0].time_ms;
        assert!(gap <= 2_700, "the hung target held the healthy namespace up for {gap} ms");
    }
    let hung = s.cadence("hung", "fast").expect("the hung cadence in /health");
    assert!(hung.backoff >= 1, "{hung}");
    assert_eq!(hung.error().class, ErrorClass::Network, "a timeout is a network failure: {hung}");
    assert!(hung.error().message.contains("VMSH_ANCHOR_TIMEOUT_S"), "{hung}");
    // Every timed-out command was killed, not left running.
    let pids = lines(&root.path().join("hung.pids"));
    assert!(pids.len() >= 2, "{pids:?}");
    for pid in &pids[..pids.len() - 1] {
        wait_for(LONG, &format!("timed-out command {pid} to be killed"), || is_dead(pid).then_some(()));
    }
}

#[test]
fn a_cadence_never_has_two_anchors_in_flight() {
    let root = Root::new();
    // Each run takes 1.5 s on a 1 s cadence, so runs would overlap if they stacked.
    let script = r#"date +%s.%N >> "$VMSH_ROOT/starts"; sleep 1.5; date +%s.%N >> "$VMSH_ROOT/ends"; echo '{}'"#;
    root.anchors(&exec_targets(&[("slow", script)]))
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"exec:slow\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let _s = Scheduler::start(&root);
    let (starts, ends) = wait_for(LONG, "three finished runs", || {
        let ends = stamps(&root.path().join("ends"));
        (ends.len() >= 3).then(|| (stamps(&root.path().join("starts")), ends))
    });
    for i in 1..3 {
        assert!(
            starts[i] >= ends[i - 1],
            "run {i} started at {} before run {} ended at {}",
            starts[i],
            i - 1,
            ends[i - 1]
        );
        // A slow run delays its own next run (already due), which then starts promptly.
        let wait = starts[i] - ends[i - 1];
        assert!(wait < 0.5, "run {i} waited {wait:.3} s after the previous one ended");
    }
}

#[test]
fn a_failing_target_never_fails_liveness_or_readiness() {
    let root = Root::new();
    root.anchors(&exec_targets(&[("down", "echo 'connect ECONNREFUSED' >&2; exit 75")]))
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"exec:down\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_for(LONG, "backoff level 2", || s.health().namespace("n").is_some_and(|n| n.backoff >= 2).then_some(()));
    let (code, body) = s.get("/livez");
    assert_eq!(code, 200, "{body}");
    let (code, body) = s.get("/readyz");
    assert_eq!(code, 200, "{body}");
}
