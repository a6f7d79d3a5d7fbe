//! `rfc3161:` targets against a real TSA: OpenSSL's `openssl ts -reply` behind a loopback
//! HTTP endpoint ([`crate::support::tsa_server`]). The driver is tested directly for each good
//! and bad case, and once end to end through the scheduler binary.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use vmsh_scheduler::anchor::rfc3161::{COOL_DOWN, TsaDriver, TsaTarget, TsaWatch, verify_token};
use vmsh_scheduler::anchor::{Driver, NoProgress};
use vmsh_scheduler::clock::ManualClock;
use vmsh_scheduler::health::NamespaceStatus;
use vmsh_scheduler::metrics::TsaBoard;
use vmsh_scheduler::model::{AnchorError, AnchorRequest, ErrorClass, Submitted};
use vmsh_scheduler::model::{CadenceKind, Target};

use crate::support::tsa_server::{DEFAULT_POLICY, Mode, OTHER_POLICY, TestTsa};
use crate::support::{HealthParts, Root, Scheduler, metric, root_hex, wait_for};

const ROOT: [u8; 32] = [0x42; 32];

fn target(url: &str, bundle: Option<&Path>) -> TsaTarget {
    TsaTarget { trust_bundle: bundle.map(Path::to_path_buf), ..TsaTarget::at(url) }
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

// ------------------------------------------------------------------------------------------
// Several TSAs per entry: failover, per-URL health, expiring certificates.

/// Where the manual clocks of these tests start.
const T0: i64 = 1_800_000_000_000;

/// An entry listing `urls`, in that order, checked against `bundle`.
fn listing(urls: &[String], bundle: Option<&Path>) -> TsaTarget {
    let mut t = target(&urls[0], bundle);
    t.urls = urls.iter().map(|u| u.as_str().into()).collect();
    t
}

/// A driver on a board telling time by `clock`, and that board.
fn watched(t: &TsaTarget, clock: &ManualClock) -> (TsaDriver, Arc<TsaBoard>) {
    let board = Arc::new(TsaBoard::new(Arc::new(clock.clone())));
    let watch = TsaWatch::new(Arc::clone(&board), vmsh_scheduler::telemetry::discard());
    (TsaDriver::watched("tsa", t, watch).expect("driver"), board)
}

/// Whether the token of attestation `data` for `root` was signed by `tsa` (each test TSA has
/// its own CA).
fn signed_by(data: &Value, root: &[u8; 32], tsa: &TestTsa) -> bool {
    let ca = std::fs::read(&tsa.ca).expect("the TSA's CA");
    verify_token(&token(data), root, Some(&ca)).is_ok()
}

async fn anchored_by(driver: &TsaDriver, req: &AnchorRequest) -> Value {
    match driver.anchor(req, &NoProgress).await.expect("anchored") {
        Submitted::Anchored(att) => att.data,
        other => panic!("a time-stamp is final at once, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tsa_that_failed_is_tried_last_until_its_cool_down_passes() {
    let (first, second) = (TestTsa::start(), TestTsa::start());
    first.set_mode(Mode::Status(503));
    let clock = ManualClock::new(T0);
    let (driver, board) = watched(&listing(&[first.url(), second.url()], None), &clock);
    let data = anchored_by(&driver, &request(ROOT, None)).await;
    assert!(signed_by(&data, &ROOT, &second), "the second TSA answered: {data}");
    assert_eq!((first.seen().len(), second.seen().len()), (1, 1));
    // The first is down: tried after the second while its cool-down lasts …
    first.set_mode(Mode::Honest);
    anchored_by(&driver, &request(ROOT, None)).await;
    assert_eq!((first.seen().len(), second.seen().len()), (1, 2), "the failed TSA was not asked first");
    let shown = board.snapshot();
    assert_eq!((shown[0].up, shown[0].consecutive_failures), (Some(false), 1));
    assert_eq!(shown[0].tried_last_until_ms, Some(T0 + COOL_DOWN.as_millis() as i64));
    // … and first again once it has passed.
    clock.advance(COOL_DOWN.as_millis() as i64);
    let data = anchored_by(&driver, &request(ROOT, None)).await;
    assert!(signed_by(&data, &ROOT, &first), "the first TSA answered: {data}");
    assert_eq!((first.seen().len(), second.seen().len()), (2, 2));
    let shown = board.snapshot();
    assert_eq!((shown[0].up, shown[0].consecutive_failures, shown[0].tried_last_until_ms), (Some(true), 0, None));
}

#[tokio::test]
async fn an_untrusted_token_is_never_stored_and_the_next_tsa_is_asked() {
    // A real TSA whose certificate chains to a CA outside the bundle, then one inside it.
    let (rogue, trusted) = (TestTsa::start(), TestTsa::start());
    let clock = ManualClock::new(T0);
    let (driver, board) = watched(&listing(&[rogue.url(), trusted.url()], Some(&trusted.ca)), &clock);
    let data = anchored_by(&driver, &request(ROOT, None)).await;
    assert_eq!(rogue.seen().len(), 1, "the rogue TSA was asked first");
    assert_eq!(data["verified"], true);
    assert!(signed_by(&data, &ROOT, &trusted), "the kept token is the trusted TSA's: {data}");
    assert!(!signed_by(&data, &ROOT, &rogue), "not the rogue's token");
    let error = board.snapshot()[0].last_error.clone().expect("the rogue TSA's failure");
    assert_eq!(error.class, ErrorClass::Validation);
    assert!(error.message.contains("does not chain to the trust bundle"), "{}", error.message);
}

#[tokio::test]
async fn when_every_tsa_fails_the_error_names_each_host_and_why_and_nothing_else() {
    let (failing, rogue, trusted) = (TestTsa::start(), TestTsa::start(), TestTsa::start());
    failing.set_mode(Mode::Status(500));
    let down = crate::support::tsa_server::closed_port_url().replace("http://", "http://vmsh:hunter2-secret@");
    let failing_url = format!("http://{}/v1/key-0123456789abcdef?token=s3cret-token", failing.addr);
    let t = listing(&[down.clone(), failing_url, rogue.url()], Some(&trusted.ca));
    let clock = ManualClock::new(T0);
    let (driver, board) = watched(&t, &clock);
    let e = driver.anchor(&request(ROOT, None), &NoProgress).await.expect_err("every TSA failed");
    let host = |url: &str| vmsh_scheduler::anchor::rfc3161::origin(url).expect("origin");
    let expected = [
        format!("{} (network): cannot connect to the TSA", host(&down)),
        format!("{}/… (network): the TSA failed (HTTP 500)", failing.origin()),
        format!("{} (validation): signer certificate", rogue.origin()),
    ];
    assert!(e.message.starts_with("rfc3161.tsa: all 3 TSAs failed: "), "{}", e.message);
    let mut at = 0;
    for part in &expected {
        let found = e.message[at..].find(part.as_str()).unwrap_or_else(|| panic!("{part:?} in order in {}", e.message));
        at += found + part.len();
    }
    assert!(e.message.contains("does not chain to the trust bundle"), "{}", e.message);
    for secret in ["hunter2", "vmsh:", "key-0123", "s3cret", "token="] {
        assert!(!e.message.contains(secret), "{secret} shown in {}", e.message);
    }
    assert_eq!(e.class, ErrorClass::Network, "a TSA that is down may be back by the next retry");
    assert!(!e.refused);
    let shown = board.snapshot();
    assert!(shown.iter().all(|u| u.up == Some(false) && u.consecutive_failures == 1), "{shown:?}");
    for u in &shown {
        let message = &u.last_error.as_ref().expect("an error").message;
        assert!(!message.contains("hunter2") && !message.contains("s3cret"), "{message}");
    }
}

#[test]
fn the_scheduler_fails_over_past_a_dead_and_an_untrusted_tsa_and_shows_each_in_health_and_metrics() {
    let (rogue, trusted) = (TestTsa::start(), TestTsa::start());
    let dead = crate::support::tsa_server::closed_port_url();
    let root = Root::new();
    root.anchors(&format!(
        "rfc3161:\n  tsa: {{urls: [\"{dead}\", \"{}\", \"{}\"], trustBundle: \"{}\"}}\n",
        rogue.url(),
        trusted.url(),
        trusted.ca.display()
    ))
    .namespaces("namespaces:\n  dao:tsa:\n    cadence:\n      fast: {target: \"rfc3161:tsa\", every: \"1s\"}\n")
    .batch(Some("dao:tsa"), "0001.json", "b1", &root_hex(9));
    let s = Scheduler::start(&root);
    let receipt =
        wait_for(Duration::from_secs(30), "a receipt from the TSA", || root.receipts("dao:tsa").into_iter().next());
    let att = &receipt["attestation"];
    assert_eq!(att["verified"], true, "{receipt}");
    assert!(signed_by(att, &[9; 32], &trusted), "the trusted TSA's token: {receipt}");

    let health = wait_for(Duration::from_secs(10), "/health to show the three TSAs", || {
        let h = s.health();
        (h.tsa.len() == 3 && h.tsa[2].up == Some(true)).then_some(h)
    });
    let urls: Vec<(&str, &str, Option<bool>)> =
        health.tsa.iter().map(|u| (u.entry.as_str(), u.url.as_str(), u.up)).collect();
    let dead_origin = vmsh_scheduler::anchor::rfc3161::origin(&dead).expect("origin");
    assert_eq!(
        urls,
        [
            ("tsa", dead_origin.as_str(), Some(false)),
            ("tsa", rogue.origin().as_str(), Some(false)),
            ("tsa", trusted.origin().as_str(), Some(true))
        ],
        "{health}"
    );
    let dead_error = health.tsa[0].last_error.as_ref().expect("why the dead TSA failed");
    assert!(dead_error.message.contains("cannot connect"), "{health}");
    let rogue_error = health.tsa[1].last_error.as_ref().expect("why the rogue TSA failed");
    assert!(rogue_error.message.contains("does not chain"), "{health}");
    assert!(health.tsa[0].tried_last_until_ms.is_some() && health.tsa[2].last_success_ms.is_some(), "{health}");
    assert!(health.tsa[2].cert_not_after_ms.is_some_and(|t| t > crate::support::now_ms()), "{health}");
    // The failed TSAs are tried last now: the next anchors go to the trusted one first. Only
    // its tokens are kept, however many anchors there are.
    let asked = rogue.seen().len();
    wait_for(Duration::from_secs(20), "two more receipts", || (root.receipts("dao:tsa").len() >= 3).then_some(()));
    assert_eq!(rogue.seen().len(), asked, "the rogue TSA cools down");
    for r in root.receipts("dao:tsa") {
        assert!(signed_by(&r["attestation"], &[9; 32], &trusted) && !signed_by(&r["attestation"], &[9; 32], &rogue));
    }

    let m = s.metrics();
    fn at(url: &str) -> [(&str, &str); 2] {
        [("target", "rfc3161:tsa"), ("url", url)]
    }
    assert_eq!(metric(&m, "vmsh_tsa_up", &at(&dead_origin)), Some(0.0), "{m}");
    assert_eq!(metric(&m, "vmsh_tsa_up", &at(&rogue.origin())), Some(0.0));
    assert_eq!(metric(&m, "vmsh_tsa_up", &at(&trusted.origin())), Some(1.0));
    let requests = |url: &str, result: &str| {
        let labels = [("result", result), ("target", "rfc3161:tsa"), ("url", url)];
        metric(&m, "vmsh_tsa_requests_total", &labels).expect("a request counter")
    };
    assert_eq!(requests(&dead_origin, "network"), 1.0);
    assert_eq!(requests(&rogue.origin(), "validation"), 1.0);
    assert!(requests(&trusted.origin(), "success") >= 3.0);
    let left = metric(&m, "vmsh_tsa_cert_expiry_seconds", &at(&trusted.origin())).expect("the certificate's expiry");
    assert!(left > 3649.0 * 86_400.0, "{left}");
    assert!(s.log_with_msg("a TSA failed; trying the next one").is_some());
    assert_promtool_accepts(&m);

    // `verify` checks such a receipt as any other.
    let file = crate::support::receipt_files(&root, "dao:tsa").into_iter().next().expect("a receipt file");
    let (code, out) = crate::support::run_verify(&root, &file, &[]);
    assert_eq!(code, 0, "{out}");
}

/// `promtool check metrics` finds nothing wrong with a /metrics page.
fn assert_promtool_accepts(page: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed: run scripts/install-test-deps.sh (Debian's prometheus package)");
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool finished");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

#[test]
fn a_tsa_certificate_expiring_within_the_window_is_exported_and_warned_about_once() {
    let tsa = TestTsa::start_expiring_in(10);
    let root = Root::new();
    root.anchors(&format!(
        "rfc3161:\n  soon: {{url: \"{0}\"}}\n  relaxed: {{url: \"{0}\", certExpiryWarnDays: 5}}\n",
        tsa.url()
    ))
    .namespaces(
        "namespaces:\n  a:\n    cadence:\n      fast: {target: \"rfc3161:soon\", every: \"1s\"}\n  \
         b:\n    cadence:\n      fast: {target: \"rfc3161:relaxed\", every: \"1s\"}\n",
    )
    .batch(None, "0001.json", "b1", &root_hex(5));
    let s = Scheduler::start(&root);
    wait_for(Duration::from_secs(30), "three anchors for each entry", || {
        (root.receipts("a").len() >= 3 && root.receipts("b").len() >= 3).then_some(())
    });
    let m = s.metrics();
    let origin = tsa.origin();
    for entry in ["soon", "relaxed"] {
        let target = format!("rfc3161:{entry}");
        let left = metric(&m, "vmsh_tsa_cert_expiry_seconds", &[("target", &target), ("url", &origin)])
            .unwrap_or_else(|| panic!("{target}'s certificate expiry in {m}"));
        assert!((9.0 * 86_400.0..=10.0 * 86_400.0).contains(&left), "{target}: {left}");
    }
    let window = |t: &str| metric(&m, "vmsh_tsa_cert_expiry_warning_seconds", &[("target", t)]);
    assert_eq!((window("rfc3161:soon"), window("rfc3161:relaxed")), (Some(30.0 * 86_400.0), Some(5.0 * 86_400.0)));
    let warned = s.logs_with_msg("a TSA's signing certificate expires soon; renew it, or trust its successor");
    assert_eq!(warned.len(), 1, "once, for the entry whose window it is in: {warned:?}");
    let line = &warned[0];
    assert_eq!(
        (&line["target"], &line["url"], &line["days_left"]),
        (&"rfc3161:soon".into(), &origin.into(), &9.into())
    );
    assert_eq!(line["level"], "warn", "{line}");
    assert!(line["signer"].as_str().is_some_and(|n| n.contains("CN=Test TSA")), "{line}");
    let health = s.health();
    let not_after = health.tsa.iter().find(|u| u.entry == "soon").and_then(|u| u.cert_not_after_ms).expect("notAfter");
    assert_eq!(line["not_after"].as_str(), Some(vmsh_scheduler::clock::rfc3339(not_after).as_str()));
}
