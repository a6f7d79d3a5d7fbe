//! The monitoring kit — `deploy/grafana/vmsh-scheduler.json` and `deploy/prometheus/alerts.yaml`
//! — held to what the scheduler really exports, and run in a real Prometheus (Debian's
//! `prometheus` package; `scripts/install-test-deps.sh` installs it) scraping the real binary:
//! every panel and rule expression is accepted, the main ones return data once anchors have
//! happened, the rules evaluate without errors, and the alerts for a failing namespace and for a
//! vanished scheduler fire. In cluster mode, on a real etcd, the cluster panels show a namespace
//! left without an owner, its alert fires and clears, and so does the one for a lease lost with
//! etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::etcd::EtcdCluster;
use crate::support::{Root, Scheduler, exec_targets, http, metric, root_hex, wait_for};

const DASHBOARD: &str = "deploy/grafana/vmsh-scheduler.json";
const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yaml";
const INSTALL: &str = "run scripts/install-test-deps.sh (it installs Debian's prometheus package)";
/// The scrape job name the alert rules expect.
const JOB: &str = "vmsh-scheduler";

/// A targets file section that makes `local:mon` aggregate, with a window short beside its
/// 1 s cadence.
const AGGREGATING: &str = "local:\n  mon: {aggregate: {window: 100ms}}\n";

/// Panels whose series exist only after events this test does not cause (a network target's
/// pending anchor, a dropped transaction, a missing batch, an rfc3161 target): Prometheus must
/// accept their queries, but they may return nothing.
const EVENT_ONLY_PANELS: &[&str] = &[
    "Confirmations",
    "Pending for",
    "Resent",
    "Skipped (no batch)",
    "TSA up",
    "TSA requests",
    "TSA certificate expires in",
    // Chain transactions only: proven by the fee-cap test below.
    "Fee offered",
    "At the fee cap",
    "Replacements and reorgs",
    // Cluster mode only: proven by the cluster test below.
    "Cluster members",
    "Lease valid",
    "Namespaces owned",
    "Unowned namespaces",
    "Unowned for",
    "Ownership changes",
    "Fenced writes",
    // Operator controls: proven by the admin API test below.
    "Paused for",
    "Missed runs",
    "Admin requests",
    "Admin token file valid",
];

// ------------------------------------------------------------------------------------------
// The repository's files.

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

fn rules() -> serde_yaml::Value {
    serde_yaml::from_str(&read(ALERTS)).unwrap_or_else(|e| panic!("{ALERTS} is not YAML: {e}"))
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// (panel title, expression) of every query of every panel.
fn panel_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or("(untitled)").to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?} has a query without expr"));
            out.push((title.clone(), expr.to_string()));
        }
    }
    out
}

/// (name, query) of the dashboard's template variables.
fn variables(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| {
            let name = v["name"].as_str().expect("variable name").to_string();
            let query = v["query"]["query"].as_str().or(v["query"].as_str()).expect("variable query").to_string();
            (name, query)
        })
        .collect()
}

/// (rule name, expression) of every recording and alerting rule.
fn rule_exprs(doc: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).expect("alert or record name");
            out.push((name.to_string(), rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// The names of the alerting rules.
fn alert_names(doc: &serde_yaml::Value) -> Vec<String> {
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// `label_values(SELECTOR, LABEL)` → (SELECTOR, LABEL).
fn label_values(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(SELECTOR, LABEL)"));
    let (selector, label) = inner.rsplit_once(',').expect("label_values has two arguments");
    (selector.trim(), label.trim())
}

/// Replaces Grafana's variables: `$__rate_interval`, `$__interval` and `$__range` by `1m`, the
/// template variables (`$name` or `${name}`) by `values`. An unknown variable is an error.
fn substitute(expr: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {expr}"));
                (&braced[..end], end + 2)
            }
            None => {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = match name {
            "__rate_interval" | "__interval" | "__range" => "1m",
            n => values.get(n).copied().unwrap_or_else(|| panic!("unknown variable ${n} in {expr}")),
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------------------------------------
// A small PromQL reader: which metrics and label names an expression uses.

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    Other,
}

fn tokens(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Tok::Other);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (0.5, 1e3, 30m, 7d).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Other);
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"];

/// The metric names and label names an expression refers to.
#[derive(Debug, Default)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

fn refs(expr: &str) -> Refs {
    let toks = tokens(expr);
    let mut r = Refs::default();
    let mut braces = 0;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => braces += 1,
            Tok::Punct('}') => braces -= 1,
            Tok::Ident(name) if braces > 0 => {
                if matches!(toks.get(i + 1), Some(Tok::Punct('=' | '!'))) {
                    r.labels.insert(name.clone());
                }
            }
            Tok::Ident(name) if GROUPING.contains(&name.as_str()) && toks.get(i + 1) == Some(&Tok::Punct('(')) => {
                i += 2;
                while let Some(Tok::Ident(label)) = toks.get(i) {
                    r.labels.insert(label.clone());
                    i += 1;
                    if toks.get(i) == Some(&Tok::Punct(',')) {
                        i += 1;
                    }
                }
                assert_eq!(toks.get(i), Some(&Tok::Punct(')')), "cannot read the label list after {name} in {expr}");
            }
            Tok::Ident(name) => {
                let call = toks.get(i + 1) == Some(&Tok::Punct('('));
                let aggregation = AGGREGATIONS.contains(&name.as_str())
                    && matches!(toks.get(i + 1), Some(Tok::Ident(n)) if GROUPING.contains(&n.as_str()));
                if !call && !aggregation && !KEYWORDS.contains(&name.as_str()) {
                    r.metrics.insert(name.clone());
                }
            }
            _ => {}
        }
        i += 1;
    }
    r
}

// ------------------------------------------------------------------------------------------
// What the scheduler exports.

/// A metric family: its label names and whether it is a histogram.
#[derive(Debug, Clone, Default)]
struct Family {
    labels: BTreeSet<String>,
    histogram: bool,
}

/// Every family the scheduler declares (src/metrics/), children or not.
fn declared_families() -> BTreeMap<String, Family> {
    let m = vmsh_scheduler::metrics::Metrics::new().expect("create the metrics registry");
    m.families()
        .into_iter()
        .map(|(name, _, labels)| (name, Family { labels: labels.into_iter().collect(), histogram: false }))
        .collect()
}

/// The families on a /metrics page, with the label names their samples carry.
fn page_families(page: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            out.entry(name.to_string()).or_default().histogram = kind == "histogram";
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').expect("sample line").0;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| out.get(*base).is_some_and(|f| f.histogram)))
            .unwrap_or(name);
        let entry = out.entry(family.to_string()).or_default();
        for pair in labels.trim_end_matches('}').split("\",") {
            if let Some((label, _)) = pair.split_once('=')
                && label != "le"
            {
                entry.labels.insert(label.to_string());
            }
        }
    }
    out
}

/// Every family the dashboard and alerts may use: the declared ones, those on a live page
/// (actix-web-prom's HTTP series, process_*), `up`, and the rules' recorded series.
fn known_families(page: &str) -> BTreeMap<String, Family> {
    let mut known = declared_families();
    for (name, family) in page_families(page) {
        let entry = known.entry(name).or_default();
        entry.labels.extend(family.labels);
        entry.histogram |= family.histogram;
    }
    known.insert("up".into(), Family::default());
    let doc = rules();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(record) = rule["record"].as_str() {
                let used = refs(rule["expr"].as_str().expect("expr"));
                let labels = used.metrics.iter().filter_map(|m| known.get(m)).flat_map(|f| f.labels.clone()).collect();
                known.insert(record.to_string(), Family { labels, histogram: false });
            }
        }
    }
    known
}

/// Checks one expression against the known families: every metric it names is exported (a
/// histogram through its `_bucket`, `_sum` and `_count` series) and every label name it uses
/// belongs to one of its metrics. Returns the families it uses.
fn check_expr(origin: &str, expr: &str, known: &BTreeMap<String, Family>) -> BTreeSet<String> {
    let r = refs(expr);
    assert!(!r.metrics.is_empty(), "{origin}: no metric in {expr:?}");
    let mut used = BTreeSet::new();
    let mut allowed: BTreeSet<String> = ["job", "instance"].map(String::from).into();
    for m in &r.metrics {
        let (family, bucket) = match known.get(m) {
            Some(_) => (m.as_str(), false),
            None => {
                let hist = ["_bucket", "_sum", "_count"].iter().find_map(|s| {
                    m.strip_suffix(s)
                        .filter(|b| known.get(*b).is_some_and(|f| f.histogram))
                        .map(|b| (b, *s == "_bucket"))
                });
                hist.unwrap_or_else(|| {
                    panic!(
                        "{origin}: {m} is not a metric the scheduler exports (see src/metrics.rs); expression: {expr}"
                    )
                })
            }
        };
        allowed.extend(known[family].labels.iter().cloned());
        if bucket {
            allowed.insert("le".into());
        }
        used.insert(family.to_string());
    }
    for label in &r.labels {
        assert!(
            allowed.contains(label),
            "{origin}: label {label:?} belongs to none of {:?} (labels {allowed:?}); expression: {expr}",
            r.metrics
        );
    }
    used
}

// ------------------------------------------------------------------------------------------
// promtool and Prometheus.

fn spawn(cmd: &mut Command, name: &str) -> Child {
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{name} not found: {INSTALL}"),
        Err(e) => panic!("cannot run {name}: {e}"),
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(repo_path(".")).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, "promtool");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("feed promtool");
    }
    drop(input);
    child.wait_with_output().expect("promtool finished")
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// A Prometheus server on a loopback port, scraping one scheduler every second and evaluating
/// the given rules every second. Killed when dropped.
///
/// It scrapes as Kubernetes setups do: the target carries a `namespace` label of its own (the
/// Kubernetes namespace), so the scheduler's `namespace` label survives only through
/// `honor_labels: true` — as deploy/prometheus/alerts.yaml tells operators.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape: SocketAddr, rules: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_file = dir.path().join("alerts.yaml");
        std::fs::write(&rules_file, rules).expect("write rules");
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{rules_file:?}]
scrape_configs:
  - job_name: {JOB}
    honor_labels: true
    static_configs:
      - targets: ["{scrape}"]
        labels: {{namespace: vmsh-system}}
"#
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = spawn(&mut cmd, "prometheus");
        let mut p = Prometheus { child, addr, dir };
        wait_for(Duration::from_secs(30), "Prometheus to be ready", || {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            let listening = TcpStream::connect_timeout(&p.addr, Duration::from_millis(200)).is_ok();
            (listening && http(p.addr, "GET", "/-/ready").0 == 200).then_some(())
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = http(self.addr, "GET", path);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {code}, not JSON ({e}): {body}"))
    }

    /// Runs an instant query; panics unless Prometheus accepts and evaluates it. Returns the
    /// result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let answer = self.get(&format!("/api/v1/query?query={}", url_encode(expr)));
        assert_eq!(answer["status"], "success", "Prometheus refused {expr:?}: {answer}");
        match answer["data"]["resultType"].as_str() {
            Some("vector") => answer["data"]["result"].as_array().expect("result").clone(),
            other => panic!("{expr:?} gives a {other:?}, not an instant vector: {answer}"),
        }
    }

    /// The alerts currently firing, as their label sets.
    fn firing(&self) -> Vec<BTreeMap<String, String>> {
        let answer = self.get("/api/v1/alerts");
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| serde_json::from_value(a["labels"].clone()).expect("labels are strings"))
            .collect()
    }

    /// Whether `alert` fires with every label in `labels`.
    fn fires(&self, alert: &str, labels: &[(&str, &str)]) -> bool {
        self.firing().iter().any(|a| {
            a.get("alertname").is_some_and(|n| n == alert)
                && labels.iter().all(|(k, v)| a.get(*k).is_some_and(|x| x == v))
        })
    }

    /// Waits up to 30 s for `alert` to fire with `labels`; if it does not, fails with what
    /// Prometheus holds: the `series` the rule reads, its targets' last scrapes, and the
    /// alerts.
    fn wait_firing(&self, alert: &str, labels: &[(&str, &str)], series: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.fires(alert, labels) {
            if Instant::now() >= deadline {
                let seen: Vec<String> = series.iter().map(|s| format!("{s}: {:?}", self.query(s))).collect();
                panic!(
                    "{alert} {labels:?} did not fire within 30 s.\n{}\ntargets: {}\nalerts: {}",
                    seen.join("\n"),
                    self.get("/api/v1/targets"),
                    self.get("/api/v1/alerts")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's rules with every `for:` set to 0 s, so that they fire at the first
/// evaluation that matches; the expressions are the repository's, unchanged.
fn rules_without_for() -> String {
    let mut doc = rules();
    for group in doc["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            if let Some(map) = rule.as_mapping_mut()
                && map.contains_key("for")
            {
                map.insert("for".into(), "0s".into());
            }
        }
    }
    let text = serde_yaml::to_string(&doc).expect("rules to YAML");
    let copy: serde_yaml::Value = serde_yaml::from_str(&text).expect("copy is YAML");
    assert_eq!(rule_exprs(&copy), rule_exprs(&rules()), "the test copy must keep the expressions");
    text
}

/// [`rules_without_for`] with VmshNamespaceWithoutOwner's threshold (99 s: the default lease
/// TTL plus the shortest period of the shipped examples) set to `threshold_s`, for a test's
/// shorter TTL and period; the rest of its expression and every other rule unchanged.
fn rules_without_for_and_owner_threshold(threshold_s: u64) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&rules_without_for()).expect("copy is YAML");
    let mut changed = 0;
    for group in doc["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            if rule["alert"].as_str() == Some("VmshNamespaceWithoutOwner") {
                let expr = rule["expr"].as_str().expect("expr").trim_end();
                let rest = expr.strip_suffix("> 99").expect("VmshNamespaceWithoutOwner ends with its threshold, > 99");
                rule["expr"] = format!("{rest}> {threshold_s}\n").into();
                changed += 1;
            }
        }
    }
    assert_eq!(changed, 1, "one VmshNamespaceWithoutOwner rule");
    serde_yaml::to_string(&doc).expect("rules to YAML")
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no value in {sample}"))
}

/// The value of the sample whose `label` is `value`, if there is one.
fn value_where(samples: &[Value], label: &str, value: &str) -> Option<f64> {
    samples.iter().find(|s| s["metric"][label] == value).map(sample_value)
}

// ------------------------------------------------------------------------------------------
// The tests.

#[test]
fn promtool_checks_the_alert_rules_and_passes_their_unit_tests() {
    assert_success(&promtool(&["check", "rules", ALERTS], None), &format!("promtool check rules {ALERTS}"));
    assert_success(&promtool(&["test", "rules", ALERT_TESTS], None), &format!("promtool test rules {ALERT_TESTS}"));
    // Every alert has a unit test.
    let tests = read(ALERT_TESTS);
    for alert in alert_names(&rules()) {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{ALERT_TESTS} has no test for {alert}");
    }
}

#[test]
fn the_dashboard_is_an_importable_grafana_model_with_namespace_and_target_variables() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert_eq!(d["uid"], "vmsh-scheduler");
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS", "a datasource input, so import asks for the Prometheus");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_i64().expect("panel id")), "panel id of {title:?} is used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().expect("x"), g["w"].as_i64().expect("w"));
        assert!(x >= 0 && w > 0 && x + w <= 24, "{title:?} does not fit the 24-column grid: {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], ds, "{title:?} must use the DS_PROMETHEUS input");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title:?} has no queries"));
        assert!(!targets.is_empty(), "{title:?} has no queries");
        for t in targets {
            assert_eq!(t["datasource"], ds, "a query of {title:?} must use the DS_PROMETHEUS input");
        }
    }
    let vars = variables(&d);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["namespace", "target"]);
    for (name, query) in &vars {
        let (selector, label) = label_values(query);
        assert_eq!(label, name, "variable {name} lists the values of label {label}");
        assert!(selector.starts_with("vmsh_"), "variable {name} reads a vmsh_ metric: {query}");
    }
    for (title, expr) in panel_queries(&d) {
        for (name, _) in &vars {
            for form in [format!("=\"${name}\""), format!("=\"${{{name}}}\"")] {
                assert!(!expr.contains(&form), "{title:?}: ${name} can be multi-valued, match it with =~: {expr}");
            }
        }
    }
}

#[test]
fn dashboard_and_alerts_query_only_metrics_and_labels_the_scheduler_exports() {
    let root = Root::new();
    // Its target aggregates, so the aggregation series are on the page too.
    root.anchors(AGGREGATING)
        .namespaces("namespaces:\n  mon:ok:\n    cadence:\n      fast: {target: \"local:mon\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(3));
    let s = Scheduler::start(&root);
    // Put an anchor's histograms and the HTTP series on the page. The receipt is written
    // before the namespace actor counts the anchor, so wait for the count, not the file.
    wait_for(Duration::from_secs(10), "an anchor counted", || {
        let m = s.metrics();
        let counted = metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", "mon:ok")]).unwrap_or(0.0) >= 1.0;
        let aggregated = metric(&m, "vmsh_aggregate_leaves_count", &[("target", "local:mon")]).unwrap_or(0.0) >= 1.0;
        (counted && aggregated).then_some(())
    });
    let _ = s.get("/health");
    let page = s.metrics();
    let known = known_families(&page);

    let d = dashboard();
    let vars = variables(&d);
    let values: BTreeMap<&str, &str> = vars.iter().map(|(n, _)| (n.as_str(), ".*")).collect();
    let mut on_dashboard = BTreeSet::new();
    for (title, expr) in panel_queries(&d) {
        on_dashboard.extend(check_expr(&format!("{DASHBOARD} panel {title:?}"), &substitute(&expr, &values), &known));
    }
    for (name, query) in &vars {
        let (selector, label) = label_values(query);
        let expr = format!("group by ({label}) ({})", substitute(selector, &values));
        check_expr(&format!("{DASHBOARD} variable {name}"), &expr, &known);
    }
    for (name, expr) in rule_exprs(&rules()) {
        check_expr(&format!("{ALERTS} rule {name}"), &expr, &known);
    }
    // And the dashboard shows every series family of the scheduler.
    let exported: BTreeSet<String> = declared_families()
        .into_keys()
        .chain(page_families(&page).into_keys())
        .filter(|n| n.starts_with("vmsh_"))
        .collect();
    let missing: Vec<&String> = exported.difference(&on_dashboard).collect();
    assert!(missing.is_empty(), "metrics the scheduler exports but the dashboard does not show: {missing:?}");
}

/// Waits until every panel but the event-only ones returns data.
fn panels_have_data(p: &Prometheus, queries: &[(String, String)]) {
    let empty = || -> Vec<String> {
        queries
            .iter()
            .filter(|(title, expr)| p.query(expr).is_empty() && !EVENT_ONLY_PANELS.contains(&title.as_str()))
            .map(|(title, expr)| format!("{title}: {expr}"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let no_data = empty();
        if no_data.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "panels without data after anchors happened:\n{}", no_data.join("\n"));
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every rule expression is accepted, and every rule evaluates without error.
fn every_rule_evaluates(p: &Prometheus) {
    for (_, expr) in rule_exprs(&rules()) {
        p.query(&expr);
    }
    wait_for(Duration::from_secs(10), "every rule to be evaluated", || {
        let groups = p.get("/api/v1/rules");
        let loaded: Vec<&Value> = groups["data"]["groups"]
            .as_array()
            .expect("rule groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules"))
            .collect();
        assert_eq!(loaded.len(), rule_exprs(&rules()).len(), "every rule is loaded: {groups}");
        for r in &loaded {
            assert_ne!(r["health"], "err", "rule {} fails: {}", r["name"], r["lastError"]);
        }
        loaded.iter().all(|r| r["health"] == "ok").then_some(())
    });
}

#[test]
fn in_fleet_mode_a_real_prometheus_runs_every_panel_and_rule_and_fires_the_alerts_of_the_namespaces_in_trouble() {
    let root = Root::new();
    // `flaky` anchors once, then is refused: its namespace has a last success and then fails.
    let flaky = r#"if [ -e "$VMSH_ROOT/flaky.once" ]; then exit 75; fi; touch "$VMSH_ROOT/flaky.once"; echo '{}'"#;
    root.anchors(&format!("{}{AGGREGATING}", exec_targets(&[("refused", flaky)])));
    let mut namespaces = String::from(
        "namespaces:\n  mon:failing:\n    cadence:\n      fast: {target: \"exec:refused\", every: \"1s\"}\n",
    );
    for i in 0..5 {
        namespaces
            .push_str(&format!("  mon:ok{i}:\n    cadence:\n      fast: {{target: \"local:mon\", every: \"1s\"}}\n"));
    }
    root.namespaces(&namespaces).batch(None, "0001.json", "b1", &root_hex(4));
    let s = Scheduler::start_with(&root, &[("VMSH_BASE_BACKOFF", "0.05"), ("VMSH_METRICS_MODE", "fleet")]);
    let p = Prometheus::start(s.addr, &rules_without_for());
    wait_for(Duration::from_secs(30), "Prometheus to scrape the scheduler (up == 1)", || {
        let up = p.query(&format!("up{{job=\"{JOB}\"}}"));
        (up.len() == 1 && sample_value(&up[0]) == 1.0).then_some(())
    });

    // The page: counters summed by cadence and target, own series only for the namespace in
    // trouble, and the mode said.
    let page = wait_for(Duration::from_secs(20), "the failing namespace in trouble on /metrics", || {
        let m = s.metrics();
        metric(&m, "vmsh_backoff_state", &[("namespace", "mon:failing")]).filter(|b| *b >= 1.0).map(|_| m)
    });
    assert_success(&promtool(&["check", "metrics"], Some(&page)), "promtool check metrics on /metrics");
    assert_eq!(metric(&page, "vmsh_metrics_fleet_mode", &[]), Some(1.0));
    assert!(!page.contains("namespace=\"mon:ok"), "an ok namespace has no series of its own in fleet mode");
    assert!(
        metric(&page, "vmsh_anchors_succeeded_total", &[("cadence", "fast"), ("target", "local:mon")])
            .is_some_and(|n| n >= 5.0),
        "the ok namespaces' anchors are counted by cadence and target"
    );
    let health = s.get("/health").1;
    let health: Value = serde_json::from_str(&health).expect("/health is JSON");
    assert_eq!(health["metrics"]["mode"], "fleet", "{health}");
    assert!(health.get("summary").is_some() && health.get("namespaces").is_none(), "the summary by default: {health}");

    let d = dashboard();
    let vars = variables(&d);
    let all: BTreeMap<&str, &str> = vars.iter().map(|(n, _)| (n.as_str(), ".*")).collect();
    let queries: Vec<(String, String)> =
        panel_queries(&d).into_iter().map(|(title, expr)| (title, substitute(&expr, &all))).collect();
    panels_have_data(&p, &queries);
    let namespaces: BTreeSet<String> = p
        .query("group by (namespace) (vmsh_backoff_state)")
        .iter()
        .filter_map(|s| s["metric"]["namespace"].as_str().map(str::to_string))
        .collect();
    assert_eq!(namespaces, ["mon:failing".to_string()].into(), "only the namespace in trouble has its own series");
    let by_status = p.query("sum by (status) (vmsh_cadences)");
    assert_eq!(value_where(&by_status, "status", "ok"), Some(5.0), "{by_status:?}");
    every_rule_evaluates(&p);

    // The alerts of the namespace in trouble fire: by target for the summed counters, by
    // namespace for its own series.
    wait_for(
        Duration::from_secs(30),
        "VmshFailureRatioHigh for exec:refused and VmshBackoffAtMax for mon:failing",
        || {
            (p.fires("VmshFailureRatioHigh", &[("target", "exec:refused")])
                && p.fires("VmshBackoffAtMax", &[("namespace", "mon:failing")]))
            .then_some(())
        },
    );
    let firing = p.firing();
    assert!(!firing.iter().any(|a| a.get("namespace").is_some_and(|n| n.starts_with("mon:ok"))), "{firing:?}");
    assert!(!p.fires("VmshFailureRatioHigh", &[("target", "local:mon")]), "{firing:?}");
}

#[test]
fn a_real_prometheus_runs_every_panel_and_rule_and_fires_the_alerts_of_a_failing_namespace() {
    let root = Root::new();
    // The healthy namespace's target aggregates, so the aggregation panels have data too.
    root.anchors(&format!("{}{AGGREGATING}", exec_targets(&[("refused", "exit 75")])));
    root.namespaces(
        r#"
namespaces:
  mon:ok:
    cadence:
      fast: {target: "local:mon", every: "1s"}
  mon:failing:
    cadence:
      fast: {target: "exec:refused", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(4));
    // A small backoff base reaches the highest level (7) within about 2 s.
    let mut s = Scheduler::start_with(&root, &[("VMSH_BASE_BACKOFF", "0.05")]);
    let p = Prometheus::start(s.addr, &rules_without_for());
    let instance = s.addr.to_string();

    // The first scrape comes some seconds after start, whatever the interval.
    wait_for(Duration::from_secs(30), "Prometheus to scrape the scheduler (up == 1)", || {
        let up = p.query(&format!("up{{job=\"{JOB}\"}}"));
        (up.len() == 1 && sample_value(&up[0]) == 1.0).then_some(())
    });

    let _ = s.get("/health");
    let out = promtool(&["check", "metrics"], Some(&s.metrics()));
    assert_success(&out, "promtool check metrics on /metrics");

    // Every panel query is accepted with the variables at "All" and at a real value, and all
    // but the event-only panels return data once anchors have happened.
    let d = dashboard();
    let vars = variables(&d);
    let all: BTreeMap<&str, &str> = vars.iter().map(|(n, _)| (n.as_str(), ".*")).collect();
    let one: BTreeMap<&str, &str> = [("namespace", "mon:ok"), ("target", "local:mon")].into();
    let queries: Vec<(String, String)> =
        panel_queries(&d).into_iter().map(|(title, expr)| (title, substitute(&expr, &all))).collect();
    for (_, expr) in panel_queries(&d) {
        p.query(&substitute(&expr, &one));
    }
    panels_have_data(&p, &queries);
    for (name, query) in &vars {
        let (selector, label) = label_values(query);
        let found: BTreeSet<String> = p
            .query(&format!("group by ({label}) ({})", substitute(selector, &all)))
            .iter()
            .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
            .collect();
        let want: BTreeSet<String> = match name.as_str() {
            "namespace" => ["mon:failing", "mon:ok"].map(String::from).into(),
            _ => ["exec:refused", "local:mon"].map(String::from).into(),
        };
        assert_eq!(found, want, "values of variable {name}");
    }

    // The main panels show what happened.
    let panel = |title: &str| -> Vec<Value> {
        let (_, expr) = queries.iter().find(|(t, _)| t == title).unwrap_or_else(|| panic!("no panel {title:?}"));
        p.query(expr)
    };
    let ratio = panel("Success ratio (1 h window)");
    assert_eq!(value_where(&ratio, "namespace", "mon:ok"), Some(1.0), "{ratio:?}");
    assert_eq!(value_where(&ratio, "namespace", "mon:failing"), Some(0.0), "{ratio:?}");
    let age = panel("Time since last success");
    let ok_age = value_where(&age, "namespace", "mon:ok").expect("time since last success of mon:ok");
    assert!((0.0..5.0).contains(&ok_age), "mon:ok last anchored {ok_age} s ago");
    assert_eq!(value_where(&panel("Backoff level"), "namespace", "mon:ok"), Some(0.0));
    let p50 = panel("Anchor duration p50 / p95 / p99");
    assert!(value_where(&p50, "namespace", "mon:ok").is_some_and(|v| v > 0.0 && v < 10.0), "{p50:?}");

    every_rule_evaluates(&p);
    // The stale rule's period estimate finds the 1 s period of the healthy namespace.
    let period = p.query("vmsh:cadence_period_seconds:estimate{namespace=\"mon:ok\"}");
    let period = value_where(&period, "cadence", "fast").expect("the period estimate of mon:ok");
    assert!((0.95..1.1).contains(&period), "estimated period {period}, configured 1 s");

    // The failing namespace's alerts fire; nothing fires for the healthy one.
    wait_for(Duration::from_secs(30), "VmshFailureRatioHigh and VmshBackoffAtMax for mon:failing", || {
        (p.fires("VmshFailureRatioHigh", &[("namespace", "mon:failing"), ("target", "exec:refused")])
            && p.fires("VmshBackoffAtMax", &[("namespace", "mon:failing")]))
        .then_some(())
    });
    let firing = p.firing();
    assert!(!firing.iter().any(|a| a.get("namespace").is_some_and(|n| n == "mon:ok")), "{firing:?}");
    for quiet in [
        "VmshNamespaceStale",
        "VmshPendingAnchorStuck",
        "VmshAnchorAtFeeCap",
        "VmshConfigReloadFailing",
        "VmshStateWritesFailing",
        "VmshSchedulerDown",
        "VmshSchedulerAbsent",
        "VmshTsaCertificateExpiring",
        "VmshTsaDown",
        "VmshNamespaceWithoutOwner",
        "VmshClusterLeaseInvalid",
        "VmshClusterFencedWrites",
        "VmshFleetCadencesStale",
        "VmshTargetSaturated",
    ] {
        assert!(!p.fires(quiet, &[]), "{quiet} fires: {firing:?}");
    }

    // A scheduler that goes away is noticed.
    s.kill9();
    wait_for(Duration::from_secs(20), "VmshSchedulerDown and VmshSchedulerAbsent", || {
        (p.fires("VmshSchedulerDown", &[("instance", instance.as_str())]) && p.fires("VmshSchedulerAbsent", &[]))
            .then_some(())
    });
}

/// A transaction stuck at its fee cap on a real chain node (anvil, after a base-fee spike)
/// shows in the fee panels and fires VmshAnchorAtFeeCap on a real Prometheus; once fees drop
/// and it lands, the alert clears.
#[test]
fn a_real_prometheus_shows_a_transaction_stuck_at_its_fee_cap_and_fires_its_alert() {
    let anvil = crate::evm::Anvil::start(false);
    let root = Root::new();
    root.anchors(&format!(
        "eip155:\n  local: {{rpcUrl: \"{}\", chainId: 31337, key: \"{}\", pollInterval: 200ms, bumpAfter: 1 block, maxFeePerGas: 5 gwei}}\n",
        anvil.url(),
        crate::evm::FUNDED_KEY
    ))
    .namespaces("namespaces:\n  mon:chain:\n    cadence:\n      fast: {target: \"eip155:31337\", every: \"1h\", confirmations: 1}\n")
    .batch(None, "0001.json", "b1", &root_hex(4));
    let s = Scheduler::start(&root);
    wait_for(Duration::from_secs(15), "the transaction in the mempool", || {
        s.cadence("mon:chain", "fast").and_then(|c| c.pending).map(drop)
    });
    anvil.rpc("anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("{:#x}", 20_000_000_000u64)]));
    anvil.mine(1);
    let p = Prometheus::start(s.addr, &rules_without_for());
    let d = dashboard();
    let vars = variables(&d);
    let all: BTreeMap<&str, &str> = vars.iter().map(|(n, _)| (n.as_str(), ".*")).collect();
    let query_of = |title: &str, nth: usize| -> String {
        let found: Vec<String> =
            panel_queries(&d).into_iter().filter(|(t, _)| t == title).map(|(_, e)| substitute(&e, &all)).collect();
        found.get(nth).cloned().unwrap_or_else(|| panic!("no query {nth} in panel {title:?}"))
    };
    let (offered, capped, replaced) =
        (query_of("Fee offered", 0), query_of("At the fee cap", 0), query_of("Replacements and reorgs", 0));
    wait_for(Duration::from_secs(30), "VmshAnchorAtFeeCap for mon:chain", || {
        p.fires("VmshAnchorAtFeeCap", &[("namespace", "mon:chain"), ("cadence", "fast")]).then_some(())
    });
    let fee = p.query(&offered);
    assert_eq!(value_where(&fee, "unit", "wei_per_gas"), Some(5e9), "the offer is the cap: {fee:?}");
    assert_eq!(value_where(&p.query(&capped), "namespace", "mon:chain"), Some(1.0));
    wait_for(Duration::from_secs(15), "the replacement up to the cap in its panel", || {
        (!p.query(&replaced).is_empty()).then_some(())
    });
    // Fees drop: it is taken, mined, and the alert clears.
    anvil.rpc("anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("{:#x}", 1_000_000_000u64)]));
    anvil.mine(1);
    wait_for(Duration::from_secs(15), "the capped transaction taken", || {
        let pool = anvil.rpc("txpool_status", serde_json::json!([]));
        (pool["pending"] != "0x0").then_some(())
    });
    anvil.mine(1);
    wait_for(Duration::from_secs(15), "the receipt", || root.receipts("mon:chain").into_iter().next());
    wait_for(Duration::from_secs(30), "VmshAnchorAtFeeCap to clear", || {
        (!p.fires("VmshAnchorAtFeeCap", &[])).then_some(())
    });
}

/// Cluster mode on a real etcd: a member that registers but never claims (an idle process, a
/// replica running another namespaces file) leaves the namespaces rendezvous hashing gives it
/// without an owner. The cluster panels show it, VmshNamespaceWithoutOwner fires, and it
/// clears once that member leaves and the replica takes them back. Then etcd goes away: the
/// replica cannot count on its lease, and VmshClusterLeaseInvalid fires.
#[test]
fn in_cluster_mode_a_real_prometheus_alerts_on_namespaces_left_without_owner_and_on_a_lease_lost_with_etcd() {
    use vmsh_scheduler::cluster::claim::Keys;
    use vmsh_scheduler::cluster::etcd::{Etcd, EtcdOptions, EtcdTls};
    use vmsh_scheduler::cluster::{member, ownership};
    const NODE: &str = "sched-a";
    const IDLE: &str = "idle";
    // Rounds every 1.7 s (a third of the TTL), each etcd request given 1 s (a fifth): short
    // enough for a quick test, long enough for a loaded machine. The rule's threshold for
    // these settings is the TTL plus the period, 5 s + 1 s.
    const TTL_S: &str = "5";
    const THRESHOLD_S: u64 = 6;
    let mut etcd_cluster = EtcdCluster::start(1);
    // Two namespaces for each member, as rendezvous hashing places them between the two.
    let (mut ours, mut idle) = (Vec::new(), Vec::new());
    for i in 0.. {
        let ns = format!("mon:c{i}");
        match ownership::owner(&ns, [NODE, IDLE]) {
            Some(NODE) if ours.len() < 2 => ours.push(ns),
            Some(IDLE) if idle.len() < 2 => idle.push(ns),
            _ => {}
        }
        if ours.len() == 2 && idle.len() == 2 {
            break;
        }
    }
    let mut yaml = String::from("namespaces:\n");
    for ns in ours.iter().chain(&idle) {
        yaml.push_str(&format!("  {ns}:\n    cadence:\n      fast: {{target: \"local:mon\", every: \"1s\"}}\n"));
    }
    let root = Root::new();
    root.namespaces(&yaml).batch(None, "0001.json", "b1", &root_hex(5));
    let endpoint = etcd_cluster.endpoint(0);
    let s = Scheduler::start_with(
        &root,
        &[("VMSH_ETCD_ENDPOINTS", endpoint.as_str()), ("VMSH_NODE_ID", NODE), ("VMSH_ETCD_LEASE_TTL_S", TTL_S)],
    );
    let instance = s.addr.to_string();
    let gauges = |names: [&str; 2]| {
        let page = s.metrics();
        names.map(|name| metric(&page, name, &[]))
    };
    wait_for(Duration::from_secs(20), "the only member to own every namespace", || {
        (gauges(["vmsh_cluster_namespaces_owned", "vmsh_cluster_unowned_namespaces"]) == [Some(4.0), Some(0.0)])
            .then_some(())
    });
    let p = Prometheus::start(s.addr, &rules_without_for_and_owner_threshold(THRESHOLD_S));
    // Scraped before the hand-over, so that the ownership changes' rate sees it.
    wait_for(Duration::from_secs(30), "Prometheus to scrape the replica's cluster series", || {
        (!p.query("vmsh_cluster_namespaces_owned").is_empty()).then_some(())
    });

    // The idle member joins under a lease that outlives the test's waits, and never claims.
    let etcd = Etcd::new(EtcdOptions {
        endpoints: vec![endpoint.clone()],
        tls: EtcdTls::default(),
        auth: None,
        request_timeout: Duration::from_secs(2),
    })
    .expect("an etcd client");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let registration = member::Registration { node: IDLE.into(), version: "test".into(), joined_ms: 0 };
    let keys = Keys::new("/vmsh-scheduler/");
    let (lease, _) = rt.block_on(member::join(&etcd, &keys, &registration, 120)).expect("the idle member joins");
    wait_for(Duration::from_secs(20), "the replica to hand the idle member its share", || {
        (gauges(["vmsh_cluster_namespaces_owned", "vmsh_cluster_unowned_namespaces"]) == [Some(2.0), Some(2.0)])
            .then_some(())
    });
    p.wait_firing(
        "VmshNamespaceWithoutOwner",
        &[("job", JOB)],
        &["vmsh_cluster_unowned_max_age_seconds", "vmsh_cluster_lease_valid"],
    );
    for quiet in ["VmshClusterLeaseInvalid", "VmshClusterFencedWrites"] {
        assert!(!p.fires(quiet, &[]), "{quiet} fires: {:?}", p.firing());
    }

    // Every cluster panel has data, and shows what happened.
    let d = dashboard();
    let vars = variables(&d);
    let all: BTreeMap<&str, &str> = vars.iter().map(|(n, _)| (n.as_str(), ".*")).collect();
    let cluster: Vec<(String, String)> = panel_queries(&d)
        .into_iter()
        .filter(|(_, expr)| expr.contains("vmsh_cluster_"))
        .map(|(title, expr)| (title, substitute(&expr, &all)))
        .collect();
    assert!(cluster.len() >= 7, "the dashboard's cluster panels: {cluster:?}");
    wait_for(Duration::from_secs(15), "every cluster panel to have data", || {
        cluster.iter().all(|(_, expr)| !p.query(expr).is_empty()).then_some(())
    });
    let panel = |title: &str| -> Option<f64> {
        let (_, expr) = cluster.iter().find(|(t, _)| t == title).unwrap_or_else(|| panic!("no panel {title:?}"));
        value_where(&p.query(expr), "instance", &instance)
    };
    assert_eq!(panel("Cluster members"), Some(2.0));
    assert_eq!(panel("Lease valid"), Some(1.0));
    assert_eq!(panel("Namespaces owned"), Some(2.0));
    assert_eq!(panel("Unowned namespaces"), Some(2.0));
    assert!(panel("Unowned for").is_some_and(|age| age > THRESHOLD_S as f64), "{:?}", panel("Unowned for"));
    let (_, changes) = cluster.iter().find(|(t, _)| t == "Ownership changes").expect("the ownership changes panel");
    let released = value_where(&p.query(changes), "change", "released");
    assert!(released.is_some_and(|r| r > 0.0), "the hand-over in the ownership changes: {released:?}");

    // The idle member leaves: the replica takes its share back, and the alert clears.
    rt.block_on(etcd.revoke(lease)).expect("the idle member leaves");
    wait_for(Duration::from_secs(20), "the replica to take the idle member's share back", || {
        (gauges(["vmsh_cluster_namespaces_owned", "vmsh_cluster_unowned_namespaces"]) == [Some(4.0), Some(0.0)])
            .then_some(())
    });
    wait_for(Duration::from_secs(30), "VmshNamespaceWithoutOwner to clear", || {
        (!p.fires("VmshNamespaceWithoutOwner", &[])).then_some(())
    });

    // etcd goes away: the replica cannot count on its lease and starts nothing.
    etcd_cluster.kill(0);
    p.wait_firing("VmshClusterLeaseInvalid", &[("instance", instance.as_str())], &["vmsh_cluster_lease_valid"]);
}

#[test]
fn a_real_prometheus_shows_pauses_and_missed_runs_and_alerts_on_a_pause_older_than_its_age() {
    const TOKEN: &str = "0123456789abcdef-prometheus";
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  mon:held:
    cadence:
      fast: {target: "local:mon", every: "1s"}
  mon:ok:
    cadence:
      fast: {target: "local:mon", every: "1s"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(6));
    let tokens = root.path().join("admin-tokens");
    std::fs::write(&tokens, format!("ops={TOKEN}\n")).expect("token file");
    let tokens = tokens.display().to_string();
    let s =
        Scheduler::start_with(&root, &[("VMSH_ADMIN_TOKEN_FILE", tokens.as_str()), ("VMSH_PAUSE_ALERT_AFTER_S", "3")]);
    let instance = s.addr.to_string();
    let admin = |action: &str| {
        let path = format!("/admin/v1/namespaces/mon:held/{action}?cadence=fast");
        let answer = crate::support::http::request(s.addr, "POST", &path, Some(TOKEN), None);
        assert_eq!(answer.code, 200, "{action}: {}", answer.body);
    };
    wait_for(Duration::from_secs(10), "mon:held to anchor", || {
        metric(&s.metrics(), "vmsh_anchors_succeeded_total", &[("namespace", "mon:held")]).filter(|n| *n >= 1.0)
    });
    admin("pause");
    let p = Prometheus::start(s.addr, &rules_without_for());
    p.wait_firing(
        "VmshCadencePausedTooLong",
        &[("namespace", "mon:held"), ("cadence", "fast")],
        &["vmsh_cadence_paused_since_timestamp_seconds", "vmsh_pause_alert_after_seconds"],
    );
    assert!(!p.fires("VmshNamespaceStale", &[("namespace", "mon:held")]), "{:?}", p.firing());
    // While paused, the "Paused for" panel shows the pause's age against the alert's age.
    let d = dashboard();
    let vars = variables(&d);
    let all: BTreeMap<&str, &str> = vars.iter().map(|(n, _)| (n.as_str(), ".*")).collect();
    let paused_for: Vec<Vec<Value>> = panel_queries(&d)
        .into_iter()
        .filter(|(t, _)| t == "Paused for")
        .map(|(_, expr)| p.query(&substitute(&expr, &all)))
        .collect();
    assert_eq!(paused_for.len(), 2, "{paused_for:?}");
    let age = value_where(&paused_for[0], "namespace", "mon:held");
    assert!(age.is_some_and(|a| a > 3.0), "the pause's age: {paused_for:?}");
    assert_eq!(paused_for[1].first().map(sample_value), Some(3.0), "the alert's age: {paused_for:?}");
    // Resumed after several periods: one run, the missed ones counted; the alert clears.
    admin("resume");
    wait_for(Duration::from_secs(30), "VmshCadencePausedTooLong to clear", || {
        (!p.fires("VmshCadencePausedTooLong", &[])).then_some(())
    });
    let panels: Vec<(String, String)> = panel_queries(&d)
        .into_iter()
        .filter(|(title, _)| ["Missed runs", "Admin requests", "Admin token file valid"].contains(&title.as_str()))
        .map(|(title, expr)| (title, substitute(&expr, &all)))
        .collect();
    assert_eq!(panels.len(), 3, "{panels:?}");
    wait_for(Duration::from_secs(30), "the operator panels to have data", || {
        panels.iter().all(|(_, expr)| !p.query(expr).is_empty()).then_some(())
    });
    let panel = |title: &str| p.query(&panels.iter().find(|(t, _)| t == title).expect("panel").1);
    let missed = value_where(&panel("Missed runs"), "reason", "paused");
    assert!(missed.is_some_and(|n| n > 0.0), "missed runs after the pause: {missed:?}");
    let valid = value_where(&panel("Admin token file valid"), "instance", &instance);
    assert_eq!(valid, Some(1.0));
}
