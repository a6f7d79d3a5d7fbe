//! The network drivers' HTTP client (the server is `crate::http`): one way to build clients
//! (connect and request timeouts, no proxy from the environment), capped body reads, URLs fit
//! for messages, and a JSON-RPC transport for alloy built on them.
//!
//! A target that answers slowly is cut off by the timeouts, and one that answers with an
//! endless or huge body is cut off at a size limit, so neither can hold a worker forever or
//! grow the scheduler's memory.

use std::task::{Context, Poll};
use std::time::Duration;

use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};

/// Time to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole request, unless a target sets its own.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest JSON-RPC answer read (blocks and receipts are far smaller).
pub const MAX_RPC_BODY: usize = 16 * 1024 * 1024;

/// A client with the standard timeouts. Proxies come from config, never from the process
/// environment (only `main.rs` reads it).
pub fn client(request_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(request_timeout)
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

pub use crate::config::vars::display_url;
pub use crate::response::{describe, read_capped};

/// A JSON-RPC over HTTP transport for alloy with the timeouts above and a capped body.
#[derive(Clone)]
pub struct RpcTransport {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl RpcTransport {
    /// A transport posting to `url`.
    pub fn new(url: &str, request_timeout: Duration) -> Result<Self, String> {
        let url = url.parse().map_err(|_| format!("{} is not a valid URL", display_url(url)))?;
        Ok(Self { client: client(request_timeout)?, url })
    }

    async fn call(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let response = self
            .client
            .post(self.url)
            .json(&req)
            .send()
            .await
            .map_err(|e| TransportErrorKind::custom_str(&describe(&e)))?;
        let status = response.status();
        let body = read_capped(response, MAX_RPC_BODY).await.map_err(|e| TransportErrorKind::custom_str(&e))?;
        if !status.is_success() {
            // A JSON-RPC error travels in the body even with an error status.
            if let Ok(packet) = serde_json::from_slice::<ResponsePacket>(&body) {
                return Ok(packet);
            }
            return Err(TransportErrorKind::http_error(status.as_u16(), String::new()));
        }
        serde_json::from_slice(&body).map_err(|err| TransportError::deser_err(err, ""))
    }
}

impl tower::Service<RequestPacket> for RpcTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        Box::pin(self.clone().call(req))
    }
}
