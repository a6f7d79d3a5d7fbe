//! A JSON-RPC proxy that lies: in front of a real node (anvil, the fake bitcoind), it passes
//! every call on and, while told to, answers some with what a test's [`Lie`] says, for tests
//! that a scheduler writes no receipt from a lie. While holding, it keeps sends
//! (`eth_sendRawTransaction`) from the node and never answers them: what a crash between a
//! record and its send looks like from the node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::read_request;

/// One JSON-RPC call as a [`LyingProxy`] sees it, with what the real node answered.
pub(crate) struct Call<'a> {
    /// The method called.
    pub method: &'a str,
    /// Its parameters.
    pub params: &'a Value,
    /// The real node's `result` (null when it answered an error).
    pub result: &'a Value,
    /// Asks the real node something else, with the client's credentials.
    pub upstream: &'a dyn Fn(&str, Value) -> Value,
}

/// A lie: the `result` to answer instead of the real one, or `None` to pass it on.
pub(crate) type Lie = Box<dyn Fn(&Call) -> Option<Value> + Send + Sync>;

/// A JSON-RPC proxy in front of a real node (anvil, the fake bitcoind) that passes every call
/// on and, while lying, replaces some answers with what its [`Lie`] says. It counts the lies
/// told, so a test can wait until the scheduler has heard one several times.
pub(crate) struct LyingProxy {
    addr: SocketAddr,
    lying: Arc<AtomicBool>,
    told: Arc<AtomicUsize>,
    holding: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the proxy's connections share.
struct Shared {
    lie: Lie,
    lying: Arc<AtomicBool>,
    told: Arc<AtomicUsize>,
    holding: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl LyingProxy {
    /// Starts a proxy to `upstream` on a free loopback port, telling the truth until told to lie.
    pub(crate) fn start(upstream: SocketAddr, lie: Lie) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            lie,
            lying: Arc::new(AtomicBool::new(false)),
            told: Arc::new(AtomicUsize::new(0)),
            holding: Arc::new(AtomicBool::new(false)),
            held: Arc::default(),
            stop: Arc::default(),
        });
        let (lying, told, holding, held, stop) = (
            Arc::clone(&shared.lying),
            Arc::clone(&shared.told),
            Arc::clone(&shared.holding),
            Arc::clone(&shared.held),
            Arc::clone(&shared.stop),
        );
        let thread = std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || proxy_one(stream, upstream, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, lying, told, holding, held, stop, thread: Some(thread) }
    }

    /// Starts or stops holding sends back from the node.
    pub(crate) fn hold(&self, on: bool) {
        self.holding.store(on, Ordering::SeqCst);
    }

    /// The parameters of every send held back so far.
    pub(crate) fn held(&self) -> Vec<Value> {
        self.held.lock().expect("held sends").clone()
    }

    /// The proxy's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Starts or stops lying.
    pub(crate) fn lie(&self, on: bool) {
        self.lying.store(on, Ordering::SeqCst);
    }

    /// How many lies it told.
    pub(crate) fn told(&self) -> usize {
        self.told.load(Ordering::SeqCst)
    }
}

impl Drop for LyingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends one HTTP POST to `to` and returns the status and body (read by Content-Length).
fn post(to: SocketAddr, path: &str, auth: Option<&str>, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {to}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (end, length) = loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())?;
            break (end + 4, length);
        }
    };
    while raw.len() < end + length {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let status = String::from_utf8_lossy(&raw[..end]).split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[end..end + length].to_vec()))
}

fn proxy_one(mut stream: TcpStream, upstream: SocketAddr, shared: &Shared) {
    let (lie, lying, told) = (&shared.lie, &*shared.lying, &*shared.told);
    let _ = stream.set_nonblocking(false);
    let never = AtomicBool::new(false);
    let Some(request) = read_request(&mut stream, &never) else { return };
    let head = request.head();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let auth = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_string())
    });
    let body = request.body();
    if shared.holding.load(Ordering::SeqCst) {
        let call: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if call["method"] == "eth_sendRawTransaction" {
            shared.held.lock().expect("held sends").push(call["params"].clone());
            // Never forwarded, never answered: the connection stays open until the client
            // gives up or goes away, or the proxy stops.
            while shared.holding.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    }
    let Some((status, answer)) = post(upstream, &path, auth.as_deref(), body) else { return };
    let mut answer_json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    let call: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if lying.load(Ordering::SeqCst) && call.get("method").is_some() {
        let ask = |method: &str, params: Value| -> Value {
            let body = json!({"jsonrpc": call["jsonrpc"], "id": 1, "method": method, "params": params}).to_string();
            post(upstream, &path, auth.as_deref(), body.as_bytes())
                .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok())
                .map_or(Value::Null, |v| v["result"].clone())
        };
        let seen = Call {
            method: call["method"].as_str().unwrap_or_default(),
            params: &call["params"],
            result: &answer_json["result"],
            upstream: &ask,
        };
        if let Some(result) = lie(&seen) {
            answer_json["result"] = result;
            told.fetch_add(1, Ordering::SeqCst);
        }
    }
    let body = if answer_json.is_null() { answer } else { answer_json.to_string().into_bytes() };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}
