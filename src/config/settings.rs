//! Process settings from environment variables (and `.env`), with command-line overrides.
//!
//! Defaults for file locations hang off `VMSH_ROOT`; a path given explicitly is taken as
//! written (relative to the working directory), like any other Unix tool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Number of anchor workers.
    pub anchor_workers: usize,
    /// Time limit of one anchor job.
    pub anchor_timeout: Duration,
    /// How long SIGTERM waits for running anchors.
    pub shutdown_grace: Duration,
    /// How long one batch read may take before it is given up, or left behind if it blocks.
    pub batch_read_timeout: Duration,
    /// Whether the anchor duration histogram carries a `namespace` label (off for large
    /// fleets: it is most of the series).
    pub namespace_histograms: bool,
    /// The environment, for `${VAR}` references in the targets file (values never printed).
    pub vars: super::vars::Vars,
}

impl Settings {
    /// What loading the config files needs.
    pub fn load_context(&self) -> super::LoadContext {
        super::LoadContext { vars: self.vars.clone(), root: self.root.clone() }
    }
}

/// Command-line values that take precedence over the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--namespaces`.
    pub namespaces: Option<PathBuf>,
    /// `--anchors`.
    pub anchors: Option<PathBuf>,
    /// `--state`.
    pub state: Option<PathBuf>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--bind`.
    pub bind: Option<IpAddr>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
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

/// Every environment variable the scheduler reads, with its default and meaning; the settings
/// table of docs/CONFIGURATION.md and `.env.example` document the same list (a test checks both).
pub const ENV_VARS: &[(&str, &str, &str)] = &[
    ("VMSH_ROOT", ".", "working root: batches in out/batches, receipts in out/anchors, journals in out/journal"),
    ("VMSH_NAMESPACES", "$VMSH_ROOT/vmsh/config/namespaces.yaml", "namespaces YAML"),
    ("VMSH_ANCHORS", "$VMSH_ROOT/vmsh/config/anchors.yaml if present", "targets YAML (exec commands, network targets)"),
    ("VMSH_STATE", "$VMSH_ROOT/vmsh/state/scheduler.json", "state file"),
    ("VMSH_TICK_MS", "10000", "config re-read interval (ms)"),
    ("METRICS_PORT", "9090", "HTTP port for /metrics, /health, /livez, /readyz (0 = any free port)"),
    ("METRICS_HOST", "0.0.0.0", "HTTP bind address"),
    ("VMSH_BASE_BACKOFF", "5", "φ-backoff base in seconds (fractions allowed)"),
    ("VMSH_MAX_BACKOFF", "7", "highest backoff level k"),
    ("VMSH_ANCHOR_WORKERS", "4", "anchor worker pool size"),
    ("VMSH_ANCHOR_TIMEOUT_S", "120", "time limit of one anchor job (s)"),
    ("VMSH_SHUTDOWN_GRACE_S", "20", "how long SIGTERM waits for running anchors (s)"),
    ("VMSH_BATCH_READ_TIMEOUT_S", "30", "time limit of one batch read; a read blocked longer is left behind (s)"),
    (
        "VMSH_METRICS_NAMESPACE_HISTOGRAMS",
        "true",
        "false drops the namespace label from vmsh_anchor_duration_seconds (large fleets)",
    ),
    ("LOG_LEVEL", "info", "trace, debug, info, warn or error"),
    ("LOG_FORMAT", "json", "json (one object per line) or text"),
];

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
        let get = |name: &str| lookup(env, name).map(PathBuf::from);
        let root = o.root.clone().or_else(|| get("VMSH_ROOT")).unwrap_or_else(|| PathBuf::from("."));
        let namespaces = o
            .namespaces
            .clone()
            .or_else(|| get("VMSH_NAMESPACES"))
            .unwrap_or_else(|| root.join("vmsh/config/namespaces.yaml"));
        let anchors = o.anchors.clone().or_else(|| get("VMSH_ANCHORS")).or_else(|| {
            let default = root.join("vmsh/config/anchors.yaml");
            default.exists().then_some(default)
        });
        let state =
            o.state.clone().or_else(|| get("VMSH_STATE")).unwrap_or_else(|| root.join("vmsh/state/scheduler.json"));
        Paths { root, namespaces, anchors, state }
    }

    /// What loading the config files needs: the root and the environment for `${VAR}`.
    pub fn load_context(&self, env: &HashMap<String, String>) -> super::LoadContext {
        super::LoadContext { vars: vars(env), root: self.root.clone() }
    }
}

/// The HTTP address (`METRICS_HOST`, `METRICS_PORT`): what `run` listens on and `status` asks.
pub fn listen_addr(env: &HashMap<String, String>, o: &Overrides) -> Result<(IpAddr, u16), SettingsError> {
    let port = match o.port {
        Some(p) => p,
        None => integer(lookup(env, "METRICS_PORT"), "METRICS_PORT", 9090, 0, u16::MAX)?,
    };
    let bind = match (o.bind, lookup(env, "METRICS_HOST")) {
        (Some(b), _) => b,
        (None, Some(v)) => {
            v.parse().map_err(|_| bad("METRICS_HOST", v, "expected an IP address such as 0.0.0.0 or 127.0.0.1"))?
        }
        (None, None) => IpAddr::from([0, 0, 0, 0]),
    };
    Ok((bind, port))
}

impl Settings {
    /// Builds the service's settings from environment variables and command-line overrides.
    pub fn from_env(env: &HashMap<String, String>, o: &Overrides) -> Result<Settings, SettingsError> {
        let get = |name: &str| lookup(env, name);
        let Paths { root, namespaces: namespaces_path, anchors: anchors_path, state: state_path } =
            Paths::from_env(env, o);
        let tick_ms: u64 = integer(get("VMSH_TICK_MS"), "VMSH_TICK_MS", 10_000, 10, u64::MAX)?;
        let (bind, port) = listen_addr(env, o)?;
        let base_backoff_secs = seconds(get("VMSH_BASE_BACKOFF"), "VMSH_BASE_BACKOFF", 5.0, 0.001, 86_400.0)?;
        let max_backoff: u32 = integer(get("VMSH_MAX_BACKOFF"), "VMSH_MAX_BACKOFF", 7, 0, 30)?;
        let anchor_workers: u32 = integer(get("VMSH_ANCHOR_WORKERS"), "VMSH_ANCHOR_WORKERS", 4, 1, 1024)?;
        let timeout_s = seconds(get("VMSH_ANCHOR_TIMEOUT_S"), "VMSH_ANCHOR_TIMEOUT_S", 120.0, 0.01, 86_400.0)?;
        let grace_s = seconds(get("VMSH_SHUTDOWN_GRACE_S"), "VMSH_SHUTDOWN_GRACE_S", 20.0, 0.0, 3_600.0)?;
        let read_s = seconds(get("VMSH_BATCH_READ_TIMEOUT_S"), "VMSH_BATCH_READ_TIMEOUT_S", 30.0, 0.01, 3_600.0)?;
        let namespace_histograms =
            match get("VMSH_METRICS_NAMESPACE_HISTOGRAMS").map(str::to_ascii_lowercase).as_deref() {
                None | Some("true") | Some("1") | Some("yes") => true,
                Some("false") | Some("0") | Some("no") => false,
                Some(other) => return Err(bad("VMSH_METRICS_NAMESPACE_HISTOGRAMS", other, "expected true or false")),
            };
        let (log_level, log_format) = logging(env, o)?;
        Ok(Settings {
            root,
            namespaces_path,
            anchors_path,
            state_path,
            tick: Duration::from_millis(tick_ms),
            bind,
            port,
            base_backoff_secs,
            max_backoff,
            log_level,
            log_format,
            anchor_workers: anchor_workers as usize,
            anchor_timeout: Duration::from_secs_f64(timeout_s),
            shutdown_grace: Duration::from_secs_f64(grace_s),
            batch_read_timeout: Duration::from_secs_f64(read_s),
            namespace_histograms,
            vars: vars(env),
        })
    }
}

/// The log threshold and format (`LOG_LEVEL`, `LOG_FORMAT`): only the service logs.
pub fn logging(env: &HashMap<String, String>, o: &Overrides) -> Result<(LogLevel, LogFormat), SettingsError> {
    let level_raw = o.log_level.clone().or_else(|| lookup(env, "LOG_LEVEL").map(str::to_string));
    let log_level = match level_raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("info") => LogLevel::Info,
        Some("trace") => LogLevel::Trace,
        Some("debug") => LogLevel::Debug,
        Some("warn") | Some("warning") => LogLevel::Warn,
        Some("error") => LogLevel::Error,
        Some(other) => return Err(bad("LOG_LEVEL", other, "expected trace, debug, info, warn or error")),
    };
    let format_raw = o.log_format.clone().or_else(|| lookup(env, "LOG_FORMAT").map(str::to_string));
    let log_format = match format_raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") | Some("pretty") => LogFormat::Text,
        Some(other) => return Err(bad("LOG_FORMAT", other, "expected json or text")),
    };
    Ok((log_level, log_format))
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

fn bad(name: &str, value: impl ToString, reason: &str) -> SettingsError {
    SettingsError { name: name.into(), value: value.to_string(), reason: reason.into() }
}

/// A whole number in `min..=max`: "out of range" for a number outside it, "not a whole
/// number" for anything else.
fn integer<T>(raw: Option<&str>, name: &str, default: T, min: T, max: T) -> Result<T, SettingsError>
where
    T: Copy + Into<u64> + TryFrom<u64> + std::fmt::Display,
{
    let Some(v) = raw else { return Ok(default) };
    let range = || format!("out of range: must be between {min} and {max}");
    let text = v.trim();
    let digits = text.strip_prefix('+').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: either in range, or too large for any integer of ours.
        return match digits.parse::<u64>().ok().filter(|n| (min.into()..=max.into()).contains(n)) {
            Some(n) => T::try_from(n).map_err(|_| bad(name, v, &range())),
            None => Err(bad(name, v, &range())),
        };
    }
    if text.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad(name, v, &range()));
    }
    Err(bad(name, v, "not a whole number"))
}

/// A duration in seconds (fractions allowed) in `min..=max`.
fn seconds(raw: Option<&str>, name: &str, default: f64, min: f64, max: f64) -> Result<f64, SettingsError> {
    let Some(v) = raw else { return Ok(default) };
    let n: f64 = v.trim().parse().map_err(|_| bad(name, v, "not a number of seconds"))?;
    if !n.is_finite() || !(min..=max).contains(&n) {
        return Err(bad(name, v, &format!("out of range: must be between {min} and {max} seconds")));
    }
    Ok(n)
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
        assert_eq!(s.anchor_workers, 4);
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.namespaces_path, PathBuf::from("./vmsh/config/namespaces.yaml"));
        assert!(s.namespace_histograms);
        let off = env(&[("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false")]);
        assert!(!Settings::from_env(&off, &Overrides::default()).expect("valid").namespace_histograms);
    }

    #[test]
    fn paths_default_under_root_and_flags_override_env() {
        let e = env(&[("VMSH_ROOT", "/srv/vm"), ("METRICS_PORT", "9100"), ("VMSH_STATE", "/var/lib/s.json")]);
        let o = Overrides { port: Some(9200), ..Overrides::default() };
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
