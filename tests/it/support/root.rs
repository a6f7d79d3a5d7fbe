//! A test's VMSH_ROOT: a temporary folder with the namespaces and targets files, batches,
//! and what a scheduler writes there (state, receipts, journals), plus the file helpers the
//! suites write and read it with.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A root hash usable in batches.
pub(crate) fn root_hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A temporary VMSH_ROOT with the files a scheduler needs.
pub(crate) struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// An empty root.
    pub(crate) fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create temp root") }
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the namespaces file.
    pub(crate) fn namespaces(&self, yaml: &str) -> &Self {
        write_file(&self.path().join("namespaces.yaml"), yaml);
        self
    }

    /// Writes the targets file.
    pub(crate) fn anchors(&self, yaml: &str) -> &Self {
        write_file(&self.path().join("anchors.yaml"), yaml);
        self
    }

    /// Writes a batch for `ns` (or the shared folder when `ns` is `None`).
    pub(crate) fn batch(&self, ns: Option<&str>, file: &str, id: &str, root: &str) -> &Self {
        let mut dir = self.path().join("out/batches");
        if let Some(ns) = ns {
            dir = dir.join(vmsh_scheduler::model::fsname::encode(ns));
        }
        write_file(&dir.join(file), &format!(r#"{{"id":"{id}","root":"sha256:{root}"}}"#));
        self
    }

    /// The state file.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.path().join("state/scheduler.json")
    }

    /// The parsed state file.
    pub(crate) fn state(&self) -> Value {
        // The state file is a snapshot; changes since are in its log, replayed as a restart would.
        let (state, _) = vmsh_scheduler::storage::state::load(&self.state_path()).expect("state loads");
        serde_json::to_value(state).expect("state is JSON")
    }

    /// Replaces the whole durable state: writes the state file and removes its logs.
    pub(crate) fn write_state(&self, state: &Value) {
        let path = self.state_path();
        for log in
            [vmsh_scheduler::storage::state::wal::path(&path), vmsh_scheduler::storage::state::wal::rotated_path(&path)]
        {
            let _ = std::fs::remove_file(log);
        }
        write_file(&path, &state.to_string());
    }

    /// The raw text of the state file and its logs, for checks of what reaches the disk.
    pub(crate) fn state_text(&self) -> String {
        let path = self.state_path();
        [
            path.clone(),
            vmsh_scheduler::storage::state::wal::rotated_path(&path),
            vmsh_scheduler::storage::state::wal::path(&path),
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// Every receipt of a namespace, oldest first.
    pub(crate) fn receipts(&self, ns: &str) -> Vec<Value> {
        let dir = self.path().join("out/anchors").join(vmsh_scheduler::model::fsname::encode(ns));
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
    pub(crate) fn journal(&self, name: &str) -> PathBuf {
        vmsh_scheduler::anchor::local::LocalDriver::journal_path(self.path(), name)
    }
}

/// Writes a file, creating its folder.
pub(crate) fn write_file(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write file");
}

/// Replaces a file atomically: writes a hidden temporary sibling (`.<name>.tmp`, which neither
/// the batch reader nor the config reader looks at), then renames it over `path`.
pub(crate) fn write_file_atomic(path: &Path, content: &str) {
    let dir = path.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("mkdir");
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename temporary file into place");
}

/// A targets file with one `exec:` target per `(name, shell script)`, each run as `sh -c SCRIPT`.
/// Scripts see the scheduler's environment, so `$VMSH_ROOT` is the test's temporary root.
pub(crate) fn exec_targets(targets: &[(&str, &str)]) -> String {
    let mut yaml = String::from("exec:\n");
    for (name, script) in targets {
        let command = serde_json::json!(["sh", "-c", script]);
        yaml.push_str(&format!("  {name}: {{command: {command}}}\n"));
    }
    yaml
}

/// The non-empty lines of a file (none when it does not exist yet).
pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The `date +%s.%N` stamps a script appended to `path`, in seconds.
pub(crate) fn stamps(path: &Path) -> Vec<f64> {
    lines(path).iter().map(|l| l.parse().unwrap_or_else(|_| panic!("bad stamp {l:?} in {}", path.display()))).collect()
}

/// SHA-256 (hex) of a file's content, as the scheduler reports config hashes.
pub(crate) fn file_sha256(path: &Path) -> String {
    vmsh_scheduler::model::digest::sha256_hex(&std::fs::read(path).expect("read file to hash"))
}

/// The receipt files of a namespace, oldest first.
pub(crate) fn receipt_files(root: &Root, ns: &str) -> Vec<PathBuf> {
    let dir = root.path().join("out/anchors").join(vmsh_scheduler::model::fsname::encode(ns));
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
