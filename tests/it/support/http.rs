//! Minimal HTTP/1.1 over loopback: a client for requests to a scheduler under test, and the
//! request reader of the servers that stand in for its targets.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A minimal HTTP/1.1 request; enough for loopback tests.
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (code, _, body) = http_with_head(addr, method, path);
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Like [`http`], but also returns the response head (status line and headers) as text.
pub(crate) fn http_with_head(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (code, head.to_string(), if chunked { dechunk(body) } else { body.to_string() })
}

/// One request as a test server read it off a connection.
pub(crate) struct Request {
    /// Every byte of it: head, blank line and body.
    pub raw: Vec<u8>,
    /// Where its body starts in `raw`.
    pub body_start: usize,
}

impl Request {
    /// The request line and headers, as text.
    pub(crate) fn head(&self) -> String {
        String::from_utf8_lossy(&self.raw[..self.body_start]).to_string()
    }

    /// The body.
    pub(crate) fn body(&self) -> &[u8] {
        &self.raw[self.body_start..]
    }
}

/// Reads one request (head and `Content-Length` body) within 10 s, each read waiting as long
/// as the stream's read timeout; `None` if the peer went away, it never came whole, or the
/// server is stopping (`stop`).
pub(crate) fn read_request(stream: &mut TcpStream, stop: &AtomicBool) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return Some(Request { raw: data, body_start: end + 4 });
            }
        }
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}

/// A one-request HTTP server on a free loopback port answering `code` with the JSON `body`:
/// another service where a scheduler was expected.
pub(crate) fn answer_once(code: &str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
    });
    addr
}

/// An answer to [`request`]: status, head and JSON body (`Null` when not JSON).
pub(crate) struct Answer {
    pub code: u16,
    pub head: String,
    pub body: serde_json::Value,
}

/// Sends one request with an optional bearer token and JSON body, and reads the whole answer.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw_request(addr, head.as_bytes())
}

/// Sends raw bytes and reads the whole answer.
pub(crate) fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null);
    Answer { code, head: head.to_string(), body }
}
