//! `eip155:` against a real node: anvil (Foundry's local EVM node, installed from the npm
//! registry by scripts/install-test-deps.sh) on a loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use vmsh_scheduler::health::contract::{LastError, Pending};
use vmsh_scheduler::model::ErrorClass;

use crate::support::{CadenceParts, Root, Scheduler, last_tick, metric, root_hex, wait_for};

const LONG: Duration = Duration::from_secs(15);
/// anvil's first default account (funded with 10000 ETH at genesis).
pub(crate) const FUNDED_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub(crate) const FUNDED_ADDR: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// A key nobody funded.
const EMPTY_KEY: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

fn anvil_path() -> PathBuf {
    if let Ok(p) = std::env::var("ANVIL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        local.exists(),
        "anvil not found at {}: run scripts/install-test-deps.sh (installs @foundry-rs/anvil-linux-amd64 with npm)",
        local.display()
    );
    local
}

/// A running anvil node.
pub(crate) struct Anvil {
    child: Child,
    addr: SocketAddr,
}

impl Anvil {
    /// Starts anvil; with `automine` false, transactions wait in the mempool until mined.
    pub(crate) fn start(automine: bool) -> Self {
        Self::start_with(automine, &[])
    }

    /// Starts anvil with more arguments (e.g. a block gas limit).
    pub(crate) fn start_with(automine: bool, args: &[&str]) -> Self {
        let mut cmd = Command::new(anvil_path());
        cmd.args(["--port", "0", "--chain-id", "31337"]).args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        if !automine {
            cmd.arg("--no-mining");
        }
        let mut child = cmd.spawn().expect("start anvil");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("Listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(LONG).expect("anvil to listen").parse().expect("address");
        Anvil { child, addr }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One JSON-RPC call; panics on an error answer.
    pub(crate) fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let mut s = TcpStream::connect(self.addr).expect("connect anvil");
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (_, body) = raw.split_once("\r\n\r\n").expect("http response");
        let v: Value = serde_json::from_str(body.trim()).expect("json-rpc answer");
        assert!(v.get("error").is_none_or(Value::is_null), "{method} failed: {v}");
        v["result"].clone()
    }

    pub(crate) fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([format!("{blocks:#x}")]));
    }

    /// How many transactions of `addr` the node counts, the mempool's included.
    fn nonce(&self, addr: &str) -> u64 {
        self.transaction_count(addr, "pending")
    }

    fn transaction_count(&self, addr: &str, block: &str) -> u64 {
        let n = self.rpc("eth_getTransactionCount", json!([addr, block]));
        u64::from_str_radix(n.as_str().expect("hex").trim_start_matches("0x"), 16).expect("number")
    }

    pub(crate) fn pending_hashes(&self) -> Vec<String> {
        let content = self.rpc("txpool_content", json!([]));
        let mut hashes = Vec::new();
        for by_nonce in content["pending"].as_object().into_iter().flat_map(|m| m.values()) {
            for tx in by_nonce.as_object().into_iter().flat_map(|m| m.values()) {
                hashes.push(tx["hash"].as_str().expect("hash").to_string());
            }
        }
        hashes
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup(root: &Root, anvil_url: &str, key: &str, extra: &str, cadences: &str) {
    root.anchors(&format!(
        "eip155:\n  local: {{rpcUrl: \"{anvil_url}\", chainId: 31337, key: \"{key}\", pollInterval: 200ms{extra}}}\n"
    ))
    .namespaces(&format!("namespaces:\n{cadences}"))
    .batch(None, "0001.json", "b1", &root_hex(7));
}

fn one_namespace(name: &str, every: &str, confirmations: u32) -> String {
    format!(
        "  {name}:\n    cadence:\n      fast: {{target: \"eip155:31337\", every: \"{every}\", confirmations: {confirmations}}}\n"
    )
}

/// The anchor `ns` has sent and waits on, once /health shows one.
fn pending(s: &Scheduler, ns: &str) -> Option<Pending> {
    s.cadence(ns, "fast")?.pending
}

/// The transaction hash of the anchor `ns` waits on, once /health shows one.
fn pending_tx(s: &Scheduler, ns: &str) -> Option<String> {
    pending(s, ns)?.data["txHash"].as_str().map(str::to_string)
}

fn verify(url: &str, receipt: &Value) -> Result<Vec<String>, vmsh_scheduler::model::evidence::CheckError> {
    let root: [u8; 32] = vmsh_scheduler::model::digest::parse_hex32(
        receipt["root"].as_str().expect("root").trim_start_matches("sha256:"),
    )
    .expect("root hex");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let chain = receipt["target"].as_str().and_then(|t| t.strip_prefix("eip155:")).and_then(|c| c.parse().ok());
    rt.block_on(vmsh_scheduler::anchor::eip155::verify_attestation(url, &receipt["attestation"], &root, chain))
}

#[test]
fn anchors_a_marker_transaction_and_waits_for_its_confirmations() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1h", 3));
    let s = Scheduler::start(&root);
    let sent = wait_for(LONG, "the transaction in the mempool", || pending(&s, "n"));
    assert_eq!(sent.depth, 0, "{sent:?}");
    assert_eq!(sent.required, 3);
    let tx = sent.data["txHash"].as_str().expect("hash").to_string();
    assert_eq!(anvil.pending_hashes(), vec![tx.clone()]);
    let m = s.metrics();
    assert_eq!(metric(&m, "vmsh_anchor_pending", &[("namespace", "n")]), Some(1.0));
    anvil.mine(1);
    wait_for(LONG, "depth 1", || pending(&s, "n").is_some_and(|p| p.depth == 1).then_some(()));
    assert!(root.receipts("n").is_empty(), "final before 3 confirmations");
    anvil.mine(2);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    let att = &receipt["attestation"];
    assert_eq!(att["txHash"], tx);
    assert_eq!(att["confirmations"], 3);
    assert_eq!(att["data"], format!("0x564d5348{}", root_hex(7)), "marker then root");
    assert_eq!(att["to"], FUNDED_ADDR, "a marker transaction goes to the sender itself");
    for field in ["blockNumber", "blockHash", "blockTime", "chainId"] {
        assert!(!att[field].is_null(), "{field} missing: {att}");
    }
    wait_for(LONG, "the pending gauge to clear", || {
        (metric(&s.metrics(), "vmsh_anchor_pending", &[("namespace", "n")]) == Some(0.0)).then_some(())
    });
    let checks = verify(&anvil.url(), &receipt).expect("the receipt verifies");
    assert!(checks.iter().any(|c| c.contains("anchors the receipt's root")), "{checks:?}");
    // The command line does the same, finding the node in the targets file.
    let file = crate::support::receipt_files(&root, "n").into_iter().next().expect("a receipt file");
    let (code, out) = crate::support::run_verify(&root, &file, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("VERIFIED"), "{out}");
    // A node that cannot be asked proves nothing either way: unverifiable (2), not failed (1).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let (code, out) = crate::support::run_verify(&root, &file, &["--rpc", &format!("http://{dead}/")]);
    assert_eq!(code, 2, "{out}");
    let mut tampered = receipt.clone();
    tampered["root"] = json!(format!("sha256:{}", root_hex(8)));
    assert!(
        matches!(verify(&anvil.url(), &tampered), Err(vmsh_scheduler::model::evidence::CheckError::Mismatch(_))),
        "a receipt for another root must fail"
    );
    let mut moved = receipt.clone();
    moved["attestation"]["blockNumber"] = json!(999);
    assert!(
        matches!(verify(&anvil.url(), &moved), Err(vmsh_scheduler::model::evidence::CheckError::Mismatch(_))),
        "a receipt naming another block must fail"
    );
}

#[test]
fn a_pending_anchor_is_not_sent_again_when_its_cadence_comes_round() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1s", 2));
    let s = Scheduler::start(&root);
    wait_for(LONG, "the transaction in the mempool", || pending(&s, "n").map(drop));
    // Several periods pass while it waits.
    let t0 = last_tick(&s).expect("tick");
    wait_for(LONG, "3 s of ticks", || (last_tick(&s) >= Some(t0 + 3_000)).then_some(()));
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1, "one transaction only");
    assert_eq!(anvil.pending_hashes().len(), 1);
    anvil.mine(2);
    wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
}

#[test]
fn a_restart_while_pending_resumes_waiting_without_a_second_transaction() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1h", 2));
    let mut s = Scheduler::start(&root);
    let tx = wait_for(LONG, "the transaction in the mempool", || pending_tx(&s, "n"));
    s.kill9();
    let s = Scheduler::start(&root);
    s.wait_log("resuming an attempt interrupted by the last shutdown or crash");
    wait_for(LONG, "the resumed anchor to be pending again", || pending(&s, "n").map(drop));
    anvil.mine(2);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    assert_eq!(receipt["attestation"]["txHash"], tx, "the same transaction");
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1, "no second transaction");
}

#[test]
fn a_dropped_transaction_is_sent_again_once_and_counted() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1h", 1));
    let s = Scheduler::start(&root);
    let first = wait_for(LONG, "the transaction in the mempool", || pending_tx(&s, "n"));
    anvil.rpc("anvil_dropTransaction", json!([first]));
    // The nonce is free again, so the re-sent transaction may well be byte-identical.
    wait_for(LONG, "the re-send to be counted", || {
        (metric(&s.metrics(), "vmsh_anchors_resent_total", &[("namespace", "n")]) == Some(1.0)).then_some(())
    });
    let second = wait_for(LONG, "the transaction back in the mempool", || anvil.pending_hashes().into_iter().next());
    anvil.mine(1);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    assert_eq!(receipt["attestation"]["txHash"], second);
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1, "one transaction landed");
}

#[test]
fn a_transaction_dropped_twice_fails_with_backoff() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1h", 1));
    let s = Scheduler::start_with(&root, &[("VMSH_BASE_BACKOFF", "30")]);
    let first = wait_for(LONG, "the transaction", || anvil.pending_hashes().into_iter().next());
    anvil.rpc("anvil_dropTransaction", json!([first]));
    wait_for(LONG, "the re-send", || {
        (metric(&s.metrics(), "vmsh_anchors_resent_total", &[("namespace", "n")]) == Some(1.0)).then_some(())
    });
    let second = wait_for(LONG, "the transaction back in the mempool", || anvil.pending_hashes().into_iter().next());
    anvil.rpc("anvil_dropTransaction", json!([second]));
    let c = wait_for(LONG, "the attempt to fail", || s.cadence("n", "fast").filter(|c| c.backoff == 1));
    assert_eq!(c.error().class, ErrorClass::Network, "{c}");
    assert!(c.error().message.contains("dropped again"), "{c}");
    assert!(c.pending.is_none(), "{c}");
}

/// Assembles a minimal contract whose `anchor(bytes32,bytes32,string,bool)` emits
/// `Anchored(bytes32 indexed root, bytes32 batchId)` and rejects every other call.
pub(crate) fn anchor_contract_initcode() -> String {
    use alloy::primitives::keccak256;
    let selector = &keccak256("anchor(bytes32,bytes32,string,bool)")[..4];
    let topic = keccak256("Anchored(bytes32,bytes32)");
    let mut runtime = vec![0x60, 0x00, 0x35, 0x60, 0xe0, 0x1c, 0x63];
    runtime.extend_from_slice(selector);
    runtime.extend_from_slice(&[0x14, 0x60, 0x13, 0x57, 0x60, 0x00, 0x80, 0xfd, 0x5b]); // EQ, JUMPI 0x13, REVERT
    runtime.extend_from_slice(&[0x60, 0x24, 0x35, 0x60, 0x00, 0x52]); // mem[0] = batchId
    runtime.extend_from_slice(&[0x60, 0x04, 0x35, 0x7f]); // topic1 = root, then PUSH32 topic0
    runtime.extend_from_slice(topic.as_slice());
    runtime.extend_from_slice(&[0x60, 0x20, 0x60, 0x00, 0xa2, 0x00]); // LOG2(0, 32), STOP
    let len = u8::try_from(runtime.len()).expect("short runtime");
    // CODECOPY the runtime to memory 0 and RETURN it.
    let mut init = vec![0x60, len, 0x80, 0x60, 0x0b, 0x60, 0x00, 0x39, 0x60, 0x00, 0xf3];
    init.extend_from_slice(&runtime);
    format!("0x{}", vmsh_scheduler::model::digest::to_hex(&init))
}

#[test]
fn a_contract_call_anchors_through_the_contract() {
    let anvil = Anvil::start(true);
    let hash = anvil.rpc("eth_sendTransaction", json!([{"from": FUNDED_ADDR, "data": anchor_contract_initcode()}]));
    let contract = wait_for(LONG, "the contract to be deployed", || {
        anvil.rpc("eth_getTransactionReceipt", json!([hash]))["contractAddress"].as_str().map(str::to_string)
    });
    let root = Root::new();
    setup(
        &root,
        &anvil.url(),
        FUNDED_KEY,
        &format!(", contract: \"{contract}\", memo: \"vmsh\""),
        &one_namespace("n", "1h", 1),
    );
    let _s = Scheduler::start(&root);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    let att = &receipt["attestation"];
    assert_eq!(att["contract"], true);
    assert_eq!(att["to"], contract);
    let tx_receipt = anvil.rpc("eth_getTransactionReceipt", json!([att["txHash"]]));
    assert_eq!(tx_receipt["status"], "0x1");
    assert_eq!(tx_receipt["logs"][0]["topics"][1], format!("0x{}", root_hex(7)), "the contract saw the root");
    verify(&anvil.url(), &receipt).expect("the receipt verifies");
}

#[test]
fn many_namespaces_anchoring_with_one_key_at_once_never_share_a_nonce() {
    let anvil = Anvil::start(true);
    let root = Root::new();
    let names: Vec<String> = (0..12).map(|i| format!("ns{i:02}")).collect();
    let cadences: String = names.iter().map(|n| one_namespace(n, "1h", 1)).collect();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &cadences);
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_WORKERS", "8")]);
    for n in &names {
        wait_for(LONG, &format!("{n}'s receipt"), || root.receipts(n).into_iter().next());
    }
    assert_eq!(anvil.nonce(FUNDED_ADDR), 12, "twelve transactions, nonces 0..11");
    let m = s.metrics();
    for n in &names {
        assert_eq!(metric(&m, "vmsh_anchors_failed_total", &[("namespace", n)]), Some(0.0), "{n} failed");
    }
}

fn first_error(s: &Scheduler, ns: &str) -> LastError {
    wait_for(LONG, "a failure", || s.cadence(ns, "fast")?.last_error)
}

#[test]
fn a_wrong_chain_id_is_a_validation_error() {
    let anvil = Anvil::start(true);
    let root = Root::new();
    root.anchors(&format!("eip155:\n  default: {{rpcUrl: \"{}\", key: \"{FUNDED_KEY}\"}}\n", anvil.url()))
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"eip155:1\", every: \"1h\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start(&root);
    let e = first_error(&s, "n");
    assert_eq!(e.class, ErrorClass::Validation, "{e:?}");
    assert!(e.message.contains("chain 31337, not 1"), "{e:?}");
    assert_eq!(anvil.nonce(FUNDED_ADDR), 0, "nothing was sent");
}

#[test]
fn an_unfunded_key_is_a_validation_error() {
    let anvil = Anvil::start(true);
    let root = Root::new();
    setup(&root, &anvil.url(), EMPTY_KEY, "", &one_namespace("n", "1h", 1));
    let s = Scheduler::start(&root);
    let e = first_error(&s, "n");
    assert_eq!(e.class, ErrorClass::Validation, "{e:?}");
    assert!(e.message.to_lowercase().contains("insufficient funds"), "{e:?}");
    assert!(root.receipts("n").is_empty());
}

#[test]
fn a_node_that_is_down_is_a_network_error() {
    // Bind and drop a listener: nothing answers on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let root = Root::new();
    setup(&root, &format!("http://127.0.0.1:{port}"), FUNDED_KEY, "", &one_namespace("n", "1h", 1));
    let s = Scheduler::start(&root);
    let e = first_error(&s, "n");
    assert_eq!(e.class, ErrorClass::Network, "{e:?}");
    let (code, _) = s.get("/livez");
    assert_eq!(code, 200, "a target that is down never fails liveness");
}

#[test]
fn the_signing_key_never_appears_in_logs_health_metrics_or_state() {
    let anvil = Anvil::start(true);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1h", 1));
    let mut s = Scheduler::start(&root);
    wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    let needle = &FUNDED_KEY[2..];
    let (_, health) = s.get("/health");
    assert!(!health.contains(needle), "key in /health");
    assert!(!s.metrics().contains(needle), "key in /metrics");
    s.signal(libc::SIGTERM);
    s.wait_exit(LONG);
    let logs = s.logs().iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(!logs.contains(needle), "key in logs");
    assert!(!root.state_text().contains(needle), "key in state");
    for r in root.receipts("n") {
        assert!(!r.to_string().contains(needle), "key in a receipt");
    }
}

#[test]
fn a_transaction_reorged_out_is_sent_again_once_and_counted() {
    let anvil = Anvil::start(false);
    anvil.mine(3);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, "", &one_namespace("n", "1h", 3));
    let s = Scheduler::start(&root);
    wait_for(LONG, "the transaction in the mempool", || pending(&s, "n").map(drop));
    anvil.mine(1);
    wait_for(LONG, "depth 1", || pending(&s, "n").is_some_and(|p| p.depth == 1).then_some(()));
    // Replace the last two blocks with empty ones: the transaction is gone from the chain.
    anvil.rpc("anvil_reorg", json!([2, []]));
    wait_for(LONG, "the re-send to be counted", || {
        (metric(&s.metrics(), "vmsh_anchors_resent_total", &[("namespace", "n")]) == Some(1.0)).then_some(())
    });
    wait_for(LONG, "the transaction back in the mempool", || anvil.pending_hashes().into_iter().next());
    anvil.mine(3);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    assert_eq!(receipt["attestation"]["confirmations"], 3, "a receipt only at the confirmation depth");
    verify(&anvil.url(), &receipt).expect("the receipt verifies on the new chain");
    assert_eq!(
        metric(&s.metrics(), "vmsh_anchor_reorgs_total", &[("namespace", "n")]),
        Some(1.0),
        "the reorg is counted"
    );
    assert!(s.log_with_msg("the target dropped the anchor; sending it again").is_some_and(|l| l["reorged"] == true));
}

/// anvil's second default account: a busier sender that outbids ours.
pub(crate) const RIVAL_ADDR: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
pub(crate) const GWEI: u128 = 1_000_000_000;

impl Anvil {
    /// Keeps one rival transaction in the mempool offering `fee_cap` wei per gas: a block with
    /// room for one transaction takes it before ours until ours offers more. (anvil ranks
    /// its mempool by fee cap; a real chain by tip. Replacements raise both.)
    pub(crate) fn outbid(&self, fee_cap: u128) {
        let waiting = self.rpc("txpool_content", json!([]))["pending"]
            .as_object()
            .is_some_and(|senders| senders.keys().any(|a| a.eq_ignore_ascii_case(RIVAL_ADDR)));
        if !waiting {
            self.rpc(
                "eth_sendTransaction",
                json!([{"from": RIVAL_ADDR, "to": RIVAL_ADDR, "gas": "0x5208",
                    "maxFeePerGas": format!("{fee_cap:#x}"), "maxPriorityFeePerGas": format!("{:#x}", fee_cap / 2)}]),
            );
        }
    }

    /// How many transactions of `addr` are mined.
    pub(crate) fn mined_nonce(&self, addr: &str) -> u64 {
        self.transaction_count(addr, "latest")
    }

    /// A transaction as the node has it.
    pub(crate) fn tx(&self, hash: &str) -> Value {
        self.rpc("eth_getTransactionByHash", json!([hash]))
    }
}

pub(crate) fn hex_u128(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("number")
}

/// Blocks with room for one transaction, and a rival always waiting with a higher tip: ours
/// stays in the mempool, unmined, as on a busy chain.
pub(crate) const ONE_TX_BLOCKS: &[&str] = &["--gas-limit", "30000"];
pub(crate) const FITS: &str = ", gasLimit: 25000";

fn replacements(s: &Scheduler) -> u32 {
    pending(s, "n").and_then(|p| p.fee).map_or(0, |f| f.replacements)
}

#[test]
fn a_transaction_outbid_in_the_mempool_is_replaced_at_a_higher_fee_until_it_lands() {
    let anvil = Anvil::start_with(false, ONE_TX_BLOCKS);
    let root = Root::new();
    let extra = format!("{FITS}, bumpAfter: 1 block, maxFeePerGas: 500 gwei");
    setup(&root, &anvil.url(), FUNDED_KEY, &extra, &one_namespace("n", "1h", 1));
    let s = Scheduler::start(&root);
    let first = wait_for(LONG, "our transaction in the mempool", || pending_tx(&s, "n"));
    let rival = hex_u128(&anvil.tx(&first)["maxFeePerGas"]) * 3;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while anvil.mined_nonce(FUNDED_ADDR) == 0 {
        assert!(std::time::Instant::now() < deadline, "never mined; pending: {:?}", pending(&s, "n"));
        let seen = replacements(&s);
        anvil.outbid(rival);
        anvil.mine(1);
        // Each block without ours makes the next look replace it, until ours is mined.
        wait_for(LONG, "a replacement, or ours mined", || {
            (replacements(&s) > seen || anvil.mined_nonce(FUNDED_ADDR) > 0).then_some(())
        });
    }
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    let landed = receipt["attestation"]["txHash"].as_str().expect("tx hash").to_string();
    assert_ne!(landed, first, "the receipt names the replacement that landed");
    let tx = anvil.tx(&landed);
    assert_eq!(tx["nonce"], "0x0", "a replacement keeps the nonce");
    assert!(hex_u128(&tx["maxFeePerGas"]) > rival, "it outbid the rival: {tx}");
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1, "one transaction of ours landed");
    verify(&anvil.url(), &receipt).expect("the receipt verifies");
    let bumped = metric(&s.metrics(), "vmsh_anchor_replacements_total", &[("namespace", "n")]).expect("counted");
    assert!(bumped >= 1.0, "{bumped}");
    let told = s.logs_with_msg("transaction replaced at a higher fee");
    assert_eq!(told.len() as f64, bumped, "each replacement told once");
}

#[test]
fn at_the_fee_cap_a_transaction_waits_says_so_and_lands_once_fees_drop() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    setup(&root, &anvil.url(), FUNDED_KEY, ", bumpAfter: 1 block, maxFeePerGas: 5 gwei", &one_namespace("n", "1h", 1));
    let s = Scheduler::start(&root);
    let first = wait_for(LONG, "our transaction in the mempool", || pending_tx(&s, "n"));
    assert!(hex_u128(&anvil.tx(&first)["maxFeePerGas"]) < 5 * GWEI, "the first offer is under the cap");
    // A fee spike: the base fee jumps past the cap, and anvil evicts what cannot pay it.
    anvil.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("{:#x}", 20 * GWEI)]));
    anvil.mine(1);
    let c = wait_for(LONG, "the cadence stuck at the cap", || {
        s.cadence("n", "fast").filter(|c| c.pending.as_ref().and_then(|p| p.fee.as_ref()).is_some_and(|f| f.at_cap))
    });
    let waiting = c.waiting.clone().unwrap_or_default();
    assert!(waiting.starts_with("stuck at the fee cap: offering 5 gwei per gas"), "{waiting}");
    assert!(waiting.contains("(cap 5 gwei)"), "{waiting}");
    let capped = wait_for(LONG, "the capped gauge", || {
        metric(&s.metrics(), "vmsh_anchor_fee_capped", &[("namespace", "n")]).filter(|v| *v == 1.0)
    });
    assert_eq!(capped, 1.0);
    let fee = metric(&s.metrics(), "vmsh_anchor_pending_fee", &[("namespace", "n"), ("unit", "wei_per_gas")]);
    assert_eq!(fee, Some((5 * GWEI) as f64));
    assert_eq!(s.logs_with_msg("stuck at the fee cap; waiting for fees to drop").len(), 1, "told once");
    assert!(root.receipts("n").is_empty());
    // Fees drop: the transaction at the cap is taken and mined.
    anvil.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("{:#x}", GWEI)]));
    anvil.mine(1);
    let in_pool = wait_for(LONG, "the capped transaction in the mempool", || anvil.pending_hashes().into_iter().next());
    anvil.mine(1);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    assert_eq!(receipt["attestation"]["txHash"], in_pool);
    assert_eq!(hex_u128(&anvil.tx(&in_pool)["maxFeePerGas"]), 5 * GWEI, "it paid no more than the cap");
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1);
    wait_for(LONG, "the capped gauge gone", || {
        metric(&s.metrics(), "vmsh_anchor_fee_capped", &[("namespace", "n")]).is_none().then_some(())
    });
}

/// A scheduler killed between recording a fee replacement and sending it: a proxy holds the
/// replacement's send, so the node only ever saw the first transaction.
struct CutOff {
    anvil: Anvil,
    /// The scheduler reaches the node through it: keep it while one runs.
    proxy: crate::support::lying_proxy::LyingProxy,
    root: Root,
    /// The first transaction, still in the mempool.
    first: String,
    /// The recorded replacement's hash.
    replacement: String,
}

impl CutOff {
    fn new() -> Self {
        let anvil = Anvil::start_with(false, ONE_TX_BLOCKS);
        let proxy = crate::support::lying_proxy::LyingProxy::start(anvil.addr(), Box::new(|_| None));
        let root = Root::new();
        let extra = format!("{FITS}, bumpAfter: 1 block, maxFeePerGas: 500 gwei");
        setup(&root, &proxy.url(), FUNDED_KEY, &extra, &one_namespace("n", "1h", 1));
        let mut s = Scheduler::start(&root);
        let first = wait_for(LONG, "our transaction in the mempool", || pending_tx(&s, "n"));
        // The next send, a replacement, is recorded and then never reaches the node.
        proxy.hold(true);
        anvil.outbid(hex_u128(&anvil.tx(&first)["maxFeePerGas"]) * 100);
        anvil.mine(1);
        let held = wait_for(LONG, "the replacement's send", || proxy.held().into_iter().next());
        s.kill9();
        let raw = vmsh_scheduler::model::digest::parse_hex(held[0].as_str().expect("raw").trim_start_matches("0x"))
            .expect("hex");
        let replacement = format!("{:#x}", alloy::primitives::keccak256(&raw));
        assert_eq!(anvil.pending_hashes(), vec![first.clone()], "the node never saw the replacement");
        proxy.hold(false);
        Self { anvil, proxy, root, first, replacement }
    }
}

/// One run of the crash scenario in `reliability::`: kill -9 between recording a fee
/// replacement and sending it. After a restart exactly that replacement is sent and mined,
/// and the nonce is spent once. Returns how many sends were cut off.
pub(crate) fn kill_9_between_recording_a_replacement_and_sending_it() -> u64 {
    let CutOff { anvil, proxy, root, replacement, .. } = CutOff::new();
    let _s = Scheduler::start(&root);
    let sent = wait_for(LONG, "the recorded replacement sent", || {
        anvil.pending_hashes().into_iter().find(|h| *h == replacement)
    });
    assert_eq!(anvil.pending_hashes(), vec![sent], "it replaced the first; nothing else was sent");
    anvil.mine(1);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    assert_eq!(receipt["attestation"]["txHash"], replacement.as_str(), "the very transaction recorded before the kill");
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1, "the nonce was spent once");
    assert_eq!(root.receipts("n").len(), 1);
    proxy.held().len() as u64
}

/// A transaction gone from every pool leaves a gap at its nonce that holds up the key's later
/// transactions: the gap is found and filled with the very transaction that left it.
#[test]
fn a_nonce_gap_is_filled_and_the_transactions_queued_behind_it_land() {
    let anvil = Anvil::start(false);
    let root = Root::new();
    let cadences = format!("{}{}", one_namespace("a", "1h", 1), one_namespace("b", "1h", 1));
    setup(&root, &anvil.url(), FUNDED_KEY, "", &cadences);
    let s = Scheduler::start(&root);
    let nonce_of = |ns: &str| pending(&s, ns).and_then(|p| p.data["nonce"].as_u64());
    wait_for(LONG, "both transactions in the mempool", || {
        (nonce_of("a").is_some() && nonce_of("b").is_some() && anvil.pending_hashes().len() == 2).then_some(())
    });
    let (first, second) = if nonce_of("a") == Some(0) { ("a", "b") } else { ("b", "a") };
    let gap = pending_tx(&s, first).expect("the first transaction");
    let behind = pending_tx(&s, second).expect("the second transaction");
    anvil.rpc("anvil_dropTransaction", json!([gap]));
    let queued = anvil.rpc("txpool_status", json!([]));
    assert_eq!(queued["pending"], "0x0", "nonce 1 waits behind the gap: {queued}");
    // Mined only once both are in the pool: the second, which anvil hid behind the gap, may
    // be on its way there again when the first is.
    wait_for(LONG, "the gap filled and the second transaction pending behind it", || {
        let pool = anvil.pending_hashes();
        (pool.contains(&gap) && pool.contains(&behind)).then_some(())
    });
    anvil.mine(1);
    for ns in [first, second] {
        wait_for(LONG, &format!("{ns}'s receipt"), || root.receipts(ns).into_iter().next());
    }
    assert_eq!(root.receipts(first)[0]["attestation"]["txHash"], gap.as_str(), "filled with the same transaction");
    // anvil hides a transaction queued behind a gap, so the second may have been sent again
    // too: byte for byte, the same transaction.
    assert_eq!(root.receipts(second)[0]["attestation"]["txHash"], behind.as_str());
    assert_eq!(anvil.mined_nonce(FUNDED_ADDR), 2, "nonces 0 and 1, nothing else");
    assert_eq!(metric(&s.metrics(), "vmsh_anchors_resent_total", &[("namespace", first)]), Some(1.0));
}

/// The transaction a replacement was meant to replace may still be mined (here the
/// replacement never reached the node before a crash): it completes the attempt, the receipt
/// names it, and the replacement is never sent after it.
#[test]
fn the_original_mined_before_its_replacement_completes_the_attempt_and_the_receipt_names_it() {
    let CutOff { anvil, proxy: _proxy, root, first, .. } = CutOff::new();
    // The original is mined while the scheduler is down.
    anvil.mine(1);
    assert_eq!(anvil.mined_nonce(FUNDED_ADDR), 1);
    let s = Scheduler::start(&root);
    let receipt = wait_for(LONG, "the receipt", || root.receipts("n").into_iter().next());
    assert_eq!(receipt["attestation"]["txHash"], first.as_str(), "the one that was mined");
    verify(&anvil.url(), &receipt).expect("the receipt verifies");
    wait_for(LONG, "the cadence idle", || s.cadence("n", "fast").filter(|c| c.pending.is_none()));
    assert!(anvil.pending_hashes().is_empty(), "the replacement was never sent after it");
    assert_eq!(anvil.nonce(FUNDED_ADDR), 1);
}

/// Keeps the last progress the driver recorded.
#[derive(Default)]
struct LastRecord(std::sync::Mutex<Option<Value>>);

impl vmsh_scheduler::anchor::ProgressSink for LastRecord {
    fn record<'a>(
        &'a self,
        progress: Value,
    ) -> vmsh_scheduler::anchor::BoxFuture<'a, Result<(), vmsh_scheduler::model::AnchorError>> {
        *self.0.lock().expect("sink") = Some(progress);
        Box::pin(async { Ok(()) })
    }
}

/// An attempt resumed after a restart whose transaction the network evicted (a base fee
/// above its fee cap) is not left waiting on a node that will never take it: recovery says
/// it is in no pool, and the send that follows replaces it at a higher fee, same nonce.
#[test]
fn a_resumed_attempt_whose_transaction_was_evicted_is_replaced_not_stuck() {
    use vmsh_scheduler::anchor::Driver;
    use vmsh_scheduler::anchor::eip155::{DEFAULT_BUMP_AFTER, EvmDriver, EvmTarget};
    use vmsh_scheduler::model::{AnchorRequest, CadenceKind, Recovery, Submitted, Target};
    let anvil = Anvil::start(false);
    let target = EvmTarget {
        rpc_url: anvil.url().as_str().into(),
        chain_id: None,
        contract: None,
        key: vmsh_scheduler::config::vars::Secret::new(FUNDED_KEY),
        persist: false,
        confirmations: 1,
        memo: String::new(),
        poll_interval: Duration::from_millis(200),
        gas_limit: None,
        bump_after: DEFAULT_BUMP_AFTER,
        max_fee_per_gas: Some(50 * GWEI),
        aggregate: None,
        concurrency: None,
    };
    let clock: std::sync::Arc<dyn vmsh_scheduler::clock::Clock> =
        std::sync::Arc::new(vmsh_scheduler::clock::ManualClock::new(0));
    let driver = EvmDriver::new("local", &target, Default::default(), clock).expect("driver");
    let mut req = AnchorRequest {
        namespace: "n".into(),
        cadence: CadenceKind::Fast,
        target: Target::parse("eip155:31337").expect("target"),
        batch_id: "b".into(),
        root: [7; 32],
        attempt_id: "a".into(),
        confirmations: None,
        policy_oid: None,
        progress: None,
        membership: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let sink = LastRecord::default();
    let sent = rt.block_on(driver.anchor(&req, &sink)).expect("sent");
    assert!(matches!(sent, Submitted::Pending(_)));
    let first = sink.0.lock().expect("sink").clone().expect("recorded");
    anvil.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("{:#x}", 20 * GWEI)]));
    anvil.mine(1);
    assert!(anvil.pending_hashes().is_empty(), "evicted");
    req.progress = Some(first.clone());
    assert_eq!(rt.block_on(driver.recover(&req)), Recovery::NotDone, "in no pool: not left waiting");
    let Submitted::Pending(p) = rt.block_on(driver.anchor(&req, &sink)).expect("replaced") else { panic!("pending") };
    let second = sink.0.lock().expect("sink").clone().expect("recorded");
    assert_eq!(second["nonce"], first["nonce"], "the same nonce");
    assert_eq!(second["replaced"], json!([first["txHash"]]), "recorded with what it replaces");
    assert_eq!(p.data["txHash"], second["txHash"]);
    assert!(anvil.pending_hashes().contains(&second["txHash"].as_str().expect("hash").to_string()));
    let fee = p.fee.expect("fee");
    assert!(fee.rate > first["maxFeePerGas"].as_u64().expect("fee") && fee.rate <= 50_000_000_000, "{fee:?}");
}
