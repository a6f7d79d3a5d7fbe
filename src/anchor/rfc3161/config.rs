//! The `rfc3161` section of the targets file: time-stamp authorities, and the trust bundles
//! their tokens are checked against.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::TrustBundle;
use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
use crate::config::duration::parse_duration;
use crate::config::targets::{
    Entry, LoadContext, Problem, Section, entry_or_unusable, http_url, named_or_default, relative_to,
};
use crate::config::vars::{Endpoint, Secrets, Unresolved};
use crate::fsread::read_regular;
use crate::model::Target;

/// Largest trust bundle read: a few hundred CA certificates.
pub const MAX_BUNDLE: u64 = 4 * 1024 * 1024;

/// An `rfc3161` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsaSpec {
    url: Option<String>,
    #[serde(rename = "policyOID")]
    policy_oid: Option<String>,
    #[serde(rename = "trustBundle")]
    trust_bundle: Option<String>,
    timeout: Option<String>,
    aggregate: Option<AggregateRaw>,
}

/// An RFC 3161 timestamp authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaTarget {
    /// Where time-stamp queries are POSTed.
    pub url: Endpoint,
    /// Policy to request; the TSA's default when not set.
    pub policy_oid: Option<String>,
    /// PEM bundle of trusted CA certificates; tokens are verified against it when set.
    pub trust_bundle: Option<PathBuf>,
    /// Request time limit (the pool's VMSH_ANCHOR_TIMEOUT_S applies as well).
    pub timeout: Option<Duration>,
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
}

impl TsaTarget {
    /// The URL's secret parts.
    pub fn secrets(&self) -> Secrets {
        self.url.secrets()
    }
}

impl Section for TsaTarget {
    const NAME: &'static str = "rfc3161";
    type Spec = TsaSpec;
    type Built = Entry<TsaTarget>;

    fn build(
        name: &str,
        spec: TsaSpec,
        unset: &[&Unresolved],
        ctx: &LoadContext,
    ) -> Result<Entry<TsaTarget>, Vec<Problem>> {
        let aggregate = aggregate::build(spec.aggregate.as_ref(), &format!("{}.{name}", Self::NAME))?;
        entry_or_unusable(Self::NAME, name, unset, || tsa_target(spec, aggregate, ctx))
    }

    /// `rfc3161.<name>`, else `rfc3161.default`.
    fn resolve<'a>(
        entries: &'a BTreeMap<String, Entry<TsaTarget>>,
        target: &Target,
    ) -> Result<(&'a str, &'a Self), String> {
        named_or_default(Self::NAME, entries, target)
    }

    /// The trust bundle the entry names must be a readable PEM bundle.
    fn check_when_used(&self, name: &str) -> Result<(), String> {
        let Some(path) = &self.trust_bundle else { return Ok(()) };
        let pem = read_regular(path, MAX_BUNDLE)
            .map_err(|e| format!("rfc3161.{name}.trustBundle {}: {e}", path.display()))?;
        TrustBundle::from_pem(&pem)
            .map(|_| ())
            .map_err(|e| format!("rfc3161.{name}.trustBundle {}: {e}", path.display()))
    }
}

fn tsa_target(spec: TsaSpec, aggregate: Option<AggregateSpec>, ctx: &LoadContext) -> Result<Entry<TsaTarget>, String> {
    let url = http_url("url", spec.url)?;
    let policy_oid = spec.policy_oid.filter(|p| !p.is_empty());
    if let Some(oid) = &policy_oid {
        let arcs: Vec<&str> = oid.split('.').collect();
        let numeric = arcs.iter().all(|a| !a.is_empty() && a.len() <= 20 && a.bytes().all(|b| b.is_ascii_digit()));
        if arcs.len() < 2 || !numeric {
            // Not quoted: values in the targets file may be secrets (a variable set to the wrong thing).
            return Err("policyOID is not a dotted object identifier such as \"1.2.3.4.1\"".into());
        }
    }
    let timeout = spec.timeout.map(|t| parse_duration(&t).map_err(|e| format!("timeout {e}"))).transpose()?;
    Ok(Entry::Ready(TsaTarget {
        url: Endpoint::new(url),
        policy_oid,
        trust_bundle: spec.trust_bundle.map(|p| relative_to(&ctx.root, &p)),
        timeout,
        aggregate,
    }))
}
