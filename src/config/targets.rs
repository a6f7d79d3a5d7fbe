//! The targets file (`VMSH_ANCHORS`): a mapping of sections, one per driver, each a map of
//! named entries.
//!
//! The loader here is the part every section shares: it reads the YAML, replaces `${VAR}` and
//! `${VAR:-default}` in string values (see [`super::vars`]), collects every shape error, and
//! hands each entry to its section ([`Section::build`]). What an entry holds, how it is
//! checked and which entry a target resolves to is the section's to say.
//!
//! An entry whose `${VAR}` is not set may be unusable; that is an error only if a namespace
//! uses it. Error messages name fields, never values: values may be keys, passwords or URLs
//! with credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::duration::parse_duration;
use super::vars::{MAX_SECRET_FILE, Unresolved, Vars, interpolate};
use super::{ConfigError, ConfigErrors, one_line};
use crate::fsread::read_regular;
use crate::model::Target;

/// What loading the targets file needs besides its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadContext {
    /// Variables `${VAR}` may refer to.
    pub vars: Vars,
    /// VMSH_ROOT: relative file paths (trust bundles, key files) are taken from here.
    pub root: PathBuf,
}

/// A field of the targets file (`eip155.base.rpcUrl`) and what is wrong with it.
pub(crate) type Problem = (String, String);

/// One section of the targets file, owned by the driver whose targets it configures.
pub(crate) trait Section {
    /// The section's key in the file, which is also its targets' scheme (`eip155`).
    const NAME: &'static str;
    /// An entry as written.
    type Spec;
    /// An entry as built: the target, or an [`Entry`] of it where an entry may be unusable.
    type Built;
    /// Builds the entry `name`; `unset` are the references in it to variables that are not
    /// set. A problem makes the whole file invalid.
    fn build(
        name: &str,
        spec: Self::Spec,
        unset: &[&Unresolved],
        ctx: &LoadContext,
    ) -> Result<Self::Built, Vec<Problem>>;

    /// The entry `target` uses among `entries`, with its name; `Err` says why none can be
    /// used and what to configure.
    fn resolve<'a>(entries: &'a BTreeMap<String, Self::Built>, target: &Target) -> Result<(&'a str, &'a Self), String>;

    /// What is checked only once a namespace uses the entry `name` (e.g. files it names).
    fn check_when_used(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The targets file as a whole. The loader knows no section: the document names them, as
/// the fields of its [`Raw`](TargetsDocument::Raw) form (so serde reports an unknown one),
/// and builds each with [`Sections::build`].
pub(crate) trait TargetsDocument: Default {
    /// The file as written: one field per section.
    type Raw: DeserializeOwned;
    /// Builds every section of `raw`.
    fn build(raw: Self::Raw, sections: &mut Sections<'_>) -> Self;
}

/// Builds the sections of one file, gathering the problems of all of them.
pub(crate) struct Sections<'a> {
    unresolved: &'a [Unresolved],
    ctx: &'a LoadContext,
    problems: Vec<Problem>,
}

impl Sections<'_> {
    /// The entries of section `S` that have no problem; the problems are kept for the loader.
    pub(crate) fn build<S: Section>(&mut self, specs: BTreeMap<String, S::Spec>) -> BTreeMap<String, S::Built> {
        let mut out = BTreeMap::new();
        for (name, spec) in specs {
            let prefix = format!("{}.{name}.", S::NAME);
            let unset: Vec<&Unresolved> = self.unresolved.iter().filter(|u| u.field.starts_with(&prefix)).collect();
            match S::build(&name, spec, &unset, self.ctx) {
                Ok(built) => {
                    out.insert(name, built);
                }
                Err(problems) => self.problems.extend(problems),
            }
        }
        out
    }
}

/// Parses and validates a targets document; `file` only labels errors.
pub(crate) fn parse<D: TargetsDocument>(bytes: &[u8], file: &Path, ctx: &LoadContext) -> Result<D, ConfigErrors> {
    // Keys may hold line breaks or be kilobytes long: each error stays one line.
    let err = |field: String, reason: String| ConfigError {
        file: file.to_path_buf(),
        namespace: None,
        field: one_line(&field, 200),
        reason: one_line(&reason, 1000),
    };
    super::flow_depth::check(bytes).map_err(|reason| ConfigErrors::one(err(String::new(), reason)))?;
    let mut value: serde_yaml::Value = serde_yaml::from_slice(bytes)
        .map_err(|e| ConfigErrors::one(err(String::new(), super::yaml_error::not_valid_yaml(bytes, &e))))?;
    if value.is_null() {
        return Ok(D::default());
    }
    let unresolved = interpolate(&mut value, &ctx.vars);
    let (raw, shape_errors) = super::shape::deserialize_all::<D::Raw>(value);
    let mut errors: Vec<ConfigError> =
        shape_errors.into_iter().map(|(field, reason)| err(field, redact(&reason))).collect();
    let Some(raw) = raw else { return Err(ConfigErrors(errors)) };
    let mut sections = Sections { unresolved: &unresolved, ctx, problems: Vec::new() };
    let document = D::build(raw, &mut sections);
    errors.extend(sections.problems.into_iter().map(|(field, reason)| err(field, reason)));
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(document)
}

/// Removes quoted text from a serde message: values in the targets file may be secrets.
pub(crate) fn redact(reason: &str) -> String {
    // serde quotes string values in double quotes, and numbers, booleans and other values in
    // backticks after "invalid type" / "invalid value" — a key written unquoted is a number
    // to YAML. Field names (also in backticks, in "unknown field" messages) stay.
    let value_in_backticks = reason.starts_with("invalid type") || reason.starts_with("invalid value");
    let mut out = String::with_capacity(reason.len());
    let mut quote: Option<char> = None;
    for c in reason.chars() {
        let hides = c == '"' || (c == '`' && value_in_backticks);
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if hides => {
                out.push(c);
                out.push('…');
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

/// A named entry: usable, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<T> {
    /// Ready to use.
    Ready(T),
    /// Cannot be used (e.g. a `${VAR}` it needs is not set); an error only if used.
    Unusable(String),
}

impl<T> Entry<T> {
    /// The target, when the entry is usable.
    pub fn ready(&self) -> Option<&T> {
        match self {
            Entry::Ready(t) => Some(t),
            Entry::Unusable(_) => None,
        }
    }
}

/// How an entry that may be unusable is built: with a variable that is not set it is
/// unusable (naming each such variable and the field using it); otherwise `build` decides,
/// and its error is a problem of the entry as a whole (`eip155.base`).
pub(crate) fn entry_or_unusable<T>(
    section: &str,
    name: &str,
    unset: &[&Unresolved],
    build: impl FnOnce() -> Result<Entry<T>, String>,
) -> Result<Entry<T>, Vec<Problem>> {
    if !unset.is_empty() {
        let why =
            unset.iter().map(|u| format!("{} is not set (used by {})", u.var, u.field)).collect::<Vec<_>>().join("; ");
        return Ok(Entry::Unusable(why));
    }
    build().map_err(|reason| vec![(format!("{section}.{name}"), reason)])
}

/// The usable entry `target` names, else the section's `default` entry.
pub(crate) fn named_or_default<'a, T>(
    section: &str,
    entries: &'a BTreeMap<String, Entry<T>>,
    target: &Target,
) -> Result<(&'a str, &'a T), String> {
    let (name, entry) = configured(section, entries, target)?;
    ready(section, name, entry)
}

/// An entry's target, or why it cannot be used.
pub(crate) fn ready<'a, T>(section: &str, name: &'a str, entry: &'a Entry<T>) -> Result<(&'a str, &'a T), String> {
    match entry {
        Entry::Ready(t) => Ok((name, t)),
        Entry::Unusable(why) => Err(format!("{section}.{name} cannot be used: {why}")),
    }
}

/// The entry `target` names, else the section's `default` entry, usable or not.
pub(crate) fn configured<'a, T>(
    section: &str,
    entries: &'a BTreeMap<String, Entry<T>>,
    target: &Target,
) -> Result<(&'a str, &'a Entry<T>), String> {
    entries
        .get_key_value(&target.name)
        .or_else(|| entries.get_key_value("default"))
        .map(|(k, v)| (k.as_str(), v))
        .ok_or_else(|| {
            format!(
                "{target} is not configured: add `{section}: {{{}: {{...}}}}` (or a `default` entry) to the targets file (VMSH_ANCHORS)",
                target.name
            )
        })
}

/// A number or boolean that may also be written as a string (as `${VAR}` produces).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Flex<T>(pub T);

impl<'de, T> Deserialize<'de> for Flex<T>
where
    T: std::str::FromStr + serde::de::DeserializeOwned,
    T::Err: std::fmt::Display,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => {
                s.trim().parse::<T>().map(Flex).map_err(|e| D::Error::custom(format!("not a valid value: {e}")))
            }
            other => T::deserialize(other).map(Flex).map_err(D::Error::custom),
        }
    }
}

/// The URL in `value`, which must be http:// or https://; errors name `field`, not the value.
pub(crate) fn http_url(field: &str, value: Option<String>) -> Result<String, String> {
    let url = value.ok_or_else(|| format!("{field} is required"))?;
    let lower = url.to_ascii_lowercase();
    if (lower.starts_with("http://") || lower.starts_with("https://")) && url.len() > "http://".len() {
        Ok(url)
    } else {
        Err(format!("{field} must be an http:// or https:// URL"))
    }
}

/// A key or password file as text (see [`read_regular`]); errors name `field` and the
/// path, never the content.
pub(crate) fn read_text(path: &Path, field: &str) -> Result<String, String> {
    let bytes = read_regular(path, MAX_SECRET_FILE).map_err(|e| format!("{field} {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{field} {}: not UTF-8 text", path.display()))
}

/// A path from the targets file: relative ones are taken from `root` (VMSH_ROOT).
pub(crate) fn relative_to(root: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() { path } else { root.join(path) }
}

/// A poll interval as written, or `default`; errors name `field`.
pub(crate) fn poll(field: &str, raw: Option<String>, default: Duration) -> Result<Duration, String> {
    raw.map_or(Ok(default), |r| parse_duration(&r).map_err(|e| format!("{field} {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section for the loader's tests: entries that need a positive `size`.
    #[derive(Debug, PartialEq)]
    struct Bin(u32);

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BinSpec {
        size: Option<Flex<u32>>,
    }

    impl Section for Bin {
        const NAME: &'static str = "bin";
        type Spec = BinSpec;
        type Built = Entry<Bin>;

        fn build(
            name: &str,
            spec: BinSpec,
            unset: &[&Unresolved],
            _ctx: &LoadContext,
        ) -> Result<Entry<Bin>, Vec<Problem>> {
            entry_or_unusable(Self::NAME, name, unset, || match spec.size {
                Some(Flex(size)) if size > 0 => Ok(Entry::Ready(Bin(size))),
                _ => Err("size must be a positive number".into()),
            })
        }

        fn resolve<'a>(
            entries: &'a BTreeMap<String, Entry<Bin>>,
            target: &Target,
        ) -> Result<(&'a str, &'a Self), String> {
            named_or_default(Self::NAME, entries, target)
        }
    }

    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BinFile {
        #[serde(default)]
        bin: BTreeMap<String, BinSpec>,
    }

    #[derive(Debug, Default)]
    struct Bins(BTreeMap<String, Entry<Bin>>);

    impl TargetsDocument for Bins {
        type Raw = BinFile;

        fn build(raw: BinFile, sections: &mut Sections<'_>) -> Self {
            Bins(sections.build::<Bin>(raw.bin))
        }
    }

    fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<Bins, ConfigErrors> {
        let vars = Vars::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        parse(yaml.as_bytes(), Path::new("bins.yaml"), &LoadContext { vars, root: PathBuf::from("/") })
    }

    #[test]
    fn the_loader_builds_each_section_by_the_sections_own_rules() {
        let yaml = "bin:\n  a: {size: '${SIZE}'}\n  b: {size: 3}\n  c: {size: '${UNSET}'}\n";
        let bins = load(yaml, &[("SIZE", "2")]).expect("valid");
        assert_eq!(bins.0["a"], Entry::Ready(Bin(2)), "${{SIZE}} is replaced before the section sees it");
        assert_eq!(bins.0["b"], Entry::Ready(Bin(3)));
        assert_eq!(bins.0["c"], Entry::Unusable("UNSET is not set (used by bin.c.size)".into()));
        let e = Bin::resolve(&bins.0, &Target::parse("exec:x").expect("target")).expect_err("no x, no default");
        assert!(e.contains("add `bin: {x: {...}}` (or a `default` entry)"), "{e}");
        assert!(load("", &[]).expect("an empty file").0.is_empty());
    }

    #[test]
    fn the_loader_reports_every_problem_of_every_section_naming_fields_not_values() {
        let yaml = "bin:\n  a: {size: 0}\n  b: {size: 1, colour: \"s3cret\"}\n  c: {size: \"s3cret\"}\nbag: {}\n";
        let e = load(yaml, &[]).expect_err("invalid");
        let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "bins.yaml: bin.b.colour: unknown field `colour`, expected `size`",
                "bins.yaml: bin.c.size: not a valid value: invalid digit found in string",
                "bins.yaml: bag: unknown field `bag`, expected `bin`",
                "bins.yaml: bin.a: size must be a positive number",
                "bins.yaml: bin.c: size must be a positive number",
            ],
            "{e}"
        );
    }
}
