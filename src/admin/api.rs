//! The admin API's endpoints under `/admin/v1/`, on the HTTP port.
//!
//! Every request needs `Authorization: Bearer <token>` with a token of the token file;
//! without a token file every path here answers 404, as any unknown path does. Each request
//! is logged as an audit line naming the token (never showing it), the action, the
//! namespace, the cadence, the note and the answer, and counted in
//! `vmsh_admin_requests_total{action,code}`. Bodies are small JSON objects (at most
//! [`crate::http::ADMIN_MAX_BODY`] bytes, checked before routing by the server's screen); nothing in a
//! request names a file, so nothing in one can make the service write outside its folders.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use slog::{Logger, info, warn};

use crate::config::tokens::TokenStore;
use crate::health::actor::{GetPaused, HealthActor};
use crate::metrics::Metrics;
use crate::model::CadenceKind;
use crate::scheduler::control::{Control, ControlError, ControlNamespace, Controlled};
use crate::scheduler::supervisor::Supervisor;
use crate::storage::state::Pause;

/// Longest note kept with a pause, in characters.
pub(crate) const MAX_NOTE: usize = 500;

/// Longest namespace name echoed into an audit line; longer ones are cut (no configured
/// namespace is that long, so such a request is a 404 anyway).
const MAX_SHOWN_NAME: usize = 128;

/// How long a request waits for the scheduler to carry it out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints need.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The tokens; `None` turns the admin API off.
    pub tokens: Option<Arc<TokenStore>>,
    /// Where requests for namespaces go.
    pub supervisor: Addr<Supervisor>,
    /// Where the list of pauses comes from.
    pub health: Addr<HealthActor>,
    /// Counts requests.
    pub metrics: Arc<Metrics>,
    /// Audit lines.
    pub log: Logger,
    /// Stamps pauses.
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// The admin routes and what they need, for the HTTP server's app.
pub(crate) fn routes(state: AdminState) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| admin_routes(cfg, state.clone())
}

fn admin_routes(cfg: &mut web::ServiceConfig, state: AdminState) {
    cfg.app_data(web::Data::new(state))
        .service(web::resource("/admin/v1/namespaces/{ns}/{action}").route(web::post().to(act)))
        .service(web::resource("/admin/v1/paused").route(web::get().to(paused)))
        .service(web::resource("/admin/{rest:.*}").to(elsewhere));
}

/// The optional body of a request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    cadence: Option<String>,
    note: Option<String>,
}

/// The optional query of a request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    cadence: Option<String>,
}

/// An answer: status and JSON body.
type Answer = (StatusCode, Value);

fn error(code: StatusCode, why: impl std::fmt::Display) -> Answer {
    (code, json!({ "error": why.to_string() }))
}

fn respond((code, body): Answer) -> HttpResponse {
    let mut r = HttpResponse::build(code);
    if code == StatusCode::UNAUTHORIZED {
        r.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"vmsh-scheduler admin\""));
    }
    r.insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

/// The name of the token the request carries, or the answer refusing it: 404 when the
/// admin API is off, 401 when the token is missing or wrong.
fn authenticate(req: &HttpRequest, state: &AdminState) -> Result<String, Answer> {
    let Some(store) = &state.tokens else {
        return Err(error(StatusCode::NOT_FOUND, "not found"));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(error(StatusCode::UNAUTHORIZED, "an admin token is required: Authorization: Bearer <token>"));
    };
    match store.tokens().check(presented.as_bytes()) {
        Some(name) => Ok(name.to_string()),
        None => Err(error(StatusCode::UNAUTHORIZED, "the admin token is not valid")),
    }
}

/// Where a request came from, for the audit line.
fn peer(req: &HttpRequest) -> String {
    req.peer_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// A name from a request, safe to write into a log line: cut to a length.
fn shown(name: &str) -> String {
    name.chars().take(MAX_SHOWN_NAME).collect()
}

/// Logs the audit line and counts the request.
fn audit(state: &AdminState, req: &HttpRequest, token: Option<&str>, what: &Audit<'_>, answer: &Answer) {
    let code = answer.0.as_u16();
    state.metrics.admin_requests.with_label_values(&[what.action, answer.0.as_str()]).inc();
    let outcome = answer.1.get("error").and_then(Value::as_str).unwrap_or("done");
    let (ns, cadence, note) = (what.namespace.map(shown), what.cadence, what.note);
    if (200..300).contains(&code) {
        info!(state.log, "admin action"; "audit" => true, "token" => token.unwrap_or(""), "action" => what.action,
            "ns" => ns, "cadence" => cadence, "note" => note, "code" => code, "peer" => peer(req));
    } else {
        warn!(state.log, "admin request refused"; "audit" => true, "token" => token.unwrap_or(""),
            "action" => what.action, "ns" => ns, "cadence" => cadence, "note" => note, "code" => code,
            "reason" => outcome, "peer" => peer(req));
    }
}

/// What an audit line says a request asked for.
struct Audit<'a> {
    action: &'static str,
    namespace: Option<&'a str>,
    cadence: Option<&'a str>,
    note: Option<&'a str>,
}

/// The action word of a path, as a fixed label value.
fn action_of(word: &str) -> Option<&'static str> {
    ["pause", "resume", "trigger", "skip"].into_iter().find(|a| *a == word)
}

/// `POST /admin/v1/namespaces/{ns}/{pause|resume|trigger|skip}`.
async fn act(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AdminState>,
) -> HttpResponse {
    let (namespace, word) = path.into_inner();
    let action = action_of(&word).unwrap_or("other");
    let mut what = Audit { action, namespace: Some(&namespace), cadence: None, note: None };
    let token = match authenticate(&req, &state) {
        Ok(name) => name,
        Err(answer) => {
            // Off: nothing to audit; the path does not exist.
            if state.tokens.is_some() {
                audit(&state, &req, None, &what, &answer);
            }
            return respond(answer);
        }
    };
    let parsed = parse(&req, &body, action);
    // What the audit line names: what was asked, once it could be read.
    let shown_note = parsed.as_ref().ok().and_then(|(_, note)| note.clone());
    what.cadence = parsed.as_ref().ok().and_then(|(cadence, _)| cadence.map(CadenceKind::as_str));
    what.note = shown_note.as_deref();
    let answer = match parsed {
        Err(answer) => answer,
        Ok((cadence, note)) => carry_out(&state, &namespace, action, cadence, note, &token).await,
    };
    audit(&state, &req, Some(&token), &what, &answer);
    respond(answer)
}

/// The cadence and note of a request, or the 4xx answer that refuses it.
fn parse(req: &HttpRequest, body: &[u8], action: &str) -> Result<(Option<CadenceKind>, Option<String>), Answer> {
    if action == "other" {
        return Err(error(StatusCode::NOT_FOUND, "unknown action: use pause, resume, trigger or skip"));
    }
    let query = web::Query::<Query>::from_query(req.query_string())
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad query: {e}; the only parameter is cadence")))?
        .into_inner();
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        let json =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| {
                t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a body must be JSON (Content-Type: application/json)",
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a valid request: {e}; send {{\"cadence\"?, \"note\"?}}"),
            )
        })?
    };
    let word = match (query.cadence, body.cadence) {
        (Some(a), Some(b)) if a != b => {
            return Err(error(StatusCode::BAD_REQUEST, "the query and the body name different cadences"));
        }
        (a, b) => a.or(b),
    };
    let cadence = match word {
        None => None,
        Some(w) => Some(CadenceKind::parse(&w).ok_or_else(|| {
            error(StatusCode::BAD_REQUEST, format!("unknown cadence {:?}: use fast, strong or cold", shown(&w)))
        })?),
    };
    if body.note.is_some() && action != "pause" {
        return Err(error(StatusCode::BAD_REQUEST, "a note goes with a pause only"));
    }
    if let Some(note) = &body.note {
        if note.chars().count() > MAX_NOTE {
            return Err(error(StatusCode::BAD_REQUEST, format!("the note is longer than {MAX_NOTE} characters")));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(error(StatusCode::BAD_REQUEST, "the note holds control characters"));
        }
    }
    Ok((cadence, body.note.filter(|n| !n.trim().is_empty())))
}

/// Sends the request to the scheduler and turns what it did into an answer.
async fn carry_out(
    state: &AdminState,
    namespace: &str,
    action: &'static str,
    cadence: Option<CadenceKind>,
    note: Option<String>,
    token: &str,
) -> Answer {
    let control = match action {
        "pause" => Control::Pause(Pause { since_ms: state.clock.wall_ms(), by: token.to_string(), note }),
        "resume" => Control::Resume,
        "trigger" => Control::Trigger,
        _ => Control::Skip,
    };
    let msg = ControlNamespace { namespace: namespace.to_string(), cadence, control };
    let done = match state.supervisor.send(msg).timeout(ANSWER_TIMEOUT).await {
        Ok(done) => done,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("the scheduler did not answer: {e}")),
    };
    match done {
        Ok(outcomes) => {
            let queued = outcomes.iter().any(|(_, o)| *o == Controlled::Queued);
            let cadences: serde_json::Map<String, Value> = outcomes
                .iter()
                .map(|(k, o)| {
                    let word = match o {
                        Controlled::Changed => "done",
                        Controlled::Unchanged => "already so",
                        Controlled::Queued => "queued",
                    };
                    (k.as_str().to_string(), Value::from(word))
                })
                .collect();
            let code = if action == "trigger" { StatusCode::ACCEPTED } else { StatusCode::OK };
            (code, json!({ "namespace": namespace, "action": action, "cadences": cadences, "queued": queued }))
        }
        Err(e) => {
            let code = match &e {
                ControlError::UnknownNamespace(_) => StatusCode::NOT_FOUND,
                ControlError::UnknownCadence { .. } | ControlError::CadenceRequired => StatusCode::BAD_REQUEST,
                ControlError::Conflict(_) => StatusCode::CONFLICT,
                ControlError::NotHere(_) => StatusCode::MISDIRECTED_REQUEST,
                ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(code, e)
        }
    }
}

/// `GET /admin/v1/paused`: every paused cadence this process runs, with its note.
async fn paused(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    let what = Audit { action: "paused", namespace: None, cadence: None, note: None };
    if let Err(answer) = authenticate(&req, &state) {
        if state.tokens.is_some() {
            audit(&state, &req, None, &what, &answer);
        }
        return respond(answer);
    }
    let answer = match state.health.send(GetPaused).timeout(ANSWER_TIMEOUT).await {
        Ok(list) => (StatusCode::OK, json!({ "paused": list })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the health actor did not answer: {e}")),
    };
    // Reads are counted, not logged: they change nothing.
    state.metrics.admin_requests.with_label_values(&["paused", answer.0.as_str()]).inc();
    respond(answer)
}

/// Any other path under `/admin/`: 404, whether the admin API is on or not.
async fn elsewhere(state: web::Data<AdminState>) -> HttpResponse {
    let answer = error(StatusCode::NOT_FOUND, "not found");
    if state.tokens.is_some() {
        state.metrics.admin_requests.with_label_values(&["other", answer.0.as_str()]).inc();
    }
    respond(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, content_type: Option<&str>) -> HttpRequest {
        let mut r = actix_web::test::TestRequest::post().uri(&format!("/admin/v1/namespaces/ns/pause?{query}"));
        if let Some(t) = content_type {
            r = r.insert_header((header::CONTENT_TYPE, t));
        }
        r.to_http_request()
    }

    #[test]
    fn a_request_names_its_cadence_in_the_query_or_the_body_and_a_note_only_with_a_pause() {
        let json = Some("application/json");
        let ok = parse(&request("cadence=fast", None), b"", "pause").expect("query");
        assert_eq!(ok, (Some(CadenceKind::Fast), None));
        let ok = parse(&request("", json), br#"{"cadence":"cold","note":"TSA maintenance"}"#, "pause").expect("body");
        assert_eq!(ok, (Some(CadenceKind::Cold), Some("TSA maintenance".to_string())));
        assert_eq!(parse(&request("", None), b"", "resume").expect("none"), (None, None));
        let refused = |q: &str, ct: Option<&str>, body: &[u8], action: &str| {
            parse(&request(q, ct), body, action).expect_err("refused").0
        };
        assert_eq!(refused("cadence=hourly", None, b"", "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("cadence=fast&x=1", None, b"", "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("cadence=fast", json, br#"{"cadence":"cold"}"#, "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", json, br#"{"note":"x"}"#, "trigger"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", json, br#"{"cadence":"fast""#, "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", json, br#"{"path":"/etc/passwd"}"#, "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", json, br#"["fast"]"#, "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", Some("text/plain"), b"cadence=fast", "pause"), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let long = format!(r#"{{"note":"{}"}}"#, "x".repeat(MAX_NOTE + 1));
        assert_eq!(refused("", json, long.as_bytes(), "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", json, br#"{"note":"a\u0007b"}"#, "pause"), StatusCode::BAD_REQUEST);
        assert_eq!(refused("", None, b"", "other"), StatusCode::NOT_FOUND);
    }

    #[test]
    fn names_from_requests_are_cut_before_they_reach_a_log_line() {
        assert_eq!(shown(&"n".repeat(1000)).len(), MAX_SHOWN_NAME);
        assert_eq!(shown("dao"), "dao");
    }
}
