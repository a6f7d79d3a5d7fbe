//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
//! `/v3/lease/grant` …, served on every member's client port since etcd 3.4).
//!
//! Why not gRPC: the Rust gRPC clients of etcd generate their code with `protoc` at build
//! time, and the README's first command must build with the Rust toolchain alone. The gateway
//! speaks the same protocol-buffer messages as JSON (bytes in base64, 64-bit integers as
//! strings), has the same semantics (linearizable reads, transactions, leases) and needs only
//! the HTTP client the scheduler already has. The one thing it lacks is streaming watches,
//! which this client does not need: replicas poll the member list once per lease period.
//!
//! Endpoints are tried in turn: one that cannot be reached, times out, or says it has no
//! leader is skipped, and the one that answered is tried first next time. A cluster without
//! quorum answers no endpoint within the request time limit: the caller sees
//! [`EtcdError::Unavailable`] and must stop whatever needed etcd to agree.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::config::vars::{Secret, display_url};

/// Largest answer read: a range over every namespace's state at 100,000 namespaces.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// What went wrong talking to etcd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (all down, partitioned, or the cluster has no quorum).
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// etcd answered with an error.
    #[error("etcd refused {what}: {message}")]
    Refused {
        /// The call.
        what: &'static str,
        /// The gRPC status code etcd gave.
        code: i64,
        /// Its message.
        message: String,
    },
    /// A lease that expired (or was revoked) cannot be kept alive.
    #[error("etcd lease {0:x} expired")]
    LeaseExpired(i64),
    /// Another live process is registered under this node id.
    #[error("node id {0:?} is registered by another live replica (each replica needs its own VMSH_NODE_ID)")]
    NodeTaken(String),
    /// An answer that does not have the gateway's shape.
    #[error("etcd's answer to {what} is malformed: {why}")]
    Malformed {
        /// The call.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The client could not be set up (a certificate file, a URL).
    #[error("etcd client: {0}")]
    Config(String),
}

/// TLS towards etcd: a CA to trust, and a client certificate.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM bundle of CAs that sign the members' certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate followed by its private key.
    pub identity_pem: Option<Vec<u8>>,
}

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members, `http(s)://host:port`.
    pub endpoints: Vec<String>,
    /// TLS settings, for `https` endpoints.
    pub tls: EtcdTls,
    /// A user and password, when etcd's authentication is on.
    pub auth: Option<(String, Secret)>,
    /// Time limit of one request to one endpoint.
    pub request_timeout: Duration,
}

/// A key and its value, with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision that last changed it: the fence a conditional write compares.
    pub mod_revision: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

/// What a transaction compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's last change is exactly this revision (0: the key does not exist).
    ModRevision(Vec<u8>, i64),
    /// The key was created at exactly this revision (0: the key does not exist).
    CreateRevision(Vec<u8>, i64),
    /// The key holds exactly this value.
    Value(Vec<u8>, Vec<u8>),
    /// The key is attached to exactly this lease.
    Lease(Vec<u8>, i64),
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes a key, attached to a lease (0 for none).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease; 0 for none.
        lease: i64,
    },
    /// Deletes a key.
    Delete(Vec<u8>),
    /// Deletes every key from the first (included) to the second (excluded).
    DeleteRange(Vec<u8>, Vec<u8>),
    /// Reads a key.
    Get(Vec<u8>),
    /// Reads every key that starts with a prefix.
    GetPrefix(Vec<u8>),
}

/// A transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held (and the success ops ran).
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: i64,
    /// What each `Get` or `GetPrefix` of the ops that ran found, in order.
    pub gets: Vec<Vec<KeyValue>>,
}

/// Which of `n` endpoints a new client tries first: one at random, so that replicas given
/// the same list spread over the members instead of all loading the first (measured at
/// 10,000 namespaces: the first member did more than half of the cluster's work).
fn first_endpoint(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process from the OS: random enough to spread, no crate.
    let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
    usize::try_from(seed % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// An etcd client (see the module docs).
pub struct Etcd {
    client: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    auth: Option<(String, Secret)>,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self.endpoints.iter().map(|e| display_url(e)).collect();
        f.debug_struct("Etcd").field("endpoints", &shown).finish_non_exhaustive()
    }
}

/// The key just after every key that starts with `prefix`: a range's end for a prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

fn int(v: &Value) -> i64 {
    // The gateway writes 64-bit integers as strings, and leaves out zeros.
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes(what: &'static str, v: &Value) -> Result<Vec<u8>, EtcdError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => B64.decode(s).map_err(|e| EtcdError::Malformed { what, why: format!("not base64: {e}") }),
        _ => Err(EtcdError::Malformed { what, why: "bytes that are not a string".into() }),
    }
}

fn kvs(what: &'static str, v: &Value) -> Result<Vec<KeyValue>, EtcdError> {
    let Some(list) = v.get("kvs") else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or(EtcdError::Malformed { what, why: "kvs is not a list".into() })?;
    list.iter()
        .map(|kv| {
            Ok(KeyValue {
                key: bytes(what, &kv["key"])?,
                value: bytes(what, &kv["value"])?,
                create_revision: int(&kv["create_revision"]),
                mod_revision: int(&kv["mod_revision"]),
                lease: int(&kv["lease"]),
            })
        })
        .collect()
}

fn compare_json(c: &Compare) -> Value {
    match c {
        Compare::ModRevision(k, r) => {
            json!({"key": B64.encode(k), "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string()})
        }
        Compare::CreateRevision(k, r) => {
            json!({"key": B64.encode(k), "target": "CREATE", "result": "EQUAL", "create_revision": r.to_string()})
        }
        Compare::Value(k, v) => {
            json!({"key": B64.encode(k), "target": "VALUE", "result": "EQUAL", "value": B64.encode(v)})
        }
        Compare::Lease(k, l) => {
            json!({"key": B64.encode(k), "target": "LEASE", "result": "EQUAL", "lease": l.to_string()})
        }
    }
}

fn op_json(o: &Op) -> Value {
    match o {
        Op::Put { key, value, lease } => {
            json!({"request_put": {"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()}})
        }
        Op::Delete(k) => json!({"request_delete_range": {"key": B64.encode(k)}}),
        Op::DeleteRange(from, to) => {
            json!({"request_delete_range": {"key": B64.encode(from), "range_end": B64.encode(to)}})
        }
        Op::Get(k) => json!({"request_range": {"key": B64.encode(k)}}),
        Op::GetPrefix(p) => json!({"request_range": {"key": B64.encode(p), "range_end": B64.encode(prefix_end(p))}}),
    }
}

/// Whether an error answer means "this member cannot serve now; ask another" (no leader,
/// stopping, not yet started) rather than a refusal of the request itself.
fn member_cannot_serve(message: &str) -> bool {
    ["no leader", "leader changed", "stopped", "not capable", "timed out", "unavailable", "too many requests"]
        .iter()
        .any(|w| message.contains(w))
}

impl Etcd {
    /// A client for the cluster `options` describes; nothing is sent yet.
    pub fn new(options: EtcdOptions) -> Result<Self, EtcdError> {
        if options.endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoints".into()));
        }
        for e in &options.endpoints {
            let lower = e.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(EtcdError::Config(format!(
                    "endpoint {} is not an http:// or https:// URL",
                    display_url(e)
                )));
            }
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.request_timeout.min(Duration::from_secs(3)))
            .timeout(options.request_timeout)
            .no_proxy();
        if let Some(ca) = &options.tls.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| EtcdError::Config(format!("the CA file is not a PEM bundle: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &options.tls.identity_pem {
            let identity = reqwest::Identity::from_pem(identity)
                .map_err(|e| EtcdError::Config(format!("the client certificate and key are not usable PEM: {e}")))?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| EtcdError::Config(format!("cannot build an HTTP client: {e}")))?;
        let endpoints: Vec<String> = options.endpoints.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        let preferred = AtomicUsize::new(first_endpoint(endpoints.len()));
        Ok(Self { client, endpoints, preferred, auth: options.auth, token: Mutex::new(None) })
    }

    fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    /// One POST to one endpoint: the answer's JSON, or why not.
    async fn post(&self, endpoint: &str, path: &str, body: &Value, token: Option<&str>) -> Result<Value, Attempt> {
        let mut request = self.client.post(format!("{endpoint}{path}")).json(body);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        let response = request.send().await.map_err(|e| Attempt::Next(crate::response::describe(&e)))?;
        let status = response.status();
        // A member answering without end cannot grow the scheduler's memory.
        let body = crate::response::read_capped(response, MAX_BODY).await.map_err(Attempt::Next)?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|_| Attempt::Next(format!("HTTP {}: not JSON", status.as_u16())))?;
        if status.is_success() && value.get("error").is_none() {
            return Ok(value);
        }
        let message = value["message"].as_str().or(value["error"].as_str()).unwrap_or("").to_string();
        let code = int(&value["code"]);
        if status.is_server_error() && member_cannot_serve(&message) || status.as_u16() == 503 {
            return Err(Attempt::Next(format!("HTTP {}: {message}", status.as_u16())));
        }
        Err(Attempt::Refused { code, message })
    }

    /// Calls `path` on the first endpoint that can serve it, authenticating as needed.
    async fn call(&self, what: &'static str, path: &str, body: Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let endpoint = &self.endpoints[at];
            let mut reauthenticated = false;
            loop {
                let token = match (&self.auth, self.token()) {
                    (None, _) => None,
                    (Some(_), Some(t)) => Some(t),
                    (Some(_), None) => match self.authenticate(endpoint).await {
                        Ok(t) => Some(t),
                        Err(Attempt::Next(why)) => {
                            failures.push(format!("{}: {why}", display_url(endpoint)));
                            break;
                        }
                        Err(Attempt::Refused { code, message }) => {
                            return Err(EtcdError::Refused { what: "authenticate", code, message });
                        }
                    },
                };
                match self.post(endpoint, path, &body, token.as_deref()).await {
                    Ok(v) => {
                        self.preferred.store(at, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(Attempt::Next(why)) => {
                        failures.push(format!("{}: {why}", display_url(endpoint)));
                        break;
                    }
                    // An expired token: authenticate again, once.
                    Err(Attempt::Refused { message, .. })
                        if self.auth.is_some() && !reauthenticated && message.contains("invalid auth token") =>
                    {
                        self.set_token(None);
                        reauthenticated = true;
                    }
                    Err(Attempt::Refused { code, message }) => return Err(EtcdError::Refused { what, code, message }),
                }
            }
        }
        Err(EtcdError::Unavailable(failures.join("; ")))
    }

    async fn authenticate(&self, endpoint: &str) -> Result<String, Attempt> {
        let Some((user, password)) = &self.auth else { return Err(Attempt::Next("no credentials".into())) };
        let v = self
            .post(endpoint, "/v3/auth/authenticate", &json!({"name": user, "password": password.expose()}), None)
            .await?;
        let token = v["token"].as_str().ok_or(Attempt::Next("no token in the answer".into()))?.to_string();
        self.set_token(Some(token.clone()));
        Ok(token)
    }

    /// The value of `key`, if it exists, and the store's revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let v = self.call("range", "/v3/kv/range", json!({"key": B64.encode(key)})).await?;
        let found = kvs("range", &v)?.into_iter().next();
        Ok((found, int(&v["header"]["revision"])))
    }

    /// Every key that starts with `prefix`, in key order, and the store's revision.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let body = json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))});
        let v = self.call("range", "/v3/kv/range", body).await?;
        Ok((kvs("range", &v)?, int(&v["header"]["revision"])))
    }

    /// Every key from `from` (included) to `to` (excluded), in key order, and the store's
    /// revision.
    pub async fn range(&self, from: &[u8], to: &[u8]) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let body = json!({"key": B64.encode(from), "range_end": B64.encode(to)});
        let v = self.call("range", "/v3/kv/range", body).await?;
        Ok((kvs("range", &v)?, int(&v["header"]["revision"])))
    }

    /// Writes `key`, attached to `lease` (0 for none); returns the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let body = json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()});
        let v = self.call("put", "/v3/kv/put", body).await?;
        Ok(int(&v["header"]["revision"]))
    }

    /// Runs `success` if every comparison holds, else `failure`, atomically.
    pub async fn txn(&self, compare: &[Compare], success: &[Op], failure: &[Op]) -> Result<TxnOutcome, EtcdError> {
        let body = json!({
            "compare": compare.iter().map(compare_json).collect::<Vec<_>>(),
            "success": success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(op_json).collect::<Vec<_>>(),
        });
        let v = self.call("txn", "/v3/kv/txn", body).await?;
        let succeeded = v["succeeded"].as_bool().unwrap_or(false);
        let mut gets = Vec::new();
        for r in v["responses"].as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(range) = r.get("response_range") {
                gets.push(kvs("txn", range)?);
            }
        }
        Ok(TxnOutcome { succeeded, revision: int(&v["header"]["revision"]), gets })
    }

    /// A new lease of `ttl` seconds: its id, and the TTL etcd granted.
    pub async fn grant(&self, ttl: u64) -> Result<(i64, i64), EtcdError> {
        let v = self.call("lease grant", "/v3/lease/grant", json!({"TTL": ttl.to_string()})).await?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::Malformed { what: "lease grant", why: "no lease id".into() });
        }
        Ok((id, int(&v["TTL"])))
    }

    /// Renews a lease for its full TTL; returns the TTL left. An expired lease is an error.
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self.call("lease keepalive", "/v3/lease/keepalive", json!({"ID": lease.to_string()})).await?;
        // The gateway wraps a stream's one answer in `result`.
        let ttl = int(&v["result"]["TTL"]);
        if ttl <= 0 { Err(EtcdError::LeaseExpired(lease)) } else { Ok(ttl) }
    }

    /// Ends a lease now; every key attached to it is deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("lease revoke", "/v3/lease/revoke", json!({"ID": lease.to_string()})).await.map(drop)
    }
}

/// How one request to one endpoint went wrong.
enum Attempt {
    /// This endpoint cannot serve now: try the next.
    Next(String),
    /// etcd refused the request itself.
    Refused { code: i64, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_just_after_the_prefix() {
        assert_eq!(prefix_end(b"/vmsh/"), b"/vmsh0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), vec![b'b']);
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }

    #[test]
    fn comparisons_and_ops_are_written_as_the_gateway_reads_them() {
        let c = compare_json(&Compare::ModRevision(b"k".to_vec(), 7));
        assert_eq!(c, json!({"key": "aw==", "target": "MOD", "result": "EQUAL", "mod_revision": "7"}));
        let o = op_json(&Op::Put { key: b"k".to_vec(), value: b"v".to_vec(), lease: 12 });
        assert_eq!(o, json!({"request_put": {"key": "aw==", "value": "dg==", "lease": "12"}}));
    }

    #[test]
    fn answers_are_read_with_strings_for_integers_and_zeros_left_out() {
        let v = json!({"kvs": [{"key": "aw==", "value": "dg==", "create_revision": "3", "mod_revision": "5"}]});
        let read = kvs("range", &v).expect("reads");
        assert_eq!(
            read,
            vec![KeyValue { key: b"k".to_vec(), value: b"v".to_vec(), create_revision: 3, mod_revision: 5, lease: 0 }]
        );
        assert!(kvs("range", &json!({"kvs": [{"key": "not base64!"}]})).is_err());
        assert_eq!(kvs("range", &json!({})).expect("none"), Vec::new());
    }

    #[test]
    fn clients_start_on_endpoints_spread_over_the_list() {
        let starts: std::collections::BTreeSet<usize> = (0..64).map(|_| first_endpoint(3)).collect();
        assert!(starts.iter().all(|s| *s < 3), "{starts:?}");
        assert!(starts.len() > 1, "64 clients all started on endpoint {starts:?}");
        assert_eq!(first_endpoint(1), 0);
        assert_eq!(first_endpoint(0), 0);
    }

    #[test]
    fn a_client_needs_http_endpoints_and_never_shows_their_credentials() {
        let options = |endpoints: Vec<&str>| EtcdOptions {
            endpoints: endpoints.into_iter().map(String::from).collect(),
            tls: EtcdTls::default(),
            auth: None,
            request_timeout: Duration::from_secs(1),
        };
        assert!(matches!(Etcd::new(options(vec![])), Err(EtcdError::Config(_))));
        let e = Etcd::new(options(vec!["etcd://u:pw@h:2379"])).expect_err("not http");
        assert!(!e.to_string().contains("pw"), "{e}");
        let c = Etcd::new(options(vec!["http://u:pw@127.0.0.1:2379/"])).expect("http");
        assert!(!format!("{c:?}").contains("pw"));
    }
}
