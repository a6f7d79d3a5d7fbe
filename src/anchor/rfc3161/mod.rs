//! `rfc3161:<name>`: a native RFC 3161 time-stamp client.
//!
//! Each anchor POSTs a DER TimeStampReq (SHA-256 imprint of the 32 root bytes, a random
//! 64-bit nonce, certReq, the requested policy) as `application/timestamp-query`, and accepts
//! only a granted reply whose token time-stamps that imprint with that nonce (and policy,
//! when one was asked). With a `trustBundle` the token's signature, its signer's certificate
//! chain as of genTime and the signer's time-stamping usage are verified too. The receipt
//! keeps the whole token, so `verify` can check it again later without the TSA.
//!
//! Failure classes: no connection, a timeout or HTTP 5xx → network; HTTP 401/403 → auth;
//! any other 4xx, a rejection, or a malformed, mismatching or untrusted token → validation.
//! Messages name the entry and the TSA's host (`rfc3161.tsa (https://tsa.example/…): …`).

mod asn1;
mod config;
mod protocol;
mod token;
mod trust;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use der::oid::ObjectIdentifier;

pub use config::{MAX_BUNDLE, TsaSpec, TsaTarget};
pub use token::{TokenInfo, verify_token};
pub use trust::TrustBundle;
pub use verify::{TsaAttestation, verify_receipt};

use super::{BoxFuture, Driver, ProgressSink};
use crate::clock::rfc3339;
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass, Recovery, Submitted};

/// Largest reply read; tokens are a few kilobytes, and a TSA answering more is broken.
const MAX_REPLY: usize = 1024 * 1024;

/// Time-stamps roots at one TSA.
pub struct TsaDriver {
    /// `rfc3161.<entry> (<host>)`, the start of every message.
    label: String,
    url: String,
    policy: Option<ObjectIdentifier>,
    timeout: Option<Duration>,
    bundle: Option<Arc<TrustBundle>>,
    client: reqwest::Client,
}

fn parse_oid(oid: &str) -> Result<ObjectIdentifier, String> {
    ObjectIdentifier::new(oid).map_err(|e| format!("policy {oid:?} is not a usable object identifier: {e}"))
}

impl TsaDriver {
    /// A driver for the entry `rfc3161.<name>`; reads its trust bundle, if one is configured.
    pub fn new(name: &str, target: &TsaTarget) -> Result<Self, String> {
        let policy = target.policy_oid.as_deref().map(parse_oid).transpose()?;
        let bundle = match &target.trust_bundle {
            Some(path) => {
                let pem = crate::fsread::read_regular(path, MAX_BUNDLE)
                    .map_err(|e| format!("trustBundle {}: cannot read it: {e}", path.display()))?;
                Some(Arc::new(TrustBundle::from_pem(&pem).map_err(|e| format!("trustBundle {}: {e}", path.display()))?))
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            // A redirected POST may turn into a GET; the operator should configure the final URL.
            .redirect(reqwest::redirect::Policy::none())
            // Proxies from the environment would make the target depend on who started the
            // service; nothing but main.rs reads the environment.
            .no_proxy()
            .connect_timeout(super::client::CONNECT_TIMEOUT)
            .timeout(target.timeout.unwrap_or(super::client::REQUEST_TIMEOUT))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            label: super::entry_label("rfc3161", name, target.url.expose()),
            url: target.url.expose().to_string(),
            policy,
            timeout: target.timeout,
            bundle,
            client,
        })
    }

    fn fail(&self, class: ErrorClass, what: impl std::fmt::Display) -> AnchorError {
        AnchorError::new(class, format!("{}: {what}", self.label))
    }

    /// POSTs the query; returns the reply body of a 2xx answer.
    async fn post(&self, query: Vec<u8>) -> Result<Vec<u8>, AnchorError> {
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/timestamp-query")
            .header(reqwest::header::ACCEPT, "application/timestamp-reply")
            .body(query);
        if let Some(t) = self.timeout {
            request = request.timeout(t);
        }
        let mut response = request.send().await.map_err(|e| self.fail(ErrorClass::Network, describe(&e)))?;
        let code = response.status().as_u16();
        match code {
            200..=299 => {}
            401 | 403 => {
                return Err(self.fail(ErrorClass::Auth, format!("the TSA refused our credentials (HTTP {code})")));
            }
            500..=599 => return Err(self.fail(ErrorClass::Network, format!("the TSA failed (HTTP {code})"))),
            _ => return Err(self.fail(ErrorClass::Validation, format!("the TSA refused the query (HTTP {code})"))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.fail(ErrorClass::Network, describe(&e)))? {
            if body.len() + chunk.len() > MAX_REPLY {
                return Err(self.fail(ErrorClass::Validation, "the TSA's reply is larger than 1 MiB"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn stamp(&self, req: &AnchorRequest) -> Result<Attestation, AnchorError> {
        let policy = match &req.policy_oid {
            Some(p) => Some(parse_oid(p).map_err(|e| self.fail(ErrorClass::Validation, e))?),
            None => self.policy,
        };
        let mut nonce_bytes = [0u8; 8];
        getrandom::getrandom(&mut nonce_bytes)
            .map_err(|e| self.fail(ErrorClass::Unknown, format!("no randomness for the nonce: {e}")))?;
        let nonce = u64::from_be_bytes(nonce_bytes);
        let nonce_int = protocol::nonce_int(nonce).map_err(|e| self.fail(ErrorClass::Unknown, e))?;
        let imprint = token::imprint_of(&req.root);
        let query =
            protocol::build_request(&imprint, &nonce_int, policy).map_err(|e| self.fail(ErrorClass::Unknown, e))?;
        let body = self.post(query).await?;
        let reply = protocol::parse_response(&body)
            .map_err(|e| self.fail(ErrorClass::Validation, format!("the TSA's reply is not a TimeStampResp ({e})")))?;
        if !reply.granted() {
            return Err(self.fail(
                ErrorClass::Validation,
                // The status text may echo our request: the driver's guard cleans it.
                format!("the TSA did not grant a token: {}", reply.describe()),
            ));
        }
        let Some(token_der) = reply.token else {
            return Err(self.fail(ErrorClass::Validation, "the TSA granted the request but sent no token"));
        };
        let expected = token::Expected { imprint: &imprint, nonce: Some(&nonce_int), policy: policy.as_ref() };
        let info = token::check(&token_der, &expected, self.bundle.as_deref())
            .map_err(|e| self.fail(ErrorClass::Validation, e))?;
        use base64::Engine as _;
        let mut data = serde_json::json!({
            "token": base64::engine::general_purpose::STANDARD.encode(&token_der),
            "genTime": rfc3339(info.gen_time_ms),
            "serialNumber": info.serial_hex,
            "policy": info.policy,
            "imprintAlgorithm": "sha256",
            "nonce": format!("{nonce:016x}"),
            "verified": info.verified,
        });
        if let Some(tsa) = &info.tsa_name {
            data["tsa"] = serde_json::Value::String(tsa.clone());
        }
        Ok(Attestation { data, anchored_at: Some(info.gen_time_ms) })
    }
}

/// A transport failure in a sentence, without the URL (it may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "the TSA did not answer in time"
    } else if e.is_connect() {
        "cannot connect to the TSA"
    } else if e.is_body() || e.is_decode() {
        "the TSA's reply broke off"
    } else {
        "the request to the TSA failed"
    };
    // The innermost cause says what the OS saw ("Connection refused", …).
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let detail = cause.to_string();
    if std::ptr::addr_eq(cause, e as &dyn std::error::Error) || detail.contains("://") {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

impl Driver for TsaDriver {
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move { self.stamp(req).await.map(Submitted::Anchored) })
    }

    fn recover<'a>(&'a self, _req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        // A TSA keeps nothing we could ask for: a token whose reply was lost is simply gone,
        // and stamping the root again is harmless.
        Box::pin(async { Recovery::NotDone })
    }
}
