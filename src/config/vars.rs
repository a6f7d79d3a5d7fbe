//! Environment references in the targets file: `${VAR}` and `${VAR:-default}`, and the
//! secret values they often carry.
//!
//! References are replaced in string values only (never in keys, and the result is never
//! parsed as YAML), so a variable cannot inject structure. A reference to a variable that is
//! not set (and has no default) is reported with the field that uses it; the entry holding it
//! is unusable, which is an error only if a namespace uses that entry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::model::evidence::{CheckError, Evidence};

/// The variables the config may refer to. Values are never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// Variables from `pairs` (usually the process environment).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vars({} variables, values hidden)", self.0.len())
    }
}

/// A value that must never be printed: a private key, a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (signing, authenticating).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An endpoint URL: used in full to connect, shown only as `scheme://host[:port]` because
/// its credentials, path and query often hold passwords or API keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint(String);

impl Endpoint {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The whole URL, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Endpoint {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for Endpoint {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", display_url(&self.0))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_url(&self.0))
    }
}

impl Endpoint {
    /// The parts of this URL that may be secret (see [`Secrets::url`]).
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        secrets.url(&self.0);
        secrets
    }
}

/// Secrets of the targets configuration, for [`Redactor`]: the values known when the file
/// is loaded (keys, passwords, URL credentials and API keys, exec `env` values), and files
/// whose content is secret and changes while the service runs (bitcoind's cookie), read when
/// text is cleaned. Values shorter than [`Redactor::MIN_LEN`] are kept out (see there).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: Vec<String>,
    files: Vec<PathBuf>,
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// A secret value.
    pub fn value(&mut self, value: &str) -> &mut Self {
        if !value.is_empty() && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
        }
        self
    }

    /// A login as HTTP basic auth sends it: the user (often an API key in hosted-node URLs),
    /// the password, the pair `user:password`, and the header value that base64-encodes the
    /// pair (itself encoded again when an echo dumps the whole request in base64).
    pub fn login(&mut self, user: &str, password: &str) -> &mut Self {
        use base64::Engine as _;
        let pair = format!("{user}:{password}");
        let header = base64::engine::general_purpose::STANDARD.encode(&pair);
        self.value(user).value(password).value(&pair).value(&header)
    }

    /// A hex private key as written (with or without `0x`) and as a command or node might
    /// print it: with and without `0x`, in lower and upper case.
    pub fn hex_key(&mut self, key: &str) -> &mut Self {
        let bare = key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")).unwrap_or(key);
        self.value(key);
        for digits in [bare.to_ascii_lowercase(), bare.to_ascii_uppercase()] {
            self.value(&format!("0x{digits}"));
            self.value(&digits);
        }
        self
    }

    /// The parts of a URL that may be secret: its user and password (as written and decoded,
    /// and as the basic-auth login they become), and the segments, names and values of its
    /// path and query that look like keys (see [`looks_like_a_key`]), with the path and query
    /// as a whole when one does.
    pub fn url(&mut self, url: &str) -> &mut Self {
        let Some((_, rest)) = url.split_once("://") else { return self.value(url) };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            self.login(user, password);
            self.login(&percent_decode(user), &percent_decode(password));
        }
        let tail = &rest[authority.len()..];
        let keys: Vec<&str> = tail.split(['/', '?', '&', '=', '#']).filter(|p| looks_like_a_key(p)).collect();
        if !keys.is_empty() {
            self.value(tail);
            self.value(&percent_decode(tail));
        }
        for part in keys {
            self.value(part);
            self.value(&percent_decode(part));
        }
        self
    }

    /// A file whose content is secret, read each time text is cleaned; a `user:password`
    /// content (a cookie file) counts as a login.
    pub fn file(&mut self, path: &Path) -> &mut Self {
        if !self.files.iter().any(|f| f == path) {
            self.files.push(path.to_path_buf());
        }
        self
    }

    /// Adds every secret of `other`.
    pub fn extend(&mut self, other: &Secrets) -> &mut Self {
        for v in &other.values {
            self.value(v);
        }
        for f in &other.files {
            self.file(f);
        }
        self
    }

    /// A redactor for these secrets.
    pub fn redactor(&self) -> Redactor {
        Redactor::with_files(self.values.iter().cloned(), self.files.clone())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values, {} files, values hidden)", self.values.len(), self.files.len())
    }
}

/// Whether a URL path segment or query part may be an API key: it holds a digit or is at
/// least 16 characters long. Words such as `wallet`, `mainnet` or `timestamp` are not, and
/// treating them as secrets would hide them from every message (and make a proof that names
/// the chain look like an echo).
fn looks_like_a_key(part: &str) -> bool {
    part.len() >= 16 || part.bytes().any(|b| b.is_ascii_digit())
}

/// Removes secrets from text on its way out: error messages, a target's status strings, an
/// exec command's output. A target (or a proxy in front of it) may echo our request back,
/// headers included, and a command may print its environment; none of it may reach the
/// logs, `/health`, the state file, receipts or `verify`'s output.
///
/// Each secret is searched for in every form it may take on the way back: as it is; in
/// base64 (standard and URL-safe alphabets, with and without padding, alone or inside a
/// longer base64 text such as an HTTP basic-auth header or a base64 dump of the request);
/// percent-encoded, in any mix of escaped and plain characters (`+` read as a space too);
/// and escaped as in a JSON string. A secret cut off by a shortened message (ending in `…`)
/// has its remaining head removed too.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
    files: Vec<PathBuf>,
}

/// What a secret is replaced with.
const REDACTED: &str = "<redacted>";

impl Redactor {
    /// A verification's error with its reason cleaned: a node may echo our secrets.
    pub fn clean_check(&self, e: CheckError) -> CheckError {
        e.map_reason(|r| self.clean(r))
    }

    /// A verification's checks, or its error, cleaned.
    pub fn clean_checks(&self, checks: Result<Vec<String>, CheckError>) -> Result<Vec<String>, CheckError> {
        match checks {
            Ok(checks) => Ok(checks.iter().map(|c| self.clean(c)).collect()),
            Err(e) => Err(self.clean_check(e)),
        }
    }

    /// A verification's evidence, or its error, cleaned.
    pub fn clean_evidence(&self, evidence: Result<Evidence, CheckError>) -> Result<Evidence, CheckError> {
        evidence.map(|e| e.map_lines(|l| self.clean(l))).map_err(|e| self.clean_check(e))
    }

    /// Shortest secret searched for: shorter ones (`v3`, `api`, `rpc`) would redact ordinary
    /// words and say nothing about the secret, so they are left alone. A secret shorter than
    /// this cannot be kept out of echoed text; no key, password or API key should be.
    pub const MIN_LEN: usize = 6;

    /// Shortest head of a cut-off secret removed before a `…`.
    const MIN_HEAD: usize = 3;

    /// A redactor for these secrets (short and empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self::with_files(secrets, Vec::new())
    }

    fn with_files(secrets: impl IntoIterator<Item = String>, files: Vec<PathBuf>) -> Self {
        let mut needles = Vec::new();
        for secret in secrets {
            forms(&secret, &mut needles);
        }
        Self { needles: sorted(needles), files }
    }

    /// The needles of the secret files, as they are now.
    fn file_needles(&self) -> Vec<String> {
        let mut needles = Vec::new();
        for path in &self.files {
            // One that cannot be read now cannot have been sent either.
            let Ok(bytes) = crate::fsread::read_regular(path, MAX_SECRET_FILE) else { continue };
            let text = String::from_utf8_lossy(&bytes);
            let mut secrets = Secrets::new();
            let text = text.trim();
            secrets.value(text);
            if let Some((user, password)) = text.split_once(':') {
                secrets.login(user, password);
            }
            for v in &secrets.values {
                forms(v, &mut needles);
            }
        }
        sorted(needles)
    }

    /// `text` with every secret replaced by `<redacted>`.
    ///
    /// Secrets are searched for in the text as it is and with its `%XX` escapes decoded (and
    /// once more with `+` read as a space), so any mix of escaped and plain characters is
    /// found; what is replaced is the stretch of the original text that spelled the secret.
    pub fn clean(&self, text: &str) -> String {
        self.clean_with(text, &self.file_needles())
    }

    /// [`Redactor::clean`], with the secret files' needles already read.
    fn clean_with(&self, text: &str, from_files: &[String]) -> String {
        let needles: Vec<&String> = self.needles.iter().chain(from_files).collect();
        let mut found: Vec<(usize, usize)> = Vec::new();
        for plus_is_space in [false, true] {
            if plus_is_space && !text.contains('+') {
                continue;
            }
            let (bytes, spans) = decoded(text, plus_is_space);
            for n in &needles {
                let n = n.as_bytes();
                let mut from = 0;
                while let Some(at) = bytes.get(from..).and_then(|rest| rest.windows(n.len()).position(|w| w == n)) {
                    let start = from + at;
                    found.push((spans[start].0, spans[start + n.len() - 1].1));
                    from = start + 1;
                }
            }
        }
        let mut out = String::with_capacity(text.len());
        if found.is_empty() {
            out.push_str(text);
        } else {
            found.sort_unstable();
            let mut copied = 0;
            for (start, end) in found {
                if end <= copied {
                    continue;
                }
                if start >= copied {
                    out.push_str(&text[copied..start]);
                    out.push_str(REDACTED);
                }
                copied = end;
            }
            out.push_str(&text[copied..]);
        }
        if out.contains('…') {
            out = cut_heads(&out, needles.into_iter());
        }
        out
    }

    /// Whether `text` holds a secret in any of its forms.
    pub fn finds(&self, text: &str) -> bool {
        self.clean(text) != text
    }

    /// Cleans every string (and key) in a JSON value; says whether anything was removed.
    pub fn clean_json(&self, value: &mut serde_json::Value) -> bool {
        self.clean_json_with(value, &self.file_needles())
    }

    fn clean_json_with(&self, value: &mut serde_json::Value, from_files: &[String]) -> bool {
        use serde_json::Value as J;
        match value {
            J::String(s) => {
                let clean = self.clean_with(s, from_files);
                let changed = clean != *s;
                *s = clean;
                changed
            }
            J::Array(items) => items.iter_mut().fold(false, |changed, v| self.clean_json_with(v, from_files) | changed),
            J::Object(map) => {
                let mut changed = false;
                for (k, mut v) in std::mem::take(map) {
                    changed |= self.clean_json_with(&mut v, from_files);
                    let key = self.clean_with(&k, from_files);
                    changed |= key != k;
                    map.insert(key, v);
                }
                changed
            }
            J::Null | J::Bool(_) | J::Number(_) => false,
        }
    }

    /// Whether any string (or key) in a JSON value holds a secret.
    pub fn finds_in_json(&self, value: &serde_json::Value) -> bool {
        self.clean_json(&mut value.clone())
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} forms, {} files)", self.needles.len(), self.files.len())
    }
}

/// Longest first, so a form that contains another is removed whole; no repeats.
fn sorted(mut needles: Vec<String>) -> Vec<String> {
    needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    needles.dedup();
    needles
}

/// Every form of `secret` that text coming back may hold (see [`Redactor`]).
fn forms(secret: &str, out: &mut Vec<String>) {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    if secret.len() < Redactor::MIN_LEN {
        return;
    }
    let mut add = |form: String| {
        if form.len() >= Redactor::MIN_LEN {
            out.push(form);
        }
    };
    // Percent-encoded forms need no needle of their own: the text is searched decoded too.
    add(secret.to_string());
    if secret.contains('%') {
        add(percent_decode(secret));
    }
    if let Ok(json) = serde_json::to_string(secret) {
        add(json[1..json.len() - 1].to_string());
    }
    let bytes = secret.as_bytes();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        add(engine.encode(bytes));
    }
    // Inside a longer base64 text the secret starts at one of three offsets within a 3-byte
    // group; the characters that depend on its bytes alone are the same whatever surrounds it.
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        let text = STANDARD_NO_PAD.encode(&padded);
        let first = (offset * 8).div_ceil(6);
        let last = (offset + bytes.len()) * 8 / 6;
        if let Some(inner) = text.get(first..last) {
            add(inner.to_string());
            add(inner.replace('+', "-").replace('/', "_"));
        }
    }
}

/// `text` as bytes with its `%XX` escapes decoded (and `+` as a space, if asked), and for
/// each byte the range of `text` it came from. Every range starts and ends on a character
/// boundary of `text`: an escape is ASCII, and other bytes are copied whole characters.
fn decoded(text: &str, plus_is_space: bool) -> (Vec<u8>, Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut spans = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| text.get(i + 1..i + 3)).flatten();
        match escaped.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => {
                out.push(b);
                spans.push((i, i + 3));
                i += 3;
            }
            None => {
                let width = text[i..].chars().next().map_or(1, char::len_utf8);
                for k in 0..width {
                    out.push(if plus_is_space && bytes[i] == b'+' { b' ' } else { bytes[i + k] });
                    spans.push((i, i + width));
                }
                i += width;
            }
        }
    }
    (out, spans)
}

/// Decodes `%XX` escapes (as URLs write `@`, `:` and `%` in credentials); bad escapes stay.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes, before each `…`, the head of a secret that a shortened message cut off.
fn cut_heads<'a>(text: &str, needles: impl Iterator<Item = &'a String> + Clone) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('…') {
        let before = &rest[..at];
        let head = needles
            .clone()
            .flat_map(|n| (Redactor::MIN_HEAD..n.len()).rev().filter(|k| n.is_char_boundary(*k)).map(move |k| &n[..k]))
            .filter(|h| before.ends_with(h))
            .map(str::len)
            .max()
            .unwrap_or(0);
        out.push_str(&before[..before.len() - head]);
        if head > 0 {
            out.push_str(REDACTED);
        }
        out.push('…');
        rest = &rest[at + '…'.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// A URL as it may appear in messages: scheme, host and port, without credentials, path or
/// query.
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<invalid URL>".into() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let tail = if rest.len() > authority.len() && rest[authority.len()..] != *"/" { "/…" } else { "" };
    format!("{scheme}://{host}{tail}")
}

/// Largest key, password or cookie file read (through [`crate::fsread::read_regular`], so a
/// named pipe there fails at once instead of holding whoever reads it).
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A reference to a variable that is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Dotted path of the field holding the reference.
    pub field: String,
    /// The variable.
    pub var: String,
}

/// Replaces references in every string of `value`; returns the unresolved ones.
pub fn interpolate(value: &mut Value, vars: &Vars) -> Vec<Unresolved> {
    let mut unresolved = Vec::new();
    walk(value, vars, &mut String::new(), &mut unresolved);
    unresolved
}

fn walk(value: &mut Value, vars: &Vars, path: &mut String, unresolved: &mut Vec<Unresolved>) {
    match value {
        Value::String(s) => {
            let (text, whole, missing) = substitute(s, vars);
            for var in missing {
                unresolved.push(Unresolved { field: path.clone(), var });
            }
            // `${X}` that comes out empty means "not set": the field is absent.
            *value = if whole && text.is_empty() { Value::Null } else { Value::String(text) };
        }
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                walk(v, vars, path, unresolved);
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, vars, path, unresolved);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, vars, path, unresolved),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Substitutes references in `s`: the text, whether `s` was one reference and nothing else,
/// and the variables that were not set.
pub fn substitute(s: &str, vars: &Vars) -> (String, bool, Vec<String>) {
    let mut out = String::with_capacity(s.len());
    let mut missing = Vec::new();
    let mut rest = s;
    let mut references = 0;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else { break };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        references += 1;
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(unquote(d.trim()))),
            None => (inner.trim(), None),
        };
        match (vars.get(name), default) {
            (Some(""), Some(d)) => out.push_str(d),
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_string()),
        }
        rest = &rest[start + len + 1..];
    }
    let trimmed = s.trim();
    let whole = references == 1 && trimmed.starts_with("${") && trimmed.find('}') == Some(trimmed.len() - 1);
    out.push_str(rest);
    (out, whole, missing)
}

/// `""` and `''` around a default stand for the text inside (as a shell would read them).
fn unquote(d: &str) -> &str {
    for q in ['"', '\''] {
        if d.len() >= 2 && d.starts_with(q) && d.ends_with(q) {
            return &d[1..d.len() - 1];
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::new([("RPC".to_string(), "http://node:8545".to_string()), ("EMPTY".to_string(), String::new())])
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        assert_eq!(substitute("${RPC}", &vars()), ("http://node:8545".into(), true, vec![]));
        assert_eq!(substitute("url=${RPC}/x", &vars()).0, "url=http://node:8545/x");
        assert_eq!(substitute("${NOPE:-fallback}", &vars()).0, "fallback");
        assert_eq!(substitute("${EMPTY:-fallback}", &vars()).0, "fallback");
        assert_eq!(substitute("${NOPE:-\"\"}", &vars()).0, "");
        assert_eq!(substitute("${NOPE:-''}", &vars()).0, "");
        assert_eq!(substitute("no refs", &vars()), ("no refs".into(), false, vec![]));
    }

    #[test]
    fn reports_unset_variables() {
        let (_, _, missing) = substitute("${A}-${RPC}-${B}", &vars());
        assert_eq!(missing, vec!["A".to_string(), "B".to_string()]);
    }

    #[test]
    fn interpolates_a_whole_document_and_names_the_fields() {
        let mut doc: Value = serde_yaml::from_str(
            "eip155:\n  default:\n    rpcUrl: ${RPC}\n    key: ${KEY}\n    contract: ${EMPTY}\n    policy: ${P:-\"\"}\n",
        )
        .expect("yaml");
        let unresolved = interpolate(&mut doc, &vars());
        assert_eq!(unresolved, vec![Unresolved { field: "eip155.default.key".into(), var: "KEY".into() }]);
        assert_eq!(doc["eip155"]["default"]["rpcUrl"], Value::String("http://node:8545".into()));
        assert_eq!(doc["eip155"]["default"]["contract"], Value::Null, "empty means absent");
        assert_eq!(doc["eip155"]["default"]["policy"], Value::Null);
    }

    #[test]
    fn endpoints_print_without_credentials_paths_or_queries() {
        let e = Endpoint::new("https://u:pw@node.example:8545/v3/APIKEY?x=1");
        assert_eq!(e.to_string(), "https://node.example:8545/…");
        assert!(!format!("{e:?}").contains("APIKEY"));
        assert_eq!(display_url("http://127.0.0.1:8332/"), "http://127.0.0.1:8332");
        assert_eq!(display_url("garbage"), "<invalid URL>");
    }

    #[test]
    fn echoed_url_parts_and_secrets_are_redacted() {
        let mut secrets = Endpoint::new("https://user:hunter22@node.example/v3/APIKEY123456?token=abcdef123").secrets();
        secrets.value("0xdeadbeefcafe");
        let r = secrets.redactor();
        let echoed = "bad request POST /v3/APIKEY123456?token=abcdef123 auth hunter22 key 0xdeadbeefcafe";
        let clean = r.clean(echoed);
        for secret in ["APIKEY123456", "abcdef123", "hunter22", "deadbeefcafe"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.starts_with("bad request POST"), "ordinary words stay: {clean}");
    }

    /// How `secret` can still be read out of `text`, if it can: as it is, percent-decoded,
    /// form-decoded, JSON-unescaped, or base64-decoded from any run of base64 characters at
    /// any alignment.
    fn recoverable(text: &str, secret: &str) -> Option<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let decoded = [
            ("as it is", text.to_string()),
            ("percent-decoded", percent_decode(text)),
            ("form-decoded", percent_decode(&text.replace('+', " "))),
            ("JSON-unescaped", text.replace("\\\"", "\"").replace("\\\\", "\\")),
        ];
        if let Some((how, _)) = decoded.iter().find(|(_, t)| t.contains(secret)) {
            return Some(how.to_string());
        }
        let runs = text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_".contains(c)));
        for run in runs {
            for skip in 0..4.min(run.len()) {
                let part = &run[skip..];
                for part in [part, &part[..part.len() / 4 * 4]] {
                    for bytes in [STANDARD_NO_PAD.decode(part), URL_SAFE_NO_PAD.decode(part)].into_iter().flatten() {
                        if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                            return Some(format!("base64-decoded from {run:?}"));
                        }
                    }
                }
            }
        }
        None
    }

    /// `s` as an HTML form encodes it: unreserved characters as they are, space as `+`.
    fn form_encoded(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b' ' => "+".to_string(),
                b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => char::from(b).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    /// What a secret looks like after each encoding an echo may apply.
    fn encodings(secret: &str) -> Vec<(&'static str, String)> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let pct: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
        vec![
            ("plain", secret.to_string()),
            ("base64", STANDARD.encode(secret)),
            ("url-safe base64 without padding", URL_SAFE_NO_PAD.encode(secret)),
            ("base64 inside a longer text", STANDARD.encode(format!("POST / HTTP/1.1\r\nx-{secret}-y"))),
            ("base64 at the second offset", STANDARD.encode(format!("a{secret}bc"))),
            ("base64 at the third offset", URL_SAFE_NO_PAD.encode(format!("ab{secret}"))),
            ("percent-encoded", pct.clone()),
            ("percent-encoded, lower case", pct.to_ascii_lowercase()),
            ("form-encoded", form_encoded(secret)),
            ("JSON-escaped", serde_json::to_string(secret).expect("json")),
        ]
    }

    #[test]
    fn every_encoding_of_a_secret_is_redacted() {
        // `/`, `+`, `"`, space and `?` need escaping or map to different base64 alphabets.
        for secret in ["pa ss/w+rd\"?é", "hunter22", "0123456789abcdef"] {
            let r = Redactor::new([secret.to_string()]);
            for (how, encoded) in encodings(secret) {
                let text = format!("echo: {encoded} end");
                assert!(recoverable(&text, secret).is_some(), "the oracle misses {how}");
                let clean = r.clean(&text);
                assert_eq!(recoverable(&clean, secret), None, "{how} of {secret:?} survived: {clean}");
                assert!(clean.starts_with("echo: ") && clean.ends_with(" end"), "{how}: {clean}");
            }
        }
    }

    #[test]
    fn a_basic_auth_header_of_a_login_is_redacted() {
        use base64::Engine as _;
        let mut secrets = Secrets::new();
        secrets.login("vmsh", "p@ss-w0rd");
        let header = base64::engine::general_purpose::STANDARD.encode("vmsh:p@ss-w0rd");
        let clean = secrets.redactor().clean(&format!("authorization: Basic {header}"));
        assert_eq!(clean, "authorization: Basic <redacted>");
    }

    #[test]
    fn a_hex_key_is_redacted_in_either_case_with_or_without_its_prefix() {
        let mut secrets = Secrets::new();
        secrets.hex_key("0xAbCdEf0123456789");
        let r = secrets.redactor();
        for shown in ["0xabcdef0123456789", "ABCDEF0123456789", "abcdef0123456789", "0XABCDEF0123456789"] {
            assert!(!r.clean(shown).to_ascii_lowercase().contains("abcdef0123"), "{shown}");
        }
    }

    #[test]
    fn the_head_of_a_secret_cut_off_by_a_shortened_message_is_redacted() {
        let r = Redactor::new(["hunter22-secret".to_string()]);
        assert_eq!(r.clean("node said: auth hunter2…"), "node said: auth <redacted>…");
        // Not a secret's head: stays.
        assert_eq!(r.clean("node said: ok…"), "node said: ok…");
    }

    #[test]
    fn short_values_are_not_secrets_and_ordinary_text_stays() {
        let r = Redactor::new(["v3".to_string(), "api".to_string(), String::new()]);
        assert_eq!(r.clean("GET /v3/api"), "GET /v3/api");
    }

    #[test]
    fn secret_files_are_read_when_text_is_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cookie = dir.path().join(".cookie");
        let mut secrets = Secrets::new();
        secrets.file(&cookie);
        let r = secrets.redactor();
        assert_eq!(r.clean("no file yet"), "no file yet");
        std::fs::write(&cookie, "__cookie__:c00kie-value-1\n").expect("write cookie");
        assert_eq!(r.clean("pw c00kie-value-1"), "pw <redacted>");
        std::fs::write(&cookie, "__cookie__:c00kie-value-2\n").expect("rewrite cookie");
        assert_eq!(r.clean("pw c00kie-value-2"), "pw <redacted>", "a rewritten cookie is read again");
    }

    #[test]
    fn json_strings_and_keys_are_cleaned() {
        let r = Redactor::new(["hunter22".to_string()]);
        let mut v = serde_json::json!({"out": ["x hunter22"], "hunter22": 1, "n": 2});
        assert!(r.finds_in_json(&v));
        assert!(r.clean_json(&mut v));
        assert_eq!(v, serde_json::json!({"out": ["x <redacted>"], "<redacted>": 1, "n": 2}));
        assert!(!r.finds_in_json(&v));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("0xdeadbeef");
        assert!(!format!("{s:?} {s}").contains("dead"));
        assert!(!format!("{:?}", Vars::new([("K".into(), "hunter2".into())])).contains("hunter2"));
    }
}
