//! Process lifecycle: graceful and forced shutdown, resuming from state (current and legacy
//! formats), crash recovery, and the shape of the logs.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmsh_scheduler::anchor::local::{read_entries, verify_chain};
use vmsh_scheduler::health::NamespaceStatus;
use vmsh_scheduler::health::contract::Health;

use crate::support::proc::{blocked_on_a_fifo, bytes_read, is_dead};
use crate::support::report::report;
use crate::support::{
    HealthParts as _, Root, Scheduler, base_env, command, exec_targets, lines, metric, now_ms, root_hex, wait_for,
    wait_ticking, write_file,
};

fn one_namespace(root: &Root, ns: &str, target: &str, every: &str) {
    root.namespaces(&format!(
        "namespaces:\n  {ns}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"{every}\"}}\n"
    ))
    .batch(None, "0001.json", "b1", &root_hex(1));
}

fn stop(s: &mut Scheduler) {
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "stderr: {}", s.stderr());
}

/// The health document once it lists `ns`.
fn health_with(s: &Scheduler, ns: &str) -> Health {
    wait_for(Duration::from_secs(5), "the namespace in /health", || {
        let h = s.health();
        h.namespace(ns).is_some().then_some(h)
    })
}

#[test]
fn sigterm_waits_for_a_running_anchor_within_the_grace_period() {
    let root = Root::new();
    let script = r#"echo started > "$VMSH_ROOT/started"; sleep 1.5; echo '{"slow": true}'"#;
    root.anchors(&exec_targets(&[("slow", script)]));
    one_namespace(&root, "lc:drain", "exec:slow", "1h");
    let mut s = Scheduler::start(&root);
    assert_eq!(s.get("/readyz").0, 200);
    let started = root.path().join("started");
    wait_for(Duration::from_secs(10), "the anchor to start", || started.exists().then_some(()));

    s.signal(libc::SIGTERM);
    let (code, body) = wait_for(Duration::from_secs(1), "/readyz to turn 503", || {
        let r = s.get("/readyz");
        (r.0 == 503).then_some(r)
    });
    assert!(root.receipts("lc:drain").is_empty(), "/readyz must turn 503 while the anchor still runs");
    assert_eq!(code, 503);
    assert!(body.contains("shutting down"), "{body}");
    assert!(s.health().draining);

    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {}", s.stderr());
    let receipts = root.receipts("lc:drain");
    assert_eq!(receipts.len(), 1, "the running anchor finishes during the drain");
    assert_eq!(receipts[0]["attestation"]["slow"], true);
    s.wait_log("anchored");
    let fast = &root.state()["namespaces"]["lc:drain"]["cadences"]["fast"];
    assert!(fast["lastSuccessMs"].is_i64(), "state written at shutdown: {fast}");
    assert!(fast.get("attempt").is_none(), "{fast}");
    assert_eq!(fast["lastBatch"]["id"], "b1");
}

#[test]
fn an_anchor_outlasting_the_grace_is_killed_with_its_group_and_resumed_with_the_same_attempt_id() {
    let root = Root::new();
    // First run: record the shell's and its background sleep's pids, then hang. Later runs succeed.
    let script = r#"
n=$(cat "$VMSH_ROOT/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$VMSH_ROOT/count"
echo "$VMSH_ATTEMPT_ID" >> "$VMSH_ROOT/ids"
if [ "$n" -eq 1 ]; then
  echo $$ > "$VMSH_ROOT/shell.pid"
  sleep 30 &
  echo $! > "$VMSH_ROOT/sleep.pid"
  wait
fi
exit 0
"#;
    root.anchors(&exec_targets(&[("hang", script)]));
    one_namespace(&root, "lc:grace", "exec:hang", "1h");
    let mut s = Scheduler::start_with(&root, &[("VMSH_SHUTDOWN_GRACE_S", "1")]);
    let sleep_pid = root.path().join("sleep.pid");
    wait_for(Duration::from_secs(10), "the hanging anchor", || (!lines(&sleep_pid).is_empty()).then_some(()));
    let pids = [lines(&root.path().join("shell.pid"))[0].clone(), lines(&sleep_pid)[0].clone()];
    assert!(pids.iter().all(|p| !is_dead(p)), "the anchor's processes run before the shutdown");

    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "stderr: {}", s.stderr());
    assert!(took >= Duration::from_secs(1), "exited after {took:?}, before the 1 s grace");
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    s.wait_log("grace period over: cancelling running anchors");
    for pid in &pids {
        wait_for(Duration::from_secs(5), &format!("process {pid} of the anchor's group to die"), || {
            is_dead(pid).then_some(())
        });
    }
    let id = lines(&root.path().join("ids"))[0].clone();
    let attempt = root.state()["namespaces"]["lc:grace"]["cadences"]["fast"]["attempt"].clone();
    assert_eq!(attempt["status"], "interrupted", "{attempt}");
    assert_eq!(attempt["id"], id.as_str(), "{attempt}");
    assert!(root.receipts("lc:grace").is_empty());
    drop(s);

    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(5), "the resume log line", || {
        s.log_with_msg("resuming an attempt interrupted by the last shutdown or crash")
            .filter(|l| l["ns"] == "lc:grace")
    });
    let receipt = wait_for(Duration::from_secs(10), "the resumed anchor's receipt", || {
        root.receipts("lc:grace").into_iter().next()
    });
    let ids = lines(&root.path().join("ids"));
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[1], id, "the resumed run gets the same VMSH_ATTEMPT_ID");
    assert_eq!(receipt["attemptId"], id.as_str());
    stop(&mut s);
    let fast = &root.state()["namespaces"]["lc:grace"]["cadences"]["fast"];
    assert!(fast.get("attempt").is_none() && fast["lastSuccessMs"].is_i64(), "{fast}");
}

#[test]
fn a_restart_resumes_from_state_without_anchoring_what_is_not_due() {
    let root = Root::new();
    one_namespace(&root, "lc:resume", "local:demo", "1h");
    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(10), "the first anchor", || (!root.receipts("lc:resume").is_empty()).then_some(()));
    stop(&mut s);
    let last = root.state()["namespaces"]["lc:resume"]["cadences"]["fast"]["lastSuccessMs"]
        .as_i64()
        .expect("lastSuccessMs recorded");
    drop(s);

    let s = Scheduler::start(&root);
    // Two seconds of ticks (20 ticks at 100 ms) with nothing due.
    wait_ticking(&s, 2_000, Duration::from_secs(10));
    assert_eq!(root.receipts("lc:resume").len(), 1, "nothing is due for an hour");
    assert_eq!(read_entries(&root.journal("demo")).expect("journal").len(), 1);
    let attempted =
        metric(&s.metrics(), "vmsh_anchors_attempted_total", &[("namespace", "lc:resume"), ("cadence", "fast")])
            .unwrap_or(0.0);
    assert_eq!(attempted, 0.0);
    let h = health_with(&s, "lc:resume");
    let fast = h.cadence_of("lc:resume", "fast");
    assert_eq!(fast.last_success_ms, Some(last), "{h}");
    let next = fast.next_due_ms.unwrap_or_else(|| panic!("no nextDueMs: {h}"));
    assert!((next - (last + 3_600_000)).abs() <= 1_000, "nextDueMs {next} should be lastSuccessMs {last} + 1 h");
    assert_eq!(h.ns("lc:resume").status, NamespaceStatus::Ok);
}

#[test]
fn after_downtime_a_missed_cadence_runs_once_then_one_period_later() {
    let root = Root::new();
    one_namespace(&root, "lc:missed", "local:demo", "2s");
    // Last success ten periods ago, in the current state format.
    let old = now_ms() - 10 * 2_000;
    let state = json!({"version": 1, "namespaces": {"lc:missed": {"cadences": {"fast": {
        "lastSuccessMs": old, "lastBatch": {"id": "b0", "root": format!("sha256:{}", root_hex(9))},
        "backoff": 0, "failures": 0}}}}});
    root.write_state(&state);
    let s = Scheduler::start(&root);
    // Measured from when the scheduler is up, so a slow process start does not count.
    let started = now_ms();
    let journal = root.journal("demo");
    let entries =
        wait_for(Duration::from_secs(10), "two anchors", || read_entries(&journal).ok().filter(|e| e.len() >= 2));
    let delay = entries[0].time_ms - started;
    assert!(delay <= 1_000, "the missed cadence runs promptly after start, not {delay} ms later");
    // Not at once (a replay of missed periods) and not two periods later; the upper slack
    // absorbs timer delays on a loaded machine.
    let gap = entries[1].time_ms - entries[0].time_ms;
    assert!((1_900..=3_500).contains(&gap), "the second anchor comes one period (2 s) after the first, not {gap} ms");
    assert_ne!(entries[0].attempt_id, entries[1].attempt_id);
    // The journal line is written before the result is logged; wait for the second log line.
    let anchored = wait_for(Duration::from_secs(5), "the second anchored log line", || {
        let n = s.logs_with_msg("anchored").len();
        (n >= 2).then_some(n)
    });
    assert_eq!(anchored, 2, "exactly two anchors so far");
}

#[test]
fn the_original_services_state_file_is_migrated() {
    let root = Root::new();
    one_namespace(&root, "dao:vaultmesh", "local:demo", "1h");
    let legacy_s = now_ms() / 1000 - 10;
    write_file(
        &root.state_path(),
        &json!({"dao:vaultmesh": {"last": {"fast": legacy_s, "strong": null}, "backoff": 0}}).to_string(),
    );
    let mut s = Scheduler::start(&root);
    s.wait_log("migrated the original service's state file");
    wait_ticking(&s, 1_500, Duration::from_secs(10));
    assert!(root.receipts("dao:vaultmesh").is_empty(), "anchored 10 s ago with every 1h: nothing is due");
    let h = health_with(&s, "dao:vaultmesh");
    assert_eq!(h.state.as_ref().map(|st| st.origin.as_str()), Some("migrated"), "{h}");
    let ns = h.ns("dao:vaultmesh");
    assert_eq!(ns.last_anchor.get("fast"), Some(&legacy_s), "{h}");
    assert_eq!(ns.status, NamespaceStatus::Ok, "{h}");
    let next = h.cadence_of("dao:vaultmesh", "fast").next_due_ms.unwrap_or_else(|| panic!("no nextDueMs: {h}"));
    assert!((next - (legacy_s * 1000 + 3_600_000)).abs() <= 1_000, "nextDueMs {next}");
    // On shutdown the state is written back in the current format.
    stop(&mut s);
    let state = root.state();
    assert_eq!(state["version"], 1, "{state}");
    assert_eq!(state["namespaces"]["dao:vaultmesh"]["cadences"]["fast"]["lastSuccessMs"], legacy_s * 1000, "{state}");
}

#[test]
fn a_crash_between_sending_and_recording_is_recovered_without_a_second_journal_line() {
    let root = Root::new();
    one_namespace(&root, "lc:crash", "local:demo", "1h");
    let mut s = Scheduler::start(&root);
    let journal = root.journal("demo");
    let entry = wait_for(Duration::from_secs(10), "a journal line", || {
        read_entries(&journal).ok().and_then(|e| e.into_iter().next())
    });
    s.kill9();
    drop(s);
    // As if the process died after the journal append but before recording the success.
    let state = json!({"version": 1, "namespaces": {"lc:crash": {"cadences": {"fast": {
        "backoff": 0, "failures": 0,
        "attempt": {"id": entry.attempt_id, "target": "local:demo",
                    "batch": {"id": entry.batch_id, "root": entry.root},
                    "nominalDueMs": 0, "startedMs": entry.time_ms, "status": "started"}}}}}});
    root.write_state(&state);

    let s = Scheduler::start(&root);
    let anchored = wait_for(Duration::from_secs(10), "the recovered anchor", || s.log_with_msg("anchored"));
    assert_eq!(anchored["recovered"], true, "{anchored}");
    assert_eq!(anchored["attempt"], entry.attempt_id.as_str(), "{anchored}");
    s.wait_log("resuming an attempt interrupted by the last shutdown or crash");
    wait_ticking(&s, 1_000, Duration::from_secs(10));
    let entries = read_entries(&journal).expect("journal");
    assert_eq!(entries.len(), 1, "the journal must not get a second line for the attempt: {entries:?}");
    assert_eq!(verify_chain(&journal).expect("chain").lines, 1);
    let fast = wait_for(Duration::from_secs(5), "the recovery in the state file", || {
        let fast = root.state()["namespaces"]["lc:crash"]["cadences"]["fast"].clone();
        fast["lastSuccessMs"].is_i64().then_some(fast)
    });
    assert!(fast.get("attempt").is_none(), "{fast}");
    assert_eq!(fast["lastBatch"]["id"], entry.batch_id.as_str());
}

#[test]
fn a_crash_after_the_receipt_but_before_recording_the_success_does_not_run_an_exec_command_again() {
    let root = Root::new();
    let runs = root.path().join("runs");
    let script = format!("echo \"$VMSH_ATTEMPT_ID\" >> {}; echo '{{\"ok\": true}}'", runs.display());
    one_namespace(&root, "lc:exec", "exec:count", "1h");
    root.anchors(&exec_targets(&[("count", script.as_str())]));
    let mut s = Scheduler::start(&root);
    let receipt = wait_for(Duration::from_secs(10), "a receipt", || root.receipts("lc:exec").into_iter().next());
    s.kill9();
    drop(s);
    // As if the process died after the receipt was durable but before recording the success.
    let state = json!({"version": 1, "namespaces": {"lc:exec": {"cadences": {"fast": {
        "backoff": 0, "failures": 0,
        "attempt": {"id": receipt["attemptId"], "target": "exec:count",
                    "batch": {"id": receipt["batchId"], "root": receipt["root"]},
                    "nominalDueMs": 0, "startedMs": receipt["timeMs"], "status": "started"}}}}}});
    root.write_state(&state);

    let mut s = Scheduler::start(&root);
    let anchored = wait_for(Duration::from_secs(10), "the resumed anchor", || s.log_with_msg("anchored"));
    assert_eq!(anchored["recovered"], true, "{anchored}");
    assert_eq!(anchored["attempt"], receipt["attemptId"], "{anchored}");
    stop(&mut s);
    assert_eq!(lines(&runs).len(), 1, "the command ran again for an attempt whose receipt was written");
    assert_eq!(root.receipts("lc:exec"), [receipt], "one receipt for the attempt, the one written first");
}

#[test]
fn kill_9_during_steady_anchoring_never_corrupts_state_or_journals() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  k:a:
    cadence:
      fast: {target: "local:shared", every: "1s"}
  k:b:
    cadence:
      fast: {target: "local:shared", every: "1s"}
  k:c:
    cadence:
      fast: {target: "local:solo", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(3));
    let shared = root.journal("shared");
    let solo = root.journal("solo");
    let count = |p: &std::path::Path| if p.exists() { verify_chain(p).map(|c| c.lines).unwrap_or(0) } else { 0 };
    let mut seen = 0;
    for round in 0..5u64 {
        let before = count(&shared);
        let mut s = Scheduler::start(&root);
        // Kill right after a different number of appends each round, while writes are under way.
        let want = before + 1 + round % 3;
        wait_for(Duration::from_secs(10), "more anchors", || (lines(&shared).len() as u64 >= want).then_some(()));
        s.kill9();
        let (state, _) = vmsh_scheduler::storage::state::load(&root.state_path())
            .unwrap_or_else(|e| panic!("round {round}: state does not load: {e}: {}", root.state_text()));
        assert_eq!(state.version, vmsh_scheduler::storage::state::STATE_VERSION);
        for journal in [&shared, &solo] {
            if journal.exists() {
                verify_chain(journal).unwrap_or_else(|e| panic!("round {round}: {}: {e}", journal.display()));
            }
        }
        let now = count(&shared);
        assert!(now >= seen, "round {round}: the journal shrank");
        seen = now;
    }
    // A final clean run keeps extending valid chains.
    let mut s = Scheduler::start(&root);
    let target = count(&shared) + 2;
    wait_for(Duration::from_secs(10), "anchors after the last crash", || (count(&shared) >= target).then_some(()));
    stop(&mut s);
    for journal in [&shared, &solo] {
        let chain = verify_chain(journal).unwrap_or_else(|e| panic!("{}: {e}", journal.display()));
        let entries = read_entries(journal).expect("entries");
        let ids: BTreeSet<&str> = entries.iter().map(|e| e.attempt_id.as_str()).collect();
        assert_eq!(ids.len() as u64, chain.lines, "{}: an attempt was appended twice", journal.display());
    }
    // After a clean stop the state file alone holds everything: its log was folded in.
    vmsh_scheduler::storage::state::parse(&std::fs::read(root.state_path()).expect("state"))
        .expect("final state parses");
    assert!(!vmsh_scheduler::storage::state::wal::path(&root.state_path()).exists(), "a log left after a clean stop");
}

/// Whether `t` is an RFC 3339 UTC time within a minute of now.
fn recent_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    let rest = &t[19..];
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if rest != "Z" && rest != "+00:00" {
        return false;
    }
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) =
        (digits(0..4), digits(5..7), digits(8..10), digits(11..13), digits(14..16), digits(17..19))
    else {
        return false;
    };
    // Days since the epoch of a civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + s;
    (secs - now_ms() / 1000).abs() < 60
}

#[test]
fn logs_are_json_lines_with_the_documented_fields_and_respect_log_level() {
    let root = Root::new();
    one_namespace(&root, "lc:logs", "local:demo", "1h");
    let mut s = Scheduler::start(&root);
    let anchored = wait_for(Duration::from_secs(10), "an anchored line", || s.log_with_msg("anchored"));
    stop(&mut s);
    let logs = s.logs();
    assert!(logs.len() >= 3);
    for line in &logs {
        assert!(line.is_object(), "not a JSON object: {line}");
        assert!(line["time"].as_str().is_some_and(recent_rfc3339), "time: {line}");
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&line["level"].as_str().unwrap_or("")),
            "level: {line}"
        );
        assert!(line["msg"].as_str().is_some_and(|m| !m.is_empty()), "msg: {line}");
        assert_eq!(line["service"], "vmsh-scheduler", "{line}");
        assert_eq!(line["version"], env!("CARGO_PKG_VERSION"), "{line}");
    }
    assert_eq!(anchored["level"], "info");
    assert_eq!(anchored["ns"], "lc:logs");
    assert_eq!(anchored["cadence"], "fast");
    assert_eq!(anchored["target"], "local:demo");
    assert_eq!(anchored["batch"], "b1");
    let receipt = &root.receipts("lc:logs")[0];
    assert_eq!(anchored["attempt"], receipt["attemptId"]);
    assert!(logs.iter().any(|l| l["level"] == "debug"), "LOG_LEVEL=debug shows debug lines");

    // LOG_LEVEL=warn: a failing target logs warnings, and nothing below warn appears.
    let root = Root::new();
    root.anchors(&exec_targets(&[("down", "exit 75")]));
    one_namespace(&root, "lc:quiet", "exec:down", "1s");
    let mut env = base_env(&root);
    env.insert("LOG_LEVEL".into(), "warn".into());
    let mut child = command(&root, &env, &[]).spawn().expect("start vmsh-scheduler");
    let out = child.stdout.take().expect("stdout");
    let collected = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&collected);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(line);
        }
    });
    let failed = |lines: &[String]| lines.iter().filter(|l| l.contains("\"anchor failed\"")).count();
    wait_for(Duration::from_secs(10), "two warnings", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited early with {status}");
        }
        (failed(&collected.lock().expect("lock")) >= 2).then_some(())
    });
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    }
    let status = wait_for(Duration::from_secs(10), "exit", || child.try_wait().expect("try_wait"));
    assert_eq!(status.code(), Some(0));
    reader.join().expect("reader");
    let lines = collected.lock().expect("lock").clone();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"] == "warn" || v["level"] == "error", "LOG_LEVEL=warn let through: {line}");
    }
    assert!(!lines.iter().any(|l| l.contains("vmsh-scheduler started")), "the info start-up line is suppressed");
}

/// Whether a log field's text is Rust's debug rendering of a value (`Anchor { resume: false }`,
/// `Some("x")`) rather than text meant for a reader.
fn looks_like_debug_text(v: &str) -> bool {
    let struct_like = v.split_once(" { ").is_some_and(|(name, rest)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ':')
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && rest.contains(": ")
    });
    struct_like || v.starts_with("Some(") || v == "None"
}

#[test]
fn anchor_failed_lines_name_the_attempt_and_batch_and_no_field_is_debug_text() {
    let root = Root::new();
    root.anchors(&exec_targets(&[("down", "exit 75")]));
    one_namespace(&root, "lc:failing", "exec:down", "1s");
    let mut s = Scheduler::start(&root);
    let failed = wait_for(Duration::from_secs(10), "two failures", || {
        let lines = s.logs_with_msg("anchor failed");
        (lines.len() >= 2).then_some(lines)
    });
    stop(&mut s);
    for line in &failed {
        assert_eq!(line["batch"], "b1", "{line}");
        let attempt = line["attempt"].as_str().unwrap_or_default();
        assert!(attempt.len() == 64 && attempt.bytes().all(|b| b.is_ascii_hexdigit()), "attempt: {line}");
    }
    let dispatched = s.logs_with_msg("job dispatched");
    assert!(!dispatched.is_empty(), "LOG_LEVEL=debug shows dispatches");
    for line in &dispatched {
        assert!(["anchor", "resume", "confirm"].contains(&line["mode"].as_str().unwrap_or_default()), "{line}");
    }
    for line in s.logs() {
        for (key, value) in line.as_object().expect("object") {
            if let Some(text) = value.as_str() {
                assert!(!looks_like_debug_text(text), "{key} holds debug text: {line}");
            }
        }
    }
}

#[test]
fn text_logs_carry_the_year_and_the_time_zone() {
    let root = Root::new();
    one_namespace(&root, "lc:text", "local:demo", "1h");
    let mut env = base_env(&root);
    env.insert("LOG_FORMAT".into(), "text".into());
    let mut child = command(&root, &env, &[]).spawn().expect("start vmsh-scheduler");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let anchored = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("an anchored line within 10 s");
        if line.contains("anchored") {
            break line;
        }
    };
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    }
    let status = wait_for(Duration::from_secs(10), "exit", || child.try_wait().expect("try_wait"));
    assert_eq!(status.code(), Some(0));
    drop(rx);
    reader.join().expect("reader");
    let stamp = anchored.split_whitespace().next().unwrap_or_default();
    assert!(recent_rfc3339(stamp) && stamp.ends_with('Z'), "no RFC 3339 UTC time first: {anchored}");
}

// ---------------------------------------------------------------------------------------
// Signals: every one an operator or the system may send
// ---------------------------------------------------------------------------------------

/// A scheduler started without waiting for it to listen, so a test can signal it while it
/// is still loading.
struct Starting {
    child: std::process::Child,
    logs: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Starting {
    fn spawn(root: &Root, extra: &[(&str, &str)]) -> Self {
        let mut env = base_env(root);
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        Self::spawn_command(command(root, &env, &[]))
    }

    fn spawn_command(mut cmd: std::process::Command) -> Self {
        let mut child = cmd.spawn().expect("start vmsh-scheduler");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
        let sink = Arc::clone(&logs);
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().expect("log lock").push(v);
            }
        });
        let sink = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(err), &mut text);
            sink.lock().expect("stderr lock").push_str(&text);
        });
        Self { child, logs, stderr, readers: vec![stdout_reader, stderr_reader] }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn log(&self, msg: &str) -> Option<Value> {
        self.logs.lock().expect("log lock").iter().find(|l| l["msg"] == msg).cloned()
    }

    fn logs(&self, msg: &str) -> Vec<Value> {
        self.logs.lock().expect("log lock").iter().filter(|l| l["msg"] == msg).cloned().collect()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = wait_for(limit, "the scheduler to exit", || self.child.try_wait().expect("try_wait"));
        // Its pipes closed with it: the readers end once they have taken the last lines.
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        status
    }

    /// Waits for "vmsh-scheduler started"; fails if the process exits first.
    fn wait_started(&mut self, limit: Duration) {
        wait_for(limit, "the scheduler to start", || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the scheduler exited during start-up with {status}: {}", self.stderr.lock().expect("lock"));
            }
            self.log("vmsh-scheduler started").map(|_| ())
        });
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespaces file of `n` namespaces (`big0` …) that takes the debug build about a second
/// to parse; returns its size.
fn big_namespaces(root: &Root, n: usize) -> u64 {
    let mut yaml = String::from("namespaces:\n");
    for i in 0..n {
        yaml.push_str(&format!("  big{i}:\n    cadence:\n      fast: {{target: \"local:big\", every: \"1h\"}}\n"));
    }
    root.namespaces(&yaml);
    yaml.len() as u64
}

/// Starts a scheduler on a large namespaces file and waits until it has read the file: it is
/// then parsing it, well before it could have reached the running loop.
fn starting_while_parsing(root: &Root) -> Starting {
    let size = big_namespaces(root, 30_000);
    let mut s = Starting::spawn(root, &[]);
    wait_for(Duration::from_secs(20), "the namespaces file to be read", || {
        assert!(s.running(), "the scheduler exited before it read its config");
        (bytes_read(s.pid()) >= size).then_some(())
    });
    assert!(s.log("vmsh-scheduler started").is_none(), "start-up was over before the signals; use a larger file");
    s
}

/// SIGHUP, SIGUSR1 and SIGUSR2 terminate a process by default. Sent while a large config
/// still parses, they must neither kill the scheduler nor be lost: the SIGHUP is acted on
/// (the config is checked) once it runs, and the others are logged as ignored.
#[test]
fn signals_sent_while_a_large_config_parses_neither_kill_the_scheduler_nor_are_lost() {
    let root = Root::new();
    let mut s = starting_while_parsing(&root);
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        s.signal(sig);
    }
    s.wait_started(Duration::from_secs(60));
    wait_for(Duration::from_secs(10), "the SIGHUP to be acted on", || s.log("SIGHUP: checking the config files now"));
    wait_for(Duration::from_secs(5), "SIGUSR1 and SIGUSR2 logged as ignored", || {
        let ignored: BTreeSet<String> = s
            .logs("signal ignored (logged once per signal)")
            .iter()
            .filter_map(|l| l["signal"].as_str().map(str::to_string))
            .collect();
        (ignored.len() == 2).then_some(())
    });
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// SIGTERM while the config parses: start-up finishes its loads, then the scheduler exits 0
/// without starting anything: no anchor, no journal line, no state written.
#[test]
fn sigterm_while_a_large_config_parses_exits_0_before_anything_starts() {
    let root = Root::new();
    root.batch(Some("big0"), "0001.json", "b1", &root_hex(6));
    let mut s = starting_while_parsing(&root);
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{status}: {}", s.stderr.lock().expect("lock"));
    assert!(s.log("shutdown requested during start-up: stopping before anything started").is_some());
    assert!(s.log("vmsh-scheduler started").is_none(), "it started after all");
    assert!(!root.journal("big").exists(), "an anchor ran");
    assert!(!root.state_path().exists(), "state was written");
}

/// SIGUSR1 and SIGUSR2 mean nothing to the scheduler: each is logged once and ignored, where
/// the default would kill it without a final state write. SIGQUIT drains like SIGTERM.
#[test]
fn sigusr1_and_sigusr2_are_ignored_and_sigquit_drains_like_sigterm() {
    let root = Root::new();
    one_namespace(&root, "sig:usr", "local:usr", "1s");
    let mut s = Scheduler::start(&root);
    let journal = root.journal("usr");
    wait_for(Duration::from_secs(10), "a first anchor", || (!lines(&journal).is_empty()).then_some(()));
    for _ in 0..3 {
        s.signal(libc::SIGUSR1);
        s.signal(libc::SIGUSR2);
    }
    let seen = lines(&journal).len();
    wait_for(Duration::from_secs(10), "two more anchors", || (lines(&journal).len() >= seen + 2).then_some(()));
    // Log lines reach the test through a pipe and a reader thread: wait until both have come.
    let ignored = || -> Vec<String> {
        s.logs_with_msg("signal ignored (logged once per signal)")
            .iter()
            .map(|l| l["signal"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    wait_for(Duration::from_secs(10), "both signals' notes", || (ignored().len() >= 2).then_some(()));
    // Signals sent back to back may be handled in either order.
    let mut noted = ignored();
    noted.sort();
    assert_eq!(noted, ["SIGUSR1", "SIGUSR2"], "each logged once");

    s.signal(libc::SIGQUIT);
    assert_eq!(s.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", s.stderr());
    assert_eq!(s.wait_log("shutdown requested: draining")["signal"], "SIGQUIT");
    assert!(
        !vmsh_scheduler::storage::state::wal::path(&root.state_path()).exists(),
        "the final state write folds the log"
    );
    let fast = &root.state()["namespaces"]["sig:usr"]["cadences"]["fast"];
    assert!(fast["lastSuccessMs"].is_i64() && fast.get("attempt").is_none(), "{fast}");
}

/// Thousands of SIGHUP a second: the checks they ask for fold into one at a time, with at
/// most one more after it, so when the storm ends the config reads end too (no queue of
/// checks left to work off), and the scheduler still answers a SIGHUP after it.
#[test]
fn a_storm_of_sighup_is_folded_and_leaves_no_config_checks_queued() {
    let root = Root::new();
    let mut yaml = String::from("namespaces:\n");
    for i in 0..3_000 {
        yaml.push_str(&format!("  n{i}:\n    cadence:\n      fast: {{target: \"local:n\", every: \"1h\"}}\n"));
    }
    root.namespaces(&yaml);
    // An hour's tick: every config read in this test comes from a SIGHUP.
    let mut s = Scheduler::start_with(&root, &[("VMSH_TICK_MS", "3600000")]);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(1_500) {
        s.signal(libc::SIGHUP);
        sent += 1;
    }
    let checks = s.logs_with_msg("SIGHUP: checking the config files now").len();
    // Once the storm is over the reads stop: the last tick stays put for 3 s.
    let mut last = (crate::support::last_tick(&s), Instant::now());
    wait_for(Duration::from_secs(20), "the config reads to stop after the storm", || {
        let now = crate::support::last_tick(&s);
        if now != last.0 {
            last = (now, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    assert_eq!(s.get("/livez").0, 200);
    // And a SIGHUP after the storm still applies a change.
    root.namespaces(&format!("{yaml}  late:\n    cadence:\n      fast: {{target: \"local:n\", every: \"1h\"}}\n"));
    s.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(20), "the change to be applied", || s.log_with_msg("config reloaded"));
    stop(&mut s);
    report("SIGHUP storm", 1, "pass", json!({"signals_sent": sent, "config_checks_during_storm": checks}));
}

/// Replaces `path` with a FIFO nobody reads: whatever opens it next blocks, as on a hung
/// file system.
fn make_fifo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// The process id of a harness scheduler, read from its lock record.
fn pid_of(root: &Root) -> i32 {
    let record = std::fs::read_to_string(vmsh_scheduler::storage::lockfile::state_lock_path(&root.state_path()))
        .expect("lock record");
    record.split_whitespace().next().and_then(|p| p.parse().ok()).expect("pid in the lock record")
}

/// A second signal exits at once, even while a state write is stuck (here: the state log
/// replaced by a FIFO, as a hung disk would hold it): the exit does not wait for it.
#[test]
fn a_second_signal_exits_at_once_even_while_a_state_write_hangs() {
    let root = Root::new();
    one_namespace(&root, "sig:hang", "local:hang", "1s");
    let mut s = Scheduler::start(&root);
    let wal = vmsh_scheduler::storage::state::wal::path(&root.state_path());
    wait_for(Duration::from_secs(10), "the state log", || wal.exists().then_some(()));
    make_fifo(&wal);
    let pid = pid_of(&root);
    wait_for(Duration::from_secs(10), "a state write to hang", || blocked_on_a_fifo(pid).then_some(()));
    s.signal(libc::SIGTERM);
    s.wait_log("shutdown requested: draining");
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", s.stderr());
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    std::fs::remove_file(&wal).expect("remove the FIFO");
    vmsh_scheduler::storage::state::load(&root.state_path()).expect("the state still loads");
}

/// A forced exit does not wait for running anchors, but it does not leave them behind either:
/// a running exec command's whole process group is killed on the way out.
#[test]
fn a_second_signal_kills_a_running_exec_commands_process_group_on_the_way_out() {
    let root = Root::new();
    let script = r#"echo $$ > "$VMSH_ROOT/shell.pid"; sleep 30 & echo $! > "$VMSH_ROOT/sleep.pid"; wait"#;
    root.anchors(&exec_targets(&[("hang", script)]));
    one_namespace(&root, "sig:exec", "exec:hang", "1h");
    let mut s = Scheduler::start_with(&root, &[("VMSH_SHUTDOWN_GRACE_S", "30")]);
    let sleep_pid = root.path().join("sleep.pid");
    wait_for(Duration::from_secs(10), "the hanging anchor", || (!lines(&sleep_pid).is_empty()).then_some(()));
    let pids = [lines(&root.path().join("shell.pid"))[0].clone(), lines(&sleep_pid)[0].clone()];
    s.signal(libc::SIGTERM);
    s.wait_log("shutdown requested: draining");
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(130), "{}", s.stderr());
    for pid in &pids {
        wait_for(Duration::from_secs(5), &format!("process {pid} of the anchor's group to die"), || {
            is_dead(pid).then_some(())
        });
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a scheduler whose stdout (and, with `close_stderr`, stderr) is a pipe closed once it
/// has started: every write to it fails with EPIPE. Returns its exit status and, when stderr
/// stayed open, what it wrote there.
fn run_with_closed_pipes(close_stderr: bool) -> (std::process::ExitStatus, Option<String>) {
    let root = Root::new();
    one_namespace(&root, "sig:pipe", "local:pipe", "1s");
    let mut child = KillOnDrop(command(&root, &base_env(&root), &[]).spawn().expect("start vmsh-scheduler"));
    let child = &mut child.0;
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("vmsh-scheduler started") {
        line.clear();
        assert!(out.read_line(&mut line).expect("read a log line") > 0, "stdout closed before the start");
    }
    drop(out);
    let mut err = child.stderr.take();
    if close_stderr {
        drop(err.take());
    }
    let journal = root.journal("pipe");
    let seen = lines(&journal).len();
    wait_for(Duration::from_secs(15), "three anchors after the pipes closed", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the scheduler exited with {status}");
        }
        (lines(&journal).len() >= seen + 3).then_some(())
    });
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    }
    let status = wait_for(Duration::from_secs(15), "the exit", || child.try_wait().expect("try_wait"));
    verify_chain(&journal).expect("one unbroken chain");
    let stderr = err.map(|mut e| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).expect("stderr");
        text
    });
    (status, stderr)
}

/// The log reader going away (a closed pipe: EPIPE on every write) must not stop the
/// scheduler: it keeps anchoring, says so once on stderr, and still shuts down cleanly. With
/// stderr closed too, it keeps anchoring all the same.
#[test]
fn a_closed_stdout_stops_neither_anchoring_nor_a_clean_shutdown() {
    let (status, stderr) = run_with_closed_pipes(false);
    let stderr = stderr.expect("stderr kept open");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let said: Vec<&str> = stderr.lines().collect();
    assert_eq!(said.len(), 1, "one line about stdout: {stderr}");
    assert!(said[0].contains("cannot write log lines to stdout"), "{stderr}");

    let (status, _) = run_with_closed_pipes(true);
    assert_eq!(status.code(), Some(0), "with stderr closed as well");
}

/// The timers run on the monotonic clock, which keeps counting while a process is stopped.
/// After SIGSTOP and SIGCONT a cadence whose due time passed runs once, and then on its grid
/// (the next run less than a period later, as after any downtime): no burst for the periods
/// it missed.
#[test]
fn after_sigstop_and_sigcont_a_cadence_runs_once_not_once_per_missed_period() {
    let root = Root::new();
    one_namespace(&root, "sig:stop", "local:stop", "1s");
    let mut s = Scheduler::start(&root);
    let journal = root.journal("stop");
    wait_for(Duration::from_secs(10), "two anchors", || (lines(&journal).len() >= 2).then_some(()));
    s.signal(libc::SIGSTOP);
    // The scenario is the gap itself: four periods pass while the process is stopped.
    std::thread::sleep(Duration::from_secs(4));
    let stopped = read_entries(&journal).expect("journal").len();
    s.signal(libc::SIGCONT);
    let entries = wait_for(Duration::from_secs(10), "four anchors after SIGCONT", || {
        read_entries(&journal).ok().filter(|e| e.len() >= stopped + 4)
    });
    let after: Vec<i64> = entries[stopped..stopped + 4].iter().map(|e| e.time_ms).collect();
    let gaps: Vec<i64> = after.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(gaps[0] <= 1_300, "the run after the catch-up is back on the grid: {gaps:?}");
    assert!(gaps[1..].iter().all(|g| *g >= 800), "then one run per period, no burst: {gaps:?}");
    stop(&mut s);
    assert_eq!(verify_chain(&journal).expect("chain").lines as usize, read_entries(&journal).expect("e").len());
}

/// A process that writes past its file size limit (`ulimit -f`, RLIMIT_FSIZE) gets SIGXFSZ,
/// whose default kills it with a core dump. The scheduler takes the failed write instead, as
/// it takes a full disk: the anchor fails and is reported, and the scheduler lives on.
#[test]
fn a_write_past_the_file_size_limit_fails_the_anchor_instead_of_killing_the_scheduler() {
    use std::os::unix::process::CommandExt;
    let root = Root::new();
    one_namespace(&root, "sig:fsize", "local:fsize", "1s");
    let mut cmd = command(&root, &base_env(&root), &[]);
    // SAFETY: setrlimit is async-signal-safe and changes only the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            // A journal line is about 450 bytes: the fourth or so no longer fits.
            let limit = libc::rlimit { rlim_cur: 2048, rlim_max: 2048 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    let mut s = Starting::spawn_command(cmd);
    s.wait_started(Duration::from_secs(20));
    let addr: std::net::SocketAddr =
        s.log("vmsh-scheduler started").and_then(|l| l["addr"].as_str()?.parse().ok()).expect("address");
    let error = wait_for(Duration::from_secs(30), "a write to fail on the file size limit", || {
        assert!(s.running(), "the scheduler died: {}", s.stderr.lock().expect("lock"));
        let (_, body) = crate::support::http(addr, "GET", "/health");
        let h: Health = serde_json::from_str(&body).ok()?;
        let anchor = h.cadence("sig:fsize", "fast").and_then(|c| c.last_error.as_ref()).map(|e| e.message.clone());
        anchor.or_else(|| h.state.and_then(|st| st.error)).filter(|e| e.contains("too large"))
    });
    assert!(s.running(), "{error}");
    assert_eq!(crate::support::http(addr, "GET", "/livez").0, 200);
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.code().is_some(), "ended by a signal: {status}");
}
