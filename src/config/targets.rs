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

use garde::Validate;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::cadence::{Every, parse_every};
use super::duration::parse_duration_unquoted;
use super::vars::{Endpoint, MAX_SECRET_FILE, Secret, Secrets, Unresolved, Vars, interpolate, percent_decode};
use super::{ConfigError, ConfigErrors, one_line};
use crate::fsread::read_regular;
use crate::model::digest::parse_hex32;
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

// The sections of the drivers.

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

/// An `eip155` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EvmSpec {
    rpc_url: Option<String>,
    chain_id: Option<Flex<u64>>,
    contract: Option<String>,
    key: Option<String>,
    key_file: Option<String>,
    persist: Option<Flex<bool>>,
    confirmations: Option<Flex<u32>>,
    memo: Option<String>,
    poll_interval: Option<String>,
    gas_limit: Option<Flex<u64>>,
}

/// A `btc` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BtcSpec {
    rpc_url: Option<String>,
    network: Option<String>,
    confirmations: Option<Flex<u32>>,
    rpc_user: Option<String>,
    rpc_password: Option<String>,
    rpc_password_file: Option<String>,
    cookie_file: Option<String>,
    wallet: Option<String>,
    fee_rate: Option<Flex<f64>>,
    poll_interval: Option<String>,
}

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
            .finish()
    }
}

/// An EVM chain reached over JSON-RPC with a local signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmTarget {
    /// JSON-RPC endpoint (http or https).
    pub rpc_url: Endpoint,
    /// Chain id the node must report; the target's id when not set.
    pub chain_id: Option<u64>,
    /// Anchor contract; without one, a marker transaction to the sender itself is sent.
    pub contract: Option<[u8; 20]>,
    /// The signing key (32 bytes, hex).
    pub key: Secret,
    /// The contract call's `persist` argument.
    pub persist: bool,
    /// Confirmations required unless the cadence sets its own.
    pub confirmations: u32,
    /// The contract call's `memo` argument.
    pub memo: String,
    /// How often a pending transaction is looked at.
    pub poll_interval: Duration,
    /// Gas limit; estimated when not set.
    pub gas_limit: Option<u64>,
}

/// How to authenticate to bitcoind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtcAuth {
    /// `rpcuser` / `rpcpassword`.
    UserPassword {
        /// User.
        user: String,
        /// Password.
        password: Secret,
    },
    /// bitcoind's `.cookie` file, read at each request (bitcoind rewrites it when it restarts).
    Cookie(PathBuf),
}

/// A bitcoind wallet reached over JSON-RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct BtcTarget {
    /// JSON-RPC endpoint (http or https), without the credentials it may have carried.
    pub rpc_url: Endpoint,
    /// `main`, `test`, `signet` or `regtest`, as `getblockchaininfo` reports it.
    pub chain: String,
    /// Confirmations required unless the cadence sets its own.
    pub confirmations: u32,
    /// Credentials.
    pub auth: BtcAuth,
    /// Wallet name, for a node with several wallets.
    pub wallet: Option<String>,
    /// Fee rate in sat/vB; the wallet's estimate when not set.
    pub fee_rate: Option<f64>,
    /// How often a pending transaction is looked at.
    pub poll_interval: Duration,
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
}

// What each entry holds that must never be repeated (see `Redactor`). Everything a user could
// put a credential into counts, whether or not it looks like one: the URL's user info, path
// and query, keys, passwords and their files, the cookie file, and every `env` value of an
// exec command (a setting cannot be told from a token). Not counted: an exec command's argv,
// which any local user can read in the process list anyway, so it is no place for a secret.

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

impl EvmTarget {
    /// The signing key (however it may be written) and the RPC URL's secret parts.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = self.rpc_url.secrets();
        secrets.hex_key(self.key.expose());
        secrets
    }
}

impl BtcAuth {
    /// The password and the basic-auth login it makes, or the cookie file (read when needed:
    /// bitcoind writes a new cookie each time it starts).
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        match self {
            BtcAuth::UserPassword { user, password } => secrets.login(user, password.expose()),
            BtcAuth::Cookie(path) => secrets.file(path),
        };
        secrets
    }
}

impl BtcTarget {
    /// The credentials and the RPC URL's secret parts.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = self.rpc_url.secrets();
        secrets.extend(&self.auth.secrets());
        secrets
    }
}

impl TsaTarget {
    /// The URL's secret parts.
    pub fn secrets(&self) -> Secrets {
        self.url.secrets()
    }
}

/// Largest trust bundle read: a few hundred CA certificates.
pub const MAX_BUNDLE: u64 = 4 * 1024 * 1024;

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
        })
    }
}

/// The command `exec:<name>` runs: `exec.<name>`.
pub fn exec_entry<'a>(
    entries: &'a BTreeMap<String, ExecTarget>,
    target: &Target,
) -> Result<(&'a str, &'a ExecTarget), String> {
    entries.get_key_value(&target.name).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
        format!(
            "{target} is not configured: add `exec: {{{}: {{command: [...]}}}}` to the targets file (VMSH_ANCHORS)",
            target.name
        )
    })
}

impl Section for EvmTarget {
    const NAME: &'static str = "eip155";
    type Spec = EvmSpec;
    type Built = Entry<EvmTarget>;

    fn build(
        name: &str,
        spec: EvmSpec,
        unset: &[&Unresolved],
        ctx: &LoadContext,
    ) -> Result<Entry<EvmTarget>, Vec<Problem>> {
        entry_or_unusable(Self::NAME, name, unset, || evm_target(spec, ctx))
    }
}

/// The entry `eip155:<chain id>` uses: the one named by the chain id, else the one whose
/// `chainId` is that id, else `default` (whose `chainId`, if set, must match).
pub fn evm_entry<'a>(
    entries: &'a BTreeMap<String, Entry<EvmTarget>>,
    target: &Target,
) -> Result<(&'a str, &'a EvmTarget), String> {
    let id: u64 = target.name.parse().map_err(|_| format!("{target}: not a chain id"))?;
    let by_id = entries
        .iter()
        .find(|(_, e)| matches!(e, Entry::Ready(t) if t.chain_id == Some(id)))
        .map(|(k, v)| (k.as_str(), v));
    let (name, entry) = match entries.get_key_value(&target.name).map(|(k, v)| (k.as_str(), v)) {
        Some(found) => found,
        None => match by_id {
            Some(found) => found,
            None => configured("eip155", entries, target)?,
        },
    };
    let (name, t) = ready("eip155", name, entry)?;
    match t.chain_id {
        Some(configured) if configured != id => Err(format!(
            "{target} resolves to eip155.{name}, whose chainId is {configured}; add an entry for chain {id}"
        )),
        _ => Ok((name, t)),
    }
}

impl Section for BtcTarget {
    const NAME: &'static str = "btc";
    type Spec = BtcSpec;
    type Built = Entry<BtcTarget>;

    fn build(
        name: &str,
        spec: BtcSpec,
        unset: &[&Unresolved],
        ctx: &LoadContext,
    ) -> Result<Entry<BtcTarget>, Vec<Problem>> {
        entry_or_unusable(Self::NAME, name, unset, || btc_target(spec, ctx))
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
        entry_or_unusable(Self::NAME, name, unset, || tsa_target(spec, ctx))
    }
}

impl TsaTarget {
    /// Checks, when the target is used, that the trust bundle entry `name` names is a
    /// readable PEM bundle.
    pub fn check(&self, name: &str) -> Result<(), String> {
        let Some(path) = &self.trust_bundle else { return Ok(()) };
        let pem = read_regular(path, MAX_BUNDLE)
            .map_err(|e| format!("rfc3161.{name}.trustBundle {}: {e}", path.display()))?;
        crate::anchor::rfc3161::TrustBundle::from_pem(&pem)
            .map(|_| ())
            .map_err(|e| format!("rfc3161.{name}.trustBundle {}: {e}", path.display()))
    }
}

fn evm_target(spec: EvmSpec, ctx: &LoadContext) -> Result<Entry<EvmTarget>, String> {
    let rpc_url = http_url("rpcUrl", spec.rpc_url)?;
    let chain_id = spec.chain_id.map(|Flex(id)| id);
    if chain_id == Some(0) {
        return Err("chainId must be a positive integer".into());
    }
    let contract = match spec.contract {
        None => None,
        Some(c) => {
            let hex = c.strip_prefix("0x").unwrap_or(&c);
            let bytes = (hex.len() == 40)
                .then(|| parse_hex32(&format!("{hex}{}", "0".repeat(24))))
                .flatten()
                .ok_or("contract must be a 20-byte hex address (0x followed by 40 hex digits)")?;
            let mut addr = [0u8; 20];
            addr.copy_from_slice(&bytes[..20]);
            Some(addr)
        }
    };
    let confirmations = spec.confirmations.map_or(1, |Flex(c)| c);
    if confirmations > 10_000 {
        return Err("confirmations must be at most 10000".into());
    }
    let memo = spec.memo.unwrap_or_default();
    if memo.len() > 256 {
        return Err("memo must be at most 256 bytes".into());
    }
    let poll_interval = poll("pollInterval", spec.poll_interval, Duration::from_secs(4))?;
    let key = match (spec.key, spec.key_file) {
        (Some(_), Some(_)) => return Err("set key or keyFile, not both".into()),
        (Some(k), None) => Secret::new(k),
        (None, Some(f)) => {
            let path = relative_to(&ctx.root, &f);
            let text = read_text(&path, "keyFile")?;
            Secret::new(text.trim())
        }
        (None, None) => {
            return Ok(Entry::Unusable("no signing key: set key (e.g. ${EVM_ANCHOR_KEY}) or keyFile".into()));
        }
    };
    let hex = key.expose().strip_prefix("0x").unwrap_or(key.expose());
    let valid = parse_hex32(hex).is_some_and(|bytes| {
        alloy::signers::local::PrivateKeySigner::from_bytes(&alloy::primitives::B256::from(bytes)).is_ok()
    });
    if !valid {
        return Err("key must be a valid secp256k1 private key: 64 hex digits, optionally after 0x".into());
    }
    Ok(Entry::Ready(EvmTarget {
        rpc_url: Endpoint::new(rpc_url),
        chain_id,
        contract,
        key,
        persist: spec.persist.is_some_and(|Flex(p)| p),
        confirmations,
        memo,
        poll_interval,
        gas_limit: spec.gas_limit.map(|Flex(g)| g),
    }))
}

fn btc_target(spec: BtcSpec, ctx: &LoadContext) -> Result<Entry<BtcTarget>, String> {
    let rpc_url = http_url("rpcUrl", spec.rpc_url)?;
    let chain = match spec.network.as_deref().unwrap_or("mainnet") {
        "mainnet" | "main" => "main",
        "testnet" | "test" => "test",
        "signet" => "signet",
        "regtest" => "regtest",
        _ => return Err("network must be mainnet, testnet, signet or regtest".into()),
    }
    .to_string();
    let confirmations = spec.confirmations.map_or(1, |Flex(c)| c);
    if confirmations > 10_000 {
        return Err("confirmations must be at most 10000".into());
    }
    let fee_rate = spec.fee_rate.map(|Flex(f)| f);
    if fee_rate.is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= 10_000.0)) {
        return Err("feeRate must be between 0 and 10000 sat/vB".into());
    }
    let poll_interval = poll("pollInterval", spec.poll_interval, Duration::from_secs(30))?;
    let (rpc_url, url_auth) = split_userinfo(&rpc_url);
    let explicit = match (spec.rpc_user, spec.rpc_password, spec.rpc_password_file, spec.cookie_file) {
        (Some(user), Some(pw), None, None) => Some(BtcAuth::UserPassword { user, password: Secret::new(pw) }),
        (Some(user), None, Some(f), None) => {
            let path = relative_to(&ctx.root, &f);
            let pw = read_text(&path, "rpcPasswordFile")?;
            Some(BtcAuth::UserPassword { user, password: Secret::new(pw.trim()) })
        }
        (None, None, None, Some(c)) => Some(BtcAuth::Cookie(relative_to(&ctx.root, &c))),
        (None, None, None, None) => None,
        _ => return Err("give either rpcUser with one of rpcPassword / rpcPasswordFile, or cookieFile alone".into()),
    };
    let Some(auth) = explicit.or(url_auth) else {
        return Ok(Entry::Unusable(
            "no RPC credentials: set rpcUser with rpcPassword (or rpcPasswordFile), or cookieFile, or put user:password@ in rpcUrl".into(),
        ));
    };
    Ok(Entry::Ready(BtcTarget {
        rpc_url: Endpoint::new(rpc_url),
        chain,
        confirmations,
        auth,
        wallet: spec.wallet,
        fee_rate,
        poll_interval,
    }))
}

/// Takes `user:password@` out of a URL (bitcoind URLs often carry it), so the URL can be
/// shown and the password kept secret.
fn split_userinfo(url: &str) -> (String, Option<BtcAuth>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let auth =
                BtcAuth::UserPassword { user: percent_decode(user), password: Secret::new(percent_decode(password)) };
            (format!("{scheme}://{host}{path}"), Some(auth))
        }
        None => (url.to_string(), None),
    }
}

fn tsa_target(spec: TsaSpec, ctx: &LoadContext) -> Result<Entry<TsaTarget>, String> {
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
    let timeout = spec.timeout.map(|t| parse_duration_unquoted(&t).map_err(|e| format!("timeout {e}"))).transpose()?;
    Ok(Entry::Ready(TsaTarget {
        url: Endpoint::new(url),
        policy_oid,
        trust_bundle: spec.trust_bundle.map(|p| relative_to(&ctx.root, &p)),
        timeout,
    }))
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

    /// The entry `target` resolves to:
    ///
    /// - `exec:<name>` → `exec.<name>`;
    /// - `eip155:<chain id>` → the entry named by the chain id (`eip155."8453"`), else the
    ///   entry whose `chainId` is that id, else `eip155.default` (whose `chainId`, if set,
    ///   must match);
    /// - `btc:<name>` → `btc.<name>`, else `btc.default`;
    /// - `rfc3161:<name>` → `rfc3161.<name>`, else `rfc3161.default`.
    pub fn resolve(&self, target: &Target) -> Result<Resolved<'_>, String> {
        match target.scheme {
            Scheme::Local => Ok(Resolved::Local),
            Scheme::Exec => exec_entry(&self.exec, target).map(|(n, t)| Resolved::Exec(n, t)),
            Scheme::Eip155 => evm_entry(&self.eip155, target).map(|(n, t)| Resolved::Evm(n, t)),
            Scheme::Btc => named_or_default("btc", &self.btc, target).map(|(n, t)| Resolved::Btc(n, t)),
            Scheme::Rfc3161 => named_or_default("rfc3161", &self.rfc3161, target).map(|(n, t)| Resolved::Tsa(n, t)),
        }
    }

    /// Every secret of every usable entry. Text from any target is cleaned of all of them,
    /// not only of its own: an exec command inherits the scheduler's environment, where the
    /// other targets' keys and passwords often live.
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
            Resolved::Tsa(name, t) => t.check(name),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetCatalog;

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
