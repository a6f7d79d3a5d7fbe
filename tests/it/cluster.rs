//! Cluster mode's building blocks against a real three-member etcd cluster on loopback: the
//! client's failover between members, its behaviour without quorum, and the fenced claims
//! that give each namespace one owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmsh_scheduler::cluster::claim::{self, Claimed, Keys};
use vmsh_scheduler::cluster::etcd::{Etcd, EtcdError, EtcdOptions, EtcdTls};
use vmsh_scheduler::cluster::{member, ownership};
use vmsh_scheduler::config::vars::Secret;
use vmsh_scheduler::model::CadenceKind;
use vmsh_scheduler::storage::state::backend::{Change, Namespaces, StateBackend, StoreError};
use vmsh_scheduler::storage::state::etcd::EtcdBackend;
use vmsh_scheduler::storage::state::{CadenceState, Origin, StateFile};

use crate::support::etcd::{EtcdCluster, post};
use crate::support::wait_for;

const TIMEOUT: Duration = Duration::from_secs(2);

fn client(endpoints: Vec<String>) -> Etcd {
    Etcd::new(EtcdOptions { endpoints, tls: EtcdTls::default(), auth: None, request_timeout: TIMEOUT })
        .expect("a client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn the_client_reads_and_writes_through_any_live_member_and_skips_a_dead_one() {
    let mut cluster = EtcdCluster::start(3);
    let etcd = client(cluster.endpoints());
    let rt = runtime();
    rt.block_on(etcd.put(b"/t/a", b"1", 0)).expect("put");
    cluster.kill(0);
    // The first endpoint is dead: the client moves on, and keeps to the one that answered.
    let (found, _) = rt.block_on(etcd.get(b"/t/a")).expect("get through another member");
    assert_eq!(found.map(|kv| kv.value), Some(b"1".to_vec()));
    rt.block_on(etcd.put(b"/t/b", b"2", 0)).expect("put through another member");
    let (all, _) = rt.block_on(etcd.get_prefix(b"/t/")).expect("range");
    assert_eq!(all.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(), [b"/t/a".as_slice(), b"/t/b"]);
    // Only the dead member: unavailable, naming it by host only.
    let alone = client(vec![cluster.endpoint(0)]);
    let e = rt.block_on(alone.get(b"/t/a")).expect_err("no member answers");
    assert!(matches!(&e, EtcdError::Unavailable(why) if why.contains("127.0.0.1")), "{e}");
}

#[test]
fn without_quorum_every_call_fails_as_unavailable_and_succeeds_again_when_quorum_returns() {
    let mut cluster = EtcdCluster::start(3);
    let etcd = client(cluster.endpoints());
    let rt = runtime();
    rt.block_on(etcd.put(b"/q/k", b"before", 0)).expect("put");
    cluster.kill(1);
    cluster.kill(2);
    let t0 = Instant::now();
    let e = rt.block_on(etcd.put(b"/q/k", b"during", 0)).expect_err("no quorum");
    assert!(matches!(e, EtcdError::Unavailable(_)), "{e}");
    // Each member gets one time limit at most: the caller learns within a bounded time.
    assert!(t0.elapsed() < TIMEOUT * 3 + Duration::from_secs(2), "took {:?}", t0.elapsed());
    let e = rt.block_on(etcd.get(b"/q/k")).expect_err("a linearizable read needs quorum too");
    assert!(matches!(e, EtcdError::Unavailable(_)), "{e}");
    cluster.restart(1);
    let revision = wait_for(Duration::from_secs(30), "a write once quorum is back", || {
        rt.block_on(etcd.put(b"/q/k", b"after", 0)).ok()
    });
    assert!(revision > 0);
    let (found, _) = rt.block_on(etcd.get(b"/q/k")).expect("get");
    assert_eq!(found.map(|kv| kv.value), Some(b"after".to_vec()), "the write without quorum never happened");
}

#[test]
fn a_claim_is_exclusive_and_moves_only_after_its_owner_lets_go_or_its_lease_expires() {
    let cluster = EtcdCluster::start(3);
    let etcd = client(cluster.endpoints());
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let (a, _) = rt.block_on(etcd.grant(2)).expect("lease a");
    let (b, _) = rt.block_on(etcd.grant(30)).expect("lease b");
    let Claimed::Ours(fa) = rt.block_on(claim::claim(&etcd, &keys, "dao:x", "node-a", a)).expect("claim") else {
        panic!("the first claim wins")
    };
    assert_eq!(
        rt.block_on(claim::claim(&etcd, &keys, "dao:x", "node-b", b)).expect("claim"),
        Claimed::Held("node-a".into())
    );
    assert!(
        matches!(rt.block_on(claim::claim(&etcd, &keys, "dao:x", "node-a", a)).expect("claim"), Claimed::Ours(_)),
        "claiming again is idempotent"
    );
    // Let go: the other takes it.
    assert!(rt.block_on(claim::release(&etcd, &fa)).expect("release"));
    let Claimed::Ours(fb) = rt.block_on(claim::claim(&etcd, &keys, "dao:x", "node-b", b)).expect("claim") else {
        panic!("free after release")
    };
    // node-a cannot release what it no longer holds.
    assert!(!rt.block_on(claim::release(&etcd, &fa)).expect("release"));
    assert!(rt.block_on(claim::release(&etcd, &fb)).expect("release"));
    // Lease expiry: node-a claims, then stops renewing its lease (a crash, a pause).
    assert!(matches!(rt.block_on(claim::claim(&etcd, &keys, "dao:y", "node-a", a)).expect("claim"), Claimed::Ours(_)));
    assert_eq!(
        rt.block_on(claim::claim(&etcd, &keys, "dao:y", "node-b", b)).expect("claim"),
        Claimed::Held("node-a".into())
    );
    wait_for(Duration::from_secs(15), "node-a's lease to expire and its claim with it", || {
        matches!(rt.block_on(claim::claim(&etcd, &keys, "dao:y", "node-b", b)), Ok(Claimed::Ours(_))).then_some(())
    });
    assert_eq!(rt.block_on(etcd.keep_alive(a)), Err(EtcdError::LeaseExpired(a)));
}

#[test]
fn a_replica_paused_past_its_lease_cannot_write_once_it_wakes() {
    let cluster = EtcdCluster::start(3);
    let etcd = client(cluster.endpoints());
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let (a, _) = rt.block_on(etcd.grant(2)).expect("lease a");
    let Claimed::Ours(fa) = rt.block_on(claim::claim(&etcd, &keys, "dao:z", "node-a", a)).expect("claim") else {
        panic!("claimed")
    };
    let state = keys.state("dao:z");
    assert!(rt.block_on(claim::fenced_put(&etcd, &fa, &state, b"a-1")).expect("write"), "the owner writes");
    // node-a is paused past its TTL: its lease ends and node-b takes the namespace.
    let (b, _) = rt.block_on(etcd.grant(30)).expect("lease b");
    let fb = wait_for(Duration::from_secs(15), "node-b to take the namespace", || {
        match rt.block_on(claim::claim(&etcd, &keys, "dao:z", "node-b", b)) {
            Ok(Claimed::Ours(f)) => Some(f),
            _ => None,
        }
    });
    assert!(rt.block_on(claim::fenced_put(&etcd, &fb, &state, b"b-1")).expect("write"));
    // node-a wakes, still believing it owns dao:z: every write is refused.
    assert!(!rt.block_on(claim::fenced_put(&etcd, &fa, &state, b"a-2")).expect("answered"), "refused");
    let (found, _) = rt.block_on(etcd.get(&state)).expect("get");
    assert_eq!(found.map(|kv| kv.value), Some(b"b-1".to_vec()));
    assert_eq!(rt.block_on(etcd.keep_alive(a)), Err(EtcdError::LeaseExpired(a)), "and it learns why");
}

#[test]
fn with_authentication_on_the_client_logs_in_and_a_wrong_password_is_refused() {
    let cluster = EtcdCluster::start(1);
    let port: u16 = cluster.endpoint(0).rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    // root, with the root role, then authentication on (the gateway's own API).
    let secret = "s3cret-pw";
    for (path, body) in [
        ("/v3/auth/user/add", format!(r#"{{"name": "root", "password": "{secret}"}}"#)),
        ("/v3/auth/role/add", r#"{"name": "root"}"#.to_string()),
        ("/v3/auth/user/grant", r#"{"user": "root", "role": "root"}"#.to_string()),
        ("/v3/auth/enable", "{}".to_string()),
    ] {
        let (status, answer) = post(port, path, &body).expect("etcd answers");
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let rt = runtime();
    let login = |password: &str| {
        Etcd::new(EtcdOptions {
            endpoints: cluster.endpoints(),
            tls: EtcdTls::default(),
            auth: Some(("root".into(), Secret::new(password))),
            request_timeout: TIMEOUT,
        })
        .expect("client")
    };
    let etcd = login(secret);
    rt.block_on(etcd.put(b"/auth/k", b"v", 0)).expect("an authenticated write");
    let (found, _) = rt.block_on(etcd.get(b"/auth/k")).expect("an authenticated read");
    assert_eq!(found.map(|kv| kv.value), Some(b"v".to_vec()));
    let e = rt.block_on(login("wrong").get(b"/auth/k")).expect_err("refused");
    assert!(matches!(&e, EtcdError::Refused { what: "authenticate", .. }), "{e}");
    assert!(!e.to_string().contains("wrong"), "the password is never repeated: {e}");
    let e = rt.block_on(client(cluster.endpoints()).get(b"/auth/k")).expect_err("no credentials");
    assert!(matches!(e, EtcdError::Refused { .. }), "{e}");
}

/// One replica's round: read the members and claims, then claim and let go as its plan says.
fn round(
    rt: &tokio::runtime::Runtime,
    etcd: &Etcd,
    keys: &Keys,
    node: &str,
    lease: i64,
    namespaces: &BTreeSet<String>,
) {
    let (members, claims) = rt.block_on(member::view(etcd, keys)).expect("view");
    let plan = member::plan(node, namespaces, &members, &claims);
    for ns in &plan.release {
        let fence = claim::Fence { key: keys.owner(ns), lease, node: node.to_string() };
        rt.block_on(claim::release(etcd, &fence)).expect("release");
    }
    for ns in &plan.claim {
        rt.block_on(claim::claim(etcd, keys, ns, node, lease)).expect("claim");
    }
}

fn claims(rt: &tokio::runtime::Runtime, etcd: &Etcd, keys: &Keys) -> BTreeMap<String, String> {
    rt.block_on(member::view(etcd, keys)).expect("view").1
}

/// Where rendezvous hashing puts every namespace among `members`.
fn expected(namespaces: &BTreeSet<String>, members: &[&str]) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .map(|ns| (ns.clone(), ownership::owner(ns, members.iter().copied()).expect("a member").to_string()))
        .collect()
}

#[test]
fn replicas_share_the_namespaces_and_a_replica_that_leaves_hands_over_only_its_own() {
    let cluster = EtcdCluster::start(3);
    let etcd = client(cluster.endpoints());
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let namespaces: BTreeSet<String> = (0..60).map(|i| format!("dao:ns-{i:02}")).collect();
    let registration = |node: &str| member::Registration { node: node.into(), version: "test".into(), joined_ms: 0 };
    let mut leases = BTreeMap::new();
    for (node, ttl) in [("a", 30), ("b", 30), ("c", 2)] {
        let (lease, _) = rt.block_on(member::join(&etcd, &keys, &registration(node), ttl)).expect("join");
        leases.insert(node, lease);
    }
    let run = |nodes: &[&str], leases: &BTreeMap<&str, i64>| {
        for node in nodes {
            round(&rt, &etcd, &keys, node, leases[node], &namespaces);
        }
    };
    run(&["a", "b", "c"], &leases);
    let three = expected(&namespaces, &["a", "b", "c"]);
    assert_eq!(claims(&rt, &etcd, &keys), three, "one round places every namespace on its owner");
    // c stops renewing its lease (killed): once it expires, a and b take c's namespaces.
    wait_for(Duration::from_secs(20), "c's namespaces taken over", || {
        run(&["a", "b"], &leases);
        (claims(&rt, &etcd, &keys) == expected(&namespaces, &["a", "b"])).then_some(())
    });
    for (ns, holder) in &three {
        if holder != "c" {
            assert_eq!(claims(&rt, &etcd, &keys)[ns], *holder, "{ns} moved though its owner stayed");
        }
    }
    // d joins: a namespace moves to it only after its holder let it go.
    let (d, _) = rt.block_on(member::join(&etcd, &keys, &registration("d"), 30)).expect("join");
    leases.insert("d", d);
    run(&["d"], &leases);
    let before = claims(&rt, &etcd, &keys);
    assert!(before.values().all(|h| h != "d"), "d claims nothing still held by a or b");
    run(&["a", "b"], &leases);
    run(&["d"], &leases);
    assert_eq!(claims(&rt, &etcd, &keys), expected(&namespaces, &["a", "b", "d"]));
}

fn change(ns: &str, backoff: u32) -> Change {
    Change {
        namespace: ns.into(),
        cadence: CadenceKind::Fast,
        state: std::sync::Arc::new(CadenceState { backoff, ..CadenceState::default() }),
    }
}

fn backoff_of(loaded: &StateFile, ns: &str) -> Option<u32> {
    loaded.namespaces.get(ns)?.cadences.get(&CadenceKind::Fast).map(|c| c.backoff)
}

fn backend(etcd: &Arc<Etcd>, keys: &Keys, node: &str, lease: i64) -> EtcdBackend {
    EtcdBackend::new(Arc::clone(etcd), keys.clone(), node, lease, format!("etcd {node}")).expect("backend")
}

#[test]
fn the_state_in_etcd_reads_back_every_commit_whole_across_folds_and_restarts() {
    let cluster = EtcdCluster::start(3);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let registration = member::Registration { node: "a".into(), version: "test".into(), joined_ms: 0 };
    let (lease, _) = rt.block_on(member::join(&etcd, &keys, &registration, 30)).expect("join");
    let mut a = backend(&etcd, &keys, "a", lease);
    assert_eq!(a.load().expect("load").origin, Origin::Fresh);
    a.commit(&[change("x", 1), change("y", 1)]).expect("commit");
    a.commit(&[change("x", 2)]).expect("commit");
    let loaded = backend(&etcd, &keys, "a", lease).load().expect("load").state;
    assert_eq!((backoff_of(&loaded, "x"), backoff_of(&loaded, "y")), (Some(2), Some(1)), "the later change wins");
    // A fold writes the snapshots and deletes the log it folded.
    let view: Namespaces = loaded.clone().into_shared(|_| None);
    a.close(&view).expect("fold");
    let (log, _) = rt.block_on(etcd.get_prefix(&keys.log_dir("a"))).expect("range");
    assert!(log.is_empty(), "the folded log is gone");
    a.commit(&[change("x", 3)]).expect("commit after a fold");
    // A restarted replica numbers its log after what it finds, and loses nothing.
    let mut again = backend(&etcd, &keys, "a", lease);
    let loaded = again.load().expect("load").state;
    assert_eq!((backoff_of(&loaded, "x"), backoff_of(&loaded, "y")), (Some(3), Some(1)));
    // A commit is one key however many namespaces it touches: far over etcd's 128
    // operations per transaction, it is still whole.
    let many: Vec<Change> = (0..500).map(|i| change(&format!("ns{i:03}"), 7)).collect();
    again.commit(&many).expect("a commit of 500 namespaces");
    let loaded = backend(&etcd, &keys, "a", lease).load().expect("load").state;
    assert!((0..500).all(|i| backoff_of(&loaded, &format!("ns{i:03}")) == Some(7)));
}

#[test]
fn a_fold_rewrites_only_the_snapshots_of_namespaces_its_log_touched_and_loses_no_change() {
    let cluster = EtcdCluster::start(1);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let registration = member::Registration { node: "a".into(), version: "test".into(), joined_ms: 0 };
    let (lease, _) = rt.block_on(member::join(&etcd, &keys, &registration, 30)).expect("join");
    // Each backend drives its client on a runtime of its own: one client each.
    let a = backend(&Arc::new(client(cluster.endpoints())), &keys, "a", lease);
    let many: Vec<Change> = (0..300).map(|i| change(&format!("ns{i:03}"), 1)).collect();
    a.commit(&many).expect("commit");
    let read = || backend(&Arc::new(client(cluster.endpoints())), &keys, "reader", 0).load().expect("load").state;
    let view = || -> Namespaces { read().into_shared(|_| None) };
    a.compact(&view()).expect("first fold");
    let revision_of = |ns: &str| {
        let (kv, _) = rt.block_on(etcd.get(&keys.state(ns))).expect("get");
        kv.expect("a snapshot").mod_revision
    };
    let (before_touched, before_untouched) = (revision_of("ns007"), revision_of("ns100"));
    a.commit(&[change("ns007", 2)]).expect("commit");
    a.compact(&view()).expect("second fold");
    assert!(revision_of("ns007") > before_touched, "the namespace the log touched has a new snapshot");
    assert_eq!(revision_of("ns100"), before_untouched, "a namespace no commit touched keeps its snapshot");
    let (log, _) = rt.block_on(etcd.get_prefix(&keys.log_dir("a"))).expect("range");
    assert!(log.is_empty(), "the folded log is gone");
    let loaded = read();
    assert_eq!(backoff_of(&loaded, "ns007"), Some(2));
    assert!((0..300).filter(|i| *i != 7).all(|i| backoff_of(&loaded, &format!("ns{i:03}")) == Some(1)));
}

#[test]
fn a_namespace_let_go_of_keeps_every_change_however_its_old_owner_folds_its_log_after() {
    let cluster = EtcdCluster::start(1);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    // Each backend drives its client on a runtime of its own: one client each.
    let own = || Arc::new(client(cluster.endpoints()));
    let join = |node: &str| {
        let registration = member::Registration { node: node.into(), version: "test".into(), joined_ms: 0 };
        rt.block_on(member::join(&etcd, &keys, &registration, 30)).expect("join").0
    };
    let b_lease = join("b");
    let b = backend(&own(), &keys, "b", b_lease);
    b.commit(&[change("x", 5), change("y", 1)]).expect("commit");
    // b hands x over: its whole state goes with it; then b folds what it still holds.
    let x = backend(&own(), &keys, "a", 0).load().expect("load").state.namespaces.remove("x").expect("x");
    b.hand_over("x", &x).expect("hand over");
    let y: Namespaces = backend(&own(), &keys, "a", 0)
        .load()
        .expect("load")
        .state
        .namespaces
        .into_iter()
        .filter(|(k, _)| k == "y")
        .map(|(k, v)| (Arc::from(k), Arc::new(v)))
        .collect();
    b.compact(&y).expect("fold");
    let a = backend(&own(), &keys, "a", join("a"));
    let taken = a.load_namespaces(&["x".into()]).expect("load").expect("a shared store answers");
    let backoff = taken.get("x").and_then(|s| s.cadences.get(&CadenceKind::Fast)).map(|c| c.backoff);
    assert_eq!(backoff, Some(5), "x's change is in the snapshot written when it was let go of");
    // b loses its lease and joins again: what it wrote under the old one stays until the
    // namespaces' new owners have folded it in.
    b.commit(&[change("z", 9)]).expect("commit");
    rt.block_on(etcd.revoke(b_lease)).expect("b's lease expires");
    b.switch_lease(join("b"));
    b.compact(&Namespaces::new()).expect("b folds under its new lease");
    let (log, _) = rt.block_on(etcd.get_prefix(&keys.log_dir("b"))).expect("range");
    assert!(!log.is_empty(), "z's change, written under b's old lease, is not deleted");
    let loaded = backend(&own(), &keys, "c", 0).load().expect("load").state;
    assert_eq!(backoff_of(&loaded, "z"), Some(9));
}

#[test]
fn a_replica_whose_lease_expired_cannot_commit_and_the_next_owner_finds_all_it_committed() {
    let cluster = EtcdCluster::start(3);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let join = |node: &str, ttl| {
        let registration = member::Registration { node: node.into(), version: "test".into(), joined_ms: 0 };
        rt.block_on(member::join(&etcd, &keys, &registration, ttl)).expect("join").0
    };
    let a_lease = join("a", 2);
    let a = backend(&etcd, &keys, "a", a_lease);
    a.commit(&[change("x", 1)]).expect("commit while the lease lives");
    // a is paused past its lease; then it wakes and tries to write.
    wait_for(Duration::from_secs(15), "a's lease to expire", || {
        matches!(rt.block_on(etcd.get(&keys.member("a"))), Ok((None, _))).then_some(())
    });
    let e = a.commit(&[change("x", 99)]).expect_err("fenced");
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert!(e.to_string().contains("lease has expired"), "{e}");
    let mut b = backend(&etcd, &keys, "b", join("b", 30));
    let taken = b.load_namespaces(&["x".into(), "never".into()]).expect("load").expect("a shared store answers");
    let x = taken.get("x").expect("x has state");
    assert_eq!(x.cadences.get(&CadenceKind::Fast).map(|c| c.backoff), Some(1), "as a new owner loads it");
    assert!(!taken.contains_key("never"), "one never written is left out");
    let loaded = b.load().expect("load").state;
    assert_eq!(backoff_of(&loaded, "x"), Some(1), "a's last commit, never its refused one");
    b.commit(&[change("x", 2)]).expect("the new owner commits");
    assert_eq!(backoff_of(&backend(&etcd, &keys, "b", 0).load().expect("load").state, "x"), Some(2));
}

fn joined(rt: &tokio::runtime::Runtime, etcd: &Arc<Etcd>, keys: &Keys, node: &str, ttl: u64) -> member::Membership {
    let registration = member::Registration { node: node.into(), version: "test".into(), joined_ms: 0 };
    let clock: Arc<dyn vmsh_scheduler::clock::Clock> = Arc::new(vmsh_scheduler::clock::SystemClock::new());
    rt.block_on(member::Membership::join(Arc::clone(etcd), keys.clone(), registration, ttl, clock)).expect("join")
}

#[test]
fn a_paused_replica_stops_on_its_own_clock_loses_its_claims_and_rejoins_without_taking_them_back_early() {
    let cluster = EtcdCluster::start(3);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let namespaces: BTreeSet<String> = (0..30).map(|i| format!("dao:ns-{i:02}")).collect();
    let mut a = joined(&rt, &etcd, &keys, "a", 30);
    let mut b = joined(&rt, &etcd, &keys, "b", 30);
    let mut c = joined(&rt, &etcd, &keys, "c", 2);
    let mut held = BTreeMap::new();
    for (name, m) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let round = rt.block_on(m.round(&namespaces)).expect("round");
        assert_eq!(round.gained.iter().cloned().collect::<BTreeSet<_>>(), round.held);
        assert!(round.lost.is_empty() && round.to_release.is_empty());
        held.insert(name, round.held);
    }
    let all: BTreeSet<String> = held.values().flatten().cloned().collect();
    assert_eq!(all, namespaces, "together they hold every namespace");
    assert_eq!(held.values().map(BTreeSet::len).sum::<usize>(), namespaces.len(), "each once");
    // c is paused past its lease: on its own clock it stops before etcd expires it.
    assert!(c.can_start());
    wait_for(Duration::from_secs(10), "c to stop trusting its lease", || (!c.can_start()).then_some(()));
    wait_for(Duration::from_secs(15), "a and b to take c's namespaces", || {
        let (ra, rb) = (rt.block_on(a.round(&namespaces)).expect("a"), rt.block_on(b.round(&namespaces)).expect("b"));
        (ra.held.len() + rb.held.len() == namespaces.len()).then_some(())
    });
    // c wakes: it learns its claims are gone, joins again, and takes nothing still held.
    let round = rt.block_on(c.round(&namespaces)).expect("c wakes");
    assert_eq!(round.lost.iter().cloned().collect::<BTreeSet<_>>(), held["c"], "it lost what it held");
    assert!(round.gained.is_empty() && round.held.is_empty(), "{round:?}");
    assert!(c.can_start(), "a new lease");
    // The holders hand c its share back once they let go of it.
    let back = rt.block_on(a.round(&namespaces)).expect("a").to_release;
    for ns in &back {
        assert!(rt.block_on(a.release(ns)).expect("release"));
    }
    let back_b = rt.block_on(b.round(&namespaces)).expect("b").to_release;
    for ns in &back_b {
        assert!(rt.block_on(b.release(ns)).expect("release"));
    }
    let round = rt.block_on(c.round(&namespaces)).expect("c");
    assert_eq!(round.held, held["c"], "c holds its share again");
    // A replica that leaves hands over at once, without waiting for its lease.
    rt.block_on(c.leave()).expect("leave");
    let (ra, rb) = (rt.block_on(a.round(&namespaces)).expect("a"), rt.block_on(b.round(&namespaces)).expect("b"));
    assert_eq!(ra.held.len() + rb.held.len(), namespaces.len());
}

#[test]
fn a_chain_head_moves_from_the_head_read_and_only_under_its_namespaces_claim() {
    use vmsh_scheduler::cluster::ledger;
    let cluster = EtcdCluster::start(3);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let rt = runtime();
    let registration = |node: &str| member::Registration { node: node.into(), version: "test".into(), joined_ms: 0 };
    let (a, _) = rt.block_on(member::join(&etcd, &keys, &registration("a"), 2)).expect("join a");
    let Claimed::Ours(fa) = rt.block_on(claim::claim(&etcd, &keys, "dao/x", "a", a)).expect("claim") else {
        panic!("claimed")
    };
    let name = "journals/audit@a";
    let h0 = rt.block_on(ledger::head(&etcd, &keys, name)).expect("head");
    assert_eq!(h0.revision, 0, "nothing committed yet");
    let h1 = rt.block_on(ledger::advance_fenced(&etcd, &keys, &fa, name, &h0, b"1")).expect("advance");
    let h1 = h1.expect("the owner moves the head");
    // A writer that read the head before it moved must read it again.
    assert_eq!(rt.block_on(ledger::advance_fenced(&etcd, &keys, &fa, name, &h0, b"1'")).expect("advance"), None);
    assert_eq!(rt.block_on(ledger::head(&etcd, &keys, name)).expect("head"), h1);
    let member = (keys.member("a"), a);
    let h2 = rt.block_on(ledger::advance_member(&etcd, &keys, member.clone(), name, &h1, b"2")).expect("advance");
    let h2 = h2.expect("a member moves a head of no namespace under its lease");
    // a is paused past its lease: it can move no head any more.
    wait_for(Duration::from_secs(15), "a's lease to expire", || {
        matches!(rt.block_on(etcd.get(&keys.member("a"))), Ok((None, _))).then_some(())
    });
    assert_eq!(rt.block_on(ledger::advance_fenced(&etcd, &keys, &fa, name, &h2, b"3")).expect("advance"), None);
    assert_eq!(rt.block_on(ledger::advance_member(&etcd, &keys, member, name, &h2, b"3")).expect("advance"), None);
    assert_eq!(rt.block_on(ledger::head(&etcd, &keys, name)).expect("head"), h2, "nothing after the lease");
}

/// Collects what a ClusterActor tells the namespaces' runner.
#[derive(Clone, Default)]
struct Runner(Arc<std::sync::Mutex<Vec<vmsh_scheduler::cluster::actor::Ownership>>>);

impl actix::Actor for Runner {
    type Context = actix::Context<Self>;
}

impl actix::Handler<vmsh_scheduler::cluster::actor::Ownership> for Runner {
    type Result = ();
    fn handle(&mut self, msg: vmsh_scheduler::cluster::actor::Ownership, _: &mut actix::Context<Self>) {
        self.0.lock().expect("runner").push(msg);
    }
}

impl Runner {
    /// What it was told to run and still runs: gained, minus handed over and lost.
    fn running(&self) -> BTreeSet<String> {
        use vmsh_scheduler::cluster::actor::Ownership;
        let mut running = BTreeSet::new();
        for m in self.0.lock().expect("runner").iter() {
            match m {
                Ownership::Gained(ns) => running.extend(ns.iter().cloned()),
                Ownership::HandOver(ns) | Ownership::Lost(ns) => ns.iter().for_each(|n| {
                    running.remove(n);
                }),
                Ownership::ValidUntil(_) | Ownership::Rejoined(_) => {}
            }
        }
        running
    }

    fn handed_over(&self) -> Vec<String> {
        use vmsh_scheduler::cluster::actor::Ownership;
        self.0
            .lock()
            .expect("runner")
            .iter()
            .filter_map(|m| match m {
                Ownership::HandOver(ns) => Some(ns.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

async fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn cluster_actors_share_the_namespaces_hand_over_on_request_and_take_back_at_once_from_one_that_leaves() {
    use actix::Actor;
    use vmsh_scheduler::cluster::actor::{ClusterActor, Leave, Released, SetNamespaces};
    let cluster = EtcdCluster::start(3);
    let etcd = Arc::new(client(cluster.endpoints()));
    let keys = Keys::new("/vmsh-scheduler/");
    let namespaces: Arc<BTreeSet<String>> = Arc::new((0..20).map(|i| format!("dao:ns-{i:02}")).collect());
    actix_rt::System::new().block_on(async move {
        let clock: Arc<dyn vmsh_scheduler::clock::Clock> = Arc::new(vmsh_scheduler::clock::SystemClock::new());
        let start = |node: &str, ttl: u64, runner: &Runner| {
            let registration = member::Registration { node: node.into(), version: "test".into(), joined_ms: 0 };
            let (etcd, keys, clock, runner) = (Arc::clone(&etcd), keys.clone(), Arc::clone(&clock), runner.clone());
            async move {
                let m =
                    member::Membership::join(etcd, keys, registration, ttl, Arc::clone(&clock)).await.expect("join");
                let every = Duration::from_millis(300);
                ClusterActor::new(m, every, clock, runner.start().recipient()).start()
            }
        };
        let (ra, rb, rc) = (Runner::default(), Runner::default(), Runner::default());
        let a = start("a", 3, &ra).await;
        let b = start("b", 3, &rb).await;
        for actor in [&a, &b] {
            actor.do_send(SetNamespaces(Arc::clone(&namespaces)));
        }
        poll("a and b to run every namespace between them", || {
            let (x, y) = (ra.running(), rb.running());
            x.is_disjoint(&y) && x.union(&y).cloned().collect::<BTreeSet<_>>() == *namespaces
        })
        .await;
        // c joins: a and b are asked to hand over c's share, and c gains it once released.
        // c's lease outlives the test's waits: only leaving can hand its share back in time.
        let c = start("c", 60, &rc).await;
        c.do_send(SetNamespaces(Arc::clone(&namespaces)));
        let share: BTreeSet<String> =
            namespaces.iter().filter(|ns| ownership::owner(ns, ["a", "b", "c"]) == Some("c")).cloned().collect();
        poll("a and b to be asked to hand over c's share", || {
            ra.handed_over().into_iter().chain(rb.handed_over()).collect::<BTreeSet<_>>() == share
        })
        .await;
        assert!(rc.running().is_empty(), "c runs nothing before it is released");
        for ns in ra.handed_over() {
            a.do_send(Released(ns));
        }
        for ns in rb.handed_over() {
            b.do_send(Released(ns));
        }
        poll("c to run its share", || rc.running() == share).await;
        // c leaves cleanly: a and b take its share back without waiting for its lease.
        c.send(Leave).await.expect("answers").expect("left");
        poll("a and b to run every namespace again", || ra.running().len() + rb.running().len() == namespaces.len())
            .await;
    });
}

/// Runs `verify RECEIPT` with the root's environment plus `extra`; exit code and output.
fn verify_with(root: &crate::support::Root, receipt: &std::path::Path, extra: &[(&str, &str)]) -> (i32, String) {
    let mut env = crate::support::base_env(root);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let shown = receipt.display().to_string();
    let out = crate::support::command(root, &env, &["verify", &shown]).output().expect("run verify");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

#[test]
fn a_cluster_receipt_verifies_only_against_its_commits_in_etcd() {
    use crate::support::{Root, Scheduler, root_hex};
    let etcd = EtcdCluster::start(1);
    let endpoints = etcd.endpoints().join(",");
    let root = Root::new();
    root.namespaces("namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:j\", every: \"1s\"}\n");
    root.batch(Some("a"), "b1.json", "b1", &root_hex(1));
    let cluster = [("VMSH_ETCD_ENDPOINTS", endpoints.as_str())];
    let mut replica =
        Scheduler::start_with(&root, &[cluster[0], ("VMSH_NODE_ID", "r1"), ("VMSH_ETCD_LEASE_TTL_S", "3")]);
    wait_for(Duration::from_secs(30), "two receipts", || (root.receipts("a").len() >= 2).then_some(()));
    replica.signal(libc::SIGTERM);
    assert_eq!(replica.wait_exit(Duration::from_secs(30)).code(), Some(0), "{}", replica.stderr());
    let folder = root.path().join("out/anchors/a");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .expect("receipts")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (first, second) = (&files[0], &files[1]);
    let (code, said) = verify_with(&root, first, &cluster);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("committed in etcd under /vmsh-scheduler/: line 1 of receipts@r1.jsonl"), "{said}");
    assert!(said.contains("journal line 1 of j@r1.jsonl is committed in etcd"), "{said}");
    // Without the cluster's etcd a cluster receipt is not vouched for.
    let (code, said) = verify_with(&root, first, &[]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("written in cluster mode") && said.contains("VMSH_ETCD_ENDPOINTS"), "{said}");
    // A receipt a replica wrote after it lost the namespace is in no committed index line.
    let mut stray: vmsh_scheduler::model::receipt::Receipt =
        serde_json::from_slice(&std::fs::read(second).expect("read")).expect("receipt");
    stray.attempt_id = "ee".repeat(32);
    let stray_path = vmsh_scheduler::storage::receipts::receipt_path(root.path(), &stray);
    std::fs::write(&stray_path, serde_json::to_vec_pretty(&stray).expect("json")).expect("write stray");
    let (code, said) = verify_with(&root, &stray_path, &cluster);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no committed line") && said.contains("it is not a receipt"), "{said}");
    // A journal line past its file's committed head does not count, whatever the file holds.
    let etcd_client = client(etcd.endpoints());
    let keys = Keys::new("/vmsh-scheduler/");
    let lines = std::fs::read_to_string(root.path().join("out/journal/j@r1.jsonl")).expect("journal");
    let line1 = lines.lines().next().expect("a line");
    let head = serde_json::json!({"seq": 1, "hash": vmsh_scheduler::model::digest::sha256_hex(line1.as_bytes())});
    runtime()
        .block_on(etcd_client.put(&keys.chain("journals/j@r1"), head.to_string().as_bytes(), 0))
        .expect("move the head back");
    let (code, said) = verify_with(&root, second, &cluster);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("past the journal's committed head (line 1)"), "{said}");
}
