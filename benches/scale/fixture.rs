//! The files a measured scheduler runs on: N namespaces with three `local:` cadences each (or
//! all to one `exec:` target), one shared batch, and a state file that says when each cadence
//! last anchored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, json};
use vmsh_scheduler::model::digest::sha256_hex;

/// Journals the namespaces share, round robin: a deployment groups namespaces by target.
pub(crate) const JOURNALS: usize = 16;

/// The target of failing namespaces: a command that always fails.
pub(crate) const FAILING: &str = "exec:refused";

/// The root anchored by every namespace.
pub(crate) const ROOT_HEX: &str = "5bd2f6cfdc3c4e36ce1e2a7ed6bc59c4c9a9a0a4f8c1fe3f36f3aa5b7b0c3a11";

/// How each namespace's cadences are set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Periods {
    /// Far from due: fast every hour, cold daily.
    Idle,
    /// Fast every 1–5 s (by namespace index), strong every 34 fast periods, cold daily.
    Mixed,
    /// Fast every `n` seconds for every namespace; strong too when `both`.
    Uniform { fast_s: u64, both: bool },
}

impl Periods {
    /// The fast period of namespace `i`, in seconds.
    pub(crate) fn fast_s(self, i: usize) -> u64 {
        match self {
            Periods::Idle => 3600,
            Periods::Mixed => (i % 5) as u64 + 1,
            Periods::Uniform { fast_s, .. } => fast_s,
        }
    }

    /// The strong period of namespace `i`, in seconds.
    pub(crate) fn strong_s(self, i: usize) -> u64 {
        match self {
            Periods::Uniform { fast_s, both: true } => fast_s,
            _ => 34 * self.fast_s(i),
        }
    }

    /// Anchors per second this asks of `n` namespaces in steady state (cold adds ~nothing).
    pub(crate) fn demand(self, n: usize) -> f64 {
        (0..n).map(|i| 1.0 / self.fast_s(i) as f64 + 1.0 / self.strong_s(i) as f64).sum()
    }
}

/// A scheduler's working folder.
pub(crate) struct Layout {
    /// VMSH_ROOT.
    pub dir: PathBuf,
    /// Namespace count.
    pub n: usize,
}

/// The name of namespace `i`.
pub(crate) fn name(i: usize) -> String {
    format!("bench:ns{i:06}")
}

impl Layout {
    /// A new folder for `n` namespaces. Folders are kept until the whole run ends: deleting
    /// hundreds of thousands of receipts slows the file system's next writes for a while,
    /// which would be measured as the scheduler's cost.
    pub(crate) fn new(base: &Path, n: usize, label: &str) -> Result<Self, String> {
        let dir = base.join(format!("{n}-{label}"));
        if dir.exists() {
            return Err(format!("{} already exists: every phase needs a folder of its own", dir.display()));
        }
        std::fs::create_dir_all(dir.join("out/batches")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let batch = json!({"id": "bench-1", "root": format!("sha256:{ROOT_HEX}")});
        write(&dir.join("out/batches/0001.json"), batch.to_string().as_bytes())?;
        Ok(Self { dir, n })
    }

    /// The namespaces file path.
    pub(crate) fn namespaces_path(&self) -> PathBuf {
        self.dir.join("namespaces.yaml")
    }

    /// The state file path.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.dir.join("state/scheduler.json")
    }

    /// Writes the namespaces file; `cold` is the cold period (changing it changes every
    /// namespace). Returns the file's SHA-256, which the scheduler logs on reload.
    pub(crate) fn write_namespaces(
        &self,
        periods: Periods,
        cold: &str,
        first_fast: Option<&str>,
    ) -> Result<String, String> {
        self.write_namespaces_to(periods, cold, first_fast, None, 0)
    }

    /// The targets file path.
    pub(crate) fn anchors_path(&self) -> PathBuf {
        self.dir.join("anchors.yaml")
    }

    /// Writes a targets file with one `exec:<name>` target running `command`.
    pub(crate) fn write_exec_target(&self, name: &str, command: &[&str]) -> Result<(), String> {
        let yaml = format!("exec:\n  {name}: {{command: {}}}\n", json!(command));
        write(&self.anchors_path(), yaml.as_bytes())
    }

    /// As [`Layout::write_namespaces`], with every cadence to `target` when one is given
    /// (else to the `local:` journals); the first `failing` namespaces anchor fast every 2 s
    /// to [`FAILING`] instead.
    pub(crate) fn write_namespaces_to(
        &self,
        periods: Periods,
        cold: &str,
        first_fast: Option<&str>,
        target: Option<&str>,
        failing: usize,
    ) -> Result<String, String> {
        let mut yaml = String::with_capacity(self.n * 200);
        yaml.push_str("namespaces:\n");
        for i in 0..self.n {
            let to = target.map_or_else(|| format!("local:j{:02}", i % JOURNALS), str::to_string);
            let fast = match (i, first_fast) {
                _ if i < failing => "2s".to_string(),
                (0, Some(f)) => f.to_string(),
                _ => format!("{}s", periods.fast_s(i)),
            };
            let to = if i < failing { FAILING.to_string() } else { to };
            let strong = match periods {
                Periods::Uniform { both: true, .. } => fast.clone(),
                _ => "34*fast".to_string(),
            };
            let _ = writeln!(
                yaml,
                "  \"{}\":\n    cadence:\n      fast: {{target: \"{to}\", every: \"{fast}\"}}\n      strong: {{target: \"{to}\", every: \"{strong}\"}}\n      cold: {{target: \"{to}\", every: \"{cold}\"}}",
                name(i)
            );
        }
        write(&self.namespaces_path(), yaml.as_bytes())?;
        Ok(sha256_hex(yaml.as_bytes()))
    }

    /// Writes a state file in which every cadence last anchored the batch at a time that
    /// puts its next run `phase(i)` of its period from `now_ms` (0 = due now, 1 = a period away).
    pub(crate) fn write_state(
        &self,
        periods: Periods,
        now_ms: i64,
        phase: impl Fn(usize) -> f64,
    ) -> Result<(), String> {
        let mut namespaces = Map::new();
        for i in 0..self.n {
            let mut cadences = Map::new();
            for (kind, period_s) in [("fast", periods.fast_s(i)), ("strong", periods.strong_s(i)), ("cold", 86_400)] {
                let period_ms = period_s as f64 * 1000.0;
                let last = now_ms - (period_ms * (1.0 - phase(i))).round() as i64;
                cadences.insert(
                    kind.to_string(),
                    json!({
                        "lastSuccessMs": last,
                        "lastBatch": {"id": "bench-1", "root": format!("sha256:{ROOT_HEX}")},
                        "backoff": 0,
                        "failures": 0,
                    }),
                );
            }
            namespaces.insert(name(i), json!({ "cadences": cadences }));
        }
        let state = json!({"version": 1, "namespaces": namespaces});
        let path = self.state_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write(&path, &serde_json::to_vec(&state).map_err(|e| e.to_string())?)
    }

    /// The environment the scheduler runs with.
    pub(crate) fn env(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("VMSH_ROOT", self.dir.display().to_string());
        set("VMSH_NAMESPACES", self.namespaces_path().display().to_string());
        set("VMSH_STATE", self.state_path().display().to_string());
        set("METRICS_PORT", "0".into());
        set("METRICS_HOST", "127.0.0.1".into());
        set("LOG_FORMAT", "json".into());
        set("LOG_LEVEL", "info".into());
        // The default tick (10 s): re-reading a large namespaces file is part of idle cost. Reloads
        // are triggered with SIGHUP, so they are measured, not waited for.
        for (k, v) in extra {
            set(k, (*v).to_string());
        }
        env
    }

    /// Size of the state folder's files (the state file and anything beside it), bytes.
    pub(crate) fn state_bytes(&self) -> u64 {
        let Some(dir) = self.state_path().parent().map(Path::to_path_buf) else { return 0 };
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    // Written whole under a temporary name, then renamed: the scheduler may be reading it.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The value of the first sample of `name` (exact name, any labels) in Prometheus text.
pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let n = series.split('{').next()?;
        (n == name).then(|| value.parse().ok()).flatten()
    })
}

/// Series whose labels include `namespace="<name>"`, for one namespace.
pub(crate) fn series_of(text: &str, namespace: &str) -> usize {
    let needle = format!("namespace=\"{namespace}\"");
    text.lines().filter(|l| !l.starts_with('#') && l.contains(&needle)).count()
}

/// Every series in a scrape.
pub(crate) fn series_count(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}
