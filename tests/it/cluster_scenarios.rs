//! Cluster mode end to end: three etcd members on loopback, scheduler replicas (the real
//! binary) sharing one root, 200 namespaces on 1–2 s cadences anchoring to `local:`
//! journals. Each test is one failure or operation; all end with the same checks
//! (`support::replicas`): no attempt anchored twice, no period lost outside the outage,
//! every journal chain intact up to its committed head, the state in etcd agreeing with
//! the committed anchors, and every write made by the namespace's holder of the moment.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::replicas::{Anchor, Fleet, Outage, ROUND_MS, TTL_S, ns_name, poll, quantile};
use crate::support::report::{count, flat, report};
use crate::support::{metric, now_ms};

const NODES: [&str; 3] = ["r0", "r1", "r2"];

/// Beyond a membership round, what a takeover may take on a loaded 2-core machine: the
/// round's own work (renew, read, then one claim transaction per namespace), reading the
/// namespaces' state, and the burst of overdue anchors the replica taking them then runs.
const SLACK_MS: i64 = 1_000;

/// How long a namespace may take to resume elsewhere after its replica died: its lease
/// ends at most a TTL after the kill (renewed last before it), the others see that at
/// their next round, and the namespace, overdue by then, anchors within its period.
fn failover_bound(period: i64) -> i64 {
    TTL_S as i64 * 1000 + ROUND_MS + period + SLACK_MS
}

/// How long a namespace may take to resume elsewhere once its replica stopped cleanly: it
/// let go of its claims by revoking its lease as it left (after its running anchors
/// returned and its state was written), so the others take them at their next round, with
/// no lease to wait for.
fn move_bound(period: i64) -> i64 {
    ROUND_MS + period + SLACK_MS
}

/// Stops `node` cleanly and waits until its share anchors on the others, each namespace
/// within [`move_bound`] of the replica's exit; its outages run from when it was asked.
/// Returns the times from the request to stop, and how long the replica took to exit.
fn stop_and_move(fleet: &mut Fleet, node: &str, what: &str, outages: &mut Vec<Outage>) -> (Vec<i64>, i64) {
    let share = fleet.held_by(node);
    let (asked, exited) = fleet.terminate(node);
    let first = fleet.wait_anchored_elsewhere(asked, &share, node, Duration::from_secs(30));
    for (ns, anchor) in &first {
        let took = anchor.entry.time_ms - exited;
        let bound = move_bound(fleet.periods[ns]);
        assert!(took <= bound, "{ns} moved {took} ms after {node} exited, over {bound} ms");
    }
    (outages_until(fleet, what, asked, &first, outages), exited - asked)
}

/// A one-namespace outage.
fn outage(what: &str, ns: &str, from_ms: i64, to_ms: i64) -> Outage {
    Outage { what: what.to_string(), from_ms, to_ms, namespaces: Some(BTreeSet::from([ns.to_string()])) }
}

/// For each namespace, from `from_ms` (less one period, for the one that may have been due
/// as it began) to its first anchor in `first`; returns the times taken from `from_ms`.
fn outages_until(
    fleet: &Fleet,
    what: &str,
    from_ms: i64,
    first: &BTreeMap<String, Anchor>,
    out: &mut Vec<Outage>,
) -> Vec<i64> {
    let mut took = Vec::new();
    for (ns, anchor) in first {
        out.push(outage(what, ns, from_ms - fleet.periods[ns], anchor.entry.time_ms));
        took.push(anchor.entry.time_ms - from_ms);
    }
    took
}

/// Every replica of `nodes` answers /readyz with `code`.
fn wait_ready(fleet: &Fleet, nodes: &[&str], code: u16, limit: Duration) {
    for node in nodes {
        poll(limit, &format!("{node}'s /readyz to answer {code}"), || {
            (fleet.status(node, "/readyz") == code).then_some(())
        });
    }
}

#[test]
fn killing_the_replica_that_owns_a_namespace_moves_its_namespaces_to_the_others_within_the_ttl_and_one_period() {
    let rounds = count(1, 3);
    let mut fleet = Fleet::start(&NODES);
    let (mut failover, mut outages, mut moved_total) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        let victim = fleet.owners().expect("etcd answers")[&ns_name(round)].clone();
        let moved = fleet.held_by(&victim);
        let killed = fleet.kill9(&victim);
        let first = fleet.wait_anchored_elsewhere(killed, &moved, &victim, Duration::from_secs(30));
        for (ns, anchor) in &first {
            let took = anchor.entry.time_ms - killed;
            let bound = failover_bound(fleet.periods[ns]);
            assert!(
                took <= bound,
                "{ns} resumed on {} {took} ms after {victim} was killed, over {bound} ms",
                anchor.node
            );
        }
        failover.extend(outages_until(&fleet, &format!("{victim} killed"), killed, &first, &mut outages));
        moved_total += moved.len();
        if round + 1 < rounds {
            // It comes back under its name, and is handed its share back.
            let started = now_ms();
            fleet.start_replica(&victim);
            fleet.wait_placed(&NODES, Duration::from_secs(30));
            let expected = moved.iter().map(|ns| (ns.clone(), victim.clone())).collect();
            let back = fleet.wait_anchored_by(started, &expected, Duration::from_secs(30));
            outages_until(&fleet, &format!("{victim} back"), started, &back, &mut outages);
        }
    }
    let findings = fleet.finish(&outages);
    let figures = flat(
        findings.figures(),
        json!({
            "kills": rounds,
            "namespacesMoved": moved_total,
            "failoverP50Ms": quantile(&failover, 0.5),
            "failoverP99Ms": quantile(&failover, 0.99),
            "failoverMaxMs": quantile(&failover, 1.0),
            "failoverBound1sMs": failover_bound(1_000),
        }),
    );
    findings.assert_clean();
    report(
        "cluster: kill -9 of the replica owning a namespace: its namespaces resume on the others",
        rounds,
        "pass",
        figures,
    );
}

/// The receipt files a replica's log says etcd refused to commit.
fn refused_receipts(logs: &[Value], since_ms: i64) -> Vec<std::path::PathBuf> {
    const MARK: &str = "anchored, but ";
    // Log stamps are RFC 3339 with three fraction digits: they compare as text.
    let since = vmsh_scheduler::clock::rfc3339(since_ms);
    let mut out = Vec::new();
    for line in logs {
        if line["time"].as_str().is_some_and(|t| t < since.as_str()) {
            continue;
        }
        let Value::Object(fields) = line else { continue };
        for text in fields.values().filter_map(Value::as_str) {
            if let Some(rest) = text.split(MARK).nth(1)
                && let Some((path, _)) = rest.split_once(" does not count: etcd refused")
            {
                out.push(path.into());
            }
        }
    }
    out
}

#[test]
fn a_replica_paused_past_its_lease_writes_nothing_for_the_namespaces_it_lost_once_it_wakes() {
    let rounds = count(1, 2);
    let victim = "r2";
    let mut fleet = Fleet::start(&NODES);
    let (mut takeover, mut outages, mut lost_total, mut refused) = (Vec::new(), Vec::new(), 0, Vec::new());
    for _ in 0..rounds {
        let lost = fleet.held_by(victim);
        let paused = fleet.pause(victim);
        poll(Duration::from_secs(20), "the paused replica's lease to expire", || {
            (!fleet.members()?.contains(victim)).then_some(())
        });
        let first = fleet.wait_anchored_elsewhere(paused, &lost, victim, Duration::from_secs(30));
        takeover.extend(outages_until(&fleet, &format!("{victim} paused"), paused, &first, &mut outages));
        let woke = fleet.resume(victim);
        let since = vmsh_scheduler::clock::rfc3339(woke);
        let said = poll(Duration::from_secs(10), "the woken replica to log what it lost", || {
            let logs = fleet.replica(victim).logs();
            logs.into_iter().find(|l| {
                l["msg"].as_str().is_some_and(|m| m.starts_with("cluster: namespaces lost"))
                    && l["time"].as_str().is_some_and(|t| t >= since.as_str())
            })
        });
        assert_eq!(said["count"], json!(lost.len()), "it names every namespace it lost: {said}");
        assert_eq!(said["level"], "warn", "{said}");
        // It joins again and is handed its share back.
        fleet.wait_placed(&NODES, Duration::from_secs(30));
        let expected = lost.iter().map(|ns| (ns.clone(), victim.to_string())).collect();
        let back = fleet.wait_anchored_by(woke, &expected, Duration::from_secs(30));
        outages_until(&fleet, &format!("{victim} back"), woke, &back, &mut outages);
        refused.extend(refused_receipts(&fleet.replica(victim).logs(), woke));
        lost_total += lost.len();
    }
    let fenced = fleet.replica(victim).metrics();
    let fenced: f64 = ["state", "journal", "receipt"]
        .iter()
        .filter_map(|what| metric(&fenced, "vmsh_cluster_fenced_writes_total", &[("what", what)]))
        .sum();
    let findings = fleet.finish(&outages);
    // Between the revision that expired its lease and the one it joined again at, it wrote
    // no state and moved no journal head.
    let changes = findings.history.member_changes(victim);
    let mut after_expiry = 0;
    for pair in changes.windows(2) {
        if let [(expired, true), (rejoined, false)] = pair {
            after_expiry += findings.history.writes_by(victim, *expired, *rejoined);
        }
    }
    assert_eq!(after_expiry, 0, "{victim} wrote to etcd between its lease's expiry and its return");
    for path in &refused {
        let digest = vmsh_scheduler::model::digest::sha256_hex(&std::fs::read(path).unwrap_or_default());
        assert!(!findings.recorded_digests.contains(&digest), "{} was refused, yet recorded", path.display());
    }
    let figures = flat(
        findings.figures(),
        json!({
            "pauses": rounds,
            "namespacesLost": lost_total,
            "takeoverP50Ms": quantile(&takeover, 0.5),
            "takeoverP99Ms": quantile(&takeover, 0.99),
            "writesAfterExpiry": after_expiry,
            "receiptsRefusedAfterWaking": refused.len(),
            "fencedWritesCounted": fenced,
        }),
    );
    findings.assert_clean();
    report(
        "cluster: SIGSTOP past the lease, then SIGCONT: the paused replica writes nothing it lost",
        rounds,
        "pass",
        figures,
    );
}

#[test]
fn losing_one_etcd_member_interrupts_no_namespace() {
    let rounds = count(1, 3);
    let mut fleet = Fleet::start(&NODES);
    let mut not_ready = 0;
    for _ in 0..rounds {
        // A follower, the first endpoint the replicas were given if it is one: they talk to
        // it, and must move to another member. (The leader's loss costs an election besides,
        // during which no write is taken: see the quorum test for what stopping costs.)
        let member = if fleet.etcd_leader() == 0 { 1 } else { 0 };
        let killed = now_ms();
        fleet.etcd.kill(member);
        // Watched for two lease TTLs: every replica stays ready, and keeps anchoring.
        let until = killed + 2 * TTL_S as i64 * 1000;
        poll(Duration::from_secs(30), "two lease TTLs to pass", || {
            for node in NODES {
                if fleet.status(node, "/readyz") != 200 {
                    not_ready += 1;
                }
            }
            (now_ms() >= until).then_some(())
        });
        fleet.wait_anchored_after(until, &fleet.all(), Duration::from_secs(30));
        fleet.etcd.restart(member);
        fleet.etcd.wait_serving();
    }
    let findings = fleet.finish(&[]);
    let figures = flat(findings.figures(), json!({"membersKilled": rounds, "notReadyAnswers": not_ready}));
    assert_eq!(not_ready, 0, "a replica answered /readyz with an error while one etcd member was down");
    findings.assert_clean();
    report("cluster: one etcd member killed: no interruption", rounds, "pass", figures);
}

#[test]
fn without_etcd_quorum_anchoring_stops_within_the_ttl_and_resumes_without_duplicates_when_quorum_returns() {
    let rounds = count(1, 2);
    let mut fleet = Fleet::start(&NODES);
    let (mut stopped, mut resumed, mut outages, mut appended) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        let lost = now_ms();
        fleet.etcd.kill(1);
        fleet.etcd.kill(2);
        // Within the TTL every replica stops starting anchors: not ready, and /health says why.
        let mut when: BTreeMap<&str, i64> = BTreeMap::new();
        poll(Duration::from_secs(TTL_S + 5), "every /readyz to answer 503", || {
            for node in NODES {
                if !when.contains_key(node) && fleet.status(node, "/readyz") == 503 {
                    when.insert(node, now_ms());
                }
            }
            (when.len() == NODES.len()).then_some(())
        });
        for (node, at) in &when {
            stopped.push(at - lost);
            let health = fleet.replica(node).health();
            let cluster = health.cluster.clone().unwrap_or_else(|| panic!("{node}'s /health has no cluster: {health}"));
            assert!(!cluster.lease_valid, "{node}: {cluster:?}");
            assert!(cluster.error.as_deref().is_some_and(|e| !e.is_empty()), "{node} does not say why: {cluster:?}");
        }
        // Seen within one look (100 ms) and one request of it.
        let worst = stopped.iter().copied().max().unwrap_or(0);
        assert!(worst <= TTL_S as i64 * 1000 + 250, "a replica was still ready {worst} ms after quorum was lost");
        // Nothing is appended past the TTL, however long quorum stays away (here: until a
        // lease that could not be renewed would have expired, and a second more).
        let quiet = lost + TTL_S as i64 * 1000;
        poll(Duration::from_secs(TTL_S + 10), "a lease TTL to pass without quorum", || {
            (now_ms() > quiet + 1_000).then_some(())
        });
        appended += fleet.lines_appended_after(quiet);
        fleet.etcd.restart(1);
        fleet.etcd.restart(2);
        fleet.etcd.wait_serving();
        let back = now_ms();
        let first = fleet.wait_anchored_after(back, &fleet.all(), Duration::from_secs(60));
        // A member lease may be found expired at the first renewal after quorum returns
        // (etcd may revoke it as it comes back): its replica joins again and takes its
        // namespaces back at its next round.
        let settled = back + TTL_S as i64 * 1000 + ROUND_MS + SLACK_MS;
        for (ns, anchor) in &first {
            outages.push(outage("quorum lost", ns, lost - fleet.periods[ns], anchor.entry.time_ms.max(settled)));
            resumed.push(anchor.entry.time_ms - back);
        }
        wait_ready(&fleet, &NODES, 200, Duration::from_secs(30));
    }
    let findings = fleet.finish(&outages);
    let figures = flat(
        findings.figures(),
        json!({
            "outages": rounds,
            "notReadyAfterMsMax": quantile(&stopped, 1.0),
            "linesAppendedWithoutQuorum": appended,
            "resumeP50Ms": quantile(&resumed, 0.5),
            "resumeP99Ms": quantile(&resumed, 0.99),
        }),
    );
    assert_eq!(appended, 0, "journal lines were appended more than a TTL after quorum was lost");
    findings.assert_clean();
    report(
        "cluster: two etcd members killed: anchoring stops within the TTL, resumes when quorum returns",
        rounds,
        "pass",
        figures,
    );
}

#[test]
fn scaling_from_three_replicas_to_two_and_then_to_four_moves_namespaces_without_losing_or_repeating_an_anchor() {
    let mut fleet = Fleet::start(&NODES);
    let mut outages = Vec::new();
    // Down to two: the one leaving lets go as it stops.
    let (moved, drain) = stop_and_move(&mut fleet, "r2", "scaled to 2", &mut outages);
    let two = ["r0", "r1"];
    fleet.wait_placed(&two, Duration::from_secs(30));
    // Up to four: the newcomers take their share as the others hand it over.
    let four = ["r0", "r1", "r3", "r4"];
    let (before, after) = (fleet.placement(&two), fleet.placement(&four));
    let moving: BTreeMap<String, String> =
        after.into_iter().filter(|(ns, owner)| before.get(ns) != Some(owner)).collect();
    let joined = now_ms();
    fleet.start_replica("r3");
    fleet.start_replica("r4");
    fleet.wait_placed(&four, Duration::from_secs(30));
    let handed = fleet.wait_anchored_by(joined, &moving, Duration::from_secs(30));
    let handover = outages_until(&fleet, "scaled to 4", joined, &handed, &mut outages);
    let findings = fleet.finish(&outages);
    let figures = flat(
        findings.figures(),
        json!({
            "movedOnStop": moved.len(),
            "stopMs": drain,
            "moveP50Ms": quantile(&moved, 0.5),
            "moveP99Ms": quantile(&moved, 0.99),
            "movedOnJoin": handover.len(),
            "handOverP50Ms": quantile(&handover, 0.5),
            "handOverP99Ms": quantile(&handover, 0.99),
        }),
    );
    findings.assert_clean();
    report("cluster: scale from 3 replicas to 2, then to 4", 1, "pass", figures);
}

#[test]
fn a_rolling_restart_of_every_replica_repeats_no_anchor_and_loses_no_period_outside_its_hand_overs() {
    let rounds = count(1, 2);
    let mut fleet = Fleet::start(&NODES);
    let (mut away, mut back, mut stops, mut outages) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for node in NODES {
            let share = fleet.held_by(node);
            let (moved, drain) = stop_and_move(&mut fleet, node, &format!("{node} stopped"), &mut outages);
            away.extend(moved);
            stops.push(drain);
            let started = now_ms();
            fleet.start_replica(node);
            wait_ready(&fleet, &[node], 200, Duration::from_secs(30));
            fleet.wait_placed(&NODES, Duration::from_secs(30));
            let expected = share.iter().map(|ns| (ns.clone(), node.to_string())).collect();
            let first = fleet.wait_anchored_by(started, &expected, Duration::from_secs(30));
            back.extend(outages_until(&fleet, &format!("{node} restarted"), started, &first, &mut outages));
        }
    }
    let findings = fleet.finish(&outages);
    let figures = flat(
        findings.figures(),
        json!({
            "restarts": rounds * NODES.len(),
            "stopMsMax": quantile(&stops, 1.0),
            "moveP50Ms": quantile(&away, 0.5),
            "moveP99Ms": quantile(&away, 0.99),
            "handBackP50Ms": quantile(&back, 0.5),
            "handBackP99Ms": quantile(&back, 0.99),
        }),
    );
    findings.assert_clean();
    report("cluster: a rolling restart of every replica", rounds, "pass", figures);
}
