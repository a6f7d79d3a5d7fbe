//! Security, through the real binary: no secret leaves the process (logs, receipts,
//! `/health`, `/metrics`, the status page and command, the state file, stderr, `validate`,
//! `verify`, debug output), `exec` never goes through a shell, the files the scheduler
//! creates get restrictive modes whatever the umask, and the HTTP port changes nothing.
//!
//! Secrets are distinctive strings (`…S3cret…`, `APIKEY…`), so a test finds them wherever
//! they land; a failure names the secret and the place, never prints the secret's context.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use vmsh_scheduler::health::contract::LastError;
use vmsh_scheduler::model::ErrorClass;

use crate::support::echo_server::EchoServer;
use crate::support::fake_bitcoind::{FakeBitcoind, Login, Options};
use crate::support::http::read_request;
use crate::support::proc::{scheduler_pid, status_field};
use crate::support::report::report;
use crate::support::{
    Root, Scheduler, base_env, command, exec_targets, lines, receipt_files, root_hex, wait_for, wait_ticking,
    write_file,
};

const LONG: Duration = Duration::from_secs(20);

/// Two valid secp256k1 keys nobody funded: one comes from `${EVM_ANCHOR_KEY}`, one from a
/// keyFile.
const KEY_FROM_VAR: &str = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";
const KEY_FROM_FILE: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs a command to its end within [`LONG`] (killing it after that, and failing); returns
/// its exit code and everything it printed.
fn run(mut cmd: std::process::Command, what: &str) -> (Option<i32>, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start vmsh-scheduler");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let readers = [
        std::thread::spawn(move || {
            let mut t = Vec::new();
            let _ = out.read_to_end(&mut t);
            t
        }),
        std::thread::spawn(move || {
            let mut t = Vec::new();
            let _ = err.read_to_end(&mut t);
            t
        }),
    ];
    let deadline = std::time::Instant::now() + LONG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {LONG:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let text: Vec<u8> = readers.into_iter().flat_map(|r| r.join().expect("reader")).collect();
    (status.code(), String::from_utf8_lossy(&text).into_owned())
}

/// `user:password` as an HTTP basic-auth header carries it.
fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Fails naming every (secret, place) pair where a secret shows up. `secrets` are (name,
/// value); `places` are (name, text).
fn assert_no_secret(secrets: &[(&str, String)], places: &[(&str, String)]) {
    let mut found = Vec::new();
    for (place, text) in places {
        for (name, value) in secrets {
            assert!(value.len() >= 6, "secret {name} is too short to search for");
            if text.contains(value.as_str()) {
                found.push(format!("{name} in {place}"));
            }
        }
    }
    assert!(found.is_empty(), "secrets leaked: {}", found.join(", "));
}

/// Everything a running scheduler shows over HTTP, and the `status` command's table.
fn http_places(s: &Scheduler, root: &Root) -> Vec<(&'static str, String)> {
    let mut status = command(root, &base_env(root), &["status", "--url", &format!("http://{}", s.addr)]);
    status.env("NO_COLOR", "1");
    let (_, status) = run(status, "the status command");
    vec![
        ("/health", s.get("/health").1),
        ("/metrics", s.metrics()),
        ("/", s.get("/").1),
        ("/readyz", s.get("/readyz").1),
        ("/livez", s.get("/livez").1),
        ("/nope (404 page)", s.get("/nope").1),
        ("the status command", status),
    ]
}

/// Stops a scheduler with SIGTERM and returns what it left behind: logs, stderr, the state
/// file and every receipt.
fn stop_and_collect(mut s: Scheduler, root: &Root) -> Vec<(&'static str, String)> {
    s.signal(libc::SIGTERM);
    s.wait_exit(LONG);
    let mut receipts = String::new();
    for dir in std::fs::read_dir(root.path().join("out/anchors")).into_iter().flatten() {
        for file in std::fs::read_dir(dir.expect("entry").path()).expect("receipt folder") {
            receipts.push_str(&std::fs::read_to_string(file.expect("entry").path()).expect("receipt"));
        }
    }
    vec![
        ("logs", serde_json::to_string(&s.logs()).expect("logs")),
        ("stderr", s.stderr()),
        ("state file and its log", root.state_text()),
        ("receipts", receipts),
    ]
}

/// Waits until every namespace's cadence shows a failure, and returns them by namespace.
fn wait_failures(s: &Scheduler, namespaces: &[&str]) -> BTreeMap<String, LastError> {
    namespaces
        .iter()
        .map(|ns| {
            let e = wait_for(LONG, &format!("{ns} to fail"), || s.cadence(ns, "fast")?.last_error);
            (ns.to_string(), e)
        })
        .collect()
}

/// A namespaces file with one `fast` cadence per (namespace, target).
fn namespaces_yaml(entries: &[(&str, &str)], every: &str) -> String {
    let mut yaml = String::from("namespaces:\n");
    for (ns, target) in entries {
        let name = serde_json::to_string(ns).expect("name");
        yaml.push_str(&format!("  {name}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"{every}\"}}\n"));
    }
    yaml
}

// ---------------------------------------------------------------------------------------
// No secret in what the scheduler shows or writes
// ---------------------------------------------------------------------------------------

/// Every kind of secret the targets file can hold, each on a target that fails (nothing
/// listens on its port), so the error paths run: the EVM key from `${VAR}` and from a
/// keyFile, the bitcoind password written out, from a file, in the URL's userinfo and from a
/// cookie file, and API keys in URL paths and queries.
#[test]
fn no_secret_reaches_logs_health_metrics_state_or_stderr_when_targets_fail() {
    let d = dead_port();
    let root = Root::new();
    write_file(&root.path().join("secrets/evm.key"), &format!("{KEY_FROM_FILE}\n"));
    write_file(&root.path().join("secrets/btc.pw"), "pwfile-S3cret-2\n");
    write_file(&root.path().join("secrets/.cookie"), "__cookie__:cookie-S3cret-4f1e9a\n");
    root.anchors(&format!(
        r#"
eip155:
  "1": {{rpcUrl: "http://127.0.0.1:{d}/v3/APIKEY123", key: "${{EVM_ANCHOR_KEY}}", pollInterval: 200ms}}
  "2": {{rpcUrl: "http://127.0.0.1:{d}/", keyFile: secrets/evm.key}}
btc:
  explicit: {{rpcUrl: "http://127.0.0.1:{d}/", network: regtest, rpcUser: vmsh, rpcPassword: "explicit-S3cret-1"}}
  pwfile: {{rpcUrl: "http://127.0.0.1:{d}/", network: regtest, rpcUser: vmsh, rpcPasswordFile: secrets/btc.pw}}
  userinfo: {{rpcUrl: "http://vmsh:urlpass-S3cret-3@127.0.0.1:{d}/", network: regtest}}
  cookie: {{rpcUrl: "http://127.0.0.1:{d}/", network: regtest, cookieFile: secrets/.cookie}}
  apikey: {{rpcUrl: "http://127.0.0.1:{d}/btc/BTCAPIKEY789?apikey=BTCQUERY456", network: regtest, rpcUser: vmsh, rpcPassword: "${{BTC_RPC_PASSWORD}}"}}
rfc3161:
  tsa: {{url: "http://127.0.0.1:{d}/tsa/TSAAPIKEY321?token=TSAQUERY654"}}
"#
    ))
    .namespaces(&namespaces_yaml(
        &[
            ("evm-var", "eip155:1"),
            ("evm-file", "eip155:2"),
            ("btc-explicit", "btc:explicit"),
            ("btc-pwfile", "btc:pwfile"),
            ("btc-userinfo", "btc:userinfo"),
            ("btc-cookie", "btc:cookie"),
            ("btc-apikey", "btc:apikey"),
            ("tsa-apikey", "rfc3161:tsa"),
        ],
        "1s",
    ))
    .batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(
        &root,
        &[("EVM_ANCHOR_KEY", KEY_FROM_VAR), ("BTC_RPC_PASSWORD", "envpass-S3cret-5"), ("LOG_LEVEL", "trace")],
    );
    let failures = wait_failures(
        &s,
        &[
            "evm-var",
            "evm-file",
            "btc-explicit",
            "btc-pwfile",
            "btc-userinfo",
            "btc-cookie",
            "btc-apikey",
            "tsa-apikey",
        ],
    );
    for (ns, e) in &failures {
        assert_eq!(e.class, ErrorClass::Network, "{ns} failed otherwise than by the dead port: {e:?}");
    }
    // Retries run the error paths again (base backoff 0.4 s).
    wait_ticking(&s, 1_500, LONG);
    let secrets = vec![
        ("the ${VAR} EVM key", KEY_FROM_VAR[2..].to_string()),
        ("the keyFile EVM key", KEY_FROM_FILE[2..].to_string()),
        ("the explicit rpcPassword", "explicit-S3cret-1".to_string()),
        ("the rpcPasswordFile password", "pwfile-S3cret-2".to_string()),
        ("the password in the URL", "urlpass-S3cret-3".to_string()),
        ("the cookie", "cookie-S3cret-4f1e9a".to_string()),
        ("the ${VAR} rpcPassword", "envpass-S3cret-5".to_string()),
        ("the EVM API key in the URL path", "APIKEY123".to_string()),
        ("the btc API key in the URL path", "BTCAPIKEY789".to_string()),
        ("the btc API key in the URL query", "BTCQUERY456".to_string()),
        ("the TSA API key in the URL path", "TSAAPIKEY321".to_string()),
        ("the TSA token in the URL query", "TSAQUERY654".to_string()),
    ];
    let mut places = http_places(&s, &root);
    places.extend(stop_and_collect(s, &root));
    assert_no_secret(&secrets, &places);
}

/// A node that echoes the request back (in a JSON-RPC error message, or as the reply body):
/// the API keys in the URL and the basic-auth credentials it saw must not be repeated by the
/// scheduler.
#[test]
fn a_target_that_echoes_the_request_back_cannot_make_the_scheduler_repeat_a_secret() {
    let echo = EchoServer::start();
    let e = echo.addr;
    let root = Root::new();
    root.anchors(&format!(
        r#"
eip155:
  "1": {{rpcUrl: "http://{e}/v3/ECHOAPIKEY123", key: "${{EVM_ANCHOR_KEY}}", pollInterval: 200ms}}
btc:
  userinfo: {{rpcUrl: "http://vmsh:echo-urlpass-S3cret@{e}/", network: regtest}}
  explicit: {{rpcUrl: "http://{e}/btc/ECHOBTCKEY789", network: regtest, rpcUser: vmsh, rpcPassword: "echo-explicit-S3cret"}}
rfc3161:
  tsa: {{url: "http://{e}/tsa/ECHOTSAKEY321?token=ECHOTSAQUERY"}}
"#
    ))
    .namespaces(&namespaces_yaml(
        &[("evm", "eip155:1"), ("btc-userinfo", "btc:userinfo"), ("btc-explicit", "btc:explicit"), ("tsa", "rfc3161:tsa")],
        "1s",
    ))
    .batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(&root, &[("EVM_ANCHOR_KEY", KEY_FROM_VAR)]);
    wait_failures(&s, &["evm", "btc-userinfo", "btc-explicit", "tsa"]);
    let secrets = vec![
        ("the EVM key", KEY_FROM_VAR[2..].to_string()),
        ("the EVM API key in the URL path", "ECHOAPIKEY123".to_string()),
        ("the password in the URL", "echo-urlpass-S3cret".to_string()),
        ("the URL's credentials as a basic-auth header", basic("vmsh", "echo-urlpass-S3cret")),
        ("the explicit rpcPassword", "echo-explicit-S3cret".to_string()),
        ("the explicit credentials as a basic-auth header", basic("vmsh", "echo-explicit-S3cret")),
        ("the btc API key in the URL path", "ECHOBTCKEY789".to_string()),
        ("the TSA API key in the URL path", "ECHOTSAKEY321".to_string()),
        ("the TSA token in the URL query", "ECHOTSAQUERY".to_string()),
    ];
    let mut places = http_places(&s, &root);
    places.extend(stop_and_collect(s, &root));
    assert_no_secret(&secrets, &places);
}

/// Successful `btc:` anchors (against the fake bitcoind, final at 0 confirmations) with the
/// password in the URL, in a password file and in a cookie file: receipts, state, logs and
/// HTTP show none of them; nor does `verify --rpc` with credentials and an API key in its URL.
#[test]
fn receipts_state_and_verify_output_hold_no_credentials_after_successful_anchors() {
    let root = Root::new();
    let cookie = root.path().join("secrets/.cookie");
    std::fs::create_dir_all(cookie.parent().expect("parent")).expect("mkdir");
    let in_url = FakeBitcoind::with(Options {
        login: Login::UserPassword("vmsh".into(), "urlpass-S3cret-7".into()),
        ..Options::default()
    });
    let in_file = FakeBitcoind::with(Options {
        login: Login::UserPassword("vmsh".into(), "pwfile-S3cret-8".into()),
        ..Options::default()
    });
    let by_cookie = FakeBitcoind::with(Options { login: Login::Cookie(cookie.clone()), ..Options::default() });
    let cookie_password =
        std::fs::read_to_string(&cookie).expect("cookie").trim().split_once(':').expect("user:pw").1.to_string();
    write_file(&root.path().join("secrets/btc.pw"), "pwfile-S3cret-8\n");
    let url = |node: &FakeBitcoind, userinfo: &str| node.url().replace("http://", &format!("http://{userinfo}"));
    root.anchors(&format!(
        r#"
btc:
  inurl: {{rpcUrl: "{}", network: regtest, confirmations: 0}}
  infile: {{rpcUrl: "{}", network: regtest, confirmations: 0, rpcUser: vmsh, rpcPasswordFile: secrets/btc.pw}}
  cookie: {{rpcUrl: "{}", network: regtest, confirmations: 0, cookieFile: secrets/.cookie}}
"#,
        url(&in_url, "vmsh:urlpass-S3cret-7@"),
        url(&in_file, ""),
        url(&by_cookie, "")
    ))
    .namespaces(&namespaces_yaml(&[("in-url", "btc:inurl"), ("in-file", "btc:infile"), ("cookie", "btc:cookie")], "1h"))
    .batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(&root, &[("LOG_LEVEL", "trace")]);
    for ns in ["in-url", "in-file", "cookie"] {
        wait_for(LONG, &format!("{ns}'s receipt"), || root.receipts(ns).into_iter().next());
    }
    // `verify` against a node that is down, named with credentials and an API key.
    let receipt = receipt_files(&root, "in-url").into_iter().next().expect("a receipt file");
    let d = dead_port();
    let rpc = format!("http://vmsh:verify-S3cret-9@127.0.0.1:{d}/node/VERIFYAPIKEY?key=VERIFYQUERY");
    let verify = command(&root, &base_env(&root), &["verify", &receipt.display().to_string(), "--rpc", &rpc]);
    let (code, verified) = run(verify, "verify");
    // Exit 1 or 2: it fails either way (the code says "mismatch" or "not verifiable").
    assert!(matches!(code, Some(1 | 2)), "a node that is down cannot verify: {verified}");
    let secrets = vec![
        ("the password in the URL", "urlpass-S3cret-7".to_string()),
        ("its basic-auth header", basic("vmsh", "urlpass-S3cret-7")),
        ("the rpcPasswordFile password", "pwfile-S3cret-8".to_string()),
        ("the cookie's password", cookie_password),
        ("the password in verify's --rpc", "verify-S3cret-9".to_string()),
        ("the API key in verify's --rpc path", "VERIFYAPIKEY".to_string()),
        ("the API key in verify's --rpc query", "VERIFYQUERY".to_string()),
    ];
    let mut places = http_places(&s, &root);
    places.push(("verify's output", verified));
    places.extend(stop_and_collect(s, &root));
    assert!(places.iter().any(|(p, t)| *p == "receipts" && t.contains("\"txid\"")), "three btc receipts expected");
    assert_no_secret(&secrets, &places);
}

/// Runs `vmsh-scheduler validate` on the root's namespaces file with its targets file.
fn validate(root: &Root, extra: &[(&str, &str)]) -> (i32, String) {
    let mut env = base_env(root);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let (code, text) = run(command(root, &env, &["validate"]), "validate");
    (code.unwrap_or(-1), text)
}

/// Targets files broken in many ways, whose entries hold secrets (quoted, as
/// docs/CONFIGURATION.md writes them): one with values of the wrong shape (the parser stops at
/// those), one with values that are wrong. `validate`, a refused start and a rejected reload (logs, `/health`)
/// report each by field, never by value.
#[test]
fn a_broken_targets_file_is_reported_by_field_never_by_secret_value() {
    let root = Root::new();
    write_file(&root.path().join("secrets/evm.key"), "keyfile-S3cret-not-hex\n");
    let wrong_shape = r#"
eip155:
  typo: {rpcUrl: "http://127.0.0.1:1/", kee: "typo-S3cret-3"}
  wrong-type: {rpcUrl: ["http://u:list-S3cret-4@127.0.0.1/"], key: {inner: "map-S3cret-5"}}
btc:
  list-pw: {rpcUrl: "http://127.0.0.1:1/", rpcUser: u, rpcPassword: ["list-S3cret-8"]}
  bad-fee: {rpcUrl: "http://127.0.0.1:1/", rpcUser: u, rpcPassword: "fee-S3cret-11", feeRate: "fee-S3cret-12"}
exec:
  as-string: {command: "./anchor.sh --token cmd-S3cret-16"}
"#;
    let wrong_values = r#"
eip155:
  bad-key: {rpcUrl: "http://127.0.0.1:1/v3/BADAPIKEY1", key: "0xkey-S3cret-not-hex-1"}
  bad-keyfile: {rpcUrl: "http://127.0.0.1:1/", keyFile: secrets/evm.key}
  both: {rpcUrl: "http://127.0.0.1:1/", key: "${EVM_ANCHOR_KEY}", keyFile: secrets/evm.key}
  bad-url: {rpcUrl: "ftp://u:ftp-S3cret-2@127.0.0.1/BADAPIKEY2", key: "${EVM_ANCHOR_KEY}"}
btc:
  both-auth: {rpcUrl: "http://u:both-S3cret-6@127.0.0.1:1/", rpcUser: u, rpcPassword: "both-S3cret-7", cookieFile: c}
  bad-network: {rpcUrl: "http://u:net-S3cret-9@127.0.0.1:1/BADAPIKEY3", network: "net-S3cret-10", rpcUser: u, rpcPassword: "${BTC_RPC_PASSWORD}"}
rfc3161:
  bad: {url: "gopher://tsa-S3cret-13/BADAPIKEY4", timeout: "tsa-S3cret-14"}
exec:
  bad-env: {command: ["true"], env: {TOKEN: ["env-S3cret-17"]}}
  bad-flag: {command: ["true"], clearEnv: "flag-S3cret-18", timeout: "0s"}
"#;
    let secrets = vec![
        ("an invalid key", "key-S3cret-not-hex-1".to_string()),
        ("an invalid key from a keyFile", "keyfile-S3cret-not-hex".to_string()),
        ("the ${VAR} EVM key", KEY_FROM_VAR[2..].to_string()),
        ("an API key in an rpcUrl", "BADAPIKEY".to_string()),
        ("a password in a non-http URL", "ftp-S3cret-2".to_string()),
        ("a value under a misspelt field", "typo-S3cret-3".to_string()),
        ("a URL in a list", "list-S3cret-4".to_string()),
        ("a key in a map", "map-S3cret-5".to_string()),
        ("a password in a URL beside other credentials", "both-S3cret-6".to_string()),
        ("an rpcPassword beside other credentials", "both-S3cret-7".to_string()),
        ("an rpcPassword in a list", "list-S3cret-8".to_string()),
        ("a password in a URL beside a bad network", "net-S3cret-9".to_string()),
        ("the ${VAR} rpcPassword", "envpass-S3cret-15".to_string()),
        ("an rpcPassword beside a bad feeRate", "fee-S3cret-11".to_string()),
        ("a TSA host", "tsa-S3cret-13".to_string()),
        ("a token in a command written as a string", "cmd-S3cret-16".to_string()),
        ("an exec env value in a list", "env-S3cret-17".to_string()),
        ("a string where a flag belongs", "flag-S3cret-18".to_string()),
    ];
    let vars = [("EVM_ANCHOR_KEY", KEY_FROM_VAR), ("BTC_RPC_PASSWORD", "envpass-S3cret-15")];
    root.namespaces(&namespaces_yaml(&[("n", "local:n")], "1h"));
    let mut places = Vec::new();
    let cases = [
        (wrong_shape, ["eip155.typo.kee", "btc.list-pw.rpcPassword", "exec.as-string.command"]),
        (wrong_values, ["eip155.bad-key", "btc.both-auth", "rfc3161.bad"]),
    ];
    for (file, fields) in cases {
        root.anchors(file);
        let (code, validated) = validate(&root, &vars);
        assert_eq!(code, 2, "{validated}");
        for field in fields {
            assert!(validated.contains(field), "validate names {field}:\n{validated}");
        }
        places.push(("validate", validated));
        let mut env = base_env(&root);
        env.extend(vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())));
        let (code, refused) = run(command(&root, &env, &[]), "a start on a broken targets file");
        assert_eq!(code, Some(2), "a broken targets file stops the start: {refused}");
        places.push(("a refused start", refused));
    }

    // Started on a good file, then each broken one arrives: rejected, reported, kept out.
    root.anchors("exec:\n  ok: {command: [\"true\"]}\n");
    let s = Scheduler::start_with(&root, &vars);
    for (file, fields) in cases {
        crate::support::write_file_atomic(&root.path().join("anchors.yaml"), file);
        wait_for(LONG, &format!("a reload rejected for {}", fields[0]), || {
            let errors = s.health().config?.last_reload?.errors;
            errors.iter().any(|e| e.contains(fields[0])).then_some(())
        });
        places.extend(http_places(&s, &root));
    }
    places.extend(stop_and_collect(s, &root));
    assert_no_secret(&secrets, &places);
}

/// YAML reads unquoted digits as a number and `true` as a boolean. A password (or a short
/// `0x…` key) written without quotes is such a value, and the "invalid type" message must
/// not quote it.
#[test]
fn a_secret_written_without_quotes_is_not_quoted_in_type_errors() {
    let root = Root::new();
    root.namespaces(&namespaces_yaml(&[("n", "btc:regtest")], "1h")).anchors(
        r#"
btc:
  regtest: {rpcUrl: "http://127.0.0.1:1/", network: regtest, rpcUser: vmsh, rpcPassword: 73190558246017}
eip155:
  default: {rpcUrl: "http://127.0.0.1:1/", key: 0x5eb1c0ffee}
"#,
    );
    let (code, validated) = validate(&root, &[]);
    assert_eq!(code, 2, "{validated}");
    assert!(validated.contains("btc.regtest.rpcPassword"), "the field is named:\n{validated}");
    let (code, start_up) = run(command(&root, &base_env(&root), &[]), "a start on a broken targets file");
    assert_eq!(code, Some(2), "a broken targets file stops the start: {start_up}");
    assert_no_secret(
        &[
            ("an unquoted numeric rpcPassword", "73190558246017".to_string()),
            // 0x5eb1c0ffee read as a YAML integer, printed in decimal.
            ("an unquoted hex key (as the decimal YAML reads it)", 0x5e_b1c0_ffee_u64.to_string()),
        ],
        &[("validate", validated), ("a refused start", start_up)],
    );
}

/// What a panic message or a `{:?}` in a log would print: the loaded targets and the errors
/// of a broken file, formatted with `Debug` and `Display`.
#[test]
fn debug_output_of_the_loaded_targets_and_their_errors_shows_no_secret() {
    use vmsh_scheduler::anchor::targets::TargetsConfig;
    use vmsh_scheduler::config::LoadContext;
    use vmsh_scheduler::config::vars::Vars;
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(&dir.path().join("evm.key"), KEY_FROM_FILE);
    write_file(&dir.path().join("btc.pw"), "pwfile-S3cret-2");
    let ctx = LoadContext {
        vars: Vars::new([
            ("EVM_ANCHOR_KEY".to_string(), KEY_FROM_VAR.to_string()),
            ("BTC_RPC_PASSWORD".to_string(), "envpass-S3cret-5".to_string()),
        ]),
        root: dir.path().to_path_buf(),
    };
    let good = r#"
eip155:
  "1": {rpcUrl: "http://127.0.0.1:1/v3/APIKEY123", key: "${EVM_ANCHOR_KEY}"}
  "2": {rpcUrl: "https://u:urlpass-S3cret-3@node.example/", keyFile: evm.key}
btc:
  a: {rpcUrl: "http://vmsh:urlpass-S3cret-6@127.0.0.1:1/", network: regtest}
  b: {rpcUrl: "http://127.0.0.1:1/?apikey=BTCQUERY456", rpcUser: vmsh, rpcPassword: "${BTC_RPC_PASSWORD}"}
  c: {rpcUrl: "http://127.0.0.1:1/", rpcUser: vmsh, rpcPasswordFile: btc.pw}
  d: {rpcUrl: "http://127.0.0.1:1/", rpcUser: vmsh, rpcPassword: "explicit-S3cret-1"}
rfc3161:
  tsa: {url: "http://127.0.0.1:1/tsa/TSAAPIKEY321?token=TSAQUERY654"}
exec:
  notary: {command: [notary-cli, submit], env: {NOTARY_TOKEN: "exectoken-S3cret-8"}}
"#;
    let config = TargetsConfig::parse(good.as_bytes(), Path::new("anchors.yaml"), &ctx).expect("a valid targets file");
    let broken = good.replace("network: regtest}", "network: regtest, bogus: \"bogus-S3cret-7\"}");
    let errors =
        TargetsConfig::parse(broken.as_bytes(), Path::new("anchors.yaml"), &ctx).expect_err("a broken targets file");
    let secrets = vec![
        ("the ${VAR} EVM key", KEY_FROM_VAR[2..].to_string()),
        ("the keyFile EVM key", KEY_FROM_FILE[2..].to_string()),
        ("an API key in a URL path", "APIKEY123".to_string()),
        ("a password in a URL", "urlpass-S3cret".to_string()),
        ("an API key in a URL query", "BTCQUERY456".to_string()),
        ("the ${VAR} rpcPassword", "envpass-S3cret-5".to_string()),
        ("the rpcPasswordFile password", "pwfile-S3cret-2".to_string()),
        ("the explicit rpcPassword", "explicit-S3cret-1".to_string()),
        ("the TSA API key", "TSAAPIKEY321".to_string()),
        ("the TSA token", "TSAQUERY654".to_string()),
        ("a value under an unknown field", "bogus-S3cret-7".to_string()),
        ("an exec target's environment value", "exectoken-S3cret-8".to_string()),
    ];
    assert_no_secret(
        &secrets,
        &[
            ("{:?} of the targets", format!("{config:?}")),
            ("{:#?} of the targets", format!("{config:#?}")),
            ("{:?} of the load context", format!("{ctx:?}")),
            ("{:?} of the errors", format!("{errors:?}")),
            ("the errors", errors.to_string()),
        ],
    );
    assert!(format!("{config:?}").contains("<redacted>"), "the test looked at the real thing");
    assert!(format!("{config:?}").contains("NOTARY_TOKEN"), "the exec environment is named, its values are not");
}

// ---------------------------------------------------------------------------------------
// exec never goes through a shell
// ---------------------------------------------------------------------------------------

/// Arguments with shell metacharacters reach the program as they are written, and namespace
/// names and batch ids with them reach it as they are in the VMSH_* variables; no second
/// command runs. The programs (`printf`, `printenv`) are no shells: a marker file could only
/// appear if the scheduler itself handed a string to one.
#[test]
fn exec_passes_metacharacters_literally_and_never_runs_a_shell() {
    let root = Root::new();
    let r = root.path().display().to_string();
    let args = [
        format!("; touch {r}/pwned-semicolon"),
        format!("$(touch {r}/pwned-subst)"),
        format!("`touch {r}/pwned-backtick`"),
        format!("| touch {r}/pwned-pipe"),
        "*".to_string(),
        format!("&& touch {r}/pwned-and > {r}/pwned-redirect"),
    ];
    let format_arg: String = (0..args.len()).map(|i| format!("\"a{i}\":\"%s\"")).collect::<Vec<_>>().join(",");
    let mut argv = vec!["printf".to_string(), format!("{{{format_arg}}}\\n")];
    argv.extend(args.iter().cloned());
    let ns_hostile = format!("ns $(touch {r}/pwned-ns); `touch {r}/pwned-ns2` | *");
    let batch_hostile = format!("b1; touch {r}/pwned-batch && $(touch {r}/pwned-batch2) `id` *");
    root.anchors(&format!(
        "exec:\n  argv: {{command: {}}}\n  ns: {{command: [\"printenv\", \"VMSH_NAMESPACE\"]}}\n  batch: {{command: [\"printenv\", \"VMSH_BATCH_ID\"]}}\n",
        serde_json::to_string(&argv).expect("argv")
    ))
    .namespaces(&namespaces_yaml(
        &[("args", "exec:argv"), (ns_hostile.as_str(), "exec:ns"), ("batch", "exec:batch")],
        "1h",
    ))
    .batch(Some("args"), "0001.json", "b1", &root_hex(1))
    .batch(Some(&ns_hostile), "0001.json", &batch_hostile, &root_hex(2))
    .batch(Some("batch"), "0001.json", &batch_hostile, &root_hex(3));
    let listing_before: BTreeSet<_> =
        std::fs::read_dir(root.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
    let s = Scheduler::start(&root);
    let receipt = |ns: &str| {
        wait_for(LONG, &format!("{ns}'s receipt"), || root.receipts(ns).into_iter().next())
            .get("attestation")
            .cloned()
            .expect("attestation")
    };
    let (argv_seen, ns_seen, batch_seen) = (receipt("args"), receipt(&ns_hostile), receipt("batch"));
    drop(s);
    let pwned: Vec<_> = std::fs::read_dir(root.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "a shell ran the metacharacters: {pwned:?}");
    for (i, arg) in args.iter().enumerate() {
        assert_eq!(argv_seen[format!("a{i}")], arg.as_str(), "argument {i} arrived changed: {argv_seen}");
    }
    assert_eq!(ns_seen["output"], ns_hostile.as_str(), "VMSH_NAMESPACE arrived changed");
    assert_eq!(batch_seen["output"], batch_hostile.as_str(), "VMSH_BATCH_ID arrived changed");
    let listing_after: BTreeSet<_> =
        std::fs::read_dir(root.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
    let new: Vec<_> = listing_after.difference(&listing_before).collect();
    assert!(new.iter().all(|n| *n == "state"), "unexpected files in the root: {new:?}");
}

// ---------------------------------------------------------------------------------------
// File modes
// ---------------------------------------------------------------------------------------

/// Every path under `dir`, folders included.
fn walk(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

/// With the umask cleared in the scheduler's process (so modes come from the code, not from
/// whoever started it): the state file and the lock files are 0600, receipts and journals 0640, and every folder
/// the scheduler created (the state folder's parents too) 0750.
#[test]
fn files_and_folders_the_scheduler_creates_have_restrictive_modes_whatever_the_umask() {
    let root = Root::new();
    let ns_odd = "dao:vault mesh/../x";
    root.namespaces(&namespaces_yaml(&[("dao:vaultmesh", "local:demo"), (ns_odd, "local:other journal")], "1s"))
        .batch(Some("dao:vaultmesh"), "0001.json", "b1", &root_hex(1))
        .batch(Some(ns_odd), "0001.json", "b2", &root_hex(2));
    let state = root.path().join("var/lib/vmsh/state/scheduler.json");
    let before = walk(root.path());
    let logs = tempfile::tempdir().expect("log folder");
    let mut env = base_env(&root);
    env.insert("VMSH_STATE".into(), state.display().to_string());
    let mut cmd = command(&root, &env, &[]);
    cmd.stdout(Stdio::from(std::fs::File::create(logs.path().join("stdout")).expect("log file")))
        .stderr(Stdio::from(std::fs::File::create(logs.path().join("stderr")).expect("log file")));
    // SAFETY: umask is async-signal-safe and touches only the child's own process state.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start vmsh-scheduler");
    let why = || {
        let read = |n| std::fs::read_to_string(logs.path().join(n)).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    };
    assert_eq!(status_field(child.id(), "Umask").as_deref(), Some("0000"), "the scheduler runs with umask 000");
    for ns in ["dao:vaultmesh", ns_odd] {
        wait_for(LONG, &format!("two receipts of {ns}"), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the scheduler exited with {status}: {}", why());
            }
            (root.receipts(ns).len() >= 2).then_some(())
        });
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    }
    let status = wait_for(LONG, "the scheduler to exit", || child.try_wait().expect("try_wait"));
    assert_eq!(status.code(), Some(0), "{}", why());

    let journals = root.path().join("out/journal");
    let anchors = root.path().join("out/anchors");
    let locks = [
        vmsh_scheduler::storage::lockfile::state_lock_path(&state),
        vmsh_scheduler::storage::lockfile::root_lock_path(root.path()),
    ];
    let created: Vec<PathBuf> = walk(root.path()).difference(&before).cloned().collect();
    let mut wrong = Vec::new();
    let (mut files, mut dirs) = (0, 0);
    for path in &created {
        let meta = std::fs::symlink_metadata(path).expect("metadata");
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() {
            dirs += 1;
            0o750
        } else if *path == state || locks.contains(path) {
            files += 1;
            0o600
        } else if path.starts_with(&anchors) || path.starts_with(&journals) {
            files += 1;
            0o640
        } else {
            wrong.push(format!("{} is a file the test does not expect", path.display()));
            continue;
        };
        if mode != want {
            wrong.push(format!("{} is {mode:04o}, not {want:04o}", path.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The state file, its lock, the root's lock, 2 journals and at least 4 receipts; var, lib,
    // vmsh, state, out/anchors, its 2 namespace folders and out/journal.
    assert!(locks.iter().all(|l| created.contains(l)), "the lock files: {created:#?}");
    assert!(files >= 9 && dirs >= 8, "too little was created to judge: {created:#?}");
    assert!(lines(&root.journal("other journal")).len() >= 2);
}

// ---------------------------------------------------------------------------------------
// The HTTP port changes nothing
// ---------------------------------------------------------------------------------------

/// One HTTP/1.1 request with a body; returns the status code.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).expect("read status line");
    status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{status_line:?}"))
}

/// What must not change: the state file's bytes, the config files and the running config's
/// hash, every journal line, and the anchor counters.
fn snapshot(s: &Scheduler, root: &Root) -> Vec<(String, String)> {
    let h = s.health();
    let attempts: f64 = s
        .metrics()
        .lines()
        .filter(|l| l.starts_with("vmsh_anchors_attempted_total") || l.starts_with("vmsh_anchors_succeeded_total"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    vec![
        ("state file and its log".into(), root.state_text()),
        ("namespaces file".into(), std::fs::read_to_string(root.path().join("namespaces.yaml")).expect("namespaces")),
        ("targets file".into(), std::fs::read_to_string(root.path().join("anchors.yaml")).expect("targets")),
        ("running config".into(), format!("{:?}", h.config)),
        ("journal".into(), lines(&root.journal("demo")).join("\n")),
        ("anchor counters".into(), attempts.to_string()),
        ("readiness".into(), s.get("/readyz").1),
    ]
}

/// Every path the server knows and some it does not, with every method that could change
/// something (and GETs with query strings and bodies that ask for changes): 404 or 405, and
/// nothing changes — no anchor, no reload, no state write, no drain.
#[test]
fn the_http_port_refuses_every_method_that_could_change_state_and_changes_nothing() {
    let root = Root::new();
    root.namespaces(&namespaces_yaml(&[("n", "local:demo"), ("failing", "exec:fail")], "1h"))
        .anchors(&exec_targets(&[("fail", "exit 75")]))
        .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_BASE_BACKOFF", "3600")]);
    wait_for(LONG, "the first anchor", || (lines(&root.journal("demo")).len() == 1).then_some(()));
    wait_for(LONG, "the failing namespace to back off", || {
        s.cadence("failing", "fast").is_some_and(|c| c.backoff == 1).then_some(())
    });
    // Quiet: nothing is due for an hour, so nothing may change from here on.
    wait_ticking(&s, 500, LONG);
    let quiet = snapshot(&s, &root);
    wait_ticking(&s, 500, LONG);
    assert_eq!(snapshot(&s, &root), quiet, "the scheduler is not quiet to begin with; the test cannot judge");

    let known = ["/", "/health", "/metrics", "/livez", "/readyz"];
    let unknown = [
        "/reload",
        "/anchor",
        "/api/v1/anchor",
        "/admin",
        "/shutdown",
        "/state",
        "/config",
        "/health/",
        "/metrics/reset",
        "/namespaces/n/anchor",
        "/%2e%2e/state/scheduler.json",
        "/../anchors.yaml",
    ];
    let body = r#"{"namespace":"n","cadence":"fast","action":"anchor","reload":true,"reset":true}"#;
    let mut wrong = Vec::new();
    let mut expect = |method: &str, path: &str, body: &str, ok: &dyn Fn(u16) -> bool| {
        let code = request(s.addr, method, path, body);
        if !ok(code) {
            wrong.push(format!("{method} {path} with a {}-byte body answered {code}", body.len()));
        }
    };
    // Not allowed (405) or not there (404); a request with a body may be refused as such
    // (413) before its method is looked at.
    let refused = |code: u16| code == 404 || code == 405;
    let refused_with_body = |code: u16| refused(code) || code == 413;
    for path in known.iter().chain(unknown.iter()) {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            expect(method, path, "", &refused);
            expect(method, path, body, &refused_with_body);
        }
        // Methods nobody should need here: refused one way or another, never served.
        for method in ["TRACE", "OPTIONS", "PROPFIND", "MKCOL", "FOO"] {
            expect(method, path, "", &|code| code >= 400);
        }
    }
    // GETs that ask for changes are served as plain GETs (/readyz may say 503 by design) or,
    // with a body, refused.
    let served = |code: u16| (200..300).contains(&code) || code == 503;
    for path in known {
        for query in ["?reload=1", "?anchor=n&cadence=fast", "?drain=true&shutdown=1", "?reset=all"] {
            expect("GET", &format!("{path}{query}"), "", &served);
            expect("GET", &format!("{path}{query}"), body, &|code| served(code) || code == 413);
        }
    }
    for path in unknown {
        expect("GET", path, "", &|code| code == 404);
        expect("GET", path, body, &|code| code == 404 || code == 413);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    wait_ticking(&s, 1_000, LONG);
    let after = snapshot(&s, &root);
    for ((what, was), (_, now)) in quiet.iter().zip(&after) {
        assert_eq!(now, was, "the {what} changed after the requests");
    }
    assert_eq!(s.get("/readyz").0, 200, "still ready");
    let attempted = crate::support::metric(&s.metrics(), "vmsh_anchors_attempted_total", &[("namespace", "n")]);
    assert_eq!(attempted, Some(1.0), "one anchor, the first");
}

// ---------------------------------------------------------------------------------------
// One owner per state file and per root
// ---------------------------------------------------------------------------------------

/// Runs the binary to its end with `env` (killing it after [`LONG`]); exit code, stdout, stderr.
fn run_split(root: &Root, env: &BTreeMap<String, String>) -> (Option<i32>, String, String) {
    let child = command(root, env, &[]).spawn().expect("start vmsh-scheduler");
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    let deadline = std::time::Instant::now() + LONG;
    while !waiter.is_finished() {
        if std::time::Instant::now() > deadline {
            // SAFETY: killing our own child, not yet reaped (the waiter still waits for it).
            unsafe {
                libc::kill(i32::try_from(pid).expect("pid"), libc::SIGKILL);
            }
            panic!("the second scheduler did not exit within {LONG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().expect("waiter");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A second process on the same state file, and one with its own state file but the same
/// root (whose journals and receipts it would interleave), both exit 5 with one line naming
/// the lock file and the first process's pid and host, and touch nothing: the first keeps
/// anchoring, its journal stays one unbroken chain and every receipt verifies.
#[test]
fn a_second_process_on_one_state_file_or_root_exits_5_naming_the_lock_holder() {
    let root = Root::new();
    root.namespaces(&namespaces_yaml(&[("lock:a", "local:shared"), ("lock:b", "local:shared")], "1s")).batch(
        None,
        "0001.json",
        "b1",
        &root_hex(4),
    );
    let first = Scheduler::start(&root);
    let journal = root.journal("shared");
    wait_for(LONG, "the first anchors", || (lines(&journal).len() >= 2).then_some(()));
    let pid = scheduler_pid(root.path());
    let host = vmsh_scheduler::storage::lockfile::host_name();
    let state_lock = vmsh_scheduler::storage::lockfile::state_lock_path(&root.state_path());
    let root_lock = vmsh_scheduler::storage::lockfile::root_lock_path(root.path());
    let records = || [&state_lock, &root_lock].map(|p| std::fs::read_to_string(p).expect("lock record"));
    let before = records();
    assert!(before[0].starts_with(&format!("{pid} {host} ")), "the holder's record: {:?}", before[0]);

    let other_state = root.path().join("elsewhere/scheduler.json");
    let mut refused = 0;
    for (state, lock) in [(root.state_path(), &state_lock), (other_state.clone(), &root_lock)] {
        let mut env = base_env(&root);
        env.insert("VMSH_STATE".into(), state.display().to_string());
        let (code, stdout, stderr) = run_split(&root, &env);
        assert_eq!(code, Some(5), "stderr: {stderr}");
        let said: Vec<&str> = stderr.lines().collect();
        assert_eq!(said.len(), 1, "one line on stderr: {stderr}");
        for part in [lock.display().to_string(), format!("pid {pid}"), format!("host {host}")] {
            assert!(said[0].contains(&part), "{part:?} missing from: {}", said[0]);
        }
        assert!(!stdout.contains("vmsh-scheduler started"), "{stdout}");
        refused += 1;
    }
    assert_eq!(records(), before, "the refused processes left the holder's records alone");
    assert!(!other_state.exists(), "the refused process wrote no state");

    // The first runs on undisturbed: more anchors, one chain, every receipt verifiable.
    let seen = lines(&journal).len();
    wait_for(LONG, "more anchors after the refusals", || (lines(&journal).len() >= seen + 3).then_some(()));
    let mut s = first;
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0), "{}", s.stderr());
    let chain = vmsh_scheduler::anchor::local::verify_chain(&journal).expect("one unbroken chain");
    let entries = vmsh_scheduler::anchor::local::read_entries(&journal).expect("entries");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=chain.lines).collect::<Vec<_>>(), "sequence numbers in order, none twice");
    let ids: BTreeSet<&str> = entries.iter().map(|e| e.attempt_id.as_str()).collect();
    assert_eq!(ids.len(), entries.len(), "no attempt anchored twice");
    let receipts: Vec<PathBuf> = ["lock:a", "lock:b"].iter().flat_map(|ns| receipt_files(&root, ns)).collect();
    assert_eq!(receipts.len(), entries.len(), "one receipt per journal line");
    for receipt in &receipts {
        let (code, out) = crate::support::run_verify(&root, receipt, &[]);
        assert_eq!(code, 0, "{}: {out}", receipt.display());
    }
    report("a second process on one state file or root", refused, "pass", json!({"journal_lines": chain.lines}));
}

/// The kernel releases the lock with the process however it ends, so a restart right after
/// kill -9 starts at once and records itself as the new holder.
#[test]
fn after_kill_9_of_the_lock_holder_a_new_process_starts_at_once() {
    let root = Root::new();
    root.namespaces(&namespaces_yaml(&[("lock:k", "local:k")], "1s")).batch(None, "0001.json", "b1", &root_hex(5));
    let state_lock = vmsh_scheduler::storage::lockfile::state_lock_path(&root.state_path());
    let mut restarts = 0;
    for _ in 0..3 {
        let mut s = Scheduler::start(&root);
        let pid = scheduler_pid(root.path());
        let record = std::fs::read_to_string(&state_lock).expect("lock record");
        assert!(record.starts_with(&format!("{pid} ")), "the new holder's record: {record:?}");
        let journal = root.journal("k");
        let seen = lines(&journal).len();
        wait_for(LONG, "an anchor", || (lines(&journal).len() > seen).then_some(()));
        s.kill9();
        restarts += 1;
    }
    vmsh_scheduler::anchor::local::verify_chain(&root.journal("k")).expect("one unbroken chain");
    report("restart right after kill -9 of the lock holder", restarts, "pass", json!({}));
}

// ---------------------------------------------------------------------------------------
// Targets that echo what they were sent, in any encoding
// ---------------------------------------------------------------------------------------

/// How `secret` can still be read out of `text`, if it can: as it is, percent-decoded,
/// form-decoded, or base64-decoded (either alphabet, padded or not) from any run of base64
/// characters at any alignment — the forms an echoing target may give it back in — and the
/// same again inside what one decoding gave (a basic-auth header in a base64 dump).
fn recoverable(text: &str, secret: &str) -> Option<String> {
    recoverable_within(text, secret, 2)
}

fn recoverable_within(text: &str, secret: &str, depth: usize) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let percent_decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()).filter(|_| bytes[i] == b'%') {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let decoded = [
        ("as it is", text.to_string()),
        ("percent-decoded", percent_decode(text)),
        ("form-decoded", percent_decode(&text.replace('+', " "))),
    ];
    if let Some((how, _)) = decoded.iter().find(|(_, d)| d.contains(secret)) {
        return Some(how.to_string());
    }
    if depth == 0 {
        return None;
    }
    for (how, d) in &decoded[..2] {
        for run in d.split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_".contains(c))) {
            for skip in 0..4.min(run.len()) {
                let part = &run[skip..];
                for part in [part, &part[..part.len() / 4 * 4]] {
                    for bytes in [STANDARD_NO_PAD.decode(part), URL_SAFE_NO_PAD.decode(part)].into_iter().flatten() {
                        let inner = String::from_utf8_lossy(&bytes);
                        if let Some(deeper) = recoverable_within(&inner, secret, depth - 1) {
                            return Some(format!("{how}, base64-decoded, {deeper}"));
                        }
                    }
                }
            }
        }
    }
    None
}

/// Fails naming every (secret, place, how) where a secret can be read back.
fn assert_unrecoverable(secrets: &[(&str, &str)], places: &[(String, String)]) {
    let mut found = Vec::new();
    for (place, text) in places {
        for (name, value) in secrets {
            assert!(value.len() >= 6, "secret {name} is too short to search for");
            if let Some(how) = recoverable(text, value) {
                found.push(format!("{name} in {place} ({how})"));
            }
        }
    }
    assert!(found.is_empty(), "secrets leaked: {}", found.join(", "));
}

/// The forms an [`EncodingEcho`] gives a request back in, by the first segment of its path.
const ECHO_FORMS: [&str; 4] = ["plain", "pct", "b64", "b64url"];

/// `seen` as the echo gives it back for `form` (see [`ECHO_FORMS`]).
fn echo_encode(form: &str, seen: &[u8]) -> String {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    match form {
        "pct" => seen
            .iter()
            .map(|b| if b.is_ascii_alphanumeric() { char::from(*b).to_string() } else { format!("%{b:02X}") })
            .collect(),
        "b64" => STANDARD.encode(seen),
        "b64url" => URL_SAFE_NO_PAD.encode(seen),
        _ => String::from_utf8_lossy(seen).replace("\r\n", " | ").replace('\n', " | "),
    }
}

/// A DER TimeStampResp refusing the request (status 2, rejection) with `text` as its
/// statusString: the one free text an RFC 3161 reply carries.
fn tsa_rejection(text: &str) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n <= 0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }
    let status = [tlv(0x02, &[2]), tlv(0x30, &tlv(0x0c, text.as_bytes()))].concat();
    tlv(0x30, &tlv(0x30, &status))
}

/// A target that gives back everything it was sent — request line, every header (the
/// `Authorization` header first, so a shortened message still holds it) and the body —
/// encoded as the first segment of the request's path says ([`ECHO_FORMS`]): JSON-RPC calls
/// get it as a JSON-RPC error message, time-stamp queries as the status text of a rejection.
struct EncodingEcho(EchoServer);

impl EncodingEcho {
    fn start() -> Self {
        Self(EchoServer::answering(encoding_echo_one))
    }

    /// `http://<userinfo>HOST:PORT/<form><rest>`.
    fn url(&self, userinfo: &str, form: &str, rest: &str) -> String {
        format!("http://{userinfo}{}/{form}{rest}", self.0.addr)
    }
}

fn encoding_echo_one(mut stream: TcpStream) {
    let Some(request) = read_request(&mut stream, &AtomicBool::new(false)) else { return };
    let head = request.head();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let form = path.split('/').nth(1).unwrap_or("plain").to_string();
    let (auth, others): (Vec<&str>, Vec<&str>) =
        head.split("\r\n").partition(|l| l.to_ascii_lowercase().starts_with("authorization:"));
    let mut seen = [auth.join("\r\n"), others.join("\r\n")].join("\r\n").into_bytes();
    seen.extend_from_slice(request.body());
    let echo = format!("echo: {}", echo_encode(&form, &seen));
    let (status, kind, body) = match serde_json::from_slice::<Value>(request.body()) {
        Ok(call) if call.get("method").is_some() => (
            "500 Internal Server Error",
            "application/json",
            json!({"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": echo}})
                .to_string()
                .into_bytes(),
        ),
        _ => ("200 OK", "application/timestamp-reply", tsa_rejection(&echo)),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

/// What a stopped scheduler left behind, and what it showed over HTTP, as named places.
fn all_places(s: Scheduler, root: &Root) -> Vec<(String, String)> {
    let mut places: Vec<(String, String)> =
        http_places(&s, root).into_iter().map(|(p, t)| (p.to_string(), t)).collect();
    places.extend(stop_and_collect(s, root).into_iter().map(|(p, t)| (p.to_string(), t)));
    places
}

/// `verify RECEIPT --rpc URL` against each echo form; returns its output per form.
fn verify_through_echo(root: &Root, receipt: &Path, url_of: impl Fn(&str) -> String) -> Vec<(String, String)> {
    ECHO_FORMS
        .iter()
        .map(|form| {
            let rpc = url_of(form);
            let verify = command(root, &base_env(root), &["verify", &receipt.display().to_string(), "--rpc", &rpc]);
            let (code, out) = run(verify, "verify");
            assert!(matches!(code, Some(1 | 2)), "an echoing node cannot verify a receipt ({form}): {out}");
            (format!("verify's output through the {form} echo"), out)
        })
        .collect()
}

/// An EVM node (or a proxy in front of it) that echoes each request back, in plain text,
/// percent-encoded or base64-encoded, with credentials and API keys in its URL: the
/// basic-auth header they become, the URL's secrets and the signing key reach none of the
/// logs, `/health`, the state file and its log, receipts, and `verify --rpc`'s output.
#[test]
fn an_evm_node_that_echoes_requests_in_any_encoding_makes_the_scheduler_repeat_no_secret() {
    let echo = EncodingEcho::start();
    let anvil = crate::evm::Anvil::start(true);
    let root = Root::new();
    // `/` and a space in the password: the URL writes them percent-encoded.
    let userinfo = "evm-user-S3cret:evm%2Fpass%20S3cret@";
    let rest = "/v3/EVMPATHKEY-S3cret?apikey=EVMQUERY-S3cret";
    let mut entries = format!(
        "eip155:\n  \"31337\": {{rpcUrl: \"{}\", key: \"{}\", pollInterval: 200ms}}\n",
        anvil.url(),
        crate::evm::FUNDED_KEY
    );
    let mut namespaces = vec![("genuine".to_string(), "eip155:31337".to_string())];
    for (i, form) in ECHO_FORMS.iter().enumerate() {
        let chain = 7001 + i;
        entries.push_str(&format!(
            "  \"{chain}\": {{rpcUrl: \"{}\", key: \"${{EVM_ANCHOR_KEY}}\", pollInterval: 200ms}}\n",
            echo.url(userinfo, form, rest)
        ));
        namespaces.push((format!("evm-{form}"), format!("eip155:{chain}")));
    }
    let pairs: Vec<(&str, &str)> = namespaces.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    root.anchors(&entries).namespaces(&namespaces_yaml(&pairs, "1h")).batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(&root, &[("EVM_ANCHOR_KEY", KEY_FROM_VAR), ("LOG_LEVEL", "trace")]);
    let failing: Vec<&str> = pairs.iter().skip(1).map(|(n, _)| *n).collect();
    wait_failures(&s, &failing);
    wait_for(LONG, "the genuine receipt", || root.receipts("genuine").into_iter().next());
    let receipt = receipt_files(&root, "genuine").into_iter().next().expect("a receipt file");
    let mut places = verify_through_echo(&root, &receipt, |form| echo.url(userinfo, form, rest));
    places.extend(all_places(s, &root));
    assert_unrecoverable(
        &[
            ("the URL's user", "evm-user-S3cret"),
            ("the URL's password", "evm/pass S3cret"),
            ("the API key in the URL path", "EVMPATHKEY-S3cret"),
            ("the API key in the URL query", "EVMQUERY-S3cret"),
            ("the signing key", &KEY_FROM_VAR[2..]),
        ],
        &places,
    );
}

/// A bitcoind (or a proxy) that echoes each request back in any encoding, reached with the
/// password in the URL, in `rpcPassword` and in a cookie file: no form of any of them, nor of
/// the URL's API key, reaches what the scheduler shows or writes, nor `verify --rpc`.
#[test]
fn a_bitcoind_that_echoes_requests_in_any_encoding_makes_the_scheduler_repeat_no_secret() {
    let echo = EncodingEcho::start();
    let node = FakeBitcoind::start();
    let root = Root::new();
    write_file(&root.path().join("secrets/.cookie"), "__cookie__:btc-cookie-S3cret-9a7f\n");
    let rest = "/BTCPATHKEY-S3cret/";
    let mut entries = format!("btc:\n  genuine: {{rpcUrl: \"{}\", network: regtest, confirmations: 0}}\n", {
        node.url().replace("http://", "http://u:p@")
    });
    let mut namespaces = vec![("genuine".to_string(), "btc:genuine".to_string())];
    for form in ECHO_FORMS {
        let url = echo.url("btc-user-S3cret:btc%40url%20S3cret@", form, rest);
        entries.push_str(&format!("  url-{form}: {{rpcUrl: \"{url}\", network: regtest}}\n"));
        let url = echo.url("", form, rest);
        entries.push_str(&format!(
            "  pw-{form}: {{rpcUrl: \"{url}\", network: regtest, rpcUser: vmsh, rpcPassword: \"btc pw/S3cret\"}}\n"
        ));
        entries.push_str(&format!(
            "  cookie-{form}: {{rpcUrl: \"{url}\", network: regtest, cookieFile: secrets/.cookie}}\n"
        ));
        for kind in ["url", "pw", "cookie"] {
            namespaces.push((format!("btc-{kind}-{form}"), format!("btc:{kind}-{form}")));
        }
    }
    let pairs: Vec<(&str, &str)> = namespaces.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    root.anchors(&entries).namespaces(&namespaces_yaml(&pairs, "1h")).batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(&root, &[("LOG_LEVEL", "trace")]);
    let failing: Vec<&str> = pairs.iter().skip(1).map(|(n, _)| *n).collect();
    wait_failures(&s, &failing);
    wait_for(LONG, "the genuine receipt", || root.receipts("genuine").into_iter().next());
    let receipt = receipt_files(&root, "genuine").into_iter().next().expect("a receipt file");
    let mut places = verify_through_echo(&root, &receipt, |form| {
        echo.url("btc-user-S3cret:btc%40verify%20S3cret@", form, "/BTCVERIFYKEY-S3cret/")
    });
    places.extend(all_places(s, &root));
    assert_unrecoverable(
        &[
            ("the URL's user", "btc-user-S3cret"),
            ("the URL's password", "btc@url S3cret"),
            ("the rpcPassword", "btc pw/S3cret"),
            ("the cookie", "btc-cookie-S3cret-9a7f"),
            ("the API key in the URL path", "BTCPATHKEY-S3cret"),
            ("the password in verify's --rpc", "btc@verify S3cret"),
            ("the API key in verify's --rpc", "BTCVERIFYKEY-S3cret"),
        ],
        &places,
    );
}

/// A TSA that refuses every query with the whole request, encoded, as its status text: the
/// URL's credentials (and the basic-auth header they become) and API keys stay out of what
/// the scheduler shows or writes.
#[test]
fn a_tsa_that_echoes_requests_in_any_encoding_makes_the_scheduler_repeat_no_secret() {
    let echo = EncodingEcho::start();
    let root = Root::new();
    let mut entries = String::from("rfc3161:\n");
    let mut namespaces = Vec::new();
    for form in ECHO_FORMS {
        let url = echo.url("tsa-user-S3cret:tsa%2Bpass%20S3cret@", form, "/TSAPATHKEY-S3cret?token=TSAQUERY-S3cret");
        entries.push_str(&format!("  {form}: {{url: \"{url}\"}}\n"));
        namespaces.push((format!("tsa-{form}"), format!("rfc3161:{form}")));
    }
    let pairs: Vec<(&str, &str)> = namespaces.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    root.anchors(&entries).namespaces(&namespaces_yaml(&pairs, "1h")).batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(&root, &[("LOG_LEVEL", "trace")]);
    let failures = wait_failures(&s, &pairs.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    for (ns, e) in &failures {
        let message = &e.message;
        assert!(message.contains("echo: "), "{ns} did not fail on the echoed text: {message}");
    }
    let places = all_places(s, &root);
    assert_unrecoverable(
        &[
            ("the URL's user", "tsa-user-S3cret"),
            ("the URL's password", "tsa+pass S3cret"),
            ("the API key in the URL path", "TSAPATHKEY-S3cret"),
            ("the token in the URL query", "TSAQUERY-S3cret"),
        ],
        &places,
    );
}

/// `exec:` commands that print their environment — the entry's `env` values and the
/// scheduler's own variables, such as another target's key — on stderr and stdout, plain and
/// base64-encoded, failing or succeeding: none of it reaches the logs, `/health`, the state
/// file, receipts, or `verify`'s output.
#[test]
fn an_exec_command_that_prints_its_environment_makes_the_scheduler_repeat_no_secret() {
    let root = Root::new();
    let d = dead_port();
    let forms = r#"printf 'token %s b64 %s pair %s key %s\n' "$API_TOKEN" "$(printf %s "$API_TOKEN" | base64)" "$(printf 'user:%s' "$API_TOKEN" | base64)" "$EVM_ANCHOR_KEY""#;
    let script = |tail: &str| format!("env; env >&2; {forms}; {forms} >&2; {tail}");
    let json_last = r#"printf '{"token":"%s","key":"%s"}\n' "$API_TOKEN" "$EVM_ANCHOR_KEY""#;
    let mut entries = String::from("exec:\n");
    for (name, body) in [
        ("fails", script("exit 1")),
        ("fails-declared", script("exit 75")),
        ("succeeds-json", script(&format!("{json_last}; exit 0"))),
        ("succeeds-text", script("exit 0")),
    ] {
        let command = json!(["sh", "-c", body]);
        entries.push_str(&format!("  {name}: {{command: {command}, env: {{API_TOKEN: \"exec token/S3cret+1\"}}}}\n"));
    }
    // An entry no namespace uses: its key is in the scheduler's environment all the same.
    entries
        .push_str(&format!("eip155:\n  \"1\": {{rpcUrl: \"http://127.0.0.1:{d}/\", key: \"${{EVM_ANCHOR_KEY}}\"}}\n"));
    let names = ["fails", "fails-declared", "succeeds-json", "succeeds-text"];
    let pairs: Vec<(String, String)> = names.iter().map(|n| (format!("exec-{n}"), format!("exec:{n}"))).collect();
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    root.anchors(&entries).namespaces(&namespaces_yaml(&pairs, "1h")).batch(None, "0001.json", "b1", &root_hex(7));
    let s = Scheduler::start_with(&root, &[("EVM_ANCHOR_KEY", KEY_FROM_VAR), ("LOG_LEVEL", "trace")]);
    wait_failures(&s, &["exec-fails", "exec-fails-declared"]);
    let mut places = Vec::new();
    for ns in ["exec-succeeds-json", "exec-succeeds-text"] {
        wait_for(LONG, &format!("{ns}'s receipt"), || root.receipts(ns).into_iter().next());
        let receipt = receipt_files(&root, ns).into_iter().next().expect("a receipt file");
        let (_, out) = run(command(&root, &base_env(&root), &["verify", &receipt.display().to_string()]), "verify");
        places.push((format!("verify's output for {ns}"), out));
    }
    let json_receipt = root.receipts("exec-succeeds-json").remove(0);
    assert!(json_receipt["attestation"]["token"].is_string(), "the attestation keeps its shape: {json_receipt}");
    places.extend(all_places(s, &root));
    assert_unrecoverable(
        &[("the exec env value", "exec token/S3cret+1"), ("another target's key", &KEY_FROM_VAR[2..])],
        &places,
    );
}

/// Makes a named pipe at `path` (nothing ever writes to it: a reader that waits on it waits
/// forever).
fn fifo(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// A key file, a password file and a trust bundle that are named pipes: `validate` says so
/// at once, naming each field and path, instead of waiting forever for a writer.
#[test]
fn secret_and_bundle_files_that_are_named_pipes_are_refused_at_once() {
    let root = Root::new();
    for name in ["evm.key", "btc.pw", "bundle.pem"] {
        fifo(&root.path().join("secrets").join(name));
    }
    // The files of the entries, and (once the entries load) the bundle a namespace's target uses.
    let configs = [
        (
            r#"
eip155:
  "1": {rpcUrl: "http://127.0.0.1:1/", keyFile: secrets/evm.key}
btc:
  node: {rpcUrl: "http://127.0.0.1:1/", network: regtest, rpcUser: vmsh, rpcPasswordFile: secrets/btc.pw}
"#,
            namespaces_yaml(&[("evm", "eip155:1"), ("btc", "btc:node")], "1h"),
            vec![("keyFile", "evm.key"), ("rpcPasswordFile", "btc.pw")],
        ),
        (
            "rfc3161:\n  tsa: {url: \"http://127.0.0.1:1/\", trustBundle: secrets/bundle.pem}\n",
            namespaces_yaml(&[("tsa", "rfc3161:tsa")], "1h"),
            vec![("trustBundle", "bundle.pem")],
        ),
    ];
    for (targets, namespaces, fields) in configs {
        root.anchors(targets).namespaces(&namespaces);
        let (code, out) = validate(&root, &[]);
        assert_eq!(code, 2, "{out}");
        for (field, file) in fields {
            assert!(
                out.lines().any(|l| l.contains(field) && l.contains(file) && l.contains("not a regular file")),
                "{field} is not reported as a named pipe:\n{out}"
            );
        }
    }
}
