//! The TSA board: what each configured time-stamp authority URL did last. The `rfc3161`
//! drivers write it, `/health` shows it, and `/metrics` renders it at scrape time.
//!
//! It is kept beside the registry, as the namespace series are, for one more reason: the time
//! a TSA's signing certificate has left is worked out when Prometheus asks, from the injected
//! clock, so it does not go stale between daily anchors. The board outlives config reloads
//! (drivers are rebuilt, the board is not), so a URL's health and counters carry on for as
//! long as its entry lists it, and go when it no longer does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::namespace::{Family, Kind, escape};
use crate::clock::{Clock, MonoMs, WallMs};
use crate::model::ErrorClass;

/// The families the board renders, in the order they are written.
pub(crate) const FAMILIES: [Family; 4] = [
    Family {
        name: "vmsh_tsa_up",
        help: "1 if the TSA URL's last time-stamp request gave a usable token, 0 if it failed",
        kind: Kind::Gauge,
        labels: &["target", "url"],
    },
    Family {
        name: "vmsh_tsa_requests_total",
        help: "Time-stamp requests to the TSA URL by result (success, network, auth, validation, unknown)",
        kind: Kind::Counter,
        labels: &["result", "target", "url"],
    },
    Family {
        name: "vmsh_tsa_cert_expiry_seconds",
        help: "Seconds until the TSA's signing certificate expires (negative once it has), as of the scrape",
        kind: Kind::Gauge,
        labels: &["target", "url"],
    },
    Family {
        name: "vmsh_tsa_cert_expiry_warning_seconds",
        help: "How long before its signing certificate expires a TSA is warned about (certExpiryWarnDays)",
        kind: Kind::Gauge,
        labels: &["target"],
    },
];

/// Results a request is counted under: a token, or the class of its failure.
const RESULTS: [&str; 5] = ["success", "network", "auth", "validation", "unknown"];

fn result_index(class: ErrorClass) -> usize {
    match class {
        ErrorClass::Network => 1,
        ErrorClass::Auth => 2,
        ErrorClass::Validation => 3,
        ErrorClass::Unknown => 4,
    }
}

/// A TSA URL's last failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaFailure {
    /// How it failed.
    pub class: ErrorClass,
    /// What went wrong, already cleaned of secrets by the driver.
    pub message: String,
    /// When (Unix ms).
    pub at_ms: WallMs,
}

/// A TSA URL as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsaUrlStatus {
    /// The `rfc3161` entry that lists it.
    pub entry: String,
    /// `scheme://host[:port]`: never its credentials, path or query.
    pub url: String,
    /// Whether its last request gave a usable token; `None` before the first.
    pub up: Option<bool>,
    /// Requests that failed since its last success.
    pub consecutive_failures: u32,
    /// Its last failure since its last success.
    pub last_error: Option<TsaFailure>,
    /// When it last gave a usable token (Unix ms).
    pub last_success_ms: Option<WallMs>,
    /// When the certificate that signed its last token expires (Unix ms).
    pub cert_not_after_ms: Option<WallMs>,
    /// Until when it is tried after the entry's other URLs (Unix ms), after a failure.
    pub tried_last_until_ms: Option<WallMs>,
}

/// The signing certificate of a token, as far as the board keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Certificate {
    /// Identifies the certificate (a digest of it), so a new one is warned about afresh.
    id: String,
    not_after_ms: WallMs,
    /// When an expiry warning about it was last logged (Unix ms).
    warned_ms: Option<WallMs>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlRecord {
    url: String,
    up: Option<bool>,
    consecutive_failures: u32,
    last_error: Option<TsaFailure>,
    last_success_ms: Option<WallMs>,
    certificate: Option<Certificate>,
    tried_last_until: Option<MonoMs>,
    requests: [u64; RESULTS.len()],
}

impl UrlRecord {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            up: None,
            consecutive_failures: 0,
            last_error: None,
            last_success_ms: None,
            certificate: None,
            tried_last_until: None,
            requests: [0; RESULTS.len()],
        }
    }
}

#[derive(Debug, Default)]
struct EntryRecord {
    warn_within_ms: i64,
    /// In the entry's order.
    urls: Vec<UrlRecord>,
}

/// What every TSA URL of the running config did last; see the module's comment.
pub struct TsaBoard {
    clock: Arc<dyn Clock>,
    entries: Mutex<BTreeMap<String, EntryRecord>>,
}

impl std::fmt::Debug for TsaBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsaBoard").field("entries", &*self.lock()).finish_non_exhaustive()
    }
}

impl TsaBoard {
    /// An empty board telling time by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, entries: Mutex::default() }
    }

    /// The clock the board and the drivers writing it tell time by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, EntryRecord>> {
        // Every update leaves the map consistent, so a panic elsewhere cannot have broken it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists entry `entry`'s URLs, in order, and its warning window. A URL it listed before
    /// keeps what is known of it; one it no longer lists is forgotten.
    pub fn register(&self, entry: &str, urls: &[String], warn_within_ms: i64) {
        let mut entries = self.lock();
        let record = entries.entry(entry.to_string()).or_default();
        let mut old = std::mem::take(&mut record.urls);
        record.urls = urls
            .iter()
            .map(|u| match old.iter().position(|r| r.url == *u) {
                Some(i) => old.swap_remove(i),
                None => UrlRecord::new(u),
            })
            .collect();
        record.warn_within_ms = warn_within_ms;
    }

    /// Forgets every entry not in `entries` (a reload removed it).
    pub fn retain(&self, entries: &[&str]) {
        self.lock().retain(|name, _| entries.contains(&name.as_str()));
    }

    /// Until when (monotonic ms) each of `urls` of `entry` is to be tried last; `None` for a
    /// URL that is not (or not on the board).
    pub fn tried_last_until(&self, entry: &str, urls: &[String]) -> Vec<Option<MonoMs>> {
        let entries = self.lock();
        let record = entries.get(entry);
        urls.iter()
            .map(|u| record.and_then(|r| r.urls.iter().find(|x| x.url == *u)).and_then(|x| x.tried_last_until))
            .collect()
    }

    fn with_url<T>(&self, entry: &str, url: &str, f: impl FnOnce(&mut UrlRecord) -> T) -> Option<T> {
        let mut entries = self.lock();
        // A driver of a config replaced meanwhile may still finish a request: nothing to note.
        let record = entries.get_mut(entry)?.urls.iter_mut().find(|r| r.url == url)?;
        Some(f(record))
    }

    /// `url` of `entry` gave a usable token, signed by a certificate identified by `id` that
    /// expires at `not_after_ms`, when the token carried it.
    pub fn succeeded(&self, entry: &str, url: &str, certificate: Option<(&str, WallMs)>) {
        let now = self.clock.wall_ms();
        self.with_url(entry, url, |r| {
            r.up = Some(true);
            r.consecutive_failures = 0;
            r.last_error = None;
            r.last_success_ms = Some(now);
            r.tried_last_until = None;
            r.requests[0] = r.requests[0].saturating_add(1);
            if let Some((id, not_after_ms)) = certificate {
                let warned_ms = r.certificate.as_ref().filter(|c| c.id == id).and_then(|c| c.warned_ms);
                r.certificate = Some(Certificate { id: id.to_string(), not_after_ms, warned_ms });
            }
        });
    }

    /// `url` of `entry` failed; it is to be tried last until `tried_last_until` (monotonic
    /// ms). `message` must be clean of secrets already.
    pub fn failed(&self, entry: &str, url: &str, class: ErrorClass, message: &str, tried_last_until: MonoMs) {
        let now = self.clock.wall_ms();
        self.with_url(entry, url, |r| {
            r.up = Some(false);
            r.consecutive_failures = r.consecutive_failures.saturating_add(1);
            r.last_error = Some(TsaFailure { class, message: message.to_string(), at_ms: now });
            r.tried_last_until = Some(tried_last_until);
            let i = result_index(class);
            r.requests[i] = r.requests[i].saturating_add(1);
        });
    }

    /// Whether an expiry warning about certificate `id` of `url` is to be logged now, as
    /// `due` decides from when one was last logged (`None`: never); a warning decided here
    /// is recorded at once, so two anchors finishing together log it once.
    pub fn warning_due(&self, entry: &str, url: &str, id: &str, due: impl FnOnce(Option<WallMs>) -> bool) -> bool {
        let now = self.clock.wall_ms();
        self.with_url(entry, url, |r| {
            let Some(c) = r.certificate.as_mut().filter(|c| c.id == id) else { return false };
            let yes = due(c.warned_ms);
            if yes {
                c.warned_ms = Some(now);
            }
            yes
        })
        .unwrap_or(false)
    }

    /// Every URL of every entry, by entry and in each entry's order.
    pub fn snapshot(&self) -> Vec<TsaUrlStatus> {
        let now_mono = self.clock.mono_ms();
        let entries = self.lock();
        let mut out = Vec::new();
        for (entry, record) in entries.iter() {
            for r in &record.urls {
                out.push(TsaUrlStatus {
                    entry: entry.clone(),
                    url: r.url.clone(),
                    up: r.up,
                    consecutive_failures: r.consecutive_failures,
                    last_error: r.last_error.clone(),
                    last_success_ms: r.last_success_ms,
                    cert_not_after_ms: r.certificate.as_ref().map(|c| c.not_after_ms),
                    tried_last_until_ms: r
                        .tried_last_until
                        .filter(|until| *until > now_mono)
                        .map(|until| self.clock.wall_of_mono(until)),
                });
            }
        }
        out
    }

    /// Appends the board's families in the Prometheus text format; nothing when no `rfc3161`
    /// entry is configured.
    pub fn render_into(&self, text: &mut String) {
        let now = self.clock.wall_ms();
        let entries = self.lock();
        if entries.is_empty() {
            return;
        }
        let mut out: [String; FAMILIES.len()] = std::array::from_fn(|i| {
            let f = &FAMILIES[i];
            format!("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.kind.as_str())
        });
        let headers: [usize; FAMILIES.len()] = std::array::from_fn(|i| out[i].len());
        for (entry, record) in entries.iter() {
            let target = escape(&format!("rfc3161:{entry}")).into_owned();
            let _ = writeln!(
                out[3],
                "{}{{target=\"{target}\"}} {}",
                FAMILIES[3].name,
                record.warn_within_ms.div_euclid(1000)
            );
            for r in &record.urls {
                let url = escape(&r.url);
                let labels = format!("target=\"{target}\",url=\"{url}\"");
                if let Some(up) = r.up {
                    let _ = writeln!(out[0], "{}{{{labels}}} {}", FAMILIES[0].name, u8::from(up));
                }
                for (result, n) in RESULTS.iter().zip(r.requests) {
                    let _ = writeln!(out[1], "{}{{result=\"{result}\",{labels}}} {n}", FAMILIES[1].name);
                }
                if let Some(c) = &r.certificate {
                    let left = c.not_after_ms.saturating_sub(now).div_euclid(1000);
                    let _ = writeln!(out[2], "{}{{{labels}}} {left}", FAMILIES[2].name);
                }
            }
        }
        for (body, header) in out.iter().zip(headers) {
            if body.len() > header {
                text.push_str(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const T0: WallMs = 1_800_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    fn board() -> (ManualClock, TsaBoard) {
        let clock = ManualClock::new(T0);
        let board = TsaBoard::new(Arc::new(clock.clone()));
        board.register("tsa", &["https://a.example".into(), "https://b.example:8443".into()], 30 * DAY_MS);
        (clock, board)
    }

    #[test]
    fn a_url_is_unknown_until_tried_then_up_or_down_with_its_streak_and_error() {
        let (clock, board) = board();
        assert_eq!(board.snapshot()[0].up, None);
        board.failed("tsa", "https://a.example", ErrorClass::Network, "cannot connect", 300_000);
        board.failed("tsa", "https://a.example", ErrorClass::Validation, "untrusted token", 300_000);
        let a = &board.snapshot()[0];
        assert_eq!((a.up, a.consecutive_failures), (Some(false), 2));
        assert_eq!(
            a.last_error.as_ref().map(|e| (e.class, e.message.as_str())),
            Some((ErrorClass::Validation, "untrusted token"))
        );
        assert_eq!(a.tried_last_until_ms, Some(T0 + 300_000));
        clock.advance(1_000);
        board.succeeded("tsa", "https://a.example", Some(("c1", T0 + 10 * DAY_MS)));
        let a = &board.snapshot()[0];
        assert_eq!((a.up, a.consecutive_failures, a.last_error.clone()), (Some(true), 0, None));
        assert_eq!(
            (a.last_success_ms, a.cert_not_after_ms, a.tried_last_until_ms),
            (Some(T0 + 1_000), Some(T0 + 10 * DAY_MS), None)
        );
    }

    #[test]
    fn a_reload_keeps_what_is_known_of_the_urls_still_listed_and_forgets_the_rest() {
        let (_, board) = board();
        board.failed("tsa", "https://b.example:8443", ErrorClass::Network, "down", 1);
        board.register("other", &["https://c.example".into()], DAY_MS);
        // b now first, a gone, d new.
        board.register("tsa", &["https://b.example:8443".into(), "https://d.example".into()], DAY_MS);
        board.retain(&["tsa"]);
        let shown: Vec<(String, String, Option<bool>)> =
            board.snapshot().into_iter().map(|s| (s.entry, s.url, s.up)).collect();
        assert_eq!(
            shown,
            [
                ("tsa".to_string(), "https://b.example:8443".to_string(), Some(false)),
                ("tsa".to_string(), "https://d.example".to_string(), None)
            ]
        );
        // A driver of the old config finishing late changes nothing.
        board.succeeded("tsa", "https://a.example", None);
        board.failed("other", "https://c.example", ErrorClass::Network, "down", 1);
        assert_eq!(board.snapshot().len(), 2);
    }

    #[test]
    fn a_certificate_warning_is_due_as_the_caller_decides_and_afresh_for_a_new_certificate() {
        let (clock, board) = board();
        let url = "https://a.example";
        assert!(!board.warning_due("tsa", url, "c1", |_| true), "no certificate seen yet");
        board.succeeded("tsa", url, Some(("c1", T0 + DAY_MS)));
        assert!(board.warning_due("tsa", url, "c1", |last| last.is_none()));
        assert!(!board.warning_due("tsa", url, "c1", |last| last.is_none()), "recorded once decided");
        clock.advance(DAY_MS);
        board.succeeded("tsa", url, Some(("c1", T0 + DAY_MS)));
        assert!(!board.warning_due("tsa", url, "c1", |last| last.is_none()), "the same certificate keeps its record");
        assert!(board.warning_due("tsa", url, "c1", |last| last == Some(T0)), "told when it was last logged");
        board.succeeded("tsa", url, Some(("c2", T0 + 5 * DAY_MS)));
        assert!(board.warning_due("tsa", url, "c2", |last| last.is_none()), "a new certificate is new");
    }

    #[test]
    fn the_board_renders_every_url_with_zero_counters_and_the_seconds_left_as_of_the_scrape() {
        let (clock, board) = board();
        let mut empty = String::new();
        TsaBoard::new(Arc::new(clock.clone())).render_into(&mut empty);
        assert_eq!(empty, "", "nothing without an rfc3161 entry");
        board.succeeded("tsa", "https://a.example", Some(("c1", T0 + 10 * DAY_MS)));
        board.failed("tsa", "https://b.example:8443", ErrorClass::Auth, "refused", 1);
        clock.advance(DAY_MS);
        let mut text = String::new();
        board.render_into(&mut text);
        let a = "target=\"rfc3161:tsa\",url=\"https://a.example\"";
        let b = "target=\"rfc3161:tsa\",url=\"https://b.example:8443\"";
        for line in [
            format!("vmsh_tsa_up{{{a}}} 1"),
            format!("vmsh_tsa_up{{{b}}} 0"),
            format!("vmsh_tsa_requests_total{{result=\"success\",{a}}} 1"),
            format!("vmsh_tsa_requests_total{{result=\"network\",{a}}} 0"),
            format!("vmsh_tsa_requests_total{{result=\"auth\",{b}}} 1"),
            format!("vmsh_tsa_cert_expiry_seconds{{{a}}} {}", 9 * 86_400),
            "vmsh_tsa_cert_expiry_warning_seconds{target=\"rfc3161:tsa\"} 2592000".to_string(),
            "# TYPE vmsh_tsa_requests_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(!text.contains(&format!("vmsh_tsa_cert_expiry_seconds{{{b}}}")), "no certificate seen from b");
        assert_eq!(text.lines().filter(|l| l.starts_with("vmsh_tsa_requests_total")).count(), 10);
    }
}
