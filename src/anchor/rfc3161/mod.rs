//! `rfc3161:<name>`: a native RFC 3161 time-stamp client.
//!
//! Each anchor POSTs a DER TimeStampReq (SHA-256 imprint of the 32 root bytes, a random
//! 64-bit nonce, certReq, the requested policy) as `application/timestamp-query`, and accepts
//! only a granted reply whose token time-stamps that imprint with that nonce (and policy,
//! when one was asked). With a `trustBundle` the token's signature, its signer's certificate
//! chain as of genTime and the signer's time-stamping usage are verified too. The receipt
//! keeps the whole token, so `verify` can check it again later without the TSA.
//!
//! An entry may list several TSAs (`urls:`). They are tried in order (a URL that just failed
//! goes last for a while: see [`watch`]) until one gives a usable token; a failure of any kind
//! — no answer, an HTTP error, a rejection, a malformed, mismatching or untrusted token — moves
//! on to the next, so a token that does not verify is never kept. The receipt names no URL:
//! everything in an attestation is evidence `verify` checks again, and a URL is not in the
//! token. Which TSA signed is: its name (`tsa`, when it gives one) and its certificate.
//!
//! Failure classes: no connection, a timeout or HTTP 5xx → network; HTTP 401/403 → auth;
//! any other 4xx, a rejection, or a malformed, mismatching or untrusted token → validation.
//! Messages name the entry and the TSA's host (`rfc3161.tsa (https://tsa.example/…): …`);
//! when every TSA of an entry failed, the message names each host and its failure.

mod asn1;
mod config;
mod protocol;
mod token;
mod trust;
mod verify;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use der::oid::ObjectIdentifier;

pub use config::{DEFAULT_CERT_EXPIRY_WARN_DAYS, MAX_BUNDLE, TsaSpec, TsaTarget, origin};
pub use token::{TokenInfo, verify_token};
pub use trust::TrustBundle;
pub use verify::{TsaAttestation, verify_receipt};
pub use watch::{COOL_DOWN, TsaWatch};

use super::{BoxFuture, Driver, ProgressSink};
use crate::clock::{SystemClock, rfc3339};
use crate::config::vars::Redactor;
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass, Recovery, Submitted};

/// Largest reply read; tokens are a few kilobytes, and a TSA answering more is broken.
const MAX_REPLY: usize = 1024 * 1024;

/// One TSA of an entry.
struct Tsa {
    /// `rfc3161.<entry> (<host>)`, the start of every message about it.
    label: String,
    /// `scheme://host[:port]`: how the board, the log and error messages name it.
    origin: String,
    /// The whole URL, for the one place that connects.
    url: String,
}

/// Why one TSA gave no usable token.
struct Failure {
    class: ErrorClass,
    what: String,
}

fn failure(class: ErrorClass, what: impl std::fmt::Display) -> Failure {
    Failure { class, what: what.to_string() }
}

/// Time-stamps roots at an entry's TSAs.
pub struct TsaDriver {
    /// The entry's name.
    entry: String,
    /// Its TSAs, in the configured order.
    tsas: Vec<Tsa>,
    /// Their origins, in the same order.
    origins: Vec<String>,
    policy: Option<ObjectIdentifier>,
    timeout: Option<Duration>,
    bundle: Option<Arc<TrustBundle>>,
    client: reqwest::Client,
    /// Days before a signing certificate expires that it is warned about, as a duration.
    warn_within: Duration,
    /// The entry's own secrets: what the board and the log are told is cleaned of them, as the
    /// driver's guard cleans what the scheduler is told.
    redact: Redactor,
    watch: TsaWatch,
}

fn parse_oid(oid: &str) -> Result<ObjectIdentifier, String> {
    ObjectIdentifier::new(oid).map_err(|e| format!("policy {oid:?} is not a usable object identifier: {e}"))
}

fn warn_within(target: &TsaTarget) -> Duration {
    Duration::from_secs(u64::from(target.cert_expiry_warn_days) * 86_400)
}

impl TsaDriver {
    /// A driver for the entry `rfc3161.<name>` that reports to nobody (for tests and tools);
    /// reads its trust bundle, if one is configured.
    pub fn new(name: &str, target: &TsaTarget) -> Result<Self, String> {
        Self::watched(name, target, TsaWatch::unwatched(Arc::new(SystemClock::new())))
    }

    /// A driver for the entry `rfc3161.<name>` reporting each TSA's health to `watch`; reads
    /// its trust bundle, if one is configured.
    pub fn watched(name: &str, target: &TsaTarget, watch: TsaWatch) -> Result<Self, String> {
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
        let mut tsas = Vec::new();
        for url in &target.urls {
            let url = url.expose();
            // The config loader checked every URL; this only keeps a hand-built target honest.
            let origin = origin(url).map_err(|e| format!("a TSA URL {e}"))?;
            tsas.push(Tsa { label: super::entry_label("rfc3161", name, url), origin, url: url.to_string() });
        }
        if tsas.is_empty() {
            return Err("no TSA URL is configured".into());
        }
        let origins: Vec<String> = tsas.iter().map(|t| t.origin.clone()).collect();
        let warn_within = warn_within(target);
        watch.board().register(name, &origins, crate::model::time::duration_ms(warn_within));
        Ok(Self {
            entry: name.to_string(),
            tsas,
            origins,
            policy,
            timeout: target.timeout,
            bundle,
            client,
            warn_within,
            redact: target.secrets().redactor(),
            watch,
        })
    }

    /// How messages about the entry as a whole begin: its one TSA's label, or
    /// `rfc3161.<entry>` when it has several.
    fn entry_label(&self) -> String {
        match self.tsas.as_slice() {
            [one] => one.label.clone(),
            _ => format!("rfc3161.{}", self.entry),
        }
    }

    fn fail(&self, class: ErrorClass, what: impl std::fmt::Display) -> AnchorError {
        AnchorError::new(class, format!("{}: {what}", self.entry_label()))
    }

    /// POSTs the query to `tsa`; returns the reply body of a 2xx answer.
    async fn post(&self, tsa: &Tsa, query: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let mut request = self
            .client
            .post(&tsa.url)
            .header(reqwest::header::CONTENT_TYPE, "application/timestamp-query")
            .header(reqwest::header::ACCEPT, "application/timestamp-reply")
            .body(query);
        if let Some(t) = self.timeout {
            request = request.timeout(t);
        }
        let mut response = request.send().await.map_err(|e| failure(ErrorClass::Network, describe(&e)))?;
        let code = response.status().as_u16();
        match code {
            200..=299 => {}
            401 | 403 => {
                return Err(failure(ErrorClass::Auth, format!("the TSA refused our credentials (HTTP {code})")));
            }
            500..=599 => return Err(failure(ErrorClass::Network, format!("the TSA failed (HTTP {code})"))),
            _ => return Err(failure(ErrorClass::Validation, format!("the TSA refused the query (HTTP {code})"))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failure(ErrorClass::Network, describe(&e)))? {
            if body.len() + chunk.len() > MAX_REPLY {
                return Err(failure(ErrorClass::Validation, "the TSA's reply is larger than 1 MiB"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Asks `tsa` for a token; the attestation, and the certificate that signed the token
    /// when it can be found.
    async fn stamp_at(
        &self,
        tsa: &Tsa,
        req: &AnchorRequest,
        policy: Option<ObjectIdentifier>,
    ) -> Result<(Attestation, Option<trust::SignerCertificate>), Failure> {
        let mut nonce_bytes = [0u8; 8];
        getrandom::getrandom(&mut nonce_bytes)
            .map_err(|e| failure(ErrorClass::Unknown, format!("no randomness for the nonce: {e}")))?;
        let nonce = u64::from_be_bytes(nonce_bytes);
        let nonce_int = protocol::nonce_int(nonce).map_err(|e| failure(ErrorClass::Unknown, e))?;
        let imprint = token::imprint_of(&req.root);
        let query =
            protocol::build_request(&imprint, &nonce_int, policy).map_err(|e| failure(ErrorClass::Unknown, e))?;
        let body = self.post(tsa, query).await?;
        let reply = protocol::parse_response(&body)
            .map_err(|e| failure(ErrorClass::Validation, format!("the TSA's reply is not a TimeStampResp ({e})")))?;
        if !reply.granted() {
            return Err(failure(
                ErrorClass::Validation,
                // The status text may echo our request: it is cleaned before anyone sees it.
                format!("the TSA did not grant a token: {}", reply.describe()),
            ));
        }
        let Some(token_der) = reply.token else {
            return Err(failure(ErrorClass::Validation, "the TSA granted the request but sent no token"));
        };
        let expected = token::Expected { imprint: &imprint, nonce: Some(&nonce_int), policy: policy.as_ref() };
        let info = token::check(&token_der, &expected, self.bundle.as_deref())
            .map_err(|e| failure(ErrorClass::Validation, e))?;
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
        if let Some(name) = &info.tsa_name {
            data["tsa"] = serde_json::Value::String(name.clone());
        }
        let signer = token::signer_of(&token_der, self.bundle.as_deref());
        Ok((Attestation { data, anchored_at: Some(info.gen_time_ms) }, signer))
    }

    /// Tries the entry's TSAs in turn until one gives a usable token.
    async fn stamp(&self, req: &AnchorRequest) -> Result<Attestation, AnchorError> {
        let policy = match &req.policy_oid {
            Some(p) => Some(parse_oid(p).map_err(|e| self.fail(ErrorClass::Validation, e))?),
            None => self.policy,
        };
        let order = self.watch.order(&self.entry, &self.origins);
        let mut failed: Vec<(&Tsa, Failure)> = Vec::new();
        for (n, &i) in order.iter().enumerate() {
            let tsa = &self.tsas[i];
            match self.stamp_at(tsa, req, policy).await {
                Ok((attestation, signer)) => {
                    self.watch.succeeded(&self.entry, &tsa.origin, signer.as_ref(), self.warn_within);
                    return Ok(attestation);
                }
                Err(f) => {
                    let f = Failure { what: self.redact.clean(&f.what), ..f };
                    let next = order.get(n + 1).map(|&j| self.tsas[j].origin.as_str());
                    self.watch.failed(&self.entry, &tsa.origin, f.class, &f.what, next);
                    failed.push((tsa, f));
                }
            }
        }
        Err(self.all_failed(failed))
    }

    /// The error when every TSA failed: with one TSA, its failure; with several, each host
    /// and its failure, in the order they were tried.
    fn all_failed(&self, failed: Vec<(&Tsa, Failure)>) -> AnchorError {
        if let [(tsa, f)] = failed.as_slice() {
            return AnchorError::new(f.class, format!("{}: {}", tsa.label, f.what));
        }
        let each: Vec<String> = failed
            .iter()
            .map(|(tsa, f)| format!("{} ({}): {}", crate::config::vars::display_url(&tsa.url), f.class, f.what))
            .collect();
        AnchorError::new(
            combined_class(failed.iter().map(|(_, f)| f.class)),
            format!("{}: all {} TSAs failed: {}", self.entry_label(), failed.len(), each.join("; ")),
        )
    }
}

/// The class of a failure of every TSA: network when any failed for a network reason (one of
/// them may be back by the next retry), else that of the first failure.
fn combined_class(classes: impl Iterator<Item = ErrorClass>) -> ErrorClass {
    let mut first = None;
    for class in classes {
        if class == ErrorClass::Network {
            return class;
        }
        first.get_or_insert(class);
    }
    first.unwrap_or(ErrorClass::Unknown)
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
