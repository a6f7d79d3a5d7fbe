//! The targets file (`VMSH_ANCHORS`): how each target a namespace names is reached.
//!
//! The `exec` section configures external commands. The `eip155`, `btc` and `rfc3161`
//! sections of the original deployment's file are accepted as they are and kept for the
//! network drivers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use garde::Validate;
use serde::Deserialize;

use super::cadence::{Every, parse_every};
use super::target::{Scheme, Target};
use super::{ConfigError, ConfigErrors};

/// The targets file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    #[serde(default)]
    exec: BTreeMap<String, ExecSpec>,
    #[serde(default)]
    eip155: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    btc: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    rfc3161: BTreeMap<String, serde_yaml::Value>,
}

/// One external command, as written.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Program and arguments; run directly, never through a shell.
    #[garde(length(min = 1), inner(length(min = 1)))]
    pub command: Vec<String>,
    /// Extra environment for the command.
    #[serde(default)]
    #[garde(skip)]
    pub env: BTreeMap<String, String>,
    /// Working directory; relative paths are taken from VMSH_ROOT.
    #[garde(skip)]
    pub cwd: Option<String>,
    /// Per-command time limit (`<n>s|m|h`); at most the pool's VMSH_ANCHOR_TIMEOUT_S applies.
    #[garde(inner(custom(valid_timeout)))]
    pub timeout: Option<String>,
    /// Start from an empty environment (plus `PATH` and the VMSH_* anchor variables).
    #[serde(default, rename = "clearEnv")]
    #[garde(skip)]
    pub clear_env: bool,
}

fn valid_timeout(value: &str, _: &()) -> garde::Result {
    match parse_every(value) {
        Ok(Every::Fixed(_)) => Ok(()),
        Ok(Every::FastMultiple(_)) => Err(garde::Error::new("a timeout cannot be relative to fast")),
        Err(e) => Err(garde::Error::new(e.to_string())),
    }
}

/// A validated external command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory, as configured.
    pub cwd: Option<PathBuf>,
    /// Per-command time limit.
    pub timeout: Option<Duration>,
    /// Whether to start from an empty environment.
    pub clear_env: bool,
}

/// Everything the targets file configures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetsConfig {
    /// External commands by name (`exec:<name>`).
    pub exec: BTreeMap<String, ExecTarget>,
    /// Raw network target sections, by scheme and entry name.
    pub network: BTreeMap<Scheme, BTreeMap<String, serde_yaml::Value>>,
}

impl TargetsConfig {
    /// Checks that a target a namespace names can be reached with this configuration.
    pub fn check_target(&self, target: &Target) -> Result<(), String> {
        match target.scheme {
            Scheme::Exec if !self.exec.contains_key(&target.name) => Err(format!(
                "{target} is not configured: add `exec: {{{}: {{command: [...]}}}}` to the targets file (VMSH_ANCHORS)",
                target.name
            )),
            _ => Ok(()),
        }
    }
}

/// Parses and validates a targets document; `file` only labels errors.
pub fn parse(bytes: &[u8], file: &Path) -> Result<TargetsConfig, ConfigErrors> {
    let err = |field: String, reason: String| ConfigError { file: file.to_path_buf(), namespace: None, field, reason };
    let value: serde_yaml::Value = serde_yaml::from_slice(bytes)
        .map_err(|e| ConfigErrors::one(err(String::new(), format!("not valid YAML: {e}"))))?;
    if value.is_null() {
        return Ok(TargetsConfig::default());
    }
    let (raw, shape_errors) = super::shape::deserialize_all::<TargetsFile>(value);
    let mut errors: Vec<ConfigError> = shape_errors.into_iter().map(|(field, reason)| err(field, reason)).collect();
    let Some(raw) = raw else { return Err(ConfigErrors(errors)) };
    let mut exec = BTreeMap::new();
    for (name, spec) in raw.exec {
        if let Err(reason) = Target::parse(&format!("exec:{name}")) {
            errors.push(err(format!("exec.{name}"), reason));
            continue;
        }
        if let Err(report) = spec.validate() {
            for (path, e) in report.iter() {
                errors.push(err(format!("exec.{name}.{path}"), e.message().to_string()));
            }
            continue;
        }
        let timeout = match spec.timeout.as_deref().map(parse_every) {
            Some(Ok(Every::Fixed(secs))) => Some(Duration::from_secs(secs)),
            _ => None,
        };
        exec.insert(
            name,
            ExecTarget {
                command: spec.command,
                env: spec.env,
                cwd: spec.cwd.map(PathBuf::from),
                timeout,
                clear_env: spec.clear_env,
            },
        );
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut network = BTreeMap::new();
    network.insert(Scheme::Eip155, raw.eip155);
    network.insert(Scheme::Btc, raw.btc);
    network.insert(Scheme::Rfc3161, raw.rfc3161);
    Ok(TargetsConfig { exec, network })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_targets_file_is_accepted() {
        let text = include_str!("../../tests/fixtures/anchors.vm-spawn.yaml");
        let t = parse(text.as_bytes(), Path::new("anchors.yaml")).expect("reference targets file is valid");
        assert!(t.network[&Scheme::Eip155].contains_key("default"));
        assert!(t.network[&Scheme::Rfc3161].contains_key("default"));
    }

    #[test]
    fn exec_entries_are_validated() {
        let t =
            parse(b"exec:\n  notify: {command: [./anchor.sh, --fast], timeout: 30s, env: {A: b}}\n", Path::new("a"))
                .expect("valid");
        let e = &t.exec["notify"];
        assert_eq!(e.command, vec!["./anchor.sh", "--fast"]);
        assert_eq!(e.timeout, Some(Duration::from_secs(30)));
        for bad in [
            "exec:\n  n: {command: []}\n",
            "exec:\n  n: {command: [x], timeout: 0s}\n",
            "exec:\n  n: {command: [x], shell: true}\n",
            "exec:\n  'bad name': {command: [x]}\n",
            "ipfs: {}\n",
        ] {
            assert!(parse(bad.as_bytes(), Path::new("a")).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_of_the_targets_file_is_reported() {
        let e = parse(
            b"ipfs: {}
exec:
  a: {command: []}
  b: {command: [x], shell: true}
",
            Path::new("t.yaml"),
        )
        .expect_err("invalid");
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"ipfs"), "{e}");
        assert!(fields.contains(&"exec.b.shell"), "{e}");
        assert!(fields.contains(&"exec.a.command"), "{e}");
    }
}
