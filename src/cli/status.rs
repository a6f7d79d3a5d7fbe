//! `vmsh-scheduler status [--url URL]`: reads a running scheduler's `/health` and prints the
//! status page's table in a terminal.
//!
//! Exit codes, so scripts can use it as a check: 0 healthy or degraded, 1 unhealthy, 2 the
//! service could not be reached or did not answer with its health document. Only this
//! service's health counts ([`identify`]): another service's `{"status": "ok"}` on the same
//! address is not taken for a healthy scheduler.
//!
//! The answer is read into the typed contract ([`Health`]), which tolerates older schedulers'
//! documents. Rendering is a pure function of it and a time ([`render`]), so it is tested on
//! sample documents. Ages are computed against the server's `nowMs` when /health has it,
//! so a skewed local clock does not distort them. Everything printed from /health goes
//! through [`clean`]: an error message carrying terminal escape sequences (an `exec` command's
//! stderr can) is shown, not obeyed.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::clock::{Clock, SystemClock, WallMs};
use crate::health::contract::{Cadence, Config, Health, Namespace, Open, ReloadResult};

/// Exit code: healthy or degraded.
pub const EXIT_OK: i32 = 0;
/// Exit code: unhealthy.
pub const EXIT_UNHEALTHY: i32 = 1;
/// Exit code: not reachable, or not a health document.
pub const EXIT_UNREACHABLE: i32 = 2;

/// How long the whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read: /health is about 1.3 KiB a namespace (130 MiB at 100,000), and an
/// endpoint that sends more is not this service.
const MAX_HEALTH_BYTES: usize = 512 << 20;
/// Longest error message shown in the table; /health has the whole text.
const MAX_ERROR_CHARS: usize = 80;
/// Cadences in the order the config names them; unknown ones sort after.
const ORDER: [&str; 3] = ["fast", "strong", "cold"];

/// Why /health could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse.
    #[error("{url:?} is not a valid URL ({reason}); expected e.g. http://127.0.0.1:9090")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Nothing answered.
    #[error("cannot reach {url}: {reason}; is the scheduler running there? (--url or METRICS_PORT says where)")]
    Unreachable {
        /// The health URL.
        url: String,
        /// The innermost cause.
        reason: String,
    },
    /// Something answered, but not with a health document.
    #[error("{url} did not answer with vmsh-scheduler's health JSON: {reason}")]
    NotHealth {
        /// The health URL.
        url: String,
        /// What came back instead.
        reason: String,
    },
}

/// The default URL: the local scheduler on `port`, at its bind address unless that is a
/// wildcard (0.0.0.0 or ::), which is reached over loopback.
pub fn default_url(bind: IpAddr, port: u16) -> String {
    match bind {
        IpAddr::V4(a) if a.is_unspecified() => format!("http://127.0.0.1:{port}"),
        IpAddr::V6(a) if a.is_unspecified() => format!("http://[::1]:{port}"),
        IpAddr::V4(a) => format!("http://{a}:{port}"),
        IpAddr::V6(a) => format!("http://[{a}]:{port}"),
    }
}

/// The /health URL for what the user gave: a base URL (`http://host:9090`, with or without a
/// trailing slash, or without the scheme), or the /health URL itself.
pub fn health_url(url: &str) -> String {
    let url = url.trim();
    let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let base = with_scheme.trim_end_matches('/');
    if base.ends_with("/health") { base.to_string() } else { format!("{base}/health") }
}

/// Runs the command: fetch, print, and return the exit code.
pub fn run(url: &str, color: bool) -> i32 {
    let url = health_url(url);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchError::Unreachable { url: url.clone(), reason: format!("cannot start I/O: {e}") })
        .and_then(|rt| rt.block_on(fetch(&url)));
    match result {
        Ok(health) => {
            crate::stdio::out(&render(&health, &url, SystemClock::new().wall_ms(), color));
            exit_code(&health)
        }
        Err(e) => {
            crate::stdio::err(&format!("vmsh-scheduler status: {e}"));
            EXIT_UNREACHABLE
        }
    }
}

/// GETs the health document. 503 is a valid answer (unhealthy); both carry JSON.
pub async fn fetch(url: &str) -> Result<Health, FetchError> {
    fetch_at_most(url, MAX_HEALTH_BYTES).await
}

/// [`fetch`], reading at most `limit` bytes of body.
async fn fetch_at_most(url: &str, limit: usize) -> Result<Health, FetchError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| FetchError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // The scheduler is asked directly: a proxy from the environment is not meant for it.
        .no_proxy()
        .build()
        .map_err(|e| FetchError::Unreachable { url: url.to_string(), reason: format!("no HTTP client: {e}") })?;
    let unreachable = |e: reqwest::Error| FetchError::Unreachable { url: url.to_string(), reason: cause(&e) };
    let mut response = client.get(parsed).header("accept", "application/json").send().await.map_err(unreachable)?;
    let status = response.status();
    let not_health = |reason: String| FetchError::NotHealth { url: url.to_string(), reason };
    if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Err(not_health(format!("HTTP {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > limit {
            let most =
                if limit.is_multiple_of(1 << 20) { format!("{} MiB", limit >> 20) } else { format!("{limit} bytes") };
            return Err(not_health(format!("HTTP {status} with a body of more than {most}")));
        }
        body.extend_from_slice(&chunk);
    }
    let health: Value = serde_json::from_slice(&body)
        .map_err(|e| not_health(format!("HTTP {status} with a body that is not JSON: {e}")))?;
    identify(&health).map_err(|why| not_health(format!("HTTP {status} with JSON that {why}")))?;
    serde_path_to_error::deserialize(health).map_err(|e| {
        let why = format!("{}: {}", e.path(), e.inner());
        not_health(format!(
            "HTTP {status} with JSON that does not read as its /health at {}",
            clean(&truncate(&why, 200))
        ))
    })
}

/// Checks that a JSON document is this service's health: it names the service
/// (`"service": "vmsh-scheduler"`) and has a `status`, or — from a scheduler older than the
/// `service` field, or the original service — it has the whole shape of /health (`status`,
/// `uptime`, `lastTick` and `namespaces`, each with its `status`). Otherwise says why not.
pub fn identify(health: &Value) -> Result<(), String> {
    let Some(doc) = health.as_object() else {
        return Err("is not an object".into());
    };
    let has_status = doc.get("status").is_some_and(Value::is_string);
    match doc.get("service") {
        Some(Value::String(s)) if s == crate::health::SERVICE => {
            if has_status {
                Ok(())
            } else {
                Err("names vmsh-scheduler but has no \"status\"".into())
            }
        }
        Some(other) => {
            Err(format!("is the health of service {}, not of vmsh-scheduler", clean(&truncate(&other.to_string(), 80))))
        }
        None => {
            let namespaces_ok = doc
                .get("namespaces")
                .and_then(Value::as_object)
                .is_some_and(|ns| ns.values().all(|n| n.get("status").is_some_and(Value::is_string)));
            let shape = has_status
                && doc.get("uptime").is_some_and(Value::is_number)
                && doc.get("lastTick").is_some_and(|t| t.is_null() || t.is_number())
                && namespaces_ok;
            if shape {
                Ok(())
            } else {
                Err("names no \"service\" and lacks the shape of vmsh-scheduler's /health (status, uptime, lastTick, namespaces)".into())
            }
        }
    }
}

/// The innermost cause of a request error, e.g. `Connection refused (os error 111)`.
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// 0 healthy or degraded, 1 otherwise.
pub fn exit_code(health: &Health) -> i32 {
    if health.is_serving() { EXIT_OK } else { EXIT_UNHEALTHY }
}

/// The whole report: a summary of the service, config and state, then one row per cadence.
/// `local_now` is used only when /health has no `nowMs`.
pub fn render(health: &Health, url: &str, local_now: WallMs, color: bool) -> String {
    let now = health.now_ms.unwrap_or(local_now);
    let paint = Paint(color);
    let mut out = String::new();
    let status = health.status.as_str();
    let mut facts = Vec::new();
    if let Some(up) = health.uptime {
        facts.push(format!("up {}", duration((up * 1000.0) as i64)));
    }
    facts.push(match (health.draining, health.ready) {
        (true, _) => "draining".to_string(),
        (false, true) => "ready".to_string(),
        (false, false) => "not ready".to_string(),
    });
    let _ = writeln!(
        out,
        "vmsh-scheduler {} at {}: {} ({})",
        clean(health.version.as_deref().unwrap_or_default()),
        clean(url),
        paint.status(status, &clean(status)),
        facts.join(", ")
    );
    if let Some(e) = &health.error {
        let _ = writeln!(out, "error   {}", clean(e));
    }
    if let Some(config) = &health.config {
        render_config(&mut out, config, now, paint);
    }
    if let Some(state) = &health.state {
        let mut line = format!("state   {}", clean(&state.path));
        let _ = write!(line, "  last write {}", ago(state.last_write_ms, now));
        let _ = writeln!(out, "{line}");
        if let Some(e) = &state.error {
            let _ = writeln!(out, "        {}", paint.bad(&format!("error: {}", clean(e))));
        }
    }
    if let Some(c) = &health.cluster {
        render_cluster(&mut out, c, now, paint);
    }
    // Quiet while batches are read as they should be: only a stuck read is news.
    if let Some(reader) = &health.batch_reader {
        for read in &reader.stuck {
            let since = ago(Some(read.since_ms), now);
            let line = format!("batches read of {} stuck since {since}", clean(&read.path));
            let _ = writeln!(out, "{}", paint.bad(&line));
        }
        if let Some(e) = &reader.error {
            let _ = writeln!(out, "batches {}", paint.bad(&clean(e)));
        }
    }
    // The whole document lists every namespace; a summary (fleet mode) the worst of them.
    let listed: Vec<(&str, &Namespace)> = match (&health.namespaces, &health.summary) {
        (Some(all), _) => all.iter().map(|(name, ns)| (name.as_str(), ns)).collect(),
        (None, Some(summary)) => summary.worst.iter().map(|w| (w.name.as_str(), &w.namespace)).collect(),
        (None, None) => return out,
    };
    out.push('\n');
    let mut table = Table::new([
        "NAMESPACE",
        "CADENCE",
        "STATUS",
        "TARGET",
        "EVERY",
        "LAST ANCHOR",
        "NEXT DUE",
        "BACKOFF",
        "PENDING",
        "LAST ERROR",
    ]);
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for &(name, ns) in &listed {
        let ns_status = ns.status.as_str();
        *counts.entry(ns_status).or_default() += 1;
        let cadences = cadences_of(ns);
        if cadences.is_empty() {
            table.row(vec![Cell::plain(clean(name)), Cell::plain("-"), Cell::status(ns_status)]);
        }
        for (kind, c) in cadences {
            table.row(cadence_row(name, ns_status, kind, &c, now));
        }
    }
    out.push_str(&table.render(paint));
    if let (None, Some(summary)) = (&health.namespaces, &health.summary) {
        if listed.is_empty() {
            out.push_str("(every namespace is ok)\n");
        }
        let by: Vec<String> = summary.by_status.iter().map(|(s, n)| format!("{n} {}", clean(s))).collect();
        let _ = writeln!(
            out,
            "{} namespace(s): {}; a summary (fleet mode): only those not ok are listed, the worst first; \
             /health?view=full or the status page has them all",
            summary.namespaces,
            by.join(", ")
        );
        return out;
    }
    if listed.is_empty() {
        out.push_str("(no namespaces in the running config)\n");
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {}", clean(s))).collect();
    let _ = writeln!(out, "{} namespace(s): {}", listed.len(), summary.join(", "));
    out
}

/// Cluster mode: this replica, its lease, and who holds how many namespaces.
fn render_cluster(out: &mut String, c: &crate::health::contract::Cluster, now: WallMs, paint: Paint) {
    let lease = if c.lease_valid {
        paint.good(&format!("lease valid for {:.1} s", c.lease_valid_for_s))
    } else {
        paint.bad("lease cannot be counted on: starting nothing")
    };
    let members: Vec<String> = c.members.iter().map(|(n, held)| format!("{} ({held})", clean(n))).collect();
    let _ = writeln!(
        out,
        "cluster node {}  {lease}  holds {}  last round {}",
        clean(&c.node),
        c.owned,
        ago(c.last_round_ms, now)
    );
    let _ = writeln!(out, "        members {}", if members.is_empty() { "–".to_string() } else { members.join(", ") });
    if c.unowned > 0 {
        let line = format!("{} namespace(s) without an owner for {:.0} s", c.unowned, c.unowned_for_s);
        let _ = writeln!(out, "        {}", paint.bad(&line));
    }
    if let Some(e) = &c.error {
        let _ = writeln!(out, "        {}", paint.bad(&format!("error: {}", clean(e))));
    }
}

fn render_config(out: &mut String, config: &Config, now: WallMs, paint: Paint) {
    let short: String = config.hash.chars().take(16).collect();
    let ellipsis = if config.hash.chars().count() > 16 { "…" } else { "" };
    let _ = writeln!(
        out,
        "config  {}  sha256 {}{ellipsis}  loaded {}",
        clean(&config.path),
        clean(&short),
        ago(Some(config.loaded_at_ms), now)
    );
    if let Some(targets) = &config.targets_path {
        let hash: String = config.targets_hash.as_deref().unwrap_or_default().chars().take(16).collect();
        let _ = writeln!(out, "        targets {}  sha256 {}…", clean(targets), clean(&hash));
    }
    match &config.last_reload {
        None => {
            let _ = writeln!(out, "        last reload: no change since start");
        }
        Some(r) if r.result == ReloadResult::Success => {
            let applied = format!("applied {}", ago(Some(r.at_ms), now));
            let _ = writeln!(out, "        last reload: {}", paint.good(&applied));
        }
        Some(r) => {
            let rejected = format!("rejected {}; the previous config keeps running", ago(Some(r.at_ms), now));
            let _ = writeln!(out, "        last reload: {}", paint.bad(&rejected));
            for e in &r.errors {
                let _ = writeln!(out, "          {}", clean(e));
            }
        }
    }
}

/// One row of the table.
fn cadence_row(name: &str, ns_status: &str, kind: &str, c: &Cadence, now: WallMs) -> Vec<Cell> {
    let status = c.status.as_ref().map_or(ns_status, Open::as_str);
    let next = if c.in_flight { "anchoring".to_string() } else { until(c.next_due_ms, now) };
    let pending = match &c.pending {
        Some(p) => format!("{}/{}", p.depth, p.required),
        None => "-".to_string(),
    };
    let note = match (&c.last_error, &c.waiting) {
        // An operator's pause says why nothing happens, before anything else.
        _ if c.paused.is_some() => {
            let p = c.paused.as_ref().map_or_else(String::new, |p| {
                let note = p.note.as_deref().map_or_else(String::new, |n| format!(": {}", clean(n)));
                format!("paused by {}{note}", clean(&p.by))
            });
            Cell::warn(truncate(&p, MAX_ERROR_CHARS))
        }
        (Some(e), _) => {
            Cell::bad(truncate(&format!("{}: {}", clean(e.class.as_str()), clean(&e.message)), MAX_ERROR_CHARS))
        }
        (None, Some(w)) => Cell::plain(truncate(&format!("waiting: {}", clean(w)), MAX_ERROR_CHARS)),
        (None, None) => Cell::plain("-"),
    };
    vec![
        Cell::plain(clean(name)),
        Cell::plain(clean(kind)),
        Cell::status(status),
        Cell::plain(or_dash(clean(&c.target))),
        Cell::plain(or_dash(clean(&c.every))),
        Cell::plain(ago(c.last_success_ms, now)),
        Cell::plain(next),
        Cell::plain(c.backoff.to_string()),
        Cell::plain(pending),
        note,
    ]
}

/// A namespace's cadences in config order. A /health without `cadences` (the original
/// service's) still has `lastAnchor` (Unix seconds) per cadence, and the namespace's backoff.
fn cadences_of(ns: &Namespace) -> Vec<(&str, Cow<'_, Cadence>)> {
    let mut list: Vec<(&str, Cow<'_, Cadence>)> = match &ns.cadences {
        Some(c) => c.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v))).collect(),
        None => ns
            .last_anchor
            .iter()
            .map(|(k, secs)| {
                let c = Cadence {
                    last_success_ms: Some(secs.saturating_mul(1000)),
                    backoff: ns.backoff,
                    ..Cadence::default()
                };
                (k.as_str(), Cow::Owned(c))
            })
            .collect(),
    };
    let rank = |k: &str| ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len());
    list.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.0.cmp(b.0)));
    list
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_string() } else { s }
}

/// `42s`, `3m 5s`, `2h 10m`, `4d 1h` — the status page uses the same format.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        return format!("{s}s");
    }
    let (m, s) = (s / 60, s % 60);
    if m < 60 {
        return format!("{m}m {s}s");
    }
    let (h, m) = (m / 60, m % 60);
    if h < 24 {
        return format!("{h}h {m}m");
    }
    format!("{}d {}h", h / 24, h % 24)
}

/// How long ago `t` was: `5s ago`, or `never`.
pub fn ago(t: Option<WallMs>, now: WallMs) -> String {
    match t {
        Some(t) => format!("{} ago", duration(now.saturating_sub(t))),
        None => "never".to_string(),
    }
}

/// When `t` comes: `in 4s`, `now` (within a second), `overdue 3s`, or `-`.
pub fn until(t: Option<WallMs>, now: WallMs) -> String {
    let Some(t) = t else { return "-".to_string() };
    let d = t.saturating_sub(now);
    if d >= 1000 {
        format!("in {}", duration(d))
    } else if d > -1000 {
        "now".to_string()
    } else {
        format!("overdue {}", duration(d.saturating_neg()))
    }
}

/// Text from /health made safe for a terminal: control characters (escape sequences, line
/// breaks) and bidirectional overrides are shown escaped instead of acting on the terminal.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    fn good(self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn warn(self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn bad(self, s: &str) -> String {
        self.wrap("31", s)
    }
    /// `s` in the colour of `status`.
    fn status(self, status: &str, s: &str) -> String {
        match Tone::of(status) {
            Tone::Good => self.good(s),
            Tone::Warn => self.warn(s),
            Tone::Bad => self.bad(s),
            Tone::Plain => s.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

impl Tone {
    fn of(status: &str) -> Self {
        match status {
            "ok" | "healthy" => Tone::Good,
            "backing_off" | "degraded" | "paused" => Tone::Warn,
            "stale" | "unhealthy" => Tone::Bad,
            _ => Tone::Plain,
        }
    }
}

/// A table cell: its (already cleaned) text and colour.
struct Cell {
    text: String,
    tone: Tone,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self { text: text.into(), tone: Tone::Plain }
    }
    fn bad(text: impl Into<String>) -> Self {
        Self { text: text.into(), tone: Tone::Bad }
    }
    fn warn(text: impl Into<String>) -> Self {
        Self { text: text.into(), tone: Tone::Warn }
    }
    fn status(status: &str) -> Self {
        Self { text: or_dash(clean(status)), tone: Tone::of(status) }
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new<const N: usize>(header: [&'static str; N]) -> Self {
        Self { header: header.to_vec(), rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    fn render(&self, paint: Paint) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(&cell.text));
                }
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<(String, usize)>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            let mut l = String::new();
            for (i, (shown, w)) in cells.into_iter().enumerate() {
                l.push_str(&shown);
                if i < last {
                    l.push_str(&" ".repeat(widths.get(i).copied().unwrap_or(0).saturating_sub(w) + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(self.header.iter().map(|h| (h.to_string(), width(h))).collect(), &mut out);
        for row in &self.rows {
            let cells = row
                .iter()
                .map(|c| {
                    let shown = match c.tone {
                        Tone::Plain => c.text.clone(),
                        Tone::Good => paint.good(&c.text),
                        Tone::Warn => paint.warn(&c.text),
                        Tone::Bad => paint.bad(&c.text),
                    };
                    (shown, width(&c.text))
                })
                .collect();
            line(cells, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;
    use serde_json::json;

    const NOW: WallMs = 1_795_737_200_000;

    /// A sample document as `status` reads it.
    fn read(doc: &Value) -> Health {
        Health::deserialize(doc).expect("reads as the /health contract")
    }

    fn sample() -> Value {
        json!({
            "status": "degraded",
            "uptime": 3723.5,
            "lastTick": NOW - 100,
            "nowMs": NOW,
            "version": "0.1.0",
            "ready": true,
            "draining": false,
            "config": {
                "path": "namespaces.yaml",
                "hash": "c41f0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab",
                "targetsPath": "anchors.yaml", "targetsHash": "8a9d00112233445566778899aabbccddeeff",
                "loadedAtMs": NOW - 125_000,
                "lastReload": {"result": "failure", "atMs": NOW - 10_000, "hash": "ff",
                               "errors": ["namespaces.yaml: namespace \"x\": cadence.fast.every: \"0s\" is zero"]}
            },
            "state": {"path": "/var/lib/vmsh/scheduler.json", "origin": "current", "lastWriteMs": NOW - 1_000, "error": null},
            "namespaces": {
                "dao:vaultmesh": {
                    "lastAnchor": {"fast": (NOW - 5_000) / 1000},
                    "backoff": 0,
                    "status": "ok",
                    "cadences": {
                        "strong": {"target": "eip155:8453", "every": "34*fast", "periodSeconds": 3026,
                                   "lastSuccessMs": NOW - 3_725_000, "nextDueMs": null, "backoff": 0, "failures": 0,
                                   "inFlight": true, "waiting": null, "lastError": null,
                                   "pending": {"depth": 1, "required": 3, "sentMs": NOW - 20_000}, "status": "ok"},
                        "fast": {"target": "local:fast", "every": "89s", "periodSeconds": 89,
                                 "lastSuccessMs": NOW - 5_000, "nextDueMs": NOW + 84_000, "backoff": 0, "failures": 0,
                                 "inFlight": false, "waiting": null, "lastError": null, "pending": null, "status": "ok"}
                    }
                },
                "<script>alert(1)</script>": {
                    "lastAnchor": {},
                    "backoff": 2,
                    "status": "backing_off",
                    "cadences": {
                        "fast": {"target": "exec:notary", "every": "5s", "periodSeconds": 5,
                                 "lastSuccessMs": null, "nextDueMs": NOW - 3_000, "backoff": 2, "failures": 2,
                                 "inFlight": false, "waiting": null,
                                 "lastError": {"class": "network", "message": "ECONNREFUSED\n\u{1b}[2Jgone", "atMs": NOW - 4_000},
                                 "pending": null, "status": "backing_off"}
                    }
                },
                "later": {
                    "lastAnchor": {}, "backoff": 0, "status": "ok",
                    "cadences": {"cold": {"target": "rfc3161:tsa", "every": "1d", "periodSeconds": 86400,
                                          "lastSuccessMs": null, "nextDueMs": NOW + 200, "backoff": 0, "failures": 0,
                                          "inFlight": false, "waiting": "no batch", "lastError": null, "pending": null,
                                          "status": "ok"}}
                }
            }
        })
    }

    #[test]
    fn a_stuck_batch_read_is_shown_and_a_calm_reader_is_not() {
        let calm = render(&read(&sample()), "http://x/health", 0, false);
        assert!(!calm.contains("batches"), "{calm}");
        let mut h = sample();
        h["batchReader"] = json!({"stuck": [{"path": "/srv/out/batches/a/1.json", "sinceMs": NOW - 65_000}],
                                  "stuckTotal": 1, "error": "no batch can be read: 4 batch reads have not returned"});
        let out = render(&read(&h), "http://x/health", 0, false);
        assert!(out.contains("batches read of /srv/out/batches/a/1.json stuck since 1m 5s ago"), "{out}");
        assert!(out.contains("batches no batch can be read"), "{out}");
    }

    #[test]
    fn a_replicas_cluster_section_shows_its_lease_members_and_what_has_no_owner() {
        let single = render(&read(&sample()), "http://x/health", 0, false);
        assert!(!single.contains("cluster"), "{single}");
        let mut h = sample();
        h["cluster"] = json!({"node": "r1", "prefix": "/vmsh-scheduler/", "leaseValid": true, "leaseRenewedAgoS": 0.5,
            "leaseValidForS": 6.2, "leaseTtlS": 10, "members": {"r0": 3, "r1": 4}, "owned": 4, "unowned": 2,
            "unownedForS": 12.0, "lastRoundMs": NOW - 1_000, "error": null});
        let out = render(&read(&h), "http://x/health", 0, false);
        assert!(out.contains("cluster node r1  lease valid for 6.2 s  holds 4  last round 1s ago"), "{out}");
        assert!(out.contains("members r0 (3), r1 (4)"), "{out}");
        assert!(out.contains("2 namespace(s) without an owner for 12 s"), "{out}");
        h["cluster"]["leaseValid"] = json!(false);
        h["cluster"]["error"] = json!("etcd is unavailable");
        let out = render(&read(&h), "http://x/health", 0, false);
        assert!(out.contains("lease cannot be counted on") && out.contains("error: etcd is unavailable"), "{out}");
    }

    /// The header and rows of the table in a report.
    fn table_lines(out: &str) -> Vec<&str> {
        out.lines().skip_while(|l| !l.starts_with("NAMESPACE")).take_while(|l| !l.contains("namespace(s):")).collect()
    }

    #[test]
    fn status_table_has_one_row_per_cadence_in_config_order() {
        let out = render(&read(&sample()), "http://127.0.0.1:9090/health", 0, false);
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("dao:vaultmesh")).collect();
        assert_eq!(rows.len(), 2, "{out}");
        assert!(rows[0].contains("fast") && rows[1].contains("strong"), "{out}");
        assert!(out.contains("3 namespace(s): 1 backing_off, 2 ok"), "{out}");
    }

    #[test]
    fn status_table_columns_are_aligned() {
        let out = render(&read(&sample()), "http://x/health", 0, false);
        let lines = table_lines(&out);
        assert_eq!(lines.len(), 5, "{out}");
        let header = lines[0];
        for col in
            ["CADENCE", "STATUS", "TARGET", "EVERY", "LAST ANCHOR", "NEXT DUE", "BACKOFF", "PENDING", "LAST ERROR"]
        {
            let at = header.find(col).unwrap_or_else(|| panic!("no column {col} in {header:?}"));
            for row in &lines[1..] {
                let before: String = row.chars().take(at).collect();
                let first = row.chars().nth(at);
                assert!(
                    before.ends_with("  ") && first.is_some_and(|c| c != ' '),
                    "column {col} not aligned in {row:?}\n{out}"
                );
            }
        }
    }

    #[test]
    fn status_table_shows_ages_and_due_times_against_the_server_clock() {
        // The local clock (0) is ignored: /health says what time it is.
        let out = render(&read(&sample()), "http://x/health", 0, false);
        let fast = out.lines().find(|l| l.starts_with("dao:vaultmesh") && l.contains("local:fast")).unwrap_or("");
        assert!(fast.contains("5s ago") && fast.contains("in 1m 24s"), "{fast}");
        let strong = out.lines().find(|l| l.contains("eip155:8453")).unwrap_or("");
        assert!(strong.contains("1h 2m ago") && strong.contains("anchoring") && strong.contains("1/3"), "{strong}");
        let evil = out.lines().find(|l| l.contains("exec:notary")).unwrap_or("");
        assert!(evil.contains("never") && evil.contains("overdue 3s") && evil.contains("backing_off"), "{evil}");
        let later = out.lines().find(|l| l.starts_with("later")).unwrap_or("");
        assert!(later.contains("now") && later.contains("waiting: no batch"), "{later}");
        assert!(out.contains("up 1h 2m") && out.contains("loaded 2m 5s ago"), "{out}");
        assert!(out.contains("rejected 10s ago") && out.contains("cadence.fast.every"), "{out}");
        assert!(out.contains("last write 1s ago"), "{out}");
        assert!(out.contains("targets anchors.yaml  sha256 8a9d001122334455…"), "{out}");
    }

    #[test]
    fn status_table_without_server_time_uses_the_local_clock() {
        let mut h = sample();
        if let Some(o) = h.as_object_mut() {
            o.remove("nowMs");
        }
        let out = render(&read(&h), "http://x/health", NOW + 60_000, false);
        assert!(out.contains("1m 5s ago"), "{out}");
    }

    #[test]
    fn status_table_escapes_terminal_control_characters() {
        let out = render(&read(&sample()), "http://x/health", 0, false);
        assert!(!out.contains('\u{1b}'), "an escape sequence reached the terminal: {out:?}");
        assert!(out.contains(r"network: ECONNREFUSED\n\u{1b}[2Jgone"), "{out}");
        // A name that is markup elsewhere is plain text here, shown as it is.
        assert!(out.lines().any(|l| l.starts_with("<script>alert(1)</script>  fast")), "{out}");
        assert_eq!(clean("a\u{202E}b\tc"), r"a\u{202e}b\tc");
    }

    #[test]
    fn status_colours_only_when_asked() {
        let plain = render(&read(&sample()), "http://x/health", 0, false);
        let coloured = render(&read(&sample()), "http://x/health", 0, true);
        assert!(!plain.contains('\u{1b}'));
        assert!(coloured.contains("\u{1b}[33mdegraded\u{1b}[0m") && coloured.contains("\u{1b}[32mok\u{1b}[0m"));
        // Colour codes do not shift the columns.
        let strip = |s: &str| {
            s.replace("\u{1b}[31m", "").replace("\u{1b}[32m", "").replace("\u{1b}[33m", "").replace("\u{1b}[0m", "")
        };
        assert_eq!(strip(&coloured), plain);
    }

    #[test]
    fn status_reads_the_original_services_health() {
        let h = json!({"status": "healthy", "namespaces": {"dao": {"lastAnchor": {"fast": (NOW - 7_000) / 1000}, "backoff": 0, "status": "ok"}}});
        let out = render(&read(&h), "http://x/health", NOW, false);
        let row = out.lines().find(|l| l.starts_with("dao")).unwrap_or("");
        assert!(row.contains("fast") && row.contains("7s ago") && row.contains("ok"), "{out}");
    }

    #[test]
    fn status_of_a_health_actor_that_did_not_answer() {
        let h = json!({"status": "unhealthy", "error": "health actor did not answer: timeout"});
        let out = render(&read(&h), "http://x/health", NOW, false);
        assert!(out.contains("unhealthy") && out.contains("error   health actor did not answer"), "{out}");
        assert_eq!(exit_code(&read(&h)), EXIT_UNHEALTHY);
    }

    #[test]
    fn status_accepts_only_this_services_health() {
        let named = json!({"service": "vmsh-scheduler", "status": "unhealthy", "error": "health actor did not answer"});
        assert_eq!(identify(&named), Ok(()));
        let mut current = sample();
        current["service"] = json!("vmsh-scheduler");
        assert_eq!(identify(&current), Ok(()));
        // Schedulers from before the `service` field, and the original service, by their shape.
        assert_eq!(identify(&sample()), Ok(()));
        let original =
            json!({"status": "healthy", "uptime": 5.2, "lastTick": NOW, "namespaces": {"dao": {"status": "ok"}}});
        assert_eq!(identify(&original), Ok(()));
        let refused = [
            (json!({"status": "ok"}), "no \"service\""),
            (json!({"status": "healthy", "namespaces": {}}), "no \"service\""),
            (json!({"status": "healthy", "uptime": 1, "lastTick": 1, "namespaces": {"x": 1}}), "no \"service\""),
            (json!({"service": "billing", "status": "healthy"}), "service \"billing\""),
            (json!({"service": "vmsh-scheduler"}), "no \"status\""),
            (json!(["healthy"]), "not an object"),
        ];
        for (doc, why) in refused {
            let e = identify(&doc).expect_err("not this service's health");
            assert!(e.contains(why), "{doc}: {e}");
        }
    }

    #[test]
    fn status_stops_reading_an_answer_larger_than_any_health() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            let body = format!(
                "{{\"service\": \"vmsh-scheduler\", \"status\": \"healthy\", \"pad\": \"{}\"}}",
                "x".repeat(100_000)
            );
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let e = rt.block_on(fetch_at_most(&format!("http://{addr}/health"), 10_000)).expect_err("too large");
        assert!(matches!(&e, FetchError::NotHealth { reason, .. } if reason.contains("more than 10000 bytes")), "{e}");
    }

    /// Answers one request on a loopback port with `body` (200, JSON); returns the /health URL.
    fn answer_once(body: String) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        });
        format!("http://{addr}/health")
    }

    #[test]
    fn status_refuses_a_health_naming_this_service_that_does_not_read_as_its_health_and_names_the_field() {
        let body = r#"{"service": "vmsh-scheduler", "status": "healthy",
                       "namespaces": {"dao": {"status": "ok", "backoff": "\u001b[2Jhigh"}}}"#;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let e = rt.block_on(fetch(&answer_once(body.to_string()))).expect_err("backoff is not a number");
        let FetchError::NotHealth { reason, .. } = &e else { panic!("{e}") };
        assert!(reason.contains("does not read as its /health at namespaces.dao.backoff: invalid type"), "{e}");
        assert!(!reason.contains('\u{1b}'), "an escape sequence reached the terminal: {e:?}");
        let ok = rt.block_on(fetch(&answer_once(sample().to_string()))).expect("the sample reads");
        assert_eq!(ok.namespaces.as_ref().map(|n| n.len()), Some(3));
    }

    #[test]
    fn status_exit_codes() {
        assert_eq!(exit_code(&read(&json!({"status": "healthy"}))), EXIT_OK);
        assert_eq!(exit_code(&read(&json!({"status": "degraded"}))), EXIT_OK);
        assert_eq!(exit_code(&read(&json!({"status": "unhealthy"}))), EXIT_UNHEALTHY);
        assert_eq!(exit_code(&read(&json!({"status": "something new"}))), EXIT_UNHEALTHY);
    }

    #[test]
    fn status_durations() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(60_000), "1m 0s");
        assert_eq!(duration(3_599_000), "59m 59s");
        assert_eq!(duration(3_600_000), "1h 0m");
        assert_eq!(duration(90_061_000), "1d 1h");
        assert_eq!(duration(-5), "0s");
        assert_eq!(until(Some(NOW + 999), NOW), "now");
        assert_eq!(until(Some(NOW - 999), NOW), "now");
        assert_eq!(until(Some(NOW - 61_000), NOW), "overdue 1m 1s");
        assert_eq!(until(None, NOW), "-");
        assert_eq!(ago(None, NOW), "never");
    }

    #[test]
    fn status_urls() {
        assert_eq!(default_url(IpAddr::from([0, 0, 0, 0]), 9090), "http://127.0.0.1:9090");
        assert_eq!(default_url(IpAddr::from([10, 0, 0, 5]), 9100), "http://10.0.0.5:9100");
        assert_eq!(default_url(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), 1), "http://[::1]:1");
        assert_eq!(health_url("http://127.0.0.1:9090"), "http://127.0.0.1:9090/health");
        assert_eq!(health_url("http://127.0.0.1:9090/"), "http://127.0.0.1:9090/health");
        assert_eq!(health_url("127.0.0.1:9090"), "http://127.0.0.1:9090/health");
        assert_eq!(health_url("https://vmsh.example/ops/health"), "https://vmsh.example/ops/health");
        assert_eq!(health_url("https://vmsh.example/ops/"), "https://vmsh.example/ops/health");
    }
}
