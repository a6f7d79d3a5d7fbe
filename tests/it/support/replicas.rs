//! A fleet for cluster mode's scenarios: a real etcd cluster on loopback, scheduler replicas
//! (the real binary) sharing one VMSH_ROOT as they would share a volume, and 200 namespaces
//! on 1–2 s cadences anchoring to a handful of `local:` journals; then the checks every
//! scenario ends with, read from what counts: the commit points in etcd and the files.
//!
//! What the checks read:
//! - **Committed anchors**: each replica appends to its own file per journal
//!   (`out/journal/<name>@<node>.jsonl`); a line counts up to the head etcd holds for that
//!   file (`<prefix>journals/<name>@<node>`). Lines past it never counted.
//! - **Receipts**: a receipt counts if a committed line of its namespace's index names it with
//!   the SHA-256 of its bytes: each replica appends to `out/anchors/<ns>/receipts@<node>.jsonl`,
//!   whose lines count up to the head etcd holds at `<prefix>receipts/<ns>@<node>`.
//! - **History**: every change etcd made since the fleet started, read back through etcd's
//!   watch API from the first revision. It says, at each revision, who held each namespace,
//!   which attempts were recorded in the state (with their period's nominal due time), and
//!   who wrote what: enough to judge periods and fencing exactly instead of from timings.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use vmsh_scheduler::anchor::local::{GENESIS, JournalEntry};
use vmsh_scheduler::cluster::claim::Keys;
use vmsh_scheduler::cluster::etcd::{Etcd, EtcdOptions, EtcdTls, prefix_end};
use vmsh_scheduler::cluster::ledger::ChainHead as JournalHead;
use vmsh_scheduler::cluster::ownership;
use vmsh_scheduler::model::CadenceKind;
use vmsh_scheduler::model::digest::sha256_hex;
use vmsh_scheduler::storage::state::StateFile;
use vmsh_scheduler::storage::state::backend::{Change, StateBackend};
use vmsh_scheduler::storage::state::etcd::EtcdBackend;

use super::etcd::{EtcdCluster, post};
use super::{Root, Scheduler, base_env, command, now_ms, root_hex};

/// Namespaces in the fleet.
const NAMESPACES: usize = 200;
/// The `local:` journals they share.
const JOURNALS: usize = 5;
/// The member lease TTL, in seconds: small, so that failover fits a test.
pub(crate) const TTL_S: u64 = 3;
/// A membership round runs about three times per TTL (src/app/startup.rs).
pub(crate) const ROUND_MS: i64 = TTL_S as i64 * 1000 / 3;
/// The etcd key prefix the replicas share (the default).
pub(crate) const PREFIX: &str = "/vmsh-scheduler/";

/// Namespace `i`'s name.
pub(crate) fn ns_name(i: usize) -> String {
    format!("dao:ns-{i:03}")
}

/// Namespace `i`'s period: 1 s for even `i`, 2 s for odd.
fn period_of(i: usize) -> i64 {
    if i.is_multiple_of(2) { 1_000 } else { 2_000 }
}

/// A stretch of time when some namespaces (all, when `namespaces` is `None`) were expected
/// not to anchor: periods due in it may be lost.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    /// What happened, for the report.
    pub(crate) what: String,
    /// From when (Unix ms).
    pub(crate) from_ms: i64,
    /// Until when (Unix ms).
    pub(crate) to_ms: i64,
    /// Which namespaces; `None` for all.
    pub(crate) namespaces: Option<BTreeSet<String>>,
}

impl Outage {
    fn covers(&self, ns: &str, at_ms: i64) -> bool {
        self.from_ms <= at_ms && at_ms <= self.to_ms && self.namespaces.as_ref().is_none_or(|set| set.contains(ns))
    }
}

/// One committed journal line: an anchor that counts.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    /// The replica whose file holds it.
    pub(crate) node: String,
    /// Its file (`<name>@<node>`).
    pub(crate) file: String,
    /// The line.
    pub(crate) entry: JournalEntry,
}

/// What is known of one journal file: its lines up to the committed head, read once each
/// (lines up to the head never change; past it they may be cut off and written again).
#[derive(Default)]
struct FileCache {
    offset: u64,
    lines: Vec<(JournalEntry, String)>,
    broken: Option<String>,
}

/// A running replica.
struct Replica {
    /// The scheduler process.
    process: Scheduler,
    /// Whether it is stopped by SIGSTOP.
    paused: bool,
}

/// The fleet (see the module docs). Its fields end in order: the replicas, then etcd,
/// then the root they wrote to.
pub(crate) struct Fleet {
    /// The replicas running, by node id.
    replicas: BTreeMap<String, Replica>,
    /// The etcd members.
    pub(crate) etcd: EtcdCluster,
    /// The shared VMSH_ROOT.
    pub(crate) root: Root,
    /// Every namespace's period (ms).
    pub(crate) periods: BTreeMap<String, i64>,
    client: Etcd,
    rt: tokio::runtime::Runtime,
    keys: Keys,
    files: BTreeMap<String, FileCache>,
    /// Replicas stopped on purpose, and how each exited.
    exits: Vec<(String, std::process::ExitStatus)>,
    /// What the replicas logged at warning level and above, by replica and message.
    warnings: BTreeMap<String, usize>,
    /// When every namespace had anchored where it stays after start-up (Unix ms): periods
    /// due before it belong to the fleet's start-up, not to a scenario.
    settled_ms: i64,
    /// This fleet's turn; last, so that it ends after the processes.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One fleet at a time: one keeps about a core busy (three etcd members and three replicas
/// anchoring 150 times a second), and two at once on a 2-core machine would lose periods to
/// each other rather than to the failure under test.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The environment of replica `node`.
fn replica_env(root: &Root, node: &str, endpoints: &str) -> BTreeMap<String, String> {
    let mut env = base_env(root);
    env.insert("VMSH_ETCD_ENDPOINTS".into(), endpoints.into());
    env.insert("VMSH_NODE_ID".into(), node.into());
    env.insert("VMSH_ETCD_LEASE_TTL_S".into(), TTL_S.to_string());
    // Every anchor logs a line at info; debug would triple the volume for nothing read here.
    env.insert("LOG_LEVEL".into(), "info".into());
    // An anchor in cluster mode waits on four etcd round trips and two syncs (tens of ms);
    // a replica that took over a third of the fleet runs 75 a second: the default 4 workers
    // would queue them behind each other and lose periods to the pool, not to the cluster.
    env.insert("VMSH_ANCHOR_WORKERS".into(), "16".into());
    env
}

impl Fleet {
    /// Starts three etcd members and replicas `nodes`, and waits until every namespace is
    /// held as rendezvous hashing places it and has anchored once.
    pub(crate) fn start(nodes: &[&str]) -> Self {
        // A test that failed holding the turn poisoned it; its processes are gone.
        let turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let etcd = EtcdCluster::start(3);
        let root = Root::new();
        let mut yaml = String::from("namespaces:\n");
        let mut periods = BTreeMap::new();
        for i in 0..NAMESPACES {
            let ns = ns_name(i);
            let every = period_of(i) / 1000;
            yaml.push_str(&format!(
                "  {ns}:\n    cadence:\n      fast: {{ target: \"local:j{}\", every: \"{every}s\" }}\n",
                i % JOURNALS
            ));
            root.batch(
                Some(&ns),
                "b1.json",
                &format!("batch-{i}"),
                &root_hex(u8::try_from(i % 250 + 1).expect("fits")),
            );
            periods.insert(ns, period_of(i));
        }
        root.namespaces(&yaml);
        let client = Etcd::new(EtcdOptions {
            endpoints: etcd.endpoints(),
            tls: EtcdTls::default(),
            auth: None,
            request_timeout: Duration::from_secs(2),
        })
        .expect("an etcd client");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut fleet = Self {
            replicas: BTreeMap::new(),
            etcd,
            root,
            periods,
            client,
            rt,
            keys: Keys::new(PREFIX),
            files: BTreeMap::new(),
            exits: Vec::new(),
            warnings: BTreeMap::new(),
            settled_ms: 0,
            _turn: turn,
        };
        for node in nodes {
            fleet.start_replica(node);
        }
        // The first replica to join claims everything, and hands the others their share as
        // they come: the fleet has settled once every namespace has anchored where it stays.
        let placed = fleet.wait_placed(nodes, Duration::from_secs(60));
        let first = fleet.wait_anchored_after(placed, &fleet.all(), Duration::from_secs(60));
        fleet.settled_ms = first.values().map(|a| a.entry.time_ms).max().unwrap_or(placed);
        fleet
    }

    /// Starts replica `node` and waits until it has joined and listens.
    pub(crate) fn start_replica(&mut self, node: &str) {
        let env = replica_env(&self.root, node, &self.etcd.endpoints().join(","));
        let process = Scheduler::start_command(command(&self.root, &env, &[]));
        self.replicas.insert(node.to_string(), Replica { process, paused: false });
    }

    /// Every namespace.
    pub(crate) fn all(&self) -> BTreeSet<String> {
        self.periods.keys().cloned().collect()
    }

    /// Replica `node`.
    pub(crate) fn replica(&self, node: &str) -> &Scheduler {
        &self.replicas.get(node).unwrap_or_else(|| panic!("no replica {node}")).process
    }

    /// The status code of GET `path` on replica `node`; a replica that does not answer at
    /// all fails the test with what it wrote last.
    pub(crate) fn status(&self, node: &str, path: &str) -> u16 {
        let replica = self.replica(node);
        if std::net::TcpStream::connect_timeout(&replica.addr, Duration::from_secs(5)).is_err() {
            let logs = replica.logs();
            let last: Vec<String> = logs[logs.len().saturating_sub(10)..].iter().map(Value::to_string).collect();
            panic!(
                "replica {node} does not answer on {}; it wrote to stderr: {:?}; its last log lines:\n{}",
                replica.addr,
                replica.stderr(),
                last.join("\n")
            );
        }
        replica.get(path).0
    }

    /// Kills replica `node` with SIGKILL; returns when (Unix ms).
    pub(crate) fn kill9(&mut self, node: &str) -> i64 {
        let mut replica = self.replicas.remove(node).unwrap_or_else(|| panic!("no replica {node}"));
        let at = now_ms();
        replica.process.kill9();
        self.note_logs(node, &replica.process);
        at
    }

    /// Keeps what a replica that stops logged at warning level and above, by message.
    fn note_logs(&mut self, node: &str, process: &Scheduler) {
        for line in process.logs() {
            if matches!(line["level"].as_str(), Some("warn" | "error" | "crit")) {
                let msg = line["msg"].as_str().unwrap_or("?");
                *self.warnings.entry(format!("{node}: {msg}")).or_default() += 1;
            }
        }
    }

    /// Stops replica `node` with SIGTERM and waits for it to exit; returns when it was
    /// asked and when it had exited (Unix ms). How it exited is checked with the rest at
    /// [`Fleet::finish`].
    pub(crate) fn terminate(&mut self, node: &str) -> (i64, i64) {
        let mut replica = self.replicas.remove(node).unwrap_or_else(|| panic!("no replica {node}"));
        if replica.paused {
            replica.process.signal(libc::SIGCONT);
        }
        let asked = now_ms();
        replica.process.signal(libc::SIGTERM);
        let status = replica.process.wait_exit(Duration::from_secs(30));
        let exited = now_ms();
        self.exits.push((node.to_string(), status));
        self.note_logs(node, &replica.process);
        (asked, exited)
    }

    /// Pauses replica `node` (SIGSTOP); returns when (Unix ms).
    pub(crate) fn pause(&mut self, node: &str) -> i64 {
        let replica = self.replicas.get_mut(node).unwrap_or_else(|| panic!("no replica {node}"));
        let at = now_ms();
        replica.process.signal(libc::SIGSTOP);
        replica.paused = true;
        at
    }

    /// Wakes replica `node` (SIGCONT); returns when (Unix ms).
    pub(crate) fn resume(&mut self, node: &str) -> i64 {
        let replica = self.replicas.get_mut(node).unwrap_or_else(|| panic!("no replica {node}"));
        let at = now_ms();
        replica.process.signal(libc::SIGCONT);
        replica.paused = false;
        at
    }

    fn prefixed(&self, rest: &str) -> Vec<u8> {
        format!("{PREFIX}{rest}").into_bytes()
    }

    /// Every key under `<prefix><dir>`, by the rest of its name; `None` when etcd does not
    /// answer.
    fn read_dir(&self, dir: &str) -> Option<BTreeMap<String, vmsh_scheduler::cluster::etcd::KeyValue>> {
        let dir = self.prefixed(dir);
        let (kvs, _) = self.rt.block_on(self.client.get_prefix(&dir)).ok()?;
        Some(kvs.into_iter().map(|kv| (String::from_utf8_lossy(&kv.key[dir.len()..]).into_owned(), kv)).collect())
    }

    /// Who holds each namespace now; `None` when etcd does not answer.
    pub(crate) fn owners(&self) -> Option<BTreeMap<String, String>> {
        let dir = self.read_dir("owners/")?;
        Some(dir.into_iter().map(|(ns, kv)| (ns, String::from_utf8_lossy(&kv.value).into_owned())).collect())
    }

    /// The members registered now; `None` when etcd does not answer.
    pub(crate) fn members(&self) -> Option<BTreeSet<String>> {
        Some(self.read_dir("members/")?.into_keys().collect())
    }

    /// The namespaces `node` holds now.
    pub(crate) fn held_by(&self, node: &str) -> BTreeSet<String> {
        let owners = self.owners().expect("etcd answers");
        owners.into_iter().filter(|(_, holder)| holder == node).map(|(ns, _)| ns).collect()
    }

    /// Where rendezvous hashing places every namespace among `nodes`.
    pub(crate) fn placement(&self, nodes: &[&str]) -> BTreeMap<String, String> {
        let placed = |ns: &String| ownership::owner(ns, nodes.iter().copied()).expect("a member").to_string();
        self.periods.keys().map(|ns| (ns.clone(), placed(ns))).collect()
    }

    /// Waits until `nodes` are the members and every namespace is held where rendezvous
    /// hashing places it among them; returns when (Unix ms).
    pub(crate) fn wait_placed(&self, nodes: &[&str], limit: Duration) -> i64 {
        let want = self.placement(nodes);
        let members: BTreeSet<String> = nodes.iter().map(|n| (*n).to_string()).collect();
        let placed = poll_until(limit, || (self.members()? == members && self.owners()? == want).then(now_ms));
        placed.unwrap_or_else(|| {
            panic!(
                "timed out after {limit:?} waiting for every namespace held by its owner among {nodes:?}; {}",
                self.describe()
            )
        })
    }

    /// What each replica says of itself, for a failure message: its cluster section of
    /// /health, how many of its namespaces last failed, and one of their errors.
    fn describe(&self) -> String {
        let mut out = Vec::new();
        for (node, replica) in &self.replicas {
            if replica.paused {
                out.push(format!("{node}: paused"));
                continue;
            }
            let (code, health) = replica.process.health_answer();
            let namespaces = health.namespaces.clone().unwrap_or_default();
            let failing: Vec<String> = namespaces
                .iter()
                .filter_map(|(ns, n)| Some(format!("{ns}: {}", n.cadence("fast")?.last_error.as_ref()?.message)))
                .collect();
            out.push(format!(
                "{node}: /health {code}, cluster {:?}, running {} namespace(s), {} failing (e.g. {:?})",
                health.cluster,
                namespaces.len(),
                failing.len(),
                failing.first()
            ));
        }
        out.join("; ")
    }

    /// Reads what is committed now: every journal file's lines up to its head. Files whose
    /// chain is broken are left with what read whole, and say so in [`Fleet::finish`].
    fn refresh(&mut self) -> Option<()> {
        let heads = self.read_dir("journals/")?;
        for (file, kv) in heads {
            let head: JournalHead = serde_json::from_slice(&kv.value).ok()?;
            let path = self.root.path().join("out/journal").join(format!("{file}.jsonl"));
            let cache = self.files.entry(file.clone()).or_default();
            if cache.broken.is_some() || cache.lines.len() as u64 >= head.seq {
                continue;
            }
            if let Err(e) = read_committed(&path, cache, &head) {
                cache.broken = Some(format!("journal file {file}: {e}"));
            }
        }
        Some(())
    }

    fn anchors(&self) -> Vec<Anchor> {
        let mut out = Vec::new();
        for (file, cache) in &self.files {
            let node = file.rsplit_once('@').map(|(_, n)| n.to_string()).unwrap_or_default();
            for (entry, _) in &cache.lines {
                out.push(Anchor { node: node.clone(), file: file.clone(), entry: entry.clone() });
            }
        }
        out
    }

    /// Waits until each of `namespaces` has a committed anchor appended after `after_ms` by
    /// a replica `by` accepts for it (`by(namespace, node)`); returns, per namespace, the
    /// first such anchor.
    pub(crate) fn wait_first(
        &mut self,
        after_ms: i64,
        namespaces: &BTreeSet<String>,
        by: impl Fn(&str, &str) -> bool,
        limit: Duration,
    ) -> BTreeMap<String, Anchor> {
        let found = poll_until(limit, || {
            self.refresh()?;
            let mine: Vec<Anchor> = self.anchors().into_iter().filter(|a| by(&a.entry.namespace, &a.node)).collect();
            let first = first_after(&mine, after_ms, namespaces);
            (first.len() == namespaces.len()).then_some(first)
        });
        found.unwrap_or_else(|| {
            let first = first_after(&self.anchors(), after_ms, namespaces);
            let missing: Vec<&String> = namespaces.iter().filter(|ns| !first.contains_key(*ns)).take(5).collect();
            panic!(
                "timed out after {limit:?} waiting for {} namespace(s) to anchor after {after_ms}; missing {missing:?}; {}",
                namespaces.len(),
                self.describe()
            )
        })
    }

    /// [`Fleet::wait_first`] by any replica.
    pub(crate) fn wait_anchored_after(
        &mut self,
        after_ms: i64,
        namespaces: &BTreeSet<String>,
        limit: Duration,
    ) -> BTreeMap<String, Anchor> {
        self.wait_first(after_ms, namespaces, |_, _| true, limit)
    }

    /// [`Fleet::wait_first`] by any replica but `node`.
    pub(crate) fn wait_anchored_elsewhere(
        &mut self,
        after_ms: i64,
        namespaces: &BTreeSet<String>,
        node: &str,
        limit: Duration,
    ) -> BTreeMap<String, Anchor> {
        self.wait_first(after_ms, namespaces, |_, by| by != node, limit)
    }

    /// [`Fleet::wait_first`] by the replica `expected` names for each namespace.
    pub(crate) fn wait_anchored_by(
        &mut self,
        after_ms: i64,
        expected: &BTreeMap<String, String>,
        limit: Duration,
    ) -> BTreeMap<String, Anchor> {
        let names = expected.keys().cloned().collect();
        self.wait_first(after_ms, &names, |ns, by| expected.get(ns).is_some_and(|n| n == by), limit)
    }

    /// Lines appended to any journal file after `after_ms`, committed or not.
    pub(crate) fn lines_appended_after(&self, after_ms: i64) -> usize {
        let dir = self.root.path().join("out/journal");
        let files = std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read(f.path())
                    .unwrap_or_default()
                    .split(|b| *b == b'\n')
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| serde_json::from_slice::<JournalEntry>(&line).ok())
            .filter(|e| e.time_ms > after_ms)
            .count()
    }

    /// Which etcd member (its index) leads now.
    pub(crate) fn etcd_leader(&self) -> usize {
        poll(Duration::from_secs(10), "an etcd member to name the leader", || {
            let ids: Vec<Option<(String, String)>> = self
                .etcd
                .endpoints()
                .iter()
                .map(|e| {
                    let port = e.rsplit(':').next()?.parse().ok()?;
                    let (_, body) = post(port, "/v3/maintenance/status", "{}")?;
                    let v: Value = serde_json::from_str(&body).ok()?;
                    Some((v["header"]["member_id"].as_str()?.to_string(), v["leader"].as_str()?.to_string()))
                })
                .collect();
            let leader = ids.iter().flatten().map(|(_, l)| l.clone()).next()?;
            ids.iter().position(|id| id.as_ref().is_some_and(|(me, _)| *me == leader))
        })
    }

    /// Reads the history etcd keeps from the first revision up to now.
    fn history(&self) -> History {
        let endpoints = self.etcd.endpoints();
        let marker = self.prefixed("x-test/marker");
        let revision = poll(Duration::from_secs(30), "etcd to take the history's end marker", || {
            self.rt.block_on(self.client.put(&marker, b"end", 0)).ok()
        });
        for endpoint in &endpoints {
            if let Some(events) = watch_from(endpoint, PREFIX.as_bytes(), 1, revision) {
                return History { events };
            }
        }
        panic!("no etcd member gave the history up to revision {revision}");
    }

    /// Stops every replica cleanly, then checks what the fleet left: see [`Findings`].
    /// `outages` are the stretches when the scenario stopped some namespaces on purpose.
    pub(crate) fn finish(mut self, outages: &[Outage]) -> Findings {
        let stop_ms = now_ms();
        let nodes: Vec<String> = self.replicas.keys().cloned().collect();
        for node in &nodes {
            let replica = self.replicas.get_mut(node).expect("replica");
            if replica.paused {
                replica.process.signal(libc::SIGCONT);
            }
            replica.process.signal(libc::SIGTERM);
        }
        for node in &nodes {
            let mut replica = self.replicas.remove(node).expect("replica");
            let status = replica.process.wait_exit(Duration::from_secs(30));
            self.exits.push((node.clone(), status));
            self.note_logs(node, &replica.process);
        }
        poll(Duration::from_secs(30), "etcd to answer for the journal heads", || self.refresh());
        let history = self.history();
        let mut f = Findings { warnings: std::mem::take(&mut self.warnings), ..Findings::default() };
        for (node, status) in &self.exits {
            if !status.success() {
                f.problem(format!("replica {node} stopped with SIGTERM exited with {status}"));
            }
        }
        self.check_journals(&mut f);
        let anchors = self.anchors();
        f.anchors = anchors.len();
        check_duplicates(&anchors, &mut f);
        self.check_receipts(&anchors, &mut f);
        let attempts = history.attempts();
        let state = self.load_state();
        self.check_periods(&anchors, &attempts, &state, outages, stop_ms, &mut f);
        check_state(&self.periods, &anchors, &attempts, &state, &mut f);
        history.check_fencing(&self.files, &mut f);
        // What etcd recorded about the first namespace found anchored twice (up to the second
        // commit of that attempt), or losing a period outside the outages: first, so that a
        // long list does not hide it.
        let shown = match (f.twice.first(), f.late.first()) {
            (Some((ns, attempt)), _) => {
                let timeline = history.timeline(ns, &self.files);
                let committed = format!("committed, attempt {}", short(attempt));
                let end =
                    timeline.iter().rposition(|(_, line)| line.ends_with(&committed)).map_or(timeline.len(), |i| i + 1);
                Some((ns.clone(), timeline[end.saturating_sub(50)..end].to_vec()))
            }
            (None, Some(ns)) => {
                let timeline = history.timeline(ns, &self.files);
                Some((ns.clone(), timeline[timeline.len().saturating_sub(40)..].to_vec()))
            }
            (None, None) => None,
        };
        if let Some((ns, events)) = shown {
            let lines: Vec<String> = events.into_iter().map(|(r, line)| format!("{r}: {line}")).collect();
            f.problems.insert(0, format!("what etcd recorded about {ns}:\n  {}", lines.join("\n  ")));
        }
        f.history = history;
        f
    }

    /// Every file's chain is intact up to its committed head; lines past it are counted.
    fn check_journals(&self, f: &mut Findings) {
        for (file, cache) in &self.files {
            if let Some(broken) = &cache.broken {
                f.problem(broken.clone());
                continue;
            }
            let path = self.root.path().join("out/journal").join(format!("{file}.jsonl"));
            let text = std::fs::read(&path).unwrap_or_default();
            let rest = text.get(usize::try_from(cache.offset).unwrap_or(usize::MAX)..).unwrap_or_default();
            f.lines_past_head += rest.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        }
    }

    /// Every recorded receipt is the record of a committed anchor of that namespace, and
    /// exactly one receipt file on disk has its digest; every committed anchor has one.
    fn check_receipts(&self, anchors: &[Anchor], f: &mut Findings) {
        let heads = self.read_dir("receipts/").expect("etcd answers for the receipt index heads");
        let folders: BTreeMap<String, String> = (0..NAMESPACES)
            .map(|i| (vmsh_scheduler::storage::receipts::folder_name(&ns_name(i)), ns_name(i)))
            .collect();
        // (attempt, namespace) → (receipt file, digest), from every committed index line.
        let mut recorded: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
        for (name, kv) in heads {
            let Some((folder, node)) = name.rsplit_once('@') else {
                f.problem(format!("a receipt index head of no replica: {name}"));
                continue;
            };
            let Some(ns) = folders.get(folder) else {
                f.problem(format!("a receipt index head of no namespace: {name}"));
                continue;
            };
            let Ok(head) = serde_json::from_slice::<JournalHead>(&kv.value) else {
                f.problem(format!("receipt index head {name} is not a head"));
                continue;
            };
            let path = self.root.path().join("out/anchors").join(folder).join(format!("receipts@{node}.jsonl"));
            let lines = match vmsh_scheduler::storage::chain::committed_lines(&path, head.seq) {
                Ok(lines) => lines,
                Err(e) => {
                    f.problem(format!("receipt index {}: {e}", path.display()));
                    continue;
                }
            };
            for (bytes, _) in lines {
                let Ok(line) = serde_json::from_slice::<vmsh_scheduler::storage::receipts::IndexLine>(&bytes) else {
                    f.problem(format!("{}: a line is not an index line", path.display()));
                    continue;
                };
                f.recorded_digests.insert(line.sha256.clone());
                let key = (line.attempt_id.clone(), ns.clone());
                if recorded.insert(key, (line.receipt.clone(), line.sha256.clone())).is_some() {
                    f.problem(format!("attempt {} of {ns} has two committed receipts", line.attempt_id));
                }
            }
        }
        let committed: BTreeSet<(String, String)> =
            anchors.iter().map(|a| (a.entry.attempt_id.clone(), a.entry.namespace.clone())).collect();
        for key in recorded.keys() {
            if !committed.contains(key) {
                f.problem(format!(
                    "receipt committed for attempt {} of {} with no committed journal line",
                    key.0, key.1
                ));
            }
        }
        for key in &committed {
            if !recorded.contains_key(key) {
                f.problem(format!("committed anchor {} of {} has no committed receipt", key.0, key.1));
            }
        }
        // The files on disk: each committed receipt is its file, with its digest.
        let anchors_dir = self.root.path().join("out/anchors");
        for dir in std::fs::read_dir(&anchors_dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
            for file in std::fs::read_dir(dir.path()).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
                let name = file.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && name.ends_with(".json") {
                    f.receipt_files += 1;
                }
            }
        }
        for ((attempt, ns), (file, digest)) in &recorded {
            let path = anchors_dir.join(vmsh_scheduler::storage::receipts::folder_name(ns)).join(file);
            let on_disk = std::fs::read(&path).map(|b| sha256_hex(&b)).unwrap_or_default();
            if on_disk != *digest {
                f.problem(format!(
                    "the receipt committed for attempt {attempt} of {ns} ({file}) is not on disk as committed"
                ));
            }
        }
        f.receipts_recorded = recorded.len();
    }

    /// Periods lost, per namespace: between consecutive committed anchors, the periods
    /// whose due time passed with no anchor of their own (exactly, from the nominal due
    /// times the attempts were recorded with), and after the last one, those due a whole
    /// period before the replicas were stopped with no attempt. Each must fall in an outage.
    fn check_periods(
        &self,
        anchors: &[Anchor],
        attempts: &BTreeMap<String, i64>,
        state: &StateFile,
        outages: &[Outage],
        stop_ms: i64,
        f: &mut Findings,
    ) {
        let mut by_ns: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for a in anchors {
            match attempts.get(&a.entry.attempt_id) {
                Some(due) => by_ns.entry(a.entry.namespace.as_str()).or_default().push(*due),
                None => f.problem(format!(
                    "committed attempt {} of {} was never recorded in the state before it anchored",
                    a.entry.attempt_id, a.entry.namespace
                )),
            }
        }
        for (ns, period) in &self.periods {
            let Some(dues) = by_ns.get_mut(ns.as_str()) else {
                f.problem(format!("{ns} never anchored"));
                continue;
            };
            // The period the state says comes next: due a period after the last success.
            let cadence = state.namespaces.get(ns).and_then(|s| s.cadences.get(&CadenceKind::Fast));
            let next = cadence.and_then(|c| c.last_success_ms).map(|t| t + period);
            if let Some(next) = next
                && !dues.contains(&next)
            {
                dues.push(next);
            }
            dues.sort_unstable();
            let mut lost_at = Vec::new();
            for pair in dues.windows(2) {
                // The first attempt of a namespace that never anchored is due at 0.
                if pair[0] == 0 {
                    continue;
                }
                // The next period is due a period after the last success began, which is
                // on the grid of the one before (a run that began late by k whole periods
                // counts from the k-th: those k got no anchor of their own), or later
                // (a retry after a failure shifts the grid, losing nothing).
                let lost = (pair[1] - pair[0] + 5) / period - 1;
                lost_at.extend((1..=lost).map(|k| pair[0] + k * period));
            }
            // From the next period on, those due a whole period before the stop are lost,
            // as a run that late would skip them; but not one the state records an attempt
            // for (a restart resumes it).
            let recorded = cadence.is_some_and(|c| c.attempt.is_some());
            if let Some(next) = next {
                let mut slot = if recorded { next + period } else { next };
                while slot + period <= stop_ms {
                    lost_at.push(slot);
                    slot += period;
                }
            }
            for slot in lost_at {
                if slot < self.settled_ms {
                    continue;
                }
                f.periods_lost += 1;
                if !outages.iter().any(|o| o.covers(ns, slot)) {
                    f.periods_lost_beyond += 1;
                    if !f.late.contains(ns) {
                        f.late.push(ns.clone());
                    }
                    if f.periods_lost_beyond <= 20 {
                        let whats: BTreeSet<&str> = outages.iter().map(|o| o.what.as_str()).collect();
                        f.problem(format!(
                            "{ns}: the period due at {slot} got no anchor, outside every outage ({whats:?}, stopped at {stop_ms})"
                        ));
                    }
                }
            }
        }
    }

    /// The state in etcd as a replica taking over would load it.
    fn load_state(&self) -> StateFile {
        let etcd = Arc::new(
            Etcd::new(EtcdOptions {
                endpoints: self.etcd.endpoints(),
                tls: EtcdTls::default(),
                auth: None,
                request_timeout: Duration::from_secs(2),
            })
            .expect("an etcd client"),
        );
        let mut backend =
            EtcdBackend::new(etcd, self.keys.clone(), "checker", 0, "etcd".into()).expect("a state backend");
        backend.load().expect("the state in etcd loads").state
    }
}

/// The state agrees with the committed anchors: for each namespace, the last success
/// it records is the start of the run of its last committed anchor — no earlier than
/// that attempt's nominal due time (else the state missed it) and no later than its
/// line (else the state claims an anchor that does not count); an attempt it records as
/// in flight is not one already committed. (Times are compared to 5 ms: the scheduler maps
/// its monotonic timeline onto the wall clock, which may round a millisecond either way.)
fn check_state(
    periods: &BTreeMap<String, i64>,
    anchors: &[Anchor],
    attempts: &BTreeMap<String, i64>,
    state: &StateFile,
    f: &mut Findings,
) {
    let mut last: BTreeMap<&str, &Anchor> = BTreeMap::new();
    for a in anchors {
        let slot = last.entry(a.entry.namespace.as_str()).or_insert(a);
        if a.entry.time_ms > slot.entry.time_ms {
            *slot = a;
        }
    }
    let committed: BTreeSet<&str> = anchors.iter().map(|a| a.entry.attempt_id.as_str()).collect();
    for ns in periods.keys() {
        let Some(anchor) = last.get(ns.as_str()) else { continue };
        let cadence = state.namespaces.get(ns).and_then(|s| s.cadences.get(&CadenceKind::Fast));
        let Some(cadence) = cadence else {
            f.problem(format!("{ns} anchored but has no state in etcd"));
            continue;
        };
        let due = attempts.get(&anchor.entry.attempt_id).copied().unwrap_or(0);
        match cadence.last_success_ms {
            None => f.problem(format!("{ns}: the state records no success, the journal does")),
            Some(s) if s + 5 < due => f.problem(format!(
                "{ns}: the state's last success {s} is before the last committed anchor's period ({due}): it missed it"
            )),
            Some(s) if s > anchor.entry.time_ms + 5 => f.problem(format!(
                "{ns}: the state's last success {s} is after the last committed anchor ({})",
                anchor.entry.time_ms
            )),
            Some(_) => {}
        }
        if let Some(a) = &cadence.attempt
            && committed.contains(a.id.as_str())
        {
            f.problem(format!("{ns}: the state holds attempt {} as in flight, but it is committed", a.id));
        }
    }
}

/// Reads the lines of `path` after those `cache` holds, up to `head`, checking the chain.
fn read_committed(path: &std::path::Path, cache: &mut FileCache, head: &JournalHead) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    file.seek(SeekFrom::Start(cache.offset)).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(file);
    while (cache.lines.len() as u64) < head.seq {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if line.last() != Some(&b'\n') {
            return Err(format!("ends before line {}, which etcd holds committed", head.seq));
        }
        let text = &line[..line.len() - 1];
        let entry: JournalEntry = serde_json::from_slice(text)
            .map_err(|e| format!("line {} is no journal entry: {e}", cache.lines.len() + 1))?;
        let (want_seq, want_prev) = match cache.lines.last() {
            Some((prev, hash)) => (prev.seq + 1, hash.clone()),
            None => (1, GENESIS.to_string()),
        };
        if entry.seq != want_seq || entry.prev != want_prev {
            return Err(format!("line {} breaks the chain (seq {}, prev {})", want_seq, entry.seq, entry.prev));
        }
        let hash = sha256_hex(text);
        if entry.seq == head.seq && hash != head.hash {
            return Err(format!("line {} is not the line committed in etcd", head.seq));
        }
        cache.offset += line.len() as u64;
        cache.lines.push((entry, hash));
    }
    Ok(())
}

/// Per namespace among `namespaces`, its first anchor appended after `after_ms`.
pub(crate) fn first_after(
    anchors: &[Anchor],
    after_ms: i64,
    namespaces: &BTreeSet<String>,
) -> BTreeMap<String, Anchor> {
    let mut first: BTreeMap<String, Anchor> = BTreeMap::new();
    for a in anchors {
        if a.entry.time_ms <= after_ms || !namespaces.contains(&a.entry.namespace) {
            continue;
        }
        let slot = first.entry(a.entry.namespace.clone()).or_insert_with(|| a.clone());
        if a.entry.time_ms < slot.entry.time_ms {
            *slot = a.clone();
        }
    }
    first
}

/// No attempt is anchored twice: attempt ids are unique among the committed lines of every
/// file.
fn check_duplicates(anchors: &[Anchor], f: &mut Findings) {
    let mut seen: BTreeMap<&str, &Anchor> = BTreeMap::new();
    for a in anchors {
        if let Some(before) = seen.insert(a.entry.attempt_id.as_str(), a) {
            f.duplicates += 1;
            f.twice.push((a.entry.namespace.clone(), a.entry.attempt_id.clone()));
            f.problem(format!(
                "attempt {} of {} anchored twice: line {} of {} and line {} of {}",
                a.entry.attempt_id, a.entry.namespace, before.entry.seq, before.file, a.entry.seq, a.file
            ));
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit` naming `what`
/// (a slower pace than `wait_for`: each look here reads etcd or several files).
pub(crate) fn poll<T>(limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, check).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// [`poll`], answering `None` at the deadline.
fn poll_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `q`-quantile of `values` (nearest rank); 0 for none.
pub(crate) fn quantile(values: &[i64], q: f64) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What a scenario left behind, and what it broke.
#[derive(Default)]
pub(crate) struct Findings {
    /// Committed anchors.
    pub(crate) anchors: usize,
    /// Attempts anchored more than once.
    pub(crate) duplicates: usize,
    /// Those attempts, with their namespace.
    twice: Vec<(String, String)>,
    /// The namespaces that lost a period outside the outages.
    late: Vec<String>,
    /// Receipts recorded in etcd.
    pub(crate) receipts_recorded: usize,
    /// Receipt files on disk, recorded or not.
    pub(crate) receipt_files: usize,
    /// Journal lines past their file's committed head: written, never counted.
    pub(crate) lines_past_head: usize,
    /// Periods with no anchor of their own, since the fleet settled.
    pub(crate) periods_lost: usize,
    /// Of those, the ones outside every outage.
    pub(crate) periods_lost_beyond: usize,
    /// Fenced writes that went through: state, journal heads and receipt records written
    /// for a namespace by a replica that did not hold it at that revision.
    pub(crate) unfenced_writes: usize,
    /// The digests of every receipt recorded.
    pub(crate) recorded_digests: BTreeSet<String>,
    /// What the replicas logged at warning level and above, by replica and message.
    pub(crate) warnings: BTreeMap<String, usize>,
    /// What is wrong, one sentence each.
    pub(crate) problems: Vec<String>,
    /// Everything etcd recorded, for checks of one scenario.
    pub(crate) history: History,
}

impl Findings {
    fn problem(&mut self, what: String) {
        self.problems.push(what);
    }

    /// Fails the test, listing every problem, unless there is none.
    pub(crate) fn assert_clean(&self) {
        assert!(
            self.problems.is_empty(),
            "{} problem(s) after the scenario ({}; the replicas warned: {:?}):\n{}",
            self.problems.len(),
            Value::Object(self.figures()),
            self.warnings,
            self.problems.iter().take(60).cloned().collect::<Vec<_>>().join("\n")
        );
    }

    /// The figures every scenario reports.
    pub(crate) fn figures(&self) -> serde_json::Map<String, Value> {
        let Value::Object(map) = json!({
            "anchors": self.anchors,
            "duplicates": self.duplicates,
            "periodsLost": self.periods_lost,
            "periodsLostBeyondOutage": self.periods_lost_beyond,
            "linesPastHead": self.lines_past_head,
            "receiptFilesNotRecorded": self.receipt_files.saturating_sub(self.receipts_recorded),
            "unfencedWrites": self.unfenced_writes,
        }) else {
            unreachable!("an object")
        };
        map
    }
}

/// One change etcd made.
#[derive(Debug, Clone)]
struct Event {
    revision: i64,
    key: String,
    value: Vec<u8>,
    deleted: bool,
}

/// Every change under the prefix since the first revision, in revision order.
#[derive(Debug, Default)]
pub(crate) struct History {
    events: Vec<Event>,
}

impl History {
    /// Every attempt recorded in the state, and its period's nominal due time (Unix ms).
    fn attempts(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for e in &self.events {
            if e.deleted || !e.key.starts_with(&format!("{PREFIX}log/")) {
                continue;
            }
            for change in log_changes(&e.value) {
                if let Some(a) = &change.state.attempt {
                    out.insert(a.id.clone(), a.nominal_due_ms);
                }
            }
        }
        out
    }

    /// Every write for a namespace was made by its holder at that revision: state log
    /// entries (`log/<node>/…`) and journal heads (`journals/<name>@<node>`) by the
    /// replica that names them, receipt records while somebody held the namespace.
    fn check_fencing(&self, files: &BTreeMap<String, FileCache>, f: &mut Findings) {
        let owners_dir = format!("{PREFIX}owners/");
        let log_dir = format!("{PREFIX}log/");
        let journals_dir = format!("{PREFIX}journals/");
        let receipts_dir = format!("{PREFIX}receipts/");
        let mut holders: BTreeMap<String, String> = BTreeMap::new();
        let wrong = |f: &mut Findings, what: String| {
            f.unfenced_writes += 1;
            if f.unfenced_writes <= 20 {
                f.problem(what);
            }
        };
        for e in &self.events {
            if let Some(ns) = e.key.strip_prefix(&owners_dir) {
                if e.deleted {
                    holders.remove(ns);
                } else {
                    holders.insert(ns.to_string(), String::from_utf8_lossy(&e.value).into_owned());
                }
                continue;
            }
            if e.deleted {
                continue;
            }
            let holder = |ns: &str| holders.get(ns).map_or("nobody", String::as_str).to_string();
            if let Some(rest) = e.key.strip_prefix(&log_dir) {
                let node = rest.split('/').next().unwrap_or_default();
                for change in log_changes(&e.value) {
                    if holder(&change.namespace) != node {
                        wrong(
                            f,
                            format!(
                                "revision {}: {node} wrote state for {} held by {}",
                                e.revision,
                                change.namespace,
                                holder(&change.namespace)
                            ),
                        );
                    }
                }
            } else if let Some(file) = e.key.strip_prefix(&journals_dir) {
                let node = file.rsplit_once('@').map_or("", |(_, n)| n);
                let Ok(head) = serde_json::from_slice::<JournalHead>(&e.value) else { continue };
                let line = files.get(file).and_then(|c| c.lines.get(usize::try_from(head.seq).ok()?.checked_sub(1)?));
                // A head past what the last read reached: its file's chain broke, which the
                // journal check reports.
                let Some((entry, _)) = line else { continue };
                if holder(&entry.namespace) != node {
                    wrong(
                        f,
                        format!(
                            "revision {}: {node} committed line {} of {file} for {} held by {}",
                            e.revision,
                            head.seq,
                            entry.namespace,
                            holder(&entry.namespace)
                        ),
                    );
                }
            } else if let Some(rest) = e.key.strip_prefix(&receipts_dir) {
                // `<folder>@<node>`: the namespace's index, appended to by that replica.
                let (folder, node) = rest.rsplit_once('@').unwrap_or((rest, ""));
                let ns = (0..NAMESPACES)
                    .map(ns_name)
                    .find(|ns| vmsh_scheduler::storage::receipts::folder_name(ns) == folder)
                    .unwrap_or_default();
                if holder(&ns) != node {
                    wrong(
                        f,
                        format!("revision {}: {node} committed a receipt of {ns} held by {}", e.revision, holder(&ns)),
                    );
                }
            }
        }
    }

    /// What etcd recorded about `ns`, one line per event, for a failure message: its
    /// claims, the state changes written for it (with the attempt and last success they
    /// hold), its committed lines, its snapshots, and the deletion of log keys that held
    /// its changes.
    fn timeline(&self, ns: &str, files: &BTreeMap<String, FileCache>) -> Vec<(i64, String)> {
        let (owner, state) = (format!("{PREFIX}owners/{ns}"), format!("{PREFIX}state/{ns}"));
        let mut out = Vec::new();
        let mut holding: BTreeSet<&str> = BTreeSet::new();
        for e in &self.events {
            let r = e.revision;
            if e.key == owner {
                let holder = String::from_utf8_lossy(&e.value);
                out.push((r, if e.deleted { "claim let go".to_string() } else { format!("claimed by {holder}") }));
            } else if e.key == state && !e.deleted {
                let through =
                    serde_json::from_slice::<Value>(&e.value).map(|v| v["through"].clone()).unwrap_or_default();
                out.push((r, format!("snapshot written (through {through})")));
            } else if e.deleted && holding.remove(e.key.as_str()) {
                out.push((r, format!("log key {} deleted", e.key)));
            } else if let Some(rest) = e.key.strip_prefix(&format!("{PREFIX}log/")) {
                for c in log_changes(&e.value).iter().filter(|c| *c.namespace == *ns) {
                    holding.insert(&e.key);
                    let attempt = c.state.attempt.as_ref().map_or("none", |a| short(&a.id));
                    out.push((
                        r,
                        format!("state by {rest}: last success {:?}, attempt {attempt}", c.state.last_success_ms),
                    ));
                }
            } else if let Some(file) = e.key.strip_prefix(&format!("{PREFIX}journals/"))
                && let Ok(head) = serde_json::from_slice::<JournalHead>(&e.value)
                && let Some((entry, _)) =
                    files.get(file).and_then(|c| c.lines.get(usize::try_from(head.seq).ok()?.checked_sub(1)?))
                && entry.namespace == ns
            {
                out.push((r, format!("line {} of {file} committed, attempt {}", head.seq, short(&entry.attempt_id))));
            }
        }
        out
    }

    /// The revisions at which `node`'s member key was deleted (its lease expired or was
    /// revoked: `true`) and written (it joined: `false`), in order.
    pub(crate) fn member_changes(&self, node: &str) -> Vec<(i64, bool)> {
        let key = format!("{PREFIX}members/{node}");
        self.events.iter().filter(|e| e.key == key).map(|e| (e.revision, e.deleted)).collect()
    }

    /// How many state log entries and journal heads `node` wrote in revisions `from..to`.
    pub(crate) fn writes_by(&self, node: &str, from: i64, to: i64) -> usize {
        let log = format!("{PREFIX}log/{node}/");
        let journal = format!("@{node}");
        let (journals, receipts) = (format!("{PREFIX}journals/"), format!("{PREFIX}receipts/"));
        self.events
            .iter()
            .filter(|e| (from..to).contains(&e.revision) && !e.deleted)
            .filter(|e| {
                e.key.starts_with(&log)
                    || ((e.key.starts_with(&journals) || e.key.starts_with(&receipts)) && e.key.ends_with(&journal))
            })
            .count()
    }
}

/// An attempt id as a failure message shows it: its first 12 digits.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The changes a state log entry holds.
fn log_changes(value: &[u8]) -> Vec<Change> {
    #[derive(serde::Deserialize)]
    struct Entry {
        changes: Vec<Change>,
    }
    serde_json::from_slice::<Entry>(value).map(|e| e.changes).unwrap_or_default()
}

/// Every change under `prefix` from revision `from` up to `until`, through etcd's watch
/// API on `endpoint`; `None` when the member does not give them all within 30 s.
fn watch_from(endpoint: &str, prefix: &[u8], from: i64, until: i64) -> Option<Vec<Event>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let port: u16 = endpoint.rsplit(':').next()?.parse().ok()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = json!({"create_request": {
        "key": b64.encode(prefix),
        "range_end": b64.encode(prefix_end(prefix)),
        "start_revision": from.to_string(),
    }})
    .to_string();
    write!(
        stream,
        "POST /v3/watch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    // The head, then a chunked body: one JSON message per line.
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut pending, mut events) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut chunk = vec![0u8; n + 2];
        reader.read_exact(&mut chunk).ok()?;
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let message: Vec<u8> = pending.drain(..=end).collect();
            let Ok(message) = serde_json::from_slice::<Value>(&message) else { continue };
            for e in message["result"]["events"].as_array().into_iter().flatten() {
                let kv = &e["kv"];
                let field = |name: &str| kv[name].as_str().and_then(|v| b64.decode(v).ok()).unwrap_or_default();
                let revision = kv["mod_revision"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
                events.push(Event {
                    revision,
                    key: String::from_utf8_lossy(&field("key")).into_owned(),
                    value: field("value"),
                    deleted: e["type"] == "DELETE",
                });
                if revision >= until {
                    return Some(events);
                }
            }
        }
    }
    None
}
