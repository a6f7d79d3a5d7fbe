//! One scheduler replica under measurement: the release binary in cluster mode, observed
//! through its JSON log (every committed anchor, by namespace), its HTTP port and `/proc`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::fleet::index;
use crate::service::{BIN, get};

/// An anchor the replica logged as `anchored`: final, its receipt recorded in etcd.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchored {
    /// When the line was read.
    pub at: Instant,
    /// The namespace's index.
    pub ns: u32,
    /// How late its first send began, for a first send.
    pub lag_ms: Option<i64>,
    /// The target already held it: an attempt resumed after a move, not sent again.
    pub recovered: bool,
}

/// What the log reader keeps.
#[derive(Default)]
struct Seen {
    anchored: Vec<Anchored>,
    /// When it said it lost its claims with its lease.
    losses: Vec<Instant>,
    problems: Vec<String>,
    addr: Option<SocketAddr>,
}

/// A running replica; killed (SIGKILL) when dropped.
pub(crate) struct Replica {
    /// Its node id.
    pub node: String,
    child: Child,
    seen: Arc<Mutex<Seen>>,
    /// When it was spawned.
    pub spawned: Instant,
    /// Its HTTP address, once it said it.
    pub addr: Option<SocketAddr>,
    /// From spawn to /readyz answering 200, once it did.
    pub ready: Option<Duration>,
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Replica {
    /// Spawns the binary as `node` with `env` (and nothing else of this process's
    /// environment but PATH); does not wait for it.
    pub(crate) fn spawn(node: &str, env: &BTreeMap<String, String>) -> Result<Self, String> {
        let spawned = Instant::now();
        let mut command = Command::new(BIN);
        crate::etcd::die_with_parent(&mut command);
        let mut child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {BIN}: {e}"))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let out = child.stdout.take().ok_or("no stdout")?;
        let sink = Arc::clone(&seen);
        let copy = log_copy(node)?;
        std::thread::spawn(move || read_log(out, &sink, copy));
        let err = child.stderr.take().ok_or("no stderr")?;
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(err).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                let mut seen = lock(&sink);
                if seen.problems.len() < 10_000 {
                    seen.problems.push(format!("stderr: {line}"));
                }
            }
        });
        Ok(Self { node: node.to_string(), child, seen, spawned, addr: None, ready: None })
    }

    /// Whether /readyz answers 200 now; records the time to ready the first time it does.
    /// An exit is an error.
    pub(crate) fn poll_ready(&mut self) -> Result<bool, String> {
        if self.ready.is_some() {
            return Ok(true);
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("replica {} exited with {status}: {}", self.node, self.problems()));
        }
        if self.addr.is_none() {
            self.addr = lock(&self.seen).addr;
        }
        let Some(addr) = self.addr else { return Ok(false) };
        if get(addr, "/readyz").is_ok_and(|r| r.status == 200) {
            self.ready = Some(self.spawned.elapsed());
            return Ok(true);
        }
        Ok(false)
    }

    /// SIGHUP: look at the namespaces file now.
    pub(crate) fn hangup(&self) -> Result<(), String> {
        let pid = i32::try_from(self.pid()).map_err(|_| "pid")?;
        // SAFETY: kill only sends a signal, to our own child.
        if unsafe { libc::kill(pid, libc::SIGHUP) } == 0 {
            Ok(())
        } else {
            Err(format!("cannot signal {}: {}", self.node, std::io::Error::last_os_error()))
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A GET on its HTTP port, as JSON.
    pub(crate) fn json(&self, path: &str) -> Result<Value, String> {
        let addr = self.addr.ok_or_else(|| format!("replica {} has no address yet", self.node))?;
        let reply = get(addr, path)?;
        serde_json::from_slice(&reply.body).map_err(|e| format!("{path} of {}: {e}", self.node))
    }

    /// Its /metrics text.
    pub(crate) fn metrics(&self) -> Result<String, String> {
        let addr = self.addr.ok_or_else(|| format!("replica {} has no address yet", self.node))?;
        let reply = get(addr, "/metrics")?;
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// The anchors it logged at or after `since`.
    pub(crate) fn anchored_since(&self, since: Instant) -> Vec<Anchored> {
        let seen = lock(&self.seen);
        let from = seen.anchored.partition_point(|a| a.at < since);
        seen.anchored[from..].to_vec()
    }

    /// How many times since `since` it lost every claim with its member lease.
    pub(crate) fn lease_losses_since(&self, since: Instant) -> usize {
        lock(&self.seen).losses.iter().filter(|t| **t >= since).count()
    }

    /// Warnings, errors and stderr so far (the last few).
    pub(crate) fn problems(&self) -> String {
        let seen = lock(&self.seen);
        let n = seen.problems.len();
        seen.problems[n.saturating_sub(5)..].join("\n")
    }

    /// kill -9: the process ends with no chance to let go of anything.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (it leaves the cluster, revoking its lease).
    pub(crate) fn stop(mut self, limit: Duration) -> Result<(), String> {
        let pid = i32::try_from(self.pid()).map_err(|_| "pid")?;
        // SAFETY: kill only sends a signal, to our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if t0.elapsed() > limit => return Err(format!("{} did not stop within {limit:?}", self.node)),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where replica `node`'s log is copied: a new file under `$VMSH_BENCH_LOGS`, when set.
fn log_copy(node: &str) -> Result<Option<std::io::BufWriter<std::fs::File>>, String> {
    let Some(dir) = std::env::var_os("VMSH_BENCH_LOGS") else { return Ok(None) };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let path = dir.join(format!("{node}-{stamp}.log"));
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(std::io::BufWriter::new(file)))
}

fn read_log(out: impl Read, seen: &Mutex<Seen>, mut copy: Option<std::io::BufWriter<std::fs::File>>) {
    // Read as bytes: a line that is not UTF-8 must not end the reading, or the replica
    // would block on a full pipe.
    let mut reader = BufReader::with_capacity(1 << 20, out);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let at = Instant::now();
        if let Some(w) = copy.as_mut() {
            let _ = w.write_all(&raw);
        }
        let line = String::from_utf8_lossy(&raw);
        // Cheap test first: only the lines the benchmark uses are parsed.
        let anchored = line.contains("\"msg\":\"anchored\"");
        if line.contains("\"msg\":\"cluster: namespaces lost with the member lease") {
            lock(seen).losses.push(at);
        }
        if !anchored
            && !line.contains("\"msg\":\"vmsh-scheduler started\"")
            && !line.contains("\"level\":\"WARN\"")
            && !line.contains("\"level\":\"ERRO\"")
        {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        let mut seen = lock(seen);
        match v["msg"].as_str() {
            Some("anchored") => {
                let Some(ns) = v["ns"].as_str().and_then(index).and_then(|i| u32::try_from(i).ok()) else { continue };
                seen.anchored.push(Anchored {
                    at,
                    ns,
                    lag_ms: v["lag_ms"].as_i64(),
                    recovered: v["recovered"].as_bool().unwrap_or(false),
                });
            }
            Some("vmsh-scheduler started") => seen.addr = v["addr"].as_str().and_then(|a| a.parse().ok()),
            _ => {
                if seen.problems.len() < 10_000 {
                    seen.problems.push(line.trim_end().to_string());
                }
            }
        }
    }
}
