//! Configuration: process settings from the environment, and reading the two YAML files
//! (namespaces and targets) that hot-reload when their SHA-256 changes. The namespaces file's
//! schema lives here; the targets file's sections belong to the drivers (`anchor::*::config`)
//! and only their shared loader does; the two meet in `scheduler::config`.

pub(crate) mod aggregate;
pub mod bump;
pub mod cadence;
pub(crate) mod cadence_map;
pub mod concurrency;
pub(crate) mod duration;
pub(crate) mod flow_depth;
pub mod jitter;
pub mod namespaces;
pub(crate) mod plain_yaml;
pub mod settings;
pub(crate) mod shape;
pub(crate) mod split;
pub(crate) mod targets;
pub mod tokens;
pub mod vars;
mod yaml_error;

use std::fmt;
use std::path::{Path, PathBuf};

pub use cadence_map::CadenceMap;
pub use namespaces::{CadenceConfig, NamespaceConfig, ParseCache, TargetCatalog};
pub use settings::Settings;
pub use targets::LoadContext;

use crate::model::digest::sha256_hex;

/// Largest config file read. 100,000 namespaces with three cadences each take about 18 MiB;
/// this leaves room for descriptions and witnesses and still stops a stray 100 MB file from
/// being read (and its aliases expanded) at all.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// One problem in a config file, precise enough to fix without reading code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file that holds the problem.
    pub file: PathBuf,
    /// The namespace, when the problem is inside one.
    pub namespace: Option<String>,
    /// Field path inside the namespace (or the file), e.g. `cadence.fast.every`.
    pub field: String,
    /// What is wrong and, where it helps, what to write instead.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(ns) = &self.namespace {
            write!(f, "namespace {}: ", printable_name(ns))?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

/// A namespace name fit for one log line: escaped, and cut when absurdly long.
pub fn printable_name(name: &str) -> String {
    const MAX: usize = 80;
    if name.chars().count() > MAX {
        let head: String = name.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", name.len())
    } else {
        format!("{name:?}")
    }
}

/// `text` fit for one line of an error message: control characters escaped (a YAML key may
/// hold a line break, which would split the message and could forge a second one) and cut
/// after `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every problem found in one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single problem.
    pub fn one(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }

    /// A problem with the file as a whole.
    pub fn file(file: &Path, reason: impl Into<String>) -> Self {
        Self::one(ConfigError {
            file: file.to_path_buf(),
            namespace: None,
            field: String::new(),
            reason: reason.into(),
        })
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The raw bytes of a config file and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnapshot {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its content.
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of the content.
    pub hash: String,
}

/// Reads a config file, refusing anything larger than [`MAX_CONFIG_BYTES`] and anything that
/// is not a regular file (a named pipe would block the read for good).
pub fn read_snapshot(path: &Path) -> Result<FileSnapshot, ConfigErrors> {
    let bytes = crate::fsread::read_regular(path, MAX_CONFIG_BYTES).map_err(|e| {
        let reason = match e {
            crate::fsread::ReadError::Io(e) => format!("cannot read: {e}"),
            crate::fsread::ReadError::TooLarge { .. } => {
                format!("larger than {} MiB; is this the right file?", MAX_CONFIG_BYTES / (1024 * 1024))
            }
            other => format!("cannot read: it {other}"),
        };
        ConfigErrors::file(path, reason)
    })?;
    let hash = sha256_hex(&bytes);
    Ok(FileSnapshot { path: path.to_path_buf(), bytes, hash })
}
