//! φ-backoff, measured on the real binary: after a failure at level k the cadence waits
//! `VMSH_BASE_BACKOFF · φ^k · m` seconds (m = 1 network, 2 auth, 0.5 validation) before it
//! retries, the level is capped at VMSH_MAX_BACKOFF, a success resets it, and it survives a
//! restart. Every exec script appends `date +%s.%N` to a file, so the gaps between real
//! invocations are what is checked, not only what the service says it will do.

use std::time::Duration;

use serde_json::Value;
use vmsh_scheduler::health::NamespaceStatus;

use crate::support::{
    HealthParts as _, Root, Scheduler, exec_targets, lines, metric, now_ms, root_hex, stamps, wait_for,
};

const PHI: f64 = 1.618_033_988_749_895;
/// VMSH_BASE_BACKOFF of the harness.
const BASE: f64 = 0.4;
/// How much later than its backoff delay a retry may come (process start, scheduling).
const LATE: f64 = 0.5;
/// The service's timers count whole milliseconds (truncated), so a retry can start up to a
/// millisecond or so before the exact real-valued delay; anything earlier is a real failure.
const MS_RESOLUTION: f64 = 0.002;

fn delay(base: f64, k: i32, multiplier: f64) -> f64 {
    base * PHI.powi(k) * multiplier
}

/// Asserts the logged `retry_in_s` is `expected` seconds, to the millisecond it is logged with.
fn assert_retry_in(line: &Value, expected: f64) {
    let logged = line["retry_in_s"].as_f64().unwrap_or_else(|| panic!("no numeric retry_in_s in {line}"));
    assert!((logged - expected).abs() < 0.0015, "retry_in_s {logged} should be {expected:.3}: {line}");
}

/// A script that records its invocation time in `$VMSH_ROOT/<file>` and exits with `code`.
fn failing(file: &str, code: i32) -> String {
    format!(r#"date +%s.%N >> "$VMSH_ROOT/{file}"; exit {code}"#)
}

/// A namespace's backoff level in /health, once it is listed.
fn backoff_of(s: &Scheduler, ns: &str) -> Option<u32> {
    s.health().namespace(ns).map(|n| n.backoff)
}

/// The "anchor failed" log lines of one namespace, oldest first.
fn failures(s: &Scheduler, ns: &str) -> Vec<Value> {
    s.logs_with_msg("anchor failed").into_iter().filter(|l| l["ns"] == ns).collect()
}

fn retry_in(line: &Value) -> f64 {
    line["retry_in_s"].as_f64().unwrap_or_else(|| panic!("no numeric retry_in_s in {line}"))
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn one_namespace(root: &Root, ns: &str, target: &str, every: &str) {
    root.namespaces(&format!(
        "namespaces:\n  {ns}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"{every}\"}}\n"
    ))
    .batch(None, "0001.json", "b1", &root_hex(1));
}

#[test]
fn network_failures_wait_base_times_phi_to_the_k_not_one_period() {
    let root = Root::new();
    root.anchors(&exec_targets(&[("net", &failing("calls", 75))]));
    one_namespace(&root, "bo:net", "exec:net", "1s");
    let s = Scheduler::start(&root);
    let calls = root.path().join("calls");
    wait_for(Duration::from_secs(15), "five invocations", || (lines(&calls).len() >= 5).then_some(()));

    let times = stamps(&calls);
    for (i, gap) in gaps(&times).iter().take(4).enumerate() {
        let k = i32::try_from(i + 1).expect("small");
        let want = delay(BASE, k, 1.0);
        assert!(
            *gap >= want - MS_RESOLUTION,
            "retry after failure {k} came {gap:.3}s later, before its backoff {want:.3}s"
        );
        assert!(*gap <= want + LATE, "retry after failure {k} came {gap:.3}s later; its backoff is {want:.3}s");
    }
    // With a 1 s period, once-per-period retries would make the third gap about 1 s.
    assert!(times[3] - times[2] > 1.5, "the level-3 retry must wait about 1.69 s, not one period");

    let logged = failures(&s, "bo:net");
    for (i, line) in logged.iter().take(4).enumerate() {
        let k = i32::try_from(i + 1).expect("small");
        assert_eq!(line["backoff"], k, "{line}");
        assert_eq!(line["class"], "network", "{line}");
        assert_retry_in(line, delay(BASE, k, 1.0));
    }
}

#[test]
fn auth_waits_twice_as_long_and_validation_half_as_long_as_network() {
    let root = Root::new();
    root.anchors(&exec_targets(&[
        ("net", &failing("calls-net", 75)),
        ("auth", &failing("calls-auth", 77)),
        ("val", &failing("calls-val", 65)),
    ]));
    root.namespaces(
        r#"
namespaces:
  bo:net:
    cadence:
      fast: {target: "exec:net", every: "1s"}
  bo:auth:
    cadence:
      fast: {target: "exec:auth", every: "1s"}
  bo:val:
    cadence:
      fast: {target: "exec:val", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(2));
    let s = Scheduler::start(&root);
    let file = |c: &str| root.path().join(format!("calls-{c}"));
    // Auth is the slowest: 1.29 s + 2.09 s until its third invocation.
    wait_for(Duration::from_secs(15), "three invocations of every target", || {
        ["net", "auth", "val"].iter().all(|c| lines(&file(c)).len() >= 3).then_some(())
    });

    let classes = [("net", "network", 1.0), ("auth", "auth", 2.0), ("val", "validation", 0.5)];
    let mut measured = Vec::new();
    for (short, class, m) in classes {
        let logged = failures(&s, &format!("bo:{short}"));
        assert!(logged.len() >= 2, "{short}: {logged:?}");
        for (i, line) in logged.iter().take(2).enumerate() {
            let k = i32::try_from(i + 1).expect("small");
            assert_eq!(line["class"], class, "{line}");
            assert_eq!(line["backoff"], k, "{line}");
            assert_retry_in(line, delay(BASE, k, m));
        }
        let g = gaps(&stamps(&file(short)));
        for (i, gap) in g.iter().take(2).enumerate() {
            let want = delay(BASE, i32::try_from(i + 1).expect("small"), m);
            assert!(*gap >= want - MS_RESOLUTION, "{class}: gap {gap:.3}s is shorter than its backoff {want:.3}s");
            assert!(*gap <= want + LATE, "{class}: gap {gap:.3}s, backoff {want:.3}s");
        }
        measured.push((retry_in(&logged[0]), retry_in(&logged[1]), g[0], g[1]));
    }
    let [(n1, n2, ng1, ng2), (a1, a2, ag1, ag2), (v1, v2, vg1, vg2)] = measured[..] else { unreachable!() };
    // The logged delays, at the same level, are in ratio 2 : 1 : 0.5 (3-decimal rounding aside).
    for (auth, net, val) in [(a1, n1, v1), (a2, n2, v2)] {
        assert!((auth - 2.0 * net).abs() < 0.002, "auth {auth} vs network {net}");
        assert!((val - 0.5 * net).abs() < 0.002, "validation {val} vs network {net}");
    }
    // And the real waits are ordered the same way at each level.
    assert!(vg1 < ng1 && ng1 < ag1, "level 1 gaps: validation {vg1:.3}, network {ng1:.3}, auth {ag1:.3}");
    assert!(vg2 < ng2 && ng2 < ag2, "level 2 gaps: validation {vg2:.3}, network {ng2:.3}, auth {ag2:.3}");
}

#[test]
fn the_backoff_level_is_capped_at_max_backoff() {
    let root = Root::new();
    root.anchors(&exec_targets(&[("net", &failing("calls", 75))]));
    one_namespace(&root, "bo:cap", "exec:net", "1s");
    let s = Scheduler::start_with(&root, &[("VMSH_MAX_BACKOFF", "2")]);
    let calls = root.path().join("calls");
    let mut highest_health = 0;
    let mut highest_gauge = 0.0_f64;
    // 0.65 s + 4 × 1.05 s: five failures at the cap's delay.
    wait_for(Duration::from_secs(15), "six invocations", || {
        let backoff = s.health().namespace("bo:cap").map_or(0, |n| n.backoff);
        highest_health = highest_health.max(backoff);
        let g = metric(&s.metrics(), "vmsh_backoff_state", &[("namespace", "bo:cap")]).unwrap_or(0.0);
        highest_gauge = highest_gauge.max(g);
        (lines(&calls).len() >= 6).then_some(())
    });
    assert!(highest_health <= 2, "/health backoff reached {highest_health}");
    assert!(highest_gauge <= 2.0, "vmsh_backoff_state reached {highest_gauge}");
    let h = s.health();
    assert_eq!(h.ns("bo:cap").backoff, 2, "{h}");
    assert!(h.cadence_of("bo:cap", "fast").failures >= 5, "{h}");
    assert_eq!(metric(&s.metrics(), "vmsh_backoff_state", &[("namespace", "bo:cap")]), Some(2.0));

    let logged = failures(&s, "bo:cap");
    assert!(logged.len() >= 5);
    for line in &logged {
        assert!(line["backoff"].as_u64().is_some_and(|k| k <= 2), "{line}");
    }
    for line in &logged[1..] {
        assert_eq!(line["backoff"], 2, "{line}");
        assert_retry_in(line, delay(BASE, 2, 1.0));
    }
    // The real waits stop growing at the cap: uncapped, the fourth gap would be 2.74 s.
    let capped = delay(BASE, 2, 1.0);
    for gap in gaps(&stamps(&calls)).iter().skip(1).take(4) {
        assert!(*gap >= capped - MS_RESOLUTION && *gap <= capped + LATE, "gap {gap:.3}s, capped backoff {capped:.3}s");
    }
}

#[test]
fn a_success_resets_the_backoff_level_to_zero() {
    let root = Root::new();
    // Fails (network) three times, then succeeds.
    let script = r#"n=$(cat "$VMSH_ROOT/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$VMSH_ROOT/count"; date +%s.%N >> "$VMSH_ROOT/calls"; [ $n -gt 3 ] || exit 75; exit 0"#;
    root.anchors(&exec_targets(&[("flaky", script)]));
    one_namespace(&root, "bo:reset", "exec:flaky", "1s");
    let s = Scheduler::start(&root);
    wait_for(Duration::from_secs(10), "backoff level 3 after three failures", || {
        (backoff_of(&s, "bo:reset") == Some(3)).then_some(())
    });
    let h = s.health();
    assert_eq!(h.ns("bo:reset").status, NamespaceStatus::BackingOff, "{h}");
    assert_eq!(metric(&s.metrics(), "vmsh_backoff_state", &[("namespace", "bo:reset")]), Some(3.0));

    wait_for(Duration::from_secs(10), "a receipt after the fourth attempt", || {
        (!root.receipts("bo:reset").is_empty()).then_some(())
    });
    let h = wait_for(Duration::from_secs(5), "/health to report the success", || {
        let h = s.health();
        h.cadence("bo:reset", "fast").is_some_and(|c| c.last_success_ms.is_some()).then_some(h)
    });
    let (ns, fast) = (h.ns("bo:reset"), h.cadence_of("bo:reset", "fast"));
    assert_eq!(ns.status, NamespaceStatus::Ok, "{h}");
    assert_eq!(ns.backoff, 0, "{h}");
    assert_eq!(fast.failures, 0, "{h}");
    assert!(fast.last_error.is_none(), "{h}");
    assert_eq!(metric(&s.metrics(), "vmsh_backoff_state", &[("namespace", "bo:reset")]), Some(0.0));
    let fast = wait_for(Duration::from_secs(5), "the success in the state file", || {
        let st = root.state();
        let fast = st["namespaces"]["bo:reset"]["cadences"]["fast"].clone();
        fast["lastSuccessMs"].is_i64().then_some(fast)
    });
    assert_eq!(fast["backoff"], 0, "{fast}");
    assert_eq!(fast["failures"], 0, "{fast}");
    assert!(fast.get("retryAtMs").is_none(), "{fast}");
}

#[test]
fn the_backoff_level_and_retry_time_survive_a_restart() {
    let root = Root::new();
    root.anchors(&exec_targets(&[("net", &failing("calls", 75))]));
    one_namespace(&root, "bo:restart", "exec:net", "1s");
    // A base of 2 s: the level-1 retry is 3.24 s away, so it is still pending after the restart.
    let env = [("VMSH_BASE_BACKOFF", "2")];
    let mut s = Scheduler::start_with(&root, &env);
    wait_for(Duration::from_secs(10), "the first failure", || (backoff_of(&s, "bo:restart") == Some(1)).then_some(()));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(0), "{}", s.stderr());
    let fast = root.state()["namespaces"]["bo:restart"]["cadences"]["fast"].clone();
    assert_eq!(fast["backoff"], 1, "{fast}");
    let retry_at = fast["retryAtMs"].as_i64().unwrap_or_else(|| panic!("no retryAtMs in {fast}"));
    drop(s);

    let s = Scheduler::start_with(&root, &env);
    let calls = root.path().join("calls");
    let h = wait_for(Duration::from_secs(5), "the namespace in /health", || {
        let h = s.health();
        h.namespace("bo:restart").is_some().then_some(h)
    });
    assert_eq!(lines(&calls).len(), 1, "the retry must not run at start-up");
    let ns = h.ns("bo:restart");
    assert_eq!(ns.backoff, 1, "backoff after restart: {h}");
    assert_eq!(ns.status, NamespaceStatus::BackingOff, "{h}");
    let next_due = h.cadence_of("bo:restart", "fast").next_due_ms.unwrap_or_else(|| panic!("no nextDueMs: {h}"));
    assert!((next_due - retry_at).abs() <= 50, "nextDueMs {next_due} vs recorded retryAtMs {retry_at}");

    wait_for(Duration::from_secs(10), "the retry after the restart", || (lines(&calls).len() >= 2).then_some(()));
    let second = stamps(&calls)[1];
    assert!(
        second >= retry_at as f64 / 1000.0 - MS_RESOLUTION,
        "retried at {second:.3}, before the recorded retry time {:.3}",
        retry_at as f64 / 1000.0
    );
    // The level goes on from 1, not from 0.
    wait_for(Duration::from_secs(5), "backoff level 2", || (backoff_of(&s, "bo:restart") == Some(2)).then_some(()));
    let line = failures(&s, "bo:restart").into_iter().next().expect("a failure logged after the restart");
    assert_eq!(line["backoff"], 2, "{line}");
    assert_retry_in(&line, delay(2.0, 2, 1.0));
}

#[test]
fn a_level_above_the_cap_loaded_from_state_is_reported_at_most_the_cap() {
    // A state written under a higher cap (the original service's was 7), started with a lower one.
    let root = Root::new();
    one_namespace(&root, "bo:loaded", "local:demo", "1h");
    let state = serde_json::json!({"version": 1, "namespaces": {"bo:loaded": {"cadences": {"fast": {
        "lastSuccessMs": now_ms() - 5_000, "backoff": 6, "failures": 6}}}}});
    root.write_state(&state);
    let s = Scheduler::start_with(&root, &[("VMSH_MAX_BACKOFF", "2")]);
    let reported = wait_for(Duration::from_secs(5), "the namespace in /health", || backoff_of(&s, "bo:loaded"));
    let gauge = metric(&s.metrics(), "vmsh_backoff_state", &[("namespace", "bo:loaded")]).expect("gauge");
    assert!(
        reported <= 2 && gauge <= 2.0,
        "VMSH_MAX_BACKOFF=2 but /health backoff is {reported} and the gauge {gauge}"
    );
}
