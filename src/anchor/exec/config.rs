//! The `exec` section of the targets file: the command `exec:<name>` runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use garde::Validate;
use serde::Deserialize;

use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
use crate::config::cadence::{Every, parse_every};
use crate::config::concurrency;
use crate::config::targets::{Flex, LoadContext, Problem, Section};
use crate::config::vars::{Secrets, Unresolved};
use crate::model::Target;

/// One external command, as written.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecSpec {
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
    /// Whether and how the runs due in one window are anchored together.
    #[garde(skip)]
    pub aggregate: Option<AggregateRaw>,
    /// How many of its jobs run at once.
    #[garde(skip)]
    concurrency: Option<Flex<u32>>,
}

fn valid_timeout(value: &str, _: &()) -> garde::Result {
    match parse_every(value) {
        Ok(Every::Fixed(_)) => Ok(()),
        Ok(Every::FastMultiple(_)) => Err(garde::Error::new("a timeout cannot be relative to fast")),
        Err(e) => Err(garde::Error::new(e.to_string())),
    }
}

/// A validated external command.
#[derive(Clone, PartialEq, Eq)]
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
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
    /// How many of its jobs run at once; the scheme's default (or VMSH_ANCHOR_WORKERS) when not set.
    pub concurrency: Option<u32>,
}

// Environment values often carry tokens, so debug output names the variables only.
impl std::fmt::Debug for ExecTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecTarget")
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("clear_env", &self.clear_env)
            .field("aggregate", &self.aggregate)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl ExecTarget {
    /// Its `env` values.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        for value in self.env.values() {
            secrets.value(value);
        }
        secrets
    }
}

impl Section for ExecTarget {
    const NAME: &'static str = "exec";
    type Spec = ExecSpec;
    type Built = ExecTarget;

    fn build(
        name: &str,
        spec: ExecSpec,
        unset: &[&Unresolved],
        _ctx: &LoadContext,
    ) -> Result<ExecTarget, Vec<Problem>> {
        if let Err(reason) = Target::parse(&format!("exec:{name}")) {
            return Err(vec![(format!("exec.{name}"), reason)]);
        }
        // A command would run with the reference left in it: an error, not an unusable entry.
        if let Some(u) = unset.first() {
            return Err(vec![(u.field.clone(), format!("{} is not set", u.var))]);
        }
        let aggregate = aggregate::build(spec.aggregate.as_ref(), &format!("{}.{name}", Self::NAME))?;
        let concurrency = concurrency::build(spec.concurrency.as_ref(), &format!("{}.{name}", Self::NAME))?;
        if let Err(report) = spec.validate() {
            return Err(report
                .iter()
                .map(|(path, e)| (format!("exec.{name}.{path}"), e.message().to_string()))
                .collect());
        }
        let timeout = match spec.timeout.as_deref().map(parse_every) {
            Some(Ok(Every::Fixed(secs))) => Some(Duration::from_secs(secs)),
            _ => None,
        };
        Ok(ExecTarget {
            command: spec.command,
            env: spec.env,
            cwd: spec.cwd.map(PathBuf::from),
            timeout,
            clear_env: spec.clear_env,
            aggregate,
            concurrency,
        })
    }

    /// `exec.<name>`.
    fn resolve<'a>(entries: &'a BTreeMap<String, ExecTarget>, target: &Target) -> Result<(&'a str, &'a Self), String> {
        entries.get_key_value(&target.name).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            format!(
                "{target} is not configured: add `exec: {{{}: {{command: [...]}}}}` to the targets file (VMSH_ANCHORS)",
                target.name
            )
        })
    }
}
