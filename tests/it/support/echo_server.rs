//! A target that echoes: a loopback server that answers every request with the request
//! itself, or hands each connection to a test's own answer, for tests that what a target
//! says back never carries a secret into the scheduler's logs, health or files.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::read_request;

/// A TCP server that answers every HTTP request with the request itself: JSON-RPC calls get
/// a JSON-RPC error whose message is the whole request (request line, headers with the
/// `Authorization` header, body) on one line; anything else (a time-stamp query) gets the
/// request as a 200 body. A hostile or misconfigured endpoint could do this; what it echoes
/// must not end up in the scheduler's logs or `/health`.
pub(crate) struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts echoing on a free loopback port.
    pub(crate) fn start() -> Self {
        Self::answering(echo_one)
    }

    /// A server on a free loopback port that hands each connection to `answer` on a thread,
    /// blocking, with reads that wait up to 5 s.
    pub(crate) fn answering(answer: fn(TcpStream)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        std::thread::spawn(move || answer(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_one(mut stream: TcpStream) {
    let Some(request) = read_request(&mut stream, &AtomicBool::new(false)) else { return };
    let echo = String::from_utf8_lossy(&request.raw).replace("\r\n", " | ").replace('\n', " | ");
    let (status, body) = match serde_json::from_slice::<Value>(request.body()) {
        Ok(call) if call.get("method").is_some() => (
            "500 Internal Server Error",
            json!({"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": format!("echo: {echo}")}})
                .to_string(),
        ),
        _ => ("200 OK", echo),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
