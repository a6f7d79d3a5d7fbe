//! `vmsh-scheduler ctl`: the admin API from the command line.
//!
//! Exit codes: 0 done; 1 the scheduler refused the request (unknown namespace or cadence,
//! a conflict such as a trigger while paused, another replica's namespace); 2 a bad
//! command line or token file; 3 not allowed (no valid token, or the admin API is off);
//! 4 the scheduler could not be reached or could not do it now (try again).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Done.
pub const EXIT_DONE: i32 = 0;
/// The scheduler refused the request.
pub const EXIT_REFUSED: i32 = 1;
/// A bad command line or token file.
pub const EXIT_USAGE: i32 = 2;
/// Not allowed: no valid token, or the admin API is off.
pub const EXIT_DENIED: i32 = 3;
/// Not reachable, or not now.
pub const EXIT_UNAVAILABLE: i32 = 4;

/// How long a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Start nothing new for the cadence (or every cadence) until resumed.
    Pause,
    /// Undo a pause.
    Resume,
    /// Anchor the cadence now, once, outside its schedule.
    Trigger,
    /// Skip the cadence's next run by period.
    Skip,
    /// List the paused cadences, with their notes.
    Paused,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Trigger => "trigger",
            Action::Skip => "skip",
            Action::Paused => "paused",
        }
    }
}

/// A request, as the command line gives it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The scheduler's HTTP address.
    pub url: &'a str,
    /// The file holding the token (its first token is used).
    pub token_file: &'a Path,
    /// What to do.
    pub action: Action,
    /// The namespace (with an action).
    pub namespace: Option<&'a str>,
    /// One cadence.
    pub cadence: Option<&'a str>,
    /// A pause's note.
    pub note: Option<&'a str>,
}

/// The first token of a token file: a bare line, or the TOKEN of NAME=TOKEN.
pub fn first_token(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))?;
    // The same reading as the server's: NAME=TOKEN when a name comes first.
    let named = line.split_once('=').filter(|(name, token)| {
        !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !token.bytes().all(|b| b == b'=')
    });
    Some(named.map_or(line, |(_, token)| token.trim()).to_string())
}

/// Runs the command and returns its exit code; says what happened on stdout or stderr.
pub fn run(request: &Request<'_>) -> i32 {
    let token = match crate::config::tokens::read_file(request.token_file) {
        Ok(bytes) => match first_token(&bytes) {
            Some(t) => t,
            None => {
                let path = request.token_file.display();
                crate::stdio::err(&format!("vmsh-scheduler ctl: token file {path} holds no token"));
                return EXIT_USAGE;
            }
        },
        Err(e) => {
            let path = request.token_file.display();
            crate::stdio::err(&format!("vmsh-scheduler ctl: token file {path}: {e}"));
            return EXIT_USAGE;
        }
    };
    let (method, path, body) = match (request.action, request.namespace) {
        (Action::Paused, _) => ("GET", "/admin/v1/paused".to_string(), None),
        (action, Some(ns)) => {
            let mut body = serde_json::Map::new();
            if let Some(c) = request.cadence {
                body.insert("cadence".into(), json!(c));
            }
            if let Some(n) = request.note {
                body.insert("note".into(), json!(n));
            }
            let ns = percent_encode(ns);
            ("POST", format!("/admin/v1/namespaces/{ns}/{}", action.as_str()), Some(Value::Object(body)))
        }
        (_, None) => {
            crate::stdio::err("vmsh-scheduler ctl: name the namespace");
            return EXIT_USAGE;
        }
    };
    let base = request.url.trim().trim_end_matches('/');
    let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
    let url = format!("{base}{path}");
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start I/O: {e}"))
        .and_then(|rt| rt.block_on(send(method, &url, &token, body)));
    match answer {
        Ok((code, body)) => report(code, &body, request.action == Action::Paused),
        Err(e) => {
            crate::stdio::err(&format!("vmsh-scheduler ctl: {url}: {e}"));
            EXIT_UNAVAILABLE
        }
    }
}

/// The exit code of an answer; prints it.
fn report(code: u16, body: &Value, listing: bool) -> i32 {
    let error = body.get("error").and_then(Value::as_str).unwrap_or("");
    match code {
        200..=299 => {
            if listing {
                crate::stdio::out(&render_paused(body));
            } else {
                crate::stdio::out(&serde_json::to_string(body).unwrap_or_default());
            }
            EXIT_DONE
        }
        401 => {
            crate::stdio::err(&format!("vmsh-scheduler ctl: not allowed: {error}"));
            EXIT_DENIED
        }
        // The bare 404 of a path that does not exist: the admin API is off.
        404 if error == "not found" => {
            crate::stdio::err(
                "vmsh-scheduler ctl: the admin API is off at this address (the scheduler has no VMSH_ADMIN_TOKEN_FILE)",
            );
            EXIT_DENIED
        }
        400..=499 => {
            crate::stdio::err(&format!("vmsh-scheduler ctl: refused (HTTP {code}): {error}"));
            EXIT_REFUSED
        }
        _ => {
            crate::stdio::err(&format!("vmsh-scheduler ctl: not done (HTTP {code}): {error}"));
            EXIT_UNAVAILABLE
        }
    }
}

/// The paused cadences, one line each.
fn render_paused(body: &Value) -> String {
    let list = body.get("paused").and_then(Value::as_array).cloned().unwrap_or_default();
    if list.is_empty() {
        return "nothing is paused".to_string();
    }
    let mut out = Vec::new();
    for p in list {
        let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let since = p.get("sinceMs").and_then(Value::as_i64).map(crate::model::time::rfc3339).unwrap_or_default();
        let note = field("note");
        let note = if note.is_empty() { String::new() } else { format!("  {note:?}") };
        out.push(format!("{} {}  paused since {since} by {}{note}", field("namespace"), field("cadence"), field("by")));
    }
    out.join("\n")
}

/// Escapes a namespace for a path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn send(method: &str, url: &str, token: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url).json(&body.unwrap_or_else(|| json!({}))),
    };
    let response = request.bearer_auth(token).send().await.map_err(|e| {
        let mut inner: &dyn std::error::Error = &e;
        while let Some(next) = inner.source() {
            inner = next;
        }
        inner.to_string()
    })?;
    let code = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_token_of_a_file_is_read_as_the_server_reads_it() {
        assert_eq!(first_token(b"# c\n\nops=0123456789abcdef\nother\n").as_deref(), Some("0123456789abcdef"));
        assert_eq!(first_token(b"c2VjcmV0LXRva2Vu==\n").as_deref(), Some("c2VjcmV0LXRva2Vu=="));
        assert_eq!(first_token(b"# only comments\n"), None);
    }

    #[test]
    fn answers_map_to_documented_exit_codes() {
        assert_eq!(report(200, &json!({}), false), EXIT_DONE);
        assert_eq!(report(202, &json!({}), false), EXIT_DONE);
        assert_eq!(report(401, &json!({"error": "x"}), false), EXIT_DENIED);
        assert_eq!(report(404, &json!({"error": "not found"}), false), EXIT_DENIED);
        assert_eq!(report(404, &json!({"error": "namespace \"x\" is not configured"}), false), EXIT_REFUSED);
        assert_eq!(report(409, &json!({"error": "paused"}), false), EXIT_REFUSED);
        assert_eq!(report(503, &json!({"error": "later"}), false), EXIT_UNAVAILABLE);
    }

    #[test]
    fn a_namespace_is_one_path_segment() {
        assert_eq!(percent_encode("dao.main-1"), "dao.main-1");
        assert_eq!(percent_encode("a/../b c"), "a%2F..%2Fb%20c");
    }
}
