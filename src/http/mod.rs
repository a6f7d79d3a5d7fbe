//! The HTTP server on METRICS_PORT: `/metrics` (actix-web-prom over the shared registry),
//! `/health`, `/livez`, `/readyz` and the status page at `/`. Nothing here changes scheduler
//! state.

pub mod page;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use actix_web_prom::PrometheusMetricsBuilder;
use serde_json::json;

use crate::health::actor::{GetHealth, GetReady, HealthActor, Ping};
use crate::metrics::Metrics;

/// How long a probe waits for an actor to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// Health collector.
    pub health: Addr<HealthActor>,
    /// Actors that must answer for /livez, by name.
    pub live: Vec<(&'static str, Recipient<Ping>)>,
}

async fn health(state: web::Data<HttpState>) -> HttpResponse {
    match state.health.send(GetHealth).timeout(PROBE_TIMEOUT).await {
        Ok(r) => HttpResponse::build(StatusCode::from_u16(r.code).unwrap_or(StatusCode::OK)).json(r.body),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unhealthy", "error": format!("health actor did not answer: {e}")})),
    }
}

/// Ready once start-up finished, while not draining and while every core actor answers.
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let reason = match state.health.send(GetReady).timeout(PROBE_TIMEOUT).await {
        Ok(Ok(())) => {
            let stuck = not_answering(&state).await;
            if stuck.is_empty() { None } else { Some(format!("not answering: {}", stuck.join(", "))) }
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

/// Live while every core actor answers; an anchor target's failure never affects this.
async fn livez(state: web::Data<HttpState>) -> HttpResponse {
    let stuck = not_answering(&state).await;
    if stuck.is_empty() {
        HttpResponse::Ok().json(json!({"live": true}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"live": false, "notAnswering": stuck}))
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .json(json!({"error": "not found", "endpoints": ["/", "/metrics", "/health", "/livez", "/readyz"]}))
}

/// Starts the server on an already bound listener; returns a handle to stop it.
pub fn start(listener: TcpListener, state: HttpState, metrics: &Arc<Metrics>) -> std::io::Result<ServerHandle> {
    let prom = PrometheusMetricsBuilder::new("vmsh")
        .endpoint("/metrics")
        .registry(metrics.registry.clone())
        // Unknown paths share one label value so scanners cannot explode the series count.
        .mask_unmatched_patterns("UNKNOWN")
        .build()
        .map_err(|e| std::io::Error::other(format!("metrics middleware: {e}")))?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(prom.clone())
            .app_data(web::Data::new(state.clone()))
            // GET /metrics is answered by the middleware; other methods get 405 here.
            .service(web::resource("/metrics").route(web::get().to(not_found)))
            .service(web::resource("/health").route(web::get().to(health)))
            .service(web::resource("/livez").route(web::get().to(livez)))
            .service(web::resource("/readyz").route(web::get().to(readyz)))
            .service(web::resource("/").route(web::get().to(page::status_page)))
            .default_service(web::to(not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .client_request_timeout(Duration::from_secs(5))
    .client_disconnect_timeout(Duration::from_secs(1))
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}
