//! The README's and the docs' examples, run: what they say a command or a file does, it does.

use std::path::Path;
use std::time::Duration;

use vmsh_scheduler::config::settings::{DefaultValue, SETTINGS};

use crate::support::{Root, base_env, command, root_hex, wait_for};

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
        assert_eq!(vmsh_scheduler::model::fsname::encode(name), encoded, "the docs say {name:?} becomes {encoded:?}");
        checked += 1;
    }
    for (i, _) in text.match_indices("` stays readable") {
        let name = text[..i].rsplit('`').next().expect("opening backtick");
        assert_eq!(vmsh_scheduler::model::fsname::encode(name), name, "the docs say {name:?} stays readable");
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

/// The fenced blocks of `lang` in a Markdown text, in order.
fn code_blocks<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let open = format!("```{lang}\n");
    text.match_indices(&open)
        .map(|(i, _)| {
            let body = &text[i + open.len()..];
            &body[..body.find("```").expect("a closed code block")]
        })
        .collect()
}

#[test]
fn the_readmes_minimal_config_validates_and_anchors_when_run_as_described() {
    let text = doc("README.md");
    let yaml = code_blocks(&text, "yaml");
    let namespaces = yaml.iter().find(|b| b.starts_with("namespaces:")).expect("the README's namespaces file");
    let targets = yaml.iter().find(|b| b.starts_with("exec:")).expect("the README's targets file");
    let root = Root::new();
    root.namespaces(namespaces).anchors(targets).batch(Some("dao:vaultmesh"), "0001.json", "b1", &root_hex(1));
    let env = base_env(&root);
    // Started from the repository's top folder, where the example's exec command is found.
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = command(&root, &env, &["validate"]).current_dir(repo).output().expect("run validate");
    assert!(
        out.status.success(),
        "validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = command(&root, &env, &[])
        .current_dir(repo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start vmsh-scheduler");
    let cadences = wait_for(Duration::from_secs(15), "a receipt of each cadence of the README's config", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited early: {status}");
        }
        let mut cadences: Vec<String> = root
            .receipts("dao:vaultmesh")
            .iter()
            .map(|r| r["cadence"].as_str().unwrap_or_default().to_string())
            .collect();
        cadences.sort();
        (cadences.len() >= 2).then_some(cadences)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(cadences, ["cold", "fast"], "one receipt per cadence");
}

#[test]
fn the_readme_reads_in_five_minutes_in_at_most_200_lines() {
    let lines = doc("README.md").lines().count();
    assert!(lines <= 200, "README.md has {lines} lines; move detail into docs/ and link to it");
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, and every character but
/// letters, digits, `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of a Markdown text outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The anchors of every heading of a Markdown text; a repeated heading gets `-1`, `-2`, … as
/// on GitHub.
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else { continue };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading.trim().trim_end_matches('#').trim());
        let seen = out.iter().filter(|a| **a == base || a.strip_prefix(&base).is_some_and(is_suffix)).count();
        out.push(if seen == 0 { base } else { format!("{base}-{seen}") });
    }
    out
}

/// Whether `rest` is the `-N` GitHub appends to a repeated heading's anchor.
fn is_suffix(rest: &str) -> bool {
    rest.strip_prefix('-').is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Every inline link target (`[text](target)` and `![alt](target)`) outside code blocks.
fn links(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        for (i, _) in line.match_indices("](") {
            let rest = &line[i + 2..];
            let end = rest.find(')').expect("a closed link");
            out.push((n, &rest[..end]));
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_docs_reaches_an_existing_file_and_heading() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![repo.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a document");
        let name = file.strip_prefix(repo).expect("inside the repository").display().to_string();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = target.split_once('#').map_or((target, None), |(p, f)| (p, Some(f)));
            let linked = if path.is_empty() { file.clone() } else { file.parent().expect("a folder").join(path) };
            if !linked.exists() {
                problems.push(format!("{name}:{line}: {target}: no file {}", linked.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let linked_text = std::fs::read_to_string(&linked).expect("read a linked document");
                if !anchors(&linked_text).iter().any(|a| a == fragment) {
                    problems.push(format!("{name}:{line}: {target}: no heading #{fragment} in {path}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
    assert!(checked >= 20, "only {checked} relative links were found");
}

#[test]
fn github_anchors_are_made_as_github_makes_them() {
    let text =
        "# Top\n## `/health`\n## HTTP endpoints (`METRICS_PORT`)\n## φ-backoff\n## Top\n```sh\n# not a heading\n```\n";
    assert_eq!(anchors(text), ["top", "health", "http-endpoints-metrics_port", "φ-backoff", "top-1"]);
}

/// The settings table of docs/CONFIGURATION.md: the cells of each row, header first,
/// backticks removed.
fn settings_table() -> Vec<Vec<String>> {
    let text = doc("docs/CONFIGURATION.md");
    let start = text.find("\n## Settings\n").expect("a Settings section in docs/CONFIGURATION.md");
    let section = &text[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|row| {
            let cells = row.trim().trim_start_matches('|').trim_end_matches('|');
            cells.split('|').map(|cell| cell.trim().replace('`', "")).collect()
        })
        .collect()
}

/// Each setting as the docs' table states it, made from its definition: variable, flag,
/// default, accepts, read by, meaning.
fn defined_rows() -> Vec<Vec<String>> {
    SETTINGS
        .iter()
        .map(|s| {
            let read_by: Vec<&str> = s.read_by().iter().map(|r| r.name()).collect();
            vec![
                s.var().to_string(),
                s.flag().map(|f| format!("--{}", f.long)).unwrap_or_default(),
                s.default_value().to_string(),
                s.accepts(),
                read_by.join(", "),
                s.meaning().to_string(),
            ]
        })
        .collect()
}

#[test]
fn every_setting_is_in_the_configuration_table_with_its_default() {
    let table = settings_table();
    let rows = table.get(1..).unwrap_or_default();
    for s in SETTINGS {
        let (name, default) = (s.var(), s.default_value().to_string());
        let row = rows.iter().find(|row| row[0] == name);
        let Some(row) = row else { panic!("{name} is missing from the table of docs/CONFIGURATION.md") };
        assert_eq!(row.get(2), Some(&default), "the default of {name} in docs/CONFIGURATION.md");
    }
    for row in rows {
        let name = &row[0];
        assert!(SETTINGS.iter().any(|s| s.var() == name), "docs/CONFIGURATION.md lists {name}, which is no setting");
    }
}

#[test]
fn the_configuration_table_states_each_setting_as_its_definition_does() {
    let table = settings_table();
    let header = ["variable", "flag", "default", "accepts", "read by", "meaning"];
    assert_eq!(table.first().map(Vec::as_slice), Some(header.map(String::from).as_slice()), "the table's header");
    let expected = defined_rows();
    let shown =
        |rows: &[Vec<String>]| rows.iter().map(|r| format!("| {} |", r.join(" | "))).collect::<Vec<_>>().join("\n");
    assert!(
        table[1..] == expected,
        "the settings table of docs/CONFIGURATION.md should read, in this order (code spans aside):\n{}\n\nit reads:\n{}",
        shown(&expected),
        shown(&table[1..])
    );
}

#[test]
fn every_setting_is_in_the_env_example_with_its_default() {
    let text = doc(".env.example");
    // `NAME=value` set, or `# NAME=value` left commented out (paths whose default hangs off VMSH_ROOT).
    let mut entries = Vec::new();
    for line in text.lines() {
        let (commented, line) = line.strip_prefix("# ").map_or((false, line), |l| (true, l));
        let Some((name, value)) = line.split_once('=') else { continue };
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            entries.push((commented, name, value));
        }
    }
    for s in SETTINGS {
        let (name, default) = (s.var(), s.default_value().to_string());
        let entry = entries.iter().find(|(_, n, _)| *n == name);
        let Some((commented, _, value)) = entry else { panic!("{name} is missing from .env.example") };
        // A default that hangs off VMSH_ROOT cannot be written as a value; any other is set.
        let under_root = !matches!(s.default_value(), DefaultValue::Text(_));
        assert_eq!(*commented, under_root, "{name} is set in .env.example unless its default hangs off VMSH_ROOT");
        if !commented {
            assert_eq!(*value, default, "the value .env.example sets for {name} is its default");
        }
    }
    for (_, name, _) in &entries {
        assert!(SETTINGS.iter().any(|s| s.var() == *name), ".env.example sets {name}, which is no setting");
    }
}

/// The source files the development guide's layout tree lists under `src/`, as paths.
fn layout_tree_files() -> std::collections::BTreeSet<String> {
    let text = doc("docs/DEVELOPMENT.md");
    let start = text.find("```text\nsrc/\n").expect("the layout tree of docs/DEVELOPMENT.md") + "```text\n".len();
    let end = start + text[start..].find("```").expect("the end of the layout tree");
    let mut folders: Vec<(usize, String)> = Vec::new();
    let mut files = std::collections::BTreeSet::new();
    for line in text[start..end].lines() {
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else { continue };
        folders.retain(|(depth, _)| *depth < indent);
        if indent == 0 && name != "src/" {
            break;
        }
        let path = folders.iter().map(|(_, f)| f.as_str()).collect::<String>() + name;
        if name.ends_with('/') {
            folders.push((indent, name.to_string()));
        } else if name.ends_with(".rs") {
            files.insert(path);
        }
    }
    files
}

/// Every `.rs` file under `src/`, as a path from the repository root.
fn source_files(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            out.insert(path.strip_prefix(root).expect("under the root").display().to_string());
        }
    }
}

#[test]
fn the_development_guides_layout_lists_every_source_file_and_no_other() {
    let listed = layout_tree_files();
    let mut present = std::collections::BTreeSet::new();
    source_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut present);
    // The event modules are listed as one folder.
    present.retain(|f| !f.starts_with("src/telemetry/events/"));
    let unlisted: Vec<_> = present.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&present).collect();
    assert!(unlisted.is_empty(), "docs/DEVELOPMENT.md's layout misses {unlisted:?}");
    assert!(gone.is_empty(), "docs/DEVELOPMENT.md's layout lists files that do not exist: {gone:?}");
}
