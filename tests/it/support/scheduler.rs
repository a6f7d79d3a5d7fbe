//! A running `vmsh-scheduler`: the real binary started in a test's root on a free loopback
//! port, its JSON log lines collected, and its HTTP endpoints read.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vmsh_scheduler::health::contract::{Cadence, Health};

use super::{Root, http, wait_for};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_vmsh-scheduler");

/// A running scheduler.
pub(crate) struct Scheduler {
    child: Child,
    /// Where its HTTP server listens.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    /// Set once both output streams reached end of file.
    drained: Arc<AtomicUsize>,
}

/// The environment every test scheduler starts with; tests add or replace entries.
pub(crate) fn base_env(root: &Root) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let p = root.path();
    env.insert("VMSH_ROOT".into(), p.display().to_string());
    env.insert("VMSH_NAMESPACES".into(), p.join("namespaces.yaml").display().to_string());
    env.insert("VMSH_STATE".into(), root.state_path().display().to_string());
    if p.join("anchors.yaml").exists() {
        env.insert("VMSH_ANCHORS".into(), p.join("anchors.yaml").display().to_string());
    }
    env.insert("METRICS_PORT".into(), "0".into());
    env.insert("METRICS_HOST".into(), "127.0.0.1".into());
    env.insert("VMSH_TICK_MS".into(), "100".into());
    env.insert("VMSH_BASE_BACKOFF".into(), "0.4".into());
    env.insert("VMSH_ANCHOR_TIMEOUT_S".into(), "10".into());
    env.insert("VMSH_SHUTDOWN_GRACE_S".into(), "5".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    env.insert("LOG_LEVEL".into(), "debug".into());
    env
}

/// Starts the binary with `args` and `env` (and nothing else from this process's
/// environment but `PATH` and `RUST_BACKTRACE`, so a crash's backtrace can be asked for), in
/// `root` as working folder.
pub(crate) fn command(root: &Root, env: &BTreeMap<String, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(root.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .envs(std::env::var("RUST_BACKTRACE").ok().map(|v| ("RUST_BACKTRACE", v)))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

impl Scheduler {
    /// Starts a scheduler with the base environment.
    pub(crate) fn start(root: &Root) -> Self {
        Self::start_with(root, &[])
    }

    /// Starts a scheduler with extra environment variables, and waits until it listens.
    pub(crate) fn start_with(root: &Root, extra: &[(&str, &str)]) -> Self {
        Self::start_with_args(root, extra, &[])
    }

    /// Everything logged so far.
    pub(crate) fn logs(&self) -> Vec<Value> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The first log line whose `msg` is `msg`.
    pub(crate) fn log_with_msg(&self, msg: &str) -> Option<Value> {
        self.logs.lock().expect("log lock").iter().find(|l| l["msg"] == msg).cloned()
    }

    /// Every log line whose `msg` is `msg`.
    pub(crate) fn logs_with_msg(&self, msg: &str) -> Vec<Value> {
        self.logs.lock().expect("log lock").iter().filter(|l| l["msg"] == msg).cloned().collect()
    }

    /// What it wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// GET `path`; returns status and body.
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path)
    }

    /// GET /health, read as the typed contract.
    pub(crate) fn health(&self) -> Health {
        self.health_answer().1
    }

    /// GET /health: its status code and the document read as the typed contract.
    pub(crate) fn health_answer(&self) -> (u16, Health) {
        let (code, body) = self.get("/health");
        let health = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/health ({code}) does not read as the contract: {e}\n{body}"));
        (code, health)
    }

    /// A namespace's cadence in /health, while it has one (`None` lets a wait go on).
    pub(crate) fn cadence(&self, ns: &str, kind: &str) -> Option<Cadence> {
        self.health().cadence(ns, kind).cloned()
    }

    /// GET /metrics.
    pub(crate) fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics answered {code}");
        body
    }

    /// Sends a signal.
    pub(crate) fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits for the process to exit and for everything it wrote to be collected.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_for(limit, "the scheduler to exit", || self.child.try_wait().expect("try_wait"));
        wait_for(Duration::from_secs(5), "its output to be read to the end", || {
            (self.drained.load(Ordering::SeqCst) == 2).then_some(())
        });
        status
    }

    /// Waits for a log line with this `msg` (lines are written asynchronously).
    pub(crate) fn wait_log(&self, msg: &str) -> Value {
        wait_for(Duration::from_secs(5), &format!("a log line {msg:?}"), || self.log_with_msg(msg))
    }

    /// Kills it with SIGKILL and reaps it.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Like [`Scheduler::start_with`], with command-line arguments (e.g. `--reset-corrupt-state`).
    pub(crate) fn start_with_args(root: &Root, extra: &[(&str, &str)], args: &[&str]) -> Self {
        let mut env = base_env(root);
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        Self::start_command(command(root, &env, args))
    }

    /// Starts a command prepared with [`command`] (e.g. with a `pre_exec` hook), and waits
    /// until it listens.
    pub(crate) fn start_command(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("start vmsh-scheduler");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let drained = Arc::new(AtomicUsize::new(0));
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&logs);
        let done = Arc::clone(&drained);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
                sink.lock().expect("log lock").push(v);
            }
            done.fetch_add(1, Ordering::SeqCst);
        });
        let err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        let done = Arc::clone(&drained);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err).read_to_string(&mut text);
            sink.lock().expect("stderr lock").push_str(&text);
            done.fetch_add(1, Ordering::SeqCst);
        });
        let mut s = Scheduler { child, addr: "127.0.0.1:1".parse().expect("addr"), logs, stderr, drained };
        let addr = wait_for(Duration::from_secs(20), "the scheduler to start listening", || {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("scheduler exited during start-up with {status}: {}", s.stderr());
            }
            s.log_with_msg("vmsh-scheduler started").and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()))
        });
        s.addr = addr;
        s
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of one sample in Prometheus text, matched by name and label subset.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let all = labels.iter().all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all { value.parse().ok() } else { None }
    })
}

/// The wall clock in Unix milliseconds, as the scheduler sees it.
pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit in i64")
}

/// Runs `vmsh-scheduler verify RECEIPT [args]` with the root's environment; exit code and stdout.
pub(crate) fn run_verify(root: &Root, receipt: &Path, args: &[&str]) -> (i32, String) {
    let receipt = receipt.display().to_string();
    let mut all = vec!["verify", receipt.as_str()];
    all.extend_from_slice(args);
    let out = command(root, &base_env(root), &all).output().expect("run verify");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
}
