//! A minimal bitcoind JSON-RPC client: JSON-RPC 1.0 requests POSTed with HTTP basic auth, and
//! the failure kinds the driver classifies.
//!
//! bitcoind answers a JSON-RPC error with HTTP 500 (400 for an invalid request, 404 for an
//! unknown method) and a body `{"result": null, "error": {"code", "message"}, "id"}`; a bad
//! login with 401 and an empty body; a method the user may not call (`rpcwhitelist`) with 403.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::BtcAuth;
use crate::config::vars::{Secret, percent_decode};
use crate::model::ErrorClass;

/// How long to wait for a connection; a node on loopback or a LAN answers at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one call may take; the pool's VMSH_ANCHOR_TIMEOUT_S bounds the whole job anyway.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest part of a node's error message kept: bitcoind answers a wrong call with its whole
/// help text.
const MAX_MESSAGE: usize = 300;

/// bitcoind's error codes the driver treats specially (`src/rpc/protocol.h`).
pub(super) mod code {
    /// Unspecified wallet problem; `fundrawtransaction` answers "Insufficient funds" with it.
    pub(crate) const WALLET_ERROR: i64 = -4;
    /// Unknown transaction, block or address.
    pub(crate) const INVALID_ADDRESS_OR_KEY: i64 = -5;
    /// Not enough funds (older wallet calls).
    pub(crate) const WALLET_INSUFFICIENT_FUNDS: i64 = -6;
    /// Node not connected to peers.
    pub(crate) const CLIENT_NOT_CONNECTED: i64 = -9;
    /// Node still in initial block download.
    pub(crate) const CLIENT_IN_INITIAL_DOWNLOAD: i64 = -10;
    /// The wallet is encrypted and locked.
    pub(crate) const WALLET_UNLOCK_NEEDED: i64 = -13;
    /// Wrong wallet passphrase.
    pub(crate) const WALLET_PASSPHRASE_INCORRECT: i64 = -14;
    /// The transaction's inputs are missing or spent, or its fee is over the maximum.
    pub(crate) const VERIFY_ERROR: i64 = -25;
    /// The mempool rejected the transaction (fee too low, conflict, non-standard …).
    pub(crate) const VERIFY_REJECTED: i64 = -26;
    /// The transaction is already in the chain.
    pub(crate) const VERIFY_ALREADY_IN_CHAIN: i64 = -27;
    /// The node is starting up.
    pub(crate) const IN_WARMUP: i64 = -28;
    /// A parameter has the wrong JSON type.
    pub(crate) const TYPE_ERROR: i64 = -3;
    /// A parameter has a wrong value.
    pub(crate) const INVALID_PARAMETER: i64 = -8;
    /// The wallet named in the URL is not loaded.
    pub(crate) const WALLET_NOT_FOUND: i64 = -18;
    /// Several wallets are loaded and the URL names none.
    pub(crate) const WALLET_NOT_SPECIFIED: i64 = -19;
    /// A transaction or block could not be decoded.
    pub(crate) const DESERIALIZATION_ERROR: i64 = -22;
    /// The JSON-RPC request is malformed.
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    /// No such method (e.g. the wallet is disabled).
    pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
    /// Wrong parameters.
    pub(crate) const INVALID_PARAMS: i64 = -32602;
    /// The request is not JSON.
    pub(crate) const PARSE_ERROR: i64 = -32700;
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallError {
    /// No answer: connection refused or reset, timeout, or an HTTP 5xx without a JSON-RPC error.
    Unreachable(String),
    /// HTTP 401 or 403: bad credentials, or the user may not call this method.
    Denied(String),
    /// The credentials could not be read (cookie file), with the class that problem deserves.
    Credentials(ErrorClass, String),
    /// The node answered with a JSON-RPC error.
    Rpc {
        /// bitcoind's error code.
        code: i64,
        /// Its message, shortened.
        message: String,
    },
    /// The node answered something that is not a JSON-RPC reply, or not the one expected.
    Protocol(ErrorClass, String),
}

impl CallError {
    /// The backoff class of this failure (see the module docs of `btc`).
    pub(super) fn class(&self) -> ErrorClass {
        match self {
            CallError::Unreachable(_) => ErrorClass::Network,
            CallError::Denied(_) => ErrorClass::Auth,
            CallError::Credentials(class, _) | CallError::Protocol(class, _) => *class,
            CallError::Rpc { code, .. } => rpc_class(*code),
        }
    }

    /// Whether this is the JSON-RPC error `want`.
    pub(super) fn is(&self, want: i64) -> bool {
        matches!(self, CallError::Rpc { code, .. } if *code == want)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::Denied(m) | CallError::Credentials(_, m) => f.write_str(m),
            CallError::Protocol(_, m) => f.write_str(m),
            CallError::Rpc { code, message } => write!(f, "error {code}: {message}"),
        }
    }
}

/// The class of a JSON-RPC error code.
pub(super) fn rpc_class(code: i64) -> ErrorClass {
    match code {
        // The node is there but cannot serve yet; it will.
        code::IN_WARMUP | code::CLIENT_IN_INITIAL_DOWNLOAD | code::CLIENT_NOT_CONNECTED => ErrorClass::Network,
        // A locked wallet needs an operator, like bad credentials: retry slowly.
        code::WALLET_UNLOCK_NEEDED | code::WALLET_PASSPHRASE_INCORRECT => ErrorClass::Auth,
        // Errors about the request: funds, the transaction, parameters, the wallet named.
        code::WALLET_ERROR
        | code::INVALID_ADDRESS_OR_KEY
        | code::WALLET_INSUFFICIENT_FUNDS
        | code::VERIFY_ERROR
        | code::VERIFY_REJECTED
        | code::VERIFY_ALREADY_IN_CHAIN
        | code::TYPE_ERROR
        | code::INVALID_PARAMETER
        | code::WALLET_NOT_FOUND
        | code::WALLET_NOT_SPECIFIED
        | code::DESERIALIZATION_ERROR
        | code::INVALID_REQUEST
        | code::METHOD_NOT_FOUND
        | code::INVALID_PARAMS
        | code::PARSE_ERROR => ErrorClass::Validation,
        _ => ErrorClass::Unknown,
    }
}

/// One bitcoind RPC endpoint with its credentials.
pub(super) struct Rpc {
    http: reqwest::Client,
    /// Node-wide calls go here.
    node_url: reqwest::Url,
    /// Wallet calls go here (`/wallet/<name>` when a wallet is named).
    wallet_url: reqwest::Url,
    auth: Option<BtcAuth>,
    next_id: AtomicU64,
}

impl Rpc {
    /// A client for `url`, authenticating with the URL's `user:password@` when it has one
    /// (taken out of the URL, so messages never show it), else with `auth`, using wallet
    /// `wallet`.
    pub(super) fn new(url: &str, auth: Option<BtcAuth>, wallet: Option<&str>) -> Result<Self, String> {
        // The parser's message never quotes the URL, which may hold a password.
        let mut node_url = reqwest::Url::parse(url).map_err(|e| format!("rpcUrl is not a valid URL: {e}"))?;
        if !matches!(node_url.scheme(), "http" | "https") {
            return Err("rpcUrl must be an http:// or https:// URL".into());
        }
        let url_auth =
            (!node_url.username().is_empty() || node_url.password().is_some()).then(|| BtcAuth::UserPassword {
                user: percent_decode(node_url.username()),
                password: Secret::new(percent_decode(node_url.password().unwrap_or(""))),
            });
        // Both setters only fail for URLs that cannot have credentials (checked above).
        let _ = node_url.set_username("");
        let _ = node_url.set_password(None);
        // Credentials typed into the URL (e.g. `verify --rpc`) are the more specific ones.
        let auth = url_auth.or(auth);
        let mut wallet_url = node_url.clone();
        if let Some(name) = wallet {
            let mut segments =
                wallet_url.path_segments_mut().map_err(|()| "rpcUrl cannot carry a wallet path".to_string())?;
            // `push` percent-encodes the name, as bitcoind expects in `/wallet/<name>`.
            segments.pop_if_empty().push("wallet").push(name);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            // RPC credentials go in a basic-auth header; never hand them to a proxy.
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self { http, node_url, wallet_url, auth, next_id: AtomicU64::new(1) })
    }

    /// The node's URL, for messages (credentials never appear in it).
    /// The node as messages show it: scheme, host and port (a path may hold an API key).
    pub(super) fn url(&self) -> String {
        crate::config::vars::display_url(self.node_url.as_str())
    }

    /// Calls a node-wide method.
    pub(super) async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        self.post(&self.node_url, method, params).await
    }

    /// Calls a wallet method (through `/wallet/<name>` when a wallet is configured).
    pub(super) async fn wallet(&self, method: &str, params: Value) -> Result<Value, CallError> {
        self.post(&self.wallet_url, method, params).await
    }

    async fn credentials(&self) -> Result<Option<(String, String)>, CallError> {
        match &self.auth {
            None => Ok(None),
            Some(BtcAuth::UserPassword { user, password }) => Ok(Some((user.clone(), password.expose().to_string()))),
            // Read at each call: bitcoind writes a new cookie every time it starts. Never waits
            // on the file: a named pipe there would hold the worker (see `fsread`).
            Some(BtcAuth::Cookie(path)) => {
                let read = crate::fsread::read_regular(path, crate::config::vars::MAX_SECRET_FILE);
                let text = read.map(|b| String::from_utf8_lossy(&b).into_owned()).map_err(|e| {
                    if e.is_not_found() {
                        // bitcoind deletes its cookie when it stops: most likely the node is down.
                        CallError::Credentials(
                            ErrorClass::Network,
                            format!("cookie file {} does not exist; is bitcoind running?", path.display()),
                        )
                    } else {
                        CallError::Credentials(
                            ErrorClass::Auth,
                            format!("cannot read cookie file {}: {e}", path.display()),
                        )
                    }
                })?;
                let (user, password) = text.trim().split_once(':').ok_or_else(|| {
                    CallError::Credentials(
                        ErrorClass::Auth,
                        format!("cookie file {} is not of the form user:password", path.display()),
                    )
                })?;
                Ok(Some((user.to_string(), password.to_string())))
            }
        }
    }

    async fn post(&self, url: &reqwest::Url, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let mut request = self.http.post(url.clone()).json(&body);
        if let Some((user, password)) = self.credentials().await? {
            request = request.basic_auth(user, Some(password));
        }
        // Messages name no URL: whoever reports them names the node (the driver's label,
        // verify's "at URL"). The node's own text may echo the request, credentials included;
        // it is cleaned where it leaves the driver (`crate::anchor::Guarded`, and
        // `verify_attestation`).
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Unreachable(format!("no answer: {}", error_chain(&e.without_url()))))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(CallError::Denied(
                "the node refused the RPC credentials (HTTP 401); check rpcUser/rpcPassword or cookieFile".into(),
            ));
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(CallError::Denied(format!(
                "the node does not let this user call {method} (HTTP 403); check rpcwhitelist"
            )));
        }
        let body = crate::anchor::client::read_capped(response, crate::anchor::client::MAX_RPC_BODY)
            .await
            .map_err(|e| CallError::Unreachable(format!("the answer broke off: {e}")))?;
        let text = String::from_utf8_lossy(&body);
        let reply: Option<Value> = serde_json::from_str(&text).ok();
        let error = reply.as_ref().map(|r| &r["error"]).filter(|e| !e.is_null());
        if let Some(error) = error {
            let code = error["code"].as_i64();
            let message = error["message"].as_str().map(shorten);
            return match (code, message) {
                (Some(code), Some(message)) => Err(CallError::Rpc { code, message }),
                _ => Err(CallError::Protocol(
                    ErrorClass::Unknown,
                    "the node answered an error without code and message".into(),
                )),
            };
        }
        if status.is_server_error() {
            return Err(CallError::Unreachable(format!("the node answered HTTP {status}")));
        }
        if !status.is_success() {
            // E.g. 404 for a wrong path: the configured URL is wrong.
            return Err(CallError::Protocol(
                ErrorClass::Validation,
                format!("the node answered HTTP {status}; is rpcUrl a bitcoind RPC endpoint?"),
            ));
        }
        match reply {
            Some(mut r) if r.get("result").is_some() => Ok(r["result"].take()),
            _ => Err(CallError::Protocol(
                ErrorClass::Unknown,
                format!("the node answered HTTP {status} with no JSON-RPC result"),
            )),
        }
    }
}

/// An error with its causes ("error sending request: connection refused"), which is where
/// reqwest says what actually happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The first line of a node's message, at most [`MAX_MESSAGE`] characters (a cut one ends in
/// `…`, which tells the redactor where a secret may have been cut).
fn shorten(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    if line.chars().count() > MAX_MESSAGE {
        let cut: String = line.chars().take(MAX_MESSAGE).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_the_documented_classes() {
        assert_eq!(rpc_class(code::IN_WARMUP), ErrorClass::Network);
        assert_eq!(rpc_class(code::WALLET_ERROR), ErrorClass::Validation);
        assert_eq!(rpc_class(code::VERIFY_REJECTED), ErrorClass::Validation);
        assert_eq!(rpc_class(code::WALLET_UNLOCK_NEEDED), ErrorClass::Auth);
        assert_eq!(rpc_class(-32603), ErrorClass::Unknown);
        assert_eq!(rpc_class(-1), ErrorClass::Unknown);
        assert_eq!(CallError::Unreachable("x".into()).class(), ErrorClass::Network);
        assert_eq!(CallError::Denied("x".into()).class(), ErrorClass::Auth);
    }

    #[test]
    fn long_help_texts_are_cut_to_their_first_line() {
        assert_eq!(
            shorten("sendrawtransaction \"hexstring\"\n\nSubmit a raw transaction"),
            "sendrawtransaction \"hexstring\""
        );
        assert_eq!(shorten(&"x".repeat(1000)).chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn credentials_in_the_url_are_taken_out_of_it() {
        let rpc = Rpc::new("http://vmsh:p%40ss@127.0.0.1:18443/", None, None).expect("client");
        assert_eq!(rpc.url(), "http://127.0.0.1:18443");
        assert_eq!(rpc.auth, Some(BtcAuth::UserPassword { user: "vmsh".into(), password: Secret::new("p@ss") }));
        // Credentials in the URL win over configured ones; without them, the configured ones.
        let cookie = BtcAuth::Cookie("/var/lib/bitcoind/.cookie".into());
        let rpc = Rpc::new("http://a:b@127.0.0.1:18443/", Some(cookie.clone()), None).expect("client");
        assert_eq!(rpc.auth, Some(BtcAuth::UserPassword { user: "a".into(), password: Secret::new("b") }));
        let rpc = Rpc::new("http://127.0.0.1:18443/", Some(cookie.clone()), None).expect("client");
        assert_eq!((rpc.url().as_str(), rpc.auth.as_ref()), ("http://127.0.0.1:18443", Some(&cookie)));
    }

    #[test]
    fn a_wallet_name_becomes_an_encoded_path() {
        let rpc = Rpc::new("http://127.0.0.1:18443/", None, Some("anchor wallet")).expect("client");
        assert_eq!(rpc.wallet_url.as_str(), "http://127.0.0.1:18443/wallet/anchor%20wallet");
        assert_eq!(rpc.url(), "http://127.0.0.1:18443");
        let rpc = Rpc::new("http://127.0.0.1:18443", None, None).expect("client");
        assert_eq!(rpc.wallet_url.as_str(), "http://127.0.0.1:18443/");
    }
}
