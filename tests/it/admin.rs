//! The admin API (`/admin/v1/`) and `vmsh-scheduler ctl` against the real binary: tokens,
//! answers, pause across restarts and reloads, trigger exactly once, skip, hostile input.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::http::{Answer, raw_request, request};
use crate::support::{BIN, Root, Scheduler, exec_targets, lines, metric, root_hex, wait_for, write_file_atomic};

const LONG: Duration = Duration::from_secs(15);
const OPS: &str = "0123456789abcdef-ops-token";
const CI: &str = "fedcba9876543210-ci-token";
const WRONG: &str = "0123456789abcdef-not-a-token";

/// One namespace `a` anchoring to `local:a` every second.
const ONE_SECOND: &str = r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:a", every: "1s"}
"#;

fn post(s: &Scheduler, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    request(s.addr, "POST", path, token, body)
}

/// A root with `namespaces`, a batch for `a`, and a token file; the scheduler's extra env.
fn setup(namespaces: &str) -> (Root, Vec<(String, String)>) {
    let root = Root::new();
    root.namespaces(namespaces).batch(Some("a"), "b1.json", "b1", &root_hex(1));
    let tokens = root.path().join("admin-tokens");
    std::fs::write(&tokens, format!("# operators\nops={OPS}\n\n{CI}\n")).expect("token file");
    let env = vec![("VMSH_ADMIN_TOKEN_FILE".to_string(), tokens.display().to_string())];
    (root, env)
}

fn start(root: &Root, env: &[(String, String)]) -> Scheduler {
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Scheduler::start_with(root, &extra)
}

/// The audit lines logged so far.
fn audit_lines(s: &Scheduler) -> Vec<Value> {
    s.logs().into_iter().filter(|l| l["audit"] == true).collect()
}

/// Waits until /health shows `a`'s fast cadence paused (or not).
fn wait_paused(s: &Scheduler, paused: bool) {
    wait_for(LONG, &format!("a fast paused = {paused}"), || {
        (s.cadence("a", "fast").is_some_and(|c| c.paused.is_some()) == paused).then_some(())
    });
}

/// Watches for `window` (a bounded observation, not a synchronisation) that `a` gains no
/// receipt, while the scheduler keeps ticking.
fn assert_no_receipt_for(s: &Scheduler, root: &Root, window: Duration) {
    let before = root.receipts("a").len();
    let first = crate::support::last_tick(s);
    let start = Instant::now();
    while start.elapsed() < window {
        assert_eq!(root.receipts("a").len(), before, "a receipt was written while paused");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(crate::support::last_tick(s) > first, "the scheduler kept ticking while watched");
}

#[test]
fn every_admin_endpoint_answers_a_good_token_and_refuses_a_wrong_or_a_missing_one() {
    let (root, env) = setup(ONE_SECOND);
    let s = start(&root, &env);
    let paths = [
        ("POST", "/admin/v1/namespaces/a/pause?cadence=fast", 200),
        ("POST", "/admin/v1/namespaces/a/resume?cadence=fast", 200),
        ("POST", "/admin/v1/namespaces/a/trigger?cadence=fast", 202),
        ("POST", "/admin/v1/namespaces/a/skip?cadence=fast", 200),
        ("GET", "/admin/v1/paused", 200),
    ];
    for (method, path, ok) in paths {
        let missing = request(s.addr, method, path, None, None);
        assert_eq!(missing.code, 401, "{method} {path} without a token: {}", missing.body);
        assert!(missing.head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{}", missing.head);
        let wrong = request(s.addr, method, path, Some(WRONG), None);
        assert_eq!(wrong.code, 401, "{method} {path} with a wrong token: {}", wrong.body);
        let good = request(s.addr, method, path, Some(OPS), None);
        assert_eq!(good.code, ok, "{method} {path} with a good token: {}", good.body);
        // The bare token of the file works too.
        let bare = request(s.addr, method, path, Some(CI), None);
        assert!((200..300).contains(&bare.code), "{method} {path} with the bare token: {}", bare.body);
    }
    // Audit lines name the token, never show it; refusals are audited too. Lines are written
    // asynchronously: the last request's line may still be on its way.
    let audit = wait_for(LONG, "every audit line", || {
        let audit = audit_lines(&s);
        // Four per action (missing, wrong, named, bare token); the read logs its refusals only.
        (audit.len() >= 4 * (paths.len() - 1) + 2).then_some(audit)
    });
    assert!(audit.iter().any(|l| l["token"] == "ops" && l["action"] == "pause" && l["code"] == 200), "{audit:?}");
    assert!(audit.iter().any(|l| l["token"] == "line-4" && l["action"] == "skip"), "{audit:?}");
    assert!(audit.iter().any(|l| l["token"] == "" && l["code"] == 401), "{audit:?}");
    let everything: String = s.logs().iter().map(Value::to_string).collect();
    for secret in [OPS, CI, WRONG] {
        assert!(!everything.contains(secret), "a token reached the log");
    }
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_admin_requests_total", &[("action", "pause"), ("code", "200")]), Some(2.0));
    assert_eq!(metric(&m, "vmsh_admin_requests_total", &[("action", "pause"), ("code", "401")]), Some(2.0));
    assert_eq!(metric(&m, "vmsh_admin_requests_total", &[("action", "trigger"), ("code", "202")]), Some(2.0));
    assert!(!m.contains(OPS));
}

#[test]
fn without_a_token_file_the_admin_api_is_off_and_answers_404() {
    let root = Root::new();
    root.namespaces(ONE_SECOND).batch(Some("a"), "b1.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    for (method, path) in [("POST", "/admin/v1/namespaces/a/pause"), ("GET", "/admin/v1/paused")] {
        let a = request(s.addr, method, path, Some(OPS), None);
        assert_eq!((a.code, a.body["error"].as_str()), (404, Some("not found")), "{method} {path}");
    }
    assert!(!s.metrics().contains("vmsh_admin_requests_total"));
    assert!(s.health().admin.is_none(), "no admin section while it is off");
}

#[test]
fn an_unknown_namespace_is_404_and_an_unknown_or_missing_cadence_400() {
    let (root, env) = setup(ONE_SECOND);
    let s = start(&root, &env);
    let a = post(&s, "/admin/v1/namespaces/nope/pause", Some(OPS), None);
    assert_eq!(a.code, 404, "{}", a.body);
    assert!(a.body["error"].as_str().is_some_and(|e| e.contains("nope")), "{}", a.body);
    let a = post(&s, "/admin/v1/namespaces/a/pause?cadence=cold", Some(OPS), None);
    assert_eq!(a.code, 400, "a cadence the namespace lacks: {}", a.body);
    assert!(a.body["error"].as_str().is_some_and(|e| e.contains("it has: fast")), "{}", a.body);
    let a = post(&s, "/admin/v1/namespaces/a/pause?cadence=hourly", Some(OPS), None);
    assert_eq!(a.code, 400, "not a cadence: {}", a.body);
    for action in ["trigger", "skip"] {
        let a = post(&s, &format!("/admin/v1/namespaces/a/{action}"), Some(OPS), None);
        assert_eq!(a.code, 400, "{action} without a cadence: {}", a.body);
    }
    let a = post(&s, "/admin/v1/namespaces/a/explode?cadence=fast", Some(OPS), None);
    assert_eq!(a.code, 404, "{}", a.body);
    assert!(root.receipts("a").len() < 100, "the scheduler runs on");
}

#[test]
fn a_pause_holds_every_run_survives_a_restart_and_a_reload_and_a_resume_runs_once_at_once() {
    let (root, env) = setup(ONE_SECOND);
    let mut s = start(&root, &env);
    wait_for(LONG, "a first receipt", || (!root.receipts("a").is_empty()).then_some(()));
    let note = "TSA maintenance until 14:00";
    let a = post(&s, "/admin/v1/namespaces/a/pause", Some(OPS), Some(&format!(r#"{{"note": "{note}"}}"#)));
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["cadences"]["fast"], "done");
    wait_paused(&s, true);
    let c = s.cadence("a", "fast").expect("a fast");
    let pause = c.paused.clone().expect("paused");
    assert_eq!((pause.by.as_str(), pause.note.as_deref()), ("ops", Some(note)));
    assert_eq!(c.next_due_ms, None, "a paused cadence is due at no time");
    let status = s.health().namespaces.and_then(|n| n.get("a").map(|a| a.status.clone()));
    let paused = vmsh_scheduler::health::contract::Open::Known(vmsh_scheduler::health::NamespaceStatus::Paused);
    assert_eq!(status, Some(paused));
    let listed = request(s.addr, "GET", "/admin/v1/paused", Some(OPS), None);
    assert_eq!(listed.body["paused"][0]["note"], note, "{}", listed.body);
    assert_eq!(listed.body["paused"][0]["cadence"], "fast");
    let m = s.metrics();
    assert!(metric(&m, "vmsh_cadence_paused_since_timestamp_seconds", &[("namespace", "a")]).is_some(), "{m}");
    assert!(metric(&m, "vmsh_next_due_timestamp_seconds", &[("namespace", "a")]).is_none());
    assert_eq!(post(&s, "/admin/v1/namespaces/a/pause", Some(OPS), None).body["cadences"]["fast"], "already so");
    assert_eq!(post(&s, "/admin/v1/namespaces/a/trigger?cadence=fast", Some(OPS), None).code, 409);
    assert_no_receipt_for(&s, &root, Duration::from_secs(3));

    // Across a restart: the pause is in the state.
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(LONG).success());
    assert_eq!(root.state()["namespaces"]["a"]["cadences"]["fast"]["paused"]["note"], note);
    let s = start(&root, &env);
    wait_paused(&s, true);
    assert_no_receipt_for(&s, &root, Duration::from_secs(3));

    // Across a reload that changes the namespace (a second cadence) and adds another.
    let two = r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:a", every: "1s"}
      cold: {target: "local:a", every: "1h"}
  b:
    cadence:
      fast: {target: "local:b", every: "1s"}
"#;
    let before = root.receipts("a").len();
    write_file_atomic(&root.path().join("namespaces.yaml"), two);
    wait_for(LONG, "the reload", || s.cadence("a", "cold"));
    wait_paused(&s, true);
    // The cold cadence, new, is not paused: it anchors once; fast stays held.
    wait_for(LONG, "a's new cold cadence to anchor", || (root.receipts("a").len() > before).then_some(()));
    let c = s.cadence("a", "fast").expect("fast");
    assert!(c.paused.is_some() && c.last_success_ms.is_some());

    // Resume: the run that came due meanwhile runs at once, once, and says why it is late.
    let resumed_at = crate::support::now_ms();
    let a = post(&s, "/admin/v1/namespaces/a/resume?cadence=fast", Some(OPS), None);
    assert_eq!(a.code, 200, "{}", a.body);
    let line = wait_for(LONG, "the missed-runs line", || {
        s.logs_with_msg("run began more than a period late: one run now makes up for the missed ones")
            .into_iter()
            .find(|l| l["ns"] == "a" && l["reason"] == "paused")
    });
    assert!(line["missed"].as_u64().is_some_and(|n| n >= 3), "{line}");
    let c = wait_for(LONG, "a fast to anchor after the resume", || {
        s.cadence("a", "fast").filter(|c| c.last_success_ms.is_some_and(|t| t >= resumed_at - 1_000))
    });
    assert!(c.paused.is_none());
    let missed = metric(&s.metrics(), "vmsh_runs_missed_total", &[("namespace", "a"), ("reason", "paused")]);
    assert!(missed.is_some_and(|n| n >= 3.0), "{missed:?}");
}

/// A target whose runs wait for `$VMSH_ROOT/go`, then append to `$VMSH_ROOT/runs`.
fn gated_exec() -> String {
    exec_targets(&[(
        "gated",
        r#"while [ ! -e "$VMSH_ROOT/go" ]; do sleep 0.05; done; echo "$VMSH_ATTEMPT_ID" >> "$VMSH_ROOT/runs"; echo '{"ok": true}'"#,
    )])
}

const HOURLY_GATED: &str = r#"
namespaces:
  a:
    cadence:
      fast: {target: "exec:gated", every: "1h"}
"#;

#[test]
fn a_trigger_while_a_run_is_in_flight_runs_once_after_it_without_moving_the_grid() {
    let (root, env) = setup(HOURLY_GATED);
    root.anchors(&gated_exec());
    let s = start(&root, &env);
    let runs = root.path().join("runs");
    // The first run (never anchored: due at once) is in flight, held by the gate.
    wait_for(LONG, "the first run in flight", || s.cadence("a", "fast").filter(|c| c.in_flight));
    let first = post(&s, "/admin/v1/namespaces/a/trigger?cadence=fast", Some(OPS), None);
    assert_eq!((first.code, first.body["queued"].as_bool()), (202, Some(true)), "{}", first.body);
    let again = post(&s, "/admin/v1/namespaces/a/trigger?cadence=fast", Some(OPS), None);
    assert_eq!(again.code, 202, "{}", again.body);
    assert!(s.cadence("a", "fast").is_some_and(|c| c.trigger_queued));
    assert!(lines(&runs).is_empty(), "nothing ran concurrently with the held run");
    std::fs::write(root.path().join("go"), "").expect("open the gate");
    wait_for(LONG, "the held run and the trigger", || (lines(&runs).len() >= 2).then_some(()));
    let c =
        wait_for(LONG, "the triggered success", || s.cadence("a", "fast").filter(|c| c.last_triggered_ms.is_some()));
    // The grid is the first run's: due an hour after it, not after the trigger.
    let last = c.last_success_ms.expect("the first run succeeded");
    assert!(c.last_triggered_ms.expect("triggered") >= last);
    // (The wall and monotonic clocks may place it a millisecond apart.)
    let due = c.next_due_ms.expect("due");
    assert!((due - (last + 3_600_000)).abs() <= 5, "the trigger moved the grid: due {due}, last {last}");
    let ids = lines(&runs);
    assert_ne!(ids[0], ids[1], "the trigger is an attempt of its own");
    // Exactly once: watched for a while, no third run.
    let start_watch = Instant::now();
    while start_watch.elapsed() < Duration::from_secs(2) {
        assert_eq!(lines(&runs).len(), 2, "a trigger ran twice");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(root.receipts("a").len(), 2, "one receipt per run");
    // Idle now: a trigger runs at once.
    let idle = post(&s, "/admin/v1/namespaces/a/trigger?cadence=fast", Some(OPS), None);
    assert_eq!((idle.code, idle.body["queued"].as_bool()), (202, Some(false)), "{}", idle.body);
    wait_for(LONG, "the third run", || (lines(&runs).len() == 3).then_some(()));
    let due = s.cadence("a", "fast").and_then(|c| c.next_due_ms).expect("due");
    assert!((due - (last + 3_600_000)).abs() <= 5, "the trigger moved the grid: due {due}, last {last}");
}

#[test]
fn a_skip_drops_the_next_run_by_period_and_the_one_after_comes_a_period_later() {
    let every_2s = r#"
namespaces:
  a:
    cadence:
      fast: {target: "local:a", every: "2s"}
"#;
    let (root, env) = setup(every_2s);
    let s = start(&root, &env);
    wait_for(LONG, "a first receipt", || (!root.receipts("a").is_empty()).then_some(()));
    let a = post(&s, "/admin/v1/namespaces/a/skip?cadence=fast", Some(OPS), None);
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(s.cadence("a", "fast").is_some_and(|c| c.skip_next));
    assert_eq!(root.state()["namespaces"]["a"]["cadences"]["fast"]["skipNext"], true, "the skip is kept");
    let line = s.wait_log("run skipped, as an operator asked");
    let count = root.receipts("a").len();
    let next_ms = line["next_due_ms"].as_i64().expect("next_due_ms");
    let due_ms = line["due_ms"].as_i64().expect("due_ms");
    assert_eq!(next_ms - due_ms, 2_000, "the next run is a period after the skipped one");
    let c = wait_for(LONG, "the run after the skipped one", || {
        // Its period counts from its grid point, which wall and monotonic clocks may place a
        // millisecond apart.
        s.cadence("a", "fast").filter(|c| c.last_success_ms.is_some_and(|t| t >= next_ms - 5))
    });
    assert!(!c.skip_next);
    assert_eq!(root.receipts("a").len(), count + 1);
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_anchors_skipped_total", &[("namespace", "a"), ("reason", "operator")]), Some(1.0));
}

#[test]
fn hostile_admin_requests_get_a_clear_4xx_and_write_nothing_outside_the_root() {
    let (root, env) = setup(ONE_SECOND);
    let s = start(&root, &env);
    let path = "/admin/v1/namespaces/a/pause";
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(5000));
    assert_eq!(post(&s, path, Some(OPS), Some(&big)).code, 413, "a body over 4096 bytes");
    assert_eq!(post(&s, path, Some(OPS), Some("{not json")).code, 400);
    assert_eq!(post(&s, path, Some(OPS), Some(r#"{"cadence": "fast", "file": "/etc/x"}"#)).code, 400);
    assert_eq!(post(&s, path, Some(OPS), Some(r#"{"cadence": 7}"#)).code, 400);
    assert_eq!(post(&s, path, Some(OPS), Some(r#"{"note": "bell\u0007"}"#)).code, 400);
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n5\r\n{{\"a\":\r\n"
    );
    assert_eq!(raw_request(s.addr, chunked.as_bytes()).code, 411, "a chunked body is refused at once");
    let text = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS}\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\ncadence=fast"
    );
    assert_eq!(raw_request(s.addr, text.as_bytes()).code, 415);
    // Names that try to leave the namespace segment or the root are unknown namespaces.
    for ns in ["..%2F..%2Fetc", "%2e%2e", "a%00b", &"n".repeat(3000)] {
        let a = post(&s, &format!("/admin/v1/namespaces/{ns}/pause"), Some(OPS), None);
        assert!(matches!(a.code, 400 | 404 | 414 | 431), "{ns}: {} {}", a.code, a.body);
    }
    for token in [format!("{OPS} x"), format!("{OPS}x"), OPS[..OPS.len() - 1].to_string()] {
        assert_eq!(post(&s, path, Some(&token), None).code, 401, "{token:?}");
    }
    // Control characters in a header are refused by the HTTP parser itself.
    assert_eq!(post(&s, path, Some(&"\u{7}".repeat(20)), None).code, 400);
    // Still serving, nothing paused, and no file appeared outside the root's folders.
    assert!(s.cadence("a", "fast").is_some_and(|c| c.paused.is_none()));
    let mut names: Vec<String> = std::fs::read_dir(root.path())
        .expect("root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        assert!(
            ["admin-tokens", "namespaces.yaml", "out", "state", "vmsh", "batches"].iter().any(|k| name.starts_with(k))
                || name.starts_with('.'),
            "unexpected file {name} in the root: {names:?}"
        );
    }
}

#[test]
fn a_changed_token_file_rotates_the_tokens_and_a_bad_one_keeps_the_old_in_force() {
    let (root, env) = setup(ONE_SECOND);
    let s = start(&root, &env);
    let file = root.path().join("admin-tokens");
    let rotated = "0a1b2c3d4e5f6a7b-rotated";
    write_file_atomic(&file, &format!("ops={rotated}\n"));
    wait_for(LONG, "the new token to work", || {
        (post(&s, "/admin/v1/namespaces/a/resume", Some(rotated), None).code == 200).then_some(())
    });
    assert_eq!(post(&s, "/admin/v1/namespaces/a/resume", Some(OPS), None).code, 401, "the old token is gone");
    s.wait_log("admin tokens reloaded");
    write_file_atomic(&file, "ops=short\n");
    wait_for(LONG, "the bad file to be refused", || {
        s.health().admin.and_then(|a| a.token_file_error).filter(|e| e.contains("line 1"))
    });
    assert_eq!(post(&s, "/admin/v1/namespaces/a/resume", Some(rotated), None).code, 200, "still in force");
    assert_eq!(metric(&s.metrics(), "vmsh_admin_token_file_valid", &[]), Some(0.0));
    assert_eq!(s.health().status, vmsh_scheduler::health::OverallStatus::Degraded);
}

#[test]
fn a_bad_token_file_at_start_stops_it_with_one_line_naming_the_file() {
    let root = Root::new();
    root.namespaces(ONE_SECOND);
    let tokens = root.path().join("admin-tokens");
    std::fs::write(&tokens, "ops=short\n").expect("write");
    let mut env = crate::support::base_env(&root);
    env.insert("VMSH_ADMIN_TOKEN_FILE".into(), tokens.display().to_string());
    let out = crate::support::command(&root, &env, &[]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("admin-tokens") && lines[0].contains("line 1"), "{stderr}");
}

/// Runs `vmsh-scheduler ctl ARGS` against `url` with `token_file`.
fn ctl(url: &str, token_file: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .args(args)
        .arg("--url")
        .arg(url)
        .arg("--token-file")
        .arg(token_file)
        .env_clear()
        .output()
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctl_pauses_lists_and_resumes_and_exits_with_its_documented_codes() {
    let (root, env) = setup(ONE_SECOND);
    let s = start(&root, &env);
    let url = format!("http://{}", s.addr);
    let good = root.path().join("admin-tokens");
    let (code, out, err) = ctl(&url, &good, &["pause", "a", "--cadence", "fast", "--note", "upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_paused(&s, true);
    let (code, out, _) = ctl(&url, &good, &["paused"]);
    assert_eq!(code, 0);
    assert!(out.contains("a fast") && out.contains("by ops") && out.contains("upgrade"), "{out}");
    assert_eq!(ctl(&url, &good, &["resume", "a"]).0, 0);
    wait_paused(&s, false);
    assert_eq!(ctl(&url, &good, &["pause", "nope"]).0, 1, "unknown namespace");
    assert_eq!(ctl(&url, &good, &["trigger", "a"]).0, 1, "trigger needs a cadence");
    let wrong = root.path().join("wrong-token");
    std::fs::write(&wrong, format!("{WRONG}\n")).expect("write");
    assert_eq!(ctl(&url, &wrong, &["pause", "a"]).0, 3, "a wrong token");
    assert_eq!(ctl(&url, &root.path().join("missing"), &["pause", "a"]).0, 2, "no token file");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    assert_eq!(ctl(&format!("http://{closed}"), &good, &["pause", "a"]).0, 4, "nothing listening");
    let off = Root::new();
    off.namespaces(ONE_SECOND);
    let plain = Scheduler::start(&off);
    assert_eq!(ctl(&format!("http://{}", plain.addr), &good, &["pause", "a"]).0, 3, "the admin API is off");
}

#[test]
fn a_run_after_downtime_says_how_many_periods_were_missed_and_makes_them_up_once() {
    let (root, env) = setup(ONE_SECOND);
    let mut s = start(&root, &env);
    wait_for(LONG, "a first receipt", || (!root.receipts("a").is_empty()).then_some(()));
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(LONG).success());
    let before = root.receipts("a").len();
    // The downtime itself: real time must pass for periods to be missed.
    std::thread::sleep(Duration::from_millis(3_500));
    let s = start(&root, &env);
    let line = wait_for(LONG, "the missed-runs line", || {
        s.logs_with_msg("run began more than a period late: one run now makes up for the missed ones")
            .into_iter()
            .find(|l| l["ns"] == "a")
    });
    assert_eq!(line["reason"], "downtime", "{line}");
    assert!(line["missed"].as_u64().is_some_and(|n| n >= 2), "{line}");
    wait_for(LONG, "the catch-up run", || (root.receipts("a").len() > before).then_some(()));
    let m = s.metrics();
    let missed = metric(&m, "vmsh_runs_missed_total", &[("namespace", "a"), ("reason", "downtime")]);
    assert_eq!(missed, line["missed"].as_f64(), "the counter counts the periods the line names");
}

#[test]
fn in_cluster_mode_a_request_for_another_replicas_namespace_is_misdirected_and_a_pause_is_in_etcd() {
    use vmsh_scheduler::cluster::claim::Keys;
    use vmsh_scheduler::cluster::etcd::{Etcd, EtcdOptions, EtcdTls};
    use vmsh_scheduler::cluster::{member, ownership};
    const NODE: &str = "sched-a";
    const IDLE: &str = "idle";
    let etcd_cluster = crate::support::etcd::EtcdCluster::start(1);
    // One namespace each, as rendezvous hashing places them between the two members.
    let (mut ours, mut theirs) = (None, None);
    for i in 0.. {
        let ns = format!("c{i}");
        match ownership::owner(&ns, [NODE, IDLE]) {
            Some(NODE) if ours.is_none() => ours = Some(ns),
            Some(IDLE) if theirs.is_none() => theirs = Some(ns),
            _ => {}
        }
        if ours.is_some() && theirs.is_some() {
            break;
        }
    }
    let (ours, theirs) = (ours.expect("ours"), theirs.expect("theirs"));
    let yaml = format!(
        "namespaces:\n  {ours}:\n    cadence:\n      fast: {{target: \"local:j\", every: \"1s\"}}\n  {theirs}:\n    cadence:\n      fast: {{target: \"local:j\", every: \"1s\"}}\n"
    );
    let (root, mut env) = setup(&yaml);
    let endpoint = etcd_cluster.endpoint(0);
    env.push(("VMSH_ETCD_ENDPOINTS".into(), endpoint.clone()));
    env.push(("VMSH_NODE_ID".into(), NODE.into()));
    // The idle member registers first and never claims: its namespace is nobody's here.
    let etcd = Etcd::new(EtcdOptions {
        endpoints: vec![endpoint],
        tls: EtcdTls::default(),
        auth: None,
        request_timeout: Duration::from_secs(2),
    })
    .expect("an etcd client");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let keys = Keys::new("/vmsh-scheduler/");
    let registration = member::Registration { node: IDLE.into(), version: "test".into(), joined_ms: 0 };
    rt.block_on(member::join(&etcd, &keys, &registration, 120)).expect("the idle member joins");
    let s = start(&root, &env);
    wait_for(LONG, "the replica to hold its namespace", || s.health().cluster.filter(|c| c.owned == 1).map(drop));
    let a = post(&s, &format!("/admin/v1/namespaces/{theirs}/pause"), Some(OPS), None);
    assert_eq!(a.code, 421, "{}", a.body);
    let a = post(&s, &format!("/admin/v1/namespaces/{ours}/pause"), Some(OPS), Some(r#"{"note": "held"}"#));
    assert_eq!(a.code, 200, "{}", a.body);
    // Answered once durable: the pause is in etcd, where the namespace's next owner reads it.
    let state = wait_for(LONG, "the pause in etcd", || {
        let found = rt.block_on(etcd.get_prefix(&keys.states())).ok()?.0;
        let logs = rt.block_on(etcd.get_prefix(&keys.logs())).ok()?.0;
        found
            .into_iter()
            .chain(logs)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .find(|v| v.contains("\"paused\""))
    });
    assert!(state.contains("\"note\":\"held\""), "{state}");
}
