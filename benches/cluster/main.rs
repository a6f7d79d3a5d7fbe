//! The cluster benchmark. `cargo bench --bench cluster` runs 10,000 namespaces over three
//! replicas of the release binary in cluster mode, on a real three-member etcd cluster on
//! loopback, every namespace anchoring fast every 60 s to one of a few `local:` journals on
//! one shared root. It watches three replicas start with every namespace at once, grows a
//! fleet to its size in steps, then measures the committed anchors per second, the etcd
//! writes per anchor, the failover after a kill -9 of one replica and the time a replica
//! takes to join, and tries shorter periods until the replicas fall behind. It writes its
//! section to `benches/cluster/results.md` and the "Cluster mode" section of
//! `docs/PERFORMANCE.md`. `-- --sizes N` picks the namespace count; `-- --no-write` only
//! prints; `-- --rewrite-docs` writes the last run's figures again under the notes as they
//! are now, without running anything. `VMSH_BENCH_LOGS=DIR` keeps every process's log.
//!
//! Under `cargo test` (Cargo then passes no `--bench`), it is a smoke run: 300 namespaces
//! every 2 s with a 5 s lease and short windows, checking that every figure is produced and
//! that every namespace of the killed replica anchors again.

#[path = "../scale/args.rs"]
mod args;
#[path = "../scale/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../scale/service.rs"]
#[allow(dead_code)]
mod service;

mod etcd;
mod fleet;
mod replica;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use args::{Args, group};
use etcd::{Counters, EtcdCluster};
use fleet::{Fleet, name};
use measure::percentiles;
use replica::Replica;
use service::proc_usage;
use vmsh_scheduler::cluster::claim::Keys;
use vmsh_scheduler::cluster::etcd::Etcd;
use vmsh_scheduler::cluster::{member, ownership};

/// The replicas' node ids.
const NODES: [&str; 3] = ["r0", "r1", "r2"];

/// How long each phase runs, and on what.
#[derive(Clone)]
struct Plan {
    full: bool,
    /// Every namespace's fast period in the main run.
    period: Duration,
    /// `local:` journals the namespaces share.
    journals: usize,
    /// VMSH_ETCD_LEASE_TTL_S.
    ttl_s: u64,
    /// From every namespace claimed to the start of the window.
    warmup: Duration,
    /// The steady window.
    window: Duration,
    /// Namespaces added at a time while the fleet grows.
    step: usize,
    /// Shorter periods (seconds) tried when the main one is sustained, until the replicas
    /// fall behind.
    faster: Vec<u64>,
    /// Longer periods tried when it is not, until the replicas keep up.
    slower: Vec<u64>,
}

impl Plan {
    fn full() -> Self {
        Plan {
            full: true,
            period: Duration::from_secs(60),
            journals: 8,
            ttl_s: 10,
            warmup: Duration::from_secs(20),
            window: Duration::from_secs(60),
            step: 500,
            faster: vec![45, 36, 30, 20],
            slower: vec![120, 240],
        }
    }

    fn smoke() -> Self {
        Plan {
            full: false,
            period: Duration::from_secs(2),
            journals: 4,
            ttl_s: 5,
            warmup: Duration::from_secs(4),
            window: Duration::from_secs(4),
            step: 300,
            faster: Vec::new(),
            slower: Vec::new(),
        }
    }

    /// Start-up, or one step of growth, and its claims: generous, the figure is what is
    /// recorded.
    fn step_limit(step: usize) -> Duration {
        Duration::from_secs(60 + (step / 50) as u64)
    }

    /// How long three replicas started with every namespace at once are watched.
    fn cold_limit(&self, n: usize) -> Duration {
        Duration::from_secs(6 * self.ttl_s + (n / 200) as u64)
    }

    /// How long a replica joining a fleet of `n` is watched.
    fn join_limit(&self, n: usize) -> Duration {
        Duration::from_secs(6 * self.ttl_s + 30 + (n / 100) as u64)
    }

    /// How long a killed replica's namespaces are waited for: the lease, a round, the
    /// claims, the state read and a period, with room to spare.
    fn failover_limit(&self, n: usize) -> Duration {
        Duration::from_secs(2 * self.ttl_s + 60 + (n / 100) as u64) + 2 * self.period
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The benchmark's view of etcd: its client and what the replicas keep there.
struct Store<'a> {
    cluster: &'a EtcdCluster,
    client: Etcd,
    rt: tokio::runtime::Runtime,
}

impl Store<'_> {
    /// Every claim, namespace → holder.
    fn claims(&self, prefix: &str) -> Result<BTreeMap<String, String>, String> {
        let keys = Keys::new(prefix);
        self.rt.block_on(member::view(&self.client, &keys)).map(|(_, c)| c).map_err(|e| format!("reading claims: {e}"))
    }

    /// How many namespaces are held by the member rendezvous hashing gives them to among
    /// `nodes`; and how many are held at all.
    fn settled(&self, fleet: &Fleet, nodes: &[&str]) -> Result<(usize, usize), String> {
        let claims = self.claims(&fleet.prefix)?;
        let right = (0..fleet.n)
            .filter(|i| {
                let ns = name(*i);
                claims.get(&ns).map(String::as_str) == ownership::owner(&ns, nodes.iter().copied())
            })
            .count();
        Ok((right, claims.len()))
    }
}

/// CPU seconds used so far by each process.
fn cpu_of(pids: &[u32]) -> Vec<f64> {
    pids.iter().map(|p| proc_usage(*p).map_or(f64::NAN, |(cpu, _)| cpu)).collect()
}

/// Sum of every sample of `name` in Prometheus text, optionally only those whose labels
/// hold `with`.
fn sum_of(text: &str, name: &str, with: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(with))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series.split('{').next()? == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Waits until `fleet`'s configured namespaces are all held by their owners among `nodes`;
/// how long it took, or `None` past `limit`.
fn settle(store: &Store, fleet: &Fleet, nodes: &[&str], limit: Duration) -> Result<Option<f64>, String> {
    let t0 = Instant::now();
    loop {
        let (right, _) = store.settled(fleet, nodes)?;
        if right == fleet.n {
            return Ok(Some(t0.elapsed().as_secs_f64()));
        }
        if t0.elapsed() > limit {
            return Ok(None);
        }
        // Each look reads every claim: a second apart keeps the benchmark's own reads well
        // below what the replicas read.
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits until every replica answers /readyz 200, or `limit` has passed since it was spawned.
fn wait_ready(replicas: &mut [Replica], limit: Duration) -> Result<(), String> {
    loop {
        let mut waiting = false;
        for r in replicas.iter_mut() {
            waiting |= !r.poll_ready()? && r.spawned.elapsed() < limit;
        }
        if !waiting {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_all(store: &Store, fleet: &Fleet, plan: &Plan) -> Result<Vec<Replica>, String> {
    let endpoints = store.cluster.endpoints();
    NODES.iter().map(|node| Replica::spawn(node, &fleet.env(node, &endpoints, plan.ttl_s))).collect()
}

/// Three replicas started together with every namespace configured at once.
#[derive(Debug, Clone, Default)]
struct Cold {
    /// Each replica's spawn → /readyz 200.
    ready: Vec<Option<f64>>,
    /// Spawn → every namespace held by its owner.
    settled_s: Option<f64>,
    /// The most claims held at once, and when (s after spawn).
    peak: (usize, f64),
    /// The fastest the claims held grew between two samples, claims per second.
    fastest: f64,
    /// Times each replica said it lost every claim with its lease.
    lease_losses: Vec<usize>,
    /// How long it was watched.
    watched_s: f64,
    /// Why rounds failed, as a replica's /health said.
    error: Option<String>,
}

/// Starts three replicas with all `n` namespaces configured and watches them claim.
fn cold_start(store: &Store, base: &Path, n: usize, plan: &Plan) -> Result<Cold, String> {
    let mut fleet = Fleet::new(&base.join("root-cold"), "/vmsh-bench/cold/", plan.period, plan.journals)?;
    fleet.configure(n, plan.period)?;
    fleet.seed(&store.client, &store.rt, 0..n, plan.period, now_ms())?;
    let mut replicas = spawn_all(store, &fleet, plan)?;
    let t0 = Instant::now();
    let limit = plan.cold_limit(n);
    let mut out = Cold::default();
    let mut last_total = 0usize;
    let mut last_at = t0;
    loop {
        for r in &mut replicas {
            r.poll_ready()?;
        }
        let (right, total) = store.settled(&fleet, &NODES)?;
        let now = t0.elapsed().as_secs_f64();
        if total > out.peak.0 {
            out.peak = (total, now);
        }
        let dt = last_at.elapsed().as_secs_f64();
        if total > last_total && dt > 0.0 {
            out.fastest = out.fastest.max((total - last_total) as f64 / dt);
        }
        (last_total, last_at) = (total, Instant::now());
        if right == n {
            out.settled_s = Some(now);
        }
        let ready = replicas.iter().all(|r| r.ready.is_some());
        if (ready && out.settled_s.is_some()) || t0.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    out.watched_s = t0.elapsed().as_secs_f64();
    out.ready = replicas.iter().map(|r| r.ready.map(|d| d.as_secs_f64())).collect();
    out.lease_losses = replicas.iter().map(|r| r.lease_losses_since(t0)).collect();
    out.error = replicas.iter().find_map(|r| {
        r.addr?;
        let h = r.json("/health").ok()?;
        h["cluster"]["error"].as_str().map(str::to_string)
    });
    stop_all(replicas);
    Ok(out)
}

/// Growing a fleet to its size in steps, the replicas running.
#[derive(Debug, Clone, Default)]
struct Grown {
    /// Each replica's spawn → /readyz 200, with the first step configured.
    ready: Vec<f64>,
    /// Namespaces added per step.
    step: usize,
    /// Spawn → the last step held by its owners.
    total_s: f64,
    /// The slowest step: config written → its namespaces held by their owners.
    slowest_s: f64,
}

/// Starts the replicas on the first `plan.step` namespaces, then adds `plan.step` more at a
/// time (each seeded just before, SIGHUP to every replica) until `n`, waiting each time until
/// every namespace is held by its owner.
fn grow(store: &Store, fleet: &mut Fleet, n: usize, plan: &Plan) -> Result<(Vec<Replica>, Grown), String> {
    let step = plan.step.min(n).max(1);
    fleet.seed(&store.client, &store.rt, 0..step, fleet.period, now_ms())?;
    fleet.configure(step, fleet.period)?;
    let mut replicas = spawn_all(store, fleet, plan)?;
    let t0 = Instant::now();
    let limit = Plan::step_limit(step);
    wait_ready(&mut replicas, limit)?;
    let ready = replicas.iter().map(|r| r.ready.map_or(f64::NAN, |d| d.as_secs_f64())).collect();
    if replicas.iter().any(|r| r.ready.is_none()) {
        let problems: Vec<String> = replicas.iter().map(Replica::problems).collect();
        return Err(format!("the replicas were not ready within {limit:?}: {}", problems.join("\n")));
    }
    let mut slowest = 0.0f64;
    let mut configured = step;
    loop {
        let took = settle(store, fleet, &NODES, limit)?
            .ok_or_else(|| format!("{configured} namespaces not all held by their owners within {limit:?}"))?;
        slowest = slowest.max(took);
        if configured >= n {
            break;
        }
        let next = (configured + step).min(n);
        fleet.seed(&store.client, &store.rt, configured..next, fleet.period, now_ms())?;
        fleet.configure(next, fleet.period)?;
        for r in &replicas {
            r.hangup()?;
        }
        configured = next;
    }
    Ok((replicas, Grown { ready, step, total_s: t0.elapsed().as_secs_f64(), slowest_s: slowest }))
}

/// What etcd did per committed anchor over the window.
#[derive(Debug, Clone, Default)]
struct PerAnchor {
    /// Raft proposals committed: every write request, and every transaction that went
    /// through consensus even when its comparison failed.
    proposals: f64,
    /// Store revisions: write requests that changed something.
    revisions: f64,
    /// Keys written (puts, inside transactions or not).
    puts: f64,
    /// Delete operations.
    deletes: f64,
    /// Bytes of keys and values written.
    put_bytes: f64,
    /// Transactions, and other requests, by gRPC method.
    requests: BTreeMap<String, f64>,
    /// WAL fsyncs, per member.
    fsyncs: f64,
    /// Keys in the store, growth.
    keys: f64,
}

/// The steady window.
#[derive(Debug, Clone, Default)]
struct Steady {
    offered: f64,
    rate: f64,
    per_replica: Vec<f64>,
    lag: (f64, f64, f64),
    anchors: usize,
    wall: f64,
    cpu_replicas: Vec<f64>,
    cpu_etcd: Vec<f64>,
    per_anchor: PerAnchor,
    proposals_per_s: f64,
    /// State writes (log commits and folds) per anchor, as the replicas count them.
    state_writes: f64,
    /// `vmsh_anchors_succeeded_total` summed over replicas, per second.
    metric_rate: f64,
    db_bytes: f64,
    db_in_use: f64,
    keys_total: f64,
    /// Times a replica lost every claim with its lease during the window, all replicas.
    lease_losses: usize,
    /// The machine's one-minute load average at the end of the window (the runnable
    /// processes of the whole machine, this benchmark's and others').
    load: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn delta(before: &[Counters], after: &[Counters], name: &str) -> Vec<f64> {
    // A member that did not answer one of the scrapes says nothing about the window.
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| !b.is_empty() && !a.is_empty())
        .map(|(b, a)| a.get(name) - b.get(name))
        .collect()
}

fn max_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Measures `replicas` of `fleet` over the plan's window (after its warm-up).
fn steady(store: &Store, fleet: &Fleet, plan: &Plan, replicas: &[Replica], deep: bool) -> Result<Steady, String> {
    std::thread::sleep(plan.warmup);
    let scrape = |what: &str| -> Result<(f64, f64), String> {
        let mut writes = 0.0;
        let mut succeeded = 0.0;
        for r in replicas {
            let text = r.metrics().map_err(|e| format!("{what}: {e}"))?;
            writes += sum_of(&text, "vmsh_state_writes_total", "result=\"success\"");
            succeeded += sum_of(&text, "vmsh_anchors_succeeded_total", "");
        }
        Ok((writes, succeeded))
    };
    let s0 = Instant::now();
    let (writes0, succeeded0) = if deep { scrape("replica metrics")? } else { (0.0, 0.0) };
    let s0 = s0 + s0.elapsed() / 2;
    let m0 = Instant::now();
    let etcd0 = store.cluster.metrics()?;
    let replica_pids: Vec<u32> = replicas.iter().map(Replica::pid).collect();
    let etcd_pids = store.cluster.pids();
    let (rcpu0, ecpu0) = (cpu_of(&replica_pids), cpu_of(&etcd_pids));
    let t0 = Instant::now();
    std::thread::sleep(plan.window);
    let t1 = Instant::now();
    let (rcpu1, ecpu1) = (cpu_of(&replica_pids), cpu_of(&etcd_pids));
    let etcd1 = store.cluster.metrics()?;
    let m1 = m0.elapsed().as_secs_f64();
    let s1 = Instant::now();
    let (writes1, succeeded1) = if deep { scrape("replica metrics")? } else { (0.0, 0.0) };
    let s1 = s1 + s1.elapsed() / 2;
    let wall = (t1 - t0).as_secs_f64();
    let mut lags = Vec::new();
    let mut per_replica = Vec::new();
    let mut anchors = 0usize;
    for r in replicas {
        let seen: Vec<_> = r.anchored_since(t0).into_iter().filter(|a| a.at < t1).collect();
        anchors += seen.len();
        per_replica.push(seen.len() as f64 / wall);
        lags.extend(seen.iter().filter_map(|a| a.lag_ms).map(|l| l as f64));
    }
    let lag = percentiles(&mut lags).ok_or_else(|| {
        let problems: Vec<String> = replicas.iter().map(Replica::problems).collect();
        format!("no anchor committed in {:?}: {}", plan.window, problems.join("\n"))
    })?;
    let per = |total: f64| if anchors > 0 { total / anchors as f64 } else { f64::NAN };
    let mut requests = BTreeMap::new();
    for method in ["Txn", "Range", "Put", "DeleteRange", "LeaseGrant", "LeaseRevoke", "LeaseKeepAlive"] {
        let key = format!("grpc_server_handled_total:{method}");
        let total: f64 = delta(&etcd0, &etcd1, &key).iter().sum();
        if total > 0.0 {
            requests.insert(method.to_string(), per(total));
        }
    }
    let proposals = max_of(&delta(&etcd0, &etcd1, "etcd_server_proposals_committed_total"));
    let per_anchor = PerAnchor {
        proposals: per(proposals),
        revisions: per(max_of(&delta(&etcd0, &etcd1, "etcd_debugging_mvcc_current_revision"))),
        puts: per(max_of(&delta(&etcd0, &etcd1, "etcd_mvcc_put_total"))),
        deletes: per(max_of(&delta(&etcd0, &etcd1, "etcd_mvcc_delete_total"))),
        put_bytes: per(max_of(&delta(&etcd0, &etcd1, "etcd_debugging_mvcc_total_put_size_in_bytes"))),
        requests,
        fsyncs: per(max_of(&delta(&etcd0, &etcd1, "etcd_disk_wal_fsync_duration_seconds_count"))),
        keys: per(max_of(&delta(&etcd0, &etcd1, "etcd_debugging_mvcc_keys_total"))),
    };
    let cpu = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (y - x) / wall * 60.0).collect::<Vec<f64>>();
    let succeeded = succeeded1 - succeeded0;
    Ok(Steady {
        offered: fleet.offered(),
        rate: anchors as f64 / wall,
        per_replica,
        lag,
        anchors,
        wall,
        cpu_replicas: cpu(&rcpu0, &rcpu1),
        cpu_etcd: cpu(&ecpu0, &ecpu1),
        per_anchor,
        proposals_per_s: proposals / m1,
        state_writes: if succeeded > 0.0 { (writes1 - writes0) / succeeded } else { f64::NAN },
        metric_rate: succeeded / (s1 - s0).as_secs_f64(),
        db_bytes: etcd1.first().map_or(0.0, |c| c.get("etcd_mvcc_db_total_size_in_bytes")),
        db_in_use: etcd1.first().map_or(0.0, |c| c.get("etcd_mvcc_db_total_size_in_use_in_bytes")),
        keys_total: etcd1.first().map_or(0.0, |c| c.get("etcd_debugging_mvcc_keys_total")),
        load: load_average(),
        lease_losses: replicas.iter().map(|r| r.lease_losses_since(t0)).sum(),
    })
}

/// A kill -9 of one replica, and how its namespaces came back.
#[derive(Debug, Clone, Default)]
struct Failover {
    victim: String,
    /// Namespaces it held.
    share: usize,
    /// Kill → its claims gone from etcd (its lease expired).
    expired_s: Option<f64>,
    /// Kill → every namespace claimed again.
    claimed_s: Option<f64>,
    /// Kill → both survivors' /health say no namespace is unowned, with two members.
    health_s: Option<f64>,
    /// Kill → each of its namespaces' next committed anchor: p50, p99, max.
    next_anchor: Option<(f64, f64, f64)>,
    /// How late each one's next committed anchor was against its due time (its last
    /// committed anchor before the kill plus a period): p50, p99, max.
    late: Option<(f64, f64, f64)>,
    /// Namespaces that came due before every namespace was claimed again.
    due_in_outage: usize,
    /// Their lateness: p50, p99, max.
    late_in_outage: Option<(f64, f64, f64)>,
    /// Its namespaces with no committed anchor within the limit.
    missing: usize,
    /// Of their first anchors, those that resumed an attempt the journal already held.
    recovered: usize,
    /// Times a survivor lost every claim with its lease meanwhile, each survivor.
    lease_losses: Vec<usize>,
}

/// Kills `NODES[2]` and follows its namespaces until each has anchored on a survivor.
fn failover(store: &Store, fleet: &Fleet, plan: &Plan, replicas: &mut Vec<Replica>) -> Result<Failover, String> {
    let victim = replicas.pop().ok_or("no replica to kill")?;
    let node = victim.node.clone();
    let claims = store.claims(&fleet.prefix)?;
    let share: BTreeSet<u32> = claims
        .iter()
        .filter(|(_, holder)| **holder == node)
        .filter_map(|(ns, _)| fleet::index(ns).and_then(|i| u32::try_from(i).ok()))
        .collect();
    let mut out = Failover { victim: node, share: share.len(), ..Failover::default() };
    // When each of its namespaces is due next, from its last committed anchor.
    let mut due: BTreeMap<u32, Instant> = BTreeMap::new();
    for a in victim.anchored_since(victim.spawned) {
        due.insert(a.ns, a.at + fleet.period);
    }
    let t_kill = Instant::now();
    victim.kill();
    let limit = plan.failover_limit(fleet.n);
    let owners = Keys::new(&fleet.prefix).owners();
    let owners = String::from_utf8_lossy(&owners).into_owned();
    let mut first: BTreeMap<u32, (f64, bool)> = BTreeMap::new();
    let mut last_health = Instant::now();
    loop {
        let now = t_kill.elapsed().as_secs_f64();
        let held = store.cluster.count(&owners)?;
        if out.expired_s.is_none() && held < fleet.n as u64 {
            out.expired_s = Some(now);
        }
        if out.expired_s.is_some() && out.claimed_s.is_none() && held == fleet.n as u64 {
            out.claimed_s = Some(now);
        }
        if out.health_s.is_none() && last_health.elapsed() >= Duration::from_secs(1) {
            last_health = Instant::now();
            let all = replicas.iter().all(|r| {
                r.json("/health").is_ok_and(|h| {
                    let c = &h["cluster"];
                    let members = c["members"].as_object();
                    c["unowned"].as_u64() == Some(0)
                        && members.is_some_and(|m| {
                            m.len() == replicas.len()
                                && m.values().filter_map(|v| v.as_u64()).sum::<u64>() == fleet.n as u64
                        })
                })
            });
            if all {
                out.health_s = Some(now);
            }
        }
        for r in replicas.iter() {
            for a in r.anchored_since(t_kill) {
                if share.contains(&a.ns) {
                    first.entry(a.ns).or_insert(((a.at - t_kill).as_secs_f64(), a.recovered));
                }
            }
        }
        let done = first.len() == share.len() && out.claimed_s.is_some() && out.health_s.is_some();
        if done || t_kill.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut times: Vec<f64> = first.values().map(|(t, _)| *t).collect();
    out.next_anchor = percentiles(&mut times);
    out.missing = share.len() - first.len();
    out.recovered = first.values().filter(|(_, r)| *r).count();
    out.lease_losses = replicas.iter().map(|r| r.lease_losses_since(t_kill)).collect();
    let claimed = t_kill + Duration::from_secs_f64(out.claimed_s.unwrap_or(f64::MAX).min(1e9));
    let (mut late, mut late_in_outage) = (Vec::new(), Vec::new());
    for (ns, (t, _)) in &first {
        let Some(due) = due.get(ns) else { continue };
        let next = t_kill + Duration::from_secs_f64(*t);
        let by = next.saturating_duration_since(*due).as_secs_f64();
        late.push(by);
        if *due < claimed {
            late_in_outage.push(by);
        }
    }
    out.due_in_outage = late_in_outage.len();
    out.late = percentiles(&mut late);
    out.late_in_outage = percentiles(&mut late_in_outage);
    Ok(out)
}

/// A replica joining a running fleet.
#[derive(Debug, Clone, Default)]
struct Join {
    /// Namespaces it should own.
    share: usize,
    /// Spawn → /readyz 200.
    ready_s: Option<f64>,
    /// Spawn → it holds exactly its share.
    owned_s: Option<f64>,
    /// Spawn → its first committed anchor.
    first_anchor_s: Option<f64>,
    /// The most of its share it held at once.
    most: usize,
    /// Times a replica lost every claim with its lease meanwhile, each replica.
    lease_losses: Vec<usize>,
}

/// Starts `NODES[2]` again beside the survivors and waits until it holds its share.
fn rejoin(store: &Store, fleet: &Fleet, plan: &Plan, replicas: &mut Vec<Replica>) -> Result<Join, String> {
    let node = NODES[2];
    let mine: BTreeSet<String> =
        (0..fleet.n).map(name).filter(|ns| ownership::owner(ns, NODES.iter().copied()) == Some(node)).collect();
    let mut joining = Replica::spawn(node, &fleet.env(node, &store.cluster.endpoints(), plan.ttl_s))?;
    let t0 = joining.spawned;
    let limit = plan.join_limit(fleet.n);
    let mut out = Join { share: mine.len(), ..Join::default() };
    let mut last_claims = Instant::now() - Duration::from_secs(2);
    loop {
        if joining.poll_ready()? && out.ready_s.is_none() {
            out.ready_s = joining.ready.map(|d| d.as_secs_f64());
        }
        if out.first_anchor_s.is_none()
            && let Some(a) = joining.anchored_since(t0).first()
        {
            out.first_anchor_s = Some((a.at - t0).as_secs_f64());
        }
        if out.owned_s.is_none() && last_claims.elapsed() >= Duration::from_secs(1) {
            last_claims = Instant::now();
            let claims = store.claims(&fleet.prefix)?;
            let held = mine.iter().filter(|ns| claims.get(*ns).is_some_and(|h| h == node)).count();
            out.most = out.most.max(held);
            if held == mine.len() && claims.values().filter(|h| *h == node).count() == held {
                out.owned_s = Some(t0.elapsed().as_secs_f64());
            }
        }
        let done = out.ready_s.is_some() && out.owned_s.is_some() && out.first_anchor_s.is_some();
        if done || t0.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    replicas.push(joining);
    out.lease_losses = replicas.iter().map(|r| r.lease_losses_since(t0)).collect();
    Ok(out)
}

/// One step of the search for the highest sustained rate.
#[derive(Debug, Clone)]
struct Step {
    period_s: u64,
    steady: Steady,
}

/// Everything one run measured.
#[derive(Default)]
struct Report {
    n: usize,
    cold: Option<Cold>,
    grown: Option<Grown>,
    steady: Option<Steady>,
    failover: Option<Failover>,
    join: Option<Join>,
    steps: Vec<Step>,
    /// Whether the other periods ran on a fresh fleet (the first did not come back from the
    /// join).
    steps_on_fresh: bool,
    failures: Vec<String>,
    wall_s: f64,
    etcd_version: String,
}

/// Stops every replica (one that does not stop in time is killed as it is dropped).
fn stop_all(replicas: Vec<Replica>) {
    for r in replicas {
        let _ = r.stop(Duration::from_secs(30));
    }
}

/// The main run: grow to `n`, steady window, failover, rejoin. Returns the fleet and its
/// replicas when the one that joined took its share, for the search to go on with.
fn main_run(
    store: &Store,
    base: &Path,
    n: usize,
    plan: &Plan,
    report: &mut Report,
) -> Result<Option<(Fleet, Vec<Replica>)>, String> {
    let mut fleet = Fleet::new(&base.join("root-main"), "/vmsh-bench/main/", plan.period, plan.journals)?;
    eprintln!("  growing to {} namespaces, {} at a time …", group(n), group(plan.step.min(n)));
    let (mut replicas, grown) = grow(store, &mut fleet, n, plan)?;
    eprintln!("  ready after {:.2?} s; grown in {:.0} s", grown.ready, grown.total_s);
    report.grown = Some(grown);
    eprintln!("  steady window …");
    let s = steady(store, &fleet, plan, &replicas, true)?;
    eprintln!("  {:.0} anchors/s of {:.0} offered, lag p99 {:.0} ms", s.rate, s.offered, s.lag.1);
    report.steady = Some(s);
    eprintln!("  kill -9 {} …", NODES[2]);
    let f = failover(store, &fleet, plan, &mut replicas)?;
    eprintln!("  {} namespaces moved; next anchor p50/p99/max {:?} s; {} missing", f.share, f.next_anchor, f.missing);
    report.failover = Some(f);
    eprintln!("  {} joins again …", NODES[2]);
    let j = rejoin(store, &fleet, plan, &mut replicas)?;
    eprintln!("  ready after {:?} s, holds its {} after {:?} s", j.ready_s, j.share, j.owned_s);
    let healthy = j.owned_s.is_some();
    report.join = Some(j);
    if healthy {
        return Ok(Some((fleet, replicas)));
    }
    stop_all(replicas);
    Ok(None)
}

/// Other periods, changed by reloading the namespaces file of the main fleet (or, when it
/// did not recover from the failover, of a fresh one grown the same way): shorter ones until
/// the replicas fall behind when the main period was sustained, longer ones until they keep
/// up when it was not.
fn search(
    store: &Store,
    base: &Path,
    n: usize,
    plan: &Plan,
    running: Option<(Fleet, Vec<Replica>)>,
    report: &mut Report,
) -> Result<(), String> {
    let kept_up = report.steady.as_ref().is_some_and(sustained);
    let periods = if kept_up { &plan.faster } else { &plan.slower };
    report.steps_on_fresh = running.is_none();
    let (mut fleet, replicas) = match running {
        Some(running) => running,
        None => {
            let mut fleet = Fleet::new(&base.join("root-search"), "/vmsh-bench/search/", plan.period, plan.journals)?;
            eprintln!("  growing a fresh fleet …");
            let (replicas, _) = grow(store, &mut fleet, n, plan)?;
            (fleet, replicas)
        }
    };
    let result = (|| {
        for &period_s in periods {
            fleet.configure(n, Duration::from_secs(period_s))?;
            for r in &replicas {
                r.hangup()?;
            }
            eprintln!("  fast every {period_s} s ({:.0} anchors/s offered) …", fleet.offered());
            let s = steady(store, &fleet, plan, &replicas, false)?;
            eprintln!("    {:.0} anchors/s, lag p99 {:.0} ms", s.rate, s.lag.1);
            let flipped = sustained(&s) != kept_up;
            report.steps.push(Step { period_s, steady: s });
            if flipped {
                break;
            }
        }
        Ok(())
    })();
    stop_all(replicas);
    result
}

/// Whether a window kept up: committed at least 95 % of what was offered, lag p99 under 1 s.
fn sustained(s: &Steady) -> bool {
    s.rate >= 0.95 * s.offered && s.lag.1 < 1000.0
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "not reached".into(), |s| format!("{s:.1} s"))
}

fn list(v: &[f64], unit: &str) -> String {
    v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ") + unit
}

fn render(report: &Report, plan: &Plan) -> String {
    let mut out = String::new();
    let n = report.n;
    let period = plan.period.as_secs();
    let _ = writeln!(
        out,
        "Machine: {}, shared with other work while it ran: the three etcd members, the three replicas and the \
         benchmark share these cores. Binary: `{}` ({}). etcd {}.",
        measure::machine(),
        Path::new(service::BIN).display(),
        if cfg!(debug_assertions) { "debug build" } else { "release build" },
        report.etcd_version
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} namespaces over {} replicas, each anchoring fast every {period} s ({:.0} anchors/s offered) to one of {} \
         `local:` journals on one shared root; `VMSH_ETCD_LEASE_TTL_S={}`{}, `VMSH_ANCHOR_WORKERS=256`, \
         three etcd members on loopback. Window {} s after a {} s warm-up.",
        group(n),
        NODES.len(),
        n as f64 / period as f64,
        plan.journals,
        plan.ttl_s,
        if plan.ttl_s == 10 { " (the default)" } else { "" },
        plan.window.as_secs(),
        plan.warmup.as_secs(),
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---|");
    let mut row = |what: &str, value: String| {
        let _ = writeln!(out, "| {what} | {value} |");
    };
    if let Some(c) = &report.cold {
        let ready: Vec<String> = c.ready.iter().map(|r| secs(*r)).collect();
        row(
            &format!("cold start: 3 replicas spawned together, {} namespaces configured → /readyz 200", group(n)),
            ready.join(" / "),
        );
        row("  → every namespace held by its owner", secs(c.settled_s));
        row(
            "  most claims held at once",
            format!("{} after {:.1} s; claims grew by {:.0}/s at most (all replicas)", c.peak.0, c.peak.1, c.fastest),
        );
        row(
            "  leases lost with every claim (each replica), in the time watched",
            format!(
                "{} in {:.0} s",
                c.lease_losses.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / "),
                c.watched_s
            ),
        );
        if let Some(e) = &c.error {
            row("  a replica's /health `cluster.error` at the end", format!("`{e}`"));
        }
    }
    if let Some(g) = &report.grown {
        row(
            &format!("grown in steps of {}: 3 replicas → /readyz 200 (first step)", group(g.step)),
            list(&g.ready, " s"),
        );
        row(
            &format!("  → all {} namespaces held by their owners", group(n)),
            format!("{:.0} s (slowest step {:.1} s)", g.total_s, g.slowest_s),
        );
    }
    if let Some(s) = &report.steady {
        row(
            "committed anchors per second (`anchored` lines)",
            format!("**{:.0}/s** of {:.0}/s offered ({} in {:.1} s)", s.rate, s.offered, s.anchors, s.wall),
        );
        row("  per replica", list(&s.per_replica, " /s"));
        row("  `vmsh_anchors_succeeded_total`, summed over replicas", format!("{:.0}/s", s.metric_rate));
        row("schedule lag p50 / p99 / max", format!("{:.0} / {:.0} / {:.0} ms", s.lag.0, s.lag.1, s.lag.2));
        row("CPU (s per min): replicas", list(&s.cpu_replicas, " s"));
        row("CPU (s per min): etcd members", list(&s.cpu_etcd, " s"));
        row("machine load average (1 min) at the end of the window", format!("{:.1}", s.load));
        row("leases lost during the window", s.lease_losses.to_string());
        let p = &s.per_anchor;
        row(
            "etcd per committed anchor: write requests (Raft proposals)",
            format!("**{:.2}** ({:.0} proposals/s)", p.proposals, s.proposals_per_s),
        );
        row("  revisions (writes that changed something)", format!("{:.2}", p.revisions));
        row("  keys put / delete operations", format!("{:.2} / {:.3}", p.puts, p.deletes));
        row("  bytes put (keys and values)", format!("{:.0} B", p.put_bytes));
        let reqs: Vec<String> = p.requests.iter().map(|(m, v)| format!("{m} {v:.2}")).collect();
        row("  gRPC requests by method, all members", reqs.join(", "));
        row("  WAL fsyncs, per member", format!("{:.2}", p.fsyncs));
        row("  keys added to the store", format!("{:.2}", p.keys));
        row(
            "state writes per anchor (`vmsh_state_writes_total`: log commits and folds)",
            format!("{:.2}", s.state_writes),
        );
        row(
            "etcd after the window: keys, database size (in use)",
            format!(
                "{:.0} keys, {:.0} MiB ({:.0} MiB)",
                s.keys_total,
                s.db_bytes / (1024.0 * 1024.0),
                s.db_in_use / (1024.0 * 1024.0)
            ),
        );
    }
    if let Some(f) = &report.failover {
        row("failover: namespaces of the killed replica", format!("{} (kill -9 of {})", f.share, f.victim));
        row("  kill → its claims gone (lease expired)", secs(f.expired_s));
        row("  kill → every namespace claimed again (etcd)", secs(f.claimed_s));
        row("  kill → both survivors' /health: unowned 0, 2 members", secs(f.health_s));
        row(
            "  kill → each namespace's next committed anchor, p50 / p99 / max",
            f.next_anchor.map_or_else(|| "none".into(), |(a, b, c)| format!("**{a:.1} / {b:.1} / {c:.1} s**")),
        );
        let pct = |v: Option<(f64, f64, f64)>| {
            v.map_or_else(|| "none".into(), |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1} s"))
        };
        row("  each namespace's next committed anchor against its due time: late by p50 / p99 / max", pct(f.late));
        row(
            &format!("  the {} that came due before every namespace was claimed again: late by", f.due_in_outage),
            format!("**{}**", pct(f.late_in_outage)),
        );
        row("  namespaces with no anchor within the limit", f.missing.to_string());
        row("  first anchors that resumed an attempt already in the journal", f.recovered.to_string());
        row(
            "  leases lost with every claim meanwhile (each survivor)",
            f.lease_losses.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / "),
        );
    }
    if let Some(j) = &report.join {
        row(
            &format!("join: a replica starting beside two with {} namespaces → /readyz 200", group(n)),
            secs(j.ready_s),
        );
        row(
            &format!("  → holds its share ({} namespaces)", j.share),
            match j.owned_s {
                Some(_) => secs(j.owned_s),
                None => format!("not within the limit; held {} of them at most", j.most),
            },
        );
        row("  → its first committed anchor", secs(j.first_anchor_s));
        row(
            "  leases lost with every claim meanwhile (each replica, the joining one last)",
            j.lease_losses.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / "),
        );
    }
    if !report.steps.is_empty() {
        let _ = writeln!(out);
        let fleet = if report.steps_on_fresh {
            "a fresh fleet grown the same way (the first did not come back from the join)"
        } else {
            "the same fleet"
        };
        let _ = writeln!(
            out,
            "Other periods, set by reloading the namespaces file of {fleet}, until the replicas fall behind (or keep \
             up); the first row is the window above:"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| fast period | offered | committed | lag p50 / p99 / max | etcd proposals per anchor | CPU (s per min): replicas, etcd |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        if let Some(s) = &report.steady {
            step_row(&mut out, period, s);
        }
        for step in &report.steps {
            step_row(&mut out, step.period_s, &step.steady);
        }
    }
    if !report.failures.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Phases that failed:");
        let _ = writeln!(out);
        for f in &report.failures {
            let _ = writeln!(out, "- {}", f.replace('\n', " "));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Benchmark wall time: {:.0} s.", report.wall_s);
    out
}

fn step_row(out: &mut String, period_s: u64, s: &Steady) {
    let _ = writeln!(
        out,
        "| {period_s} s | {:.0}/s | {:.0}/s | {:.0} / {:.0} / {:.0} ms | {:.2} | {:.1} s, {:.1} s |",
        s.offered,
        s.rate,
        s.lag.0,
        s.lag.1,
        s.lag.2,
        s.per_anchor.proposals,
        s.cpu_replicas.iter().sum::<f64>(),
        s.cpu_etcd.iter().sum::<f64>()
    );
}

/// The smoke run's checks: every figure was produced and the killed replica's namespaces
/// all anchored again.
fn check_smoke(report: &Report) -> Result<(), String> {
    let s = report.steady.as_ref().ok_or("no steady window")?;
    if !(s.rate > 0.0 && s.per_anchor.proposals > 0.0 && s.lag.2 >= s.lag.1) {
        return Err(format!("implausible steady figures: {s:?}"));
    }
    let f = report.failover.as_ref().ok_or("no failover")?;
    if f.share == 0 || f.missing > 0 || f.next_anchor.is_none() || f.claimed_s.is_none() || f.health_s.is_none() {
        return Err(format!("the killed replica's namespaces did not all come back: {f:?}"));
    }
    let j = report.join.as_ref().ok_or("no join")?;
    if j.owned_s.is_none() {
        return Err(format!("the replica that joined did not take its share: {j:?}"));
    }
    Ok(())
}

fn run(n: usize, plan: &Plan, write: bool) -> Result<(), String> {
    let started = Instant::now();
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cluster");
    let earlier: Vec<PathBuf> =
        std::fs::read_dir(&scratch).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    for dir in &earlier {
        let _ = std::fs::remove_dir_all(dir);
    }
    let base = scratch.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let result = measure(&base, n, plan);
    eprintln!("removing the benchmark's files …");
    let _ = std::fs::remove_dir_all(&base);
    let mut report = result?;
    report.wall_s = started.elapsed().as_secs_f64();
    let text = render(&report, plan);
    println!("{text}");
    if !plan.full {
        check_smoke(&report)?;
        return if report.failures.is_empty() { Ok(()) } else { Err(report.failures.join("; ")) };
    }
    // Kept, so that `--rewrite-docs` can put it under notes edited since.
    let _ = std::fs::write(last_figures(), &text);
    if write {
        write_docs(&text)?;
    }
    if report.failures.is_empty() { Ok(()) } else { Err(report.failures.join("; ")) }
}

fn measure(base: &Path, n: usize, plan: &Plan) -> Result<Report, String> {
    eprintln!("starting etcd (3 members) …");
    let cluster = EtcdCluster::start(NODES.len(), &base.join("etcd"))?;
    let etcd_version = cluster.version();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    let store = Store { client: fleet::client(&cluster.endpoints())?, cluster: &cluster, rt };
    let mut report = Report { n, etcd_version, ..Report::default() };
    if plan.full {
        eprintln!("cold start: {} namespaces configured at once …", group(n));
        match cold_start(&store, base, n, plan) {
            Ok(c) => {
                eprintln!("  {c:?}");
                report.cold = Some(c);
            }
            Err(e) => report.failures.push(format!("cold start: {e}")),
        }
    }
    eprintln!("{} namespaces, fast every {} s …", group(n), plan.period.as_secs());
    let etcd_died = |report: &mut Report| {
        for e in store.cluster.exited() {
            if !report.failures.contains(&e) {
                eprintln!("  {e}");
                report.failures.push(e);
            }
        }
    };
    let running = match main_run(&store, base, n, plan, &mut report) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("  failed: {e}");
            report.failures.push(format!("main run: {e}"));
            None
        }
    };
    etcd_died(&mut report);
    match running {
        Some(running) if plan.full && report.steady.is_some() => {
            if let Err(e) = search(&store, base, n, plan, Some(running), &mut report) {
                eprintln!("  failed: {e}");
                report.failures.push(format!("other periods: {e}"));
            }
        }
        Some((_, replicas)) => stop_all(replicas),
        None if plan.full && report.steady.is_some() => {
            if let Err(e) = search(&store, base, n, plan, None, &mut report) {
                eprintln!("  failed: {e}");
                report.failures.push(format!("other periods: {e}"));
            }
        }
        None => {}
    }
    etcd_died(&mut report);
    if let Some(dir) = std::env::var_os("VMSH_BENCH_LOGS") {
        store.cluster.keep_logs(Path::new(&dir));
    }
    Ok(report)
}

/// Writes `benches/cluster/results.md` (the notes and the figures, as the section of
/// `docs/PERFORMANCE.md`) and puts that section in the page: in place of the last one, else
/// before the aggregation section, which its own benchmark rewrites to the end of the page.
fn write_docs(figures: &str) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let section =
        format!("## Cluster mode\n\n{}\n\n### Results\n\n{}", include_str!("notes.md").trim_end(), figures.trim_end());
    let results = root.join("benches/cluster/results.md");
    std::fs::write(&results, format!("{section}\n")).map_err(|e| format!("{}: {e}", results.display()))?;
    let doc = root.join("docs/PERFORMANCE.md");
    let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let heading = "\n## Cluster mode\n";
    // What follows the section: the next section, if any.
    let (before, after) = match text.find(heading) {
        Some(at) => {
            let from = at + heading.len();
            (&text[..at], text[from..].find("\n## ").map_or("", |e| &text[from + e..]))
        }
        None => match text.find("\n## Aggregation\n") {
            Some(at) => (&text[..at], &text[at..]),
            None => (text.as_str(), ""),
        },
    };
    let page = format!("{}\n\n{section}\n{after}", before.trim_end());
    std::fs::write(&doc, page).map_err(|e| format!("{}: {e}", doc.display()))?;
    eprintln!("wrote {} and {}", results.display(), doc.display());
    Ok(())
}

/// Where the last full run's figures are kept.
fn last_figures() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cluster-figures.md")
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--rewrite-docs") {
        let written = std::fs::read_to_string(last_figures())
            .map_err(|e| format!("no figures of an earlier run at {}: {e}", last_figures().display()))
            .and_then(|figures| write_docs(&figures));
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cluster benchmark: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match Args::parse(&[10_000], &[300]) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let plan = if args.full { Plan::full() } else { Plan::smoke() };
    let n = args.sizes.iter().copied().max().unwrap_or(300);
    match run(n, &plan, args.write) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
