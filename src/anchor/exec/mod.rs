//! `exec:<name>`: runs a configured command (an argv list, never a shell) for each anchor.
//!
//! The command sees `VMSH_NAMESPACE`, `VMSH_CADENCE`, `VMSH_TARGET`, `VMSH_BATCH_ID`,
//! `VMSH_BATCH_ROOT`, `VMSH_ATTEMPT_ID` (stable across retries of one period: use it to
//! deduplicate), and `VMSH_CONFIRMATIONS` / `VMSH_POLICY_OID` when set. For an aggregate's anchor
//! the namespace is empty, the batch id `aggregate-<size>`, the root the tree's and the attempt
//! id that root in hex, and `VMSH_AGGREGATE_SIZE` gives the number of leaves. Exit 0 is success and a
//! JSON object on the last stdout line becomes the attestation. A failure's class comes from,
//! in order: the exit code (75 network, 77 auth, 65 validation), a `{"class": …}` JSON object on
//! the last stdout line, and as a last resort whole words in stderr — a guess, after which the
//! attempt counts as possibly done. The command runs in its own process group; a timeout (or
//! shutdown) kills the whole group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

mod config;

pub(crate) use self::config::{ExecSpec, ExecTarget};
use super::{BoxFuture, Driver, ProgressSink};
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass, Submitted};

/// How much of each output stream is kept (the tail); the rest is read and dropped so a
/// chatty command can neither block on a full pipe nor grow the scheduler's memory.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// `PATH` given to commands configured with `clearEnv: true`.
const CLEAN_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Exit codes with a meaning (from BSD sysexits).
const EX_DATAERR: i32 = 65;
const EX_TEMPFAIL: i32 = 75;
const EX_NOPERM: i32 = 77;

/// Runs an `exec:` target's command, one process per anchor, and reads its attestation.
pub(crate) struct ExecDriver {
    root: PathBuf,
    commands: Arc<BTreeMap<String, ExecTarget>>,
}

impl ExecDriver {
    /// A driver for the configured commands; relative working folders are taken from `root`.
    pub(crate) fn new(root: PathBuf, commands: BTreeMap<String, ExecTarget>) -> Self {
        Self { root, commands: Arc::new(commands) }
    }
}

/// Kills a process group when dropped while armed: on timeout, or when the anchor future is
/// dropped because the pool's own deadline or a shutdown cancelled it.
struct GroupKill {
    pgid: Option<i32>,
}

impl GroupKill {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg only sends a signal; a stale or reused pgid is the only risk, and
            // the group leader is our un-reaped child, so its id cannot have been reused yet.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Driver for ExecDriver {
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            let spec = self.commands.get(&req.target.name).ok_or_else(|| {
                AnchorError::new(
                    ErrorClass::Validation,
                    format!("{} is not configured in the targets file", req.target),
                )
            })?;
            run(&self.root, spec, req).await.map(Submitted::Anchored)
        })
    }
}

async fn run(root: &std::path::Path, spec: &ExecTarget, req: &AnchorRequest) -> Result<Attestation, AnchorError> {
    let Some((program, args)) = spec.command.split_first() else {
        return Err(AnchorError::new(ErrorClass::Validation, "empty command"));
    };
    // The command's working folder: `cwd` (relative to the root) or the scheduler's own. A
    // relative program path (`./notary`) is found from it; a bare name (`notary`) on PATH.
    // Resolved here because std leaves a relative path with `current_dir` platform-defined.
    let cwd = spec.cwd.as_ref().map(|cwd| if cwd.is_absolute() { cwd.clone() } else { root.join(cwd) });
    let program_path = std::path::Path::new(program);
    let resolved = match &cwd {
        Some(dir) if program_path.is_relative() && program.contains('/') => dir.join(program_path),
        _ => program_path.to_path_buf(),
    };
    let mut cmd = Command::new(&resolved);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if spec.clear_env {
        cmd.env_clear().env("PATH", CLEAN_PATH);
    }
    cmd.envs(&spec.env)
        .env("VMSH_NAMESPACE", &req.namespace)
        .env("VMSH_CADENCE", req.cadence.as_str())
        .env("VMSH_TARGET", req.target.to_string())
        .env("VMSH_BATCH_ID", &req.batch_id)
        .env("VMSH_BATCH_ROOT", req.root_string())
        .env("VMSH_ATTEMPT_ID", &req.attempt_id);
    if let Some(c) = req.confirmations {
        cmd.env("VMSH_CONFIRMATIONS", c.to_string());
    }
    if let Some(size) = crate::model::aggregate::size_of(req) {
        cmd.env("VMSH_AGGREGATE_SIZE", size.to_string());
    }
    if let Some(p) = &req.policy_oid {
        cmd.env("VMSH_POLICY_OID", p);
    }
    if let Some(cwd) = &cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|e| {
        let class = if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::PermissionDenied {
            ErrorClass::Validation
        } else {
            ErrorClass::Unknown
        };
        let from = cwd.as_ref().map_or_else(String::new, |dir| format!(" (in {})", dir.display()));
        AnchorError::new(class, format!("cannot start {program:?}{from}: {e}"))
    })?;
    let mut guard = GroupKill { pgid: child.id().and_then(|id| i32::try_from(id).ok()) };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (out, err, status) = tokio::join!(read_tail(stdout), read_tail(stderr), child.wait());
        (out, err, status)
    };
    let (out, err, status) = match spec.timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(done) => done,
            Err(_) => {
                return Err(AnchorError::new(
                    ErrorClass::Network,
                    format!("{} timed out after {}; its process group was killed", req.target, fmt_secs(limit)),
                ));
            }
        },
        None => work.await,
    };
    let status = status.map_err(|e| AnchorError::new(ErrorClass::Unknown, format!("waiting for {program:?}: {e}")))?;
    guard.disarm();
    let stdout = String::from_utf8_lossy(&out);
    let stderr = String::from_utf8_lossy(&err);
    if status.success() {
        let data = match last_line(&stdout).map(serde_json::from_str::<serde_json::Value>) {
            Some(Ok(v @ serde_json::Value::Object(_))) => v,
            Some(_) => serde_json::json!({ "exitCode": 0, "output": last_line(&stdout).unwrap_or_default() }),
            None => serde_json::json!({ "exitCode": 0 }),
        };
        return Ok(Attestation { data, anchored_at: None });
    }
    let code = status.code();
    let detail = last_line(&stderr).or_else(|| last_line(&stdout)).unwrap_or("no output");
    let how = match code {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    let message = format!("{} {how}: {}", req.target, truncate(detail, 500));
    Err(match classify(code, &stdout) {
        Some(class) => AnchorError::new(class, message),
        // Only words to go by: a guess, so the attempt is treated as possibly done.
        None => AnchorError::uncertain(classify_text(&stderr), message),
    })
}

/// The class a failed command declared: by exit code (75 network, 77 auth, 65 validation) or
/// by a `{"class": …}` JSON object on the last stdout line.
pub(crate) fn classify(code: Option<i32>, stdout: &str) -> Option<ErrorClass> {
    match code {
        Some(EX_TEMPFAIL) => return Some(ErrorClass::Network),
        Some(EX_NOPERM) => return Some(ErrorClass::Auth),
        Some(EX_DATAERR) => return Some(ErrorClass::Validation),
        _ => {}
    }
    let Some(Ok(serde_json::Value::Object(obj))) = last_line(stdout).map(serde_json::from_str) else { return None };
    match obj.get("class").and_then(|c| c.as_str()) {
        Some("network") => Some(ErrorClass::Network),
        Some("auth") => Some(ErrorClass::Auth),
        Some("validation") => Some(ErrorClass::Validation),
        Some("unknown") => Some(ErrorClass::Unknown),
        _ => None,
    }
}

/// Last-resort classification by words, as the original service did for every error. Only
/// whole words count, and long hex runs (hashes, roots, attempt ids) are skipped, so a root
/// that happens to contain `401` is not mistaken for an auth failure.
pub(crate) fn classify_text(text: &str) -> ErrorClass {
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !(w.is_empty() || (w.len() >= 16 && w.bytes().all(|b| b.is_ascii_hexdigit()))))
        .map(str::to_ascii_lowercase)
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    let has_pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
    if ["401", "403", "unauthorized", "unauthorised", "forbidden", "authentication"].iter().any(|w| has(w))
        || has_pair("permission", "denied")
    {
        ErrorClass::Auth
    } else if ["econnrefused", "econnreset", "etimedout", "enotfound", "timeout", "unreachable", "502", "503", "504"]
        .iter()
        .any(|w| has(w))
        || has_pair("timed", "out")
        || has_pair("connection", "refused")
        || has_pair("connection", "reset")
    {
        ErrorClass::Network
    } else if ["invalid", "malformed", "validation", "400"].iter().any(|w| has(w)) || has_pair("bad", "request") {
        ErrorClass::Validation
    } else {
        ErrorClass::Unknown
    }
}

async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let Some(mut stream) = stream else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * OUTPUT_LIMIT {
                    kept.drain(..kept.len() - OUTPUT_LIMIT);
                }
            }
        }
    }
    if kept.len() > OUTPUT_LIMIT {
        kept.drain(..kept.len() - OUTPUT_LIMIT);
    }
    kept
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::NoProgress;
    use crate::model::{CadenceKind, Target};

    fn request() -> AnchorRequest {
        AnchorRequest {
            namespace: "dao:vaultmesh".into(),
            cadence: CadenceKind::Strong,
            target: Target::parse("exec:t").expect("target"),
            batch_id: "b7".into(),
            root: [0xab; 32],
            attempt_id: "id-1".into(),
            confirmations: Some(3),
            policy_oid: None,
            progress: None,
            membership: None,
        }
    }

    fn driver(script: &str, timeout: Option<Duration>) -> ExecDriver {
        let mut commands = BTreeMap::new();
        commands.insert(
            "t".to_string(),
            ExecTarget {
                command: vec!["sh".into(), "-c".into(), script.into()],
                env: BTreeMap::new(),
                cwd: None,
                timeout,
                clear_env: false,
                aggregate: None,
                concurrency: None,
            },
        );
        ExecDriver::new(PathBuf::from("."), commands)
    }

    #[actix_rt::test]
    async fn success_passes_the_anchor_in_the_environment_and_keeps_the_json_attestation() {
        let d = driver(
            r#"echo noise; printf '{"ns":"%s","cad":"%s","root":"%s","id":"%s","conf":"%s"}\n' "$VMSH_NAMESPACE" "$VMSH_CADENCE" "$VMSH_BATCH_ROOT" "$VMSH_ATTEMPT_ID" "$VMSH_CONFIRMATIONS""#,
            None,
        );
        let att = d.anchor(&request(), &NoProgress).await.expect("success").into_attestation().expect("final");
        assert_eq!(att.data["ns"], "dao:vaultmesh");
        assert_eq!(att.data["cad"], "strong");
        assert_eq!(att.data["root"], format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(att.data["id"], "id-1");
        assert_eq!(att.data["conf"], "3");
    }

    #[actix_rt::test]
    async fn exit_codes_carry_the_error_class() {
        for (code, class) in
            [(75, ErrorClass::Network), (77, ErrorClass::Auth), (65, ErrorClass::Validation), (1, ErrorClass::Unknown)]
        {
            let err = driver(&format!("exit {code}"), None).anchor(&request(), &NoProgress).await.expect_err("fails");
            assert_eq!(err.class, class, "exit {code}");
        }
    }

    #[actix_rt::test]
    async fn a_json_hint_or_stderr_words_classify_other_failures() {
        let err = driver(r#"echo '{"class":"auth","error":"key revoked"}'; exit 1"#, None)
            .anchor(&request(), &NoProgress)
            .await
            .expect_err("fails");
        assert_eq!(err.class, ErrorClass::Auth);
        assert!(err.refused, "a declared auth failure is a refusal");
        let err = driver("echo 'connect ECONNREFUSED 127.0.0.1:8545' >&2; exit 1", None)
            .anchor(&request(), &NoProgress)
            .await
            .expect_err("fails");
        assert_eq!(err.class, ErrorClass::Network);
        assert!(err.message.contains("ECONNREFUSED"), "{}", err.message);
        let err = driver("echo 'HTTP 403 Forbidden' >&2; exit 1", None)
            .anchor(&request(), &NoProgress)
            .await
            .expect_err("fails");
        assert_eq!(err.class, ErrorClass::Auth);
        assert!(!err.refused, "a class guessed from words leaves the attempt possibly done");
    }

    #[test]
    fn words_inside_hashes_and_longer_words_do_not_classify() {
        let root = "sha256:0401f403a400b5030000000000000000000000000000000000000000000000ff";
        assert_eq!(classify_text(&format!("failed to anchor {root}")), ErrorClass::Unknown);
        assert_eq!(classify_text("attempt 94012 finished; revalidation pending"), ErrorClass::Unknown);
        assert_eq!(classify_text("status 401"), ErrorClass::Auth);
        assert_eq!(classify_text("request timed out"), ErrorClass::Network);
        assert_eq!(classify_text("invalid root"), ErrorClass::Validation);
    }

    /// Whether a process is gone or a zombie (dead, awaiting a reaper).
    fn is_dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[actix_rt::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pidfile = tmp.path().join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let err = driver(&script, Some(Duration::from_millis(500)))
            .anchor(&request(), &NoProgress)
            .await
            .expect_err("times out");
        assert_eq!(err.class, ErrorClass::Network);
        assert!(err.message.contains("timed out"));
        let pid = std::fs::read_to_string(&pidfile).expect("grandchild started").trim().to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_dead(&pid) {
            assert!(std::time::Instant::now() < deadline, "grandchild {pid} outlived the group kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[actix_rt::test]
    async fn a_relative_program_is_found_from_the_commands_working_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("notary");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let script = dir.join("anchor.sh");
        std::fs::write(&script, "#!/bin/sh\necho '{\"in\":\"'\"$(pwd)\"'\"}'\n").expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let target = |command: &str| ExecTarget {
            command: vec![command.into()],
            env: BTreeMap::new(),
            cwd: Some(PathBuf::from("notary")),
            timeout: None,
            clear_env: true,
            aggregate: None,
            concurrency: None,
        };
        let commands = BTreeMap::from([("t".to_string(), target("./anchor.sh"))]);
        let done = ExecDriver::new(tmp.path().to_path_buf(), commands).anchor(&request(), &NoProgress).await;
        let att = done.expect("anchored").into_attestation().expect("final at once");
        assert_eq!(att.data["in"], dir.display().to_string());
        let commands = BTreeMap::from([("t".to_string(), target("./missing.sh"))]);
        let err = ExecDriver::new(tmp.path().to_path_buf(), commands)
            .anchor(&request(), &NoProgress)
            .await
            .expect_err("no such program");
        assert!(err.message.contains(&format!("(in {})", dir.display())), "{}", err.message);
    }

    #[actix_rt::test]
    async fn a_missing_program_is_a_validation_error() {
        let mut commands = BTreeMap::new();
        commands.insert(
            "t".to_string(),
            ExecTarget {
                command: vec!["/nonexistent/anchor".into()],
                env: BTreeMap::new(),
                cwd: None,
                timeout: None,
                clear_env: true,
                aggregate: None,
                concurrency: None,
            },
        );
        let err =
            ExecDriver::new(PathBuf::from("."), commands).anchor(&request(), &NoProgress).await.expect_err("fails");
        assert_eq!(err.class, ErrorClass::Validation);
    }
}
