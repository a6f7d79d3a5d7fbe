//! The README's and the docs' examples, run: what they say a command or a file does, it does.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{Root, base_env, root_hex, wait_for};

/// A document of the repository (`README.md`, `docs/CONFIGURATION.md`, …), as shipped.
fn doc(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

#[test]
fn the_encoding_examples_in_the_configuration_docs_are_what_the_scheduler_writes() {
    let text = doc("docs/CONFIGURATION.md");
    let mut checked = 0;
    // Every "`NAME` becomes `FILE`" and "`NAME` stays readable" of the namespaces section.
    for (i, _) in text.match_indices("` becomes `") {
        let name = text[..i].rsplit('`').next().expect("opening backtick");
        let encoded = text[i + "` becomes `".len()..].split('`').next().expect("closing backtick");
        assert_eq!(vmsh_scheduler::fsname::encode(name), encoded, "the docs say {name:?} becomes {encoded:?}");
        checked += 1;
    }
    for (i, _) in text.match_indices("` stays readable") {
        let name = text[..i].rsplit('`').next().expect("opening backtick");
        assert_eq!(vmsh_scheduler::fsname::encode(name), name, "the docs say {name:?} stays readable");
        checked += 1;
    }
    assert!(checked >= 2, "the encoding examples of docs/CONFIGURATION.md were not found");
}

/// The targets-file example of docs/CONFIGURATION.md, from its `exec:` section to the end of
/// the block.
fn exec_example(text: &str) -> String {
    let start = text.find("\nexec:\n  notary:").expect("the exec example of docs/CONFIGURATION.md") + 1;
    let end = start + text[start..].find("```").expect("the end of the example");
    text[start..end].to_string()
}

#[test]
fn the_configuration_docs_exec_example_anchors_when_run_as_described() {
    let text = doc("docs/CONFIGURATION.md");
    let root = Root::new();
    root.anchors(&exec_example(&text))
        .namespaces("namespaces:\n  readme:\n    cadence:\n      fast: {target: \"exec:notary\", every: \"1h\"}\n")
        .batch(None, "0001.json", "b1", &root_hex(1));
    // Started from the repository's top folder, as `cargo run` is.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vmsh-scheduler"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .envs(base_env(&root))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start vmsh-scheduler");
    let receipts = wait_for(Duration::from_secs(15), "a receipt from the docs' exec example", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited early: {status}");
        }
        let r = root.receipts("readme");
        (!r.is_empty()).then_some(r)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(receipts[0]["attestation"]["notary"], "example", "{}", receipts[0]);
}
