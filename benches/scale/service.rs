//! One running scheduler under measurement: started from the binary Cargo built, observed
//! through its JSON log lines, its HTTP port and `/proc`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test, built by Cargo with the benchmark's profile.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_vmsh-scheduler");

/// What the log reader keeps: lags of first sends, and reload reports.
#[derive(Default)]
pub(crate) struct Seen {
    /// `(when the line was read, lag_ms)` of every first send's lag: on its `anchored` line, or
    /// on its `anchor sent` line when it waits for confirmations.
    pub anchored: Vec<(Instant, i64)>,
    /// `(hash, took_ms)` of every "config reloaded" line.
    pub reloads: Vec<(String, i64)>,
    /// Lines at warn or above, for the report when something goes wrong.
    pub problems: Vec<String>,
    /// The HTTP address, once started.
    pub addr: Option<SocketAddr>,
}

/// A running scheduler; killed when dropped.
pub(crate) struct Service {
    child: Child,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// What its log said so far.
    pub seen: Arc<Mutex<Seen>>,
    /// From spawn to /readyz answering 200.
    pub ready: Duration,
}

impl Service {
    /// Starts the binary in `dir` with `env` (and nothing else of this process's
    /// environment but PATH), and waits until it is ready.
    pub(crate) fn start(dir: &Path, env: &BTreeMap<String, String>, limit: Duration) -> Result<Self, String> {
        let spawned = Instant::now();
        let mut child = Command::new(BIN)
            .current_dir(dir)
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
        std::thread::spawn(move || read_log(out, &sink));
        let err = child.stderr.take().ok_or("no stderr")?;
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lock(&sink).problems.push(format!("stderr: {line}"));
            }
        });
        let mut service = Service { child, addr: "127.0.0.1:1".parse().map_err(|_| "addr")?, seen, ready: limit };
        let deadline = spawned + limit;
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(format!("the scheduler exited during start-up with {status}: {}", service.problems()));
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {limit:?}: {}", service.problems()));
            }
            let addr = lock(&service.seen).addr;
            if let Some(addr) = addr {
                service.addr = addr;
                if get(addr, "/readyz").is_ok_and(|r| r.status == 200) {
                    service.ready = spawned.elapsed();
                    return Ok(service);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP: look at the config files now.
    pub(crate) fn hangup(&self) -> Result<(), String> {
        let pid = i32::try_from(self.pid()).map_err(|e| e.to_string())?;
        // SAFETY: kill only sends a signal, to our own child.
        if unsafe { libc::kill(pid, libc::SIGHUP) } == 0 {
            Ok(())
        } else {
            Err(format!("cannot signal the scheduler: {}", std::io::Error::last_os_error()))
        }
    }

    /// Warnings, errors and stderr so far (the last few).
    pub(crate) fn problems(&self) -> String {
        let seen = lock(&self.seen);
        let n = seen.problems.len();
        seen.problems[n.saturating_sub(5)..].join("\n")
    }

    /// Lags (ms) of the first sends logged since `since`.
    pub(crate) fn lags_since(&self, since: Instant) -> Vec<i64> {
        lock(&self.seen).anchored.iter().filter(|(t, _)| *t >= since).map(|(_, lag)| *lag).collect()
    }

    /// Waits for the "config reloaded" line of the namespaces file with this hash; its `took_ms`.
    pub(crate) fn wait_reload(&self, hash: &str, limit: Duration) -> Result<i64, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((_, took)) = lock(&self.seen).reloads.iter().find(|(h, _)| h == hash) {
                return Ok(*took);
            }
            if Instant::now() > deadline {
                return Err(format!("no reload of {hash} within {limit:?}: {}", self.problems()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// CPU seconds used so far (user + system) and the resident set (KiB).
    pub(crate) fn usage(&self) -> Result<(f64, u64), String> {
        proc_usage(self.pid())
    }

    /// SIGTERM, then waits for the exit; how long the shutdown took.
    pub(crate) fn stop(mut self, limit: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        let pid = i32::try_from(self.pid()).map_err(|_| "pid")?;
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(t0.elapsed()),
                Ok(Some(status)) => return Err(format!("exited with {status}: {}", self.problems())),
                Ok(None) if t0.elapsed() > limit => return Err(format!("did not stop within {limit:?}")),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_log(out: impl Read, seen: &Mutex<Seen>) {
    for line in BufReader::with_capacity(1 << 20, out).lines().map_while(Result::ok) {
        let now = Instant::now();
        // Cheap test first: at thousands of lines a second only the interesting ones are parsed.
        // A first send that waits for confirmations says its lag when sent, not when final.
        let anchored = line.contains("\"msg\":\"anchored\"")
            || line.contains("\"msg\":\"anchor sent; waiting for confirmations\"");
        if !anchored
            && !line.contains("\"msg\":\"config reloaded\"")
            && !line.contains("\"msg\":\"vmsh-scheduler started\"")
            && !line.contains("\"level\":\"WARN\"")
            && !line.contains("\"level\":\"ERRO\"")
        {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        let mut seen = lock(seen);
        match v["msg"].as_str() {
            Some("anchored" | "anchor sent; waiting for confirmations") => {
                if let Some(lag) = v["lag_ms"].as_i64() {
                    seen.anchored.push((now, lag));
                }
            }
            Some("config reloaded") => {
                let hash = v["hash"].as_str().unwrap_or_default().to_string();
                seen.reloads.push((hash, v["took_ms"].as_i64().unwrap_or(-1)));
            }
            Some("vmsh-scheduler started") => seen.addr = v["addr"].as_str().and_then(|a| a.parse().ok()),
            _ => {
                if seen.problems.len() < 10_000 {
                    seen.problems.push(line);
                }
            }
        }
    }
}

/// CPU seconds (user + system) and VmRSS (KiB) of a process.
pub(crate) fn proc_usage(pid: u32) -> Result<(f64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| format!("stat field {}", i + 3))
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (ticks(11)? + ticks(12)?) as f64 / hz;
    Ok((cpu, status_kib(pid, "VmRSS")?))
}

/// A `/proc/<pid>/status` figure in KiB.
pub(crate) fn status_kib(pid: u32, key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
}

/// An HTTP answer.
pub(crate) struct Reply {
    /// Status code.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

/// A plain HTTP/1.1 GET on a fresh connection, as a scraper makes it.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    let body = raw[split + 4..].to_vec();
    let body = if head.contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    Ok(Reply { status, body })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len());
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|n| *n > 0) else { break };
        let start = eol + 2;
        let Some(chunk) = rest.get(start..start + size) else { break };
        out.extend_from_slice(chunk);
        rest = rest.get(start + size + 2..).unwrap_or_default();
    }
    out
}
