//! Anchoring end to end: receipts, the `local:` journal, `exec:` targets, batch sources,
//! /metrics, /health and the HTTP probes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vmsh_scheduler::health::contract::{Namespace, Open};
use vmsh_scheduler::health::{NamespaceStatus, OverallStatus};
use vmsh_scheduler::model::ErrorClass;

use crate::support::{
    HealthParts as _, Root, Scheduler, http_with_head, metric, now_ms, root_hex, wait_for, write_file_atomic,
};

const LONG: Duration = Duration::from_secs(10);

/// Whether `s` is 64 lowercase hex digits.
fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) into Unix ms;
/// `None` when it is not one. Written out here so the check does not rely on the code
/// under test.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = format!("{:0<3}", &s[start..i.min(start + 3)]);
        millis = frac.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Writes a batch atomically (hidden temporary, then rename) so the scheduler never reads
/// a half-written file.
fn batch_atomic(root: &Root, ns: Option<&str>, file: &str, id: &str, hex: &str) {
    let mut dir = root.path().join("out/batches");
    if let Some(ns) = ns {
        dir = dir.join(vmsh_scheduler::model::fsname::encode(ns));
    }
    write_file_atomic(&dir.join(file), &format!(r#"{{"id":"{id}","root":"sha256:{hex}"}}"#));
}

/// /health's entry for one namespace, once it is there.
fn ns_health(s: &Scheduler, ns: &str) -> Option<Namespace> {
    s.health().namespace(ns).cloned()
}

/// A counter or gauge value, 0 when the series does not exist.
fn value(s: &Scheduler, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&s.metrics(), name, labels).unwrap_or(0.0)
}

#[test]
fn success_writes_a_complete_receipt_matching_the_batch() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  "dao:vaultmesh":
    cadence:
      fast: {target: "local:demo", every: "1s"}
"#,
    )
    .batch(Some("dao:vaultmesh"), "0001.json", "batch-0001", &root_hex(7));
    let before = now_ms();
    let s = Scheduler::start(&root);
    let receipt =
        wait_for(LONG, "a receipt", || root.receipts("dao:vaultmesh").into_iter().next()).as_object().cloned();
    let r = receipt.expect("the receipt is a JSON object");
    let after = now_ms();

    // Every field, with the right type and content.
    for field in [
        "namespace",
        "cadence",
        "target",
        "batchId",
        "root",
        "attestation",
        "time",
        "timeMs",
        "attemptId",
        "schedulerVersion",
    ] {
        assert!(r.contains_key(field), "receipt lacks `{field}`: {r:?}");
    }
    assert_eq!(r["namespace"], "dao:vaultmesh");
    assert_eq!(r["cadence"], "fast");
    assert_eq!(r["target"], "local:demo");
    let root_field = r["root"].as_str().expect("root is a string");
    let hex = root_field.strip_prefix("sha256:").expect("root starts with sha256:");
    assert!(is_hex64(hex), "root is not sha256:<64 hex>: {root_field}");
    let attempt = r["attemptId"].as_str().expect("attemptId is a string");
    assert!(is_hex64(attempt), "attemptId is not 64 hex digits: {attempt}");
    assert_eq!(r["schedulerVersion"], vmsh_scheduler::VERSION);
    assert!(r["attestation"].is_object(), "attestation: {}", r["attestation"]);
    let time_ms = r["timeMs"].as_i64().expect("timeMs is an integer");
    assert!((before - 1000..=after + 1000).contains(&time_ms), "timeMs {time_ms} is not between {before} and {after}");
    let time = r["time"].as_str().expect("time is a string");
    assert_eq!(rfc3339_ms(time), Some(time_ms), "time {time:?} is not RFC 3339 for timeMs {time_ms}");

    // It anchors what the batch file says.
    let batch_path =
        root.path().join("out/batches").join(vmsh_scheduler::model::fsname::encode("dao:vaultmesh")).join("0001.json");
    let batch: Value = serde_json::from_slice(&std::fs::read(batch_path).expect("read batch")).expect("batch JSON");
    assert_eq!(r["batchId"], batch["id"]);
    assert_eq!(r["root"], batch["root"]);

    // It lies in out/anchors/<namespace>/ and the log names it.
    let dir = root.path().join("out/anchors").join(vmsh_scheduler::model::fsname::encode("dao:vaultmesh"));
    let files: Vec<_> = std::fs::read_dir(&dir).expect("receipt folder exists").collect();
    assert!(!files.is_empty(), "no file in {}", dir.display());
    let logged = wait_for(LONG, "the `anchored` log line", || s.log_with_msg("anchored"));
    assert_eq!(logged["attempt"], r["attemptId"]);
    let logged_path = logged["receipt"].as_str().expect("receipt path logged");
    assert!(
        std::path::Path::new(logged_path).starts_with(&dir),
        "receipt {logged_path} is not under {}",
        dir.display()
    );
}

#[test]
fn local_journal_stays_a_valid_chain_when_two_namespaces_append_concurrently() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  alpha:
    cadence:
      fast:   {target: "local:shared", every: "1s"}
      strong: {target: "local:shared", every: "1*fast"}
      cold:   {target: "local:shared", every: "1s"}
  beta:
    cadence:
      fast:   {target: "local:shared", every: "1s"}
      strong: {target: "local:shared", every: "1s"}
      cold:   {target: "local:shared", every: "1*fast"}
"#,
    )
    .batch(Some("alpha"), "0001.json", "alpha-1", &root_hex(1))
    .batch(Some("beta"), "0001.json", "beta-1", &root_hex(2));
    let _s = Scheduler::start(&root);
    let journal = root.journal("shared");
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
    wait_for(LONG, "18 journal lines (three rounds of six concurrent anchors)", || {
        (lines(&journal) >= 18).then_some(())
    });

    // Receipts first, so every receipt read refers to a line already in the journal.
    let receipts: Vec<Value> = ["alpha", "beta"].iter().flat_map(|ns| root.receipts(ns)).collect();
    let summary = vmsh_scheduler::anchor::local::verify_chain(&journal).expect("the journal's hash chain is intact");
    let entries = vmsh_scheduler::anchor::local::read_entries(&journal).expect("journal entries");
    assert_eq!(summary.lines, entries.len() as u64);

    let mut seen_ns = BTreeSet::new();
    let mut attempts = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        let (batch, hex) = match e.namespace.as_str() {
            "alpha" => ("alpha-1", root_hex(1)),
            "beta" => ("beta-1", root_hex(2)),
            other => panic!("line {} names namespace {other:?}", e.seq),
        };
        seen_ns.insert(e.namespace.clone());
        assert!(["fast", "strong", "cold"].contains(&e.cadence.as_str()), "line {}: cadence {}", e.seq, e.cadence);
        assert_eq!(e.target, "local:shared");
        assert_eq!(e.batch_id, batch, "line {}", e.seq);
        assert_eq!(e.root, format!("sha256:{hex}"), "line {}", e.seq);
        assert!(is_hex64(&e.attempt_id), "line {}: attemptId {}", e.seq, e.attempt_id);
        assert!(attempts.insert(e.attempt_id.clone()), "line {}: attempt {} appended twice", e.seq, e.attempt_id);
    }
    assert_eq!(seen_ns.len(), 2, "both namespaces appended");

    // Each receipt's attestation points at its own line of the chain.
    let raw = std::fs::read_to_string(&journal).expect("read journal");
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert!(receipts.len() >= 12, "only {} receipts", receipts.len());
    for r in &receipts {
        let att = &r["attestation"];
        let seq = att["seq"].as_u64().expect("attestation.seq");
        let idx = usize::try_from(seq - 1).expect("index");
        let entry = &entries[idx];
        assert_eq!(r["attemptId"], entry.attempt_id.as_str(), "receipt seq {seq}");
        assert_eq!(r["namespace"], entry.namespace.as_str());
        assert_eq!(att["lineHash"], vmsh_scheduler::model::digest::sha256_hex(raw_lines[idx].as_bytes()).as_str());
        assert_eq!(att["prev"], entry.prev.as_str());
    }
}

#[test]
fn exec_target_gets_the_anchor_in_its_environment_and_its_last_json_line_becomes_the_attestation() {
    let root = Root::new();
    root.anchors(
        r#"
exec:
  notary:
    command:
      - sh
      - -c
      - |
        echo "starting notary"
        echo '{"notTheLastLine": true}'
        printf '{"namespace":"%s","cadence":"%s","target":"%s","batchId":"%s","root":"%s","attemptId":"%s"}\n' \
          "$VMSH_NAMESPACE" "$VMSH_CADENCE" "$VMSH_TARGET" "$VMSH_BATCH_ID" "$VMSH_BATCH_ROOT" "$VMSH_ATTEMPT_ID"
"#,
    )
    .namespaces(
        r#"
namespaces:
  "ns:exec":
    cadence:
      fast: {target: "local:unused", every: "1h"}
      cold: {target: "exec:notary", every: "1s"}
"#,
    )
    .batch(Some("ns:exec"), "0001.json", "exec-batch", &root_hex(9));
    let _s = Scheduler::start(&root);
    let r = wait_for(LONG, "a receipt of the exec cadence", || {
        root.receipts("ns:exec").into_iter().find(|r| r["cadence"] == "cold")
    });
    let att = &r["attestation"];
    let expected = serde_json::json!({
        "namespace": "ns:exec",
        "cadence": "cold",
        "target": "exec:notary",
        "batchId": "exec-batch",
        "root": format!("sha256:{}", root_hex(9)),
        "attemptId": r["attemptId"],
    });
    assert_eq!(att, &expected, "the command's last stdout line, as seen with its environment");
    assert!(is_hex64(att["attemptId"].as_str().unwrap_or_default()), "VMSH_ATTEMPT_ID: {}", att["attemptId"]);
    assert_eq!(r["target"], "exec:notary");
    assert_eq!(r["batchId"], "exec-batch");
}

#[test]
fn no_batch_skips_quietly_until_a_batch_appears() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  idle:
    cadence:
      fast: {target: "local:idle", every: "1s"}
"#,
    );
    // With a 1 s timeout a failing 1 s cadence would be stale after 3 s; a waiting one is not.
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_TIMEOUT_S", "1")]);
    let labels = [("namespace", "idle"), ("cadence", "fast")];
    // The cadence keeps looking for a batch (every tick) for over 3.5 s; the wait counts as
    // one skip, not one per look.
    wait_for(LONG, "a no-batch skip", || {
        let m = s.metrics();
        metric(&m, "vmsh_anchors_skipped_total", &[("namespace", "idle"), ("reason", "no_batch")]).filter(|n| *n >= 1.0)
    });
    wait_for(LONG, "3.5 s of uptime", || (s.health().uptime.unwrap_or(0.0) >= 3.5).then_some(()));
    let m = s.metrics();
    assert_eq!(
        metric(&m, "vmsh_anchors_skipped_total", &[("namespace", "idle"), ("reason", "no_batch")]),
        Some(1.0),
        "one wait is one skip"
    );
    assert_eq!(metric(&m, "vmsh_anchors_attempted_total", &labels), Some(0.0), "attempts counted without a batch");
    assert_eq!(metric(&m, "vmsh_anchors_failed_total", &labels), Some(0.0));
    assert_eq!(metric(&m, "vmsh_anchor_errors_total", &labels), None, "an error was counted");
    assert_eq!(metric(&m, "vmsh_backoff_state", &[("namespace", "idle")]), Some(0.0));
    let h = s.health();
    let (ns, fast) = (h.ns("idle"), h.cadence_of("idle", "fast"));
    assert_eq!(fast.waiting.as_deref(), Some("no batch"), "{ns}");
    assert_eq!(ns.status, NamespaceStatus::Ok);
    assert_eq!(ns.backoff, 0);
    assert_eq!(fast.last_error, None);
    assert_eq!(fast.failures, 0);
    assert_eq!(h.status, OverallStatus::Healthy);
    assert!(root.receipts("idle").is_empty());
    let noisy: Vec<Value> = s.logs().into_iter().filter(|l| l["level"] == "warn" || l["level"] == "error").collect();
    assert!(noisy.is_empty(), "waiting for a batch logged warnings or errors: {noisy:?}");

    batch_atomic(&root, Some("idle"), "0001.json", "late", &root_hex(4));
    let r = wait_for(LONG, "the late batch to be anchored", || root.receipts("idle").into_iter().next());
    assert_eq!(r["batchId"], "late");
    assert_eq!(r["root"], format!("sha256:{}", root_hex(4)));
    wait_for(LONG, "the cadence to stop waiting", || {
        let ns = ns_health(&s, "idle")?;
        (ns.cadence("fast")?.waiting.is_none() && ns.last_anchor.contains_key("fast")).then_some(())
    });
    assert_eq!(value(&s, "vmsh_anchors_failed_total", &labels), 0.0);
    assert!(value(&s, "vmsh_anchors_attempted_total", &labels) >= 1.0);
}

#[test]
fn malformed_batch_is_a_validation_failure_of_that_namespace_only() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  good:
    cadence:
      fast: {target: "local:good", every: "1s"}
  badjson:
    cadence:
      fast: {target: "local:bad", every: "1s"}
  badroot:
    cadence:
      fast: {target: "local:bad", every: "1s"}
"#,
    )
    .batch(Some("good"), "0001.json", "g1", &root_hex(3));
    crate::support::write_file(&root.path().join("out/batches/badjson/0001.json"), r#"{"id": "x", "root": "sha256:"#);
    crate::support::write_file(
        &root.path().join("out/batches/badroot/0001.json"),
        r#"{"id": "x", "root": "sha256:abcdef"}"#,
    );
    let s = Scheduler::start(&root);
    let good_before = wait_for(LONG, "validation errors for both bad namespaces", || {
        let m = s.metrics();
        let count = |ns: &str| {
            metric(&m, "vmsh_anchor_errors_total", &[("namespace", ns), ("cadence", "fast"), ("class", "validation")])
                .unwrap_or(0.0)
        };
        (count("badjson") >= 1.0 && count("badroot") >= 1.0).then(|| root.receipts("good").len())
    });
    wait_for(LONG, "the good namespace to anchor twice more", || {
        (root.receipts("good").len() >= good_before + 2).then_some(())
    });

    let h = s.health();
    for (ns, hint) in [("badjson", "not a valid batch"), ("badroot", "64 hex")] {
        let n = h.ns(ns);
        assert!(n.backoff > 0, "{ns}: backoff {}", n.backoff);
        assert_eq!(n.status, NamespaceStatus::BackingOff, "{ns}: {n}");
        let err = h.cadence_of(ns, "fast").last_error.as_ref().unwrap_or_else(|| panic!("{ns}: no lastError: {n}"));
        assert_eq!(err.class, ErrorClass::Validation, "{ns}: {err:?}");
        let msg = &err.message;
        assert!(msg.contains(hint) && msg.contains("0001.json"), "{ns}: lastError message {msg:?}");
        assert!(root.receipts(ns).is_empty(), "{ns} wrote a receipt");
        assert!(value(&s, "vmsh_backoff_state", &[("namespace", ns)]) > 0.0);
        assert!(value(&s, "vmsh_anchors_failed_total", &[("namespace", ns)]) >= 1.0);
    }
    let good = h.ns("good");
    assert_eq!(good.status, NamespaceStatus::Ok, "{good}");
    assert_eq!(good.backoff, 0);
    assert_eq!(h.cadence_of("good", "fast").last_error, None);
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_anchors_failed_total", &[("namespace", "good")]), Some(0.0));
    assert_eq!(metric(&m, "vmsh_anchor_errors_total", &[("namespace", "good")]), None);
    assert_eq!(h.status, OverallStatus::Degraded);
}

#[test]
fn shared_batch_folder_is_used_without_a_namespace_folder_and_the_lexically_last_file_wins() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  shared-user:
    cadence:
      fast: {target: "local:j", every: "1s"}
  own-folder:
    cadence:
      fast: {target: "local:j", every: "1s"}
"#,
    )
    // Lexically "9.json" > "10.json" > "0010.json"; a `.tmp` file is not a batch.
    .batch(None, "0010.json", "zero-ten", &root_hex(10))
    .batch(None, "10.json", "ten", &root_hex(11))
    .batch(None, "9.json", "nine", &root_hex(9))
    .batch(Some("own-folder"), "0001.json", "own", &root_hex(1));
    crate::support::write_file(&root.path().join("out/batches/z.json.tmp"), "not a batch");
    let _s = Scheduler::start(&root);
    let r = wait_for(LONG, "a receipt from the shared folder", || root.receipts("shared-user").into_iter().next());
    assert_eq!(r["batchId"], "nine", "the lexically last shared file wins");
    assert_eq!(r["root"], format!("sha256:{}", root_hex(9)));
    let own =
        wait_for(LONG, "a receipt from the namespace's own folder", || root.receipts("own-folder").into_iter().next());
    assert_eq!(own["batchId"], "own", "a namespace folder takes precedence over the shared one");

    // A newer (lexically later) shared file is picked up by the next anchor.
    batch_atomic(&root, None, "95.json", "ninety-five", &root_hex(95));
    let newer = wait_for(LONG, "the newer shared batch to be anchored", || {
        root.receipts("shared-user").into_iter().find(|r| r["batchId"] == "ninety-five")
    });
    assert_eq!(newer["root"], format!("sha256:{}", root_hex(95)));
    assert!(root.receipts("own-folder").iter().all(|r| r["batchId"] == "own"));
}

/// A namespace name that needs escaping in label values, JSON and file names.
const ODD: &str = r#"we"ird\ns, {x="y"} ü"#;

/// Starts a scheduler with one succeeding, one always failing (network), one batch-less and one
/// oddly named namespace, and waits until each has produced its series.
fn start_mixed(root: &Root) -> Scheduler {
    root.anchors("exec:\n  down: {command: [\"sh\", \"-c\", \"echo 'connection refused' >&2; exit 75\"]}\n")
        .namespaces(
            r#"
namespaces:
  ok:
    cadence:
      fast: {target: "local:ok", every: "1s"}
  failing:
    cadence:
      fast: {target: "exec:down", every: "1s"}
  empty:
    cadence:
      fast: {target: "local:empty", every: "1s"}
  'we"ird\ns, {x="y"} ü':
    cadence:
      fast: {target: 'local:a"b\c', every: "1s"}
"#,
        )
        .batch(Some("ok"), "0001.json", "b1", &root_hex(1))
        .batch(Some("failing"), "0001.json", "b2", &root_hex(2))
        .batch(None, "0001.json", "shared", &root_hex(3));
    std::fs::create_dir_all(root.path().join("out/batches/empty")).expect("mkdir");
    let s = Scheduler::start(root);
    wait_for(LONG, "a success, a failure and a skip", || {
        let m = s.metrics();
        let ok = metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", "ok")]).unwrap_or(0.0) >= 1.0;
        let failed = metric(&m, "vmsh_anchors_failed_total", &[("namespace", "failing")]).unwrap_or(0.0) >= 1.0;
        let skipped = metric(&m, "vmsh_anchors_skipped_total", &[("namespace", "empty")]).unwrap_or(0.0) >= 1.0;
        (ok && failed && skipped && !root.receipts(ODD).is_empty()).then_some(())
    });
    s
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses every sample, and the `# TYPE` of every family.
fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad sample value in {line:?}"));
        let (name, mut rest) = match series.split_once('{') {
            Some((n, r)) => (n, r.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        let mut labels = BTreeMap::new();
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label has =\"");
            let mut v = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("label value ends") {
                    (_, '\\') => match chars.next().expect("escaped char").1 {
                        'n' => v.push('\n'),
                        c => v.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => v.push(c),
                }
            };
            labels.insert(key.to_string(), v);
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    (samples, types)
}

#[test]
fn metrics_expose_every_documented_series_with_their_labels() {
    let root = Root::new();
    let s = start_mixed(&root);
    let (code, _) = s.get("/health");
    assert!(code == 200 || code == 503);
    let health = s.health();
    let text = s.metrics();
    let (samples, types) = parse_exposition(&text);

    const NCT: &[&str] = &["namespace", "cadence", "target"];
    let families: &[(&str, &str, &[&str])] = &[
        ("vmsh_anchors_attempted_total", "counter", NCT),
        ("vmsh_anchors_succeeded_total", "counter", NCT),
        ("vmsh_anchors_failed_total", "counter", NCT),
        ("vmsh_anchor_errors_total", "counter", &["namespace", "cadence", "target", "class"]),
        ("vmsh_anchors_skipped_total", "counter", &["namespace", "cadence", "reason"]),
        ("vmsh_anchor_duration_seconds", "histogram", &["namespace", "cadence", "target", "status"]),
        ("vmsh_backoff_state", "gauge", &["namespace"]),
        ("vmsh_last_success_timestamp_seconds", "gauge", &["namespace", "cadence"]),
        ("vmsh_next_due_timestamp_seconds", "gauge", &["namespace", "cadence"]),
        ("vmsh_schedule_lag_seconds", "histogram", &["cadence"]),
        ("vmsh_anchors_in_flight", "gauge", &[]),
        ("vmsh_anchor_queue_depth", "gauge", &[]),
        ("vmsh_config_reloads_total", "counter", &["result"]),
        ("vmsh_config_last_reload_successful", "gauge", &[]),
        ("vmsh_config_last_reload_timestamp_seconds", "gauge", &[]),
        ("vmsh_namespaces", "gauge", &[]),
        ("vmsh_build_info", "gauge", &["version"]),
        ("vmsh_config_info", "gauge", &["hash"]),
        ("vmsh_state_writes_total", "counter", &["result"]),
        ("vmsh_state_write_duration_seconds", "histogram", &[]),
        ("vmsh_http_requests_total", "counter", &["endpoint", "method", "status"]),
    ];
    for (family, kind, labels) in families {
        assert_eq!(types.get(*family).map(String::as_str), Some(*kind), "# TYPE of {family}");
        let names: Vec<String> = if *kind == "histogram" {
            vec![format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")]
        } else {
            vec![family.to_string()]
        };
        for name in &names {
            let of: Vec<&Sample> = samples.iter().filter(|x| &x.name == name).collect();
            assert!(!of.is_empty(), "no sample of {name}");
            let mut want: BTreeSet<&str> = labels.iter().copied().collect();
            if name.ends_with("_bucket") {
                want.insert("le");
            }
            for x in of {
                let got: BTreeSet<&str> = x.labels.keys().map(String::as_str).collect();
                assert_eq!(got, want, "labels of {name}: {:?}", x.labels);
            }
        }
    }
    let get = |name: &str, want: &[(&str, &str)]| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|x| x.name == name && want.iter().all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect()
    };
    let one = |name: &str, want: &[(&str, &str)]| -> f64 {
        let found = get(name, want);
        assert_eq!(found.len(), 1, "{name}{want:?}: {found:?}");
        found[0].value
    };

    let ok = [("namespace", "ok"), ("cadence", "fast"), ("target", "local:ok")];
    let failing = [("namespace", "failing"), ("cadence", "fast"), ("target", "exec:down")];
    assert!(one("vmsh_anchors_attempted_total", &ok) >= 1.0);
    assert!(one("vmsh_anchors_succeeded_total", &ok) >= 1.0);
    assert_eq!(one("vmsh_anchors_failed_total", &ok), 0.0);
    assert!(one("vmsh_anchors_failed_total", &failing) >= 1.0);
    assert!(one("vmsh_anchor_errors_total", &[("namespace", "failing"), ("class", "network")]) >= 1.0);
    assert!(
        one("vmsh_anchors_skipped_total", &[("namespace", "empty"), ("cadence", "fast"), ("reason", "no_batch")])
            >= 1.0
    );
    assert_eq!(one("vmsh_backoff_state", &[("namespace", "ok")]), 0.0);
    assert!(one("vmsh_backoff_state", &[("namespace", "failing")]) >= 1.0);
    assert_eq!(one("vmsh_backoff_state", &[("namespace", "empty")]), 0.0);

    // Duration buckets: exactly 10 ms to 10 min, cumulative, per status.
    let want_le =
        ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "300", "600", "+Inf"];
    for (labels, status) in [(&ok, "success"), (&failing, "failure")] {
        let mut sel: Vec<(&str, &str)> = labels.to_vec();
        sel.push(("status", status));
        let buckets = get("vmsh_anchor_duration_seconds_bucket", &sel);
        let les: Vec<&str> = buckets.iter().map(|b| b.labels["le"].as_str()).collect();
        assert_eq!(les, want_le, "duration buckets for {status}");
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "buckets are not cumulative");
        let count = one("vmsh_anchor_duration_seconds_count", &sel);
        assert!(count >= 1.0);
        assert_eq!(buckets.last().map(|b| b.value), Some(count));
    }
    let last = one("vmsh_last_success_timestamp_seconds", &[("namespace", "ok"), ("cadence", "fast")]);
    let now_s = now_ms() as f64 / 1000.0;
    assert!((now_s - 60.0..=now_s + 1.0).contains(&last), "last success {last} is not about now ({now_s})");
    assert!(one("vmsh_next_due_timestamp_seconds", &[("namespace", "ok"), ("cadence", "fast")]) >= last);
    assert!(one("vmsh_schedule_lag_seconds_count", &[("cadence", "fast")]) >= 1.0);
    assert_eq!(one("vmsh_config_reloads_total", &[("result", "success")]), 0.0);
    assert_eq!(one("vmsh_config_reloads_total", &[("result", "failure")]), 0.0);
    assert_eq!(one("vmsh_config_last_reload_successful", &[]), 1.0);
    assert_eq!(one("vmsh_namespaces", &[]), 4.0);
    // Label values are escaped so that they read back exactly.
    let odd = [("namespace", ODD), ("cadence", "fast"), ("target", r#"local:a"b\c"#)];
    assert!(one("vmsh_anchors_succeeded_total", &odd) >= 1.0, "the odd namespace's series");
    assert_eq!(one("vmsh_build_info", &[("version", vmsh_scheduler::VERSION)]), 1.0);
    let config_info = get("vmsh_config_info", &[]);
    assert_eq!(config_info.len(), 1, "{config_info:?}");
    assert_eq!(config_info[0].value, 1.0);
    let hash = health.config.as_ref().map(|c| c.hash.as_str()).expect("/health config.hash");
    assert_eq!(config_info[0].labels["hash"], hash, "vmsh_config_info{{hash}} vs /health config.hash");
    assert_eq!(hash, crate::support::file_sha256(&root.path().join("namespaces.yaml")));
    assert!(one("vmsh_state_writes_total", &[("result", "success")]) >= 1.0);
    assert!(one("vmsh_http_requests_total", &[("endpoint", "/health"), ("method", "GET")]) >= 1.0);
}

#[test]
fn promtool_accepts_the_metrics_page() {
    let root = Root::new();
    let s = start_mixed(&root);
    // Also put the HTTP series for an unknown path and a rejected method on the page.
    assert_eq!(s.get("/no-such-page").0, 404);
    assert_eq!(http_with_head(s.addr, "POST", "/health").0, 405);
    let body = s.metrics();
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool not found: run scripts/install-test-deps.sh (installs Debian's prometheus package)")
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool finished");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- page ---\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn health_keeps_the_original_service_shape() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  "dao:vaultmesh":
    cadence:
      fast: {target: "local:demo", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_for(LONG, "a first anchor in /health", || {
        ns_health(&s, "dao:vaultmesh")?.last_anchor.contains_key("fast").then_some(())
    });
    let (code, h) = s.health_answer();
    assert_eq!(code, 200, "{h}");
    let now = now_ms();
    assert!(matches!(h.status, Open::Known(_)), "{h}");
    assert_eq!(h.status, OverallStatus::Healthy);
    let uptime = h.uptime.expect("uptime is a number");
    assert!((0.0..60.0).contains(&uptime), "uptime {uptime}");
    let last_tick = h.last_tick.expect("lastTick is an integer (ms)");
    assert!((now - 5_000..=now + 1_000).contains(&last_tick), "lastTick {last_tick} is not ms near {now}");
    let ns = h.ns("dao:vaultmesh");
    let last = *ns.last_anchor.get("fast").expect("lastAnchor.fast");
    assert!((now / 1000 - 60..=now / 1000 + 1).contains(&last), "lastAnchor.fast {last} is not epoch seconds");
    assert_eq!(ns.last_anchor.len(), 1, "only cadences that anchored: {ns}");
    assert_eq!(ns.backoff, 0);
    assert_eq!(ns.status, NamespaceStatus::Ok);
}

#[test]
fn an_always_failing_sole_namespace_becomes_stale_and_the_service_unhealthy_with_503() {
    let root = Root::new();
    root.anchors("exec:\n  down: {command: [\"sh\", \"-c\", \"exit 75\"]}\n")
        .namespaces(
            r#"
namespaces:
  doomed:
    cadence:
      fast: {target: "exec:down", every: "1s"}
"#,
        )
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_TIMEOUT_S", "1")]);
    // First it is backing off (failing, not yet two periods plus a timeout without success).
    let (code, h) = wait_for(LONG, "status backing_off", || {
        let (code, h) = s.health_answer();
        h.namespace("doomed").is_some_and(|n| n.status == NamespaceStatus::BackingOff).then_some((code, h))
    });
    assert_eq!(code, 200);
    assert_eq!(h.status, OverallStatus::Degraded);
    let ns = h.ns("doomed");
    assert!(ns.backoff >= 1, "{ns}");
    assert!(ns.last_anchor.is_empty(), "{ns}");
    let class = h.cadence_of("doomed", "fast").last_error.as_ref().map(|e| &e.class);
    assert_eq!(class, Some(&ErrorClass::Network.into()));
    // Then, 2 × 1 s + 1 s after it was configured, it is stale and so is the whole service.
    let (code, h) = wait_for(LONG, "status stale", || {
        let (code, h) = s.health_answer();
        h.namespace("doomed").is_some_and(|n| n.status == NamespaceStatus::Stale).then_some((code, h))
    });
    assert_eq!(h.status, OverallStatus::Unhealthy, "{h}");
    assert_eq!(code, 503);
    assert!(h.uptime.unwrap_or(0.0) >= 3.0, "stale too early: uptime {:?}", h.uptime);
}

#[test]
fn a_stale_namespace_beside_a_healthy_one_degrades_the_service_but_answers_200() {
    let root = Root::new();
    root.anchors("exec:\n  down: {command: [\"sh\", \"-c\", \"exit 75\"]}\n")
        .namespaces(
            r#"
namespaces:
  doomed:
    cadence:
      fast: {target: "exec:down", every: "1s"}
  fine:
    cadence:
      fast: {target: "local:fine", every: "1s"}
"#,
        )
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_TIMEOUT_S", "1")]);
    let (code, h) = wait_for(LONG, "doomed to be stale", || {
        let (code, h) = s.health_answer();
        h.namespace("doomed").is_some_and(|n| n.status == NamespaceStatus::Stale).then_some((code, h))
    });
    assert_eq!(h.ns("fine").status, NamespaceStatus::Ok);
    assert_eq!(h.status, OverallStatus::Degraded);
    assert_eq!(code, 200);
}

#[test]
fn probes_answer_json_and_unknown_paths_and_methods_are_rejected() {
    let root = Root::new();
    root.namespaces("namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:a\", every: \"1s\"}\n");
    let s = Scheduler::start(&root);
    for (path, key) in [("/livez", "live"), ("/readyz", "ready")] {
        let (code, head, body) = http_with_head(s.addr, "GET", path);
        assert_eq!(code, 200, "{path}: {body}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{path}: {head}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"));
        assert_eq!(v[key], true, "{path}: {v}");
    }
    let (code, _, body) = http_with_head(s.addr, "GET", "/no/such/path");
    assert_eq!(code, 404, "{body}");
    let (code, _, _) = http_with_head(s.addr, "POST", "/health");
    assert_eq!(code, 405);
    let (code, _, _) = http_with_head(s.addr, "GET", "/health");
    assert_eq!(code, 200);
}
