//! Process settings from environment variables (and `.env`), with command-line overrides.
//!
//! Each setting is defined once, in [`SETTINGS`]: its variable, its flag, its default, the
//! values it takes, its meaning and the subcommands that read it. The parsing, the flags and
//! their `--help` come from that definition, and tests hold the settings table of
//! docs/CONFIGURATION.md, `.env.example` and the deployment files to it.
//!
//! The variables are read here, not by clap: each subcommand reads only the settings it uses
//! (a value meant for the service must not stop a `validate`), a blank variable counts as
//! unset, and an error reads `NAME="value": reason`.
//!
//! Defaults for file locations hang off `VMSH_ROOT`; a path given explicitly is taken as
//! written (relative to the working directory), like any other Unix tool.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::metrics::fleet::{FleetPolicy, ModeSetting};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default; for log collectors).
    Json,
    /// Human-readable lines for a terminal.
    Text,
}

/// Log severity threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation (default).
    Info,
    /// Problems that the scheduler handles.
    Warn,
    /// Problems that need an operator.
    Error,
}

/// Everything the process needs to know before it reads its YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Working root: batches are read from and receipts and journals written under it.
    pub root: PathBuf,
    /// The namespaces YAML.
    pub namespaces_path: PathBuf,
    /// The targets YAML, if any.
    pub anchors_path: Option<PathBuf>,
    /// The state file.
    pub state_path: PathBuf,
    /// How often the config files are re-read and hashed.
    pub tick: Duration,
    /// Address the HTTP server binds to.
    pub bind: IpAddr,
    /// Port for /metrics, /health and the probes (0 picks a free one).
    pub port: u16,
    /// Base of the φ-backoff, in seconds.
    pub base_backoff_secs: f64,
    /// Highest backoff level k.
    pub max_backoff: u32,
    /// Log threshold.
    pub log_level: LogLevel,
    /// Log format.
    pub log_format: LogFormat,
    /// Jobs of a target whose entry sets no `concurrency` that may run at once; its scheme's
    /// default when `None`.
    pub anchor_workers: Option<usize>,
    /// Time limit of one anchor job.
    pub anchor_timeout: Duration,
    /// How long SIGTERM waits for running anchors.
    pub shutdown_grace: Duration,
    /// How long one batch read may take before it is given up, or left behind if it blocks.
    pub batch_read_timeout: Duration,
    /// Whether the anchor duration histogram carries a `namespace` label (off for large
    /// fleets: it is most of the series).
    pub namespace_histograms: bool,
    /// When /metrics runs in fleet mode, and how many namespaces in trouble it shows then.
    pub fleet: FleetPolicy,
    /// Cluster mode: replicas sharing the namespaces through etcd; `None` runs the single
    /// process on the state file.
    pub cluster: Option<ClusterSettings>,
    /// The admin API's token file; `None` turns the admin API off.
    pub admin_token_file: Option<PathBuf>,
    /// How long a pause may last before `vmsh_pause_alert_after_seconds` says it is old.
    pub pause_alert_after: Duration,
    /// The environment, for `${VAR}` references in the targets file (values never printed).
    pub vars: super::vars::Vars,
}

/// Cluster mode's settings (`VMSH_ETCD_*`, `VMSH_NODE_ID`): there when `VMSH_ETCD_ENDPOINTS`
/// is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// Where the scheduler's keys live in etcd.
    pub prefix: String,
    /// This replica's name among the members; `None` for the host name.
    pub node_id: Option<String>,
    /// The member lease's TTL, in seconds.
    pub lease_ttl_s: u64,
    /// PEM bundle of the CAs that sign etcd's certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for etcd's client-certificate authentication.
    pub cert_file: Option<PathBuf>,
    /// Its PEM private key.
    pub key_file: Option<PathBuf>,
    /// The etcd user, when etcd's authentication is on.
    pub user: Option<String>,
    /// The file holding that user's password.
    pub password_file: Option<PathBuf>,
}

impl Settings {
    /// What loading the config files needs.
    pub fn load_context(&self) -> super::LoadContext {
        super::LoadContext { vars: self.vars.clone(), root: self.root.clone() }
    }
}

/// Flag values, which take precedence over the environment: the text of each flag given, by
/// the variable it overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides(BTreeMap<&'static str, OsString>);

impl Overrides {
    /// Sets the setting of variable `var` to `value`, as its flag does.
    pub fn set(&mut self, var: &'static str, value: impl Into<OsString>) {
        self.0.insert(var, value.into());
    }

    /// The value given for the setting of variable `var`.
    pub fn get(&self, var: &str) -> Option<&OsStr> {
        self.0.get(var).map(OsString::as_os_str)
    }
}

/// A setting that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct SettingsError {
    /// The variable or flag.
    pub name: String,
    /// Its value.
    pub value: String,
    /// What is expected instead.
    pub reason: String,
}

/// A subcommand, as far as settings go: each one reads only the settings it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The service: `run`, or no subcommand at all.
    Run,
    Validate,
    Verify,
    Status,
    /// `migrate-state`: moves the state between the state file and etcd.
    MigrateState,
}

impl Reader {
    /// The subcommand as typed.
    pub fn name(self) -> &'static str {
        match self {
            Reader::Run => "run",
            Reader::Validate => "validate",
            Reader::Verify => "verify",
            Reader::Status => "status",
            Reader::MigrateState => "migrate-state",
        }
    }
}

/// The flag that overrides a setting's variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// Its name without the leading `--`.
    pub long: &'static str,
    /// What `--help` calls its value.
    pub value_name: &'static str,
}

/// What a setting is when neither its flag nor its variable gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// This text, read as if the variable were set to it.
    Text(&'static str),
    /// This path under the working root.
    UnderRoot(&'static str),
    /// This path under the working root if a file is there; otherwise none.
    UnderRootIfPresent(&'static str),
}

impl fmt::Display for DefaultValue {
    /// The default as the docs write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::Text(text) => f.write_str(text),
            DefaultValue::UnderRoot(path) => write!(f, "$VMSH_ROOT/{path}"),
            DefaultValue::UnderRootIfPresent(path) => write!(f, "$VMSH_ROOT/{path} if present"),
        }
    }
}

/// What every setting states about itself, whatever the type of its value: what the flags,
/// their `--help`, the docs' settings table and `.env.example` are made from.
pub trait Definition: Sync {
    /// The environment variable.
    fn var(&self) -> &'static str;
    /// The flag that overrides the variable, if there is one.
    fn flag(&self) -> Option<Flag>;
    /// What the setting is when it is not given.
    fn default_value(&self) -> DefaultValue;
    /// The values it takes, in words ("a whole number from 0 to 65535").
    fn accepts(&self) -> String;
    /// What it means, in one line.
    fn meaning(&self) -> &'static str;
    /// The subcommands that read it.
    fn read_by(&self) -> &'static [Reader];
    /// Why `text` is no value of this setting, if it is none.
    fn check(&self, text: &str) -> Result<(), String>;
    /// Whether the value is a path, taken as given (even when it is not UTF-8).
    fn is_path(&self) -> bool;
}

/// One setting, and the kind of value it takes.
#[derive(Debug)]
struct Setting<K> {
    var: &'static str,
    flag: Option<Flag>,
    default: DefaultValue,
    kind: K,
    meaning: &'static str,
    read_by: &'static [Reader],
}

/// A kind of value: what text it takes and what that text becomes.
trait Kind: Sync {
    type Value;
    /// The value `text` stands for, or why it stands for none (the reason of a
    /// [`SettingsError`]).
    fn parse(&self, text: &str) -> Result<Self::Value, String>;
    /// The values it takes, in words.
    fn describe(&self) -> String;
    /// Whether the value is a path (see [`Definition::is_path`]).
    fn is_path(&self) -> bool {
        false
    }
}

/// A file or folder, taken as written.
#[derive(Debug)]
struct FilePath;

/// A whole number in `min..=max`.
#[derive(Debug)]
struct WholeNumber<T> {
    min: T,
    max: T,
}

/// A value of kind `K`, or none when empty.
#[derive(Debug)]
struct OrUnset<K>(K);

/// A number of seconds in `min..=max`, fractions allowed.
#[derive(Debug)]
struct Seconds {
    min: f64,
    max: f64,
}

/// An IP address.
#[derive(Debug)]
struct IpAddress;

/// One of a few words, in any case; `aliases` are taken too but not offered.
#[derive(Debug)]
struct OneOf<T: 'static> {
    words: &'static [(&'static str, T)],
    aliases: &'static [(&'static str, T)],
}

/// Comma-separated `http://` or `https://` URLs; none at all is a value too.
#[derive(Debug)]
struct UrlList;

/// A name: letters, digits, `-`, `_` and `.`, up to 128 of them; empty is a value too.
#[derive(Debug)]
struct Name;

/// An etcd key prefix: starts with `/`, no blanks.
#[derive(Debug)]
struct KeyPrefix;

const RUN: &[Reader] = &[Reader::Run];
const RUN_AND_STATUS: &[Reader] = &[Reader::Run, Reader::Status];
/// The state file and how to reach etcd: what `migrate-state` moves the state between.
const RUN_AND_MIGRATE: &[Reader] = &[Reader::Run, Reader::MigrateState];
/// Cluster mode's settings: `verify` reads them too, for a receipt written in cluster mode.
const ETCD_READERS: &[Reader] = &[Reader::Run, Reader::Verify, Reader::MigrateState];

const ROOT: Setting<FilePath> = Setting {
    var: "VMSH_ROOT",
    flag: Some(Flag { long: "root", value_name: "DIR" }),
    default: DefaultValue::Text("."),
    kind: FilePath,
    meaning: "working root: batches in out/batches, receipts in out/anchors, journals in out/journal",
    read_by: &[Reader::Run, Reader::Validate, Reader::Verify, Reader::MigrateState],
};
const NAMESPACES: Setting<FilePath> = Setting {
    var: "VMSH_NAMESPACES",
    flag: Some(Flag { long: "namespaces", value_name: "FILE" }),
    default: DefaultValue::UnderRoot("vmsh/config/namespaces.yaml"),
    kind: FilePath,
    meaning: "namespaces YAML",
    read_by: &[Reader::Run, Reader::Validate],
};
const ANCHORS: Setting<FilePath> = Setting {
    var: "VMSH_ANCHORS",
    flag: Some(Flag { long: "anchors", value_name: "FILE" }),
    default: DefaultValue::UnderRootIfPresent("vmsh/config/anchors.yaml"),
    kind: FilePath,
    meaning: "targets YAML (exec commands, network targets)",
    read_by: &[Reader::Run, Reader::Validate, Reader::Verify],
};
const STATE: Setting<FilePath> = Setting {
    var: "VMSH_STATE",
    flag: Some(Flag { long: "state", value_name: "FILE" }),
    default: DefaultValue::UnderRoot("vmsh/state/scheduler.json"),
    kind: FilePath,
    meaning: "state file",
    read_by: RUN_AND_MIGRATE,
};
const TICK_MS: Setting<WholeNumber<u64>> = Setting {
    var: "VMSH_TICK_MS",
    flag: None,
    default: DefaultValue::Text("10000"),
    kind: WholeNumber { min: 10, max: u64::MAX },
    meaning: "how often the config files are re-read and their SHA-256 compared (ms)",
    read_by: RUN,
};
const PORT: Setting<WholeNumber<u16>> = Setting {
    var: "METRICS_PORT",
    flag: Some(Flag { long: "port", value_name: "PORT" }),
    default: DefaultValue::Text("9090"),
    kind: WholeNumber { min: 0, max: u16::MAX },
    meaning: "HTTP port for /metrics, /health, /livez, /readyz (0 = any free port)",
    read_by: RUN_AND_STATUS,
};
const HOST: Setting<IpAddress> = Setting {
    var: "METRICS_HOST",
    flag: Some(Flag { long: "bind", value_name: "ADDR" }),
    default: DefaultValue::Text("0.0.0.0"),
    kind: IpAddress,
    meaning: "HTTP bind address",
    read_by: RUN_AND_STATUS,
};
const BASE_BACKOFF: Setting<Seconds> = Setting {
    var: "VMSH_BASE_BACKOFF",
    flag: None,
    default: DefaultValue::Text("5"),
    kind: Seconds { min: 0.001, max: 86_400.0 },
    meaning: "φ-backoff base",
    read_by: RUN,
};
const MAX_BACKOFF: Setting<WholeNumber<u32>> = Setting {
    var: "VMSH_MAX_BACKOFF",
    flag: None,
    default: DefaultValue::Text("7"),
    kind: WholeNumber { min: 0, max: 30 },
    meaning: "highest backoff level k",
    read_by: RUN,
};
const ANCHOR_WORKERS: Setting<OrUnset<WholeNumber<u32>>> = Setting {
    var: "VMSH_ANCHOR_WORKERS",
    flag: None,
    default: DefaultValue::Text(""),
    kind: OrUnset(WholeNumber { min: 1, max: 4096 }),
    meaning: "jobs of one target that may run at once, for targets whose entry sets no concurrency; empty: each scheme's default",
    read_by: RUN,
};
const ANCHOR_TIMEOUT: Setting<Seconds> = Setting {
    var: "VMSH_ANCHOR_TIMEOUT_S",
    flag: None,
    default: DefaultValue::Text("120"),
    kind: Seconds { min: 0.01, max: 86_400.0 },
    meaning: "time limit of one anchor job",
    read_by: RUN,
};
const SHUTDOWN_GRACE: Setting<Seconds> = Setting {
    var: "VMSH_SHUTDOWN_GRACE_S",
    flag: None,
    default: DefaultValue::Text("20"),
    kind: Seconds { min: 0.0, max: 3_600.0 },
    meaning: "how long SIGTERM waits for running anchors",
    read_by: RUN,
};
const BATCH_READ_TIMEOUT: Setting<Seconds> = Setting {
    var: "VMSH_BATCH_READ_TIMEOUT_S",
    flag: None,
    default: DefaultValue::Text("30"),
    kind: Seconds { min: 0.01, max: 3_600.0 },
    meaning: "time limit of one batch read; a read blocked longer is left behind",
    read_by: RUN,
};
const METRICS_MODE: Setting<OneOf<ModeSetting>> = Setting {
    var: "VMSH_METRICS_MODE",
    flag: None,
    default: DefaultValue::Text("auto"),
    kind: OneOf {
        words: &[("auto", ModeSetting::Auto), ("namespaces", ModeSetting::Namespaces), ("fleet", ModeSetting::Fleet)],
        aliases: &[],
    },
    meaning: "fleet: /metrics sums counters by cadence and target and keeps per-namespace series only for namespaces not ok; auto: fleet above VMSH_METRICS_FLEET_ABOVE namespaces",
    read_by: RUN,
};
const METRICS_FLEET_ABOVE: Setting<WholeNumber<u32>> = Setting {
    var: "VMSH_METRICS_FLEET_ABOVE",
    flag: None,
    default: DefaultValue::Text("1000"),
    kind: WholeNumber { min: 0, max: u32::MAX },
    meaning: "with VMSH_METRICS_MODE=auto, fleet mode runs above this many namespaces",
    read_by: RUN,
};
const METRICS_TROUBLED_MAX: Setting<WholeNumber<u32>> = Setting {
    var: "VMSH_METRICS_TROUBLED_MAX",
    flag: None,
    default: DefaultValue::Text("500"),
    kind: WholeNumber { min: 0, max: 100_000 },
    meaning: "in fleet mode, the most namespaces not ok whose own series /metrics writes (the worst first)",
    read_by: RUN,
};
const NAMESPACE_HISTOGRAMS: Setting<OneOf<bool>> = Setting {
    var: "VMSH_METRICS_NAMESPACE_HISTOGRAMS",
    flag: None,
    default: DefaultValue::Text("true"),
    kind: OneOf {
        words: &[("true", true), ("false", false)],
        aliases: &[("1", true), ("yes", true), ("0", false), ("no", false)],
    },
    meaning: "false drops the namespace label from vmsh_anchor_duration_seconds (large fleets)",
    read_by: RUN,
};
const ADMIN_TOKEN_FILE: Setting<FilePath> = Setting {
    var: "VMSH_ADMIN_TOKEN_FILE",
    flag: None,
    default: DefaultValue::Text(""),
    kind: FilePath,
    meaning: "bearer tokens of the admin API (/admin/v1/), one per line, bare or NAME=TOKEN; empty: the admin API is off",
    read_by: RUN,
};
const PAUSE_ALERT_AFTER: Setting<Seconds> = Setting {
    var: "VMSH_PAUSE_ALERT_AFTER_S",
    flag: None,
    default: DefaultValue::Text("86400"),
    kind: Seconds { min: 1.0, max: 31_536_000.0 },
    meaning: "age of a pause after which the VmshCadencePausedTooLong alert fires (exported as vmsh_pause_alert_after_seconds)",
    read_by: RUN,
};
const LOG_LEVEL: Setting<OneOf<LogLevel>> = Setting {
    var: "LOG_LEVEL",
    flag: Some(Flag { long: "log-level", value_name: "LEVEL" }),
    default: DefaultValue::Text("info"),
    kind: OneOf {
        words: &[
            ("trace", LogLevel::Trace),
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("error", LogLevel::Error),
        ],
        aliases: &[("warning", LogLevel::Warn)],
    },
    meaning: "log threshold",
    read_by: RUN,
};
const LOG_FORMAT: Setting<OneOf<LogFormat>> = Setting {
    var: "LOG_FORMAT",
    flag: Some(Flag { long: "log-format", value_name: "FORMAT" }),
    default: DefaultValue::Text("json"),
    kind: OneOf {
        words: &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        aliases: &[("pretty", LogFormat::Text)],
    },
    meaning: "log format (json writes one object per line)",
    read_by: RUN,
};

const ETCD_ENDPOINTS: Setting<UrlList> = Setting {
    var: "VMSH_ETCD_ENDPOINTS",
    flag: None,
    default: DefaultValue::Text(""),
    kind: UrlList,
    meaning: "etcd client URLs; set, replicas share the namespaces through etcd (cluster mode) and VMSH_STATE is not used",
    read_by: ETCD_READERS,
};
const ETCD_PREFIX: Setting<KeyPrefix> = Setting {
    var: "VMSH_ETCD_PREFIX",
    flag: None,
    default: DefaultValue::Text("/vmsh-scheduler/"),
    kind: KeyPrefix,
    meaning: "where the scheduler's keys live in etcd; one prefix per cluster of replicas",
    read_by: ETCD_READERS,
};
const NODE_ID: Setting<Name> = Setting {
    var: "VMSH_NODE_ID",
    flag: None,
    default: DefaultValue::Text(""),
    kind: Name,
    meaning: "this replica's name among the members (empty: the host name); unique per replica",
    read_by: ETCD_READERS,
};
const ETCD_LEASE_TTL: Setting<WholeNumber<u64>> = Setting {
    var: "VMSH_ETCD_LEASE_TTL_S",
    flag: None,
    default: DefaultValue::Text("10"),
    kind: WholeNumber { min: 3, max: 600 },
    meaning: "member lease TTL (s): a replica that stops renewing loses its namespaces this long after",
    read_by: ETCD_READERS,
};
const ETCD_CA_FILE: Setting<FilePath> = Setting {
    var: "VMSH_ETCD_CA_FILE",
    flag: None,
    default: DefaultValue::Text(""),
    kind: FilePath,
    meaning: "PEM bundle of the CAs that sign etcd's certificates (https endpoints)",
    read_by: ETCD_READERS,
};
const ETCD_CERT_FILE: Setting<FilePath> = Setting {
    var: "VMSH_ETCD_CERT_FILE",
    flag: None,
    default: DefaultValue::Text(""),
    kind: FilePath,
    meaning: "PEM client certificate for etcd (with VMSH_ETCD_KEY_FILE)",
    read_by: ETCD_READERS,
};
const ETCD_KEY_FILE: Setting<FilePath> = Setting {
    var: "VMSH_ETCD_KEY_FILE",
    flag: None,
    default: DefaultValue::Text(""),
    kind: FilePath,
    meaning: "PEM private key of VMSH_ETCD_CERT_FILE",
    read_by: ETCD_READERS,
};
const ETCD_USER: Setting<Name> = Setting {
    var: "VMSH_ETCD_USER",
    flag: None,
    default: DefaultValue::Text(""),
    kind: Name,
    meaning: "etcd user, when etcd's authentication is on (with VMSH_ETCD_PASSWORD_FILE)",
    read_by: ETCD_READERS,
};
const ETCD_PASSWORD_FILE: Setting<FilePath> = Setting {
    var: "VMSH_ETCD_PASSWORD_FILE",
    flag: None,
    default: DefaultValue::Text(""),
    kind: FilePath,
    meaning: "file holding VMSH_ETCD_USER's password (its first line)",
    read_by: ETCD_READERS,
};

/// Every setting, in the order the service reads them (and so reports the first bad one):
/// the one definition the parsing, the flags, `--help`, the docs' settings table and
/// `.env.example` follow.
pub const SETTINGS: &[&dyn Definition] = &[
    &ROOT,
    &NAMESPACES,
    &ANCHORS,
    &STATE,
    &TICK_MS,
    &PORT,
    &HOST,
    &BASE_BACKOFF,
    &MAX_BACKOFF,
    &ANCHOR_WORKERS,
    &ANCHOR_TIMEOUT,
    &SHUTDOWN_GRACE,
    &BATCH_READ_TIMEOUT,
    &NAMESPACE_HISTOGRAMS,
    &METRICS_MODE,
    &METRICS_FLEET_ABOVE,
    &METRICS_TROUBLED_MAX,
    &ETCD_ENDPOINTS,
    &ETCD_PREFIX,
    &NODE_ID,
    &ETCD_LEASE_TTL,
    &ETCD_CA_FILE,
    &ETCD_CERT_FILE,
    &ETCD_KEY_FILE,
    &ETCD_USER,
    &ETCD_PASSWORD_FILE,
    &ADMIN_TOKEN_FILE,
    &PAUSE_ALERT_AFTER,
    &LOG_LEVEL,
    &LOG_FORMAT,
];

/// The setting of variable `var`.
pub fn setting(var: &str) -> Option<&'static dyn Definition> {
    SETTINGS.iter().copied().find(|s| s.var() == var)
}

impl<K: Kind> Definition for Setting<K> {
    fn var(&self) -> &'static str {
        self.var
    }
    fn flag(&self) -> Option<Flag> {
        self.flag
    }
    fn default_value(&self) -> DefaultValue {
        self.default
    }
    fn accepts(&self) -> String {
        self.kind.describe()
    }
    fn meaning(&self) -> &'static str {
        self.meaning
    }
    fn read_by(&self) -> &'static [Reader] {
        self.read_by
    }
    fn check(&self, text: &str) -> Result<(), String> {
        self.kind.parse(text).map(drop)
    }
    fn is_path(&self) -> bool {
        self.kind.is_path()
    }
}

impl<K: Kind> Setting<K> {
    /// The value: the flag's, else the variable's, else the default. An error names where the
    /// bad text came from: the flag or the variable.
    fn read(&self, env: &HashMap<String, String>, flags: &Overrides) -> Result<K::Value, SettingsError> {
        let (name, text) = match (flags.get(self.var), lookup(env, self.var)) {
            (Some(given), _) => {
                let flag = self.flag.map_or_else(|| self.var.to_string(), |f| format!("--{}", f.long));
                (flag, given.to_string_lossy().into_owned())
            }
            (None, Some(value)) => (self.var.to_string(), value.to_string()),
            (None, None) => (self.var.to_string(), self.default.to_string()),
        };
        self.kind.parse(&text).map_err(|reason| SettingsError { name, value: text, reason })
    }
}

impl Setting<FilePath> {
    /// The path given (by the flag, else the variable), else the default under `root`; none
    /// when the default is a file that is not there.
    fn path(&self, env: &HashMap<String, String>, flags: &Overrides, root: &Path) -> Option<PathBuf> {
        let given = flags.get(self.var).map(PathBuf::from).or_else(|| lookup(env, self.var).map(PathBuf::from));
        given.or_else(|| match self.default {
            DefaultValue::Text(path) => Some(PathBuf::from(path)),
            DefaultValue::UnderRoot(path) => Some(root.join(path)),
            DefaultValue::UnderRootIfPresent(path) => Some(root.join(path)).filter(|p| p.exists()),
        })
    }
}

impl Kind for FilePath {
    type Value = PathBuf;
    fn parse(&self, text: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(text))
    }
    fn describe(&self) -> String {
        "a path".into()
    }
    fn is_path(&self) -> bool {
        true
    }
}

impl<T> Kind for WholeNumber<T>
where
    T: Copy + Into<u64> + TryFrom<u64> + fmt::Display + Sync,
{
    type Value = T;
    /// "out of range" for a number outside `min..=max`, "not a whole number" for anything else.
    fn parse(&self, text: &str) -> Result<T, String> {
        let range = || format!("out of range: must be between {} and {}", self.min, self.max);
        let text = text.trim();
        let digits = text.strip_prefix('+').unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            // All digits: either in range, or too large for any integer of ours.
            let n = digits.parse::<u64>().ok().filter(|n| (self.min.into()..=self.max.into()).contains(n));
            return n.and_then(|n| T::try_from(n).ok()).ok_or_else(range);
        }
        if text.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) {
            return Err(range());
        }
        Err("not a whole number".into())
    }
    fn describe(&self) -> String {
        if self.max.into() == u64::MAX {
            format!("a whole number of at least {}", self.min)
        } else {
            format!("a whole number from {} to {}", self.min, self.max)
        }
    }
}

impl<K: Kind> Kind for OrUnset<K> {
    type Value = Option<K::Value>;
    fn parse(&self, text: &str) -> Result<Option<K::Value>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        self.0.parse(text).map(Some)
    }
    fn describe(&self) -> String {
        format!("{}, or empty", self.0.describe())
    }
}

impl Kind for Seconds {
    type Value = f64;
    fn parse(&self, text: &str) -> Result<f64, String> {
        let n: f64 = text.trim().parse().map_err(|_| "not a number of seconds".to_string())?;
        if !n.is_finite() || !(self.min..=self.max).contains(&n) {
            return Err(format!("out of range: must be between {} and {} seconds", self.min, self.max));
        }
        Ok(n)
    }
    fn describe(&self) -> String {
        format!("seconds from {} to {}, fractions allowed", self.min, self.max)
    }
}

impl Kind for UrlList {
    type Value = Vec<String>;
    fn parse(&self, text: &str) -> Result<Vec<String>, String> {
        let mut urls = Vec::new();
        for url in text.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let lower = url.to_ascii_lowercase();
            let rest = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://"));
            let authority = rest.map(|r| r.split('/').next().unwrap_or_default());
            if authority.is_some_and(|a| a.contains('@')) {
                return Err(format!(
                    "URL {} holds credentials; give them in VMSH_ETCD_USER and VMSH_ETCD_PASSWORD_FILE",
                    urls.len() + 1
                ));
            }
            match rest {
                Some(host) if !host.is_empty() && !host.starts_with('/') => urls.push(url.to_string()),
                // The URL itself may hold a password: the reason names its position only.
                _ => return Err(format!("URL {} is not an http:// or https:// URL", urls.len() + 1)),
            }
        }
        Ok(urls)
    }
    fn describe(&self) -> String {
        "comma-separated http:// or https:// URLs".into()
    }
}

impl Kind for Name {
    type Value = Option<String>;
    fn parse(&self, text: &str) -> Result<Option<String>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > 128 || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err("expected up to 128 letters, digits, '-', '_' or '.'".into());
        }
        Ok(Some(text.to_string()))
    }
    fn describe(&self) -> String {
        "a name of letters, digits, -, _ and .".into()
    }
}

impl Kind for KeyPrefix {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        let text = text.trim();
        if !text.starts_with('/') || text.len() > 256 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("expected a key prefix starting with /, without blanks, up to 256 bytes".into());
        }
        Ok(if text.ends_with('/') { text.to_string() } else { format!("{text}/") })
    }
    fn describe(&self) -> String {
        "a key prefix starting with /".into()
    }
}

impl Kind for IpAddress {
    type Value = IpAddr;
    fn parse(&self, text: &str) -> Result<IpAddr, String> {
        text.parse().map_err(|_| "expected an IP address such as 0.0.0.0 or 127.0.0.1".to_string())
    }
    fn describe(&self) -> String {
        "an IP address".into()
    }
}

impl<T: Copy + Sync> Kind for OneOf<T> {
    type Value = T;
    fn parse(&self, text: &str) -> Result<T, String> {
        let text = text.to_ascii_lowercase();
        let found = self.words.iter().chain(self.aliases).find(|(word, _)| *word == text);
        found.map(|&(_, value)| value).ok_or_else(|| format!("expected {}", self.describe()))
    }
    /// The words, as "a, b or c".
    fn describe(&self) -> String {
        let words: Vec<&str> = self.words.iter().map(|&(word, _)| word).collect();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.concat(),
        }
    }
}

/// Where the files are: what every subcommand but `status` needs, and nothing that can be
/// invalid (a path is taken as written).
#[derive(Debug, Clone, PartialEq)]
pub struct Paths {
    /// Working root (`VMSH_ROOT`).
    pub root: PathBuf,
    /// The namespaces YAML (`VMSH_NAMESPACES`).
    pub namespaces: PathBuf,
    /// The targets YAML (`VMSH_ANCHORS`), if any.
    pub anchors: Option<PathBuf>,
    /// The state file (`VMSH_STATE`).
    pub state: PathBuf,
}

impl Paths {
    /// The file locations from the environment and the flags.
    pub fn from_env(env: &HashMap<String, String>, o: &Overrides) -> Paths {
        // Only VMSH_ANCHORS may be absent: the other defaults are locations, not files that
        // may or may not be there.
        let root = ROOT.path(env, o, Path::new("")).unwrap_or_default();
        let namespaces = NAMESPACES.path(env, o, &root).unwrap_or_default();
        let anchors = ANCHORS.path(env, o, &root);
        let state = STATE.path(env, o, &root).unwrap_or_default();
        Paths { root, namespaces, anchors, state }
    }

    /// What loading the config files needs: the root and the environment for `${VAR}`.
    pub fn load_context(&self, env: &HashMap<String, String>) -> super::LoadContext {
        super::LoadContext { vars: vars(env), root: self.root.clone() }
    }
}

/// The HTTP address (`METRICS_HOST`, `METRICS_PORT`): what `run` listens on and `status` asks.
pub fn listen_addr(env: &HashMap<String, String>, o: &Overrides) -> Result<(IpAddr, u16), SettingsError> {
    let port = PORT.read(env, o)?;
    let bind = HOST.read(env, o)?;
    Ok((bind, port))
}

impl Settings {
    /// Builds the service's settings from environment variables and command-line overrides.
    pub fn from_env(env: &HashMap<String, String>, o: &Overrides) -> Result<Settings, SettingsError> {
        let Paths { root, namespaces: namespaces_path, anchors: anchors_path, state: state_path } =
            Paths::from_env(env, o);
        let tick = Duration::from_millis(TICK_MS.read(env, o)?);
        let (bind, port) = listen_addr(env, o)?;
        let base_backoff_secs = BASE_BACKOFF.read(env, o)?;
        let max_backoff = MAX_BACKOFF.read(env, o)?;
        let anchor_workers = ANCHOR_WORKERS.read(env, o)?.map(|n| n as usize);
        let anchor_timeout = Duration::from_secs_f64(ANCHOR_TIMEOUT.read(env, o)?);
        let shutdown_grace = Duration::from_secs_f64(SHUTDOWN_GRACE.read(env, o)?);
        let batch_read_timeout = Duration::from_secs_f64(BATCH_READ_TIMEOUT.read(env, o)?);
        let namespace_histograms = NAMESPACE_HISTOGRAMS.read(env, o)?;
        let fleet = FleetPolicy {
            setting: METRICS_MODE.read(env, o)?,
            fleet_above: METRICS_FLEET_ABOVE.read(env, o)? as usize,
            troubled_max: METRICS_TROUBLED_MAX.read(env, o)? as usize,
        };
        let cluster = cluster(env, o)?;
        let admin_token_file = ADMIN_TOKEN_FILE.path(env, o, Path::new("")).filter(|p| !p.as_os_str().is_empty());
        let pause_alert_after = Duration::from_secs_f64(PAUSE_ALERT_AFTER.read(env, o)?);
        let (log_level, log_format) = logging(env, o)?;
        Ok(Settings {
            root,
            namespaces_path,
            anchors_path,
            state_path,
            tick,
            bind,
            port,
            base_backoff_secs,
            max_backoff,
            log_level,
            log_format,
            anchor_workers,
            anchor_timeout,
            shutdown_grace,
            batch_read_timeout,
            namespace_histograms,
            fleet,
            cluster,
            admin_token_file,
            pause_alert_after,
            vars: vars(env),
        })
    }
}

/// Cluster mode's settings, when `VMSH_ETCD_ENDPOINTS` is set. The others are checked either
/// way, so a typo is caught before the day cluster mode is turned on (and before
/// `migrate-state` prepares the state for it).
pub fn cluster(env: &HashMap<String, String>, o: &Overrides) -> Result<Option<ClusterSettings>, SettingsError> {
    // A URL may carry a password: an error shows each without its credentials.
    let endpoints = ETCD_ENDPOINTS.read(env, o).map_err(|mut e| {
        e.value = e.value.split(',').map(|u| super::vars::display_url(u.trim())).collect::<Vec<_>>().join(",");
        e
    })?;
    let prefix = ETCD_PREFIX.read(env, o)?;
    let node_id = NODE_ID.read(env, o)?;
    let lease_ttl_s = ETCD_LEASE_TTL.read(env, o)?;
    let file = |s: &Setting<FilePath>| s.path(env, o, Path::new("")).filter(|p| !p.as_os_str().is_empty());
    let (ca_file, cert_file, key_file) = (file(&ETCD_CA_FILE), file(&ETCD_CERT_FILE), file(&ETCD_KEY_FILE));
    let user = ETCD_USER.read(env, o)?;
    let password_file = file(&ETCD_PASSWORD_FILE);
    let missing = |needed: &Setting<FilePath>, by: &'static str, value: &Option<PathBuf>| SettingsError {
        name: needed.var.to_string(),
        value: String::new(),
        reason: format!(
            "{by} is set to {}, and needs {} with it",
            value.as_deref().map_or_else(String::new, |p| p.display().to_string()),
            needed.var
        ),
    };
    match (&cert_file, &key_file) {
        (Some(_), None) => return Err(missing(&ETCD_KEY_FILE, ETCD_CERT_FILE.var, &cert_file)),
        (None, Some(_)) => return Err(missing(&ETCD_CERT_FILE, ETCD_KEY_FILE.var, &key_file)),
        _ => {}
    }
    if user.is_some() && password_file.is_none() {
        return Err(SettingsError {
            name: ETCD_PASSWORD_FILE.var.to_string(),
            value: String::new(),
            reason: format!("{} is set, and needs the file with its password", ETCD_USER.var),
        });
    }
    if endpoints.is_empty() {
        return Ok(None);
    }
    Ok(Some(ClusterSettings {
        endpoints,
        prefix,
        node_id,
        lease_ttl_s,
        ca_file,
        cert_file,
        key_file,
        user,
        password_file,
    }))
}

/// The log threshold and format (`LOG_LEVEL`, `LOG_FORMAT`): only the service logs.
pub fn logging(env: &HashMap<String, String>, o: &Overrides) -> Result<(LogLevel, LogFormat), SettingsError> {
    Ok((LOG_LEVEL.read(env, o)?, LOG_FORMAT.read(env, o)?))
}

/// Largest env file read: a few hundred variables take a few kilobytes.
pub const MAX_ENV_FILE_BYTES: u64 = 1024 * 1024;

/// The variables an env file sets, in file order (for a name given twice, the first wins, as
/// the process environment wins over the file). An error names the file and the line, never
/// its text: a malformed line may well hold a secret.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let bytes = crate::fsread::read_regular(path, MAX_ENV_FILE_BYTES).map_err(|e| match e {
        crate::fsread::ReadError::Io(e) => format!("cannot read env file {shown}: {e}"),
        other => format!("cannot read env file {shown}: it {other}"),
    })?;
    let text = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    let line_of = |bad: &str| {
        let at = std::str::from_utf8(text).ok().and_then(|t| t.lines().position(|l| l.trim_end() == bad.trim_end()));
        at.map_or_else(String::new, |i| format!(" on line {}", i + 1))
    };
    let mut seen = std::collections::HashSet::new();
    let mut vars = Vec::new();
    for item in dotenvy::from_read_iter(text) {
        let (key, value) = item.map_err(|e| match e {
            dotenvy::Error::LineParse(line, _) => {
                format!("env file {shown}: cannot parse the entry{}; expected NAME=value", line_of(&line))
            }
            dotenvy::Error::Io(e) => format!("cannot read env file {shown}: {e}"),
            // Neither of these names a value; the crate may add more kinds.
            other => format!("env file {shown}: {other}"),
        })?;
        if key.contains('\0') || value.contains('\0') {
            return Err(format!("env file {shown}: the value of {key:?} holds a NUL byte, which no variable can"));
        }
        if seen.insert(key.clone()) {
            vars.push((key, value));
        }
    }
    Ok(vars)
}

/// A variable's value; an empty or blank one counts as unset, as in the original service.
fn lookup<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
}

fn vars(env: &HashMap<String, String>) -> super::vars::Vars {
    super::vars::Vars::new(env.iter().map(|(k, v)| (k.clone(), v.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_follow_the_original_service() {
        let s = Settings::from_env(&env(&[]), &Overrides::default()).expect("defaults are valid");
        assert_eq!(s.tick, Duration::from_millis(10_000));
        assert_eq!(s.port, 9090);
        assert_eq!(s.base_backoff_secs, 5.0);
        assert_eq!(s.max_backoff, 7);
        assert_eq!(s.anchor_workers, None);
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.namespaces_path, PathBuf::from("./vmsh/config/namespaces.yaml"));
        assert!(s.namespace_histograms);
        let off = env(&[("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false")]);
        assert!(!Settings::from_env(&off, &Overrides::default()).expect("valid").namespace_histograms);
    }

    #[test]
    fn paths_default_under_root_and_flags_override_env() {
        let e = env(&[("VMSH_ROOT", "/srv/vm"), ("METRICS_PORT", "9100"), ("VMSH_STATE", "/var/lib/s.json")]);
        let mut o = Overrides::default();
        o.set("METRICS_PORT", "9200");
        let s = Settings::from_env(&e, &o).expect("valid");
        assert_eq!(s.namespaces_path, PathBuf::from("/srv/vm/vmsh/config/namespaces.yaml"));
        assert_eq!(s.state_path, PathBuf::from("/var/lib/s.json"));
        assert_eq!(s.port, 9200);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("VMSH_TICK_MS", "soon"),
            ("METRICS_PORT", "70000"),
            ("VMSH_BASE_BACKOFF", "-1"),
            ("VMSH_MAX_BACKOFF", "99"),
            ("VMSH_ANCHOR_WORKERS", "0"),
            ("LOG_LEVEL", "loud"),
            ("METRICS_HOST", "localhost:1"),
            ("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "sometimes"),
        ] {
            let e = Settings::from_env(&env(&[(k, v)]), &Overrides::default()).expect_err(k);
            assert_eq!(e.name, k);
            assert!(e.to_string().starts_with(&format!("{k}=")), "{e}");
        }
    }

    #[test]
    fn a_number_outside_its_range_is_reported_as_out_of_range() {
        for (k, v) in [
            ("METRICS_PORT", "70000"),
            ("METRICS_PORT", "99999999999999999999999"),
            ("METRICS_PORT", "-1"),
            ("VMSH_TICK_MS", "0"),
            ("VMSH_MAX_BACKOFF", "31"),
            ("VMSH_ANCHOR_WORKERS", "0"),
            ("VMSH_BASE_BACKOFF", "-1"),
            ("VMSH_SHUTDOWN_GRACE_S", "1e9"),
        ] {
            let e = Settings::from_env(&env(&[(k, v)]), &Overrides::default()).expect_err(k);
            assert!(e.reason.starts_with("out of range: must be between"), "{k}={v}: {e}");
        }
        for (k, v) in [("METRICS_PORT", "80a"), ("METRICS_PORT", "8.5"), ("VMSH_TICK_MS", "soon")] {
            let e = Settings::from_env(&env(&[(k, v)]), &Overrides::default()).expect_err(k);
            assert_eq!(e.reason, "not a whole number", "{k}={v}");
        }
        let port = Settings::from_env(&env(&[("METRICS_PORT", " 65535 ")]), &Overrides::default()).expect("valid");
        assert_eq!(port.port, 65535);
    }

    #[test]
    fn every_documented_default_reads_as_the_value_the_service_uses_when_the_setting_is_unset() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        // The targets file's default counts only where there is such a file.
        std::fs::create_dir_all(root.join("vmsh/config")).expect("mkdir");
        std::fs::write(root.join("vmsh/config/anchors.yaml"), "").expect("write");
        let under_root = env(&[("VMSH_ROOT", root.to_str().expect("utf-8 path"))]);
        for s in SETTINGS {
            // VMSH_ROOT itself is compared with no root given at all.
            let unset = if s.var() == "VMSH_ROOT" { env(&[]) } else { under_root.clone() };
            let default = Settings::from_env(&unset, &Overrides::default()).expect("the defaults are valid");
            let documented = match s.default_value() {
                DefaultValue::Text(text) => text.to_string(),
                DefaultValue::UnderRoot(path) | DefaultValue::UnderRootIfPresent(path) => {
                    root.join(path).to_str().expect("utf-8 path").to_string()
                }
            };
            let mut by_var = unset.clone();
            by_var.insert(s.var().to_string(), documented.clone());
            let read = Settings::from_env(&by_var, &Overrides::default())
                .unwrap_or_else(|e| panic!("{}={documented:?}: {e}", s.var()));
            assert_eq!(Settings { vars: default.vars.clone(), ..read }, default, "{}={documented:?}", s.var());
            let mut by_flag = Overrides::default();
            by_flag.set(s.var(), documented.clone());
            let read = Settings::from_env(&unset, &by_flag).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read, default, "the flag of {} set to {documented:?}", s.var());
        }
    }

    #[test]
    fn cluster_mode_is_on_only_with_endpoints_and_its_settings_are_checked_either_way() {
        let o = Overrides::default();
        assert_eq!(Settings::from_env(&env(&[]), &o).expect("defaults").cluster, None);
        let on = Settings::from_env(&env(&[("VMSH_ETCD_ENDPOINTS", "http://e1:2379, https://e2:2379")]), &o)
            .expect("valid")
            .cluster
            .expect("cluster mode");
        assert_eq!(on.endpoints, ["http://e1:2379", "https://e2:2379"]);
        assert_eq!((on.prefix.as_str(), on.lease_ttl_s, on.node_id), ("/vmsh-scheduler/", 10, None));
        let named =
            env(&[("VMSH_ETCD_ENDPOINTS", "http://e1:2379"), ("VMSH_NODE_ID", "r-1"), ("VMSH_ETCD_PREFIX", "/x")]);
        let named = Settings::from_env(&named, &o).expect("valid").cluster.expect("on");
        assert_eq!((named.node_id.as_deref(), named.prefix.as_str()), (Some("r-1"), "/x/"));
        // A bad value is caught before the day cluster mode is turned on.
        let e = Settings::from_env(&env(&[("VMSH_NODE_ID", "a/b")]), &o).expect_err("bad node id");
        assert_eq!(e.name, "VMSH_NODE_ID");
        let e = Settings::from_env(&env(&[("VMSH_ETCD_CERT_FILE", "/c.pem")]), &o).expect_err("cert without key");
        assert_eq!(e.name, "VMSH_ETCD_KEY_FILE");
        let e = Settings::from_env(&env(&[("VMSH_ETCD_USER", "vmsh")]), &o).expect_err("user without password");
        assert_eq!(e.name, "VMSH_ETCD_PASSWORD_FILE");
    }

    #[test]
    fn an_endpoint_with_credentials_is_refused_without_showing_them() {
        let e =
            Settings::from_env(&env(&[("VMSH_ETCD_ENDPOINTS", "http://root:hunter2@e1:2379")]), &Overrides::default())
                .expect_err("credentials in a URL");
        assert_eq!(e.name, "VMSH_ETCD_ENDPOINTS");
        assert!(e.reason.contains("VMSH_ETCD_PASSWORD_FILE"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = Settings::from_env(&env(&[("VMSH_ETCD_ENDPOINTS", "ftp://e1")]), &Overrides::default())
            .expect_err("not http");
        assert!(e.reason.contains("not an http:// or https:// URL"), "{e}");
    }

    #[test]
    fn each_subcommand_is_stopped_only_by_the_settings_it_reads() {
        let o = Overrides::default();
        // "?" is a path, and no value of any other kind.
        for s in SETTINGS.iter().filter(|s| !s.is_path()) {
            let e = env(&[(s.var(), "?")]);
            let service = Settings::from_env(&e, &o).expect_err(s.var());
            assert_eq!((service.name.as_str(), s.read_by().contains(&Reader::Run)), (s.var(), true));
            let status = listen_addr(&e, &o).err().map(|e| e.name);
            let read_by_status = s.read_by().contains(&Reader::Status);
            assert_eq!(status.as_deref(), read_by_status.then_some(s.var()), "status and {}", s.var());
            let migrate = cluster(&e, &o).err().map(|e| e.name);
            let read_by_migrate = s.read_by().contains(&Reader::MigrateState);
            assert_eq!(migrate.as_deref(), read_by_migrate.then_some(s.var()), "migrate-state and {}", s.var());
        }
        // What validate and verify read cannot stop them: a path is taken as written, and
        // verify reads the etcd settings only for a receipt written in cluster mode (a bad
        // one makes that receipt not verifiable, and stops nothing else).
        for s in SETTINGS {
            let etcd = s.var().starts_with("VMSH_ETCD_") || s.var() == "VMSH_NODE_ID";
            if s.read_by().iter().any(|r| matches!(r, Reader::Validate | Reader::Verify)) {
                assert!(s.is_path() || etcd, "{} is read by validate or verify", s.var());
            }
        }
    }

    #[test]
    fn the_service_reports_the_first_bad_setting_in_the_order_of_the_definitions() {
        let checked: Vec<&str> = SETTINGS.iter().filter(|s| !s.is_path()).map(|s| s.var()).collect();
        for (i, first) in checked.iter().enumerate() {
            let e: HashMap<String, String> = checked[i..].iter().map(|v| (v.to_string(), "?".to_string())).collect();
            let err = Settings::from_env(&e, &Overrides::default()).expect_err(first);
            assert_eq!(err.name, *first);
        }
    }

    #[test]
    fn a_flag_wins_over_the_variable_and_a_bad_flag_value_is_named_by_its_flag() {
        let e = env(&[("METRICS_PORT", "9100"), ("LOG_LEVEL", "debug")]);
        let mut o = Overrides::default();
        o.set("METRICS_PORT", "9200");
        assert_eq!(listen_addr(&e, &o).expect("valid").1, 9200);
        o.set("LOG_LEVEL", "loud");
        let err = Settings::from_env(&e, &o).expect_err("a bad flag value");
        assert_eq!(err.to_string(), "--log-level=\"loud\": expected trace, debug, info, warn or error");
    }

    #[test]
    fn env_file_errors_name_the_line_but_never_its_text() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("x.env");
        std::fs::write(&file, "A=1\n# comment\nEVM_ANCHOR_KEY 0x5ec7e75ec7e7\n").expect("write");
        let e = read_env_file(&file).expect_err("malformed");
        assert!(e.contains("line 3") && !e.contains("5ec7e7"), "{e}");
        std::fs::write(&file, "A=\"x\0secret\"\n").expect("write");
        let e = read_env_file(&file).expect_err("NUL");
        assert!(e.contains("NUL") && !e.contains("secret"), "{e}");
        std::fs::write(&file, "\u{feff}A=1\nA=2\nB=x\n").expect("write");
        assert_eq!(read_env_file(&file).expect("valid"), [("A".into(), "1".into()), ("B".into(), "x".into())]);
        let e = read_env_file(Path::new("/dev/zero")).expect_err("device");
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn paths_and_the_listen_address_ignore_settings_only_the_service_uses() {
        let e =
            env(&[("VMSH_TICK_MS", "0"), ("LOG_LEVEL", "bogus"), ("VMSH_ROOT", "/srv/vm"), ("METRICS_PORT", "9100")]);
        assert!(Settings::from_env(&e, &Overrides::default()).is_err(), "the service refuses them");
        let paths = Paths::from_env(&e, &Overrides::default());
        assert_eq!(paths.state, PathBuf::from("/srv/vm/vmsh/state/scheduler.json"));
        assert_eq!(listen_addr(&e, &Overrides::default()).expect("valid").1, 9100);
    }

    #[test]
    fn the_batch_read_timeout_defaults_to_30_s_and_takes_fractions_within_bounds() {
        let s = Settings::from_env(&env(&[]), &Overrides::default()).expect("defaults are valid");
        assert_eq!(s.batch_read_timeout, Duration::from_secs(30));
        let short = env(&[("VMSH_BATCH_READ_TIMEOUT_S", "0.25")]);
        let s = Settings::from_env(&short, &Overrides::default()).expect("valid");
        assert_eq!(s.batch_read_timeout, Duration::from_millis(250));
        for v in ["0", "-1", "3601", "NaN", "soon"] {
            let e = Settings::from_env(&env(&[("VMSH_BATCH_READ_TIMEOUT_S", v)]), &Overrides::default()).expect_err(v);
            assert_eq!(e.name, "VMSH_BATCH_READ_TIMEOUT_S");
        }
    }
}
