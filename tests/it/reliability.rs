//! Reliability scenarios: crashes, disk faults and clock jumps. Each test prints one
//! `RELIABILITY {json}` line (scenario, runs, result, figures) that `scripts/reliability.sh`
//! collects into docs/RELIABILITY.md. The normal test command runs reduced counts; with
//! `VMSH_RELIABILITY=full` (what the script sets) they run the full counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmsh_scheduler::health::OverallStatus;

use crate::support::report::{count, report};
use crate::support::{Root, Scheduler, exec_targets, last_tick, lines, metric, now_ms, root_hex, wait_for, write_file};

const LONG: Duration = Duration::from_secs(20);

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("VMSH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| now_ms() as u64);
        println!("seed {seed} (set VMSH_SEED to replay)");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every journal under the root, with its entries' attempt ids; panics on a broken chain.
fn journals(root: &Path) -> BTreeMap<PathBuf, Vec<String>> {
    let dir = root.join("out/journal");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let path = entry.path();
        if let Err(e) = vmsh_scheduler::anchor::local::verify_chain(&path) {
            // A torn last line is legal on disk (never acknowledged) until the next append
            // cuts it; anything else is corruption.
            let text = std::fs::read(&path).expect("read journal");
            let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let tmp = root.join("journal-check.tmp");
            std::fs::write(&tmp, &text[..complete]).expect("copy");
            vmsh_scheduler::anchor::local::verify_chain(&tmp)
                .unwrap_or_else(|e2| panic!("journal {} is corrupt: {e} / {e2}", path.display()));
        }
        let ids = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["attemptId"].as_str().map(str::to_string))
            .collect();
        out.insert(path, ids);
    }
    out
}

/// Every receipt under the root; panics on one that does not parse.
fn all_receipts(root: &Path) -> usize {
    let mut n = 0;
    for ns in std::fs::read_dir(root.join("out/anchors")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        for f in std::fs::read_dir(ns.path()).expect("list").flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue; // a temporary file of an interrupted atomic write, never a receipt
            }
            let text = std::fs::read(f.path()).expect("read receipt");
            serde_json::from_slice::<Value>(&text).unwrap_or_else(|e| panic!("torn receipt {name}: {e}"));
            n += 1;
        }
    }
    n
}

/// Starts the scheduler (with `env`) and kills it -9 `iterations` times, each after 200 ms
/// plus up to `spread_ms` more at random. After each kill the state must load, the journals
/// chain and every receipt parse; every third time a new batch comes. Then one clean run
/// until every one of the `namespaces` has finished its attempt, and a clean stop.
fn kill_at_random_instants(root: &Root, iterations: usize, namespaces: usize, env: &[(&str, &str)], spread_ms: u64) {
    let mut rng = Rng::new();
    let mut with_log = vec![("LOG_LEVEL", "info")];
    with_log.extend_from_slice(env);
    for i in 0..iterations {
        let mut s = Scheduler::start_with(root, &with_log);
        std::thread::sleep(Duration::from_millis(200 + rng.below(spread_ms)));
        s.kill9();
        // The state file and its log always load (a fresh start may not have written either).
        vmsh_scheduler::storage::state::load(&root.state_path())
            .unwrap_or_else(|e| panic!("iteration {i}: state unreadable: {e}"));
        journals(root.path());
        all_receipts(root.path());
        // A new batch now and then, so attempts differ in root as well as period.
        if i % 3 == 2 {
            root.batch(
                None,
                &format!("{:04}.json", i + 2),
                &format!("b{}", i + 2),
                &root_hex(u8::try_from(i % 200).unwrap_or(0) + 2),
            );
        }
    }
    // A last clean run finishes every interrupted attempt.
    let mut s = Scheduler::start_with(root, &[("LOG_LEVEL", "info")]);
    wait_for(LONG, "every namespace to anchor after the last restart", || {
        let h = s.health();
        let ok = h.namespaces.as_ref().is_some_and(|m| {
            m.len() == namespaces && m.values().all(|n| n.cadence("fast").and_then(|c| c.attempt_id.as_ref()).is_none())
        });
        ok.then_some(())
    });
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0));
}

#[test]
fn kill_9_at_random_instants_never_tears_state_or_journals_nor_anchors_a_period_twice() {
    let iterations = count(8, 100);
    let namespaces = count(60, 200);
    let root = Root::new();
    let mut yaml = String::from("namespaces:\n");
    for i in 0..namespaces {
        yaml.push_str(&format!(
            "  ns{i:03}:\n    cadence:\n      fast: {{target: \"local:j{}\", every: \"1s\"}}\n",
            i % 4
        ));
        if i % 10 == 0 {
            yaml.push_str("      strong: {target: \"exec:log\", every: \"1s\"}\n");
        }
    }
    root.anchors(&exec_targets(&[("log", r#"echo "$VMSH_ATTEMPT_ID" >> "$VMSH_ROOT/exec.log"; echo '{}'"#)]))
        .namespaces(&yaml)
        .batch(None, "0001.json", "b1", &root_hex(1));
    let started = Instant::now();
    kill_at_random_instants(&root, iterations, namespaces, &[("VMSH_ANCHOR_WORKERS", "8")], 1_300);
    let journal_ids: Vec<String> = journals(root.path()).into_values().flatten().collect();
    let unique: BTreeSet<&String> = journal_ids.iter().collect();
    let duplicates = journal_ids.len() - unique.len();
    let exec_ids = lines(&root.path().join("exec.log"));
    let exec_unique: BTreeSet<&String> = exec_ids.iter().collect();
    let receipts = all_receipts(root.path());
    report(
        "kill -9 at random instants while anchoring",
        iterations,
        if duplicates == 0 { "pass" } else { "FAIL" },
        json!({
            "namespaces": namespaces,
            "journalLines": journal_ids.len(),
            "duplicateLocalAnchors": duplicates,
            "execRuns": exec_ids.len(),
            "execRepeatsOfOneAttempt": exec_ids.len() - exec_unique.len(),
            "receipts": receipts,
            "seconds": started.elapsed().as_secs(),
        }),
    );
    assert_eq!(duplicates, 0, "a local anchor was made twice for one period");
    assert!(journal_ids.len() >= namespaces, "anchoring made progress");
}

#[test]
fn kill_9_at_random_instants_while_aggregating_never_anchors_an_aggregate_twice_nor_a_member_period_twice() {
    let iterations = count(8, 100);
    let namespaces = count(24, 60);
    let root = Root::new();
    let mut yaml = String::from("namespaces:\n");
    for i in 0..namespaces {
        yaml.push_str(&format!("  agg{i:03}:\n    cadence:\n      fast: {{target: \"local:agg\", every: \"1s\"}}\n"));
    }
    // Trees of at most 8: several aggregates a window, some sealed full at once.
    root.anchors("local:\n  agg: {aggregate: {window: 1s, maxLeaves: 8}}\n").namespaces(&yaml).batch(
        None,
        "0001.json",
        "b1",
        &root_hex(1),
    );
    let started = Instant::now();
    kill_at_random_instants(&root, iterations, namespaces, &[], 1_800);

    let journal = root.journal("agg");
    let lines = vmsh_scheduler::anchor::local::read_entries(&journal).expect("the journal reads");
    let aggregates: BTreeSet<&str> = lines.iter().map(|l| l.attempt_id.as_str()).collect();
    let twice = lines.len() - aggregates.len();
    let roots: BTreeSet<String> = lines.iter().map(|l| l.root.clone()).collect();
    let (mut receipts, mut repeated, mut foreign) = (0, 0, 0);
    let mut under_root: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..namespaces {
        let mut attempts = BTreeSet::new();
        for receipt in root.receipts(&format!("agg{i:03}")) {
            receipts += 1;
            if !attempts.insert(receipt["attemptId"].as_str().unwrap_or_default().to_string()) {
                repeated += 1;
            }
            let under = format!("sha256:{}", receipt["inclusion"]["root"].as_str().unwrap_or_default());
            if !roots.contains(&under) {
                foreign += 1;
            }
            *under_root.entry(under).or_default() += 1;
        }
    }
    // Every leaf of every aggregate anchored got its receipt under it: no member was counted
    // in one tree and receipted under another.
    let short: Vec<String> = lines
        .iter()
        .filter(|l| {
            let size: usize = l.batch_id.trim_start_matches("aggregate-").parse().unwrap_or(0);
            under_root.get(&l.root).copied().unwrap_or(0) != size
        })
        .map(|l| format!("{} ({}, {} receipts)", l.root, l.batch_id, under_root.get(&l.root).copied().unwrap_or(0)))
        .collect();
    let pass = twice == 0 && repeated == 0 && foreign == 0 && short.is_empty();
    report(
        "kill -9 at random instants while aggregating",
        iterations,
        if pass { "pass" } else { "FAIL" },
        json!({
            "namespaces": namespaces,
            "aggregates": lines.len(),
            "aggregatesAnchoredTwice": twice,
            "receipts": receipts,
            "memberPeriodsWithTwoReceipts": repeated,
            "receiptsUnderNoAggregate": foreign,
            "aggregatesShortOfReceipts": short.len(),
            "seconds": started.elapsed().as_secs(),
        }),
    );
    assert_eq!(twice, 0, "an aggregate was anchored twice");
    assert_eq!(repeated, 0, "a member got two receipts for one attempt");
    assert_eq!(foreign, 0, "a receipt's inclusion root is no aggregate the journal holds");
    assert!(short.is_empty(), "aggregates whose leaves did not all get a receipt under them: {short:?}");
    assert!(receipts >= namespaces, "anchoring made progress");
}

/// A tmpfs mounted for the test, unmounted when dropped. Needs root (CI runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mkdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed ({}); the disk-fault tests need root (run the test command as root)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(path.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount {opts}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn one_namespace(root: &Root, every: &str) {
    root.namespaces(&format!(
        "namespaces:\n  n:\n    cadence:\n      fast: {{target: \"local:j\", every: \"{every}\"}}\n"
    ))
    .batch(None, "0001.json", "b1", &root_hex(1));
}

#[test]
fn a_read_only_state_folder_degrades_health_holds_new_attempts_and_loses_nothing() {
    let root = Root::new();
    one_namespace(&root, "1s");
    let state_dir = root.path().join("state");
    let fs = Tmpfs::mount(&state_dir, "4m");
    let mut s = Scheduler::start(&root);
    wait_for(LONG, "a first anchor", || (!root.receipts("n").is_empty()).then_some(()));
    fs.remount("ro");
    let h = wait_for(LONG, "health to report the state file", || {
        let h = s.health();
        h.state.as_ref().is_some_and(|st| st.error.is_some()).then_some(h)
    });
    assert_eq!(h.status, OverallStatus::Degraded, "{h}");
    assert_eq!(s.get("/livez").0, 200, "a state problem is not a reason to restart");
    wait_for(LONG, "failed writes to be counted", || {
        metric(&s.metrics(), "vmsh_state_writes_total", &[("result", "failure")]).filter(|n| *n >= 1.0)
    });
    // No new attempt starts while its record cannot be written.
    let during = root.receipts("n").len();
    let t0 = last_tick(&s).expect("tick");
    wait_for(LONG, "2 s of ticks", || (last_tick(&s) >= Some(t0 + 2_000)).then_some(()));
    assert!(root.receipts("n").len() <= during + 1, "anchors went on without recording their attempts");
    fs.remount("rw");
    wait_for(LONG, "health to recover", || s.health().state.and_then(|st| st.error).is_none().then_some(()));
    wait_for(LONG, "anchoring to resume", || (root.receipts("n").len() >= during + 2).then_some(()));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0));
    let state = root.state();
    let last = state["namespaces"]["n"]["cadences"]["fast"]["lastSuccessMs"].as_i64().expect("last success");
    let newest = root.receipts("n").iter().filter_map(|r| r["timeMs"].as_i64()).max().expect("receipts");
    assert!(last <= newest && newest - last < 1_000, "the state holds the last anchor ({last} vs {newest})");
    report(
        "state folder read-only while running",
        1,
        "pass",
        json!({"receiptsWhileReadOnly": root.receipts("n").len()}),
    );
}

#[test]
fn a_full_disk_for_receipts_fails_anchors_without_losing_them_and_recovers() {
    let root = Root::new();
    // Receipts and journals live on one small file system; the state file elsewhere.
    let out = root.path().join("out");
    let fs = Tmpfs::mount(&out, "1m");
    one_namespace(&root, "1s");
    let mut s = Scheduler::start(&root);
    wait_for(LONG, "a first anchor", || (!root.receipts("n").is_empty()).then_some(()));
    let filler = out.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k", "count=1000"])
        .output();
    let err =
        wait_for(LONG, "an anchor that failed for want of space", || s.cadence("n", "fast").and_then(|c| c.last_error));
    assert!(err.message.to_lowercase().contains("space"), "{err:?}");
    // Not a success while the receipt cannot be written.
    let succeeded = metric(&s.metrics(), "vmsh_anchors_succeeded_total", &[("namespace", "n")]).expect("counter");
    let before = root.receipts("n").len();
    assert_eq!(s.get("/livez").0, 200);
    std::fs::remove_file(&filler).expect("free space");
    wait_for(LONG, "anchoring to resume", || (root.receipts("n").len() > before).then_some(()));
    assert!(metric(&s.metrics(), "vmsh_anchors_succeeded_total", &[("namespace", "n")]).expect("counter") > succeeded);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0));
    // Every receipt parses, every journal is chained, and no period was anchored twice.
    all_receipts(root.path());
    let journal_ids: Vec<String> = journals(root.path()).into_values().flatten().collect();
    let unique: BTreeSet<&String> = journal_ids.iter().collect();
    assert_eq!(journal_ids.len(), unique.len(), "no period anchored twice");
    drop(fs);
    report("disk full for receipts and journals while running", 1, "pass", json!({"receiptsBefore": before}));
}

#[test]
fn a_full_disk_for_the_state_file_holds_new_attempts_and_loses_nothing() {
    let root = Root::new();
    one_namespace(&root, "1s");
    let state_dir = root.path().join("state");
    let fs = Tmpfs::mount(&state_dir, "64k");
    let mut s = Scheduler::start(&root);
    wait_for(LONG, "a first anchor", || (!root.receipts("n").is_empty()).then_some(()));
    let filler = state_dir.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k", "count=64"])
        .output();
    let c = wait_for(LONG, "the cadence to wait for the state file", || {
        let c = s.cadence("n", "fast")?;
        c.waiting.as_deref().is_some_and(|w| w.starts_with("state file not writable")).then_some(c)
    });
    assert_eq!(c.backoff, 0, "a full disk is not the target's failure: {c}");
    assert_eq!(s.health().status, OverallStatus::Degraded);
    let held = root.receipts("n").len();
    std::fs::remove_file(&filler).expect("free space");
    wait_for(LONG, "anchoring to resume", || (root.receipts("n").len() > held).then_some(()));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0));
    let last = root.state()["namespaces"]["n"]["cadences"]["fast"]["lastSuccessMs"].as_i64().expect("last success");
    let newest = root.receipts("n").iter().filter_map(|r| r["timeMs"].as_i64()).max().expect("receipts");
    assert!(newest - last < 1_000, "the state holds the last anchor");
    drop(fs);
    report("disk full for the state file while running", 1, "pass", json!({"receiptsBeforeFull": held}));
}

fn faketime_lib() -> PathBuf {
    let candidates = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"];
    candidates.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("libfaketime not found: run scripts/install-test-deps.sh (installs Debian's faketime)")
    })
}

/// Runs one namespace with a 2 s cadence under libfaketime, steps the wall clock by
/// `jump_s` seconds, and returns the gaps (ms, by the real clock) between anchors.
fn anchors_across_a_wall_clock_step(jump_s: i64) -> Vec<i64> {
    let root = Root::new();
    one_namespace(&root, "2s");
    let control = root.path().join("faketime.rc");
    write_file(&control, "+0s");
    let lib = faketime_lib();
    let s = Scheduler::start_with(
        &root,
        &[
            ("LD_PRELOAD", lib.to_str().expect("utf-8")),
            ("FAKETIME_TIMESTAMP_FILE", control.to_str().expect("utf-8")),
            ("FAKETIME_NO_CACHE", "1"),
            // Only the wall clock steps, as with NTP or an operator's `date -s`.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let seen = |n: usize| {
        let root = &root;
        move || (root.receipts("n").len() >= n).then_some(now_ms())
    };
    let mut times = vec![wait_for(LONG, "anchor 1", seen(1)), wait_for(LONG, "anchor 2", seen(2))];
    write_file(&control, &format!("{jump_s:+}s"));
    for n in 3..=6 {
        times.push(wait_for(LONG, &format!("anchor {n} after the step"), seen(n)));
    }
    drop(s);
    // The step really happened: receipts made after it carry the stepped wall clock.
    let now = now_ms();
    let offsets: Vec<i64> = root.receipts("n").iter().filter_map(|r| r["timeMs"].as_i64()).map(|t| t - now).collect();
    assert!(
        offsets.iter().any(|o| (o - jump_s * 1000).abs() < 60_000),
        "the scheduler's clock was not stepped (receipt offsets {offsets:?} ms)"
    );
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn a_wall_clock_jumping_a_day_forward_fires_no_burst_and_stalls_nothing() {
    let gaps = anchors_across_a_wall_clock_step(86_400);
    // One anchor per period (2 s) before and after the step: no burst of catch-up anchors
    // (gaps near 0) and no stall longer than a period.
    for g in &gaps {
        assert!((1_500..=3_500).contains(g), "gaps between anchors (ms): {gaps:?}");
    }
    report("wall clock steps a day forward", 1, "pass", json!({"gapsMs": gaps}));
}

#[test]
fn a_wall_clock_jumping_an_hour_back_stalls_no_cadence() {
    let gaps = anchors_across_a_wall_clock_step(-3_600);
    for g in &gaps {
        assert!((1_500..=3_500).contains(g), "gaps between anchors (ms): {gaps:?}");
    }
    report("wall clock steps an hour back", 1, "pass", json!({"gapsMs": gaps}));
}

/// Takes the state store's reports to health and drops them.
struct NoHealth;

impl actix::Actor for NoHealth {
    type Context = actix::Context<Self>;
}

impl actix::Handler<vmsh_scheduler::storage::state::store::StateWritten> for NoHealth {
    type Result = ();
    fn handle(&mut self, _: vmsh_scheduler::storage::state::store::StateWritten, _: &mut actix::Context<Self>) {}
}

/// The disk fills up between renaming the state log aside and appending to the next one:
/// the append fails after the rename. Its retry must not rename the next log over the one
/// renamed aside, which holds acknowledged changes that no snapshot holds yet.
#[actix_rt::test]
async fn a_full_disk_right_after_the_state_log_is_rotated_loses_no_acknowledged_change() {
    use actix::Actor;
    use vmsh_scheduler::model::CadenceKind;
    use vmsh_scheduler::storage::state::backend::StateBackend;
    use vmsh_scheduler::storage::state::file::FileBackend;
    use vmsh_scheduler::storage::state::store::{StateStore, Update};
    use vmsh_scheduler::storage::state::{CadenceState, wal};

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let fs = Tmpfs::mount(&dir, "64k");
    let path = dir.join("s.json");
    // A folder where the snapshot's temporary file goes: no snapshot can be written, so the
    // logs alone hold what was acknowledged.
    std::fs::create_dir(dir.join(format!(".s.json.tmp{}", std::process::id()))).expect("block snapshots");
    let metrics = std::sync::Arc::new(vmsh_scheduler::metrics::Metrics::new().expect("metrics"));
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let mut backend = FileBackend::new(path.clone()).compact_after(1024);
    backend.load().expect("a fresh state loads");
    let store =
        StateStore::new(std::sync::Arc::new(backend), Default::default(), NoHealth.start().recipient(), metrics, log)
            .start();
    let change = |ns: &str, last: i64| {
        let (ack, acked) = tokio::sync::oneshot::channel();
        let state = CadenceState { last_success_ms: Some(last), ..CadenceState::default() };
        store.do_send(Update {
            namespace: ns.into(),
            cadence: CadenceKind::Fast,
            state: std::sync::Arc::new(state),
            ack: Some(ack),
        });
        acked
    };
    // Acknowledged changes until the log outgrows 1 KiB: the next append rotates it first.
    let mut acknowledged = 0;
    while std::fs::metadata(wal::path(&path)).map_or(0, |m| m.len()) < 1024 {
        change(&format!("ns{acknowledged}"), acknowledged).await.expect("answered").expect("durable");
        acknowledged += 1;
    }
    let filler = dir.join("filler");
    let _ =
        std::process::Command::new("dd").args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"]).output();
    let failed = change("late", 1).await.expect("answered");
    assert!(failed.is_err(), "an append to a full disk was acknowledged");
    std::fs::remove_file(&filler).expect("free space");
    // Acknowledged once the retry got through, with the change that failed before it.
    change("later", 2).await.expect("answered").expect("durable once there is space");
    let (state, _) = vmsh_scheduler::storage::state::load(&path).expect("the state loads");
    let last = |ns: &str| state.namespaces.get(ns).and_then(|n| n.cadences.get(&CadenceKind::Fast)?.last_success_ms);
    let lost: Vec<i64> = (0..acknowledged).filter(|i| last(&format!("ns{i}")) != Some(*i)).collect();
    assert!(lost.is_empty(), "acknowledged changes lost from disk: {lost:?} of {acknowledged}");
    assert_eq!((last("late"), last("later")), (Some(1), Some(2)));
    drop(fs);
    report(
        "disk full right after the state log is rotated",
        1,
        "pass",
        json!({"acknowledgedBeforeFull": acknowledged}),
    );
}

#[test]
fn kill_9_between_recording_a_fee_replacement_and_sending_it_sends_that_one_and_spends_the_nonce_once() {
    let runs = count(1, 5);
    let held: u64 = (0..runs).map(|_| crate::evm::kill_9_between_recording_a_replacement_and_sending_it()).sum();
    report(
        "kill -9 between recording an EVM fee replacement and sending it",
        runs,
        "pass",
        json!({"sendsCutOff": held, "mined": "the recorded replacement, byte for byte", "noncesSpentPerRun": 1}),
    );
}
