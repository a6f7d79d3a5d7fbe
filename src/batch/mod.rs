//! The batch source: each namespace's latest Merkle root.
//!
//! The latest batch is the lexically last `*.json` in `VMSH_ROOT/out/batches/<namespace>/`
//! when that folder exists, else in `VMSH_ROOT/out/batches/` (shared by all namespaces).
//! Batch writers name files so that lexical order is time order (e.g. zero-padded sequence
//! numbers or UTC timestamps).

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{parse_hex32, to_hex};
use crate::fsname;

mod reader;

pub use reader::BatchReader;

/// Largest batch file read. Batches may list their leaves, but the scheduler only needs
/// `id` and `root`; anything larger than this is refused rather than parsed.
pub const MAX_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// A batch to anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The batch's id as written by its producer.
    pub id: String,
    /// The Merkle root.
    pub root: [u8; 32],
    /// The file it came from.
    pub file: PathBuf,
}

impl Batch {
    /// The root as written in batches: `sha256:<hex>`.
    pub fn root_string(&self) -> String {
        format!("sha256:{}", to_hex(&self.root))
    }
}

/// Why the latest batch could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The folder or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is too large to be a batch.
    #[error("{path} is larger than {} MiB; not a batch file", MAX_BATCH_BYTES / (1024 * 1024))]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a batch.
    #[error("{path} is not a valid batch: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Deserialize)]
struct BatchFile {
    id: serde_json::Value,
    root: String,
}

/// The folder batches of `namespace` are read from.
pub fn batch_dir(root: &Path, namespace: &str) -> PathBuf {
    let shared = root.join("out").join("batches");
    let own = shared.join(fsname::encode(namespace));
    if own.is_dir() { own } else { shared }
}

/// Reads the latest batch of `namespace`; `Ok(None)` when there is none yet.
pub fn latest(root: &Path, namespace: &str) -> Result<Option<Batch>, BatchError> {
    latest_in(&batch_dir(root, namespace))
}

/// Reads the latest batch in `dir`; `Ok(None)` when there is none yet.
pub fn latest_in(dir: &Path) -> Result<Option<Batch>, BatchError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BatchError::Io { path: dir.to_path_buf(), source: e }),
    };
    let mut newest: Option<std::ffi::OsString> = None;
    for entry in entries {
        let entry = entry.map_err(|e| BatchError::Io { path: dir.to_path_buf(), source: e })?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else { continue };
        // Hidden files are writers' temporaries, not batches.
        if text.starts_with('.') || !text.ends_with(".json") {
            continue;
        }
        if !entry.file_type().map(|t| t.is_file() || t.is_symlink()).unwrap_or(false) {
            continue;
        }
        if newest.as_ref().is_none_or(|n| name > *n) {
            newest = Some(name);
        }
    }
    let Some(name) = newest else { return Ok(None) };
    read(&dir.join(name)).map(Some)
}

/// Reads and checks one batch file.
pub fn read(path: &Path) -> Result<Batch, BatchError> {
    let file = fs::File::open(path).map_err(|e| BatchError::Io { path: path.into(), source: e })?;
    // Refuse by size before reading, so many namespaces sharing one huge batch allocate nothing
    // big; the capped read below still guards a file that grows (or a pipe) after this check.
    let len = file.metadata().map_err(|e| BatchError::Io { path: path.into(), source: e })?.len();
    if len > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { path: path.into() });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_BATCH_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| BatchError::Io { path: path.into(), source: e })?;
    if bytes.len() as u64 > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { path: path.into() });
    }
    parse(&bytes).map_err(|reason| BatchError::Malformed { path: path.into(), reason }).map(|(id, root)| Batch {
        id,
        root,
        file: path.into(),
    })
}

/// Parses batch JSON into its id and root.
pub fn parse(bytes: &[u8]) -> Result<(String, [u8; 32]), String> {
    let raw: BatchFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let id = match raw.id {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(format!("`id` must be a string, not {other}")),
    };
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err("`id` must be 1 to 256 printable characters".into());
    }
    let hex = raw
        .root
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("`root` must be \"sha256:<64 hex digits>\", got {:?}", truncate(&raw.root)))?;
    let root = parse_hex32(hex)
        .ok_or_else(|| format!("`root` must be \"sha256:<64 hex digits>\", got {:?}", truncate(&raw.root)))?;
    Ok((id, root))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn write(dir: &Path, name: &str, body: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join(name), body).expect("write");
    }

    #[test]
    fn picks_the_lexically_last_json_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("out/batches");
        write(&dir, "0001.json", &format!(r#"{{"id":"b1","root":"{ROOT}"}}"#));
        write(&dir, "0002.json", &format!(r#"{{"id":"b2","root":"{ROOT}","leaves":[1,2]}}"#));
        write(&dir, "0003.json.tmp", "garbage");
        write(&dir, ".0004.json", "garbage");
        let batch = latest(tmp.path(), "any").expect("readable").expect("present");
        assert_eq!(batch.id, "b2");
        assert_eq!(batch.root_string(), ROOT);
    }

    #[test]
    fn a_namespace_folder_takes_precedence() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(&tmp.path().join("out/batches"), "9.json", &format!(r#"{{"id":"shared","root":"{ROOT}"}}"#));
        write(&tmp.path().join("out/batches/dao:vaultmesh"), "1.json", &format!(r#"{{"id":"own","root":"{ROOT}"}}"#));
        assert_eq!(latest(tmp.path(), "dao:vaultmesh").expect("ok").expect("some").id, "own");
        assert_eq!(latest(tmp.path(), "other").expect("ok").expect("some").id, "shared");
    }

    #[test]
    fn no_batch_is_not_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(latest(tmp.path(), "x").expect("ok").is_none());
        fs::create_dir_all(tmp.path().join("out/batches")).expect("mkdir");
        assert!(latest(tmp.path(), "x").expect("ok").is_none());
    }

    #[test]
    fn malformed_batches_are_rejected_with_a_reason() {
        for body in [
            "not json",
            r#"{"id":"x"}"#,
            r#"{"id":"x","root":"00112233"}"#,
            r#"{"id":"x","root":"sha256:zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
            r#"{"id":"","root":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
            r#"{"id":[1],"root":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
        ] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
        }
    }
}
