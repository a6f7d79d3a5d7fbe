//! The HTTP server on METRICS_PORT: `/metrics` (the shared registry; actix-web-prom counts
//! the requests into it), `/health`, `/livez`, `/readyz` and the status page at `/`. Nothing
//! here changes scheduler state.
//!
//! Every endpoint answers `GET` and `HEAD` (the same answer without its body).
//!
//! Hostile clients are cut off by limits: a request head must arrive within
//! [`CLIENT_REQUEST_TIMEOUT`] (a slow or silent connection is closed), heads above actix's
//! 128 KiB or 96 headers get 431, a method HTTP does not define is answered 501 and a request
//! with a body 413, each with its connection closed (see [`screen`]), and at most
//! [`MAX_CONNECTIONS`] connections are open at once (see [`connections_per_worker`]), so
//! clients cannot take the file descriptors the scheduler needs. Every label value of the
//! HTTP series comes from a fixed set: the routes and `UNKNOWN`, the methods of
//! [`KNOWN_METHODS`] and `OTHER`, and the status codes the server answers with. Concurrent
//! requests for `/health` or `/metrics` share one computation (see [`Coalesce`]), so a crowd
//! of clients costs about as much as one.

pub(crate) mod page;

use std::net::TcpListener;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::web::Bytes;
use actix_web::{App, FromRequest, Handler, HttpRequest, HttpResponse, HttpServer, Responder, web};
use actix_web_prom::PrometheusMetricsBuilder;
use futures_util::FutureExt as _;
use serde_json::json;

use crate::batch::ReaderMonitor;
use crate::health::NamespaceStatus;
use crate::health::actor::{GetHealth, GetNamespace, GetNamespaces, GetReady, HealthActor, View};
use crate::metrics::Metrics;
use crate::model::Ping;

/// How long a probe waits for an actor to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Time a client has to send a whole request head; a connection that sends nothing, or
/// trickles its head, is closed after it (with 408 when part of a head arrived).
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP worker threads.
const WORKERS: usize = 2;

/// Most connections the server keeps open at once, over all its workers. A monitoring port
/// needs a handful (Prometheus, probes, a browser); further clients wait in the listen
/// backlog until one closes, instead of taking file descriptors that state writes, batch
/// reads and anchors need.
pub const MAX_CONNECTIONS: usize = 256;

/// The request methods HTTP defines (RFC 9110, and PATCH from RFC 5789). Requests are counted
/// by method, and any other method is counted as [`OTHER_METHOD`]: a label value per made-up
/// method let any client grow /metrics without bound.
const KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The method label of a request whose method is not one of [`KNOWN_METHODS`].
const OTHER_METHOD: &str = "OTHER";

/// [`OTHER_METHOD`] as a method, written into the requests it stands for.
static OTHER: LazyLock<Method> =
    LazyLock::new(|| Method::from_bytes(OTHER_METHOD.as_bytes()).expect("OTHER is a valid method token"));

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// Health collector.
    pub health: Addr<HealthActor>,
    /// Actors that must answer for /livez, by name.
    pub live: Vec<(&'static str, Recipient<Ping>)>,
    /// The batch reader, which every namespace needs to make progress.
    pub batches: Option<ReaderMonitor>,
}

/// The path every admin endpoint is under.
const ADMIN: &str = "/admin/";

/// Largest body an admin request may carry.
pub(crate) const ADMIN_MAX_BODY: u64 = 4 * 1024;

async fn health(req: HttpRequest, state: web::Data<HttpState>, coalesce: web::Data<Answers>) -> HttpResponse {
    // `?view=summary`: counts by status and the worst namespaces, for large fleets.
    // `?view=full`: the whole document, also in fleet mode (where the default is the summary).
    let view = match query_value(req.query_string(), "view").as_deref() {
        None => View::Default,
        Some("summary") => View::Summary,
        Some("full") => View::Full,
        Some(_) => {
            return HttpResponse::BadRequest().json(json!({
                "error": "view is summary or full, or absent for the default (full, or the summary in fleet mode)"
            }));
        }
    };
    let addr = state.health.clone();
    // Requests share an answer only with requests for the same view.
    let shared = match view {
        View::Full => &coalesce.health_full,
        View::Summary => &coalesce.health_summary,
        View::Default => &coalesce.health,
    };
    let answer = shared.answer(Box::new(move || ask_health(addr, view).boxed())).await;
    shared.release();
    match answer {
        Ok((code, body)) => HttpResponse::build(code).content_type("application/json").body(body),
        Err(e) => HttpResponse::ServiceUnavailable().json(unanswered_health(&e)),
    }
}

/// Most namespaces one page of `/health/namespaces` lists.
pub const MAX_PAGE: usize = 1_000;

/// `GET /health/namespaces?q=&status=&offset=&limit=`: a page of namespaces in name order,
/// those whose name contains `q` (any case) and that have `status`.
async fn health_namespaces(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    let qs = req.query_string();
    let number = |key: &str, default: usize| -> Result<usize, String> {
        match query_value(qs, key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{key} is a whole number")),
        }
    };
    let status = match query_value(qs, "status").as_deref() {
        None => Ok(None),
        Some("ok") => Ok(Some(NamespaceStatus::Ok)),
        Some("backing_off") => Ok(Some(NamespaceStatus::BackingOff)),
        Some("stale") => Ok(Some(NamespaceStatus::Stale)),
        Some("paused") => Ok(Some(NamespaceStatus::Paused)),
        Some(_) => Err("status is ok, backing_off, stale or paused".to_string()),
    };
    let asked = (number("offset", 0), number("limit", 100), status);
    let (offset, limit, status) = match asked {
        (Ok(o), Ok(l), Ok(s)) if (1..=MAX_PAGE).contains(&l) => (o, l, s),
        (Ok(_), Ok(_), Ok(_)) => {
            return HttpResponse::BadRequest().json(json!({"error": format!("limit is from 1 to {MAX_PAGE}")}));
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return HttpResponse::BadRequest().json(json!({"error": e}));
        }
    };
    let query = query_value(qs, "q").unwrap_or_default();
    let msg = GetNamespaces { query, status, offset, limit };
    match state.health.send(msg).timeout(PROBE_TIMEOUT).await {
        Ok(page) => serialized(move || serde_json::to_vec(&page)).await,
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(json!({"error": format!("health actor did not answer: {e}")}))
        }
    }
}

/// `GET /health/namespaces/{name}`: one namespace, as `{"name", …}`; 404 for no such one.
async fn health_namespace(path: web::Path<String>, state: web::Data<HttpState>) -> HttpResponse {
    let name = path.into_inner();
    match state.health.send(GetNamespace(name)).timeout(PROBE_TIMEOUT).await {
        Ok(Some(page)) => serialized(move || page.one().map_or(Ok(Vec::new()), |one| serde_json::to_vec(&one))).await,
        Ok(None) => HttpResponse::NotFound().json(json!({"error": "no such namespace"})),
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(json!({"error": format!("health actor did not answer: {e}")}))
        }
    }
}

/// A JSON body written off the server's worker thread.
async fn serialized(write: impl FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static) -> HttpResponse {
    match web::block(write).await {
        Ok(Ok(body)) => HttpResponse::Ok().content_type("application/json").body(body),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({"error": format!("cannot serialize: {e}")})),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}

/// The first value of `key` in a query string, percent-decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = web::Query::<Vec<(String, String)>>::from_query(query).ok()?.into_inner();
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The /health answer when no report could be had: still this service's health document
/// (`status` tells it apart from a proxy's error page), saying it is unhealthy and why.
fn unanswered_health(error: &str) -> serde_json::Value {
    json!({"service": crate::health::SERVICE, "status": "unhealthy", "error": error})
}

/// The /health report, serialized off the server's worker thread, or why there is none.
async fn ask_health(health: Addr<HealthActor>, view: View) -> Result<(StatusCode, Bytes), String> {
    let report = health
        .send(GetHealth(view))
        .timeout(PROBE_TIMEOUT)
        .await
        .map_err(|e| format!("health actor did not answer: {e}"))?;
    let code = StatusCode::from_u16(report.code).unwrap_or(StatusCode::OK);
    let body = web::block(move || serde_json::to_vec(&report.body))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot serialize the health report: {e}"))?;
    Ok((code, Bytes::from(body)))
}

/// `GET /metrics`: the registry in Prometheus text format.
async fn metrics(metrics: web::Data<Arc<Metrics>>, coalesce: web::Data<Answers>) -> HttpResponse {
    let metrics = Arc::clone(metrics.get_ref());
    let answer = coalesce.metrics.answer(Box::new(move || encode_metrics(metrics).boxed())).await;
    coalesce.metrics.release();
    match answer {
        Ok(chunks) => {
            // Sent as the chunks it was written in, with its length: no copy into one buffer.
            let size = chunks.iter().map(|c| c.len() as u64).sum();
            let parts: Vec<Result<Bytes, std::convert::Infallible>> = chunks.iter().cloned().map(Ok).collect();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(actix_web::body::SizedStream::new(size, futures_util::stream::iter(parts)))
        }
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": format!("cannot encode metrics: {e}")})),
    }
}

/// Encodes every series, off the server's worker thread: with a few hundred namespaces the
/// text is most of a megabyte.
async fn encode_metrics(metrics: Arc<Metrics>) -> Result<Arc<[Bytes]>, String> {
    let encode = move || metrics.render_chunks().map(Arc::from);
    web::block(encode).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// The answers that concurrent requests share.
#[derive(Default)]
struct Answers {
    health: Coalesce<Result<(StatusCode, Bytes), String>>,
    health_full: Coalesce<Result<(StatusCode, Bytes), String>>,
    health_summary: Coalesce<Result<(StatusCode, Bytes), String>>,
    metrics: Coalesce<Result<Arc<[Bytes]>, String>>,
}

/// One computation of an answer, awaited by every request that shares it.
type Shared<T> = futures_util::future::Shared<Pin<Box<dyn Future<Output = T> + Send>>>;

/// Lets concurrent requests share one computation of their answer.
///
/// Without it each /health request queued its own report in the health actor's mailbox, and
/// each /metrics request encoded every series on a server worker. The health actor shares one
/// thread with the scheduler's other actors: with a few hundred namespaces and a few dozen
/// concurrent clients, building reports (also for clients that had given up) took that thread
/// over, the config tick and the anchors stalled, and /health answered 503 ("unhealthy") or
/// timed out although nothing but the load was wrong.
///
/// At most two computations exist at a time: `running`, and `next`, which starts when
/// `running` ends. A request joins `next` (creating it if needed) while `running` is under way,
/// else starts `running`. It never joins a computation that began before it arrived, so every
/// answer is as fresh as if it had been computed for that request alone; the price is waiting
/// for at most two computations.
struct Coalesce<T> {
    slots: std::sync::Mutex<Slots<T>>,
}

/// The computation under way and the one queued behind it.
struct Slots<T> {
    running: Option<Shared<T>>,
    next: Option<Shared<T>>,
}

impl<T> Slots<T> {
    /// A finished computation is history; the one queued behind it may have begun since.
    fn retire_finished(&mut self) {
        while self.running.as_ref().is_some_and(|r| r.peek().is_some()) {
            self.running = self.next.take();
        }
    }
}

/// Starts a computation of an answer.
type Compute<T> = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = T> + Send>> + Send>;

impl<T> Default for Coalesce<T> {
    fn default() -> Self {
        Self { slots: std::sync::Mutex::new(Slots { running: None, next: None }) }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalesce<T> {
    /// Forgets computations that have finished, so an answer (megabytes for a large fleet)
    /// is not kept alive until the next request; called once a request has its answer.
    fn release(&self) {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retire_finished();
    }

    /// The computation this request shares; `compute` starts a new one when needed.
    fn answer(&self, compute: Compute<T>) -> Shared<T> {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.retire_finished();
        let Some(current) = slots.running.clone() else {
            let fresh = compute().shared();
            slots.running = Some(fresh.clone());
            return fresh;
        };
        if let Some(queued) = &slots.next {
            return queued.clone();
        }
        let queued = async move {
            // How that one ended does not matter: this one starts after it.
            let _ = current.await;
            compute().await
        }
        .boxed()
        .shared();
        slots.next = Some(queued.clone());
        queued
    }
}

/// Ready once start-up finished, while not draining, while every core actor answers and
/// while batches can be read.
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let reason = match state.health.send(GetReady).timeout(PROBE_TIMEOUT).await {
        Ok(Ok(())) => {
            let stuck = not_answering(&state).await;
            if stuck.is_empty() {
                batches_blocked(&state)
            } else {
                Some(format!("not answering: {}", stuck.join(", ")))
            }
        }
        Ok(Err(reason)) => Some(reason),
        Err(e) => Some(format!("health actor did not answer: {e}")),
    };
    match reason {
        None => HttpResponse::Ok().json(json!({"ready": true})),
        Some(reason) => HttpResponse::ServiceUnavailable().json(json!({"ready": false, "reason": reason})),
    }
}

/// The core actors that do not answer a ping within [`PROBE_TIMEOUT`].
async fn not_answering(state: &HttpState) -> Vec<&'static str> {
    let asks = state.live.iter().map(|(name, r)| {
        let ask = r.send(Ping).timeout(PROBE_TIMEOUT);
        async move { ask.await.err().map(|_| *name) }
    });
    futures_util::future::join_all(asks).await.into_iter().flatten().collect()
}

/// Why no batch can be read, when none can: then no namespace can make progress.
fn batches_blocked(state: &HttpState) -> Option<String> {
    state.batches.as_ref().and_then(|b| b.report().error)
}

/// Live while every core actor answers and batches can be read; an anchor target's failure
/// never affects this.
async fn livez(state: web::Data<HttpState>) -> HttpResponse {
    let stuck = not_answering(&state).await;
    let blocked = batches_blocked(&state);
    if stuck.is_empty() && blocked.is_none() {
        HttpResponse::Ok().json(json!({"live": true}))
    } else {
        let reason = blocked.unwrap_or_else(|| format!("not answering: {}", stuck.join(", ")));
        HttpResponse::ServiceUnavailable().json(json!({"live": false, "notAnswering": stuck, "reason": reason}))
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .json(json!({"error": "not found", "endpoints": ["/", "/metrics", "/health", "/livez", "/readyz"]}))
}

/// Refuses, before routing, what no endpoint serves: a method HTTP does not define (501, as
/// RFC 9110 asks for a method the server does not recognise, on any path) and a request that
/// carries a body (413). Both are answered with the connection closed.
///
/// Unknown methods are rewritten to [`OTHER_METHOD`] first, since actix-web-prom labels each
/// request by the method it finds in it.
///
/// Every endpoint is a GET that reads no body. Left to itself, actix discards an unread body:
/// a `Content-Length` one for at most the disconnect timeout, but a chunked one for as long as
/// the client keeps sending, so one client could keep an HTTP worker busy forever reading an
/// endless body. The refusal holds on to the request's payload until it is sent (see
/// [`Refusal`]), which makes actix close the connection instead of draining it. Refusals are
/// counted in `vmsh_http_requests_total` like any answer, with their status.
async fn screen(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (status, error) = if !KNOWN_METHODS.contains(req.method()) {
        // Before routing nothing else holds the request, so this cannot find it shared (actix's
        // own NormalizePath rewrites the head the same way).
        req.head_mut().method = OTHER.clone();
        (StatusCode::NOT_IMPLEMENTED, "request method not implemented: every endpoint answers GET and HEAD")
    } else if req.path().starts_with(ADMIN) {
        match admin_body(req.headers()) {
            Ok(()) => return next.call(req).await.map(ServiceResponse::map_into_boxed_body),
            Err(refusal) => refusal,
        }
    } else if has_body(req.headers()) {
        (StatusCode::PAYLOAD_TOO_LARGE, "request bodies are not accepted: every endpoint is a GET without one")
    } else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let (req, payload) = req.into_parts();
    let text = json!({ "error": error }).to_string();
    let refusal = HttpResponse::build(status)
        .force_close()
        .content_type("application/json")
        .message_body(BoxBody::new(Refusal { text: Bytes::from(text), sent: false, _payload: payload }))?;
    Ok(ServiceResponse::new(req, refusal))
}

/// Whether an admin request's body may be read: none, or a declared length up to
/// [`ADMIN_MAX_BODY`]. A chunked body is refused, so that no client can keep a
/// worker reading an endless one.
fn admin_body(headers: &header::HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err((StatusCode::LENGTH_REQUIRED, "admin requests send their body with a Content-Length"));
    }
    match headers.get(header::CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok())) {
        None => Ok(()),
        Some(Some(n)) if n <= ADMIN_MAX_BODY => Ok(()),
        Some(Some(_)) => Err((StatusCode::PAYLOAD_TOO_LARGE, "an admin request's body is at most 4096 bytes")),
        Some(None) => Err((StatusCode::BAD_REQUEST, "the Content-Length is not a number")),
    }
}

/// Whether a request announces a body: chunked, or a length other than 0.
fn has_body(headers: &header::HeaderMap) -> bool {
    let declared =
        headers.get(header::CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    headers.contains_key(header::TRANSFER_ENCODING) || matches!(declared, Some(n) if n != Some(0))
}

/// How many connections each of `workers` workers may hold: [`MAX_CONNECTIONS`] in all, and
/// at most a quarter of the process's open-file limit (`None`: unknown), at least one each.
fn connections_per_worker(open_files: Option<u64>, workers: usize) -> usize {
    let by_limit = open_files.map_or(MAX_CONNECTIONS, |n| usize::try_from(n / 4).unwrap_or(usize::MAX));
    (MAX_CONNECTIONS.min(by_limit) / workers.max(1)).max(1)
}

/// The process's soft limit on open files, if it has one.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// A resource that answers GET and HEAD with `handler` (actix sends a HEAD answer's headers,
/// Content-Length included, without its body); other methods get 405 with `Allow: GET, HEAD`.
fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path).route(web::get().to(handler.clone())).route(web::head().to(handler))
}

/// The body of a refusal (413, 501): its text, and the refused request's payload, kept unread
/// until the response is sent. actix decides after the last byte of a response whether to read
/// on: an unread payload that still exists closes the connection, a dropped chunked one is
/// drained.
struct Refusal {
    text: Bytes,
    sent: bool,
    _payload: actix_web::dev::Payload,
}

impl MessageBody for Refusal {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.text.len() as u64)
    }

    fn poll_next(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if self.sent {
            return Poll::Ready(None);
        }
        self.sent = true;
        Poll::Ready(Some(Ok(self.text.clone())))
    }
}

/// Starts the server on an already bound listener; returns a handle to stop it.
pub(crate) fn start(
    listener: TcpListener,
    state: HttpState,
    more: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    metrics: &Arc<Metrics>,
) -> std::io::Result<ServerHandle> {
    // The middleware counts requests; `metrics` serves the registry it counts into.
    let prom = PrometheusMetricsBuilder::new("vmsh")
        .registry(metrics.registry.clone())
        // Unknown paths share one label value so scanners cannot explode the series count.
        .mask_unmatched_patterns("UNKNOWN")
        .build()
        .map_err(|e| std::io::Error::other(format!("metrics middleware: {e}")))?;
    let registry = web::Data::new(Arc::clone(metrics));
    // Shared by the server's worker threads.
    let answers = web::Data::new(Answers::default());
    let server = HttpServer::new(move || {
        App::new()
            // Inside the metrics middleware, so that it counts the rewritten method.
            .wrap(from_fn(screen))
            .wrap(prom.clone())
            .app_data(web::Data::new(state.clone()))
            .app_data(registry.clone())
            .app_data(answers.clone())
            // More routes from the caller (the admin API): this module does not know them.
            .configure(more.clone())
            .service(readable("/metrics", self::metrics))
            .service(readable("/health", health))
            .service(readable("/health/namespaces", health_namespaces))
            .service(readable("/health/namespaces/{name}", health_namespace))
            .service(readable("/livez", livez))
            .service(readable("/readyz", readyz))
            .service(readable("/", page::status_page))
            .default_service(web::to(not_found))
    })
    .workers(WORKERS)
    .max_connections(connections_per_worker(open_files_limit(), WORKERS))
    .disable_signals()
    .shutdown_timeout(5)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(Duration::from_secs(1))
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_that_cannot_be_had_is_still_this_services_and_unhealthy() {
        let body = unanswered_health("health actor did not answer");
        assert_eq!(crate::cli::status::identify(&body), Ok(()));
        let read: crate::health::contract::Health =
            serde_json::from_value(body.clone()).expect("the unanswered body reads as the /health contract");
        assert_eq!(crate::cli::status::exit_code(&read), 1);
        assert_eq!(read.error.as_deref(), Some("health actor did not answer"));
    }

    fn computation(id: usize) -> Compute<usize> {
        Box::new(move || async move { id }.boxed())
    }

    #[test]
    fn connections_stay_under_a_quarter_of_the_open_file_limit() {
        assert_eq!(connections_per_worker(None, 2), MAX_CONNECTIONS / 2);
        assert_eq!(connections_per_worker(Some(1_048_576), 2), MAX_CONNECTIONS / 2);
        // systemd's default soft limit.
        assert_eq!(connections_per_worker(Some(1024), 2), 128);
        assert_eq!(connections_per_worker(Some(256), 2), 32);
        assert_eq!(connections_per_worker(Some(0), 2), 1, "a worker that accepts nothing serves nothing");
        assert_eq!(connections_per_worker(Some(1024), 0), MAX_CONNECTIONS);
    }

    #[test]
    fn the_other_method_is_not_a_known_one() {
        assert_eq!(OTHER.as_str(), OTHER_METHOD);
        assert!(!KNOWN_METHODS.contains(&OTHER));
    }

    #[tokio::test]
    async fn concurrent_requests_share_a_computation_that_starts_after_they_arrive() {
        let coalesce = Coalesce::default();
        let first = coalesce.answer(computation(1));
        // While the first runs, later requests share one computation queued behind it.
        let second = coalesce.answer(computation(2));
        let third = coalesce.answer(computation(3));
        assert_eq!((first.await, second.await, third.await), (1, 2, 2));
        // Once both are done, a request starts afresh rather than reuse an old answer.
        assert_eq!(coalesce.answer(computation(4)).await, 4);
        let running = coalesce.answer(computation(5));
        assert_eq!(coalesce.answer(computation(6)).await, 6, "queued behind 5, which it drives");
        assert_eq!(running.await, 5);
    }
}
