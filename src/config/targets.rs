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

use super::duration::parse_duration_unquoted;
use super::vars::{MAX_SECRET_FILE, Secrets, Unresolved, Vars, interpolate};
use super::{ConfigError, ConfigErrors, one_line};
use crate::anchor::btc::{BtcSpec, BtcTarget};
use crate::anchor::eip155::{EvmSpec, EvmTarget};
use crate::anchor::exec::{ExecSpec, ExecTarget};
use crate::anchor::rfc3161::{TsaSpec, TsaTarget};
use crate::fsread::read_regular;
use crate::model::{Scheme, Target};

/// What loading the targets file needs besides its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadContext {
    /// Variables `${VAR}` may refer to.
    pub vars: Vars,
    /// VMSH_ROOT: relative file paths (trust bundles, key files) are taken from here.
    pub root: PathBuf,
}

/// A field of the targets file (`eip155.base.rpcUrl`) and what is wrong with it.
pub type Problem = (String, String);

/// One section of the targets file, owned by the driver whose targets it configures.
pub trait Section {
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
    fn resolve<'a>(entries: &'a BTreeMap<String, Self::Built>, target: &Target) -> Result<(&'a str, &'a Self), String>
    where
        Self: Sized;

    /// What is checked only once a namespace uses the entry `name` (e.g. files it names).
    fn check_when_used(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The targets file as a whole. The loader knows no section: the document names them, as
/// the fields of its [`Raw`](TargetsDocument::Raw) form (so serde reports an unknown one),
/// and builds each with [`Sections::build`].
pub trait TargetsDocument: Default {
    /// The file as written: one field per section.
    type Raw: DeserializeOwned;
    /// Builds every section of `raw`.
    fn build(raw: Self::Raw, sections: &mut Sections<'_>) -> Self;
}

/// Builds the sections of one file, gathering the problems of all of them.
pub struct Sections<'a> {
    unresolved: &'a [Unresolved],
    ctx: &'a LoadContext,
    problems: Vec<Problem>,
}

impl Sections<'_> {
    /// The entries of section `S` that have no problem; the problems are kept for the loader.
    pub fn build<S: Section>(&mut self, specs: BTreeMap<String, S::Spec>) -> BTreeMap<String, S::Built> {
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
pub fn parse<D: TargetsDocument>(bytes: &[u8], file: &Path, ctx: &LoadContext) -> Result<D, ConfigErrors> {
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
pub fn redact(reason: &str) -> String {
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
pub fn entry_or_unusable<T>(
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
pub fn named_or_default<'a, T>(
    section: &str,
    entries: &'a BTreeMap<String, Entry<T>>,
    target: &Target,
) -> Result<(&'a str, &'a T), String> {
    let (name, entry) = configured(section, entries, target)?;
    ready(section, name, entry)
}

/// An entry's target, or why it cannot be used.
pub fn ready<'a, T>(section: &str, name: &'a str, entry: &'a Entry<T>) -> Result<(&'a str, &'a T), String> {
    match entry {
        Entry::Ready(t) => Ok((name, t)),
        Entry::Unusable(why) => Err(format!("{section}.{name} cannot be used: {why}")),
    }
}

/// The entry `target` names, else the section's `default` entry, usable or not.
pub fn configured<'a, T>(
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
pub struct Flex<T>(pub T);

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
pub fn http_url(field: &str, value: Option<String>) -> Result<String, String> {
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
pub fn read_text(path: &Path, field: &str) -> Result<String, String> {
    let bytes = read_regular(path, MAX_SECRET_FILE).map_err(|e| format!("{field} {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{field} {}: not UTF-8 text", path.display()))
}

/// A path from the targets file: relative ones are taken from `root` (VMSH_ROOT).
pub fn relative_to(root: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() { path } else { root.join(path) }
}

/// A poll interval as written, or `default`; errors name `field`.
pub fn poll(field: &str, raw: Option<String>, default: Duration) -> Result<Duration, String> {
    raw.map_or(Ok(default), |r| parse_duration_unquoted(&r).map_err(|e| format!("{field} {e}")))
}

// The sections assembled.

/// The targets file as written: one field per section. (Its name is in serde's messages
/// about a file that is not a mapping.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    #[serde(default)]
    exec: BTreeMap<String, ExecSpec>,
    #[serde(default)]
    eip155: BTreeMap<String, EvmSpec>,
    #[serde(default)]
    btc: BTreeMap<String, BtcSpec>,
    #[serde(default)]
    rfc3161: BTreeMap<String, TsaSpec>,
}

/// Everything the targets file configures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetsConfig {
    /// External commands by name.
    pub exec: BTreeMap<String, ExecTarget>,
    /// EVM entries by name.
    pub eip155: BTreeMap<String, Entry<EvmTarget>>,
    /// Bitcoin entries by name.
    pub btc: BTreeMap<String, Entry<BtcTarget>>,
    /// TSA entries by name.
    pub rfc3161: BTreeMap<String, Entry<TsaTarget>>,
}

/// The entry a target resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    /// Built in: no entry needed.
    Local,
    /// `exec.<name>`.
    Exec(&'a str, &'a ExecTarget),
    /// `eip155.<name>`.
    Evm(&'a str, &'a EvmTarget),
    /// `btc.<name>`.
    Btc(&'a str, &'a BtcTarget),
    /// `rfc3161.<name>`.
    Tsa(&'a str, &'a TsaTarget),
}

impl TargetsDocument for TargetsConfig {
    type Raw = TargetsFile;

    fn build(raw: TargetsFile, sections: &mut Sections<'_>) -> Self {
        TargetsConfig {
            exec: sections.build::<ExecTarget>(raw.exec),
            eip155: sections.build::<EvmTarget>(raw.eip155),
            btc: sections.build::<BtcTarget>(raw.btc),
            rfc3161: sections.build::<TsaTarget>(raw.rfc3161),
        }
    }
}

impl TargetsConfig {
    /// Parses and validates a targets file; `file` only labels errors.
    pub fn parse(bytes: &[u8], file: &Path, ctx: &LoadContext) -> Result<Self, ConfigErrors> {
        parse(bytes, file, ctx)
    }

    /// The entry `target` resolves to, by its section's rule.
    pub fn resolve(&self, target: &Target) -> Result<Resolved<'_>, String> {
        match target.scheme {
            Scheme::Local => Ok(Resolved::Local),
            Scheme::Exec => ExecTarget::resolve(&self.exec, target).map(|(n, t)| Resolved::Exec(n, t)),
            Scheme::Eip155 => EvmTarget::resolve(&self.eip155, target).map(|(n, t)| Resolved::Evm(n, t)),
            Scheme::Btc => BtcTarget::resolve(&self.btc, target).map(|(n, t)| Resolved::Btc(n, t)),
            Scheme::Rfc3161 => TsaTarget::resolve(&self.rfc3161, target).map(|(n, t)| Resolved::Tsa(n, t)),
        }
    }

    /// Every secret of every usable entry. Text from any target is cleaned of all of them,
    /// not only of its own: an exec command inherits the scheduler's environment, where the
    /// other targets' keys and passwords often live.
    ///
    /// Each section says what its entries hold that must never be repeated (see
    /// `Redactor`). Everything a user could put a credential into counts, whether or not it
    /// looks like one: the URL's user info, path and query, keys, passwords and their files,
    /// the cookie file, and every `env` value of an exec command (a setting cannot be told
    /// from a token). Not counted: an exec command's argv, which any local user can read in
    /// the process list anyway, so it is no place for a secret.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        for t in self.exec.values() {
            secrets.extend(&t.secrets());
        }
        for t in self.eip155.values().filter_map(Entry::ready) {
            secrets.extend(&t.secrets());
        }
        for t in self.btc.values().filter_map(Entry::ready) {
            secrets.extend(&t.secrets());
        }
        for t in self.rfc3161.values().filter_map(Entry::ready) {
            secrets.extend(&t.secrets());
        }
        secrets
    }
}

impl super::namespaces::TargetCatalog for TargetsConfig {
    /// Checks that a target a namespace names can be reached with this configuration, and
    /// that the trust bundle an entry names is a readable PEM bundle.
    fn check(&self, target: &Target) -> Result<(), String> {
        match self.resolve(target)? {
            Resolved::Local => Ok(()),
            Resolved::Exec(name, t) => t.check_when_used(name),
            Resolved::Evm(name, t) => t.check_when_used(name),
            Resolved::Btc(name, t) => t.check_when_used(name),
            Resolved::Tsa(name, t) => t.check_when_used(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::btc::BtcAuth;
    use crate::config::TargetCatalog;
    use crate::config::vars::Secret;

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn ctx(vars: &[(&str, &str)]) -> LoadContext {
        LoadContext {
            vars: Vars::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
            root: PathBuf::from("/srv/vm"),
        }
    }

    fn parse_str(yaml: &str, c: &LoadContext) -> Result<TargetsConfig, ConfigErrors> {
        TargetsConfig::parse(yaml.as_bytes(), Path::new("anchors.yaml"), c)
    }

    fn target(s: &str) -> Target {
        Target::parse(s).expect("target")
    }

    const REFERENCE: &str = include_str!("../../tests/fixtures/anchors.vm-spawn.yaml");

    #[test]
    fn the_reference_targets_file_is_accepted_as_it_is() {
        // Without its variables every entry is there but unusable …
        let t = parse_str(REFERENCE, &ctx(&[])).expect("reference targets file is valid");
        let e = t.resolve(&target("eip155:8453")).expect_err("EVM_RPC unset");
        assert!(e.contains("EVM_RPC is not set"), "{e}");
        // … and with them it resolves, interpolating ${VAR} and ${VAR:-default}.
        let c = ctx(&[
            ("EVM_RPC", "https://base.example/rpc"),
            ("EVM_CHAIN_ID", "8453"),
            ("EVM_CONTRACT", ""),
            ("EVM_ANCHOR_KEY", KEY),
            ("BTC_RPC", "http://127.0.0.1:8332"),
            ("TSA_URL", "https://tsa.example/tsr"),
        ]);
        let t = parse_str(REFERENCE, &c).expect("valid");
        let Ok(Resolved::Evm(name, evm)) = t.resolve(&target("eip155:8453")) else { panic!("evm") };
        assert_eq!((name, evm.chain_id, evm.contract, evm.confirmations), ("default", Some(8453), None, 12));
        let Ok(Resolved::Tsa(_, tsa)) = t.resolve(&target("rfc3161:tsa")) else { panic!("tsa") };
        assert_eq!(tsa.policy_oid, None, "${{TSA_POLICY_OID:-\"\"}} is empty");
        assert_eq!(tsa.trust_bundle, Some(PathBuf::from("/srv/vm/services/anchors/certs/tsa-bundle.pem")));
        let e = t.resolve(&target("btc:mainnet")).expect_err("no credentials");
        assert!(e.contains("no RPC credentials"), "{e}");
        let e = t.resolve(&target("eip155:1")).expect_err("chain 1 is not configured");
        assert!(e.contains("chainId is 8453"), "{e}");
        // bitcoind URLs often carry their credentials; they are taken out of the URL.
        let c = ctx(&[("BTC_RPC", "http://vmsh:hunter2@127.0.0.1:18443/")]);
        let t = parse_str(REFERENCE, &c).expect("valid");
        let Ok(Resolved::Btc(_, btc)) = t.resolve(&target("btc:mainnet")) else { panic!("btc") };
        assert_eq!(
            (btc.rpc_url.expose(), btc.chain.as_str(), btc.confirmations),
            ("http://127.0.0.1:18443/", "regtest", 6)
        );
        assert_eq!(btc.auth, BtcAuth::UserPassword { user: "vmsh".into(), password: Secret::new("hunter2") });
    }

    #[test]
    fn eip155_resolves_by_name_then_chain_id_then_default() {
        let yaml = format!(
            "eip155:\n  default: {{rpcUrl: 'http://a', key: '{KEY}'}}\n  base: {{rpcUrl: 'http://b', chainId: 8453, key: '{KEY}'}}\n  '1': {{rpcUrl: 'http://c', key: '{KEY}'}}\n"
        );
        let t = parse_str(&yaml, &ctx(&[])).expect("valid");
        let name = |s: &str| match t.resolve(&target(s)) {
            Ok(Resolved::Evm(n, _)) => n.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(name("eip155:1"), "1");
        assert_eq!(name("eip155:8453"), "base");
        assert_eq!(name("eip155:10"), "default");
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug_output() {
        let secret = "0xthisisnotakeybutasecretpassword";
        let e = parse_str(&format!("eip155:\n  default: {{rpcUrl: 'http://a', key: '{secret}'}}\n"), &ctx(&[]))
            .expect_err("bad key");
        assert!(!e.to_string().contains("secretpassword"), "{e}");
        let e = parse_str(&format!("eip155:\n  default: {{rpcUrl: 'http://a', chainId: '{secret}'}}\n"), &ctx(&[]))
            .expect_err("bad chain id");
        assert!(!e.to_string().contains("secretpassword"), "{e}");
        let t =
            parse_str(&format!("eip155:\n  default: {{rpcUrl: 'http://a', key: '{KEY}'}}\n"), &ctx(&[])).expect("ok");
        assert!(!format!("{t:?}").contains(&KEY[4..20]));
        let t = parse_str("btc:\n  default: {rpcUrl: 'http://a', rpcUser: u, rpcPassword: hunter2}\n", &ctx(&[]))
            .expect("ok");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn exec_entries_are_validated() {
        let t = parse_str("exec:\n  notify: {command: [./anchor.sh, --fast], timeout: 30s, env: {A: b}}\n", &ctx(&[]))
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
            "eip155:\n  d: {rpcUrl: 'ftp://x', key: k}\n",
            "btc:\n  d: {rpcUrl: 'http://x', network: moon}\n",
            "rfc3161:\n  d: {url: 'http://x', policyOID: nope}\n",
            "rfc3161:\n  d: {url: 'http://x', timeot: 5s}\n",
        ] {
            assert!(parse_str(bad, &ctx(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_of_the_targets_file_is_reported() {
        let e = parse_str("ipfs: {}\nexec:\n  a: {command: []}\n  b: {command: [x], shell: true}\n", &ctx(&[]))
            .expect_err("invalid");
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"ipfs"), "{e}");
        assert!(fields.contains(&"exec.b.shell"), "{e}");
        assert!(fields.contains(&"exec.a.command"), "{e}");
    }

    #[test]
    fn a_target_without_an_entry_is_an_error_naming_the_fix() {
        let t = TargetsConfig::default();
        for (s, hint) in
            [("exec:x", "exec:"), ("btc:mainnet", "btc:"), ("rfc3161:tsa", "rfc3161:"), ("eip155:1", "eip155:")]
        {
            let e = t.check(&target(s)).expect_err(s);
            assert!(e.contains(hint) && e.contains("VMSH_ANCHORS"), "{e}");
        }
        assert_eq!(t.check(&target("local:j")), Ok(()));
    }

    #[test]
    fn errors_stay_on_one_line_and_name_fields_not_values() {
        for yaml in [
            "exec:\n  \"a\\nb\": {command: [x]}\n",
            "exec:\n  n: {command: [x], \"sh\\nell\": 1}\n",
            "btc:\n  \"a\\r\\nb\": {rpcUrl: 'ftp://x'}\n",
            "\"ip\\nfs\": {}\n",
        ] {
            let e = parse_str(yaml, &ctx(&[])).expect_err(yaml);
            for line in e.0.iter().map(ToString::to_string) {
                assert!(line.starts_with("anchors.yaml: ") && !line.contains(['\n', '\r']), "{line:?}");
            }
        }
        // A secret where a policy OID or a duration belongs (a variable set to the wrong
        // value) is not printed either.
        let secret = "http://vmsh:hunter2-secret@127.0.0.1:18443";
        for field in ["policyOID", "timeout"] {
            let e = parse_str(&format!("rfc3161:\n  d: {{url: 'http://a', {field}: '{secret}'}}\n"), &ctx(&[]))
                .expect_err("refused");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
        // A secret in a key's place is still not printed, however the entry is broken.
        let secret = "0xsupersecretvalue";
        let e = parse_str(&format!("eip155:\n  d: {{rpcUrl: 'http://a', key: \"{secret}\\n\"}}\n"), &ctx(&[]))
            .expect_err("bad key");
        assert!(!e.to_string().contains("supersecret"), "{e}");
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("exec: {}", "{a: ".repeat(1_000_000));
        let started = std::time::Instant::now();
        let e = parse_str(&deep, &ctx(&[])).expect_err("too deep");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(e.to_string().contains("nest more than 64 levels"), "{e}");
        assert_eq!(e.0.len(), 1);
    }

    #[test]
    fn every_targets_corpus_file_parses_or_fails_with_errors_naming_the_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/targets");
        let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
        files.sort();
        assert!(files.len() >= 5, "{} corpus files", files.len());
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
            match TargetsConfig::parse(&std::fs::read(&path).expect("read"), &path, &ctx(&[])) {
                Ok(_) => assert!(name.starts_with("valid-"), "{name} parsed"),
                Err(errs) => {
                    assert!(name.starts_with("invalid-"), "{name}: {errs}");
                    assert!(errs.0.len() >= 8, "{name}: every problem is reported: {errs}");
                    for e in errs.0 {
                        assert_eq!(e.file, path);
                        assert!(!e.reason.is_empty() && !e.to_string().contains('\n'), "{name}: {e}");
                    }
                }
            }
        }
    }
}
