//! Cluster mode's building blocks against a real three-member etcd cluster on loopback: the
//! client's failover between members, its behaviour without quorum, and the fenced claims
//! that give each namespace one owner.

use std::time::{Duration, Instant};

use vmsh_scheduler::cluster::claim::{self, Claimed, Keys};
use vmsh_scheduler::cluster::etcd::{Etcd, EtcdError, EtcdOptions, EtcdTls};
use vmsh_scheduler::config::vars::Secret;

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
