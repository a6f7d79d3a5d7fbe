//! Hostile input: config files, batches and state files that are malformed, oversized or
//! malicious. Through the real binary, each gives a clear error (start-up: exit 2 or 3 and one
//! line per problem naming the file, field and reason; reload: the old config kept) and never
//! a panic, a hang (every run has a deadline) or an outsized allocation (the address space is
//! capped at 2 GiB and the peak resident set is measured).
//!
//! The second half is fuzzing as property tests with a fixed budget: a seeded generator
//! mutates the committed corpus (`tests/fixtures/corpus/`) and feeds the namespaces, targets,
//! cadence and time-stamp token parsers, which must return a result or a clean error, and
//! `verify`, which must say VERIFIED to no edited receipt. Each
//! test prints one `RELIABILITY {json}` line for docs/RELIABILITY.md; `VMSH_RELIABILITY=full`
//! runs ten times the cases and `VMSH_SEED` replays a run.

use std::io::Read as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmsh_scheduler::anchor::targets::TargetsConfig;
use vmsh_scheduler::app;
use vmsh_scheduler::config::{self, namespaces};
use vmsh_scheduler::health::OverallStatus;
use vmsh_scheduler::health::contract::{Cadence, Open, Reload, ReloadResult, StuckRead};
use vmsh_scheduler::model::ErrorClass;

use crate::support::proc::{scheduler_pid, status_kib};
use crate::support::report::{count, report};
use crate::support::{
    HealthParts as _, Root, Scheduler, base_env, command, file_sha256, metric, now_ms, root_hex, wait_for, write_file,
    write_file_atomic,
};

const LONG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Running the binary under limits

/// Address space a scheduler under test may use: far above what it needs (about 0.5 GiB,
/// mostly thread stacks and allocator arenas), so only an outsized allocation hits it.
const ADDRESS_SPACE_CAP: u64 = 2 << 30;

/// Peak resident set allowed to a start-up that refuses its input (it needs about 10 MiB).
const START_PEAK_KIB: u64 = 64 * 1024;

/// Peak resident set allowed to a running scheduler fed hostile input (it needs about 25 MiB).
const RUNNING_PEAK_KIB: u64 = 96 * 1024;

/// How a run of the binary ended.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    /// Peak resident set (KiB): the highest `VmHWM` seen while it ran, sampled every
    /// millisecond. A high-water mark, so any sample after a peak shows it; only a peak in
    /// the last moments before exit can be missed, and the address-space cap still holds
    /// there. (`ru_maxrss` cannot be used: Linux carries the forking test process's own
    /// peak over into the child's at exec.)
    peak_kib: u64,
    took: Duration,
}

/// Runs the binary to completion with the base environment plus `extra`, its address space
/// capped, its peak resident set sampled; kills it and fails if it runs longer than 20 s.
fn run_capped(root: &Root, extra: &[(&str, &str)], args: &[&str]) -> Run {
    let mut env = base_env(root);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let mut cmd = command(root, &env, args);
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and the
    // closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit { rlim_cur: ADDRESS_SPACE_CAP, rlim_max: ADDRESS_SPACE_CAP };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start vmsh-scheduler");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut err = child.stderr.take().expect("stderr");
    let mut out = child.stdout.take().expect("stdout");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let stdout = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let mut peak_kib = 0;
    let status = loop {
        // Until it is reaped the pid is still ours, so this reads no other process.
        peak_kib = peak_kib.max(status_kib(pid, "VmHWM").unwrap_or(0));
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > LONG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmsh-scheduler {args:?} hung: it did not exit within {LONG:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = started.elapsed();
    let _ = stdout.join();
    Run { code: status.code(), signal: status.signal(), stderr: stderr.join().expect("stderr reader"), peak_kib, took }
}

/// Checks a refused start: exit `code`, no panic, every stderr line a `vmsh-scheduler: `
/// message of bounded length, one naming `file` and containing every needle, a small peak.
fn assert_refused(case: &str, run: &Run, code: i32, file: &Path, needles: &[&str]) {
    let err = &run.stderr;
    assert_eq!(
        run.signal, None,
        "{case}: killed by signal {:?} (an allocation over the cap aborts)\n{err}",
        run.signal
    );
    assert_ne!(run.code, Some(101), "{case}: panicked\n{err}");
    assert!(!err.contains("panicked"), "{case}: panicked\n{err}");
    assert_eq!(run.code, Some(code), "{case}: exit status\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "{case}: no message");
    for line in &lines {
        assert!(line.starts_with("vmsh-scheduler: "), "{case}: stray stderr line {line:?}");
        assert!(line.len() < 2_000, "{case}: a {}-byte line", line.len());
    }
    let named = file.display().to_string();
    assert!(
        lines.iter().any(|l| l.contains(&named) && needles.iter().all(|n| l.contains(n))),
        "{case}: no line names {} with {needles:?}:\n{err}",
        file.display()
    );
    assert!(run.peak_kib < START_PEAK_KIB, "{case}: peak resident set {} KiB", run.peak_kib);
}

/// Checks `validate FILE`: exit 2, one line per problem naming the file, then the count.
fn assert_invalid(case: &str, root: &Root, file: &Path, needles: &[&str]) {
    let run = run_capped(root, &[], &["validate", file.to_str().expect("utf-8 path")]);
    let err = &run.stderr;
    assert!(run.signal.is_none() && !err.contains("panicked"), "{case}: validate crashed\n{err}");
    assert_eq!(run.code, Some(2), "{case}: validate\n{err}");
    let prefix = format!("{}: ", file.display());
    for line in err.lines() {
        assert!(
            line.starts_with(&prefix) || line.ends_with("problem(s) found") || line.starts_with("vmsh-scheduler: "),
            "{case}: validate printed {line:?}"
        );
    }
    assert!(err.lines().any(|l| needles.iter().all(|n| l.contains(n))), "{case}: validate: {needles:?}\n{err}");
}

/// Writes a file of `size` bytes starting with `head` (the rest a hole of zeros).
fn write_sparse(path: &Path, head: &[u8], size: u64) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, head).expect("write head");
    std::fs::OpenOptions::new().write(true).open(path).expect("open").set_len(size).expect("extend");
}

/// Replaces `path` by a file built by `build` in a hidden sibling, then renamed over it.
fn replace_with(path: &Path, build: impl FnOnce(&Path)) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().expect("name").to_string_lossy()));
    build(&tmp);
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// A hostile config file and what its error must say.
struct Case {
    name: &'static str,
    /// The file's content; `None` for the 100 MB file, written sparse.
    bytes: Option<Vec<u8>>,
    needles: &'static [&'static str],
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, needles: &'static [&'static str]) -> Case {
    Case { name, bytes: Some(bytes.into()), needles }
}

const HUNDRED_MB: u64 = 100 * 1024 * 1024;

impl Case {
    fn write(&self, path: &Path) {
        match &self.bytes {
            Some(b) => std::fs::write(path, b).expect("write case"),
            None => write_sparse(path, b"namespaces:\n  a:\n", HUNDRED_MB),
        }
    }
}

/// 4 MiB less a little (under the size cap) of `[`: the YAML scanner's worst case.
fn deep_flow_file(top: &str) -> Vec<u8> {
    let mut b = format!("{top} ").into_bytes();
    b.resize(4 * 1024 * 1024 - 64, b'[');
    b
}

/// Billion laughs: ten levels of ten references each, a billion `lol`s once expanded.
fn alias_bomb() -> String {
    let mut yaml = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    yaml.push_str("namespaces: {bomb: {description: *l9, cadence: {fast: {target: 'local:j', every: '1s'}}}}\n");
    yaml
}

fn ns(body: &str) -> String {
    format!("namespaces:\n{body}")
}

/// Every hostile namespaces file of the issue, and what its error says.
fn namespaces_cases() -> Vec<Case> {
    let fast = "{cadence: {fast: {target: 'local:j', every: '1s'}}}";
    vec![
        case("malformed YAML", "namespaces:\n  a: {cadence: [\n", &["not valid YAML"]),
        case("a tab for indentation", "namespaces:\n\ta: {}\n", &["not valid YAML"]),
        case("binary garbage", b"\x00\x01\x02\x03namespaces\x7f\x00".to_vec(), &["not valid YAML"]),
        case("an empty file", "", &["expected a mapping with a `namespaces` key"]),
        case(
            "an unknown field",
            ns("  a:\n    colour: blue\n    cadence: {fast: {target: 'local:j', every: '1s'}}\n"),
            &["namespace \"a\": colour: unknown field `colour`"],
        ),
        case(
            "an unknown top-level field",
            format!("namespaces: {{a: {fast}}}\nextra: 1\n"),
            &["extra: unknown field; the top level has only `namespaces`"],
        ),
        case(
            "a wrong type: every is a number",
            ns("  a: {cadence: {fast: {target: 'local:j', every: 5}}}\n"),
            &["cadence.fast.every: invalid type: integer `5`"],
        ),
        case(
            "a wrong type: namespaces is a list",
            "namespaces: [a, b]\n",
            &["namespaces: expected a mapping of namespace names"],
        ),
        case(
            "every of 0",
            ns("  a: {cadence: {fast: {target: 'local:j', every: '0s'}}}\n"),
            &["cadence.fast.every: \"0s\" is zero"],
        ),
        case(
            "a negative every",
            ns("  a: {cadence: {fast: {target: 'local:j', every: '-5s'}}}\n"),
            &["cadence.fast.every: \"-5s\" is not a period"],
        ),
        case(
            "an overflowing every (99999999999d)",
            ns("  a: {cadence: {fast: {target: 'local:j', every: '99999999999d'}}}\n"),
            &["\"99999999999d\" is longer than the longest period"],
        ),
        case(
            "<n>*fast inside fast itself",
            ns("  a: {cadence: {fast: {target: 'local:j', every: '34*fast'}}}\n"),
            &["cadence.fast.every: \"34*fast\" cannot be used by fast itself"],
        ),
        case(
            "a cadence without fast",
            ns("  a: {cadence: {strong: {target: 'local:j', every: '1s'}}}\n"),
            &["namespace \"a\": cadence: missing field `fast`"],
        ),
        case(
            "an unknown target scheme",
            ns("  a: {cadence: {fast: {target: 'ipfs:x', every: '1s'}}}\n"),
            &["cadence.fast.target: unknown target scheme \"ipfs\""],
        ),
        case(
            "duplicate namespace keys",
            ns(&format!("  a: {fast}\n  a: {fast}\n")),
            &["duplicate entry with key \"a\""],
        ),
        case("an alias bomb (billion laughs)", alias_bomb(), &["repetition limit exceeded"]),
        Case { name: "a 100 MB file", bytes: None, needles: &["larger than 64 MiB"] },
        case("non-UTF-8 bytes", b"namespaces:\n  \xff\xfe: {}\n".to_vec(), &["not valid YAML"]),
        case("an empty namespace name", ns(&format!("  \"\": {fast}\n")), &["namespace name is empty"]),
        case(
            "a namespace name 10 kB long",
            ns(&format!("  ? {}\n  : {fast}\n", "n".repeat(10_000))),
            &["(10000 bytes)", "namespace name is 10000 bytes long; the limit is 200"],
        ),
        case(
            "control characters in a namespace name",
            ns(&format!("  \"a\\u0007\\u001bb\": {fast}\n")),
            &["namespace name contains control characters"],
        ),
        case(
            "a key holding a line break",
            ns("  a: {cadence: {fast: {target: 'local:j', every: '1s', \"ev\\nry\": 1}}}\n"),
            &["cadence.fast.ev\\nry: unknown field"],
        ),
        case("flow collections nested 4 MiB deep", deep_flow_file("namespaces:"), &["nest more than 64 levels deep"]),
    ]
}

/// Every hostile targets file, and what its error says.
fn targets_cases() -> Vec<Case> {
    vec![
        case("an unknown section", "ipfs: {}\n", &["ipfs: unknown field `ipfs`"]),
        case(
            "an unknown key in an entry",
            "exec:\n  n: {command: [x], shell: true}\n",
            &["exec.n.shell: unknown field `shell`"],
        ),
        case(
            "a URL that is not http(s)",
            format!("eip155:\n  default: {{rpcUrl: 'ftp://node', key: '{KEY}'}}\n"),
            &["eip155.default: rpcUrl must be an http:// or https:// URL"],
        ),
        case(
            "a URL that is no URL at all",
            "rfc3161:\n  default: {url: 'tsa.example.com'}\n",
            &["rfc3161.default: url must be an http:// or https:// URL"],
        ),
        case(
            "a key that is not hex",
            "eip155:\n  default: {rpcUrl: 'http://node', key: '0xnot-a-key-but-a-password-hunter2'}\n",
            &["eip155.default: key must be a valid secp256k1 private key"],
        ),
        case(
            "a key beyond the curve order",
            format!("eip155:\n  default: {{rpcUrl: 'http://node', key: '0x{}'}}\n", "ff".repeat(32)),
            &["eip155.default: key must be a valid secp256k1 private key"],
        ),
        case(
            "a key of zeros",
            format!("eip155:\n  default: {{rpcUrl: 'http://node', key: '{}'}}\n", "00".repeat(32)),
            &["eip155.default: key must be a valid secp256k1 private key"],
        ),
        case("malformed YAML", "exec:\n  n: {command: [x\n", &["not valid YAML"]),
        Case { name: "a 100 MB file", bytes: None, needles: &["larger than 64 MiB"] },
        case(
            "an entry name holding a line break",
            "btc:\n  \"a\\nb\": {rpcUrl: 'ftp://x'}\n",
            &["btc.a\\nb: rpcUrl must be an http"],
        ),
        case("flow collections nested 4 MiB deep", deep_flow_file("exec:"), &["nest more than 64 levels deep"]),
    ]
}

/// A valid EVM key (Anvil's second account); never to appear in an error.
const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

const ONE_NAMESPACE: &str = "namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:a\", every: \"1s\"}\n";

#[test]
fn hostile_namespaces_files_stop_start_up_with_exit_2_and_one_line_per_problem() {
    let root = Root::new();
    let file = root.path().join("namespaces.yaml");
    let cases = namespaces_cases();
    let (mut peak, mut slowest) = (0, Duration::ZERO);
    for c in &cases {
        c.write(&file);
        let run = run_capped(&root, &[], &[]);
        assert_refused(c.name, &run, 2, &file, c.needles);
        assert_invalid(c.name, &root, &file, c.needles);
        assert!(!root.state_path().exists(), "{}: wrote state", c.name);
        peak = peak.max(run.peak_kib);
        slowest = slowest.max(run.took);
    }
    report(
        "hostile namespaces files at start-up: exit 2, one line per problem",
        cases.len(),
        "pass",
        json!({"cases": cases.iter().map(|c| c.name).collect::<Vec<_>>(), "peakRssMiB": peak / 1024,
            "slowestMs": slowest.as_millis()}),
    );
}

#[test]
fn hostile_targets_files_stop_start_up_with_exit_2_naming_the_field_not_the_value() {
    let root = Root::new();
    root.namespaces(ONE_NAMESPACE);
    let file = root.path().join("anchors.yaml");
    let cases = targets_cases();
    let mut peak = 0;
    for c in &cases {
        c.write(&file);
        let run = run_capped(&root, &[("VMSH_ANCHORS", file.to_str().expect("utf-8"))], &[]);
        assert_refused(c.name, &run, 2, &file, c.needles);
        for secret in ["hunter2", &KEY[10..40]] {
            assert!(!run.stderr.contains(secret), "{}: a secret in the message:\n{}", c.name, run.stderr);
        }
        peak = peak.max(run.peak_kib);
    }
    report(
        "hostile targets files at start-up: exit 2, fields named, values not",
        cases.len(),
        "pass",
        json!({"cases": cases.iter().map(|c| c.name).collect::<Vec<_>>(), "peakRssMiB": peak / 1024}),
    );
}

/// Caps a running process's address space at what it has now plus 1 GiB.
fn cap_address_space(pid: u32) {
    let cap = status_kib(pid, "VmSize").expect("the scheduler's VmSize") * 1024 + (1 << 30);
    let limit = libc::rlimit { rlim_cur: cap, rlim_max: cap };
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: prlimit on our own child with a valid limit; the old limit is not asked for.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_AS, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Waits for a rejection reported after `after_ms`; returns `config.lastReload`.
fn wait_rejection(s: &Scheduler, case: &str, after_ms: i64) -> Reload {
    wait_for(LONG, &format!("the rejection of {case} in /health"), || {
        let last = s.health().config?.last_reload?;
        (last.result == ReloadResult::Failure && last.at_ms > after_ms).then_some(last)
    })
}

/// What became of the last config change, as /health says.
fn reload_result(s: &Scheduler) -> Option<Open<ReloadResult>> {
    s.health().config?.last_reload.map(|r| r.result)
}

#[test]
fn hostile_config_changes_are_rejected_on_reload_and_the_old_config_keeps_anchoring() {
    let root = Root::new();
    let ns_file = root.path().join("namespaces.yaml");
    let targets_file = root.path().join("anchors.yaml");
    root.namespaces(ONE_NAMESPACE).anchors("exec:\n  noop: {command: [\"true\"]}\n").batch(
        None,
        "0001.json",
        "b1",
        &root_hex(1),
    );
    let s = Scheduler::start(&root);
    wait_for(LONG, "a first anchor", || (!root.receipts("a").is_empty()).then_some(()));
    let pid = scheduler_pid(root.path());
    cap_address_space(pid);
    let running_hash = file_sha256(&ns_file);
    let before = root.receipts("a").len();
    let started = Instant::now();
    let mut at = 0;
    let (ns_cases, targets_cases) = (namespaces_cases(), targets_cases());
    for (file, cases) in [(&ns_file, &ns_cases), (&targets_file, &targets_cases)] {
        for c in cases {
            replace_with(file, |tmp| c.write(tmp));
            let last = wait_rejection(&s, c.name, at);
            at = last.at_ms;
            let errors: Vec<&str> = last.errors.iter().map(String::as_str).collect();
            let named = format!("{}: ", file.display());
            assert!(
                errors.iter().any(|e| e.starts_with(&named) && c.needles.iter().all(|n| e.contains(n))),
                "{}: /health shows {errors:?}",
                c.name
            );
            assert!(errors.iter().all(|e| !e.contains('\n') && e.len() < 2_000), "{}: {errors:?}", c.name);
            if c.bytes.is_some() && file == &ns_file {
                assert_eq!(last.hash, file_sha256(file), "{}: the rejected file's hash", c.name);
            }
            let h = s.health();
            let hash = h.config.as_ref().map(|c| c.hash.as_str());
            assert_eq!(hash, Some(running_hash.as_str()), "{}: the running config changed", c.name);
            assert_eq!(h.status, OverallStatus::Degraded, "{}: {h}", c.name);
        }
        // Put the good file back: the running config matches again.
        if file == &ns_file {
            write_file_atomic(file, ONE_NAMESPACE);
        } else {
            write_file_atomic(file, "exec:\n  noop: {command: [\"true\"]}\n");
        }
    }
    // The old config kept anchoring all along, in the same process.
    let during = root.receipts("a").len();
    assert!(during > before, "no anchor while the hostile files were offered ({before} -> {during})");
    wait_for(LONG, "two more anchors", || (root.receipts("a").len() >= during + 2).then_some(()));
    assert_eq!(s.logs_with_msg("vmsh-scheduler started").len(), 1);
    assert_eq!(scheduler_pid(root.path()), pid);
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
    let peak = status_kib(pid, "VmHWM").expect("the scheduler's VmHWM");
    assert!(peak < RUNNING_PEAK_KIB, "peak resident set {peak} KiB");
    let m = s.metrics();
    let failures = metric(&m, "vmsh_config_reloads_total", &[("result", "failure")]).expect("counter");
    assert_eq!(failures as usize, ns_cases.len() + targets_cases.len(), "one rejection per case");
    // Reloading still works: `fast` alone is a complete namespace.
    write_file_atomic(
        &ns_file,
        &format!("{ONE_NAMESPACE}  b:\n    cadence:\n      fast: {{target: \"local:b\", every: \"1s\"}}\n"),
    );
    wait_for(LONG, "the added namespace to anchor", || (!root.receipts("b").is_empty()).then_some(()));
    assert_eq!(reload_result(&s), Some(ReloadResult::Success.into()));
    report(
        "hostile config files on hot reload: rejected, old config keeps anchoring",
        ns_cases.len() + targets_cases.len(),
        "pass",
        json!({"anchorsWhileRejecting": during - before, "peakRssMiB": peak / 1024,
            "seconds": started.elapsed().as_secs()}),
    );
}

#[test]
fn named_pipes_and_devices_named_as_config_state_or_env_files_are_refused_at_once() {
    let root = Root::new();
    root.namespaces(ONE_NAMESPACE);
    let pipe = root.path().join("pipe.yaml");
    mkfifo(&pipe);
    let link = root.path().join("link.yaml");
    std::os::unix::fs::symlink(&pipe, &link).expect("symlink");
    let zero = Path::new("/dev/zero");
    let (p, l) = (pipe.to_str().expect("utf-8"), link.to_str().expect("utf-8"));
    let mut cases = 0;
    for file in [&pipe, &link] {
        assert_invalid("validate a named pipe", &root, file, &["not a regular file"]);
        cases += 1;
    }
    // (case, extra environment, arguments, exit status, the file the error must name)
    type Start<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], i32, &'a Path);
    let starts: [Start; 6] = [
        ("namespaces file is a link to a pipe", &[("VMSH_NAMESPACES", l)], &[], 2, &link),
        ("namespaces file is /dev/zero", &[("VMSH_NAMESPACES", "/dev/zero")], &[], 2, zero),
        ("targets file is a pipe", &[("VMSH_ANCHORS", p)], &[], 2, &pipe),
        ("state file is a pipe", &[("VMSH_STATE", p)], &[], 3, &pipe),
        ("env file is a pipe", &[], &["--env-file", p, "validate"], 2, &pipe),
        ("env file is /dev/zero", &[], &["--env-file", "/dev/zero", "validate"], 2, zero),
    ];
    for (case, extra, args, code, named) in starts {
        let run = run_capped(&root, extra, args);
        assert_refused(case, &run, code, named, &["not a regular file"]);
        cases += 1;
    }
    report(
        "named pipes and devices given as config, state or env files: refused at once",
        cases,
        "pass",
        json!({"cases": cases}),
    );
}

#[test]
fn a_config_file_swapped_for_a_named_pipe_is_rejected_on_reload_and_anchoring_goes_on() {
    let root = Root::new();
    let ns_file = root.path().join("namespaces.yaml");
    root.namespaces(ONE_NAMESPACE).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    wait_for(LONG, "a first anchor", || (!root.receipts("a").is_empty()).then_some(()));
    replace_with(&ns_file, mkfifo);
    let last = wait_rejection(&s, "a named pipe", 0);
    let errors = last.errors.join("\n");
    assert!(errors.contains("not a regular file"), "{errors}");
    let before = root.receipts("a").len();
    wait_for(LONG, "two more anchors", || (root.receipts("a").len() >= before + 2).then_some(()));
    write_file_atomic(&ns_file, ONE_NAMESPACE);
    wait_for(LONG, "the config to match again", || {
        (reload_result(&s) == Some(ReloadResult::Success.into())).then_some(())
    });
}

#[test]
fn env_file_errors_name_the_line_not_its_text_and_nul_bytes_do_not_panic() {
    let root = Root::new();
    root.namespaces(ONE_NAMESPACE);
    let file = root.path().join("x.env");
    let f = file.to_str().expect("utf-8");
    for (case, content, needle) in [
        ("a line without =", "A=1\nEVM_ANCHOR_KEY 0x5ec7e75ec7e75ec7e7\n", "line 2"),
        ("a NUL byte in a value", "EVM_ANCHOR_KEY=\"0x5ec7e75ec7e7\u{0}5ec7e7\"\n", "NUL"),
    ] {
        std::fs::write(&file, content).expect("write env file");
        let run = run_capped(&root, &[], &["--env-file", f, "validate"]);
        assert_refused(case, &run, 2, &file, &[needle]);
        assert!(!run.stderr.contains("5ec7e7"), "{case}: the value was printed: {}", run.stderr);
    }
}

#[test]
fn fast_alone_is_a_complete_namespace_at_start_up() {
    let root = Root::new();
    root.namespaces("namespaces:\n  solo:\n    cadence:\n      fast: {target: \"local:solo\", every: \"1s\"}\n").batch(
        None,
        "0001.json",
        "b1",
        &root_hex(2),
    );
    let s = Scheduler::start(&root);
    wait_for(LONG, "two anchors", || (root.receipts("solo").len() >= 2).then_some(()));
    let h = s.health();
    let solo = h.ns("solo");
    assert_eq!(solo.cadences.as_ref().map(|c| c.len()), Some(1), "{solo}");
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn path_like_namespace_names_are_stored_encoded_and_nothing_leaves_the_root() {
    // VMSH_ROOT sits three folders deep in the temporary folder, so a write that climbed out
    // of it would still land where this test looks.
    let outer = Root::new();
    let vm_root = outer.path().join("srv/vm/root");
    let names = ["../../etc", "../../../../../../../../etc/passwd", "..", ".", "/tmp/x", "a/../../b"];
    let mut yaml = String::from("namespaces:\n");
    for n in names {
        yaml.push_str(&format!(
            "  {}:\n    cadence:\n      fast: {{target: \"local:../../etc/j\", every: \"1h\"}}\n",
            json!(n)
        ));
    }
    write_file(&vm_root.join("namespaces.yaml"), &yaml);
    write_file(&vm_root.join("out/batches/0001.json"), &format!(r#"{{"id":"b1","root":"sha256:{}"}}"#, root_hex(3)));
    let paths = [
        ("VMSH_ROOT", vm_root.clone()),
        ("VMSH_NAMESPACES", vm_root.join("namespaces.yaml")),
        ("VMSH_STATE", vm_root.join("state/scheduler.json")),
    ];
    let env: Vec<(&str, String)> = paths.iter().map(|(k, p)| (*k, p.display().to_string())).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut s = Scheduler::start_with(&outer, &env);
    for n in names {
        let dir = vm_root.join("out/anchors").join(vmsh_scheduler::model::fsname::encode(n));
        wait_for(LONG, &format!("a receipt of {n:?}"), || {
            std::fs::read_dir(&dir).ok().and_then(|mut d| d.next()).map(|_| ())
        });
    }
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0), "{}", s.stderr());
    let state: Value =
        serde_json::from_slice(&std::fs::read(vm_root.join("state/scheduler.json")).expect("state")).expect("JSON");
    for n in names {
        assert!(state["namespaces"][n]["cadences"]["fast"]["lastSuccessMs"].is_i64(), "{n}: {state}");
    }
    let encoded: Vec<String> = names.iter().map(|n| vmsh_scheduler::model::fsname::encode(n)).collect();
    for file in files_under(outer.path()) {
        let inside =
            file.strip_prefix("srv/vm/root").unwrap_or_else(|_| panic!("{} is outside VMSH_ROOT", file.display()));
        let parts: Vec<String> = inside.components().map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
        let known = match parts.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["namespaces.yaml"] | ["out", "batches", "0001.json"] | ["out", ".vmsh-scheduler.lock"] => true,
            ["state", f] => f.starts_with("scheduler.json"),
            ["out", "anchors", ns, _receipt] => encoded.iter().any(|e| e == ns),
            ["out", "journal", j] => *j == format!("{}.jsonl", vmsh_scheduler::model::fsname::encode("../../etc/j")),
            _ => false,
        };
        assert!(known, "unexpected file {}", file.display());
        assert!(
            !parts.iter().any(|p| [".", "..", "etc", "passwd", "tmp", "b"].contains(&p.as_str())),
            "{}",
            file.display()
        );
    }
    report("path-like namespace names stay inside VMSH_ROOT", names.len(), "pass", json!({"names": names}));
}

// ---------------------------------------------------------------------------------------------
// Batches and state

/// The `fast` cadence of `ns` in /health, once it is listed.
fn fast(s: &Scheduler, ns: &str) -> Option<Cadence> {
    s.health().cadence(ns, "fast").cloned()
}

/// Whether a cadence's last failure was a validation error.
fn failed_validation(c: &Cadence) -> bool {
    c.last_error.as_ref().is_some_and(|e| e.class == ErrorClass::Validation)
}

#[test]
fn malformed_batches_fail_only_their_namespace_with_a_validation_error() {
    let root = Root::new();
    let hex = root_hex(7);
    let long_id = "i".repeat(300);
    let nested = |inner: &str| format!("{}{inner}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep = format!(r#"{{"id":{},"root":"sha256:{hex}"}}"#, nested("1"));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", br#"{"id": "x", "root": "#.to_vec(), "EOF while parsing"),
        ("an empty file", Vec::new(), "EOF while parsing"),
        ("non-UTF-8 bytes", b"{\"id\": \"\xff\xfe\", \"root\": \"x\"}".to_vec(), "invalid unicode"),
        ("a root of 63 hex digits", format!(r#"{{"id":"x","root":"sha256:{}"}}"#, &hex[1..]).into(), "64 hex digits"),
        ("a root of 65 hex digits", format!(r#"{{"id":"x","root":"sha256:{hex}0"}}"#).into(), "64 hex digits"),
        (
            "a root with a non-hex digit",
            format!(r#"{{"id":"x","root":"sha256:g{}"}}"#, &hex[1..]).into(),
            "64 hex digits",
        ),
        (
            "a root of multi-byte characters",
            format!(r#"{{"id":"x","root":"sha256:{}"}}"#, "é".repeat(32)).into(),
            "64 hex digits",
        ),
        ("a root without its sha256: prefix", format!(r#"{{"id":"x","root":"{hex}"}}"#).into(), "64 hex digits"),
        ("a root that is a number", br#"{"id":"x","root":7}"#.to_vec(), "invalid type"),
        ("no root", br#"{"id":"x"}"#.to_vec(), "missing field `root`"),
        ("an id that is an object", format!(r#"{{"id":{{}},"root":"sha256:{hex}"}}"#).into(), "`id` must be a string"),
        ("an empty id", format!(r#"{{"id":"","root":"sha256:{hex}"}}"#).into(), "1 to 256 printable"),
        (
            "an id of 300 characters",
            format!(r#"{{"id":"{long_id}","root":"sha256:{hex}"}}"#).into(),
            "1 to 256 printable",
        ),
        ("an id nested 100000 deep", deep.into(), "recursion limit exceeded"),
    ];
    // Fields the scheduler does not read may hold anything, nested as deep as they like.
    let leaves = format!(r#"{{"id":"x","root":"sha256:{hex}","leaves":{}}}"#, nested("{}"));
    assert_eq!(vmsh_scheduler::batch::parse(leaves.as_bytes()).expect("valid").0, "x");
    // The library says why, for each.
    for (name, body, reason) in &cases {
        let e = vmsh_scheduler::batch::parse(body).expect_err(name);
        assert!(e.contains(reason), "{name}: {e}");
        assert!(e.len() < 500, "{name}: a {}-byte reason", e.len());
    }
    // The service: each namespace has its own folder with one bad batch; `good` reads the
    // shared folder.
    let mut yaml =
        String::from("namespaces:\n  good:\n    cadence:\n      fast: {target: \"local:good\", every: \"1s\"}\n");
    for i in 0..cases.len() {
        yaml.push_str(&format!("  bad{i:02}:\n    cadence:\n      fast: {{target: \"local:bad\", every: \"1s\"}}\n"));
    }
    root.namespaces(&yaml).batch(None, "0001.json", "b1", &hex);
    for (i, (_, body, _)) in cases.iter().enumerate() {
        let dir = root.path().join("out/batches").join(format!("bad{i:02}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("0001.json"), body).expect("write batch");
    }
    let s = Scheduler::start(&root);
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let ns = format!("bad{i:02}");
        let c = wait_for(LONG, &format!("{name} to fail its namespace"), || {
            fast(&s, &ns).filter(|c| c.last_error.is_some())
        });
        assert!(failed_validation(&c), "{name}: {c}");
        let message = c.last_error.as_ref().map(|e| e.message.as_str()).unwrap_or_default();
        assert!(message.contains(&format!("bad{i:02}/0001.json is not a valid batch")), "{name}: {message}");
        assert!(c.last_batch.is_none() && c.last_success_ms.is_none(), "{name}: {c}");
    }
    wait_for(LONG, "the good namespace to anchor twice", || (root.receipts("good").len() >= 2).then_some(()));
    for i in 0..cases.len() {
        assert!(root.receipts(&format!("bad{i:02}")).is_empty(), "bad{i:02} anchored");
    }
    assert!(!s.stderr().contains("panicked"));
    report(
        "malformed batches and roots",
        cases.len(),
        "pass",
        json!({"cases": cases.iter().map(|c| c.0).collect::<Vec<_>>()}),
    );
}

#[test]
fn a_huge_batch_file_is_refused_with_a_validation_error_and_bounded_memory() {
    let root = Root::new();
    root.namespaces(
        "namespaces:\n  huge:\n    cadence:\n      fast: {target: \"local:h\", every: \"1s\"}\n  good:\n    cadence:\n      fast: {target: \"local:g\", every: \"1s\"}\n",
    )
    .batch(None, "0001.json", "b1", &root_hex(8));
    // 200 MB: a reader without a limit would hold all of it.
    let head = format!(r#"{{"id":"big","root":"sha256:{}","leaves":""#, root_hex(9));
    write_sparse(&root.path().join("out/batches/huge/0001.json"), head.as_bytes(), 200 * 1024 * 1024);
    let s = Scheduler::start(&root);
    let c = wait_for(LONG, "the huge batch to be refused", || fast(&s, "huge").filter(|c| c.last_error.is_some()));
    assert!(failed_validation(&c), "{c}");
    let message = c.last_error.as_ref().map(|e| e.message.as_str()).unwrap_or_default();
    assert!(message.contains("huge/0001.json is larger than 32 MiB; not a batch file"), "{message}");
    wait_for(LONG, "the other namespace to anchor", || (!root.receipts("good").is_empty()).then_some(()));
    let peak = status_kib(scheduler_pid(root.path()), "VmHWM").expect("the scheduler's VmHWM");
    assert!(peak < 128 * 1024, "peak resident set {peak} KiB: the batch was read whole");
    report("a 200 MB batch file", 1, "pass", json!({"peakRssMiB": peak / 1024}));
}

#[test]
fn namespaces_sharing_a_huge_batch_allocate_nothing_big() {
    let root = Root::new();
    let mut yaml = String::from("namespaces:\n");
    for i in 0..20 {
        yaml.push_str(&format!("  n{i:02}:\n    cadence:\n      fast: {{target: \"local:j\", every: \"1s\"}}\n"));
    }
    root.namespaces(&yaml);
    write_sparse(&root.path().join("out/batches/0001.json"), b"{\"id\":\"big\",\"leaves\":\"", 200 * 1024 * 1024);
    let s = Scheduler::start(&root);
    wait_for(LONG, "every namespace to refuse the batch", || {
        (0..20).all(|i| fast(&s, &format!("n{i:02}")).is_some_and(|c| c.last_error.is_some())).then_some(())
    });
    let peak = status_kib(scheduler_pid(root.path()), "VmHWM").expect("the scheduler's VmHWM");
    assert!(peak < RUNNING_PEAK_KIB, "peak resident set {peak} KiB");
}

#[test]
fn corrupt_and_newer_state_files_exit_3_and_are_left_untouched() {
    let root = Root::new();
    root.namespaces(ONE_NAMESPACE).batch(None, "0001.json", "b1", &root_hex(5));
    let state = root.state_path();
    let corrupt: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", br#"{"version": 1, "namespaces": {"a": "#.to_vec()),
        ("binary garbage", (0u8..=255).cycle().take(4096).collect()),
        ("non-UTF-8 bytes", b"{\"version\": 1, \"namespaces\": {\"\xff\": {}}}".to_vec()),
        ("an empty file", Vec::new()),
        ("a JSON array", b"[]".to_vec()),
        ("JSON null", b"null".to_vec()),
        ("JSON nested 100000 deep", format!("{{\"version\": 1, \"x\": {}", "[".repeat(100_000)).into()),
        ("a version that is a string", br#"{"version": "1", "namespaces": {}}"#.to_vec()),
        ("a negative version", br#"{"version": -1, "namespaces": {}}"#.to_vec()),
        ("a fractional version", br#"{"version": 1.5, "namespaces": {}}"#.to_vec()),
        ("a version past u64", br#"{"version": 18446744073709551616, "namespaces": {}}"#.to_vec()),
        (
            "a wrongly typed backoff",
            br#"{"version": 1, "namespaces": {"a": {"cadences": {"fast": {"backoff": "x"}}}}}"#.to_vec(),
        ),
        ("an unknown cadence", br#"{"version": 1, "namespaces": {"a": {"cadences": {"warm": {}}}}}"#.to_vec()),
        (
            "an attempt without its fields",
            br#"{"version": 1, "namespaces": {"a": {"cadences": {"fast": {"attempt": {}}}}}}"#.to_vec(),
        ),
        ("the original format, garbled", br#"{"a": {"last": 5}}"#.to_vec()),
    ];
    for (name, bytes) in &corrupt {
        std::fs::create_dir_all(state.parent().expect("dir")).expect("mkdir");
        std::fs::write(&state, bytes).expect("write state");
        let run = run_capped(&root, &[], &[]);
        assert_refused(name, &run, 3, &state, &["is corrupt", "--reset-corrupt-state"]);
        assert_eq!(&std::fs::read(&state).expect("kept"), bytes, "{name}: the state file was changed");
        assert!(root.receipts("a").is_empty(), "{name}: anchored over a corrupt state");
    }
    let newer = [("version 2", "2"), ("version 99", "99"), ("version u64::MAX", "18446744073709551615")];
    for (name, version) in newer {
        let bytes = format!(r#"{{"version": {version}, "namespaces": {{"a": {{"future": true}}}}}}"#);
        std::fs::write(&state, &bytes).expect("write state");
        let run = run_capped(&root, &[], &[]);
        let needle = format!("has version {version}, newer than this scheduler understands");
        assert_refused(name, &run, 3, &state, &[&needle]);
        assert_eq!(std::fs::read_to_string(&state).expect("kept"), bytes);
    }
    report(
        "corrupt state files and state files from a newer version: exit 3",
        corrupt.len() + newer.len(),
        "pass",
        json!({"corrupt": corrupt.iter().map(|c| c.0).collect::<Vec<_>>(), "newer": newer.map(|n| n.0)}),
    );
}

#[test]
fn a_100_mb_state_file_exits_3_without_amplifying_memory() {
    let root = Root::new();
    root.namespaces(ONE_NAMESPACE);
    write_sparse(&root.state_path(), br#"{"version": 1, "namespaces": {"#, HUNDRED_MB);
    let run = run_capped(&root, &[], &[]);
    let err = &run.stderr;
    assert_eq!(run.code, Some(3), "{err}");
    assert!(!err.contains("panicked") && err.contains("is corrupt"), "{err}");
    // The state file is read whole (it is the service's own file, and no limit is set on
    // it): the peak follows its size, and nothing multiplies it. That the sampling sees this
    // peak, in a process that exits right after it, is also what shows the peak checks of
    // the other start-up cases can fail.
    let file_kib = HUNDRED_MB / 1024;
    assert!(run.peak_kib > file_kib * 9 / 10, "the sampled peak ({} KiB) missed the read", run.peak_kib);
    assert!(run.peak_kib < file_kib + 64 * 1024, "peak resident set {} KiB", run.peak_kib);
    report("a 100 MB corrupt state file", 1, "pass", json!({"peakRssMiB": run.peak_kib / 1024}));
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: property tests with a fixed budget

/// A small deterministic generator (xorshift64), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(target: &str) -> (Self, u64) {
        let seed = std::env::var("VMSH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| now_ms() as u64);
        println!("{target}: seed {seed} (set VMSH_SEED to replay)");
        (Rng(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Largest input a mutation may produce; parsers see real files of a few kB.
const MAX_FUZZ_INPUT: usize = 64 * 1024;

/// One to four changes to `input`: bit flips, odd bytes, dictionary tokens, deletions,
/// truncation, splices with another corpus input, duplicated ranges and lines (duplicated
/// keys), and deep nesting made by `nest`.
fn mutate(
    rng: &mut Rng,
    input: &[u8],
    corpus: &[Vec<u8>],
    dict: &[&[u8]],
    nest: fn(usize, &[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let mut b = input.to_vec();
    // Half the mutants get one change: close to a valid input, they reach deeper.
    let changes = if rng.below(2) == 0 { 1 } else { 1 + rng.below(4) };
    for _ in 0..changes {
        let at = rng.below(b.len() + 1);
        let last = b.len().saturating_sub(1);
        match rng.below(10) {
            0 if !b.is_empty() => b[at.min(last)] ^= 1 << rng.below(8),
            1 if !b.is_empty() => b[at.min(last)] = rng.pick(dict).first().copied().unwrap_or(0),
            2 => {
                let token = rng.pick(dict).to_vec();
                b.splice(at..at, token);
            }
            3 => {
                let end = (at + 1 + rng.below(32)).min(b.len());
                b.drain(at.min(end)..end);
            }
            4 => b.truncate(at),
            5 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            6 => {
                let end = (at + 1 + rng.below(128)).min(b.len());
                let copy = b[at.min(end)..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, copy);
            }
            7 => {
                // A whole line again, right after itself: a duplicated key.
                let start = b[..at].iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
                let end = b[at..].iter().position(|c| *c == b'\n').map_or(b.len(), |i| at + i + 1);
                let line = b[start..end].to_vec();
                b.splice(end..end, line);
            }
            8 => {
                let depth = if rng.below(8) == 0 { 1_000 + rng.below(5_000) } else { 1 + rng.below(100) };
                let end = (at + rng.below(64)).min(b.len());
                let nested = nest(depth, &b[at..end]);
                b.splice(at..end, nested);
            }
            _ => {
                let byte = (rng.next() >> 56) as u8;
                b.insert(at, byte);
            }
        }
    }
    b.truncate(MAX_FUZZ_INPUT);
    b
}

/// The corpus files of `dir` (under tests/fixtures/corpus/) whose names pass `keep`, then
/// every failing input earlier runs saved for `target`.
fn corpus(dir: &str, target: &str, keep: fn(&str) -> bool) -> Vec<Vec<u8>> {
    let sorted = |folder: &Path| {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(folder).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        files
    };
    let committed = sorted(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus").join(dir));
    let kept = committed.into_iter().filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(keep));
    kept.chain(sorted(&failures_dir(target))).map(|f| std::fs::read(f).expect("read corpus file")).collect()
}

/// Where a failing input of `target` is written for replay: target/fuzz-failures/<target>/.
fn failures_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("fuzz-failures").join(target)
}

/// Longest a single case may take before it counts as a hang (debug builds, busy machine).
const CASE_LIMIT: Duration = Duration::from_secs(5);

/// What one fuzz run did.
struct Fuzzed {
    seed: u64,
    corpus: usize,
    cases: usize,
    accepted: usize,
    seconds: f64,
}

/// Runs `check` on every corpus input, then on `budget` mutants of them. `check` returns
/// whether the input was accepted, or a broken property; a panic, a broken property or a
/// case slower than [`CASE_LIMIT`] saves the input and fails the test.
fn fuzz(
    target: &str,
    seeds: Vec<Vec<u8>>,
    budget: usize,
    mut make: impl FnMut(&mut Rng, &[Vec<u8>]) -> Vec<u8>,
    check: impl Fn(&[u8]) -> Result<bool, String>,
) -> Fuzzed {
    assert!(!seeds.is_empty(), "{target}: an empty corpus");
    let (mut rng, seed) = Rng::new(target);
    let started = Instant::now();
    let mut accepted = 0;
    for case in 0..seeds.len() + budget {
        let input = match seeds.get(case) {
            Some(s) => s.clone(),
            None => make(&mut rng, &seeds),
        };
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = t0.elapsed();
        let broken = match outcome {
            Ok(Ok(ok)) if took < CASE_LIMIT => {
                accepted += usize::from(ok);
                continue;
            }
            Ok(Ok(_)) => format!("took {took:?}"),
            Ok(Err(property)) => property,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                format!("panicked: {}", what.unwrap_or_default())
            }
        };
        let dir = failures_dir(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join(format!("{seed}-{case}"));
        std::fs::write(&file, &input).expect("save the failing input");
        let preview: String = String::from_utf8_lossy(&input).chars().take(300).collect();
        panic!("{target}: case {case} (seed {seed}) {broken}\ninput saved to {}\n{preview:?}", file.display());
    }
    Fuzzed { seed, corpus: seeds.len(), cases: budget, accepted, seconds: started.elapsed().as_secs_f64() }
}

fn report_fuzz(scenario: &str, f: &Fuzzed) {
    report(
        scenario,
        f.cases,
        "pass",
        json!({"seed": f.seed, "corpusFiles": f.corpus, "accepted": f.accepted, "refused": f.corpus + f.cases - f.accepted,
            "seconds": (f.seconds * 100.0).round() / 100.0}),
    );
}

/// Tokens a YAML mutation may insert.
const YAML_DICT: &[&[u8]] = &[
    b":",
    b"-",
    b" ",
    b"\n",
    b"\t",
    b"\"",
    b"'",
    b"&",
    b"*",
    b"!",
    b"[",
    b"]",
    b"{",
    b"}",
    b"#",
    b"|",
    b">",
    b"?",
    b",",
    b"%",
    b"@",
    b"`",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"namespaces:",
    b"cadence:",
    b"fast:",
    b"strong:",
    b"cold:",
    b"every:",
    b"target:",
    b"confirmations:",
    b"policyOID:",
    b"witnesses:",
    b"min_required:",
    b"allowlist:",
    b"schema_policy:",
    b"allow:",
    b"description:",
    b"local:",
    b"exec:",
    b"eip155:",
    b"btc:",
    b"rfc3161:",
    b"ipfs:",
    b"0s",
    b"-1s",
    b"99999999999d",
    b"36500d",
    b"36501d",
    b"18446744073709551616",
    b"*fast",
    b"34*fast",
    b"0*fast",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!binary ",
    b"!!int ",
    b"!!str ",
    b"!custom ",
    b"? ",
    b"- ",
    b"---\n",
    b"...\n",
    b"%YAML 1.2\n",
    b"~",
    b"null",
    b".nan",
    b"-.inf",
    b"0x1F",
    b"1e999",
    b"\"\\u0000\"",
    b"\"\\n\"",
    b"\n  ",
    b"# ",
    b"|\n  ",
    b">-\n  ",
    "é".as_bytes(),
    "☃".as_bytes(),
    b"rpcUrl:",
    b"key:",
    b"keyFile:",
    b"chainId:",
    b"${",
    b"${X:-",
    b"}",
    b"url:",
    b"trustBundle:",
    b"cookieFile:",
    b"command:",
    b"clearEnv:",
    b"env:",
    b"timeout:",
    b"pollInterval:",
    b"network:",
    b"feeRate:",
    b"gasLimit:",
];

fn nest_yaml(depth: usize, inner: &[u8]) -> Vec<u8> {
    let (open, close): (&[u8], &[u8]) = if depth.is_multiple_of(2) { (b"[", b"]") } else { (b"{a: ", b"}") };
    [open.repeat(depth), inner.to_vec(), close.repeat(depth)].concat()
}

fn yaml_mutant(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let base = rng.pick(corpus).clone();
    mutate(rng, &base, corpus, YAML_DICT, nest_yaml)
}

/// Variables the reference targets file refers to; the key and the password are secrets.
const VARS: [(&str, &str); 6] = [
    ("EVM_RPC", "http://127.0.0.1:8545"),
    ("EVM_CHAIN_ID", ""),
    ("EVM_CONTRACT", ""),
    ("EVM_ANCHOR_KEY", KEY),
    ("BTC_RPC", "http://vmsh:hunter2-secret@127.0.0.1:18443"),
    ("TSA_URL", "http://127.0.0.1:3180"),
];

/// Parts of secrets that no error message or debug output may hold.
const SECRET_PARTS: [&str; 2] = ["dae88c7a8412f460", "hunter2-secret"];

/// A load context with [`VARS`] and a root holding the reference file's trust bundle.
fn fuzz_context() -> (tempfile::TempDir, config::LoadContext) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        &dir.path().join("services/anchors/certs/tsa-bundle.pem"),
        include_str!("../../src/anchor/rfc3161/testdata/ca.pem"),
    );
    let ctx = config::LoadContext {
        vars: config::vars::Vars::new(VARS.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
        root: dir.path().to_path_buf(),
    };
    (dir, ctx)
}

/// The broken property of a failed load, if any: every error names `files` and a reason on
/// one line, and holds no secret.
fn clean_errors(errors: &config::ConfigErrors, files: &[&Path]) -> Result<bool, String> {
    if errors.0.is_empty() {
        return Err("an error without any problem in it".into());
    }
    for e in &errors.0 {
        let line = e.to_string();
        if !files.contains(&e.file.as_path()) || !line.starts_with(&format!("{}: ", e.file.display())) {
            return Err(format!("an error that does not name the file: {line:?}"));
        }
        if e.reason.trim().is_empty() {
            return Err(format!("an error without a reason: {line:?}"));
        }
        if line.contains(['\n', '\r']) {
            return Err(format!("an error over several lines: {line:?}"));
        }
        if let Some(s) = SECRET_PARTS.iter().find(|s| line.contains(*s)) {
            return Err(format!("an error shows the secret {s:?}: {line:?}"));
        }
    }
    Ok(false)
}

#[test]
fn fuzz_the_namespaces_parser() {
    let (_dir, ctx) = fuzz_context();
    let targets_path = Path::new("anchors.yaml");
    let targets_text =
        format!("{}exec:\n  notary: {{command: [\"true\"]}}\n", include_str!("../fixtures/anchors.vm-spawn.yaml"));
    let targets = TargetsConfig::parse(targets_text.as_bytes(), targets_path, &ctx).expect("the fuzz targets file");
    let ns_path = Path::new("namespaces.yaml");
    let seeds = corpus("namespaces", "namespaces", |n| n.ends_with(".yaml"));
    let budget = count(3_000, 30_000);
    let f = fuzz("namespaces", seeds, budget, yaml_mutant, |bytes| match namespaces::parse(bytes, ns_path, &targets) {
        Ok(parsed) => {
            for (name, n) in &parsed {
                namespaces::check_namespace_name(name).map_err(|e| format!("accepted a bad name: {e}"))?;
                let fast =
                    n.cadences.get(&vmsh_scheduler::model::CadenceKind::Fast).ok_or("a namespace without fast")?;
                for c in n.cadences.values() {
                    let secs = c.period.as_secs();
                    if !(1..=config::cadence::MAX_PERIOD_SECS).contains(&secs) || c.period.subsec_nanos() != 0 {
                        return Err(format!("{name}: accepted a period of {:?}", c.period));
                    }
                    targets.resolve(&c.target).map_err(|e| format!("{name}: an unresolvable target: {e}"))?;
                }
                if fast.every.contains("fast") {
                    return Err(format!("{name}: fast relative to itself"));
                }
            }
            Ok(true)
        }
        Err(errors) => clean_errors(&errors, &[ns_path]),
    });
    // Through app::config::build too, the way start-up and reload call it.
    let snapshot = |path: &Path, bytes: &[u8]| config::FileSnapshot {
        path: path.to_path_buf(),
        bytes: bytes.to_vec(),
        hash: vmsh_scheduler::model::digest::sha256_hex(bytes),
    };
    let reference = snapshot(ns_path, include_bytes!("../fixtures/namespaces.vm-spawn.yaml"));
    let built = app::config::build(&reference, Some(&snapshot(targets_path, targets_text.as_bytes())), &ctx);
    assert_eq!(built.expect("the reference files build").namespaces.len(), 2);
    assert!(f.accepted > 0 && f.accepted < f.corpus + f.cases, "mutants were all accepted or all refused");
    report_fuzz("fuzz: namespaces parser (config::namespaces::parse with the reference targets)", &f);
}

#[test]
fn fuzz_the_targets_parser() {
    let (_dir, ctx) = fuzz_context();
    let targets_path = Path::new("anchors.yaml");
    let ns_path = Path::new("namespaces.yaml");
    let namespaces_text = "namespaces:\n  all:\n    cadence:\n      fast: {target: \"eip155:8453\", every: \"1s\"}\n      strong: {target: \"btc:mainnet\", every: \"2*fast\"}\n      cold: {target: \"rfc3161:tsa\", every: \"1d\"}\n";
    let ns_snapshot = config::FileSnapshot {
        path: ns_path.to_path_buf(),
        bytes: namespaces_text.as_bytes().to_vec(),
        hash: String::new(),
    };
    let seeds = corpus("targets", "targets", |n| n.ends_with(".yaml"));
    let budget = count(2_000, 20_000);
    let f = fuzz("targets", seeds, budget, yaml_mutant, |bytes| {
        let snapshot =
            config::FileSnapshot { path: targets_path.to_path_buf(), bytes: bytes.to_vec(), hash: String::new() };
        match app::config::build(&ns_snapshot, Some(&snapshot), &ctx) {
            Ok(built) => {
                let shown = format!("{:?}", built.targets);
                match SECRET_PARTS.iter().find(|s| shown.contains(*s)) {
                    Some(s) => Err(format!("debug output shows the secret {s:?}")),
                    None => Ok(true),
                }
            }
            Err(errors) => clean_errors(&errors, &[targets_path, ns_path]),
        }
    });
    report_fuzz("fuzz: targets parser (config::build with a namespace on every scheme)", &f);
}

/// Values a receipt mutation may put in place of a field's.
fn receipt_value(rng: &mut Rng, donors: &[Value], path: &[String]) -> Value {
    let donor = || -> Value {
        let d = &donors[0];
        path.iter().try_fold(d, |v, k| v.get(k)).cloned().unwrap_or(Value::Null)
    };
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1.5),
        4 => json!(u64::MAX),
        5 => json!(""),
        6 => json!([]),
        7 => json!({}),
        8 => json!("\u{1b}[2J"),
        9 => json!(format!("sha256:{}", root_hex(9))),
        10 => json!("ab".repeat(32)),
        _ => {
            let other = &donors[rng.below(donors.len())];
            path.iter().try_fold(other, |v, k| v.get(k)).cloned().unwrap_or_else(donor)
        }
    }
}

/// One to three edits of a receipt as JSON — a field's value replaced, a string's character
/// changed, a number moved by one, a field removed or added, a value taken from another
/// genuine receipt — or, one time in four, a byte-level mutation of its text.
fn receipt_mutant(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let base = rng.pick(corpus).clone();
    let (Ok(mut receipt), false) = (serde_json::from_slice::<Value>(&base), rng.below(4) == 0) else {
        return yaml_mutant(rng, corpus);
    };
    let donors: Vec<Value> = corpus.iter().filter_map(|c| serde_json::from_slice(c).ok()).collect();
    for _ in 0..1 + rng.below(3) {
        let mut paths: Vec<Vec<String>> = Vec::new();
        if let Some(top) = receipt.as_object() {
            for (k, v) in top {
                paths.push(vec![k.clone()]);
                for inner in v.as_object().into_iter().flat_map(|o| o.keys()) {
                    paths.push(vec![k.clone(), inner.clone()]);
                }
            }
        }
        if paths.is_empty() {
            break;
        }
        let path = rng.pick(&paths).clone();
        let (parent_path, key) = path.split_at(path.len() - 1);
        let value = receipt_value(rng, &donors, &path);
        let Some(parent) =
            parent_path.iter().try_fold(&mut receipt, |v, k| v.get_mut(k)).and_then(Value::as_object_mut)
        else {
            continue;
        };
        let key = key[0].clone();
        match rng.below(6) {
            0 => {
                parent.remove(&key);
            }
            1 => {
                parent.insert(format!("{key}{}", rng.pick(&["2", " ", "_", "X"])), value);
            }
            2 => {
                if let Some(Value::String(text)) = parent.get_mut(&key)
                    && !text.is_empty()
                {
                    let mut chars: Vec<char> = text.chars().collect();
                    let at = rng.below(chars.len());
                    chars[at] = *rng.pick(&['0', 'f', 'F', 'z', ' ', '\u{0}', 'é', ':']);
                    *text = chars.into_iter().collect();
                }
            }
            3 => {
                if let Some(n) = parent.get(&key).and_then(Value::as_i64) {
                    parent.insert(key, json!(n + *rng.pick(&[-1, 1, 1000])));
                }
            }
            _ => {
                parent.insert(key, value);
            }
        }
    }
    serde_json::to_vec_pretty(&receipt).unwrap_or(base)
}

/// A receipt without the fields in `free` (`attestation.verified` reaches into the
/// attestation): what it means once those, which no evidence of its scheme covers, are set
/// aside.
fn without(receipt: &Value, free: &[&str]) -> Value {
    let mut v = receipt.clone();
    for field in free {
        let (parent, key) = match field.split_once('.') {
            Some((p, k)) => (v.get_mut(p), k),
            None => (Some(&mut v), *field),
        };
        if let Some(o) = parent.and_then(Value::as_object_mut) {
            o.remove(key);
        }
    }
    v
}

/// The receipts written to `dir`, in name order: not the temporary file of one being written
/// (`.NAME.tmpPID`), which is renamed a moment later.
fn receipts_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
        .collect();
    files.sort();
    Some(files)
}

/// Fuzzes `verify` with mutants of genuine receipts: whatever it is given, it answers without
/// a panic or a hang, and it says VERIFIED only to a receipt that means what a genuine one
/// means, as `meaning` tells.
fn fuzz_verify(
    target: &str,
    genuine: &[PathBuf],
    opts: &vmsh_scheduler::cli::verify::VerifyOptions,
    meaning: impl Fn(&Value) -> Value,
) -> Fuzzed {
    use vmsh_scheduler::cli::verify::{Verdict, verify_receipt};
    let genuine_bytes: Vec<Vec<u8>> = genuine.iter().map(|p| std::fs::read(p).expect("read receipt")).collect();
    let meanings: Vec<Value> =
        genuine_bytes.iter().map(|b| meaning(&serde_json::from_slice(b).expect("receipt JSON"))).collect();
    let mut seeds = genuine_bytes;
    seeds.extend(corpus("none", target, |_| false));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("receipt.json");
    let budget = count(1_000, 10_000);
    fuzz(target, seeds, budget, receipt_mutant, |bytes| {
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        let report = verify_receipt(&file, opts);
        if report.verdict != Verdict::Verified {
            return Ok(false);
        }
        let seen = serde_json::from_slice::<Value>(bytes).map(|v| meaning(&v)).map_err(|e| e.to_string())?;
        if meanings.contains(&seen) { Ok(true) } else { Err("VERIFIED an edited receipt".into()) }
    })
}

#[test]
fn fuzz_verify_with_edited_local_receipts() {
    let root = Root::new();
    root.namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"local:j\", every: \"1s\"}\n").batch(
        None,
        "0001.json",
        "b1",
        &root_hex(3),
    );
    let mut s = Scheduler::start(&root);
    let dir = root.path().join("out/anchors/n");
    let receipts = wait_for(LONG, "three receipts", || receipts_in(&dir).filter(|files| files.len() >= 3));
    s.signal(libc::SIGTERM);
    s.wait_exit(LONG);
    let opts = vmsh_scheduler::cli::verify::VerifyOptions { root: root.path().to_path_buf(), ..Default::default() };
    let f = fuzz_verify("receipts-local", &receipts[..3], &opts, |r| without(r, &["schedulerVersion"]));
    assert!(f.accepted >= 3, "the genuine receipts verify");
    report_fuzz("fuzz: verify with edited local: receipts (VERIFIED only for an unedited one)", &f);
}

#[test]
fn fuzz_verify_with_edited_rfc3161_receipts() {
    let tsa = crate::support::tsa_server::TestTsa::start();
    let root = Root::new();
    root.anchors(&format!("rfc3161:\n  tsa: {{url: \"{}\"}}\n", tsa.url()))
        .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"rfc3161:tsa\", every: \"1s\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(3));
    let mut s = Scheduler::start(&root);
    let dir = root.path().join("out/anchors/n");
    let receipts = wait_for(LONG, "two receipts", || receipts_in(&dir).filter(|files| files.len() >= 2));
    s.signal(libc::SIGTERM);
    s.wait_exit(LONG);
    let opts = vmsh_scheduler::cli::verify::VerifyOptions {
        root: root.path().to_path_buf(),
        trust_bundle: Some(tsa.ca.clone()),
        ..Default::default()
    };
    // A token attests the root and the time alone. And what it means is its signed content:
    // its certificate set is not signed, so a certificate the chain does not use (OpenSSL's
    // TSA sends the signer's twice) may change without changing what the token proves.
    let free = ["schedulerVersion", "namespace", "cadence", "target", "batchId", "attemptId", "attestation.verified"];
    let f = fuzz_verify("receipts-rfc3161", &receipts[..2], &opts, |r| {
        let mut meant = without(r, &free);
        let token = meant["attestation"]["token"].as_str().unwrap_or_default();
        let root = r["root"]
            .as_str()
            .and_then(|h| h.strip_prefix("sha256:"))
            .and_then(vmsh_scheduler::model::digest::parse_hex32);
        let signed = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token)
            .ok()
            .zip(root)
            .and_then(|(der, root)| vmsh_scheduler::anchor::rfc3161::verify_token(&der, &root, None).ok());
        if let Some(info) = signed {
            meant["attestation"]["token"] = json!(format!("{info:?}"));
        }
        meant
    });
    assert!(f.accepted >= 2, "the genuine receipts verify");
    report_fuzz("fuzz: verify with edited rfc3161: receipts (VERIFIED only for an unedited one)", &f);
}

/// What `every` should be, worked out independently of the parser: `Some(Ok(secs))` for a
/// fixed period, `Some(Err(n))` for `n*fast`, `None` when invalid.
fn every_oracle(raw: &str) -> Option<Result<u64, u64>> {
    let number = |digits: &str| -> Option<u128> {
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Some(u128::MAX);
        }
        Some(if digits.is_empty() { 0 } else { digits.parse().ok()? })
    };
    let all_digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let max = u128::from(config::cadence::MAX_PERIOD_SECS);
    let s = raw.trim();
    if let Some((n, unit)) = s.split_once('*') {
        let n = n.trim();
        if unit.trim() != "fast" || !all_digits(n) {
            return None;
        }
        let n = number(n)?;
        return (1..=max).contains(&n).then_some(Err(n as u64));
    }
    let unit = s.chars().last()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &s[..s.len() - unit.len_utf8()];
    if !all_digits(digits) {
        return None;
    }
    let secs = number(digits)?.saturating_mul(scale);
    (1..=max).contains(&secs).then_some(Ok(secs as u64))
}

/// Tokens a mutation of an `every` value may insert.
const CADENCE_DICT: &[&[u8]] = &[b"0", b"9", b"s", b"d", b"*", b"fast", b" ", b"99999999999999999999"];

#[test]
fn fuzz_the_cadence_parser_with_long_random_strings() {
    use vmsh_scheduler::config::cadence::{Every, parse_every};
    const FRAGMENTS: &[&str] = &[
        "0",
        "1",
        "7",
        "9",
        "00000",
        "99999999999",
        "18446744073709551615",
        "3153600000",
        "s",
        "m",
        "h",
        "d",
        "ms",
        "w",
        "*",
        "fast",
        "FAST",
        " ",
        "\t",
        "\n",
        "\u{3000}",
        "é",
        "𝟙",
        "-",
        "+",
        ".",
        "\0",
        "e9",
        "٣",
    ];
    let seeds: Vec<Vec<u8>> = ["89s", "34*fast", "1d", " 2m ", "36500d", "17 * fast", "12h", "0s", "99999999999d"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let budget = count(5_000, 50_000);
    let f = fuzz(
        "cadence",
        seeds,
        budget,
        |rng, corpus| {
            if rng.below(2) == 0 {
                // A well-formed value of any size, or a long run of random fragments.
                let digits: String = (0..1 + rng.below(40)).map(|_| char::from(b'0' + rng.below(10) as u8)).collect();
                let unit = *rng.pick(&["s", "m", "h", "d", "*fast", " * fast"]);
                format!("{}{digits}{unit}{}", " ".repeat(rng.below(3)), "\t".repeat(rng.below(2))).into_bytes()
            } else if rng.below(2) == 0 {
                (0..1 + rng.below(200)).map(|_| *rng.pick(FRAGMENTS)).collect::<String>().into_bytes()
            } else {
                let base = rng.pick(corpus).clone();
                mutate(rng, &base, corpus, CADENCE_DICT, nest_yaml)
            }
        },
        |bytes| {
            let Ok(raw) = std::str::from_utf8(bytes) else { return Ok(false) };
            let got = parse_every(raw);
            let want = every_oracle(raw);
            match (&got, want) {
                (Ok(Every::Fixed(secs)), Some(Ok(w))) if *secs == w => Ok(true),
                (Ok(Every::FastMultiple(n)), Some(Err(w))) if *n == w => {
                    // Resolving against any fast period stays in range or is refused.
                    let fast = Duration::from_secs(1 + (w % 100_000));
                    match Every::FastMultiple(*n).resolve(raw, Some(fast)) {
                        Ok(p) if p.as_secs() > config::cadence::MAX_PERIOD_SECS => Err(format!("resolved to {p:?}")),
                        _ => Ok(true),
                    }
                }
                (Err(e), None) if !e.to_string().is_empty() => Ok(false),
                _ => Err(format!("parse_every({raw:?}) = {got:?}, expected {want:?}")),
            }
        },
    );
    assert!(f.accepted > f.cases / 10, "too few valid values generated: {}", f.accepted);
    report_fuzz("fuzz: cadence parser (parse_every, long random strings, against an oracle)", &f);
}

/// Bytes a DER mutation may insert: tags, length forms, and the odd values around them.
const DER_DICT: &[&[u8]] = &[
    b"\x00",
    b"\x01",
    b"\x02",
    b"\x03",
    b"\x04",
    b"\x05",
    b"\x06",
    b"\x0c",
    b"\x17",
    b"\x18",
    b"\x30",
    b"\x31",
    b"\x7f",
    b"\x80",
    b"\x81",
    b"\x82",
    b"\x84",
    b"\xa0",
    b"\xa1",
    b"\xff",
    b"\x30\x00",
    b"\x30\x80",
    b"\x84\xff\xff\xff\xff",
    b"\x02\x01\x00",
    b"\x05\x00",
    b"\x18\x0f20991231235959Z",
];

/// `depth` SEQUENCE headers around `inner`, each with its right length.
fn nest_der(depth: usize, inner: &[u8]) -> Vec<u8> {
    let mut out = inner.to_vec();
    for _ in 0..depth.min(200) {
        let len = out.len();
        let mut head = vec![0x30];
        match len {
            0..0x80 => head.push(len as u8),
            0x80..0x100 => head.extend([0x81, len as u8]),
            0x100..0x10000 => head.extend([0x82, (len >> 8) as u8, len as u8]),
            _ => head.extend([0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
        }
        out.splice(0..0, head);
    }
    out
}

#[test]
fn fuzz_the_time_stamp_token_verifier() {
    use vmsh_scheduler::anchor::rfc3161::{TrustBundle, verify_token};
    const ROOT: [u8; 32] = [0x5a; 32];
    let ca = include_bytes!("../../src/anchor/rfc3161/testdata/ca.pem");
    TrustBundle::from_pem(ca).expect("the fixture bundle");
    let seeds = corpus("tsa", "tsa-token", |n| n.starts_with("token-"));
    for token in &seeds[..2] {
        assert!(verify_token(token, &ROOT, Some(ca)).expect("a corpus token verifies").verified);
    }
    let budget = count(3_000, 30_000);
    // Signature checks are slow in debug builds: one case in 8 goes through them.
    let checked = std::cell::Cell::new(0usize);
    let f = fuzz(
        "tsa-token",
        seeds,
        budget,
        |rng, corpus| {
            let base = rng.pick(corpus).clone();
            // Mostly changes in place, which keep every length right and so reach deep.
            if rng.below(2) == 0 && !base.is_empty() {
                let mut b = base;
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(b.len());
                    b[at] = if rng.below(2) == 0 { b[at] ^ (1 << rng.below(8)) } else { rng.pick(DER_DICT)[0] };
                }
                b
            } else {
                mutate(rng, &base, corpus, DER_DICT, nest_der)
            }
        },
        |bytes| {
            let n = checked.get();
            checked.set(n + 1);
            let with_bundle = n.is_multiple_of(8);
            match verify_token(bytes, &ROOT, with_bundle.then_some(&ca[..])) {
                Ok(info) if info.verified != with_bundle => Err(format!("verified is {}", info.verified)),
                Ok(info) if info.policy.is_empty() || info.serial_hex.is_empty() => {
                    Err(format!("empty fields: {info:?}"))
                }
                Ok(_) => Ok(true),
                Err(e) if e.is_empty() => Err("an empty error".into()),
                Err(_) => Ok(false),
            }
        },
    );
    report_fuzz("fuzz: RFC 3161 token parser and verifier (verify_token, a bundle on 1 case in 8)", &f);
}

#[test]
fn fuzz_failures_are_saved_for_replay_and_tried_first() {
    // The harness itself: a broken property fails the run, saves the input, and the next run
    // starts from it.
    let target = "self-test";
    let dir = failures_dir(target);
    let _ = std::fs::remove_dir_all(&dir);
    let seeds = vec![b"ok".to_vec()];
    let outcome = catch_unwind(|| {
        fuzz(
            target,
            seeds.clone(),
            100,
            |_, _| b"boom".to_vec(),
            |b| if b == b"boom" { Err("boom".into()) } else { Ok(true) },
        )
    });
    let message = outcome.err().and_then(|p| p.downcast_ref::<String>().cloned()).expect("the run failed");
    assert!(message.contains("case 1") && message.contains("boom"), "{message}");
    let saved = corpus("namespaces", target, |_| false);
    assert_eq!(saved, vec![b"boom".to_vec()], "the failing input was saved");
    // A run given the saved inputs fails on them before making a single mutant.
    let boom = |b: &[u8]| if b == b"boom" { Err("boom again".to_string()) } else { Ok(true) };
    let outcome = catch_unwind(|| fuzz(target, [seeds.clone(), saved.clone()].concat(), 0, |_, _| Vec::new(), boom));
    let message = outcome.err().and_then(|p| p.downcast_ref::<String>().cloned()).expect("the run failed");
    assert!(message.contains("case 1 ") && message.contains("boom again"), "{message}");
    let outcome = catch_unwind(|| fuzz(target, vec![b"x".to_vec()], 1, |_, _| Vec::new(), |_| panic!("a parser bug")));
    let message = outcome.err().and_then(|p| p.downcast_ref::<String>().cloned()).expect("the run failed");
    assert!(message.contains("panicked: a parser bug"), "{message}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

// ---------------------------------------------------------------------------------------------
// Batch entries that are not batches, and batch reads that never return

/// A namespaces file with one `fast` cadence of 1 s per name, each on a journal of its own.
fn fast_namespaces(names: &[&str]) -> String {
    let mut yaml = String::from("namespaces:\n");
    for name in names {
        yaml.push_str(&format!("  {name}:\n    cadence:\n      fast: {{target: \"local:{name}\", every: \"1s\"}}\n"));
    }
    yaml
}

/// The message of the `fast` cadence's last error, once it has one.
fn wait_error(s: &Scheduler, ns: &str, what: &str) -> String {
    wait_for(LONG, &format!("{ns} to fail with {what}"), || {
        let message = fast(s, ns)?.last_error?.message;
        message.contains(what).then_some(message)
    })
}

/// The batch folder of `ns`.
fn ns_dir(root: &Root, ns: &str) -> PathBuf {
    root.path().join("out/batches").join(ns)
}

/// Makes a named pipe at `path`, and its folder.
fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// Has `cmd` run without the capabilities that let root ignore file permissions, so that it
/// meets permission errors as any other user does. (Dropped from the bounding set: an exec as
/// root would otherwise grant them again.)
fn without_permission_override(cmd: &mut std::process::Command) {
    // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
    const OVERRIDES: [libc::c_ulong; 2] = [1, 2];
    // SAFETY: runs in the forked child before exec; geteuid and prctl are async-signal-safe and
    // the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() != 0 {
                return Ok(());
            }
            for cap in OVERRIDES {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[test]
fn a_named_pipe_or_a_link_to_one_fails_only_its_namespace_and_the_others_keep_anchoring() {
    let root = Root::new();
    root.namespaces(&fast_namespaces(&["good", "pipe", "linked"]))
        .batch(None, "0001.json", "shared-1", &root_hex(1))
        .batch(Some("pipe"), "0001.json", "pipe-older", &root_hex(2))
        .batch(Some("linked"), "0001.json", "linked-older", &root_hex(3));
    // The newest entry of each: a named pipe no one writes to, and a link to one.
    mkfifo(&ns_dir(&root, "pipe").join("0002.json"));
    mkfifo(&root.path().join("fifo"));
    symlink(root.path().join("fifo"), &ns_dir(&root, "linked").join("0002.json"));
    let s = Scheduler::start(&root);
    for ns in ["pipe", "linked"] {
        let file = ns_dir(&root, ns).join("0002.json");
        let message = wait_error(&s, ns, "is a named pipe");
        assert!(message.contains(&format!("{} is a named pipe, not a regular file", file.display())), "{message}");
        let c = fast(&s, ns).unwrap_or_else(|| panic!("{ns} is not in /health"));
        assert!(failed_validation(&c), "{c}");
        assert!(c.last_batch.is_none(), "{ns}: an older batch was anchored instead of the newest entry: {c}");
        let logged = s.logs_with_msg("anchor failed");
        assert!(
            logged.iter().any(|l| l["ns"] == ns && l["err"].as_str().is_some_and(|e| e.contains("is a named pipe"))),
            "{ns}: no log line names the pipe"
        );
    }
    wait_for(LONG, "the good namespace to anchor three times", || (root.receipts("good").len() >= 3).then_some(()));
    assert!(root.receipts("pipe").is_empty() && root.receipts("linked").is_empty());
    assert_eq!(s.get("/livez").0, 200);
    report("named pipes in a batch folder", 2, "pass", json!({"cases": ["a named pipe", "a link to a named pipe"]}));
}

#[test]
fn hostile_batch_entries_fail_only_their_namespace_and_say_what_they_are() {
    let root = Root::new();
    let elsewhere = tempfile::tempdir().expect("a folder outside the root");
    let dir = |ns: &str| ns_dir(&root, ns);
    // (namespace, what its newest entry is, the error it gets; or the batch it anchors when
    // the entry is acceptable, or "no batch").
    enum Want {
        Error(String),
        Anchors(&'static str),
        NoBatch,
    }
    let mut cases: Vec<(&str, &str, Want)> = Vec::new();
    let entry = |ns: &str| dir(ns).join("0002.json").display().to_string();
    std::fs::create_dir_all(dir("socket")).expect("mkdir");
    let _socket = std::os::unix::net::UnixListener::bind(dir("socket").join("0002.json")).expect("bind");
    cases.push(("socket", "a socket", Want::Error(format!("{} is a socket, not a regular file", entry("socket")))));
    for (ns, device) in [("zero", "/dev/zero"), ("urandom", "/dev/urandom")] {
        symlink(device, &dir(ns).join("0002.json"));
        cases.push((ns, device, Want::Error(format!("{} is a character device", entry(ns)))));
    }
    symlink("0002.json", &dir("loop").join("0002.json"));
    cases.push(("loop", "a link to itself", Want::Error(format!("cannot read {}: Too many levels", entry("loop")))));
    symlink(root.path().join("nowhere"), &dir("dangling").join("0002.json"));
    cases.push((
        "dangling",
        "a link to nothing",
        Want::Error(format!("{} is a link to something that does not exist", entry("dangling"))),
    ));
    root.batch(Some("unreadable"), "0002.json", "unreadable", &root_hex(4));
    std::fs::set_permissions(dir("unreadable").join("0002.json"), std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .expect("chmod");
    cases.push((
        "unreadable",
        "a file without read permission",
        Want::Error(format!("cannot read {}: Permission denied", entry("unreadable"))),
    ));
    root.batch(Some("closed"), "0002.json", "closed", &root_hex(5));
    std::fs::set_permissions(dir("closed"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).expect("chmod");
    cases.push((
        "closed",
        "a namespace folder without permissions",
        Want::Error(format!("cannot read {}: Permission denied", dir("closed").display())),
    ));
    std::fs::create_dir_all(dir("folder").join("0002.json")).expect("mkdir");
    cases.push(("folder", "a folder named 0002.json, alone", Want::NoBatch));
    root.batch(Some("folder-last"), "0001.json", "folder-last-1", &root_hex(6));
    std::fs::create_dir_all(dir("folder-last").join("0002.json")).expect("mkdir");
    cases.push(("folder-last", "a folder named 0002.json after a batch", Want::Anchors("folder-last-1")));
    root.batch(Some("latin1"), "0001.json", "latin1-1", &root_hex(7));
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"0002-caf\xe9.json");
    write_file(&dir("latin1").join(name), &format!(r#"{{"id":"latin1-2","root":"sha256:{}"}}"#, root_hex(8)));
    cases.push(("latin1", "a name that is not UTF-8", Want::Anchors("latin1-2")));
    write_file(
        &elsewhere.path().join("batch.json"),
        &format!(r#"{{"id":"outside-1","root":"sha256:{}"}}"#, root_hex(9)),
    );
    symlink(elsewhere.path().join("batch.json"), &dir("outside").join("0002.json"));
    cases.push(("outside", "a link to a batch outside VMSH_ROOT", Want::Anchors("outside-1")));
    symlink("nsloop", &dir("nsloop"));
    cases.push((
        "nsloop",
        "a namespace folder that links to itself",
        Want::Error(format!("cannot read {}: Too many levels", dir("nsloop").display())),
    ));
    symlink(root.path().join("nowhere"), &dir("nsdangling"));
    cases.push((
        "nsdangling",
        "a namespace folder that links to nothing",
        Want::Error(format!("{} is a link to something that does not exist", dir("nsdangling").display())),
    ));
    let mut names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    names.push("good");
    root.namespaces(&fast_namespaces(&names)).batch(None, "0001.json", "shared-1", &root_hex(1));
    let mut cmd = command(&root, &base_env(&root), &[]);
    without_permission_override(&mut cmd);
    let s = Scheduler::start_command(cmd);
    for (ns, what, want) in &cases {
        match want {
            Want::Error(text) => {
                let message = wait_error(&s, ns, text);
                assert!(fast(&s, ns).is_some_and(|c| failed_validation(&c)), "{what}: {message}");
            }
            Want::Anchors(id) => {
                let receipts = wait_for(LONG, &format!("{what} to be anchored"), || {
                    let r = root.receipts(ns);
                    (!r.is_empty()).then_some(r)
                });
                assert_eq!(receipts[0]["batchId"], *id, "{what}");
            }
            Want::NoBatch => {
                wait_for(LONG, &format!("{what} to wait for a batch"), || {
                    fast(&s, ns).is_some_and(|c| c.waiting.as_deref() == Some("no batch")).then_some(())
                });
                assert!(fast(&s, ns).is_some_and(|c| c.last_error.is_none()), "{what}");
            }
        }
    }
    wait_for(LONG, "the good namespace to anchor twice", || (root.receipts("good").len() >= 2).then_some(()));
    for (ns, what, want) in &cases {
        if matches!(want, Want::Error(_) | Want::NoBatch) {
            assert!(root.receipts(ns).is_empty(), "{what} anchored something");
        }
    }
    assert_eq!(s.get("/livez").0, 200);
    assert!(!s.stderr().contains("panicked"));
    std::fs::set_permissions(dir("closed"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod back");
    report(
        "batch entries of every file type, links and permissions",
        cases.len(),
        "pass",
        json!({"cases": cases.iter().map(|c| c.1).collect::<Vec<_>>()}),
    );
}

/// A FUSE file system that never answers, like a hung network mount: every access to it
/// blocks until its connection is closed. It is mounted only in the mount namespace of the
/// process started through [`HungMount::mount_for`], so nothing else on the machine sees it.
struct HungMount {
    device: Option<std::fs::File>,
    at: PathBuf,
}

impl HungMount {
    const NEEDS: &str = "this test needs FUSE: /dev/fuse (`modprobe fuse`), and to run as root or where \
                         unprivileged user namespaces are allowed";

    fn new(at: &Path) -> Self {
        std::fs::create_dir_all(at).expect("mkdir the mount point");
        // Tried on a throwaway process first (a connection serves one mount), so a machine
        // without the means says so plainly.
        let mut probe = std::process::Command::new("true");
        let tried = Self::open(at);
        tried.mount_for(&mut probe);
        let status = probe.status().unwrap_or_else(|e| panic!("{} (mounting: {e})", Self::NEEDS));
        assert!(status.success(), "{}", Self::NEEDS);
        Self::open(at)
    }

    fn open(at: &Path) -> Self {
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap_or_else(|e| panic!("{} (/dev/fuse: {e})", Self::NEEDS));
        Self { device: Some(device), at: at.to_path_buf() }
    }

    /// Has `cmd` run in a mount namespace of its own in which the mount point is this file
    /// system (a user namespace too when not root).
    fn mount_for(&self, cmd: &mut std::process::Command) {
        use std::ffi::CString;
        use std::os::fd::AsRawFd as _;
        let fd = self.device.as_ref().expect("the connection is open").as_raw_fd();
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let target = CString::new(self.at.as_os_str().as_encoded_bytes()).expect("path without NUL");
        let options =
            CString::new(format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid}")).expect("options without NUL");
        let (uid_map, gid_map) = (format!("{uid} {uid} 1"), format!("{gid} {gid} 1"));
        fn check(rc: libc::c_int) -> std::io::Result<()> {
            if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        }
        // SAFETY (each call): valid NUL-terminated strings and buffers owned by the closure.
        unsafe fn write_proc(path: &std::ffi::CStr, text: &str) -> std::io::Result<()> {
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
            unsafe { libc::close(fd) };
            if usize::try_from(written).ok() == Some(text.len()) {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        // SAFETY: runs in the forked child before exec; it makes only system calls (unshare,
        // open, write, close, mount) on data prepared above, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if uid == 0 {
                    check(libc::unshare(libc::CLONE_NEWNS))?;
                } else {
                    check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                    write_proc(c"/proc/self/setgroups", "deny")?;
                    write_proc(c"/proc/self/uid_map", &uid_map)?;
                    write_proc(c"/proc/self/gid_map", &gid_map)?;
                }
                // Nothing mounted from here on reaches the test's own namespace.
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                check(libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), flags, std::ptr::null()))?;
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
                check(libc::mount(
                    c"vmsh-hung".as_ptr(),
                    target.as_ptr(),
                    c"fuse".as_ptr(),
                    flags,
                    options.as_ptr().cast(),
                ))
            });
        }
    }

    /// Closes the connection: every access blocked on the file system returns, with an error.
    fn release(&mut self) {
        self.device = None;
    }
}

/// Gives `ns` a folder whose newest batch is a link to a file on `mount`.
fn batch_on(root: &Root, ns: &str, mount: &Path) -> PathBuf {
    root.batch(Some(ns), "0001.json", &format!("{ns}-1"), &root_hex(2));
    let file = ns_dir(root, ns).join("0002.json");
    symlink(mount.join(ns), &file);
    file
}

/// The stuck reads /health lists.
fn stuck_reads(s: &Scheduler) -> Vec<StuckRead> {
    s.health().batch_reader.map(|r| r.stuck).unwrap_or_default()
}

#[test]
fn a_batch_read_that_never_returns_is_left_behind_and_livez_fails_once_too_many_are() {
    let root = Root::new();
    let mut mount = HungMount::new(&root.path().join("hung"));
    let first = batch_on(&root, "hung1", &root.path().join("hung"));
    root.namespaces(&fast_namespaces(&["good", "hung1"])).batch(None, "0001.json", "shared-1", &root_hex(1));
    let mut env = base_env(&root);
    env.insert("VMSH_BATCH_READ_TIMEOUT_S".into(), "0.3".into());
    let mut cmd = command(&root, &env, &[]);
    mount.mount_for(&mut cmd);
    let s = Scheduler::start_command(cmd);

    // The read blocked on the hung file system fails its namespace; a new thread serves the rest.
    let message = wait_error(&s, "hung1", "did not return");
    assert!(message.contains(&format!("reading {} did not return within 0.3s", first.display())), "{message}");
    let line = s.wait_log("a batch read did not return in time: the batch reader goes on without it");
    assert_eq!(line["file"], first.display().to_string(), "{line}");
    assert_eq!(line["level"], "warn", "{line}");
    let stuck = wait_for(LONG, "/health to list the stuck read", || {
        let stuck = stuck_reads(&s);
        (!stuck.is_empty()).then_some(stuck)
    });
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].path, first.display().to_string());
    assert_eq!(s.health().status, OverallStatus::Degraded);
    assert_eq!(metric(&s.metrics(), "vmsh_batch_reads_stuck", &[]), Some(1.0));
    let anchored = root.receipts("good").len();
    wait_for(LONG, "the good namespace to keep anchoring", || {
        (root.receipts("good").len() >= anchored + 2).then_some(())
    });
    // Its next runs are refused at once: a retry does not strand one more thread.
    let message = wait_error(&s, "hung1", "is not read");
    assert!(message.contains(&format!("an earlier read of {} has not returned", first.display())), "{message}");
    assert_eq!(stuck_reads(&s).len(), 1);
    assert_eq!(s.get("/livez").0, 200);

    // As many stuck reads as the reader leaves behind: nothing can be read any more.
    let mut names = vec!["good", "hung1"];
    let more = ["hung2", "hung3", "hung4"];
    for ns in more {
        batch_on(&root, ns, &root.path().join("hung"));
    }
    names.extend(more);
    write_file_atomic(&root.path().join("namespaces.yaml"), &fast_namespaces(&names));
    let (_, body) = wait_for(LONG, "/livez to fail", || {
        let (code, body) = s.get("/livez");
        (code == 503).then_some((code, body))
    });
    assert!(body.contains("no batch can be read: 4 batch reads have not returned"), "{body}");
    let (code, body) = s.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no batch can be read"), "{body}");
    let (code, health) = s.health_answer();
    assert_eq!(code, 503, "{health}");
    assert_eq!(health.status, OverallStatus::Unhealthy);
    let error = health.batch_reader.as_ref().and_then(|r| r.error.as_deref());
    assert!(error.is_some_and(|e| e.contains("cannot make progress")), "{health}");
    assert_eq!(metric(&s.metrics(), "vmsh_batch_reads_stuck", &[]), Some(4.0));
    s.wait_log("no batch can be read: too many batch reads are stuck");
    wait_error(&s, "good", "no batch can be read");

    // The file system answers again (here: its connection closes): the reads return, and
    // reading resumes for everyone.
    mount.release();
    wait_for(LONG, "/livez to recover", || (s.get("/livez").0 == 200).then_some(()));
    wait_for(LONG, "the stuck reads to return", || stuck_reads(&s).is_empty().then_some(()));
    assert_eq!(metric(&s.metrics(), "vmsh_batch_reads_stuck", &[]), Some(0.0));
    assert_eq!(s.health().batch_reader.map(|r| r.stuck_total), Some(4));
    s.wait_log("a stuck batch read returned");
    let anchored = root.receipts("good").len();
    wait_for(LONG, "the good namespace to anchor again", || (root.receipts("good").len() > anchored).then_some(()));
    report(
        "a batch read that never returns (a hung FUSE mount)",
        1,
        "pass",
        json!({"readTimeoutS": 0.3, "stuckReadsBeforeLivezFails": 4}),
    );
}

#[test]
fn an_id_that_is_a_huge_array_is_refused_without_being_built() {
    let root = Root::new();
    root.namespaces(&fast_namespaces(&["good", "bulky"])).batch(None, "0001.json", "b1", &root_hex(1));
    // Just under 32 MiB: sixteen million numbers, about half a gigabyte as JSON values.
    let tail = format!(r#"1],"root":"sha256:{}"}}"#, root_hex(2));
    let count = (32 * 1024 * 1024 - 16 - tail.len()) / 2;
    let mut body = String::with_capacity(32 * 1024 * 1024);
    body.push_str(r#"{"id":["#);
    body.push_str(&"1,".repeat(count));
    body.push_str(&tail);
    write_file(&ns_dir(&root, "bulky").join("0001.json"), &body);
    let s = Scheduler::start(&root);
    let message = wait_error(&s, "bulky", "`id` must be a string, not an array");
    assert!(message.len() < 500, "a {}-byte message", message.len());
    wait_for(LONG, "the other namespace to anchor", || (!root.receipts("good").is_empty()).then_some(()));
    let peak = status_kib(scheduler_pid(root.path()), "VmHWM").expect("the scheduler's VmHWM");
    assert!(peak < RUNNING_PEAK_KIB, "peak resident set {peak} KiB: the id was built");
    report("a batch id of a 32 MiB array", 1, "pass", json!({"peakRssMiB": peak / 1024}));
}
