//! The namespaces YAML: schema, validation and resolution into typed cadences.
//!
//! Parsing happens in three passes so an operator sees every mistake at once: YAML syntax for
//! the whole file, then the shape of each namespace separately (unknown fields, wrong types),
//! then garde's rules and the cross-field checks over every namespace that has the right shape.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use garde::Validate;
use serde::Deserialize;

use super::cadence::{Every, parse_every};
use super::yaml_error::not_valid_yaml;
use super::{CadenceMap, ConfigError, ConfigErrors, one_line};
use crate::model::CadenceKind;
use crate::model::{Scheme, Target};

/// Longest namespace name accepted, in bytes.
pub const MAX_NAMESPACE_NAME: usize = 200;

/// One namespace as written in YAML.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Free text for operators.
    #[garde(length(max = 4096))]
    pub description: Option<String>,
    /// Witness quorum (carried for the rest of VaultMesh; the scheduler does not use it).
    #[garde(dive)]
    pub witnesses: Option<Witnesses>,
    /// Accepted schema versions (carried, not used by the scheduler).
    #[garde(dive)]
    pub schema_policy: Option<SchemaPolicy>,
    /// The namespace's cadences.
    #[garde(dive)]
    pub cadence: CadenceSpecs,
}

/// Witness quorum settings.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Witnesses {
    /// How many allowlisted witnesses must sign.
    #[garde(custom(quorum_fits(self.allowlist.len())))]
    pub min_required: u64,
    /// Witness identities (DIDs).
    #[garde(length(min = 1), inner(length(min = 1, max = 1024)))]
    pub allowlist: Vec<String>,
}

fn quorum_fits(allowlist: usize) -> impl FnOnce(&u64, &()) -> garde::Result {
    move |min, _| {
        if *min < 1 {
            return Err(garde::Error::new("must be at least 1"));
        }
        if usize::try_from(*min).map_or(true, |m| m > allowlist) {
            return Err(garde::Error::new(format!("is {min} but the allowlist has only {allowlist} witness(es)")));
        }
        Ok(())
    }
}

/// Schema gates.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct SchemaPolicy {
    /// Accepted `name@semver` patterns.
    #[garde(inner(length(min = 1, max = 1024)))]
    pub allow: Vec<String>,
}

/// The cadences of one namespace.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CadenceSpecs {
    /// Required: the most frequent cadence, and the unit of `<n>*fast`.
    #[garde(dive)]
    pub fast: CadenceSpec,
    /// Optional stronger cadence.
    #[garde(dive)]
    pub strong: Option<CadenceSpec>,
    /// Optional long-term cadence.
    #[garde(dive)]
    pub cold: Option<CadenceSpec>,
}

/// One cadence as written in YAML.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CadenceSpec {
    /// `<scheme>:<name>`.
    #[garde(custom(valid_target))]
    pub target: String,
    /// `<n>s|m|h|d` or `<n>*fast`.
    #[garde(custom(valid_every))]
    pub every: String,
    /// Blocks to wait for before an anchor counts; overrides the target's default.
    #[garde(inner(range(max = 10_000)))]
    pub confirmations: Option<u32>,
    /// TSA policy to request (`rfc3161` targets); empty means the TSA's default. Named as
    /// in YAML because garde reports field paths by their Rust names.
    #[garde(inner(custom(valid_oid)))]
    pub policyOID: Option<String>,
    /// Shifts each run by a deterministic offset up to this: a duration, or a percent of the
    /// period; at most half the period.
    #[garde(inner(custom(valid_jitter)))]
    pub jitter: Option<String>,
}

fn valid_jitter(value: &str, _: &()) -> garde::Result {
    super::jitter::parse_jitter(value).map(|_| ()).map_err(garde::Error::new)
}

fn valid_target(value: &str, _: &()) -> garde::Result {
    parse_target(value).map(|_| ()).map_err(garde::Error::new)
}

/// A cadence's target: well formed, and for `local:`, a journal name whose encoded file name
/// (plus `.jsonl`) fits a file system's limit.
fn parse_target(raw: &str) -> Result<Target, String> {
    let target = Target::parse(raw)?;
    if target.scheme == Scheme::Local
        && crate::model::fsname::encode(&target.name).len() + ".jsonl".len() > crate::model::fsname::MAX_ENCODED_LEN
    {
        return Err(format!("{raw:?}: the journal name is too long for a file name"));
    }
    Ok(target)
}

fn valid_every(value: &str, _: &()) -> garde::Result {
    parse_every(value).map(|_| ()).map_err(|e| garde::Error::new(e.to_string()))
}

fn valid_oid(value: &str, _: &()) -> garde::Result {
    if value.is_empty() {
        return Ok(());
    }
    let arcs: Vec<&str> = value.split('.').collect();
    let numeric = arcs.iter().all(|a| !a.is_empty() && a.len() <= 20 && a.bytes().all(|b| b.is_ascii_digit()));
    if arcs.len() < 2 || !numeric {
        return Err(garde::Error::new(format!("{value:?} is not a dotted object identifier such as \"1.2.3.4.1\"")));
    }
    Ok(())
}

/// A validated namespace, ready to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// The namespace's name as written in YAML.
    pub name: Arc<str>,
    /// Operator notes.
    pub description: Option<Box<str>>,
    /// Its cadences; `fast` is always present.
    /// Shared with the namespace's actor, which reads them on every run.
    pub cadences: CadenceMap<Arc<CadenceConfig>>,
}

/// A validated cadence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CadenceConfig {
    /// Which cadence this is.
    pub kind: CadenceKind,
    /// Where it anchors.
    pub target: Target,
    /// The period as written, for display.
    pub every: String,
    /// The resolved period.
    pub period: Duration,
    /// Required confirmations, when set in YAML.
    pub confirmations: Option<u32>,
    /// Requested TSA policy, when set and non-empty.
    pub policy_oid: Option<String>,
    /// The largest offset a run is shifted by; zero without jitter.
    pub jitter: Duration,
}

/// Checks a namespace name: any text YAML allows, within limits that keep it printable and
/// storable. Names are encoded before they touch the disk (see [`crate::model::fsname`]).
pub fn check_namespace_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("namespace name is empty".into());
    }
    if name.len() > MAX_NAMESPACE_NAME {
        return Err(format!("namespace name is {} bytes long; the limit is {MAX_NAMESPACE_NAME}", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err("namespace name contains control characters".into());
    }
    if name.trim() != name {
        return Err("namespace name starts or ends with white space".into());
    }
    let encoded = crate::model::fsname::encode(name).len();
    if encoded > crate::model::fsname::MAX_ENCODED_LEN {
        return Err(format!(
            "namespace name needs {encoded} bytes as a file name (characters outside letters, digits and -_.:@+=, take 3); the limit is {}",
            crate::model::fsname::MAX_ENCODED_LEN
        ));
    }
    Ok(())
}

/// Longest field path shown in an error, in characters; a key may be kilobytes long.
const MAX_FIELD_CHARS: usize = 200;

/// Longest reason shown in an error, in characters (serde quotes the offending key in it).
const MAX_REASON_CHARS: usize = 1000;

/// The targets a namespace may name, as the targets file configures them. The namespaces
/// file is checked against it without knowing how each scheme's targets are configured.
pub trait TargetCatalog: Sync {
    /// Whether `target` can be reached: `Err` says why not and what to configure.
    fn check(&self, target: &Target) -> Result<(), String>;
}

/// Parses and validates a namespaces document. Every target a cadence names is checked
/// against `targets`; `file` only labels errors.
pub fn parse(
    bytes: &[u8],
    file: &Path,
    targets: &dyn TargetCatalog,
) -> Result<BTreeMap<Arc<str>, Arc<NamespaceConfig>>, ConfigErrors> {
    let err = |namespace: Option<&str>, field: &str, reason: String| ConfigError {
        file: file.to_path_buf(),
        namespace: namespace.map(str::to_string),
        field: one_line(field, MAX_FIELD_CHARS),
        reason: one_line(&reason, MAX_REASON_CHARS),
    };
    super::flow_depth::check(bytes).map_err(|reason| ConfigErrors::one(err(None, "", reason)))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_slice(bytes).map_err(|e| ConfigErrors::one(err(None, "", not_valid_yaml(bytes, &e))))?;
    let serde_yaml::Value::Mapping(top) = doc else {
        return Err(ConfigErrors::one(err(
            None,
            "",
            "expected a mapping with a `namespaces` key at the top level".into(),
        )));
    };

    let mut errors = Vec::new();
    let mut namespaces_value = None;
    for (key, value) in top {
        match key.as_str() {
            Some("namespaces") => namespaces_value = Some(value),
            other => errors.push(err(
                None,
                &other.map_or_else(|| format!("{key:?}"), str::to_string),
                "unknown field; the top level has only `namespaces`".into(),
            )),
        }
    }
    let entries = match namespaces_value {
        Some(serde_yaml::Value::Mapping(m)) => m,
        Some(serde_yaml::Value::Null) => serde_yaml::Mapping::new(),
        Some(_) => {
            errors.push(err(None, "namespaces", "expected a mapping of namespace names".into()));
            return Err(ConfigErrors(errors));
        }
        None => {
            errors.push(err(None, "namespaces", "missing field".into()));
            return Err(ConfigErrors(errors));
        }
    };

    let mut resolved = BTreeMap::new();
    let mut shared = SharedCadences::default();
    for (key, value) in entries {
        if let Some(mut ns) = check_entry(key, value, targets, &err, &mut errors) {
            shared.share(&mut ns);
            resolved.insert(ns.name.clone(), Arc::new(ns));
        }
    }
    if errors.is_empty() { Ok(resolved) } else { Err(ConfigErrors(errors)) }
}

/// Checks one entry of the `namespaces` mapping; returns the namespace when it has no
/// problem, and adds every problem found to `errors`.
fn check_entry(
    key: serde_yaml::Value,
    value: serde_yaml::Value,
    targets: &dyn TargetCatalog,
    err: &dyn Fn(Option<&str>, &str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Option<NamespaceConfig> {
    let Some(name) = key.as_str().map(str::to_string) else {
        errors.push(err(None, "namespaces", format!("namespace name {key:?} is not a string; quote it")));
        return None;
    };
    if let Err(reason) = check_namespace_name(&name) {
        errors.push(err(Some(&name), "", reason));
        return None;
    }
    let before = errors.len();
    let (spec, shape_errors) = super::shape::deserialize_all::<NamespaceSpec>(value);
    for (field, reason) in shape_errors {
        errors.push(err(Some(&name), &field, reason));
    }
    // Even a namespace with shape errors gets its remaining fields checked.
    let spec = spec?;
    if let Err(report) = spec.validate() {
        for (path, error) in report.iter() {
            errors.push(err(Some(&name), &path.to_string(), error.message().to_string()));
        }
    }
    match resolve(&name, &spec, targets) {
        Ok(ns) if errors.len() == before => Some(ns),
        Ok(_) => None,
        Err(problems) => {
            for (field, reason) in problems {
                // garde already reported syntax problems of this field.
                let dup = errors[before..].iter().any(|e| e.field == field && e.namespace.as_deref() == Some(&name));
                if !dup {
                    errors.push(err(Some(&name), &field, reason));
                }
            }
            None
        }
    }
}

/// What the last load made of each namespace's text, so the next load parses only the
/// namespaces whose text changed. Valid for one targets file content.
#[derive(Debug, Default)]
pub struct ParseCache {
    /// Hash of the targets file the entries were checked against.
    targets_hash: Option<String>,
    /// Namespaces by a digest of their text.
    /// Sorted by digest: a hash map of 100,000 took a third more.
    entries: Vec<([u8; 16], Arc<NamespaceConfig>)>,
    /// The next load parses on the calling thread only ([`ParseCache::for_start`]).
    one_thread: bool,
}

impl ParseCache {
    /// A cache whose first load parses on the calling thread; later loads spread over the
    /// cores. For start-up: glibc never trims the heap of a thread that parsed, and the
    /// process's later allocations pin its freed pieces (33 MB resident for good at 100,000
    /// namespaces), to save a tenth of a second once.
    pub fn for_start() -> Self {
        Self { one_thread: true, ..Self::default() }
    }
}

/// [`parse`], reusing what `cache` holds for namespaces whose text is unchanged and parsing
/// only the others, when the document splits into one piece per namespace (see
/// [`super::split`]); otherwise, and whenever a piece has a problem, the whole document is
/// parsed so the errors are exactly [`parse`]'s. `targets_hash` identifies `targets`. With
/// nothing to reuse (start-up) every piece is parsed, spread over the cores unless the cache
/// says otherwise: at 100,000 namespaces that is faster than the whole document, which
/// serde_yaml reads into a list of events twenty times the file's size before anything
/// else, and it fills the cache.
pub fn parse_reusing(
    bytes: &[u8],
    file: &Path,
    targets: &dyn TargetCatalog,
    targets_hash: Option<&str>,
    cache: &mut ParseCache,
) -> Result<BTreeMap<Arc<str>, Arc<NamespaceConfig>>, ConfigErrors> {
    if cache.targets_hash.as_deref() != targets_hash {
        cache.entries.clear();
        cache.targets_hash = targets_hash.map(str::to_string);
    }
    let pieces = super::flow_depth::check(bytes).ok().and_then(|()| super::split::entries(bytes));
    let Some(pieces) = pieces else { return parse(bytes, file, targets) };
    let spread = !std::mem::take(&mut cache.one_thread);
    if let Some((resolved, entries)) = parse_pieces(bytes, &pieces, file, targets, &cache.entries, spread) {
        cache.entries = entries;
        return Ok(resolved);
    }
    parse(bytes, file, targets)
}

/// A piece parsed as a document of its own: `None` unless it is one namespace with no problem.
fn parse_piece(text: &[u8], file: &Path, targets: &dyn TargetCatalog) -> Option<NamespaceConfig> {
    let err = |namespace: Option<&str>, field: &str, reason: String| ConfigError {
        file: file.to_path_buf(),
        namespace: namespace.map(str::to_string),
        field: field.to_string(),
        reason,
    };
    // The usual piece, in plain YAML, read straight into its types without the YAML parser,
    // which took most of a reload that changes every namespace. It reads as the whole
    // document's YAML tree does; anything else takes that tree's way here too. Reading
    // straight from serde_yaml's parser into the types would not do: it takes a plain `12`
    // for a string field, which the tree refuses, so a file would mean one thing split and
    // another whole.
    if let Some(one) = super::plain_yaml::deserialize::<BTreeMap<String, NamespaceSpec>>(text)
        && one.len() == 1
        && let Some((name, spec)) = one.into_iter().next()
    {
        if check_namespace_name(&name).is_err() || spec.validate().is_err() {
            return None;
        }
        return resolve(&name, &spec, targets).ok();
    }
    let serde_yaml::Value::Mapping(one) = serde_yaml::from_slice(text).ok()? else { return None };
    if one.len() != 1 {
        return None;
    }
    let (key, value) = one.into_iter().next()?;
    let mut errors = Vec::new();
    let ns = check_entry(key, value, targets, &err, &mut errors)?;
    errors.is_empty().then_some(ns)
}

type Pieces = (BTreeMap<Arc<str>, Arc<NamespaceConfig>>, Vec<([u8; 16], Arc<NamespaceConfig>)>);

/// New pieces below which one thread parses them all: a thread costs more than it saves.
const PIECES_PER_THREAD: usize = 512;

/// Each piece from `known` or parsed alone (the new ones spread over the cores); `None` at
/// the first piece with a problem, or a name given twice.
fn parse_pieces(
    bytes: &[u8],
    pieces: &[std::ops::Range<usize>],
    file: &Path,
    targets: &dyn TargetCatalog,
    known: &[([u8; 16], Arc<NamespaceConfig>)],
    spread: bool,
) -> Option<Pieces> {
    let mut found: Vec<([u8; 16], Option<Arc<NamespaceConfig>>)> = Vec::with_capacity(pieces.len());
    let mut new = Vec::new();
    for (i, range) in pieces.iter().enumerate() {
        let digest = piece_digest(bytes.get(range.clone())?);
        let ns = known
            .binary_search_by(|(d, _)| d.cmp(&digest))
            .ok()
            .and_then(|i| known.get(i))
            .map(|(_, ns)| Arc::clone(ns));
        if ns.is_none() {
            new.push(i);
        }
        found.push((digest, ns));
    }
    let parsed = parse_spread(bytes, pieces, &new, file, targets, spread);
    let mut shared = SharedCadences::default();
    for ns in found.iter().filter_map(|(_, ns)| ns.as_ref()) {
        shared.know(ns);
    }
    for (i, ns) in new.into_iter().zip(parsed) {
        let mut ns = ns?;
        // Copied on this thread: a parse thread's allocation kept for the life of the config
        // pins that thread's arena, which glibc never trims, with the parse's garbage
        // around it (34 MB at 100,000 namespaces).
        ns.name = Arc::from(&*ns.name);
        shared.share(&mut ns);
        found.get_mut(i)?.1 = Some(Arc::new(ns));
    }
    let mut named = Vec::with_capacity(found.len());
    let mut entries = Vec::with_capacity(found.len());
    for (digest, ns) in found {
        let ns = ns?;
        named.push((Arc::clone(&ns.name), Arc::clone(&ns)));
        entries.push((digest, ns));
    }
    // Sorted and then collected, which packs the map's nodes full; inserted one by one in
    // name order they stay half empty (3 MB at 100,000 namespaces).
    named.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if named.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    // Two pieces of the same text name the same namespace twice: refused above.
    entries.sort_unstable_by_key(|e| e.0);
    Some((named.into_iter().collect(), entries))
}

/// One copy of each distinct cadence config, shared by every namespace that has it. A fleet's
/// namespaces mostly anchor to a few targets on a few periods: at 100,000 namespaces the
/// copies were 50 MB, and a reload compares shared ones by pointer.
#[derive(Default)]
struct SharedCadences(HashSet<Arc<CadenceConfig>>);

impl SharedCadences {
    /// Offers `ns`'s cadences as the copies to share.
    fn know(&mut self, ns: &NamespaceConfig) {
        // An equal one already known stays: `insert` keeps it.
        for c in ns.cadences.values() {
            self.0.insert(Arc::clone(c));
        }
    }

    /// Points `ns`'s cadences at the shared copies, adding those not seen yet.
    fn share(&mut self, ns: &mut NamespaceConfig) {
        for c in ns.cadences.values_mut() {
            match self.0.get(c) {
                Some(known) => *c = Arc::clone(known),
                None => {
                    self.0.insert(Arc::clone(c));
                }
            }
        }
    }
}

/// The pieces numbered `which`, each parsed alone, spread over the cores when there are many
/// and `spread` allows.
fn parse_spread(
    bytes: &[u8],
    pieces: &[std::ops::Range<usize>],
    which: &[usize],
    file: &Path,
    targets: &dyn TargetCatalog,
    spread: bool,
) -> Vec<Option<NamespaceConfig>> {
    let parse_one = |i: &usize| -> Option<NamespaceConfig> {
        let text = bytes.get(pieces.get(*i)?.clone())?;
        parse_piece(text, file, targets)
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from).min(4);
    let threads = (which.len() / PIECES_PER_THREAD).clamp(1, cores);
    if threads == 1 || !spread {
        return which.iter().map(parse_one).collect();
    }
    let share = which.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = which
            .chunks(share)
            .map(|part| {
                let parse_one = &parse_one;
                std::thread::Builder::new()
                    .name("vmsh-config".into())
                    .spawn_scoped(scope, move || part.iter().map(parse_one).collect::<Vec<_>>())
            })
            .collect();
        let mut all = Vec::with_capacity(which.len());
        for (worker, part) in workers.into_iter().zip(which.chunks(share)) {
            // A thread that could not start (or panicked) leaves its share to this one.
            match worker.ok().and_then(|w| w.join().ok()) {
                Some(done) => all.extend(done),
                None => all.extend(part.iter().map(parse_one)),
            }
        }
        all
    })
}

/// A digest of a piece's text: the first half of its SHA-256, far past any chance of two
/// pieces meeting by accident.
fn piece_digest(text: &[u8]) -> [u8; 16] {
    use sha2::Digest as _;
    let full = sha2::Sha256::digest(text);
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Resolves periods and targets; returns `(field, reason)` for each problem.
fn resolve(
    name: &str,
    spec: &NamespaceSpec,
    targets: &dyn TargetCatalog,
) -> Result<NamespaceConfig, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut cadences = CadenceMap::new();
    let fast_period = match parse_every(&spec.cadence.fast.every) {
        Ok(Every::Fixed(secs)) => Some(Duration::from_secs(secs)),
        Ok(Every::FastMultiple(_)) => {
            problems.push((
                "cadence.fast.every".to_string(),
                super::cadence::EveryError::RelativeFast(spec.cadence.fast.every.clone()).to_string(),
            ));
            None
        }
        Err(_) => None,
    };
    let specs = [
        (CadenceKind::Fast, Some(&spec.cadence.fast)),
        (CadenceKind::Strong, spec.cadence.strong.as_ref()),
        (CadenceKind::Cold, spec.cadence.cold.as_ref()),
    ];
    for (kind, cadence) in specs {
        let Some(cadence) = cadence else { continue };
        let field = |f: &str| format!("cadence.{kind}.{f}");
        let period = match parse_every(&cadence.every) {
            Ok(every) => match (every, fast_period) {
                // Without a valid fast period there is nothing to multiply; fast's own error says why.
                (Every::FastMultiple(_), None) if kind != CadenceKind::Fast => None,
                _ => match every.resolve(&cadence.every, fast_period) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        if kind != CadenceKind::Fast {
                            problems.push((field("every"), e.to_string()));
                        }
                        None
                    }
                },
            },
            Err(e) => {
                problems.push((field("every"), e.to_string()));
                None
            }
        };
        let target = match parse_target(&cadence.target) {
            Ok(t) => {
                if let Err(reason) = targets.check(&t) {
                    problems.push((field("target"), reason));
                }
                Some(t)
            }
            Err(e) => {
                problems.push((field("target"), e));
                None
            }
        };
        if let (Some(oid), Some(t)) = (&cadence.policyOID, &target)
            && !oid.is_empty()
            && t.scheme != Scheme::Rfc3161
        {
            problems.push((field("policyOID"), format!("policyOID applies only to rfc3161 targets, not {t}")));
        }
        let jitter = match (cadence.jitter.as_deref().map(super::jitter::parse_jitter), period) {
            (Some(Ok(j)), Some(period)) => match super::jitter::resolve(j, period) {
                Ok(d) => d,
                Err(e) => {
                    problems.push((field("jitter"), e));
                    Duration::ZERO
                }
            },
            // A syntax error was reported by the field's own check.
            _ => Duration::ZERO,
        };
        if let (Some(target), Some(period)) = (target, period) {
            cadences.insert(
                kind,
                Arc::new(CadenceConfig {
                    kind,
                    target,
                    every: cadence.every.trim().to_string(),
                    period,
                    confirmations: cadence.confirmations,
                    policy_oid: cadence.policyOID.clone().filter(|o| !o.is_empty()),
                    jitter,
                }),
            );
        }
    }
    if problems.is_empty() {
        Ok(NamespaceConfig { name: Arc::from(name), description: spec.description.as_deref().map(Box::from), cadences })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The targets an empty targets file configures: `local:` needs no entry, any other
    /// target is not configured. (The namespaces file against real targets is tested in
    /// `scheduler::config`.)
    struct NoTargets;

    impl TargetCatalog for NoTargets {
        fn check(&self, target: &Target) -> Result<(), String> {
            match target.scheme {
                Scheme::Local => Ok(()),
                _ => Err(format!("{target} is not configured")),
            }
        }
    }

    fn parse_str(yaml: &str) -> Result<BTreeMap<Arc<str>, Arc<NamespaceConfig>>, ConfigErrors> {
        parse(yaml.as_bytes(), Path::new("ns.yaml"), &NoTargets)
    }

    fn errors(yaml: &str) -> Vec<ConfigError> {
        match parse_str(yaml) {
            Ok(_) => panic!("expected errors for:\n{yaml}"),
            Err(e) => e.0,
        }
    }

    fn has(errs: &[ConfigError], ns: Option<&str>, field: &str, reason_part: &str) -> bool {
        errs.iter().any(|e| e.namespace.as_deref() == ns && e.field == field && e.reason.contains(reason_part))
    }

    #[test]
    fn every_error_is_collected_with_namespace_and_field() {
        let errs = errors(
            r#"
namespaces:
  a:
    witnesses: {min_required: 4, allowlist: [x, y, z]}
    cadence:
      fast: {target: "local:j", every: "0s"}
      strong: {target: "ipfs:x", every: "2*fast"}
  b:
    cadence:
      fast: {target: "local:j", every: "2*fast"}
      cold: {target: "local:j", every: "99999999999d"}
"#,
        );
        assert!(has(&errs, Some("a"), "witnesses.min_required", "only 3"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "cadence.fast.every", "zero"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "cadence.strong.target", "unknown target scheme"), "{errs:#?}");
        assert!(has(&errs, Some("b"), "cadence.fast.every", "fast itself"), "{errs:#?}");
        assert!(has(&errs, Some("b"), "cadence.cold.every", "longest period"), "{errs:#?}");
        assert_eq!(errs.len(), 5, "{errs:#?}");
    }

    #[test]
    fn a_jitter_is_read_per_cadence_and_refused_beyond_half_the_period() {
        let ok = parse_str(
            "namespaces:\n  a:\n    cadence:\n      fast: {target: 'local:j', every: '60s', jitter: '10%'}\n      cold: {target: 'local:j', every: '1h', jitter: '5m'}\n",
        )
        .expect("valid");
        let a = &ok["a"].cadences;
        assert_eq!(a.get(&CadenceKind::Fast).map(|c| c.jitter), Some(Duration::from_secs(6)));
        assert_eq!(a.get(&CadenceKind::Cold).map(|c| c.jitter), Some(Duration::from_secs(300)));
        let errs = errors(
            "namespaces:\n  a:\n    cadence:\n      fast: {target: 'local:j', every: '60s', jitter: '31s'}\n      cold: {target: 'local:j', every: '1h', jitter: 'often'}\n",
        );
        assert!(has(&errs, Some("a"), "cadence.fast.jitter", "more than half the period"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "cadence.cold.jitter", "not a duration"), "{errs:#?}");
    }

    #[test]
    fn unknown_fields_are_errors_naming_their_path() {
        let errs = errors("namespaces:\n  a:\n    cadence:\n      fast: {target: 'local:j', every: '1s', evry: 2}\n");
        assert!(has(&errs, Some("a"), "cadence.fast.evry", "unknown field `evry`"), "{errs:#?}");
        let errs = errors("namespaces: {}\nextra: 1\n");
        assert!(has(&errs, None, "extra", "unknown field"), "{errs:#?}");
    }

    #[test]
    fn shape_errors_do_not_hide_the_other_problems_of_a_namespace() {
        let errs = errors(
            r#"
namespaces:
  a:
    descripton: typo
    witnesses: {min_required: 5, allowlist: [x]}
    cadence:
      fast: {target: "local:j", every: "0s", evry: 2}
      strong: {target: "local:j", every: "2*fast", confirmations: lots}
"#,
        );
        assert!(has(&errs, Some("a"), "descripton", "unknown field"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "cadence.fast.evry", "unknown field"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "cadence.strong.confirmations", "invalid type"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "witnesses.min_required", "only 1"), "{errs:#?}");
        assert!(has(&errs, Some("a"), "cadence.fast.every", "zero"), "{errs:#?}");
        assert_eq!(errs.len(), 5, "{errs:#?}");
    }

    #[test]
    fn wrong_types_and_missing_fields_are_errors() {
        let errs = errors("namespaces:\n  a:\n    cadence:\n      fast: {target: 'local:j', every: 5}\n");
        assert!(has(&errs, Some("a"), "cadence.fast.every", "invalid type"), "{errs:#?}");
        let errs = errors("namespaces:\n  a:\n    cadence:\n      strong: {target: 'local:j', every: '5s'}\n");
        assert!(has(&errs, Some("a"), "cadence", "missing field `fast`"), "{errs:#?}");
        let errs = errors(
            "namespaces:\n  a:\n    witnesses: {min_required: -1, allowlist: [x]}\n    cadence:\n      fast: {target: 'local:j', every: '5s'}\n",
        );
        assert!(has(&errs, Some("a"), "witnesses.min_required", ""), "{errs:#?}");
    }

    #[test]
    fn a_journal_name_whose_file_name_would_be_too_long_is_refused() {
        // Each `/` is encoded in three bytes: 100 of them make a 300-byte file name.
        let long_journal = format!("local:{}", "/".repeat(100));
        assert!(parse_target(&long_journal).expect_err("too long").contains("too long for a file name"));
        assert!(parse_target(&format!("local:{}", "/".repeat(80))).is_ok());
    }

    #[test]
    fn quorum_must_be_between_one_and_the_allowlist_size() {
        let errs = errors(
            "namespaces:\n  a:\n    witnesses: {min_required: 0, allowlist: [x]}\n    cadence:\n      fast: {target: 'local:j', every: '5s'}\n",
        );
        assert!(has(&errs, Some("a"), "witnesses.min_required", "at least 1"), "{errs:#?}");
    }

    #[test]
    fn hostile_documents_give_errors_not_panics() {
        // Duplicate keys.
        let errs = errors(
            "namespaces:\n  a: {cadence: {fast: {target: 'local:j', every: '1s'}}}\n  a: {cadence: {fast: {target: 'local:j', every: '2s'}}}\n",
        );
        assert!(errs[0].reason.contains("duplicate"), "{errs:#?}");
        // An alias bomb: each level doubles; serde_yaml refuses to expand it.
        let mut bomb = String::from("a0: &a0 [x, x]\n");
        for i in 1..40 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
        }
        bomb.push_str("namespaces: {}\n");
        assert!(!errors(&bomb).is_empty());
        // Not UTF-8.
        assert!(parse(b"namespaces:\n  \xff\xfe: {}\n", Path::new("x"), &NoTargets).is_err());
        // Not a mapping.
        assert!(!errors("- a\n- b\n").is_empty());
        assert!(!errors("namespaces: [a]\n").is_empty());
        assert!(!errors("namespaces:\n  123: {cadence: {fast: {target: 'local:j', every: '1s'}}}\n").is_empty());
    }

    #[test]
    fn namespace_names_are_checked() {
        let long = "n".repeat(MAX_NAMESPACE_NAME + 1);
        for (name, reason) in
            [("\"\"", "empty"), ("\"a\\u0007b\"", "control"), (long.as_str(), "limit"), ("\" a\"", "white space")]
        {
            let errs =
                errors(&format!("namespaces:\n  {name}: {{cadence: {{fast: {{target: 'local:j', every: '1s'}}}}}}\n"));
            assert!(errs.iter().any(|e| e.reason.contains(reason)), "{name}: {errs:#?}");
        }
        // Path-like names are fine: they are encoded before touching the disk.
        parse_str("namespaces:\n  ../../etc: {cadence: {fast: {target: 'local:j', every: '1s'}}}\n").expect("accepted");
    }

    #[test]
    fn errors_display_file_namespace_field_and_reason_on_one_line() {
        let errs = errors("namespaces:\n  dao:vaultmesh: {cadence: {fast: {target: 'local:j', every: '0s'}}}\n");
        let line = errs[0].to_string();
        assert_eq!(
            line,
            "ns.yaml: namespace \"dao:vaultmesh\": cadence.fast.every: \"0s\" is zero; a period must be at least 1"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn errors_stay_on_one_line_whatever_the_keys_hold() {
        // A key with a line break would otherwise split an error in two, and could forge a
        // second, innocent-looking line in `validate`'s output and the start-up message.
        for yaml in [
            "\"top\\nkey\": 1\nnamespaces: {}\n",
            "namespaces:\n  a: {cadence: {fast: {target: 'local:j', every: '1s', \"ev\\nry\": 1}}}\n",
            "namespaces:\n  a: {\"x\\r\\ny\\u0000\": 1, cadence: {fast: {target: 'local:j', every: '1s'}}}\n",
        ] {
            for e in errors(yaml) {
                let line = e.to_string();
                assert!(!line.contains(['\n', '\r', '\0']), "{line:?}");
                assert!(line.contains("\\n") || line.contains("\\r"), "the key is still recognisable: {line:?}");
            }
        }
        // A 10 kB key yields a message of bounded length.
        let long = "k".repeat(10_000);
        let yaml = format!(
            "namespaces:\n  a:\n    cadence: {{fast: {{target: 'local:j', every: '1s'}}}}\n    ? {long}\n    : 1\n"
        );
        let errs = errors(&yaml);
        assert!(has(&errs, Some("a"), &format!("{}…", "k".repeat(200)), "unknown field"), "{errs:#?}");
        for e in errs {
            assert!(e.to_string().len() < 1_500, "{} bytes", e.to_string().len());
        }
        assert_eq!(one_line("a\u{7}b\n", 10), "a\\u{7}b\\n");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_the_yaml_parser_spends_minutes_on_it() {
        // 4 MiB of `[` kept the YAML scanner busy for hours (its work grows with depth × size).
        let deep = format!("namespaces: {}", "[".repeat(4 * 1024 * 1024 - 20));
        let started = std::time::Instant::now();
        let errs = errors(&deep);
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(has(&errs, None, "", "nest more than 64 levels"), "{errs:#?}");
    }

    /// A fleet of `n` namespaces as the benchmark writes it, fast every `period` s.
    fn fleet(n: usize, period: u32) -> String {
        let mut doc = String::from("namespaces:\n");
        for i in 0..n {
            doc.push_str(&format!(
                "  \"ns:{i:05}\":\n    cadence:\n      fast: {{target: \"local:j{}\", every: \"{period}s\"}}\n      strong: {{target: \"local:j{}\", every: \"34*fast\"}}\n",
                i % 4,
                i % 4
            ));
        }
        doc
    }

    fn reusing(doc: &str, cache: &mut ParseCache) -> Result<BTreeMap<Arc<str>, Arc<NamespaceConfig>>, ConfigErrors> {
        parse_reusing(doc.as_bytes(), Path::new("ns.yaml"), &NoTargets, None, cache)
    }

    #[test]
    fn a_reload_reuses_the_namespaces_whose_text_is_unchanged() {
        let mut cache = ParseCache::default();
        let before = reusing(&fleet(50, 10), &mut cache).expect("valid");
        assert_eq!(cache.entries.len(), 50, "the first load fills the cache");
        let changed = fleet(50, 10).replacen("every: \"10s\"", "every: \"11s\"", 1);
        let after = reusing(&changed, &mut cache).expect("valid");
        assert_eq!(after, parse_str(&changed).expect("valid"), "the same result as a whole parse");
        assert_eq!(after["ns:00000"].cadences[&CadenceKind::Fast].period, Duration::from_secs(11));
        let reused = after.iter().filter(|(name, ns)| Arc::ptr_eq(ns, &before[*name])).count();
        assert_eq!(reused, 49, "only the changed namespace was parsed again");
    }

    #[test]
    fn many_changed_namespaces_parse_on_several_threads_to_the_same_result() {
        let mut cache = ParseCache::default();
        reusing(&fleet(2_000, 10), &mut cache).expect("valid");
        let changed = fleet(2_000, 20);
        assert_eq!(reusing(&changed, &mut cache).expect("valid"), parse_str(&changed).expect("valid"));
        assert!(
            cache
                .entries
                .iter()
                .map(|(_, ns)| ns)
                .all(|ns| ns.cadences[&CadenceKind::Fast].period == Duration::from_secs(20))
        );
    }

    #[test]
    fn a_start_cache_parses_its_first_load_on_one_thread_to_the_same_result_and_spreads_later_ones() {
        let mut cache = ParseCache::for_start();
        let doc = fleet(2_000, 10);
        assert_eq!(reusing(&doc, &mut cache).expect("valid"), parse_str(&doc).expect("valid"));
        assert_eq!(cache.entries.len(), 2_000, "the first load fills the cache");
        assert!(!cache.one_thread, "only the first load keeps to one thread");
        let changed = fleet(2_000, 20);
        assert_eq!(reusing(&changed, &mut cache).expect("valid"), parse_str(&changed).expect("valid"));
    }

    #[test]
    fn an_alias_of_an_anchor_in_another_namespace_is_never_reused_stale() {
        let doc = |every: &str| {
            format!(
                "namespaces:\n  a:\n    cadence:\n      fast: &f {{target: \"local:j\", every: \"{every}\"}}\n  b:\n    cadence:\n      fast: *f\n"
            )
        };
        let mut cache = ParseCache::default();
        let first = reusing(&doc("5s"), &mut cache).expect("valid");
        assert_eq!(first["b"].cadences[&CadenceKind::Fast].period, Duration::from_secs(5));
        assert!(!cache.entries.iter().map(|(_, ns)| ns).any(|ns| &*ns.name == "b"), "b means nothing alone");
        let second = reusing(&doc("7s"), &mut cache).expect("valid");
        assert_eq!(second["b"].cadences[&CadenceKind::Fast].period, Duration::from_secs(7));
    }

    #[test]
    fn reused_loads_report_exactly_the_errors_of_a_whole_parse() {
        let mut cache = ParseCache::default();
        reusing(&fleet(20, 10), &mut cache).expect("valid");
        let duplicate =
            format!("{}  \"ns:00003\": {{cadence: {{fast: {{target: \"local:j\", every: \"1s\"}}}}}}\n", fleet(20, 10));
        let bad_period = fleet(20, 10).replacen("every: \"10s\"", "every: \"soon\"", 1);
        let unclosed = fleet(20, 10).replacen("every: \"10s\"}", "every: \"10s\"", 1);
        for doc in [duplicate, bad_period, unclosed] {
            let whole = parse_str(&doc).expect_err("invalid");
            assert_eq!(reusing(&doc, &mut cache).expect_err("invalid"), whole);
        }
        assert_eq!(cache.entries.len(), 20, "a rejected load leaves the cache as it was");
    }

    #[test]
    fn a_number_where_text_belongs_is_refused_in_pieces_as_in_the_whole_document() {
        let doc = "namespaces:\n  a:\n    description: 12\n    cadence:\n      fast: {target: local:j, every: 89s}\n  b:\n    cadence:\n      fast: {target: local:j, every: 89s}\n";
        let whole = parse_str(doc).expect_err("a number is not a description");
        let pieces = reusing(doc, &mut ParseCache::default()).expect_err("nor when the file splits");
        assert_eq!(pieces.0, whole.0);
        assert!(whole.0[0].reason.contains("expected a string"), "{whole:?}");
    }

    #[test]
    fn pieces_in_every_written_style_parse_as_the_whole_document_does() {
        // Block and flow styles, plain and quoted scalars, comments, and pieces the plain
        // reader leaves to serde_yaml (a block scalar, an escape).
        let doc = "namespaces:\n  a:\n    description: Anchors, hourly # note\n    witnesses:\n      min_required: 2\n      allowlist:\n      - did:key:z6Mka\n      - 'did:key:z6Mkb'\n    cadence:\n      fast:\n        target: local:j\n        every: 89s\n        confirmations: 12\n      strong: {target: \"local:j\", every: 34*fast}\n  \"b:1\": {cadence: {fast: {target: local:k, every: \"1d\"}}}\n  c:\n    description: |\n      two\n      lines\n    cadence:\n      fast: {target: \"local:\\u006a\", every: 60s, jitter: 10%}\n";
        let whole = parse_str(doc).expect("valid");
        assert_eq!(whole.len(), 3);
        assert_eq!(whole["c"].cadences[&CadenceKind::Fast].target.to_string(), "local:j");
        assert_eq!(reusing(doc, &mut ParseCache::default()).expect("valid"), whole);
        for file in ["namespaces.example.yaml", "tests/fixtures/corpus/namespaces/valid-reference.yaml"] {
            let text = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect("fixture");
            let whole = parse(&text, Path::new("ns.yaml"), &NoTargets);
            let pieces = parse_reusing(&text, Path::new("ns.yaml"), &NoTargets, None, &mut ParseCache::default());
            assert_eq!(pieces, whole, "{file}");
        }
    }

    #[test]
    fn a_new_targets_file_empties_the_cache() {
        let mut cache = ParseCache::default();
        let targets = NoTargets;
        let doc = fleet(3, 10);
        parse_reusing(doc.as_bytes(), Path::new("ns.yaml"), &targets, Some("one"), &mut cache).expect("valid");
        // Held, so no new namespace can take an old one's address.
        let before: Vec<_> = cache.entries.iter().map(|(_, ns)| ns).map(Arc::clone).collect();
        parse_reusing(doc.as_bytes(), Path::new("ns.yaml"), &targets, Some("two"), &mut cache).expect("valid");
        let anew = cache.entries.iter().map(|(_, ns)| ns).all(|ns| !before.iter().any(|old| Arc::ptr_eq(old, ns)));
        assert!(anew, "every namespace checked anew");
    }
}
