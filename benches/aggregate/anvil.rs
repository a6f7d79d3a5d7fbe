//! A local EVM chain to anchor to: anvil, as `scripts/install-test-deps.sh` installs it,
//! mining a block every second like a real chain rather than one per transaction.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// anvil's first default account, funded at genesis.
pub(crate) const FUNDED_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The chain id anvil runs with here.
pub(crate) const CHAIN_ID: u64 = 31337;

/// A running anvil; killed when dropped.
pub(crate) struct Anvil {
    child: Child,
    addr: SocketAddr,
}

/// What the blocks of a span of the chain hold.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Blocks {
    /// Transactions in them.
    pub transactions: u64,
    /// Gas they used.
    pub gas: u64,
}

fn anvil_path() -> Result<PathBuf, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "anvil not found at {}: run scripts/install-test-deps.sh (installs @foundry-rs/anvil-linux-amd64 with npm)",
            path.display()
        ))
    }
}

impl Anvil {
    /// Starts anvil with a block every `block_time`.
    pub(crate) fn start(block_time: Duration) -> Result<Self, String> {
        let mut child = Command::new(anvil_path()?)
            .args(["--port", "0", "--chain-id", &CHAIN_ID.to_string(), "--block-time"])
            .arg(block_time.as_secs().max(1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start anvil: {e}"))?;
        let out = child.stdout.take().ok_or("anvil has no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("Listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "anvil did not say where it listens within 30 s".to_string())?
            .parse()
            .map_err(|e| format!("anvil's address: {e}"))?;
        Ok(Anvil { child, addr })
    }

    /// Its JSON-RPC URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let mut s = TcpStream::connect(self.addr).map_err(|e| format!("anvil: {e}"))?;
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .map_err(|e| format!("anvil: {e}"))?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).map_err(|e| format!("anvil: {e}"))?;
        let (_, body) = raw.split_once("\r\n\r\n").ok_or("anvil answered without a body")?;
        let v: Value = serde_json::from_str(body.trim()).map_err(|e| format!("anvil's answer to {method}: {e}"))?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(format!("{method} failed: {e}")),
            _ => Ok(v["result"].clone()),
        }
    }

    /// The latest block's number.
    pub(crate) fn block_number(&self) -> Result<u64, String> {
        hex_u64(&self.rpc("eth_blockNumber", json!([]))?)
    }

    /// Transactions and gas of blocks `from..=to`.
    pub(crate) fn blocks(&self, from: u64, to: u64) -> Result<Blocks, String> {
        let mut sum = Blocks::default();
        for n in from..=to {
            let block = self.rpc("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))?;
            sum.transactions += block["transactions"].as_array().map_or(0, |t| t.len() as u64);
            sum.gas += hex_u64(&block["gasUsed"])?;
        }
        Ok(sum)
    }
}

fn hex_u64(v: &Value) -> Result<u64, String> {
    let text = v.as_str().ok_or_else(|| format!("{v} is not a hex quantity"))?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| format!("{text}: {e}"))
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
