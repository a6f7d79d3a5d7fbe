//! The anchor pool: per-target slots and their saturation, time limits, one run per cadence at
//! a time, and liveness while targets fail.

use std::time::Duration;

use vmsh_scheduler::model::ErrorClass;

use crate::support::proc::is_dead;
use crate::support::{CadenceParts, Root, Scheduler, exec_targets, lines, root_hex, stamps, wait_for};

const LONG: Duration = Duration::from_secs(15);

#[test]
fn a_hung_target_holds_only_its_own_slots_and_each_of_its_jobs_for_at_most_the_timeout() {
    let root = Root::new();
    // One slot per target: the hung target fills its own, never the healthy one's.
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
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_WORKERS", "1"), ("VMSH_ANCHOR_TIMEOUT_S", "2")]);
    let journal = root.journal("healthy");
    let entries = wait_for(LONG, "five anchors of the healthy namespace", || {
        vmsh_scheduler::anchor::local::read_entries(&journal).ok().filter(|e| e.len() >= 5)
    });
    // Each healthy anchor comes one period after the last: never a timeout later.
    for pair in entries.windows(2) {
        let gap = pair[1].time_ms - pair[0].time_ms;
        assert!(gap < 1_800, "the hung target held the healthy namespace up for {gap} ms");
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

/// The value of the sample `name{target="<target>"}` in a scrape.
fn target_sample(scrape: &str, name: &str, target: &str) -> Option<f64> {
    let prefix = format!("{name}{{target=\"{target}\"}} ");
    scrape.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_target_whose_jobs_wait_for_a_slot_is_shown_saturated_until_its_concurrency_is_raised() {
    let root = Root::new();
    // Four namespaces every second through a command of 1.5 s, one at a time: the queue grows.
    let slow = |concurrency: u32| {
        let command = serde_json::json!(["sh", "-c", "sleep 1.5; echo '{}'"]);
        format!("exec:\n  slow: {{command: {command}, concurrency: {concurrency}}}\n")
    };
    let mut namespaces = String::from("namespaces:\n");
    for i in 0..4 {
        namespaces.push_str(&format!("  n{i}:\n    cadence:\n      fast: {{target: \"exec:slow\", every: \"1s\"}}\n"));
    }
    root.anchors(&slow(1)).namespaces(&namespaces);
    for i in 0..4 {
        root.batch(Some(&format!("n{i}")), "0001.json", "b1", &root_hex(1));
    }
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_WORKERS", "64")]);
    let lane = wait_for(LONG, "exec:slow saturated in /health", || {
        s.health().targets.into_iter().find(|t| t.target == "exec:slow" && t.saturated)
    });
    assert_eq!((lane.concurrency, lane.running), (1, 1), "its entry's limit wins over VMSH_ANCHOR_WORKERS: {lane:?}");
    assert!(lane.queued >= 1 && lane.oldest_wait_s >= 1.0, "{lane:?}");
    let (code, health) = s.health_answer();
    assert_eq!((code, health.status.to_string()), (200, "degraded".to_string()), "a saturated target degrades");
    let scrape = s.metrics();
    assert_eq!(target_sample(&scrape, "vmsh_target_saturated", "exec:slow"), Some(1.0), "{scrape}");
    assert_eq!(target_sample(&scrape, "vmsh_target_concurrency", "exec:slow"), Some(1.0));
    let said = wait_for(LONG, "the saturation logged", || {
        s.logs().into_iter().find(|l| l["msg"].as_str().is_some_and(|m| m.starts_with("target saturated")))
    });
    assert_eq!(said["level"], "warn", "{said}");
    assert_eq!(said["target"], "exec:slow", "{said}");
    assert_eq!(said["setting"], "exec.slow.concurrency", "the line names the setting to raise: {said}");
    assert_eq!(said["set_by"], "its entry", "{said}");
    assert!(said["msg"].as_str().is_some_and(|m| m.contains("exec.slow.concurrency")), "{said}");
    wait_for(LONG, "time counted as saturated", || {
        target_sample(&s.metrics(), "vmsh_target_saturated_seconds_total", "exec:slow").filter(|v| *v > 0.0)
    });

    // Room for every namespace at once: the queue drains and the target is saturated no more.
    root.anchors(&slow(8));
    let lane = wait_for(Duration::from_secs(30), "exec:slow no longer saturated", || {
        s.health().targets.into_iter().find(|t| t.target == "exec:slow" && !t.saturated && t.concurrency == 8)
    });
    assert_eq!(lane.saturated_for_s, None, "{lane:?}");
    wait_for(LONG, "the end of the saturation logged", || s.log_with_msg("target no longer saturated"));
    wait_for(LONG, "vmsh_target_saturated back to 0", || {
        (target_sample(&s.metrics(), "vmsh_target_saturated", "exec:slow") == Some(0.0)).then_some(())
    });
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
