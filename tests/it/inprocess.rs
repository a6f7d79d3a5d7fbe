//! The whole application in this process, on a manual clock: backoff, staleness and reload
//! checked without waiting on real time.
//!
//! Each test builds the `Application` as the binary does, but with a `ManualClock`, in a
//! temporary root with `local:` and `exec:` targets only, and runs it on a thread of its own
//! until the test stops it through a `Remote` (no signal handler is installed). Time moves
//! only when a test advances the clock; what the service did is read from its /health answer,
//! as the typed contract, polling with a deadline. Periods and backoff delays are minutes to
//! hours long, so a timer that still ran on real time would never fire within a test.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmsh_scheduler::anchor::local::{JournalEntry, LocalDriver, read_entries};
use vmsh_scheduler::app::control::{Remote, RemoteHandle};
use vmsh_scheduler::app::shutdown::Exit;
use vmsh_scheduler::app::startup::{Application, Deps, Options, StartupError};
use vmsh_scheduler::cli::verify::{Verdict, VerifyOptions, verify_receipt};
use vmsh_scheduler::clock::{Clock, ManualClock};
use vmsh_scheduler::config::Settings;
use vmsh_scheduler::config::settings::Overrides;
use vmsh_scheduler::health::contract::{Cadence, Health, ReloadResult};
use vmsh_scheduler::health::{NamespaceStatus, stale_after};
use vmsh_scheduler::model::ErrorClass;
use vmsh_scheduler::model::digest::sha256_hex;
use vmsh_scheduler::model::time::duration_ms;
use vmsh_scheduler::scheduler::backoff::BackoffPolicy;

/// Where the manual wall clock starts (2025-06-15).
const T0: i64 = 1_750_000_000_000;
/// VMSH_TICK_MS: the config is re-read every ten minutes of clock time.
const TICK_MS: i64 = 600_000;
/// VMSH_BASE_BACKOFF, in seconds.
const BASE_BACKOFF: f64 = 60.0;
/// VMSH_MAX_BACKOFF.
const MAX_BACKOFF: u32 = 3;
/// VMSH_ANCHOR_TIMEOUT_S.
const ANCHOR_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits, in real time, for the service to act on what it was shown.
const PATIENCE: Duration = Duration::from_secs(10);

const MINUTE: i64 = 60_000;
/// The batch every namespace anchors, in the shared batch folder.
const BATCH: &str = "out/batches/0001.json";

/// A scheduler running in this process on a manual clock.
struct InProcess {
    root: tempfile::TempDir,
    clock: ManualClock,
    addr: SocketAddr,
    remote: RemoteHandle,
    run: Option<JoinHandle<Result<Exit, StartupError>>>,
}

impl InProcess {
    /// Writes the namespaces file (and the targets file, if any) and a batch for every
    /// namespace into a new root, starts the application, and returns once it is ready.
    fn start(namespaces: &str, anchors: Option<&str>) -> Self {
        Self::start_with(namespaces, anchors, |_| {})
    }

    /// [`InProcess::start`], with `prepare` given the root to add files to before the start.
    fn start_with(namespaces: &str, anchors: Option<&str>, prepare: impl FnOnce(&Path)) -> Self {
        let root = tempfile::tempdir().expect("temp root");
        write(&root.path().join("namespaces.yaml"), namespaces);
        let batch = format!(r#"{{"id":"b1","root":"sha256:{}"}}"#, "ab".repeat(32));
        write(&root.path().join(BATCH), &batch);
        if let Some(anchors) = anchors {
            write(&root.path().join("anchors.yaml"), anchors);
        }
        prepare(root.path());
        let settings = Settings::from_env(&env(root.path(), anchors.is_some()), &Overrides::default())
            .expect("the harness's settings are valid");
        let clock = ManualClock::new(T0);
        let deps = Deps { clock: Arc::new(clock.clone()), log: slog::Logger::root(slog::Discard, slog::o!()) };
        let (remote, handle) = Remote::new();
        let (bound, addr) = std::sync::mpsc::channel();
        let run = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let app = Application::build(settings, Options::default(), deps)?;
                let _ = bound.send(app.addr());
                app.run_until_stopped(remote).await
            })
        });
        let Ok(addr) = addr.recv() else {
            let why = run.join().map(|r| r.err().map(|e| e.to_string()));
            panic!("the application did not build: {why:?}");
        };
        let app = Self { root, clock, addr, remote: handle, run: Some(run) };
        app.wait("the service to be ready", |h| h.ready.then_some(()));
        app
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.root.path().join(file)
    }

    /// Replaces the namespaces file as an editor would: a new file renamed over the old one.
    fn namespaces(&self, yaml: &str) {
        let (file, next) = (self.path("namespaces.yaml"), self.path("namespaces.yaml.new"));
        write(&next, yaml);
        std::fs::rename(next, file).expect("rename the namespaces file into place");
    }

    /// GET /health, read as the typed contract.
    fn health(&self) -> Health {
        let mut stream = TcpStream::connect(self.addr).expect("connect to the service");
        // HTTP/1.0: the answer is the body up to the end of the stream, never chunked.
        stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").expect("send the request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read the answer");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no body in {answer:?}"));
        serde_json::from_str(body).unwrap_or_else(|e| panic!("/health does not read as the contract: {e}\n{body}"))
    }

    /// GET /metrics, as Prometheus text.
    fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect to the service");
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send the request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read the answer");
        answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    /// Waits until `n` members wait in `target`'s collecting aggregates.
    fn wait_collecting(&self, target: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        let want = format!("vmsh_aggregate_collecting_leaves{{target=\"{target}\"}} {n}");
        loop {
            let text = self.metrics();
            if text.lines().any(|l| l == want) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {want:?} in /metrics:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls /health until `check` finds what it looks for, or panics after [`PATIENCE`]
    /// naming `what` and showing the last answer.
    fn wait<T>(&self, what: &str, mut check: impl FnMut(&Health) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = self.health();
            if let Some(found) = check(&health) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {what}; last /health: {health}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `namespace`'s fast cadence is between runs and `check` accepts it.
    fn wait_cadence(&self, namespace: &str, what: &str, check: impl Fn(&Cadence) -> bool) -> Cadence {
        self.wait(&format!("{namespace}: {what}"), |h| {
            h.cadence(namespace, "fast").filter(|c| !c.in_flight && c.next_due_ms.is_some() && check(c)).cloned()
        })
    }

    /// Moves both clocks on by `ms`; timers due by then fire.
    fn advance(&self, ms: i64) {
        self.clock.advance(ms);
    }

    /// Moves the clock on to wall time `at`.
    fn advance_to(&self, at: i64) {
        let by = at - self.clock.wall_ms();
        assert!(by >= 0, "the clock cannot go back to {at} from {}", self.clock.wall_ms());
        self.clock.advance(by);
    }

    /// Moves the clock one config tick on and waits until the files were read at that time.
    /// Ticks fall every [`TICK_MS`] from start-up, so call it when the clock is on one.
    fn tick(&self) {
        self.advance(TICK_MS);
        let now = self.clock.wall_ms();
        self.wait("the config tick", |h| (h.last_tick == Some(now)).then_some(()));
    }

    /// Asks the service to stop and waits until it has.
    fn stop(mut self) -> Result<Exit, StartupError> {
        self.remote.stop();
        self.run.take().expect("running").join().expect("the application's thread did not panic")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // A test that failed half-way still stops its service before its root goes.
        if let Some(run) = self.run.take() {
            self.remote.stop();
            let _ = run.join();
        }
    }
}

/// The environment the harness's settings are read from (not this process's).
fn env(root: &Path, anchors: bool) -> HashMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("VMSH_ROOT", root.display().to_string());
    env.insert("VMSH_NAMESPACES", root.join("namespaces.yaml").display().to_string());
    if anchors {
        env.insert("VMSH_ANCHORS", root.join("anchors.yaml").display().to_string());
    }
    env.insert("VMSH_STATE", root.join("state/scheduler.json").display().to_string());
    env.insert("METRICS_HOST", "127.0.0.1".into());
    env.insert("METRICS_PORT", "0".into());
    env.insert("VMSH_TICK_MS", TICK_MS.to_string());
    env.insert("VMSH_BASE_BACKOFF", BASE_BACKOFF.to_string());
    env.insert("VMSH_MAX_BACKOFF", MAX_BACKOFF.to_string());
    env.insert("VMSH_ANCHOR_TIMEOUT_S", ANCHOR_TIMEOUT.as_secs().to_string());
    env.insert("VMSH_SHUTDOWN_GRACE_S", "5".into());
    // A read is judged stuck on the injected clock: never within the hours a test advances.
    env.insert("VMSH_BATCH_READ_TIMEOUT_S", "3600".into());
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("create the folder");
    std::fs::write(path, content).expect("write the file");
}

/// A namespaces file with one fast cadence per `(namespace, target, every)`.
fn namespaces(cadences: &[(&str, &str, &str)]) -> String {
    let mut yaml = String::from("namespaces:\n");
    for (ns, target, every) in cadences {
        yaml.push_str(&format!("  {ns}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"{every}\"}}\n"));
    }
    yaml
}

#[test]
fn a_failing_exec_target_retries_after_golden_ratio_delays_by_error_class_exactly_when_the_clock_says() {
    let anchors = "exec:\n  net: {command: [sh, -c, 'exit 75']}\n  auth: {command: [sh, -c, 'exit 77']}\n  bad: {command: [sh, -c, 'exit 65']}\n";
    let classes = [("net", ErrorClass::Network), ("auth", ErrorClass::Auth), ("bad", ErrorClass::Validation)];
    let cadences: Vec<(&str, String, &str)> = classes.iter().map(|(ns, _)| (*ns, format!("exec:{ns}"), "1h")).collect();
    let cadences: Vec<(&str, &str, &str)> = cadences.iter().map(|(ns, t, e)| (*ns, t.as_str(), *e)).collect();
    let app = InProcess::start(&namespaces(&cadences), Some(anchors));
    let policy = BackoffPolicy { base_secs: BASE_BACKOFF, max_level: MAX_BACKOFF };

    // Each namespace failed once at start-up; from then on, the clock is moved to the next
    // retry due, and the one due then must have run at exactly that time.
    let mut failures: BTreeMap<&str, u32> = classes.iter().map(|(ns, _)| (*ns, 0)).collect();
    for ns in failures.clone().keys() {
        app.wait_cadence(ns, "the first failure", |c| c.failures == 1);
        failures.insert(ns, 1);
    }
    while failures.values().any(|f| *f <= MAX_BACKOFF + 1) {
        let health = app.health();
        let mut dues = BTreeMap::new();
        for (ns, class) in &classes {
            let c = health.cadence(ns, "fast").expect("every namespace is in /health");
            let error = c.last_error.as_ref().unwrap_or_else(|| panic!("{ns} failed, yet shows no error: {c}"));
            assert_eq!(error.class, *class, "{ns}: {c}");
            assert_eq!(c.failures, failures[ns], "{ns}: {c}");
            let level = failures[ns].min(MAX_BACKOFF);
            assert_eq!(c.backoff, level, "{ns}'s backoff level after {} failures: {c}", failures[ns]);
            let due = c.next_due_ms.unwrap_or_else(|| panic!("{ns} has no next due time: {c}"));
            assert_eq!(
                due - error.at_ms,
                duration_ms(policy.delay(level, *class)),
                "{ns} retries {}s after failing at level {level}: {c}",
                (due - error.at_ms) as f64 / 1000.0
            );
            dues.insert(*ns, due);
        }
        let next = *dues.values().min().expect("three namespaces");
        app.advance_to(next);
        for (ns, due) in dues.into_iter().filter(|(_, due)| *due == next) {
            let retried = app.wait_cadence(ns, "the retry's failure", |c| c.failures == failures[ns] + 1);
            let at = retried.last_error.as_ref().map(|e| e.at_ms);
            assert_eq!(at, Some(due), "{ns} retried at another time than its due time {due}: {retried}");
            *failures.get_mut(ns).expect("known") += 1;
        }
    }
    assert_eq!(app.health().namespace("net").map(|n| n.status.clone()), Some(NamespaceStatus::BackingOff.into()));
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn a_namespace_whose_anchors_stop_goes_stale_two_periods_and_an_anchor_timeout_after_its_last_success() {
    let app = InProcess::start(&namespaces(&[("s", "local:s", "10m")]), None);
    let period = 10 * MINUTE;
    let first = app.wait_cadence("s", "the first anchor", |c| c.last_success_ms.is_some());
    assert_eq!(first.last_success_ms, Some(T0), "{first}");

    // While it anchors every period, it never goes stale, however long that goes on.
    for n in 1..=3 {
        app.advance(period);
        let c = app.wait_cadence("s", "the next anchor", |c| c.last_success_ms == Some(T0 + n * period));
        assert_eq!(c.next_due_ms, Some(T0 + (n + 1) * period), "{c}");
        assert_eq!(app.health().namespace("s").map(|n| n.status.clone()), Some(NamespaceStatus::Ok.into()));
    }
    let last_success = T0 + 3 * period;

    // Then its batch goes: anchors stop, and the last success ages on the clock alone.
    std::fs::remove_file(app.path(BATCH)).expect("remove the batch");
    app.advance(period);
    app.wait_cadence("s", "a run that finds no batch", |c| c.waiting.as_deref() == Some("no batch"));
    let limit = duration_ms(stale_after(Duration::from_millis(period as u64), ANCHOR_TIMEOUT));
    app.advance_to(last_success + limit);
    let h = app.health();
    assert_eq!(h.namespace("s").map(|n| n.status.clone()), Some(NamespaceStatus::Ok.into()), "not stale yet: {h}");
    app.advance(1);
    let h = app.health();
    let s = h.namespace("s").expect("s is in /health");
    assert_eq!(s.status, NamespaceStatus::Stale, "{h}");
    assert_eq!(h.cadence("s", "fast").and_then(|c| c.last_success_ms), Some(last_success), "{h}");
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn a_changed_namespaces_file_is_applied_on_the_clock_tick_once_it_reads_the_same_twice() {
    let app = InProcess::start(&namespaces(&[("a", "local:a", "1h")]), None);
    app.wait_cadence("a", "the first anchor", |c| c.last_success_ms == Some(T0));
    let started_with = app.health().config.expect("config in /health").hash;

    let changed = namespaces(&[("a", "local:a", "1h"), ("b", "local:b", "1h")]);
    app.namespaces(&changed);
    // The first read sees the change; it is applied only once a second read agrees.
    app.tick();
    let h = app.health();
    assert_eq!(h.config.as_ref().map(|c| c.hash.as_str()), Some(started_with.as_str()), "applied too soon: {h}");
    assert!(h.namespace("b").is_none(), "{h}");
    app.tick();
    let applied_at = app.clock.wall_ms();
    let config = app.wait("the new config in /health", |h| {
        h.config.clone().filter(|c| c.last_reload.as_ref().is_some_and(|r| r.result == ReloadResult::Success))
    });
    assert_eq!(config.hash, sha256_hex(changed.as_bytes()));
    assert_eq!(config.loaded_at_ms, applied_at);
    // The new namespace starts at once, on the clock's time.
    app.wait_cadence("b", "its first anchor", |c| c.last_success_ms == Some(applied_at));
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn a_bad_namespaces_file_keeps_the_running_config_and_health_says_why() {
    let app = InProcess::start(&namespaces(&[("a", "local:a", "1h")]), None);
    app.wait_cadence("a", "the first anchor", |c| c.last_success_ms == Some(T0));
    let running = app.health().config.expect("config in /health").hash;

    let bad = namespaces(&[("a", "local:a", "0s")]);
    app.namespaces(&bad);
    app.tick();
    app.tick();
    let h = app.wait("the rejection in /health", |h| {
        h.config
            .as_ref()
            .and_then(|c| c.last_reload.as_ref())
            .is_some_and(|r| r.result == ReloadResult::Failure)
            .then(|| h.clone())
    });
    let config = h.config.as_ref().expect("config");
    assert_eq!(config.hash, running, "the running config's hash changed: {h}");
    let reload = config.last_reload.as_ref().expect("last reload");
    assert_eq!(reload.hash, sha256_hex(bad.as_bytes()));
    assert!(
        reload.errors.iter().any(|e| e.contains("namespace \"a\"") && e.contains("cadence.fast.every")),
        "the errors name the namespace and the field: {:?}",
        reload.errors
    );
    assert_eq!(h.status.as_str(), "degraded", "{h}");
    assert_eq!(h.cadence("a", "fast").map(|c| c.every.as_str()), Some("1h"), "{h}");

    // The old config keeps running: `a` anchors on when its hour is up.
    app.advance_to(T0 + 60 * MINUTE);
    app.wait_cadence("a", "the next anchor", |c| c.last_success_ms == Some(T0 + 60 * MINUTE));
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

/// Every receipt file of `namespace` in `root`.
fn receipt_paths(root: &Path, namespace: &str) -> Vec<std::path::PathBuf> {
    let dir = root.join("out/anchors").join(vmsh_scheduler::model::fsname::encode(namespace));
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// The journal lines of `local:<name>` so far.
fn journal(app: &InProcess, name: &str) -> Vec<JournalEntry> {
    let path = LocalDriver::journal_path(app.root.path(), name);
    if !path.exists() {
        return Vec::new();
    }
    // A line being appended may read torn: none then, and the caller looks again.
    read_entries(&path).unwrap_or_default()
}

/// `n` namespaces `agg00`, `agg01` … anchoring fast to `target` every `every`.
fn many(n: usize, target: &str, every: &str) -> (Vec<String>, String) {
    let names: Vec<String> = (0..n).map(|i| format!("agg{i:02}")).collect();
    let cadences: Vec<(&str, &str, &str)> = names.iter().map(|ns| (ns.as_str(), target, every)).collect();
    let yaml = namespaces(&cadences);
    (names, yaml)
}

/// Checks that each namespace's one receipt for the aggregate of journal line `line` verifies
/// and proves its leaf under that line's root.
fn every_receipt_verifies_under(app: &InProcess, names: &[String], line: &JournalEntry) {
    for ns in names {
        let paths = receipt_paths(app.root.path(), ns);
        let path = paths.last().unwrap_or_else(|| panic!("{ns} has no receipt"));
        let receipt: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).expect("read the receipt")).expect("a receipt is JSON");
        assert_eq!(receipt["namespace"], ns.as_str(), "{receipt}");
        assert_eq!(
            format!("sha256:{}", receipt["inclusion"]["root"].as_str().unwrap_or_default()),
            line.root,
            "{ns}'s inclusion root is the journal line's root: {receipt}"
        );
        let report = verify_receipt(path, &VerifyOptions { root: app.root.path().to_path_buf(), ..Default::default() });
        assert_eq!(report.verdict, Verdict::Verified, "{ns}: {report:?}");
    }
}

#[test]
fn twenty_namespaces_on_an_aggregated_local_target_write_one_journal_line_per_window_and_every_receipt_verifies() {
    let (names, yaml) = many(20, "local:j", "1h");
    let app = InProcess::start(&yaml, Some("local:\n  j: {aggregate: {window: 10s}}\n"));
    for period in 0..2 {
        app.wait_collecting("local:j", 20);
        assert_eq!(journal(&app, "j").len(), period, "nothing is anchored before the window is over");
        app.advance(10_000);
        for ns in &names {
            app.wait_cadence(ns, "the aggregate's anchor", |c| {
                c.last_success_ms == Some(T0 + period as i64 * 60 * MINUTE)
            });
        }
        let lines = journal(&app, "j");
        assert_eq!(lines.len(), period + 1, "one journal line per window: {lines:?}");
        let line = &lines[period];
        assert_eq!((line.namespace.as_str(), line.batch_id.as_str()), ("", "aggregate-20"), "{line:?}");
        assert_eq!(line.attempt_id, line.root.trim_start_matches("sha256:"), "{line:?}");
        every_receipt_verifies_under(&app, &names, line);
        let health = app.health();
        let mut indexes = std::collections::BTreeSet::new();
        for ns in &names {
            assert_eq!(receipt_paths(app.root.path(), ns).len(), period + 1, "{ns}: one receipt per period");
            let shown = health.cadence(ns, "fast").and_then(|c| c.last_aggregate.clone());
            let shown = shown.unwrap_or_else(|| panic!("{ns} shows no last aggregate: {health}"));
            assert_eq!((format!("sha256:{}", shown.root), shown.size), (line.root.clone(), 20), "{ns}");
            indexes.insert(shown.index);
        }
        assert_eq!(indexes, (0..20).collect(), "each namespace shows its own leaf");
        app.advance_to(T0 + (period as i64 + 1) * 60 * MINUTE);
    }
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn twenty_namespaces_with_max_leaves_eight_make_three_journal_lines_two_full_at_once_and_the_rest_at_the_window() {
    let (names, yaml) = many(20, "local:j", "1h");
    let app = InProcess::start(&yaml, Some("local:\n  j: {aggregate: {window: 10s, maxLeaves: 8}}\n"));
    app.wait("two full aggregates anchored", |_| (journal(&app, "j").len() == 2).then_some(()));
    // Sixteen sealed: four waiting means every namespace has joined.
    app.wait_collecting("local:j", 4);
    app.advance(10_000);
    for ns in &names {
        app.wait_cadence(ns, "its aggregate's anchor", |c| c.last_success_ms == Some(T0));
    }
    let lines = journal(&app, "j");
    let sizes: Vec<&str> = lines.iter().map(|l| l.batch_id.as_str()).collect();
    assert_eq!(sizes, ["aggregate-8", "aggregate-8", "aggregate-4"], "{lines:?}");
    let mut roots = std::collections::BTreeSet::new();
    for ns in &names {
        let paths = receipt_paths(app.root.path(), ns);
        assert_eq!(paths.len(), 1, "{ns}");
        let receipt: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&paths[0]).expect("read")).expect("JSON");
        roots.insert(format!("sha256:{}", receipt["inclusion"]["root"].as_str().unwrap_or_default()));
        let report =
            verify_receipt(&paths[0], &VerifyOptions { root: app.root.path().to_path_buf(), ..Default::default() });
        assert_eq!(report.verdict, Verdict::Verified, "{ns}: {report:?}");
    }
    let line_roots: std::collections::BTreeSet<String> = lines.iter().map(|l| l.root.clone()).collect();
    assert_eq!(roots, line_roots, "the receipts share out the three lines' roots");
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn a_namespace_removed_while_its_aggregate_collects_leaves_it_and_the_others_anchor_without_it() {
    let (names, yaml) = many(3, "local:j", "2h");
    let app = InProcess::start(&yaml, Some("local:\n  j: {aggregate: {window: 1h}}\n"));
    app.wait_collecting("local:j", 3);
    let (kept, removed) = (&names[..2], &names[2]);
    let (_, fewer) = many(2, "local:j", "2h");
    app.namespaces(&fewer);
    app.tick();
    app.tick();
    app.wait("the namespace gone", |h| h.namespace(removed).is_none().then_some(()));
    // It left the aggregate at once, not when the window is over.
    app.wait_collecting("local:j", 2);
    assert!(journal(&app, "j").is_empty());
    app.advance_to(T0 + 60 * MINUTE);
    for ns in kept {
        app.wait_cadence(ns, "the aggregate's anchor", |c| c.last_success_ms == Some(T0));
    }
    let lines = journal(&app, "j");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].batch_id, "aggregate-2", "{lines:?}");
    every_receipt_verifies_under(&app, kept, &lines[0]);
    assert!(receipt_paths(app.root.path(), removed).is_empty(), "the namespace that left has no receipt");
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn a_namespace_whose_batch_cannot_be_read_stays_out_and_holds_no_one_back() {
    let (names, yaml) = many(3, "local:j", "1h");
    let unreadable = names[2].clone();
    let app = InProcess::start_with(&yaml, Some("local:\n  j: {aggregate: {window: 10s}}\n"), |root| {
        let own = root.join("out/batches").join(vmsh_scheduler::model::fsname::encode(&unreadable));
        write(&own.join("0001.json"), "not a batch");
    });
    app.wait_cadence(&unreadable, "its batch read to fail", |c| c.failures == 1);
    app.wait_collecting("local:j", 2);
    app.advance(10_000);
    for ns in &names[..2] {
        app.wait_cadence(ns, "the aggregate's anchor", |c| c.last_success_ms == Some(T0));
    }
    let lines = journal(&app, "j");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].batch_id, "aggregate-2", "the unreadable one is no leaf: {lines:?}");
    every_receipt_verifies_under(&app, &names[..2], &lines[0]);
    assert!(receipt_paths(app.root.path(), &unreadable).is_empty());
    let c = app.health().cadence(&unreadable, "fast").cloned().expect("in /health");
    assert!(c.last_success_ms.is_none() && c.last_error.is_some(), "{c}");
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}

#[test]
fn an_aggregates_failure_is_each_members_failure_with_a_backoff_of_its_own() {
    let (names, yaml) = many(3, "exec:down", "1h");
    let calls = tempfile::NamedTempFile::new().expect("a file for the calls");
    let anchors = format!(
        "exec:\n  down: {{command: [sh, -c, 'echo \"$VMSH_AGGREGATE_SIZE\" >> {}; exit 75'], aggregate: {{window: 10s}}}}\n",
        calls.path().display()
    );
    let app = InProcess::start(&yaml, Some(&anchors));
    let policy = BackoffPolicy { base_secs: BASE_BACKOFF, max_level: MAX_BACKOFF };
    app.wait_collecting("exec:down", 3);
    app.advance(10_000);
    for ns in &names {
        let c = app.wait_cadence(ns, "the aggregate's failure", |c| c.failures == 1);
        let error = c.last_error.as_ref().unwrap_or_else(|| panic!("{ns} failed, yet shows no error: {c}"));
        assert_eq!(error.class, ErrorClass::Network, "{ns}: {c}");
        assert_eq!(c.backoff, 1, "{ns}'s own backoff: {c}");
        let due = c.next_due_ms.unwrap_or_else(|| panic!("{ns} has no retry due: {c}"));
        assert_eq!(due - error.at_ms, duration_ms(policy.delay(1, ErrorClass::Network)), "{ns}: {c}");
    }
    let sent = std::fs::read_to_string(calls.path()).expect("read the calls");
    assert_eq!(sent.lines().collect::<Vec<_>>(), ["3"], "one command for the three members");
    assert!(matches!(app.stop(), Ok(Exit::Clean)));
}
