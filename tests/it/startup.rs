//! Start-up: `validate`, and every way a start can fail, each with its exit code (2 invalid
//! settings or config, 3 state file, 4 port in use) and a message naming what to fix.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::{Root, Scheduler, base_env, command, root_hex, wait_for, write_file};

const VALID: &str = r#"
namespaces:
  dao:vaultmesh:
    cadence:
      fast: {target: "local:demo", every: "1s"}
"#;

/// Runs the binary to completion with the base environment plus `extra`, and `args`.
fn run(root: &Root, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut env = base_env(root);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let child = command(root, &env, args).spawn().expect("start vmsh-scheduler");
    // Every case here exits by itself within milliseconds; a hang is a failure, not a wait.
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    let limit = std::time::Instant::now() + Duration::from_secs(20);
    while !waiter.is_finished() {
        if std::time::Instant::now() > limit {
            // SAFETY: killing our own child, which has not been reaped (the waiter still waits).
            unsafe {
                libc::kill(i32::try_from(pid).expect("pid"), libc::SIGKILL);
            }
            panic!("vmsh-scheduler {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().expect("waiter")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
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
fn the_reference_namespaces_file_validates() {
    let root = Root::new();
    let file = root.path().join("namespaces.vm-spawn.yaml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/namespaces.vm-spawn.yaml"), &file)
        .expect("copy fixture");
    // Alone, its network targets are not configured: that is an error naming each.
    let out = run(&root, &[], &["validate", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("eip155:8453 is not configured"), "{}", stderr(&out));
    // With the reference targets file, its variables and its trust bundle, it is valid.
    let anchors = root.path().join("anchors.vm-spawn.yaml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anchors.vm-spawn.yaml"), &anchors)
        .expect("copy fixture");
    write_file(
        &root.path().join("services/anchors/certs/tsa-bundle.pem"),
        include_str!("../../src/anchor/rfc3161/testdata/ca.pem"),
    );
    let vars = [
        ("VMSH_ANCHORS", anchors.to_str().expect("utf-8")),
        ("EVM_RPC", "http://127.0.0.1:8545"),
        ("EVM_CHAIN_ID", ""),
        ("EVM_CONTRACT", ""),
        ("EVM_ANCHOR_KEY", "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
        ("BTC_RPC", "http://vmsh:secret@127.0.0.1:18443"),
        ("TSA_URL", "http://127.0.0.1:3180/tsr"),
    ];
    let out = run(&root, &vars, &["validate", file.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", stderr(&out));
    assert!(stdout.contains("valid, 2 namespace(s)"), "{stdout}");
    assert!(stdout.contains(file.to_str().expect("utf-8")), "{stdout}");
}

#[test]
fn validate_lists_every_problem_with_file_namespace_field_and_reason() {
    let root = Root::new();
    let file = root.path().join("bad.yaml");
    write_file(
        &file,
        r#"
namespaces:
  dao:one:
    witnesses:
      min_required: 4
      allowlist: ["did:vm:a", "did:vm:b", "did:vm:c"]
    cadence:
      fast: {target: "local:x", every: "0s"}
      strong: {target: "ipfs:x", every: "99999999999d"}
  fin:two:
    colour: blue
    cadence:
      fast: {target: "local:x", every: "1s"}
  ops:three:
    cadence:
      fast: {target: "local:x", every: "34*fast"}
  ops:four:
    cadence:
      fast: {target: "local:x", every: "1é"}
"#,
    );
    let out = run(&root, &[], &["validate", file.to_str().expect("utf-8 path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let expected = [
        ("dao:one", "cadence.fast.every", "is zero"),
        ("dao:one", "witnesses.min_required", "allowlist has only 3"),
        ("dao:one", "cadence.strong.target", "unknown target scheme \"ipfs\""),
        ("dao:one", "cadence.strong.every", "longer than the longest period"),
        ("fin:two", "colour", "unknown field `colour`"),
        ("ops:three", "cadence.fast.every", "cannot be used by fast itself"),
        ("ops:four", "cadence.fast.every", "is not a period"),
    ];
    let problem_lines: Vec<&str> = err.lines().filter(|l| l.starts_with(file.to_str().expect("utf-8"))).collect();
    for (ns, field, reason) in expected {
        let hit = problem_lines.iter().any(|l| {
            l.contains(&format!("namespace \"{ns}\"")) && l.contains(&format!(": {field}: ")) && l.contains(reason)
        });
        assert!(hit, "no line names {ns} / {field} / {reason:?}:\n{err}");
    }
    assert_eq!(problem_lines.len(), expected.len(), "one line per problem:\n{err}");
    assert!(err.contains(&format!("{} problem(s) found", expected.len())), "{err}");
}

#[test]
fn an_invalid_config_exits_2_naming_each_problem_and_writes_no_state() {
    let root = Root::new();
    root.namespaces(
        r#"
namespaces:
  dao:vaultmesh:
    cadence:
      fast: {target: "local:demo", every: "0s"}
  fin:clearing:
    cadence:
      fast: {target: "exec:missing", every: "1m"}
"#,
    );
    let out = run(&root, &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = root.path().join("namespaces.yaml").display().to_string();
    for (ns, field, reason) in
        [("dao:vaultmesh", "cadence.fast.every", "is zero"), ("fin:clearing", "cadence.fast.target", "not configured")]
    {
        assert!(
            err.lines().any(|l| l.contains(&file)
                && l.contains(&format!("namespace \"{ns}\""))
                && l.contains(&format!(": {field}: "))
                && l.contains(reason)),
            "no stderr line names {file} / {ns} / {field} / {reason:?}:\n{err}"
        );
    }
    assert!(!root.state_path().exists(), "no state file");
    assert!(!root.state_path().parent().expect("state dir").exists(), "not even the state folder");
}

#[test]
fn a_missing_namespaces_file_exits_2_naming_the_path() {
    let root = Root::new();
    let out = run(&root, &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&root.path().join("namespaces.yaml").display().to_string()), "{err}");
    assert!(!root.state_path().exists());
}

#[test]
fn a_corrupt_state_file_is_refused_and_moved_aside_only_on_request() {
    let root = Root::new();
    root.namespaces(VALID).batch(None, "0001.json", "b1", &root_hex(4));
    let corrupt = "{\"version\": 1, \"namespaces\": {\"dao:vaultmesh\": ";
    write_file(&root.state_path(), corrupt);
    let out = run(&root, &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&root.state_path().display().to_string()), "{err}");
    assert!(err.contains("--reset-corrupt-state"), "{err}");
    assert_eq!(std::fs::read_to_string(root.state_path()).expect("still there"), corrupt, "left untouched");
    assert!(root.receipts("dao:vaultmesh").is_empty());

    let s = Scheduler::start_with_args(&root, &[], &["--reset-corrupt-state"]);
    let warned = s.wait_log("state file was corrupt; moved aside, starting without it");
    let moved = PathBuf::from(warned["moved_to"].as_str().expect("moved_to"));
    let state_dir = root.state_path().parent().expect("state dir").to_path_buf();
    assert_eq!(moved.parent(), Some(state_dir.as_path()));
    let name = moved.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("scheduler.json.corrupt-"), "{name}");
    assert_eq!(std::fs::read_to_string(&moved).expect("moved file"), corrupt, "content preserved");
    wait_for(Duration::from_secs(10), "anchoring to proceed", || {
        (!root.receipts("dao:vaultmesh").is_empty()).then_some(())
    });
    wait_for(Duration::from_secs(5), "the new anchor in the state", || {
        let (state, _) = vmsh_scheduler::storage::state::load(&root.state_path()).ok()?;
        state.namespaces.get("dao:vaultmesh")?.cadences.values().any(|c| c.last_success_ms.is_some()).then_some(())
    });
}

#[test]
fn a_state_file_from_a_newer_scheduler_exits_3() {
    let root = Root::new();
    root.namespaces(VALID);
    let newer = r#"{"version": 99, "namespaces": {}}"#;
    write_file(&root.state_path(), newer);
    let out = run(&root, &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("newer"), "{err}");
    assert!(err.contains("99"), "{err}");
    assert!(err.contains(&root.state_path().display().to_string()), "{err}");
    assert_eq!(std::fs::read_to_string(root.state_path()).expect("kept"), newer);
}

#[test]
fn a_port_in_use_exits_4_naming_the_address() {
    let root = Root::new();
    root.namespaces(VALID);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = run(&root, &[("METRICS_PORT", &port)], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    drop(taken);
}

#[test]
fn invalid_settings_exit_2_naming_the_variable() {
    let root = Root::new();
    root.namespaces(VALID);
    for (name, value) in [
        ("VMSH_TICK_MS", "soon"),
        ("LOG_LEVEL", "loud"),
        ("VMSH_MAX_BACKOFF", "99"),
        ("METRICS_PORT", "70000"),
        ("VMSH_BASE_BACKOFF", "-1"),
    ] {
        let out = run(&root, &[(name, value)], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {err}");
        assert!(err.contains(&format!("{name}=")), "{name}={value}: {err}");
        assert!(err.contains(value), "{name}={value}: {err}");
    }
    assert!(!root.state_path().exists());
}

#[test]
fn a_duplicate_key_is_reported_at_the_duplicate_not_at_its_mapping() {
    let root = Root::new();
    let file = root.path().join("dup.yaml");
    write_file(
        &file,
        "namespaces:\n  a:\n    cadence:\n      fast: {target: \"local:x\", every: \"1s\"}\n  b:\n    cadence:\n      fast: {target: \"local:x\", every: \"1s\"}\n  a:\n    cadence:\n      fast: {target: \"local:x\", every: \"2s\"}\n",
    );
    let out = run(&root, &[], &["validate", file.to_str().expect("utf-8 path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("duplicate entry with key \"a\" at line 8 column 3"), "{err}");
}

#[test]
fn closed_stdout_and_stderr_change_no_exit_status() {
    let root = Root::new();
    root.namespaces(VALID);
    let bad = root.path().join("bad.yaml");
    write_file(&bad, "namespaces: [1]\n");
    let bad = bad.to_str().expect("utf-8 path");
    for (args, extra, code) in [
        (&["validate"][..], &[][..], 0),
        (&["validate", bad][..], &[][..], 2),
        (&["verify", "missing.json"][..], &[][..], 2),
        (&[][..], &[("METRICS_PORT", "70000")][..], 2),
    ] {
        let mut env = base_env(&root);
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        // Both streams go to a pipe nobody reads any more: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut cmd = command(&root, &env, args);
        cmd.stdout(writer.try_clone().expect("dup")).stderr(writer);
        let status = cmd.status().expect("run vmsh-scheduler");
        assert_eq!(status.code(), Some(code), "{args:?} {extra:?}");
    }
}

#[test]
fn a_state_snapshot_a_crash_cut_short_leaves_no_temporary_behind() {
    let root = Root::new();
    root.namespaces(VALID);
    let state = root.state_path();
    std::fs::create_dir_all(state.parent().expect("state folder")).expect("mkdir");
    let name = state.file_name().expect("name").to_string_lossy().to_string();
    let leftover = state.with_file_name(format!(".{name}.tmp424242"));
    std::fs::write(&leftover, "{\"version\": 1, \"namesp").expect("write");
    let mut s = Scheduler::start(&root);
    wait_for(Duration::from_secs(10), "the leftover to go", || (!leftover.exists()).then_some(()));
    s.kill9();
}

#[test]
fn a_variable_that_is_not_utf8_is_ignored_not_a_panic() {
    use std::os::unix::ffi::OsStrExt as _;
    let root = Root::new();
    root.namespaces(VALID);
    let mut cmd = command(&root, &base_env(&root), &["validate"]);
    cmd.env("SOME_TOOL_SETTING", std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let out = cmd.output().expect("run vmsh-scheduler");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_port_out_of_range_is_reported_as_out_of_range() {
    let root = Root::new();
    root.namespaces(VALID);
    let out = run(&root, &[("METRICS_PORT", "70000")], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("METRICS_PORT=\"70000\": out of range: must be between 0 and 65535"), "{err}");
}

#[test]
fn validate_verify_and_status_ignore_settings_only_the_service_uses() {
    let root = Root::new();
    root.namespaces(VALID);
    let service_only =
        [("VMSH_TICK_MS", "0"), ("LOG_LEVEL", "bogus"), ("LOG_FORMAT", "yaml"), ("VMSH_ANCHOR_WORKERS", "0")];
    let out = run(&root, &service_only, &["validate"]);
    assert_eq!(out.status.code(), Some(0), "validate: {}", stderr(&out));
    // A receipt that is not there: verify must get as far as looking for it.
    let out = run(&root, &service_only, &["verify", "missing-receipt.json"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!text.contains("invalid setting"), "verify: {text}");
    assert!(text.contains("missing-receipt.json"), "verify: {text}");
    // Nothing listens on this port: status must get as far as asking it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let port = free.to_string();
    let out = run(&root, &[service_only.as_slice(), &[("METRICS_PORT", port.as_str())]].concat(), &["status"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "status: {err}");
    assert!(!err.contains("invalid setting") && err.contains(&port), "status: {err}");
    // The service itself still refuses them, naming the first.
    let out = run(&root, &service_only, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("VMSH_TICK_MS=\"0\""), "{}", stderr(&out));
}

#[test]
fn namespace_names_with_colons_and_slashes_are_stored_inside_the_root() {
    let root = Root::new();
    let names = ["a/../../b", "ops:x/y"];
    root.namespaces(
        r#"
namespaces:
  "a/../../b":
    cadence:
      fast: {target: "local:demo", every: "1h"}
  "ops:x/y":
    cadence:
      fast: {target: "local:demo", every: "1h"}
"#,
    )
    .batch(None, "0001.json", "b1", &root_hex(5));
    let mut s = Scheduler::start(&root);
    for ns in names {
        let r = wait_for(Duration::from_secs(10), "a receipt", || root.receipts(ns).into_iter().next());
        assert_eq!(r["namespace"], ns);
    }
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(0), "{}", s.stderr());

    let anchors = root.path().join("out/anchors");
    let mut folders: Vec<String> = std::fs::read_dir(&anchors)
        .expect("out/anchors")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    folders.sort();
    let mut want: Vec<String> = names.iter().map(|n| vmsh_scheduler::model::fsname::encode(n)).collect();
    want.sort();
    assert_eq!(folders, want, "one encoded folder per namespace in out/anchors");
    for f in &folders {
        assert!(!f.contains('/') && !f.starts_with('.'), "{f}");
        assert!(names.contains(&vmsh_scheduler::model::fsname::decode(f).expect("decodes").as_str()));
    }
    // Everything the scheduler wrote is in its known places inside the root.
    for file in files_under(root.path()) {
        let first = file.components().next().expect("component").as_os_str().to_string_lossy().to_string();
        let known = file.starts_with("out/anchors")
            || file.starts_with("out/journal")
            || file.starts_with("out/batches")
            || file.starts_with("state")
            || file == Path::new(vmsh_scheduler::storage::lockfile::ROOT_LOCK)
            || first == "namespaces.yaml";
        assert!(known, "unexpected file {}", file.display());
        assert!(!file.components().any(|c| c.as_os_str() == "b" || c.as_os_str() == ".."), "{}", file.display());
    }
    let outside = root.path().parent().expect("temp parent").join("b");
    assert!(!outside.exists(), "{} was written outside the root", outside.display());
    let state = root.state();
    for ns in names {
        assert!(state["namespaces"][ns]["cadences"]["fast"]["lastSuccessMs"].is_i64(), "{state}");
    }
}
