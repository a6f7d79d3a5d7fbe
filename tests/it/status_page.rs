//! The status page (`GET /`) in a real browser and `vmsh-scheduler status` in a terminal, both
//! against the real binary.
//!
//! The browser is Debian's `chromium`, run headless by the test: `--dump-dom` after the page's
//! script ran (`--virtual-time-budget` lets its timers and fetches run) shows what a person
//! would see, and `--screenshot` draws it. `VMSH_WRITE_SCREENSHOT=1` also saves the screenshot
//! as `docs/status-page.png` for docs/HTTP.md.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vmsh_scheduler::health::contract::ReloadResult;
use vmsh_scheduler::health::{NamespaceStatus, OverallStatus};

use crate::support::http::answer_once;
use crate::support::{
    HealthParts as _, Root, Scheduler, base_env, command, exec_targets, http_with_head, root_hex, wait_for, write_file,
};

const LONG: Duration = Duration::from_secs(20);

/// A namespace name that is markup: the page must show it as text.
const EVIL: &str = "<script>alert(1)</script>";

/// Three namespaces: one anchoring on three cadences, one failing (backing off), one waiting
/// for its first batch.
fn scenario() -> (Root, Scheduler) {
    let root = Root::new();
    root.namespaces(&format!(
        r#"
namespaces:
  dao:vaultmesh:
    cadence:
      fast: {{target: "local:fast", every: "1s"}}
      strong: {{target: "local:strong", every: "3*fast"}}
      cold: {{target: "local:cold", every: "1d"}}
  "{EVIL}":
    cadence:
      fast: {{target: "exec:notary", every: "1s"}}
  later:
    cadence:
      fast: {{target: "local:later", every: "1s"}}
"#
    ))
    // The strong cadence's journal aggregates: its row shows the leaf it was.
    .anchors(&format!(
        "{}local:\n  strong:\n    aggregate: {{window: 1s}}\n",
        exec_targets(&[("notary", "echo 'connect ECONNREFUSED 127.0.0.1:8545' >&2; exit 75")])
    ))
    .batch(Some("dao:vaultmesh"), "0001.json", "dao-0001", &root_hex(1))
    .batch(Some(EVIL), "0001.json", "evil-0001", &root_hex(2));
    // A long anchor timeout keeps the failing namespace `backing_off` (not yet `stale`) for the
    // whole test.
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_TIMEOUT_S", "60")]);
    wait_for(LONG, "every namespace to have reported, the failing one backing off", || {
        let h = s.health();
        let anchored = |k: &str| h.cadence("dao:vaultmesh", k).is_some_and(|c| c.last_success_ms.is_some());
        let ready = ["fast", "strong", "cold"].into_iter().all(anchored)
            && h.namespace(EVIL).is_some_and(|n| n.status == NamespaceStatus::BackingOff)
            && h.cadence("later", "fast").is_some_and(|c| c.waiting.as_deref() == Some("no batch"));
        ready.then_some(())
    });
    (root, s)
}

/// Runs `vmsh-scheduler status ARGS` with `env`; exit code, stdout, stderr.
fn run_status(root: &Root, env: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let mut vars = base_env(root);
    for (k, v) in env {
        vars.insert((*k).to_string(), v.clone());
    }
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let out = command(root, &vars, &all).output().expect("run vmsh-scheduler status");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The table row of a namespace's cadence in `status` output.
fn status_row<'a>(out: &'a str, ns: &str, cadence: &str) -> &'a str {
    out.lines()
        .find(|l| l.strip_prefix(ns).is_some_and(|rest| rest.trim_start().starts_with(&format!("{cadence} "))))
        .unwrap_or_else(|| panic!("no row for {ns} {cadence} in:\n{out}"))
}

#[test]
fn status_page_is_served_at_the_root_with_a_strict_policy() {
    let (_root, s) = scenario();
    let (code, head, body) = http_with_head(s.addr, "GET", "/");
    assert_eq!(code, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let csp = head.lines().find(|l| l.starts_with("content-security-policy:")).unwrap_or_else(|| panic!("{head}"));
    for part in ["default-src 'none'", "script-src 'sha256-", "style-src 'sha256-", "connect-src 'self'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(body.contains("<title>vmsh-scheduler status</title>"));
    // The other routes and the 404/405 behaviour are unchanged.
    assert_eq!(http_with_head(s.addr, "POST", "/").0, 405);
    assert_eq!(http_with_head(s.addr, "GET", "/index.html").0, 404);
    assert_eq!(http_with_head(s.addr, "GET", "/health").0, 200);
    // What the page needs beyond the original fields: the server's clock and each cadence's status.
    let h = s.health();
    assert!(h.now_ms.is_some_and(|t| t > 0), "{h}");
    assert_eq!(h.cadence_of(EVIL, "fast").status, Some(NamespaceStatus::BackingOff.into()), "{h}");
    assert_eq!(h.cadence_of("dao:vaultmesh", "fast").status, Some(NamespaceStatus::Ok.into()), "{h}");
    assert!(h.ns("dao:vaultmesh").last_anchor.contains_key("fast"), "the original fields stay: {h}");
}

#[test]
fn status_command_prints_the_table_from_health() {
    let (root, s) = scenario();
    let url = format!("http://{}", s.addr);
    let (code, out, err) = run_status(&root, &[], &["--url", &url]);
    assert_eq!(code, 0, "degraded exits 0; stdout:\n{out}\nstderr: {err}");
    assert!(out.starts_with(&format!("vmsh-scheduler {} at {url}/health: degraded", vmsh_scheduler::VERSION)), "{out}");
    assert!(out.contains("last reload: no change since start"), "{out}");

    let header = out.lines().find(|l| l.starts_with("NAMESPACE")).unwrap_or_else(|| panic!("no header in:\n{out}"));
    for col in ["CADENCE", "STATUS", "TARGET", "EVERY", "LAST ANCHOR", "NEXT DUE", "BACKOFF", "PENDING", "LAST ERROR"] {
        assert!(header.contains(col), "{header}");
    }
    let fast = status_row(&out, "dao:vaultmesh", "fast");
    assert!(fast.contains(" ok ") && fast.contains("local:fast") && fast.contains("s ago"), "{fast}");
    let strong = status_row(&out, "dao:vaultmesh", "strong");
    assert!(strong.contains("local:strong") && strong.contains("3*fast"), "{strong}");
    let cold = status_row(&out, "dao:vaultmesh", "cold");
    assert!(cold.contains("1d") && cold.contains("in 23h"), "{cold}");
    let evil = status_row(&out, EVIL, "fast");
    assert!(evil.contains("backing_off") && evil.contains("never") && evil.contains("network: "), "{evil}");
    assert!(evil.contains("ECONNREFUSED"), "{evil}");
    let later = status_row(&out, "later", "fast");
    assert!(later.contains("never") && later.contains("waiting: no batch"), "{later}");
    assert!(out.contains("3 namespace(s): 1 backing_off, 2 ok"), "{out}");
    // Aligned: every row has its TARGET cell where the header has the column.
    let at = header.find("TARGET").unwrap_or(0);
    for (row, target) in [(fast, "local:fast"), (evil, "exec:notary"), (later, "local:later")] {
        assert_eq!(row.chars().skip(at).collect::<String>().split(' ').next(), Some(target), "{out}");
    }
    // Not a terminal: no colour codes.
    assert!(!out.contains('\u{1b}'), "{out:?}");

    // Without --url it asks 127.0.0.1 on METRICS_PORT.
    let (code, again, err) = run_status(&root, &[("METRICS_PORT", s.addr.port().to_string())], &[]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(again.contains(&format!("at http://127.0.0.1:{}/health: degraded", s.addr.port())), "{again}");
}

#[test]
fn status_command_exits_2_with_one_line_when_the_service_cannot_be_reached() {
    let root = Root::new();
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let (code, out, err) = run_status(&root, &[], &["--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("vmsh-scheduler status: cannot reach http://127.0.0.1:{port}/health:")), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = run_status(&root, &[], &["--url", "http://bad host"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a valid URL") && err.lines().count() == 1, "{err}");
}

#[test]
fn status_command_exits_1_when_the_service_is_unhealthy() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  only:
    cadence:
      fast: {target: "exec:down", every: "1s"}
"#,
    )
    .anchors(&exec_targets(&[("down", "exit 75")]))
    .batch(Some("only"), "0001.json", "b1", &root_hex(3));
    // Stale after 2 periods + 1 s of anchor timeout: every namespace stale is unhealthy.
    let s = Scheduler::start_with(&root, &[("VMSH_ANCHOR_TIMEOUT_S", "1")]);
    wait_for(LONG, "the service to turn unhealthy", || (s.health().status == OverallStatus::Unhealthy).then_some(()));
    let (code, out, err) = run_status(&root, &[], &["--url", &format!("http://{}", s.addr)]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr: {err}");
    assert!(out.contains(": unhealthy (") && status_row(&out, "only", "fast").contains("stale"), "{out}");
}

#[test]
fn status_command_exits_2_when_the_answer_is_not_this_services_health() {
    let root = Root::new();
    let others = [
        ("200 OK", r#"{"status": "ok"}"#, "no \"service\""),
        ("200 OK", r#"{"status": "healthy", "service": "billing"}"#, "service \"billing\""),
        ("503 Service Unavailable", r#"{"status": "down"}"#, "no \"service\""),
    ];
    for (code, body, why) in others {
        let addr = answer_once(code, body);
        let (exit, out, err) = run_status(&root, &[], &["--url", &format!("http://{addr}")]);
        assert_eq!(exit, 2, "{body}: stdout: {out}\nstderr: {err}");
        assert!(out.is_empty(), "{body}: {out}");
        assert_eq!(err.lines().count(), 1, "{body}: {err}");
        assert!(err.contains("did not answer with vmsh-scheduler's health JSON") && err.contains(why), "{body}: {err}");
    }
    // The scheduler's own /health says whose it is.
    root.namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:n\", every: \"1h\"}\n");
    let s = Scheduler::start(&root);
    assert_eq!(s.health().service.as_deref(), Some("vmsh-scheduler"));
    let (exit, out, err) = run_status(&root, &[], &["--url", &format!("http://{}", s.addr)]);
    assert_eq!(exit, 0, "stdout: {out}\nstderr: {err}");
}

// ---- the browser ----------------------------------------------------------------------------

/// Debian's chromium, or a failure that says how to install it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed; the status page test needs it: run scripts/install-test-deps.sh \
                 (it installs Debian's chromium package)"
            )
        })
}

/// Runs headless chromium once on `url` with `args` (a fresh profile each time); returns stdout.
fn run_chromium(url: &str, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("chromium temp dir");
    let profile = dir.path().join("profile");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        // Its own process group, so a hung browser is killed with all its helper processes.
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let pgid = i32::try_from(child.id()).expect("pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: signalling the process group of a child we started.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            panic!("chromium did not finish within 60 s: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed ({status}): {}", std::fs::read_to_string(&stderr).unwrap_or_default());
    std::fs::read_to_string(&stdout).expect("chromium output")
}

/// The page's DOM after its script ran for `ms` of (virtual) time.
fn dump_dom(url: &str, ms: u32) -> String {
    let dom = run_chromium(url, &[&format!("--virtual-time-budget={ms}"), "--dump-dom"]);
    assert!(dom.contains("<tbody id=\"rows\">"), "not the status page:\n{dom}");
    dom
}

/// Every serialized `<tr …>…</tr>` with attributes (the table's rows; the header row has none).
fn dom_rows(dom: &str) -> Vec<&str> {
    let mut rows = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<tr ") {
        let row = &rest[at..];
        let end = row.find("</tr>").map_or(row.len(), |e| e + "</tr>".len());
        rows.push(&row[..end]);
        rest = &row[end..];
    }
    rows
}

/// The serialized row of a namespace's cadence (`ns` as it appears in the `data-ns` attribute).
fn dom_row<'a>(dom: &'a str, ns: &str, cadence: &str) -> &'a str {
    let (ns, cadence) = (format!("data-ns=\"{ns}\""), format!("data-cadence=\"{cadence}\""));
    dom_rows(dom)
        .into_iter()
        .find(|r| r.contains(&ns) && r.contains(&cadence))
        .unwrap_or_else(|| panic!("no row with {ns} {cadence} in:\n{dom}"))
}

/// Width and height from a PNG's IHDR.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 24, "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn counter(dom: &str) -> u32 {
    let at = dom.find("data-refreshes=\"").expect("refresh counter") + "data-refreshes=\"".len();
    dom[at..].split('"').next().and_then(|n| n.parse().ok()).expect("refresh count")
}

#[test]
fn status_page_in_chromium_shows_every_namespace_and_follows_anchors() {
    // Fail before starting anything when the browser is missing.
    chromium();
    let (root, s) = scenario();
    let url = format!("http://{}/", s.addr);

    let before = dump_dom(&url, 5000);
    // It refreshed itself: more than one /health read within one page load.
    assert!(counter(&before) >= 2, "the page did not refresh itself: {} refresh(es)", counter(&before));
    assert!(before.contains("<span id=\"overall\" class=\"pill s-degraded\">degraded</span>"), "{before}");
    let hash =
        vmsh_scheduler::model::digest::sha256_hex(&std::fs::read(root.path().join("namespaces.yaml")).expect("read"));
    assert!(before.contains(&format!("title=\"{hash}\"")), "config hash not shown:\n{before}");
    assert!(before.contains("no change since start"), "{before}");
    for cadence in ["fast", "strong", "cold"] {
        let row = dom_row(&before, "dao:vaultmesh", cadence);
        assert!(row.contains("data-status=\"ok\"") && row.contains(&format!("local:{cadence}")), "{row}");
        // The age ends the cell, or comes before the line of the aggregate it was a leaf of.
        assert!(row.contains(" ago</td>") || row.contains(" ago<div class=\"agg"), "no anchor age in {row}");
    }
    assert!(dom_row(&before, "dao:vaultmesh", "cold").contains(">in 23h "), "next due of a daily cadence");
    let strong = dom_row(&before, "dao:vaultmesh", "strong");
    // The line names the leaf and the start of the root; its title holds the whole root (the
    // page may show an aggregate newer than any read of /health here, so the form is checked).
    let shown = strong
        .split_once("<div class=\"agg muted\" title=\"")
        .and_then(|(_, rest)| rest.split_once("\">leaf 1 of 1 · root "))
        .and_then(|(title, rest)| rest.split_once("…</div>").map(|(prefix, _)| (title, prefix)));
    let (title, prefix) = shown.unwrap_or_else(|| panic!("the aggregate is not shown: {strong}"));
    assert!(title.len() == 64 && title.starts_with(prefix) && prefix.len() == 12, "{strong}");
    assert!(!dom_row(&before, "dao:vaultmesh", "fast").contains("class=\"agg"), "fast did not aggregate");
    // The markup-like name is text: escaped in the text node, and no element came of it.
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    assert!(before.contains(&format!("<div class=\"name\">{escaped}</div>")), "{before}");
    assert_eq!(before.matches("<script").count() - before.matches("=\"<script").count(), 1, "{before}");
    let evil = dom_rows(&before)
        .into_iter()
        .find(|r| r.contains(escaped))
        .unwrap_or_else(|| panic!("no row of the markup-named namespace:\n{before}"));
    assert!(evil.contains("data-status=\"backing_off\""), "{evil}");
    assert!(evil.contains("network: ") && evil.contains("ECONNREFUSED") && evil.contains(">never</td>"), "{evil}");
    let later = dom_row(&before, "later", "fast");
    assert!(later.contains(">never</td>") && later.contains("waiting: no batch"), "{later}");

    // An anchor happens (the waiting namespace gets its batch) and a config change is rejected.
    root.batch(Some("later"), "0001.json", "later-0001", &root_hex(4));
    wait_for(LONG, "the first anchor of `later`", || s.health().cadence("later", "fast")?.last_success_ms);
    write_file(
        &root.path().join("namespaces.yaml"),
        "namespaces:\n  broken:\n    cadence: {fast: {target: \"local:x\", every: \"0s\"}}\n",
    );
    wait_for(LONG, "the rejected reload in /health", || {
        s.health().config?.last_reload.filter(|r| r.result == ReloadResult::Failure)
    });

    let after = dump_dom(&url, 3000);
    let later = dom_row(&after, "later", "fast");
    assert!(!later.contains(">never</td>") && later.contains(" ago</td>"), "the anchor is not shown: {later}");
    assert!(!later.contains("waiting: no batch"), "{later}");
    assert!(after.contains("rejected ") && after.contains("the previous config keeps running"), "{after}");
    assert!(after.contains("cadence.fast.every"), "the reload error is listed:\n{after}");
    assert_ne!(before, after);

    // What a person sees.
    let dir = tempfile::tempdir().expect("screenshot dir");
    let png = dir.path().join("status-page.png");
    run_chromium(
        &url,
        &["--window-size=1280,800", "--virtual-time-budget=3000", &format!("--screenshot={}", png.display())],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(png_size(&bytes), (1280, 800));
    assert!(bytes.len() > 20_000, "a blank screenshot? only {} bytes", bytes.len());
    if std::env::var_os("VMSH_WRITE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("mkdir docs");
        std::fs::copy(&png, docs.join("status-page.png")).expect("save docs/status-page.png");
    }
}

#[test]
fn status_page_in_chromium_shows_a_replicas_cluster_card() {
    chromium();
    let etcd = crate::support::etcd::EtcdCluster::start(1);
    let endpoints = etcd.endpoints().join(",");
    let root = Root::new();
    root.namespaces("namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:j\", every: \"1s\"}\n");
    root.batch(Some("a"), "b1.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_ETCD_ENDPOINTS", endpoints.as_str()), ("VMSH_NODE_ID", "replica-7")]);
    wait_for(LONG, "the replica to hold its namespace", || {
        s.health().cluster.filter(|c| c.lease_valid && c.owned == 1).map(drop)
    });
    let dom = dump_dom(&format!("http://{}/", s.addr), 3000);
    let card = dom
        .split_once("id=\"cluster-card\"")
        .map(|(_, rest)| rest.split("</section>").next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no cluster card:\n{dom}"));
    assert!(!card.starts_with(" hidden"), "the card is hidden in cluster mode: {card}");
    assert!(card.contains(">replica-7<") && card.contains("replica-7 (1)"), "{card}");
    assert!(card.contains("valid for "), "{card}");
    // A single process shows no cluster card.
    let (_, single) = scenario();
    let dom = dump_dom(&format!("http://{}/", single.addr), 2000);
    assert!(dom.contains("id=\"cluster-card\" hidden"), "a single process shows no cluster card");
}

#[test]
fn a_paused_cadence_shows_as_paused_with_its_note_in_chromium_and_in_the_status_command() {
    chromium();
    const TOKEN: &str = "0123456789abcdef-status-page";
    let root = Root::new();
    root.namespaces("namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:j\", every: \"1s\"}\n");
    root.batch(Some("a"), "b1.json", "b1", &root_hex(1));
    let tokens = root.path().join("admin-tokens");
    std::fs::write(&tokens, format!("ops={TOKEN}\n")).expect("token file");
    let tokens = tokens.display().to_string();
    let s = Scheduler::start_with(&root, &[("VMSH_ADMIN_TOKEN_FILE", tokens.as_str())]);
    let note = "TSA maintenance <until 14:00>";
    let body = format!(r#"{{"note": "{note}"}}"#);
    let path = "/admin/v1/namespaces/a/pause?cadence=fast";
    let answer = crate::support::http::request(s.addr, "POST", path, Some(TOKEN), Some(&body));
    assert_eq!(answer.code, 200, "{}", answer.body);
    wait_for(LONG, "a fast paused", || s.cadence("a", "fast").and_then(|c| c.paused));
    let dom = dump_dom(&format!("http://{}/", s.addr), 3000);
    let row = dom_row(&dom, "a", "fast");
    assert!(row.contains("data-status=\"paused\""), "{row}");
    // The note is shown as text, never as markup.
    assert!(row.contains("paused by ops: TSA maintenance &lt;until 14:00&gt;"), "{row}");
    let (code, out, _) = run_status(&root, &[], &["--url", &format!("http://{}", s.addr)]);
    assert_eq!(code, 0, "{out}");
    let line = status_row(&out, "a", "fast");
    assert!(line.contains("paused") && line.contains("paused by ops: TSA maintenance <until 14:00>"), "{line}");
}

/// The rows of namespaces in the page's table, by name, in order (one per namespace).
fn dom_namespaces(dom: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for row in dom_rows(dom) {
        let Some((_, rest)) = row.split_once("data-ns=\"") else { continue };
        let name = rest.split('"').next().unwrap_or_default().to_string();
        if names.last() != Some(&name) {
            names.push(name);
        }
    }
    names
}

#[test]
fn status_page_in_chromium_pages_and_searches_a_fleet_in_fleet_mode() {
    chromium();
    let root = Root::new();
    // 2,500 namespaces, above the fleet threshold; every 250th refused, so backing off.
    let mut yaml = String::from("namespaces:\n");
    for i in 0..2_500 {
        let target = if i % 250 == 7 { "exec:refused" } else { "local:j" };
        let every = if i % 250 == 7 { "1s" } else { "1h" };
        yaml.push_str(&format!("  n{i:04}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"{every}\"}}\n"));
    }
    root.anchors(&exec_targets(&[("refused", "exit 75")])).namespaces(&yaml).batch(None, "b.json", "b1", &root_hex(5));
    let s = Scheduler::start(&root);
    wait_for(Duration::from_secs(60), "the ten refused namespaces to back off", || {
        let (_, body) = s.get("/health?view=summary");
        let h: serde_json::Value = serde_json::from_str(&body).ok()?;
        (h["summary"]["byStatus"]["backing_off"] == 10 && h["metrics"]["mode"] == "fleet").then_some(())
    });
    let base = format!("http://{}/", s.addr);

    // The first page: 100 namespaces in name order, said as such, and the fleet's counts.
    let dom = dump_dom(&base, 3000);
    let names = dom_namespaces(&dom);
    let want: Vec<String> = (0..100).map(|i| format!("n{i:04}")).collect();
    assert_eq!(names, want, "the first page");
    assert!(dom.contains("<span id=\"page-info\" class=\"muted\">1–100 of 2,500</span>"), "{dom}");
    assert!(dom.contains("<button id=\"prev\" type=\"button\" disabled=\"\">"), "no page before the first");
    let fleet = dom.split_once("<dl id=\"fleet\">").map(|(_, r)| r.split("</dl>").next().unwrap_or_default());
    let fleet = fleet.unwrap_or_else(|| panic!("no fleet card:\n{dom}"));
    assert!(fleet.contains(">2500<") && fleet.contains("10 backing_off") && fleet.contains("2490 ok"), "{fleet}");
    assert!(fleet.contains("href=\"#status=backing_off\""), "a count links to its filter: {fleet}");
    assert!(fleet.contains("fleet mode"), "{fleet}");
    assert!(dom.contains("data-target=\"local:j\""), "the targets card lists the lanes: {dom}");

    // A later page, from the URL's fragment.
    let dom = dump_dom(&format!("{base}#offset=2400"), 3000);
    let want: Vec<String> = (2_400..2_500).map(|i| format!("n{i:04}")).collect();
    assert_eq!(dom_namespaces(&dom), want, "the last page");
    assert!(dom.contains(">2,401–2,500 of 2,500<"), "{dom}");
    assert!(dom.contains("<button id=\"next\" type=\"button\" disabled=\"\">"), "no page after the last");

    // Searched by name and filtered by status.
    let dom = dump_dom(&format!("{base}#q=n12&status=backing_off"), 3000);
    assert_eq!(dom_namespaces(&dom), ["n1257"], "the one refused namespace whose name holds n12");
    assert!(dom.contains(">1–1 of 1 matching<"), "{dom}");
    assert!(dom.contains("data-status=\"backing_off\""), "{dom}");
    let dom = dump_dom(&format!("{base}#q=zzz"), 3000);
    assert!(dom_namespaces(&dom).is_empty() && dom.contains("no namespace matches"), "{dom}");

    // The terminal shows the summary: the namespaces in trouble and the counts, not 2,500 rows.
    let (code, out, err) = run_status(&root, &[], &["--url", &format!("http://{}", s.addr)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rows = out.lines().filter(|l| l.starts_with('n') && l.contains(" fast ")).count();
    assert_eq!(rows, 10, "one row per namespace in trouble:\n{out}");
    assert!(status_row(&out, "n0007", "fast").contains("backing_off"), "{out}");
    assert!(out.contains("2500 namespace(s): 10 backing_off, 2490 ok; a summary (fleet mode)"), "{out}");
}
