//! Large fleets: `/health?view=summary`, `/health/namespaces` (paged and searchable) and
//! `/health/namespaces/{name}`, against the real binary.

use std::time::Duration;

use vmsh_scheduler::health::NamespaceStatus;
use vmsh_scheduler::health::contract::{Health, NamedNamespace, NamespacesPage, Open};

use crate::support::{Root, Scheduler, exec_targets, metric, root_hex, wait_for};

const LONG: Duration = Duration::from_secs(20);

/// 30 namespaces `n00`..`n29` anchoring every second; `n07` and `n21` to a refusing target.
fn fleet() -> (Root, Scheduler) {
    let root = Root::new();
    let mut yaml = String::from("namespaces:\n");
    for i in 0..30 {
        let target = if i == 7 || i == 21 { "exec:refused" } else { "local:j" };
        yaml.push_str(&format!("  n{i:02}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"1s\"}}\n"));
    }
    root.anchors(&exec_targets(&[("refused", "exit 75")])).namespaces(&yaml).batch(None, "b.json", "b1", &root_hex(2));
    let s = Scheduler::start(&root);
    wait_for(LONG, "the two failing namespaces to back off", || {
        let h = s.health();
        let failing = h.namespaces?.values().filter(|n| n.status == Open::Known(NamespaceStatus::BackingOff)).count();
        (failing == 2).then_some(())
    });
    (root, s)
}

fn json<T: serde::de::DeserializeOwned>(s: &Scheduler, path: &str) -> (u16, T) {
    let (code, body) = s.get(path);
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} ({code}): {e}\n{body}"));
    (code, value)
}

fn names(list: &[NamedNamespace]) -> Vec<&str> {
    list.iter().map(|n| n.name.as_str()).collect()
}

#[test]
fn the_summary_counts_namespaces_by_status_and_lists_the_worst_without_every_namespace() {
    let (_root, s) = fleet();
    let (code, summary): (u16, Health) = json(&s, "/health?view=summary");
    assert_eq!(code, 200);
    assert!(summary.namespaces.is_none(), "a summary does not list every namespace");
    let sum = summary.summary.expect("a summary");
    assert_eq!(sum.namespaces, 30);
    assert_eq!(sum.by_status.get("backing_off"), Some(&2), "{:?}", sum.by_status);
    assert_eq!(sum.by_status.get("ok"), Some(&28), "{:?}", sum.by_status);
    assert_eq!(names(&sum.worst), ["n07", "n21"], "only the namespaces in trouble, worst first");
    assert!(sum.worst[0].namespace.cadence("fast").is_some_and(|c| c.last_error.is_some()));
    // The overall status is judged on every namespace, as in the whole document.
    let (_, full): (u16, Health) = json(&s, "/health");
    assert_eq!(summary.status, full.status);
    assert_eq!(full.namespaces.map(|n| n.len()), Some(30), "the whole document is unchanged");
    assert_eq!(s.get("/health?view=everything").0, 400);
}

#[test]
fn namespaces_are_paged_in_name_order_searchable_by_name_and_status_and_readable_one_by_one() {
    let (_root, s) = fleet();
    let (code, page): (u16, NamespacesPage) = json(&s, "/health/namespaces?limit=10");
    assert_eq!((code, page.total, page.offset, page.limit), (200, 30, 0, 10));
    assert_eq!(names(&page.namespaces), (0..10).map(|i| format!("n{i:02}")).collect::<Vec<_>>());
    let (_, page): (u16, NamespacesPage) = json(&s, "/health/namespaces?offset=25&limit=10");
    assert_eq!(names(&page.namespaces), ["n25", "n26", "n27", "n28", "n29"]);
    let (_, page): (u16, NamespacesPage) = json(&s, "/health/namespaces?q=N2");
    assert_eq!(page.total, 10, "case-insensitive: n20..n29");
    let (_, page): (u16, NamespacesPage) = json(&s, "/health/namespaces?status=backing_off");
    assert_eq!(names(&page.namespaces), ["n07", "n21"]);
    let (code, one): (u16, NamedNamespace) = json(&s, "/health/namespaces/n07");
    assert_eq!((code, one.name.as_str()), (200, "n07"));
    assert_eq!(one.namespace.status, Open::Known(NamespaceStatus::BackingOff));
    assert_eq!(s.get("/health/namespaces/nope").0, 404);
    for bad in ["limit=0", "limit=1001", "offset=-1", "limit=ten", "status=great"] {
        assert_eq!(s.get(&format!("/health/namespaces?{bad}")).0, 400, "{bad}");
    }
    // Names from requests never become label values: the route's pattern is the label.
    let m = s.metrics();
    assert!(metric(&m, "vmsh_http_requests_total", &[("endpoint", "/health/namespaces/{name}")]).is_some(), "{m}");
    assert!(!m.contains("endpoint=\"/health/namespaces/n07\""), "a namespace became a label value");
}

#[test]
fn above_its_threshold_the_service_switches_to_fleet_mode_by_itself_and_back_and_says_so() {
    let root = Root::new();
    let yaml = |n: usize| {
        let mut yaml = String::from("namespaces:\n");
        for i in 0..n {
            let target = if i == 0 { "exec:refused" } else { "local:j" };
            yaml.push_str(&format!("  m{i}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"1s\"}}\n"));
        }
        yaml
    };
    root.anchors(&exec_targets(&[("refused", "exit 75")])).namespaces(&yaml(4)).batch(
        None,
        "b.json",
        "b1",
        &root_hex(2),
    );
    let s = Scheduler::start_with(&root, &[("VMSH_METRICS_FLEET_ABOVE", "3"), ("VMSH_METRICS_TROUBLED_MAX", "5")]);

    // Four namespaces, above three: fleet mode, said in the log, /health and /metrics.
    let said = wait_for(LONG, "fleet mode in the log", || {
        s.logs().into_iter().find(|l| l["msg"].as_str().is_some_and(|m| m.starts_with("metrics in fleet mode")))
    });
    assert_eq!((said["namespaces"].as_u64(), said["fleet_above"].as_u64()), (Some(4), Some(3)), "{said}");
    let health = wait_for(LONG, "the failing namespace in trouble", || {
        let (_, h): (u16, Health) = json(&s, "/health");
        h.metrics.as_ref().is_some_and(|m| m.troubled == 1).then_some(h)
    });
    let mode = health.metrics.clone().expect("the metrics section");
    assert_eq!((mode.mode.as_str(), mode.setting.as_str(), mode.shown, mode.troubled_max), ("fleet", "auto", 1, 5));
    assert!(health.namespaces.is_none(), "in fleet mode /health is the summary");
    assert_eq!(health.summary.as_ref().map(|s| names(&s.worst)), Some(vec!["m0"]));
    let (_, full): (u16, Health) = json(&s, "/health?view=full");
    assert_eq!(full.namespaces.map(|n| n.len()), Some(4), "?view=full lists every namespace");
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_metrics_fleet_mode", &[]), Some(1.0));
    assert!(metric(&m, "vmsh_backoff_state", &[("namespace", "m0")]).is_some(), "the namespace in trouble has series");
    assert!(!m.contains("namespace=\"m1\""), "an ok namespace has none:\n{m}");
    assert_eq!(metric(&m, "vmsh_cadences", &[("status", "ok"), ("target", "local:j")]), Some(3.0));

    // Down to two namespaces: per namespace again, said once more.
    crate::support::write_file_atomic(&root.path().join("namespaces.yaml"), &yaml(2));
    wait_for(LONG, "per-namespace metrics again in the log", || s.log_with_msg("metrics per namespace again"));
    wait_for(LONG, "every namespace's own series", || {
        let m = s.metrics();
        (metric(&m, "vmsh_metrics_fleet_mode", &[]) == Some(0.0)
            && metric(&m, "vmsh_backoff_state", &[("namespace", "m1")]).is_some())
        .then_some(())
    });
    let (_, h): (u16, Health) = json(&s, "/health");
    assert_eq!(h.namespaces.map(|n| n.len()), Some(2), "the whole document again");
}
