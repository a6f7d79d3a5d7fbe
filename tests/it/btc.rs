//! The `btc:` target against the fake bitcoind ([`crate::support::fake_bitcoind`]; no
//! bitcoind can be installed on these machines): the driver called directly, then the real
//! binary end to end — confirmations, pending anchors that survive restarts and are not
//! re-sent, drops re-sent once, error classes, and receipts that verify.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use vmsh_scheduler::anchor::btc::{BtcAuth, BtcDriver, BtcTarget, DEFAULT_BUMP_AFTER, anchor_data, verify_attestation};
use vmsh_scheduler::anchor::locks::SendLocks;
use vmsh_scheduler::anchor::{BoxFuture, Driver, NoProgress, ProgressSink};
use vmsh_scheduler::clock::{ManualClock, SystemClock};
use vmsh_scheduler::config::bump::BumpAfter;
use vmsh_scheduler::config::vars::Secret;
use vmsh_scheduler::health::contract;
use vmsh_scheduler::model::digest::to_hex;
use vmsh_scheduler::model::evidence::CheckError;
use vmsh_scheduler::model::{
    AnchorError, AnchorRequest, Confirmation, ErrorClass, Pending, PendingFee, Recovery, Submitted,
};
use vmsh_scheduler::model::{CadenceKind, Target};

use crate::support::fake_bitcoind::{FakeBitcoind, Login, Options, WARMING_UP};
use crate::support::{CadenceParts, Root, Scheduler, metric, root_hex, wait_for, wait_ticking};

const LONG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Driver-level helpers
// ---------------------------------------------------------------------------------------

/// Keeps what the driver records, with how many transactions the node had accepted at that
/// moment (0 proves the record came before the send). Can be told to fail, as a full disk
/// would.
struct MemorySink<'a> {
    node: &'a FakeBitcoind,
    records: Mutex<Vec<(Value, usize)>>,
    fail: bool,
}

impl<'a> MemorySink<'a> {
    fn new(node: &'a FakeBitcoind) -> Self {
        Self { node, records: Mutex::new(Vec::new()), fail: false }
    }

    fn failing(node: &'a FakeBitcoind) -> Self {
        Self { fail: true, ..Self::new(node) }
    }

    fn records(&self) -> Vec<(Value, usize)> {
        self.records.lock().expect("sink lock").clone()
    }

    fn last(&self) -> Value {
        self.records().last().expect("something recorded").0.clone()
    }
}

impl ProgressSink for MemorySink<'_> {
    fn record<'b>(&'b self, progress: Value) -> BoxFuture<'b, Result<(), AnchorError>> {
        let sent = self.node.accepted().len();
        self.records.lock().expect("sink lock").push((progress, sent));
        let fail = self.fail;
        Box::pin(async move {
            if fail { Err(AnchorError::new(ErrorClass::Unknown, "not sent: the disk is full")) } else { Ok(()) }
        })
    }
}

fn user_password(user: &str, password: &str) -> BtcAuth {
    BtcAuth::UserPassword { user: user.into(), password: Secret::new(password) }
}

fn target(node: &FakeBitcoind) -> BtcTarget {
    BtcTarget {
        rpc_url: node.url().into(),
        chain: "regtest".into(),
        confirmations: 2,
        auth: user_password("u", "p"),
        wallet: None,
        fee_rate: None,
        max_fee_rate: None,
        bump_after: DEFAULT_BUMP_AFTER,
        poll_interval: Duration::from_millis(200),
        aggregate: None,
        concurrency: None,
    }
}

fn driver(t: &BtcTarget) -> BtcDriver {
    driver_with(t, &SendLocks::default())
}

fn driver_with(t: &BtcTarget, locks: &SendLocks) -> BtcDriver {
    BtcDriver::new("regtest", t, locks, Arc::new(SystemClock::new())).expect("driver")
}

fn request(root: u8, confirmations: Option<u32>) -> AnchorRequest {
    AnchorRequest {
        namespace: "ns".into(),
        cadence: CadenceKind::Fast,
        target: Target::parse("btc:regtest").expect("target"),
        batch_id: format!("b{root}"),
        root: [root; 32],
        attempt_id: format!("attempt-{root}"),
        confirmations,
        policy_oid: None,
        progress: None,
        membership: None,
    }
}

fn with_progress(mut req: AnchorRequest, progress: Value) -> AnchorRequest {
    req.progress = Some(progress);
    req
}

fn data_hex(root: u8) -> String {
    to_hex(&anchor_data(&[root; 32]))
}

fn pending_of(s: Submitted) -> Pending {
    match s {
        Submitted::Pending(p) => p,
        other => panic!("expected a pending anchor, got {other:?}"),
    }
}

fn txid_of(p: &Pending) -> String {
    p.data["txid"].as_str().expect("txid").to_string()
}

async fn confirm(d: &BtcDriver, req: &AnchorRequest, p: &Pending) -> Confirmation {
    d.confirm(req, p, &NoProgress).await.expect("confirm")
}

async fn anchor_error(d: &BtcDriver, sink: &MemorySink<'_>) -> AnchorError {
    match d.anchor(&request(1, None), sink).await {
        Ok(s) => panic!("expected a failure, got {s:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// The driver, called directly
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn btc_driver_records_the_signed_transaction_before_sending_and_waits_for_confirmations() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let sink = MemorySink::new(&node);
    let req = request(7, None);
    let p = pending_of(d.anchor(&req, &sink).await.expect("anchor"));
    assert_eq!((p.required, p.depth, p.poll_ms), (2, 0, 200), "{p:?}");
    assert_eq!(p.data["chain"], "regtest");
    let txid = txid_of(&p);

    // Recorded once, before the node had any transaction; what was recorded was sent.
    let records = sink.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0].0["txid"].as_str(), records[0].1), (Some(txid.as_str()), 0));
    let accepted = node.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!((accepted[0].txid.as_str(), accepted[0].data.as_deref()), (txid.as_str(), Some(data_hex(7).as_str())));
    let raw = node.rpc("getrawtransaction", json!([txid])).expect("in the mempool");
    assert_eq!(raw, records[0].0["hex"]);

    assert_eq!(confirm(&d, &req, &p).await, Confirmation::Waiting(Pending { depth: 0, ..p.clone() }));
    node.generate(1);
    assert_eq!(confirm(&d, &req, &p).await, Confirmation::Waiting(Pending { depth: 1, ..p.clone() }));
    node.generate(1);
    let Confirmation::Confirmed(att) = confirm(&d, &req, &p).await else { panic!("not confirmed at depth 2") };
    let height = node.height_of(&txid).expect("mined");
    let block_hash = node.block_hash(height).expect("block");
    let header = node.rpc("getblockheader", json!([block_hash])).expect("header");
    assert_eq!(
        att.data,
        json!({
            "chain": "regtest", "txid": txid, "blockHash": block_hash, "height": height,
            "blockTime": header["time"], "data": data_hex(7), "confirmations": 2,
        })
    );
    assert_eq!(att.anchored_at, header["time"].as_i64().map(|t| t * 1000));

    let auth = user_password("u", "p");
    let lines = verify_attestation(&node.url(), Some(&auth), &att.data, &[7; 32]).await.expect("verifies");
    assert!(lines.len() >= 5, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("OP_RETURN")), "{lines:#?}");
}

#[tokio::test]
async fn btc_verification_fails_for_a_tampered_or_reorganised_attestation() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let req = request(3, Some(1));
    let p = pending_of(d.anchor(&req, &MemorySink::new(&node)).await.expect("anchor"));
    node.generate(1);
    let Confirmation::Confirmed(att) = confirm(&d, &req, &p).await else { panic!("confirmed at depth 1") };
    let auth = user_password("u", "p");
    let verify = |a: Value, root: [u8; 32]| {
        let url = node.url();
        let auth = auth.clone();
        async move { verify_attestation(&url, Some(&auth), &a, &root).await }
    };
    verify(att.data.clone(), [3; 32]).await.expect("the real one verifies");

    let tamper = |key: &str, value: Value| {
        let mut a = att.data.clone();
        a[key] = value;
        a
    };
    let other_block = node.block_hash(node.height() - 1).expect("block");
    let cases = [
        (att.data.clone(), [4; 32], "root"),
        (tamper("data", json!(data_hex(4))), [3; 32], "data"),
        (tamper("height", json!(att.data["height"].as_u64().expect("height") + 1)), [3; 32], "height"),
        (tamper("blockTime", json!(1)), [3; 32], "time"),
        (tamper("blockHash", json!(other_block)), [3; 32], "height"),
        (tamper("txid", json!("ab".repeat(32))), [3; 32], "not in block"),
        (tamper("chain", json!("main")), [3; 32], "chain"),
    ];
    for (a, root, hint) in cases {
        let e = verify(a.clone(), root).await.expect_err(hint);
        assert!(matches!(&e, CheckError::Mismatch(r) if r.contains(hint)), "{hint}: {e:?}");
    }
    let e = verify_attestation(&node.url(), None, &att.data, &[3; 32]).await.expect_err("no login");
    // Refused credentials check nothing: the receipt is unverifiable here, not contradicted.
    assert!(matches!(&e, CheckError::Unreachable(r) if r.contains("401")), "{e:?}");
    // `verify --rpc http://user:password@host/`: the login comes from the URL, never shown.
    let with_login = node.url().replace("http://", "http://u:p@");
    verify_attestation(&with_login, None, &att.data, &[3; 32]).await.expect("login from the URL");
    let wrong = node.url().replace("http://", "http://u:hunter2@");
    let e = verify_attestation(&wrong, Some(&auth), &att.data, &[3; 32]).await.expect_err("the URL's login wins");
    assert!(matches!(&e, CheckError::Unreachable(r) if r.contains("401") && !r.contains("hunter2")), "{e:?}");

    // Reorganised out: the block is no longer in the active chain.
    node.reorg(1);
    let e = verify(att.data.clone(), [3; 32]).await.expect_err("reorganised");
    assert!(matches!(&e, CheckError::Mismatch(r) if r.contains("not in the node's active chain")), "{e:?}");
}

#[tokio::test]
async fn btc_driver_with_zero_confirmations_is_final_once_sent() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let Submitted::Anchored(att) = d.anchor(&request(2, Some(0)), &MemorySink::new(&node)).await.expect("anchor")
    else {
        panic!("not final at once")
    };
    assert_eq!(att.anchored_at, None);
    assert_eq!(att.data["confirmations"], 0);
    assert_eq!(att.data["data"], data_hex(2));
    assert!(att.data.get("blockHash").is_none(), "{}", att.data);
    assert_eq!(node.mempool(), vec![att.data["txid"].as_str().expect("txid").to_string()]);

    // Its receipt names no block: it verifies while in the mempool and once mined (through
    // the wallet, as the node keeps no transaction index), and not for another root.
    let auth = user_password("u", "p");
    let lines = verify_attestation(&node.url(), Some(&auth), &att.data, &[2; 32]).await.expect("verifies");
    assert!(lines.iter().any(|l| l.contains("not yet in a block")), "{lines:#?}");
    node.generate(1);
    let lines = verify_attestation(&node.url(), Some(&auth), &att.data, &[2; 32]).await.expect("verifies");
    assert!(lines.iter().any(|l| l.contains("in block")), "{lines:#?}");
    verify_attestation(&node.url(), Some(&auth), &att.data, &[3; 32]).await.expect_err("another root");
}

#[tokio::test]
async fn btc_driver_pays_the_configured_fee_rate_through_the_named_wallet() {
    let node = FakeBitcoind::with(Options { multiwallet: true, ..Options::default() });
    let mut t = target(&node);
    t.wallet = Some("vmsh".into());
    t.fee_rate = Some(5.0);
    let p = pending_of(driver(&t).anchor(&request(1, None), &MemorySink::new(&node)).await.expect("anchor"));
    let entry = node.rpc("getmempoolentry", json!([txid_of(&p)])).expect("in the mempool");
    let fee_sat = entry["fees"]["base"].as_f64().expect("fee") * 1e8;
    let rate = fee_sat / entry["vsize"].as_f64().expect("vsize");
    assert!((5.0..5.1).contains(&rate), "paid {rate} sat/vB, configured 5");

    // With two wallets loaded, a wallet must be named, and exist.
    t.wallet = None;
    let e = anchor_error(&driver(&t), &MemorySink::new(&node)).await;
    assert_eq!(e.class, ErrorClass::Validation, "{e:?}");
    assert!(e.message.contains("-19"), "{}", e.message);
    t.wallet = Some("elsewhere".into());
    let e = anchor_error(&driver(&t), &MemorySink::new(&node)).await;
    assert!(e.class == ErrorClass::Validation && e.message.contains("-18"), "{e:?}");
}

#[tokio::test]
async fn btc_driver_failures_carry_the_documented_classes_and_no_secrets() {
    // Wrong password: HTTP 401 → auth, and the password stays out of the message.
    let node = FakeBitcoind::start();
    let mut t = target(&node);
    t.auth = user_password("u", "not-the-password-4711");
    let sink = MemorySink::new(&node);
    let e = anchor_error(&driver(&t), &sink).await;
    assert_eq!((e.class, e.refused), (ErrorClass::Auth, true), "{e:?}");
    assert!(e.message.contains("401") && !e.message.contains("4711"), "{}", e.message);

    // An empty wallet: -4 from fundrawtransaction → validation; nothing recorded or sent.
    let empty = FakeBitcoind::with(Options { coins: 0, ..Options::default() });
    let sink = MemorySink::new(&empty);
    let e = anchor_error(&driver(&target(&empty)), &sink).await;
    assert_eq!(e.class, ErrorClass::Validation, "{e:?}");
    assert!(e.message.contains("fundrawtransaction") && e.message.contains("Insufficient funds"), "{}", e.message);
    assert!(sink.records().is_empty() && empty.accepted().is_empty());

    // The mempool rejects it: -26 → validation, a refusal; it was recorded, not accepted.
    node.reject_sends(Some("min relay fee not met, 100 < 141"));
    let sink = MemorySink::new(&node);
    let e = anchor_error(&driver(&target(&node)), &sink).await;
    assert_eq!((e.class, e.refused), (ErrorClass::Validation, true), "{e:?}");
    assert!(e.message.contains("-26") && e.message.contains("min relay fee"), "{}", e.message);
    assert_eq!((sink.records().len(), node.accepted().len()), (1, 0));
    node.reject_sends(None);

    // Warming up: -28 → network, and the attempt may be resumed.
    node.set_warmup(Some(WARMING_UP));
    let e = anchor_error(&driver(&target(&node)), &MemorySink::new(&node)).await;
    assert_eq!((e.class, e.refused), (ErrorClass::Network, false), "{e:?}");
    assert!(e.message.contains("-28"), "{}", e.message);
    node.set_warmup(None);

    // Down: connection refused → network.
    node.set_down(true);
    let e = anchor_error(&driver(&target(&node)), &MemorySink::new(&node)).await;
    assert_eq!(e.class, ErrorClass::Network, "{e:?}");
    assert!(e.message.contains(node.url().trim_end_matches('/')), "{}", e.message);
    node.set_down(false);

    // The node is on another chain → validation.
    let main = FakeBitcoind::with(Options { chain: "main".into(), ..Options::default() });
    let e = anchor_error(&driver(&target(&main)), &MemorySink::new(&main)).await;
    assert_eq!(e.class, ErrorClass::Validation, "{e:?}");
    assert!(e.message.contains("\"main\"") && e.message.contains("\"regtest\""), "{}", e.message);
    assert!(main.accepted().is_empty());
}

#[tokio::test]
async fn btc_driver_reads_the_cookie_file_at_each_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cookie = dir.path().join(".cookie");
    let node = FakeBitcoind::with(Options { login: Login::Cookie(cookie.clone()), ..Options::default() });
    let mut t = target(&node);
    t.auth = BtcAuth::Cookie(cookie.clone());
    let d = driver(&t);
    let req = request(1, None);
    let p = pending_of(d.anchor(&req, &MemorySink::new(&node)).await.expect("anchor"));
    // bitcoind restarted: a new cookie; the driver reads it again.
    node.rotate_cookie();
    assert!(matches!(confirm(&d, &req, &p).await, Confirmation::Waiting(_)));
    // bitcoind stopped: it deletes its cookie; that reads as the node being down.
    let secret = std::fs::read_to_string(&cookie).expect("cookie");
    std::fs::remove_file(&cookie).expect("remove cookie");
    let e = d.confirm(&req, &p, &NoProgress).await.expect_err("no cookie");
    assert_eq!(e.class, ErrorClass::Network, "{e:?}");
    assert!(e.message.contains("is bitcoind running"), "{}", e.message);
    assert!(!e.message.contains(secret.split(':').nth(1).expect("password")), "{}", e.message);
}

#[tokio::test]
async fn btc_recovery_finds_or_rebroadcasts_the_recorded_transaction_never_a_second() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    assert_eq!(d.recover(&request(1, None)).await, Recovery::NotDone, "nothing recorded: nothing sent");

    // Recorded, then the process died before sending (here: the record itself failed).
    let sink = MemorySink::failing(&node);
    let e = anchor_error(&driver(&target(&node)), &sink).await;
    assert!(e.message.contains("not sent"), "{e:?}");
    assert_eq!(node.calls("sendrawtransaction"), 0);
    let recorded = sink.last();
    let txid = recorded["txid"].as_str().expect("txid").to_string();
    let req = with_progress(request(1, None), recorded);

    // Unknown to the node: the very same bytes are sent, and then it is pending.
    let Recovery::Pending(p) = d.recover(&req).await else { panic!("pending after rebroadcast") };
    assert_eq!((txid_of(&p), p.depth), (txid.clone(), 0));
    assert_eq!(node.mempool(), vec![txid.clone()]);
    assert!(matches!(d.recover(&req).await, Recovery::Pending(_)), "in the mempool: just wait");
    node.generate(1);
    assert!(matches!(d.recover(&req).await, Recovery::Pending(p) if p.depth == 1));
    node.generate(1);
    let Recovery::Done(att) = d.recover(&req).await else { panic!("done at depth 2") };
    assert_eq!((att.data["txid"].as_str(), att.data["confirmations"].as_u64()), (Some(txid.as_str()), Some(2)));
    assert_eq!(node.accepted().len(), 1, "one transaction, ever");
    assert_eq!(node.calls("createrawtransaction"), 1);

    // The node cannot tell.
    // The node cannot tell now: ask again later, send nothing.
    node.set_down(true);
    assert!(matches!(d.recover(&req).await, Recovery::Later(e) if e.class == ErrorClass::Network));
    assert_eq!(node.calls("createrawtransaction"), 1);
    node.set_down(false);
}

#[tokio::test]
async fn btc_anchor_of_a_recorded_attempt_resends_that_transaction_unless_it_can_never_confirm() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let sink = MemorySink::failing(&node);
    anchor_error(&d, &sink).await;
    let recorded = sink.last();
    let req = with_progress(request(1, None), recorded.clone());

    // A resumed attempt whose lookup was inconclusive: the recorded bytes, not a new anchor.
    let fresh = MemorySink::new(&node);
    let p = pending_of(d.anchor(&req, &fresh).await.expect("anchor"));
    assert_eq!(p.data["txid"], recorded["txid"]);
    assert!(fresh.records().is_empty(), "nothing new to record");
    assert_eq!(node.calls("createrawtransaction"), 1);

    // Its coins are double spent: it can never confirm, so recovery says not done and a new
    // transaction (another txid) replaces it.
    node.double_spend(&txid_of(&p));
    assert_eq!(d.recover(&req).await, Recovery::NotDone);
    let again = pending_of(d.anchor(&req, &fresh).await.expect("anchor"));
    assert_ne!(again.data["txid"], recorded["txid"]);
    assert_eq!(node.live_anchors(&data_hex(1)), vec![txid_of(&again)]);
}

#[tokio::test]
async fn btc_confirm_reports_evicted_conflicted_and_unknown_transactions_as_dropped() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let sink = MemorySink::new(&node);

    // Evicted from the mempool: dropped, and abandoned so the wallet never rebroadcasts it.
    let req = request(1, None);
    let p = pending_of(d.anchor(&req, &sink).await.expect("anchor"));
    assert!(node.evict(&txid_of(&p)));
    let Confirmation::Dropped(why) = confirm(&d, &req, &p).await else { panic!("dropped") };
    assert!(why.contains("no longer in the node's mempool") && why.contains("abandoned"), "{why}");
    assert_eq!(node.calls("abandontransaction"), 1);
    // Its coins are free again: the replacement spends them, so at most one can ever confirm.
    let replacement = pending_of(d.anchor(&request(1, None), &sink).await.expect("anchor"));
    let spent = |txid: &str| {
        let tx = node.rpc("decoderawtransaction", json!([node.rpc("getrawtransaction", json!([txid])).ok()]));
        tx.ok().map(|t| t["vin"].clone())
    };
    let old_inputs = sink.records()[0].0["hex"].clone();
    let old = node.rpc("decoderawtransaction", json!([old_inputs])).expect("decode")["vin"].clone();
    assert_eq!(spent(&txid_of(&replacement)), Some(old));

    // A double spend was mined: conflicted, dropped.
    let req = request(2, None);
    let p = pending_of(d.anchor(&req, &sink).await.expect("anchor"));
    node.double_spend(&txid_of(&p));
    let Confirmation::Dropped(why) = confirm(&d, &req, &p).await else { panic!("dropped") };
    assert!(why.contains("conflicts"), "{why}");

    // Unknown to wallet and mempool: dropped if it was never mined, but a transaction that
    // had confirmations is not re-sent on a hunch (wrong wallet?): the check fails instead.
    let ghost = Pending {
        data: json!({"txid": "cd".repeat(32), "chain": "regtest"}),
        required: 2,
        depth: 0,
        poll_ms: 200,
        fee: None,
    };
    assert!(matches!(confirm(&d, &req, &ghost).await, Confirmation::Dropped(_)));
    let e = d.confirm(&req, &Pending { depth: 1, ..ghost }, &NoProgress).await.expect_err("not a drop");
    assert!(e.message.contains("right wallet"), "{e:?}");
}

#[tokio::test]
async fn btc_a_transaction_mined_between_the_wallets_and_the_mempools_answer_is_not_dropped() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let req = request(6, None);
    let p = pending_of(d.anchor(&req, &MemorySink::new(&node)).await.expect("anchor"));
    // The wallet has answered 0 confirmations; a block mines the transaction before the
    // mempool is asked, which then no longer holds it.
    node.stall(Some("getmempoolentry"));
    let mine_meanwhile = async {
        let deadline = tokio::time::Instant::now() + LONG;
        while node.held() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the mempool was never asked");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.generate(1);
        node.stall(None);
    };
    let (checked, ()) = tokio::join!(d.confirm(&req, &p, &NoProgress), mine_meanwhile);
    assert_eq!(checked.expect("confirm"), Confirmation::Waiting(Pending { depth: 1, ..p.clone() }), "mined, not gone");
    assert_eq!(node.calls("abandontransaction"), 0, "nothing to abandon");
    assert_eq!(node.accepted().len(), 1, "no second transaction");
}

#[tokio::test]
async fn btc_a_reorganised_anchor_waits_again_and_confirms_in_the_new_chain() {
    let node = FakeBitcoind::start();
    let d = driver(&target(&node));
    let req = request(5, None);
    let p = pending_of(d.anchor(&req, &MemorySink::new(&node)).await.expect("anchor"));
    let txid = txid_of(&p);
    node.generate(1);
    let first_block = node.block_hash(node.height_of(&txid).expect("mined")).expect("block");
    assert!(matches!(confirm(&d, &req, &p).await, Confirmation::Waiting(w) if w.depth == 1));

    // The block is reorganised out; the transaction is back in the mempool.
    node.reorg(1);
    assert_eq!(node.mempool(), vec![txid.clone()]);
    assert!(matches!(confirm(&d, &req, &p).await, Confirmation::Waiting(w) if w.depth == 0));
    node.generate(2);
    let Confirmation::Confirmed(att) = confirm(&d, &req, &p).await else { panic!("confirmed") };
    assert_eq!(att.data["txid"], txid.as_str());
    assert_ne!(att.data["blockHash"], first_block.as_str(), "confirmed in the new chain");
    let auth = user_password("u", "p");
    verify_attestation(&node.url(), Some(&auth), &att.data, &[5; 32]).await.expect("verifies");
    assert_eq!(node.accepted().len(), 1);
}

#[tokio::test]
async fn btc_concurrent_anchors_through_one_wallet_never_spend_the_same_coins() {
    let node = FakeBitcoind::start();
    // Two driver instances for one wallet sharing the scheduler's locks, as after a reload.
    let locks = SendLocks::default();
    let (a, b) = (driver_with(&target(&node), &locks), driver_with(&target(&node), &locks));
    let sink = MemorySink::new(&node);
    let requests: Vec<AnchorRequest> = (1..=6).map(|n| request(n, None)).collect();
    let runs =
        requests.iter().enumerate().map(|(i, r)| if i % 2 == 0 { a.anchor(r, &sink) } else { b.anchor(r, &sink) });
    let results = futures_util::future::join_all(runs).await;
    for r in results {
        pending_of(r.expect("every anchor is accepted"));
    }
    assert_eq!(node.accepted().len(), 6);
    assert_eq!(node.calls("sendrawtransaction"), 6, "no send was refused as a conflict");
}

// ---------------------------------------------------------------------------------------
// Fee bumping, the driver called directly
// ---------------------------------------------------------------------------------------

/// When the tests' manual clock starts.
const T0: i64 = 1_700_000_000_000;

/// A driver for `node` paying 2 sat/vB, bumping within `cap` sat/vB after `after`, on `clock`.
fn bumping(node: &FakeBitcoind, cap: f64, after: BumpAfter, clock: &ManualClock) -> BtcDriver {
    let mut t = target(node);
    t.fee_rate = Some(2.0);
    t.max_fee_rate = Some(cap);
    t.bump_after = after;
    BtcDriver::new("regtest", &t, &SendLocks::default(), Arc::new(clock.clone())).expect("driver")
}

/// Anchors root 4 at 2 sat/vB while blocks take only 5 sat/vB and more, and mines a block
/// past it: the transaction is stranded. Returns the request (with what was recorded) and
/// the pending anchor.
async fn stranded(node: &FakeBitcoind, d: &BtcDriver) -> (AnchorRequest, Pending) {
    node.set_mining_floor(Some(5.0));
    let sink = MemorySink::new(node);
    let req = request(4, None);
    let p = pending_of(d.anchor(&req, &sink).await.expect("anchor"));
    node.generate(1);
    assert_eq!(node.mempool(), vec![txid_of(&p)], "stranded in the mempool");
    (with_progress(req, sink.last()), p)
}

fn waiting(c: Result<Confirmation, AnchorError>) -> Pending {
    match c {
        Ok(Confirmation::Waiting(p)) => p,
        other => panic!("expected the anchor to wait, got {other:?}"),
    }
}

fn fee_of(p: &Pending) -> PendingFee {
    p.fee.clone().expect("a pending btc anchor says its fee")
}

#[tokio::test]
async fn btc_a_stranded_transaction_is_replaced_after_bump_after_and_the_receipt_names_the_replacement() {
    let node = FakeBitcoind::start();
    let clock = ManualClock::new(T0);
    let d = bumping(&node, 50.0, BumpAfter::Time(Duration::from_secs(600)), &clock);
    let (req, p) = stranded(&node, &d).await;
    let first = txid_of(&p);
    let fee = fee_of(&p);
    assert_eq!(
        (fee.unit.as_str(), fee.rate, fee.tip, fee.cap, fee.replacements, fee.at_cap, fee.sent_ms),
        ("sat/kvB", 2_000, None, Some(50_000), 0, false, Some(T0))
    );

    // Before bumpAfter it waits as it is.
    let sink = MemorySink::new(&node);
    clock.advance(599_000);
    assert_eq!(waiting(d.confirm(&req, &p, &sink).await), p);
    assert_eq!(node.calls("psbtbumpfee"), 0);

    // After it, a replacement at the old rate plus the wallet's 5 sat/vB, recorded (with the
    // txid it replaces) while the node had only the original, then sent.
    clock.advance(1_000);
    let bumped = waiting(d.confirm(&req, &p, &sink).await);
    let second = txid_of(&bumped);
    assert_ne!(second, first);
    let fee = fee_of(&bumped);
    assert_eq!((fee.rate, fee.replacements, fee.at_cap, fee.sent_ms), (7_000, 1, false, Some(T0 + 600_000)));
    let records = sink.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let (record, sent_then) = &records[0];
    assert_eq!(
        (record["txid"].as_str(), record["replaced"].clone(), *sent_then),
        (Some(second.as_str()), json!([first]), 1)
    );
    assert_eq!(node.rpc("getrawtransaction", json!([second])).expect("in the mempool"), record["hex"]);
    assert_eq!(node.mempool(), vec![second.clone()]);
    assert!(node.fee_rate(&second).expect("rate") >= 7.0);

    // Mined, reorganised out and back: followed, not replaced again, not dropped.
    let req = with_progress(req, record.clone());
    node.generate(1);
    let deeper = waiting(d.confirm(&req, &bumped, &NoProgress).await);
    assert_eq!((txid_of(&deeper), deeper.depth), (second.clone(), 1));
    node.reorg(1);
    let again = waiting(d.confirm(&req, &deeper, &NoProgress).await);
    assert_eq!((txid_of(&again), again.depth), (second.clone(), 0));
    node.generate(2);
    let Ok(Confirmation::Confirmed(att)) = d.confirm(&req, &again, &NoProgress).await else { panic!("confirmed") };
    assert_eq!(att.data["txid"], second.as_str(), "the receipt names the replacement");
    let auth = user_password("u", "p");
    verify_attestation(&node.url(), Some(&auth), &att.data, &[4; 32]).await.expect("verifies");
    let original = node.rpc("gettransaction", json!([first])).expect("the original");
    assert!(original["confirmations"].as_i64() < Some(0), "conflicted by its replacement: {original}");
    assert_eq!(node.live_anchors(&data_hex(4)), vec![second]);
    assert_eq!((node.calls("psbtbumpfee"), node.calls("abandontransaction")), (1, 0));
}

#[tokio::test]
async fn btc_bumping_stops_at_max_fee_rate_and_waits_then_lands_when_fees_drop() {
    let node = FakeBitcoind::start();
    let clock = ManualClock::new(T0);
    let d = bumping(&node, 10.0, BumpAfter::Blocks(1), &clock);
    node.set_estimate(Some(30.0));
    let (req, p) = stranded(&node, &d).await;
    node.set_mining_floor(Some(30.0));

    // The estimate (30 sat/vB) is over the cap: the replacement pays the cap.
    let sink = MemorySink::new(&node);
    let bumped = waiting(d.confirm(&req, &p, &sink).await);
    let fee = fee_of(&bumped);
    assert_eq!((fee.rate, fee.cap, fee.replacements, fee.at_cap), (10_000, Some(10_000), 1, false));
    let req = with_progress(req, sink.last());

    // Blocks pass without it; no raise fits under the cap: it waits there, and says so.
    let mut last = bumped.clone();
    for _ in 0..3 {
        node.generate(1);
        last = waiting(d.confirm(&req, &last, &sink).await);
        let fee = fee_of(&last);
        assert_eq!((txid_of(&last), fee.rate, fee.at_cap), (txid_of(&bumped), 10_000, true));
    }
    assert_eq!((node.calls("psbtbumpfee"), node.accepted().len(), sink.records().len()), (1, 2, 1));

    // Fees drop: it lands, at the cap.
    node.set_mining_floor(Some(8.0));
    node.generate(2);
    let Ok(Confirmation::Confirmed(att)) = d.confirm(&req, &last, &sink).await else { panic!("confirmed") };
    assert_eq!(att.data["txid"], txid_of(&bumped).as_str());
}

#[tokio::test]
async fn btc_a_replacement_is_recorded_before_it_is_sent_and_a_failed_record_sends_nothing() {
    let node = FakeBitcoind::start();
    let clock = ManualClock::new(T0);
    let d = bumping(&node, 50.0, BumpAfter::Blocks(1), &clock);
    let (req, p) = stranded(&node, &d).await;
    let failing = MemorySink::failing(&node);
    let e = d.confirm(&req, &p, &failing).await.expect_err("not recorded, not sent");
    assert!(e.message.contains("not sent"), "{e:?}");
    let records = failing.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1, 1, "recorded while the node had only the original");
    assert_eq!((node.accepted().len(), node.mempool()), (1, vec![txid_of(&p)]), "nothing broadcast");
}

#[tokio::test]
async fn btc_a_replacement_recorded_before_a_crash_is_sent_byte_for_byte_and_never_made_twice() {
    // The process stops between recording the replacement and sending it (here: the record
    // "fails" after it was taken). The next look at the anchor — as the pending anchor it
    // knew, or as a recovered attempt — sends the recorded bytes, and builds nothing new.
    for via_recovery in [false, true] {
        let node = FakeBitcoind::start();
        let clock = ManualClock::new(T0);
        let d = bumping(&node, 50.0, BumpAfter::Blocks(1), &clock);
        let (req, p) = stranded(&node, &d).await;
        let failing = MemorySink::failing(&node);
        d.confirm(&req, &p, &failing).await.expect_err("stopped before the send");
        let recorded = failing.last();
        let replacement = recorded["txid"].as_str().expect("txid").to_string();
        let req = with_progress(req, recorded.clone());

        let resumed = if via_recovery {
            match d.recover(&req).await {
                Recovery::Pending(r) => r,
                other => panic!("expected the replacement pending, got {other:?}"),
            }
        } else {
            waiting(d.confirm(&req, &p, &MemorySink::new(&node)).await)
        };
        assert_eq!((txid_of(&resumed), fee_of(&resumed).replacements), (replacement.clone(), 1), "{via_recovery}");
        let accepted = node.accepted();
        assert_eq!(accepted.len(), 2, "{accepted:?}");
        assert_eq!(accepted[1].txid, replacement);
        assert_eq!(node.rpc("getrawtransaction", json!([replacement])).expect("sent"), recorded["hex"]);
        // Looking again sends nothing and replaces nothing.
        waiting(d.confirm(&req, &resumed, &MemorySink::new(&node)).await);
        assert_eq!((node.calls("psbtbumpfee"), node.accepted().len()), (1, 2), "{via_recovery}");
        node.set_mining_floor(None);
        node.generate(2);
        let Ok(Confirmation::Confirmed(att)) = d.confirm(&req, &resumed, &NoProgress).await else {
            panic!("confirmed")
        };
        assert_eq!(att.data["txid"], replacement.as_str());
    }
}

#[tokio::test]
async fn btc_the_original_mined_instead_of_its_replacement_completes_the_attempt_naming_the_original() {
    let node = FakeBitcoind::start();
    let clock = ManualClock::new(T0);
    let d = bumping(&node, 50.0, BumpAfter::Blocks(1), &clock);
    let (req, p) = stranded(&node, &d).await;
    let original = txid_of(&p);
    let sink = MemorySink::new(&node);
    let bumped = waiting(d.confirm(&req, &p, &sink).await);
    let req = with_progress(req, sink.last());
    // A miner that never saw the replacement mines the original.
    node.mine_elsewhere(&original);
    let mined = waiting(d.confirm(&req, &bumped, &NoProgress).await);
    assert_eq!((txid_of(&mined), mined.depth, fee_of(&mined).replacements), (original.clone(), 1, 0));
    node.generate(1);
    let Ok(Confirmation::Confirmed(att)) = d.confirm(&req, &mined, &NoProgress).await else { panic!("confirmed") };
    assert_eq!(att.data["txid"], original.as_str(), "the receipt names the one mined");
    assert_eq!(node.live_anchors(&data_hex(4)), vec![original]);
    assert_eq!(node.calls("abandontransaction"), 0, "the replacement's conflict is no drop");
    assert_eq!(d.recover(&req).await, Recovery::Done(att), "recovery finds it too");
}

#[tokio::test]
async fn btc_a_foreign_double_spend_of_a_replaced_anchor_is_dropped() {
    let node = FakeBitcoind::start();
    let clock = ManualClock::new(T0);
    let d = bumping(&node, 50.0, BumpAfter::Blocks(1), &clock);
    let (req, p) = stranded(&node, &d).await;
    let sink = MemorySink::new(&node);
    let bumped = waiting(d.confirm(&req, &p, &sink).await);
    let req = with_progress(req, sink.last());
    node.double_spend(&txid_of(&bumped));
    let Ok(Confirmation::Dropped(why)) = d.confirm(&req, &bumped, &NoProgress).await else { panic!("dropped") };
    assert!(why.contains("conflicts"), "{why}");
    assert_eq!(d.recover(&req).await, Recovery::NotDone, "none of its transactions can ever be mined");
}

// ---------------------------------------------------------------------------------------
// End to end: the real binary
// ---------------------------------------------------------------------------------------

const NS: &str = "dao:btc";

/// A `btc:` entry of the targets file for the fake at `url`.
fn entry(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  {name}: {{rpcUrl: \"{url}\", network: regtest, rpcUser: u, rpcPassword: p, confirmations: 2, pollInterval: 200ms{extra}}}\n"
    )
}

/// A root with one namespace anchoring root 5 to `btc:regtest` (the fake) every `every`.
fn btc_root(node: &FakeBitcoind, every: &str, cadence_extra: &str) -> Root {
    let root = Root::new();
    root.anchors(&format!("btc:\n{}", entry("regtest", &node.url(), "")))
        .namespaces(&format!(
            "namespaces:\n  \"{NS}\":\n    cadence:\n      fast: {{target: \"btc:regtest\", every: \"{every}\"{cadence_extra}}}\n"
        ))
        .batch(Some(NS), "0001.json", "b5", &root_hex(5));
    root
}

/// The anchor `ns` has sent and waits on, while /health shows one.
fn pending(s: &Scheduler, ns: &str) -> Option<contract::Pending> {
    s.cadence(ns, "fast")?.pending
}

/// The pending anchor /health shows, once it shows one at `depth`.
fn wait_pending(s: &Scheduler, depth: u32) -> contract::Pending {
    wait_for(LONG, &format!("a pending anchor at depth {depth} in /health"), || {
        pending(s, NS).filter(|p| p.depth == depth)
    })
}

fn labels(ns: &str) -> [(&str, &str); 3] {
    [("namespace", ns), ("cadence", "fast"), ("target", "btc:regtest")]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn verify(node: &FakeBitcoind, attestation: &Value, root: u8) -> Result<Vec<String>, CheckError> {
    let auth = user_password("u", "p");
    runtime().block_on(verify_attestation(&node.url(), Some(&auth), attestation, &[root; 32]))
}

fn one_receipt(root: &Root) -> Value {
    wait_for(LONG, "a receipt", || root.receipts(NS).into_iter().next())
}

#[test]
fn btc_anchor_is_pending_in_health_and_metrics_until_deep_enough_then_its_receipt_verifies() {
    let node = FakeBitcoind::start();
    let root = btc_root(&node, "1h", "");
    let s = Scheduler::start(&root);
    let p = wait_pending(&s, 0);
    assert_eq!(p.required, 2);
    let txid = p.data["txid"].as_str().expect("txid in /health").to_string();
    assert_eq!(node.mempool(), vec![txid.clone()]);
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_anchor_pending", &labels(NS)), Some(1.0));
    assert_eq!(metric(&m, "vmsh_anchor_confirmations", &[("namespace", NS)]), Some(0.0));
    assert!(root.receipts(NS).is_empty(), "no receipt while pending");

    node.generate(1);
    wait_pending(&s, 1);
    assert_eq!(metric(&s.metrics(), "vmsh_anchor_confirmations", &[("namespace", NS)]), Some(1.0));
    assert!(root.receipts(NS).is_empty(), "one confirmation of two is not enough");
    node.generate(1);
    let r = one_receipt(&root);

    let att = &r["attestation"];
    let height = node.height_of(&txid).expect("mined");
    assert_eq!(att["txid"], txid.as_str());
    assert_eq!(att["blockHash"], node.block_hash(height).expect("block").as_str());
    assert_eq!(att["height"], height);
    assert_eq!(att["data"], data_hex(5));
    assert_eq!(r["timeMs"].as_i64(), att["blockTime"].as_i64().map(|t| t * 1000), "anchored at the block's time");
    assert_eq!(r["root"], format!("sha256:{}", root_hex(5)));
    verify(&node, att, 5).expect("the receipt verifies against the node");
    wait_for(LONG, "the pending gauge to drop", || {
        (metric(&s.metrics(), "vmsh_anchor_pending", &labels(NS)) == Some(0.0)).then_some(())
    });
    assert!(s.cadence(NS, "fast").expect("the cadence in /health").pending.is_none());
    assert_eq!(node.accepted().len(), 1);
}

#[test]
fn btc_pending_anchor_is_not_sent_again_when_its_cadence_comes_round() {
    let node = FakeBitcoind::start();
    // A 1 s cadence whose own `confirmations` overrides the target's 2.
    let root = btc_root(&node, "1s", ", confirmations: 3");
    let s = Scheduler::start(&root);
    let p = wait_pending(&s, 0);
    assert_eq!(p.required, 3, "the cadence's confirmations win");
    // Three periods pass while it waits.
    wait_ticking(&s, 3_000, LONG);
    assert_eq!(node.calls("sendrawtransaction"), 1, "sent once");
    assert_eq!(node.calls("createrawtransaction"), 1, "built once");
    assert!(pending(&s, NS).is_some(), "still pending");
    assert!(node.calls("gettransaction") >= 3, "looked at again meanwhile");
    node.generate(3);
    let r = one_receipt(&root);
    assert_eq!(r["attestation"]["txid"], p.data["txid"]);
    assert_eq!(r["attestation"]["confirmations"], 3);
}

/// Starts a scheduler on `root`, waits for its anchor to be pending, and returns it and the
/// txid.
fn start_pending(root: &Root) -> (Scheduler, String) {
    let s = Scheduler::start(root);
    let p = wait_pending(&s, 0);
    let txid = p.data["txid"].as_str().expect("txid").to_string();
    (s, txid)
}

/// After a restart: the anchor waits again, confirms with the first transaction, and no
/// second one was ever built.
fn resumes_without_a_second_transaction(node: &FakeBitcoind, root: &Root, txid: &str) {
    let s = Scheduler::start(root);
    s.wait_log("resuming an attempt interrupted by the last shutdown or crash");
    let p = wait_pending(&s, 1);
    assert_eq!(p.data["txid"], txid);
    node.generate(1);
    let r = one_receipt(root);
    assert_eq!(r["attestation"]["txid"], txid);
    assert_eq!(node.calls("createrawtransaction"), 1, "never a second transaction");
    assert_eq!(node.accepted().len(), 1);
    verify(node, &r["attestation"], 5).expect("verifies");
}

#[test]
fn btc_pending_anchor_survives_sigterm_and_resumes_waiting() {
    let node = FakeBitcoind::start();
    let root = btc_root(&node, "1h", "");
    let (mut s, txid) = start_pending(&root);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0), "{}", s.stderr());
    let attempt = root.state()["namespaces"][NS]["cadences"]["fast"]["attempt"].clone();
    assert_eq!(attempt["status"], "pending", "{attempt}");
    assert_eq!(attempt["pending"]["data"]["txid"], txid.as_str());
    assert_eq!(attempt["progress"]["txid"], txid.as_str());
    node.generate(1);
    resumes_without_a_second_transaction(&node, &root, &txid);
}

#[test]
fn btc_pending_anchor_survives_sigkill_and_resumes_waiting() {
    let node = FakeBitcoind::start();
    let root = btc_root(&node, "1h", "");
    let (mut s, txid) = start_pending(&root);
    s.kill9();
    node.generate(1);
    resumes_without_a_second_transaction(&node, &root, &txid);
}

#[test]
fn btc_killed_while_sending_resends_the_recorded_transaction_after_restart() {
    let node = FakeBitcoind::start();
    node.stall(Some("sendrawtransaction"));
    let root = btc_root(&node, "1h", "");
    let mut s = Scheduler::start(&root);
    wait_for(LONG, "sendrawtransaction to be in flight", || (node.held() == 1).then_some(()));
    let recorded = root.state()["namespaces"][NS]["cadences"]["fast"]["attempt"]["progress"].clone();
    let txid = recorded["txid"].as_str().expect("recorded before sending").to_string();
    s.kill9();
    wait_for(LONG, "the fake to notice the client is gone", || (node.held() == 0).then_some(()));
    node.stall(None);
    assert!(node.accepted().is_empty(), "the send never reached the node");

    let s = Scheduler::start(&root);
    let p = wait_pending(&s, 0);
    assert_eq!(p.data["txid"], txid.as_str(), "the recorded transaction, sent again");
    node.generate(2);
    let r = one_receipt(&root);
    assert_eq!(r["attestation"]["txid"], txid.as_str());
    assert_eq!(node.calls("createrawtransaction"), 1);
    assert_eq!(node.accepted().len(), 1);
}

#[test]
fn btc_dropped_transaction_is_sent_again_once_and_counted() {
    let node = FakeBitcoind::start();
    let root = btc_root(&node, "1h", "");
    let (s, first) = start_pending(&root);
    assert!(node.evict(&first));
    // The recorded transaction goes out again as it is: same txid, nothing new built, so the
    // evicted copy (perhaps still relayed elsewhere) and the re-sent one are one anchor.
    wait_for(LONG, "the re-send to be counted", || {
        (metric(&s.metrics(), "vmsh_anchors_resent_total", &labels(NS)) == Some(1.0)).then_some(())
    });
    wait_for(LONG, "the same transaction back in the mempool", || node.mempool().contains(&first).then_some(()));
    let p = wait_for(LONG, "the re-sent anchor pending in /health", || pending(&s, NS).filter(|p| p.resent == 1));
    assert_eq!(p.data["txid"], first.as_str());
    assert_eq!(node.calls("createrawtransaction"), 1, "nothing new was built");
    node.generate(2);
    let r = one_receipt(&root);
    assert_eq!(r["attestation"]["txid"], first.as_str());
    assert_eq!(node.live_anchors(&data_hex(5)), vec![first.clone()], "one anchor of the root on chain");
    verify(&node, &r["attestation"], 5).expect("verifies");
}

#[test]
fn btc_second_drop_fails_with_backoff_and_later_resumes_the_same_transaction() {
    let node = FakeBitcoind::start();
    let root = btc_root(&node, "1h", "");
    let (s, first) = start_pending(&root);
    assert!(node.evict(&first));
    wait_for(LONG, "the re-send to be counted", || {
        (metric(&s.metrics(), "vmsh_anchors_resent_total", &labels(NS)) == Some(1.0)).then_some(())
    });
    let second = wait_for(LONG, "the transaction back in the mempool", || node.mempool().first().cloned());
    assert_eq!(second, first, "the recorded transaction was sent again as it is");
    assert!(node.evict(&second));
    let error = wait_for(LONG, "the second drop to fail the anchor", || {
        s.cadence(NS, "fast").filter(|c| c.last_error.as_ref().is_some_and(|e| e.class == ErrorClass::Network))
    });
    assert!(error.error().message.contains("dropped again"), "{error}");
    assert!(error.backoff >= 1, "{error}");
    let m = s.metrics();
    let errors = [("namespace", NS), ("cadence", "fast"), ("class", "network")];
    assert!(metric(&m, "vmsh_anchor_errors_total", &errors) >= Some(1.0));
    assert_eq!(metric(&m, "vmsh_anchors_resent_total", &labels(NS)), Some(1.0), "re-sent once, not twice");

    // After the backoff the attempt resumes with the transaction it recorded last: nothing
    // new is built, nothing lost.
    wait_for(LONG, "the recorded transaction back in the mempool", || node.mempool().contains(&second).then_some(()));
    assert_eq!(node.calls("createrawtransaction"), 1, "nothing new was built");
    node.generate(2);
    let r = one_receipt(&root);
    assert_eq!(r["attestation"]["txid"], second.as_str());
    assert_eq!(node.live_anchors(&data_hex(5)), vec![second]);
}

#[test]
fn btc_each_bad_case_yields_its_error_class_and_loses_nothing() {
    let password = "wr0ng-s3cret";
    let auth = FakeBitcoind::start();
    let unfunded = FakeBitcoind::with(Options { coins: 0, ..Options::default() });
    let rejecting = FakeBitcoind::start();
    rejecting.reject_sends(Some("min relay fee not met, 100 < 141"));
    let warming = FakeBitcoind::start();
    warming.set_warmup(Some(WARMING_UP));
    let down = FakeBitcoind::start();
    down.set_down(true);
    let mainnet = FakeBitcoind::with(Options { chain: "main".into(), ..Options::default() });
    // (namespace, target entry, fake, expected class)
    let cases = [
        ("c:auth", "auth", &auth, ErrorClass::Auth),
        ("c:funds", "funds", &unfunded, ErrorClass::Validation),
        ("c:rejected", "rejected", &rejecting, ErrorClass::Validation),
        ("c:warmup", "warmup", &warming, ErrorClass::Network),
        ("c:down", "down", &down, ErrorClass::Network),
        ("c:chain", "chain", &mainnet, ErrorClass::Validation),
    ];
    let root = Root::new();
    let mut targets = String::from("btc:\n");
    let mut namespaces = String::from("namespaces:\n");
    for (ns, name, node, _) in &cases {
        let line = entry(name, &node.url(), "");
        targets.push_str(&if *name == "auth" {
            line.replace("rpcPassword: p", &format!("rpcPassword: {password}"))
        } else {
            line
        });
        namespaces
            .push_str(&format!("  \"{ns}\":\n    cadence:\n      fast: {{target: \"btc:{name}\", every: \"1h\"}}\n"));
    }
    root.anchors(&targets).namespaces(&namespaces).batch(None, "0001.json", "b5", &root_hex(5));
    let s = Scheduler::start(&root);

    for (ns, name, _, class) in &cases {
        let c = wait_for(LONG, &format!("{ns} to fail"), || s.cadence(ns, "fast").filter(|c| c.last_error.is_some()));
        assert_eq!(c.error().class, *class, "{ns}: {c}");
        assert!(c.backoff >= 1, "{ns}: {c}");
        let labels = [("namespace", *ns), ("target", &format!("btc:{name}")), ("class", class.as_str())];
        assert!(metric(&s.metrics(), "vmsh_anchor_errors_total", &labels) >= Some(1.0), "{ns}");
    }
    for (_, _, node, _) in &cases {
        assert!(node.accepted().is_empty(), "nothing was anchored by a failing case");
    }

    // The passing faults pass: each of those anchors goes through, exactly once.
    rejecting.reject_sends(None);
    warming.set_warmup(None);
    down.set_down(false);
    for (ns, node) in [("c:rejected", &rejecting), ("c:warmup", &warming), ("c:down", &down)] {
        wait_for(LONG, &format!("{ns} to be pending"), || pending(&s, ns).map(drop));
        assert_eq!(node.live_anchors(&data_hex(5)).len(), 1, "{ns}");
    }

    // Nothing leaked the password, and the state file is intact.
    let logs = serde_json::to_string(&s.logs()).expect("logs");
    for (what, text) in [
        ("/health", s.get("/health").1),
        ("/metrics", s.metrics()),
        ("logs", logs),
        ("stderr", s.stderr()),
        ("state", root.state_text()),
    ] {
        assert!(!text.contains(password), "{what} shows the RPC password");
    }
    assert!(root.state()["namespaces"].is_object());
}

/// A confirmation check cancelled at shutdown leaves the attempt *pending*: the next start
/// checks it again (confirm) rather than resuming it as an unfinished send.
#[test]
fn btc_pending_anchor_whose_check_is_cut_short_by_shutdown_stays_pending() {
    let node = FakeBitcoind::start();
    let root = btc_root(&node, "1h", "");
    let mut s = Scheduler::start_with(&root, &[("VMSH_SHUTDOWN_GRACE_S", "1")]);
    let p = wait_pending(&s, 0);
    let txid = p.data["txid"].as_str().expect("txid").to_string();
    // A confirmation check hangs at the node; shutdown cancels it after the grace period.
    node.stall(Some("gettransaction"));
    wait_for(LONG, "a confirmation check in flight", || (node.held() == 1).then_some(()));
    s.signal(libc::SIGTERM);
    s.wait_exit(LONG);
    node.stall(None);
    let attempt = root.state()["namespaces"][NS]["cadences"]["fast"]["attempt"].clone();
    assert_eq!(attempt["pending"]["data"]["txid"], txid.as_str(), "{attempt}");

    // Nothing is lost with this driver: one transaction, confirmed after the restart …
    let looked = node.calls("getmempoolentry");
    let s = Scheduler::start(&root);
    wait_pending(&s, 0);
    // … once the restarted scheduler has looked at it again (so the counter below has seen
    // whatever that first job was) …
    wait_for(LONG, "the restarted scheduler to check the anchor", || {
        (node.calls("getmempoolentry") > looked).then_some(())
    });
    let resumed_as_a_send = metric(&s.metrics(), "vmsh_anchors_attempted_total", &labels(NS));
    node.generate(2);
    assert_eq!(one_receipt(&root)["attestation"]["txid"], txid.as_str());
    assert_eq!((node.calls("createrawtransaction"), node.accepted().len()), (1, 1));

    // … and the anchor stayed pending: it was checked again, not resumed as a send.
    assert_eq!(attempt["status"], "pending", "cancelling a check does not un-send the anchor: {attempt}");
    assert_eq!(resumed_as_a_send, Some(0.0), "a check is not an attempt");
}

/// A root whose `btc:regtest` entry pays 2 sat/vB and bumps after one block within 20 sat/vB,
/// its fake only mining what pays 5 sat/vB.
fn bumping_root(node: &FakeBitcoind) -> Root {
    node.set_mining_floor(Some(5.0));
    let root = btc_root(node, "1h", "");
    root.anchors(&format!(
        "btc:\n{}",
        entry("regtest", &node.url(), ", feeRate: 2, maxFeeRate: 20, bumpAfter: 1 block")
    ));
    root
}

#[test]
fn btc_a_stranded_anchor_is_bumped_by_the_scheduler_and_its_receipt_names_the_replacement() {
    let node = FakeBitcoind::start();
    let root = bumping_root(&node);
    let (s, first) = start_pending(&root);
    node.generate(1);
    let second =
        wait_for(LONG, "the replacement in the mempool", || node.mempool().first().filter(|t| **t != first).cloned());
    let progress = root.state()["namespaces"][NS]["cadences"]["fast"]["attempt"]["progress"].clone();
    assert_eq!((progress["txid"].as_str(), progress["replaced"].clone()), (Some(second.as_str()), json!([first])));
    wait_for(LONG, "/health to wait on the replacement", || {
        pending(&s, NS).filter(|p| p.data["txid"] == second.as_str())
    });
    node.generate(2);
    let r = one_receipt(&root);
    assert_eq!(r["attestation"]["txid"], second.as_str());
    verify(&node, &r["attestation"], 5).expect("verifies");
    assert_eq!((node.calls("psbtbumpfee"), node.calls("createrawtransaction")), (1, 1));
    assert_eq!(node.live_anchors(&data_hex(5)), vec![second]);
}

#[test]
fn btc_killed_between_recording_a_replacement_and_sending_it_sends_that_one_after_restart() {
    let node = FakeBitcoind::start();
    let root = bumping_root(&node);
    let (mut s, first) = start_pending(&root);
    node.stall(Some("sendrawtransaction"));
    node.generate(1);
    wait_for(LONG, "the replacement's send to be in flight", || (node.held() == 1).then_some(()));
    let progress = root.state()["namespaces"][NS]["cadences"]["fast"]["attempt"]["progress"].clone();
    let second = progress["txid"].as_str().expect("recorded before it is sent").to_string();
    assert_eq!(progress["replaced"], json!([first]));
    s.kill9();
    wait_for(LONG, "the fake to notice the client is gone", || (node.held() == 0).then_some(()));
    node.stall(None);
    assert_eq!(node.mempool(), vec![first.clone()], "the replacement never reached the node");

    let _s = Scheduler::start(&root);
    wait_for(LONG, "the recorded replacement in the mempool", || {
        (node.mempool() == vec![second.clone()]).then_some(())
    });
    assert_eq!(node.rpc("getrawtransaction", json!([second])).expect("sent"), progress["hex"], "byte for byte");
    node.generate(2);
    let r = one_receipt(&root);
    assert_eq!(r["attestation"]["txid"], second.as_str());
    assert_eq!((node.calls("psbtbumpfee"), node.calls("createrawtransaction")), (1, 1), "never a second one");
    assert_eq!(node.live_anchors(&data_hex(5)), vec![second]);
}
