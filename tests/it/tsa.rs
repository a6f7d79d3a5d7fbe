//! `rfc3161:` targets against a real TSA: OpenSSL's `openssl ts -reply` behind a loopback
//! HTTP endpoint ([`crate::support::tsa_server`]). The driver is tested directly for each good
//! and bad case, and once end to end through the scheduler binary.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use vmsh_scheduler::anchor::rfc3161::{TsaDriver, TsaTarget, verify_token};
use vmsh_scheduler::anchor::{Driver, NoProgress};
use vmsh_scheduler::health::NamespaceStatus;
use vmsh_scheduler::model::{AnchorError, AnchorRequest, ErrorClass, Submitted};
use vmsh_scheduler::model::{CadenceKind, Target};

use crate::support::tsa_server::{DEFAULT_POLICY, Mode, OTHER_POLICY, TestTsa};
use crate::support::{HealthParts, Root, Scheduler, root_hex, wait_for};

const ROOT: [u8; 32] = [0x42; 32];

fn target(url: &str, bundle: Option<&Path>) -> TsaTarget {
    TsaTarget {
        url: url.into(),
        policy_oid: None,
        trust_bundle: bundle.map(Path::to_path_buf),
        timeout: None,
        aggregate: None,
    }
}

fn request(root: [u8; 32], policy: Option<&str>) -> AnchorRequest {
    AnchorRequest {
        namespace: "ns".into(),
        cadence: CadenceKind::Fast,
        target: Target::parse("rfc3161:tsa").expect("target"),
        batch_id: "b1".into(),
        root,
        attempt_id: "attempt-1".into(),
        confirmations: None,
        policy_oid: policy.map(str::to_string),
        progress: None,
        membership: None,
    }
}

async fn anchor(t: &TsaTarget, req: &AnchorRequest) -> Result<Value, AnchorError> {
    let driver = TsaDriver::new("tsa", t).expect("driver");
    match driver.anchor(req, &NoProgress).await? {
        Submitted::Anchored(att) => {
            let info = verify_token(&token(&att.data), &req.root, None).expect("the token is well formed");
            assert_eq!(att.anchored_at, Some(info.gen_time_ms), "the anchor time is genTime");
            Ok(att.data)
        }
        other => panic!("a time-stamp is final at once, got {other:?}"),
    }
}

fn token(data: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(data["token"].as_str().expect("token")).expect("base64")
}

fn assert_fails(result: Result<Value, AnchorError>, class: ErrorClass, words: &str) {
    let e = result.expect_err("the anchor should fail");
    assert_eq!(e.class, class, "{e}");
    assert!(e.message.contains(words), "{:?} should mention {words:?}", e.message);
    assert!(e.message.starts_with("rfc3161.tsa (http://127.0.0.1:"), "names the entry and the host: {}", e.message);
}

#[tokio::test]
async fn anchors_without_a_trust_bundle() {
    let tsa = TestTsa::start();
    let data = anchor(&target(&tsa.url(), None), &request(ROOT, None)).await.expect("anchored");
    assert_eq!(data["verified"], false);
    assert_eq!(data["policy"], DEFAULT_POLICY);
    assert_eq!(data["imprintAlgorithm"], "sha256");
    assert_eq!(data["serialNumber"], "02", "OpenSSL counts on from its serial file's 01");
    assert_eq!(data["nonce"].as_str().map(str::len), Some(16), "{data}");
    assert!(data["tsa"].as_str().is_some_and(|n| n.contains("CN=Test TSA")), "{data}");
    let info = verify_token(&token(&data), &ROOT, None).expect("the stored token verifies against the root");
    assert!(!info.verified);
    // The query went out as RFC 3161 asks: SHA-256 of the root, our nonce, certReq, no policy.
    let seen = tsa.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].content_type, "application/timestamp-query");
    let query = tsa.describe_query(&seen[0].body);
    let imprint = vmsh_scheduler::model::digest::sha256_hex(&ROOT);
    let dump: String = query.lines().filter(|l| l.starts_with("    00")).map(|l| &l[11..58]).collect();
    assert_eq!(dump.replace([' ', '-'], ""), imprint, "{query}");
    for line in ["Version: 1", "Hash Algorithm: sha256", "Policy OID: unspecified", "Certificate required: yes"] {
        assert!(query.contains(line), "{line:?} in {query}");
    }
    let sent = query.lines().find_map(|l| l.strip_prefix("Nonce: 0x")).and_then(|h| u64::from_str_radix(h, 16).ok());
    let kept = data["nonce"].as_str().and_then(|h| u64::from_str_radix(h, 16).ok());
    assert_eq!(sent, kept, "the receipt keeps the nonce sent: {query}");
    assert!(sent.is_some());
}

#[tokio::test]
async fn anchors_and_verifies_with_a_trust_bundle() {
    let tsa = TestTsa::start();
    let data = anchor(&target(&tsa.url(), Some(&tsa.ca)), &request(ROOT, None)).await.expect("anchored");
    assert_eq!(data["verified"], true);
    let bundle = std::fs::read(&tsa.ca).expect("bundle");
    let info = verify_token(&token(&data), &ROOT, Some(&bundle)).expect("verifies");
    assert!(info.verified);
    assert_eq!(data["serialNumber"], info.serial_hex);
    // The same token does not verify for another root, nor against another CA.
    assert!(verify_token(&token(&data), &[0x43; 32], Some(&bundle)).is_err());
    let other = std::fs::read(&tsa.other_ca).expect("other bundle");
    assert!(verify_token(&token(&data), &ROOT, Some(&other)).is_err());
}

#[tokio::test]
async fn the_cadence_policy_overrides_the_target_policy() {
    let tsa = TestTsa::start();
    let mut t = target(&tsa.url(), Some(&tsa.ca));
    t.policy_oid = Some(DEFAULT_POLICY.into());
    let data = anchor(&t, &request(ROOT, Some(OTHER_POLICY))).await.expect("anchored");
    assert_eq!(data["policy"], OTHER_POLICY);
    let data = anchor(&t, &request(ROOT, None)).await.expect("anchored");
    assert_eq!(data["policy"], DEFAULT_POLICY);
}

#[tokio::test]
async fn a_token_for_another_imprint_is_a_validation_error() {
    let tsa = TestTsa::start();
    tsa.set_mode(Mode::OtherImprint);
    assert_fails(anchor(&target(&tsa.url(), None), &request(ROOT, None)).await, ErrorClass::Validation, "imprint");
}

#[tokio::test]
async fn a_replayed_reply_with_another_nonce_is_a_validation_error() {
    let tsa = TestTsa::start();
    let t = target(&tsa.url(), Some(&tsa.ca));
    anchor(&t, &request(ROOT, None)).await.expect("first anchor");
    // The same root again: the replayed token matches the imprint, not the new nonce.
    tsa.set_mode(Mode::Replay);
    assert_fails(anchor(&t, &request(ROOT, None)).await, ErrorClass::Validation, "nonce");
}

#[tokio::test]
async fn a_rejection_status_is_a_validation_error_naming_the_failure() {
    let tsa = TestTsa::start();
    let mut t = target(&tsa.url(), None);
    t.policy_oid = Some("1.9.9.9".into());
    let e = anchor(&t, &request(ROOT, None)).await;
    assert_fails(e.clone(), ErrorClass::Validation, "status rejection");
    assert_fails(e, ErrorClass::Validation, "unacceptedPolicy");
}

#[tokio::test]
async fn a_garbage_body_is_a_validation_error() {
    let tsa = TestTsa::start();
    tsa.set_mode(Mode::Garbage);
    let e = anchor(&target(&tsa.url(), None), &request(ROOT, None)).await;
    assert_fails(e.clone(), ErrorClass::Validation, "not a TimeStampResp");
    assert!(!e.expect_err("fails").message.contains("html"), "the body is not dumped into the message");
}

#[tokio::test]
async fn http_401_and_403_are_auth_errors() {
    let tsa = TestTsa::start();
    for code in [401, 403] {
        tsa.set_mode(Mode::Status(code));
        let e = anchor(&target(&tsa.url(), None), &request(ROOT, None)).await;
        assert_fails(e.clone(), ErrorClass::Auth, &format!("HTTP {code}"));
        assert!(e.expect_err("fails").refused, "nothing was anchored");
    }
}

#[tokio::test]
async fn http_5xx_is_a_network_error_and_other_4xx_a_validation_error() {
    let tsa = TestTsa::start();
    tsa.set_mode(Mode::Status(500));
    assert_fails(anchor(&target(&tsa.url(), None), &request(ROOT, None)).await, ErrorClass::Network, "HTTP 500");
    tsa.set_mode(Mode::Status(404));
    assert_fails(anchor(&target(&tsa.url(), None), &request(ROOT, None)).await, ErrorClass::Validation, "HTTP 404");
}

#[tokio::test]
async fn a_tsa_that_is_down_is_a_network_error() {
    // A port that was free a moment ago and has no listener now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let url = format!("http://{addr}/");
    assert_fails(anchor(&target(&url, None), &request(ROOT, None)).await, ErrorClass::Network, "cannot connect");
}

#[tokio::test]
async fn a_tsa_that_does_not_answer_in_time_is_a_network_error() {
    let tsa = TestTsa::start();
    tsa.set_mode(Mode::Hang);
    let mut t = target(&tsa.url(), None);
    t.timeout = Some(Duration::from_millis(300));
    assert_fails(anchor(&t, &request(ROOT, None)).await, ErrorClass::Network, "did not answer in time");
}

#[tokio::test]
async fn a_bundle_without_the_issuing_ca_is_a_validation_error() {
    let tsa = TestTsa::start();
    let e = anchor(&target(&tsa.url(), Some(&tsa.other_ca)), &request(ROOT, None)).await;
    assert_fails(e, ErrorClass::Validation, "does not chain to the trust bundle");
}

#[test]
fn an_unreadable_trust_bundle_is_refused_when_the_driver_is_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let e = TsaDriver::new("tsa", &target("http://127.0.0.1:9/", Some(&missing))).err().expect("missing bundle");
    assert!(e.contains("trustBundle") && e.contains("missing.pem"), "{e}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").expect("write");
    let e = TsaDriver::new("tsa", &target("http://127.0.0.1:9/", Some(&empty))).err().expect("empty bundle");
    assert!(e.contains("empty.pem") && e.contains("no PEM certificate"), "{e}");
}

#[test]
fn the_scheduler_anchors_to_a_tsa_and_its_receipt_verifies() {
    let tsa = TestTsa::start();
    let root = Root::new();
    root.anchors(&format!("rfc3161:\n  tsa: {{url: \"{}\", trustBundle: \"{}\"}}\n", tsa.url(), tsa.ca.display()))
        .namespaces("namespaces:\n  dao:tsa:\n    cadence:\n      fast: {target: \"rfc3161:tsa\", every: \"1s\"}\n")
        .batch(Some("dao:tsa"), "0001.json", "b1", &root_hex(9));
    let s = Scheduler::start(&root);
    let receipt =
        wait_for(Duration::from_secs(20), "a receipt from the TSA", || root.receipts("dao:tsa").into_iter().next());
    assert_eq!(receipt["target"], "rfc3161:tsa");
    let att = &receipt["attestation"];
    assert_eq!(att["verified"], true, "{receipt}");
    let root_bytes = [9u8; 32];
    assert_eq!(receipt["root"], format!("sha256:{}", root_hex(9)));
    let bundle = std::fs::read(&tsa.ca).expect("bundle");
    let info = verify_token(&token(att), &root_bytes, Some(&bundle)).expect("the receipt's token verifies");
    assert!(info.verified);
    assert_eq!(receipt["timeMs"].as_i64(), Some(info.gen_time_ms), "the anchor time is genTime: {receipt}");
    let health = wait_for(Duration::from_secs(10), "/health to show the cadence ok", || {
        let h = s.health();
        let ns = h.namespace("dao:tsa")?;
        (ns.status == NamespaceStatus::Ok && ns.last_anchor.contains_key("fast")).then_some(h)
    });
    assert_eq!(health.cadence_of("dao:tsa", "fast").last_error, None, "{health}");

    // `vmsh-scheduler verify` checks the receipt with the target's trust bundle; a receipt
    // whose root was changed fails.
    let file = crate::support::receipt_files(&root, "dao:tsa").into_iter().next().expect("a receipt file");
    let (code, out) = crate::support::run_verify(&root, &file, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified against"), "{out}");
    let tampered = root.path().join("tampered.json");
    let text = std::fs::read_to_string(&file).expect("read receipt");
    std::fs::write(&tampered, text.replace(&root_hex(9), &root_hex(8))).expect("write");
    let (code, out) = crate::support::run_verify(&root, &tampered, &[]);
    assert_eq!(code, 1, "{out}");
}
