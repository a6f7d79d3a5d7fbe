//! Environment references in the targets file: `${VAR}` and `${VAR:-default}`, and the
//! secret values they often carry.
//!
//! References are replaced in string values only (never in keys, and the result is never
//! parsed as YAML), so a variable cannot inject structure. A reference to a variable that is
//! not set (and has no default) is reported with the field that uses it; the entry holding it
//! is unusable, which is an error only if a namespace uses that entry.

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml::Value;

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
    /// The parts of this URL that may be secret (credentials, path segments, query values),
    /// for [`Redactor`]: a target that echoes our request back must not make us repeat them.
    pub fn secret_parts(&self) -> Vec<String> {
        let Some((_, rest)) = self.0.split_once("://") else { return vec![self.0.clone()] };
        let mut parts = Vec::new();
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            parts.extend(userinfo.split(':').map(str::to_string));
        }
        let tail = &rest[authority.len()..];
        if tail.len() > 1 {
            parts.push(tail.to_string());
        }
        parts.extend(tail.split(['/', '?', '&', '=', '#']).map(str::to_string));
        parts
    }
}

/// Removes known secret strings from text a target sent back (error messages, status
/// strings): nothing we sent may be repeated in logs, /health or the state file.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    /// Shortest string treated as a secret: shorter ones (`v3`, `api`) would redact ordinary
    /// words and say nothing about the secret.
    const MIN_LEN: usize = 6;

    /// A redactor for these secrets (short and empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut needles: Vec<String> = secrets.into_iter().filter(|s| s.len() >= Self::MIN_LEN).collect();
        // Longest first, so a secret that contains another is removed whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), "<redacted>");
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.needles.len())
    }
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
        let e = Endpoint::new("https://user:hunter22@node.example/v3/APIKEY123456?token=abcdef123");
        let r = Redactor::new(e.secret_parts().into_iter().chain(["0xdeadbeefcafe".to_string()]));
        let echoed = "bad request POST /v3/APIKEY123456?token=abcdef123 auth hunter22 key 0xdeadbeefcafe";
        let clean = r.clean(echoed);
        for secret in ["APIKEY123456", "abcdef123", "hunter22", "deadbeefcafe"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.starts_with("bad request POST"), "ordinary words stay: {clean}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("0xdeadbeef");
        assert!(!format!("{s:?} {s}").contains("dead"));
        assert!(!format!("{:?}", Vars::new([("K".into(), "hunter2".into())])).contains("hunter2"));
    }
}
