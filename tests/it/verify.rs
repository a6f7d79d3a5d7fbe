//! `vmsh-scheduler verify RECEIPT`: a receipt checks out against its journal, and tampering
//! with either is caught.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Root, Scheduler, exec_targets, root_hex, wait_for};

fn verify(root: &Root, receipt: &Path) -> (i32, String) {
    crate::support::run_verify(root, receipt, &[])
}

fn receipt_files(root: &Root, ns: &str) -> Vec<PathBuf> {
    crate::support::receipt_files(root, ns)
}

fn anchored_root(targets: Option<&str>, target: &str) -> Root {
    let root = Root::new();
    if let Some(t) = targets {
        root.anchors(t);
    }
    root.namespaces(&format!("namespaces:\n  n:\n    cadence:\n      fast: {{target: \"{target}\", every: \"1s\"}}\n"))
        .batch(None, "0001.json", "b1", &root_hex(3));
    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(10), "three receipts", || (receipt_files(&root, "n").len() >= 3).then_some(()));
    s.signal(libc::SIGTERM);
    s.wait_exit(Duration::from_secs(10));
    root
}

#[test]
fn a_local_receipt_verifies_against_its_journal() {
    let root = anchored_root(None, "local:j");
    for receipt in receipt_files(&root, "n") {
        let (code, out) = verify(&root, &receipt);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("hash chain intact"), "{out}");
        assert!(out.contains("VERIFIED"), "{out}");
    }
}

#[test]
fn a_tampered_receipt_fails_verification() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[1].clone();
    let text = std::fs::read_to_string(&receipt).expect("read");
    std::fs::write(&receipt, text.replace(&root_hex(3), &root_hex(4))).expect("tamper");
    let (code, out) = verify(&root, &receipt);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("different root"), "{out}");
}

#[test]
fn a_tampered_journal_fails_verification() {
    let root = anchored_root(None, "local:j");
    let journal = root.journal("j");
    let text = std::fs::read_to_string(&journal).expect("read");
    // Rewrite the first line's batch id: every later receipt's chain check must fail.
    std::fs::write(&journal, text.replacen("\"b1\"", "\"b9\"", 1)).expect("tamper");
    let receipt = receipt_files(&root, "n")[2].clone();
    let (code, out) = verify(&root, &receipt);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match the hash of line 1"), "{out}");
}

#[test]
fn an_exec_receipt_is_reported_as_not_verifiable() {
    let root = anchored_root(Some(&exec_targets(&[("t", "echo '{\"ok\": true}'")])), "exec:t");
    let (code, out) = verify(&root, &receipt_files(&root, "n")[0]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("NOT VERIFIABLE"), "{out}");
}

// ---- every field checked, or the receipt refused ---------------------------------------------

/// One edit of a genuine receipt and what `verify` must answer: its exit code (0 VERIFIED,
/// 1 FAILED, 2 NOT VERIFIABLE) and words the verdict line must hold.
struct Case {
    what: &'static str,
    code: i32,
    words: &'static str,
    edit: Box<dyn Fn(&mut Value)>,
}

fn case(what: &'static str, code: i32, words: &'static str, edit: impl Fn(&mut Value) + 'static) -> Case {
    Case { what, code, words, edit: Box::new(edit) }
}

/// Sets `field` (`attestation.seq` reaches into the attestation) to `value`, adding it if absent.
fn set(field: &'static str, value: Value) -> impl Fn(&mut Value) {
    move |r| {
        let mut at = r;
        for key in field.split('.') {
            at = &mut at[key];
        }
        *at = value.clone();
    }
}

/// Removes `field` (`attestation.tsa` reaches into the attestation).
fn remove(field: &'static str) -> impl Fn(&mut Value) {
    move |r| {
        let (parent, key) = match field.rsplit_once('.') {
            Some((p, k)) => (&mut r[p], k),
            None => (r, field),
        };
        if let Some(o) = parent.as_object_mut() {
            o.remove(key);
        }
    }
}

/// Moves the receipt's time (both `time` and `timeMs`, consistently) by `ms`.
fn shift_time(ms: i64) -> impl Fn(&mut Value) {
    move |r| {
        let t = r["timeMs"].as_i64().expect("timeMs") + ms;
        r["timeMs"] = json!(t);
        r["time"] = json!(vmsh_scheduler::clock::rfc3339(t));
    }
}

/// Adds one second to a number field.
fn plus_one(field: &'static str) -> impl Fn(&mut Value) {
    move |r| {
        let mut at = r;
        for key in field.split('.') {
            at = &mut at[key];
        }
        *at = json!(at.as_i64().expect("a number") + 1);
    }
}

/// The verdict word of an exit code.
fn word(code: i32) -> &'static str {
    match code {
        0 => "VERIFIED",
        1 => "FAILED",
        _ => "NOT VERIFIABLE",
    }
}

/// Runs `verify` on the genuine receipt (which must exit `genuine`), then on each edit of it
/// (written outside the receipts folder, so only its content is judged), and fails listing
/// every case that was answered otherwise than expected.
fn assert_edits_caught(root: &Root, receipt: &Path, args: &[&str], genuine: i32, cases: Vec<Case>) {
    let (code, out) = crate::support::run_verify(root, receipt, args);
    assert_eq!(code, genuine, "the genuine receipt:\n{out}");
    let original: Value = serde_json::from_slice(&std::fs::read(receipt).expect("read receipt")).expect("receipt JSON");
    let dir = root.path().join("edited");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut edited = original.clone();
        (c.edit)(&mut edited);
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&edited).expect("JSON")).expect("write edited receipt");
        let (code, out) = crate::support::run_verify(root, &file, args);
        let verdict = out.lines().last().unwrap_or_default();
        if code != c.code || !verdict.starts_with(word(c.code)) || !verdict.contains(c.words) {
            wrong.push(format!(
                "{}: expected exit {} ({} … {:?}), got exit {code}:\n{out}",
                c.what,
                c.code,
                word(c.code),
                c.words
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} edit(s) not caught as expected:\n\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Edits every receipt may get, whatever its scheme.
fn common_cases() -> Vec<Case> {
    vec![
        case("an unknown version", 2, "version 99", set("version", json!(99))),
        case("the version as text", 2, "version", set("version", json!("1"))),
        case("an unknown top-level field", 2, "notarizedBy", set("notarizedBy", json!("a bank"))),
        case("an unknown attestation field", 2, "extra", set("attestation.extra", json!(1))),
        case("a missing schedulerVersion", 2, "schedulerVersion", remove("schedulerVersion")),
        case("a schedulerVersion that is no version", 2, "schedulerVersion", set("schedulerVersion", json!("banana"))),
        case("time alone changed", 1, "time", |r: &mut Value| {
            r["time"] = json!("2001-01-01T00:00:00.000Z");
        }),
        case("timeMs alone changed", 1, "time", plus_one("timeMs")),
        case("a root that is not a root", 2, "root", set("root", json!("sha256:xyz"))),
        case("an attempt id that is not one", 2, "attemptId", set("attemptId", json!("not hex"))),
    ]
}

#[test]
fn every_edit_of_a_local_receipt_is_caught_with_the_exit_code_of_its_kind() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[1].clone();
    let genuine: Value = serde_json::from_slice(&std::fs::read(&receipt).expect("read")).expect("JSON");
    let first_line_hash = {
        let first: Value =
            serde_json::from_slice(&std::fs::read(&receipt_files(&root, "n")[0]).expect("read")).expect("JSON");
        first["attestation"]["lineHash"].clone()
    };
    let mut cases = common_cases();
    cases.extend([
        case("time and timeMs moved together", 1, "time", shift_time(1000)),
        case(
            "the journal pointing elsewhere",
            1,
            "journal",
            set("attestation.journal", json!("out/journal/other.jsonl")),
        ),
        case("the journal pointing outside the root", 1, "journal", set("attestation.journal", json!("/etc/passwd"))),
        case("another line number", 1, "line", set("attestation.seq", json!(1))),
        case("a line number past the end", 1, "line", set("attestation.seq", json!(99))),
        case("another lineHash", 1, "lineHash", set("attestation.lineHash", first_line_hash)),
        case("another prev", 1, "prev", set("attestation.prev", json!("ab".repeat(32)))),
        case("a missing prev", 2, "prev", remove("attestation.prev")),
        case("another namespace", 1, "namespace", set("namespace", json!("m"))),
        case("another cadence", 1, "cadence", set("cadence", json!("strong"))),
        case("an unknown cadence", 2, "cadence", set("cadence", json!("hourly"))),
        case("another batch", 1, "batch", set("batchId", json!("b9"))),
        case("another attempt", 1, "attempt", set("attemptId", json!("cd".repeat(32)))),
        case("another target", 1, "journal", set("target", json!("local:other"))),
        case("another root", 1, "root", set("root", json!(format!("sha256:{}", root_hex(4))))),
        case("another scheduler version (not evidence)", 0, "", set("schedulerVersion", json!("9.9.9"))),
    ]);
    assert_eq!(genuine["attestation"]["seq"], 2, "{genuine}");
    assert_edits_caught(&root, &receipt, &[], 0, cases);
}

#[test]
fn every_edit_of_an_exec_receipt_is_refused_or_reported_as_not_verifiable() {
    let root = anchored_root(Some(&exec_targets(&[("t", "echo '{\"ok\": true}'")])), "exec:t");
    let receipt = receipt_files(&root, "n")[0].clone();
    let cases = vec![
        case("an unknown version", 2, "version 99", set("version", json!(99))),
        case("an unknown top-level field", 2, "notarizedBy", set("notarizedBy", json!("a bank"))),
        case("time alone changed", 1, "time", |r: &mut Value| {
            r["time"] = json!("2001-01-01T00:00:00.000Z");
        }),
        case("a target that is not one", 2, "target", set("target", json!("exec:../x"))),
        case("an attestation that is not an object", 2, "attestation", set("attestation", json!("done"))),
        case("the command's output edited", 2, "NOT VERIFIABLE", set("attestation.ok", json!(false))),
    ];
    // An exec receipt is never VERIFIED: its genuine form is not verifiable either.
    assert_edits_caught(&root, &receipt, &[], 2, cases);
}

#[test]
fn a_receipt_renamed_or_moved_inside_the_anchors_folder_fails_verification() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[0].clone();
    let renamed = receipt.with_file_name("20010101T000000.000Z-fast-0000000000000000.json");
    std::fs::copy(&receipt, &renamed).expect("copy");
    let (code, out) = verify(&root, &renamed);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().last().unwrap_or_default().starts_with("FAILED") && out.contains("file name"), "{out}");
    let moved = root.path().join("out/anchors/other").join(receipt.file_name().expect("name"));
    std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&receipt, &moved).expect("copy");
    let (code, out) = verify(&root, &moved);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("folder"), "{out}");
    // Where it was written, both are checked and said so.
    let (code, out) = verify(&root, &receipt);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("file name"), "{out}");
}

#[test]
fn verify_exits_2_not_verifiable_when_it_is_given_no_receipt() {
    let root = anchored_root(None, "local:j");
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let empty = root.path().join("empty.json");
    std::fs::write(&empty, "{}").expect("write");
    let list = root.path().join("list.json");
    std::fs::write(&list, "[1, 2]").expect("write");
    let fifo = root.path().join("pipe.json");
    let c_fifo = std::ffi::CString::new(fifo.to_str().expect("utf-8 path")).expect("no NUL");
    // SAFETY: mkfifo only reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let cases = [
        (fifo, "is a named pipe, not a regular file"),
        (root.path().join("no-such-receipt.json"), "No such file"),
        (readme, "not a receipt"),
        (root.path().join("out"), "not a receipt"),
        (empty, "not a receipt"),
        (list, "not a receipt"),
    ];
    for (path, words) in cases {
        let (code, out) = verify(&root, &path);
        let verdict = out.lines().last().unwrap_or_default();
        assert_eq!(code, 2, "{}: {out}", path.display());
        assert!(verdict.starts_with("NOT VERIFIABLE") && verdict.contains(words), "{}: {out}", path.display());
    }
}

#[test]
fn a_receipt_whose_journal_is_not_found_is_not_verifiable_and_says_to_give_the_root() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[0].clone();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (code, out) = crate::support::run_verify(&root, &receipt, &["--root", &elsewhere.path().display().to_string()]);
    let verdict = out.lines().last().unwrap_or_default();
    assert_eq!(code, 2, "{out}");
    assert!(verdict.starts_with("NOT VERIFIABLE") && verdict.contains("--root"), "{out}");
    // The receipt sits under its own root: the message names it.
    assert!(verdict.contains(&format!("--root {}", root.path().display())), "{out}");
}

#[test]
fn a_receipt_contradicted_by_another_roots_journal_names_its_own_root() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[0].clone();
    let other = anchored_root(None, "local:j");
    let (code, out) = crate::support::run_verify(&root, &receipt, &["--root", &other.path().display().to_string()]);
    let verdict = out.lines().last().unwrap_or_default();
    assert_eq!(code, 1, "{out}");
    assert!(verdict.starts_with("FAILED") && verdict.contains(&format!("--root {}", root.path().display())), "{out}");
}

#[test]
fn a_receipt_copied_elsewhere_is_checked_against_the_journals_under_root() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[2].clone();
    let away = tempfile::tempdir().expect("tempdir");
    let copy = away.path().join("copy.json");
    std::fs::copy(&receipt, &copy).expect("copy");
    let mut env = crate::support::base_env(&root);
    env.insert("VMSH_ROOT".into(), away.path().display().to_string());
    let run = |args: &[&str]| {
        let mut all = vec!["verify", copy.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = crate::support::command(&root, &env, &all).output().expect("run verify");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = run(&[]);
    assert_eq!(code, 2, "VMSH_ROOT holds no journal: {out}");
    let (code, out) = run(&["--root", &root.path().display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&root.journal("j").display().to_string()), "names the journal it read: {out}");
    assert!(out.contains("not in an out/anchors"), "says its file name was not checked: {out}");
}

#[test]
fn verify_shows_what_a_hostile_receipt_holds_without_obeying_it() {
    let root = anchored_root(None, "local:j");
    let receipt = receipt_files(&root, "n")[0].clone();
    let mut edited: Value = serde_json::from_slice(&std::fs::read(&receipt).expect("read")).expect("JSON");
    edited[format!("\u{1b}[2J\u{1b}]0;owned\u{7}{}", "x".repeat(100_000))] = json!(1);
    let file = root.path().join("hostile.json");
    std::fs::write(&file, edited.to_string()).expect("write");
    let (code, out) = verify(&root, &file);
    let start: String = out.chars().take(300).collect();
    assert_eq!(code, 2, "{start}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "a control character reached the terminal: {start:?}");
    assert!(out.contains(r"\u{1b}[2J"), "shown, escaped: {start}");
    assert!(out.lines().all(|l| l.chars().count() <= 2001), "a line was not cut: {start}");
}

#[test]
fn verify_says_which_fields_are_not_evidence() {
    let root = anchored_root(None, "local:j");
    let (code, out) = verify(&root, &receipt_files(&root, "n")[0]);
    assert_eq!(code, 0, "{out}");
    let note = out.lines().find(|l| l.starts_with("not evidence:")).unwrap_or_else(|| panic!("no note: {out}"));
    assert!(note.contains("schedulerVersion"), "{out}");
    assert!(!note.contains("batchId") && !note.contains("namespace"), "the journal attests those: {out}");
}

/// Starts a scheduler on `root` until it wrote its first receipt for namespace `n`, calling
/// `nudge` while it waits (e.g. to mine a block); the receipt's path.
fn first_receipt(root: &Root, nudge: impl Fn()) -> PathBuf {
    let mut s = Scheduler::start(root);
    let receipt = wait_for(Duration::from_secs(30), "a receipt", || {
        nudge();
        receipt_files(root, "n").into_iter().next()
    });
    s.signal(libc::SIGTERM);
    s.wait_exit(Duration::from_secs(10));
    receipt
}

fn one_namespace(target: &str) -> String {
    format!("namespaces:\n  n:\n    cadence:\n      fast: {{target: \"{target}\", every: \"1h\"}}\n")
}

#[test]
fn every_edit_of_an_rfc3161_receipt_is_caught_with_the_exit_code_of_its_kind() {
    let tsa = crate::support::tsa_server::TestTsa::start();
    let root = Root::new();
    root.anchors(&format!("rfc3161:\n  tsa: {{url: \"{}\", trustBundle: \"{}\"}}\n", tsa.url(), tsa.ca.display()))
        .namespaces(&one_namespace("rfc3161:tsa"))
        .batch(None, "0001.json", "b1", &root_hex(3));
    let receipt = first_receipt(&root, || {});
    let mut cases = common_cases();
    cases.extend([
        case("time and timeMs moved together", 1, "genTime", shift_time(1000)),
        case("another genTime", 1, "genTime", set("attestation.genTime", json!("2001-01-01T00:00:00.000Z"))),
        case("another serial number", 1, "serial", set("attestation.serialNumber", json!("ff"))),
        case("another policy", 1, "policy", set("attestation.policy", json!("1.2.3"))),
        case("another nonce", 1, "nonce", set("attestation.nonce", json!("0000000000000001"))),
        case("another TSA name", 1, "TSA", set("attestation.tsa", json!("CN=Someone Else"))),
        case("another imprint algorithm", 1, "imprintAlgorithm", set("attestation.imprintAlgorithm", json!("sha1"))),
        case("a token that is no token", 1, "token", set("attestation.token", json!("AAAA"))),
        case("a token that is not base64", 2, "token", set("attestation.token", json!("!!"))),
        case("verified that is not a flag", 2, "verified", set("attestation.verified", json!("yes"))),
        case("a missing genTime", 2, "genTime", remove("attestation.genTime")),
        case("another root", 1, "root", set("root", json!(format!("sha256:{}", root_hex(4))))),
        case("verified turned off (not evidence)", 0, "", set("attestation.verified", json!(false))),
        case("another batch (not evidence)", 0, "", set("batchId", json!("b9"))),
    ]);
    assert_edits_caught(&root, &receipt, &[], 0, cases);
}

#[test]
fn every_edit_of_an_eip155_receipt_is_caught_with_the_exit_code_of_its_kind() {
    let anvil = crate::evm::Anvil::start(true);
    let root = Root::new();
    root.anchors(&format!(
        "eip155:\n  local: {{rpcUrl: \"{}\", chainId: 31337, key: \"{}\", pollInterval: 200ms, confirmations: 1}}\n",
        anvil.url(),
        crate::evm::FUNDED_KEY
    ))
    .namespaces(&one_namespace("eip155:31337"))
    .batch(None, "0001.json", "b1", &root_hex(3));
    let receipt = first_receipt(&root, || {});
    // A block on top: the receipt's confirmations (1) stay true as the chain grows.
    anvil.mine(1);
    let other = format!("0x{}", "ab".repeat(32));
    let mut cases = common_cases();
    cases.extend([
        case("time and timeMs moved together", 1, "time", shift_time(1000)),
        case("another blockTime", 1, "blockTime", plus_one("attestation.blockTime")),
        case("another chainId", 1, "chain", set("attestation.chainId", json!(1))),
        case("another target chain", 1, "chain", set("target", json!("eip155:1"))),
        case("another transaction", 1, "transaction", set("attestation.txHash", json!(other))),
        case("a txHash that is not one", 2, "txHash", set("attestation.txHash", json!("0x12"))),
        case("another sender", 1, "sender", set("attestation.from", json!(format!("0x{}", "11".repeat(20))))),
        case("another recipient", 1, "recipient", set("attestation.to", json!(format!("0x{}", "11".repeat(20))))),
        case("other data", 1, "data", set("attestation.data", json!(format!("0x564d5348{}", root_hex(4))))),
        case("a contract call claimed", 1, "contract", set("attestation.contract", json!(true))),
        case("another block number", 1, "block", set("attestation.blockNumber", json!(999))),
        case("another block hash", 1, "block", set("attestation.blockHash", json!(other))),
        case(
            "more confirmations than the chain has",
            1,
            "confirmations",
            set("attestation.confirmations", json!(1000)),
        ),
        case("another root", 1, "root", set("root", json!(format!("sha256:{}", root_hex(4))))),
        case("another batch (not evidence for a marker transaction)", 0, "", set("batchId", json!("b9"))),
    ]);
    // The node is named on the command line: a receipt edited to another chain finds no entry
    // for it in the targets file.
    assert_edits_caught(&root, &receipt, &["--rpc", &anvil.url()], 0, cases);
}

#[test]
fn a_contract_call_receipt_attests_its_batch_id() {
    let anvil = crate::evm::Anvil::start(true);
    let deploy = anvil.rpc(
        "eth_sendTransaction",
        json!([{"from": crate::evm::FUNDED_ADDR, "data": crate::evm::anchor_contract_initcode()}]),
    );
    let contract = wait_for(Duration::from_secs(15), "the contract to be deployed", || {
        anvil.rpc("eth_getTransactionReceipt", json!([deploy]))["contractAddress"].as_str().map(str::to_string)
    });
    let root = Root::new();
    root.anchors(&format!(
        "eip155:\n  local: {{rpcUrl: \"{}\", chainId: 31337, key: \"{}\", contract: \"{contract}\", pollInterval: 200ms, confirmations: 1}}\n",
        anvil.url(),
        crate::evm::FUNDED_KEY
    ))
    .namespaces(&one_namespace("eip155:31337"))
    .batch(None, "0001.json", "b1", &root_hex(3));
    let receipt = first_receipt(&root, || {});
    let (code, out) = verify(&root, &receipt);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("anchors the SHA-256 of the receipt's batchId"), "{out}");
    let cases = vec![
        case("another batch", 1, "batchId", set("batchId", json!("b9"))),
        case("a marker transaction claimed", 1, "contract", set("attestation.contract", json!(false))),
    ];
    assert_edits_caught(&root, &receipt, &[], 0, cases);
}

#[test]
fn every_edit_of_a_btc_receipt_is_caught_with_the_exit_code_of_its_kind() {
    let node = crate::support::fake_bitcoind::FakeBitcoind::start();
    let root = Root::new();
    root.anchors(&format!(
        "btc:\n  regtest: {{rpcUrl: \"{}\", network: regtest, rpcUser: u, rpcPassword: p, confirmations: 1, pollInterval: 200ms}}\n",
        node.url()
    ))
    .namespaces(&one_namespace("btc:regtest"))
    .batch(None, "0001.json", "b1", &root_hex(3));
    let receipt = first_receipt(&root, || {
        if !node.mempool().is_empty() {
            node.generate(1);
        }
    });
    let genuine: Value = serde_json::from_slice(&std::fs::read(&receipt).expect("read")).expect("JSON");
    let height = genuine["attestation"]["height"].as_u64().expect("a mined receipt");
    let other_block = node.block_hash(height - 1).expect("an earlier block");
    let mut cases = common_cases();
    cases.extend([
        case("time and timeMs moved together", 1, "time", shift_time(1000)),
        case("another blockTime", 1, "time", plus_one("attestation.blockTime")),
        case("another height", 1, "height", plus_one("attestation.height")),
        case("another block", 1, "height", set("attestation.blockHash", json!(other_block))),
        case("another transaction", 1, "not in block", set("attestation.txid", json!("ab".repeat(32)))),
        case("a txid that is not one", 2, "txid", set("attestation.txid", json!("12"))),
        case("another chain", 1, "chain", set("attestation.chain", json!("main"))),
        case("other data", 1, "data", set("attestation.data", json!(format!("564d5348{}", root_hex(4))))),
        case(
            "more confirmations than the chain has",
            1,
            "confirmations",
            set("attestation.confirmations", json!(1000)),
        ),
        case("a block without its height", 2, "height", remove("attestation.height")),
        case("another root", 1, "root", set("root", json!(format!("sha256:{}", root_hex(4))))),
    ]);
    assert_edits_caught(&root, &receipt, &[], 0, cases);
}
