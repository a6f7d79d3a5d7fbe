//! Aggregated anchoring with the shipped binary: many namespaces, one anchor per window, each
//! receipt proving its leaf under the anchored root; and kill -9 at every point of an
//! aggregate's life, after which every member still gets exactly one receipt and no aggregate
//! is anchored twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vmsh_scheduler::anchor::local::{read_entries, verify_chain};
use vmsh_scheduler::cli::verify::{Verdict, VerifyOptions, verify_receipt};

use crate::support::fake_bitcoind::FakeBitcoind;
use crate::support::tsa_server::TestTsa;
use crate::support::{Root, Scheduler, lines, metric, receipt_files, root_hex, run_verify, wait_for};

/// A namespaces file of `n` namespaces `agg:0`, `agg:1` … anchoring fast to `target` every `every`.
fn namespaces(n: usize, target: &str, every: &str) -> (Vec<String>, String) {
    let names: Vec<String> = (0..n).map(|i| format!("agg:{i}")).collect();
    let mut yaml = String::from("namespaces:\n");
    for ns in &names {
        yaml.push_str(&format!("  {ns}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"{every}\"}}\n"));
    }
    (names, yaml)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read the receipt")).expect("a receipt is JSON")
}

/// The aggregate root a receipt's inclusion proof leads to, as `sha256:<hex>`.
fn inclusion_root(receipt: &Value) -> String {
    format!("sha256:{}", receipt["inclusion"]["root"].as_str().unwrap_or_else(|| panic!("no inclusion: {receipt}")))
}

/// Waits until every namespace has a receipt and no attempt is left in the state.
fn wait_all_anchored(root: &Root, names: &[String], limit: Duration) {
    wait_for(limit, "every namespace's receipt and its success in the state", || {
        let receipts = names.iter().all(|ns| !receipt_files(root, ns).is_empty());
        let state = root.state();
        let settled = names.iter().all(|ns| {
            let fast = &state["namespaces"][ns]["cadences"]["fast"];
            fast["lastSuccessMs"].is_i64() && fast.get("attempt").is_none()
        });
        (receipts && settled).then_some(())
    });
}

fn stop(s: &mut Scheduler) {
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}: {}", s.stderr());
}

#[test]
fn ten_namespaces_aggregated_on_a_real_tsa_send_one_time_stamp_request_and_every_receipt_verifies() {
    let tsa = TestTsa::start();
    let root = Root::new();
    let (names, yaml) = namespaces(10, "rfc3161:tsa", "1h");
    root.anchors(&format!(
        "rfc3161:\n  tsa: {{url: \"{}\", trustBundle: \"{}\", aggregate: {{window: 1s}}}}\n",
        tsa.url(),
        tsa.ca.display()
    ))
    .namespaces(&yaml)
    .batch(None, "0001.json", "b1", &root_hex(7));
    let mut s = Scheduler::start(&root);
    wait_all_anchored(&root, &names, Duration::from_secs(30));
    assert_eq!(tsa.seen().len(), 1, "one time-stamp request for the ten namespaces");
    let mut roots = BTreeSet::new();
    for ns in &names {
        let files = receipt_files(&root, ns);
        assert_eq!(files.len(), 1, "{ns}");
        let receipt = read_json(&files[0]);
        assert_eq!(receipt["inclusion"]["size"], 10, "{receipt}");
        roots.insert(inclusion_root(&receipt));
        let (code, out) = run_verify(&root, &files[0], &[]);
        assert_eq!(code, 0, "{ns}: {out}");
        assert!(out.contains("RFC 9162"), "{out}");
    }
    assert_eq!(roots.len(), 1, "{roots:?}");
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_aggregate_anchors_saved_total", &[("target", "rfc3161:tsa")]), Some(9.0), "{m}");
    assert_eq!(metric(&m, "vmsh_aggregate_leaves_sum", &[("target", "rfc3161:tsa")]), Some(10.0), "{m}");
    stop(&mut s);
}

/// Where in an aggregate's life a round kills the scheduler.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Every member waits in the collecting aggregate.
    Collecting,
    /// One member's membership is on disk.
    OneRecorded,
    /// Every member's membership is on disk.
    AllRecorded,
    /// The aggregate's journal line is written.
    Sent,
    /// A member's receipt is written.
    AReceipt,
    /// Every receipt but one is written; the last cannot be (its folder is blocked) and its
    /// namespace backs off, its membership recorded.
    HalfWritten,
}

const MEMBERS: usize = 6;

/// How many members have their membership in the state on disk.
fn recorded(root: &Root, names: &[String]) -> usize {
    let Ok((state, _)) = vmsh_scheduler::storage::state::load(&root.state_path()) else { return 0 };
    let state = serde_json::to_value(state).expect("state is JSON");
    names
        .iter()
        .filter(|ns| state["namespaces"][ns.as_str()]["cadences"]["fast"]["attempt"].get("aggregate").is_some())
        .count()
}

/// How many members have either their membership or the aggregate's success in the state
/// on disk: a member succeeds only after every membership was durable, and the memberships
/// are one commit, so this is 0 or all of them, never some.
fn joined_on_disk(root: &Root, names: &[String]) -> usize {
    let Ok((state, _)) = vmsh_scheduler::storage::state::load(&root.state_path()) else { return 0 };
    let state = serde_json::to_value(state).expect("state is JSON");
    names
        .iter()
        .filter(|ns| {
            let fast = &state["namespaces"][ns.as_str()]["cadences"]["fast"];
            fast["attempt"].get("aggregate").is_some() || fast.get("lastSuccessMs").is_some_and(|v| !v.is_null())
        })
        .count()
}

/// Whether the aggregate got to `point` or past it: a `local:` journal line follows the
/// membership records within milliseconds, so a poll may only see a later stage.
fn reached(point: Point, root: &Root, s: &Scheduler, names: &[String]) -> bool {
    let journal = root.journal("j");
    let sent = journal.exists() && !lines(&journal).is_empty();
    match point {
        Point::Collecting => {
            let m = s.metrics();
            metric(&m, "vmsh_aggregate_collecting_leaves", &[("target", "local:j")]) == Some(MEMBERS as f64)
        }
        Point::OneRecorded => recorded(root, names) >= 1 || sent,
        Point::AllRecorded => recorded(root, names) == MEMBERS || sent,
        Point::Sent => sent,
        Point::AReceipt => names.iter().any(|ns| !receipt_files(root, ns).is_empty()),
        Point::HalfWritten => {
            names[1..].iter().all(|ns| !receipt_files(root, ns).is_empty()) && recorded(root, &names[..1]) == 1
        }
    }
}

#[test]
fn kill_9_at_any_point_of_an_aggregates_life_leaves_every_member_one_receipt_and_no_aggregate_anchored_twice() {
    let points =
        [Point::Collecting, Point::OneRecorded, Point::AllRecorded, Point::Sent, Point::AReceipt, Point::HalfWritten];
    for point in points {
        let root = Root::new();
        let (names, yaml) = namespaces(MEMBERS, "local:j", "1h");
        root.anchors("local:\n  j: {aggregate: {window: 1s}}\n").namespaces(&yaml).batch(
            None,
            "0001.json",
            "b1",
            &root_hex(3),
        );
        // A file where the first namespace's receipt folder goes: its receipt cannot be written.
        let blocked = root.path().join("out/anchors").join(vmsh_scheduler::model::fsname::encode(&names[0]));
        if matches!(point, Point::HalfWritten) {
            crate::support::write_file(&blocked, "not a folder");
        }
        let mut s = Scheduler::start(&root);
        wait_for(Duration::from_secs(20), &format!("{point:?}"), || reached(point, &root, &s, &names).then_some(()));
        s.kill9();
        drop(s);
        // Recorded before the restart: then the aggregate that is resumed must be that one.
        let joined = joined_on_disk(&root, &names);
        assert!(joined == 0 || joined == MEMBERS, "{point:?}: {joined} of {MEMBERS} memberships survived the kill");
        let all_recorded = joined == MEMBERS;
        if matches!(point, Point::HalfWritten) {
            std::fs::remove_file(&blocked).expect("unblock the receipt folder");
        }
        let mut s = Scheduler::start(&root);
        wait_all_anchored(&root, &names, Duration::from_secs(30));
        stop(&mut s);

        let journal = root.journal("j");
        verify_chain(&journal).unwrap_or_else(|e| panic!("{point:?}: {e}"));
        let entries = read_entries(&journal).expect("the journal reads");
        let anchored: BTreeSet<&str> = entries.iter().map(|e| e.attempt_id.as_str()).collect();
        assert_eq!(anchored.len(), entries.len(), "{point:?}: an aggregate was anchored twice: {entries:?}");
        assert!(entries.iter().all(|e| e.namespace.is_empty()), "{point:?}: only aggregates: {entries:?}");
        let line_roots: BTreeSet<&str> = entries.iter().map(|e| e.root.as_str()).collect();
        let mut roots = BTreeSet::new();
        for ns in &names {
            let files = receipt_files(&root, ns);
            assert_eq!(files.len(), 1, "{point:?}: {ns} has {} receipts", files.len());
            let receipt = read_json(&files[0]);
            let r = inclusion_root(&receipt);
            assert!(line_roots.contains(r.as_str()), "{point:?}: {ns}'s root {r} is no journal line's");
            roots.insert(r);
            let report =
                verify_receipt(&files[0], &VerifyOptions { root: root.path().to_path_buf(), ..Default::default() });
            assert_eq!(report.verdict, Verdict::Verified, "{point:?}: {ns}: {report:?}");
        }
        if all_recorded {
            assert_eq!(roots.len(), 1, "{point:?}: the recorded aggregate was resumed, not another: {roots:?}");
            assert_eq!(entries.len(), 1, "{point:?}: {entries:?}");
        }
    }
}

/// Where in the life of an aggregate sent by a command a round kills the scheduler.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Every member waits in the collecting aggregate.
    Collecting,
    /// Every member's membership is on disk (the command is about to start, or runs).
    Recorded,
    /// The command runs.
    Running,
    /// The command has anchored and is printing its proof: receipts are being written.
    Answered,
}

#[test]
fn kill_9_while_an_aggregate_is_collecting_recorded_sent_or_writing_receipts_resumes_that_same_aggregate() {
    const N: usize = 4;
    for stage in [Stage::Collecting, Stage::Recorded, Stage::Running, Stage::Answered] {
        let root = Root::new();
        let (names, yaml) = namespaces(N, "exec:slow", "1h");
        let (started, answered) = (root.path().join("started"), root.path().join("answered"));
        let script = format!(
            "echo \"$VMSH_ATTEMPT_ID $VMSH_AGGREGATE_SIZE\" >> {}; sleep 1; echo \"$VMSH_ATTEMPT_ID\" >> {}; echo '{{\"ok\": true}}'",
            started.display(),
            answered.display()
        );
        let command = serde_json::json!(["sh", "-c", script]);
        // Killed while collecting, the window must stay open long enough for a loaded machine
        // to see it open: one scrape of /metrics can take longer than half a second.
        let window = if matches!(stage, Stage::Collecting) { "5s" } else { "500ms" };
        root.anchors(&format!("exec:\n  slow: {{command: {command}, aggregate: {{window: {window}}}}}\n"))
            .namespaces(&yaml)
            .batch(None, "0001.json", "b1", &root_hex(5));
        let mut s = Scheduler::start(&root);
        wait_for(Duration::from_secs(20), &format!("{stage:?}"), || {
            let at = match stage {
                Stage::Collecting => {
                    let m = s.metrics();
                    metric(&m, "vmsh_aggregate_collecting_leaves", &[("target", "exec:slow")]) == Some(N as f64)
                }
                Stage::Recorded => recorded(&root, &names) == N,
                Stage::Running => !lines(&started).is_empty(),
                Stage::Answered => !lines(&answered).is_empty(),
            };
            at.then_some(())
        });
        s.kill9();
        drop(s);
        let mut s = Scheduler::start(&root);
        wait_all_anchored(&root, &names, Duration::from_secs(30));
        stop(&mut s);
        // A command can never say whether it ran: a resumed aggregate runs it again, with the
        // same attempt id. Every run was for one and the same aggregate.
        let runs: BTreeSet<String> = lines(&started).into_iter().collect();
        assert_eq!(runs.len(), 1, "{stage:?}: the command ran for more than one aggregate: {runs:?}");
        let run = runs.iter().next().expect("a run");
        let (attempt, size) = run.split_once(' ').expect("attempt and size");
        assert_eq!(size, N.to_string(), "{stage:?}: VMSH_AGGREGATE_SIZE");
        for ns in &names {
            let files: Vec<PathBuf> = receipt_files(&root, ns);
            assert_eq!(files.len(), 1, "{stage:?}: {ns} has {} receipts", files.len());
            assert_eq!(inclusion_root(&read_json(&files[0])), format!("sha256:{attempt}"), "{stage:?}: {ns}");
            let report =
                verify_receipt(&files[0], &VerifyOptions { root: root.path().to_path_buf(), ..Default::default() });
            // An exec proof is whatever the command printed; the inclusion proof is checked.
            assert!(matches!(report.verdict, Verdict::Unverifiable(_)), "{stage:?}: {ns}: {report:?}");
            assert!(report.passed.iter().any(|l| l.contains("RFC 9162")), "{stage:?}: {ns}: {report:?}");
        }
    }
}

#[test]
fn an_aggregate_waiting_for_confirmations_is_one_transaction_that_survives_kill_9_and_confirms_for_every_member() {
    let node = FakeBitcoind::start();
    let root = Root::new();
    let (names, yaml) = namespaces(4, "btc:regtest", "1h");
    root.anchors(&format!(
        "btc:\n  regtest: {{rpcUrl: \"{}\", network: regtest, rpcUser: u, rpcPassword: p, confirmations: 2, \
         pollInterval: 200ms, aggregate: {{window: 500ms}}}}\n",
        node.url()
    ))
    .namespaces(&yaml)
    .batch(None, "0001.json", "b1", &root_hex(6));
    let mut s = Scheduler::start(&root);
    let txid = wait_for(Duration::from_secs(30), "every member pending on one transaction", || {
        let h = s.health();
        let txids: BTreeSet<String> = names
            .iter()
            .filter_map(|ns| h.cadence(ns, "fast")?.pending.as_ref()?.data["txid"].as_str().map(str::to_string))
            .collect();
        let all = names.iter().all(|ns| h.cadence(ns, "fast").is_some_and(|c| c.pending.is_some()));
        (all && txids.len() == 1).then(|| txids.into_iter().next().expect("one txid"))
    });
    assert_eq!(node.accepted().len(), 1, "one transaction for the four namespaces");
    s.kill9();
    drop(s);
    node.generate(1);
    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(30), "the transaction one deep for every member", || {
        let h = s.health();
        names
            .iter()
            .all(|ns| h.cadence(ns, "fast").and_then(|c| c.pending.clone()).is_some_and(|p| p.depth == 1))
            .then_some(())
    });
    node.generate(1);
    wait_all_anchored(&root, &names, Duration::from_secs(30));
    stop(&mut s);
    assert_eq!(node.calls("createrawtransaction"), 1, "never a second transaction");
    assert_eq!(node.accepted().len(), 1);
    let mut roots = BTreeSet::new();
    for ns in &names {
        let files = receipt_files(&root, ns);
        assert_eq!(files.len(), 1, "{ns}");
        let receipt = read_json(&files[0]);
        assert_eq!(receipt["attestation"]["txid"], txid.as_str(), "{receipt}");
        roots.insert(inclusion_root(&receipt));
        let (code, out) = run_verify(&root, &files[0], &[]);
        assert_eq!(code, 0, "{ns}: {out}");
    }
    assert_eq!(roots.len(), 1, "{roots:?}");
}

#[test]
fn an_aggregate_anchored_through_an_eip155_contract_names_its_batch_and_every_receipt_verifies() {
    use crate::evm::{Anvil, FUNDED_ADDR, FUNDED_KEY, anchor_contract_initcode};
    let anvil = Anvil::start(true);
    let hash = anvil
        .rpc("eth_sendTransaction", serde_json::json!([{"from": FUNDED_ADDR, "data": anchor_contract_initcode()}]));
    let contract = wait_for(Duration::from_secs(15), "the contract to be deployed", || {
        anvil.rpc("eth_getTransactionReceipt", serde_json::json!([hash]))["contractAddress"]
            .as_str()
            .map(str::to_string)
    });
    let root = Root::new();
    let (names, yaml) = namespaces(3, "eip155:31337", "1h");
    root.anchors(&format!(
        "eip155:\n  local: {{rpcUrl: \"{}\", chainId: 31337, key: \"{FUNDED_KEY}\", pollInterval: 200ms, \
         confirmations: 1, contract: \"{contract}\", memo: \"vmsh\", aggregate: {{window: 500ms}}}}\n",
        anvil.url()
    ))
    .namespaces(&yaml)
    .batch(None, "0001.json", "b1", &root_hex(8));
    let mut s = Scheduler::start(&root);
    wait_all_anchored(&root, &names, Duration::from_secs(30));
    stop(&mut s);
    // The contract call's batchId is the aggregate's, `aggregate-3`: verify checks that.
    let receipts = one_verified_receipt_each(&root, &names);
    assert!(receipts.iter().all(|r| r["attestation"]["contract"] == true), "{receipts:?}");
    let txs = tx_hashes(&receipts);
    assert_eq!(txs.len(), 1, "one contract call for the three namespaces: {txs:?}");
}

/// An aggregate's transaction outbid in the mempool is replaced like any other: the
/// replacement is recorded in every member's attempt first, and every member's receipt names
/// the one transaction that landed.
#[test]
fn an_aggregates_transaction_outbid_in_the_mempool_is_replaced_and_every_receipt_names_the_one_that_landed() {
    use crate::evm::{Anvil, FITS, FUNDED_ADDR, FUNDED_KEY, ONE_TX_BLOCKS, hex_u128};
    let anvil = Anvil::start_with(false, ONE_TX_BLOCKS);
    let root = Root::new();
    let (names, yaml) = namespaces(3, "eip155:31337", "1h");
    root.anchors(&format!(
        "eip155:\n  local: {{rpcUrl: \"{}\", chainId: 31337, key: \"{FUNDED_KEY}\", pollInterval: 200ms, \
         confirmations: 1, bumpAfter: 1 block, maxFeePerGas: 500 gwei, aggregate: {{window: 500ms}}{FITS}}}\n",
        anvil.url()
    ))
    .namespaces(&yaml)
    .batch(None, "0001.json", "b1", &root_hex(8));
    let mut s = Scheduler::start(&root);
    let first = wait_for(Duration::from_secs(30), "the aggregate's transaction in the mempool", || {
        anvil.pending_hashes().into_iter().next()
    });
    let rival = hex_u128(&anvil.tx(&first)["maxFeePerGas"]) * 3;
    let replaced = |s: &Scheduler| {
        crate::support::metric(&s.metrics(), "vmsh_anchor_replacements_total", &[("namespace", &names[0])])
            .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while anvil.mined_nonce(FUNDED_ADDR) == 0 {
        assert!(std::time::Instant::now() < deadline, "never mined");
        let seen = replaced(&s);
        anvil.outbid(rival);
        anvil.mine(1);
        wait_for(Duration::from_secs(15), "a replacement, or ours mined", || {
            (replaced(&s) > seen || anvil.mined_nonce(FUNDED_ADDR) > 0).then_some(())
        });
    }
    wait_all_anchored(&root, &names, Duration::from_secs(30));
    stop(&mut s);
    let txs = tx_hashes(&one_verified_receipt_each(&root, &names));
    assert_eq!(txs.len(), 1, "one transaction for the aggregate: {txs:?}");
    assert!(!txs.contains(&first), "the replacement landed, not the first offer");
    assert_eq!(anvil.mined_nonce(FUNDED_ADDR), 1, "one nonce spent");
}

/// Each namespace's one receipt, after `verify` accepted it.
fn one_verified_receipt_each(root: &Root, names: &[String]) -> Vec<serde_json::Value> {
    names
        .iter()
        .map(|ns| {
            let files = receipt_files(root, ns);
            assert_eq!(files.len(), 1, "{ns}");
            let (code, out) = run_verify(root, &files[0], &[]);
            assert_eq!(code, 0, "{ns}: {out}");
            read_json(&files[0])
        })
        .collect()
}

/// The transactions the receipts name.
fn tx_hashes(receipts: &[serde_json::Value]) -> BTreeSet<String> {
    receipts.iter().map(|r| r["attestation"]["txHash"].as_str().expect("txHash").to_string()).collect()
}
