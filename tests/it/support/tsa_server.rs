//! A real time-stamp authority for the tests: OpenSSL's `openssl ts -reply`, with a CA and a
//! TSA certificate generated in a temporary folder, behind a small HTTP endpoint on loopback
//! that can be told to misbehave.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default policy of the test TSA.
pub(crate) const DEFAULT_POLICY: &str = "1.2.3.4.1";
/// Another policy the test TSA accepts when asked for it.
pub(crate) const OTHER_POLICY: &str = "1.2.3.4.5";

/// How the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Passes the query to `openssl ts -reply` and returns its reply.
    Honest,
    /// Replies with a token made for the query with its imprint changed.
    OtherImprint,
    /// Replies with the last honest reply again (a replay: another nonce).
    Replay,
    /// Answers 200 with a body that is not DER.
    Garbage,
    /// Answers this HTTP status with an empty body.
    Status(u16),
    /// Reads the query and never answers.
    Hang,
}

/// Fails the test with the fix when openssl is missing.
fn require_openssl() {
    let found = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(found, "the openssl command is needed by the rfc3161 tests: run scripts/install-test-deps.sh");
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

const EXTENSIONS: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[tsa]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
";

/// Certificates and keys: a CA (EC P-384), a TSA it issued (RSA 2048, critical
/// extendedKeyUsage timeStamping) and an unrelated CA (EC P-256).
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
}

fn make_pki(dir: &Path, tsa_days: u32) -> Pki {
    std::fs::write(dir.join("ext.cnf"), EXTENSIONS).expect("write ext.cnf");
    let self_signed = |name: &str, curve: &str, cn: &str| {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        let curve = format!("ec_paramgen_curve:{curve}");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                &curve,
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "3650",
                "-subj",
                cn,
                "-config",
                "ext.cnf",
                "-extensions",
                "ca",
            ],
        );
        dir.join(cert)
    };
    let ca = self_signed("ca", "P-384", "/CN=Test Root CA");
    let other_ca = self_signed("other-ca", "P-256", "/CN=Unrelated CA");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tsa.key",
            "-out",
            "tsa.csr",
            "-subj",
            "/O=VaultMesh Test/CN=Test TSA",
            "-config",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tsa.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            &tsa_days.to_string(),
            "-sha384",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "tsa",
            "-out",
            "tsa.pem",
        ],
    );
    let config = format!(
        "[tsa]
default_tsa = test
[test]
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
certs = {dir}/tsa.pem
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = {DEFAULT_POLICY}
other_policies = {OTHER_POLICY}
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_alg = sha256
",
        dir = dir.display()
    );
    std::fs::write(dir.join("tsa.cnf"), config).expect("write tsa.cnf");
    std::fs::write(dir.join("serial"), "01\n").expect("write serial");
    Pki { ca, other_ca }
}

/// What the endpoint saw of one query.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The Content-Type header.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

struct Shared {
    dir: PathBuf,
    mode: Mutex<Mode>,
    /// Held while `openssl ts -reply` runs: it rewrites its serial file on every reply.
    openssl: Mutex<()>,
    last_honest: Mutex<Option<Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// A running test TSA; stops when dropped.
pub(crate) struct TestTsa {
    _dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// PEM bundle holding the CA that issued the TSA's certificate.
    pub ca: PathBuf,
    /// PEM bundle holding only an unrelated CA.
    pub other_ca: PathBuf,
    shared: Arc<Shared>,
}

impl TestTsa {
    /// Generates the certificates and starts the endpoint on a free loopback port.
    pub(crate) fn start() -> Self {
        Self::start_expiring_in(3650)
    }

    /// The same, with a TSA certificate that expires in `days` days.
    pub(crate) fn start_expiring_in(days: u32) -> Self {
        require_openssl();
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = make_pki(dir.path(), days);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            dir: dir.path().to_path_buf(),
            mode: Mutex::new(Mode::Honest),
            openssl: Mutex::new(()),
            last_honest: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(&s, stream));
            }
        });
        TestTsa { _dir: dir, addr, ca: pki.ca, other_ca: pki.other_ca, shared }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// How the scheduler names it: `http://127.0.0.1:<port>`.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how it answers from now on.
    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    /// Every query received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// How OpenSSL reads a query (`openssl ts -query -text`).
    pub(crate) fn describe_query(&self, query: &[u8]) -> String {
        let _one_at_a_time = self.shared.openssl.lock().expect("openssl lock");
        std::fs::write(self.shared.dir.join("shown.tsq"), query).expect("write query");
        String::from_utf8_lossy(&openssl(&self.shared.dir, &["ts", "-query", "-in", "shown.tsq", "-text"])).to_string()
    }
}

impl Drop for TestTsa {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// The URL of a loopback port nothing listens on: a TSA that is down.
pub(crate) fn closed_port_url() -> String {
    // A port that was free a moment ago and has no listener now.
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    format!("http://{addr}/")
}

/// Reads one HTTP request: its Content-Type and its body.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let content_type = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
    Some((content_type, body))
}

fn respond(stream: &mut TcpStream, code: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// `openssl ts -reply` for a query; serialised, as it rewrites its serial file.
fn reply(s: &Shared, query: &[u8]) -> Vec<u8> {
    let _one_at_a_time = s.openssl.lock().expect("openssl lock");
    std::fs::write(s.dir.join("query.tsq"), query).expect("write query");
    let _ = std::fs::remove_file(s.dir.join("reply.tsr"));
    openssl(&s.dir, &["ts", "-reply", "-config", "tsa.cnf", "-queryfile", "query.tsq", "-out", "reply.tsr"]);
    std::fs::read(s.dir.join("reply.tsr")).expect("read reply")
}

fn serve(s: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((content_type, body)) = read_request(&mut stream) else { return };
    s.seen.lock().expect("seen lock").push(Seen { content_type, body: body.clone() });
    let mode = s.mode.lock().expect("mode lock").clone();
    match mode {
        Mode::Honest => {
            let r = reply(s, &body);
            *s.last_honest.lock().expect("last lock") = Some(r.clone());
            respond(&mut stream, 200, &r);
        }
        Mode::OtherImprint => {
            // The SHA-256 imprint is the query's only 32-byte OCTET STRING (04 20 …).
            let mut other = body.clone();
            let at = other.windows(2).position(|w| w == [0x04, 0x20]).expect("an imprint in the query") + 2;
            other[at] ^= 0xff;
            let r = reply(s, &other);
            respond(&mut stream, 200, &r);
        }
        Mode::Replay => {
            let r = s.last_honest.lock().expect("last lock").clone().expect("an earlier honest reply to replay");
            respond(&mut stream, 200, &r);
        }
        Mode::Garbage => respond(&mut stream, 200, b"<html><body>this is not a time-stamp reply</body></html>"),
        Mode::Status(code) => respond(&mut stream, code, b""),
        Mode::Hang => {
            // Hold the connection open without answering until the client gives up.
            let mut sink = [0u8; 64];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = stream.read(&mut sink);
        }
    }
}
