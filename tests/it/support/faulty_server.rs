//! A misbehaving HTTP server: a loopback target that answers every connection with one
//! [`Fault`] (hangs, trickles, resets, errors, garbage, floods), for tests that a scheduler
//! cuts such targets off, classifies their failures and keeps its memory flat.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::http::read_request;

/// One way for a target to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// Reads the request and never answers.
    Hang,
    /// Answers a well-formed response one byte every 100 ms (half a minute in all).
    Slow,
    /// Resets the connection (SO_LINGER 0): at once on even connections, after reading the
    /// request on odd ones.
    Reset,
    /// HTTP 500 with an empty body.
    Error500,
    /// HTTP 401 with an empty body, as bitcoind answers a bad login.
    Error401,
    /// HTTP 200 with a body that is neither DER nor JSON.
    Garbage,
    /// HTTP 200 announcing and streaming a 200 MiB body.
    Huge,
    /// HTTP 200 with a chunked body that never ends.
    Endless,
}

impl Fault {
    /// Every fault.
    pub(crate) const ALL: [Fault; 8] = [
        Fault::Hang,
        Fault::Slow,
        Fault::Reset,
        Fault::Error500,
        Fault::Error401,
        Fault::Garbage,
        Fault::Huge,
        Fault::Endless,
    ];

    /// A short name, for namespaces and targets-file entries.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::Hang => "hang",
            Fault::Slow => "slow",
            Fault::Reset => "reset",
            Fault::Error500 => "e500",
            Fault::Error401 => "e401",
            Fault::Garbage => "garbage",
            Fault::Huge => "huge",
            Fault::Endless => "endless",
        }
    }

    /// Whether only the pool's time limit can end an attempt against it.
    pub(crate) fn holds_until_timeout(self) -> bool {
        matches!(self, Fault::Hang | Fault::Slow)
    }
}

/// A loopback HTTP server that answers every connection with one [`Fault`]. Dropping it
/// stops the accept loop and every connection thread.
pub(crate) struct FaultyServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultyServer {
    /// Starts answering with `fault` on a free loopback port.
    pub(crate) fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let n = accepted2.fetch_add(1, Ordering::SeqCst);
                let stop = Arc::clone(&stop2);
                std::thread::spawn(move || serve(stream, fault, n, &stop));
            }
        });
        Self { addr, stop, accepted, acceptor: Some(acceptor) }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// How many connections it accepted.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Closes `stream` with a TCP reset instead of a FIN.
fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger` value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// A body that no TSA, EVM node or bitcoind would send: not DER, not JSON, not UTF-8.
fn garbage() -> Vec<u8> {
    let mut body = b"\x00\xff\xfe<html>this is neither DER nor {JSON: ]] \x80\x81".to_vec();
    while body.len() < 4096 {
        let more = body.clone();
        body.extend_from_slice(&more);
    }
    body
}

fn serve(mut stream: TcpStream, fault: Fault, n: usize, stop: &AtomicBool) {
    if fault == Fault::Reset && n.is_multiple_of(2) {
        return reset(stream);
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    if read_request(&mut stream, stop).is_none() {
        return;
    }
    let head = |status: &str, extra: &str| format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n");
    match fault {
        Fault::Hang => {
            // Holds the connection until the client gives up (end of file) or the test ends.
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        }
        Fault::Slow => {
            let body = format!(r#"{{"jsonrpc":"2.0","id":0,"result":"0x1","pad":"{}"}}"#, "x".repeat(100));
            let response =
                head("200 OK", &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()))
                    + &body;
            for byte in response.bytes() {
                if stop.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
                    return;
                }
                // The fault itself: a trickle, not a synchronisation.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Fault::Reset => reset(stream),
        Fault::Error500 => {
            let _ = stream.write_all(head("500 Internal Server Error", "Content-Length: 0\r\n").as_bytes());
        }
        Fault::Error401 => {
            let extra = "WWW-Authenticate: Basic realm=\"jsonrpc\"\r\nContent-Length: 0\r\n";
            let _ = stream.write_all(head("401 Unauthorized", extra).as_bytes());
        }
        Fault::Garbage => {
            let body = garbage();
            let extra = format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
            let _ = stream.write_all(head("200 OK", &extra).as_bytes());
            let _ = stream.write_all(&body);
        }
        Fault::Huge => {
            const SIZE: usize = 200 * 1024 * 1024;
            let extra = format!("Content-Type: application/json\r\nContent-Length: {SIZE}\r\n");
            if stream.write_all(head("200 OK", &extra).as_bytes()).is_err() {
                return;
            }
            let block = vec![b'7'; 64 * 1024];
            let mut sent = 0;
            while sent < SIZE && !stop.load(Ordering::SeqCst) && stream.write_all(&block).is_ok() {
                sent += block.len();
            }
        }
        Fault::Endless => {
            let extra = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
            if stream.write_all(head("200 OK", extra).as_bytes()).is_err() {
                return;
            }
            let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b'[', 64 * 1024));
            chunk.extend_from_slice(b"\r\n");
            while !stop.load(Ordering::SeqCst) && stream.write_all(&chunk).is_ok() {}
        }
    }
}
