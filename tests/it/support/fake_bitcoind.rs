//! A fake bitcoind for the `btc:` tests.
//!
//! No bitcoind can be installed on the machines these tests run on, so the tests run the
//! driver and the scheduler against this JSON-RPC server, written for them, which behaves
//! as bitcoind does for the calls the driver makes:
//!
//! - **HTTP**: it listens on 127.0.0.1 (port 0), answers only `POST` (405 otherwise) on `/`
//!   and `/wallet/<name>` (404 otherwise), keeps connections alive, and checks HTTP basic
//!   auth against a user/password or a cookie file it writes (`__cookie__:<hex>`, as
//!   bitcoind does): a missing or wrong login gets 401 with `WWW-Authenticate: Basic
//!   realm="jsonrpc"` and an empty body (a wrong one after bitcoind's 250 ms delay).
//! - **JSON-RPC 1.0**: `{"result", "error", "id"}` replies; errors as bitcoind sends them,
//!   HTTP 500 with `{"result": null, "error": {"code", "message"}, "id"}`, 400 for an
//!   invalid request (-32600), 404 for an unknown method (-32601); -32700 for a body that is
//!   not JSON; batches (arrays) answered with HTTP 200. Parameters are checked by count
//!   (bitcoind answers a wrong count with -1 and the method's help), by JSON type (-3), and
//!   hex and txids by content (-8, -22), positional or named.
//! - **Node**: a chain (starting at height 101, like a regtest node whose first coins have
//!   matured), a UTXO set, a mempool and a wallet holding `coins` confirmed outputs of
//!   1 BTC. Transactions use Bitcoin's legacy serialization and real txids (double SHA-256,
//!   byte-reversed); signatures are placeholders the fake itself recognises.
//!   `createrawtransaction`, `fundrawtransaction` (coin selection, change output first,
//!   `fee_rate` in sat/vB or a 2 sat/vB fallback, -4 "Insufficient funds"),
//!   `signrawtransactionwithwallet`, `decoderawtransaction`, `sendrawtransaction` (checks
//!   inputs exist and are unspent (-25), signatures, dust, one OP_RETURN of at most 83 bytes,
//!   mempool conflicts and the minimum relay fee (-26), a repeat of a mempool transaction
//!   returns its txid, one already mined gets -27), `gettransaction`, `getrawtransaction`
//!   (mempool, a given block, or any block with `txindex`), `getmempoolentry`,
//!   `getblockheader`, `getblockchaininfo`, `abandontransaction`, `getbalance`,
//!   `getnewaddress` and `generatetoaddress` (mines the mempool into the first block) answer
//!   in bitcoind's shapes.
//! - **Replace-by-fee**: the mempool replaces a transaction under BIP 125 (the replaced ones
//!   signal, no new unconfirmed input, a higher absolute fee plus the incremental relay fee
//!   over the replacement's size; -26 "insufficient fee, rejecting replacement …" in
//!   bitcoind's words otherwise). `psbtbumpfee` and `bumpfee` make a replacement as the
//!   wallet's feebumper does, with its checks and error codes; `walletprocesspsbt` signs and
//!   finalizes a PSBT (BIP 174 v0, base64), `finalizepsbt` extracts it. `gettransaction`
//!   reports `walletconflicts` (the wallet's other spends of the same coins),
//!   `replaced_by_txid` / `replaces_txid` (set by `bumpfee` only, as in bitcoind) and
//!   `bip125-replaceable`; a transaction is conflicted once a block holds another spend of
//!   one of its coins. `estimatesmartfee` answers what the test set, or no estimate;
//!   `getnetworkinfo` gives the relay and incremental fees (1 sat/vB).
//! - **Faults on request**: warming up (-28 for every call), rejecting every send (-26),
//!   going down (the port refuses connections) and coming back, evicting a transaction from
//!   the mempool, reorganising blocks out (their transactions return to the mempool),
//!   mining a double spend of a transaction (which the wallet then reports conflicted),
//!   mining a transaction this node's mempool no longer holds (a replaced original, as a
//!   miner that never saw the replacement would), a "stuck" mode in which blocks leave
//!   transactions under a fee rate in the mempool, and holding calls of one method
//!   unanswered (to stop or kill a client in the middle of one).
//!
//! It keeps a log of the methods called and of every transaction it accepted, so tests can
//! count sends and check that no root was anchored twice.

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::wait_for;

/// Satoshis in one bitcoin.
const COIN: u64 = 100_000_000;
/// Outputs below this (other than OP_RETURN) are dust.
const DUST: u64 = 546;
/// Minimum relay fee, sat/vB.
const MIN_RELAY: u64 = 1;
/// `-incrementalrelayfee` (sat/kvB): what a replacement's extra fee must pay for its own size
/// (BIP 125 rule 4), and `getnetworkinfo`'s `incrementalfee`.
const INCREMENTAL_RELAY: u64 = 1_000;
/// The wallet's `WALLET_INCREMENTAL_RELAY_FEE` (sat/kvB): `bumpfee` raises the fee rate by at
/// least this much, whatever the node's incremental relay fee.
const WALLET_INCREMENTAL_RELAY: u64 = 5_000;
/// `-maxtxfee` (sat): the most a wallet transaction may pay.
const MAX_TX_FEE: u64 = COIN / 10;
/// Sequence numbers below this signal BIP 125 replaceability.
const MAX_BIP125_SEQUENCE: u32 = 0xffff_fffd;
/// Fee rate used when `fundrawtransaction` is given none (as with `-fallbackfee=0.00002`).
const FALLBACK_FEE: f64 = 2.0;
/// Largest standard OP_RETURN script.
const MAX_OP_RETURN: usize = 83;
/// Height of the tip when the fake starts.
const START_HEIGHT: u64 = 101;
/// The error message bitcoind gives while starting.
pub(crate) const WARMING_UP: &str = "Loading block index…";

/// How the fake checks logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Login {
    /// `-rpcuser` / `-rpcpassword`.
    UserPassword(String, String),
    /// Cookie authentication: the fake writes `__cookie__:<random>` to this file.
    Cookie(PathBuf),
}

/// How the fake starts.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `chain` as `getblockchaininfo` reports it.
    pub chain: String,
    /// Accepted login.
    pub login: Login,
    /// The loaded wallet's name.
    pub wallet: String,
    /// Pretend another wallet is loaded too, so wallet calls must name theirs in the URL.
    pub multiwallet: bool,
    /// Confirmed 1 BTC coins in the wallet (0: an unfunded wallet).
    pub coins: usize,
    /// `-txindex`: `getrawtransaction` finds mined transactions without a block hash.
    pub txindex: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chain: "regtest".into(),
            login: Login::UserPassword("u".into(), "p".into()),
            wallet: "vmsh".into(),
            multiwallet: false,
            coins: 20,
            txindex: false,
        }
    }
}

/// A JSON-RPC error: code and message.
pub(crate) type RpcError = (i64, String);

fn err<T>(code: i64, message: impl Into<String>) -> Result<T, RpcError> {
    Err((code, message.into()))
}

// ---------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OutPoint {
    /// Txid in display (RPC) byte order.
    txid: [u8; 32],
    vout: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TxIn {
    prev: OutPoint,
    script_sig: Vec<u8>,
    sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TxOut {
    value: u64,
    script: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tx {
    version: i32,
    vin: Vec<TxIn>,
    vout: Vec<TxOut>,
    locktime: u32,
}

fn sha256d(bytes: &[u8]) -> [u8; 32] {
    let once = Sha256::digest(bytes);
    Sha256::digest(once).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn write_varint(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn varint(&mut self) -> Option<usize> {
        match self.take(1)?[0] {
            0xfd => self.take(2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))),
            0xfe => self.u32().map(|n| n as usize),
            0xff => None,
            n => Some(usize::from(n)),
        }
    }
    fn script(&mut self) -> Option<Vec<u8>> {
        let n = self.varint()?;
        if n > 10_000 {
            return None;
        }
        self.take(n).map(<[u8]>::to_vec)
    }
}

impl Tx {
    fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.version.to_le_bytes());
        write_varint(&mut out, self.vin.len());
        for i in &self.vin {
            let mut txid = i.prev.txid;
            txid.reverse();
            out.extend_from_slice(&txid);
            out.extend_from_slice(&i.prev.vout.to_le_bytes());
            write_varint(&mut out, i.script_sig.len());
            out.extend_from_slice(&i.script_sig);
            out.extend_from_slice(&i.sequence.to_le_bytes());
        }
        write_varint(&mut out, self.vout.len());
        for o in &self.vout {
            out.extend_from_slice(&o.value.to_le_bytes());
            write_varint(&mut out, o.script.len());
            out.extend_from_slice(&o.script);
        }
        out.extend_from_slice(&self.locktime.to_le_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Option<Tx> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u32()? as i32;
        let n_in = r.varint()?;
        let mut vin = Vec::new();
        for _ in 0..n_in {
            let mut txid: [u8; 32] = r.take(32)?.try_into().ok()?;
            txid.reverse();
            let vout = r.u32()?;
            let script_sig = r.script()?;
            let sequence = r.u32()?;
            vin.push(TxIn { prev: OutPoint { txid, vout }, script_sig, sequence });
        }
        let n_out = r.varint()?;
        let mut vout = Vec::new();
        for _ in 0..n_out {
            let value = r.u64()?;
            let script = r.script()?;
            vout.push(TxOut { value, script });
        }
        let locktime = r.u32()?;
        (r.at == bytes.len()).then_some(Tx { version, vin, vout, locktime })
    }

    fn txid_bytes(&self) -> [u8; 32] {
        let mut id = sha256d(&self.serialize());
        id.reverse();
        id
    }

    fn txid(&self) -> String {
        hex(&self.txid_bytes())
    }

    fn hex(&self) -> String {
        hex(&self.serialize())
    }

    fn vsize(&self) -> u64 {
        self.serialize().len() as u64
    }

    fn is_coinbase(&self) -> bool {
        self.vin.len() == 1 && self.vin[0].prev.txid == [0; 32] && self.vin[0].prev.vout == u32::MAX
    }
}

fn op_return_script(data: &[u8]) -> Vec<u8> {
    let mut s = vec![0x6a];
    match data.len() {
        0 => {}
        n @ 1..=75 => s.push(n as u8),
        n @ 76..=255 => s.extend_from_slice(&[0x4c, n as u8]),
        n => {
            s.push(0x4d);
            s.extend_from_slice(&(n as u16).to_le_bytes());
        }
    }
    s.extend_from_slice(data);
    s
}

/// The data pushed after OP_RETURN, if the script is one.
fn op_return_payload(script: &[u8]) -> Option<Vec<u8>> {
    let (&op, rest) = script.split_first()?;
    if op != 0x6a {
        return None;
    }
    let Some((&push, rest)) = rest.split_first() else { return Some(Vec::new()) };
    let (len, data) = match push {
        1..=75 => (usize::from(push), rest),
        0x4c => (usize::from(*rest.first()?), &rest[1..]),
        0x4d if rest.len() >= 2 => (usize::from(u16::from_le_bytes([rest[0], rest[1]])), &rest[2..]),
        _ => return None,
    };
    (data.len() == len).then(|| data.to_vec())
}

/// The placeholder signature the fake's wallet puts on (and the fake node expects for) a
/// wallet coin: 106 bytes, like a real P2PKH scriptSig.
fn fake_signature(prev: &OutPoint) -> Vec<u8> {
    let mut seed = prev.txid.to_vec();
    seed.extend_from_slice(&prev.vout.to_le_bytes());
    seed.extend_from_slice(b"fake-bitcoind signature");
    let a = sha256d(&seed);
    let b = sha256d(&a);
    let c = sha256d(&b);
    let mut sig = vec![0x47, 0x30, 0x44];
    sig.extend_from_slice(&a);
    sig.extend_from_slice(&b);
    sig.extend_from_slice(&c[..4]);
    sig.push(0x01);
    sig.push(0x21);
    sig.push(0x02);
    sig.extend_from_slice(&c);
    debug_assert_eq!(sig.len(), 106);
    sig
}

fn script_type(script: &[u8]) -> &'static str {
    if script.first() == Some(&0x6a) {
        "nulldata"
    } else if script.len() == 22 && script[0] == 0x00 && script[1] == 0x14 {
        "witness_v0_keyhash"
    } else {
        "nonstandard"
    }
}

fn btc(sats: u64) -> f64 {
    sats as f64 / COIN as f64
}

/// bitcoind's `FormatMoney`: BTC with eight decimals, trailing zeros cut down to two.
fn format_money(sats: u64) -> String {
    let text = format!("{}.{:08}", sats / COIN, sats % COIN);
    let keep = text.trim_end_matches('0').len().max(text.len() - 6);
    text[..keep].to_string()
}

/// Whether a transaction signals BIP 125 replaceability: an input's sequence below
/// 0xfffffffe.
fn signals_rbf(tx: &Tx) -> bool {
    tx.vin.iter().any(|i| i.sequence <= MAX_BIP125_SEQUENCE)
}

// ---------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Block {
    hash: String,
    height: u64,
    time: u64,
    prev: String,
    txids: Vec<String>,
    /// Outputs the block spent, to restore them when it is disconnected.
    undo: Vec<(OutPoint, TxOut)>,
}

#[derive(Debug, Clone)]
struct MempoolEntry {
    time: u64,
    height: u64,
    fee: u64,
}

#[derive(Debug, Clone)]
struct WalletTx {
    time: u64,
    abandoned: bool,
    /// `mapValue["replaced_by_txid"]`: set only when `bumpfee` replaced it (a replacement
    /// sent with `sendrawtransaction` leaves no such mark, as in bitcoind).
    replaced_by: Option<String>,
    /// `mapValue["replaces_txid"]`: the transaction `bumpfee` made this one replace.
    replaces: Option<String>,
}

impl WalletTx {
    fn new() -> Self {
        Self { time: now_secs(), abandoned: false, replaced_by: None, replaces: None }
    }
}

/// One transaction the node accepted, for the tests' bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Its txid.
    pub txid: String,
    /// Its OP_RETURN data, hex, if it has one.
    pub data: Option<String>,
}

struct Node {
    options: Options,
    /// Cookie accepted now (cookie login).
    cookie: Option<String>,
    chain: Vec<Block>,
    stale: Vec<Block>,
    utxos: HashMap<OutPoint, TxOut>,
    txs: HashMap<String, Tx>,
    mempool: Vec<String>,
    entries: HashMap<String, MempoolEntry>,
    mempool_spends: HashMap<OutPoint, String>,
    wallet: HashMap<String, WalletTx>,
    /// Scripts the wallet owns: where its first coins were paid, and every change output.
    wallet_scripts: BTreeSet<Vec<u8>>,
    /// Change scripts handed out so far (each fund call takes a fresh one, as bitcoind does).
    next_change: u64,
    next_address: u64,
    warmup: Option<String>,
    reject: Option<String>,
    /// "Stuck" mode: blocks leave transactions paying less than this (sat/kvB) in the mempool,
    /// as miners do when busier senders outbid them.
    mining_floor: Option<u64>,
    /// What `estimatesmartfee` answers (sat/kvB); `None`: no estimate, as on a fresh regtest.
    estimate: Option<u64>,
    calls: Vec<String>,
    accepted: Vec<Accepted>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn address_script(address: &str) -> Vec<u8> {
    let mut s = vec![0x00, 0x14];
    s.extend_from_slice(&sha256d(address.as_bytes())[..20]);
    s
}

impl Node {
    fn new(options: Options) -> Self {
        let wallet_script = address_script(&format!("wallet:{}", options.wallet));
        let wallet_scripts = BTreeSet::from([wallet_script.clone()]);
        let mut node = Node {
            cookie: None,
            chain: Vec::new(),
            stale: Vec::new(),
            utxos: HashMap::new(),
            txs: HashMap::new(),
            mempool: Vec::new(),
            entries: HashMap::new(),
            mempool_spends: HashMap::new(),
            wallet: HashMap::new(),
            wallet_scripts,
            next_change: 0,
            next_address: 0,
            warmup: None,
            reject: None,
            mining_floor: None,
            estimate: None,
            calls: Vec::new(),
            accepted: Vec::new(),
            options,
        };
        // Genesis, then a block paying the wallet its coins, then blocks up to START_HEIGHT.
        node.connect(Vec::new(), "genesis");
        let funding = Tx {
            version: 2,
            vin: vec![TxIn { prev: OutPoint { txid: [0xfa; 32], vout: 0 }, script_sig: vec![0x51], sequence: 0 }],
            vout: (0..node.options.coins).map(|_| TxOut { value: COIN, script: wallet_script.clone() }).collect(),
            locktime: 0,
        };
        let funding_id = funding.txid();
        node.wallet.insert(funding_id.clone(), WalletTx::new());
        node.connect(vec![funding], "funding");
        while node.tip_height() < START_HEIGHT {
            node.connect(Vec::new(), "filler");
        }
        node
    }

    fn tip_height(&self) -> u64 {
        self.chain.last().map_or(0, |b| b.height)
    }

    fn tip_hash(&self) -> String {
        self.chain.last().map(|b| b.hash.clone()).unwrap_or_default()
    }

    fn hrp(&self) -> &'static str {
        match self.options.chain.as_str() {
            "main" => "bc1",
            "regtest" => "bcrt1",
            _ => "tb1",
        }
    }

    fn height_of(&self, txid: &str) -> Option<u64> {
        self.chain.iter().rev().find(|b| b.txids.iter().any(|t| t == txid)).map(|b| b.height)
    }

    fn confirmations_of_height(&self, height: u64) -> i64 {
        (self.tip_height() - height + 1) as i64
    }

    /// Appends a block holding a coinbase and `txs` (already checked), spending their inputs.
    fn connect(&mut self, txs: Vec<Tx>, tag: &str) -> String {
        let height = self.chain.last().map_or(0, |b| b.height + 1);
        let prev = self.tip_hash();
        let time = self.chain.last().map_or(now_secs(), |b| (b.time + 1).max(now_secs()));
        let coinbase = Tx {
            version: 2,
            vin: vec![TxIn {
                prev: OutPoint { txid: [0; 32], vout: u32::MAX },
                script_sig: [height.to_le_bytes().as_slice(), tag.as_bytes()].concat(),
                sequence: u32::MAX,
            }],
            vout: vec![TxOut { value: 50 * COIN, script: address_script("miner") }],
            locktime: 0,
        };
        let mut undo = Vec::new();
        let mut txids = Vec::new();
        for tx in std::iter::once(coinbase).chain(txs) {
            let txid = tx.txid();
            if !tx.is_coinbase() {
                // The wallet learns of every transaction spending its coins or paying it,
                // whoever sent it (a double spend of its coins too).
                self.note_in_wallet(&tx);
                for i in &tx.vin {
                    if let Some(out) = self.utxos.remove(&i.prev) {
                        undo.push((i.prev, out));
                    }
                }
            }
            for (n, o) in tx.vout.iter().enumerate() {
                if o.script.first() != Some(&0x6a) {
                    self.utxos.insert(OutPoint { txid: tx.txid_bytes(), vout: n as u32 }, o.clone());
                }
            }
            self.txs.insert(txid.clone(), tx);
            txids.push(txid);
        }
        let mut header = prev.as_bytes().to_vec();
        header.extend_from_slice(&height.to_le_bytes());
        header.extend_from_slice(&time.to_le_bytes());
        header.extend_from_slice(txids.concat().as_bytes());
        header.extend_from_slice(&(self.stale.len() as u64).to_le_bytes());
        let hash = hex(&sha256d(&header));
        self.chain.push(Block { hash: hash.clone(), height, time, prev, txids, undo });
        hash
    }

    /// Mines `n` blocks; the first takes the mempool unless `empty` — all of it, or in
    /// "stuck" mode what pays at least the floor (and whose mempool parents it takes).
    fn mine(&mut self, n: u64, empty: bool) -> Vec<String> {
        let mut hashes = Vec::new();
        for i in 0..n {
            let txs: Vec<Tx> = if empty || i > 0 { Vec::new() } else { self.take_for_block() };
            hashes.push(self.connect(txs, "mined"));
        }
        hashes
    }

    /// Takes out of the mempool what the next block mines, in mempool order.
    fn take_for_block(&mut self) -> Vec<Tx> {
        let mut taken: Vec<String> = Vec::new();
        for id in self.mempool.clone() {
            let (Some(tx), Some(entry)) = (self.txs.get(&id), self.entries.get(&id)) else { continue };
            let pays = self.mining_floor.is_none_or(|floor| entry.fee * 1000 >= floor * tx.vsize());
            let parents_taken =
                tx.vin.iter().map(|i| hex(&i.prev.txid)).all(|p| !self.entries.contains_key(&p) || taken.contains(&p));
            if pays && parents_taken {
                taken.push(id);
            }
        }
        let txs = taken.iter().filter_map(|id| self.txs.get(id).cloned()).collect();
        for id in &taken {
            self.remove_from_mempool(id);
        }
        txs
    }

    /// Disconnects the tip block: its transactions go back to the mempool.
    fn disconnect(&mut self) {
        let Some(block) = self.chain.pop() else { return };
        for txid in block.txids.iter().rev() {
            let Some(tx) = self.txs.get(txid).cloned() else { continue };
            for n in 0..tx.vout.len() {
                self.utxos.remove(&OutPoint { txid: tx.txid_bytes(), vout: n as u32 });
            }
        }
        for (prev, out) in &block.undo {
            self.utxos.insert(*prev, out.clone());
        }
        let returning: Vec<String> =
            block.txids.iter().filter(|id| self.txs.get(*id).is_some_and(|t| !t.is_coinbase())).cloned().collect();
        for id in returning.iter().rev() {
            let Some(tx) = self.txs.get(id).cloned() else { continue };
            for i in &tx.vin {
                self.mempool_spends.insert(i.prev, id.clone());
            }
            let fee = self.fee_of(&tx).unwrap_or(0);
            self.entries.insert(id.clone(), MempoolEntry { time: now_secs(), height: self.tip_height(), fee });
            self.mempool.insert(0, id.clone());
        }
        self.stale.push(block);
    }

    fn value_of(&self, prev: &OutPoint) -> Option<u64> {
        if let Some(o) = self.utxos.get(prev) {
            return Some(o.value);
        }
        let tx = self.txs.get(&hex(&prev.txid))?;
        tx.vout.get(prev.vout as usize).map(|o| o.value)
    }

    fn fee_of(&self, tx: &Tx) -> Option<u64> {
        let inputs: Option<u64> = tx.vin.iter().map(|i| self.value_of(&i.prev)).sum();
        inputs?.checked_sub(tx.vout.iter().map(|o| o.value).sum())
    }

    fn is_mine(&self, script: &[u8]) -> bool {
        self.wallet_scripts.contains(script)
    }

    fn is_wallet_coin(&self, prev: &OutPoint) -> bool {
        let Some(tx) = self.txs.get(&hex(&prev.txid)) else { return false };
        tx.vout.get(prev.vout as usize).is_some_and(|o| self.is_mine(&o.script))
    }

    /// Outpoints the wallet considers spent: by any of its transactions that is not
    /// abandoned or conflicted (a replaced one still counts, as in bitcoind).
    fn wallet_spent(&self) -> BTreeSet<OutPoint> {
        self.wallet
            .iter()
            .filter(|(id, w)| !w.abandoned && self.wallet_confirmations(id) >= 0)
            .filter_map(|(id, _)| self.txs.get(id))
            .flat_map(|tx| tx.vin.iter().map(|i| i.prev))
            .collect()
    }

    /// The height of the active block holding a transaction, other than `txid`, that spends
    /// one of `txid`'s coins: what makes the wallet call `txid` conflicted.
    fn conflict_height(&self, txid: &str) -> Option<u64> {
        let coins: BTreeSet<OutPoint> = self.txs.get(txid)?.vin.iter().map(|i| i.prev).collect();
        self.chain.iter().find_map(|b| {
            let spends = b
                .txids
                .iter()
                .filter(|t| *t != txid)
                .filter_map(|t| self.txs.get(t))
                .any(|tx| !tx.is_coinbase() && tx.vin.iter().any(|i| coins.contains(&i.prev)));
            spends.then_some(b.height)
        })
    }

    /// `walletconflicts`: the wallet's other transactions spending one of `txid`'s coins.
    fn wallet_conflicts(&self, txid: &str) -> Vec<String> {
        let Some(tx) = self.txs.get(txid) else { return Vec::new() };
        let coins: BTreeSet<OutPoint> = tx.vin.iter().map(|i| i.prev).collect();
        let mut out: Vec<String> = self
            .wallet
            .keys()
            .filter(|id| *id != txid)
            .filter(|id| self.txs.get(*id).is_some_and(|t| t.vin.iter().any(|i| coins.contains(&i.prev))))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Adds `tx` to the wallet if it spends the wallet's coins or pays it.
    fn note_in_wallet(&mut self, tx: &Tx) {
        let mine =
            tx.vin.iter().any(|i| self.is_wallet_coin(&i.prev)) || tx.vout.iter().any(|o| self.is_mine(&o.script));
        if mine {
            self.wallet.entry(tx.txid()).or_insert_with(WalletTx::new);
        }
    }

    /// The mempool transactions spending `txid`'s outputs, and theirs, and so on.
    fn mempool_descendants(&self, txid: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut parents = vec![txid.to_string()];
        while let Some(parent) = parents.pop() {
            for (prev, child) in &self.mempool_spends {
                if hex(&prev.txid) == parent && !found.contains(child) {
                    found.push(child.clone());
                    parents.push(child.clone());
                }
            }
        }
        found
    }

    /// Confirmed wallet coins free to spend, in a stable order.
    fn spendable(&self) -> Vec<(OutPoint, u64)> {
        let spent = self.wallet_spent();
        let mut coins: Vec<(OutPoint, u64)> = self
            .utxos
            .iter()
            .filter(|(p, o)| self.is_mine(&o.script) && !spent.contains(p) && !self.mempool_spends.contains_key(p))
            .map(|(p, o)| (*p, o.value))
            .collect();
        coins.sort();
        coins
    }

    /// The trusted balance, as bitcoind counts it: confirmed coins not spent by the wallet,
    /// plus the wallet's own change waiting in the mempool.
    fn balance(&self) -> u64 {
        let confirmed: u64 = self.spendable().iter().map(|(_, v)| v).sum();
        let change: u64 = self
            .mempool
            .iter()
            .filter_map(|id| self.txs.get(id))
            .filter(|tx| tx.vin.iter().any(|i| self.is_wallet_coin(&i.prev)))
            .flat_map(|tx| tx.vout.iter().filter(|o| self.is_mine(&o.script)).map(|o| o.value))
            .sum();
        confirmed + change
    }

    fn wallet_confirmations(&self, txid: &str) -> i64 {
        if let Some(h) = self.height_of(txid) {
            return self.confirmations_of_height(h);
        }
        match self.conflict_height(txid) {
            Some(h) => -self.confirmations_of_height(h),
            None => 0,
        }
    }

    fn decode(&self, tx: &Tx) -> Value {
        let txid = tx.txid();
        let vin: Vec<Value> = tx
            .vin
            .iter()
            .map(|i| {
                if tx.is_coinbase() {
                    json!({"coinbase": hex(&i.script_sig), "sequence": i.sequence})
                } else {
                    json!({
                        "txid": hex(&i.prev.txid),
                        "vout": i.prev.vout,
                        "scriptSig": {"asm": "", "hex": hex(&i.script_sig)},
                        "sequence": i.sequence,
                    })
                }
            })
            .collect();
        let vout: Vec<Value> = tx
            .vout
            .iter()
            .enumerate()
            .map(|(n, o)| {
                let kind = script_type(&o.script);
                let mut spk =
                    json!({"asm": "", "desc": format!("raw({})", hex(&o.script)), "hex": hex(&o.script), "type": kind});
                if kind == "nulldata" {
                    let data = op_return_payload(&o.script).map(|d| hex(&d)).unwrap_or_default();
                    spk["asm"] = json!(format!("OP_RETURN {data}"));
                } else if kind == "witness_v0_keyhash" {
                    spk["address"] = json!(format!("{}q{}", self.hrp(), hex(&o.script[2..])));
                }
                json!({"value": btc(o.value), "n": n, "scriptPubKey": spk})
            })
            .collect();
        let size = tx.vsize();
        json!({
            "txid": txid, "hash": txid, "version": tx.version, "size": size, "vsize": size,
            "weight": size * 4, "locktime": tx.locktime, "vin": vin, "vout": vout,
        })
    }

    fn block(&self, hash: &str) -> Option<(&Block, bool)> {
        if let Some(b) = self.chain.iter().find(|b| b.hash == hash) {
            return Some((b, true));
        }
        self.stale.iter().find(|b| b.hash == hash).map(|b| (b, false))
    }

    fn header(&self, b: &Block, active: bool) -> Value {
        let mut h = json!({
            "hash": b.hash,
            "confirmations": if active { self.confirmations_of_height(b.height) } else { -1 },
            "height": b.height,
            "version": 536_870_912,
            "versionHex": "20000000",
            "merkleroot": hex(&sha256d(b.txids.concat().as_bytes())),
            "time": b.time,
            "mediantime": b.time,
            "nonce": 0,
            "bits": "207fffff",
            "difficulty": 4.656_542_373_906_925e-10,
            "chainwork": format!("{:064x}", (b.height + 1) * 2),
            "nTx": b.txids.len(),
        });
        if b.height > 0 {
            h["previousblockhash"] = json!(b.prev);
        }
        if active && let Some(next) = self.chain.get(b.height as usize + 1) {
            h["nextblockhash"] = json!(next.hash);
        }
        h
    }

    fn accept(&mut self, tx: Tx) -> String {
        let txid = tx.txid();
        for i in &tx.vin {
            self.mempool_spends.insert(i.prev, txid.clone());
        }
        let fee = self.fee_of(&tx).unwrap_or(0);
        self.entries.insert(txid.clone(), MempoolEntry { time: now_secs(), height: self.tip_height(), fee });
        self.mempool.push(txid.clone());
        self.note_in_wallet(&tx);
        if let Some(w) = self.wallet.get_mut(&txid) {
            // Back in the mempool: no longer abandoned, as in bitcoind.
            w.abandoned = false;
        }
        let data = tx.vout.iter().find_map(|o| op_return_payload(&o.script)).map(|d| hex(&d));
        self.accepted.push(Accepted { txid: txid.clone(), data });
        self.txs.insert(txid.clone(), tx);
        txid
    }

    /// Takes out of the mempool every transaction spending a coin `tx` spends, and their
    /// descendants.
    fn evict_conflicts(&mut self, tx: &Tx) {
        let conflicts: BTreeSet<String> =
            tx.vin.iter().filter_map(|i| self.mempool_spends.get(&i.prev).cloned()).collect();
        for c in conflicts {
            for d in self.mempool_descendants(&c) {
                self.remove_from_mempool(&d);
            }
            self.remove_from_mempool(&c);
        }
    }

    fn remove_from_mempool(&mut self, txid: &str) -> bool {
        let before = self.mempool.len();
        self.mempool.retain(|t| t != txid);
        self.entries.remove(txid);
        self.mempool_spends.retain(|_, t| t != txid);
        self.mempool.len() != before
    }
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Num,
    Bool,
    Arr,
    /// Any JSON value; the method checks it.
    Any,
}

struct Param {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Param {
    Param { name, kind, required: true }
}

const fn opt(name: &'static str, kind: Kind) -> Param {
    Param { name, kind, required: false }
}

struct Method {
    name: &'static str,
    wallet: bool,
    params: &'static [Param],
}

const METHODS: &[Method] = &[
    Method { name: "getblockchaininfo", wallet: false, params: &[] },
    Method {
        name: "createrawtransaction",
        wallet: false,
        params: &[
            req("inputs", Kind::Arr),
            req("outputs", Kind::Any),
            opt("locktime", Kind::Num),
            opt("replaceable", Kind::Bool),
        ],
    },
    Method {
        name: "fundrawtransaction",
        wallet: true,
        params: &[req("hexstring", Kind::Str), opt("options", Kind::Any), opt("iswitness", Kind::Bool)],
    },
    Method {
        name: "signrawtransactionwithwallet",
        wallet: true,
        params: &[req("hexstring", Kind::Str), opt("prevtxs", Kind::Arr), opt("sighashtype", Kind::Str)],
    },
    Method {
        name: "decoderawtransaction",
        wallet: false,
        params: &[req("hexstring", Kind::Str), opt("iswitness", Kind::Bool)],
    },
    Method {
        name: "sendrawtransaction",
        wallet: false,
        params: &[req("hexstring", Kind::Str), opt("maxfeerate", Kind::Any), opt("maxburnamount", Kind::Any)],
    },
    Method {
        name: "gettransaction",
        wallet: true,
        params: &[req("txid", Kind::Str), opt("include_watchonly", Kind::Bool), opt("verbose", Kind::Bool)],
    },
    Method { name: "abandontransaction", wallet: true, params: &[req("txid", Kind::Str)] },
    Method { name: "getmempoolentry", wallet: false, params: &[req("txid", Kind::Str)] },
    Method {
        name: "getrawtransaction",
        wallet: false,
        params: &[req("txid", Kind::Str), opt("verbosity", Kind::Any), opt("blockhash", Kind::Str)],
    },
    Method {
        name: "getblockheader",
        wallet: false,
        params: &[req("blockhash", Kind::Str), opt("verbose", Kind::Bool)],
    },
    Method {
        name: "generatetoaddress",
        wallet: false,
        params: &[req("nblocks", Kind::Num), req("address", Kind::Str), opt("maxtries", Kind::Num)],
    },
    Method { name: "getnewaddress", wallet: true, params: &[opt("label", Kind::Str), opt("address_type", Kind::Str)] },
    Method { name: "getnetworkinfo", wallet: false, params: &[] },
    Method {
        name: "estimatesmartfee",
        wallet: false,
        params: &[req("conf_target", Kind::Num), opt("estimate_mode", Kind::Str)],
    },
    Method { name: "psbtbumpfee", wallet: true, params: &[req("txid", Kind::Str), opt("options", Kind::Any)] },
    Method { name: "bumpfee", wallet: true, params: &[req("txid", Kind::Str), opt("options", Kind::Any)] },
    Method {
        name: "walletprocesspsbt",
        wallet: true,
        params: &[
            req("psbt", Kind::Str),
            opt("sign", Kind::Bool),
            opt("sighashtype", Kind::Str),
            opt("bip32derivs", Kind::Bool),
            opt("finalize", Kind::Bool),
        ],
    },
    Method { name: "finalizepsbt", wallet: false, params: &[req("psbt", Kind::Str), opt("extract", Kind::Bool)] },
    Method {
        name: "getbalance",
        wallet: true,
        params: &[
            opt("dummy", Kind::Str),
            opt("minconf", Kind::Num),
            opt("include_watchonly", Kind::Bool),
            opt("avoid_reuse", Kind::Bool),
        ],
    },
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Positional parameters, checked against the method's signature as bitcoind does.
fn bind(method: &Method, params: &Value) -> Result<Vec<Value>, RpcError> {
    let help = || {
        let names: Vec<String> = method
            .params
            .iter()
            .map(|p| if p.required { p.name.to_string() } else { format!("( {} )", p.name) })
            .collect();
        (-1, format!("{} {}\n\n(the fake's help text)", method.name, names.join(" ")))
    };
    let mut args: Vec<Value> = match params {
        Value::Null => Vec::new(),
        Value::Array(a) => a.clone(),
        Value::Object(named) => {
            let mut out = vec![Value::Null; method.params.len()];
            for (k, v) in named {
                let i = method
                    .params
                    .iter()
                    .position(|p| p.name == k)
                    .ok_or((-8, format!("Unknown named parameter {k}")))?;
                out[i] = v.clone();
            }
            while out.last() == Some(&Value::Null) {
                out.pop();
            }
            out
        }
        _ => return err(-32600, "Params must be an array or object"),
    };
    if args.len() > method.params.len() {
        return Err(help());
    }
    for (i, p) in method.params.iter().enumerate() {
        match args.get(i) {
            None | Some(Value::Null) if p.required => return Err(help()),
            None | Some(Value::Null) => {}
            Some(v) => {
                let ok = match p.kind {
                    Kind::Str => v.is_string(),
                    Kind::Num => v.is_number(),
                    Kind::Bool => v.is_boolean(),
                    Kind::Arr => v.is_array(),
                    Kind::Any => true,
                };
                if !ok {
                    let want = match p.kind {
                        Kind::Str => "string",
                        Kind::Num => "number",
                        Kind::Bool => "bool",
                        Kind::Arr => "array",
                        Kind::Any => "object",
                    };
                    return err(-3, format!("JSON value of type {} is not of expected type {want}", type_name(v)));
                }
            }
        }
    }
    args.resize(method.params.len(), Value::Null);
    Ok(args)
}

fn parse_txid(v: &Value, name: &str) -> Result<String, RpcError> {
    let s = v.as_str().unwrap_or_default();
    if s.len() != 64 {
        return err(-8, format!("{name} must be of length 64 (not {}, for '{s}')", s.len()));
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return err(-8, format!("{name} must be hexadecimal string (not '{s}')"));
    }
    Ok(s.to_ascii_lowercase())
}

fn parse_tx(v: &Value, message: &str) -> Result<Tx, RpcError> {
    v.as_str().and_then(unhex).and_then(|b| Tx::parse(&b)).ok_or((-22, message.to_string()))
}

const DECODE_FAILED_INPUTS: &str = "TX decode failed. Make sure the tx has at least one input.";

/// A `fee_rate` in sat/vB as bitcoind reads it (`AmountFromValue(value, 3)`: a number or a
/// string, at most three decimals), in sat/kvB.
fn parse_fee_rate(v: &Value) -> Result<u64, RpcError> {
    let rate = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => return err(-3, "Amount is not a number or string"),
    };
    let Some(rate) = rate.filter(|r| r.is_finite()) else { return err(-3, "Invalid amount") };
    if rate < 0.0 {
        return err(-3, "Amount out of range");
    }
    let per_kvb = rate * 1000.0;
    if (per_kvb - per_kvb.round()).abs() > 1e-6 {
        return err(-3, "Invalid amount");
    }
    Ok(per_kvb.round() as u64)
}

// ---------------------------------------------------------------------------------------
// PSBT (BIP 174, version 0): the unsigned transaction, and each input's final scriptSig once
// signed; other fields are skipped when read and never written.
// ---------------------------------------------------------------------------------------

struct Psbt {
    /// The unsigned transaction (empty scriptSigs).
    tx: Tx,
    /// Each input's `PSBT_IN_FINAL_SCRIPTSIG`.
    finals: Vec<Option<Vec<u8>>>,
}

impl Psbt {
    fn complete(&self) -> bool {
        self.finals.iter().all(Option::is_some)
    }

    /// The network transaction: the unsigned one with the final scriptSigs.
    fn extract(&self) -> Tx {
        let mut tx = self.tx.clone();
        for (i, f) in tx.vin.iter_mut().zip(&self.finals) {
            i.script_sig = f.clone().unwrap_or_default();
        }
        tx
    }
}

const PSBT_MAGIC: &[u8] = b"psbt\xff";
const PSBT_GLOBAL_UNSIGNED_TX: u8 = 0x00;
const PSBT_IN_FINAL_SCRIPTSIG: u8 = 0x07;

fn write_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    write_varint(out, key.len());
    out.extend_from_slice(key);
    write_varint(out, value.len());
    out.extend_from_slice(value);
}

fn encode_psbt(psbt: &Psbt) -> String {
    let mut out = PSBT_MAGIC.to_vec();
    write_pair(&mut out, &[PSBT_GLOBAL_UNSIGNED_TX], &psbt.tx.serialize());
    out.push(0x00);
    for f in &psbt.finals {
        if let Some(script) = f {
            write_pair(&mut out, &[PSBT_IN_FINAL_SCRIPTSIG], script);
        }
        out.push(0x00);
    }
    out.extend(std::iter::repeat_n(0x00, psbt.tx.vout.len()));
    base64(&out)
}

/// Reads a PSBT; errors as bitcoind's: -22 "TX decode failed <why>".
fn decode_psbt(v: &Value) -> Result<Psbt, RpcError> {
    let bad = |why: &str| (-22, format!("TX decode failed {why}"));
    let bytes = v.as_str().and_then(unbase64).ok_or_else(|| bad("invalid base64"))?;
    let body = bytes.strip_prefix(PSBT_MAGIC).ok_or_else(|| bad("Invalid PSBT magic bytes"))?;
    let mut r = Reader { bytes: body, at: 0 };
    let map = |r: &mut Reader| -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs = Vec::new();
        loop {
            let key_len = r.varint()?;
            if key_len == 0 {
                return Some(pairs);
            }
            let key = r.take(key_len)?.to_vec();
            let value_len = r.varint()?;
            pairs.push((key, r.take(value_len)?.to_vec()));
        }
    };
    let global = map(&mut r).ok_or_else(|| bad("Unexpected end of data"))?;
    let unsigned = global
        .iter()
        .find(|(k, _)| k[..] == [PSBT_GLOBAL_UNSIGNED_TX])
        .ok_or_else(|| bad("No unsigned transaction was provided"))?;
    let tx = Tx::parse(&unsigned.1).ok_or_else(|| bad("Unsigned tx is not a transaction"))?;
    if tx.vin.iter().any(|i| !i.script_sig.is_empty()) {
        return Err(bad("Unsigned tx does not have empty scriptSigs and scriptWitnesses."));
    }
    let mut finals = Vec::new();
    for _ in &tx.vin {
        let pairs =
            map(&mut r).ok_or_else(|| bad("Inputs provided does not match the number of inputs in transaction."))?;
        finals.push(pairs.into_iter().find(|(k, _)| k[..] == [PSBT_IN_FINAL_SCRIPTSIG]).map(|(_, v)| v));
    }
    for _ in &tx.vout {
        map(&mut r).ok_or_else(|| bad("Outputs provided does not match the number of outputs in transaction."))?;
    }
    if r.at != body.len() {
        return Err(bad("extra data after PSBT"));
    }
    Ok(Psbt { tx, finals })
}

// ---------------------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------------------

impl Node {
    fn dispatch(&mut self, name: &str, params: &Value, wallet_path: Option<&str>) -> Result<Value, RpcError> {
        let Some(method) = METHODS.iter().find(|m| m.name == name) else {
            return err(-32601, "Method not found");
        };
        if let Some(status) = &self.warmup {
            return err(-28, status.clone());
        }
        if method.wallet {
            match wallet_path {
                Some(w) if w != self.options.wallet => {
                    return err(-18, "Requested wallet does not exist or is not loaded");
                }
                None if self.options.multiwallet => {
                    return err(
                        -19,
                        "Wallet file not specified (must request wallet RPC through /wallet/<filename> uri-path).",
                    );
                }
                _ => {}
            }
        }
        let a = bind(method, params)?;
        self.calls.push(name.to_string());
        match name {
            "getblockchaininfo" => Ok(self.getblockchaininfo()),
            "createrawtransaction" => self.createrawtransaction(&a),
            "fundrawtransaction" => self.fundrawtransaction(&a),
            "signrawtransactionwithwallet" => self.signrawtransactionwithwallet(&a),
            "decoderawtransaction" => Ok(self.decode(&parse_tx(&a[0], "TX decode failed")?)),
            "sendrawtransaction" => self.sendrawtransaction(&a),
            "gettransaction" => self.gettransaction(&a),
            "abandontransaction" => self.abandontransaction(&a),
            "getmempoolentry" => self.getmempoolentry(&a),
            "getrawtransaction" => self.getrawtransaction(&a),
            "getblockheader" => self.getblockheader(&a),
            "generatetoaddress" => self.generatetoaddress(&a),
            "getbalance" => Ok(json!(btc(self.balance()))),
            "getnetworkinfo" => Ok(self.getnetworkinfo()),
            "estimatesmartfee" => self.estimatesmartfee(&a),
            "psbtbumpfee" => self.bump(&a, true),
            "bumpfee" => self.bump(&a, false),
            "walletprocesspsbt" => self.walletprocesspsbt(&a),
            "finalizepsbt" => self.finalizepsbt(&a),
            "getnewaddress" => {
                self.next_address += 1;
                let body = hex(&sha256d(&self.next_address.to_le_bytes())[..19]);
                Ok(json!(format!("{}q{body}", self.hrp())))
            }
            _ => err(-32601, "Method not found"),
        }
    }

    fn getblockchaininfo(&self) -> Value {
        let tip = self.chain.last();
        json!({
            "chain": self.options.chain,
            "blocks": self.tip_height(),
            "headers": self.tip_height(),
            "bestblockhash": self.tip_hash(),
            "difficulty": 4.656_542_373_906_925e-10,
            "time": tip.map_or(0, |b| b.time),
            "mediantime": tip.map_or(0, |b| b.time),
            "verificationprogress": 1,
            "initialblockdownload": false,
            "chainwork": format!("{:064x}", (self.tip_height() + 1) * 2),
            "size_on_disk": 1000 * (self.tip_height() + 1),
            "pruned": false,
            "warnings": [],
        })
    }

    fn createrawtransaction(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let mut vin = Vec::new();
        for input in a[0].as_array().into_iter().flatten() {
            let txid = parse_txid(&input["txid"], "txid")?;
            let vout = input["vout"].as_u64().ok_or((-8, "Invalid parameter, missing vout key".to_string()))?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&unhex(&txid).unwrap_or_default());
            vin.push(TxIn {
                prev: OutPoint { txid: id, vout: vout as u32 },
                script_sig: Vec::new(),
                sequence: input["sequence"].as_u64().map_or(0xffff_fffd, |s| s as u32),
            });
        }
        let pairs: Vec<(String, Value)> = match &a[1] {
            Value::Array(list) => {
                let mut pairs = Vec::new();
                for item in list {
                    let obj = item
                        .as_object()
                        .ok_or((-8, "Invalid parameter, key-value pair not an object as expected".to_string()))?;
                    if obj.len() != 1 {
                        return err(-8, "Invalid parameter, key-value pair must contain exactly one key");
                    }
                    pairs.extend(obj.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                pairs
            }
            Value::Object(obj) => obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            other => return err(-3, format!("JSON value of type {} is not of expected type array", type_name(other))),
        };
        if pairs.is_empty() {
            return err(-8, "Invalid parameter, output argument must be non-null");
        }
        let mut vout = Vec::new();
        let mut seen_data = false;
        for (key, value) in pairs {
            if key == "data" {
                if seen_data {
                    return err(-8, "Invalid parameter, duplicate key: data");
                }
                seen_data = true;
                let s = value.as_str().unwrap_or_default();
                let data = unhex(s).ok_or((-8, format!("Data must be hexadecimal string (not '{s}')")))?;
                vout.push(TxOut { value: 0, script: op_return_script(&data) });
            } else {
                if !key.starts_with(self.hrp()) {
                    return err(-5, format!("Invalid Bitcoin address: {key}"));
                }
                let amount = value.as_f64().filter(|v| *v > 0.0).ok_or((-3, "Invalid amount".to_string()))?;
                vout.push(TxOut { value: (amount * COIN as f64).round() as u64, script: address_script(&key) });
            }
        }
        let locktime = a[2].as_u64().unwrap_or(0) as u32;
        Ok(json!(Tx { version: 2, vin, vout, locktime }.hex()))
    }

    fn fundrawtransaction(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let mut tx = parse_tx(&a[0], "TX decode failed")?;
        let mut rate = FALLBACK_FEE;
        match &a[1] {
            Value::Null | Value::Bool(_) => {}
            Value::Object(options) => {
                const KNOWN: &[&str] = &[
                    "add_inputs",
                    "include_unsafe",
                    "minconf",
                    "maxconf",
                    "changeAddress",
                    "changePosition",
                    "change_type",
                    "includeWatching",
                    "lockUnspents",
                    "fee_rate",
                    "feeRate",
                    "subtractFeeFromOutputs",
                    "input_weights",
                    "max_tx_weight",
                    "replaceable",
                    "conf_target",
                    "estimate_mode",
                    "solving_data",
                ];
                if let Some(k) = options.keys().find(|k| !KNOWN.contains(&k.as_str())) {
                    return err(-3, format!("Unexpected key {k}"));
                }
                if options.contains_key("fee_rate") && options.contains_key("feeRate") {
                    return err(-8, "Cannot specify both fee_rate (sat/vB) and feeRate (BTC/kvB)");
                }
                if let Some(v) = options.get("fee_rate") {
                    let parsed = v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                    rate = parsed.filter(|r| r.is_finite() && *r > 0.0).ok_or((-3, "Invalid amount".to_string()))?;
                }
            }
            other => return err(-3, format!("JSON value of type {} is not of expected type object", type_name(other))),
        }
        if tx.vout.is_empty() {
            return err(-8, "TX must have at least one output");
        }
        let target: u64 = tx.vout.iter().map(|o| o.value).sum();
        let coins = self.spendable();
        let mut chosen: Vec<(OutPoint, u64)> = Vec::new();
        self.next_change += 1;
        let change_script = address_script(&format!("change:{}:{}", self.options.wallet, self.next_change));
        self.wallet_scripts.insert(change_script.clone());
        let change = TxOut { value: 0, script: change_script.clone() };
        for coin in coins {
            chosen.push(coin);
            let total: u64 = chosen.iter().map(|c| c.1).sum();
            let mut sized = tx.clone();
            sized.vin.extend(chosen.iter().map(|(p, _)| TxIn {
                prev: *p,
                script_sig: fake_signature(p),
                sequence: 0xffff_fffd,
            }));
            sized.vout.insert(0, change.clone());
            let fee = (rate * sized.vsize() as f64).ceil() as u64;
            if total >= target + fee {
                tx.vin.extend(chosen.iter().map(|(p, _)| TxIn {
                    prev: *p,
                    script_sig: Vec::new(),
                    sequence: 0xffff_fffd,
                }));
                let left = total - target - fee;
                let changepos = if left >= DUST {
                    tx.vout.insert(0, TxOut { value: left, script: change_script.clone() });
                    0
                } else {
                    -1
                };
                let paid = total - tx.vout.iter().map(|o| o.value).sum::<u64>();
                return Ok(json!({"hex": tx.hex(), "fee": btc(paid), "changepos": changepos}));
            }
        }
        err(-4, "Insufficient funds")
    }

    fn signrawtransactionwithwallet(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let mut tx = parse_tx(&a[0], DECODE_FAILED_INPUTS)?;
        let mut errors = Vec::new();
        let spent = self.wallet_spent();
        for i in &mut tx.vin {
            let known = self.utxos.contains_key(&i.prev) || self.txs.contains_key(&hex(&i.prev.txid));
            if self.is_wallet_coin(&i.prev) && known {
                i.script_sig = fake_signature(&i.prev);
            } else {
                let why = if spent.contains(&i.prev) || !known {
                    "Input not found or already spent"
                } else {
                    "Unable to sign input, missing key"
                };
                errors.push(json!({
                    "txid": hex(&i.prev.txid), "vout": i.prev.vout, "witness": [],
                    "scriptSig": hex(&i.script_sig), "sequence": i.sequence, "error": why,
                }));
            }
        }
        let mut out = json!({"hex": tx.hex(), "complete": errors.is_empty()});
        if !errors.is_empty() {
            out["errors"] = json!(errors);
        }
        Ok(out)
    }

    fn sendrawtransaction(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let tx = parse_tx(&a[0], DECODE_FAILED_INPUTS)?;
        let max_fee_rate = match &a[1] {
            Value::Null => 0.10,
            v => v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or((-3, "Invalid amount".to_string()))?,
        };
        self.submit(tx, max_fee_rate).map(|txid| json!(txid))
    }

    /// Mempool acceptance, as `sendrawtransaction` (and the wallet's own broadcast) meets
    /// it. A transaction spending a coin a mempool transaction spends replaces it under
    /// BIP 125: every transaction it replaces signals replaceability (rule 1; else
    /// "txn-mempool-conflict"), it adds no unconfirmed input (rule 2), it pays at least their
    /// fees (rule 3) and, on top, its own relay at the incremental relay fee (rule 4) — the
    /// last two as bitcoind's `PaysForRBF` words them, under the reject reason
    /// "insufficient fee". The replaced transactions and their descendants leave the mempool.
    fn submit(&mut self, tx: Tx, max_fee_rate: f64) -> Result<String, RpcError> {
        let txid = tx.txid();
        if self.height_of(&txid).is_some() {
            return err(-27, "Transaction outputs already in utxo set");
        }
        if self.entries.contains_key(&txid) {
            return Ok(txid);
        }
        if let Some(why) = &self.reject {
            return err(-26, why.clone());
        }
        if tx.vin.is_empty() {
            return err(-26, "bad-txns-vin-empty");
        }
        if tx.vout.is_empty() {
            return err(-26, "bad-txns-vout-empty");
        }
        let mut op_returns = 0;
        for o in &tx.vout {
            if o.script.first() == Some(&0x6a) {
                op_returns += 1;
                if o.script.len() > MAX_OP_RETURN || op_return_payload(&o.script).is_none() {
                    return err(-26, "scriptpubkey");
                }
            } else if o.value < DUST {
                return err(-26, "dust");
            }
        }
        if op_returns > 1 {
            return err(-26, "multi-op-return");
        }
        let conflicts: BTreeSet<String> =
            tx.vin.iter().filter_map(|i| self.mempool_spends.get(&i.prev).cloned()).collect();
        if conflicts.iter().any(|c| !self.txs.get(c).is_some_and(signals_rbf)) {
            return err(-26, "txn-mempool-conflict");
        }
        for i in &tx.vin {
            let in_mempool_parent = self.entries.contains_key(&hex(&i.prev.txid))
                && self.txs.get(&hex(&i.prev.txid)).is_some_and(|p| (i.prev.vout as usize) < p.vout.len());
            if !self.utxos.contains_key(&i.prev) && !in_mempool_parent {
                return err(-25, "bad-txns-inputs-missingorspent");
            }
        }
        for i in &tx.vin {
            if i.script_sig != fake_signature(&i.prev) {
                return err(
                    -26,
                    "mandatory-script-verify-flag-failed (Operation not valid with the current stack size)",
                );
            }
        }
        let Some(fee) = self.fee_of(&tx) else { return err(-26, "bad-txns-in-belowout") };
        let vsize = tx.vsize();
        if fee < vsize * MIN_RELAY {
            return err(-26, format!("min relay fee not met, {fee} < {}", vsize * MIN_RELAY));
        }
        let mut replaced: Vec<String> = Vec::new();
        for c in &conflicts {
            for t in std::iter::once(c.clone()).chain(self.mempool_descendants(c)) {
                if !replaced.contains(&t) {
                    replaced.push(t);
                }
            }
        }
        if !replaced.is_empty() {
            let replaced_coins: BTreeSet<OutPoint> =
                conflicts.iter().filter_map(|c| self.txs.get(c)).flat_map(|t| t.vin.iter().map(|i| i.prev)).collect();
            let adds_unconfirmed = tx
                .vin
                .iter()
                .any(|i| self.entries.contains_key(&hex(&i.prev.txid)) && !replaced_coins.contains(&i.prev));
            if adds_unconfirmed {
                return err(-26, "replacement-adds-unconfirmed");
            }
            let original: u64 = replaced.iter().filter_map(|t| self.entries.get(t)).map(|e| e.fee).sum();
            if fee < original {
                return err(
                    -26,
                    format!(
                        "insufficient fee, rejecting replacement {txid}, less fees than conflicting txs; {} < {}",
                        format_money(fee),
                        format_money(original)
                    ),
                );
            }
            let relay = (INCREMENTAL_RELAY * vsize).div_ceil(1000);
            if fee - original < relay {
                return err(
                    -26,
                    format!(
                        "insufficient fee, rejecting replacement {txid}, not enough additional fees to relay; {} < {}",
                        format_money(fee - original),
                        format_money(relay)
                    ),
                );
            }
        }
        if max_fee_rate > 0.0 && fee as f64 / vsize as f64 * 1000.0 > max_fee_rate * COIN as f64 {
            return err(-25, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)");
        }
        for t in &replaced {
            self.remove_from_mempool(t);
        }
        Ok(self.accept(tx))
    }

    fn gettransaction(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let txid = parse_txid(&a[0], "txid")?;
        let (Some(w), Some(tx)) = (self.wallet.get(&txid), self.txs.get(&txid)) else {
            return err(-5, "Invalid or non-wallet transaction id");
        };
        let confirmations = self.wallet_confirmations(&txid);
        let external: u64 = tx.vout.iter().filter(|o| !self.is_mine(&o.script)).map(|o| o.value).sum();
        let ours = tx.vin.iter().any(|i| self.is_wallet_coin(&i.prev));
        let fee = if ours { self.fee_of(tx) } else { None };
        let amount = if ours {
            -btc(external)
        } else {
            btc(tx.vout.iter().filter(|o| self.is_mine(&o.script)).map(|o| o.value).sum())
        };
        let mut out = json!({
            "amount": amount,
            "confirmations": confirmations,
            "txid": txid,
            "wtxid": txid,
            "walletconflicts": self.wallet_conflicts(&txid),
            "time": w.time,
            "timereceived": w.time,
            "bip125-replaceable": self.bip125_replaceable(&txid, confirmations),
            "details": tx.vout.iter().enumerate().filter(|(_, o)| !self.is_mine(&o.script)).map(|(n, o)| {
                let mut d = json!({"category": if ours { "send" } else { "receive" }, "amount": -btc(o.value), "vout": n, "abandoned": w.abandoned});
                if let Some(f) = fee { d["fee"] = json!(-btc(f)); }
                d
            }).collect::<Vec<_>>(),
            "hex": tx.hex(),
        });
        if let Some(f) = fee {
            out["fee"] = json!(-btc(f));
        }
        if let Some(by) = &w.replaced_by {
            out["replaced_by_txid"] = json!(by);
        }
        if let Some(of) = &w.replaces {
            out["replaces_txid"] = json!(of);
        }
        if confirmations <= 0 {
            out["trusted"] = json!(confirmations == 0 && self.entries.contains_key(&txid));
        }
        if let Some(h) = self.height_of(&txid) {
            let b = &self.chain[h as usize];
            out["blockhash"] = json!(b.hash);
            out["blockheight"] = json!(b.height);
            out["blockindex"] = json!(b.txids.iter().position(|t| *t == txid).unwrap_or(0));
            out["blocktime"] = json!(b.time);
        }
        Ok(out)
    }

    /// `bip125-replaceable` as bitcoind's wallet says it: "no" once confirmed; for an
    /// unconfirmed one, "yes" if it signals, "unknown" if it does not and is not in the
    /// mempool (its unconfirmed ancestors are unknown), else "no" (its ancestors are
    /// confirmed here: the fake never chains unconfirmed transactions of its own).
    fn bip125_replaceable(&self, txid: &str, confirmations: i64) -> &'static str {
        match self.txs.get(txid) {
            _ if confirmations > 0 => "no",
            Some(tx) if signals_rbf(tx) => "yes",
            _ if !self.entries.contains_key(txid) => "unknown",
            _ => "no",
        }
    }

    fn abandontransaction(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let txid = parse_txid(&a[0], "txid")?;
        if !self.wallet.contains_key(&txid) {
            return err(-5, "Invalid or non-wallet transaction id");
        }
        if self.entries.contains_key(&txid) || self.wallet_confirmations(&txid) != 0 {
            return err(-5, "Transaction not eligible for abandonment");
        }
        if let Some(w) = self.wallet.get_mut(&txid) {
            w.abandoned = true;
        }
        Ok(Value::Null)
    }

    fn getmempoolentry(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let txid = parse_txid(&a[0], "txid")?;
        let (Some(e), Some(tx)) = (self.entries.get(&txid), self.txs.get(&txid)) else {
            return err(-5, "Transaction not in mempool");
        };
        let vsize = tx.vsize();
        let depends: Vec<String> =
            tx.vin.iter().map(|i| hex(&i.prev.txid)).filter(|p| self.entries.contains_key(p)).collect();
        Ok(json!({
            "vsize": vsize, "weight": vsize * 4, "time": e.time, "height": e.height,
            "descendantcount": 1, "descendantsize": vsize, "ancestorcount": 1 + depends.len(), "ancestorsize": vsize,
            "wtxid": txid,
            "fees": {"base": btc(e.fee), "modified": btc(e.fee), "ancestor": btc(e.fee), "descendant": btc(e.fee)},
            "depends": depends, "spentby": [], "bip125-replaceable": signals_rbf(tx), "unbroadcast": false,
        }))
    }

    fn getrawtransaction(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let txid = parse_txid(&a[0], "txid")?;
        let verbose = match &a[1] {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_u64().is_some_and(|n| n > 0),
            other => return err(-3, format!("JSON value of type {} is not of expected type number", type_name(other))),
        };
        let block = if a[2].is_null() {
            None
        } else {
            let hash = parse_txid(&a[2], "parameter 3")?;
            let (b, active) = self.block(&hash).ok_or((-5, "Block hash not found".to_string()))?;
            if !b.txids.contains(&txid) {
                return err(
                    -5,
                    "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                );
            }
            Some((b.clone(), active))
        };
        let block = match block {
            Some(b) => Some(b),
            None if self.entries.contains_key(&txid) => None,
            None => match self.height_of(&txid) {
                Some(h) if self.options.txindex => Some((self.chain[h as usize].clone(), true)),
                _ => {
                    return err(
                        -5,
                        "No such mempool transaction. Use -txindex or provide a block hash to enable blockchain transaction queries. Use gettransaction for wallet transactions.",
                    );
                }
            },
        };
        let Some(tx) = self.txs.get(&txid) else { return err(-5, "No such mempool or blockchain transaction") };
        if !verbose {
            return Ok(json!(tx.hex()));
        }
        let mut out = self.decode(tx);
        out["hex"] = json!(tx.hex());
        if let Some((b, active)) = block {
            if !a[2].is_null() {
                out["in_active_chain"] = json!(active);
            }
            out["blockhash"] = json!(b.hash);
            out["confirmations"] = json!(if active { self.confirmations_of_height(b.height) } else { 0 });
            out["time"] = json!(b.time);
            out["blocktime"] = json!(b.time);
        }
        Ok(out)
    }

    fn getblockheader(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let hash = parse_txid(&a[0], "hash")?;
        let (b, active) = self.block(&hash).ok_or((-5, "Block not found".to_string()))?;
        if a[1] == Value::Bool(false) {
            let mut raw = vec![0u8; 80];
            raw[..32].copy_from_slice(&sha256d(b.hash.as_bytes()));
            return Ok(json!(hex(&raw)));
        }
        Ok(self.header(b, active))
    }

    fn getnetworkinfo(&self) -> Value {
        json!({
            "version": 280000,
            "subversion": "/Satoshi:28.0.0/",
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localrelay": true,
            "timeoffset": 0,
            "networkactive": true,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": btc(MIN_RELAY * 1000),
            "incrementalfee": btc(INCREMENTAL_RELAY),
            "localaddresses": [],
            "warnings": [],
        })
    }

    /// `estimatesmartfee`: the rate the test set (never under the minimum relay fee), else
    /// bitcoind's answer when it lacks data: `errors` and no `feerate`.
    fn estimatesmartfee(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let target = a[0].as_i64().filter(|t| (1..=1008).contains(t));
        let Some(target) = target else { return err(-8, "Invalid conf_target, must be between 1 and 1008") };
        let modes = ["unset", "economical", "conservative"];
        if let Some(mode) = a[1].as_str()
            && !modes.contains(&mode.to_ascii_lowercase().as_str())
        {
            return err(
                -8,
                r#"Invalid estimate_mode parameter, must be one of: "unset", "economical", "conservative""#,
            );
        }
        Ok(match self.estimate {
            Some(rate) => json!({"feerate": btc(rate.max(MIN_RELAY * 1000)), "blocks": target.max(2)}),
            None => json!({"errors": ["Insufficient data or no feerate found"], "blocks": 0}),
        })
    }

    /// `psbtbumpfee` (`want_psbt`) and `bumpfee`, as bitcoind's feebumper
    /// (`CreateRateBumpTransaction`) makes a replacement, in its order of checks:
    /// - "An opt-in RBF transaction with the given txid must be in the wallet": else -5
    ///   "Invalid or non-wallet transaction id";
    /// - each coin it spends must still be unspent on chain (the mempool may spend it): else
    ///   -1 "<txid>:<n> is already spent";
    /// - "The command will fail if the wallet or mempool contains a transaction that spends
    ///   one of T's outputs": -8 "Transaction has descendants in the wallet" / "… in the
    ///   mempool"; mined or conflicted: -4 "Transaction has been mined, or is conflicted with
    ///   a mined transaction"; not signalling: -4 "Transaction is not BIP 125 replaceable";
    ///   already bumped by `bumpfee`: -4 "Cannot bump transaction <txid> which was already
    ///   bumped by transaction <txid>";
    /// - an explicit `fee_rate` (sat/vB) "Must be at least 1.000 sat/vB higher than the
    ///   current transaction fee rate" — checked as the wallet does, on totals: the new fee
    ///   must reach the old fee plus max(incremental relay fee, 5 sat/vB) over the new size,
    ///   else -8 "Insufficient total fee …"; under the minimum relay fee -4 "New fee rate …";
    ///   over -maxtxfee -4 "Specified or calculated fee … is too high …";
    /// - without one, "the new fee will be calculated automatically using the estimatesmartfee
    ///   RPC": the old rate plus 1 sat/kvB plus that increment, or the estimate if higher.
    ///
    /// "All inputs in the original transaction will be included in the replacement
    /// transaction"; "The command will pay the additional fee by reducing change outputs or
    /// adding inputs when necessary. It may add a new change output if one does not already
    /// exist." `psbtbumpfee` "Returns a PSBT instead of creating and signing a new
    /// transaction": nothing is broadcast or stored. `bumpfee` signs, stores the replacement
    /// with `replaces_txid`, marks the original `replaced_by_txid`, and broadcasts it.
    fn bump(&mut self, a: &[Value], want_psbt: bool) -> Result<Value, RpcError> {
        let txid = parse_txid(&a[0], "txid")?;
        let mut fee_rate = None;
        let mut replaceable = true;
        let mut change_index = None;
        match &a[1] {
            Value::Null => {}
            Value::Object(o) => {
                const KNOWN: &[(&str, Kind)] = &[
                    ("confTarget", Kind::Num),
                    ("conf_target", Kind::Num),
                    ("fee_rate", Kind::Any),
                    ("replaceable", Kind::Bool),
                    ("estimate_mode", Kind::Str),
                    ("outputs", Kind::Any),
                    ("original_change_index", Kind::Num),
                    ("psbt_version", Kind::Num),
                ];
                for (k, v) in o {
                    let Some((_, kind)) = KNOWN.iter().find(|(name, _)| name == k) else {
                        return err(-3, format!("Unexpected key {k}"));
                    };
                    let (ok, want) = match kind {
                        Kind::Num => (v.is_number(), "number"),
                        Kind::Bool => (v.is_boolean(), "bool"),
                        Kind::Str => (v.is_string(), "string"),
                        _ => (true, ""),
                    };
                    if !ok {
                        return err(
                            -3,
                            format!("JSON value of type {} for field {k} is not of expected type {want}", type_name(v)),
                        );
                    }
                }
                if o.contains_key("confTarget") && o.contains_key("conf_target") {
                    return err(
                        -8,
                        "confTarget and conf_target options should not both be set. Use conf_target (confTarget is deprecated).",
                    );
                }
                if let Some(v) = o.get("fee_rate") {
                    if o.contains_key("confTarget") || o.contains_key("conf_target") {
                        return err(
                            -8,
                            "Cannot specify both conf_target and fee_rate. Please provide either a confirmation target in blocks for automatic fee estimation, or an explicit fee rate.",
                        );
                    }
                    if o.get("estimate_mode").and_then(Value::as_str).is_some_and(|m| m != "unset") {
                        return err(-8, "Cannot specify both estimate_mode and fee_rate");
                    }
                    fee_rate = Some(parse_fee_rate(v)?);
                }
                replaceable = o.get("replaceable").and_then(Value::as_bool).unwrap_or(true);
                if o.contains_key("outputs") {
                    return err(-8, "the fake bitcoind does not take outputs");
                }
                if o.get("psbt_version").and_then(Value::as_u64).is_some_and(|v| v != 0 && v != 2) {
                    return err(-8, "The PSBT version can only be 2 or 0");
                }
                change_index = o.get("original_change_index").and_then(Value::as_u64).map(|n| n as usize);
            }
            other => {
                return err(-3, format!("JSON value of type {} is not of expected type object", type_name(other)));
            }
        }
        let (Some(w), Some(tx)) = (self.wallet.get(&txid).cloned(), self.txs.get(&txid).cloned()) else {
            return err(-5, "Invalid or non-wallet transaction id");
        };
        if change_index.is_some_and(|n| n >= tx.vout.len()) {
            return err(-8, "Change position is out of range");
        }
        let mut inputs: Vec<(OutPoint, u64)> = Vec::new();
        for i in &tx.vin {
            let in_mempool_parent = self.entries.contains_key(&hex(&i.prev.txid));
            let coin = self
                .utxos
                .get(&i.prev)
                .map(|o| o.value)
                .or_else(|| in_mempool_parent.then(|| self.value_of(&i.prev)).flatten());
            let Some(value) = coin else {
                return err(-1, format!("{}:{} is already spent", hex(&i.prev.txid), i.prev.vout));
            };
            inputs.push((i.prev, value));
        }
        let spends_outputs = |t: &Tx| t.vin.iter().any(|i| hex(&i.prev.txid) == txid);
        if self.wallet.keys().filter_map(|id| self.txs.get(id)).any(spends_outputs) {
            return err(-8, "Transaction has descendants in the wallet");
        }
        if !self.mempool_descendants(&txid).is_empty() {
            return err(-8, "Transaction has descendants in the mempool");
        }
        if self.wallet_confirmations(&txid) != 0 {
            return err(-4, "Transaction has been mined, or is conflicted with a mined transaction");
        }
        if !signals_rbf(&tx) {
            return err(-4, "Transaction is not BIP 125 replaceable");
        }
        if let Some(by) = &w.replaced_by {
            return err(-4, format!("Cannot bump transaction {txid} which was already bumped by transaction {by}"));
        }
        if !want_psbt && !tx.vin.iter().all(|i| self.is_wallet_coin(&i.prev)) {
            return err(-4, "Transaction contains inputs that don't belong to this wallet");
        }
        let old_fee = inputs.iter().map(|c| c.1).sum::<u64>() - tx.vout.iter().map(|o| o.value).sum::<u64>();
        let change_at = change_index.or_else(|| tx.vout.iter().position(|o| self.is_mine(&o.script)));
        let change_script = match change_at {
            Some(n) => tx.vout[n].script.clone(),
            None => {
                self.next_change += 1;
                let script = address_script(&format!("change:{}:{}", self.options.wallet, self.next_change));
                self.wallet_scripts.insert(script.clone());
                script
            }
        };
        let sequence = if replaceable { MAX_BIP125_SEQUENCE } else { MAX_BIP125_SEQUENCE + 1 };
        // The replacement: the original's inputs (and more if needed), its outputs in their
        // places, the change (if any) carrying `change` satoshis.
        let build = |inputs: &[(OutPoint, u64)], change: Option<u64>, signed: bool| {
            let vin = inputs
                .iter()
                .map(|(p, _)| TxIn {
                    prev: *p,
                    script_sig: if signed { fake_signature(p) } else { Vec::new() },
                    sequence,
                })
                .collect();
            let mut vout: Vec<TxOut> =
                tx.vout.iter().enumerate().filter(|(n, _)| Some(*n) != change_at).map(|(_, o)| o.clone()).collect();
            if let Some(value) = change {
                vout.insert(change_at.unwrap_or(0).min(vout.len()), TxOut { value, script: change_script.clone() });
            }
            Tx { version: tx.version, vin, vout, locktime: tx.locktime }
        };
        let incremental = INCREMENTAL_RELAY.max(WALLET_INCREMENTAL_RELAY);
        let rate = match fee_rate {
            Some(rate) => {
                let max_size = build(&inputs, change_at.map(|_| 0), true).vsize();
                if rate < MIN_RELAY * 1000 {
                    return err(
                        -4,
                        format!(
                            "New fee rate ({}) is lower than the minimum fee rate ({}) to get into the mempool -- ",
                            format_money(rate),
                            format_money(MIN_RELAY * 1000)
                        ),
                    );
                }
                let new_total = (rate * max_size).div_ceil(1000);
                let increment = (incremental * max_size).div_ceil(1000);
                if new_total < old_fee + increment {
                    return err(
                        -8,
                        format!(
                            "Insufficient total fee {}, must be at least {} (oldFee {} + incrementalFee {})",
                            format_money(new_total),
                            format_money(old_fee + increment),
                            format_money(old_fee),
                            format_money(increment)
                        ),
                    );
                }
                if new_total > MAX_TX_FEE {
                    return err(
                        -4,
                        format!(
                            "Specified or calculated fee {} is too high (cannot be higher than -maxtxfee {})",
                            format_money(new_total),
                            format_money(MAX_TX_FEE)
                        ),
                    );
                }
                rate
            }
            None => {
                let bumped = old_fee * 1000 / tx.vsize() + 1 + incremental;
                bumped.max(self.estimate.unwrap_or((FALLBACK_FEE * 1000.0) as u64))
            }
        };
        let recipients: u64 =
            tx.vout.iter().enumerate().filter(|(n, _)| Some(*n) != change_at).map(|(_, o)| o.value).sum();
        // "We cannot source new unconfirmed inputs (bip125 rule 2)": confirmed coins only.
        let mut more = self.spendable().into_iter();
        let replacement = loop {
            let total: u64 = inputs.iter().map(|c| c.1).sum();
            let with_change = (rate * build(&inputs, Some(0), true).vsize()).div_ceil(1000);
            if total >= recipients + with_change + DUST {
                break build(&inputs, Some(total - recipients - with_change), false);
            }
            let without = (rate * build(&inputs, None, true).vsize()).div_ceil(1000);
            if total >= recipients + without {
                break build(&inputs, None, false);
            }
            match more.next() {
                Some(coin) => inputs.push(coin),
                None => return err(-4, "Unable to create transaction. Insufficient funds"),
            }
        };
        let new_fee = inputs.iter().map(|c| c.1).sum::<u64>() - replacement.vout.iter().map(|o| o.value).sum::<u64>();
        let mut out = json!({"origfee": btc(old_fee), "fee": btc(new_fee), "errors": []});
        if want_psbt {
            let psbt = Psbt { finals: vec![None; replacement.vin.len()], tx: replacement };
            out["psbt"] = json!(encode_psbt(&psbt));
            return Ok(out);
        }
        let mut signed = replacement;
        for i in &mut signed.vin {
            i.script_sig = fake_signature(&i.prev);
        }
        let new_txid = signed.txid();
        // The wallet stores it whether or not the mempool takes it, as bitcoind's
        // CommitTransaction does, and marks the original replaced.
        self.txs.insert(new_txid.clone(), signed.clone());
        self.wallet.insert(new_txid.clone(), WalletTx { replaces: Some(txid.clone()), ..WalletTx::new() });
        if let Some(original) = self.wallet.get_mut(&txid) {
            original.replaced_by = Some(new_txid.clone());
        }
        let _ = self.submit(signed, 0.10);
        out["txid"] = json!(new_txid);
        Ok(out)
    }

    /// `walletprocesspsbt`: "Update a PSBT with input information from our wallet and then
    /// sign inputs that we can sign for"; with `finalize` (default true) the signed inputs are
    /// finalized, and a complete PSBT's transaction comes back as `hex` (bitcoind 26+).
    fn walletprocesspsbt(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let mut psbt = decode_psbt(&a[0])?;
        const SIGHASHES: &[&str] =
            &["DEFAULT", "ALL", "NONE", "SINGLE", "ALL|ANYONECANPAY", "NONE|ANYONECANPAY", "SINGLE|ANYONECANPAY"];
        if let Some(h) = a[2].as_str()
            && !SIGHASHES.contains(&h)
        {
            return err(-8, format!("'{h}' is not a valid sighash parameter."));
        }
        let sign = a[1].as_bool().unwrap_or(true);
        let finalize = a[4].as_bool().unwrap_or(true);
        if sign && finalize {
            for (n, i) in psbt.tx.vin.iter().enumerate() {
                let known = self.utxos.contains_key(&i.prev) || self.txs.contains_key(&hex(&i.prev.txid));
                if psbt.finals[n].is_none() && known && self.is_wallet_coin(&i.prev) {
                    psbt.finals[n] = Some(fake_signature(&i.prev));
                }
            }
        }
        let complete = psbt.complete();
        let mut out = json!({"psbt": encode_psbt(&psbt), "complete": complete});
        if complete {
            out["hex"] = json!(psbt.extract().hex());
        }
        Ok(out)
    }

    /// `finalizepsbt`: "If the transaction is fully signed, it will produce a network
    /// serialized transaction which can be broadcast with sendrawtransaction" (`hex`, when
    /// `extract`, default true); otherwise the PSBT comes back, `complete: false`.
    fn finalizepsbt(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let psbt = decode_psbt(&a[0])?;
        let complete = psbt.complete();
        if complete && a[1].as_bool().unwrap_or(true) {
            return Ok(json!({"hex": psbt.extract().hex(), "complete": true}));
        }
        Ok(json!({"psbt": encode_psbt(&psbt), "complete": complete}))
    }

    fn generatetoaddress(&mut self, a: &[Value]) -> Result<Value, RpcError> {
        let n = a[0].as_u64().ok_or((-8, "nblocks must be a non-negative integer".to_string()))?;
        let address = a[1].as_str().unwrap_or_default();
        if !address.starts_with(self.hrp()) || address.len() < 14 {
            return err(-5, "Error: Invalid address");
        }
        Ok(json!(self.mine(n, false)))
    }
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads standard padded base64; `None` for anything else.
fn unbase64(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let body = s.strip_suffix("==").or_else(|| s.strip_suffix('=')).unwrap_or(s);
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in body.bytes() {
        let v = T.iter().position(|&t| t == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Takes one complete request off the front of `buf`, if there is one.
fn take_request(buf: &mut Vec<u8>) -> Option<Request> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    let body = buf[end + 4..end + 4 + len].to_vec();
    buf.drain(..end + 4 + len);
    Some(Request { method, path, headers, body })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    }
}

struct Shared {
    node: Mutex<Node>,
    stop: AtomicBool,
    down: AtomicBool,
    /// The listener is closed (acknowledges `down`).
    closed: AtomicBool,
    connections: AtomicUsize,
    /// Calls of this method are held unanswered (and unprocessed) while set.
    stalled: Mutex<Option<String>>,
    /// Calls held right now.
    held: AtomicUsize,
}

impl Shared {
    fn authorized(&self, req: &Request) -> bool {
        let Some(given) = req.header("authorization") else { return false };
        let node = self.node.lock().expect("node lock");
        let expected = match (&node.options.login, &node.cookie) {
            (Login::UserPassword(u, p), _) => format!("{u}:{p}"),
            (Login::Cookie(_), Some(c)) => c.clone(),
            (Login::Cookie(_), None) => return false,
        };
        given.strip_prefix("Basic ").map(str::trim) == Some(base64(expected.as_bytes()).as_str())
    }

    /// One JSON-RPC request object → its reply object and HTTP status.
    fn one(&self, request: &Value, wallet: Option<&str>) -> (u16, Value) {
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let result = match request.get("method") {
            Some(Value::String(m)) => {
                let params = request.get("params").cloned().unwrap_or(Value::Null);
                self.node.lock().expect("node lock").dispatch(m, &params, wallet)
            }
            Some(_) | None => err(-32600, "Method must be a string"),
        };
        match result {
            Ok(v) => (200, json!({"result": v, "error": null, "id": id})),
            Err((code, message)) => {
                let status = match code {
                    -32600 => 400,
                    -32601 => 404,
                    _ => 500,
                };
                (status, json!({"result": null, "error": {"code": code, "message": message}, "id": id}))
            }
        }
    }

    fn respond(&self, req: &Request) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
        if req.method != "POST" {
            return (405, vec![], b"JSONRPC server handles only POST requests".to_vec());
        }
        let wallet = match req.path.as_str() {
            "/" | "" => None,
            p => match p.strip_prefix("/wallet/") {
                Some(name) => Some(percent_decode(name)),
                None => return (404, vec![], Vec::new()),
            },
        };
        if !self.authorized(req) {
            if req.header("authorization").is_some() {
                // bitcoind's deterrent against guessing passwords.
                std::thread::sleep(Duration::from_millis(250));
            }
            return (401, vec![("WWW-Authenticate", "Basic realm=\"jsonrpc\"".into())], Vec::new());
        }
        let json_headers = vec![("Content-Type", "application/json".to_string())];
        let (status, reply) = match serde_json::from_slice::<Value>(&req.body) {
            Err(_) => (500, json!({"result": null, "error": {"code": -32700, "message": "Parse error"}, "id": null})),
            Ok(Value::Array(batch)) => {
                (200, Value::Array(batch.iter().map(|r| self.one(r, wallet.as_deref()).1).collect()))
            }
            Ok(obj @ Value::Object(_)) => self.one(&obj, wallet.as_deref()),
            Ok(_) => (
                500,
                json!({"result": null, "error": {"code": -32700, "message": "Top-level object parse error"}, "id": null}),
            ),
        };
        let mut body = serde_json::to_vec(&reply).expect("serialise reply");
        body.push(b'\n');
        (status, json_headers, body)
    }

    fn is_stalled(&self, body: &[u8]) -> bool {
        let stalled = self.stalled.lock().expect("stall lock").clone();
        stalled.is_some_and(|m| String::from_utf8_lossy(body).contains(&format!("\"{m}\"")))
    }

    /// Holds a call of the stalled method; true if the client went away (or the node went
    /// down) meanwhile, so the call is never processed.
    fn hold(&self, req: &Request, stream: &mut TcpStream) -> bool {
        if !self.is_stalled(&req.body) {
            return false;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let mut probe = [0u8; 1];
        let gone = loop {
            if !self.is_stalled(&req.body) {
                break false;
            }
            if self.stop.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst) {
                break true;
            }
            // The peek times out while the client waits; it returns 0 once the client is gone.
            match stream.peek(&mut probe) {
                Ok(0) => break true,
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break true,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        self.held.fetch_sub(1, Ordering::SeqCst);
        gone
    }

    fn serve_connection(self: Arc<Self>, mut stream: TcpStream) {
        /// Counts the connection closed however this thread ends (even by a panic).
        struct Open<'a>(&'a AtomicUsize);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _open = Open(&self.connections);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if self.stop.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst) {
                break;
            }
            if let Some(req) = take_request(&mut buf) {
                if self.hold(&req, &mut stream) {
                    break;
                }
                let (status, headers, body) = self.respond(&req);
                let mut head = format!("HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n", reason(status), body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let sent = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
                let close = req.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
                if sent.is_err() || close {
                    break;
                }
                continue;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }

    fn serve(self: Arc<Self>, listener: TcpListener, addr: SocketAddr) {
        let mut listener = Some(listener);
        while !self.stop.load(Ordering::SeqCst) {
            if self.down.load(Ordering::SeqCst) {
                listener = None;
                self.closed.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let Some(l) = listener.as_ref() else {
                // Back up: listen on the same port again.
                listener = TcpListener::bind(addr).ok().inspect(|l| {
                    let _ = l.set_nonblocking(true);
                });
                if listener.is_some() {
                    self.closed.store(false, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            };
            match l.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    self.connections.fetch_add(1, Ordering::SeqCst);
                    let me = Arc::clone(&self);
                    std::thread::spawn(move || me.serve_connection(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

/// A running fake bitcoind; stops when dropped.
pub(crate) struct FakeBitcoind {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBitcoind {
    /// A regtest node with user `u`, password `p`, wallet `vmsh` holding 20 coins.
    pub(crate) fn start() -> Self {
        Self::with(Options::default())
    }

    /// A node started with `options`.
    pub(crate) fn with(options: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake bitcoind");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr");
        let mut node = Node::new(options);
        if let Login::Cookie(path) = &node.options.login {
            let cookie = format!("__cookie__:{}", hex(&sha256d(format!("{addr}{:?}", Instant::now()).as_bytes())));
            std::fs::write(path, &cookie).expect("write the cookie file");
            node.cookie = Some(cookie);
        }
        let shared = Arc::new(Shared {
            node: Mutex::new(node),
            stop: AtomicBool::new(false),
            down: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            stalled: Mutex::new(None),
            held: AtomicUsize::new(0),
        });
        let me = Arc::clone(&shared);
        let thread = std::thread::spawn(move || me.serve(listener, addr));
        Self { addr, shared, thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>/`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn node(&self) -> std::sync::MutexGuard<'_, Node> {
        self.shared.node.lock().expect("node lock")
    }

    /// Calls a method over HTTP, as a client of the node would (with the right login).
    pub(crate) fn rpc(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let login = {
            let node = self.node();
            match (&node.options.login, &node.cookie) {
                (Login::UserPassword(u, p), _) => format!("{u}:{p}"),
                (_, c) => c.clone().unwrap_or_default(),
            }
        };
        let body = json!({"jsonrpc": "1.0", "id": "test", "method": method, "params": params}).to_string();
        let mut stream = TcpStream::connect(self.addr).expect("connect to the fake bitcoind");
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            base64(login.as_bytes()),
            body.len()
        )
        .expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read reply");
        let text = String::from_utf8_lossy(&raw);
        let (_, body) = text.split_once("\r\n\r\n").expect("HTTP reply");
        let reply: Value = serde_json::from_str(body).expect("JSON-RPC reply");
        match reply["error"].as_object() {
            Some(e) => Err((e["code"].as_i64().unwrap_or(0), e["message"].as_str().unwrap_or("").to_string())),
            None => Ok(reply["result"].clone()),
        }
    }

    /// Mines `n` blocks over RPC (`getnewaddress`, `generatetoaddress`), as a test would
    /// with bitcoind; returns their hashes.
    pub(crate) fn generate(&self, n: u64) -> Vec<String> {
        let address = self.rpc("getnewaddress", json!([])).expect("getnewaddress");
        let hashes = self.rpc("generatetoaddress", json!([n, address])).expect("generatetoaddress");
        hashes.as_array().expect("hashes").iter().map(|h| h.as_str().expect("hash").to_string()).collect()
    }

    /// How many times `method` was called (with a valid login and parameters).
    pub(crate) fn calls(&self, method: &str) -> usize {
        self.node().calls.iter().filter(|m| *m == method).count()
    }

    /// Every acceptance of a transaction into the mempool by `sendrawtransaction`, in order
    /// (a repeat of one already there is no acceptance; one evicted and sent again is).
    pub(crate) fn accepted(&self) -> Vec<Accepted> {
        self.node().accepted.clone()
    }

    /// The distinct transactions in the mempool or the active chain carrying `data` (hex) in
    /// their OP_RETURN output.
    pub(crate) fn live_anchors(&self, data: &str) -> Vec<String> {
        let node = self.node();
        let mut live: Vec<String> = Vec::new();
        for a in node.accepted.iter().filter(|a| a.data.as_deref() == Some(data)) {
            let there = node.entries.contains_key(&a.txid) || node.height_of(&a.txid).is_some();
            if there && !live.contains(&a.txid) {
                live.push(a.txid.clone());
            }
        }
        live
    }

    /// The txids in the mempool.
    pub(crate) fn mempool(&self) -> Vec<String> {
        self.node().mempool.clone()
    }

    /// The height of the tip.
    pub(crate) fn height(&self) -> u64 {
        self.node().tip_height()
    }

    /// The hash of the active block at `height`.
    pub(crate) fn block_hash(&self, height: u64) -> Option<String> {
        self.node().chain.get(height as usize).map(|b| b.hash.clone())
    }

    /// The height of the active block holding `txid`.
    pub(crate) fn height_of(&self, txid: &str) -> Option<u64> {
        self.node().height_of(txid)
    }

    /// Drops `txid` from the mempool (as expiry or a full mempool would); the wallet keeps
    /// it, with 0 confirmations. Returns whether it was there.
    pub(crate) fn evict(&self, txid: &str) -> bool {
        self.node().remove_from_mempool(txid)
    }

    /// A reorganisation: the top `depth` blocks are replaced by `depth + 1` empty ones; their
    /// transactions go back to the mempool.
    pub(crate) fn reorg(&self, depth: u64) {
        let mut node = self.node();
        for _ in 0..depth {
            node.disconnect();
        }
        node.mine(depth + 1, true);
    }

    /// Mines a double spend of transaction `txid` (spending its first input to someone
    /// else): `txid` leaves the mempool and the wallet reports it conflicted.
    pub(crate) fn double_spend(&self, txid: &str) {
        let mut node = self.node();
        let tx = node.txs.get(txid).cloned().expect("known transaction");
        let first = tx.vin[0].prev;
        let value = node.value_of(&first).expect("input value");
        let spend = Tx {
            version: 2,
            vin: vec![TxIn { prev: first, script_sig: fake_signature(&first), sequence: 0xffff_fffd }],
            vout: vec![TxOut { value: value - 1_000, script: address_script("thief") }],
            locktime: 0,
        };
        node.evict_conflicts(&spend);
        node.connect(vec![spend], "double spend");
    }

    /// A miner that still had `txid` (e.g. the original of a replacement) mines it: a block
    /// holds it, whatever this node's mempool holds; what conflicts with it leaves the mempool.
    pub(crate) fn mine_elsewhere(&self, txid: &str) -> String {
        let mut node = self.node();
        let tx = node.txs.get(txid).cloned().expect("known transaction");
        assert!(tx.vin.iter().all(|i| node.utxos.contains_key(&i.prev)), "{txid} cannot be mined: its coins are spent");
        node.evict_conflicts(&tx);
        node.remove_from_mempool(txid);
        node.connect(vec![tx], "mined elsewhere")
    }

    /// "Stuck" mode: while `Some(rate)` (sat/vB), blocks leave transactions paying less in the
    /// mempool; `None` mines everything again.
    pub(crate) fn set_mining_floor(&self, sat_per_vb: Option<f64>) {
        self.node().mining_floor = sat_per_vb.map(|r| (r * 1000.0).round() as u64);
    }

    /// What `estimatesmartfee` answers, sat/vB; `None`: no estimate.
    pub(crate) fn set_estimate(&self, sat_per_vb: Option<f64>) {
        self.node().estimate = sat_per_vb.map(|r| (r * 1000.0).round() as u64);
    }

    /// The fee rate (sat/vB) of a transaction the node knows.
    pub(crate) fn fee_rate(&self, txid: &str) -> Option<f64> {
        let node = self.node();
        let tx = node.txs.get(txid)?;
        Some(node.fee_of(tx)? as f64 / tx.vsize() as f64)
    }

    /// While `Some`, every call fails with -28 and this status (bitcoind starting up).
    pub(crate) fn set_warmup(&self, status: Option<&str>) {
        self.node().warmup = status.map(str::to_string);
    }

    /// While `Some`, every new transaction is rejected with -26 and this reason.
    pub(crate) fn reject_sends(&self, reason: Option<&str>) {
        self.node().reject = reason.map(str::to_string);
    }

    /// While `Some(method)`, calls of that method get no answer and are not processed, so a
    /// test can stop or kill a client in the middle of one; held calls are processed once
    /// this is cleared (if their client is still there).
    pub(crate) fn stall(&self, method: Option<&str>) {
        *self.shared.stalled.lock().expect("stall lock") = method.map(str::to_string);
    }

    /// How many calls [`FakeBitcoind::stall`] holds now.
    pub(crate) fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Writes a new cookie (as a restarted bitcoind does); only the new one is accepted.
    pub(crate) fn rotate_cookie(&self) {
        let mut node = self.node();
        let Login::Cookie(path) = node.options.login.clone() else { panic!("the fake uses no cookie") };
        let cookie =
            format!("__cookie__:{}", hex(&sha256d(format!("{:?}{}", Instant::now(), node.next_address).as_bytes())));
        std::fs::write(path, &cookie).expect("write the cookie file");
        node.cookie = Some(cookie);
    }

    /// Takes the node off the network (its port refuses connections) or brings it back on
    /// the same port; returns once that is so.
    pub(crate) fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        wait_for(Duration::from_secs(5), "the fake bitcoind to change state", || {
            let closed = self.shared.closed.load(Ordering::SeqCst);
            let idle = self.shared.connections.load(Ordering::SeqCst) == 0;
            (if down { closed && idle } else { !closed }).then_some(())
        });
    }
}

impl Drop for FakeBitcoind {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn btc_fake_node_answers_like_bitcoind() {
    let node = FakeBitcoind::start();
    // Wrong method, wrong parameter count and type, bad hex: bitcoind's codes.
    assert_eq!(node.rpc("nosuchmethod", json!([])).map_err(|e| e.0), Err(-32601));
    assert_eq!(node.rpc("getmempoolentry", json!([])).map_err(|e| e.0), Err(-1));
    assert_eq!(node.rpc("getmempoolentry", json!([1])).map_err(|e| e.0), Err(-3));
    assert_eq!(node.rpc("getmempoolentry", json!(["zz"])).map_err(|e| e.0), Err(-8));
    assert_eq!(node.rpc("decoderawtransaction", json!(["00"])).map_err(|e| e.0), Err(-22));
    assert_eq!(node.rpc("createrawtransaction", json!([[], [{"data": "xyz"}]])).map_err(|e| e.0), Err(-8));
    // A whole anchor by hand: create, fund, sign, send, mine.
    let raw = node.rpc("createrawtransaction", json!([[], [{"data": "564d5348"}]])).expect("create");
    let funded = node.rpc("fundrawtransaction", json!([raw, {"fee_rate": 3}])).expect("fund");
    let unsigned_send = node.rpc("sendrawtransaction", json!([funded["hex"]])).map_err(|e| e.0);
    assert_eq!(unsigned_send, Err(-26), "unsigned inputs are refused");
    let signed = node.rpc("signrawtransactionwithwallet", json!([funded["hex"]])).expect("sign");
    assert_eq!(signed["complete"], true);
    let decoded = node.rpc("decoderawtransaction", json!([signed["hex"]])).expect("decode");
    let before = node.rpc("getbalance", json!([])).expect("balance").as_f64().expect("BTC");
    let txid = node.rpc("sendrawtransaction", json!([signed["hex"]])).expect("send");
    assert_eq!(txid, decoded["txid"]);
    let after = node.rpc("getbalance", json!([])).expect("balance").as_f64().expect("BTC");
    let fee = funded["fee"].as_f64().expect("fee");
    assert!(before == 20.0 && (before - after - fee).abs() < 1e-9, "{before} - {fee} != {after}");
    assert_eq!(node.rpc("sendrawtransaction", json!([signed["hex"]])).expect("repeat"), txid, "a repeat is fine");
    assert_eq!(node.rpc("gettransaction", json!([txid])).expect("wallet tx")["confirmations"], 0);
    assert!(node.rpc("getmempoolentry", json!([txid])).is_ok());
    let hashes = node.generate(2);
    let tx = node.rpc("gettransaction", json!([txid])).expect("wallet tx");
    assert_eq!((tx["confirmations"].as_i64(), tx["blockhash"].as_str()), (Some(2), Some(hashes[0].as_str())));
    assert_eq!(node.rpc("getmempoolentry", json!([txid])).map_err(|e| e.0), Err(-5));
    assert_eq!(node.rpc("sendrawtransaction", json!([signed["hex"]])).map_err(|e| e.0), Err(-27));
    assert_eq!(node.rpc("getrawtransaction", json!([txid, true])).map_err(|e| e.0), Err(-5), "no txindex");
    let in_block = node.rpc("getrawtransaction", json!([txid, true, hashes[0]])).expect("by block");
    assert_eq!(in_block["in_active_chain"], true);
    let header = node.rpc("getblockheader", json!([hashes[0]])).expect("header");
    assert_eq!((header["height"].as_u64(), header["confirmations"].as_i64()), (Some(START_HEIGHT + 1), Some(2)));
    // The same bytes again are already mined (-27); another spend of the same coin is
    // missing its input (-25).
    let again = node.rpc("signrawtransactionwithwallet", json!([funded["hex"]])).expect("sign");
    assert_eq!(node.rpc("sendrawtransaction", json!([again["hex"]])).map_err(|e| e.0), Err(-27));
    let coin = &decoded["vin"][0];
    let to = node.rpc("getnewaddress", json!([])).expect("address");
    let spend = node
        .rpc(
            "createrawtransaction",
            json!([[{"txid": coin["txid"], "vout": coin["vout"]}], [{to.as_str().expect("address"): 0.5}]]),
        )
        .expect("create");
    let signed = node.rpc("signrawtransactionwithwallet", json!([spend])).expect("sign");
    assert_eq!(node.rpc("sendrawtransaction", json!([signed["hex"]])).map_err(|e| e.0), Err(-25));
}

#[test]
fn btc_fake_node_checks_logins_like_bitcoind() {
    let node = FakeBitcoind::start();
    let body = r#"{"jsonrpc":"1.0","id":1,"method":"getblockchaininfo","params":[]}"#;
    let send = |auth: &str| {
        let mut s = TcpStream::connect(node.addr).expect("connect");
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        raw
    };
    let none = send("");
    assert!(none.starts_with("HTTP/1.1 401") && none.contains("WWW-Authenticate: Basic realm=\"jsonrpc\""), "{none}");
    assert!(none.ends_with("\r\n\r\n"), "401 has an empty body: {none}");
    let wrong = send(&format!("Authorization: Basic {}\r\n", base64(b"u:wrong")));
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let right = send(&format!("Authorization: Basic {}\r\n", base64(b"u:p")));
    assert!(right.starts_with("HTTP/1.1 200") && right.contains("\"regtest\""), "{right}");
    assert_eq!(base64(b"u:p"), "dTpw");
    assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
}

#[test]
fn btc_fake_node_replaces_by_fee_like_bitcoind() {
    let node = FakeBitcoind::start();
    let code = |r: Result<Value, RpcError>| r.map_err(|e| e.0);
    let raw = node.rpc("createrawtransaction", json!([[], [{"data": "564d5348"}]])).expect("create");
    let funded = node.rpc("fundrawtransaction", json!([raw, {"fee_rate": 2}])).expect("fund");
    let signed = node.rpc("signrawtransactionwithwallet", json!([funded["hex"]])).expect("sign");
    let a = node.rpc("sendrawtransaction", json!([signed["hex"]])).expect("send").as_str().expect("txid").to_string();
    let a_fee = (funded["fee"].as_f64().expect("fee") * COIN as f64).round() as u64;

    // Wrong calls: bitcoind's codes and words.
    assert_eq!(code(node.rpc("psbtbumpfee", json!(["ab"]))), Err(-8));
    let unknown = node.rpc("psbtbumpfee", json!(["cd".repeat(32)]));
    assert_eq!(unknown, Err((-5, "Invalid or non-wallet transaction id".into())));
    assert_eq!(code(node.rpc("psbtbumpfee", json!([a, {"fee_rate": 9, "conf_target": 2}]))), Err(-8));
    assert_eq!(code(node.rpc("psbtbumpfee", json!([a, {"feerate": 9}]))), Err(-3));
    assert_eq!(code(node.rpc("psbtbumpfee", json!([a, {"fee_rate": "nine"}]))), Err(-3));
    assert_eq!(code(node.rpc("psbtbumpfee", json!([a, {"fee_rate": 9.0001}]))), Err(-3), "4 decimals");
    let low = node.rpc("psbtbumpfee", json!([a, {"fee_rate": 6.9}])).expect_err("under old + 5 sat/vB");
    assert!(low.0 == -8 && low.1.starts_with("Insufficient total fee"), "{low:?}");
    let below_relay = node.rpc("psbtbumpfee", json!([a, {"fee_rate": 0.5}])).expect_err("under 1 sat/vB");
    assert!(below_relay.0 == -4 && below_relay.1.contains("minimum fee rate"), "{below_relay:?}");

    // psbtbumpfee → walletprocesspsbt → finalizepsbt gives a signed replacement, sending nothing.
    let bumped = node.rpc("psbtbumpfee", json!([a, {"fee_rate": 7}])).expect("psbtbumpfee");
    assert_eq!((bumped["origfee"].as_f64(), bumped["errors"].clone()), (Some(btc(a_fee)), json!([])));
    assert_eq!(node.mempool(), vec![a.clone()], "nothing broadcast");
    assert_eq!(
        code(node.rpc("finalizepsbt", json!([bumped["psbt"]]))).map(|r| r["complete"].clone()),
        Ok(json!(false))
    );
    let processed = node.rpc("walletprocesspsbt", json!([bumped["psbt"]])).expect("sign");
    assert_eq!(processed["complete"], true);
    let finalized = node.rpc("finalizepsbt", json!([processed["psbt"]])).expect("finalize");
    assert_eq!((finalized["complete"].clone(), finalized["hex"].clone()), (json!(true), processed["hex"].clone()));
    assert_eq!(code(node.rpc("walletprocesspsbt", json!(["not base64!"]))), Err(-22));
    assert_eq!(code(node.rpc("finalizepsbt", json!([base64(b"psbu\xff\x00")]))), Err(-22));
    let decoded = node.rpc("decoderawtransaction", json!([finalized["hex"]])).expect("decode");
    let original = node.rpc("decoderawtransaction", json!([signed["hex"]])).expect("decode");
    assert_eq!(decoded["vin"][0]["txid"], original["vin"][0]["txid"], "every input of the original");

    // The mempool's BIP 125 rules: more than the original's fee, and its own relay on top.
    let coin = &original["vin"][0];
    let to = node.rpc("getnewaddress", json!([])).expect("address");
    let conflicting = |fee: u64| {
        let outputs = json!([{to.as_str().expect("address"): btc(COIN - fee)}]);
        let raw = node.rpc("createrawtransaction", json!([[{"txid": coin["txid"], "vout": coin["vout"]}], outputs]));
        let signed = node.rpc("signrawtransactionwithwallet", json!([raw.expect("create")])).expect("sign");
        node.rpc("sendrawtransaction", json!([signed["hex"]]))
    };
    let less = conflicting(a_fee - 1).expect_err("less fee");
    assert!(less.0 == -26 && less.1.contains("insufficient fee") && less.1.contains("less fees than conflicting txs"));
    let barely = conflicting(a_fee + 1).expect_err("no relay fee");
    assert!(barely.0 == -26 && barely.1.contains("not enough additional fees to relay; 0.00000001 <"), "{barely:?}");

    // The replacement goes in; the original stays in the wallet, conflicting, not replaced_by.
    let b = node
        .rpc("sendrawtransaction", json!([finalized["hex"]]))
        .expect("replacement")
        .as_str()
        .expect("txid")
        .to_string();
    assert_eq!(node.mempool(), vec![b.clone()]);
    let a_tx = node.rpc("gettransaction", json!([a])).expect("original");
    assert_eq!((a_tx["confirmations"].as_i64(), a_tx["trusted"].as_bool()), (Some(0), Some(false)));
    assert_eq!((a_tx["walletconflicts"].clone(), a_tx["bip125-replaceable"].clone()), (json!([b]), json!("yes")));
    assert!(a_tx.get("replaced_by_txid").is_none(), "only bumpfee marks it: {a_tx}");
    assert_eq!(node.rpc("gettransaction", json!([b])).expect("replacement")["walletconflicts"], json!([a]));
    assert!(node.fee_rate(&b).expect("rate") >= 7.0);

    // bumpfee broadcasts by itself and marks both; the replaced one cannot be bumped again.
    let c = node.rpc("bumpfee", json!([b])).expect("bumpfee")["txid"].as_str().expect("txid").to_string();
    assert_eq!(node.mempool(), vec![c.clone()]);
    assert_eq!(node.rpc("gettransaction", json!([b])).expect("b")["replaced_by_txid"], c.as_str());
    assert_eq!(node.rpc("gettransaction", json!([c])).expect("c")["replaces_txid"], b.as_str());
    let again = node.rpc("psbtbumpfee", json!([b, {"fee_rate": 50}])).expect_err("already bumped");
    assert_eq!(again, (-4, format!("Cannot bump transaction {b} which was already bumped by transaction {c}")));

    // Stuck: blocks leave what pays under the floor; once mined, the others are conflicted.
    node.set_mining_floor(Some(1_000.0));
    node.generate(1);
    assert_eq!(node.mempool(), vec![c.clone()], "left in the mempool");
    node.set_mining_floor(None);
    node.generate(1);
    assert!(node.mempool().is_empty());
    for t in [&a, &b] {
        let tx = node.rpc("gettransaction", json!([t])).expect("conflicted");
        assert_eq!(tx["confirmations"], -1, "{tx}");
        assert!(tx["walletconflicts"].as_array().expect("conflicts").contains(&json!(c)), "{tx}");
    }
    let mined = node.rpc("psbtbumpfee", json!([c])).expect_err("mined");
    assert!(mined.0 == -1 && mined.1.ends_with("is already spent"), "{mined:?}");

    // Fee estimates and the incremental relay fee.
    let none = node.rpc("estimatesmartfee", json!([6])).expect("estimate");
    assert_eq!(
        (none.get("feerate"), none["errors"][0].as_str()),
        (None, Some("Insufficient data or no feerate found"))
    );
    node.set_estimate(Some(12.5));
    assert_eq!(node.rpc("estimatesmartfee", json!([6])).expect("estimate")["feerate"], 0.000125);
    assert_eq!(code(node.rpc("estimatesmartfee", json!([0]))), Err(-8));
    assert_eq!(code(node.rpc("estimatesmartfee", json!([6, "fast"]))), Err(-8));
    assert_eq!(node.rpc("getnetworkinfo", json!([])).expect("info")["incrementalfee"], 0.00001);
    assert_eq!(
        (format_money(0), format_money(150_000_000), format_money(1_000)),
        ("0.00".into(), "1.50".into(), "0.00001".into())
    );
}
