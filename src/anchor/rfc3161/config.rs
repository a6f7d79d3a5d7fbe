//! The `rfc3161` section of the targets file: time-stamp authorities, and the trust bundles
//! their tokens are checked against.
//!
//! An entry names one TSA (`url:`) or several (`urls:`), tried in order (see the driver).
//! Each URL must be an http(s) URL with a host, and two URLs of one entry may not share a
//! scheme, host and port: that is how metrics, `/health` and receipts name a TSA.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::TrustBundle;
use crate::config::aggregate::{self, AggregateRaw, AggregateSpec};
use crate::config::concurrency;
use crate::config::duration::parse_duration;
use crate::config::targets::{
    Entry, Flex, LoadContext, Problem, Section, entry_or_unusable, http_url, named_or_default, relative_to,
};
use crate::config::vars::{Endpoint, Secrets, Unresolved};
use crate::fsread::read_regular;
use crate::model::Target;

/// Largest trust bundle read: a few hundred CA certificates.
pub const MAX_BUNDLE: u64 = 4 * 1024 * 1024;

/// Days before its signing certificate expires that a TSA is warned about, unless the entry
/// says otherwise.
pub const DEFAULT_CERT_EXPIRY_WARN_DAYS: u32 = 30;

/// Most days `certExpiryWarnDays` may say: ten years, longer than any TSA certificate lives.
const MAX_CERT_EXPIRY_WARN_DAYS: u32 = 3650;

/// Most URLs one entry may list.
const MAX_URLS: usize = 16;

/// An `rfc3161` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsaSpec {
    url: Option<String>,
    /// A URL that comes out empty (`${VAR:-}`) is left out.
    urls: Option<Vec<Option<String>>>,
    #[serde(rename = "policyOID")]
    policy_oid: Option<String>,
    #[serde(rename = "trustBundle")]
    trust_bundle: Option<String>,
    timeout: Option<String>,
    #[serde(rename = "certExpiryWarnDays")]
    cert_expiry_warn_days: Option<Flex<u32>>,
    aggregate: Option<AggregateRaw>,
    concurrency: Option<Flex<u32>>,
}

/// An RFC 3161 timestamp authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaTarget {
    /// Where time-stamp queries are POSTed, in the order they are tried; never empty.
    pub urls: Vec<Endpoint>,
    /// Policy to request; the TSA's default when not set.
    pub policy_oid: Option<String>,
    /// PEM bundle of trusted CA certificates; tokens are verified against it when set.
    pub trust_bundle: Option<PathBuf>,
    /// Request time limit (the pool's VMSH_ANCHOR_TIMEOUT_S applies as well).
    pub timeout: Option<Duration>,
    /// Days before its signing certificate expires that a TSA is warned about.
    pub cert_expiry_warn_days: u32,
    /// Whether and how the runs due in one window are anchored together.
    pub aggregate: Option<AggregateSpec>,
    /// How many of its jobs run at once; the scheme's default (or VMSH_ANCHOR_WORKERS) when not set.
    pub concurrency: Option<u32>,
}

impl TsaTarget {
    /// One TSA at `url`, with every other field unset or at its default.
    pub fn at(url: &str) -> Self {
        Self {
            urls: vec![Endpoint::new(url)],
            policy_oid: None,
            trust_bundle: None,
            timeout: None,
            cert_expiry_warn_days: DEFAULT_CERT_EXPIRY_WARN_DAYS,
            aggregate: None,
            concurrency: None,
        }
    }

    /// The secret parts of every URL.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        for url in &self.urls {
            secrets.extend(&url.secrets());
        }
        secrets
    }
}

/// `scheme://host[:port]` of an http(s) URL (the port only when it is not the scheme's
/// default): how metrics, `/health` and receipts name a TSA, without its credentials, path
/// or query.
pub fn origin(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    Ok(parsed.origin().ascii_serialization())
}

/// The URLs of an entry: `url`, or the URLs `urls` lists, each usable and each a TSA of its
/// own. Errors name the field (`urls[1]`), never the value.
fn tsa_urls(url: Option<String>, urls: Option<Vec<Option<String>>>) -> Result<Vec<String>, String> {
    let named: Vec<(String, String)> = match (url, urls) {
        (Some(_), Some(_)) => return Err("give either url or urls, not both".into()),
        (None, None) => return Err("url (one TSA) or urls (a list, tried in order) is required".into()),
        (url, None) => vec![("url".to_string(), http_url("url", url)?)],
        (None, Some(list)) => {
            if list.len() > MAX_URLS {
                return Err(format!("urls lists {} URLs; at most {MAX_URLS} are allowed", list.len()));
            }
            let mut out = Vec::new();
            for (i, u) in list.into_iter().enumerate() {
                if let Some(u) = u {
                    let field = format!("urls[{i}]");
                    out.push((field.clone(), http_url(&field, Some(u))?));
                }
            }
            if out.is_empty() {
                return Err("urls lists no URL; list at least one TSA (or use url)".into());
            }
            out
        }
    };
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (field, url) in &named {
        let o = origin(url).map_err(|e| format!("{field} {e}"))?;
        if let Some((first, _)) = seen.iter().find(|(_, s)| *s == o) {
            return Err(format!("{field} is the same TSA (scheme, host and port) as {first}; list each TSA once"));
        }
        seen.push((field, o));
    }
    Ok(named.into_iter().map(|(_, u)| u).collect())
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
        let concurrency = concurrency::build(spec.concurrency.as_ref(), &format!("{}.{name}", Self::NAME))?;
        entry_or_unusable(Self::NAME, name, unset, || tsa_target(spec, aggregate, concurrency, ctx))
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

fn tsa_target(
    spec: TsaSpec,
    aggregate: Option<AggregateSpec>,
    concurrency: Option<u32>,
    ctx: &LoadContext,
) -> Result<Entry<TsaTarget>, String> {
    let urls = tsa_urls(spec.url, spec.urls)?;
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
    let cert_expiry_warn_days = match spec.cert_expiry_warn_days {
        None => DEFAULT_CERT_EXPIRY_WARN_DAYS,
        Some(Flex(days)) if days <= MAX_CERT_EXPIRY_WARN_DAYS => days,
        Some(_) => {
            return Err(format!("certExpiryWarnDays must be a number of days from 0 to {MAX_CERT_EXPIRY_WARN_DAYS}"));
        }
    };
    Ok(Entry::Ready(TsaTarget {
        urls: urls.into_iter().map(Endpoint::new).collect(),
        policy_oid,
        trust_bundle: spec.trust_bundle.map(|p| relative_to(&ctx.root, &p)),
        timeout,
        cert_expiry_warn_days,
        aggregate,
        concurrency,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::anchor::targets::TargetsConfig;
    use crate::config::ConfigErrors;
    use crate::config::vars::Vars;

    fn parse(yaml: &str, vars: &[(&str, &str)]) -> Result<TargetsConfig, ConfigErrors> {
        let vars = Vars::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TargetsConfig::parse(yaml.as_bytes(), Path::new("anchors.yaml"), &LoadContext { vars, root: "/srv".into() })
    }

    fn entry(yaml: &str, vars: &[(&str, &str)]) -> TsaTarget {
        let t = parse(yaml, vars).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        t.rfc3161["d"].ready().cloned().expect("a usable entry")
    }

    /// The one error line for `yaml`.
    fn error(yaml: &str) -> String {
        let e = parse(yaml, &[]).expect_err(yaml);
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].to_string()
    }

    fn shown(t: &TsaTarget) -> Vec<&str> {
        t.urls.iter().map(Endpoint::expose).collect()
    }

    #[test]
    fn urls_are_kept_in_order_and_one_that_comes_out_empty_is_left_out() {
        let t = entry(
            "rfc3161:\n  d: {urls: ['https://a.example/tsa', '${BACKUP:-}', '${THIRD}']}\n",
            &[("THIRD", "http://c.example:3180/")],
        );
        assert_eq!(shown(&t), ["https://a.example/tsa", "http://c.example:3180/"]);
        assert_eq!(t.cert_expiry_warn_days, DEFAULT_CERT_EXPIRY_WARN_DAYS);
        let t = entry("rfc3161:\n  d: {url: 'https://a.example', certExpiryWarnDays: '7'}\n", &[]);
        assert_eq!((shown(&t), t.cert_expiry_warn_days), (vec!["https://a.example"], 7));
        assert_eq!(
            entry("rfc3161:\n  d: {url: 'https://a.example', certExpiryWarnDays: 0}\n", &[]).cert_expiry_warn_days,
            0
        );
        // A URL whose variable is not set makes the entry unusable, as for url.
        let t = parse("rfc3161:\n  d: {urls: ['https://a.example', '${UNSET}']}\n", &[]).expect("valid");
        assert_eq!(t.rfc3161["d"], Entry::Unusable("UNSET is not set (used by rfc3161.d.urls[1])".into()));
    }

    #[test]
    fn a_bad_list_of_urls_is_one_line_naming_the_file_entry_and_field_never_the_value() {
        for (yaml, reason) in [
            ("{url: 'https://a.example', urls: ['https://b.example']}", "give either url or urls, not both"),
            ("{urls: []}", "urls lists no URL; list at least one TSA (or use url)"),
            ("{urls: ['${EMPTY:-}']}", "urls lists no URL; list at least one TSA (or use url)"),
            ("{policyOID: '1.2.3'}", "url (one TSA) or urls (a list, tried in order) is required"),
            (
                "{urls: ['https://a.example', 'ftp://u:hunter2-secret@b.example/']}",
                "urls[1] must be an http:// or https:// URL",
            ),
            (
                "{urls: ['https://a.example', 'https://u:hunter2-secret@b.example:99999/']}",
                "urls[1] is not a valid URL (invalid port number)",
            ),
            ("{url: 'http://hunter2-secret:x@'}", "url is not a valid URL (empty host)"),
            (
                "{urls: ['https://a.example/one', 'http://b.example', 'https://A.example:443/two?key=hunter2-secret']}",
                "urls[2] is the same TSA (scheme, host and port) as urls[0]; list each TSA once",
            ),
            (
                "{url: 'https://a.example', certExpiryWarnDays: 3651}",
                "certExpiryWarnDays must be a number of days from 0 to 3650",
            ),
        ] {
            let line = error(&format!("rfc3161:\n  d: {yaml}\n"));
            assert_eq!(line, format!("anchors.yaml: rfc3161.d: {reason}"), "{yaml}");
        }
        let many: Vec<String> = (0..=MAX_URLS).map(|i| format!("'https://t{i}.example'")).collect();
        let line = error(&format!("rfc3161:\n  d: {{urls: [{}]}}\n", many.join(", ")));
        assert!(line.ends_with("urls lists 17 URLs; at most 16 are allowed"), "{line}");
        let e = parse("rfc3161:\n  d: {urls: 'https://a.example'}\n", &[]).expect_err("not a list");
        let line = e.0[0].to_string();
        assert_eq!(line, "anchors.yaml: rfc3161.d.urls: invalid type: string \"…\", expected a sequence");
    }

    #[test]
    fn the_secrets_of_every_url_are_the_entrys_secrets() {
        let t = entry(
            "rfc3161:\n  d: {urls: ['https://alice:first-Secret-1@a.example/tsa', 'https://b.example/v1/k3y-0123456789abcdef']}\n",
            &[],
        );
        let redactor = t.secrets().redactor();
        let text = "a said first-Secret-1, b said /v1/k3y-0123456789abcdef";
        let cleaned = redactor.clean(text);
        assert!(!cleaned.contains("first-Secret-1") && !cleaned.contains("k3y-0123456789abcdef"), "{cleaned}");
        assert_eq!(format!("{:?}", t.urls), "[Endpoint(https://a.example/…), Endpoint(https://b.example/…)]");
    }

    #[test]
    fn a_tsa_is_named_by_its_scheme_host_and_port_only() {
        assert_eq!(origin("https://u:pw@TSA.Example/path?key=1").as_deref(), Ok("https://tsa.example"));
        assert_eq!(origin("https://tsa.example:443/").as_deref(), Ok("https://tsa.example"));
        assert_eq!(origin("http://127.0.0.1:3180/").as_deref(), Ok("http://127.0.0.1:3180"));
        assert_eq!(origin("http://[::1]:8080/x").as_deref(), Ok("http://[::1]:8080"));
        assert!(origin("mailto:tsa@example").is_err());
    }
}
