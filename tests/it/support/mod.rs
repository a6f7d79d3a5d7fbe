//! Test harness: runs the real `vmsh-scheduler` binary in a temporary VMSH_ROOT on a free
//! loopback port, collects its JSON log lines, and talks to it over HTTP; and the doubles the
//! suites share: the targets a scheduler anchors to in the tests.

pub mod fake_bitcoind;
pub mod tsa_server;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmsh_scheduler::health::contract::{Cadence, Config, Health, LastError, Namespace, Reload};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vmsh-scheduler");

/// A root hash usable in batches.
pub fn root_hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Polls `check` every 25 ms until it returns `Some`, or panics after `limit` naming `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A temporary VMSH_ROOT with the files a scheduler needs.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// An empty root.
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create temp root") }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the namespaces file.
    pub fn namespaces(&self, yaml: &str) -> &Self {
        write_file(&self.path().join("namespaces.yaml"), yaml);
        self
    }

    /// Writes the targets file.
    pub fn anchors(&self, yaml: &str) -> &Self {
        write_file(&self.path().join("anchors.yaml"), yaml);
        self
    }

    /// Writes a batch for `ns` (or the shared folder when `ns` is `None`).
    pub fn batch(&self, ns: Option<&str>, file: &str, id: &str, root: &str) -> &Self {
        let mut dir = self.path().join("out/batches");
        if let Some(ns) = ns {
            dir = dir.join(vmsh_scheduler::fsname::encode(ns));
        }
        write_file(&dir.join(file), &format!(r#"{{"id":"{id}","root":"sha256:{root}"}}"#));
        self
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.path().join("state/scheduler.json")
    }

    /// The parsed state file.
    pub fn state(&self) -> Value {
        // The state file is a snapshot; changes since are in its log, replayed as a restart would.
        let (state, _) = vmsh_scheduler::state::load(&self.state_path()).expect("state loads");
        serde_json::to_value(state).expect("state is JSON")
    }

    /// Replaces the whole durable state: writes the state file and removes its logs.
    pub fn write_state(&self, state: &Value) {
        let path = self.state_path();
        for log in [vmsh_scheduler::state::wal::path(&path), vmsh_scheduler::state::wal::rotated_path(&path)] {
            let _ = std::fs::remove_file(log);
        }
        write_file(&path, &state.to_string());
    }

    /// The raw text of the state file and its logs, for checks of what reaches the disk.
    pub fn state_text(&self) -> String {
        let path = self.state_path();
        [path.clone(), vmsh_scheduler::state::wal::rotated_path(&path), vmsh_scheduler::state::wal::path(&path)]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every receipt of a namespace, oldest first.
    pub fn receipts(&self, ns: &str) -> Vec<Value> {
        let dir = self.path().join("out/anchors").join(vmsh_scheduler::fsname::encode(ns));
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("dir entry").path()).collect();
        paths.sort();
        paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read receipt")).expect("receipt is JSON"))
            .collect()
    }

    /// The journal file of a `local:` target.
    pub fn journal(&self, name: &str) -> PathBuf {
        vmsh_scheduler::anchor::local::LocalDriver::journal_path(self.path(), name)
    }
}

/// Writes a file, creating its folder.
pub fn write_file(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write file");
}

/// A running scheduler.
pub struct Scheduler {
    child: Child,
    /// Where its HTTP server listens.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    /// Set once both output streams reached end of file.
    drained: Arc<AtomicUsize>,
}

/// The environment every test scheduler starts with; tests add or replace entries.
pub fn base_env(root: &Root) -> BTreeMap<String, String> {
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
/// environment), in `root` as working folder.
pub fn command(root: &Root, env: &BTreeMap<String, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(root.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

impl Scheduler {
    /// Starts a scheduler with the base environment.
    pub fn start(root: &Root) -> Self {
        Self::start_with(root, &[])
    }

    /// Starts a scheduler with extra environment variables, and waits until it listens.
    pub fn start_with(root: &Root, extra: &[(&str, &str)]) -> Self {
        Self::start_with_args(root, extra, &[])
    }

    /// Everything logged so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The first log line whose `msg` is `msg`.
    pub fn log_with_msg(&self, msg: &str) -> Option<Value> {
        self.logs.lock().expect("log lock").iter().find(|l| l["msg"] == msg).cloned()
    }

    /// Every log line whose `msg` is `msg`.
    pub fn logs_with_msg(&self, msg: &str) -> Vec<Value> {
        self.logs.lock().expect("log lock").iter().filter(|l| l["msg"] == msg).cloned().collect()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// GET `path`; returns status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path)
    }

    /// GET /health, read as the typed contract.
    pub fn health(&self) -> Health {
        self.health_answer().1
    }

    /// GET /health: its status code and the document read as the typed contract.
    pub fn health_answer(&self) -> (u16, Health) {
        let (code, body) = self.get("/health");
        let health = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/health ({code}) does not read as the contract: {e}\n{body}"));
        (code, health)
    }

    /// A namespace's cadence in /health, while it has one (`None` lets a wait go on).
    pub fn cadence(&self, ns: &str, kind: &str) -> Option<Cadence> {
        self.health().cadence(ns, kind).cloned()
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics answered {code}");
        body
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits for the process to exit and for everything it wrote to be collected.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_for(limit, "the scheduler to exit", || self.child.try_wait().expect("try_wait"));
        wait_for(Duration::from_secs(5), "its output to be read to the end", || {
            (self.drained.load(Ordering::SeqCst) == 2).then_some(())
        });
        status
    }

    /// Waits for a log line with this `msg` (lines are written asynchronously).
    pub fn wait_log(&self, msg: &str) -> Value {
        wait_for(Duration::from_secs(5), &format!("a log line {msg:?}"), || self.log_with_msg(msg))
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.1 request; enough for loopback tests.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (code, _, body) = http_with_head(addr, method, path);
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of one sample in Prometheus text, matched by name and label subset.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

impl Scheduler {
    /// Like [`Scheduler::start_with`], with command-line arguments (e.g. `--reset-corrupt-state`).
    pub fn start_with_args(root: &Root, extra: &[(&str, &str)], args: &[&str]) -> Self {
        let mut env = base_env(root);
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        Self::start_command(command(root, &env, args))
    }

    /// Starts a command prepared with [`command`] (e.g. with a `pre_exec` hook), and waits
    /// until it listens.
    pub fn start_command(mut cmd: Command) -> Self {
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

/// A targets file with one `exec:` target per `(name, shell script)`, each run as `sh -c SCRIPT`.
/// Scripts see the scheduler's environment, so `$VMSH_ROOT` is the test's temporary root.
pub fn exec_targets(targets: &[(&str, &str)]) -> String {
    let mut yaml = String::from("exec:\n");
    for (name, script) in targets {
        let command = serde_json::json!(["sh", "-c", script]);
        yaml.push_str(&format!("  {name}: {{command: {command}}}\n"));
    }
    yaml
}

/// The non-empty lines of a file (none when it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The `date +%s.%N` stamps a script appended to `path`, in seconds.
pub fn stamps(path: &Path) -> Vec<f64> {
    lines(path).iter().map(|l| l.parse().unwrap_or_else(|_| panic!("bad stamp {l:?} in {}", path.display()))).collect()
}

/// Whether a process is gone or a zombie (dead, awaiting its reaper).
pub fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// `lastTick` of /health, Unix ms.
pub fn last_tick(s: &Scheduler) -> Option<i64> {
    s.health().last_tick
}

/// Parts of /health a test needs: a missing one fails the test, showing the document.
pub trait HealthParts {
    /// A namespace.
    fn ns(&self, name: &str) -> &Namespace;
    /// A namespace's cadence (`fast`, `strong` or `cold`).
    fn cadence_of(&self, ns: &str, kind: &str) -> &Cadence;
    /// The running config.
    fn running_config(&self) -> &Config;
    /// The outcome of the last config change seen on disk.
    fn last_reload(&self) -> &Reload;
}

impl HealthParts for Health {
    fn ns(&self, name: &str) -> &Namespace {
        self.namespace(name).unwrap_or_else(|| panic!("no namespace {name:?} in /health: {self}"))
    }

    fn cadence_of(&self, ns: &str, kind: &str) -> &Cadence {
        self.cadence(ns, kind).unwrap_or_else(|| panic!("no cadence {ns:?}.{kind} in /health: {self}"))
    }

    fn running_config(&self) -> &Config {
        self.config.as_ref().unwrap_or_else(|| panic!("no config in /health: {self}"))
    }

    fn last_reload(&self) -> &Reload {
        self.running_config().last_reload.as_ref().unwrap_or_else(|| panic!("no lastReload in /health: {self}"))
    }
}

/// Parts of a cadence in /health a test needs: a missing one fails the test, showing the cadence.
pub trait CadenceParts {
    /// The last failure since the last success.
    fn error(&self) -> &LastError;
}

impl CadenceParts for Cadence {
    fn error(&self) -> &LastError {
        self.last_error.as_ref().unwrap_or_else(|| panic!("no lastError in the cadence: {self}"))
    }
}

/// Waits until the scheduler's config tick has run for at least `ms` more milliseconds: proof
/// that time passed while it kept working (used to show that something did not happen).
pub fn wait_ticking(s: &Scheduler, ms: i64, limit: Duration) {
    let first = wait_for(limit, "a first config tick", || last_tick(s));
    wait_for(limit, "the config tick to keep advancing", || last_tick(s).filter(|t| *t >= first + ms));
}

/// Replaces a file atomically: writes a hidden temporary sibling (`.<name>.tmp`, which neither
/// the batch reader nor the config reader looks at), then renames it over `path`.
pub fn write_file_atomic(path: &Path, content: &str) {
    let dir = path.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("mkdir");
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename temporary file into place");
}

/// Like [`http`], but also returns the response head (status line and headers) as text.
pub fn http_with_head(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (code, head.to_string(), if chunked { dechunk(body) } else { body.to_string() })
}

/// The wall clock in Unix milliseconds, as the scheduler sees it.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit in i64")
}

/// SHA-256 (hex) of a file's content, as the scheduler reports config hashes.
pub fn file_sha256(path: &Path) -> String {
    vmsh_scheduler::model::digest::sha256_hex(&std::fs::read(path).expect("read file to hash"))
}

/// The receipt files of a namespace, oldest first.
pub fn receipt_files(root: &Root, ns: &str) -> Vec<PathBuf> {
    let dir = root.path().join("out/anchors").join(vmsh_scheduler::fsname::encode(ns));
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.map(|e| e.expect("entry").path()).collect()).unwrap_or_default();
    // A receipt is written under a hidden temporary name, then renamed: only the renamed one
    // is a receipt (the temporary may be gone by the time it would be read).
    files.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        !name.starts_with('.') && name.ends_with(".json")
    });
    files.sort();
    files
}

/// Runs `vmsh-scheduler verify RECEIPT [args]` with the root's environment; exit code and stdout.
pub fn run_verify(root: &Root, receipt: &Path, args: &[&str]) -> (i32, String) {
    let receipt = receipt.display().to_string();
    let mut all = vec!["verify", receipt.as_str()];
    all.extend_from_slice(args);
    let out = command(root, &base_env(root), &all).output().expect("run verify");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
}
