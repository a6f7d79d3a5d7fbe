//! Hot reload: the supervisor re-reads the namespaces and targets files every VMSH_TICK_MS,
//! compares their SHA-256 with the running config's, and applies a valid change as a diff
//! while an invalid one is rejected with the old config left running.

use std::time::Duration;

use serde_json::Value;
use vmsh_scheduler::health::contract::ReloadResult;
use vmsh_scheduler::health::{NamespaceStatus, OverallStatus};

use crate::support::{
    HealthParts, Root, Scheduler, file_sha256, last_tick, metric, root_hex, wait_for, write_file, write_file_atomic,
};

const LONG: Duration = Duration::from_secs(10);

/// One namespace `a` anchoring to `local:a` every second.
const ONLY_A: &str = r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:a", every: "1s"}
"#;

/// `a` plus a namespace `b`.
const A_AND_B: &str = r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:a", every: "1s"}
  b:
    cadence:
      fast: {target: "local:b", every: "1s"}
"#;

fn ns_path(root: &Root) -> std::path::PathBuf {
    root.path().join("namespaces.yaml")
}

fn value(s: &Scheduler, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric(&s.metrics(), name, labels)
}

/// Waits until `ns` has at least `n` receipts; returns how many it has.
fn wait_receipts(root: &Root, ns: &str, n: usize) -> usize {
    wait_for(LONG, &format!("{n} receipts of {ns}"), || {
        let have = root.receipts(ns).len();
        (have >= n).then_some(have)
    })
}

/// Whether /health reports the last config change seen with this outcome.
fn last_reload_was(s: &Scheduler, result: ReloadResult) -> bool {
    s.health().config.and_then(|c| c.last_reload).is_some_and(|r| r.result == result)
}

/// Whether /health reports this overall status.
fn status_is(s: &Scheduler, status: OverallStatus) -> bool {
    s.health().status == status
}

/// The lines logged for rejected config changes.
fn rejections(s: &Scheduler) -> Vec<Value> {
    s.logs_with_msg("config change rejected; the running config stays in force")
}

#[test]
fn adding_a_namespace_starts_anchoring_it_without_a_restart() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "a", 1);
    assert!(s.health().namespace("b").is_none());

    write_file_atomic(&ns_path(&root), A_AND_B);
    let r = wait_for(LONG, "a receipt of the added namespace", || root.receipts("b").into_iter().next());
    assert_eq!(r["batchId"], "b1");
    let h = s.health();
    assert_eq!(h.ns("b").status, NamespaceStatus::Ok, "{h}");
    assert_eq!(h.running_config().hash, file_sha256(&ns_path(&root)));
    assert_eq!(h.last_reload().result, ReloadResult::Success);
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_namespaces", &[]), Some(2.0));
    assert_eq!(metric(&m, "vmsh_config_reloads_total", &[("result", "success")]), Some(1.0));
    assert_eq!(metric(&m, "vmsh_config_reloads_total", &[("result", "failure")]), Some(0.0));
    let reloaded = s.wait_log("config reloaded");
    assert_eq!(reloaded["added"], 1, "{reloaded}");
    assert_eq!(reloaded["removed"], 0, "{reloaded}");
    // The same process did it: it started once, and `a` kept going.
    assert_eq!(s.logs_with_msg("vmsh-scheduler started").len(), 1);
    let a_before = root.receipts("a").len();
    wait_receipts(&root, "a", a_before + 1);
}

#[test]
fn changing_a_cadence_applies_in_place_and_keeps_the_state_of_unchanged_cadences() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  n:
    cadence:
      fast:   {target: "local:f", every: "1s"}
      strong: {target: "local:s", every: "30s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    let (strong_ms, strong_s, first_fast) = wait_for(LONG, "fast and strong to anchor", || {
        let h = s.health();
        let n = h.namespace("n")?;
        Some((
            n.cadence("strong")?.last_success_ms?,
            *n.last_anchor.get("strong")?,
            n.cadence("fast")?.last_success_ms?,
        ))
    });
    // Edit right after an anchor of fast finished, so that none is running when the change lands.
    wait_for(LONG, "fast to finish another anchor", || {
        let fast = s.cadence("n", "fast")?;
        (fast.last_success_ms > Some(first_fast) && !fast.in_flight).then_some(())
    });

    // Edit 1: fast changes target, strong stays, cold is added (with a long period).
    write_file_atomic(
        &ns_path(&root),
        r#"
namespaces:
  n:
    cadence:
      fast:   {target: "local:f2", every: "1s"}
      strong: {target: "local:s", every: "30s"}
      cold:   {target: "local:c", every: "1h"}
"#,
    );
    let cold = wait_for(LONG, "the added cold cadence to anchor", || {
        root.receipts("n").into_iter().find(|r| r["cadence"] == "cold")
    });
    assert_eq!(cold["target"], "local:c");
    let fast2 = wait_for(LONG, "fast to anchor on its new target", || {
        root.receipts("n").into_iter().find(|r| r["cadence"] == "fast" && r["target"] == "local:f2")
    });
    // fast kept its last success: its first anchor on the new target waited for its period.
    let last_f = root
        .receipts("n")
        .into_iter()
        .filter(|r| r["target"] == "local:f")
        .filter_map(|r| r["timeMs"].as_i64())
        .max()
        .expect("receipts on the old target");
    let fast2_ms = fast2["timeMs"].as_i64().expect("timeMs");
    assert!(fast2_ms >= last_f + 950, "fast anchored at {fast2_ms}, under a period after {last_f}: state reset?");

    // Edit 2 (a plain overwrite): cold's period shrinks from 1h to 1s and applies at once.
    let cold_ms = cold["timeMs"].as_i64().expect("timeMs");
    write_file(
        &ns_path(&root),
        r#"
namespaces:
  n:
    cadence:
      fast:   {target: "local:f2", every: "1s"}
      strong: {target: "local:s", every: "30s"}
      cold:   {target: "local:c", every: "1s"}
"#,
    );
    wait_for(LONG, "cold to anchor again on its new period", || {
        (root.receipts("n").iter().filter(|r| r["cadence"] == "cold").count() >= 2).then_some(())
    });

    let h = s.health();
    let n = h.ns("n");
    assert_eq!(h.cadence_of("n", "strong").last_success_ms, Some(strong_ms), "strong's last success was not kept: {n}");
    assert_eq!(n.last_anchor.get("strong"), Some(&strong_s));
    assert_eq!(h.cadence_of("n", "fast").target, "local:f2");
    assert_eq!(h.cadence_of("n", "cold").every, "1s");
    assert!(h.cadence_of("n", "cold").last_success_ms > Some(cold_ms), "{n}");
    let strong_receipts = root.receipts("n").into_iter().filter(|r| r["cadence"] == "strong").count();
    assert_eq!(strong_receipts, 1, "the unchanged 30 s cadence anchored again");
    assert_eq!(h.last_reload().result, ReloadResult::Success);
    assert_eq!(h.running_config().hash, file_sha256(&ns_path(&root)));
    s.wait_log("namespace reconfigured");

    // The series follow the new targets.
    let m = s.metrics();
    let labels = |t: &'static str| [("namespace", "n"), ("cadence", "fast"), ("target", t)];
    assert_eq!(metric(&m, "vmsh_anchors_attempted_total", &labels("local:f")), None, "old target's series kept");
    assert!(metric(&m, "vmsh_anchors_attempted_total", &labels("local:f2")).unwrap_or(0.0) >= 1.0);
    assert!(
        metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", "n"), ("cadence", "cold")]).unwrap_or(0.0) >= 2.0
    );
    assert!(metric(&m, "vmsh_config_reloads_total", &[("result", "success")]).unwrap_or(0.0) >= 2.0);
}

#[test]
fn removing_a_namespace_stops_it_and_drops_it_from_health_and_metrics() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  keep:
    cadence:
      fast: {target: "local:keep", every: "1s"}
  gone:
    cadence:
      fast: {target: "local:gone", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "gone", 1);
    wait_receipts(&root, "keep", 1);
    assert!(s.metrics().contains(r#"namespace="gone""#));

    // A plain overwrite (truncate, then write), as an editor might do.
    write_file(
        &ns_path(&root),
        "namespaces:\n  keep:\n    cadence:\n      fast: {target: \"local:keep\", every: \"1s\"}\n",
    );
    wait_for(LONG, "gone to leave /health and vmsh_namespaces to drop", || {
        let h = s.health();
        let dropped = value(&s, "vmsh_namespaces", &[]) == Some(1.0);
        (h.namespace("gone").is_none() && dropped).then_some(())
    });
    let at_removal = root.receipts("gone").len();
    // An anchor already running when the change landed may still finish; after the next
    // anchor of `keep` (a whole period later) nothing of `gone` can be running.
    let keep_now = root.receipts("keep").len();
    wait_receipts(&root, "keep", keep_now + 1);
    let settled = root.receipts("gone").len();
    assert!(settled <= at_removal + 1, "gone kept anchoring after its removal: {at_removal} -> {settled}");
    let keep_now = root.receipts("keep").len();
    wait_receipts(&root, "keep", keep_now + 2);
    assert_eq!(root.receipts("gone").len(), settled, "gone anchored after it was removed");

    let h = s.health();
    assert!(h.namespace("gone").is_none(), "{h}");
    assert_eq!(h.ns("keep").status, NamespaceStatus::Ok);
    assert_eq!(h.last_reload().result, ReloadResult::Success);
    let m = s.metrics();
    let leftovers: Vec<&str> = m.lines().filter(|l| l.contains(r#"namespace="gone""#)).collect();
    assert!(leftovers.is_empty(), "series of the removed namespace remain:\n{}", leftovers.join("\n"));
    assert_eq!(metric(&m, "vmsh_anchors_attempted_total", &[("namespace", "gone")]), None);
    assert_eq!(metric(&m, "vmsh_backoff_state", &[("namespace", "gone")]), None);
    assert_eq!(metric(&m, "vmsh_namespaces", &[]), Some(1.0));
    s.wait_log("namespace removed from config; stopping");
}

#[test]
fn invalid_reload_keeps_previous_config() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "a", 1);
    let running_hash = file_sha256(&ns_path(&root));

    // Three mistakes in three namespaces: a zero period, an unknown field, a bad scheme.
    write_file_atomic(
        &ns_path(&root),
        r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:a", every: "0s"}
  b:
    cadence:
      fast: {target: "local:b", every: "1s", colour: "red"}
  c:
    cadence:
      fast: {target: "ipfs:c", every: "1s"}
"#,
    );
    let rejected_hash = file_sha256(&ns_path(&root));
    wait_for(LONG, "the rejection in /health", || last_reload_was(&s, ReloadResult::Failure).then_some(()));
    // The old config keeps running: `a` anchors on, every second as before.
    let a_now = root.receipts("a").len();
    wait_receipts(&root, "a", a_now + 2);

    let h = s.health();
    assert_eq!(h.status, OverallStatus::Degraded, "{h}");
    assert_eq!(h.running_config().hash, running_hash, "the running config's hash changed");
    let last = h.last_reload();
    assert_eq!(last.hash, rejected_hash);
    let errors = &last.errors;
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (ns, field, word) in [
        ("a", "cadence.fast.every", "zero"),
        ("b", "cadence.fast.colour", "unknown field"),
        ("c", "cadence.fast.target", "ipfs"),
    ] {
        assert!(
            errors.iter().any(|e| e.contains(&format!("namespace \"{ns}\"")) && e.contains(field) && e.contains(word)),
            "no /health error for {ns} {field}: {errors:?}"
        );
    }
    assert_eq!(h.cadence_of("a", "fast").every, "1s");
    assert!(h.namespace("b").is_none() && h.namespace("c").is_none());

    let logged = rejections(&s);
    let path = ns_path(&root).display().to_string();
    for (ns, field, word) in [
        ("a", "cadence.fast.every", "zero"),
        ("b", "cadence.fast.colour", "unknown field"),
        ("c", "cadence.fast.target", "ipfs"),
    ] {
        let line =
            logged.iter().find(|l| l["ns"] == ns).unwrap_or_else(|| panic!("no error line for {ns}: {logged:?}"));
        assert_eq!(line["level"], "error", "{line}");
        assert_eq!(line["file"], path.as_str(), "{line}");
        assert_eq!(line["field"], field, "{line}");
        assert!(line["reason"].as_str().is_some_and(|r| r.contains(word)), "{line}");
    }
    // Counted once, however many ticks saw the same rejected file.
    assert_eq!(logged.len(), 3, "the same rejection was logged again: {logged:?}");
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_config_reloads_total", &[("result", "failure")]), Some(1.0));
    assert_eq!(metric(&m, "vmsh_config_reloads_total", &[("result", "success")]), Some(0.0));
    assert_eq!(metric(&m, "vmsh_config_last_reload_successful", &[]), Some(0.0));
    assert_eq!(metric(&m, "vmsh_namespaces", &[]), Some(1.0));
    assert!(m.contains(&format!(r#"vmsh_config_info{{hash="{running_hash}"}} 1"#)), "vmsh_config_info changed");

    // Fixing the file applies it.
    write_file_atomic(&ns_path(&root), A_AND_B);
    wait_for(LONG, "the fixed file to be applied", || last_reload_was(&s, ReloadResult::Success).then_some(()));
    wait_receipts(&root, "b", 1);
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_config_last_reload_successful", &[]), Some(1.0));
    assert_eq!(metric(&m, "vmsh_config_reloads_total", &[("result", "success")]), Some(1.0));
    assert_eq!(metric(&m, "vmsh_config_reloads_total", &[("result", "failure")]), Some(1.0));
    let h = s.health();
    assert_eq!(h.running_config().hash, file_sha256(&ns_path(&root)));
    assert_eq!(h.last_reload().errors, Vec::<String>::new());
    wait_for(LONG, "status healthy again", || status_is(&s, OverallStatus::Healthy).then_some(()));
}

#[test]
fn half_written_yaml_is_rejected_without_stopping_anything() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "a", 1);

    // The first part of A_AND_B, cut inside b's flow mapping, written in place.
    let half = &A_AND_B[..A_AND_B.rfind("every").expect("cut point") + 2];
    assert!(serde_yaml::from_str::<serde_yaml::Value>(half).is_err(), "the cut must not be valid YAML: {half}");
    write_file(&ns_path(&root), half);
    wait_for(LONG, "the rejection in /health", || last_reload_was(&s, ReloadResult::Failure).then_some(()));
    let a_now = root.receipts("a").len();
    wait_receipts(&root, "a", a_now + 2);
    let h = s.health();
    assert_eq!(h.status, OverallStatus::Degraded);
    assert_eq!(h.ns("a").status, NamespaceStatus::Ok);
    let errors = &h.last_reload().errors;
    assert!(errors.iter().any(|e| e.contains("not valid YAML")), "{errors:?}");
    let logged = rejections(&s);
    let line = logged.last().expect("an error line");
    assert_eq!(line["level"], "error");
    assert_eq!(line["file"], ns_path(&root).display().to_string().as_str());
    assert!(line["reason"].as_str().is_some_and(|r| r.contains("not valid YAML")), "{line}");
    let m = s.metrics();
    // A plain overwrite may also be caught empty for an instant; that is a second rejection.
    assert!(metric(&m, "vmsh_config_reloads_total", &[("result", "failure")]).unwrap_or(0.0) >= 1.0);
    assert_eq!(metric(&m, "vmsh_config_last_reload_successful", &[]), Some(0.0));

    // The writer finishes: the whole file is applied.
    write_file(&ns_path(&root), A_AND_B);
    wait_receipts(&root, "b", 1);
    let h = s.health();
    assert_eq!(h.last_reload().result, ReloadResult::Success);
    assert_eq!(h.running_config().hash, file_sha256(&ns_path(&root)));
    assert_eq!(value(&s, "vmsh_config_last_reload_successful", &[]), Some(1.0));
}

#[test]
fn reverting_a_rejected_edit_to_the_running_config_clears_the_failure() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "a", 1);
    let running_hash = file_sha256(&ns_path(&root));
    write_file_atomic(&ns_path(&root), &ONLY_A.replace("\"1s\"", "\"0s\""));
    wait_for(LONG, "the rejection", || {
        (value(&s, "vmsh_config_last_reload_successful", &[]) == Some(0.0)).then_some(())
    });
    assert_eq!(s.health().status, OverallStatus::Degraded);

    write_file_atomic(&ns_path(&root), ONLY_A);
    wait_for(LONG, "the failure to clear", || last_reload_was(&s, ReloadResult::Success).then_some(()));
    let h = s.health();
    assert_eq!(h.running_config().hash, running_hash);
    assert_eq!(value(&s, "vmsh_config_last_reload_successful", &[]), Some(1.0));
    wait_for(LONG, "status healthy", || status_is(&s, OverallStatus::Healthy).then_some(()));
    let a_now = root.receipts("a").len();
    wait_receipts(&root, "a", a_now + 1);
}

/// A targets file whose `exec:t` prints `{"v": N}`.
fn targets_v(n: u32) -> String {
    format!("exec:\n  t: {{command: [\"sh\", \"-c\", \"echo '{{\\\"v\\\": {n}}}'\"]}}\n")
}

#[test]
fn editing_the_targets_file_changes_the_exec_command_for_the_next_anchor() {
    let root = Root::new();
    root.anchors(&targets_v(1))
        .namespaces("namespaces:\n  x:\n    cadence:\n      fast: {target: \"exec:t\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    let first = wait_for(LONG, "a receipt from the first command", || root.receipts("x").into_iter().next());
    assert_eq!(first["attestation"], serde_json::json!({"v": 1}));
    let old_targets_hash = s.health().running_config().targets_hash.clone();

    write_file_atomic(&root.path().join("anchors.yaml"), &targets_v(2));
    let before = root.receipts("x").len();
    // At most one anchor can have started before the change was seen; the next one uses it.
    wait_receipts(&root, "x", before + 2);
    let receipts = root.receipts("x");
    let first_v2 = receipts
        .iter()
        .position(|r| r["attestation"] == serde_json::json!({"v": 2}))
        .expect("a receipt from the edited command");
    assert!(first_v2 <= before + 1, "the edited command was not used by the next anchor: {receipts:?}");
    assert!(
        receipts[first_v2..].iter().all(|r| r["attestation"] == serde_json::json!({"v": 2})),
        "the old command ran again: {receipts:?}"
    );
    let h = s.health();
    assert_ne!(h.running_config().targets_hash, old_targets_hash);
    assert_eq!(h.running_config().targets_hash, Some(file_sha256(&root.path().join("anchors.yaml"))));
    assert_eq!(h.last_reload().result, ReloadResult::Success);
    assert_eq!(value(&s, "vmsh_config_reloads_total", &[("result", "success")]), Some(1.0));
}

#[test]
fn removing_an_exec_target_still_in_use_is_rejected() {
    let root = Root::new();
    root.anchors(&targets_v(1))
        .namespaces("namespaces:\n  x:\n    cadence:\n      fast: {target: \"exec:t\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "x", 1);

    write_file_atomic(&root.path().join("anchors.yaml"), "exec:\n  other: {command: [\"true\"]}\n");
    wait_for(LONG, "the rejection", || last_reload_was(&s, ReloadResult::Failure).then_some(()));
    let now = root.receipts("x").len();
    wait_receipts(&root, "x", now + 2);
    assert!(root.receipts("x").iter().all(|r| r["attestation"] == serde_json::json!({"v": 1})));
    let errors = s.health().last_reload().errors.clone();
    assert!(errors.iter().any(|e| e.contains("exec:t is not configured")), "{errors:?}");
    let line = rejections(&s).into_iter().next().expect("an error line");
    assert_eq!(line["ns"], "x");
    assert_eq!(line["field"], "cadence.fast.target");
    assert_eq!(value(&s, "vmsh_config_last_reload_successful", &[]), Some(0.0));
    assert_eq!(value(&s, "vmsh_config_reloads_total", &[("result", "failure")]), Some(1.0));
}

#[test]
fn changing_a_target_while_its_anchor_runs_leaves_no_series_for_the_old_target() {
    let root = Root::new();
    root.anchors("exec:\n  slow: {command: [\"sh\", \"-c\", \"sleep 1.5; echo '{}'\"]}\n")
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"exec:slow\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_for(LONG, "the slow anchor to be in flight", || {
        s.cadence("n", "fast").is_some_and(|c| c.in_flight).then_some(())
    });
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:new\", every: \"1s\"}\n",
    );
    wait_for(LONG, "the running anchor to finish on the old target", || {
        root.receipts("n").into_iter().find(|r| r["target"] == "exec:slow")
    });
    wait_for(LONG, "an anchor on the new target", || {
        root.receipts("n").into_iter().find(|r| r["target"] == "local:new")
    });
    let m = s.metrics();
    let old: Vec<&str> = m.lines().filter(|l| l.contains(r#"target="exec:slow""#)).collect();
    assert!(old.is_empty(), "series of the replaced target remain:\n{}", old.join("\n"));
    assert!(
        metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", "n"), ("target", "local:new")]).unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn removing_a_namespace_drops_even_the_series_of_a_target_replaced_mid_anchor() {
    let root = Root::new();
    root.anchors("exec:\n  slow: {command: [\"sh\", \"-c\", \"sleep 1.5; echo '{}'\"]}\n")
        .namespaces(
            "namespaces:\n  keep:\n    cadence:\n      fast: {target: \"local:keep\", every: \"1s\"}\n  n:\n    cadence:\n      fast: {target: \"exec:slow\", every: \"1s\"}\n",
        )
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_for(LONG, "the slow anchor to be in flight", || {
        s.cadence("n", "fast").is_some_and(|c| c.in_flight).then_some(())
    });
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  keep:\n    cadence:\n      fast: {target: \"local:keep\", every: \"1s\"}\n  n:\n    cadence:\n      fast: {target: \"local:new\", every: \"1s\"}\n",
    );
    wait_for(LONG, "an anchor on the new target", || {
        root.receipts("n").into_iter().find(|r| r["target"] == "local:new")
    });
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  keep:\n    cadence:\n      fast: {target: \"local:keep\", every: \"1s\"}\n",
    );
    wait_for(LONG, "n to leave /health", || s.health().namespace("n").is_none().then_some(()));
    let m = s.metrics();
    let leftovers: Vec<&str> = m.lines().filter(|l| l.contains(r#"namespace="n""#)).collect();
    assert!(leftovers.is_empty(), "series of the removed namespace remain:\n{}", leftovers.join("\n"));
}

#[test]
fn removing_a_failing_cadence_while_it_runs_clears_its_backoff_from_the_gauge() {
    let root = Root::new();
    root.anchors("exec:\n  flaky: {command: [\"sh\", \"-c\", \"sleep 1; exit 75\"]}\n")
        .namespaces(
            "namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:n\", every: \"1h\"}\n      cold: {target: \"exec:flaky\", every: \"1s\"}\n",
        )
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    // cold failed once and is running its retry.
    wait_for(LONG, "cold to retry after a failure", || {
        s.cadence("n", "cold").is_some_and(|c| c.backoff >= 1 && c.in_flight).then_some(())
    });
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:n\", every: \"1h\"}\n",
    );
    wait_for(LONG, "cold to be retired once its run ended", || s.cadence("n", "cold").is_none().then_some(()));
    // Give it a second of config ticks to settle, so a lagging update cannot explain the gauge.
    let t0 = last_tick(&s).expect("lastTick");
    wait_for(LONG, "a second of config ticks", || (last_tick(&s) >= Some(t0 + 1000)).then_some(()));
    let h = s.health();
    assert_eq!(h.ns("n").backoff, 0, "{h}");
    assert_eq!(h.ns("n").status, NamespaceStatus::Ok);
    let m = s.metrics();
    assert_eq!(
        metric(&m, "vmsh_backoff_state", &[("namespace", "n")]),
        Some(0.0),
        "vmsh_backoff_state still counts the removed cadence (health says backoff 0)"
    );
    // vmsh_schedule_lag_seconds{cadence} aggregates over all namespaces and rightly stays.
    let leftovers: Vec<&str> =
        m.lines().filter(|l| l.contains(r#"namespace="n""#) && l.contains(r#"cadence="cold""#)).collect();
    assert!(leftovers.is_empty(), "series of the removed cadence remain:\n{}", leftovers.join("\n"));
}

#[test]
fn a_namespaces_file_that_disappears_for_a_while_keeps_the_running_config() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_receipts(&root, "a", 1);
    let running_hash = file_sha256(&ns_path(&root));
    // As in a ConfigMap symlink swap caught half-way: the file is briefly missing.
    let aside = root.path().join("namespaces.yaml.aside");
    std::fs::rename(ns_path(&root), &aside).expect("move the file away");
    wait_for(LONG, "the unreadable file to be reported", || last_reload_was(&s, ReloadResult::Failure).then_some(()));
    let a_now = root.receipts("a").len();
    wait_receipts(&root, "a", a_now + 2);
    let h = s.health();
    assert!(h.last_reload().errors.iter().any(|e| e.contains("cannot read")), "{h}");
    assert_eq!(h.running_config().hash, running_hash);
    assert_eq!(h.ns("a").status, NamespaceStatus::Ok);
    assert_eq!(value(&s, "vmsh_namespaces", &[]), Some(1.0));
    assert_eq!(value(&s, "vmsh_config_reloads_total", &[("result", "failure")]), Some(1.0));

    std::fs::rename(&aside, ns_path(&root)).expect("put the file back");
    wait_for(LONG, "the failure to clear", || last_reload_was(&s, ReloadResult::Success).then_some(()));
    assert_eq!(value(&s, "vmsh_config_last_reload_successful", &[]), Some(1.0));
    wait_for(LONG, "status healthy", || status_is(&s, OverallStatus::Healthy).then_some(()));
}

#[test]
fn a_failure_on_a_target_replaced_mid_anchor_is_not_counted_against_the_new_target() {
    let root = Root::new();
    root.anchors("exec:\n  slowfail: {command: [\"sh\", \"-c\", \"sleep 1.5; exit 75\"]}\n")
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"exec:slowfail\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_for(LONG, "the failing anchor to be in flight", || {
        s.cadence("n", "fast").is_some_and(|c| c.in_flight).then_some(())
    });
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:new\", every: \"1s\"}\n",
    );
    // The old run fails (exit 75) after the change; the cadence then anchors on the new target.
    wait_for(LONG, "an anchor on the new target", || {
        root.receipts("n").into_iter().find(|r| r["target"] == "local:new")
    });
    let m = s.metrics();
    let new = [("namespace", "n"), ("cadence", "fast"), ("target", "local:new")];
    assert_eq!(
        metric(&m, "vmsh_anchors_failed_total", &new),
        Some(0.0),
        "the old target's failure was counted against local:new, which never failed"
    );
    assert_eq!(metric(&m, "vmsh_anchor_errors_total", &new), None, "an error class was counted against local:new");
}

#[test]
fn a_config_that_would_crash_a_naive_parser_is_rejected_and_the_service_lives_on() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    let before = wait_receipts(&root, "a", 1);
    // A multi-byte last character where the unit should be.
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:a\", every: \"1é\"}\n",
    );
    wait_for(LONG, "the rejection", || {
        (value(&s, "vmsh_config_last_reload_successful", &[]) == Some(0.0)).then_some(())
    });
    let (code, body) = s.get("/livez");
    assert_eq!(code, 200, "{body}");
    let (code, body) = s.get("/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(wait_receipts(&root, "a", before + 2) >= before + 2, "the running config keeps anchoring");
    let errors = s.health().last_reload().errors.clone();
    assert!(errors.iter().any(|e| e.contains("cadence.fast.every")), "{errors:?}");
}

#[test]
fn a_namespace_removed_and_added_back_mid_anchor_never_runs_twice_at_once() {
    let root = Root::new();
    let script = r#"date +%s.%N >> "$VMSH_ROOT/starts"; sleep 1.5; date +%s.%N >> "$VMSH_ROOT/ends"; echo '{}'"#;
    root.anchors(&crate::support::exec_targets(&[("slow", script)]))
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"exec:slow\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    let starts = root.path().join("starts");
    wait_for(LONG, "the first run to start", || (!crate::support::lines(&starts).is_empty()).then_some(()));
    // Remove it while the run is under way, then bring it back before the run ends.
    write_file_atomic(&ns_path(&root), "namespaces: {}\n");
    wait_for(LONG, "n to leave /health", || s.health().namespace("n").is_none().then_some(()));
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  n:\n    cadence:\n      fast: {target: \"exec:slow\", every: \"1s\"}\n",
    );
    let ends = root.path().join("ends");
    let (starts, ends) = wait_for(LONG, "three finished runs", || {
        let e = crate::support::stamps(&ends);
        (e.len() >= 3).then(|| (crate::support::stamps(&starts), e))
    });
    for i in 1..3 {
        assert!(
            starts[i] >= ends[i - 1],
            "run {i} started at {} before run {} ended at {}",
            starts[i],
            i - 1,
            ends[i - 1]
        );
    }
    s.wait_log("namespace back in the config before it stopped; carrying on");
}

#[test]
fn a_cadence_added_to_a_long_running_namespace_is_not_stale_while_it_first_runs() {
    let root = Root::new();
    let script = r#"sleep 2; echo '{}'"#;
    root.anchors(&crate::support::exec_targets(&[("slow", script)]))
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:n\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    // Stale after 2 periods + the timeout = 2 s + 1 s after a cadence is configured.
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_TIMEOUT_S", "1")]);
    wait_for(LONG, "4 s of uptime", || (s.health().uptime.unwrap_or(0.0) >= 4.0).then_some(()));
    write_file_atomic(
        &ns_path(&root),
        "namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:n\", every: \"1s\"}\n      cold: {target: \"exec:slow\", every: \"1h\"}\n",
    );
    wait_for(LONG, "the added cadence to start its first run", || {
        s.cadence("n", "cold").is_some_and(|c| c.in_flight).then_some(())
    });
    let h = s.health();
    assert_eq!(h.ns("n").status, NamespaceStatus::Ok, "{h}");
    assert_eq!(h.status, OverallStatus::Healthy, "{h}");
}

#[test]
fn sighup_applies_a_change_without_waiting_for_the_tick() {
    let root = Root::new();
    root.namespaces(ONLY_A).batch(None, "0001.json", "b1", &root_hex(1));
    // A tick of an hour: only the signal can make the supervisor look in time.
    let s = Scheduler::start_with(&root, &[("VMSH_TICK_MS", "3600000")]);
    wait_receipts(&root, "a", 1);

    write_file_atomic(&ns_path(&root), A_AND_B);
    s.signal(libc::SIGHUP);
    let r = wait_for(LONG, "a receipt of the namespace added by SIGHUP", || root.receipts("b").into_iter().next());
    assert_eq!(r["batchId"], "b1");
    assert_eq!(s.health().running_config().hash, file_sha256(&ns_path(&root)));
    assert!(s.log_with_msg("SIGHUP: checking the config files now").is_some());
    // The signal asks for a look; it is not a shutdown.
    assert_eq!(s.logs_with_msg("shutdown requested: draining").len(), 0);
}
