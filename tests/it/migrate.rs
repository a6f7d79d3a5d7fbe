//! `migrate-state`: the state moved from the state file into etcd and back, found there as a
//! replica and a start load it, and every refusal that keeps it from running beside the
//! service or from writing over state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vmsh_scheduler::cluster::claim::Keys;
use vmsh_scheduler::cluster::etcd::{Etcd, EtcdOptions, EtcdTls};
use vmsh_scheduler::cluster::member;
use vmsh_scheduler::model::CadenceKind;
use vmsh_scheduler::storage::state::backend::{Change, StateBackend};
use vmsh_scheduler::storage::state::etcd::EtcdBackend;
use vmsh_scheduler::storage::state::{self, CadenceState, StateFile, wal};

use crate::support::etcd::EtcdCluster;
use crate::support::{Root, Scheduler, base_env, command, root_hex, wait_for};

const PREFIX: &str = "/vmsh-scheduler/";
const NAMESPACES: [&str; 3] = ["dao:vaultmesh", "fin:clearing", "ops:audit"];
const LONG: Duration = Duration::from_secs(20);

/// What one `migrate-state` run did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn said(&self) -> String {
        format!("exit {:?}\nstdout:\n{}stderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `vmsh-scheduler migrate-state ARGS` on `root`'s settings, with the etcd endpoints
/// (when `etcd` is given) and `extra` variables.
fn migrate(root: &Root, etcd: Option<&EtcdCluster>, extra: &[(&str, &str)], args: &[&str]) -> Run {
    let mut env = base_env(root);
    if let Some(etcd) = etcd {
        env.insert("VMSH_ETCD_ENDPOINTS".into(), etcd.endpoints().join(","));
    }
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let mut all = vec!["migrate-state"];
    all.extend_from_slice(args);
    let out = command(root, &env, &all).output().expect("run migrate-state");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Run { code: out.status.code(), stdout: text(&out.stdout), stderr: text(&out.stderr) }
}

fn client(etcd: &EtcdCluster) -> Arc<Etcd> {
    let options = EtcdOptions {
        endpoints: etcd.endpoints(),
        tls: EtcdTls::default(),
        auth: None,
        request_timeout: Duration::from_secs(5),
    };
    Arc::new(Etcd::new(options).expect("a client"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The state in etcd as a replica loads it at start-up.
fn replica_loads(etcd: &EtcdCluster) -> StateFile {
    let mut backend = EtcdBackend::new(client(etcd), Keys::new(PREFIX), "check", 0, "etcd".into()).expect("backend");
    backend.load().expect("the state in etcd loads").state
}

/// How many keys are under `dir` of the prefix (`state/`, `log/`).
fn keys_under(etcd: &EtcdCluster, dir: &str) -> usize {
    let prefix = format!("{PREFIX}{dir}");
    runtime().block_on(client(etcd).get_prefix(prefix.as_bytes())).expect("range").0.len()
}

/// The state file and its logs as a start loads them.
fn start_loads(path: &Path) -> StateFile {
    state::load(path).expect("the state file loads").0
}

fn namespaces_yaml() -> String {
    let mut yaml = String::from("namespaces:\n");
    for (i, ns) in NAMESPACES.iter().enumerate() {
        yaml.push_str(&format!("  {ns}:\n    cadence:\n      fast: {{target: \"local:j{i}\", every: \"1h\"}}\n"));
    }
    yaml
}

/// A root whose state a real scheduler wrote: each namespace anchored once, then the process
/// killed with SIGKILL, so the state is in the log beside the state file. Returns the state
/// as a start loads it.
fn anchored_root() -> (Root, StateFile) {
    let root = Root::new();
    root.namespaces(&namespaces_yaml());
    for (i, ns) in NAMESPACES.iter().enumerate() {
        root.batch(Some(ns), "0001.json", &format!("b{i}"), &root_hex(i as u8 + 1));
    }
    let mut scheduler = Scheduler::start(&root);
    let path = root.state_path();
    let anchored = |st: &StateFile| {
        NAMESPACES.iter().all(|ns| {
            let fast = st.namespaces.get(*ns).and_then(|n| n.cadences.get(&CadenceKind::Fast));
            fast.is_some_and(|c| c.last_success_ms.is_some() && c.attempt.is_none())
        })
    };
    wait_for(LONG, "every namespace's anchor in the state", || {
        state::load(&path).ok().map(|(st, _)| st).filter(anchored).map(drop)
    });
    scheduler.kill9();
    assert!(wal::path(&path).exists(), "the state is (partly) in the log");
    let state = start_loads(&path);
    assert!(anchored(&state));
    (root, state)
}

/// The pid a lock file's record names.
fn lock_holder(state_path: &Path) -> String {
    let record = std::fs::read_to_string(vmsh_scheduler::storage::lockfile::state_lock_path(state_path))
        .expect("the lock record");
    record.split_whitespace().next().expect("a pid").to_string()
}

/// The files beside `path` whose name starts with its name and holds `.replaced-`.
fn set_aside(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().expect("name").to_string_lossy().to_string();
    let mut found: Vec<PathBuf> = std::fs::read_dir(path.parent().expect("folder"))
        .expect("read folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            n.starts_with(&name) && n.contains(".replaced-")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn the_state_moves_into_etcd_as_a_replica_loads_it_and_back_into_a_file_unchanged() {
    let (root, original) = anchored_root();
    let source = root.state_text();
    let etcd = EtcdCluster::start(1);
    // Settings only the service reads do not stop it.
    let service_only = [("VMSH_TICK_MS", "soon"), ("METRICS_PORT", "none")];
    let run = migrate(&root, Some(&etcd), &service_only, &["--to", "etcd"]);
    assert_eq!(run.code, Some(0), "{}", run.said());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 4, "one line per step: {}", run.said());
    assert!(lines.last().is_some_and(|l| l.starts_with("done: 3 namespace(s) moved")), "{}", run.said());
    assert!(run.stderr.is_empty(), "{}", run.said());

    let in_etcd = replica_loads(&etcd);
    assert_eq!(in_etcd.namespaces.keys().collect::<Vec<_>>(), original.namespaces.keys().collect::<Vec<_>>());
    for (ns, st) in &original.namespaces {
        assert_eq!(in_etcd.namespaces[ns].cadences, st.cadences, "{ns}'s cadences in etcd");
    }
    assert_eq!(keys_under(&etcd, "state/"), 3, "one snapshot per namespace");
    assert_eq!(root.state_text(), source, "the state file and its log are left as they were");

    let back = root.path().join("back/scheduler.json");
    let shown = back.display().to_string();
    let run = migrate(&root, Some(&etcd), &[("VMSH_STATE", &shown)], &["--to", "file"]);
    assert_eq!(run.code, Some(0), "{}", run.said());
    assert!(run.stdout.lines().last().is_some_and(|l| l.starts_with("done: 3 namespace(s) moved")), "{}", run.said());
    assert_eq!(start_loads(&back), original, "the state file holds every namespace as the original did");
    assert!(!wal::path(&back).exists() && !wal::rotated_path(&back).exists(), "a complete state file, no log");
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&back).expect("the state file")).expect("JSON");
    assert_eq!(on_disk["namespaces"].as_object().map(|o| o.len()), Some(3), "the snapshot alone holds it all");
}

#[test]
fn the_state_does_not_move_while_a_replica_is_registered_under_the_prefix() {
    let (root, _) = anchored_root();
    let etcd = EtcdCluster::start(1);
    let keys = Keys::new(PREFIX);
    let registration = member::Registration { node: "replica-7".into(), version: "test".into(), joined_ms: 0 };
    runtime().block_on(member::join(&client(&etcd), &keys, &registration, 60)).expect("a replica joins");

    let run = migrate(&root, Some(&etcd), &[], &["--to", "etcd"]);
    assert_eq!(run.code, Some(5), "{}", run.said());
    assert!(run.stderr.contains("\"replica-7\"") && run.stderr.contains("stop every replica"), "{}", run.said());
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.said());
    assert_eq!(keys_under(&etcd, "state/") + keys_under(&etcd, "log/"), 0, "nothing written into etcd");

    let back = root.path().join("back/scheduler.json");
    let shown = back.display().to_string();
    let run = migrate(&root, Some(&etcd), &[("VMSH_STATE", &shown)], &["--to", "file", "--force"]);
    assert_eq!(run.code, Some(5), "{}", run.said());
    assert!(run.stderr.contains("\"replica-7\""), "{}", run.said());
    assert!(!back.exists(), "no state file written");
}

#[test]
fn the_state_does_not_move_while_a_scheduler_runs_on_the_state_file() {
    let root = Root::new();
    root.namespaces(&namespaces_yaml()).batch(Some(NAMESPACES[0]), "0001.json", "b1", &root_hex(1));
    let _running = Scheduler::start(&root);
    let etcd = EtcdCluster::start(1);
    let pid = lock_holder(&root.state_path());
    let lock = vmsh_scheduler::storage::lockfile::state_lock_path(&root.state_path());
    for args in [&["--to", "etcd"][..], &["--to", "etcd", "--force"], &["--to", "file", "--force"]] {
        let run = migrate(&root, Some(&etcd), &[], args);
        assert_eq!(run.code, Some(5), "{args:?}: {}", run.said());
        let line = run.stderr.trim_end();
        assert!(!line.contains('\n'), "one line: {}", run.said());
        for part in ["is in use by another vmsh-scheduler", &lock.display().to_string(), &format!("pid {pid}")] {
            assert!(line.contains(part), "{part:?} missing: {}", run.said());
        }
    }
    assert_eq!(keys_under(&etcd, "state/") + keys_under(&etcd, "log/"), 0, "nothing written into etcd");
    assert!(set_aside(&root.state_path()).is_empty(), "nothing moved aside");
}

#[test]
fn a_prefix_that_holds_state_is_replaced_only_with_force_and_then_wholly() {
    let (root, first) = anchored_root();
    let etcd = EtcdCluster::start(1);
    assert_eq!(migrate(&root, Some(&etcd), &[], &["--to", "etcd"]).code, Some(0));
    // A replica's log entry for a namespace the file no longer has.
    let ghost = json!({"changes": [{"ns": "ghost:ns", "cadence": "fast", "state": {"backoff": 3}}]});
    let key = Keys::new(PREFIX).log("gone", 1);
    runtime().block_on(client(&etcd).put(&key, ghost.to_string().as_bytes(), 0)).expect("put");

    let mut changed = serde_json::to_value(&first).expect("JSON");
    changed["namespaces"]["fin:clearing"]["cadences"]["fast"]["backoff"] = json!(4);
    changed["namespaces"]["new:one"] = json!({"cadences": {}});
    root.write_state(&changed);
    let second = start_loads(&root.state_path());
    assert_ne!(second, first);

    let run = migrate(&root, Some(&etcd), &[], &["--to", "etcd"]);
    assert_eq!(run.code, Some(3), "{}", run.said());
    assert!(run.stderr.contains("already holds state") && run.stderr.contains("--force"), "{}", run.said());
    let kept = replica_loads(&etcd);
    assert_eq!(kept.namespaces["fin:clearing"], first.namespaces["fin:clearing"], "etcd left as it was");
    assert!(kept.namespaces.contains_key("ghost:ns"));

    let run = migrate(&root, Some(&etcd), &[], &["--to", "etcd", "--force"]);
    assert_eq!(run.code, Some(0), "{}", run.said());
    assert!(run.stdout.lines().last().is_some_and(|l| l.starts_with("done: 4 namespace(s) moved")), "{}", run.said());
    assert_eq!(replica_loads(&etcd).namespaces, second.namespaces, "the file's state, and nothing else");
    assert_eq!(keys_under(&etcd, "log/"), 0, "the old log is gone with the old snapshots");
}

#[test]
fn an_existing_state_file_is_replaced_only_with_force_and_then_kept_aside_with_its_log() {
    let (root, in_etcd) = anchored_root();
    let etcd = EtcdCluster::start(1);
    assert_eq!(migrate(&root, Some(&etcd), &[], &["--to", "etcd"]).code, Some(0));
    // The file moves on: another state, with a change only in its log.
    let path = root.state_path();
    root.write_state(&json!({"version": 1, "namespaces": {"other:ns": {"cadences": {}}}}));
    let mut record = Vec::new();
    let state = CadenceState { backoff: 6, ..CadenceState::default() };
    wal::encode_into(
        &mut record,
        &Change { namespace: "other:ns".into(), cadence: CadenceKind::Fast, state: std::sync::Arc::new(state) },
    );
    std::fs::write(wal::path(&path), &record).expect("a log");
    let (file_bytes, log_bytes) = (std::fs::read(&path).expect("file"), record);

    let run = migrate(&root, Some(&etcd), &[], &["--to", "file"]);
    assert_eq!(run.code, Some(3), "{}", run.said());
    assert!(run.stderr.contains("already holds state") && run.stderr.contains("--force"), "{}", run.said());
    assert_eq!(std::fs::read(&path).expect("file"), file_bytes, "the state file untouched");
    assert_eq!(std::fs::read(wal::path(&path)).expect("log"), log_bytes, "its log untouched");

    let run = migrate(&root, Some(&etcd), &[], &["--to", "file", "--force"]);
    assert_eq!(run.code, Some(0), "{}", run.said());
    assert_eq!(start_loads(&path), in_etcd, "etcd's state, with no old log replayed over it");
    assert!(!wal::path(&path).exists(), "the old log is no longer beside the new file");
    let aside = set_aside(&path);
    let read = |p: &PathBuf| std::fs::read(p).expect("kept");
    let kept: Vec<Vec<u8>> = aside.iter().map(read).collect();
    assert_eq!(aside.len(), 2, "the file and its log kept: {aside:?}");
    assert!(kept.contains(&file_bytes) && kept.contains(&log_bytes), "kept as they were: {aside:?}");
}

#[test]
fn migrate_state_is_stopped_by_its_own_settings_and_never_shows_a_password() {
    let root = Root::new();
    root.write_state(&json!({"version": 1, "namespaces": {"a:b": {"cadences": {}}}}));
    let run = migrate(&root, None, &[("VMSH_TICK_MS", "soon")], &["--to", "etcd"]);
    assert_eq!(run.code, Some(2), "{}", run.said());
    assert!(run.stderr.contains("VMSH_ETCD_ENDPOINTS is not set"), "{}", run.said());
    let run = migrate(
        &root,
        None,
        &[("VMSH_ETCD_ENDPOINTS", "http://127.0.0.1:9"), ("VMSH_ETCD_LEASE_TTL_S", "1")],
        &["--to", "etcd"],
    );
    assert_eq!(run.code, Some(2), "{}", run.said());
    assert!(run.stderr.contains("VMSH_ETCD_LEASE_TTL_S"), "{}", run.said());
    let run = migrate(&root, None, &[], &["--to", "nowhere"]);
    assert_eq!(run.code, Some(2), "{}", run.said());
    // Credentials in an endpoint are refused, and never shown.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let with_password = format!("http://root:hunter2@127.0.0.1:{port}");
    let run = migrate(&root, None, &[("VMSH_ETCD_ENDPOINTS", &with_password)], &["--to", "etcd"]);
    assert_eq!(run.code, Some(2), "{}", run.said());
    assert!(run.stderr.contains("VMSH_ETCD_PASSWORD_FILE"), "{}", run.said());
    assert!(!run.said().contains("hunter2"), "{}", run.said());
    // Nothing listens on the endpoint: etcd is unreachable, and named.
    let endpoint = format!("http://127.0.0.1:{port}");
    let run = migrate(&root, None, &[("VMSH_ETCD_ENDPOINTS", &endpoint)], &["--to", "etcd"]);
    assert_eq!(run.code, Some(3), "{}", run.said());
    assert!(run.stderr.contains(&format!("127.0.0.1:{port}")), "{}", run.said());
    // Nothing to move: no state file, or no state under the prefix.
    let empty = Root::new();
    let run = migrate(&empty, None, &[("VMSH_ETCD_ENDPOINTS", &endpoint)], &["--to", "etcd"]);
    assert_eq!(run.code, Some(3), "{}", run.said());
    assert!(run.stderr.contains("holds no state"), "{}", run.said());
    let etcd = EtcdCluster::start(1);
    let run = migrate(&empty, Some(&etcd), &[], &["--to", "file"]);
    assert_eq!(run.code, Some(3), "{}", run.said());
    assert!(run.stderr.contains("holds no state") && run.stderr.contains("VMSH_ETCD_PREFIX"), "{}", run.said());
    assert!(!empty.state_path().exists(), "no state file written");
}

#[test]
fn a_replica_started_on_the_moved_state_anchors_nothing_again_and_no_migration_runs_beside_it() {
    let (root, original) = anchored_root();
    let etcd = EtcdCluster::start(1);
    assert_eq!(migrate(&root, Some(&etcd), &[], &["--to", "etcd"]).code, Some(0));
    let endpoints = etcd.endpoints().join(",");
    let mut replica =
        Scheduler::start_with(&root, &[("VMSH_ETCD_ENDPOINTS", &endpoints), ("VMSH_NODE_ID", "replica-1")]);
    // Each cadence resumes where the file left it: next due in an hour, not anchored anew.
    let resumed = wait_for(LONG, "the replica to schedule every namespace", || {
        NAMESPACES
            .iter()
            .map(|ns| replica.cadence(ns, "fast").filter(|c| c.next_due_ms.is_some()))
            .collect::<Option<Vec<_>>>()
    });
    for (ns, cadence) in NAMESPACES.iter().zip(&resumed) {
        let before = original.namespaces[*ns].cadences[&CadenceKind::Fast].last_success_ms;
        assert_eq!(cadence.last_success_ms, before, "{ns} resumed from the moved state");
        assert_eq!(root.receipts(ns).len(), 1, "{ns} anchored once, before the move");
    }
    let back = root.path().join("back/scheduler.json");
    let shown = back.display().to_string();
    let run = migrate(&root, Some(&etcd), &[("VMSH_STATE", &shown)], &["--to", "file"]);
    assert_eq!(run.code, Some(5), "{}", run.said());
    assert!(run.stderr.contains("\"replica-1\""), "{}", run.said());
    assert!(!back.exists());
    // Stopped, the replica folds its state and leaves: the state moves back.
    replica.signal(libc::SIGTERM);
    assert_eq!(replica.wait_exit(LONG).code(), Some(0), "{}", replica.stderr());
    let run = migrate(&root, Some(&etcd), &[("VMSH_STATE", &shown)], &["--to", "file"]);
    assert_eq!(run.code, Some(0), "{}", run.said());
    assert_eq!(start_loads(&back), original);
}
