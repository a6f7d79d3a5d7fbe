//! The files and the etcd state a measured cluster runs on: N namespaces anchoring fast to
//! a few `local:` journals on one shared root, one batch, and a state in etcd that spreads
//! their next runs over the whole period.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use vmsh_scheduler::cluster::claim::Keys;
use vmsh_scheduler::cluster::etcd::{Etcd, EtcdOptions, EtcdTls, Op};

/// The root anchored by every namespace.
const ROOT_HEX: &str = "5bd2f6cfdc3c4e36ce1e2a7ed6bc59c4c9a9a0a4f8c1fe3f36f3aa5b7b0c3a11";

/// Snapshot keys per seeding transaction, under etcd's default limit of 128 operations.
const PER_TXN: usize = 100;

/// The name of namespace `i`.
pub(crate) fn name(i: usize) -> String {
    format!("bench:ns{i:06}")
}

/// Namespace `i`'s index, from its name.
pub(crate) fn index(name: &str) -> Option<usize> {
    name.strip_prefix("bench:ns")?.parse().ok()
}

/// One fleet: the shared root and the etcd prefix its replicas use.
pub(crate) struct Fleet {
    /// VMSH_ROOT, shared by every replica.
    pub root: PathBuf,
    /// VMSH_ETCD_PREFIX.
    pub prefix: String,
    /// Namespaces configured now: the first `n`.
    pub n: usize,
    /// Every namespace's fast period now.
    pub period: Duration,
    journals: usize,
}

impl Fleet {
    /// Writes the batch under `root`; no namespace is configured yet.
    pub(crate) fn new(root: &Path, prefix: &str, period: Duration, journals: usize) -> Result<Self, String> {
        let batch = json!({"id": "bench-1", "root": format!("sha256:{ROOT_HEX}")});
        write(&root.join("out/batches/0001.json"), batch.to_string().as_bytes())?;
        Ok(Self { root: root.to_path_buf(), prefix: prefix.to_string(), n: 0, period, journals: journals.max(1) })
    }

    /// Configures the first `n` namespaces, every one anchoring fast every `period` (the
    /// replicas see it at their next tick, or at once after SIGHUP).
    pub(crate) fn configure(&mut self, n: usize, period: Duration) -> Result<(), String> {
        let every = format!("{}s", period.as_secs().max(1));
        let mut yaml = String::with_capacity(n * 100);
        yaml.push_str("namespaces:\n");
        for i in 0..n {
            let j = i % self.journals;
            let _ = writeln!(
                yaml,
                "  \"{}\":\n    cadence:\n      fast: {{target: \"local:j{j:02}\", every: \"{every}\"}}",
                name(i)
            );
        }
        // Written whole under another name, then renamed: the replicas may be reading it.
        let path = self.root.join("namespaces.yaml");
        let tmp = self.root.join("namespaces.yaml.tmp");
        write(&tmp, yaml.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        (self.n, self.period) = (n, period);
        Ok(())
    }

    /// Anchors per second the namespaces ask for.
    pub(crate) fn offered(&self) -> f64 {
        self.n as f64 / self.period.as_secs_f64()
    }

    /// Writes these namespaces' state snapshots into etcd, as the replicas fold them: its fast
    /// cadence last anchored the batch so that its next run falls at a golden-ratio fraction
    /// of the period from `now_ms`. Dues then spread over the whole period from the start,
    /// as in a fleet that has run a while, rather than all 10,000 falling due at once.
    pub(crate) fn seed(
        &self,
        etcd: &Etcd,
        rt: &tokio::runtime::Runtime,
        namespaces: std::ops::Range<usize>,
        period: Duration,
        now_ms: i64,
    ) -> Result<(), String> {
        let keys = Keys::new(&self.prefix);
        let period_ms = period.as_millis() as f64;
        let snapshots: Vec<Op> = namespaces
            .map(|i| {
                let phase = (i as f64 * 0.618_033_988_749_895).fract();
                let last = now_ms - (period_ms * (1.0 - phase)).round() as i64;
                let fast = json!({
                    "lastSuccessMs": last,
                    "lastBatch": {"id": "bench-1", "root": format!("sha256:{ROOT_HEX}")},
                    "backoff": 0,
                    "failures": 0,
                });
                let snapshot = json!({"through": 0, "state": {"cadences": {"fast": fast}}});
                Op::Put { key: keys.state(&name(i)), value: snapshot.to_string().into_bytes(), lease: 0 }
            })
            .collect();
        for chunk in snapshots.chunks(PER_TXN) {
            let out = rt.block_on(etcd.txn(&[], chunk, &[])).map_err(|e| format!("seeding the state: {e}"))?;
            if !out.succeeded {
                return Err("seeding the state: a transaction without comparisons failed".into());
            }
        }
        Ok(())
    }

    /// The environment of replica `node`.
    pub(crate) fn env(&self, node: &str, endpoints: &[String], ttl_s: u64) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("VMSH_ROOT", self.root.display().to_string()),
            ("VMSH_NAMESPACES", self.root.join("namespaces.yaml").display().to_string()),
            ("METRICS_PORT", "0".into()),
            ("METRICS_HOST", "127.0.0.1".into()),
            ("LOG_FORMAT", "json".into()),
            ("LOG_LEVEL", "info".into()),
            // As in the scale benchmark: a `local:` anchor waits on group-commit rounds and,
            // here, on etcd; many waiting together cost little (a worker is not a thread).
            ("VMSH_ANCHOR_WORKERS", "256".into()),
            ("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false".into()),
            ("VMSH_ETCD_ENDPOINTS", endpoints.join(",")),
            ("VMSH_ETCD_PREFIX", self.prefix.clone()),
            ("VMSH_NODE_ID", node.to_string()),
            ("VMSH_ETCD_LEASE_TTL_S", ttl_s.to_string()),
        ] {
            env.insert(k.to_string(), v);
        }
        env
    }
}

/// A client of the benchmark's own, for seeding and for reading the claims.
pub(crate) fn client(endpoints: &[String]) -> Result<Etcd, String> {
    Etcd::new(EtcdOptions {
        endpoints: endpoints.to_vec(),
        tls: EtcdTls::default(),
        auth: None,
        request_timeout: Duration::from_secs(10),
    })
    .map_err(|e| format!("etcd client: {e}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
