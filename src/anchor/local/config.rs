//! The `local` section of the targets file. A `local:` target needs no entry; one is written
//! only to say how the target aggregates (`local: {<name>: {aggregate: {...}}}`) or how many
//! of its jobs run at once (`concurrency`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
use crate::config::concurrency;
use crate::config::targets::{Flex, LoadContext, Problem, Section};
use crate::config::vars::Unresolved;
use crate::model::Target;

/// A `local` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    aggregate: Option<AggregateRaw>,
    concurrency: Option<Flex<u32>>,
}

/// How a `local:` journal is anchored to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTarget {
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
    /// How many of its jobs run at once; the scheme's default (or VMSH_ANCHOR_WORKERS) when not set.
    pub concurrency: Option<u32>,
}

impl Section for LocalTarget {
    const NAME: &'static str = "local";
    type Spec = LocalSpec;
    type Built = LocalTarget;

    fn build(name: &str, spec: LocalSpec, unset: &[&Unresolved], _ctx: &LoadContext) -> Result<Self, Vec<Problem>> {
        if let Err(reason) = Target::parse(&format!("local:{name}")) {
            return Err(vec![(format!("local.{name}"), reason)]);
        }
        if let Some(u) = unset.first() {
            return Err(vec![(u.field.clone(), format!("{} is not set", u.var))]);
        }
        let prefix = format!("local.{name}");
        Ok(LocalTarget {
            aggregate: aggregate::build(spec.aggregate.as_ref(), &prefix)?,
            concurrency: concurrency::build(spec.concurrency.as_ref(), &prefix)?,
        })
    }

    /// `local.<name>`; a target without one is used as it is.
    fn resolve<'a>(entries: &'a BTreeMap<String, LocalTarget>, target: &Target) -> Result<(&'a str, &'a Self), String> {
        entries
            .get_key_value(&target.name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| format!("{target} has no entry in the targets file"))
    }
}
